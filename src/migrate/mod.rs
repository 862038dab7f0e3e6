//! `crs import` / `crs export`: move a v1 deployment (Redis) into a data directory and back.
//!
//! - `dump`: one Redis key in memory, and the JSON dump format (the fixture's).
//! - `redis_io`: SCAN + pipelined reads, pipelined writes honouring types and TTLs.
//! - `v1crypto`: v1's AES-256-CBC/scrypt secret encryption (and Bedrock's variant).
//! - `usage`: v1 usage key names and hash fields <-> crs buckets.
//! - `mapping`: keys, accounts, groups, admin, request records, sticky sessions, both ways.
//! - `import`: classify every key (imported, rebuilt, dropped, kept verbatim, not understood)
//!   and build the records to write; `export`: the reverse.
//! - `report`: what happened, human-readable or JSON.
//!
//! Import needs the v1 deployment's `ENCRYPTION_KEY`: it decrypts account secrets (which crs
//! re-encrypts with its own key) and becomes the data directory's key-hash secret, so every
//! `cr_` key keeps working. It never writes into a data directory that already holds keys,
//! accounts or usage unless asked to merge; buckets are set, not added, so repeating an import
//! gives the same store.

pub mod dump;
pub mod export;
pub mod import;
pub mod mapping;
pub mod redis_io;
pub mod report;
pub mod usage;
pub mod v1crypto;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::crypto::Secrets;
use crate::store::{Store, Table};
use crate::usage::pricing::Pricing;
pub use report::Report;

/// Where an import reads from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `redis://[user:pass@]host:port/db`
    Redis(String),
    /// A dump file in the fixture's format.
    Json(PathBuf),
}

/// Where an export writes to.
#[derive(Debug, Clone)]
pub enum Target {
    Redis(String),
    Json(PathBuf),
}

#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub data_dir: PathBuf,
    /// The v1 deployment's ENCRYPTION_KEY.
    pub encryption_key: String,
    /// Read and report; write nothing (the data directory is not even created).
    pub dry_run: bool,
    /// Allow importing into a data directory that already holds data.
    pub merge: bool,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub data_dir: PathBuf,
    /// v1's ENCRYPTION_KEY for the target; default: the data directory's key-hash secret
    /// (which an import set to the v1 deployment's key). Must equal it either way, or every
    /// exported key would stop authenticating in v1.
    pub encryption_key: Option<String>,
    /// Accounting time zone (TIMEZONE_OFFSET), for the TTLs of exported buckets.
    pub tz_offset_minutes: i32,
    /// Allow writing into a Redis database that already holds keys.
    pub merge: bool,
    pub progress: bool,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Whether `secrets` hashes API keys with `key` (`hash("")` is sha256 of the secret alone).
fn uses_key_hash_secret(secrets: &Secrets, key: &str) -> bool {
    secrets.hash_api_key("") == sha256_hex(key)
}

fn store_has_data(store: &Store) -> Result<bool> {
    Ok(store.count(Table::ApiKeys)? > 0
        || store.count(Table::Accounts)? > 0
        || store.count(Table::Groups)? > 0
        || store
            .usage_get(&crate::usage::bucket::global(crate::usage::bucket::TOTAL))?
            .is_some())
}

/// Open (or create) the data directory for an import: secrets whose key-hash secret is the
/// v1 ENCRYPTION_KEY, and a store that is empty unless `merge`.
fn prepare_target(opts: &ImportOptions) -> Result<(Secrets, std::sync::Arc<Store>)> {
    let cfg = Config::for_data_dir(&opts.data_dir);
    crate::crypto::private_data_dir(&opts.data_dir)?;
    let store = Store::open(&cfg.db_path())?;
    let has_data = store_has_data(&store)?;
    if has_data && !opts.merge {
        bail!(
            "{} already holds keys, accounts or usage; import into an empty data directory, or pass --merge to add to it",
            opts.data_dir.display()
        );
    }
    let path = cfg.secrets_path();
    let key = opts.encryption_key.as_str();
    let secrets = if path.exists() {
        let (s, _) = Secrets::load_or_create(&path, None)?;
        if uses_key_hash_secret(&s, key) {
            s
        } else if has_data {
            bail!(
                "{} hashes API keys with a different secret than this ENCRYPTION_KEY; merging would break its existing keys (or the v1 ones)",
                opts.data_dir.display()
            );
        } else {
            Secrets::set_key_hash_secret(&path, key)?;
            Secrets::load_or_create(&path, None)?.0
        }
    } else {
        Secrets::load_or_create(&path, Some(key))?.0
    };
    Ok((secrets, store))
}

/// Import a v1 keyspace into `opts.data_dir`.
pub async fn import(source: &Source, opts: &ImportOptions) -> Result<Report> {
    let started = Instant::now();
    let key = opts.encryption_key.trim();
    if key.is_empty() {
        bail!(
            "the v1 deployment's ENCRYPTION_KEY is required (--encryption-key or ENCRYPTION_KEY)"
        );
    }
    let v1 = v1crypto::V1Crypto::new(key);
    let (secrets, store) = if opts.dry_run {
        let throwaway = Secrets::from_parts(crate::crypto::random_bytes(), vec![0; 32], key);
        (throwaway, None)
    } else {
        let (s, st) = prepare_target(opts)?;
        (s, Some(st))
    };
    let pricing = Pricing::load(&opts.data_dir)?;
    let mut imp = import::Importer::new(
        mapping::Keys {
            v1: &v1,
            crs: &secrets,
        },
        &pricing,
    );
    let now_ms = Utc::now().timestamp_millis();
    let (label, taken_at) = match source {
        Source::Redis(url) => {
            let stats = redis_io::read_all(url, opts.progress, &mut |k| imp.add(k)).await?;
            for (name, ty) in &stats.unsupported {
                imp.report.unknown(name);
                imp.report.warnings.push(format!(
                    "{name}: Redis type {ty} is not supported; not imported"
                ));
            }
            Report::add(
                &mut imp.report.dropped,
                "keys that expired during the scan",
                stats.vanished,
            );
            (redis_io::redact(url), now_ms)
        }
        Source::Json(path) => {
            let meta = dump::read_json_file(path, &mut |k| imp.add(k))?;
            let taken = meta
                .get("dumped_at_unix_ms")
                .and_then(|v| v.as_i64())
                .unwrap_or(now_ms);
            (path.display().to_string(), taken)
        }
    };
    let (plan, mut report) = imp.finish(taken_at, now_ms)?;
    if let Some(store) = &store {
        plan.write(store, &mut report)?;
    }
    report.source = label;
    report.target = opts.data_dir.display().to_string();
    report.dry_run = opts.dry_run;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The key-hash secret recorded in a data directory's `secrets.json`.
fn stored_key_hash_secret(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v["key_hash_secret"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{} has no key_hash_secret", path.display()))
}

/// Export `opts.data_dir` in v1's layout.
pub async fn export(target: &Target, opts: &ExportOptions) -> Result<Report> {
    let started = Instant::now();
    let cfg = Config::for_data_dir(&opts.data_dir);
    if !cfg.db_path().exists() || !cfg.secrets_path().exists() {
        bail!("{} is not a crs data directory", opts.data_dir.display());
    }
    let (secrets, _) = Secrets::load_or_create(&cfg.secrets_path(), None)?;
    let key = match &opts.encryption_key {
        Some(k) if !k.trim().is_empty() => k.trim().to_owned(),
        _ => stored_key_hash_secret(&cfg.secrets_path())?,
    };
    if !uses_key_hash_secret(&secrets, &key) {
        bail!(
            "ENCRYPTION_KEY differs from the key-hash secret of {}: v1 hashes API keys with it, so every exported key would stop working",
            opts.data_dir.display()
        );
    }
    let store = Store::open(&cfg.db_path())?;
    let v1 = v1crypto::V1Crypto::new(&key);
    let clock = crate::usage::Clock::new(opts.tz_offset_minutes);
    // One instant for the TTLs and the dump's time, so TTLs read back to the same expiries.
    let now = Utc::now();
    let exporter = export::Exporter::new(
        &store,
        mapping::Keys {
            v1: &v1,
            crs: &secrets,
        },
        clock.offset(),
        now,
    );
    let (keys, mut report) = exporter.build()?;
    let label = match target {
        Target::Redis(url) => {
            redis_io::ensure_empty(url, opts.merge).await?;
            redis_io::write_all(url, &keys, opts.progress).await?;
            redis_io::redact(url)
        }
        Target::Json(path) => {
            let f = std::fs::File::create(path)
                .with_context(|| format!("creating {}", path.display()))?;
            let meta = dump::meta(
                now.timestamp_millis(),
                keys.len(),
                "written by crs export (v1.1.314 layout)",
            );
            dump::write_json(std::io::BufWriter::new(f), &meta, &keys)?;
            path.display().to_string()
        }
    };
    report.source = opts.data_dir.display().to_string();
    report.target = label;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

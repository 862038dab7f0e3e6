//! `crs backup` and `crs restore`. A backup is one file: a consistent copy of the store (one
//! read transaction) with the data directory's other files inside it (`secrets.json`, which
//! decrypts the upstream credentials, `config.toml` and the pricing file when present).
//!
//! Offline, the copy is made from the store directly. While a server runs, it comes from the
//! server (`GET /admin/backup`, after the ledger has committed what it holds) and the files
//! are added from the data directory here: the server never sends its secrets over HTTP.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{DataDir, EXIT_BUSY, EXIT_FAILURE, RunInfo, fail};
use crate::config::Config;
use crate::store::backup::{CopyStats, add_backup_files, read_backup, restore_store};

/// Files of the data directory a backup carries (the secrets file is required).
const CARRIED: &[(&str, bool)] = &[
    ("secrets.json", true),
    ("config.toml", false),
    ("model_prices_and_context_window.json", false),
];

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupReport {
    pub path: String,
    /// Taken from a running server (true) or from the store directly.
    pub online: bool,
    pub bytes: u64,
    pub tables: usize,
    pub rows: u64,
    pub files: Vec<String>,
}

impl BackupReport {
    pub fn render(&self) -> String {
        format!(
            "backup written to {} ({} bytes, {} rows in {} tables, with {}){}\n",
            self.path,
            self.bytes,
            self.rows,
            self.tables,
            self.files.join(", "),
            if self.online {
                "; taken from the running server"
            } else {
                ""
            }
        )
    }
}

fn carried_files(config: &Config) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for (name, required) in CARRIED {
        let path = config.data_dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => out.push(((*name).to_owned(), bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(out)
}

fn partial(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    out.with_file_name(name)
}

/// Add the carried files to the copy at `tmp` and move it to `out`.
fn finish(config: &Config, tmp: &Path, out: &Path, online: bool) -> Result<BackupReport> {
    let files = carried_files(config)?;
    add_backup_files(tmp, &files)?;
    let contents = read_backup(tmp)?;
    std::fs::File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, out).with_context(|| format!("writing {}", out.display()))?;
    Ok(BackupReport {
        path: out.display().to_string(),
        online,
        bytes: std::fs::metadata(out)?.len(),
        tables: contents.stats.tables,
        rows: contents.stats.rows,
        files: files.into_iter().map(|(n, _)| n).collect(),
    })
}

/// A backup of a data directory no server holds.
pub fn backup_offline(d: &DataDir, out: &Path) -> Result<BackupReport> {
    let tmp = partial(out);
    d.store.snapshot_to(&tmp)?;
    finish(&d.config, &tmp, out, false).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A backup taken through the server that holds the data directory.
pub async fn backup_online(config: &Config, run: &RunInfo, out: &Path) -> Result<BackupReport> {
    use tokio::io::AsyncWriteExt;
    let tmp = partial(out);
    let mut res = run.get("/admin/backup").send().await.map_err(|e| {
        fail(
            EXIT_BUSY,
            format!("the running crs at {} does not answer: {e}", run.url),
        )
    })?;
    if !res.status().is_success() {
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        return Err(fail(
            EXIT_FAILURE,
            format!("the running crs refused the backup ({status}): {body}"),
        ));
    }
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .with_context(|| format!("creating {}", tmp.display()))?;
    while let Some(chunk) = res.chunk().await? {
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    drop(file);
    let (config, tmp2, out2) = (config.clone(), tmp.clone(), out.to_owned());
    tokio::task::spawn_blocking(move || finish(&config, &tmp2, &out2, true))
        .await?
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreReport {
    pub data_dir: String,
    pub tables: usize,
    pub rows: u64,
    pub files: Vec<String>,
    /// Where the store that was replaced went (with `--force`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced: Option<String>,
}

impl RestoreReport {
    pub fn render(&self) -> String {
        let mut s = format!(
            "restored {} rows in {} tables and {} into {}\n",
            self.rows,
            self.tables,
            self.files.join(", "),
            self.data_dir
        );
        if let Some(r) = &self.replaced {
            s += &format!("the store it replaced is kept as {r}\n");
        }
        s
    }
}

/// Restore a backup into a data directory no server holds. A directory that already has a
/// store is refused unless `force`; then its store is kept beside it, renamed.
pub fn restore(config: &Config, from: &Path, force: bool) -> Result<RestoreReport> {
    let contents = read_backup(from).map_err(|e| fail(EXIT_FAILURE, format!("{e:#}")))?;
    if !contents.files.iter().any(|(n, _)| n == "secrets.json") {
        return Err(fail(
            EXIT_FAILURE,
            format!(
                "{} carries no secrets.json; it is not a crs backup",
                from.display()
            ),
        ));
    }
    let db = config.db_path();
    let mut replaced = None;
    if db.exists() {
        // Refused while a server holds it; closed again before it is replaced.
        drop(DataDir::open(config.clone())?);
        if !force {
            return Err(fail(
                EXIT_FAILURE,
                format!(
                    "{} already holds a store; pass --force to replace it (it is kept as crs.redb.before-restore)",
                    config.data_dir.display()
                ),
            ));
        }
    }
    crate::crypto::private_data_dir(&config.data_dir)?;
    let tmp = config.data_dir.join("crs.redb.restoring");
    let stats: CopyStats = restore_store(from, &tmp)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    if db.exists() {
        let old = config.data_dir.join("crs.redb.before-restore");
        std::fs::rename(&db, &old)?;
        replaced = Some(old.display().to_string());
    }
    std::fs::rename(&tmp, &db)?;
    // Only the files a backup is meant to carry, by their plain names.
    for (name, bytes) in contents
        .files
        .iter()
        .filter(|(n, _)| CARRIED.iter().any(|(c, _)| c == n))
    {
        crate::crypto::write_private(&config.data_dir.join(name), bytes)?;
    }
    let _ = std::fs::remove_file(config.data_dir.join(super::RUN_FILE));
    Ok(RestoreReport {
        data_dir: config.data_dir.display().to_string(),
        tables: stats.tables,
        rows: stats.rows,
        files: contents.files.into_iter().map(|(n, _)| n).collect(),
        replaced,
    })
}

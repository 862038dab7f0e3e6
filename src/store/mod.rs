//! The embedded store: one redb file in the data directory.
//!
//! Tables hold JSON records (keys, accounts, admins) keyed by id, and usage counters keyed by
//! bucket (see `usage::bucket`). The store is only touched off the request path: at start
//! (load everything), by admin writes, and by the ledger's group commits.
//!
//! Invariant: a schema version lives in `meta`; opening a file written by a newer schema fails
//! instead of guessing, and a migration to a newer schema copies the file to a backup first
//! (`{file}.schema-{old}.bak`, next to it) and then converts it in one transaction.
//!
//! Schemas: 1 kept usage costs in micro-dollars; 2 keeps them in pico-dollars (bucket records
//! tagged `V2`, request records with `realCostPicos` / `ratedCostPicos`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub mod backup;
mod rows;
pub use rows::{Counters, RequestRecord, TokenUsage};

pub const SCHEMA_VERSION: u32 = 2;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const API_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_keys");
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
const ADMINS: TableDefinition<&str, &[u8]> = TableDefinition::new("admins");
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("account_groups");
/// Sticky sessions: session key -> JSON {accountId, expiresAt}.
const STICKY: TableDefinition<&str, &[u8]> = TableDefinition::new("sticky_sessions");
/// v1 keys crs does not model (e.g. OAuth account types it cannot serve), kept verbatim from
/// an import so an export gives them back: redis key -> JSON dump entry.
const V1_RAW: TableDefinition<&str, &[u8]> = TableDefinition::new("v1_raw");
/// Small runtime settings (sticky TTL, ...): name -> JSON.
const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
/// Admin sessions ended by a sign-out: token id (`jti`) -> the token's expiry (JSON, unix
/// seconds). A row is useless once its token expired; `auth::admin` prunes those.
const REVOKED: TableDefinition<&str, &[u8]> = TableDefinition::new("revoked_tokens");
const USAGE: TableDefinition<&str, &[u8]> = TableDefinition::new("usage");
/// Request records per key: `{key_id}|{newest-first order}` -> JSON.
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// Recent request records of all keys: `{newest-first order}|{key_id}` -> JSON.
const RECENT: TableDefinition<&str, &[u8]> = TableDefinition::new("recent_records");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    ApiKeys,
    Accounts,
    Admins,
    Groups,
    Sticky,
    Settings,
    V1Raw,
    RevokedTokens,
}

impl Table {
    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            Table::ApiKeys => API_KEYS,
            Table::Accounts => ACCOUNTS,
            Table::Admins => ADMINS,
            Table::Groups => GROUPS,
            Table::Sticky => STICKY,
            Table::Settings => SETTINGS,
            Table::V1Raw => V1_RAW,
            Table::RevokedTokens => REVOKED,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Table::ApiKeys => "api_keys",
            Table::Accounts => "accounts",
            Table::Admins => "admins",
            Table::Groups => "account_groups",
            Table::Sticky => "sticky_sessions",
            Table::Settings => "settings",
            Table::V1Raw => "v1_raw",
            Table::RevokedTokens => "revoked_tokens",
        }
    }
}

/// The schema version of an opened file; `None` for a new one.
fn stored_version(db: &Database) -> Result<Option<u32>> {
    let txn = db.begin_read()?;
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(meta
        .get("schema_version")?
        .map(|v| u32::from_le_bytes(v.value().try_into().unwrap_or([0; 4]))))
}

/// Copy the store file to `{file}.schema-{old}.bak` before it is migrated (through a temporary
/// file, so a backup on disk is always whole). A later migration of a file at the same old
/// version replaces it.
fn backup_before_migration(path: &Path, old: u32) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "crs.redb".into());
    let backup = path.with_file_name(format!("{name}.schema-{old}.bak"));
    let tmp = path.with_file_name(format!("{name}.schema-{old}.bak.tmp"));
    std::fs::copy(path, &tmp)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, &backup))
        .with_context(|| {
            format!(
                "backing up {} to {} before upgrading it",
                path.display(),
                backup.display()
            )
        })?;
    Ok(backup)
}

/// Schema 1 -> 2: usage buckets and request records from micro-dollars to pico-dollars
/// (x 1,000,000, saturating). Buckets are re-encoded (`Counters::decode` reads the old form);
/// records get `realCostPicos` / `ratedCostPicos` in place of `realCostMicros` /
/// `ratedCostMicros`. A row that does not decode is left as it is, never deleted.
fn upgrade_costs_to_picos(txn: &WriteTransaction) -> Result<(u64, u64)> {
    let mut usage = txn.open_table(USAGE)?;
    let mut rows: Vec<(String, Vec<u8>)> = Vec::new();
    for row in usage.iter()? {
        let (k, v) = row?;
        match Counters::decode(v.value()) {
            Ok(c) => rows.push((k.value().to_owned(), c.encode())),
            Err(e) => {
                tracing::error!(bucket = %k.value(), error = %e, "usage bucket does not decode; left as it is")
            }
        }
    }
    for (k, v) in &rows {
        usage.insert(k.as_str(), v.as_slice())?;
    }
    let buckets = rows.len() as u64;
    let mut records = 0u64;
    for def in [RECORDS, RECENT] {
        let mut t = txn.open_table(def)?;
        let mut rows: Vec<(String, Vec<u8>)> = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let Ok(serde_json::Value::Object(mut m)) = serde_json::from_slice(v.value()) else {
                continue;
            };
            for (old, new) in [
                ("realCostMicros", "realCostPicos"),
                ("ratedCostMicros", "ratedCostPicos"),
            ] {
                if let Some(micros) = m.remove(old) {
                    let picos = crate::model::micros_to_picos(micros.as_i64().unwrap_or(0));
                    m.insert(new.into(), picos.into());
                }
            }
            rows.push((k.value().to_owned(), serde_json::to_vec(&m)?));
        }
        for (k, v) in &rows {
            t.insert(k.as_str(), v.as_slice())?;
        }
        records += rows.len() as u64;
    }
    Ok((buckets, records))
}

/// A record as stored: JSON without the fields that hold their default value (they read back
/// as the default through `#[serde(default)]`), so records stay small and load fast.
fn encode<T: Serialize + Default>(record: &T) -> Result<Vec<u8>> {
    let v = serde_json::to_value(record)?;
    let v = match (v, serde_json::to_value(T::default())?) {
        (serde_json::Value::Object(mut m), serde_json::Value::Object(d)) => {
            m.retain(|k, val| d.get(k) != Some(val));
            serde_json::Value::Object(m)
        }
        (v, _) => v,
    };
    Ok(serde_json::to_vec(&v)?)
}

pub struct Store {
    /// `None` while handed over to another process (`release`, during an upgrade).
    db: parking_lot::RwLock<Option<Database>>,
    cache_bytes: usize,
    path: PathBuf,
    /// Orders records written in the same millisecond.
    record_seq: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Open with redb's default page cache (1 GiB at most): for bulk work such as an import.
    pub fn open(path: &Path) -> Result<Arc<Self>> {
        Self::open_with_cache(path, 1024 * 1024 * 1024)
    }

    /// Open with a page cache of at most `cache_bytes` (the server's, `Config::store_cache_bytes`).
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Arc<Self>> {
        // A new store is readable by its owner only (redb would create it with the umask's
        // mode); redb initialises an empty file as a new database.
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(path);
        }
        let create = || {
            redb::Builder::new()
                .set_cache_size(cache_bytes)
                .create(path)
                .with_context(|| format!("opening store {}", path.display()))
        };
        let mut db = create()?;
        if let Some(old) = stored_version(&db)?.filter(|v| *v < SCHEMA_VERSION) {
            // Closed while it is copied, so the backup is the file as the old version left it.
            drop(db);
            let backup = backup_before_migration(path, old)?;
            tracing::info!(
                from = old,
                to = SCHEMA_VERSION,
                backup = %backup.display(),
                "upgrading the store; the file as it was is kept as the backup"
            );
            db = create()?;
        }
        let store = Store {
            db: parking_lot::RwLock::new(Some(db)),
            cache_bytes,
            path: path.to_owned(),
            record_seq: std::sync::atomic::AtomicU32::new(0),
        };
        store.init_schema()?;
        Ok(Arc::new(store))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open database; an error while the store is handed over.
    fn db(&self) -> Result<parking_lot::MappedRwLockReadGuard<'_, Database>> {
        parking_lot::RwLockReadGuard::try_map(self.db.read(), Option::as_ref)
            .map_err(|_| anyhow::anyhow!("the store is handed over to another process"))
    }

    /// False while the store is handed over (`release`).
    pub fn is_open(&self) -> bool {
        self.db.read().is_some()
    }

    /// Close the file so that another process can open it (an upgrade hands the data
    /// directory over); every store call fails until `reacquire`.
    pub fn release(&self) {
        drop(self.db.write().take());
    }

    /// Open the file again after `release` (the upgrade did not happen). A process that
    /// opened it meanwhile may take a moment to let go: retried for up to 10 s.
    pub fn reacquire(&self) -> Result<()> {
        let mut g = self.db.write();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while g.is_none() {
            match redb::Builder::new()
                .set_cache_size(self.cache_bytes)
                .create(&self.path)
            {
                Ok(db) => *g = Some(db),
                Err(redb::DatabaseError::DatabaseAlreadyOpen)
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("reopening store {}", self.path.display()));
                }
            }
        }
        Ok(())
    }

    fn init_schema(&self) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        let found = {
            let mut meta = txn.open_table(META)?;
            // Create every table so readers never see "table does not exist".
            txn.open_table(API_KEYS)?;
            txn.open_table(ACCOUNTS)?;
            txn.open_table(ADMINS)?;
            txn.open_table(GROUPS)?;
            txn.open_table(STICKY)?;
            txn.open_table(SETTINGS)?;
            txn.open_table(V1_RAW)?;
            txn.open_table(REVOKED)?;
            txn.open_table(USAGE)?;
            txn.open_table(RECORDS)?;
            txn.open_table(RECENT)?;
            let found = meta
                .get("schema_version")?
                .map(|v| u32::from_le_bytes(v.value().try_into().unwrap_or([0; 4])));
            if found.is_none() {
                meta.insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
            }
            found
        };
        match found {
            Some(v) if v > SCHEMA_VERSION => {
                txn.abort()?;
                bail!(
                    "{} uses store schema {v}, newer than this crs understands ({SCHEMA_VERSION}); upgrade crs",
                    self.path.display()
                );
            }
            // Older schemas migrate here, in this one transaction (the file was copied by
            // `backup_before_migration` when it was opened).
            Some(v) if v < SCHEMA_VERSION => {
                if v < 2 {
                    let (buckets, records) = upgrade_costs_to_picos(&txn)?;
                    tracing::info!(
                        buckets,
                        records,
                        "usage costs converted from micro-dollars to pico-dollars"
                    );
                }
                txn.open_table(META)?
                    .insert("schema_version", SCHEMA_VERSION.to_le_bytes().as_slice())?;
                txn.commit()?;
            }
            _ => txn.commit()?,
        }
        Ok(())
    }

    pub fn schema_version(&self) -> Result<u32> {
        let txn = self.db()?.begin_read()?;
        let meta = txn.open_table(META)?;
        let v = meta
            .get("schema_version")?
            .map(|v| u32::from_le_bytes(v.value().try_into().unwrap_or([0; 4])))
            .unwrap_or(0);
        Ok(v)
    }

    /// A cheap read that proves the file answers (for /health).
    pub fn ping(&self) -> bool {
        self.schema_version()
            .map(|v| v == SCHEMA_VERSION)
            .unwrap_or(false)
    }

    /// Load every record of a table. A record that no longer parses is reported and skipped,
    /// never deleted: the bytes stay in the file for a later version or a manual fix.
    /// Large tables parse on two threads.
    pub fn load_all<T: DeserializeOwned + Send>(&self, table: Table) -> Result<Vec<T>> {
        let rows = self.load_raw(table)?;
        let parse = |part: &[(String, Vec<u8>)]| -> Vec<T> {
            part.iter()
                .filter_map(|(k, v)| match serde_json::from_slice(v) {
                    Ok(rec) => Some(rec),
                    Err(e) => {
                        tracing::error!(
                            table = table.name(),
                            id = %k,
                            error = %e,
                            "record does not parse; skipped and left in the store"
                        );
                        None
                    }
                })
                .collect()
        };
        if rows.len() < 512 {
            return Ok(parse(&rows));
        }
        let (a, b) = rows.split_at(rows.len() / 2);
        let (mut first, second) = std::thread::scope(|s| {
            let h = s.spawn(|| parse(a));
            let second = parse(b);
            (h.join().expect("record parsing thread"), second)
        });
        first.extend(second);
        Ok(first)
    }

    pub fn get<T: DeserializeOwned>(&self, table: Table, id: &str) -> Result<Option<T>> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(table.def())?;
        match t.get(id)? {
            Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
            None => Ok(None),
        }
    }

    pub fn put<T: Serialize + Default>(&self, table: Table, id: &str, record: &T) -> Result<()> {
        let bytes = encode(record)?;
        let txn = self.db()?.begin_write()?;
        txn.open_table(table.def())?.insert(id, bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    pub fn delete(&self, table: Table, id: &str) -> Result<bool> {
        let txn = self.db()?.begin_write()?;
        let existed = txn.open_table(table.def())?.remove(id)?.is_some();
        txn.commit()?;
        Ok(existed)
    }

    /// Write many records in one transaction (bulk import).
    pub fn put_many<T: Serialize + Default>(
        &self,
        table: Table,
        records: &[(String, &T)],
    ) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            let mut t = txn.open_table(table.def())?;
            for (id, r) in records {
                t.insert(id.as_str(), encode(*r)?.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Set usage buckets to the given values (not add): importing twice gives the same result.
    pub fn usage_put_many(&self, rows: &[(String, Counters)]) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            let mut t = txn.open_table(USAGE)?;
            for (k, c) in rows {
                t.insert(k.as_str(), c.encode().as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Every usage bucket, in key order (export).
    pub fn usage_all(&self) -> Result<Vec<(String, Counters)>> {
        self.usage_scan("")
    }

    /// Replace a key's request records (import): newest first in `records`.
    pub fn records_replace(&self, key_id: &str, records: &[RequestRecord]) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            let mut per_key = txn.open_table(RECORDS)?;
            let mut recent = txn.open_table(RECENT)?;
            let prefix = format!("{key_id}|");
            let old: Vec<String> = per_key
                .range(prefix.as_str()..)?
                .map_while(|r| {
                    r.ok()
                        .map(|(k, _)| k.value().to_owned())
                        .filter(|k| k.starts_with(&prefix))
                })
                .collect();
            for k in old {
                per_key.remove(k.as_str())?;
                let order = &k[prefix.len()..];
                recent.remove(format!("{order}|{key_id}").as_str())?;
            }
            for (i, r) in records.iter().enumerate() {
                let ts = r
                    .timestamp
                    .map(|t| t.timestamp_millis())
                    .unwrap_or(0)
                    .max(0) as u64;
                let order = format!("{:016x}{:08x}", u64::MAX - ts, i as u32);
                let bytes = serde_json::to_vec(r)?;
                per_key.insert(format!("{key_id}|{order}").as_str(), bytes.as_slice())?;
                recent.insert(format!("{order}|{key_id}").as_str(), bytes.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// `records_replace` for many keys in one transaction (bulk import), keeping at most
    /// `recent_cap` rows in the global recent list. Records are newest first per key.
    pub fn records_replace_many(
        &self,
        items: &[(String, Vec<RequestRecord>)],
        recent_cap: usize,
    ) -> Result<()> {
        use redb::ReadableTableMetadata;
        let txn = self.db()?.begin_write()?;
        {
            let mut per_key = txn.open_table(RECORDS)?;
            let mut recent = txn.open_table(RECENT)?;
            for (key_id, records) in items {
                let prefix = format!("{key_id}|");
                let mut old = Vec::new();
                for row in per_key.range(prefix.as_str()..)? {
                    let (k, _) = row?;
                    if !k.value().starts_with(&prefix) {
                        break;
                    }
                    old.push(k.value().to_owned());
                }
                for k in old {
                    per_key.remove(k.as_str())?;
                    recent.remove(format!("{}|{key_id}", &k[prefix.len()..]).as_str())?;
                }
                for (i, r) in records.iter().enumerate() {
                    let ts = r
                        .timestamp
                        .map(|t| t.timestamp_millis())
                        .unwrap_or(0)
                        .max(0) as u64;
                    // Newest first, also among records of the same millisecond.
                    let order = format!("{:016x}{:08x}", u64::MAX - ts, i as u32);
                    let bytes = serde_json::to_vec(r)?;
                    per_key.insert(format!("{key_id}|{order}").as_str(), bytes.as_slice())?;
                    recent.insert(format!("{order}|{key_id}").as_str(), bytes.as_slice())?;
                }
            }
            while recent.len()? > recent_cap as u64 {
                if recent.pop_last()?.is_none() {
                    break;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Raw rows of a table (for tables whose key matters, such as sticky sessions).
    pub fn load_raw(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(table.def())?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push((k.value().to_owned(), v.value().to_vec()));
        }
        Ok(out)
    }

    pub fn put_raw_many(&self, table: Table, rows: &[(String, Vec<u8>)]) -> Result<()> {
        let txn = self.db()?.begin_write()?;
        {
            let mut t = txn.open_table(table.def())?;
            for (k, v) in rows {
                t.insert(k.as_str(), v.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Delete the rows whose value matches; returns how many.
    pub fn delete_where(&self, table: Table, pred: impl Fn(&[u8]) -> bool) -> Result<u64> {
        let txn = self.db()?.begin_write()?;
        let n = {
            let mut t = txn.open_table(table.def())?;
            let mut n = 0;
            for row in t.extract_if(|_, v| pred(v))? {
                row?;
                n += 1;
            }
            n
        };
        txn.commit()?;
        Ok(n)
    }

    pub fn count(&self, table: Table) -> Result<u64> {
        use redb::ReadableTableMetadata;
        let txn = self.db()?.begin_read()?;
        Ok(txn.open_table(table.def())?.len()?)
    }

    /// Add counter deltas to their buckets, all in one durable transaction.
    pub fn apply_usage<'a>(
        &self,
        deltas: impl IntoIterator<Item = (&'a str, &'a Counters)>,
    ) -> Result<()> {
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut t = txn.open_table(USAGE)?;
            for (key, delta) in deltas {
                let mut cur = match t.get(key)? {
                    Some(v) => Counters::decode(v.value())?,
                    None => Counters::default(),
                };
                cur.add(delta);
                t.insert(key, cur.encode().as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// One ledger commit: counter deltas plus request records, with the record lists trimmed
    /// to their caps, in one durable transaction.
    pub fn commit_usage<'a>(
        &self,
        deltas: impl IntoIterator<Item = (&'a str, &'a Counters)>,
        records: &[RequestRecord],
        per_key_cap: usize,
        global_cap: usize,
    ) -> Result<()> {
        use std::sync::atomic::Ordering;
        let mut txn = self.db()?.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut t = txn.open_table(USAGE)?;
            for (key, delta) in deltas {
                let mut cur = match t.get(key)? {
                    Some(v) => Counters::decode(v.value())?,
                    None => Counters::default(),
                };
                cur.add(delta);
                t.insert(key, cur.encode().as_slice())?;
            }
        }
        if !records.is_empty() {
            let mut per_key = txn.open_table(RECORDS)?;
            let mut recent = txn.open_table(RECENT)?;
            let mut touched: Vec<&str> = Vec::new();
            // Records older than the caps would be trimmed at once: within a batch only the
            // newest `per_key_cap` of each key and `global_cap` overall are written.
            let mut per_key_left: std::collections::HashMap<&str, usize> = Default::default();
            let keep_key: Vec<bool> = {
                let mut v = vec![false; records.len()];
                for (i, r) in records.iter().enumerate().rev() {
                    let left = per_key_left.entry(r.key_id.as_str()).or_insert(per_key_cap);
                    if *left > 0 {
                        *left -= 1;
                        v[i] = true;
                    }
                }
                v
            };
            let first_global = records.len().saturating_sub(global_cap);
            for (i, r) in records.iter().enumerate() {
                if !keep_key[i] && i < first_global {
                    continue;
                }
                let ts = r
                    .timestamp
                    .map(|t| t.timestamp_millis())
                    .unwrap_or(0)
                    .max(0) as u64;
                let seq = self.record_seq.fetch_add(1, Ordering::Relaxed);
                let order = format!("{:016x}{:08x}", u64::MAX - ts, u32::MAX - seq);
                let bytes = serde_json::to_vec(r)?;
                if keep_key[i] {
                    per_key.insert(format!("{}|{order}", r.key_id).as_str(), bytes.as_slice())?;
                }
                if i >= first_global {
                    recent.insert(format!("{order}|{}", r.key_id).as_str(), bytes.as_slice())?;
                }
                if !touched.contains(&r.key_id.as_str()) {
                    touched.push(&r.key_id);
                }
            }
            for key_id in touched {
                let prefix = format!("{key_id}|");
                // Newest first: only what lies past the cap is copied out, to be removed.
                let mut stale = Vec::new();
                for (n, row) in per_key.range(prefix.as_str()..)?.enumerate() {
                    let (k, _) = row?;
                    let k = k.value();
                    if !k.starts_with(&prefix) {
                        break;
                    }
                    if n >= per_key_cap {
                        stale.push(k.to_owned());
                    }
                }
                for k in &stale {
                    per_key.remove(k.as_str())?;
                }
            }
            use redb::ReadableTableMetadata;
            while recent.len()? > global_cap as u64 {
                if recent.pop_last()?.is_none() {
                    break;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A key's request records, newest first.
    pub fn records_for_key(&self, key_id: &str, limit: usize) -> Result<Vec<RequestRecord>> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(RECORDS)?;
        let prefix = format!("{key_id}|");
        let mut out = Vec::new();
        for row in t.range(prefix.as_str()..)? {
            let (k, v) = row?;
            if !k.value().starts_with(&prefix) || out.len() >= limit {
                break;
            }
            if let Ok(r) = serde_json::from_slice(v.value()) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Recent request records of all keys, newest first.
    pub fn recent_records(&self, limit: usize) -> Result<Vec<RequestRecord>> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(RECENT)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            if out.len() >= limit {
                break;
            }
            if let Ok(r) = serde_json::from_slice(v.value()) {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Delete usage buckets whose key sorts between `h:` and `before` (old hourly buckets).
    pub fn prune_usage_before(&self, before: &str) -> Result<u64> {
        let txn = self.db()?.begin_write()?;
        let n = {
            let mut t = txn.open_table(USAGE)?;
            let mut n = 0u64;
            for row in t.extract_from_if("h:"..before, |_, _| true)? {
                row?;
                n += 1;
            }
            n
        };
        txn.commit()?;
        Ok(n)
    }

    pub fn usage_get(&self, key: &str) -> Result<Option<Counters>> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(USAGE)?;
        match t.get(key)? {
            Some(v) => Ok(Some(Counters::decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Many point reads in one snapshot.
    pub fn usage_get_many(&self, keys: &[String]) -> Result<Vec<Option<Counters>>> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(USAGE)?;
        keys.iter()
            .map(|k| match t.get(k.as_str())? {
                Some(v) => Ok(Some(Counters::decode(v.value())?)),
                None => Ok(None),
            })
            .collect()
    }

    /// Every bucket whose key starts with `prefix`, in key order.
    pub fn usage_scan(&self, prefix: &str) -> Result<Vec<(String, Counters)>> {
        let txn = self.db()?.begin_read()?;
        let t = txn.open_table(USAGE)?;
        let mut out = Vec::new();
        for row in t.range(prefix..)? {
            let (k, v) = row?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key.to_owned(), Counters::decode(v.value())?));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ApiKey;

    #[test]
    fn records_round_trip_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("crs.redb");
        {
            let s = Store::open(&p).unwrap();
            let mut k = ApiKey::new("k1".into());
            k.name = "alice".into();
            s.put(Table::ApiKeys, "k1", &k).unwrap();
            let d = Counters {
                requests: 1,
                input_tokens: 10,
                ..Default::default()
            };
            s.apply_usage([("t|k|k1", &d)]).unwrap();
            s.apply_usage([("t|k|k1", &d)]).unwrap();
        }
        let s = Store::open(&p).unwrap();
        let keys: Vec<ApiKey> = s.load_all(Table::ApiKeys).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].name, "alice");
        let c = s.usage_get("t|k|k1").unwrap().unwrap();
        assert_eq!((c.requests, c.input_tokens), (2, 20));
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert!(s.ping());
    }

    #[cfg(unix)]
    #[test]
    fn a_new_store_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("crs.redb");
        drop(Store::open(&p).unwrap());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(Store::open(&p).unwrap().ping(), "reopens as a database");
    }

    #[test]
    fn records_are_stored_without_default_fields_and_read_back_whole() {
        let mut k = ApiKey::new("k".into());
        k.name = "n".into();
        k.tags = vec!["t".into()];
        let bytes = encode(&k).unwrap();
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains("\"isActive\":true"), "{text}");
        assert!(
            !text.contains("tokenLimit"),
            "defaults are left out: {text}"
        );
        let back: ApiKey = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back, k);
        let mut off = k.clone();
        off.is_active = false;
        let back: ApiKey = serde_json::from_slice(&encode(&off).unwrap()).unwrap();
        assert_eq!(back, off);
    }

    #[test]
    fn unparsable_records_are_skipped_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("crs.redb");
        let s = Store::open(&p).unwrap();
        s.put(Table::ApiKeys, "good", &ApiKey::new("good".into()))
            .unwrap();
        s.put(
            Table::ApiKeys,
            "bad",
            &serde_json::json!({"isActive": "not a bool"}),
        )
        .unwrap();
        let keys: Vec<ApiKey> = s.load_all(Table::ApiKeys).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(s.count(Table::ApiKeys).unwrap(), 2);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("crs.redb");
        {
            let s = Store::open(&p).unwrap();
            let txn = s.db().unwrap().begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", 99u32.to_le_bytes().as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let e = Store::open(&p).unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
    }

    /// A data directory written by schema 1 (costs in micro-dollars) keeps its totals: the
    /// file is backed up, then buckets and request records are converted to pico-dollars.
    #[test]
    fn schema_1_store_is_upgraded_with_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("crs.redb");
        let bucket = Counters {
            requests: 240,
            input_tokens: 1680,
            errors: 3,
            ..Default::default()
        };
        let record = |real: i64, rated: i64| {
            serde_json::json!({"keyId": "k1", "model": "m", "inputTokens": 7, "status": 200,
                "realCostMicros": real, "ratedCostMicros": rated})
            .to_string()
        };
        {
            let s = Store::open(&p).unwrap();
            let txn = s.db().unwrap().begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", 1u32.to_le_bytes().as_slice())
                .unwrap();
            {
                let mut u = txn.open_table(USAGE).unwrap();
                for key in ["t|k|k1", "d:2026-11-22|g"] {
                    u.insert(key, bucket.encode_v1(1440, 2880).as_slice())
                        .unwrap();
                }
                u.insert("t|g", [7u8, 7].as_slice()).unwrap();
                let rec = record(6, 12);
                txn.open_table(RECORDS)
                    .unwrap()
                    .insert("k1|0001", rec.as_bytes())
                    .unwrap();
                txn.open_table(RECENT)
                    .unwrap()
                    .insert("0001|k1", rec.as_bytes())
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        let backup = dir.path().join("crs.redb.schema-1.bak");
        assert!(!backup.exists());

        let s = Store::open(&p).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert!(s.ping());
        let want = Counters {
            real_cost_picos: 1_440_000_000,
            rated_cost_picos: 2_880_000_000,
            ..bucket
        };
        assert_eq!(s.usage_get("t|k|k1").unwrap(), Some(want));
        assert_eq!(s.usage_get("d:2026-11-22|g").unwrap(), Some(want));
        {
            let txn = s.db().unwrap().begin_read().unwrap();
            let u = txn.open_table(USAGE).unwrap();
            assert_eq!(
                u.get("t|k|k1").unwrap().unwrap().value()[0],
                1,
                "rewritten as V2"
            );
            assert_eq!(
                u.get("t|g").unwrap().unwrap().value(),
                [7, 7],
                "a bucket that does not decode is left as it was"
            );
        }
        for r in [
            &s.records_for_key("k1", 10).unwrap()[0],
            &s.recent_records(10).unwrap()[0],
        ] {
            assert_eq!(
                (r.real_cost_picos, r.rated_cost_picos, r.input_tokens),
                (6_000_000, 12_000_000, 7)
            );
        }
        drop(s);

        // The backup is the file as schema 1 left it.
        {
            let old = Database::open(&backup).unwrap();
            assert_eq!(stored_version(&old).unwrap(), Some(1));
            let txn = old.begin_read().unwrap();
            let u = txn.open_table(USAGE).unwrap();
            assert_eq!(
                u.get("t|k|k1").unwrap().unwrap().value(),
                bucket.encode_v1(1440, 2880).as_slice()
            );
        }
        assert!(!dir.path().join("crs.redb.schema-1.bak.tmp").exists());

        // Upgraded once: opening again neither converts nor backs up again.
        std::fs::remove_file(&backup).unwrap();
        let s = Store::open(&p).unwrap();
        assert_eq!(s.usage_get("t|k|k1").unwrap(), Some(want));
        assert!(!backup.exists());
    }

    #[test]
    fn a_new_store_needs_no_backup() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("crs.redb")).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn scan_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("crs.redb")).unwrap();
        let one = Counters {
            requests: 1,
            ..Default::default()
        };
        s.apply_usage([
            ("d:2026-11-21|k|a", &one),
            ("d:2026-11-22|k|a", &one),
            ("d:2026-11-22|k|b", &one),
        ])
        .unwrap();
        let rows = s.usage_scan("d:2026-11-22|k|").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, "d:2026-11-22|k|a");
    }
}

#[cfg(test)]
mod prune_tests {
    use super::*;

    #[test]
    fn pruning_drops_only_old_hourly_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("crs.redb")).unwrap();
        let one = Counters {
            requests: 1,
            ..Default::default()
        };
        s.apply_usage([
            ("h:2026-10-01T05|g", &one),
            ("h:2026-10-20T23|k|a", &one),
            ("h:2026-11-22T11|g", &one),
            ("d:2026-10-01|g", &one),
            ("t|g", &one),
        ])
        .unwrap();
        assert_eq!(s.prune_usage_before("h:2026-10-22T00").unwrap(), 2);
        assert!(s.usage_get("h:2026-11-22T11|g").unwrap().is_some());
        assert!(s.usage_get("d:2026-10-01|g").unwrap().is_some());
        assert!(s.usage_get("t|g").unwrap().is_some());
        assert!(s.usage_get("h:2026-10-01T05|g").unwrap().is_none());
    }
}

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
//! tagged `V2`, request records with `realCostPicos` / `ratedCostPicos`); 3 lets a request
//! record row hold the records of one commit for one key (an array; the row's key counts
//! them), where 2 held one record a row. Rows of 2 are read as they are, so the upgrade from 2
//! converts nothing; an older crs would not read the new rows, hence the new number.

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

pub const SCHEMA_VERSION: u32 = 3;

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
/// Request records per key: `{key_id}|{order}` -> JSON, one record (an object) or several of
/// one commit, newest first (an array). `order` sorts rows newest first and counts the row's
/// records (`row_order`).
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// Recent request records of all keys: `{order}` -> one commit's newest records, in the row
/// form of `RECORDS` (schema 2 keyed its one-record rows `{order}|{key_id}`).
const RECENT: TableDefinition<&str, &[u8]> = TableDefinition::new("recent_records");
/// The `meta` row holding how many records the rows of `RECENT` hold (u64, little-endian);
/// absent when unknown (counted again by the next commit).
const RECENT_COUNT: &str = "recent_records_count";

/// The part of a request record row's key that orders rows newest first: the newest record's
/// time and a sequence number, inverted, in fixed-width hex (24 digits), then `+{n}` when the
/// row holds `n > 1` records. Rows written before schema 3 hold one record each and have no
/// count.
fn row_order(newest_ms: u64, seq: u32, n: usize) -> String {
    counted(&stamp(newest_ms, u32::MAX - seq), n)
}

/// The 24 hex digits that sort rows newest first: the time inverted, then `tie` (lower
/// first among rows of the same millisecond).
fn stamp(ms: u64, tie: u32) -> String {
    format!("{:016x}{tie:08x}", u64::MAX - ms)
}

/// An order part: the 24-digit `stamp`, then `+{n}` when the row holds `n > 1` records.
fn counted(stamp: &str, n: usize) -> String {
    if n > 1 {
        format!("{stamp}+{n}")
    } else {
        stamp.to_owned()
    }
}

/// How many records the row whose key begins with `order` (a `RECORDS` key past its
/// `{key_id}|`, or a `RECENT` key) holds.
fn row_count(order: &str) -> usize {
    let Some(rest) = order.get(24..).and_then(|r| r.strip_prefix('+')) else {
        return 1;
    };
    let digits = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..digits].parse().unwrap_or(1).max(1)
}

/// The records of a row, newest first; none when it does not parse (left as it is).
fn row_records(v: &[u8]) -> Vec<RequestRecord> {
    if v.first() == Some(&b'[') {
        serde_json::from_slice(v).unwrap_or_default()
    } else {
        serde_json::from_slice(v)
            .map(|r| vec![r])
            .unwrap_or_default()
    }
}

/// When a record was made, in ms since the epoch (0 when unknown, sorting it last).
fn record_ms(r: &RequestRecord) -> u64 {
    r.timestamp
        .map(|t| t.timestamp_millis())
        .unwrap_or(0)
        .max(0) as u64
}

/// Records read row by row, newest first and at most `limit`: rows are ordered by their
/// newest record, so a record of a long request that ended in a later commit than a newer
/// one is put back in its place.
fn newest_first(mut records: Vec<RequestRecord>, limit: usize) -> Vec<RequestRecord> {
    records.sort_by_key(|r| std::cmp::Reverse(record_ms(r)));
    records.truncate(limit);
    records
}

/// Trim the rows of `table` whose keys begin with `prefix` (then the order part, then
/// anything) to `cap` records: rows are counted by their keys, newest first, values untouched;
/// the row that crosses the cap is cut to the newest records that fit, the rows past it go.
/// `known` is how many records those rows hold, when known (then only the oldest rows are
/// read). Returns how many they hold now.
fn trim_rows(
    table: &mut redb::Table<&str, &[u8]>,
    prefix: &str,
    cap: usize,
    known: Option<u64>,
) -> Result<u64> {
    let cap = cap as u64;
    let mut total = match known {
        Some(n) => n,
        None => {
            let mut n = 0u64;
            for row in table.range(prefix..)? {
                let (k, _) = row?;
                let Some(order) = k.value().strip_prefix(prefix) else {
                    break;
                };
                n += row_count(order) as u64;
            }
            n
        }
    };
    // Oldest first: the last rows under the prefix.
    while total > cap {
        let oldest = {
            let mut rows = if prefix.is_empty() {
                table.iter()?
            } else {
                table.range(prefix..prefix_end(prefix).as_str())?
            };
            match rows.next_back() {
                Some(row) => row?.0.value().to_owned(),
                None => break,
            }
        };
        let order = &oldest[prefix.len()..];
        let n = row_count(order) as u64;
        let rest = total - n.min(total);
        if rest >= cap {
            table.remove(oldest.as_str())?;
            total = rest;
            continue;
        }
        let keep = (cap - rest) as usize;
        let suffix = order.find('|').map_or("", |i| &order[i..]);
        let cut = match table.remove(oldest.as_str())? {
            Some(v) => cut_value(v.value(), keep),
            None => None,
        };
        total = rest;
        if let Some((value, kept)) = cut {
            let order = counted(order.get(..24).unwrap_or(order), kept);
            table.insert(
                format!("{prefix}{order}{suffix}").as_str(),
                value.as_slice(),
            )?;
            total += kept as u64;
        }
    }
    Ok(total)
}

/// A row's value from the JSON of its records, newest first: the record itself when it is
/// one, else an array of them, one a line (`[a,\nb,\nc]`). Compact JSON never holds a raw
/// newline, so a row is cut to its newest records without being parsed (`cut_value`).
fn row_value<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut n = 0;
    for p in pieces {
        out.extend_from_slice(if n == 0 { b"[" } else { b",\n" });
        out.extend_from_slice(p);
        n += 1;
    }
    match n {
        0 => b"[]".to_vec(),
        1 => out.split_off(1),
        _ => {
            out.push(b']');
            out
        }
    }
}

/// The value of a row holding more than `keep` records cut to its first (newest) `keep`, and
/// how many it holds then; `None` when `keep` is 0. A value that does not split into lines as
/// `row_value` writes them is parsed and written again.
fn cut_value(v: &[u8], keep: usize) -> Option<(Vec<u8>, usize)> {
    if keep == 0 {
        return None;
    }
    if v.first() != Some(&b'[') {
        return Some((v.to_vec(), 1));
    }
    let mut at = 1;
    let mut seps = Vec::with_capacity(keep);
    while seps.len() < keep {
        match v[at..].windows(2).position(|w| w == b",\n") {
            Some(i) => {
                seps.push(at + i);
                at += i + 2;
            }
            None => break,
        }
    }
    if seps.len() < keep {
        // Called for a row that holds more than `keep`: this one was not written a record a
        // line.
        let json: Vec<Vec<u8>> = row_records(v)
            .iter()
            .take(keep)
            .filter_map(|r| serde_json::to_vec(r).ok())
            .collect();
        return (!json.is_empty()).then(|| (row_value(json.iter().map(Vec::as_slice)), json.len()));
    }
    let end = seps[keep - 1];
    Some(if keep == 1 {
        (v[1..end].to_vec(), 1)
    } else {
        let mut out = v[..end].to_vec();
        out.push(b']');
        (out, keep)
    })
}

/// A row's order part and value.
type Row = (String, Vec<u8>);

/// A row written again with only the records `kept` (newest first), in the place of the row
/// whose order part is `order`: the same time and sequence, the new count. `None` when no
/// record is kept.
fn row_again(order: &str, kept: &[&RequestRecord]) -> Result<Option<Row>> {
    let stamp = order.get(..24).unwrap_or(order);
    let json = kept
        .iter()
        .map(serde_json::to_vec)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((!json.is_empty()).then(|| {
        (
            counted(stamp, json.len()),
            row_value(json.iter().map(Vec::as_slice)),
        )
    }))
}

/// The first key past every key that begins with `prefix` (which ends in `|`).
fn prefix_end(prefix: &str) -> String {
    let mut end = prefix.to_owned();
    end.pop();
    end.push(char::from(b'|' + 1));
    end
}

/// Replace the rows of `key_id` in `RECORDS` with `records` (newest first), a row each, and
/// add them to `RECENT` as rows of their own (an import: the caller has taken the key's old
/// records out of `RECENT`).
fn replace_key_records(
    per_key: &mut redb::Table<&str, &[u8]>,
    recent: &mut redb::Table<&str, &[u8]>,
    key_id: &str,
    records: &[RequestRecord],
) -> Result<()> {
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
    }
    for (i, r) in records.iter().enumerate() {
        // Newest first, also among records of the same millisecond.
        let order = stamp(record_ms(r), i as u32);
        let bytes = serde_json::to_vec(r)?;
        per_key.insert(format!("{key_id}|{order}").as_str(), bytes.as_slice())?;
        recent.insert(format!("{order}|{key_id}").as_str(), bytes.as_slice())?;
    }
    Ok(())
}

/// Take the records of `keys` out of `RECENT` (before an import writes them anew): rows of
/// one of them go, rows that also hold others are written again without them.
fn remove_from_recent(
    recent: &mut redb::Table<&str, &[u8]>,
    keys: &std::collections::HashSet<&str>,
) -> Result<()> {
    let mut changes: Vec<(String, Option<Row>)> = Vec::new();
    for row in recent.iter()? {
        let (k, v) = row?;
        let key = k.value();
        // Rows of schema 2 name their key after the order part.
        if let Some((_, id)) = key.split_once('|') {
            if keys.contains(id) {
                changes.push((key.to_owned(), None));
            }
            continue;
        }
        let records = row_records(v.value());
        if !records.iter().any(|r| keys.contains(r.key_id.as_str())) {
            continue;
        }
        let kept: Vec<&RequestRecord> = records
            .iter()
            .filter(|r| !keys.contains(r.key_id.as_str()))
            .collect();
        changes.push((key.to_owned(), row_again(key, &kept)?));
    }
    for (old, new) in changes {
        recent.remove(old.as_str())?;
        if let Some((k, v)) = new {
            recent.insert(k.as_str(), v.as_slice())?;
        }
    }
    Ok(())
}

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
            remove_from_recent(&mut recent, &[key_id].into_iter().collect())?;
            replace_key_records(&mut per_key, &mut recent, key_id, records)?;
            // Counted again by the next commit.
            txn.open_table(META)?.remove(RECENT_COUNT)?;
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
        let txn = self.db()?.begin_write()?;
        {
            let mut per_key = txn.open_table(RECORDS)?;
            let mut recent = txn.open_table(RECENT)?;
            let keys = items.iter().map(|(k, _)| k.as_str()).collect();
            remove_from_recent(&mut recent, &keys)?;
            for (key_id, records) in items {
                replace_key_records(&mut per_key, &mut recent, key_id, records)?;
            }
            let count = trim_rows(&mut recent, "", recent_cap, None)?;
            txn.open_table(META)?
                .insert(RECENT_COUNT, count.to_le_bytes().as_slice())?;
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
            self.append_records(&txn, records, per_key_cap, global_cap)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Write a batch of request records (oldest first, as they finished): in `RECORDS` one row
    /// a key holding that key's records of the batch (at most `per_key_cap`, the newest), in
    /// `RECENT` one row holding the batch's newest `global_cap`. Then trim each touched key to
    /// `per_key_cap` records and the recent list to `global_cap`: whole rows go, oldest first,
    /// and the row that crosses the cap is cut to its newest records that fit.
    ///
    /// A row a batch, not a row a record: under load a 100 ms batch holds hundreds of records,
    /// and a row each (inserted into two B-trees, then as many trimmed) was most of what a
    /// commit cost.
    fn append_records(
        &self,
        txn: &WriteTransaction,
        records: &[RequestRecord],
        per_key_cap: usize,
        global_cap: usize,
    ) -> Result<()> {
        let per_key_cap = per_key_cap.max(1);
        let global_cap = global_cap.max(1);
        let mut per_key = txn.open_table(RECORDS)?;
        let mut recent = txn.open_table(RECENT)?;
        let mut meta = txn.open_table(META)?;
        // The batch by key, in the order keys first appear, newest record first (indices).
        let mut index: std::collections::HashMap<&str, usize> = Default::default();
        let mut by_key: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, r) in records.iter().enumerate().rev() {
            let k = *index.entry(r.key_id.as_str()).or_insert_with(|| {
                by_key.push((r.key_id.as_str(), Vec::new()));
                by_key.len() - 1
            });
            let rows = &mut by_key[k].1;
            if rows.len() < per_key_cap {
                rows.push(i);
            }
        }
        // Each record's JSON, made once for both tables.
        let mut json: Vec<Option<Vec<u8>>> = vec![None; records.len()];
        for (key_id, idx) in by_key {
            let (order, bytes) = self.new_row(records, &mut json, idx)?;
            per_key.insert(format!("{key_id}|{order}").as_str(), bytes.as_slice())?;
            let prefix = format!("{key_id}|");
            trim_rows(&mut per_key, &prefix, per_key_cap, None)?;
        }
        let newest = (0..records.len()).rev().take(global_cap).collect();
        let (order, bytes) = self.new_row(records, &mut json, newest)?;
        recent.insert(order.as_str(), bytes.as_slice())?;
        let count = meta
            .get(RECENT_COUNT)?
            .map(|v| u64::from_le_bytes(v.value().try_into().unwrap_or([0; 8])));
        let count = trim_rows(
            &mut recent,
            "",
            global_cap,
            count.map(|n| n + row_count(&order) as u64),
        )?;
        meta.insert(RECENT_COUNT, count.to_le_bytes().as_slice())?;
        Ok(())
    }

    /// A new row of the records `idx` of `records`: its order part (`row_order`) and its
    /// value, the records newest first. `json` keeps each record's JSON once made.
    fn new_row(
        &self,
        records: &[RequestRecord],
        json: &mut [Option<Vec<u8>>],
        mut idx: Vec<usize>,
    ) -> Result<(String, Vec<u8>)> {
        idx.sort_by_key(|&i| std::cmp::Reverse(record_ms(&records[i])));
        for &i in &idx {
            if json[i].is_none() {
                json[i] = Some(serde_json::to_vec(&records[i])?);
            }
        }
        let seq = self
            .record_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let newest = idx.first().map_or(0, |&i| record_ms(&records[i]));
        let bytes = row_value(idx.iter().filter_map(|&i| json[i].as_deref()));
        Ok((row_order(newest, seq, idx.len()), bytes))
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
            out.extend(row_records(v.value()));
        }
        Ok(newest_first(out, limit))
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
            out.extend(row_records(v.value()));
        }
        Ok(newest_first(out, limit))
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

    /// A write transaction on `s` that marks it as written by store schema `v`.
    pub(super) fn write_as_schema(s: &Store, v: u32) -> WriteTransaction {
        let txn = s.db().unwrap().begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", v.to_le_bytes().as_slice())
            .unwrap();
        txn
    }

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
            let txn = write_as_schema(&s, 99);
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
            let txn = write_as_schema(&s, 1);
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

/// Request record rows: batches, caps, the row format.
#[cfg(test)]
mod records_tests {
    use super::tests::write_as_schema;
    use super::*;

    /// A request record of `key` numbered `id` (its input tokens), made `id` ms after a
    /// fixed time: later ids are newer.
    fn rec(key: &str, id: u64) -> RequestRecord {
        RequestRecord {
            timestamp: Some(
                chrono::DateTime::from_timestamp_millis(1_790_000_000_000 + id as i64).unwrap(),
            ),
            key_id: key.into(),
            input_tokens: id,
            status: 200,
            ..Default::default()
        }
    }

    fn ids(records: &[RequestRecord]) -> Vec<u64> {
        records.iter().map(|r| r.input_tokens).collect()
    }

    /// Rows of a table, and the records they hold by their keys (the count in `meta`, for
    /// `RECENT`).
    fn rows(s: &Store, def: TableDefinition<&str, &[u8]>) -> (usize, u64) {
        let per_key = def.to_string() == RECORDS.to_string();
        let txn = s.db().unwrap().begin_read().unwrap();
        let t = txn.open_table(def).unwrap();
        let keys: Vec<String> = t
            .iter()
            .unwrap()
            .map(|r| r.unwrap().0.value().to_owned())
            .collect();
        let counted = keys
            .iter()
            .map(|k| {
                let order = if per_key {
                    k.split_once('|').unwrap().1
                } else {
                    k.as_str()
                };
                row_count(order) as u64
            })
            .sum();
        (keys.len(), counted)
    }

    fn recent_count(s: &Store) -> Option<u64> {
        let txn = s.db().unwrap().begin_read().unwrap();
        let meta = txn.open_table(META).unwrap();
        meta.get(RECENT_COUNT)
            .unwrap()
            .map(|v| u64::from_le_bytes(v.value().try_into().unwrap()))
    }

    /// A row's value is JSON (an object, or an array a record a line) and is cut to its
    /// newest records without being parsed; a compact array (not written so) is cut too.
    #[test]
    fn row_values_are_json_and_cut_by_lines() {
        let recs: Vec<RequestRecord> = (1..=4)
            .map(|i| {
                let mut r = rec("k", i);
                r.model = "a \"quoted\",\nmodel\n".into();
                r
            })
            .collect();
        let json: Vec<Vec<u8>> = recs
            .iter()
            .map(|r| serde_json::to_vec(r).unwrap())
            .collect();
        let v = row_value(json.iter().map(Vec::as_slice));
        assert_eq!(ids(&row_records(&v)), vec![1, 2, 3, 4]);
        assert_eq!(row_records(&v)[0].model, recs[0].model);
        for keep in 1..=3 {
            let (cut, n) = cut_value(&v, keep).unwrap();
            assert_eq!(n, keep);
            assert_eq!(
                ids(&row_records(&cut)),
                (1..=keep as u64).collect::<Vec<_>>()
            );
            assert_eq!(
                cut.first() == Some(&b'['),
                keep > 1,
                "one record is an object"
            );
        }
        assert!(cut_value(&v, 0).is_none());
        let one = row_value([json[0].as_slice()]);
        assert_eq!(one, json[0]);
        let compact = serde_json::to_vec(&recs).unwrap();
        let (cut, n) = cut_value(&compact, 2).unwrap();
        assert_eq!((n, ids(&row_records(&cut))), (2, vec![1, 2]));
        assert_eq!(row_value(std::iter::empty()), b"[]");
    }

    #[test]
    fn a_commit_writes_a_row_a_key_and_the_caps_hold_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("crs.redb")).unwrap();
        // 500 requests of a and 150 of b, interleaved, in one commit; caps 200 and 300.
        let batch: Vec<RequestRecord> = (0..650)
            .map(|i| rec(if i % 13 < 10 { "a" } else { "b" }, i))
            .collect();
        s.commit_usage([], &batch, 200, 300).unwrap();
        let newest = |key: &str, n: usize| -> Vec<u64> {
            let mut v: Vec<u64> = batch
                .iter()
                .filter(|r| key.is_empty() || r.key_id == key)
                .map(|r| r.input_tokens)
                .collect();
            v.reverse();
            v.truncate(n);
            v
        };
        assert_eq!(
            ids(&s.records_for_key("a", usize::MAX).unwrap()),
            newest("a", 200)
        );
        assert_eq!(
            ids(&s.records_for_key("b", usize::MAX).unwrap()),
            newest("b", 200)
        );
        assert_eq!(ids(&s.recent_records(usize::MAX).unwrap()), newest("", 300));
        // One row for each key, one for the recent list.
        assert_eq!(rows(&s, RECORDS), (2, 350));
        assert_eq!(rows(&s, RECENT), (1, 300));
        assert_eq!(recent_count(&s), Some(300));

        // 50 more of a: the old row of a is cut to the 150 that still fit.
        let more: Vec<RequestRecord> = (650..700).map(|i| rec("a", i)).collect();
        s.commit_usage([], &more, 200, 300).unwrap();
        let a = ids(&s.records_for_key("a", usize::MAX).unwrap());
        assert_eq!(a.len(), 200);
        assert_eq!(
            a[..50],
            newest("", 0)
                .into_iter()
                .chain((650..700).rev())
                .collect::<Vec<_>>()[..]
        );
        assert_eq!(a[50..], newest("a", 150)[..]);
        assert_eq!(rows(&s, RECORDS), (3, 350));
        let all = ids(&s.recent_records(usize::MAX).unwrap());
        assert_eq!(all.len(), 300);
        assert_eq!(all[..50], a[..50]);
        assert_eq!(all[50..], newest("", 250)[..]);
        assert_eq!(rows(&s, RECENT), (2, 300));
        assert_eq!(recent_count(&s), Some(300));
        // A limit takes the newest.
        assert_eq!(s.records_for_key("a", 3).unwrap().len(), 3);
        assert_eq!(ids(&s.recent_records(2).unwrap()), vec![699, 698]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// Whatever the batches and caps, each key keeps exactly its newest `per_key` records
        /// and the recent list the newest `global` overall, newest first; the count kept in
        /// `meta` matches the rows.
        #[test]
        fn record_caps_keep_exactly_the_newest(
            batches in proptest::collection::vec(
                proptest::collection::vec(0usize..3, 0..40), 1..12),
            per_key in 1usize..25,
            global in 1usize..60,
            forget_count in proptest::prelude::any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let s = Store::open(&dir.path().join("crs.redb")).unwrap();
            let keys = ["k0", "k1", "k2"];
            let mut all: Vec<RequestRecord> = Vec::new();
            for batch in batches {
                let recs: Vec<RequestRecord> = batch
                    .iter()
                    .map(|&k| rec(keys[k], all.len() as u64 + 1).clone())
                    .enumerate()
                    .map(|(i, mut r)| {
                        r.input_tokens = (all.len() + i + 1) as u64;
                        r.timestamp = rec("", r.input_tokens).timestamp;
                        r
                    })
                    .collect();
                all.extend(recs.iter().cloned());
                if forget_count {
                    let txn = s.db().unwrap().begin_write().unwrap();
                    txn.open_table(META).unwrap().remove(RECENT_COUNT).unwrap();
                    txn.commit().unwrap();
                }
                s.commit_usage([], &recs, per_key, global).unwrap();
                for key in keys {
                    let want: Vec<u64> = all
                        .iter()
                        .rev()
                        .filter(|r| r.key_id == key)
                        .take(per_key)
                        .map(|r| r.input_tokens)
                        .collect();
                    proptest::prop_assert_eq!(
                        ids(&s.records_for_key(key, usize::MAX).unwrap()), want);
                }
                let want: Vec<u64> = all.iter().rev().take(global).map(|r| r.input_tokens).collect();
                proptest::prop_assert_eq!(ids(&s.recent_records(usize::MAX).unwrap()), want.clone());
                if !recs.is_empty() || recent_count(&s).is_some() {
                    proptest::prop_assert_eq!(recent_count(&s), Some(rows(&s, RECENT).1));
                }
                proptest::prop_assert_eq!(rows(&s, RECENT).1, want.len() as u64);
            }
        }
    }

    /// Rows as schema 2 wrote them (one record each, the recent ones named after their key)
    /// are read, trimmed and replaced alongside the rows of schema 3; an import replacing a
    /// key's records takes them out of the shared recent rows too.
    #[test]
    fn schema_2_rows_live_on_beside_batched_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("crs.redb");
        {
            let s = Store::open(&p).unwrap();
            let txn = write_as_schema(&s, 2);
            {
                let mut per_key = txn.open_table(RECORDS).unwrap();
                let mut recent = txn.open_table(RECENT).unwrap();
                for id in 1..=4u64 {
                    let r = rec(if id % 2 == 0 { "b" } else { "a" }, id);
                    let order = format!(
                        "{:016x}{:08x}",
                        u64::MAX - record_ms(&r),
                        u32::MAX - id as u32
                    );
                    let v = serde_json::to_vec(&r).unwrap();
                    per_key
                        .insert(format!("{}|{order}", r.key_id).as_str(), v.as_slice())
                        .unwrap();
                    recent
                        .insert(format!("{order}|{}", r.key_id).as_str(), v.as_slice())
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        }
        let s = Store::open(&p).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert!(dir.path().join("crs.redb.schema-2.bak").exists());
        assert_eq!(ids(&s.records_for_key("a", 10).unwrap()), vec![3, 1]);
        assert_eq!(ids(&s.recent_records(10).unwrap()), vec![4, 3, 2, 1]);
        let batch: Vec<RequestRecord> = (5..=8)
            .map(|i| rec(if i % 2 == 0 { "b" } else { "a" }, i))
            .collect();
        s.commit_usage([], &batch, 3, 5).unwrap();
        assert_eq!(ids(&s.records_for_key("a", 10).unwrap()), vec![7, 5, 3]);
        assert_eq!(ids(&s.records_for_key("b", 10).unwrap()), vec![8, 6, 4]);
        assert_eq!(ids(&s.recent_records(10).unwrap()), vec![8, 7, 6, 5, 4]);
        // An import of a's records: none of the old ones stay in the recent list, b's do.
        s.records_replace("a", &[rec("a", 100)]).unwrap();
        assert_eq!(ids(&s.records_for_key("a", 10).unwrap()), vec![100]);
        assert_eq!(ids(&s.recent_records(10).unwrap()), vec![100, 8, 6, 4]);
        assert_eq!(recent_count(&s), None, "counted again by the next commit");
        s.commit_usage([], &[rec("b", 101)], 3, 5).unwrap();
        assert_eq!(ids(&s.recent_records(10).unwrap()), vec![101, 100, 8, 6, 4]);
        assert_eq!(recent_count(&s), Some(5));
        assert_eq!(ids(&s.records_for_key("b", 10).unwrap()), vec![101, 8, 6]);
    }
}

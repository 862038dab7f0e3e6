//! Consistent copies of the store. Every table is read in one read transaction (a snapshot of
//! one instant: commits that land meanwhile are not in it) and written into a new redb file.
//! A backup file is such a copy plus a `backup_files` table holding the data directory's
//! other files (`secrets.json`, `config.toml`, the pricing file), so one file restores all.

use std::path::Path;

use anyhow::{Context, Result, bail};
use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, TableHandle,
};

use super::{META, SCHEMA_VERSION, Store};

/// Files of the data directory carried inside a backup: file name -> bytes.
const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("backup_files");

/// What a copy holds.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CopyStats {
    pub tables: usize,
    pub rows: u64,
}

/// What a backup file holds.
#[derive(Debug, Default)]
pub struct BackupContents {
    pub schema: u32,
    pub files: Vec<(String, Vec<u8>)>,
    pub stats: CopyStats,
}

impl Store {
    /// Write a consistent copy of every table to a new file at `dest` (replaced if present,
    /// readable by its owner only).
    pub fn snapshot_to(&self, dest: &Path) -> Result<CopyStats> {
        let txn = self.db()?.begin_read()?;
        copy_tables(&txn, dest, &[])
    }

    /// Visit every row of every table (table name, key, value), in one snapshot.
    pub fn for_each_row(&self, f: impl FnMut(&str, &str, &[u8])) -> Result<()> {
        visit(&self.db()?.begin_read()?, f)
    }
}

/// Whether an error from opening a store means another process holds it (a running server).
pub fn is_busy(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        matches!(
            c.downcast_ref::<redb::DatabaseError>(),
            Some(redb::DatabaseError::DatabaseAlreadyOpen)
        )
    })
}

fn create_private(dest: &Path) -> Result<Database> {
    if dest.exists() {
        std::fs::remove_file(dest).with_context(|| format!("replacing {}", dest.display()))?;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
            .with_context(|| format!("creating {}", dest.display()))?;
    }
    Database::create(dest).with_context(|| format!("creating {}", dest.display()))
}

/// Copy every table of `src` but those named in `skip` into a new database at `dest`.
fn copy_tables(src: &ReadTransaction, dest: &Path, skip: &[&str]) -> Result<CopyStats> {
    let db = create_private(dest)?;
    let w = db.begin_write()?;
    let mut stats = CopyStats::default();
    for handle in src.list_tables()? {
        let name = handle.name().to_owned();
        if skip.contains(&name.as_str()) {
            continue;
        }
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&name);
        let from = src
            .open_table(def)
            .with_context(|| format!("reading table {name}"))?;
        let mut to = w.open_table(def)?;
        for row in from.iter()? {
            let (k, v) = row?;
            to.insert(k.value(), v.value())?;
            stats.rows += 1;
        }
        stats.tables += 1;
    }
    w.commit()?;
    Ok(stats)
}

/// Visit every row of every table of a snapshot.
fn visit(txn: &ReadTransaction, mut f: impl FnMut(&str, &str, &[u8])) -> Result<()> {
    for handle in txn.list_tables()? {
        let name = handle.name().to_owned();
        let def: TableDefinition<&str, &[u8]> = TableDefinition::new(&name);
        for row in txn.open_table(def)?.iter()? {
            let (k, v) = row?;
            f(&name, k.value(), v.value());
        }
    }
    Ok(())
}

/// The schema version a copy was written under (0 when it has none).
fn schema_of(txn: &ReadTransaction) -> Result<u32> {
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    Ok(meta
        .get("schema_version")?
        .map(|v| u32::from_le_bytes(v.value().try_into().unwrap_or([0; 4])))
        .unwrap_or(0))
}

/// Add the data directory's other files to a copy made by `snapshot_to`: it becomes a backup.
pub fn add_backup_files(path: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    let db = Database::open(path).with_context(|| format!("opening {}", path.display()))?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_table(FILES)?;
        for (name, bytes) in files {
            t.insert(name.as_str(), bytes.as_slice())?;
        }
    }
    w.commit()?;
    Ok(())
}

/// Read a backup file: its schema, the files it carries, and how much it holds. Fails for a
/// file that is not a crs store, or one from a newer crs.
pub fn read_backup(path: &Path) -> Result<BackupContents> {
    let db =
        Database::open(path).with_context(|| format!("{} is not a crs backup", path.display()))?;
    let txn = db.begin_read()?;
    let schema = schema_of(&txn)?;
    if schema == 0 {
        bail!("{} is not a crs backup (no schema version)", path.display());
    }
    if schema > SCHEMA_VERSION {
        bail!(
            "{} was written by a newer crs (store schema {schema}, this one understands {SCHEMA_VERSION})",
            path.display()
        );
    }
    let mut out = BackupContents {
        schema,
        ..Default::default()
    };
    let mut tables = std::collections::BTreeSet::new();
    visit(&txn, |table, k, v| {
        if table == FILES.name() {
            out.files.push((k.to_owned(), v.to_vec()));
        } else {
            tables.insert(table.to_owned());
            out.stats.rows += 1;
        }
    })?;
    out.stats.tables = tables.len();
    Ok(out)
}

/// Write the store held in a backup file to `dest` (without the carried files).
pub fn restore_store(backup: &Path, dest: &Path) -> Result<CopyStats> {
    let db = Database::open(backup).with_context(|| format!("opening {}", backup.display()))?;
    let txn = db.begin_read()?;
    copy_tables(&txn, dest, &[FILES.name()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ApiKey;
    use crate::store::{Counters, Table};

    #[test]
    fn a_backup_round_trips_every_table_and_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("crs.redb")).unwrap();
        s.put(Table::ApiKeys, "k1", &ApiKey::new("k1".into()))
            .unwrap();
        let c = Counters {
            requests: 3,
            ..Default::default()
        };
        s.usage_put_many(&[("t|g".into(), c)]).unwrap();
        let b = dir.path().join("b.redb");
        let stats = s.snapshot_to(&b).unwrap();
        assert!(stats.rows >= 3, "{stats:?}");
        add_backup_files(&b, &[("secrets.json".into(), b"{}".to_vec())]).unwrap();
        let got = read_backup(&b).unwrap();
        assert_eq!(got.schema, SCHEMA_VERSION);
        assert_eq!(got.files, vec![("secrets.json".into(), b"{}".to_vec())]);
        assert_eq!(got.stats.rows, stats.rows);

        let r = dir.path().join("restored.redb");
        restore_store(&b, &r).unwrap();
        let s2 = Store::open(&r).unwrap();
        assert_eq!(s2.usage_get("t|g").unwrap(), Some(c));
        assert!(s2.get::<ApiKey>(Table::ApiKeys, "k1").unwrap().is_some());
        drop(s2);
        assert!(read_backup(&r).unwrap().files.is_empty());
    }

    #[test]
    fn a_second_open_of_a_store_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("crs.redb");
        let _s = Store::open(&p).unwrap();
        let e = Store::open(&p).unwrap_err();
        assert!(is_busy(&e), "{e:#}");
        assert!(!is_busy(&anyhow::anyhow!("other")));
    }
}

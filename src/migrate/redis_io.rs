//! Reading and writing a whole Redis keyspace, pipelined.
//!
//! Read: `SCAN COUNT 1000` (never `KEYS`), then one pipeline of `TYPE` + `PTTL` per batch, then
//! one pipeline of `GET` / `HGETALL` / `SMEMBERS` / `ZRANGE WITHSCORES` / `LRANGE` / `XRANGE`.
//! Write: per key `DEL`, the type's write command and `PEXPIRE`, pipelined in batches.

use std::collections::HashSet;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use redis::Value as RV;
use redis::aio::MultiplexedConnection;

use super::dump::{V1Key, V1Value};

const SCAN_COUNT: usize = 1000;
const WRITE_BATCH: usize = 1000;

/// A progress bar on stderr, drawn only when stderr is a terminal.
pub fn progress(len: u64, what: &str, enabled: bool) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} keys ({per_sec}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

pub async fn connect(url: &str) -> Result<MultiplexedConnection> {
    let client = redis::Client::open(url).with_context(|| format!("invalid Redis URL {url}"))?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(Duration::from_secs(300)));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .with_context(|| format!("connecting to {}", redact(url)))
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

fn text(v: &RV) -> Option<String> {
    match v {
        RV::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        RV::SimpleString(s) => Some(s.clone()),
        RV::Okay => Some("OK".into()),
        RV::Int(i) => Some(i.to_string()),
        RV::Double(d) => Some(d.to_string()),
        RV::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn items(v: RV) -> Vec<RV> {
    match v {
        RV::Array(a) | RV::Set(a) => a,
        RV::Map(m) => m.into_iter().flat_map(|(k, v)| [k, v]).collect(),
        _ => Vec::new(),
    }
}

/// A reply as text, taking its buffer (no copy for valid UTF-8).
fn owned(v: RV) -> Option<String> {
    match v {
        RV::BulkString(b) => Some(
            String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        ),
        other => text(&other),
    }
}

fn pairs(v: RV) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut it = items(v).into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        if let (Some(k), Some(v)) = (owned(k), owned(v)) {
            out.push((k, v));
        }
    }
    out
}

fn decode(ty: &str, v: RV) -> Option<V1Value> {
    if let RV::ServerError(_) | RV::Nil = v {
        return None;
    }
    Some(match ty {
        "string" => V1Value::Str(owned(v)?),
        "hash" => V1Value::Hash(pairs(v)),
        "set" => {
            let mut s: Vec<String> = items(v).into_iter().filter_map(owned).collect();
            s.sort();
            V1Value::Set(s)
        }
        "list" => V1Value::List(items(v).into_iter().filter_map(owned).collect()),
        "zset" => V1Value::ZSet(
            pairs(v)
                .into_iter()
                .map(|(m, s)| (m, s.parse().unwrap_or(0.0)))
                .collect(),
        ),
        "stream" => V1Value::Stream(
            items(v)
                .into_iter()
                .filter_map(|e| {
                    let mut e = items(e).into_iter();
                    let id = owned(e.next()?)?;
                    Some((id, pairs(e.next()?)))
                })
                .collect(),
        ),
        _ => return None,
    })
}

/// What `read_all` saw besides the keys it handed over.
#[derive(Debug, Default)]
pub struct ReadStats {
    /// Keys of types this reader does not handle (module types), by name.
    pub unsupported: Vec<(String, String)>,
    /// Keys that vanished between SCAN and the read (expired meanwhile).
    pub vanished: u64,
}

/// One SCAN batch, read and decoded.
#[derive(Default)]
struct Batch {
    keys: Vec<V1Key>,
    unsupported: Vec<(String, String)>,
    vanished: u64,
    scanned: u64,
}

/// Pipelined TYPE + PTTL, then pipelined value reads, for one batch of names.
async fn fetch(mut con: MultiplexedConnection, names: Vec<Vec<u8>>) -> Result<Batch> {
    let mut b = Batch {
        scanned: names.len() as u64,
        ..Default::default()
    };
    let mut p = redis::pipe();
    for n in &names {
        p.cmd("TYPE").arg(n).cmd("PTTL").arg(n);
    }
    let meta: Vec<RV> = p
        .ignore_errors()
        .query_async::<Vec<redis::RedisResult<RV>>>(&mut con)
        .await
        .context("TYPE/PTTL")?
        .into_iter()
        .map(|r| r.unwrap_or(RV::Nil))
        .collect();
    let mut p = redis::pipe();
    let mut wanted = Vec::with_capacity(names.len());
    for (i, n) in names.iter().enumerate() {
        let ty = text(&meta[2 * i]).unwrap_or_default();
        let ttl = match &meta[2 * i + 1] {
            RV::Int(t) => *t,
            _ => -1,
        };
        match ty.as_str() {
            "string" => p.cmd("GET").arg(n),
            "hash" => p.cmd("HGETALL").arg(n),
            "set" => p.cmd("SMEMBERS").arg(n),
            "zset" => p.cmd("ZRANGE").arg(n).arg(0).arg(-1).arg("WITHSCORES"),
            "list" => p.cmd("LRANGE").arg(n).arg(0).arg(-1),
            "stream" => p.cmd("XRANGE").arg(n).arg("-").arg("+"),
            "none" => {
                b.vanished += 1;
                continue;
            }
            other => {
                b.unsupported
                    .push((String::from_utf8_lossy(n).into_owned(), other.to_owned()));
                continue;
            }
        };
        wanted.push((n, ty, ttl));
    }
    if wanted.is_empty() {
        return Ok(b);
    }
    let vals: Vec<RV> = p
        .ignore_errors()
        .query_async::<Vec<redis::RedisResult<RV>>>(&mut con)
        .await
        .context("reading values")?
        .into_iter()
        .map(|r| r.unwrap_or(RV::Nil))
        .collect();
    for ((n, ty, ttl), v) in wanted.into_iter().zip(vals) {
        match decode(&ty, v) {
            Some(value) => b.keys.push(V1Key {
                name: String::from_utf8_lossy(n).into_owned(),
                // PTTL: -1 no expiry; -2 gone (decode saw Nil).
                ttl_ms: if ttl < 0 { -1 } else { ttl.max(1) },
                value,
            }),
            None => b.vanished += 1,
        }
    }
    Ok(b)
}

/// Batches read concurrently (the SCAN cursor itself is sequential).
const IN_FLIGHT: usize = 4;

/// Read every key of the database in `url`, handing each to `sink` (on the calling task,
/// while further batches are read). Returns when the scan completes.
pub async fn read_all(
    url: &str,
    show_progress: bool,
    sink: &mut dyn FnMut(V1Key) -> Result<()>,
) -> Result<ReadStats> {
    let mut con = connect(url).await?;
    let total: u64 = redis::cmd("DBSIZE").query_async(&mut con).await?;
    let pb = progress(total, "reading v1", show_progress);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Batch>>(IN_FLIGHT * 2);
    let scanner = tokio::spawn(async move {
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        // SCAN may return a key twice (the table is resized during the scan).
        let mut seen: HashSet<Box<[u8]>> = HashSet::new();
        let mut cursor: u64 = 0;
        loop {
            let r: redis::RedisResult<(u64, Vec<Vec<u8>>)> = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .query_async(&mut con)
                .await;
            let (next, names) = match r {
                Ok(x) => x,
                Err(e) => {
                    let _ = tx.send(Err(anyhow::Error::new(e).context("SCAN"))).await;
                    return;
                }
            };
            let names: Vec<Vec<u8>> = names
                .into_iter()
                .filter(|n| seen.insert(n.clone().into_boxed_slice()))
                .collect();
            if !names.is_empty() {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let (tx, con) = (tx.clone(), con.clone());
                tokio::spawn(async move {
                    let r = fetch(con, names).await;
                    let _ = tx.send(r).await;
                    drop(permit);
                });
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    });
    let mut stats = ReadStats::default();
    let mut result = Ok(());
    while let Some(batch) = rx.recv().await {
        let b = match batch {
            Ok(b) => b,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        stats.vanished += b.vanished;
        stats.unsupported.extend(b.unsupported);
        pb.inc(b.scanned);
        for k in b.keys {
            if let Err(e) = sink(k) {
                result = Err(e);
                break;
            }
        }
        if result.is_err() {
            break;
        }
    }
    drop(rx);
    scanner.abort();
    pb.finish_and_clear();
    result.map(|()| stats)
}

/// Number of keys in the database.
pub async fn dbsize(url: &str) -> Result<u64> {
    let mut con = connect(url).await?;
    Ok(redis::cmd("DBSIZE").query_async(&mut con).await?)
}

fn add_write(p: &mut redis::Pipeline, k: &V1Key) {
    p.cmd("DEL").arg(&k.name).ignore();
    match &k.value {
        V1Value::Str(s) => {
            p.cmd("SET").arg(&k.name).arg(s).ignore();
        }
        V1Value::Hash(h) => {
            for chunk in h.chunks(512) {
                let c = p.cmd("HSET").arg(&k.name);
                for (f, v) in chunk {
                    c.arg(f).arg(v);
                }
                c.ignore();
            }
        }
        V1Value::Set(s) => {
            for chunk in s.chunks(1024) {
                p.cmd("SADD").arg(&k.name).arg(chunk).ignore();
            }
        }
        V1Value::List(l) => {
            for chunk in l.chunks(1024) {
                p.cmd("RPUSH").arg(&k.name).arg(chunk).ignore();
            }
        }
        V1Value::ZSet(z) => {
            for chunk in z.chunks(512) {
                let c = p.cmd("ZADD").arg(&k.name);
                for (m, s) in chunk {
                    c.arg(*s).arg(m);
                }
                c.ignore();
            }
        }
        V1Value::Stream(entries) => {
            for (id, fields) in entries {
                let c = p.cmd("XADD").arg(&k.name).arg(id);
                for (f, v) in fields {
                    c.arg(f).arg(v);
                }
                c.ignore();
            }
        }
    }
    if k.ttl_ms > 0 {
        p.cmd("PEXPIRE").arg(&k.name).arg(k.ttl_ms).ignore();
    }
}

/// Write `keys` (replacing keys of the same name), honouring their types and TTLs.
pub async fn write_all(url: &str, keys: &[V1Key], show_progress: bool) -> Result<()> {
    let mut con = connect(url).await?;
    let pb = progress(keys.len() as u64, "writing v1", show_progress);
    for batch in keys.chunks(WRITE_BATCH) {
        let mut p = redis::pipe();
        for k in batch.iter().filter(|k| !k.value.is_empty()) {
            add_write(&mut p, k);
        }
        let () = p.query_async(&mut con).await.context("writing keys")?;
        pb.inc(batch.len() as u64);
    }
    pb.finish_and_clear();
    Ok(())
}

/// Refuse to write into a database that already holds keys, unless asked to.
pub async fn ensure_empty(url: &str, allow: bool) -> Result<()> {
    let n = dbsize(url).await?;
    if n > 0 && !allow {
        bail!(
            "{} already holds {n} keys; export into an empty database, or pass --merge to overwrite the keys crs writes",
            redact(url)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("redis://:secret@host/1"), "redis://:***@host/1");
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}

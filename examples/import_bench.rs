//! `crs import` speed on a large v1 keyspace in a real redis-server.
//!
//!     cargo run --release --example import_bench
//!
//! Generates a v1.1.314-shaped keyspace: 100,000 API keys (`apikey:*` hashes and the hash
//! map), 20 console accounts with encrypted keys, 1,000,000 usage hashes (per key: all-time,
//! 2 days, 1 month, 2 hours, and key-model all-time, 2 days and 1 month), 300,000 cost
//! strings, and request records (10 each) for 10,000 keys; loads it into a redis-server
//! started on a free port (or `BENCH_REDIS_URL`, which must point at an empty database), then
//! times the import into a fresh data directory. `BENCH_KEYS` scales the key count.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crs::migrate::dump::{V1Key, V1Value};
use crs::migrate::v1crypto::V1Crypto;
use crs::migrate::{ImportOptions, Source};
use sha2::{Digest, Sha256};

const ENC_KEY: &str = "bench-encryption-key-0123456789ab";

fn pairs(v: &[(&str, String)]) -> Vec<(String, String)> {
    v.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn usage(i: u64, alltime_names: bool) -> Vec<(String, String)> {
    let f = |n: &str| {
        if alltime_names {
            format!("total{}{}", n[..1].to_ascii_uppercase(), &n[1..])
        } else {
            n.to_owned()
        }
    };
    vec![
        (f("requests"), (10 + i % 7).to_string()),
        (f("inputTokens"), (10_000 + i % 1000).to_string()),
        (f("outputTokens"), "1000".into()),
        (f("cacheCreateTokens"), "200".into()),
        (f("cacheReadTokens"), "5000".into()),
        (f("ephemeral5mTokens"), "200".into()),
        (f("ephemeral1hTokens"), "0".into()),
        (f("allTokens"), (16_200 + i % 1000).to_string()),
    ]
}

fn generate(n_keys: u64) -> Vec<V1Key> {
    let v1 = V1Crypto::new(ENC_KEY);
    let mut out = Vec::new();
    let accounts: Vec<String> = (0..20).map(|i| format!("acc-{i:04}")).collect();
    for a in &accounts {
        out.push(V1Key::new(
            format!("claude_console_account:{a}"),
            -1,
            V1Value::Hash(pairs(&[
                ("id", a.clone()),
                ("name", a.clone()),
                ("platform", "claude-console".into()),
                ("apiUrl", "https://api.anthropic.com".into()),
                (
                    "apiKey",
                    v1.encrypt("claude-console-salt", &format!("sk-ant-{a}")),
                ),
                ("priority", "50".into()),
                ("accountType", "shared".into()),
                ("isActive", "true".into()),
                ("schedulable", "true".into()),
                ("supportedModels", "{}".into()),
                ("proxy", String::new()),
            ])),
        ));
    }
    let models = ["claude-sonnet-4-5-20250929", "gpt-5"];
    let (d1, d2, month) = ("2026-11-21", "2026-11-22", "2026-11");
    let mut hash_map = Vec::new();
    for i in 0..n_keys {
        let id = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
        let hash = hex::encode(Sha256::digest(format!("cr_{i}{ENC_KEY}")));
        hash_map.push((hash.clone(), id.clone()));
        out.push(V1Key::new(
            format!("apikey:{id}"),
            365 * 86_400_000,
            V1Value::Hash(pairs(&[
                ("id", id.clone()),
                ("name", format!("key-{i}")),
                ("apiKey", hash),
                ("isActive", "true".into()),
                ("createdAt", "2026-11-01T00:00:00.000Z".into()),
                ("permissions", "[]".into()),
                ("tags", "[\"bench\"]".into()),
                ("dailyCostLimit", "5".into()),
                ("claudeConsoleAccountId", String::new()),
                ("enableOpenAIResponsesCodexAdaptation", "true".into()),
            ])),
        ));
        let model = models[(i % 2) as usize];
        let mut km = usage(i, false);
        km.push(("realCostMicro".into(), "12345".into()));
        km.push(("ratedCostMicro".into(), "12345".into()));
        let hashes = [
            (format!("usage:{id}"), usage(i, true), -1),
            (format!("usage:daily:{id}:{d1}"), usage(i, false), 32),
            (format!("usage:daily:{id}:{d2}"), usage(i, false), 32),
            (format!("usage:monthly:{id}:{month}"), usage(i, false), 365),
            (format!("usage:hourly:{id}:{d2}:10"), usage(i, false), 7),
            (format!("usage:hourly:{id}:{d2}:11"), usage(i, false), 7),
            (format!("usage:{id}:model:alltime:{model}"), km.clone(), -1),
            (
                format!("usage:{id}:model:daily:{model}:{d1}"),
                km.clone(),
                32,
            ),
            (
                format!("usage:{id}:model:daily:{model}:{d2}"),
                km.clone(),
                32,
            ),
            (format!("usage:{id}:model:monthly:{model}:{month}"), km, 365),
        ];
        for (name, fields, days) in hashes {
            let ttl = if days < 0 { -1 } else { days * 86_400_000 };
            out.push(V1Key::new(name, ttl, V1Value::Hash(fields)));
        }
        for (name, v) in [
            (format!("usage:cost:total:{id}"), "0.0246"),
            (format!("usage:cost:daily:{id}:{d2}"), "0.0123"),
            (format!("usage:cost:monthly:{id}:{month}"), "0.0246"),
        ] {
            out.push(V1Key::new(name, -1, V1Value::Str(v.into())));
        }
        if i % 10 == 0 {
            let recs = (0..10)
                .map(|r| {
                    format!(
                        r#"{{"timestamp":"2026-11-22T03:{:02}:00.000Z","model":"{model}","accountId":"{}","requestId":"r{r}","statusCode":200,"stream":false,"durationMs":120,"inputTokens":100,"outputTokens":20,"cacheCreateTokens":0,"cacheReadTokens":0,"cost":0.0006,"realCost":0.0006}}"#,
                        59 - r,
                        accounts[(i % 20) as usize]
                    )
                })
                .collect();
            out.push(V1Key::new(
                format!("usage:records:{id}"),
                90 * 86_400_000,
                V1Value::List(recs),
            ));
        }
    }
    out.push(V1Key::new("apikey:hash_map", -1, V1Value::Hash(hash_map)));
    out
}

fn main() -> anyhow::Result<()> {
    let n_keys: u64 = std::env::var("BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Runtime::new()?;
    let redis_dir = tempfile::tempdir()?;
    let (url, mut child) = match std::env::var("BENCH_REDIS_URL") {
        Ok(u) => (u, None),
        Err(_) => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(redis_dir.path())
                .stdout(Stdio::null())
                .spawn()
                .map_err(|e| anyhow::anyhow!("starting redis-server: {e}"))?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                anyhow::ensure!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(10));
            }
            (format!("redis://127.0.0.1:{port}/0"), Some(child))
        }
    };

    let t = Instant::now();
    let keys = generate(n_keys);
    let usage_hashes = keys
        .iter()
        .filter(|k| k.name.starts_with("usage:") && matches!(k.value, V1Value::Hash(_)))
        .count();
    println!(
        "generated {} keys ({} usage hashes, {} API keys) in {:.1} s",
        keys.len(),
        usage_hashes,
        n_keys,
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    rt.block_on(crs::migrate::redis_io::write_all(&url, &keys, true))?;
    println!(
        "loaded into redis-server in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    drop(keys);

    let dir = tempfile::tempdir()?;
    let opts = ImportOptions {
        data_dir: dir.path().join("data"),
        encryption_key: ENC_KEY.into(),
        dry_run: false,
        merge: false,
        progress: true,
    };
    let cpu = |pid: Option<u32>| -> f64 {
        let Some(pid) = pid else { return 0.0 };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let f: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    };
    let redis_pid = child.as_ref().map(|c| c.id());
    let redis_cpu = cpu(redis_pid);
    let t = Instant::now();
    let report = rt.block_on(crs::migrate::import(&Source::Redis(url.clone()), &opts))?;
    let secs = t.elapsed().as_secs_f64();
    let redis_cpu = cpu(redis_pid) - redis_cpu;
    let size = std::fs::metadata(dir.path().join("data/crs.redb"))?.len();
    print!("{}", report.render());
    println!(
        "\nimport: {} keys in {secs:.1} s ({:.0} keys/s); store {:.0} MiB",
        report.keys,
        report.keys as f64 / secs,
        size as f64 / (1 << 20) as f64
    );
    if redis_pid.is_some() {
        println!("redis-server CPU during the import: {redis_cpu:.1} s");
    }
    if let Some(c) = child.as_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(())
}

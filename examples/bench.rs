//! The relay benchmark: the same mock upstream measured directly and through crs, in one run.
//!
//!     scripts/bench.sh            # builds release binaries, runs everything (~2 minutes)
//!     scripts/bench.sh --quick    # shorter runs
//!
//! Processes: the mock upstream (`crs mock-upstream --no-record`) and crs (`crs serve`) run as
//! separate release binaries; this program is the load generator (HTTP/1.1 keep-alive
//! connections, one per concurrent client). All three share the machine's cores.
//!
//! Measured: added latency p50/p99 at concurrency 1; throughput, p99 and time to first byte
//! at 32, 128 and 512; short streams (5 events) at 32 and 128; SSE streaming throughput and
//! time to first byte; crs RSS idle, after load and with 1,000 and 10,000 concurrent slow
//! streams, the upstream over plain HTTP/1.1 and then over TLS with HTTP/2 (the mock's second
//! listener, with a certificate from a test CA crs is configured to trust); start-up to ready
//! with 10,000 keys.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

const UPSTREAM_KEY: &str = "sk-ant-api03-bench-upstream-key";

/// The test CA and the mock's certificate for its HTTPS listener.
#[path = "../tests/suite/common/tls.rs"]
mod tls;

struct Opts {
    quick: bool,
    crs_bin: PathBuf,
    mock_bin: PathBuf,
    json_out: Option<PathBuf>,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json_out = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from);
    let crs_bin = std::env::var("CRS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/crs"));
    // `MOCK_BIN`: the binary that runs the mock upstream (default: `CRS_BIN`), so an older crs
    // build can be measured against the same mock.
    let mock_bin = std::env::var("MOCK_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| crs_bin.clone());
    Opts {
        quick,
        crs_bin,
        mock_bin,
        json_out,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// How long the full run waits after its last stream before the settled memory reading:
/// twice crs's default upstream idle time, and a little.
const SETTLE_SECS: u64 = 65;

fn rss_kib(pid: u32) -> u64 {
    proc_kib(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// The anonymous part of the RSS (the heap, stacks): the rest is the binary's own pages,
/// which the kernel can drop and read back at any time.
fn anon_kib(pid: u32) -> u64 {
    proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Anonymous:")
}

/// User and system CPU time of `pid` in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses: utime and stime are the
            // 12th and 13th of them.
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn proc_kib(file: &str, field: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn wait_ready(addr: SocketAddr, path: &str) -> Duration {
    let t = Instant::now();
    loop {
        if let Ok(mut c) = Conn::open(addr).await
            && let Ok((200, _)) = c.get(path).await
        {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{addr} did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// crs's `crs_runtime_alive_tasks` gauge (one scrape of /metrics).
async fn alive_tasks(addr: SocketAddr) -> Option<i64> {
    let (_, b) = Conn::open(addr).await.ok()?.get("/metrics").await.ok()?;
    let text = String::from_utf8_lossy(&b);
    text.lines()
        .find_map(|l| l.strip_prefix("crs_runtime_alive_tasks "))
        .and_then(|v| v.trim().parse().ok())
}

async fn wait_listening(addr: SocketAddr) {
    let t = Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{addr} is not listening"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    tx: SendRequest<Full<Bytes>>,
    host: String,
}

impl Conn {
    async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await?;
        tokio::spawn(conn);
        Ok(Conn {
            tx,
            host: addr.to_string(),
        })
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<(u16, Bytes)> {
        let req = Request::get(path)
            .header("host", &self.host)
            .body(Full::new(Bytes::new()))?;
        let r = self.tx.send_request(req).await?;
        let status = r.status().as_u16();
        Ok((status, r.into_body().collect().await?.to_bytes()))
    }

    /// POST; returns (status, time to first body byte, total time, body bytes).
    async fn post(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<(u16, Duration, Duration, usize)> {
        let t = Instant::now();
        let mut b = Request::post(path)
            .header("host", &self.host)
            .header("content-type", "application/json");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let r = self.tx.send_request(b.body(Full::new(body))?).await?;
        let status = r.status().as_u16();
        let mut body = r.into_body();
        let mut first = None;
        let mut n = 0;
        while let Some(f) = body.frame().await {
            if let Ok(d) = f?.into_data() {
                if first.is_none() && !d.is_empty() {
                    first = Some(t.elapsed());
                }
                n += d.len();
            }
        }
        let total = t.elapsed();
        Ok((status, first.unwrap_or(total), total, n))
    }
}

/// Where a request goes: the mock directly, or crs.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    headers: Vec<(String, String)>,
}

struct Run {
    requests: u64,
    errors: u64,
    /// What the failures were: `status 502`, or the I/O error's text, with how many of each.
    error_kinds: std::collections::BTreeMap<String, u64>,
    elapsed: Duration,
    latencies: Vec<Duration>,
    ttfb: Vec<Duration>,
    bytes: u64,
}

impl Run {
    /// The failures by kind, as ` (status 502: 3; ...)`, or nothing without failures.
    fn error_kinds_text(&self) -> String {
        if self.error_kinds.is_empty() {
            return String::new();
        }
        let kinds: Vec<String> = self
            .error_kinds
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        format!(" ({})", kinds.join("; "))
    }

    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(v: &[Duration], p: f64) -> f64 {
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i].as_secs_f64() * 1000.0
    }
    fn p50(&self) -> f64 {
        Self::pct(&self.latencies, 0.5)
    }
    fn p99(&self) -> f64 {
        Self::pct(&self.latencies, 0.99)
    }
    fn ttfb_p50(&self) -> f64 {
        Self::pct(&self.ttfb, 0.5)
    }
}

/// `concurrency` clients send `body` until `count` requests are done (when Some) or
/// `duration` passes.
async fn load(
    t: &Target,
    concurrency: usize,
    body: Bytes,
    count: Option<u64>,
    duration: Duration,
) -> Run {
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let t = t.clone();
        let body = body.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(t.addr).await.expect("connect");
            let h: Vec<(&str, &str)> = t
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let (mut lat, mut ttfb, mut errors, mut bytes) = (Vec::new(), Vec::new(), 0u64, 0u64);
            let mut kinds = std::collections::BTreeMap::<String, u64>::new();
            loop {
                if let Some(n) = count {
                    if done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= n {
                        break;
                    }
                } else if Instant::now() >= deadline {
                    break;
                }
                match c.post("/v1/messages", &h, body.clone()).await {
                    Ok((200, first, total, n)) => {
                        lat.push(total);
                        ttfb.push(first);
                        bytes += n as u64;
                    }
                    Ok((status, ..)) => {
                        // An error answer, on a connection that stays open.
                        errors += 1;
                        *kinds.entry(format!("status {status}")).or_default() += 1;
                    }
                    Err(e) => {
                        errors += 1;
                        *kinds.entry(format!("{e:#}")).or_default() += 1;
                        if let Ok(nc) = Conn::open(t.addr).await {
                            c = nc;
                        }
                    }
                }
            }
            (lat, ttfb, errors, bytes, kinds)
        }));
    }
    let mut run = Run {
        requests: 0,
        errors: 0,
        error_kinds: Default::default(),
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        ttfb: Vec::new(),
        bytes: 0,
    };
    for task in tasks {
        let (l, f, e, b, k) = task.await.unwrap();
        for (kind, n) in k {
            *run.error_kinds.entry(kind).or_default() += n;
        }
        run.requests += l.len() as u64;
        run.latencies.extend(l);
        run.ttfb.extend(f);
        run.errors += e;
        run.bytes += b;
    }
    run.elapsed = start.elapsed();
    run.latencies.sort();
    run.ttfb.sort();
    run
}

/// `n` concurrent slow streams through crs (each about 10 s: 100 events 100 ms apart), crs's
/// RSS sampled once a second for the first `seconds` seconds.
async fn slow_streams(
    relay: &Target,
    pid: u32,
    n: usize,
    seconds: usize,
) -> anyhow::Result<(Vec<u64>, Run)> {
    let relay = relay.clone();
    let slow = body(true, "mock:chunks=100 mock:delay_ms=100");
    let streams = tokio::spawn(async move {
        load(&relay, n, slow, Some(n as u64), Duration::from_secs(300)).await
    });
    let mut rss = Vec::with_capacity(seconds);
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push(rss_kib(pid));
    }
    Ok((rss, streams.await?))
}

fn body(stream: bool, extra: &str) -> Bytes {
    Bytes::from(
        json!({
            "model": "claude-sonnet-4-5-20250929",
            "max_tokens": 256,
            "stream": stream,
            "messages": [{"role": "user", "content": format!("Write one sentence about relays. {extra}")}],
        })
        .to_string(),
    )
}

async fn admin(addr: SocketAddr, token: &str, path: &str, v: Value) -> Value {
    admin_with(hyper::Method::POST, addr, token, path, v).await
}

async fn admin_with(
    method: hyper::Method,
    addr: SocketAddr,
    token: &str,
    path: &str,
    v: Value,
) -> Value {
    let mut c = Conn::open(addr).await.unwrap();
    let auth = format!("Bearer {token}");
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .header("authorization", auth)
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap();
    let r = c.tx.send_request(req).await.unwrap();
    let b = r.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&b).unwrap()
}

/// crs on `dir`, trusting the CA of `ca` (the mock's HTTPS listener) when given.
fn spawn_crs(bin: &Path, dir: &Path, port: u16, ca: Option<&Path>) -> Proc {
    let mut cmd = Command::new(bin);
    if let Some(ca) = ca {
        cmd.env("CRS_UPSTREAM_CA_FILE", ca);
    }
    Proc(
        cmd.args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--port", &port.to_string()])
            .env("ADMIN_USERNAME", "bench")
            .env("ADMIN_PASSWORD", "bench-password")
            .env("LOG_LEVEL", "warn")
            // Room for the 10,000 concurrent streams (the default cap is 4,096 connections;
            // more wait in the listen backlog, which the kernel bounds too).
            .env("CRS_MAX_CONNECTIONS", "12000")
            // `--watch` reads the runtime's task count from /metrics.
            .env("CRS_METRICS_ALLOW", "127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn crs"),
    )
}

/// A data directory holding `n` keys, written straight into the store.
fn data_dir_with_keys(dir: &Path, n: usize) {
    let cfg = crs::config::Config::for_data_dir(dir);
    std::fs::create_dir_all(dir).unwrap();
    let (secrets, _) = crs::crypto::Secrets::load_or_create(&cfg.secrets_path(), None).unwrap();
    let store = crs::store::Store::open(&cfg.db_path()).unwrap();
    let keys: Vec<(String, crs::model::ApiKey)> = (0..n)
        .map(|i| {
            let mut k = crs::model::ApiKey::new(format!("bench-key-{i:05}"));
            k.name = format!("user {i}");
            k.key_hash = secrets.hash_api_key(&format!("cr_{i:064x}"));
            k.concurrency_limit = (i % 3) as u32;
            k.daily_cost_limit_micros = if i % 10 == 0 { 5_000_000 } else { 0 };
            (k.id.clone(), k)
        })
        .collect();
    let refs: Vec<(String, &crs::model::ApiKey)> =
        keys.iter().map(|(id, k)| (id.clone(), k)).collect();
    store.put_many(crs::store::Table::ApiKeys, &refs).unwrap();
}

/// Raise the open-file limit (soft and, where allowed, hard) to `want` for this process and
/// the processes it starts; returns the soft limit now in force.
fn raise_nofile(want: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return 0;
    }
    for max in [r.rlim_max.max(want), r.rlim_max] {
        let raised = libc::rlimit {
            rlim_cur: want.min(max),
            rlim_max: max,
        };
        // SAFETY: setrlimit reads the struct it is given; a refusal changes nothing.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    r.rlim_cur
}

fn row(name: &str, direct: String, crs: String, ratio: String) {
    println!("| {name:<44} | {direct:>14} | {crs:>14} | {ratio:>10} |");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    crs::init_tls();
    let o = opts();
    let nofile = raise_nofile(65_536);
    // `--make-keys DIR`: only write a data directory with 10,000 keys (for profiling start-up).
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--make-keys") {
        data_dir_with_keys(Path::new(&args[i + 1]), 10_000);
        return Ok(());
    }
    anyhow::ensure!(
        o.crs_bin.exists(),
        "{} not found: build it with `cargo build --release` (scripts/bench.sh does)",
        o.crs_bin.display()
    );
    let secs = if o.quick { 2 } else { 5 };
    let dur = Duration::from_secs(secs);
    let mut out = serde_json::Map::new();

    // The mock upstream, over plain HTTP/1.1 and, on a second port, over TLS with HTTP/2 as
    // Anthropic's API answers (with a certificate from a test CA crs is told to trust).
    let mock_port = free_port();
    let mock_addr: SocketAddr = format!("127.0.0.1:{mock_port}").parse()?;
    let mock_tls_port = free_port();
    let certs_dir = tempfile::tempdir()?;
    let certs = tls::test_certs();
    let (ca_file, cert_file, key_file) = (
        certs_dir.path().join("ca.pem"),
        certs_dir.path().join("cert.pem"),
        certs_dir.path().join("key.pem"),
    );
    std::fs::write(&ca_file, &certs.ca)?;
    std::fs::write(&cert_file, &certs.cert)?;
    std::fs::write(&key_file, &certs.key)?;
    let _mock = Proc(
        Command::new(&o.mock_bin)
            .args([
                "mock-upstream",
                "--no-record",
                "--listen",
                &mock_addr.to_string(),
                "--tls-listen",
                &format!("127.0.0.1:{mock_tls_port}"),
            ])
            .arg("--tls-cert")
            .arg(&cert_file)
            .arg("--tls-key")
            .arg(&key_file)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_listening(mock_addr).await;
    wait_listening(format!("127.0.0.1:{mock_tls_port}").parse()?).await;

    // crs on a fresh data directory, one console account, one key.
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let crs_proc = spawn_crs(&o.crs_bin, dir.path(), port, Some(&ca_file));
    let pid = crs_proc.0.id();
    wait_ready(addr, "/health").await;
    let login = admin(
        addr,
        "",
        "/web/auth/login",
        json!({"username": "bench", "password": "bench-password"}),
    )
    .await;
    let token = login["token"].as_str().unwrap().to_owned();
    let account = admin(
        addr,
        &token,
        "/admin/claude-console-accounts",
        json!({"name": "mock", "apiUrl": format!("http://{mock_addr}"), "apiKey": UPSTREAM_KEY}),
    )
    .await["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // From here on the account's upstream is the mock's HTTPS listener (HTTP/2).
    let account_path = format!("/admin/claude-console-accounts/{account}");
    let use_https_upstream = || {
        admin_with(
            hyper::Method::PUT,
            addr,
            &token,
            &account_path,
            json!({"apiUrl": format!("https://localhost:{mock_tls_port}")}),
        )
    };
    let key =
        admin(addr, &token, "/admin/api-keys", json!({"name": "bench"})).await["data"]["apiKey"]
            .as_str()
            .unwrap()
            .to_owned();
    let direct = Target {
        addr: mock_addr,
        headers: vec![
            ("x-api-key".into(), UPSTREAM_KEY.into()),
            ("anthropic-version".into(), "2023-06-01".into()),
        ],
    };
    let relay = Target {
        addr,
        headers: vec![
            ("x-api-key".into(), key.clone()),
            ("anthropic-version".into(), "2023-06-01".into()),
        ],
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_idle, anon_idle) = (rss_kib(pid), anon_kib(pid));

    // `--soak SECS [C] [WATCH] [--sse] [--direct | --bad-key | --via PROXY]`: only load crs at
    // concurrency C (32) for SECS, print crs's CPU time a request, the rate and latency, and
    // the RSS every second for WATCH s (20) after (for profiling). `--direct` loads the mock
    // alone; `--bad-key` sends a key crs refuses (the cost of ingress and a 401); `--via PROXY`
    // starts `PROXY LISTEN UPSTREAM` (`examples/floor_proxy.rs`) in front of the mock and loads
    // that instead of crs, its CPU time measured.
    let args: Vec<String> = std::env::args().collect();
    // `--hold SECS`: print where the mock and crs listen and the key, then keep both running
    // for SECS, for an outside load generator (`wrk`).
    if let Some(i) = args.iter().position(|a| a == "--hold") {
        let secs: u64 = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(60);
        println!("mock {mock_addr} upstream key {UPSTREAM_KEY}");
        println!("crs {addr} pid {pid} key {key}");
        tokio::time::sleep(Duration::from_secs(secs)).await;
        return Ok(());
    }
    if let Some(i) = args.iter().position(|a| a == "--soak") {
        let secs: u64 = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(20);
        let c: usize = args.get(i + 2).and_then(|s| s.parse().ok()).unwrap_or(32);
        let watch: u64 = args.get(i + 3).and_then(|s| s.parse().ok()).unwrap_or(20);
        // With `--sse`, 5-event streams instead of JSON answers.
        let b = if args.iter().any(|a| a == "--sse") {
            body(true, "mock:chunks=5")
        } else {
            body(false, "")
        };
        let via = match args.iter().position(|a| a == "--via") {
            Some(i) => {
                let port = free_port();
                let proxy_addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
                let proxy = args.get(i + 1).context("--via needs a program")?;
                let p = Proc(
                    Command::new(proxy)
                        .args([proxy_addr.to_string(), mock_addr.to_string()])
                        .spawn()?,
                );
                wait_listening(proxy_addr).await;
                Some((p, proxy_addr))
            }
            None => None,
        };
        let (target, measured) = if args.iter().any(|a| a == "--direct") {
            (direct.clone(), pid)
        } else if args.iter().any(|a| a == "--bad-key") {
            let refused = Target {
                addr,
                headers: direct.headers.clone(),
            };
            (refused, pid)
        } else if let Some((p, proxy_addr)) = &via {
            let through = Target {
                addr: *proxy_addr,
                headers: direct.headers.clone(),
            };
            (through, p.0.id())
        } else {
            (relay.clone(), pid)
        };
        println!("loading pid {measured} at c={c} for {secs} s, then crs's RSS for {watch} s");
        let cpu0 = cpu_ticks(measured);
        let r = load(&target, c, b, None, Duration::from_secs(secs)).await;
        // CPU time spent per request (user and system), steadier than rates on a shared
        // machine.
        let ticks = cpu_ticks(measured).saturating_sub(cpu0);
        println!(
            "CPU {:.1} us a request ({} requests)",
            ticks as f64 * 10_000.0 / (r.requests + r.errors).max(1) as f64,
            r.requests + r.errors
        );
        for _ in 0..watch {
            println!("RSS {:.1} MiB", mib(rss_kib(pid)));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        println!(
            "{:.0} req/s, p50 {:.3} ms, p99 {:.2} ms, {} errors{}",
            r.rps(),
            r.p50(),
            r.p99(),
            r.errors,
            r.error_kinds_text()
        );
        return Ok(());
    }

    // `--streams N`: only hold N concurrent slow streams through crs and print its RSS while
    // they run (for memory profiling).
    if let Some(i) = args.iter().position(|a| a == "--streams") {
        let n: usize = args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(1000);
        // `--h2`: with the upstream over TLS and HTTP/2.
        if args.iter().any(|a| a == "--h2") {
            let v = use_https_upstream().await;
            anyhow::ensure!(v["success"] == true, "switching the upstream: {v}");
        }
        println!(
            "crs pid {pid}: {n} slow streams (RSS idle {:.1} MiB)",
            mib(rss_idle)
        );
        let (rss, r) = slow_streams(&relay, pid, n, 10).await?;
        for kib in rss {
            println!("RSS {:.1} MiB", mib(kib));
        }
        println!(
            "{} completed, {} errors{}",
            r.requests,
            r.errors,
            r.error_kinds_text()
        );
        // `--watch W`: then RSS every second for W s (idle connections expiring).
        let watch: u64 = args
            .iter()
            .position(|a| a == "--watch")
            .and_then(|i| args.get(i + 1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        for s in 1..=watch {
            tokio::time::sleep(Duration::from_secs(1)).await;
            println!(
                "{s} s after: RSS {:.1} MiB, {} tasks",
                mib(rss_kib(pid)),
                alive_tasks(relay.addr).await.unwrap_or(-1)
            );
        }
        return Ok(());
    }

    println!("\n| measurement | direct | through crs | crs/direct |");
    println!("|---|---:|---:|---:|");

    // Latency at concurrency 1.
    let n = if o.quick { 1000 } else { 5000 };
    let b = body(false, "");
    load(&direct, 1, b.clone(), Some(300), dur).await;
    load(&relay, 1, b.clone(), Some(300), dur).await;
    let d1 = load(&direct, 1, b.clone(), Some(n), Duration::from_secs(600)).await;
    let r1 = load(&relay, 1, b.clone(), Some(n), Duration::from_secs(600)).await;
    row(
        "c=1 latency p50 (ms)",
        format!("{:.3}", d1.p50()),
        format!("{:.3}", r1.p50()),
        format!("+{:.3} ms", r1.p50() - d1.p50()),
    );
    row(
        "c=1 latency p99 (ms)",
        format!("{:.3}", d1.p99()),
        format!("{:.3}", r1.p99()),
        format!("+{:.3} ms", r1.p99() - d1.p99()),
    );
    out.insert(
        "c1".into(),
        json!({"direct_p50_ms": d1.p50(), "crs_p50_ms": r1.p50(), "added_p50_ms": r1.p50() - d1.p50(),
               "direct_p99_ms": d1.p99(), "crs_p99_ms": r1.p99(), "added_p99_ms": r1.p99() - d1.p99()}),
    );

    // Throughput, p99 and time to first byte at 32, 128 and 512 clients.
    for c in [32usize, 128, 512] {
        let d = load(&direct, c, b.clone(), None, dur).await;
        let r = load(&relay, c, b.clone(), None, dur).await;
        row(
            &format!("c={c} throughput (req/s)"),
            format!("{:.0}", d.rps()),
            format!("{:.0}", r.rps()),
            format!("{:.0}%", 100.0 * r.rps() / d.rps()),
        );
        row(
            &format!("c={c} latency p99 (ms)"),
            format!("{:.2}", d.p99()),
            format!("{:.2}", r.p99()),
            String::new(),
        );
        row(
            &format!("c={c} time to first byte p50 (ms)"),
            format!("{:.3}", d.ttfb_p50()),
            format!("{:.3}", r.ttfb_p50()),
            String::new(),
        );
        out.insert(
            format!("c{c}"),
            json!({"direct_rps": d.rps(), "crs_rps": r.rps(), "ratio": r.rps() / d.rps(),
                   "direct_p99_ms": d.p99(), "crs_p99_ms": r.p99(), "crs_errors": r.errors,
                   "direct_ttfb_p50_ms": d.ttfb_p50(), "crs_ttfb_p50_ms": r.ttfb_p50()}),
        );
    }
    // Short streams (5 events, Claude Code's usual shape is many of these at once) at 32 and
    // 128 clients: what a stream costs beside a JSON answer.
    let short = body(true, "mock:chunks=5");
    for c in [32usize, 128] {
        let d = load(&direct, c, short.clone(), None, dur).await;
        let r = load(&relay, c, short.clone(), None, dur).await;
        row(
            &format!("SSE (5 events) c={c} streams/s"),
            format!("{:.0}", d.rps()),
            format!("{:.0}", r.rps()),
            format!("{:.0}%", 100.0 * r.rps() / d.rps()),
        );
        row(
            &format!("SSE (5 events) c={c} time to first byte p50 (ms)"),
            format!("{:.3}", d.ttfb_p50()),
            format!("{:.3}", r.ttfb_p50()),
            String::new(),
        );
        out.insert(
            format!("sse5_c{c}"),
            json!({"direct_rps": d.rps(), "crs_rps": r.rps(), "ratio": r.rps() / d.rps(),
                   "crs_errors": r.errors, "direct_ttfb_p50_ms": d.ttfb_p50(), "crs_ttfb_p50_ms": r.ttfb_p50()}),
        );
    }
    // Settled: the load is over and the server has had a few seconds to give memory back.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (rss_after_load, anon_after_load) = (rss_kib(pid), anon_kib(pid));

    // Streaming: 200 events per response, at concurrency 32; time to first byte at 1.
    let sb = body(true, "mock:chunks=200");
    let d = load(&direct, 32, sb.clone(), None, dur).await;
    let r = load(&relay, 32, sb.clone(), None, dur).await;
    let mbps = |x: &Run| x.bytes as f64 / x.elapsed.as_secs_f64() / 1_048_576.0;
    row(
        "SSE c=32 throughput (MiB/s)",
        format!("{:.1}", mbps(&d)),
        format!("{:.1}", mbps(&r)),
        format!("{:.0}%", 100.0 * mbps(&r) / mbps(&d)),
    );
    row(
        "SSE c=32 streams/s",
        format!("{:.0}", d.rps()),
        format!("{:.0}", r.rps()),
        format!("{:.0}%", 100.0 * r.rps() / d.rps()),
    );
    let (d_mib, r_mib) = (mbps(&d), mbps(&r));
    let d = load(&direct, 1, sb.clone(), Some(300), Duration::from_secs(600)).await;
    let r = load(&relay, 1, sb.clone(), Some(300), Duration::from_secs(600)).await;
    row(
        "SSE time to first byte p50 (ms)",
        format!("{:.3}", d.ttfb_p50()),
        format!("{:.3}", r.ttfb_p50()),
        format!("+{:.3} ms", r.ttfb_p50() - d.ttfb_p50()),
    );
    out.insert(
        "sse".into(),
        json!({"direct_mib_s": d_mib, "crs_mib_s": r_mib, "direct_ttfb_p50_ms": d.ttfb_p50(), "crs_ttfb_p50_ms": r.ttfb_p50()}),
    );

    // Concurrent slow streams (each ~10 s: 100 events 100 ms apart): 1,000, then 10,000 (at
    // three file descriptors a stream between the three processes; `--quick` skips it).
    // RSS sampled once every stream is open and midway.
    let (rss, s) = slow_streams(&relay, pid, 1000, 5).await?;
    let rss_streams = rss[4];
    // 10,000 streams take about 10,000 descriptors in the load generator and in the mock, and
    // 20,000 in crs (a client and an upstream connection each): as many as the open-file limit
    // allows, up to 10,000.
    let many = 10_000.min((nofile.saturating_sub(1_000) / 2) as usize);
    let (rss_10k, s10k) = if o.quick || many < 2_000 {
        (0, None)
    } else {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rss, r) = slow_streams(&relay, pid, many, 8).await?;
        (rss[7], Some(r))
    };
    // Once the load is over and idle upstream connections have expired: the pool drops a
    // connection idle for `upstream_idle` (30 s) at its next check, and checks once per idle
    // time, so they are gone 30 to 60 s after the last use.
    let (rss_settled, anon_settled) = if o.quick {
        (0, 0)
    } else {
        tokio::time::sleep(Duration::from_secs(SETTLE_SECS)).await;
        (rss_kib(pid), anon_kib(pid))
    };
    // The same streams with the upstream over TLS and HTTP/2, as Anthropic's API answers:
    // many streams share each upstream connection (`providers::http::Lanes`), so only the
    // client connections count, one descriptor a stream in crs.
    let many_h2 = 10_000.min(nofile.saturating_sub(1_000) as usize);
    let h2 = if o.quick || many_h2 < 2_000 {
        None
    } else {
        let v = use_https_upstream().await;
        anyhow::ensure!(v["success"] == true, "switching the upstream: {v}");
        let (rss, r) = slow_streams(&relay, pid, many_h2, 8).await?;
        Some((rss[7], r))
    };
    println!();
    println!("| crs memory (RSS) | MiB | of which heap (anonymous) |");
    println!("|---|---:|---:|");
    println!(
        "| idle, after start-up | {:.1} | {:.1} |",
        mib(rss_idle),
        mib(anon_idle)
    );
    println!(
        "| after the load above (6 s later) | {:.1} | {:.1} |",
        mib(rss_after_load),
        mib(anon_after_load)
    );
    println!(
        "| during 1,000 concurrent slow streams | {:.1} | |",
        mib(rss_streams)
    );
    if s10k.is_some() {
        println!(
            "| during {many} concurrent slow streams | {:.1} | |",
            mib(rss_10k)
        );
    }
    if !o.quick {
        println!(
            "| after all of it, idle upstream connections expired ({SETTLE_SECS} s) | {:.1} | {:.1} |",
            mib(rss_settled),
            mib(anon_settled)
        );
    }
    if let Some((rss, _)) = &h2 {
        println!(
            "| during {many_h2} concurrent slow streams, upstream over TLS and HTTP/2 | {:.1} | |",
            mib(*rss)
        );
    }
    if let Some((_, r)) = &h2 {
        println!(
            "\n{many_h2} slow streams over HTTP/2: {} completed, {} errors{}, time to first byte p50 {:.2} ms",
            r.requests,
            r.errors,
            r.error_kinds_text(),
            r.ttfb_p50()
        );
    }
    if let Some(r) = &s10k {
        println!(
            "\n{many} slow streams: {} completed, {} errors{}, time to first byte p50 {:.2} ms",
            r.requests,
            r.errors,
            r.error_kinds_text(),
            r.ttfb_p50()
        );
    }
    println!(
        "\n1,000 slow streams: {} completed, {} errors{}",
        s.requests,
        s.errors,
        s.error_kinds_text()
    );
    out.insert(
        "rss_mib".into(),
        json!({"idle": mib(rss_idle), "after_load": mib(rss_after_load), "slow_streams_1000": mib(rss_streams),
               "slow_streams_completed": s.requests,
               "slow_streams_many": s10k.as_ref().map(|_| mib(rss_10k)),
               "slow_streams_many_count": s10k.as_ref().map(|_| many),
               "settled": (!o.quick).then(|| mib(rss_settled)),
               "anonymous": {"idle": mib(anon_idle), "after_load": mib(anon_after_load),
                             "settled": (!o.quick).then(|| mib(anon_settled))},
               "slow_streams_many_completed": s10k.as_ref().map(|r| r.requests),
               "slow_streams_many_errors": s10k.as_ref().map(|r| r.errors),
               "slow_streams_h2": h2.as_ref().map(|(rss, _)| mib(*rss)),
               "slow_streams_h2_count": h2.as_ref().map(|_| many_h2),
               "slow_streams_h2_completed": h2.as_ref().map(|(_, r)| r.requests),
               "slow_streams_h2_errors": h2.as_ref().map(|(_, r)| r.errors)}),
    );
    drop(crs_proc);

    // Start-up to ready with 10,000 keys.
    let dir2 = tempfile::tempdir()?;
    data_dir_with_keys(dir2.path(), 10_000);
    let mut readies = Vec::new();
    for _ in 0..5 {
        let port = free_port();
        let a: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let t = Instant::now();
        let p = spawn_crs(&o.crs_bin, dir2.path(), port, None);
        wait_ready(a, "/health").await;
        readies.push(t.elapsed());
        drop(p);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    readies.sort();
    let ready_ms = readies[readies.len() / 2].as_secs_f64() * 1000.0;
    println!("\nstart-up to ready with 10,000 keys (median of 5): {ready_ms:.1} ms");
    out.insert("ready_10k_keys_ms".into(), json!(ready_ms));

    if let Some(p) = o.json_out {
        std::fs::write(&p, serde_json::to_string_pretty(&Value::Object(out))?)?;
        println!("results written to {}", p.display());
    }
    Ok(())
}

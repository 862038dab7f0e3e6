//! Crash safety of the usage ledger, on the real binary under load.
//!
//! crs runs as a child process against the in-process mock upstream (which counts what it
//! answered); a few clients drive non-stream and streamed Messages requests, each with its own
//! key; crs is then killed (SIGKILL) or stopped (SIGTERM) mid-load, restarted on the same data
//! directory, and each key's recorded usage is compared with what the mock served for that
//! client and with what the client saw succeed.
//!
//! - SIGKILL: nothing is recorded that was not served, what was committed survives, and the
//!   loss is bounded by the requests in flight plus what the ledger's uncommitted window (one
//!   flush interval, plus the commits around it) held at the observed request rate.
//! - SIGTERM: the drain loses nothing: every request the mock answered is recorded, and every
//!   success a client saw is among them.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::common::{UPSTREAM_KEY, client};
use crs::mock::MockUpstream;

const BIN: &str = env!("CARGO_BIN_EXE_crs");
const ADMIN_USER: &str = "ops";
const ADMIN_PASS: &str = "crash-test-password-1";
/// The ledger's flush interval, written to the data directory's `config.toml` (the default).
const FLUSH_MS: u64 = 100;
/// Time one ledger commit (a redb transaction) is allowed to take, scheduling included, on a
/// machine shared with other work (a debug build commits in 10-70 ms, with the fsync to a
/// disk). A batch is committed one flush interval after its first event, and events that
/// arrive during a commit wait for the next batch, so a crash at the end of a commit loses
/// what arrived since the previous commit drained the queue: one flush interval plus up to
/// two commit durations.
const COMMIT_ALLOWANCE_MS: u64 = 100;
/// A stream is recorded when the relay's pump ends, a moment after the client has read the
/// last event: client completion times can precede the recording by this much.
const RECORD_LAG_MS: u64 = 20;
/// Concurrent clients: the even ones send non-stream requests (short, paced), the odd ones
/// streams slowed down by the mock (so some are always in flight when the signal lands).
const CLIENTS: usize = 4;
/// Pause of the non-stream clients between requests. Paced clients leave the cores some
/// room: a load that saturates them starves the ledger's thread, and the window a crash can
/// lose then grows with the machine's load, not with the flush interval.
const PAUSE: Duration = Duration::from_millis(10);
/// How long the load runs before the signal.
const LOAD: Duration = Duration::from_millis(2000);
/// Upper bound on requests per client.
const MAX_PER_CLIENT: u64 = 5_000;
/// Upper bound on a client's wall time.
const CLIENT_DEADLINE: Duration = Duration::from_secs(12);
/// Delay between SSE events of a streamed answer (10 events: ~135 ms a stream).
const STREAM_DELAY_MS: u64 = 15;

/// A `crs serve` child process. Dropping it kills the process (SIGKILL) if it still runs, so
/// a failed assertion leaves nothing behind.
struct Crs {
    child: Child,
    url: String,
    /// The last lines crs wrote to stderr, for failure messages.
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Crs {
    /// Start crs on `dir` with an ephemeral port; returns once it logs that it is listening.
    fn start(dir: &Path) -> Crs {
        let mut child = Command::new(BIN)
            .args(["serve", "--data-dir"])
            .arg(dir)
            .args(["--port", "0", "--host", "127.0.0.1"])
            .env_remove("ENCRYPTION_KEY")
            .env_remove("CRS_CONFIG")
            // The start is recognised by an info line, which RUST_LOG could filter out.
            .env_remove("RUST_LOG")
            .env("ADMIN_USERNAME", ADMIN_USER)
            .env("ADMIN_PASSWORD", ADMIN_PASS)
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn crs");
        let stderr = child.stderr.take().unwrap();
        let tail: Arc<Mutex<VecDeque<String>>> = Default::default();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = tail.clone();
        // Reads stderr to the end (so crs never blocks on a full pipe), keeping the tail.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("crs is listening")
                    && let Some(i) = line.find("url=http://")
                {
                    let _ = tx.send(line[i + 4..].split_whitespace().next().unwrap().to_owned());
                }
                let mut t = t.lock();
                if t.len() == 40 {
                    t.pop_front();
                }
                t.push_back(line);
            }
        });
        let mut crs = Crs {
            child,
            url: String::new(),
            tail,
        };
        match rx.recv_timeout(Duration::from_secs(15)) {
            Ok(url) => crs.url = url,
            Err(_) => panic!("crs did not start listening:\n{}", crs.log_tail()),
        }
        crs
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child this guard owns and has not reaped yet.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Wait for the process to exit, at most `limit`.
    async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "crs did not exit within {limit:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn log_tail(&self) -> String {
        let t = self.tail.lock();
        t.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Crs {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A fresh data directory with the test's flush interval, the mock, crs, a Console account on
/// the mock and one key per client (created through the admin API).
struct Setup {
    // Field order is drop order: crs is killed before its data directory is removed.
    crs: Crs,
    mock: MockUpstream,
    keys: Vec<String>,
    dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    // On tmpfs where there is one: a commit's fsync then costs nothing, so the window a crash
    // can lose depends on the ledger, not on what other processes are writing to the disk.
    // (A killed process loses nothing it has written; fsync matters only to power loss.)
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    std::fs::write(
        dir.path().join("config.toml"),
        format!("ledger_flush_ms = {FLUSH_MS}\n"),
    )
    .unwrap();
    let mock = MockUpstream::start().await.unwrap();
    mock.state.accepted_keys.lock().push(UPSTREAM_KEY.into());
    let crs = tokio::task::block_in_place(|| Crs::start(dir.path()));
    let http = client();
    let v: Value = http
        .post(format!("{}/web/auth/login", crs.url))
        .json(&json!({"username": ADMIN_USER, "password": ADMIN_PASS}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = v["token"].as_str().expect("admin login").to_owned();
    let r = http
        .post(format!("{}/admin/claude-console-accounts", crs.url))
        .bearer_auth(&token)
        .json(&json!({"name": "console", "apiUrl": mock.url(), "apiKey": UPSTREAM_KEY}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let mut keys = Vec::new();
    for i in 0..CLIENTS {
        let v: Value = http
            .post(format!("{}/admin/api-keys", crs.url))
            .bearer_auth(&token)
            .json(&json!({"name": format!("client-{i}")}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        keys.push(
            v["data"]["apiKey"]
                .as_str()
                .expect("key created")
                .to_owned(),
        );
    }
    Setup {
        crs,
        mock,
        keys,
        dir,
    }
}

/// Input and output tokens the mock is told to answer request `n` of client `c` with.
fn tokens_for(c: usize, n: u64) -> (u64, u64) {
    (1 + (n * 7 + c as u64) % 50, 1 + n % 9)
}

/// Whether client `c` sends streams (the odd ones do).
fn streams(c: usize) -> bool {
    c % 2 == 1
}

fn request_body(c: usize, n: u64) -> Value {
    let stream = streams(c);
    let (input, output) = tokens_for(c, n);
    let delay = if stream {
        format!(" mock:delay_ms={STREAM_DELAY_MS}")
    } else {
        String::new()
    };
    json!({
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content":
            format!("crash-client-{c} req-{n} mock:usage={input},{output},0,0{delay}")}],
    })
}

/// What one client saw.
#[derive(Debug, Default)]
struct Seen {
    ok: u64,
    failed: u64,
    /// Failures before the signal was sent (there should be none).
    failed_before_signal: u64,
    /// Successes of requests sent before the signal and finished after it.
    ok_across_signal: u64,
    /// When each success finished.
    ok_at: Vec<Instant>,
}

/// One request: true when the client got a complete, successful answer.
async fn one(http: &reqwest::Client, url: &str, key: &str, body: &Value) -> bool {
    let stream = body["stream"] == true;
    let Ok(r) = http
        .post(format!("{url}/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
    else {
        return false;
    };
    if r.status() != 200 {
        return false;
    }
    let Ok(bytes) = r.bytes().await else {
        return false;
    };
    let text = String::from_utf8_lossy(&bytes);
    if stream {
        text.contains("event: message_stop") && !text.contains("event: error")
    } else {
        serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| v["usage"]["output_tokens"].is_u64())
    }
}

/// Client `c`: requests back to back until one fails after the signal (or the caps).
async fn drive(url: String, key: String, c: usize, signalled: Arc<AtomicBool>) -> Seen {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut seen = Seen::default();
    let deadline = Instant::now() + CLIENT_DEADLINE;
    for n in 0..MAX_PER_CLIENT {
        if Instant::now() >= deadline {
            break;
        }
        let sent_after_signal = signalled.load(Ordering::SeqCst);
        let ok = one(&http, &url, &key, &request_body(c, n)).await;
        let after_signal = signalled.load(Ordering::SeqCst);
        if ok {
            seen.ok += 1;
            seen.ok_at.push(Instant::now());
            if after_signal && !sent_after_signal {
                seen.ok_across_signal += 1;
            }
            if !streams(c) {
                tokio::time::sleep(PAUSE).await;
            }
        } else {
            seen.failed += 1;
            if !after_signal {
                seen.failed_before_signal += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            } else {
                break;
            }
        }
    }
    seen
}

/// Requests and tokens, served or recorded.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    requests: u64,
    input: u64,
    output: u64,
}

/// What the mock answered for each client, from the bodies it received.
fn served_per_client(mock: &MockUpstream) -> Vec<Tally> {
    let mut out = vec![Tally::default(); CLIENTS];
    for s in mock.state.seen.lock().iter() {
        if s.path != "/v1/messages" {
            continue;
        }
        let text = String::from_utf8_lossy(&s.body);
        // A body cut short by a killed sender does not parse, and the mock answers it 400.
        let Some(c) = (0..CLIENTS).find(|c| text.contains(&format!("crash-client-{c} "))) else {
            continue;
        };
        let i = text.find("mock:usage=").expect("usage directive") + "mock:usage=".len();
        let n: Vec<u64> = text[i..]
            .split(|ch: char| !ch.is_ascii_digit() && ch != ',')
            .next()
            .unwrap()
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect();
        out[c].requests += 1;
        out[c].input += n[0];
        out[c].output += n[1];
    }
    // Every whole request the mock saw was answered successfully (nothing makes it fail).
    let total = out.iter().map(|t| t.requests).sum::<u64>() as usize;
    assert_eq!(
        total,
        mock.state.served_count(),
        "seen vs served by the mock"
    );
    let tokens = mock.state.served_total();
    assert_eq!(
        (
            out.iter().map(|t| t.input).sum::<u64>(),
            out.iter().map(|t| t.output).sum::<u64>()
        ),
        (tokens.input_tokens, tokens.output_tokens)
    );
    out
}

/// Each key's all-time usage as crs reports it (`/api/v1/usage`), and its error count.
async fn recorded_per_key(url: &str, keys: &[String]) -> Vec<(Tally, u64)> {
    let http = client();
    let mut out = Vec::new();
    for key in keys {
        let r = http
            .get(format!("{url}/api/v1/usage"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let t = &v["usage"]["total"];
        out.push((
            Tally {
                requests: t["requests"].as_u64().unwrap(),
                input: t["inputTokens"].as_u64().unwrap(),
                output: t["outputTokens"].as_u64().unwrap(),
            },
            t["errors"].as_u64().unwrap_or(0),
        ));
    }
    out
}

/// Run the load, send `sig` to crs after `LOAD`, and collect what each client saw. Returns
/// (per-client results, when the signal was sent, when the load started).
async fn load_then_signal(s: &Setup, sig: libc::c_int) -> (Vec<Seen>, Instant, Instant) {
    let signalled = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(drive(
                s.crs.url.clone(),
                s.keys[c].clone(),
                c,
                signalled.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(LOAD).await;
    // The flag goes up first: a client failure seen without it happened before the signal.
    signalled.store(true, Ordering::SeqCst);
    let at = Instant::now();
    s.crs.signal(sig);
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    (seen, at, started)
}

fn sum(v: impl Iterator<Item = Tally>) -> Tally {
    v.fold(Tally::default(), |a, b| Tally {
        requests: a.requests + b.requests,
        input: a.input + b.input,
        output: a.output + b.output,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_at_most_the_uncommitted_window() {
    let mut s = setup().await;
    let (seen, killed_at, started) = load_then_signal(&s, libc::SIGKILL).await;
    let status = s.crs.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    // The same data directory, a new process.
    s.crs = tokio::task::block_in_place(|| Crs::start(s.dir.path()));
    let recorded = recorded_per_key(&s.crs.url, &s.keys).await;
    let served = served_per_client(&s.mock);

    // What the window a crash can lose held at the observed request rate: the successes the
    // clients saw in the last `window` before the kill (the ledger takes events from the relay
    // before the client has the answer). Plus the requests in flight, one per client, which the
    // mock may have answered but crs never finished.
    let window = Duration::from_millis(FLUSH_MS + 2 * COMMIT_ALLOWANCE_MS + RECORD_LAG_MS);
    let in_window = seen
        .iter()
        .flat_map(|c| &c.ok_at)
        .filter(|t| killed_at.saturating_duration_since(**t) <= window)
        .count() as u64;
    let bound = CLIENTS as u64 + in_window;

    let client_ok: u64 = seen.iter().map(|c| c.ok).sum();
    let load_secs = killed_at.duration_since(started).as_secs_f64();
    let served_all = sum(served.iter().copied());
    let recorded_all = sum(recorded.iter().map(|r| r.0));
    let lost = served_all.requests.saturating_sub(recorded_all.requests);
    // How far back the loss reaches, counting all but one request per client as finished ones.
    let mut finished: Vec<Duration> = seen
        .iter()
        .flat_map(|c| &c.ok_at)
        .map(|t| killed_at.saturating_duration_since(*t))
        .collect();
    finished.sort();
    let reach = lost
        .checked_sub(CLIENTS as u64 + 1)
        .and_then(|i| finished.get(i as usize))
        .map_or(0, |d| d.as_millis());
    eprintln!(
        "SIGKILL after {load_secs:.2}s at {:.0} req/s: clients saw {client_ok} ok, {} failed; \
         mock served {}; recorded after restart {}; lost {lost}, the last ~{reach} ms (bound \
         {bound} = {CLIENTS} in flight + {in_window} done in the last {} ms)",
        client_ok as f64 / load_secs,
        seen.iter().map(|c| c.failed).sum::<u64>(),
        served_all.requests,
        recorded_all.requests,
        window.as_millis(),
    );

    for (c, cs) in seen.iter().enumerate() {
        assert_eq!(
            cs.failed_before_signal, 0,
            "client {c} saw failures before the kill"
        );
        let (rec, errors) = recorded[c];
        assert!(
            rec.requests <= served[c].requests
                && rec.input <= served[c].input
                && rec.output <= served[c].output,
            "client {c}: recorded {rec:?} is more than the mock served {:?}",
            served[c]
        );
        assert!(
            cs.ok <= served[c].requests,
            "client {c}: {} successes but the mock served {:?}",
            cs.ok,
            served[c]
        );
        assert_eq!(errors, 0, "client {c}: no request failed upstream");
    }
    assert!(
        client_ok - in_window >= 20,
        "too few requests finished before the window to show that they survive: {client_ok} \
         in all, {in_window} in the window"
    );
    assert!(
        lost <= bound,
        "a crash lost {lost} of {} served requests ({} recorded); allowed: the {CLIENTS} in \
         flight + the {in_window} the clients saw finish in the last {} ms before the kill \
         ({FLUSH_MS} ms flush interval + 2 x {COMMIT_ALLOWANCE_MS} ms per commit + \
         {RECORD_LAG_MS} ms) = {bound}",
        served_all.requests,
        recorded_all.requests,
        window.as_millis(),
    );
    assert!(
        client_ok.saturating_sub(recorded_all.requests) <= bound,
        "{client_ok} client-visible successes, only {} recorded (bound {bound})",
        recorded_all.requests
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_records_every_served_request() {
    let mut s = setup().await;
    let (seen, _, _) = load_then_signal(&s, libc::SIGTERM).await;
    let status = s.crs.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "crs exits 0 after SIGTERM:\n{}",
        s.crs.log_tail()
    );
    let served = served_per_client(&s.mock);

    s.crs = tokio::task::block_in_place(|| Crs::start(s.dir.path()));
    let recorded = recorded_per_key(&s.crs.url, &s.keys).await;

    let client_ok: u64 = seen.iter().map(|c| c.ok).sum();
    let across: u64 = seen.iter().map(|c| c.ok_across_signal).sum();
    let served_all = sum(served.iter().copied());
    let recorded_all = sum(recorded.iter().map(|r| r.0));
    eprintln!(
        "SIGTERM: clients saw {client_ok} ok ({across} finished during the drain), {} failed; \
         mock served {}; recorded after restart {}",
        seen.iter().map(|c| c.failed).sum::<u64>(),
        served_all.requests,
        recorded_all.requests,
    );
    for (c, cs) in seen.iter().enumerate() {
        assert_eq!(
            cs.failed_before_signal, 0,
            "client {c} saw failures before SIGTERM"
        );
        let (rec, errors) = recorded[c];
        assert_eq!(
            rec, served[c],
            "client {c}: recorded usage differs from what the mock served"
        );
        assert!(
            cs.ok <= rec.requests,
            "client {c}: {} successes but only {} recorded",
            cs.ok,
            rec.requests
        );
        assert_eq!(errors, 0, "client {c}: no request failed upstream");
    }
    assert!(served_all.requests >= 20, "too little load: {served_all:?}");
    assert!(
        across >= 1,
        "no request was in flight when SIGTERM arrived, so the drain was not exercised"
    );
}

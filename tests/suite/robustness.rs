//! What a stranger cannot do to crs with connections alone: stall it with slow bodies or slow
//! headers, exhaust its file descriptors, flood its log, or leave new clients hanging during a
//! graceful stop. Also the modes of the data directory's files.
//!
//! Slow clients run against crs in-process with shortened deadlines; the connection cap, the
//! open-file limit, SIGTERM and the file modes against the real binary (its log is checked).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_crs");

/// Open a connection and send a request's headers plus the first 5 bytes of a declared
/// 1,000-byte JSON body.
async fn slow_body(addr: SocketAddr, path: &str, extra_headers: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 1000\r\n{extra_headers}\r\n{{\"use"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

/// Read until the peer closes the connection (EOF or reset), at most `limit`. Returns what was
/// read and whether the connection was closed.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// `/health` on a new connection, answered within `limit`.
async fn health_answers(addr: SocketAddr, limit: Duration) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: crs\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        Some(out.starts_with(b"HTTP/1.1 200"))
    };
    matches!(tokio::time::timeout(limit, attempt).await, Ok(Some(true)))
}

fn crs_addr(env: &Env) -> SocketAddr {
    env.crs.as_ref().unwrap().addr
}

#[tokio::test]
async fn slow_bodies_get_408_and_are_closed_while_health_answers() {
    let deadline = Duration::from_secs(1);
    let env = Env::start_with(|c| c.body_timeout = deadline).await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    let addr = crs_addr(&env);

    let started = Instant::now();
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..300 {
        let key = key.clone();
        opening.spawn(async move {
            if i % 2 == 0 {
                ("login", slow_body(addr, "/web/auth/login", "").await)
            } else {
                let auth = format!("x-api-key: {key}\r\nanthropic-version: 2023-06-01\r\n");
                ("messages", slow_body(addr, "/v1/messages", &auth).await)
            }
        });
    }
    let conns = opening.join_all().await;

    // Everyone else is served meanwhile.
    for _ in 0..5 {
        assert!(health_answers(addr, Duration::from_secs(2)).await);
    }

    let mut reading = tokio::task::JoinSet::new();
    for (route, mut s) in conns {
        reading.spawn(async move {
            let (text, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
            (route, text, closed)
        });
    }
    for (route, text, closed) in reading.join_all().await {
        assert!(closed, "{route}: connection still open: {text}");
        assert!(text.starts_with("HTTP/1.1 408"), "{route}: {text}");
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{route}: {text}"
        );
        match route {
            "login" => assert!(text.contains("\"Request timeout\""), "{text}"),
            _ => assert!(text.contains("timeout_error"), "{text}"),
        }
    }
    assert!(started.elapsed() >= deadline, "not before the deadline");
    assert!(health_answers(addr, Duration::from_secs(2)).await);
    env.stop().await;
}

#[tokio::test]
async fn slow_and_silent_headers_are_cut_off() {
    let env = Env::start_with(|c| c.header_timeout = Duration::from_secs(1)).await;
    let addr = crs_addr(&env);
    // A request head that trickles in a line at a time, and a connection that sends nothing.
    let mut trickle = TcpStream::connect(addr).await.unwrap();
    trickle
        .write_all(b"GET /health HTTP/1.1\r\nHost: crs\r\n")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let feeding = tokio::spawn(async move {
        for i in 0..25 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let line = format!("x-slow-{i}: {i}\r\n");
            if trickle.write_all(line.as_bytes()).await.is_err() {
                return true;
            }
        }
        // Still accepted after 5 s: not cut off.
        let (_, closed) = read_until_closed(&mut trickle, Duration::from_millis(10)).await;
        closed
    });
    let (_, closed) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(closed, "a silent connection is closed");
    assert!(
        feeding.await.unwrap(),
        "a trickling request head is cut off"
    );
    assert!(health_answers(addr, Duration::from_secs(2)).await);
    env.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The real binary

struct Crs {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

/// Start `crs serve` on an ephemeral port, optionally under an open-file limit (soft and hard),
/// and wait for its "listening" line. Every stderr line is kept.
fn spawn_crs(dir: &Path, envs: &[(&str, &str)], nofile: Option<u64>) -> Crs {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--port", "0", "--host", "127.0.0.1"])
        .env_remove("ENCRYPTION_KEY")
        .env_remove("RUST_LOG")
        .env_remove("CRS_CONFIG")
        .env("ADMIN_USERNAME", "ops")
        .env("ADMIN_PASSWORD", "ops-password-1")
        .env("LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    if let Some(n) = nofile {
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::rlimit {
                    rlim_cur: n as libc::rlim_t,
                    rlim_max: n as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &r) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let addr = line
                .contains("crs is listening")
                .then(|| line.find("url=http://"))
                .flatten()
                .map(|i| line[i + 11..].split_whitespace().next().unwrap().to_owned());
            sink.lock().unwrap().push(line);
            if let Some(addr) = addr {
                let _ = tx.send(addr);
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(a) => a.parse().unwrap(),
        Err(_) => {
            let _ = child.kill();
            panic!("crs did not start: {:?}", log.lock().unwrap());
        }
    };
    Crs { child, addr, log }
}

impl Crs {
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Lines logged after the "listening" line.
    fn lines_after_start(&self) -> Vec<String> {
        let lines = self.lines();
        let start = lines
            .iter()
            .position(|l| l.contains("crs is listening"))
            .unwrap();
        lines[start + 1..].to_vec()
    }

    fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    async fn wait_for_line(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.count(needle) > 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn sigterm(&mut self) -> std::process::ExitStatus {
        // SAFETY: a signal to the child this test started.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) },
            0
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "crs did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Crs {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_others_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_crs(dir.path(), &[("CRS_MAX_CONNECTIONS", "4")], None);
    assert!(p.lines().iter().any(|l| l.contains("max_connections=4")));
    let mut holders = Vec::new();
    for _ in 0..4 {
        holders.push(TcpStream::connect(p.addr).await.unwrap());
    }
    // The fifth connects (the kernel's backlog) but is not served while four are open.
    let mut waiting = TcpStream::connect(p.addr).await.unwrap();
    waiting
        .write_all(b"GET /health HTTP/1.1\r\nHost: crs\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (text, closed) = read_until_closed(&mut waiting, Duration::from_millis(700)).await;
    assert!(text.is_empty() && !closed, "served past the cap: {text}");
    // One closes: the waiting one is served.
    drop(holders.pop());
    let (text, closed) = read_until_closed(&mut waiting, Duration::from_secs(5)).await;
    assert!(closed && text.starts_with("HTTP/1.1 200"), "{text}");
    // Many times the cap: they all connect (the backlog holds them; a full one would leave
    // their SYNs unanswered for a second or more), and crs says so in one line.
    let mut more = Vec::new();
    let connecting = async {
        for _ in 0..300 {
            more.push(TcpStream::connect(p.addr).await.unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .expect("connections past the cap wait in the backlog");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(more);
    drop(holders);
    let mut ok = false;
    for _ in 0..50 {
        if health_answers(p.addr, Duration::from_secs(1)).await {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "/health answers once the connections are gone");
    assert!(p.running());
    assert_eq!(p.count("connection limit reached"), 1, "{:?}", p.lines());
    let after = p.lines_after_start();
    assert!(after.len() <= 5, "{after:?}");
    assert!(p.sigterm().success());
}

#[tokio::test]
async fn out_of_file_descriptors_crs_pauses_accepting_and_logs_once() {
    let dir = tempfile::tempdir().unwrap();
    // A cap the open-file limit cannot back: accepting runs out of descriptors.
    let mut p = spawn_crs(dir.path(), &[("CRS_MAX_CONNECTIONS", "1000")], Some(64));
    let mut conns = Vec::new();
    for _ in 0..150 {
        conns.push(TcpStream::connect(p.addr).await.unwrap());
    }
    assert!(
        p.wait_for_line("accepting connections fails", Duration::from_secs(5))
            .await,
        "{:?}",
        p.lines()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(p.running());
    drop(conns);
    // Once they are gone, crs serves again and says so once.
    let mut ok = false;
    for _ in 0..50 {
        if health_answers(p.addr, Duration::from_secs(1)).await {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "/health answers again: {:?}", p.lines());
    assert!(
        p.wait_for_line("accepting connections again", Duration::from_secs(2))
            .await
    );
    assert_eq!(p.count("accepting connections fails"), 1, "{:?}", p.lines());
    assert!(p.count("Too many open files") <= 1, "{:?}", p.lines());
    let after = p.lines_after_start();
    assert!(after.len() <= 6, "{after:?}");
    assert!(p.sigterm().success());
}

#[tokio::test]
async fn under_a_low_open_file_limit_the_default_cap_keeps_within_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = spawn_crs(dir.path(), &[], Some(64));
    assert!(
        p.lines().iter().any(|l| l.contains("max_connections=24")),
        "{:?}",
        p.lines()
    );
    let mut conns = Vec::new();
    for _ in 0..100 {
        conns.push(TcpStream::connect(p.addr).await.unwrap());
    }
    assert!(
        p.wait_for_line("connection limit reached", Duration::from_secs(5))
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(conns);
    let mut ok = false;
    for _ in 0..50 {
        if health_answers(p.addr, Duration::from_secs(1)).await {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok);
    assert_eq!(p.count("accepting connections fails"), 0, "{:?}", p.lines());
    assert!(p.sigterm().success());
}

#[tokio::test]
async fn sigterm_refuses_new_connections_while_a_stream_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let mock = crs::mock::MockUpstream::start().await.unwrap();
    let mut p = spawn_crs(dir.path(), &[], None);
    let http = client();
    let v: Value = http
        .post(format!("{}/web/auth/login", p.url()))
        .json(&json!({"username": "ops", "password": "ops-password-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = v["token"].as_str().unwrap().to_owned();
    let r = http
        .post(format!("{}/admin/claude-console-accounts", p.url()))
        .bearer_auth(&token)
        .json(&json!({"name": "a", "apiUrl": mock.url(), "apiKey": "sk-ant-x-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = http
        .post(format!("{}/admin/api-keys", p.url()))
        .bearer_auth(&token)
        .json(&json!({"name": "k"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = v["data"]["apiKey"].as_str().unwrap().to_owned();

    // A stream of 10 events 150 ms apart.
    let mut stream = client()
        .post(format!("{}/v1/messages", p.url()))
        .header("x-api-key", &key)
        .json(&msg_body(
            "claude-sonnet-4-5-20250929",
            true,
            "mock:delay_ms=150 mock:chunks=4",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(!String::from_utf8_lossy(&first).contains("message_stop"));
    // The rest of the stream is read meanwhile; when it ended is compared with the refusal.
    let reading = tokio::spawn(async move {
        let mut body = first.to_vec();
        while let Some(c) = stream.chunk().await.unwrap() {
            body.extend_from_slice(&c);
        }
        (String::from_utf8_lossy(&body).into_owned(), Instant::now())
    });

    let pid = p.child.id() as libc::pid_t;
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let refused_at = loop {
        match std::net::TcpStream::connect_timeout(&p.addr, Duration::from_millis(500)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break Instant::now(),
            other => {
                assert!(
                    Instant::now() < deadline,
                    "new connections are still taken during the drain: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let (text, ended_at) = reading.await.unwrap();
    assert!(text.contains("event: message_stop"), "{text}");
    assert!(
        refused_at < ended_at,
        "refused only once the stream had ended (the process was gone)"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "crs did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success());
    mock.stop();
}

#[tokio::test]
async fn the_data_directory_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let set = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    let root = tempfile::tempdir().unwrap();

    // A new directory.
    let fresh = root.path().join("nested").join("data");
    let mut p = spawn_crs(&fresh, &[], None);
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&fresh.join("crs.redb")), 0o600);
    assert_eq!(mode(&fresh.join("secrets.json")), 0o600);
    assert_eq!(p.count("restricted the data directory"), 0);
    assert!(p.sigterm().success());

    // Loosened afterwards (a copy, a restore from backup): tightened on the next start.
    set(&fresh, 0o755).unwrap();
    set(&fresh.join("crs.redb"), 0o644).unwrap();
    let mut p = spawn_crs(&fresh, &[], None);
    assert_eq!(mode(&fresh), 0o700);
    assert_eq!(mode(&fresh.join("crs.redb")), 0o600);
    assert_eq!(
        p.count("restricted the data directory"),
        1,
        "{:?}",
        p.lines()
    );
    assert!(p.sigterm().success());

    // An empty directory made beforehand (by an installer, say) with the usual 0755.
    let made = root.path().join("made");
    std::fs::create_dir(&made).unwrap();
    set(&made, 0o755).unwrap();
    let mut p = spawn_crs(&made, &[], None);
    assert_eq!(mode(&made), 0o700);
    assert_eq!(mode(&made.join("crs.redb")), 0o600);
    assert_eq!(mode(&made.join("secrets.json")), 0o600);
    assert_eq!(
        p.count("restricted the data directory"),
        1,
        "{:?}",
        p.lines()
    );
    assert!(p.sigterm().success());
}

//! The real binary: first start on an empty data dir, restart, and a graceful SIGTERM that
//! commits usage the periodic flush has not written yet.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use serde_json::json;

pub const BIN: &str = env!("CARGO_BIN_EXE_crs");

pub struct Proc {
    pub child: Child,
    pub url: String,
    pub stderr_head: Vec<String>,
}

/// Start `crs serve` on an ephemeral port and wait for its "listening" line.
pub fn spawn(dir: &Path, envs: &[(&str, &str)]) -> Proc {
    spawn_exe(Path::new(BIN), dir, envs)
}

/// `spawn` with another copy of the binary.
pub fn spawn_exe(exe: &Path, dir: &Path, envs: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(exe);
    cmd.args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--port", "0", "--host", "127.0.0.1"])
        .env_remove("ADMIN_USERNAME")
        .env_remove("ADMIN_PASSWORD")
        .env_remove("ENCRYPTION_KEY")
        .env("LOG_LEVEL", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut head = Vec::new();
    let url = loop {
        let line = lines.next().expect("crs exited before listening").unwrap();
        head.push(line.clone());
        if line.contains("crs is listening")
            && let Some(i) = line.find("url=http://")
        {
            break line[i + 4..].split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Proc {
        child,
        url,
        stderr_head: head,
    }
}

pub fn sigterm(p: &mut Proc) -> std::process::ExitStatus {
    let pid = p.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(s) = p.child.try_wait().unwrap() {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "crs did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn help_on_every_command() {
    for args in [vec!["--help"], vec!["serve", "--help"]] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("TIMEZONE_OFFSET", "eight")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TIMEZONE_OFFSET"));
}

#[tokio::test]
async fn first_start_generates_secrets_and_an_admin_then_reuses_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested").join("data");
    let mut p = spawn(&data, &[]);
    let banner = p.stderr_head.join("\n");
    let password = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("password: "))
        .expect("generated admin password is shown once")
        .to_owned();
    assert!(banner.contains("username: admin"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("secrets.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(data.join("crs.redb").exists());
    let http = client();
    let login = |url: String, pw: String| {
        let http = http.clone();
        async move {
            http.post(format!("{url}/web/auth/login"))
                .json(&json!({"username": "admin", "password": pw}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(login(p.url.clone(), password.clone()).await, 200);
    assert_eq!(login(p.url.clone(), "wrong".into()).await, 401);
    let secrets_before = std::fs::read(data.join("secrets.json")).unwrap();
    assert!(sigterm(&mut p).success());

    // Second start: nothing regenerated, no password shown, the old password still works.
    let mut p = spawn(&data, &[]);
    assert!(!p.stderr_head.join("\n").contains("password:"));
    assert_eq!(
        std::fs::read(data.join("secrets.json")).unwrap(),
        secrets_before
    );
    assert_eq!(login(p.url.clone(), password).await, 200);
    assert!(sigterm(&mut p).success());
}

#[tokio::test]
async fn sigterm_commits_usage_that_was_not_flushed_yet() {
    let dir = tempfile::tempdir().unwrap();
    // A flush interval far longer than the test: only the shutdown path can write usage.
    std::fs::write(dir.path().join("config.toml"), "ledger_flush_ms = 600000\n").unwrap();
    let mock = crs::mock::MockUpstream::start().await.unwrap();
    let env = crate::ops::ENV;
    let mut p = spawn(dir.path(), &env);
    let key = crate::ops::account_and_key(&p, &mock).await;
    crate::ops::send(&p.url, &key, 3).await;
    assert!(sigterm(&mut p).success());

    let p2 = spawn(dir.path(), &env);
    let u = crate::ops::usage(&p2.url, &key).await;
    assert_eq!(u["requests"], 3);
    assert_eq!(u["inputTokens"], 21);
    assert_eq!(u["outputTokens"], 9);
    let mut p2 = p2;
    assert!(sigterm(&mut p2).success());
}

#[tokio::test]
async fn log_files_beside_stderr_rotate_at_their_size() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let logs_env = logs.to_str().unwrap();
    let env = [
        ("CRS_LOG_DIR", logs_env),
        ("LOG_MAX_SIZE", "2k"),
        ("LOG_MAX_FILES", "2"),
    ];
    let mut p = spawn(&dir.path().join("data"), &env);
    // Failed logins are logged (a warn line each).
    let http = client();
    for _ in 0..40 {
        http.post(format!("{}/web/auth/login", p.url))
            .json(&json!({"username": "nobody", "password": "wrong-password"}))
            .send()
            .await
            .unwrap();
    }
    assert!(sigterm(&mut p).success());
    let all: String = ["crs.log.2", "crs.log.1", "crs.log"]
        .iter()
        .map(|f| std::fs::read_to_string(logs.join(f)).unwrap())
        .collect();
    assert!(!logs.join("crs.log.3").exists());
    for f in ["crs.log", "crs.log.1"] {
        assert!(std::fs::metadata(logs.join(f)).unwrap().len() <= 2048);
    }
    assert!(all.contains("usage flushed; bye"), "{all}");
    assert!(all.contains("nobody"));
}

/// A system without CA certificates (an empty container or chroot) still gets a working crs:
/// upstream certificates are checked against the roots built into the binary, with a warning.
#[tokio::test]
async fn starts_on_a_system_without_ca_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let empty_file = dir.path().join("no-certs.pem");
    std::fs::write(&empty_file, "").unwrap();
    let empty_dir = dir.path().join("no-certs");
    std::fs::create_dir(&empty_dir).unwrap();
    // rustls-native-certs reads only these when they are set.
    let mut p = spawn(
        &dir.path().join("data"),
        &[
            ("SSL_CERT_FILE", empty_file.to_str().unwrap()),
            ("SSL_CERT_DIR", empty_dir.to_str().unwrap()),
        ],
    );
    let head = p.stderr_head.join("\n");
    assert!(
        head.contains("no CA certificates found on this system"),
        "{head}"
    );
    let health = client()
        .get(format!("{}/health", p.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert!(sigterm(&mut p).success());
}

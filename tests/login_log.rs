//! The admin login log. A test binary of its own: it installs the process-wide tracing
//! subscriber and reads every line crs logs, which the suite's binary cannot do reliably (its
//! other tests, registering the same call sites on their threads at the same moment, could
//! leave a call site without interest, and an event dropped; seen once in a full run).

#[allow(dead_code)]
#[path = "suite/common/mod.rs"]
mod common;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use common::*;

/// Every formatted line the process logged.
fn logs() -> &'static Mutex<Vec<u8>> {
    static LOGS: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();
    LOGS.get_or_init(Default::default)
}

struct Writer;

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        logs().lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Connections are served on crs's serving threads, which log through this subscriber too.
#[tokio::test]
async fn every_attempt_is_logged_with_name_address_and_reason_never_the_password() {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(|| Writer)
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("no other global subscriber");
    let env = Env::start_with(|c| {
        c.login.free_failures = 2;
        c.login.base_delay = Duration::from_secs(30);
    })
    .await;
    let http = &env.http;
    assert_eq!(
        try_login(http, &env, ADMIN_USER, "first-secret-guess")
            .await
            .0,
        401
    );
    assert_eq!(
        try_login(http, &env, "nobody", "second-secret-guess")
            .await
            .0,
        401
    );
    assert_eq!(
        try_login(http, &env, "nobody", "third-secret-guess")
            .await
            .0,
        429
    );
    env.stop().await;

    let lines: Vec<String> = String::from_utf8_lossy(&logs().lock().unwrap())
        .lines()
        .map(str::to_owned)
        .collect();
    let find = |level: &str, parts: &[&str]| {
        lines
            .iter()
            .find(|l| l.contains(level) && parts.iter().all(|p| l.contains(p)))
            .unwrap_or_else(|| panic!("no {level} line with {parts:?} in {lines:#?}"))
            .clone()
    };
    find(
        "INFO",
        &["admin logged in", "username=root", "client=127.0.0.1"],
    );
    find(
        "WARN",
        &[
            "admin login failed",
            "username=root",
            "client=127.0.0.1",
            "wrong password",
        ],
    );
    let locked = find(
        "WARN",
        &[
            "admin login failed",
            "username=nobody",
            "client=127.0.0.1",
            "unknown user",
        ],
    );
    assert!(locked.contains("locked_secs=30"), "{locked}");
    find(
        "WARN",
        &[
            "admin login failed",
            "username=nobody",
            "client=127.0.0.1",
            "throttled",
        ],
    );
    for secret in [ADMIN_PASS, "first-secret", "second-secret", "third-secret"] {
        assert!(
            !lines.iter().any(|l| l.contains(secret)),
            "a password reached the log"
        );
    }
}

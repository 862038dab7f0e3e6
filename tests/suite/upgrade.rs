//! Zero-downtime upgrade of the real binary: `crs upgrade` (SIGUSR2) while an SSE stream runs
//! and a request loop keeps going. The stream finishes, the loop sees no failure, a new process
//! serves, and the usage of every request is recorded once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;

use crate::cli::{BIN, spawn};
use crate::common::*;
use crate::ops::{ENV, account_and_key, usage};

fn alive(pid: u32) -> bool {
    // A process that exited but was not reaped yet counts as gone.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_keeps_streams_and_requests_going_and_a_new_process_serves() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mock = crs::mock::MockUpstream::start().await.unwrap();
    let mut old = spawn(&data, &ENV);
    let old_pid = old.child.id();
    let url = old.url.clone();
    let key = account_and_key(&old, &mock).await;

    // A stream of ~5 s, and a loop of requests on fresh connections.
    let stream = {
        let (url, key) = (url.clone(), key.clone());
        tokio::spawn(async move {
            let r = client()
                .post(format!("{url}/v1/messages"))
                .header("x-api-key", &key)
                .json(&msg_body(
                    "claude-sonnet-4-5-20250929",
                    true,
                    "mock:usage=5,2,0,0 mock:chunks=30 mock:delay_ms=150",
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap()
        })
    };
    let (done, ok, failed) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::<String>::new())),
    );
    let looping = {
        let (url, key, done, ok, failed) = (
            url.clone(),
            key.clone(),
            done.clone(),
            ok.clone(),
            failed.clone(),
        );
        tokio::spawn(async move {
            let fresh = reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            while !done.load(Ordering::SeqCst) {
                let r = fresh
                    .post(format!("{url}/v1/messages"))
                    .header("x-api-key", &key)
                    .json(&msg_body(
                        "claude-sonnet-4-5-20250929",
                        false,
                        "mock:usage=7,3,0,0",
                    ))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        r.bytes().await.unwrap();
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failed.lock().push(format!("status {}", r.status())),
                    Err(e) => failed.lock().push(format!("{e:?}")),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;

    let out = tokio::process::Command::new(BIN)
        .args(["upgrade", "--json", "--data-dir"])
        .arg(&data)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let new_pid = v["pid"].as_u64().unwrap() as u32;
    assert_ne!(new_pid, old_pid);
    assert_eq!(v["oldPid"], old_pid);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    done.store(true, Ordering::SeqCst);
    looping.await.unwrap();
    let body = stream.await.unwrap();
    assert!(body.contains("message_stop"), "the stream was cut: {body}");
    assert!(failed.lock().is_empty(), "{:?}", failed.lock());
    let served = ok.load(Ordering::SeqCst);
    assert!(served > 5, "{served}");

    // The old process drains and exits; the new one has the socket and the run file.
    let status = tokio::task::spawn_blocking(move || old.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let run: Value =
        serde_json::from_slice(&std::fs::read(data.join("crs.run.json")).unwrap()).unwrap();
    assert_eq!(run["pid"], new_pid);
    assert!(alive(new_pid));
    let h = client().get(format!("{url}/health")).send().await.unwrap();
    assert_eq!(h.status(), 200);

    // Every request counted once: those the old process finished came over in its handoff file.
    let want = served as u64 + 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let u = usage(&url, &key).await;
        if u["requests"].as_u64() == Some(want) {
            assert_eq!(u["inputTokens"].as_u64(), Some(served as u64 * 7 + 5));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "usage {u}, want {want} requests"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        std::fs::read_dir(&data).unwrap().flatten().all(|e| !e
            .file_name()
            .to_string_lossy()
            .starts_with("usage-handoff-")),
        "the handoff file is consumed"
    );

    // SIGTERM stops the new one like any server.
    // SAFETY: a signal to the process this test started (through the upgrade).
    unsafe { libc::kill(new_pid as libc::pid_t, libc::SIGTERM) };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while data.join("crs.run.json").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the new process did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mock.stop();
}

#[tokio::test]
async fn an_upgrade_to_a_binary_that_does_not_start_keeps_the_old_one_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A copy of the binary, replaced by one that cannot start once the server runs.
    let exe = dir.path().join("crs");
    std::fs::copy(BIN, &exe).unwrap();
    let mock = crs::mock::MockUpstream::start().await.unwrap();
    let mut old = crate::cli::spawn_exe(&exe, &data, &ENV);
    let key = account_and_key(&old, &mock).await;
    crate::ops::send(&old.url, &key, 2).await;
    std::fs::remove_file(&exe).unwrap();
    std::fs::write(&exe, "#!/bin/sh\nexit 3\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = tokio::process::Command::new(BIN)
        .args(["upgrade", "--data-dir"])
        .arg(&data)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Still serving, with its store: usage before and after the attempt is all there.
    crate::ops::send(&old.url, &key, 2).await;
    let u = client()
        .get(format!("{}/api/v1/usage", old.url))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&u).unwrap_or_default();
    assert_eq!(v["usage"]["total"]["requests"], 4, "{u}");
    let admin = client()
        .get(format!("{}/admin/status", old.url))
        .bearer_auth(
            serde_json::from_slice::<Value>(&std::fs::read(data.join("crs.run.json")).unwrap())
                .unwrap()["token"]
                .as_str()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200, "the store is back");
    assert!(crate::cli::sigterm(&mut old).success());
    mock.stop();
}

/// Under systemd (`Type=notify`), the server says when it is ready and which pid is the main
/// one; a process started by an upgrade says the same for itself.
#[tokio::test]
async fn systemd_hears_ready_and_the_main_pid() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut p = spawn(
        &dir.path().join("data"),
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(msg.contains("READY=1"), "{msg}");
    assert!(msg.contains(&format!("MAINPID={}", p.child.id())), "{msg}");
    assert!(crate::cli::sigterm(&mut p).success());
}

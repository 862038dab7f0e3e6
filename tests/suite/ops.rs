//! The operator commands of the real binary against real data directories: status, keys,
//! accounts, check, admin reset-password, backup (while serving and offline) and restore.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use crate::cli::{BIN, Proc, sigterm, spawn};
use crate::common::*;

pub const ENV: [(&str, &str); 2] = [
    ("ADMIN_USERNAME", "ops"),
    ("ADMIN_PASSWORD", "ops-password-1"),
];

/// Run `crs <args> --data-dir <dir>` (stdin from `input`).
fn crs(dir: &Path, args: &[&str], input: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("ENCRYPTION_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(i) = input {
        stdin.write_all(i.as_bytes()).unwrap();
    }
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// `crs <args> --json`, which must succeed; its JSON.
fn crs_json(dir: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let out = crs(dir, &all, None);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap()
}

async fn login(url: &str, user: &str, password: &str) -> Option<String> {
    let r = client()
        .post(format!("{url}/web/auth/login"))
        .json(&json!({"username": user, "password": password}))
        .send()
        .await
        .unwrap();
    if r.status() != 200 {
        return None;
    }
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().map(str::to_owned)
}

/// An account on `mock` and a key; returns the key.
pub async fn account_and_key(p: &Proc, mock: &crs::mock::MockUpstream) -> String {
    let http = client();
    let token = login(&p.url, "ops", "ops-password-1").await.unwrap();
    let r = http
        .post(format!("{}/admin/claude-console-accounts", p.url))
        .bearer_auth(&token)
        .json(&json!({"name": "console-1", "apiUrl": mock.url(), "apiKey": "sk-ant-x-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = http
        .post(format!("{}/admin/api-keys", p.url))
        .bearer_auth(&token)
        .json(&json!({"name": "alice"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["data"]["apiKey"].as_str().unwrap().to_owned()
}

/// `n` Messages requests (every second one streamed), 7 input and 3 output tokens each.
pub async fn send(url: &str, key: &str, n: usize) {
    for i in 0..n {
        let r = client()
            .post(format!("{url}/v1/messages"))
            .header("x-api-key", key)
            .json(&msg_body(
                "claude-sonnet-4-5-20250929",
                i % 2 == 1,
                "mock:usage=7,3,0,0",
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
}

pub async fn usage(url: &str, key: &str) -> Value {
    client()
        .get(format!("{url}/api/v1/usage"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["usage"]["total"]
        .clone()
}

#[tokio::test]
async fn backup_while_serving_then_restore_gives_the_same_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mock = crs::mock::MockUpstream::start().await.unwrap();
    let mut p = spawn(&data, &ENV);
    let key = account_and_key(&p, &mock).await;
    send(&p.url, &key, 3).await;

    // While serving: status and backup go through the server; commands that need the
    // store to themselves say so with exit code 3.
    let s = crs_json(&data, &["status"]);
    assert_eq!(s["server"]["pid"], p.child.id());
    assert_eq!(s["server"]["url"], p.url.as_str());
    assert_eq!(s["keys"]["active"], 1);
    assert_eq!(s["accounts"]["total"], 1);
    assert_eq!(s["total"]["requests"], 3);
    let busy = crs(&data, &["keys", "list"], None);
    assert_eq!(code(&busy), 3, "{busy:?}");
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use by a running crs"));

    let backup = tmp.path().join("crs-backup.redb");
    let b = crs_json(&data, &["backup", "--out", backup.to_str().unwrap()]);
    assert_eq!(b["online"], true);
    assert!(
        b["files"]
            .as_array()
            .unwrap()
            .contains(&json!("secrets.json"))
    );
    // Requests after the backup are not in it.
    send(&p.url, &key, 2).await;
    let live = usage(&p.url, &key).await;
    assert_eq!(live["requests"], 5);
    let refused = crs(
        &data,
        &["restore", "--from", backup.to_str().unwrap(), "--force"],
        None,
    );
    assert_eq!(code(&refused), 3, "no restore under a running server");
    assert!(sigterm(&mut p).success());
    assert!(!data.join("crs.run.json").exists(), "the run file goes");

    // Restore into a new directory: the usage, the key and the admin of the moment of the
    // backup.
    let restored = tmp.path().join("restored");
    let r = crs_json(&restored, &["restore", "--from", backup.to_str().unwrap()]);
    assert!(r["rows"].as_u64().unwrap() > 0);
    let again = crs(
        &restored,
        &["restore", "--from", backup.to_str().unwrap()],
        None,
    );
    assert_eq!(code(&again), 1, "an existing store needs --force");
    assert!(
        crs_json(&restored, &["check"])["problems"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let mut p2 = spawn(&restored, &[]);
    let u = usage(&p2.url, &key).await;
    assert_eq!(u["requests"], 3);
    assert_eq!(u["inputTokens"], 21);
    assert!(login(&p2.url, "ops", "ops-password-1").await.is_some());
    send(&p2.url, &key, 1).await;
    assert!(sigterm(&mut p2).success());

    // Offline backup of the original, restored over the copy with --force.
    let offline = tmp.path().join("offline.redb");
    assert_eq!(
        crs_json(&data, &["backup", "--out", offline.to_str().unwrap()])["online"],
        false
    );
    let r = crs_json(
        &restored,
        &["restore", "--from", offline.to_str().unwrap(), "--force"],
    );
    assert!(
        r["replaced"]
            .as_str()
            .unwrap()
            .ends_with("crs.redb.before-restore")
    );
    let mut p3 = spawn(&restored, &[]);
    assert_eq!(usage(&p3.url, &key).await["requests"], 5);
    assert!(sigterm(&mut p3).success());
    mock.stop();
}

#[tokio::test]
async fn keys_accounts_check_and_password_reset_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mock = crs::mock::MockUpstream::start().await.unwrap();
    let mut p = spawn(&data, &ENV);
    account_and_key(&p, &mock).await;
    assert!(sigterm(&mut p).success());

    let keys = crs_json(&data, &["keys", "list"]);
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert_eq!(keys[0]["name"], "alice");
    let text = crs(&data, &["keys", "list"], None);
    assert!(String::from_utf8_lossy(&text.stdout).contains("alice"));

    let created = crs_json(&data, &["keys", "create", "--name", "from-cli"]);
    let plaintext = created["apiKey"].as_str().unwrap().to_owned();
    assert!(plaintext.starts_with("cr_"));
    let disabled = crs_json(&data, &["keys", "disable", "alice"]);
    assert_eq!(disabled["isActive"], false);
    let missing = crs(&data, &["keys", "disable", "nobody"], None);
    assert_eq!(code(&missing), 5);

    let accounts = crs_json(&data, &["accounts", "list"]);
    assert_eq!(accounts[0]["name"], "console-1");
    assert_eq!(accounts[0]["platform"], "claude-console");
    assert!(
        !accounts.to_string().contains("sk-ant-x-1"),
        "no secrets in the list"
    );

    let c = crs_json(&data, &["check"]);
    assert!(c["secrets"].as_u64().unwrap() >= 1, "{c}");
    assert!(c["problems"].as_array().unwrap().is_empty(), "{c}");

    let status = crs_json(&data, &["status"]);
    assert!(status["server"].is_null());
    assert_eq!(status["keys"]["active"], 1);
    assert_eq!(status["keys"]["disabled"], 1);

    // A forgotten password: reset from stdin, or generated and shown once.
    let out = crs(
        &data,
        &["admin", "reset-password", "--password-stdin"],
        Some("a-new-password\n"),
    );
    assert!(out.status.success(), "{out:?}");
    let short = crs(
        &data,
        &["admin", "reset-password", "--password-stdin"],
        Some("short\n"),
    );
    assert_eq!(code(&short), 1);
    let unknown = crs(
        &data,
        &["admin", "reset-password", "--username", "eve"],
        None,
    );
    assert_eq!(code(&unknown), 5);

    // The server sees what the commands did.
    let mut p = spawn(&data, &[]);
    assert!(login(&p.url, "ops", "ops-password-1").await.is_none());
    assert!(login(&p.url, "ops", "a-new-password").await.is_some());
    let r = client()
        .get(format!("{}/api/v1/usage", p.url))
        .header("x-api-key", &plaintext)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "a key made by the CLI works");
    assert!(sigterm(&mut p).success());
    let generated = crs_json(&data, &["admin", "reset-password"]);
    let password = generated["password"].as_str().unwrap().to_owned();
    let mut p = spawn(&data, &[]);
    assert!(login(&p.url, "ops", &password).await.is_some());
    assert!(sigterm(&mut p).success());

    // A record that no longer parses, and a secret that no longer decrypts: exit code 4.
    {
        let store = crs::store::Store::open(&data.join("crs.redb")).unwrap();
        let mut rows = store.load_raw(crs::store::Table::Accounts).unwrap();
        let mut acc: Value = serde_json::from_slice(&rows[0].1).unwrap();
        acc["apiKey"] = json!("enc1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
        rows[0].1 = serde_json::to_vec(&acc).unwrap();
        rows.push(("broken".into(), b"{\"id\": 5".to_vec()));
        store
            .put_raw_many(crs::store::Table::Accounts, &rows)
            .unwrap();
    }
    let bad = crs(&data, &["check", "--json"], None);
    assert_eq!(code(&bad), 4);
    let report: Value = serde_json::from_slice(&bad.stdout).unwrap();
    let problems = report["problems"].to_string();
    assert!(problems.contains("accounts/broken"), "{problems}");
    assert!(problems.contains(".apiKey"), "{problems}");

    let nowhere = crs(&tmp.path().join("nothing"), &["keys", "list"], None);
    assert_eq!(code(&nowhere), 5);
    assert!(!tmp.path().join("nothing").exists(), "nothing is created");
    mock.stop();
}

//! Webhook notifications: v1's admin API, a local receiver that gets the notice when an
//! account is refused by its upstream (blocked), rate limited and recovered; retries.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

/// A local HTTP receiver: records every JSON body; answers 500 to the first `fail_first`.
pub struct Receiver {
    pub url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
    hits: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let bodies: Arc<Mutex<Vec<Value>>> = Default::default();
        let hits: Arc<AtomicUsize> = Default::default();
        let (b, h) = (bodies.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (b, h) = (b.clone(), h.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    let body = loop {
                        let n = s.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break buf[end + 4..end + 4 + len].to_vec();
                        }
                    };
                    let n = h.fetch_add(1, Ordering::SeqCst);
                    let status = if n < fail_first {
                        "500 Internal Server Error"
                    } else {
                        b.lock()
                            .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                        "200 OK"
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
                    );
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        Receiver { url, bodies, hits }
    }

    /// Wait for a notice whose `data` matches.
    pub async fn wait_for(&self, what: &str, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(v) = self.bodies.lock().iter().find(|v| f(v)) {
                return v.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {what} notice; got {:?}",
                self.bodies.lock()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn configure(env: &Env, url: &str) -> String {
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/webhook/config",
            Some(json!({"enabled": true, "retrySettings": {"maxRetries": 2, "retryDelay": 50, "timeout": 2000}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/webhook/platforms",
            Some(json!({"type": "custom", "name": "local", "url": url})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["platform"]["enabled"], true);
    v["platform"]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_v1_admin_api_manages_platforms_and_tests_them() {
    let env = Env::start().await;
    let rx = Receiver::start(2).await;
    let (s, v) = env.admin(Method::GET, "/admin/webhook/config", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["config"]["enabled"], false);
    assert_eq!(v["config"]["notificationTypes"]["accountAnomaly"], true);

    let id = configure(&env, &rx.url).await;
    let (s, _) = env
        .admin(
            Method::POST,
            "/admin/webhook/platforms",
            Some(json!({"type": "pager", "url": rx.url})),
        )
        .await;
    assert_eq!(s, 400, "unknown type");
    let (s, _) = env
        .admin(
            Method::POST,
            "/admin/webhook/platforms",
            Some(json!({"type": "dingtalk", "url": rx.url, "enableSign": true})),
        )
        .await;
    assert_eq!(s, 400, "signing without a secret");
    // Secrets are encrypted at rest and given back to the admin.
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/webhook/platforms",
            Some(json!({"type": "dingtalk", "url": rx.url, "enableSign": true, "secret": "SEC-at-rest", "enabled": false})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let raw = env
        .crs
        .as_ref()
        .unwrap()
        .state
        .store
        .load_raw(crs::store::Table::Settings)
        .unwrap();
    let (_, row) = raw.iter().find(|(k, _)| k == "webhookConfig").unwrap();
    let row = String::from_utf8_lossy(row);
    assert!(
        !row.contains("SEC-at-rest") && row.contains("enc1:"),
        "{row}"
    );
    let (_, v) = env.admin(Method::GET, "/admin/webhook/config", None).await;
    assert_eq!(v["config"]["platforms"][1]["secret"], "SEC-at-rest");
    let ding = v["config"]["platforms"][1]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.admin(
        Method::DELETE,
        &format!("/admin/webhook/platforms/{ding}"),
        None,
    )
    .await;
    let (s, v) = env
        .admin(
            Method::PUT,
            &format!("/admin/webhook/platforms/{id}"),
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["platform"]["name"], "renamed");
    assert_eq!(v["platform"]["url"], rx.url.as_str());
    let (s, v) = env
        .admin(
            Method::POST,
            &format!("/admin/webhook/platforms/{id}/toggle"),
            None,
        )
        .await;
    assert_eq!((s, v["platform"]["enabled"].clone()), (200, json!(false)));
    let (s, v) = env
        .admin(Method::POST, "/admin/webhook/test-notification", None)
        .await;
    assert_eq!(s, 400, "no enabled platform: {v}");
    env.admin(
        Method::POST,
        &format!("/admin/webhook/platforms/{id}/toggle"),
        None,
    )
    .await;

    // The receiver fails the first two attempts: the retries get it through.
    let (s, v) = env
        .admin(Method::POST, "/admin/webhook/test-notification", None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["succeeded"], 1);
    assert_eq!(rx.hits.load(Ordering::SeqCst), 3);
    rx.wait_for("test", |v| v["type"] == "test").await;

    // A platform given in the body, not stored: one attempt.
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/webhook/test",
            Some(json!({"type": "custom", "url": rx.url})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/webhook/test",
            Some(json!({"type": "slack", "url": "http://127.0.0.1:9/nothing"})),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["success"], false);

    let (s, _) = env
        .admin(
            Method::DELETE,
            &format!("/admin/webhook/platforms/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let (_, v) = env.admin(Method::GET, "/admin/webhook/config", None).await;
    assert!(v["config"]["platforms"].as_array().unwrap().is_empty());
    env.stop().await;
}

#[tokio::test]
async fn a_blocked_account_and_a_rate_limited_one_reach_the_receiver() {
    let env = Env::start().await;
    let rx = Receiver::start(0).await;
    configure(&env, &rx.url).await;
    let blocked = env.create_account(json!({"name": "blocked-1"})).await;
    let (_, key) = env.create_key(json!({"name": "w"})).await;

    force(&env.mock, 403, None, "This organization has been disabled.");
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let n = rx
        .wait_for("account blocked", |v| {
            v["type"] == "accountAnomaly" && v["data"]["accountId"] == blocked.as_str()
        })
        .await;
    // A disabled organisation is `blocked` (v1's name), not a refused credential.
    assert_eq!(n["data"]["status"], "blocked");
    assert_eq!(n["data"]["accountName"], "blocked-1");
    assert!(n["data"]["reason"].as_str().unwrap().contains("disabled"));
    unforce(&env.mock);
    let (s, _) = env
        .admin(
            Method::DELETE,
            &format!("/admin/claude-console-accounts/{blocked}"),
            None,
        )
        .await;
    assert_eq!(s, 200);

    // Rate limited for six seconds (a cooldown is reported once it lasted a whole look of the
    // watcher, every 2 s), then back.
    let limited = env.create_account(json!({"name": "limited-1"})).await;
    force(&env.mock, 429, Some(6), "rate limited");
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    unforce(&env.mock);
    let is = |kind: &'static str, status: &'static str| {
        let limited = limited.clone();
        move |v: &Value| {
            v["type"] == kind
                && v["data"]["accountId"] == limited.as_str()
                && v["data"]["status"] == status
        }
    };
    rx.wait_for("rate limited", is("accountAnomaly", "rate_limited"))
        .await;
    rx.wait_for("recovered", is("rateLimitRecovery", "active"))
        .await;
    env.stop().await;
}

#[tokio::test]
async fn a_key_near_and_at_its_daily_cost_limit_is_reported() {
    let env = Env::start().await;
    let rx = Receiver::start(0).await;
    configure(&env, &rx.url).await;
    env.create_account(json!({})).await;
    // Sonnet 4.5: $3 / $15 per million tokens; 100k input tokens = $0.30 a request.
    let (id, key) = env
        .create_key(json!({"name": "capped", "dailyCostLimit": 0.5}))
        .await;
    let send = || async {
        let r = env
            .messages(
                &key,
                msg_body(
                    "claude-sonnet-4-5-20250929",
                    false,
                    "mock:usage=100000,0,0,0",
                ),
            )
            .send()
            .await
            .unwrap();
        r.status()
    };
    assert_eq!(send().await, 200);
    assert_eq!(send().await, 200);
    let is = |level: &'static str| {
        let id = id.clone();
        move |v: &Value| {
            v["type"] == "quotaWarning"
                && v["data"]["keyId"] == id.as_str()
                && v["data"]["limit"] == "daily"
                && v["data"]["level"] == level
        }
    };
    let n = rx.wait_for("key limit reached", is("reached")).await;
    assert!(n["message"].as_str().unwrap().contains("refused"), "{n}");
    assert_eq!(send().await, 402, "the limit holds");
    env.stop().await;
}

/// A fake SMTP server (no TLS): records the commands and the message it gets.
async fn fake_smtp() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let s2 = seen.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let (s, _) = listener.accept().await.unwrap();
        let mut s = tokio::io::BufStream::new(s);
        async fn say(s: &mut tokio::io::BufStream<tokio::net::TcpStream>, l: &str) {
            s.write_all(l.as_bytes()).await.unwrap();
            s.flush().await.unwrap();
        }
        say(&mut s, "220 fake ESMTP\r\n").await;
        let mut in_data = false;
        let mut data = String::new();
        loop {
            let mut line = String::new();
            if s.read_line(&mut line).await.unwrap() == 0 {
                return;
            }
            if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    s2.lock().push(std::mem::take(&mut data));
                    say(&mut s, "250 queued\r\n").await;
                } else {
                    data += &line;
                }
                continue;
            }
            s2.lock().push(line.trim_end().to_owned());
            let cmd = line.to_ascii_uppercase();
            if cmd.starts_with("EHLO") {
                say(&mut s, "250-fake\r\n250 AUTH PLAIN\r\n").await;
            } else if cmd.starts_with("AUTH") {
                say(&mut s, "235 ok\r\n").await;
            } else if cmd.starts_with("DATA") {
                in_data = true;
                say(&mut s, "354 go on\r\n").await;
            } else if cmd.starts_with("QUIT") {
                say(&mut s, "221 bye\r\n").await;
                return;
            } else {
                say(&mut s, "250 ok\r\n").await;
            }
        }
    });
    (port, seen)
}

#[tokio::test]
async fn smtp_mails_a_test_notification() {
    let env = Env::start().await;
    let (port, seen) = fake_smtp().await;
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/webhook/test",
            Some(json!({"type": "smtp", "host": "127.0.0.1", "port": port, "user": "ops", "pass": "pw",
                        "from": "crs@example.org", "to": "a@example.org, b@example.org"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let seen = seen.lock().clone();
    assert!(
        seen.contains(&"AUTH PLAIN AG9wcwBwdw==".to_owned()),
        "{seen:?}"
    );
    assert!(
        seen.contains(&"RCPT TO:<b@example.org>".to_owned()),
        "{seen:?}"
    );
    let mail = seen.iter().find(|l| l.contains("Subject:")).unwrap();
    assert!(
        mail.contains("Subject: crs: test notification\r\n"),
        "{mail}"
    );
    assert!(mail.contains("\r\n\r\ncrs: test notification"), "{mail}");
    let (s, _) = env
        .admin(
            Method::POST,
            "/admin/webhook/platforms",
            Some(json!({"type": "smtp", "host": "127.0.0.1"})),
        )
        .await;
    assert_eq!(s, 400, "smtp needs from and to");
    env.stop().await;
}

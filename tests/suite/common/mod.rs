//! Shared integration-test harness: a mock upstream, crs running in-process on a fresh data
//! directory, and an HTTP client with admin helpers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crs::config::Config;
use crs::mock::MockUpstream;
use crs::server::Running;
use serde_json::{Value, json};

pub mod tls;

pub const ADMIN_USER: &str = "root";
pub const ADMIN_PASS: &str = "correct-horse-battery";
pub const UPSTREAM_KEY: &str = "sk-ant-api03-upstream-secret-0001";

pub fn client() -> reqwest::Client {
    crs::init_tls();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// POST /web/auth/login; returns (status, retry-after, body).
pub async fn try_login(
    http: &reqwest::Client,
    env: &Env,
    user: &str,
    pass: &str,
) -> (u16, Option<u64>, Value) {
    let r = http
        .post(env.url("/web/auth/login"))
        .json(&json!({"username": user, "password": pass}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
    (status, retry, r.json().await.unwrap())
}

pub fn test_config(dir: &Path) -> Config {
    let mut c = Config::for_data_dir(dir);
    c.admin_username = Some(ADMIN_USER.into());
    c.admin_password = Some(ADMIN_PASS.into());
    c
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub mock: MockUpstream,
    pub crs: Option<Running>,
    pub http: reqwest::Client,
    pub token: String,
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Env {
        Self::start_with_mock(|c, _| tweak(c)).await
    }

    /// Start with a config tweak that knows the mock's URL.
    pub async fn start_with_mock(tweak: impl FnOnce(&mut Config, &str)) -> Env {
        crs::init_tls();
        let dir = tempfile::tempdir().unwrap();
        let mock = MockUpstream::start().await.unwrap();
        mock.state.accepted_keys.lock().push(UPSTREAM_KEY.into());
        let mut cfg = test_config(dir.path());
        tweak(&mut cfg, &mock.url());
        let crs = crs::server::start(cfg).await.unwrap();
        let http = client();
        let mut env = Env {
            dir,
            mock,
            crs: Some(crs),
            http,
            token: String::new(),
        };
        env.token = env
            .login(ADMIN_USER, ADMIN_PASS)
            .await
            .expect("admin login");
        env
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.crs.as_ref().unwrap().url(), path)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    pub async fn login(&self, user: &str, pass: &str) -> Option<String> {
        let r = self
            .http
            .post(self.url("/web/auth/login"))
            .json(&json!({"username": user, "password": pass}))
            .send()
            .await
            .unwrap();
        if !r.status().is_success() {
            return None;
        }
        let v: Value = r.json().await.unwrap();
        v["token"].as_str().map(str::to_owned)
    }

    /// An admin call; returns (status, body).
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self
            .http
            .request(method, self.url(path))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// The admin view of the item `id` under `/admin/{path}/` (its `data`; the call must
    /// succeed).
    pub async fn view(&self, path: &str, id: &str) -> Value {
        let (s, v) = self
            .admin(reqwest::Method::GET, &format!("/admin/{path}/{id}"), None)
            .await;
        assert_eq!(s, 200, "{v}");
        v["data"].clone()
    }

    pub async fn create_account(&self, extra: Value) -> String {
        let mut body = json!({
            "name": "console-1",
            "apiUrl": self.mock.url(),
            "apiKey": UPSTREAM_KEY,
        });
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (s, v) = self
            .admin(
                reqwest::Method::POST,
                "/admin/claude-console-accounts",
                Some(body),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["data"]["id"].as_str().unwrap().to_owned()
    }

    /// Create an account of any type at `/admin/{path}`; returns its id.
    pub async fn create(&self, path: &str, body: Value) -> String {
        let (s, v) = self
            .admin(reqwest::Method::POST, &format!("/admin/{path}"), Some(body))
            .await;
        assert_eq!(s, 200, "{v}");
        v["data"]["id"].as_str().unwrap().to_owned()
    }

    /// Create a key; returns (id, plaintext).
    pub async fn create_key(&self, body: Value) -> (String, String) {
        let (s, v) = self
            .admin(reqwest::Method::POST, "/admin/api-keys", Some(body))
            .await;
        assert_eq!(s, 200, "{v}");
        (
            v["data"]["id"].as_str().unwrap().to_owned(),
            v["data"]["apiKey"].as_str().unwrap().to_owned(),
        )
    }

    pub fn messages(&self, key: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url("/api/v1/messages"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .json(&body)
    }

    pub async fn usage(&self, key: &str) -> Value {
        let r = self
            .http
            .get(self.url("/api/v1/usage"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// Stop crs gracefully (flushing usage) and start it again on the same data directory.
    pub async fn restart(&mut self) {
        self.crs
            .take()
            .unwrap()
            .shutdown(Duration::from_secs(5))
            .await;
        let cfg = test_config(self.dir.path());
        self.crs = Some(crs::server::start(cfg).await.unwrap());
        self.token = self
            .login(ADMIN_USER, ADMIN_PASS)
            .await
            .expect("admin login after restart");
    }

    /// Stop crs and the mock; the data directory lives as long as the returned guard.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(c) = self.crs.take() {
            c.shutdown(Duration::from_secs(5)).await;
        }
        self.mock.stop();
        self.dir
    }
}

pub fn msg_body(model: &str, stream: bool, text: &str) -> Value {
    json!({
        "model": model,
        "max_tokens": 64,
        "stream": stream,
        "messages": [{"role": "user", "content": text}],
    })
}

/// Wait until `f` holds, polling.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A second mock upstream that accepts the test's upstream key.
pub async fn extra_mock() -> MockUpstream {
    let m = MockUpstream::start().await.unwrap();
    m.state.accepted_keys.lock().push(UPSTREAM_KEY.into());
    m
}

/// Make every Messages/Responses request to `m` fail with `status`.
pub fn force(m: &MockUpstream, status: u16, retry_after: Option<u64>, message: &str) {
    *m.state.forced.lock() = Some(crs::mock::Forced {
        status,
        retry_after,
        message: message.into(),
    });
}

pub fn unforce(m: &MockUpstream) {
    *m.state.forced.lock() = None;
}

/// The latest request `m` received on `path`.
pub fn last_seen(m: &MockUpstream, path: &str) -> crs::mock::SeenRequest {
    m.state
        .seen
        .lock()
        .iter()
        .rev()
        .find(|s| s.path == path)
        .cloned()
        .unwrap_or_else(|| panic!("no request on {path}"))
}

impl Env {
    /// A key's all-time usage totals, after the ledger has written what it holds.
    pub async fn key_totals(&self, key_id: &str) -> crs::store::Counters {
        let st = self.crs.as_ref().unwrap().state.clone();
        st.ledger.flush().await;
        st.store
            .usage_get(&format!("t|k|{key_id}"))
            .unwrap()
            .expect("the key has usage")
    }
}

pub fn hits(m: &MockUpstream, path: &str) -> usize {
    m.state
        .seen
        .lock()
        .iter()
        .filter(|s| s.path == path)
        .count()
}

/// The value of `name` in a URL's query (as it stands in the URL, not decoded).
pub fn query_param(url: &str, name: &str) -> String {
    url.split(&format!("{name}="))
        .nth(1)
        .and_then(|s| s.split('&').next())
        .unwrap_or_else(|| panic!("{name} missing from {url}"))
        .to_owned()
}

/// (event name, data) of each SSE event of a stream (any other line is a failure).
pub fn sse_events(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = Value::Null;
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d)
                        .unwrap_or_else(|err| panic!("bad data {d:?}: {err}"));
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (name, data)
        })
        .collect()
}

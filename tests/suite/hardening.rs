//! What a careless client or a stranger with a key sends: model names that would bloat the
//! store or reach upstream URLs, keys in query strings, bodies past a key's concurrency, hang-ups
//! before the answer, beta flags the key may not use, a stalled token endpoint, absurd admin
//! input.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

#[tokio::test]
async fn odd_model_names_are_400s_and_never_reach_store_logs_or_urls() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (key_id, key) = env.create_key(json!({"name": "x"})).await;
    let long = "m".repeat(10_000);
    for model in [
        "claude-sonnet-\u{00e9}\u{4e2d}-20250929",
        long.as_str(),
        "a b",
        "x\ny",
    ] {
        let r = env
            .messages(&key, msg_body(model, false, "hi"))
            .send()
            .await
            .expect("an answer, not a dropped connection");
        assert_eq!(r.status(), 400, "{model:.40}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
    }
    assert!(env.mock.state.seen.lock().is_empty());
    // Nothing was recorded for them.
    let (s, v) = env
        .admin(
            Method::GET,
            &format!("/admin/api-keys/{key_id}/records"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().map_or(0, Vec::len), 0, "{v}");
    env.stop().await;
}

#[tokio::test]
async fn failed_requests_with_unknown_models_are_recorded_as_unknown() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (key_id, key) = env.create_key(json!({"name": "x"})).await;
    let r = env
        .messages(&key, msg_body("made-up-model-7", false, "mock:status=400"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (_, v) = env
        .admin(
            Method::GET,
            &format!("/admin/api-keys/{key_id}/records"),
            None,
        )
        .await;
    let recs = v["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(recs.len(), 1, "{v}");
    assert_eq!(recs[0]["model"], "unknown");
    env.stop().await;
}

#[tokio::test]
async fn gemini_model_paths_cannot_reach_other_upstream_endpoints() {
    let env = Env::start().await;
    env.create(
        "gemini-api-accounts",
        json!({"name": "g", "baseUrl": env.mock.url(), "apiKey": UPSTREAM_KEY}),
    )
    .await;
    let (_, key) = env.create_key(json!({"name": "x"})).await;
    for path in [
        "/gemini/v1beta/models/..%2F..%2Fv1beta%2FcachedContents%3Fx=:generateContent",
        "/gemini/v1beta/models/a%2F..%2F..%2Fx:generateContent",
    ] {
        let r = env
            .http
            .post(env.url(path))
            .header("x-goog-api-key", &key)
            .json(&json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
    }
    for s in env.mock.state.seen.lock().iter() {
        assert!(s.path.starts_with("/v1beta/models/"), "{}", s.path);
    }
    env.stop().await;
}

#[tokio::test]
async fn the_clients_key_never_goes_upstream_in_the_query() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "x"})).await;
    let r = env
        .http
        .post(env.url(&format!("/v1/messages?beta=true&key={key}")))
        .header("anthropic-version", "2023-06-01")
        .json(&msg_body("claude-sonnet-4-5-20250929", false, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    {
        let seen = env.mock.state.seen.lock();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].query.as_deref(), Some("beta=true"));
        for (_, v) in &seen[0].headers {
            assert!(!v.contains(&key), "the crs key went upstream in a header");
        }
    }
    env.stop().await;
}

/// A raw HTTP/1.1 request whose body is announced but not (yet) sent.
async fn open_request(env: &Env, key: &str, body_len: usize) -> tokio::net::TcpStream {
    let addr = env.url("").trim_start_matches("http://").to_owned();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-api-key: {key}\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s
}

async fn read_status(s: &mut tokio::net::TcpStream) -> Option<String> {
    read_status_within(s, Duration::from_secs(5)).await
}

async fn read_status_within(s: &mut tokio::net::TcpStream, wait: Duration) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(wait, s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    text.lines().next().map(str::to_owned)
}

#[tokio::test]
async fn a_key_at_its_concurrency_limit_is_refused_before_its_body_is_read() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env
        .create_key(json!({"name": "x", "concurrencyLimit": 1}))
        .await;
    // The first request holds the key's only slot while its body trickles in.
    let mut first = open_request(&env, &key, 50_000_000).await;
    first.write_all(b"{\"model\":").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The second announces 50 MB and sends none of it: the answer comes without it.
    let mut second = open_request(&env, &key, 50_000_000).await;
    let status = read_status(&mut second).await;
    assert_eq!(
        status.as_deref(),
        Some("HTTP/1.1 429 Too Many Requests"),
        "the refusal must not wait for the body"
    );
    drop(first);
    env.stop().await;
}

#[tokio::test]
async fn bodies_in_flight_are_bounded_across_keys() {
    let env = Env::start_with(|c| c.max_inflight_body_bytes = 1024 * 1024).await;
    env.create_account(json!({})).await;
    let (_, a) = env.create_key(json!({"name": "a"})).await;
    let (_, b) = env.create_key(json!({"name": "b"})).await;
    // Keys without concurrency limits: the first announces 900 KB and trickles it.
    let mut first = open_request(&env, &a, 900_000).await;
    first.write_all(b"{\"model\":").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The second does not fit beside it: after a short wait, 503, without its body read.
    let mut second = open_request(&env, &b, 900_000).await;
    let status = read_status_within(&mut second, Duration::from_secs(10)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 503 Service Unavailable"));
    // Once the first is gone, there is room again.
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = env
        .messages(&b, msg_body("claude-sonnet-4-5-20250929", false, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    env.stop().await;
}

#[tokio::test]
async fn a_running_stream_gives_its_body_room_back() {
    let env = Env::start_with(|c| c.max_inflight_body_bytes = 1024 * 1024).await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    // A 700 KB request whose answer streams for a few seconds: once the body went upstream it
    // is no longer held, so another 700 KB request fits beside the running stream.
    let padding = "x".repeat(700_000);
    let big = |stream: bool, directives: &str| {
        msg_body(
            "claude-sonnet-4-5-20250929",
            stream,
            &format!("{directives} {padding}"),
        )
    };
    // The stream runs for 8 s, longer than a request waits for room (5 s).
    let r = env
        .messages(&key, big(true, "mock:chunks=80 mock:delay_ms=100"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let first = futures_util::StreamExt::next(&mut stream).await;
    assert!(first.is_some_and(|c| c.is_ok()), "the stream started");
    let r = env.messages(&key, big(false, "")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let more = futures_util::StreamExt::next(&mut stream).await;
    assert!(more.is_some_and(|c| c.is_ok()), "the stream still runs");
    drop(stream);
    env.stop().await;
}

#[tokio::test]
async fn a_client_that_hangs_up_before_a_non_stream_answer_is_still_billed() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "x"})).await;
    let req = env
        .messages(
            &key,
            msg_body(
                "claude-sonnet-4-5-20250929",
                false,
                "mock:usage=120,45,0,0 mock:delay_ms=400",
            ),
        )
        .timeout(Duration::from_millis(100))
        .send()
        .await;
    assert!(req.is_err(), "the client gave up before the answer");
    eventually("the upstream answered", || {
        !env.mock.state.served.lock().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let u = env.usage(&key).await;
    assert_eq!(u["usage"]["total"]["requests"], 1, "{u}");
    assert_eq!(u["usage"]["total"]["inputTokens"], 120);
    assert_eq!(u["usage"]["total"]["outputTokens"], 45);
    env.stop().await;
}

#[tokio::test]
async fn the_1m_context_beta_reaches_upstream_only_for_keys_that_allow_it() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, plain) = env.create_key(json!({"name": "plain"})).await;
    let (_, long) = env
        .create_key(json!({"name": "long", "allow1mContext": true}))
        .await;
    for key in [&plain, &long] {
        let r = env
            .messages(key, msg_body("claude-sonnet-4-5-20250929", false, "hi"))
            .header(
                "anthropic-beta",
                "fine-grained-tool-streaming-2025-05-14,context-1m-2025-08-07",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let betas: Vec<String> = env
        .mock
        .state
        .seen
        .lock()
        .iter()
        .map(|s| s.header("anthropic-beta").unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        betas,
        vec![
            "fine-grained-tool-streaming-2025-05-14".to_owned(),
            "fine-grained-tool-streaming-2025-05-14,context-1m-2025-08-07".to_owned(),
        ]
    );
    env.stop().await;
}

#[tokio::test]
async fn count_tokens_counts_in_the_rate_window() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env
        .create_key(json!({"name": "x", "rateLimitWindow": 1, "rateLimitRequests": 1}))
        .await;
    let r = env
        .http
        .post(env.url("/api/v1/messages/count_tokens"))
        .header("x-api-key", &key)
        .json(&json!({"model": "claude-sonnet-4-5-20250929", "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    env.stop().await;
}

#[tokio::test]
async fn one_upstream_error_does_not_leave_a_key_without_an_account() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "x"})).await;
    let r = env
        .messages(
            &key,
            msg_body("claude-sonnet-4-5-20250929", false, "mock:status=500"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    // The only account is cooling down after the 500; the next request is still tried on it.
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    env.stop().await;
}

#[tokio::test]
async fn a_stalled_token_endpoint_fails_over_within_the_deadline() {
    // A token endpoint that accepts connections and never answers.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_url = format!("http://{}/v1/oauth/token", stall.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = stall.accept().await {
            conns.push(c);
        }
    });
    let env = Env::start_with(|c| {
        c.claude_oauth_token_url = stall_url;
        c.oauth_timeout = Duration::from_secs(1);
    })
    .await;
    // An OAuth account whose token is about to expire, preferred by priority; a console
    // account behind it.
    let expires = chrono::Utc::now().timestamp_millis() + 5_000;
    env.create(
        "claude-accounts",
        json!({"name": "oauth", "priority": 1, "apiUrl": env.mock.url(),
               "claudeAiOauth": {"accessToken": "at-1", "refreshToken": "rt-1", "expiresAt": expires}}),
    )
    .await;
    env.create_account(json!({"priority": 90})).await;
    let (_, key) = env.create_key(json!({"name": "x"})).await;
    let t = std::time::Instant::now();
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "served by the console account after the token deadline, not after a minute"
    );
    held.abort();
    env.stop().await;
}

#[tokio::test]
async fn admin_input_that_would_become_headers_or_hosts_is_checked() {
    let env = Env::start().await;
    for (body, field) in [
        (json!({"apiKey": "sk-ant-x\r\nx-evil: 1"}), "apiKey"),
        (
            json!({"apiKey": UPSTREAM_KEY, "userAgent": "ua\nx-evil: 1"}),
            "userAgent",
        ),
        (
            json!({"apiKey": UPSTREAM_KEY, "proxy": {"type": "http", "host": "a b/c@d:e", "port": 8080}}),
            "proxy.host",
        ),
    ] {
        let mut b = json!({"name": "c", "apiUrl": env.mock.url()});
        for (k, v) in body.as_object().unwrap() {
            b[k] = v.clone();
        }
        let (s, v) = env
            .admin(Method::POST, "/admin/claude-console-accounts", Some(b))
            .await;
        assert_eq!(s, 400, "{field}: {v}");
        assert!(v.to_string().contains(field), "{v}");
    }
    // Absurd paging is an empty page, not a crash.
    let (s, _) = env
        .admin(
            Method::GET,
            "/admin/api-keys?page=18446744073709551615&pageSize=1000",
            None,
        )
        .await;
    assert_eq!(s, 200);
    env.stop().await;
}

#[tokio::test]
async fn a_group_bound_through_any_binding_field_cannot_be_deleted() {
    let env = Env::start().await;
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/account-groups",
            Some(json!({"name": "az", "platform": "openai"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let gid = v["data"]["id"].as_str().unwrap().to_owned();
    env.create_key(json!({"name": "x", "azureOpenaiAccountId": format!("group:{gid}")}))
        .await;
    let (s, v) = env
        .admin(
            Method::DELETE,
            &format!("/admin/account-groups/{gid}"),
            None,
        )
        .await;
    assert_eq!(s, 400, "{v}");
    env.stop().await;
}

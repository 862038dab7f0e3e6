//! The Anthropic Messages relay end to end: crs in-process, a faithful mock upstream.

use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn non_stream_relay_forwards_the_account_credential_and_records_usage() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "alice"})).await;

    let r = env
        .messages(
            &key,
            msg_body(
                "claude-sonnet-4-5-20250929",
                false,
                "hi mock:usage=100,20,10,30",
            ),
        )
        .header("anthropic-beta", "prompt-caching-2024-07-31")
        .header("cookie", "session=secret")
        .header("x-forwarded-for", "10.0.0.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("request-id").is_some(),
        "upstream request-id is passed back"
    );
    assert!(
        r.headers()
            .get("anthropic-ratelimit-requests-limit")
            .is_some()
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["content"][0]["text"], "Hello from the mock upstream.");
    assert_eq!(body["usage"]["input_tokens"], 100);

    let seen = env.mock.state.seen.lock().clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.path, "/v1/messages");
    assert_eq!(s.header("x-api-key"), Some(UPSTREAM_KEY));
    assert_eq!(s.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        s.header("anthropic-beta"),
        Some("prompt-caching-2024-07-31")
    );
    assert_eq!(s.header("cookie"), None, "cookies stay at crs");
    assert_eq!(s.header("x-forwarded-for"), None);
    assert_eq!(
        s.header("accept-encoding"),
        Some("identity"),
        "the client's encodings stay here; the upstream is asked for plain bytes"
    );
    for (name, value) in &s.headers {
        assert!(
            !value.contains(&key),
            "client key leaked upstream in {name}"
        );
    }

    let u = env.usage(&key).await;
    let t = &u["usage"]["total"];
    assert_eq!(t["requests"], 1);
    assert_eq!(t["inputTokens"], 100);
    assert_eq!(t["outputTokens"], 20);
    assert_eq!(t["cacheCreateTokens"], 10);
    assert_eq!(t["cacheReadTokens"], 30);
    assert_eq!(t["allTokens"], 160);
    assert_eq!(u["usage"]["daily"]["requests"], 1);
    assert_eq!(u["usage"]["monthly"]["requests"], 1);
    env.stop().await;
}

#[tokio::test]
async fn stream_bytes_reach_the_client_unchanged() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "streamer"})).await;

    let r = env
        .messages(
            &key,
            msg_body(
                "claude-sonnet-4-5-20250929",
                true,
                "go mock:usage=110,21,10,0,4 mock:chunks=25",
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "SSE content type"
    );
    let got = r.bytes().await.unwrap();
    eventually("mock finished the stream", || {
        !env.mock.state.sent_streams.lock().is_empty()
    })
    .await;
    let sent = env.mock.state.sent_streams.lock()[0].clone();
    assert_eq!(got, sent, "client bytes must equal upstream bytes exactly");
    let text = String::from_utf8(got.to_vec()).unwrap();
    assert!(text.starts_with("event: message_start\n"));
    assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));

    let u = env.usage(&key).await;
    let t = &u["usage"]["total"];
    assert_eq!(t["requests"], 1);
    assert_eq!(t["inputTokens"], 110);
    assert_eq!(t["outputTokens"], 21);
    assert_eq!(t["cacheCreateTokens"], 10);
    assert_eq!(t["ephemeral1hTokens"], 4);
    assert_eq!(t["ephemeral5mTokens"], 6);
    env.stop().await;
}

#[tokio::test]
async fn usage_equals_what_the_upstream_served_across_many_requests() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "bulk"})).await;
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let req = env.messages(
            &key,
            msg_body(
                "claude-3-5-haiku-20241022",
                i % 2 == 0,
                &format!(
                    "n{i} mock:usage={},{},{},{}",
                    10 + i,
                    1 + i % 7,
                    i % 3,
                    i % 5
                ),
            ),
        );
        tasks.push(tokio::spawn(async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let served = env.mock.state.served_total();
    let u = env.usage(&key).await;
    let t = &u["usage"]["total"];
    assert_eq!(t["requests"], 40);
    assert_eq!(t["inputTokens"], served.input_tokens);
    assert_eq!(t["outputTokens"], served.output_tokens);
    assert_eq!(t["cacheCreateTokens"], served.cache_create_tokens);
    assert_eq!(t["cacheReadTokens"], served.cache_read_tokens);
    env.stop().await;
}

#[tokio::test]
async fn model_mapping_rewrites_the_model_and_usage_follows_the_upstream_model() {
    let env = Env::start().await;
    env.create_account(
        json!({"supportedModels": {"claude-sonnet-4-20250514": "claude-sonnet-4-5-20250929"}}),
    )
    .await;
    let (id, key) = env.create_key(json!({"name": "mapper"})).await;
    let r = env
        .messages(
            &key,
            msg_body("claude-sonnet-4-20250514", false, "x mock:usage=5,6,0,0"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = env.mock.state.seen.lock()[0].clone();
    let sent: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(
        sent["messages"][0]["content"], "x mock:usage=5,6,0,0",
        "rest of the body unchanged"
    );

    // The account does not serve other models: no account can take an opus request.
    let r = env
        .messages(&key, msg_body("claude-opus-4-1-20250805", false, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "overloaded_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("claude-opus-4-1-20250805")
    );

    // Usage is recorded under the model the upstream answered with.
    let st = env.crs.as_ref().unwrap().state.clone();
    st.ledger.flush().await;
    let per_model = st
        .store
        .usage_get(&format!("t|km|{id}|claude-sonnet-4-5-20250929"))
        .unwrap()
        .unwrap();
    assert_eq!(per_model.requests, 1);
    assert_eq!(per_model.output_tokens, 6);
    env.stop().await;
}

#[tokio::test]
async fn client_key_errors_use_v1_bodies() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let url = env.url("/api/v1/messages");
    let body = msg_body("claude-sonnet-4-5-20250929", false, "x");

    let r = env.http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "Missing API key", "message": "Please provide an API key in the x-api-key, x-goog-api-key, or Authorization header"})
    );
    let unknown = format!("cr_{}", "0".repeat(64));
    let r = env
        .http
        .post(&url)
        .header("x-api-key", &unknown)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "Invalid API key", "message": "API key not found"})
    );
    let r = env
        .http
        .post(&url)
        .bearer_auth("sk-wrong-prefix-123456")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "Invalid API key", "message": "Invalid API key format"})
    );

    // A disabled key, and an expired one.
    let (id, key) = env.create_key(json!({"name": "d"})).await;
    env.admin(
        Method::PUT,
        &format!("/admin/api-keys/{id}"),
        Some(json!({"isActive": false})),
    )
    .await;
    let r = env.messages(&key, body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "API key is disabled"
    );
    let (_, key) = env
        .create_key(json!({"name": "e", "expiresAt": "2020-01-01T00:00:00Z"}))
        .await;
    let r = env.messages(&key, body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "API key has expired"
    );

    // The key works from Authorization: Bearer too, and on every mount point.
    let (_, key) = env.create_key(json!({"name": "b"})).await;
    for path in ["/api/v1/messages", "/claude/v1/messages", "/v1/messages"] {
        let r = env
            .http
            .post(env.url(path))
            .bearer_auth(&key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    assert!(
        env.mock.state.seen.lock().len() == 3,
        "rejected requests never reach the upstream"
    );
    env.stop().await;
}

#[tokio::test]
async fn bad_bodies_get_anthropic_400s() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "x"})).await;
    let url = env.url("/v1/messages");
    for (body, needle) in [
        ("{not json", "JSON"),
        ("[1,2]", "JSON"),
        ("{\"max_tokens\":1}", "model"),
        ("", "JSON"),
    ] {
        let r = env
            .http
            .post(&url)
            .header("x-api-key", &key)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{v}"
        );
    }
    assert!(env.mock.state.seen.lock().is_empty());
    env.stop().await;
}

#[tokio::test]
async fn upstream_errors_reach_the_client_in_anthropic_format() {
    let env = Env::start().await;
    let acc = env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "x"})).await;
    let reset = || async {
        let (s, _) = env
            .admin(
                Method::POST,
                &format!("/admin/claude-console-accounts/{acc}/reset-status"),
                None,
            )
            .await;
        assert_eq!(s, 200);
    };
    // With a single account there is nowhere to fail over: the upstream's error is relayed.
    let r = env
        .messages(
            &key,
            msg_body("claude-sonnet-4-5-20250929", false, "mock:status=429"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "30");
    assert!(
        r.headers()
            .get("anthropic-ratelimit-requests-reset")
            .is_some()
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    // The account now cools down until its reset: no account is available.
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "overloaded_error"
    );
    let (_, v) = env
        .admin(
            Method::GET,
            &format!("/admin/claude-console-accounts/{acc}"),
            None,
        )
        .await;
    assert!(
        v["data"]["cooldownReason"]
            .as_str()
            .unwrap()
            .contains("429")
    );
    reset().await;

    // A stream request that fails upstream is an error body, not an SSE stream.
    let r = env
        .messages(
            &key,
            msg_body("claude-sonnet-4-5-20250929", true, "mock:status=529"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 529);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "overloaded_error"
    );
    reset().await;

    // A wrong upstream credential: the upstream's 401 body is relayed and the account is
    // marked as needing attention.
    env.mock.state.accepted_keys.lock().clear();
    env.mock
        .state
        .accepted_keys
        .lock()
        .push("sk-ant-something-else".into());
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "authentication_error"
    );
    let mut status = Value::Null;
    for _ in 0..100 {
        let (_, v) = env
            .admin(
                Method::GET,
                &format!("/admin/claude-console-accounts/{acc}"),
                None,
            )
            .await;
        status = v["data"]["status"].clone();
        if status == "unauthorized" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "unauthorized");

    // Nothing was served, nothing is billed; the failures are counted.
    let u = env.usage(&key).await;
    assert_eq!(u["usage"]["total"]["requests"], 0);
    env.stop().await;
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_in_anthropic_format() {
    let env = Env::start().await;
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (s, _) = env
        .admin(
            Method::POST,
            "/admin/claude-console-accounts",
            Some(json!({"name": "dead", "apiUrl": format!("http://127.0.0.1:{port}"), "apiKey": "sk-ant-x"})),
        )
        .await;
    assert_eq!(s, 200);
    let (_, key) = env.create_key(json!({"name": "x"})).await;
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
    env.stop().await;
}

#[tokio::test]
async fn upstream_cut_mid_stream_ends_with_a_well_formed_error_event() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "x"})).await;
    let r = env
        .messages(
            &key,
            msg_body(
                "claude-sonnet-4-5-20250929",
                true,
                "mock:cut mock:usage=50,9,0,0 mock:chunks=6 mock:delay_ms=30",
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = String::from_utf8(r.bytes().await.unwrap().to_vec()).unwrap();
    assert!(text.starts_with("event: message_start"));
    let tail = text.rsplit("event: ").next().unwrap();
    assert!(tail.starts_with("error\ndata: "), "{text}");
    let data: Value =
        serde_json::from_str(tail.trim_start_matches("error\ndata: ").trim()).unwrap();
    assert_eq!(data["type"], "error");
    assert!(text.ends_with("\n\n"));
    // The input the upstream billed is still recorded.
    let u = env.usage(&key).await;
    assert_eq!(u["usage"]["total"]["requests"], 1);
    assert_eq!(u["usage"]["total"]["inputTokens"], 50);
    env.stop().await;
}

#[tokio::test]
async fn client_disconnect_mid_stream_cancels_the_upstream() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "x"})).await;
    let r = env
        .messages(
            &key,
            msg_body(
                "claude-sonnet-4-5-20250929",
                true,
                "mock:usage=70,40,0,0 mock:chunks=200 mock:delay_ms=20",
            ),
        )
        .send()
        .await
        .unwrap();
    let mut s = r.bytes_stream();
    let first = s.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    drop(s);
    eventually("upstream stream dropped", || {
        env.mock
            .state
            .streams_dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    assert_eq!(
        env.mock
            .state
            .streams_completed
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // Input tokens were billed by the upstream when it started: they are recorded.
    let u = env.usage(&key).await;
    assert_eq!(u["usage"]["total"]["requests"], 1);
    assert_eq!(u["usage"]["total"]["inputTokens"], 70);
    assert!(u["usage"]["total"]["outputTokens"].as_u64().unwrap() < 40);
    env.stop().await;
}

#[tokio::test]
async fn client_hanging_up_after_the_upstream_finished_is_billed_in_full() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "x"})).await;
    let r = env
        .messages(
            &key,
            msg_body(
                "claude-sonnet-4-5-20250929",
                true,
                "mock:usage=80,33,0,0 mock:chunks=3",
            ),
        )
        .send()
        .await
        .unwrap();
    // Read nothing of the body; wait until the upstream has sent everything, then hang up.
    eventually("upstream finished", || {
        env.mock
            .state
            .streams_completed
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(r);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let u = env.usage(&key).await;
    assert_eq!(u["usage"]["total"]["requests"], 1);
    assert_eq!(u["usage"]["total"]["outputTokens"], 33);
    env.stop().await;
}

#[tokio::test]
async fn count_tokens_is_relayed_and_not_billed() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "x"})).await;
    let r = env
        .http
        .post(env.url("/api/v1/messages/count_tokens"))
        .header("x-api-key", &key)
        .json(&json!({"model": "claude-sonnet-4-5-20250929", "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        env.mock.state.seen.lock()[0].path,
        "/v1/messages/count_tokens"
    );
    assert_eq!(env.usage(&key).await["usage"]["total"]["requests"], 0);
    env.stop().await;
}

#[tokio::test]
async fn info_routes() {
    let env = Env::start().await;
    let (id, key) = env
        .create_key(json!({"name": "info", "tokenLimit": 1000}))
        .await;
    let h: Value = env
        .http
        .get(env.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(h["components"]["store"]["status"], "healthy");

    let r = env
        .http
        .get(env.url("/api/v1/models"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    let m: Value = r.json().await.unwrap();
    assert!(
        m["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == "claude-sonnet-4-5-20250929")
    );
    let r = env.http.get(env.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let r = env
        .http
        .get(env.url("/api/v1/key-info"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["keyInfo"]["id"], id.as_str());
    assert_eq!(v["keyInfo"]["tokenLimit"], 1000);
    assert_eq!(v["keyInfo"]["usage"]["total"]["requests"], 0);

    let r = env
        .http
        .get(env.url("/api/v1/me"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["display_name"], "info");

    let r = env
        .http
        .post(env.url("/api/event_logging/batch"))
        .json(&json!({"events": [1, 2, 3]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = env
        .http
        .get(env.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "Not Found");
    env.stop().await;
}

#[tokio::test]
async fn keys_accounts_and_usage_survive_a_restart() {
    let mut env = Env::start().await;
    let acc = env.create_account(json!({"name": "persist"})).await;
    let (id, key) = env
        .create_key(json!({"name": "persist", "tags": ["t1"]}))
        .await;
    for stream in [false, true] {
        let r = env
            .messages(
                &key,
                msg_body("claude-sonnet-4-5-20250929", stream, "mock:usage=11,22,3,4"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let before = env.usage(&key).await["usage"]["total"].clone();
    env.restart().await;
    let after = env.usage(&key).await["usage"]["total"].clone();
    assert_eq!(before, after);
    assert_eq!(after["requests"], 2);
    let (s, v) = env
        .admin(Method::GET, &format!("/admin/api-keys/{id}"), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["tags"], json!(["t1"]));
    let (_, v) = env
        .admin(Method::GET, "/admin/claude-console-accounts", None)
        .await;
    assert_eq!(v["data"][0]["id"], acc.as_str());
    assert_eq!(v["data"][0]["usage"]["total"]["requests"], 2);
    // And the key still relays through the account (its secret decrypts after restart).
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "again"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    env.stop().await;
}

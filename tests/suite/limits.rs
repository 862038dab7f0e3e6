//! Key policy and limits on the Claude routes: each rule with its exact status and body.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

const SONNET: &str = "claude-sonnet-4-5-20250929";

async fn send(env: &Env, key: &str, body: Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = env.messages(key, body).send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, v)
}

async fn key_view(env: &Env, id: &str) -> Value {
    let (s, v) = env
        .admin(Method::GET, &format!("/admin/api-keys/{id}"), None)
        .await;
    assert_eq!(s, 200);
    v["data"].clone()
}

#[tokio::test]
async fn permissions_are_checked_by_route() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env
        .create_key(json!({"name": "g", "permissions": ["gemini"]}))
        .await;
    let (s, _, v) = send(&env, &key, msg_body(SONNET, false, "x")).await;
    assert_eq!(s, 403);
    assert_eq!(
        v,
        json!({"error": {"type": "permission_error", "message": "This API key does not have permission to access Claude"}})
    );
    let r = env
        .http
        .post(env.url("/api/v1/messages/count_tokens"))
        .header("x-api-key", &key)
        .json(&msg_body(SONNET, false, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "count_tokens is a Claude route too");
    let (_, key) = env
        .create_key(json!({"name": "c", "permissions": ["claude", "openai"]}))
        .await;
    assert_eq!(send(&env, &key, msg_body(SONNET, false, "x")).await.0, 200);
    assert_eq!(env.mock.state.seen.lock().len(), 1);
    env.stop().await;
}

#[tokio::test]
async fn model_restriction_deny_and_allow_lists_compare_normalised_names() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, deny) = env
        .create_key(json!({"name": "deny", "enableModelRestriction": true, "restrictedModels": ["claude-opus-4-1-20250805"]}))
        .await;
    for m in [
        "claude-opus-4-1-20250805",
        "anthropic/claude-opus-4-1",
        "claude-opus-4-1[1m]",
    ] {
        let (s, _, v) = send(&env, &deny, msg_body(m, false, "x")).await;
        assert_eq!(s, 403, "{m}");
        assert_eq!(v["error"]["type"], "forbidden");
        assert!(v["error"]["message"].as_str().unwrap().contains(m));
    }
    assert_eq!(send(&env, &deny, msg_body(SONNET, false, "x")).await.0, 200);

    let (_, allow) = env
        .create_key(
            json!({"name": "allow", "enableModelRestriction": true, "modelRestrictionMode": "allow",
                           "restrictedModels": ["claude-sonnet-4-5"]}),
        )
        .await;
    assert_eq!(
        send(&env, &allow, msg_body(SONNET, false, "x")).await.0,
        200
    );
    assert_eq!(
        send(
            &env,
            &allow,
            msg_body("claude-opus-4-1-20250805", false, "x")
        )
        .await
        .0,
        403
    );
    // The restriction only applies when enabled.
    let (_, off) = env
        .create_key(
            json!({"name": "off", "enableModelRestriction": false, "restrictedModels": [SONNET]}),
        )
        .await;
    assert_eq!(send(&env, &off, msg_body(SONNET, false, "x")).await.0, 200);
    env.stop().await;
}

#[tokio::test]
async fn client_restriction_by_user_agent_and_protocol_headers() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env
        .create_key(json!({"name": "cc", "enableClientRestriction": true, "allowedClients": ["claude_code", "MyTool/*"]}))
        .await;
    let r = env
        .messages(&key, msg_body(SONNET, false, "x"))
        .header("user-agent", "curl/7.88.1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"error": "Client not allowed", "message": "Your client is not authorized to use this API key",
               "allowedClients": ["claude_code", "MyTool/*"], "userAgent": "curl/7.88.1"})
    );
    for ua in [
        "claude-cli/2.1.197 (external, cli)",
        "claude-cli/9.0.0 (external, sdk-ts)",
        "MyTool/3.1 linux",
    ] {
        let r = env
            .messages(&key, msg_body(SONNET, false, "x"))
            .header("user-agent", ua)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{ua}");
    }
    let r = env
        .messages(&key, msg_body(SONNET, false, "x"))
        .header("user-agent", "node")
        .header("x-app", "cli")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "Claude Code's x-app header");
    env.stop().await;
}

#[tokio::test]
async fn rate_window_counts_only_admitted_requests() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (id, key) = env
        .create_key(json!({"name": "rl", "rateLimitWindow": 60, "rateLimitRequests": 3,
                           "enableModelRestriction": true, "restrictedModels": ["claude-opus-4-1"]}))
        .await;
    // Rejected requests do not use up the window.
    for _ in 0..3 {
        assert_eq!(
            send(&env, &key, msg_body("claude-opus-4-1", false, "x"))
                .await
                .0,
            403
        );
    }
    for _ in 0..3 {
        assert_eq!(send(&env, &key, msg_body(SONNET, false, "x")).await.0, 200);
    }
    let (s, h, v) = send(&env, &key, msg_body(SONNET, false, "x")).await;
    assert_eq!(s, 429);
    let retry: i64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((3500..=3600).contains(&retry), "{retry}");
    assert_eq!(v["error"], "Rate limit exceeded");
    assert_eq!(v["currentRequests"], 3);
    assert_eq!(v["requestLimit"], 3);
    assert_eq!(v["remainingMinutes"], 60);
    let reset = chrono::DateTime::parse_from_rfc3339(v["resetAt"].as_str().unwrap()).unwrap();
    let in_secs = (reset.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_seconds();
    assert!((3500..=3600).contains(&in_secs));
    assert_eq!(env.mock.state.seen.lock().len(), 3);
    let view = key_view(&env, &id).await;
    assert_eq!(view["currentWindowRequests"], 3);
    env.stop().await;
}

#[tokio::test]
async fn rate_window_tokens_and_cost() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env
        .create_key(json!({"name": "tok", "rateLimitWindow": 10, "tokenLimit": 1000}))
        .await;
    assert_eq!(
        send(
            &env,
            &key,
            msg_body(SONNET, false, "mock:usage=600,300,50,50")
        )
        .await
        .0,
        200
    );
    let (s, h, v) = send(&env, &key, msg_body(SONNET, false, "x")).await;
    assert_eq!(s, 429);
    assert!(h.get("retry-after").is_some());
    assert_eq!(v["currentTokens"], 1000);
    assert_eq!(v["tokenLimit"], 1000);
    assert_eq!(v["remainingMinutes"], 10);

    // $3/MTok in, $15/MTok out for Sonnet 4.5: 1000 in + 1000 out = $0.018.
    let (_, key) = env
        .create_key(json!({"name": "cost", "rateLimitWindow": 10, "rateLimitCost": 0.01}))
        .await;
    assert_eq!(
        send(
            &env,
            &key,
            msg_body(SONNET, true, "mock:usage=1000,1000,0,0")
        )
        .await
        .0,
        200
    );
    let (s, _, v) = send(&env, &key, msg_body(SONNET, false, "x")).await;
    assert_eq!(s, 429);
    assert_eq!(v["currentCost"], 0.018);
    assert_eq!(v["costLimit"], 0.01);
    env.stop().await;
}

#[tokio::test]
async fn cost_limits_answer_402_with_v1_codes() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    // 1M input tokens of Sonnet 4.5 = $3.00.
    let big = "mock:usage=1000000,0,0,0";
    let cases = [
        ("dailyCostLimit", "daily_cost_limit_exceeded", true),
        ("totalCostLimit", "total_cost_limit_exceeded", false),
        (
            "weeklyOpusCostLimit",
            "weekly_opus_cost_limit_exceeded",
            true,
        ),
        ("fiveHourCostLimit", "five_hour_cost_limit_exceeded", true),
    ];
    for (field, code, has_reset) in cases {
        let (_, key) = env.create_key(json!({"name": field, field: 2.5})).await;
        assert_eq!(
            send(&env, &key, msg_body(SONNET, false, big)).await.0,
            200,
            "{field}"
        );
        let (s, _, v) = send(&env, &key, msg_body(SONNET, false, "x")).await;
        assert_eq!(s, 402, "{field}");
        assert_eq!(v["error"]["type"], "insufficient_quota");
        assert_eq!(v["error"]["code"], code);
        assert_eq!(v["currentCost"], 3.0);
        assert_eq!(v["costLimit"], 2.5);
        assert_eq!(v.get("resetAt").is_some(), has_reset, "{field}: {v}");
    }
    // The weekly limit counts and blocks Claude models only; service rates scale the cost.
    let (_, key) = env
        .create_key(json!({"name": "rated", "dailyCostLimit": 5, "serviceRates": {"claude": 2.0}}))
        .await;
    assert_eq!(send(&env, &key, msg_body(SONNET, false, big)).await.0, 200);
    let (s, _, v) = send(&env, &key, msg_body(SONNET, false, "x")).await;
    assert_eq!(s, 402);
    assert_eq!(
        v["currentCost"], 6.0,
        "rated cost = real cost x service rate"
    );
    env.stop().await;
}

#[tokio::test]
async fn cost_limits_survive_a_restart() {
    let mut env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env
        .create_key(json!({"name": "k", "dailyCostLimit": 1, "totalCostLimit": 100}))
        .await;
    assert_eq!(
        send(
            &env,
            &key,
            msg_body(SONNET, false, "mock:usage=1000000,0,0,0")
        )
        .await
        .0,
        200
    );
    env.restart().await;
    let (s, _, v) = send(&env, &key, msg_body(SONNET, false, "x")).await;
    assert_eq!(s, 402);
    assert_eq!(v["error"]["code"], "daily_cost_limit_exceeded");
    assert_eq!(v["currentCost"], 3.0);
    env.stop().await;
}

/// Limits are configured in micro-dollars and compared with the exact spend: three requests
/// of 330.4 micro-dollars (413 Haiku 3.5 input tokens) reach a $0.000991 limit, before and
/// after a restart (the meter rebuilt from the usage buckets). Rounded per request they
/// counted 990 and let a fourth through.
#[tokio::test]
async fn cost_limits_trip_at_the_configured_micro_dollars_on_exact_spend() {
    let mut env = Env::start().await;
    env.create_account(json!({})).await;
    let haiku = "claude-3-5-haiku-20241022";
    let mut keys = Vec::new();
    for (field, code) in [
        ("dailyCostLimit", "daily_cost_limit_exceeded"),
        ("totalCostLimit", "total_cost_limit_exceeded"),
        ("weeklyOpusCostLimit", "weekly_opus_cost_limit_exceeded"),
        ("fiveHourCostLimit", "five_hour_cost_limit_exceeded"),
    ] {
        let (_, key) = env
            .create_key(json!({"name": field, field: 0.000991}))
            .await;
        for i in 0..3 {
            let (s, _, v) = send(&env, &key, msg_body(haiku, i == 1, "mock:usage=413,0,0,0")).await;
            assert_eq!(s, 200, "{field} request {i}: {v}");
        }
        keys.push((key, code));
    }
    for round in ["before", "after"] {
        for (key, code) in &keys {
            let (s, _, v) = send(&env, key, msg_body(haiku, false, "x")).await;
            assert_eq!(s, 402, "{code} {round} the restart: {v}");
            assert_eq!(v["error"]["code"], *code);
            assert_eq!(v["currentCost"], 0.0009912, "{code} {round}");
            assert_eq!(v["costLimit"], 0.000991);
        }
        if round == "before" {
            env.restart().await;
        }
    }
    // The rate window's cost limit too.
    let (_, key) = env
        .create_key(json!({"name": "window", "rateLimitWindow": 10, "rateLimitCost": 0.000991}))
        .await;
    for _ in 0..3 {
        assert_eq!(
            send(&env, &key, msg_body(haiku, false, "mock:usage=413,0,0,0"))
                .await
                .0,
            200
        );
    }
    let (s, _, v) = send(&env, &key, msg_body(haiku, false, "x")).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["currentCost"], 0.0009912);
    assert_eq!(v["costLimit"], 0.000991);
    env.stop().await;
}

#[tokio::test]
async fn activation_starts_on_the_first_admitted_request() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (id, key) = env
        .create_key(json!({"name": "act", "expirationMode": "activation", "activationDays": 3, "activationUnit": "hours",
                           "enableModelRestriction": true, "restrictedModels": ["claude-opus-4-1"]}))
        .await;
    // A refused request does not activate the key.
    assert_eq!(
        send(&env, &key, msg_body("claude-opus-4-1", false, "x"))
            .await
            .0,
        403
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let v = key_view(&env, &id).await;
    assert_eq!(v["isActivated"], false);
    assert!(v["expiresAt"].is_null());
    let before = chrono::Utc::now();
    assert_eq!(send(&env, &key, msg_body(SONNET, false, "x")).await.0, 200);
    let mut v = Value::Null;
    for _ in 0..100 {
        v = key_view(&env, &id).await;
        if v["isActivated"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(v["isActivated"], true);
    let activated =
        chrono::DateTime::parse_from_rfc3339(v["activatedAt"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(v["expiresAt"].as_str().unwrap()).unwrap();
    assert_eq!((expires - activated).num_hours(), 3);
    assert!(activated.with_timezone(&chrono::Utc) >= before - chrono::Duration::seconds(1));
    // Expired activation-mode key.
    let (_, key) = env
        .create_key(json!({"name": "old", "expirationMode": "activation", "activationDays": 1}))
        .await;
    assert_eq!(send(&env, &key, msg_body(SONNET, false, "x")).await.0, 200);
    env.stop().await;
}

#[tokio::test]
async fn concurrency_limit_rejects_or_queues_and_releases_slots() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (id, key) = env
        .create_key(json!({"name": "one", "concurrencyLimit": 1}))
        .await;
    let slow = env
        .messages(
            &key,
            msg_body(SONNET, true, "mock:chunks=20 mock:delay_ms=25"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(key_view(&env, &id).await["currentConcurrency"], 1);
    let (s, h, v) = send(&env, &key, msg_body(SONNET, false, "x")).await;
    assert_eq!(s, 429);
    assert_eq!(h["retry-after"], "1");
    assert_eq!(
        v,
        json!({"error": "Concurrency limit exceeded", "message": "Too many concurrent requests. Limit: 1 concurrent requests",
               "currentConcurrency": 1, "concurrencyLimit": 1})
    );
    slow.bytes().await.unwrap();
    eventually_async(|| async { key_view(&env, &id).await["currentConcurrency"] == 0 }).await;
    assert_eq!(send(&env, &key, msg_body(SONNET, false, "x")).await.0, 200);

    // With a queue the second request waits for the slot instead.
    let (_, key) = env
        .create_key(
            json!({"name": "q", "concurrencyLimit": 1, "concurrencyQueueEnabled": true,
                           "concurrencyQueueMax": 1, "concurrencyQueueTimeoutMs": 5000}),
        )
        .await;
    let slow = env
        .messages(
            &key,
            msg_body(SONNET, true, "mock:chunks=10 mock:delay_ms=20"),
        )
        .send()
        .await
        .unwrap();
    let queued = tokio::spawn(env.messages(&key, msg_body(SONNET, false, "x")).send());
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The queue holds one: a third request is refused at once.
    let (s, _, v) = send(&env, &key, msg_body(SONNET, false, "x")).await;
    assert_eq!(s, 429);
    assert_eq!(v["error"], "Concurrency queue full");
    slow.bytes().await.unwrap();
    assert_eq!(queued.await.unwrap().unwrap().status(), 200);

    // A waiter that cannot get a slot in time gives up with a 429.
    let (_, key) = env
        .create_key(
            json!({"name": "t", "concurrencyLimit": 1, "concurrencyQueueEnabled": true,
                           "concurrencyQueueTimeoutMs": 100}),
        )
        .await;
    let slow = env
        .messages(
            &key,
            msg_body(SONNET, true, "mock:chunks=10 mock:delay_ms=50"),
        )
        .send()
        .await
        .unwrap();
    let (s, _, v) = send(&env, &key, msg_body(SONNET, false, "x")).await;
    assert_eq!(s, 429);
    assert_eq!(v["error"], "Queue timeout");
    drop(slow);
    env.stop().await;
}

async fn eventually_async<F, Fut>(mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(std::time::Instant::now() < deadline, "condition never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// 1,000 requests on a key limited to 8 concurrent (queue on), a third of them hanging up
/// mid-stream: every slot comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_requests_with_disconnects_leave_no_slot_held() {
    let env = Env::start().await;
    env.mock.state.record.store(false, Ordering::Relaxed);
    env.create_account(json!({})).await;
    let (id, key) = env
        .create_key(
            json!({"name": "busy", "concurrencyLimit": 8, "concurrencyQueueEnabled": true,
                           "concurrencyQueueMax": 1000, "concurrencyQueueTimeoutMs": 60000}),
        )
        .await;
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for i in 0..1000u32 {
        let req = env.messages(
            &key,
            msg_body(
                SONNET,
                i % 3 != 1,
                if i % 3 == 0 {
                    "mock:chunks=30 mock:delay_ms=2"
                } else {
                    "mock:chunks=3"
                },
            ),
        );
        let permit = sem.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let _p = permit;
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            if i % 3 == 0 {
                // Hang up after the first chunk.
                let mut s = r.bytes_stream();
                let _ = s.next().await;
                drop(s);
            } else {
                r.bytes().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let st = env.crs.as_ref().unwrap().state.clone();
    let rt = st.keys.load().by_id[&id].rt.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while rt.in_flight() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} slots still held",
            rt.in_flight()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rt.gate.load().waiting(), 0);
    assert!(
        env.mock.state.streams_dropped.load(Ordering::Relaxed) > 0,
        "some streams were cut short"
    );
    env.stop().await;
}

//! Scheduling and failover across accounts: priority, round robin, stickiness, cooldowns,
//! concurrency caps, groups.

use std::collections::HashSet;
use std::time::Duration;

use crate::common::*;
use reqwest::Method;
use serde_json::{Value, json};

const SONNET: &str = "claude-sonnet-4-5-20250929";

fn console(name: &str, url: &str, priority: u32) -> Value {
    json!({"name": name, "apiUrl": url, "apiKey": UPSTREAM_KEY, "priority": priority})
}

async fn ok(env: &Env, key: &str, body: Value) -> reqwest::Response {
    let r = env.messages(key, body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r
}

/// The preferred account answers 429: the client never sees it, and the account stays out of
/// rotation until its reset time, then comes back.
#[tokio::test]
async fn a_rate_limited_preferred_account_is_invisible_and_rests_until_its_reset() {
    let env = Env::start().await;
    let preferred = extra_mock().await;
    let backup = extra_mock().await;
    let pid = env
        .create(
            "claude-console-accounts",
            console("preferred", &preferred.url(), 10),
        )
        .await;
    env.create(
        "claude-console-accounts",
        console("backup", &backup.url(), 90),
    )
    .await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;

    force(
        &preferred,
        429,
        Some(2),
        "Number of request tokens has exceeded your per-minute rate limit",
    );
    for stream in [false, true] {
        let r = ok(&env, &key, msg_body(SONNET, stream, "mock:usage=10,5,0,0")).await;
        let body = r.text().await.unwrap();
        assert!(body.contains("Hello from the mock upstream."));
    }
    assert_eq!(
        hits(&preferred, "/v1/messages"),
        1,
        "tried once, then cooling down"
    );
    assert_eq!(hits(&backup, "/v1/messages"), 2);
    let (_, v) = env
        .admin(
            Method::GET,
            &format!("/admin/claude-console-accounts/{pid}"),
            None,
        )
        .await;
    assert!(v["data"]["cooldownUntil"].is_string());
    // Still cooling: the preferred account is skipped without being asked.
    unforce(&preferred);
    ok(&env, &key, msg_body(SONNET, false, "x")).await;
    assert_eq!(hits(&preferred, "/v1/messages"), 1);
    // After the reset it is preferred again (for a new conversation: existing ones keep
    // their account for prompt-cache affinity).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    ok(&env, &key, msg_body(SONNET, false, "a new conversation")).await;
    assert_eq!(hits(&preferred, "/v1/messages"), 2);
    // The failed attempt is counted as an error on the account; usage only where served.
    let (_, v) = env.admin(Method::GET, "/admin/dashboard", None).await;
    assert_eq!(v["data"]["today"]["errors"], 1);
    assert_eq!(v["data"]["today"]["requests"], 4);
    env.stop().await;
}

#[tokio::test]
async fn overload_server_errors_and_dead_upstreams_fail_over() {
    let env = Env::start().await;
    let flaky = extra_mock().await;
    let good = extra_mock().await;
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.create(
        "claude-console-accounts",
        console("dead", &format!("http://127.0.0.1:{dead_port}"), 5),
    )
    .await;
    let fid = env
        .create(
            "claude-console-accounts",
            console("flaky", &flaky.url(), 10),
        )
        .await;
    env.create("claude-console-accounts", console("good", &good.url(), 90))
        .await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    force(&flaky, 529, None, "Overloaded");
    ok(&env, &key, msg_body(SONNET, false, "x")).await;
    assert_eq!(hits(&flaky, "/v1/messages"), 1);
    assert_eq!(hits(&good, "/v1/messages"), 1);
    // 529 cools down briefly and never disables the account.
    let (_, v) = env
        .admin(
            Method::GET,
            &format!("/admin/claude-console-accounts/{fid}"),
            None,
        )
        .await;
    assert_eq!(v["data"]["status"], "active");
    assert_eq!(v["data"]["schedulable"], true);
    assert!(
        v["data"]["cooldownReason"]
            .as_str()
            .unwrap()
            .contains("529")
    );
    // Attempts are bounded: with every account failing the client gets the last error.
    force(&good, 500, None, "Internal server error");
    let (s, _) = env
        .admin(
            Method::POST,
            &format!("/admin/claude-console-accounts/{fid}/reset-status"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    let r = env
        .messages(&key, msg_body(SONNET, false, "x"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    env.stop().await;
}

#[tokio::test]
async fn model_specific_errors_cool_down_only_that_model() {
    let env = Env::start().await;
    let a = extra_mock().await;
    let b = extra_mock().await;
    env.create("claude-console-accounts", console("a", &a.url(), 10))
        .await;
    env.create("claude-console-accounts", console("b", &b.url(), 90))
        .await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    force(
        &a,
        429,
        Some(60),
        "This request would exceed the rate limit for claude-opus-4-1-20250805 output tokens",
    );
    ok(&env, &key, msg_body("claude-opus-4-1-20250805", false, "x")).await;
    assert_eq!((hits(&a, "/v1/messages"), hits(&b, "/v1/messages")), (1, 1));
    unforce(&a);
    // Sonnet still goes to the preferred account; Opus avoids it.
    ok(&env, &key, msg_body(SONNET, false, "sonnet conversation")).await;
    assert_eq!(hits(&a, "/v1/messages"), 2);
    ok(&env, &key, msg_body("claude-opus-4-1-20250805", false, "y")).await;
    assert_eq!(hits(&b, "/v1/messages"), 2);
    env.stop().await;
}

/// Ten requests of one session land on one account; without a session, round robin spreads.
#[tokio::test]
async fn a_session_sticks_to_its_account_across_requests_and_restarts() {
    let mut env = Env::start().await;
    let mocks = [extra_mock().await, extra_mock().await, extra_mock().await];
    for (i, m) in mocks.iter().enumerate() {
        env.create(
            "claude-console-accounts",
            console(&format!("acc{i}"), &m.url(), 50),
        )
        .await;
    }
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    let used = |mocks: &[crs::mock::MockUpstream; 3]| -> Vec<usize> {
        mocks.iter().map(|m| hits(m, "/v1/messages")).collect()
    };

    let session = "user_0f3c_account__session_6f1c2a4e-1111-4c2b-9d3e-123456789abc";
    for i in 0..10 {
        let mut b = msg_body(SONNET, i % 2 == 0, &format!("turn {i}"));
        b["metadata"] = json!({"user_id": session});
        ok(&env, &key, b).await.bytes().await.unwrap();
    }
    let counts = used(&mocks);
    assert_eq!(counts.iter().filter(|c| **c > 0).count(), 1, "{counts:?}");
    let sticky_idx = counts.iter().position(|c| *c == 10).unwrap();

    // Different conversations (no session id; different first messages) spread out.
    let before = used(&mocks);
    for i in 0..9 {
        ok(
            &env,
            &key,
            msg_body(SONNET, false, &format!("conversation {i}")),
        )
        .await;
    }
    let after = used(&mocks);
    let spread: HashSet<usize> = (0..3).filter(|i| after[*i] > before[*i]).collect();
    assert!(
        spread.len() >= 2,
        "round robin should use several accounts: {before:?} -> {after:?}"
    );

    // The mapping survives a restart (prompt-cache affinity).
    env.restart().await;
    let before = used(&mocks);
    for _ in 0..3 {
        let mut b = msg_body(SONNET, false, "after restart");
        b["metadata"] = json!({"user_id": session});
        ok(&env, &key, b).await;
    }
    let after = used(&mocks);
    assert_eq!(
        after[sticky_idx] - before[sticky_idx],
        3,
        "{before:?} -> {after:?}"
    );

    // Header and prompt_cache_key sessions work as well.
    let r = env
        .messages(&key, msg_body(SONNET, false, "h1"))
        .header("x-session-affinity", "pinned")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    env.stop().await;
}

#[tokio::test]
async fn a_busy_account_is_skipped_at_its_concurrency_cap() {
    let env = Env::start().await;
    let a = extra_mock().await;
    let b = extra_mock().await;
    let mut body = console("a", &a.url(), 10);
    body["maxConcurrentTasks"] = json!(1);
    env.create("claude-console-accounts", body).await;
    env.create("claude-console-accounts", console("b", &b.url(), 90))
        .await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    let slow = ok(
        &env,
        &key,
        msg_body(SONNET, true, "mock:chunks=10 mock:delay_ms=30"),
    )
    .await;
    ok(&env, &key, msg_body(SONNET, false, "x")).await;
    assert_eq!((hits(&a, "/v1/messages"), hits(&b, "/v1/messages")), (1, 1));
    slow.bytes().await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    ok(&env, &key, msg_body(SONNET, false, "another conversation")).await;
    assert_eq!(hits(&a, "/v1/messages"), 2, "the slot came back");
    env.stop().await;
}

#[tokio::test]
async fn group_bindings_use_the_group_members_only() {
    let env = Env::start().await;
    let shared = extra_mock().await;
    let member = extra_mock().await;
    env.create(
        "claude-console-accounts",
        console("shared", &shared.url(), 10),
    )
    .await;
    let mut body = console("member", &member.url(), 50);
    body["accountType"] = json!("group");
    let mid = env.create("claude-console-accounts", body).await;
    let (s, g) = env
        .admin(
            Method::POST,
            "/admin/account-groups",
            Some(json!({"name": "team", "platform": "claude"})),
        )
        .await;
    assert_eq!(s, 200, "{g}");
    let gid = g["data"]["id"].as_str().unwrap().to_owned();
    let (s, _) = env
        .admin(
            Method::POST,
            &format!("/admin/account-groups/{gid}/members"),
            Some(json!({"accountId": mid})),
        )
        .await;
    assert_eq!(s, 200);
    let (_, grouped) = env
        .create_key(json!({"name": "g", "claudeAccountId": format!("group:{gid}")}))
        .await;
    let (_, pooled) = env.create_key(json!({"name": "p"})).await;
    for _ in 0..3 {
        ok(&env, &grouped, msg_body(SONNET, false, "x")).await;
        ok(&env, &pooled, msg_body(SONNET, false, "y")).await;
    }
    assert_eq!(
        hits(&member, "/v1/messages"),
        3,
        "group accounts serve only the group"
    );
    assert_eq!(hits(&shared, "/v1/messages"), 3);
    // A group account outside the shared pool; deleting a bound group is refused.
    let (s, _) = env
        .admin(
            Method::DELETE,
            &format!("/admin/account-groups/{gid}"),
            None,
        )
        .await;
    assert_eq!(s, 400);
    // A wrong-platform member is refused.
    let oid = env
        .create(
            "openai-responses-accounts",
            json!({"name": "o", "baseApi": shared.url(), "apiKey": "sk-x"}),
        )
        .await;
    let (s, _) = env
        .admin(
            Method::POST,
            &format!("/admin/account-groups/{gid}/members"),
            Some(json!({"accountId": oid})),
        )
        .await;
    assert_eq!(s, 400);
    env.stop().await;
}

#[tokio::test]
async fn settings_change_the_sticky_ttl() {
    let env = Env::start().await;
    let (_, v) = env.admin(Method::GET, "/admin/settings", None).await;
    assert_eq!(v["data"]["stickySessionTtlHours"], 1.0);
    let (s, _) = env
        .admin(
            Method::PUT,
            "/admin/settings",
            Some(json!({"stickySessionTtlHours": 6})),
        )
        .await;
    assert_eq!(s, 200);
    let (_, v) = env.admin(Method::GET, "/admin/settings", None).await;
    assert_eq!(v["data"]["stickySessionTtlHours"], 6.0);
    let (s, _) = env
        .admin(
            Method::PUT,
            "/admin/settings",
            Some(json!({"stickySessionTtlHours": -1})),
        )
        .await;
    assert_eq!(s, 400);
    env.stop().await;
}

#[tokio::test]
async fn an_account_over_its_daily_quota_leaves_the_rotation() {
    let env = Env::start().await;
    let a = extra_mock().await;
    let b = extra_mock().await;
    let mut body = console("quota", &a.url(), 10);
    body["dailyQuota"] = json!(2.0);
    let qid = env.create("claude-console-accounts", body).await;
    env.create("claude-console-accounts", console("b", &b.url(), 90))
        .await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    // $3 of Sonnet input: past the $2 quota after one request.
    ok(
        &env,
        &key,
        msg_body(SONNET, false, "big mock:usage=1000000,0,0,0"),
    )
    .await;
    ok(&env, &key, msg_body(SONNET, false, "next")).await;
    assert_eq!((hits(&a, "/v1/messages"), hits(&b, "/v1/messages")), (1, 1));
    let (_, v) = env
        .admin(
            Method::GET,
            &format!("/admin/claude-console-accounts/{qid}"),
            None,
        )
        .await;
    assert_eq!(v["data"]["todayCost"], 3.0);
    env.stop().await;
}

/// CCR accounts take only models written `ccr,<model>`, and get them without the prefix;
/// ordinary Claude requests never reach them, even with the CCR account first in priority.
#[tokio::test]
async fn ccr_accounts_take_only_ccr_models() {
    let env = Env::start().await;
    let ccr = extra_mock().await;
    env.create(
        "ccr-accounts",
        json!({"name": "router", "apiUrl": ccr.url(), "apiKey": UPSTREAM_KEY, "priority": 1}),
    )
    .await;
    env.create_account(json!({"name": "console", "priority": 50}))
        .await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    for stream in [false, true] {
        let r = ok(
            &env,
            &key,
            msg_body("claude-sonnet-4-5-20250929", stream, "plain"),
        )
        .await;
        drop(r);
    }
    assert_eq!(
        hits(&ccr, "/v1/messages"),
        0,
        "ordinary requests stay off CCR"
    );
    assert_eq!(hits(&env.mock, "/v1/messages"), 2);
    let r = ok(&env, &key, msg_body("ccr,deepseek-chat", false, "routed")).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "deepseek-chat");
    let sent: Value = serde_json::from_slice(&last_seen(&ccr, "/v1/messages").body).unwrap();
    assert_eq!(
        sent["model"], "deepseek-chat",
        "the prefix is stripped upstream"
    );
    assert_eq!(
        hits(&env.mock, "/v1/messages"),
        2,
        "CCR models stay off other accounts"
    );
    // With no CCR account able to serve, a ccr model is not sent elsewhere.
    ccr.stop();
    let r = env
        .messages(&key, msg_body("ccr,deepseek-chat", false, "again"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_server_error(), "{}", r.status());
    assert_eq!(hits(&env.mock, "/v1/messages"), 2);
    env.stop().await;
}

//! Claude subscription (OAuth) accounts against a mock that answers the way Anthropic does:
//! what reaches the upstream, how each kind of refusal is treated, and where new sessions go.

use std::time::Duration;

use crs::mock::{Scripted, subscription_headers};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

const SONNET: &str = "claude-sonnet-4-5-20250929";
const OPUS: &str = "claude-opus-4-1-20250805";
/// Anthropic's message for a subscription 429.
const RATE_LIMITED: &str =
    "This request would exceed your account's rate limit. Please try again later.";

/// crs with a separate mock for Anthropic's token endpoint; the upstream mock accepts any
/// credential unless a test scripts a refusal.
async fn start(tweak: impl FnOnce(&mut crs::config::Config)) -> (Env, crs::mock::MockUpstream) {
    let auth = extra_mock().await;
    let token_url = format!("{}/v1/oauth/token", auth.url());
    let env = Env::start_with(|c| {
        c.claude_oauth_token_url = token_url;
        tweak(c);
    })
    .await;
    env.mock.state.accepted_keys.lock().clear();
    (env, auth)
}

/// Account "a" (priority 10), its backup "b" (priority 20) and a key: (env, auth mock, id of
/// "a", key).
async fn primary_and_backup(
    tweak: impl FnOnce(&mut crs::config::Config),
) -> (Env, crs::mock::MockUpstream, String, String) {
    let (env, auth) = start(tweak).await;
    let a = oauth_account(&env, "a", 10, json!({})).await;
    oauth_account(&env, "b", 20, json!({})).await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    (env, auth, a, key)
}

async fn oauth_account(env: &Env, name: &str, priority: u32, extra: Value) -> String {
    let far = chrono::Utc::now().timestamp_millis() + 8 * 3_600_000;
    let mut body = json!({
        "name": name,
        "apiUrl": env.mock.url(),
        "priority": priority,
        "claudeAiOauth": {
            "accessToken": token(name),
            "refreshToken": format!("sk-ant-ort01-{name}"),
            "expiresAt": far,
        },
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    env.create("claude-accounts", body).await
}

fn token(name: &str) -> String {
    format!("sk-ant-oat01-{name}")
}

/// Answer the next request on account `name` with an error.
fn script(env: &Env, name: &str, status: u16, message: &str, headers: Vec<(String, String)>) {
    env.mock.state.scripted.lock().insert(
        token(name),
        Scripted {
            status,
            message: message.into(),
            headers,
            times: Some(1),
        },
    );
}

fn hv(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// The account (by name) whose token the latest Messages request carried.
fn last_served(env: &Env) -> String {
    last_seen(&env.mock, "/v1/messages")
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer sk-ant-oat01-"))
        .unwrap_or("?")
        .to_owned()
}

/// One request with a body of its own (so no two requests share a body-derived session).
async fn ask(env: &Env, key: &str, model: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut rb = env.messages(key, msg_body(model, false, &format!("question {n}")));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

/// Ask, expect an answer, and say which account gave it.
async fn served_by(env: &Env, key: &str, model: &str, headers: &[(&str, &str)]) -> String {
    let r = ask(env, key, model, headers).await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    last_served(env)
}

async fn account(env: &Env, id: &str) -> Value {
    let (s, v) = env
        .admin(Method::GET, &format!("/admin/claude-accounts/{id}"), None)
        .await;
    assert_eq!(s, 200, "{v}");
    v["data"].clone()
}

fn secs_from_now(secs: i64) -> String {
    (chrono::Utc::now().timestamp() + secs).to_string()
}

fn until_ms(v: &Value) -> i64 {
    v["cooldownUntil"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
        .unwrap_or(0)
}

#[tokio::test]
async fn claude_code_headers_reach_anthropic_as_sent() {
    let (env, _auth) = start(|_| {}).await;
    oauth_account(&env, "a", 10, json!({})).await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    let sent = [
        ("user-agent", "claude-cli/2.1.197 (external, cli)"),
        (
            "anthropic-beta",
            "claude-code-20250219,interleaved-thinking-2025-05-14",
        ),
        ("anthropic-version", "2023-06-01"),
        ("x-app", "cli"),
        ("x-stainless-lang", "js"),
        ("x-stainless-package-version", "0.70.0"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-timeout", "600"),
        (
            "x-claude-code-session-id",
            "0d9f6a3e-5c1b-4f7a-9a51-1c2d3e4f5a6b",
        ),
        ("x-claude-code-agent-id", "agent-7"),
        ("x-claude-code-parent-agent-id", "agent-1"),
        (
            "x-client-request-id",
            "3f2b7c1e-0000-4000-8000-00000000abcd",
        ),
    ];
    let mut headers: Vec<(&str, &str)> = sent.to_vec();
    headers.push(("accept-encoding", "gzip, br"));
    headers.push(("cookie", "session=secret"));
    let r = ask(&env, &key, SONNET, &headers).await;
    assert_eq!(r.status(), 200);
    let seen = last_seen(&env.mock, "/v1/messages");
    for (k, v) in sent {
        let want = if k == "anthropic-beta" {
            format!("oauth-2025-04-20,{v}")
        } else {
            v.to_owned()
        };
        assert_eq!(seen.header(k), Some(want.as_str()), "{k}");
    }
    assert_eq!(seen.header("accept-encoding"), Some("identity"));
    assert_eq!(seen.header("cookie"), None);
    assert_eq!(seen.header("x-api-key"), None, "the cr_ key stays in crs");
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {}", token("a")).as_str())
    );
    env.stop().await;
}

/// An upstream that compresses although asked for plain bytes: the client gets plain bytes,
/// and the usage in them is recorded.
#[tokio::test]
async fn compressed_answers_are_decoded_before_they_are_tapped() {
    let (env, _auth) = start(|_| {}).await;
    oauth_account(&env, "a", 10, json!({})).await;
    let (key_id, key) = env.create_key(json!({"name": "k"})).await;
    let send = |stream: bool, text: &str| env.messages(&key, msg_body(SONNET, stream, text)).send();
    let r = send(false, "mock:gzip mock:usage=40,7,0,0").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("content-encoding"), None);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["usage"]["input_tokens"], 40);
    let r = send(true, "mock:gzip mock:usage=50,9,0,0").await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let sent = env.mock.state.sent_streams.lock().last().cloned().unwrap();
    assert_eq!(
        text.as_bytes(),
        &sent[..],
        "the stream's bytes, decoded, unchanged"
    );
    let t = env.key_totals(&key_id).await;
    assert_eq!((t.input_tokens, t.output_tokens), (90, 16));
    env.stop().await;
}

/// Claude Code's session header keeps a conversation on one account even when the bodies
/// share nothing.
#[tokio::test]
async fn the_session_header_keeps_a_conversation_on_one_account() {
    let (env, _auth) = start(|_| {}).await;
    for n in ["a", "b", "c"] {
        oauth_account(&env, n, 10, json!({})).await;
    }
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    let mut firsts = std::collections::BTreeSet::new();
    for conv in 0..4 {
        let sid = format!("5e1c0000-0000-4000-8000-00000000000{conv}");
        let mut served = std::collections::BTreeSet::new();
        for turn in 0..5 {
            let r = env
                .messages(
                    &key,
                    msg_body(SONNET, false, &format!("turn {turn} of {conv}")),
                )
                .header("x-claude-code-session-id", &sid)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            served.insert(last_served(&env));
        }
        assert_eq!(served.len(), 1, "conversation {conv}: {served:?}");
        firsts.extend(served);
    }
    assert!(firsts.len() > 1, "conversations are spread: {firsts:?}");
    env.stop().await;
}

#[tokio::test]
async fn a_spent_weekly_opus_window_parks_only_opus_on_that_account() {
    let (env, _auth, a, key) = primary_and_backup(|_| {}).await;
    let reset = secs_from_now(3 * 86_400);
    let mut h: Vec<(String, String)> = subscription_headers(0.3, 0.6)
        .into_iter()
        .filter(|(k, _)| {
            !k.ends_with("unified-status")
                && !k.ends_with("unified-reset")
                && !k.ends_with("representative-claim")
        })
        .collect();
    h.extend(hv(&[
        ("anthropic-ratelimit-unified-status", "rejected".into()),
        ("anthropic-ratelimit-unified-reset", reset.clone()),
        (
            "anthropic-ratelimit-unified-representative-claim",
            "seven_day_opus".into(),
        ),
        ("retry-after", "259200".into()),
    ]));
    script(&env, "a", 429, RATE_LIMITED, h);
    assert_eq!(served_by(&env, &key, OPUS, &[]).await, "b");
    assert_eq!(
        served_by(&env, &key, OPUS, &[]).await,
        "b",
        "Opus stays off account a"
    );
    assert_eq!(
        served_by(&env, &key, SONNET, &[]).await,
        "a",
        "Sonnet still runs on account a"
    );
    let v = account(&env, &a).await;
    assert_eq!(v["status"], "active");
    assert!(v["cooldownUntil"].is_null(), "{v}");
    let parked = v["modelCooldowns"].as_array().unwrap();
    assert_eq!(parked.len(), 1, "{v}");
    assert_eq!(parked[0]["model"], "family:opus");
    let until = chrono::DateTime::parse_from_rfc3339(parked[0]["until"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(until.to_string(), reset, "until the window's reset");
    env.stop().await;
}

#[tokio::test]
async fn a_spent_five_hour_window_parks_the_account_until_its_reset() {
    let (env, _auth, a, key) = primary_and_backup(|_| {}).await;
    let reset = chrono::Utc::now().timestamp() + 2 * 3600;
    script(
        &env,
        "a",
        429,
        RATE_LIMITED,
        hv(&[
            ("anthropic-ratelimit-unified-status", "rejected".into()),
            ("anthropic-ratelimit-unified-reset", reset.to_string()),
            (
                "anthropic-ratelimit-unified-representative-claim",
                "five_hour".into(),
            ),
            ("anthropic-ratelimit-unified-5h-status", "rejected".into()),
            ("anthropic-ratelimit-unified-5h-utilization", "1.0".into()),
            ("anthropic-ratelimit-unified-5h-reset", reset.to_string()),
            ("anthropic-ratelimit-unified-7d-status", "allowed".into()),
            (
                "anthropic-ratelimit-unified-7d-reset",
                secs_from_now(5 * 86_400),
            ),
        ]),
    );
    assert_eq!(served_by(&env, &key, SONNET, &[]).await, "b");
    let v = account(&env, &a).await;
    assert_eq!(until_ms(&v), reset * 1000, "{v}");
    assert!(v["cooldownReason"].as_str().unwrap().contains("5h"), "{v}");
    assert_eq!(
        served_by(&env, &key, OPUS, &[]).await,
        "b",
        "every model stays off a"
    );
    env.stop().await;
}

#[tokio::test]
async fn a_429_without_a_reset_is_a_short_configurable_throttle() {
    let (env, _auth, a, key) = primary_and_backup(|c| c.throttle_secs = 1).await;
    script(&env, "a", 429, "Rate limited", vec![]);
    let before = chrono::Utc::now().timestamp_millis();
    assert_eq!(served_by(&env, &key, SONNET, &[]).await, "b");
    let until = until_ms(&account(&env, &a).await);
    assert!(
        until >= before + 1000 && until <= chrono::Utc::now().timestamp_millis() + 1000,
        "parked for the throttle only: {}",
        until - before
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        served_by(&env, &key, SONNET, &[]).await,
        "a",
        "back after a second"
    );
    env.stop().await;
}

#[tokio::test]
async fn an_extra_usage_429_goes_to_the_client_and_parks_nothing() {
    let (env, _auth, a, key) = primary_and_backup(|_| {}).await;
    let msg = "Extra usage is required for long context requests.";
    script(&env, "a", 429, msg, hv(&[("retry-after", "3600".into())]));
    let r = ask(&env, &key, SONNET, &[]).await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["message"], msg, "Anthropic's own answer");
    assert_eq!(hits(&env.mock, "/v1/messages"), 1, "not retried elsewhere");
    let v = account(&env, &a).await;
    assert!(v["cooldownUntil"].is_null(), "{v}");
    assert_eq!(served_by(&env, &key, SONNET, &[]).await, "a");
    env.stop().await;
}

#[tokio::test]
async fn a_429_on_a_background_request_parks_nothing() {
    let (env, _auth, a, key) = primary_and_backup(|_| {}).await;
    script(
        &env,
        "a",
        429,
        "Rate limited",
        hv(&[("retry-after", "600".into())]),
    );
    assert_eq!(
        served_by(&env, &key, "claude-haiku-4-5", &[("x-app", "cli-bg")]).await,
        "b"
    );
    let v = account(&env, &a).await;
    assert!(v["cooldownUntil"].is_null(), "{v}");
    assert_eq!(v["modelCooldowns"], json!([]));
    assert_eq!(
        served_by(&env, &key, SONNET, &[("x-app", "cli")]).await,
        "a"
    );
    env.stop().await;
}

#[tokio::test]
async fn banned_and_disabled_organisations_are_blocked_and_fail_over() {
    let (env, _auth) = start(|_| {}).await;
    let a = oauth_account(&env, "a", 10, json!({})).await;
    let b = oauth_account(&env, "b", 20, json!({})).await;
    oauth_account(&env, "c", 30, json!({})).await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    script(
        &env,
        "a",
        403,
        "OAuth authentication is currently not allowed for this organization.",
        vec![],
    );
    script(
        &env,
        "b",
        400,
        "This organization has been disabled.",
        vec![],
    );
    assert_eq!(served_by(&env, &key, SONNET, &[]).await, "c");
    for id in [&a, &b] {
        let mut v = Value::Null;
        for _ in 0..200 {
            v = account(&env, id).await;
            if v["status"] == "blocked" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(v["status"], "blocked", "{v}");
        assert!(
            v["errorMessage"].as_str().unwrap().contains("organization"),
            "{v}"
        );
    }
    let r = ask(&env, &key, SONNET, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        last_served(&env),
        "c",
        "blocked accounts are out of rotation"
    );
    env.stop().await;
}

#[tokio::test]
async fn an_oauth_401_refreshes_the_token_once_and_retries() {
    let (env, auth) = start(|_| {}).await;
    let a = oauth_account(&env, "a", 10, json!({})).await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    script(&env, "a", 401, "Invalid bearer token", vec![]);
    let r = ask(&env, &key, SONNET, &[]).await;
    assert_eq!(
        r.status(),
        200,
        "served by the same account with a new token"
    );
    assert_eq!(hits(&auth, "/v1/oauth/token"), 1);
    let seen: Vec<String> = env
        .mock
        .state
        .seen
        .lock()
        .iter()
        .filter(|s| s.path == "/v1/messages")
        .map(|s| s.header("authorization").unwrap_or("").to_owned())
        .collect();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], format!("Bearer {}", token("a")));
    assert!(seen[1].starts_with("Bearer sk-ant-oat01-mock-"), "{seen:?}");
    let v = account(&env, &a).await;
    assert_eq!(v["status"], "active");
    // A token the upstream keeps refusing after the refresh marks the account.
    let fresh = seen[1].trim_start_matches("Bearer ").to_owned();
    env.mock.state.scripted.lock().insert(
        fresh,
        Scripted {
            status: 401,
            message: "Invalid bearer token".into(),
            headers: vec![],
            times: None,
        },
    );
    auth.state
        .oauth_fail_refresh
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let r = ask(&env, &key, SONNET, &[]).await;
    assert_eq!(r.status(), 401, "no other account to fail over to");
    let mut v = Value::Null;
    for _ in 0..200 {
        v = account(&env, &a).await;
        if v["status"] != "active" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(v["status"], "refresh_failed", "{v}");
    env.stop().await;
}

/// Ten new sessions avoid an account whose 5-hour window is 97% used while another has room;
/// a conversation already on it stays.
#[tokio::test]
async fn new_sessions_avoid_an_account_near_the_end_of_its_window() {
    let (env, _auth) = start(|_| {}).await;
    oauth_account(&env, "hot", 10, json!({})).await;
    oauth_account(&env, "cool", 10, json!({})).await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    {
        let mut m = env.mock.state.answer_headers.lock();
        m.insert(token("hot"), subscription_headers(0.97, 0.40));
        m.insert(token("cool"), subscription_headers(0.30, 0.20));
    }
    // Sessions started before anything is known spread over both accounts.
    let mut on_hot = Vec::new();
    for n in 0..4 {
        let sid = format!("early-{n}");
        let r = ask(&env, &key, SONNET, &[("x-claude-code-session-id", &sid)]).await;
        assert_eq!(r.status(), 200);
        if last_served(&env) == "hot" {
            on_hot.push(sid);
        }
    }
    assert!(!on_hot.is_empty(), "round robin reached both accounts");
    for n in 0..10 {
        let sid = format!("new-{n}");
        let r = ask(&env, &key, SONNET, &[("x-claude-code-session-id", &sid)]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(last_served(&env), "cool", "new session {n}");
    }
    for sid in &on_hot {
        let r = ask(&env, &key, SONNET, &[("x-claude-code-session-id", sid)]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(last_served(&env), "hot", "running session {sid} stays");
    }
    env.stop().await;
}

/// v1's `autoStopOnWarning`: a warning on a window takes the account out until the 5-hour
/// window resets.
#[tokio::test]
async fn auto_stop_on_warning_parks_the_account_until_the_five_hour_reset() {
    let (env, _auth) = start(|_| {}).await;
    let a = oauth_account(&env, "a", 10, json!({"autoStopOnWarning": true})).await;
    oauth_account(&env, "b", 20, json!({})).await;
    assert_eq!(account(&env, &a).await["autoStopOnWarning"], true);
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    let headers = subscription_headers(0.92, 0.40);
    let reset: i64 = headers
        .iter()
        .find(|(k, _)| k == "anthropic-ratelimit-unified-5h-reset")
        .unwrap()
        .1
        .parse()
        .unwrap();
    env.mock
        .state
        .answer_headers
        .lock()
        .insert(token("a"), headers);
    assert_eq!(served_by(&env, &key, SONNET, &[]).await, "a");
    let v = account(&env, &a).await;
    assert_eq!(until_ms(&v), reset * 1000, "{v}");
    assert_eq!(served_by(&env, &key, SONNET, &[]).await, "b");
    env.stop().await;
}

/// The real Claude Code, one conversation over two invocations (`--session-id`, then
/// `--resume`), three OAuth accounts of equal priority: every request of the conversation
/// reaches the upstream on one account, with Claude Code's session header.
#[tokio::test]
async fn claude_code_keeps_one_oauth_account_for_a_whole_conversation() {
    use crate::e2e_claude_code::{cli_path, run_claude};
    let Some(claude) = cli_path("claude") else {
        return;
    };
    let (env, _auth) = start(|_| {}).await;
    for n in ["a", "b", "c"] {
        oauth_account(&env, n, 10, json!({})).await;
    }
    let (_, key) = env.create_key(json!({"name": "claude-code-user"})).await;
    let home = tempfile::tempdir().unwrap();
    let sid = "7d5c2b1a-3e4f-4a6b-8c9d-0e1f2a3b4c5d";
    for args in [
        ["-p", "--session-id", sid, "Say hello to the relay"],
        ["-p", "--resume", sid, "And once more"],
    ] {
        let out = run_claude(claude.clone(), home.path(), &env.url(""), &key, &args).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("Hello from the mock upstream."),
            "claude failed\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let seen: Vec<(Option<String>, String)> = env
        .mock
        .state
        .seen
        .lock()
        .iter()
        .filter(|s| s.path == "/v1/messages")
        .map(|s| {
            (
                s.header("x-claude-code-session-id").map(str::to_owned),
                s.header("authorization").unwrap_or("").to_owned(),
            )
        })
        .collect();
    let conversation: Vec<&String> = seen
        .iter()
        .filter(|(s, _)| s.as_deref() == Some(sid))
        .map(|(_, a)| a)
        .collect();
    assert!(conversation.len() >= 2, "both invocations: {seen:?}");
    assert!(
        conversation.iter().all(|a| *a == conversation[0]),
        "one account for the conversation: {seen:?}"
    );
    env.stop().await;
}

/// The opt-in adaptations: other clients get Claude Code's identity line, betas and a
/// `metadata.user_id` with the account's device id; one client id and one client identity for
/// every user of the account. Without the options, bodies pass through byte for byte.
#[tokio::test]
async fn opt_in_adaptations_for_other_clients_and_one_client_identity() {
    let (env, _auth) = start(|_| {}).await;
    let dev = "ab".repeat(32);
    let a = oauth_account(
        &env,
        "a",
        10,
        json!({"adaptOtherClients": true, "useUnifiedUserAgent": true,
               "useUnifiedClientId": true, "unifiedClientId": dev}),
    )
    .await;
    let v = account(&env, &a).await;
    assert_eq!(
        (
            v["adaptOtherClients"].clone(),
            v["useUnifiedClientId"].clone(),
            v["unifiedClientId"].clone()
        ),
        (json!(true), json!(true), json!(dev))
    );
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    let upstream_body =
        || -> Value { serde_json::from_slice(&last_seen(&env.mock, "/v1/messages").body).unwrap() };
    // Another client, before any Claude Code request: adapted body and betas.
    let body = json!({"model": SONNET, "max_tokens": 10, "system": "Be brief.",
                      "messages": [{"role": "user", "content": "hi"}]});
    let r = env
        .messages(&key, body.clone())
        .header("user-agent", "python-httpx/0.27")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = upstream_body();
    assert_eq!(
        sent["system"],
        json!([{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
               {"type": "text", "text": "Be brief."}])
    );
    let uid = sent["metadata"]["user_id"].as_str().unwrap();
    assert!(
        uid.starts_with(&format!("user_{dev}_account__session_")),
        "{uid}"
    );
    let seen = last_seen(&env.mock, "/v1/messages");
    assert!(
        seen.header("anthropic-beta")
            .unwrap()
            .contains("claude-code-20250219"),
        "{:?}",
        seen.header("anthropic-beta")
    );
    assert_eq!(
        seen.header("user-agent"),
        Some("python-httpx/0.27"),
        "no identity seen yet"
    );
    // Claude Code itself: its body is kept but for the device id.
    let cc = [
        ("user-agent", "claude-cli/2.1.197 (external, cli)"),
        ("x-app", "cli"),
        ("x-stainless-lang", "js"),
        ("x-stainless-os", "Linux"),
    ];
    let mut body = body.clone();
    body["metadata"] = json!({"user_id": "user_0123_account_4567_session_89ab"});
    let mut rb = env.messages(&key, body);
    for (k, v) in cc {
        rb = rb.header(k, v);
    }
    assert_eq!(rb.send().await.unwrap().status(), 200);
    let sent = upstream_body();
    assert_eq!(
        sent["system"], "Be brief.",
        "Claude Code's own prompt is not touched"
    );
    assert_eq!(
        sent["metadata"]["user_id"],
        format!("user_{dev}_account_4567_session_89ab")
    );
    // Every later request on the account carries Claude Code's identity.
    let r = env
        .messages(&key, msg_body(SONNET, false, "later"))
        .header("user-agent", "python-httpx/0.27")
        .header("x-stainless-lang", "python")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = last_seen(&env.mock, "/v1/messages");
    assert_eq!(
        seen.header("user-agent"),
        Some("claude-cli/2.1.197 (external, cli)")
    );
    assert_eq!(seen.header("x-stainless-lang"), Some("js"));
    assert_eq!(seen.header("x-stainless-os"), Some("Linux"));

    // Without the options the client's bytes go upstream unchanged.
    let (s, _) = env
        .admin(
            Method::PUT,
            &format!("/admin/claude-accounts/{a}"),
            Some(json!({"adaptOtherClients": false, "useUnifiedUserAgent": false, "useUnifiedClientId": false})),
        )
        .await;
    assert_eq!(s, 200);
    let raw = br#"{"model":"claude-sonnet-4-5-20250929","max_tokens":10,"system":"Be brief.","messages":[{"role":"user","content":"bytes"}]}"#;
    let r = env
        .http
        .post(env.url("/api/v1/messages"))
        .header("x-api-key", &key)
        .header("content-type", "application/json")
        .body(&raw[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(&last_seen(&env.mock, "/v1/messages").body[..], &raw[..]);
    env.stop().await;
}

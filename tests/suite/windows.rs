//! Subscription accounts kept healthy: usage windows polled from the mock's
//! `/api/oauth/usage`, accounts out of rotation tested back in, scheduled account tests.

use std::time::Duration;

use crs::model::AccountStatus;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Env, msg_body};

fn oauth_account(env: &Env, name: &str, token: &str, scopes: &[&str]) -> Value {
    json!({
        "name": name,
        "apiUrl": env.mock.url(),
        "claudeAiOauth": {"accessToken": token, "refreshToken": "", "expiresAt": 0, "scopes": scopes},
    })
}

/// Wait up to `secs` for `f` to hold on the account's view; returns the last view.
async fn wait_view(
    env: &Env,
    path: &str,
    id: &str,
    secs: u64,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let v = env.view(path, id).await;
        if f(&v) || std::time::Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A relayed request with `key` succeeds.
async fn relays(env: &Env, key: &str) {
    let r = env
        .messages(key, msg_body("claude-sonnet-4-5-20250929", false, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn usage_windows_are_polled_and_reported_in_v1_shape() {
    let env = Env::start().await;
    let token = "sk-ant-oat01-windows-1";
    env.mock.state.accepted_keys.lock().push(token.into());
    let now = chrono::Utc::now();
    let five_reset = now + chrono::Duration::seconds(3 * 3600 + 120);
    let week_reset = now + chrono::Duration::days(2);
    env.mock.state.oauth_usage.lock().insert(
        token.into(),
        json!({
            "five_hour": {"utilization": 22.0, "resets_at": five_reset.to_rfc3339()},
            "seven_day": {"utilization": 97.74, "resets_at": week_reset.to_rfc3339()},
            "seven_day_oauth_apps": null,
            "seven_day_opus": null,
            "seven_day_sonnet": {"utilization": 41.5, "resets_at": week_reset.to_rfc3339()},
            "extra_usage": {"is_enabled": false, "monthly_limit": null, "used_credits": null, "utilization": null},
        }),
    );
    let id = env
        .create(
            "claude-accounts",
            oauth_account(&env, "max", token, &["user:inference", "user:profile"]),
        )
        .await;
    // A setup token (inference scope only) has no usage windows to poll.
    let setup = env
        .create(
            "claude-accounts",
            oauth_account(&env, "setup", "sk-ant-oat01-setup", &["user:inference"]),
        )
        .await;

    let (s, v) = env
        .admin(Method::GET, "/admin/claude-accounts/usage", None)
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["success"], true);
    let u = &v["data"][&id];
    assert_eq!(u["fiveHour"]["utilization"], 22.0, "{v}");
    let remaining = u["fiveHour"]["remainingSeconds"].as_i64().unwrap();
    assert!(
        (3 * 3600 + 60..=3 * 3600 + 120).contains(&remaining),
        "{remaining}"
    );
    let resets =
        chrono::DateTime::parse_from_rfc3339(u["fiveHour"]["resetsAt"].as_str().unwrap()).unwrap();
    assert_eq!(resets.timestamp(), five_reset.timestamp());
    assert_eq!(u["sevenDay"]["utilization"], 97.74);
    assert!(u["sevenDay"]["remainingSeconds"].as_i64().unwrap() > 47 * 3600);
    assert_eq!(u["sevenDayOpus"]["utilization"], Value::Null);
    assert_eq!(u["sevenDaySonnet"]["utilization"], 41.5);
    assert_eq!(u["error"], Value::Null);
    assert!(u["updatedAt"].is_string());
    assert_eq!(v["data"][&setup], Value::Null, "{v}");

    let polls: Vec<_> = env
        .mock
        .state
        .seen
        .lock()
        .iter()
        .filter(|r| r.path == "/api/oauth/usage")
        .cloned()
        .collect();
    assert_eq!(polls.len(), 1, "only the OAuth account, once");
    assert_eq!(
        polls[0].header("authorization"),
        Some(format!("Bearer {token}").as_str())
    );
    assert_eq!(polls[0].header("anthropic-beta"), Some("oauth-2025-04-20"));

    // Fresh readings are not polled again; the account view carries them too.
    env.admin(Method::GET, "/admin/claude-accounts/usage", None)
        .await;
    let v = env.view("claude-accounts", &id).await;
    assert_eq!(v["usageWindows"]["fiveHour"]["utilization"], 22.0);
    let count = |env: &Env| {
        env.mock
            .state
            .seen
            .lock()
            .iter()
            .filter(|r| r.path == "/api/oauth/usage")
            .count()
    };
    assert_eq!(count(&env), 1);

    // A failed poll is reported and keeps the last readings; requests still flow.
    *env.mock.state.oauth_usage_forced.lock() = Some(crs::mock::Forced {
        status: 500,
        retry_after: None,
        message: "Internal server error".into(),
    });
    let (s, v) = env
        .admin(
            Method::POST,
            &format!("/admin/claude-accounts/{id}/usage/refresh"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["success"], false);
    let err = v["data"]["error"].as_str().unwrap();
    assert!(err.contains("500"), "{err}");
    assert_eq!(v["data"]["fiveHour"]["utilization"], 22.0);
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    relays(&env, &key).await;

    // Back to normal: an on-demand refresh clears the error and takes new values.
    *env.mock.state.oauth_usage_forced.lock() = None;
    env.mock.state.oauth_usage.lock().clear();
    let (_, v) = env
        .admin(
            Method::GET,
            "/admin/claude-accounts/usage?refresh=true",
            None,
        )
        .await;
    assert_eq!(v["data"][&id]["error"], Value::Null, "{v}");
    assert_eq!(
        v["data"][&id]["fiveHour"]["utilization"], 3.0,
        "mock default"
    );
    env.stop().await;
}

#[tokio::test]
async fn the_mock_usage_endpoint_refuses_what_anthropic_refuses() {
    let env = Env::start().await;
    let url = format!("{}/api/oauth/usage", env.mock.url());
    let token = "sk-ant-oat01-mock-usage";
    env.mock.state.accepted_keys.lock().push(token.into());
    let get = |auth: Option<&str>, beta: Option<&str>| {
        let mut rb = env.http.get(&url);
        if let Some(a) = auth {
            rb = rb.bearer_auth(a);
        }
        if let Some(b) = beta {
            rb = rb.header("anthropic-beta", b);
        }
        rb.send()
    };
    for (auth, beta) in [
        (None, Some("oauth-2025-04-20")),
        (Some("sk-ant-oat01-unknown"), Some("oauth-2025-04-20")),
        (Some(token), None),
    ] {
        let r = get(auth, beta).await.unwrap();
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
    }
    let r = get(Some(token), Some("oauth-2025-04-20")).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["five_hour"]["utilization"].is_number());
    assert!(v["seven_day"]["resets_at"].is_string());
    assert!(v.as_object().unwrap().contains_key("seven_day_opus"));
    env.stop().await;
}

#[tokio::test]
async fn an_unauthorized_account_returns_to_rotation_by_itself() {
    let env = Env::start_with(|c| {
        c.health.tick = Duration::from_millis(50);
        c.health.recovery_base = Duration::from_millis(200);
        c.health.recovery_max = Duration::from_millis(400);
    })
    .await;
    let token = "sk-ant-oat01-recovering";
    let id = env
        .create(
            "claude-accounts",
            oauth_account(&env, "max", token, &["user:inference", "user:profile"]),
        )
        .await;
    // The upstream refused the token (the mock does not know it yet).
    env.crs.as_ref().unwrap().state.accounts.mark_status(
        id.clone(),
        AccountStatus::Unauthorized,
        "Account unauthorized (401 errors detected)".into(),
    );
    let v = wait_view(&env, "claude-accounts", &id, 5, |v| {
        v["testHistory"].as_array().is_some_and(|h| h.len() >= 2)
    })
    .await;
    assert_eq!(v["status"], "unauthorized", "{v}");
    let h = v["testHistory"].as_array().unwrap();
    assert!(
        h.iter()
            .all(|t| t["trigger"] == "recovery" && t["success"] == false && t["status"] == 401),
        "{v}"
    );
    let (_, key) = env.create_key(json!({"name": "k"})).await;

    // The upstream accepts it again: the account comes back without an admin.
    env.mock.state.accepted_keys.lock().push(token.into());
    let v = wait_view(&env, "claude-accounts", &id, 10, |v| {
        v["status"] == "active"
    })
    .await;
    assert_eq!(v["status"], "active", "{v}");
    assert_eq!(v["errorMessage"], "");
    assert_eq!(v["testHistory"][0]["success"], true);
    assert_eq!(v["testHistory"][0]["trigger"], "recovery");
    relays(&env, &key).await;
    // No more recovery tests once it is back.
    let n = env.view("claude-accounts", &id).await["testHistory"]
        .as_array()
        .unwrap()
        .len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let v = env.view("claude-accounts", &id).await;
    assert_eq!(v["testHistory"].as_array().unwrap().len(), n);
    env.stop().await;
}

#[tokio::test]
async fn a_refresh_failed_account_refreshes_its_token_and_returns() {
    // A second mock plays Anthropic's OAuth token endpoint and the account's upstream.
    let upstream = crs::mock::MockUpstream::start().await.unwrap();
    let token_url = format!("{}/v1/oauth/token", upstream.url());
    let env = Env::start_with(|c| {
        c.claude_oauth_token_url = token_url;
        c.health.tick = Duration::from_millis(50);
        c.health.recovery_base = Duration::from_millis(200);
        c.health.recovery_max = Duration::from_millis(400);
    })
    .await;
    upstream
        .state
        .oauth_fail_refresh
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let soon = chrono::Utc::now().timestamp_millis() + 20_000;
    let id = env
        .create(
            "claude-accounts",
            json!({"name": "max", "apiUrl": upstream.url(),
                   "claudeAiOauth": {"accessToken": "sk-ant-oat01-old", "refreshToken": "sk-ant-ort01-old", "expiresAt": soon}}),
        )
        .await;
    env.crs.as_ref().unwrap().state.accounts.mark_status(
        id.clone(),
        AccountStatus::RefreshFailed,
        "token refresh failed".into(),
    );
    let refreshes = || {
        upstream
            .state
            .seen
            .lock()
            .iter()
            .filter(|s| s.path == "/v1/oauth/token")
            .count()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while refreshes() < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refreshes() >= 2, "refreshes are retried");
    assert_eq!(
        env.view("claude-accounts", &id).await["status"],
        "refresh_failed"
    );

    upstream
        .state
        .oauth_fail_refresh
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let v = wait_view(&env, "claude-accounts", &id, 10, |v| {
        v["status"] == "active" && v["testHistory"][0]["success"] == true
    })
    .await;
    assert_eq!(v["status"], "active", "{v}");
    assert_eq!(v["testHistory"][0]["trigger"], "recovery");
    assert!(v["tokenExpiresAt"].as_i64().unwrap() > soon + 3_600_000);
    upstream.stop();
    env.stop().await;
}

#[tokio::test]
async fn scheduled_tests_fill_the_history() {
    let env = Env::start_with(|c| c.health.tick = Duration::from_millis(50)).await;
    let id = env.create_account(json!({})).await;
    let path = format!("/admin/claude-console-accounts/{id}/test-config");
    let (s, v) = env.admin(Method::GET, &path, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["config"]["enabled"], false);
    assert_eq!(v["data"]["config"]["cronExpression"], "0 8 * * *");
    for bad in [
        json!({"enabled": "yes", "cronExpression": "* * * * *"}),
        json!({"enabled": true, "cronExpression": "61 * * * *"}),
        json!({"enabled": true}),
    ] {
        let (s, v) = env.admin(Method::PUT, &path, Some(bad)).await;
        assert_eq!(s, 400, "{v}");
    }
    let (s, v) = env
        .admin(
            Method::PUT,
            &path,
            Some(json!({"enabled": true, "cronExpression": "* * * * *", "model": "claude-3-5-haiku-20241022"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let v = wait_view(&env, "claude-console-accounts", &id, 5, |v| {
        v["testHistory"].as_array().is_some_and(|h| !h.is_empty())
    })
    .await;
    assert_eq!(v["testConfig"]["enabled"], true);
    let t = &v["testHistory"][0];
    assert_eq!(t["trigger"], "scheduled", "{v}");
    assert_eq!(t["success"], true);
    assert_eq!(t["status"], 200);
    assert_eq!(t["model"], "claude-3-5-haiku-20241022");
    assert!(t["latencyMs"].is_number() && t["timestamp"].is_string());
    // Once per minute of the expression, not once per tick.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, v) = env
        .admin(
            Method::GET,
            &format!("/admin/claude-console-accounts/{id}/test-history"),
            None,
        )
        .await;
    assert!(v["data"]["history"].as_array().unwrap().len() <= 2, "{v}");

    // A manual test goes into the same history, newest first.
    let (s, v) = env
        .admin(
            Method::POST,
            &format!("/admin/claude-console-accounts/{id}/test-sync"),
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["result"]["success"], true);
    let (_, v) = env
        .admin(
            Method::POST,
            "/admin/claude-console-accounts/batch-test-history",
            Some(json!({"accountIds": [id]})),
        )
        .await;
    assert_eq!(
        v["data"][format!("claude-console:{id}")][0]["trigger"],
        "manual",
        "{v}"
    );
    env.stop().await;
}

//! ChatGPT (Codex OAuth) accounts against the mock's OpenAI auth server and Codex backend:
//! the authorisation flow, the request crs sends, usage, the usage windows, token refresh
//! (ahead of expiry and after a 401), parking on Codex's usage limit, and the images bridge.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;
use crs::mock::MockUpstream;
use crs::mock::codex::MOCK_CHATGPT_ACCOUNT;

const BACKEND: &str = "/backend-api/codex/responses";

/// crs with its OpenAI auth server at `mock`.
async fn env_with_auth(mock: &MockUpstream) -> Env {
    let base = mock.url();
    Env::start_with(|c| c.openai_oauth_base_url = base).await
}

/// A ChatGPT account with the given access token on `mock`'s Codex backend.
async fn token_account(
    env: &Env,
    mock: &MockUpstream,
    name: &str,
    token: &str,
    prio: u32,
) -> String {
    mock.state.accepted_keys.lock().push(token.into());
    env.create(
        "openai-accounts",
        json!({"name": name, "baseApi": format!("{}/backend-api/codex", mock.url()), "priority": prio,
               "openaiOauth": {"accessToken": token, "refreshToken": format!("codex-rt-{name}"), "expires_in": 864000},
               "accountInfo": {"accountId": MOCK_CHATGPT_ACCOUNT, "planType": "plus"}}),
    )
    .await
}

async fn responses(env: &Env, key: &str, body: Value, ua: &str) -> reqwest::Response {
    env.http
        .post(env.url("/openai/v1/responses"))
        .bearer_auth(key)
        .header("user-agent", ua)
        .json(&body)
        .send()
        .await
        .unwrap()
}

fn bearer_of(s: &crs::mock::SeenRequest) -> String {
    s.header("authorization")
        .unwrap_or("")
        .trim_start_matches("Bearer ")
        .to_owned()
}

#[tokio::test]
async fn oauth_flow_request_shape_usage_and_windows() {
    let mock = extra_mock().await;
    let env = env_with_auth(&mock).await;
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/openai-accounts/generate-auth-url",
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let url = v["data"]["authUrl"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!(
            "{}/oauth/authorize?response_type=code&client_id=app_EMoamEEZ73f0CkXaXp7hrann&redirect_uri=http%3A%2F%2Flocalhost%3A1455%2Fauth%2Fcallback&scope=openid%20profile%20email%20offline_access",
            mock.url()
        )),
        "{url}"
    );
    assert!(
        url.contains("code_challenge_method=S256")
            && url.contains("codex_cli_simplified_flow=true")
    );
    let param = |name: &str| query_param(&url, name);
    let (challenge, state) = (param("code_challenge"), param("state"));
    let session = v["data"]["sessionId"].as_str().unwrap().to_owned();
    let (s, bad) = env
        .admin(
            Method::POST,
            "/admin/openai-accounts/exchange-code",
            Some(json!({"sessionId": session, "code": "wrong"})),
        )
        .await;
    assert_eq!(s, 400, "{bad}");
    // A callback URL of another authorisation is refused.
    let (s, _) = env
        .admin(
            Method::POST,
            "/admin/openai-accounts/exchange-code",
            Some(json!({"sessionId": session, "code": format!("http://localhost:1455/auth/callback?code=code-{challenge}&state=other")})),
        )
        .await;
    assert_eq!(s, 400);
    // The whole callback URL, as the admin copies it from the browser.
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/openai-accounts/exchange-code",
            Some(json!({"sessionId": session, "code": format!("http://localhost:1455/auth/callback?code=code-{challenge}&scope=openid&state={state}")})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let tokens = v["data"]["tokens"].clone();
    let info = v["data"]["accountInfo"].clone();
    assert_eq!(info["accountId"], MOCK_CHATGPT_ACCOUNT);
    assert_eq!(info["planType"], "plus");
    assert_eq!(info["email"], "codex-mock@example.invalid");
    let access = tokens["accessToken"].as_str().unwrap().to_owned();
    assert!(access.starts_with("codex-at-mock-"));
    assert!(tokens["idToken"].as_str().unwrap().split('.').count() == 3);
    let grant = String::from_utf8(last_seen(&mock, "/oauth/token").body.to_vec()).unwrap();
    assert!(
        grant.contains("grant_type=authorization_code")
            && grant.contains("client_id=app_EMoamEEZ73f0CkXaXp7hrann")
            && grant.contains("code_verifier="),
        "{grant}"
    );

    let id = env
        .create(
            "openai-accounts",
            json!({"name": "plus", "baseApi": format!("{}/backend-api/codex", mock.url()),
                   "openaiOauth": tokens, "accountInfo": info, "priority": 10}),
        )
        .await;
    // Without tokens there is no account; the account test reaches the backend with them.
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/openai-accounts",
            Some(json!({"name": "empty", "openaiOauth": {}})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = env
        .admin(
            Method::POST,
            &format!("/admin/openai-accounts/{id}/test"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["success"], true, "{v}");
    mock.state.seen.lock().clear();
    mock.state.served.lock().clear();
    let (key_id, key) = env
        .create_key(json!({"name": "k", "permissions": ["openai"]}))
        .await;
    // A client that is not Codex CLI: the fields the backend refuses are dropped.
    let r = responses(
        &env,
        &key,
        json!({"model": "gpt-5", "input": "hi", "instructions": "Be brief.", "temperature": 0.3,
               "stream": true, "store": true}),
        "OpenAI/Python 1.99",
    )
    .await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("response.completed"), "{text}");
    let seen = last_seen(&mock, BACKEND);
    assert_eq!(bearer_of(&seen), access);
    assert_eq!(
        seen.header("chatgpt-account-id"),
        Some(MOCK_CHATGPT_ACCOUNT)
    );
    assert_eq!(seen.header("originator"), Some("codex_cli_rs"));
    assert_eq!(seen.header("openai-beta"), None, "only a client's own");
    assert_eq!(seen.header("accept"), Some("text/event-stream"));
    assert!(
        seen.header("user-agent")
            .unwrap()
            .starts_with("codex_cli_rs/")
    );
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["store"], false);
    assert_eq!(body["instructions"], "Be brief.");
    assert!(body.get("temperature").is_none());
    assert!(
        !seen.headers.iter().any(|(_, v)| v.contains(&key)),
        "the crs key stays in crs"
    );

    // Codex CLI: its headers pass and its body keeps its fields.
    let r = responses(
        &env,
        &key,
        json!({"model": "gpt-5-codex", "input": "hi", "instructions": "x", "stream": false, "store": false, "temperature": 1}),
        "codex_cli_rs/0.169.0 (Linux 6.1; x86_64) xterm",
    )
    .await;
    assert_eq!(r.status(), 200);
    // The backend streams only: a request for no stream goes upstream streamed, and the
    // client gets the Responses object of the stream's `response.completed`.
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["object"], "response");
    assert_eq!(answer["status"], "completed");
    assert_eq!(
        answer["output"][0]["content"][0]["text"],
        "Hello from the mock upstream."
    );
    let seen = last_seen(&mock, BACKEND);
    assert!(
        seen.header("user-agent")
            .unwrap()
            .starts_with("codex_cli_rs/0.169.0")
    );
    assert_eq!(seen.header("accept"), Some("text/event-stream"));
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["temperature"], 1);
    assert_eq!(body["stream"], true);

    // Usage from `response.completed` (and the non-stream body) is what the mock served.
    let t = env.key_totals(&key_id).await;
    let served = mock.state.served_total();
    assert_eq!(t.requests, 2);
    assert_eq!(t.input_tokens, served.input_tokens);
    assert_eq!(t.output_tokens, served.output_tokens);

    // The account's windows come from the x-codex-* headers.
    let (_, v) = env
        .admin(Method::GET, &format!("/admin/openai-accounts/{id}"), None)
        .await;
    let d = &v["data"];
    assert!(
        !v.to_string().contains(&access),
        "tokens are never returned"
    );
    assert_eq!(d["accountId"], MOCK_CHATGPT_ACCOUNT);
    assert_eq!(d["hasRefreshToken"], true);
    assert_eq!(d["usageWindows"]["fiveHour"]["utilization"], 12.0);
    assert_eq!(d["usageWindows"]["sevenDay"]["utilization"], 30.0);
    assert_eq!(d["codexUsage"]["primary"]["usedPercent"], 12.0);
    assert_eq!(d["codexUsage"]["primary"]["windowMinutes"], 300);
    assert_eq!(d["codexUsage"]["secondary"]["windowMinutes"], 10080);
    let left = d["codexUsage"]["primary"]["remainingSeconds"]
        .as_i64()
        .unwrap();
    assert!((7100..=7200).contains(&left), "{left}");
    env.stop().await;
}

#[tokio::test]
async fn tokens_refresh_ahead_of_expiry_and_after_a_401() {
    let mock = extra_mock().await;
    let env = env_with_auth(&mock).await;
    // Only a refresh token: the first request refreshes first.
    let id = env
        .create(
            "openai-accounts",
            json!({"name": "rt-only", "baseApi": format!("{}/backend-api/codex", mock.url()),
                   "openaiOauth": {"refreshToken": "codex-rt-seed"}}),
        )
        .await;
    let (_, key) = env
        .create_key(json!({"name": "k", "permissions": ["openai"]}))
        .await;
    let r = responses(
        &env,
        &key,
        json!({"model": "gpt-5", "input": "a", "stream": true}),
        "x",
    )
    .await;
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    let grants: Vec<String> = mock
        .state
        .seen
        .lock()
        .iter()
        .filter(|s| s.path == "/oauth/token")
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    assert_eq!(grants.len(), 1);
    assert!(
        grants[0].contains("grant_type=refresh_token")
            && grants[0].contains("refresh_token=codex-rt-seed")
            && grants[0].contains("scope=openid%20profile%20email"),
        "{}",
        grants[0]
    );
    let first = bearer_of(&last_seen(&mock, BACKEND));
    assert!(first.starts_with("codex-at-mock-"), "{first}");
    // The id token's claims filled in the account.
    let (_, v) = env
        .admin(Method::GET, &format!("/admin/openai-accounts/{id}"), None)
        .await;
    assert_eq!(v["data"]["accountId"], MOCK_CHATGPT_ACCOUNT);
    assert_eq!(v["data"]["planType"], "plus");
    assert_eq!(v["data"]["hasIdToken"], true);
    assert_eq!(
        last_seen(&mock, BACKEND).header("chatgpt-account-id"),
        Some(MOCK_CHATGPT_ACCOUNT)
    );

    // The backend refuses the token once: crs refreshes and the same account answers.
    mock.state.scripted.lock().insert(
        first.clone(),
        crs::mock::Scripted {
            status: 401,
            message: "Your authentication token has expired.".into(),
            headers: vec![],
            times: Some(1),
        },
    );
    let r = responses(&env, &key, json!({"model": "gpt-5", "input": "b"}), "x").await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(hits(&mock, "/oauth/token"), 2);
    let second = bearer_of(&last_seen(&mock, BACKEND));
    assert!(second != first && second.starts_with("codex-at-mock-"));
    let (_, v) = env
        .admin(Method::GET, &format!("/admin/openai-accounts/{id}"), None)
        .await;
    assert_eq!(v["data"]["status"], "active");

    // A token that expires within the minute is refreshed before the request is sent.
    let (s, v) = env
        .admin(
            Method::PUT,
            &format!("/admin/openai-accounts/{id}"),
            Some(json!({"openaiOauth": {"accessToken": second, "refreshToken": "codex-rt-again", "expires_in": 20}})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let r = responses(&env, &key, json!({"model": "gpt-5", "input": "c"}), "x").await;
    assert_eq!(r.status(), 200);
    assert_eq!(hits(&mock, "/oauth/token"), 3);
    assert!(
        String::from_utf8_lossy(&last_seen(&mock, "/oauth/token").body)
            .contains("refresh_token=codex-rt-again")
    );
    let third = bearer_of(&last_seen(&mock, BACKEND));
    assert!(third != second && third.starts_with("codex-at-mock-"));

    // The admin's refresh button goes through the same refresh.
    let (s, v) = env
        .admin(
            Method::POST,
            &format!("/admin/openai-accounts/{id}/refresh"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(hits(&mock, "/oauth/token"), 4);
    env.stop().await;
}

#[tokio::test]
async fn usage_limit_parks_the_account_and_windows_steer_the_choice() {
    let mock = extra_mock().await;
    let env = env_with_auth(&mock).await;
    let a = token_account(&env, &mock, "a", "codex-at-a", 10).await;
    let _b = token_account(&env, &mock, "b", "codex-at-b", 10).await;
    let (_, key) = env
        .create_key(json!({"name": "k", "permissions": ["openai"]}))
        .await;
    // a's 5-hour window is nearly spent, b's barely used.
    let window = |pct: &str| {
        vec![
            ("x-codex-primary-used-percent".to_owned(), pct.to_owned()),
            (
                "x-codex-primary-window-minutes".to_owned(),
                "300".to_owned(),
            ),
            (
                "x-codex-primary-reset-after-seconds".to_owned(),
                "600".to_owned(),
            ),
        ]
    };
    mock.state
        .answer_headers
        .lock()
        .insert("codex-at-a".into(), window("90"));
    mock.state
        .answer_headers
        .lock()
        .insert("codex-at-b".into(), window("10"));
    let mut used = Vec::new();
    for i in 0..5 {
        let r = responses(
            &env,
            &key,
            json!({"model": "gpt-5", "input": format!("q{i}")}),
            "x",
        )
        .await;
        assert_eq!(r.status(), 200);
        used.push(bearer_of(&last_seen(&mock, BACKEND)));
    }
    // Once both have reported, the one with more room takes the requests.
    assert!(
        used[..2].contains(&"codex-at-a".to_owned())
            && used[..2].contains(&"codex-at-b".to_owned()),
        "{used:?}"
    );
    assert!(used[2..].iter().all(|t| t == "codex-at-b"), "{used:?}");

    // b's plan is spent: Codex's 429 parks it for the time it names; a takes over.
    mock.state.scripted.lock().insert(
        "codex-at-b".into(),
        crs::mock::Scripted {
            status: 429,
            message: "5400".into(),
            headers: vec![],
            times: Some(1),
        },
    );
    let r = responses(&env, &key, json!({"model": "gpt-5", "input": "z"}), "x").await;
    assert_eq!(r.status(), 200);
    assert_eq!(bearer_of(&last_seen(&mock, BACKEND)), "codex-at-a");
    let (_, v) = env.admin(Method::GET, "/admin/openai-accounts", None).await;
    let b = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "b")
        .unwrap()
        .clone();
    let until = chrono::DateTime::parse_from_rfc3339(b["cooldownUntil"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let left = until - chrono::Utc::now().timestamp();
    assert!((5300..=5400).contains(&left), "{left}");
    assert!(
        b["cooldownReason"]
            .as_str()
            .unwrap()
            .contains("usage limit"),
        "{b}"
    );
    let r = responses(&env, &key, json!({"model": "gpt-5", "input": "y"}), "x").await;
    assert_eq!(r.status(), 200);
    assert_eq!(bearer_of(&last_seen(&mock, BACKEND)), "codex-at-a");

    // With no other account, the client gets Codex's own refusal.
    let (_, only) = env
        .create_key(json!({"name": "bound", "permissions": ["openai"], "openaiAccountId": a}))
        .await;
    mock.state.scripted.lock().insert(
        "codex-at-a".into(),
        crs::mock::Scripted {
            status: 429,
            message: "60".into(),
            headers: vec![],
            times: Some(1),
        },
    );
    let r = responses(&env, &only, json!({"model": "gpt-5", "input": "w"}), "x").await;
    assert_eq!(r.status(), 429);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "usage_limit_reached");
    env.stop().await;
}

#[tokio::test]
async fn images_bridge_answers_in_the_images_format() {
    let mock = extra_mock().await;
    let env = env_with_auth(&mock).await;
    token_account(&env, &mock, "img", "codex-at-img", 10).await;
    let (key_id, key) = env
        .create_key(json!({"name": "k", "permissions": ["openai"]}))
        .await;
    let r = env
        .http
        .post(env.url("/openai/v1/images/generations"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-image-1", "prompt": "a red fox", "size": "1024x1024", "quality": "low"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = r.json().await.unwrap();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{v}");
    assert!(
        data[0]["b64_json"]
            .as_str()
            .unwrap()
            .starts_with("iVBORw0KGgo")
    );
    assert_eq!(data[0]["revised_prompt"], "A picture of a red fox");
    assert_eq!(v["size"], "1024x1024");
    assert!(v["created"].as_i64().unwrap() > 1_700_000_000);
    let seen = last_seen(&mock, BACKEND);
    assert_eq!(
        seen.header("chatgpt-account-id"),
        Some(MOCK_CHATGPT_ACCOUNT)
    );
    let body: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(body["model"], "gpt-5.4-mini");
    assert_eq!(body["stream"], true);
    assert_eq!(body["tool_choice"]["type"], "image_generation");
    assert_eq!(body["tools"][0]["model"], "gpt-image-1");
    assert_eq!(body["tools"][0]["quality"], "low");
    let t = env.key_totals(&key_id).await;
    let served = mock.state.served_total();
    assert_eq!(t.requests, 1);
    assert_eq!(t.input_tokens, served.input_tokens);
    assert_eq!(t.output_tokens, served.output_tokens);

    // Bad requests are the client's: a 400 in OpenAI's format, nothing sent upstream.
    let before = hits(&mock, BACKEND);
    for bad in [
        json!({"model": "dall-e-3", "prompt": "x"}),
        json!({"model": "gpt-image-1", "prompt": ""}),
        json!({"model": "gpt-image-1", "prompt": "x", "n": 11}),
    ] {
        let r = env
            .http
            .post(env.url("/openai/images/generations"))
            .bearer_auth(&key)
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    }
    assert_eq!(hits(&mock, BACKEND), before);
    env.stop().await;
}

//! Every account type through its client routes: OpenAI Responses, Gemini, Azure, Droid, and
//! Claude subscription accounts with the OAuth flow and token refresh.

use std::time::Duration;

use crate::common::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn usage_of(env: &Env, key: &str) -> Value {
    env.usage(key).await["usage"]["total"].clone()
}

#[tokio::test]
async fn openai_responses_relay_counts_cached_tokens_once() {
    let env = Env::start().await;
    let acc = env
        .create("openai-responses-accounts", json!({"name": "o", "baseApi": format!("{}/v1", env.mock.url()), "apiKey": UPSTREAM_KEY}))
        .await;
    let (_, key) = env
        .create_key(json!({"name": "codex", "permissions": ["openai"]}))
        .await;
    for (path, stream) in [("/openai/v1/responses", false), ("/openai/responses", true)] {
        let r = env
            .http
            .post(env.url(path))
            .bearer_auth(&key)
            .header("session_id", "sess-1")
            .json(
                &json!({"model": "gpt-5", "input": "hi mock:usage=300,40,0,100", "stream": stream}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let text = r.text().await.unwrap();
        if stream {
            assert!(text.starts_with("event: response.created"));
            assert!(text.contains("event: response.completed"));
        } else {
            assert_eq!(
                serde_json::from_str::<Value>(&text).unwrap()["object"],
                "response"
            );
        }
    }
    let seen = env.mock.state.seen.lock().clone();
    assert!(seen.iter().all(|s| s.path == "/v1/responses"));
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    assert_eq!(
        seen[0].header("session_id"),
        Some("sess-1"),
        "Codex's cache header is forwarded"
    );
    // input_tokens 400 of which 100 cached -> input 300, cache read 100.
    let t = usage_of(&env, &key).await;
    assert_eq!(
        (
            t["requests"].as_u64(),
            t["inputTokens"].as_u64(),
            t["cacheReadTokens"].as_u64()
        ),
        (Some(2), Some(600), Some(200))
    );
    assert_eq!(t["outputTokens"], 80);
    let r = env
        .http
        .get(env.url("/openai/usage"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["usage"]["total"]["requests"],
        2
    );
    // /compact
    let r = env
        .http
        .post(env.url("/openai/v1/responses/compact"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-5", "input": "compact me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        env.mock.state.seen.lock().last().unwrap().path,
        "/v1/responses/compact"
    );
    // Upstream errors and policy errors arrive in OpenAI's format.
    let (_, claude_only) = env
        .create_key(json!({"name": "c", "permissions": ["claude"]}))
        .await;
    let r = env
        .http
        .post(env.url("/openai/v1/responses"))
        .bearer_auth(&claude_only)
        .json(&json!({"model": "gpt-5", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        json!({"message": "This API key does not have permission to access OpenAI", "type": "permission_denied", "code": "permission_denied"})
    );
    let r = env
        .http
        .post(env.url("/openai/v1/responses"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-5", "input": "mock:status=400"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["type"],
        "invalid_request_error"
    );
    let (s, v) = env
        .admin(
            Method::GET,
            &format!("/admin/openai-responses-accounts/{acc}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["usage"]["total"]["requests"], 3);
    env.stop().await;
}

#[tokio::test]
async fn gemini_sse_passes_through_and_usage_metadata_is_recorded() {
    let env = Env::start().await;
    env.create(
        "gemini-api-accounts",
        json!({"name": "g", "baseUrl": env.mock.url(), "apiKey": UPSTREAM_KEY}),
    )
    .await;
    let (key_id, key) = env
        .create_key(json!({"name": "gem", "permissions": ["gemini"]}))
        .await;
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi mock:usage=1000,50,0,400 mock:chunks=4"}]}]});
    let r = env
        .http
        .post(env.url("/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"))
        .header("x-goog-api-key", &key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = r.bytes().await.unwrap();
    eventually("mock finished", || {
        !env.mock.state.sent_streams.lock().is_empty()
    })
    .await;
    assert_eq!(
        got,
        env.mock.state.sent_streams.lock()[0],
        "SSE bytes unchanged"
    );
    assert!(String::from_utf8_lossy(&got).contains("usageMetadata"));
    let seen = env.mock.state.seen.lock()[0].clone();
    assert_eq!(
        seen.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    );
    assert_eq!(seen.query.as_deref(), Some("alt=sse"));
    assert_eq!(seen.header("x-goog-api-key"), Some(UPSTREAM_KEY));

    // Non-stream with the key in ?key=, and countTokens (not billed).
    let r = env
        .http
        .post(env.url(&format!(
            "/gemini/v1/models/gemini-2.5-pro:generateContent?key={key}"
        )))
        .json(&json!({"contents": [{"parts": [{"text": "x mock:usage=10,5,0,0"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .http
        .post(env.url("/gemini/v1beta/models/gemini-2.5-pro:countTokens"))
        .header("x-goog-api-key", &key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.json::<Value>().await.unwrap()["totalTokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    let st = env.crs.as_ref().unwrap().state.clone();
    st.ledger.flush().await;
    let c = st
        .store
        .usage_get(&format!("t|km|{key_id}|gemini-2.5-flash"))
        .unwrap()
        .unwrap();
    // promptTokenCount 1400 with 400 cached -> input 1000, cache read 400.
    assert_eq!(
        (
            c.requests,
            c.input_tokens,
            c.cache_read_tokens,
            c.output_tokens
        ),
        (1, 1000, 400, 50)
    );
    assert!(c.real_cost_picos > 0, "Gemini is priced too");
    let t = usage_of(&env, &key).await;
    assert_eq!(t["requests"], 2);

    // Gemini errors in Gemini's format.
    let r = env
        .http
        .post(env.url("/gemini/v1beta/models/gemini-2.5-pro:generateContent"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["status"],
        "UNAUTHENTICATED"
    );
    let r = env
        .http
        .post(env.url("/gemini/v1beta/models/gemini-2.5-pro:explode"))
        .header("x-goog-api-key", &key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    env.stop().await;
}

#[tokio::test]
async fn azure_chat_and_responses() {
    let env = Env::start().await;
    env.create(
        "azure-openai-accounts",
        json!({"name": "az", "azureEndpoint": env.mock.url(), "apiKey": UPSTREAM_KEY, "deploymentName": "gpt4o-prod"}),
    )
    .await;
    let (_, key) = env.create_key(json!({"name": "az"})).await;
    let r = env
        .http
        .post(env.url("/azure/chat/completions"))
        .header("api-key", &key)
        .json(
            &json!({"model": "gpt-4o", "stream": true, "stream_options": {"include_usage": true},
                      "messages": [{"role": "user", "content": "hi mock:usage=200,20,0,50"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().ends_with("data: [DONE]\n\n"));
    let s = env.mock.state.seen.lock()[0].clone();
    assert_eq!(s.path, "/openai/deployments/gpt4o-prod/chat/completions");
    assert!(s.query.as_deref().unwrap().starts_with("api-version="));
    assert_eq!(s.header("api-key"), Some(UPSTREAM_KEY));
    let r = env
        .http
        .post(env.url("/azure/responses"))
        .header("api-key", &key)
        .json(&json!({"model": "gpt-4o", "input": "x mock:usage=10,2,0,0"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let t = usage_of(&env, &key).await;
    assert_eq!(
        (
            t["requests"].as_u64(),
            t["inputTokens"].as_u64(),
            t["cacheReadTokens"].as_u64()
        ),
        (Some(2), Some(210), Some(50))
    );
    env.stop().await;
}

/// `/azure/embeddings` (v1's route): an embeddings deployment, usage in prompt tokens.
#[tokio::test]
async fn azure_embeddings_reach_the_embeddings_deployment() {
    let env = Env::start().await;
    env.create(
        "azure-openai-accounts",
        json!({"name": "emb", "azureEndpoint": env.mock.url(), "apiKey": UPSTREAM_KEY,
            "deploymentName": "embed-prod", "supportedModels": {"text-embedding-3-small": "text-embedding-3-small"}}),
    )
    .await;
    let (_, key) = env.create_key(json!({"name": "embedder"})).await;
    let r = env
        .http
        .post(env.url("/azure/embeddings"))
        .header("api-key", &key)
        .json(
            &json!({"model": "text-embedding-3-small", "input": ["one mock:usage=7,0,0,0", "two"]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert_eq!(v["usage"]["prompt_tokens"], 7);
    let s = last_seen(&env.mock, "/openai/deployments/embed-prod/embeddings");
    assert!(s.query.as_deref().unwrap().starts_with("api-version="));
    assert_eq!(s.header("api-key"), Some(UPSTREAM_KEY));
    let t = usage_of(&env, &key).await;
    assert_eq!(
        (
            t["requests"].as_u64(),
            t["inputTokens"].as_u64(),
            t["outputTokens"].as_u64()
        ),
        (Some(1), Some(7), Some(0))
    );
    // A model no account serves is refused before any upstream sees it.
    let r = env
        .http
        .post(env.url("/azure/embeddings"))
        .header("api-key", &key)
        .json(&json!({"model": "text-embedding-3-large", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    env.stop().await;
}

#[tokio::test]
async fn droid_routes_reach_droid_accounts() {
    let env = Env::start().await;
    env.create(
        "droid-accounts",
        json!({"name": "d", "baseUrl": env.mock.url(), "apiKey": UPSTREAM_KEY}),
    )
    .await;
    let (_, key) = env
        .create_key(json!({"name": "droid", "permissions": ["droid"]}))
        .await;
    let r = env
        .http
        .post(env.url("/droid/claude/v1/messages"))
        .header("x-api-key", &key)
        .json(&msg_body(
            "claude-sonnet-4-5-20250929",
            false,
            "mock:usage=5,5,0,0",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = env
        .http
        .post(env.url("/droid/openai/v1/responses"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-5", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let paths: Vec<String> = env
        .mock
        .state
        .seen
        .lock()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(paths, vec!["/a/v1/messages", "/o/v1/responses"]);
    // A droid key cannot use the Claude routes.
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    env.stop().await;
}

/// The OAuth flow an admin goes through: generate the URL, paste the code, create the
/// account; requests carry the bearer token and the OAuth beta flag.
#[tokio::test]
async fn claude_oauth_flow_and_token_refresh() {
    let mock = extra_mock().await;
    let token_url = format!("{}/v1/oauth/token", mock.url());
    let env = Env::start_with(|c| c.claude_oauth_token_url = token_url.clone()).await;
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/claude-accounts/generate-auth-url",
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 200);
    let url = v["data"]["authUrl"].as_str().unwrap().to_owned();
    assert!(url.starts_with("https://claude.ai/oauth/authorize?code=true&client_id="));
    assert!(url.contains("code_challenge_method=S256"));
    let challenge = query_param(&url, "code_challenge");
    let session = v["data"]["sessionId"].as_str().unwrap();
    // The code as Claude's callback page shows it: code#state.
    let (s, bad) = env
        .admin(
            Method::POST,
            "/admin/claude-accounts/exchange-code",
            Some(json!({"sessionId": session, "authorizationCode": "wrong#s"})),
        )
        .await;
    assert_eq!(s, 400, "{bad}");
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/claude-accounts/exchange-code",
            Some(json!({"sessionId": session, "authorizationCode": format!("code-{challenge}#state")})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let oauth = v["data"]["claudeAiOauth"].clone();
    assert!(
        oauth["accessToken"]
            .as_str()
            .unwrap()
            .starts_with("sk-ant-oat01-")
    );
    assert!(
        oauth["refreshToken"]
            .as_str()
            .unwrap()
            .starts_with("sk-ant-ort01-")
    );
    let id = env
        .create(
            "claude-accounts",
            json!({"name": "max", "apiUrl": mock.url(), "claudeAiOauth": oauth, "priority": 10}),
        )
        .await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "x"))
        .header("anthropic-beta", "prompt-caching-2024-07-31")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s = mock
        .state
        .seen
        .lock()
        .iter()
        .rev()
        .find(|s| s.path == "/v1/messages")
        .cloned()
        .unwrap();
    let access = oauth["accessToken"].as_str().unwrap();
    assert_eq!(
        s.header("authorization"),
        Some(format!("Bearer {access}").as_str())
    );
    assert_eq!(
        s.header("anthropic-beta"),
        Some("oauth-2025-04-20,prompt-caching-2024-07-31")
    );
    assert_eq!(s.header("x-api-key"), None);
    let (_, v) = env
        .admin(Method::GET, &format!("/admin/claude-accounts/{id}"), None)
        .await;
    assert!(!v.to_string().contains(access), "tokens are never returned");
    assert_eq!(v["data"]["hasRefreshToken"], true);

    // A token about to expire is refreshed before the request; the new token is used.
    let soon = chrono::Utc::now().timestamp_millis() + 20_000;
    let (s, _) = env
        .admin(
            Method::PUT,
            &format!("/admin/claude-accounts/{id}"),
            Some(json!({"claudeAiOauth": {"accessToken": access, "refreshToken": oauth["refreshToken"], "expiresAt": soon}})),
        )
        .await;
    assert_eq!(s, 200);
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "y"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let refreshes: Vec<Value> = mock
        .state
        .seen
        .lock()
        .iter()
        .filter(|s| s.path == "/v1/oauth/token")
        .map(|s| serde_json::from_slice(&s.body).unwrap())
        .filter(|b: &Value| b["grant_type"] == "refresh_token")
        .collect();
    assert_eq!(refreshes.len(), 1);
    let used = mock
        .state
        .seen
        .lock()
        .iter()
        .rev()
        .find(|s| s.path == "/v1/messages")
        .cloned()
        .unwrap();
    assert_ne!(
        used.header("authorization"),
        Some(format!("Bearer {access}").as_str()),
        "the refreshed token is used"
    );
    let (_, v) = env
        .admin(Method::GET, &format!("/admin/claude-accounts/{id}"), None)
        .await;
    assert!(v["data"]["tokenExpiresAt"].as_i64().unwrap() > soon + 3_600_000);

    // A failed refresh marks the account and takes it out of rotation instead of failing
    // requests silently: with a console account as backup the client still gets an answer.
    mock.state
        .oauth_fail_refresh
        .store(true, std::sync::atomic::Ordering::Relaxed);
    env.create_account(json!({"name": "backup", "priority": 90}))
        .await;
    let (s, _) = env
        .admin(
            Method::PUT,
            &format!("/admin/claude-accounts/{id}"),
            Some(json!({"claudeAiOauth": {"accessToken": "sk-ant-oat01-old", "refreshToken": "sk-ant-ort01-old", "expiresAt": soon}})),
        )
        .await;
    assert_eq!(s, 200);
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "z"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "served by the backup");
    let mut status = Value::Null;
    for _ in 0..100 {
        let (_, v) = env
            .admin(Method::GET, &format!("/admin/claude-accounts/{id}"), None)
            .await;
        status = v["data"]["status"].clone();
        if status == "refresh_failed" {
            assert!(
                v["data"]["errorMessage"]
                    .as_str()
                    .unwrap()
                    .contains("refresh")
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, "refresh_failed");
    env.stop().await;
}

#[tokio::test]
async fn setup_tokens_and_the_account_test_button() {
    let mock = extra_mock().await;
    let token_url = format!("{}/v1/oauth/token", mock.url());
    let env = Env::start_with(|c| c.claude_oauth_token_url = token_url.clone()).await;
    let (_, v) = env
        .admin(
            Method::POST,
            "/admin/claude-accounts/generate-setup-token-url",
            Some(json!({})),
        )
        .await;
    let url = v["data"]["authUrl"].as_str().unwrap().to_owned();
    assert!(url.contains("scope=user%3Ainference&"));
    let challenge = query_param(&url, "code_challenge");
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/claude-accounts/exchange-setup-token-code",
            Some(json!({"sessionId": v["data"]["sessionId"], "callbackUrl": format!("https://console.anthropic.com/oauth/code/callback?code=code-{challenge}&state=s")})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let oauth = &v["data"]["claudeAiOauth"];
    assert_eq!(oauth["refreshToken"], "");
    assert!(
        oauth["expiresAt"].as_i64().unwrap()
            > chrono::Utc::now().timestamp_millis() + 300 * 86_400_000
    );
    let id = env
        .create(
            "claude-accounts",
            json!({"name": "setup", "apiUrl": mock.url(), "claudeAiOauth": oauth}),
        )
        .await;
    let (s, v) = env
        .admin(
            Method::POST,
            &format!("/admin/claude-accounts/{id}/test"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["ok"], true, "{v}");
    assert_eq!(v["data"]["status"], 200);
    // A broken account says why.
    let bad = env
        .create(
            "claude-console-accounts",
            json!({"name": "bad", "apiUrl": mock.url(), "apiKey": "sk-ant-wrong"}),
        )
        .await;
    let (_, v) = env
        .admin(
            Method::POST,
            &format!("/admin/claude-console-accounts/{bad}/test"),
            None,
        )
        .await;
    assert_eq!(v["data"]["ok"], false);
    assert_eq!(v["data"]["status"], 401);
    assert!(
        v["data"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid x-api-key")
    );
    env.stop().await;
}

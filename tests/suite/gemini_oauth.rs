//! Gemini OAuth accounts (v1's `gemini` type) against the mock's Google token endpoint and
//! Code Assist: the authorisation flow, refresh, onboarding, the request as Code Assist gets
//! it, answers unwrapped for standard Gemini clients (and the Chat Completions conversion),
//! the Gemini CLI's `v1internal` routes, and usage.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crs::mock::Scripted;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::*;

const MODEL: &str = "gemini-2.5-flash";

/// The config that points Gemini OAuth (Google's endpoints, Code Assist) at `mock`.
pub fn point_at(c: &mut crs::config::Config, mock: &str) {
    c.gemini_oauth_token_url = format!("{mock}/token");
    c.gemini_code_assist_url = mock.to_owned();
    c.gemini_onboard_poll = Duration::from_millis(10);
}

/// A Gemini OAuth account with tokens valid for `expires_in_ms` and optional project.
async fn account(env: &Env, name: &str, project: Option<&str>, expires_in_ms: i64) -> String {
    let mut body = json!({
        "name": name,
        "geminiOauth": {
            "access_token": format!("ya29.{name}"),
            "refresh_token": format!("1//mock-{name}"),
            "scope": "https://www.googleapis.com/auth/cloud-platform",
            "token_type": "Bearer",
            "expiry_date": chrono::Utc::now().timestamp_millis() + expires_in_ms,
        },
    });
    if let Some(p) = project {
        body["projectId"] = json!(p);
    }
    env.create("gemini-accounts", body).await
}

fn gemini_body(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}],
           "generationConfig": {"maxOutputTokens": 64}})
}

fn post(env: &Env, path: &str, key: &str, body: &Value) -> reqwest::RequestBuilder {
    env.http
        .post(env.url(path))
        .header("x-goog-api-key", key)
        .json(body)
}

fn seen(env: &Env, path: &str) -> Vec<crs::mock::SeenRequest> {
    env.mock
        .state
        .seen
        .lock()
        .iter()
        .filter(|s| s.path == path)
        .cloned()
        .collect()
}

fn body_of(s: &crs::mock::SeenRequest) -> Value {
    serde_json::from_slice(&s.body).unwrap()
}

fn form_field(s: &crs::mock::SeenRequest, k: &str) -> String {
    String::from_utf8_lossy(&s.body)
        .split('&')
        .find_map(|p| p.strip_prefix(&format!("{k}=")).map(str::to_owned))
        .unwrap_or_default()
}

/// The JSON of every `data:` line of an SSE body.
fn data_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect()
}

/// crs pointed at the harness's mock, which takes any bearer token.
pub async fn pointed_env() -> Env {
    let env = Env::start_with_mock(point_at).await;
    env.mock.state.accepted_keys.lock().clear();
    env
}

#[tokio::test]
async fn authorisation_url_code_exchange_and_account() {
    let env = pointed_env().await;
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/gemini-accounts/generate-auth-url",
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let url = v["data"]["authUrl"].as_str().unwrap().to_owned();
    assert!(url.starts_with("https://accounts.google.com/o/oauth2/v2/auth?access_type=offline"));
    for part in [
        "code_challenge_method=S256",
        "prompt=select_account",
        "response_type=code",
        "client_id=681255809395-oo8ft2oprdrnp9e3aqf6av3hmdib135j.apps.googleusercontent.com",
        "redirect_uri=https%3A%2F%2Fcodeassist.google.com%2Fauthcode",
        "scope=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-platform",
    ] {
        assert!(url.contains(part), "{part} missing from {url}");
    }
    let challenge = query_param(&url, "code_challenge");
    let session = v["data"]["sessionId"].as_str().unwrap();
    let (s, bad) = env
        .admin(
            Method::POST,
            "/admin/gemini-accounts/exchange-code",
            Some(json!({"sessionId": session, "code": "wrong"})),
        )
        .await;
    assert_eq!(s, 400, "{bad}");
    assert!(bad["message"].as_str().unwrap().contains("invalid_grant"));
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/gemini-accounts/exchange-code",
            Some(json!({"sessionId": session, "code": format!("code-{challenge}")})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let tokens = v["data"]["tokens"].clone();
    assert!(
        tokens["access_token"]
            .as_str()
            .unwrap()
            .starts_with("ya29.mock-")
    );
    assert!(
        tokens["refresh_token"]
            .as_str()
            .unwrap()
            .starts_with("1//mock-")
    );
    assert!(tokens["expiry_date"].as_i64().unwrap() > chrono::Utc::now().timestamp_millis());
    // Google's token endpoint got a form with the Gemini CLI's client and the PKCE verifier.
    let t = seen(&env, "/token").pop().unwrap();
    assert_eq!(
        t.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(form_field(&t, "grant_type"), "authorization_code");
    assert!(!form_field(&t, "code_verifier").is_empty());
    assert_eq!(
        form_field(&t, "client_secret"),
        "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"
    );

    // The tokens become an account; its view shows no secret.
    let id = env
        .create(
            "gemini-accounts",
            json!({"name": "g", "geminiOauth": tokens, "projectId": "proj-1"}),
        )
        .await;
    let v = env.view("gemini-accounts", &id).await;
    assert_eq!(v["platform"], "gemini");
    assert_eq!(v["hasRefreshToken"], true);
    assert_eq!(v["projectId"], "proj-1");
    assert!(
        !v.to_string()
            .contains(tokens["access_token"].as_str().unwrap())
    );
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/gemini-accounts",
            Some(json!({"name": "no tokens"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    env.stop().await;
}

#[tokio::test]
async fn standard_gemini_routes_are_wrapped_for_code_assist_and_unwrapped() {
    let env = pointed_env().await;
    let id = account(&env, "a", Some("proj-a"), 8 * 3_600_000).await;
    let (key_id, key) = env.create_key(json!({"name": "k"})).await;

    // Non-stream.
    let body = gemini_body("hello mock:usage=100,20,0,30");
    let r = post(
        &env,
        &format!("/gemini/v1beta/models/{MODEL}:generateContent"),
        &key,
        &body,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v.get("response").is_none(), "unwrapped: {v}");
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        "Hello from the mock upstream."
    );
    let up = seen(&env, "/v1internal:generateContent").pop().unwrap();
    assert_eq!(up.header("authorization"), Some("Bearer ya29.a"));
    let b = body_of(&up);
    assert_eq!(b["model"], MODEL);
    assert_eq!(b["project"], "proj-a");
    assert_eq!(b["request"], body, "the client's body, as it came");

    // Stream: every data line unwrapped, usage from the last usageMetadata.
    let r = post(
        &env,
        &format!("/gemini/v1/models/{MODEL}:streamGenerateContent?alt=sse"),
        &key,
        &gemini_body("stream mock:usage=50,10,0,0"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let lines = data_lines(&r.text().await.unwrap());
    assert_eq!(lines.len(), 3);
    for l in &lines {
        assert!(
            l.get("response").is_none() && l.get("candidates").is_some(),
            "{l}"
        );
    }
    let up = seen(&env, "/v1internal:streamGenerateContent")
        .pop()
        .unwrap();
    assert_eq!(up.query.as_deref(), Some("alt=sse"));

    // countTokens: Code Assist's shape, not billed.
    let r = post(
        &env,
        &format!("/gemini/v1beta/models/{MODEL}:countTokens"),
        &key,
        &gemini_body("count"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["totalTokens"].as_u64().unwrap() > 0);
    let b = body_of(&seen(&env, "/v1internal:countTokens").pop().unwrap());
    assert_eq!(b["request"]["model"], format!("models/{MODEL}"));

    let t = env.key_totals(&key_id).await;
    assert_eq!(t.requests, 2);
    assert_eq!(
        (t.input_tokens, t.output_tokens, t.cache_read_tokens),
        (150, 30, 30)
    );
    assert_eq!(env.view("gemini-accounts", &id).await["status"], "active");

    // The account test goes the same way.
    let (s, v) = env
        .admin(
            Method::POST,
            &format!("/admin/gemini-accounts/{id}/test"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["data"]["ok"], true, "{v}");
    env.stop().await;
}

#[tokio::test]
async fn onboarding_finds_the_project_once_and_keeps_it() {
    let env = pointed_env().await;
    env.mock.state.onboard_pending.store(2, Ordering::Relaxed);
    let id = account(&env, "a", None, 8 * 3_600_000).await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    for n in 0..2 {
        let r = post(
            &env,
            &format!("/gemini/v1beta/models/{MODEL}:generateContent"),
            &key,
            &gemini_body(&format!("q{n}")),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text().await);
    }
    // loadCodeAssist named no project; onboardUser was asked until its operation was done.
    assert_eq!(seen(&env, "/v1internal:loadCodeAssist").len(), 1);
    let onboard = seen(&env, "/v1internal:onboardUser");
    assert_eq!(onboard.len(), 3);
    assert_eq!(body_of(&onboard[0])["tierId"], "free-tier");
    for g in seen(&env, "/v1internal:generateContent") {
        assert_eq!(body_of(&g)["project"], crs::mock::codeassist::MOCK_PROJECT);
    }
    assert_eq!(
        env.view("gemini-accounts", &id).await["tempProjectId"],
        crs::mock::codeassist::MOCK_PROJECT
    );
    env.stop().await;
}

#[tokio::test]
async fn tokens_refresh_ahead_of_expiry_and_after_a_401() {
    let env = pointed_env().await;
    // Expires within the minute: refreshed before the request goes out.
    let id = account(&env, "a", Some("p"), 30_000).await;
    let (_, key) = env.create_key(json!({"name": "k"})).await;
    let ask = |text: &str| {
        post(
            &env,
            &format!("/gemini/v1beta/models/{MODEL}:generateContent"),
            &key,
            &gemini_body(text),
        )
        .send()
    };
    assert_eq!(ask("one").await.unwrap().status(), 200);
    let grants = seen(&env, "/token");
    assert_eq!(grants.len(), 1);
    assert_eq!(form_field(&grants[0], "grant_type"), "refresh_token");
    assert_eq!(form_field(&grants[0], "refresh_token"), "1%2F%2Fmock-a");
    let sent = seen(&env, "/v1internal:generateContent");
    let fresh = sent[0].header("authorization").unwrap().to_owned();
    assert!(fresh.starts_with("Bearer ya29.mock-"), "{fresh}");
    let v = env.view("gemini-accounts", &id).await;
    assert_eq!(
        v["hasRefreshToken"], true,
        "Google's refresh kept the old one"
    );
    assert!(
        v["tokenExpiresAt"].as_i64().unwrap() > chrono::Utc::now().timestamp_millis() + 3_600_000
    );

    // A revoked token: refreshed once, the same account retried.
    env.mock.state.scripted.lock().insert(
        fresh.trim_start_matches("Bearer ").to_owned(),
        Scripted {
            status: 401,
            message: "Request had invalid authentication credentials.".into(),
            headers: vec![],
            times: Some(1),
        },
    );
    let r = ask("two").await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert_eq!(seen(&env, "/token").len(), 2);
    let sent = seen(&env, "/v1internal:generateContent");
    assert_eq!(sent.len(), 3);
    assert_ne!(sent[2].header("authorization").unwrap(), fresh);

    // A refresh Google refuses marks the account.
    env.mock
        .state
        .oauth_fail_refresh
        .store(true, Ordering::Relaxed);
    let (s, v) = env
        .admin(
            Method::POST,
            &format!("/admin/gemini-accounts/{id}/refresh"),
            None,
        )
        .await;
    assert_eq!(s, 502, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("invalid_grant"),
        "{v}"
    );
    eventually_status(&env, &id, "refresh_failed").await;
    env.stop().await;
}

async fn eventually_status(env: &Env, id: &str, want: &str) {
    for _ in 0..200 {
        if env.view("gemini-accounts", id).await["status"] == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("account {id} never became {want}");
}

#[tokio::test]
async fn gemini_cli_v1internal_routes_pass_through_with_the_account() {
    let env = pointed_env().await;
    account(&env, "a", Some("proj-a"), 8 * 3_600_000).await;
    let (key_id, key) = env.create_key(json!({"name": "k"})).await;
    let call = |path: &str, body: Value| {
        env.http
            .post(env.url(path))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let meta = json!({"ideType": "IDE_UNSPECIFIED", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI"});

    let r = call(
        "/gemini/v1internal:loadCodeAssist",
        json!({"metadata": meta}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["cloudaicompanionProject"], "proj-a",
        "the account's project: {v}"
    );
    let up = seen(&env, "/v1internal:loadCodeAssist").pop().unwrap();
    assert_eq!(up.header("authorization"), Some("Bearer ya29.a"));

    let r = call(
        "/gemini/v1beta/models/gemini-2.5-pro:onboardUser",
        json!({"tierId": "free-tier", "metadata": meta}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["done"], true);
    assert_eq!(
        body_of(&seen(&env, "/v1internal:onboardUser").pop().unwrap())["cloudaicompanionProject"],
        "proj-a"
    );

    let r = call(
        "/gemini/v1internal:listExperiments",
        json!({"project": "x", "metadata": meta}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap().get("flags").is_some());
    let r = call(
        "/gemini/v1beta/models/gemini-2.5-pro:listExperiments",
        json!({"metadata": meta}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);

    let r = call(
        "/gemini/v1internal:retrieveUserQuota",
        json!({"project": "client-project"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.json::<Value>().await.unwrap()["buckets"].is_array());
    assert_eq!(
        body_of(&seen(&env, "/v1internal:retrieveUserQuota").pop().unwrap())["project"],
        "proj-a"
    );

    let r = call(
        "/gemini/v1internal:countTokens",
        json!({"request": {"model": "models/gemini-2.5-pro", "contents": [{"role": "user", "parts": [{"text": "hi"}]}]}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.json::<Value>().await.unwrap()["totalTokens"]
            .as_u64()
            .unwrap()
            > 0
    );

    // Generation: in Code Assist's format both ways, the account's project, billed.
    let wrapped = |text: &str| {
        json!({"model": "gemini-2.5-pro", "project": "client-project", "user_prompt_id": "u-1",
               "request": gemini_body(text)})
    };
    let r = call(
        "/gemini/v1internal:generateContent",
        wrapped("g mock:usage=40,8,0,0"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["response"]["candidates"][0]["content"]["parts"][0]["text"],
        "Hello from the mock upstream."
    );
    let b = body_of(&seen(&env, "/v1internal:generateContent").pop().unwrap());
    assert_eq!(
        (b["project"].as_str(), b["user_prompt_id"].as_str()),
        (Some("proj-a"), Some("u-1"))
    );

    let r = call(
        "/gemini/v1internal:streamGenerateContent?alt=sse",
        wrapped("s mock:usage=60,12,0,0"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let lines = data_lines(&r.text().await.unwrap());
    assert_eq!(lines.len(), 3);
    assert!(
        lines.iter().all(|l| l["response"]["candidates"].is_array()),
        "{lines:?}"
    );

    let r = call("/gemini/v1internal:nope", json!({})).await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["status"],
        "NOT_FOUND"
    );

    let t = env.key_totals(&key_id).await;
    assert_eq!(t.requests, 2, "generation only");
    assert_eq!((t.input_tokens, t.output_tokens), (100, 20));
    env.stop().await;
}

#[tokio::test]
async fn chat_completions_work_on_an_oauth_account() {
    let env = pointed_env().await;
    account(&env, "a", Some("proj-a"), 8 * 3_600_000).await;
    let (key_id, key) = env.create_key(json!({"name": "k"})).await;
    let chat = |stream: bool, text: &str| {
        env.http
            .post(env.url("/openai/gemini/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": MODEL, "stream": stream,
                "messages": [{"role": "user", "content": text}]}))
            .send()
    };
    let r = chat(false, "hi mock:usage=30,6,0,0").await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from the mock upstream."
    );
    assert_eq!(v["usage"]["prompt_tokens"], 30);
    let b = body_of(&seen(&env, "/v1internal:generateContent").pop().unwrap());
    assert_eq!(b["project"], "proj-a");
    assert!(b["request"]["contents"].is_array());

    let r = chat(true, "hi mock:usage=20,4,0,0").await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let chunks: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk"),
        "{text}"
    );
    let said: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(said.starts_with("Hello from the mock upstream."), "{said}");
    assert!(text.trim_end().ends_with("data: [DONE]"));

    let t = env.key_totals(&key_id).await;
    assert_eq!((t.requests, t.input_tokens, t.output_tokens), (2, 50, 10));
    env.stop().await;
}

/// A v1 keyspace (the fixture) with a Gemini OAuth account written as v1's
/// geminiAccountService `createAccount` writes it and key K2 bound to it: `crs import` serves
/// the bound key through the account, and `crs export` writes the account back in v1's layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_gemini_accounts_import_serve_and_export() {
    use crate::import::{ENC_KEY, K2, PLAINTEXT, export_opts, fixture_keys, import_opts, redis};
    use crs::migrate::dump::{V1Key, V1Value};
    use crs::migrate::v1crypto::V1Crypto;
    use crs::migrate::{Source, Target};

    let Some(redis) = redis() else { return };
    crs::init_tls();
    const G: &str = "0d4f5c1e-6a7b-4c8d-9e0f-1a2b3c4d5e6f";
    const SALT: &str = "gemini-account-salt";
    let v1 = V1Crypto::new(ENC_KEY);
    let expiry_ms = chrono::Utc::now().timestamp_millis() + 8 * 3_600_000;
    let expires_at = chrono::DateTime::from_timestamp_millis(expiry_ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let oauth = json!({"access_token": "ya29.v1-access", "refresh_token": "1//mock-v1",
        "scope": "https://www.googleapis.com/auth/cloud-platform", "token_type": "Bearer",
        "expiry_date": expiry_ms});
    let record: Vec<(String, String)> = [
        ("id", G.to_owned()),
        ("platform", "gemini".into()),
        ("name", "v1 gemini".into()),
        ("description", "".into()),
        ("accountType", "shared".into()),
        ("isActive", "true".into()),
        ("status", "active".into()),
        ("schedulable", "true".into()),
        ("priority", "50".into()),
        ("geminiOauth", v1.encrypt(SALT, &oauth.to_string())),
        ("accessToken", v1.encrypt(SALT, "ya29.v1-access")),
        ("refreshToken", v1.encrypt(SALT, "1//mock-v1")),
        ("expiresAt", expires_at.clone()),
        (
            "scopes",
            "https://www.googleapis.com/auth/cloud-platform".into(),
        ),
        ("subscriptionExpiresAt", "".into()),
        ("proxy", "".into()),
        ("projectId", "proj-v1".into()),
        ("tempProjectId", "".into()),
        ("supportedModels", "".into()),
        ("createdAt", "2026-11-22T03:57:08.282Z".into()),
        ("updatedAt", "2026-11-22T03:57:08.282Z".into()),
        ("lastUsedAt", "".into()),
        ("lastRefreshAt", "".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut keys = fixture_keys();
    for k in &mut keys {
        if k.name == format!("apikey:{K2}")
            && let V1Value::Hash(fields) = &mut k.value
        {
            for (f, v) in fields.iter_mut() {
                if f == "geminiAccountId" {
                    *v = G.into();
                }
            }
        }
    }
    keys.push(V1Key::new(
        format!("gemini_account:{G}"),
        -1,
        V1Value::Hash(record),
    ));
    keys.push(V1Key::new(
        "shared_gemini_accounts",
        -1,
        V1Value::Set(vec![G.into()]),
    ));
    crs::migrate::redis_io::write_all(&redis.url(0), &keys, false)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = crs::migrate::import(&Source::Redis(redis.url(0)), &import_opts(dir.path()))
        .await
        .expect("import");
    assert_eq!(
        r.imported.get("accounts: gemini (OAuth)").copied(),
        Some(1),
        "{}",
        r.render()
    );

    // Served: the bound key reaches Code Assist with the decrypted token and the project.
    let mock = crs::mock::MockUpstream::start().await.unwrap();
    let mut cfg = test_config(dir.path());
    point_at(&mut cfg, &mock.url());
    let running = crs::server::start(cfg).await.unwrap();
    let key = PLAINTEXT.iter().find(|(id, _)| *id == K2).unwrap().1;
    let r = client()
        .post(format!(
            "{}/gemini/v1beta/models/{MODEL}:generateContent",
            running.url()
        ))
        .header("x-goog-api-key", key)
        .json(&gemini_body("from v1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let up = last_seen(&mock, "/v1internal:generateContent");
    assert_eq!(up.header("authorization"), Some("Bearer ya29.v1-access"));
    assert_eq!(body_of(&up)["project"], "proj-v1");
    running.shutdown(Duration::from_secs(5)).await;
    mock.stop();

    // Exported in v1's layout, secrets under v1's salt.
    crs::migrate::export(&Target::Redis(redis.url(1)), &export_opts(dir.path()))
        .await
        .unwrap();
    let mut out = std::collections::BTreeMap::new();
    crs::migrate::redis_io::read_all(&redis.url(1), false, &mut |k| {
        out.insert(k.name.clone(), k);
        Ok(())
    })
    .await
    .unwrap();
    let hash = |name: &str| -> std::collections::BTreeMap<String, String> {
        match &out
            .get(name)
            .unwrap_or_else(|| panic!("{name} exported"))
            .value
        {
            V1Value::Hash(f) => f.iter().cloned().collect(),
            other => panic!("{name}: {other:?}"),
        }
    };
    let g = hash(&format!("gemini_account:{G}"));
    assert_eq!(g["platform"], "gemini");
    assert_eq!(g["projectId"], "proj-v1");
    assert_eq!(g["expiresAt"], expires_at);
    assert_eq!(
        v1.decrypt(SALT, &g["accessToken"]).unwrap(),
        "ya29.v1-access"
    );
    assert_eq!(v1.decrypt(SALT, &g["refreshToken"]).unwrap(), "1//mock-v1");
    let blob: Value = serde_json::from_str(&v1.decrypt(SALT, &g["geminiOauth"]).unwrap()).unwrap();
    assert_eq!(blob, oauth);
    assert_eq!(hash(&format!("apikey:{K2}"))["geminiAccountId"], G);
}

//! Droid accounts end to end against the mock's Factory gateway and WorkOS token endpoint:
//! v1's request shape per endpoint type, WorkOS refresh (ahead of expiry, after a 401),
//! API-key pools (rotation, a refused key leaving the pool, an emptied pool out of rotation);
//! Bedrock API keys sent as bearer tokens.

use std::collections::HashSet;

use crate::common::*;
use crs::mock::MockUpstream;
use reqwest::Method;
use serde_json::{Value, json};

const GOOD_A: &str = "fk-pool-good-aaaa-0001";
const GOOD_B: &str = "fk-pool-good-bbbb-0002";
const BAD: &str = "fk-pool-revoked-0003";

fn accept(m: &MockUpstream, keys: &[&str]) {
    m.state
        .accepted_keys
        .lock()
        .extend(keys.iter().map(|k| k.to_string()));
}

async fn droid_key(env: &Env) -> String {
    env.create_key(json!({"name": "droid", "permissions": ["droid"]}))
        .await
        .1
}

async fn droid_messages(env: &Env, key: &str, text: &str) -> reqwest::Response {
    env.http
        .post(env.url("/droid/claude/v1/messages"))
        .header("x-api-key", key)
        .json(&msg_body("claude-sonnet-4-5-20250929", false, text))
        .send()
        .await
        .unwrap()
}

/// The bearer tokens the mock saw on `path`, in order.
fn bearers(m: &MockUpstream, path: &str) -> Vec<String> {
    m.state
        .seen
        .lock()
        .iter()
        .filter(|s| s.path == path)
        .filter_map(|s| s.header("authorization").map(str::to_owned))
        .map(|a| a.trim_start_matches("Bearer ").to_owned())
        .collect()
}

fn pool_status(view: &Value) -> Vec<(String, String)> {
    view["apiKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["status"].as_str().unwrap().to_owned(),
                k["errorMessage"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn request_shape_per_endpoint_type() {
    let env = Env::start().await;
    accept(&env.mock, &[GOOD_A]);
    env.create(
        "droid-accounts",
        json!({"name": "pool", "baseUrl": env.mock.url(), "apiKeys": [GOOD_A]}),
    )
    .await;
    let (key_id, key) = env
        .create_key(json!({"name": "droid", "permissions": ["droid"]}))
        .await;

    // anthropic: /a/v1/messages with v1's provider headers and the thinking beta.
    let mut body = msg_body("claude-sonnet-4-5-20250929", false, "mock:usage=11,7,0,0");
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    let r = env
        .http
        .post(env.url("/droid/claude/v1/messages"))
        .header("x-api-key", &key)
        .header("x-session-id", "sess-from-client")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s = last_seen(&env.mock, "/a/v1/messages");
    assert_eq!(
        s.header("authorization"),
        Some(format!("Bearer {GOOD_A}").as_str())
    );
    assert_eq!(s.header("x-api-key"), Some("placeholder"));
    assert_eq!(s.header("x-api-provider"), Some("anthropic"));
    assert_eq!(s.header("x-factory-client"), Some("cli"));
    assert_eq!(s.header("user-agent"), Some("factory-cli/0.19.12"));
    assert_eq!(s.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        s.header("anthropic-beta"),
        Some("interleaved-thinking-2025-05-14")
    );
    assert_eq!(s.header("x-session-id"), Some("sess-from-client"));
    let sent: Value = serde_json::from_slice(&s.body).unwrap();
    assert_eq!(
        sent["system"][0]["text"],
        crs::providers::droid::SYSTEM_PROMPT,
        "v1's Droid system prompt first"
    );
    assert!(
        !String::from_utf8_lossy(&s.body).contains(&key),
        "the crs key stays here"
    );

    // openai: /o/v1/responses, provider azure_openai, a session id made up per request.
    let r = env
        .http
        .post(env.url("/droid/openai/v1/responses"))
        .bearer_auth(&key)
        .json(&json!({"model": "gpt-5", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s = last_seen(&env.mock, "/o/v1/responses");
    assert_eq!(s.header("x-api-provider"), Some("azure_openai"));
    assert_eq!(
        s.header("authorization"),
        Some(format!("Bearer {GOOD_A}").as_str())
    );
    assert_eq!(s.header("x-api-key"), None);
    let sid = s.header("x-session-id").unwrap();
    assert!(uuid::Uuid::parse_str(sid).is_ok(), "{sid}");

    // comm: /o/v1/chat/completions, provider by model family.
    for (model, provider) in [("glm-4.6", "fireworks"), ("gemini-2.5-pro", "google")] {
        let r = env
            .http
            .post(env.url("/droid/comm/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{model}");
        let s = last_seen(&env.mock, "/o/v1/chat/completions");
        assert_eq!(s.header("x-api-provider"), Some(provider), "{model}");
    }

    // Usage of the answers was recorded for the key.
    let t = env.key_totals(&key_id).await;
    assert_eq!(t.requests, 4);
    assert!(t.input_tokens >= 11 && t.output_tokens >= 7, "{t:?}");
    env.stop().await;
}

#[tokio::test]
async fn pool_rotates_and_a_refused_key_leaves_it() {
    let env = Env::start().await;
    accept(&env.mock, &[GOOD_A, GOOD_B]);
    let id = env
        .create(
            "droid-accounts",
            json!({"name": "pool", "baseUrl": env.mock.url(), "apiKeys": [GOOD_A, BAD, GOOD_B, GOOD_A]}),
        )
        .await;
    let view = env.view("droid-accounts", &id).await;
    assert_eq!(view["authenticationMethod"], "api_key");
    assert_eq!(view["apiKeyCount"], 3, "duplicates are refused by hash");
    assert!(!view.to_string().contains(BAD), "keys are shown masked");
    let key = droid_key(&env).await;

    // Until the revoked key has been tried (random picks), every request still succeeds:
    // the refused key leaves the pool and the request goes on with another key.
    let mut n = 0;
    while !bearers(&env.mock, "/a/v1/messages").contains(&BAD.to_owned()) {
        n += 1;
        assert!(n < 200, "the revoked key was never picked");
        // A different conversation each time: no session keeps a key.
        let r = droid_messages(&env, &key, &format!("x{n}")).await;
        assert_eq!(r.status(), 200, "request {n}");
    }
    let view = env.view("droid-accounts", &id).await;
    let statuses = pool_status(&view);
    assert_eq!(
        statuses
            .iter()
            .filter(|(s, m)| s == "error" && m == "401")
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(view["status"], "active");

    // From now on the revoked key is never sent; both good keys are used.
    let before = bearers(&env.mock, "/a/v1/messages").len();
    for i in 0..30 {
        assert_eq!(
            droid_messages(&env, &key, &format!("y{i}")).await.status(),
            200
        );
    }
    let after: Vec<String> = bearers(&env.mock, "/a/v1/messages")[before..].to_vec();
    assert_eq!(after.len(), 30);
    let used: HashSet<&str> = after.iter().map(String::as_str).collect();
    assert_eq!(used, HashSet::from([GOOD_A, GOOD_B]));
    // Each key's use, as the admin view shows it.
    let view = env.view("droid-accounts", &id).await;
    let uses: u64 = view["apiKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["usageCount"].as_str().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(uses as usize, bearers(&env.mock, "/a/v1/messages").len());
    assert!(
        view["apiKeys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| !k["lastUsedAt"].as_str().unwrap().is_empty())
    );

    // A session keeps its key.
    let session_req = |n: u32| {
        let mut b = msg_body("claude-sonnet-4-5-20250929", false, "z");
        b["metadata"] = json!({"user_id": format!("user_abc_account__session_{n:08}-0000-4000-8000-000000000000")});
        env.http
            .post(env.url("/droid/claude/v1/messages"))
            .header("x-api-key", &key)
            .json(&b)
            .send()
    };
    let before = bearers(&env.mock, "/a/v1/messages").len();
    for _ in 0..8 {
        assert_eq!(session_req(1).await.unwrap().status(), 200);
    }
    let sticky: HashSet<String> = bearers(&env.mock, "/a/v1/messages")[before..]
        .iter()
        .cloned()
        .collect();
    assert_eq!(sticky.len(), 1, "one session, one key: {sticky:?}");

    // The admin's modes: delete a key, reset the refused one (update), replace the pool.
    let (s, _) = env
        .admin(
            Method::PUT,
            &format!("/admin/droid-accounts/{id}"),
            Some(json!({"apiKeyUpdateMode": "delete", "removeApiKeys": [GOOD_B]})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(env.view("droid-accounts", &id).await["apiKeyCount"], 2);
    let (s, _) = env
        .admin(
            Method::PUT,
            &format!("/admin/droid-accounts/{id}"),
            Some(json!({"apiKeyUpdateMode": "update", "apiKeys": [{"key": BAD, "status": "active", "errorMessage": ""}]})),
        )
        .await;
    assert_eq!(s, 200);
    let statuses = pool_status(&env.view("droid-accounts", &id).await);
    assert!(statuses.iter().all(|(s, _)| s == "active"), "{statuses:?}");
    let (s, v) = env
        .admin(
            Method::PUT,
            &format!("/admin/droid-accounts/{id}"),
            Some(json!({"apiKeyUpdateMode": "replace", "apiKeys": [GOOD_B]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(env.view("droid-accounts", &id).await["apiKeyCount"], 1);
    let (s, v) = env
        .admin(
            Method::PUT,
            &format!("/admin/droid-accounts/{id}"),
            Some(json!({"apiKeyUpdateMode": "sideways"})),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    env.stop().await;
}

#[tokio::test]
async fn an_emptied_pool_is_out_of_rotation() {
    let env = Env::start().await;
    accept(&env.mock, &[GOOD_A, BAD]);
    let dead = env
        .create(
            "droid-accounts",
            json!({"name": "dead", "baseUrl": env.mock.url(), "apiKeys": [BAD], "priority": 1}),
        )
        .await;
    // Its only key is refused with 403 (Factory's answer to a key without access).
    env.mock.state.scripted.lock().insert(
        BAD.into(),
        crs::mock::Scripted {
            status: 403,
            message: "Forbidden".into(),
            headers: vec![],
            times: None,
        },
    );
    env.create(
        "droid-accounts",
        json!({"name": "live", "baseUrl": env.mock.url(), "apiKeys": [GOOD_A], "priority": 90}),
    )
    .await;
    let key = droid_key(&env).await;
    let r = droid_messages(&env, &key, "x").await;
    assert_eq!(r.status(), 200, "the other account serves");
    assert_eq!(bearers(&env.mock, "/a/v1/messages"), vec![BAD, GOOD_A]);
    let view = env.view("droid-accounts", &dead).await;
    assert_eq!(view["status"], "error");
    assert_eq!(pool_status(&view), vec![("error".into(), "403".into())]);
    for _ in 0..5 {
        assert_eq!(droid_messages(&env, &key, "y").await.status(), 200);
    }
    assert_eq!(
        bearers(&env.mock, "/a/v1/messages")
            .iter()
            .filter(|b| *b == BAD)
            .count(),
        1,
        "the emptied account takes no more requests"
    );
    // A new key brings it back.
    accept(&env.mock, &[GOOD_B]);
    let (s, _) = env
        .admin(
            Method::PUT,
            &format!("/admin/droid-accounts/{dead}"),
            Some(json!({"apiKeys": [GOOD_B]})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(env.view("droid-accounts", &dead).await["status"], "active");
    assert_eq!(droid_messages(&env, &key, "z").await.status(), 200);
    // (BAD is still refused, GOOD_B is the one usable key of the preferred account.)
    assert_eq!(bearers(&env.mock, "/a/v1/messages").last().unwrap(), GOOD_B);
    env.stop().await;
}

#[tokio::test]
async fn workos_refresh_ahead_of_expiry_and_after_a_401() {
    let mock = extra_mock().await;
    let workos = mock.url();
    let env = Env::start_with(|c| c.droid_workos_url = workos.clone()).await;
    let initial = "workos-at-initial-0001";
    accept(&mock, &[initial]);
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let id = env
        .create(
            "droid-accounts",
            json!({"name": "oauth", "baseUrl": mock.url(), "accessToken": initial,
                   "refreshToken": "workos-rt-initial-0001", "expiresAt": soon,
                   "organizationId": "org_01TEST"}),
        )
        .await;
    let view = env.view("droid-accounts", &id).await;
    assert_eq!(view["hasRefreshToken"], true);
    assert!(!view.to_string().contains(initial), "tokens are masked");
    let key = droid_key(&env).await;

    // About to expire: refreshed (WorkOS's grant, form-encoded) before the request.
    assert_eq!(droid_messages(&env, &key, "a").await.status(), 200);
    let grants: Vec<crs::mock::SeenRequest> = mock
        .state
        .seen
        .lock()
        .iter()
        .filter(|s| s.path == "/user_management/authenticate")
        .cloned()
        .collect();
    assert_eq!(grants.len(), 1);
    assert_eq!(
        grants[0].header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let form = String::from_utf8_lossy(&grants[0].body).to_string();
    for part in [
        "grant_type=refresh_token",
        "refresh_token=workos-rt-initial-0001",
        "client_id=client_01HNM792M5G5G1A2THWPXKFMXB",
        "organization_id=org_01TEST",
    ] {
        assert!(form.split('&').any(|p| p == part), "{part} in {form}");
    }
    let sent = bearers(&mock, "/a/v1/messages");
    assert_eq!(sent.len(), 1);
    assert!(sent[0].starts_with("workos-at-mock-"), "{sent:?}");
    let view = env.view("droid-accounts", &id).await;
    let exp = view["tokenExpiresAt"].as_i64().unwrap();
    let eight_h = chrono::Utc::now().timestamp_millis() + 8 * 3_600_000;
    assert!((exp - eight_h).abs() < 60_000, "v1's 8-hour default: {exp}");

    // Fresh: no refresh.
    assert_eq!(droid_messages(&env, &key, "b").await.status(), 200);
    assert_eq!(hits(&mock, "/user_management/authenticate"), 1);

    // The upstream refuses the token (revoked): refreshed once, the request retried.
    let current = sent[0].clone();
    mock.state.scripted.lock().insert(
        current.clone(),
        crs::mock::Scripted {
            status: 401,
            message: "token revoked".into(),
            headers: vec![],
            times: Some(1),
        },
    );
    assert_eq!(droid_messages(&env, &key, "c").await.status(), 200);
    assert_eq!(hits(&mock, "/user_management/authenticate"), 2);
    let sent = bearers(&mock, "/a/v1/messages");
    assert_eq!(sent[sent.len() - 2], current);
    assert_ne!(sent[sent.len() - 1], current);
    assert!(sent[sent.len() - 1].starts_with("workos-at-mock-"));

    // The admin's manual refresh (v1's path).
    let (s, v) = env
        .admin(
            Method::POST,
            &format!("/admin/droid-accounts/{id}/refresh-token"),
            None,
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(hits(&mock, "/user_management/authenticate"), 3);

    // A refresh WorkOS refuses takes the account out of rotation.
    mock.state
        .oauth_fail_refresh
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let (s, _) = env
        .admin(
            Method::POST,
            &format!("/admin/droid-accounts/{id}/refresh-token"),
            None,
        )
        .await;
    assert_ne!(s, 200);
    eventually("refresh_failed recorded", || {
        env.crs.as_ref().unwrap().state.accounts.load().by_id[&id]
            .rec
            .status
            .as_str()
            == "refresh_failed"
    })
    .await;
    env.stop().await;
}

/// v1's device-code authorisation: a user code to confirm, pending polls, then tokens that
/// make an OAuth account.
#[tokio::test]
async fn device_code_authorisation_makes_an_oauth_account() {
    let mock = extra_mock().await;
    let workos = mock.url();
    let env = Env::start_with(|c| c.droid_workos_url = workos.clone()).await;
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/droid-accounts/generate-auth-url",
            Some(json!({})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let d = &v["data"];
    assert_eq!(d["userCode"], "MOCK-CODE");
    assert!(
        d["verificationUriComplete"]
            .as_str()
            .unwrap()
            .contains("MOCK-CODE")
    );
    let session = d["sessionId"].as_str().unwrap().to_owned();
    let exchange = |id: &str| {
        env.admin(
            Method::POST,
            "/admin/droid-accounts/exchange-code",
            Some(json!({"sessionId": id})),
        )
    };
    let (s, v) = exchange(&session).await;
    assert_eq!(s, 200);
    assert_eq!(v["pending"], true, "{v}");
    assert_eq!(v["error"], "authorization_pending");
    let (s, v) = exchange(&session).await;
    assert_eq!(s, 200, "{v}");
    let tokens = v["data"]["tokens"].clone();
    let expires = v["data"]["expiresAt"].clone();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    assert!(access.starts_with("workos-at-mock-"));
    let (s, _) = exchange(&session).await;
    assert_eq!(s, 400, "a session gives its tokens once");
    let (s, _) = exchange("no-such-session").await;
    assert_eq!(s, 400);
    let grants: Vec<String> = mock
        .state
        .seen
        .lock()
        .iter()
        .filter(|s| s.path == "/user_management/authenticate")
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    assert!(
        grants[0].contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code"),
        "{grants:?}"
    );

    let id = env
        .create(
            "droid-accounts",
            json!({"name": "authorised", "baseUrl": mock.url(),
                   "accessToken": access, "refreshToken": tokens["refresh_token"],
                   "organizationId": tokens["organization_id"],
                   "expiresAt": expires}),
        )
        .await;
    let key = droid_key(&env).await;
    assert_eq!(droid_messages(&env, &key, "hello").await.status(), 200);
    assert_eq!(bearers(&mock, "/a/v1/messages"), vec![access]);
    assert_eq!(
        env.view("droid-accounts", &id).await["organizationId"],
        "org_01MOCK"
    );
    env.stop().await;
}

#[tokio::test]
async fn bedrock_bearer_token_request_and_usage() {
    let env = Env::start().await;
    let (s, v) = env
        .admin(
            Method::POST,
            "/admin/bedrock-accounts",
            Some(
                json!({"name": "aws-key", "region": "us-east-1", "credentialType": "bearer_token",
                        "bearerToken": crs::mock::bedrock::MOCK_BEARER_TOKEN,
                        "endpointUrl": env.mock.url()}),
            ),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let id = v["data"]["id"].as_str().unwrap().to_owned();
    let (_, view) = env
        .admin(Method::GET, &format!("/admin/bedrock-accounts/{id}"), None)
        .await;
    assert_eq!(view["data"]["credentialType"], "bearer_token");
    assert_eq!(view["data"]["hasBearerToken"], true);
    assert!(
        !view
            .to_string()
            .contains(crs::mock::bedrock::MOCK_BEARER_TOKEN)
    );
    // Without the token, a bearer account cannot be created.
    let (s, _) = env
        .admin(
            Method::POST,
            "/admin/bedrock-accounts",
            Some(json!({"name": "x", "region": "us-east-1", "credentialType": "bearer_token"})),
        )
        .await;
    assert_eq!(s, 400);

    let (key_id, key) = env.create_key(json!({"name": "k"})).await;
    let r = env
        .messages(
            &key,
            msg_body("claude-sonnet-4-5-20250929", false, "mock:usage=13,5,0,0"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = env
        .mock
        .state
        .seen
        .lock()
        .iter()
        .rev()
        .find(|s| s.path.starts_with("/model/"))
        .cloned()
        .unwrap();
    assert!(seen.path.ends_with("/invoke"), "{}", seen.path);
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {}", crs::mock::bedrock::MOCK_BEARER_TOKEN).as_str())
    );
    for h in ["x-amz-date", "x-amz-security-token", "x-amz-content-sha256"] {
        assert_eq!(seen.header(h), None, "{h}");
    }
    // Streamed too (event stream converted to SSE).
    let r = env
        .messages(
            &key,
            msg_body("claude-sonnet-4-5-20250929", true, "mock:usage=2,3,0,0"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("message_stop"), "{text}");
    let t = env.key_totals(&key_id).await;
    assert_eq!(
        (t.requests, t.input_tokens, t.output_tokens),
        (2, 15, 8),
        "{t:?}"
    );

    // A token the upstream does not know is refused (403), not signed around.
    let (s, _) = env
        .admin(
            Method::PUT,
            &format!("/admin/bedrock-accounts/{id}"),
            Some(json!({"bearerToken": "ABSKunknown"})),
        )
        .await;
    assert_eq!(s, 200);
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "x"))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), 200);
    env.stop().await;
}

mod import {
    use super::*;
    use crate::import::redis;
    use crs::migrate::dump::{V1Key, V1Value};
    use crs::migrate::v1crypto::V1Crypto;
    use crs::migrate::{ExportOptions, ImportOptions, Source, Target};
    use crs::model::{Account, Platform};
    use crs::store::{Store, Table};
    use sha2::{Digest, Sha256};

    const ENC: &str = "droid-import-test-encryption-key";
    const SALT: &str = "droid-account-salt";
    const OAUTH_ID: &str = "0a1b2c3d-0000-4000-8000-00000000d001";
    const POOL_ID: &str = "0a1b2c3d-0000-4000-8000-00000000d002";
    const BEDROCK_ID: &str = "0a1b2c3d-0000-4000-8000-00000000b001";
    const ACCESS: &str = "workos-at-from-v1-0001";

    fn hash(pairs: &[(&str, String)]) -> V1Value {
        V1Value::Hash(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        )
    }

    /// A Droid account hash as v1's `createAccount` writes it (droidAccountService.js).
    fn droid_account(v1: &V1Crypto, id: &str, oauth: bool) -> V1Key {
        let now = "2026-11-20T08:00:00.000Z".to_owned();
        let pool = |keys: &[(&str, &str)]| -> String {
            json!(
                keys.iter()
                    .enumerate()
                    .map(|(i, (k, status))| json!({
                        "id": format!("00000000-0000-4000-8000-00000000e00{i}"),
                        "hash": hex::encode(Sha256::digest(k.as_bytes())),
                        "encryptedKey": v1.encrypt(SALT, k),
                        "createdAt": now,
                        "lastUsedAt": "",
                        "usageCount": "0",
                        "status": status,
                        "errorMessage": if *status == "error" { "401" } else { "" },
                    }))
                    .collect::<Vec<_>>()
            )
            .to_string()
        };
        let expires = (chrono::Utc::now() + chrono::Duration::hours(7))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let (access, refresh, expires_at, method, keys, count, strategy) = if oauth {
            (
                v1.encrypt(SALT, ACCESS),
                v1.encrypt(SALT, "workos-rt-from-v1-0001"),
                expires,
                String::new(),
                String::new(),
                "0".to_owned(),
                String::new(),
            )
        } else {
            (
                String::new(),
                String::new(),
                String::new(),
                "api_key".to_owned(),
                pool(&[(GOOD_A, "active"), (BAD, "error")]),
                "2".to_owned(),
                "random_sticky".to_owned(),
            )
        };
        V1Key::new(
            format!("droid:account:{id}"),
            -1,
            hash(&[
                ("id", id.to_owned()),
                (
                    "name",
                    if oauth { "droid-oauth" } else { "droid-pool" }.into(),
                ),
                ("description", String::new()),
                ("refreshToken", refresh),
                ("accessToken", access),
                ("expiresAt", expires_at),
                ("subscriptionExpiresAt", String::new()),
                ("proxy", String::new()),
                ("isActive", "true".into()),
                ("accountType", "shared".into()),
                ("platform", "droid".into()),
                ("priority", "50".into()),
                ("createdAt", now.clone()),
                ("lastUsedAt", String::new()),
                (
                    "lastRefreshAt",
                    if oauth { now.clone() } else { String::new() },
                ),
                ("status", "active".into()),
                ("errorMessage", String::new()),
                ("schedulable", "true".into()),
                ("noFailover", "false".into()),
                ("endpointType", "anthropic".into()),
                ("organizationId", if oauth { "org_01V1" } else { "" }.into()),
                ("owner", String::new()),
                ("ownerEmail", String::new()),
                ("ownerName", String::new()),
                ("ownerDisplayName", String::new()),
                ("userId", String::new()),
                ("tokenType", "Bearer".into()),
                ("authenticationMethod", method),
                ("expiresIn", if oauth { "28800" } else { "" }.into()),
                ("apiKeys", keys),
                ("apiKeyCount", count),
                ("apiKeyStrategy", strategy),
            ]),
        )
    }

    /// A Bedrock bearer-token account as v1's bedrockAccountService.js `createAccount` writes
    /// it: one JSON string, the token in `bearerToken` as `{encrypted, iv}` of `{token}`.
    fn bedrock_account(v1: &V1Crypto) -> V1Key {
        let (encrypted, iv) = v1
            .encrypt_bedrock(&json!({"token": crs::mock::bedrock::MOCK_BEARER_TOKEN}).to_string());
        let v = json!({
            "id": BEDROCK_ID, "name": "bedrock-key", "description": "", "region": "us-east-1",
            "defaultModel": "us.anthropic.claude-sonnet-4-20250514-v1:0", "isActive": true,
            "accountType": "shared", "priority": 50, "schedulable": true,
            "credentialType": "bearer_token", "subscriptionExpiresAt": null,
            "createdAt": "2026-11-20T08:00:00.000Z", "updatedAt": "2026-11-20T08:00:00.000Z",
            "type": "bedrock", "disableAutoProtection": false,
            "bearerToken": {"encrypted": encrypted, "iv": iv},
        });
        V1Key::new(
            format!("bedrock_account:{BEDROCK_ID}"),
            -1,
            V1Value::Str(v.to_string()),
        )
    }

    /// An API key hash as v1's apiKeyService writes it, bound to one account.
    fn api_key(id: &str, plain: &str, field: &str, account: &str, perms: &str) -> Vec<V1Key> {
        let h = hex::encode(Sha256::digest(format!("{plain}{ENC}").as_bytes()));
        vec![
            V1Key::new(
                format!("apikey:{id}"),
                -1,
                hash(&[
                    ("id", id.to_owned()),
                    ("name", format!("key-{field}")),
                    ("description", String::new()),
                    ("apiKey", h.clone()),
                    ("isActive", "true".into()),
                    ("createdAt", "2026-11-20T08:00:00.000Z".into()),
                    ("expiresAt", String::new()),
                    ("permissions", perms.to_owned()),
                    (field, account.to_owned()),
                    ("isDeleted", "false".into()),
                ]),
            ),
            V1Key::new(
                "apikey:hash_map",
                -1,
                V1Value::Hash(vec![(h, id.to_owned())]),
            ),
        ]
    }

    fn opts(dir: &std::path::Path) -> ImportOptions {
        ImportOptions {
            data_dir: dir.to_owned(),
            encryption_key: ENC.into(),
            dry_run: false,
            merge: false,
            progress: false,
        }
    }

    fn accounts(dir: &std::path::Path) -> (crs::crypto::Secrets, Vec<Account>) {
        let (s, _) = crs::crypto::Secrets::load_or_create(&dir.join("secrets.json"), None).unwrap();
        let store = Store::open(&dir.join("crs.redb")).unwrap();
        let mut all: Vec<Account> = store.load_all(Table::Accounts).unwrap();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        (s, all)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn v1_droid_and_bedrock_accounts_import_serve_and_export() {
        let Some(redis) = redis() else { return };
        let v1 = V1Crypto::new(ENC);
        let keys_plain = [
            "cr_00000000000000000000000000000000000000000000000000000000000d0001",
            "cr_00000000000000000000000000000000000000000000000000000000000d0002",
            "cr_00000000000000000000000000000000000000000000000000000000000b0001",
        ];
        let mut ks = vec![
            droid_account(&v1, OAUTH_ID, true),
            droid_account(&v1, POOL_ID, false),
            bedrock_account(&v1),
        ];
        let mut hash_map = Vec::new();
        for (i, (field, acc, perms)) in [
            ("droidAccountId", OAUTH_ID, "[\"droid\"]"),
            ("droidAccountId", POOL_ID, "[\"droid\"]"),
            ("bedrockAccountId", BEDROCK_ID, "[\"claude\"]"),
        ]
        .into_iter()
        .enumerate()
        {
            let id = format!("0a1b2c3d-0000-4000-8000-00000000f00{i}");
            for k in api_key(&id, keys_plain[i], field, acc, perms) {
                match k.value {
                    V1Value::Hash(pairs) if k.name == "apikey:hash_map" => hash_map.extend(pairs),
                    _ => ks.push(k),
                }
            }
        }
        ks.push(V1Key::new("apikey:hash_map", -1, V1Value::Hash(hash_map)));
        crs::migrate::redis_io::write_all(&redis.url(0), &ks, false)
            .await
            .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let r = crs::migrate::import(&Source::Redis(redis.url(0)), &opts(dir.path()))
            .await
            .unwrap();
        assert!(r.not_understood.is_empty(), "{:?}", r.not_understood);
        let (secrets, accs) = accounts(dir.path());
        assert_eq!(accs.len(), 3, "{}", r.render());
        let by_id = |id: &str| accs.iter().find(|a| a.id == id).unwrap().clone();
        let oauth = by_id(OAUTH_ID);
        assert_eq!(oauth.platform, Platform::Droid);
        assert!(!oauth.uses_key_pool());
        assert_eq!(secrets.decrypt(&oauth.access_token).unwrap(), ACCESS);
        assert_eq!(oauth.organization_id, "org_01V1");
        assert!(oauth.expires_at > chrono::Utc::now().timestamp_millis());
        let pool = by_id(POOL_ID);
        assert!(pool.uses_key_pool());
        assert_eq!(
            pool.api_keys
                .iter()
                .map(|k| (secrets.decrypt(&k.key).unwrap(), k.status.clone()))
                .collect::<Vec<_>>(),
            vec![
                (GOOD_A.to_owned(), "active".into()),
                (BAD.to_owned(), "error".into())
            ]
        );
        let bedrock = by_id(BEDROCK_ID);
        assert_eq!(
            secrets.decrypt(&bedrock.bearer_token).unwrap(),
            crs::mock::bedrock::MOCK_BEARER_TOKEN
        );

        // Serve: v1 has no upstream URL fields for these types; point them at the mock.
        crs::init_tls();
        let mock = MockUpstream::start().await.unwrap();
        accept(&mock, &[ACCESS, GOOD_A]);
        {
            let store = Store::open(&dir.path().join("crs.redb")).unwrap();
            for mut a in accs.clone() {
                a.api_url = mock.url();
                store.put(Table::Accounts, &a.id.clone(), &a).unwrap();
            }
        }
        let running = crs::server::start(crs::config::Config::for_data_dir(dir.path()))
            .await
            .unwrap();
        let http = client();
        for (i, path) in [
            "/droid/claude/v1/messages",
            "/droid/claude/v1/messages",
            "/api/v1/messages",
        ]
        .into_iter()
        .enumerate()
        {
            let r = http
                .post(format!("{}{path}", running.url()))
                .header("x-api-key", keys_plain[i])
                .header("anthropic-version", "2023-06-01")
                .json(&msg_body(
                    "claude-sonnet-4-5-20250929",
                    false,
                    &format!("k{i}"),
                ))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "key {i}: {}", r.text().await.unwrap());
        }
        assert_eq!(
            bearers(&mock, "/a/v1/messages"),
            vec![ACCESS.to_owned(), GOOD_A.to_owned()],
            "the OAuth token, then the pool's one usable key"
        );
        let seen = mock
            .state
            .seen
            .lock()
            .iter()
            .find(|s| s.path.starts_with("/model/"))
            .cloned()
            .unwrap();
        assert_eq!(
            seen.header("authorization"),
            Some(format!("Bearer {}", crs::mock::bedrock::MOCK_BEARER_TOKEN).as_str())
        );
        running.shutdown(std::time::Duration::from_secs(5)).await;

        // Export to an empty Redis database in v1's layout, and back.
        crs::migrate::export(
            &Target::Redis(redis.url(1)),
            &ExportOptions {
                data_dir: dir.path().to_owned(),
                encryption_key: None,
                tz_offset_minutes: 480,
                merge: false,
                progress: false,
            },
        )
        .await
        .unwrap();
        let mut out = std::collections::BTreeMap::new();
        crs::migrate::redis_io::read_all(&redis.url(1), false, &mut |k| {
            out.insert(k.name.clone(), k);
            Ok(())
        })
        .await
        .unwrap();
        let field = |name: &str, f: &str| -> String {
            let V1Value::Hash(p) = &out[name].value else {
                panic!("{name} is not a hash")
            };
            p.iter()
                .find(|(k, _)| k == f)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let oauth_key = format!("droid:account:{OAUTH_ID}");
        assert_eq!(
            v1.decrypt(SALT, &field(&oauth_key, "accessToken")).unwrap(),
            ACCESS
        );
        assert_eq!(
            v1.decrypt(SALT, &field(&oauth_key, "refreshToken"))
                .unwrap(),
            "workos-rt-from-v1-0001"
        );
        assert!(
            chrono::DateTime::parse_from_rfc3339(&field(&oauth_key, "expiresAt")).is_ok(),
            "v1's ISO expiry"
        );
        let pool_key = format!("droid:account:{POOL_ID}");
        assert_eq!(field(&pool_key, "authenticationMethod"), "api_key");
        assert_eq!(field(&pool_key, "apiKeyCount"), "2");
        assert_eq!(field(&pool_key, "apiKeyStrategy"), "random_sticky");
        let entries: Vec<Value> = serde_json::from_str(&field(&pool_key, "apiKeys")).unwrap();
        assert_eq!(
            entries
                .iter()
                .map(|e| (
                    v1.decrypt(SALT, e["encryptedKey"].as_str().unwrap())
                        .unwrap(),
                    e["status"].as_str().unwrap().to_owned()
                ))
                .collect::<Vec<_>>(),
            vec![
                (GOOD_A.to_owned(), "active".into()),
                (BAD.to_owned(), "error".into())
            ]
        );
        let V1Value::Str(b) = &out[&format!("bedrock_account:{BEDROCK_ID}")].value else {
            panic!("bedrock is a string")
        };
        let b: Value = serde_json::from_str(b).unwrap();
        assert_eq!(b["credentialType"], "bearer_token");
        let text = v1
            .decrypt_bedrock(
                b["bearerToken"]["encrypted"].as_str().unwrap(),
                b["bearerToken"]["iv"].as_str().unwrap(),
            )
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["token"],
            crs::mock::bedrock::MOCK_BEARER_TOKEN
        );

        let again = tempfile::tempdir().unwrap();
        crs::migrate::import(&Source::Redis(redis.url(1)), &opts(again.path()))
            .await
            .unwrap();
        let (s2, back) = accounts(again.path());
        for (a, b) in accs.iter().zip(&back) {
            assert_eq!(a.id, b.id);
            assert_eq!(a.api_keys.len(), b.api_keys.len());
            for (x, y) in a.api_keys.iter().zip(&b.api_keys) {
                assert_eq!(
                    secrets.decrypt(&x.key).unwrap(),
                    s2.decrypt(&y.key).unwrap()
                );
                assert_eq!((&x.id, &x.status), (&y.id, &y.status));
            }
            assert_eq!(a.expires_at / 1000, b.expires_at / 1000);
            assert_eq!(a.organization_id, b.organization_id);
            assert_eq!(a.authentication_method, b.authentication_method);
            for (x, y) in [
                (&a.access_token, &b.access_token),
                (&a.refresh_token, &b.refresh_token),
                (&a.bearer_token, &b.bearer_token),
            ] {
                let d = |s: &crs::crypto::Secrets, v: &str| {
                    if v.is_empty() {
                        String::new()
                    } else {
                        s.decrypt(v).unwrap()
                    }
                };
                assert_eq!(d(&secrets, x), d(&s2, y));
            }
        }
    }
}

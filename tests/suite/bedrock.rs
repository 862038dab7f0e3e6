//! AWS Bedrock accounts on the Anthropic Messages routes, end to end: crs in-process against
//! the mock's Bedrock runtime, which checks SigV4 signatures and speaks the AWS event stream.

use crate::common::*;
use crs::mock::bedrock::{MOCK_ACCESS_KEY_ID, register_credentials};
use reqwest::Method;
use serde_json::{Value, json};

/// Create a Bedrock account on the mock; `extra` overrides or adds fields.
async fn create_bedrock(env: &Env, access_key_id: &str, secret: &str, extra: Value) -> String {
    let mut body = json!({
        "name": format!("bedrock-{access_key_id}"),
        "region": "us-east-1",
        "awsCredentials": {"accessKeyId": access_key_id, "secretAccessKey": secret},
        "endpointUrl": env.mock.url(),
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, v) = env
        .admin(Method::POST, "/admin/bedrock-accounts", Some(body))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["data"]["platform"], "bedrock");
    v["data"]["id"].as_str().unwrap().to_owned()
}

fn assert_usage_matches_served(u: &Value, env: &Env) {
    let served = env.mock.state.served_total();
    let t = &u["usage"]["total"];
    assert_eq!(t["inputTokens"], served.input_tokens, "{t}");
    assert_eq!(t["outputTokens"], served.output_tokens, "{t}");
    assert_eq!(t["cacheCreateTokens"], served.cache_create_tokens, "{t}");
    assert_eq!(t["cacheReadTokens"], served.cache_read_tokens, "{t}");
}

#[tokio::test]
async fn non_stream_request_is_signed_mapped_and_accounted() {
    let env = Env::start().await;
    register_credentials("AKIATESTNONSTREAM001", "test/secret+nonstream");
    create_bedrock(
        &env,
        "AKIATESTNONSTREAM001",
        "test/secret+nonstream",
        json!({}),
    )
    .await;
    // The key may use the 1M-token window, so its beta flags all reach the body.
    let (_, key) = env
        .create_key(json!({"name": "alice", "allow1mContext": true}))
        .await;

    let r = env
        .messages(
            &key,
            msg_body(
                "claude-sonnet-4-5-20250929",
                false,
                "hi mock:usage=100,20,10,30",
            ),
        )
        .header(
            "anthropic-beta",
            "interleaved-thinking-2025-05-14,context-1m-2025-08-07",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "message");
    assert_eq!(body["model"], "claude-sonnet-4-5-20250929");
    assert_eq!(body["content"][0]["text"], "Hello from the mock Bedrock.");
    assert_eq!(body["usage"]["input_tokens"], 100);

    let seen = env.mock.state.seen.lock().clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    // The mapped model id, percent-encoded as one path segment.
    assert_eq!(
        s.path,
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
    );
    let auth = s.header("authorization").unwrap();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIATESTNONSTREAM001/")
            && auth.contains("/us-east-1/bedrock/aws4_request, SignedHeaders=")
            && auth.contains("host")
            && auth.contains("x-amz-date"),
        "{auth}"
    );
    assert_eq!(s.header("accept"), Some("application/json"));
    assert_eq!(s.header("x-api-key"), None);
    assert_eq!(s.header("anthropic-beta"), None);
    let sent: Value = serde_json::from_slice(&s.body).unwrap();
    assert!(
        sent.get("model").is_none() && sent.get("stream").is_none(),
        "{sent}"
    );
    assert_eq!(sent["anthropic_version"], "bedrock-2023-05-31");
    assert_eq!(
        sent["anthropic_beta"],
        json!(["interleaved-thinking-2025-05-14", "context-1m-2025-08-07"])
    );
    assert_eq!(sent["messages"][0]["content"], "hi mock:usage=100,20,10,30");

    let u = env.usage(&key).await;
    assert_eq!(u["usage"]["total"]["requests"], 1);
    assert_eq!(u["usage"]["total"]["inputTokens"], 100);
    assert_usage_matches_served(&u, &env);
    env.stop().await;
}

#[tokio::test]
async fn stream_is_converted_to_anthropic_sse_and_accounted() {
    let env = Env::start().await;
    register_credentials("AKIATESTSTREAM000001", "test/secret+stream");
    create_bedrock(
        &env,
        "AKIATESTSTREAM000001",
        "test/secret+stream",
        json!({}),
    )
    .await;
    let (_, key) = env.create_key(json!({"name": "bob"})).await;

    let r = env
        .messages(
            &key,
            msg_body(
                "claude-sonnet-4-5-20250929",
                true,
                "go mock:usage=110,21,10,5 mock:chunks=3",
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/event-stream"), "{ct}");
    let text = r.text().await.unwrap();
    let events = sse_events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ],
        "{text}"
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str());
    }
    assert_eq!(
        events[0].1["message"]["model"],
        "claude-sonnet-4-5-20250929"
    );
    assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 110);
    assert_eq!(events[2].1["delta"]["text"], "Hello from the mock Bedrock.");
    assert_eq!(events[6].1["usage"]["output_tokens"], 21);
    assert_eq!(
        events[7].1["amazon-bedrock-invocationMetrics"]["inputTokenCount"],
        110
    );

    let seen = env.mock.state.seen.lock().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].path,
        "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke-with-response-stream"
    );
    assert_eq!(
        seen[0].header("accept"),
        Some("application/vnd.amazon.eventstream")
    );
    assert_eq!(
        seen[0].header("x-amzn-bedrock-accept"),
        Some("application/json")
    );
    eventually("the mock saw the stream to the end", || {
        env.mock
            .state
            .streams_completed
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
    })
    .await;

    let u = env.usage(&key).await;
    let t = &u["usage"]["total"];
    assert_eq!(t["requests"], 1);
    assert_eq!(t["inputTokens"], 110);
    assert_eq!(t["outputTokens"], 21);
    assert_eq!(t["cacheCreateTokens"], 10);
    assert_eq!(t["cacheReadTokens"], 5);
    assert_usage_matches_served(&u, &env);
    env.stop().await;
}

#[tokio::test]
async fn wrong_secret_is_a_403_in_anthropic_format() {
    let env = Env::start().await;
    let acc = create_bedrock(&env, MOCK_ACCESS_KEY_ID, "not-the-secret", json!({})).await;
    let (_, key) = env.create_key(json!({"name": "carol"})).await;

    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "permission_error");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("request signature we calculated does not match"),
        "{msg}"
    );
    assert_eq!(env.mock.state.served_count(), 0);

    // The refused account is out of rotation; an unknown access key is refused as AWS does.
    let (_, a) = env
        .admin(Method::GET, &format!("/admin/bedrock-accounts/{acc}"), None)
        .await;
    assert!(
        a["data"]["cooldownReason"]
            .as_str()
            .unwrap()
            .contains("403"),
        "{a}"
    );
    create_bedrock(&env, "AKIANOBODYKNOWS00001", "whatever", json!({})).await;
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", true, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "permission_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("The security token included in the request is invalid."),
        "{v}"
    );
    env.stop().await;
}

#[tokio::test]
async fn throttled_bedrock_account_fails_over_to_console() {
    let env = Env::start().await;
    let bedrock = create_bedrock(
        &env,
        MOCK_ACCESS_KEY_ID,
        crs::mock::bedrock::MOCK_SECRET_ACCESS_KEY,
        json!({"priority": 10}),
    )
    .await;
    env.create_account(json!({"priority": 90})).await;
    let (_, key) = env.create_key(json!({"name": "dave"})).await;

    let r = env
        .messages(
            &key,
            msg_body(
                "claude-sonnet-4-5-20250929",
                false,
                "hi mock:bedrock_status=429 mock:usage=50,5,0,0",
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["content"][0]["text"], "Hello from the mock upstream.");
    let paths: Vec<String> = env
        .mock
        .state
        .seen
        .lock()
        .iter()
        .map(|s| s.path.clone())
        .collect();
    assert_eq!(
        paths,
        [
            "/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke",
            "/v1/messages"
        ]
    );

    // The throttled account cools down: the next request goes straight to the console account.
    let (_, a) = env
        .admin(
            Method::GET,
            &format!("/admin/bedrock-accounts/{bedrock}"),
            None,
        )
        .await;
    assert!(
        a["data"]["cooldownReason"]
            .as_str()
            .unwrap()
            .contains("429"),
        "{a}"
    );
    let r = env
        .messages(
            &key,
            msg_body(
                "claude-sonnet-4-5-20250929",
                true,
                "again mock:usage=7,3,0,0",
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.text().await.unwrap();
    let seen = env.mock.state.seen.lock().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[2].path, "/v1/messages");

    let u = env.usage(&key).await;
    assert_eq!(u["usage"]["total"]["inputTokens"], 57);
    assert_usage_matches_served(&u, &env);
    env.stop().await;
}

#[tokio::test]
async fn mid_stream_exception_ends_with_an_anthropic_error_event() {
    let env = Env::start().await;
    create_bedrock(
        &env,
        MOCK_ACCESS_KEY_ID,
        crs::mock::bedrock::MOCK_SECRET_ACCESS_KEY,
        json!({}),
    )
    .await;
    let (_, key) = env.create_key(json!({"name": "erin"})).await;

    let r = env
        .messages(
            &key,
            msg_body(
                "claude-sonnet-4-5-20250929",
                true,
                "x mock:usage=30,9,0,0 mock:bedrock_exception=throttlingException",
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let events = sse_events(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["message_start", "content_block_start", "error"],
        "{text}"
    );
    let err = &events[2].1;
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "rate_limit_error");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Too many requests")
    );

    // The answer had started: its input is billed, as message_start reported it.
    let u = env.usage(&key).await;
    assert_eq!(u["usage"]["total"]["requests"], 1);
    assert_eq!(u["usage"]["total"]["inputTokens"], 30);
    env.stop().await;
}

#[tokio::test]
async fn small_fast_and_default_models_and_temporary_credentials() {
    let env = Env::start().await;
    register_credentials("ASIATESTSESSION00001", "test/secret+session");
    create_bedrock(
        &env,
        "ASIATESTSESSION00001",
        "test/secret+session",
        json!({
            "region": "eu-west-1",
            "awsCredentials": {
                "accessKeyId": "ASIATESTSESSION00001",
                "secretAccessKey": "test/secret+session",
                "sessionToken": "FQoGZXIvYXdzEXAMPLE//session=",
            },
            "smallFastModel": "us.anthropic.claude-haiku-4-5-20251001-v1:0",
            "defaultModel": "claude-sonnet-4-20250514",
        }),
    )
    .await;
    let (_, key) = env.create_key(json!({"name": "frank"})).await;

    for (model, path, answered) in [
        (
            "claude-3-5-haiku-20241022",
            "/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/invoke",
            "claude-haiku-4-5-20251001",
        ),
        (
            "my-house-model",
            "/model/eu.anthropic.claude-sonnet-4-20250514-v1%3A0/invoke",
            "claude-sonnet-4-20250514",
        ),
        (
            "claude-opus-4-1",
            "/model/eu.anthropic.claude-opus-4-1-20250805-v1%3A0/invoke",
            "claude-opus-4-1-20250805",
        ),
    ] {
        let r = env
            .messages(&key, msg_body(model, false, "hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{model}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["model"], answered);
        let seen = env.mock.state.seen.lock().last().cloned().unwrap();
        assert_eq!(seen.path, path);
        assert_eq!(
            seen.header("x-amz-security-token"),
            Some("FQoGZXIvYXdzEXAMPLE//session=")
        );
        let auth = seen.header("authorization").unwrap();
        assert!(auth.contains("/eu-west-1/bedrock/aws4_request"), "{auth}");
        assert!(auth.contains("x-amz-security-token"), "{auth}");
    }
    let u = env.usage(&key).await;
    assert_eq!(u["usage"]["total"]["requests"], 3);
    assert_usage_matches_served(&u, &env);
    env.stop().await;
}

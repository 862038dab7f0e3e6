//! Anthropic Messages clients on accounts of another wire format: keys whose Claude binding
//! names an OpenAI Responses account (Claude Code on a GPT account), and v1's vendor prefixes
//! `/gemini-cli/api` and `/antigravity/api` (Messages on Gemini accounts).

use crate::common::*;
use serde_json::{Value, json};

fn with_tool(mut body: Value) -> Value {
    body["system"] = json!([{"type": "text", "text": "You are terse."}]);
    body["tools"] = json!([{"name": "weather", "description": "The weather now",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    body
}

async fn responses_account(env: &Env, name: &str, models: Value) -> String {
    env.create(
        "openai-responses-accounts",
        json!({"name": name, "baseApi": format!("{}/v1", env.mock.url()), "apiKey": UPSTREAM_KEY,
            "supportedModels": models}),
    )
    .await
}

#[tokio::test]
async fn claude_requests_run_on_the_gpt_account_a_key_is_bound_to() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let gpt = responses_account(&env, "gpt", json!({"claude-sonnet-*": "gpt-5-codex"})).await;
    let (key_id, key) = env
        .create_key(json!({"name": "on-gpt", "claudeAccountId": format!("responses:{gpt}")}))
        .await;
    let model = "claude-sonnet-4-5-20250929";

    // Not streamed: text and a tool call come back as Anthropic content blocks.
    let body = with_tool(msg_body(
        model,
        false,
        "weather? mock:usage=20,5,0,10 mock:tool",
    ));
    let r = env.messages(&key, body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["type"], "message");
    assert_eq!(m["model"], model);
    assert_eq!(
        m["content"][0],
        json!({"type": "text", "text": "Hello from the mock upstream."})
    );
    assert_eq!(m["content"][1]["type"], "tool_use");
    assert_eq!(m["content"][1]["name"], "weather");
    assert_eq!(m["content"][1]["input"], json!({"city": "Paris"}));
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(m["usage"]["input_tokens"], 20);
    assert_eq!(m["usage"]["cache_read_input_tokens"], 10);
    assert_eq!(m["usage"]["output_tokens"], 5);
    // The upstream got a Responses request for the mapped model.
    let sent: Value = serde_json::from_slice(&last_seen(&env.mock, "/v1/responses").body).unwrap();
    assert_eq!(sent["model"], "gpt-5-codex");
    assert_eq!(sent["instructions"], "You are terse.");
    assert_eq!(sent["tools"][0]["name"], "weather");
    assert_eq!(sent["tools"][0]["parameters"]["required"], json!(["city"]));
    assert_eq!(
        last_seen(&env.mock, "/v1/responses").header("authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );

    // Streamed: the Responses events become the Messages event sequence.
    let body = with_tool(msg_body(
        model,
        true,
        "weather? mock:usage=30,7,0,0 mock:tool",
    ));
    let r = env.messages(&key, body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let evs = sse_events(&r.text().await.unwrap());
    assert_eq!(evs.first().unwrap().0, "message_start");
    assert_eq!(evs.first().unwrap().1["message"]["model"], model);
    assert_eq!(evs.last().unwrap().0, "message_stop");
    let text: String = evs
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "text_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap())
        .collect();
    assert!(text.starts_with("Hello from the mock upstream."), "{text}");
    let tool = evs
        .iter()
        .find(|(_, d)| d["content_block"]["type"] == "tool_use")
        .expect("a tool_use block");
    assert_eq!(tool.1["content_block"]["name"], "weather");
    let args: String = evs
        .iter()
        .filter(|(_, d)| d["delta"]["type"] == "input_json_delta")
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(args, crs::mock::TOOL_ARGS);
    let delta = evs.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");
    assert_eq!(delta.1["usage"]["output_tokens"], 7);

    // count_tokens is estimated here: no upstream counts Anthropic requests for a GPT model.
    let before = hits(&env.mock, "/v1/responses");
    let r = env
        .http
        .post(env.url("/v1/messages/count_tokens"))
        .header("x-api-key", &key)
        .json(&msg_body(model, false, "how many tokens is this?"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let n = r.json::<Value>().await.unwrap()["input_tokens"]
        .as_u64()
        .unwrap();
    assert!(n > 0);
    assert_eq!(hits(&env.mock, "/v1/responses"), before);
    assert_eq!(
        hits(&env.mock, "/v1/messages"),
        0,
        "the Claude account idles"
    );

    // Usage is recorded in the upstream's units, priced as the model that answered.
    let t = env.key_totals(&key_id).await;
    assert_eq!(t.requests, 2);
    assert_eq!(t.output_tokens, 12);
    assert_eq!(t.input_tokens, 50);
    assert_eq!(t.cache_read_tokens, 10);

    // A request the conversion cannot take is a 400 in Anthropic's shape.
    let mut bad = msg_body(model, false, "x");
    bad["messages"] = json!([{"role": "tool", "content": "no"}]);
    let r = env.messages(&key, bad).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");

    // Keys without the binding still reach the Claude account, unconverted.
    let (_, plain) = env.create_key(json!({"name": "plain"})).await;
    let r = env
        .messages(&plain, msg_body(model, false, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hits(&env.mock, "/v1/messages"), 1);
    env.stop().await;
}

/// A GPT account without a mapping for Claude names runs Claude requests on the configured
/// models (Haiku on the small one); a plain account id in `claudeAccountId` and a group of
/// the `openai` family bind as well as the `responses:` prefix.
#[tokio::test]
async fn unmapped_claude_models_take_the_configured_gpt_models() {
    let env = Env::start_with(|c| {
        c.gpt_model_for_claude = "gpt-5.1".into();
        c.gpt_model_for_haiku = "gpt-5.1-mini".into();
    })
    .await;
    let gpt = responses_account(&env, "gpt", json!({})).await;
    let (_, key) = env
        .create_key(json!({"name": "by-id", "claudeAccountId": gpt}))
        .await;
    for (model, want) in [
        ("claude-opus-4-1-20250805", "gpt-5.1"),
        ("claude-3-5-haiku-20241022", "gpt-5.1-mini"),
    ] {
        let r = env
            .messages(&key, msg_body(model, false, "hi"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{model}");
        let sent: Value =
            serde_json::from_slice(&last_seen(&env.mock, "/v1/responses").body).unwrap();
        assert_eq!(sent["model"], want);
        assert_eq!(r.json::<Value>().await.unwrap()["model"], model);
    }
    let (s, g) = env
        .admin(
            reqwest::Method::POST,
            "/admin/account-groups",
            Some(json!({"name": "gpts", "platform": "openai"})),
        )
        .await;
    assert_eq!(s, 200, "{g}");
    let gid = g["data"]["id"].as_str().unwrap().to_owned();
    let (s, v) = env
        .admin(
            reqwest::Method::PUT,
            &format!("/admin/openai-responses-accounts/{gpt}"),
            Some(json!({"groupIds": [gid.clone()], "accountType": "group"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, grouped) = env
        .create_key(json!({"name": "by-group", "claudeAccountId": format!("group:{gid}")}))
        .await;
    let before = hits(&env.mock, "/v1/responses");
    let r = env
        .messages(&grouped, msg_body("claude-sonnet-4-5", false, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hits(&env.mock, "/v1/responses"), before + 1);
    env.stop().await;
}

#[tokio::test]
async fn vendor_prefixes_send_messages_to_gemini_accounts() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    env.create(
        "gemini-api-accounts",
        json!({"name": "gemini", "baseUrl": env.mock.url(), "apiKey": UPSTREAM_KEY}),
    )
    .await;
    let (key_id, key) = env.create_key(json!({"name": "gemini-cli"})).await;
    let model = "gemini-2.5-pro";
    for prefix in ["/gemini-cli/api", "/antigravity/api"] {
        let r = env
            .http
            .post(env.url(&format!("{prefix}/v1/messages")))
            .header("x-api-key", &key)
            .json(&with_tool(msg_body(model, false, "hi mock:usage=9,4,0,0")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{prefix}");
        let m: Value = r.json().await.unwrap();
        assert_eq!(m["type"], "message");
        assert_eq!(m["model"], model);
        assert_eq!(m["content"][0]["text"], "Hello from the mock upstream.");
        assert_eq!(m["stop_reason"], "end_turn");
        assert_eq!(m["usage"]["input_tokens"], 9);
        assert_eq!(m["usage"]["output_tokens"], 4);
        let seen = last_seen(
            &env.mock,
            &format!("/v1beta/models/{model}:generateContent"),
        );
        let sent: Value = serde_json::from_slice(&seen.body).unwrap();
        assert_eq!(
            sent["systemInstruction"]["parts"][0]["text"],
            "You are terse."
        );
        assert_eq!(sent["contents"][0]["role"], "user");
        assert_eq!(
            sent["tools"][0]["functionDeclarations"][0]["name"],
            "weather"
        );
    }
    // Streamed, through `claude/v1/messages` under the prefix.
    let r = env
        .http
        .post(env.url("/antigravity/api/claude/v1/messages"))
        .header("x-api-key", &key)
        .json(&msg_body(model, true, "hi mock:usage=5,6,0,0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let evs = sse_events(&r.text().await.unwrap());
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    let delta = evs.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["usage"]["output_tokens"], 6);
    assert_eq!(hits(&env.mock, "/v1/messages"), 0);
    let t = env.key_totals(&key_id).await;
    assert_eq!(t.requests, 3);
    assert_eq!(t.output_tokens, 14);

    // The key needs the Gemini permission there, as in v1.
    let (_, claude_only) = env
        .create_key(json!({"name": "claude-only", "permissions": "claude"}))
        .await;
    let r = env
        .http
        .post(env.url("/gemini-cli/api/v1/messages"))
        .header("x-api-key", &claude_only)
        .json(&msg_body(model, false, "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "permission_error");
    env.stop().await;
}

/// Claude requests on a ChatGPT (Codex OAuth) account bound by its id: converted to Responses
/// for the stream-only Codex backend, answered as Messages whether the client streams or not.
#[tokio::test]
async fn claude_requests_run_on_a_chatgpt_account() {
    let env = Env::start().await;
    env.mock
        .state
        .accepted_keys
        .lock()
        .push("chatgpt-access-bridge".into());
    let chatgpt = env
        .create(
            "openai-accounts",
            json!({"name": "chatgpt", "baseApi": format!("{}/backend-api/codex", env.mock.url()),
                "openaiOauth": {"accessToken": "chatgpt-access-bridge", "refreshToken": "codex-rt-bridge", "expires_in": 864000},
                "accountInfo": {"accountId": crs::mock::codex::MOCK_CHATGPT_ACCOUNT}}),
        )
        .await;
    let (key_id, key) = env
        .create_key(json!({"name": "on-chatgpt", "claudeAccountId": chatgpt}))
        .await;
    let model = "claude-sonnet-4-5-20250929";
    let r = env
        .messages(&key, msg_body(model, false, "hi mock:usage=11,3,0,0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let m: Value = r.json().await.unwrap();
    assert_eq!(m["content"][0]["text"], "Hello from the mock upstream.");
    assert_eq!(m["usage"]["output_tokens"], 3);
    let r = env
        .messages(&key, msg_body(model, true, "hi mock:usage=5,4,0,0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let evs = sse_events(&r.text().await.unwrap());
    assert_eq!(evs.last().unwrap().0, "message_stop");
    let seen = last_seen(&env.mock, "/backend-api/codex/responses");
    let sent: Value = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent["model"], "gpt-5");
    assert_eq!(sent["stream"], true);
    assert_eq!(
        seen.header("chatgpt-account-id"),
        Some(crs::mock::codex::MOCK_CHATGPT_ACCOUNT)
    );
    let t = env.key_totals(&key_id).await;
    assert_eq!((t.requests, t.output_tokens), (2, 7));
    env.stop().await;
}

//! OpenAI Chat Completions clients on Claude accounts: `/api/v1/chat/completions` and
//! `/openai/claude/v1/chat/completions`, converted to Anthropic Messages and back.

use serde_json::{Value, json};

use crate::common::*;

fn chat_body(stream: bool, text: &str) -> Value {
    json!({
        "model": "claude-sonnet-4-5-20250929",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": text}
        ],
        "max_tokens": 64,
        "stream": stream,
        "stream_options": {"include_usage": true}
    })
}

/// The JSON events of an OpenAI-style stream, without the closing `[DONE]`.
fn data_chunks(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|l| *l != "[DONE]")
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn post(env: &Env, path: &str, key: &str, body: Value) -> reqwest::Response {
    env.http
        .post(env.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn chat_completions_reach_claude_accounts_as_messages_and_come_back() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (key_id, key) = env.create_key(json!({"name": "chat"})).await;
    for path in [
        "/api/v1/chat/completions",
        "/openai/claude/v1/chat/completions",
    ] {
        let r = post(
            &env,
            path,
            &key,
            chat_body(false, "hello mock:usage=30,6,0,4"),
        )
        .await;
        assert_eq!(r.status(), 200, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(v["model"], "claude-sonnet-4-5-20250929");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "Hello from the mock upstream."
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["usage"]["prompt_tokens"], 34);
        assert_eq!(v["usage"]["completion_tokens"], 6);
        let sent: Value =
            serde_json::from_slice(&last_seen(&env.mock, "/v1/messages").body).unwrap();
        assert_eq!(
            sent["system"],
            json!([{"type": "text", "text": "You are terse."}])
        );
        assert_eq!(sent["messages"][0]["role"], "user");
        assert_eq!(sent["max_tokens"], 64);
    }
    // Streamed: chunks, a usage chunk, [DONE]; the usage is recorded.
    let r = post(
        &env,
        "/api/v1/chat/completions",
        &key,
        chat_body(true, "stream mock:usage=20,9,0,0 mock:chunks=3"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = r.text().await.unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks = data_chunks(&text);
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Hello from the mock upstream. 1 2");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    let last = chunks.last().unwrap();
    assert_eq!(last["usage"]["completion_tokens"], 9);
    let t = env.key_totals(&key_id).await;
    assert_eq!((t.requests, t.input_tokens, t.output_tokens), (3, 80, 21));
    env.stop().await;
}

#[tokio::test]
async fn chat_errors_come_back_in_openai_shape() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "chat"})).await;
    let r = post(
        &env,
        "/api/v1/chat/completions",
        &key,
        json!({"model": "claude-sonnet-4-5", "messages": []}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("messages"),
        "{v}"
    );
    // An upstream refusal of the request is relayed in OpenAI's shape.
    let r = post(
        &env,
        "/api/v1/chat/completions",
        &key,
        chat_body(false, "mock:status=400"),
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Mock upstream error"),
        "{v}"
    );
    // A key without the Claude permission is refused before anything is sent.
    let (_, gem) = env
        .create_key(json!({"name": "gemini-only", "permissions": "gemini"}))
        .await;
    let r = post(
        &env,
        "/api/v1/chat/completions",
        &gem,
        chat_body(false, "x"),
    )
    .await;
    assert_eq!(r.status(), 403);
    env.stop().await;
}

/// The official OpenAI Python SDK (from PyPI, installed by scripts/test.sh into e2e/.venv)
/// against a Claude account (`/openai/claude/v1`), an OpenAI Responses account (`/openai/v1`, a
/// GPT model), a Gemini account (`/openai/gemini/v1`) and a ChatGPT (Codex OAuth) account a key
/// is bound to (`/openai/v1`, on the stream-only Codex backend): chat.completions, streamed and
/// not, with and without tools.
#[tokio::test]
async fn the_openai_python_sdk_chats_with_claude_responses_gemini_and_chatgpt_accounts() {
    let python = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e/.venv/bin/python");
    if !python.exists() {
        assert_ne!(
            std::env::var("CRS_E2E_REQUIRED").as_deref(),
            Ok("1"),
            "{} is missing: run scripts/test.sh, which installs it",
            python.display()
        );
        eprintln!("skipping: the OpenAI SDK is not installed (scripts/test.sh installs it)");
        return;
    }
    let env = Env::start().await;
    env.create_account(json!({})).await;
    env.create(
        "openai-responses-accounts",
        json!({"name": "codex", "baseApi": format!("{}/v1", env.mock.url()), "apiKey": UPSTREAM_KEY}),
    )
    .await;
    env.create(
        "gemini-api-accounts",
        json!({"name": "gemini", "baseUrl": env.mock.url(), "apiKey": UPSTREAM_KEY}),
    )
    .await;
    // A ChatGPT (Codex OAuth) account, for a key bound to it.
    env.mock
        .state
        .accepted_keys
        .lock()
        .push("chatgpt-access-sdk".into());
    let chatgpt = env
        .create(
            "openai-accounts",
            json!({"name": "chatgpt", "baseApi": format!("{}/backend-api/codex", env.mock.url()),
                "openaiOauth": {"accessToken": "chatgpt-access-sdk", "refreshToken": "codex-rt-sdk", "expires_in": 864000},
                "accountInfo": {"accountId": crs::mock::codex::MOCK_CHATGPT_ACCOUNT, "planType": "plus"}}),
        )
        .await;
    let (key_id, key) = env.create_key(json!({"name": "sdk"})).await;
    let (codex_key_id, codex_key) = env
        .create_key(json!({"name": "sdk-chatgpt", "openaiAccountId": chatgpt}))
        .await;
    for (base, model, upstream, key) in [
        (
            "/openai/claude/v1",
            "claude-sonnet-4-5-20250929",
            "/v1/messages",
            &key,
        ),
        ("/openai/v1", "gpt-5", "/v1/responses", &key),
        (
            "/openai/gemini/v1",
            "gemini-2.5-flash",
            "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
            &key,
        ),
        (
            "/openai/v1",
            "gpt-5",
            "/backend-api/codex/responses",
            &codex_key,
        ),
    ] {
        let out = run_sdk(&python, env.url(base), key.clone(), model).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "sdk failed on {base}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_str(stdout.trim()).unwrap();
        let hello = "Hello from the mock upstream.";
        assert_eq!(v["plain"]["content"], hello, "{base}");
        assert_eq!(v["plain"]["finish_reason"], "stop");
        assert_eq!(v["plain"]["completion_tokens"], 12);
        assert_eq!(v["tools"]["content"], hello);
        assert!(
            v["stream"]["content"].as_str().unwrap().starts_with(hello),
            "{v}"
        );
        assert_eq!(v["stream"]["finish_reason"], "stop");
        assert_eq!(v["stream"]["completion_tokens"], 12);
        // The tools reached the upstream in its own shape.
        let sent: Value = serde_json::from_slice(&last_seen(&env.mock, upstream).body).unwrap();
        let (tool, schema) = match upstream {
            "/v1/messages" => (&sent["tools"][0], "input_schema"),
            "/v1/responses" | "/backend-api/codex/responses" => (&sent["tools"][0], "parameters"),
            _ => (&sent["tools"][0]["functionDeclarations"][0], "parameters"),
        };
        assert_eq!(tool["name"], "weather", "{sent}");
        let schema = &tool[schema];
        assert_eq!(schema["required"], json!(["city"]));
    }
    let t = env.key_totals(&key_id).await;
    assert_eq!(t.requests, 9);
    let t = env.key_totals(&codex_key_id).await;
    assert_eq!(t.requests, 3);
    env.stop().await;
}

async fn run_sdk(
    python: &std::path::Path,
    base: String,
    key: String,
    model: &str,
) -> std::process::Output {
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e/openai_chat.py");
    let python = python.to_owned();
    let model = model.to_owned();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .args([&base, &key, &model])
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// `/openai/v1/chat/completions` follows the model: GPT models to Responses accounts (as a
/// Responses request), Claude models to Claude accounts.
#[tokio::test]
async fn openai_chat_routes_by_model() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    env.create(
        "openai-responses-accounts",
        json!({"name": "codex", "baseApi": format!("{}/v1", env.mock.url()), "apiKey": UPSTREAM_KEY}),
    )
    .await;
    let (_, key) = env.create_key(json!({"name": "both"})).await;
    let mut body = chat_body(false, "hi mock:usage=10,3,0,0");
    body["model"] = json!("gpt-5");
    body["reasoning_effort"] = json!("low");
    let r = post(&env, "/openai/v1/chat/completions", &key, body.clone()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "gpt-5");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "Hello from the mock upstream."
    );
    assert_eq!(v["usage"]["completion_tokens"], 3);
    let sent: Value = serde_json::from_slice(&last_seen(&env.mock, "/v1/responses").body).unwrap();
    assert_eq!(sent["instructions"], "You are terse.");
    assert_eq!(
        sent["input"][0]["content"][0],
        json!({"type": "input_text", "text": "hi mock:usage=10,3,0,0"})
    );
    assert_eq!(sent["max_output_tokens"], 64);
    assert_eq!(
        sent["reasoning"],
        json!({"effort": "low", "summary": "auto"})
    );
    assert_eq!(sent["store"], false);
    body["stream"] = json!(true);
    let r = post(&env, "/openai/v1/chat/completions", &key, body).await;
    let text = r.text().await.unwrap();
    assert!(
        text.contains("\"chat.completion.chunk\"") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    assert!(
        text.contains("\"completion_tokens\":3"),
        "usage chunk: {text}"
    );
    assert_eq!(hits(&env.mock, "/v1/messages"), 0);
    // A Claude model on the same route goes to the Claude account...
    let r = post(
        &env,
        "/openai/v1/chat/completions",
        &key,
        chat_body(false, "claude"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(hits(&env.mock, "/v1/messages"), 1);
    // ...but only for keys that may use Claude.
    let (_, openai_only) = env
        .create_key(json!({"name": "openai-only", "permissions": "openai"}))
        .await;
    let r = post(
        &env,
        "/openai/v1/chat/completions",
        &openai_only,
        chat_body(false, "no"),
    )
    .await;
    assert_eq!(r.status(), 403);
    assert_eq!(hits(&env.mock, "/v1/messages"), 1);
    env.stop().await;
}

/// Legacy Completions (`prompt` in, `text_completion` out), streamed and not.
#[tokio::test]
async fn legacy_completions_go_through_the_same_conversion() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "legacy"})).await;
    let body = json!({"model": "claude-sonnet-4-5-20250929", "prompt": "Once upon a time mock:usage=8,4,0,0"});
    let r = post(&env, "/openai/claude/v1/completions", &key, body.clone()).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], "Hello from the mock upstream.");
    assert_eq!(v["usage"]["total_tokens"], 12);
    let sent: Value = serde_json::from_slice(&last_seen(&env.mock, "/v1/messages").body).unwrap();
    assert_eq!(sent["max_tokens"], 16, "OpenAI's legacy default");
    assert_eq!(sent["messages"][0]["content"][0]["text"], body["prompt"]);
    let mut body = body;
    body["stream"] = json!(true);
    let r = post(&env, "/api/v1/completions", &key, body).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let chunks = data_chunks(&text);
    assert!(
        chunks.iter().all(|c| c["object"] == "text_completion"),
        "{text}"
    );
    let joined: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert!(
        joined.starts_with("Hello from the mock upstream."),
        "{text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    let r = post(
        &env,
        "/api/v1/completions",
        &key,
        json!({"model": "claude-sonnet-4-5"}),
    )
    .await;
    assert_eq!(r.status(), 400);
    env.stop().await;
}

/// OpenAI-style model lists of the Claude models a key may use.
#[tokio::test]
async fn model_lists_follow_the_keys_model_restriction() {
    let env = Env::start().await;
    let (_, key) = env
        .create_key(
            json!({"name": "sonnet-only", "enableModelRestriction": true,
            "modelRestrictionMode": "allow", "restrictedModels": ["claude-sonnet-4-5"]}),
        )
        .await;
    let get = |path: &str| env.http.get(env.url(path)).bearer_auth(&key).send();
    let v: Value = get("/openai/claude/v1/models")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["claude-sonnet-4-5-20250929"], "{v}");
    assert_eq!(v["object"], "list");
    let r = get("/openai/claude/v1/models/claude-sonnet-4-5-20250929")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["object"], "model");
    let g: Value = get("/openai/gemini/v1/models")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        g["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "gemini-2.5-pro"),
        "{g}"
    );
    let r = get("/openai/gemini/v1/models/gemini-2.5-pro")
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = get("/openai/claude/v1/models/claude-opus-4-1-20250805")
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(
        r.json::<Value>().await.unwrap()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("claude-opus")
    );
    env.stop().await;
}

/// v1 client routes crs does not serve yet: the Anthropic-to-Gemini bridge (`/antigravity/api`,
/// `/gemini-cli/api`, `/gemini/messages`), Gemini OAuth's Code Assist routes, the Codex images
/// bridge, the key self-test routes, Azure embeddings and v1's service-rates page.
const NOT_YET: &[&str] = &[];

/// Every client route v1.1.314 mounts (../shared/reference/v1-client-routes.txt, copied into
/// tests/data/v1-client-routes.txt) is mounted, but for the ones in `NOT_YET`, which still
/// answer the router's 404 (so the list shrinks as they are built).
#[tokio::test]
async fn every_v1_client_route_is_mounted() {
    let env = Env::start().await;
    let (_, key) = env.create_key(json!({"name": "walker"})).await;
    let list = include_str!("../data/v1-client-routes.txt");
    let (mut missing, mut now_served) = (Vec::new(), Vec::new());
    for line in list.lines().filter(|l| !l.trim().is_empty()) {
        let (method, path) = line.split_once(' ').unwrap();
        let url = path
            .replace(":org_id", "org-1")
            .replace(":modelName", "gemini-2.5-pro")
            .replace(":model", "claude-sonnet-4-5-20250929")
            .replace('*', "claude");
        let rb = match method {
            "GET" => env.http.get(env.url(&url)),
            _ => env.http.post(env.url(&url)).json(&json!({})),
        };
        let r = rb
            .bearer_auth(&key)
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap_or_default();
        // A 404 from a mounted route names what was not found (a model); the router's own 404
        // for an unknown path does not.
        let unrouted = status == 404 && !body.contains("model");
        match (unrouted, NOT_YET.contains(&line)) {
            (true, false) => missing.push(line),
            (false, true) => now_served.push(line),
            _ => {}
        }
    }
    assert!(
        missing.is_empty(),
        "routes answer 404:\n{}",
        missing.join("\n")
    );
    assert!(
        now_served.is_empty(),
        "served now, take them out of NOT_YET:\n{}",
        now_served.join("\n")
    );
    env.stop().await;
}

//! The real Claude Code CLI (`claude -p`) through crs to the mock upstream.
//!
//! The test suite command (scripts/test.sh) installs the CLI into e2e/node_modules and sets
//! CRS_E2E_REQUIRED=1, so a missing CLI fails there; a bare `cargo test` skips it.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use serde_json::json;

pub fn cli_path(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("e2e/node_modules/.bin")
        .join(name);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CRS_E2E_REQUIRED").as_deref() == Ok("1") {
        panic!(
            "{} is missing: run scripts/test.sh, which installs it",
            p.display()
        );
    }
    eprintln!(
        "skipping: {} is not installed (scripts/test.sh installs it)",
        p.display()
    );
    None
}

/// Run the real `claude` with only the environment it needs to talk to crs at `base`.
pub async fn run_claude(
    claude: PathBuf,
    home: &std::path::Path,
    base: &str,
    key: &str,
    args: &[&str],
) -> std::process::Output {
    let home = home.to_owned();
    let (base, key) = (base.to_owned(), key.to_owned());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(claude)
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("ANTHROPIC_BASE_URL", base)
            .env("ANTHROPIC_API_KEY", key)
            .env("DISABLE_TELEMETRY", "1")
            .env("DISABLE_AUTOUPDATER", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn claude_code_print_mode_works_through_crs() {
    let Some(claude) = cli_path("claude") else {
        return;
    };
    let env = Env::start().await;
    env.create_account(json!({})).await;
    // A key that only Claude Code may use.
    let (key_id, key) = env
        .create_key(json!({"name": "claude-code-user", "enableClientRestriction": true, "allowedClients": ["claude_code"]}))
        .await;
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "x"))
        .header("user-agent", "curl/8.5.0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "curl is refused");
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["error"],
        "Client not allowed"
    );
    let home = tempfile::tempdir().unwrap();
    let base = env.url("");
    let out = run_claude(
        claude,
        home.path(),
        &base,
        &key,
        &["-p", "Say hello to the relay"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "claude failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("Hello from the mock upstream."),
        "stdout: {stdout}\nstderr: {stderr}"
    );

    // The upstream saw Claude Code's own request, with the account key instead of the cr_ key.
    let seen = env.mock.state.seen.lock().clone();
    let msgs: Vec<_> = seen.iter().filter(|s| s.path == "/v1/messages").collect();
    assert!(!msgs.is_empty());
    for s in &msgs {
        assert_eq!(s.header("x-api-key"), Some(UPSTREAM_KEY));
        assert!(
            s.header("user-agent").unwrap_or("").contains("claude-cli"),
            "{:?}",
            s.header("user-agent")
        );
    }
    // What crs recorded equals what the upstream served.
    let served = env.mock.state.served_total();
    let t = env.key_totals(&key_id).await;
    assert_eq!(t.requests as usize, env.mock.state.served_count());
    assert_eq!(t.input_tokens, served.input_tokens);
    assert_eq!(t.output_tokens, served.output_tokens);
    env.stop().await;
}

/// Claude Code on a GPT account: the key's Claude binding names an OpenAI Responses account,
/// so every request Claude Code makes is converted to Responses and the answers back.
#[tokio::test]
async fn claude_code_runs_on_an_openai_responses_account() {
    let Some(claude) = cli_path("claude") else {
        return;
    };
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let gpt = env
        .create(
            "openai-responses-accounts",
            json!({"name": "gpt", "baseApi": format!("{}/v1", env.mock.url()), "apiKey": UPSTREAM_KEY}),
        )
        .await;
    let (key_id, key) = env
        .create_key(json!({"name": "claude-on-gpt", "claudeAccountId": format!("responses:{gpt}")}))
        .await;
    let home = tempfile::tempdir().unwrap();
    let out = run_claude(
        claude,
        home.path(),
        &env.url(""),
        &key,
        &["-p", "Say hello to the relay", "--output-format", "json"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "claude failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("claude printed no JSON ({e})\nstdout: {stdout}\nstderr: {stderr}")
    });
    assert_eq!(v["is_error"], false, "{v}");
    assert!(
        v["result"]
            .as_str()
            .unwrap_or("")
            .contains("Hello from the mock upstream."),
        "{v}"
    );
    // Only the GPT account was asked, in its own format, with Claude Code's tools.
    let seen = env.mock.state.seen.lock().clone();
    assert!(!seen.iter().any(|s| s.path == "/v1/messages"));
    let asked: Vec<_> = seen.iter().filter(|s| s.path == "/v1/responses").collect();
    assert!(!asked.is_empty());
    let main_turn = asked
        .iter()
        .map(|s| serde_json::from_slice::<serde_json::Value>(&s.body).unwrap())
        .find(|b| b["tools"].as_array().is_some_and(|t| !t.is_empty()))
        .expect("Claude Code's main turn carries its tools");
    assert!(main_turn["model"].as_str().unwrap().starts_with("gpt-5"));
    assert!(
        main_turn["instructions"]
            .as_str()
            .unwrap_or("")
            .contains("Claude")
    );
    assert_eq!(main_turn["stream"], true);
    for s in &asked {
        assert_eq!(
            s.header("authorization"),
            Some(format!("Bearer {UPSTREAM_KEY}").as_str())
        );
    }
    // What crs recorded equals what the upstream served.
    let served = env.mock.state.served_total();
    let t = env.key_totals(&key_id).await;
    assert_eq!(t.requests as usize, env.mock.state.served_count());
    assert_eq!(t.output_tokens, served.output_tokens);
    assert_eq!(
        t.input_tokens + t.cache_read_tokens,
        served.input_tokens + served.cache_read_tokens
    );
    env.stop().await;
}

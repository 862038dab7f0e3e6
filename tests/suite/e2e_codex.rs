//! The real Codex CLI (`codex exec`, `wire_api = "responses"`, base_url at crs `/openai/v1`)
//! through crs to the mock upstream. Installed by scripts/test.sh like the Claude Code CLI.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use serde_json::json;

fn codex_path() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e/node_modules/.bin/codex");
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

/// `codex exec` with crs as its model provider (a throwaway CODEX_HOME), authenticated with
/// the crs key.
async fn run_codex(codex: &std::path::Path, env: &Env, key: &str) -> std::process::Output {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join("config.toml"),
        format!(
            "model = \"gpt-5\"\nmodel_provider = \"crs\"\n\n[model_providers.crs]\nname = \"crs\"\nbase_url = \"{}/openai/v1\"\nwire_api = \"responses\"\nenv_key = \"CRS_API_KEY\"\n",
            env.url("")
        ),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let (codex, key) = (codex.to_owned(), key.to_owned());
    tokio::task::spawn_blocking(move || {
        Command::new(codex)
            .args(["exec", "--skip-git-repo-check", "Say hello to the relay"])
            .current_dir(work.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("CODEX_HOME", home.path())
            .env("CRS_API_KEY", key)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// The key's recorded usage is what the mock upstream served.
async fn assert_usage_is_what_the_mock_served(env: &Env, key_id: &str) {
    let t = env.key_totals(key_id).await;
    let served = env.mock.state.served_total();
    assert_eq!(t.requests as usize, env.mock.state.served_count());
    assert_eq!(t.input_tokens, served.input_tokens);
    assert_eq!(t.output_tokens, served.output_tokens);
}

#[tokio::test]
async fn codex_exec_works_through_crs_responses_route() {
    let Some(codex) = codex_path() else {
        return;
    };
    let env = Env::start().await;
    let (s, v) = env
        .admin(
            reqwest::Method::POST,
            "/admin/openai-responses-accounts",
            Some(json!({"name": "codex-upstream", "baseApi": format!("{}/v1", env.mock.url()), "apiKey": UPSTREAM_KEY})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (key_id, key) = env
        .create_key(json!({"name": "codex-user", "permissions": ["openai"],
                           "enableClientRestriction": true, "allowedClients": ["codex_cli"]}))
        .await;
    let out = run_codex(&codex, &env, &key).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "codex failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("Hello from the mock upstream."),
        "stdout: {stdout}\nstderr: {stderr}"
    );

    let seen = env.mock.state.seen.lock().clone();
    let calls: Vec<_> = seen.iter().filter(|s| s.path == "/v1/responses").collect();
    assert!(!calls.is_empty());
    for s in &calls {
        assert_eq!(
            s.header("authorization"),
            Some(format!("Bearer {UPSTREAM_KEY}").as_str())
        );
    }
    assert_usage_is_what_the_mock_served(&env, &key_id).await;
    env.stop().await;
}

/// Codex CLI on a ChatGPT (Codex OAuth) account: crs sends the account's OAuth token and
/// ChatGPT account id to the Codex backend, Codex CLI's own headers pass, usage is recorded
/// and the account's usage windows come from the answer.
#[tokio::test]
async fn codex_exec_works_on_a_chatgpt_oauth_account() {
    let Some(codex) = codex_path() else {
        return;
    };
    let env = Env::start().await;
    let token = "codex-at-e2e-0001";
    env.mock.state.accepted_keys.lock().push(token.into());
    let id = env
        .create(
            "openai-accounts",
            json!({"name": "plus", "baseApi": format!("{}/backend-api/codex", env.mock.url()),
                   "openaiOauth": {"idToken": crs::mock::codex::id_token("acct-e2e", "e2e@example.invalid"),
                                   "accessToken": token, "refreshToken": "codex-rt-e2e", "expires_in": 864000}}),
        )
        .await;
    let (key_id, key) = env
        .create_key(json!({"name": "codex-user", "permissions": ["openai"], "openaiAccountId": id}))
        .await;
    let out = run_codex(&codex, &env, &key).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "codex failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("Hello from the mock upstream."),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let seen = env.mock.state.seen.lock().clone();
    let calls: Vec<_> = seen
        .iter()
        .filter(|s| s.path == "/backend-api/codex/responses")
        .collect();
    assert!(!calls.is_empty());
    for s in &calls {
        assert_eq!(
            s.header("authorization"),
            Some(format!("Bearer {token}").as_str())
        );
        assert_eq!(s.header("chatgpt-account-id"), Some("acct-e2e"));
        assert!(
            s.header("user-agent")
                .is_some_and(|u| u.starts_with("codex_")),
            "Codex CLI's user agent passes: {:?}",
            s.header("user-agent")
        );
        let body: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
        assert_eq!(body["store"], false);
    }
    assert_usage_is_what_the_mock_served(&env, &key_id).await;
    let (_, v) = env
        .admin(
            reqwest::Method::GET,
            &format!("/admin/openai-accounts/{id}"),
            None,
        )
        .await;
    assert_eq!(
        v["data"]["codexUsage"]["primary"]["usedPercent"], 12.0,
        "{v}"
    );
    env.stop().await;
}

//! The real Gemini CLI (`gemini -p`, API-key mode: `GOOGLE_GEMINI_BASE_URL` at crs `/gemini`,
//! `GEMINI_API_KEY` a crs key) through crs to a Gemini OAuth account, which crs serves through
//! the mock's Code Assist. Installed by scripts/test.sh like the other client CLIs.

use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use crate::gemini_oauth::pointed_env;

fn gemini_path() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e/node_modules/.bin/gemini");
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
        "skipping: the Gemini CLI is not installed at {} (scripts/test.sh installs it)",
        p.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_cli_works_through_crs_on_a_gemini_oauth_account() {
    let Some(gemini) = gemini_path() else {
        return;
    };
    let env = pointed_env().await;
    env.create(
        "gemini-accounts",
        json!({"name": "google-login", "projectId": "e2e-project", "geminiOauth": {
            "access_token": "ya29.e2e", "refresh_token": "1//mock-e2e",
            "expiry_date": chrono::Utc::now().timestamp_millis() + 8 * 3_600_000}}),
    )
    .await;
    let (key_id, key) = env
        .create_key(json!({"name": "gemini-user", "permissions": ["gemini"]}))
        .await;
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".gemini")).unwrap();
    std::fs::write(
        home.path().join(".gemini/settings.json"),
        json!({"security": {"auth": {"selectedType": "gemini-api-key"}}}).to_string(),
    )
    .unwrap();
    let work = tempfile::tempdir().unwrap();
    let base = env.url("/gemini");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(gemini)
            .args(["-p", "Say hello to the relay", "-m", "gemini-2.5-flash"])
            .current_dir(work.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home.path())
            .env("GEMINI_CLI_TRUST_WORKSPACE", "true")
            .env("GEMINI_API_KEY", key)
            .env("GOOGLE_GEMINI_BASE_URL", base)
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "gemini failed\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("Hello from the mock upstream."),
        "stdout: {stdout}\nstderr: {stderr}"
    );

    // Every generation reached Code Assist with the account's token and project.
    let seen = env.mock.state.seen.lock().clone();
    let calls: Vec<_> = seen
        .iter()
        .filter(|s| s.path.starts_with("/v1internal:") && s.path.contains("enerateContent"))
        .collect();
    assert!(
        !calls.is_empty(),
        "{:?}",
        seen.iter().map(|s| &s.path).collect::<Vec<_>>()
    );
    for s in &calls {
        assert_eq!(s.header("authorization"), Some("Bearer ya29.e2e"));
        let b: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
        assert_eq!(b["project"], "e2e-project");
    }
    let t = env.key_totals(&key_id).await;
    let served = env.mock.state.served_total();
    assert_eq!(t.requests as usize, env.mock.state.served_count());
    assert_eq!(t.input_tokens, served.input_tokens);
    assert_eq!(t.output_tokens, served.output_tokens);
    env.stop().await;
}

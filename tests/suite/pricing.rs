//! The price table changes without a restart: a new file in the data directory, an admin
//! reload, a remote table (`pricing_url`); a table that does not parse is refused.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

const MODEL: &str = "claude-sonnet-4-5-20250929";

/// A table with one model: $1,000 / $2,000 per million input / output tokens.
fn table() -> String {
    json!({MODEL: {"input_cost_per_token": 0.001, "output_cost_per_token": 0.002,
                   "litellm_provider": "anthropic", "mode": "chat"}})
    .to_string()
}

async fn status(env: &Env) -> Value {
    env.admin(Method::GET, "/admin/pricing", None).await.1["data"].clone()
}

async fn wait_models(env: &Env, want: impl Fn(u64) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(env).await;
        if want(s["models"].as_u64().unwrap()) {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "pricing stayed {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn cost_of_one(env: &Env, key: &str) -> f64 {
    let before = env.usage(key).await["usage"]["total"]["cost"]
        .as_f64()
        .unwrap();
    let r = env
        .messages(key, msg_body(MODEL, false, "mock:usage=7,3,0,0"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    env.usage(key).await["usage"]["total"]["cost"]
        .as_f64()
        .unwrap()
        - before
}

#[tokio::test]
async fn the_price_table_reloads_when_its_file_changes_and_on_request() {
    let env = Env::start().await;
    env.create_account(json!({})).await;
    let (_, key) = env.create_key(json!({"name": "p"})).await;
    let embedded = status(&env).await;
    assert_eq!(embedded["source"], "embedded");
    let many = embedded["models"].as_u64().unwrap();
    assert!(many > 100);
    let list_price = cost_of_one(&env, &key).await;
    assert!(list_price > 0.0 && list_price < 0.001, "{list_price}");

    let file = env.data_dir().join("model_prices_and_context_window.json");
    std::fs::write(&file, table()).unwrap();
    let s = wait_models(&env, |n| n == 1).await;
    assert!(s["source"].as_str().unwrap().ends_with(".json"));
    let cost = cost_of_one(&env, &key).await;
    assert!((cost - 0.013).abs() < 1e-9, "{cost}");

    // A table that does not parse is refused; the current one stays.
    std::fs::write(&file, "{ not json").unwrap();
    let (code, v) = env.admin(Method::POST, "/admin/pricing/reload", None).await;
    assert_eq!(code, 422, "{v}");
    let s = status(&env).await;
    assert_eq!(s["models"], 1);
    assert!(s["lastError"].as_str().unwrap().contains("not a valid"));

    // No file: the embedded table again, on request.
    std::fs::remove_file(&file).unwrap();
    let (code, v) = env.admin(Method::POST, "/admin/pricing/reload", None).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["models"].as_u64().unwrap(), many);
    let (code, _) = env
        .admin(Method::POST, "/admin/pricing/reload?remote=true", None)
        .await;
    assert_eq!(code, 400, "no remote table configured");
    env.stop().await;
}

/// An HTTP server answering every request with `body`.
async fn serve(body: String) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/prices.json", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    url
}

#[tokio::test]
async fn a_remote_price_table_is_fetched_at_start_and_on_request() {
    let url = serve(table()).await;
    let env = Env::start_with(|c| c.pricing_url = Some(url.clone())).await;
    let s = wait_models(&env, |n| n == 1).await;
    assert!(s["source"].as_str().unwrap().ends_with(".json"));
    let file = env.data_dir().join("model_prices_and_context_window.json");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), table());
    std::fs::remove_file(&file).unwrap();
    let (code, v) = env
        .admin(Method::POST, "/admin/pricing/reload?remote=true", None)
        .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["data"]["models"], 1);
    env.stop().await;

    // A remote answer that is not a table is refused and writes nothing.
    let bad = serve("<html>".into()).await;
    let env = Env::start_with(|c| c.pricing_url = Some(bad)).await;
    let (code, v) = env
        .admin(Method::POST, "/admin/pricing/reload?remote=true", None)
        .await;
    assert_eq!(code, 502, "{v}");
    assert!(
        !env.data_dir()
            .join("model_prices_and_context_window.json")
            .exists()
    );
    assert_eq!(status(&env).await["source"], "embedded");
    env.stop().await;
}

//! "Test this account": one tiny request straight to the account's upstream, bypassing the
//! scheduler, so an admin sees at once whether the credential, endpoint and proxy work.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use salvo::http::HeaderMap;
use serde::Serialize;

use crate::accounts::AccountRt;
use crate::limits::{Admission, ClientFormat, KeyEntry, KeyRuntime, Service};
use crate::model::{ApiKey, Platform};
use crate::providers::gemini;
use crate::relay::engine::Call;
use crate::relay::wire::{self, Op};
use crate::state::AppState;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    pub ok: bool,
    pub status: u16,
    pub latency_ms: u64,
    pub model: String,
    pub message: String,
}

fn default_model(acc: &AccountRt) -> String {
    if let Some((from, _)) = acc.rec.supported_models.iter().next() {
        return from.clone();
    }
    match acc.rec.platform {
        Platform::Bedrock if !acc.rec.default_model.is_empty() => acc.rec.default_model.clone(),
        Platform::OpenAIResponses => "gpt-4.1-mini".into(),
        Platform::AzureOpenAI if !acc.rec.deployment_name.is_empty() => {
            acc.rec.deployment_name.clone()
        }
        Platform::AzureOpenAI => "gpt-4o-mini".into(),
        Platform::GeminiApi => "gemini-2.5-flash".into(),
        Platform::Droid if acc.rec.endpoint_type == "openai" => "gpt-5".into(),
        _ => "claude-3-5-haiku-20241022".into(),
    }
}

pub async fn run(st: &Arc<AppState>, acc: &AccountRt, model: Option<&str>) -> TestResult {
    let model = model
        .map(str::to_owned)
        .unwrap_or_else(|| default_model(acc));
    let (op, body) = match acc.rec.platform {
        Platform::OpenAIResponses | Platform::AzureOpenAI => (
            Op::Responses { compact: false },
            serde_json::json!({"model": model, "input": "ping", "max_output_tokens": 16}),
        ),
        Platform::Droid if acc.rec.endpoint_type == "openai" => (
            Op::Responses { compact: false },
            serde_json::json!({"model": model, "input": "ping", "max_output_tokens": 16}),
        ),
        Platform::GeminiApi => (
            Op::Gemini {
                method: gemini::Method::GenerateContent,
                v1: false,
            },
            serde_json::json!({"contents": [{"role": "user", "parts": [{"text": "ping"}]}],
                               "generationConfig": {"maxOutputTokens": 8}}),
        ),
        _ => (
            Op::Messages,
            serde_json::json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "ping"}]}),
        ),
    };
    let key = ApiKey::new("account-test".into());
    let call = Call {
        adm: Admission {
            key: Arc::new(KeyEntry {
                rt: Arc::new(KeyRuntime::new(&key)),
                rec: key,
            }),
            slot: None,
        },
        service: Service::Claude,
        format: ClientFormat::Anthropic,
        op,
        platforms: &[],
        binding: String::new(),
        session: None,
        model: model.clone(),
        body: Bytes::from(body.to_string()),
        stream: false,
        client_headers: HeaderMap::new(),
        query: None,
        started: Instant::now(),
    };
    let upstream_model = crate::scheduler::map_model(acc, &model).unwrap_or(model.clone());
    let started = Instant::now();
    let result = match wire::build_request(st, acc, &call, &upstream_model).await {
        Ok(rb) => tokio::time::timeout(std::time::Duration::from_secs(60), rb.send()).await,
        Err(e) => {
            return TestResult {
                ok: false,
                status: 0,
                latency_ms: 0,
                model,
                message: format!("cannot build the request: {e}"),
            };
        }
    };
    let latency_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok(Ok(r)) => {
            let status = r.status().as_u16();
            let body = r.bytes().await.unwrap_or_default();
            let ok = (200..300).contains(&status);
            let message = if ok {
                "The upstream answered".to_owned()
            } else {
                wire::error_message(&body).unwrap_or_else(|| {
                    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
                })
            };
            TestResult {
                ok,
                status,
                latency_ms,
                model,
                message,
            }
        }
        Ok(Err(e)) => TestResult {
            ok: false,
            status: 0,
            latency_ms,
            model,
            message: format!("request failed: {e}"),
        },
        Err(_) => TestResult {
            ok: false,
            status: 0,
            latency_ms,
            model,
            message: "timed out after 60 s".into(),
        },
    }
}

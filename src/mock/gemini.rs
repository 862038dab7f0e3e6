//! Gemini generateContent / streamGenerateContent / countTokens in the mock.
//! `mock:usage=IN,OUT,_,CACHED` reports `promptTokenCount = IN + CACHED`.

use std::sync::Arc;

use bytes::Bytes;
use salvo::http::{HeaderValue, StatusCode};
use salvo::prelude::*;
use serde_json::json;

use super::stream::sse_body;
use super::{Directives, MockState, check_and_record, directives};
use crate::usage::TokenUsage;

pub fn routes(state: &Arc<MockState>) -> Router {
    Router::new()
        .push(Router::with_path("v1beta/models/{target}").post(Generate(state.clone())))
        .push(Router::with_path("v1/models/{target}").post(Generate(state.clone())))
}

pub(crate) fn gemini_error(res: &mut Response, status: u16, message: &str) {
    res.status_code(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    let s = crate::providers::gemini::grpc_status(status);
    let _ = res.write_body(
        json!({"error": {"code": status, "message": message, "status": s}}).to_string(),
    );
}

struct Generate(Arc<MockState>);

#[salvo::async_trait]
impl Handler for Generate {
    async fn handle(
        &self,
        req: &mut Request,
        _d: &mut Depot,
        res: &mut Response,
        _c: &mut FlowCtrl,
    ) {
        let state = &self.0;
        let body = req
            .payload_with_max_size(256 * 1024 * 1024)
            .await
            .cloned()
            .unwrap_or_default();
        if !check_and_record(state, req, &body, res, gemini_error) {
            return;
        }
        let target = req.param::<String>("target").unwrap_or_default();
        let Some((model, method)) = target.rsplit_once(':') else {
            return gemini_error(res, 404, "Method not found.");
        };
        if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
            return gemini_error(res, 400, "Invalid JSON payload received.");
        }
        let d = directives(&body);
        if let Some(s) = d.status.filter(|s| *s >= 400) {
            return gemini_error(res, s, "Mock upstream error");
        }
        let u = d.usage_or_size(&body);
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        match method {
            "countTokens" => {
                let _ = res.write_body(count(&u).to_string());
            }
            "generateContent" => {
                state.served.lock().push(u);
                let _ = res.write_body(answer(model, &u).to_string());
            }
            "streamGenerateContent" => {
                let events = stream_chunks(model, &u, &d)
                    .into_iter()
                    .map(|c| Bytes::from(format!("data: {c}\r\n\r\n")))
                    .collect();
                if !d.cut {
                    state.served.lock().push(u);
                }
                sse_body(state, res, events, &d, "text/event-stream");
            }
            _ => gemini_error(res, 404, "Method not found."),
        }
    }
}

fn usage_metadata(u: &TokenUsage, out: u64) -> serde_json::Value {
    let prompt = u.input_tokens + u.cache_read_tokens;
    json!({"promptTokenCount": prompt, "candidatesTokenCount": out,
        "cachedContentTokenCount": u.cache_read_tokens, "totalTokenCount": prompt + out})
}

pub(crate) fn count(u: &TokenUsage) -> serde_json::Value {
    json!({"totalTokens": u.input_tokens + u.cache_read_tokens})
}

/// A `generateContent` answer.
pub(crate) fn answer(model: &str, u: &TokenUsage) -> serde_json::Value {
    json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hello from the mock upstream."}]},
        "finishReason": "STOP", "index": 0}], "usageMetadata": usage_metadata(u, u.output_tokens), "modelVersion": model})
}

/// The chunks of a `streamGenerateContent` answer (`mock:chunks`, default 3).
pub(crate) fn stream_chunks(model: &str, u: &TokenUsage, d: &Directives) -> Vec<serde_json::Value> {
    let chunks = d.chunks.unwrap_or(3).max(1);
    (0..chunks)
        .map(|i| {
            let last = i + 1 == chunks;
            let text = if i == 0 {
                "Hello from the mock upstream.".to_owned()
            } else {
                format!(" {i}")
            };
            let mut cand = json!({"content": {"role": "model", "parts": [{"text": text}]}, "index": 0});
            if last {
                cand["finishReason"] = json!("STOP");
            }
            let out = if last {
                u.output_tokens
            } else {
                (i as u64 + 1).min(u.output_tokens)
            };
            json!({"candidates": [cand], "usageMetadata": usage_metadata(u, out), "modelVersion": model})
        })
        .collect()
}

//! The Anthropic Messages API of the mock.

use std::sync::Arc;

use bytes::Bytes;
use salvo::http::HeaderValue;
use salvo::prelude::*;
use serde_json::json;

use super::stream::sse_body;
use super::{MockState, anthropic_error, check_and_record, directives, request_id};
use crate::usage::TokenUsage;

pub fn routes(state: &Arc<MockState>) -> Router {
    Router::new()
        .push(Router::with_path("v1/messages").post(Messages(state.clone())))
        .push(Router::with_path("v1/messages/count_tokens").post(CountTokens(state.clone())))
        // Factory's Droid layout: /a/v1/messages.
        .push(Router::with_path("a/v1/messages").post(Messages(state.clone())))
}

struct Messages(Arc<MockState>);

#[salvo::async_trait]
impl Handler for Messages {
    async fn handle(
        &self,
        req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        let state = &self.0;
        let body = req
            .payload_with_max_size(256 * 1024 * 1024)
            .await
            .cloned()
            .unwrap_or_default();
        let rid = request_id(state);
        res.headers_mut()
            .insert("request-id", HeaderValue::from_str(&rid).expect("ascii"));
        if !check_and_record(state, req, &body, res, anthropic_error) {
            return;
        }
        let forced = state.forced.lock().clone();
        if let Some(f) = forced {
            anthropic_error(res, f.status, &f.message);
            // Scripted failures say when they end through retry-after only.
            res.headers_mut().remove("retry-after");
            res.headers_mut()
                .remove("anthropic-ratelimit-requests-reset");
            res.headers_mut()
                .remove("anthropic-ratelimit-requests-remaining");
            if let Some(s) = f.retry_after {
                res.headers_mut().insert(
                    "retry-after",
                    HeaderValue::from_str(&s.to_string()).expect("digits"),
                );
            }
            return;
        }
        let parsed: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return anthropic_error(
                    res,
                    400,
                    "There was an error parsing the body of your request",
                );
            }
        };
        let Some(model) = parsed
            .get("model")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
        else {
            return anthropic_error(res, 400, "model: Field required");
        };
        let stream = parsed
            .get("stream")
            .and_then(|s| s.as_bool())
            .unwrap_or(false);
        let d = directives(&body);
        if let Some(s) = d.status.filter(|s| *s >= 400) {
            let msg = match s {
                429 => "Number of request tokens has exceeded your per-minute rate limit",
                529 => "Overloaded",
                _ => "Mock upstream error",
            };
            return anthropic_error(res, s, msg);
        }
        let usage = d.usage.unwrap_or(TokenUsage {
            input_tokens: (body.len() as u64 / 16).max(1),
            output_tokens: 12,
            ..Default::default()
        });
        for (name, val) in [
            ("anthropic-ratelimit-requests-limit", "4000"),
            ("anthropic-ratelimit-requests-remaining", "3999"),
            ("anthropic-ratelimit-tokens-limit", "400000"),
        ] {
            res.headers_mut()
                .insert(name, HeaderValue::from_static(val));
        }
        let text = "Hello from the mock upstream.";
        let msg_id = format!("msg_mock{}", &rid[8..]);
        let usage_json = |output: u64| {
            json!({
                "input_tokens": usage.input_tokens,
                "cache_creation_input_tokens": usage.cache_create_tokens,
                "cache_read_input_tokens": usage.cache_read_tokens,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": usage.ephemeral_5m_tokens,
                    "ephemeral_1h_input_tokens": usage.ephemeral_1h_tokens,
                },
                "output_tokens": output,
                "service_tier": "standard",
            })
        };
        if !stream {
            // A slow upstream: the whole answer after `delay_ms`.
            if d.delay_ms > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(d.delay_ms)).await;
            }
            state.served.lock().push(usage);
            let body = json!({
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": usage_json(usage.output_tokens),
            });
            res.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            let _ = res.write_body(body.to_string());
            return;
        }
        let chunks = d.chunks.unwrap_or(4).max(1);
        let mut events: Vec<Bytes> = Vec::with_capacity(chunks + 6);
        let ev = |name: &str, data: serde_json::Value| {
            Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
        };
        events.push(ev(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": usage_json(1)}}),
        ));
        events.push(ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        events.push(Bytes::from_static(
            b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
        ));
        for i in 0..chunks {
            let piece = if i == 0 {
                text.to_owned()
            } else {
                format!(" {i}")
            };
            events.push(ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        events.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push(ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"output_tokens": usage.output_tokens}}),
        ));
        events.push(ev("message_stop", json!({"type": "message_stop"})));
        if !d.cut {
            state.served.lock().push(usage);
        }
        sse_body(state, res, events, &d, "text/event-stream; charset=utf-8");
    }
}

struct CountTokens(Arc<MockState>);

#[salvo::async_trait]
impl Handler for CountTokens {
    async fn handle(
        &self,
        req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        let body = req
            .payload_with_max_size(256 * 1024 * 1024)
            .await
            .cloned()
            .unwrap_or_default();
        let rid = request_id(&self.0);
        res.headers_mut()
            .insert("request-id", HeaderValue::from_str(&rid).expect("ascii"));
        if !check_and_record(&self.0, req, &body, res, anthropic_error) {
            return;
        }
        if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
            return anthropic_error(
                res,
                400,
                "There was an error parsing the body of your request",
            );
        }
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        let _ =
            res.write_body(json!({"input_tokens": (body.len() as u64 / 16).max(1)}).to_string());
    }
}

//! The Anthropic Messages API of the mock.

use std::sync::Arc;

use bytes::Bytes;
use salvo::http::HeaderValue;
use salvo::prelude::*;
use serde_json::json;

use super::stream::sse_body;
use super::{MockState, anthropic_error, check_and_record, directives, request_id, take_scripted};

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
        let cred = super::credential(req).to_owned();
        if let Some(sc) = take_scripted(state, &cred) {
            anthropic_error(res, sc.status, &sc.message);
            // A scripted answer carries exactly its own headers.
            for n in [
                "retry-after",
                "anthropic-ratelimit-requests-reset",
                "anthropic-ratelimit-requests-remaining",
            ] {
                res.headers_mut().remove(n);
            }
            set_headers(res, &sc.headers);
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
        let usage = d.usage_or_size(&body);
        for (name, val) in [
            ("anthropic-ratelimit-requests-limit", "4000"),
            ("anthropic-ratelimit-requests-remaining", "3999"),
            ("anthropic-ratelimit-tokens-limit", "400000"),
        ] {
            res.headers_mut()
                .insert(name, HeaderValue::from_static(val));
        }
        let scripted_headers = state.answer_headers.lock().get(&cred).cloned();
        match scripted_headers {
            Some(h) => set_headers(res, &h),
            // Anthropic sends its subscription usage headers to OAuth tokens.
            None if req.headers().contains_key("authorization") => {
                set_headers(res, &subscription_headers(0.02, 0.10))
            }
            None => {}
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
            if d.gzip {
                res.headers_mut()
                    .insert("content-encoding", HeaderValue::from_static("gzip"));
                let _ = res.write_body(gzip(body.to_string().as_bytes()));
            } else {
                let _ = res.write_body(body.to_string());
            }
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
        if d.gzip {
            let all: Vec<u8> = events.concat();
            state.sent_streams.lock().push(Bytes::from(all.clone()));
            res.headers_mut().insert(
                "content-type",
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            );
            res.headers_mut()
                .insert("content-encoding", HeaderValue::from_static("gzip"));
            let _ = res.write_body(gzip(&all));
            return;
        }
        sse_body(state, res, events, &d, "text/event-stream; charset=utf-8");
    }
}

fn set_headers(res: &mut Response, h: &[(String, String)]) {
    for (k, v) in h {
        if let (Ok(k), Ok(v)) = (
            salvo::http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            res.headers_mut().insert(k, v);
        }
    }
}

/// The `anthropic-ratelimit-unified-*` headers Anthropic sends to OAuth (subscription) tokens:
/// per window a status, a utilisation fraction and a reset in unix seconds, plus the summary
/// (shape as captured from live answers: `...-5h-utilization: 0.01`, `...-5h-reset:
/// 1785182400`, `...-representative-claim: five_hour`).
pub fn subscription_headers(five_hour: f64, seven_day: f64) -> Vec<(String, String)> {
    let now = chrono::Utc::now().timestamp();
    let status = |u: f64| {
        if u >= 1.0 {
            "rejected"
        } else if u >= 0.9 {
            "allowed_warning"
        } else {
            "allowed"
        }
    };
    let five_reset = now + 3 * 3600;
    let week_reset = now + 4 * 86_400;
    let summary = if status(five_hour) != "allowed" || five_hour >= seven_day {
        ("five_hour", five_reset, status(five_hour))
    } else {
        ("seven_day", week_reset, status(seven_day))
    };
    vec![
        (
            "anthropic-ratelimit-unified-status".into(),
            summary.2.into(),
        ),
        (
            "anthropic-ratelimit-unified-reset".into(),
            summary.1.to_string(),
        ),
        (
            "anthropic-ratelimit-unified-representative-claim".into(),
            summary.0.into(),
        ),
        (
            "anthropic-ratelimit-unified-5h-status".into(),
            status(five_hour).into(),
        ),
        (
            "anthropic-ratelimit-unified-5h-utilization".into(),
            format!("{five_hour}"),
        ),
        (
            "anthropic-ratelimit-unified-5h-reset".into(),
            five_reset.to_string(),
        ),
        (
            "anthropic-ratelimit-unified-7d-status".into(),
            status(seven_day).into(),
        ),
        (
            "anthropic-ratelimit-unified-7d-utilization".into(),
            format!("{seven_day}"),
        ),
        (
            "anthropic-ratelimit-unified-7d-reset".into(),
            week_reset.to_string(),
        ),
    ]
}

fn gzip(b: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = e.write_all(b);
    e.finish().unwrap_or_default()
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

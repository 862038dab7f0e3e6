//! OpenAI Responses and Chat Completions in the mock (also answering Azure's paths).
//! `mock:usage=IN,OUT,_,CACHED` reports `input_tokens = IN + CACHED` with `CACHED` cached,
//! as OpenAI counts cached tokens inside the input.

use std::sync::Arc;

use bytes::Bytes;
use salvo::http::{HeaderValue, StatusCode};
use salvo::prelude::*;
use serde_json::json;

use super::stream::sse_body;
use super::{MockState, check_and_record, directives, request_id};
use crate::usage::TokenUsage;

pub fn routes(state: &Arc<MockState>) -> Router {
    Router::new()
        .push(Router::with_path("v1/responses").post(Responses(state.clone(), false)))
        .push(Router::with_path("v1/responses/compact").post(Responses(state.clone(), true)))
        .push(Router::with_path("v1/chat/completions").post(Chat(state.clone())))
        .push(Router::with_path("openai/responses").post(Responses(state.clone(), false)))
        .push(Router::with_path("o/v1/responses").post(Responses(state.clone(), false)))
        // Factory's Droid layout for Chat Completions.
        .push(Router::with_path("o/v1/chat/completions").post(Chat(state.clone())))
        .push(
            Router::with_path("openai/deployments/{deployment}/chat/completions")
                .post(Chat(state.clone())),
        )
        .push(
            Router::with_path("openai/deployments/{deployment}/embeddings")
                .post(Embeddings(state.clone())),
        )
}

pub(crate) fn openai_error(res: &mut Response, status: u16, message: &str) {
    res.status_code(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    if status == 429 {
        res.headers_mut()
            .insert("retry-after", HeaderValue::from_static("20"));
        res.headers_mut().insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("0"),
        );
    }
    let (t, code) = match status {
        401 => ("invalid_request_error", "invalid_api_key"),
        429 => ("requests", "rate_limit_exceeded"),
        400..=499 => ("invalid_request_error", "invalid_request"),
        _ => ("server_error", "server_error"),
    };
    let _ = res.write_body(
        json!({"error": {"message": message, "type": t, "param": null, "code": code}}).to_string(),
    );
}

fn usage_of(body: &[u8]) -> (TokenUsage, Option<u16>, super::Directives) {
    let d = directives(body);
    (d.usage_or_size(body), d.status, d)
}

/// The arguments of the tool call `mock:tool` asks for.
pub const TOOL_ARGS: &str = "{\"city\":\"Paris\"}";

struct Responses(Arc<MockState>, bool);

#[salvo::async_trait]
impl Handler for Responses {
    async fn handle(
        &self,
        req: &mut Request,
        _d: &mut Depot,
        res: &mut Response,
        _c: &mut FlowCtrl,
    ) {
        let state = &self.0;
        let (body, rid) = super::body_and_id(state, req, res).await;
        if !check_and_record(state, req, &body, res, openai_error) {
            return;
        }
        let forced = state.forced.lock().clone();
        if let Some(f) = forced {
            return openai_error(res, f.status, &f.message);
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return openai_error(
                res,
                400,
                "We could not parse the JSON body of your request.",
            );
        };
        respond(state, res, &v, &body, &rid, self.1, &[]);
    }
}

/// A tiny PNG (1x1), the image the mock's image generation "draws".
pub(crate) const MOCK_PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// The Responses answer to a parsed request `v` (raw `body`, for directives): a JSON answer,
/// or the SSE events of one. A request with the `image_generation` tool gets an
/// `image_generation_call` output item (the Codex backend's image tool), others a message.
/// `headers` are added to a successful answer.
pub(crate) fn respond(
    state: &Arc<MockState>,
    res: &mut Response,
    v: &serde_json::Value,
    body: &Bytes,
    rid: &str,
    compact: bool,
    headers: &[(String, String)],
) {
    let Some(model) = v.get("model").and_then(|m| m.as_str()).map(str::to_owned) else {
        return openai_error(res, 400, "Missing required parameter: 'model'.");
    };
    let stream = v.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
    let (u, status, d) = usage_of(body);
    if let Some(s) = status.filter(|s| *s >= 400) {
        return openai_error(res, s, "Mock upstream error");
    }
    let usage = json!({
        "input_tokens": u.input_tokens + u.cache_read_tokens,
        "input_tokens_details": {"cached_tokens": u.cache_read_tokens},
        "output_tokens": u.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.input_tokens + u.cache_read_tokens + u.output_tokens,
    });
    let resp_id = format!("resp_{}", &rid[4..]);
    let text = "Hello from the mock upstream.";
    let image = v
        .get("tools")
        .and_then(|t| t.as_array())
        .and_then(|t| {
            t.iter()
                .find(|t| t.get("type").and_then(|x| x.as_str()) == Some("image_generation"))
        })
        .cloned();
    let mut output = match &image {
        Some(tool) => {
            let prompt = v
                .pointer("/input/0/content/0/text")
                .and_then(|x| x.as_str())
                .unwrap_or("");
            json!([{"type": "image_generation_call", "id": "ig_1", "status": "completed",
                "revised_prompt": format!("A picture of {prompt}"), "result": MOCK_PNG_B64,
                "size": tool.get("size").cloned().unwrap_or(json!("1024x1024")),
                "output_format": tool.get("output_format").cloned().unwrap_or(json!("png"))}])
        }
        None => {
            json!([{"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}])
        }
    };
    // `mock:tool`: the text, then a call of the request's first function tool, as the
    // Responses API answers (a `function_call` output item with JSON-text arguments).
    let tool = v
        .pointer("/tools/0/name")
        .and_then(|n| n.as_str())
        .filter(|_| d.tool && image.is_none())
        .map(str::to_owned);
    if let Some(name) = &tool {
        output
            .as_array_mut()
            .expect("an array")
            .push(json!({"type": "function_call",
            "id": "fc_1", "call_id": "call_mock1", "name": name, "status": "completed",
            "arguments": TOOL_ARGS}));
    }
    super::set_headers(res, headers);
    if !stream || compact {
        state.served.lock().push(u);
        let b = json!({"id": resp_id, "object": "response", "created_at": 1_800_000_000, "status": "completed",
            "model": model, "output": output, "usage": usage});
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        let _ = res.write_body(b.to_string());
        return;
    }
    let ev = |name: &str, data: serde_json::Value| {
        Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
    };
    let base =
        json!({"id": resp_id, "object": "response", "created_at": 1_800_000_000, "model": model});
    let mut created = base.clone();
    created["status"] = json!("in_progress");
    created["output"] = json!([]);
    created["usage"] = json!(null);
    let added = if image.is_some() {
        json!({"type": "image_generation_call", "id": "ig_1", "status": "in_progress"})
    } else {
        json!({"type": "message", "id": "msg_1", "status": "in_progress", "role": "assistant", "content": []})
    };
    let mut events = vec![
        ev(
            "response.created",
            json!({"type": "response.created", "sequence_number": 0, "response": created}),
        ),
        ev(
            "response.output_item.added",
            json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
            "item": added}),
        ),
    ];
    let chunks = if image.is_some() {
        0
    } else {
        d.chunks.unwrap_or(3).max(1)
    };
    for i in 0..chunks {
        let piece = if i == 0 {
            text.to_owned()
        } else {
            format!(" {i}")
        };
        events.push(ev(
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "sequence_number": 2 + i,
            "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": piece}),
        ));
    }
    events.push(ev(
        "response.output_item.done",
        json!({"type": "response.output_item.done", "sequence_number": 2 + chunks,
        "output_index": 0, "item": output[0]}),
    ));
    if let Some(name) = &tool {
        events.push(ev(
            "response.output_item.added",
            json!({"type": "response.output_item.added", "output_index": 1,
            "item": {"type": "function_call", "id": "fc_1", "call_id": "call_mock1", "name": name,
                "arguments": "", "status": "in_progress"}}),
        ));
        let (a, b) = TOOL_ARGS.split_at(TOOL_ARGS.len() / 2);
        for part in [a, b] {
            events.push(ev(
                "response.function_call_arguments.delta",
                json!({"type": "response.function_call_arguments.delta", "output_index": 1,
                "item_id": "fc_1", "delta": part}),
            ));
        }
        events.push(ev(
            "response.output_item.done",
            json!({"type": "response.output_item.done", "output_index": 1, "item": output[1]}),
        ));
    }
    let mut done = base;
    done["status"] = json!("completed");
    done["output"] = output;
    done["usage"] = usage;
    if let Some(tool) = image {
        done["tools"] = json!([tool]);
    }
    events.push(ev(
        "response.completed",
        json!({"type": "response.completed", "sequence_number": 3 + chunks, "response": done}),
    ));
    if !d.cut {
        state.served.lock().push(u);
    }
    sse_body(state, res, events, &d, "text/event-stream; charset=utf-8");
}

struct Chat(Arc<MockState>);

#[salvo::async_trait]
impl Handler for Chat {
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
        let rid = request_id(state);
        res.headers_mut()
            .insert("x-request-id", HeaderValue::from_str(&rid).expect("ascii"));
        if !check_and_record(state, req, &body, res, openai_error) {
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return openai_error(
                res,
                400,
                "We could not parse the JSON body of your request.",
            );
        };
        let model = v
            .get("model")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .or_else(|| req.param::<String>("deployment"))
            .unwrap_or_default();
        let stream = v.get("stream").and_then(|s| s.as_bool()).unwrap_or(false);
        let include_usage = v
            .pointer("/stream_options/include_usage")
            .and_then(|x| x.as_bool())
            .unwrap_or(false);
        let (u, status, d) = usage_of(&body);
        if let Some(s) = status.filter(|s| *s >= 400) {
            return openai_error(res, s, "Mock upstream error");
        }
        let usage = json!({"prompt_tokens": u.input_tokens + u.cache_read_tokens, "completion_tokens": u.output_tokens,
            "total_tokens": u.input_tokens + u.cache_read_tokens + u.output_tokens,
            "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens}});
        let id = format!("chatcmpl-{}", &rid[4..]);
        if !stream {
            state.served.lock().push(u);
            let b = json!({"id": id, "object": "chat.completion", "created": 1_800_000_000, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock upstream."}, "finish_reason": "stop"}],
                "usage": usage});
            res.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            let _ = res.write_body(b.to_string());
            return;
        }
        let chunk = |delta: serde_json::Value, finish: serde_json::Value| {
            Bytes::from(format!(
                "data: {}\n\n",
                json!({"id": id, "object": "chat.completion.chunk", "created": 1_800_000_000,
                "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            ))
        };
        let mut events = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            json!(null),
        )];
        for i in 0..d.chunks.unwrap_or(3).max(1) {
            events.push(chunk(json!({"content": if i == 0 { "Hello from the mock upstream.".to_owned() } else { format!(" {i}") }}), json!(null)));
        }
        events.push(chunk(json!({}), json!("stop")));
        if include_usage {
            events.push(Bytes::from(format!(
                "data: {}\n\n",
                json!({"id": id, "object": "chat.completion.chunk",
                "created": 1_800_000_000, "model": model, "choices": [], "usage": usage})
            )));
            if !d.cut {
                state.served.lock().push(u);
            }
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        sse_body(state, res, events, &d, "text/event-stream; charset=utf-8");
    }
}

/// Azure's embeddings on a deployment: one vector per input, usage as prompt tokens only.
struct Embeddings(Arc<MockState>);

#[salvo::async_trait]
impl Handler for Embeddings {
    async fn handle(
        &self,
        req: &mut Request,
        _d: &mut Depot,
        res: &mut Response,
        _c: &mut FlowCtrl,
    ) {
        let state = &self.0;
        let body = req
            .payload_with_max_size(16 * 1024 * 1024)
            .await
            .cloned()
            .unwrap_or_default();
        if !check_and_record(state, req, &body, res, openai_error) {
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return openai_error(
                res,
                400,
                "We could not parse the JSON body of your request.",
            );
        };
        let inputs = match v.get("input") {
            Some(serde_json::Value::Array(a)) => a.len(),
            Some(serde_json::Value::String(_)) => 1,
            _ => return openai_error(res, 400, "'input' is a required property"),
        };
        let (u, status, _) = usage_of(&body);
        if let Some(s) = status.filter(|s| *s >= 400) {
            return openai_error(res, s, "Mock upstream error");
        }
        let u = TokenUsage {
            output_tokens: 0,
            ..u
        };
        state.served.lock().push(u);
        let data: Vec<_> = (0..inputs)
            .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.0125, -0.5, 0.25]}))
            .collect();
        let model = req.param::<String>("deployment").unwrap_or_default();
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        let _ = res.write_body(
            json!({"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": u.input_tokens, "total_tokens": u.input_tokens}})
            .to_string(),
        );
    }
}

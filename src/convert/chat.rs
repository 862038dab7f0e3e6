//! OpenAI Chat Completions (and legacy Completions) on Anthropic Messages: the request
//! converted to a Messages body,
//! the answer back to a `chat.completion`, and a Messages SSE stream to `chat.completion.chunk`
//! events ending in `data: [DONE]`.
//!
//! Shapes follow the two public API references: OpenAI's Chat Completions (messages with
//! `system`/`developer`/`user`/`assistant`/`tool` roles, content parts `text` and `image_url`,
//! `tools` of type `function`, `tool_calls` with JSON-string `arguments`, `tool_choice`, `stop`,
//! `max_tokens`/`max_completion_tokens`, `stream_options.include_usage`, `finish_reason`) and
//! Anthropic's Messages (`system` blocks, alternating `user`/`assistant` turns, `tool_use` /
//! `tool_result` blocks, `input_schema`, `stop_sequences`, the SSE events `message_start` ..
//! `message_stop` with `text_delta` and `input_json_delta`).

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::{Converter, ConvertingTap, Invalid};
use crate::providers::StreamTap;
use crate::providers::anthropic::SseTap;
use crate::usage::TokenUsage;

/// Anthropic requires `max_tokens`; a chat request may leave it out.
pub const DEFAULT_MAX_TOKENS: u64 = 8192;

/// What the answer's conversion needs to know about the request.
#[derive(Debug, Clone)]
pub struct Chat {
    /// The model name the client asked for (echoed in every answer).
    pub model: String,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the usage and no choices.
    pub include_usage: bool,
    /// A legacy Completions request (`/v1/completions`): answers are `text_completion`s.
    pub legacy: bool,
    /// What the upstream answers in.
    pub upstream: Upstream,
}

/// A content's text: a string, or the `text` of its parts joined by newlines.
pub(super) fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// An `image_url` part as an Anthropic image block: a `data:` URL becomes a base64 source,
/// anything else a URL source.
fn image_block(part: &Value) -> Result<Value, Invalid> {
    let url = part
        .get("image_url")
        .and_then(|i| i.get("url").or(Some(i)))
        .and_then(Value::as_str)
        .ok_or_else(|| Invalid("image_url.url is required".into()))?;
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest
            .split_once(',')
            .ok_or_else(|| Invalid("image_url: a data URL needs a comma".into()))?;
        let media = meta
            .strip_suffix(";base64")
            .ok_or_else(|| Invalid("image_url: only base64 data URLs are supported".into()))?;
        return Ok(
            json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}),
        );
    }
    Ok(json!({"type": "image", "source": {"type": "url", "url": url}}))
}

/// A user or assistant `content` as Anthropic content blocks.
fn blocks(content: &Value) -> Result<Vec<Value>, Invalid> {
    match content {
        Value::Null => Ok(Vec::new()),
        Value::String(s) if s.is_empty() => Ok(Vec::new()),
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => p
                    .get("text")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(|t| Ok(json!({"type": "text", "text": t}))),
                Some("image_url") => Some(image_block(p)),
                Some(other) => Some(Err(Invalid(format!(
                    "content part type {other:?} is not supported on this route"
                )))),
                None => Some(Err(Invalid("a content part needs a type".into()))),
            })
            .collect(),
        _ => Err(Invalid(
            "content must be a string or an array of parts".into(),
        )),
    }
}

/// Append `blocks` as a turn of `role`, merging with the previous turn of the same role
/// (Anthropic wants user and assistant turns to alternate).
fn push_turn(turns: &mut Vec<Value>, role: &str, mut new: Vec<Value>) {
    if new.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut()
        && last["role"] == role
        && let Some(c) = last["content"].as_array_mut()
    {
        c.append(&mut new);
        return;
    }
    turns.push(json!({"role": role, "content": new}));
}

fn tool_use(call: &Value) -> Result<Value, Invalid> {
    let f = call
        .get("function")
        .ok_or_else(|| Invalid("tool_calls[].function is required".into()))?;
    let name = f.get("name").and_then(Value::as_str).unwrap_or("");
    let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
    let input: Value = if args.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(args)
            .map_err(|_| Invalid(format!("tool call {name:?}: arguments are not JSON")))?
    };
    Ok(json!({
        "type": "tool_use",
        "id": call.get("id").and_then(Value::as_str).unwrap_or(""),
        "name": name,
        "input": input,
    }))
}

/// The request's function tools: (name, description, parameters).
fn function_tools(req: &Map<String, Value>) -> Vec<(Value, Value, Option<&Value>)> {
    req.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("function"))
        .map(|f| {
            (
                f.get("name").cloned().unwrap_or(json!("")),
                f.get("description").cloned().unwrap_or(json!("")),
                f.get("parameters"),
            )
        })
        .collect()
}

/// The schema of a function declared without parameters.
fn no_parameters() -> Value {
    json!({"type": "object", "properties": {}})
}

/// `max_completion_tokens`, else the older `max_tokens`.
fn max_tokens(req: &Map<String, Value>) -> Option<u64> {
    req.get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .and_then(Value::as_u64)
}

/// `stop` (one string or a list) as a list.
fn stop_sequences(req: &Map<String, Value>) -> Option<Value> {
    match req.get("stop") {
        Some(Value::String(s)) => Some(json!([s])),
        Some(Value::Array(a)) if !a.is_empty() => Some(Value::Array(a.clone())),
        _ => None,
    }
}

/// `reasoning_effort` as a thinking budget in tokens, for upstreams that take a budget
/// (Anthropic's extended thinking, at least 1,024; Gemini's `thinkingBudget`). `minimal` and
/// `none` ask for no thinking.
fn thinking_budget(req: &Map<String, Value>) -> Option<u64> {
    match req.get("reasoning_effort").and_then(Value::as_str)? {
        "low" => Some(2048),
        "medium" => Some(8192),
        "high" => Some(24576),
        _ => None,
    }
}

fn tool_choice(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Some(json!({"type": "auto"})),
            "none" => Some(json!({"type": "none"})),
            "required" => Some(json!({"type": "any"})),
            _ => None,
        },
        Value::Object(o) => o
            .get("function")
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .map(|n| json!({"type": "tool", "name": n})),
        _ => None,
    }
}

/// A Chat Completions request body as an Anthropic Messages body, and what the answer's
/// conversion needs.
pub fn request(body: &[u8]) -> Result<(Vec<u8>, Chat), Invalid> {
    let req: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| Invalid(format!("the body is not a JSON object: {e}")))?;
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| Invalid("model is required".into()))?
        .to_owned();
    let msgs = req
        .get("messages")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Invalid("messages must be a non-empty array".into()))?;
    let mut system: Vec<Value> = Vec::new();
    let mut turns: Vec<Value> = Vec::new();
    for m in msgs {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                let t = text_of(content);
                if !t.is_empty() {
                    system.push(json!({"type": "text", "text": t}));
                }
            }
            "user" => push_turn(&mut turns, "user", blocks(content)?),
            "assistant" => {
                let mut b = blocks(content)?;
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    b.push(tool_use(call)?);
                }
                push_turn(&mut turns, "assistant", b);
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Invalid("a tool message needs tool_call_id".into()))?;
                push_turn(
                    &mut turns,
                    "user",
                    vec![
                        json!({"type": "tool_result", "tool_use_id": id, "content": text_of(content)}),
                    ],
                );
            }
            other => return Err(Invalid(format!("unknown message role {other:?}"))),
        }
    }
    if turns.is_empty() {
        return Err(Invalid("messages need at least one user message".into()));
    }
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let max_tokens = max_tokens(&req).unwrap_or(DEFAULT_MAX_TOKENS);
    let mut out = json!({
        "model": model,
        "messages": turns,
        "max_tokens": max_tokens,
        "stream": stream,
    });
    if !system.is_empty() {
        out["system"] = Value::Array(system);
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = req.get(k).filter(|v| v.is_number()) {
            out[k] = v.clone();
        }
    }
    if let Some(budget) = thinking_budget(&req) {
        // Anthropic's extended thinking: `budget_tokens` below `max_tokens`, and no changed
        // temperature or top_p beside it.
        out["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
        if max_tokens <= budget {
            out["max_tokens"] = json!(budget + max_tokens);
        }
        let o = out.as_object_mut().expect("built as an object");
        o.remove("temperature");
        o.remove("top_p");
    }
    if let Some(stop) = stop_sequences(&req) {
        out["stop_sequences"] = stop;
    }
    let converted: Vec<Value> = function_tools(&req)
        .into_iter()
        .map(|(name, description, params)| {
            json!({"name": name, "description": description,
                "input_schema": params.cloned().unwrap_or_else(no_parameters)})
        })
        .collect();
    if !converted.is_empty() {
        out["tools"] = Value::Array(converted);
        if let Some(c) = req.get("tool_choice").and_then(tool_choice) {
            out["tool_choice"] = c;
        }
    }
    if let Some(u) = req.get("user").and_then(Value::as_str) {
        out["metadata"] = json!({"user_id": u});
    }
    let include_usage = req
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((
        serde_json::to_vec(&out).expect("a JSON value serialises"),
        Chat {
            model,
            stream,
            include_usage,
            legacy: false,
            upstream: Upstream::Messages,
        },
    ))
}

/// A Chat Completions request as an OpenAI Responses body (for Responses/Codex accounts):
/// system and developer text become `instructions`, turns become `input` items (`input_text`,
/// `input_image`, `output_text`, `function_call`, `function_call_output`), tools are flattened
/// (`{"type": "function", "name", "description", "parameters"}`), `max_tokens` becomes
/// `max_output_tokens`; nothing is stored upstream (`store: false`).
pub fn responses_request(body: &[u8]) -> Result<(Vec<u8>, Chat), Invalid> {
    // The same validation and the same `Chat` as the Messages conversion.
    let (_, mut chat) = request(body)?;
    chat.upstream = Upstream::Responses;
    let req: Map<String, Value> = serde_json::from_slice(body).expect("parsed above");
    let msgs = req["messages"].as_array().expect("checked above");
    let mut instructions: Vec<String> = Vec::new();
    let mut input: Vec<Value> = Vec::new();
    for m in msgs {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").unwrap_or(&Value::Null);
        match role {
            "system" | "developer" => {
                let t = text_of(content);
                if !t.is_empty() {
                    instructions.push(t);
                }
            }
            "user" => {
                let parts: Vec<Value> = blocks(content)?
                    .into_iter()
                    .map(|b| match b["type"].as_str() {
                        Some("image") => {
                            let src = &b["source"];
                            let url = match src["type"].as_str() {
                                Some("base64") => format!(
                                    "data:{};base64,{}",
                                    src["media_type"].as_str().unwrap_or(""),
                                    src["data"].as_str().unwrap_or("")
                                ),
                                _ => src["url"].as_str().unwrap_or("").to_owned(),
                            };
                            json!({"type": "input_image", "image_url": url})
                        }
                        _ => json!({"type": "input_text", "text": b["text"]}),
                    })
                    .collect();
                if !parts.is_empty() {
                    input.push(json!({"role": "user", "content": parts}));
                }
            }
            "assistant" => {
                let t = text_of(content);
                if !t.is_empty() {
                    input.push(json!({"role": "assistant", "content": [{"type": "output_text", "text": t}]}));
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let u = tool_use(call)?;
                    input.push(
                        json!({"type": "function_call", "call_id": u["id"], "name": u["name"],
                        "arguments": u["input"].to_string()}),
                    );
                }
            }
            "tool" => input.push(json!({"type": "function_call_output",
                "call_id": m.get("tool_call_id").cloned().unwrap_or(json!("")),
                "output": text_of(content)})),
            _ => {}
        }
    }
    let mut out =
        json!({"model": chat.model, "input": input, "stream": chat.stream, "store": false});
    if !instructions.is_empty() {
        out["instructions"] = json!(instructions.join("\n\n"));
    }
    if let Some(n) = max_tokens(&req) {
        out["max_output_tokens"] = json!(n);
    }
    for k in ["temperature", "top_p"] {
        if let Some(v) = req.get(k).filter(|v| v.is_number()) {
            out[k] = v.clone();
        }
    }
    if let Some(effort) = req.get("reasoning_effort").and_then(Value::as_str) {
        // A summary of the reasoning comes back as `reasoning_content`.
        out["reasoning"] = json!({"effort": effort, "summary": "auto"});
    }
    let flat: Vec<Value> = function_tools(&req)
        .into_iter()
        .map(|(name, description, params)| {
            json!({"type": "function", "name": name, "description": description,
                "parameters": params.cloned().unwrap_or_else(no_parameters)})
        })
        .collect();
    if !flat.is_empty() {
        out["tools"] = Value::Array(flat);
        match req.get("tool_choice") {
            Some(Value::String(c)) => out["tool_choice"] = json!(c),
            Some(Value::Object(o)) => {
                if let Some(n) = o.get("function").and_then(|f| f.get("name")) {
                    out["tool_choice"] = json!({"type": "function", "name": n});
                }
            }
            _ => {}
        }
    }
    Ok((
        serde_json::to_vec(&out).expect("a JSON value serialises"),
        chat,
    ))
}

/// An OpenAI Responses object as a `chat.completion`. None when the body is not a response.
fn response_from_responses(body: &[u8], chat: &Chat, created: i64) -> Option<Vec<u8>> {
    let r: Value = serde_json::from_slice(body).ok()?;
    let output = r.get("output")?.as_array()?;
    let (mut text, mut reasoning) = (String::new(), String::new());
    let mut calls = Vec::new();
    for item in output {
        match item.get("type").and_then(Value::as_str) {
            Some("reasoning") => {
                for s in item
                    .get("summary")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    reasoning.push_str(s.get("text").and_then(Value::as_str).unwrap_or(""));
                }
            }
            Some("message") => {
                for c in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if c.get("type").and_then(Value::as_str) == Some("output_text") {
                        text.push_str(c.get("text").and_then(Value::as_str).unwrap_or(""));
                    }
                }
            }
            Some("function_call") => calls.push(json!({
                "id": item.get("call_id").cloned().unwrap_or(json!("")),
                "type": "function",
                "function": {"name": item.get("name").cloned().unwrap_or(json!("")),
                    "arguments": item.get("arguments").cloned().unwrap_or(json!("{}"))},
            })),
            _ => {}
        }
    }
    let (usage, _) = crate::providers::openai::responses_usage_from_body(body).unwrap_or_default();
    let finish = responses_finish(&r, !calls.is_empty());
    let id = r.get("id").and_then(Value::as_str).unwrap_or("");
    let id = id.strip_prefix("resp_").unwrap_or(id);
    completion(
        chat,
        id,
        created,
        Said { text, reasoning },
        calls,
        finish,
        &usage,
    )
}

/// JSON Schema keys Gemini's function declarations refuse.
const GEMINI_UNSUPPORTED_SCHEMA: &[&str] = &["$schema", "additionalProperties", "strict"];

pub(crate) fn gemini_schema(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(k, _)| !GEMINI_UNSUPPORTED_SCHEMA.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), gemini_schema(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(gemini_schema).collect()),
        other => other.clone(),
    }
}

/// A Chat Completions request as a Gemini `generateContent` body: system and developer text
/// become `systemInstruction`, turns `contents` (`user` / `model`) with `text`, `inlineData`
/// (images as data URLs), `functionCall` and `functionResponse` parts; tools become
/// `functionDeclarations`, `tool_choice` a `functionCallingConfig`, limits `generationConfig`.
pub fn gemini_request(body: &[u8]) -> Result<(Vec<u8>, Chat), Invalid> {
    let (_, mut chat) = request(body)?;
    chat.upstream = Upstream::Gemini;
    let req: Map<String, Value> = serde_json::from_slice(body).expect("parsed above");
    let msgs = req["messages"].as_array().expect("checked above");
    let mut system: Vec<Value> = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // tool_call_id -> function name, for functionResponse parts.
    let mut names: Vec<(String, String)> = Vec::new();
    for m in msgs {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        let content = m.get("content").unwrap_or(&Value::Null);
        let (turn_role, parts): (&str, Vec<Value>) = match role {
            "system" | "developer" => {
                let t = text_of(content);
                if !t.is_empty() {
                    system.push(json!({"text": t}));
                }
                continue;
            }
            "user" => {
                let mut parts = Vec::new();
                for b in blocks(content)? {
                    if b["type"] == "image" {
                        if b["source"]["type"] != "base64" {
                            return Err(Invalid(
                                "images for Gemini models must be data URLs".into(),
                            ));
                        }
                        parts.push(json!({"inlineData": {"mimeType": b["source"]["media_type"], "data": b["source"]["data"]}}));
                    } else {
                        parts.push(json!({"text": b["text"]}));
                    }
                }
                ("user", parts)
            }
            "assistant" => {
                let mut parts = Vec::new();
                let t = text_of(content);
                if !t.is_empty() {
                    parts.push(json!({"text": t}));
                }
                for call in m
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let u = tool_use(call)?;
                    names.push((
                        u["id"].as_str().unwrap_or("").to_owned(),
                        u["name"].as_str().unwrap_or("").to_owned(),
                    ));
                    parts.push(json!({"functionCall": {"name": u["name"], "args": u["input"]}}));
                }
                ("model", parts)
            }
            "tool" => {
                let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
                let name = names
                    .iter()
                    .find(|(i, _)| i == id)
                    .map(|(_, n)| n.clone())
                    .unwrap_or_default();
                (
                    "user",
                    vec![
                        json!({"functionResponse": {"name": name, "response": {"content": text_of(content)}}}),
                    ],
                )
            }
            _ => continue,
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some(last) if last["role"] == turn_role => {
                if let Some(p) = last["parts"].as_array_mut() {
                    p.extend(parts);
                }
            }
            _ => contents.push(json!({"role": turn_role, "parts": parts})),
        }
    }
    let mut out = json!({"contents": contents});
    if !system.is_empty() {
        out["systemInstruction"] = json!({"parts": system});
    }
    let mut config = Map::new();
    if let Some(n) = max_tokens(&req) {
        config.insert("maxOutputTokens".into(), json!(n));
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "topP")] {
        if let Some(v) = req.get(from).filter(|v| v.is_number()) {
            config.insert(to.into(), v.clone());
        }
    }
    if let Some(stop) = stop_sequences(&req) {
        config.insert("stopSequences".into(), stop);
    }
    if let Some(budget) = thinking_budget(&req) {
        config.insert(
            "thinkingConfig".into(),
            json!({"thinkingBudget": budget, "includeThoughts": true}),
        );
    }
    if !config.is_empty() {
        out["generationConfig"] = Value::Object(config);
    }
    let decls: Vec<Value> = function_tools(&req)
        .into_iter()
        .map(|(name, description, params)| {
            let mut d = json!({"name": name, "description": description});
            if let Some(p) = params {
                d["parameters"] = gemini_schema(p);
            }
            d
        })
        .collect();
    if !decls.is_empty() {
        out["tools"] = json!([{"functionDeclarations": decls}]);
        let mode = match req.get("tool_choice") {
            Some(Value::String(c)) if c == "none" => Some(json!({"mode": "NONE"})),
            Some(Value::String(c)) if c == "required" => Some(json!({"mode": "ANY"})),
            Some(Value::Object(o)) => o
                .get("function")
                .and_then(|f| f.get("name"))
                .map(|n| json!({"mode": "ANY", "allowedFunctionNames": [n]})),
            _ => None,
        };
        if let Some(m) = mode {
            out["toolConfig"] = json!({"functionCallingConfig": m});
        }
    }
    Ok((
        serde_json::to_vec(&out).expect("a JSON value serialises"),
        chat,
    ))
}

/// A Gemini candidate's parts: the model's thoughts (`thought: true`) or its answer.
fn gemini_parts_of(cand: &Value, thoughts: bool) -> impl Iterator<Item = &Value> {
    cand.pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(move |p| (p.get("thought").and_then(Value::as_bool) == Some(true)) == thoughts)
}

/// A Gemini candidate's answer parts, without the model's thoughts.
fn gemini_parts(cand: &Value) -> impl Iterator<Item = &Value> {
    gemini_parts_of(cand, false)
}

/// The text of a Gemini candidate's thoughts.
fn gemini_thoughts(cand: &Value) -> impl Iterator<Item = &str> {
    gemini_parts_of(cand, true).filter_map(|p| p.get("text").and_then(Value::as_str))
}

/// A Gemini `GenerateContentResponse` as a `chat.completion`.
fn response_from_gemini(body: &[u8], chat: &Chat, created: i64) -> Option<Vec<u8>> {
    let r: Value = serde_json::from_slice(body).ok()?;
    let cand = r.pointer("/candidates/0")?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for part in gemini_parts(cand) {
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(call) = part.get("functionCall") {
            calls.push(
                json!({"id": format!("call_{}", calls.len()), "type": "function",
                "function": {"name": call.get("name").cloned().unwrap_or(json!("")),
                    "arguments": call.get("args").unwrap_or(&json!({})).to_string()}}),
            );
        }
    }
    let reason = cand
        .get("finishReason")
        .and_then(Value::as_str)
        .unwrap_or("STOP");
    let finish = gemini_finish(reason, !calls.is_empty());
    let (usage, _) = crate::providers::gemini::usage_from_body(body).unwrap_or_default();
    let id = r
        .get("responseId")
        .and_then(Value::as_str)
        .unwrap_or("gemini");
    let reasoning = gemini_thoughts(cand).collect();
    completion(
        chat,
        id,
        created,
        Said { text, reasoning },
        calls,
        finish,
        &usage,
    )
}

/// OpenAI's legacy Completions default when `max_tokens` is absent.
pub const LEGACY_DEFAULT_MAX_TOKENS: u64 = 16;

/// A legacy Completions request (`prompt`, a string or an array of strings) as an Anthropic
/// Messages body: the prompt is one user turn.
pub fn completions_request(body: &[u8]) -> Result<(Vec<u8>, Chat), Invalid> {
    let mut req: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| Invalid(format!("the body is not a JSON object: {e}")))?;
    let prompt = match req.remove("prompt") {
        Some(Value::String(s)) => s,
        Some(Value::Array(a)) => a
            .iter()
            .map(|p| {
                p.as_str()
                    .ok_or_else(|| Invalid("prompt must be text".into()))
            })
            .collect::<Result<Vec<_>, _>>()?
            .join("\n"),
        _ => return Err(Invalid("prompt is required".into())),
    };
    if prompt.is_empty() {
        return Err(Invalid("prompt must not be empty".into()));
    }
    req.insert(
        "messages".into(),
        json!([{"role": "user", "content": prompt}]),
    );
    req.entry("max_tokens")
        .or_insert(json!(LEGACY_DEFAULT_MAX_TOKENS));
    let (out, mut chat) = request(&serde_json::to_vec(&req).expect("a JSON value serialises"))?;
    chat.legacy = true;
    Ok((out, chat))
}

/// Gemini's `finishReason` as a Chat `finish_reason` (by way of Anthropic's stop reason).
fn gemini_finish(reason: &str, tool_calls: bool) -> &'static str {
    finish_reason(gemini_stop(reason, tool_calls))
}

/// A finished Responses object's Chat `finish_reason` (by way of Anthropic's stop reason).
fn responses_finish(r: &Value, tool_calls: bool) -> &'static str {
    finish_reason(responses_stop(r, tool_calls))
}

/// A finished Responses object's Anthropic `stop_reason`.
pub(super) fn responses_stop(r: &Value, tool_use: bool) -> &'static str {
    let truncated = r
        .pointer("/incomplete_details/reason")
        .and_then(Value::as_str)
        .is_some_and(|w| w == "max_output_tokens");
    if truncated {
        "max_tokens"
    } else if tool_use {
        "tool_use"
    } else {
        "end_turn"
    }
}

/// Gemini's `finishReason` as an Anthropic `stop_reason`.
pub(super) fn gemini_stop(reason: &str, tool_use: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "max_tokens",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" => "refusal",
        _ if tool_use => "tool_use",
        _ => "end_turn",
    }
}

/// Anthropic's `stop_reason` as a Chat `finish_reason`.
pub fn finish_reason(stop: &str) -> &'static str {
    match stop {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

/// Chat usage from Anthropic usage: prompt tokens include cache reads and writes.
fn usage_json(u: &TokenUsage) -> Value {
    let prompt = u.input_tokens + u.cache_read_tokens + u.cache_create_tokens;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": u.output_tokens,
        "total_tokens": prompt + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens},
    })
}

fn chat_id(msg_id: &str) -> String {
    format!("chatcmpl-{}", msg_id.strip_prefix("msg_").unwrap_or(msg_id))
}

/// The text of an answer, and the model's reasoning when the upstream shows it (Anthropic
/// thinking blocks, Responses reasoning summaries, Gemini thought parts), which Chat clients
/// read as `reasoning_content` (the field DeepSeek's and OpenRouter's Chat APIs use, and
/// Cherry Studio, LobeChat and Open WebUI show).
#[derive(Debug, Default)]
struct Said {
    text: String,
    reasoning: String,
}

/// The answer a client gets from what the upstream answered (its text, its tool calls in Chat
/// shape, the finish reason, the usage): a `chat.completion`, or for a legacy Completions
/// request a `text_completion`. `id` is the upstream's id without its own prefix.
fn completion(
    chat: &Chat,
    id: &str,
    created: i64,
    said: Said,
    calls: Vec<Value>,
    finish: &str,
    usage: &TokenUsage,
) -> Option<Vec<u8>> {
    let Said { text, reasoning } = said;
    let out = if chat.legacy {
        json!({
            "id": format!("cmpl-{id}"),
            "object": "text_completion",
            "created": created,
            "model": chat.model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}],
            "usage": usage_json(usage),
        })
    } else {
        let content = if text.is_empty() && !calls.is_empty() {
            Value::Null
        } else {
            json!(text)
        };
        let mut message = json!({"role": "assistant", "content": content});
        if !reasoning.is_empty() {
            message["reasoning_content"] = json!(reasoning);
        }
        if !calls.is_empty() {
            message["tool_calls"] = Value::Array(calls);
        }
        json!({
            "id": format!("chatcmpl-{id}"),
            "object": "chat.completion",
            "created": created,
            "model": chat.model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
            "usage": usage_json(usage),
        })
    };
    serde_json::to_vec(&out).ok()
}

/// The upstream's answer as a `chat.completion` (or `text_completion`). None when the body is
/// not an answer in the upstream's format.
pub fn response(body: &[u8], chat: &Chat, created: i64) -> Option<Vec<u8>> {
    match chat.upstream {
        Upstream::Messages => response_from_messages(body, chat, created),
        Upstream::Responses => response_from_responses(body, chat, created),
        Upstream::Gemini => response_from_gemini(body, chat, created),
    }
}

fn response_from_messages(body: &[u8], chat: &Chat, created: i64) -> Option<Vec<u8>> {
    let m: Value = serde_json::from_slice(body).ok()?;
    let content = m.get("content")?.as_array()?;
    let (mut text, mut reasoning) = (String::new(), String::new());
    let mut calls = Vec::new();
    for b in content {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("thinking") => {
                reasoning.push_str(b.get("thinking").and_then(Value::as_str).unwrap_or(""))
            }
            Some("tool_use") => calls.push(json!({
                "id": b.get("id").cloned().unwrap_or(json!("")),
                "type": "function",
                "function": {
                    "name": b.get("name").cloned().unwrap_or(json!("")),
                    "arguments": b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                },
            })),
            _ => {}
        }
    }
    let (usage, _) = crate::providers::anthropic::usage_from_body(body).unwrap_or_default();
    let stop = m
        .get("stop_reason")
        .and_then(Value::as_str)
        .unwrap_or("end_turn");
    let id = m.get("id").and_then(Value::as_str).unwrap_or("");
    let id = id.strip_prefix("msg_").unwrap_or(id);
    let said = Said { text, reasoning };
    completion(chat, id, created, said, calls, finish_reason(stop), &usage)
}

/// The upstream stream a `ChatTap` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// Anthropic Messages SSE.
    Messages,
    /// OpenAI Responses SSE.
    Responses,
    /// Gemini `streamGenerateContent?alt=sse` chunks.
    Gemini,
}

/// Converts an upstream stream (Anthropic Messages, OpenAI Responses or Gemini) into Chat
/// Completions chunks while the upstream format's own tap underneath keeps the usage.
pub type ChatTap = ConvertingTap<ChatEvents>;

/// The Chat Completions side of a `ChatTap`.
pub struct ChatEvents {
    upstream: Upstream,
    chat: Chat,
    /// The usage the upstream reported so far.
    usage: TokenUsage,
    created: i64,
    id: String,
    /// Anthropic content block index -> tool call index, for tool-use blocks.
    tools: Vec<(u64, usize)>,
    finish: Option<&'static str>,
    /// The role chunk went out (Gemini streams have no start event).
    started_out: bool,
    done: bool,
}

impl ChatTap {
    pub fn new(chat: Chat, created: i64) -> Self {
        let upstream = chat.upstream;
        let inner: Box<dyn StreamTap> = match upstream {
            Upstream::Messages => Box::new(SseTap::new()),
            Upstream::Responses => Box::new(crate::providers::openai::ResponsesTap::new()),
            Upstream::Gemini => Box::new(crate::providers::gemini::GeminiTap::new()),
        };
        ConvertingTap::with(
            inner,
            ChatEvents {
                upstream,
                chat,
                usage: TokenUsage::default(),
                created,
                id: String::from("chatcmpl-"),
                tools: Vec::new(),
                finish: None,
                started_out: false,
                done: false,
            },
        )
    }
}

impl ChatEvents {
    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        if self.chat.legacy {
            // Text only: no role chunk, no tool calls.
            let text = delta.get("content").and_then(Value::as_str);
            if text.is_none_or(str::is_empty) && finish.is_none() {
                return;
            }
            let c = json!({
                "id": self.id.replacen("chatcmpl-", "cmpl-", 1),
                "object": "text_completion",
                "created": self.created,
                "model": self.chat.model,
                "choices": [{"index": 0, "text": text.unwrap_or(""), "finish_reason": finish, "logprobs": null}],
            });
            sse(out, &c);
            return;
        }
        let c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.chat.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        });
        sse(out, &c);
    }

    fn line(&mut self, data: &[u8], out: &mut Vec<u8>) {
        let Ok(ev) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        match self.upstream {
            Upstream::Responses => return self.responses_event(&ev, out),
            Upstream::Gemini => return self.gemini_chunk(&ev, out),
            Upstream::Messages => {}
        }
        match ev.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                if let Some(id) = ev.pointer("/message/id").and_then(Value::as_str) {
                    self.id = chat_id(id);
                }
                self.chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            "content_block_start" => {
                let block = ev.get("content_block").unwrap_or(&Value::Null);
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
                    self.tool_start(out, index, block.get("id"), block.get("name"));
                }
            }
            "content_block_delta" => {
                let d = ev.get("delta").unwrap_or(&Value::Null);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = d.get("text").and_then(Value::as_str).unwrap_or("");
                        self.chunk(out, json!({"content": t}), None);
                    }
                    Some("input_json_delta") => {
                        let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
                        self.tool_args(out, index, d.get("partial_json"));
                    }
                    Some("thinking_delta") => {
                        let t = d.get("thinking").and_then(Value::as_str).unwrap_or("");
                        self.chunk(out, json!({"reasoning_content": t}), None);
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(s) = ev.pointer("/delta/stop_reason").and_then(Value::as_str) {
                    self.finish = Some(finish_reason(s));
                }
            }
            "message_stop" => self.end(out),
            _ => {}
        }
    }

    /// One OpenAI Responses stream event (`response.created`, `response.output_text.delta`,
    /// `response.output_item.added` for a `function_call`,
    /// `response.function_call_arguments.delta`, `response.completed` / `incomplete`).
    fn responses_event(&mut self, ev: &Value, out: &mut Vec<u8>) {
        match ev.get("type").and_then(Value::as_str).unwrap_or("") {
            "response.created" => {
                if let Some(id) = ev.pointer("/response/id").and_then(Value::as_str) {
                    self.id = format!("chatcmpl-{}", id.strip_prefix("resp_").unwrap_or(id));
                }
                self.chunk(out, json!({"role": "assistant", "content": ""}), None);
            }
            "response.output_text.delta" => {
                let t = ev.get("delta").and_then(Value::as_str).unwrap_or("");
                self.chunk(out, json!({"content": t}), None);
            }
            "response.reasoning_summary_text.delta" => {
                let t = ev.get("delta").and_then(Value::as_str).unwrap_or("");
                self.chunk(out, json!({"reasoning_content": t}), None);
            }
            "response.output_item.added" => {
                let item = ev.get("item").unwrap_or(&Value::Null);
                if item.get("type").and_then(Value::as_str) == Some("function_call") {
                    let index = ev.get("output_index").and_then(Value::as_u64).unwrap_or(0);
                    self.tool_start(out, index, item.get("call_id"), item.get("name"));
                }
            }
            "response.function_call_arguments.delta" => {
                let index = ev.get("output_index").and_then(Value::as_u64).unwrap_or(0);
                self.tool_args(out, index, ev.get("delta"));
            }
            "response.completed" | "response.incomplete" => {
                let r = ev.get("response").unwrap_or(&Value::Null);
                self.finish = Some(responses_finish(r, !self.tools.is_empty()));
                self.end(out);
            }
            _ => {}
        }
    }

    /// One Gemini stream chunk (a whole `GenerateContentResponse`): text parts become content,
    /// each `functionCall` part a whole tool call; a `finishReason` ends the stream (the usage
    /// rides on that last chunk).
    fn gemini_chunk(&mut self, ev: &Value, out: &mut Vec<u8>) {
        if !self.started_out {
            self.started_out = true;
            if let Some(id) = ev.get("responseId").and_then(Value::as_str) {
                self.id = format!("chatcmpl-{id}");
            }
            self.chunk(out, json!({"role": "assistant", "content": ""}), None);
        }
        let cand = ev.pointer("/candidates/0").unwrap_or(&Value::Null);
        for thought in gemini_thoughts(cand) {
            self.chunk(out, json!({"reasoning_content": thought}), None);
        }
        for part in gemini_parts(cand) {
            if let Some(t) = part.get("text").and_then(Value::as_str) {
                self.chunk(out, json!({"content": t}), None);
            } else if let Some(call) = part.get("functionCall") {
                let index = self.tools.len() as u64;
                let id = json!(format!("call_{index}"));
                self.tool_start(out, index, Some(&id), call.get("name"));
                let args = json!(call.get("args").unwrap_or(&json!({})).to_string());
                self.tool_args(out, index, Some(&args));
            }
        }
        if let Some(reason) = cand.get("finishReason").and_then(Value::as_str) {
            self.finish = Some(gemini_finish(reason, !self.tools.is_empty()));
            self.end(out);
        }
    }

    /// A tool call begins (upstream block or item `index`): its id and name, no arguments yet.
    fn tool_start(
        &mut self,
        out: &mut Vec<u8>,
        index: u64,
        id: Option<&Value>,
        name: Option<&Value>,
    ) {
        let n = self.tools.len();
        self.tools.push((index, n));
        let call = json!({"index": n, "id": id.cloned().unwrap_or(json!("")), "type": "function",
            "function": {"name": name.cloned().unwrap_or(json!("")), "arguments": ""}});
        self.chunk(out, json!({"tool_calls": [call]}), None);
    }

    /// More of a tool call's arguments (a piece of JSON text).
    fn tool_args(&mut self, out: &mut Vec<u8>, index: u64, part: Option<&Value>) {
        if let Some((_, n)) = self.tools.iter().find(|(i, _)| *i == index) {
            let n = *n;
            let part = part.and_then(Value::as_str).unwrap_or("");
            self.chunk(
                out,
                json!({"tool_calls": [{"index": n, "function": {"arguments": part}}]}),
                None,
            );
        }
    }

    /// The finish chunk, the usage chunk if asked for, and `[DONE]`.
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.done = true;
        self.chunk(out, json!({}), Some(self.finish.unwrap_or("stop")));
        if self.chat.include_usage {
            let (id, object) = if self.chat.legacy {
                (self.id.replacen("chatcmpl-", "cmpl-", 1), "text_completion")
            } else {
                (self.id.clone(), "chat.completion.chunk")
            };
            let c = json!({
                "id": id,
                "object": object,
                "created": self.created,
                "model": self.chat.model,
                "choices": [],
                "usage": usage_json(&self.usage),
            });
            sse(out, &c);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }
}

/// One `data:` line of an SSE stream, serialised straight into `out`.
pub(super) fn sse(out: &mut Vec<u8>, v: &Value) {
    out.extend_from_slice(b"data: ");
    serde_json::to_writer(&mut *out, v).expect("a JSON value serialises into a Vec");
    out.extend_from_slice(b"\n\n");
}

impl Converter for ChatEvents {
    fn event(&mut self, data: &[u8], usage: &TokenUsage, out: &mut Vec<u8>) {
        self.usage = *usage;
        self.line(data, out);
    }
    fn error_event(&self, message: &str) -> Bytes {
        let mut out = Vec::new();
        sse(
            &mut out,
            &json!({"error": {"message": message, "type": "server_error", "code": null}}),
        );
        out.extend_from_slice(b"data: [DONE]\n\n");
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(v: Value) -> Value {
        serde_json::from_slice(&request(v.to_string().as_bytes()).unwrap().0).unwrap()
    }

    #[test]
    fn reasoning_effort_becomes_thinking_and_thinking_comes_back_as_reasoning() {
        let req = json!({"model": "claude-sonnet-4-5", "max_tokens": 1000, "temperature": 0.2,
            "reasoning_effort": "high", "messages": [{"role": "user", "content": "hi"}]});
        let got = conv(req.clone());
        assert_eq!(
            got["thinking"],
            json!({"type": "enabled", "budget_tokens": 24576})
        );
        assert_eq!(got["max_tokens"], 25576);
        assert!(got.get("temperature").is_none());
        let g: Value =
            serde_json::from_slice(&gemini_request(req.to_string().as_bytes()).unwrap().0).unwrap();
        assert_eq!(
            g["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": 24576, "includeThoughts": true})
        );
        let mut none = req.clone();
        none["reasoning_effort"] = json!("minimal");
        assert!(conv(none).get("thinking").is_none());

        let chat = request(req.to_string().as_bytes()).unwrap().1;
        let answer = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [{"type": "thinking", "thinking": "Let me see.", "signature": "s"},
                        {"type": "text", "text": "Hi."}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 3, "output_tokens": 4}});
        let c: Value =
            serde_json::from_slice(&response(answer.to_string().as_bytes(), &chat, 1).unwrap())
                .unwrap();
        assert_eq!(
            c["choices"][0]["message"]["reasoning_content"],
            "Let me see."
        );
        assert_eq!(c["choices"][0]["message"]["content"], "Hi.");

        let mut tap = ChatTap::new(
            Chat {
                stream: true,
                ..chat
            },
            1,
        );
        let up = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"usage\":{\"input_tokens\":1,\"output_tokens\":0}}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Hmm\"}}\n\n";
        let out = String::from_utf8(tap.feed(&Bytes::from(up)).unwrap().to_vec()).unwrap();
        assert!(out.contains("\"reasoning_content\":\"Hmm\""), "{out}");
    }

    #[test]
    fn system_parts_images_and_alternation() {
        let got = conv(json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use English."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
                ]},
                {"role": "user", "content": "Quickly."},
                {"role": "assistant", "content": "A logo."},
                {"role": "user", "content": "Thanks"}
            ],
            "max_completion_tokens": 100, "temperature": 0.2, "stop": "END",
            "stream": true, "stream_options": {"include_usage": true}
        }));
        assert_eq!(
            got["system"],
            json!([{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use English."}])
        );
        assert_eq!(got["messages"].as_array().unwrap().len(), 3, "{got}");
        assert_eq!(
            got["messages"][0]["content"][1],
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
        );
        assert_eq!(got["messages"][0]["content"][2]["text"], "Quickly.");
        assert_eq!(got["max_tokens"], 100);
        assert_eq!(got["temperature"], 0.2);
        assert_eq!(got["stop_sequences"], json!(["END"]));
        assert_eq!(got["stream"], true);
    }

    #[test]
    fn tools_calls_and_results() {
        let got = conv(json!({
            "model": "claude-sonnet-4-5",
            "messages": [
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather now",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required"
        }));
        assert_eq!(got["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(
            got["messages"][1]["content"][0],
            json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}})
        );
        assert_eq!(
            got["messages"][2],
            json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "18C"}]})
        );
        assert_eq!(
            got["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        assert_eq!(got["tool_choice"], json!({"type": "any"}));
    }

    #[test]
    fn bad_requests_are_named() {
        for (body, what) in [
            (
                json!({"messages": [{"role": "user", "content": "x"}]}),
                "model",
            ),
            (json!({"model": "m", "messages": []}), "messages"),
            (
                json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}),
                "user message",
            ),
            (
                json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}),
                "role",
            ),
            (
                json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": "{"}}]}]}),
                "arguments",
            ),
        ] {
            let e = request(body.to_string().as_bytes()).unwrap_err();
            assert!(e.0.contains(what), "{e}");
        }
        assert!(request(b"[1]").is_err());
    }

    #[test]
    fn a_message_becomes_a_chat_completion() {
        let body = json!({"id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 3, "cache_creation_input_tokens": 2}});
        let chat = Chat {
            model: "claude-sonnet-4-5".into(),
            stream: false,
            include_usage: false,
            legacy: false,
            upstream: Upstream::Messages,
        };
        let out: Value =
            serde_json::from_slice(&response(body.to_string().as_bytes(), &chat, 7).unwrap())
                .unwrap();
        assert_eq!(out["id"], "chatcmpl-01");
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(out["choices"][0]["message"]["content"], "Let me check.");
        assert_eq!(
            out["choices"][0]["message"]["tool_calls"][0]["function"],
            json!({"name": "weather", "arguments": "{\"city\":\"Paris\"}"})
        );
        assert_eq!(
            out["usage"],
            json!({"prompt_tokens": 15, "completion_tokens": 5, "total_tokens": 20, "prompt_tokens_details": {"cached_tokens": 3}})
        );
    }

    #[test]
    fn a_stream_becomes_chunks_whatever_the_cuts() {
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_9", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 11, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
        ];
        let wire: String = events
            .iter()
            .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
            .collect();
        for cut in [1, 7, 64, wire.len()] {
            let chat = Chat {
                model: "claude-sonnet-4-5".into(),
                stream: true,
                include_usage: true,
                legacy: false,
                upstream: Upstream::Messages,
            };
            let mut tap = ChatTap::new(chat, 7);
            let mut out = Vec::new();
            for piece in wire.as_bytes().chunks(cut) {
                out.extend_from_slice(&tap.feed(&Bytes::copy_from_slice(piece)).unwrap());
            }
            let text = String::from_utf8(out).unwrap();
            assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
            let chunks: Vec<Value> = text
                .split("\n\n")
                .filter_map(|l| l.strip_prefix("data: "))
                .filter(|l| *l != "[DONE]")
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
            assert_eq!(chunks[0]["id"], "chatcmpl-9");
            let content: String = chunks
                .iter()
                .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
                .collect();
            assert_eq!(content, "Hi");
            let args: String = chunks
                .iter()
                .filter_map(|c| {
                    c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
                })
                .collect();
            assert_eq!(args, "{\"city\":\"Paris\"}");
            let fin = &chunks[chunks.len() - 2];
            assert_eq!(fin["choices"][0]["finish_reason"], "tool_calls");
            let last = chunks.last().unwrap();
            assert_eq!(last["choices"], json!([]));
            assert_eq!(last["usage"]["completion_tokens"], 9);
            assert_eq!(last["usage"]["prompt_tokens"], 11);
            assert_eq!(tap.usage().output_tokens, 9);
            assert!(tap.finished());
        }
    }

    #[test]
    fn responses_answers_and_streams_become_chat() {
        let chat = Chat {
            model: "gpt-5".into(),
            stream: true,
            include_usage: true,
            legacy: false,
            upstream: Upstream::Responses,
        };
        let usage = json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 2}, "output_tokens": 7});
        let body = json!({"id": "resp_7", "object": "response", "status": "completed", "output": [
            {"type": "function_call", "call_id": "call_9", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"}],
            "usage": usage});
        let out: Value =
            serde_json::from_slice(&response(body.to_string().as_bytes(), &chat, 1).unwrap())
                .unwrap();
        assert_eq!(out["id"], "chatcmpl-7");
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(out["choices"][0]["message"]["content"], Value::Null);
        assert_eq!(
            out["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Oslo\"}"
        );
        assert_eq!(out["usage"]["prompt_tokens"], 12);
        assert_eq!(out["usage"]["prompt_tokens_details"]["cached_tokens"], 2);
        let events = [
            json!({"type": "response.created", "response": {"id": "resp_7", "status": "in_progress"}}),
            json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "function_call", "call_id": "call_9", "name": "weather"}}),
            json!({"type": "response.function_call_arguments.delta", "output_index": 0, "delta": "{\"city\":"}),
            json!({"type": "response.function_call_arguments.delta", "output_index": 0, "delta": "\"Oslo\"}"}),
            json!({"type": "response.completed", "response": {"id": "resp_7", "status": "completed", "usage": usage, "output": []}}),
        ];
        let wire: String = events
            .iter()
            .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()))
            .collect();
        let mut tap = ChatTap::new(chat, 1);
        let text = String::from_utf8(tap.feed(&Bytes::from(wire)).unwrap().to_vec()).unwrap();
        let chunks: Vec<Value> = text
            .split("\n\n")
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|l| *l != "[DONE]")
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            chunks[1]["choices"][0]["delta"]["tool_calls"][0]["id"],
            "call_9"
        );
        let args: String = chunks
            .iter()
            .filter_map(|c| {
                c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str()
            })
            .collect();
        assert_eq!(args, "{\"city\":\"Oslo\"}");
        assert_eq!(
            chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
            "tool_calls"
        );
        assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 7);
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert_eq!(tap.usage().output_tokens, 7);
    }

    #[test]
    fn chat_requests_become_responses_requests() {
        let body = json!({"model": "gpt-5", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
            {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "done"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}}, "max_tokens": 50});
        let (out, chat) = responses_request(body.to_string().as_bytes()).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(chat.upstream, Upstream::Responses);
        assert_eq!(out["instructions"], "Be brief.");
        assert_eq!(
            out["input"][0]["content"][1],
            json!({"type": "input_image", "image_url": "data:image/png;base64,AAAA"})
        );
        assert_eq!(
            out["input"][1],
            json!({"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"})
        );
        assert_eq!(
            out["input"][2],
            json!({"type": "function_call_output", "call_id": "call_1", "output": "done"})
        );
        assert_eq!(
            out["tools"][0],
            json!({"type": "function", "name": "f", "description": "", "parameters": {"type": "object"}})
        );
        assert_eq!(out["tool_choice"], json!({"type": "function", "name": "f"}));
        assert_eq!(out["max_output_tokens"], 50);
    }

    #[test]
    fn gemini_requests_answers_and_streams() {
        let body = json!({"model": "gemini-2.5-pro", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "tool_calls": [{"id": "call_0", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "call_0", "content": "22C"}],
            "tools": [{"type": "function", "function": {"name": "weather",
                "parameters": {"type": "object", "additionalProperties": false, "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required", "max_tokens": 30, "stop": ["END"]});
        let (out, chat) = gemini_request(body.to_string().as_bytes()).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            out["systemInstruction"],
            json!({"parts": [{"text": "Be brief."}]})
        );
        assert_eq!(
            out["contents"][1],
            json!({"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Rome"}}}]})
        );
        assert_eq!(
            out["contents"][2]["parts"][0]["functionResponse"],
            json!({"name": "weather", "response": {"content": "22C"}})
        );
        let decl = &out["tools"][0]["functionDeclarations"][0];
        assert_eq!(
            decl["parameters"],
            json!({"type": "object", "properties": {"city": {"type": "string"}}})
        );
        assert_eq!(
            out["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY"}})
        );
        assert_eq!(
            out["generationConfig"],
            json!({"maxOutputTokens": 30, "stopSequences": ["END"]})
        );
        let answer = json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "weather", "args": {"city": "Oslo"}}}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4}, "responseId": "r1"});
        let got: Value =
            serde_json::from_slice(&response(answer.to_string().as_bytes(), &chat, 1).unwrap())
                .unwrap();
        assert_eq!(got["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            got["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\":\"Oslo\"}"
        );
        assert_eq!(got["usage"]["total_tokens"], 13);
        let mut chat = chat;
        chat.include_usage = true;
        let mut tap = ChatTap::new(chat, 1);
        let wire = format!(
            "data: {}\r\n\r\n",
            json!({"candidates": [{"content": {"parts": [{"text": "Hi"}]}}]})
        ) + &format!("data: {answer}\r\n\r\n");
        let text = String::from_utf8(tap.feed(&Bytes::from(wire)).unwrap().to_vec()).unwrap();
        assert!(text.contains("\"content\":\"Hi\""), "{text}");
        assert!(text.contains("\"name\":\"weather\""), "{text}");
        assert!(text.contains("\"finish_reason\":\"tool_calls\""), "{text}");
        assert!(text.contains("\"completion_tokens\":4"), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
}

//! Anthropic Messages clients (Claude Code, the anthropic SDKs) on OpenAI Responses and Gemini
//! upstreams: the request converted to a Responses or `generateContent` body, the answer back
//! to a Messages `message`, and the upstream stream to Messages SSE (`message_start`,
//! `content_block_start` / `_delta` / `_stop`, `message_delta`, `message_stop`).
//!
//! Shapes follow the public API references: Anthropic's Messages (`system`, `user` /
//! `assistant` turns of `text`, `image`, `document`, `tool_use`, `tool_result` and `thinking`
//! blocks, `tools` with `input_schema`, `tool_choice`, `thinking.budget_tokens`, the streaming
//! events with `text_delta`, `thinking_delta` and `input_json_delta`), OpenAI's Responses
//! (`instructions`, `input` items `message` / `function_call` / `function_call_output`,
//! `reasoning.effort`, the stream events `response.created`, `response.output_item.added`,
//! `response.output_text.delta`, `response.reasoning_summary_text.delta`,
//! `response.function_call_arguments.delta`, `response.output_item.done`,
//! `response.completed` / `incomplete` / `failed`), and Gemini's `generateContent`
//! (`contents` of `user` / `model` parts, `functionCall`, `functionResponse`, `thought` parts,
//! `thinkingConfig`, `finishReason`, `usageMetadata`).

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::chat::{gemini_schema, gemini_stop, responses_stop, text_of};
use super::{Converter, ConvertingTap, Invalid};
use crate::providers::StreamTap;
use crate::usage::TokenUsage;

/// The upstream format a Messages request is converted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// OpenAI Responses (API-key Responses accounts, ChatGPT/Codex accounts).
    Responses,
    /// Gemini `generateContent` / `streamGenerateContent?alt=sse`.
    Gemini,
}

/// What the answer's conversion needs to know about the request.
#[derive(Debug, Clone)]
pub struct Msgs {
    /// The model the client asked for (echoed in every answer).
    pub model: String,
    pub stream: bool,
    pub target: Target,
}

fn parse(body: &[u8]) -> Result<(Map<String, Value>, String, bool), Invalid> {
    let req: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| Invalid(format!("the body is not a JSON object: {e}")))?;
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Invalid("model: Field required".into()))?
        .to_owned();
    match req.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => {}
        _ => return Err(Invalid("messages: a non-empty array is required".into())),
    }
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    Ok((req, model, stream))
}

/// `system` (a string or text blocks) as one text.
fn system_text(req: &Map<String, Value>) -> String {
    match req.get("system") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n\n"),
        _ => String::new(),
    }
}

fn bad_role(i: usize, role: Option<&str>) -> Invalid {
    Invalid(format!(
        "messages.{i}.role: {:?} is not \"user\", \"assistant\" or \"system\"",
        role.unwrap_or("")
    ))
}

/// A message's content as blocks (a string is one text block), borrowed where it can be.
fn content_blocks(m: &Value) -> Result<std::borrow::Cow<'_, [Value]>, Invalid> {
    match m.get("content") {
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})].into()),
        Some(Value::Array(b)) => Ok(b.as_slice().into()),
        _ => Err(Invalid(
            "messages[].content must be a string or an array of blocks".into(),
        )),
    }
}

/// A `tool_result`'s content as text (images in tool results have no place upstream and are
/// named instead).
fn tool_result_text(b: &Value) -> String {
    match b.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => p
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                Some(other) => format!("[{other}]"),
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// Where an `image` or `document` block's bytes are.
enum Source<'a> {
    Base64 { media: &'a str, data: &'a str },
    Url { media: &'a str, url: &'a str },
}

impl Source<'_> {
    /// The source as one URL (base64 data as a `data:` URL).
    fn url(&self) -> String {
        match self {
            Source::Base64 { media, data } => format!("data:{media};base64,{data}"),
            Source::Url { url, .. } => (*url).to_owned(),
        }
    }
}

/// An `image` or `document` block's source, borrowed from the block.
fn source_of(b: &Value) -> Result<Source<'_>, Invalid> {
    let s = b
        .get("source")
        .ok_or_else(|| Invalid("an image block needs a source".into()))?;
    let media = s
        .get("media_type")
        .and_then(Value::as_str)
        .unwrap_or("application/octet-stream");
    match s.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let data = s
                .get("data")
                .and_then(Value::as_str)
                .ok_or_else(|| Invalid("a base64 source needs data".into()))?;
            Ok(Source::Base64 { media, data })
        }
        Some("url") => {
            let url = s
                .get("url")
                .and_then(Value::as_str)
                .ok_or_else(|| Invalid("a url source needs a url".into()))?;
            Ok(Source::Url { media, url })
        }
        _ => Err(Invalid(
            "only base64 and url sources are supported on this account".into(),
        )),
    }
}

/// `thinking.budget_tokens` as a Responses reasoning effort (OpenAI's efforts are coarse; the
/// budgets are Anthropic's documented ranges: 1,024 minimum, tens of thousands for hard work).
fn effort(thinking: &Value) -> Option<&'static str> {
    match thinking.get("type").and_then(Value::as_str) {
        Some("enabled") => {
            let budget = thinking
                .get("budget_tokens")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            Some(match budget {
                0..4096 => "low",
                4096..16384 => "medium",
                _ => "high",
            })
        }
        Some("adaptive") => Some("medium"),
        _ => None,
    }
}

/// The custom tools of a Messages request: (name, description, input schema). Anthropic's
/// server tools (`web_search_*`, `bash_*`, ...) carry a `type` and no schema.
fn custom_tools(req: &Map<String, Value>) -> impl Iterator<Item = &Value> {
    req.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| {
            t.get("input_schema").is_some()
                && t.get("type")
                    .and_then(Value::as_str)
                    .is_none_or(|k| k == "custom")
        })
}

fn web_search_tool(req: &Map<String, Value>) -> bool {
    req.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("type").and_then(Value::as_str))
        .any(|k| k.starts_with("web_search"))
}

/// A Messages request as an OpenAI Responses body. Sampling parameters are left out: the
/// GPT-5 family and the ChatGPT Codex backend refuse `temperature` and `top_p` on reasoning
/// models (OpenAI's reasoning guide; CLIProxyAPI's codex translator drops them too), and
/// Responses has no stop sequences.
pub fn responses_request(body: &[u8]) -> Result<(Vec<u8>, Msgs), Invalid> {
    let (req, model, stream) = parse(body)?;
    let mut input: Vec<Value> = Vec::new();
    for (i, m) in req["messages"]
        .as_array()
        .expect("checked in parse")
        .iter()
        .enumerate()
    {
        let role = match m.get("role").and_then(Value::as_str) {
            Some(r @ ("user" | "assistant")) => r,
            // Claude Code 2.x puts system reminders between turns as `system` messages;
            // Responses takes them as developer messages in place.
            Some("system") => {
                let text = text_of(m.get("content").unwrap_or(&Value::Null));
                if !text.is_empty() {
                    input.push(json!({"type": "message", "role": "developer",
                        "content": [{"type": "input_text", "text": text}]}));
                }
                continue;
            }
            other => return Err(bad_role(i, other)),
        };
        let (text_kind, mut parts) = (
            if role == "user" {
                "input_text"
            } else {
                "output_text"
            },
            Vec::new(),
        );
        // Consecutive text and image blocks make one message item; tool calls and results
        // are items of their own, in order.
        let flush = |parts: &mut Vec<Value>, input: &mut Vec<Value>| {
            if !parts.is_empty() {
                input.push(
                    json!({"type": "message", "role": role, "content": std::mem::take(parts)}),
                );
            }
        };
        for b in content_blocks(m)?.iter() {
            match b.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let t = b.get("text").and_then(Value::as_str).unwrap_or("");
                    if !t.is_empty() {
                        parts.push(json!({"type": text_kind, "text": t}));
                    }
                }
                Some("image") if role == "user" => {
                    let url = source_of(b)?.url();
                    parts.push(json!({"type": "input_image", "image_url": url}));
                }
                Some("document") if role == "user" => {
                    let url = source_of(b)?.url();
                    let name = b.get("title").and_then(Value::as_str).unwrap_or("document");
                    parts.push(json!({"type": "input_file", "filename": name, "file_data": url}));
                }
                Some("tool_use") => {
                    flush(&mut parts, &mut input);
                    input.push(json!({
                        "type": "function_call",
                        "call_id": b.get("id").and_then(Value::as_str).unwrap_or(""),
                        "name": b.get("name").and_then(Value::as_str).unwrap_or(""),
                        "arguments": b.get("input").unwrap_or(&json!({})).to_string(),
                    }));
                }
                Some("tool_result") => {
                    flush(&mut parts, &mut input);
                    let mut out = tool_result_text(b);
                    if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                        out = format!("Error: {out}");
                    }
                    input.push(json!({
                        "type": "function_call_output",
                        "call_id": b.get("tool_use_id").and_then(Value::as_str).unwrap_or(""),
                        "output": out,
                    }));
                }
                // Earlier thinking has no Responses form without its encrypted content; the
                // upstream reasons afresh.
                Some("thinking" | "redacted_thinking") => {}
                Some(other) => {
                    return Err(Invalid(format!(
                        "content block type {other:?} is not supported on this account"
                    )));
                }
                None => return Err(Invalid("a content block needs a type".into())),
            }
        }
        flush(&mut parts, &mut input);
    }
    let mut out = Map::new();
    out.insert("model".into(), json!(model));
    let system = system_text(&req);
    if !system.is_empty() {
        out.insert("instructions".into(), json!(system));
    }
    out.insert("input".into(), Value::Array(input));
    let mut tools: Vec<Value> = custom_tools(&req)
        .map(|t| {
            json!({
                "type": "function",
                "name": t.get("name").cloned().unwrap_or(json!("")),
                "description": t.get("description").cloned().unwrap_or(json!("")),
                "parameters": t.get("input_schema").cloned().unwrap_or(json!({"type": "object", "properties": {}})),
                "strict": false,
            })
        })
        .collect();
    if web_search_tool(&req) {
        tools.push(json!({"type": "web_search"}));
    }
    if !tools.is_empty() {
        out.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = req.get("tool_choice") {
        let choice = match tc.get("type").and_then(Value::as_str) {
            Some("auto") => Some(json!("auto")),
            Some("any") => Some(json!("required")),
            Some("none") => Some(json!("none")),
            Some("tool") => tc
                .get("name")
                .map(|n| json!({"type": "function", "name": n})),
            _ => None,
        };
        if let Some(c) = choice {
            out.insert("tool_choice".into(), c);
        }
        if tc.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            out.insert("parallel_tool_calls".into(), json!(false));
        }
    }
    if let Some(n) = req.get("max_tokens").and_then(Value::as_u64) {
        out.insert("max_output_tokens".into(), json!(n));
    }
    if let Some(e) = req.get("thinking").and_then(effort) {
        out.insert("reasoning".into(), json!({"effort": e, "summary": "auto"}));
    }
    out.insert("stream".into(), json!(stream));
    out.insert("store".into(), json!(false));
    let body = serde_json::to_vec(&out).expect("a JSON value serialises");
    Ok((
        body,
        Msgs {
            model,
            stream,
            target: Target::Responses,
        },
    ))
}

/// A Messages request as a Gemini `generateContent` body: `system` becomes
/// `systemInstruction`, turns `contents` (`user` / `model`) of `text`, `inlineData` /
/// `fileData`, `functionCall` and `functionResponse` parts; tools `functionDeclarations`,
/// `tool_choice` a `functionCallingConfig`, limits and thinking `generationConfig`.
pub fn gemini_request(body: &[u8]) -> Result<(Vec<u8>, Msgs), Invalid> {
    let (req, model, stream) = parse(body)?;
    let mut contents: Vec<Value> = Vec::new();
    // tool_use id -> function name, for functionResponse parts.
    let mut names: Vec<(String, String)> = Vec::new();
    let mut late_system: Vec<String> = Vec::new();
    for (i, m) in req["messages"]
        .as_array()
        .expect("checked in parse")
        .iter()
        .enumerate()
    {
        let role = match m.get("role").and_then(Value::as_str) {
            Some("user") => "user",
            Some("assistant") => "model",
            // Gemini has one system instruction: system messages between turns join it.
            Some("system") => {
                let text = text_of(m.get("content").unwrap_or(&Value::Null));
                if !text.is_empty() {
                    late_system.push(text);
                }
                continue;
            }
            other => return Err(bad_role(i, other)),
        };
        let mut parts = Vec::new();
        for b in content_blocks(m)?.iter() {
            match b.get("type").and_then(Value::as_str) {
                Some("text") => {
                    let t = b.get("text").and_then(Value::as_str).unwrap_or("");
                    if !t.is_empty() {
                        parts.push(json!({"text": t}));
                    }
                }
                Some("image" | "document") => {
                    match source_of(b)? {
                        Source::Base64 { media, data } => {
                            parts.push(json!({"inlineData": {"mimeType": media, "data": data}}))
                        }
                        // A URL that is itself a data URL carries its bytes inline.
                        Source::Url { media, url } => {
                            match url.strip_prefix("data:").and_then(|r| r.split_once(',')) {
                                Some((_, data)) => parts
                                    .push(json!({"inlineData": {"mimeType": media, "data": data}})),
                                None => parts
                                    .push(json!({"fileData": {"mimeType": media, "fileUri": url}})),
                            }
                        }
                    }
                }
                Some("tool_use") => {
                    let id = b.get("id").and_then(Value::as_str).unwrap_or("");
                    let name = b.get("name").and_then(Value::as_str).unwrap_or("");
                    names.push((id.to_owned(), name.to_owned()));
                    parts.push(json!({"functionCall": {"name": name,
                        "args": b.get("input").cloned().unwrap_or(json!({}))}}));
                }
                Some("tool_result") => {
                    let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
                    let name = names
                        .iter()
                        .find(|(i, _)| i == id)
                        .map(|(_, n)| n.as_str())
                        .unwrap_or(id);
                    let key = if b.get("is_error").and_then(Value::as_bool) == Some(true) {
                        "error"
                    } else {
                        "content"
                    };
                    parts.push(json!({"functionResponse": {"name": name,
                        "response": {key: tool_result_text(b)}}}));
                }
                Some("thinking" | "redacted_thinking") => {}
                Some(other) => {
                    return Err(Invalid(format!(
                        "content block type {other:?} is not supported on this account"
                    )));
                }
                None => return Err(Invalid("a content block needs a type".into())),
            }
        }
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some(last) if last["role"] == role => last["parts"]
                .as_array_mut()
                .expect("built as an array")
                .append(&mut parts),
            _ => contents.push(json!({"role": role, "parts": parts})),
        }
    }
    let mut out = Map::new();
    out.insert("contents".into(), Value::Array(contents));
    let system: Vec<String> = std::iter::once(system_text(&req))
        .chain(late_system)
        .filter(|t| !t.is_empty())
        .collect();
    let system = system.join("\n\n");
    if !system.is_empty() {
        out.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system}]}),
        );
    }
    let decls: Vec<Value> = custom_tools(&req)
        .map(|t| {
            json!({
                "name": t.get("name").cloned().unwrap_or(json!("")),
                "description": t.get("description").cloned().unwrap_or(json!("")),
                "parameters": gemini_schema(t.get("input_schema").unwrap_or(&json!({"type": "object", "properties": {}}))),
            })
        })
        .collect();
    if !decls.is_empty() {
        out.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    if let Some(tc) = req.get("tool_choice") {
        let config = match tc.get("type").and_then(Value::as_str) {
            Some("auto") => Some(json!({"mode": "AUTO"})),
            Some("any") => Some(json!({"mode": "ANY"})),
            Some("none") => Some(json!({"mode": "NONE"})),
            Some("tool") => tc
                .get("name")
                .map(|n| json!({"mode": "ANY", "allowedFunctionNames": [n]})),
            _ => None,
        };
        if let Some(c) = config {
            out.insert("toolConfig".into(), json!({"functionCallingConfig": c}));
        }
    }
    let mut config = Map::new();
    if let Some(n) = req.get("max_tokens").and_then(Value::as_u64) {
        config.insert("maxOutputTokens".into(), json!(n));
    }
    for (from, to) in [
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("stop_sequences", "stopSequences"),
    ] {
        if let Some(v) = req.get(from).filter(|v| !v.is_null()) {
            config.insert(to.into(), v.clone());
        }
    }
    if let Some(t) = req.get("thinking")
        && t.get("type").and_then(Value::as_str) == Some("enabled")
    {
        let budget = t.get("budget_tokens").and_then(Value::as_u64).unwrap_or(0);
        config.insert(
            "thinkingConfig".into(),
            json!({"thinkingBudget": budget, "includeThoughts": true}),
        );
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    let body = serde_json::to_vec(&out).expect("a JSON value serialises");
    Ok((
        body,
        Msgs {
            model,
            stream,
            target: Target::Gemini,
        },
    ))
}

/// Anthropic usage (input without cache reads) from the upstream's usage in crs's units.
fn usage_json(u: &TokenUsage) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "cache_creation_input_tokens": u.cache_create_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "output_tokens": u.output_tokens,
    })
}

fn message(
    msgs: &Msgs,
    id: &str,
    content: Vec<Value>,
    stop: &str,
    usage: &TokenUsage,
) -> Option<Vec<u8>> {
    serde_json::to_vec(&json!({
        "id": format!("msg_{id}"),
        "type": "message",
        "role": "assistant",
        "model": msgs.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": null,
        "usage": usage_json(usage),
    }))
    .ok()
}

/// A `function_call`'s JSON-text arguments as a tool input (an object; text that is not JSON
/// is kept under `arguments` rather than lost).
fn tool_input(args: &str) -> Value {
    if args.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(args).unwrap_or_else(|_| json!({"arguments": args}))
}

fn strip<'a>(id: &'a str, prefix: &str) -> &'a str {
    id.strip_prefix(prefix).unwrap_or(id)
}

fn response_from_responses(body: &[u8], msgs: &Msgs) -> Option<Vec<u8>> {
    let r: Value = serde_json::from_slice(body).ok()?;
    let output = r.get("output")?.as_array()?;
    let mut content = Vec::new();
    let mut tool_use = false;
    for item in output {
        match item.get("type").and_then(Value::as_str) {
            Some("reasoning") => {
                let text: Vec<&str> = item
                    .get("summary")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.get("text").and_then(Value::as_str))
                    .collect();
                if !text.is_empty() {
                    content.push(
                        json!({"type": "thinking", "thinking": text.join("\n\n"), "signature": ""}),
                    );
                }
            }
            Some("message") => {
                for c in item
                    .get("content")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let t = c
                        .get("text")
                        .or_else(|| c.get("refusal"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if !t.is_empty() {
                        content.push(json!({"type": "text", "text": t}));
                    }
                }
            }
            Some("function_call") => {
                tool_use = true;
                let args = item.get("arguments").and_then(Value::as_str).unwrap_or("");
                content.push(json!({
                    "type": "tool_use",
                    "id": item.get("call_id").and_then(Value::as_str).unwrap_or(""),
                    "name": item.get("name").and_then(Value::as_str).unwrap_or(""),
                    "input": tool_input(args),
                }));
            }
            _ => {}
        }
    }
    let (usage, _) = crate::providers::openai::responses_usage_from_body(body).unwrap_or_default();
    let id = strip(r.get("id").and_then(Value::as_str).unwrap_or(""), "resp_");
    message(msgs, id, content, responses_stop(&r, tool_use), &usage)
}

fn response_from_gemini(body: &[u8], msgs: &Msgs) -> Option<Vec<u8>> {
    let r: Value = serde_json::from_slice(body).ok()?;
    let cand = r.pointer("/candidates/0")?;
    let mut content = Vec::new();
    let mut tool_use = false;
    for (i, part) in cand
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                content.push(json!({"type": "thinking", "thinking": t, "signature": ""}));
            } else if !t.is_empty() {
                content.push(json!({"type": "text", "text": t}));
            }
        } else if let Some(call) = part.get("functionCall") {
            tool_use = true;
            content.push(json!({
                "type": "tool_use",
                "id": format!("toolu_{i}"),
                "name": call.get("name").cloned().unwrap_or(json!("")),
                "input": call.get("args").cloned().unwrap_or(json!({})),
            }));
        }
    }
    let reason = cand
        .get("finishReason")
        .and_then(Value::as_str)
        .unwrap_or("STOP");
    let (usage, _) = crate::providers::gemini::usage_from_body(body).unwrap_or_default();
    let id = r
        .get("responseId")
        .and_then(Value::as_str)
        .unwrap_or("gemini");
    message(msgs, id, content, gemini_stop(reason, tool_use), &usage)
}

/// The upstream's answer as a Messages `message`; None when the body is not an answer in the
/// upstream's format.
pub fn response(body: &[u8], msgs: &Msgs) -> Option<Vec<u8>> {
    match msgs.target {
        Target::Responses => response_from_responses(body, msgs),
        Target::Gemini => response_from_gemini(body, msgs),
    }
}

/// The kind of the content block open in the converted stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    /// A tool call from upstream output item `n` (Responses), whose arguments have or have
    /// not been streamed yet.
    Tool {
        item: u64,
        args: bool,
    },
}

/// Converts an upstream stream (OpenAI Responses or Gemini) into Anthropic Messages SSE while
/// the upstream format's own tap underneath keeps the usage.
pub type MessagesTap = ConvertingTap<MessagesEvents>;

/// The Messages side of a `MessagesTap`.
pub struct MessagesEvents {
    msgs: Msgs,
    /// The usage the upstream reported so far.
    usage: TokenUsage,
    id: String,
    /// The next content block index, and the kind of the open block.
    next: u64,
    open: Option<Open>,
    tool_use: bool,
    started_out: bool,
    done: bool,
}

impl MessagesTap {
    pub fn new(msgs: Msgs) -> Self {
        let inner: Box<dyn StreamTap> = match msgs.target {
            Target::Responses => Box::new(crate::providers::openai::ResponsesTap::new()),
            Target::Gemini => Box::new(crate::providers::gemini::GeminiTap::new()),
        };
        ConvertingTap::with(
            inner,
            MessagesEvents {
                msgs,
                usage: TokenUsage::default(),
                id: String::from("msg_crs"),
                next: 0,
                open: None,
                tool_use: false,
                started_out: false,
                done: false,
            },
        )
    }
}

impl MessagesEvents {
    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started_out {
            return;
        }
        self.started_out = true;
        event(
            out,
            "message_start",
            &json!({"type": "message_start", "message": {
                "id": self.id, "type": "message", "role": "assistant", "model": self.msgs.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.open.take().is_some() {
            let index = self.next - 1;
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open(&mut self, out: &mut Vec<u8>, kind: Open, block: Value) {
        self.close(out);
        let index = self.next;
        self.next += 1;
        self.open = Some(kind);
        event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
    }

    fn delta(&self, out: &mut Vec<u8>, delta: Value) {
        event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.next - 1, "delta": delta}),
        );
    }

    /// Text or thinking, in a block of that kind (opened when another kind is open).
    fn text(&mut self, out: &mut Vec<u8>, kind: Open, t: &str) {
        if t.is_empty() {
            return;
        }
        if self.open != Some(kind) {
            let block = if kind == Open::Thinking {
                json!({"type": "thinking", "thinking": "", "signature": ""})
            } else {
                json!({"type": "text", "text": ""})
            };
            self.open(out, kind, block);
        }
        let d = if kind == Open::Thinking {
            json!({"type": "thinking_delta", "thinking": t})
        } else {
            json!({"type": "text_delta", "text": t})
        };
        self.delta(out, d);
    }

    fn tool(&mut self, out: &mut Vec<u8>, item: u64, id: &str, name: &Value) {
        self.tool_use = true;
        self.open(
            out,
            Open::Tool { item, args: false },
            json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
        );
    }

    fn args(&mut self, out: &mut Vec<u8>, part: &str) {
        if let Some(Open::Tool { args, .. }) = &mut self.open {
            *args = true;
            self.delta(
                out,
                json!({"type": "input_json_delta", "partial_json": part}),
            );
        }
    }

    /// The closing events: `message_delta` with the stop reason and the usage, `message_stop`.
    fn end(&mut self, out: &mut Vec<u8>, stop: &str) {
        if self.done {
            return;
        }
        self.start(out);
        self.close(out);
        self.done = true;
        event(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
                "usage": usage_json(&self.usage)}),
        );
        event(out, "message_stop", &json!({"type": "message_stop"}));
    }

    fn responses_event(&mut self, ev: &Value, out: &mut Vec<u8>) {
        let kind = ev.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "response.created" => {
                if let Some(id) = ev.pointer("/response/id").and_then(Value::as_str) {
                    self.id = format!("msg_{}", strip(id, "resp_"));
                }
                self.start(out);
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                self.start(out);
                let t = ev.get("delta").and_then(Value::as_str).unwrap_or("");
                self.text(out, Open::Text, t);
            }
            "response.reasoning_summary_text.delta" => {
                self.start(out);
                let t = ev.get("delta").and_then(Value::as_str).unwrap_or("");
                self.text(out, Open::Thinking, t);
            }
            "response.output_item.added" => {
                let item = ev.get("item").unwrap_or(&Value::Null);
                if item.get("type").and_then(Value::as_str) == Some("function_call") {
                    self.start(out);
                    let n = ev.get("output_index").and_then(Value::as_u64).unwrap_or(0);
                    let id = item.get("call_id").and_then(Value::as_str).unwrap_or("");
                    self.tool(out, n, id, item.get("name").unwrap_or(&json!("")));
                }
            }
            "response.function_call_arguments.delta" => {
                let n = ev.get("output_index").and_then(Value::as_u64);
                if matches!(self.open, Some(Open::Tool { item, .. }) if Some(item) == n) {
                    let part = ev.get("delta").and_then(Value::as_str).unwrap_or("");
                    self.args(out, part);
                }
            }
            "response.output_item.done" => {
                let item = ev.get("item").unwrap_or(&Value::Null);
                let n = ev.get("output_index").and_then(Value::as_u64);
                if let Some(Open::Tool { item: open, args }) = self.open
                    && Some(open) == n
                {
                    // An upstream that sends the arguments only whole, in the done item.
                    if !args {
                        let a = item.get("arguments").and_then(Value::as_str).unwrap_or("");
                        if !a.is_empty() {
                            self.args(out, a);
                        }
                    }
                    self.close(out);
                }
            }
            "response.completed" | "response.incomplete" => {
                let r = ev.get("response").unwrap_or(&Value::Null);
                let stop = responses_stop(r, self.tool_use);
                self.end(out, stop);
            }
            "response.failed" | "error" => {
                let message = ev
                    .pointer("/response/error/message")
                    .or_else(|| ev.pointer("/error/message"))
                    .or_else(|| ev.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("The upstream failed to answer");
                self.done = true;
                out.extend_from_slice(&self.error_event(message));
            }
            _ => {}
        }
    }

    fn gemini_chunk(&mut self, ev: &Value, out: &mut Vec<u8>) {
        if !self.started_out
            && let Some(id) = ev.get("responseId").and_then(Value::as_str)
        {
            self.id = format!("msg_{id}");
        }
        self.start(out);
        let cand = ev.pointer("/candidates/0").unwrap_or(&Value::Null);
        for part in cand
            .pointer("/content/parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = part.get("text").and_then(Value::as_str) {
                let kind = if part.get("thought").and_then(Value::as_bool) == Some(true) {
                    Open::Thinking
                } else {
                    Open::Text
                };
                self.text(out, kind, t);
            } else if let Some(call) = part.get("functionCall") {
                // Gemini sends each call whole: one block with its arguments in one delta.
                let id = format!("toolu_{}", self.next);
                self.tool(out, self.next, &id, call.get("name").unwrap_or(&json!("")));
                let args = call.get("args").unwrap_or(&json!({})).to_string();
                self.args(out, &args);
                self.close(out);
            }
        }
        if let Some(reason) = cand.get("finishReason").and_then(Value::as_str) {
            let stop = gemini_stop(reason, self.tool_use);
            self.end(out, stop);
        }
    }

    fn line(&mut self, data: &[u8], out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        let Ok(ev) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        match self.msgs.target {
            Target::Responses => self.responses_event(&ev, out),
            Target::Gemini => self.gemini_chunk(&ev, out),
        }
    }
}

fn event(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    super::chat::sse(out, data);
}

impl Converter for MessagesEvents {
    fn event(&mut self, data: &[u8], usage: &TokenUsage, out: &mut Vec<u8>) {
        self.usage = *usage;
        self.line(data, out);
    }
    fn error_event(&self, message: &str) -> Bytes {
        crate::providers::anthropic::error_event(message)
    }
}

/// A rough input token count for `count_tokens` on accounts that cannot count Anthropic
/// requests: about four bytes of text a token (OpenAI's rule of thumb for English), over the
/// system prompt, the messages and the tool definitions. Clients use it to decide when to
/// compact, so erring high is the safe side; images count a flat 1,600 (Anthropic's figure
/// for a ~1.15 megapixel image).
pub fn estimate_tokens(body: &[u8]) -> Result<u64, Invalid> {
    let (req, _, _) = parse(body)?;
    let mut bytes = system_text(&req).len() as u64;
    let mut images = 0u64;
    for m in req["messages"].as_array().expect("checked in parse") {
        for b in content_blocks(m)?.iter() {
            match b.get("type").and_then(Value::as_str) {
                Some("image" | "document") => images += 1,
                Some("text") => {
                    bytes += b.get("text").and_then(Value::as_str).map_or(0, str::len) as u64
                }
                Some("tool_result") => bytes += tool_result_text(b).len() as u64,
                _ => bytes += b.to_string().len() as u64,
            }
        }
    }
    if let Some(t) = req.get("tools") {
        bytes += t.to_string().len() as u64;
    }
    Ok(bytes.div_ceil(4) + images * 1600)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Convert = fn(&[u8]) -> Result<(Vec<u8>, Msgs), Invalid>;

    fn conv(f: Convert, v: Value) -> Value {
        serde_json::from_slice(&f(v.to_string().as_bytes()).unwrap().0).unwrap()
    }

    /// A Claude Code-like turn: system blocks, a tool round trip, an image, thinking.
    fn claude_code_turn() -> Value {
        json!({
            "model": "claude-sonnet-4-5-20250929",
            "max_tokens": 32000,
            "stream": true,
            "system": [{"type": "text", "text": "You are Claude Code."},
                       {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "thinking": {"type": "enabled", "budget_tokens": 10000},
            "tools": [
                {"name": "Read", "description": "Read a file",
                 "input_schema": {"type": "object", "properties": {"path": {"type": "string"}},
                                  "required": ["path"], "additionalProperties": false,
                                  "$schema": "http://json-schema.org/draft-07/schema#"}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
            ],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": true},
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in a.txt?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "I should read it.", "signature": "sig"},
                    {"type": "text", "text": "Reading it."},
                    {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"path": "a.txt"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": [{"type": "text", "text": "hello"}]},
                    {"type": "text", "text": "Summarise."}
                ]}
            ]
        })
    }

    #[test]
    fn a_claude_code_turn_becomes_a_responses_request() {
        let got = conv(responses_request, claude_code_turn());
        assert_eq!(got["model"], "claude-sonnet-4-5-20250929");
        assert_eq!(got["instructions"], "You are Claude Code.\n\nBe brief.");
        assert_eq!(
            got["input"],
            json!([
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "What is in a.txt?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Reading it."}]},
                {"type": "function_call", "call_id": "toolu_01", "name": "Read", "arguments": "{\"path\":\"a.txt\"}"},
                {"type": "function_call_output", "call_id": "toolu_01", "output": "hello"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Summarise."}]}
            ])
        );
        assert_eq!(got["tools"][0]["type"], "function");
        assert_eq!(got["tools"][0]["name"], "Read");
        assert_eq!(got["tools"][0]["parameters"]["required"], json!(["path"]));
        assert_eq!(got["tools"][1], json!({"type": "web_search"}));
        assert_eq!(got["tool_choice"], "auto");
        assert_eq!(got["parallel_tool_calls"], false);
        assert_eq!(got["max_output_tokens"], 32000);
        assert_eq!(
            got["reasoning"],
            json!({"effort": "medium", "summary": "auto"})
        );
        assert_eq!(got["stream"], true);
        assert_eq!(got["store"], false);
        assert!(got.get("temperature").is_none());
    }

    #[test]
    fn a_claude_code_turn_becomes_a_gemini_request() {
        let got = conv(gemini_request, claude_code_turn());
        assert_eq!(
            got["systemInstruction"],
            json!({"parts": [{"text": "You are Claude Code.\n\nBe brief."}]})
        );
        assert_eq!(
            got["contents"],
            json!([
                {"role": "user", "parts": [{"text": "What is in a.txt?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]},
                {"role": "model", "parts": [{"text": "Reading it."},
                    {"functionCall": {"name": "Read", "args": {"path": "a.txt"}}}]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "Read", "response": {"content": "hello"}}},
                    {"text": "Summarise."}]}
            ])
        );
        let decl = &got["tools"][0]["functionDeclarations"][0];
        assert_eq!(decl["name"], "Read");
        assert!(decl["parameters"].get("additionalProperties").is_none());
        assert!(decl["parameters"].get("$schema").is_none());
        assert_eq!(got["toolConfig"]["functionCallingConfig"]["mode"], "AUTO");
        assert_eq!(got["generationConfig"]["maxOutputTokens"], 32000);
        assert_eq!(
            got["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": 10000, "includeThoughts": true})
        );
        assert!(got.get("model").is_none());
    }

    /// Claude Code 2.x sends system reminders as `system` messages between turns.
    #[test]
    fn system_messages_between_turns_stay_instructions() {
        let req = json!({"model": "claude-x", "system": "Top.", "messages": [
            {"role": "user", "content": "a"},
            {"role": "system", "content": [{"type": "text", "text": "Reminder."}]},
            {"role": "user", "content": "b"}]});
        let r = conv(responses_request, req.clone());
        assert_eq!(
            r["input"][1],
            json!({"type": "message", "role": "developer",
                "content": [{"type": "input_text", "text": "Reminder."}]})
        );
        assert_eq!(r["input"].as_array().unwrap().len(), 3);
        let g = conv(gemini_request, req);
        assert_eq!(
            g["systemInstruction"]["parts"][0]["text"],
            "Top.\n\nReminder."
        );
        assert_eq!(
            g["contents"],
            json!([{"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}])
        );
    }

    #[test]
    fn tool_choice_and_sampling_map_per_target() {
        let mut req = claude_code_turn();
        req["tool_choice"] = json!({"type": "tool", "name": "Read"});
        req["temperature"] = json!(0.3);
        req["stop_sequences"] = json!(["END"]);
        let r = conv(responses_request, req.clone());
        assert_eq!(
            r["tool_choice"],
            json!({"type": "function", "name": "Read"})
        );
        let g = conv(gemini_request, req.clone());
        assert_eq!(
            g["toolConfig"]["functionCallingConfig"],
            json!({"mode": "ANY", "allowedFunctionNames": ["Read"]})
        );
        assert_eq!(g["generationConfig"]["temperature"], 0.3);
        assert_eq!(g["generationConfig"]["stopSequences"], json!(["END"]));
        req["tool_choice"] = json!({"type": "any"});
        assert_eq!(
            conv(responses_request, req.clone())["tool_choice"],
            "required"
        );
    }

    #[test]
    fn bad_requests_are_refused_with_a_reason() {
        for (body, want) in [
            (
                json!({"messages": [{"role": "user", "content": "hi"}]}),
                "model",
            ),
            (json!({"model": "claude-x", "messages": []}), "messages"),
            (
                json!({"model": "claude-x", "messages": [{"role": "tool", "content": "hi"}]}),
                "role",
            ),
            (
                json!({"model": "claude-x", "messages": [{"role": "user", "content": 5}]}),
                "content",
            ),
            (
                json!({"model": "claude-x", "messages": [{"role": "user", "content": [{"type": "audio"}]}]}),
                "audio",
            ),
            (
                json!({"model": "claude-x", "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}),
                "source",
            ),
        ] {
            for f in [responses_request, gemini_request] {
                let e = f(body.to_string().as_bytes()).unwrap_err();
                assert!(e.0.contains(want), "{e} for {body}");
            }
        }
        assert!(responses_request(b"[1,2]").is_err());
        assert!(gemini_request(b"not json").is_err());
    }

    fn msgs(target: Target) -> Msgs {
        Msgs {
            model: "claude-sonnet-4-5".into(),
            stream: true,
            target,
        }
    }

    #[test]
    fn a_responses_answer_becomes_a_message() {
        let body = json!({
            "id": "resp_abc", "object": "response", "status": "completed", "model": "gpt-5",
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Plan."}]},
                {"type": "message", "id": "m1", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_9", "name": "Read", "arguments": "{\"path\":\"a.txt\"}"}
            ],
            "usage": {"input_tokens": 120, "input_tokens_details": {"cached_tokens": 100},
                      "output_tokens": 30, "total_tokens": 150}
        });
        let m: Value = serde_json::from_slice(
            &response(body.to_string().as_bytes(), &msgs(Target::Responses)).unwrap(),
        )
        .unwrap();
        assert_eq!(m["id"], "msg_abc");
        assert_eq!(m["model"], "claude-sonnet-4-5");
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(
            m["content"],
            json!([
                {"type": "thinking", "thinking": "Plan.", "signature": ""},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "call_9", "name": "Read", "input": {"path": "a.txt"}}
            ])
        );
        // Anthropic counts input without cache reads; OpenAI counts them inside the input.
        assert_eq!(m["usage"]["input_tokens"], 20);
        assert_eq!(m["usage"]["cache_read_input_tokens"], 100);
        assert_eq!(m["usage"]["output_tokens"], 30);

        let cut = json!({"id": "resp_x", "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"},
            "output": [], "usage": {"input_tokens": 1, "output_tokens": 2}});
        let m: Value = serde_json::from_slice(
            &response(cut.to_string().as_bytes(), &msgs(Target::Responses)).unwrap(),
        )
        .unwrap();
        assert_eq!(m["stop_reason"], "max_tokens");
        assert!(response(b"{\"error\":1}", &msgs(Target::Responses)).is_none());
    }

    #[test]
    fn a_gemini_answer_becomes_a_message() {
        let body = json!({
            "responseId": "g1",
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "Thinking...", "thought": true},
                {"text": "Here."},
                {"functionCall": {"name": "Read", "args": {"path": "b"}}}
            ]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 50, "candidatesTokenCount": 7, "totalTokenCount": 57},
            "modelVersion": "gemini-2.5-pro"
        });
        let m: Value = serde_json::from_slice(
            &response(body.to_string().as_bytes(), &msgs(Target::Gemini)).unwrap(),
        )
        .unwrap();
        assert_eq!(m["id"], "msg_g1");
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["content"][0]["type"], "thinking");
        assert_eq!(m["content"][1], json!({"type": "text", "text": "Here."}));
        assert_eq!(m["content"][2]["type"], "tool_use");
        assert_eq!(m["content"][2]["input"], json!({"path": "b"}));
        assert_eq!(m["usage"]["input_tokens"], 50);
        assert_eq!(m["usage"]["output_tokens"], 7);
    }

    /// The events of a converted stream: (event name, data).
    fn events(out: &[u8]) -> Vec<(String, Value)> {
        let text = String::from_utf8(out.to_vec()).unwrap();
        text.split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let mut lines = e.lines();
                let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
                let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
                assert_eq!(
                    serde_json::from_str::<Value>(data).unwrap()["type"],
                    name,
                    "{e}"
                );
                (name.to_owned(), serde_json::from_str(data).unwrap())
            })
            .collect()
    }

    fn feed_all(tap: &mut MessagesTap, upstream: &str, piece: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for c in upstream.as_bytes().chunks(piece) {
            if let Some(b) = tap.feed(&Bytes::copy_from_slice(c)) {
                out.extend_from_slice(&b);
            }
        }
        out
    }

    fn responses_stream() -> String {
        let ev = |v: Value| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap());
        [
            ev(
                json!({"type": "response.created", "response": {"id": "resp_s1", "status": "in_progress", "model": "gpt-5"}}),
            ),
            ev(
                json!({"type": "response.output_item.added", "output_index": 0, "item": {"type": "reasoning", "id": "rs"}}),
            ),
            ev(
                json!({"type": "response.reasoning_summary_text.delta", "output_index": 0, "delta": "Plan"}),
            ),
            ev(
                json!({"type": "response.output_item.added", "output_index": 1, "item": {"type": "message", "id": "m"}}),
            ),
            ev(
                json!({"type": "response.output_text.delta", "output_index": 1, "delta": "Hel"}),
            ),
            ev(json!({"type": "response.output_text.delta", "output_index": 1, "delta": "lo"})),
            ev(
                json!({"type": "response.output_item.added", "output_index": 2, "item": {"type": "function_call", "call_id": "call_1", "name": "Read", "arguments": ""}}),
            ),
            ev(
                json!({"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "{\"path\":"}),
            ),
            ev(
                json!({"type": "response.function_call_arguments.delta", "output_index": 2, "delta": "\"a\"}"}),
            ),
            ev(
                json!({"type": "response.output_item.done", "output_index": 2, "item": {"type": "function_call", "call_id": "call_1", "name": "Read", "arguments": "{\"path\":\"a\"}"}}),
            ),
            ev(
                json!({"type": "response.completed", "response": {"id": "resp_s1", "status": "completed", "model": "gpt-5",
                "usage": {"input_tokens": 40, "input_tokens_details": {"cached_tokens": 30}, "output_tokens": 9, "total_tokens": 49}}}),
            ),
        ]
        .concat()
    }

    #[test]
    fn a_responses_stream_becomes_the_messages_event_sequence() {
        // Byte-sized pieces as well as whole: lines split anywhere must convert the same.
        for piece in [1, 7, 100_000] {
            let mut tap = MessagesTap::new(msgs(Target::Responses));
            let out = feed_all(&mut tap, &responses_stream(), piece);
            let evs = events(&out);
            let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(
                names,
                [
                    "message_start",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_stop",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_delta",
                    "content_block_stop",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_delta",
                    "content_block_stop",
                    "message_delta",
                    "message_stop"
                ],
                "piece {piece}"
            );
            assert_eq!(evs[0].1["message"]["id"], "msg_s1");
            assert_eq!(evs[0].1["message"]["model"], "claude-sonnet-4-5");
            assert_eq!(evs[1].1["content_block"]["type"], "thinking");
            assert_eq!(evs[2].1["delta"]["thinking"], "Plan");
            assert_eq!(evs[4].1["index"], 1);
            assert_eq!(evs[5].1["delta"]["text"], "Hel");
            assert_eq!(
                evs[8].1["content_block"],
                json!({"type": "tool_use", "id": "call_1", "name": "Read", "input": {}})
            );
            let args: String = [&evs[9].1, &evs[10].1]
                .iter()
                .map(|e| e["delta"]["partial_json"].as_str().unwrap())
                .collect();
            assert_eq!(args, "{\"path\":\"a\"}");
            assert_eq!(evs[12].1["delta"]["stop_reason"], "tool_use");
            assert_eq!(evs[12].1["usage"]["input_tokens"], 10);
            assert_eq!(evs[12].1["usage"]["cache_read_input_tokens"], 30);
            assert_eq!(evs[12].1["usage"]["output_tokens"], 9);
            assert!(tap.finished());
            assert_eq!(tap.usage().output_tokens, 9);
        }
    }

    #[test]
    fn a_failed_responses_stream_ends_in_an_error_event() {
        let mut tap = MessagesTap::new(msgs(Target::Responses));
        let up = "event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_f\"}}\n\n\
            event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":{\"error\":{\"message\":\"overloaded\"}}}\n\n";
        let evs = events(&feed_all(&mut tap, up, 5));
        assert_eq!(evs.last().unwrap().0, "error");
        assert_eq!(evs.last().unwrap().1["error"]["message"], "overloaded");
    }

    #[test]
    fn a_gemini_stream_becomes_the_messages_event_sequence() {
        let up = [
            json!({"responseId": "gs", "candidates": [{"content": {"role": "model", "parts": [{"text": "Hm", "thought": true}]}}]}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi "}]}}]}),
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "there"},
                {"functionCall": {"name": "Read", "args": {"path": "c"}}}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 4, "totalTokenCount": 15}}),
        ]
        .iter()
        .map(|v| format!("data: {v}\r\n\r\n"))
        .collect::<String>();
        let mut tap = MessagesTap::new(msgs(Target::Gemini));
        let evs = events(&feed_all(&mut tap, &up, 3));
        let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(evs[0].1["message"]["id"], "msg_gs");
        assert_eq!(evs[1].1["content_block"]["type"], "thinking");
        assert_eq!(evs[8].1["content_block"]["name"], "Read");
        assert_eq!(evs[9].1["delta"]["partial_json"], "{\"path\":\"c\"}");
        assert_eq!(evs[11].1["delta"]["stop_reason"], "tool_use");
        assert_eq!(evs[11].1["usage"]["input_tokens"], 11);
        assert_eq!(evs[11].1["usage"]["output_tokens"], 4);
    }

    #[test]
    fn token_estimates_grow_with_the_request() {
        let small = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let big = claude_code_turn();
        let a = estimate_tokens(small.to_string().as_bytes()).unwrap();
        let b = estimate_tokens(big.to_string().as_bytes()).unwrap();
        assert!((1..10).contains(&a), "{a}");
        // The image alone counts 1,600.
        assert!(b > 1600, "{b}");
        assert!(estimate_tokens(b"{}").is_err());
    }

    proptest::proptest! {
        /// Whatever the upstream sends, the converted stream is well-formed SSE: every event
        /// has a name and JSON data of that type, and nothing panics.
        #[test]
        fn any_upstream_bytes_convert_to_well_formed_events(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..64), 0..16),
            gemini in proptest::bool::ANY,
        ) {
            let target = if gemini { Target::Gemini } else { Target::Responses };
            let mut tap = MessagesTap::new(msgs(target));
            let mut out = Vec::new();
            let mut all = responses_stream().into_bytes();
            for c in &chunks {
                all.extend_from_slice(c);
            }
            for c in all.chunks(13) {
                if let Some(b) = tap.feed(&Bytes::copy_from_slice(c)) {
                    out.extend_from_slice(&b);
                }
            }
            events(&out);
        }
    }
}

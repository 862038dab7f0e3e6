//! OpenAI Images API clients on ChatGPT (Codex) accounts, v1's images bridge (v1
//! src/routes/openaiRoutes.js `handleImages`): `POST /v1/images/generations` becomes a Codex
//! Responses request that calls the `image_generation` tool, and the streamed
//! `image_generation_call` results become the Images API answer
//! `{created, data: [{b64_json, revised_prompt}], size, quality, background, output_format}`.
//! Usage is the Responses answer's (`response.completed`), in the upstream's own units.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::Invalid;
use crate::providers::StreamTap;
use crate::providers::openai::ResponsesTap;
use crate::providers::sse::DataLines;
use crate::usage::TokenUsage;

/// The Responses model that runs the image tool (v1 `handleImages` sends `gpt-5.4-mini`).
pub const MAIN_MODEL: &str = "gpt-5.4-mini";
/// The image model when the client names none (v1's default).
pub const DEFAULT_IMAGE_MODEL: &str = "gpt-image-2";

/// What the answer conversion needs to know about the request.
#[derive(Debug, Clone, PartialEq)]
pub struct Images {
    pub image_model: String,
    pub n: u32,
}

/// An Images API generation request -> the Codex Responses request, as v1 builds it: one
/// `image_generation` tool (the client's `size`, `quality`, `background`, `output_format`,
/// `moderation`, `output_compression` and `n` on it), forced with `tool_choice`, streamed,
/// not stored.
pub fn request(body: &[u8]) -> Result<(Vec<u8>, Images), Invalid> {
    let v: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|_| Invalid("the request body must be a JSON object".into()))?;
    let prompt = v
        .get("prompt")
        .and_then(Value::as_str)
        .map(str::trim)
        .unwrap_or("");
    if prompt.is_empty() {
        return Err(Invalid("prompt is required".into()));
    }
    let image_model = match v.get("model") {
        None | Some(Value::Null) => DEFAULT_IMAGE_MODEL.to_owned(),
        Some(Value::String(m)) => m.trim().to_owned(),
        Some(_) => return Err(Invalid("model must be a string".into())),
    };
    if !image_model
        .get(..10)
        .is_some_and(|p| p.eq_ignore_ascii_case("gpt-image-"))
    {
        return Err(Invalid(format!(
            "images endpoint requires a gpt-image-* model, got \"{image_model}\""
        )));
    }
    let n = match v.get("n") {
        None | Some(Value::Null) => 1,
        Some(x) => x
            .as_u64()
            .filter(|n| (1..=10).contains(n))
            .ok_or_else(|| Invalid("n must be an integer between 1 and 10".into()))?
            as u32,
    };
    let mut tool = json!({"type": "image_generation", "action": "generate", "model": image_model});
    for k in [
        "size",
        "quality",
        "background",
        "output_format",
        "moderation",
    ] {
        match v.get(k) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => tool[k] = json!(s),
            Some(Value::Number(x)) => tool[k] = json!(x.to_string()),
            Some(_) => return Err(Invalid(format!("{k} must be a string"))),
        }
    }
    if let Some(c) = v.get("output_compression").and_then(Value::as_u64) {
        tool["output_compression"] = json!(c.min(100));
    }
    if n != 1 {
        tool["n"] = json!(n);
    }
    let payload = json!({
        "instructions": "",
        "stream": true,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "parallel_tool_calls": true,
        "include": ["reasoning.encrypted_content"],
        "model": MAIN_MODEL,
        "store": false,
        "tool_choice": {"type": "image_generation"},
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]}],
        "tools": [tool],
    });
    Ok((
        serde_json::to_vec(&payload).expect("JSON"),
        Images { image_model, n },
    ))
}

/// The Images API answer from the Codex stream (the whole SSE body): `None` when the
/// upstream produced no image. Also returns the usage and the model the upstream named.
pub fn answer(sse: &Bytes, created: i64) -> (Option<Vec<u8>>, TokenUsage, Option<String>) {
    let mut tap = ResponsesTap::new();
    tap.feed(sse);
    let mut images: Vec<(String, Value)> = Vec::new();
    let mut meta = Map::new();
    let take = |item: &Value, images: &mut Vec<(String, Value)>| {
        if item.get("type").and_then(Value::as_str) != Some("image_generation_call") {
            return;
        }
        let id = item
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let Some(b64) = item
            .get("result")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        else {
            return;
        };
        if images.iter().any(|(i, _)| !id.is_empty() && *i == id) {
            return;
        }
        let mut d = json!({"b64_json": b64});
        if let Some(p) = item.get("revised_prompt").filter(|p| p.is_string()) {
            d["revised_prompt"] = p.clone();
        }
        images.push((id, d));
    };
    let mut lines = DataLines::new();
    lines.feed(sse, |data| {
        let Ok(ev) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        match ev.get("type").and_then(Value::as_str) {
            Some("response.output_item.done") => {
                if let Some(item) = ev.get("item") {
                    take(item, &mut images);
                }
            }
            Some("response.completed") => {
                let r = &ev["response"];
                for item in r["output"].as_array().into_iter().flatten() {
                    take(item, &mut images);
                }
                if let Some(Value::Object(t)) = r["tools"].get(0) {
                    meta = t.clone();
                }
            }
            _ => {}
        }
    });
    let usage = tap.usage();
    let model = tap.model().map(str::to_owned);
    if images.is_empty() {
        return (None, usage, model);
    }
    let mut out = json!({
        "created": created,
        "data": images.into_iter().map(|(_, d)| d).collect::<Vec<_>>(),
    });
    for k in ["size", "quality", "background", "output_format"] {
        if let Some(v) = meta.get(k) {
            out[k] = v.clone();
        }
    }
    (Some(out.to_string().into_bytes()), usage, model)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_become_a_forced_image_tool_call() {
        let (body, im) = request(
            br#"{"prompt":" a red fox ","size":"1024x1024","quality":"high","n":2,"output_compression":80}"#,
        )
        .unwrap();
        assert_eq!(
            im,
            Images {
                image_model: DEFAULT_IMAGE_MODEL.into(),
                n: 2
            }
        );
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["model"], MAIN_MODEL);
        assert_eq!(v["stream"], true);
        assert_eq!(v["store"], false);
        assert_eq!(v["tool_choice"], json!({"type": "image_generation"}));
        assert_eq!(v["input"][0]["content"][0]["text"], "a red fox");
        assert_eq!(
            v["tools"][0],
            json!({"type": "image_generation", "action": "generate", "model": "gpt-image-2",
                   "size": "1024x1024", "quality": "high", "n": 2, "output_compression": 80})
        );
        for bad in [
            &br#"{"prompt":""}"#[..],
            br#"{"prompt":"x","model":"dall-e-3"}"#,
            br#"{"prompt":"x","n":0}"#,
            br#"{"prompt":"x","n":1.5}"#,
            br#"{"prompt":"x","size":{}}"#,
            br#"[1]"#,
            b"not json",
        ] {
            assert!(request(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn the_stream_becomes_an_images_answer_with_usage() {
        let item = json!({"type": "image_generation_call", "id": "ig_1", "status": "completed",
            "revised_prompt": "A red fox", "result": "iVBORw0KGgo="});
        let sse = format!(
            "event: response.output_item.done\ndata: {}\n\nevent: response.completed\ndata: {}\n\n",
            json!({"type": "response.output_item.done", "item": item}),
            json!({"type": "response.completed", "response": {"model": "gpt-5.4-mini", "output": [item],
                "tools": [{"type": "image_generation", "size": "1024x1024", "output_format": "png"}],
                "usage": {"input_tokens": 50, "input_tokens_details": {"cached_tokens": 10}, "output_tokens": 7}}}),
        );
        let (body, usage, model) = answer(&Bytes::from(sse), 1_800_000_000);
        let v: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        assert_eq!(
            v,
            json!({"created": 1_800_000_000, "data": [{"b64_json": "iVBORw0KGgo=", "revised_prompt": "A red fox"}],
                   "size": "1024x1024", "output_format": "png"})
        );
        assert_eq!(
            (
                usage.input_tokens,
                usage.cache_read_tokens,
                usage.output_tokens
            ),
            (40, 10, 7)
        );
        assert_eq!(model.as_deref(), Some("gpt-5.4-mini"));
        let (none, _, _) = answer(
            &Bytes::from_static(b"data: {\"type\":\"response.completed\",\"response\":{}}\n\n"),
            0,
        );
        assert!(none.is_none());
    }
}

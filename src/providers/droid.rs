//! Factory.ai Droid accounts: Factory's LLM gateway in front of Anthropic (`/a/v1/messages`)
//! and OpenAI (`/o/v1/responses`, `/o/v1/chat/completions`), chosen by the request's
//! operation (v1's endpoint types `anthropic`, `openai`, `comm`).
//!
//! An account authenticates either with a WorkOS access token (kept fresh by
//! `accounts::oauth`, Grant::WorkOs) or with a key from its API-key pool (picked per request by
//! `accounts::key_pool`); either way the caller hands the credential in as `Upstream::token`.
//! The request shape is v1's (src/services/droidRelayService.js `_buildHeaders`).

use anyhow::Result;
use bytes::Bytes;
use salvo::http::{HeaderValue, header};

use super::request::{
    ANTHROPIC_FORWARD, OPENAI_FORWARD, base_headers, bearer, body, forward, object_with_model,
};
use super::responses::responses_probe;
use super::{AccountType, ClientFormat, Credential, Op, Outgoing, Upstream, anthropic, decrypt};
use crate::crypto::Secrets;
use crate::model::Account;

pub struct Droid;

/// Factory's LLM gateway (v1 droidRelayService.js `factoryApiBaseUrl`).
pub const DEFAULT_BASE: &str = "https://api.factory.ai/api/llm";
/// The user agent v1 sends (droidRelayService.js `userAgent`).
pub const USER_AGENT: &str = "factory-cli/0.19.12";
/// WorkOS client id of Factory's CLI (v1 droidAccountService.js `workosClientId`).
pub const WORKOS_CLIENT_ID: &str = "client_01HNM792M5G5G1A2THWPXKFMXB";
/// WorkOS token endpoint under the WorkOS base URL (v1 droidAccountService.js `oauthTokenUrl`).
pub const WORKOS_TOKEN_PATH: &str = "/user_management/authenticate";

/// The system prompt v1 puts in front of every Droid request (droidRelayService.js
/// `SYSTEM_PROMPT`): Factory's gateway serves its own agent.
pub const SYSTEM_PROMPT: &str = "You are Droid, an AI software engineering agent built by Factory.";

/// The beta v1 adds to Anthropic requests that ask for extended thinking.
const THINKING_BETA: &str = "interleaved-thinking-2025-05-14";

/// v1's endpoint type of an operation, and its path under the base URL
/// (droidRelayService.js `endpoints`).
pub fn endpoint(op: Op) -> Option<(&'static str, &'static str)> {
    match op {
        Op::Messages => Some(("anthropic", "/a/v1/messages")),
        Op::CountTokens => Some(("anthropic", "/a/v1/messages/count_tokens")),
        Op::Responses { .. } => Some(("openai", "/o/v1/responses")),
        Op::ChatCompletions => Some(("comm", "/o/v1/chat/completions")),
        Op::Gemini { .. } | Op::CodeAssist { .. } | Op::Embeddings => None,
    }
}

/// The `x-api-provider` of a `comm` request, from the model's family
/// (droidRelayService.js `_inferProviderFromModel`).
pub fn provider_for_model(model: &str) -> &'static str {
    let m = model.to_ascii_lowercase();
    if m.contains("gemini") {
        "google"
    } else if m.contains("claude") {
        "anthropic"
    } else if m.contains("gpt") {
        "azure_openai"
    } else if m.contains("glm") {
        "fireworks"
    } else {
        "baseten"
    }
}

/// The body as v1 sends it to Factory (droidRelayService.js `_processRequestBody`): without
/// `metadata`, with the Droid system prompt first (Anthropic `system` blocks, Responses
/// `instructions`, Chat's system message), and `top_p` dropped when `temperature` is set. A
/// string `system` is kept as a block after the prompt (v1 replaces it). Bodies that are not
/// JSON objects go through as they are.
pub fn shaped_body(raw: Bytes, kind: &str) -> Bytes {
    match serde_json::from_slice(&raw) {
        Ok(m) => shaped(m, kind).unwrap_or(raw),
        Err(_) => raw,
    }
}

/// `shaped_body` of a body already parsed (None if it cannot be written back).
fn shaped(mut m: serde_json::Map<String, serde_json::Value>, kind: &str) -> Option<Bytes> {
    use serde_json::{Value, json};
    m.shift_remove("metadata");
    match kind {
        "anthropic" => {
            let block = json!({"type": "text", "text": SYSTEM_PROMPT});
            let system = match m.shift_remove("system") {
                Some(Value::Array(mut blocks)) => {
                    if !blocks
                        .iter()
                        .any(|b| b.get("text").and_then(Value::as_str) == Some(SYSTEM_PROMPT))
                    {
                        blocks.insert(0, block);
                    }
                    blocks
                }
                Some(Value::String(t)) if !t.is_empty() => {
                    vec![block, json!({"type": "text", "text": t})]
                }
                _ => vec![block],
            };
            m.insert("system".into(), Value::Array(system));
        }
        "openai" => {
            let text = match m.get("instructions").and_then(Value::as_str) {
                Some(i) if i.starts_with(SYSTEM_PROMPT) => i.to_owned(),
                Some(i) => format!("{SYSTEM_PROMPT}{i}"),
                None => SYSTEM_PROMPT.to_owned(),
            };
            m.insert("instructions".into(), Value::String(text));
        }
        _ => {
            if let Some(Value::Array(msgs)) = m.get_mut("messages") {
                match msgs
                    .iter_mut()
                    .find(|x| x.get("role").and_then(Value::as_str) == Some("system"))
                {
                    Some(sys) => {
                        if let Some(c) = sys.get("content").and_then(Value::as_str)
                            && !c.starts_with(SYSTEM_PROMPT)
                        {
                            sys["content"] = Value::String(format!("{SYSTEM_PROMPT}{c}"));
                        }
                    }
                    None => msgs.insert(0, json!({"role": "system", "content": SYSTEM_PROMPT})),
                }
            }
        }
    }
    let set = |k: &str| m.get(k).is_some_and(|v| !v.is_null());
    if set("temperature") && set("top_p") {
        m.shift_remove("top_p");
    }
    serde_json::to_vec(&m).ok().map(Bytes::from)
}

/// Does a raw body ask for thinking?
#[cfg(test)]
fn wants_thinking(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
        .is_ok_and(|m| thinking_requested(m.get("thinking")))
}

/// A body's `thinking` member asks for thinking (v1's `_isThinkingRequested`).
fn thinking_requested(thinking: Option<&serde_json::Value>) -> bool {
    match thinking.unwrap_or(&serde_json::Value::Null) {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::String(s) => s.trim().eq_ignore_ascii_case("enabled"),
        serde_json::Value::Object(o) => {
            o.get("enabled") == Some(&serde_json::Value::Bool(true))
                || o.get("type")
                    .and_then(|t| t.as_str())
                    .is_some_and(|t| t.trim().eq_ignore_ascii_case("enabled"))
        }
        _ => false,
    }
}

impl AccountType for Droid {
    /// The WorkOS access token of an OAuth account; a pool account's keys are decrypted one at
    /// a time when picked (`api_key` is the single key of records made before pools).
    fn credential(&self, secrets: &Secrets, rec: &Account) -> Result<Credential> {
        let secret = if rec.uses_key_pool() || rec.access_token.is_empty() {
            decrypt(secrets, "apiKey", &rec.api_key)?
        } else {
            decrypt(secrets, "accessToken", &rec.access_token)?
        };
        Ok(Credential {
            secret,
            session_token: None,
        })
    }

    fn oauth(&self) -> bool {
        true
    }

    fn build(&self, up: &Upstream, out: &Outgoing) -> Result<reqwest::RequestBuilder> {
        let secret = up
            .token
            .map(|t| t.0.as_str())
            .unwrap_or(up.credential.secret.0.as_str());
        if secret.is_empty() {
            anyhow::bail!("the Droid account has no usable access token or API key");
        }
        let Some((kind, path)) = endpoint(out.op) else {
            anyhow::bail!("a Droid account cannot serve this request");
        };
        // Parsed once: the thinking check and the reshaping both read it.
        let parsed = object_with_model(out);
        let mut h = base_headers(up, out);
        if up.rec.user_agent.is_empty() {
            h.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        }
        h.insert(header::AUTHORIZATION, bearer(secret)?);
        h.insert("x-factory-client", HeaderValue::from_static("cli"));
        let names = if kind == "anthropic" {
            anthropic::version_header(&mut h, out.headers);
            h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
            // Factory reads the bearer token; v1 sends this placeholder in the Anthropic slot.
            h.insert("x-api-key", HeaderValue::from_static("placeholder"));
            h.insert("x-api-provider", HeaderValue::from_static("anthropic"));
            if !out.headers.contains_key("anthropic-beta")
                && parsed
                    .as_ref()
                    .is_some_and(|m| thinking_requested(m.get("thinking")))
            {
                h.insert("anthropic-beta", HeaderValue::from_static(THINKING_BETA));
            }
            ANTHROPIC_FORWARD
        } else {
            let provider = if kind == "openai" {
                "azure_openai"
            } else {
                provider_for_model(out.upstream_model)
            };
            h.insert("x-api-provider", HeaderValue::from_static(provider));
            OPENAI_FORWARD
        };
        // The client's session id, else a new one per request (v1 `_buildHeaders`).
        let session = out.headers.get("x-session-id").cloned().unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .expect("a uuid is a header value")
        });
        h.insert("x-session-id", session);
        forward(&mut h, out.headers, names);
        let base = if up.rec.api_url.is_empty() {
            DEFAULT_BASE
        } else {
            up.rec.api_url.trim_end_matches('/')
        };
        super::request::post(
            up.client,
            &format!("{base}{path}"),
            h,
            match parsed {
                Some(m) => shaped(m, kind).unwrap_or_else(|| body(out)),
                None => out.body.clone(),
            },
        )
    }

    fn upstream_format(&self, op: Op) -> Option<ClientFormat> {
        Some(match op {
            Op::Messages | Op::CountTokens => ClientFormat::Anthropic,
            _ => ClientFormat::OpenAI,
        })
    }

    fn probe_model(&self, rec: &Account) -> String {
        match rec.supported_models.keys().next() {
            Some(m) => m.clone(),
            None if rec.endpoint_type == "openai" => "gpt-5".into(),
            None => rec.platform.spec().probe_model.to_owned(),
        }
    }

    fn probe(&self, rec: &Account, model: &str) -> (Op, serde_json::Value) {
        if rec.endpoint_type == "openai" {
            return responses_probe(model);
        }
        (
            Op::Messages,
            serde_json::json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "ping"}]}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_types_and_providers_follow_v1() {
        assert_eq!(
            endpoint(Op::Messages),
            Some(("anthropic", "/a/v1/messages"))
        );
        assert_eq!(
            endpoint(Op::Responses { compact: false }),
            Some(("openai", "/o/v1/responses"))
        );
        assert_eq!(
            endpoint(Op::ChatCompletions),
            Some(("comm", "/o/v1/chat/completions"))
        );
        assert_eq!(provider_for_model("gemini-2.5-pro"), "google");
        assert_eq!(provider_for_model("claude-sonnet-4-5"), "anthropic");
        assert_eq!(provider_for_model("gpt-5"), "azure_openai");
        assert_eq!(provider_for_model("glm-4.6"), "fireworks");
        assert_eq!(provider_for_model("kimi-k2"), "baseten");
    }

    #[test]
    fn bodies_are_shaped_as_v1_shapes_them() {
        let v = |b: Bytes| serde_json::from_slice::<serde_json::Value>(&b).unwrap();
        let a = v(shaped_body(
            Bytes::from_static(br#"{"model":"m","system":"be brief","metadata":{"user_id":"u"},"temperature":0.2,"top_p":0.9,"messages":[]}"#),
            "anthropic",
        ));
        assert_eq!(a["system"][0]["text"], SYSTEM_PROMPT);
        assert_eq!(
            a["system"][1]["text"], "be brief",
            "the client's system prompt stays"
        );
        assert!(a.get("metadata").is_none() && a.get("top_p").is_none());
        assert_eq!(a["temperature"], 0.2);
        let twice = v(shaped_body(
            Bytes::from(serde_json::to_vec(&a).unwrap()),
            "anthropic",
        ));
        assert_eq!(twice["system"].as_array().unwrap().len(), 2, "added once");
        let o = v(shaped_body(
            Bytes::from_static(br#"{"model":"gpt-5","instructions":"x","input":"hi"}"#),
            "openai",
        ));
        assert_eq!(o["instructions"], format!("{SYSTEM_PROMPT}x"));
        let c = v(shaped_body(
            Bytes::from_static(
                br#"{"model":"glm-4.6","messages":[{"role":"user","content":"hi"}]}"#,
            ),
            "comm",
        ));
        assert_eq!(c["messages"][0]["role"], "system");
        assert_eq!(c["messages"][1]["content"], "hi");
        assert_eq!(
            shaped_body(Bytes::from_static(b"not json"), "anthropic"),
            Bytes::from_static(b"not json")
        );
    }

    #[test]
    fn thinking_is_read_as_v1_reads_it() {
        assert!(wants_thinking(
            br#"{"thinking":{"type":"enabled","budget_tokens":1024}}"#
        ));
        assert!(wants_thinking(br#"{"thinking":true}"#));
        assert!(!wants_thinking(br#"{"thinking":{"type":"disabled"}}"#));
        assert!(!wants_thinking(br#"{"model":"x"}"#));
        assert!(!wants_thinking(b"not json"));
    }
}

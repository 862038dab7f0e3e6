//! Per-account-type upstream plumbing: which URL, which headers, which credential, which
//! usage parser. The engine calls these; provider modules hold the format details.

use bytes::Bytes;
use salvo::http::{HeaderMap, HeaderName, HeaderValue, header};
use salvo::prelude::*;

use super::engine::Call;
use crate::accounts::AccountRt;
use crate::limits::ClientFormat;
use crate::model::Platform;
use crate::providers::{StreamTap, anthropic, gemini, openai};
use crate::state::AppState;
use crate::usage::TokenUsage;

/// The operation a client route asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Anthropic `POST /v1/messages`.
    Messages,
    /// Anthropic `POST /v1/messages/count_tokens`.
    CountTokens,
    /// OpenAI `POST /v1/responses` (`compact`: `/v1/responses/compact`).
    Responses { compact: bool },
    /// OpenAI `POST /v1/chat/completions`.
    ChatCompletions,
    /// Gemini `models/{model}:{method}` under API version `v1beta` or `v1`.
    Gemini { method: gemini::Method, v1: bool },
}

/// Client headers that belong upstream on Anthropic routes. Everything else (cookies,
/// forwarding headers, the client's own key, accept-encoding) stays here.
const ANTHROPIC_FORWARD: &[&str] = &[
    "accept",
    "accept-language",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "x-app",
    "x-stainless-arch",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
];

/// On OpenAI routes (Codex sends these; they steer caching and conversation state).
const OPENAI_FORWARD: &[&str] = &[
    "accept",
    "openai-beta",
    "session_id",
    "conversation_id",
    "originator",
    "chatgpt-account-id",
    "x-stainless-arch",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
];

pub const DEFAULT_USER_AGENT: &str = concat!("crs/", env!("CARGO_PKG_VERSION"));

fn forward(h: &mut HeaderMap, from: &HeaderMap, names: &[&'static str]) {
    for name in names {
        if let Some(v) = from.get(*name) {
            h.insert(HeaderName::from_static(name), v.clone());
        }
    }
}

/// Account user agent > client user agent > crs default.
fn user_agent(acc: &AccountRt, client: &HeaderMap) -> HeaderValue {
    if !acc.rec.user_agent.is_empty()
        && let Ok(v) = HeaderValue::from_str(&acc.rec.user_agent)
    {
        return v;
    }
    client
        .get(header::USER_AGENT)
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_USER_AGENT))
}

/// Replace the body's model when the account maps it to another name. Only then is the body
/// re-serialised; otherwise the client's bytes go upstream as they came.
pub fn with_model(body: &Bytes, requested: &str, upstream: &str) -> Bytes {
    if requested == upstream {
        return body.clone();
    }
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) {
        Ok(mut m) if m.contains_key("model") => {
            m.insert(
                "model".into(),
                serde_json::Value::String(upstream.to_owned()),
            );
            serde_json::to_vec(&m)
                .map(Bytes::from)
                .unwrap_or_else(|_| body.clone())
        }
        _ => body.clone(),
    }
}

fn bearer(v: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {v}")).ok()
}

fn with_query(mut url: String, q: Option<&str>) -> String {
    if let Some(q) = q.filter(|q| !q.is_empty()) {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(q);
    }
    url
}

/// The upstream request for one attempt on `acc`.
pub async fn build_request(
    st: &AppState,
    acc: &AccountRt,
    call: &Call,
    upstream_model: &str,
) -> anyhow::Result<reqwest::RequestBuilder> {
    let ch = &call.client_headers;
    let mut h = HeaderMap::with_capacity(20);
    h.insert(header::USER_AGENT, user_agent(acc, ch));
    let r = &acc.rec;
    match r.platform {
        Platform::Claude | Platform::ClaudeConsole | Platform::Ccr => {
            forward(&mut h, ch, ANTHROPIC_FORWARD);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(
                "anthropic-version",
                ch.get("anthropic-version")
                    .cloned()
                    .unwrap_or(HeaderValue::from_static(anthropic::DEFAULT_VERSION)),
            );
            let base = if r.api_url.is_empty() && r.platform == Platform::Claude {
                anthropic::OFFICIAL_BASE
            } else {
                r.api_url.as_str()
            };
            let mut url = anthropic::messages_url(base);
            if call.op == Op::CountTokens {
                url.push_str("/count_tokens");
            }
            let url = with_query(url, call.query.as_deref());
            if r.platform == Platform::Claude {
                // Subscription accounts: OAuth bearer token plus the OAuth beta flag.
                let token = crate::accounts::oauth::fresh_access_token(st, acc).await?;
                h.insert(
                    header::AUTHORIZATION,
                    bearer(&token.0).ok_or_else(|| anyhow::anyhow!("bad token"))?,
                );
                let beta = anthropic::with_oauth_beta(
                    ch.get("anthropic-beta").and_then(|v| v.to_str().ok()),
                );
                h.insert("anthropic-beta", HeaderValue::from_str(&beta)?);
            } else if acc.secret.0.starts_with("sk-ant-") {
                h.insert("x-api-key", HeaderValue::from_str(&acc.secret.0)?);
            } else {
                h.insert(
                    header::AUTHORIZATION,
                    bearer(&acc.secret.0).ok_or_else(|| anyhow::anyhow!("bad key"))?,
                );
            }
            let body = with_model(&call.body, &call.model, upstream_model);
            Ok(acc.client.post(url).headers(h).body(body))
        }
        Platform::Bedrock => crate::providers::bedrock::build_request(acc, call, upstream_model, h),
        Platform::OpenAIResponses => {
            forward(&mut h, ch, OPENAI_FORWARD);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(
                header::AUTHORIZATION,
                bearer(&acc.secret.0).ok_or_else(|| anyhow::anyhow!("bad key"))?,
            );
            let url = match call.op {
                Op::Responses { compact } => openai::responses_url(&r.api_url, compact),
                Op::ChatCompletions => openai::chat_url(&r.api_url),
                _ => anyhow::bail!("an OpenAI account cannot serve this request"),
            };
            let body = with_model(&call.body, &call.model, upstream_model);
            Ok(acc.client.post(url).headers(h).body(body))
        }
        Platform::AzureOpenAI => {
            forward(&mut h, ch, OPENAI_FORWARD);
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert("api-key", HeaderValue::from_str(&acc.secret.0)?);
            let url = openai::azure_url(r, call.op, upstream_model)?;
            let body = with_model(&call.body, &call.model, upstream_model);
            Ok(acc.client.post(url).headers(h).body(body))
        }
        Platform::GeminiApi => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert("x-goog-api-key", HeaderValue::from_str(&acc.secret.0)?);
            let Op::Gemini { method, v1 } = call.op else {
                anyhow::bail!("a Gemini account cannot serve this request");
            };
            let url = gemini::url(&r.api_url, v1, upstream_model, method);
            Ok(acc.client.post(url).headers(h).body(call.body.clone()))
        }
        Platform::Droid => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(
                header::AUTHORIZATION,
                bearer(&acc.secret.0).ok_or_else(|| anyhow::anyhow!("bad key"))?,
            );
            let base = if r.api_url.is_empty() {
                "https://app.factory.ai/api/llm"
            } else {
                r.api_url.trim_end_matches('/')
            };
            let (url, names) = match call.op {
                Op::Messages | Op::CountTokens => {
                    h.insert(
                        "anthropic-version",
                        ch.get("anthropic-version")
                            .cloned()
                            .unwrap_or(HeaderValue::from_static(anthropic::DEFAULT_VERSION)),
                    );
                    let mut u = format!("{base}/a/v1/messages");
                    if call.op == Op::CountTokens {
                        u.push_str("/count_tokens");
                    }
                    (u, ANTHROPIC_FORWARD)
                }
                Op::Responses { .. } => (format!("{base}/o/v1/responses"), OPENAI_FORWARD),
                Op::ChatCompletions => (format!("{base}/o/v1/chat/completions"), OPENAI_FORWARD),
                Op::Gemini { .. } => anyhow::bail!("a Droid account cannot serve Gemini requests"),
            };
            forward(&mut h, ch, names);
            let body = with_model(&call.body, &call.model, upstream_model);
            Ok(acc.client.post(url).headers(h).body(body))
        }
    }
}

/// The error format the account's upstream speaks for `op`; `None` for upstreams whose
/// error bodies are never passed through as they are (Bedrock's `{"message": ...}`).
pub fn upstream_format(acc: &AccountRt, op: Op) -> Option<ClientFormat> {
    Some(match acc.rec.platform {
        Platform::Claude | Platform::ClaudeConsole | Platform::Ccr => ClientFormat::Anthropic,
        Platform::OpenAIResponses | Platform::AzureOpenAI => ClientFormat::OpenAI,
        Platform::GeminiApi => ClientFormat::Gemini,
        Platform::Droid => match op {
            Op::Messages | Op::CountTokens => ClientFormat::Anthropic,
            _ => ClientFormat::OpenAI,
        },
        Platform::Bedrock => return None,
    })
}

pub fn is_stream_response(acc: &AccountRt, _op: Op, h: &reqwest::header::HeaderMap) -> bool {
    let ct = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if acc.rec.platform == Platform::Bedrock {
        return ct.starts_with("application/vnd.amazon.eventstream");
    }
    ct.starts_with("text/event-stream")
}

/// Content type of the stream the client receives, when it differs from the upstream's.
pub fn stream_content_type(acc: &AccountRt, _op: Op) -> Option<&'static str> {
    (acc.rec.platform == Platform::Bedrock).then_some("text/event-stream; charset=utf-8")
}

pub fn new_tap(acc: &AccountRt, op: Op, _format: ClientFormat) -> Box<dyn StreamTap> {
    match (acc.rec.platform, op) {
        (Platform::Bedrock, _) => Box::new(crate::providers::bedrock::EventStreamTap::new()),
        (_, Op::Responses { .. }) => Box::new(openai::ResponsesTap::new()),
        (_, Op::ChatCompletions) => Box::new(openai::ChatTap::new()),
        (_, Op::Gemini { .. }) => Box::new(gemini::GeminiTap::new()),
        _ => Box::new(anthropic::SseTap::new()),
    }
}

/// Does a success response of this op carry usage to record?
pub fn op_has_usage(op: Op) -> bool {
    !matches!(
        op,
        Op::CountTokens
            | Op::Gemini {
                method: gemini::Method::CountTokens,
                ..
            }
    )
}

pub fn usage_from_body(
    acc: &AccountRt,
    op: Op,
    body: &[u8],
) -> Option<(TokenUsage, Option<String>)> {
    if !op_has_usage(op) {
        return None;
    }
    match (acc.rec.platform, op) {
        (_, Op::Responses { .. }) => openai::responses_usage_from_body(body),
        (_, Op::ChatCompletions) => openai::chat_usage_from_body(body),
        (_, Op::Gemini { .. }) => gemini::usage_from_body(body),
        _ => anthropic::usage_from_body(body),
    }
}

/// A non-stream success body as the client receives it (unchanged for every type today).
pub fn transform_body(_acc: &AccountRt, _op: Op, body: Bytes) -> Bytes {
    body
}

/// Upstream response headers worth passing back to the client.
pub fn copy_response_headers(from: &reqwest::header::HeaderMap, res: &mut Response) {
    for (name, value) in from {
        let n = name.as_str();
        if n == "content-type"
            || n == "request-id"
            || n == "x-request-id"
            || n == "retry-after"
            || n == "x-should-retry"
            || n.starts_with("anthropic-ratelimit-")
            || n == "anthropic-organization-id"
            || n.starts_with("x-ratelimit-")
            || n == "openai-processing-ms"
            || n == "openai-version"
        {
            res.headers_mut().append(name.clone(), value.clone());
        }
    }
}

pub fn is_error_body(format: ClientFormat, body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let v = match (&v, format) {
        (serde_json::Value::Array(a), ClientFormat::Gemini) => {
            a.first().cloned().unwrap_or_default()
        }
        _ => v,
    };
    v.get("error").is_some_and(|e| e.is_object())
}

/// The human message inside an upstream error body, in any of the formats.
pub fn error_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let v = v.as_array().and_then(|a| a.first().cloned()).unwrap_or(v);
    v.pointer("/error/message")
        .or_else(|| v.get("message"))
        .or_else(|| v.get("Message"))
        .and_then(|m| m.as_str())
        .map(str::to_owned)
}

/// Anthropic error type for a status (other formats map it further).
pub fn error_kind(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

/// An error body in the client's format.
pub fn error_body(format: ClientFormat, status: u16, kind: &str, message: &str) -> String {
    match format {
        ClientFormat::Anthropic => anthropic::error_body(kind, message),
        ClientFormat::OpenAI => openai::error_body(kind, message),
        ClientFormat::Gemini => gemini::error_body(status, message),
    }
}

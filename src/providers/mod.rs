//! Wire formats and account types. Nothing here decides policy or reaches a route or the
//! server state: the routes hand in what one upstream attempt needs (`Upstream`, `Outgoing`)
//! and get back a request, a stream tap, usage.
//!
//! - Wire formats, one module each: `anthropic` (Messages), `openai` (Responses, Chat
//!   Completions), `gemini`, `codeassist` (Gemini wrapped by Google's Code Assist), `bedrock`
//!   (SigV4, event stream), `sse` (the one line splitter).
//! - Account types, one file each, behind the `AccountType` seam: `claude` (subscription
//!   OAuth), `console`, `ccr`, `responses`, `chatgpt` (Codex OAuth), `azure`, `gemini_api`,
//!   `gemini_oauth` (Google login through Code Assist), `droid`, `bedrock`.
//!   `account_type` is the one place that maps a `Platform` to its implementation; the static
//!   facts of each type (names, admin path, fields, services) are `model::PlatformSpec`.

pub mod anthropic;
mod azure;
pub mod bedrock;
mod ccr;
pub mod chatgpt;
pub mod claude;
pub mod codeassist;
mod console;
pub mod droid;
pub mod gemini;
mod gemini_api;
mod gemini_oauth;
pub mod http;
pub mod openai;
mod request;
mod responses;
pub mod sse;

use anyhow::{Context, Result};
use bytes::Bytes;
use salvo::http::{HeaderMap, HeaderName, HeaderValue};

use crate::crypto::{Secret, Secrets};
use crate::model::{Account, Platform};
use crate::usage::TokenUsage;
pub use request::{DEFAULT_USER_AGENT, encode_segment, with_model};

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
    /// OpenAI `POST /v1/embeddings` (Azure deployments).
    Embeddings,
    /// Gemini `models/{model}:{method}` under API version `v1beta` or `v1`.
    Gemini { method: gemini::Method, v1: bool },
    /// Code Assist `v1internal:{method}` (the Gemini CLI's Google-login routes): the client's
    /// body and the answer in Code Assist's own wrapped format.
    CodeAssist { method: codeassist::Method },
}

impl Op {
    /// Does a success response of this op carry usage to record?
    pub fn has_usage(self) -> bool {
        match self {
            Op::CountTokens
            | Op::Gemini {
                method: gemini::Method::CountTokens,
                ..
            } => false,
            Op::CodeAssist { method } => method.generates(),
            _ => true,
        }
    }

    /// A Gemini-format call whose method streams by its name (`streamGenerateContent`).
    pub fn gemini_streams(self) -> bool {
        matches!(
            self,
            Op::Gemini {
                method: gemini::Method::StreamGenerateContent,
                ..
            } | Op::CodeAssist {
                method: codeassist::Method::StreamGenerateContent
            }
        )
    }
}

/// The error schema of an API: the one a client route speaks, or an upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFormat {
    /// Claude routes answer with v1's bodies, which scripts written for v1 parse.
    Anthropic,
    OpenAI,
    Gemini,
}

/// Watches (and, for formats that need converting, rewrites) an upstream stream on its way to
/// the client, keeping the usage it reports.
pub trait StreamTap: Send {
    /// Observe an upstream chunk. Returns the bytes for the client; `None` means the chunk
    /// goes through unchanged.
    fn feed(&mut self, chunk: &Bytes) -> Option<Bytes>;
    fn usage(&self) -> TokenUsage;
    /// The model the upstream reported, if it did.
    fn model(&self) -> Option<&str>;
    /// The upstream began answering (it bills the input from here on).
    fn started(&self) -> bool;
    /// The answer is complete.
    fn finished(&self) -> bool;
    /// The bytes so far end in the middle of a line.
    fn mid_line(&self) -> bool;
    /// A well-formed terminal error event in the client's stream dialect.
    fn error_event(&self, message: &str) -> Bytes;
}

/// An account's decrypted credential: the API key, OAuth access token or AWS secret key, and
/// for temporary AWS credentials the session token.
#[derive(Debug, Clone)]
pub struct Credential {
    pub secret: Secret,
    pub session_token: Option<Secret>,
}

/// One client header (name, value).
pub type ClientHeader = (HeaderName, HeaderValue);

/// The account side of one upstream attempt.
#[derive(Clone, Copy)]
pub struct Upstream<'a> {
    pub rec: &'a Account,
    pub credential: &'a Credential,
    pub client: &'a reqwest::Client,
    /// A fresh OAuth access token, for account types with `oauth() == true`.
    pub token: Option<&'a Secret>,
    /// The account's one client identity (user agent, `x-stainless-*`), when it keeps one.
    pub identity: Option<&'a [ClientHeader]>,
    /// Where the account's calls go when the account type does not take it from the record:
    /// Code Assist for Gemini OAuth accounts (`accounts::codeassist::base`); empty for the
    /// others.
    pub endpoint: &'a str,
}

/// The client side of one upstream attempt.
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    pub op: Op,
    pub body: &'a Bytes,
    /// The model the client asked for, and the name it has upstream (after the account's
    /// mapping).
    pub model: &'a str,
    pub upstream_model: &'a str,
    pub stream: bool,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
    /// The request's session key (sticky sessions), if it has one.
    pub session: Option<&'a str>,
}

/// One upstream account type. Adding a type: a file implementing this, an arm in
/// `account_type`, a row in `model::PLATFORMS`, its admin fields.
pub trait AccountType: Sync {
    /// Decrypt what the request path needs. Default: the `apiKey` field.
    fn credential(&self, secrets: &Secrets, rec: &Account) -> Result<Credential> {
        Ok(Credential {
            secret: decrypt(secrets, "apiKey", &rec.api_key)?,
            session_token: None,
        })
    }

    /// The account authenticates with an OAuth access token that the caller keeps fresh
    /// (`Upstream::token`).
    fn oauth(&self) -> bool {
        false
    }

    /// The upstream request for one attempt.
    fn build(&self, up: &Upstream, out: &Outgoing) -> Result<reqwest::RequestBuilder>;

    /// The error format the upstream speaks for `op`; `None` when its error bodies are never
    /// passed through as they are.
    fn upstream_format(&self, op: Op) -> Option<ClientFormat>;

    /// Is a success answer with these headers a stream?
    fn is_stream(&self, headers: &reqwest::header::HeaderMap) -> bool {
        content_type(headers).starts_with("text/event-stream")
    }

    /// Does a success answer to a request that asked for a stream (`requested`) or not stream?
    /// Default: what its headers say.
    fn answer_streams(&self, _requested: bool, headers: &reqwest::header::HeaderMap) -> bool {
        self.is_stream(headers)
    }

    /// Content type of the stream the client receives, when it differs from the upstream's.
    fn stream_content_type(&self) -> Option<&'static str> {
        None
    }

    /// The tap that reads usage from a streamed answer to `op`.
    fn tap(&self, op: Op) -> Box<dyn StreamTap> {
        match op {
            Op::Responses { .. } => Box::new(openai::ResponsesTap::new()),
            Op::ChatCompletions | Op::Embeddings => Box::new(openai::ChatTap::new()),
            Op::Gemini { .. } => Box::new(gemini::GeminiTap::new()),
            Op::CodeAssist { .. } => Box::new(codeassist::Unwrap::new(
                Box::new(gemini::GeminiTap::new()),
                false,
            )),
            Op::Messages | Op::CountTokens => Box::new(anthropic::SseTap::new()),
        }
    }

    /// A stage in front of the stream's tap (or converter): the upstream's chunks as the tap
    /// should see them. Default: none. An account type whose upstream wraps a standard format
    /// unwraps it here, before any tap or conversion sees the stream.
    fn stream_stage(&self, _op: Op, tap: Box<dyn StreamTap>) -> Box<dyn StreamTap> {
        tap
    }

    /// A non-stream success body in the standard format of `op`, before usage is read or the
    /// answer converted. Default: as it came.
    fn standard_body(&self, _op: Op, body: Bytes) -> Bytes {
        body
    }

    /// Usage (and the model the upstream named) from a non-stream success body.
    fn usage_from_body(&self, op: Op, body: &[u8]) -> Option<(TokenUsage, Option<String>)> {
        if !op.has_usage() {
            return None;
        }
        match op {
            Op::Responses { .. } => openai::responses_usage_from_body(body),
            Op::ChatCompletions | Op::Embeddings => openai::chat_usage_from_body(body),
            Op::Gemini { .. } => gemini::usage_from_body(body),
            Op::CodeAssist { .. } => codeassist::usage_from_body(body),
            Op::Messages | Op::CountTokens => anthropic::usage_from_body(body),
        }
    }

    /// The model an account test asks for when the admin names none.
    fn probe_model(&self, rec: &Account) -> String {
        rec.supported_models
            .keys()
            .next()
            .cloned()
            .unwrap_or_else(|| rec.platform.spec().probe_model.to_owned())
    }

    /// The smallest request that proves the account works ("test this account").
    fn probe(&self, _rec: &Account, model: &str) -> (Op, serde_json::Value) {
        (
            Op::Messages,
            serde_json::json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "ping"}]}),
        )
    }
}

/// The credential of the OAuth account types: the access token (`accessToken`), which the
/// caller keeps fresh.
pub fn access_token_credential(secrets: &Secrets, rec: &Account) -> Result<Credential> {
    Ok(Credential {
        secret: decrypt(secrets, "accessToken", &rec.access_token)?,
        session_token: None,
    })
}

/// The implementation of an account type: the one dispatch on `Platform`.
pub fn account_type(p: Platform) -> &'static dyn AccountType {
    match p {
        Platform::Claude => &claude::Claude,
        Platform::ClaudeConsole => &console::Console,
        Platform::Ccr => &ccr::Ccr,
        Platform::OpenAIResponses => &responses::Responses,
        Platform::AzureOpenAI => &azure::Azure,
        Platform::GeminiApi => &gemini_api::GeminiApi,
        Platform::Droid => &droid::Droid,
        Platform::Bedrock => &bedrock::Bedrock,
        Platform::Gemini => &gemini_oauth::GeminiOAuth,
        Platform::OpenAI => &chatgpt::ChatGpt,
    }
}

/// Decrypt one secret field ("" stays "").
pub fn decrypt(secrets: &Secrets, field: &str, v: &str) -> Result<Secret> {
    if v.is_empty() {
        return Ok(Secret(String::new()));
    }
    secrets
        .decrypt(v)
        .map(Secret)
        .with_context(|| format!("decrypting {field}"))
}

fn content_type(h: &reqwest::header::HeaderMap) -> &str {
    h.get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Is `body` an error object in `format` (so it can pass through to a client of that format)?
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

#[cfg(test)]
mod tap_props;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn upstream_error_bodies_of_any_shape(
            body in prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64),
                (any::<String>(), any::<bool>(), 0usize..3).prop_map(|(m, arr, shape)| {
                    let v = match shape {
                        0 => json!({"type": "error", "error": {"type": "x", "message": m}}),
                        1 => json!({"message": m}),
                        _ => json!({"Message": m}),
                    };
                    let v = if arr { json!([v]) } else { v };
                    v.to_string().into_bytes()
                }),
            ],
        ) {
            for f in [ClientFormat::Anthropic, ClientFormat::OpenAI, ClientFormat::Gemini] {
                let _ = is_error_body(f, &body);
            }
            if let Some(m) = error_message(&body) {
                // The message is a string the body held.
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                prop_assert!(v.to_string().contains(&serde_json::to_string(&m).unwrap()));
            }
        }
    }
}

//! Ingress shared by every client route: authenticate (401 before anything else), read the
//! body within limits, peek what policy and scheduling need without re-serialising it, admit.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use salvo::http::StatusCode;
use salvo::prelude::*;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::engine::write_error;
use crate::limits::AuthError;
use crate::limits::{Admission, Ask, ClientFormat, KeyEntry, Rejection, Service, admit_key};
use crate::state::AppState;
use crate::web::{BodyError, close_connection, read_body};

#[derive(Deserialize, Default)]
struct Meta<'a> {
    #[serde(borrow, default)]
    user_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Default)]
struct BodyPeek<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default)]
    metadata: Option<Meta<'a>>,
    #[serde(borrow, default)]
    prompt_cache_key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    system: Option<&'a RawValue>,
    #[serde(borrow, default)]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
    #[serde(borrow, default)]
    contents: Option<&'a RawValue>,
}

/// What was read from a request body.
#[derive(Debug, Default, Clone)]
pub struct Peek {
    pub model: String,
    pub stream: bool,
    /// A sticky-session key derived from the body (session id, cache key, or a hash of the
    /// conversation's start).
    pub session: Option<String>,
}

/// An admitted request and its body.
pub struct Ingress {
    pub adm: Admission,
    pub body: Bytes,
    pub peek: Peek,
    pub started: Instant,
}

fn first_element(raw: &RawValue) -> Option<&str> {
    let items: Vec<&RawValue> = serde_json::from_str(raw.get()).ok()?;
    items.first().map(|r| r.get())
}

/// First 32 hex digits of sha256 over at most the first 16 KiB (a conversation's start is
/// identified well before that; long system prompts need not be hashed whole per request).
fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(&bytes[..bytes.len().min(16 * 1024)])[..16])
}

/// Claude Code's `metadata.user_id`: `user_<hash>_account_<uuid>_session_<uuid>`, or a JSON
/// object with `session_id`. Any other value is used as it is.
pub fn session_from_user_id(uid: &str) -> Option<String> {
    let uid = uid.trim();
    if uid.is_empty() {
        return None;
    }
    if let Some(i) = uid.rfind("_session_") {
        let s = &uid[i + "_session_".len()..];
        if !s.is_empty() {
            return Some(s.to_owned());
        }
    }
    if uid.starts_with('{')
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(uid)
        && let Some(s) = v.get("session_id").and_then(|s| s.as_str())
    {
        return Some(s.to_owned());
    }
    Some(format!("uid:{}", short_hash(uid.as_bytes())))
}

/// Read and peek a JSON body. Errors are written in the client's format.
pub fn peek(
    body: &[u8],
    format: ClientFormat,
    res: &mut Response,
    model_required: bool,
) -> Option<Peek> {
    let p: BodyPeek = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => {
            write_error(
                res,
                format,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("Request body must be a JSON object: {e}"),
            );
            return None;
        }
    };
    let model = p.model.as_deref().map(str::trim).unwrap_or("").to_owned();
    if model_required && model.is_empty() {
        write_error(
            res,
            format,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "model: Field required",
        );
        return None;
    }
    let session = p
        .metadata
        .as_ref()
        .and_then(|m| m.user_id.as_deref())
        .and_then(session_from_user_id)
        .or_else(|| {
            p.prompt_cache_key
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(|s| format!("pck:{s}"))
        })
        .or_else(|| {
            // The start of the conversation identifies it: system prompt, else first message.
            let src = p
                .system
                .map(|s| s.get())
                .or_else(|| p.messages.and_then(first_element))
                .or_else(|| p.contents.and_then(first_element))
                .or_else(|| p.input.map(|i| first_element(i).unwrap_or(i.get())))?;
            Some(format!("h:{}", short_hash(src.as_bytes())))
        });
    Some(Peek {
        model,
        stream: p.stream.unwrap_or(false),
        session,
    })
}

/// A session key from headers, which win over the body's.
pub fn header_session(req: &Request) -> Option<String> {
    for name in ["x-session-affinity", "session_id", "x-session-id"] {
        if let Some(v) = req
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            && !v.is_empty()
        {
            return Some(format!("hdr:{v}"));
        }
    }
    None
}

/// Authenticate, read, peek and admit. `model` overrides the body's (Gemini puts it in the
/// path); `metered` takes a concurrency slot and counts the request in the rate window.
pub async fn ingress(
    st: &Arc<AppState>,
    req: &mut Request,
    res: &mut Response,
    format: ClientFormat,
    service: Service,
    metered: bool,
    model: Option<String>,
) -> Option<Ingress> {
    let started = Instant::now();
    let entry: Arc<KeyEntry> = match st.authenticate(req) {
        Ok(k) => k,
        Err(e) => {
            if e != AuthError::Missing {
                tracing::debug!(reason = ?e, "client key rejected");
            }
            Rejection::Auth(e).write(format, res);
            return None;
        }
    };
    let body = match read_body(req, st.config.max_body_bytes).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            write_error(
                res,
                format,
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                &format!(
                    "Request exceeds the maximum size of {} bytes",
                    st.config.max_body_bytes
                ),
            );
            return None;
        }
        Err(BodyError::Timeout) => {
            write_error(
                res,
                format,
                StatusCode::REQUEST_TIMEOUT,
                "timeout_error",
                "The request body did not arrive in time",
            );
            close_connection(req, res);
            return None;
        }
        Err(BodyError::Read(e)) => {
            write_error(
                res,
                format,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &e,
            );
            return None;
        }
    };
    let mut pk = peek(&body, format, res, model.is_none())?;
    if let Some(m) = model {
        pk.model = m;
    }
    if let Some(s) = header_session(req) {
        pk.session = Some(s);
    }
    let ask = Ask {
        service,
        model: Some(&pk.model),
        metered,
    };
    match admit_key(&st.keys, entry, req, ask).await {
        Ok(adm) => Some(Ingress {
            adm,
            body,
            peek: pk,
            started,
        }),
        Err(r) => {
            tracing::info!(
                status = r.status().as_u16(),
                "request refused by key policy"
            );
            r.write(format, res);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_code_user_ids() {
        assert_eq!(
            session_from_user_id(
                "user_abc123_account_1111_session_2b7c6c04-9b0a-4c7e-9f3e-0b2d8d6f1a11"
            )
            .as_deref(),
            Some("2b7c6c04-9b0a-4c7e-9f3e-0b2d8d6f1a11")
        );
        assert_eq!(
            session_from_user_id(r#"{"device_id":"d","account_uuid":"a","session_id":"s-1"}"#)
                .as_deref(),
            Some("s-1")
        );
        assert!(session_from_user_id("someone").unwrap().starts_with("uid:"));
        assert_eq!(session_from_user_id(""), None);
    }

    #[test]
    fn body_sessions() {
        let mut res = Response::new();
        let p = peek(
            br#"{"model":"m","system":"You are X","messages":[{"role":"user","content":"a"}]}"#,
            ClientFormat::Anthropic,
            &mut res,
            true,
        )
        .unwrap();
        let q = peek(br#"{"model":"m","system":"You are X","messages":[{"role":"user","content":"b"},{"role":"user","content":"c"}]}"#, ClientFormat::Anthropic, &mut res, true).unwrap();
        assert_eq!(p.session, q.session, "same system prompt: same session");
        let r = peek(
            br#"{"model":"m","messages":[{"role":"user","content":"a"}],"stream":true}"#,
            ClientFormat::Anthropic,
            &mut res,
            true,
        )
        .unwrap();
        assert!(r.stream);
        assert_ne!(r.session, p.session);
        let s = peek(
            br#"{"model":"gpt-5","input":"hi","prompt_cache_key":"conv-1"}"#,
            ClientFormat::OpenAI,
            &mut res,
            true,
        )
        .unwrap();
        assert_eq!(s.session.as_deref(), Some("pck:conv-1"));
        assert!(
            peek(
                br#"{"max_tokens":1}"#,
                ClientFormat::Anthropic,
                &mut res,
                true
            )
            .is_none()
        );
    }
}

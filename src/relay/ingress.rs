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
use crate::limits::{
    Admission, Ask, AskModel, ClientFormat, KeyEntry, Rejection, Service, admit_key, admit_model,
    models,
};
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
        && !s.is_empty()
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
    header_session: Option<String>,
) -> Option<Peek> {
    // Only an object: serde would also read a struct from a JSON array of its fields.
    let parsed = if body.trim_ascii_start().starts_with(b"{") {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    } else {
        Err("expected a JSON object".to_owned())
    };
    let p: BodyPeek = match parsed {
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
    // A session the headers name wins: nothing of the body is hashed for it then.
    let session = header_session
        .or_else(|| {
            p.metadata
                .as_ref()
                .and_then(|m| m.user_id.as_deref())
                .and_then(session_from_user_id)
        })
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

/// The client's query string as it may go upstream: without `key=` (where Gemini clients put
/// their crs key), which must never leave crs.
pub fn upstream_query(q: Option<&str>) -> Option<String> {
    let kept: Vec<&str> = q?
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some("key"))
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Session keys are held in memory and stored: a long one (a client's own id can be anything)
/// is kept as its hash.
fn bounded_session(s: String) -> String {
    const MAX: usize = 128;
    if s.len() <= MAX {
        s
    } else {
        format!("h:{}", short_hash(s.as_bytes()))
    }
}

/// A session key from headers, which win over the body's.
pub fn header_session(req: &Request) -> Option<String> {
    // Claude Code sends `x-claude-code-session-id` on every request, stable for a conversation.
    for name in [
        "x-claude-code-session-id",
        "x-session-affinity",
        "session_id",
        "x-session-id",
    ] {
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

/// Authenticate, admit what needs no body (taking the concurrency slot), read the body within
/// the global body budget, peek, then admit the model. `model` overrides the body's (Gemini
/// puts it in the path); `metered` takes a concurrency slot and marks a request that reaches a
/// model (false for token counting, which is still counted in the rate window).
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
    let refused = |r: Rejection, res: &mut Response| {
        tracing::info!(
            status = r.status().as_u16(),
            "request refused by key policy"
        );
        r.write(format, res);
    };
    let ask = Ask {
        service,
        slot: metered,
    };
    let mut adm = match admit_key(&st.keys, entry, req, ask).await {
        Ok(adm) => adm,
        Err(r) => {
            refused(r, res);
            return None;
        }
    };
    adm.body_budget = Some(body_budget(st, req, format, res).await?);
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
    let mut pk = peek(&body, format, res, model.is_none(), header_session(req))?;
    if let Some(m) = model {
        pk.model = m;
    }
    if !models::valid_name(&pk.model) {
        write_error(
            res,
            format,
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            &format!(
                "model: not a valid model name (at most {} characters: letters, digits and -._:/@[]+)",
                models::MAX_NAME
            ),
        );
        return None;
    }
    pk.session = pk.session.map(bounded_session);
    let ask = AskModel {
        model: &pk.model,
        window: true,
        activates: metered,
    };
    if let Err(r) = admit_model(&st.keys, &adm, ask) {
        refused(r, res);
        return None;
    }
    Some(Ingress {
        adm,
        body,
        peek: pk,
        started,
    })
}

/// Room for this request's body in the global budget of bodies held in memory: its declared
/// length (or the largest body allowed, when it declares none), in KiB. A request waits up to
/// five seconds for room, then gets 503.
async fn body_budget(
    st: &AppState,
    req: &Request,
    format: ClientFormat,
    res: &mut Response,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    let max = st.config.max_body_bytes;
    let declared = req
        .headers()
        .get(salvo::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(max)
        .min(max)
        .min(st.config.max_inflight_body_bytes);
    let kib = u32::try_from(declared.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
    let wait = st.body_budget.clone().acquire_many_owned(kib);
    match tokio::time::timeout(std::time::Duration::from_secs(5), wait).await {
        Ok(Ok(p)) => Some(p),
        _ => {
            tracing::warn!(
                bytes = declared,
                "request bodies in flight are at their limit; request refused"
            );
            write_error(
                res,
                format,
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded_error",
                "The server is receiving too many request bodies at once; retry shortly",
            );
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
        // An empty session id is no session id: the whole value is hashed.
        assert!(
            session_from_user_id(r#"{"session_id":""}"#)
                .unwrap()
                .starts_with("uid:")
        );
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
            None,
        )
        .unwrap();
        let q = peek(br#"{"model":"m","system":"You are X","messages":[{"role":"user","content":"b"},{"role":"user","content":"c"}]}"#, ClientFormat::Anthropic, &mut res, true, None).unwrap();
        assert_eq!(p.session, q.session, "same system prompt: same session");
        let r = peek(
            br#"{"model":"m","messages":[{"role":"user","content":"a"}],"stream":true}"#,
            ClientFormat::Anthropic,
            &mut res,
            true,
            None,
        )
        .unwrap();
        assert!(r.stream);
        assert_ne!(r.session, p.session);
        let s = peek(
            br#"{"model":"gpt-5","input":"hi","prompt_cache_key":"conv-1"}"#,
            ClientFormat::OpenAI,
            &mut res,
            true,
            None,
        )
        .unwrap();
        assert_eq!(s.session.as_deref(), Some("pck:conv-1"));
        // A session the headers name wins over every body source.
        let h = peek(
            br#"{"model":"m","metadata":{"user_id":"user_x_account_y_session_abc"},"system":"You are X"}"#,
            ClientFormat::Anthropic,
            &mut res,
            true,
            Some("hdr:conv-9".into()),
        )
        .unwrap();
        assert_eq!(h.session.as_deref(), Some("hdr:conv-9"));
        // An array of the fields in order is not an object.
        assert!(
            peek(
                br#" ["m", true]"#,
                ClientFormat::Anthropic,
                &mut res,
                true,
                None
            )
            .is_none()
        );
        assert!(
            peek(
                br#"{"max_tokens":1}"#,
                ClientFormat::Anthropic,
                &mut res,
                true,
                None,
            )
            .is_none()
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;
        use serde_json::{Map, Value, json};

        const FIELDS: &[&str] = &[
            "model",
            "stream",
            "metadata",
            "user_id",
            "prompt_cache_key",
            "system",
            "messages",
            "input",
            "contents",
        ];

        fn key() -> impl Strategy<Value = String> {
            prop_oneof![
                3 => prop::sample::select(FIELDS).prop_map(str::to_owned),
                1 => any::<String>(),
            ]
        }

        fn json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| json!(f)),
                any::<String>().prop_map(Value::from),
                "[ a-z0-9_-]{0,12}".prop_map(Value::from),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::vec((key(), inner), 0..6)
                        .prop_map(|kv| Value::Object(kv.into_iter().collect())),
                ]
            })
        }

        /// A request body: mostly objects with the fields `peek` reads, in any types.
        fn body() -> impl Strategy<Value = Value> {
            prop_oneof![
                1 => json(),
                3 => prop::collection::vec((key(), json()), 0..8)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        }

        fn run(bytes: &[u8], model_required: bool) -> Option<Peek> {
            let mut res = Response::new();
            let p = peek(
                bytes,
                ClientFormat::Anthropic,
                &mut res,
                model_required,
                None,
            );
            if p.is_none() {
                assert_eq!(res.status_code, Some(StatusCode::BAD_REQUEST));
            }
            p
        }

        /// Whether `peek` can read the fields it looks at in `m`: each absent, null or of its
        /// type.
        fn readable(m: &Map<String, Value>) -> bool {
            let is =
                |k: &str, ok: fn(&Value) -> bool| m.get(k).is_none_or(|v| v.is_null() || ok(v));
            is("model", Value::is_string)
                && is("stream", Value::is_boolean)
                && is("prompt_cache_key", Value::is_string)
                && is("metadata", |v| {
                    let uid = |u: &Value| u.is_null() || u.is_string();
                    // serde also reads a struct from the sequence of its fields: `[uid]`.
                    v.as_object()
                        .is_some_and(|md| md.get("user_id").is_none_or(uid))
                        || v.as_array()
                            .is_some_and(|a| a.len() <= 1 && a.iter().all(uid))
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn session_from_any_user_id(uid in prop_oneof![
                any::<String>(),
                "(user_[a-f0-9]{4}_account_[a-z0-9-]{0,8})?(_session_)?[a-z0-9-]{0,12}",
                "[ ]{0,2}\\{\"session_id\":\"[a-z0-9 ]{0,8}\"\\}",
            ]) {
                let s = session_from_user_id(&uid);
                prop_assert_eq!(s.is_none(), uid.trim().is_empty());
                if let Some(s) = &s {
                    prop_assert!(!s.is_empty());
                    let t = uid.trim();
                    if let Some(i) = t.rfind("_session_")
                        && i + "_session_".len() < t.len()
                    {
                        prop_assert_eq!(s.as_str(), &t[i + "_session_".len()..]);
                    }
                }
            }

            #[test]
            fn peek_reads_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
                if let Some(p) = run(&bytes, false) {
                    // Only a JSON object is read.
                    let v: Value = serde_json::from_slice(&bytes).unwrap();
                    prop_assert!(v.is_object(), "{:?}", v);
                    prop_assert_eq!(p.model.trim(), p.model.as_str());
                }
            }

            #[test]
            fn peek_reads_any_json(v in body(), model_required in any::<bool>()) {
                let bytes = serde_json::to_vec(&v).unwrap();
                let p = run(&bytes, model_required);
                let Value::Object(m) = &v else {
                    prop_assert!(p.is_none(), "a non-object was read: {}", v);
                    return Ok(());
                };
                let model = m.get("model").and_then(Value::as_str).unwrap_or("").trim();
                let want = readable(m) && !(model_required && model.is_empty());
                prop_assert_eq!(p.is_some(), want, "{}", v);
                if let Some(p) = p {
                    prop_assert_eq!(p.model.as_str(), model);
                    prop_assert_eq!(p.stream, m.get("stream") == Some(&Value::Bool(true)));
                    // The same body always names the same session.
                    prop_assert_eq!(&run(&bytes, model_required).unwrap().session, &p.session);
                    let uid = match m.get("metadata") {
                        Some(Value::Object(md)) => md.get("user_id").and_then(Value::as_str),
                        Some(Value::Array(a)) => a.first().and_then(Value::as_str),
                        _ => None,
                    };
                    if let Some(s) = uid.and_then(session_from_user_id) {
                        prop_assert_eq!(p.session, Some(s));
                    } else if let Some(k) = m
                        .get("prompt_cache_key")
                        .and_then(Value::as_str)
                        .filter(|k| !k.is_empty())
                    {
                        prop_assert_eq!(p.session, Some(format!("pck:{k}")));
                    } else if let Some(s) = p.session {
                        prop_assert!(s.starts_with("h:") && s.len() == 34, "{}", s);
                    }
                }
            }

            #[test]
            fn the_key_never_goes_upstream_in_the_query(
                parts in prop::collection::vec(
                    prop_oneof!["key(=[a-z0-9_%]{0,8})?", "[a-z=&%_]{0,10}", any::<String>()],
                    0..6,
                ),
            ) {
                let q = parts.join("&");
                let kept = upstream_query(Some(&q));
                let want: Vec<&str> = q
                    .split('&')
                    .filter(|p| !p.is_empty() && p.split('=').next() != Some("key"))
                    .collect();
                match kept {
                    None => prop_assert!(want.is_empty()),
                    Some(k) => {
                        prop_assert_eq!(k.split('&').collect::<Vec<_>>(), want);
                        prop_assert!(!k.split('&').any(|p| p == "key" || p.starts_with("key=")));
                    }
                }
            }

            #[test]
            fn sessions_are_bounded(s in prop_oneof![any::<String>(), "[a-z]{100,300}"]) {
                let b = bounded_session(s.clone());
                prop_assert!(b.len() <= 128);
                if s.len() <= 128 {
                    prop_assert_eq!(b, s);
                }
            }
        }
    }
}

//! The AWS Bedrock runtime in the mock: `POST /model/{modelId}/invoke` and
//! `/model/{modelId}/invoke-with-response-stream` for Claude models.
//!
//! Requests must carry a valid SigV4 signature (service `bedrock`) made with a secret the mock
//! knows: the built-in [`MOCK_ACCESS_KEY_ID`] / [`MOCK_SECRET_ACCESS_KEY`] pair, or one a test
//! registered with [`register_credentials`]. Bodies are checked as Bedrock does (no `model` or
//! `stream`, `anthropic_version` required). Answers are Anthropic JSON, or Anthropic stream
//! events wrapped base64 in `application/vnd.amazon.eventstream` frames, with the invocation
//! metrics in `message_stop`. Errors are Bedrock's `{"message": ...}` with `x-amzn-errortype`.
//!
//! The usual `mock:` directives apply; two more steer only this API (so a failover test can
//! fail Bedrock and not the account it fails over to): `mock:bedrock_status=N` and
//! `mock:bedrock_exception=NAME` (an exception frame after the first content block starts).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use parking_lot::Mutex;
use salvo::http::{HeaderValue, StatusCode};
use salvo::prelude::*;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::stream::sse_body;
use super::{MockState, directives};
use crate::providers::bedrock::{self as wire, Credentials};

/// Credentials every mock accepts.
pub const MOCK_ACCESS_KEY_ID: &str = "AKIAMOCKBEDROCK00001";
pub const MOCK_SECRET_ACCESS_KEY: &str = "mock/Bedrock+Secret/Key0000000000000000001";

/// A Bedrock API key every mock accepts as `Authorization: Bearer` (long-term keys start with
/// `ABSK`).
pub const MOCK_BEARER_TOKEN: &str = "ABSKbW9ja0JlZHJvY2tBUElLZXkwMDAx";

fn credentials() -> &'static Mutex<HashMap<String, String>> {
    static C: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Make every mock accept `access_key_id` signed with `secret_access_key` (process-wide: use
/// a distinct key id per test).
pub fn register_credentials(access_key_id: &str, secret_access_key: &str) {
    credentials()
        .lock()
        .insert(access_key_id.to_owned(), secret_access_key.to_owned());
}

fn secret_for(access_key_id: &str) -> Option<String> {
    if access_key_id == MOCK_ACCESS_KEY_ID {
        return Some(MOCK_SECRET_ACCESS_KEY.to_owned());
    }
    credentials().lock().get(access_key_id).cloned()
}

pub fn routes(state: &Arc<MockState>) -> Router {
    Router::new()
        .push(Router::with_path("model/{id}/invoke").post(Invoke(state.clone(), false)))
        .push(
            Router::with_path("model/{id}/invoke-with-response-stream")
                .post(Invoke(state.clone(), true)),
        )
}

/// A Bedrock error: `{"message": ...}` with the exception name in `x-amzn-errortype`.
pub(crate) fn bedrock_error(res: &mut Response, status: u16, error_type: &str, message: &str) {
    res.status_code(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    let service = if error_type.ends_with("SignatureException")
        || error_type == "UnrecognizedClientException"
        || error_type == "MissingAuthenticationTokenException"
    {
        "com.amazon.coral.service"
    } else {
        "com.amazon.bedrock"
    };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{error_type}:http://internal.amazon.com/coral/{service}/"
    )) {
        res.headers_mut().insert("x-amzn-errortype", v);
    }
    let _ = res.write_body(json!({"message": message}).to_string());
}

/// Bedrock's exception and message for an error status.
fn status_error(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => (
            "ValidationException",
            "Malformed input request, please reformat your input and try again.",
        ),
        403 => (
            "AccessDeniedException",
            "You don't have access to the model with the specified model ID.",
        ),
        404 => (
            "ResourceNotFoundException",
            "Could not resolve the foundation model from the provided model identifier.",
        ),
        408 => (
            "ModelTimeoutException",
            "Model has timed out in processing the request. Try your request again.",
        ),
        424 => (
            "ModelErrorException",
            "The model encountered an error processing the request.",
        ),
        429 => (
            "ThrottlingException",
            "Too many requests, please wait before trying again.",
        ),
        503 | 529 => (
            "ServiceUnavailableException",
            "Bedrock is unable to process your request.",
        ),
        _ => (
            "InternalServerException",
            "The server encountered an internal error while processing the request.",
        ),
    }
}

/// `mock:NAME=VALUE` for the Bedrock-only directives.
fn local_directive<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let tag = format!("mock:{name}=");
    let i = text.find(&tag)?;
    let rest = &text[i + tag.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|v| !v.is_empty())
}

pub(crate) fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn plausible_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// Check the SigV4 signature as AWS does; `Err((status, exception, message))` when it fails.
fn verify_signature(req: &Request, body: &[u8]) -> Result<(), (u16, &'static str, String)> {
    let deny = |t: &'static str, m: &str| Err((403, t, m.to_owned()));
    let Some(auth) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    else {
        return deny(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        );
    };
    if let Some(token) = auth.strip_prefix("Bearer ") {
        // A Bedrock API key: no signature to check, the key must be known.
        return if token == MOCK_BEARER_TOKEN || credentials().lock().contains_key(token) {
            Ok(())
        } else {
            deny(
                "UnrecognizedClientException",
                "Invalid API Key format: Must start with pre-defined prefix",
            )
        };
    }
    let Some(p) = wire::parse_authorization(auth) else {
        return deny(
            "IncompleteSignatureException",
            "Authorization header requires 'Credential', 'Signature' and 'SignedHeaders' parameters.",
        );
    };
    if p.service != wire::SIGNING_SERVICE {
        return deny(
            "InvalidSignatureException",
            "Credential should be scoped to correct service: 'bedrock'.",
        );
    }
    if !plausible_region(p.region) {
        return deny(
            "InvalidSignatureException",
            "Credential should be scoped to a valid region.",
        );
    }
    if !p.signed_headers.contains(&"host") || !p.signed_headers.contains(&"x-amz-date") {
        return deny(
            "InvalidSignatureException",
            "'Host' and 'X-Amz-Date' must be signed headers.",
        );
    }
    let amz_date = req
        .headers()
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Ok(t) = chrono::NaiveDateTime::parse_from_str(amz_date, "%Y%m%dT%H%M%SZ") else {
        return deny(
            "IncompleteSignatureException",
            "X-Amz-Date is not a valid date.",
        );
    };
    if !amz_date.starts_with(p.date) {
        return deny(
            "InvalidSignatureException",
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP.",
        );
    }
    let skew = (chrono::Utc::now().naive_utc() - t).num_seconds().abs();
    if skew > 15 * 60 {
        return deny(
            "InvalidSignatureException",
            &format!("Signature expired: {amz_date} is out of range."),
        );
    }
    let Some(secret) = secret_for(p.access_key_id) else {
        return deny(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        );
    };
    let mut values: Vec<(&str, String)> = Vec::with_capacity(p.signed_headers.len());
    for name in &p.signed_headers {
        let all: Vec<&str> = req
            .headers()
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if all.is_empty() {
            return deny(
                "InvalidSignatureException",
                &format!(
                    "The request signature we calculated does not match the signature you provided: signed header {name} is missing."
                ),
            );
        }
        values.push((name, all.join(",")));
    }
    let headers: Vec<(&str, &str)> = values.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut query: Vec<&str> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|q| !q.is_empty())
        .collect();
    query.sort_unstable();
    let (creq, _) = wire::canonical_request(
        req.method().as_str(),
        req.uri().path(),
        &query.join("&"),
        &headers,
        &hex::encode(Sha256::digest(body)),
    );
    let creds = Credentials {
        access_key_id: p.access_key_id,
        secret_access_key: &secret,
        region: p.region,
        service: p.service,
    };
    if wire::signature(&creds, amz_date, &creq) != p.signature {
        return deny(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        );
    }
    Ok(())
}

/// Bedrock's checks of an Anthropic body.
fn validate_body(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| "Malformed input request: expected a JSON object, please reformat your input and try again.".to_owned())?;
    let serde_json::Value::Object(m) = v else {
        return Err("Malformed input request: expected type: JSONObject, please reformat your input and try again.".into());
    };
    for k in ["model", "stream"] {
        if m.contains_key(k) {
            return Err(format!(
                "Malformed input request: #: extraneous key [{k}] is not permitted, please reformat your input and try again."
            ));
        }
    }
    for k in ["anthropic_version", "max_tokens", "messages"] {
        if !m.contains_key(k) {
            return Err(format!(
                "Malformed input request: #: required key [{k}] not found, please reformat your input and try again."
            ));
        }
    }
    if m.get("anthropic_version").and_then(|v| v.as_str()) != Some(wire::BEDROCK_ANTHROPIC_VERSION)
    {
        return Err("Invalid API version: anthropic_version must be bedrock-2023-05-31".into());
    }
    if let Some(b) = m.get("anthropic_beta")
        && !b
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x.is_string()))
    {
        return Err("Malformed input request: #/anthropic_beta: expected type: JSONArray, please reformat your input and try again.".into());
    }
    Ok(m)
}

struct Invoke(Arc<MockState>, bool);

#[salvo::async_trait]
impl Handler for Invoke {
    async fn handle(
        &self,
        req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        let (state, stream) = (&self.0, self.1);
        let body = req
            .payload_with_max_size(256 * 1024 * 1024)
            .await
            .cloned()
            .unwrap_or_default();
        let rid = uuid::Uuid::new_v4().to_string();
        res.headers_mut().insert(
            "x-amzn-requestid",
            HeaderValue::from_str(&rid).expect("ascii"),
        );
        super::record(state, req, &body);
        if let Err((status, t, msg)) = verify_signature(req, &body) {
            return bedrock_error(res, status, t, &msg);
        }
        let raw_id = req
            .uri()
            .path()
            .strip_prefix("/model/")
            .and_then(|r| r.split_once('/'))
            .map_or("", |(id, _)| id);
        let model_id = percent_decode(raw_id);
        let Some(model) = wire::anthropic_model_name(&model_id).map(str::to_owned) else {
            return bedrock_error(
                res,
                400,
                "ValidationException",
                "The provided model identifier is invalid.",
            );
        };
        if let Err(msg) = validate_body(&body) {
            return bedrock_error(res, 400, "ValidationException", &msg);
        }
        let text = String::from_utf8_lossy(&body);
        let d = directives(&body);
        let status = local_directive(&text, "bedrock_status")
            .and_then(|s| s.parse().ok())
            .or(d.status);
        if let Some(s) = status.filter(|s: &u16| *s >= 400) {
            let (t, msg) = status_error(s);
            return bedrock_error(res, s, t, msg);
        }
        let exception = local_directive(&text, "bedrock_exception").map(str::to_owned);
        let usage = d.usage_or_size(&body);
        let reply = "Hello from the mock Bedrock.";
        let msg_id = format!("msg_bdrk_{}", &rid[..8]);
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
            })
        };
        if !stream {
            state.served.lock().push(usage);
            for (name, v) in [
                ("x-amzn-bedrock-input-token-count", usage.input_tokens),
                ("x-amzn-bedrock-output-token-count", usage.output_tokens),
                (
                    "x-amzn-bedrock-cache-read-input-token-count",
                    usage.cache_read_tokens,
                ),
                (
                    "x-amzn-bedrock-cache-write-input-token-count",
                    usage.cache_create_tokens,
                ),
            ] {
                res.headers_mut().insert(name, HeaderValue::from(v));
            }
            res.headers_mut().insert(
                "x-amzn-bedrock-invocation-latency",
                HeaderValue::from_static("321"),
            );
            res.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            let body = json!({
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": reply}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": usage_json(usage.output_tokens),
            });
            let _ = res.write_body(body.to_string());
            return;
        }
        let chunks = d.chunks.unwrap_or(4).max(1);
        let mut frames: Vec<Bytes> = Vec::with_capacity(chunks + 6);
        let mut ev = |e: serde_json::Value| {
            frames.push(Bytes::from(wire::chunk_frame(e.to_string().as_bytes())))
        };
        ev(json!({"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": usage_json(1)}}));
        ev(
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        );
        if let Some(name) = exception {
            let msg = if exception_kind_is_throttling(&name) {
                "Too many requests, please wait before trying again."
            } else {
                "The model encountered an error while streaming."
            };
            frames.push(Bytes::from(wire::exception_frame(&name, msg)));
            return sse_body(state, res, frames, &d, wire::EVENT_STREAM_CONTENT_TYPE);
        }
        for i in 0..chunks {
            let piece = if i == 0 {
                reply.to_owned()
            } else {
                format!(" {i}")
            };
            ev(
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
            );
        }
        ev(json!({"type": "content_block_stop", "index": 0}));
        ev(
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                  "usage": {"output_tokens": usage.output_tokens}}),
        );
        ev(
            json!({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
            "inputTokenCount": usage.input_tokens, "outputTokenCount": usage.output_tokens,
            "invocationLatency": 321, "firstByteLatency": 123,
            "cacheReadInputTokenCount": usage.cache_read_tokens,
            "cacheWriteInputTokenCount": usage.cache_create_tokens}}),
        );
        if !d.cut {
            state.served.lock().push(usage);
        }
        res.headers_mut().insert(
            "x-amzn-bedrock-content-type",
            HeaderValue::from_static("application/json"),
        );
        sse_body(state, res, frames, &d, wire::EVENT_STREAM_CONTENT_TYPE);
    }
}

fn exception_kind_is_throttling(name: &str) -> bool {
    wire::exception_kind(name) == "rate_limit_error"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(
            percent_decode("us.anthropic.x-v1%3A0"),
            "us.anthropic.x-v1:0"
        );
        assert_eq!(percent_decode("a%2Fb%zz%4"), "a/b%zz%4");
        assert!(plausible_region("us-east-1") && plausible_region("us-gov-west-1"));
        assert!(
            !plausible_region("local")
                && !plausible_region("US-east-1")
                && !plausible_region("us-east-x")
        );
        assert_eq!(
            local_directive("x mock:bedrock_status=429 y", "bedrock_status"),
            Some("429")
        );
        assert_eq!(local_directive("mock:status=429", "bedrock_status"), None);
        assert!(
            validate_body(
                br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":1,"messages":[]}"#
            )
            .is_ok()
        );
        assert!(validate_body(br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":1,"messages":[],"model":"m"}"#)
            .unwrap_err()
            .contains("extraneous key [model]"));
        assert!(validate_body(br#"{"max_tokens":1,"messages":[]}"#).is_err());
    }
}

//! `POST …/v1/messages` and `…/v1/messages/count_tokens`: the Anthropic Messages relay.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use salvo::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use salvo::prelude::*;
use serde::Deserialize;

use super::stream::{StreamOutcome, pump};
use super::{Outcome, record_failure, record_usage};
use crate::auth::{AuthError, authenticate};
use crate::limits::{Admission, Ask, ClientFormat, Rejection, Service, admit_key};
use crate::providers::anthropic;
use crate::scheduler::{self, Pick};
use crate::state::AppState;
use crate::web::{BodyError, raw_json, read_body, state};

/// Client headers that belong upstream. Everything else (cookies, forwarding headers, the
/// client's own key, accept-encoding) stays here.
const FORWARD_HEADERS: &[&str] = &[
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

const DEFAULT_USER_AGENT: &str = concat!("crs/", env!("CARGO_PKG_VERSION"));

/// What policy and scheduling need from the body, read without re-serialising it.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default)]
    stream: bool,
}

/// An admitted request, its body and what was peeked from it.
struct Ingress {
    adm: Admission,
    body: Bytes,
    model: String,
    stream: bool,
}

fn anthropic_error(res: &mut Response, status: StatusCode, kind: &str, message: &str) {
    raw_json(res, status, anthropic::error_body(kind, message));
}

/// Authorize and read the request: key, body, model, then the key's rules. Writes the error
/// response on failure.
async fn ingress(
    st: &Arc<AppState>,
    req: &mut Request,
    res: &mut Response,
    metered: bool,
) -> Option<Ingress> {
    // 401 before anything else, so unauthenticated callers learn nothing about bodies.
    let entry = match authenticate(st, req) {
        Ok(k) => k,
        Err(e) => {
            if e != AuthError::Missing {
                tracing::debug!(reason = ?e, "client key rejected");
            }
            Rejection::Auth(e).write(ClientFormat::Anthropic, res);
            return None;
        }
    };
    let body = match read_body(req, st.config.max_body_bytes).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            anthropic_error(
                res,
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                &format!(
                    "Request exceeds the maximum size of {} bytes",
                    st.config.max_body_bytes
                ),
            );
            return None;
        }
        Err(BodyError::Read(e)) => {
            anthropic_error(res, StatusCode::BAD_REQUEST, "invalid_request_error", &e);
            return None;
        }
    };
    let (model, stream) = match serde_json::from_slice::<Peek>(&body) {
        Ok(Peek {
            model: Some(m),
            stream,
        }) if !m.trim().is_empty() => (m.into_owned(), stream),
        Ok(_) => {
            anthropic_error(
                res,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "model: Field required",
            );
            return None;
        }
        Err(e) => {
            anthropic_error(
                res,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("Request body must be a JSON object: {e}"),
            );
            return None;
        }
    };
    let ask = Ask {
        service: Service::Claude,
        model: Some(&model),
        metered,
    };
    match admit_key(st, entry, req, ask).await {
        Ok(adm) => Some(Ingress {
            adm,
            body,
            model,
            stream,
        }),
        Err(r) => {
            tracing::info!(
                status = r.status().as_u16(),
                "request refused by key policy"
            );
            r.write(ClientFormat::Anthropic, res);
            None
        }
    }
}

/// Replace the body's model when the account maps it to another name. Only then is the body
/// re-serialised; otherwise the client's bytes go upstream as they came.
fn with_model(body: Bytes, requested: &str, upstream: &str) -> Bytes {
    if requested == upstream {
        return body;
    }
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body) {
        Ok(mut m) => {
            m.insert(
                "model".into(),
                serde_json::Value::String(upstream.to_owned()),
            );
            serde_json::to_vec(&m).map(Bytes::from).unwrap_or(body)
        }
        Err(_) => body,
    }
}

fn upstream_headers(req: &Request, pick: &Pick) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(FORWARD_HEADERS.len() + 4);
    for name in FORWARD_HEADERS {
        if let Some(v) = req.headers().get(*name) {
            h.insert(HeaderName::from_static(name), v.clone());
        }
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "anthropic-version",
        req.headers()
            .get("anthropic-version")
            .cloned()
            .unwrap_or(HeaderValue::from_static(anthropic::DEFAULT_VERSION)),
    );
    // Account user agent > client user agent > crs default.
    let ua = if !pick.account.rec.user_agent.is_empty() {
        HeaderValue::from_str(&pick.account.rec.user_agent).ok()
    } else {
        req.headers().get(header::USER_AGENT).cloned()
    };
    h.insert(
        header::USER_AGENT,
        ua.unwrap_or(HeaderValue::from_static(DEFAULT_USER_AGENT)),
    );
    // The account's credential replaces the client's key, which never leaves crs.
    let secret = &pick.account.secret.0;
    if secret.starts_with("sk-ant-") {
        if let Ok(v) = HeaderValue::from_str(secret) {
            h.insert("x-api-key", v);
        }
    } else if let Ok(v) = HeaderValue::from_str(&format!("Bearer {secret}")) {
        h.insert(header::AUTHORIZATION, v);
    }
    h
}

/// Upstream response headers worth passing back to the client.
fn copy_response_headers(from: &reqwest::header::HeaderMap, res: &mut Response) {
    for (name, value) in from {
        let n = name.as_str();
        if n == "content-type"
            || n == "request-id"
            || n == "x-request-id"
            || n == "retry-after"
            || n == "x-should-retry"
            || n.starts_with("anthropic-ratelimit-")
            || n == "anthropic-organization-id"
        {
            res.headers_mut().append(name.clone(), value.clone());
        }
    }
}

fn no_account(res: &mut Response, e: scheduler::NoAccount) {
    tracing::warn!(reason = %e.message(), "no upstream account available");
    anthropic_error(
        res,
        StatusCode::SERVICE_UNAVAILABLE,
        "overloaded_error",
        &e.message(),
    );
}

/// Send the request upstream; map transport failures to Anthropic-format 502/504 replies.
async fn send(
    st: &AppState,
    pick: &Pick,
    url: String,
    headers: HeaderMap,
    body: Bytes,
    res: &mut Response,
) -> Option<reqwest::Response> {
    let rb = pick.account.client.post(url).headers(headers).body(body);
    match tokio::time::timeout(st.config.upstream_timeout, rb.send()).await {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) => {
            let kind = if e.is_connect() { "connect" } else { "request" };
            tracing::warn!(account_id = %pick.account.rec.id, error = %e, kind, "upstream request failed");
            anthropic_error(
                res,
                StatusCode::BAD_GATEWAY,
                "api_error",
                &format!(
                    "Upstream {kind} error for account {}",
                    pick.account.rec.name
                ),
            );
            None
        }
        Err(_) => {
            tracing::warn!(account_id = %pick.account.rec.id, "upstream timed out before responding");
            anthropic_error(
                res,
                StatusCode::GATEWAY_TIMEOUT,
                "api_error",
                "Upstream timeout",
            );
            None
        }
    }
}

/// Relay an upstream error to the client: Anthropic error bodies pass as they are; anything
/// else is wrapped in one.
async fn relay_error(up: reqwest::Response, res: &mut Response) {
    let status = StatusCode::from_u16(up.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let headers = up.headers().clone();
    let body = up.bytes().await.unwrap_or_default();
    copy_response_headers(&headers, res);
    let is_anthropic_error = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .is_some_and(|v| v.get("error").is_some_and(|e| e.is_object()));
    if is_anthropic_error {
        raw_json(res, status, body);
    } else {
        let text = String::from_utf8_lossy(&body);
        let snippet: String = text.chars().take(300).collect();
        let kind = match status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            400..=499 => "invalid_request_error",
            _ => "api_error",
        };
        anthropic_error(
            res,
            status,
            kind,
            &format!("Upstream returned {}: {}", status.as_u16(), snippet.trim()),
        );
    }
}

#[handler]
pub async fn messages(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let started = std::time::Instant::now();
    let Some(Ingress {
        adm,
        body,
        model,
        stream: wants_stream,
    }) = ingress(&st, req, res, true).await
    else {
        return;
    };
    let key = adm.key.clone();
    let pick = match scheduler::pick(&st, &key.rec, &model, &[]) {
        Ok(p) => p,
        Err(e) => return no_account(res, e),
    };
    let body = with_model(body, &model, &pick.upstream_model);
    let mut url = pick.account.messages_url.clone();
    if let Some(q) = req.uri().query() {
        url.push('?');
        url.push_str(q);
    }
    let headers = upstream_headers(req, &pick);
    let outcome = |status: u16| Outcome {
        status,
        started,
        stream: wants_stream,
    };
    let Some(up) = send(&st, &pick, url, headers, body, res).await else {
        let status = res.status_code.map(|s| s.as_u16()).unwrap_or(502);
        record_failure(
            &st,
            &key,
            &pick.account.rec.id,
            pick.upstream_model.clone(),
            outcome(status),
        );
        return;
    };
    let status = up.status();
    tracing::debug!(
        key_id = %key.rec.id,
        account_id = %pick.account.rec.id,
        model = %pick.upstream_model,
        status = status.as_u16(),
        ttfb_ms = started.elapsed().as_millis() as u64,
        "upstream answered"
    );
    if !status.is_success() {
        tracing::info!(key_id = %key.rec.id, account_id = %pick.account.rec.id, status = status.as_u16(), "upstream error relayed");
        record_failure(
            &st,
            &key,
            &pick.account.rec.id,
            pick.upstream_model.clone(),
            outcome(status.as_u16()),
        );
        return relay_error(up, res).await;
    }

    let account_id = pick.account.rec.id.clone();
    let upstream_model = pick.upstream_model.clone();
    let is_sse = up
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    res.status_code(StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::OK));
    copy_response_headers(up.headers(), res);

    if is_sse {
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        res.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        let st2 = st.clone();
        // The admission (and its concurrency slot) lives until the stream is over.
        let oc = outcome(status.as_u16());
        let stream = pump(up, st.config.upstream_timeout, move |out: StreamOutcome| {
            record_stream(&st2, &adm, account_id, upstream_model, out, oc);
        });
        res.stream(stream);
    } else {
        let body = match tokio::time::timeout(st.config.upstream_timeout, up.bytes()).await {
            Ok(Ok(b)) => b,
            _ => {
                tracing::warn!(account_id = %pick.account.rec.id, "upstream body failed after headers");
                record_failure(&st, &key, &account_id, upstream_model, outcome(502));
                res.headers_mut().clear();
                return anthropic_error(
                    res,
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    "Upstream response was cut off",
                );
            }
        };
        match anthropic::usage_from_body(&body) {
            Some((usage, model)) => {
                let model = model.filter(|m| !m.is_empty()).unwrap_or(upstream_model);
                let oc = Outcome {
                    stream: false,
                    ..outcome(status.as_u16())
                };
                record_usage(
                    &st,
                    &adm.key,
                    Service::Claude,
                    &account_id,
                    model,
                    usage,
                    oc,
                );
            }
            None => {
                tracing::warn!(account_id = %pick.account.rec.id, "upstream success body carried no usage")
            }
        }
        let _ = res.write_body(body);
    }
}

fn record_stream(
    st: &AppState,
    adm: &Admission,
    account_id: String,
    model: String,
    out: StreamOutcome,
    outcome: Outcome,
) {
    let key_id = &adm.key.rec.id;
    if let Some(e) = &out.upstream_error {
        tracing::warn!(key_id = %key_id, account_id = %account_id, error = %e, "upstream stream ended early");
    }
    if out.client_gone && !out.tap.finished {
        tracing::info!(key_id = %key_id, account_id = %account_id, "client disconnected mid-stream; upstream cancelled");
    }
    let outcome = Outcome {
        stream: true,
        ..outcome
    };
    if !out.tap.started {
        record_failure(
            st,
            &adm.key,
            &account_id,
            model,
            Outcome {
                status: 502,
                ..outcome
            },
        );
        return;
    }
    let model = out.tap.model.filter(|m| !m.is_empty()).unwrap_or(model);
    record_usage(
        st,
        &adm.key,
        Service::Claude,
        &account_id,
        model,
        out.tap.usage,
        outcome,
    );
}

#[handler]
pub async fn count_tokens(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(Ingress {
        adm, body, model, ..
    }) = ingress(&st, req, res, false).await
    else {
        return;
    };
    let pick = match scheduler::pick(&st, &adm.key.rec, &model, &[]) {
        Ok(p) => p,
        Err(e) => return no_account(res, e),
    };
    let body = with_model(body, &model, &pick.upstream_model);
    let url = format!("{}/count_tokens", pick.account.messages_url);
    let headers = upstream_headers(req, &pick);
    let Some(up) = send(&st, &pick, url, headers, body, res).await else {
        return;
    };
    if !up.status().is_success() {
        return relay_error(up, res).await;
    }
    let status = StatusCode::from_u16(up.status().as_u16()).unwrap_or(StatusCode::OK);
    copy_response_headers(up.headers(), res);
    match up.bytes().await {
        Ok(b) => {
            res.status_code(status);
            let _ = res.write_body(b);
        }
        Err(_) => {
            res.headers_mut().clear();
            anthropic_error(
                res,
                StatusCode::BAD_GATEWAY,
                "api_error",
                "Upstream response was cut off",
            )
        }
    }
}

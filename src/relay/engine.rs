//! The shared relay engine: schedule -> forward -> (fail over) -> respond -> account, for every
//! route and wire format. Routes do ingress and admission, then hand a `Call` to `run`.
//!
//! Failover: a 429, 529, 5xx, 401/403, connection error or timeout before anything reached the
//! client is retried on another account (the failed ones excluded), up to `max_attempts`;
//! the client never sees it unless every attempt fails. The failed account cools down
//! (`accounts::cooldown`). After the first byte, a failure ends the stream with a well-formed
//! error event in the client's dialect.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use salvo::http::{HeaderMap, HeaderValue, StatusCode, header};
use salvo::prelude::*;

use super::stream::{StreamOutcome, pump};
use super::{Outcome, record_failure, record_usage};
use crate::accounts::AccountRt;
use crate::accounts::cooldown::{self, Effect, Verdict};
use crate::accounts::{key_pool, upstream_request_keyed};
use crate::convert::Conversion;
use crate::limits::{Admission, Service};
use crate::model::{Binding, Platform};
use crate::providers::ClientFormat;
use crate::providers::http::LaneTicket;
use crate::providers::{self, Op, Outgoing};
use crate::scheduler::{self, Pick, Want};
use crate::state::AppState;
use crate::web::raw_json;

/// Everything the engine needs about one admitted request.
pub struct Call {
    pub adm: Admission,
    pub service: Service,
    pub format: ClientFormat,
    pub op: Op,
    pub platforms: &'static [Platform],
    /// The key's binding for this service.
    pub binding: Binding,
    pub session: Option<String>,
    pub model: String,
    pub body: Bytes,
    pub stream: bool,
    pub client_headers: HeaderMap,
    pub query: Option<String>,
    pub started: Instant,
    /// The client speaks another format than the upstream: convert the answer back.
    pub convert: Option<crate::convert::Conversion>,
}

/// A Claude request converted for an OpenAI Responses account whose model mapping left it a
/// Claude name runs on the configured GPT model (`gpt_model_for_haiku` for Haiku, Claude
/// Code's small background model; `gpt_model_for_claude` otherwise).
fn gpt_model(config: &crate::config::Config, call: &Call, upstream: &str) -> Option<String> {
    let Some(crate::convert::Conversion::Messages(m)) = &call.convert else {
        return None;
    };
    if m.target != crate::convert::messages::Target::Responses
        || !crate::limits::models::is_claude(upstream)
    {
        return None;
    }
    Some(if upstream.to_ascii_lowercase().contains("haiku") {
        config.gpt_model_for_haiku.clone()
    } else {
        config.gpt_model_for_claude.clone()
    })
}

/// Largest upstream error body read (the rest is dropped).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// An upstream failure kept in case every attempt fails.
struct Failure {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Bytes,
    /// The upstream's own wire format (to decide whether the body can pass through as is).
    upstream_format: Option<ClientFormat>,
}

impl Failure {
    /// A failure crs itself records for an attempt (no upstream answer to pass on).
    fn local(status: u16, body: impl Into<Bytes>) -> Self {
        Failure {
            status,
            headers: Default::default(),
            body: body.into(),
            upstream_format: None,
        }
    }
}

pub fn error_body(format: ClientFormat, status: u16, kind: &str, message: &str) -> String {
    providers::error_body(format, status, kind, message)
}

pub fn write_error(
    res: &mut Response,
    format: ClientFormat,
    status: StatusCode,
    kind: &str,
    message: &str,
) {
    raw_json(
        res,
        status,
        error_body(format, status.as_u16(), kind, message),
    );
}

/// Apply a verdict to the account that failed.
fn apply(st: &Arc<AppState>, acc: &AccountRt, upstream_model: &str, v: &Verdict) {
    if acc.rec.disable_auto_protection {
        return;
    }
    match &v.effect {
        Effect::None => {}
        Effect::Account {
            until_ms,
            reason,
            transient,
        } => {
            tracing::warn!(account_id = %acc.rec.id, account = %acc.rec.name, reason = %reason, "account cooling down");
            acc.rt.cool_down(*until_ms, reason, *transient);
        }
        Effect::Model { until_ms, reason } => {
            tracing::warn!(account_id = %acc.rec.id, model = %upstream_model, reason = %reason, "model cooling down on account");
            acc.rt.cool_model(upstream_model, *until_ms);
        }
        Effect::Family {
            family,
            until_ms,
            reason,
        } => {
            tracing::warn!(account_id = %acc.rec.id, account = %acc.rec.name, family = family.as_str(), reason = %reason, "model family parked on account");
            acc.rt.cool_model(family.cooldown_key(), *until_ms);
        }
        Effect::NeedsAttention { status, reason } => {
            tracing::error!(account_id = %acc.rec.id, account = %acc.rec.name, reason = %reason, "account needs attention; taken out of rotation");
            // Out of rotation at once; the status change is persisted off the request path.
            acc.rt
                .cool_down(Utc::now().timestamp_millis() + 3_600_000, reason, false);
            st.accounts
                .mark_status(acc.rec.id.clone(), status.clone(), reason.clone());
        }
    }
}

fn relay_failure(res: &mut Response, format: ClientFormat, f: Failure) {
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_GATEWAY);
    copy_response_headers(&f.headers, res);
    // The upstream's own error body passes through when it speaks the client's format.
    if f.upstream_format == Some(format) && providers::is_error_body(format, &f.body) {
        raw_json(res, status, f.body);
        return;
    }
    let text = String::from_utf8_lossy(&f.body[..f.body.len().min(300)])
        .trim()
        .to_owned();
    let msg = providers::error_message(&f.body).unwrap_or(text);
    let kind = providers::error_kind(f.status);
    write_error(
        res,
        format,
        status,
        kind,
        &format!("Upstream returned {}: {}", f.status, msg),
    );
}

/// Serve `call` into `res`. The work runs on a task of its own, so a client that hangs up
/// cannot cut it short once an upstream has the request: a non-stream answer is still read and
/// billed, and a stream's pump records the usage of what arrived (and cancels the upstream).
pub async fn run(st: Arc<AppState>, mut call: Call, res: &mut Response) {
    let format = call.format;
    if !call.adm.key.rec.allow_1m_context
        && crate::limits::strip_long_context(&mut call.client_headers)
    {
        tracing::debug!(key_id = %call.adm.key.rec.id, "1M-context beta removed: the key does not allow it");
    }
    let work = Finish::new(async move {
        let mut out = Response::new();
        serve(st, call, &mut out).await;
        out
    });
    match work.await {
        Some(mut out) => {
            if let Some(status) = out.status_code {
                res.status_code(status);
            }
            let mut last = None;
            for (name, value) in std::mem::take(&mut out.headers) {
                // `None`: another value of the previous name.
                if let Some(n) = name.or(last.take()) {
                    res.headers_mut().append(n.clone(), value);
                    last = Some(n);
                }
            }
            res.replace_body(out.take_body());
        }
        None => {
            tracing::error!("the relay work panicked");
            write_error(
                res,
                format,
                StatusCode::BAD_GATEWAY,
                "api_error",
                "The relay failed while serving this request",
            );
        }
    }
}

/// Runs the relay work in the client's own task (no task and wake-up of its own a request),
/// and finishes it on a task of its own when the client's task drops it early (the client hung
/// up): whatever an upstream was asked is still read, billed and released. A panic in the work
/// is caught and reported as `None`.
struct Finish<T: Send + 'static> {
    work: Option<std::pin::Pin<Box<dyn Future<Output = T> + Send>>>,
}

impl<T: Send + 'static> Finish<T> {
    fn new(work: impl Future<Output = T> + Send + 'static) -> Self {
        Finish {
            work: Some(Box::pin(work)),
        }
    }
}

impl<T: Send + 'static> Future for Finish<T> {
    type Output = Option<T>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        use std::panic::{AssertUnwindSafe, catch_unwind};
        use std::task::Poll;
        let Some(work) = self.work.as_mut() else {
            return Poll::Ready(None);
        };
        // The work is dropped after a panic, never polled again.
        match catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => {
                self.work = None;
                Poll::Ready(Some(out))
            }
            Err(_) => {
                self.work = None;
                Poll::Ready(None)
            }
        }
    }
}

impl<T: Send + 'static> Drop for Finish<T> {
    fn drop(&mut self) {
        if let Some(work) = self.work.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            // A panic there ends only that task (the runtime catches it).
            rt.spawn(async move {
                work.await;
            });
        }
    }
}

async fn serve(st: Arc<AppState>, call: Call, res: &mut Response) {
    let mut exclude: Vec<String> = Vec::new();
    // Accounts whose OAuth token was refreshed after a 401 during this request.
    let mut refreshed: Vec<String> = Vec::new();
    let mut last: Option<Failure> = None;
    let max = st.config.max_attempts.max(1);
    let key = call.adm.key.clone();
    for attempt in 0..max {
        let want = Want {
            platforms: call.platforms,
            model: &call.model,
            binding: &call.binding,
            session: call.session.as_deref(),
            exclude: &exclude,
        };
        let picked = {
            let pool = st.accounts.load();
            let inputs = scheduler::Inputs {
                pool: &pool,
                sticky: &st.sticky,
                rr: &st.rr,
                offset: st.clock.offset(),
                window_threshold_percent: st.config.window_threshold_percent,
            };
            scheduler::pick(&inputs, &want)
        };
        let mut pick = match picked {
            Ok(p) => p,
            Err(e) => {
                match last {
                    Some(f) => relay_failure(res, call.format, f),
                    None => {
                        tracing::warn!(key_id = %key.rec.id, reason = %e.message(), "no upstream account available");
                        write_error(
                            res,
                            call.format,
                            StatusCode::SERVICE_UNAVAILABLE,
                            "overloaded_error",
                            &e.message(),
                        );
                    }
                }
                return;
            }
        };
        if let Some(m) = gpt_model(&st.config, &call, &pick.upstream_model) {
            pick.upstream_model = m;
        }
        let acc = pick.account.clone();
        let outcome = |status: u16| Outcome {
            status,
            started: call.started,
            stream: call.stream,
        };
        let built = match build_request(&st, &acc, &call, &pick.upstream_model).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(account_id = %acc.rec.id, error = %e, "building the upstream request failed");
                exclude.push(acc.rec.id.clone());
                last = Some(Failure::local(
                    502,
                    format!("account {} could not be used: {e}", acc.rec.name),
                ));
                continue;
            }
        };
        let (rb, pool_key, lane) = (built.request, built.pool_key, built.lane);
        let sent = tokio::time::timeout(st.config.upstream_timeout, lane.send(rb)).await;
        let now_ms = Utc::now().timestamp_millis();
        let up = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                let what = if e.connect { "connect" } else { "request" };
                // With its causes: the client's own text says only that sending failed, the
                // cause says why (refused, DNS, a certificate not trusted).
                let error = format!("{:#}", e.error);
                tracing::warn!(account_id = %acc.rec.id, %error, attempt, "upstream {what} error");
                apply(
                    &st,
                    &acc,
                    &pick.upstream_model,
                    &cooldown::judge_transport(now_ms, &format!("upstream {what} error")),
                );
                record_failure(
                    &st,
                    &key,
                    &acc.rec.id,
                    pick.upstream_model.clone(),
                    outcome(502),
                );
                exclude.push(acc.rec.id.clone());
                last = Some(Failure::local(
                    502,
                    format!("Upstream {what} error for account {}", acc.rec.name),
                ));
                continue;
            }
            Err(_) => {
                tracing::warn!(account_id = %acc.rec.id, attempt, "upstream timed out before responding");
                apply(
                    &st,
                    &acc,
                    &pick.upstream_model,
                    &cooldown::judge_transport(now_ms, "upstream timeout"),
                );
                record_failure(
                    &st,
                    &key,
                    &acc.rec.id,
                    pick.upstream_model.clone(),
                    outcome(504),
                );
                exclude.push(acc.rec.id.clone());
                last = Some(Failure::local(504, "Upstream timeout"));
                continue;
            }
        };
        acc.client.answered_over(up.version());
        let status = up.status().as_u16();
        if let Some(kid) = &pool_key
            && key_pool::fatal(status)
        {
            // A Droid pool key the upstream refuses leaves the pool; the next attempt takes
            // another key of the same account while it has one.
            drop(up);
            record_failure(
                &st,
                &key,
                &acc.rec.id,
                pick.upstream_model.clone(),
                outcome(status),
            );
            let left = key_pool::reject(&st.accounts, &acc, kid, status).await;
            if left == 0 {
                exclude.push(acc.rec.id.clone());
            }
            last = Some(Failure::local(
                status,
                format!("account {} refused its API key ({status})", acc.rec.name),
            ));
            continue;
        }
        if status == 401
            && acc.kind().oauth()
            && !acc.rec.refresh_token.is_empty()
            && !refreshed.contains(&acc.rec.id)
        {
            // An OAuth access token can be revoked before its expiry (a new login elsewhere):
            // refresh once and try the same account again before judging it.
            refreshed.push(acc.rec.id.clone());
            drop(up);
            if crate::accounts::oauth::refresh_now(&st.accounts, &acc)
                .await
                .is_ok()
            {
                tracing::info!(account_id = %acc.rec.id, "upstream refused the OAuth token; refreshed it, trying again");
                continue;
            }
            exclude.push(acc.rec.id.clone());
            last = Some(Failure::local(
                401,
                format!(
                    "account {} refused its OAuth token and the token could not be refreshed",
                    acc.rec.name
                ),
            ));
            continue;
        }
        if !(200..300).contains(&status) {
            let headers = up.headers().clone();
            if acc.kind().oauth() {
                // A refusal carries the windows too (Codex's 429 shows the spent one).
                update_windows(&acc, &headers, now_ms);
            }
            let body = read_capped(up).await;
            let cx = cooldown::Context {
                model: &pick.upstream_model,
                now_ms,
                fallback_mins: acc.rec.rate_limit_duration,
                throttle_secs: st.config.throttle_secs,
                background: call
                    .client_headers
                    .get("x-app")
                    .is_some_and(|v| v.as_bytes() == b"cli-bg"),
            };
            let v = cooldown::judge_status(status, &headers, &body, &cx);
            tracing::info!(key_id = %key.rec.id, account_id = %acc.rec.id, status, retry = v.retry, attempt, "upstream error");
            apply(&st, &acc, &pick.upstream_model, &v);
            record_failure(
                &st,
                &key,
                &acc.rec.id,
                pick.upstream_model.clone(),
                outcome(status),
            );
            let f = Failure {
                status,
                headers,
                body,
                upstream_format: acc.kind().upstream_format(call.op),
            };
            if v.retry && attempt + 1 < max {
                exclude.push(acc.rec.id.clone());
                last = Some(f);
                continue;
            }
            relay_failure(res, call.format, f);
            return;
        }
        acc.rt
            .last_used_ms
            .store(now_ms, std::sync::atomic::Ordering::Relaxed);
        if acc.kind().oauth() {
            observe_windows(&acc, up.headers(), now_ms);
        }
        respond(st, call, pick, (up, lane), res).await;
        return;
    }
    match last {
        Some(f) => relay_failure(res, call.format, f),
        None => write_error(
            res,
            call.format,
            StatusCode::BAD_GATEWAY,
            "api_error",
            "No upstream answered",
        ),
    }
}

/// A subscription answer's usage headers: the account's windows move with them, and an
/// account set to stop on warnings (v1's `autoStopOnWarning`) leaves rotation until its
/// 5-hour window resets.
fn observe_windows(acc: &AccountRt, h: &reqwest::header::HeaderMap, now_ms: i64) {
    update_windows(acc, h, now_ms);
    if acc.rec.auto_stop_on_warning() && !acc.rec.disable_auto_protection {
        let u = cooldown::Unified::read(h);
        if u.warning() {
            let until = u
                .five_hour_reset()
                .or(u.reset_ms)
                .filter(|t| *t > now_ms)
                .unwrap_or(now_ms + 5 * 3_600_000)
                .min(now_ms + cooldown::MAX_COOLDOWN_MS);
            tracing::warn!(account_id = %acc.rec.id, account = %acc.rec.name, "usage window warning: account stops taking requests until the 5-hour window resets (autoStopOnWarning)");
            acc.rt
                .cool_down(until, "usage window warning (autoStopOnWarning)", false);
        }
    }
}

/// The usage windows an answer's headers report (subscription and ChatGPT accounts).
fn update_windows(acc: &AccountRt, h: &reqwest::header::HeaderMap, now_ms: i64) {
    acc.rt
        .windows
        .update_from_headers(&crate::accounts::windows::from_headers(h, now_ms), now_ms);
}

/// A whole non-stream upstream body, refused past `max` bytes.
async fn read_limited(mut up: reqwest::Response, max: usize) -> Result<Bytes, String> {
    if up.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("declared body over {max} bytes"));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = up.chunk().await.map_err(|e| e.to_string())? {
        if buf.len() + chunk.len() > max {
            return Err(format!("body over {max} bytes"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

async fn read_capped(mut up: reqwest::Response) -> Bytes {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = up.chunk().await {
        let room = MAX_ERROR_BODY.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    Bytes::from(buf)
}

/// A successful upstream answer: stream it through a tap, or read, account and send it.
async fn respond(
    st: Arc<AppState>,
    mut call: Call,
    pick: Pick,
    (up, lane): (reqwest::Response, LaneTicket),
    res: &mut Response,
) {
    if matches!(call.convert, Some(Conversion::Images(_))) {
        return respond_images(st, call, pick, (up, lane), res).await;
    }
    let acc = pick.account.clone();
    let status = up.status().as_u16();
    let is_stream = acc.kind().answer_streams(call.stream, up.headers());
    res.status_code(StatusCode::from_u16(status).unwrap_or(StatusCode::OK));
    copy_response_headers(up.headers(), res);
    let account_id = acc.rec.id.clone();
    let model = pick.upstream_model.clone();
    let outcome = Outcome {
        status,
        started: call.started,
        stream: is_stream,
    };
    if is_stream {
        if let Some(ct) = acc.kind().stream_content_type() {
            res.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        }
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        res.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        let tap = match call.convert.take() {
            Some(conv) => {
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/event-stream"),
                );
                conv.into_tap(Utc::now().timestamp())
            }
            _ => acc.kind().tap(call.op),
        };
        // An upstream that wraps the standard format is unwrapped before the tap sees it.
        let tap = acc.kind().stream_stage(call.op, tap);
        let st2 = st.clone();
        let service = call.service;
        // The admission, the account slot and the lane ticket live until the stream is over;
        // the request body went upstream and is let go now, and with it its room in the budget
        // of bodies held in memory (held to the end, long streams with large bodies would
        // refuse new requests while no body is in memory).
        call.body = Bytes::new();
        let mut adm = call.adm;
        adm.body_budget = None;
        let slot = pick.slot;
        let mut stream = pump(
            up,
            st.config.upstream_timeout,
            tap,
            move |out: StreamOutcome| {
                let _slot = slot;
                let _lane = lane;
                finish_stream(&st2, &adm, service, account_id, model, out, outcome);
            },
        );
        // The events that came with the head leave with it, in one write.
        stream.gather_ready().await;
        res.stream(stream);
        return;
    }
    let body = read_answer(&st, &call, &account_id, &model, outcome, up, res).await;
    drop(lane);
    let Some(body) = body else {
        return;
    };
    let body = acc.kind().standard_body(call.op, body);
    // A stream read whole and answered as its JSON object (a stream-only upstream and a client
    // that asked for no stream) says so.
    let says_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    if !says_json && body.trim_ascii_start().starts_with(b"{") {
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let body = match acc.kind().usage_from_body(call.op, &body) {
        Some((usage, answered_model)) => {
            let model = answered_model.filter(|m| !m.is_empty()).unwrap_or(model);
            record_usage(
                &st,
                &call.adm.key,
                call.service,
                &account_id,
                model,
                usage,
                outcome,
            );
            body
        }
        None => {
            if call.op.has_usage() {
                tracing::warn!(account_id = %account_id, "upstream success body carried no usage");
            }
            body
        }
    };
    drop(pick.slot);
    if let Some(conv) = &call.convert {
        match conv.response(&body, Utc::now().timestamp()) {
            Some(converted) => {
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                let _ = res.write_body(converted);
            }
            None => {
                res.headers_mut().clear();
                write_error(
                    res,
                    call.format,
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    "The upstream answer could not be converted",
                );
            }
        }
        return;
    }
    let _ = res.write_body(body);
}

/// A whole success body, within the upstream timeout and `max_upstream_body_bytes`; when it
/// fails, the attempt is recorded as failed and the client gets a 502.
async fn read_answer(
    st: &AppState,
    call: &Call,
    account_id: &str,
    model: &str,
    outcome: Outcome,
    up: reqwest::Response,
    res: &mut Response,
) -> Option<Bytes> {
    let read = read_limited(up, st.config.max_upstream_body_bytes);
    let failed = match tokio::time::timeout(st.config.upstream_timeout, read).await {
        Ok(Ok(b)) => return Some(b),
        Ok(Err(e)) => e,
        Err(_) => "timed out".into(),
    };
    tracing::warn!(account_id = %account_id, reason = %failed, "upstream body failed after headers");
    record_failure(
        st,
        &call.adm.key,
        account_id,
        model.to_owned(),
        Outcome {
            status: 502,
            ..outcome
        },
    );
    res.headers_mut().clear();
    write_error(
        res,
        call.format,
        StatusCode::BAD_GATEWAY,
        "api_error",
        "Upstream response was cut off",
    );
    None
}

/// The images bridge's answer: the Codex stream read whole, its usage recorded, and the
/// images sent as one Images API answer (`convert::images`).
async fn respond_images(
    st: Arc<AppState>,
    call: Call,
    pick: Pick,
    (up, lane): (reqwest::Response, LaneTicket),
    res: &mut Response,
) {
    let account_id = pick.account.rec.id.clone();
    let outcome = Outcome {
        status: up.status().as_u16(),
        started: call.started,
        stream: false,
    };
    let Some(body) = read_answer(
        &st,
        &call,
        &account_id,
        &pick.upstream_model,
        outcome,
        up,
        res,
    )
    .await
    else {
        return;
    };
    drop(lane);
    drop(pick.slot);
    let (answer, usage, model) = crate::convert::images::answer(&body, Utc::now().timestamp());
    let model = model
        .filter(|m| !m.is_empty())
        .unwrap_or(pick.upstream_model);
    record_usage(
        &st,
        &call.adm.key,
        call.service,
        &account_id,
        model,
        usage,
        outcome,
    );
    match answer {
        Some(json) => {
            res.status_code(StatusCode::OK);
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let _ = res.write_body(json);
        }
        None => write_error(
            res,
            call.format,
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            "no image produced by upstream",
        ),
    }
}

fn finish_stream(
    st: &AppState,
    adm: &Admission,
    service: Service,
    account_id: String,
    model: String,
    out: StreamOutcome,
    outcome: Outcome,
) {
    let key_id = &adm.key.rec.id;
    if let Some(e) = &out.upstream_error {
        tracing::warn!(key_id = %key_id, account_id = %account_id, error = %e, "upstream stream ended early");
    }
    if out.client_gone && !out.tap.finished() {
        tracing::info!(key_id = %key_id, account_id = %account_id, "client disconnected mid-stream; upstream cancelled");
    }
    if !out.tap.started() {
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
    let model = out
        .tap
        .model()
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .unwrap_or(model);
    record_usage(
        st,
        &adm.key,
        service,
        &account_id,
        model,
        out.tap.usage(),
        outcome,
    );
}

/// The upstream request for one attempt on `acc`, and the pool key it sends, if any.
async fn build_request(
    st: &AppState,
    acc: &AccountRt,
    call: &Call,
    upstream_model: &str,
) -> anyhow::Result<crate::accounts::Built> {
    let out = Outgoing {
        op: call.op,
        body: &call.body,
        model: &call.model,
        upstream_model,
        stream: call.stream,
        headers: &call.client_headers,
        query: call.query.as_deref(),
        session: call.session.as_deref(),
    };
    upstream_request_keyed(&st.accounts, acc, &out).await
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

#[cfg(test)]
mod tests {
    use super::Finish;
    use std::time::Duration;

    #[tokio::test]
    async fn finish_runs_in_place_and_hands_back_the_result() {
        assert_eq!(Finish::new(async { 7 }).await, Some(7));
    }

    #[tokio::test]
    async fn finish_completes_work_its_caller_dropped() {
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<u32>();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
        let work = Finish::new(async move {
            let _ = started_tx.send(());
            let _ = go_rx.await;
            let _ = done_tx.send(42);
        });
        // The caller polls the work until it waits, then goes away (a client hanging up).
        let caller = tokio::spawn(work);
        started_rx.await.unwrap();
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        go_tx.send(()).unwrap();
        let done = tokio::time::timeout(Duration::from_secs(5), done_rx).await;
        assert_eq!(done.unwrap().unwrap(), 42);
    }

    #[tokio::test]
    async fn finish_reports_a_panic_as_none() {
        let work = Finish::new(async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            1
        });
        assert_eq!(work.await, None);
    }
}

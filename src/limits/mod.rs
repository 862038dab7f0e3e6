//! Key policy and limits, enforced the same way on every client route, in memory.
//!
//! The checks run in one order everywhere. Before the body is read (`admit_key`): authenticate
//! (active, not expired) -> service permission -> client restriction ->
//! cost limits (402) -> concurrency slot (429, may queue). Then the body is read, within the
//! global body budget, and once the model is known (`admit_model`): model restriction ->
//! Claude-family weekly limit -> rate window (429; the request is counted only here, once
//! admitted) -> activation on first admitted use. Rejections are written in the route's client
//! format (`ClientFormat`).

pub mod clients;
pub mod gate;
pub mod keys;
pub mod meter;
pub mod models;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::{DateTime, Duration, Utc};
use salvo::http::{HeaderValue, StatusCode};
use salvo::prelude::*;
use serde_json::{Value, json};

pub use crate::model::Service;
use crate::model::{ApiKey, ExpirationMode, Picos, picos_to_dollars};
pub use crate::providers::ClientFormat;
use crate::web::json;
pub use gate::{Gate, GateError, Slot};
pub use keys::{AuthError, KeyEntry, KeyIndex, KeyRuntime, Keys, authenticate, extract_key};
pub use meter::{Meter, RateKind};

/// Why a request was refused. `write` renders it in the client's format.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    Auth(AuthError),
    Permission(Service),
    ModelForbidden(String),
    ClientNotAllowed {
        allowed: Vec<String>,
        user_agent: String,
    },
    RateLimit {
        message: String,
        kind: RateKind,
        reset_at: DateTime<Utc>,
        remaining_minutes: i64,
    },
    Concurrency(GateErrorInfo),
    Cost {
        code: &'static str,
        message: String,
        /// Pico-dollars, both (the limit converted from its configured micro-dollars).
        current: Picos,
        limit: Picos,
        reset_at: Option<DateTime<Utc>>,
    },
}

/// `GateError` with the figures the bodies show.
#[derive(Debug, Clone, PartialEq)]
pub struct GateErrorInfo(pub GateErrorKind, pub u32, pub u32);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GateErrorKind {
    Full,
    QueueFull,
    QueueTimeout,
}

impl From<GateError> for Rejection {
    fn from(e: GateError) -> Self {
        Rejection::Concurrency(match e {
            GateError::Full { current, limit } => {
                GateErrorInfo(GateErrorKind::Full, current, limit)
            }
            GateError::QueueFull { limit, queue_max } => {
                GateErrorInfo(GateErrorKind::QueueFull, queue_max, limit)
            }
            GateError::QueueTimeout { limit, .. } => {
                GateErrorInfo(GateErrorKind::QueueTimeout, limit, limit)
            }
        })
    }
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::Auth(_) => StatusCode::UNAUTHORIZED,
            Rejection::Permission(_)
            | Rejection::ModelForbidden(_)
            | Rejection::ClientNotAllowed { .. } => StatusCode::FORBIDDEN,
            Rejection::RateLimit { .. } | Rejection::Concurrency(_) => {
                StatusCode::TOO_MANY_REQUESTS
            }
            Rejection::Cost { .. } => StatusCode::PAYMENT_REQUIRED,
        }
    }

    fn retry_after(&self) -> Option<i64> {
        match self {
            Rejection::Concurrency(_) => Some(1),
            Rejection::RateLimit { reset_at, .. } => {
                Some((*reset_at - Utc::now()).num_seconds().max(1))
            }
            _ => None,
        }
    }

    /// v1's body for this rejection (used as is on Claude routes).
    pub fn v1_body(&self) -> Value {
        match self {
            Rejection::Auth(e) => {
                let (title, message) = e.v1_parts();
                json!({"error": title, "message": message})
            }
            Rejection::Permission(s) => json!({"error": {"type": "permission_error",
                "message": format!("This API key does not have permission to access {}", s.display())}}),
            Rejection::ModelForbidden(m) => json!({"error": {"type": "forbidden",
                "message": format!("This API key is not allowed to use the model {m}")}}),

            Rejection::ClientNotAllowed {
                allowed,
                user_agent,
            } => json!({
                "error": "Client not allowed",
                "message": "Your client is not authorized to use this API key",
                "allowedClients": allowed,
                "userAgent": user_agent,
            }),
            Rejection::RateLimit {
                message,
                kind,
                reset_at,
                remaining_minutes,
            } => {
                let mut v = json!({"error": "Rate limit exceeded", "message": message});
                match kind {
                    RateKind::Requests { current, limit } => {
                        v["currentRequests"] = json!(current);
                        v["requestLimit"] = json!(limit);
                    }
                    RateKind::Tokens { current, limit } => {
                        v["currentTokens"] = json!(current);
                        v["tokenLimit"] = json!(limit);
                    }
                    RateKind::Cost { current, limit } => {
                        v["currentCost"] = json!(picos_to_dollars(*current));
                        v["costLimit"] = json!(picos_to_dollars(*limit));
                    }
                }
                v["resetAt"] = json!(reset_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                v["remainingMinutes"] = json!(remaining_minutes);
                v
            }
            Rejection::Concurrency(GateErrorInfo(kind, a, limit)) => match kind {
                GateErrorKind::Full => json!({
                    "error": "Concurrency limit exceeded",
                    "message": format!("Too many concurrent requests. Limit: {limit} concurrent requests"),
                    "currentConcurrency": a,
                    "concurrencyLimit": limit,
                }),
                GateErrorKind::QueueFull => json!({
                    "error": "Concurrency queue full",
                    "message": format!("Too many requests are already waiting for this key (queue length {a})"),
                    "concurrencyLimit": limit,
                    "queueMax": a,
                }),
                GateErrorKind::QueueTimeout => json!({
                    "error": "Queue timeout",
                    "message": "Waited too long for a free concurrency slot",
                    "concurrencyLimit": limit,
                }),
            },
            Rejection::Cost {
                code,
                message,
                current,
                limit,
                reset_at,
            } => {
                let mut v = json!({
                    "error": {"type": "insufficient_quota", "message": message, "code": code},
                    "currentCost": picos_to_dollars(*current),
                    "costLimit": picos_to_dollars(*limit),
                });
                if let Some(r) = reset_at {
                    v["resetAt"] = json!(r.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                }
                v
            }
        }
    }

    fn message(&self) -> String {
        let b = self.v1_body();
        b["message"]
            .as_str()
            .or_else(|| b["error"]["message"].as_str())
            .unwrap_or("Request refused")
            .to_owned()
    }

    /// Extra numeric fields of the v1 body, kept beside the error on OpenAI/Gemini routes.
    fn details(&self) -> serde_json::Map<String, Value> {
        let mut b = self.v1_body();
        let mut m = b.as_object_mut().map(std::mem::take).unwrap_or_default();
        m.remove("error");
        m.remove("message");
        m
    }

    fn openai_type_code(&self) -> (&'static str, String) {
        match self {
            Rejection::Auth(AuthError::Missing) => {
                ("invalid_request_error", "missing_api_key".into())
            }
            Rejection::Auth(_) => ("invalid_request_error", "invalid_api_key".into()),
            Rejection::Permission(_) => ("permission_denied", "permission_denied".into()),
            Rejection::ModelForbidden(_) => ("permission_denied", "model_not_allowed".into()),

            Rejection::ClientNotAllowed { .. } => {
                ("permission_denied", "client_not_allowed".into())
            }
            Rejection::RateLimit { .. } => ("rate_limit_error", "rate_limit_exceeded".into()),
            Rejection::Concurrency(_) => ("rate_limit_error", "concurrency_limit_exceeded".into()),
            Rejection::Cost { code, .. } => ("insufficient_quota", (*code).to_owned()),
        }
    }

    pub fn body(&self, fmt: ClientFormat) -> Value {
        match fmt {
            ClientFormat::Anthropic => self.v1_body(),
            ClientFormat::OpenAI => {
                let (t, code) = self.openai_type_code();
                let mut v = json!({"error": {"message": self.message(), "type": t, "code": code}});
                for (k, x) in self.details() {
                    v[k] = x;
                }
                v
            }
            ClientFormat::Gemini => {
                let status = match self.status().as_u16() {
                    401 => "UNAUTHENTICATED",
                    403 => "PERMISSION_DENIED",
                    _ => "RESOURCE_EXHAUSTED",
                };
                let mut v = json!({"error": {"code": self.status().as_u16(), "message": self.message(), "status": status}});
                for (k, x) in self.details() {
                    v[k] = x;
                }
                v
            }
        }
    }

    pub fn write(&self, fmt: ClientFormat, res: &mut Response) {
        if let Some(s) = self.retry_after()
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            res.headers_mut().insert("retry-after", v);
        }
        json(res, self.status(), &self.body(fmt));
    }
}

/// An admitted request: the key, its concurrency slot, and its share of the global body
/// budget (all released on drop, when the request is over).
#[derive(Debug)]
pub struct Admission {
    pub key: Arc<KeyEntry>,
    pub slot: Option<Slot>,
    pub body_budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// May key `k` use `s`? (No permissions listed, or `all`, or the service.)
pub fn permits(k: &ApiKey, s: Service) -> bool {
    k.permissions.is_empty() || k.permissions.iter().any(|p| p == "all" || p == s.as_str())
}

/// What a route asks of `admit_key`, before the body is read.
#[derive(Debug, Clone, Copy)]
pub struct Ask {
    pub service: Service,
    /// Take a concurrency slot (false for calls that do not reach a model, such as token
    /// counting). Taken before the body is read, so a key's concurrency limit also bounds how
    /// many of its bodies are in memory.
    pub slot: bool,
}

/// What a route asks of `admit_model`, once it knows the model.
#[derive(Debug, Clone, Copy)]
pub struct AskModel<'a> {
    pub model: &'a str,
    /// Count the request in the key's rate window. Every request that reaches an upstream
    /// counts, token counting included.
    pub window: bool,
    /// Record the first use of an activation-mode key (requests that reach a model).
    pub activates: bool,
}

/// Keep a key without `allow1mContext` to the standard context window: take Anthropic's
/// per-request `context-1m-<date>` flag out of the `anthropic-beta` headers that go upstream.
/// Claude Code sends the flag on ordinary requests too, so refusing them would break it; without
/// the flag the upstream serves (and bills) the standard window. Returns whether it removed one.
pub fn strip_long_context(headers: &mut salvo::http::HeaderMap) -> bool {
    let values: Vec<String> = headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let flags: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .collect();
    if !flags.iter().any(|b| b.starts_with("context-1m")) {
        return false;
    }
    let kept: Vec<&str> = flags
        .into_iter()
        .filter(|b| !b.starts_with("context-1m"))
        .collect();
    headers.remove("anthropic-beta");
    if !kept.is_empty()
        && let Ok(v) = salvo::http::HeaderValue::from_str(&kept.join(","))
    {
        headers.insert("anthropic-beta", v);
    }
    true
}

/// The rules that need no body, after authentication (see the module docs for the order):
/// service permission, client restriction, cost limits, then the concurrency slot.
pub async fn admit_key(
    keys: &Arc<Keys>,
    entry: Arc<KeyEntry>,
    req: &Request,
    ask: Ask,
) -> Result<Admission, Rejection> {
    let k = &entry.rec;
    if !permits(k, ask.service) {
        return Err(Rejection::Permission(ask.service));
    }
    if k.enable_client_restriction
        && !k.allowed_clients.is_empty()
        && !clients::allowed(&k.allowed_clients, req.headers())
    {
        let ua = req
            .headers()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        return Err(Rejection::ClientNotAllowed {
            allowed: k.allowed_clients.clone(),
            user_agent: ua,
        });
    }
    let off = keys.clock().offset();
    entry
        .rt
        .meter
        .lock()
        .check_costs(k, Utc::now(), off, ask.service == Service::Claude)?;
    let slot = if ask.slot {
        entry.rt.gate.load_full().acquire().await?
    } else {
        None
    };
    Ok(Admission {
        key: entry,
        slot,
        body_budget: None,
    })
}

/// The rules that need the model, once the body is read: model restriction, the Claude-family
/// weekly limit for Claude models on other routes, the rate window (the request is counted
/// only here, once admitted), activation on first use.
pub fn admit_model(keys: &Arc<Keys>, adm: &Admission, ask: AskModel) -> Result<(), Rejection> {
    let entry = &adm.key;
    let k = &entry.rec;
    if k.enable_model_restriction
        && models::refused(ask.model, &k.restricted_models, k.model_restriction_mode)
    {
        return Err(Rejection::ModelForbidden(ask.model.to_owned()));
    }
    let off = keys.clock().offset();
    if models::is_claude(ask.model) {
        entry
            .rt
            .meter
            .lock()
            .check_costs(k, Utc::now(), off, true)?;
    }
    if ask.window {
        entry.rt.meter.lock().admit_window(k, Utc::now())?;
    }
    let now = Utc::now();
    entry
        .rt
        .last_used_ms
        .store(now.timestamp_millis(), Ordering::Relaxed);
    if ask.activates
        && k.expiration_mode == ExpirationMode::Activation
        && !k.is_activated
        && entry.rt.activated_at.set(now).is_ok()
    {
        keys.activate(k.id.clone(), now);
    }
    Ok(())
}

/// Rebuild a key's cost meter from the usage buckets (at start, or when a cost limit is
/// added). The rate window is transient and starts empty.
pub fn restore_meter(
    store: &crate::store::Store,
    clock: &crate::usage::Clock,
    k: &ApiKey,
    now: DateTime<Utc>,
) -> anyhow::Result<Meter> {
    use crate::usage::bucket;
    let off = clock.offset();
    let mut m = Meter::default();
    m.roll(k, now, off);
    let p = clock.periods(now);
    let rated = |key: String| -> anyhow::Result<Picos> {
        Ok(store
            .usage_get(&key)?
            .map(|c| c.rated_cost_picos)
            .unwrap_or(0))
    };
    m.total = rated(bucket::key(bucket::TOTAL, &k.id))?;
    m.daily = rated(bucket::key(&bucket::day(&p.day), &k.id))?;

    // Claude-family cost since the weekly reset: whole days from the day buckets, the part of
    // the first day after the reset hour from the hour buckets.
    let ws = DateTime::from_timestamp_millis(m.week_start_ms).unwrap_or(now);
    let claude_sum = |prefix: String| -> anyhow::Result<i64> {
        Ok(store
            .usage_scan(&prefix)?
            .into_iter()
            .filter(|(key, _)| models::is_claude(key.rsplit('|').next().unwrap_or("")))
            .fold(0, |sum: Picos, (_, c)| {
                sum.saturating_add(c.rated_cost_picos)
            }))
    };
    let mut weekly: Picos = 0;
    let first = clock.periods(ws);
    let mut t = ws;
    // The hours of the first local day, unless the week starts at midnight (the usual case:
    // then every day is whole and one day bucket stands for its 24 hours).
    let starts_at_midnight = ws.with_timezone(&off).time() == chrono::NaiveTime::MIN;
    loop {
        let pp = clock.periods(t);
        if starts_at_midnight || pp.day != first.day || t > now {
            break;
        }
        weekly = weekly.saturating_add(claude_sum(format!(
            "{}|km|{}|",
            bucket::hour(&pp.hour),
            k.id
        ))?);
        t += Duration::hours(1);
    }
    // Whole days after it, up to today.
    while t <= now {
        let pp = clock.periods(t);
        weekly = weekly.saturating_add(claude_sum(format!(
            "{}|km|{}|",
            bucket::day(&pp.day),
            k.id
        ))?);
        t += Duration::days(1);
    }
    m.weekly_claude = weekly;

    // Rolling five hours from the hour buckets. Each hour's cost is placed at the end of its
    // hour (or now), so it leaves the window no earlier than it should.
    for h in (0..=5).rev() {
        let hour_start = now - Duration::hours(h);
        let pp = clock.periods(hour_start);
        let cost = rated(bucket::key(&bucket::hour(&pp.hour), &k.id))?;
        if cost != 0 {
            let start_ms = hour_start.timestamp_millis() / 3_600_000 * 3_600_000;
            let end_ms = (start_ms + 3_600_000 - 60_000).min(now.timestamp_millis());
            if end_ms > now.timestamp_millis() - 5 * 3_600_000 {
                m.five_hour.push_back((end_ms / 60_000, cost));
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_and_gemini_routes_get_their_own_schemas() {
        let r = Rejection::Permission(Service::OpenAI);
        assert_eq!(
            r.body(ClientFormat::OpenAI),
            json!({"error": {"message": "This API key does not have permission to access OpenAI", "type": "permission_denied", "code": "permission_denied"}})
        );
        let r = Rejection::Concurrency(GateErrorInfo(GateErrorKind::Full, 1, 1));
        let g = r.body(ClientFormat::Gemini);
        assert_eq!(g["error"]["code"], 429);
        assert_eq!(g["error"]["status"], "RESOURCE_EXHAUSTED");
        assert_eq!(
            g["error"]["message"],
            "Too many concurrent requests. Limit: 1 concurrent requests"
        );
        assert_eq!(g["concurrencyLimit"], 1);
        let r = Rejection::Cost {
            code: "daily_cost_limit_exceeded",
            message: "Daily cost limit reached ($5)".into(),
            current: 5_100_000_000_000,
            limit: 5_000_000_000_000,
            reset_at: None,
        };
        let o = r.body(ClientFormat::OpenAI);
        assert_eq!(r.status(), StatusCode::PAYMENT_REQUIRED);
        assert_eq!(o["error"]["type"], "insufficient_quota");
        assert_eq!(o["error"]["code"], "daily_cost_limit_exceeded");
        assert_eq!(o["currentCost"], 5.1);
        let a = Rejection::Auth(AuthError::NotFound);
        assert_eq!(
            a.body(ClientFormat::Anthropic),
            json!({"error": "Invalid API key", "message": "API key not found"})
        );
        assert_eq!(
            a.body(ClientFormat::OpenAI)["error"]["code"],
            "invalid_api_key"
        );
        assert_eq!(
            a.body(ClientFormat::Gemini)["error"]["status"],
            "UNAUTHENTICATED"
        );
    }

    #[test]
    fn the_long_context_flag_is_taken_out_and_the_rest_kept() {
        let mut h = salvo::http::HeaderMap::new();
        h.insert(
            "anthropic-beta",
            "a-1, context-1m-2025-08-07,b-2".parse().unwrap(),
        );
        assert!(strip_long_context(&mut h));
        assert_eq!(h["anthropic-beta"], "a-1,b-2");
        let mut h = salvo::http::HeaderMap::new();
        h.insert("anthropic-beta", "context-1m-2025-08-07".parse().unwrap());
        assert!(strip_long_context(&mut h));
        assert!(h.get("anthropic-beta").is_none());
        let mut h = salvo::http::HeaderMap::new();
        h.insert("anthropic-beta", "a-1".parse().unwrap());
        assert!(!strip_long_context(&mut h));
        assert_eq!(h["anthropic-beta"], "a-1");
    }
}

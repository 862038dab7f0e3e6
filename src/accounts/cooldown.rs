//! How an upstream failure affects the account that answered: which failures are retried on
//! another account, and how long the account (or only the model) stays out of rotation.

use crate::model::AccountStatus;
use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

/// What to do after an upstream answered with an error or could not be reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Try the request on another account (only before the first byte reached the client).
    pub retry: bool,
    pub effect: Effect,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    None,
    /// Out of rotation until the instant (unix ms). `transient`: after a server error,
    /// overload or network failure, not a rate limit with a reset time; when every usable
    /// account is out for such a reason, the scheduler still tries one.
    Account {
        until_ms: i64,
        reason: String,
        transient: bool,
    },
    /// Only this model is out of rotation on the account.
    Model {
        until_ms: i64,
        reason: String,
    },
    /// Only this model family (its weekly window) is out of rotation on the account.
    Family {
        family: super::windows::Family,
        until_ms: i64,
        reason: String,
    },
    /// The credential was refused: out of rotation until an admin looks (status change).
    NeedsAttention {
        status: AccountStatus,
        reason: String,
    },
}

pub const OVERLOAD_COOLDOWN_SECS: i64 = 60;
pub const SERVER_ERROR_COOLDOWN_SECS: i64 = 30;
pub const NETWORK_COOLDOWN_SECS: i64 = 30;

/// A reset time as sent in `anthropic-ratelimit-*-reset` (RFC 3339) or `x-ratelimit-reset-*`
/// style headers (unix seconds).
fn parse_reset(v: &str) -> Option<i64> {
    let v = v.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc).timestamp_millis());
    }
    v.parse::<i64>().ok().map(|n| {
        if n > 10_000_000_000 {
            n
        } else {
            n.saturating_mul(1000)
        }
    })
}

/// When a 429 ends: the latest reset of an exhausted Anthropic limit, else `retry-after`,
/// else the unified (subscription) reset, else `fallback_mins` from now.
pub fn rate_limit_until(h: &HeaderMap, now_ms: i64, fallback_mins: u32) -> i64 {
    // Whatever the upstream says, no cooldown outlasts a weekly window by much.
    rate_limit_until_unclamped(h, now_ms, fallback_mins).clamp(now_ms, now_ms + MAX_COOLDOWN_MS)
}

/// The longest an upstream's own reset times can park an account: eight days.
pub const MAX_COOLDOWN_MS: i64 = 8 * 24 * 3_600_000;

fn rate_limit_until_unclamped(h: &HeaderMap, now_ms: i64, fallback_mins: u32) -> i64 {
    stated_reset(h, now_ms)
        .or_else(|| {
            h.get("anthropic-ratelimit-unified-reset")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_reset)
                .filter(|t| *t > now_ms)
        })
        .unwrap_or_else(|| now_ms.saturating_add(fallback_mins.max(1) as i64 * 60_000))
}

/// When a rate limit ends by what the headers state: the latest reset of an exhausted
/// `anthropic-ratelimit-*` limit, else `retry-after`. None when neither says.
fn stated_reset(h: &HeaderMap, now_ms: i64) -> Option<i64> {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let mut exhausted_reset: Option<i64> = None;
    for (name, value) in h {
        let n = name.as_str();
        if let Some(limit) = n
            .strip_prefix("anthropic-ratelimit-")
            .and_then(|r| r.strip_suffix("-remaining"))
            && value.to_str().ok().map(str::trim) == Some("0")
            && let Some(t) =
                get(&format!("anthropic-ratelimit-{limit}-reset")).and_then(parse_reset)
        {
            exhausted_reset = Some(exhausted_reset.map_or(t, |e| e.max(t)));
        }
    }
    if let Some(t) = exhausted_reset.filter(|t| *t > now_ms) {
        return Some(t);
    }
    get("retry-after")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map(|secs| now_ms.saturating_add(secs.max(1).saturating_mul(1000)))
}

/// Does the error body say the problem is this model (not the whole account)?
fn mentions_model(body: &[u8], model: &str) -> bool {
    !model.is_empty() && memchr::memmem::find(body, model.as_bytes()).is_some()
}

/// The error message of an upstream error body, lower-cased (first 1,000 bytes of the body
/// when it is not JSON).
fn message_lower(body: &[u8]) -> String {
    crate::providers::error_message(body)
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(1000)]).into_owned())
        .to_ascii_lowercase()
}

/// What an upstream error is judged against besides itself.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The model sent upstream.
    pub model: &'a str,
    pub now_ms: i64,
    /// Minutes out of rotation when a subscription window is exhausted and no reset is given
    /// (the account's `rateLimitDuration`).
    pub fallback_mins: u32,
    /// Seconds out of rotation after a 429 that says nothing about when it ends.
    pub throttle_secs: u32,
    /// The request was a Claude Code background request (`x-app: cli-bg`).
    pub background: bool,
}

/// The error messages with which Anthropic refuses a banned or disabled organisation. Each is
/// the account's state, not the request's: v1 and other relays (sub2api) match the same texts
/// and mark the account `blocked`.
const ORG_BLOCKED: &[&str] = &[
    "oauth authentication is currently not allowed for this organization",
    "this organization has been disabled",
    "organization has been disabled",
    "organization has been suspended",
    "account has been disabled",
];

/// A 429 that is about the request, not the account: Anthropic answers 429 "Extra usage is
/// required ..." when a request needs extra usage the account has not enabled (long-context
/// models, fast mode without credits). v1 skips rate-limit marking for these
/// (`_isExtraUsageRequired429`); the client sees the answer.
fn is_request_quota_429(msg: &str) -> bool {
    msg.contains("extra usage") || msg.contains("fast mode")
}

/// The `anthropic-ratelimit-unified-*` headers of a subscription (OAuth) answer: per claim
/// (`5h`, `7d`, and scoped ones such as `7d_oi`) a status (`allowed`, `allowed_warning`,
/// `rejected`), a utilisation and a reset in unix seconds; plus the summary `status`, `reset`
/// and `representative-claim` (`five_hour`, `seven_day`, `seven_day_opus`,
/// `seven_day_sonnet`, ...: the window that decided). Shapes as captured from live Anthropic
/// answers and read by other relays.
#[derive(Debug, Default)]
pub struct Unified {
    pub status: Option<String>,
    pub reset_ms: Option<i64>,
    pub claim: Option<String>,
    /// (claim, status, reset) per claim with a status header.
    pub claims: Vec<(String, String, Option<i64>)>,
}

impl Unified {
    pub fn read(h: &HeaderMap) -> Unified {
        use super::windows::parse_reset_ms;
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
        let mut u = Unified {
            status: get("anthropic-ratelimit-unified-status").map(str::to_owned),
            reset_ms: get("anthropic-ratelimit-unified-reset").and_then(parse_reset_ms),
            claim: get("anthropic-ratelimit-unified-representative-claim").map(str::to_owned),
            claims: Vec::new(),
        };
        for (name, value) in h {
            let Some(claim) = name
                .as_str()
                .strip_prefix("anthropic-ratelimit-unified-")
                .and_then(|r| r.strip_suffix("-status"))
            else {
                continue;
            };
            // The overage axis is billing state, not a window.
            if claim == "overage" || claim.is_empty() {
                continue;
            }
            let status = value.to_str().unwrap_or("").trim().to_owned();
            let reset =
                get(&format!("anthropic-ratelimit-unified-{claim}-reset")).and_then(parse_reset_ms);
            u.claims.push((claim.to_owned(), status, reset));
        }
        u
    }

    pub fn is_present(&self) -> bool {
        self.status.is_some() || !self.claims.is_empty()
    }

    fn rejected(&self) -> impl Iterator<Item = &(String, String, Option<i64>)> {
        self.claims.iter().filter(|(_, s, _)| s == "rejected")
    }

    /// A warning on any window (`allowed_warning`), for `autoStopOnWarning`.
    pub fn warning(&self) -> bool {
        self.status.as_deref() == Some("allowed_warning")
            || self.claims.iter().any(|(_, s, _)| s == "allowed_warning")
    }

    /// The reset of the 5-hour window, if the headers carry it.
    pub fn five_hour_reset(&self) -> Option<i64> {
        self.claims
            .iter()
            .find(|(c, _, _)| c == "5h")
            .and_then(|(_, _, r)| *r)
    }
}

/// The Codex backend's 429 when a ChatGPT plan's usage window is spent:
/// `{"error": {"type": "usage_limit_reached", "message": .., "plan_type": .., "resets_at":
/// <unix s>, "resets_in_seconds": <s>}}`. v1 parks the account until `resets_in_seconds`
/// from now (v1 src/routes/openaiRoutes.js, 429 handling; an hour without it); Codex CLI and
/// CLIProxyAPI also read `resets_at`. `Some(reset)` when the body is such a refusal.
fn codex_usage_limit(body: &[u8], now_ms: i64) -> Option<Option<i64>> {
    if memchr::memmem::find(body, b"usage_limit_reached").is_none()
        && memchr::memmem::find(body, b"resets_in_seconds").is_none()
    {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let e = v.get("error")?;
    let kind = e.get("type").and_then(|t| t.as_str());
    let secs = |k: &str| {
        e.get(k)
            .and_then(|x| x.as_f64().or_else(|| x.as_str()?.trim().parse().ok()))
            .filter(|x| x.is_finite() && *x >= 0.0)
    };
    let in_secs = secs("resets_in_seconds");
    if kind != Some("usage_limit_reached") && in_secs.is_none() {
        return None;
    }
    let reset = in_secs
        .map(|s| now_ms.saturating_add((s.min(1e9) * 1000.0) as i64))
        .or_else(|| secs("resets_at").map(|t| (t.min(1e11) * 1000.0) as i64))
        .filter(|t| *t > now_ms);
    Some(reset)
}

/// What a 429 means, from the most specific evidence to the least.
fn judge_429(h: &HeaderMap, body: &[u8], cx: &Context) -> Verdict {
    use super::windows::Family;
    let now_ms = cx.now_ms;
    let msg = message_lower(body);
    if is_request_quota_429(&msg) {
        return Verdict {
            retry: false,
            effect: Effect::None,
        };
    }
    // Claude Code's background requests (titles, labels, agent summaries) say nothing about
    // the account: v1 skips rate-limit marking for them. Another account may still serve.
    if cx.background {
        return Verdict {
            retry: true,
            effect: Effect::None,
        };
    }
    let clamp = |t: i64| t.clamp(now_ms, now_ms + MAX_COOLDOWN_MS);
    let fallback = now_ms.saturating_add(cx.fallback_mins.max(1) as i64 * 60_000);
    // 0. A ChatGPT plan's usage window (Codex): the account until the window resets.
    if let Some(reset) = codex_usage_limit(body, now_ms) {
        let until_ms = clamp(reset.unwrap_or(fallback));
        return Verdict {
            retry: true,
            effect: Effect::Account {
                until_ms,
                reason: format!("Codex usage limit reached (429) until {}", fmt_ms(until_ms)),
                transient: false,
            },
        };
    }
    let u = Unified::read(h);
    let future = |t: Option<i64>| t.filter(|t| *t > now_ms);
    // 1. A weekly window of one model family: only that family is parked on this account.
    let family = u
        .claim
        .as_deref()
        .and_then(Family::of_claim)
        .filter(|_| u.status.as_deref() == Some("rejected"))
        .map(|f| (f, future(u.reset_ms)))
        .or_else(|| {
            u.rejected().find_map(|(c, _, r)| {
                Family::of_claim(c).map(|f| (f, future(*r).or(future(u.reset_ms))))
            })
        });
    let account_wide = u.rejected().any(|(c, _, _)| Family::of_claim(c).is_none());
    if let Some((family, reset)) = family
        && !account_wide
    {
        let until_ms = clamp(reset.unwrap_or(fallback));
        return Verdict {
            retry: true,
            effect: Effect::Family {
                family,
                until_ms,
                reason: format!(
                    "weekly {} limit reached (429) until {}",
                    family.as_str(),
                    fmt_ms(until_ms)
                ),
            },
        };
    }
    // 2. An account-wide subscription window (5-hour, 7-day): the account until it resets.
    if account_wide || u.status.as_deref() == Some("rejected") {
        let reset = u
            .rejected()
            .filter(|(c, _, _)| Family::of_claim(c).is_none())
            .filter_map(|(_, _, r)| future(*r))
            .max()
            .or(future(u.reset_ms));
        let which = u
            .rejected()
            .map(|(c, _, _)| c.as_str())
            .next()
            .or(u.claim.as_deref())
            .unwrap_or("subscription");
        let until_ms = clamp(reset.unwrap_or(fallback));
        return Verdict {
            retry: true,
            effect: Effect::Account {
                until_ms,
                reason: format!(
                    "{which} usage window exhausted (429) until {}",
                    fmt_ms(until_ms)
                ),
                transient: false,
            },
        };
    }
    // 3. An API rate limit that says when it ends (an exhausted limit's reset, retry-after).
    if let Some(until_ms) = stated_reset(h, now_ms) {
        let until_ms = clamp(until_ms);
        let reason = format!("rate limited (429) until {}", fmt_ms(until_ms));
        let effect = if mentions_model(body, cx.model) {
            Effect::Model { until_ms, reason }
        } else {
            Effect::Account {
                until_ms,
                reason,
                transient: false,
            }
        };
        return Verdict {
            retry: true,
            effect,
        };
    }
    // 4. Nothing says when it ends: a short throttle, not an hour out of rotation. Marked
    // transient, so a key with no other account still gets this one tried.
    let until_ms = now_ms.saturating_add(cx.throttle_secs.max(1) as i64 * 1000);
    let reason = "throttled (429 without a reset time)".to_owned();
    Verdict {
        retry: true,
        effect: if mentions_model(body, cx.model) {
            Effect::Model { until_ms, reason }
        } else {
            Effect::Account {
                until_ms,
                reason,
                transient: true,
            }
        },
    }
}

/// Judge an upstream error response.
pub fn judge_status(status: u16, h: &HeaderMap, body: &[u8], cx: &Context) -> Verdict {
    let now_ms = cx.now_ms;
    let text = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    match status {
        429 => judge_429(h, body, cx),
        529 => Verdict {
            retry: true,
            effect: Effect::Account {
                until_ms: now_ms + OVERLOAD_COOLDOWN_SECS * 1000,
                reason: "overloaded (529)".into(),
                transient: true,
            },
        },
        400 | 401 | 403 if ORG_BLOCKED.iter().any(|p| message_lower(body).contains(p)) => Verdict {
            retry: true,
            effect: Effect::NeedsAttention {
                status: AccountStatus::Blocked,
                reason: format!(
                    "the upstream organisation is banned or disabled ({status}): {}",
                    text()
                ),
            },
        },
        401 | 403 => Verdict {
            retry: true,
            effect: Effect::NeedsAttention {
                status: AccountStatus::Unauthorized,
                reason: format!("upstream refused the credential ({status}): {}", text()),
            },
        },
        // The account does not serve this model.
        404 if mentions_model(body, cx.model) => Verdict {
            retry: true,
            effect: Effect::Model {
                until_ms: now_ms + 3600 * 1000,
                reason: format!("model not available (404): {}", text()),
            },
        },
        500..=599 => Verdict {
            retry: true,
            effect: Effect::Account {
                until_ms: now_ms + SERVER_ERROR_COOLDOWN_SECS * 1000,
                reason: format!("upstream error ({status})"),
                transient: true,
            },
        },
        // Other 4xx are about the request itself: the client sees them, the account is fine.
        _ => Verdict {
            retry: false,
            effect: Effect::None,
        },
    }
}

/// A connection failure or timeout before any response.
pub fn judge_transport(now_ms: i64, what: &str) -> Verdict {
    Verdict {
        retry: true,
        effect: Effect::Account {
            until_ms: now_ms + NETWORK_COOLDOWN_SECS * 1000,
            reason: what.to_owned(),
            transient: true,
        },
    }
}

fn fmt_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::super::windows::Family;
    use super::*;
    use reqwest::header::HeaderValue;

    fn h(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    const NOW: i64 = 1_800_000_000_000;

    fn cx(model: &str) -> Context<'_> {
        Context {
            model,
            now_ms: NOW,
            fallback_mins: 60,
            throttle_secs: 30,
            background: false,
        }
    }

    fn judge(status: u16, hm: &HeaderMap, body: &[u8], model: &str) -> Verdict {
        judge_status(status, hm, body, &cx(model))
    }

    #[test]
    fn rate_limit_reset_sources() {
        // The exhausted limit's reset wins over others and over retry-after.
        let hm = h(&[
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2027-01-15T08:00:30Z"),
            ("anthropic-ratelimit-tokens-remaining", "5000"),
            ("anthropic-ratelimit-tokens-reset", "2027-01-15T09:00:00Z"),
            ("retry-after", "5"),
        ]);
        let t = DateTime::parse_from_rfc3339("2027-01-15T08:00:30Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(rate_limit_until(&hm, t - 10_000, 60), t);
        assert_eq!(
            rate_limit_until(&h(&[("retry-after", "30")]), NOW, 60),
            NOW + 30_000
        );
        assert_eq!(rate_limit_until(&h(&[]), NOW, 60), NOW + 3_600_000);
        let unified = h(&[("anthropic-ratelimit-unified-reset", "1800000600")]);
        assert_eq!(rate_limit_until(&unified, NOW, 60), NOW + 600_000);
    }

    #[test]
    fn verdicts() {
        let v = judge(429, &h(&[("retry-after", "10")]), b"{}", "m");
        assert!(v.retry);
        assert!(matches!(v.effect, Effect::Account { until_ms, .. } if until_ms == NOW + 10_000));
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"limit for claude-opus-4-1 output tokens"}}"#;
        let v = judge(429, &h(&[]), body, "claude-opus-4-1");
        assert!(matches!(v.effect, Effect::Model { .. }));
        let v = judge(529, &h(&[]), b"", "m");
        assert!(matches!(v.effect, Effect::Account { until_ms, .. } if until_ms == NOW + 60_000));
        let v = judge(401, &h(&[]), b"invalid x-api-key", "m");
        assert!(
            v.retry
                && matches!(
                    v.effect,
                    Effect::NeedsAttention {
                        status: AccountStatus::Unauthorized,
                        ..
                    }
                )
        );
        let v = judge(400, &h(&[]), b"bad request", "m");
        assert!(!v.retry && v.effect == Effect::None);
        assert!(judge(503, &h(&[]), b"", "m").retry);
        assert!(judge_transport(NOW, "connect").retry);
    }

    const WEEK_RESET: &str = "1800400000";
    const FIVE_H_RESET: &str = "1800010000";

    fn subscription_429(pairs: &[(&'static str, &str)]) -> Verdict {
        let mut all = vec![
            ("anthropic-ratelimit-unified-5h-status", "allowed"),
            ("anthropic-ratelimit-unified-5h-reset", FIVE_H_RESET),
            ("anthropic-ratelimit-unified-5h-utilization", "0.31"),
            ("anthropic-ratelimit-unified-7d-status", "allowed"),
            ("anthropic-ratelimit-unified-7d-reset", WEEK_RESET),
            ("anthropic-ratelimit-unified-7d-utilization", "0.62"),
        ];
        all.extend_from_slice(pairs);
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed your account's rate limit. Please try again later."}}"#;
        judge(429, &h(&all), body, "claude-opus-4-1-20250805")
    }

    #[test]
    fn a_weekly_family_window_parks_only_that_family() {
        let v = subscription_429(&[
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", WEEK_RESET),
            (
                "anthropic-ratelimit-unified-representative-claim",
                "seven_day_opus",
            ),
            ("retry-after", "400000"),
        ]);
        assert!(v.retry);
        assert_eq!(
            v.effect,
            Effect::Family {
                family: Family::Opus,
                until_ms: 1_800_400_000_000,
                reason: "weekly opus limit reached (429) until 2027-01-19T23:06:40Z".into()
            }
        );
    }

    #[test]
    fn a_five_hour_rejection_parks_the_account_until_its_reset() {
        let v = subscription_429(&[
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", FIVE_H_RESET),
            (
                "anthropic-ratelimit-unified-representative-claim",
                "five_hour",
            ),
            ("anthropic-ratelimit-unified-5h-status", "rejected"),
        ]);
        assert!(
            matches!(
                v.effect,
                Effect::Account {
                    until_ms: 1_800_010_000_000,
                    transient: false,
                    ..
                }
            ),
            "{v:?}"
        );
    }

    #[test]
    fn a_429_without_any_reset_is_a_short_throttle() {
        let v = judge(
            429,
            &h(&[]),
            br#"{"type":"error","error":{"type":"rate_limit_error","message":"Rate limited"}}"#,
            "claude-sonnet-4-5",
        );
        assert_eq!(
            v.effect,
            Effect::Account {
                until_ms: NOW + 30_000,
                reason: "throttled (429 without a reset time)".into(),
                transient: true
            }
        );
    }

    #[test]
    fn extra_usage_and_background_429s_park_nothing() {
        let extra = br#"{"type":"error","error":{"type":"rate_limit_error","message":"Extra usage is required for long context requests."}}"#;
        let v = judge(
            429,
            &h(&[("retry-after", "60")]),
            extra,
            "claude-sonnet-4-5",
        );
        assert_eq!(
            v,
            Verdict {
                retry: false,
                effect: Effect::None
            }
        );
        let fast = br#"{"type":"error","error":{"type":"rate_limit_error","message":"Fast mode requires extra usage credits."}}"#;
        assert!(!judge(429, &h(&[]), fast, "m").retry);
        let mut c = cx("claude-haiku-4-5");
        c.background = true;
        let v = judge_status(429, &h(&[("retry-after", "60")]), b"{}", &c);
        assert_eq!(
            v,
            Verdict {
                retry: true,
                effect: Effect::None
            }
        );
    }

    #[test]
    fn banned_and_disabled_organisations_are_blocked() {
        for (status, msg) in [
            (
                403,
                "OAuth authentication is currently not allowed for this organization.",
            ),
            (400, "This organization has been disabled."),
        ] {
            let body = format!(
                r#"{{"type":"error","error":{{"type":"invalid_request_error","message":"{msg}"}}}}"#
            );
            let v = judge(status, &h(&[]), body.as_bytes(), "m");
            assert!(v.retry, "{status}: fails over");
            assert!(
                matches!(
                    &v.effect,
                    Effect::NeedsAttention {
                        status: AccountStatus::Blocked,
                        ..
                    }
                ),
                "{status}: {v:?}"
            );
        }
        // An ordinary 400 stays the client's problem.
        let body = br#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: field required"}}"#;
        assert_eq!(judge(400, &h(&[]), body, "m").effect, Effect::None);
    }

    #[test]
    fn warnings_and_five_hour_resets_are_read() {
        let u = Unified::read(&h(&[
            ("anthropic-ratelimit-unified-status", "allowed_warning"),
            ("anthropic-ratelimit-unified-5h-status", "allowed_warning"),
            ("anthropic-ratelimit-unified-5h-reset", FIVE_H_RESET),
            ("anthropic-ratelimit-unified-overage-status", "rejected"),
        ]));
        assert!(u.warning());
        assert_eq!(u.five_hour_reset(), Some(1_800_010_000_000));
        assert_eq!(u.claims.len(), 1, "the overage axis is not a window");
    }

    #[test]
    fn absurd_reset_headers_neither_overflow_nor_park_for_ever() {
        for v in [
            "9223372036854775807",
            "-9223372036854775807",
            "99999999999999999",
        ] {
            let until = rate_limit_until(&h(&[("retry-after", v)]), NOW, 60);
            assert!(
                (NOW..=NOW + MAX_COOLDOWN_MS).contains(&until),
                "{v}: {until}"
            );
        }
        let until = rate_limit_until(
            &h(&[
                ("anthropic-ratelimit-requests-remaining", "0"),
                ("anthropic-ratelimit-requests-reset", "-9223372036854775807"),
            ]),
            NOW,
            60,
        );
        assert!((NOW..=NOW + MAX_COOLDOWN_MS).contains(&until));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("retry-after".to_owned()),
                Just("anthropic-ratelimit-unified-reset".to_owned()),
                "anthropic-ratelimit-(requests|tokens|input-tokens|output-tokens|x)-(remaining|reset)",
                "x-[a-z-]{1,10}",
            ]
        }

        fn value() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                Just(b"0".to_vec()),
                any::<i64>().prop_map(|n| n.to_string().into_bytes()),
                any::<u64>().prop_map(|n| n.to_string().into_bytes()),
                (
                    -1_000_000_000_000i64..10_000_000_000_000,
                    -86_399i32..86_399
                )
                    .prop_map(|(ms, off)| {
                        let t = DateTime::from_timestamp_millis(ms).unwrap();
                        let off = chrono::FixedOffset::east_opt(off).unwrap();
                        t.with_timezone(&off).to_rfc3339().into_bytes()
                    }),
                "[ 0-9:TZ+.-]{0,30}".prop_map(String::into_bytes),
                prop::collection::vec(any::<u8>(), 0..40),
            ]
        }

        fn headers() -> impl Strategy<Value = HeaderMap> {
            prop::collection::vec((name(), value()), 0..8).prop_map(|pairs| {
                let mut h = HeaderMap::new();
                for (n, v) in pairs {
                    if let (Ok(n), Ok(v)) = (
                        reqwest::header::HeaderName::from_bytes(n.as_bytes()),
                        HeaderValue::from_bytes(&v),
                    ) {
                        h.append(n, v);
                    }
                }
                h
            })
        }

        /// Now, from 1970 to the end of the century.
        fn now() -> impl Strategy<Value = i64> {
            0i64..4_102_444_800_000
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn any_reset_headers_give_a_bounded_cooldown(h in headers(), now in now(), fallback in any::<u32>()) {
                let until = rate_limit_until(&h, now, fallback);
                prop_assert!((now..=now + MAX_COOLDOWN_MS).contains(&until), "{:?}: {}", h, until - now);
            }

            #[test]
            fn retry_after_alone_is_taken_as_said(secs in 1i64..=MAX_COOLDOWN_MS / 1000, now in now()) {
                let mut h = HeaderMap::new();
                h.insert("retry-after", HeaderValue::from_str(&secs.to_string()).unwrap());
                prop_assert_eq!(rate_limit_until(&h, now, 60), now + secs * 1000);
            }

            #[test]
            fn any_error_answer_is_judged(
                status in 100u16..1000,
                h in headers(),
                body in prop::collection::vec(any::<u8>(), 0..400),
                model in "[a-z0-9-]{0,12}",
                now in now(),
                fallback in any::<u32>(),
            ) {
                let cx = Context { model: &model, now_ms: now, fallback_mins: fallback, throttle_secs: 30, background: false };
                let v = judge_status(status, &h, &body, &cx);
                match v.effect {
                    Effect::Account { until_ms, .. } | Effect::Model { until_ms, .. } | Effect::Family { until_ms, .. } => {
                        prop_assert!(until_ms >= now && until_ms <= now + MAX_COOLDOWN_MS);
                    }
                    Effect::NeedsAttention { .. } => prop_assert!(matches!(status, 400 | 401 | 403)),
                    Effect::None => prop_assert!(!v.retry),
                }
            }
        }
    }

    #[test]
    fn codex_usage_limit_parks_the_account_until_the_reset() {
        let now = 1_800_000_000_000;
        let cx = Context {
            model: "gpt-5",
            now_ms: now,
            fallback_mins: 60,
            throttle_secs: 30,
            background: false,
        };
        let h = HeaderMap::new();
        let body = br#"{"error":{"type":"usage_limit_reached","message":"The usage limit has been reached","plan_type":"plus","resets_in_seconds":7200}}"#;
        let v = judge_status(429, &h, body, &cx);
        assert!(v.retry);
        assert!(
            matches!(v.effect, Effect::Account { until_ms, transient: false, .. } if until_ms == now + 7_200_000)
        );
        let body =
            br#"{"error":{"type":"usage_limit_reached","message":"x","resets_at":1800000600}}"#;
        let v = judge_status(429, &h, body, &cx);
        assert!(matches!(v.effect, Effect::Account { until_ms, .. } if until_ms == now + 600_000));
        // Without a reset: the account's rateLimitDuration, as v1 (an hour by default).
        let body = br#"{"error":{"type":"usage_limit_reached","message":"x"}}"#;
        let v = judge_status(429, &h, body, &cx);
        assert!(
            matches!(v.effect, Effect::Account { until_ms, .. } if until_ms == now + 3_600_000)
        );
        // Not Codex's refusal: the ordinary short throttle.
        let v = judge_status(
            429,
            &h,
            br#"{"error":{"type":"requests","message":"slow down"}}"#,
            &cx,
        );
        assert!(matches!(
            v.effect,
            Effect::Account {
                transient: true,
                ..
            }
        ));
    }
}

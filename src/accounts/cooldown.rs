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
        return t;
    }
    if let Some(secs) = get("retry-after").and_then(|v| v.trim().parse::<i64>().ok()) {
        return now_ms.saturating_add(secs.max(1).saturating_mul(1000));
    }
    if let Some(t) = get("anthropic-ratelimit-unified-reset")
        .and_then(parse_reset)
        .filter(|t| *t > now_ms)
    {
        return t;
    }
    now_ms.saturating_add(fallback_mins.max(1) as i64 * 60_000)
}

/// Does the error body say the problem is this model (not the whole account)?
fn mentions_model(body: &[u8], model: &str) -> bool {
    !model.is_empty() && memchr::memmem::find(body, model.as_bytes()).is_some()
}

/// Judge an upstream error response.
pub fn judge_status(
    status: u16,
    h: &HeaderMap,
    body: &[u8],
    model: &str,
    now_ms: i64,
    fallback_mins: u32,
) -> Verdict {
    let text = || String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    match status {
        429 => {
            let until_ms = rate_limit_until(h, now_ms, fallback_mins);
            let reason = format!("rate limited (429) until {}", fmt_ms(until_ms));
            let effect = if mentions_model(body, model) {
                Effect::Model { until_ms, reason }
            } else {
                Effect::Account {
                    until_ms,
                    reason,
                    transient: false,
                }
            };
            Verdict {
                retry: true,
                effect,
            }
        }
        529 => Verdict {
            retry: true,
            effect: Effect::Account {
                until_ms: now_ms + OVERLOAD_COOLDOWN_SECS * 1000,
                reason: "overloaded (529)".into(),
                transient: true,
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
        404 if mentions_model(body, model) => Verdict {
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
        let v = judge_status(429, &h(&[("retry-after", "10")]), b"{}", "m", NOW, 60);
        assert!(v.retry);
        assert!(matches!(v.effect, Effect::Account { until_ms, .. } if until_ms == NOW + 10_000));
        let body = br#"{"type":"error","error":{"type":"rate_limit_error","message":"limit for claude-opus-4-1 output tokens"}}"#;
        let v = judge_status(429, &h(&[]), body, "claude-opus-4-1", NOW, 60);
        assert!(matches!(v.effect, Effect::Model { .. }));
        let v = judge_status(529, &h(&[]), b"", "m", NOW, 60);
        assert!(matches!(v.effect, Effect::Account { until_ms, .. } if until_ms == NOW + 60_000));
        let v = judge_status(401, &h(&[]), b"invalid x-api-key", "m", NOW, 60);
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
        let v = judge_status(400, &h(&[]), b"bad request", "m", NOW, 60);
        assert!(!v.retry && v.effect == Effect::None);
        assert!(judge_status(503, &h(&[]), b"", "m", NOW, 60).retry);
        assert!(judge_transport(NOW, "connect").retry);
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
                let v = judge_status(status, &h, &body, &model, now, fallback);
                match v.effect {
                    Effect::Account { until_ms, .. } | Effect::Model { until_ms, .. } => {
                        prop_assert!(until_ms >= now && until_ms <= now + MAX_COOLDOWN_MS);
                    }
                    Effect::NeedsAttention { .. } => prop_assert!(matches!(status, 401 | 403)),
                    Effect::None => prop_assert!(!v.retry),
                }
            }
        }
    }
}

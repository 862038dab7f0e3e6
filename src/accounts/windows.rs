//! Anthropic's subscription usage windows of a Claude OAuth account: the rolling 5-hour
//! window, the 7-day window, and the 7-day windows of single model families (Opus, Sonnet).
//!
//! Two sources fill them:
//! - `GET {base}/api/oauth/usage` (Bearer token, `anthropic-beta: oauth-2025-04-20`), which
//!   answers `{"five_hour": {"utilization": 22.0, "resets_at": "2026-02-20T14:00:00+00:00"},
//!   "seven_day": {..}, "seven_day_opus": null, "seven_day_sonnet": {..}, ..}` with
//!   utilisation in percent (the shape Claude Code's own `/usage` view reads; public
//!   write-ups of the endpoint agree);
//! - the `anthropic-ratelimit-unified-{5h,7d}-{utilization,reset,status}` headers on every
//!   Messages answer to an OAuth token, with utilisation as a fraction (0.94) and the reset in
//!   unix seconds, so the state moves between polls.
//!
//! ChatGPT (Codex OAuth) accounts have a 5-hour and a weekly window as well; the Codex backend
//! reports them on every answer in `x-codex-*` headers (`from_codex_headers`), and they are
//! kept in the same `Window::FiveHour` / `Window::SevenDay` slots.
//!
//! Utilisation is kept in hundredths of a percent (an integer: 9774 = 97.74 %).

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::Serialize;

/// One usage window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Window {
    FiveHour,
    SevenDay,
    SevenDayOpus,
    SevenDaySonnet,
}

impl Window {
    pub const ALL: [Window; 4] = [
        Window::FiveHour,
        Window::SevenDay,
        Window::SevenDayOpus,
        Window::SevenDaySonnet,
    ];

    /// The field name in `/api/oauth/usage`.
    pub fn usage_field(self) -> &'static str {
        match self {
            Window::FiveHour => "five_hour",
            Window::SevenDay => "seven_day",
            Window::SevenDayOpus => "seven_day_opus",
            Window::SevenDaySonnet => "seven_day_sonnet",
        }
    }

    /// v1's name in `GET /admin/claude-accounts/usage`.
    pub fn v1_name(self) -> &'static str {
        match self {
            Window::FiveHour => "fiveHour",
            Window::SevenDay => "sevenDay",
            Window::SevenDayOpus => "sevenDayOpus",
            Window::SevenDaySonnet => "sevenDaySonnet",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Does this window count requests for `family`? The 5-hour and 7-day windows count every
    /// model; a family window only its own.
    pub fn applies_to(self, family: Option<Family>) -> bool {
        match self {
            Window::FiveHour | Window::SevenDay => true,
            Window::SevenDayOpus => family == Some(Family::Opus),
            Window::SevenDaySonnet => family == Some(Family::Sonnet),
        }
    }
}

/// A Claude model family, as Anthropic's per-family weekly limits count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Opus,
    Sonnet,
    Haiku,
}

impl Family {
    /// The family a model name belongs to (no allocation: the scheduler asks per candidate).
    pub fn of(model: &str) -> Option<Family> {
        let has = |needle: &str| {
            model
                .as_bytes()
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
        };
        if has("opus") {
            Some(Family::Opus)
        } else if has("sonnet") {
            Some(Family::Sonnet)
        } else if has("haiku") {
            Some(Family::Haiku)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Opus => "opus",
            Family::Sonnet => "sonnet",
            Family::Haiku => "haiku",
        }
    }

    /// The key a family's parking is kept under among an account's model cooldowns.
    pub fn cooldown_key(self) -> &'static str {
        match self {
            Family::Opus => "family:opus",
            Family::Sonnet => "family:sonnet",
            Family::Haiku => "family:haiku",
        }
    }

    /// The family a `representative-claim` names (`seven_day_opus`, `seven_day_sonnet`, ...).
    pub fn of_claim(claim: &str) -> Option<Family> {
        claim
            .strip_prefix("seven_day_")
            .or_else(|| claim.strip_prefix("7d_"))
            .and_then(|f| match f {
                "opus" => Some(Family::Opus),
                "sonnet" => Some(Family::Sonnet),
                "haiku" => Some(Family::Haiku),
                _ => None,
            })
    }
}

/// One reading of a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reading {
    /// Hundredths of a percent used (0..=10000; an upstream may report past 100 %).
    pub used_centi: u32,
    pub resets_at_ms: Option<i64>,
}

impl Reading {
    /// Room left, in hundredths of a percent.
    pub fn room_centi(&self) -> u32 {
        10_000u32.saturating_sub(self.used_centi)
    }
}

/// Where the last readings came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Poll,
    Headers,
}

#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub readings: [Option<Reading>; 4],
    /// When the readings were last updated (unix ms; 0 = never).
    pub updated_ms: i64,
    pub source: Option<Source>,
    /// The last poll's error, if it failed.
    pub error: Option<String>,
}

impl Snapshot {
    pub fn get(&self, w: Window) -> Option<Reading> {
        self.readings[w.index()]
    }

    /// The window that will bind first for a request of `family`: the most used of those that
    /// count it (readings whose reset has passed count as empty). None without readings.
    pub fn binding(&self, family: Option<Family>, now_ms: i64) -> Option<(Window, Reading)> {
        Window::ALL
            .into_iter()
            .filter(|w| w.applies_to(family))
            .filter_map(|w| {
                let r = self.get(w)?;
                let expired = r.resets_at_ms.is_some_and(|t| t <= now_ms);
                Some((
                    w,
                    if expired {
                        Reading { used_centi: 0, ..r }
                    } else {
                        r
                    },
                ))
            })
            .max_by_key(|(_, r)| r.used_centi)
    }

    /// Never polled, no header readings, no poll error.
    pub fn is_empty(&self) -> bool {
        self.readings.iter().all(Option::is_none) && self.error.is_none()
    }

    /// v1's usage snapshot (`claudeAccountService.buildClaudeUsageSnapshot`): `updatedAt` and,
    /// per window, `utilization` (percent), `resetsAt` (RFC 3339) and `remainingSeconds`
    /// (never negative), nulls where there is no reading. v1 has `fiveHour`, `sevenDay` and
    /// `sevenDayOpus` (which it fills from `seven_day_sonnet`); crs fills `sevenDayOpus` from
    /// `seven_day_opus` and adds `sevenDaySonnet`, `source` and the last poll `error`.
    pub fn to_v1_json(&self, now_ms: i64) -> serde_json::Value {
        let ts = |ms: i64| DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339());
        let mut v = serde_json::json!({
            "updatedAt": (self.updated_ms > 0).then(|| ts(self.updated_ms)).flatten(),
            "source": self.source,
            "error": self.error,
        });
        for w in Window::ALL {
            let r = self.get(w);
            let resets = r.and_then(|r| r.resets_at_ms);
            v[w.v1_name()] = serde_json::json!({
                "utilization": r.map(|r| f64::from(r.used_centi) / 100.0),
                "resetsAt": resets.and_then(ts),
                "remainingSeconds": resets.map(|t| (t - now_ms).max(0) / 1000),
            });
        }
        v
    }

    /// v1's `codexUsage` (openaiAccountService.js `buildCodexUsageSnapshot`): `updatedAt`,
    /// and `primary` (the 5-hour window) and `secondary` (the weekly one) with `usedPercent`,
    /// `resetAfterSeconds`, `windowMinutes`, `resetAt` and `remainingSeconds`.
    pub fn to_codex_json(&self, now_ms: i64) -> serde_json::Value {
        let ts = |ms: i64| DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339());
        let window = |w: Window, minutes: u32| {
            let r = self.get(w);
            let resets = r.and_then(|r| r.resets_at_ms);
            serde_json::json!({
                "usedPercent": r.map(|r| f64::from(r.used_centi) / 100.0),
                "resetAfterSeconds": resets.map(|t| (t - self.updated_ms).max(0) / 1000),
                "windowMinutes": r.map(|_| minutes),
                "resetAt": resets.and_then(ts),
                "remainingSeconds": resets.map(|t| (t - now_ms).max(0) / 1000),
            })
        };
        serde_json::json!({
            "updatedAt": (self.updated_ms > 0).then(|| ts(self.updated_ms)).flatten(),
            "primary": window(Window::FiveHour, 300),
            "secondary": window(Window::SevenDay, 10_080),
        })
    }

    /// Room left in the binding window (hundredths of a percent); full room without readings.
    pub fn room_centi(&self, family: Option<Family>, now_ms: i64) -> u32 {
        self.binding(family, now_ms)
            .map(|(_, r)| r.room_centi())
            .unwrap_or(10_000)
    }
}

/// The windows of one account, shared between the relay (header updates), the poller and the
/// admin API.
#[derive(Debug, Default)]
pub struct Windows {
    inner: Mutex<Snapshot>,
}

impl Windows {
    pub fn snapshot(&self) -> Snapshot {
        self.inner.lock().clone()
    }

    /// Room left for `family` now (hundredths of a percent). Cheap: one lock, no allocation.
    pub fn room_centi(&self, family: Option<Family>, now_ms: i64) -> u32 {
        self.inner.lock().room_centi(family, now_ms)
    }

    /// Store a poll's readings: every window is replaced (a window the answer leaves out or
    /// sends as null no longer applies).
    pub fn set_polled(&self, readings: [Option<Reading>; 4], now_ms: i64) {
        let mut s = self.inner.lock();
        s.readings = readings;
        s.updated_ms = now_ms;
        s.source = Some(Source::Poll);
        s.error = None;
    }

    pub fn set_poll_error(&self, error: String) {
        self.inner.lock().error = Some(error);
    }

    /// Fold header readings in (only the windows the headers carry change).
    pub fn update_from_headers(&self, readings: &[(Window, Reading)], now_ms: i64) {
        if readings.is_empty() {
            return;
        }
        let mut s = self.inner.lock();
        for (w, r) in readings {
            s.readings[w.index()] = Some(*r);
        }
        s.updated_ms = now_ms;
        s.source = Some(Source::Headers);
    }
}

/// A utilisation string as a count of hundredths: `"97.74"` (percent) or `"0.9774"`
/// (fraction, `fraction = true`). Anything that is not a plain non-negative decimal is None.
fn parse_centi(s: &str, fraction: bool) -> Option<u32> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    let pct = if fraction { v * 100.0 } else { v };
    if !pct.is_finite() || pct < 0.0 {
        return None;
    }
    Some((pct * 100.0).round().min(1_000_000.0) as u32)
}

fn centi_of_json(v: &serde_json::Value) -> Option<u32> {
    match v {
        serde_json::Value::Number(n) => parse_centi(&n.to_string(), false),
        // Right after a reset the endpoint sends `null` until usage accrues: none used.
        serde_json::Value::Null => Some(0),
        _ => None,
    }
}

/// A reset time: RFC 3339, or unix seconds.
pub fn parse_reset_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc).timestamp_millis());
    }
    let secs: i64 = s.parse().ok()?;
    // Between 2001 and 2286: anything else is not a reset time.
    (1_000_000_000..10_000_000_000)
        .contains(&secs)
        .then(|| secs * 1000)
}

/// The readings of a `/api/oauth/usage` answer. None when the body is not that shape.
pub fn from_usage_body(body: &[u8]) -> Option<[Option<Reading>; 4]> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    if !obj.contains_key("five_hour") && !obj.contains_key("seven_day") {
        return None;
    }
    let mut out = [None; 4];
    for w in Window::ALL {
        let Some(win) = obj.get(w.usage_field()).and_then(|x| x.as_object()) else {
            continue;
        };
        let Some(used_centi) =
            centi_of_json(win.get("utilization").unwrap_or(&serde_json::Value::Null))
        else {
            continue;
        };
        let resets_at_ms = win
            .get("resets_at")
            .and_then(|r| r.as_str())
            .and_then(parse_reset_ms);
        out[w.index()] = Some(Reading {
            used_centi,
            resets_at_ms,
        });
    }
    Some(out)
}

/// The readings in an answer's headers: Anthropic's `anthropic-ratelimit-unified-*` (Claude
/// OAuth) and the Codex backend's `x-codex-*` (ChatGPT accounts; see `from_codex_headers`).
pub fn from_headers(h: &reqwest::header::HeaderMap, now_ms: i64) -> Vec<(Window, Reading)> {
    let mut out = from_anthropic_headers(h);
    out.extend(from_codex_headers(h, now_ms));
    out
}

/// The Codex backend's usage windows, as v1 reads them (v1 src/routes/openaiRoutes.js
/// `extractCodexUsageHeaders`): `x-codex-{primary,secondary}-used-percent` (percent),
/// `-reset-after-seconds` and `-window-minutes`. A window of about five hours is the 5-hour
/// window, one of about a week the weekly one; without the minutes the primary window is
/// taken as the 5-hour one and the secondary as the weekly one (their order on ChatGPT plans).
pub fn from_codex_headers(h: &reqwest::header::HeaderMap, now_ms: i64) -> Vec<(Window, Reading)> {
    // Read on every OAuth answer: fixed names, no formatting. (The window a reading is taken
    // as without its minutes; used percent, window minutes, reset after seconds.)
    const CLAIMS: [(Window, &str, &str, &str); 2] = [
        (
            Window::FiveHour,
            "x-codex-primary-used-percent",
            "x-codex-primary-window-minutes",
            "x-codex-primary-reset-after-seconds",
        ),
        (
            Window::SevenDay,
            "x-codex-secondary-used-percent",
            "x-codex-secondary-window-minutes",
            "x-codex-secondary-reset-after-seconds",
        ),
    ];
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::trim);
    let mut out: Vec<(Window, Reading)> = Vec::new();
    for (by_position, used, window_minutes, reset_after) in CLAIMS {
        let Some(used_centi) = get(used).and_then(|v| parse_centi(v, false)) else {
            continue;
        };
        let minutes = get(window_minutes)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|m| m.is_finite() && *m > 0.0);
        let window = match minutes {
            None => by_position,
            Some(m) if (240.0..=360.0).contains(&m) => Window::FiveHour,
            Some(m) if (6.0 * 1440.0..=8.0 * 1440.0).contains(&m) => Window::SevenDay,
            Some(_) => continue,
        };
        if out.iter().any(|(w, _)| *w == window) {
            continue;
        }
        let resets_at_ms = get(reset_after)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| now_ms.saturating_add((s.min(8.0 * 86_400.0) * 1000.0) as i64));
        out.push((
            window,
            Reading {
                used_centi,
                resets_at_ms,
            },
        ));
    }
    out
}

fn from_anthropic_headers(h: &reqwest::header::HeaderMap) -> Vec<(Window, Reading)> {
    // Read on every subscription answer: fixed names, no formatting.
    const CLAIMS: [(Window, &str, &str); 2] = [
        (
            Window::FiveHour,
            "anthropic-ratelimit-unified-5h-utilization",
            "anthropic-ratelimit-unified-5h-reset",
        ),
        (
            Window::SevenDay,
            "anthropic-ratelimit-unified-7d-utilization",
            "anthropic-ratelimit-unified-7d-reset",
        ),
    ];
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let mut out = Vec::new();
    for (w, utilization, reset) in CLAIMS {
        let Some(used_centi) = get(utilization).and_then(|v| parse_centi(v, true)) else {
            continue;
        };
        let resets_at_ms = get(reset).and_then(parse_reset_ms);
        out.push((
            w,
            Reading {
                used_centi,
                resets_at_ms,
            },
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn usage_body() {
        let body =
            br#"{"five_hour":{"utilization":22.0,"resets_at":"2026-02-20T14:00:00.364238+00:00"},
            "seven_day":{"utilization":97.74,"resets_at":"2026-02-24T10:00:01+00:00"},
            "seven_day_oauth_apps":null,"seven_day_opus":null,
            "seven_day_sonnet":{"utilization":null,"resets_at":"2026-02-24T16:00:00+00:00"},
            "extra_usage":{"is_enabled":true,"monthly_limit":5000,"used_credits":4887.0}}"#;
        let r = from_usage_body(body).unwrap();
        let five = r[Window::FiveHour.index()].unwrap();
        assert_eq!(five.used_centi, 2200);
        assert_eq!(
            five.resets_at_ms,
            Some(
                DateTime::parse_from_rfc3339("2026-02-20T14:00:00.364238Z")
                    .unwrap()
                    .timestamp_millis()
            )
        );
        assert_eq!(r[Window::SevenDay.index()].unwrap().used_centi, 9774);
        assert_eq!(r[Window::SevenDayOpus.index()], None);
        assert_eq!(r[Window::SevenDaySonnet.index()].unwrap().used_centi, 0);
        assert!(from_usage_body(b"{}").is_none());
        assert!(from_usage_body(b"not json").is_none());
    }

    #[test]
    fn headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("anthropic-ratelimit-unified-5h-utilization", "0.01"),
            ("anthropic-ratelimit-unified-5h-reset", "1785182400"),
            ("anthropic-ratelimit-unified-7d-utilization", "0.94x"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        let r = from_headers(&h, 0);
        assert_eq!(
            r,
            vec![(
                Window::FiveHour,
                Reading {
                    used_centi: 100,
                    resets_at_ms: Some(1_785_182_400_000)
                }
            )]
        );
    }

    #[test]
    fn codex_headers_fill_the_five_hour_and_weekly_windows() {
        let now = 1_800_000_000_000;
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-codex-primary-used-percent", "12.5"),
            ("x-codex-primary-window-minutes", "300"),
            ("x-codex-primary-reset-after-seconds", "3600"),
            ("x-codex-secondary-used-percent", "81"),
            ("x-codex-secondary-window-minutes", "10080"),
            ("x-codex-secondary-reset-after-seconds", "86400"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        let r = from_headers(&h, now);
        assert_eq!(
            r,
            vec![
                (
                    Window::FiveHour,
                    Reading {
                        used_centi: 1250,
                        resets_at_ms: Some(now + 3_600_000)
                    }
                ),
                (
                    Window::SevenDay,
                    Reading {
                        used_centi: 8100,
                        resets_at_ms: Some(now + 86_400_000)
                    }
                ),
            ]
        );
        // Swapped windows go by their minutes; an unknown window length is not guessed at.
        h.insert(
            "x-codex-primary-window-minutes",
            HeaderValue::from_static("10080"),
        );
        h.insert(
            "x-codex-secondary-window-minutes",
            HeaderValue::from_static("300"),
        );
        let r = from_codex_headers(&h, now);
        assert_eq!((r[0].0, r[1].0), (Window::SevenDay, Window::FiveHour));
        h.insert(
            "x-codex-primary-window-minutes",
            HeaderValue::from_static("60"),
        );
        assert_eq!(from_codex_headers(&h, now).len(), 1);
    }

    #[test]
    fn binding_window_and_room() {
        let now = 1_800_000_000_000;
        let mut s = Snapshot::default();
        assert_eq!(s.room_centi(None, now), 10_000, "no readings: full room");
        s.readings[Window::FiveHour.index()] = Some(Reading {
            used_centi: 4000,
            resets_at_ms: Some(now + 1000),
        });
        s.readings[Window::SevenDay.index()] = Some(Reading {
            used_centi: 6000,
            resets_at_ms: Some(now + 100_000),
        });
        s.readings[Window::SevenDayOpus.index()] = Some(Reading {
            used_centi: 9900,
            resets_at_ms: Some(now + 100_000),
        });
        assert_eq!(
            s.binding(Some(Family::Sonnet), now).unwrap().0,
            Window::SevenDay
        );
        assert_eq!(s.room_centi(Some(Family::Opus), now), 100);
        assert_eq!(s.room_centi(None, now), 4000);
        // A window past its reset counts as empty.
        s.readings[Window::SevenDay.index()]
            .as_mut()
            .unwrap()
            .resets_at_ms = Some(now - 1);
        assert_eq!(s.room_centi(None, now), 6000);
    }

    #[test]
    fn v1_shape() {
        let now = 1_800_000_000_000;
        let mut s = Snapshot::default();
        assert!(s.is_empty());
        s.readings[Window::FiveHour.index()] = Some(Reading {
            used_centi: 2250,
            resets_at_ms: Some(now + 3_725_900),
        });
        s.readings[Window::SevenDay.index()] = Some(Reading {
            used_centi: 9774,
            resets_at_ms: Some(now - 5),
        });
        s.updated_ms = now;
        s.source = Some(Source::Poll);
        let v = s.to_v1_json(now);
        assert_eq!(v["fiveHour"]["utilization"], 22.5);
        assert_eq!(v["fiveHour"]["remainingSeconds"], 3725);
        assert_eq!(
            v["fiveHour"]["resetsAt"],
            DateTime::from_timestamp_millis(now + 3_725_900)
                .unwrap()
                .to_rfc3339()
        );
        assert_eq!(v["sevenDay"]["utilization"], 97.74);
        assert_eq!(v["sevenDay"]["remainingSeconds"], 0, "never negative");
        assert_eq!(v["sevenDayOpus"]["utilization"], serde_json::Value::Null);
        assert_eq!(v["sevenDaySonnet"]["resetsAt"], serde_json::Value::Null);
        assert_eq!(v["source"], "poll");
        assert_eq!(v["error"], serde_json::Value::Null);
        assert!(v["updatedAt"].as_str().unwrap().starts_with("2027-01-15T"));
    }

    #[test]
    fn families() {
        assert_eq!(Family::of("claude-opus-4-1-20250805"), Some(Family::Opus));
        assert_eq!(Family::of("claude-sonnet-4-5"), Some(Family::Sonnet));
        assert_eq!(Family::of("claude-3-5-haiku-latest"), Some(Family::Haiku));
        assert_eq!(Family::of("gpt-5"), None);
        assert_eq!(Family::of_claim("seven_day_opus"), Some(Family::Opus));
        assert_eq!(Family::of_claim("seven_day"), None);
        assert_eq!(Family::of_claim("five_hour"), None);
    }

    #[test]
    fn centi_parsing() {
        assert_eq!(parse_centi("0.9774", true), Some(9774));
        assert_eq!(parse_centi("97.74", false), Some(9774));
        assert_eq!(parse_centi("-1", true), None);
        assert_eq!(parse_centi("1e5", true), None);
        assert_eq!(parse_centi(&"9".repeat(400), true), None, "infinite");
        assert_eq!(
            parse_centi(&"9".repeat(20), true),
            Some(1_000_000),
            "capped"
        );
        assert_eq!(parse_reset_ms("12"), None);
    }
}

//! Per-key running totals for limits: the rate window, daily / weekly-Claude / total cost and a
//! rolling five-hour cost. In memory, updated on every recorded request, rebuilt from the
//! usage buckets at start for keys that have cost limits.
//!
//! Costs are rated pico-dollars (`model::Picos`, added saturating); the limits on the key stay
//! in the micro-dollars they were configured in and are compared in pico-dollars
//! (`micros_to_picos`), so a limit trips when the exact spend reaches it.

use std::collections::VecDeque;

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveTime, TimeZone, Utc};

use super::Rejection;
use crate::model::{ApiKey, Micros, Picos, micros_to_picos};

const FIVE_HOURS_MS: i64 = 5 * 3600 * 1000;

#[derive(Debug, Default, Clone)]
pub struct Meter {
    pub win_start_ms: Option<i64>,
    pub win_requests: u64,
    pub win_tokens: u64,
    pub win_cost: Picos,
    /// Local day number (days from CE) that `daily` belongs to.
    pub day: i32,
    pub daily: Picos,
    /// Start of the weekly period `weekly_claude` belongs to (UTC ms).
    pub week_start_ms: i64,
    pub weekly_claude: Picos,
    pub total: Picos,
    /// (minute since epoch, cost) for the rolling five hours, oldest first.
    pub five_hour: VecDeque<(i64, Picos)>,
}

pub fn local_day(now: DateTime<Utc>, off: FixedOffset) -> i32 {
    now.with_timezone(&off).date_naive().num_days_from_ce()
}

/// The next local midnight, as a UTC instant.
pub fn next_midnight(now: DateTime<Utc>, off: FixedOffset) -> DateTime<Utc> {
    let d = now.with_timezone(&off).date_naive() + Duration::days(1);
    off.from_local_datetime(&d.and_time(NaiveTime::MIN))
        .single()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now + Duration::days(1))
}

/// Start of the weekly period containing `now`: the last `reset_day` (1 = Monday) at
/// `reset_hour`, local time.
pub fn week_start(
    now: DateTime<Utc>,
    off: FixedOffset,
    reset_day: u8,
    reset_hour: u8,
) -> DateTime<Utc> {
    let reset_day = reset_day.clamp(1, 7) as i64;
    let reset_hour = reset_hour.min(23) as u32;
    let local = now.with_timezone(&off);
    let wd = local.weekday().number_from_monday() as i64;
    let back = (wd - reset_day).rem_euclid(7);
    let date = local.date_naive() - Duration::days(back);
    let start = off
        .from_local_datetime(&date.and_hms_opt(reset_hour, 0, 0).expect("valid hour"))
        .single()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now);
    if start > now {
        start - Duration::days(7)
    } else {
        start
    }
}

fn dollars(m: Micros) -> f64 {
    crate::model::micros_to_dollars(m)
}

/// `spent` has reached a limit of `limit` micro-dollars (0 = no limit).
fn reached(spent: Picos, limit: Micros) -> bool {
    limit > 0 && spent >= micros_to_picos(limit)
}

impl Meter {
    /// Move every period forward to `now`, dropping what fell out of it.
    pub fn roll(&mut self, k: &ApiKey, now: DateTime<Utc>, off: FixedOffset) {
        let day = local_day(now, off);
        if day != self.day {
            self.day = day;
            self.daily = 0;
        }
        let ws = week_start(now, off, k.weekly_reset_day, k.weekly_reset_hour).timestamp_millis();
        if ws != self.week_start_ms {
            // A later period starts from zero; an earlier one (reset day/hour changed to an
            // earlier point) keeps what was counted.
            if ws > self.week_start_ms {
                self.weekly_claude = 0;
            }
            self.week_start_ms = ws;
        }
        let cutoff_min = (now.timestamp_millis() - FIVE_HOURS_MS) / 60_000;
        while self
            .five_hour
            .front()
            .is_some_and(|(m, _)| *m <= cutoff_min)
        {
            self.five_hour.pop_front();
        }
        if let Some(start) = self.win_start_ms {
            let len = k.rate_limit_window as i64 * 60_000;
            if len == 0 || now.timestamp_millis() >= start + len {
                self.win_start_ms = None;
                self.win_requests = 0;
                self.win_tokens = 0;
                self.win_cost = 0;
            }
        }
    }

    pub fn five_hour_cost(&self) -> Picos {
        self.five_hour
            .iter()
            .fold(0, |sum: Picos, (_, c)| sum.saturating_add(*c))
    }

    /// Cost limits: 402 when a limit is reached. `claude_request`: the weekly limit applies to
    /// Claude-family models.
    pub fn check_costs(
        &mut self,
        k: &ApiKey,
        now: DateTime<Utc>,
        off: FixedOffset,
        claude_request: bool,
    ) -> Result<(), Rejection> {
        self.roll(k, now, off);
        if reached(self.daily, k.daily_cost_limit_micros) {
            return Err(Rejection::Cost {
                code: "daily_cost_limit_exceeded",
                message: format!(
                    "Daily cost limit reached (${})",
                    dollars(k.daily_cost_limit_micros)
                ),
                current: self.daily,
                limit: micros_to_picos(k.daily_cost_limit_micros),
                reset_at: Some(next_midnight(now, off)),
            });
        }
        if reached(self.total, k.total_cost_limit_micros) {
            return Err(Rejection::Cost {
                code: "total_cost_limit_exceeded",
                message: format!(
                    "Total cost limit reached (${})",
                    dollars(k.total_cost_limit_micros)
                ),
                current: self.total,
                limit: micros_to_picos(k.total_cost_limit_micros),
                reset_at: None,
            });
        }
        if claude_request && reached(self.weekly_claude, k.weekly_opus_cost_limit_micros) {
            return Err(Rejection::Cost {
                code: "weekly_opus_cost_limit_exceeded",
                message: format!(
                    "Weekly Claude cost limit reached (${})",
                    dollars(k.weekly_opus_cost_limit_micros)
                ),
                current: self.weekly_claude,
                limit: micros_to_picos(k.weekly_opus_cost_limit_micros),
                reset_at: DateTime::from_timestamp_millis(self.week_start_ms)
                    .map(|t| t + Duration::days(7)),
            });
        }
        if k.five_hour_cost_limit_micros > 0 {
            let cur = self.five_hour_cost();
            if reached(cur, k.five_hour_cost_limit_micros) {
                // Frees up when the oldest spending leaves the five hours.
                let reset = self.five_hour.front().and_then(|(m, _)| {
                    DateTime::from_timestamp_millis(m * 60_000 + FIVE_HOURS_MS + 60_000)
                });
                return Err(Rejection::Cost {
                    code: "five_hour_cost_limit_exceeded",
                    message: format!(
                        "Five-hour cost limit reached (${})",
                        dollars(k.five_hour_cost_limit_micros)
                    ),
                    current: cur,
                    limit: micros_to_picos(k.five_hour_cost_limit_micros),
                    reset_at: reset,
                });
            }
        }
        Ok(())
    }

    /// The rate window: 429 when the window's requests, tokens or cost are used up; otherwise
    /// the request is counted (only admitted requests count).
    pub fn admit_window(&mut self, k: &ApiKey, now: DateTime<Utc>) -> Result<(), Rejection> {
        if k.rate_limit_window == 0 {
            return Ok(());
        }
        let len_ms = k.rate_limit_window as i64 * 60_000;
        let now_ms = now.timestamp_millis();
        if let Some(start) = self.win_start_ms {
            let reset_at = DateTime::from_timestamp_millis(start + len_ms).unwrap_or(now);
            let remaining_minutes = ((start + len_ms - now_ms).max(0) + 59_999) / 60_000;
            if k.rate_limit_requests > 0 && self.win_requests >= k.rate_limit_requests as u64 {
                return Err(Rejection::RateLimit {
                    message: format!(
                        "Request limit reached ({} requests); resets in {remaining_minutes} minutes",
                        k.rate_limit_requests
                    ),
                    kind: RateKind::Requests {
                        current: self.win_requests,
                        limit: k.rate_limit_requests as u64,
                    },
                    reset_at,
                    remaining_minutes,
                });
            }
            if k.token_limit > 0 && self.win_tokens >= k.token_limit {
                return Err(Rejection::RateLimit {
                    message: format!(
                        "Token limit reached ({} tokens); resets in {remaining_minutes} minutes",
                        k.token_limit
                    ),
                    kind: RateKind::Tokens {
                        current: self.win_tokens,
                        limit: k.token_limit,
                    },
                    reset_at,
                    remaining_minutes,
                });
            }
            if reached(self.win_cost, k.rate_limit_cost_micros) {
                return Err(Rejection::RateLimit {
                    message: format!(
                        "Cost limit for the window reached (${}); resets in {remaining_minutes} minutes",
                        dollars(k.rate_limit_cost_micros)
                    ),
                    kind: RateKind::Cost {
                        current: self.win_cost,
                        limit: micros_to_picos(k.rate_limit_cost_micros),
                    },
                    reset_at,
                    remaining_minutes,
                });
            }
        } else {
            self.win_start_ms = Some(now_ms);
        }
        self.win_requests += 1;
        Ok(())
    }

    /// Count an answered request's tokens and (rated) cost in pico-dollars.
    pub fn on_usage(
        &mut self,
        k: &ApiKey,
        now: DateTime<Utc>,
        off: FixedOffset,
        tokens: u64,
        cost: Picos,
        claude: bool,
    ) {
        self.roll(k, now, off);
        if self.win_start_ms.is_some() {
            self.win_tokens += tokens;
            self.win_cost = self.win_cost.saturating_add(cost);
        }
        self.daily = self.daily.saturating_add(cost);
        self.total = self.total.saturating_add(cost);
        if claude {
            self.weekly_claude = self.weekly_claude.saturating_add(cost);
        }
        if cost != 0 {
            let minute = now.timestamp_millis() / 60_000;
            match self.five_hour.back_mut() {
                Some((m, c)) if *m == minute => *c = c.saturating_add(cost),
                _ => self.five_hour.push_back((minute, cost)),
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum RateKind {
    Requests {
        current: u64,
        limit: u64,
    },
    Tokens {
        current: u64,
        limit: u64,
    },
    /// Pico-dollars, both.
    Cost {
        current: Picos,
        limit: Picos,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    fn off8() -> FixedOffset {
        FixedOffset::east_opt(8 * 3600).unwrap()
    }
    /// Pico-dollars per micro-dollar.
    const M: i64 = 1_000_000;

    #[test]
    fn week_start_matches_v1_period_string() {
        // Fixture: 2026-11-22T03:57Z (Sunday 11:57 in UTC+8) belongs to the week starting
        // Monday 2026-11-16 00:00 local.
        let ws = week_start(at("2026-11-22T03:57:07Z"), off8(), 1, 0);
        assert_eq!(ws, at("2026-11-15T16:00:00Z"));
        // Reset on Sunday 12:00 local: 11:57 on Sunday is still the previous period.
        let ws = week_start(at("2026-11-22T03:57:07Z"), off8(), 7, 12);
        assert_eq!(ws, at("2026-11-15T04:00:00Z"));
        let ws = week_start(at("2026-11-22T04:00:00Z"), off8(), 7, 12);
        assert_eq!(ws, at("2026-11-22T04:00:00Z"));
    }

    #[test]
    fn daily_resets_at_local_midnight() {
        assert_eq!(
            next_midnight(at("2026-11-22T03:57:07Z"), off8()),
            at("2026-11-22T16:00:00Z")
        );
        let mut k = ApiKey::new("k".into());
        k.daily_cost_limit_micros = 100;
        let mut m = Meter::default();
        m.on_usage(&k, at("2026-11-22T15:00:00Z"), off8(), 1, 150 * M, false);
        assert!(
            m.check_costs(&k, at("2026-11-22T15:59:00Z"), off8(), false)
                .is_err()
        );
        assert!(
            m.check_costs(&k, at("2026-11-22T16:00:00Z"), off8(), false)
                .is_ok()
        );
        assert_eq!(m.total, 150 * M);
    }

    #[test]
    fn window_counts_only_admitted_requests_and_expires() {
        let mut k = ApiKey::new("k".into());
        k.rate_limit_window = 60;
        k.rate_limit_requests = 2;
        let mut m = Meter::default();
        let t0 = at("2026-11-22T00:00:00Z");
        assert!(m.admit_window(&k, t0).is_ok());
        assert!(m.admit_window(&k, t0 + Duration::minutes(1)).is_ok());
        let e = m.admit_window(&k, t0 + Duration::minutes(2)).unwrap_err();
        match e {
            Rejection::RateLimit {
                kind: RateKind::Requests { current, limit },
                remaining_minutes,
                reset_at,
                ..
            } => {
                assert_eq!((current, limit, remaining_minutes), (2, 2, 58));
                assert_eq!(reset_at, t0 + Duration::minutes(60));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m.win_requests, 2, "a rejected request is not counted");
        m.roll(&k, t0 + Duration::minutes(60), off8());
        assert!(m.admit_window(&k, t0 + Duration::minutes(60)).is_ok());
        assert_eq!(m.win_requests, 1);
    }

    #[test]
    fn window_tokens_and_cost() {
        let mut k = ApiKey::new("k".into());
        k.rate_limit_window = 10;
        k.token_limit = 100;
        k.rate_limit_cost_micros = 1_000;
        let mut m = Meter::default();
        let t0 = at("2026-11-22T00:00:00Z");
        m.admit_window(&k, t0).unwrap();
        m.on_usage(&k, t0, off8(), 100, 10 * M, false);
        assert!(matches!(
            m.admit_window(&k, t0),
            Err(Rejection::RateLimit {
                kind: RateKind::Tokens {
                    current: 100,
                    limit: 100
                },
                ..
            })
        ));
        k.token_limit = 0;
        m.on_usage(&k, t0, off8(), 0, 990 * M, false);
        assert!(matches!(
            m.admit_window(&k, t0),
            Err(Rejection::RateLimit {
                kind: RateKind::Cost {
                    current: 1_000_000_000,
                    limit: 1_000_000_000
                },
                ..
            })
        ));
    }

    #[test]
    fn five_hour_rolls() {
        let mut k = ApiKey::new("k".into());
        k.five_hour_cost_limit_micros = 100;
        let mut m = Meter::default();
        let t0 = at("2026-11-22T00:00:00Z");
        m.on_usage(&k, t0, off8(), 0, 60 * M, false);
        m.on_usage(&k, t0 + Duration::hours(2), off8(), 0, 50 * M, false);
        assert!(
            m.check_costs(&k, t0 + Duration::hours(3), off8(), false)
                .is_err()
        );
        // The first spending leaves the window five hours later.
        assert!(
            m.check_costs(
                &k,
                t0 + Duration::hours(5) + Duration::minutes(1),
                off8(),
                false
            )
            .is_ok()
        );
        assert_eq!(m.five_hour_cost(), 50 * M);
    }

    #[test]
    fn weekly_limit_applies_to_claude_requests_and_resets() {
        let mut k = ApiKey::new("k".into());
        k.weekly_opus_cost_limit_micros = 100;
        let mut m = Meter::default();
        let t0 = at("2026-11-22T03:00:00Z");
        m.on_usage(&k, t0, off8(), 0, 100 * M, true);
        m.on_usage(&k, t0, off8(), 0, 500 * M, false);
        assert_eq!(m.weekly_claude, 100 * M);
        assert!(m.check_costs(&k, t0, off8(), true).is_err());
        assert!(
            m.check_costs(&k, t0, off8(), false).is_ok(),
            "not a Claude request"
        );
        // Monday 00:00 local starts a new week.
        assert!(
            m.check_costs(&k, at("2026-11-23T16:00:00Z"), off8(), true)
                .is_ok()
        );
    }

    /// Every cost limit, configured in micro-dollars, trips when the exact spend reaches it:
    /// one pico-dollar short passes, the limit itself does not. Spending that is not a whole
    /// number of micro-dollars per request counts in full.
    #[test]
    fn cost_limits_trip_at_the_configured_micro_dollars() {
        let t0 = at("2026-11-22T03:00:00Z");
        let limit_micros = 100;
        let limit = limit_micros * M;
        let key = |set: fn(&mut ApiKey, i64)| {
            let mut k = ApiKey::new("k".into());
            k.rate_limit_window = 60;
            set(&mut k, limit_micros);
            k
        };
        let keys: [(ApiKey, &str); 5] = [
            (key(|k, v| k.daily_cost_limit_micros = v), "daily"),
            (key(|k, v| k.total_cost_limit_micros = v), "total"),
            (key(|k, v| k.weekly_opus_cost_limit_micros = v), "weekly"),
            (key(|k, v| k.five_hour_cost_limit_micros = v), "five hours"),
            (key(|k, v| k.rate_limit_cost_micros = v), "window"),
        ];
        for (k, what) in &keys {
            let check = |m: &mut Meter| {
                m.check_costs(k, t0, off8(), true)?;
                m.admit_window(k, t0)
            };
            let mut m = Meter::default();
            m.admit_window(k, t0).unwrap();
            // 300 requests of 0.333333 micro-dollars: 99.9999 micro-dollars (rounded per
            // request they would have counted 0).
            for _ in 0..300 {
                m.on_usage(k, t0, off8(), 0, 333_333, true);
            }
            assert_eq!(m.total, limit - 100, "{what}");
            assert!(check(&mut m).is_ok(), "{what}: 100 pico-dollars short");
            m.on_usage(k, t0, off8(), 0, 99, true);
            assert!(check(&mut m).is_ok(), "{what}: one pico-dollar short");
            m.on_usage(k, t0, off8(), 0, 1, true);
            let e = check(&mut m).expect_err(what);
            match e {
                Rejection::Cost {
                    current, limit: l, ..
                } => {
                    assert_eq!((current, l), (limit, limit), "{what}")
                }
                Rejection::RateLimit {
                    kind: RateKind::Cost { current, limit: l },
                    ..
                } => assert_eq!((current, l), (limit, limit), "{what}"),
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn meters_saturate() {
        let k = ApiKey::new("k".into());
        let mut m = Meter::default();
        let t0 = at("2026-11-22T03:00:00Z");
        m.on_usage(&k, t0, off8(), 0, i64::MAX, true);
        m.on_usage(&k, t0, off8(), 0, i64::MAX, true);
        m.on_usage(&k, t0 + Duration::minutes(1), off8(), 0, 1, true);
        assert_eq!(
            (m.daily, m.total, m.weekly_claude),
            (i64::MAX, i64::MAX, i64::MAX)
        );
        assert_eq!(m.five_hour_cost(), i64::MAX);
    }
}

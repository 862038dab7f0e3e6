//! Usage accounting: counters, their buckets, and the ledger that group-commits them.

pub mod ledger;
pub mod live_pricing;
pub mod metrics;
pub mod pricing;
pub mod query;
pub mod realtime;

pub use crate::store::{Counters, TokenUsage};
pub use ledger::{Ledger, UsageEvent};

use chrono::{DateTime, Datelike, FixedOffset, Timelike, Utc};

/// The accounting clock: UTC shifted by the configured offset (v1's TIMEZONE_OFFSET).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset: FixedOffset,
}

/// Bucket periods of one instant in the accounting time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Periods {
    /// YYYY-MM-DD
    pub day: String,
    /// YYYY-MM
    pub month: String,
    /// YYYY-MM-DDTHH
    pub hour: String,
}

impl Clock {
    pub fn new(offset_minutes: i32) -> Self {
        Clock {
            offset: FixedOffset::east_opt(offset_minutes * 60)
                .unwrap_or(FixedOffset::east_opt(0).unwrap()),
        }
    }

    pub fn offset(&self) -> FixedOffset {
        self.offset
    }

    pub fn periods(&self, at: DateTime<Utc>) -> Periods {
        let l = at.with_timezone(&self.offset);
        Periods {
            day: format!("{:04}-{:02}-{:02}", l.year(), l.month(), l.day()),
            month: format!("{:04}-{:02}", l.year(), l.month()),
            hour: format!(
                "{:04}-{:02}-{:02}T{:02}",
                l.year(),
                l.month(),
                l.day(),
                l.hour()
            ),
        }
    }
}

/// Bucket keys. Period first, then dimension, so "everything on one day" is one prefix scan
/// and "one key over N days" is N point reads.
///
/// period: `t` (all time) | `d:YYYY-MM-DD` | `m:YYYY-MM` | `h:YYYY-MM-DDTHH`
/// dimension: `g` | `k|{key}` | `a|{account}` | `m|{model}` | `km|{key}|{model}` | `am|{account}|{model}`
pub mod bucket {
    pub const TOTAL: &str = "t";

    pub fn day(d: &str) -> String {
        format!("d:{d}")
    }
    pub fn month(m: &str) -> String {
        format!("m:{m}")
    }
    pub fn hour(h: &str) -> String {
        format!("h:{h}")
    }

    /// Model names come from clients and upstreams: keep the separator out of them.
    pub fn clean(s: &str) -> std::borrow::Cow<'_, str> {
        if s.contains('|') {
            std::borrow::Cow::Owned(s.replace('|', "_"))
        } else {
            std::borrow::Cow::Borrowed(s)
        }
    }

    pub fn global(period: &str) -> String {
        format!("{period}|g")
    }
    pub fn key(period: &str, key_id: &str) -> String {
        format!("{period}|k|{key_id}")
    }
    pub fn account(period: &str, account_id: &str) -> String {
        format!("{period}|a|{account_id}")
    }
    pub fn model(period: &str, model: &str) -> String {
        format!("{period}|m|{}", clean(model))
    }
    pub fn key_model(period: &str, key_id: &str, model: &str) -> String {
        format!("{period}|km|{key_id}|{}", clean(model))
    }
    pub fn account_model(period: &str, account_id: &str, model: &str) -> String {
        format!("{period}|am|{account_id}|{}", clean(model))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn periods_follow_the_offset() {
        // The fixture's traffic: 2026-11-22T03:57Z is 11:57 in UTC+8.
        let at = Utc.with_ymd_and_hms(2026, 11, 22, 3, 57, 7).unwrap();
        let p = Clock::new(480).periods(at);
        assert_eq!(p.day, "2026-11-22");
        assert_eq!(p.month, "2026-11");
        assert_eq!(p.hour, "2026-11-22T11");
        // The same instant is still the 21st in UTC-5.
        let p = Clock::new(-300).periods(at);
        assert_eq!(p.day, "2026-11-21");
        assert_eq!(p.hour, "2026-11-21T22");
        // Month boundary.
        let at = Utc.with_ymd_and_hms(2026, 11, 30, 20, 0, 0).unwrap();
        assert_eq!(Clock::new(480).periods(at).month, "2026-12");
    }

    #[test]
    fn model_names_cannot_break_keys() {
        assert_eq!(bucket::key_model("t", "k", "a|b"), "t|km|k|a_b");
    }
}

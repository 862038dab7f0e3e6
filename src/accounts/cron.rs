//! Five-field cron expressions (`minute hour day-of-month month day-of-week`), the format of
//! v1's scheduled account tests (v1 validates them with node-cron; `0 8 * * *` is its default).
//! Each field takes `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, and lists of these
//! separated by commas. Day of week is 0-7 (0 and 7 are Sunday). When both day fields are
//! restricted, a day matching either one matches, as in cron.

use chrono::{Datelike, NaiveDateTime, Timelike};

/// A parsed expression: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_restricted: bool,
    weekdays_restricted: bool,
}

/// The longest expression accepted (v1 refuses longer ones too).
pub const MAX_LEN: usize = 100;

fn field(s: &str, lo: u32, hi: u32) -> Result<u64, String> {
    let mut bits = 0u64;
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => (
                r,
                st.parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("bad step in {part:?}"))?,
            ),
            None => (part, 1),
        };
        let num = |x: &str| -> Result<u32, String> {
            x.parse::<u32>()
                .ok()
                .filter(|n| (lo..=hi).contains(n))
                .ok_or_else(|| format!("{x:?} is not between {lo} and {hi}"))
        };
        let (a, b) = match range {
            "*" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                // `5/15` means from 5 to the end, every 15.
                None if step > 1 => (num(r)?, hi),
                None => {
                    let n = num(r)?;
                    (n, n)
                }
            },
        };
        if a > b {
            return Err(format!("range {range:?} runs backwards"));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Cron {
    pub fn parse(expr: &str) -> Result<Cron, String> {
        if expr.len() > MAX_LEN {
            return Err(format!("longer than {MAX_LEN} characters"));
        }
        let f: Vec<&str> = expr.split_whitespace().collect();
        let [mi, h, dom, mo, dow] = f[..] else {
            return Err("expected 5 fields: minute hour day month weekday".into());
        };
        let mut weekdays = field(dow, 0, 7)? as u8;
        if weekdays & 0x80 != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        Ok(Cron {
            minutes: field(mi, 0, 59)?,
            hours: field(h, 0, 23)? as u32,
            days: field(dom, 1, 31)? as u32,
            months: field(mo, 1, 12)? as u16,
            weekdays,
            days_restricted: dom != "*",
            weekdays_restricted: dow != "*",
        })
    }

    /// Does the minute of `t` (local time) match?
    pub fn matches(&self, t: NaiveDateTime) -> bool {
        let day = self.days & (1 << t.day()) != 0;
        let weekday = self.weekdays & (1 << t.weekday().num_days_from_sunday()) != 0;
        let day_ok = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day || weekday,
            _ => day && weekday,
        };
        self.minutes & (1 << t.minute()) != 0
            && self.hours & (1 << t.hour()) != 0
            && self.months & (1 << t.month()) != 0
            && day_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn fields() {
        let c = Cron::parse("0 8 * * *").unwrap();
        assert!(c.matches(at("2026-03-02 08:00")));
        assert!(!c.matches(at("2026-03-02 08:01")));
        assert!(!c.matches(at("2026-03-02 09:00")));
        let c = Cron::parse("*/15 9-17 * * 1-5").unwrap();
        assert!(c.matches(at("2026-03-02 09:45")), "a Monday");
        assert!(!c.matches(at("2026-03-01 09:45")), "a Sunday");
        assert!(!c.matches(at("2026-03-02 09:50")));
        let c = Cron::parse("30 6 1,15 * 7").unwrap();
        assert!(c.matches(at("2026-03-15 06:30")), "day of month");
        assert!(c.matches(at("2026-03-08 06:30")), "or a Sunday (7)");
        assert!(!c.matches(at("2026-03-09 06:30")));
        let c = Cron::parse("5/20 * * 2 *").unwrap();
        assert!(c.matches(at("2026-02-03 11:45")));
        assert!(!c.matches(at("2026-03-03 11:45")), "February only");
        assert!(
            Cron::parse("* * * * *")
                .unwrap()
                .matches(at("2026-12-31 23:59"))
        );
    }

    #[test]
    fn refused() {
        for bad in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
            "* * * * 8",
            &"1,".repeat(60),
        ] {
            assert!(Cron::parse(bad).is_err(), "{bad:?}");
        }
    }
}

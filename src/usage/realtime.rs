//! Requests and tokens of the last hour in one-minute slots, for RPM/TPM on the dashboard.

use parking_lot::Mutex;

const SLOTS: usize = 60;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    minute: i64,
    requests: u64,
    tokens: u64,
    errors: u64,
}

#[derive(Debug)]
pub struct Realtime {
    slots: Mutex<[Slot; SLOTS]>,
}

impl Default for Realtime {
    fn default() -> Self {
        Realtime {
            slots: Mutex::new([Slot::default(); SLOTS]),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub rpm: f64,
    pub tpm: f64,
    pub errors_per_minute: f64,
    pub window_minutes: u32,
}

impl Realtime {
    pub fn add(&self, now_ms: i64, tokens: u64, ok: bool) {
        let minute = now_ms.div_euclid(60_000);
        let mut slots = self.slots.lock();
        let s = &mut slots[minute.rem_euclid(SLOTS as i64) as usize];
        if s.minute != minute {
            *s = Slot {
                minute,
                ..Default::default()
            };
        }
        if ok {
            s.requests += 1;
            s.tokens += tokens;
        } else {
            s.errors += 1;
        }
    }

    /// Averages over the last `minutes` whole-or-current minutes (1..=60).
    pub fn rates(&self, now_ms: i64, minutes: u32) -> Rates {
        let minutes = minutes.clamp(1, SLOTS as u32);
        let now_min = now_ms.div_euclid(60_000);
        let slots = self.slots.lock();
        let (mut r, mut t, mut e) = (0u64, 0u64, 0u64);
        for s in slots.iter() {
            if s.minute > now_min - minutes as i64 && s.minute <= now_min {
                r += s.requests;
                t += s.tokens;
                e += s.errors;
            }
        }
        let m = minutes as f64;
        Rates {
            rpm: r as f64 / m,
            tpm: t as f64 / m,
            errors_per_minute: e as f64 / m,
            window_minutes: minutes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_over_a_window() {
        let rt = Realtime::default();
        let t0 = 1_800_000_000_000i64;
        for i in 0..10 {
            rt.add(t0 + i * 60_000, 100, true);
        }
        rt.add(t0 + 9 * 60_000, 0, false);
        let r = rt.rates(t0 + 9 * 60_000, 5);
        assert_eq!(r.rpm, 1.0);
        assert_eq!(r.tpm, 100.0);
        assert_eq!(r.errors_per_minute, 0.2);
        // An hour later everything has left the window.
        assert_eq!(rt.rates(t0 + 70 * 60_000, 5).rpm, 0.0);
    }
}

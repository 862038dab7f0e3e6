//! Account health without an admin: accounts out of rotation come back by themselves, and
//! accounts with a test schedule are tested on it.
//!
//! - Recovery: an active account whose status is `unauthorized`, `blocked`, `error` or
//!   `refresh_failed` is tested again (`probe`) after `recovery_base`, then after twice as
//!   long after every failed test, up to `recovery_max` (1, 2, 4, ... 60 minutes by default).
//!   A `refresh_failed` Claude account tries a token refresh first. When the test passes, the
//!   status goes back to `active` (through `Accounts::update`) and its cooldowns are cleared.
//!   The backoff lives in memory: a restart starts it again.
//! - Scheduled tests: v1's per-account test config (`TestSchedule`: enabled, a cron expression
//!   in the accounting time zone, a model), as v1's accountTestSchedulerService runs them. The
//!   results go into the account's test history; they do not change its status.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{FixedOffset, Utc};
use parking_lot::Mutex;

use super::probe::{self, Trigger};
use super::{AccountRt, Accounts, oauth};
use crate::config::HealthConfig;
use crate::model::AccountStatus;

/// Statuses the recovery loop tests its way out of.
pub fn recoverable(s: &AccountStatus) -> bool {
    matches!(
        s,
        AccountStatus::Unauthorized
            | AccountStatus::Blocked
            | AccountStatus::Error
            | AccountStatus::RefreshFailed
    )
}

/// The wait before the next recovery test after `failures` failed ones: `base` x 2^failures,
/// at most `max`.
pub fn backoff(base: Duration, max: Duration, failures: u32) -> Duration {
    base.saturating_mul(1u32 << failures.min(20)).min(max)
}

#[derive(Debug, Clone, Copy, Default)]
struct Backoff {
    failures: u32,
    next_ms: i64,
}

#[derive(Default)]
struct State {
    backoff: HashMap<String, Backoff>,
    /// The local minute (unix minutes) of each account's last scheduled test.
    scheduled: HashMap<String, i64>,
    /// Accounts with a test under way.
    running: HashSet<String>,
}

struct Loop {
    accounts: Weak<Accounts>,
    cfg: HealthConfig,
    offset: FixedOffset,
    state: Mutex<State>,
}

/// Run the health loop while `accounts` lives.
pub fn spawn(accounts: &Arc<Accounts>, cfg: HealthConfig, offset: FixedOffset) {
    let l = Arc::new(Loop {
        accounts: Arc::downgrade(accounts),
        cfg,
        offset,
        state: Mutex::new(State::default()),
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(l.cfg.tick.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(accounts) = l.accounts.upgrade() else {
                return;
            };
            l.round(&accounts);
        }
    });
}

impl Loop {
    /// Start the tests that are due now.
    fn round(self: &Arc<Self>, accounts: &Arc<Accounts>) {
        let now = Utc::now();
        let now_ms = now.timestamp_millis();
        let minute = (now_ms + self.offset.local_minus_utc() as i64 * 1000).div_euclid(60_000);
        let local = now.with_timezone(&self.offset).naive_local();
        let pool = accounts.load();
        let mut st = self.state.lock();
        let present: HashSet<&str> = pool.by_id.keys().map(String::as_str).collect();
        st.backoff.retain(|id, _| present.contains(id.as_str()));
        st.scheduled.retain(|id, _| present.contains(id.as_str()));
        for acc in pool.accounts.iter().filter(|a| a.rec.is_active) {
            let id = &acc.rec.id;
            if st.running.contains(id) {
                continue;
            }
            if !self.cfg.recovery_base.is_zero() && recoverable(&acc.rec.status) {
                let b = st.backoff.entry(id.clone()).or_insert(Backoff {
                    failures: 0,
                    next_ms: now_ms + self.cfg.recovery_base.as_millis() as i64,
                });
                if b.next_ms <= now_ms {
                    st.running.insert(id.clone());
                    self.start(accounts, acc.clone(), Trigger::Recovery, None);
                }
                continue;
            }
            st.backoff.remove(id);
            let Some(sched) = acc.rec.test_schedule.as_ref().filter(|s| s.enabled) else {
                continue;
            };
            let due = super::cron::Cron::parse(&sched.cron_expression)
                .is_ok_and(|c| c.matches(local))
                && st.scheduled.get(id) != Some(&minute);
            if due {
                st.scheduled.insert(id.clone(), minute);
                st.running.insert(id.clone());
                let model = Some(sched.model.clone()).filter(|m| !m.is_empty());
                self.start(accounts, acc.clone(), Trigger::Scheduled, model);
            }
        }
    }

    fn start(
        self: &Arc<Self>,
        accounts: &Arc<Accounts>,
        acc: Arc<AccountRt>,
        trigger: Trigger,
        model: Option<String>,
    ) {
        let (me, accounts) = (self.clone(), accounts.clone());
        tokio::spawn(async move {
            let id = acc.rec.id.clone();
            if trigger == Trigger::Recovery {
                let ok = recover(&accounts, &acc).await;
                let mut st = me.state.lock();
                if ok {
                    st.backoff.remove(&id);
                } else {
                    let b = st.backoff.entry(id.clone()).or_default();
                    b.failures = b.failures.saturating_add(1);
                    let wait = backoff(me.cfg.recovery_base, me.cfg.recovery_max, b.failures);
                    b.next_ms = Utc::now().timestamp_millis() + wait.as_millis() as i64;
                    tracing::warn!(account_id = %id, account = %acc.rec.name, failures = b.failures, next_test_in_secs = wait.as_secs(), "account still fails its test; it stays out of rotation");
                }
                st.running.remove(&id);
            } else {
                let r = probe::run(&accounts, &acc, model.as_deref(), trigger).await;
                if r.ok {
                    tracing::info!(account_id = %id, latency_ms = r.latency_ms, "scheduled account test passed");
                } else {
                    tracing::warn!(account_id = %id, status = r.status, error = %r.message, "scheduled account test failed");
                }
                me.state.lock().running.remove(&id);
            }
        });
    }
}

/// One recovery attempt: a token refresh first for a `refresh_failed` OAuth account, then the
/// account test; back to `active` when it passes. True when the account is back.
async fn recover(accounts: &Arc<Accounts>, acc: &Arc<AccountRt>) -> bool {
    let id = acc.rec.id.clone();
    let mut acc = acc.clone();
    if acc.rec.status == AccountStatus::RefreshFailed
        && acc.kind().oauth()
        && !acc.rec.refresh_token.is_empty()
    {
        if oauth::refresh_now(accounts, &acc).await.is_err() {
            return false;
        }
        // The refresh stored new tokens: test with them.
        match accounts.load().by_id.get(&id) {
            Some(a) => acc = a.clone(),
            None => return false,
        }
    }
    let r = probe::run(accounts, &acc, None, Trigger::Recovery).await;
    if !r.ok {
        return false;
    }
    let was = acc.rec.status.clone();
    let updated = accounts
        .update(&id, |a| {
            if !recoverable(&a.status) {
                return Ok(false);
            }
            a.status = AccountStatus::Active;
            a.error_message.clear();
            Ok(true)
        })
        .await;
    match updated {
        Ok(Some(_)) => {
            acc.rt.reset_cooldown();
            tracing::info!(account_id = %id, account = %acc.rec.name, was = was.as_str(), latency_ms = r.latency_ms, "account passed its test and is back in rotation");
            true
        }
        Ok(None) => false,
        Err(e) => {
            tracing::error!(account_id = %id, error = %e, "recording an account's recovery failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let m = Duration::from_secs(60);
        let waits: Vec<u64> = (0..9)
            .map(|f| backoff(m, Duration::from_secs(3600), f).as_secs() / 60)
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(
            backoff(m, Duration::from_secs(3600), u32::MAX),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn statuses_recovered() {
        for s in ["unauthorized", "blocked", "error", "refresh_failed"] {
            assert!(recoverable(&AccountStatus::parse(s)), "{s}");
        }
        for s in ["active", "suspended", "rate_limited"] {
            assert!(!recoverable(&AccountStatus::parse(s)), "{s}");
        }
    }
}

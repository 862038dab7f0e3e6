//! The usage ledger: request handlers send one event per answered request; a dedicated thread
//! folds events into bucket deltas and commits them to the store in one transaction every
//! flush interval (or sooner under load).
//!
//! Guarantees: the hot path never waits for the store (sending is a channel push); a clean
//! shutdown commits everything; a crash loses at most one flush interval of events.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::{Clock, Counters, TokenUsage, bucket};
use crate::store::Store;

/// Commit early once this many events are pending.
const MAX_PENDING_EVENTS: usize = 2048;

#[derive(Debug, Clone)]
pub struct UsageEvent {
    pub key_id: String,
    pub account_id: String,
    /// The model the upstream answered with (after account model mapping).
    pub model: String,
    pub at: DateTime<Utc>,
    pub usage: TokenUsage,
    pub real_cost_micros: i64,
    pub rated_cost_micros: i64,
}

enum Msg {
    Event(Box<UsageEvent>),
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ledger")
    }
}

impl Ledger {
    pub fn start(store: Arc<Store>, clock: Clock, flush_every: Duration) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("crs-ledger".into())
            .spawn(move || run(store, clock, flush_every, rx))
            .expect("spawning the ledger thread");
        Ledger { tx }
    }

    /// Record one answered request. Never blocks.
    pub fn record(&self, ev: UsageEvent) {
        if self.tx.send(Msg::Event(Box::new(ev))).is_err() {
            tracing::error!("usage ledger is stopped; a usage event was dropped");
        }
    }

    /// Commit everything sent so far; returns once it is in the store.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Commit everything and stop the ledger thread.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

/// Every bucket one event lands in: 6 dimensions x 4 periods.
pub fn bucket_keys(clock: &Clock, ev: &UsageEvent) -> Vec<String> {
    let p = clock.periods(ev.at);
    let periods = [
        bucket::TOTAL.to_owned(),
        bucket::day(&p.day),
        bucket::month(&p.month),
        bucket::hour(&p.hour),
    ];
    let mut keys = Vec::with_capacity(24);
    for period in &periods {
        keys.push(bucket::global(period));
        keys.push(bucket::key(period, &ev.key_id));
        keys.push(bucket::model(period, &ev.model));
        keys.push(bucket::key_model(period, &ev.key_id, &ev.model));
        if !ev.account_id.is_empty() {
            keys.push(bucket::account(period, &ev.account_id));
            keys.push(bucket::account_model(period, &ev.account_id, &ev.model));
        }
    }
    keys
}

fn run(store: Arc<Store>, clock: Clock, flush_every: Duration, rx: mpsc::Receiver<Msg>) {
    let mut pending: HashMap<String, Counters> = HashMap::new();
    let mut pending_events = 0usize;
    let mut first_pending: Option<Instant> = None;

    let commit = |pending: &mut HashMap<String, Counters>, pending_events: &mut usize| {
        if pending.is_empty() {
            return;
        }
        match store.apply_usage(pending.iter().map(|(k, v)| (k.as_str(), v))) {
            Ok(()) => {
                tracing::debug!(
                    events = *pending_events,
                    buckets = pending.len(),
                    "usage committed"
                );
                pending.clear();
                *pending_events = 0;
            }
            // Keep the deltas and try again at the next commit: nothing is dropped.
            Err(e) => {
                tracing::error!(error = %e, events = *pending_events, "usage commit failed; will retry")
            }
        }
    };

    loop {
        let wait = match first_pending {
            Some(t) => flush_every.saturating_sub(t.elapsed()),
            None => Duration::from_secs(3600),
        };
        match rx.recv_timeout(wait) {
            Ok(Msg::Event(ev)) => {
                let delta =
                    Counters::from_usage(&ev.usage, ev.real_cost_micros, ev.rated_cost_micros);
                for k in bucket_keys(&clock, &ev) {
                    pending.entry(k).or_default().add(&delta);
                }
                pending_events += 1;
                first_pending.get_or_insert_with(Instant::now);
                if pending_events >= MAX_PENDING_EVENTS {
                    commit(&mut pending, &mut pending_events);
                    first_pending = (!pending.is_empty()).then(Instant::now);
                }
            }
            Ok(Msg::Flush(done)) => {
                commit(&mut pending, &mut pending_events);
                first_pending = (!pending.is_empty()).then(Instant::now);
                let _ = done.send(());
            }
            Ok(Msg::Shutdown(done)) => {
                drain(&rx, &clock, &mut pending, &mut pending_events);
                commit(&mut pending, &mut pending_events);
                let _ = done.send(());
                return;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                commit(&mut pending, &mut pending_events);
                first_pending = (!pending.is_empty()).then(Instant::now);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                commit(&mut pending, &mut pending_events);
                return;
            }
        }
    }
}

/// Take events already queued behind a shutdown request.
fn drain(
    rx: &mpsc::Receiver<Msg>,
    clock: &Clock,
    pending: &mut HashMap<String, Counters>,
    n: &mut usize,
) {
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Event(ev) => {
                let delta =
                    Counters::from_usage(&ev.usage, ev.real_cost_micros, ev.rated_cost_micros);
                for k in bucket_keys(clock, &ev) {
                    pending.entry(k).or_default().add(&delta);
                }
                *n += 1;
            }
            Msg::Flush(done) | Msg::Shutdown(done) => {
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn ev(key: &str, input: u64) -> UsageEvent {
        UsageEvent {
            key_id: key.into(),
            account_id: "acc".into(),
            model: "claude-sonnet-4-5".into(),
            at: Utc.with_ymd_and_hms(2026, 11, 22, 3, 57, 7).unwrap(),
            usage: TokenUsage {
                input_tokens: input,
                output_tokens: 2,
                ..Default::default()
            },
            real_cost_micros: 5,
            rated_cost_micros: 5,
        }
    }

    #[tokio::test]
    async fn events_land_in_every_bucket_and_shutdown_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("crs.redb")).unwrap();
        // A long interval: only shutdown can have committed these.
        let ledger = Ledger::start(store.clone(), Clock::new(480), Duration::from_secs(3600));
        for i in 0..100 {
            ledger.record(ev(if i % 2 == 0 { "k1" } else { "k2" }, 10));
        }
        ledger.shutdown().await;
        let g = store.usage_get("t|g").unwrap().unwrap();
        assert_eq!(g.requests, 100);
        assert_eq!(g.input_tokens, 1000);
        assert_eq!(g.real_cost_micros, 500);
        let k1 = store.usage_get("d:2026-11-22|k|k1").unwrap().unwrap();
        assert_eq!(k1.requests, 50);
        assert_eq!(
            store
                .usage_get("h:2026-11-22T11|am|acc|claude-sonnet-4-5")
                .unwrap()
                .unwrap()
                .requests,
            100
        );
        assert_eq!(
            store
                .usage_get("m:2026-11|km|k2|claude-sonnet-4-5")
                .unwrap()
                .unwrap()
                .output_tokens,
            100
        );
    }

    #[tokio::test]
    async fn flush_makes_events_visible() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("crs.redb")).unwrap();
        let ledger = Ledger::start(store.clone(), Clock::new(0), Duration::from_secs(3600));
        ledger.record(ev("k", 1));
        assert!(store.usage_get("t|k|k").unwrap().is_none());
        ledger.flush().await;
        assert_eq!(store.usage_get("t|k|k").unwrap().unwrap().requests, 1);
        ledger.shutdown().await;
    }

    #[tokio::test]
    async fn interval_commits_without_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("crs.redb")).unwrap();
        let ledger = Ledger::start(store.clone(), Clock::new(0), Duration::from_millis(20));
        ledger.record(ev("k", 1));
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.usage_get("t|k|k").unwrap().is_none() {
            assert!(Instant::now() < deadline, "interval commit never happened");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        ledger.shutdown().await;
    }
}

//! The usage ledger: request handlers send one event per request that reached an upstream; a
//! dedicated thread folds events into bucket deltas and request records and commits them to
//! the store in one transaction every flush interval (or sooner under load).
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
pub use crate::store::RequestRecord;
use crate::store::Store;

/// Commit early once this many events are pending.
const MAX_PENDING_EVENTS: usize = 2048;
/// Request records held while commits fail (the oldest go first).
const MAX_PENDING_RECORDS: usize = 20_000;
/// Prune old hourly buckets at most this often.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UsageEvent {
    pub key_id: String,
    pub account_id: String,
    /// The model the upstream answered with (after account model mapping).
    pub model: String,
    pub at: DateTime<Utc>,
    pub usage: TokenUsage,
    /// Exact cost by the price table, in pico-dollars (`model::Picos`).
    pub real_cost_picos: crate::model::Picos,
    /// `real_cost_picos` x the key's service rate, rounded to a pico-dollar once.
    pub rated_cost_picos: crate::model::Picos,
    /// HTTP status the upstream answered with; not 2xx = a failed request (counted in
    /// `errors`, not in `requests`).
    pub status: u16,
    /// Request start to last byte.
    pub latency_ms: u32,
    pub stream: bool,
}

impl UsageEvent {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

impl From<&UsageEvent> for RequestRecord {
    fn from(e: &UsageEvent) -> Self {
        RequestRecord {
            timestamp: Some(e.at),
            key_id: e.key_id.clone(),
            account_id: e.account_id.clone(),
            model: e.model.clone(),
            input_tokens: e.usage.input_tokens,
            output_tokens: e.usage.output_tokens,
            cache_create_tokens: e.usage.cache_create_tokens,
            cache_read_tokens: e.usage.cache_read_tokens,
            ephemeral_5m_tokens: e.usage.ephemeral_5m_tokens,
            ephemeral_1h_tokens: e.usage.ephemeral_1h_tokens,
            real_cost_picos: e.real_cost_picos,
            rated_cost_picos: e.rated_cost_picos,
            latency_ms: e.latency_ms,
            status: e.status,
            stream: e.stream,
        }
    }
}

/// Control messages to the ledger thread. Usage events do not go through the channel: they
/// are pushed onto a shared queue, and the thread is woken only when a batch starts or fills
/// up, not once per request.
enum Msg {
    Wake,
    Sticky(String, crate::model::StickyEntry),
    Flush(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
    /// Commit what is pending, then write events to this file instead of the store (the
    /// store is being handed over to another process).
    Handoff(std::path::PathBuf, oneshot::Sender<bool>),
    /// Back to the store: the events spilled meanwhile are folded in again.
    Resume(oneshot::Sender<()>),
}

/// A file of usage events (one JSON line each) written while the store belongs to another
/// process: `{name}.partial` while written, `{name}` when complete.
struct Spill {
    path: std::path::PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl Spill {
    fn partial(path: &std::path::Path) -> std::path::PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".partial");
        p.into()
    }

    fn create(path: std::path::PathBuf) -> std::io::Result<Spill> {
        let f = std::fs::File::create(Self::partial(&path))?;
        Ok(Spill {
            path,
            out: std::io::BufWriter::new(f),
        })
    }

    fn write(&mut self, ev: &UsageEvent) {
        use std::io::Write;
        let r = serde_json::to_writer(&mut self.out, ev)
            .map_err(std::io::Error::other)
            .and_then(|_| self.out.write_all(b"\n"));
        if let Err(e) = r {
            tracing::error!(error = %e, "writing a usage event to the handoff file failed");
        }
    }

    /// Complete the file (flushed, synced, renamed) and return its path.
    fn finish(mut self) -> std::path::PathBuf {
        use std::io::Write;
        let r = self
            .out
            .flush()
            .and_then(|_| self.out.get_ref().sync_all())
            .and_then(|_| std::fs::rename(Self::partial(&self.path), &self.path));
        if let Err(e) = r {
            tracing::error!(error = %e, "completing the usage handoff file failed");
        }
        self.path
    }
}

/// Read a completed handoff file's events.
pub fn read_spill(path: &std::path::Path) -> std::io::Result<Vec<UsageEvent>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

type Queue = std::sync::Arc<parking_lot::Mutex<Vec<UsageEvent>>>;

#[derive(Clone)]
pub struct Ledger {
    tx: mpsc::Sender<Msg>,
    queue: Queue,
    /// What the ledger thread folds from the events for `/metrics`.
    pub metrics: Arc<super::metrics::UsageMetrics>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ledger")
    }
}

/// How long data is kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Hourly buckets older than this are deleted (day and month buckets are kept).
    pub hourly_days: u32,
    /// Request records kept per key.
    pub records_per_key: usize,
    /// Request records kept in the global recent list.
    pub records_global: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            hourly_days: 31,
            records_per_key: 200,
            records_global: 2000,
        }
    }
}

impl Ledger {
    pub fn start(store: Arc<Store>, clock: Clock, flush_every: Duration) -> Self {
        Self::start_with(store, clock, flush_every, Retention::default())
    }

    pub fn start_with(
        store: Arc<Store>,
        clock: Clock,
        flush_every: Duration,
        retention: Retention,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let queue: Queue = Default::default();
        let q = queue.clone();
        let metrics: Arc<super::metrics::UsageMetrics> = Default::default();
        let m = metrics.clone();
        std::thread::Builder::new()
            .name("crs-ledger".into())
            .spawn(move || Worker::new(store, clock, retention, m).run(flush_every, rx, q))
            .expect("spawning the ledger thread");
        Ledger { tx, queue, metrics }
    }

    /// Events recorded and not yet taken by the ledger thread (for `/metrics`).
    pub fn queued(&self) -> usize {
        self.queue.lock().len()
    }

    /// Record one request. Never blocks on the store: a push onto the queue, and a wake-up of
    /// the ledger thread only when a batch starts or is full.
    pub fn record(&self, ev: UsageEvent) {
        let n = {
            let mut q = self.queue.lock();
            q.push(ev);
            q.len()
        };
        if (n == 1 || n == MAX_PENDING_EVENTS) && self.tx.send(Msg::Wake).is_err() {
            tracing::error!("usage ledger is stopped; usage events are not being committed");
        }
    }

    /// Persist a sticky-session mapping with the next commit.
    pub fn sticky(&self, key: String, entry: crate::model::StickyEntry) {
        let _ = self.tx.send(Msg::Sticky(key, entry));
    }

    /// Commit everything sent so far; returns once it is in the store.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Commit what is pending, then write events to `path` (JSON lines) until `resume` or
    /// `shutdown`, which completes the file. False if the file could not be created (the
    /// ledger stays on the store).
    pub async fn handoff(&self, path: std::path::PathBuf) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Handoff(path, tx)).is_ok() {
            return rx.await.unwrap_or(false);
        }
        false
    }

    /// Back to the store after `handoff`: what was spilled meanwhile is committed.
    pub async fn resume(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Resume(tx)).is_ok() {
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

/// Every bucket one event lands in: 6 dimensions x 4 periods (accounts only when known).
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

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Group {
    key_id: String,
    account_id: String,
    model: String,
    /// Hour number in the accounting time zone: every bucket period (hour, day, month) is a
    /// function of it.
    hour: i64,
}

struct Worker {
    store: Arc<Store>,
    clock: Clock,
    retention: Retention,
    /// Events folded by (key, account, model, hour): expanding each event into its 24 buckets
    /// happens once per group at commit time, not once per event.
    pending: HashMap<Group, Counters>,
    records: Vec<RequestRecord>,
    sticky: HashMap<String, crate::model::StickyEntry>,
    events: usize,
    /// Commits that failed in a row.
    failures: u64,
    last_prune: Option<Instant>,
    metrics: Arc<super::metrics::UsageMetrics>,
    /// Set while the store is handed over: events go to this file.
    spill: Option<Spill>,
}

impl Worker {
    fn new(
        store: Arc<Store>,
        clock: Clock,
        retention: Retention,
        metrics: Arc<super::metrics::UsageMetrics>,
    ) -> Self {
        Worker {
            store,
            clock,
            retention,
            pending: HashMap::new(),
            records: Vec::new(),
            sticky: HashMap::new(),
            events: 0,
            failures: 0,
            last_prune: None,
            metrics,
            spill: None,
        }
    }

    fn add(&mut self, ev: &UsageEvent) {
        let delta = if ev.ok() {
            Counters::from_usage(&ev.usage, ev.real_cost_picos, ev.rated_cost_picos)
        } else {
            Counters::error()
        };
        let g = Group {
            key_id: ev.key_id.clone(),
            account_id: ev.account_id.clone(),
            model: ev.model.clone(),
            hour: (ev.at.timestamp() + self.offset_secs()).div_euclid(3600),
        };
        self.pending.entry(g).or_default().add(&delta);
        self.records.push(RequestRecord::from(ev));
        self.events += 1;
        self.metrics.observe(ev);
        self.metrics
            .pending
            .store(self.events as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Keep at most `MAX_PENDING_RECORDS` request records, the newest; returns how many went.
    fn bound_records(&mut self) -> usize {
        let dropped = self.records.len().saturating_sub(MAX_PENDING_RECORDS);
        self.records.drain(..dropped);
        dropped
    }

    fn offset_secs(&self) -> i64 {
        self.clock.offset().local_minus_utc() as i64
    }

    /// The bucket deltas of everything pending.
    fn deltas(&self) -> HashMap<String, Counters> {
        let mut out: HashMap<String, Counters> = HashMap::with_capacity(self.pending.len() * 24);
        for (g, c) in &self.pending {
            let ev = UsageEvent {
                key_id: g.key_id.clone(),
                account_id: g.account_id.clone(),
                model: g.model.clone(),
                at: DateTime::from_timestamp(g.hour * 3600 - self.offset_secs(), 0)
                    .unwrap_or_default(),
                usage: TokenUsage::default(),
                real_cost_picos: 0,
                rated_cost_picos: 0,
                status: 200,
                latency_ms: 0,
                stream: false,
            };
            for k in bucket_keys(&self.clock, &ev) {
                out.entry(k).or_default().add(c);
            }
        }
        out
    }

    fn commit(&mut self) {
        if self.spill.is_some() {
            return;
        }
        if !self.sticky.is_empty() {
            let rows: Vec<(String, Vec<u8>)> = self
                .sticky
                .iter()
                .filter_map(|(k, e)| serde_json::to_vec(e).ok().map(|b| (k.clone(), b)))
                .collect();
            match self.store.put_raw_many(crate::store::Table::Sticky, &rows) {
                Ok(()) => self.sticky.clear(),
                Err(e) => {
                    tracing::warn!(error = %e, "persisting sticky sessions failed; will retry")
                }
            }
        }
        if self.events == 0 {
            return;
        }
        let deltas = self.deltas();
        let started = Instant::now();
        let r = self.store.commit_usage(
            deltas.iter().map(|(k, v)| (k.as_str(), v)),
            &self.records,
            self.retention.records_per_key,
            self.retention.records_global,
        );
        self.metrics
            .committed(started.elapsed().as_secs_f64(), r.is_ok());
        if r.is_ok() {
            self.metrics
                .pending
                .store(0, std::sync::atomic::Ordering::Relaxed);
        }
        match r {
            Ok(()) => {
                tracing::debug!(
                    events = self.events,
                    buckets = deltas.len(),
                    "usage committed"
                );
                if self.failures > 0 {
                    tracing::info!(failures = self.failures, "usage commit succeeded again");
                    self.failures = 0;
                }
                self.pending.clear();
                self.records.clear();
                self.events = 0;
            }
            // Keep the deltas and try again at the next commit: no counted usage is dropped.
            // Request records (a display log, trimmed to the newest anyway) are kept up to a
            // bound, so a store that keeps failing cannot grow memory without end.
            Err(e) => {
                let dropped = self.bound_records();
                self.failures += 1;
                if self.failures == 1 || self.failures.is_multiple_of(100) {
                    tracing::error!(
                        error = %e,
                        events = self.events,
                        failures = self.failures,
                        records_dropped = dropped,
                        "ALERT: usage commit failed; usage is kept in memory and retried"
                    )
                }
            }
        }
    }

    fn maybe_prune(&mut self) {
        if self.last_prune.is_some_and(|t| t.elapsed() < PRUNE_EVERY) {
            return;
        }
        self.last_prune = Some(Instant::now());
        let cutoff = Utc::now() - chrono::Duration::days(self.retention.hourly_days as i64);
        let before = bucket::hour(&self.clock.periods(cutoff).hour);
        match self.store.prune_usage_before(&before) {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(buckets = n, before = %before, "pruned old hourly usage buckets")
            }
            Err(e) => tracing::warn!(error = %e, "pruning hourly usage failed"),
        }
    }

    fn drain(&mut self, queue: &Queue) {
        let batch = std::mem::take(&mut *queue.lock());
        for ev in &batch {
            match &mut self.spill {
                Some(s) => s.write(ev),
                None => self.add(ev),
            }
        }
    }

    fn run(mut self, flush_every: Duration, rx: mpsc::Receiver<Msg>, queue: Queue) {
        // When the pending batch is due.
        let mut due: Option<Instant> = None;
        loop {
            let wait = match due {
                Some(t) => t.saturating_duration_since(Instant::now()),
                None => PRUNE_EVERY,
            };
            match rx.recv_timeout(wait) {
                Ok(Msg::Wake) => {
                    due.get_or_insert_with(|| Instant::now() + flush_every);
                    if queue.lock().len() >= MAX_PENDING_EVENTS {
                        self.drain(&queue);
                        self.commit();
                        due = (self.events > 0).then(|| Instant::now() + flush_every);
                    }
                }
                Ok(Msg::Sticky(k, e)) => {
                    self.sticky.insert(k, e);
                    due.get_or_insert_with(|| Instant::now() + flush_every);
                }
                Ok(Msg::Flush(done)) => {
                    self.drain(&queue);
                    self.commit();
                    due = (self.events > 0 || !self.sticky.is_empty())
                        .then(|| Instant::now() + flush_every);
                    let _ = done.send(());
                }
                Ok(Msg::Handoff(path, done)) => {
                    self.drain(&queue);
                    self.commit();
                    match Spill::create(path) {
                        Ok(s) => {
                            self.spill = Some(s);
                            let _ = done.send(self.events == 0);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "creating the usage handoff file failed");
                            let _ = done.send(false);
                        }
                    }
                }
                Ok(Msg::Resume(done)) => {
                    if let Some(s) = self.spill.take() {
                        let path = s.finish();
                        for ev in read_spill(&path).unwrap_or_default() {
                            self.add(&ev);
                        }
                        let _ = std::fs::remove_file(&path);
                    }
                    self.drain(&queue);
                    self.commit();
                    let _ = done.send(());
                }
                Ok(Msg::Shutdown(done)) => {
                    // Take what is already queued behind the shutdown request.
                    while let Ok(msg) = rx.try_recv() {
                        match msg {
                            Msg::Wake => {}
                            Msg::Sticky(k, e) => {
                                self.sticky.insert(k, e);
                            }
                            Msg::Flush(d) | Msg::Shutdown(d) | Msg::Resume(d) => {
                                let _ = d.send(());
                            }
                            Msg::Handoff(_, d) => {
                                let _ = d.send(false);
                            }
                        }
                    }
                    self.drain(&queue);
                    self.commit();
                    if let Some(s) = self.spill.take() {
                        let path = s.finish();
                        tracing::info!(file = %path.display(), "usage of the last requests handed over");
                    }
                    // Close the store handle before answering, so a caller that reopens the
                    // data directory right after shutdown finds it free.
                    drop(self);
                    let _ = done.send(());
                    return;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.drain(&queue);
                    self.commit();
                    due = (self.events > 0).then(|| Instant::now() + flush_every);
                    self.maybe_prune();
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    self.drain(&queue);
                    self.commit();
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn records_held_for_a_failing_store_are_bounded_to_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("crs.redb")).unwrap();
        let mut w = Worker::new(
            store,
            Clock::new(0),
            Retention::default(),
            Default::default(),
        );
        for i in 0..(MAX_PENDING_RECORDS as u64 + 500) {
            w.add(&ev("k1", i));
        }
        assert_eq!(w.bound_records(), 500);
        assert_eq!(w.records.len(), MAX_PENDING_RECORDS);
        assert_eq!(w.records[0].input_tokens, 500, "the oldest went first");
        assert_eq!(
            w.events,
            MAX_PENDING_RECORDS + 500,
            "counted usage is all kept"
        );
    }

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
            real_cost_picos: 5,
            rated_cost_picos: 5,
            status: 200,
            latency_ms: 10,
            stream: false,
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
        let mut failed = ev("k1", 0);
        failed.status = 529;
        ledger.record(failed);
        ledger.shutdown().await;
        let g = store.usage_get("t|g").unwrap().unwrap();
        assert_eq!(g.requests, 100);
        assert_eq!(g.errors, 1);
        assert_eq!(g.input_tokens, 1000);
        assert_eq!(g.real_cost_picos, 500);
        let k1 = store.usage_get("d:2026-11-22|k|k1").unwrap().unwrap();
        assert_eq!((k1.requests, k1.errors), (50, 1));
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
        let recs = store.records_for_key("k1", 1000).unwrap();
        assert_eq!(recs.len(), 51);
        assert_eq!(recs[0].status, 529, "newest first");
    }

    /// 240 small requests whose cost is not a whole number of micro-dollars each: every
    /// bucket's total is price x summed tokens, exactly. (Rounded to a micro-dollar per
    /// request, as crs used to record them, they came to $0.01152 instead of $0.011592.)
    #[tokio::test]
    async fn many_small_requests_sum_to_price_times_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("crs.redb")).unwrap();
        let ledger = Ledger::start(store.clone(), Clock::new(480), Duration::from_secs(3600));
        let pricing = super::super::pricing::Pricing::embedded();
        let model = "claude-sonnet-4-5-20250929";
        let usage = TokenUsage {
            input_tokens: 1,
            output_tokens: 3,
            cache_read_tokens: 1,
            ..Default::default()
        };
        let cost = pricing.cost(model, &usage).picos;
        // $3/M + 3 x $15/M + $0.30/M = 48.3 micro-dollars.
        assert_eq!(cost, 48_300_000);
        let rate = 1.1;
        let rated = super::super::pricing::apply_rate(cost, rate);
        assert_eq!(rated, 53_130_000);
        for i in 0..240 {
            let mut e = ev(if i % 2 == 0 { "k1" } else { "k2" }, 0);
            e.model = model.into();
            e.usage = usage;
            e.real_cost_picos = cost;
            e.rated_cost_picos = rated;
            ledger.record(e);
            if i % 50 == 0 {
                ledger.flush().await;
            }
        }
        ledger.shutdown().await;
        let p = pricing.price(model).unwrap().base;
        let exact = 240 * (p.input + 3 * p.output + p.cache_read);
        assert_eq!(exact, 11_592_000_000, "$0.011592");
        let g = store.usage_get("t|g").unwrap().unwrap();
        assert_eq!(g.requests, 240);
        assert_eq!(g.real_cost_picos, exact);
        assert_eq!(g.rated_cost_picos, 240 * 53_130_000);
        assert_eq!(crate::model::picos_to_dollars(g.real_cost_picos), 0.011592);
        let k1 = store.usage_get("d:2026-11-22|k|k1").unwrap().unwrap();
        assert_eq!(k1.real_cost_picos, exact / 2);
        let m = store
            .usage_get(&format!("h:2026-11-22T11|am|acc|{model}"))
            .unwrap()
            .unwrap();
        assert_eq!(m.real_cost_picos, exact);
        let r = &store.records_for_key("k1", 1).unwrap()[0];
        assert_eq!((r.real_cost_picos, r.rated_cost_picos), (cost, rated));
    }

    #[tokio::test]
    async fn records_are_capped_per_key_and_globally() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("crs.redb")).unwrap();
        let ret = Retention {
            hourly_days: 31,
            records_per_key: 5,
            records_global: 7,
        };
        let ledger =
            Ledger::start_with(store.clone(), Clock::new(0), Duration::from_secs(3600), ret);
        for i in 0..12u64 {
            let mut e = ev(if i < 6 { "a" } else { "b" }, i);
            e.at += chrono::Duration::seconds(i as i64);
            ledger.record(e);
            if i % 4 == 0 {
                ledger.flush().await;
            }
        }
        ledger.shutdown().await;
        let a = store.records_for_key("a", 100).unwrap();
        assert_eq!(a.len(), 5);
        assert_eq!(a[0].input_tokens, 5, "newest kept");
        assert_eq!(a[4].input_tokens, 1);
        let all = store.recent_records(100).unwrap();
        assert_eq!(all.len(), 7);
        assert_eq!(all[0].input_tokens, 11);
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

#[cfg(test)]
mod offset_tests {
    use super::*;
    use chrono::TimeZone;

    #[tokio::test]
    async fn half_hour_offsets_bucket_by_local_hour() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("crs.redb")).unwrap();
        let ledger = Ledger::start(store.clone(), Clock::new(330), Duration::from_secs(3600));
        let mk = |h: u32, m: u32| UsageEvent {
            key_id: "k".into(),
            account_id: String::new(),
            model: "m".into(),
            at: Utc.with_ymd_and_hms(2026, 11, 22, h, m, 0).unwrap(),
            usage: TokenUsage {
                input_tokens: 1,
                ..Default::default()
            },
            real_cost_picos: 0,
            rated_cost_picos: 0,
            status: 200,
            latency_ms: 0,
            stream: false,
        };
        // 03:29Z = 08:59 local, 03:31Z = 09:01 local: different local hours, same UTC hour.
        ledger.record(mk(3, 29));
        ledger.record(mk(3, 31));
        // 18:31Z = 00:01 local next day.
        ledger.record(mk(18, 31));
        ledger.shutdown().await;
        assert_eq!(
            store
                .usage_get("h:2026-11-22T08|k|k")
                .unwrap()
                .unwrap()
                .requests,
            1
        );
        assert_eq!(
            store
                .usage_get("h:2026-11-22T09|k|k")
                .unwrap()
                .unwrap()
                .requests,
            1
        );
        assert_eq!(
            store
                .usage_get("d:2026-11-23|k|k")
                .unwrap()
                .unwrap()
                .requests,
            1
        );
        assert_eq!(
            store
                .usage_get("d:2026-11-22|k|k")
                .unwrap()
                .unwrap()
                .requests,
            2
        );
    }
}

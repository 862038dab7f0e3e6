//! Metrics the ledger thread folds from the usage events it already receives (one per
//! upstream attempt): requests by account and status, failures by class, request durations,
//! tokens and cost by model, and the ledger's own backlog and commit times. Nothing is added
//! to the request path: the relay's one event per attempt carries all of it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::UsageEvent;
use crate::metrics::{Histogram, Text};
use crate::model::Picos;

/// Commit-time bounds, seconds.
const COMMIT_BOUNDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Debug, Default, Clone, Copy)]
struct ModelTotals {
    input: u64,
    output: u64,
    cache_create: u64,
    cache_read: u64,
    cost_picos: Picos,
}

#[derive(Debug, Default)]
struct Folded {
    /// (account id, upstream status) -> attempts.
    by_account: BTreeMap<(String, u16), u64>,
    /// failure class -> attempts.
    failures: BTreeMap<&'static str, u64>,
    by_model: BTreeMap<String, ModelTotals>,
}

#[derive(Debug)]
pub struct UsageMetrics {
    folded: Mutex<Folded>,
    /// Request start to last byte, non-stream and stream.
    duration: [Histogram; 2],
    commit: Histogram,
    commit_failures: AtomicU64,
    last_commit_unix: AtomicU64,
    /// Events folded and not yet committed.
    pub(crate) pending: AtomicU64,
}

impl Default for UsageMetrics {
    fn default() -> Self {
        UsageMetrics {
            folded: Default::default(),
            duration: [Histogram::latency(), Histogram::latency()],
            commit: Histogram::new(COMMIT_BOUNDS),
            commit_failures: AtomicU64::new(0),
            last_commit_unix: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        }
    }
}

/// The class of a failed upstream answer (the relay records connection errors as 502 and
/// timeouts as 504).
pub fn failure_class(status: u16) -> &'static str {
    match status {
        429 => "rate_limited",
        529 => "overloaded",
        401 | 403 => "auth",
        504 => "timeout",
        500..=599 => "server_error",
        _ => "client_error",
    }
}

impl UsageMetrics {
    /// Fold one event (on the ledger thread).
    pub(crate) fn observe(&self, ev: &UsageEvent) {
        self.duration[usize::from(ev.stream)].observe(f64::from(ev.latency_ms) / 1000.0);
        let mut f = self.folded.lock();
        *f.by_account
            .entry((ev.account_id.clone(), ev.status))
            .or_default() += 1;
        if !ev.ok() {
            *f.failures.entry(failure_class(ev.status)).or_default() += 1;
            return;
        }
        let m = f.by_model.entry(ev.model.clone()).or_default();
        m.input += ev.usage.input_tokens;
        m.output += ev.usage.output_tokens;
        m.cache_create += ev.usage.cache_create_tokens;
        m.cache_read += ev.usage.cache_read_tokens;
        m.cost_picos = m.cost_picos.saturating_add(ev.real_cost_picos);
    }

    pub(crate) fn committed(&self, secs: f64, ok: bool) {
        self.commit.observe(secs);
        if ok {
            self.last_commit_unix
                .store(chrono::Utc::now().timestamp() as u64, Ordering::Relaxed);
        } else {
            self.commit_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Usage commits that failed so far.
    pub fn commit_failures(&self) -> u64 {
        self.commit_failures.load(Ordering::Relaxed)
    }

    /// Render the families, with `queued` events not yet taken by the ledger thread.
    pub fn render(&self, t: &mut Text, queued: usize) {
        let f = self.folded.lock();
        t.family(
            "crs_upstream_requests_total",
            "counter",
            "Upstream attempts by account and HTTP status (502: connection error, 504: timeout).",
        );
        for ((account, status), n) in &f.by_account {
            t.sample(
                "crs_upstream_requests_total",
                &[("account", account), ("status", &status.to_string())],
                n,
            );
        }
        t.family(
            "crs_upstream_failures_total",
            "counter",
            "Failed upstream attempts by class.",
        );
        for class in [
            "rate_limited",
            "overloaded",
            "auth",
            "timeout",
            "server_error",
            "client_error",
        ] {
            let n = f.failures.get(class).copied().unwrap_or(0);
            t.sample("crs_upstream_failures_total", &[("class", class)], n);
        }
        t.family(
            "crs_tokens_total",
            "counter",
            "Tokens of successful requests by model and type.",
        );
        for (model, m) in &f.by_model {
            for (kind, n) in [
                ("input", m.input),
                ("output", m.output),
                ("cache_create", m.cache_create),
                ("cache_read", m.cache_read),
            ] {
                t.sample("crs_tokens_total", &[("model", model), ("type", kind)], n);
            }
        }
        t.family(
            "crs_cost_dollars_total",
            "counter",
            "Cost of successful requests by model, US dollars (price table, before key rates).",
        );
        for (model, m) in &f.by_model {
            t.sample(
                "crs_cost_dollars_total",
                &[("model", model)],
                crate::model::picos_to_dollars(m.cost_picos),
            );
        }
        drop(f);
        t.family(
            "crs_request_duration_seconds",
            "histogram",
            "Relayed requests from arrival to the last byte.",
        );
        for (i, stream) in ["false", "true"].iter().enumerate() {
            self.duration[i].render(t, "crs_request_duration_seconds", &[("stream", stream)]);
        }
        t.single(
            "crs_ledger_backlog_events",
            "gauge",
            "Usage events not committed to the store yet.",
            queued as u64 + self.pending.load(Ordering::Relaxed),
        );
        t.family(
            "crs_ledger_commit_seconds",
            "histogram",
            "Time of one usage commit (one store transaction).",
        );
        self.commit.render(t, "crs_ledger_commit_seconds", &[]);
        t.single(
            "crs_ledger_commit_failures_total",
            "counter",
            "Usage commits that failed (their usage is kept and retried).",
            self.commit_failures.load(Ordering::Relaxed),
        );
        t.single(
            "crs_ledger_last_commit_timestamp_seconds",
            "gauge",
            "Unix time of the last successful usage commit (0: none yet).",
            self.last_commit_unix.load(Ordering::Relaxed),
        );
    }
}

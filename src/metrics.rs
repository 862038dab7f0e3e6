//! Prometheus metrics: counters and histograms in atomics (no lock where they are bumped), and
//! the text exposition format (version 0.0.4) they are rendered in.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Latency bucket bounds, seconds: 5 ms to 10 minutes (a long stream).
pub const LATENCY_BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// A histogram: one atomic per bucket (not cumulative: a sample bumps one bucket), the sum
/// in microseconds, the count. Three atomic increments per sample.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, plus the overflow (`+Inf` only).
    buckets: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn latency() -> Self {
        Self::new(LATENCY_BOUNDS)
    }

    pub fn observe(&self, secs: f64) {
        let i = self.bounds.partition_point(|b| *b < secs);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((secs.max(0.0) * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The `_bucket`, `_sum` and `_count` samples of this histogram, with `labels`.
    pub fn render(&self, t: &mut Text, name: &str, labels: &[(&str, &str)]) {
        let mut cumulative = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(v) => format!("{v}"),
                None => "+Inf".to_owned(),
            };
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            t.sample(&format!("{name}_bucket"), &with_le, cumulative);
        }
        t.sample(
            &format!("{name}_sum"),
            labels,
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
        // The count is the buckets' total, so the two always agree within one scrape.
        t.sample(&format!("{name}_count"), labels, cumulative);
    }
}

/// The text format being written.
#[derive(Debug, Default)]
pub struct Text {
    out: String,
}

impl Text {
    /// `# HELP` and `# TYPE` lines; each family once, before its samples.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with a single sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value: backslash, double quote and newline escaped.
fn escape(v: &str) -> std::borrow::Cow<'_, str> {
    if !v.contains(['\\', '"', '\n']) {
        return v.into();
    }
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

/// Route groups of `/metrics` (a fixed set: label values never come from clients).
pub const ROUTES: &[&str] = &[
    "messages",
    "count_tokens",
    "openai",
    "gemini",
    "azure",
    "droid",
    "client_info",
    "apistats",
    "admin",
    "ui",
    "health",
    "metrics",
    "other",
];

const STATUS_CLASSES: &[&str] = &["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The route group of a request path (an index into `ROUTES`).
pub fn route_of(path: &str) -> usize {
    let group = if path.starts_with("/droid/") {
        "droid"
    } else if path.contains("/count_tokens") {
        "count_tokens"
    } else if path.starts_with("/openai/") {
        "openai"
    } else if path.starts_with("/gemini/") {
        "gemini"
    } else if path.starts_with("/azure/") {
        "azure"
    } else if path.ends_with("/messages") {
        "messages"
    } else if ["/api/", "/v1/", "/claude/"]
        .iter()
        .any(|p| path.starts_with(p))
    {
        "client_info"
    } else if path.starts_with("/apiStats") {
        "apistats"
    } else if path == "/" || path.starts_with("/admin-next") || path.starts_with("/assets") {
        "ui"
    } else if path.starts_with("/admin") || path.starts_with("/web/") {
        "admin"
    } else if path == "/health" {
        "health"
    } else if path == "/metrics" {
        "metrics"
    } else {
        "other"
    };
    ROUTES
        .iter()
        .position(|r| *r == group)
        .unwrap_or(ROUTES.len() - 1)
}

/// HTTP requests by route group and status class, and the time to the response head by
/// route group (for a stream: the time to its first byte). Four atomic increments a request.
#[derive(Debug)]
pub struct HttpMetrics {
    requests: Box<[[AtomicU64; 5]]>,
    head: Box<[Histogram]>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: ROUTES.iter().map(|_| Default::default()).collect(),
            head: ROUTES.iter().map(|_| Histogram::latency()).collect(),
        }
    }
}

impl HttpMetrics {
    pub fn observe(&self, route: usize, status: u16, head_secs: f64) {
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        self.requests[route][class].fetch_add(1, Ordering::Relaxed);
        self.head[route].observe(head_secs);
    }

    pub fn render(&self, t: &mut Text) {
        t.family(
            "crs_http_requests_total",
            "counter",
            "HTTP requests by route group and status class.",
        );
        for (r, route) in ROUTES.iter().enumerate() {
            for (c, class) in STATUS_CLASSES.iter().enumerate() {
                let n = self.requests[r][c].load(Ordering::Relaxed);
                if n > 0 {
                    t.sample(
                        "crs_http_requests_total",
                        &[("route", route), ("status", class)],
                        n,
                    );
                }
            }
        }
        t.family(
            "crs_http_response_head_seconds",
            "histogram",
            "Time from a request's arrival to its response head (for a stream, its first byte).",
        );
        for (r, route) in ROUTES.iter().enumerate() {
            if self.head[r].count() > 0 {
                self.head[r].render(t, "crs_http_response_head_seconds", &[("route", route)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets_and_labels_are_escaped() {
        let h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(0.5);
        h.observe(7.0);
        let mut t = Text::default();
        t.family("x_seconds", "histogram", "test");
        h.render(&mut t, "x_seconds", &[("route", "a\"b")]);
        let out = t.finish();
        assert!(out.contains("x_seconds_bucket{route=\"a\\\"b\",le=\"0.1\"} 1\n"));
        assert!(out.contains("le=\"1\"} 3\n"));
        assert!(out.contains("le=\"+Inf\"} 4\n"));
        assert!(out.contains("x_seconds_count{route=\"a\\\"b\"} 4\n"));
        assert!(out.contains("x_seconds_sum{route=\"a\\\"b\"} 8.05\n"));
        assert_eq!(h.count(), 4);
    }

    #[test]
    fn paths_fall_into_route_groups() {
        let g = |p: &str| ROUTES[route_of(p)];
        assert_eq!(g("/v1/messages"), "messages");
        assert_eq!(g("/api/v1/messages"), "messages");
        assert_eq!(g("/claude/v1/messages/count_tokens"), "count_tokens");
        assert_eq!(g("/droid/claude/v1/messages"), "droid");
        assert_eq!(g("/openai/v1/responses"), "openai");
        assert_eq!(g("/gemini/v1beta/models/x:generateContent"), "gemini");
        assert_eq!(g("/api/v1/usage"), "client_info");
        assert_eq!(g("/admin/api-keys"), "admin");
        assert_eq!(g("/admin-next/keys"), "ui");
        assert_eq!(g("/metrics"), "metrics");
        assert_eq!(g("/nothing"), "other");
        let m = HttpMetrics::default();
        m.observe(route_of("/v1/messages"), 200, 0.2);
        m.observe(route_of("/v1/messages"), 429, 0.01);
        let mut t = Text::default();
        m.render(&mut t);
        let out = t.finish();
        assert!(out.contains("crs_http_requests_total{route=\"messages\",status=\"2xx\"} 1"));
        assert!(out.contains("crs_http_requests_total{route=\"messages\",status=\"4xx\"} 1"));
        assert!(out.contains("crs_http_response_head_seconds_count{route=\"messages\"} 2"));
    }
}

//! `GET /metrics`: Prometheus text format, for an admin token (a session or the operator
//! token) or a TCP peer in `metrics_allow`. Counters are read from atomics; account states,
//! key counts and today's usage are read at scrape time.

use std::net::IpAddr;

use salvo::http::{HeaderValue, StatusCode, header};
use salvo::prelude::*;

use super::session::admin_of;
use crate::metrics::Text;
use crate::state::{AppState, state};
use crate::store::Counters;
use crate::usage::bucket;
use crate::web::v1_error;

pub fn router() -> Router {
    Router::with_path("metrics").get(metrics)
}

fn allowed_peer(st: &AppState, req: &Request) -> bool {
    let Some(ip) = req.remote_addr().ip() else {
        return false;
    };
    let ip: IpAddr = ip;
    st.config.metrics_allow.iter().any(|r| r.contains(ip))
}

#[handler]
async fn metrics(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    if !allowed_peer(&st, req) && admin_of(&st, req).await.is_none() {
        return v1_error(
            res,
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "An admin token, or an address in metrics_allow, is required",
        );
    }
    let day = st.clock.periods(chrono::Utc::now()).day;
    let store = st.store.clone();
    let today = crate::web::blocking(move || store.usage_get(&bucket::global(&bucket::day(&day))))
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let body = render(&st, &today);
    res.status_code(StatusCode::OK);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    let _ = res.write_body(body);
}

fn render(st: &AppState, today: &Counters) -> String {
    let mut t = Text::default();
    t.family("crs_build_info", "gauge", "The running crs version.");
    t.sample(
        "crs_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    t.single(
        "crs_uptime_seconds",
        "gauge",
        "Seconds since this server started.",
        st.started_at.elapsed().as_secs(),
    );
    runtime(&mut t);
    t.single(
        "crs_upstream_client_lanes",
        "gauge",
        "Upstream HTTP clients open, each with its own connections (a new one opens when every open one carries 64 requests).",
        st.accounts.http.lanes_opened() as u64,
    );
    t.single(
        "crs_upstream_requests_in_flight",
        "gauge",
        "Upstream requests whose answers are still being read (a stream counts until it ends).",
        st.accounts.http.in_flight() as u64,
    );
    st.http_metrics.render(&mut t);
    st.ledger.metrics.render(&mut t, st.ledger.queued());
    accounts(st, &mut t);
    keys(st, &mut t);
    usage_windows(st, today, &mut t);
    t.finish()
}

/// The async runtime's own counts: tasks still alive (one a connection, a request in flight
/// or a pooled upstream connection waiting to be reused; a number that keeps growing while the
/// load does not is a leak) and worker threads.
fn runtime(t: &mut Text) {
    t.single(
        "crs_runtime_alive_tasks",
        "gauge",
        "Tasks alive in the async runtimes.",
        crate::runtime::alive_tasks() as u64,
    );
    t.single(
        "crs_runtime_workers",
        "gauge",
        "Threads serving connections, each with an async runtime of its own.",
        crate::runtime::serving() as u64,
    );
}

fn accounts(st: &AppState, t: &mut Text) {
    let pool = st.accounts.load();
    let now_ms = chrono::Utc::now().timestamp_millis();
    t.family(
        "crs_account_info",
        "gauge",
        "Upstream accounts with their platform, name and status (always 1).",
    );
    for a in &pool.accounts {
        t.sample(
            "crs_account_info",
            &[
                ("account", &a.rec.id),
                ("platform", a.rec.platform.spec().name),
                ("name", &a.rec.name),
                ("status", a.rec.status.as_str()),
            ],
            1,
        );
    }
    let per_account: [(&str, &str, &str); 3] = [
        (
            "crs_account_schedulable",
            "gauge",
            "1 when the account is active, schedulable and needs no attention.",
        ),
        (
            "crs_account_cooldown_seconds",
            "gauge",
            "Seconds until the account is back in rotation after an upstream error (0: in rotation).",
        ),
        (
            "crs_account_in_flight",
            "gauge",
            "Requests the account is serving now.",
        ),
    ];
    for (i, (name, kind, help)) in per_account.iter().enumerate() {
        t.family(name, kind, help);
        for a in &pool.accounts {
            let v = match i {
                0 => u64::from(a.rec.is_active && a.rec.schedulable && !a.needs_attention()),
                1 => {
                    a.rt.cooldown(now_ms)
                        .map(|(until, _)| (until - now_ms).max(0) as u64 / 1000)
                        .unwrap_or(0)
                }
                _ => u64::from(a.rt.gate.load().in_use()),
            };
            t.sample(name, &[("account", &a.rec.id)], v);
        }
    }
}

fn keys(st: &AppState, t: &mut Text) {
    let idx = st.keys.load();
    let (mut active, mut disabled, mut deleted) = (0u64, 0u64, 0u64);
    for e in idx.by_id.values() {
        match (e.rec.is_deleted, e.rec.is_active) {
            (true, _) => deleted += 1,
            (false, true) => active += 1,
            (false, false) => disabled += 1,
        }
    }
    t.family("crs_api_keys", "gauge", "API keys by state.");
    for (state, n) in [
        ("active", active),
        ("disabled", disabled),
        ("deleted", deleted),
    ] {
        t.sample("crs_api_keys", &[("state", state)], n);
    }
}

fn usage_windows(st: &AppState, today: &Counters, t: &mut Text) {
    t.family(
        "crs_usage_today",
        "gauge",
        "Usage of the current day in the accounting time zone.",
    );
    for (what, v) in [
        ("requests", today.requests as f64),
        ("errors", today.errors as f64),
        ("tokens", today.all_tokens() as f64),
        (
            "cost_dollars",
            crate::model::picos_to_dollars(today.real_cost_picos),
        ),
    ] {
        t.sample("crs_usage_today", &[("value", what)], v);
    }
    let now_ms = chrono::Utc::now().timestamp_millis();
    t.family(
        "crs_usage_rate_per_minute",
        "gauge",
        "Requests and tokens per minute over the last 1 and 5 minutes.",
    );
    for minutes in [1u32, 5] {
        let r = st.realtime.rates(now_ms, minutes);
        let w = format!("{minutes}m");
        for (what, v) in [
            ("requests", r.rpm),
            ("tokens", r.tpm),
            ("errors", r.errors_per_minute),
        ] {
            t.sample(
                "crs_usage_rate_per_minute",
                &[("value", what), ("window", &w)],
                v,
            );
        }
    }
}

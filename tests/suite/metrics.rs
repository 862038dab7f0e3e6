//! `GET /metrics`: who may read it, what it holds, and that Prometheus's own checker
//! (`promtool check metrics`) accepts it.
//!
//! scripts/test.sh installs Debian's `prometheus` (for `promtool`) and sets
//! CRS_E2E_REQUIRED=1, so a missing `promtool` fails there; a bare `cargo test` skips that check
//! with a message.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

use crate::common::*;

/// Every sample of a text exposition: `name{labels}` -> value. Panics on a line that is not
/// a comment or a sample.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let mut typed = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(typed.insert(name.to_owned()), "family {name} twice");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        assert!(
            out.insert(series.to_owned(), value).is_none(),
            "{series} twice"
        );
    }
    out
}

/// Run `promtool` with `args` and `input` on stdin; `None` (with a message) when it is not
/// installed, which fails under scripts/test.sh.
fn promtool(args: &[&str], input: &str) -> Option<std::process::Output> {
    let Ok(mut child) = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        if std::env::var("CRS_E2E_REQUIRED").as_deref() == Ok("1") {
            panic!(
                "promtool is missing: run scripts/test.sh, which installs it (apt-get install prometheus)"
            );
        }
        eprintln!(
            "skipping the promtool check: promtool is not installed (scripts/test.sh installs it)"
        );
        return None;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    Some(child.wait_with_output().unwrap())
}

fn promtool_check(text: &str) {
    if let Some(out) = promtool(&["check", "metrics"], text) {
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn metrics_count_requests_accounts_and_usage_and_promtool_accepts_them() {
    let env = Env::start().await;
    let account = env.create_account(serde_json::json!({})).await;
    let (_, key) = env.create_key(serde_json::json!({"name": "m"})).await;
    for stream in [false, true, false] {
        let r = env
            .messages(
                &key,
                msg_body("claude-sonnet-4-5-20250929", stream, "mock:usage=7,3,0,0"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    force(&env.mock, 429, Some(30), "slow down");
    let r = env
        .messages(&key, msg_body("claude-sonnet-4-5-20250929", false, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    unforce(&env.mock);

    // Neither a token nor an allowed address: refused.
    let r = env.http.get(env.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // The ledger folds events on its own thread and commits them a little later: wait until
    // all four are folded and committed.
    let text = loop {
        let r = env
            .http
            .get(env.url("/metrics"))
            .bearer_auth(&env.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        let text = r.text().await.unwrap();
        let m = parse(&text);
        if m.get(&format!(
            "crs_upstream_requests_total{{account=\"{account}\",status=\"429\"}}"
        )) == Some(&1.0)
            && m.get("crs_usage_today{value=\"requests\"}") == Some(&3.0)
        {
            break text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let m = parse(&text);
    let get = |s: &str| *m.get(s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    assert_eq!(
        get(&format!(
            "crs_upstream_requests_total{{account=\"{account}\",status=\"200\"}}"
        )),
        3.0
    );
    assert_eq!(
        get("crs_upstream_failures_total{class=\"rate_limited\"}"),
        1.0
    );
    assert_eq!(
        get("crs_tokens_total{model=\"claude-sonnet-4-5-20250929\",type=\"input\"}"),
        21.0
    );
    assert_eq!(
        get("crs_tokens_total{model=\"claude-sonnet-4-5-20250929\",type=\"output\"}"),
        9.0
    );
    assert!(get("crs_cost_dollars_total{model=\"claude-sonnet-4-5-20250929\"}") > 0.0);
    assert_eq!(
        get("crs_http_requests_total{route=\"messages\",status=\"2xx\"}"),
        3.0
    );
    assert_eq!(
        get("crs_http_requests_total{route=\"messages\",status=\"4xx\"}"),
        1.0
    );
    assert_eq!(
        get("crs_http_response_head_seconds_count{route=\"messages\"}"),
        4.0
    );
    assert_eq!(
        get("crs_request_duration_seconds_count{stream=\"true\"}"),
        1.0
    );
    assert!(
        get(&format!(
            "crs_account_cooldown_seconds{{account=\"{account}\"}}"
        )) > 0.0
    );
    assert_eq!(
        get(&format!(
            "crs_account_info{{account=\"{account}\",platform=\"claude-console\",name=\"console-1\",status=\"active\"}}"
        )),
        1.0
    );
    assert_eq!(get("crs_api_keys{state=\"active\"}"), 1.0);
    assert_eq!(get("crs_usage_today{value=\"requests\"}"), 3.0);
    assert!(get("crs_ledger_commit_seconds_count") >= 1.0);
    assert!(get("crs_ledger_last_commit_timestamp_seconds") > 0.0);
    assert_eq!(get("crs_ledger_backlog_events"), 0.0);
    // The server's own tasks (at least its accept loop and the ledger's flusher) are alive.
    assert!(get("crs_runtime_alive_tasks") >= 1.0);
    assert!(get("crs_runtime_workers") >= 1.0);
    // One account, a handful of requests: one client lane.
    assert_eq!(get("crs_upstream_client_lanes"), 1.0);
    promtool_check(&text);
    env.stop().await;

    // An address on the allow-list reads without a token; others still need one.
    let env = Env::start_with(|c| {
        c.metrics_allow = vec![crs::config::AddrRange::parse("127.0.0.0/8").unwrap()]
    })
    .await;
    let r = env.http.get(env.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    promtool_check(&r.text().await.unwrap());
    env.stop().await;
    let env = Env::start_with(|c| {
        c.metrics_allow = vec![crs::config::AddrRange::parse("10.0.0.0/8").unwrap()]
    })
    .await;
    let r = env.http.get(env.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    env.stop().await;
}

async fn upstream_in_flight(env: &Env) -> f64 {
    let r = env
        .http
        .get(env.url("/metrics"))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap();
    parse(&r.text().await.unwrap())["crs_upstream_requests_in_flight"]
}

async fn wait_in_flight(env: &Env, want: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n = upstream_in_flight(env).await;
        if n == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "upstream requests in flight stayed at {n}, not {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A stream of `events` events 100 ms apart, its head read.
async fn slow_stream(env: &Env, key: &str, events: u32) -> reqwest::Response {
    let directives = format!("mock:chunks={events} mock:delay_ms=100");
    env.messages(
        key,
        msg_body("claude-sonnet-4-5-20250929", true, &directives),
    )
    .send()
    .await
    .unwrap()
}

/// An upstream request counts on its client lane for as long as its answer is read: a stream
/// until its last event, or until its client hangs up; a JSON answer until it is read.
/// (The lanes open more clients past 64 such requests once an upstream speaks HTTP/2, so a
/// count that ended early would crowd one connection.)
#[tokio::test]
async fn an_upstream_request_counts_until_its_answer_is_over() {
    let env = Env::start().await;
    env.create_account(serde_json::json!({})).await;
    let (_, key) = env.create_key(serde_json::json!({"name": "lanes"})).await;
    let model = "claude-sonnet-4-5-20250929";
    assert_eq!(upstream_in_flight(&env).await, 0.0);

    // A stream of 20 events 100 ms apart: counted while it runs, not after its end.
    let mut r = slow_stream(&env, &key, 20).await;
    assert_eq!(r.status(), 200);
    assert!(r.chunk().await.unwrap().is_some());
    assert_eq!(upstream_in_flight(&env).await, 1.0);
    while r.chunk().await.unwrap().is_some() {}
    wait_in_flight(&env, 0.0).await;

    // Two streams at once, one client leaving after the first event: the other still counts.
    let mut a = slow_stream(&env, &key, 30).await;
    let mut b = slow_stream(&env, &key, 30).await;
    assert!(a.chunk().await.unwrap().is_some());
    assert!(b.chunk().await.unwrap().is_some());
    assert_eq!(upstream_in_flight(&env).await, 2.0);
    drop(a);
    wait_in_flight(&env, 1.0).await;
    drop(b);
    wait_in_flight(&env, 0.0).await;

    // A JSON answer: not counted once it has been answered.
    let r = env
        .messages(&key, msg_body(model, false, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    assert_eq!(upstream_in_flight(&env).await, 0.0);
    env.stop().await;
}

/// The Grafana dashboard in packaging/: every query parses (`promtool check rules` on them as
/// recording rules) and names only metric families crs exposes.
#[tokio::test]
async fn the_grafana_dashboard_queries_parse_and_name_real_metrics() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/grafana/crs-dashboard.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| {
            t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "5m")
                .replace("$instance", ".*")
        })
        .collect();
    assert!(exprs.len() >= 10);

    let env = Env::start().await;
    let text = env
        .http
        .get(env.url("/metrics"))
        .bearer_auth(&env.token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    env.stop().await;
    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for e in &exprs {
        for name in e
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("crs_"))
        {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(families.contains(family), "{name} in {e:?} is not exposed");
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    let mut yml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        yml += &format!(
            "      - record: dashboard:q{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        );
    }
    std::fs::write(&rules, yml).unwrap();
    if let Some(out) = promtool(&["check", "rules", rules.to_str().unwrap()], "") {
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

//! Admin statistics: dashboard, trends, breakdowns (the cost ranking), request records.
//! Every query is a handful of point reads or prefix scans over period-first bucket keys, so
//! its cost does not grow with the length of the history.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{Duration, Utc};
use salvo::http::StatusCode;
use salvo::prelude::*;
use serde_json::{Value, json};

use super::blocking;
use crate::model::picos_to_dollars;
use crate::state::AppState;
use crate::state::state;
use crate::usage::ledger::RequestRecord;
use crate::usage::{Counters, bucket};
use crate::web::json;

fn internal(res: &mut Response, e: anyhow::Error) {
    tracing::error!(error = %e, "statistics query failed");
    json(
        res,
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({"error": "Statistics query failed", "message": "Internal server error"}),
    );
}

fn bad(res: &mut Response, msg: &str) {
    json(res, StatusCode::BAD_REQUEST, &json!({"error": msg}));
}

/// The common numeric fields of a bucket.
pub fn figures(c: &Counters) -> serde_json::Map<String, Value> {
    let v = json!({
        "requests": c.requests,
        "inputTokens": c.input_tokens,
        "outputTokens": c.output_tokens,
        "cacheCreateTokens": c.cache_create_tokens,
        "cacheReadTokens": c.cache_read_tokens,
        "allTokens": c.all_tokens(),
        "cost": picos_to_dollars(c.rated_cost_picos),
        "realCost": picos_to_dollars(c.real_cost_picos),
        "errors": c.errors,
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn with(mut m: serde_json::Map<String, Value>, extra: Value) -> Value {
    if let Value::Object(e) = extra {
        m.extend(e);
    }
    Value::Object(m)
}

/// The last segment of a bucket key (the id or model name after the dimension).
fn tail<'a>(key: &'a str, prefix: &str) -> &'a str {
    &key[prefix.len()..]
}

/// Sum rows of several periods for one dimension (`k`, `a` or `m`), by id.
fn scan_dim(
    st: &AppState,
    periods: &[String],
    dim: &str,
) -> anyhow::Result<HashMap<String, Counters>> {
    let mut out: HashMap<String, Counters> = HashMap::new();
    for p in periods {
        let prefix = format!("{p}|{dim}|");
        for (k, c) in st.store.usage_scan(&prefix)? {
            out.entry(tail(&k, &prefix).to_owned()).or_default().add(&c);
        }
    }
    Ok(out)
}

/// Bucket periods covering a named range ending now.
pub fn periods_for(st: &AppState, range: &str) -> Option<Vec<String>> {
    let now = Utc::now();
    let p = st.clock.periods(now);
    Some(match range {
        "today" => vec![bucket::day(&p.day)],
        "month" => vec![bucket::month(&p.month)],
        "all" => vec![bucket::TOTAL.to_owned()],
        "7days" | "30days" => {
            let n = if range == "7days" { 7 } else { 30 };
            (0..n)
                .map(|i| bucket::day(&st.clock.periods(now - Duration::days(i)).day))
                .collect()
        }
        _ => return None,
    })
}

fn key_name(st: &AppState, id: &str) -> String {
    st.keys
        .load()
        .by_id
        .get(id)
        .map(|e| e.rec.name.clone())
        .unwrap_or_default()
}

fn account_name(st: &AppState, id: &str) -> String {
    st.accounts
        .load()
        .by_id
        .get(id)
        .map(|a| a.rec.name.clone())
        .unwrap_or_default()
}

pub fn dashboard_data(st: &AppState) -> anyhow::Result<Value> {
    let now = Utc::now();
    let p = st.clock.periods(now);
    let day = bucket::day(&p.day);
    let got = st
        .store
        .usage_get_many(&[bucket::global(&day), bucket::global(bucket::TOTAL)])?;
    let (today, total) = (got[0].unwrap_or_default(), got[1].unwrap_or_default());

    let mut models: Vec<(String, Counters)> = scan_dim(st, std::slice::from_ref(&day), "m")?
        .into_iter()
        .collect();
    models.sort_by(|a, b| {
        b.1.rated_cost_picos
            .cmp(&a.1.rated_cost_picos)
            .then(b.1.requests.cmp(&a.1.requests))
    });
    let mut keys: Vec<(String, Counters)> = scan_dim(st, std::slice::from_ref(&day), "k")?
        .into_iter()
        .collect();
    keys.sort_by(|a, b| {
        b.1.rated_cost_picos
            .cmp(&a.1.rated_cost_picos)
            .then(b.1.requests.cmp(&a.1.requests))
    });
    keys.truncate(10);
    let acc_today = scan_dim(st, std::slice::from_ref(&day), "a")?;

    let key_idx = st.keys.load();
    let pool = st.accounts.load();
    let active_keys = key_idx
        .by_id
        .values()
        .filter(|e| !e.rec.is_deleted && e.rec.is_active)
        .count();
    let total_keys = key_idx.by_id.values().filter(|e| !e.rec.is_deleted).count();
    let accounts: Vec<Value> = pool
        .accounts
        .iter()
        .map(|a| {
            let c = acc_today.get(&a.rec.id).copied().unwrap_or_default();
            let attempts = c.requests + c.errors;
            json!({
                "id": a.rec.id, "name": a.rec.name, "platform": a.rec.platform.as_str(),
                "status": a.rec.status, "schedulable": a.rec.schedulable, "isActive": a.rec.is_active,
                "requests": c.requests, "errors": c.errors,
                "errorRate": if attempts == 0 { 0.0 } else { c.errors as f64 / attempts as f64 },
                "cost": picos_to_dollars(c.rated_cost_picos), "allTokens": c.all_tokens(),
            })
        })
        .collect();
    let rates = st.realtime.rates(now.timestamp_millis(), 5);
    let attempts = today.requests + today.errors;
    Ok(json!({
        "overview": {
            "totalApiKeys": total_keys,
            "activeApiKeys": active_keys,
            "totalAccounts": pool.accounts.len(),
            "activeAccounts": pool.accounts.iter().filter(|a| a.rec.is_active && a.rec.schedulable).count(),
        },
        "today": Value::Object(figures(&today)),
        "total": Value::Object(figures(&total)),
        "errorRate": if attempts == 0 { 0.0 } else { today.errors as f64 / attempts as f64 },
        "realtime": {"rpm": rates.rpm, "tpm": rates.tpm, "errorsPerMinute": rates.errors_per_minute, "windowMinutes": rates.window_minutes},
        "models": models.iter().map(|(m, c)| with(figures(c), json!({"model": m, "priceSource": st.pricing.lookup(m).1.kind()}))).collect::<Vec<_>>(),
        "topKeys": keys.iter().map(|(id, c)| with(figures(c), json!({"keyId": id, "name": key_name(st, id)}))).collect::<Vec<_>>(),
        "accounts": accounts,
        "date": p.day,
        "timezoneOffsetMinutes": st.clock.offset().local_minus_utc() / 60,
    }))
}

/// `GET /admin/dashboard`
#[handler]
pub async fn dashboard(depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    st.ledger.flush().await;
    match blocking(move || dashboard_data(&st)).await {
        Ok(d) => json(res, StatusCode::OK, &json!({"success": true, "data": d})),
        Err(e) => internal(res, e),
    }
}

/// Which series a trend or record query is about.
#[derive(Clone)]
pub enum Dim {
    Global,
    Key(String),
    Account(String),
    Model(String),
}

impl Dim {
    fn from_req(req: &Request) -> Dim {
        let q = |n: &str| req.query::<String>(n).filter(|s| !s.is_empty());
        if let Some(k) = q("keyId") {
            Dim::Key(k)
        } else if let Some(a) = q("accountId") {
            Dim::Account(a)
        } else if let Some(m) = q("model") {
            Dim::Model(m)
        } else {
            Dim::Global
        }
    }

    fn bucket(&self, period: &str) -> String {
        match self {
            Dim::Global => bucket::global(period),
            Dim::Key(k) => bucket::key(period, k),
            Dim::Account(a) => bucket::account(period, a),
            Dim::Model(m) => bucket::model(period, m),
        }
    }
}

pub fn trend(st: &AppState, hourly: bool, n: i64, dim: &Dim) -> anyhow::Result<Vec<Value>> {
    let now = Utc::now();
    let labels: Vec<String> = (0..n)
        .rev()
        .map(|i| {
            let p = if hourly {
                st.clock.periods(now - Duration::hours(i))
            } else {
                st.clock.periods(now - Duration::days(i))
            };
            if hourly { p.hour } else { p.day }
        })
        .collect();
    let keys: Vec<String> = labels
        .iter()
        .map(|l| {
            dim.bucket(&if hourly {
                bucket::hour(l)
            } else {
                bucket::day(l)
            })
        })
        .collect();
    let got = st.store.usage_get_many(&keys)?;
    Ok(labels
        .into_iter()
        .zip(got)
        .map(|(label, c)| with(figures(&c.unwrap_or_default()), json!({"period": label})))
        .collect())
}

/// `GET /admin/usage-trend?granularity=day|hour&days=N[&keyId=|&accountId=|&model=]`
#[handler]
pub async fn usage_trend(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let hourly = match req.query::<String>("granularity").as_deref() {
        None | Some("day") => false,
        Some("hour") => true,
        Some(_) => return bad(res, "granularity must be day or hour"),
    };
    let days = req
        .query::<i64>("days")
        .unwrap_or(if hourly { 1 } else { 7 });
    let n = if hourly {
        days.clamp(1, 31) * 24
    } else {
        days.clamp(1, 366)
    };
    let dim = Dim::from_req(req);
    st.ledger.flush().await;
    match blocking(move || trend(&st, hourly, n, &dim)).await {
        Ok(d) => json(res, StatusCode::OK, &json!({"success": true, "data": d})),
        Err(e) => internal(res, e),
    }
}

pub fn breakdown(st: &AppState, by: &str, periods: &[String]) -> anyhow::Result<Vec<Value>> {
    let dim = match by {
        "key" => "k",
        "account" => "a",
        _ => "m",
    };
    let mut rows: Vec<(String, Counters)> = scan_dim(st, periods, dim)?.into_iter().collect();
    rows.sort_by(|a, b| {
        b.1.rated_cost_picos
            .cmp(&a.1.rated_cost_picos)
            .then(b.1.requests.cmp(&a.1.requests))
            .then(a.0.cmp(&b.0))
    });
    Ok(rows
        .iter()
        .map(|(id, c)| {
            let name = match by {
                "key" => key_name(st, id),
                "account" => account_name(st, id),
                _ => id.clone(),
            };
            let mut extra = json!({"id": id, "name": name});
            if by == "model" {
                // "family" and "unknown": the cost is an estimate or missing.
                let m = st.pricing.lookup(id).1;
                extra["priceSource"] = json!(m.kind());
                extra["pricedAs"] = json!(m.key());
            }
            with(figures(c), extra)
        })
        .collect())
}

/// `GET /admin/usage-breakdown?by=key|account|model&period=today|7days|30days|month|all`
#[handler]
pub async fn usage_breakdown(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let by = req.query::<String>("by").unwrap_or_else(|| "key".into());
    if !["key", "account", "model"].contains(&by.as_str()) {
        return bad(res, "by must be key, account or model");
    }
    let range = req
        .query::<String>("period")
        .unwrap_or_else(|| "today".into());
    let Some(periods) = periods_for(&st, &range) else {
        return bad(res, "period must be today, 7days, 30days, month or all");
    };
    st.ledger.flush().await;
    match blocking(move || breakdown(&st, &by, &periods)).await {
        Ok(d) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "data": d, "period": range}),
        ),
        Err(e) => internal(res, e),
    }
}

pub fn record_json(st: &AppState, r: &RequestRecord) -> Value {
    json!({
        "timestamp": r.timestamp,
        "keyId": r.key_id,
        "keyName": key_name(st, &r.key_id),
        "model": r.model,
        "accountId": r.account_id,
        "accountName": account_name(st, &r.account_id),
        "inputTokens": r.input_tokens,
        "outputTokens": r.output_tokens,
        "cacheCreateTokens": r.cache_create_tokens,
        "cacheReadTokens": r.cache_read_tokens,
        "ephemeral5mTokens": r.ephemeral_5m_tokens,
        "ephemeral1hTokens": r.ephemeral_1h_tokens,
        "allTokens": r.input_tokens + r.output_tokens + r.cache_create_tokens + r.cache_read_tokens,
        "cost": picos_to_dollars(r.rated_cost_picos),
        "realCost": picos_to_dollars(r.real_cost_picos),
        "latencyMs": r.latency_ms,
        "status": r.status,
        "stream": r.stream,
    })
}

async fn records_reply(
    st: Arc<AppState>,
    res: &mut Response,
    key: Option<String>,
    account: Option<String>,
    limit: usize,
) {
    st.ledger.flush().await;
    let st2 = st.clone();
    let r = blocking(move || {
        let recs = match &key {
            Some(k) => st2.store.records_for_key(k, limit)?,
            None => {
                let mut all = st2.store.recent_records(usize::MAX)?;
                if let Some(a) = &account {
                    all.retain(|r| &r.account_id == a);
                }
                all.truncate(limit);
                all
            }
        };
        Ok(recs
            .iter()
            .map(|r| record_json(&st2, r))
            .collect::<Vec<_>>())
    })
    .await;
    match r {
        Ok(d) => json(res, StatusCode::OK, &json!({"success": true, "data": d})),
        Err(e) => internal(res, e),
    }
}

/// `GET /admin/usage-records?limit=N[&keyId=][&accountId=]`
#[handler]
pub async fn usage_records(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let limit = req.query::<usize>("limit").unwrap_or(100).clamp(1, 2000);
    let key = req.query::<String>("keyId").filter(|s| !s.is_empty());
    let account = req.query::<String>("accountId").filter(|s| !s.is_empty());
    records_reply(st, res, key, account, limit).await
}

/// `GET /admin/api-keys/:id/records?limit=N`
#[handler]
pub async fn key_records(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    if !st.keys.load().by_id.contains_key(&id) {
        return json(
            res,
            StatusCode::NOT_FOUND,
            &json!({"error": "API key not found"}),
        );
    }
    let limit = req.query::<usize>("limit").unwrap_or(50).clamp(1, 200);
    records_reply(st, res, Some(id), None, limit).await
}

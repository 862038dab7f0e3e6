//! `/apiStats`: self-service statistics with v1's routes and shapes, for key holders and the
//! tools they run (status-bar plugins, the self-service page).
//!
//! Unlike v1, a key id alone reads nothing: the request must carry the key itself (in the
//! body as `apiKey`, or as `x-api-key` / `Authorization: Bearer`), or an admin session.
//! Looking at stats never activates an activation-mode key.

use std::sync::Arc;

use chrono::{Duration, Utc};
use salvo::http::StatusCode;
use salvo::prelude::*;
use serde_json::{Map, Value, json};

use crate::auth::admin::{admin_token, verify_token};
use crate::auth::extract_key;
use crate::limits::KeyEntry;
use crate::model::{micros_to_dollars, picos_to_dollars};
use crate::state::AppState;
use crate::state::state;
use crate::usage::query::key_usage;
use crate::usage::{Counters, TokenUsage, bucket};
use crate::web::blocking;
use crate::web::{json, json_body};

/// v1's quota-card redemption: crs has no quota cards yet, and says so.
#[handler]
async fn no_quota_cards(res: &mut Response) {
    json(
        res,
        StatusCode::NOT_IMPLEMENTED,
        &serde_json::json!({"success": false, "error": "Not implemented",
            "message": "Quota cards are not available on this server (crs has no redeem cards yet)"}),
    );
}

pub fn router() -> Router {
    Router::with_path("apiStats")
        .get(redirect_to_page)
        .push(Router::with_path("api/get-key-id").post(get_key_id))
        .push(Router::with_path("api/redeem-card").post(no_quota_cards))
        .push(Router::with_path("api/redemption-history").get(no_quota_cards))
        .push(Router::with_path("api/user-stats").post(user_stats))
        .push(Router::with_path("api/user-model-stats").post(user_model_stats))
        .push(Router::with_path("api/user-trend").post(user_trend))
        .push(Router::with_path("api/batch-stats").post(batch_stats))
        .push(Router::with_path("api/batch-model-stats").post(batch_model_stats))
}

#[handler]
async fn redirect_to_page(res: &mut Response) {
    res.render(Redirect::permanent("/admin-next/api-stats"));
}

fn err(res: &mut Response, status: StatusCode, error: &str, message: &str) {
    json(
        res,
        status,
        &json!({"success": false, "error": error, "message": message}),
    );
}

/// v1's cost display: 2 decimals from $1, 4 from $0.001, else 6.
pub fn format_cost(d: f64) -> String {
    if d >= 1.0 {
        format!("${d:.2}")
    } else if d >= 0.001 {
        format!("${d:.4}")
    } else {
        format!("${d:.6}")
    }
}

pub(super) fn find_by_key(st: &AppState, key: &str) -> Result<Arc<KeyEntry>, &'static str> {
    if !key.starts_with(st.config.api_key_prefix.as_str()) || key.len() < 10 || key.len() > 512 {
        return Err("Invalid API key format");
    }
    let h = st.secrets.hash_api_key_raw(key);
    let idx = st.keys.load();
    let e = idx.by_hash.get(&h).ok_or("API key not found")?;
    if !e.rec.is_active {
        return Err("API key is disabled");
    }
    if e.expires_at().is_some_and(|t| t <= Utc::now()) {
        return Err("API key has expired");
    }
    Ok(e.clone())
}

/// Resolve the key a stats request is about: the key itself, or an id with an admin session.
async fn resolve(
    st: &Arc<AppState>,
    req: &Request,
    body: &Map<String, Value>,
    res: &mut Response,
) -> Option<Arc<KeyEntry>> {
    let key = body
        .get("apiKey")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            extract_key(req)
                .filter(|k| k.starts_with(st.config.api_key_prefix.as_str()))
                .map(str::to_owned)
        });
    if let Some(k) = key {
        return match find_by_key(st, &k) {
            Ok(e) => Some(e),
            Err(reason) => {
                err(res, StatusCode::UNAUTHORIZED, "Invalid API key", reason);
                None
            }
        };
    }
    let Some(id) = body
        .get("apiId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        err(
            res,
            StatusCode::BAD_REQUEST,
            "API Key is required",
            "Please provide your API Key (apiKey)",
        );
        return None;
    };
    if !is_admin(st, req).await {
        err(
            res,
            StatusCode::UNAUTHORIZED,
            "API Key is required",
            "Statistics need the API key itself (or an admin session); a key id alone is not enough",
        );
        return None;
    }
    match st.keys.load().by_id.get(id) {
        Some(e) => Some(e.clone()),
        None => {
            err(
                res,
                StatusCode::NOT_FOUND,
                "API key not found",
                "The specified API key does not exist",
            );
            None
        }
    }
}

async fn is_admin(st: &Arc<AppState>, req: &Request) -> bool {
    let Some(token) = admin_token(req) else {
        return false;
    };
    // A client key in the Authorization header is not an admin token.
    if token.starts_with(st.config.api_key_prefix.as_str()) {
        return false;
    }
    let st = st.clone();
    tokio::task::spawn_blocking(move || {
        verify_token(&st.store, &st.secrets.session_key, &token).is_some()
    })
    .await
    .unwrap_or(false)
}

fn usage_obj(c: &Counters) -> Value {
    let cost = picos_to_dollars(c.rated_cost_picos);
    json!({
        "requests": c.requests,
        "tokens": c.all_tokens(),
        "allTokens": c.all_tokens(),
        "inputTokens": c.input_tokens,
        "outputTokens": c.output_tokens,
        "cacheCreateTokens": c.cache_create_tokens,
        "cacheReadTokens": c.cache_read_tokens,
        "cost": cost,
        "realCost": picos_to_dollars(c.real_cost_picos),
        "formattedCost": format_cost(cost),
    })
}

fn user_stats_data(st: &AppState, e: &KeyEntry) -> anyhow::Result<Value> {
    let k = &e.rec;
    let u = key_usage(&st.store, &st.clock, &k.id)?;
    let now = Utc::now();
    let mut m = e.rt.meter.lock().clone();
    m.roll(k, now, st.clock.offset());
    let (start, end, remaining) = match m.win_start_ms {
        Some(s) if k.rate_limit_window > 0 => {
            let end = s + k.rate_limit_window as i64 * 60_000;
            (
                json!(s),
                json!(end),
                json!(((end - now.timestamp_millis()) / 1000).max(0)),
            )
        }
        _ => (Value::Null, Value::Null, Value::Null),
    };
    let d = micros_to_dollars;
    Ok(json!({
        "id": k.id,
        "name": k.name,
        "description": k.description,
        "isActive": k.is_active,
        "createdAt": k.created_at,
        "expiresAt": e.expires_at(),
        "expirationMode": k.expiration_mode,
        "isActivated": k.is_activated || e.rt.activated_at.get().is_some(),
        "activationDays": k.activation_days,
        "activationUnit": k.activation_unit,
        "activatedAt": k.activated_at.or_else(|| e.rt.activated_at.get().copied()),
        "permissions": k.permissions,
        "usage": {"total": usage_obj(&u.total), "daily": usage_obj(&u.daily), "monthly": usage_obj(&u.monthly)},
        "limits": {
            "tokenLimit": k.token_limit,
            "concurrencyLimit": k.concurrency_limit,
            "currentConcurrency": e.rt.in_flight(),
            "rateLimitWindow": k.rate_limit_window,
            "rateLimitRequests": k.rate_limit_requests,
            "rateLimitCost": d(k.rate_limit_cost_micros),
            "dailyCostLimit": d(k.daily_cost_limit_micros),
            "totalCostLimit": d(k.total_cost_limit_micros),
            "weeklyOpusCostLimit": d(k.weekly_opus_cost_limit_micros),
            "fiveHourCostLimit": d(k.five_hour_cost_limit_micros),
            "weeklyResetDay": k.weekly_reset_day,
            "weeklyResetHour": k.weekly_reset_hour,
            "currentWindowRequests": m.win_requests,
            "currentWindowTokens": m.win_tokens,
            "currentWindowCost": picos_to_dollars(m.win_cost),
            "currentDailyCost": picos_to_dollars(u.daily.rated_cost_picos),
            "currentTotalCost": picos_to_dollars(u.total.rated_cost_picos),
            "weeklyOpusCost": picos_to_dollars(m.weekly_claude),
            "fiveHourCost": picos_to_dollars(m.five_hour_cost()),
            "windowStartTime": start,
            "windowEndTime": end,
            "windowRemainingSeconds": remaining,
        },
        "accounts": {
            "claudeAccountId": none_if_empty(&k.claude_account_id.to_string()),
            "claudeConsoleAccountId": none_if_empty(&k.claude_console_account_id.to_string()),
            "geminiAccountId": none_if_empty(&k.gemini_account_id.to_string()),
            "openaiAccountId": none_if_empty(&k.openai_account_id.to_string()),
            "details": Value::Null,
        },
        "restrictions": {
            "enableModelRestriction": k.enable_model_restriction,
            "restrictedModels": k.restricted_models,
            "modelRestrictionMode": k.model_restriction_mode,
            "enableClientRestriction": k.enable_client_restriction,
            "allowedClients": k.allowed_clients,
        },
        "serviceRates": k.service_rates,
    }))
}

fn none_if_empty(s: &str) -> Value {
    if s.is_empty() { Value::Null } else { json!(s) }
}

async fn body(req: &mut Request, res: &mut Response) -> Option<Map<String, Value>> {
    json_body::<Map<String, Value>>(req, res, 64 * 1024).await
}

#[handler]
async fn get_key_id(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(b) = body(req, res).await else {
        return;
    };
    let Some(key) = b
        .get("apiKey")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return err(
            res,
            StatusCode::BAD_REQUEST,
            "API Key is required",
            "Please provide your API Key",
        );
    };
    match find_by_key(&st, key) {
        Ok(e) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "data": {"id": e.rec.id}}),
        ),
        Err(reason) => err(res, StatusCode::UNAUTHORIZED, "Invalid API key", reason),
    }
}

#[handler]
async fn user_stats(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(b) = body(req, res).await else {
        return;
    };
    let Some(e) = resolve(&st, req, &b, res).await else {
        return;
    };
    st.ledger.flush().await;
    let st2 = st.clone();
    match blocking(move || user_stats_data(&st2, &e)).await {
        Ok(d) => json(res, StatusCode::OK, &json!({"success": true, "data": d})),
        Err(x) => {
            tracing::error!(error = %x, "user-stats failed");
            err(
                res,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error",
                "Failed to retrieve API key statistics",
            );
        }
    }
}

/// The bucket period for v1's `period` values (anything unknown means this month, as v1).
fn model_period(st: &AppState, period: &str) -> String {
    let p = st.clock.periods(Utc::now());
    match period {
        "daily" => bucket::day(&p.day),
        "alltime" => bucket::TOTAL.to_owned(),
        _ => bucket::month(&p.month),
    }
}

fn model_stat(st: &AppState, model: &str, c: &Counters) -> Value {
    let part = |u: TokenUsage| picos_to_dollars(st.pricing.cost(model, &u).picos);
    let input = part(TokenUsage {
        input_tokens: c.input_tokens,
        ..Default::default()
    });
    let output = part(TokenUsage {
        output_tokens: c.output_tokens,
        ..Default::default()
    });
    let cache_write = part(TokenUsage {
        cache_create_tokens: c.cache_create_tokens,
        ephemeral_5m_tokens: c.ephemeral_5m_tokens,
        ephemeral_1h_tokens: c.ephemeral_1h_tokens,
        ..Default::default()
    });
    let cache_read = part(TokenUsage {
        cache_read_tokens: c.cache_read_tokens,
        ..Default::default()
    });
    let total = picos_to_dollars(c.rated_cost_picos);
    let pricing = st.pricing.price(model).map(|p| {
        let per_m = |pico: i64| pico as f64 / 1e6;
        json!({"input": per_m(p.base.input), "output": per_m(p.base.output),
               "cacheWrite": per_m(p.base.cache_write_5m), "cacheRead": per_m(p.base.cache_read)})
    });
    json!({
        "model": model,
        "requests": c.requests,
        "inputTokens": c.input_tokens,
        "outputTokens": c.output_tokens,
        "cacheCreateTokens": c.cache_create_tokens,
        "cacheReadTokens": c.cache_read_tokens,
        "allTokens": c.all_tokens(),
        "costs": {"input": input, "output": output, "cacheWrite": cache_write, "cacheRead": cache_read,
                  "total": total, "real": picos_to_dollars(c.real_cost_picos), "rated": total},
        "formatted": {"input": format_cost(input), "output": format_cost(output), "cacheWrite": format_cost(cache_write),
                      "cacheRead": format_cost(cache_read), "total": format_cost(total)},
        "pricing": pricing,
        // How the price was found; "family" and "unknown" mean the cost is an estimate.
        "priceSource": st.pricing.lookup(model).1.kind(),
        "pricedAs": st.pricing.lookup(model).1.key(),
    })
}

fn model_stats(st: &AppState, key_ids: &[String], period: &str) -> anyhow::Result<Vec<Value>> {
    let per = model_period(st, period);
    let mut by_model: std::collections::BTreeMap<String, Counters> = Default::default();
    for id in key_ids {
        let prefix = format!("{per}|km|{id}|");
        for (k, c) in st.store.usage_scan(&prefix)? {
            by_model
                .entry(k[prefix.len()..].to_owned())
                .or_default()
                .add(&c);
        }
    }
    let mut rows: Vec<(String, Counters)> = by_model.into_iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.all_tokens()));
    Ok(rows.iter().map(|(m, c)| model_stat(st, m, c)).collect())
}

#[handler]
async fn user_model_stats(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(b) = body(req, res).await else {
        return;
    };
    let Some(e) = resolve(&st, req, &b, res).await else {
        return;
    };
    let period = b
        .get("period")
        .and_then(Value::as_str)
        .unwrap_or("monthly")
        .to_owned();
    st.ledger.flush().await;
    let st2 = st.clone();
    let p2 = period.clone();
    match blocking(move || model_stats(&st2, std::slice::from_ref(&e.rec.id), &p2)).await {
        Ok(d) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "data": d, "period": period}),
        ),
        Err(x) => {
            tracing::error!(error = %x, "user-model-stats failed");
            err(
                res,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error",
                "Failed to retrieve model statistics",
            );
        }
    }
}

/// `POST /apiStats/api/user-trend {apiKey, days}`: the key's daily usage, oldest first.
#[handler]
async fn user_trend(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(b) = body(req, res).await else {
        return;
    };
    let Some(e) = resolve(&st, req, &b, res).await else {
        return;
    };
    let days = b
        .get("days")
        .and_then(Value::as_i64)
        .unwrap_or(30)
        .clamp(1, 366);
    st.ledger.flush().await;
    let st2 = st.clone();
    let r = blocking(move || {
        let now = Utc::now();
        let labels: Vec<String> = (0..days)
            .rev()
            .map(|i| st2.clock.periods(now - Duration::days(i)).day)
            .collect();
        let keys: Vec<String> = labels
            .iter()
            .map(|d| bucket::key(&bucket::day(d), &e.rec.id))
            .collect();
        let got = st2.store.usage_get_many(&keys)?;
        Ok(labels
            .into_iter()
            .zip(got)
            .map(|(d, c)| {
                let c = c.unwrap_or_default();
                json!({"period": d, "requests": c.requests, "allTokens": c.all_tokens(),
                       "inputTokens": c.input_tokens, "outputTokens": c.output_tokens,
                       "cost": picos_to_dollars(c.rated_cost_picos)})
            })
            .collect::<Vec<_>>())
    })
    .await;
    match r {
        Ok(d) => json(res, StatusCode::OK, &json!({"success": true, "data": d})),
        Err(x) => {
            tracing::error!(error = %x, "user-trend failed");
            err(
                res,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error",
                "Failed to retrieve usage trend",
            );
        }
    }
}

/// The keys of a batch request: `apiKeys` (plaintext), or `apiIds` with an admin session.
async fn resolve_batch(
    st: &Arc<AppState>,
    req: &Request,
    b: &Map<String, Value>,
    res: &mut Response,
) -> Option<Vec<Arc<KeyEntry>>> {
    let list = |name: &str| -> Option<Vec<String>> {
        b.get(name)?.as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
    };
    let (items, by_key) = match (list("apiKeys"), list("apiIds")) {
        (Some(k), _) if !k.is_empty() => (k, true),
        (_, Some(i)) if !i.is_empty() => (i, false),
        _ => {
            err(
                res,
                StatusCode::BAD_REQUEST,
                "Invalid input",
                "apiKeys (or, with an admin session, apiIds) is required",
            );
            return None;
        }
    };
    if items.len() > 30 {
        err(
            res,
            StatusCode::BAD_REQUEST,
            "Too many keys",
            "Maximum 30 API keys can be queried at once",
        );
        return None;
    }
    if by_key {
        let mut out = Vec::with_capacity(items.len());
        for k in &items {
            match find_by_key(st, k) {
                Ok(e) => out.push(e),
                Err(reason) => {
                    err(res, StatusCode::UNAUTHORIZED, "Invalid API key", reason);
                    return None;
                }
            }
        }
        return Some(out);
    }
    if !is_admin(st, req).await {
        err(
            res,
            StatusCode::UNAUTHORIZED,
            "API Key is required",
            "Statistics need the API keys themselves (or an admin session); key ids alone are not enough",
        );
        return None;
    }
    let idx = st.keys.load();
    Some(
        items
            .iter()
            .filter_map(|id| idx.by_id.get(id).cloned())
            .collect(),
    )
}

#[handler]
async fn batch_stats(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(b) = body(req, res).await else {
        return;
    };
    let Some(entries) = resolve_batch(&st, req, &b, res).await else {
        return;
    };
    let total_keys = entries.len();
    st.ledger.flush().await;
    let st2 = st.clone();
    let r = blocking(move || {
        let (mut all, mut day, mut month) = (Counters::default(), Counters::default(), Counters::default());
        let mut individual = Vec::new();
        for e in &entries {
            let u = key_usage(&st2.store, &st2.clock, &e.rec.id)?;
            all.add(&u.total);
            day.add(&u.daily);
            month.add(&u.monthly);
            individual.push(json!({"apiId": e.rec.id, "name": e.rec.name, "isActive": e.rec.is_active,
                "usage": usage_obj(&u.total), "dailyUsage": usage_obj(&u.daily), "monthlyUsage": usage_obj(&u.monthly)}));
        }
        Ok(json!({
            "aggregated": {"totalKeys": total_keys, "activeKeys": entries.iter().filter(|e| e.rec.is_active).count(),
                "usage": usage_obj(&all), "dailyUsage": usage_obj(&day), "monthlyUsage": usage_obj(&month)},
            "individual": individual,
        }))
    })
    .await;
    match r {
        Ok(d) => json(res, StatusCode::OK, &json!({"success": true, "data": d})),
        Err(x) => {
            tracing::error!(error = %x, "batch-stats failed");
            err(
                res,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error",
                "Failed to retrieve batch statistics",
            );
        }
    }
}

#[handler]
async fn batch_model_stats(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(b) = body(req, res).await else {
        return;
    };
    let Some(entries) = resolve_batch(&st, req, &b, res).await else {
        return;
    };
    let period = b
        .get("period")
        .and_then(Value::as_str)
        .unwrap_or("daily")
        .to_owned();
    st.ledger.flush().await;
    let st2 = st.clone();
    let ids: Vec<String> = entries.iter().map(|e| e.rec.id.clone()).collect();
    let p2 = period.clone();
    match blocking(move || model_stats(&st2, &ids, &p2)).await {
        Ok(d) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "data": d, "period": period}),
        ),
        Err(x) => {
            tracing::error!(error = %x, "batch-model-stats failed");
            err(
                res,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error",
                "Failed to retrieve batch model statistics",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::format_cost;

    #[test]
    fn cost_formatting_matches_v1() {
        assert_eq!(format_cost(12.3456), "$12.35");
        assert_eq!(format_cost(0.042), "$0.0420");
        assert_eq!(format_cost(0.00012), "$0.000120");
        assert_eq!(format_cost(0.0), "$0.000000");
    }

    #[test]
    fn any_cost_formats() {
        use proptest::prelude::*;
        proptest!(ProptestConfig::with_cases(256), |(d in any::<f64>())| {
            let s = format_cost(d);
            prop_assert!(s.starts_with('$'));
            if d.is_finite() && d >= 0.0 {
                let back: f64 = s[1..].parse().unwrap();
                prop_assert!((back - d).abs() <= 0.005 + d * 1e-12, "{} -> {}", d, s);
            }
        });
    }
}

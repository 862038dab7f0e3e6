//! `/admin/api-keys`: create, list (search, tag filter, pagination), read, update, soft delete
//! and restore. The plaintext key is returned once, by create.

use std::sync::Arc;

use chrono::Utc;
use salvo::http::StatusCode;
use salvo::prelude::*;
use serde_json::{Value, json};

use super::blocking;
use super::fields::{self, Body};
use crate::auth::admin::AdminUser;
use crate::auth::generate_key;
use crate::limits::{KeyEntry, KeyRuntime};
use crate::model::{
    ActivationUnit, ApiKey, Binding, BindingField, ExpirationMode, RestrictionMode,
    micros_to_dollars, picos_to_dollars,
};
use crate::state::AppState;
use crate::state::state;
use crate::store::Table;
use crate::usage::query::{UsageTotals, key_usage};
use crate::web::{json, json_body};

pub const PERMISSIONS: &[&str] = &["claude", "gemini", "openai", "droid"];

fn bad(res: &mut Response, msg: impl Into<String>) {
    crate::web::bad_request(res, msg)
}

fn not_found(res: &mut Response) {
    crate::web::not_found(res, "API key not found")
}

fn internal(res: &mut Response, what: &str, e: anyhow::Error) {
    crate::web::internal_error(res, what, e)
}

/// Apply the fields present in `b` to `k`. `creating` requires a name.
pub fn apply_fields(k: &mut ApiKey, b: &Body, creating: bool) -> Result<(), String> {
    if let Some(name) = fields::string(b, "name", 100)? {
        if name.is_empty() {
            return Err("Name is required and must be a non-empty string".into());
        }
        k.name = name;
    } else if creating {
        return Err("Name is required and must be a non-empty string".into());
    }
    if let Some(v) = fields::string(b, "description", 500)? {
        k.description = v;
    }
    if let Some(v) = fields::boolean(b, "isActive")? {
        k.is_active = v;
    }
    if let Some(v) = fields::uint(b, "tokenLimit", u64::MAX >> 11)? {
        k.token_limit = v;
    }
    if let Some(v) = fields::uint(b, "concurrencyLimit", 10_000)? {
        k.concurrency_limit = v as u32;
    }
    if let Some(v) = fields::boolean(b, "concurrencyQueueEnabled")? {
        k.concurrency_queue_enabled = v;
    }
    if let Some(v) = fields::uint(b, "concurrencyQueueMax", 10_000)? {
        k.concurrency_queue_max = v as u32;
    }
    if let Some(v) = fields::uint(b, "concurrencyQueueTimeoutMs", 3_600_000)? {
        k.concurrency_queue_timeout_ms = v;
    }
    if let Some(v) = fields::uint(b, "rateLimitWindow", 525_600)? {
        k.rate_limit_window = v as u32;
    }
    if let Some(v) = fields::uint(b, "rateLimitRequests", u32::MAX as u64)? {
        k.rate_limit_requests = v as u32;
    }
    if let Some(v) = fields::dollars(b, "rateLimitCost")? {
        k.rate_limit_cost_micros = v;
    }
    if let Some(v) = fields::dollars(b, "dailyCostLimit")? {
        k.daily_cost_limit_micros = v;
    }
    if let Some(v) = fields::dollars(b, "totalCostLimit")? {
        k.total_cost_limit_micros = v;
    }
    if let Some(v) = fields::dollars(b, "weeklyOpusCostLimit")? {
        k.weekly_opus_cost_limit_micros = v;
    }
    if let Some(v) = fields::dollars(b, "fiveHourCostLimit")? {
        k.five_hour_cost_limit_micros = v;
    }
    if let Some(v) = fields::uint(b, "weeklyResetDay", 7)? {
        if v == 0 {
            return Err("weeklyResetDay must be between 1 (Monday) and 7 (Sunday)".into());
        }
        k.weekly_reset_day = v as u8;
    }
    if let Some(v) = fields::uint(b, "weeklyResetHour", 23)? {
        k.weekly_reset_hour = v as u8;
    }
    // permissions: an array of services; [] or "all" = everything (older v1 sent a string).
    match b.get("permissions") {
        Some(Value::String(s)) if s == "all" || s.is_empty() => k.permissions.clear(),
        Some(Value::String(s)) if !s.trim_start().starts_with('[') => {
            if !PERMISSIONS.contains(&s.as_str()) {
                return Err(format!(
                    "permissions must be a subset of {}",
                    PERMISSIONS.join(", ")
                ));
            }
            k.permissions = vec![s.clone()];
        }
        _ => {
            if let Some(perms) = fields::string_list(b, "permissions")? {
                if let Some(bad) = perms
                    .iter()
                    .find(|p| !PERMISSIONS.contains(&p.as_str()) && p.as_str() != "all")
                {
                    return Err(format!(
                        "permissions must be a subset of {} (got {bad:?})",
                        PERMISSIONS.join(", ")
                    ));
                }
                k.permissions = if perms.iter().any(|p| p == "all") {
                    Vec::new()
                } else {
                    perms
                };
            }
        }
    }
    if let Some(v) = fields::boolean(b, "enableModelRestriction")? {
        k.enable_model_restriction = v;
    }
    if let Some(v) = fields::string_list(b, "restrictedModels")? {
        k.restricted_models = v;
    }
    if let Some(v) = fields::choice(b, "modelRestrictionMode", RestrictionMode::NAMES)? {
        k.model_restriction_mode = RestrictionMode::parse(&v).unwrap_or_default();
    }
    if let Some(v) = fields::boolean(b, "enableClientRestriction")? {
        k.enable_client_restriction = v;
    }
    if let Some(v) = fields::string_list(b, "allowedClients")? {
        k.allowed_clients = v;
    }
    if let Some(v) = fields::string_list(b, "tags")? {
        k.tags = v;
    }
    if let Some(v) = b.get("serviceRates") {
        match v {
            Value::Null => k.service_rates.clear(),
            Value::Object(m) => {
                let mut rates = std::collections::BTreeMap::new();
                for (svc, r) in m {
                    match r.as_f64() {
                        Some(x) if x >= 0.0 && x.is_finite() => {
                            rates.insert(svc.clone(), x);
                        }
                        _ => {
                            return Err(format!(
                                "serviceRates.{svc} must be a number of 0 or more"
                            ));
                        }
                    }
                }
                k.service_rates = rates;
            }
            _ => return Err("serviceRates must be an object of {service: rate}".into()),
        }
    }
    for f in BindingField::ALL {
        if let Some(v) = fields::string(b, f.name(), 200)? {
            *k.binding_mut(f) = Binding::parse(&v);
        }
    }
    if let Some(v) = fields::string(b, "icon", 200_000)? {
        k.icon = v;
    }
    if let Some(v) = fields::boolean(b, "allow1mContext")? {
        k.allow_1m_context = v;
    }
    if let Some(v) = fields::string(b, "userId", 200)? {
        k.user_id = v;
    }
    if let Some(v) = fields::string(b, "userUsername", 200)? {
        k.user_username = v;
    }
    if let Some(v) = fields::choice(b, "expirationMode", ExpirationMode::NAMES)? {
        k.expiration_mode = ExpirationMode::parse(&v).unwrap_or_default();
    }
    if let Some(v) = fields::uint(b, "activationDays", 36_500)? {
        k.activation_days = v as u32;
    }
    if let Some(v) = fields::choice(b, "activationUnit", ActivationUnit::NAMES)? {
        k.activation_unit = ActivationUnit::parse(&v).unwrap_or_default();
    }
    if let Some(v) = fields::instant(b, "expiresAt")? {
        k.expires_at = v;
    }
    if k.expiration_mode == ExpirationMode::Activation && !k.is_activated {
        if k.activation_days == 0 {
            return Err("activationDays must be a positive number in activation mode".into());
        }
        if creating && k.expires_at.is_some() {
            return Err(
                "expiresAt cannot be set in activation mode; it is set on first use".into(),
            );
        }
    }
    Ok(())
}

/// The admin view of a key: v1 field names, dollars as numbers, never the hash.
pub fn view(
    k: &ApiKey,
    rt: Option<(&KeyRuntime, chrono::FixedOffset)>,
    usage: Option<&UsageTotals>,
) -> Value {
    let mut v = json!({
        "id": k.id,
        "name": k.name,
        "description": k.description,
        "maskedKey": format!("{}...", k.key_preview),
        "isActive": k.is_active,
        "createdAt": k.created_at,
        "createdBy": k.created_by,
        "updatedAt": k.updated_at,
        "lastUsedAt": k.last_used_at,
        "expirationMode": k.expiration_mode,
        "expiresAt": k.expires_at,
        "isActivated": k.is_activated,
        "activatedAt": k.activated_at,
        "activationDays": k.activation_days,
        "activationUnit": k.activation_unit,
        "tokenLimit": k.token_limit,
        "concurrencyLimit": k.concurrency_limit,
        "concurrencyQueueEnabled": k.concurrency_queue_enabled,
        "concurrencyQueueMax": k.concurrency_queue_max,
        "concurrencyQueueTimeoutMs": k.concurrency_queue_timeout_ms,
        "rateLimitWindow": k.rate_limit_window,
        "rateLimitRequests": k.rate_limit_requests,
        "rateLimitCost": micros_to_dollars(k.rate_limit_cost_micros),
        "dailyCostLimit": micros_to_dollars(k.daily_cost_limit_micros),
        "totalCostLimit": micros_to_dollars(k.total_cost_limit_micros),
        "weeklyOpusCostLimit": micros_to_dollars(k.weekly_opus_cost_limit_micros),
        "fiveHourCostLimit": micros_to_dollars(k.five_hour_cost_limit_micros),
        "weeklyResetDay": k.weekly_reset_day,
        "weeklyResetHour": k.weekly_reset_hour,
        "permissions": k.permissions,
        "enableModelRestriction": k.enable_model_restriction,
        "restrictedModels": k.restricted_models,
        "modelRestrictionMode": k.model_restriction_mode,
        "enableClientRestriction": k.enable_client_restriction,
        "allowedClients": k.allowed_clients,
        "tags": k.tags,
        "serviceRates": k.service_rates,
        "icon": k.icon,
        "allow1mContext": k.allow_1m_context,
        "userId": k.user_id,
        "userUsername": k.user_username,
        "isDeleted": k.is_deleted,
        "deletedAt": k.deleted_at,
        "deletedBy": k.deleted_by,
        "deletedByType": k.deleted_by_type,
    });
    for f in BindingField::ALL {
        v[f.name()] = json!(k.binding(f));
    }
    if let Some(u) = usage {
        v["usage"] = u.to_json();
    }
    if let Some((rt, off)) = rt {
        let last = rt.last_used_ms.load(std::sync::atomic::Ordering::Relaxed);
        if last > 0 {
            v["lastUsedAt"] = json!(chrono::DateTime::from_timestamp_millis(last));
        }
        let gate = rt.gate.load();
        v["currentConcurrency"] = json!(gate.in_use());
        v["queuedRequests"] = json!(gate.waiting());
        let mut m = rt.meter.lock();
        m.roll(k, Utc::now(), off);
        v["dailyCost"] = json!(picos_to_dollars(m.daily));
        v["totalCost"] = json!(picos_to_dollars(m.total));
        v["weeklyOpusCost"] = json!(picos_to_dollars(m.weekly_claude));
        v["fiveHourCost"] = json!(picos_to_dollars(m.five_hour_cost()));
        v["currentWindowRequests"] = json!(m.win_requests);
        v["currentWindowTokens"] = json!(m.win_tokens);
        v["currentWindowCost"] = json!(picos_to_dollars(m.win_cost));
        if let Some(start) = m.win_start_ms {
            let end = start + k.rate_limit_window as i64 * 60_000;
            v["windowStartTime"] = json!(start);
            v["windowEndTime"] = json!(end);
            v["windowRemainingSeconds"] =
                json!(((end - Utc::now().timestamp_millis()) / 1000).max(0));
        }
    }
    v
}

async fn save(st: &Arc<AppState>, k: ApiKey) -> anyhow::Result<()> {
    let st2 = st.clone();
    blocking(move || {
        st2.store.put(Table::ApiKeys, &k.id, &k)?;
        st2.reload_keys()
    })
    .await
}

#[handler]
pub async fn create(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let admin = depot
        .get_typed::<AdminUser>()
        .map(|a| a.0.clone())
        .unwrap_or_default();
    let Some(body) = json_body::<Body>(req, res, 1024 * 1024).await else {
        return;
    };
    let mut k = ApiKey::new(uuid::Uuid::new_v4().to_string());
    if let Err(e) = apply_fields(&mut k, &body, true) {
        return bad(res, e);
    }
    let plaintext = generate_key(&st.config.api_key_prefix);
    k.key_hash = st.secrets.hash_api_key(&plaintext);
    k.key_preview = plaintext
        .chars()
        .take(st.config.api_key_prefix.len() + 6)
        .collect();
    let now = Utc::now();
    k.created_at = Some(now);
    k.updated_at = Some(now);
    k.created_by = admin;
    let _guard = st.admin_lock.lock().await;
    if let Err(e) = save(&st, k.clone()).await {
        return internal(res, "Failed to create API key", e);
    }
    tracing::info!(key_id = %k.id, name = %k.name, "api key created");
    let mut data = view(&k, None, None);
    data["apiKey"] = Value::String(plaintext);
    json(res, StatusCode::OK, &json!({"success": true, "data": data}));
}

fn page_params(req: &Request) -> (usize, usize) {
    let page = req.query::<usize>("page").unwrap_or(1).max(1);
    let size = req.query::<usize>("pageSize").unwrap_or(20).clamp(1, 1000);
    (page, size)
}

fn matches_search(k: &ApiKey, q: &str) -> bool {
    if q.is_empty() {
        return true;
    }
    let q = q.to_lowercase();
    k.name.to_lowercase().contains(&q)
        || k.id.contains(&q)
        || k.description.to_lowercase().contains(&q)
        || k.key_preview.to_lowercase().starts_with(&q)
        || k.tags.iter().any(|t| t.to_lowercase().contains(&q))
}

async fn list_impl(req: &mut Request, depot: &mut Depot, res: &mut Response, deleted: bool) {
    let st = state(depot);
    let search = req.query::<String>("search").unwrap_or_default();
    let tag = req.query::<String>("tag").unwrap_or_default();
    let active = req.query::<String>("isActive").unwrap_or_default();
    let (page, size) = page_params(req);
    let idx = st.keys.load();
    let mut all: Vec<&ApiKey> = idx
        .by_id
        .values()
        .map(|e| &e.rec)
        .filter(|k| k.is_deleted == deleted)
        .collect();
    let mut tags: Vec<String> = all.iter().flat_map(|k| k.tags.iter().cloned()).collect();
    tags.sort();
    tags.dedup();
    all.retain(|k| matches_search(k, &search));
    if !tag.is_empty() {
        all.retain(|k| k.tags.contains(&tag));
    }
    match active.as_str() {
        "true" => all.retain(|k| k.is_active),
        "false" => all.retain(|k| !k.is_active),
        _ => {}
    }
    // Newest first, as the v1 UI shows them.
    all.sort_by(|a, b| {
        b.created_at
            .cmp(&a.created_at)
            .then_with(|| a.name.cmp(&b.name))
    });
    let total = all.len();
    let items: Vec<Arc<KeyEntry>> = all
        .into_iter()
        .skip((page - 1).saturating_mul(size))
        .take(size)
        .filter_map(|k| idx.by_id.get(&k.id).cloned())
        .collect();
    st.ledger.flush().await;
    let st2 = st.clone();
    let ids: Vec<String> = items.iter().map(|k| k.rec.id.clone()).collect();
    let usages = match blocking(move || {
        ids.iter()
            .map(|id| key_usage(&st2.store, &st2.clock, id))
            .collect::<anyhow::Result<Vec<_>>>()
    })
    .await
    {
        Ok(u) => u,
        Err(e) => return internal(res, "Failed to list API keys", e),
    };
    let items: Vec<Value> = items
        .iter()
        .zip(usages.iter())
        .map(|(k, u)| view(&k.rec, Some((&k.rt, st.clock.offset())), Some(u)))
        .collect();
    if deleted {
        return json(
            res,
            StatusCode::OK,
            &json!({"success": true, "apiKeys": items, "total": total}),
        );
    }
    json(
        res,
        StatusCode::OK,
        &json!({
            "success": true,
            "data": {
                "items": items,
                "pagination": {"page": page, "pageSize": size, "total": total, "totalPages": total.div_ceil(size).max(1)},
                "availableTags": tags,
            }
        }),
    );
}

#[handler]
pub async fn list(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    list_impl(req, depot, res, false).await
}

#[handler]
pub async fn list_deleted(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    list_impl(req, depot, res, true).await
}

#[handler]
pub async fn get(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    let Some(k) = st.keys.load().by_id.get(&id).cloned() else {
        return not_found(res);
    };
    st.ledger.flush().await;
    let st2 = st.clone();
    match blocking(move || key_usage(&st2.store, &st2.clock, &id)).await {
        Ok(u) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "data": view(&k.rec, Some((&k.rt, st.clock.offset())), Some(&u))}),
        ),
        Err(e) => internal(res, "Failed to get API key", e),
    }
}

#[handler]
pub async fn update(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    let Some(body) = json_body::<Body>(req, res, 1024 * 1024).await else {
        return;
    };
    let _guard = st.admin_lock.lock().await;
    let Some(cur) = st.keys.load().by_id.get(&id).cloned() else {
        return not_found(res);
    };
    let mut k = cur.rec.clone();
    // v1: setting expiresAt re-derives isActive unless isActive is given too.
    if let Ok(Some(exp)) = fields::instant(&body, "expiresAt")
        && !body.contains_key("isActive")
        && !k.is_deleted
    {
        k.is_active = exp.is_none_or(|e| e > Utc::now());
    }
    if let Err(e) = apply_fields(&mut k, &body, false) {
        return bad(res, e);
    }
    k.updated_at = Some(Utc::now());
    if let Err(e) = save(&st, k.clone()).await {
        return internal(res, "Failed to update API key", e);
    }
    tracing::info!(key_id = %k.id, "api key updated");
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "message": "API key updated successfully", "data": view(&k, None, None)}),
    );
}

#[handler]
pub async fn delete(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let admin = depot
        .get_typed::<AdminUser>()
        .map(|a| a.0.clone())
        .unwrap_or_default();
    let id = req.param::<String>("id").unwrap_or_default();
    let _guard = st.admin_lock.lock().await;
    let Some(cur) = st.keys.load().by_id.get(&id).cloned() else {
        return not_found(res);
    };
    if cur.rec.is_deleted {
        return json(
            res,
            StatusCode::OK,
            &json!({"success": true, "message": "API key deleted successfully"}),
        );
    }
    let mut k = cur.rec.clone();
    k.is_deleted = true;
    k.is_active = false;
    k.deleted_at = Some(Utc::now());
    k.deleted_by = admin;
    k.deleted_by_type = "admin".into();
    k.updated_at = k.deleted_at;
    if let Err(e) = save(&st, k).await {
        return internal(res, "Failed to delete API key", e);
    }
    tracing::info!(key_id = %id, "api key soft-deleted");
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "message": "API key deleted successfully"}),
    );
}

#[handler]
pub async fn restore(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    let _guard = st.admin_lock.lock().await;
    let Some(cur) = st.keys.load().by_id.get(&id).cloned() else {
        return json(
            res,
            StatusCode::NOT_FOUND,
            &json!({"success": false, "error": "API key not found"}),
        );
    };
    if !cur.rec.is_deleted {
        return json(
            res,
            StatusCode::BAD_REQUEST,
            &json!({"success": false, "error": "API key is not deleted; nothing to restore"}),
        );
    }
    let mut k = cur.rec.clone();
    k.is_deleted = false;
    k.is_active = true;
    k.deleted_at = None;
    k.deleted_by.clear();
    k.deleted_by_type.clear();
    k.updated_at = Some(Utc::now());
    if let Err(e) = save(&st, k.clone()).await {
        return internal(res, "Failed to restore API key", e);
    }
    tracing::info!(key_id = %id, "api key restored");
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "message": "API key restored", "apiKey": view(&k, None, None)}),
    );
}

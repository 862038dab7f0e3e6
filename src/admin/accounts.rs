//! `/admin/claude-console-accounts`: upstream Anthropic-compatible API-key accounts.
//! Secrets (apiKey, proxy password) are encrypted before they reach the store and are never
//! returned; views show a masked form.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use salvo::http::StatusCode;
use salvo::prelude::*;
use serde_json::{Value, json};

use super::blocking;
use super::fields::{self, Body};
use crate::model::{Account, ApiKey, Platform, ProxyConfig, micros_to_dollars};
use crate::state::AppState;
use crate::store::Table;
use crate::usage::query::{UsageTotals, account_usage};
use crate::web::{json, json_body, state};

fn bad(res: &mut Response, msg: impl Into<String>) {
    json(res, StatusCode::BAD_REQUEST, &json!({"error": msg.into()}));
}

fn not_found(res: &mut Response) {
    json(
        res,
        StatusCode::NOT_FOUND,
        &json!({"error": "Account not found"}),
    );
}

fn internal(res: &mut Response, what: &str, e: anyhow::Error) {
    tracing::error!(error = %e, "{what}");
    json(
        res,
        StatusCode::INTERNAL_SERVER_ERROR,
        &json!({"error": what, "message": "Internal server error"}),
    );
}

fn parse_url(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"));
    let ok = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && !u.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err("apiUrl must be an http:// or https:// URL, e.g. https://api.anthropic.com".into())
    }
}

/// `supportedModels` as v1 accepts it: a mapping object, or an array (identity mapping).
fn supported_models(v: &Value) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    match v {
        Value::Null => {}
        Value::Array(items) => {
            for it in items {
                let s = it
                    .as_str()
                    .filter(|s| !s.trim().is_empty())
                    .ok_or("supportedModels must list model names")?;
                out.insert(s.trim().to_owned(), s.trim().to_owned());
            }
        }
        Value::Object(m) => {
            for (from, to) in m {
                let to = to
                    .as_str()
                    .ok_or("supportedModels must map model names to model names")?;
                let to = if to.trim().is_empty() {
                    from.as_str()
                } else {
                    to.trim()
                };
                out.insert(from.trim().to_owned(), to.to_owned());
            }
        }
        Value::String(s) if s.trim().is_empty() => {}
        Value::String(s) => {
            let parsed: Value = serde_json::from_str(s)
                .map_err(|_| "supportedModels must be an object or an array")?;
            return supported_models(&parsed);
        }
        _ => return Err("supportedModels must be an object or an array".into()),
    }
    Ok(out)
}

fn proxy(
    st: &AppState,
    v: &Value,
    old: Option<&ProxyConfig>,
) -> Result<Option<ProxyConfig>, String> {
    let obj = match v {
        Value::Null => return Ok(None),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => {
            serde_json::from_str::<Value>(s).map_err(|_| "proxy must be an object or null")?
        }
        Value::Object(_) => v.clone(),
        _ => return Err("proxy must be an object or null".into()),
    };
    let m = obj.as_object().ok_or("proxy must be an object or null")?;
    let kind = m
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("http")
        .to_ascii_lowercase();
    if !["http", "https", "socks5", "socks5h"].contains(&kind.as_str()) {
        return Err("proxy.type must be http, https or socks5".into());
    }
    let host = m
        .get("host")
        .and_then(Value::as_str)
        .unwrap_or("")
        .trim()
        .to_owned();
    if host.is_empty() {
        return Ok(None);
    }
    let port = match m.get("port") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|p| (1..=65535).contains(p))
    .ok_or("proxy.port must be a port number")? as u16;
    let username = m
        .get("username")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    // An absent password keeps the stored one (the UI never sees it to send it back).
    let password = match m.get("password") {
        Some(Value::String(p)) if !p.is_empty() => st.secrets.encrypt(p),
        Some(Value::String(_)) => String::new(),
        _ => old.map(|o| o.password.clone()).unwrap_or_default(),
    };
    Ok(Some(ProxyConfig {
        kind,
        host,
        port,
        username,
        password,
    }))
}

fn apply_fields(st: &AppState, a: &mut Account, b: &Body, creating: bool) -> Result<(), String> {
    if let Some(v) = fields::string(b, "name", 100)? {
        if v.is_empty() {
            return Err("name must not be empty".into());
        }
        a.name = v;
    }
    if let Some(v) = fields::string(b, "description", 500)? {
        a.description = v;
    }
    if let Some(v) = fields::string(b, "apiUrl", 2048)? {
        parse_url(&v)?;
        a.api_url = v;
    }
    if let Some(v) = fields::string(b, "apiKey", 4096)? {
        if !v.is_empty() {
            a.api_key = st.secrets.encrypt(&v);
        } else if creating {
            return Err("Name, API URL and API Key are required".into());
        }
    }
    if creating && (a.name.is_empty() || a.api_url.is_empty() || a.api_key.is_empty()) {
        return Err("Name, API URL and API Key are required".into());
    }
    if let Some(v) = fields::uint(b, "priority", 1000)? {
        if v == 0 {
            return Err("priority must be between 1 and 1000 (lower is preferred)".into());
        }
        a.priority = v as u32;
    }
    if let Some(v) = fields::boolean(b, "schedulable")? {
        a.schedulable = v;
    }
    if let Some(v) = fields::boolean(b, "isActive")? {
        a.is_active = v;
    }
    if let Some(v) = fields::choice(b, "accountType", &["shared", "dedicated", "group"])? {
        a.account_type = v;
    }
    if let Some(v) = b.get("supportedModels") {
        a.supported_models = supported_models(v)?;
    }
    if let Some(v) = fields::string(b, "userAgent", 512)? {
        a.user_agent = v;
    }
    if let Some(v) = b.get("proxy") {
        let old = a.proxy.clone();
        a.proxy = proxy(st, v, old.as_ref())?;
    }
    if let Some(v) = fields::dollars(b, "dailyQuota")? {
        a.daily_quota_micros = v;
    }
    Ok(())
}

pub fn view(st: &AppState, a: &Account, usage: Option<&UsageTotals>) -> Value {
    let masked_key = st
        .secrets
        .decrypt(&a.api_key)
        .map(|k| crate::crypto::mask(&k))
        .unwrap_or_default();
    let proxy = a.proxy.as_ref().map(|p| {
        json!({"type": p.kind, "host": p.host, "port": p.port, "username": p.username, "hasPassword": !p.password.is_empty()})
    });
    let mut v = json!({
        "id": a.id,
        "platform": a.platform.as_str(),
        "name": a.name,
        "description": a.description,
        "apiUrl": a.api_url,
        "apiKeyMasked": masked_key,
        "priority": a.priority,
        "schedulable": a.schedulable,
        "isActive": a.is_active,
        "accountType": a.account_type,
        "supportedModels": a.supported_models,
        "userAgent": a.user_agent,
        "proxy": proxy,
        "dailyQuota": micros_to_dollars(a.daily_quota_micros),
        "status": a.status,
        "errorMessage": a.error_message,
        "createdAt": a.created_at,
        "updatedAt": a.updated_at,
    });
    if let Some(u) = usage {
        v["usage"] = u.to_json();
    }
    v
}

async fn save(st: &Arc<AppState>, a: Account) -> anyhow::Result<()> {
    let st2 = st.clone();
    blocking(move || {
        st2.store.put(Table::Accounts, &a.id, &a)?;
        st2.reload_accounts()
    })
    .await
}

fn current(st: &AppState, id: &str) -> Option<Account> {
    st.accounts
        .load()
        .by_id
        .get(id)
        .map(|rt| rt.rec.clone())
        .or_else(|| st.store.get::<Account>(Table::Accounts, id).ok().flatten())
        .filter(|a| a.platform == Platform::ClaudeConsole)
}

#[handler]
pub async fn create(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(body) = json_body::<Body>(req, res, 1024 * 1024).await else {
        return;
    };
    let mut a = Account::new(uuid::Uuid::new_v4().to_string(), Platform::ClaudeConsole);
    if let Err(e) = apply_fields(&st, &mut a, &body, true) {
        return bad(res, e);
    }
    let now = Utc::now();
    a.created_at = Some(now);
    a.updated_at = Some(now);
    let _guard = st.admin_lock.lock().await;
    if let Err(e) = save(&st, a.clone()).await {
        return internal(res, "Failed to create Claude Console account", e);
    }
    tracing::info!(account_id = %a.id, name = %a.name, "console account created");
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "data": view(&st, &a, None)}),
    );
}

#[handler]
pub async fn list(_req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    st.ledger.flush().await;
    let st2 = st.clone();
    let r = blocking(move || {
        let mut accts: Vec<Account> = st2.store.load_all(Table::Accounts)?;
        accts.retain(|a| a.platform == Platform::ClaudeConsole);
        accts.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
        accts
            .iter()
            .map(|a| Ok(view(&st2, a, Some(&account_usage(&st2, &a.id)?))))
            .collect::<anyhow::Result<Vec<Value>>>()
    })
    .await;
    match r {
        Ok(items) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "data": items}),
        ),
        Err(e) => internal(res, "Failed to get Claude Console accounts", e),
    }
}

#[handler]
pub async fn get(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    let Some(a) = current(&st, &id) else {
        return not_found(res);
    };
    st.ledger.flush().await;
    let st2 = st.clone();
    match blocking(move || account_usage(&st2, &id)).await {
        Ok(u) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "data": view(&st, &a, Some(&u))}),
        ),
        Err(e) => internal(res, "Failed to get Claude Console account", e),
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
    let Some(mut a) = current(&st, &id) else {
        return not_found(res);
    };
    if let Err(e) = apply_fields(&st, &mut a, &body, false) {
        return bad(res, e);
    }
    a.updated_at = Some(Utc::now());
    if let Err(e) = save(&st, a.clone()).await {
        return internal(res, "Failed to update Claude Console account", e);
    }
    tracing::info!(account_id = %a.id, "console account updated");
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "message": "Claude Console account updated successfully", "data": view(&st, &a, None)}),
    );
}

#[handler]
pub async fn toggle_schedulable(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    let _guard = st.admin_lock.lock().await;
    let Some(mut a) = current(&st, &id) else {
        return not_found(res);
    };
    a.schedulable = !a.schedulable;
    a.updated_at = Some(Utc::now());
    let schedulable = a.schedulable;
    if let Err(e) = save(&st, a).await {
        return internal(res, "Failed to toggle schedulable status", e);
    }
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "schedulable": schedulable}),
    );
}

#[handler]
pub async fn delete(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    let _guard = st.admin_lock.lock().await;
    if current(&st, &id).is_none() {
        return not_found(res);
    }
    let st2 = st.clone();
    let r = blocking(move || {
        // Keys bound to this account go back to the shared pool, as in v1.
        let keys: Vec<ApiKey> = st2.store.load_all(Table::ApiKeys)?;
        let mut unbound = 0u32;
        for mut k in keys
            .into_iter()
            .filter(|k| k.claude_console_account_id == id)
        {
            k.claude_console_account_id.clear();
            k.updated_at = Some(Utc::now());
            st2.store.put(Table::ApiKeys, &k.id, &k)?;
            unbound += 1;
        }
        st2.store.delete(Table::Accounts, &id)?;
        st2.reload_keys()?;
        st2.reload_accounts()?;
        tracing::info!(account_id = %id, unbound_keys = unbound, "console account deleted");
        Ok(unbound)
    })
    .await;
    match r {
        Ok(n) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "message": "Claude Console account deleted", "unboundKeys": n}),
        ),
        Err(e) => internal(res, "Failed to delete Claude Console account", e),
    }
}

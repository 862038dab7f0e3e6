//! Droid account fields in the admin API, under v1's names (src/services/droidAccountService.js
//! `createAccount` / `updateAccount`): the authentication method, WorkOS tokens, and the
//! API-key pool with v1's update modes (`apiKeyUpdateMode`: append, replace, delete, update;
//! `removeApiKeys`, `clearApiKeys`). Pool keys are stored encrypted and only ever shown masked.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::fields::header_safe;
use super::fields::{self, Body};
use crate::model::{Account, AccountStatus, PoolKey};
use crate::state::AppState;

/// Pool size an admin may configure on one account.
const MAX_POOL: usize = 1000;

/// v1's `hash` of a pool key: SHA-256 hex of the trimmed key.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.trim().as_bytes()))
}

/// A new pool entry in v1's shape.
pub fn new_entry(st_encrypt: impl Fn(&str) -> String, key: &str) -> PoolKey {
    PoolKey {
        id: uuid::Uuid::new_v4().to_string(),
        hash: key_hash(key),
        key: st_encrypt(key.trim()),
        created_at: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        status: "active".into(),
        ..Default::default()
    }
}

/// The keys of `apiKeys` (strings), or in update mode the `{key, status, errorMessage}` items.
fn key_items(b: &Body, k: &str) -> Result<Vec<Value>, String> {
    match b.get(k) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(xs)) if xs.len() <= MAX_POOL => Ok(xs.clone()),
        Some(Value::Array(_)) => Err(format!("{k} may hold at most {MAX_POOL} keys")),
        _ => Err(format!("{k} must be an array")),
    }
}

fn key_strings(items: &[Value], k: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        let s = it
            .as_str()
            .ok_or_else(|| format!("{k} must be an array of strings"))?
            .trim();
        if s.is_empty() {
            continue;
        }
        header_safe(k, s)?;
        out.push(s.to_owned());
    }
    Ok(out)
}

/// Apply v1's pool update to `a.api_keys`; true when the pool changed.
fn apply_pool(st: &AppState, a: &mut Account, b: &Body) -> Result<bool, String> {
    let adds = key_items(b, "apiKeys")?;
    let removes = key_items(b, "removeApiKeys")?;
    let clear = fields::boolean(b, "clearApiKeys")?.unwrap_or(false);
    let explicit = match fields::string(b, "apiKeyUpdateMode", 16)? {
        Some(m) if !m.is_empty() => {
            let m = m.to_ascii_lowercase();
            if !["append", "replace", "delete", "update"].contains(&m.as_str()) {
                return Err("apiKeyUpdateMode must be append, replace, delete or update".into());
            }
            Some(m)
        }
        _ => None,
    };
    match explicit.as_deref() {
        Some("delete") => remove_keys(a, &removes),
        Some("update") => update_keys(a, &adds),
        Some(m) => add_keys(st, a, &adds, m == "replace" || clear),
        // v1 picks one mode from the fields present; an admin form that removes some keys
        // and adds others in one save gets both.
        None if clear => add_keys(st, a, &adds, true),
        None => {
            let removed = remove_keys(a, &removes)?;
            Ok(add_keys(st, a, &adds, false)? || removed)
        }
    }
}

/// v1's delete mode: the keys named (by the key itself, as v1 takes them, or by the entry's
/// id, which is all a masked view shows).
fn remove_keys(a: &mut Account, removes: &[Value]) -> Result<bool, String> {
    let gone = key_strings(removes, "removeApiKeys")?;
    let hashes: Vec<String> = gone.iter().map(|k| key_hash(k)).collect();
    let before = a.api_keys.len();
    a.api_keys
        .retain(|e| !hashes.contains(&e.hash) && !gone.contains(&e.id));
    Ok(a.api_keys.len() != before)
}

/// v1's update mode: a key's status and error message, the key named by itself (or by its
/// entry id).
fn update_keys(a: &mut Account, items: &[Value]) -> Result<bool, String> {
    let mut changed = false;
    for it in items {
        let by_key = it
            .get("key")
            .or_else(|| it.get("apiKey"))
            .and_then(Value::as_str)
            .map(key_hash);
        let by_id = it.get("id").and_then(Value::as_str);
        let Some(e) = a
            .api_keys
            .iter_mut()
            .find(|e| by_key.as_deref() == Some(e.hash.as_str()) || by_id == Some(e.id.as_str()))
        else {
            continue;
        };
        if let Some(s) = it.get("status").and_then(Value::as_str) {
            if !["active", "error"].contains(&s) {
                return Err("a key's status must be active or error".into());
            }
            e.status = s.to_owned();
        }
        if let Some(m) = it.get("errorMessage").and_then(Value::as_str) {
            e.error_message = m.chars().take(500).collect();
        }
        changed = true;
    }
    Ok(changed)
}

/// v1's append and replace modes: new keys, duplicates (by hash) skipped.
fn add_keys(st: &AppState, a: &mut Account, adds: &[Value], replace: bool) -> Result<bool, String> {
    let new = key_strings(adds, "apiKeys")?;
    if replace {
        a.api_keys.clear();
    }
    let mut added = 0;
    for k in new {
        let h = key_hash(&k);
        if a.api_keys.iter().any(|e| e.hash == h) {
            continue;
        }
        if a.api_keys.len() >= MAX_POOL {
            return Err(format!("a pool holds at most {MAX_POOL} keys"));
        }
        a.api_keys.push(new_entry(|v| st.secrets.encrypt(v), &k));
        added += 1;
    }
    Ok(replace || added > 0)
}

/// `expiresAt` of a token: v1 writes an ISO date; unix ms is accepted too.
fn expiry_ms(v: &Value) -> Result<i64, String> {
    match v {
        Value::Null => Ok(0),
        Value::Number(n) => Ok(n.as_i64().unwrap_or(0)),
        Value::String(s) if s.trim().is_empty() => Ok(0),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| {
                DateTime::parse_from_rfc3339(s.trim())
                    .ok()
                    .map(|t| t.timestamp_millis())
            })
            .ok_or_else(|| "expiresAt must be an ISO 8601 date or unix milliseconds".into()),
        _ => Err("expiresAt must be an ISO 8601 date or unix milliseconds".into()),
    }
}

/// The Droid fields of a create or update body.
pub fn apply(st: &AppState, a: &mut Account, b: &Body, creating: bool) -> Result<(), String> {
    if let Some(v) = fields::choice(b, "endpointType", &["anthropic", "openai", "comm"])? {
        a.endpoint_type = v;
    }
    if let Some(v) = fields::string(b, "authenticationMethod", 32)? {
        a.authentication_method = v.trim().to_ascii_lowercase();
    }
    if let Some(v) = fields::string(b, "organizationId", 200)? {
        a.organization_id = v;
    }
    let mut new_tokens = false;
    for (f, slot) in [
        ("accessToken", &mut a.access_token),
        ("refreshToken", &mut a.refresh_token),
    ] {
        if let Some(v) = fields::string(b, f, 16_384)?
            && !v.trim().is_empty()
        {
            header_safe(f, v.trim())?;
            *slot = st.secrets.encrypt(v.trim());
            new_tokens = true;
        }
    }
    if let Some(v) = b.get("expiresAt") {
        a.expires_at = expiry_ms(v)?;
    }
    if new_tokens && !b.contains_key("expiresAt") {
        // Tokens of unknown age: refreshed before their first use (v1 refreshes pasted
        // refresh tokens at once).
        a.expires_at = 1;
    }
    if new_tokens && a.access_token.is_empty() && !a.refresh_token.is_empty() {
        a.expires_at = 1;
    }
    let pool_changed = apply_pool(st, a, b)?;
    if pool_changed && !a.api_keys.is_empty() {
        // v1: a pool makes the account an API-key account.
        a.authentication_method = "api_key".into();
    }
    if (pool_changed || new_tokens) && a.status == AccountStatus::Error {
        a.status = AccountStatus::Active;
        a.error_message.clear();
    }
    if creating
        && a.api_keys.is_empty()
        && a.api_key.is_empty()
        && a.refresh_token.is_empty()
        && a.access_token.is_empty()
    {
        return Err(
            "Name and apiKeys (or a WorkOS refreshToken / accessToken) are required".into(),
        );
    }
    Ok(())
}

/// The Droid part of an account view: tokens and pool keys masked, key statuses as v1 keeps
/// them.
pub fn view(st: &AppState, a: &Account, v: &mut Value) {
    let masked = |enc: &str| st.secrets.masked(enc);
    v["endpointType"] = json!(if a.endpoint_type.is_empty() {
        "anthropic"
    } else {
        a.endpoint_type.as_str()
    });
    v["authenticationMethod"] = json!(a.authentication_method);
    v["organizationId"] = json!(a.organization_id);
    v["accessTokenMasked"] = json!(masked(&a.access_token));
    v["hasRefreshToken"] = json!(!a.refresh_token.is_empty());
    v["tokenExpiresAt"] = json!(a.expires_at);
    v["lastRefreshAt"] = json!(a.last_refresh_at);
    v["apiKeyMasked"] = json!(masked(&a.api_key));
    v["apiKeyCount"] = json!(a.api_keys.len());
    let rt = st.accounts.load().by_id.get(&a.id).cloned();
    v["apiKeys"] = json!(
        a.api_keys
            .iter()
            .map(|e| {
                let (n, last) = rt
                    .as_ref()
                    .map(|r| r.rt.pool_sticky.usage(&e.id))
                    .unwrap_or_default();
                let last_used = chrono::DateTime::from_timestamp_millis(last)
                    .filter(|_| last > 0)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                    .unwrap_or_else(|| e.last_used_at.clone());
                json!({
                    "id": e.id,
                    "maskedKey": masked(&e.key),
                    "createdAt": e.created_at,
                    "lastUsedAt": last_used,
                    "usageCount": (e.usage_count + n).to_string(),
                    "status": if e.status.is_empty() { "active" } else { e.status.as_str() },
                    "errorMessage": e.error_message,
                })
            })
            .collect::<Vec<_>>()
    );
}

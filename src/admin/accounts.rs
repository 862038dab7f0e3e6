//! Upstream accounts of every type, at v1's paths: `/admin/claude-accounts`,
//! `/admin/claude-console-accounts`, `/admin/openai-responses-accounts`,
//! `/admin/gemini-api-accounts`, `/admin/azure-openai-accounts`, `/admin/bedrock-accounts`,
//! `/admin/droid-accounts`, `/admin/ccr-accounts`, `/admin/openai-accounts`, each with create, list, read, update,
//! delete, toggle-schedulable, toggle, reset-status and test. Secrets are encrypted before
//! they reach the store and are never returned; views show a masked form.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use salvo::http::StatusCode;
use salvo::prelude::*;
use serde_json::{Value, json};

use super::blocking;
use super::fields::{self, Body, header_safe};
use crate::model::{
    Account, AccountGroup, AccountStatus, ApiKey, Binding, BindingField, Platform, ProxyConfig,
    micros_to_dollars,
};
use crate::state::AppState;
use crate::state::state;
use crate::store::Table;
use crate::usage::query::{UsageTotals, account_usage};
use crate::web::{json, json_body};

/// Claude account options kept in `extra` (see `providers::claude`).
const EXTRA_FLAGS: &[&str] = &[
    "autoStopOnWarning",
    "adaptOtherClients",
    "useUnifiedUserAgent",
    "useUnifiedClientId",
];

fn bad(res: &mut Response, msg: impl Into<String>) {
    crate::web::bad_request(res, msg)
}

fn not_found(res: &mut Response) {
    crate::web::not_found(res, "Account not found")
}

fn internal(res: &mut Response, what: &str, e: anyhow::Error) {
    crate::web::internal_error(res, what, e)
}

fn parse_url(field: &str, u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"));
    let ok = rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
        && !u.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{field} must be an http:// or https:// URL, e.g. https://api.anthropic.com"
        ))
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
    if !valid_proxy_host(&host) {
        return Err("proxy.host must be a host name or an IP address".into());
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
    header_safe("proxy.username", &username)?;
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

/// A required string field: present and non-empty on create.
fn required(a_val: &str, creating: bool, msg: &str) -> Result<(), String> {
    if creating && a_val.is_empty() {
        Err(msg.to_owned())
    } else {
        Ok(())
    }
}

/// A proxy host: a DNS name, an IPv4 address, or an IPv6 address (bracketed or not).
fn valid_proxy_host(h: &str) -> bool {
    let ipv6 = h.trim_start_matches('[').trim_end_matches(']');
    (!h.is_empty()
        && h.len() <= 253
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !h.starts_with(['-', '.']))
        || ipv6.parse::<std::net::Ipv6Addr>().is_ok()
}

fn secret_field(st: &AppState, b: &Body, field: &str, slot: &mut String) -> Result<(), String> {
    if let Some(v) = fields::string(b, field, 16_384)?
        && !v.is_empty()
    {
        header_safe(field, &v)?;
        *slot = st.secrets.encrypt(&v);
    }
    Ok(())
}

fn url_field(b: &Body, field: &str, slot: &mut String) -> Result<(), String> {
    if let Some(v) = fields::string(b, field, 2048)? {
        if !v.is_empty() {
            parse_url(field, &v)?;
        }
        *slot = v;
    }
    Ok(())
}

/// Apply the fields present in `b` for `a.platform`.
pub fn apply_fields(
    st: &AppState,
    a: &mut Account,
    b: &Body,
    creating: bool,
) -> Result<(), String> {
    if let Some(v) = fields::string(b, "name", 100)? {
        if v.is_empty() {
            return Err("name must not be empty".into());
        }
        a.name = v;
    }
    if creating && a.name.is_empty() {
        return Err("name is required".into());
    }
    if let Some(v) = fields::string(b, "description", 500)? {
        a.description = v;
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
        header_safe("userAgent", &v)?;
        a.user_agent = v;
    }
    if let Some(v) = b.get("proxy") {
        let old = a.proxy.clone();
        a.proxy = proxy(st, v, old.as_ref())?;
    }
    if let Some(v) = fields::dollars(b, "dailyQuota")? {
        a.daily_quota_micros = v;
    }
    if let Some(v) = fields::string(b, "quotaResetTime", 5)? {
        a.quota_reset_time = v;
    }
    for f in ["maxConcurrentTasks", "maxConcurrency"] {
        if let Some(v) = fields::uint(b, f, 10_000)? {
            a.max_concurrency = v as u32;
        }
    }
    if let Some(v) = fields::uint(b, "rateLimitDuration", 10_080)? {
        a.rate_limit_duration = v as u32;
    }
    if let Some(v) = fields::boolean(b, "disableAutoProtection")? {
        a.disable_auto_protection = v;
    }
    // Options kept under v1's names and in v1's string form, so an export gives v1 what it
    // wrote (`adaptOtherClients` is crs's own; v1 ignores it).
    if a.platform == Platform::Claude {
        for f in EXTRA_FLAGS {
            if let Some(v) = fields::boolean(b, f)? {
                a.extra.insert((*f).into(), json!(v.to_string()));
            }
        }
        if let Some(v) = b.get("unifiedClientId") {
            let id = v.as_str().unwrap_or("").trim();
            if !(id.is_empty() || id.len() == 64 && id.bytes().all(|c| c.is_ascii_hexdigit())) {
                return Err("unifiedClientId must be 64 hexadecimal digits".into());
            }
            a.extra
                .insert("unifiedClientId".into(), json!(id.to_ascii_lowercase()));
        }
    }
    if let Some(v) = fields::instant(b, "subscriptionExpiresAt")? {
        a.subscription_expires_at = v;
    }
    url_field(b, a.platform.spec().url_field, &mut a.api_url)?;
    match a.platform {
        Platform::ClaudeConsole | Platform::Ccr => {
            secret_field(st, b, "apiKey", &mut a.api_key)?;
            required(
                &a.api_url,
                creating,
                "Name, API URL and API Key are required",
            )?;
            required(
                &a.api_key,
                creating,
                "Name, API URL and API Key are required",
            )?;
        }
        Platform::Claude => {
            secret_field(st, b, "email", &mut a.email)?;
            secret_field(st, b, "password", &mut a.password)?;
            if let Some(v) = fields::string(b, "subscriptionInfo", 10_000)? {
                a.subscription_info = v;
            }
            // Tokens arrive as v1's `claudeAiOauth` object (or JSON text), or as loose fields.
            let oauth = fields::object(
                b,
                "claudeAiOauth",
                "claudeAiOauth must be an object with accessToken and refreshToken",
            )?;
            let src = oauth.as_ref().unwrap_or(b);
            secret_field(st, src, "accessToken", &mut a.access_token)?;
            secret_field(st, src, "refreshToken", &mut a.refresh_token)?;
            if let Some(v) = src.get("expiresAt") {
                a.expires_at = match v {
                    Value::Number(n) => n.as_i64().unwrap_or(0),
                    Value::String(s) => s.trim().parse().unwrap_or(0),
                    _ => 0,
                };
            }
            if let Some(v) = src.get("scopes") {
                a.scopes = match v {
                    Value::Array(xs) => xs
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" "),
                    Value::String(s) => s.clone(),
                    _ => String::new(),
                };
            }
            required(
                &a.access_token,
                creating,
                "claudeAiOauth with accessToken is required (use the authorisation flow or paste tokens)",
            )?;
            if oauth.is_some() {
                a.status = AccountStatus::Active;
                a.error_message.clear();
            }
        }
        Platform::OpenAIResponses => {
            secret_field(st, b, "apiKey", &mut a.api_key)?;
            if let Some(v) = fields::string(b, "providerEndpoint", 64)? {
                a.provider_endpoint = v;
            }
            required(
                &a.api_url,
                creating,
                "Name, baseApi and apiKey are required",
            )?;
            required(
                &a.api_key,
                creating,
                "Name, baseApi and apiKey are required",
            )?;
        }
        Platform::GeminiApi => {
            secret_field(st, b, "apiKey", &mut a.api_key)?;
            required(&a.api_key, creating, "Name and apiKey are required")?;
        }
        Platform::OpenAI => chatgpt_fields(st, a, b, creating)?,
        Platform::AzureOpenAI => {
            secret_field(st, b, "apiKey", &mut a.api_key)?;
            if let Some(v) = fields::string(b, "apiVersion", 64)? {
                a.api_version = v;
            }
            if let Some(v) = fields::string(b, "deploymentName", 200)? {
                a.deployment_name = v;
            }
            required(
                &a.api_url,
                creating,
                "Name, azureEndpoint and apiKey are required",
            )?;
            required(
                &a.api_key,
                creating,
                "Name, azureEndpoint and apiKey are required",
            )?;
        }
        Platform::Bedrock => {
            if let Some(v) = fields::string(b, "region", 64)? {
                a.region = v;
            }
            let creds = match b.get("awsCredentials") {
                Some(Value::Object(m)) => Some(m.clone()),
                _ => None,
            };
            let src = creds.as_ref().unwrap_or(b);
            if let Some(v) = fields::string(src, "accessKeyId", 256)? {
                header_safe("accessKeyId", &v)?;
                a.aws_access_key_id = v;
            }
            secret_field(st, src, "secretAccessKey", &mut a.aws_secret_access_key)?;
            // v1's Bedrock API keys: `credentialType: bearer_token` with `bearerToken`.
            if let Some(v) = fields::choice(
                b,
                "credentialType",
                &["default", "access_key", "bearer_token"],
            )? {
                a.extra.insert("credentialType".into(), json!(v));
            }
            if let Some(Value::Null) = b.get("bearerToken") {
                a.bearer_token.clear();
            }
            secret_field(st, b, "bearerToken", &mut a.bearer_token)?;
            if a.extra.get("credentialType") == Some(&json!("access_key")) {
                a.bearer_token.clear();
            }
            if let Some(v) = fields::string(src, "sessionToken", 16_384)? {
                header_safe("sessionToken", &v)?;
                a.aws_session_token = if v.is_empty() {
                    v
                } else {
                    st.secrets.encrypt(&v)
                };
            }
            for (f, slot) in [
                ("defaultModel", &mut a.default_model),
                ("smallFastModel", &mut a.small_fast_model),
            ] {
                if let Some(v) = fields::string(b, f, 256)? {
                    *slot = v;
                }
            }
            required(
                &a.region,
                creating,
                "Name, region and awsCredentials are required",
            )?;
            if a.extra.get("credentialType") == Some(&json!("bearer_token")) {
                required(
                    &a.bearer_token,
                    creating,
                    "Name, region and bearerToken are required",
                )?;
            } else if a.bearer_token.is_empty() {
                required(
                    &a.aws_access_key_id,
                    creating,
                    "Name, region and awsCredentials are required",
                )?;
                required(
                    &a.aws_secret_access_key,
                    creating,
                    "Name, region and awsCredentials are required",
                )?;
            }
        }
        Platform::Droid => {
            secret_field(st, b, "apiKey", &mut a.api_key)?;
            super::droid::apply(st, a, b, creating)?;
        }
        Platform::Gemini => gemini_fields(st, a, b, creating)?,
    }
    Ok(())
}

/// A Gemini OAuth account's tokens, as v1's `geminiOauth` object (or its JSON text) with
/// `access_token`, `refresh_token`, `expiry_date` (unix ms) and `scope`, or as loose
/// `accessToken` / `refreshToken` fields (v1 `createAccount`); its projects.
fn gemini_fields(st: &AppState, a: &mut Account, b: &Body, creating: bool) -> Result<(), String> {
    const BAD: &str = "geminiOauth must be an object with access_token and refresh_token";
    let oauth = match b.get("geminiOauth") {
        Some(Value::Object(m)) => Some(m.clone()),
        Some(Value::String(s)) if !s.trim().is_empty() => {
            Some(serde_json::from_str::<serde_json::Map<String, Value>>(s).map_err(|_| BAD)?)
        }
        _ => None,
    };
    match &oauth {
        Some(m) => {
            secret_field(st, m, "access_token", &mut a.access_token)?;
            secret_field(st, m, "refresh_token", &mut a.refresh_token)?;
            if let Some(v) = m.get("expiry_date") {
                a.expires_at = match v {
                    Value::Number(n) => n.as_i64().unwrap_or(0),
                    Value::String(s) => s.trim().parse().unwrap_or(0),
                    _ => 0,
                };
            }
            if let Some(v) = fields::string(m, "scope", 2048)? {
                a.scopes = v;
            }
            a.status = AccountStatus::Active;
            a.error_message.clear();
        }
        None => {
            secret_field(st, b, "accessToken", &mut a.access_token)?;
            secret_field(st, b, "refreshToken", &mut a.refresh_token)?;
        }
    }
    for f in GEMINI_PROJECT_FIELDS {
        if let Some(v) = fields::string(b, f, 200)? {
            header_safe(f, &v)?;
            a.extra.insert((*f).into(), json!(v.trim()));
        }
    }
    required(
        &a.access_token,
        creating,
        "geminiOauth with access_token is required (use the authorisation flow or paste tokens)",
    )
}

/// v1's account facts of a ChatGPT account (`accountInfo`), kept in `extra` under their names.
const CHATGPT_INFO: &[&str] = &[
    "accountId",
    "chatgptUserId",
    "organizationId",
    "organizationRole",
    "organizationTitle",
    "planType",
];

/// A ChatGPT account's fields as v1's admin API takes them: `openaiOauth` (`idToken`,
/// `accessToken`, `refreshToken`, `expires_in`) and `accountInfo` (v1
/// src/services/openaiAccountService.js `createAccount`). The id token's claims fill what
/// `accountInfo` leaves out.
fn chatgpt_fields(st: &AppState, a: &mut Account, b: &Body, creating: bool) -> Result<(), String> {
    let oauth = fields::object(
        b,
        "openaiOauth",
        "openaiOauth must be an object with accessToken and refreshToken",
    )?;
    if let Some(o) = &oauth {
        secret_field(st, o, "accessToken", &mut a.access_token)?;
        secret_field(st, o, "refreshToken", &mut a.refresh_token)?;
        if let Some(id) = fields::string(o, "idToken", 16_384)?.filter(|s| !s.is_empty()) {
            a.extra
                .insert("idToken".into(), json!(st.secrets.encrypt(&id)));
            if let Some(c) = crate::providers::chatgpt::id_claims(&id) {
                crate::accounts::oauth::set_account_info(a, &c, &st.secrets);
            }
        }
        let now = Utc::now().timestamp_millis();
        let access = fields::string(o, "accessToken", 16_384)?.unwrap_or_default();
        a.expires_at = if let Some(secs) = fields::uint(o, "expires_in", 10 * 365 * 86_400)? {
            now + secs as i64 * 1000
        } else if let Some(exp) = crate::providers::chatgpt::jwt_payload(&access)
            .and_then(|p| p.get("exp").and_then(Value::as_i64))
        {
            exp.saturating_mul(1000)
        } else if access.is_empty() && !a.refresh_token.is_empty() {
            // Only a refresh token: the first request refreshes (v1's "manual" mode).
            1
        } else {
            0
        };
        a.status = AccountStatus::Active;
        a.error_message.clear();
    }
    if let Some(info) = fields::object(b, "accountInfo", "accountInfo must be an object")? {
        for k in CHATGPT_INFO {
            if let Some(v) = fields::string(&info, k, 256)? {
                header_safe(k, &v)?;
                a.extra.insert((*k).into(), json!(v));
            }
        }
        secret_field(st, &info, "email", &mut a.email)?;
        if let Some(v) = fields::boolean(&info, "emailVerified")? {
            a.extra.insert("emailVerified".into(), json!(v.to_string()));
        }
    }
    if creating && a.access_token.is_empty() && a.refresh_token.is_empty() {
        return Err(
            "openaiOauth with accessToken or refreshToken is required (use the authorisation flow or paste tokens)"
                .into(),
        );
    }
    Ok(())
}

/// The token state of an OAuth account (never the tokens).
fn oauth_view(st: &AppState, a: &Account, v: &mut Value) {
    v["accessTokenMasked"] = json!(st.secrets.masked(&a.access_token));
    v["hasRefreshToken"] = json!(!a.refresh_token.is_empty());
    v["tokenExpiresAt"] = json!(a.expires_at);
    v["scopes"] = json!(a.scopes);
    v["lastRefreshAt"] = json!(a.last_refresh_at);
}

/// Gemini OAuth accounts' Google Cloud project: the configured one and the one onboarding
/// found (v1's names, kept in `extra`).
const GEMINI_PROJECT_FIELDS: &[&str] = &["projectId", "tempProjectId"];

pub fn view(st: &AppState, a: &Account, usage: Option<&UsageTotals>) -> Value {
    let proxy = a.proxy.as_ref().map(|p| {
        json!({"type": p.kind, "host": p.host, "port": p.port, "username": p.username, "hasPassword": !p.password.is_empty()})
    });
    let mut v = json!({
        "id": a.id,
        "platform": a.platform.as_str(),
        "name": a.name,
        "description": a.description,
        "priority": a.priority,
        "schedulable": a.schedulable,
        "isActive": a.is_active,
        "accountType": a.account_type,
        "supportedModels": a.supported_models,
        "userAgent": a.user_agent,
        "proxy": proxy,
        "dailyQuota": micros_to_dollars(a.daily_quota_micros),
        "quotaResetTime": a.quota_reset_time,
        "maxConcurrentTasks": a.max_concurrency,
        "rateLimitDuration": a.rate_limit_duration,
        "disableAutoProtection": a.disable_auto_protection,
        "subscriptionExpiresAt": a.subscription_expires_at,
        "status": a.status,
        "errorMessage": a.error_message,
        "createdAt": a.created_at,
        "updatedAt": a.updated_at,
        "lastUsedAt": a.last_used_at,
    });
    v[a.platform.spec().url_field] = json!(a.api_url);
    match a.platform {
        Platform::Claude => {
            oauth_view(st, a, &mut v);
            v["emailMasked"] = json!(st.secrets.masked(&a.email));
            v["subscriptionInfo"] = json!(a.subscription_info);
            for f in EXTRA_FLAGS {
                v[*f] = json!(a.extra_flag(f));
            }
            v["unifiedClientId"] = a.extra.get("unifiedClientId").cloned().unwrap_or(json!(""));
        }
        Platform::Bedrock => {
            v["region"] = json!(a.region);
            v["accessKeyIdMasked"] = json!(crate::crypto::mask(&a.aws_access_key_id));
            v["hasSessionToken"] = json!(!a.aws_session_token.is_empty());
            v["credentialType"] = a.extra.get("credentialType").cloned().unwrap_or(json!(if a
                .bearer_token
                .is_empty()
            {
                "access_key"
            } else {
                "bearer_token"
            }));
            v["hasBearerToken"] = json!(!a.bearer_token.is_empty());
            v["bearerTokenMasked"] = json!(st.secrets.masked(&a.bearer_token));
            v["defaultModel"] = json!(a.default_model);
            v["smallFastModel"] = json!(a.small_fast_model);
        }
        Platform::AzureOpenAI => {
            v["apiKeyMasked"] = json!(st.secrets.masked(&a.api_key));
            v["apiVersion"] = json!(a.api_version);
            v["deploymentName"] = json!(a.deployment_name);
        }
        Platform::OpenAIResponses => {
            v["apiKeyMasked"] = json!(st.secrets.masked(&a.api_key));
            v["providerEndpoint"] = json!(a.provider_endpoint);
        }
        Platform::Droid => super::droid::view(st, a, &mut v),
        Platform::Gemini => {
            oauth_view(st, a, &mut v);
            for f in GEMINI_PROJECT_FIELDS {
                v[*f] = a.extra.get(*f).cloned().unwrap_or(json!(""));
            }
        }
        Platform::OpenAI => {
            v["accessTokenMasked"] = json!(st.secrets.masked(&a.access_token));
            v["hasRefreshToken"] = json!(!a.refresh_token.is_empty());
            v["hasIdToken"] = json!(a.extra.contains_key("idToken"));
            v["tokenExpiresAt"] = json!(
                (a.expires_at > 0)
                    .then(|| chrono::DateTime::from_timestamp_millis(a.expires_at))
                    .flatten()
            );
            v["emailMasked"] = json!(st.secrets.masked(&a.email));
            v["lastRefreshAt"] = json!(a.last_refresh_at);
            for k in CHATGPT_INFO {
                v[*k] = a.extra.get(*k).cloned().unwrap_or(json!(""));
            }
            v["emailVerified"] = json!(a.extra_flag("emailVerified"));
        }
        _ => v["apiKeyMasked"] = json!(st.secrets.masked(&a.api_key)),
    }
    // Runtime state: cooldowns, concurrency, today's spend.
    let now_ms = Utc::now().timestamp_millis();
    if let Some(rt) = st.accounts.load().by_id.get(&a.id) {
        let cd = rt.rt.cooldown(now_ms);
        v["cooldownUntil"] = json!(
            cd.as_ref()
                .and_then(|(t, _)| chrono::DateTime::from_timestamp_millis(*t))
        );
        v["cooldownReason"] = json!(cd.map(|(_, r)| r));
        v["modelCooldowns"] = json!(rt
            .rt
            .model_cooldowns(now_ms)
            .into_iter()
            .map(|(m, t)| json!({"model": m, "until": chrono::DateTime::from_timestamp_millis(t)}))
            .collect::<Vec<_>>());
        v["currentConcurrency"] = json!(rt.rt.gate.load().in_use());
        let day = crate::limits::meter::local_day(Utc::now(), st.clock.offset());
        v["todayCost"] = json!(crate::model::picos_to_dollars(rt.rt.cost_today(day)));
        let last = rt
            .rt
            .last_used_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        if last > 0 {
            v["lastUsedAt"] = json!(chrono::DateTime::from_timestamp_millis(last));
        }
        if a.platform == Platform::Claude {
            v["usageWindows"] = super::health::usage_windows(rt);
        }
        if a.platform == Platform::OpenAI {
            v["usageWindows"] = super::health::usage_windows(rt);
            v["codexUsage"] = super::health::codex_usage(rt);
        }
        if let Value::Object(t) = super::health::test_view(rt) {
            v.as_object_mut().expect("object").extend(t);
        }
    }
    let groups: Vec<Value> = st
        .accounts
        .load()
        .groups
        .values()
        .filter(|g| g.members.contains(&a.id))
        .map(|g| json!({"id": g.id, "name": g.name}))
        .collect();
    v["groupInfos"] = json!(groups);
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

fn current(st: &AppState, platform: Platform, id: &str) -> Option<Account> {
    st.store
        .get::<Account>(Table::Accounts, id)
        .ok()
        .flatten()
        .filter(|a| a.platform == platform)
}

/// Keep group membership in step with an account's `groupId` / `groupIds`.
fn sync_groups(st: &AppState, account_id: &str, b: &Body) -> anyhow::Result<()> {
    let wanted: Option<Vec<String>> = match (b.get("groupIds"), b.get("groupId")) {
        (Some(Value::Array(xs)), _) => Some(
            xs.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect(),
        ),
        (_, Some(Value::String(g))) if !g.is_empty() => Some(vec![g.clone()]),
        (_, Some(Value::Null)) | (_, Some(Value::String(_))) => Some(Vec::new()),
        _ => None,
    };
    let Some(wanted) = wanted else { return Ok(()) };
    let groups: Vec<AccountGroup> = st.store.load_all(Table::Groups)?;
    for mut g in groups {
        let member = g.members.iter().any(|m| m == account_id);
        let want = wanted.contains(&g.id);
        if member != want {
            if want {
                g.members.push(account_id.to_owned());
            } else {
                g.members.retain(|m| m != account_id);
            }
            g.updated_at = Some(Utc::now());
            st.store.put(Table::Groups, &g.id.clone(), &g)?;
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Action {
    List,
    Create,
    Get,
    Update,
    Delete,
    ToggleSchedulable,
    Toggle,
    ResetStatus,
    Test,
}

/// One handler type serves every account type and action.
pub struct Accounts(Platform, Action);

pub fn routes(p: Platform) -> Router {
    Router::with_path(p.admin_path())
        .get(Accounts(p, Action::List))
        .post(Accounts(p, Action::Create))
        .push(
            Router::with_path("{id}")
                .get(Accounts(p, Action::Get))
                .put(Accounts(p, Action::Update))
                .delete(Accounts(p, Action::Delete))
                .push(
                    Router::with_path("toggle-schedulable")
                        .put(Accounts(p, Action::ToggleSchedulable)),
                )
                .push(Router::with_path("toggle").put(Accounts(p, Action::Toggle)))
                .push(Router::with_path("reset-status").post(Accounts(p, Action::ResetStatus)))
                .push(Router::with_path("test").post(Accounts(p, Action::Test))),
        )
}

#[salvo::async_trait]
impl Handler for Accounts {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        let st = state(depot);
        let Accounts(platform, action) = *self;
        let id = req.param::<String>("id").unwrap_or_default();
        match action {
            Action::List => {
                st.ledger.flush().await;
                let st2 = st.clone();
                let r = blocking(move || {
                    let mut accts: Vec<Account> = st2.store.load_all(Table::Accounts)?;
                    accts.retain(|a| a.platform == platform);
                    accts.sort_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)));
                    accts
                        .iter()
                        .map(|a| {
                            Ok(view(
                                &st2,
                                a,
                                Some(&account_usage(&st2.store, &st2.clock, &a.id)?),
                            ))
                        })
                        .collect::<anyhow::Result<Vec<Value>>>()
                })
                .await;
                match r {
                    Ok(items) => json(
                        res,
                        StatusCode::OK,
                        &json!({"success": true, "data": items}),
                    ),
                    Err(e) => internal(res, "Failed to list accounts", e),
                }
            }
            Action::Create => {
                let Some(body) = json_body::<Body>(req, res, 1024 * 1024).await else {
                    return;
                };
                let mut a = Account::new(uuid::Uuid::new_v4().to_string(), platform);
                if let Err(e) = apply_fields(&st, &mut a, &body, true) {
                    return bad(res, e);
                }
                let now = Utc::now();
                a.created_at = Some(now);
                a.updated_at = Some(now);
                let _guard = st.admin_lock.lock().await;
                let st2 = st.clone();
                let (a2, body2) = (a.clone(), body.clone());
                let r = blocking(move || {
                    st2.store.put(Table::Accounts, &a2.id, &a2)?;
                    sync_groups(&st2, &a2.id, &body2)?;
                    st2.reload_accounts()
                })
                .await;
                if let Err(e) = r {
                    return internal(res, "Failed to create account", e);
                }
                tracing::info!(account_id = %a.id, platform = platform.as_str(), name = %a.name, "account created");
                json(
                    res,
                    StatusCode::OK,
                    &json!({"success": true, "data": view(&st, &a, None)}),
                );
            }
            Action::Get => {
                let Some(a) = current(&st, platform, &id) else {
                    return not_found(res);
                };
                st.ledger.flush().await;
                let st2 = st.clone();
                match blocking(move || account_usage(&st2.store, &st2.clock, &id)).await {
                    Ok(u) => json(
                        res,
                        StatusCode::OK,
                        &json!({"success": true, "data": view(&st, &a, Some(&u))}),
                    ),
                    Err(e) => internal(res, "Failed to get account", e),
                }
            }
            Action::Update => {
                let Some(body) = json_body::<Body>(req, res, 1024 * 1024).await else {
                    return;
                };
                let _guard = st.admin_lock.lock().await;
                let Some(mut a) = current(&st, platform, &id) else {
                    return not_found(res);
                };
                if let Err(e) = apply_fields(&st, &mut a, &body, false) {
                    return bad(res, e);
                }
                // Re-enabling scheduling clears automatic stops.
                if body.get("schedulable") == Some(&Value::Bool(true))
                    && let Some(rt) = st.accounts.load().by_id.get(&id)
                {
                    rt.rt.reset_cooldown();
                }
                a.updated_at = Some(Utc::now());
                let st2 = st.clone();
                let (a2, body2) = (a.clone(), body.clone());
                let r = blocking(move || {
                    st2.store.put(Table::Accounts, &a2.id, &a2)?;
                    sync_groups(&st2, &a2.id, &body2)?;
                    st2.reload_accounts()
                })
                .await;
                if let Err(e) = r {
                    return internal(res, "Failed to update account", e);
                }
                tracing::info!(account_id = %a.id, "account updated");
                json(
                    res,
                    StatusCode::OK,
                    &json!({"success": true, "message": "Account updated successfully", "data": view(&st, &a, None)}),
                );
            }
            Action::ToggleSchedulable | Action::Toggle => {
                let _guard = st.admin_lock.lock().await;
                let Some(mut a) = current(&st, platform, &id) else {
                    return not_found(res);
                };
                let (field, value) = if matches!(action, Action::Toggle) {
                    a.is_active = !a.is_active;
                    ("isActive", a.is_active)
                } else {
                    a.schedulable = !a.schedulable;
                    ("schedulable", a.schedulable)
                };
                a.updated_at = Some(Utc::now());
                if let Err(e) = save(&st, a).await {
                    return internal(res, "Failed to toggle account", e);
                }
                json(res, StatusCode::OK, &json!({"success": true, field: value}));
            }
            Action::ResetStatus => {
                let _guard = st.admin_lock.lock().await;
                let Some(mut a) = current(&st, platform, &id) else {
                    return not_found(res);
                };
                a.status = AccountStatus::Active;
                a.error_message.clear();
                a.updated_at = Some(Utc::now());
                if let Some(rt) = st.accounts.load().by_id.get(&id) {
                    rt.rt.reset_cooldown();
                }
                if let Err(e) = save(&st, a.clone()).await {
                    return internal(res, "Failed to reset account status", e);
                }
                tracing::info!(account_id = %id, "account status and cooldowns reset");
                json(
                    res,
                    StatusCode::OK,
                    &json!({"success": true, "data": view(&st, &a, None)}),
                );
            }
            Action::Test => {
                let Some(acc) = st
                    .accounts
                    .load()
                    .by_id
                    .get(&id)
                    .cloned()
                    .filter(|a| a.rec.platform == platform)
                else {
                    return not_found(res);
                };
                let model = req.query::<String>("model");
                let r = crate::accounts::probe::run(
                    &st.accounts,
                    &acc,
                    model.as_deref(),
                    crate::accounts::probe::Trigger::Manual,
                )
                .await;
                json(res, StatusCode::OK, &json!({"success": r.ok, "data": r}));
            }
            Action::Delete => {
                let _guard = st.admin_lock.lock().await;
                if current(&st, platform, &id).is_none() {
                    return not_found(res);
                }
                let st2 = st.clone();
                let r = blocking(move || {
                    // Keys bound to this account go back to the shared pool, as in v1.
                    let keys: Vec<ApiKey> = st2.store.load_all(Table::ApiKeys)?;
                    let mut unbound = 0u32;
                    for mut k in keys {
                        let mut changed = false;
                        for f in BindingField::ALL {
                            let slot = k.binding_mut(f);
                            if slot.account() == Some(id.as_str()) {
                                *slot = Binding::None;
                                changed = true;
                            }
                        }
                        if changed {
                            k.updated_at = Some(Utc::now());
                            st2.store.put(Table::ApiKeys, &k.id, &k)?;
                            unbound += 1;
                        }
                    }
                    let groups: Vec<AccountGroup> = st2.store.load_all(Table::Groups)?;
                    for mut g in groups.into_iter().filter(|g| g.members.contains(&id)) {
                        g.members.retain(|m| m != &id);
                        st2.store.put(Table::Groups, &g.id.clone(), &g)?;
                    }
                    st2.store.delete(Table::Accounts, &id)?;
                    st2.reload_keys()?;
                    st2.reload_accounts()?;
                    tracing::info!(account_id = %id, unbound_keys = unbound, "account deleted");
                    Ok(unbound)
                })
                .await;
                match r {
                    Ok(n) => json(
                        res,
                        StatusCode::OK,
                        &json!({"success": true, "message": "Account deleted", "unboundKeys": n}),
                    ),
                    Err(e) => internal(res, "Failed to delete account", e),
                }
            }
        }
    }
}

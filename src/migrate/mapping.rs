//! Record mappings between v1's Redis values and crs's records, both directions. Every v1
//! field a mapping reads is written back under the same name by the reverse mapping, so
//! import(export(import(x))) == import(x); fields crs does not model go to `extra` and back.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::v1crypto::{V1Crypto, looks_encrypted};
use crate::crypto::Secrets;
use crate::model::{
    Account, AccountGroup, Admin, ApiKey, Micros, Platform, ProxyConfig, dollars_to_micros,
    micros_to_dollars,
};
use crate::usage::ledger::RequestRecord;

/// One v1 account type: its key prefix, storage, encryption salt and derived sets.
#[derive(Debug)]
pub struct Family {
    pub prefix: &'static str,
    /// `None`: crs does not serve this type; its keys are kept verbatim.
    pub platform: Option<Platform>,
    /// Stored as a JSON string (Bedrock) instead of a hash.
    pub json: bool,
    pub salt: &'static str,
    pub index: &'static str,
    pub shared_set: Option<&'static str>,
    /// v1's `accountType` in sticky mappings and request records.
    pub v1_type: &'static str,
    pub label: &'static str,
}

pub const FAMILIES: &[Family] = &[
    Family {
        prefix: "claude:account:",
        platform: Some(Platform::Claude),
        json: false,
        salt: "salt",
        index: "claude:account:index",
        shared_set: None,
        v1_type: "claude-official",
        label: "claude (OAuth)",
    },
    Family {
        prefix: "claude_console_account:",
        platform: Some(Platform::ClaudeConsole),
        json: false,
        salt: "claude-console-salt",
        index: "claude_console_account:index",
        shared_set: Some("shared_claude_console_accounts"),
        v1_type: "claude-console",
        label: "claude-console",
    },
    Family {
        prefix: "openai_responses_account:",
        platform: Some(Platform::OpenAIResponses),
        json: false,
        salt: "openai-responses-salt",
        index: "openai_responses_account:index",
        shared_set: Some("shared_openai_responses_accounts"),
        v1_type: "openai-responses",
        label: "openai-responses",
    },
    Family {
        prefix: "gemini_api_account:",
        platform: Some(Platform::GeminiApi),
        json: false,
        salt: "gemini-api-salt",
        index: "gemini_api_account:index",
        shared_set: Some("shared_gemini_api_accounts"),
        v1_type: "gemini-api",
        label: "gemini-api",
    },
    Family {
        prefix: "azure_openai:account:",
        platform: Some(Platform::AzureOpenAI),
        json: false,
        salt: "azure-openai-account-default-salt",
        index: "azure_openai:account:index",
        shared_set: Some("shared_azure_openai_accounts"),
        v1_type: "azure-openai",
        label: "azure-openai",
    },
    Family {
        prefix: "bedrock_account:",
        platform: Some(Platform::Bedrock),
        json: true,
        salt: "",
        index: "bedrock_account:index",
        shared_set: None,
        v1_type: "bedrock",
        label: "bedrock",
    },
    Family {
        prefix: "droid:account:",
        platform: Some(Platform::Droid),
        json: false,
        salt: "droid-account-salt",
        index: "droid:account:index",
        shared_set: None,
        v1_type: "droid",
        label: "droid",
    },
    Family {
        prefix: "ccr_account:",
        platform: Some(Platform::Ccr),
        json: false,
        salt: "ccr-account-salt",
        index: "ccr_account:index",
        shared_set: Some("shared_ccr_accounts"),
        v1_type: "ccr",
        label: "ccr",
    },
    Family {
        prefix: "openai:account:",
        platform: None,
        json: false,
        salt: "openai-account-salt",
        index: "openai:account:index",
        shared_set: Some("shared_openai_accounts"),
        v1_type: "openai",
        label: "openai (Codex OAuth)",
    },
    Family {
        prefix: "gemini_account:",
        platform: None,
        json: false,
        salt: "gemini-account-salt",
        index: "gemini_account:index",
        shared_set: Some("shared_gemini_accounts"),
        v1_type: "gemini",
        label: "gemini (OAuth)",
    },
];

pub fn simple_id(s: &str) -> bool {
    !s.is_empty() && !s.contains(':')
}

pub fn family_for_key(name: &str) -> Option<(&'static Family, &str)> {
    FAMILIES.iter().find_map(|f| {
        name.strip_prefix(f.prefix)
            .filter(|id| simple_id(id) && name != f.index)
            .map(|id| (f, id))
    })
}

pub fn family_for_platform(p: Platform) -> &'static Family {
    FAMILIES
        .iter()
        .find(|f| f.platform == Some(p))
        .expect("every platform has a family")
}

// ---------------------------------------------------------------------------------------------
// Field helpers.

pub fn iso(t: &Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() || s == "null" {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().and_then(DateTime::from_timestamp_millis);
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A field map being consumed: what is left at the end goes to `extra`.
pub struct Fields(pub Map<String, Value>);

impl Fields {
    pub fn from_pairs(pairs: &[(String, String)]) -> Self {
        Fields(
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }

    pub fn take(&mut self, k: &str) -> Option<Value> {
        self.0.shift_remove(k)
    }

    pub fn s(&mut self, k: &str) -> Option<String> {
        match self.take(k)? {
            Value::String(s) => Some(s),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    pub fn str_or(&mut self, k: &str, default: &str) -> String {
        self.s(k).unwrap_or_else(|| default.to_owned())
    }

    pub fn b(&mut self, k: &str, default: bool) -> bool {
        match self.take(k) {
            Some(Value::Bool(b)) => b,
            Some(Value::String(s)) if s.is_empty() => default,
            Some(Value::String(s)) => s == "true" || s == "1",
            Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0) != 0.0,
            _ => default,
        }
    }

    pub fn u(&mut self, k: &str) -> Option<u64> {
        match self.take(k)? {
            Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
            Value::String(s) => {
                let s = s.trim();
                s.parse::<u64>()
                    .ok()
                    .or_else(|| s.parse::<f64>().ok().map(|f| f.max(0.0) as u64))
            }
            _ => None,
        }
    }

    pub fn i(&mut self, k: &str) -> Option<i64> {
        match self.take(k)? {
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub fn dollars(&mut self, k: &str) -> Option<Micros> {
        match self.take(k)? {
            Value::Number(n) => n.as_f64().map(dollars_to_micros),
            Value::String(s) => s.trim().parse::<f64>().ok().map(dollars_to_micros),
            _ => None,
        }
    }

    pub fn date(&mut self, k: &str) -> Option<DateTime<Utc>> {
        match self.take(k)? {
            Value::String(s) => parse_date(&s),
            Value::Number(n) => n.as_i64().and_then(DateTime::from_timestamp_millis),
            _ => None,
        }
    }

    /// A list stored as JSON text (or, in old records, comma-separated).
    pub fn list(&mut self, k: &str) -> Option<Vec<String>> {
        let v = self.take(k)?;
        let parsed = match v {
            Value::String(s) if s.trim().is_empty() => return Some(Vec::new()),
            Value::String(s) => match serde_json::from_str::<Value>(&s) {
                Ok(Value::Array(a)) => Value::Array(a),
                _ => {
                    return Some(
                        s.split(',')
                            .map(|x| x.trim().to_owned())
                            .filter(|x| !x.is_empty())
                            .collect(),
                    );
                }
            },
            other => other,
        };
        Some(match parsed {
            Value::Array(a) => a
                .into_iter()
                .filter_map(|x| match x {
                    Value::String(s) => Some(s),
                    Value::Null => None,
                    other => Some(other.to_string()),
                })
                .collect(),
            _ => Vec::new(),
        })
    }

    /// A JSON object stored as text (or inline, in JSON-stored records).
    pub fn object(&mut self, k: &str) -> Option<Map<String, Value>> {
        match self.take(k)? {
            Value::Object(m) => Some(m),
            Value::String(s) => match serde_json::from_str::<Value>(&s) {
                Ok(Value::Object(m)) => Some(m),
                _ => None,
            },
            _ => None,
        }
    }
}

/// An ordered field map being built for v1.
#[derive(Default)]
pub struct Out(pub Map<String, Value>);

impl Out {
    pub fn s(&mut self, k: &str, v: impl Into<String>) {
        self.0.insert(k.to_owned(), Value::String(v.into()));
    }
    pub fn v(&mut self, k: &str, v: Value) {
        self.0.insert(k.to_owned(), v);
    }
    pub fn b(&mut self, k: &str, v: bool) {
        self.s(k, if v { "true" } else { "false" });
    }
    pub fn n(&mut self, k: &str, v: impl ToString) {
        self.s(k, v.to_string());
    }
    pub fn dollars(&mut self, k: &str, m: Micros) {
        self.s(k, fmt_dollars(m));
    }
    pub fn date(&mut self, k: &str, t: &Option<DateTime<Utc>>) {
        self.s(k, iso(t));
    }
    /// Extra fields, unless a modelled field of the same name was written.
    pub fn extra<V: Clone + Into<Value>>(&mut self, extra: &BTreeMap<String, V>) {
        for (k, v) in extra {
            if !self.0.contains_key(k) {
                self.0.insert(k.clone(), v.clone().into());
            }
        }
    }

    /// As a Redis hash: every value a string (JSON text for objects and arrays).
    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.0
            .into_iter()
            .map(|(k, v)| {
                let s = match v {
                    Value::String(s) => s,
                    Value::Null => String::new(),
                    Value::Bool(b) => b.to_string(),
                    other => other.to_string(),
                };
                (k, s)
            })
            .collect()
    }
}

pub fn fmt_dollars(m: Micros) -> String {
    let d = micros_to_dollars(m);
    if d == d.trunc() && d.abs() < 1e15 {
        format!("{}", d as i64)
    } else {
        format!("{d}")
    }
}

// ---------------------------------------------------------------------------------------------
// API keys.

pub const BINDINGS: [&str; 7] = [
    "claudeAccountId",
    "claudeConsoleAccountId",
    "geminiAccountId",
    "openaiAccountId",
    "azureOpenaiAccountId",
    "bedrockAccountId",
    "droidAccountId",
];

fn binding_slots(k: &mut ApiKey) -> [&mut String; 7] {
    [
        &mut k.claude_account_id,
        &mut k.claude_console_account_id,
        &mut k.gemini_account_id,
        &mut k.openai_account_id,
        &mut k.azure_openai_account_id,
        &mut k.bedrock_account_id,
        &mut k.droid_account_id,
    ]
}

/// `apikey:{id}` -> ApiKey. Unmodelled fields land in `extra`.
pub fn import_key(id: &str, pairs: &[(String, String)]) -> ApiKey {
    let mut f = Fields::from_pairs(pairs);
    let mut k = ApiKey::new(id.to_owned());
    f.take("id");
    k.name = f.s("name").unwrap_or_default();
    k.description = f.s("description").unwrap_or_default();
    k.key_hash = f.s("apiKey").unwrap_or_default().to_ascii_lowercase();
    k.key_preview = f.s("keyPreview").unwrap_or_default();
    k.is_active = f.b("isActive", true);
    k.created_at = f.date("createdAt");
    k.created_by = f.s("createdBy").unwrap_or_default();
    k.updated_at = f.date("updatedAt");
    k.last_used_at = f.date("lastUsedAt");
    k.expiration_mode = f.str_or("expirationMode", "fixed");
    if k.expiration_mode.is_empty() {
        k.expiration_mode = "fixed".into();
    }
    k.expires_at = f.date("expiresAt");
    k.is_activated = f.b("isActivated", false);
    k.activated_at = f.date("activatedAt");
    k.activation_days = f.u("activationDays").unwrap_or(0) as u32;
    k.activation_unit = f.str_or("activationUnit", "days");
    if k.activation_unit.is_empty() {
        k.activation_unit = "days".into();
    }
    k.token_limit = f.u("tokenLimit").unwrap_or(0);
    k.concurrency_limit = f.u("concurrencyLimit").unwrap_or(0) as u32;
    k.concurrency_queue_enabled = f.b("concurrencyQueueEnabled", false);
    k.concurrency_queue_max = f.u("concurrencyQueueMax").unwrap_or(0) as u32;
    k.concurrency_queue_timeout_ms = f.u("concurrencyQueueTimeoutMs").unwrap_or(0);
    k.rate_limit_window = f.u("rateLimitWindow").unwrap_or(0) as u32;
    k.rate_limit_requests = f.u("rateLimitRequests").unwrap_or(0) as u32;
    k.rate_limit_cost_micros = f.dollars("rateLimitCost").unwrap_or(0);
    k.daily_cost_limit_micros = f.dollars("dailyCostLimit").unwrap_or(0);
    k.total_cost_limit_micros = f.dollars("totalCostLimit").unwrap_or(0);
    k.weekly_opus_cost_limit_micros = f.dollars("weeklyOpusCostLimit").unwrap_or(0);
    k.five_hour_cost_limit_micros = f.dollars("fiveHourCostLimit").unwrap_or(0);
    k.weekly_reset_day = (f.u("weeklyResetDay").unwrap_or(1) as u8).clamp(1, 7);
    k.weekly_reset_hour = (f.u("weeklyResetHour").unwrap_or(0) as u8).min(23);
    k.permissions = match f.take("permissions") {
        Some(Value::String(s)) if s.trim().is_empty() || s == "all" => Vec::new(),
        Some(Value::String(s)) if !s.trim_start().starts_with('[') => vec![s],
        Some(v) => {
            let mut tmp = Fields(Map::new());
            tmp.0.insert("p".into(), v);
            let p = tmp.list("p").unwrap_or_default();
            if p.iter().any(|x| x == "all") {
                Vec::new()
            } else {
                p
            }
        }
        None => Vec::new(),
    };
    k.enable_model_restriction = f.b("enableModelRestriction", false);
    k.restricted_models = f.list("restrictedModels").unwrap_or_default();
    k.model_restriction_mode = f.str_or("modelRestrictionMode", "deny");
    if k.model_restriction_mode.is_empty() {
        k.model_restriction_mode = "deny".into();
    }
    k.enable_client_restriction = f.b("enableClientRestriction", false);
    k.allowed_clients = f.list("allowedClients").unwrap_or_default();
    k.tags = f.list("tags").unwrap_or_default();
    k.service_rates = f
        .object("serviceRates")
        .map(|m| {
            m.into_iter()
                .filter_map(|(s, r)| {
                    let x = match r {
                        Value::Number(n) => n.as_f64(),
                        Value::String(s) => s.trim().parse().ok(),
                        _ => None,
                    }?;
                    (x.is_finite() && x >= 0.0).then_some((s, x))
                })
                .collect()
        })
        .unwrap_or_default();
    let slots = binding_slots(&mut k);
    for (i, name) in BINDINGS.iter().enumerate() {
        *slots[i] = f.s(name).unwrap_or_default();
    }
    k.user_id = f.s("userId").unwrap_or_default();
    k.user_username = f.s("userUsername").unwrap_or_default();
    k.icon = f.s("icon").unwrap_or_default();
    k.allow_1m_context = f.b("allow1mContext", false);
    k.is_deleted = f.b("isDeleted", false);
    k.deleted_at = f.date("deletedAt");
    k.deleted_by = f.s("deletedBy").unwrap_or_default();
    k.deleted_by_type = f.s("deletedByType").unwrap_or_default();
    k.extra =
        f.0.into_iter()
            .map(|(name, v)| {
                let s = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (name, s)
            })
            .collect();
    k
}

/// ApiKey -> the fields of `apikey:{id}`.
pub fn export_key(k: &ApiKey) -> Vec<(String, String)> {
    let mut o = Out::default();
    o.s("id", &k.id);
    o.s("name", &k.name);
    o.s("description", &k.description);
    o.s("apiKey", &k.key_hash);
    if !k.key_preview.is_empty() {
        o.s("keyPreview", &k.key_preview);
    }
    o.b("isActive", k.is_active);
    o.date("createdAt", &k.created_at);
    o.s("createdBy", &k.created_by);
    o.date("updatedAt", &k.updated_at);
    o.date("lastUsedAt", &k.last_used_at);
    o.s("expirationMode", &k.expiration_mode);
    o.date("expiresAt", &k.expires_at);
    o.b("isActivated", k.is_activated);
    o.date("activatedAt", &k.activated_at);
    o.n("activationDays", k.activation_days);
    o.s("activationUnit", &k.activation_unit);
    o.n("tokenLimit", k.token_limit);
    o.n("concurrencyLimit", k.concurrency_limit);
    o.b("concurrencyQueueEnabled", k.concurrency_queue_enabled);
    o.n("concurrencyQueueMax", k.concurrency_queue_max);
    o.n("concurrencyQueueTimeoutMs", k.concurrency_queue_timeout_ms);
    o.n("rateLimitWindow", k.rate_limit_window);
    o.n("rateLimitRequests", k.rate_limit_requests);
    o.dollars("rateLimitCost", k.rate_limit_cost_micros);
    o.dollars("dailyCostLimit", k.daily_cost_limit_micros);
    o.dollars("totalCostLimit", k.total_cost_limit_micros);
    o.dollars("weeklyOpusCostLimit", k.weekly_opus_cost_limit_micros);
    o.dollars("fiveHourCostLimit", k.five_hour_cost_limit_micros);
    o.n("weeklyResetDay", k.weekly_reset_day);
    o.n("weeklyResetHour", k.weekly_reset_hour);
    o.s("permissions", json!(k.permissions).to_string());
    o.b("enableModelRestriction", k.enable_model_restriction);
    o.s("restrictedModels", json!(k.restricted_models).to_string());
    o.s("modelRestrictionMode", &k.model_restriction_mode);
    o.b("enableClientRestriction", k.enable_client_restriction);
    o.s("allowedClients", json!(k.allowed_clients).to_string());
    o.s("tags", json!(k.tags).to_string());
    o.s("serviceRates", json!(k.service_rates).to_string());
    let mut k2 = k.clone();
    let slots = binding_slots(&mut k2);
    for (i, name) in BINDINGS.iter().enumerate() {
        o.s(name, slots[i].as_str());
    }
    o.s("userId", &k.user_id);
    o.s("userUsername", &k.user_username);
    o.s("icon", &k.icon);
    o.b("allow1mContext", k.allow_1m_context);
    o.b("isDeleted", k.is_deleted);
    if k.is_deleted || k.deleted_at.is_some() {
        o.date("deletedAt", &k.deleted_at);
        o.s("deletedBy", &k.deleted_by);
        o.s("deletedByType", &k.deleted_by_type);
    }
    o.extra(&k.extra);
    o.into_pairs()
}

// ---------------------------------------------------------------------------------------------
// Accounts.

/// Encryption on both sides of a mapping: v1's (with the deployment's ENCRYPTION_KEY) and
/// crs's own.
pub struct Keys<'a> {
    pub v1: &'a V1Crypto,
    pub crs: &'a Secrets,
}

pub enum AccountOut {
    Account(Box<Account>),
    /// crs cannot serve it: kept verbatim (the reason is reported).
    Raw(String),
}

impl Keys<'_> {
    /// A v1-encrypted field -> crs-encrypted. Values that are not in v1's format are taken as
    /// plaintext (v1 accepted legacy unencrypted values).
    fn reencrypt(&self, salt: &str, what: &str, v: &str) -> Result<String> {
        if v.is_empty() {
            return Ok(String::new());
        }
        let plain = if looks_encrypted(v) {
            self.v1
                .decrypt(salt, v)
                .with_context(|| format!("decrypting {what}"))?
        } else {
            v.to_owned()
        };
        Ok(self.crs.encrypt(&plain))
    }

    fn decrypt_v1(&self, salt: &str, what: &str, v: &str) -> Result<String> {
        if looks_encrypted(v) {
            self.v1
                .decrypt(salt, v)
                .with_context(|| format!("decrypting {what}"))
        } else {
            Ok(v.to_owned())
        }
    }

    /// A crs-encrypted value -> v1-encrypted.
    fn to_v1(&self, salt: &str, what: &str, enc: &str) -> Result<String> {
        if enc.is_empty() {
            return Ok(String::new());
        }
        let plain = self
            .crs
            .decrypt(enc)
            .with_context(|| format!("decrypting {what}"))?;
        Ok(self.v1.encrypt(salt, &plain))
    }

    fn plain(&self, what: &str, enc: &str) -> Result<String> {
        if enc.is_empty() {
            return Ok(String::new());
        }
        self.crs
            .decrypt(enc)
            .with_context(|| format!("decrypting {what}"))
    }
}

fn supported_models(v: Option<Value>) -> BTreeMap<String, String> {
    let v = match v {
        Some(Value::String(s)) if s.trim().is_empty() => return BTreeMap::new(),
        Some(Value::String(s)) => serde_json::from_str(&s).unwrap_or(Value::Null),
        Some(v) => v,
        None => return BTreeMap::new(),
    };
    match v {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|m| m.as_str().map(|s| (s.to_owned(), s.to_owned())))
            .collect(),
        Value::Object(m) => m
            .into_iter()
            .map(|(from, to)| {
                let to = to
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .unwrap_or(&from)
                    .to_owned();
                (from, to)
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn export_models(p: Platform, m: &BTreeMap<String, String>) -> Value {
    let identity = m.iter().all(|(a, b)| a == b);
    if identity && matches!(p, Platform::GeminiApi | Platform::AzureOpenAI) {
        json!(m.keys().collect::<Vec<_>>())
    } else {
        json!(m)
    }
}

fn import_proxy(keys: &Keys, v: Option<Value>) -> Result<Option<ProxyConfig>> {
    let obj = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() || s == "null" => return Ok(None),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(m)) => m,
            _ => anyhow::bail!("proxy is not a JSON object"),
        },
        Some(Value::Object(m)) => m,
        Some(_) => anyhow::bail!("proxy is not a JSON object"),
    };
    let mut f = Fields(obj);
    let host = f.s("host").unwrap_or_default();
    if host.trim().is_empty() {
        return Ok(None);
    }
    let password = f.s("password").unwrap_or_default();
    Ok(Some(ProxyConfig {
        kind: f
            .s("type")
            .unwrap_or_else(|| "http".into())
            .to_ascii_lowercase(),
        host: host.trim().to_owned(),
        port: f.u("port").unwrap_or(0).min(65535) as u16,
        username: f.s("username").unwrap_or_default(),
        password: if password.is_empty() {
            String::new()
        } else {
            keys.crs.encrypt(&password)
        },
    }))
}

fn export_proxy(keys: &Keys, p: &Option<ProxyConfig>) -> Result<Value> {
    Ok(match p {
        None => Value::Null,
        Some(p) => json!({
            "type": p.kind,
            "host": p.host,
            "port": p.port,
            "username": p.username,
            "password": keys.plain("proxy password", &p.password)?,
        }),
    })
}

/// A v1 account (hash fields, or the parsed JSON of a Bedrock string) -> Account.
pub fn import_account(
    fam: &Family,
    id: &str,
    fields: Map<String, Value>,
    keys: &Keys,
) -> Result<AccountOut> {
    let Some(platform) = fam.platform else {
        return Ok(AccountOut::Raw(format!(
            "{}: crs does not serve this account type",
            fam.label
        )));
    };
    let mut f = Fields(fields);
    let mut a = Account::new(id.to_owned(), platform);
    let salt = fam.salt;
    f.take("id");
    f.take("platform");
    a.name = f.s("name").unwrap_or_default();
    a.description = f.s("description").unwrap_or_default();
    a.priority = f.u("priority").unwrap_or(50).min(u32::MAX as u64) as u32;
    a.schedulable = f.b("schedulable", true);
    a.is_active = f.b("isActive", true);
    a.account_type = f.str_or("accountType", "shared");
    a.supported_models = supported_models(f.take("supportedModels"));
    a.user_agent = f.s("userAgent").unwrap_or_default();
    a.proxy = import_proxy(keys, f.take("proxy")).with_context(|| format!("account {id}"))?;
    a.daily_quota_micros = f.dollars("dailyQuota").unwrap_or(0);
    a.quota_reset_time = f.str_or("quotaResetTime", "00:00");
    let (c1, c2) = (f.u("maxConcurrentTasks"), f.u("maxConcurrency"));
    a.max_concurrency = c1.or(c2).unwrap_or(0).min(u32::MAX as u64) as u32;
    a.rate_limit_duration = f.u("rateLimitDuration").unwrap_or(60) as u32;
    a.disable_auto_protection = f.b("disableAutoProtection", false);
    a.created_at = f.date("createdAt");
    a.updated_at = f.date("updatedAt");
    a.last_used_at = f.date("lastUsedAt");
    a.subscription_expires_at = f.date("subscriptionExpiresAt");
    a.status = f.str_or("status", "active");
    a.error_message = f.s("errorMessage").unwrap_or_default();
    let mut extra_secret: Vec<(String, String)> = Vec::new();
    let ctx = |field: &str| format!("account {id} field {field}");
    match platform {
        Platform::ClaudeConsole | Platform::Ccr => {
            a.api_url = f.s("apiUrl").unwrap_or_default();
            a.api_key = keys.reencrypt(salt, &ctx("apiKey"), &f.s("apiKey").unwrap_or_default())?;
        }
        Platform::OpenAIResponses => {
            a.api_url = f.s("baseApi").unwrap_or_default();
            a.api_key = keys.reencrypt(salt, &ctx("apiKey"), &f.s("apiKey").unwrap_or_default())?;
            a.provider_endpoint = f.s("providerEndpoint").unwrap_or_default();
        }
        Platform::GeminiApi => {
            a.api_url = f.s("baseUrl").unwrap_or_default();
            a.api_key = keys.reencrypt(salt, &ctx("apiKey"), &f.s("apiKey").unwrap_or_default())?;
        }
        Platform::AzureOpenAI => {
            a.api_url = f.s("azureEndpoint").unwrap_or_default();
            a.api_key = keys.reencrypt(salt, &ctx("apiKey"), &f.s("apiKey").unwrap_or_default())?;
            a.api_version = f.s("apiVersion").unwrap_or_default();
            a.deployment_name = f.s("deploymentName").unwrap_or_default();
        }
        Platform::Claude => {
            a.api_url = f.s("apiUrl").unwrap_or_default();
            a.email = keys.reencrypt(salt, &ctx("email"), &f.s("email").unwrap_or_default())?;
            a.password =
                keys.reencrypt(salt, &ctx("password"), &f.s("password").unwrap_or_default())?;
            let access = f.s("accessToken").unwrap_or_default();
            let refresh = f.s("refreshToken").unwrap_or_default();
            let mut access = keys.decrypt_v1(salt, &ctx("accessToken"), &access)?;
            let mut refresh = keys.decrypt_v1(salt, &ctx("refreshToken"), &refresh)?;
            let mut expires = f.i("expiresAt");
            let mut scopes = f.s("scopes");
            let blob = f.s("claudeAiOauth").unwrap_or_default();
            if !blob.is_empty() {
                let text = keys.decrypt_v1(salt, &ctx("claudeAiOauth"), &blob)?;
                if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(&text) {
                    let get = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                    if access.is_empty() {
                        access = get("accessToken");
                    }
                    if refresh.is_empty() {
                        refresh = get("refreshToken");
                    }
                    if expires.is_none() {
                        expires = m.get("expiresAt").and_then(|v| {
                            v.as_i64()
                                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                        });
                    }
                    if scopes.is_none() {
                        scopes = m.get("scopes").map(|s| match s {
                            Value::Array(xs) => xs
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(" "),
                            Value::String(s) => s.clone(),
                            _ => String::new(),
                        });
                    }
                    // Kept only when it holds more than what an export rebuilds it from.
                    const REBUILT: [&str; 4] =
                        ["accessToken", "refreshToken", "expiresAt", "scopes"];
                    if m.keys().any(|k| !REBUILT.contains(&k.as_str())) {
                        extra_secret.push(("claudeAiOauth".into(), Value::Object(m).to_string()));
                    }
                } else {
                    extra_secret.push(("claudeAiOauth".into(), text));
                }
            }
            a.access_token = if access.is_empty() {
                String::new()
            } else {
                keys.crs.encrypt(&access)
            };
            a.refresh_token = if refresh.is_empty() {
                String::new()
            } else {
                keys.crs.encrypt(&refresh)
            };
            a.expires_at = expires.unwrap_or(0);
            a.scopes = scopes.unwrap_or_default();
            a.subscription_info = f.s("subscriptionInfo").unwrap_or_default();
            a.last_refresh_at = f.date("lastRefreshAt");
        }
        Platform::Bedrock => {
            a.region = f.s("region").unwrap_or_default();
            a.default_model = f.s("defaultModel").unwrap_or_default();
            a.small_fast_model = f.s("smallFastModel").unwrap_or_default();
            a.api_url = f.s("endpointUrl").unwrap_or_default();
            let creds = match f.take("awsCredentials") {
                Some(Value::Object(m)) => m,
                Some(Value::String(s)) => match serde_json::from_str::<Value>(&s) {
                    Ok(Value::Object(m)) => m,
                    _ => Map::new(),
                },
                _ => Map::new(),
            };
            let creds = match (creds.get("encrypted"), creds.get("iv")) {
                (Some(Value::String(e)), Some(Value::String(iv))) => {
                    let text = keys
                        .v1
                        .decrypt_bedrock(e, iv)
                        .with_context(|| ctx("awsCredentials"))?;
                    match serde_json::from_str::<Value>(&text) {
                        Ok(Value::Object(m)) => m,
                        _ => anyhow::bail!("{}: not a JSON object", ctx("awsCredentials")),
                    }
                }
                _ => creds,
            };
            let mut c = Fields(creds);
            a.aws_access_key_id = c.s("accessKeyId").unwrap_or_default();
            let secret = c.s("secretAccessKey").unwrap_or_default();
            let token = c.s("sessionToken").unwrap_or_default();
            a.aws_secret_access_key = if secret.is_empty() {
                String::new()
            } else {
                keys.crs.encrypt(&secret)
            };
            a.aws_session_token = if token.is_empty() {
                String::new()
            } else {
                keys.crs.encrypt(&token)
            };
        }
        Platform::Droid => {
            a.api_url = f.s("baseUrl").unwrap_or_default();
            a.endpoint_type = f.str_or("endpointType", "anthropic");
            for t in ["accessToken", "refreshToken"] {
                let v = f.s(t).unwrap_or_default();
                if !v.is_empty() {
                    let plain = keys.decrypt_v1(salt, &ctx(t), &v)?;
                    extra_secret.push((t.into(), plain));
                }
            }
            let mut entries = match f.take("apiKeys") {
                Some(Value::String(s)) if !s.trim().is_empty() => {
                    serde_json::from_str::<Vec<Map<String, Value>>>(&s).unwrap_or_default()
                }
                Some(Value::Array(xs)) => xs
                    .into_iter()
                    .filter_map(|x| match x {
                        Value::Object(m) => Some(m),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let mut first: Option<String> = None;
            for e in &mut entries {
                let enc = e.get("encryptedKey").and_then(Value::as_str).unwrap_or("");
                if enc.is_empty() {
                    continue;
                }
                let plain = keys.decrypt_v1(salt, &ctx("apiKeys"), enc)?;
                let usable = e.get("status").and_then(Value::as_str) != Some("error");
                if first.is_none() && usable {
                    first = Some(plain.clone());
                }
                e.insert(
                    "encryptedKey".into(),
                    Value::String(keys.crs.encrypt(&plain)),
                );
            }
            let Some(key) = first else {
                return Ok(AccountOut::Raw(
                    "droid account without an API key (WorkOS OAuth): crs serves Droid API-key accounts only".into(),
                ));
            };
            a.api_key = keys.crs.encrypt(&key);
            if !entries.is_empty() {
                f.0.insert("apiKeys".into(), Value::String(json!(entries).to_string()));
            }
        }
    }
    for (k, plain) in extra_secret {
        f.0.insert(k, Value::String(keys.crs.encrypt(&plain)));
    }
    a.extra = f.0.into_iter().collect();
    Ok(AccountOut::Account(Box::new(a)))
}

/// The extra fields that hold crs-encrypted secrets (v1-encrypted on export).
const EXTRA_SECRETS: &[&str] = &["claudeAiOauth", "accessToken", "refreshToken"];

/// Account -> its v1 value (hash fields, or the JSON object of a Bedrock string).
pub fn export_account(a: &Account, keys: &Keys) -> Result<Map<String, Value>> {
    let fam = family_for_platform(a.platform);
    let salt = fam.salt;
    let what = |f: &str| format!("account {} field {f}", a.id);
    let mut o = Out::default();
    o.s("id", &a.id);
    o.s("name", &a.name);
    o.s("description", &a.description);
    if !fam.json {
        o.s("platform", a.platform.as_str());
    }
    o.n("priority", a.priority);
    o.b("schedulable", a.schedulable);
    o.b("isActive", a.is_active);
    o.s("accountType", &a.account_type);
    o.s(
        "supportedModels",
        export_models(a.platform, &a.supported_models).to_string(),
    );
    o.s("userAgent", &a.user_agent);
    match export_proxy(keys, &a.proxy)? {
        Value::Null => o.s("proxy", ""),
        p => o.s("proxy", p.to_string()),
    }
    o.dollars("dailyQuota", a.daily_quota_micros);
    o.s("quotaResetTime", &a.quota_reset_time);
    let conc = if a.platform == Platform::Claude {
        "maxConcurrency"
    } else {
        "maxConcurrentTasks"
    };
    o.n(conc, a.max_concurrency);
    o.n("rateLimitDuration", a.rate_limit_duration);
    o.b("disableAutoProtection", a.disable_auto_protection);
    o.date("createdAt", &a.created_at);
    o.date("updatedAt", &a.updated_at);
    o.date("lastUsedAt", &a.last_used_at);
    o.date("subscriptionExpiresAt", &a.subscription_expires_at);
    o.s("status", &a.status);
    o.s("errorMessage", &a.error_message);
    match a.platform {
        Platform::ClaudeConsole | Platform::Ccr => {
            o.s("apiUrl", &a.api_url);
            o.s("apiKey", keys.to_v1(salt, &what("apiKey"), &a.api_key)?);
        }
        Platform::OpenAIResponses => {
            o.s("baseApi", &a.api_url);
            o.s("apiKey", keys.to_v1(salt, &what("apiKey"), &a.api_key)?);
            o.s("providerEndpoint", &a.provider_endpoint);
        }
        Platform::GeminiApi => {
            o.s("baseUrl", &a.api_url);
            o.s("apiKey", keys.to_v1(salt, &what("apiKey"), &a.api_key)?);
        }
        Platform::AzureOpenAI => {
            o.s("azureEndpoint", &a.api_url);
            o.s("apiKey", keys.to_v1(salt, &what("apiKey"), &a.api_key)?);
            o.s("apiVersion", &a.api_version);
            o.s("deploymentName", &a.deployment_name);
        }
        Platform::Claude => {
            if !a.api_url.is_empty() {
                o.s("apiUrl", &a.api_url);
            }
            o.s("email", keys.to_v1(salt, &what("email"), &a.email)?);
            o.s(
                "password",
                keys.to_v1(salt, &what("password"), &a.password)?,
            );
            let access = keys.plain(&what("accessToken"), &a.access_token)?;
            let refresh = keys.plain(&what("refreshToken"), &a.refresh_token)?;
            o.s("accessToken", keys.v1.encrypt(salt, &access));
            o.s("refreshToken", keys.v1.encrypt(salt, &refresh));
            o.s(
                "expiresAt",
                if a.expires_at > 0 {
                    a.expires_at.to_string()
                } else {
                    String::new()
                },
            );
            o.s("scopes", &a.scopes);
            // The OAuth blob: the imported one (other fields kept) with the current tokens.
            let mut blob = match a.extra.get("claudeAiOauth").and_then(Value::as_str) {
                Some(enc) => {
                    match serde_json::from_str::<Value>(&keys.plain(&what("claudeAiOauth"), enc)?) {
                        Ok(Value::Object(m)) => m,
                        _ => Map::new(),
                    }
                }
                None => Map::new(),
            };
            if !access.is_empty() || !blob.is_empty() {
                blob.insert("accessToken".into(), json!(access));
                blob.insert("refreshToken".into(), json!(refresh));
                blob.insert("expiresAt".into(), json!(a.expires_at));
                blob.insert(
                    "scopes".into(),
                    json!(a.scopes.split_whitespace().collect::<Vec<_>>()),
                );
                o.s(
                    "claudeAiOauth",
                    keys.v1.encrypt(salt, &Value::Object(blob).to_string()),
                );
            } else {
                o.s("claudeAiOauth", "");
            }
            o.s("subscriptionInfo", &a.subscription_info);
            o.date("lastRefreshAt", &a.last_refresh_at);
        }
        Platform::Bedrock => {
            o.s("region", &a.region);
            o.s("defaultModel", &a.default_model);
            o.s("smallFastModel", &a.small_fast_model);
            if !a.api_url.is_empty() {
                o.s("endpointUrl", &a.api_url);
            }
            let mut creds = Map::new();
            creds.insert("accessKeyId".into(), json!(a.aws_access_key_id));
            creds.insert(
                "secretAccessKey".into(),
                json!(keys.plain(&what("secretAccessKey"), &a.aws_secret_access_key)?),
            );
            let token = keys.plain(&what("sessionToken"), &a.aws_session_token)?;
            if !token.is_empty() {
                creds.insert("sessionToken".into(), json!(token));
            }
            let (encrypted, iv) = keys.v1.encrypt_bedrock(&Value::Object(creds).to_string());
            o.v("awsCredentials", json!({"encrypted": encrypted, "iv": iv}));
        }
        Platform::Droid => {
            if !a.api_url.is_empty() {
                o.s("baseUrl", &a.api_url);
            }
            o.s("endpointType", &a.endpoint_type);
            let key = keys.plain(&what("apiKey"), &a.api_key)?;
            let mut entries: Vec<Map<String, Value>> = a
                .extra
                .get("apiKeys")
                .and_then(Value::as_str)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            let mut has_current = false;
            for e in &mut entries {
                if let Some(enc) = e.get("encryptedKey").and_then(Value::as_str) {
                    let plain = keys.plain(&what("apiKeys"), enc)?;
                    has_current |= plain == key;
                    e.insert(
                        "encryptedKey".into(),
                        Value::String(keys.v1.encrypt(salt, &plain)),
                    );
                }
            }
            if !has_current && !key.is_empty() {
                let mut e = Map::new();
                e.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
                e.insert(
                    "hash".into(),
                    json!(hex::encode(Sha256::digest(key.as_bytes()))),
                );
                e.insert("encryptedKey".into(), json!(keys.v1.encrypt(salt, &key)));
                e.insert("createdAt".into(), json!(iso(&Some(Utc::now()))));
                e.insert("lastUsedAt".into(), json!(""));
                e.insert("usageCount".into(), json!("0"));
                e.insert("status".into(), json!("active"));
                e.insert("errorMessage".into(), json!(""));
                entries.insert(0, e);
            }
            o.s("apiKeys", json!(entries).to_string());
            if !a.extra.contains_key("apiKeyCount") || !has_current {
                o.s("apiKeyCount", entries.len().to_string());
            }
            if !a.extra.contains_key("authenticationMethod") {
                o.s("authenticationMethod", "api_key");
            }
        }
    }
    for name in EXTRA_SECRETS {
        if let Some(Value::String(enc)) = a.extra.get(*name)
            && !o.0.contains_key(*name)
        {
            let plain = keys.plain(&what(name), enc)?;
            o.s(name, keys.v1.encrypt(salt, &plain));
        }
    }
    o.extra(&a.extra);
    if fam.json {
        // v1 writes Bedrock records with JSON types.
        for (k, t) in [
            ("priority", "n"),
            ("schedulable", "b"),
            ("isActive", "b"),
            ("proxy", "j"),
        ] {
            if let Some(Value::String(s)) = o.0.get(k).cloned() {
                let v = match t {
                    "n" => s
                        .parse::<u64>()
                        .map(Value::from)
                        .unwrap_or(Value::String(s)),
                    "b" => Value::Bool(s == "true"),
                    _ if s.is_empty() => Value::Null,
                    _ => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                };
                o.0.insert(k.into(), v);
            }
        }
    }
    Ok(o.0)
}

// ---------------------------------------------------------------------------------------------
// Groups, admin, request records, sticky sessions.

pub fn import_group(id: &str, pairs: &[(String, String)]) -> (AccountGroup, Vec<String>) {
    let mut f = Fields::from_pairs(pairs);
    f.take("id");
    let g = AccountGroup {
        id: id.to_owned(),
        name: f.s("name").unwrap_or_default(),
        platform: f.s("platform").unwrap_or_default(),
        description: f.s("description").unwrap_or_default(),
        members: Vec::new(),
        created_at: f.date("createdAt"),
        updated_at: f.date("updatedAt"),
    };
    (g, f.0.keys().cloned().collect())
}

pub fn export_group(g: &AccountGroup) -> Vec<(String, String)> {
    let mut o = Out::default();
    o.s("id", &g.id);
    o.s("name", &g.name);
    o.s("platform", &g.platform);
    o.s("description", &g.description);
    o.date("createdAt", &g.created_at);
    o.date("updatedAt", &g.updated_at);
    o.into_pairs()
}

pub fn import_admin(pairs: &[(String, String)]) -> Option<Admin> {
    let mut f = Fields::from_pairs(pairs);
    let username = f.s("username").filter(|u| !u.is_empty())?;
    let hash = f.s("passwordHash").filter(|h| !h.is_empty())?;
    Some(Admin {
        username,
        password_hash: hash,
        created_at: f.date("createdAt"),
        updated_at: f.date("updatedAt"),
        last_login_at: f.date("lastLogin"),
        token_version: 0,
    })
}

pub fn export_admin(a: &Admin) -> Vec<(String, String)> {
    let mut o = Out::default();
    o.s("username", &a.username);
    o.s("passwordHash", &a.password_hash);
    o.date("createdAt", &a.created_at);
    o.date("lastLogin", &a.last_login_at);
    o.date("updatedAt", &a.updated_at);
    o.into_pairs()
}

/// Fields of v1 request records that crs keeps.
const RECORD_FIELDS: &[&str] = &[
    "timestamp",
    "model",
    "accountId",
    "accountType",
    "statusCode",
    "stream",
    "durationMs",
    "inputTokens",
    "outputTokens",
    "cacheCreateTokens",
    "cacheReadTokens",
    "ephemeral5mTokens",
    "ephemeral1hTokens",
    "totalTokens",
    "cost",
    "realCost",
];

/// One `usage:records:{keyId}` entry -> RequestRecord, plus the names of fields it drops.
pub fn import_record(key_id: &str, text: &str) -> Option<(RequestRecord, Vec<String>)> {
    let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text) else {
        return None;
    };
    let dropped = m
        .keys()
        .filter(|k| !RECORD_FIELDS.contains(&k.as_str()))
        .cloned()
        .collect();
    let mut f = Fields(m);
    let rated = f.take("cost").and_then(|v| v.as_f64());
    let real = f.take("realCost").and_then(|v| v.as_f64()).or(rated);
    let micros = |d: Option<f64>| -> i64 {
        d.filter(|d| d.is_finite())
            .map(|d| (d * 1_000_000.0).round() as i64)
            .unwrap_or(0)
    };
    let r = RequestRecord {
        timestamp: f.date("timestamp"),
        key_id: key_id.to_owned(),
        account_id: f.s("accountId").unwrap_or_default(),
        model: f.s("model").unwrap_or_default(),
        input_tokens: f.u("inputTokens").unwrap_or(0),
        output_tokens: f.u("outputTokens").unwrap_or(0),
        cache_create_tokens: f.u("cacheCreateTokens").unwrap_or(0),
        cache_read_tokens: f.u("cacheReadTokens").unwrap_or(0),
        ephemeral_5m_tokens: f.u("ephemeral5mTokens").unwrap_or(0),
        ephemeral_1h_tokens: f.u("ephemeral1hTokens").unwrap_or(0),
        real_cost_micros: micros(real),
        rated_cost_micros: micros(rated),
        latency_ms: f.u("durationMs").unwrap_or(0).min(u32::MAX as u64) as u32,
        status: f.u("statusCode").unwrap_or(200).min(u16::MAX as u64) as u16,
        stream: f.b("stream", false),
    };
    Some((r, dropped))
}

pub fn export_record(r: &RequestRecord, account_type: &str) -> String {
    json!({
        "timestamp": iso(&r.timestamp),
        "model": r.model,
        "accountId": r.account_id,
        "accountType": account_type,
        "statusCode": r.status,
        "stream": r.stream,
        "durationMs": r.latency_ms,
        "inputTokens": r.input_tokens,
        "outputTokens": r.output_tokens,
        "cacheCreateTokens": r.cache_create_tokens,
        "cacheReadTokens": r.cache_read_tokens,
        "ephemeral5mTokens": r.ephemeral_5m_tokens,
        "ephemeral1hTokens": r.ephemeral_1h_tokens,
        "totalTokens": r.input_tokens + r.output_tokens + r.cache_create_tokens + r.cache_read_tokens,
        "cost": micros_to_dollars(r.rated_cost_micros),
        "realCost": micros_to_dollars(r.real_cost_micros),
    })
    .to_string()
}

pub const CLAUDE_STICKY: &str = "unified_claude_session_mapping:";
pub const OPENAI_STICKY: &str = "unified_openai_session_mapping:";

/// A v1 sticky key -> crs's session key. v1's content hashes (32 hex) become crs's `h:`
/// keys; OpenAI mappings are keyed by sha256(session_id header), which crs cannot recompute,
/// so they keep their own namespace (`v1o:`) and go back to v1 on export.
pub fn sticky_key(name: &str) -> Option<String> {
    if let Some(rest) = name.strip_prefix(CLAUDE_STICKY) {
        let is_hash =
            rest.len() == 32 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        return Some(if is_hash {
            format!("h:{rest}")
        } else {
            rest.to_owned()
        });
    }
    name.strip_prefix(OPENAI_STICKY).map(|r| format!("v1o:{r}"))
}

pub fn sticky_name(key: &str) -> String {
    if let Some(r) = key.strip_prefix("v1o:") {
        return format!("{OPENAI_STICKY}{r}");
    }
    let rest = key.strip_prefix("h:").unwrap_or(key);
    format!("{CLAUDE_STICKY}{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (V1Crypto, Secrets) {
        (
            V1Crypto::new("crs-fixture-a-encryption-key-32c"),
            Secrets::from_parts(crate::crypto::random_bytes(), vec![1; 32], "x"),
        )
    }

    #[test]
    fn api_keys_round_trip() {
        let pairs: Vec<(String, String)> = [
            ("id", "k1"),
            ("name", "n"),
            ("apiKey", "ab"),
            ("isActive", "true"),
            ("permissions", "[\"claude\"]"),
            ("dailyCostLimit", "5"),
            ("totalCostLimit", "0.05"),
            ("tags", "[\"a\",\"b\"]"),
            ("serviceRates", "{\"claude\":1.5}"),
            ("openaiAccountId", "responses:or1"),
            ("createdAt", "2026-11-22T03:57:08.282Z"),
            ("expiresAt", ""),
            ("enableOpenAIResponsesCodexAdaptation", "true"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let k = import_key("k1", &pairs);
        assert_eq!(k.permissions, vec!["claude"]);
        assert_eq!(k.daily_cost_limit_micros, 5_000_000);
        assert_eq!(k.total_cost_limit_micros, 50_000);
        assert_eq!(k.openai_account_id, "responses:or1");
        assert_eq!(k.service_rates["claude"], 1.5);
        assert_eq!(
            k.extra
                .get("enableOpenAIResponsesCodexAdaptation")
                .map(String::as_str),
            Some("true")
        );
        let out = export_key(&k);
        let get = |n: &str| out.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("createdAt"), Some("2026-11-22T03:57:08.282Z"));
        assert_eq!(get("totalCostLimit"), Some("0.05"));
        assert_eq!(get("dailyCostLimit"), Some("5"));
        assert_eq!(get("permissions"), Some("[\"claude\"]"));
        assert_eq!(import_key("k1", &out), k);
        // Legacy permissions strings.
        let legacy = vec![("permissions".to_string(), "all".to_string())];
        assert!(import_key("x", &legacy).permissions.is_empty());
    }

    #[test]
    fn console_account_round_trip() {
        let (v1, crs) = keys();
        let k = Keys { v1: &v1, crs: &crs };
        let fields = Fields::from_pairs(
            &[
                ("id", "a1"),
                ("platform", "claude-console"),
                ("name", "c"),
                ("apiKey", "9cf68abdc888536094f4236f4e97678b:c87dbcbffdba00a0c351f50e1261faf2292db278b7c1bc84b44260791d28513e8bcf79817ccc6d5b62b5b66f95f9485f"),
                ("apiUrl", "http://127.0.0.1:18080"),
                ("priority", "10"),
                ("supportedModels", "{\"a\":\"b\"}"),
                ("proxy", "{\"type\":\"socks5\",\"host\":\"h\",\"port\":1080,\"username\":\"u\",\"password\":\"p\"}"),
                ("dailyQuota", "100"),
                ("interceptWarmup", "false"),
            ]
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect::<Vec<_>>(),
        );
        let fam = family_for_key("claude_console_account:a1").unwrap().0;
        let AccountOut::Account(a) = import_account(fam, "a1", fields.0, &k).unwrap() else {
            panic!("raw")
        };
        assert_eq!(
            crs.decrypt(&a.api_key).unwrap(),
            "sk-ant-api03-fixtureA-console-primary-0001"
        );
        assert_eq!(a.priority, 10);
        assert_eq!(a.daily_quota_micros, 100_000_000);
        let p = a.proxy.clone().unwrap();
        assert_eq!((p.kind.as_str(), p.port), ("socks5", 1080));
        assert_eq!(crs.decrypt(&p.password).unwrap(), "p");
        assert_eq!(a.extra.get("interceptWarmup"), Some(&json!("false")));
        let out = export_account(&a, &k).unwrap();
        let enc = out["apiKey"].as_str().unwrap();
        assert!(looks_encrypted(enc));
        assert_eq!(
            v1.decrypt("claude-console-salt", enc).unwrap(),
            "sk-ant-api03-fixtureA-console-primary-0001"
        );
        assert!(
            out["proxy"]
                .as_str()
                .unwrap()
                .contains("\"password\":\"p\"")
        );
        let AccountOut::Account(b) = import_account(fam, "a1", out, &k).unwrap() else {
            panic!("raw")
        };
        let strip = |mut a: Account| {
            a.api_key = crs.decrypt(&a.api_key).unwrap();
            if let Some(p) = a.proxy.as_mut() {
                p.password = crs.decrypt(&p.password).unwrap();
            }
            a
        };
        assert_eq!(strip(*b), strip(*a));
    }

    fn account(fam_key: &str, fields: Map<String, Value>, k: &Keys) -> Account {
        let (fam, id) = family_for_key(fam_key).unwrap();
        match import_account(fam, id, fields, k).unwrap() {
            AccountOut::Account(a) => *a,
            AccountOut::Raw(r) => panic!("kept raw: {r}"),
        }
    }

    #[test]
    fn droid_and_bedrock_in_v1_format() {
        let (v1, crs) = keys();
        let k = Keys { v1: &v1, crs: &crs };
        let entries = json!([
            {"id": "e1", "encryptedKey": v1.encrypt("droid-account-salt", "fk-bad"), "status": "error"},
            {"id": "e2", "encryptedKey": v1.encrypt("droid-account-salt", "fk-good"), "status": "active"},
        ]);
        let mut m = Map::new();
        m.insert("name".into(), json!("d"));
        m.insert("apiKeys".into(), json!(entries.to_string()));
        m.insert("authenticationMethod".into(), json!("api_key"));
        m.insert("refreshToken".into(), json!(""));
        let a = account("droid:account:d1", m, &k);
        assert_eq!(
            crs.decrypt(&a.api_key).unwrap(),
            "fk-good",
            "first usable key"
        );
        let out = export_account(&a, &k).unwrap();
        let back: Vec<Value> = serde_json::from_str(out["apiKeys"].as_str().unwrap()).unwrap();
        assert_eq!(back.len(), 2, "no duplicate entry for the current key");
        let enc = back[1]["encryptedKey"].as_str().unwrap();
        assert_eq!(v1.decrypt("droid-account-salt", enc).unwrap(), "fk-good");
        let b = account("droid:account:d1", out, &k);
        assert_eq!(crs.decrypt(&b.api_key).unwrap(), "fk-good");
        // Without an API key (WorkOS OAuth) crs cannot serve it: kept verbatim.
        let (fam, id) = family_for_key("droid:account:d2").unwrap();
        let mut m = Map::new();
        m.insert(
            "refreshToken".into(),
            json!(v1.encrypt("droid-account-salt", "rt")),
        );
        assert!(matches!(
            import_account(fam, id, m, &k).unwrap(),
            AccountOut::Raw(_)
        ));

        let (ct, iv) = v1.encrypt_bedrock(r#"{"accessKeyId":"AKIA1","secretAccessKey":"s3cret"}"#);
        let v: Value = json!({"id": "b1", "name": "aws", "region": "us-east-1", "isActive": true,
            "priority": 40, "schedulable": false, "type": "bedrock", "credentialType": "default",
            "awsCredentials": {"encrypted": ct, "iv": iv}});
        let Value::Object(m) = v else { unreachable!() };
        let a = account("bedrock_account:b1", m, &k);
        assert_eq!(
            (a.priority, a.schedulable, a.aws_access_key_id.as_str()),
            (40, false, "AKIA1")
        );
        assert_eq!(crs.decrypt(&a.aws_secret_access_key).unwrap(), "s3cret");
        assert_eq!(a.extra.get("credentialType"), Some(&json!("default")));
        let out = export_account(&a, &k).unwrap();
        assert_eq!(out["priority"], json!(40));
        assert_eq!(out["isActive"], json!(true));
        assert_eq!(out["type"], json!("bedrock"));
        let creds = &out["awsCredentials"];
        let text = v1
            .decrypt_bedrock(
                creds["encrypted"].as_str().unwrap(),
                creds["iv"].as_str().unwrap(),
            )
            .unwrap();
        assert!(text.contains("s3cret"), "{text}");
    }

    #[test]
    fn sticky_names() {
        for (v1, crs) in [
            (
                "unified_claude_session_mapping:02bbcc55bfa589bb7eb8da09c0b93565",
                "h:02bbcc55bfa589bb7eb8da09c0b93565",
            ),
            (
                "unified_claude_session_mapping:1f0e9d8c-7b6a-4958-8372-a4000000000a",
                "1f0e9d8c-7b6a-4958-8372-a4000000000a",
            ),
            ("unified_openai_session_mapping:c8209b", "v1o:c8209b"),
        ] {
            assert_eq!(sticky_key(v1).as_deref(), Some(crs));
            assert_eq!(sticky_name(crs), v1);
        }
    }
}

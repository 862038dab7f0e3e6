//! Durable records: what the store keeps and what loads into memory at start.
//!
//! Records are JSON with `#[serde(default)]` on every struct: a field added later reads as its
//! default from an older record, and a field unknown to this version is ignored rather than
//! failing the load. Money is integers: configured limits and quotas in micro-dollars, recorded
//! costs in pico-dollars (see `Picos`); times are UTC.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

mod platform;
mod values;

pub use platform::{PLATFORMS, Platform, PlatformSpec};
pub use values::*;

/// Integer micro-dollars (1 USD = 10^6): the unit of what people configure (key cost limits,
/// account daily quotas), as v1.
pub type Micros = i64;

/// Integer pico-dollars (1 USD = 10^12): the unit of every recorded cost and running total
/// (usage buckets, request records, ledger events, key meters, account spend). It is the
/// pricing table's unit (`usage::pricing`: prices per token), so a sum of request costs is
/// exactly price x summed tokens, with no rounding anywhere (nano-dollars would not do: nearly
/// a thousand prices in LiteLLM's table, such as $0.3125 per million tokens, are not whole
/// nano-dollars per token). An i64 holds about 9.2 million dollars; totals add with saturating
/// arithmetic, so a bucket that reached that would stop there rather than wrap. Rounding happens only for display (`picos_to_dollars`) and for
/// v1's integer micro-dollar fields on export (`picos_to_micros`).
pub type Picos = i64;

pub const PICOS_PER_MICRO: i64 = 1_000_000;
const PICOS_PER_DOLLAR: u128 = 1_000_000_000_000;

pub fn dollars_to_micros(d: f64) -> Micros {
    if !d.is_finite() || d <= 0.0 {
        return 0;
    }
    (d * 1_000_000.0).round() as Micros
}

pub fn micros_to_dollars(m: Micros) -> f64 {
    m as f64 / 1_000_000.0
}

/// A configured micro-dollar amount in the unit costs are counted in (saturating).
pub fn micros_to_picos(m: Micros) -> Picos {
    m.saturating_mul(PICOS_PER_MICRO)
}

/// The nearest micro-dollar, halves away from zero (v1's integer `*CostMicro` fields).
pub fn picos_to_micros(p: Picos) -> Micros {
    let m = PICOS_PER_MICRO as i128;
    let a = (p as i128).abs();
    let r = ((a + m / 2) / m) as i64;
    if p < 0 { -r } else { r }
}

/// Dollars for display: the f64 nearest the exact amount. For amounts of existing
/// micro-dollar data this is the same number `micros_to_dollars` gave.
pub fn picos_to_dollars(p: Picos) -> f64 {
    // Both operands are exact below 2^53, and IEEE division rounds correctly.
    if p.unsigned_abs() <= 1 << 53 {
        return p as f64 / PICOS_PER_DOLLAR as f64;
    }
    fmt_picos(p).parse().unwrap_or(0.0)
}

/// The exact amount as decimal dollars without trailing zeros: `0.056484`, `12`,
/// `-0.000000000001`.
pub fn fmt_picos(p: Picos) -> String {
    let a = p.unsigned_abs() as u128;
    let (whole, frac) = (a / PICOS_PER_DOLLAR, a % PICOS_PER_DOLLAR);
    let sign = if p < 0 { "-" } else { "" };
    if frac == 0 {
        return format!("{sign}{whole}");
    }
    let frac = format!("{frac:012}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

/// Decimal dollars (`0.05715000000000001`, `1e-7`, `-3`, as v1 and JavaScript write them) in
/// pico-dollars, read exactly from the digits and rounded once, halves away from zero;
/// saturating. `None` when the text is not a decimal number.
pub fn parse_dollars(text: &str) -> Option<Picos> {
    let s = text.trim();
    let (neg, s) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty()
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let digits: String = int.chars().chain(frac.chars()).collect();
    let digits = digits.trim_start_matches('0');
    // value = digits x 10^scale pico-dollars
    let scale = exp as i64 - frac.len() as i64 + 12;
    // Digits kept before the pico-dollar point.
    let kept = digits.len() as i64 + scale.min(0);
    let magnitude: u128 = if digits.is_empty() || kept < 0 {
        0
    } else if kept + scale.max(0) > 20 {
        u128::MAX
    } else {
        let head = &digits[..kept as usize];
        let mut v: u128 = if head.is_empty() {
            0
        } else {
            head.parse().ok()?
        };
        v *= 10u128.pow(scale.max(0) as u32);
        if digits
            .as_bytes()
            .get(kept as usize)
            .is_some_and(|d| *d >= b'5')
        {
            v += 1;
        }
        v
    };
    let v = magnitude.min(i64::MAX as u128) as i64;
    Some(if neg { -v } else { v })
}

/// A floating-point dollar amount in pico-dollars: its shortest decimal form (the one
/// JavaScript and Rust print), read exactly. Not a finite number: 0.
pub fn dollars_to_picos(d: f64) -> Picos {
    if !d.is_finite() {
        return 0;
    }
    parse_dollars(&format!("{d}")).unwrap_or(0)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub description: String,
    /// Lowercase hex sha256(key + key-hash secret), as v1.
    pub key_hash: String,
    /// First characters of the plaintext key, kept to help people recognise their keys.
    pub key_preview: String,
    pub is_active: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub updated_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expiration_mode: ExpirationMode,
    pub expires_at: Option<DateTime<Utc>>,
    pub is_activated: bool,
    pub activated_at: Option<DateTime<Utc>>,
    pub activation_days: u32,
    pub activation_unit: ActivationUnit,
    pub token_limit: u64,
    pub concurrency_limit: u32,
    pub concurrency_queue_enabled: bool,
    pub concurrency_queue_max: u32,
    pub concurrency_queue_timeout_ms: u64,
    /// Minutes.
    pub rate_limit_window: u32,
    pub rate_limit_requests: u32,
    pub rate_limit_cost_micros: Micros,
    pub daily_cost_limit_micros: Micros,
    pub total_cost_limit_micros: Micros,
    pub weekly_opus_cost_limit_micros: Micros,
    pub five_hour_cost_limit_micros: Micros,
    /// 1 = Monday .. 7 = Sunday.
    pub weekly_reset_day: u8,
    pub weekly_reset_hour: u8,
    /// Empty = all services.
    pub permissions: Vec<String>,
    pub enable_model_restriction: bool,
    pub restricted_models: Vec<String>,
    pub model_restriction_mode: RestrictionMode,
    pub enable_client_restriction: bool,
    pub allowed_clients: Vec<String>,
    pub tags: Vec<String>,
    pub service_rates: BTreeMap<String, f64>,
    /// The binding fields (see `BindingField`; read them through `binding`).
    pub claude_account_id: Binding,
    pub claude_console_account_id: Binding,
    pub gemini_account_id: Binding,
    pub openai_account_id: Binding,
    pub azure_openai_account_id: Binding,
    pub bedrock_account_id: Binding,
    pub droid_account_id: Binding,
    /// Owner (v1's user feature): id and display name.
    pub user_id: String,
    pub user_username: String,
    /// A small image (data URL or base64) shown next to the key.
    pub icon: String,
    /// v1's allow1mContext flag, kept for compatibility.
    pub allow_1m_context: bool,
    pub is_deleted: bool,
    pub deleted_at: Option<DateTime<Utc>>,
    pub deleted_by: String,
    /// "admin" or "user".
    pub deleted_by_type: String,
    /// v1 fields this version does not model (from an import), kept for export.
    pub extra: BTreeMap<String, String>,
}

impl ApiKey {
    /// One of the seven binding fields: the only place that lists them.
    pub fn binding(&self, f: BindingField) -> &Binding {
        match f {
            BindingField::Claude => &self.claude_account_id,
            BindingField::ClaudeConsole => &self.claude_console_account_id,
            BindingField::Gemini => &self.gemini_account_id,
            BindingField::OpenAI => &self.openai_account_id,
            BindingField::AzureOpenAI => &self.azure_openai_account_id,
            BindingField::Bedrock => &self.bedrock_account_id,
            BindingField::Droid => &self.droid_account_id,
        }
    }

    pub fn binding_mut(&mut self, f: BindingField) -> &mut Binding {
        match f {
            BindingField::Claude => &mut self.claude_account_id,
            BindingField::ClaudeConsole => &mut self.claude_console_account_id,
            BindingField::Gemini => &mut self.gemini_account_id,
            BindingField::OpenAI => &mut self.openai_account_id,
            BindingField::AzureOpenAI => &mut self.azure_openai_account_id,
            BindingField::Bedrock => &mut self.bedrock_account_id,
            BindingField::Droid => &mut self.droid_account_id,
        }
    }

    /// The key's binding for a route served by `platforms`: the first set binding field of
    /// those account types, in table order (`Binding::None` when none is set).
    pub fn binding_for(&self, platforms: &[Platform]) -> Binding {
        platforms
            .iter()
            .filter_map(|p| p.spec().binding)
            .map(|(f, _)| self.binding(f))
            .find(|b| !b.is_none())
            .cloned()
            .unwrap_or_default()
    }

    pub fn new(id: String) -> Self {
        ApiKey {
            id,
            is_active: true,
            weekly_reset_day: 1,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct ProxyConfig {
    /// "http", "https" or "socks5".
    #[serde(rename = "type")]
    pub kind: String,
    pub host: String,
    pub port: u16,
    pub username: String,
    /// Encrypted at rest.
    pub password: String,
}

/// An upstream account of any platform. Fields a platform does not use stay empty. Secrets
/// (`api_key`, OAuth tokens, `email`, `password`, AWS secrets, proxy password) are encrypted at
/// rest. `extra` keeps fields this version does not model (from an import), so nothing is lost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Account {
    pub id: String,
    pub platform: Platform,
    pub name: String,
    pub description: String,
    /// Upstream base URL (console/ccr `apiUrl`, responses `baseApi`, gemini `baseUrl`, azure
    /// `azureEndpoint`, droid `baseUrl`). A full endpoint is accepted where v1 accepted one.
    pub api_url: String,
    /// Upstream API key, encrypted.
    pub api_key: String,
    /// Lower is preferred.
    pub priority: u32,
    pub schedulable: bool,
    pub is_active: bool,
    /// "shared", "dedicated" or "group".
    pub account_type: String,
    /// Requested model -> upstream model. Empty = every model, unmapped.
    pub supported_models: BTreeMap<String, String>,
    pub user_agent: String,
    pub proxy: Option<ProxyConfig>,
    /// Daily spending cap in micro-dollars (0 = none), reset at `quota_reset_time` local.
    pub daily_quota_micros: Micros,
    /// "HH:MM" local.
    pub quota_reset_time: String,
    /// Concurrent requests this account takes (0 = unlimited).
    pub max_concurrency: u32,
    /// Minutes out of rotation after a 429 that gives no reset time (v1's rateLimitDuration).
    pub rate_limit_duration: u32,
    /// Never put out of rotation automatically.
    pub disable_auto_protection: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub subscription_expires_at: Option<DateTime<Utc>>,
    pub status: AccountStatus,
    pub error_message: String,
    // Claude official OAuth.
    pub access_token: String,
    pub refresh_token: String,
    /// Access-token expiry, unix ms.
    pub expires_at: i64,
    pub scopes: String,
    pub email: String,
    pub password: String,
    pub subscription_info: String,
    pub last_refresh_at: Option<DateTime<Utc>>,
    // Azure OpenAI.
    pub api_version: String,
    pub deployment_name: String,
    // Bedrock.
    pub region: String,
    pub aws_access_key_id: String,
    pub aws_secret_access_key: String,
    pub aws_session_token: String,
    pub default_model: String,
    pub small_fast_model: String,
    /// Bedrock API key (v1's `bearerToken`, `credentialType: bearer_token`), encrypted: sent
    /// as `Authorization: Bearer` instead of a SigV4 signature.
    pub bearer_token: String,
    // OpenAI Responses ("responses"), Droid ("anthropic" | "openai" | "comm").
    pub provider_endpoint: String,
    pub endpoint_type: String,
    /// Droid: v1's `authenticationMethod` ("api_key" for a key pool; otherwise WorkOS OAuth,
    /// "manual" when an admin pasted the refresh token).
    pub authentication_method: String,
    /// Droid WorkOS organisation the refresh grant names (v1's `organizationId`).
    pub organization_id: String,
    /// Droid API-key pool (v1's `apiKeys` entries); requests rotate over the usable ones.
    pub api_keys: Vec<PoolKey>,
    /// Scheduled account tests (v1's per-account test config), if configured.
    pub test_schedule: Option<TestSchedule>,
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// One key of a Droid account's pool, in v1's entry shape (droidAccountService.js
/// `_buildApiKeyEntries`): `hash` is the SHA-256 hex of the key (duplicates are refused by
/// it), `key` the key itself encrypted (v1's `encryptedKey`), `status` "active" or "error" (a
/// key the upstream refused; it leaves the rotation) with `errorMessage` the refusal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct PoolKey {
    pub id: String,
    pub hash: String,
    pub key: String,
    pub created_at: String,
    pub last_used_at: String,
    pub usage_count: u64,
    pub status: String,
    pub error_message: String,
}

impl PoolKey {
    pub fn usable(&self) -> bool {
        self.status != "error"
    }
}

/// v1's per-account test config (`GET/PUT /admin/claude-accounts/:id/test-config`): when
/// enabled, the account is tested with `model` at the times of a 5-field cron expression in
/// the accounting time zone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct TestSchedule {
    pub enabled: bool,
    pub cron_expression: String,
    pub model: String,
}

impl Account {
    /// A yes/no option kept in `extra` under v1's name (v1 writes "true"/"false" strings; the
    /// admin API keeps that form so import and export carry it unchanged).
    pub fn extra_flag(&self, name: &str) -> bool {
        match self.extra.get(name) {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == "true",
            _ => false,
        }
    }

    /// A Droid account that sends keys from its pool (v1: `authenticationMethod: api_key`, or
    /// a pool without a stored access token).
    pub fn uses_key_pool(&self) -> bool {
        self.platform == Platform::Droid
            && (self
                .authentication_method
                .trim()
                .eq_ignore_ascii_case("api_key")
                || (!self.api_keys.is_empty() && self.access_token.is_empty()))
    }

    /// v1's `autoStopOnWarning` (Claude OAuth accounts): leave rotation when Anthropic warns
    /// that a usage window is nearly spent (`allowed_warning`), until the 5-hour window resets.
    pub fn auto_stop_on_warning(&self) -> bool {
        self.extra_flag("autoStopOnWarning")
    }

    pub fn new(id: String, platform: Platform) -> Self {
        Account {
            id,
            platform,
            priority: 50,
            schedulable: true,
            is_active: true,
            account_type: "shared".into(),
            rate_limit_duration: 60,
            quota_reset_time: "00:00".into(),
            ..Default::default()
        }
    }
}

/// An account group (v1's `account_group`): keys bound to `group:{id}` use its members.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct AccountGroup {
    pub id: String,
    pub name: String,
    /// "claude", "openai", "gemini" or "droid".
    pub platform: String,
    pub description: String,
    pub members: Vec<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct Admin {
    pub username: String,
    /// argon2 PHC string.
    pub password_hash: String,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub last_login_at: Option<DateTime<Utc>>,
    /// Bumped on password change: sessions issued under an older version stop working.
    pub token_version: u32,
}

/// A sticky session: the account that served a conversation, until `expires_at`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StickyEntry {
    pub account_id: String,
    /// Unix ms.
    pub expires_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_records_gain_defaults_and_unknown_fields_are_kept_out() {
        // A record written before most fields existed, plus a field from a future version.
        let k: ApiKey =
            serde_json::from_str(r#"{"id":"a","keyHash":"h","isActive":true,"futureField":7}"#)
                .unwrap();
        assert_eq!(k.id, "a");
        assert!(k.is_active);
        assert_eq!(k.concurrency_limit, 0);
        assert!(k.tags.is_empty());
    }

    #[test]
    fn money_conversions() {
        assert_eq!(dollars_to_micros(0.05), 50_000);
        assert_eq!(dollars_to_micros(1.234_567_4), 1_234_567);
        assert_eq!(dollars_to_micros(-1.0), 0);
        assert_eq!(dollars_to_micros(f64::NAN), 0);
        assert_eq!(micros_to_dollars(5_143_900), 5.1439);
    }

    #[test]
    fn pico_dollars() {
        assert_eq!(micros_to_picos(5_143_900), 5_143_900_000_000);
        assert_eq!(micros_to_picos(i64::MAX), i64::MAX, "saturates");
        assert_eq!(picos_to_micros(1_472_500_000), 1473, "half away from zero");
        assert_eq!(picos_to_micros(1_472_499_999), 1472);
        assert_eq!(picos_to_micros(-1_500_000), -2);
        assert_eq!(picos_to_micros(i64::MAX), i64::MAX / PICOS_PER_MICRO + 1);
        // Display of micro-dollar amounts is what it was.
        for m in [0, 1, 186, 5_143_900, 57_150, 123_456_789_012, -42] {
            assert_eq!(
                picos_to_dollars(micros_to_picos(m)),
                micros_to_dollars(m),
                "{m}"
            );
        }
        assert_eq!(picos_to_dollars(56_484_000_000), 0.056484);
        assert_eq!(picos_to_dollars(1), 1e-12);
        // Beyond 2^53 the f64 nearest the exact decimal amount.
        assert_eq!(
            picos_to_dollars(i64::MAX),
            "9223372.036854775807".parse::<f64>().unwrap()
        );
        assert_eq!(fmt_picos(56_484_000_000), "0.056484");
        assert_eq!(fmt_picos(12_000_000_000_000), "12");
        assert_eq!(fmt_picos(-1), "-0.000000000001");
        assert_eq!(fmt_picos(0), "0");
    }

    #[test]
    fn decimal_dollars_parse_exactly() {
        assert_eq!(parse_dollars("0.05715000000000001"), Some(57_150_000_000));
        assert_eq!(parse_dollars("0.0051439"), Some(5_143_900_000));
        assert_eq!(parse_dollars(" 12 "), Some(12_000_000_000_000));
        assert_eq!(parse_dollars("1e-7"), Some(100_000));
        assert_eq!(parse_dollars("2.5E-13"), Some(0));
        assert_eq!(parse_dollars("5e-13"), Some(1), "half away from zero");
        assert_eq!(parse_dollars("-5e-13"), Some(-1));
        assert_eq!(parse_dollars("0.0000000000004999"), Some(0));
        assert_eq!(parse_dollars(".5"), Some(500_000_000_000));
        assert_eq!(parse_dollars("3."), Some(3_000_000_000_000));
        assert_eq!(parse_dollars("1e30"), Some(i64::MAX), "saturates");
        assert_eq!(parse_dollars("-1e30"), Some(-i64::MAX));
        assert_eq!(parse_dollars("0e999"), Some(0));
        assert_eq!(parse_dollars("0.000"), Some(0));
        for bad in [
            "", "-", ".", "abc", "1.2.3", "1e", "0x10", "NaN", "inf", "1 000",
        ] {
            assert_eq!(parse_dollars(bad), None, "{bad:?}");
        }
        assert_eq!(dollars_to_picos(0.000235350), 235_350_000);
        assert_eq!(dollars_to_picos(1e-7), 100_000);
        assert_eq!(dollars_to_picos(f64::NAN), 0);
        // Exact pico amounts survive a trip through f64 (v1's request records).
        for p in [1, 235_350_000, 56_484_123_456, 999_999_999_999_999] {
            assert_eq!(dollars_to_picos(picos_to_dollars(p)), p, "{p}");
        }
    }

    #[test]
    fn platform_table_rows_match_their_platforms() {
        let mut names = std::collections::HashSet::new();
        let mut paths = std::collections::HashSet::new();
        for p in Platform::ALL {
            let s = p.spec();
            assert_eq!(s.platform, p);
            assert_eq!(Platform::parse(s.name), Some(p));
            assert_eq!(
                serde_json::to_value(p).unwrap(),
                serde_json::json!(s.name),
                "serde name and table name agree"
            );
            assert!(names.insert(s.name) && paths.insert(s.admin_path));
            assert!(!s.services.is_empty());
        }
        assert_eq!(
            Platform::serving(Service::Claude),
            &[
                Platform::Claude,
                Platform::ClaudeConsole,
                Platform::Bedrock,
                Platform::Ccr
            ]
        );
        assert_eq!(
            Platform::serving(Service::Gemini),
            &[Platform::GeminiApi, Platform::Gemini]
        );
    }

    #[test]
    fn bindings_keep_v1_forms() {
        for (text, parsed) in [
            ("", Binding::None),
            ("group:g1", Binding::Group("g1".into())),
            (
                "responses:or1",
                Binding::Account {
                    id: "or1".into(),
                    prefix: Prefix::Responses,
                },
            ),
            (
                "api:ga1",
                Binding::Account {
                    id: "ga1".into(),
                    prefix: Prefix::Api,
                },
            ),
            (
                "c1",
                Binding::Account {
                    id: "c1".into(),
                    prefix: Prefix::None,
                },
            ),
        ] {
            assert_eq!(Binding::parse(text), parsed);
            assert_eq!(parsed.to_string(), text);
            let k: ApiKey =
                serde_json::from_value(serde_json::json!({"openaiAccountId": text})).unwrap();
            assert_eq!(k.openai_account_id, parsed);
            assert_eq!(serde_json::to_value(&k).unwrap()["openaiAccountId"], text);
        }
        let k: ApiKey = serde_json::from_str(r#"{"geminiAccountId": null}"#).unwrap();
        assert!(k.gemini_account_id.is_none());
    }

    #[test]
    fn a_route_takes_the_first_binding_of_its_account_types() {
        let mut k = ApiKey::new("k".into());
        assert!(k.binding_for(Platform::serving(Service::Claude)).is_none());
        k.bedrock_account_id = Binding::parse("b1");
        k.claude_console_account_id = Binding::parse("group:g");
        k.openai_account_id = Binding::parse("responses:o");
        assert_eq!(
            k.binding_for(Platform::serving(Service::Claude)),
            Binding::Group("g".into()),
            "console comes before Bedrock"
        );
        assert_eq!(
            k.binding_for(&[Platform::OpenAIResponses]).account(),
            Some("o")
        );
        assert!(k.binding_for(&[Platform::AzureOpenAI]).is_none());
    }

    #[test]
    fn v1_choices_read_unknown_as_default_and_statuses_keep_unknown() {
        let k: ApiKey = serde_json::from_str(
            r#"{"expirationMode":"activation","activationUnit":"weeks","modelRestrictionMode":""}"#,
        )
        .unwrap();
        assert_eq!(k.expiration_mode, ExpirationMode::Activation);
        assert_eq!(k.activation_unit, ActivationUnit::Days);
        assert_eq!(k.model_restriction_mode, RestrictionMode::Deny);
        assert_eq!(
            serde_json::to_value(&k).unwrap()["expirationMode"],
            "activation"
        );
        for s in [
            "active",
            "unauthorized",
            "blocked",
            "error",
            "refresh_failed",
            "suspended",
            "created",
        ] {
            let a: Account = serde_json::from_value(serde_json::json!({"status": s})).unwrap();
            assert_eq!(a.status.as_str(), s);
            assert_eq!(serde_json::to_value(&a).unwrap()["status"], s);
        }
        assert!(AccountStatus::parse("blocked").needs_attention());
        assert!(!AccountStatus::parse("created").needs_attention());
        assert_eq!(AccountStatus::parse(""), AccountStatus::Active);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn binding_text() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "[ ]?(group:|responses:|api:)?[ a-z0-9:-]{0,12}",
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn bindings_write_back_what_they_read(s in binding_text()) {
                let b = Binding::parse(&s);
                prop_assert_eq!(b.to_string(), s.trim());
                prop_assert_eq!(Binding::parse(&b.to_string()), b.clone());
                let k: ApiKey = serde_json::from_value(serde_json::json!({"claudeAccountId": s})).unwrap();
                prop_assert_eq!(&k.claude_account_id, &b);
                let back: ApiKey = serde_json::from_value(serde_json::to_value(&k).unwrap()).unwrap();
                prop_assert_eq!(back.claude_account_id, b.clone());
                match &b {
                    Binding::None => prop_assert!(s.trim().is_empty()),
                    Binding::Group(g) => prop_assert_eq!(s.trim().strip_prefix("group:"), Some(g.as_str())),
                    Binding::Account { id, prefix } => {
                        prop_assert_eq!(format!("{}{id}", prefix.as_str()), s.trim());
                    }
                }
            }

            #[test]
            fn money_converts_without_panics(d in any::<f64>(), m in 0i64..=1_000_000_000_000_000) {
                prop_assert!(dollars_to_micros(d) >= 0);
                prop_assert_eq!(dollars_to_micros(micros_to_dollars(m)), m);
            }
        }
    }
}

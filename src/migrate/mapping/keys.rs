//! API keys: `apikey:{id}` <-> ApiKey.

use serde_json::{Map, Value, json};

use super::common::{Fields, Out};
use crate::model::{
    ActivationUnit, ApiKey, Binding, BindingField, ExpirationMode, RestrictionMode,
};

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
    k.expiration_mode =
        ExpirationMode::parse(&f.str_or("expirationMode", "fixed")).unwrap_or_default();
    k.expires_at = f.date("expiresAt");
    k.is_activated = f.b("isActivated", false);
    k.activated_at = f.date("activatedAt");
    k.activation_days = f.u("activationDays").unwrap_or(0) as u32;
    k.activation_unit =
        ActivationUnit::parse(&f.str_or("activationUnit", "days")).unwrap_or_default();
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
    k.model_restriction_mode =
        RestrictionMode::parse(&f.str_or("modelRestrictionMode", "deny")).unwrap_or_default();
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
    for b in BindingField::ALL {
        *k.binding_mut(b) = Binding::parse(&f.s(b.name()).unwrap_or_default());
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
    o.s("expirationMode", k.expiration_mode.as_str());
    o.date("expiresAt", &k.expires_at);
    o.b("isActivated", k.is_activated);
    o.date("activatedAt", &k.activated_at);
    o.n("activationDays", k.activation_days);
    o.s("activationUnit", k.activation_unit.as_str());
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
    o.s("modelRestrictionMode", k.model_restriction_mode.as_str());
    o.b("enableClientRestriction", k.enable_client_restriction);
    o.s("allowedClients", json!(k.allowed_clients).to_string());
    o.s("tags", json!(k.tags).to_string());
    o.s("serviceRates", json!(k.service_rates).to_string());
    for b in BindingField::ALL {
        o.s(b.name(), k.binding(b).to_string());
    }
    o.s("userId", &k.user_id);
    o.s("userUsername", &k.user_username);
    o.s("icon", &k.icon);
    o.b("allow1mContext", k.allow_1m_context);
    o.b("isDeleted", k.is_deleted);
    if k.is_deleted
        || k.deleted_at.is_some()
        || !k.deleted_by.is_empty()
        || !k.deleted_by_type.is_empty()
    {
        o.date("deletedAt", &k.deleted_at);
        o.s("deletedBy", &k.deleted_by);
        o.s("deletedByType", &k.deleted_by_type);
    }
    o.extra(&k.extra);
    o.into_pairs()
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(k.openai_account_id.to_string(), "responses:or1");
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

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Every field `import_key` reads.
        const FIELDS: &[&str] = &[
            "activatedAt",
            "activationDays",
            "activationUnit",
            "allow1mContext",
            "allowedClients",
            "apiKey",
            "concurrencyLimit",
            "concurrencyQueueEnabled",
            "concurrencyQueueMax",
            "concurrencyQueueTimeoutMs",
            "createdAt",
            "createdBy",
            "dailyCostLimit",
            "deletedAt",
            "deletedBy",
            "deletedByType",
            "description",
            "enableClientRestriction",
            "enableModelRestriction",
            "expirationMode",
            "expiresAt",
            "fiveHourCostLimit",
            "icon",
            "id",
            "isActivated",
            "isActive",
            "isDeleted",
            "keyPreview",
            "lastUsedAt",
            "modelRestrictionMode",
            "name",
            "permissions",
            "rateLimitCost",
            "rateLimitRequests",
            "rateLimitWindow",
            "restrictedModels",
            "serviceRates",
            "tags",
            "tokenLimit",
            "totalCostLimit",
            "updatedAt",
            "userId",
            "userUsername",
            "weeklyOpusCostLimit",
            "weeklyResetDay",
            "weeklyResetHour",
            "claudeAccountId",
            "claudeConsoleAccountId",
            "geminiAccountId",
            "openaiAccountId",
            "azureOpenaiAccountId",
            "bedrockAccountId",
            "droidAccountId",
        ];

        /// Any string, and the shapes v1 writes: booleans, numbers, dates, JSON lists and
        /// objects, bindings.
        fn value() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                prop::sample::select(vec![
                    "", "true", "false", "1", "0", "all", "null", "[]", "{}"
                ])
                .prop_map(str::to_owned),
                any::<i64>().prop_map(|n| n.to_string()),
                any::<f64>().prop_map(|n| n.to_string()),
                (0i64..4_102_444_800_000).prop_map(|ms| {
                    let t = chrono::DateTime::from_timestamp_millis(ms).unwrap();
                    if ms % 2 == 0 {
                        super::super::super::common::iso(&Some(t))
                    } else {
                        ms.to_string()
                    }
                }),
                prop::collection::vec("[a-z0-9 ,\"-]{0,8}", 0..4)
                    .prop_map(|v| serde_json::json!(v).to_string()),
                prop::collection::vec("[a-z0-9 ,-]{0,8}", 0..4).prop_map(|v| v.join(",")),
                prop::collection::btree_map(
                    "[a-z]{1,6}",
                    prop_oneof![
                        (0.0f64..10.0).prop_map(|f| serde_json::json!(f)),
                        Just(serde_json::json!("1.5")),
                        Just(serde_json::json!(-1)),
                        Just(serde_json::json!(null)),
                    ],
                    0..3
                )
                .prop_map(|m| serde_json::json!(m).to_string()),
                "(group:|responses:|api:)?[a-z0-9-]{0,8}",
                "[0-9]{4}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,9})?(Z|[+-][01][0-9]:[0-5][0-9])",
                "-?[0-9]{13,20}(\\.[0-9]{1,4})?",
                "[0-9]\\.?[0-9]{0,3}e[+-]?[0-9]{1,3}",
            ]
        }

        fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
            let name = prop_oneof![
                4 => prop::sample::select(FIELDS).prop_map(str::to_owned),
                1 => "[a-zA-Z]{1,12}",
            ];
            prop::collection::vec((name, value()), 0..24)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn keys_import_any_fields_and_round_trip(p in prop_oneof![
                pairs(),
                // Limits past what micro-dollars in an i64 hold.
                ("(daily|total|weeklyOpus|fiveHour)CostLimit|rateLimitCost", "[1-9][0-9]{12,20}(\\.[0-9])?|[1-9]e[1-3][0-9]{0,2}")
                    .prop_map(|(k, v)| vec![(k, v)]),
            ]) {
                let k = import_key("k1", &p);
                let again = import_key("k1", &export_key(&k));
                prop_assert_eq!(again, k);
            }
        }
    }
}

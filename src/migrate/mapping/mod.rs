//! Record mappings between v1's Redis values and crs's records, both directions. Every v1
//! field a mapping reads is written back under the same name by the reverse mapping, so
//! import(export(import(x))) == import(x); fields crs does not model go to `extra` and back.

mod accounts;
mod common;
mod keys;

pub use accounts::{AccountOut, Keys, export_account, import_account};
pub use common::{
    FAMILIES, Family, Fields, Out, family_for_key, family_for_platform, fmt_dollars, iso, simple_id,
};
pub use keys::{export_key, import_key};

use serde_json::{Value, json};

use crate::model::{AccountGroup, Admin, dollars_to_picos, picos_to_dollars};
use crate::usage::ledger::RequestRecord;

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
    // v1 writes each request's unrounded float cost in dollars: read exactly, to the
    // pico-dollar, from its shortest decimal form.
    let rated = f.take("cost").and_then(|v| v.as_f64());
    let real = f.take("realCost").and_then(|v| v.as_f64()).or(rated);
    let picos = |d: Option<f64>| d.map(dollars_to_picos).unwrap_or(0);
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
        real_cost_picos: picos(real),
        rated_cost_picos: picos(rated),
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
        "totalTokens": r.input_tokens
            .saturating_add(r.output_tokens)
            .saturating_add(r.cache_create_tokens)
            .saturating_add(r.cache_read_tokens),
        "cost": picos_to_dollars(r.rated_cost_picos),
        "realCost": picos_to_dollars(r.real_cost_picos),
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

    /// v1's records hold each request's unrounded cost in float dollars: it arrives to the
    /// pico-dollar, and crs's exact costs go back and forth unchanged.
    #[test]
    fn record_costs_are_exact() {
        let (r, dropped) = import_record(
            "k",
            r#"{"timestamp":"2026-11-22T03:57:07.123Z","model":"claude-3-5-haiku-20241022",
                "inputTokens":120,"outputTokens":22,"cacheReadTokens":30,
                "cost":0.0001864,"realCost":0.0001864}"#,
        )
        .unwrap();
        assert!(dropped.is_empty());
        assert_eq!(
            (r.real_cost_picos, r.rated_cost_picos),
            (186_400_000, 186_400_000)
        );
        let mine = RequestRecord {
            real_cost_picos: 48_300_001,
            rated_cost_picos: 53_130_001,
            ..r.clone()
        };
        let (back, _) = import_record("k", &export_record(&mine, "claude-console")).unwrap();
        assert_eq!(back, mine);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                "[a-z0-9 :.-]{0,12}",
                prop::sample::select(vec!["", "true", "false", "1", "null", "1e30", "-5", "0.5"])
                    .prop_map(str::to_owned),
                (0i64..4_102_444_800_000).prop_map(|ms| ms.to_string()),
                (0i64..4_102_444_800_000)
                    .prop_map(|ms| iso(&chrono::DateTime::from_timestamp_millis(ms))),
            ]
        }

        fn json_value() -> impl Strategy<Value = Value> {
            prop_oneof![
                text().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                any::<f64>().prop_map(|f| json!(f)),
                any::<bool>().prop_map(Value::from),
                Just(Value::Null),
                Just(json!({"a": [1]})),
            ]
        }

        fn pairs(names: &'static [&'static str]) -> impl Strategy<Value = Vec<(String, String)>> {
            let name = prop_oneof![
                4 => prop::sample::select(names).prop_map(str::to_owned),
                1 => "[a-zA-Z]{1,8}",
            ];
            prop::collection::vec((name, text()), 0..10)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn groups_round_trip(p in pairs(&["id", "name", "platform", "description", "createdAt", "updatedAt"])) {
                let (g, _) = import_group("g1", &p);
                let (again, dropped) = import_group("g1", &export_group(&g));
                prop_assert_eq!(again, g);
                prop_assert!(dropped.is_empty());
            }

            #[test]
            fn admins_round_trip(p in pairs(&["username", "passwordHash", "createdAt", "updatedAt", "lastLogin"])) {
                if let Some(a) = import_admin(&p) {
                    prop_assert_eq!(import_admin(&export_admin(&a)), Some(a));
                }
            }

            #[test]
            fn request_records_round_trip(
                fields in prop::collection::vec(
                    (prop_oneof![4 => prop::sample::select(RECORD_FIELDS).prop_map(str::to_owned), 1 => "[a-z]{1,6}"], json_value()),
                    0..16,
                ),
                junk in any::<String>(),
            ) {
                let _ = import_record("k1", &junk);
                let text = Value::Object(fields.into_iter().collect()).to_string();
                let (r, _) = import_record("k1", &text).unwrap();
                let (again, dropped) = import_record("k1", &export_record(&r, "claude-console")).unwrap();
                prop_assert_eq!(again, r);
                prop_assert!(dropped.is_empty());
            }

            #[test]
            fn sticky_keys_round_trip(
                hash in "[0-9a-f]{32}",
                id in "[A-Za-z0-9-]{1,40}",
                kind in 0usize..5,
            ) {
                // The session keys crs makes go to v1 and back.
                let key = match kind {
                    0 => format!("h:{hash}"),
                    1 => format!("uid:{hash}"),
                    2 => format!("hdr:{id}"),
                    3 => format!("pck:{id}"),
                    _ => format!("v1o:{id}"),
                };
                prop_assert_eq!(sticky_key(&sticky_name(&key)), Some(key));
                // And v1's names (content hashes and session ids) come back as they were.
                for name in [format!("{CLAUDE_STICKY}{hash}"), format!("{CLAUDE_STICKY}{id}"), format!("{OPENAI_STICKY}{id}")] {
                    prop_assert_eq!(sticky_name(&sticky_key(&name).unwrap()), name);
                }
            }
        }
    }
}

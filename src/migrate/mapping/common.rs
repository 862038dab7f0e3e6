//! Shared pieces of the mappings: v1's account families and the field readers and writers.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, SecondsFormat, SubsecRound, Utc};
use serde_json::{Map, Value};

use crate::model::{Micros, Platform, dollars_to_micros, micros_to_dollars};

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
        platform: Some(Platform::OpenAI),
        json: false,
        salt: "openai-account-salt",
        index: "openai:account:index",
        shared_set: Some("shared_openai_accounts"),
        v1_type: "openai",
        label: "openai (Codex OAuth)",
    },
    Family {
        prefix: "gemini_account:",
        platform: Some(Platform::Gemini),
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

/// v1's dates are JavaScript dates: milliseconds, which is also what `iso` writes back. A date
/// RFC 3339 cannot write (before year 0 or after 9999) is no date.
fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if s.is_empty() || s == "null" {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok().and_then(from_millis);
    }
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc).trunc_subsecs(3))
        .filter(writable)
}

fn from_millis(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).filter(writable)
}

fn writable(t: &DateTime<Utc>) -> bool {
    (0..=9999).contains(&t.year())
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
            Value::Number(n) => n.as_i64().and_then(from_millis),
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::from),
            "[ 0-9.eE+-]{0,12}".prop_map(Value::from),
            "\\[[\"a-z, 0-9]{0,12}\\]?".prop_map(Value::from),
            "\\{[\"a-z:, 0-9]{0,12}\\}?".prop_map(Value::from),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn every_reader_takes_any_value(v in value()) {
            let readers: [fn(&mut Fields); 9] = [
                |f| {
                    let _ = f.s("k");
                },
                |f| {
                    let _ = f.b("k", true);
                },
                |f| {
                    let _ = f.u("k");
                },
                |f| {
                    let _ = f.i("k");
                },
                |f| {
                    let _ = f.dollars("k").map(|m| assert!(m >= 0));
                },
                |f| {
                    let _ = f.date("k").map(|t| iso(&Some(t)));
                },
                |f| {
                    let _ = f.list("k");
                },
                |f| {
                    let _ = f.object("k");
                },
                |f| {
                    let _ = f.str_or("k", "d");
                },
            ];
            for read in readers {
                let mut f = Fields([("k".to_owned(), v.clone()), ("other".to_owned(), json!(1))].into_iter().collect());
                read(&mut f);
                // The field is consumed; the rest stays for `extra`.
                prop_assert!(!f.0.contains_key("k"));
                prop_assert!(f.0.contains_key("other"));
            }
        }

        #[test]
        fn written_fields_read_back(
            s in any::<String>(),
            b in any::<bool>(),
            n in any::<u64>(),
            m in 0i64..1_000_000_000_000_000,
            ms in 0i64..253_402_300_799_999,
            list in prop::collection::vec(any::<String>(), 0..4),
        ) {
            let mut o = Out::default();
            o.s("s", s.clone());
            o.b("b", b);
            o.n("n", n);
            o.dollars("d", m);
            let t = DateTime::from_timestamp_millis(ms);
            o.date("t", &t);
            o.s("l", json!(list).to_string());
            let mut f = Fields::from_pairs(&o.into_pairs());
            prop_assert_eq!(f.s("s"), Some(s));
            prop_assert_eq!(f.b("b", !b), b);
            prop_assert_eq!(f.u("n"), Some(n));
            prop_assert_eq!(f.dollars("d"), Some(m));
            prop_assert_eq!(f.date("t"), t);
            prop_assert_eq!(f.list("l"), Some(list));
        }
    }
}

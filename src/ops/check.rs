//! `crs check`: the store opens, every record parses, every secret decrypts.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{DataDir, load_secrets};
use crate::crypto::Secrets;
use crate::model::{Account, AccountGroup, Admin, ApiKey, StickyEntry};
use crate::store::{Counters, RequestRecord};

/// What `crs check` found.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    pub data_dir: String,
    pub schema: u32,
    /// Rows read per table.
    pub tables: BTreeMap<String, u64>,
    /// Encrypted values that decrypted.
    pub secrets: u64,
    /// Every row that does not parse and every secret that does not decrypt.
    pub problems: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn render(&self) -> String {
        let mut out = format!(
            "data directory {} (store schema {})\n",
            self.data_dir, self.schema
        );
        for (t, n) in &self.tables {
            out += &format!("  {t:<16} {n:>9} rows\n");
        }
        out += &format!("  secrets          {:>9} decrypted\n", self.secrets);
        if self.ok() {
            out += "ok: every record parses and every secret decrypts\n";
        } else {
            for p in &self.problems {
                out += &format!("problem: {p}\n");
            }
            out += &format!("{} problem(s)\n", self.problems.len());
        }
        out
    }
}

fn parses<T: DeserializeOwned>(v: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<T>(v)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether a row of `table` parses as the record that table holds.
fn parse_row(table: &str, v: &[u8]) -> Result<(), String> {
    match table {
        "api_keys" => parses::<ApiKey>(v),
        "accounts" => parses::<Account>(v),
        "admins" => parses::<Admin>(v),
        "account_groups" => parses::<AccountGroup>(v),
        "sticky_sessions" => parses::<StickyEntry>(v),
        "revoked_tokens" => parses::<i64>(v),
        // One record, or several of one commit (store schema 3).
        "records" | "recent_records" => {
            parses::<RequestRecord>(v).or_else(|_| parses::<Vec<RequestRecord>>(v))
        }
        "usage" => Counters::decode(v).map(|_| ()).map_err(|e| e.to_string()),
        "meta" => Ok(()),
        _ => parses::<Value>(v),
    }
}

/// Every `enc1:` string anywhere in a record, with its JSON path.
fn encrypted(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) if s.starts_with(crate::crypto::ENC_PREFIX) => {
            out.push((path.to_owned(), s.clone()))
        }
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| encrypted(v, &format!("{path}.{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| encrypted(v, &format!("{path}[{i}]"), out)),
        _ => {}
    }
}

fn check_secrets(secrets: &Secrets, table: &str, key: &str, v: &[u8], r: &mut CheckReport) {
    let Ok(value) = serde_json::from_slice::<Value>(v) else {
        return;
    };
    let mut found = Vec::new();
    encrypted(&value, "", &mut found);
    for (path, enc) in found {
        match secrets.decrypt(&enc) {
            Ok(_) => r.secrets += 1,
            Err(e) => r.problems.push(format!("{table}/{key}{path}: {e}")),
        }
    }
}

/// Read the whole store of an opened data directory.
pub fn check(d: &DataDir) -> Result<CheckReport> {
    let mut r = CheckReport {
        data_dir: d.config.data_dir.display().to_string(),
        schema: d.store.schema_version()?,
        ..Default::default()
    };
    let secrets = match load_secrets(&d.config) {
        Ok(s) => Some(s),
        Err(e) => {
            r.problems.push(format!("secrets: {e:#}"));
            None
        }
    };
    d.store.for_each_row(|table, key, v| {
        *r.tables.entry(table.to_owned()).or_default() += 1;
        if let Err(e) = parse_row(table, v) {
            r.problems.push(format!("{table}/{key}: {e}"));
        }
        if let Some(s) = &secrets
            && table != "usage"
        {
            check_secrets(s, table, key, v, &mut r);
        }
    })?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_parsed_as_their_table_holds_them() {
        assert!(parse_row("api_keys", br#"{"id":"k","name":"n"}"#).is_ok());
        assert!(parse_row("api_keys", br#"{"id":5}"#).is_err());
        assert!(parse_row("revoked_tokens", b"12").is_ok());
        assert!(parse_row("usage", b"nonsense").is_err());
        assert!(parse_row("settings", b"{").is_err());
        // A request record row holds one record or, since store schema 3, several.
        let one = br#"{"keyId":"k","model":"m","status":200}"#;
        assert!(parse_row("records", one).is_ok());
        let many = br#"[{"keyId":"k","status":200},
{"keyId":"k","status":529}]"#;
        assert!(parse_row("recent_records", many).is_ok());
        assert!(parse_row("records", br#"[{"keyId":5}]"#).is_err());
    }

    #[test]
    fn every_encrypted_string_is_found() {
        let v: Value = serde_json::from_str(
            r#"{"apiKey":"enc1:a","proxy":{"password":"enc1:b"},"x":["enc1:c","plain"]}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        encrypted(&v, "", &mut out);
        let paths: Vec<&str> = out.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, [".apiKey", ".proxy.password", ".x[0]"]);
    }
}

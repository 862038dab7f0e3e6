//! Records an operator changes or lists offline: admin passwords, API keys, accounts.

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{DataDir, EXIT_FAILURE, EXIT_NOT_FOUND, fail};
use crate::crypto::{hash_password, random_hex};
use crate::model::{Account, Admin, ApiKey};
use crate::store::Table;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PasswordReset {
    pub username: String,
    /// Set when the password was generated (shown once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    pub created: bool,
}

/// Set an admin's password (and end every session of theirs). Without `username`, the only
/// admin (or `admin`, created when there is none). Without `password`, a random one.
pub fn reset_password(
    d: &DataDir,
    username: Option<&str>,
    password: Option<String>,
) -> Result<PasswordReset> {
    if let Some(p) = &password
        && p.chars().count() < 8
    {
        return Err(fail(
            EXIT_FAILURE,
            "the password must be at least 8 characters",
        ));
    }
    let admins: Vec<Admin> = d.store.load_all(Table::Admins)?;
    let username = match (username, admins.as_slice()) {
        (Some(u), _) => u.to_owned(),
        (None, [only]) => only.username.clone(),
        (None, []) => "admin".to_owned(),
        (None, _) => {
            let names: Vec<&str> = admins.iter().map(|a| a.username.as_str()).collect();
            return Err(fail(
                EXIT_FAILURE,
                format!(
                    "there are several admins ({}); choose one with --username",
                    names.join(", ")
                ),
            ));
        }
    };
    let existing = admins.into_iter().find(|a| a.username == username);
    if existing.is_none() && !d.store.load_raw(Table::Admins)?.is_empty() {
        return Err(fail(EXIT_NOT_FOUND, format!("no admin named {username:?}")));
    }
    let created = existing.is_none();
    let now = Utc::now();
    let mut admin = existing.unwrap_or_else(|| Admin {
        username: username.clone(),
        created_at: Some(now),
        ..Default::default()
    });
    let generated = password.is_none();
    let password = password.unwrap_or_else(|| random_hex(12));
    admin.password_hash = hash_password(&password);
    admin.token_version = admin.token_version.wrapping_add(1);
    admin.updated_at = Some(now);
    d.store.put(Table::Admins, &username, &admin)?;
    Ok(PasswordReset {
        username,
        password: generated.then_some(password),
        created,
    })
}

/// One API key as the CLI lists it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub key_preview: String,
    pub is_active: bool,
    pub is_deleted: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// The plaintext key: only in the answer of `keys create`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl KeyRow {
    fn of(k: &ApiKey) -> Self {
        KeyRow {
            id: k.id.clone(),
            name: k.name.clone(),
            key_preview: k.key_preview.clone(),
            is_active: k.is_active,
            is_deleted: k.is_deleted,
            created_at: k.created_at,
            last_used_at: k.last_used_at,
            api_key: None,
        }
    }

    fn state(&self) -> &'static str {
        match (self.is_deleted, self.is_active) {
            (true, _) => "deleted",
            (false, true) => "active",
            (false, false) => "disabled",
        }
    }
}

/// Every API key, oldest first; deleted ones only with `all`.
pub fn list_keys(d: &DataDir, all: bool) -> Result<Vec<KeyRow>> {
    let mut keys: Vec<ApiKey> = d.store.load_all(Table::ApiKeys)?;
    keys.retain(|k| all || !k.is_deleted);
    keys.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.name.cmp(&b.name)));
    Ok(keys.iter().map(KeyRow::of).collect())
}

pub fn render_keys(rows: &Vec<KeyRow>) -> String {
    let mut out = format!(
        "{:<36}  {:<24}  {:<12}  {:<8}  {}\n",
        "ID", "NAME", "PREVIEW", "STATE", "LAST USED"
    );
    for r in rows {
        out += &format!(
            "{:<36}  {:<24}  {:<12}  {:<8}  {}\n",
            r.id,
            r.name,
            r.key_preview,
            r.state(),
            r.last_used_at
                .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
    out
}

/// Create an API key with no limits; the plaintext is in the answer, once.
pub fn create_key(d: &DataDir, name: &str) -> Result<KeyRow> {
    if name.trim().is_empty() || name.chars().count() > 100 {
        return Err(fail(EXIT_FAILURE, "a key name is 1 to 100 characters"));
    }
    let secrets = d.secrets()?;
    let prefix = &d.config.api_key_prefix;
    let plaintext = crate::auth::generate_key(prefix);
    let mut k = ApiKey::new(uuid::Uuid::new_v4().to_string());
    k.name = name.trim().to_owned();
    k.key_hash = secrets.hash_api_key(&plaintext);
    k.key_preview = plaintext.chars().take(prefix.len() + 6).collect();
    let now = Utc::now();
    k.created_at = Some(now);
    k.updated_at = Some(now);
    k.created_by = "cli".into();
    d.store.put(Table::ApiKeys, &k.id, &k)?;
    let mut row = KeyRow::of(&k);
    row.api_key = Some(plaintext);
    Ok(row)
}

/// Disable a key, found by id or by its (unique) name.
pub fn disable_key(d: &DataDir, id_or_name: &str) -> Result<KeyRow> {
    let keys: Vec<ApiKey> = d.store.load_all(Table::ApiKeys)?;
    let by_name: Vec<&ApiKey> = keys
        .iter()
        .filter(|k| k.name == id_or_name && !k.is_deleted)
        .collect();
    let key = match keys.iter().find(|k| k.id == id_or_name) {
        Some(k) => k,
        None => match by_name.as_slice() {
            [k] => k,
            [] => return Err(fail(EXIT_NOT_FOUND, format!("no API key {id_or_name:?}"))),
            _ => {
                return Err(fail(
                    EXIT_FAILURE,
                    format!("several keys are named {id_or_name:?}; give the id"),
                ));
            }
        },
    };
    let mut k = key.clone();
    k.is_active = false;
    k.updated_at = Some(Utc::now());
    d.store.put(Table::ApiKeys, &k.id, &k)?;
    Ok(KeyRow::of(&k))
}

/// One upstream account as the CLI lists it (no secrets).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRow {
    pub id: String,
    pub platform: String,
    pub name: String,
    pub status: String,
    pub is_active: bool,
    pub schedulable: bool,
    pub priority: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error_message: String,
}

pub fn list_accounts(d: &DataDir) -> Result<Vec<AccountRow>> {
    let mut accounts: Vec<Account> = d.store.load_all(Table::Accounts)?;
    accounts.sort_by(|a, b| {
        (a.platform.spec().name, a.priority, &a.name).cmp(&(
            b.platform.spec().name,
            b.priority,
            &b.name,
        ))
    });
    Ok(accounts
        .iter()
        .map(|a| AccountRow {
            id: a.id.clone(),
            platform: a.platform.spec().name.to_owned(),
            name: a.name.clone(),
            status: a.status.as_str().to_owned(),
            is_active: a.is_active,
            schedulable: a.schedulable,
            priority: a.priority,
            error_message: a.error_message.clone(),
        })
        .collect())
}

pub fn render_accounts(rows: &Vec<AccountRow>) -> String {
    let mut out = format!(
        "{:<36}  {:<16}  {:<20}  {:<14}  {:<5}  {}\n",
        "ID", "PLATFORM", "NAME", "STATUS", "PRIO", "SCHEDULED"
    );
    for r in rows {
        out += &format!(
            "{:<36}  {:<16}  {:<20}  {:<14}  {:<5}  {}\n",
            r.id,
            r.platform,
            r.name,
            r.status,
            r.priority,
            if r.is_active && r.schedulable {
                "yes"
            } else {
                "no"
            }
        );
    }
    out
}

//! Admin accounts and sessions. Sessions are HS256 tokens signed with the data directory's
//! session key; each carries the admin's token version, so a password change ends every
//! session at once.

use anyhow::Result;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use salvo::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::crypto::{hash_password, random_hex};
use crate::model::Admin;
use crate::store::{Store, Table};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
    /// Admin token version at issue time.
    ver: u32,
}

/// The admin username a request was authenticated as (put in the depot by `AdminAuth`).
#[derive(Debug, Clone)]
pub struct AdminUser(pub String);

/// Make sure an admin exists. Returns the generated password when one was made up, so the
/// caller can show it once.
pub fn ensure_admin(store: &Store, config: &Config) -> Result<Option<(String, String)>> {
    if store.count(Table::Admins)? > 0 {
        return Ok(None);
    }
    let username = config
        .admin_username
        .clone()
        .unwrap_or_else(|| "admin".into());
    let (password, generated) = match &config.admin_password {
        Some(p) => (p.clone(), false),
        None => (random_hex(12), true),
    };
    let now = Utc::now();
    let admin = Admin {
        username: username.clone(),
        password_hash: hash_password(&password),
        created_at: Some(now),
        updated_at: Some(now),
        ..Default::default()
    };
    store.put(Table::Admins, &username, &admin)?;
    tracing::info!(username = %username, "admin account created");
    Ok(generated.then_some((username, password)))
}

/// A session token for `admin`, valid for `ttl_secs`, signed with the data directory's session key.
pub fn issue_token(session_key: &[u8], ttl_secs: u64, admin: &Admin) -> Result<String> {
    let now = Utc::now().timestamp();
    let claims = Claims {
        sub: admin.username.clone(),
        iat: now,
        exp: now + ttl_secs as i64,
        ver: admin.token_version,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(session_key),
    )?)
}

/// The admin a session token belongs to, if it is valid and not revoked by a password change.
/// Reads the store: call off the async workers.
pub fn verify_token(store: &Store, session_key: &[u8], token: &str) -> Option<Admin> {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 5;
    let data =
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(session_key), &v).ok()?;
    let admin: Admin = store.get(Table::Admins, &data.claims.sub).ok()??;
    (admin.token_version == data.claims.ver).then_some(admin)
}

pub fn admin_token(req: &Request) -> Option<String> {
    if let Some(a) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        && let Some(t) = a.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_owned());
    }
    req.headers()
        .get("x-admin-token")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
}

/// An argon2 hash of a random string, checked against when the username is unknown.
pub const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$yOnB4fmG3ry6PW6BMC6pDu7Mko7ERLQAr8ZeYd9vWvQ";

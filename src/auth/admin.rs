//! Admin accounts and sessions. Sessions are HS256 tokens signed with the data directory's
//! session key; each carries the admin's token version, so a password change ends every
//! session at once, and an id (`jti`), so a sign-out ends one session: the id is kept in the
//! store's `revoked_tokens` table until the token would have expired anyway.

use anyhow::Result;
use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use salvo::prelude::*;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::crypto::{hash_password, is_bcrypt, random_hex, verify_password};
use crate::model::Admin;
use crate::store::{Store, Table};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
    /// Admin token version at issue time.
    ver: u32,
    /// The session's id, for revocation. Tokens without one (issued before sign-out revoked
    /// sessions) do not decode, so they are refused.
    jti: String,
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
        jti: random_hex(16),
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(session_key),
    )?)
}

/// The claims of a token signed with `session_key` that has not expired.
fn decode(session_key: &[u8], token: &str) -> Option<Claims> {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 5;
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(session_key), &v)
        .ok()
        .map(|d| d.claims)
}

/// The admin a session token belongs to, if it is valid, not signed out and not revoked by a
/// password change. Reads the store: call off the async workers.
pub fn verify_token(store: &Store, session_key: &[u8], token: &str) -> Option<Admin> {
    let claims = decode(session_key, token)?;
    if claims.jti.is_empty()
        || store
            .get::<i64>(Table::RevokedTokens, &claims.jti)
            .ok()?
            .is_some()
    {
        return None;
    }
    let admin: Admin = store.get(Table::Admins, &claims.sub).ok()??;
    (admin.token_version == claims.ver).then_some(admin)
}

/// End the session of `token` (a sign-out): its id is kept until the token expires, and
/// expired ids are dropped. Returns the admin's name, or `None` for a token that is not ours
/// or already expired (nothing to revoke, nothing written). Writes the store: call off the
/// async workers.
pub fn revoke_token(store: &Store, session_key: &[u8], token: &str) -> Result<Option<String>> {
    let Some(claims) = decode(session_key, token) else {
        return Ok(None);
    };
    if claims.jti.is_empty() {
        return Ok(None);
    }
    store.put(Table::RevokedTokens, &claims.jti, &claims.exp)?;
    prune_revoked(store, Utc::now().timestamp())?;
    Ok(Some(claims.sub))
}

/// Drop revoked ids whose tokens have expired (with the verifier's leeway): they no longer
/// verify anyway. Returns how many went.
pub fn prune_revoked(store: &Store, now: i64) -> Result<u64> {
    store.delete_where(Table::RevokedTokens, |v| {
        match serde_json::from_slice::<i64>(v) {
            Ok(exp) => exp + 5 < now,
            Err(_) => true,
        }
    })
}

/// What a password check found.
#[derive(Debug)]
pub enum Credentials {
    /// The password is right; `last_login_at` is updated (and an imported v1 bcrypt hash
    /// replaced by argon2).
    Valid(Admin),
    UnknownUser,
    WrongPassword,
}

/// Check an admin's password: one argon2 verification (against a dummy hash for an unknown
/// name, so names cannot be told apart by timing). Blocking and memory-hungry: run it through
/// `auth::login::Logins`.
pub fn check_credentials(store: &Store, username: &str, password: &str) -> Result<Credentials> {
    let Some(mut admin) = store.get::<Admin>(Table::Admins, username)? else {
        let _ = verify_password(password, DUMMY_HASH);
        return Ok(Credentials::UnknownUser);
    };
    if !verify_password(password, &admin.password_hash) {
        return Ok(Credentials::WrongPassword);
    }
    if is_bcrypt(&admin.password_hash) {
        // An imported v1 hash: accepted once, replaced by argon2 now.
        admin.password_hash = hash_password(password);
        tracing::info!(username = %admin.username, "imported v1 admin password rehashed with argon2");
    }
    admin.last_login_at = Some(Utc::now());
    store.put(Table::Admins, &admin.username, &admin)?;
    Ok(Credentials::Valid(admin))
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

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a-session-key-for-tests-only-32b";

    #[test]
    fn a_revoked_token_fails_and_expired_revocations_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.redb")).unwrap();
        let admin = Admin {
            username: "root".into(),
            ..Default::default()
        };
        store.put(Table::Admins, "root", &admin).unwrap();
        let token = issue_token(KEY, 3600, &admin).unwrap();
        let other = issue_token(KEY, 3600, &admin).unwrap();
        assert!(verify_token(&store, KEY, &token).is_some());

        // A token signed with another key is nothing to revoke: nothing is written.
        let foreign = issue_token(b"another-key-another-key-another!", 3600, &admin).unwrap();
        assert_eq!(revoke_token(&store, KEY, &foreign).unwrap(), None);
        assert_eq!(store.count(Table::RevokedTokens).unwrap(), 0);

        assert_eq!(
            revoke_token(&store, KEY, &token).unwrap().as_deref(),
            Some("root")
        );
        assert!(verify_token(&store, KEY, &token).is_none());
        assert!(verify_token(&store, KEY, &other).is_some());

        // Ids of tokens that expired anyway go; live ones stay.
        let now = Utc::now().timestamp();
        store
            .put(Table::RevokedTokens, "expired", &(now - 60))
            .unwrap();
        assert_eq!(prune_revoked(&store, now).unwrap(), 1);
        assert_eq!(store.count(Table::RevokedTokens).unwrap(), 1);
        assert!(verify_token(&store, KEY, &token).is_none());
    }
}

//! Authentication: client API keys (v1's scheme) and admin sessions (signed tokens).

pub mod admin;

use std::sync::Arc;

use chrono::Utc;
use salvo::http::StatusCode;
use salvo::prelude::*;

use crate::limits::KeyEntry;
use crate::state::AppState;
use crate::web::v1_error;

/// Where clients put their key, in v1's order of preference.
pub fn extract_key(req: &Request) -> Option<&str> {
    let h = req.headers();
    let get = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    if let Some(k) = get("x-api-key") {
        return Some(k);
    }
    if let Some(k) = get("x-goog-api-key") {
        return Some(k);
    }
    if let Some(a) = get("authorization") {
        let k = a
            .strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("bearer "))
            .unwrap_or(a)
            .trim();
        if !k.is_empty() {
            return Some(k);
        }
    }
    if let Some(k) = get("api-key") {
        return Some(k);
    }
    // Gemini clients may put the key in the query string.
    req.uri().query().and_then(|q| {
        q.split('&')
            .find_map(|p| p.strip_prefix("key="))
            .filter(|k| !k.is_empty())
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    BadFormat,
    NotFound,
    Disabled,
    Expired,
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        StatusCode::UNAUTHORIZED
    }

    /// v1's (error, message) pair.
    pub fn v1_parts(&self) -> (&'static str, &'static str) {
        match self {
            AuthError::Missing => (
                "Missing API key",
                "Please provide an API key in the x-api-key, x-goog-api-key, or Authorization header",
            ),
            AuthError::BadFormat => ("Invalid API key", "Invalid API key format"),
            AuthError::NotFound => ("Invalid API key", "API key not found"),
            AuthError::Disabled => ("Invalid API key", "API key is disabled"),
            AuthError::Expired => ("Invalid API key", "API key has expired"),
        }
    }

    /// v1's bodies, byte for byte in meaning.
    pub fn write(&self, res: &mut Response) {
        let (title, message) = self.v1_parts();
        v1_error(res, self.status(), title, message);
    }
}

/// Find the key a request carries. In memory: one sha256 and one hash-map lookup.
pub fn authenticate(state: &AppState, req: &Request) -> Result<Arc<KeyEntry>, AuthError> {
    let key = extract_key(req).ok_or(AuthError::Missing)?;
    if !key.starts_with(state.config.api_key_prefix.as_str()) || key.len() < 10 || key.len() > 512 {
        return Err(AuthError::BadFormat);
    }
    let hash = state.secrets.hash_api_key_raw(key);
    let keys = state.keys.load();
    let e = keys.by_hash.get(&hash).ok_or(AuthError::NotFound)?;
    if !e.rec.is_active {
        return Err(AuthError::Disabled);
    }
    if let Some(exp) = e.expires_at()
        && exp <= Utc::now()
    {
        return Err(AuthError::Expired);
    }
    Ok(e.clone())
}

/// A new plaintext key: prefix + 64 lowercase hex (32 random bytes), as v1.
pub fn generate_key(prefix: &str) -> String {
    format!("{prefix}{}", crate::crypto::random_hex(32))
}

//! Authentication: admin sessions (signed tokens), admin login defences, new client keys.
//! Client keys are checked by `limits::keys` (in memory, with the rest of a key's policy).

pub mod admin;
pub mod login;

pub use crate::limits::{AuthError, authenticate, extract_key};

/// A new plaintext key: prefix + 64 lowercase hex (32 random bytes), as v1.
pub fn generate_key(prefix: &str) -> String {
    format!("{prefix}{}", crate::crypto::random_hex(32))
}

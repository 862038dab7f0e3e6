//! Droid API-key pools (v1 src/services/droidRelayService.js `_selectApiKey` and
//! `_handleUpstreamClientError`): a request takes one of the account's usable keys, the one
//! its session used before while that key is usable, else one at random; a key the upstream
//! refuses is marked `error` (with the status as its `errorMessage`, as v1 marks it) and leaves
//! the rotation, and an account left without a usable key goes out of rotation (`error`).
//!
//! v1 marks a key on every 4xx, so a client's malformed request (400) or a rate limit (429)
//! empties a pool; crs marks it only when the upstream refuses the key itself (`fatal`), and
//! leaves the other statuses to the account's cooldown rules.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{Result, bail};
use chrono::Utc;
use parking_lot::Mutex;

use super::{AccountRt, Accounts};
use crate::crypto::Secret;
use crate::model::AccountStatus;

/// How long a session keeps its key (v1 keeps the mapping as long as a sticky session).
const STICKY_MS: i64 = 3_600_000;
/// Sessions remembered per account before expired ones are swept.
const STICKY_SWEEP_AT: usize = 4096;

/// Session -> (key id, until unix ms), per account (in `AccountRuntime`), and each key's use
/// since the start (requests, last use in unix ms): v1 writes both to the key's entry on every
/// request; crs keeps them in memory, off the store, and the admin view adds them.
#[derive(Default, Debug)]
pub struct Sticky(
    Mutex<HashMap<String, (String, i64)>>,
    Mutex<HashMap<String, (u64, i64)>>,
);

impl Sticky {
    fn get(&self, session: &str, now: i64) -> Option<String> {
        let m = self.0.lock();
        m.get(session)
            .filter(|(_, until)| *until > now)
            .map(|(k, _)| k.clone())
    }

    fn set(&self, session: &str, key: &str, now: i64) {
        let mut m = self.0.lock();
        if m.len() >= STICKY_SWEEP_AT {
            m.retain(|_, (_, until)| *until > now);
        }
        if m.len() < STICKY_SWEEP_AT * 2 {
            // A session that keeps its key (the usual case) only moves its expiry.
            match m.get_mut(session) {
                Some((k, until)) if k == key => *until = now + STICKY_MS,
                _ => {
                    m.insert(session.to_owned(), (key.to_owned(), now + STICKY_MS));
                }
            }
        }
    }

    fn forget_key(&self, key: &str) {
        self.0.lock().retain(|_, (k, _)| k != key);
    }

    fn used(&self, key: &str, now: i64) {
        let mut m = self.1.lock();
        match m.get_mut(key) {
            Some(e) => *e = (e.0 + 1, now),
            None => {
                m.insert(key.to_owned(), (1, now));
            }
        }
    }

    /// Requests `key` took since the start, and when it was last used (unix ms).
    pub fn usage(&self, key: &str) -> (u64, i64) {
        self.1.lock().get(key).copied().unwrap_or_default()
    }
}

/// Statuses with which the upstream refuses the key itself: invalid (401), out of credit
/// (402), forbidden (403).
pub fn fatal(status: u16) -> bool {
    matches!(status, 401..=403)
}

/// The key for one attempt on `acc`: `None` for accounts without a pool (or a pool account
/// whose only key is the single `apiKey` of an older record); an error when the pool has no
/// usable key.
pub fn pick(
    accounts: &Accounts,
    acc: &AccountRt,
    session: Option<&str>,
) -> Result<Option<(String, Secret)>> {
    if !acc.rec.uses_key_pool() {
        return Ok(None);
    }
    let usable: Vec<_> = acc.rec.api_keys.iter().filter(|k| k.usable()).collect();
    if usable.is_empty() {
        if !acc.credential.secret.0.is_empty() {
            return Ok(None);
        }
        bail!("the Droid account has no usable API key");
    }
    let now = Utc::now().timestamp_millis();
    let sticky = session.and_then(|s| acc.rt.pool_sticky.get(s, now));
    let chosen = sticky
        .and_then(|id| usable.iter().find(|k| k.id == id).copied())
        .unwrap_or_else(|| usable[rand::random_range(0..usable.len())]);
    if let Some(s) = session {
        acc.rt.pool_sticky.set(s, &chosen.id, now);
    }
    acc.rt.pool_sticky.used(&chosen.id, now);
    let plain = accounts
        .secrets()
        .decrypt(&chosen.key)
        .map_err(|e| anyhow::anyhow!("decrypting a pool key: {e}"))?;
    Ok(Some((chosen.id.clone(), Secret(plain))))
}

/// The upstream refused pool key `key_id` of `acc` with `status`: mark it `error` and, when
/// no usable key is left, take the account out of rotation. Returns the usable keys left.
pub async fn reject(accounts: &Arc<Accounts>, acc: &AccountRt, key_id: &str, status: u16) -> usize {
    acc.rt.pool_sticky.forget_key(key_id);
    let kid = key_id.to_owned();
    let r = accounts
        .update(&acc.rec.id, move |a| {
            let Some(k) = a.api_keys.iter_mut().find(|k| k.id == kid) else {
                return Ok(false);
            };
            k.status = "error".into();
            k.error_message = status.to_string();
            if !a.api_keys.iter().any(|k| k.usable()) {
                a.status = AccountStatus::Error;
                a.error_message = format!("upstream answered {status}: every API key failed");
            }
            Ok(true)
        })
        .await;
    match r {
        Ok(Some(a)) => {
            let left = a.api_keys.iter().filter(|k| k.usable()).count();
            tracing::warn!(account_id = %acc.rec.id, key_id, status, left, "upstream refused a Droid pool key; it leaves the rotation");
            if left == 0 {
                tracing::error!(account_id = %acc.rec.id, account = %acc.rec.name, "ALERT: every API key of the Droid account failed; account taken out of rotation");
            }
            left
        }
        Ok(None) => 0,
        Err(e) => {
            tracing::error!(account_id = %acc.rec.id, error = %e, "recording a failed pool key failed");
            0
        }
    }
}

/// Does the account have a credential to send? (A pool account with no usable key does not.)
pub fn has_credential(acc: &AccountRt) -> bool {
    !acc.rec.uses_key_pool()
        || !acc.credential.secret.0.is_empty()
        || acc.rec.api_keys.iter().any(|k| k.usable())
}

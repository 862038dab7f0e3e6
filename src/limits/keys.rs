//! API keys in memory: the index the request path authenticates against, each key's runtime
//! state (concurrency gate, meters, activation), and the one write path for key records
//! (`Keys::update`: admin lock, store write, snapshot swap).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, OnceLock};

use anyhow::Result;
use arc_swap::ArcSwap;
use chrono::{DateTime, Duration, Utc};
use parking_lot::Mutex;
use salvo::http::StatusCode;
use salvo::prelude::*;

use super::{Gate, Meter};
use crate::crypto::Secrets;
use crate::model::{ActivationUnit, ApiKey, ExpirationMode};
use crate::store::{Store, Table};
use crate::usage::Clock;
use crate::web::v1_error;

/// In-memory state of one key that outlives admin edits of its record.
#[derive(Debug)]
pub struct KeyRuntime {
    pub gate: ArcSwap<Gate>,
    pub meter: Mutex<Meter>,
    /// Set on the first admitted request of an activation-mode key.
    pub activated_at: OnceLock<DateTime<Utc>>,
    pub last_used_ms: AtomicI64,
    /// The meter holds history from the store (not only what this process saw).
    pub restored: AtomicBool,
}

impl KeyRuntime {
    pub fn new(k: &ApiKey) -> Self {
        KeyRuntime {
            gate: ArcSwap::from_pointee(gate_for(k)),
            meter: Mutex::new(Meter::default()),
            activated_at: OnceLock::new(),
            last_used_ms: AtomicI64::new(k.last_used_at.map(|t| t.timestamp_millis()).unwrap_or(0)),
            restored: AtomicBool::new(false),
        }
    }

    /// Adopt a changed record: a new gate only when the concurrency settings changed.
    pub fn update(&self, k: &ApiKey) {
        let g = gate_for(k);
        if !self.gate.load().same_settings(&g) {
            self.gate.store(Arc::new(g));
        }
    }

    pub fn in_flight(&self) -> u32 {
        self.gate.load().in_use()
    }
}

fn gate_for(k: &ApiKey) -> Gate {
    Gate::new(
        k.concurrency_limit,
        k.concurrency_queue_enabled,
        k.concurrency_queue_max,
        k.concurrency_queue_timeout_ms,
    )
}

/// A key record and its runtime state.
#[derive(Debug)]
pub struct KeyEntry {
    pub rec: ApiKey,
    pub rt: Arc<KeyRuntime>,
}

impl KeyEntry {
    /// When the key stops working: the fixed date, or activation + duration.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        let k = &self.rec;
        if k.expiration_mode == ExpirationMode::Activation {
            let start = k
                .activated_at
                .or_else(|| self.rt.activated_at.get().copied())?;
            let d = if k.activation_unit == ActivationUnit::Hours {
                Duration::hours(k.activation_days as i64)
            } else {
                Duration::days(k.activation_days as i64)
            };
            return Some(k.expires_at.unwrap_or(start + d).min(start + d));
        }
        k.expires_at
    }

    pub fn needs_cost_history(&self) -> bool {
        let k = &self.rec;
        k.daily_cost_limit_micros > 0
            || k.total_cost_limit_micros > 0
            || k.weekly_opus_cost_limit_micros > 0
            || k.five_hour_cost_limit_micros > 0
            || k.rate_limit_cost_micros > 0
    }
}

/// API keys by hash. Deleted keys are kept out of `by_hash`, so they never authenticate.
#[derive(Default)]
pub struct KeyIndex {
    pub by_hash: HashMap<[u8; 32], Arc<KeyEntry>>,
    pub by_id: HashMap<String, Arc<KeyEntry>>,
}

impl KeyIndex {
    /// Index `keys`, carrying each key's runtime state (slots, meters) over from `old`.
    pub fn build(keys: Vec<ApiKey>, old: &KeyIndex) -> Self {
        let mut idx = KeyIndex::default();
        for k in keys {
            let rt = match old.by_id.get(&k.id) {
                Some(prev) => {
                    prev.rt.update(&k);
                    prev.rt.clone()
                }
                None => Arc::new(KeyRuntime::new(&k)),
            };
            let e = Arc::new(KeyEntry { rec: k, rt });
            if !e.rec.is_deleted {
                let mut h = [0u8; 32];
                if hex::decode_to_slice(&e.rec.key_hash, &mut h).is_ok() {
                    idx.by_hash.insert(h, e.clone());
                } else {
                    tracing::warn!(key_id = %e.rec.id, "stored key hash is not 64 hex digits; key cannot authenticate");
                }
            }
            idx.by_id.insert(e.rec.id.clone(), e);
        }
        idx
    }
}

/// Load the keys from the store into an index (runtime state carried over from `old`), with
/// the cost meters of keys that need them rebuilt from the usage buckets, on up to two threads.
fn load_key_index(store: &Store, clock: &Clock, old: &KeyIndex) -> Result<KeyIndex> {
    let keys: Vec<ApiKey> = store.load_all(Table::ApiKeys)?;
    let idx = KeyIndex::build(keys, old);
    let now = chrono::Utc::now();
    let todo: Vec<&Arc<KeyEntry>> = idx
        .by_id
        .values()
        .filter(|e| {
            e.needs_cost_history() && !e.rt.restored.load(std::sync::atomic::Ordering::Acquire)
        })
        .collect();
    let restore = |part: &[&Arc<KeyEntry>]| {
        for e in part {
            match super::restore_meter(store, clock, &e.rec, now) {
                Ok(m) => {
                    *e.rt.meter.lock() = m;
                    e.rt.restored
                        .store(true, std::sync::atomic::Ordering::Release);
                }
                Err(err) => {
                    tracing::error!(key_id = %e.rec.id, error = %err, "rebuilding cost meter failed")
                }
            }
        }
    };
    if todo.len() < 64 {
        restore(&todo);
    } else {
        let (a, b) = todo.split_at(todo.len() / 2);
        std::thread::scope(|s| {
            s.spawn(|| restore(a));
            restore(b);
        });
    }
    Ok(idx)
}

/// The key snapshot and its write path.
pub struct Keys {
    store: Arc<Store>,
    clock: Clock,
    index: ArcSwap<KeyIndex>,
    /// Serialises read-modify-write cycles of records (shared with the admin API).
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").finish_non_exhaustive()
    }
}

impl Keys {
    /// Load every key from the store (cost meters rebuilt where limits need them).
    pub fn open(
        store: Arc<Store>,
        clock: Clock,
        lock: Arc<tokio::sync::Mutex<()>>,
    ) -> Result<Self> {
        let index = load_key_index(&store, &clock, &KeyIndex::default())?;
        Ok(Keys {
            store,
            clock,
            index: ArcSwap::from_pointee(index),
            lock,
        })
    }

    /// The current snapshot.
    pub fn load(&self) -> arc_swap::Guard<Arc<KeyIndex>> {
        self.index.load()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Rebuild the snapshot from the store and swap it in. Keys that have cost limits get
    /// their meters rebuilt from the usage history the first time they need it.
    pub fn reload(&self) -> Result<()> {
        let idx = load_key_index(&self.store, &self.clock, &self.index.load())?;
        self.index.store(Arc::new(idx));
        Ok(())
    }

    /// Change one key record: under the admin lock, read it, let `f` change it (`f` returns
    /// false for "nothing to do"), write it, swap the snapshot. `None` when there is no such key.
    pub async fn update(
        &self,
        id: &str,
        f: impl FnOnce(&mut ApiKey) -> bool + Send + 'static,
    ) -> Result<Option<ApiKey>> {
        let _g = self.lock.lock().await;
        let store = self.store.clone();
        let id = id.to_owned();
        let rec = crate::web::blocking(move || {
            let Some(mut k) = store.get::<ApiKey>(Table::ApiKeys, &id)? else {
                return Ok(None);
            };
            if !f(&mut k) {
                return Ok(Some((k, false)));
            }
            k.updated_at = Some(Utc::now());
            store.put(Table::ApiKeys, &id, &k)?;
            Ok(Some((k, true)))
        })
        .await?;
        match rec {
            Some((k, true)) => {
                self.reload()?;
                Ok(Some(k))
            }
            Some((k, false)) => Ok(Some(k)),
            None => Ok(None),
        }
    }

    /// Record the first use of an activation-mode key, off the request path.
    pub fn activate(self: &Arc<Self>, id: String, at: DateTime<Utc>) {
        let keys = self.clone();
        tokio::spawn(async move {
            let r = keys
                .update(&id, move |k| {
                    if k.is_activated {
                        return false;
                    }
                    let d = if k.activation_unit == ActivationUnit::Hours {
                        Duration::hours(k.activation_days as i64)
                    } else {
                        Duration::days(k.activation_days as i64)
                    };
                    k.is_activated = true;
                    k.activated_at = Some(at);
                    k.expires_at = Some(at + d);
                    true
                })
                .await;
            match r {
                Ok(Some(k)) => {
                    tracing::info!(key_id = %id, expires_at = ?k.expires_at, "activation-mode key activated")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(key_id = %id, error = %e, "persisting key activation failed")
                }
            }
        });
    }
}

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
pub fn authenticate(
    keys: &KeyIndex,
    secrets: &Secrets,
    prefix: &str,
    req: &Request,
) -> Result<Arc<KeyEntry>, AuthError> {
    let key = extract_key(req).ok_or(AuthError::Missing)?;
    if !key.starts_with(prefix) || key.len() < 10 || key.len() > 512 {
        return Err(AuthError::BadFormat);
    }
    let hash = secrets.hash_api_key_raw(key);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_keys_do_not_authenticate() {
        let mut a = ApiKey::new("a".into());
        a.key_hash = "11".repeat(32);
        let mut b = ApiKey::new("b".into());
        b.key_hash = "22".repeat(32);
        b.is_deleted = true;
        let idx = KeyIndex::build(vec![a, b], &KeyIndex::default());
        assert_eq!(idx.by_hash.len(), 1);
        assert_eq!(idx.by_id.len(), 2);
    }
}

//! Sticky sessions: a session key (from the client's session id, prompt-cache key, or a hash
//! of the conversation's start) maps to the account that served it, so a conversation keeps
//! its prompt cache. In memory, written through to the store by the ledger thread, loaded at
//! start so a restart keeps the affinity.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::usage::Ledger;

pub use crate::model::StickyEntry;

pub struct Sticky {
    cache: moka::sync::Cache<String, StickyEntry>,
    ttl_ms: AtomicI64,
    ledger: Ledger,
}

impl std::fmt::Debug for Sticky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sticky")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

impl Sticky {
    pub fn new(ttl_ms: i64, ledger: Ledger) -> Self {
        Sticky {
            cache: moka::sync::Cache::builder().max_capacity(200_000).build(),
            ttl_ms: AtomicI64::new(ttl_ms.max(60_000)),
            ledger,
        }
    }

    pub fn ttl_ms(&self) -> i64 {
        self.ttl_ms.load(Ordering::Relaxed)
    }

    pub fn set_ttl_ms(&self, ttl: i64) {
        self.ttl_ms.store(ttl.max(60_000), Ordering::Relaxed);
    }

    /// Load persisted entries (expired ones are skipped).
    pub fn restore(
        &self,
        entries: impl IntoIterator<Item = (String, StickyEntry)>,
        now_ms: i64,
    ) -> usize {
        let mut n = 0;
        for (k, e) in entries {
            if e.expires_at > now_ms {
                self.cache.insert(k, e);
                n += 1;
            }
        }
        n
    }

    pub fn get(&self, key: &str, now_ms: i64) -> Option<String> {
        let e = self.cache.get(key)?;
        if e.expires_at <= now_ms {
            self.cache.invalidate(key);
            return None;
        }
        Some(e.account_id)
    }

    /// Map `key` to `account_id` for another TTL (a hit renews the mapping, as v1).
    pub fn set(&self, key: &str, account_id: &str, now_ms: i64) {
        let ttl = self.ttl_ms();
        let e = StickyEntry {
            account_id: account_id.to_owned(),
            expires_at: now_ms + ttl,
        };
        let old = self.cache.get(key);
        // A mapping renewed within the last minute needs no new write.
        if let Some(o) = &old
            && o.account_id == e.account_id
            && o.expires_at - now_ms > ttl - 60_000
        {
            return;
        }
        // Persist only new or moved mappings and renewals past half the TTL: keeps store
        // writes far below one per request.
        let persist = match old {
            Some(old) => old.account_id != e.account_id || old.expires_at - now_ms < ttl / 2,
            None => true,
        };
        self.cache.insert(key.to_owned(), e.clone());
        if persist {
            self.ledger.sticky(key.to_owned(), e);
        }
    }

    pub fn len(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

//! The account snapshot and its one write path. The request path reads `load()`; every change
//! of an account record (admin edits, status marks, OAuth token refreshes) goes through
//! `Accounts::update`: the admin lock, a store write, then a new snapshot swapped in.

use std::sync::Arc;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use chrono::Utc;

use super::oauth::OAuthState;
use super::{AccountPool, AccountRt, AccountRuntime};
use crate::crypto::Secrets;
use crate::model::{Account, AccountGroup, AccountStatus};
use crate::providers::account_type;
use crate::providers::http::{HttpClients, proxy_url};
use crate::store::{Store, Table};
use crate::usage::Clock;

pub struct Accounts {
    store: Arc<Store>,
    pub(crate) secrets: Arc<Secrets>,
    clock: Clock,
    pool: ArcSwap<AccountPool>,
    /// Serialises read-modify-write cycles of records (shared with the admin API).
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Upstream HTTP clients, one per proxy.
    pub http: HttpClients,
    /// OAuth authorisation sessions and per-account refresh single-flight.
    pub oauth: OAuthState,
    /// Status changes are published here (for notifications).
    pub events: crate::events::Events,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts").finish_non_exhaustive()
    }
}

impl Accounts {
    /// Load every account and group from the store.
    pub fn open(
        store: Arc<Store>,
        secrets: Arc<Secrets>,
        clock: Clock,
        http: HttpClients,
        oauth: OAuthState,
        lock: Arc<tokio::sync::Mutex<()>>,
    ) -> Result<Self> {
        let a = Accounts {
            store,
            secrets,
            clock,
            pool: ArcSwap::from_pointee(AccountPool::default()),
            lock,
            http,
            oauth,
            events: Default::default(),
        };
        a.reload()?;
        Ok(a)
    }

    /// The current snapshot.
    pub fn load(&self) -> arc_swap::Guard<Arc<AccountPool>> {
        self.pool.load()
    }

    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// False while the store is handed over to a new process (an upgrade): nothing here can
    /// be written, so nothing that must be (a rotated refresh token) should be started.
    pub fn writable(&self) -> bool {
        self.store.is_open()
    }

    /// Change one account record: under the admin lock, read it, let `f` change it (`f`
    /// returns false for "nothing to do"), write it, swap the snapshot. `None` when there is
    /// no such account.
    pub async fn update(
        &self,
        id: &str,
        f: impl FnOnce(&mut Account) -> Result<bool> + Send + 'static,
    ) -> Result<Option<Account>> {
        let _g = self.lock.lock().await;
        let store = self.store.clone();
        let id = id.to_owned();
        let rec = crate::web::blocking(move || {
            let Some(mut a) = store.get::<Account>(Table::Accounts, &id)? else {
                return Ok(None);
            };
            if !f(&mut a)? {
                return Ok(Some((a, false)));
            }
            a.updated_at = Some(Utc::now());
            store.put(Table::Accounts, &id, &a)?;
            Ok(Some((a, true)))
        })
        .await?;
        match rec {
            Some((a, true)) => {
                self.reload()?;
                Ok(Some(a))
            }
            Some((a, false)) => Ok(Some(a)),
            None => Ok(None),
        }
    }

    /// Record a status change (`unauthorized`, `refresh_failed`, ...) off the request path.
    pub fn mark_status(self: &Arc<Self>, id: String, status: AccountStatus, reason: String) {
        let accounts = self.clone();
        self.events.publish(crate::events::Event::AccountStatus {
            account_id: id.clone(),
            status: status.as_str().to_owned(),
            reason: reason.clone(),
        });
        tokio::spawn(async move {
            let r = accounts
                .update(&id, move |a| {
                    a.status = status;
                    a.error_message = reason;
                    Ok(true)
                })
                .await;
            if let Err(e) = r {
                tracing::error!(account_id = %id, error = %e, "recording an account status change failed");
            }
        });
    }

    /// Rebuild the account snapshot (accounts and groups) from the store and swap it in,
    /// carrying each account's runtime state over.
    pub fn reload(&self) -> Result<()> {
        let recs: Vec<Account> = self.store.load_all(Table::Accounts)?;
        let groups: Vec<AccountGroup> = self.store.load_all(Table::Groups)?;
        let old = self.pool.load();
        let mut pool = AccountPool {
            groups: groups.into_iter().map(|g| (g.id.clone(), g)).collect(),
            ..Default::default()
        };
        let now = chrono::Utc::now();
        for rec in recs {
            let rt = match old.by_id.get(&rec.id) {
                Some(prev) => {
                    prev.rt.update(&rec);
                    prev.rt.clone()
                }
                None => Arc::new(AccountRuntime::new(&rec)),
            };
            if rec.daily_quota_micros > 0
                && !rt.restored.swap(true, std::sync::atomic::Ordering::AcqRel)
            {
                // Today's spend so far, so the daily quota holds across restarts.
                let day = crate::limits::meter::local_day(now, self.clock.offset());
                let p = self.clock.periods(now);
                let spent = self
                    .store
                    .usage_get(&crate::usage::bucket::account(
                        &crate::usage::bucket::day(&p.day),
                        &rec.id,
                    ))?
                    .map(|c| c.real_cost_picos)
                    .unwrap_or(0);
                *rt.daily_cost.lock() = (day, spent);
            }
            let id = rec.id.clone();
            match self.account_runtime(rec, rt) {
                Ok(a) => {
                    let a = Arc::new(a);
                    pool.by_id.insert(a.rec.id.clone(), a.clone());
                    pool.accounts.push(a);
                }
                Err(e) => {
                    tracing::error!(account_id = %id, error = %e, "account cannot be used; left out of scheduling")
                }
            }
        }
        pool.accounts.sort_by(|a, b| {
            (a.rec.priority, &a.rec.name, &a.rec.id).cmp(&(b.rec.priority, &b.rec.name, &b.rec.id))
        });
        self.pool.store(Arc::new(pool));
        Ok(())
    }

    fn account_runtime(&self, rec: Account, rt: Arc<AccountRuntime>) -> Result<AccountRt> {
        let credential = account_type(rec.platform).credential(&self.secrets, &rec)?;
        let proxy = match &rec.proxy {
            Some(p) if !p.host.is_empty() => {
                let pw = if p.password.is_empty() {
                    String::new()
                } else {
                    self.secrets
                        .decrypt(&p.password)
                        .context("decrypting proxy password")?
                };
                proxy_url(p, &pw)
            }
            _ => String::new(),
        };
        let client = self.http.get(&proxy)?;
        Ok(AccountRt {
            credential,
            client,
            rt,
            rec,
        })
    }
}

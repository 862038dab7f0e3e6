//! Shared server state. Everything the request path reads lives here, in memory; keys and
//! accounts are immutable snapshots swapped atomically (`ArcSwap`) when an admin changes them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::accounts::{AccountPool, AccountRt, AccountRuntime, decrypt_credentials};
use crate::config::Config;
use crate::crypto::Secrets;
use crate::limits::{KeyEntry, KeyRuntime};
use crate::model::{Account, AccountGroup, ApiKey, ProxyConfig};
use crate::store::{Store, Table};
use crate::usage::pricing::Pricing;
use crate::usage::{Clock, Ledger};

/// A decrypted secret held in memory. Its Debug output is masked.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({})", crate::crypto::mask(&self.0))
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

/// One pooled HTTP client per distinct proxy (and one without a proxy).
pub struct HttpClients {
    config: Config,
    by_proxy: Mutex<HashMap<String, reqwest::Client>>,
}

impl HttpClients {
    pub fn new(config: &Config) -> Self {
        HttpClients {
            config: config.clone(),
            by_proxy: Mutex::new(HashMap::new()),
        }
    }

    /// The client for a proxy URL ("" = direct). Built once, reused for every account using it.
    pub fn get(&self, proxy_url: &str) -> Result<reqwest::Client> {
        let mut map = self.by_proxy.lock();
        if let Some(c) = map.get(proxy_url) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .connect_timeout(self.config.connect_timeout)
            .pool_idle_timeout(std::time::Duration::from_secs(90))
            .pool_max_idle_per_host(self.config.upstream_idle_connections)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none());
        if !proxy_url.is_empty() {
            b = b.proxy(reqwest::Proxy::all(proxy_url).context("invalid proxy")?);
        } else {
            b = b.no_proxy();
        }
        let c = b.build().context("building HTTP client")?;
        map.insert(proxy_url.to_owned(), c.clone());
        Ok(c)
    }
}

pub fn proxy_url(p: &ProxyConfig, password: &str) -> String {
    let scheme = match p.kind.as_str() {
        // socks5h: let the proxy resolve names (hickory may hand back ::1 first for localhost).
        "socks5" | "socks5h" | "socks" => "socks5h",
        "https" => "https",
        _ => "http",
    };
    if p.username.is_empty() {
        format!("{scheme}://{}:{}", p.host, p.port)
    } else {
        format!(
            "{scheme}://{}:{}@{}:{}",
            urlencode(&p.username),
            urlencode(password),
            p.host,
            p.port
        )
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub struct AppState {
    pub config: Config,
    pub secrets: Secrets,
    pub store: Arc<Store>,
    pub ledger: Ledger,
    pub clock: Clock,
    pub pricing: Pricing,
    pub realtime: crate::usage::realtime::Realtime,
    pub keys: ArcSwap<KeyIndex>,
    pub accounts: ArcSwap<AccountPool>,
    pub sticky: crate::accounts::sticky::Sticky,
    pub oauth: crate::accounts::oauth::OAuthState,
    /// A weak handle on this state, for code that holds `&AppState` but must spawn tasks.
    me: std::sync::OnceLock<std::sync::Weak<AppState>>,
    pub http: HttpClients,
    pub started_at: Instant,
    /// Serialises admin read-modify-write cycles.
    pub admin_lock: tokio::sync::Mutex<()>,
    /// Round-robin cursor among accounts of equal priority.
    pub rr: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
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
            match crate::limits::restore_meter(store, clock, &e.rec, now) {
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

impl AppState {
    pub fn new(config: Config, secrets: Secrets, store: Arc<Store>) -> Result<Arc<Self>> {
        let clock = Clock::new(config.tz_offset_minutes);
        let ledger = Ledger::start(store.clone(), clock, config.ledger_flush);
        let sticky = crate::accounts::sticky::Sticky::new(
            config.sticky_ttl.as_millis() as i64,
            ledger.clone(),
        );
        // The pricing table parses on another core while the keys load.
        let data_dir = config.data_dir.clone();
        let pricing_thread = std::thread::spawn(move || Pricing::load(&data_dir));
        let t = std::time::Instant::now();
        let keys = load_key_index(&store, &clock, &KeyIndex::default())?;
        tracing::debug!(startup_phase = "keys", ms = t.elapsed().as_millis() as u64);
        let pricing = pricing_thread
            .join()
            .map_err(|_| anyhow::anyhow!("loading the pricing table panicked"))??;
        tracing::info!(models = pricing.model_count(), "pricing table loaded");
        let state = Arc::new(AppState {
            pricing,
            realtime: Default::default(),
            http: HttpClients::new(&config),
            config,
            secrets,
            store,
            ledger,
            clock,
            keys: ArcSwap::from_pointee(keys),
            accounts: ArcSwap::from_pointee(AccountPool::default()),
            sticky,
            oauth: Default::default(),
            me: Default::default(),
            started_at: Instant::now(),
            admin_lock: tokio::sync::Mutex::new(()),
            rr: Default::default(),
        });
        let _ = state.me.set(Arc::downgrade(&state));
        state.reload_accounts()?;
        state.load_settings()?;
        let sticky: Vec<(String, crate::accounts::sticky::StickyEntry)> = state
            .store
            .load_raw(Table::Sticky)?
            .into_iter()
            .filter_map(|(k, v)| serde_json::from_slice(&v).ok().map(|e| (k, e)))
            .collect();
        let n = state
            .sticky
            .restore(sticky, chrono::Utc::now().timestamp_millis());
        if n > 0 {
            tracing::info!(sessions = n, "sticky sessions restored");
        }
        Ok(state)
    }

    /// Rebuild the key snapshot from the store and swap it in. Keys that have cost limits get
    /// their meters rebuilt from the usage history the first time they need it.
    pub fn reload_keys(&self) -> Result<()> {
        let idx = load_key_index(&self.store, &self.clock, &self.keys.load())?;
        self.keys.store(Arc::new(idx));
        Ok(())
    }

    pub fn self_arc(&self) -> Option<Arc<AppState>> {
        self.me.get().and_then(|w| w.upgrade())
    }

    /// Apply settings stored by the admin (they override the configuration).
    pub fn load_settings(&self) -> Result<()> {
        if let Some(h) = self
            .store
            .get::<f64>(Table::Settings, "stickySessionTtlHours")?
        {
            self.sticky.set_ttl_ms((h * 3_600_000.0) as i64);
        }
        Ok(())
    }

    /// Rebuild the account snapshot (accounts and groups) from the store and swap it in,
    /// carrying each account's runtime state over.
    pub fn reload_accounts(&self) -> Result<()> {
        let recs: Vec<Account> = self.store.load_all(Table::Accounts)?;
        let groups: Vec<AccountGroup> = self.store.load_all(Table::Groups)?;
        let old = self.accounts.load();
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
                    .map(|c| c.real_cost_micros)
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
        self.accounts.store(Arc::new(pool));
        Ok(())
    }

    fn account_runtime(&self, rec: Account, rt: Arc<AccountRuntime>) -> Result<AccountRt> {
        let (secret, session_token) = decrypt_credentials(&self.secrets, &rec)?;
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
            secret,
            session_token,
            client,
            rt,
            rec,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p = ProxyConfig {
            kind: "socks5".into(),
            host: "127.0.0.1".into(),
            port: 1080,
            username: "u@x".into(),
            password: String::new(),
        };
        assert_eq!(proxy_url(&p, "p:w"), "socks5h://u%40x:p%3Aw@127.0.0.1:1080");
        let p = ProxyConfig {
            kind: "http".into(),
            host: "proxy".into(),
            port: 3128,
            ..Default::default()
        };
        assert_eq!(proxy_url(&p, ""), "http://proxy:3128");
    }

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

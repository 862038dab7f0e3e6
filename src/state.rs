//! Shared server state, assembled once at start and handed to every route through the depot.
//! Everything the request path reads lives here, in memory; keys and accounts are immutable
//! snapshots (`limits::Keys`, `accounts::Accounts`) swapped atomically when a record changes.
//! Policy code never sees this type: routes pass it the narrow parts it needs.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use salvo::prelude::*;

use crate::accounts::Accounts;
use crate::accounts::oauth::OAuthState;
use crate::accounts::sticky::Sticky;
use crate::config::Config;
use crate::crypto::Secrets;
use crate::limits::{AuthError, KeyEntry, Keys, authenticate};
use crate::model::StickyEntry;
use crate::providers::http::HttpClients;
use crate::store::{Store, Table};
use crate::usage::live_pricing::LivePricing;
use crate::usage::{Clock, Ledger};

pub struct AppState {
    pub config: Config,
    pub secrets: Arc<Secrets>,
    pub store: Arc<Store>,
    pub ledger: Ledger,
    pub clock: Clock,
    /// The price table, replaced when its file changes (`usage::live_pricing`).
    pub pricing: LivePricing,
    pub realtime: crate::usage::realtime::Realtime,
    /// API keys: the snapshot the request path authenticates against, and its write path.
    pub keys: Arc<Keys>,
    /// Upstream accounts and groups: the snapshot the scheduler reads, and its write path.
    pub accounts: Arc<Accounts>,
    pub sticky: Sticky,
    pub started_at: Instant,
    /// Serialises admin read-modify-write cycles (shared by `keys` and `accounts`).
    pub admin_lock: Arc<tokio::sync::Mutex<()>>,
    /// Round-robin cursor among accounts of equal priority.
    pub rr: std::sync::atomic::AtomicUsize,
    /// Client request bodies held in memory, in KiB (`max_inflight_body_bytes`).
    pub body_budget: Arc<tokio::sync::Semaphore>,
    /// Admin login throttling and the password-check gate.
    pub logins: crate::auth::login::Logins,
    /// Accepted as an admin session: given to local operator commands through the run file
    /// (`ops::RunInfo`), readable by the data directory's owner only. New on every start.
    pub operator_token: String,
    /// HTTP requests by route group and status, for `/metrics`.
    pub http_metrics: crate::metrics::HttpMetrics,
    /// This server's own base URL (loopback to the listening port), once it listens: the
    /// key self-test routes send their request through it.
    pub self_url: std::sync::OnceLock<String>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

/// Puts the shared state into every request's depot.
pub struct StateHoop(pub Arc<AppState>);

#[salvo::async_trait]
impl Handler for StateHoop {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        depot.insert_typed(self.0.clone());
        ctrl.call_next(req, depot, res).await;
    }
}

pub fn state(depot: &Depot) -> Arc<AppState> {
    depot
        .get_typed::<Arc<AppState>>()
        .expect("StateHoop is installed on the root router")
        .clone()
}

impl AppState {
    pub fn new(config: Config, secrets: Secrets, store: Arc<Store>) -> Result<Arc<Self>> {
        // First: a CA file that cannot be used stops the start before anything is running.
        let http = HttpClients::new(&config)?;
        let secrets = Arc::new(secrets);
        let clock = Clock::new(config.tz_offset_minutes);
        let ledger = Ledger::start(store.clone(), clock, config.ledger_flush);
        let sticky = Sticky::new(config.sticky_ttl.as_millis() as i64, ledger.clone());
        let admin_lock = Arc::new(tokio::sync::Mutex::new(()));
        // The pricing table parses on another core while the keys load.
        let data_dir = config.data_dir.clone();
        let pricing_thread = std::thread::spawn(move || LivePricing::load(&data_dir));
        let t = std::time::Instant::now();
        let keys = Keys::open(store.clone(), clock, admin_lock.clone())?;
        tracing::debug!(startup_phase = "keys", ms = t.elapsed().as_millis() as u64);
        let pricing = pricing_thread
            .join()
            .map_err(|_| anyhow::anyhow!("loading the pricing table panicked"))??;
        tracing::info!(models = pricing.model_count(), "pricing table loaded");
        let accounts = Accounts::open(
            store.clone(),
            secrets.clone(),
            clock,
            http,
            OAuthState::new(&config),
            admin_lock.clone(),
        )?;
        let body_budget = Arc::new(tokio::sync::Semaphore::new(
            (config.max_inflight_body_bytes / 1024).clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
        ));
        let logins = crate::auth::login::Logins::new(&config.login);
        let state = Arc::new(AppState {
            pricing,
            realtime: Default::default(),
            config,
            secrets,
            store,
            ledger,
            clock,
            keys: Arc::new(keys),
            accounts: Arc::new(accounts),
            sticky,
            started_at: Instant::now(),
            body_budget,
            admin_lock,
            rr: Default::default(),
            logins,
            operator_token: crate::crypto::random_hex(32),
            http_metrics: Default::default(),
            self_url: Default::default(),
        });
        state.load_settings()?;
        let sticky: Vec<(String, StickyEntry)> = state
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

    /// Rebuild the key snapshot from the store and swap it in.
    pub fn reload_keys(&self) -> Result<()> {
        self.keys.reload()
    }

    /// Rebuild the account snapshot (accounts and groups) from the store and swap it in.
    pub fn reload_accounts(&self) -> Result<()> {
        self.accounts.reload()
    }

    /// The key a client request carries, if it is valid (in memory).
    pub fn authenticate(&self, req: &Request) -> Result<Arc<KeyEntry>, AuthError> {
        authenticate(
            &self.keys.load(),
            &self.secrets,
            &self.config.api_key_prefix,
            req,
        )
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
}

//! Server assembly: data directory, secrets, store, state, routes, listener, shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use salvo::fuse::FuseConfig;
use salvo::http::StatusCode;
use salvo::prelude::*;

use crate::admin::session::{change_password, current_user, login, logout};
use crate::auth::admin::{ensure_admin, prune_revoked};
use crate::config::Config;
use crate::crypto::Secrets;
use crate::listener::{ListenerCloser, ServeHandle};
use crate::state::AppState;
use crate::state::StateHoop;
use crate::store::Store;
use crate::web::{BodyPace, json};

/// A running server. Dropping it does not stop it; call `shutdown`.
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    handle: ServeHandle,
    listener: ListenerCloser,
    join: tokio::task::JoinHandle<()>,
    /// Cancelled to start accepting (`accept`).
    start: tokio_util::sync::CancellationToken,
    max_connections: usize,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Start accepting connections (once; `start` does it at once).
    fn accept(&self) {
        if self.start.is_cancelled() {
            return;
        }
        self.start.cancel();
        tracing::info!(
            url = %format!("http://{}", self.addr),
            admin = %format!("http://{}/admin-next/", self.addr),
            data_dir = %self.state.config.data_dir.display(),
            max_connections = self.max_connections,
            serving_threads = self.state.config.serving_threads,
            "crs is listening"
        );
    }

    /// Stop accepting, let in-flight requests finish (up to `grace`), then commit all usage.
    /// The listening socket closes at once, so new connections are refused, not left waiting.
    pub async fn shutdown(self, grace: Duration) {
        self.listener.close();
        self.handle.stop_graceful(grace);
        let _ = self.join.await;
        self.state.ledger.shutdown().await;
        // Let background tasks that still hold the state finish, so the store file is closed
        // when this returns.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.state) > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Resolves when the server stops by itself (it only does on a fatal error).
    pub async fn wait(&mut self) {
        let _ = (&mut self.join).await;
    }
}

/// Open (or create) the data directory and build the shared state.
pub fn open_state(config: Config) -> Result<Arc<AppState>> {
    let tightened = crate::crypto::private_data_dir(&config.data_dir)?;
    if !tightened.is_empty() {
        tracing::info!(
            data_dir = %config.data_dir.display(),
            changed = %tightened.join(", "),
            "restricted the data directory to its owner"
        );
    }
    let (secrets, created) =
        Secrets::load_or_create(&config.secrets_path(), config.encryption_key.as_deref())?;
    if created {
        tracing::info!(path = %config.secrets_path().display(), "generated secrets for a new data directory");
    }
    let store = if crate::upgrade::is_upgrade_child() {
        // The process handing over closes the store a moment from now.
        crate::upgrade::open_store_when_free(&config.db_path(), config.store_cache_bytes)?
    } else {
        Store::open_with_cache(&config.db_path(), config.store_cache_bytes)?
    };
    let state = AppState::new(config, secrets, store)?;
    if let Some((user, password)) = ensure_admin(&state.store, &state.config)? {
        // Shown once, on the terminal only: never through the log pipeline.
        eprintln!();
        eprintln!("  Admin account created. Save this password now; it is not shown again.");
        eprintln!("    username: {user}");
        eprintln!("    password: {password}");
        eprintln!();
    }
    let pruned = prune_revoked(&state.store, chrono::Utc::now().timestamp())?;
    if pruned > 0 {
        tracing::debug!(sessions = pruned, "expired signed-out sessions pruned");
    }
    Ok(state)
}

pub fn router(state: Arc<AppState>) -> Router {
    let pace = PaceBodies {
        timeout: state.config.body_timeout,
        min_rate: state.config.body_min_rate,
    };
    Router::new()
        .hoop(pace)
        .hoop(StateHoop(state))
        .push(crate::relay::messages_router())
        .push(Router::with_path("web/auth/login").post(login))
        .push(Router::with_path("web/auth/logout").post(logout))
        .push(Router::with_path("web/auth/change-password").post(change_password))
        .push(Router::with_path("web/auth/user").get(current_user))
        .push(crate::admin::router())
        .push(crate::admin::metrics::router())
        .push(crate::relay::router())
        .push(crate::ui::router())
}

/// Gives every request its body deadline (`web::BodyPace`), counted from now: its headers are in.
struct PaceBodies {
    timeout: Duration,
    min_rate: u64,
}

#[salvo::async_trait]
impl Handler for PaceBodies {
    async fn handle(
        &self,
        req: &mut Request,
        _depot: &mut Depot,
        _res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        req.extensions_mut().insert(BodyPace {
            started: tokio::time::Instant::now(),
            timeout: self.timeout,
            min_rate: self.min_rate,
        });
    }
}

/// After the answer, what is left of a request body nobody read (a request refused before
/// its body, one past the body limit, or one no route takes) is read and discarded, for at
/// most `max` bytes (four times the body limit) and ten seconds, so that the client gets to
/// read the answer (`web::discard_body`).
struct DiscardUnread {
    max: usize,
}

#[salvo::async_trait]
impl Handler for DiscardUnread {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        ctrl.call_next(req, depot, res).await;
        crate::web::discard_body(req.take_body(), self.max, Duration::from_secs(10));
    }
}

/// Counts every request by route group and status, and times its response head
/// (`metrics::HttpMetrics`).
struct CountRequests(Arc<AppState>);

#[salvo::async_trait]
impl Handler for CountRequests {
    async fn handle(
        &self,
        req: &mut Request,
        depot: &mut Depot,
        res: &mut Response,
        ctrl: &mut FlowCtrl,
    ) {
        let started = std::time::Instant::now();
        let route = crate::metrics::route_of(req.uri().path());
        ctrl.call_next(req, depot, res).await;
        let status = res.status_code.map(|s| s.as_u16()).unwrap_or(404);
        self.0
            .http_metrics
            .observe(route, status, started.elapsed().as_secs_f64());
    }
}

/// JSON bodies for requests no route answered (v1's 404 shape) and other bare errors.
#[handler]
async fn catcher(req: &mut Request, res: &mut Response, ctrl: &mut FlowCtrl) {
    let status = res.status_code.unwrap_or(StatusCode::NOT_FOUND);
    let (title, message) = match status {
        StatusCode::NOT_FOUND => ("Not Found", format!("Route {} not found", req.uri().path())),
        StatusCode::METHOD_NOT_ALLOWED => (
            "Method Not Allowed",
            format!(
                "Method {} is not allowed on {}",
                req.method(),
                req.uri().path()
            ),
        ),
        s if s.is_client_error() => (
            "Bad Request",
            s.canonical_reason().unwrap_or("Bad request").to_owned(),
        ),
        s => (
            "Internal Server Error",
            s.canonical_reason().unwrap_or("Error").to_owned(),
        ),
    };
    json(
        res,
        status,
        &serde_json::json!({"error": title, "message": message, "timestamp": chrono::Utc::now()}),
    );
    ctrl.skip_rest();
}

/// The base URL this server reaches itself at: the listening port on loopback (of the
/// listening address's family when it listens on every address).
fn self_url(addr: std::net::SocketAddr) -> String {
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v) if v.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(v) if v.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, addr.port()))
}

/// Start the server: its state, its listening socket, its serving threads and its background
/// tasks; it accepts connections when this returns.
pub async fn start(config: Config) -> Result<Running> {
    let running = prepare(config).await?;
    running.accept();
    Ok(running)
}

/// `start` without accepting yet: connections wait in the listen backlog until
/// `Running::accept`. Whatever else needs a file descriptor at start gets one first.
async fn prepare(config: Config) -> Result<Running> {
    let (host, port) = (config.host.clone(), config.port);
    let max_connections = config
        .max_connections
        .unwrap_or_else(crate::listener::default_max_connections);
    // Slow or silent clients: the request head (and, on a kept-alive connection, the start of
    // the next request) must arrive within this time; bodies have their own deadline.
    let fuse = FuseConfig::default().with_http1_header_timeout(config.header_timeout);
    let state = open_state(config)?;
    let acceptor = crate::listener::NoDelayAcceptor::bind(&host, port, max_connections)
        .await
        .with_context(|| format!("listening on {host}:{port}"))?;
    let addr = acceptor
        .local_addr()
        .context("listener has no local address")?;
    let _ = state.self_url.set(self_url(addr));
    let listener = acceptor.closer();
    let handle = ServeHandle::default();
    let service = Service::new(router(state.clone()))
        .hoop(CountRequests(state.clone()))
        .hoop(DiscardUnread {
            max: state.config.max_body_bytes.saturating_mul(4),
        })
        .catcher(salvo::catcher::Catcher::new(catcher));
    crate::runtime::set_main();
    let prepared = crate::listener::prepare(
        acceptor,
        service,
        fuse,
        handle.clone(),
        state.config.serving_threads,
    )
    .await;
    let join = tokio::spawn(prepared.served);
    crate::accounts::oauth::spawn_refresher(&state.accounts);
    crate::accounts::usage_poll::spawn(&state.accounts, state.config.health.usage_poll);
    crate::accounts::health::spawn(
        &state.accounts,
        state.config.health.clone(),
        state.clock.offset(),
    );
    spawn_trimmer(&state);
    spawn_pricing_watch(&state);
    crate::notify::spawn(&state);
    crate::upgrade::spawn_handoff_intake(&state);
    Ok(Running {
        addr,
        state,
        handle,
        listener,
        join,
        start: prepared.start,
        max_connections,
    })
}

/// Every 5 s, close idle upstream client lanes and give freed heap memory back to the system
/// (while the server lives). A trim of an idle heap costs well under a millisecond.
fn spawn_trimmer(state: &Arc<AppState>) {
    let weak = Arc::downgrade(state);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(st) = weak.upgrade() else { return };
            // Client lanes a burst of HTTP/2 streams opened go once idle, as the pool's
            // connections do.
            let retired = st.accounts.http.retire_idle(st.config.upstream_idle);
            if retired > 0 {
                tracing::debug!(retired, "idle upstream client lanes closed");
            }
            drop(st);
            tokio::task::spawn_blocking(crate::trim_allocator);
        }
    });
}

/// How often the pricing file's modification time and size are checked.
const PRICING_CHECK: Duration = Duration::from_secs(2);
const PRICING_REMOTE_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Reload the price table when its file changes; with `pricing_url`, fetch that table into the
/// file at start and daily (while the server lives).
fn spawn_pricing_watch(state: &Arc<AppState>) {
    let weak = Arc::downgrade(state);
    let remote = state.config.pricing_url.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRICING_CHECK);
        let mut next_remote = remote.as_ref().map(|_| tokio::time::Instant::now());
        loop {
            tick.tick().await;
            let Some(st) = weak.upgrade() else { return };
            if let (Some(url), Some(due)) = (&remote, next_remote)
                && due <= tokio::time::Instant::now()
            {
                next_remote = Some(due + PRICING_REMOTE_EVERY);
                let client = crate::admin::pricing::remote_client();
                match st.pricing.fetch_remote(&client, url).await {
                    Ok(models) => {
                        tracing::info!(url = %url, models, "remote pricing table fetched")
                    }
                    Err(e) => {
                        tracing::warn!(url = %url, error = %format!("{e:#}"), "remote pricing table not fetched; the current one stays")
                    }
                }
            }
            let _ = tokio::task::spawn_blocking(move || st.pricing.reload_if_changed()).await;
        }
    });
}

/// `crs serve`: run until SIGINT or SIGTERM, then stop gracefully and flush usage.
pub async fn serve(config: Config) -> Result<()> {
    if let Some((old, new)) = crate::listener::raise_nofile_limit() {
        tracing::debug!(old, new, "raised the open-file limit to the hard limit");
    }
    // Installed before the server announces itself, so a signal sent as soon as it is
    // listening stops it gracefully rather than killing it.
    let stop = shutdown_signal()?;
    tokio::pin!(stop);
    let mut upgrade = upgrade_signal()?;
    let mut running = prepare(config).await?;
    let data_dir = running.state.config.data_dir.clone();
    write_run_file(&running, None);
    running.accept();
    crate::upgrade::signal_ready();
    enum Next {
        Stop,
        Died,
        Upgrade,
    }
    loop {
        let next = tokio::select! {
            _ = &mut stop => Next::Stop,
            _ = running.wait() => Next::Died,
            _ = upgrade.recv() => Next::Upgrade,
        };
        match next {
            Next::Stop => {
                tracing::info!("shutdown requested; finishing in-flight requests");
                running.shutdown(Duration::from_secs(30)).await;
                tracing::info!("usage flushed; bye");
                break;
            }
            Next::Died => {
                running.state.ledger.shutdown().await;
                break;
            }
            Next::Upgrade => match hand_over(&running).await {
                Ok(()) => {
                    tracing::info!(
                        "the new process serves; finishing in-flight requests and streams"
                    );
                    running.shutdown(crate::upgrade::DRAIN_GRACE).await;
                    tracing::info!("handed over; bye");
                    break;
                }
                Err(e) => {
                    let error = format!("{e:#}");
                    tracing::error!(error = %error, "upgrade failed; this process keeps serving");
                    crate::notify::system_error(
                        &running.state,
                        "upgrade failed",
                        &format!(
                            "The upgrade did not happen ({error}); the running process keeps serving."
                        ),
                    );
                    write_run_file(&running, Some(error));
                }
            },
        }
    }
    crate::ops::RunInfo::remove(&data_dir);
    Ok(())
}

/// SIGUSR2 (`crs upgrade`, systemd's reload).
fn upgrade_signal() -> Result<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::user_defined2()).context("installing SIGUSR2 handler")
}

/// Hand the socket and the data directory to the binary on disk (`upgrade`). On success the
/// new process serves and this one should drain; on failure this one keeps serving.
async fn hand_over(running: &Running) -> Result<()> {
    let st = &running.state;
    tracing::info!("upgrade requested: starting the binary on disk");
    let fd = running
        .listener
        .inheritable()
        .context("duplicating the listening socket")?;
    let spill = crate::upgrade::handoff_file(&st.config.data_dir, std::process::id());
    if !st.ledger.handoff(spill).await {
        st.ledger.resume().await;
        anyhow::bail!("usage could not be committed before the handover");
    }
    st.store.release();
    let restore = || async {
        if let Err(e) = st.store.reacquire() {
            tracing::error!(error = %format!("{e:#}"), "reopening the store failed");
        }
        st.ledger.resume().await;
    };
    let started = match crate::upgrade::start_new(fd) {
        Ok(s) => s,
        Err(e) => {
            restore().await;
            return Err(e);
        }
    };
    let pid = started.child.id();
    if started.wait_ready(crate::upgrade::READY_TIMEOUT).await {
        tracing::info!(new_pid = pid, "the new process is ready");
        return Ok(());
    }
    restore().await;
    anyhow::bail!("the new process (pid {pid}) did not become ready")
}

/// Tell local operator commands (`crs status`, `crs backup`) where this server is and how to
/// reach its admin API (`ops::RunInfo`).
fn write_run_file(running: &Running, upgrade_error: Option<String>) {
    let mut addr = running.addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let info = crate::ops::RunInfo {
        pid: std::process::id(),
        url: format!("http://{addr}"),
        version: env!("CARGO_PKG_VERSION").into(),
        token: running.state.operator_token.clone(),
        started_at: chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
            - chrono::Duration::from_std(running.state.started_at.elapsed()).unwrap_or_default(),
        upgrade_failed: upgrade_error.map(|error| crate::ops::UpgradeFailure {
            at: chrono::Utc::now(),
            error,
        }),
    };
    if let Err(e) = info.write(&running.state.config.data_dir) {
        tracing::warn!(error = %e, "could not write the run file; crs status and crs backup will not find this server");
    }
}

/// Resolves at the first SIGINT or SIGTERM; the handlers are in place when this returns.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
        })
    }
}

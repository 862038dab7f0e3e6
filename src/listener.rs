//! The TCP acceptor: `TCP_NODELAY` on every connection, a cap on open connections, calm
//! handling of accept failures, and a listening socket that can be closed from outside.
//!
//! - Nagle's algorithm off: salvo's own `TcpAcceptor` leaves it on, so a response written as
//!   headers plus small body chunks (an SSE stream's first events) waits for the client's
//!   delayed ACK: about 40 ms of time-to-first-byte added for nothing. A relay must forward
//!   bytes as they come.
//! - At most `max_connections` connections are open at once. Each accepted stream holds a
//!   slot that is given back when the connection ends; at the cap the acceptor stops
//!   accepting, so new connections wait in the kernel's listen backlog instead of using file
//!   descriptors the process does not have.
//! - When accept fails for want of resources (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`), the
//!   acceptor waits a little longer each time (10 ms doubling to 100 ms) and tries again. It
//!   never hands such an error to salvo, which would log every one of them.
//! - `ListenerCloser::close` drops the listening socket at once (a graceful stop): new
//!   connections are refused while accepted ones finish.
//! - `serve` runs the connections, each on a task of its own that is freed when it ends.
//!   salvo's `Server` collects finished connection tasks only when it accepts the next
//!   connection: after a burst of 10,000 streams, 3 MiB of finished tasks stayed until a new
//!   client came, and the allocator pages they were spread over stayed resident with them.
//!
//! Logs: the start of an episode (accepts failing, or the cap reached) is one warn line and its
//! end one info line; within a minute of a logged start, further episodes are only counted and
//! reported with the next logged one.

use std::future::poll_fn;
use std::io::Result as IoResult;
use std::net::SocketAddr as StdSocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use salvo::Service;
use salvo::conn::tcp::TcpCoupler;
use salvo::conn::{Accepted, Acceptor, ConnCtrl, Coupler, Holding, HttpBuilder, StraightStream};
use salvo::fuse::{ArcFusePolicy, FuseAction, FuseConfig, FuseInfo, TransProto};
use salvo::http::Version;
use salvo::http::uri::Scheme;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One thread's handle on the listening socket, shared with `ListenerCloser`; `None` once
/// closed.
type Slot = Arc<Mutex<Option<TcpListener>>>;

/// Every thread's handle on the listening socket (duplicates of one descriptor): the socket
/// stops taking connections once all are closed.
#[derive(Default)]
struct Listening {
    slots: Vec<Slot>,
    closed: bool,
}

pub struct NoDelayAcceptor {
    listener: Slot,
    listening: Arc<Mutex<Listening>>,
    holdings: Vec<Holding>,
    slots: Arc<Semaphore>,
    max_connections: usize,
    /// A connection accepted by a call that was cancelled while its fuse was being decided.
    pending: Option<(Counted<TcpStream>, StdSocketAddr)>,
    /// Shared by every serving thread's acceptor, so an episode is logged once.
    failing: Arc<Mutex<Episode>>,
    full: Arc<Mutex<Episode>>,
    /// Slots taken by acceptors still waiting for a connection to hold them.
    waiting: Arc<AtomicUsize>,
}

/// Stops `serve`.
#[derive(Clone, Default)]
pub struct ServeHandle {
    graceful: CancellationToken,
    force: CancellationToken,
}

impl ServeHandle {
    /// Accept no more connections; open ones finish the request in flight and close (hyper's
    /// graceful shutdown). After `timeout`, connections still open are dropped.
    pub fn stop_graceful(&self, timeout: Duration) {
        self.graceful.cancel();
        let force = self.force.clone();
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            force.cancel();
        });
    }
}

/// What every serving thread shares.
struct Serving {
    service: Service,
    builder: Arc<HttpBuilder>,
    policy: ArcFusePolicy,
    /// Counts the connection tasks of every thread (for the graceful stop) without keeping
    /// them once ended.
    tasks: TaskTracker,
    /// The wait for open connections at a stop has been logged.
    logged: std::sync::atomic::AtomicBool,
}

/// Serve `service` on the connections `acceptor` gives until `handle` stops it; returns once
/// every connection has ended (or the graceful stop's timeout passed). `prepare` and
/// `Prepared::accept` in one step.
pub async fn serve(
    acceptor: NoDelayAcceptor,
    service: Service,
    fuse: FuseConfig,
    handle: ServeHandle,
    threads: usize,
) {
    let prepared = prepare(acceptor, service, fuse, handle, threads).await;
    prepared.start.cancel();
    prepared.served.await
}

/// The server, ready and not yet accepting: its serving threads are running, each with its
/// duplicate of the listening socket registered. Whatever else needs a file descriptor at
/// start (the run file) can have one before a flood of connections takes them all.
pub struct Prepared {
    /// Cancel to start accepting.
    pub start: CancellationToken,
    /// Accepts once `start` is cancelled; resolves once every connection has ended after
    /// `handle` stopped it (or the graceful stop's timeout passed).
    pub served: Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

/// Start `threads` serving threads (see `runtime`), each to accept on a duplicate of the
/// listening socket; with 0, connections are served on the calling runtime. A share of the
/// socket whose thread could not start (out of descriptors or threads) is served on the
/// calling runtime instead, so crs never listens without accepting.
pub async fn prepare(
    acceptor: NoDelayAcceptor,
    service: Service,
    fuse: FuseConfig,
    handle: ServeHandle,
    threads: usize,
) -> Prepared {
    prepare_with(
        acceptor,
        service,
        fuse,
        handle,
        threads,
        crate::runtime::serving_runtime,
    )
    .await
}

/// How a serving thread builds its runtime (`runtime::serving_runtime`; a failing one in
/// tests).
type BuildRuntime =
    fn(usize, fn()) -> IoResult<(tokio::runtime::Runtime, crate::runtime::Registered)>;

async fn prepare_with(
    acceptor: NoDelayAcceptor,
    service: Service,
    fuse: FuseConfig,
    handle: ServeHandle,
    threads: usize,
    build: BuildRuntime,
) -> Prepared {
    let serving = Arc::new(Serving {
        service,
        builder: Arc::new(HttpBuilder::new()),
        policy: Arc::new(fuse),
        tasks: TaskTracker::new(),
        logged: Default::default(),
    });
    let start = CancellationToken::new();
    let (parts, mut here) = if threads == 0 {
        (Vec::new(), vec![acceptor])
    } else {
        match acceptor.split(threads) {
            Ok(parts) => (parts, Vec::new()),
            Err(e) => {
                tracing::error!(error = %e, "sharing the listening socket failed");
                (Vec::new(), Vec::new())
            }
        }
    };
    let mut ended = Vec::with_capacity(parts.len());
    let mut readies = Vec::with_capacity(parts.len());
    let mut cells = Vec::with_capacity(parts.len());
    // The serving threads log where the caller does (a test's own subscriber, too).
    let logs = tracing::dispatcher::get_default(|d| d.clone());
    for (i, part) in parts.into_iter().enumerate() {
        let n = i + 1;
        // The thread takes its part once its runtime runs; what is left here when the thread
        // is ready (or gone) is served on the calling runtime.
        let cell = Arc::new(Mutex::new(Some(part)));
        let (ready, prepared) = tokio::sync::oneshot::channel::<()>();
        let (done, end) = tokio::sync::oneshot::channel::<()>();
        let (serving, handle, logs, start) =
            (serving.clone(), handle.clone(), logs.clone(), start.clone());
        let mine = cell.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("crs-serve-{n}"))
            .spawn(move || {
                let _logs = tracing::dispatcher::set_default(&logs);
                let (rt, _registered) = match build(n, crate::on_worker_park) {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, thread = n, "starting a serving thread failed; the main runtime serves its share");
                        return;
                    }
                };
                let Some(part) = mine.lock().take() else {
                    return;
                };
                rt.block_on(async move {
                    // `on_worker_park` gives this thread's freed memory back at most once a
                    // second, so the last park after a burst can come too soon after the one
                    // before; an idle thread also collects every 5 s.
                    tokio::spawn(async {
                        let mut tick = tokio::time::interval(Duration::from_secs(5));
                        loop {
                            tick.tick().await;
                            crate::trim_allocator();
                        }
                    });
                    let acceptor = match part.register() {
                        Ok(acceptor) => acceptor,
                        Err(e) => {
                            tracing::error!(error = %e, thread = n, "listening failed");
                            return;
                        }
                    };
                    drop(ready);
                    tokio::select! {
                        biased;
                        _ = handle.graceful.cancelled() => {}
                        _ = start.cancelled() => {}
                    }
                    accept_and_serve(acceptor, serving, handle).await
                });
                drop(rt);
                drop(done);
            });
        match spawned {
            Ok(_) => {
                ended.push(end);
                readies.push(prepared);
            }
            Err(e) => {
                tracing::error!(error = %e, thread = n, "starting a serving thread failed; the main runtime serves its share")
            }
        }
        cells.push(cell);
    }
    // Each thread has registered its part, or given up on it.
    for ready in readies {
        let _ = ready.await;
    }
    for cell in cells {
        let left = cell.lock().take();
        if let Some(part) = left {
            match part.register() {
                Ok(acceptor) => here.push(acceptor),
                Err(e) => tracing::error!(error = %e, "listening failed"),
            }
        }
    }
    let go = start.clone();
    let served = Box::pin(async move {
        tokio::select! {
            biased;
            _ = handle.graceful.cancelled() => {}
            _ = go.cancelled() => {}
        }
        let local: Vec<_> = here
            .into_iter()
            .map(|acceptor| {
                tokio::spawn(accept_and_serve(acceptor, serving.clone(), handle.clone()))
            })
            .collect();
        for task in local {
            let _ = task.await;
        }
        for end in ended {
            let _ = end.await;
        }
    });
    Prepared { start, served }
}

/// One thread's accept loop: a task for each connection it accepts, on the calling runtime.
/// After a stop, waits until the connections of every thread have ended.
async fn accept_and_serve(
    mut acceptor: NoDelayAcceptor,
    serving: Arc<Serving>,
    handle: ServeHandle,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = handle.graceful.cancelled() => break,
            accepted = acceptor.accept(Some(serving.policy.clone())) => accepted,
        };
        let accepted = match accepted {
            Ok(a) => a,
            // The acceptor waits out failures itself; this is not expected.
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Accepted {
            coupler,
            stream,
            fuse_config,
            conn_ctrl,
            local_addr,
            remote_addr,
            http_scheme,
        } = accepted;
        let handler = serving.service.hyper_handler(
            local_addr,
            remote_addr,
            http_scheme,
            fuse_config,
            conn_ctrl,
            None,
        );
        let force = handle.force.clone();
        let graceful = Some(handle.graceful.clone());
        let conn = coupler.couple(stream, handler, serving.builder.clone(), graceful);
        serving.tasks.spawn(async move {
            tokio::select! {
                // Errors are the client's (a reset, a malformed head): hyper answered what
                // it could.
                _ = conn => {}
                _ = force.cancelled() => {}
            }
        });
    }
    // Dropped here, so the socket this thread accepted on is closed.
    drop(acceptor);
    let tasks = &serving.tasks;
    tasks.close();
    if !tasks.is_empty()
        && !serving
            .logged
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    {
        tracing::info!(
            connections = tasks.len(),
            "waiting for open connections to finish"
        );
    }
    tokio::select! {
        _ = tasks.wait() => {}
        _ = handle.force.cancelled() => {}
    }
}

/// Closes the listening socket of a `NoDelayAcceptor`: connections not yet accepted are
/// refused from then on.
#[derive(Clone)]
pub struct ListenerCloser(Arc<Mutex<Listening>>);

impl ListenerCloser {
    pub fn close(&self) {
        let mut listening = self.0.lock();
        listening.closed = true;
        for slot in &listening.slots {
            drop(slot.lock().take());
        }
    }

    /// A duplicate of the listening socket that a child process inherits (no close-on-exec).
    #[cfg(unix)]
    pub fn inheritable(&self) -> IoResult<std::os::fd::OwnedFd> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let listening = self.0.lock();
        let open = listening.slots.iter().find_map(|s| {
            let l = s.lock();
            l.as_ref().map(|l| l.as_raw_fd())
        });
        let fd = open.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))?;
        // SAFETY: dup of an open descriptor (its slot cannot be emptied while `listening` is
        // locked); the new one is owned by the returned OwnedFd.
        let fd = unsafe { libc::dup(fd) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created by dup and is owned by nothing else.
        Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }
}

impl NoDelayAcceptor {
    pub async fn bind(host: &str, port: u16, max_connections: usize) -> IoResult<Self> {
        let inner = listen(host, port).await?;
        let local = inner.local_addr()?;
        let max_connections = max_connections.max(1);
        let listener: Slot = Arc::new(Mutex::new(Some(inner)));
        let listening = Listening {
            slots: vec![listener.clone()],
            closed: false,
        };
        Ok(NoDelayAcceptor {
            holdings: vec![Holding {
                local_addr: local.into(),
                http_versions: vec![Version::HTTP_11],
                http_scheme: Scheme::HTTP,
            }],
            listener,
            listening: Arc::new(Mutex::new(listening)),
            slots: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            pending: None,
            failing: Default::default(),
            full: Default::default(),
            waiting: Default::default(),
        })
    }

    pub fn local_addr(&self) -> IoResult<StdSocketAddr> {
        match self.listener.lock().as_ref() {
            Some(l) => l.local_addr(),
            None => Err(std::io::Error::from(std::io::ErrorKind::NotConnected)),
        }
    }

    pub fn closer(&self) -> ListenerCloser {
        ListenerCloser(self.listening.clone())
    }

    /// `n` acceptors on duplicates of this one's socket, each to be registered on a runtime of
    /// its own (`Part::register`); connections count against the same cap. None if the socket
    /// was closed already.
    fn split(self, n: usize) -> IoResult<Vec<Part>> {
        let Some(listener) = self.listener.lock().take() else {
            return Ok(Vec::new());
        };
        let socket = listener.into_std()?;
        let mut parts = Vec::with_capacity(n);
        for _ in 1..n {
            parts.push(socket.try_clone()?);
        }
        parts.push(socket);
        Ok(parts
            .into_iter()
            .map(|socket| Part {
                socket,
                listening: self.listening.clone(),
                holdings: self.holdings.clone(),
                slots: self.slots.clone(),
                max_connections: self.max_connections,
                failing: self.failing.clone(),
                full: self.full.clone(),
                waiting: self.waiting.clone(),
            })
            .collect())
    }

    /// Connections open now (accepted and not yet ended).
    pub fn open_connections(&self) -> usize {
        (self.max_connections - self.slots.available_permits())
            .saturating_sub(self.waiting.load(Ordering::Relaxed))
    }

    /// A connection slot; at the cap, wait for one to be given back.
    async fn slot(&mut self) -> OwnedSemaphorePermit {
        let now = Instant::now();
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            let ended = self.full.lock().clear(now);
            if let Some(ended) = ended {
                tracing::info!(
                    max_connections = self.max_connections,
                    waited_ms = ended.duration.as_millis() as u64,
                    "open connections below the limit again"
                );
            }
            return permit;
        }
        // No slot left. The cap is reached only if every slot holds a connection: another
        // thread's acceptor may hold the last one while it waits for a connection.
        let full = self.open_connections() >= self.max_connections;
        let hit = if full {
            self.full.lock().hit(now)
        } else {
            None
        };
        if let Some(earlier) = hit {
            tracing::warn!(
                max_connections = self.max_connections,
                earlier_episodes = earlier,
                "connection limit reached; new connections wait in the listen backlog"
            );
        }
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the connection semaphore is never closed")
    }

    /// The next connection from the listening socket. Failures that concern one connection
    /// are skipped; resource failures are waited out with a growing pause.
    async fn next_connection(&self) -> (TcpStream, StdSocketAddr) {
        loop {
            let listener = &self.listener;
            let accepted = poll_fn(|cx: &mut Context<'_>| match listener.lock().as_ref() {
                Some(l) => l.poll_accept(cx),
                // Closed: a graceful stop is under way and salvo is about to drop this future.
                None => Poll::Pending,
            })
            .await;
            match accepted {
                Ok(conn) => {
                    let ended = self.failing.lock().clear(Instant::now());
                    if let Some(ended) = ended {
                        tracing::info!(
                            failed_accepts = ended.count,
                            paused_ms = ended.duration.as_millis() as u64,
                            open_connections = self.open_connections(),
                            "accepting connections again"
                        );
                    }
                    return conn;
                }
                Err(e) if failure_of_one_connection(&e) => {
                    tracing::debug!(error = %e, "a connection failed before it was accepted");
                }
                Err(e) => {
                    let now = Instant::now();
                    let (hit, count) = {
                        let mut failing = self.failing.lock();
                        (failing.hit(now), failing.count)
                    };
                    if let Some(earlier) = hit {
                        tracing::warn!(
                            error = %e,
                            open_connections = self.open_connections(),
                            max_connections = self.max_connections,
                            earlier_episodes = earlier,
                            "accepting connections fails; pausing accepts until it works again"
                        );
                    }
                    tokio::time::sleep(backoff(count)).await;
                }
            }
        }
    }
}

/// One serving thread's share of a `NoDelayAcceptor`, not yet registered with a runtime.
struct Part {
    socket: std::net::TcpListener,
    listening: Arc<Mutex<Listening>>,
    holdings: Vec<Holding>,
    slots: Arc<Semaphore>,
    max_connections: usize,
    failing: Arc<Mutex<Episode>>,
    full: Arc<Mutex<Episode>>,
    waiting: Arc<AtomicUsize>,
}

impl Part {
    /// The acceptor, its socket registered with the calling thread's runtime; its socket is
    /// closed at once if the listener was closed meanwhile.
    fn register(self) -> IoResult<NoDelayAcceptor> {
        let listener = TcpListener::from_std(self.socket)?;
        let slot: Slot = Arc::new(Mutex::new(None));
        {
            let mut listening = self.listening.lock();
            if !listening.closed {
                *slot.lock() = Some(listener);
                listening.slots.push(slot.clone());
            }
        }
        Ok(NoDelayAcceptor {
            listener: slot,
            listening: self.listening,
            holdings: self.holdings,
            slots: self.slots,
            max_connections: self.max_connections,
            pending: None,
            failing: self.failing,
            full: self.full,
            waiting: self.waiting,
        })
    }
}

/// Connections the kernel holds for us (handshake done, not yet accepted) while we are at the
/// cap or out of descriptors; beyond it new clients' SYNs go unanswered and they retry after
/// 1, 3, 7... seconds. The kernel caps it at `net.core.somaxconn`. (std and tokio use 128.)
const BACKLOG: u32 = 1024;

/// Bind and listen on the first address `host` resolves to that works.
/// The environment variable that hands a listening socket to a new process (an upgrade).
pub const LISTEN_FD_ENV: &str = "CRS_LISTEN_FD";

async fn listen(host: &str, port: u16) -> IoResult<TcpListener> {
    #[cfg(unix)]
    if let Some(fd) = std::env::var(LISTEN_FD_ENV)
        .ok()
        .and_then(|v| v.parse::<std::os::fd::RawFd>().ok())
    {
        use std::os::fd::FromRawFd;
        // SAFETY: the parent process passed this descriptor, open and listening, for this
        // process to own; nothing else here uses it.
        let std_listener = unsafe { std::net::TcpListener::from_raw_fd(fd) };
        std_listener.set_nonblocking(true)?;
        // Not passed on to processes this one starts.
        // SAFETY: fcntl on a descriptor this process owns.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        return TcpListener::from_std(std_listener);
    }
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As std does on Unix: a restart can bind while old connections sit in TIME_WAIT.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the listen address resolves to nothing",
        )
    }))
}

/// The pause after the `n`th consecutive accept failure: 10 ms, doubling, at most 100 ms.
fn backoff(n: u64) -> Duration {
    let shift = n.saturating_sub(1).min(4) as u32;
    Duration::from_millis((10u64 << shift).min(100))
}

/// Accept errors that concern only the connection being accepted (it was reset or aborted
/// before we took it): the next accept is unaffected.
fn failure_of_one_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || matches!(
        e.raw_os_error(),
        Some(
            libc::EPROTO | libc::EPERM | libc::ENOPROTOOPT | libc::EHOSTUNREACH | libc::ENETUNREACH
        )
    )
}

impl Acceptor for NoDelayAcceptor {
    type Coupler = TcpCoupler<Self::Stream>;
    type Stream = StraightStream<Counted<TcpStream>>;

    fn holdings(&self) -> &[Holding] {
        &self.holdings
    }

    async fn accept(
        &mut self,
        fuse_policy: Option<ArcFusePolicy>,
    ) -> IoResult<Accepted<Self::Coupler, Self::Stream>> {
        loop {
            if self.pending.is_none() {
                let slot = self.slot().await;
                let waiting = Waiting::new(&self.waiting);
                let (conn, remote) = self.next_connection().await;
                drop(waiting);
                // Best effort: a socket that refuses it still works, only slower.
                let _ = conn.set_nodelay(true);
                self.pending = Some((
                    Counted {
                        inner: conn,
                        _slot: slot,
                    },
                    remote,
                ));
            }
            let remote = self.pending.as_ref().expect("pending set above").1;
            let local_addr = self.holdings[0].local_addr.clone();
            let conn_ctrl = ConnCtrl::new();
            let (fuse_config, observer) = match &fuse_policy {
                Some(policy) => {
                    let info = FuseInfo {
                        trans_proto: TransProto::Tcp,
                        remote_addr: remote.into(),
                        local_addr: local_addr.clone(),
                    };
                    match policy.decide(&info).await {
                        FuseAction::Accept(config) => {
                            (Some(config), policy.observe(&info, &conn_ctrl))
                        }
                        FuseAction::Reject => {
                            self.pending = None;
                            continue;
                        }
                    }
                }
                None => (None, None),
            };
            let (conn, remote) = self.pending.take().expect("pending set above");
            return Ok(Accepted {
                coupler: TcpCoupler::new(),
                stream: StraightStream::new(conn, fuse_config, conn_ctrl.clone(), observer),
                fuse_config,
                conn_ctrl,
                remote_addr: remote.into(),
                local_addr,
                http_scheme: Scheme::HTTP,
            });
        }
    }
}

/// Counts a slot taken by an acceptor that waits for a connection, while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Waiting(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An accepted stream holding one of the acceptor's connection slots until it is dropped.
pub struct Counted<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<IoResult<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<IoResult<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<IoResult<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A condition that comes and goes (accepts failing, the connection cap reached), logged as
/// episodes: `hit` at each occurrence, `clear` when things work. Only the first occurrence of
/// an episode may log, and not within `QUIET_LOGS` of the last logged start; the episodes in
/// between are counted and reported with the next logged one.
#[derive(Debug, Default)]
struct Episode {
    active: bool,
    logged: bool,
    started: Option<Instant>,
    /// Occurrences in the current (or last) episode.
    count: u64,
    last_logged: Option<Instant>,
    /// Episodes since the last logged one that were not logged.
    unlogged: u64,
}

/// At most one episode start is logged per this interval.
const QUIET_LOGS: Duration = Duration::from_secs(60);

#[derive(Debug, PartialEq, Eq)]
struct Ended {
    count: u64,
    duration: Duration,
}

impl Episode {
    /// The condition occurred. `Some(earlier unlogged episodes)` when this starts an episode
    /// that should be logged.
    fn hit(&mut self, now: Instant) -> Option<u64> {
        if self.active {
            self.count += 1;
            return None;
        }
        self.active = true;
        self.started = Some(now);
        self.count = 1;
        let quiet = self
            .last_logged
            .is_some_and(|t| now.saturating_duration_since(t) < QUIET_LOGS);
        if quiet {
            self.logged = false;
            self.unlogged += 1;
            return None;
        }
        self.logged = true;
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// Things work again. `Some` when a logged episode ends here.
    fn clear(&mut self, now: Instant) -> Option<Ended> {
        if !self.active {
            return None;
        }
        self.active = false;
        if !self.logged {
            return None;
        }
        Some(Ended {
            count: self.count,
            duration: self
                .started
                .map(|s| now.saturating_duration_since(s))
                .unwrap_or_default(),
        })
    }
}

/// The connection cap when none is configured, from the open-file limit: a quarter of the
/// limit (at most 256) is kept for the store, the runtime and the log, and half of the rest
/// for the upstream socket each relayed request holds. Between 8 and 4,096.
pub fn max_connections_for(nofile: u64) -> usize {
    let reserve = (nofile / 4).min(256);
    (nofile.saturating_sub(reserve) / 2).clamp(8, 4096) as usize
}

/// The process's soft open-file limit (`None` when unknown or unlimited).
// `rlim_t` is not 64 bits on every platform.
#[allow(clippy::unnecessary_cast)]
pub fn nofile_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0
            || r.rlim_cur == libc::RLIM_INFINITY
        {
            return None;
        }
        Some(r.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The default connection cap for this process (see `max_connections_for`).
pub fn default_max_connections() -> usize {
    max_connections_for(nofile_limit().unwrap_or(u64::MAX))
}

/// Raise the soft open-file limit to the hard one (at most 1,048,576), as Go's runtime does:
/// the soft default (often 1,024) is far below what a server with many clients needs, and the
/// hard limit is what the administrator allows. Returns the (old, new) soft limit when it
/// changed.
#[allow(clippy::unnecessary_cast)]
pub fn raise_nofile_limit() -> Option<(u64, u64)> {
    #[cfg(target_os = "linux")]
    {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
            return None;
        }
        let want = r.rlim_max.min(1 << 20);
        if r.rlim_cur >= want {
            return None;
        }
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: r.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given; a refusal leaves the limit as it was.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return None;
        }
        Some((r.rlim_cur as u64, want as u64))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` connections open at once, one request on each, then all closed.
    async fn ask(addr: StdSocketAddr, n: usize) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(TcpStream::connect(addr).await.unwrap());
        }
        for c in &mut conns {
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
        }
        for c in &mut conns {
            let mut answer = Vec::new();
            c.read_to_end(&mut answer).await.unwrap();
            assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
        }
    }

    /// `n` connections open at once, one `GET /` on each; their answers' bodies.
    async fn bodies(addr: StdSocketAddr, n: usize) -> Vec<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(TcpStream::connect(addr).await.unwrap());
        }
        let mut out = Vec::with_capacity(n);
        for mut c in conns {
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut answer = String::new();
            c.read_to_string(&mut answer).await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            out.push(answer.rsplit("\r\n\r\n").next().unwrap().to_owned());
        }
        out
    }

    #[tokio::test]
    async fn serving_threads_serve_every_connection_and_stop_together() {
        #[salvo::handler]
        async fn which() -> String {
            crate::runtime::worker().to_string()
        }
        let acceptor = NoDelayAcceptor::bind("127.0.0.1", 0, 1024).await.unwrap();
        let addr = acceptor.local_addr().unwrap();
        let closer = acceptor.closer();
        let handle = ServeHandle::default();
        #[salvo::handler]
        async fn slow() -> &'static str {
            tokio::time::sleep(Duration::from_millis(300)).await;
            "slow"
        }
        let router = salvo::Router::new()
            .get(which)
            .push(salvo::Router::with_path("slow").get(slow));
        let service = Service::new(router);
        let server = tokio::spawn(serve(
            acceptor,
            service,
            FuseConfig::default(),
            handle.clone(),
            2,
        ));
        // Every connection is answered by serving thread 1 or 2, never by this one (0).
        for answer in bodies(addr, 64).await {
            assert!(answer == "1" || answer == "2", "{answer:?}");
        }
        // A request in flight across the stop still gets its answer.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut open = TcpStream::connect(addr).await.unwrap();
        open.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        closer.close();
        handle.stop_graceful(Duration::from_secs(10));
        // Every thread's duplicate of the socket is closed: new connections are refused.
        assert!(TcpStream::connect(addr).await.is_err());
        let mut answer = String::new();
        open.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("slow"), "{answer}");
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns once its connections ended")
            .unwrap();
    }

    /// A serving runtime that cannot be built for thread 1 (out of descriptors at start).
    fn first_fails(
        n: usize,
        on_park: fn(),
    ) -> IoResult<(tokio::runtime::Runtime, crate::runtime::Registered)> {
        if n == 1 {
            return Err(std::io::Error::from_raw_os_error(24));
        }
        crate::runtime::serving_runtime(n, on_park)
    }

    fn every_one_fails(
        _: usize,
        _: fn(),
    ) -> IoResult<(tokio::runtime::Runtime, crate::runtime::Registered)> {
        Err(std::io::Error::from_raw_os_error(24))
    }

    #[tokio::test]
    async fn nothing_is_accepted_before_the_start_and_a_thread_that_failed_is_stood_in_for() {
        #[salvo::handler]
        async fn which() -> String {
            crate::runtime::worker().to_string()
        }
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for (build, allowed) in [
            (first_fails as BuildRuntime, &["0", "2"][..]),
            (every_one_fails, &["0"][..]),
        ] {
            let acceptor = NoDelayAcceptor::bind("127.0.0.1", 0, 1024).await.unwrap();
            let addr = acceptor.local_addr().unwrap();
            let handle = ServeHandle::default();
            let prepared = prepare_with(
                acceptor,
                Service::new(salvo::Router::new().get(which)),
                FuseConfig::default(),
                handle.clone(),
                2,
                build,
            )
            .await;
            let server = tokio::spawn(prepared.served);
            // Prepared: the connection waits in the backlog, unanswered.
            let mut early = TcpStream::connect(addr).await.unwrap();
            early
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut byte = [0u8; 1];
            assert!(
                tokio::time::timeout(Duration::from_millis(200), early.read(&mut byte))
                    .await
                    .is_err(),
                "answered before the start"
            );
            prepared.start.cancel();
            let mut answer = Vec::new();
            early.read_to_end(&mut answer).await.unwrap();
            assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
            // Every share of the socket is served: none of 64 connections is left waiting.
            let answers = tokio::time::timeout(Duration::from_secs(10), bodies(addr, 64))
                .await
                .expect("every connection is answered");
            for answer in &answers {
                assert!(allowed.contains(&answer.as_str()), "{answer:?}");
            }
            assert!(answers.iter().any(|a| a == "0"), "{answers:?}");
            handle.stop_graceful(Duration::from_secs(1));
            tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .unwrap()
                .unwrap();
        }
    }

    #[test]
    fn connections_that_ended_leave_no_memory_behind() {
        #[salvo::handler]
        async fn hello() -> &'static str {
            "hello"
        }
        // One thread: everything the server and the clients allocate is counted here.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let acceptor = NoDelayAcceptor::bind("127.0.0.1", 0, 1024).await.unwrap();
            let addr = acceptor.local_addr().unwrap();
            let handle = ServeHandle::default();
            let service = Service::new(salvo::Router::new().get(hello));
            // On this thread's runtime (no serving threads), so its allocations are counted.
            let server = tokio::spawn(serve(
                acceptor,
                service,
                FuseConfig::default(),
                handle.clone(),
                0,
            ));
            // What a burst builds once (the runtime's timer wheel and I/O registrations,
            // lazily sized state); a last connection after it.
            ask(addr, 300).await;
            ask(addr, 1).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let before = crate::test_alloc::live_here();
            // A burst, and no connection after it.
            ask(addr, 300).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
            let grown = crate::test_alloc::live_here() - before;
            // Finished tasks kept until the next accept cost about 350 bytes a connection.
            assert!(
                grown < 16 * 1024,
                "300 ended connections left {grown} bytes behind"
            );
            handle.stop_graceful(Duration::from_secs(1));
            server.await.unwrap();
        });
    }

    #[test]
    fn default_cap_follows_the_open_file_limit() {
        assert_eq!(max_connections_for(64), 24);
        assert_eq!(max_connections_for(1024), 384);
        assert_eq!(max_connections_for(20_000), 4096);
        assert_eq!(max_connections_for(u64::MAX), 4096);
        assert_eq!(max_connections_for(10), 8);
    }

    #[test]
    fn backoff_grows_to_a_tenth_of_a_second() {
        let ms: Vec<u64> = (1..=7).map(|n| backoff(n).as_millis() as u64).collect();
        assert_eq!(ms, [10, 20, 40, 80, 100, 100, 100]);
    }

    #[test]
    fn resource_errors_are_not_per_connection() {
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        let enfile = std::io::Error::from_raw_os_error(libc::ENFILE);
        let aborted = std::io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert!(!failure_of_one_connection(&emfile));
        assert!(!failure_of_one_connection(&enfile));
        assert!(failure_of_one_connection(&aborted));
    }

    #[test]
    fn an_episode_logs_its_start_and_end_once() {
        let t0 = Instant::now();
        let mut e = Episode::default();
        assert_eq!(e.hit(t0), Some(0));
        for i in 1..1000 {
            assert_eq!(e.hit(t0 + Duration::from_millis(i)), None);
        }
        let ended = e.clear(t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(ended.count, 1000);
        assert_eq!(ended.duration, Duration::from_secs(2));
        assert_eq!(e.clear(t0 + Duration::from_secs(3)), None);
    }

    #[test]
    fn episodes_that_flap_log_once_a_minute_with_a_count() {
        let t0 = Instant::now();
        let mut e = Episode::default();
        let mut logged = Vec::new();
        // An episode every second for three minutes.
        for s in 0..180u64 {
            let t = t0 + Duration::from_secs(s);
            if let Some(earlier) = e.hit(t) {
                logged.push((s, earlier));
            }
            let end = e.clear(t + Duration::from_millis(10));
            assert_eq!(end.is_some(), logged.last().is_some_and(|l| l.0 == s));
        }
        assert_eq!(logged, [(0, 0), (60, 59), (120, 59)]);
    }

    #[tokio::test]
    async fn each_connection_holds_a_slot_until_it_ends() {
        let mut a = NoDelayAcceptor::bind("127.0.0.1", 0, 4).await.unwrap();
        let addr = a.local_addr().unwrap();
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let s1 = a.accept(None).await.unwrap();
        let s2 = a.accept(None).await.unwrap();
        assert_eq!(a.open_connections(), 2);
        drop(s1);
        assert_eq!(a.open_connections(), 1);
        drop(s2);
        assert_eq!(a.open_connections(), 0);
    }

    #[tokio::test]
    async fn a_closed_listener_refuses_connections() {
        let a = NoDelayAcceptor::bind("127.0.0.1", 0, 4).await.unwrap();
        let addr = a.local_addr().unwrap();
        a.closer().close();
        let e = TcpStream::connect(addr).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    }
}

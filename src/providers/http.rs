//! HTTP clients for upstream calls: one set of pooled client lanes per distinct proxy (a
//! `reqwest::Client` each, and hyper's client for the relay's requests when there is no
//! proxy: `Direct`), and the proxy URL an account's proxy settings make.
//!
//! Why lanes: over HTTP/2 (which Anthropic's and OpenAI's APIs negotiate over TLS) hyper's
//! client keeps a single connection per host and queues every request past the server's
//! stream limit (`SETTINGS_MAX_CONCURRENT_STREAMS`, RFC 9113 section 5.1.2; 100 is the
//! recommended least) until a stream on it ends (hyperium/hyper#2197, #3623). A relay's
//! streams last minutes, so the next request would wait minutes. Each lane is a client of its
//! own with its own pool, so its own connection: a request takes the first lane carrying fewer
//! than `LANE_REQUESTS`, and a new lane (a new connection) opens when all are that busy. Lanes
//! open only once an answer came over HTTP/2: over HTTP/1.1 every request in flight has a
//! connection of its own anyway, and more clients would only split the idle pool and cost
//! memory (each client holds its own TLS settings and resolver).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;

use crate::config::Config;
use crate::model::ProxyConfig;

/// Requests one lane carries at once before the next request takes another lane: below the
/// stream limits HTTP/2 servers commonly announce (100 recommended, 128 to 256 at large CDNs).
pub const LANE_REQUESTS: usize = 64;
/// Lanes per proxy at most (4,096 requests at `LANE_REQUESTS` each); past that a request
/// takes the least busy lane.
pub const MAX_LANES: usize = 64;

/// One set of lanes per distinct proxy (and one without a proxy).
pub struct HttpClients {
    config: Config,
    /// The TLS settings every client is built with (one certificate verifier for all).
    tls: rustls::ClientConfig,
    by_proxy: Mutex<HashMap<String, Arc<Lanes>>>,
    /// What each upstream host speaks, learned by the lanes without a proxy (`Direct`).
    protocols: Arc<Protocols>,
}

impl HttpClients {
    /// Fails when the CA file the configuration names (`upstream_ca_file`) cannot be read or
    /// holds no certificate.
    pub fn new(config: &Config) -> Result<Self> {
        Ok(HttpClients {
            config: config.clone(),
            tls: upstream_tls(config.upstream_ca_file.as_deref())?,
            by_proxy: Mutex::new(HashMap::new()),
            protocols: Default::default(),
        })
    }

    /// The lanes for a proxy URL ("" = direct). Built once, shared by every account using it.
    pub fn get(&self, proxy_url: &str) -> Result<Arc<Lanes>> {
        let mut map = self.by_proxy.lock();
        if let Some(c) = map.get(proxy_url) {
            return Ok(c.clone());
        }
        let config = self.config.clone();
        let tls = self.tls.clone();
        let proxy = proxy_url.to_owned();
        let protocols = self.protocols.clone();
        let lanes = Arc::new(
            Lanes::new(LANE_REQUESTS, MAX_LANES, move || {
                let client = build_client(&config, &tls, &proxy)?;
                // Through a proxy, reqwest carries the request (it speaks HTTP, HTTPS and SOCKS
                // proxies); without one, hyper's client does.
                let direct = proxy
                    .is_empty()
                    .then(|| Direct::new(&config, &tls, protocols.clone()));
                Ok((client, direct))
            })?
            .learning_from(self.protocols.clone()),
        );
        map.insert(proxy_url.to_owned(), lanes.clone());
        Ok(lanes)
    }

    /// Client lanes open over all proxies: more than one per proxy means more than
    /// `LANE_REQUESTS` requests were in flight at once.
    pub fn lanes_opened(&self) -> usize {
        self.by_proxy.lock().values().map(|l| l.opened()).sum()
    }

    /// Upstream requests whose answers are still being read, over all lanes.
    pub fn in_flight(&self) -> usize {
        self.by_proxy.lock().values().map(|l| l.in_flight()).sum()
    }

    /// Close every lane past a proxy's first that carried nothing for `idle` (called
    /// periodically with the pool's idle time, so that after a burst of HTTP/2 streams the
    /// clients it opened go as their connections would).
    pub fn retire_idle(&self, idle: Duration) -> usize {
        let all: Vec<_> = self.by_proxy.lock().values().cloned().collect();
        all.iter().map(|l| l.retire_idle(idle)).sum()
    }
}

/// TLS for upstream connections: the platform's trust store (what reqwest would use), plus
/// the certificates of `ca_file` when set (a private gateway's or a TLS-inspecting proxy's
/// CA); ALPN offers HTTP/2 first, as reqwest does. Built once: the verifier (and the system
/// roots it loads) is shared by every lane and proxy instead of built again per client.
fn upstream_tls(ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let extra = match ca_file {
        None => Vec::new(),
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("reading CA certificates from {}", path.display()))?;
            if certs.is_empty() {
                anyhow::bail!("{} holds no PEM certificate", path.display());
            }
            certs
        }
    };
    let mut tls = crate::crypto::tls_client_config(extra)?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tls)
}

fn build_client(
    config: &Config,
    tls: &rustls::ClientConfig,
    proxy_url: &str,
) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .connect_timeout(config.connect_timeout)
        .pool_idle_timeout(config.upstream_idle)
        .pool_max_idle_per_host(config.upstream_idle_connections)
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none());
    if !proxy_url.is_empty() {
        b = b.proxy(reqwest::Proxy::all(proxy_url).context("invalid proxy")?);
    } else {
        b = b.no_proxy();
    }
    b.build().context("building HTTP client")
}

/// The relay path's sender on a lane without a proxy: hyper's pooled client itself, over the
/// same TLS settings. reqwest runs every request through its retry, redirect and
/// decompression layers: it clones the request for a retry and turns the URL into text and
/// back twice more, none of which the relay wants (it asks for `identity` bodies, follows no
/// redirect and fails over by itself). A bare forwarding proxy measured on one machine used
/// 98 us of CPU a request through reqwest and 50 us through hyper's client (128 clients,
/// `examples/floor_proxy.rs`).
///
/// An upstream that compresses its answer although asked for `identity` still has it decoded
/// (the decompression layer reqwest uses, with the encodings reqwest is built with).
///
/// One pool a serving thread (`runtime`): a connection's task runs on the thread that opened
/// it, and a request takes only connections its own thread opened, so an answer never wakes
/// another thread. Requests from any other thread share one more pool.
///
/// A host's first connection tells whether it speaks HTTP/2 (by ALPN; `Protocols`). Until
/// then one request at a time connects to it and the others wait for that connection (at most
/// the connect timeout); afterwards requests to an HTTP/2 host go through a client that knows
/// it, which shares one connection among them. hyper's client cannot know it beforehand: with
/// both protocols offered, every request that finds no connection in the pool opens its own,
/// so a storm of 10,000 streams right after a start opened 6,800 TLS connections to an HTTP/2
/// upstream, twice the memory of the streams themselves.
pub struct Direct {
    pools: Box<[DirectPool]>,
    protocols: Arc<Protocols>,
    /// How long a request waits for a host's first connection.
    connect_timeout: Duration,
}

struct DirectPool {
    /// Offers HTTP/2 and HTTP/1.1 (ALPN); for hosts not known to speak HTTP/2.
    any: DirectClient,
    /// HTTP/2 only; for hosts whose connections negotiated it.
    h2: DirectClient,
}

type DirectClient = tower_http::decompression::Decompression<
    hyper_util::client::legacy::Client<Recording, reqwest::Body>,
>;

/// What each upstream host (scheme and authority) was found to speak.
#[derive(Default)]
pub struct Protocols(Mutex<Hosts>, AtomicUsize);

/// The hosts by authority, plain HTTP first and HTTPS second: a request's host is looked up
/// with its URI's parts as they are, without building a key.
#[derive(Default)]
struct Hosts([HashMap<Box<str>, HostProtocol>; 2]);

/// A host: HTTPS or not, and its authority.
#[derive(Clone, Copy)]
struct Host<'a>(bool, &'a str);

impl<'a> Host<'a> {
    fn of(uri: &'a hyper::Uri) -> Host<'a> {
        Host(
            uri.scheme() == Some(&hyper::http::uri::Scheme::HTTPS),
            uri.authority().map(|a| a.as_str()).unwrap_or(""),
        )
    }
}

impl Hosts {
    fn get(&self, h: Host) -> Option<&HostProtocol> {
        self.0[h.0 as usize].get(h.1)
    }
    fn get_mut(&mut self, h: Host) -> Option<&mut HostProtocol> {
        self.0[h.0 as usize].get_mut(h.1)
    }
    fn insert(&mut self, h: Host, p: HostProtocol) -> Option<HostProtocol> {
        self.0[h.0 as usize].insert(h.1.into(), p)
    }
    fn remove(&mut self, h: Host) {
        self.0[h.0 as usize].remove(h.1);
    }
    fn values(&self) -> impl Iterator<Item = &HostProtocol> {
        self.0.iter().flat_map(|m| m.values())
    }
}

enum HostProtocol {
    /// Its first connection is being made; requests wait for it.
    Connecting(Arc<tokio::sync::Notify>),
    Http1,
    Http2,
}

impl Protocols {
    /// Hosts that speak HTTP/2 or whose first connection is being made: while there are any,
    /// requests spread over client lanes as for HTTP/2 (`Lanes::take`).
    fn multiplexing(&self) -> usize {
        self.1.load(Ordering::Relaxed)
    }

    fn recount(&self, hosts: &Hosts) {
        let n = hosts
            .values()
            .filter(|p| !matches!(p, HostProtocol::Http1))
            .count();
        self.1.store(n, Ordering::Relaxed);
    }

    /// Record what a connection to `key` negotiated and wake the requests waiting for it.
    fn connected(&self, key: Host, h2: bool) {
        let now = if h2 {
            HostProtocol::Http2
        } else {
            HostProtocol::Http1
        };
        let mut hosts = self.0.lock();
        let was = match hosts.get_mut(key) {
            Some(known) => Some(std::mem::replace(known, now)),
            None => hosts.insert(key, now),
        };
        self.recount(&hosts);
        if let Some(HostProtocol::Connecting(waiting)) = was {
            waiting.notify_waiters();
        }
    }

    /// A first connection failed or was given up: the next request tries again.
    fn not_connected(&self, key: Host) {
        let mut hosts = self.0.lock();
        if let Some(HostProtocol::Connecting(waiting)) = hosts.get(key) {
            waiting.notify_waiters();
            hosts.remove(key);
            self.recount(&hosts);
        }
    }
}

/// The connector of `Direct`'s clients: records what each new connection negotiated.
#[derive(Clone)]
pub struct Recording {
    inner: hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    protocols: Arc<Protocols>,
}

/// Ends a first connection's wait if the connect ends without a connection.
struct Unfinished {
    protocols: Arc<Protocols>,
    /// Where the connection goes.
    to: Option<hyper::Uri>,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(uri) = &self.to {
            self.protocols.not_connected(Host::of(uri));
        }
    }
}

impl tower_service::Service<hyper::Uri> for Recording {
    type Response = hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        use hyper_util::client::legacy::connect::Connection;
        let mut unfinished = Unfinished {
            protocols: self.protocols.clone(),
            to: Some(uri.clone()),
        };
        let connecting = self.inner.call(uri);
        Box::pin(async move {
            let conn = connecting.await?;
            if let Some(uri) = unfinished.to.take() {
                let h2 = conn.connected().is_negotiated_h2();
                unfinished.protocols.connected(Host::of(&uri), h2);
            }
            Ok(conn)
        })
    }
}

impl Direct {
    /// The settings `build_client` gives reqwest, and reqwest's own defaults where crs sets
    /// none (TCP keep-alive probes after 15 s idle, every 15 s, three times).
    pub fn new(config: &Config, tls: &rustls::ClientConfig, protocols: Arc<Protocols>) -> Direct {
        use hyper_util::client::legacy::connect::HttpConnector;
        use hyper_util::rt::{TokioExecutor, TokioTimer};
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(15)));
        http.set_keepalive_interval(Some(Duration::from_secs(15)));
        http.set_keepalive_retries(Some(3));
        let mut tls = tls.clone();
        // The builder sets ALPN itself (HTTP/2 first, then HTTP/1.1, as `upstream_tls` does).
        tls.alpn_protocols.clear();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let connector = Recording {
            inner: https,
            protocols: protocols.clone(),
        };
        // The idle connections kept are shared out among the serving threads' pools.
        let idle_per_pool = config
            .upstream_idle_connections
            .div_ceil(config.serving_threads.max(1));
        let client = |h2_only: bool| {
            let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .pool_idle_timeout(config.upstream_idle)
                .pool_max_idle_per_host(idle_per_pool)
                .http2_only(h2_only)
                .build(connector.clone());
            tower_http::decompression::Decompression::new(client)
                .gzip(true)
                .br(true)
                .deflate(true)
                .no_zstd()
        };
        let pools = (0..=config.serving_threads)
            .map(|_| DirectPool {
                any: client(false),
                h2: client(true),
            })
            .collect();
        Direct {
            pools,
            protocols,
            connect_timeout: config.connect_timeout,
        }
    }

    /// The client for a request to `uri`'s host: the HTTP/2 one once the host is known to
    /// speak it. While the host's first connection is being made, waits for it.
    async fn client_for(&self, uri: &hyper::Uri) -> DirectClient {
        let pool = &self.pools[crate::runtime::worker().min(self.pools.len() - 1)];
        let key = Host::of(uri);
        let waiting = {
            let mut hosts = self.protocols.0.lock();
            match hosts.get(key) {
                Some(HostProtocol::Http2) => return pool.h2.clone(),
                Some(HostProtocol::Http1) => return pool.any.clone(),
                Some(HostProtocol::Connecting(w)) => w.clone(),
                None => {
                    let w = Arc::new(tokio::sync::Notify::new());
                    hosts.insert(key, HostProtocol::Connecting(w));
                    self.protocols.recount(&hosts);
                    return pool.any.clone();
                }
            }
        };
        let notified = waiting.notified();
        tokio::pin!(notified);
        // Registered before the lock is taken again, so a wake-up in between is not lost.
        notified.as_mut().enable();
        let still_connecting = matches!(
            self.protocols.0.lock().get(key),
            Some(HostProtocol::Connecting(w)) if Arc::ptr_eq(w, &waiting)
        );
        if still_connecting {
            let _ = tokio::time::timeout(self.connect_timeout, notified).await;
        }
        match self.protocols.0.lock().get(key) {
            Some(HostProtocol::Http2) => pool.h2.clone(),
            _ => pool.any.clone(),
        }
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, SendError> {
        use tower_service::Service;
        let built = rb.build().map_err(SendError::reqwest)?;
        let req = hyper::Request::<reqwest::Body>::try_from(built).map_err(SendError::reqwest)?;
        let mut client = self.client_for(req.uri()).await;
        // hyper's client is always ready (it queues requests itself); asked all the same, as
        // a tower service must be.
        let sent = match std::future::poll_fn(|cx| client.poll_ready(cx)).await {
            Ok(()) => client.call(req).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(r) => Ok(reqwest::Response::from(r.map(reqwest::Body::wrap))),
            Err(e) => Err(SendError {
                connect: e.is_connect(),
                error: anyhow::Error::from(e),
            }),
        }
    }
}

/// Sending an upstream request failed before an answer came.
#[derive(Debug)]
pub struct SendError {
    /// No connection could be made (refused, DNS, TLS).
    pub connect: bool,
    /// With its causes (`{:#}` shows them): the outer error says only that sending failed.
    pub error: anyhow::Error,
}

impl SendError {
    fn reqwest(e: reqwest::Error) -> SendError {
        SendError {
            connect: e.is_connect(),
            error: anyhow::Error::from(e),
        }
    }
}

/// `Lanes::protocol` values.
const UNKNOWN: u8 = 0;
const HTTP_1: u8 = 1;
const HTTP_2: u8 = 2;

type BuildClient = Box<dyn Fn() -> Result<(reqwest::Client, Option<Direct>)> + Send + Sync>;

/// Clients built alike, each with its own connection pool, and the requests each carries.
pub struct Lanes {
    build: BuildClient,
    per_lane: usize,
    /// What the answers came over: `UNKNOWN` until the first, then `HTTP_1` until one came
    /// over HTTP/2 (`HTTP_2` stays). Over HTTP/1.1 only the first lane is used.
    protocol: AtomicU8,
    /// What the hosts reached through these lanes speak, as their connections showed.
    hosts: Arc<Protocols>,
    /// Built at once (it also checks that the settings build).
    first: Arc<Lane>,
    /// Opened when every open lane is full; closed by `retire_idle` once idle.
    more: Box<[ArcSwapOption<Lane>]>,
    /// Held while a lane is built, so that two requests do not build the same one.
    opening: Mutex<()>,
}

struct Lane {
    client: reqwest::Client,
    /// Sends the relay's requests when the lane has no proxy.
    direct: Option<Direct>,
    load: Arc<LaneLoad>,
}

/// Requests a lane carries, and when it last gave one back (ms since `EPOCH`).
#[derive(Debug, Default)]
struct LaneLoad {
    in_flight: AtomicUsize,
    last_used: AtomicU64,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// At least 1, so that a lane given back in the first millisecond is not taken for one that
/// was idle since the start.
fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64 + 1
}

/// A request counted on its lane until this is dropped: keep it as long as the answer is read.
pub struct LaneTicket(Arc<Lane>);

impl std::fmt::Debug for LaneTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("LaneTicket").field(&self.0.load).finish()
    }
}

impl LaneTicket {
    /// Send a request built on this lane's client: by hyper's client when the lane has no
    /// proxy, else by reqwest.
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, SendError> {
        match &self.0.direct {
            Some(direct) => direct.send(rb).await,
            None => rb.send().await.map_err(SendError::reqwest),
        }
    }
}

impl Drop for LaneTicket {
    fn drop(&mut self) {
        self.0.load.last_used.store(now_ms(), Ordering::Relaxed);
        self.0.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lane {
    fn new((client, direct): (reqwest::Client, Option<Direct>)) -> Self {
        Lane {
            client,
            direct,
            load: Arc::default(),
        }
    }

    fn in_flight(&self) -> usize {
        self.load.in_flight.load(Ordering::Relaxed)
    }

    /// No clock read here: a lane carrying requests is never idle, and the ticket that
    /// brings it back to none stamps the time.
    fn take(self: &Arc<Self>) -> (reqwest::Client, LaneTicket) {
        self.load.in_flight.fetch_add(1, Ordering::Relaxed);
        (self.client.clone(), LaneTicket(self.clone()))
    }
}

impl Lanes {
    /// `per_lane` requests a lane before the next opens, `max` lanes, each client from `build`.
    pub fn new(
        per_lane: usize,
        max: usize,
        build: impl Fn() -> Result<(reqwest::Client, Option<Direct>)> + Send + Sync + 'static,
    ) -> Result<Self> {
        Ok(Lanes {
            first: Arc::new(Lane::new(build()?)),
            more: (1..max.max(1)).map(|_| ArcSwapOption::empty()).collect(),
            build: Box::new(build),
            per_lane: per_lane.max(1),
            protocol: AtomicU8::new(UNKNOWN),
            hosts: Default::default(),
            opening: Mutex::new(()),
        })
    }

    /// The first lane's client, for calls outside the request path (token refreshes, usage
    /// polls), which are few and short.
    pub fn first(&self) -> &reqwest::Client {
        &self.first.client
    }

    /// Share what `Direct` learns of hosts' protocols (`HttpClients` does for its lanes).
    fn learning_from(mut self, hosts: Arc<Protocols>) -> Self {
        self.hosts = hosts;
        self
    }

    /// Report the HTTP version an answer came in: the first answer over HTTP/1.1 keeps
    /// requests on the first lane, until one comes over HTTP/2.
    pub fn answered_over(&self, version: reqwest::Version) {
        if version == reqwest::Version::HTTP_2 {
            if self.protocol.load(Ordering::Relaxed) != HTTP_2 {
                self.protocol.store(HTTP_2, Ordering::Relaxed);
            }
        } else if self.protocol.load(Ordering::Relaxed) == UNKNOWN {
            let _ = self.protocol.compare_exchange(
                UNKNOWN,
                HTTP_1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// A client for one request and its ticket: the first lane with room, a new lane when all
    /// open ones are full, the least busy when no more may open; only the first lane once the
    /// answers came over HTTP/1.1. Before the first answer the upstream may well speak
    /// HTTP/2 (Anthropic's and OpenAI's APIs do): a storm of streams after a start, all on the
    /// first lane, would queue past the server's stream limit on its one connection (10,000
    /// streams: 7 s to the first byte and twice the memory).
    pub fn take(&self) -> (reqwest::Client, LaneTicket) {
        let n = self.first.in_flight();
        // A host speaking HTTP/2 (or not known yet) may have come after HTTP/1.1 answers:
        // its requests must spread over lanes before they queue on one connection.
        let single =
            self.protocol.load(Ordering::Relaxed) == HTTP_1 && self.hosts.multiplexing() == 0;
        if single || n < self.per_lane {
            return self.first.take();
        }
        let mut least: Option<(Arc<Lane>, usize)> = None;
        for slot in self.more.iter() {
            let lane = match slot.load_full() {
                Some(l) => l,
                None => match self.open(slot) {
                    Some(l) => l,
                    None => break,
                },
            };
            let m = lane.in_flight();
            if m < self.per_lane {
                return lane.take();
            }
            if least.as_ref().is_none_or(|(_, k)| m < *k) {
                least = Some((lane, m));
            }
        }
        match least {
            Some((lane, m)) if m < n => lane.take(),
            _ => self.first.take(),
        }
    }

    /// Build the lane of an empty slot (or find the one a racing request built).
    fn open(&self, slot: &ArcSwapOption<Lane>) -> Option<Arc<Lane>> {
        let _one_at_a_time = self.opening.lock();
        if let Some(l) = slot.load_full() {
            return Some(l);
        }
        match (self.build)() {
            Ok(c) => {
                let lane = Arc::new(Lane::new(c));
                slot.store(Some(lane.clone()));
                Some(lane)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not open another upstream client lane");
                None
            }
        }
    }

    /// Close the lanes past the first that carried nothing for `idle`: their client, its
    /// pool and connections go. (A request that took such a lane just before keeps its client
    /// until its answer is read.)
    pub fn retire_idle(&self, idle: Duration) -> usize {
        let cutoff = now_ms().saturating_sub(idle.as_millis() as u64);
        let mut retired = 0;
        for slot in self.more.iter() {
            let idle_lane = slot.load().as_ref().is_some_and(|l| {
                l.in_flight() == 0 && l.load.last_used.load(Ordering::Relaxed) <= cutoff
            });
            if idle_lane {
                slot.store(None);
                retired += 1;
            }
        }
        retired
    }

    /// Requests in flight over all lanes.
    pub fn in_flight(&self) -> usize {
        self.first.in_flight()
            + self
                .more
                .iter()
                .filter_map(|l| l.load().as_ref().map(|l| l.in_flight()))
                .sum::<usize>()
    }

    /// Lanes open now.
    pub fn opened(&self) -> usize {
        1 + self.more.iter().filter(|l| l.load().is_some()).count()
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
            super::request::encode_segment(&p.username),
            super::request::encode_segment(password),
            p.host,
            p.port
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP/2 server (cleartext, prior knowledge) that allows two streams a connection, as
    /// a server announces in its SETTINGS, and keeps every answer's body open until the test
    /// ends, like a long model stream. Returns its address and the connections it accepted.
    async fn h2_server_two_streams() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        use http_body_util::StreamBody;
        use hyper::body::Frame;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(|_req| async {
                    let first = futures_util::stream::once(async {
                        Ok::<_, std::convert::Infallible>(Frame::data(bytes::Bytes::from_static(
                            b"event: ping\ndata: {}\n\n",
                        )))
                    });
                    let body = StreamBody::new(first.chain(futures_util::stream::pending()));
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(body))
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .max_concurrent_streams(2)
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
                );
            }
        });
        (addr, conns)
    }

    fn h2_client() -> Result<reqwest::Client> {
        crate::init_tls();
        Ok(reqwest::Client::builder()
            .http2_prior_knowledge()
            .no_proxy()
            .build()?)
    }

    use futures_util::StreamExt;

    /// A server answering every request with `body` gzip-compressed (as an upstream may,
    /// although asked for `identity`), the headers of the last request it saw and the
    /// connections it accepted.
    async fn gzip_server(
        body: &'static str,
    ) -> (
        std::net::SocketAddr,
        Arc<Mutex<Vec<String>>>,
        Arc<AtomicUsize>,
    ) {
        use std::io::Write;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = seen.clone();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let kept = kept.clone();
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    *kept.lock() = req.headers().keys().map(|k| k.to_string()).collect();
                    let mut gz = flate2::write::GzEncoder::new(Vec::new(), Default::default());
                    gz.write_all(body.as_bytes()).unwrap();
                    let bytes = bytes::Bytes::from(gz.finish().unwrap());
                    async move {
                        hyper::Response::builder()
                            .header("content-encoding", "gzip")
                            .body(http_body_util::Full::new(bytes))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
                );
            }
        });
        (addr, seen, conns)
    }

    #[tokio::test]
    async fn a_lane_without_a_proxy_sends_through_hyper_and_decodes_compressed_answers() {
        crate::init_tls();
        let config = Config::load_with_env(&Default::default(), &|_| None).unwrap();
        let clients = HttpClients::new(&config).unwrap();
        let direct = clients.get("").unwrap();
        assert!(direct.first.direct.is_some());
        let proxied = clients.get("http://127.0.0.1:9").unwrap();
        assert!(
            proxied.first.direct.is_none(),
            "a proxy is reqwest's to speak"
        );

        let (addr, seen, _) = gzip_server("{\"usage\":{\"output_tokens\":5}}").await;
        let (client, ticket) = direct.take();
        let rb = client
            .post(format!("http://{addr}/v1/messages"))
            .header("accept-encoding", "identity")
            .body("{}");
        let r = ticket.send(rb).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers().get("content-encoding"), None);
        assert_eq!(r.text().await.unwrap(), "{\"usage\":{\"output_tokens\":5}}");
        // reqwest's own default header (`accept: */*`) is not added: the request went out
        // through hyper's client as it was built.
        let headers = seen.lock().clone();
        assert!(
            headers.contains(&"content-length".to_owned()),
            "{headers:?}"
        );
        assert!(!headers.contains(&"accept".to_owned()), "{headers:?}");
        drop(ticket);
        assert_eq!(direct.in_flight(), 0);

        // A port nobody listens on: a connect error, which fails the account over.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let (client, ticket) = direct.take();
        let e = ticket
            .send(client.post(format!("http://127.0.0.1:{port}/v1/messages")))
            .await
            .unwrap_err();
        assert!(e.connect, "{:#}", e.error);
    }

    #[test]
    fn each_serving_thread_sends_over_upstream_connections_of_its_own() {
        crate::init_tls();
        let config = Config::load_with_env(&Default::default(), &|_| None).unwrap();
        let clients = HttpClients::new(&config).unwrap();
        let lanes = clients.get("").unwrap();
        let upstream = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (addr, _, conns) = upstream.block_on(gzip_server("{}"));
        let url = format!("http://{addr}/v1/messages");
        let ask = |lanes: &Arc<Lanes>| {
            let (client, ticket) = lanes.take();
            let rb = client.post(&url).body("{}");
            async move {
                let r = tokio::time::timeout(Duration::from_secs(5), ticket.send(rb))
                    .await
                    .expect("an answer")
                    .unwrap();
                assert_eq!(r.bytes().await.unwrap(), "{}");
            }
        };
        let (first_done, second_may) = tokio::sync::oneshot::channel::<()>();
        let (second_done, first_may) = tokio::sync::oneshot::channel::<()>();
        std::thread::scope(|s| {
            // Serving thread 1 asks twice, and between its two requests (its connection idle
            // in the pool, its runtime running) serving thread 2 asks twice.
            s.spawn(|| {
                let (rt, _registered) = crate::runtime::serving_runtime(1, || {}).unwrap();
                rt.block_on(async {
                    ask(&lanes).await;
                    first_done.send(()).unwrap();
                    first_may.await.unwrap();
                    ask(&lanes).await;
                });
            });
            s.spawn(|| {
                let (rt, _registered) = crate::runtime::serving_runtime(2, || {}).unwrap();
                rt.block_on(async {
                    second_may.await.unwrap();
                    ask(&lanes).await;
                    ask(&lanes).await;
                    second_done.send(()).unwrap();
                });
            });
        });
        // One connection each: thread 2 did not take thread 1's idle one (whose task runs on
        // thread 1), and each reused its own.
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_full_http2_connection_does_not_hold_back_the_next_request() {
        let (addr, conns) = h2_server_two_streams().await;
        let url = format!("http://{addr}/v1/messages");
        let wait = std::time::Duration::from_secs(5);

        // What lanes work around: one client, one connection, the third stream waits for one
        // of the first two to end.
        let one = h2_client().unwrap();
        let a = one.get(&url).send().await.unwrap();
        let b = one.get(&url).send().await.unwrap();
        assert_eq!(a.version(), reqwest::Version::HTTP_2);
        let third =
            tokio::time::timeout(std::time::Duration::from_millis(300), one.get(&url).send()).await;
        assert!(third.is_err(), "the server's stream limit did not apply");
        drop((a, b));
        assert_eq!(conns.load(Ordering::SeqCst), 1);

        // Lanes of two: five streams at once answer at once, on three connections.
        let lanes = Lanes::new(2, 4, || Ok((h2_client()?, None))).unwrap();
        let mut held = Vec::new();
        for i in 0..5 {
            let (client, ticket) = lanes.take();
            let mut r = tokio::time::timeout(wait, client.get(&url).send())
                .await
                .unwrap_or_else(|_| panic!("stream {i} was held back"))
                .unwrap();
            assert_eq!(r.status(), 200);
            lanes.answered_over(r.version());
            // The first event arrives: the stream is live, not queued.
            let chunk = tokio::time::timeout(wait, r.chunk())
                .await
                .unwrap()
                .unwrap();
            assert!(chunk.is_some_and(|c| c.starts_with(b"event: ping")));
            held.push((r, ticket));
        }
        assert_eq!(lanes.opened(), 3);
        assert_eq!(conns.load(Ordering::SeqCst), 1 + 3);
        assert_eq!(counts(&lanes), vec![2, 2, 1]);

        // Answers read to the end (here: dropped) give their lane back; the next request
        // takes the first lane again, on its open connection.
        held.drain(..2);
        assert_eq!(counts(&lanes), vec![0, 2, 1]);
        let (client, _ticket) = lanes.take();
        let r = tokio::time::timeout(wait, client.get(&url).send())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(counts(&lanes), vec![1, 2, 1]);
        assert_eq!(conns.load(Ordering::SeqCst), 1 + 3);
    }

    fn counts(l: &Lanes) -> Vec<usize> {
        std::iter::once(l.first.in_flight())
            .chain(
                l.more
                    .iter()
                    .filter_map(|s| s.load().as_ref().map(|l| l.in_flight())),
            )
            .collect()
    }

    #[test]
    fn idle_lanes_past_the_first_close_and_busy_ones_stay() {
        crate::init_tls();
        let lanes = Lanes::new(1, 3, || Ok((reqwest::Client::new(), None))).unwrap();
        lanes.answered_over(reqwest::Version::HTTP_2);
        let (a, b, c) = (lanes.take().1, lanes.take().1, lanes.take().1);
        assert_eq!(lanes.opened(), 3);
        drop(c);
        assert_eq!(
            lanes.retire_idle(Duration::from_secs(60)),
            0,
            "the third lane carried a request just now"
        );
        assert_eq!(lanes.retire_idle(Duration::ZERO), 1);
        assert_eq!(counts(&lanes), vec![1, 1]);
        drop((a, b));
        assert_eq!(lanes.retire_idle(Duration::ZERO), 1);
        // The first lane stays, whatever its load.
        assert_eq!(lanes.opened(), 1);
        // Demand opens them again.
        let again: Vec<_> = (0..3).map(|_| lanes.take().1).collect();
        assert_eq!(counts(&lanes), vec![1, 1, 1]);
        drop(again);
    }

    #[test]
    fn past_the_last_lane_the_least_busy_one_is_taken() {
        crate::init_tls();
        let lanes = Lanes::new(1, 3, || Ok((reqwest::Client::new(), None))).unwrap();
        let first = lanes.take().1;
        lanes.answered_over(reqwest::Version::HTTP_2);
        let mut tickets = vec![first, lanes.take().1, lanes.take().1];
        assert_eq!(counts(&lanes), vec![1, 1, 1]);
        tickets.push(lanes.take().1);
        assert_eq!(counts(&lanes), vec![2, 1, 1]);
        tickets.push(lanes.take().1);
        tickets.push(lanes.take().1);
        assert_eq!(counts(&lanes), vec![2, 2, 2]);
        assert_eq!(lanes.opened(), 3);
        // A ticket of lane 1 returned: lane 1 has room again and takes the next request.
        tickets.remove(1);
        assert_eq!(counts(&lanes), vec![2, 1, 2]);
        tickets.push(lanes.take().1);
        assert_eq!(counts(&lanes), vec![2, 2, 2]);
        drop(tickets);
        assert_eq!(counts(&lanes), vec![0, 0, 0]);
    }

    #[test]
    fn a_host_is_its_scheme_and_authority() {
        let uri = |s: &str| s.parse::<hyper::Uri>().unwrap();
        let hosts = Protocols::default();
        let tls = uri("https://api.example:443/v1/messages?beta=true");
        hosts.connected(Host::of(&tls), true);
        // The same host over plain HTTP is another host; the path does not count.
        let plain = uri("http://api.example:443/v1/messages");
        assert!(hosts.0.lock().get(Host::of(&plain)).is_none());
        let other_path = uri("https://api.example:443/v1/complete");
        assert!(matches!(
            hosts.0.lock().get(Host::of(&other_path)),
            Some(HostProtocol::Http2)
        ));
        hosts.connected(Host::of(&plain), false);
        assert_eq!(hosts.multiplexing(), 1);
        // A failed first connection is forgotten only while it is still being made.
        hosts.not_connected(Host::of(&plain));
        assert!(matches!(
            hosts.0.lock().get(Host::of(&plain)),
            Some(HostProtocol::Http1)
        ));
    }

    #[test]
    fn over_http_1_every_request_stays_on_the_first_lane() {
        crate::init_tls();
        let lanes = Lanes::new(2, 3, || Ok((reqwest::Client::new(), None))).unwrap();
        // Before any answer: as if the upstream multiplexed, a full lane opens the next.
        let early: Vec<_> = (0..3).map(|_| lanes.take().1).collect();
        assert_eq!(counts(&lanes), vec![2, 1]);
        lanes.answered_over(reqwest::Version::HTTP_11);
        let tickets: Vec<_> = (0..5).map(|_| lanes.take().1).collect();
        assert_eq!(counts(&lanes), vec![7, 1]);
        drop(early);
        // The lane opened early goes once idle; the first stays.
        assert_eq!(lanes.retire_idle(Duration::ZERO), 1);
        assert_eq!(lanes.opened(), 1);
        // A new host whose first connection is being made (it may speak HTTP/2): a full lane
        // opens the next again, before any answer from it.
        let hosts = Arc::new(Protocols::default());
        let lanes = lanes.learning_from(hosts.clone());
        let h2_host = Host(true, "h2.example");
        hosts
            .0
            .lock()
            .insert(h2_host, HostProtocol::Connecting(Default::default()));
        hosts.recount(&hosts.0.lock());
        let (_, spread) = lanes.take();
        assert_eq!(counts(&lanes), vec![5, 1]);
        drop(spread);
        hosts.connected(h2_host, false);
        // It spoke HTTP/1.1: requests stay on the first lane again.
        let (_, back) = lanes.take();
        assert_eq!(counts(&lanes), vec![6, 0]);
        drop(back);
        // An answer over HTTP/2 later (another host behind the same proxy) opens lanes again.
        lanes.answered_over(reqwest::Version::HTTP_2);
        let (_, more) = lanes.take();
        assert_eq!(counts(&lanes), vec![5, 1]);
        // And HTTP/1.1 answers after it do not close them off.
        lanes.answered_over(reqwest::Version::HTTP_11);
        let (_, again) = lanes.take();
        assert_eq!(counts(&lanes), vec![5, 2]);
        drop((tickets, more, again));
        assert_eq!(counts(&lanes), vec![0, 0]);
    }

    #[test]
    fn a_client_that_cannot_be_built_is_an_error_at_once() {
        let r = Lanes::new(1, 2, || Err(anyhow::anyhow!("invalid proxy")));
        assert!(r.is_err());
    }

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
}

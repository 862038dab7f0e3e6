//! Mocks of the upstream APIs (Anthropic Messages, OpenAI Responses and Chat, the Codex
//! backend and OpenAI's auth server, Gemini, Bedrock, Anthropic OAuth) for tests, local
//! trials and benchmarks. They speak the real wire formats: JSON messages with usage blocks, SSE with Anthropic's event names and
//! order, error bodies, request-id and rate-limit headers.
//!
//! A request can steer the mock with directives anywhere in its body text (tests put them in
//! the system prompt): `mock:usage=IN,OUT,CACHE_CREATE,CACHE_READ[,CACHE_1H]`,
//! `mock:status=429`, `mock:delay_ms=N` (between SSE events; before a non-stream Messages answer), `mock:chunks=N`, `mock:cut`
//! (drop the connection mid-stream). Without directives usage is derived from the body size.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};
use bytes::Bytes;
use parking_lot::Mutex;
use salvo::conn::{Acceptor, TcpListener};
use salvo::http::{HeaderValue, StatusCode};
use salvo::prelude::*;
use serde_json::json;

use crate::usage::TokenUsage;

mod anthropic;
pub use anthropic::subscription_headers;
pub use openai::TOOL_ARGS;
pub mod bedrock;
pub mod codeassist;
pub mod codex;
mod gemini;
mod oauth;
mod openai;
pub(crate) mod stream;

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// The HTTP version the request came over.
    pub version: salvo::http::Version,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An answer scripted for one upstream credential (an account): status, error message and
/// headers, for `times` requests (None: until removed).
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub message: String,
    pub headers: Vec<(String, String)>,
    pub times: Option<u32>,
}

/// A scripted failure: status, optional `retry-after` seconds, and the error message.
#[derive(Debug, Clone)]
pub struct Forced {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub message: String,
}

#[derive(Default)]
pub struct MockState {
    /// Upstream keys the mock accepts (empty = any).
    pub accepted_keys: Mutex<Vec<String>>,
    pub seen: Mutex<Vec<SeenRequest>>,
    /// Usage of every successful answer the mock produced.
    pub served: Mutex<Vec<TokenUsage>>,
    /// Streams that were sent to the end.
    pub streams_completed: AtomicU64,
    /// Streams whose receiver went away before the end.
    pub streams_dropped: AtomicU64,
    /// TLS connections accepted (the HTTPS listener only).
    pub tls_connections: AtomicU64,
    /// The exact bytes of every stream sent to the end, in completion order.
    pub sent_streams: Mutex<Vec<Bytes>>,
    /// When set, every Messages / Responses request fails this way (to script an unhealthy
    /// upstream account).
    pub forced: Mutex<Option<Forced>>,
    /// OAuth mock: lifetime of issued access tokens, and whether refreshes fail.
    pub oauth_expires_in: std::sync::atomic::AtomicI64,
    pub oauth_fail_refresh: std::sync::atomic::AtomicBool,
    /// Per upstream credential (API key or OAuth access token): a scripted error answer.
    pub scripted: Mutex<std::collections::HashMap<String, Scripted>>,
    /// Per upstream credential: headers added to successful Messages answers (in place of the
    /// default subscription headers OAuth tokens get).
    pub answer_headers: Mutex<std::collections::HashMap<String, Vec<(String, String)>>>,
    /// `GET /api/oauth/usage`: the answer per access token (the default answer for others),
    /// and a scripted failure of the endpoint.
    pub oauth_usage: Mutex<std::collections::HashMap<String, serde_json::Value>>,
    pub oauth_usage_forced: Mutex<Option<Forced>>,
    /// Code Assist: unfinished `onboardUser` answers still to give, and whether the user is
    /// onboarded (then `loadCodeAssist` names the project).
    pub onboard_pending: std::sync::atomic::AtomicU32,
    pub onboarded: std::sync::atomic::AtomicBool,
    /// WorkOS device codes issued, with the polls each has had (approved on the second).
    pub workos_devices: Mutex<std::collections::HashMap<String, u32>>,
    /// Keep a copy of each request (off for benchmarks).
    pub record: std::sync::atomic::AtomicBool,
    counter: AtomicU64,
}

impl MockState {
    pub fn served_total(&self) -> TokenUsage {
        let mut t = TokenUsage::default();
        for u in self.served.lock().iter() {
            t.input_tokens += u.input_tokens;
            t.output_tokens += u.output_tokens;
            t.cache_create_tokens += u.cache_create_tokens;
            t.cache_read_tokens += u.cache_read_tokens;
            t.ephemeral_5m_tokens += u.ephemeral_5m_tokens;
            t.ephemeral_1h_tokens += u.ephemeral_1h_tokens;
        }
        t
    }

    pub fn served_count(&self) -> usize {
        self.served.lock().len()
    }
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
    stop: Stop,
}

/// How a mock stops serving.
enum Stop {
    Server(salvo::server::ServerHandle),
    /// The TLS accept loop, which owns its connections' tasks.
    Task(tokio::task::AbortHandle),
}

fn router(state: &Arc<MockState>) -> Router {
    Router::new()
        .push(anthropic::routes(state))
        .push(bedrock::routes(state))
        .push(openai::routes(state))
        .push(gemini::routes(state))
        .push(oauth::routes(state))
        .push(codex::routes(state))
        // Last: Code Assist's `/v1internal:{method}` is one path segment.
        .push(codeassist::routes(state))
}

fn new_state() -> Arc<MockState> {
    let state = Arc::new(MockState::default());
    state.record.store(true, Ordering::Relaxed);
    state.oauth_expires_in.store(28_800, Ordering::Relaxed);
    state
}

impl MockUpstream {
    pub async fn start() -> Result<Self> {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(listen: &str) -> Result<Self> {
        let acceptor = TcpListener::new(listen.to_owned())
            .try_bind()
            .await
            .with_context(|| format!("mock upstream cannot listen on {listen}"))?;
        let addr = acceptor
            .holdings()
            .first()
            .and_then(|h| h.local_addr.clone().into_std())
            .context("mock has no address")?;
        let state = new_state();
        let server = Server::new(acceptor);
        let handle = server.handle();
        tokio::spawn(server.serve(router(&state)));
        Ok(MockUpstream {
            addr,
            state,
            stop: Stop::Server(handle),
        })
    }

    /// Over TLS with this certificate chain and key (PEM), offering HTTP/2 and HTTP/1.1 by
    /// ALPN as Anthropic's and OpenAI's APIs do (both answer `h2` to a client that offers it).
    /// Served by hyper directly: crs's own server speaks only HTTP/1.1.
    pub async fn start_tls_on(listen: &str, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .context("the mock's TLS certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).context("the mock's TLS key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .context("the mock's TLS certificate and key")?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tls = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("mock upstream cannot listen on {listen} (TLS)"))?;
        let addr = listener.local_addr()?;
        let state = new_state();
        let service = Arc::new(salvo::Service::new(router(&state)));
        let counted = state.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                while conns.try_join_next().is_some() {}
                let Ok((tcp, remote)) = listener.accept().await else {
                    // Out of descriptors, say: wait a little instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                counted.tls_connections.fetch_add(1, Ordering::Relaxed);
                let (tls, service) = (tls.clone(), service.clone());
                conns.spawn(async move {
                    let Ok(stream) = tls.accept(tcp).await else {
                        return;
                    };
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let handler = service.hyper_handler(
                        addr.into(),
                        remote.into(),
                        salvo::http::uri::Scheme::HTTPS,
                        None,
                        salvo::conn::ConnCtrl::new(),
                        None,
                    );
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = if h2 {
                        hyper::server::conn::http2::Builder::new(
                            hyper_util::rt::TokioExecutor::new(),
                        )
                        .serve_connection(io, handler)
                        .await
                    } else {
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(io, handler)
                            .await
                    };
                });
            }
        });
        Ok(MockUpstream {
            addr,
            state,
            stop: Stop::Task(task.abort_handle()),
        })
    }

    /// The base URL; over TLS by the name `localhost`, which the certificate must carry.
    pub fn url(&self) -> String {
        match self.stop {
            Stop::Task(_) => format!("https://localhost:{}", self.addr.port()),
            Stop::Server(_) => format!("http://{}", self.addr),
        }
    }

    pub fn stop(&self) {
        match &self.stop {
            Stop::Server(h) => h.stop_forceful(),
            Stop::Task(t) => t.abort(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Directives {
    pub usage: Option<TokenUsage>,
    pub status: Option<u16>,
    pub delay_ms: u64,
    pub chunks: Option<usize>,
    pub cut: bool,
    /// Compress the answer with gzip whatever the client accepts (an upstream that ignores
    /// `accept-encoding: identity`).
    pub gzip: bool,
    /// Answer with a call of the request's first tool (OpenAI Responses).
    pub tool: bool,
}

impl Directives {
    /// The usage the request asked for (`mock:usage`), else one derived from its size.
    pub(crate) fn usage_or_size(&self, body: &[u8]) -> TokenUsage {
        self.usage.unwrap_or(TokenUsage {
            input_tokens: (body.len() as u64 / 16).max(1),
            output_tokens: 12,
            ..Default::default()
        })
    }
}

pub(crate) fn directives(body: &[u8]) -> Directives {
    let text = String::from_utf8_lossy(body);
    let mut d = Directives::default();
    for (i, _) in text.match_indices("mock:") {
        let rest = &text[i + 5..];
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '=' | ','))
            .collect();
        let (name, val) = word.split_once('=').unwrap_or((word.as_str(), ""));
        match name {
            "usage" => {
                let n: Vec<u64> = val.split(',').filter_map(|x| x.parse().ok()).collect();
                if n.len() >= 4 {
                    let h1 = n.get(4).copied().unwrap_or(0).min(n[2]);
                    d.usage = Some(TokenUsage {
                        input_tokens: n[0],
                        output_tokens: n[1],
                        cache_create_tokens: n[2],
                        cache_read_tokens: n[3],
                        ephemeral_5m_tokens: n[2] - h1,
                        ephemeral_1h_tokens: h1,
                    });
                }
            }
            "status" => d.status = val.parse().ok(),
            "delay_ms" => d.delay_ms = val.parse().unwrap_or(0),
            "chunks" => d.chunks = val.parse().ok(),
            "cut" => d.cut = true,
            "gzip" => d.gzip = true,
            "tool" => d.tool = true,
            _ => {}
        }
    }
    d
}

pub(crate) fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

pub(crate) fn anthropic_error(res: &mut Response, status: u16, message: &str) {
    res.status_code(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    if status == 429 {
        res.headers_mut()
            .insert("retry-after", HeaderValue::from_static("30"));
        let reset = (chrono::Utc::now() + chrono::Duration::seconds(30))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if let Ok(v) = HeaderValue::from_str(&reset) {
            res.headers_mut()
                .insert("anthropic-ratelimit-requests-reset", v);
        }
        res.headers_mut().insert(
            "anthropic-ratelimit-requests-remaining",
            HeaderValue::from_static("0"),
        );
    }
    let body = json!({"type": "error", "error": {"type": error_type(status), "message": message}});
    let _ = res.write_body(body.to_string());
}

pub(crate) fn request_id(state: &MockState) -> String {
    format!(
        "req_mock{:016x}",
        state.counter.fetch_add(1, Ordering::Relaxed)
    )
}

/// The token of a request's `authorization: Bearer` header.
pub(crate) fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer "))
}

/// The upstream credential a request carries: an API key header, `?key=`, or a bearer token.
/// Factory's gateway (`/a/...`, `/o/...`) reads the bearer token; the `x-api-key` Droid
/// clients send there is a placeholder.
pub(crate) fn credential(req: &Request) -> &str {
    let path = req.uri().path();
    if (path.starts_with("/a/") || path.starts_with("/o/"))
        && let Some(t) = bearer(req)
    {
        return t;
    }
    let query_key = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("key=")));
    req.headers()
        .get("x-api-key")
        .or_else(|| req.headers().get("api-key"))
        .or_else(|| req.headers().get("x-goog-api-key"))
        .and_then(|v| v.to_str().ok())
        .or(query_key)
        .or_else(|| bearer(req))
        .unwrap_or("")
}

/// The scripted answer for `cred`, counting it down.
pub(crate) fn take_scripted(state: &MockState, cred: &str) -> Option<Scripted> {
    let mut m = state.scripted.lock();
    let s = m.get_mut(cred)?;
    let out = s.clone();
    if let Some(n) = &mut s.times {
        *n = n.saturating_sub(1);
        if *n == 0 {
            m.remove(cred);
        }
    }
    Some(out)
}

/// How a provider writes an error: (response, status, message).
pub(crate) type Deny = fn(&mut Response, u16, &str);

/// Keep a copy of the request (when recording).
pub(crate) fn record(state: &MockState, req: &Request, body: &Bytes) {
    if state.record.load(Ordering::Relaxed) {
        state.seen.lock().push(SeenRequest {
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(str::to_owned),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body: body.clone(),
            version: req.version(),
        });
    }
}

/// An `application/x-www-form-urlencoded` body's fields, decoded (`+` is a space).
pub(crate) fn form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| bedrock::percent_decode(&s.replace('+', " "));
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// One field of a decoded form ("" when absent).
pub(crate) fn form_field<'a>(fields: &'a [(String, String)], key: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// Add (name, value) headers to an answer; pairs that are not valid headers are skipped.
pub(crate) fn set_headers(res: &mut Response, headers: &[(String, String)]) {
    for (k, v) in headers {
        if let (Ok(n), Ok(hv)) = (
            salvo::http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            res.headers_mut().insert(n, hv);
        }
    }
}

/// A request's body (up to 256 MiB) and a fresh request id, set as `x-request-id`.
pub(crate) async fn body_and_id(
    state: &MockState,
    req: &mut Request,
    res: &mut Response,
) -> (Bytes, String) {
    let body = req
        .payload_with_max_size(256 * 1024 * 1024)
        .await
        .cloned()
        .unwrap_or_default();
    let rid = request_id(state);
    res.headers_mut()
        .insert("x-request-id", HeaderValue::from_str(&rid).expect("ascii"));
    (body, rid)
}

pub(crate) fn check_and_record(
    state: &MockState,
    req: &Request,
    body: &Bytes,
    res: &mut Response,
    deny: Deny,
) -> bool {
    record(state, req, body);
    let key = credential(req);
    let accepted = state.accepted_keys.lock();
    if key.is_empty() || (!accepted.is_empty() && !accepted.iter().any(|k| k == key)) {
        deny(res, 401, "invalid x-api-key");
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directive_parsing() {
        let d = directives(br#"{"system":"mock:usage=100,20,10,30,4 mock:delay_ms=5 mock:cut"}"#);
        let u = d.usage.unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cache_create_tokens,
                u.cache_read_tokens
            ),
            (100, 20, 10, 30)
        );
        assert_eq!((u.ephemeral_5m_tokens, u.ephemeral_1h_tokens), (6, 4));
        assert_eq!(d.delay_ms, 5);
        assert!(d.cut);
        assert_eq!(directives(b"mock:status=529").status, Some(529));
    }
}

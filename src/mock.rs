//! A mock of the Anthropic Messages API for tests, local trials and benchmarks. It speaks the
//! real wire format: JSON messages with usage blocks, SSE with Anthropic's event names and
//! order, error bodies, request-id and rate-limit headers.
//!
//! A request can steer the mock with directives anywhere in its body text (tests put them in
//! the system prompt): `mock:usage=IN,OUT,CACHE_CREATE,CACHE_READ[,CACHE_1H]`,
//! `mock:status=429`, `mock:delay_ms=N` (between SSE events), `mock:chunks=N`, `mock:cut`
//! (drop the connection mid-stream). Without directives usage is derived from the body size.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use parking_lot::Mutex;
use salvo::conn::{Acceptor, TcpListener};
use salvo::http::{HeaderValue, StatusCode};
use salvo::prelude::*;
use serde_json::json;

use crate::usage::TokenUsage;

/// One request as the mock received it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl SeenRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
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
    /// The exact bytes of every stream sent to the end, in completion order.
    pub sent_streams: Mutex<Vec<Bytes>>,
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
    handle: salvo::server::ServerHandle,
}

impl MockUpstream {
    pub async fn start() -> Result<Self> {
        Self::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(listen: &str) -> Result<Self> {
        let state = Arc::new(MockState::default());
        state.record.store(true, Ordering::Relaxed);
        let acceptor = TcpListener::new(listen.to_owned())
            .try_bind()
            .await
            .with_context(|| format!("mock upstream cannot listen on {listen}"))?;
        let addr = acceptor
            .holdings()
            .first()
            .and_then(|h| h.local_addr.clone().into_std())
            .context("mock has no address")?;
        let router = Router::new()
            .push(Router::with_path("v1/messages").post(Messages(state.clone())))
            .push(Router::with_path("v1/messages/count_tokens").post(CountTokens(state.clone())));
        let server = Server::new(acceptor);
        let handle = server.handle();
        tokio::spawn(server.serve(router));
        Ok(MockUpstream {
            addr,
            state,
            handle,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stop(&self) {
        self.handle.stop_forceful();
    }
}

#[derive(Debug, Clone, Default)]
struct Directives {
    usage: Option<TokenUsage>,
    status: Option<u16>,
    delay_ms: u64,
    chunks: Option<usize>,
    cut: bool,
}

fn directives(body: &[u8]) -> Directives {
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
            _ => {}
        }
    }
    d
}

fn error_type(status: u16) -> &'static str {
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

fn anthropic_error(res: &mut Response, status: u16, message: &str) {
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

fn request_id(state: &MockState) -> String {
    format!(
        "req_mock{:016x}",
        state.counter.fetch_add(1, Ordering::Relaxed)
    )
}

fn check_and_record(state: &MockState, req: &Request, body: &Bytes, res: &mut Response) -> bool {
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
        });
    }
    let key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            req.headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|a| a.strip_prefix("Bearer "))
        })
        .unwrap_or("");
    let accepted = state.accepted_keys.lock();
    if key.is_empty() || (!accepted.is_empty() && !accepted.iter().any(|k| k == key)) {
        anthropic_error(res, 401, "invalid x-api-key");
        return false;
    }
    true
}

struct Messages(Arc<MockState>);

#[salvo::async_trait]
impl Handler for Messages {
    async fn handle(
        &self,
        req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        let state = &self.0;
        let body = req
            .payload_with_max_size(256 * 1024 * 1024)
            .await
            .cloned()
            .unwrap_or_default();
        let rid = request_id(state);
        res.headers_mut()
            .insert("request-id", HeaderValue::from_str(&rid).expect("ascii"));
        if !check_and_record(state, req, &body, res) {
            return;
        }
        let parsed: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return anthropic_error(
                    res,
                    400,
                    "There was an error parsing the body of your request",
                );
            }
        };
        let Some(model) = parsed
            .get("model")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
        else {
            return anthropic_error(res, 400, "model: Field required");
        };
        let stream = parsed
            .get("stream")
            .and_then(|s| s.as_bool())
            .unwrap_or(false);
        let d = directives(&body);
        if let Some(s) = d.status.filter(|s| *s >= 400) {
            let msg = match s {
                429 => "Number of request tokens has exceeded your per-minute rate limit",
                529 => "Overloaded",
                _ => "Mock upstream error",
            };
            return anthropic_error(res, s, msg);
        }
        let usage = d.usage.unwrap_or(TokenUsage {
            input_tokens: (body.len() as u64 / 16).max(1),
            output_tokens: 12,
            ..Default::default()
        });
        for (name, val) in [
            ("anthropic-ratelimit-requests-limit", "4000"),
            ("anthropic-ratelimit-requests-remaining", "3999"),
            ("anthropic-ratelimit-tokens-limit", "400000"),
        ] {
            res.headers_mut()
                .insert(name, HeaderValue::from_static(val));
        }
        let text = "Hello from the mock upstream.";
        let msg_id = format!("msg_mock{}", &rid[8..]);
        let usage_json = |output: u64| {
            json!({
                "input_tokens": usage.input_tokens,
                "cache_creation_input_tokens": usage.cache_create_tokens,
                "cache_read_input_tokens": usage.cache_read_tokens,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": usage.ephemeral_5m_tokens,
                    "ephemeral_1h_input_tokens": usage.ephemeral_1h_tokens,
                },
                "output_tokens": output,
                "service_tier": "standard",
            })
        };
        if !stream {
            state.served.lock().push(usage);
            let body = json!({
                "id": msg_id, "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": usage_json(usage.output_tokens),
            });
            res.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            let _ = res.write_body(body.to_string());
            return;
        }
        let chunks = d.chunks.unwrap_or(4).max(1);
        let mut events: Vec<Bytes> = Vec::with_capacity(chunks + 6);
        let ev = |name: &str, data: serde_json::Value| {
            Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
        };
        events.push(ev(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null, "usage": usage_json(1)}}),
        ));
        events.push(ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
        events.push(Bytes::from_static(
            b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
        ));
        for i in 0..chunks {
            let piece = if i == 0 {
                text.to_owned()
            } else {
                format!(" {i}")
            };
            events.push(ev(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        events.push(ev(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push(ev(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                   "usage": {"output_tokens": usage.output_tokens}}),
        ));
        events.push(ev("message_stop", json!({"type": "message_stop"})));
        if !d.cut {
            state.served.lock().push(usage);
        }
        res.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        res.headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-cache"));
        let guard = StreamGuard {
            state: state.clone(),
            done: false,
            sent: state.record.load(Ordering::Relaxed).then(Vec::new),
        };
        let cut_at = if d.cut { Some(events.len() / 2) } else { None };
        let delay = Duration::from_millis(d.delay_ms);
        let s = futures_util::stream::unfold(
            (events.into_iter().enumerate(), guard),
            move |(mut it, mut guard)| async move {
                let (i, e) = match it.next() {
                    Some(x) => x,
                    None => {
                        guard.finish();
                        return None;
                    }
                };
                if Some(i) == cut_at {
                    guard.done = true;
                    return Some((
                        Err(std::io::Error::other("mock cut the stream")),
                        (it, guard),
                    ));
                }
                if i > 0 && !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                if let Some(sent) = guard.sent.as_mut() {
                    sent.extend_from_slice(&e);
                }
                Some((Ok::<_, std::io::Error>(e), (it, guard)))
            },
        );
        res.stream(s);
    }
}

struct StreamGuard {
    state: Arc<MockState>,
    done: bool,
    /// Bytes sent so far (kept only when recording).
    sent: Option<Vec<u8>>,
}

impl StreamGuard {
    fn finish(mut self) {
        self.done = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.done {
            if let Some(sent) = self.sent.take() {
                self.state.sent_streams.lock().push(Bytes::from(sent));
            }
            self.state.streams_completed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.state.streams_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct CountTokens(Arc<MockState>);

#[salvo::async_trait]
impl Handler for CountTokens {
    async fn handle(
        &self,
        req: &mut Request,
        _depot: &mut Depot,
        res: &mut Response,
        _ctrl: &mut FlowCtrl,
    ) {
        let body = req
            .payload_with_max_size(256 * 1024 * 1024)
            .await
            .cloned()
            .unwrap_or_default();
        let rid = request_id(&self.0);
        res.headers_mut()
            .insert("request-id", HeaderValue::from_str(&rid).expect("ascii"));
        if !check_and_record(&self.0, req, &body, res) {
            return;
        }
        if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
            return anthropic_error(
                res,
                400,
                "There was an error parsing the body of your request",
            );
        }
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        let _ =
            res.write_body(json!({"input_tokens": (body.len() as u64 / 16).max(1)}).to_string());
    }
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

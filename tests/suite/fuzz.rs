//! A seeded fuzz over every client route: a few hundred mutated requests (odd methods, paths,
//! percent-encodings and query strings; random, truncated, deeply nested or huge JSON; wrong
//! types for model, stream and messages; bytes that are not UTF-8; odd headers; valid,
//! restricted, disabled and made-up keys). Every request must get a whole HTTP answer within
//! seconds, none a 500 or another 5xx crs makes itself, no crs thread may panic, and crs must
//! still answer `/health`, a plain request and its usage ledger at the end, also after
//! answers whose upstream reported absurd usage.
//!
//! 5xx answers that are allowed, because they are the upstream's or the scheduler's word:
//! 502 (the upstream failed or answered something unusable), 503 (no account can serve the
//! request) and 504 (the upstream timed out). The mock upstream causes none of them in this
//! run; they are counted and printed, not hidden.
//!
//! Reproduce a run with `CRS_FUZZ_SEED` (hex) and widen it with `CRS_FUZZ_REQUESTS`; a failure
//! prints the seed, the request's index and the request.
//!
//! A second test sends requests that are refused before their body is read the way most HTTP
//! libraries do: the whole body first, then the answer.

use std::convert::Infallible;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};

use crate::common::*;

const SEED: u64 = 0x00c0_ffee_5eed_0001;
const REQUESTS: usize = 400;
/// crs's body limit in this run: big bodies stay cheap, and some go past it.
const MAX_BODY: usize = 1024 * 1024;
/// The longest any one answer may take.
const DEADLINE: Duration = Duration::from_secs(10);
/// Runtime threads of the crs under test, so that their panics can be told from others'.
const THREAD: &str = "crs-fuzz";

/// SplitMix64: small, seeded, and the same on every platform and version.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn text(&mut self, max: usize) -> String {
        let n = self.below(max + 1);
        let alphabet: Vec<char> = "aZ9 -_./:@[]+\"\\{}\n\t\u{e9}\u{4e2d}\u{1f600}\u{0}\u{2028}%"
            .chars()
            .collect();
        (0..n)
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Messages,
    CountTokens,
    Responses,
    Chat,
    Gemini,
    Info,
    Stats,
    Other,
}

/// The client routes (src/relay/mod.rs, openai.rs, gemini.rs, info.rs, apistats.rs).
const ROUTES: &[(&str, &str, Kind)] = &[
    ("POST", "/api/v1/messages", Kind::Messages),
    ("POST", "/claude/v1/messages", Kind::Messages),
    ("POST", "/v1/messages", Kind::Messages),
    ("POST", "/droid/claude/v1/messages", Kind::Messages),
    ("POST", "/gemini-cli/api/v1/messages", Kind::Messages),
    ("POST", "/antigravity/api/v1/messages", Kind::Messages),
    ("POST", "/api/v1/messages/count_tokens", Kind::CountTokens),
    (
        "POST",
        "/claude/v1/messages/count_tokens",
        Kind::CountTokens,
    ),
    ("POST", "/v1/messages/count_tokens", Kind::CountTokens),
    ("POST", "/openai/responses", Kind::Responses),
    ("POST", "/openai/v1/responses", Kind::Responses),
    ("POST", "/openai/responses/compact", Kind::Responses),
    ("POST", "/openai/v1/responses/compact", Kind::Responses),
    ("POST", "/azure/responses", Kind::Responses),
    ("POST", "/droid/openai/v1/responses", Kind::Responses),
    ("POST", "/azure/chat/completions", Kind::Chat),
    ("POST", "/droid/comm/v1/chat/completions", Kind::Chat),
    ("POST", "/azure/embeddings", Kind::Chat),
    ("POST", "/openai/claude/v1/chat/completions", Kind::Chat),
    ("POST", "/openai/gemini/v1/chat/completions", Kind::Chat),
    ("POST", "/api/v1/chat/completions", Kind::Chat),
    ("POST", "/openai/v1/chat/completions", Kind::Chat),
    (
        "POST",
        "/gemini/v1beta/models/gemini-2.5-flash:generateContent",
        Kind::Gemini,
    ),
    (
        "POST",
        "/gemini/v1beta/models/gemini-2.5-pro:streamGenerateContent",
        Kind::Gemini,
    ),
    (
        "POST",
        "/gemini/v1/models/gemini-2.5-flash:countTokens",
        Kind::Gemini,
    ),
    (
        "POST",
        "/gemini/v1/models/gemini-2.5-flash:generateContent",
        Kind::Gemini,
    ),
    ("GET", "/health", Kind::Info),
    ("GET", "/api/v1/models", Kind::Info),
    ("GET", "/claude/v1/models", Kind::Info),
    ("GET", "/v1/models", Kind::Info),
    ("GET", "/api/v1/key-info", Kind::Info),
    ("GET", "/v1/key-info", Kind::Info),
    ("GET", "/api/v1/usage", Kind::Info),
    ("GET", "/claude/v1/usage", Kind::Info),
    ("GET", "/api/v1/me", Kind::Info),
    ("GET", "/v1/me", Kind::Info),
    ("GET", "/openai/v1/models", Kind::Info),
    ("GET", "/openai/models", Kind::Info),
    ("GET", "/openai/usage", Kind::Info),
    ("GET", "/openai/key-info", Kind::Info),
    ("GET", "/gemini/v1beta/models", Kind::Info),
    ("GET", "/gemini/v1/models", Kind::Info),
    ("POST", "/api/event_logging/batch", Kind::Other),
    ("GET", "/apiStats", Kind::Other),
    ("POST", "/apiStats/api/get-key-id", Kind::Stats),
    ("POST", "/apiStats/api/user-stats", Kind::Stats),
    ("POST", "/apiStats/api/user-model-stats", Kind::Stats),
    ("POST", "/apiStats/api/user-trend", Kind::Stats),
    ("POST", "/apiStats/api/batch-stats", Kind::Stats),
    ("POST", "/apiStats/api/batch-model-stats", Kind::Stats),
];

const MODELS: &[&str] = &[
    "claude-sonnet-4-5-20250929",
    "claude-3-5-haiku-20241022",
    "claude-opus-4-1",
    "us.anthropic.claude-3-5-haiku-20241022-v1:0",
    "claude-sonnet-4-5[1m]",
    "gpt-5",
    "gpt-4o-2024-08-06",
    "gemini-2.5-flash",
    "models/gemini-2.5-pro",
];

/// The keys a request may carry.
struct Keys {
    full: String,
    restricted: String,
    disabled: String,
    activation: String,
}

/// One request as sent, printed when it fails.
struct Sent {
    method: String,
    path: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    chunked: bool,
}

impl std::fmt::Debug for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} {}", self.method, self.path)?;
        for (k, v) in &self.headers {
            writeln!(f, "{k}: {}", String::from_utf8_lossy(v))?;
        }
        let shown = &self.body[..self.body.len().min(600)];
        write!(
            f,
            "\n{}{} ({} bytes{})",
            String::from_utf8_lossy(shown),
            if shown.len() < self.body.len() {
                "..."
            } else {
                ""
            },
            self.body.len(),
            if self.chunked { ", chunked" } else { "" }
        )
    }
}

/// Header values hold no control characters but tab.
fn header_safe(v: impl Into<Vec<u8>>) -> Vec<u8> {
    let mut v = v.into();
    v.retain(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f));
    v
}

/// Percent-encoded for a query string.
fn encoded(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn key_for(r: &mut Rng, keys: &Keys) -> String {
    match r.below(20) {
        0..=12 => keys.full.clone(),
        13 => keys.restricted.clone(),
        14 => keys.disabled.clone(),
        15 => keys.activation.clone(),
        16 => format!("cr_{}", hex::encode(r.bytes(32))),
        17 => String::new(),
        _ => r.text(80),
    }
}

/// A plausible body for a route, before mutation.
fn base_body(r: &mut Rng, kind: Kind, keys: &Keys) -> Value {
    let model = json!(r.pick(MODELS));
    let text = r.text(40);
    match kind {
        Kind::Messages | Kind::CountTokens => {
            let mut b = json!({"model": model, "max_tokens": 64,
                "messages": [{"role": "user", "content": text}]});
            if r.chance(50) {
                b["stream"] = json!(r.chance(50));
            }
            if r.chance(40) {
                b["system"] = json!(r.text(30));
            }
            if r.chance(30) {
                b["metadata"] = json!({"user_id": format!(
                    "user_{}_account_x_session_{}", hex::encode(r.bytes(4)), r.text(12))});
            }
            b
        }
        Kind::Responses => {
            let mut b = json!({"model": model, "input": text});
            if r.chance(50) {
                b["stream"] = json!(r.chance(50));
            }
            if r.chance(30) {
                b["prompt_cache_key"] = json!(r.text(16));
            }
            b
        }
        Kind::Chat => {
            json!({"model": model, "stream": r.chance(50), "messages": [{"role": "user", "content": text}]})
        }
        Kind::Gemini => json!({"contents": [{"role": "user", "parts": [{"text": text}]}]}),
        Kind::Stats => {
            let key = key_for(r, keys);
            match r.below(6) {
                0 => json!({"apiKey": key}),
                1 => {
                    json!({"apiKey": key, "period": r.pick(&["daily", "monthly", "alltime", "x"])})
                }
                2 => {
                    let days = [json!(7), json!(-1), json!(1e300), json!("30"), json!(null)];
                    json!({"apiKey": key, "days": days[r.below(days.len())]})
                }
                3 => {
                    json!({"apiKeys": (0..r.below(40)).map(|_| key_for(r, keys)).collect::<Vec<_>>()})
                }
                4 => json!({"apiId": r.text(20), "apiIds": [r.text(8)]}),
                _ => json!({"apiKey": [key], "apiKeys": key, "period": 5}),
            }
        }
        Kind::Info | Kind::Other => json!({}),
    }
}

/// Values of the wrong type (or the right type with odd content) for a field.
fn odd_value(r: &mut Rng) -> Value {
    match r.below(12) {
        0 => Value::Null,
        1 => json!(r.next() as i64),
        2 => json!(1e308),
        3 => json!([]),
        4 => json!({}),
        5 => json!(""),
        6 => json!("yes"),
        7 => json!(r.text(20)),
        8 => json!("m".repeat(r.below(4000))),
        9 => json!([{"role": "user"}, 1, null]),
        10 => json!(true),
        _ => nested(r.below(300)),
    }
}

/// `[[[...]]]` or `{"a":{"a":...}}` this deep.
fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for i in 0..depth {
        v = if i % 2 == 0 {
            json!([v])
        } else {
            json!({"a": v})
        };
    }
    v
}

/// Mutate a body: fields dropped, retyped or added; serialised, then perhaps cut, padded or
/// replaced with bytes that are not JSON.
fn body_bytes(r: &mut Rng, mut v: Value) -> Vec<u8> {
    if let Value::Object(m) = &mut v {
        for _ in 0..[0, 0, 0, 1, 1, 2][r.below(6)] {
            let field = r.pick(&[
                "model",
                "stream",
                "messages",
                "metadata",
                "system",
                "input",
                "contents",
                "prompt_cache_key",
                "max_tokens",
                "apiKey",
            ]);
            match r.below(3) {
                0 => {
                    m.shift_remove(field);
                }
                _ => {
                    m.insert(field.into(), odd_value(r));
                }
            }
        }
    }
    let mut bytes = serde_json::to_vec(&v).unwrap();
    match r.below(32) {
        0 => bytes.truncate(r.below(bytes.len() + 1)),
        1 => {
            let n = r.below(300);
            bytes = r.bytes(n);
        }
        2 => bytes.clear(),
        3 => {
            // Not UTF-8 inside a string.
            let at = bytes.len().saturating_sub(2);
            bytes.splice(at..at, [0xff, 0xfe, 0xc3]);
        }
        4 => bytes = format!("[{}]", String::from_utf8_lossy(&bytes)).into_bytes(),
        5 => {
            // A huge string within the body limit.
            let pad = "x".repeat(MAX_BODY / 2 + r.below(MAX_BODY / 3));
            if let Value::Object(mut m) = v {
                m.insert("padding".into(), json!(pad));
                bytes = serde_json::to_vec(&m).unwrap();
            }
        }
        6 => bytes = vec![b'x'; MAX_BODY + 1 + r.below(1000)],
        7 => bytes = serde_json::to_vec(&nested(100 + r.below(400))).unwrap(),
        8 => bytes = b"  \n\t ".to_vec(),
        9 => {
            let s = String::from_utf8_lossy(&bytes).replace("\"model\"", "\"model\",\"model\"");
            bytes = s.into_bytes();
        }
        _ => {}
    }
    bytes
}

/// An odd path: the route's with a segment changed, percent-encoded, doubled or dotted.
fn odd_path(r: &mut Rng, path: &str) -> String {
    let mut segs: Vec<String> = path.split('/').map(str::to_owned).collect();
    let i = 1 + r.below(segs.len().saturating_sub(1).max(1));
    let odd = r.pick(&[
        "..",
        ".",
        "",
        "%2e%2e",
        "%2F",
        "%00",
        "%ZZ",
        "%",
        "a%20b",
        "%C3%A9",
        "%FF%FE",
        "models:generateContent",
        ":countTokens",
        "x:y:z",
        "..%2F..%2Fv1beta%2FcachedContents%3Fx=:generateContent",
    ]);
    match r.below(4) {
        0 if i < segs.len() => segs[i] = odd.to_owned(),
        1 => segs.insert(i.min(segs.len()), odd.to_owned()),
        2 if i < segs.len() => segs[i] = "a".repeat(r.below(9000)),
        _ => segs.push(odd.to_owned()),
    }
    segs.join("/")
}

fn query(r: &mut Rng, key: &str) -> String {
    let key = encoded(key);
    match r.below(8) {
        0 => format!("?key={key}"),
        1 => "?alt=sse".into(),
        2 => format!("?beta=true&key={key}&alt=sse"),
        3 => "?%ff=%00&&=&key".into(),
        4 => format!("?q={}", "z".repeat(r.below(3000))),
        _ => String::new(),
    }
}

fn headers(r: &mut Rng, kind: Kind, key: &str) -> Vec<(String, Vec<u8>)> {
    let mut h: Vec<(String, Vec<u8>)> = Vec::new();
    let auth = match kind {
        Kind::Gemini => [0, 1, 2, 3, 3, 3, 3, 4][r.below(8)],
        Kind::Responses | Kind::Chat => [1, 1, 1, 2, 2, 3, 0, 4][r.below(8)],
        _ => [0, 0, 0, 0, 1, 1, 3, 4][r.below(8)],
    };
    match auth {
        0 => h.push(("x-api-key".into(), header_safe(key))),
        1 => h.push(("authorization".into(), header_safe(format!("Bearer {key}")))),
        2 => h.push(("api-key".into(), header_safe(key))),
        3 => h.push(("x-goog-api-key".into(), header_safe(key))),
        _ => {}
    }
    if r.chance(60) {
        h.push((
            "content-type".into(),
            r.pick(&[
                "application/json",
                "text/plain",
                "application/json; charset=latin1",
                "",
            ])
            .into(),
        ));
    }
    if r.chance(50) {
        let ua: Vec<u8> = match r.below(6) {
            0 => b"claude-cli/2.1.0 (external, cli)".to_vec(),
            1 => b"codex_cli_rs/0.46.0 (Debian 12; x86_64)".to_vec(),
            2 => b"GeminiCLI/0.9.0 (linux; x64)".to_vec(),
            3 => b"CherryStudio/1.5.0".to_vec(),
            4 => [b"ua-".as_slice(), &[0x80, 0xff, 0xc3]].concat(),
            _ => header_safe(r.text(60)),
        };
        h.push(("user-agent".into(), ua));
    }
    if r.chance(40) {
        let flags = [
            "context-1m-2025-08-07",
            "oauth-2025-04-20",
            "fine-grained-tool-streaming-2025-05-14",
            "",
            " , ,",
            "interleaved-thinking-2025-05-14",
        ];
        let list: Vec<&str> = (0..r.below(6)).map(|_| r.pick(&flags)).collect();
        h.push(("anthropic-beta".into(), list.join(",").into_bytes()));
    }
    if r.chance(30) {
        h.push((
            "anthropic-version".into(),
            r.pick(&["2023-06-01", "", "9999-99-99", "\u{e9}"])
                .as_bytes()
                .to_vec(),
        ));
    }
    if r.chance(20) {
        let name = r.pick(&[
            "session_id",
            "x-session-affinity",
            "x-session-id",
            "x-app",
            "originator",
        ]);
        let v = if r.chance(30) {
            vec![0xfe, b'x', 0x80]
        } else {
            header_safe(r.text(300))
        };
        h.push((name.into(), v));
    }
    if r.chance(5) {
        // Many headers.
        for i in 0..50 {
            h.push((format!("x-filler-{i}"), b"y".repeat(100)));
        }
    }
    h
}

fn request(r: &mut Rng, keys: &Keys) -> Sent {
    // Most requests go to the routes that reach an upstream.
    let relayed = ROUTES
        .iter()
        .take_while(|(_, _, k)| *k != Kind::Info)
        .count();
    let (route_method, route, kind) = if r.chance(3) {
        ("GET", "/no/such/route", Kind::Other)
    } else if r.chance(60) {
        ROUTES[r.below(relayed)]
    } else {
        ROUTES[r.below(ROUTES.len())]
    };
    let method = if r.chance(92) {
        route_method.to_owned()
    } else {
        r.pick(&[
            "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW",
        ])
        .to_owned()
    };
    let key = key_for(r, keys);
    let mut path = if r.chance(12) {
        odd_path(r, route)
    } else if kind == Kind::Gemini && r.chance(30) {
        let model = [r.pick(MODELS), r.text(10).as_str(), "..", "a/b"][r.below(4)].to_owned();
        let method = r.pick(&[
            "generateContent",
            "streamGenerateContent",
            "countTokens",
            "x",
            "",
        ]);
        let model: String = model
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        format!(
            "{}/{model}:{method}",
            &route[..route.find("/models/").unwrap() + 7]
        )
    } else {
        route.to_owned()
    };
    path.push_str(&query(r, &key));
    if path.parse::<hyper::Uri>().is_err() {
        path = route.to_owned();
    }
    let body = if method == "GET" || method == "HEAD" {
        if r.chance(10) {
            b"{\"a\":1}".to_vec()
        } else {
            Vec::new()
        }
    } else {
        let v = base_body(r, kind, keys);
        body_bytes(r, v)
    };
    Sent {
        method,
        path,
        headers: headers(r, kind, &key),
        body,
        chunked: r.chance(15),
    }
}

/// Panics of crs's threads in this test, with their messages.
fn panics() -> &'static Mutex<Vec<String>> {
    static P: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    P.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            if thread.name().is_some_and(|n| n.starts_with(THREAD)) {
                panics().lock().unwrap().push(info.to_string());
            }
            previous(info);
        }));
        Mutex::new(Vec::new())
    })
}

/// Send one request on a connection of its own; the whole answer, or why there was none.
async fn send(addr: &str, s: &Sent) -> Result<(u16, Bytes), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let mut b = hyper::Request::builder()
        .method(hyper::Method::from_bytes(s.method.as_bytes()).unwrap())
        .uri(&s.path)
        .header("host", "crs.test");
    for (k, v) in &s.headers {
        b = b.header(
            k.as_str(),
            hyper::header::HeaderValue::from_bytes(v).map_err(|e| format!("header {k}: {e}"))?,
        );
    }
    let body = Bytes::from(s.body.clone());
    let res = if s.chunked {
        // No content-length: the body arrives in chunks of unknown total size.
        let chunks: Vec<Result<Frame<Bytes>, Infallible>> = body
            .chunks(64 * 1024)
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let req = b
            .body(StreamBody::new(futures_util::stream::iter(chunks)).boxed())
            .map_err(|e| format!("request: {e}"))?;
        tx.send_request(req).await
    } else {
        let req = b
            .body(Full::new(body).boxed())
            .map_err(|e| format!("request: {e}"))?;
        tx.send_request(req).await
    };
    let res = res.map_err(|e| format!("no answer: {e}"))?;
    let status = res.status().as_u16();
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("answer cut short after status {status}: {e}"))?
        .to_bytes();
    Ok((status, bytes))
}

async fn setup(max_body: usize) -> (Env, Keys) {
    let env = Env::start_with(|c| {
        c.max_body_bytes = max_body;
        c.upstream_timeout = Duration::from_secs(5);
    })
    .await;
    let mock = env.mock.url();
    env.create_account(json!({})).await;
    env.create(
        "gemini-api-accounts",
        json!({"name": "g", "baseUrl": mock, "apiKey": UPSTREAM_KEY}),
    )
    .await;
    env.create(
        "openai-responses-accounts",
        json!({"name": "o", "baseApi": format!("{mock}/v1"), "apiKey": UPSTREAM_KEY}),
    )
    .await;
    env.create(
        "azure-openai-accounts",
        json!({"name": "az", "azureEndpoint": mock, "apiKey": UPSTREAM_KEY, "deploymentName": "gpt4o"}),
    )
    .await;
    env.create(
        "droid-accounts",
        json!({"name": "d", "baseUrl": mock, "apiKey": UPSTREAM_KEY}),
    )
    .await;
    let (_, full) = env.create_key(json!({"name": "full"})).await;
    let (_, restricted) = env
        .create_key(json!({"name": "restricted", "permissions": ["claude"],
            "enableModelRestriction": true, "restrictedModels": ["claude-opus-4-1"],
            "enableClientRestriction": true, "allowedClients": ["claude_code", "CherryStudio/*"],
            "concurrencyLimit": 2, "rateLimitWindow": 1, "rateLimitRequests": 10000,
            "dailyCostLimit": 1000}))
        .await;
    let (_, disabled) = env
        .create_key(json!({"name": "off", "isActive": false}))
        .await;
    let (_, activation) = env
        .create_key(json!({"name": "act", "expirationMode": "activation", "activationDays": 1}))
        .await;
    let keys = Keys {
        full,
        restricted,
        disabled,
        activation,
    };
    (env, keys)
}

fn failed(seed: u64, i: usize, s: &Sent, why: String) -> ! {
    panic!("request {i} of seed {seed:#x}: {why}\n--- request ---\n{s:?}\n---");
}

async fn fuzz(seed: u64, count: usize) {
    let (env, keys) = setup(MAX_BODY).await;
    let addr = env.url("").trim_start_matches("http://").to_owned();
    let mut r = Rng(seed);
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let started = Instant::now();
    for i in 0..count {
        let s = request(&mut r, &keys);
        let got = tokio::time::timeout(DEADLINE, send(&addr, &s)).await;
        let fail = |why: String| failed(seed, i, &s, why);
        let (status, body) = match got {
            Err(_) => fail(format!("no whole answer within {DEADLINE:?}")),
            Ok(Err(e)) => fail(e),
            Ok(Ok(a)) => a,
        };
        *statuses.entry(status).or_default() += 1;
        if status >= 500 && !matches!(status, 502..=504) {
            fail(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(500)])
            ));
        }
        if let Some(p) = panics().lock().unwrap().first() {
            fail(format!("crs panicked: {p}"));
        }
    }
    let upstream = env.mock.state.seen.lock().len();
    eprintln!(
        "fuzz: {count} requests (seed {seed:#x}) in {:?}, {upstream} reached the upstream; statuses {statuses:?}",
        started.elapsed()
    );
    // An upstream reporting absurd usage.
    for stream in [false, true, false] {
        let r = env
            .messages(
                &keys.full,
                msg_body(
                    "claude-sonnet-4-5-20250929",
                    stream,
                    "mock:usage=18446744073709551615,18446744073709551615,18446744073709551615,18446744073709551615",
                ),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.expect("the whole answer");
    }
    // Still healthy: /health, a plain request, and the usage ledger answers.
    let h = env.http.get(env.url("/health")).send().await.unwrap();
    assert_eq!(h.status(), 200);
    let ok = env
        .messages(
            &keys.full,
            msg_body("claude-sonnet-4-5-20250929", false, "hi"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    tokio::time::timeout(DEADLINE, env.usage(&keys.full))
        .await
        .expect("the ledger answers");
    env.stop().await;
}

#[test]
fn client_routes_answer_every_mutated_request() {
    panics();
    let seed = std::env::var("CRS_FUZZ_SEED")
        .ok()
        .and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok())
        .unwrap_or(SEED);
    let count = std::env::var("CRS_FUZZ_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(REQUESTS);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(THREAD)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(fuzz(seed, count));
    rt.shutdown_timeout(Duration::from_secs(5));
    let p = panics().lock().unwrap();
    assert!(p.is_empty(), "crs panicked: {p:?}");
}

/// Send a request the way most HTTP libraries do: the whole body first, then read the answer
/// (to the end: the request asks to close the connection). The status, or what went wrong.
async fn send_whole(addr: &str, s: &Sent) -> Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: crs.test\r\nconnection: close\r\n",
        s.method, s.path
    );
    for (k, v) in &s.headers {
        head.push_str(&format!("{k}: {}\r\n", String::from_utf8_lossy(v)));
    }
    let mut out = head.into_bytes();
    if s.chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
        for c in s.body.chunks(64 * 1024) {
            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", s.body.len()).as_bytes());
        out.extend_from_slice(&s.body);
    }
    tcp.write_all(&out)
        .await
        .map_err(|e| format!("the connection broke while the body was sent: {e}"))?;
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer)
        .await
        .map_err(|e| format!("the answer was cut short: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {:?}", &text[..text.len().min(200)]))
}

/// Most HTTP clients send the whole body before they read the answer. A request refused
/// before its body is read (no key, a declared length past the limit, no such route) must
/// still reach them as that answer, not as a connection reset under a body still being sent.
/// The bodies are bigger than what the sockets' buffers take in.
#[tokio::test]
async fn refusals_before_the_body_reach_clients_that_send_it_whole() {
    const LIMIT: usize = 16 * 1024 * 1024;
    let (env, keys) = setup(LIMIT).await;
    let addr = env.url("").trim_start_matches("http://").to_owned();
    let big = |n: usize| {
        let mut b = br#"{"model":"claude-sonnet-4-5-20250929","messages":[],"pad":""#.to_vec();
        b.resize(n, b'x');
        b.extend_from_slice(br#""}"#);
        b
    };
    let auth = |k: &str| vec![("x-api-key".to_owned(), k.as_bytes().to_vec())];
    for (path, headers, body, chunked, want) in [
        ("/v1/messages", vec![], big(LIMIT - 100), false, 401),
        (
            "/v1/messages",
            auth("cr_not-a-key"),
            big(LIMIT - 100),
            true,
            401,
        ),
        (
            "/v1/messages",
            auth(&keys.disabled),
            big(LIMIT - 100),
            false,
            401,
        ),
        ("/v1/messages", auth(&keys.full), big(2 * LIMIT), false, 413),
        ("/v1/messages", auth(&keys.full), big(2 * LIMIT), true, 413),
        (
            "/no/such/route",
            auth(&keys.full),
            big(LIMIT - 100),
            false,
            404,
        ),
        (
            "/apiStats/api/user-stats",
            vec![],
            big(LIMIT - 100),
            false,
            413,
        ),
    ] {
        let s = Sent {
            method: "POST".into(),
            path: path.into(),
            headers,
            body,
            chunked,
        };
        let got = tokio::time::timeout(DEADLINE, send_whole(&addr, &s))
            .await
            .expect("an answer in time");
        let status = got.unwrap_or_else(|e| panic!("{path} chunked={chunked}: {e}"));
        assert_eq!(status, want, "{path} chunked={chunked}");
    }
    env.stop().await;
}

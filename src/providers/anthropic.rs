//! Anthropic Messages wire format: endpoint URLs, usage extraction from JSON bodies and SSE
//! streams, and the error body shape.

use memchr::memmem;
use salvo::http::{HeaderMap, HeaderValue};
use serde::Deserialize;

use super::sse::DataLines;
use crate::usage::TokenUsage;

pub const DEFAULT_VERSION: &str = "2023-06-01";
/// Where Claude subscription (OAuth) accounts send requests unless `apiUrl` says otherwise.
pub const OFFICIAL_BASE: &str = "https://api.anthropic.com";
/// The beta flag OAuth-authenticated requests must carry.
pub const OAUTH_BETA: &str = "oauth-2025-04-20";

/// The client's `anthropic-beta` list with the OAuth flag added (once).
pub fn with_oauth_beta(client: Option<&str>) -> String {
    match client.map(str::trim).filter(|s| !s.is_empty()) {
        Some(list) if list.split(',').any(|b| b.trim() == OAUTH_BETA) => list.to_owned(),
        Some(list) => format!("{OAUTH_BETA},{list}"),
        None => OAUTH_BETA.to_owned(),
    }
}

/// The messages endpoint for an account's `apiUrl`, which may be a base URL
/// (`https://api.anthropic.com`, with or without `/v1`) or the full `/v1/messages` endpoint.
pub fn messages_url(api_url: &str) -> String {
    let base = api_url.trim().trim_end_matches('/');
    if base.ends_with("/v1/messages") {
        base.to_owned()
    } else if base.ends_with("/v1") {
        format!("{base}/messages")
    } else {
        format!("{base}/v1/messages")
    }
}

/// The endpoint for `op` (`/v1/messages` or `/v1/messages/count_tokens`) with the client's
/// query string.
pub fn endpoint(api_url: &str, op: super::Op, query: Option<&str>) -> String {
    let mut url = messages_url(api_url);
    if op == super::Op::CountTokens {
        url.push_str("/count_tokens");
    }
    super::request::with_query(url, query)
}

/// The client's `anthropic-version`, or the default.
pub fn version_header(h: &mut HeaderMap, from: &HeaderMap) {
    h.insert(
        "anthropic-version",
        from.get("anthropic-version")
            .cloned()
            .unwrap_or(HeaderValue::from_static(DEFAULT_VERSION)),
    );
}

/// An Anthropic error body: `{"type":"error","error":{"type":..,"message":..}}`.
pub fn error_body(kind: &str, message: &str) -> String {
    serde_json::json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
}

/// A terminal `error` event of a Messages stream (an `api_error` with `message`).
pub fn error_event(message: &str) -> bytes::Bytes {
    bytes::Bytes::from(format!(
        "event: error\ndata: {}\n\n",
        error_body("api_error", message)
    ))
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct CacheCreation {
    ephemeral_5m_input_tokens: Option<u64>,
    ephemeral_1h_input_tokens: Option<u64>,
}

/// Usage as Anthropic reports it. Fields are optional: `message_delta` repeats only some.
#[derive(Deserialize, Default)]
#[serde(default)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation: Option<CacheCreation>,
}

impl WireUsage {
    /// Fold reported fields into `u`; later reports are cumulative and replace earlier ones.
    fn apply(&self, u: &mut TokenUsage) {
        if let Some(v) = self.input_tokens {
            u.input_tokens = v;
        }
        if let Some(v) = self.output_tokens {
            u.output_tokens = v;
        }
        if let Some(v) = self.cache_creation_input_tokens {
            u.cache_create_tokens = v;
        }
        if let Some(v) = self.cache_read_input_tokens {
            u.cache_read_tokens = v;
        }
        if let Some(cc) = &self.cache_creation {
            if let Some(v) = cc.ephemeral_5m_input_tokens {
                u.ephemeral_5m_tokens = v;
            }
            if let Some(v) = cc.ephemeral_1h_input_tokens {
                u.ephemeral_1h_tokens = v;
            }
        }
    }
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Usage and model from a non-stream Messages response body.
pub fn usage_from_body(body: &[u8]) -> Option<(TokenUsage, Option<String>)> {
    let msg: WireMessage = serde_json::from_slice(body).ok()?;
    let wu = msg.usage?;
    let mut u = TokenUsage::default();
    wu.apply(&mut u);
    Some((u, msg.model))
}

/// Watches an SSE byte stream go by and keeps the usage it reports. It never changes bytes.
#[derive(Default)]
pub struct SseTap {
    lines: DataLines,
    pub usage: TokenUsage,
    pub model: Option<String>,
    /// `message_start` seen: the upstream began answering (input tokens are billed).
    pub started: bool,
    /// `message_stop` seen: the answer is complete.
    pub finished: bool,
    /// An `error` event came through the stream.
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: std::borrow::Cow<'a, str>,
    #[serde(default)]
    message: Option<WireMessage>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

impl SseTap {
    pub fn new() -> Self {
        Self::default()
    }

    /// True when the bytes seen so far end in the middle of a line.
    pub fn mid_line(&self) -> bool {
        self.lines.mid_line()
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        let mut lines = std::mem::take(&mut self.lines);
        lines.feed(chunk, |data| self.data(data));
        self.lines = lines;
    }

    fn data(&mut self, data: &[u8]) {
        // Only the few event types that carry usage or errors are parsed; content deltas,
        // the bulk of a stream, are skipped by a substring check.
        let interesting = memmem::find(data, b"\"message_").is_some()
            || memmem::find(data, b"\"error\"").is_some();
        if !interesting {
            return;
        }
        let Ok(ev) = serde_json::from_slice::<Event>(data) else {
            return;
        };
        match ev.kind.as_ref() {
            "message_start" => {
                self.started = true;
                if let Some(m) = ev.message {
                    if let Some(u) = m.usage {
                        u.apply(&mut self.usage);
                    }
                    if m.model.is_some() {
                        self.model = m.model;
                    }
                }
            }
            "message_delta" => {
                if let Some(u) = ev.usage {
                    u.apply(&mut self.usage);
                }
            }
            "message_stop" => self.finished = true,
            "error" => {
                self.error = Some(
                    ev.error
                        .map(|e| e.to_string())
                        .unwrap_or_else(|| "error".into()),
                );
            }
            _ => {}
        }
    }
}

impl super::StreamTap for SseTap {
    fn feed(&mut self, chunk: &bytes::Bytes) -> Option<bytes::Bytes> {
        SseTap::feed(self, chunk);
        None
    }
    fn usage(&self) -> TokenUsage {
        self.usage
    }
    fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }
    fn started(&self) -> bool {
        self.started
    }
    fn finished(&self) -> bool {
        self.finished
    }
    fn mid_line(&self) -> bool {
        SseTap::mid_line(self)
    }
    fn error_event(&self, message: &str) -> bytes::Bytes {
        error_event(message)
    }
}

/// Anthropic's OAuth client facts for subscription accounts (as Claude Code uses them).
pub mod oauth {
    /// Claude Code's public OAuth client.
    pub const CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
    pub const REDIRECT_URI: &str = "https://console.anthropic.com/oauth/code/callback";
    pub const SCOPES: &str = "org:create_api_key user:profile user:inference";
    /// Setup tokens (`claude setup-token`): inference only, one year, no refresh token.
    pub const SETUP_SCOPES: &str = "user:inference";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            messages_url("https://api.anthropic.com"),
            "https://api.anthropic.com/v1/messages"
        );
        assert_eq!(
            messages_url("http://127.0.0.1:18080/"),
            "http://127.0.0.1:18080/v1/messages"
        );
        assert_eq!(messages_url("http://h/v1"), "http://h/v1/messages");
        assert_eq!(messages_url("http://h/v1/messages"), "http://h/v1/messages");
        assert_eq!(
            messages_url("http://h/proxy/v1/messages/"),
            "http://h/proxy/v1/messages"
        );
    }

    const STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":110,\"cache_creation_input_tokens\":10,\"cache_read_input_tokens\":0,\"cache_creation\":{\"ephemeral_5m_input_tokens\":10,\"ephemeral_1h_input_tokens\":0},\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"say \\\"message_delta\\\" here\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":21}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    fn check(tap: &SseTap) {
        assert!(tap.started && tap.finished);
        assert_eq!(tap.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
        assert_eq!(
            tap.usage,
            TokenUsage {
                input_tokens: 110,
                output_tokens: 21,
                cache_create_tokens: 10,
                cache_read_tokens: 0,
                ephemeral_5m_tokens: 10,
                ephemeral_1h_tokens: 0,
            }
        );
    }

    #[test]
    fn tap_whole_stream() {
        let mut tap = SseTap::new();
        tap.feed(STREAM.as_bytes());
        check(&tap);
        assert!(!tap.mid_line());
    }

    #[test]
    fn tap_any_chunking() {
        let bytes = STREAM.as_bytes();
        for size in [1, 2, 3, 7, 64, 333] {
            let mut tap = SseTap::new();
            for c in bytes.chunks(size) {
                tap.feed(c);
            }
            check(&tap);
        }
        // CRLF line endings.
        let crlf = STREAM.replace('\n', "\r\n");
        let mut tap = SseTap::new();
        for c in crlf.as_bytes().chunks(5) {
            tap.feed(c);
        }
        check(&tap);
    }

    #[test]
    fn tap_error_event_and_cumulative_delta() {
        let mut tap = SseTap::new();
        tap.feed(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n");
        tap.feed(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":7,\"cache_read_input_tokens\":3,\"output_tokens\":9}}\n\n");
        tap.feed(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n");
        assert_eq!(tap.usage.input_tokens, 7);
        assert_eq!(tap.usage.cache_read_tokens, 3);
        assert_eq!(tap.usage.output_tokens, 9);
        assert!(tap.error.as_deref().unwrap().contains("overloaded_error"));
        assert!(!tap.finished);
    }

    #[test]
    fn body_usage() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-3-5-haiku-20241022","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":120,"cache_creation_input_tokens":0,"cache_read_input_tokens":30,"output_tokens":22}}"#;
        let (u, model) = usage_from_body(body).unwrap();
        assert_eq!(model.as_deref(), Some("claude-3-5-haiku-20241022"));
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cache_read_tokens),
            (120, 22, 30)
        );
        assert!(usage_from_body(b"not json").is_none());
    }

    mod props {
        use super::*;
        use crate::providers::tap_props::*;
        use proptest::prelude::*;
        use serde_json::{Map, Value, json};

        /// Reported usage fields: input, output, cache create, cache read, 5m, 1h.
        type Reported = [Option<u64>; 6];

        #[derive(Debug, Clone)]
        enum Ev {
            Start(Option<String>, Option<Reported>),
            Delta(Option<Reported>),
            Stop,
            Text(String),
            Ping,
            Error(String),
        }

        fn reported() -> impl Strategy<Value = Reported> {
            prop::array::uniform6(prop::option::of(tokens()))
        }

        fn ev() -> impl Strategy<Value = Ev> {
            prop_oneof![
                1 => (prop::option::of(text()), prop::option::of(reported()))
                    .prop_map(|(m, u)| Ev::Start(m, u)),
                1 => prop::option::of(reported()).prop_map(Ev::Delta),
                1 => Just(Ev::Stop),
                3 => text().prop_map(Ev::Text),
                1 => Just(Ev::Ping),
                1 => text().prop_map(Ev::Error),
            ]
        }

        fn usage_json(r: &Reported) -> Value {
            let mut m = Map::new();
            let names = [
                "input_tokens",
                "output_tokens",
                "cache_creation_input_tokens",
                "cache_read_input_tokens",
            ];
            for (n, v) in names.iter().zip(r) {
                if let Some(v) = v {
                    m.insert((*n).into(), json!(v));
                }
            }
            if r[4].is_some() || r[5].is_some() {
                let mut cc = Map::new();
                if let Some(v) = r[4] {
                    cc.insert("ephemeral_5m_input_tokens".into(), json!(v));
                }
                if let Some(v) = r[5] {
                    cc.insert("ephemeral_1h_input_tokens".into(), json!(v));
                }
                m.insert("cache_creation".into(), Value::Object(cc));
            }
            Value::Object(m)
        }

        fn encode(e: &Ev) -> (Option<&'static str>, Vec<u8>) {
            let (name, v) = match e {
                Ev::Start(model, u) => {
                    let mut msg = json!({"id": "msg_1", "type": "message", "role": "assistant", "content": []});
                    if let Some(m) = model {
                        msg["model"] = json!(m);
                    }
                    if let Some(u) = u {
                        msg["usage"] = usage_json(u);
                    }
                    (
                        "message_start",
                        json!({"type": "message_start", "message": msg}),
                    )
                }
                Ev::Delta(u) => {
                    let mut v =
                        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}});
                    if let Some(u) = u {
                        v["usage"] = usage_json(u);
                    }
                    ("message_delta", v)
                }
                Ev::Stop => ("message_stop", json!({"type": "message_stop"})),
                Ev::Text(t) => (
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}),
                ),
                Ev::Ping => ("ping", json!({"type": "ping"})),
                Ev::Error(m) => (
                    "error",
                    json!({"type": "error", "error": {"type": "overloaded_error", "message": m}}),
                ),
            };
            (Some(name), v.to_string().into_bytes())
        }

        /// What the tap should report: the last reported value of each field.
        fn expected(evs: &[Ev]) -> (TokenUsage, Option<String>, bool, bool, bool) {
            let mut u = TokenUsage::default();
            let mut model = None;
            let apply = |u: &mut TokenUsage, r: &Reported| {
                let fields = [
                    &mut u.input_tokens,
                    &mut u.output_tokens,
                    &mut u.cache_create_tokens,
                    &mut u.cache_read_tokens,
                    &mut u.ephemeral_5m_tokens,
                    &mut u.ephemeral_1h_tokens,
                ];
                for (f, v) in fields.into_iter().zip(r) {
                    if let Some(v) = v {
                        *f = *v;
                    }
                }
            };
            for e in evs {
                match e {
                    Ev::Start(m, r) => {
                        if m.is_some() {
                            model = m.clone();
                        }
                        if let Some(r) = r {
                            apply(&mut u, r);
                        }
                    }
                    Ev::Delta(Some(r)) => apply(&mut u, r),
                    _ => {}
                }
            }
            let has = |f: fn(&Ev) -> bool| evs.iter().any(f);
            (
                u,
                model,
                has(|e| matches!(e, Ev::Start(..))),
                has(|e| matches!(e, Ev::Stop)),
                has(|e| matches!(e, Ev::Error(_))),
            )
        }

        fn make() -> Box<dyn crate::providers::StreamTap> {
            Box::new(SseTap::new())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn stream_taps_the_same_in_any_chunking(
                evs in prop::collection::vec(ev(), 0..12),
                f in framing(),
                cuts in cuts(),
            ) {
                let enc: Vec<_> = evs.iter().map(encode).collect();
                let bytes = sse(&enc, f);
                let seen = same_in_any_chunking(make, &bytes, &cuts)?;
                prop_assert_eq!(&seen.out, &bytes, "bytes pass unchanged");
                let (usage, model, started, finished, error) = expected(&evs);
                prop_assert_eq!(seen.usage, usage);
                prop_assert_eq!(seen.model, model);
                prop_assert_eq!((seen.started, seen.finished), (started, finished));
                prop_assert!(!seen.mid_line);
                let mut tap = SseTap::new();
                tap.feed(&bytes);
                prop_assert_eq!(tap.error.is_some(), error);
            }

            #[test]
            fn garbage_never_breaks_the_tap(bytes in garbage(), cuts in cuts()) {
                let seen = same_in_any_chunking(make, &bytes, &cuts)?;
                prop_assert_eq!(&seen.out, &bytes);
            }

            #[test]
            fn body_usage_from_any_json(u in reported(), model in prop::option::of(text()), junk in garbage()) {
                let mut v = json!({"type": "message", "usage": usage_json(&u)});
                if let Some(m) = &model {
                    v["model"] = json!(m);
                }
                let (got, m) = usage_from_body(v.to_string().as_bytes()).unwrap();
                let (want, ..) = expected(&[Ev::Start(None, Some(u))]);
                prop_assert_eq!(got, want);
                prop_assert_eq!(m, model);
                let _ = usage_from_body(&junk);
            }
        }
    }
}

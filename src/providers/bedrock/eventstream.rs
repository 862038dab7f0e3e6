//! The AWS event stream (`application/vnd.amazon.eventstream`) of streamed answers, turned
//! into Anthropic SSE on its way to the client.

use std::borrow::Cow;

use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;

use super::super::StreamTap;
use super::super::anthropic::{self, SseTap};
use crate::usage::TokenUsage;

// The AWS event stream (application/vnd.amazon.eventstream)

/// Largest frame AWS sends (16 MiB), and the most header bytes one may carry (128 KiB).
const MAX_FRAME: usize = 16 * 1024 * 1024;
const MAX_HEADERS: usize = 128 * 1024;
/// total length + headers length + prelude CRC.
const PRELUDE: usize = 12;
/// Prelude plus the message CRC.
const MIN_FRAME: usize = PRELUDE + 4;

/// One decoded frame. Header values other than strings are skipped over, not kept.
#[derive(Debug)]
pub struct Frame<'a> {
    pub headers: Vec<(&'a str, &'a str)>,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }
}

/// Decode the frame at the start of `buf`: `Ok(None)` when more bytes are needed, else the
/// frame and how many bytes it took. CRCs are checked; the prelude's before waiting for the
/// rest, so a corrupt length is caught at once.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, String> {
    if buf.len() < PRELUDE {
        return Ok(None);
    }
    let be = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let total = be(0) as usize;
    let headers_len = be(4) as usize;
    if crc32fast::hash(&buf[..8]) != be(8) {
        return Err("prelude CRC mismatch".into());
    }
    if !(MIN_FRAME..=MAX_FRAME).contains(&total)
        || headers_len > MAX_HEADERS
        || headers_len > total - MIN_FRAME
    {
        return Err(format!(
            "bad frame lengths (total {total}, headers {headers_len})"
        ));
    }
    if buf.len() < total {
        return Ok(None);
    }
    if crc32fast::hash(&buf[..total - 4]) != be(total - 4) {
        return Err("message CRC mismatch".into());
    }
    let mut hb = &buf[PRELUDE..PRELUDE + headers_len];
    let mut headers = Vec::with_capacity(4);
    let short = || "truncated frame header".to_owned();
    while !hb.is_empty() {
        let n = hb[0] as usize;
        let name = hb.get(1..1 + n).ok_or_else(short)?;
        let name =
            std::str::from_utf8(name).map_err(|_| "frame header name is not UTF-8".to_owned())?;
        let kind = *hb.get(1 + n).ok_or_else(short)?;
        hb = &hb[2 + n..];
        let fixed = match kind {
            0 | 1 => Some(0),
            2 => Some(1),
            3 => Some(2),
            4 => Some(4),
            5 | 8 => Some(8),
            9 => Some(16),
            6 | 7 => None,
            _ => return Err(format!("unknown frame header type {kind}")),
        };
        match fixed {
            Some(len) => hb = hb.get(len..).ok_or_else(short)?,
            None => {
                let len = u16::from_be_bytes([
                    *hb.first().ok_or_else(short)?,
                    *hb.get(1).ok_or_else(short)?,
                ]) as usize;
                let value = hb.get(2..2 + len).ok_or_else(short)?;
                if kind == 7 {
                    let value = std::str::from_utf8(value)
                        .map_err(|_| "frame header value is not UTF-8".to_owned())?;
                    headers.push((name, value));
                }
                hb = &hb[2 + len..];
            }
        }
    }
    let payload = &buf[PRELUDE + headers_len..total - 4];
    Ok(Some((Frame { headers, payload }, total)))
}

/// Encode a frame with string headers (what the mock upstream and the tests send).
pub fn encode_frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut hb = Vec::with_capacity(96);
    for (k, v) in headers {
        hb.push(k.len() as u8);
        hb.extend_from_slice(k.as_bytes());
        hb.push(7);
        hb.extend_from_slice(&(v.len() as u16).to_be_bytes());
        hb.extend_from_slice(v.as_bytes());
    }
    let total = MIN_FRAME + hb.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(hb.len() as u32).to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&hb);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// A Bedrock `chunk` event frame carrying one Anthropic stream event.
pub fn chunk_frame(event_json: &[u8]) -> Vec<u8> {
    let payload =
        serde_json::json!({"bytes": base64::engine::general_purpose::STANDARD.encode(event_json)});
    encode_frame(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

/// A Bedrock exception frame (`throttlingException`, `modelStreamErrorException`, ...).
pub fn exception_frame(exception_type: &str, message: &str) -> Vec<u8> {
    encode_frame(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        serde_json::json!({"message": message})
            .to_string()
            .as_bytes(),
    )
}

/// The Anthropic error type for a Bedrock exception name (either case of the first letter).
pub fn exception_kind(exception_type: &str) -> &'static str {
    let t = exception_type.to_ascii_lowercase();
    match t.trim_end_matches("exception") {
        "throttling" | "toomanyrequests" => "rate_limit_error",
        "serviceunavailable" | "modelnotready" => "overloaded_error",
        "validation" => "invalid_request_error",
        "accessdenied" => "permission_error",
        "unrecognizedclient" | "invalidsignature" | "expiredtoken" => "authentication_error",
        "resourcenotfound" => "not_found_error",
        _ => "api_error",
    }
}

#[derive(Deserialize)]
struct ChunkPayload<'a> {
    #[serde(borrow)]
    bytes: Cow<'a, str>,
}

#[derive(Deserialize)]
struct EventHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "amazon-bedrock-invocationMetrics", default)]
    metrics: Option<InvocationMetrics>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct InvocationMetrics {
    input_token_count: u64,
    output_token_count: u64,
    cache_read_input_token_count: u64,
    cache_write_input_token_count: u64,
}

#[derive(Deserialize)]
struct ExceptionBody {
    #[serde(alias = "Message", default)]
    message: String,
}

/// Decodes the AWS event stream into Anthropic SSE and taps usage.
#[derive(Default)]
pub struct EventStreamTap {
    inner: SseTap,
    /// Bytes of an incomplete frame carried over to the next chunk.
    buf: Vec<u8>,
    /// Usage from the `amazon-bedrock-invocationMetrics` of `message_stop`.
    metrics: Option<TokenUsage>,
    /// An error event ended the client stream (exception frame or corrupt bytes): the rest of
    /// the upstream is dropped.
    terminated: bool,
}

impl EventStreamTap {
    pub fn new() -> Self {
        Self::default()
    }

    /// The Anthropic error this tap sent to end the stream, if any.
    pub fn error(&self) -> Option<&str> {
        self.inner.error.as_deref()
    }

    /// Turn the frames in `data` into SSE in `out`; returns the bytes used.
    fn frames(&mut self, data: &[u8], out: &mut Vec<u8>) -> usize {
        let mut pos = 0;
        while !self.terminated {
            match decode_frame(&data[pos..]) {
                Ok(Some((frame, used))) => {
                    self.frame(&frame, out);
                    pos += used;
                }
                Ok(None) => break,
                Err(e) => {
                    self.fail(
                        out,
                        "api_error",
                        &format!("Bedrock event stream is corrupt: {e}"),
                    );
                    return data.len();
                }
            }
        }
        pos
    }

    fn fail(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        let start = out.len();
        out.extend_from_slice(b"event: error\ndata: ");
        out.extend_from_slice(anthropic::error_body(kind, message).as_bytes());
        out.extend_from_slice(b"\n\n");
        self.inner.feed(&out[start..]);
        self.terminated = true;
    }

    fn frame(&mut self, f: &Frame, out: &mut Vec<u8>) {
        match f.header(":message-type").unwrap_or("event") {
            "event" if f.header(":event-type") == Some("chunk") => self.chunk(f.payload, out),
            "exception" => {
                let t = f
                    .header(":exception-type")
                    .unwrap_or("internalServerException");
                let msg = serde_json::from_slice::<ExceptionBody>(f.payload)
                    .map(|b| b.message)
                    .unwrap_or_else(|_| String::from_utf8_lossy(f.payload).into_owned());
                self.fail(out, exception_kind(t), &format!("Bedrock {t}: {msg}"));
            }
            "error" => {
                let code = f.header(":error-code").unwrap_or("InternalError");
                let msg = f.header(":error-message").unwrap_or("");
                self.fail(out, "api_error", &format!("Bedrock {code}: {msg}"));
            }
            _ => {}
        }
    }

    fn chunk(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        let decoded = serde_json::from_slice::<ChunkPayload>(payload)
            .ok()
            .and_then(|p| {
                base64::engine::general_purpose::STANDARD
                    .decode(p.bytes.as_bytes())
                    .ok()
            });
        let Some(event) = decoded else {
            return self.fail(
                out,
                "api_error",
                "Bedrock sent a chunk that is not base64 JSON",
            );
        };
        let Ok(head) = serde_json::from_slice::<EventHead>(&event) else {
            return self.fail(
                out,
                "api_error",
                "Bedrock sent a chunk that is not an Anthropic event",
            );
        };
        if let Some(m) = head.metrics {
            self.metrics = Some(TokenUsage {
                input_tokens: m.input_token_count,
                output_tokens: m.output_token_count,
                cache_create_tokens: m.cache_write_input_token_count,
                cache_read_tokens: m.cache_read_input_token_count,
                ephemeral_5m_tokens: m.cache_write_input_token_count,
                ephemeral_1h_tokens: 0,
            });
        }
        let start = out.len();
        out.extend_from_slice(b"event: ");
        // The name is one SSE line whatever the upstream put in it.
        out.extend(head.kind.bytes().filter(|b| !matches!(b, b'\r' | b'\n')));
        out.extend_from_slice(b"\ndata: ");
        if event.contains(&b'\n') || event.contains(&b'\r') {
            // SSE data is one line: re-encode the (pretty-printed) event compactly.
            match serde_json::from_slice::<serde_json::Value>(&event) {
                Ok(v) => out.extend_from_slice(v.to_string().as_bytes()),
                Err(_) => out.extend_from_slice(&event),
            }
        } else {
            out.extend_from_slice(&event);
        }
        out.extend_from_slice(b"\n\n");
        self.inner.feed(&out[start..]);
    }
}

impl StreamTap for EventStreamTap {
    fn feed(&mut self, chunk: &Bytes) -> Option<Bytes> {
        if self.terminated {
            return Some(Bytes::new());
        }
        let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 2);
        if self.buf.is_empty() {
            let used = self.frames(chunk, &mut out);
            if !self.terminated {
                self.buf.extend_from_slice(&chunk[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(chunk);
            let used = self.frames(&buf, &mut out);
            buf.drain(..used);
            if !self.terminated {
                self.buf = buf;
            }
        }
        Some(Bytes::from(out))
    }
    fn usage(&self) -> TokenUsage {
        match self.metrics {
            Some(m) if self.inner.usage == TokenUsage::default() => m,
            _ => self.inner.usage,
        }
    }
    fn model(&self) -> Option<&str> {
        self.inner.model.as_deref()
    }
    fn started(&self) -> bool {
        self.inner.started
    }
    fn finished(&self) -> bool {
        // After an error event the client's stream is complete: nothing more is added to it.
        self.inner.finished || self.terminated
    }
    fn mid_line(&self) -> bool {
        // Only whole SSE events are ever sent.
        false
    }
    fn error_event(&self, message: &str) -> Bytes {
        Bytes::from(format!(
            "event: error\ndata: {}\n\n",
            anthropic::error_body("api_error", message)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::providers::bedrock::*;

    // ---- event stream

    /// A frame made by a Python encoder and accepted by botocore's `EventStreamBuffer`: the
    /// chunk of `{"type":"message_stop"}` with Bedrock's `p` padding field.
    const BOTOCORE_FRAME: &str = "000000920000004b2fea33010b3a6576656e742d747970650700056368756e6b0d3a636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e0d3a6d6573736167652d747970650700056576656e747b226279746573223a2265794a306558426c496a6f696257567a6332466e5a56397a64473977496e303d222c2270223a2261626364227d42b72480";

    #[test]
    fn decodes_a_frame_botocore_accepts() {
        let bytes = hex::decode(BOTOCORE_FRAME).unwrap();
        let (f, used) = decode_frame(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(f.header(":event-type"), Some("chunk"));
        assert_eq!(f.header(":message-type"), Some("event"));
        assert_eq!(
            f.payload,
            br#"{"bytes":"eyJ0eXBlIjoibWVzc2FnZV9zdG9wIn0=","p":"abcd"}"#
        );
        // The encoder writes the same bytes.
        let again = encode_frame(
            &[
                (":event-type", "chunk"),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            f.payload,
        );
        assert_eq!(again, bytes);
        let mut tap = EventStreamTap::new();
        let out = tap.feed(&Bytes::from(bytes)).unwrap();
        assert_eq!(
            &out[..],
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        assert!(tap.finished());
    }

    fn events() -> Vec<String> {
        vec![
            r#"{"type":"message_start","message":{"id":"msg_bdrk_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":110,"cache_creation_input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}}"#.into(),
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.into(),
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi \"message_delta\" ü"}}"#.into(),
            r#"{"type":"content_block_stop","index":0}"#.into(),
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":21}}"#.into(),
            r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":110,"outputTokenCount":21,"invocationLatency":500,"firstByteLatency":200}}"#.into(),
        ]
    }

    fn stream() -> Vec<u8> {
        events()
            .iter()
            .flat_map(|e| chunk_frame(e.as_bytes()))
            .collect()
    }

    fn expected_sse() -> String {
        events()
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(e).unwrap();
                format!("event: {}\ndata: {e}\n\n", v["type"].as_str().unwrap())
            })
            .collect()
    }

    fn run(tap: &mut EventStreamTap, chunks: &[&[u8]]) -> String {
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&tap.feed(&Bytes::copy_from_slice(c)).unwrap());
        }
        String::from_utf8(out).unwrap()
    }

    fn check_usage(tap: &EventStreamTap) {
        assert!(tap.started() && tap.finished());
        assert_eq!(tap.model(), Some("claude-sonnet-4-5-20250929"));
        let u = tap.usage();
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cache_create_tokens,
                u.cache_read_tokens
            ),
            (110, 21, 10, 5)
        );
    }

    #[test]
    fn whole_stream_in_one_chunk() {
        let mut tap = EventStreamTap::new();
        assert_eq!(run(&mut tap, &[&stream()]), expected_sse());
        check_usage(&tap);
        assert!(!tap.mid_line());
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let s = stream();
        for cut in 0..=s.len() {
            let mut tap = EventStreamTap::new();
            assert_eq!(
                run(&mut tap, &[&s[..cut], &s[cut..]]),
                expected_sse(),
                "cut at {cut}"
            );
            check_usage(&tap);
        }
        // And one byte at a time, and in odd sizes.
        for size in [1, 3, 7, 50, 333] {
            let mut tap = EventStreamTap::new();
            let chunks: Vec<&[u8]> = s.chunks(size).collect();
            assert_eq!(run(&mut tap, &chunks), expected_sse(), "chunks of {size}");
            check_usage(&tap);
        }
    }

    #[test]
    fn metrics_count_only_when_the_events_report_no_usage() {
        let evs = [
            r#"{"type":"message_start","message":{"model":"claude-3-5-haiku-20241022","content":[]}}"#,
            r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":42,"outputTokenCount":7,"cacheReadInputTokenCount":3,"cacheWriteInputTokenCount":2,"invocationLatency":1,"firstByteLatency":1}}"#,
        ];
        let bytes: Vec<u8> = evs.iter().flat_map(|e| chunk_frame(e.as_bytes())).collect();
        let mut tap = EventStreamTap::new();
        run(&mut tap, &[&bytes]);
        let u = tap.usage();
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cache_read_tokens,
                u.cache_create_tokens
            ),
            (42, 7, 3, 2)
        );
        assert!(tap.started() && tap.finished());
    }

    #[test]
    fn exception_frame_becomes_an_anthropic_error_event() {
        let mut s = chunk_frame(events()[0].as_bytes());
        s.extend(exception_frame(
            "throttlingException",
            "Too many requests, please wait before trying again.",
        ));
        s.extend(chunk_frame(events()[1].as_bytes()));
        let mut tap = EventStreamTap::new();
        let out = run(&mut tap, &[&s]);
        let (first, rest) = out.split_once("\n\n").unwrap();
        assert!(first.starts_with("event: message_start\n"));
        let rest = rest.strip_prefix("event: error\ndata: ").unwrap();
        let v: serde_json::Value = serde_json::from_str(rest.trim_end()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Too many requests")
        );
        assert!(tap.started() && tap.finished());
        assert!(tap.error().is_some());
        // Nothing after the error reaches the client.
        assert!(
            tap.feed(&Bytes::from(chunk_frame(events()[2].as_bytes())))
                .unwrap()
                .is_empty()
        );
        assert_eq!(tap.usage().input_tokens, 110);
    }

    #[test]
    fn bad_crc_ends_the_stream_with_an_error() {
        for flip in [2usize, 9, 40, 0] {
            let mut s = chunk_frame(events()[0].as_bytes());
            let second = s.len();
            s.extend(chunk_frame(events()[1].as_bytes()));
            // Corrupt a byte of the second frame: its length, prelude CRC, payload or
            // (flip 0) the message CRC.
            let at = if flip == 0 {
                s.len() - 1
            } else {
                second + flip
            };
            s[at] ^= 0x5a;
            let mut tap = EventStreamTap::new();
            let out = run(&mut tap, &[&s[..second + 5], &s[second + 5..]]);
            assert!(out.starts_with("event: message_start\n"), "{out}");
            let tail = out.rsplit_once("\n\nevent: error\ndata: ").unwrap().1;
            let v: serde_json::Value = serde_json::from_str(tail.trim_end()).unwrap();
            assert_eq!(v["error"]["type"], "api_error");
            assert!(
                v["error"]["message"].as_str().unwrap().contains("corrupt"),
                "{tail}"
            );
            assert!(tap.finished());
            assert!(tap.feed(&Bytes::from_static(b"more")).unwrap().is_empty());
        }
    }

    #[test]
    fn garbage_and_odd_headers() {
        // An absurd length with a valid prelude CRC is refused at once.
        let mut p = Vec::new();
        p.extend_from_slice(&(u32::MAX).to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32fast::hash(&p);
        p.extend_from_slice(&crc.to_be_bytes());
        assert!(decode_frame(&p).is_err());
        // Non-string header types are skipped; unknown event types send nothing.
        let mut hb = Vec::new();
        hb.extend_from_slice(b"\x04flag\x00");
        hb.extend_from_slice(b"\x02id\x09");
        hb.extend_from_slice(&[7u8; 16]);
        hb.extend_from_slice(b"\x0b:event-type\x07\x00\x04ping");
        let total = MIN_FRAME + hb.len();
        let mut f = Vec::new();
        f.extend_from_slice(&(total as u32).to_be_bytes());
        f.extend_from_slice(&(hb.len() as u32).to_be_bytes());
        let crc = crc32fast::hash(&f);
        f.extend_from_slice(&crc.to_be_bytes());
        f.extend_from_slice(&hb);
        let crc = crc32fast::hash(&f);
        f.extend_from_slice(&crc.to_be_bytes());
        let (frame, used) = decode_frame(&f).unwrap().unwrap();
        assert_eq!(used, f.len());
        assert_eq!(frame.headers, [(":event-type", "ping")]);
        let mut tap = EventStreamTap::new();
        assert!(tap.feed(&Bytes::from(f)).unwrap().is_empty());
        assert!(!tap.finished());
    }

    mod props {
        use super::*;
        use crate::providers::tap_props::*;
        use proptest::prelude::*;
        use serde_json::{Value, json};

        #[derive(Debug, Clone)]
        enum F {
            /// A chunk carrying an Anthropic event, compact or pretty-printed.
            Event(Value, bool),
            Exception(String, String),
            Error(String, String),
            /// A frame of an event type the tap does not know.
            Other(String),
        }

        fn event() -> impl Strategy<Value = Value> {
            prop_oneof![
                1 => (prop::option::of(text()), tokens(), tokens()).prop_map(|(m, i, o)| {
                    let mut msg = json!({"type": "message", "usage": {"input_tokens": i, "output_tokens": o}});
                    if let Some(m) = m {
                        msg["model"] = json!(m);
                    }
                    json!({"type": "message_start", "message": msg})
                }),
                1 => tokens().prop_map(|o| json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": o}})),
                3 => text().prop_map(|t| json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}})),
                1 => prop::option::of((tokens(), tokens(), tokens(), tokens())).prop_map(|m| {
                    let mut v = json!({"type": "message_stop"});
                    if let Some((i, o, r, w)) = m {
                        v["amazon-bedrock-invocationMetrics"] = json!({"inputTokenCount": i,
                            "outputTokenCount": o, "cacheReadInputTokenCount": r,
                            "cacheWriteInputTokenCount": w, "invocationLatency": 1});
                    }
                    v
                }),
                1 => Just(json!({"type": "ping"})),
            ]
        }

        fn frame() -> impl Strategy<Value = F> {
            let name = "[a-zA-Z]{0,12}(Exception)?";
            prop_oneof![
                12 => (event(), any::<bool>()).prop_map(|(e, pretty)| F::Event(e, pretty)),
                1 => (name, text()).prop_map(|(t, m)| F::Exception(t, m)),
                1 => (name, text()).prop_map(|(c, m)| F::Error(c, m)),
                1 => name.prop_map(F::Other),
            ]
        }

        fn encode(f: &F) -> Vec<u8> {
            match f {
                F::Event(e, false) => chunk_frame(e.to_string().as_bytes()),
                F::Event(e, true) => {
                    chunk_frame(serde_json::to_string_pretty(e).unwrap().as_bytes())
                }
                F::Exception(t, m) => exception_frame(t, m),
                F::Error(c, m) => encode_frame(
                    &[
                        (":message-type", "error"),
                        (":error-code", c),
                        (":error-message", m),
                    ],
                    b"",
                ),
                F::Other(t) => {
                    encode_frame(&[(":message-type", "event"), (":event-type", t)], b"{}")
                }
            }
        }

        /// The SSE the client should get: each event until the first exception or error frame,
        /// which ends the stream with an error event.
        fn expected_out(frames: &[F]) -> Vec<u8> {
            let mut out = Vec::new();
            let fail = |out: &mut Vec<u8>, kind: &str, msg: &str| {
                out.extend_from_slice(
                    format!(
                        "event: error\ndata: {}\n\n",
                        anthropic::error_body(kind, msg)
                    )
                    .as_bytes(),
                );
            };
            for f in frames {
                match f {
                    F::Event(e, _) => out.extend_from_slice(
                        format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap()).as_bytes(),
                    ),
                    F::Exception(t, m) => {
                        fail(&mut out, exception_kind(t), &format!("Bedrock {t}: {m}"));
                        break;
                    }
                    F::Error(c, m) => {
                        fail(&mut out, "api_error", &format!("Bedrock {c}: {m}"));
                        break;
                    }
                    F::Other(_) => {}
                }
            }
            out
        }

        fn make() -> Box<dyn StreamTap> {
            Box::new(EventStreamTap::new())
        }

        /// Every event is `event: <name>` then one `data:` line of JSON, then a blank line.
        fn whole_events(out: &[u8]) -> Result<(), TestCaseError> {
            let text = std::str::from_utf8(out).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert!(text.is_empty() || text.ends_with("\n\n"), "{:?}", text);
            for ev in text.split_terminator("\n\n") {
                let lines: Vec<&str> = ev.split('\n').collect();
                prop_assert_eq!(lines.len(), 2, "{:?}", ev);
                prop_assert!(
                    lines[0].starts_with("event: ") && !lines[0].contains('\r'),
                    "{:?}",
                    ev
                );
                let data = lines[1].strip_prefix("data: ");
                prop_assert!(
                    data.is_some_and(|d| serde_json::from_str::<Value>(d).is_ok()),
                    "{:?}",
                    ev
                );
            }
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn frames_convert_the_same_in_any_chunking(
                frames in prop::collection::vec(frame(), 0..10),
                cuts in cuts(),
            ) {
                let bytes: Vec<u8> = frames.iter().flat_map(encode).collect();
                let seen = same_in_any_chunking(make, &bytes, &cuts)?;
                let want = expected_out(&frames);
                prop_assert_eq!(
                    String::from_utf8_lossy(&seen.out),
                    String::from_utf8_lossy(&want)
                );
                whole_events(&seen.out)?;
                // Usage as the converted events report it, else Bedrock's invocation metrics.
                let mut sse_tap = SseTap::new();
                sse_tap.feed(&want);
                let ended = frames.iter().position(|f| matches!(f, F::Exception(..) | F::Error(..)));
                let metrics = frames[..ended.unwrap_or(frames.len())]
                    .iter()
                    .filter_map(|f| match f {
                        F::Event(e, _) => e.get("amazon-bedrock-invocationMetrics"),
                        _ => None,
                    })
                    .next_back();
                let usage = match metrics {
                    Some(m) if sse_tap.usage == TokenUsage::default() => {
                        let n = |k: &str| m[k].as_u64().unwrap();
                        TokenUsage {
                            input_tokens: n("inputTokenCount"),
                            output_tokens: n("outputTokenCount"),
                            cache_create_tokens: n("cacheWriteInputTokenCount"),
                            cache_read_tokens: n("cacheReadInputTokenCount"),
                            ephemeral_5m_tokens: n("cacheWriteInputTokenCount"),
                            ephemeral_1h_tokens: 0,
                        }
                    }
                    _ => sse_tap.usage,
                };
                prop_assert_eq!(seen.usage, usage);
                prop_assert_eq!(seen.model, sse_tap.model);
                prop_assert_eq!(seen.started, sse_tap.started);
                prop_assert_eq!(seen.finished, sse_tap.finished || ended.is_some());
                prop_assert!(!seen.mid_line);
            }

            #[test]
            fn any_event_name_stays_one_sse_event(
                name in text(),
                tail in prop::collection::vec(frame(), 0..3),
                cuts in cuts(),
            ) {
                let mut bytes = chunk_frame(json!({"type": name, "x": 1}).to_string().as_bytes());
                bytes.extend(tail.iter().flat_map(encode));
                let seen = same_in_any_chunking(make, &bytes, &cuts)?;
                whole_events(&seen.out)?;
            }

            #[test]
            fn garbage_and_corrupt_frames_never_break_the_tap(
                frames in prop::collection::vec(frame(), 0..4),
                flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 0..3),
                junk in garbage(),
                junk_first in any::<bool>(),
                cuts in cuts(),
            ) {
                let mut bytes: Vec<u8> = frames.iter().flat_map(encode).collect();
                for (at, x) in &flips {
                    if !bytes.is_empty() {
                        let i = at.index(bytes.len());
                        bytes[i] ^= x;
                    }
                }
                if junk_first {
                    bytes.splice(0..0, junk);
                } else {
                    bytes.extend(junk);
                }
                let seen = same_in_any_chunking(make, &bytes, &cuts)?;
                whole_events(&seen.out)?;
                let _ = decode_frame(&bytes);
            }
        }
    }
}

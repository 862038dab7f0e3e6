//! Conversions between client wire formats: a request in one format is sent upstream in
//! another, and the answer (JSON or stream) is converted back, with usage kept in the
//! upstream's own units. Pure functions and stream taps; no state, no I/O.
//!
//! - `chat`: OpenAI Chat Completions (and legacy Completions) clients on Anthropic Messages,
//!   OpenAI Responses and Gemini upstreams.
//! - `messages`: Anthropic Messages clients on OpenAI Responses and Gemini upstreams.
//! - `images`: OpenAI Images API clients on the Codex backend (v1's images bridge).

pub mod chat;
pub mod images;
pub mod messages;

use bytes::Bytes;

use crate::providers::StreamTap;
use crate::providers::sse::DataLines;
use crate::usage::TokenUsage;

/// A conversion the engine applies to an answer: which client format it goes back to, and
/// what that needs to know about the request.
#[derive(Debug, Clone)]
pub enum Conversion {
    /// Back to OpenAI Chat Completions (or legacy Completions).
    Chat(chat::Chat),
    /// Back to Anthropic Messages.
    Messages(messages::Msgs),
    /// Back to an Images API answer (the engine reads the Codex stream whole:
    /// `engine::respond_images`).
    Images(images::Images),
}

impl Conversion {
    /// The converting stream tap for this answer.
    pub fn into_tap(self, created: i64) -> Box<dyn StreamTap> {
        match self {
            Conversion::Chat(c) => Box::new(chat::ChatTap::new(c, created)),
            Conversion::Messages(m) => Box::new(messages::MessagesTap::new(m)),
            Conversion::Images(_) => Box::new(crate::providers::openai::ResponsesTap::new()),
        }
    }

    /// The converted non-stream answer; None when the upstream body is not an answer.
    pub fn response(&self, body: &[u8], created: i64) -> Option<Vec<u8>> {
        match self {
            Conversion::Chat(c) => chat::response(body, c, created),
            Conversion::Messages(m) => messages::response(body, m),
            // (The engine answers image requests itself, `respond_images`, from the body it
            // holds; this is for completeness.)
            Conversion::Images(_) => {
                images::answer(&bytes::Bytes::copy_from_slice(body), created).0
            }
        }
    }
}

/// A stream conversion: the upstream's SSE data lines in, the client's events out.
pub trait Converter: Send {
    /// One upstream data line; `usage` is what the upstream reported up to and with it.
    fn event(&mut self, data: &[u8], usage: &TokenUsage, out: &mut Vec<u8>);
    /// A well-formed terminal error event in the client's dialect.
    fn error_event(&self, message: &str) -> Bytes;
}

/// A `StreamTap` that converts: the upstream format's own tap underneath keeps the usage
/// (and says when the answer started and finished), the converter writes the client's events.
pub struct ConvertingTap<C> {
    inner: Box<dyn StreamTap>,
    lines: DataLines,
    conv: C,
}

impl<C: Converter> ConvertingTap<C> {
    pub fn with(inner: Box<dyn StreamTap>, conv: C) -> Self {
        ConvertingTap {
            inner,
            lines: DataLines::new(),
            conv,
        }
    }
}

impl<C: Converter> StreamTap for ConvertingTap<C> {
    fn feed(&mut self, chunk: &Bytes) -> Option<Bytes> {
        self.inner.feed(chunk);
        let usage = self.inner.usage();
        let mut out = Vec::new();
        let conv = &mut self.conv;
        self.lines
            .feed(chunk, |data| conv.event(data, &usage, &mut out));
        Some(Bytes::from(out))
    }
    fn usage(&self) -> TokenUsage {
        self.inner.usage()
    }
    fn model(&self) -> Option<&str> {
        self.inner.model()
    }
    fn started(&self) -> bool {
        self.inner.started()
    }
    fn finished(&self) -> bool {
        self.inner.finished()
    }
    fn mid_line(&self) -> bool {
        false
    }
    fn error_event(&self, message: &str) -> Bytes {
        self.conv.error_event(message)
    }
}

/// A request that cannot be converted: the client gets a 400 in its own format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

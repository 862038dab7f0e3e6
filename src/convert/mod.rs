//! Conversions between client wire formats: a request in one format is sent upstream in
//! another, and the answer (JSON or stream) is converted back, with usage kept in the
//! upstream's own units. Pure functions and stream taps; no state, no I/O.
//!
//! - `chat`: OpenAI Chat Completions (and legacy Completions) clients on Anthropic Messages,
//!   OpenAI Responses and Gemini upstreams.
//! - `messages`: Anthropic Messages clients on OpenAI Responses and Gemini upstreams.

pub mod chat;
pub mod messages;

/// A conversion the engine applies to an answer: which client format it goes back to, and
/// what that needs to know about the request.
#[derive(Debug, Clone)]
pub enum Conversion {
    /// Back to OpenAI Chat Completions (or legacy Completions).
    Chat(chat::Chat),
    /// Back to Anthropic Messages.
    Messages(messages::Msgs),
}

impl Conversion {
    /// The converting stream tap for this answer.
    pub fn tap(&self, created: i64) -> Box<dyn crate::providers::StreamTap> {
        match self {
            Conversion::Chat(c) => Box::new(chat::ChatTap::new(c.clone(), created)),
            Conversion::Messages(m) => Box::new(messages::MessagesTap::new(m.clone())),
        }
    }

    /// The converted non-stream answer; None when the upstream body is not an answer.
    pub fn response(&self, body: &[u8], created: i64) -> Option<Vec<u8>> {
        match self {
            Conversion::Chat(c) => chat::response(body, c, created),
            Conversion::Messages(m) => messages::response(body, m),
        }
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

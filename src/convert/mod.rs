//! Conversions between client wire formats: a request in one format is sent upstream in
//! another, and the answer (JSON or stream) is converted back, with usage kept in the
//! upstream's own units. Pure functions and stream taps; no state, no I/O.
//!
//! - `chat`: OpenAI Chat Completions clients on Anthropic Messages upstreams.
//! - `images`: OpenAI Images API clients on the Codex backend (v1's images bridge).

pub mod chat;
pub mod images;

/// The conversion of a request's answer back into the client's format.
#[derive(Debug, Clone)]
pub enum Convert {
    Chat(chat::Chat),
    Images(images::Images),
}

/// A request that cannot be converted: the client gets a 400 in its own format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

//! Provider adapters: build upstream requests, extract usage, classify errors. One module per
//! wire format; no policy and no I/O decisions live here.

pub mod anthropic;
pub mod bedrock;
pub mod gemini;
pub mod openai;

use bytes::Bytes;

use crate::usage::TokenUsage;

/// Watches (and, for formats that need converting, rewrites) an upstream stream on its way to
/// the client, keeping the usage it reports.
pub trait StreamTap: Send {
    /// Observe an upstream chunk. Returns the bytes for the client; `None` means the chunk
    /// goes through unchanged.
    fn feed(&mut self, chunk: &Bytes) -> Option<Bytes>;
    fn usage(&self) -> TokenUsage;
    /// The model the upstream reported, if it did.
    fn model(&self) -> Option<&str>;
    /// The upstream began answering (it bills the input from here on).
    fn started(&self) -> bool;
    /// The answer is complete.
    fn finished(&self) -> bool;
    /// The bytes so far end in the middle of a line.
    fn mid_line(&self) -> bool;
    /// A well-formed terminal error event in the client's stream dialect.
    fn error_event(&self, message: &str) -> Bytes;
}

//! AWS Bedrock (Claude models): SigV4-signed InvokeModel requests, and the AWS event stream
//! of `invoke-with-response-stream` converted to Anthropic SSE.

use bytes::Bytes;
use salvo::http::HeaderMap;

use super::StreamTap;
use crate::accounts::AccountRt;
use crate::relay::engine::Call;
use crate::usage::TokenUsage;

pub fn build_request(
    _acc: &AccountRt,
    _call: &Call,
    _upstream_model: &str,
    _h: HeaderMap,
) -> anyhow::Result<reqwest::RequestBuilder> {
    anyhow::bail!("Bedrock accounts are not supported yet")
}

/// Decodes the AWS event stream into Anthropic SSE and taps usage.
#[derive(Default)]
pub struct EventStreamTap {
    inner: super::anthropic::SseTap,
}

impl EventStreamTap {
    pub fn new() -> Self {
        Self::default()
    }
}

impl StreamTap for EventStreamTap {
    fn feed(&mut self, _chunk: &Bytes) -> Option<Bytes> {
        Some(Bytes::new())
    }
    fn usage(&self) -> TokenUsage {
        self.inner.usage
    }
    fn model(&self) -> Option<&str> {
        self.inner.model.as_deref()
    }
    fn started(&self) -> bool {
        self.inner.started
    }
    fn finished(&self) -> bool {
        self.inner.finished
    }
    fn mid_line(&self) -> bool {
        false
    }
    fn error_event(&self, message: &str) -> Bytes {
        Bytes::from(format!(
            "event: error\ndata: {}\n\n",
            super::anthropic::error_body("api_error", message)
        ))
    }
}

//! Claude Code Router accounts: an Anthropic-compatible endpoint reached like a Console
//! account.

use anyhow::Result;

use super::console::build_with_key;
use super::{AccountType, ClientFormat, Op, Outgoing, Upstream};

pub struct Ccr;

impl AccountType for Ccr {
    fn build(&self, up: &Upstream, out: &Outgoing) -> Result<reqwest::RequestBuilder> {
        build_with_key(up, out)
    }

    fn upstream_format(&self, _op: Op) -> Option<ClientFormat> {
        Some(ClientFormat::Anthropic)
    }
}

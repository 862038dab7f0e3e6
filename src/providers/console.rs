//! Claude Console accounts: an Anthropic-compatible API key upstream (`apiUrl` + `apiKey`).
//! Anthropic keys (`sk-ant-...`) go in `x-api-key`, other keys as a bearer token.

use anyhow::Result;
use salvo::http::{HeaderValue, header};

use super::request::{ANTHROPIC_FORWARD, base_headers, bearer, body, forward};
use super::{AccountType, ClientFormat, Op, Outgoing, Upstream, anthropic};

pub struct Console;

/// An Anthropic Messages request with an API key: Console and CCR accounts.
pub fn build_with_key(up: &Upstream, out: &Outgoing) -> Result<reqwest::RequestBuilder> {
    let mut h = base_headers(up, out);
    forward(&mut h, out.headers, ANTHROPIC_FORWARD);
    anthropic::version_header(&mut h, out.headers);
    let url = anthropic::endpoint(&up.rec.api_url, out.op, out.query);
    let key = &up.credential.secret.0;
    if key.starts_with("sk-ant-") {
        h.insert("x-api-key", HeaderValue::from_str(key)?);
    } else {
        h.insert(header::AUTHORIZATION, bearer(key)?);
    }
    super::request::post(up.client, &url, h, body(out))
}

impl AccountType for Console {
    fn build(&self, up: &Upstream, out: &Outgoing) -> Result<reqwest::RequestBuilder> {
        build_with_key(up, out)
    }

    fn upstream_format(&self, _op: Op) -> Option<ClientFormat> {
        Some(ClientFormat::Anthropic)
    }
}

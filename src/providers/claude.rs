//! Claude subscription accounts (Max/Pro through OAuth): Anthropic Messages with the OAuth
//! access token as a bearer token and the OAuth beta flag added.

use anyhow::Result;
use salvo::http::{HeaderValue, header};

use super::request::{ANTHROPIC_FORWARD, base_headers, bearer, body, forward};
use super::{AccountType, ClientFormat, Credential, Op, Outgoing, Upstream, anthropic, decrypt};
use crate::crypto::Secrets;
use crate::model::Account;

pub struct Claude;

impl AccountType for Claude {
    fn credential(&self, secrets: &Secrets, rec: &Account) -> Result<Credential> {
        Ok(Credential {
            secret: decrypt(secrets, "accessToken", &rec.access_token)?,
            session_token: None,
        })
    }

    fn oauth(&self) -> bool {
        true
    }

    fn build(&self, up: &Upstream, out: &Outgoing) -> Result<reqwest::RequestBuilder> {
        let mut h = base_headers(up, out);
        forward(&mut h, out.headers, ANTHROPIC_FORWARD);
        anthropic::version_header(&mut h, out.headers);
        let base = if up.rec.api_url.is_empty() {
            anthropic::OFFICIAL_BASE
        } else {
            up.rec.api_url.as_str()
        };
        let url = anthropic::endpoint(base, out.op, out.query);
        let token = up.token.unwrap_or(&up.credential.secret);
        h.insert(header::AUTHORIZATION, bearer(&token.0)?);
        let beta = anthropic::with_oauth_beta(
            out.headers
                .get("anthropic-beta")
                .and_then(|v| v.to_str().ok()),
        );
        h.insert("anthropic-beta", HeaderValue::from_str(&beta)?);
        Ok(up.client.post(url).headers(h).body(body(out)))
    }

    fn upstream_format(&self, _op: Op) -> Option<ClientFormat> {
        Some(ClientFormat::Anthropic)
    }
}

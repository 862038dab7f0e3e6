//! Gemini OAuth accounts (v1's `gemini` type): the Gemini CLI's Google login, served through
//! Google's Code Assist API with the account's access token as a bearer token and the
//! account's Google Cloud project (`projectId`, else the `tempProjectId` onboarding found).
//! Standard Gemini requests are wrapped for Code Assist and its answers unwrapped (the stream
//! through `stream_stage`), so every user of the Gemini wire format works on these accounts;
//! the Gemini CLI's own `v1internal` routes (`Op::CodeAssist`) pass through in Code Assist's
//! format with the account's project set.

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use salvo::http::header;

use super::codeassist::{self, Method, account_project, unwrap_body, with_project, wrap};
use super::request::{base_headers, bearer, body};
use super::{AccountType, ClientFormat, Credential, Op, Outgoing, StreamTap, Upstream};
use crate::crypto::Secrets;
use crate::model::Account;

pub struct GeminiOAuth;

impl AccountType for GeminiOAuth {
    fn credential(&self, secrets: &Secrets, rec: &Account) -> Result<Credential> {
        super::access_token_credential(secrets, rec)
    }

    fn oauth(&self) -> bool {
        true
    }

    fn build(&self, up: &Upstream, out: &Outgoing) -> Result<reqwest::RequestBuilder> {
        let token = up.token.context("no OAuth access token")?;
        let mut h = base_headers(up, out);
        h.insert(header::AUTHORIZATION, bearer(&token.0)?);
        let base = up.endpoint;
        let (method, payload) = match out.op {
            Op::Gemini { method, .. } => {
                let m = Method::of_gemini(method);
                let wrapped = wrap(out.body, m, out.upstream_model, account_project(up.rec))
                    .context("the request body is not a JSON object")?;
                (m, wrapped)
            }
            Op::CodeAssist { method } => {
                let b = body(out);
                // v1 src/handlers/geminiHandlers.js: the account's project wins over the
                // client's (`projectId || tempProjectId` for generation and quota; the
                // configured `projectId` for loadCodeAssist / onboardUser).
                let b = match method {
                    Method::GenerateContent
                    | Method::StreamGenerateContent
                    | Method::RetrieveUserQuota => {
                        with_project(&b, "project", account_project(up.rec))
                    }
                    Method::LoadCodeAssist | Method::OnboardUser => with_project(
                        &b,
                        "cloudaicompanionProject",
                        up.rec.extra.get("projectId").and_then(|v| v.as_str()),
                    ),
                    Method::CountTokens | Method::ListExperiments => b,
                };
                (method, b)
            }
            _ => bail!("a Gemini OAuth account cannot serve this request"),
        };
        super::request::post(up.client, &codeassist::url(base, method), h, payload)
    }

    fn upstream_format(&self, _op: Op) -> Option<ClientFormat> {
        Some(ClientFormat::Gemini)
    }

    fn stream_stage(&self, op: Op, tap: Box<dyn StreamTap>) -> Box<dyn StreamTap> {
        match op {
            Op::Gemini { .. } => Box::new(codeassist::Unwrap::new(tap, true)),
            _ => tap,
        }
    }

    fn standard_body(&self, op: Op, body: Bytes) -> Bytes {
        match op {
            Op::Gemini { .. } => unwrap_body(&body).unwrap_or(body),
            _ => body,
        }
    }

    fn probe(&self, rec: &Account, model: &str) -> (Op, serde_json::Value) {
        super::gemini_api::GeminiApi.probe(rec, model)
    }
}

//! OpenAI Responses accounts (Codex on an API key): `baseApi` + `apiKey`, Responses and Chat
//! Completions.

use anyhow::Result;
use salvo::http::header;

use super::request::{OPENAI_FORWARD, base_headers, bearer, body, forward};
use super::{AccountType, ClientFormat, Op, Outgoing, Upstream, openai};
use crate::model::Account;

pub struct Responses;

/// The smallest Responses request (the account test of OpenAI-speaking types).
pub fn responses_probe(model: &str) -> (Op, serde_json::Value) {
    (
        Op::Responses { compact: false },
        serde_json::json!({"model": model, "input": "ping", "max_output_tokens": 16}),
    )
}

impl AccountType for Responses {
    fn build(&self, up: &Upstream, out: &Outgoing) -> Result<reqwest::RequestBuilder> {
        let mut h = base_headers(up, out);
        forward(&mut h, out.headers, OPENAI_FORWARD);
        h.insert(header::AUTHORIZATION, bearer(&up.credential.secret.0)?);
        let url = match out.op {
            Op::Responses { compact } => openai::responses_url(&up.rec.api_url, compact),
            Op::ChatCompletions => openai::chat_url(&up.rec.api_url),
            _ => anyhow::bail!("an OpenAI account cannot serve this request"),
        };
        super::request::post(up.client, &url, h, body(out))
    }

    fn upstream_format(&self, _op: Op) -> Option<ClientFormat> {
        Some(ClientFormat::OpenAI)
    }

    fn probe(&self, _rec: &Account, model: &str) -> (Op, serde_json::Value) {
        responses_probe(model)
    }
}

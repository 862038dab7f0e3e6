//! Factory.ai Droid accounts: one API key in front of Anthropic (`/a/v1/messages`) and OpenAI
//! (`/o/v1/...`) endpoints, chosen by the request's operation.

use anyhow::Result;
use salvo::http::header;

use super::request::{ANTHROPIC_FORWARD, OPENAI_FORWARD, base_headers, bearer, body, forward};
use super::responses::responses_probe;
use super::{AccountType, ClientFormat, Op, Outgoing, Upstream, anthropic};
use crate::model::Account;

pub struct Droid;

/// Factory's LLM gateway.
const DEFAULT_BASE: &str = "https://app.factory.ai/api/llm";

impl AccountType for Droid {
    fn build(&self, up: &Upstream, out: &Outgoing) -> Result<reqwest::RequestBuilder> {
        let mut h = base_headers(up, out);
        h.insert(header::AUTHORIZATION, bearer(&up.credential.secret.0)?);
        let base = if up.rec.api_url.is_empty() {
            DEFAULT_BASE
        } else {
            up.rec.api_url.trim_end_matches('/')
        };
        let (url, names) = match out.op {
            Op::Messages | Op::CountTokens => {
                anthropic::version_header(&mut h, out.headers);
                let mut u = format!("{base}/a/v1/messages");
                if out.op == Op::CountTokens {
                    u.push_str("/count_tokens");
                }
                (u, ANTHROPIC_FORWARD)
            }
            Op::Responses { .. } => (format!("{base}/o/v1/responses"), OPENAI_FORWARD),
            Op::ChatCompletions => (format!("{base}/o/v1/chat/completions"), OPENAI_FORWARD),
            Op::Gemini { .. } | Op::CodeAssist { .. } | Op::Embeddings => {
                anyhow::bail!("a Droid account cannot serve this request")
            }
        };
        forward(&mut h, out.headers, names);
        Ok(up.client.post(url).headers(h).body(body(out)))
    }

    fn upstream_format(&self, op: Op) -> Option<ClientFormat> {
        Some(match op {
            Op::Messages | Op::CountTokens => ClientFormat::Anthropic,
            _ => ClientFormat::OpenAI,
        })
    }

    fn probe_model(&self, rec: &Account) -> String {
        match rec.supported_models.keys().next() {
            Some(m) => m.clone(),
            None if rec.endpoint_type == "openai" => "gpt-5".into(),
            None => rec.platform.spec().probe_model.to_owned(),
        }
    }

    fn probe(&self, rec: &Account, model: &str) -> (Op, serde_json::Value) {
        if rec.endpoint_type == "openai" {
            return responses_probe(model);
        }
        (
            Op::Messages,
            serde_json::json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "ping"}]}),
        )
    }
}

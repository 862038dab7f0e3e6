//! Gemini API-key accounts: `baseUrl` + `apiKey` in `x-goog-api-key`; the body passes through
//! unchanged (the model is in the URL).

use anyhow::Result;
use salvo::http::HeaderValue;

use super::request::base_headers;
use super::{AccountType, ClientFormat, Op, Outgoing, Upstream, gemini};
use crate::model::Account;

pub struct GeminiApi;

impl AccountType for GeminiApi {
    fn build(&self, up: &Upstream, out: &Outgoing) -> Result<reqwest::RequestBuilder> {
        let mut h = base_headers(up, out);
        h.insert(
            "x-goog-api-key",
            HeaderValue::from_str(&up.credential.secret.0)?,
        );
        let Op::Gemini { method, v1 } = out.op else {
            anyhow::bail!("a Gemini account cannot serve this request");
        };
        let url = gemini::url(&up.rec.api_url, v1, out.upstream_model, method);
        super::request::post(up.client, &url, h, out.body.clone())
    }

    fn upstream_format(&self, _op: Op) -> Option<ClientFormat> {
        Some(ClientFormat::Gemini)
    }

    fn probe(&self, _rec: &Account, _model: &str) -> (Op, serde_json::Value) {
        (
            Op::Gemini {
                method: gemini::Method::GenerateContent,
                v1: false,
            },
            serde_json::json!({"contents": [{"role": "user", "parts": [{"text": "ping"}]}],
                               "generationConfig": {"maxOutputTokens": 8}}),
        )
    }
}

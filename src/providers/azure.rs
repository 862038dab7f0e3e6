//! Azure OpenAI accounts: `azureEndpoint`, `apiVersion`, `deploymentName`, an `api-key`
//! header.

use anyhow::Result;
use salvo::http::HeaderValue;

use super::request::{OPENAI_FORWARD, base_headers, body, forward};
use super::responses::responses_probe;
use super::{AccountType, ClientFormat, Op, Outgoing, Upstream, openai};
use crate::model::Account;

pub struct Azure;

impl AccountType for Azure {
    fn build(&self, up: &Upstream, out: &Outgoing) -> Result<reqwest::RequestBuilder> {
        let mut h = base_headers(up, out);
        forward(&mut h, out.headers, OPENAI_FORWARD);
        h.insert("api-key", HeaderValue::from_str(&up.credential.secret.0)?);
        let url = openai::azure_url(up.rec, out.op, out.upstream_model)?;
        super::request::post(up.client, &url, h, body(out))
    }

    fn upstream_format(&self, _op: Op) -> Option<ClientFormat> {
        Some(ClientFormat::OpenAI)
    }

    fn probe_model(&self, rec: &Account) -> String {
        match rec.supported_models.keys().next() {
            Some(m) => m.clone(),
            None if !rec.deployment_name.is_empty() => rec.deployment_name.clone(),
            None => rec.platform.spec().probe_model.to_owned(),
        }
    }

    fn probe(&self, _rec: &Account, model: &str) -> (Op, serde_json::Value) {
        responses_probe(model)
    }
}

//! AWS Bedrock (Claude models): SigV4-signed InvokeModel requests, and the AWS event stream
//! of `invoke-with-response-stream` converted to Anthropic SSE.
//!
//! The request body is the client's Anthropic Messages body with `model` and `stream` taken out
//! (they live in the URL) and `anthropic_version` / `anthropic_beta` added, as Anthropic's own
//! Bedrock SDK client does. Answers are Anthropic JSON (non-stream) or Anthropic stream events,
//! each wrapped base64 in an event-stream `chunk` frame.

use salvo::http::{HeaderValue, header};

use super::request::base_headers;
use super::{AccountType, ClientFormat, Credential, Op, Outgoing, StreamTap, Upstream, decrypt};
use crate::crypto::Secrets;
use crate::model::Account;

mod eventstream;
mod models;
mod request;
mod sigv4;

pub use eventstream::*;
pub use models::*;
pub use request::*;
pub use sigv4::*;

/// The `anthropic_version` Bedrock's Claude models require in the body.
pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";
/// SigV4 service name of the Bedrock runtime.
pub const SIGNING_SERVICE: &str = "bedrock";
/// Content type of `invoke-with-response-stream` answers.
pub const EVENT_STREAM_CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

pub struct Bedrock;

impl AccountType for Bedrock {
    /// The Bedrock API key of a bearer-token account (v1 `credentialType: bearer_token`), else
    /// the AWS secret key and session token.
    fn credential(&self, secrets: &Secrets, rec: &Account) -> anyhow::Result<Credential> {
        if !rec.bearer_token.is_empty() {
            return Ok(Credential {
                secret: decrypt(secrets, "bearerToken", &rec.bearer_token)?,
                session_token: None,
            });
        }
        let tok = decrypt(secrets, "awsSessionToken", &rec.aws_session_token)?;
        Ok(Credential {
            secret: decrypt(secrets, "awsSecretAccessKey", &rec.aws_secret_access_key)?,
            session_token: (!tok.0.is_empty()).then_some(tok),
        })
    }

    fn build(&self, up: &Upstream, out: &Outgoing) -> anyhow::Result<reqwest::RequestBuilder> {
        build_request(up, out)
    }

    /// Bedrock's error bodies (`{"message": ...}`) are never passed through as they are.
    fn upstream_format(&self, _op: Op) -> Option<ClientFormat> {
        None
    }

    fn is_stream(&self, headers: &reqwest::header::HeaderMap) -> bool {
        super::content_type(headers).starts_with(EVENT_STREAM_CONTENT_TYPE)
    }

    fn stream_content_type(&self) -> Option<&'static str> {
        Some("text/event-stream; charset=utf-8")
    }

    fn tap(&self, _op: Op) -> Box<dyn StreamTap> {
        Box::new(EventStreamTap::new())
    }

    fn probe_model(&self, rec: &Account) -> String {
        match rec.supported_models.keys().next() {
            Some(m) => m.clone(),
            None if !rec.default_model.is_empty() => rec.default_model.clone(),
            None => rec.platform.spec().probe_model.to_owned(),
        }
    }
}

/// The upstream request for one attempt on a Bedrock account.
fn build_request(up: &Upstream, out: &Outgoing) -> anyhow::Result<reqwest::RequestBuilder> {
    if out.op != Op::Messages {
        anyhow::bail!("a Bedrock account serves only the Messages API");
    }
    let mut h = base_headers(up, out);
    let r = up.rec;
    let secret = &up.credential.secret.0;
    // A Bedrock API key (v1 `credentialType: bearer_token`) goes as `Authorization: Bearer`
    // on the same URL and body, without a signature or `x-amz-*` headers (AWS "Use an Amazon
    // Bedrock API key"; v1 bedrockRelayService.js hands the token to the SDK, which sends it
    // so). Otherwise the request is SigV4-signed with the account's AWS keys.
    let bearer = !r.bearer_token.is_empty();
    if r.region.trim().is_empty()
        || secret.is_empty()
        || (!bearer && r.aws_access_key_id.is_empty())
    {
        anyhow::bail!("the Bedrock account has no region or credentials");
    }
    let region = r.region.trim();
    let model_id = bedrock_model_id(
        out.upstream_model,
        region,
        &r.default_model,
        &r.small_fast_model,
    );
    let url = invoke_url(&r.api_url, region, &model_id, out.stream)?;
    let beta = out
        .headers
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok());
    let body = request_body(out.body, beta)?;

    let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let accept = if out.stream {
        EVENT_STREAM_CONTENT_TYPE
    } else {
        "application/json"
    };
    let mut signed: Vec<(&'static str, &str)> =
        vec![("accept", accept), ("content-type", "application/json")];
    if !bearer {
        signed.push(("x-amz-date", amz_date.as_str()));
    }
    if out.stream {
        // The content type of the events inside the stream (botocore's `accept` parameter).
        signed.push(("x-amzn-bedrock-accept", "application/json"));
    }
    if let Some(tok) = &up.credential.session_token {
        signed.push(("x-amz-security-token", tok.0.as_str()));
    }
    let auth = if bearer {
        format!("Bearer {secret}")
    } else {
        // reqwest sends this Host header (it is not set explicitly, so HTTP/2 uses :authority).
        let host = host_header(&url);
        let mut all = signed.clone();
        all.push(("host", host.as_str()));
        let creds = Credentials {
            access_key_id: &r.aws_access_key_id,
            secret_access_key: secret,
            region,
            service: SIGNING_SERVICE,
        };
        authorization(&creds, &amz_date, "POST", url.path(), "", &all, &body)
    };

    for (name, value) in signed {
        h.insert(
            header::HeaderName::from_static(name),
            HeaderValue::from_str(value)?,
        );
    }
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&auth)
            .map_err(|_| anyhow::anyhow!("the credential is not a valid header value"))?,
    );
    Ok(crate::providers::request::post_url(up.client, url, h, body))
}

// ---------------------------------------------------------------------------------------------

//! The relay's side of the account-type seam: turn an admitted call into the provider's
//! `Upstream`/`Outgoing` inputs (fetching a fresh OAuth token first where the type needs
//! one), and pass the upstream's answer headers back to the client.

use salvo::prelude::*;

use super::engine::Call;
use crate::accounts::AccountRt;
use crate::providers::{Outgoing, Upstream};
use crate::state::AppState;

/// The upstream request for one attempt on `acc`.
pub async fn build_request(
    st: &AppState,
    acc: &AccountRt,
    call: &Call,
    upstream_model: &str,
) -> anyhow::Result<reqwest::RequestBuilder> {
    let kind = acc.kind();
    let token = if kind.oauth() {
        Some(crate::accounts::oauth::fresh_access_token(&st.accounts, acc).await?)
    } else {
        None
    };
    let up = Upstream {
        rec: &acc.rec,
        credential: &acc.credential,
        client: &acc.client,
        token: token.as_ref(),
    };
    let out = Outgoing {
        op: call.op,
        body: &call.body,
        model: &call.model,
        upstream_model,
        stream: call.stream,
        headers: &call.client_headers,
        query: call.query.as_deref(),
    };
    kind.build(&up, &out)
}

/// Upstream response headers worth passing back to the client.
pub fn copy_response_headers(from: &reqwest::header::HeaderMap, res: &mut Response) {
    for (name, value) in from {
        let n = name.as_str();
        if n == "content-type"
            || n == "request-id"
            || n == "x-request-id"
            || n == "retry-after"
            || n == "x-should-retry"
            || n.starts_with("anthropic-ratelimit-")
            || n == "anthropic-organization-id"
            || n.starts_with("x-ratelimit-")
            || n == "openai-processing-ms"
            || n == "openai-version"
        {
            res.headers_mut().append(name.clone(), value.clone());
        }
    }
}

//! Pieces every account type's upstream request shares: which client headers go upstream,
//! the user agent, the model swap in the body, bearer and query helpers.

use bytes::Bytes;
use salvo::http::{HeaderMap, HeaderName, HeaderValue, header};

use super::{Outgoing, Upstream};

/// Client headers that belong upstream on Anthropic routes. Everything else (cookies,
/// forwarding headers, the client's own key, accept-encoding) stays here.
pub const ANTHROPIC_FORWARD: &[&str] = &[
    "accept",
    "accept-language",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "x-app",
    "x-stainless-arch",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
];

/// On OpenAI routes (Codex sends these; they steer caching and conversation state).
pub const OPENAI_FORWARD: &[&str] = &[
    "accept",
    "openai-beta",
    "session_id",
    "conversation_id",
    "originator",
    "chatgpt-account-id",
    "x-stainless-arch",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
];

pub const DEFAULT_USER_AGENT: &str = concat!("crs/", env!("CARGO_PKG_VERSION"));

/// Copy the named client headers.
pub fn forward(h: &mut HeaderMap, from: &HeaderMap, names: &[&'static str]) {
    for name in names {
        if let Some(v) = from.get(*name) {
            h.insert(HeaderName::from_static(name), v.clone());
        }
    }
}

/// The headers every upstream request starts with: the user agent (account > client > crs)
/// and a JSON content type.
pub fn base_headers(up: &Upstream, out: &Outgoing) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(20);
    let ua = if !up.rec.user_agent.is_empty()
        && let Ok(v) = HeaderValue::from_str(&up.rec.user_agent)
    {
        v
    } else {
        out.headers
            .get(header::USER_AGENT)
            .cloned()
            .unwrap_or(HeaderValue::from_static(DEFAULT_USER_AGENT))
    };
    h.insert(header::USER_AGENT, ua);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h
}

/// Replace the body's model when the account maps it to another name. Only then is the body
/// re-serialised; otherwise the client's bytes go upstream as they came.
pub fn with_model(body: &Bytes, requested: &str, upstream: &str) -> Bytes {
    if requested == upstream {
        return body.clone();
    }
    match serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body) {
        Ok(mut m) if m.contains_key("model") => {
            m.insert(
                "model".into(),
                serde_json::Value::String(upstream.to_owned()),
            );
            serde_json::to_vec(&m)
                .map(Bytes::from)
                .unwrap_or_else(|_| body.clone())
        }
        _ => body.clone(),
    }
}

/// The body with the upstream model name in it.
pub fn body(out: &Outgoing) -> Bytes {
    with_model(out.body, out.model, out.upstream_model)
}

pub fn bearer(v: &str) -> anyhow::Result<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {v}"))
        .map_err(|_| anyhow::anyhow!("the credential is not a valid header value"))
}

pub fn with_query(mut url: String, q: Option<&str>) -> String {
    if let Some(q) = q.filter(|q| !q.is_empty()) {
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(q);
    }
    url
}

/// Percent-encode `s` as one URL path segment (or userinfo part): only RFC 3986's unreserved
/// characters stay as they are, so a client's `/`, `?`, `#` or `%` cannot change the URL crs
/// sends upstream.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_cannot_escape() {
        assert_eq!(encode_segment("gemini-2.5-pro"), "gemini-2.5-pro");
        assert_eq!(
            encode_segment("../../v1beta/cachedContents?x="),
            "..%2F..%2Fv1beta%2FcachedContents%3Fx%3D"
        );
        assert_eq!(encode_segment("a b#c%"), "a%20b%23c%25");
    }
}

//! Pieces every account type's upstream request shares: which client headers go upstream,
//! the user agent, the model swap in the body, bearer and query helpers.

use bytes::Bytes;
use salvo::http::{HeaderMap, HeaderName, HeaderValue, header};

use super::{Outgoing, Upstream};

/// Client headers that belong upstream on Anthropic routes: everything Claude Code and the
/// Anthropic SDKs send that Anthropic reads. A trailing `*` takes every header with that
/// prefix (`x-stainless-*` from the SDK; `x-claude-code-*`, Claude Code's session and agent
/// ids). Everything else (cookies, forwarding headers, the client's own key,
/// accept-encoding) stays here.
pub const ANTHROPIC_FORWARD: &[&str] = &[
    "accept",
    "accept-language",
    "anthropic-beta",
    "anthropic-dangerous-direct-browser-access",
    "x-app",
    "x-client-request-id",
    "x-stainless-*",
    "x-claude-code-*",
];

/// On OpenAI routes (Codex sends these; they steer caching and conversation state).
pub const OPENAI_FORWARD: &[&str] = &[
    "accept",
    "openai-beta",
    "session_id",
    "conversation_id",
    "originator",
    "chatgpt-account-id",
    "x-client-request-id",
    "x-stainless-*",
];

pub const DEFAULT_USER_AGENT: &str = concat!("crs/", env!("CARGO_PKG_VERSION"));

/// Copy the named client headers (a name ending in `*` is a prefix).
pub fn forward(h: &mut HeaderMap, from: &HeaderMap, names: &[&'static str]) {
    for name in names {
        if let Some(prefix) = name.strip_suffix('*') {
            for (n, v) in from {
                if n.as_str().starts_with(prefix) {
                    h.append(n.clone(), v.clone());
                }
            }
        } else if let Some(v) = from.get(*name) {
            h.insert(HeaderName::from_static(name), v.clone());
        }
    }
}

/// The headers every upstream request starts with: the user agent (account > client > crs),
/// a JSON content type, and `accept-encoding: identity`. Upstreams are asked for plain bytes:
/// v1 forces `identity` since gzip-compressed answers broke SSE streams in February 2026; an
/// upstream that compresses anyway is decoded by the HTTP client before crs taps the bytes.
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
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
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

/// The body as a JSON object with the upstream model name in it, parsed once for an account
/// type that reshapes it further; None when it is not a JSON object. (`body` serialised.)
pub fn object_with_model(out: &Outgoing) -> Option<serde_json::Map<String, serde_json::Value>> {
    let mut m =
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(out.body).ok()?;
    if out.model != out.upstream_model && m.contains_key("model") {
        m.insert(
            "model".into(),
            serde_json::Value::String(out.upstream_model.to_owned()),
        );
    }
    Some(m)
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

    mod props {
        use super::*;
        use proptest::prelude::*;
        use serde_json::{Map, Value, json};

        fn decode(s: &str) -> Option<Vec<u8>> {
            let b = s.as_bytes();
            let mut out = Vec::new();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' {
                    let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                    out.push(u8::from_str_radix(hex, 16).ok()?);
                    i += 3;
                } else {
                    out.push(b[i]);
                    i += 1;
                }
            }
            Some(out)
        }

        fn body() -> impl Strategy<Value = Vec<u8>> {
            let value = prop_oneof![
                Just(Value::Null),
                any::<i64>().prop_map(Value::from),
                any::<String>().prop_map(Value::from),
                Just(json!({"nested": [1, {"model": "inner"}]})),
            ];
            let key = prop_oneof![Just("model".to_owned()), "[a-z_]{1,8}"];
            prop_oneof![
                3 => prop::collection::vec((key, value), 0..6).prop_map(|kv| {
                    serde_json::to_vec(&kv.into_iter().collect::<Map<_, _>>()).unwrap()
                }),
                1 => prop::collection::vec(any::<u8>(), 0..64),
                1 => Just(br#"[{"model":"a"}]"#.to_vec()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn a_segment_is_one_segment(s in any::<String>()) {
                let e = encode_segment(&s);
                prop_assert!(e.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b)), "{}", e);
                prop_assert_eq!(decode(&e), Some(s.into_bytes()));
            }

            #[test]
            fn the_model_is_replaced_and_nothing_else(
                b in body(),
                requested in "[a-z0-9.-]{1,12}",
                upstream in "[a-z0-9.-]{1,12}",
            ) {
                let bytes = Bytes::from(b.clone());
                let out = with_model(&bytes, &requested, &upstream);
                let parsed = serde_json::from_slice::<Map<String, Value>>(&b).ok();
                match parsed {
                    Some(mut m) if requested != upstream && m.contains_key("model") => {
                        let got: Map<String, Value> = serde_json::from_slice(&out).unwrap();
                        m.insert("model".into(), json!(upstream));
                        prop_assert_eq!(got, m);
                    }
                    _ => prop_assert_eq!(&out[..], &b[..], "the client's bytes as they came"),
                }
            }
        }
    }
}

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

/// A POST to `url` with exactly `headers` (moved in, not copied) and `body`. The URL's part
/// before the query is parsed once and kept (`parsed_url`): an upstream URL is one of a few
/// per account, and parsing one (with its IDNA host check) was a visible share of a request.
pub fn post(
    client: &reqwest::Client,
    url: &str,
    headers: HeaderMap,
    body: impl Into<reqwest::Body>,
) -> anyhow::Result<reqwest::RequestBuilder> {
    Ok(post_url(client, parsed_url(url)?, headers, body))
}

/// `post` to a URL the caller has already parsed.
pub fn post_url(
    client: &reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    body: impl Into<reqwest::Body>,
) -> reqwest::RequestBuilder {
    let mut req = reqwest::Request::new(reqwest::Method::POST, url);
    *req.headers_mut() = headers;
    *req.body_mut() = Some(body.into());
    reqwest::RequestBuilder::from_parts(client.clone(), req)
}

/// `url` parsed, its part before `?` from a small process-wide cache.
pub fn parsed_url(url: &str) -> anyhow::Result<reqwest::Url> {
    use std::collections::HashMap;
    use std::sync::{LazyLock, RwLock};
    /// Bases kept; past this the cache starts over (a Gemini URL carries the model name).
    const MAX: usize = 256;
    static CACHE: LazyLock<RwLock<HashMap<Box<str>, reqwest::Url>>> =
        LazyLock::new(Default::default);
    let parse = |u: &str| {
        reqwest::Url::parse(u).map_err(|e| anyhow::anyhow!("the upstream URL is not valid: {e}"))
    };
    if url.contains('#') {
        return parse(url);
    }
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let cached = CACHE
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(base)
        .cloned();
    let mut parsed = match cached {
        Some(u) => u,
        None => {
            let u = parse(base)?;
            let mut cache = CACHE.write().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= MAX {
                cache.clear();
            }
            cache.insert(base.into(), u.clone());
            u
        }
    };
    if query.is_some() {
        parsed.set_query(query);
    }
    Ok(parsed)
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
    fn parsed_urls_match_a_full_parse() {
        for url in [
            "https://api.anthropic.com/v1/messages",
            "https://api.anthropic.com/v1/messages?beta=true",
            "https://api.anthropic.com/v1/messages?beta=true&x=a b",
            "https://api.anthropic.com/v1/messages?",
            "https://api.anthropic.com/v1/messages?q=1#frag",
            "https://h.example/p#frag?q=1",
            "http://127.0.0.1:8080/v1/models/gemini%2F:generateContent?alt=sse",
        ] {
            // Twice: the second comes from the cache.
            for _ in 0..2 {
                assert_eq!(
                    parsed_url(url).unwrap(),
                    reqwest::Url::parse(url).unwrap(),
                    "{url}"
                );
            }
        }
        // The query of one request does not stay on the cached base.
        parsed_url("https://q.example/v1?a=1").unwrap();
        assert_eq!(
            parsed_url("https://q.example/v1").unwrap().as_str(),
            "https://q.example/v1"
        );
        let err = parsed_url("not a url").unwrap_err().to_string();
        assert!(err.contains("not valid"), "{err}");
    }

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

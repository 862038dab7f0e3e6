//! The Bedrock invoke URL and the request body made from the client's Messages body.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::BEDROCK_ANTHROPIC_VERSION;
use super::sigv4::uri_encode;

// URL and body

/// `{endpoint}/model/{modelId}/invoke[-with-response-stream]`, the model id percent-encoded as
/// one path segment (`:` -> `%3A`, `/` -> `%2F`). The endpoint is the account's `endpointUrl`
/// when set, else the region's public runtime endpoint.
pub fn invoke_url(
    endpoint: &str,
    region: &str,
    model_id: &str,
    stream: bool,
) -> anyhow::Result<reqwest::Url> {
    let base = endpoint.trim().trim_end_matches('/');
    let base = if base.is_empty() {
        Cow::Owned(format!("https://bedrock-runtime.{region}.amazonaws.com"))
    } else {
        Cow::Borrowed(base)
    };
    let mut url = String::with_capacity(base.len() + model_id.len() + 40);
    url.push_str(&base);
    url.push_str("/model/");
    uri_encode(model_id, &mut url);
    url.push_str(if stream {
        "/invoke-with-response-stream"
    } else {
        "/invoke"
    });
    Ok(reqwest::Url::parse(&url)?)
}

/// The Host header reqwest sends for `url` (the port only when it is not the scheme's default).
pub fn host_header(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

/// The top-level members of a JSON object, values kept as raw text (nothing below the top
/// level is parsed or re-encoded).
struct TopLevel<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for TopLevel<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = TopLevel<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(m.size_hint().unwrap_or(8));
                while let Some(entry) = m.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    fields.push(entry);
                }
                Ok(TopLevel(fields))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// The Bedrock body: the client's body without `model` and `stream`, with `anthropic_version`
/// (unless the client set one) and the `anthropic-beta` header's flags as `anthropic_beta`
/// (merged with any the body already has). Top-level members keep their order and their
/// values' bytes.
pub fn request_body(client_body: &[u8], beta_header: Option<&str>) -> anyhow::Result<Bytes> {
    let top: TopLevel = serde_json::from_slice(client_body)
        .map_err(|e| anyhow::anyhow!("the request body is not a JSON object: {e}"))?;
    let mut betas: Vec<String> = Vec::new();
    let mut add_beta = |b: &str| {
        let b = b.trim();
        if !b.is_empty() && !betas.iter().any(|x| x == b) {
            betas.push(b.to_owned());
        }
    };
    let mut has_version = false;
    for (k, v) in &top.0 {
        match k.as_ref() {
            "anthropic_beta" => match serde_json::from_str::<Vec<String>>(v.get()) {
                Ok(list) => list.iter().for_each(|b| add_beta(b)),
                Err(_) => anyhow::bail!("anthropic_beta must be an array of strings"),
            },
            "anthropic_version" => has_version = true,
            _ => {}
        }
    }
    if let Some(h) = beta_header {
        h.split(',').for_each(&mut add_beta);
    }
    let mut out = Vec::with_capacity(client_body.len() + 64);
    out.push(b'{');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
    };
    for (k, v) in &top.0 {
        if matches!(k.as_ref(), "model" | "stream" | "anthropic_beta") {
            continue;
        }
        sep(&mut out);
        serde_json::to_writer(&mut out, k.as_ref())?;
        out.push(b':');
        out.extend_from_slice(v.get().as_bytes());
    }
    if !has_version {
        sep(&mut out);
        out.extend_from_slice(br#""anthropic_version":""#);
        out.extend_from_slice(BEDROCK_ANTHROPIC_VERSION.as_bytes());
        out.push(b'"');
    }
    if !betas.is_empty() {
        sep(&mut out);
        out.extend_from_slice(br#""anthropic_beta":"#);
        serde_json::to_writer(&mut out, &betas)?;
    }
    out.push(b'}');
    Ok(Bytes::from(out))
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::providers::bedrock::*;

    // ---- URL and body

    #[test]
    fn urls() {
        let u = invoke_url(
            "",
            "us-east-1",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            false,
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "https://bedrock-runtime.us-east-1.amazonaws.com/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/invoke"
        );
        assert_eq!(host_header(&u), "bedrock-runtime.us-east-1.amazonaws.com");
        let u = invoke_url(
            "http://127.0.0.1:8123/",
            "eu-west-1",
            "arn:aws:bedrock:x/y",
            true,
        )
        .unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8123/model/arn%3Aaws%3Abedrock%3Ax%2Fy/invoke-with-response-stream"
        );
        assert_eq!(host_header(&u), "127.0.0.1:8123");
        assert_eq!(
            host_header(&reqwest::Url::parse("https://h.example:443/x").unwrap()),
            "h.example"
        );
    }

    #[test]
    fn body_conversion() {
        let client = br#"{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"system":"s mock:usage=1,2,0,0","messages":[{"role":"user","content":"h\u00e9 \"q\""}],"metadata":{"user_id":"u"}}"#;
        let b = request_body(
            client,
            Some("interleaved-thinking-2025-05-14, context-1m-2025-08-07"),
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"max_tokens":64,"system":"s mock:usage=1,2,0,0","messages":[{"role":"user","content":"h\u00e9 \"q\""}],"metadata":{"user_id":"u"},"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["interleaved-thinking-2025-05-14","context-1m-2025-08-07"]}"#
        );
        // A client-set version stays; body and header betas merge without repeats.
        let b = request_body(
            br#"{"anthropic_version":"bedrock-2023-05-31","anthropic_beta":["a"],"model":"m","max_tokens":1}"#,
            Some("a,b"),
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":1,"anthropic_beta":["a","b"]}"#
        );
        assert_eq!(
            &request_body(b"{}", None).unwrap()[..],
            br#"{"anthropic_version":"bedrock-2023-05-31"}"#
        );
        assert!(request_body(b"[1]", None).is_err());
        assert!(request_body(br#"{"anthropic_beta":"x"}"#, None).is_err());
    }
}

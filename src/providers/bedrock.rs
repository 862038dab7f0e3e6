//! AWS Bedrock (Claude models): SigV4-signed InvokeModel requests, and the AWS event stream
//! of `invoke-with-response-stream` converted to Anthropic SSE.
//!
//! The request body is the client's Anthropic Messages body with `model` and `stream` taken out
//! (they live in the URL) and `anthropic_version` / `anthropic_beta` added, as Anthropic's own
//! Bedrock SDK client does. Answers are Anthropic JSON (non-stream) or Anthropic stream events,
//! each wrapped base64 in an event-stream `chunk` frame.

use std::borrow::Cow;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use salvo::http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use super::StreamTap;
use super::anthropic::{self, SseTap};
use crate::accounts::AccountRt;
use crate::relay::engine::Call;
use crate::relay::wire::Op;
use crate::usage::TokenUsage;

/// The `anthropic_version` Bedrock's Claude models require in the body.
pub const BEDROCK_ANTHROPIC_VERSION: &str = "bedrock-2023-05-31";
/// SigV4 service name of the Bedrock runtime.
pub const SIGNING_SERVICE: &str = "bedrock";
/// Content type of `invoke-with-response-stream` answers.
pub const EVENT_STREAM_CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// The upstream request for one attempt on a Bedrock account.
pub fn build_request(
    acc: &AccountRt,
    call: &Call,
    upstream_model: &str,
    mut h: HeaderMap,
) -> anyhow::Result<reqwest::RequestBuilder> {
    if call.op != Op::Messages {
        anyhow::bail!("a Bedrock account serves only the Messages API");
    }
    let r = &acc.rec;
    if r.region.trim().is_empty() || r.aws_access_key_id.is_empty() || acc.secret.0.is_empty() {
        anyhow::bail!("the Bedrock account has no region or AWS credentials");
    }
    let region = r.region.trim();
    let model_id = bedrock_model_id(
        upstream_model,
        region,
        &r.default_model,
        &r.small_fast_model,
    );
    let url = invoke_url(&r.api_url, region, &model_id, call.stream)?;
    let beta = call
        .client_headers
        .get("anthropic-beta")
        .and_then(|v| v.to_str().ok());
    let body = request_body(&call.body, beta)?;

    let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let accept = if call.stream {
        EVENT_STREAM_CONTENT_TYPE
    } else {
        "application/json"
    };
    let mut signed: Vec<(&'static str, &str)> = vec![
        ("accept", accept),
        ("content-type", "application/json"),
        ("x-amz-date", amz_date.as_str()),
    ];
    if call.stream {
        // The content type of the events inside the stream (botocore's `accept` parameter).
        signed.push(("x-amzn-bedrock-accept", "application/json"));
    }
    if let Some(tok) = &acc.session_token {
        signed.push(("x-amz-security-token", tok.0.as_str()));
    }
    // reqwest sends this Host header (it is not set explicitly, so HTTP/2 uses :authority).
    let host = host_header(&url);
    let mut all = signed.clone();
    all.push(("host", host.as_str()));
    let creds = Credentials {
        access_key_id: &r.aws_access_key_id,
        secret_access_key: &acc.secret.0,
        region,
        service: SIGNING_SERVICE,
    };
    let auth = authorization(&creds, &amz_date, "POST", url.path(), "", &all, &body);

    for (name, value) in signed {
        h.insert(
            header::HeaderName::from_static(name),
            HeaderValue::from_str(value)?,
        );
    }
    h.insert(header::AUTHORIZATION, HeaderValue::from_str(&auth)?);
    Ok(acc.client.post(url).headers(h).body(body))
}

// ---------------------------------------------------------------------------------------------
// Model ids

/// The Bedrock model id for the model a request names (after the account's own
/// `supportedModels` mapping).
///
/// - An id that is already Bedrock's (`...anthropic....`, or an ARN) passes unchanged.
/// - A small/fast (haiku) request uses the account's `small_fast_model` when set.
/// - A Claude name (dated, or a known alias) becomes `{profile}anthropic.{name}-v1:0` (`-v2:0`
///   for `claude-3-5-sonnet-20241022`), where `{profile}` is the cross-region inference profile
///   prefix of the account's region (`us.`, `eu.`, `apac.`, `us-gov.`).
/// - Anything else uses the account's `default_model`, or goes through as it is.
pub fn bedrock_model_id(
    model: &str,
    region: &str,
    default_model: &str,
    small_fast_model: &str,
) -> String {
    let m = model.trim();
    if is_bedrock_id(m) {
        return m.to_owned();
    }
    let configured = |v: &str| {
        let v = v.trim();
        if is_bedrock_id(v) {
            v.to_owned()
        } else {
            claude_to_bedrock(v, region).unwrap_or_else(|| v.to_owned())
        }
    };
    if m.to_ascii_lowercase().contains("haiku") && !small_fast_model.trim().is_empty() {
        return configured(small_fast_model);
    }
    if let Some(id) = claude_to_bedrock(m, region) {
        return id;
    }
    if !default_model.trim().is_empty() {
        return configured(default_model);
    }
    m.to_owned()
}

fn is_bedrock_id(m: &str) -> bool {
    m.contains("anthropic.") || m.starts_with("arn:")
}

/// The cross-region inference profile prefix for a region (empty: use the base model id).
pub fn region_prefix(region: &str) -> &'static str {
    let r = region.trim().to_ascii_lowercase();
    if r.starts_with("us-gov-") {
        "us-gov."
    } else if r.starts_with("us-") {
        "us."
    } else if r.starts_with("eu-") {
        "eu."
    } else if r.starts_with("ap-") {
        "apac."
    } else {
        ""
    }
}

/// Undated Anthropic aliases and the dated model each stands for.
const ALIASES: &[(&str, &str)] = &[
    ("claude-opus-4-5", "claude-opus-4-5-20251101"),
    ("claude-opus-4-1", "claude-opus-4-1-20250805"),
    ("claude-opus-4-0", "claude-opus-4-20250514"),
    ("claude-opus-4", "claude-opus-4-20250514"),
    ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
    ("claude-sonnet-4-0", "claude-sonnet-4-20250514"),
    ("claude-sonnet-4", "claude-sonnet-4-20250514"),
    ("claude-haiku-4-5", "claude-haiku-4-5-20251001"),
    ("claude-3-7-sonnet-latest", "claude-3-7-sonnet-20250219"),
    ("claude-3-7-sonnet", "claude-3-7-sonnet-20250219"),
    ("claude-3-5-sonnet-latest", "claude-3-5-sonnet-20241022"),
    ("claude-3-5-haiku-latest", "claude-3-5-haiku-20241022"),
    ("claude-3-opus-latest", "claude-3-opus-20240229"),
];

/// Bedrock's version suffix for dated models that are not `-v1:0`.
const VERSIONS: &[(&str, &str)] = &[("claude-3-5-sonnet-20241022", "v2:0")];

/// `claude-...-YYYYMMDD` (or a known alias) -> Bedrock id; None for anything else.
fn claude_to_bedrock(name: &str, region: &str) -> Option<String> {
    let lower = name.trim().to_ascii_lowercase();
    let dated = ALIASES
        .iter()
        .find(|(a, _)| *a == lower)
        .map_or(lower.as_str(), |(_, d)| *d);
    let (stem, date) = dated.rsplit_once('-')?;
    let valid = dated.starts_with("claude-")
        && stem.len() > "claude".len()
        && date.len() == 8
        && date.bytes().all(|b| b.is_ascii_digit())
        && dated
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return None;
    }
    let version = VERSIONS
        .iter()
        .find(|(m, _)| *m == dated)
        .map_or("v1:0", |(_, v)| *v);
    Some(format!(
        "{}anthropic.{dated}-{version}",
        region_prefix(region)
    ))
}

/// The Anthropic model name of a Bedrock id (`us.anthropic.claude-x-20250101-v1:0` ->
/// `claude-x-20250101`), for reporting and pricing.
pub fn anthropic_model_name(model_id: &str) -> Option<&str> {
    let (_, rest) = model_id.split_once("anthropic.")?;
    let rest = rest.split_once(':').map_or(rest, |(m, _)| m);
    let name = match rest.rsplit_once("-v") {
        Some((m, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => m,
        _ => rest,
    };
    (!name.is_empty()).then_some(name)
}

// ---------------------------------------------------------------------------------------------
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
// SigV4

/// What a SigV4 signature is made with.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
}

/// RFC 3986 percent-encoding as SigV4 defines it: everything but `A-Za-z0-9-_.~` is encoded.
pub fn uri_encode(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// The canonical URI of a request path as sent on the wire (already percent-encoded once):
/// every segment is encoded once more, as AWS does for every service but S3. So a model id
/// `...-v1:0` is `...-v1%3A0` on the wire and `...-v1%253A0` in the canonical request
/// (botocore's `quote(path, safe='/~')`).
pub fn canonical_uri(wire_path: &str) -> String {
    if wire_path.is_empty() {
        return "/".to_owned();
    }
    let mut out = String::with_capacity(wire_path.len() + 16);
    for (i, seg) in wire_path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        uri_encode(seg, &mut out);
    }
    out
}

/// `(canonical request, signed header names)` for `headers` (any case, any order).
pub fn canonical_request(
    method: &str,
    wire_path: &str,
    canonical_query: &str,
    headers: &[(&str, &str)],
    payload_sha256_hex: &str,
) -> (String, String) {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.trim().to_ascii_lowercase(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    hs.sort_by(|a, b| a.0.cmp(&b.0));
    // Repeated names are one line, values comma-joined in order.
    let mut merged: Vec<(String, String)> = Vec::with_capacity(hs.len());
    for (k, v) in hs {
        match merged.last_mut() {
            Some(last) if last.0 == k => {
                last.1.push(',');
                last.1.push_str(&v);
            }
            _ => merged.push((k, v)),
        }
    }
    let signed = merged
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut c = String::with_capacity(256);
    c.push_str(method);
    c.push('\n');
    c.push_str(&canonical_uri(wire_path));
    c.push('\n');
    c.push_str(canonical_query);
    c.push('\n');
    for (k, v) in &merged {
        c.push_str(k);
        c.push(':');
        c.push_str(v);
        c.push('\n');
    }
    c.push('\n');
    c.push_str(&signed);
    c.push('\n');
    c.push_str(payload_sha256_hex);
    (c, signed)
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// The hex signature of a canonical request made at `amz_date` (`YYYYMMDDTHHMMSSZ`).
pub fn signature(creds: &Credentials, amz_date: &str, canonical_request: &str) -> String {
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{}/{}/aws4_request", creds.region, creds.service);
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let k = hmac(
        format!("AWS4{}", creds.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    let k = hmac(&k, creds.region.as_bytes());
    let k = hmac(&k, creds.service.as_bytes());
    let k = hmac(&k, b"aws4_request");
    hex::encode(hmac(&k, to_sign.as_bytes()))
}

/// The `Authorization` header value for a request whose signed headers are `headers` (which
/// must include `host` and `x-amz-date`).
pub fn authorization(
    creds: &Credentials,
    amz_date: &str,
    method: &str,
    wire_path: &str,
    canonical_query: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    let payload = hex::encode(Sha256::digest(body));
    let (creq, signed) = canonical_request(method, wire_path, canonical_query, headers, &payload);
    let sig = signature(creds, amz_date, &creq);
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{}/{}/{}/aws4_request, SignedHeaders={signed}, Signature={sig}",
        creds.access_key_id,
        amz_date.get(..8).unwrap_or(amz_date),
        creds.region,
        creds.service,
    )
}

/// The parts of a SigV4 `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedAuthorization<'a> {
    pub access_key_id: &'a str,
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub signed_headers: Vec<&'a str>,
    pub signature: &'a str,
}

/// Parse `AWS4-HMAC-SHA256 Credential=AKID/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex`; None when it is not well-formed.
pub fn parse_authorization(v: &str) -> Option<ParsedAuthorization<'_>> {
    let rest = v.trim().strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut cred, mut signed, mut sig) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => cred = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => sig = Some(v),
            _ => return None,
        }
    }
    let c: Vec<&str> = cred?.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = c.as_slice() else {
        return None;
    };
    let sig = sig?;
    let signed_headers: Vec<&str> = signed?.split(';').collect();
    let ok = !access_key_id.is_empty()
        && date.len() == 8
        && date.bytes().all(|b| b.is_ascii_digit())
        && !region.is_empty()
        && !service.is_empty()
        && sig.len() == 64
        && sig.bytes().all(|b| b.is_ascii_hexdigit())
        && signed_headers.iter().all(|h| !h.is_empty());
    ok.then_some(ParsedAuthorization {
        access_key_id,
        date,
        region,
        service,
        signed_headers,
        signature: sig,
    })
}

// ---------------------------------------------------------------------------------------------
// The AWS event stream (application/vnd.amazon.eventstream)

/// Largest frame AWS sends (16 MiB), and the most header bytes one may carry (128 KiB).
const MAX_FRAME: usize = 16 * 1024 * 1024;
const MAX_HEADERS: usize = 128 * 1024;
/// total length + headers length + prelude CRC.
const PRELUDE: usize = 12;
/// Prelude plus the message CRC.
const MIN_FRAME: usize = PRELUDE + 4;

/// One decoded frame. Header values other than strings are skipped over, not kept.
#[derive(Debug)]
pub struct Frame<'a> {
    pub headers: Vec<(&'a str, &'a str)>,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }
}

/// Decode the frame at the start of `buf`: `Ok(None)` when more bytes are needed, else the
/// frame and how many bytes it took. CRCs are checked; the prelude's before waiting for the
/// rest, so a corrupt length is caught at once.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, String> {
    if buf.len() < PRELUDE {
        return Ok(None);
    }
    let be = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let total = be(0) as usize;
    let headers_len = be(4) as usize;
    if crc32fast::hash(&buf[..8]) != be(8) {
        return Err("prelude CRC mismatch".into());
    }
    if !(MIN_FRAME..=MAX_FRAME).contains(&total)
        || headers_len > MAX_HEADERS
        || headers_len > total - MIN_FRAME
    {
        return Err(format!(
            "bad frame lengths (total {total}, headers {headers_len})"
        ));
    }
    if buf.len() < total {
        return Ok(None);
    }
    if crc32fast::hash(&buf[..total - 4]) != be(total - 4) {
        return Err("message CRC mismatch".into());
    }
    let mut hb = &buf[PRELUDE..PRELUDE + headers_len];
    let mut headers = Vec::with_capacity(4);
    let short = || "truncated frame header".to_owned();
    while !hb.is_empty() {
        let n = hb[0] as usize;
        let name = hb.get(1..1 + n).ok_or_else(short)?;
        let name =
            std::str::from_utf8(name).map_err(|_| "frame header name is not UTF-8".to_owned())?;
        let kind = *hb.get(1 + n).ok_or_else(short)?;
        hb = &hb[2 + n..];
        let fixed = match kind {
            0 | 1 => Some(0),
            2 => Some(1),
            3 => Some(2),
            4 => Some(4),
            5 | 8 => Some(8),
            9 => Some(16),
            6 | 7 => None,
            _ => return Err(format!("unknown frame header type {kind}")),
        };
        match fixed {
            Some(len) => hb = hb.get(len..).ok_or_else(short)?,
            None => {
                let len = u16::from_be_bytes([
                    *hb.first().ok_or_else(short)?,
                    *hb.get(1).ok_or_else(short)?,
                ]) as usize;
                let value = hb.get(2..2 + len).ok_or_else(short)?;
                if kind == 7 {
                    let value = std::str::from_utf8(value)
                        .map_err(|_| "frame header value is not UTF-8".to_owned())?;
                    headers.push((name, value));
                }
                hb = &hb[2 + len..];
            }
        }
    }
    let payload = &buf[PRELUDE + headers_len..total - 4];
    Ok(Some((Frame { headers, payload }, total)))
}

/// Encode a frame with string headers (what the mock upstream and the tests send).
pub fn encode_frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut hb = Vec::with_capacity(96);
    for (k, v) in headers {
        hb.push(k.len() as u8);
        hb.extend_from_slice(k.as_bytes());
        hb.push(7);
        hb.extend_from_slice(&(v.len() as u16).to_be_bytes());
        hb.extend_from_slice(v.as_bytes());
    }
    let total = MIN_FRAME + hb.len() + payload.len();
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(hb.len() as u32).to_be_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&hb);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// A Bedrock `chunk` event frame carrying one Anthropic stream event.
pub fn chunk_frame(event_json: &[u8]) -> Vec<u8> {
    let payload =
        serde_json::json!({"bytes": base64::engine::general_purpose::STANDARD.encode(event_json)});
    encode_frame(
        &[
            (":event-type", "chunk"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

/// A Bedrock exception frame (`throttlingException`, `modelStreamErrorException`, ...).
pub fn exception_frame(exception_type: &str, message: &str) -> Vec<u8> {
    encode_frame(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        serde_json::json!({"message": message})
            .to_string()
            .as_bytes(),
    )
}

/// The Anthropic error type for a Bedrock exception name (either case of the first letter).
pub fn exception_kind(exception_type: &str) -> &'static str {
    let t = exception_type.to_ascii_lowercase();
    match t.trim_end_matches("exception") {
        "throttling" | "toomanyrequests" => "rate_limit_error",
        "serviceunavailable" | "modelnotready" => "overloaded_error",
        "validation" => "invalid_request_error",
        "accessdenied" => "permission_error",
        "unrecognizedclient" | "invalidsignature" | "expiredtoken" => "authentication_error",
        "resourcenotfound" => "not_found_error",
        _ => "api_error",
    }
}

#[derive(Deserialize)]
struct ChunkPayload<'a> {
    #[serde(borrow)]
    bytes: Cow<'a, str>,
}

#[derive(Deserialize)]
struct EventHead<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(rename = "amazon-bedrock-invocationMetrics", default)]
    metrics: Option<InvocationMetrics>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct InvocationMetrics {
    input_token_count: u64,
    output_token_count: u64,
    cache_read_input_token_count: u64,
    cache_write_input_token_count: u64,
}

#[derive(Deserialize)]
struct ExceptionBody {
    #[serde(alias = "Message", default)]
    message: String,
}

/// Decodes the AWS event stream into Anthropic SSE and taps usage.
#[derive(Default)]
pub struct EventStreamTap {
    inner: SseTap,
    /// Bytes of an incomplete frame carried over to the next chunk.
    buf: Vec<u8>,
    /// Usage from the `amazon-bedrock-invocationMetrics` of `message_stop`.
    metrics: Option<TokenUsage>,
    /// An error event ended the client stream (exception frame or corrupt bytes): the rest of
    /// the upstream is dropped.
    terminated: bool,
}

impl EventStreamTap {
    pub fn new() -> Self {
        Self::default()
    }

    /// The Anthropic error this tap sent to end the stream, if any.
    pub fn error(&self) -> Option<&str> {
        self.inner.error.as_deref()
    }

    /// Turn the frames in `data` into SSE in `out`; returns the bytes used.
    fn frames(&mut self, data: &[u8], out: &mut Vec<u8>) -> usize {
        let mut pos = 0;
        while !self.terminated {
            match decode_frame(&data[pos..]) {
                Ok(Some((frame, used))) => {
                    self.frame(&frame, out);
                    pos += used;
                }
                Ok(None) => break,
                Err(e) => {
                    self.fail(
                        out,
                        "api_error",
                        &format!("Bedrock event stream is corrupt: {e}"),
                    );
                    return data.len();
                }
            }
        }
        pos
    }

    fn fail(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        let start = out.len();
        out.extend_from_slice(b"event: error\ndata: ");
        out.extend_from_slice(anthropic::error_body(kind, message).as_bytes());
        out.extend_from_slice(b"\n\n");
        self.inner.feed(&out[start..]);
        self.terminated = true;
    }

    fn frame(&mut self, f: &Frame, out: &mut Vec<u8>) {
        match f.header(":message-type").unwrap_or("event") {
            "event" if f.header(":event-type") == Some("chunk") => self.chunk(f.payload, out),
            "exception" => {
                let t = f
                    .header(":exception-type")
                    .unwrap_or("internalServerException");
                let msg = serde_json::from_slice::<ExceptionBody>(f.payload)
                    .map(|b| b.message)
                    .unwrap_or_else(|_| String::from_utf8_lossy(f.payload).into_owned());
                self.fail(out, exception_kind(t), &format!("Bedrock {t}: {msg}"));
            }
            "error" => {
                let code = f.header(":error-code").unwrap_or("InternalError");
                let msg = f.header(":error-message").unwrap_or("");
                self.fail(out, "api_error", &format!("Bedrock {code}: {msg}"));
            }
            _ => {}
        }
    }

    fn chunk(&mut self, payload: &[u8], out: &mut Vec<u8>) {
        let decoded = serde_json::from_slice::<ChunkPayload>(payload)
            .ok()
            .and_then(|p| {
                base64::engine::general_purpose::STANDARD
                    .decode(p.bytes.as_bytes())
                    .ok()
            });
        let Some(event) = decoded else {
            return self.fail(
                out,
                "api_error",
                "Bedrock sent a chunk that is not base64 JSON",
            );
        };
        let Ok(head) = serde_json::from_slice::<EventHead>(&event) else {
            return self.fail(
                out,
                "api_error",
                "Bedrock sent a chunk that is not an Anthropic event",
            );
        };
        if let Some(m) = head.metrics {
            self.metrics = Some(TokenUsage {
                input_tokens: m.input_token_count,
                output_tokens: m.output_token_count,
                cache_create_tokens: m.cache_write_input_token_count,
                cache_read_tokens: m.cache_read_input_token_count,
                ephemeral_5m_tokens: m.cache_write_input_token_count,
                ephemeral_1h_tokens: 0,
            });
        }
        let start = out.len();
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(head.kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        if event.contains(&b'\n') || event.contains(&b'\r') {
            // SSE data is one line: re-encode the (pretty-printed) event compactly.
            match serde_json::from_slice::<serde_json::Value>(&event) {
                Ok(v) => out.extend_from_slice(v.to_string().as_bytes()),
                Err(_) => out.extend_from_slice(&event),
            }
        } else {
            out.extend_from_slice(&event);
        }
        out.extend_from_slice(b"\n\n");
        self.inner.feed(&out[start..]);
    }
}

impl StreamTap for EventStreamTap {
    fn feed(&mut self, chunk: &Bytes) -> Option<Bytes> {
        if self.terminated {
            return Some(Bytes::new());
        }
        let mut out = Vec::with_capacity(chunk.len() + chunk.len() / 2);
        if self.buf.is_empty() {
            let used = self.frames(chunk, &mut out);
            if !self.terminated {
                self.buf.extend_from_slice(&chunk[used..]);
            }
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(chunk);
            let used = self.frames(&buf, &mut out);
            buf.drain(..used);
            if !self.terminated {
                self.buf = buf;
            }
        }
        Some(Bytes::from(out))
    }
    fn usage(&self) -> TokenUsage {
        match self.metrics {
            Some(m) if self.inner.usage == TokenUsage::default() => m,
            _ => self.inner.usage,
        }
    }
    fn model(&self) -> Option<&str> {
        self.inner.model.as_deref()
    }
    fn started(&self) -> bool {
        self.inner.started
    }
    fn finished(&self) -> bool {
        // After an error event the client's stream is complete: nothing more is added to it.
        self.inner.finished || self.terminated
    }
    fn mid_line(&self) -> bool {
        // Only whole SSE events are ever sent.
        false
    }
    fn error_event(&self, message: &str) -> Bytes {
        Bytes::from(format!(
            "event: error\ndata: {}\n\n",
            anthropic::error_body("api_error", message)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- model ids

    #[test]
    fn model_mapping() {
        let m = |model: &str, region: &str| bedrock_model_id(model, region, "", "");
        assert_eq!(
            m("claude-sonnet-4-5-20250929", "us-east-1"),
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
        );
        assert_eq!(
            m("claude-sonnet-4-5", "eu-west-1"),
            "eu.anthropic.claude-sonnet-4-5-20250929-v1:0"
        );
        assert_eq!(
            m("claude-3-5-sonnet-20241022", "ap-northeast-1"),
            "apac.anthropic.claude-3-5-sonnet-20241022-v2:0"
        );
        assert_eq!(
            m("claude-3-5-haiku-20241022", "us-west-2"),
            "us.anthropic.claude-3-5-haiku-20241022-v1:0"
        );
        assert_eq!(
            m("claude-opus-4-1", "us-east-2"),
            "us.anthropic.claude-opus-4-1-20250805-v1:0"
        );
        assert_eq!(
            m("claude-3-7-sonnet-latest", "us-gov-west-1"),
            "us-gov.anthropic.claude-3-7-sonnet-20250219-v1:0"
        );
        assert_eq!(
            m("Claude-Haiku-4-5", "sa-east-1"),
            "anthropic.claude-haiku-4-5-20251001-v1:0"
        );
        // Already Bedrock's: unchanged.
        for id in [
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "anthropic.claude-v2:1",
            "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc",
        ] {
            assert_eq!(bedrock_model_id(id, "eu-west-1", "x", "y"), id);
        }
        // Unknown names: the default model (mapped if it is a Claude name), else as they are.
        assert_eq!(bedrock_model_id("gpt-4o", "us-east-1", "", ""), "gpt-4o");
        assert_eq!(
            bedrock_model_id("gpt-4o", "us-east-1", "claude-sonnet-4-20250514", ""),
            "us.anthropic.claude-sonnet-4-20250514-v1:0"
        );
        assert_eq!(
            bedrock_model_id("claude-next", "us-east-1", "eu.anthropic.claude-x-v1:0", ""),
            "eu.anthropic.claude-x-v1:0"
        );
        // Small/fast requests use small_fast_model when it is set.
        assert_eq!(
            bedrock_model_id(
                "claude-3-5-haiku-20241022",
                "us-east-1",
                "d",
                "us.anthropic.claude-haiku-4-5-20251001-v1:0"
            ),
            "us.anthropic.claude-haiku-4-5-20251001-v1:0"
        );
        assert_eq!(
            bedrock_model_id(
                "claude-haiku-4-5",
                "eu-central-1",
                "",
                "claude-3-5-haiku-20241022"
            ),
            "eu.anthropic.claude-3-5-haiku-20241022-v1:0"
        );
        assert_eq!(
            bedrock_model_id(
                "claude-sonnet-4-5-20250929",
                "us-east-1",
                "",
                "claude-3-5-haiku-20241022"
            ),
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
        );
    }

    #[test]
    fn anthropic_names_of_bedrock_ids() {
        assert_eq!(
            anthropic_model_name("us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            Some("claude-sonnet-4-5-20250929")
        );
        assert_eq!(
            anthropic_model_name("anthropic.claude-3-5-sonnet-20241022-v2:0"),
            Some("claude-3-5-sonnet-20241022")
        );
        assert_eq!(anthropic_model_name("anthropic.claude-v2"), Some("claude"));
        assert_eq!(anthropic_model_name("amazon.nova-pro-v1:0"), None);
    }

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

    // ---- SigV4

    #[test]
    fn sigv4_aws_test_suite_get_vanilla() {
        // AWS SigV4 test suite, `get-vanilla`.
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "service",
        };
        let h = [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", "20150830T123600Z"),
        ];
        assert_eq!(
            authorization(&creds, "20150830T123600Z", "GET", "/", "", &h, b""),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    /// Known answer from botocore 1.43 `bedrock-runtime.invoke_model` (clock fixed at
    /// 2025-01-02T03:04:05Z): the request path carries `%3A`, the canonical URI `%253A`.
    #[test]
    fn sigv4_matches_botocore_invoke_model() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE",
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: SIGNING_SERVICE,
        };
        let url = invoke_url(
            "",
            "us-east-1",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            false,
        )
        .unwrap();
        let body = br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":8}"#;
        let host = host_header(&url);
        let h = [
            ("accept", "application/json"),
            ("content-type", "application/json"),
            ("host", host.as_str()),
            ("x-amz-date", "20250102T030405Z"),
        ];
        let (creq, _) = canonical_request(
            "POST",
            url.path(),
            "",
            &h,
            &hex::encode(Sha256::digest(body)),
        );
        assert_eq!(
            creq,
            "POST\n/model/us.anthropic.claude-sonnet-4-5-20250929-v1%253A0/invoke\n\n\
             accept:application/json\ncontent-type:application/json\n\
             host:bedrock-runtime.us-east-1.amazonaws.com\nx-amz-date:20250102T030405Z\n\n\
             accept;content-type;host;x-amz-date\n\
             ad85a18fa69878c236ba1de7192f78c5e7070948482b29cb39799fba88b75c14"
        );
        assert_eq!(
            authorization(&creds, "20250102T030405Z", "POST", url.path(), "", &h, body),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250102/us-east-1/bedrock/aws4_request, \
             SignedHeaders=accept;content-type;host;x-amz-date, \
             Signature=805ad562e1578810f602b71c8954101d2492ba009e50698a4e10c60e46bf85ff"
        );
    }

    /// Known answer from botocore 1.43 `invoke_model_with_response_stream` with temporary
    /// credentials (clock fixed at 2025-09-30T23:59:59Z).
    #[test]
    fn sigv4_matches_botocore_stream_with_session_token() {
        let creds = Credentials {
            access_key_id: "ASIAEXAMPLE",
            secret_access_key: "secret/Key+123",
            region: "eu-west-1",
            service: SIGNING_SERVICE,
        };
        let url = invoke_url(
            "",
            "eu-west-1",
            "eu.anthropic.claude-3-7-sonnet-20250219-v1:0",
            true,
        )
        .unwrap();
        let body = br#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#;
        let h = [
            ("Content-Type", "application/json"),
            ("X-Amzn-Bedrock-Accept", "application/json"),
            ("X-Amz-Date", "20250930T235959Z"),
            ("X-Amz-Security-Token", "FQoGZXIvYXdzEXAMPLE//token="),
            ("host", "bedrock-runtime.eu-west-1.amazonaws.com"),
        ];
        assert_eq!(
            authorization(&creds, "20250930T235959Z", "POST", url.path(), "", &h, body),
            "AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/20250930/eu-west-1/bedrock/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amzn-bedrock-accept, \
             Signature=46221abec0340d99d53690749c608c57c6eeed9b9d89b76bdedd6ee821ce4ad3"
        );
    }

    #[test]
    fn canonical_uris_and_headers() {
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a%2Fb/c d/~x"), "/a%252Fb/c%20d/~x");
        let (c, signed) = canonical_request(
            "POST",
            "/",
            "",
            &[("B", "  x   y "), ("a", "1"), ("b", "z")],
            "h",
        );
        assert_eq!(c, "POST\n/\n\na:1\nb:x y,z\n\na;b\nh");
        assert_eq!(signed, "a;b");
    }

    #[test]
    fn authorization_parsing() {
        let a = "AWS4-HMAC-SHA256 Credential=AKID/20250102/us-east-1/bedrock/aws4_request, SignedHeaders=host;x-amz-date, Signature=805ad562e1578810f602b71c8954101d2492ba009e50698a4e10c60e46bf85ff";
        let p = parse_authorization(a).unwrap();
        assert_eq!(
            (p.access_key_id, p.date, p.region, p.service),
            ("AKID", "20250102", "us-east-1", "bedrock")
        );
        assert_eq!(p.signed_headers, ["host", "x-amz-date"]);
        assert!(parse_authorization("Bearer x").is_none());
        assert!(parse_authorization(&a.replace("aws4_request", "aws5_request")).is_none());
        assert!(parse_authorization(&a.replace("Signature=805a", "Signature=zz5a")).is_none());
        assert!(parse_authorization(&a.replace("/us-east-1", "")).is_none());
    }

    // ---- event stream

    /// A frame made by a Python encoder and accepted by botocore's `EventStreamBuffer`: the
    /// chunk of `{"type":"message_stop"}` with Bedrock's `p` padding field.
    const BOTOCORE_FRAME: &str = "000000920000004b2fea33010b3a6576656e742d747970650700056368756e6b0d3a636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e0d3a6d6573736167652d747970650700056576656e747b226279746573223a2265794a306558426c496a6f696257567a6332466e5a56397a64473977496e303d222c2270223a2261626364227d42b72480";

    #[test]
    fn decodes_a_frame_botocore_accepts() {
        let bytes = hex::decode(BOTOCORE_FRAME).unwrap();
        let (f, used) = decode_frame(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(f.header(":event-type"), Some("chunk"));
        assert_eq!(f.header(":message-type"), Some("event"));
        assert_eq!(
            f.payload,
            br#"{"bytes":"eyJ0eXBlIjoibWVzc2FnZV9zdG9wIn0=","p":"abcd"}"#
        );
        // The encoder writes the same bytes.
        let again = encode_frame(
            &[
                (":event-type", "chunk"),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            f.payload,
        );
        assert_eq!(again, bytes);
        let mut tap = EventStreamTap::new();
        let out = tap.feed(&Bytes::from(bytes)).unwrap();
        assert_eq!(
            &out[..],
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        assert!(tap.finished());
    }

    fn events() -> Vec<String> {
        vec![
            r#"{"type":"message_start","message":{"id":"msg_bdrk_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":110,"cache_creation_input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}}"#.into(),
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.into(),
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi \"message_delta\" ü"}}"#.into(),
            r#"{"type":"content_block_stop","index":0}"#.into(),
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":21}}"#.into(),
            r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":110,"outputTokenCount":21,"invocationLatency":500,"firstByteLatency":200}}"#.into(),
        ]
    }

    fn stream() -> Vec<u8> {
        events()
            .iter()
            .flat_map(|e| chunk_frame(e.as_bytes()))
            .collect()
    }

    fn expected_sse() -> String {
        events()
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(e).unwrap();
                format!("event: {}\ndata: {e}\n\n", v["type"].as_str().unwrap())
            })
            .collect()
    }

    fn run(tap: &mut EventStreamTap, chunks: &[&[u8]]) -> String {
        let mut out = Vec::new();
        for c in chunks {
            out.extend_from_slice(&tap.feed(&Bytes::copy_from_slice(c)).unwrap());
        }
        String::from_utf8(out).unwrap()
    }

    fn check_usage(tap: &EventStreamTap) {
        assert!(tap.started() && tap.finished());
        assert_eq!(tap.model(), Some("claude-sonnet-4-5-20250929"));
        let u = tap.usage();
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cache_create_tokens,
                u.cache_read_tokens
            ),
            (110, 21, 10, 5)
        );
    }

    #[test]
    fn whole_stream_in_one_chunk() {
        let mut tap = EventStreamTap::new();
        assert_eq!(run(&mut tap, &[&stream()]), expected_sse());
        check_usage(&tap);
        assert!(!tap.mid_line());
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let s = stream();
        for cut in 0..=s.len() {
            let mut tap = EventStreamTap::new();
            assert_eq!(
                run(&mut tap, &[&s[..cut], &s[cut..]]),
                expected_sse(),
                "cut at {cut}"
            );
            check_usage(&tap);
        }
        // And one byte at a time, and in odd sizes.
        for size in [1, 3, 7, 50, 333] {
            let mut tap = EventStreamTap::new();
            let chunks: Vec<&[u8]> = s.chunks(size).collect();
            assert_eq!(run(&mut tap, &chunks), expected_sse(), "chunks of {size}");
            check_usage(&tap);
        }
    }

    #[test]
    fn metrics_count_only_when_the_events_report_no_usage() {
        let evs = [
            r#"{"type":"message_start","message":{"model":"claude-3-5-haiku-20241022","content":[]}}"#,
            r#"{"type":"message_stop","amazon-bedrock-invocationMetrics":{"inputTokenCount":42,"outputTokenCount":7,"cacheReadInputTokenCount":3,"cacheWriteInputTokenCount":2,"invocationLatency":1,"firstByteLatency":1}}"#,
        ];
        let bytes: Vec<u8> = evs.iter().flat_map(|e| chunk_frame(e.as_bytes())).collect();
        let mut tap = EventStreamTap::new();
        run(&mut tap, &[&bytes]);
        let u = tap.usage();
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cache_read_tokens,
                u.cache_create_tokens
            ),
            (42, 7, 3, 2)
        );
        assert!(tap.started() && tap.finished());
    }

    #[test]
    fn exception_frame_becomes_an_anthropic_error_event() {
        let mut s = chunk_frame(events()[0].as_bytes());
        s.extend(exception_frame(
            "throttlingException",
            "Too many requests, please wait before trying again.",
        ));
        s.extend(chunk_frame(events()[1].as_bytes()));
        let mut tap = EventStreamTap::new();
        let out = run(&mut tap, &[&s]);
        let (first, rest) = out.split_once("\n\n").unwrap();
        assert!(first.starts_with("event: message_start\n"));
        let rest = rest.strip_prefix("event: error\ndata: ").unwrap();
        let v: serde_json::Value = serde_json::from_str(rest.trim_end()).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Too many requests")
        );
        assert!(tap.started() && tap.finished());
        assert!(tap.error().is_some());
        // Nothing after the error reaches the client.
        assert!(
            tap.feed(&Bytes::from(chunk_frame(events()[2].as_bytes())))
                .unwrap()
                .is_empty()
        );
        assert_eq!(tap.usage().input_tokens, 110);
    }

    #[test]
    fn bad_crc_ends_the_stream_with_an_error() {
        for flip in [2usize, 9, 40, 0] {
            let mut s = chunk_frame(events()[0].as_bytes());
            let second = s.len();
            s.extend(chunk_frame(events()[1].as_bytes()));
            // Corrupt a byte of the second frame: its length, prelude CRC, payload or
            // (flip 0) the message CRC.
            let at = if flip == 0 {
                s.len() - 1
            } else {
                second + flip
            };
            s[at] ^= 0x5a;
            let mut tap = EventStreamTap::new();
            let out = run(&mut tap, &[&s[..second + 5], &s[second + 5..]]);
            assert!(out.starts_with("event: message_start\n"), "{out}");
            let tail = out.rsplit_once("\n\nevent: error\ndata: ").unwrap().1;
            let v: serde_json::Value = serde_json::from_str(tail.trim_end()).unwrap();
            assert_eq!(v["error"]["type"], "api_error");
            assert!(
                v["error"]["message"].as_str().unwrap().contains("corrupt"),
                "{tail}"
            );
            assert!(tap.finished());
            assert!(tap.feed(&Bytes::from_static(b"more")).unwrap().is_empty());
        }
    }

    #[test]
    fn garbage_and_odd_headers() {
        // An absurd length with a valid prelude CRC is refused at once.
        let mut p = Vec::new();
        p.extend_from_slice(&(u32::MAX).to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32fast::hash(&p);
        p.extend_from_slice(&crc.to_be_bytes());
        assert!(decode_frame(&p).is_err());
        // Non-string header types are skipped; unknown event types send nothing.
        let mut hb = Vec::new();
        hb.extend_from_slice(b"\x04flag\x00");
        hb.extend_from_slice(b"\x02id\x09");
        hb.extend_from_slice(&[7u8; 16]);
        hb.extend_from_slice(b"\x0b:event-type\x07\x00\x04ping");
        let total = MIN_FRAME + hb.len();
        let mut f = Vec::new();
        f.extend_from_slice(&(total as u32).to_be_bytes());
        f.extend_from_slice(&(hb.len() as u32).to_be_bytes());
        let crc = crc32fast::hash(&f);
        f.extend_from_slice(&crc.to_be_bytes());
        f.extend_from_slice(&hb);
        let crc = crc32fast::hash(&f);
        f.extend_from_slice(&crc.to_be_bytes());
        let (frame, used) = decode_frame(&f).unwrap().unwrap();
        assert_eq!(used, f.len());
        assert_eq!(frame.headers, [(":event-type", "ping")]);
        let mut tap = EventStreamTap::new();
        assert!(tap.feed(&Bytes::from(f)).unwrap().is_empty());
        assert!(!tap.finished());
    }
}

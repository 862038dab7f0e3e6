//! AWS Signature Version 4 for Bedrock requests (and its parser, for the mock's check).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

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

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::providers::bedrock::*;

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
}

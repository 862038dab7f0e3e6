//! Claude subscription accounts (Max/Pro through OAuth): Anthropic Messages with the OAuth
//! access token as a bearer token and the OAuth beta flag added.
//!
//! Genuine Claude Code traffic goes upstream as Claude Code sent it. Three opt-in account
//! options (all off by default, stored under their names in the account's `extra` fields so a
//! v1 import or export carries them) adapt other traffic:
//! - `adaptOtherClients` (crs): a request that is not from Claude Code gets what Anthropic
//!   expects of subscription traffic, as v1 does for such clients: Claude Code's identity line
//!   as the first system block, Claude Code's beta set, and a `metadata.user_id` in Claude
//!   Code's shape with a stable per-account device id.
//! - `useUnifiedClientId` + `unifiedClientId` (v1): the device part of `metadata.user_id` is
//!   replaced by the account's one id, so every user of the account looks like one device.
//! - `useUnifiedUserAgent` (v1): every request on the account carries one client identity, the
//!   user agent and `x-stainless-*` headers of the latest Claude Code request seen on it
//!   (`Upstream::identity`).
//!
//! Operators should weigh Anthropic's terms for subscription use before turning these on.

use anyhow::Result;
use bytes::Bytes;
use salvo::http::{HeaderMap, HeaderValue, header};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::request::{ANTHROPIC_FORWARD, base_headers, bearer, body, forward};
use super::{
    AccountType, ClientFormat, Credential, Op, Outgoing, Upstream, access_token_credential,
    anthropic,
};
use crate::crypto::Secrets;
use crate::model::Account;

pub struct Claude;

/// The identity line Claude Code puts first in its system prompt.
pub const CLAUDE_CODE_IDENTITY: &str = "You are Claude Code, Anthropic's official CLI for Claude.";

/// The betas Claude Code sends on an ordinary request (taken from its requests; v1 sends the
/// same set for other clients on OAuth accounts).
pub const CLAUDE_CODE_BETAS: &[&str] = &[
    "claude-code-20250219",
    anthropic::OAUTH_BETA,
    "interleaved-thinking-2025-05-14",
    "fine-grained-tool-streaming-2025-05-14",
];

/// Is this request from Claude Code? Its user agent is `claude-cli/<version> (...)` and it
/// names itself with `x-app` (`cli`, or `cli-bg` for background requests).
pub fn is_claude_code(h: &HeaderMap) -> bool {
    let ua = h
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ua.strip_prefix("claude-cli/")
        .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        && h.contains_key("x-app")
}

/// Does the account send one client identity for everyone (v1's `useUnifiedUserAgent`)?
pub fn keeps_identity(rec: &Account) -> bool {
    rec.extra_flag("useUnifiedUserAgent")
}

/// The client identity of a Claude Code request: its user agent and `x-stainless-*` headers.
/// None for any other client.
pub fn identity_of(h: &HeaderMap) -> Option<Vec<super::ClientHeader>> {
    if !is_claude_code(h) {
        return None;
    }
    Some(
        h.iter()
            .filter(|(n, _)| *n == header::USER_AGENT || n.as_str().starts_with("x-stainless-"))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
    )
}

/// The account's stable device id for adapted requests: 64 hex digits, like Claude Code's.
pub fn device_id(rec: &Account) -> String {
    hex::encode(Sha256::digest(format!("crs-device:{}", rec.id)))
}

/// A UUID-shaped id derived from `seed` (the same seed gives the same id).
fn uuid_from(seed: &str) -> String {
    let h = hex::encode(&Sha256::digest(seed.as_bytes())[..16]);
    format!(
        "{}-{}-4{}-8{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// What to change in a request body for this account.
struct Adapt<'a> {
    other_client: bool,
    unified_device: Option<&'a str>,
}

/// The body to send: the client's bytes unless the account adapts them.
fn adapted_body(rec: &Account, out: &Outgoing, a: &Adapt) -> Bytes {
    let plain = body(out);
    if !a.other_client && a.unified_device.is_none() {
        return plain;
    }
    let Ok(mut m) = serde_json::from_slice::<Map<String, Value>>(&plain) else {
        return plain;
    };
    if a.other_client {
        put_identity_first(&mut m);
        let meta = m
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut()
            && !meta.get("user_id").is_some_and(|u| u.is_string())
        {
            let session = uuid_from(&format!("{}:{}", rec.id, out.session.unwrap_or("")));
            meta.insert(
                "user_id".into(),
                json!(format!(
                    "user_{}_account__session_{session}",
                    device_id(rec)
                )),
            );
        }
    }
    if let Some(dev) = a.unified_device
        && let Some(uid) = m.get_mut("metadata").and_then(|x| x.get_mut("user_id"))
    {
        replace_device(uid, dev);
    }
    serde_json::to_vec(&m).map(Bytes::from).unwrap_or(plain)
}

/// Claude Code's identity line as the first system block (a string system prompt becomes
/// blocks; a prompt that already starts with it is left alone).
fn put_identity_first(m: &mut Map<String, Value>) {
    let first = json!({"type": "text", "text": CLAUDE_CODE_IDENTITY});
    let sys = match m.remove("system") {
        None | Some(Value::Null) => vec![first],
        Some(Value::String(s)) if s.starts_with(CLAUDE_CODE_IDENTITY) => {
            vec![json!({"type": "text", "text": s})]
        }
        Some(Value::String(s)) if s.is_empty() => vec![first],
        Some(Value::String(s)) => vec![first, json!({"type": "text", "text": s})],
        Some(Value::Array(blocks)) => {
            let has = blocks
                .first()
                .and_then(|b| b.get("text"))
                .and_then(|t| t.as_str())
                .is_some_and(|t| t.starts_with(CLAUDE_CODE_IDENTITY));
            if has {
                blocks
            } else {
                std::iter::once(first).chain(blocks).collect()
            }
        }
        Some(other) => vec![first, other],
    };
    m.insert("system".into(), Value::Array(sys));
}

/// Replace the device part of a `metadata.user_id`: `user_<device>_account_..._session_...`
/// or the JSON form `{"device_id": ..}`. Anything else is left alone.
fn replace_device(uid: &mut Value, dev: &str) {
    let Some(s) = uid.as_str() else {
        return;
    };
    if let Some(rest) = s.strip_prefix("user_")
        && let Some(i) = rest.find("_account_")
    {
        *uid = json!(format!("user_{dev}{}", &rest[i..]));
    } else if let Ok(Value::Object(mut o)) = serde_json::from_str::<Value>(s)
        && o.contains_key("device_id")
    {
        o.insert("device_id".into(), json!(dev));
        *uid = json!(Value::Object(o).to_string());
    }
}

/// The `anthropic-beta` list to send: the client's with the OAuth flag, and for an adapted
/// request Claude Code's set as well (each once, the client's order first).
fn betas(client: Option<&str>, other_client: bool) -> String {
    let list = anthropic::with_oauth_beta(client);
    if !other_client {
        return list;
    }
    let mut all: Vec<&str> = list.split(',').map(str::trim).collect();
    for b in CLAUDE_CODE_BETAS {
        if !all.contains(b) {
            all.push(b);
        }
    }
    all.join(",")
}

impl AccountType for Claude {
    fn credential(&self, secrets: &Secrets, rec: &Account) -> Result<Credential> {
        access_token_credential(secrets, rec)
    }

    fn oauth(&self) -> bool {
        true
    }

    fn build(&self, up: &Upstream, out: &Outgoing) -> Result<reqwest::RequestBuilder> {
        let rec = up.rec;
        let genuine = is_claude_code(out.headers);
        let unified_id = rec
            .extra
            .get("unifiedClientId")
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty() && rec.extra_flag("useUnifiedClientId"));
        let adapt = Adapt {
            other_client: !genuine && rec.extra_flag("adaptOtherClients"),
            unified_device: unified_id,
        };
        let mut h = base_headers(up, out);
        forward(&mut h, out.headers, ANTHROPIC_FORWARD);
        if keeps_identity(rec)
            && let Some(identity) = up.identity
        {
            let stainless: Vec<_> = h
                .keys()
                .filter(|n| n.as_str().starts_with("x-stainless-"))
                .cloned()
                .collect();
            for n in stainless {
                h.remove(n);
            }
            for (n, v) in identity {
                h.insert(n.clone(), v.clone());
            }
        }
        anthropic::version_header(&mut h, out.headers);
        let base = if rec.api_url.is_empty() {
            anthropic::OFFICIAL_BASE
        } else {
            rec.api_url.as_str()
        };
        let url = anthropic::endpoint(base, out.op, out.query);
        let token = up.token.unwrap_or(&up.credential.secret);
        h.insert(header::AUTHORIZATION, bearer(&token.0)?);
        let beta = betas(
            out.headers
                .get("anthropic-beta")
                .and_then(|v| v.to_str().ok()),
            adapt.other_client,
        );
        h.insert("anthropic-beta", HeaderValue::from_str(&beta)?);
        super::request::post(up.client, &url, h, adapted_body(rec, out, &adapt))
    }

    fn upstream_format(&self, _op: Op) -> Option<ClientFormat> {
        Some(ClientFormat::Anthropic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_line_goes_first_once() {
        for (sys, want) in [
            (
                json!(null),
                json!([{"type": "text", "text": CLAUDE_CODE_IDENTITY}]),
            ),
            (
                json!("Be brief."),
                json!([{"type": "text", "text": CLAUDE_CODE_IDENTITY}, {"type": "text", "text": "Be brief."}]),
            ),
            (
                json!([{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]),
                json!([{"type": "text", "text": CLAUDE_CODE_IDENTITY}, {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]),
            ),
            (
                json!([{"type": "text", "text": CLAUDE_CODE_IDENTITY}]),
                json!([{"type": "text", "text": CLAUDE_CODE_IDENTITY}]),
            ),
        ] {
            let mut m = Map::new();
            if !sys.is_null() {
                m.insert("system".into(), sys);
            }
            put_identity_first(&mut m);
            assert_eq!(m["system"], want);
        }
    }

    #[test]
    fn device_ids_are_replaced_in_both_shapes() {
        let dev = "d".repeat(64);
        let mut v = json!("user_abc_account_1111_session_2222");
        replace_device(&mut v, &dev);
        assert_eq!(v, json!(format!("user_{dev}_account_1111_session_2222")));
        let mut v = json!(r#"{"device_id":"abc","account_uuid":"a","session_id":"s"}"#);
        replace_device(&mut v, &dev);
        let o: Value = serde_json::from_str(v.as_str().unwrap()).unwrap();
        assert_eq!(o["device_id"], json!(dev));
        assert_eq!(o["session_id"], "s");
        let mut v = json!("someone");
        replace_device(&mut v, &dev);
        assert_eq!(v, json!("someone"));
    }

    #[test]
    fn claude_code_is_recognised_by_its_user_agent_and_app_header() {
        let mut h = HeaderMap::new();
        h.insert(
            header::USER_AGENT,
            HeaderValue::from_static("claude-cli/2.1.197 (external, cli)"),
        );
        assert!(!is_claude_code(&h), "x-app missing");
        h.insert("x-app", HeaderValue::from_static("cli"));
        assert!(is_claude_code(&h));
        h.insert(header::USER_AGENT, HeaderValue::from_static("claude-cli/x"));
        assert!(!is_claude_code(&h));
    }

    #[test]
    fn adapted_requests_get_claude_codes_betas() {
        assert_eq!(
            betas(Some("prompt-caching-2024-07-31"), true),
            "oauth-2025-04-20,prompt-caching-2024-07-31,claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
        );
        assert_eq!(betas(None, false), "oauth-2025-04-20");
        assert!(uuid_from("x").len() == 36 && uuid_from("x") == uuid_from("x"));
    }
}

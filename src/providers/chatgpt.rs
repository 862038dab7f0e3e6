//! ChatGPT subscription accounts (v1's `openai` type): Codex CLI's OAuth tokens on the Codex
//! backend (`https://chatgpt.com/backend-api/codex`), which speaks the Responses API.
//!
//! The request (v1 src/routes/openaiRoutes.js `handleResponses`; CLIProxyAPI
//! internal/runtime/executor/codex_executor.go `applyCodexHeaders`): `POST {baseApi}/responses`
//! (or `/responses/compact`) with `Authorization: Bearer <access token>`, `chatgpt-account-id`
//! (the id token's `chatgpt_account_id`), `accept` by stream, Codex CLI's own headers
//! (`version`, `openai-beta`, `session_id`, `conversation_id`, `originator`,
//! `x-client-request-id`, `x-codex-turn-metadata`, `x-codex-beta-features`) passed on, and
//! `originator: codex_cli_rs` with Codex CLI's user agent for clients that send neither (v1's
//! images bridge identifies itself the same way). The body is the
//! client's, with `store: false` (`store` removed on `/compact`), as v1 sends it; for clients
//! that are not Codex CLI, the sampling and formatting fields the backend refuses are dropped
//! (v1 `applyCodexCliAdaptation`). v1 also replaces such a client's `instructions` with Codex
//! CLI's system prompt; crs keeps the client's own instructions (an empty string when there
//! are none), so a client's system prompt is not lost.
//!
//! The account's ChatGPT fields keep v1's names in `Account::extra` (`accountId`,
//! `chatgptUserId`, `organizationId`, `organizationRole`, `organizationTitle`, `planType`,
//! `emailVerified`, and `idToken`, encrypted), so `crs import` / `crs export` carry them as
//! they are.

use anyhow::Result;
use base64::Engine;
use bytes::Bytes;
use salvo::http::{HeaderMap, HeaderValue, header};
use serde_json::{Map, Value};

use super::request::{base_headers, bearer, body, forward, object_with_model};
use super::{
    AccountType, ClientFormat, Credential, Op, Outgoing, Upstream, access_token_credential,
};
use crate::crypto::Secrets;
use crate::model::Account;

pub struct ChatGpt;

/// Codex CLI's public OAuth client, its local redirect and scopes, as v1 uses them
/// (v1 src/routes/admin/openaiAccounts.js `OPENAI_CONFIG`).
pub const CLIENT_ID: &str = "app_EMoamEEZ73f0CkXaXp7hrann";
pub const REDIRECT_URI: &str = "http://localhost:1455/auth/callback";
pub const SCOPE: &str = "openid profile email offline_access";
/// The scope v1 asks for on a refresh (v1 src/services/openaiAccountService.js
/// `refreshAccessToken`).
pub const REFRESH_SCOPE: &str = "openid profile email";
/// The Codex backend, when an account names no `baseApi`.
pub const DEFAULT_BASE: &str = "https://chatgpt.com/backend-api/codex";
/// The id-token claim that holds the ChatGPT account (OpenAI's auth server).
pub const AUTH_CLAIM: &str = "https://api.openai.com/auth";
/// Sent for clients that are not Codex CLI (v1's images bridge sends the same identity).
pub const CODEX_USER_AGENT: &str = "codex_cli_rs/0.144.5";

/// Client headers of Codex CLI that go upstream.
const CODEX_FORWARD: &[&str] = &[
    "version",
    "openai-beta",
    "session_id",
    "conversation_id",
    "originator",
    "x-client-request-id",
    "x-codex-turn-metadata",
    "x-codex-beta-features",
];

/// Request fields the Codex backend refuses from other clients (v1 openaiRoutes.js
/// `applyCodexCliAdaptation`).
const NOT_FOR_CODEX: &[&str] = &[
    "temperature",
    "top_p",
    "max_output_tokens",
    "user",
    "text_formatting",
    "truncation",
    "text",
    "service_tier",
    "prompt_cache_retention",
    "safety_identifier",
];

/// Is this request from Codex CLI? v1 recognises `codex_vscode/`, `codex_cli_rs/` and
/// `codex_exec/` user agents followed by a version.
pub fn is_codex_cli(h: &HeaderMap) -> bool {
    let ua = h
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    ["codex_vscode/", "codex_cli_rs/", "codex_exec/"]
        .iter()
        .any(|p| {
            ua.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p))
                && ua[p.len()..].starts_with(|c: char| c.is_ascii_digit())
        })
}

/// What an id token says about the ChatGPT account (OpenAI's claims, as v1 reads them in
/// openaiAccounts.js `exchange-code`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdClaims {
    pub account_id: String,
    pub user_id: String,
    pub plan_type: String,
    pub email: String,
    pub name: String,
    pub email_verified: bool,
    pub organization_id: String,
    pub organization_role: String,
    pub organization_title: String,
    pub organizations: Vec<Value>,
}

/// The claims of a JWT's payload, without checking its signature (it comes straight from
/// the token endpoint over TLS).
pub fn jwt_payload(jwt: &str) -> Option<Map<String, Value>> {
    let mut parts = jwt.split('.');
    let payload = parts.nth(1)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    match serde_json::from_slice(&raw).ok()? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

pub fn id_claims(jwt: &str) -> Option<IdClaims> {
    let p = jwt_payload(jwt)?;
    let auth = p.get(AUTH_CLAIM).and_then(Value::as_object);
    let s = |m: Option<&Map<String, Value>>, k: &str| {
        m.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let organizations: Vec<Value> = auth
        .and_then(|a| a.get("organizations"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let org = organizations
        .iter()
        .find(|o| o.get("is_default").and_then(Value::as_bool) == Some(true))
        .or(organizations.first())
        .and_then(Value::as_object);
    let user_id = match s(auth, "chatgpt_user_id") {
        u if u.is_empty() => s(auth, "user_id"),
        u => u,
    };
    Some(IdClaims {
        account_id: s(auth, "chatgpt_account_id"),
        user_id,
        plan_type: s(auth, "chatgpt_plan_type"),
        email: s(Some(&p), "email"),
        name: s(Some(&p), "name"),
        email_verified: p.get("email_verified").and_then(Value::as_bool) == Some(true),
        organization_id: s(org, "id"),
        organization_role: s(org, "role"),
        organization_title: s(org, "title"),
        organizations,
    })
}

/// The `chatgpt-account-id` to send: v1 sends `accountId`, else `chatgptUserId`.
pub fn chatgpt_account_id(rec: &Account) -> &str {
    ["accountId", "chatgptUserId"]
        .iter()
        .filter_map(|k| rec.extra.get(*k).and_then(Value::as_str))
        .find(|s| !s.is_empty())
        .unwrap_or("")
}

/// The Codex backend URL for an op.
pub fn url(rec: &Account, compact: bool) -> String {
    let base = rec.api_url.trim().trim_end_matches('/');
    let base = if base.is_empty() { DEFAULT_BASE } else { base };
    if compact {
        format!("{base}/responses/compact")
    } else {
        format!("{base}/responses")
    }
}

/// The body to send (see the module comment). Genuine Codex CLI bodies that already say
/// `"store":false` go as they came.
fn codex_body(out: &Outgoing, compact: bool, codex_cli: bool) -> Bytes {
    if codex_cli
        && !compact
        && memchr::memmem::find(out.body, b"\"store\":false").is_some()
        && memchr::memmem::find(out.body, b"\"stream\":true").is_some()
    {
        return body(out);
    }
    // Parsed once (the upstream model set in the same pass).
    let Some(mut m) = object_with_model(out) else {
        return out.body.clone();
    };
    if compact {
        m.remove("store");
    } else {
        m.insert("store".into(), Value::Bool(false));
        // The Codex backend answers only streams: `stream: false` is a 400 `{"detail": "Stream
        // must be set to true"}` (reported by its users, e.g. stakpak/agent#739; CLIProxyAPI's
        // codex executor always streams). A client that asked for no stream gets the stream
        // read whole (`standard_body`).
        m.insert("stream".into(), Value::Bool(true));
    }
    if !codex_cli {
        for f in NOT_FOR_CODEX {
            m.remove(*f);
        }
        if !m.get("instructions").is_some_and(Value::is_string) {
            m.insert("instructions".into(), Value::String(String::new()));
        }
    }
    serde_json::to_vec(&m)
        .map(Bytes::from)
        .unwrap_or_else(|_| body(out))
}

/// The `response` of a Responses stream's final event, as JSON bytes; None when `body` is not
/// such a stream.
fn completed_response(body: &[u8]) -> Option<Bytes> {
    let start = body.trim_ascii_start();
    if !(start.starts_with(b"event:") || start.starts_with(b"data:")) {
        return None;
    }
    let mut found = None;
    let mut lines = super::sse::DataLines::new();
    lines.feed(body, |data| {
        if let Ok(v) = serde_json::from_slice::<Value>(data)
            && matches!(
                v.get("type").and_then(Value::as_str),
                Some("response.completed" | "response.incomplete")
            )
            && let Some(r) = v.get("response")
        {
            found = serde_json::to_vec(r).ok().map(Bytes::from);
        }
    });
    found
}

impl AccountType for ChatGpt {
    fn credential(&self, secrets: &Secrets, rec: &Account) -> Result<Credential> {
        access_token_credential(secrets, rec)
    }

    fn oauth(&self) -> bool {
        true
    }

    fn build(&self, up: &Upstream, out: &Outgoing) -> Result<reqwest::RequestBuilder> {
        let Op::Responses { compact } = out.op else {
            anyhow::bail!("a ChatGPT account serves only the Responses API");
        };
        let codex_cli = is_codex_cli(out.headers);
        let mut h = base_headers(up, out);
        if !codex_cli && up.rec.user_agent.is_empty() {
            h.insert(
                header::USER_AGENT,
                HeaderValue::from_static(CODEX_USER_AGENT),
            );
        }
        forward(&mut h, out.headers, CODEX_FORWARD);
        if !h.contains_key("originator") {
            h.insert("originator", HeaderValue::from_static("codex_cli_rs"));
        }
        let token = up.token.unwrap_or(&up.credential.secret);
        h.insert(header::AUTHORIZATION, bearer(&token.0)?);
        h.insert(
            "chatgpt-account-id",
            HeaderValue::from_str(chatgpt_account_id(up.rec))
                .map_err(|_| anyhow::anyhow!("the account id is not a valid header value"))?,
        );
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static(if compact {
                "application/json"
            } else {
                "text/event-stream"
            }),
        );
        super::request::post(
            up.client,
            &url(up.rec, compact),
            h,
            codex_body(out, compact, codex_cli),
        )
    }

    fn upstream_format(&self, _op: Op) -> Option<ClientFormat> {
        Some(ClientFormat::OpenAI)
    }

    /// The Codex backend sends its streams without a content type (seen by other relays:
    /// KarpelesLab/teamclaude#456), so a streamed request's success answer is a stream unless
    /// it says it is JSON; a request that asked for no stream is read whole.
    fn answer_streams(&self, requested: bool, headers: &reqwest::header::HeaderMap) -> bool {
        let ct = super::content_type(headers);
        requested && (ct.is_empty() || ct.starts_with("text/event-stream"))
    }

    fn stream_content_type(&self) -> Option<&'static str> {
        Some("text/event-stream")
    }

    /// A stream read whole (a request that asked for no stream) is answered as the Responses
    /// object its `response.completed` (or `incomplete`) event carries.
    fn standard_body(&self, _op: Op, body: Bytes) -> Bytes {
        completed_response(&body).unwrap_or(body)
    }

    fn probe(&self, _rec: &Account, model: &str) -> (Op, Value) {
        // The Codex backend answers in a stream only (CLIProxyAPI always streams to it).
        (
            Op::Responses { compact: false },
            serde_json::json!({"model": model, "instructions": "", "stream": true, "store": false,
                "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "ping"}]}]}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwt(claims: Value) -> String {
        let e = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.sig", e(&json!({"alg": "none"})), e(&claims))
    }

    #[test]
    fn id_token_claims_as_v1_reads_them() {
        let t = jwt(json!({
            "email": "u@example.com", "email_verified": true,
            AUTH_CLAIM: {"chatgpt_account_id": "acct-1", "user_id": "user-1", "chatgpt_plan_type": "pro",
                "organizations": [{"id": "org-a", "role": "member", "title": "A"}, {"id": "org-b", "role": "owner", "title": "B", "is_default": true}]}
        }));
        let c = id_claims(&t).unwrap();
        assert_eq!(c.account_id, "acct-1");
        assert_eq!(
            c.user_id, "user-1",
            "user_id when chatgpt_user_id is absent"
        );
        assert_eq!(c.plan_type, "pro");
        assert_eq!(c.email, "u@example.com");
        assert!(c.email_verified);
        assert_eq!(
            (c.organization_id.as_str(), c.organization_role.as_str()),
            ("org-b", "owner"),
            "the default organisation"
        );
        assert_eq!(id_claims("not-a-jwt"), None);
        assert_eq!(id_claims("a.!!!.c"), None);
    }

    #[test]
    fn codex_cli_is_known_by_its_user_agent() {
        let mut h = HeaderMap::new();
        for (ua, want) in [
            ("codex_cli_rs/0.169.0 (Linux; x86_64) xterm", true),
            ("codex_exec/0.169.0", true),
            ("Codex_VSCode/1.2", true),
            ("codex_cli_rs/", false),
            ("OpenAI/Python 1.0", false),
        ] {
            h.insert(header::USER_AGENT, HeaderValue::from_static(ua));
            assert_eq!(is_codex_cli(&h), want, "{ua}");
        }
    }

    #[test]
    fn bodies_get_store_false_and_other_clients_lose_refused_fields() {
        let raw = Bytes::from(
            json!({"model": "gpt-5", "input": "hi", "temperature": 0.2, "max_output_tokens": 9, "store": true})
                .to_string(),
        );
        let h = HeaderMap::new();
        let out = Outgoing {
            op: Op::Responses { compact: false },
            body: &raw,
            model: "gpt-5",
            upstream_model: "gpt-5",
            stream: true,
            headers: &h,
            query: None,
            session: None,
        };
        let v: Value = serde_json::from_slice(&codex_body(&out, false, false)).unwrap();
        assert_eq!(v["store"], json!(false));
        assert_eq!(v["instructions"], json!(""));
        assert!(v.get("temperature").is_none() && v.get("max_output_tokens").is_none());
        let v: Value = serde_json::from_slice(&codex_body(&out, true, true)).unwrap();
        assert!(v.get("store").is_none(), "compact: store removed");
        assert_eq!(
            v["temperature"],
            json!(0.2),
            "Codex CLI bodies keep their fields"
        );
        let genuine =
            Bytes::from_static(br#"{"model":"gpt-5","store":false,"stream":true,"input":[]}"#);
        let out = Outgoing {
            body: &genuine,
            ..out
        };
        assert_eq!(
            codex_body(&out, false, true),
            genuine,
            "passed through as sent"
        );
        // The backend streams only: a body that asks for no stream is sent asking for one.
        let quiet = Bytes::from_static(br#"{"model":"gpt-5","store":false,"input":[]}"#);
        let out = Outgoing {
            body: &quiet,
            ..out
        };
        let v: Value = serde_json::from_slice(&codex_body(&out, false, true)).unwrap();
        assert_eq!(v["stream"], json!(true));
        let v: Value = serde_json::from_slice(&codex_body(&out, true, true)).unwrap();
        assert!(v.get("stream").is_none(), "compact answers JSON");
    }
}

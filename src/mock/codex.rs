//! ChatGPT accounts in the mock: OpenAI's auth server (`POST /oauth/token`, the
//! authorization-code grant with PKCE and the refresh-token grant, form-encoded, with an id
//! token carrying the `https://api.openai.com/auth` claim) and the Codex backend
//! (`POST /backend-api/codex/responses` and `/responses/compact`).
//!
//! The backend checks the bearer token (accepted like the other mocks' keys) and the
//! `chatgpt-account-id` header, answers in the Responses format (`mock::openai::respond`) with
//! the `x-codex-*` usage-window headers, and plays scripted answers per access token
//! (`MockState::scripted`): a scripted 429 is Codex's `usage_limit_reached` refusal, with the
//! scripted message as its `resets_in_seconds` when it is a number.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use salvo::http::{HeaderValue, StatusCode};
use salvo::prelude::*;
use serde_json::json;

use super::oauth::{check_grant, is_form, oauth_error, token_request};
use super::openai::{openai_error, respond};
use super::{MockState, check_and_record, credential, request_id, take_scripted};
use crate::providers::chatgpt::{AUTH_CLAIM, CLIENT_ID, REDIRECT_URI};

/// The ChatGPT account every token the mock issues belongs to.
pub const MOCK_CHATGPT_ACCOUNT: &str = "acct-mock-0001";

pub fn routes(state: &Arc<MockState>) -> Router {
    Router::new()
        .push(Router::with_path("oauth/token").post(Token(state.clone())))
        .push(Router::with_path("backend-api/codex/responses").post(Backend(state.clone(), false)))
        .push(
            Router::with_path("backend-api/codex/responses/compact")
                .post(Backend(state.clone(), true)),
        )
}

/// The usage-window headers of a Codex answer when nothing else is scripted: a little of the
/// 5-hour window and of the weekly window used.
pub fn default_codex_headers() -> Vec<(String, String)> {
    [
        ("x-codex-primary-used-percent", "12"),
        ("x-codex-primary-window-minutes", "300"),
        ("x-codex-primary-reset-after-seconds", "7200"),
        ("x-codex-secondary-used-percent", "30"),
        ("x-codex-secondary-window-minutes", "10080"),
        ("x-codex-secondary-reset-after-seconds", "302400"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// An id token as OpenAI's auth server issues it (signed with a key the mock does not
/// publish; crs reads the claims without checking the signature).
pub fn id_token(account_id: &str, email: &str) -> String {
    let enc = |v: serde_json::Value| B64URL.encode(v.to_string());
    let claims = json!({
        "iss": "https://auth.openai.com",
        "aud": [CLIENT_ID],
        "email": email,
        "email_verified": true,
        "exp": chrono::Utc::now().timestamp() + 3600,
        AUTH_CLAIM: {
            "chatgpt_account_id": account_id,
            "chatgpt_user_id": "user-mock-0001",
            "chatgpt_plan_type": "plus",
            "organizations": [{"id": "org-mock-0001", "role": "owner", "title": "Personal", "is_default": true}],
        },
    });
    format!(
        "{}.{}.{}",
        enc(json!({"alg": "HS256", "typ": "JWT"})),
        enc(claims),
        B64URL.encode(b"mock-signature")
    )
}

struct Token(Arc<MockState>);

#[salvo::async_trait]
impl Handler for Token {
    async fn handle(
        &self,
        req: &mut Request,
        _d: &mut Depot,
        res: &mut Response,
        _c: &mut FlowCtrl,
    ) {
        let state = &self.0;
        let body = token_request(state, req).await;
        if !is_form(req) {
            return oauth_error(res, 400, "invalid_request", "expected a form body");
        }
        let fields = super::form(&body);
        let f = |k: &str| super::form_field(&fields, k).to_owned();
        if f("client_id") != CLIENT_ID {
            return oauth_error(res, 401, "invalid_client", "unknown client");
        }
        if let Err((error, desc)) = check_grant(state, f, REDIRECT_URI, "codex-rt-") {
            return oauth_error(res, 400, error, desc);
        }
        let n = request_id(state);
        let access = format!("codex-at-mock-{n}");
        super::oauth::accept_issued(state, &access);
        let out = json!({
            "token_type": "Bearer",
            "access_token": access,
            "refresh_token": format!("codex-rt-mock-{n}"),
            "id_token": id_token(MOCK_CHATGPT_ACCOUNT, "codex-mock@example.invalid"),
            "expires_in": state.oauth_expires_in.load(Ordering::Relaxed),
            "scope": "openid profile email offline_access",
        });
        res.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/json"));
        let _ = res.write_body(out.to_string());
    }
}

/// Codex's refusal when the plan's usage window is spent (the shape v1 and Codex CLI read).
fn usage_limit(res: &mut Response, resets_in: Option<u64>) {
    res.status_code(StatusCode::TOO_MANY_REQUESTS);
    res.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    let mut e = json!({"type": "usage_limit_reached", "message": "The usage limit has been reached", "plan_type": "plus"});
    if let Some(s) = resets_in {
        e["resets_in_seconds"] = json!(s);
        e["resets_at"] = json!(chrono::Utc::now().timestamp() + s as i64);
    }
    let _ = res.write_body(json!({"error": e}).to_string());
}

struct Backend(Arc<MockState>, bool);

#[salvo::async_trait]
impl Handler for Backend {
    async fn handle(
        &self,
        req: &mut Request,
        _d: &mut Depot,
        res: &mut Response,
        _c: &mut FlowCtrl,
    ) {
        let state = &self.0;
        let (body, rid) = super::body_and_id(state, req, res).await;
        if super::bearer(req).is_none() {
            return openai_error(res, 401, "Missing bearer authentication in header");
        }
        if !check_and_record(state, req, &body, res, openai_error) {
            return;
        }
        let account = req
            .headers()
            .get("chatgpt-account-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if account.is_empty() {
            return openai_error(res, 400, "chatgpt-account-id header is required");
        }
        let token = credential(req).to_owned();
        if let Some(s) = take_scripted(state, &token) {
            super::set_headers(res, &s.headers);
            if s.status == 429 {
                return usage_limit(res, s.message.trim().parse().ok());
            }
            return openai_error(res, s.status, &s.message);
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
            return openai_error(
                res,
                400,
                "We could not parse the JSON body of your request.",
            );
        };
        // The real backend streams only: `stream: false` is refused (as its users report,
        // e.g. stakpak/agent#739), and its streams carry no content type
        // (KarpelesLab/teamclaude#456).
        let streams = v.get("stream").and_then(|x| x.as_bool()) == Some(true);
        if !self.1 && !streams {
            res.status_code(salvo::http::StatusCode::BAD_REQUEST);
            res.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            let _ = res.write_body(r#"{"detail":"Stream must be set to true"}"#);
            return;
        }
        let headers = state
            .answer_headers
            .lock()
            .get(&token)
            .cloned()
            .unwrap_or_else(default_codex_headers);
        respond(state, res, &v, &body, &rid, self.1, &headers);
        if !self.1 && res.status_code.is_none_or(|c| c.is_success()) {
            res.headers_mut().remove("content-type");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_id_tokens_carry_the_account() {
        let body = "grant_type=refresh_token&redirect_uri=http%3A%2F%2Flocalhost%3A1455%2Fauth%2Fcallback&scope=openid+profile";
        let f = crate::mock::form(body.as_bytes());
        assert_eq!(crate::mock::form_field(&f, "redirect_uri"), REDIRECT_URI);
        assert_eq!(crate::mock::form_field(&f, "scope"), "openid profile");
        assert_eq!(crate::mock::form_field(&f, "missing"), "");
        let c = crate::providers::chatgpt::id_claims(&id_token("acct-x", "a@b.c")).unwrap();
        assert_eq!(
            (c.account_id.as_str(), c.email.as_str()),
            ("acct-x", "a@b.c")
        );
    }
}

//! OAuth in the admin API: the authorisation URL, the code exchange and a manual token refresh
//! for Claude (v1's `/admin/claude-accounts/...` paths), ChatGPT (v1's
//! `/admin/openai-accounts/generate-auth-url` and `exchange-code`) and Gemini (v1's
//! `/admin/gemini-accounts/...`, src/routes/admin/geminiAccounts.js), and Droid's device-code
//! sign-in and refresh (v1's `/admin/droid-accounts/...`). The flows themselves are
//! `accounts::oauth`'s and `accounts::workos`'s.

use salvo::http::StatusCode;
use salvo::prelude::*;
use serde_json::{Value, json};

use super::fields::Body;
use crate::accounts::oauth::{
    exchange, exchange_gemini, exchange_openai, start_authorisation, start_gemini_authorisation,
    start_openai_authorisation,
};
use crate::model::Platform;
use crate::providers::http::proxy_url;
use crate::state::state;
use crate::web::{json, json_body};

pub fn router() -> Router {
    Router::new()
        .push(
            Router::with_path("claude-accounts")
                .push(Router::with_path("generate-auth-url").post(generate_auth_url))
                .push(Router::with_path("generate-setup-token-url").post(generate_setup_url))
                .push(Router::with_path("exchange-code").post(exchange_code))
                .push(Router::with_path("exchange-setup-token-code").post(exchange_code))
                .push(Router::with_path("{id}/refresh").post(refresh_now)),
        )
        .push(
            Router::with_path("openai-accounts")
                .push(Router::with_path("generate-auth-url").post(openai_auth_url))
                .push(Router::with_path("exchange-code").post(openai_exchange_code))
                .push(Router::with_path("{id}/refresh").post(refresh_now)),
        )
}

pub fn gemini_router() -> Router {
    Router::with_path("gemini-accounts")
        .push(Router::with_path("generate-auth-url").post(gemini_auth_url))
        .push(Router::with_path("exchange-code").post(gemini_exchange_code))
        .push(Router::with_path("{id}/refresh").post(refresh_now))
}

/// v1's answer: `{success, data: {authUrl, sessionId}}`.
#[handler]
async fn gemini_auth_url(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let b = json_body::<Body>(req, res, 64 * 1024)
        .await
        .unwrap_or_default();
    let (url, session) = start_gemini_authorisation(&st.accounts.oauth, proxy_from_body(&b));
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "data": {"authUrl": url, "sessionId": session}}),
    );
}

/// v1's answer: `{success, data: {tokens}}`, the tokens as the account's `geminiOauth`.
#[handler]
async fn gemini_exchange_code(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(b) = json_body::<Body>(req, res, 64 * 1024).await else {
        return;
    };
    let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("");
    if s("code").is_empty() || s("sessionId").is_empty() {
        return json(
            res,
            StatusCode::BAD_REQUEST,
            &json!({"error": "Authorization code and sessionId are required"}),
        );
    }
    match exchange_gemini(&st.accounts, s("sessionId"), s("code")).await {
        Ok(tokens) => {
            tracing::info!("Gemini OAuth code exchanged");
            json(
                res,
                StatusCode::OK,
                &json!({"success": true, "data": {"tokens": tokens}}),
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "Gemini OAuth code exchange failed");
            json(
                res,
                StatusCode::BAD_REQUEST,
                &json!({"error": "Failed to exchange code", "message": e.to_string()}),
            );
        }
    }
}

/// Droid's manual refresh (v1 src/routes/admin/droidAccounts.js `POST
/// /droid-accounts/:id/refresh-token`): the same locked refresh, WorkOS's grant.
/// Droid's device-code authorisation (v1 `POST /droid-accounts/generate-auth-url` and
/// `/droid-accounts/exchange-code`, the flow in `accounts::workos`).
pub fn droid_router() -> Router {
    Router::with_path("droid-accounts")
        .push(Router::with_path("generate-auth-url").post(droid_generate))
        .push(Router::with_path("exchange-code").post(droid_exchange))
        .push(Router::with_path("{id}/refresh-token").post(refresh_now))
}

#[handler]
async fn droid_generate(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let b = json_body::<Body>(req, res, 64 * 1024)
        .await
        .unwrap_or_default();
    match crate::accounts::workos::start(&st.accounts, proxy_from_body(&b)).await {
        Ok(s) => json(
            res,
            StatusCode::OK,
            &json!({"success": true, "data": {
                "sessionId": s.session_id,
                "userCode": s.user_code,
                "verificationUri": s.verification_uri,
                "verificationUriComplete": s.verification_uri_complete,
                "expiresIn": s.expires_in,
                "interval": s.interval,
                "instructions": [
                    "Open the verification page and confirm the code shown",
                    "Sign in with the Factory (Droid) account to share and allow access",
                    "Come back here and complete the authorisation",
                ],
            }}),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "starting a Droid device authorisation failed");
            json(
                res,
                StatusCode::BAD_GATEWAY,
                &json!({"error": "Failed to start Droid device authorization", "message": e.to_string()}),
            )
        }
    }
}

#[handler]
async fn droid_exchange(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    use crate::accounts::workos::{PollError, poll};
    let st = state(depot);
    let Some(b) = json_body::<Body>(req, res, 64 * 1024).await else {
        return;
    };
    let Some(session) = b
        .get("sessionId")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return json(
            res,
            StatusCode::BAD_REQUEST,
            &json!({"error": "Session ID is required"}),
        );
    };
    match poll(&st.accounts, session).await {
        Ok(tokens) => {
            // The lifetime v1 assumes for WorkOS tokens (8 hours), for the account form.
            let expires_at = (chrono::Utc::now() + chrono::Duration::hours(8))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            json(
                res,
                StatusCode::OK,
                &json!({"success": true, "data": {"tokens": tokens, "expiresAt": expires_at}}),
            )
        }
        Err(PollError::Pending { code, retry_after }) => json(
            res,
            StatusCode::OK,
            &json!({"success": false, "pending": true, "error": code,
                    "message": "Authorization is pending", "retryAfter": retry_after}),
        ),
        Err(PollError::Expired) => json(
            res,
            StatusCode::BAD_REQUEST,
            &json!({"error": "Device code expired", "message": "The authorisation expired; generate a new code"}),
        ),
        Err(PollError::Unknown) => json(
            res,
            StatusCode::BAD_REQUEST,
            &json!({"error": "Invalid or expired OAuth session"}),
        ),
        Err(PollError::Failed(m)) => json(
            res,
            StatusCode::BAD_GATEWAY,
            &json!({"error": "Failed to exchange Droid authorization code", "message": m}),
        ),
    }
}

fn proxy_from_body(b: &Body) -> String {
    let Some(p) = b.get("proxy").and_then(Value::as_object) else {
        return String::new();
    };
    let host = p.get("host").and_then(Value::as_str).unwrap_or("");
    let port = p
        .get("port")
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(0);
    if host.is_empty() || port == 0 {
        return String::new();
    }
    let cfg = crate::model::ProxyConfig {
        kind: p
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("http")
            .to_owned(),
        host: host.to_owned(),
        port: port as u16,
        username: p
            .get("username")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        password: String::new(),
    };
    proxy_url(
        &cfg,
        p.get("password").and_then(Value::as_str).unwrap_or(""),
    )
}

async fn generate(
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
    platform: Platform,
    setup: bool,
) {
    let st = state(depot);
    let b = json_body::<Body>(req, res, 64 * 1024)
        .await
        .unwrap_or_default();
    let proxy = proxy_from_body(&b);
    let ((url, session), who, last) = if platform == Platform::OpenAI {
        (
            start_openai_authorisation(&st.accounts.oauth, proxy),
            "ChatGPT",
            "The browser ends on a localhost page that does not load: copy its whole URL (it holds the code) and paste it back here",
        )
    } else {
        (
            start_authorisation(&st.accounts.oauth, setup, proxy),
            "Claude",
            "Copy the code shown (or the whole callback URL) and paste it back here",
        )
    };
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "data": {
            "authUrl": url,
            "sessionId": session,
            "instructions": [
                format!("Open the URL and sign in with the {who} account to share"),
                "Approve the access request",
                last,
            ],
        }}),
    );
}

/// v1's answer: `{success, data: {authUrl, sessionId, instructions}}`.
#[handler]
async fn openai_auth_url(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    generate(req, depot, res, Platform::OpenAI, false).await
}

#[handler]
async fn generate_auth_url(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    generate(req, depot, res, Platform::Claude, false).await
}

#[handler]
async fn generate_setup_url(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    generate(req, depot, res, Platform::Claude, true).await
}

#[handler]
async fn exchange_code(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    exchange_for(Platform::Claude, req, depot, res).await
}

#[handler]
async fn openai_exchange_code(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    exchange_for(Platform::OpenAI, req, depot, res).await
}

/// `{sessionId, authorizationCode | callbackUrl | code}` -> Claude: v1's `claudeAiOauth`
/// object; ChatGPT: v1's `{tokens, accountInfo}`.
async fn exchange_for(
    platform: Platform,
    req: &mut Request,
    depot: &mut Depot,
    res: &mut Response,
) {
    let st = state(depot);
    let Some(b) = json_body::<Body>(req, res, 64 * 1024).await else {
        return;
    };
    let session = b.get("sessionId").and_then(Value::as_str).unwrap_or("");
    let code = ["authorizationCode", "callbackUrl", "code"]
        .iter()
        .find_map(|k| b.get(*k).and_then(Value::as_str).filter(|s| !s.is_empty()))
        .unwrap_or("");
    if session.is_empty() || code.is_empty() {
        return json(
            res,
            StatusCode::BAD_REQUEST,
            &json!({"success": false, "error": "sessionId and authorizationCode (or code, or callbackUrl) are required"}),
        );
    }
    let out = if platform == Platform::OpenAI {
        exchange_openai(&st.accounts, session, code).await
    } else {
        exchange(&st.accounts, session, code).await
    };
    match out {
        Ok(data) => {
            tracing::info!(platform = platform.as_str(), "OAuth code exchanged");
            json(res, StatusCode::OK, &json!({"success": true, "data": data}));
        }
        Err(e) => {
            tracing::warn!(platform = platform.as_str(), error = %e, "OAuth code exchange failed");
            json(
                res,
                StatusCode::BAD_REQUEST,
                &json!({"success": false, "error": "Code exchange failed", "message": e.to_string()}),
            );
        }
    }
}

#[handler]
async fn refresh_now(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    let Some(acc) = st.accounts.load().by_id.get(&id).cloned().filter(|a| {
        // The account type the path names (`/admin/{admin_path}/{id}/refresh`).
        a.kind().oauth()
            && req
                .uri()
                .path()
                .contains(&format!("/{}/", a.rec.platform.admin_path()))
    }) else {
        return json(
            res,
            StatusCode::NOT_FOUND,
            &json!({"error": "Account not found"}),
        );
    };
    match crate::accounts::oauth::refresh_now(&st.accounts, &acc).await {
        Ok(_) => {
            let exp = st
                .accounts
                .load()
                .by_id
                .get(&id)
                .map(|a| a.rec.expires_at)
                .unwrap_or(0);
            json(
                res,
                StatusCode::OK,
                &json!({"success": true, "data": {"expiresAt": exp}}),
            );
        }
        Err(e) => json(
            res,
            StatusCode::BAD_GATEWAY,
            &json!({"error": "Token refresh failed", "message": e.to_string()}),
        ),
    }
}

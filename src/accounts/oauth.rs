//! Claude subscription accounts (OAuth): the PKCE authorisation flow an admin goes through
//! once (open the URL, paste the code), setup tokens, and access-token refresh ahead of expiry
//! through the account's proxy. A failed refresh marks the account (`refresh_failed`) and is
//! logged as an error, so it shows on the dashboard instead of failing requests silently.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::Utc;
use parking_lot::Mutex;
use salvo::http::StatusCode;
use salvo::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AccountRt;
use crate::admin::blocking;
use crate::admin::fields::Body;
use crate::crypto::random_bytes;
use crate::model::{Account, Platform};
use crate::state::{AppState, Secret};
use crate::store::Table;
use crate::web::{json, json_body, state};

/// Claude Code's public OAuth client.
pub const CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
pub const AUTHORIZE_URL: &str = "https://claude.ai/oauth/authorize";
pub const TOKEN_URL: &str = "https://console.anthropic.com/v1/oauth/token";
pub const REDIRECT_URI: &str = "https://console.anthropic.com/oauth/code/callback";
pub const SCOPES: &str = "org:create_api_key user:profile user:inference";
/// Setup tokens (`claude setup-token`): inference only, one year, no refresh token.
pub const SETUP_SCOPES: &str = "user:inference";

/// Refresh this long before expiry (in the background) ...
const REFRESH_AHEAD_MS: i64 = 10 * 60_000;
/// ... or at the latest on the request path.
const MUST_REFRESH_MS: i64 = 60_000;

#[derive(Debug, Clone)]
pub struct PendingAuth {
    verifier: String,
    state: String,
    setup: bool,
    proxy_url: String,
}

/// OAuth state held in memory: authorisation sessions (10 minutes) and per-account refresh
/// locks (so concurrent requests refresh once).
pub struct OAuthState {
    pending: moka::sync::Cache<String, PendingAuth>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for OAuthState {
    fn default() -> Self {
        OAuthState {
            pending: moka::sync::Cache::builder()
                .max_capacity(1000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            locks: Mutex::new(HashMap::new()),
        }
    }
}

impl std::fmt::Debug for OAuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OAuthState")
    }
}

impl OAuthState {
    fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().entry(id.to_owned()).or_default().clone()
    }
}

fn pkce() -> (String, String) {
    let verifier = B64URL.encode(random_bytes::<32>());
    let challenge = B64URL.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The URL an admin opens to authorise crs, and the session that remembers the verifier.
pub fn start_authorisation(st: &AppState, setup: bool, proxy_url: String) -> (String, String) {
    let (verifier, challenge) = pkce();
    let state_param = B64URL.encode(random_bytes::<32>());
    let session = uuid::Uuid::new_v4().to_string();
    let scope = if setup { SETUP_SCOPES } else { SCOPES };
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let url = format!(
        "{}?code=true&client_id={CLIENT_ID}&response_type=code&redirect_uri={}&scope={}&code_challenge={challenge}&code_challenge_method=S256&state={state_param}",
        st.config.claude_oauth_authorize_url,
        enc(REDIRECT_URI),
        enc(scope)
    );
    st.oauth.pending.insert(
        session.clone(),
        PendingAuth {
            verifier,
            state: state_param,
            setup,
            proxy_url,
        },
    );
    (url, session)
}

/// `code#state`, a callback URL with `?code=`, or the bare code.
pub fn parse_code(input: &str) -> Option<(String, Option<String>)> {
    let s = input.trim();
    if s.is_empty() {
        return None;
    }
    if let Some(q) = s.split_once('?').map(|(_, q)| q) {
        let mut code = None;
        let mut state = None;
        for pair in q.split('&') {
            match pair.split_once('=') {
                Some(("code", v)) => code = Some(v.split('#').next().unwrap_or(v).to_owned()),
                Some(("state", v)) => state = Some(v.to_owned()),
                _ => {}
            }
        }
        return code.filter(|c| !c.is_empty()).map(|c| (c, state));
    }
    match s.split_once('#') {
        Some((c, st)) if !c.is_empty() => Some((c.to_owned(), Some(st.to_owned()))),
        _ => Some((s.to_owned(), None)),
    }
}

#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<i64>,
    #[serde(default)]
    scope: Option<String>,
}

async fn token_call(client: &reqwest::Client, url: &str, body: Value) -> Result<TokenResponse> {
    let r = client
        .post(url)
        .header("content-type", "application/json")
        .header("user-agent", "claude-cli/2.0.0 (external, cli)")
        .json(&body)
        .send()
        .await
        .context("token endpoint unreachable")?;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    if !status.is_success() {
        let msg = crate::relay::wire::error_message(text.as_bytes())
            .unwrap_or_else(|| text.chars().take(200).collect());
        bail!("token endpoint answered {}: {msg}", status.as_u16());
    }
    serde_json::from_str(&text).context("token endpoint answered with an unexpected body")
}

/// Exchange an authorisation code for tokens, as v1's `claudeAiOauth` object.
pub async fn exchange(st: &AppState, session: &str, code_input: &str) -> Result<Value> {
    let p = st
        .oauth
        .pending
        .get(session)
        .context("the authorisation session expired or is unknown; generate a new URL")?;
    let (code, state_param) =
        parse_code(code_input).context("no authorisation code found in the input")?;
    let client = st.http.get(&p.proxy_url)?;
    let mut body = json!({
        "grant_type": "authorization_code",
        "client_id": CLIENT_ID,
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": p.verifier,
        "state": state_param.unwrap_or_else(|| p.state.clone()),
    });
    if p.setup {
        body["expires_in"] = json!(31_536_000);
    }
    let t = token_call(&client, &st.config.claude_oauth_token_url, body).await?;
    st.oauth.pending.invalidate(session);
    let expires_at = Utc::now().timestamp_millis() + t.expires_in.unwrap_or(3600) * 1000;
    let scopes: Vec<String> = t
        .scope
        .unwrap_or_else(|| {
            if p.setup {
                SETUP_SCOPES.into()
            } else {
                SCOPES.into()
            }
        })
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    Ok(json!({"claudeAiOauth": {
        "accessToken": t.access_token,
        "refreshToken": t.refresh_token.unwrap_or_default(),
        "expiresAt": expires_at,
        "scopes": scopes,
    }}))
}

/// Refresh an account's access token now, through its proxy, and store the result.
pub async fn refresh(st: &Arc<AppState>, acc: &AccountRt) -> Result<Secret> {
    let rt = st
        .secrets
        .decrypt(&acc.rec.refresh_token)
        .context("decrypting refreshToken")?;
    if rt.is_empty() {
        bail!("the account has no refresh token");
    }
    let body = json!({"grant_type": "refresh_token", "refresh_token": rt, "client_id": CLIENT_ID});
    let outcome = token_call(&acc.client, &st.config.claude_oauth_token_url, body).await;
    let id = acc.rec.id.clone();
    match outcome {
        Ok(t) => {
            let access = t.access_token.clone();
            let st2 = st.clone();
            let _g = st.admin_lock.lock().await;
            blocking(move || {
                let Some(mut a) = st2.store.get::<Account>(Table::Accounts, &id)? else {
                    bail!("account disappeared during refresh");
                };
                a.access_token = st2.secrets.encrypt(&t.access_token);
                if let Some(r) = t.refresh_token.filter(|r| !r.is_empty()) {
                    a.refresh_token = st2.secrets.encrypt(&r);
                }
                a.expires_at = Utc::now().timestamp_millis() + t.expires_in.unwrap_or(3600) * 1000;
                if let Some(s) = t.scope {
                    a.scopes = s;
                }
                a.last_refresh_at = Some(Utc::now());
                if a.status == "refresh_failed" || a.status == "unauthorized" {
                    a.status = "active".into();
                    a.error_message.clear();
                }
                a.updated_at = Some(Utc::now());
                st2.store.put(Table::Accounts, &id, &a)?;
                st2.reload_accounts()
            })
            .await?;
            tracing::info!(account_id = %acc.rec.id, account = %acc.rec.name, "OAuth access token refreshed");
            Ok(Secret(access))
        }
        Err(e) => {
            tracing::error!(account_id = %acc.rec.id, account = %acc.rec.name, error = %e, "ALERT: OAuth token refresh failed; account taken out of rotation");
            crate::admin::accounts::mark_status(
                st.clone(),
                id,
                "refresh_failed",
                format!("token refresh failed: {e}"),
            );
            Err(e)
        }
    }
}

/// The access token to send for `acc`, refreshed first when it is about to expire.
pub async fn fresh_access_token(st: &AppState, acc: &AccountRt) -> Result<Secret> {
    let now = Utc::now().timestamp_millis();
    if acc.rec.platform != Platform::Claude
        || acc.rec.expires_at == 0
        || acc.rec.expires_at - now > MUST_REFRESH_MS
    {
        return Ok(acc.secret.clone());
    }
    if acc.rec.refresh_token.is_empty() {
        if acc.rec.expires_at <= now {
            bail!("the OAuth token expired and the account has no refresh token");
        }
        return Ok(acc.secret.clone());
    }
    let lock = st.oauth.lock_for(&acc.rec.id);
    let _g = lock.lock().await;
    // Someone may have refreshed while we waited.
    let latest = st.accounts.load().by_id.get(&acc.rec.id).cloned();
    if let Some(a) = &latest
        && a.rec.expires_at - Utc::now().timestamp_millis() > MUST_REFRESH_MS
    {
        return Ok(a.secret.clone());
    }
    let st = st.self_arc().context("server is shutting down")?;
    refresh(&st, latest.as_deref().unwrap_or(acc)).await
}

/// Refresh tokens ahead of expiry in the background (every minute) so requests never wait.
pub fn spawn_refresher(st: &Arc<AppState>) {
    let weak: Weak<AppState> = Arc::downgrade(st);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Some(st) = weak.upgrade() else { return };
            let now = Utc::now().timestamp_millis();
            let due: Vec<Arc<AccountRt>> = st
                .accounts
                .load()
                .of_platform(Platform::Claude)
                .filter(|a| {
                    a.rec.is_active
                        && !a.rec.refresh_token.is_empty()
                        && a.rec.expires_at > 0
                        && a.rec.expires_at - now < REFRESH_AHEAD_MS
                        && a.rec.status != "refresh_failed"
                })
                .cloned()
                .collect();
            for a in due {
                let lock = st.oauth.lock_for(&a.rec.id);
                let _g = lock.lock().await;
                let _ = refresh(&st, &a).await;
            }
        }
    });
}

pub fn admin_router() -> Router {
    Router::with_path("claude-accounts")
        .push(Router::with_path("generate-auth-url").post(generate_auth_url))
        .push(Router::with_path("generate-setup-token-url").post(generate_setup_url))
        .push(Router::with_path("exchange-code").post(exchange_code))
        .push(Router::with_path("exchange-setup-token-code").post(exchange_code))
        .push(Router::with_path("{id}/refresh").post(refresh_now))
}

fn proxy_from_body(st: &AppState, b: &Body) -> String {
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
    let _ = st;
    crate::state::proxy_url(
        &cfg,
        p.get("password").and_then(Value::as_str).unwrap_or(""),
    )
}

async fn generate(req: &mut Request, depot: &mut Depot, res: &mut Response, setup: bool) {
    let st = state(depot);
    let b = json_body::<Body>(req, res, 64 * 1024)
        .await
        .unwrap_or_default();
    let (url, session) = start_authorisation(&st, setup, proxy_from_body(&st, &b));
    json(
        res,
        StatusCode::OK,
        &json!({"success": true, "data": {
            "authUrl": url,
            "sessionId": session,
            "instructions": [
                "Open the URL and sign in with the Claude account to share",
                "Approve the access request",
                "Copy the code shown (or the whole callback URL) and paste it back here",
            ],
        }}),
    );
}

#[handler]
async fn generate_auth_url(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    generate(req, depot, res, false).await
}

#[handler]
async fn generate_setup_url(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    generate(req, depot, res, true).await
}

#[handler]
async fn exchange_code(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let Some(b) = json_body::<Body>(req, res, 64 * 1024).await else {
        return;
    };
    let session = b.get("sessionId").and_then(Value::as_str).unwrap_or("");
    let code = b
        .get("authorizationCode")
        .or_else(|| b.get("callbackUrl"))
        .or_else(|| b.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if session.is_empty() || code.is_empty() {
        return json(
            res,
            StatusCode::BAD_REQUEST,
            &json!({"error": "sessionId and authorizationCode (or callbackUrl) are required"}),
        );
    }
    match exchange(&st, session, code).await {
        Ok(data) => {
            tracing::info!("Claude OAuth code exchanged");
            json(res, StatusCode::OK, &json!({"success": true, "data": data}));
        }
        Err(e) => {
            tracing::warn!(error = %e, "Claude OAuth code exchange failed");
            json(
                res,
                StatusCode::BAD_REQUEST,
                &json!({"error": "Code exchange failed", "message": e.to_string()}),
            );
        }
    }
}

#[handler]
async fn refresh_now(req: &mut Request, depot: &mut Depot, res: &mut Response) {
    let st = state(depot);
    let id = req.param::<String>("id").unwrap_or_default();
    let Some(acc) = st
        .accounts
        .load()
        .by_id
        .get(&id)
        .cloned()
        .filter(|a| a.rec.platform == Platform::Claude)
    else {
        return json(
            res,
            StatusCode::NOT_FOUND,
            &json!({"error": "Account not found"}),
        );
    };
    let lock = st.oauth.lock_for(&id);
    let _g = lock.lock().await;
    match refresh(&st, &acc).await {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_inputs() {
        assert_eq!(
            parse_code("abc#xyz"),
            Some(("abc".into(), Some("xyz".into())))
        );
        assert_eq!(
            parse_code("https://console.anthropic.com/oauth/code/callback?code=abc&state=xyz"),
            Some(("abc".into(), Some("xyz".into())))
        );
        assert_eq!(parse_code("  abc "), Some(("abc".into(), None)));
        assert_eq!(parse_code(""), None);
    }

    #[test]
    fn pkce_challenge_is_s256_of_the_verifier() {
        let (v, c) = pkce();
        assert_eq!(c, B64URL.encode(Sha256::digest(v.as_bytes())));
        assert!(v.len() >= 43);
    }
}

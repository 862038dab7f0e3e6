//! OAuth accounts: Claude's PKCE authorisation flow an admin goes through once (open the URL,
//! paste the code), setup tokens, and access-token refresh ahead of expiry through the
//! account's proxy for every platform with a refresh grant (`Grant`: Claude's, and WorkOS's
//! for Droid). A failed refresh marks the account (`refresh_failed`) and is logged as an
//! error, so it shows on the dashboard instead of failing requests silently.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use chrono::Utc;
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{AccountRt, Accounts};
use crate::config::Config;
use crate::crypto::{Secret, random_bytes};
use crate::model::{AccountStatus, Platform};

use crate::providers::anthropic::oauth::{CLIENT_ID, REDIRECT_URI, SCOPES, SETUP_SCOPES};
use crate::providers::droid::{WORKOS_CLIENT_ID, WORKOS_TOKEN_PATH};

/// Lifetime v1 assumes when WorkOS names none (droidAccountService.js `tokenValidHours`).
const WORKOS_DEFAULT_LIFETIME_S: i64 = 8 * 3600;

/// The refresh grant of a platform whose accounts hold OAuth tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Anthropic: a JSON body to the Claude token URL.
    Claude,
    /// WorkOS (Droid): a form body with Factory's client id and the account's organisation,
    /// as v1's `_refreshTokensWithWorkOS` sends it.
    WorkOs,
}

impl Grant {
    pub fn of(p: Platform) -> Option<Grant> {
        match p {
            Platform::Claude => Some(Grant::Claude),
            Platform::Droid => Some(Grant::WorkOs),
            _ => None,
        }
    }
}

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

/// OAuth state held in memory: the endpoints, authorisation sessions (10 minutes) and
/// per-account refresh locks (so concurrent requests refresh once).
pub struct OAuthState {
    authorize_url: String,
    token_url: String,
    workos_url: String,
    deadline: Duration,
    pending: moka::sync::Cache<String, PendingAuth>,
    devices: moka::sync::Cache<String, super::workos::DeviceSession>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl OAuthState {
    pub fn new(config: &Config) -> Self {
        OAuthState {
            authorize_url: config.claude_oauth_authorize_url.clone(),
            token_url: config.claude_oauth_token_url.clone(),
            workos_url: config.droid_workos_url.trim_end_matches('/').to_owned(),
            deadline: config.oauth_timeout,
            pending: moka::sync::Cache::builder()
                .max_capacity(1000)
                .time_to_live(Duration::from_secs(600))
                .build(),
            devices: super::workos::sessions(),
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
    pub fn lock_for(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().entry(id.to_owned()).or_default().clone()
    }

    pub fn workos_url(&self) -> &str {
        &self.workos_url
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// Droid device authorisations in progress (`workos`).
    pub fn devices(&self) -> &moka::sync::Cache<String, super::workos::DeviceSession> {
        &self.devices
    }
}

/// Percent-encode `s` for a query or form value (RFC 3986 unreserved characters kept).
fn pct(s: &str) -> String {
    crate::providers::encode_segment(s)
}

fn pkce() -> (String, String) {
    let verifier = B64URL.encode(random_bytes::<32>());
    let challenge = B64URL.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// The URL an admin opens to authorise crs, and the session that remembers the verifier.
pub fn start_authorisation(oauth: &OAuthState, setup: bool, proxy_url: String) -> (String, String) {
    let (verifier, challenge) = pkce();
    let state_param = B64URL.encode(random_bytes::<32>());
    let session = uuid::Uuid::new_v4().to_string();
    let scope = if setup { SETUP_SCOPES } else { SCOPES };
    let enc = pct;
    let url = format!(
        "{}?code=true&client_id={CLIENT_ID}&response_type=code&redirect_uri={}&scope={}&code_challenge={challenge}&code_challenge_method=S256&state={state_param}",
        oauth.authorize_url,
        enc(REDIRECT_URI),
        enc(scope)
    );
    oauth.pending.insert(
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
    /// WorkOS names the organisation the token is for.
    #[serde(default)]
    organization_id: Option<String>,
}

/// A token endpoint request body: Anthropic takes JSON, WorkOS a form.
enum TokenBody {
    Json(Value),
    Form(Vec<(&'static str, String)>),
}

/// A token endpoint call, within `deadline` (`oauth_timeout`: the call runs under the
/// account's refresh lock, and requests for the account wait on it).
async fn token_call(
    client: &reqwest::Client,
    url: &str,
    body: TokenBody,
    deadline: Duration,
) -> Result<TokenResponse> {
    tokio::time::timeout(deadline, token_call_once(client, url, body))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "token endpoint did not answer within {} s",
                deadline.as_secs()
            )
        })?
}

async fn token_call_once(
    client: &reqwest::Client,
    url: &str,
    body: TokenBody,
) -> Result<TokenResponse> {
    let rb = match body {
        TokenBody::Json(v) => client
            .post(url)
            .header("content-type", "application/json")
            .header("user-agent", "claude-cli/2.0.0 (external, cli)")
            .json(&v),
        TokenBody::Form(pairs) => {
            let form: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{k}={}", pct(v)))
                .collect();
            client
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.join("&"))
        }
    };
    let r = rb.send().await.context("token endpoint unreachable")?;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    if !status.is_success() {
        let msg = crate::providers::error_message(text.as_bytes())
            .unwrap_or_else(|| text.chars().take(200).collect());
        bail!("token endpoint answered {}: {msg}", status.as_u16());
    }
    serde_json::from_str(&text).context("token endpoint answered with an unexpected body")
}

/// Exchange an authorisation code for tokens, as v1's `claudeAiOauth` object.
pub async fn exchange(accounts: &Accounts, session: &str, code_input: &str) -> Result<Value> {
    let p = accounts
        .oauth
        .pending
        .get(session)
        .context("the authorisation session expired or is unknown; generate a new URL")?;
    let (code, state_param) =
        parse_code(code_input).context("no authorisation code found in the input")?;
    let client = accounts.http.get(&p.proxy_url)?;
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
    let t = token_call(
        &client,
        &accounts.oauth.token_url,
        TokenBody::Json(body),
        accounts.oauth.deadline,
    )
    .await?;
    accounts.oauth.pending.invalidate(session);
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

/// Refresh an account's access token now, through its proxy, and store the result. The caller
/// holds the account's refresh lock (`OAuthState::lock_for`).
pub async fn refresh(accounts: &Arc<Accounts>, acc: &AccountRt) -> Result<Secret> {
    if !accounts.writable() {
        bail!("the store is handed over to a new process, which refreshes the token");
    }
    let rt = accounts
        .secrets()
        .decrypt(&acc.rec.refresh_token)
        .context("decrypting refreshToken")?;
    if rt.is_empty() {
        bail!("the account has no refresh token");
    }
    let grant = Grant::of(acc.rec.platform).context("the account type has no refresh grant")?;
    let (url, body, default_lifetime) = match grant {
        Grant::Claude => (
            accounts.oauth.token_url.clone(),
            TokenBody::Json(
                json!({"grant_type": "refresh_token", "refresh_token": rt, "client_id": CLIENT_ID}),
            ),
            3600,
        ),
        Grant::WorkOs => {
            let mut form = vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", rt),
                ("client_id", WORKOS_CLIENT_ID.to_owned()),
            ];
            if !acc.rec.organization_id.is_empty() {
                form.push(("organization_id", acc.rec.organization_id.clone()));
            }
            (
                format!("{}{WORKOS_TOKEN_PATH}", accounts.oauth.workos_url),
                TokenBody::Form(form),
                WORKOS_DEFAULT_LIFETIME_S,
            )
        }
    };
    let outcome = token_call(&acc.client, &url, body, accounts.oauth.deadline).await;
    let id = acc.rec.id.clone();
    match outcome {
        Ok(t) => {
            let access = t.access_token.clone();
            let secrets = accounts.secrets.clone();
            let stored = accounts
                .update(&id, move |a| {
                    a.access_token = secrets.encrypt(&t.access_token);
                    if let Some(r) = t.refresh_token.filter(|r| !r.is_empty()) {
                        a.refresh_token = secrets.encrypt(&r);
                    }
                    a.expires_at = Utc::now().timestamp_millis()
                        + t.expires_in.unwrap_or(default_lifetime) * 1000;
                    if let Some(s) = t.scope {
                        a.scopes = s;
                    }
                    if let Some(o) = t.organization_id.filter(|o| !o.is_empty()) {
                        a.organization_id = o;
                    }
                    a.last_refresh_at = Some(Utc::now());
                    if matches!(
                        a.status,
                        AccountStatus::RefreshFailed | AccountStatus::Unauthorized
                    ) {
                        a.status = AccountStatus::Active;
                        a.error_message.clear();
                    }
                    Ok(true)
                })
                .await?;
            if stored.is_none() {
                bail!("account disappeared during refresh");
            }
            tracing::info!(account_id = %acc.rec.id, account = %acc.rec.name, "OAuth access token refreshed");
            Ok(Secret(access))
        }
        Err(e) => {
            tracing::error!(account_id = %acc.rec.id, account = %acc.rec.name, error = %e, "ALERT: OAuth token refresh failed; account taken out of rotation");
            accounts.mark_status(
                id,
                AccountStatus::RefreshFailed,
                format!("token refresh failed: {e}"),
            );
            Err(e)
        }
    }
}

/// The access token to send for `acc`, refreshed first when it is about to expire.
pub async fn fresh_access_token(accounts: &Arc<Accounts>, acc: &AccountRt) -> Result<Secret> {
    let now = Utc::now().timestamp_millis();
    if Grant::of(acc.rec.platform).is_none()
        || acc.rec.expires_at == 0
        || acc.rec.expires_at - now > MUST_REFRESH_MS
    {
        return Ok(acc.credential.secret.clone());
    }
    if acc.rec.refresh_token.is_empty() {
        if acc.rec.expires_at <= now {
            bail!("the OAuth token expired and the account has no refresh token");
        }
        return Ok(acc.credential.secret.clone());
    }
    let lock = accounts.oauth.lock_for(&acc.rec.id);
    let _g = lock.lock().await;
    // Someone may have refreshed while we waited.
    let latest = accounts.load().by_id.get(&acc.rec.id).cloned();
    if let Some(a) = &latest
        && a.rec.expires_at - Utc::now().timestamp_millis() > MUST_REFRESH_MS
    {
        return Ok(a.credential.secret.clone());
    }
    refresh(accounts, latest.as_deref().unwrap_or(acc)).await
}

/// Refresh `acc`'s token now, single flight with every other refresh of the account (the
/// background refresher, a request's retry after a 401, the admin's button, recovery). When
/// another refresh stored a new token while this one waited for the lock, that token is the
/// answer and no second refresh is made.
pub async fn refresh_now(accounts: &Arc<Accounts>, acc: &AccountRt) -> Result<Secret> {
    let lock = accounts.oauth.lock_for(&acc.rec.id);
    let _g = lock.lock().await;
    if let Some(latest) = accounts.load().by_id.get(&acc.rec.id)
        && latest.rec.access_token != acc.rec.access_token
    {
        return Ok(latest.credential.secret.clone());
    }
    refresh(accounts, acc).await
}

/// Refresh tokens ahead of expiry in the background (every minute) so requests never wait.
pub fn spawn_refresher(accounts: &Arc<Accounts>) {
    let weak: Weak<Accounts> = Arc::downgrade(accounts);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            let Some(accounts) = weak.upgrade() else {
                return;
            };
            let now = Utc::now().timestamp_millis();
            let due: Vec<Arc<AccountRt>> = accounts
                .load()
                .accounts
                .iter()
                .filter(|a| {
                    Grant::of(a.rec.platform).is_some()
                        && a.rec.is_active
                        && !a.rec.refresh_token.is_empty()
                        && a.rec.expires_at > 0
                        && a.rec.expires_at - now < REFRESH_AHEAD_MS
                        && a.rec.status != AccountStatus::RefreshFailed
                })
                .cloned()
                .collect();
            for a in due {
                let _ = refresh_now(&accounts, &a).await;
            }
        }
    });
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

//! OAuth accounts (Claude subscriptions, ChatGPT through Codex CLI's client, Gemini's Google
//! login, Droid's Factory login through WorkOS): the PKCE authorisation flow
//! an admin goes through once (open the URL, paste the code), Claude setup tokens, and
//! access-token refresh ahead of expiry through the account's proxy, with each platform's
//! token endpoint (`refresh_grant`). A failed refresh marks the account (`refresh_failed`) and is
//! logged as an error, so it shows on the dashboard instead of failing requests silently.

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
use crate::providers::chatgpt;
use crate::providers::codeassist::oauth as google;
use crate::providers::droid::{WORKOS_CLIENT_ID, WORKOS_TOKEN_PATH};

/// Lifetime v1 assumes when WorkOS names none (droidAccountService.js `tokenValidHours`).
const WORKOS_DEFAULT_LIFETIME_S: i64 = 8 * 3600;
use crate::providers::encode_segment as enc;

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
    platform: Platform,
}

/// OAuth state held in memory: the endpoints, authorisation sessions (10 minutes) and
/// per-account refresh locks (so concurrent requests refresh once).
pub struct OAuthState {
    authorize_url: String,
    token_url: String,
    gemini_authorize_url: String,
    gemini_token_url: String,
    /// The Code Assist base for Gemini OAuth accounts without a URL of their own.
    pub code_assist_url: String,
    /// Between polls of an `onboardUser` operation.
    pub onboard_poll: Duration,
    /// OpenAI's auth server (`/oauth/authorize`, `/oauth/token`).
    openai_base: String,
    /// WorkOS, Factory's identity provider (Droid accounts).
    workos_url: String,
    deadline: Duration,
    /// Droid device authorisations in progress (`workos`).
    devices: moka::sync::Cache<String, super::workos::DeviceSession>,
    pending: moka::sync::Cache<String, PendingAuth>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl OAuthState {
    pub fn new(config: &Config) -> Self {
        OAuthState {
            authorize_url: config.claude_oauth_authorize_url.clone(),
            token_url: config.claude_oauth_token_url.clone(),
            gemini_authorize_url: config.gemini_oauth_authorize_url.clone(),
            gemini_token_url: config.gemini_oauth_token_url.clone(),
            code_assist_url: config.gemini_code_assist_url.clone(),
            onboard_poll: config.gemini_onboard_poll,
            openai_base: config
                .openai_oauth_base_url
                .trim_end_matches('/')
                .to_owned(),
            workos_url: config.droid_workos_url.trim_end_matches('/').to_owned(),
            deadline: config.oauth_timeout,
            devices: super::workos::sessions(),
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
            platform: Platform::Claude,
        },
    );
    (url, session)
}

/// The Google authorisation URL for a Gemini OAuth account (v1 `generateAuthUrl`: the Gemini
/// CLI's client, offline access, PKCE S256, `prompt=select_account`), and the session.
pub fn start_gemini_authorisation(oauth: &OAuthState, proxy_url: String) -> (String, String) {
    let (verifier, challenge) = pkce();
    let state_param = hex::encode(random_bytes::<32>());
    let session = uuid::Uuid::new_v4().to_string();
    let url = format!(
        "{}?access_type=offline&scope={}&code_challenge_method=S256&code_challenge={challenge}&state={state_param}&prompt=select_account&response_type=code&client_id={}&redirect_uri={}",
        oauth.gemini_authorize_url,
        enc(google::SCOPES),
        enc(google::CLIENT_ID),
        enc(google::REDIRECT_URI)
    );
    oauth.pending.insert(
        session.clone(),
        PendingAuth {
            verifier,
            state: state_param,
            setup: false,
            proxy_url,
            platform: Platform::Gemini,
        },
    );
    (url, session)
}

/// The authorisation URL for a ChatGPT account: OpenAI's, with Codex CLI's client, as v1
/// builds it (v1 src/routes/admin/openaiAccounts.js `generate-auth-url`), and the session.
pub fn start_openai_authorisation(oauth: &OAuthState, proxy_url: String) -> (String, String) {
    let (verifier, challenge) = pkce();
    let state_param = B64URL.encode(random_bytes::<32>());
    let session = uuid::Uuid::new_v4().to_string();
    let url = format!(
        "{}/oauth/authorize?{}",
        oauth.openai_base,
        form_body(&json!({
            "response_type": "code",
            "client_id": chatgpt::CLIENT_ID,
            "redirect_uri": chatgpt::REDIRECT_URI,
            "scope": chatgpt::SCOPE,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": state_param,
            "id_token_add_organizations": "true",
            "codex_cli_simplified_flow": "true",
        }))
    );
    oauth.pending.insert(
        session.clone(),
        PendingAuth {
            verifier,
            state: state_param,
            setup: false,
            proxy_url,
            platform: Platform::OpenAI,
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
    /// OpenAI's answers carry an id token with the ChatGPT account's claims.
    #[serde(default)]
    id_token: Option<String>,
    /// WorkOS names the organisation the token is for.
    #[serde(default)]
    organization_id: Option<String>,
}

/// One call of a platform's token endpoint: where, what, and in which encoding.
struct Grant {
    url: String,
    body: Value,
    /// `application/x-www-form-urlencoded` (Google) rather than JSON (Anthropic).
    form: bool,
    user_agent: &'static str,
    /// The token lifetime to assume when the answer names none.
    default_lifetime_s: i64,
}

impl Grant {
    fn claude(oauth: &OAuthState, body: Value) -> Grant {
        Grant {
            url: oauth.token_url.clone(),
            body,
            form: false,
            user_agent: "claude-cli/2.0.0 (external, cli)",
            default_lifetime_s: 3600,
        }
    }

    /// OpenAI's token endpoint takes a form (v1 openaiAccountService.js `refreshAccessToken`).
    fn openai(oauth: &OAuthState, body: Value) -> Grant {
        Grant {
            url: format!("{}/oauth/token", oauth.openai_base),
            body,
            form: true,
            user_agent: chatgpt::CODEX_USER_AGENT,
            default_lifetime_s: 3600,
        }
    }

    /// Google's token endpoint takes the client's id and (public) secret in a form
    /// (google-auth-library, which v1 uses).
    fn google(oauth: &OAuthState, mut body: Value) -> Grant {
        body["client_id"] = json!(google::CLIENT_ID);
        body["client_secret"] = json!(google::CLIENT_SECRET);
        Grant {
            url: oauth.gemini_token_url.clone(),
            body,
            form: true,
            user_agent: "google-api-nodejs-client/9.15.1",
            default_lifetime_s: 3600,
        }
    }
}

/// The refresh grant of `platform`'s token endpoint.
fn refresh_grant(
    oauth: &OAuthState,
    platform: Platform,
    refresh_token: &str,
    organization_id: &str,
) -> Result<Grant> {
    let body = json!({"grant_type": "refresh_token", "refresh_token": refresh_token});
    match platform {
        Platform::Claude => {
            let mut body = body;
            body["client_id"] = json!(CLIENT_ID);
            Ok(Grant::claude(oauth, body))
        }
        Platform::Gemini => Ok(Grant::google(oauth, body)),
        // WorkOS (Droid): a form with Factory's client id and the account's organisation, as
        // v1's `_refreshTokensWithWorkOS` sends it.
        Platform::Droid => {
            let mut body = body;
            body["client_id"] = json!(WORKOS_CLIENT_ID);
            if !organization_id.is_empty() {
                body["organization_id"] = json!(organization_id);
            }
            Ok(Grant {
                url: format!("{}{WORKOS_TOKEN_PATH}", oauth.workos_url),
                body,
                form: true,
                user_agent: "factory-cli/0.19.12",
                default_lifetime_s: WORKOS_DEFAULT_LIFETIME_S,
            })
        }
        Platform::OpenAI => {
            let mut body = body;
            body["client_id"] = json!(chatgpt::CLIENT_ID);
            body["scope"] = json!(chatgpt::REFRESH_SCOPE);
            Ok(Grant::openai(oauth, body))
        }
        p => bail!("{} accounts have no OAuth token refresh", p.as_str()),
    }
}

/// `k=v&...` of a JSON object's string values, encoded.
fn form_body(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{}={}", enc(k), enc(v.as_str().unwrap_or_default())))
                .collect::<Vec<_>>()
                .join("&")
        })
        .unwrap_or_default()
}

/// A token endpoint call, within `deadline` (`oauth_timeout`: the call runs under the
/// account's refresh lock, and requests for the account wait on it).
async fn token_call(
    client: &reqwest::Client,
    grant: Grant,
    deadline: Duration,
) -> Result<TokenResponse> {
    tokio::time::timeout(deadline, token_call_once(client, grant))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "token endpoint did not answer within {} s",
                deadline.as_secs()
            )
        })?
}

async fn token_call_once(client: &reqwest::Client, grant: Grant) -> Result<TokenResponse> {
    let rb = client
        .post(&grant.url)
        .header("user-agent", grant.user_agent);
    let rb = if grant.form {
        rb.header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&grant.body))
    } else {
        rb.json(&grant.body)
    };
    let r = rb.send().await.context("token endpoint unreachable")?;
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    if !status.is_success() {
        let msg = crate::providers::error_message(text.as_bytes())
            .or_else(|| {
                // OAuth's own error body: {"error": "invalid_grant", "error_description"}.
                let v: Value = serde_json::from_str(&text).ok()?;
                let e = v.get("error")?.as_str()?;
                let d = v.get("error_description").and_then(Value::as_str);
                Some(d.map_or_else(|| e.to_owned(), |d| format!("{e}: {d}")))
            })
            .unwrap_or_else(|| text.chars().take(200).collect());
        bail!("token endpoint answered {}: {msg}", status.as_u16());
    }
    serde_json::from_str(&text).context("token endpoint answered with an unexpected body")
}

/// Exchange a ChatGPT authorisation code (or the whole callback URL) for tokens, answered as
/// v1 answers `POST /admin/openai-accounts/exchange-code`: `tokens` (`idToken`,
/// `accessToken`, `refreshToken`, `expires_in`) and `accountInfo` from the id token's claims.
pub async fn exchange_openai(
    accounts: &Accounts,
    session: &str,
    code_input: &str,
) -> Result<Value> {
    let p = pending(accounts, session, Platform::OpenAI)?;
    let (code, state_param) =
        parse_code(code_input).context("no authorisation code found in the input")?;
    if state_param.as_ref().is_some_and(|s| *s != p.state) {
        bail!("the callback URL belongs to another authorisation; generate a new URL");
    }
    let client = accounts.http.get(&p.proxy_url)?;
    let body = json!({
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": chatgpt::REDIRECT_URI,
        "client_id": chatgpt::CLIENT_ID,
        "code_verifier": p.verifier,
    });
    let t = token_call(
        client.first(),
        Grant::openai(&accounts.oauth, body),
        accounts.oauth.deadline,
    )
    .await?;
    accounts.oauth.pending.invalidate(session);
    let id_token = t.id_token.unwrap_or_default();
    let c = chatgpt::id_claims(&id_token).context("the token endpoint sent no usable id token")?;
    Ok(json!({
        "tokens": {
            "idToken": id_token,
            "accessToken": t.access_token,
            "refreshToken": t.refresh_token.unwrap_or_default(),
            "expires_in": t.expires_in,
        },
        "accountInfo": {
            "accountId": c.account_id,
            "chatgptUserId": c.user_id,
            "organizationId": c.organization_id,
            "organizationRole": c.organization_role,
            "organizationTitle": c.organization_title,
            "planType": c.plan_type,
            "email": c.email,
            "name": c.name,
            "emailVerified": c.email_verified,
            "organizations": c.organizations,
        },
    }))
}

/// A ChatGPT account's facts from its id token, under v1's field names (empty claims leave
/// what the account has).
pub fn set_account_info(
    a: &mut crate::model::Account,
    c: &chatgpt::IdClaims,
    secrets: &crate::crypto::Secrets,
) {
    for (k, v) in [
        ("accountId", &c.account_id),
        ("chatgptUserId", &c.user_id),
        ("organizationId", &c.organization_id),
        ("organizationRole", &c.organization_role),
        ("organizationTitle", &c.organization_title),
        ("planType", &c.plan_type),
    ] {
        if !v.is_empty() {
            a.extra.insert(k.into(), json!(v));
        }
    }
    if !c.email.is_empty() {
        a.email = secrets.encrypt(&c.email);
        a.extra
            .insert("emailVerified".into(), json!(c.email_verified.to_string()));
    }
}

/// Exchange an authorisation code for tokens, as v1's `claudeAiOauth` object.
pub async fn exchange(accounts: &Accounts, session: &str, code_input: &str) -> Result<Value> {
    let p = pending(accounts, session, Platform::Claude)?;
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
        client.first(),
        Grant::claude(&accounts.oauth, body),
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

fn pending(accounts: &Accounts, session: &str, platform: Platform) -> Result<PendingAuth> {
    accounts
        .oauth
        .pending
        .get(session)
        .filter(|p| p.platform == platform)
        .context("the authorisation session expired or is unknown; generate a new URL")
}

/// Exchange a Google authorisation code for a Gemini OAuth account's tokens, as v1's token
/// object (`geminiOauth`: `access_token`, `refresh_token`, `scope`, `token_type`,
/// `expiry_date` in unix ms; v1 `exchangeCodeForTokens`).
pub async fn exchange_gemini(
    accounts: &Accounts,
    session: &str,
    code_input: &str,
) -> Result<Value> {
    let p = pending(accounts, session, Platform::Gemini)?;
    let (code, _) = parse_code(code_input).context("no authorisation code found in the input")?;
    let client = accounts.http.get(&p.proxy_url)?;
    let body = json!({
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": google::REDIRECT_URI,
        "code_verifier": p.verifier,
    });
    let t = token_call(
        client.first(),
        Grant::google(&accounts.oauth, body),
        accounts.oauth.deadline,
    )
    .await?;
    accounts.oauth.pending.invalidate(session);
    Ok(json!({
        "access_token": t.access_token,
        "refresh_token": t.refresh_token.unwrap_or_default(),
        "scope": t.scope.unwrap_or_else(|| google::SCOPES.into()),
        "token_type": "Bearer",
        "expiry_date": Utc::now().timestamp_millis() + t.expires_in.unwrap_or(3600) * 1000,
    }))
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
    let grant = refresh_grant(
        &accounts.oauth,
        acc.rec.platform,
        &rt,
        &acc.rec.organization_id,
    )?;
    let default_lifetime = grant.default_lifetime_s;
    let outcome = token_call(acc.client.first(), grant, accounts.oauth.deadline).await;
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
                    if let Some(o) = t.organization_id.filter(|o| !o.is_empty()) {
                        a.organization_id = o;
                    }
                    if let Some(s) = t.scope {
                        a.scopes = s;
                    }
                    // ChatGPT: the id token and the account facts it carries, under v1's names.
                    if let Some(id) = t.id_token.as_deref().filter(|s| !s.is_empty()) {
                        a.extra.insert("idToken".into(), json!(secrets.encrypt(id)));
                        if let Some(c) = chatgpt::id_claims(id) {
                            set_account_info(a, &c, &secrets);
                        }
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
    if !acc.kind().oauth() || acc.rec.expires_at == 0 || acc.rec.expires_at - now > MUST_REFRESH_MS
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
                    a.kind().oauth()
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

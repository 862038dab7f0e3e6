//! Droid's authorisation flow: WorkOS's device code grant, as v1 runs it
//! (src/utils/workosOAuthHelper.js, src/routes/admin/droidAccounts.js): `start` asks WorkOS
//! for a device code and a user code the admin confirms in a browser; `poll` asks for the
//! tokens, which arrive once the admin approved (`authorization_pending` / `slow_down` until
//! then, `expired_token` when the code lapsed). Sessions live in memory for the code's
//! lifetime. The tokens are refreshed afterwards by `oauth` (`Grant::WorkOs`).

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use super::Accounts;
use crate::providers::droid::{WORKOS_CLIENT_ID, WORKOS_TOKEN_PATH};

/// WorkOS's device authorisation endpoint (v1 workosOAuthHelper.js).
pub const WORKOS_DEVICE_PATH: &str = "/user_management/authorize/device";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// A device authorisation in progress.
#[derive(Clone)]
pub struct DeviceSession {
    device_code: String,
    proxy_url: String,
    pub interval: u64,
    pub expires_at_ms: i64,
}

/// What a start gives the admin (v1's field names).
#[derive(Debug)]
pub struct Started {
    pub session_id: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: u64,
    pub interval: u64,
}

/// A poll that did not produce tokens.
#[derive(Debug)]
pub enum PollError {
    /// Not approved yet (`authorization_pending`, `slow_down`): ask again after `retry_after`.
    Pending {
        code: String,
        retry_after: u64,
    },
    /// The code or the session lapsed.
    Expired,
    /// No such session.
    Unknown,
    Failed(String),
}

async fn form_post(
    accounts: &Accounts,
    proxy_url: &str,
    path: &str,
    pairs: &[(&str, &str)],
) -> Result<(u16, Value)> {
    let client = accounts.http.get(proxy_url)?;
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", crate::providers::encode_segment(v)))
        .collect();
    let send = client
        .first()
        .post(format!("{}{path}", accounts.oauth.workos_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"))
        .send();
    let r = tokio::time::timeout(accounts.oauth.deadline(), send)
        .await
        .map_err(|_| anyhow::anyhow!("WorkOS did not answer in time"))?
        .context("WorkOS unreachable")?;
    let status = r.status().as_u16();
    let text = r.text().await.unwrap_or_default();
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Ask WorkOS for a device code (through `proxy_url` when set).
pub async fn start(accounts: &Accounts, proxy_url: String) -> Result<Started> {
    let (status, v) = form_post(
        accounts,
        &proxy_url,
        WORKOS_DEVICE_PATH,
        &[("client_id", WORKOS_CLIENT_ID)],
    )
    .await?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    if !(200..300).contains(&status)
        || s("device_code").is_empty()
        || s("verification_uri").is_empty()
    {
        let msg = v
            .get("error_description")
            .or_else(|| v.get("error"))
            .and_then(Value::as_str)
            .unwrap_or("WorkOS answered without a device code");
        anyhow::bail!("WorkOS device authorisation failed ({status}): {msg}");
    }
    let expires_in = v.get("expires_in").and_then(Value::as_u64).unwrap_or(300);
    let interval = v.get("interval").and_then(Value::as_u64).unwrap_or(5);
    let session_id = uuid::Uuid::new_v4().to_string();
    accounts.oauth.devices().insert(
        session_id.clone(),
        DeviceSession {
            device_code: s("device_code"),
            proxy_url,
            interval,
            expires_at_ms: chrono::Utc::now().timestamp_millis() + expires_in as i64 * 1000,
        },
    );
    let uri = s("verification_uri");
    let complete = Some(s("verification_uri_complete"))
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| uri.clone());
    Ok(Started {
        session_id,
        user_code: s("user_code"),
        verification_uri: uri,
        verification_uri_complete: complete,
        expires_in,
        interval,
    })
}

/// Ask WorkOS for the tokens of session `id`: WorkOS's token answer (access_token,
/// refresh_token, user, organization_id, ...) once the admin approved.
pub async fn poll(accounts: &Accounts, id: &str) -> Result<Value, PollError> {
    let Some(s) = accounts.oauth.devices().get(id) else {
        return Err(PollError::Unknown);
    };
    if chrono::Utc::now().timestamp_millis() > s.expires_at_ms {
        accounts.oauth.devices().invalidate(id);
        return Err(PollError::Expired);
    }
    let (status, v) = form_post(
        accounts,
        &s.proxy_url,
        WORKOS_TOKEN_PATH,
        &[
            ("grant_type", DEVICE_GRANT),
            ("device_code", &s.device_code),
            ("client_id", WORKOS_CLIENT_ID),
        ],
    )
    .await
    .map_err(|e| PollError::Failed(e.to_string()))?;
    if (200..300).contains(&status) && v.get("access_token").is_some_and(Value::is_string) {
        accounts.oauth.devices().invalidate(id);
        return Ok(v);
    }
    let code = v
        .get("error")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("http_{status}"));
    match code.as_str() {
        "authorization_pending" | "slow_down" => Err(PollError::Pending {
            retry_after: v
                .get("interval")
                .and_then(Value::as_u64)
                .unwrap_or(s.interval),
            code,
        }),
        "expired_token" => {
            accounts.oauth.devices().invalidate(id);
            Err(PollError::Expired)
        }
        _ => Err(PollError::Failed(
            v.get("error_description")
                .and_then(Value::as_str)
                .unwrap_or(&code)
                .to_owned(),
        )),
    }
}

/// Device sessions: at most this many at once, each for at most 30 minutes.
pub fn sessions() -> moka::sync::Cache<String, DeviceSession> {
    moka::sync::Cache::builder()
        .max_capacity(1000)
        .time_to_live(Duration::from_secs(1800))
        .build()
}

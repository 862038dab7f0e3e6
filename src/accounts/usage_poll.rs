//! Polls the subscription usage windows of Claude OAuth accounts (`windows`):
//! `GET {base}/api/oauth/usage` with the account's fresh access token and
//! `anthropic-beta: oauth-2025-04-20`, through the account's own client (its proxy), as v1
//! does (`claudeAccountService.fetchOAuthUsage`). Once at start for every active OAuth account,
//! then every `usage_poll` for those used in the last hour, and on demand from the admin API.
//! A failed poll keeps the last readings and records the error.

use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::Utc;

use super::{AccountRt, Accounts, oauth};
use crate::model::{AccountStatus, Platform};
use crate::providers::anthropic::OFFICIAL_BASE;

/// v1 gives the usage endpoint 15 s.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Accounts used within this long are polled on schedule.
const IN_USE_MS: i64 = 3600 * 1000;

/// Does `acc` have usage windows to poll? Claude OAuth accounts that are active. Setup tokens
/// (scope `user:inference` only) are refused by the endpoint (v1 skips accounts without
/// `user:profile`); tokens pasted without scopes are tried.
pub fn pollable(acc: &AccountRt) -> bool {
    acc.rec.platform == Platform::Claude
        && acc.rec.is_active
        && acc.rec.status == AccountStatus::Active
        && !acc.rec.access_token.is_empty()
        && (acc.rec.scopes.is_empty() || acc.rec.scopes.split(' ').any(|s| s == "user:profile"))
}

/// The usage URL for an account's API base.
pub fn usage_url(api_url: &str) -> String {
    let base = if api_url.is_empty() {
        OFFICIAL_BASE
    } else {
        api_url
    };
    format!("{}/api/oauth/usage", base.trim_end_matches('/'))
}

async fn fetch(accounts: &Arc<Accounts>, acc: &AccountRt) -> Result<Vec<u8>, String> {
    let token = oauth::fresh_access_token(accounts, acc)
        .await
        .map_err(|e| format!("no access token: {e}"))?;
    let send = acc
        .client
        .first()
        .get(usage_url(&acc.rec.api_url))
        .bearer_auth(&token.0)
        .header("anthropic-beta", "oauth-2025-04-20")
        .header("accept", "application/json")
        .header("user-agent", "claude-cli/2.0.53 (external, cli)")
        .send();
    let r = tokio::time::timeout(TIMEOUT, send)
        .await
        .map_err(|_| format!("no answer within {} s", TIMEOUT.as_secs()))?
        .map_err(|e| format!("request failed: {e}"))?;
    let status = r.status().as_u16();
    let body = tokio::time::timeout(TIMEOUT, r.bytes())
        .await
        .map_err(|_| "the answer did not arrive in time".to_owned())?
        .map_err(|e| format!("reading the answer failed: {e}"))?;
    if status != 200 {
        let msg = crate::providers::error_message(&body)
            .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into());
        return Err(format!("usage endpoint answered {status}: {msg}"));
    }
    Ok(body.to_vec())
}

/// Poll `acc` now and store the readings, or the error.
pub async fn poll(accounts: &Arc<Accounts>, acc: &AccountRt) -> Result<(), String> {
    let outcome = fetch(accounts, acc).await.and_then(|body| {
        super::windows::from_usage_body(&body)
            .ok_or_else(|| "the usage endpoint answered with an unexpected body".to_owned())
    });
    match outcome {
        Ok(readings) => {
            acc.rt
                .windows
                .set_polled(readings, Utc::now().timestamp_millis());
            tracing::debug!(account_id = %acc.rec.id, "usage windows polled");
            Ok(())
        }
        Err(e) => {
            tracing::warn!(account_id = %acc.rec.id, account = %acc.rec.name, error = %e, "polling the usage windows failed");
            acc.rt.windows.set_poll_error(e.clone());
            Err(e)
        }
    }
}

/// Poll every account in `accs`, a few at a time.
pub async fn poll_all(accounts: &Arc<Accounts>, accs: Vec<Arc<AccountRt>>) {
    use futures_util::StreamExt;
    futures_util::stream::iter(accs)
        .for_each_concurrent(4, |a| {
            let accounts = accounts.clone();
            async move {
                let _ = poll(&accounts, &a).await;
            }
        })
        .await;
}

/// Accounts due for a scheduled poll at `now_ms`: pollable, used within the last hour (or all
/// of them on the first round).
pub fn due(accounts: &Accounts, now_ms: i64, first: bool) -> Vec<Arc<AccountRt>> {
    accounts
        .load()
        .accounts
        .iter()
        .filter(|a| pollable(a))
        .filter(|a| {
            first
                || now_ms - a.rt.last_used_ms.load(std::sync::atomic::Ordering::Relaxed) < IN_USE_MS
        })
        .cloned()
        .collect()
}

/// Poll in the background every `every` (never when zero) while `accounts` lives.
pub fn spawn(accounts: &Arc<Accounts>, every: Duration) {
    if every.is_zero() {
        return;
    }
    let weak: Weak<Accounts> = Arc::downgrade(accounts);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut first = true;
        loop {
            tick.tick().await;
            let Some(accounts) = weak.upgrade() else {
                return;
            };
            let accs = due(&accounts, Utc::now().timestamp_millis(), first);
            first = false;
            poll_all(&accounts, accs).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url() {
        assert_eq!(usage_url(""), "https://api.anthropic.com/api/oauth/usage");
        assert_eq!(
            usage_url("http://127.0.0.1:9/"),
            "http://127.0.0.1:9/api/oauth/usage"
        );
    }
}

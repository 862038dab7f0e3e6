//! Gemini OAuth accounts' Google Cloud project, found as v1 finds it (v1
//! src/handlers/geminiHandlers.js `handleGenerateContent`, src/services/geminiAccountService.js
//! `loadCodeAssist`, `onboardUser`, `setupUser`): an account without a configured `projectId`
//! or a remembered `tempProjectId` asks Code Assist's `loadCodeAssist`; when that names no
//! project, `onboardUser` (a long-running operation, asked again until `done`) creates one.
//! The project found is kept on the account as `tempProjectId`.

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{AccountRt, Accounts};
use crate::crypto::Secret;
use crate::providers::codeassist::{self, Method, account_project, client_metadata, onboard_tier};

/// v1 asks an unfinished `onboardUser` again at most 12 times.
const ONBOARD_POLLS: u32 = 12;

/// The account to build the request with when it is not `acc` itself: `None` when `acc` has
/// a project, else the account as stored after onboarding found one. Single flight per
/// account.
pub async fn ensure_project(
    accounts: &Arc<Accounts>,
    acc: &AccountRt,
    token: &Secret,
) -> Result<Option<Arc<AccountRt>>> {
    if account_project(&acc.rec).is_some() {
        return Ok(None);
    }
    let lock = accounts.oauth.lock_for(&format!("{}:project", acc.rec.id));
    let _g = lock.lock().await;
    if let Some(latest) = accounts.load().by_id.get(&acc.rec.id)
        && account_project(&latest.rec).is_some()
    {
        return Ok(Some(latest.clone()));
    }
    let project = discover(accounts, acc, token).await.with_context(|| {
        format!(
            "finding the Google Cloud project of account {}",
            acc.rec.name
        )
    })?;
    tracing::info!(account_id = %acc.rec.id, project = %project, "Gemini account onboarded to Code Assist");
    let p = project.clone();
    accounts
        .update(&acc.rec.id, move |a| {
            a.extra.insert("tempProjectId".into(), json!(p));
            Ok(true)
        })
        .await?;
    let latest = accounts.load().by_id.get(&acc.rec.id).cloned();
    latest
        .context("account disappeared during onboarding")
        .map(Some)
}

/// Where a Gemini OAuth account's Code Assist calls go: its own URL, else the deployment's.
pub fn base<'a>(accounts: &'a Accounts, rec: &'a crate::model::Account) -> &'a str {
    if rec.api_url.is_empty() {
        &accounts.oauth.code_assist_url
    } else {
        &rec.api_url
    }
}

async fn discover(accounts: &Accounts, acc: &AccountRt, token: &Secret) -> Result<String> {
    let base = base(accounts, &acc.rec);
    let call = |method: Method, body: Value| {
        let url = codeassist::url(base, method);
        let rb = acc
            .client
            .first()
            .post(url)
            .bearer_auth(&token.0)
            .header("content-type", "application/json")
            .body(body.to_string());
        async move {
            let r = rb.send().await.context("Code Assist unreachable")?;
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            if !(200..300).contains(&status) {
                let msg = crate::providers::error_message(text.as_bytes())
                    .unwrap_or_else(|| text.chars().take(200).collect());
                bail!("{} answered {status}: {msg}", method.as_str());
            }
            serde_json::from_str::<Value>(&text)
                .with_context(|| format!("{} answered with an unexpected body", method.as_str()))
        }
    };
    let load = call(
        Method::LoadCodeAssist,
        json!({"metadata": client_metadata(None)}),
    )
    .await?;
    if let Some(p) = load
        .get("cloudaicompanionProject")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    {
        return Ok(p.to_owned());
    }
    let req = json!({"tierId": onboard_tier(&load), "metadata": client_metadata(None)});
    let mut op = call(Method::OnboardUser, req.clone()).await?;
    let mut polls = 0;
    while op.get("done").and_then(Value::as_bool) != Some(true) {
        if polls == ONBOARD_POLLS {
            bail!("onboardUser did not finish");
        }
        polls += 1;
        tokio::time::sleep(accounts.oauth.onboard_poll).await;
        op = call(Method::OnboardUser, req.clone()).await?;
    }
    op.pointer("/response/cloudaicompanionProject/id")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .context("the account needs a Google Cloud project: set projectId")
}

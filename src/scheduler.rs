//! Account selection. Pure and in memory: reads the account snapshot, never the store.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::model::ApiKey;
use crate::state::{AccountRt, AppState};

#[derive(Debug)]
pub struct Pick {
    pub account: Arc<AccountRt>,
    /// The model name to send upstream (after the account's mapping).
    pub upstream_model: String,
}

#[derive(Debug, PartialEq, Eq)]
pub enum NoAccount {
    /// The key is bound to an account that cannot serve right now.
    BoundUnavailable(String),
    /// No shared account is active, schedulable and supports the model.
    NoneForModel(String),
}

impl NoAccount {
    pub fn message(&self) -> String {
        match self {
            NoAccount::BoundUnavailable(id) => {
                format!(
                    "The account bound to this API key ({id}) is unavailable or does not support the requested model"
                )
            }
            NoAccount::NoneForModel(m) => {
                format!("No available Claude accounts support the requested model: {m}")
            }
        }
    }
}

/// The upstream model for `model` on `acc`, or None if the account does not serve it.
/// An empty mapping serves every model unchanged; names match exactly, then case-insensitively.
pub fn map_model(acc: &AccountRt, model: &str) -> Option<String> {
    let m = &acc.rec.supported_models;
    if m.is_empty() {
        return Some(model.to_owned());
    }
    if let Some(to) = m.get(model) {
        return Some(to.clone());
    }
    m.iter()
        .find(|(from, _)| from.eq_ignore_ascii_case(model))
        .map(|(_, to)| to.clone())
}

fn usable(acc: &AccountRt) -> bool {
    acc.rec.is_active && acc.rec.schedulable
}

/// Pick an account for `key` and `model`: the key's binding if it has one, else the shared
/// pool by priority (lower first), round robin among equals. `exclude` lists accounts that
/// already failed this request.
pub fn pick(
    st: &AppState,
    key: &ApiKey,
    model: &str,
    exclude: &[String],
) -> Result<Pick, NoAccount> {
    let pool = st.accounts.load();
    if !key.claude_console_account_id.is_empty() {
        let id = &key.claude_console_account_id;
        return pool
            .by_id
            .get(id)
            .filter(|a| usable(a) && !exclude.contains(&a.rec.id))
            .and_then(|a| {
                map_model(a, model).map(|m| Pick {
                    account: a.clone(),
                    upstream_model: m,
                })
            })
            .ok_or_else(|| NoAccount::BoundUnavailable(id.clone()));
    }
    let mut best: Option<u32> = None;
    let mut candidates: Vec<(&Arc<AccountRt>, String)> = Vec::new();
    // `accounts` is sorted by priority: collect the first priority level that has candidates.
    for a in &pool.accounts {
        if let Some(p) = best
            && a.rec.priority != p
        {
            break;
        }
        if a.rec.account_type != "shared" || !usable(a) || exclude.contains(&a.rec.id) {
            continue;
        }
        if let Some(m) = map_model(a, model) {
            best = Some(a.rec.priority);
            candidates.push((a, m));
        }
    }
    if candidates.is_empty() {
        return Err(NoAccount::NoneForModel(model.to_owned()));
    }
    let i = st.rr.fetch_add(1, Ordering::Relaxed) % candidates.len();
    let (a, m) = candidates.swap_remove(i);
    Ok(Pick {
        account: a.clone(),
        upstream_model: m,
    })
}

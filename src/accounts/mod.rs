//! Upstream accounts at run time: the in-memory pool the scheduler reads, and per-account
//! state that outlives admin edits (cooldowns, concurrency, daily spend).

pub mod codeassist;
pub mod cooldown;
pub mod cron;
pub mod health;
pub mod key_pool;
pub mod oauth;
pub mod probe;
pub mod registry;
pub mod sticky;
pub mod usage_poll;
pub mod windows;
pub mod workos;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

pub use registry::Accounts;

use crate::limits::Gate;
use crate::model::{Account, AccountGroup, Platform};
use crate::providers::http::LaneTicket;
use crate::providers::{AccountType, ClientHeader, Credential, Outgoing, Upstream, account_type};

/// Per-account state kept across snapshot swaps (by account id).
#[derive(Debug)]
pub struct AccountRuntime {
    pub gate: ArcSwap<Gate>,
    /// Out of rotation until this instant (unix ms), for `cooldown_reason`.
    cooldown_until_ms: AtomicI64,
    cooldown_reason: Mutex<String>,
    cooldown_transient: AtomicBool,
    /// Per-model cooldowns: model -> until (unix ms).
    model_cooldowns: Mutex<HashMap<String, i64>>,
    /// (local day number, real cost that day in pico-dollars) for the daily quota.
    pub daily_cost: Mutex<(i32, crate::model::Picos)>,
    pub restored: AtomicBool,
    pub last_used_ms: AtomicI64,
    /// The subscription usage windows (Claude OAuth accounts: Anthropic's; ChatGPT accounts:
    /// the Codex backend's).
    pub windows: windows::Windows,
    /// The client identity (user agent, `x-stainless-*`) of the latest Claude Code request on
    /// an account that sends one identity for everyone (`useUnifiedUserAgent`).
    pub identity: Mutex<Option<Arc<[ClientHeader]>>>,
    /// The last account test results (`probe`), newest first.
    pub tests: probe::History,
    /// Droid API-key pools: the key each session uses.
    pub pool_sticky: key_pool::Sticky,
}

impl AccountRuntime {
    pub fn new(a: &Account) -> Self {
        AccountRuntime {
            gate: ArcSwap::from_pointee(Gate::new(a.max_concurrency, false, 0, 0)),
            cooldown_until_ms: AtomicI64::new(0),
            cooldown_reason: Mutex::new(String::new()),
            cooldown_transient: AtomicBool::new(false),
            model_cooldowns: Mutex::new(HashMap::new()),
            daily_cost: Mutex::new((0, 0)),
            restored: AtomicBool::new(false),
            last_used_ms: AtomicI64::new(a.last_used_at.map(|t| t.timestamp_millis()).unwrap_or(0)),
            windows: windows::Windows::default(),
            identity: Mutex::new(None),
            tests: probe::History::default(),
            pool_sticky: key_pool::Sticky::default(),
        }
    }

    pub fn update(&self, a: &Account) {
        if self.gate.load().limit != a.max_concurrency {
            self.gate
                .store(Arc::new(Gate::new(a.max_concurrency, false, 0, 0)));
        }
    }

    pub fn cooling(&self, now_ms: i64) -> bool {
        self.cooldown_until_ms.load(Ordering::Acquire) > now_ms
    }

    /// Is `model`, or the model family it belongs to (`windows::Family`), parked here?
    pub fn model_cooling(&self, model: &str, now_ms: i64) -> bool {
        let m = self.model_cooldowns.lock();
        if m.is_empty() {
            return false;
        }
        let parked = |k: &str| m.get(k).is_some_and(|t| *t > now_ms);
        parked(model) || windows::Family::of(model).is_some_and(|f| parked(f.cooldown_key()))
    }

    /// Take the account out of rotation until `until_ms` (extends, never shortens).
    /// `transient`: see `cooldown::Effect::Account`.
    pub fn cool_down(&self, until_ms: i64, reason: &str, transient: bool) {
        let prev = self.cooldown_until_ms.fetch_max(until_ms, Ordering::AcqRel);
        if until_ms > prev {
            *self.cooldown_reason.lock() = reason.to_owned();
            self.cooldown_transient.store(transient, Ordering::Release);
        }
    }

    /// Cooling down only for a transient reason (a 5xx, overload or network failure).
    pub fn transient_cooldown(&self, now_ms: i64) -> bool {
        self.cooling(now_ms) && self.cooldown_transient.load(Ordering::Acquire)
    }

    pub fn cool_model(&self, model: &str, until_ms: i64) {
        let mut m = self.model_cooldowns.lock();
        let e = m.entry(model.to_owned()).or_insert(0);
        *e = (*e).max(until_ms);
    }

    pub fn reset_cooldown(&self) {
        self.cooldown_until_ms.store(0, Ordering::Release);
        self.cooldown_reason.lock().clear();
        self.model_cooldowns.lock().clear();
    }

    /// (until unix ms, reason) while cooling down.
    pub fn cooldown(&self, now_ms: i64) -> Option<(i64, String)> {
        let until = self.cooldown_until_ms.load(Ordering::Acquire);
        (until > now_ms).then(|| (until, self.cooldown_reason.lock().clone()))
    }

    pub fn model_cooldowns(&self, now_ms: i64) -> Vec<(String, i64)> {
        self.model_cooldowns
            .lock()
            .iter()
            .filter(|(_, t)| **t > now_ms)
            .map(|(m, t)| (m.clone(), *t))
            .collect()
    }

    /// Count a request's real cost (pico-dollars, saturating) on local day `day`.
    pub fn add_cost(&self, day: i32, picos: crate::model::Picos) {
        let mut d = self.daily_cost.lock();
        if d.0 != day {
            *d = (day, 0);
        }
        d.1 = d.1.saturating_add(picos);
    }

    /// Real cost on local day `day`, in pico-dollars.
    pub fn cost_today(&self, day: i32) -> crate::model::Picos {
        let d = self.daily_cost.lock();
        if d.0 == day { d.1 } else { 0 }
    }

    /// Has the spend of `day` reached a daily quota configured in micro-dollars (0 = none)?
    pub fn quota_reached(&self, day: i32, quota_micros: crate::model::Micros) -> bool {
        quota_micros > 0 && self.cost_today(day) >= crate::model::micros_to_picos(quota_micros)
    }
}

/// An account ready for the request path: decrypted credentials, resolved endpoint, client.
pub struct AccountRt {
    pub rec: Account,
    /// The decrypted credential (the account type decides which fields make it).
    pub credential: Credential,
    /// The HTTP clients of the account's proxy (or the direct ones).
    pub client: Arc<crate::providers::http::Lanes>,
    pub rt: Arc<AccountRuntime>,
}

impl std::fmt::Debug for AccountRt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountRt")
            .field("id", &self.rec.id)
            .field("platform", &self.rec.platform)
            .field("name", &self.rec.name)
            .finish()
    }
}

impl AccountRt {
    /// The account type's implementation (request building, taps, usage).
    pub fn kind(&self) -> &'static dyn AccountType {
        account_type(self.rec.platform)
    }

    /// Statuses that keep an account out of rotation until an admin acts.
    pub fn needs_attention(&self) -> bool {
        self.rec.status.needs_attention()
    }
}

/// The upstream request for one attempt on `acc`: a fresh OAuth access token first where the
/// account type needs one (single-flight per account), then the type's own request; with the
/// ticket of the client lane it goes out on, to keep until its answer is read.
pub async fn upstream_request(
    accounts: &Arc<Accounts>,
    acc: &AccountRt,
    out: &Outgoing<'_>,
) -> anyhow::Result<(reqwest::RequestBuilder, LaneTicket)> {
    upstream_request_keyed(accounts, acc, out)
        .await
        .map(|b| (b.request, b.lane))
}

/// One attempt's upstream request, ready to send.
pub struct Built {
    pub request: reqwest::RequestBuilder,
    /// The id of the pool key it sends (Droid API-key pools), which the caller reports to
    /// `key_pool::reject` when the upstream refuses it.
    pub pool_key: Option<String>,
    /// Counts the request on its client lane until dropped: keep it until the answer is read.
    pub lane: LaneTicket,
}

/// `upstream_request`, and the id of the pool key it sends.
pub async fn upstream_request_keyed(
    accounts: &Arc<Accounts>,
    acc: &AccountRt,
    out: &Outgoing<'_>,
) -> anyhow::Result<Built> {
    let kind = acc.kind();
    acc.rt
        .last_used_ms
        .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
    let pooled = key_pool::pick(accounts, acc, out.session)?;
    // A refresh may also have changed the record (a ChatGPT account learns its account id
    // from the id token): then build from the record the new token was stored with.
    let (token, pool_key, refreshed) = match pooled {
        Some((id, key)) => (Some(key), Some(id), false),
        None if kind.oauth() => {
            let t = oauth::fresh_access_token(accounts, acc).await?;
            let refreshed = t.0 != acc.credential.secret.0;
            (Some(t), None, refreshed)
        }
        None => (None, None, false),
    };
    let identity = if crate::providers::claude::keeps_identity(&acc.rec) {
        if let Some(seen) = crate::providers::claude::identity_of(out.headers) {
            *acc.rt.identity.lock() = Some(seen.into());
        }
        acc.rt.identity.lock().clone()
    } else {
        None
    };
    let latest = refreshed
        .then(|| accounts.load().by_id.get(&acc.rec.id).cloned())
        .flatten();
    let current: &AccountRt = latest.as_deref().unwrap_or(acc);
    // Gemini OAuth: generation needs the account's Google Cloud project (found once, then kept).
    let onboarded = match (&token, out.op) {
        (Some(t), op) if current.rec.platform == Platform::Gemini && codeassist_project(op) => {
            codeassist::ensure_project(accounts, current, t).await?
        }
        _ => None,
    };
    let rec = onboarded.as_ref().map_or(&current.rec, |a| &a.rec);
    let (client, lane) = acc.client.take();
    let up = Upstream {
        rec,
        credential: &acc.credential,
        client: &client,
        token: token.as_ref(),
        identity: identity.as_deref(),
        endpoint: if rec.platform == Platform::Gemini {
            codeassist::base(accounts, rec)
        } else {
            ""
        },
    };
    Ok(Built {
        request: kind.build(&up, out)?,
        pool_key,
        lane,
    })
}

/// Does this request go to Code Assist with the account's project (generation)?
fn codeassist_project(op: crate::providers::Op) -> bool {
    use crate::providers::{Op, gemini};
    match op {
        Op::Gemini { method, .. } => method != gemini::Method::CountTokens,
        Op::CodeAssist { method } => method.generates(),
        _ => false,
    }
}

#[derive(Default, Debug)]
pub struct AccountPool {
    /// Sorted by (priority, name, id) so scheduling walks them in preference order.
    pub accounts: Vec<Arc<AccountRt>>,
    pub by_id: HashMap<String, Arc<AccountRt>>,
    pub groups: HashMap<String, AccountGroup>,
}

impl AccountPool {
    pub fn of_platform(&self, p: Platform) -> impl Iterator<Item = &Arc<AccountRt>> {
        self.accounts.iter().filter(move |a| a.rec.platform == p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daily_quota_compares_exact_spend_with_the_configured_micro_dollars() {
        let rt = AccountRuntime::new(&Account::default());
        // 1,000 requests of 0.4 micro-dollars: 400 micro-dollars, not 0 as rounded per request.
        for _ in 0..999 {
            rt.add_cost(7, 400_000);
        }
        assert_eq!(rt.cost_today(7), 399_600_000);
        assert!(!rt.quota_reached(7, 400));
        rt.add_cost(7, 400_000);
        assert!(rt.quota_reached(7, 400), "reached at exactly the quota");
        assert!(!rt.quota_reached(7, 0), "0 = no quota");
        assert!(!rt.quota_reached(8, 400), "a new day starts from zero");
        rt.add_cost(8, i64::MAX);
        rt.add_cost(8, 1);
        assert_eq!(rt.cost_today(8), i64::MAX, "saturates");
    }
}

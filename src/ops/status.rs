//! `crs status`: what a data directory holds, and the server running on it if there is one.
//! The same report comes from the store (offline) or from the server (`GET /admin/status`).

use std::collections::BTreeMap;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::model::{Account, ApiKey, picos_to_dollars};
use crate::store::{Counters, Store, Table};
use crate::usage::{Clock, bucket};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub data_dir: String,
    /// `None` when no server holds the data directory.
    pub server: Option<ServerInfo>,
    pub schema: u32,
    pub keys: KeyCounts,
    pub accounts: AccountCounts,
    pub today: UsageTotals,
    pub total: UsageTotals,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    pub pid: u32,
    pub url: String,
    pub version: String,
    pub uptime_secs: u64,
    /// Accounts out of rotation for now (a cooldown after an upstream error).
    pub cooling_down: usize,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyCounts {
    pub active: usize,
    pub disabled: usize,
    pub deleted: usize,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountCounts {
    pub total: usize,
    pub schedulable: usize,
    /// Accounts per status (`active`, `unauthorized`, `blocked`, ...).
    pub by_status: BTreeMap<String, usize>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageTotals {
    pub requests: u64,
    pub errors: u64,
    pub tokens: u64,
    /// Dollars (rounded for display).
    pub cost: f64,
}

impl UsageTotals {
    fn of(c: Option<Counters>) -> Self {
        let c = c.unwrap_or_default();
        UsageTotals {
            requests: c.requests,
            errors: c.errors,
            tokens: c.all_tokens(),
            cost: picos_to_dollars(c.real_cost_picos),
        }
    }
}

/// The report from the store (the caller adds `server`).
pub fn collect(store: &Store, clock: Clock, data_dir: &str) -> Result<Status> {
    let keys: Vec<ApiKey> = store.load_all(Table::ApiKeys)?;
    let accounts: Vec<Account> = store.load_all(Table::Accounts)?;
    let mut s = Status {
        data_dir: data_dir.to_owned(),
        schema: store.schema_version()?,
        ..Default::default()
    };
    for k in &keys {
        match (k.is_deleted, k.is_active) {
            (true, _) => s.keys.deleted += 1,
            (false, true) => s.keys.active += 1,
            (false, false) => s.keys.disabled += 1,
        }
    }
    s.accounts.total = accounts.len();
    for a in &accounts {
        *s.accounts
            .by_status
            .entry(a.status.as_str().to_owned())
            .or_default() += 1;
        s.accounts.schedulable += usize::from(a.is_active && a.schedulable);
    }
    let day = clock.periods(chrono::Utc::now()).day;
    let got = store.usage_get_many(&[
        bucket::global(&bucket::day(&day)),
        bucket::global(bucket::TOTAL),
    ])?;
    s.today = UsageTotals::of(got[0]);
    s.total = UsageTotals::of(got[1]);
    Ok(s)
}

pub fn render(s: &Status) -> String {
    let mut out = match &s.server {
        Some(r) => format!(
            "server     running: pid {}, {} (crs {}), up {}s, {} account(s) cooling down\n",
            r.pid, r.url, r.version, r.uptime_secs, r.cooling_down
        ),
        None => "server     not running\n".to_owned(),
    };
    out += &format!("data dir   {} (store schema {})\n", s.data_dir, s.schema);
    out += &format!(
        "keys       {} active, {} disabled, {} deleted\n",
        s.keys.active, s.keys.disabled, s.keys.deleted
    );
    let states: Vec<String> = s
        .accounts
        .by_status
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    out += &format!(
        "accounts   {} ({} schedulable){}\n",
        s.accounts.total,
        s.accounts.schedulable,
        if states.is_empty() {
            String::new()
        } else {
            format!(": {}", states.join(", "))
        }
    );
    for (name, u) in [("today", &s.today), ("all time", &s.total)] {
        out += &format!(
            "{name:<10} {} requests, {} errors, {} tokens, ${:.4}\n",
            u.requests, u.errors, u.tokens, u.cost
        );
    }
    out
}

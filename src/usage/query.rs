//! Reads of the usage buckets for APIs (not on the relay path).

use anyhow::Result;
use chrono::Utc;
use serde_json::{Value, json};

use super::{Clock, Counters, bucket};
use crate::model::picos_to_dollars;
use crate::store::Store;

/// All-time, today and this month, in the accounting time zone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageTotals {
    pub total: Counters,
    pub daily: Counters,
    pub monthly: Counters,
}

/// v1's per-period object: `tokens` is input+output+cache (v1's getUsageStats), and the cost
/// fields are crs additions.
pub fn counters_json(c: &Counters) -> Value {
    json!({
        "requests": c.requests,
        "tokens": c.all_tokens(),
        "inputTokens": c.input_tokens,
        "outputTokens": c.output_tokens,
        "cacheCreateTokens": c.cache_create_tokens,
        "cacheReadTokens": c.cache_read_tokens,
        "ephemeral5mTokens": c.ephemeral_5m_tokens,
        "ephemeral1hTokens": c.ephemeral_1h_tokens,
        "allTokens": c.all_tokens(),
        "cost": picos_to_dollars(c.rated_cost_picos),
        "realCost": picos_to_dollars(c.real_cost_picos),
        "errors": c.errors,
    })
}

impl UsageTotals {
    pub fn to_json(&self) -> Value {
        json!({
            "total": counters_json(&self.total),
            "daily": counters_json(&self.daily),
            "monthly": counters_json(&self.monthly),
        })
    }
}

fn totals(store: &Store, clock: &Clock, dim: impl Fn(&str) -> String) -> Result<UsageTotals> {
    let p = clock.periods(Utc::now());
    let keys = vec![
        dim(bucket::TOTAL),
        dim(&bucket::day(&p.day)),
        dim(&bucket::month(&p.month)),
    ];
    let got = store.usage_get_many(&keys)?;
    Ok(UsageTotals {
        total: got[0].unwrap_or_default(),
        daily: got[1].unwrap_or_default(),
        monthly: got[2].unwrap_or_default(),
    })
}

pub fn key_usage(store: &Store, clock: &Clock, key_id: &str) -> Result<UsageTotals> {
    totals(store, clock, |period| bucket::key(period, key_id))
}

pub fn account_usage(store: &Store, clock: &Clock, account_id: &str) -> Result<UsageTotals> {
    totals(store, clock, |period| bucket::account(period, account_id))
}

pub fn global_usage(store: &Store, clock: &Clock) -> Result<UsageTotals> {
    totals(store, clock, bucket::global)
}

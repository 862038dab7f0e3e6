//! Account selection. Pure and in memory: reads the account snapshot and sticky sessions,
//! never the store.
//!
//! Order: the key's binding (an account, or `group:{id}`), else the shared pool of the route's
//! platforms. Filters: active, schedulable, not needing attention, not cooling down (account or
//! model or model family), serves the model, under its concurrency cap and daily quota, not
//! already tried for this request. Then: the session's sticky account if it passes; else the
//! lowest priority number, the most room in the binding usage window within a priority, round
//! robin among equals; accounts past the window threshold only when no other can serve.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{FixedOffset, Utc};

use crate::accounts::sticky::Sticky;
use crate::accounts::windows::Family;
use crate::accounts::{AccountPool, AccountRt};
use crate::limits::Slot;
use crate::model::{Binding, Platform};

/// What the scheduler reads: the account snapshot, the sticky sessions, the round-robin
/// cursor and the accounting time zone (for daily quotas).
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub pool: &'a AccountPool,
    pub sticky: &'a Sticky,
    pub rr: &'a AtomicUsize,
    pub offset: FixedOffset,
    /// Usage-window fill (percent) from which an account takes no new sessions while another
    /// has room (`Config::window_threshold_percent`).
    pub window_threshold_percent: u32,
}

#[derive(Debug)]
pub struct Pick {
    pub account: Arc<AccountRt>,
    /// The model name to send upstream (after the account's mapping).
    pub upstream_model: String,
    /// The account's concurrency slot, held until the request is over.
    pub slot: Option<Slot>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum NoAccount {
    /// The key is bound to an account (or group) that cannot serve right now.
    BoundUnavailable(String),
    /// No account is available for the model.
    NoneForModel(String),
}

impl NoAccount {
    pub fn message(&self) -> String {
        match self {
            NoAccount::BoundUnavailable(id) => format!(
                "The account bound to this API key ({id}) is unavailable or does not support the requested model"
            ),
            NoAccount::NoneForModel(m) => {
                format!("No available accounts support the requested model: {m}")
            }
        }
    }
}

/// What a request needs from the scheduler.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    pub platforms: &'a [Platform],
    pub model: &'a str,
    /// The key's binding for this service.
    pub binding: &'a Binding,
    /// Sticky-session key, if the request has one.
    pub session: Option<&'a str>,
    /// Accounts that already failed this request.
    pub exclude: &'a [String],
}

/// The upstream model for `model` on `acc`, or None if the account does not serve it.
/// An empty mapping serves every model unchanged; names match exactly, then case-insensitively,
/// then as a prefix for names ending in `*` (`claude-sonnet-*` -> `gpt-5`), the longest first.
pub fn map_model(acc: &AccountRt, model: &str) -> Option<String> {
    let m = &acc.rec.supported_models;
    if m.is_empty() {
        return Some(model.to_owned());
    }
    if let Some(to) = m.get(model) {
        return Some(to.clone());
    }
    if let Some((_, to)) = m.iter().find(|(from, _)| from.eq_ignore_ascii_case(model)) {
        return Some(to.clone());
    }
    m.iter()
        .filter_map(|(from, to)| Some((from.strip_suffix('*')?, to)))
        .filter(|(prefix, _)| {
            model
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, to)| to.clone())
}

/// Can `a` take a request for `model` now? Returns the upstream model name.
fn eligible(offset: FixedOffset, a: &AccountRt, model: &str, now_ms: i64) -> Option<String> {
    if a.rt.cooling(now_ms) {
        return None;
    }
    eligible_but_cooling(offset, a, model, now_ms)
}

/// `eligible`, except that a transient account cooldown (after a 429, 5xx or timeout) does not
/// count: the last resort when every otherwise usable account is cooling down.
fn eligible_but_cooling(
    offset: FixedOffset,
    a: &AccountRt,
    model: &str,
    now_ms: i64,
) -> Option<String> {
    let r = &a.rec;
    if !r.is_active
        || !r.schedulable
        || a.needs_attention()
        || !crate::accounts::key_pool::has_credential(a)
    {
        return None;
    }
    if r.subscription_expires_at
        .is_some_and(|t| t.timestamp_millis() <= now_ms)
    {
        return None;
    }
    if r.daily_quota_micros > 0 {
        let day = crate::limits::meter::local_day(Utc::now(), offset);
        if a.rt.quota_reached(day, r.daily_quota_micros) {
            return None;
        }
    }
    let upstream = map_model(a, model)?;
    // The model, or its family (a spent weekly window), parked on this account.
    if a.rt.model_cooling(&upstream, now_ms) {
        return None;
    }
    Some(upstream)
}

fn try_take(a: &Arc<AccountRt>, upstream: String) -> Option<Pick> {
    let gate = a.rt.gate.load();
    let slot = if gate.limit == 0 {
        None
    } else {
        // Non-blocking: a full account is skipped, not waited for.
        match gate.try_acquire() {
            Some(s) => Some(s),
            None => return None,
        }
    };
    Some(Pick {
        account: a.clone(),
        upstream_model: upstream,
        slot,
    })
}

/// The room of an account without usage windows (hundredths of a percent).
const FULL_ROOM: u32 = 10_000;

pub fn pick(inp: &Inputs, want: &Want) -> Result<Pick, NoAccount> {
    let pool = inp.pool;
    let now_ms = Utc::now().timestamp_millis();
    let usable = |a: &Arc<AccountRt>| {
        !want.exclude.contains(&a.rec.id) && want.platforms.contains(&a.rec.platform)
    };

    // 1. A binding to one account.
    if let Binding::Account { id, .. } = want.binding {
        return pool
            .by_id
            .get(id)
            .filter(|a| {
                !want.exclude.contains(&a.rec.id) && want.platforms.contains(&a.rec.platform)
            })
            .and_then(|a| {
                // The only account the key may use: after a transient failure it is tried
                // again rather than leaving the key with nothing.
                let m = if a.rt.transient_cooldown(now_ms) {
                    eligible_but_cooling(inp.offset, a, want.model, now_ms)
                } else {
                    eligible(inp.offset, a, want.model, now_ms)
                };
                m.and_then(|m| try_take(a, m))
            })
            .ok_or_else(|| NoAccount::BoundUnavailable(want.binding.to_string()));
    }

    // 2. The candidate set: a group's members, or the shared pool.
    let group = want.binding.group();
    let members: Option<&Vec<String>> = match group {
        Some(gid) => match pool.groups.get(gid) {
            Some(g) => Some(&g.members),
            None => return Err(NoAccount::BoundUnavailable(want.binding.to_string())),
        },
        None => None,
    };
    let in_set = |a: &Arc<AccountRt>| match members {
        Some(m) => m.contains(&a.rec.id),
        None => a.rec.account_type.is_empty() || a.rec.account_type == "shared",
    };

    // 3. The session's account, if it can still serve.
    if let Some(session) = want.session
        && let Some(id) = inp.sticky.get(session, now_ms)
        && let Some(a) = pool.by_id.get(&id)
        && usable(a)
        && in_set(a)
        && let Some(m) = eligible(inp.offset, a, want.model, now_ms)
        && let Some(p) = try_take(a, m)
    {
        inp.sticky.set(session, &a.rec.id, now_ms);
        return Ok(p);
    }

    // 4. Lowest priority number first. Within a priority, the account with the most room in
    // the usage window that will bind first (subscription accounts report their windows;
    // others count as having full room), round robin among equals. An account whose binding
    // window is past the threshold takes no new session while another account has room: the
    // first pass skips such accounts, the second (only when the first found none) takes them.
    let hot_room = FULL_ROOM.saturating_sub(inp.window_threshold_percent.min(100) * 100);
    let mut level: Vec<(&Arc<AccountRt>, String, u32)> = Vec::new();
    let accounts = &pool.accounts;
    for allow_hot in [false, true] {
        let mut saw_hot = false;
        let mut i = 0;
        while i < accounts.len() {
            let prio = accounts[i].rec.priority;
            level.clear();
            while i < accounts.len() && accounts[i].rec.priority == prio {
                let a = &accounts[i];
                if usable(a)
                    && in_set(a)
                    && let Some(m) = eligible(inp.offset, a, want.model, now_ms)
                {
                    // Only subscription (OAuth) accounts report usage windows.
                    let room = if a.kind().oauth() {
                        a.rt.windows.room_centi(Family::of(&m), now_ms)
                    } else {
                        FULL_ROOM
                    };
                    if room <= hot_room && !allow_hot {
                        saw_hot = true;
                    } else {
                        level.push((a, m, room));
                    }
                }
                i += 1;
            }
            if level.is_empty() {
                continue;
            }
            // Most room first; the accounts tied for the most take turns. The rest stay in
            // order behind them in case the best are at their concurrency cap.
            level.sort_by_key(|(_, _, r)| std::cmp::Reverse(*r));
            let ties = level
                .iter()
                .take_while(|(_, _, r)| *r == level[0].2)
                .count();
            let start = inp.rr.fetch_add(1, Ordering::Relaxed);
            for k in 0..level.len() {
                let idx = if k < ties { (start + k) % ties } else { k };
                let (a, m, _) = &level[idx];
                if let Some(p) = try_take(a, m.clone()) {
                    if let Some(session) = want.session {
                        inp.sticky.set(session, &a.rec.id, now_ms);
                    }
                    return Ok(p);
                }
            }
        }
        if !saw_hot {
            break;
        }
    }
    // 5. Every usable account is cooling down: a transient cooldown (5xx, overload, network)
    // must not leave the key with no account at all, so the one whose cooldown ends first
    // (the least recently failed) is tried. Rate limits with a reset time are respected.
    let mut cooling: Vec<(i64, &Arc<AccountRt>, String)> = pool
        .accounts
        .iter()
        .filter(|a| usable(a) && in_set(a) && a.rt.transient_cooldown(now_ms))
        .filter_map(|a| {
            let until = a.rt.cooldown(now_ms)?.0;
            let m = eligible_but_cooling(inp.offset, a, want.model, now_ms)?;
            Some((until, a, m))
        })
        .collect();
    cooling.sort_by_key(|(until, _, _)| *until);
    for (_, a, m) in cooling {
        if let Some(p) = try_take(a, m) {
            tracing::info!(account_id = %a.rec.id, "every usable account is cooling down; trying the least recently failed");
            return Ok(p);
        }
    }
    Err(match group {
        Some(_) => NoAccount::BoundUnavailable(want.binding.to_string()),
        None => NoAccount::NoneForModel(want.model.to_owned()),
    })
}

//! v1 keyspace -> crs records. Keys arrive one at a time (`Importer::add`), in any order;
//! `finish` resolves what needs the whole picture (group members, derived buckets, costs) and
//! returns a `Plan`: everything to write, written by `Plan::write`.

use std::collections::{BTreeMap, HashMap};

use anyhow::{Context, Result};
use serde_json::{Map, Value, json};

use super::dump::{V1Key, V1Value};
use super::mapping::{
    self, AccountOut, FAMILIES, Keys, family_for_key, import_account, import_admin, import_group,
    import_key, import_record, simple_id, sticky_key,
};
use super::report::Report;
use super::usage::{Dim, UsageKind, parse_bucket, parse_v1, read_hash};
use crate::accounts::sticky::StickyEntry;
use crate::model::{
    Account, AccountGroup, Admin, ApiKey, Binding, BindingField, Picos, parse_dollars,
};
use crate::store::{Store, Table};
use crate::usage::Counters;
use crate::usage::ledger::RequestRecord;
use crate::usage::pricing::Pricing;

/// v1 keeps at most this many request records per key; so does crs.
const RECORDS_PER_KEY: usize = 200;

/// Transient v1 state: (pattern label, matcher).
fn transient(name: &str) -> Option<&'static str> {
    const PREFIXES: &[(&str, &str)] = &[
        ("rate_limit:", "rate_limit:*"),
        ("concurrency:", "concurrency:*"),
        ("session:", "session:*"),
        ("system:metrics:minute:", "system:metrics:minute:*"),
        ("init:", "init:*"),
        ("system:migrat", "system:migrat*"),
        ("ratelimit:", "ratelimit:*"),
        ("account:overload:", "account:overload:*"),
        ("temp_unavailable:", "temp_unavailable:*"),
        ("usage:cost:dedup:", "usage:cost:dedup:*"),
        ("lock:", "lock:*"),
        ("token_refresh_lock:", "token_refresh_lock:*"),
        ("cost_rank_lock:", "cost_rank_lock:*"),
        ("user_msg_queue_lock:", "user_msg_queue_lock:*"),
        ("user_msg_queue_last:", "user_msg_queue_last:*"),
    ];
    if name.ends_with(":index:empty") {
        return Some("*:index:empty");
    }
    PREFIXES
        .iter()
        .find(|(p, _)| name.starts_with(p))
        .map(|(_, l)| *l)
}

/// Derived v1 data that crs rebuilds (or has no use for).
fn derived(name: &str) -> Option<&'static str> {
    const EXACT: &[(&str, &str)] = &[
        ("apikey:hash_map", "apikey:hash_map"),
        ("apikey:tags:all", "apikey:tags:all"),
        ("usage:model:monthly:months", "usage:model:monthly:months"),
        ("account_groups", "account_groups"),
    ];
    const PREFIXES: &[(&str, &str)] = &[
        ("apikey:idx:", "apikey:idx:*"),
        ("apikey:set:", "apikey:set:*"),
        ("apikey:tag:", "apikey:tag:*"),
        ("apikey:index:", "apikey:index:*"),
        ("apikey_hash:", "apikey_hash:*"),
        ("cost_rank:", "cost_rank:*"),
        ("cost_rank_meta:", "cost_rank_meta:*"),
        ("account_groups_reverse:", "account_groups_reverse:*"),
        (
            "usage:opus:",
            "usage:opus:* (rebuilt from key-model buckets)",
        ),
    ];
    if let Some((_, l)) = EXACT.iter().find(|(n, _)| *n == name) {
        return Some(l);
    }
    if let Some((_, l)) = PREFIXES.iter().find(|(p, _)| name.starts_with(p)) {
        return Some(l);
    }
    if name.starts_with("shared_") && name.ends_with("_accounts") {
        return Some("shared_*_accounts");
    }
    if FAMILIES.iter().any(|f| f.index == name) {
        return Some("{type}:index");
    }
    if name.starts_with("usage:") && name.contains(":index:") {
        return Some("usage:*:index:*");
    }
    if name.starts_with("account_usage:") && name.contains(":index:") {
        return Some("account_usage:*:index:*");
    }
    None
}

/// One bucket being assembled from v1's hash and cost strings; costs in pico-dollars.
#[derive(Debug, Default, Clone)]
struct Acc {
    c: Counters,
    /// The hash's own cost fields (`HashCounters::real_picos`).
    hash_real: Option<Picos>,
    hash_rated: Option<Picos>,
    /// The key's cost strings (`usage:cost:*`), read exactly.
    str_real: Option<Picos>,
    str_rated: Option<Picos>,
}

/// Everything an import writes.
#[derive(Debug, Default)]
pub struct Plan {
    pub api_keys: Vec<ApiKey>,
    pub accounts: Vec<Account>,
    pub groups: Vec<AccountGroup>,
    pub admin: Option<Admin>,
    pub sticky: Vec<(String, StickyEntry)>,
    /// Redis key -> JSON dump entry (with `expiresAtMs`).
    pub raw: Vec<(String, Value)>,
    /// Bucket key -> counters, sorted by key.
    pub buckets: Vec<(String, Counters)>,
    /// Key id -> its records, newest first.
    pub records: Vec<(String, Vec<RequestRecord>)>,
}

pub struct Importer<'a> {
    keys: Keys<'a>,
    pricing: &'a Pricing,
    pub report: Report,
    api_keys: Vec<ApiKey>,
    accounts: Vec<Account>,
    groups: BTreeMap<String, AccountGroup>,
    members: BTreeMap<String, Vec<String>>,
    buckets: HashMap<String, Acc>,
    embedded: HashMap<String, Counters>,
    records: BTreeMap<String, Vec<RequestRecord>>,
    /// (crs key, account id, ttl ms)
    sticky: Vec<(String, String, i64)>,
    admin: Option<Admin>,
    raw: Vec<V1Key>,
    errors: Vec<String>,
    /// v1's `apikey:hash_map` keys (the hashes v1 authenticates), to flag keys outside it.
    hash_map: Option<std::collections::HashSet<String>>,
}

impl<'a> Importer<'a> {
    pub fn new(keys: Keys<'a>, pricing: &'a Pricing) -> Self {
        Importer {
            keys,
            pricing,
            report: Report::new("import"),
            api_keys: Vec::new(),
            accounts: Vec::new(),
            groups: BTreeMap::new(),
            members: BTreeMap::new(),
            buckets: HashMap::new(),
            embedded: HashMap::new(),
            records: BTreeMap::new(),
            sticky: Vec::new(),
            admin: None,
            raw: Vec::new(),
            errors: Vec::new(),
            hash_map: None,
        }
    }

    fn verbatim(&mut self, k: V1Key, what: String) {
        Report::add(&mut self.report.kept_verbatim, what, 1);
        self.raw.push(k);
    }

    fn not_understood(&mut self, k: V1Key) {
        self.report.unknown(&k.name);
        self.raw.push(k);
    }

    /// Take one key.
    pub fn add(&mut self, k: V1Key) -> Result<()> {
        self.report.keys += 1;
        let name = k.name.as_str();
        if name == "session:admin_credentials" {
            match k.hash().and_then(import_admin) {
                Some(a) => self.admin = Some(a),
                None => self.not_understood(k),
            }
            return Ok(());
        }
        if let Some(p) = transient(name) {
            Report::add(&mut self.report.dropped, p, 1);
            return Ok(());
        }
        if let Some(p) = derived(name) {
            if let (Some(h), "apikey:hash_map") = (k.hash(), name) {
                self.hash_map = Some(
                    h.iter()
                        .map(|(hash, _)| hash.to_ascii_lowercase())
                        .collect(),
                );
            }
            Report::add(&mut self.report.rebuilt, p, 1);
            return Ok(());
        }
        if let Some(key) = sticky_key(name) {
            return {
                self.add_sticky(k, key);
                Ok(())
            };
        }
        if let Some(id) = name.strip_prefix("usage:records:")
            && simple_id(id)
            && let V1Value::List(items) = &k.value
        {
            let id = id.to_owned();
            let mut recs = Vec::with_capacity(items.len().min(RECORDS_PER_KEY));
            for text in items.iter().take(RECORDS_PER_KEY) {
                match import_record(&id, text) {
                    Some((r, dropped)) => {
                        for f in dropped {
                            Report::add(&mut self.report.lossy, format!("request records: {f}"), 1);
                        }
                        recs.push(r);
                    }
                    None => Report::add(
                        &mut self.report.lossy,
                        "request records: entries that are not JSON objects",
                        1,
                    ),
                }
            }
            if items.len() > RECORDS_PER_KEY {
                Report::add(
                    &mut self.report.lossy,
                    format!("request records: beyond the newest {RECORDS_PER_KEY} per key"),
                    (items.len() - RECORDS_PER_KEY) as u64,
                );
            }
            Report::add(
                &mut self.report.imported,
                "request records",
                recs.len() as u64,
            );
            self.records.insert(id, recs);
            return Ok(());
        }
        if let Some(u) = parse_v1(name) {
            match (&u.kind, &k.value) {
                (UsageKind::Hash, V1Value::Hash(fields)) => {
                    let h = read_hash(fields);
                    for f in &h.unknown {
                        Report::add(&mut self.report.lossy, format!("usage hash fields: {f}"), 1);
                    }
                    if let Dim::A(acc) = &u.dim {
                        for (model, e) in &h.embedded {
                            let mut c = e.c;
                            c.real_cost_picos = e.real_picos().unwrap_or(0);
                            c.rated_cost_picos = e.rated_picos().unwrap_or(0);
                            self.embedded
                                .insert(Dim::AM(acc.clone(), model.clone()).bucket(&u.period), c);
                        }
                    }
                    let acc = self.buckets.entry(u.dim.bucket(&u.period)).or_default();
                    acc.c = h.c;
                    acc.hash_real = h.real_picos();
                    acc.hash_rated = h.rated_picos();
                    Report::add(&mut self.report.imported, "usage hashes", 1);
                }
                (UsageKind::Cost { real }, V1Value::Str(s)) => {
                    // v1 adds each request's unrounded float cost (INCRBYFLOAT): the decimal
                    // text is read exactly, to the pico-dollar.
                    let picos = parse_dollars(s).unwrap_or(0);
                    let acc = self.buckets.entry(u.dim.bucket(&u.period)).or_default();
                    if *real {
                        acc.str_real = Some(picos);
                    } else {
                        acc.str_rated = Some(picos);
                    }
                    Report::add(&mut self.report.imported, "cost counters (usage:cost:*)", 1);
                }
                _ => self.not_understood(k),
            }
            return Ok(());
        }
        if let Some(id) = name.strip_prefix("apikey:")
            && simple_id(id)
            && let Some(pairs) = k.hash()
        {
            let key = import_key(id, pairs);
            for f in key.extra.keys() {
                Report::add(&mut self.report.extra_fields, format!("api key: {f}"), 1);
            }
            Report::add(&mut self.report.imported, "api keys", 1);
            if key.is_deleted {
                Report::add(
                    &mut self.report.imported,
                    "api keys (of which soft-deleted)",
                    1,
                );
            }
            self.api_keys.push(key);
            return Ok(());
        }
        if let Some((fam, id)) = family_for_key(name) {
            let fields: Option<Map<String, Value>> = match (&k.value, fam.json) {
                (V1Value::Hash(pairs), false) => Some(mapping::Fields::from_pairs(pairs).0),
                (V1Value::Str(s), true) => match serde_json::from_str::<Value>(s) {
                    Ok(Value::Object(m)) => Some(m),
                    _ => None,
                },
                _ => None,
            };
            let Some(fields) = fields else {
                self.not_understood(k);
                return Ok(());
            };
            let id = id.to_owned();
            match import_account(fam, &id, fields, &self.keys) {
                Ok(AccountOut::Account(a)) => {
                    for f in a.extra.keys() {
                        Report::add(
                            &mut self.report.extra_fields,
                            format!("account ({}): {f}", fam.label),
                            1,
                        );
                    }
                    Report::add(
                        &mut self.report.imported,
                        format!("accounts: {}", fam.label),
                        1,
                    );
                    self.accounts.push(*a);
                }
                Ok(AccountOut::Raw(reason)) => {
                    self.report.warnings.push(format!(
                        "account {id} kept verbatim, not served by crs: {reason}"
                    ));
                    self.verbatim(k, format!("accounts: {}", fam.label));
                }
                Err(e) => self.errors.push(format!("{e:#}")),
            }
            return Ok(());
        }
        if let Some(id) = name.strip_prefix("account_group:")
            && simple_id(id)
            && let Some(pairs) = k.hash()
        {
            let (g, extra) = import_group(id, pairs);
            for f in extra {
                Report::add(&mut self.report.lossy, format!("account groups: {f}"), 1);
            }
            Report::add(&mut self.report.imported, "account groups", 1);
            self.groups.insert(g.id.clone(), g);
            return Ok(());
        }
        if let Some(id) = name.strip_prefix("account_group_members:")
            && simple_id(id)
            && let V1Value::Set(m) = &k.value
        {
            self.members.insert(id.to_owned(), m.clone());
            return Ok(());
        }
        if name == "billing:events" {
            self.verbatim(k, "billing:events".into());
            return Ok(());
        }
        self.not_understood(k);
        Ok(())
    }

    fn add_sticky(&mut self, k: V1Key, key: String) {
        let account = k
            .string()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .and_then(|v| {
                v.get("accountId")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
        match account {
            Some(acc) if !acc.is_empty() => self.sticky.push((key, acc, k.ttl_ms)),
            _ => self.not_understood(k),
        }
    }

    /// Resolve everything that needs all keys. `taken_at_ms` is when the keyspace was read
    /// (TTLs are relative to it); `now_ms` is now.
    pub fn finish(mut self, taken_at_ms: i64, now_ms: i64) -> Result<(Plan, Report)> {
        if !self.errors.is_empty() {
            anyhow::bail!(
                "{} account secret(s) could not be decrypted with the given ENCRYPTION_KEY (is it the v1 deployment's?):\n  {}",
                self.errors.len(),
                self.errors.join("\n  ")
            );
        }
        let mut plan = Plan::default();
        let r = &mut self.report;

        // Groups and their members.
        let mut memberships = 0;
        for (gid, mut members) in std::mem::take(&mut self.members) {
            match self.groups.get_mut(&gid) {
                Some(g) => {
                    members.sort();
                    memberships += members.len() as u64;
                    g.members = members;
                }
                None => r.warnings.push(format!(
                    "account_group_members:{gid} has no account_group:{gid}; its members were dropped"
                )),
            }
        }
        Report::add(&mut r.imported, "account group memberships", memberships);
        plan.groups = std::mem::take(&mut self.groups).into_values().collect();

        // Live keys v1 did not authenticate (missing from its hash map): crs will.
        if let Some(map) = &self.hash_map {
            for k in self
                .api_keys
                .iter()
                .filter(|k| !k.is_deleted && k.is_active)
            {
                if !map.contains(&k.key_hash) {
                    r.warnings.push(format!(
                        "key {} ({}) is active but not in v1's apikey:hash_map, so v1 refused it; crs accepts it",
                        k.name, k.id
                    ));
                }
            }
        }

        // Key bindings to accounts crs does not hold.
        let known: std::collections::HashSet<&str> =
            self.accounts.iter().map(|a| a.id.as_str()).collect();
        let group_ids: std::collections::HashSet<&str> =
            plan.groups.iter().map(|g| g.id.as_str()).collect();
        for k in &self.api_keys {
            for f in BindingField::ALL {
                let b = k.binding(f);
                let ok = match b {
                    Binding::None => continue,
                    Binding::Group(g) => group_ids.contains(g.as_str()),
                    Binding::Account { id, .. } => known.contains(id.as_str()),
                };
                if !ok && !k.is_deleted {
                    r.warnings.push(format!(
                        "key {} ({}) is bound to {b}, which crs does not serve: its requests for that service will fail until it is rebound",
                        k.name, k.id
                    ));
                }
            }
        }

        // Usage: hashes and cost strings, then what v1 does not store.
        let mut buckets = std::mem::take(&mut self.buckets);
        let mut from_embedded = 0;
        for (key, c) in std::mem::take(&mut self.embedded) {
            buckets.entry(key).or_insert_with(|| {
                from_embedded += 1;
                Acc {
                    hash_real: (c.real_cost_picos != 0).then_some(c.real_cost_picos),
                    hash_rated: (c.rated_cost_picos != 0).then_some(c.rated_cost_picos),
                    c,
                    ..Default::default()
                }
            });
        }
        Report::add(
            &mut r.rebuilt,
            "hourly account-model buckets from account_usage:hourly model:* fields",
            from_embedded,
        );
        derive_aggregates(&mut buckets, r);
        plan.buckets = resolve_costs(buckets, self.pricing, r);
        Report::add(
            &mut r.imported,
            "usage buckets written",
            plan.buckets.len() as u64,
        );

        // Sticky sessions with their remaining TTL.
        for (key, account_id, ttl) in std::mem::take(&mut self.sticky) {
            let ttl = if ttl > 0 { ttl } else { 3_600_000 };
            let expires_at = taken_at_ms + ttl;
            if expires_at <= now_ms {
                Report::add(
                    &mut r.dropped,
                    "sticky sessions (expired since the dump)",
                    1,
                );
                continue;
            }
            plan.sticky.push((
                key,
                StickyEntry {
                    account_id,
                    expires_at,
                },
            ));
        }
        Report::add(&mut r.imported, "sticky sessions", plan.sticky.len() as u64);

        // Verbatim keys with their absolute expiry.
        for k in std::mem::take(&mut self.raw) {
            let expires = (k.ttl_ms > 0).then(|| taken_at_ms + k.ttl_ms);
            if expires.is_some_and(|e| e <= now_ms) {
                Report::add(&mut r.dropped, "verbatim keys (expired since the dump)", 1);
                continue;
            }
            let mut entry = k.to_json();
            entry["expiresAtMs"] = json!(expires);
            plan.raw.push((k.name, entry));
        }

        if let Some(a) = self.admin.take() {
            Report::add(&mut r.imported, "admin (v1 credentials, bcrypt)", 1);
            plan.admin = Some(a);
        } else {
            r.warnings.push(
                "no session:admin_credentials in the source (v1 keeps it for 24 h after its last start): crs keeps its own admin".into(),
            );
        }
        plan.api_keys = std::mem::take(&mut self.api_keys);
        plan.accounts = std::mem::take(&mut self.accounts);
        plan.records = std::mem::take(&mut self.records).into_iter().collect();
        Report::add(
            &mut r.rebuilt,
            "cost meters (daily, weekly, total, 5 h): from key buckets at start",
            plan.api_keys.len() as u64,
        );
        Ok((plan, self.report))
    }
}

/// Fill the buckets v1 does not keep from the ones it does: all-time per model (from key-model
/// totals), hourly global (from per-key hours), all-time per account-model (from months), and
/// any other missing aggregate of a period from its parts.
fn derive_aggregates(buckets: &mut HashMap<String, Acc>, r: &mut Report) {
    // (target bucket) -> summed counters, from parts.
    let mut sums: HashMap<String, (Counters, &'static str)> = HashMap::new();
    let mut add = |key: String, c: &Counters, why: &'static str| {
        let e = sums.entry(key).or_insert((Counters::default(), why));
        let mut c = *c;
        c.real_cost_picos = 0;
        c.rated_cost_picos = 0;
        e.0.add(&c);
    };
    for (key, acc) in buckets.iter() {
        let Some((period, dim)) = parse_bucket(key) else {
            continue;
        };
        match dim {
            Dim::K(_) => add(
                Dim::G.bucket(period),
                &acc.c,
                "global buckets from per-key buckets",
            ),
            Dim::KM(_, m) => add(
                Dim::M(m).bucket(period),
                &acc.c,
                "per-model buckets from key-model buckets (all-time per model: v1 has none)",
            ),
            Dim::AM(a, m) => {
                add(
                    Dim::A(a.clone()).bucket(period),
                    &acc.c,
                    "account buckets from account-model buckets",
                );
                if period.starts_with("m:") {
                    add(
                        Dim::AM(a, m).bucket(crate::usage::bucket::TOTAL),
                        &acc.c,
                        "all-time account-model buckets from monthly ones (v1 has none)",
                    );
                }
            }
            _ => {}
        }
    }
    for (key, (c, why)) in sums {
        if buckets.contains_key(&key) {
            continue;
        }
        Report::add(&mut r.rebuilt, why, 1);
        buckets.insert(
            key,
            Acc {
                c,
                ..Default::default()
            },
        );
    }
}

/// Final costs of every bucket, in integer pico-dollars:
/// - a hash's own `realCostMicro` / `ratedCostMicro` (v1 keeps them on key-model hashes), or
///   the exact `realCostPico` / `ratedCostPico` a crs export put beside them;
/// - else the key's cost strings (`usage:cost:*` rated, `usage:cost:real:*` real);
/// - else the sum of the bucket's key-model parts (keys, models, global) or account-model
///   parts (accounts);
/// - account-model buckets, which v1 never prices, are priced from their tokens with the
///   pricing table (as v1's admin views do).
fn resolve_costs(
    buckets: HashMap<String, Acc>,
    pricing: &Pricing,
    r: &mut Report,
) -> Vec<(String, Counters)> {
    // Leaf costs (key-model and account-model buckets): their own cost fields, else priced
    // from their tokens.
    let mut leaf: HashMap<String, (Picos, Picos)> = HashMap::new();
    // Sums of leaf costs per aggregate bucket (key, model and global from key-model; account
    // from account-model).
    let mut parts: HashMap<String, (Picos, Picos)> = HashMap::new();
    let (mut priced_km, mut priced_am, mut unpriced) = (0u64, 0u64, 0u64);
    // All-time account-model buckets v1 lacks (derived from months) take their months' costs.
    let mut months: HashMap<String, (Picos, Picos)> = HashMap::new();
    let mut alltime_am: Vec<&String> = Vec::new();
    for (key, acc) in &buckets {
        let (targets, model, is_km) = match parse_bucket(key) {
            Some((period, Dim::KM(k, m))) => (
                vec![
                    Dim::K(k).bucket(period),
                    Dim::M(m.clone()).bucket(period),
                    Dim::G.bucket(period),
                ],
                m,
                true,
            ),
            Some((period, Dim::AM(a, m))) => {
                let no_cost = acc.hash_real.is_none() && acc.hash_rated.is_none();
                if period == crate::usage::bucket::TOTAL && no_cost {
                    alltime_am.push(key);
                    continue;
                }
                (vec![Dim::A(a).bucket(period)], m, false)
            }
            _ => continue,
        };
        let cost = match (acc.hash_real, acc.hash_rated) {
            (None, None) => {
                let c = estimate(pricing, &model, &acc.c);
                match (c.is_some(), is_km) {
                    (true, true) => priced_km += 1,
                    (true, false) => priced_am += 1,
                    (false, _) => unpriced += 1,
                }
                let c = c.unwrap_or(0);
                (c, c)
            }
            (real, rated) => (real.or(rated).unwrap_or(0), rated.or(real).unwrap_or(0)),
        };
        leaf.insert(key.clone(), cost);
        for t in targets {
            let e = parts.entry(t).or_default();
            e.0 = e.0.saturating_add(cost.0);
            e.1 = e.1.saturating_add(cost.1);
        }
        if !is_km
            && key.starts_with("m:")
            && let Some((_, Dim::AM(a, m))) = parse_bucket(key)
        {
            let e = months
                .entry(Dim::AM(a, m).bucket(crate::usage::bucket::TOTAL))
                .or_default();
            e.0 = e.0.saturating_add(cost.0);
            e.1 = e.1.saturating_add(cost.1);
        }
    }
    for key in alltime_am {
        let Some((period, Dim::AM(a, m))) = parse_bucket(key) else {
            continue;
        };
        let cost = match months.get(key) {
            Some(c) => *c,
            None => {
                let c = estimate(pricing, &m, &buckets[key].c).unwrap_or(0);
                (c, c)
            }
        };
        leaf.insert(key.clone(), cost);
        let e = parts.entry(Dim::A(a).bucket(period)).or_default();
        e.0 = e.0.saturating_add(cost.0);
        e.1 = e.1.saturating_add(cost.1);
    }
    Report::add(
        &mut r.rebuilt,
        "account-model costs priced from their tokens (v1 stores no account costs)",
        priced_am,
    );
    Report::add(
        &mut r.rebuilt,
        "key-model costs priced from their tokens (v1 hash without realCostMicro)",
        priced_km,
    );
    Report::add(
        &mut r.lossy,
        "bucket costs: models missing from the pricing table (cost 0)",
        unpriced,
    );
    let mut summed = 0u64;
    let mut out: Vec<(String, Counters)> = buckets
        .into_iter()
        .map(|(key, acc)| {
            let mut c = acc.c;
            let (real, rated) = match leaf.get(&key) {
                Some(cost) => *cost,
                None => {
                    let rated = acc.hash_rated.or(acc.str_rated);
                    let real = acc.hash_real.or(acc.str_real);
                    let p = parts.get(&key);
                    if p.is_some() && (real.is_none() || rated.is_none()) {
                        summed += 1;
                    }
                    match (real, rated, p) {
                        (Some(a), Some(b), _) => (a, b),
                        (None, None, Some(p)) => *p,
                        (Some(a), None, Some(p)) => (a, p.1),
                        (None, Some(b), Some(p)) => (p.0, b),
                        (Some(a), None, None) => (a, a),
                        (None, Some(b), None) => (b, b),
                        (None, None, None) => (0, 0),
                    }
                }
            };
            c.real_cost_picos = real;
            c.rated_cost_picos = rated;
            (key, c)
        })
        .collect();
    Report::add(
        &mut r.rebuilt,
        "bucket costs summed from their key-model or account-model parts",
        summed,
    );
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The exact cost of a bucket's tokens at the model's base prices, in pico-dollars
/// (saturating); `None` for a model the table does not know.
fn estimate(pricing: &Pricing, model: &str, c: &Counters) -> Option<Picos> {
    let p = pricing.price(model)?;
    let r = &p.base;
    let write_1h = c.ephemeral_1h_tokens;
    let write_5m = c.ephemeral_5m_tokens.saturating_add(
        c.cache_create_tokens
            .saturating_sub(c.ephemeral_5m_tokens.saturating_add(c.ephemeral_1h_tokens)),
    );
    let t = |n: u64, price: i64| n as i128 * price as i128;
    let pico = t(c.input_tokens, r.input)
        + t(c.output_tokens, r.output)
        + t(write_5m, r.cache_write_5m)
        + t(write_1h, r.cache_write_1h)
        + t(c.cache_read_tokens, r.cache_read);
    Some(pico.clamp(i64::MIN as i128, i64::MAX as i128) as Picos)
}

impl Plan {
    /// Write everything. Usage buckets are set (not added), records replaced per key, so an
    /// import repeated with `--merge` gives the same store.
    pub fn write(&self, store: &Store, report: &mut Report) -> Result<()> {
        let rows = |v: &[(String, Value)]| -> Vec<(String, Vec<u8>)> {
            v.iter()
                .map(|(k, e)| {
                    (
                        k.clone(),
                        serde_json::to_vec(e).expect("JSON values serialize"),
                    )
                })
                .collect()
        };
        store
            .put_many(
                Table::Accounts,
                &self
                    .accounts
                    .iter()
                    .map(|a| (a.id.clone(), a))
                    .collect::<Vec<_>>(),
            )
            .context("writing accounts")?;
        store
            .put_many(
                Table::Groups,
                &self
                    .groups
                    .iter()
                    .map(|g| (g.id.clone(), g))
                    .collect::<Vec<_>>(),
            )
            .context("writing account groups")?;
        store
            .put_many(
                Table::ApiKeys,
                &self
                    .api_keys
                    .iter()
                    .map(|k| (k.id.clone(), k))
                    .collect::<Vec<_>>(),
            )
            .context("writing API keys")?;
        if let Some(a) = &self.admin {
            let existing = store.get::<Admin>(Table::Admins, &a.username)?;
            if existing
                .as_ref()
                .is_some_and(|e| e.password_hash != a.password_hash)
            {
                report.warnings.push(format!(
                    "admin {:?} already exists in the data directory; kept it (the v1 password was not imported)",
                    a.username
                ));
            } else if existing.is_none() {
                store.put(Table::Admins, &a.username, a)?;
            }
        }
        let sticky: Vec<(String, Vec<u8>)> = self
            .sticky
            .iter()
            .map(|(k, e)| {
                (
                    k.clone(),
                    serde_json::to_vec(e).expect("sticky entries serialize"),
                )
            })
            .collect();
        store.put_raw_many(Table::Sticky, &sticky)?;
        store.put_raw_many(Table::V1Raw, &rows(&self.raw))?;
        for chunk in self.buckets.chunks(100_000) {
            store
                .usage_put_many(chunk)
                .context("writing usage buckets")?;
        }
        for chunk in self.records.chunks(10_000) {
            store
                .records_replace_many(
                    chunk,
                    crate::usage::ledger::Retention::default().records_global,
                )
                .context("writing request records")?;
        }
        Ok(())
    }
}

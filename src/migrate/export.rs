//! crs records -> v1's keyspace: the key catalog v1.1.314 reads, its encryption (fresh IVs),
//! its TTLs (remaining retention measured from the end of each bucket's period), and the
//! derived sets v1 needs to run (`apikey:hash_map`, `{type}:index`, `shared_*_accounts`,
//! groups with members and reverse index, usage index sets, the weekly/total Claude cost).
//! v1 rebuilds the rest itself at start (API key list indexes, cost ranking).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::{Context, Result};
use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, TimeZone, Utc};
use serde_json::{Value, json};

use super::dump::{V1Key, V1Value};
use super::mapping::{
    self, FAMILIES, Keys, export_account, export_admin, export_group, export_key, export_record,
    family_for_key, family_for_platform, sticky_name,
};
use super::report::Report;
use super::usage::{Dim, parse_bucket, v1_hash_name, v1_period, write_hash};
use crate::accounts::sticky::StickyEntry;
use crate::model::{Account, AccountGroup, Admin, ApiKey, Picos, fmt_picos};
use crate::store::{Store, Table};

/// The v1 version whose layout this exporter writes.
pub const V1_LAYOUT_VERSION: &str = "1.1.314";

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// v1's retention (TTL) per kind and granularity, in ms.
fn policy(kind: &str, gran: &str) -> i64 {
    match (kind, gran) {
        ("hash", "daily") => 32 * DAY,
        ("hash", "monthly") => 365 * DAY,
        ("hash", "hourly") => 7 * DAY,
        ("cost", "daily") => 30 * DAY,
        ("cost", "monthly") => 90 * DAY,
        ("cost", "hourly") => 7 * DAY,
        _ => -1,
    }
}

pub struct Exporter<'a> {
    store: &'a Store,
    keys: Keys<'a>,
    off: FixedOffset,
    now: DateTime<Utc>,
    out: BTreeMap<String, V1Key>,
    sets: BTreeMap<String, (BTreeSet<String>, i64)>,
    pub report: Report,
}

impl<'a> Exporter<'a> {
    pub fn new(store: &'a Store, keys: Keys<'a>, off: FixedOffset, now: DateTime<Utc>) -> Self {
        Exporter {
            store,
            keys,
            off,
            now,
            out: BTreeMap::new(),
            sets: BTreeMap::new(),
            report: Report::new("export"),
        }
    }

    fn put(&mut self, what: &str, k: V1Key) {
        Report::add(&mut self.report.imported, what, 1);
        self.out.insert(k.name.clone(), k);
    }

    fn sadd(&mut self, set: String, member: impl Into<String>, ttl_ms: i64) {
        let e = self.sets.entry(set).or_insert((BTreeSet::new(), ttl_ms));
        e.0.insert(member.into());
        e.1 = e.1.max(ttl_ms);
    }

    /// End of a crs period (`d:…`, `m:…`, `h:…`) in UTC.
    fn period_end(&self, period: &str) -> Option<DateTime<Utc>> {
        let local = |d: NaiveDate, h: u32| {
            self.off
                .from_local_datetime(&d.and_hms_opt(h, 0, 0)?)
                .single()
                .map(|t| t.with_timezone(&Utc))
        };
        if let Some(d) = period.strip_prefix("d:") {
            let d = NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()?;
            return local(d.succ_opt()?, 0);
        }
        if let Some(m) = period.strip_prefix("m:") {
            let d = NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").ok()?;
            let next = if d.month() == 12 {
                NaiveDate::from_ymd_opt(d.year() + 1, 1, 1)?
            } else {
                NaiveDate::from_ymd_opt(d.year(), d.month() + 1, 1)?
            };
            return local(next, 0);
        }
        let h = period.strip_prefix("h:")?;
        let (d, hh) = h.split_once('T')?;
        let d = NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()?;
        Some(local(d, hh.parse().ok()?)? + Duration::hours(1))
    }

    /// The TTL v1 would have left on a key of this kind last written at the end of `period`
    /// (at least an hour, so an export never drops what crs still holds).
    fn ttl(&self, kind: &str, period: &str) -> i64 {
        let Some((gran, _)) = v1_period(period) else {
            return -1;
        };
        let full = policy(kind, gran);
        let since = self
            .period_end(period)
            .map(|e| (self.now - e).num_milliseconds())
            .unwrap_or(0);
        (full - since.max(0)).clamp(HOUR, full)
    }

    pub fn build(mut self) -> Result<(Vec<V1Key>, Report)> {
        let st = self.store;
        let keys: Vec<ApiKey> = st.load_all(Table::ApiKeys)?;
        let accounts: Vec<Account> = st.load_all(Table::Accounts)?;
        let groups: Vec<AccountGroup> = st.load_all(Table::Groups)?;
        let admins: Vec<Admin> = st.load_all(Table::Admins)?;

        // API keys and the hash map v1 authenticates with.
        let mut hash_map = Vec::new();
        for k in &keys {
            self.put(
                "api keys (apikey:*)",
                V1Key::new(
                    format!("apikey:{}", k.id),
                    365 * DAY,
                    V1Value::Hash(export_key(k)),
                ),
            );
            if !k.is_deleted && !k.key_hash.is_empty() {
                hash_map.push((k.key_hash.clone(), k.id.clone()));
            }
        }
        if !hash_map.is_empty() {
            Report::add(
                &mut self.report.rebuilt,
                "apikey:hash_map entries",
                hash_map.len() as u64,
            );
            self.put(
                "apikey:hash_map",
                V1Key::new("apikey:hash_map", -1, V1Value::Hash(hash_map)),
            );
        }

        // Accounts, their index and shared sets.
        let mut v1_type: HashMap<String, &'static str> = HashMap::new();
        for a in &accounts {
            let fam = family_for_platform(a.platform);
            let m = export_account(a, &self.keys)?;
            let value = if fam.json {
                V1Value::Str(Value::Object(m).to_string())
            } else {
                V1Value::Hash(mapping::Out(m).into_pairs())
            };
            self.put(
                &format!("accounts: {}", fam.label),
                V1Key::new(format!("{}{}", fam.prefix, a.id), -1, value),
            );
            self.sadd(fam.index.into(), &a.id, -1);
            if let Some(shared) = fam.shared_set
                && a.account_type == "shared"
            {
                self.sadd(shared.into(), &a.id, -1);
            }
            v1_type.insert(a.id.clone(), fam.v1_type);
        }

        // Keys kept verbatim from an import.
        let now_ms = self.now.timestamp_millis();
        for (name, bytes) in st.load_raw(Table::V1Raw)? {
            let entry: Value = serde_json::from_slice(&bytes)
                .with_context(|| format!("v1_raw entry {name} is not JSON"))?;
            let mut k = V1Key::from_json(&entry)?;
            if let Some(exp) = entry.get("expiresAtMs").and_then(Value::as_i64) {
                if exp <= now_ms {
                    Report::add(&mut self.report.dropped, "verbatim keys (expired)", 1);
                    continue;
                }
                k.ttl_ms = exp - now_ms;
            } else {
                k.ttl_ms = -1;
            }
            if let Some((fam, id)) = family_for_key(&k.name) {
                self.sadd(fam.index.into(), id, -1);
                let shared = k
                    .hash()
                    .and_then(|h| h.iter().find(|(f, _)| f == "accountType"))
                    .is_some_and(|(_, v)| v == "shared");
                if let Some(set) = fam.shared_set
                    && shared
                {
                    self.sadd(set.into(), id, -1);
                }
                v1_type.insert(id.to_owned(), fam.v1_type);
            }
            Report::add(
                &mut self.report.kept_verbatim,
                super::report::shape(&k.name),
                1,
            );
            self.out.insert(k.name.clone(), k);
        }

        // Groups.
        for g in &groups {
            self.put(
                "account groups",
                V1Key::new(
                    format!("account_group:{}", g.id),
                    -1,
                    V1Value::Hash(export_group(g)),
                ),
            );
            self.sadd("account_groups".into(), &g.id, -1);
            for m in &g.members {
                self.sadd(format!("account_group_members:{}", g.id), m, -1);
                self.sadd(
                    format!("account_groups_reverse:{}:{m}", g.platform),
                    &g.id,
                    -1,
                );
            }
        }

        self.usage(&keys)?;

        // Request records.
        for k in &keys {
            let recs = st.records_for_key(&k.id, 200)?;
            if recs.is_empty() {
                continue;
            }
            let newest = recs
                .iter()
                .filter_map(|r| r.timestamp)
                .max()
                .unwrap_or(self.now);
            let ttl = (90 * DAY - (self.now - newest).num_milliseconds().max(0)).max(HOUR);
            let items: Vec<String> = recs
                .iter()
                .map(|r| {
                    let t = v1_type.get(&r.account_id).copied().unwrap_or("");
                    export_record(r, t)
                })
                .collect();
            Report::add(
                &mut self.report.imported,
                "request records",
                items.len() as u64,
            );
            self.out.insert(
                format!("usage:records:{}", k.id),
                V1Key::new(format!("usage:records:{}", k.id), ttl, V1Value::List(items)),
            );
        }

        // Live sticky sessions.
        for (key, bytes) in st.load_raw(Table::Sticky)? {
            let Ok(e) = serde_json::from_slice::<StickyEntry>(&bytes) else {
                continue;
            };
            if e.expires_at <= now_ms {
                Report::add(&mut self.report.dropped, "sticky sessions (expired)", 1);
                continue;
            }
            let t = v1_type
                .get(&e.account_id)
                .copied()
                .unwrap_or("claude-console");
            self.put(
                "sticky sessions",
                V1Key::new(
                    sticky_name(&key),
                    e.expires_at - now_ms,
                    V1Value::Str(json!({"accountId": e.account_id, "accountType": t}).to_string()),
                ),
            );
        }

        // The admin, while its hash is still v1's bcrypt (v1 rewrites this key from its
        // data/init.json at every start anyway).
        match admins.iter().find(|a| crate::crypto::is_bcrypt(&a.password_hash)) {
            Some(a) => self.put(
                "admin (session:admin_credentials)",
                V1Key::new("session:admin_credentials", DAY, V1Value::Hash(export_admin(a))),
            ),
            None if !admins.is_empty() => self.report.warnings.push(
                "crs admin passwords are argon2 hashes v1 cannot check: session:admin_credentials not written (v1 recreates it from data/init.json at start)".into(),
            ),
            None => {}
        }

        // Migration markers: the data is in v1.1.314's layout, indexes included, and the
        // all-time per-model hashes are exact (v1 would otherwise rebuild them from months).
        let stamp = now_ms.to_string();
        for (name, v) in [
            ("system:migrated:version", V1_LAYOUT_VERSION.to_owned()),
            ("system:migration:usage_index_v2", stamp.clone()),
            ("system:migration:alltime_model_stats_v1", stamp),
        ] {
            Report::add(
                &mut self.report.rebuilt,
                "migration markers (system:migrat*)",
                1,
            );
            self.out
                .insert(name.into(), V1Key::new(name, -1, V1Value::Str(v)));
        }

        // Sets collected above.
        for (name, (members, ttl)) in std::mem::take(&mut self.sets) {
            let what = if name.starts_with("shared_") {
                "shared_*_accounts"
            } else if name.starts_with("account_group") {
                "account_groups / members / reverse"
            } else if name.contains(":index:") || name == "usage:model:monthly:months" {
                "usage index sets"
            } else if FAMILIES.iter().any(|f| f.index == name) {
                "{type}:index"
            } else {
                "other sets"
            };
            Report::add(&mut self.report.rebuilt, what, 1);
            self.out.insert(
                name.clone(),
                V1Key::new(name, ttl, V1Value::Set(members.into_iter().collect())),
            );
        }
        self.report.keys = self.out.len() as u64;
        Ok((self.out.into_values().collect(), self.report))
    }

    fn usage(&mut self, keys: &[ApiKey]) -> Result<()> {
        let buckets = self.store.usage_all()?;
        // Per-model fields of account hourly hashes: hash name -> fields.
        let mut embedded: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        // Claude-family key-model costs per key: (period, real, rated), in pico-dollars.
        let mut claude: HashMap<String, Vec<(String, Picos, Picos)>> = HashMap::new();
        let mut hashes = 0u64;
        for (bkey, c) in &buckets {
            let Some((period, dim)) = parse_bucket(bkey) else {
                self.report.warnings.push(format!(
                    "usage bucket {bkey} has an unknown shape; not exported"
                ));
                continue;
            };
            let gran = v1_period(period);
            // Index sets, as v1 maintains them.
            if let Some((g, p)) = &gran {
                let ttl = self.ttl("hash", period);
                let index = match (&dim, *g) {
                    (Dim::K(k), "daily" | "hourly") => {
                        Some((format!("usage:{g}:index:{p}"), k.clone()))
                    }
                    (Dim::M(m), _) => Some((format!("usage:model:{g}:index:{p}"), m.clone())),
                    (Dim::KM(k, m), "daily" | "hourly") => {
                        Some((format!("usage:keymodel:{g}:index:{p}"), format!("{k}:{m}")))
                    }
                    (Dim::A(a), "daily" | "hourly") => {
                        Some((format!("account_usage:{g}:index:{p}"), a.clone()))
                    }
                    (Dim::AM(a, m), "daily" | "hourly") => Some((
                        format!("account_usage:model:{g}:index:{p}"),
                        format!("{a}:{m}"),
                    )),
                    _ => None,
                };
                if let Some((set, member)) = index {
                    self.sadd(set, member, ttl);
                }
                if let (Dim::M(_), "monthly") = (&dim, *g) {
                    self.sadd("usage:model:monthly:months".into(), p.clone(), -1);
                }
            }
            if let Dim::KM(k, m) = &dim
                && crate::limits::models::is_claude(m)
                && (c.real_cost_picos != 0 || c.rated_cost_picos != 0)
            {
                claude.entry(k.clone()).or_default().push((
                    period.to_owned(),
                    c.real_cost_picos,
                    c.rated_cost_picos,
                ));
            }
            if let (Dim::AM(a, m), Some(("hourly", p))) = (&dim, &gran) {
                let fields = embedded
                    .entry(format!("account_usage:hourly:{a}:{p}"))
                    .or_default();
                for (f, v) in write_hash(period, &Dim::AM(a.clone(), m.clone()), c) {
                    fields.push((format!("model:{m}:{f}"), v));
                }
            }
            // Cost strings of keys: decimal dollars (v1 adds to them with INCRBYFLOAT), written
            // exactly.
            if let Dim::K(k) = &dim {
                let (cost_gran, suffix) = match &gran {
                    None => ("total", String::new()),
                    Some((g, p)) => (*g, format!(":{p}")),
                };
                let ttl = self.ttl("cost", period);
                if c.rated_cost_picos != 0 {
                    let name = format!("usage:cost:{cost_gran}:{k}{suffix}");
                    self.put(
                        "cost counters (usage:cost:*)",
                        V1Key::new(name, ttl, V1Value::Str(fmt_picos(c.rated_cost_picos))),
                    );
                }
                if c.real_cost_picos != 0 && matches!(cost_gran, "total" | "daily") {
                    let name = format!("usage:cost:real:{cost_gran}:{k}{suffix}");
                    self.put(
                        "cost counters (usage:cost:*)",
                        V1Key::new(name, ttl, V1Value::Str(fmt_picos(c.real_cost_picos))),
                    );
                }
            }
            let Some(name) = v1_hash_name(period, &dim) else {
                Report::add(
                    &mut self.report.rebuilt,
                    "crs buckets v1 has no key for (derived again on import)",
                    1,
                );
                continue;
            };
            hashes += 1;
            let ttl = self.ttl("hash", period);
            self.out.insert(
                name.clone(),
                V1Key::new(name, ttl, V1Value::Hash(write_hash(period, &dim, c))),
            );
        }
        Report::add(&mut self.report.imported, "usage hashes", hashes);
        for (name, fields) in embedded {
            let period = parse_bucket_period_of_hourly(&name);
            let ttl = period.map(|p| self.ttl("hash", &p)).unwrap_or(7 * DAY);
            let k = self
                .out
                .entry(name.clone())
                .or_insert_with(|| V1Key::new(name, ttl, V1Value::Hash(Vec::new())));
            if let V1Value::Hash(h) = &mut k.value {
                h.extend(fields);
            }
        }

        // Weekly and total cost of Claude models per key (v1's `usage:opus:*`).
        let settings: HashMap<&str, &ApiKey> = keys.iter().map(|k| (k.id.as_str(), k)).collect();
        for (key_id, rows) in claude {
            let (mut real, mut rated): (Picos, Picos) = (0, 0);
            for (_, re, ra) in rows.iter().filter(|r| r.0 == crate::usage::bucket::TOTAL) {
                real = real.saturating_add(*re);
                rated = rated.saturating_add(*ra);
            }
            for (infix, v) in [("", rated), ("real:", real)] {
                if v != 0 {
                    self.put(
                        "weekly/total Claude cost (usage:opus:*)",
                        V1Key::new(
                            format!("usage:opus:{infix}total:{key_id}"),
                            -1,
                            V1Value::Str(fmt_picos(v)),
                        ),
                    );
                }
            }
            let (day, hour) = settings
                .get(key_id.as_str())
                .map(|k| (k.weekly_reset_day, k.weekly_reset_hour))
                .unwrap_or((1, 0));
            let ws = crate::limits::meter::week_start(self.now, self.off, day, hour);
            let ws_local = ws.with_timezone(&self.off);
            let first_day = ws_local.format("%Y-%m-%d").to_string();
            let first_hour = ws_local.format("%Y-%m-%dT%H").to_string();
            let today = self
                .now
                .with_timezone(&self.off)
                .format("%Y-%m-%d")
                .to_string();
            let (mut wreal, mut wrated): (Picos, Picos) = (0, 0);
            // As `limits::restore_meter`: the hours of the first (partial) day from the reset
            // hour on, then whole days up to today.
            for (p, re, ra) in &rows {
                let include = if let Some(h) = p.strip_prefix("h:") {
                    h.starts_with(&first_day) && h >= first_hour.as_str()
                } else if let Some(d) = p.strip_prefix("d:") {
                    d > first_day.as_str() && d <= today.as_str()
                } else {
                    false
                };
                if include {
                    wreal = wreal.saturating_add(*re);
                    wrated = wrated.saturating_add(*ra);
                }
            }
            let period = ws_local.format("%Y-%m-%dT%H").to_string();
            let ttl = (14 * DAY - (self.now - ws).num_milliseconds()).max(HOUR);
            for (infix, v) in [("", wrated), ("real:", wreal)] {
                if v != 0 {
                    self.put(
                        "weekly/total Claude cost (usage:opus:*)",
                        V1Key::new(
                            format!("usage:opus:{infix}weekly:{key_id}:{period}"),
                            ttl,
                            V1Value::Str(fmt_picos(v)),
                        ),
                    );
                }
            }
        }
        Ok(())
    }
}

/// `account_usage:hourly:{acc}:{date}:{HH}` -> `h:{date}T{HH}`.
fn parse_bucket_period_of_hourly(name: &str) -> Option<String> {
    let (rest, hh) = name.rsplit_once(':')?;
    let (_, d) = rest.rsplit_once(':')?;
    Some(format!("h:{d}T{hh}"))
}

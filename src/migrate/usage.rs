//! v1's usage keys <-> crs buckets: key names, periods and hash fields.
//!
//! Costs: v1 keeps integer micro-dollars in its hashes (`realCostMicro` / `ratedCostMicro`,
//! each request rounded before it is added) and float dollars in its cost strings; crs keeps
//! exact pico-dollars. On export a hash gets v1's micro-dollar fields (rounded), and, when the
//! exact amount is not a whole number of micro-dollars, crs's own `realCostPico` /
//! `ratedCostPico` beside them, which v1 ignores. On import the pico-dollar fields are taken
//! while they still round to the micro-dollar fields (v1 has not added to the bucket since),
//! else the micro-dollar fields; so crs -> v1 -> crs keeps every cost exactly.

use crate::model::{PICOS_PER_MICRO, Picos, micros_to_picos, picos_to_micros};
use crate::usage::{Counters, bucket};

/// A bucket dimension, as in `usage::bucket`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    G,
    K(String),
    A(String),
    M(String),
    KM(String, String),
    AM(String, String),
}

impl Dim {
    /// The crs bucket key of this dimension in `period` (`t`, `d:…`, `m:…`, `h:…`).
    pub fn bucket(&self, period: &str) -> String {
        match self {
            Dim::G => bucket::global(period),
            Dim::K(k) => bucket::key(period, k),
            Dim::A(a) => bucket::account(period, a),
            Dim::M(m) => bucket::model(period, m),
            Dim::KM(k, m) => bucket::key_model(period, k, m),
            Dim::AM(a, m) => bucket::account_model(period, a, m),
        }
    }
}

/// Split a crs bucket key into (period, dimension).
pub fn parse_bucket(key: &str) -> Option<(&str, Dim)> {
    let (period, rest) = key.split_once('|')?;
    let mut it = rest.splitn(3, '|');
    let dim = match (it.next()?, it.next(), it.next()) {
        ("g", None, None) => Dim::G,
        ("k", Some(k), None) => Dim::K(k.into()),
        ("a", Some(a), None) => Dim::A(a.into()),
        ("m", Some(m), None) => Dim::M(m.into()),
        ("km", Some(k), Some(m)) => Dim::KM(k.into(), m.into()),
        ("am", Some(a), Some(m)) => Dim::AM(a.into(), m.into()),
        _ => return None,
    };
    Some((period, dim))
}

/// What a v1 usage key holds.
#[derive(Debug, Clone, PartialEq)]
pub enum UsageKind {
    /// A hash of counters.
    Hash,
    /// A cost string (float dollars): rated (`usage:cost:*`) or real (`usage:cost:real:*`).
    Cost { real: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub struct UsageKey {
    pub period: String,
    pub dim: Dim,
    pub kind: UsageKind,
}

fn digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && digits(&s[..4], 4)
        && digits(&s[5..7], 2)
        && digits(&s[8..], 2)
}

fn is_month(s: &str) -> bool {
    s.len() == 7 && s.as_bytes()[4] == b'-' && digits(&s[..4], 4) && digits(&s[5..], 2)
}

/// Strip a period suffix of the given granularity from `s` (`…:{date}`, `…:{month}`,
/// `…:{date}:{HH}`): (rest, crs period).
fn strip_period<'a>(s: &'a str, gran: &str) -> Option<(&'a str, String)> {
    match gran {
        "daily" => {
            let (rest, d) = s.rsplit_once(':')?;
            is_date(d).then(|| (rest, bucket::day(d)))
        }
        "monthly" => {
            let (rest, m) = s.rsplit_once(':')?;
            is_month(m).then(|| (rest, bucket::month(m)))
        }
        "hourly" => {
            let (rest, hh) = s.rsplit_once(':')?;
            let (rest, d) = rest.rsplit_once(':')?;
            (is_date(d) && digits(hh, 2)).then(|| (rest, bucket::hour(&format!("{d}T{hh}"))))
        }
        _ => None,
    }
}

/// A period suffix alone (`{date}`, `{month}`, `{date}:{HH}`) of the given granularity.
fn whole_period(s: &str, gran: &str) -> Option<String> {
    strip_period(&format!("x:{s}"), gran).map(|(_, p)| p)
}

fn simple_id(s: &str) -> bool {
    !s.is_empty() && !s.contains(':')
}

/// Parse a v1 usage key name (hash buckets and cost strings). Index sets and other derived
/// keys are not usage keys (`None`).
pub fn parse_v1(name: &str) -> Option<UsageKey> {
    let hash = |period: String, dim: Dim| {
        Some(UsageKey {
            period,
            dim,
            kind: UsageKind::Hash,
        })
    };
    if let Some(rest) = name.strip_prefix("account_usage:") {
        if rest.contains(":index:") {
            return None;
        }
        if let Some(rest) = rest.strip_prefix("model:") {
            let (gran, rest) = rest.split_once(':')?;
            let (rest, period) = strip_period(rest, gran)?;
            let (acc, model) = rest.split_once(':')?;
            return (simple_id(acc) && !model.is_empty())
                .then(|| hash(period, Dim::AM(acc.into(), model.into())))?;
        }
        for gran in ["daily", "monthly", "hourly"] {
            if let Some(r) = rest.strip_prefix(gran).and_then(|r| r.strip_prefix(':')) {
                let (acc, period) = strip_period(r, gran)?;
                return simple_id(acc).then(|| hash(period, Dim::A(acc.into())))?;
            }
        }
        return simple_id(rest).then(|| hash(bucket::TOTAL.into(), Dim::A(rest.into())))?;
    }
    let rest = name.strip_prefix("usage:")?;
    if rest.contains(":index:") {
        return None;
    }
    if let Some(r) = rest.strip_prefix("cost:") {
        let (real, r) = match r.strip_prefix("real:") {
            Some(r) => (true, r),
            None => (false, r),
        };
        let (gran, r) = r.split_once(':')?;
        let (key, period) = if gran == "total" {
            (r, bucket::TOTAL.to_owned())
        } else {
            strip_period(r, gran)?
        };
        return simple_id(key).then(|| UsageKey {
            period,
            dim: Dim::K(key.into()),
            kind: UsageKind::Cost { real },
        });
    }
    if let Some(r) = rest.strip_prefix("global:") {
        if r == "total" {
            return hash(bucket::TOTAL.into(), Dim::G);
        }
        let (gran, p) = r.split_once(':')?;
        return hash(whole_period(p, gran)?, Dim::G);
    }
    if let Some(r) = rest.strip_prefix("model:") {
        let (gran, r) = r.split_once(':')?;
        let (model, period) = strip_period(r, gran)?;
        return (!model.is_empty()).then(|| hash(period, Dim::M(model.into())))?;
    }
    for gran in ["daily", "monthly", "hourly"] {
        if let Some(r) = rest.strip_prefix(gran).and_then(|r| r.strip_prefix(':')) {
            let (key, period) = strip_period(r, gran)?;
            return simple_id(key).then(|| hash(period, Dim::K(key.into())))?;
        }
    }
    // usage:{keyId}:model:{alltime|daily|monthly|hourly}:{model}[:{period}]
    if let Some((key, r)) = rest.split_once(":model:") {
        if !simple_id(key) {
            return None;
        }
        let (gran, r) = r.split_once(':')?;
        let (model, period) = if gran == "alltime" {
            (r, bucket::TOTAL.to_owned())
        } else {
            strip_period(r, gran)?
        };
        return (!model.is_empty()).then(|| hash(period, Dim::KM(key.into(), model.into())))?;
    }
    simple_id(rest).then(|| hash(bucket::TOTAL.into(), Dim::K(rest.into())))?
}

/// v1's period spelling of a crs period: (granularity word, suffix) — `("daily",
/// "2026-11-22")`, `("hourly", "2026-11-22:11")`; `None` for all time.
pub fn v1_period(period: &str) -> Option<(&'static str, String)> {
    if let Some(d) = period.strip_prefix("d:") {
        return Some(("daily", d.to_owned()));
    }
    if let Some(m) = period.strip_prefix("m:") {
        return Some(("monthly", m.to_owned()));
    }
    period
        .strip_prefix("h:")
        .map(|h| ("hourly", h.replacen('T', ":", 1)))
}

/// The v1 hash a crs bucket is exported to; `None` where v1 has no such key (all-time per
/// model and per account-model, hourly global): the importer derives those again.
pub fn v1_hash_name(period: &str, dim: &Dim) -> Option<String> {
    match v1_period(period) {
        None => match dim {
            Dim::G => Some("usage:global:total".into()),
            Dim::K(k) => Some(format!("usage:{k}")),
            Dim::A(a) => Some(format!("account_usage:{a}")),
            Dim::KM(k, m) => Some(format!("usage:{k}:model:alltime:{m}")),
            Dim::M(_) | Dim::AM(..) => None,
        },
        Some((gran, p)) => match dim {
            Dim::G if gran == "hourly" => None,
            Dim::G => Some(format!("usage:global:{gran}:{p}")),
            Dim::K(k) => Some(format!("usage:{gran}:{k}:{p}")),
            Dim::A(a) => Some(format!("account_usage:{gran}:{a}:{p}")),
            Dim::M(m) => Some(format!("usage:model:{gran}:{m}:{p}")),
            Dim::KM(k, m) => Some(format!("usage:{k}:model:{gran}:{m}:{p}")),
            Dim::AM(a, m) => Some(format!("account_usage:model:{gran}:{a}:{m}:{p}")),
        },
    }
}

/// Counters read from one v1 hash.
#[derive(Debug, Default, Clone)]
pub struct HashCounters {
    pub c: Counters,
    /// v1's `realCostMicro` / `ratedCostMicro`.
    pub real_micros: Option<i64>,
    pub rated_micros: Option<i64>,
    /// crs's exact `realCostPico` / `ratedCostPico`, written by `crs export`.
    pub real_exact: Option<Picos>,
    pub rated_exact: Option<Picos>,
    /// Fields this importer does not map (reported).
    pub unknown: Vec<String>,
    /// `model:{model}:{field}` fields of account hourly hashes: model -> its counters.
    pub embedded: Vec<(String, HashCounters)>,
}

impl HashCounters {
    /// The hash's real cost in pico-dollars, if it has one (see the module docs).
    pub fn real_picos(&self) -> Option<Picos> {
        exact(self.real_micros, self.real_exact)
    }

    /// The hash's rated cost in pico-dollars, if it has one.
    pub fn rated_picos(&self) -> Option<Picos> {
        exact(self.rated_micros, self.rated_exact)
    }
}

fn exact(micros: Option<i64>, picos: Option<Picos>) -> Option<Picos> {
    match (micros, picos) {
        (Some(m), Some(p)) if picos_to_micros(p) == m => Some(p),
        (Some(m), _) => Some(micros_to_picos(m)),
        (None, p) => p,
    }
}

fn num(v: &str) -> u64 {
    v.trim()
        .parse::<u64>()
        .ok()
        .or_else(|| {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|f| *f > 0.0)
                .map(|f| f.round() as u64)
        })
        .unwrap_or(0)
}

fn inum(v: &str) -> i64 {
    v.trim()
        .parse::<i64>()
        .ok()
        .or_else(|| v.trim().parse::<f64>().ok().map(|f| f.round() as i64))
        .unwrap_or(0)
}

/// Apply one field; false when the field is not a counter this version maps.
fn apply(h: &mut HashCounters, field: &str, v: &str) -> bool {
    let f = field.strip_prefix("total").map_or(field.to_owned(), |r| {
        let mut s = r.to_owned();
        if let Some(c) = s.get_mut(0..1) {
            c.make_ascii_lowercase();
        }
        s
    });
    let c = &mut h.c;
    match f.as_str() {
        "requests" => c.requests = num(v),
        "inputTokens" => c.input_tokens = num(v),
        "outputTokens" => c.output_tokens = num(v),
        "cacheCreateTokens" => c.cache_create_tokens = num(v),
        "cacheReadTokens" => c.cache_read_tokens = num(v),
        "ephemeral5mTokens" => c.ephemeral_5m_tokens = num(v),
        "ephemeral1hTokens" => c.ephemeral_1h_tokens = num(v),
        "errors" => c.errors = num(v),
        "realCostMicro" => h.real_micros = Some(inum(v)),
        "ratedCostMicro" => h.rated_micros = Some(inum(v)),
        "realCostPico" => h.real_exact = Some(inum(v)),
        "ratedCostPico" => h.rated_exact = Some(inum(v)),
        // Sums of the fields above, recomputed by crs.
        "tokens" | "Tokens" | "allTokens" | "AllTokens" => {}
        _ => return false,
    }
    true
}

pub fn read_hash(fields: &[(String, String)]) -> HashCounters {
    let mut h = HashCounters::default();
    let mut embedded: Vec<(String, HashCounters)> = Vec::new();
    for (f, v) in fields {
        if let Some(rest) = f.strip_prefix("model:")
            && let Some((model, field)) = rest.rsplit_once(':')
        {
            let slot = match embedded.iter().position(|(m, _)| m == model) {
                Some(i) => &mut embedded[i].1,
                None => {
                    embedded.push((model.to_owned(), HashCounters::default()));
                    &mut embedded.last_mut().expect("just pushed").1
                }
            };
            if !apply(slot, field, v) {
                h.unknown.push(format!("model:*:{field}"));
            }
            continue;
        }
        if !apply(&mut h, f, v) {
            h.unknown.push(f.clone());
        }
    }
    h.embedded = embedded;
    h
}

/// The fields of a v1 usage hash for `c`, spelled as v1 spells them for this key.
pub fn write_hash(period: &str, dim: &Dim, c: &Counters) -> Vec<(String, String)> {
    let alltime = period == bucket::TOTAL;
    let total_prefix = alltime && matches!(dim, Dim::K(_) | Dim::A(_));
    let name = |f: &str| -> String {
        if total_prefix {
            let mut s = String::from("total");
            s.push_str(&f[..1].to_ascii_uppercase());
            s.push_str(&f[1..]);
            s
        } else {
            f.to_owned()
        }
    };
    let mut out = vec![
        (name("requests"), c.requests.to_string()),
        (name("inputTokens"), c.input_tokens.to_string()),
        (name("outputTokens"), c.output_tokens.to_string()),
        (name("cacheCreateTokens"), c.cache_create_tokens.to_string()),
        (name("cacheReadTokens"), c.cache_read_tokens.to_string()),
        (name("ephemeral5mTokens"), c.ephemeral_5m_tokens.to_string()),
        (name("ephemeral1hTokens"), c.ephemeral_1h_tokens.to_string()),
    ];
    let with_tokens = matches!(dim, Dim::K(_) | Dim::A(_));
    if with_tokens {
        out.push((name("tokens"), c.tokens().to_string()));
    }
    if !(alltime && matches!(dim, Dim::KM(..))) {
        out.push((name("allTokens"), c.all_tokens().to_string()));
    }
    // v1 keeps micro-dollar costs on key-model hashes; crs writes them wherever a bucket has
    // a cost, with the exact pico-dollars beside them when rounding lost something, so a
    // round trip through v1's layout keeps every bucket's cost exactly.
    let (real, rated) = (c.real_cost_picos, c.rated_cost_picos);
    if matches!(dim, Dim::KM(..)) || real != 0 || rated != 0 {
        out.push(("realCostMicro".into(), picos_to_micros(real).to_string()));
        out.push(("ratedCostMicro".into(), picos_to_micros(rated).to_string()));
        if real % PICOS_PER_MICRO != 0 || rated % PICOS_PER_MICRO != 0 {
            out.push(("realCostPico".into(), real.to_string()));
            out.push(("ratedCostPico".into(), rated.to_string()));
        }
    }
    if c.errors != 0 {
        out.push(("errors".into(), c.errors.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> (String, Dim, UsageKind) {
        let u = parse_v1(name).unwrap_or_else(|| panic!("{name} does not parse"));
        (u.period, u.dim, u.kind)
    }

    #[test]
    fn v1_names_parse() {
        use UsageKind::*;
        let k = "3ecd74bd-1e3d-40e2-abc9-b3751611e4b4";
        assert_eq!(
            p(&format!("usage:{k}")),
            ("t".into(), Dim::K(k.into()), Hash)
        );
        assert_eq!(
            p(&format!("usage:daily:{k}:2026-11-22")),
            ("d:2026-11-22".into(), Dim::K(k.into()), Hash)
        );
        assert_eq!(
            p(&format!("usage:hourly:{k}:2026-11-22:11")),
            ("h:2026-11-22T11".into(), Dim::K(k.into()), Hash)
        );
        assert_eq!(
            p(&format!(
                "usage:{k}:model:alltime:claude-3-5-haiku-20241022"
            )),
            (
                "t".into(),
                Dim::KM(k.into(), "claude-3-5-haiku-20241022".into()),
                Hash
            )
        );
        // Model names with colons (Bedrock ids).
        let m = "us.anthropic.claude-3-7-sonnet-20250219-v1:0";
        assert_eq!(
            p(&format!("usage:{k}:model:hourly:{m}:2026-11-22:11")),
            ("h:2026-11-22T11".into(), Dim::KM(k.into(), m.into()), Hash)
        );
        assert_eq!(
            p(&format!("usage:model:monthly:{m}:2026-11")),
            ("m:2026-11".into(), Dim::M(m.into()), Hash)
        );
        assert_eq!(
            p(&format!("account_usage:model:daily:acc:{m}:2026-11-22")),
            ("d:2026-11-22".into(), Dim::AM("acc".into(), m.into()), Hash)
        );
        assert_eq!(
            p("account_usage:acc"),
            ("t".into(), Dim::A("acc".into()), Hash)
        );
        assert_eq!(
            p("account_usage:hourly:acc:2026-11-22:11"),
            ("h:2026-11-22T11".into(), Dim::A("acc".into()), Hash)
        );
        assert_eq!(p("usage:global:total"), ("t".into(), Dim::G, Hash));
        assert_eq!(
            p("usage:global:monthly:2026-11"),
            ("m:2026-11".into(), Dim::G, Hash)
        );
        assert_eq!(
            p(&format!("usage:cost:real:daily:{k}:2026-11-22")),
            ("d:2026-11-22".into(), Dim::K(k.into()), Cost { real: true })
        );
        assert_eq!(
            p(&format!("usage:cost:total:{k}")),
            ("t".into(), Dim::K(k.into()), Cost { real: false })
        );
        for derived in [
            "usage:daily:index:2026-11-22",
            "usage:model:hourly:index:2026-11-22:11",
            "usage:model:monthly:months",
            "account_usage:model:daily:index:2026-11-22",
            "usage:keymodel:daily:index:2026-11-22",
            "usage:records:abc",
            "usage:opus:total:abc",
            "usage:cost:dedup:abc",
        ] {
            assert_eq!(parse_v1(derived), None, "{derived}");
        }
    }

    #[test]
    fn names_round_trip() {
        let dims = [
            Dim::G,
            Dim::K("k".into()),
            Dim::A("a".into()),
            Dim::M("m:1".into()),
            Dim::KM("k".into(), "m:1".into()),
            Dim::AM("a".into(), "m:1".into()),
        ];
        for period in ["t", "d:2026-11-22", "m:2026-11", "h:2026-11-22T11"] {
            for d in &dims {
                if let Some(n) = v1_hash_name(period, d) {
                    let u = parse_v1(&n).unwrap_or_else(|| panic!("{n}"));
                    assert_eq!((u.period.as_str(), &u.dim), (period, d), "{n}");
                }
            }
        }
    }

    #[test]
    fn fields_round_trip() {
        let c = Counters {
            requests: 4,
            input_tokens: 460,
            output_tokens: 86,
            cache_create_tokens: 10,
            cache_read_tokens: 30,
            ephemeral_5m_tokens: 10,
            ephemeral_1h_tokens: 0,
            real_cost_picos: 5_144_000_000,
            rated_cost_picos: 6_000_000_000,
            errors: 1,
        };
        let exact = Counters {
            real_cost_picos: 5_143_900_001,
            rated_cost_picos: 6_000_000_000,
            ..c
        };
        for c in [c, exact] {
            for (period, dim) in [
                ("t", Dim::K("k".into())),
                ("d:2026-11-22", Dim::M("m".into())),
            ] {
                let f = write_hash(period, &dim, &c);
                let h = read_hash(&f);
                assert!(h.unknown.is_empty(), "{:?}", h.unknown);
                let mut back = h.c;
                back.real_cost_picos = h.real_picos().unwrap();
                back.rated_cost_picos = h.rated_picos().unwrap();
                assert_eq!(back, c);
            }
        }
        // Whole micro-dollars: v1's fields only, as v1 writes them.
        let f = write_hash("t", &Dim::K("k".into()), &c);
        assert!(f.iter().any(|(k, v)| k == "realCostMicro" && v == "5144"));
        assert!(!f.iter().any(|(k, _)| k.ends_with("Pico")));
        // Otherwise v1's rounded fields and the exact ones.
        let f = write_hash("t", &Dim::K("k".into()), &exact);
        assert!(f.iter().any(|(k, v)| k == "realCostMicro" && v == "5144"));
        assert!(
            f.iter()
                .any(|(k, v)| k == "realCostPico" && v == "5143900001")
        );
        assert!(
            f.iter()
                .any(|(k, v)| k == "ratedCostPico" && v == "6000000000")
        );
        let f = write_hash("t", &Dim::K("k".into()), &c);
        assert!(f.iter().any(|(k, v)| k == "totalAllTokens" && v == "586"));
        assert!(f.iter().any(|(k, v)| k == "totalTokens" && v == "546"));
    }

    #[test]
    fn exact_costs_give_way_to_what_v1_added_since() {
        let read = |pairs: &[(&str, &str)]| {
            let f: Vec<(String, String)> = pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            let h = read_hash(&f);
            (h.real_picos(), h.rated_picos())
        };
        // As exported: the exact amounts.
        assert_eq!(
            read(&[
                ("realCostMicro", "186"),
                ("ratedCostMicro", "373"),
                ("realCostPico", "186400000"),
                ("ratedCostPico", "372800000"),
            ]),
            (Some(186_400_000), Some(372_800_000))
        );
        // v1 served more requests on it afterwards: its own fields win.
        assert_eq!(
            read(&[
                ("realCostMicro", "372"),
                ("ratedCostMicro", "745"),
                ("realCostPico", "186400000"),
                ("ratedCostPico", "372800000"),
            ]),
            (Some(372_000_000), Some(745_000_000))
        );
        // v1's own hashes.
        assert_eq!(
            read(&[("realCostMicro", "186"), ("ratedCostMicro", "186")]),
            (Some(186_000_000), Some(186_000_000))
        );
        assert_eq!(read(&[("requests", "1")]), (None, None));
    }

    #[test]
    fn embedded_model_fields() {
        let f: Vec<(String, String)> = [
            ("requests", "5"),
            ("model:gpt-4.1:requests", "1"),
            ("model:gpt-4.1:inputTokens", "200"),
            ("model:gpt-5:requests", "4"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let h = read_hash(&f);
        assert_eq!(h.c.requests, 5);
        assert_eq!(h.embedded.len(), 2);
        assert_eq!(h.embedded[0].1.c.input_tokens, 200);
    }
}

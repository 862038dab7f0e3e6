//! Model prices (LiteLLM's table) and the cost of one request.
//!
//! The table is `data/model_prices_and_context_window.json`, embedded at build time; a file with
//! the same name in the data directory replaces it at start (`Pricing::load`). Prices are kept as
//! integer pico-dollars per token (1 USD = 10^12), so a request's cost is an exact integer sum
//! in pico-dollars (`model::Picos`), the unit every recorded cost and total is kept in: a sum
//! of request costs is exactly price x summed tokens.
//!
//! Lookup order (`Pricing::cost`): the exact table key; then the normalized name (see
//! `normalize`: case, provider paths like `anthropic/`, Bedrock region/vendor prefixes like
//! `us.anthropic.`, `@20250805` and `-v1:0` suffixes, `[1m]`), first with its date and then
//! without; then the model's family (`Family`); else `Unknown`, which costs 0. All indexes are
//! built once, at construction: an exact hit is one hash lookup and allocates nothing.
//!
//! Choices, and how they compare with v1 (Wei-Shaw/claude-relay-service,
//! `src/services/pricingService.js` `calculateCost` and `src/utils/costCalculator.js`):
//!
//! - Missing cache prices, Claude models (the table key contains `claude`, or its provider
//!   contains `anthropic`): Anthropic's documented multipliers of the input price, which are
//!   also v1's `claudeCacheMultipliers`: 5-minute write 1.25x, 1-hour write 2x, read 0.1x.
//!   LiteLLM itself would price a missing 1-hour rate at the 5-minute rate, which undercharges
//!   Claude (Anthropic bills 1-hour writes at 2x input); most Bedrock/Vertex Claude entries lack
//!   the 1-hour field.
//! - Missing cache prices, other models: LiteLLM's rule (`_get_token_base_cost`): a missing
//!   write or read price is the input price, a missing 1-hour price is the 5-minute price.
//!   v1 mostly charged 0 for them (it used the input price only for OpenAI cache writes).
//! - Long context: LiteLLM's `*_above_<N>k_tokens` fields define tiers. When input + cache
//!   writes + cache reads exceed N (strictly), the tier's prices apply to every token of the
//!   request, output included (LiteLLM `_get_token_base_cost`; Anthropic's long-context rule).
//!   Any N is honoured (200k for Sonnet 4/Gemini, 272k for GPT-5.4+, 100k, ...); the highest
//!   exceeded tier wins. A tier field that is missing is inherited from the tier below, as in
//!   LiteLLM, except Claude cache prices, which are multiples of the tier's input price (v1).
//!   v1 differs: it applies the tier only when the request opted into 1M context (`[1m]`
//!   model suffix or `anthropic-beta: context-1m-2025-08-07`) and, in current versions, never
//!   for Claude ("Claude models use flat pricing"); OpenAI requests go through costCalculator's
//!   flat path. crs has no beta flag in `TokenUsage`; for Claude, more than 200k input tokens
//!   already implies the 1M opt-in, and LiteLLM only lists tier prices where the vendor charges
//!   them (Sonnet 4/4.5 via Bedrock/Vertex; none for the flat-priced 4.6 models). So the table
//!   decides.
//! - Cache writes: `ephemeral_1h_tokens` at the 1-hour price, the rest of `cache_create_tokens`
//!   (all of it when the split is zero-zero) at the 5-minute price, as v1 and LiteLLM.
//! - Rounding: none. v1 computed each request's cost in floating point and rounded it to
//!   micro-dollars (`Math.round`) before adding it to its `*CostMicro` counters, so its totals
//!   drift from the price table by up to half a micro-dollar per request (see the tests
//!   `v1_fixture_per_key_and_model_costs` and `v1_float_noise_explains_one_micro`).
//! - Service rates (`apply_rate`): the key's multiplier applies to the exact cost, and the
//!   rated cost is rounded to a whole pico-dollar once per request.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value};

use super::TokenUsage;
use crate::model::Picos;

/// The name of the table, both embedded (from `data/`) and as an override in the data directory.
pub const FILE_NAME: &str = "model_prices_and_context_window.json";

static EMBEDDED: &[u8] = include_bytes!("../../data/model_prices_and_context_window.json");

/// Let the kernel unmap the pages of static data that was read once (the 2.6 MB table, parsed
/// at start-up): they are clean and file-backed, so they need not stay resident, and a later
/// read faults them back in from the binary unchanged.
fn release_pages(data: &'static [u8]) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf only reads a system constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let start = (data.as_ptr() as usize).div_ceil(page) * page;
        let end = (data.as_ptr() as usize + data.len()) / page * page;
        if end > start {
            // SAFETY: the range lies inside `data`, a read-only private mapping of the
            // executable that is never written; MADV_DONTNEED on it only drops resident pages,
            // and the next access reads the same bytes from the file again.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = data;
}

/// Pico-dollars per USD.
const PICO_PER_USD: f64 = 1e12;

/// Prices of one model, in pico-dollars per token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    pub input: i64,
    pub output: i64,
    /// 5-minute cache write (`cache_creation_input_token_cost`).
    pub cache_write_5m: i64,
    /// 1-hour cache write (`cache_creation_input_token_cost_above_1hr`).
    pub cache_write_1h: i64,
    /// Cache read (`cache_read_input_token_cost`).
    pub cache_read: i64,
}

/// Long-context prices, used for a whole request whose input exceeds `above_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tier {
    pub above_tokens: u64,
    pub rates: Rates,
}

/// One table entry, with missing cache prices already filled in (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelPrice {
    pub base: Rates,
    /// Ascending by `above_tokens`; usually empty.
    pub tiers: Vec<Tier>,
    /// LiteLLM's `litellm_provider`.
    pub provider: Option<Box<str>>,
    /// LiteLLM's `mode` (chat, completion, responses, ...).
    pub mode: Option<Box<str>>,
}

impl ModelPrice {
    /// The prices that apply to a request with this many input tokens (input + cache writes +
    /// cache reads).
    pub fn rates_for(&self, prompt_tokens: u64) -> &Rates {
        self.tiers
            .iter()
            .rev()
            .find(|t| prompt_tokens > t.above_tokens)
            .map_or(&self.base, |t| &t.rates)
    }
}

/// How a model name found its price. The string is the table key that was used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceMatch {
    /// The name is a table key.
    Exact(Arc<str>),
    /// The name matched a key after normalization (case, provider/region prefixes, version and
    /// date suffixes).
    Normalized(Arc<str>),
    /// Unknown name, priced as a representative of its family (e.g. any `*opus*` as Opus).
    Family(Arc<str>),
    /// No price: the cost is 0.
    Unknown,
}

impl PriceMatch {
    pub fn is_unknown(&self) -> bool {
        matches!(self, PriceMatch::Unknown)
    }

    /// "exact", "normalized", "family" (estimated from a similar model) or "unknown".
    pub fn kind(&self) -> &'static str {
        match self {
            PriceMatch::Exact(_) => "exact",
            PriceMatch::Normalized(_) => "normalized",
            PriceMatch::Family(_) => "family",
            PriceMatch::Unknown => "unknown",
        }
    }

    /// The table key used, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            PriceMatch::Exact(k) | PriceMatch::Normalized(k) | PriceMatch::Family(k) => Some(k),
            PriceMatch::Unknown => None,
        }
    }
}

/// The cost of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cost {
    /// Exact, in pico-dollars (saturating at `i64::MAX`, about 9.2 million dollars).
    pub picos: Picos,
    pub matched: PriceMatch,
}

/// A cost times a key's service rate, rounded to a whole pico-dollar once (halves away from
/// zero). The product is taken in f64, which holds costs below 2^53 pico-dollars (about
/// $9,000 per request) exactly, so the result is off by at most the rounding of that one
/// multiplication, far below a pico-dollar. A rate of 1 returns the cost unchanged; a rate
/// that is not a finite number counts as 0; results outside i64 saturate.
pub fn apply_rate(picos: Picos, rate: f64) -> Picos {
    if rate == 1.0 {
        return picos;
    }
    if !rate.is_finite() {
        return 0;
    }
    (picos as f64 * rate).round() as Picos
}

/// Family representatives, each a list of candidates tried in order (the first one the table
/// prices wins, so an older or newer override table still resolves). An unknown Claude model
/// is priced as the current generation of its family (Opus 4.7: $5/$25, Sonnet 4.6: $3/$15,
/// Haiku 4.5: $1/$5 per million tokens); any other unknown `claude*` as Sonnet, which is also
/// v1's price for unknown models. Unknown `gpt-*` as `gpt-5`, v1's fallback for newer GPT-5
/// names. Unknown `gemini-*` as 2.5 Flash when the name says flash/lite, else 2.5 Pro.
const OPUS: &[&str] = &[
    "claude-opus-4-7",
    "claude-opus-4-6",
    "claude-opus-4-5",
    "claude-opus-4-1",
];
const SONNET: &[&str] = &[
    "claude-sonnet-4-6",
    "claude-sonnet-4-5",
    "claude-sonnet-4",
    "claude-3-7-sonnet",
];
const HAIKU: &[&str] = &["claude-haiku-4-5", "claude-3-5-haiku"];
const GPT: &[&str] = &["gpt-5", "gpt-4.1", "gpt-4o"];
const GEMINI_FLASH: &[&str] = &["gemini-2.5-flash", "gemini-2.0-flash"];
const GEMINI_PRO: &[&str] = &["gemini-2.5-pro", "gemini-1.5-pro"];

#[derive(Debug, Clone, Copy, Default)]
struct Families {
    opus: Option<usize>,
    sonnet: Option<usize>,
    haiku: Option<usize>,
    gpt: Option<usize>,
    gemini_flash: Option<usize>,
    gemini_pro: Option<usize>,
}

/// The model price table with its lookup indexes.
#[derive(Clone)]
pub struct Pricing {
    keys: Vec<Arc<str>>,
    prices: Vec<ModelPrice>,
    /// Table key -> index.
    exact: HashMap<Arc<str>, usize>,
    /// `normalize(key)` -> index of the preferred key with that form.
    normalized: HashMap<Box<str>, usize>,
    /// `strip_date(normalize(key))` -> index of the preferred key with that form.
    base: HashMap<Box<str>, usize>,
    families: Families,
}

impl std::fmt::Debug for Pricing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pricing")
            .field("models", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Pricing {
    /// The table shipped in the binary.
    pub fn embedded() -> Pricing {
        let pricing = Pricing::from_json(EMBEDDED).expect("the embedded pricing table parses");
        release_pages(EMBEDDED);
        pricing
    }

    /// `<data_dir>/model_prices_and_context_window.json` when it exists, else the embedded table.
    /// A file that exists but cannot be read or parsed is an error naming it.
    pub fn load(data_dir: &Path) -> Result<Pricing> {
        let path = data_dir.join(FILE_NAME);
        match std::fs::read(&path) {
            Ok(bytes) => Pricing::from_json(&bytes).with_context(|| {
                format!(
                    "pricing file {} is not a valid LiteLLM price table",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Pricing::embedded()),
            Err(e) => Err(e).with_context(|| format!("reading pricing file {}", path.display())),
        }
    }

    /// Parses a LiteLLM table: an object of model name -> entry. `sample_spec`, entries that
    /// are not objects, entries without any token price, unknown fields and non-numeric prices
    /// are ignored. A table with no priced model is an error.
    pub fn from_json(bytes: &[u8]) -> Result<Pricing> {
        let table: Map<String, Value> =
            serde_json::from_slice(bytes).context("expected a JSON object of model entries")?;
        let mut keys = Vec::with_capacity(table.len());
        let mut prices = Vec::with_capacity(table.len());
        for (key, entry) in &table {
            if key == "sample_spec" {
                continue;
            }
            let Some(obj) = entry.as_object() else {
                continue;
            };
            if let Some(price) = parse_entry(key, obj) {
                keys.push(Arc::<str>::from(key.as_str()));
                prices.push(price);
            }
        }
        if keys.is_empty() {
            bail!("no model in the table has a per-token price");
        }
        Ok(Pricing::index(keys, prices))
    }

    fn index(keys: Vec<Arc<str>>, prices: Vec<ModelPrice>) -> Pricing {
        let mut exact = HashMap::with_capacity(keys.len());
        // Normalized form -> (rank, index); the lowest rank wins.
        let mut normalized: HashMap<Box<str>, (Rank, usize)> = HashMap::with_capacity(keys.len());
        let mut base: HashMap<Box<str>, (Rank, usize)> = HashMap::with_capacity(keys.len());
        for (i, key) in keys.iter().enumerate() {
            exact.insert(key.clone(), i);
            let norm = normalize(key);
            if norm.is_empty() {
                continue;
            }
            let rank = rank(key);
            prefer(&mut base, strip_date(&norm), rank.clone(), i);
            prefer(&mut normalized, &norm, rank, i);
        }
        let mut p = Pricing {
            keys,
            prices,
            exact,
            normalized: normalized.into_iter().map(|(k, (_, i))| (k, i)).collect(),
            base: base.into_iter().map(|(k, (_, i))| (k, i)).collect(),
            families: Families::default(),
        };
        p.families = Families {
            opus: p.first_priced(OPUS),
            sonnet: p.first_priced(SONNET),
            haiku: p.first_priced(HAIKU),
            gpt: p.first_priced(GPT),
            gemini_flash: p.first_priced(GEMINI_FLASH),
            gemini_pro: p.first_priced(GEMINI_PRO),
        };
        p
    }

    fn first_priced(&self, candidates: &[&str]) -> Option<usize> {
        candidates.iter().find_map(|c| {
            self.exact.get(*c).copied().or_else(|| {
                let n = normalize(c);
                self.normalized
                    .get(n.as_str())
                    .or_else(|| self.base.get(strip_date(&n)))
                    .copied()
            })
        })
    }

    /// Number of priced models in the table.
    pub fn model_count(&self) -> usize {
        self.keys.len()
    }

    /// The price `cost` would use for this model name, if any.
    pub fn price(&self, model: &str) -> Option<&ModelPrice> {
        self.resolve(model).map(|(i, _)| &self.prices[i])
    }

    /// The price `cost` would use for this model name, and how it was found.
    pub fn lookup(&self, model: &str) -> (Option<&ModelPrice>, PriceMatch) {
        match self.resolve(model) {
            Some((i, m)) => (Some(&self.prices[i]), m),
            None => (None, PriceMatch::Unknown),
        }
    }

    /// The exact cost of one request in pico-dollars. Unknown models cost 0 and are flagged.
    pub fn cost(&self, model: &str, u: &TokenUsage) -> Cost {
        match self.resolve(model) {
            Some((i, matched)) => Cost {
                picos: cost_picos(&self.prices[i], u),
                matched,
            },
            None => Cost {
                picos: 0,
                matched: PriceMatch::Unknown,
            },
        }
    }

    fn resolve(&self, model: &str) -> Option<(usize, PriceMatch)> {
        if let Some(&i) = self.exact.get(model) {
            return Some((i, PriceMatch::Exact(self.keys[i].clone())));
        }
        let norm = normalize(model);
        if norm.is_empty() {
            return None;
        }
        let base = strip_date(&norm);
        if let Some(&i) = self
            .normalized
            .get(norm.as_str())
            .or_else(|| self.base.get(base))
        {
            return Some((i, PriceMatch::Normalized(self.keys[i].clone())));
        }
        self.family(base)
            .map(|i| (i, PriceMatch::Family(self.keys[i].clone())))
    }

    /// An unknown (normalized, undated) name's family representative.
    fn family(&self, name: &str) -> Option<usize> {
        let f = &self.families;
        // Claude first, by family word: a longest-prefix match would turn a future
        // `claude-opus-4-9` into Opus 4 ($15/$75) instead of the current Opus price.
        if name.contains("opus") {
            return f.opus;
        }
        if name.contains("sonnet") {
            return f.sonnet;
        }
        if name.contains("haiku") {
            return f.haiku;
        }
        if name.starts_with("claude") {
            return f.sonnet;
        }
        // Otherwise the longest known prefix on a `-` boundary: `gpt-4o-mini-foo` is
        // `gpt-4o-mini`, `gemini-2.5-pro-preview-xx` is `gemini-2.5-pro`.
        let mut prefix = name;
        while let Some(cut) = prefix.rfind('-') {
            prefix = &prefix[..cut];
            if let Some(&i) = self.base.get(prefix) {
                return Some(i);
            }
        }
        if name.starts_with("gpt-") || name.starts_with("chatgpt") {
            return f.gpt;
        }
        if name.starts_with("gemini") {
            return if name.contains("flash") || name.contains("lite") {
                f.gemini_flash
            } else {
                f.gemini_pro
            };
        }
        None
    }
}

/// The exact pico-dollar sum of one request (saturating).
fn cost_picos(p: &ModelPrice, u: &TokenUsage) -> Picos {
    let prompt = u
        .input_tokens
        .saturating_add(u.cache_create_tokens)
        .saturating_add(u.cache_read_tokens);
    let r = p.rates_for(prompt);
    // Tokens not attributed to the 1-hour TTL are 5-minute writes (all of them when the split
    // is unknown, i.e. zero-zero). A split that claims more than the total is taken as is.
    let write_1h = u.ephemeral_1h_tokens;
    let write_5m = u.ephemeral_5m_tokens.saturating_add(
        u.cache_create_tokens
            .saturating_sub(u.ephemeral_5m_tokens.saturating_add(u.ephemeral_1h_tokens)),
    );
    let t = |n: u64, price: i64| n as i128 * price as i128;
    let pico = t(u.input_tokens, r.input)
        + t(u.output_tokens, r.output)
        + t(write_5m, r.cache_write_5m)
        + t(write_1h, r.cache_write_1h)
        + t(u.cache_read_tokens, r.cache_read);
    pico.clamp(i64::MIN as i128, i64::MAX as i128) as Picos
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Raw per-token prices of one tier (base or long context) as the table gives them.
#[derive(Debug, Clone, Copy, Default)]
struct RawRates {
    input: Option<i64>,
    output: Option<i64>,
    cache_write_5m: Option<i64>,
    cache_write_1h: Option<i64>,
    cache_read: Option<i64>,
}

impl RawRates {
    /// Each field from `self`, else from `other`.
    fn or(&self, other: &RawRates) -> RawRates {
        RawRates {
            input: self.input.or(other.input),
            output: self.output.or(other.output),
            cache_write_5m: self.cache_write_5m.or(other.cache_write_5m),
            cache_write_1h: self.cache_write_1h.or(other.cache_write_1h),
            cache_read: self.cache_read.or(other.cache_read),
        }
    }

    fn slot(&mut self, field: &str) -> Option<&mut Option<i64>> {
        Some(match field {
            "input_cost_per_token" => &mut self.input,
            "output_cost_per_token" => &mut self.output,
            "cache_creation_input_token_cost" => &mut self.cache_write_5m,
            "cache_creation_input_token_cost_above_1hr" => &mut self.cache_write_1h,
            "cache_read_input_token_cost" => &mut self.cache_read,
            _ => return None,
        })
    }
}

const RATE_FIELDS: [&str; 5] = [
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_creation_input_token_cost_above_1hr",
    "cache_creation_input_token_cost",
    "cache_read_input_token_cost",
];

fn pico(v: &Value) -> Option<i64> {
    let usd = v.as_f64()?;
    usd.is_finite().then(|| (usd * PICO_PER_USD).round() as i64)
}

/// `<field>_above_<N>[k]_tokens` -> (field, N). Service-tier and batch variants
/// (`_priority`, `_batches`, ...) do not match and are ignored.
fn tier_field(key: &str) -> Option<(&'static str, u64)> {
    for field in RATE_FIELDS {
        let Some(threshold) = key
            .strip_prefix(field)
            .and_then(|r| r.strip_prefix("_above_"))
            .and_then(|r| r.strip_suffix("_tokens"))
        else {
            continue;
        };
        let (digits, scale) = match threshold.strip_suffix('k') {
            Some(d) => (d, 1000),
            None => (threshold, 1),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        return digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .map(|n| (field, n));
    }
    None
}

fn parse_entry(key: &str, obj: &Map<String, Value>) -> Option<ModelPrice> {
    let mut base = RawRates::default();
    let mut tiers: Vec<(u64, RawRates)> = Vec::new();
    for (field, value) in obj {
        if let Some(slot) = base.slot(field) {
            *slot = pico(value);
        } else if let Some((field, above)) = tier_field(field) {
            let Some(price) = pico(value) else { continue };
            let at = match tiers.iter().position(|(n, _)| *n == above) {
                Some(at) => at,
                None => {
                    tiers.push((above, RawRates::default()));
                    tiers.len() - 1
                }
            };
            *tiers[at].1.slot(field).expect("a rate field") = Some(price);
        }
    }
    if base.input.is_none() && base.output.is_none() {
        return None;
    }
    let provider = obj.get("litellm_provider").and_then(Value::as_str);
    let claude = key.to_ascii_lowercase().contains("claude")
        || provider.is_some_and(|p| p.to_ascii_lowercase().contains("anthropic"));

    // Tiers ascending; a field a tier lacks is inherited from the tier below (LiteLLM walks
    // the exceeded thresholds in order, each defaulting to the previous price). Claude's cache
    // prices are not inherited but derived from the tier's own input price (v1, Anthropic).
    tiers.sort_by_key(|(n, _)| *n);
    let mut below = base;
    let tiers = tiers
        .into_iter()
        .map(|(above_tokens, raw)| {
            let merged = if claude {
                RawRates {
                    input: raw.input.or(below.input),
                    output: raw.output.or(below.output),
                    ..raw
                }
            } else {
                raw.or(&below)
            };
            below = merged;
            Tier {
                above_tokens,
                rates: resolve(&merged, claude),
            }
        })
        .collect();
    Some(ModelPrice {
        base: resolve(&base, claude),
        tiers,
        provider: provider.map(Into::into),
        mode: obj.get("mode").and_then(Value::as_str).map(Into::into),
    })
}

/// 1.25x, rounded half up.
fn times_1_25(p: i64) -> i64 {
    (p * 5 + 2).div_euclid(4)
}
/// 0.1x, rounded half up.
fn tenth(p: i64) -> i64 {
    (p + 5).div_euclid(10)
}

/// Fills missing cache prices: Claude by Anthropic's multipliers of the input price, others as
/// LiteLLM does (the input price; the 5-minute price for 1-hour writes).
fn resolve(raw: &RawRates, claude: bool) -> Rates {
    let input = raw.input.unwrap_or(0);
    let output = raw.output.unwrap_or(0);
    if claude {
        Rates {
            input,
            output,
            cache_write_5m: raw.cache_write_5m.unwrap_or_else(|| times_1_25(input)),
            cache_write_1h: raw.cache_write_1h.unwrap_or(input * 2),
            cache_read: raw.cache_read.unwrap_or_else(|| tenth(input)),
        }
    } else {
        let cache_write_5m = raw.cache_write_5m.unwrap_or(input);
        Rates {
            input,
            output,
            cache_write_5m,
            cache_write_1h: raw.cache_write_1h.unwrap_or(cache_write_5m),
            cache_read: raw.cache_read.unwrap_or(input),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Names

/// Lower is preferred when several keys share a normalized form: first-party keys (no `/`
/// provider path, no Bedrock `region.vendor.` prefix) over Bedrock's global ids over regional
/// ones over provider paths; then the shortest key (the one with the least stripped), then the
/// key itself, so the choice is deterministic. For Claude models LiteLLM no longer lists
/// under Anthropic (e.g. claude-3-5-haiku-20241022) this picks Bedrock's global entry, which
/// carries Anthropic's list price; Vertex's sometimes differs.
type Rank = (usize, usize, usize, Arc<str>);

fn rank(key: &Arc<str>) -> Rank {
    let slashes = key.bytes().filter(|&b| b == b'/').count();
    let last = key.rsplit('/').next().unwrap_or(key);
    let dot_prefixes = vendor_prefixes(&last.to_ascii_lowercase()).0;
    (slashes, dot_prefixes, key.len(), key.clone())
}

fn prefer(map: &mut HashMap<Box<str>, (Rank, usize)>, form: &str, rank: Rank, i: usize) {
    match map.get_mut(form) {
        Some(cur) if cur.0 <= rank => {}
        Some(cur) => *cur = (rank, i),
        None => {
            map.insert(form.into(), (rank, i));
        }
    }
}

/// Strips leading Bedrock region and vendor segments (`us.`, `global.`, `anthropic.`,
/// `us-gov.`...): segments before a `.` made of letters, `-` and `_` only. Model names with a
/// dot in them (`gpt-4.1`, `gemini-2.5-pro`) have a digit before it and are left alone.
fn vendor_prefixes(name: &str) -> (usize, &str) {
    let mut rest = name;
    let mut n = 0;
    while let Some(dot) = rest.find('.') {
        let seg = &rest[..dot];
        if seg.is_empty()
            || !seg
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'-' || b == b'_')
        {
            break;
        }
        rest = &rest[dot + 1..];
        n += 1;
    }
    (n, rest)
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Bedrock's version suffix: `-v1:0`, `-v2:0`; for Claude also a bare `-v1`
/// (`anthropic.claude-opus-4-6-v1`).
fn strip_version(name: &str, claude: bool) -> &str {
    let Some(at) = name.rfind("-v") else {
        return name;
    };
    let tail = &name[at + 2..];
    let versioned = match tail.split_once(':') {
        Some((major, minor)) => all_digits(major) && all_digits(minor),
        None => claude && all_digits(tail),
    };
    if versioned { &name[..at] } else { name }
}

/// The name with case, provider paths, Bedrock prefixes and suffixes, Vertex `@` versions and
/// the `[1m]` long-context alias removed:
/// `bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0` -> `claude-sonnet-4-5-20250929`,
/// `vertex_ai/claude-opus-4-1@20250805` -> `claude-opus-4-1-20250805`,
/// `Claude-Sonnet-4-5[1m]` -> `claude-sonnet-4-5`, `claude-haiku-4.5` -> `claude-haiku-4-5`.
fn normalize(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    let mut s = lower.as_str();
    if let Some(x) = s.strip_suffix("[1m]") {
        s = x.trim_end();
    }
    if let Some(slash) = s.rfind('/') {
        s = &s[slash + 1..];
    }
    s = vendor_prefixes(s).1;
    let mut date = None;
    if let Some((model, version)) = s.split_once('@') {
        s = model;
        if version.len() == 8 && all_digits(version) {
            date = Some(version);
        }
    }
    let claude = s.starts_with("claude");
    s = strip_version(s, claude);
    let mut out = String::with_capacity(s.len() + 9);
    if claude {
        // Dotted Claude versions (`claude-opus-4.1`) in Anthropic's dashed form.
        let b = s.as_bytes();
        for (i, c) in s.char_indices() {
            let between_digits = c == '.'
                && i > 0
                && b[i - 1].is_ascii_digit()
                && b.get(i + 1).is_some_and(u8::is_ascii_digit);
            out.push(if between_digits { '-' } else { c });
        }
    } else {
        out.push_str(s);
    }
    if let Some(d) = date {
        out.push('-');
        out.push_str(d);
    }
    out
}

/// Drops a trailing date: `-20250929` or `-2024-08-06`.
fn strip_date(name: &str) -> &str {
    let b = name.as_bytes();
    let n = b.len();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if n > 9 && b[n - 9] == b'-' && digits(n - 8..n) {
        return &name[..n - 9];
    }
    if n > 11
        && b[n - 11] == b'-'
        && b[n - 6] == b'-'
        && b[n - 3] == b'-'
        && digits(n - 10..n - 6)
        && digits(n - 5..n - 3)
        && digits(n - 2..n)
    {
        return &name[..n - 11];
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::LazyLock;

    static EMB: LazyLock<Pricing> = LazyLock::new(Pricing::embedded);
    /// Pico-dollars per micro-dollar.
    const M: i64 = 1_000_000;

    fn anthropic(input: u64, output: u64, cc: u64, cr: u64) -> TokenUsage {
        // The fixture's mock reported all cache creation as ephemeral_5m_input_tokens.
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
            cache_create_tokens: cc,
            cache_read_tokens: cr,
            ephemeral_5m_tokens: cc,
            ephemeral_1h_tokens: 0,
        }
    }

    /// OpenAI Responses usage as reported (input includes cached), normalised like the relay:
    /// input excludes cached tokens, cached tokens are cache reads.
    fn responses(input: u64, output: u64, cached: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input - cached,
            output_tokens: output,
            cache_read_tokens: cached,
            ..Default::default()
        }
    }

    fn usage(input: u64, output: u64) -> TokenUsage {
        TokenUsage {
            input_tokens: input,
            output_tokens: output,
            ..Default::default()
        }
    }

    #[test]
    fn embedded_table_loads() {
        assert!(EMB.model_count() > 3000, "{}", EMB.model_count());
        let p = EMB.price("claude-sonnet-4-5-20250929").unwrap();
        assert_eq!(
            p.base,
            Rates {
                input: 3_000_000,
                output: 15_000_000,
                cache_write_5m: 3_750_000,
                cache_write_1h: 6_000_000,
                cache_read: 300_000,
            }
        );
        assert_eq!(p.provider.as_deref(), Some("anthropic"));
        assert!(EMB.price("sample_spec").is_none());
    }

    /// Fixture crs-v1 (v1.1.314), "Per key and model": the exact cost of each row's requests
    /// ("Requests sent through CRS"), next to the realCostMicro v1 stored. v1 rounded every
    /// request to a micro-dollar before adding it up; the exact sum is price x tokens.
    #[test]
    fn v1_fixture_per_key_and_model_costs() {
        let s45 = "claude-sonnet-4-5-20250929";
        let haiku = "claude-3-5-haiku-20241022";
        let opus = "claude-opus-4-1-20250805";
        let s4 = "claude-sonnet-4-20250514";
        #[rustfmt::skip]
        let rows: &[(&str, &str, &[TokenUsage], i64, i64)] = &[
            // Haiku 3.5: 120 x $0.8/M + 22 x $4/M + 30 x $0.08/M = 186.4 micro-dollars.
            ("K1", haiku, &[anthropic(120, 22, 0, 30)], 186_400_000, 186),
            ("K1", opus, &[anthropic(130, 23, 0, 0)], 3675 * M, 3675),
            // 600 + 682.5 (v1: 600 + 683).
            ("K1", s45, &[anthropic(100, 20, 0, 0), anthropic(110, 21, 10, 0)], 1_282_500_000, 1283),
            ("K2", opus, &[anthropic(220, 32, 0, 0)], 5700 * M, 5700),
            // 1237.5 + 1113 + 1185 (v1: 1238 + 1113 + 1185).
            ("K2", s45, &[anthropic(200, 30, 50, 0), anthropic(210, 31, 0, 60), anthropic(230, 33, 0, 0)], 3_535_500_000, 3536),
            ("K2", "gpt-4.1", &[responses(300, 40, 100)], 770 * M, 770),
            // 310 x $1.25/M + 41 x $10/M = 797.5.
            ("K2", "gpt-5", &[responses(310, 41, 0)], 797_500_000, 798),
            ("K3", s45, &[anthropic(8000, 400, 1000, 2000), anthropic(6000, 300, 0, 1000)], 57150 * M, 57150),
            ("K4", haiku, &[anthropic(420, 52, 30, 0)], 574 * M, 574),
            ("K4", s45, &[anthropic(400, 50, 0, 0), anthropic(410, 51, 0, 200)], 4005 * M, 4005),
            ("K5", haiku, &[anthropic(510, 61, 0, 0)], 652 * M, 652),
            ("K5", s4, &[anthropic(500, 60, 0, 0)], 2400 * M, 2400),
            // 1225 + 1472.5: v1's float arithmetic computed the second as 1472.4999999999998
            // and rounded it down (see v1_float_noise_explains_one_micro).
            ("K5", "gpt-5", &[responses(600, 70, 200), responses(610, 71, 0)], 2_697_500_000, 2697),
            ("K6", s45, &[anthropic(700, 80, 0, 0)], 3300 * M, 3300),
            ("K6", "gpt-5", &[responses(710, 81, 0)], 1_697_500_000, 1698),
        ];
        for (key, model, requests, want, _v1) in rows {
            let got: i64 = requests.iter().map(|u| EMB.cost(model, u).picos).sum();
            assert_eq!(got, *want, "{key} {model}");
            assert!(!EMB.cost(model, &requests[0]).matched.is_unknown());
        }
        // The fixture's whole traffic: v1's rounded per-request sums drift from the exact
        // total. (v1's float cost strings per key hold the exact sums: K1's 0.0051439 is
        // 186.4 + 3675 + 1282.5 micro-dollars.)
        let exact: i64 = rows.iter().map(|r| r.3).sum();
        let v1: i64 = rows.iter().map(|r| r.4).sum();
        assert_eq!((exact, v1 * M), (88_422_900_000, 88_424 * M));
    }

    #[test]
    fn how_the_fixture_models_are_found() {
        let m = |name: &str| EMB.cost(name, &usage(1, 1)).matched;
        assert_eq!(
            m("claude-sonnet-4-5-20250929"),
            PriceMatch::Exact("claude-sonnet-4-5-20250929".into())
        );
        assert_eq!(m("gpt-5"), PriceMatch::Exact("gpt-5".into()));
        // LiteLLM 1.109 no longer lists these under Anthropic: Bedrock's global entry prices
        // them (at Anthropic's list price), not Vertex's.
        assert_eq!(
            m("claude-3-5-haiku-20241022"),
            PriceMatch::Normalized("anthropic.claude-3-5-haiku-20241022-v1:0".into())
        );
        assert_eq!(
            m("claude-opus-4-1-20250805"),
            PriceMatch::Normalized("anthropic.claude-opus-4-1-20250805-v1:0".into())
        );
    }

    #[test]
    fn normalized_names() {
        let want = EMB.cost("claude-sonnet-4-5-20250929", &usage(1000, 100));
        for name in [
            "anthropic/claude-sonnet-4-5-20250929",
            "Claude-Sonnet-4-5-20250929",
            "claude-sonnet-4-5-20250929[1m]",
            "openrouter/anthropic/claude-sonnet-4-5-20250929",
            "claude-sonnet-4.5-20250929",
        ] {
            let c = EMB.cost(name, &usage(1000, 100));
            assert_eq!(c.picos, want.picos, "{name}");
            assert_eq!(
                c.matched,
                PriceMatch::Normalized("claude-sonnet-4-5-20250929".into()),
                "{name}"
            );
        }
        // Region prefixes, Vertex `@` dates and Bedrock `-v1:0` suffixes.
        for name in [
            "apac.anthropic.claude-opus-4-1-20250805-v1:0",
            "vertex_ai/claude-opus-4-1@20250805",
            "bedrock/anthropic.claude-opus-4-1-20250805-v1:0",
        ] {
            let c = EMB.cost(name, &usage(130, 23));
            assert_eq!(c.picos, 3675 * M, "{name}");
            assert!(matches!(c.matched, PriceMatch::Normalized(_)), "{name}");
        }
        // An unknown date falls back to the undated name.
        let c = EMB.cost("gpt-4o-2099-01-01", &usage(1000, 0));
        assert_eq!(c.matched, PriceMatch::Normalized("gpt-4o".into()));
        assert_eq!(c.picos, 2500 * M);
        assert_eq!(
            EMB.cost("claude-sonnet-4-6-20990101", &usage(1, 1)).matched,
            PriceMatch::Normalized("claude-sonnet-4-6".into())
        );
    }

    #[test]
    fn normalize_examples() {
        assert_eq!(
            normalize("bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
            "claude-sonnet-4-5-20250929"
        );
        assert_eq!(
            normalize("us-gov.anthropic.claude-haiku-4-5@20251001"),
            "claude-haiku-4-5-20251001"
        );
        assert_eq!(normalize("anthropic.claude-opus-4-6-v1"), "claude-opus-4-6");
        assert_eq!(normalize("gpt-4.1"), "gpt-4.1");
        assert_eq!(normalize("gemini/gemini-2.5-pro"), "gemini-2.5-pro");
        assert_eq!(normalize("deepseek-chat-v3"), "deepseek-chat-v3");
        assert_eq!(
            strip_date("claude-sonnet-4-5-20250929"),
            "claude-sonnet-4-5"
        );
        assert_eq!(strip_date("gpt-4o-2024-08-06"), "gpt-4o");
        assert_eq!(strip_date("gpt-4-0613"), "gpt-4-0613");
        assert_eq!(normalize(" / "), "");
    }

    #[test]
    fn family_fallbacks() {
        let fam = |name: &str| EMB.cost(name, &usage(1_000_000, 0));
        let c = fam("claude-opus-9-9");
        assert_eq!(c.matched, PriceMatch::Family("claude-opus-4-7".into()));
        assert_eq!(c.picos, 5_000_000 * M);
        assert_eq!(
            fam("claude-sonnet-4-5-20250929-thinking").matched,
            PriceMatch::Family("claude-sonnet-4-6".into())
        );
        assert_eq!(
            fam("us.anthropic.claude-haiku-7").matched,
            PriceMatch::Family("claude-haiku-4-5".into())
        );
        assert_eq!(
            fam("claude-next").matched,
            PriceMatch::Family("claude-sonnet-4-6".into())
        );
        assert_eq!(fam("gpt-9").matched, PriceMatch::Family("gpt-5".into()));
        assert_eq!(
            fam("gpt-4o-mini-custom").matched,
            PriceMatch::Family("gpt-4o-mini".into())
        );
        assert_eq!(
            fam("gemini-9-flash").matched,
            PriceMatch::Family("gemini-2.5-flash".into())
        );
        assert_eq!(
            fam("gemini-9-ultra").matched,
            PriceMatch::Family("gemini-2.5-pro".into())
        );
    }

    #[test]
    fn unknown_models_cost_nothing_and_are_flagged() {
        for name in ["llama-house-special", "", "   "] {
            let c = EMB.cost(name, &usage(1_000_000, 1_000_000));
            assert_eq!(
                c,
                Cost {
                    picos: 0,
                    matched: PriceMatch::Unknown
                },
                "{name:?}"
            );
            assert!(EMB.price(name).is_none());
        }
    }

    #[test]
    fn one_hour_cache_writes_cost_more() {
        let m = "claude-sonnet-4-5-20250929";
        let split = |cc, e5, e1| TokenUsage {
            cache_create_tokens: cc,
            ephemeral_5m_tokens: e5,
            ephemeral_1h_tokens: e1,
            ..Default::default()
        };
        // $3.75 vs $6 per million.
        assert_eq!(EMB.cost(m, &split(1000, 1000, 0)).picos, 3750 * M);
        assert_eq!(EMB.cost(m, &split(1000, 0, 1000)).picos, 6000 * M);
        assert_eq!(EMB.cost(m, &split(1000, 400, 600)).picos, (1500 + 3600) * M);
        // Split unknown: all at the 5-minute price.
        assert_eq!(EMB.cost(m, &split(1000, 0, 0)).picos, 3750 * M);
        // Unattributed rest of a partial split: 5-minute price.
        assert_eq!(EMB.cost(m, &split(1000, 0, 600)).picos, (1500 + 3600) * M);
        // Bedrock's Opus 4.1 entry has no 1-hour price: 2x input ($30), not the 5m $18.75.
        let o = "claude-opus-4-1-20250805";
        assert_eq!(EMB.cost(o, &split(1000, 1000, 0)).picos, 18750 * M);
        assert_eq!(EMB.cost(o, &split(1000, 0, 1000)).picos, 30000 * M);
    }

    const TABLE: &str = r#"{
        "sample_spec": {"input_cost_per_token": "not a number", "mode": "one of: chat, ..."},
        "claude-test": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
            "litellm_provider": "anthropic"},
        "other-test": {"input_cost_per_token": 2e-06, "output_cost_per_token": 8e-06,
            "some_future_field": {"nested": [1, 2]}, "cache_read_input_token_cost": null},
        "tiered-test": {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-05,
            "cache_read_input_token_cost": 1e-07,
            "input_cost_per_token_above_200k_tokens": 2e-06,
            "output_cost_per_token_above_200k_tokens": 1.5e-05,
            "cache_read_input_token_cost_above_200k_tokens": 2e-07,
            "input_cost_per_token_above_200k_tokens_batches": 9e-06,
            "input_cost_per_token_priority_above_200k_tokens": 9e-06,
            "input_cost_per_token_above_272k_tokens": 4e-06},
        "claude-tiered": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
            "input_cost_per_token_above_200k_tokens": 6e-06,
            "output_cost_per_token_above_200k_tokens": 2.25e-05},
        "image-only": {"output_cost_per_image": 0.04, "mode": "image_generation"},
        "not-an-object": 42
    }"#;

    #[test]
    fn missing_fields_are_filled_and_junk_ignored() {
        let p = Pricing::from_json(TABLE.as_bytes()).unwrap();
        assert_eq!(p.model_count(), 4, "priced entries only");
        // Claude without cache prices: Anthropic's multipliers (v1's fallback).
        assert_eq!(
            p.price("claude-test").unwrap().base,
            Rates {
                input: 3_000_000,
                output: 15_000_000,
                cache_write_5m: 3_750_000,
                cache_write_1h: 6_000_000,
                cache_read: 300_000,
            }
        );
        // Others: LiteLLM's rule, the input price.
        assert_eq!(
            p.price("other-test").unwrap().base,
            Rates {
                input: 2_000_000,
                output: 8_000_000,
                cache_write_5m: 2_000_000,
                cache_write_1h: 2_000_000,
                cache_read: 2_000_000,
            }
        );
        assert!(p.price("image-only").is_none());
        let cr = TokenUsage {
            cache_read_tokens: 1000,
            ..Default::default()
        };
        assert_eq!(p.cost("claude-test", &cr).picos, 300 * M);

        assert!(Pricing::from_json(b"[]").is_err());
        assert!(Pricing::from_json(b"{}").is_err());
        assert!(Pricing::from_json(br#"{"sample_spec": {}}"#).is_err());
        assert!(Pricing::from_json(b"{\"a\": ").is_err());
    }

    #[test]
    fn long_context_tier_prices_the_whole_request() {
        let p = Pricing::from_json(TABLE.as_bytes()).unwrap();
        let t = p.price("tiered-test").unwrap();
        assert_eq!(
            t.tiers.iter().map(|t| t.above_tokens).collect::<Vec<_>>(),
            [200_000, 272_000]
        );
        // Exactly 200k input (input + cache reads): base prices.
        let at = TokenUsage {
            input_tokens: 150_000,
            cache_read_tokens: 50_000,
            output_tokens: 1000,
            ..Default::default()
        };
        assert_eq!(
            p.cost("tiered-test", &at).picos,
            (150_000 + 5_000 + 10_000) * M
        );
        // One more token: every token at the tier price, output included.
        let over = TokenUsage {
            input_tokens: 150_001,
            ..at
        };
        assert_eq!(
            p.cost("tiered-test", &over).picos,
            (300_002 + 10_000 + 15_000) * M
        );
        // The highest exceeded tier wins; its missing fields come from the tier below.
        let far = TokenUsage {
            input_tokens: 300_000,
            output_tokens: 1000,
            ..Default::default()
        };
        assert_eq!(p.cost("tiered-test", &far).picos, (1_200_000 + 15_000) * M);
        // Cache writes count towards the threshold. Claude tier without cache prices:
        // multiples of the tier's input price ($6 -> 5m write $7.50, read $0.60).
        let claude = TokenUsage {
            input_tokens: 100_000,
            cache_create_tokens: 100_001,
            ephemeral_5m_tokens: 100_001,
            cache_read_tokens: 1000,
            ..Default::default()
        };
        assert_eq!(
            p.cost("claude-tiered", &claude).picos,
            600_000 * M + 750_007_500_000 + 600 * M
        );

        // The shipped table: Sonnet 4 (via Bedrock's entry) has a 200k tier, Sonnet 4.5 under
        // Anthropic is flat.
        let big = usage(250_000, 1000);
        assert_eq!(
            EMB.cost("claude-sonnet-4-20250514", &big).picos,
            (1_500_000 + 22_500) * M
        );
        assert_eq!(
            EMB.cost("claude-sonnet-4-5-20250929", &big).picos,
            (750_000 + 15_000) * M
        );
    }

    #[test]
    fn costs_are_exact_pico_dollars() {
        let p = Pricing::from_json(br#"{"m": {"input_cost_per_token": 5e-07}}"#).unwrap();
        assert_eq!(
            p.cost("m", &usage(1, 0)).picos,
            500_000,
            "half a micro-dollar"
        );
        let p = Pricing::from_json(br#"{"m": {"input_cost_per_token": 4.99999e-07}}"#).unwrap();
        assert_eq!(p.cost("m", &usage(1, 0)).picos, 499_999);
        assert_eq!(p.cost("m", &usage(0, 0)).picos, 0);
        // Saturates instead of wrapping: 10^12 tokens at $1 per token.
        let p = Pricing::from_json(br#"{"m": {"input_cost_per_token": 1}}"#).unwrap();
        assert_eq!(p.cost("m", &usage(1 << 40, 0)).picos, i64::MAX);
    }

    /// 240 small requests of 7 Haiku 3.5 input tokens, 5.6 micro-dollars each: their sum is
    /// price x summed tokens, $0.001344. Rounded per request to a micro-dollar, as crs used to
    /// record them, they came to $0.00144.
    #[test]
    fn many_small_requests_add_up_exactly() {
        let haiku = "claude-3-5-haiku-20241022";
        let one = usage(7, 0);
        let each = EMB.cost(haiku, &one).picos;
        assert_eq!(each, 5_600_000, "7 x $0.8/M = 5.6 micro-dollars");
        let sum: i64 = (0..240).map(|_| EMB.cost(haiku, &one).picos).sum();
        let rates = EMB.price(haiku).unwrap().base;
        assert_eq!(sum, rates.input * 7 * 240);
        assert_eq!(crate::model::picos_to_dollars(sum), 0.001344);
        // Rounded per request it was 6 x 240 micro-dollars.
        assert_ne!(sum, 6 * 240 * M);
    }

    #[test]
    fn service_rates_apply_to_the_exact_cost_once() {
        assert_eq!(apply_rate(5_600_000, 1.0), 5_600_000);
        assert_eq!(apply_rate(5_600_000, 2.0), 11_200_000);
        // 235.35 micro-dollars x 1.1 = 258.885, not 1.1 x a rounded 235.
        assert_eq!(apply_rate(235_350_000, 1.1), 258_885_000);
        // Rounded to the pico-dollar once: 3 x 0.5 = 1.5 -> 2.
        assert_eq!(apply_rate(3, 0.5), 2);
        assert_eq!(apply_rate(1_000, 0.0), 0);
        assert_eq!(apply_rate(1_000, f64::NAN), 0);
        assert_eq!(apply_rate(i64::MAX, 2.0), i64::MAX, "saturates");
    }

    #[test]
    fn override_file_replaces_the_embedded_table() {
        let dir = tempfile::tempdir().unwrap();
        // Absent: embedded.
        let p = Pricing::load(dir.path()).unwrap();
        assert_eq!(p.model_count(), EMB.model_count());
        // Present and valid: used instead.
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, TABLE).unwrap();
        let p = Pricing::load(dir.path()).unwrap();
        assert_eq!(p.model_count(), 4);
        assert!(p.cost("gpt-5", &usage(1, 1)).matched.is_unknown());
        // Present and invalid: an error naming the file.
        std::fs::write(&path, b"{ not json").unwrap();
        let err = format!("{:#}", Pricing::load(dir.path()).unwrap_err());
        assert!(err.contains(&path.display().to_string()), "{err}");
        std::fs::write(&path, b"{}").unwrap();
        let err = format!("{:#}", Pricing::load(dir.path()).unwrap_err());
        assert!(err.contains(FILE_NAME), "{err}");
    }
}

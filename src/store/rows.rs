use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Picos, micros_to_picos};

/// Token counts of one upstream answer, normalised the same way for every provider:
/// `input_tokens` excludes cached tokens; cache creation and cache reads are counted once each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_create_tokens: u64,
    pub cache_read_tokens: u64,
    /// Part of cache_create_tokens written with the 5-minute TTL.
    pub ephemeral_5m_tokens: u64,
    /// Part of cache_create_tokens written with the 1-hour TTL.
    pub ephemeral_1h_tokens: u64,
}

/// The most tokens of each kind one answer is taken to have used (2^28, a hundred times the
/// largest context window). The counts are the upstream's word; capped, no sum over them
/// (meters, usage buckets, an account's spend) comes near overflowing.
pub const MAX_TOKENS_PER_ANSWER: u64 = 1 << 28;

impl TokenUsage {
    /// input + output + cache create + cache read (v1's allTokens).
    pub fn all_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_create_tokens + self.cache_read_tokens
    }

    /// Every count capped at `MAX_TOKENS_PER_ANSWER`.
    pub fn bounded(self) -> TokenUsage {
        let cap = |n: u64| n.min(MAX_TOKENS_PER_ANSWER);
        TokenUsage {
            input_tokens: cap(self.input_tokens),
            output_tokens: cap(self.output_tokens),
            cache_create_tokens: cap(self.cache_create_tokens),
            cache_read_tokens: cap(self.cache_read_tokens),
            ephemeral_5m_tokens: cap(self.ephemeral_5m_tokens),
            ephemeral_1h_tokens: cap(self.ephemeral_1h_tokens),
        }
    }
}

/// One usage bucket. Costs are exact integer pico-dollars (`model::Picos`), added with
/// saturating arithmetic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_create_tokens: u64,
    pub cache_read_tokens: u64,
    pub ephemeral_5m_tokens: u64,
    pub ephemeral_1h_tokens: u64,
    pub real_cost_picos: Picos,
    pub rated_cost_picos: Picos,
    /// Requests that reached an upstream and failed (not counted in `requests`).
    pub errors: u64,
}

/// Store schema 1's bucket: the same fields with costs in micro-dollars.
#[derive(Serialize, Deserialize)]
struct CountersV1 {
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    cache_create_tokens: u64,
    cache_read_tokens: u64,
    ephemeral_5m_tokens: u64,
    ephemeral_1h_tokens: u64,
    real_cost_micros: i64,
    rated_cost_micros: i64,
    errors: u64,
}

impl From<CountersV1> for Counters {
    fn from(c: CountersV1) -> Self {
        Counters {
            requests: c.requests,
            input_tokens: c.input_tokens,
            output_tokens: c.output_tokens,
            cache_create_tokens: c.cache_create_tokens,
            cache_read_tokens: c.cache_read_tokens,
            ephemeral_5m_tokens: c.ephemeral_5m_tokens,
            ephemeral_1h_tokens: c.ephemeral_1h_tokens,
            real_cost_picos: micros_to_picos(c.real_cost_micros),
            rated_cost_picos: micros_to_picos(c.rated_cost_micros),
            errors: c.errors,
        }
    }
}

/// The stored form carries its version in the enum tag: V1 (micro-dollars, store schema 1)
/// still decodes, converted; V2 (pico-dollars) is what is written.
#[derive(Serialize, Deserialize)]
enum Stored {
    V1(CountersV1),
    V2(Counters),
}

impl Counters {
    pub fn from_usage(u: &TokenUsage, real_cost_picos: Picos, rated_cost_picos: Picos) -> Self {
        Counters {
            requests: 1,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_create_tokens: u.cache_create_tokens,
            cache_read_tokens: u.cache_read_tokens,
            ephemeral_5m_tokens: u.ephemeral_5m_tokens,
            ephemeral_1h_tokens: u.ephemeral_1h_tokens,
            real_cost_picos,
            rated_cost_picos,
            errors: 0,
        }
    }

    pub fn error() -> Self {
        Counters {
            errors: 1,
            ..Default::default()
        }
    }

    pub fn add(&mut self, o: &Counters) {
        self.requests += o.requests;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.cache_create_tokens += o.cache_create_tokens;
        self.cache_read_tokens += o.cache_read_tokens;
        self.ephemeral_5m_tokens += o.ephemeral_5m_tokens;
        self.ephemeral_1h_tokens += o.ephemeral_1h_tokens;
        self.real_cost_picos = self.real_cost_picos.saturating_add(o.real_cost_picos);
        self.rated_cost_picos = self.rated_cost_picos.saturating_add(o.rated_cost_picos);
        self.errors += o.errors;
    }

    /// input + output (v1's `tokens`).
    pub fn tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// input + output + cache create + cache read (v1's `allTokens`).
    pub fn all_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_create_tokens + self.cache_read_tokens
    }

    pub fn encode(&self) -> Vec<u8> {
        bincode::serde::encode_to_vec(Stored::V2(*self), bincode::config::standard())
            .expect("encoding plain integers cannot fail")
    }

    /// Either stored form; a V1 record's micro-dollars become pico-dollars.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match bincode::serde::decode_from_slice::<Stored, _>(bytes, bincode::config::standard()) {
            Ok((Stored::V2(c), n)) if n == bytes.len() => Ok(c),
            Ok((Stored::V1(c), n)) if n == bytes.len() => Ok(c.into()),
            Ok(_) => bail!("usage counter record has trailing bytes"),
            Err(e) => bail!("usage counter record does not decode: {e}"),
        }
    }
}

#[cfg(test)]
impl Counters {
    /// The form store schema 1 wrote (costs in micro-dollars), for upgrade tests.
    pub(crate) fn encode_v1(&self, real_micros: i64, rated_micros: i64) -> Vec<u8> {
        let v1 = CountersV1 {
            requests: self.requests,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cache_create_tokens: self.cache_create_tokens,
            cache_read_tokens: self.cache_read_tokens,
            ephemeral_5m_tokens: self.ephemeral_5m_tokens,
            ephemeral_1h_tokens: self.ephemeral_1h_tokens,
            real_cost_micros: real_micros,
            rated_cost_micros: rated_micros,
            errors: self.errors,
        };
        bincode::serde::encode_to_vec(Stored::V1(v1), bincode::config::standard())
            .expect("encoding plain integers cannot fail")
    }
}

/// One stored request record (the last N per key, and a global recent list).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, rename_all = "camelCase")]
pub struct RequestRecord {
    pub timestamp: Option<DateTime<Utc>>,
    pub key_id: String,
    pub account_id: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_create_tokens: u64,
    pub cache_read_tokens: u64,
    pub ephemeral_5m_tokens: u64,
    pub ephemeral_1h_tokens: u64,
    /// Pico-dollars (`realCostPicos`; store schema 1 wrote micro-dollars as `realCostMicros`,
    /// converted when the store is upgraded).
    pub real_cost_picos: Picos,
    pub rated_cost_picos: Picos,
    pub latency_ms: u32,
    pub status: u16,
    pub stream: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_round_trip() {
        let c = Counters {
            requests: 3,
            input_tokens: 1 << 40,
            output_tokens: 7,
            cache_create_tokens: 9,
            cache_read_tokens: 11,
            ephemeral_5m_tokens: 5,
            ephemeral_1h_tokens: 4,
            real_cost_picos: 123_456_789_012,
            rated_cost_picos: 246_913_578_024,
            errors: 2,
        };
        let b = c.encode();
        assert_eq!(b[0], 1, "version tag V2 leads the record");
        assert_eq!(Counters::decode(&b).unwrap(), c);
        assert!(Counters::decode(&[9, 9]).is_err());
        let mut long = b.clone();
        long.push(0);
        assert!(Counters::decode(&long).is_err());
    }

    #[test]
    fn v1_records_decode_in_pico_dollars() {
        let c = Counters {
            requests: 3,
            input_tokens: 100,
            errors: 1,
            ..Default::default()
        };
        let b = c.encode_v1(5_143_900, 6_000);
        assert_eq!(b[0], 0, "version tag V1");
        let back = Counters::decode(&b).unwrap();
        assert_eq!(
            back,
            Counters {
                real_cost_picos: 5_143_900_000_000,
                rated_cost_picos: 6_000_000_000,
                ..c
            }
        );
        assert_eq!(
            Counters::decode(&c.encode_v1(i64::MAX, 0))
                .unwrap()
                .real_cost_picos,
            i64::MAX,
            "saturates"
        );
    }

    #[test]
    fn costs_add_saturating() {
        let mut a = Counters {
            real_cost_picos: i64::MAX - 1,
            rated_cost_picos: 5,
            ..Default::default()
        };
        a.add(&a.clone());
        assert_eq!((a.real_cost_picos, a.rated_cost_picos), (i64::MAX, 10));
    }

    #[test]
    fn derived_totals() {
        let c = Counters::from_usage(
            &TokenUsage {
                input_tokens: 100,
                output_tokens: 20,
                cache_create_tokens: 10,
                cache_read_tokens: 30,
                ..Default::default()
            },
            0,
            0,
        );
        assert_eq!(c.tokens(), 120);
        assert_eq!(c.all_tokens(), 160);
    }

    #[test]
    fn reported_usage_is_capped() {
        let huge = TokenUsage {
            input_tokens: u64::MAX,
            output_tokens: u64::MAX,
            cache_create_tokens: u64::MAX,
            cache_read_tokens: u64::MAX,
            ephemeral_5m_tokens: u64::MAX,
            ephemeral_1h_tokens: 7,
        }
        .bounded();
        assert_eq!(huge.input_tokens, MAX_TOKENS_PER_ANSWER);
        assert_eq!(huge.ephemeral_1h_tokens, 7);
        assert_eq!(huge.all_tokens(), 4 * MAX_TOKENS_PER_ANSWER);
        // Every sum of capped answers an i64 or u64 holds for billions of answers.
        let c = Counters::from_usage(&huge, 0, 0);
        assert!(c.all_tokens().checked_mul(1 << 30).is_some());
    }
}

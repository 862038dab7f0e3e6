use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

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

impl TokenUsage {
    /// input + output + cache create + cache read (v1's allTokens).
    pub fn all_tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_create_tokens + self.cache_read_tokens
    }
}

/// One usage bucket. Costs are integer micro-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_create_tokens: u64,
    pub cache_read_tokens: u64,
    pub ephemeral_5m_tokens: u64,
    pub ephemeral_1h_tokens: u64,
    pub real_cost_micros: i64,
    pub rated_cost_micros: i64,
    /// Requests that reached an upstream and failed (not counted in `requests`).
    pub errors: u64,
}

/// The stored form carries its version in the enum tag, so a later layout can decode V1.
#[derive(Serialize, Deserialize)]
enum Stored {
    V1(Counters),
}

impl Counters {
    pub fn from_usage(u: &TokenUsage, real_cost_micros: i64, rated_cost_micros: i64) -> Self {
        Counters {
            requests: 1,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_create_tokens: u.cache_create_tokens,
            cache_read_tokens: u.cache_read_tokens,
            ephemeral_5m_tokens: u.ephemeral_5m_tokens,
            ephemeral_1h_tokens: u.ephemeral_1h_tokens,
            real_cost_micros,
            rated_cost_micros,
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
        self.real_cost_micros += o.real_cost_micros;
        self.rated_cost_micros += o.rated_cost_micros;
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
        bincode::serde::encode_to_vec(Stored::V1(*self), bincode::config::standard())
            .expect("encoding plain integers cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match bincode::serde::decode_from_slice::<Stored, _>(bytes, bincode::config::standard()) {
            Ok((Stored::V1(c), n)) if n == bytes.len() => Ok(c),
            Ok(_) => bail!("usage counter record has trailing bytes"),
            Err(e) => bail!("usage counter record does not decode: {e}"),
        }
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
    pub real_cost_micros: i64,
    pub rated_cost_micros: i64,
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
            real_cost_micros: 123_456,
            rated_cost_micros: 246_912,
            errors: 2,
        };
        let b = c.encode();
        assert_eq!(b[0], 0, "version tag V1 leads the record");
        assert_eq!(Counters::decode(&b).unwrap(), c);
        assert!(Counters::decode(&[9, 9]).is_err());
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
}

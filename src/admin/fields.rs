//! Reading admin JSON bodies field by field, the way v1 accepts them: numbers may arrive as
//! strings, `null` or `""` clears, unknown fields are ignored. Each reader returns a message
//! naming the field when the value is unusable.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

pub type Body = Map<String, Value>;
pub type FieldResult<T> = Result<Option<T>, String>;

/// Present and not null.
fn present<'a>(b: &'a Body, k: &str) -> Option<&'a Value> {
    b.get(k).filter(|v| !v.is_null())
}

pub fn string(b: &Body, k: &str, max_len: usize) -> FieldResult<String> {
    match b.get(k) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(String::new())),
        Some(Value::String(s)) => {
            if s.chars().count() > max_len {
                Err(format!("{k} must be at most {max_len} characters"))
            } else {
                Ok(Some(s.trim().to_owned()))
            }
        }
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err(format!("{k} must be a string")),
    }
}

/// A nested object, sent as an object or as JSON text (v1's UI sends both); absent, null or
/// empty text is `None`.
pub fn object(b: &Body, k: &str, msg: &str) -> FieldResult<Body> {
    match b.get(k) {
        Some(Value::Object(m)) => Ok(Some(m.clone())),
        Some(Value::String(s)) if !s.trim().is_empty() => serde_json::from_str::<Body>(s)
            .map(Some)
            .map_err(|_| msg.to_owned()),
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(None),
        Some(_) => Err(msg.to_owned()),
    }
}

pub fn boolean(b: &Body, k: &str) -> FieldResult<bool> {
    match present(b, k) {
        None => Ok(None),
        Some(Value::Bool(v)) => Ok(Some(*v)),
        Some(Value::String(s)) if s == "true" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" => Ok(Some(false)),
        Some(_) => Err(format!("{k} must be a boolean")),
    }
}

fn number(b: &Body, k: &str) -> FieldResult<f64> {
    match b.get(k) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(0.0)),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Some(0.0)),
        Some(Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .map(Some)
            .map_err(|_| format!("{k} must be a number")),
        Some(_) => Err(format!("{k} must be a number")),
    }
    .and_then(|v| match v {
        Some(x) if !x.is_finite() => Err(format!("{k} must be a finite number")),
        other => Ok(other),
    })
}

/// A non-negative integer no larger than `max`.
pub fn uint(b: &Body, k: &str, max: u64) -> FieldResult<u64> {
    match number(b, k)? {
        None => Ok(None),
        Some(x) if x < 0.0 || x.fract() != 0.0 || x > max as f64 => {
            Err(format!("{k} must be an integer between 0 and {max}"))
        }
        Some(x) => Ok(Some(x as u64)),
    }
}

/// A non-negative amount of US dollars, returned as micro-dollars.
pub fn dollars(b: &Body, k: &str) -> FieldResult<i64> {
    match number(b, k)? {
        None => Ok(None),
        Some(x) if x < 0.0 => Err(format!("{k} must be 0 or more (US dollars; 0 = no limit)")),
        Some(x) if x > 1e9 => Err(format!("{k} is too large")),
        Some(x) => Ok(Some(crate::model::dollars_to_micros(x))),
    }
}

/// `null`/`""` clear; otherwise an RFC 3339 / ISO 8601 instant.
pub fn instant(b: &Body, k: &str) -> Result<Option<Option<DateTime<Utc>>>, String> {
    match b.get(k) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Some(None)),
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s.trim())
            .map(|d| Some(Some(d.with_timezone(&Utc))))
            .map_err(|_| format!("{k} must be an ISO 8601 date-time such as 2027-01-31T00:00:00Z")),
        Some(_) => Err(format!("{k} must be an ISO 8601 date-time string or null")),
    }
}

/// An array of non-empty strings (a JSON-encoded array in a string is accepted too, as v1
/// stored them).
pub fn string_list(b: &Body, k: &str) -> FieldResult<Vec<String>> {
    let v = match b.get(k) {
        None => return Ok(None),
        Some(Value::Null) => return Ok(Some(Vec::new())),
        Some(Value::String(s)) if s.trim().is_empty() => return Ok(Some(Vec::new())),
        Some(Value::String(s)) if s.trim_start().starts_with('[') => {
            serde_json::from_str::<Value>(s)
                .map_err(|_| format!("{k} must be an array of strings"))?
        }
        Some(v) => v.clone(),
    };
    match v {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                match it {
                    Value::String(s) if !s.trim().is_empty() => {
                        let s = s.trim().to_owned();
                        if !out.contains(&s) {
                            out.push(s);
                        }
                    }
                    _ => return Err(format!("{k} must be an array of non-empty strings")),
                }
            }
            Ok(Some(out))
        }
        _ => Err(format!("{k} must be an array of strings")),
    }
}

/// One of the given values.
pub fn choice(b: &Body, k: &str, allowed: &[&str]) -> FieldResult<String> {
    match string(b, k, 64)? {
        None => Ok(None),
        Some(s) if allowed.contains(&s.as_str()) => Ok(Some(s)),
        Some(s) => Err(format!(
            "{k} must be one of {} (got {s:?})",
            allowed.join(", ")
        )),
    }
}

/// Values that become upstream header values (keys, tokens, user agents) may not hold control
/// characters: a CR or LF would let an admin field inject headers.
pub(super) fn header_safe(field: &str, v: &str) -> Result<(), String> {
    if v.chars().any(|c| c.is_control()) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> Body {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn readers() {
        let b = body(json!({
            "n": "12", "neg": -1, "frac": 1.5, "d": "0.05", "t": "true", "l": "[\"a\",\"b\",\"a\"]",
            "ts": "2027-12-31T00:00:00.000Z", "bad_ts": "tomorrow", "nul": null, "empty": ""
        }));
        assert_eq!(uint(&b, "n", 100).unwrap(), Some(12));
        assert!(uint(&b, "n", 10).is_err());
        assert!(uint(&b, "neg", 10).is_err());
        assert!(uint(&b, "frac", 10).is_err());
        assert_eq!(uint(&b, "missing", 10).unwrap(), None);
        assert_eq!(dollars(&b, "d").unwrap(), Some(50_000));
        assert!(dollars(&b, "neg").is_err());
        assert_eq!(boolean(&b, "t").unwrap(), Some(true));
        assert_eq!(
            string_list(&b, "l").unwrap(),
            Some(vec!["a".into(), "b".into()])
        );
        assert!(instant(&b, "ts").unwrap().unwrap().is_some());
        assert!(instant(&b, "bad_ts").is_err());
        assert_eq!(instant(&b, "nul").unwrap(), Some(None));
        assert_eq!(instant(&b, "empty").unwrap(), Some(None));
        assert_eq!(string(&b, "nul", 10).unwrap(), Some(String::new()));
        assert!(choice(&b, "n", &["a"]).is_err());
    }
}

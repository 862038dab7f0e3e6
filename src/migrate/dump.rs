//! One Redis key as v1 stores it, and the dump file format shared with the fixture:
//! `{"meta": {...}, "keys": [{name, type, ttl_ms, value}]}` where hash = object, set = sorted
//! array, zset = `[[member, score]]` ascending, list = array head first, stream =
//! `[[id, {field: value}]]`, and `ttl_ms` is the PTTL when the dump was taken (-1 = none).

use std::io::{BufRead, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, PartialEq)]
pub enum V1Value {
    Str(String),
    Hash(Vec<(String, String)>),
    Set(Vec<String>),
    ZSet(Vec<(String, f64)>),
    List(Vec<String>),
    Stream(Vec<(String, Vec<(String, String)>)>),
}

impl V1Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            V1Value::Str(_) => "string",
            V1Value::Hash(_) => "hash",
            V1Value::Set(_) => "set",
            V1Value::ZSet(_) => "zset",
            V1Value::List(_) => "list",
            V1Value::Stream(_) => "stream",
        }
    }

    /// Redis deletes empty collections: such a value cannot be written.
    pub fn is_empty(&self) -> bool {
        match self {
            V1Value::Str(_) => false,
            V1Value::Hash(v) => v.is_empty(),
            V1Value::Set(v) | V1Value::List(v) => v.is_empty(),
            V1Value::ZSet(v) => v.is_empty(),
            V1Value::Stream(v) => v.is_empty(),
        }
    }
}

/// One key. `ttl_ms` is relative to the moment the keyspace was read (-1 = no expiry).
#[derive(Debug, Clone, PartialEq)]
pub struct V1Key {
    pub name: String,
    pub ttl_ms: i64,
    pub value: V1Value,
}

impl V1Key {
    pub fn new(name: impl Into<String>, ttl_ms: i64, value: V1Value) -> Self {
        V1Key {
            name: name.into(),
            ttl_ms,
            value,
        }
    }

    pub fn hash(&self) -> Option<&[(String, String)]> {
        match &self.value {
            V1Value::Hash(h) => Some(h),
            _ => None,
        }
    }

    pub fn string(&self) -> Option<&str> {
        match &self.value {
            V1Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn to_json(&self) -> Value {
        let value = match &self.value {
            V1Value::Str(s) => json!(s),
            V1Value::Hash(h) => {
                Value::Object(h.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
            }
            V1Value::Set(s) => {
                let mut s = s.clone();
                s.sort();
                json!(s)
            }
            V1Value::ZSet(z) => Value::Array(z.iter().map(|(m, s)| json!([m, s])).collect()),
            V1Value::List(l) => json!(l),
            V1Value::Stream(entries) => Value::Array(
                entries
                    .iter()
                    .map(|(id, f)| {
                        let m: Map<String, Value> =
                            f.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                        json!([id, m])
                    })
                    .collect(),
            ),
        };
        json!({"name": self.name, "type": self.value.type_name(), "ttl_ms": self.ttl_ms, "value": value})
    }

    pub fn from_json(v: &Value) -> Result<Self> {
        let name = v["name"].as_str().context("dump entry without a name")?;
        let ty = v["type"].as_str().context("dump entry without a type")?;
        let ttl_ms = v["ttl_ms"].as_i64().unwrap_or(-1);
        let raw = &v["value"];
        let text = |x: &Value| -> String {
            match x {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            }
        };
        let strings = |x: &Value| -> Result<Vec<String>> {
            Ok(x.as_array()
                .with_context(|| format!("{name}: {ty} value is not an array"))?
                .iter()
                .map(text)
                .collect())
        };
        let pairs = |x: &Value| -> Result<Vec<(String, String)>> {
            Ok(x.as_object()
                .with_context(|| format!("{name}: expected an object"))?
                .iter()
                .map(|(k, v)| (k.clone(), text(v)))
                .collect())
        };
        let value = match ty {
            "string" => V1Value::Str(text(raw)),
            "hash" => V1Value::Hash(pairs(raw)?),
            "set" => V1Value::Set(strings(raw)?),
            "list" => V1Value::List(strings(raw)?),
            "zset" => V1Value::ZSet(
                raw.as_array()
                    .with_context(|| format!("{name}: zset value is not an array"))?
                    .iter()
                    .map(|p| {
                        let score = match &p[1] {
                            Value::Number(n) => n.as_f64().unwrap_or(0.0),
                            Value::String(s) => s.parse().unwrap_or(0.0),
                            _ => 0.0,
                        };
                        (text(&p[0]), score)
                    })
                    .collect(),
            ),
            "stream" => V1Value::Stream(
                raw.as_array()
                    .with_context(|| format!("{name}: stream value is not an array"))?
                    .iter()
                    .map(|e| Ok((text(&e[0]), pairs(&e[1])?)))
                    .collect::<Result<_>>()?,
            ),
            other => bail!("{name}: unsupported key type {other:?}"),
        };
        Ok(V1Key {
            name: name.to_owned(),
            ttl_ms,
            value,
        })
    }
}

/// Read a dump file, handing each key to `sink` as it is parsed (the file is never held in
/// memory as a whole). Returns the dump's `meta` object.
pub fn read_json(
    reader: impl BufRead,
    sink: &mut dyn FnMut(V1Key) -> Result<()>,
) -> Result<Map<String, Value>> {
    struct Top<'a> {
        sink: &'a mut dyn FnMut(V1Key) -> Result<()>,
        meta: Map<String, Value>,
        err: Option<anyhow::Error>,
    }
    struct Keys<'a, 'b>(&'b mut Top<'a>);
    impl<'de> DeserializeSeed<'de> for Keys<'_, '_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'de> Visitor<'de> for Keys<'_, '_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an array of keys")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            while let Some(v) = seq.next_element::<Value>()? {
                if self.0.err.is_some() {
                    continue;
                }
                let r = V1Key::from_json(&v).and_then(|k| (self.0.sink)(k));
                if let Err(e) = r {
                    self.0.err = Some(e);
                }
            }
            Ok(())
        }
    }
    impl<'de> Visitor<'de> for &mut Top<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a dump object with meta and keys")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(k) = map.next_key::<String>()? {
                match k.as_str() {
                    "keys" => map.next_value_seed(Keys(self))?,
                    "meta" => {
                        if let Value::Object(m) = map.next_value::<Value>()? {
                            self.meta = m;
                        }
                    }
                    _ => {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }
    let mut top = Top {
        sink,
        meta: Map::new(),
        err: None,
    };
    let mut de = serde_json::Deserializer::from_reader(reader);
    serde::Deserializer::deserialize_map(&mut de, &mut top).context("reading the dump file")?;
    de.end().context("trailing data after the dump object")?;
    if let Some(e) = top.err {
        return Err(e);
    }
    Ok(top.meta)
}

pub fn read_json_file(
    path: &Path,
    sink: &mut dyn FnMut(V1Key) -> Result<()>,
) -> Result<Map<String, Value>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    read_json(std::io::BufReader::with_capacity(1 << 20, f), sink)
}

/// Write a dump file (one key per line inside the array, so it diffs and greps well).
pub fn write_json(mut w: impl Write, meta: &Map<String, Value>, keys: &[V1Key]) -> Result<()> {
    w.write_all(b"{\"meta\": ")?;
    serde_json::to_writer(&mut w, meta)?;
    w.write_all(b",\n\"keys\": [")?;
    for (i, k) in keys.iter().enumerate() {
        w.write_all(if i == 0 { b"\n" } else { b",\n" })?;
        serde_json::to_writer(&mut w, &k.to_json())?;
    }
    w.write_all(b"\n]}\n")?;
    w.flush()?;
    Ok(())
}

/// The `meta` object of a dump taken at `taken_at_ms`.
pub fn meta(taken_at_ms: i64, key_count: usize, note: &str) -> Map<String, Value> {
    let iso = chrono::DateTime::from_timestamp_millis(taken_at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    let v = json!({
        "dumped_at_unix_ms": taken_at_ms,
        "dumped_at_iso": iso,
        "key_count": key_count,
        "note": note,
        "format": "keys[]: {name, type, ttl_ms (PTTL at dump time, -1 = no expiry), value}; hash=object, set=sorted array, zset=[[member, score]] ascending, list=array head-first, stream=[[id, {field: value}]]",
    });
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_of_every_type() {
        let keys = vec![
            V1Key::new("s", -1, V1Value::Str("x".into())),
            V1Key::new(
                "h",
                1000,
                V1Value::Hash(vec![("b".into(), "1".into()), ("a".into(), "2".into())]),
            ),
            V1Key::new("set", -1, V1Value::Set(vec!["a".into(), "b".into()])),
            V1Key::new("z", -1, V1Value::ZSet(vec![("m".into(), 1.5)])),
            V1Key::new("l", 5, V1Value::List(vec!["new".into(), "old".into()])),
            V1Key::new(
                "st",
                -1,
                V1Value::Stream(vec![("1-0".into(), vec![("data".into(), "{}".into())])]),
            ),
        ];
        let mut buf = Vec::new();
        write_json(&mut buf, &meta(1, keys.len(), "t"), &keys).unwrap();
        let mut back = Vec::new();
        let m = read_json(&buf[..], &mut |k| {
            back.push(k);
            Ok(())
        })
        .unwrap();
        assert_eq!(m["dumped_at_unix_ms"], 1);
        assert_eq!(back, keys);
    }
}

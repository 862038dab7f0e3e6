//! What an import or export did, for people (`render`) and machines (`--json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// Keys this version could not classify, grouped by their shape.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Unknown {
    /// The key name with ids, dates and numbers replaced by `*`.
    pub pattern: String,
    pub count: u64,
    /// Up to 5 names.
    pub examples: Vec<String>,
}

#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct Report {
    /// "import" or "export".
    pub operation: String,
    pub source: String,
    pub target: String,
    pub dry_run: bool,
    /// Keys read from the source (import) or written to the target (export).
    pub keys: u64,
    pub elapsed_ms: u64,
    /// What became crs records (import) or v1 keys (export), per kind.
    pub imported: BTreeMap<String, u64>,
    /// v1 keys that are derived data (skipped: crs derives its own), per pattern; and what the
    /// import or export derived, per kind.
    pub rebuilt: BTreeMap<String, u64>,
    /// Transient v1 state that was not imported, per pattern.
    pub dropped: BTreeMap<String, u64>,
    /// Keys stored verbatim (table `v1_raw`) and given back by an export, per kind.
    pub kept_verbatim: BTreeMap<String, u64>,
    /// Keys this version did not understand (also kept verbatim).
    pub not_understood: Vec<Unknown>,
    /// Fields crs does not model, kept in the records' `extra` for export: "record: field" -> count.
    pub extra_fields: BTreeMap<String, u64>,
    /// Data that does not survive the move: "what: field" -> count.
    pub lossy: BTreeMap<String, u64>,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn new(operation: &str) -> Self {
        Report {
            operation: operation.into(),
            ..Default::default()
        }
    }

    pub fn add(map: &mut BTreeMap<String, u64>, what: impl Into<String>, n: u64) {
        if n > 0 {
            *map.entry(what.into()).or_default() += n;
        }
    }

    pub fn unknown(&mut self, name: &str) {
        let pattern = shape(name);
        match self
            .not_understood
            .iter_mut()
            .find(|u| u.pattern == pattern)
        {
            Some(u) => {
                u.count += 1;
                if u.examples.len() < 5 {
                    u.examples.push(name.to_owned());
                }
            }
            None => self.not_understood.push(Unknown {
                pattern,
                count: 1,
                examples: vec![name.to_owned()],
            }),
        }
    }

    /// Plain text for a terminal.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let secs = self.elapsed_ms as f64 / 1000.0;
        let verb = if self.operation == "export" {
            "written"
        } else {
            "read"
        };
        let _ = writeln!(
            s,
            "crs {}{}: {} -> {} ({} keys {verb} in {secs:.1} s)",
            self.operation,
            if self.dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            },
            self.source,
            self.target,
            self.keys,
        );
        let section = |s: &mut String, title: &str, m: &BTreeMap<String, u64>| {
            if m.is_empty() {
                return;
            }
            let _ = writeln!(s, "\n{title}");
            let w = m
                .keys()
                .map(|k| k.chars().count())
                .max()
                .unwrap_or(0)
                .min(72);
            for (k, v) in m {
                let _ = writeln!(s, "  {k:<w$}  {v:>9}");
            }
        };
        let (imp, reb) = if self.operation == "export" {
            ("Written (v1 keys)", "Derived for v1")
        } else {
            (
                "Imported",
                "Rebuilt (derived data: v1's copy skipped, crs's derived)",
            )
        };
        section(&mut s, imp, &self.imported);
        section(&mut s, reb, &self.rebuilt);
        section(&mut s, "Dropped (transient state)", &self.dropped);
        section(
            &mut s,
            "Kept verbatim (crs does not model them; an export writes them back)",
            &self.kept_verbatim,
        );
        if !self.not_understood.is_empty() {
            let _ = writeln!(s, "\nNot understood (kept verbatim)");
            for u in &self.not_understood {
                let _ = writeln!(
                    s,
                    "  {}  {:>9}  e.g. {}",
                    u.pattern,
                    u.count,
                    u.examples.join(", ")
                );
            }
        }
        section(
            &mut s,
            "Fields crs does not model (kept with the record for export)",
            &self.extra_fields,
        );
        section(&mut s, "Not carried over", &self.lossy);
        if !self.warnings.is_empty() {
            let _ = writeln!(s, "\nWarnings");
            for w in &self.warnings {
                let _ = writeln!(s, "  - {w}");
            }
        }
        s
    }
}

/// A key name's shape: segments that look like ids, hashes, dates or numbers become `*`.
pub fn shape(name: &str) -> String {
    name.split(':')
        .map(|seg| {
            let idish = seg.len() >= 16
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b'-' || b == b'_');
            let numeric = !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'-' || b == b'T' || b == b'.');
            if idish || numeric { "*" } else { seg }
        })
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(
            shape("request_detail:item:5d3c71bc-8d0b-4eee-a89a-8eb92bbfbb69"),
            "request_detail:item:*"
        );
        assert_eq!(shape("foo:2026-11-22:11"), "foo:*:*");
        assert_eq!(shape("plain"), "plain");
    }

    #[test]
    fn render_lists_sections() {
        let mut r = Report::new("import");
        Report::add(&mut r.imported, "api keys", 6);
        Report::add(&mut r.dropped, "rate_limit:*", 4);
        r.unknown("mystery:abc");
        let t = r.render();
        assert!(t.contains("api keys"), "{t}");
        assert!(t.contains("rate_limit:*"), "{t}");
        assert!(t.contains("mystery:abc"), "{t}");
    }
}

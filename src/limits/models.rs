//! Model names as clients write them, reduced to a canonical form for restriction lists:
//! lower case, no provider or region prefix, no date or version suffix, no context tag.

use crate::model::RestrictionMode;

/// The longest model name crs accepts from a client. Real names are well under 100 bytes
/// (`us.anthropic.claude-3-5-sonnet-20241022-v2:0` is 45).
pub const MAX_NAME: usize = 200;

/// Is `name` a model name crs passes on, logs and records? ASCII letters, digits and
/// `-._:/@[]+`, at most `MAX_NAME` bytes: every naming scheme in use (Anthropic, Bedrock ids
/// and ARNs, `provider/model`, Vertex `model@date`, `[1m]` context tags, Gemini `models/..`)
/// and nothing that could break a log line, a usage bucket key or a URL (no `.` or `..` path
/// segment either).
pub fn valid_name(name: &str) -> bool {
    // v1's Claude Code Router routing: `ccr,<model>`.
    let name = name.strip_prefix("ccr,").unwrap_or(name);
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:/@[]+".contains(&b))
        && !name.split('/').any(|seg| seg == "." || seg == "..")
}

/// `anthropic/claude-sonnet-4-5-20250929` -> `claude-sonnet-4-5`;
/// `us.anthropic.claude-3-5-haiku-20241022-v1:0` -> `claude-3-5-haiku`;
/// `claude-sonnet-4-5@20250929` -> `claude-sonnet-4-5`; `claude-sonnet-4-5[1m]` -> `claude-sonnet-4-5`;
/// `models/gemini-2.5-pro` -> `gemini-2.5-pro`; `gpt-4o-2024-08-06` -> `gpt-4o`.
///
/// The cuts are repeated until nothing changes, so the result is its own canonical form
/// (`claude-opus-4-1 [1m]` is `claude-opus-4-1`, not `claude-opus-4-1 `). Each repeat that
/// changes the name shortens it, so this ends.
pub fn normalize(model: &str) -> String {
    // Lower case once; every cut below takes a part of the name, so it works on slices and
    // allocates nothing more (this runs a few times a request).
    let lower = model.to_ascii_lowercase();
    let mut m = lower.as_str();
    loop {
        let again = cut_once(m);
        // A cut that changes the name shortens it.
        if again.len() == m.len() {
            return again.to_owned();
        }
        m = again;
    }
}

/// The first `needle` in `s`: a plain scan, cheaper than `str::find`'s searcher for names
/// this short.
fn find(s: &str, needle: &[u8]) -> Option<usize> {
    s.as_bytes().windows(needle.len()).position(|w| w == needle)
}

fn cut_once(model: &str) -> &str {
    let mut m = model.trim();
    // Context tags such as "[1m]".
    if let Some(i) = m.find('[') {
        m = &m[..i];
    }
    // Provider prefixes with a slash: anthropic/, openai/, bedrock/, models/, vertex_ai/ ...
    if let Some(i) = m.rfind('/') {
        m = &m[i + 1..];
    }
    // Bedrock ids: [region.]anthropic.<model>-v1:0
    if let Some(i) = find(m, b"anthropic.") {
        m = &m[i + "anthropic.".len()..];
    }
    // Vertex "@date" and Bedrock ":0" revisions.
    if let Some(i) = m.find('@') {
        m = &m[..i];
    }
    if let Some(i) = m.find(':') {
        m = &m[..i];
    }
    // -v1, -v2 version suffixes (Bedrock).
    if let Some(i) = m.as_bytes().windows(2).rposition(|w| w == b"-v")
        && m[i + 2..].chars().all(|c| c.is_ascii_digit())
        && i + 2 < m.len()
    {
        m = &m[..i];
    }
    // Date suffixes: -20250929, -2024-08-06, -latest.
    if let Some(rest) = m.strip_suffix("-latest") {
        m = rest;
    }
    // Byte checks only: the name may hold any UTF-8 (normalise is total), and every cut below
    // is at an ASCII '-', so a char boundary.
    let bytes = m.as_bytes();
    let digits = |b: &[u8]| b.iter().all(u8::is_ascii_digit);
    let n = bytes.len();
    if n > 9 && bytes[n - 9] == b'-' && digits(&bytes[n - 8..]) {
        m = &m[..n - 9];
    } else if n > 11 {
        let b = &bytes[n - 11..];
        if b[0] == b'-'
            && b[5] == b'-'
            && b[8] == b'-'
            && digits(&b[1..5])
            && digits(&b[6..8])
            && digits(&b[9..])
        {
            m = &m[..n - 11];
        }
    }
    m
}

/// Whether `model` is refused by a key's restriction list in `mode` ("deny" or "allow").
pub fn refused(model: &str, list: &[String], mode: RestrictionMode) -> bool {
    let n = normalize(model);
    let listed = list.iter().any(|l| normalize(l) == n);
    match mode {
        RestrictionMode::Allow => !listed,
        RestrictionMode::Deny => listed,
    }
}

/// Claude-family models, whose cost v1's "weekly Opus" counter holds.
pub fn is_claude(model: &str) -> bool {
    let n = normalize(model);
    n.starts_with("claude") || n.contains("opus") || n.contains("sonnet") || n.contains("haiku")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation() {
        for (raw, want) in [
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            ("anthropic/claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            (
                "us.anthropic.claude-3-5-haiku-20241022-v1:0",
                "claude-3-5-haiku",
            ),
            ("anthropic.claude-opus-4-1-20250805-v1:0", "claude-opus-4-1"),
            ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5"),
            ("Claude-Sonnet-4-5[1m]", "claude-sonnet-4-5"),
            ("models/gemini-2.5-pro", "gemini-2.5-pro"),
            ("gpt-4o-2024-08-06", "gpt-4o"),
            ("gpt-5", "gpt-5"),
            ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
            ("gpt-4.1", "gpt-4.1"),
            ("claude-opus-4-1 [1m]", "claude-opus-4-1"),
            ("claude-3-7-sonnet-20250219-latest", "claude-3-7-sonnet"),
        ] {
            assert_eq!(normalize(raw), want, "{raw}");
        }
    }

    #[test]
    fn deny_and_allow_lists() {
        let list = vec!["claude-opus-4-1-20250805".to_string()];
        assert!(refused(
            "claude-opus-4-1-20250805",
            &list,
            RestrictionMode::Deny
        ));
        assert!(refused(
            "anthropic/claude-opus-4-1",
            &list,
            RestrictionMode::Deny
        ));
        assert!(!refused("claude-sonnet-4-5", &list, RestrictionMode::Deny));
        assert!(!refused("claude-opus-4-1", &list, RestrictionMode::Allow));
        assert!(refused("claude-sonnet-4-5", &list, RestrictionMode::Allow));
        assert!(refused("anything", &[], RestrictionMode::Allow));
        assert!(!refused("anything", &[], RestrictionMode::Deny));
    }

    #[test]
    fn claude_family() {
        assert!(is_claude("claude-3-5-haiku-20241022"));
        assert!(is_claude("us.anthropic.claude-opus-4-1-20250805-v1:0"));
        assert!(!is_claude("gpt-5"));
        assert!(!is_claude("gemini-2.5-pro"));
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Names in the accepted alphabet, with the prefixes and suffixes `normalize` cuts.
        fn namish() -> impl Strategy<Value = String> {
            (
                prop::option::of("(anthropic|openai|models|bedrock|vertex_ai)/"),
                prop::option::of("(us|eu|apac)\\.anthropic\\."),
                "[a-zA-Z0-9.-]{0,24}",
                prop::option::of("-(20[0-9]{6}|20[0-9]{2}-[0-9]{2}-[0-9]{2}|latest)"),
                prop::option::of("-v[0-9]{1,2}"),
                prop::option::of(":[0-9]"),
                prop::option::of("@20[0-9]{6}"),
                prop::option::of("\\[1m\\]"),
            )
                .prop_map(|(a, b, c, d, e, f, g, h)| {
                    [a, b, Some(c), d, e, f, g, h]
                        .into_iter()
                        .flatten()
                        .collect()
                })
        }

        fn any_name() -> impl Strategy<Value = String> {
            prop_oneof![
                any::<String>(),
                namish(),
                "[ a-zA-Z0-9\\-._:/@\\[\\]+]{0,40}",
                // The suffixes `normalize` cuts, repeated and in odd orders.
                prop::collection::vec(
                    "(-20250929|-2024-08-06|-latest|-v1|-v|:0|@x|\\[1m\\]|/|anthropic\\.| |-)",
                    0..6
                )
                .prop_map(|v| v.concat()),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn normalize_is_total_and_idempotent(name in any_name()) {
                let n = normalize(&name);
                prop_assert_eq!(&normalize(&n), &n, "normalize({:?}) = {:?}", name, n);
                prop_assert!(!n.bytes().any(|b| b.is_ascii_uppercase()));
                prop_assert!(n.len() <= name.len());
                prop_assert_eq!(n.trim(), n.as_str());
            }

            #[test]
            fn refused_agrees_with_itself(name in any_name(), other in any_name()) {
                let list = vec![name.clone()];
                prop_assert!(refused(&name, &list, RestrictionMode::Deny));
                prop_assert!(!refused(&name, &list, RestrictionMode::Allow));
                let list = vec![other.clone()];
                prop_assert_eq!(
                    refused(&name, &list, RestrictionMode::Allow),
                    !refused(&name, &list, RestrictionMode::Deny)
                );
                // The list entry and the requested name are compared in the same form.
                prop_assert_eq!(
                    refused(&name, &list, RestrictionMode::Deny),
                    refused(&normalize(&name), &[normalize(&other)], RestrictionMode::Deny)
                );
                let _ = is_claude(&name);
            }

            #[test]
            fn valid_names_are_the_alphabet_within_the_length(name in any_name()) {
                let name = name.strip_prefix("ccr,").unwrap_or(&name).to_owned();
                let alphabet = name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._:/@[]+".contains(&b));
                let dot_segment = name.split('/').any(|s| s == "." || s == "..");
                prop_assert_eq!(
                    valid_name(&name),
                    !name.is_empty() && name.len() <= MAX_NAME && alphabet && !dot_segment
                );
                if valid_name(&name) {
                    // Nothing that could break a log line, a bucket key or a URL.
                    prop_assert!(!name.bytes().any(|b| b.is_ascii_whitespace()
                        || b.is_ascii_control()
                        || b"|%?#\\\"'".contains(&b)
                        || !b.is_ascii()));
                }
            }

            #[test]
            fn names_over_the_limit_are_refused(c in "[a-z0-9]", extra in 1usize..64) {
                let long = c.repeat(MAX_NAME + extra);
                prop_assert!(!valid_name(&long));
                prop_assert!(valid_name(&long[..MAX_NAME]));
            }
        }
    }
}

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
pub fn normalize(model: &str) -> String {
    let mut m = model.trim().to_ascii_lowercase();
    // Context tags such as "[1m]".
    if let Some(i) = m.find('[') {
        m.truncate(i);
    }
    // Provider prefixes with a slash: anthropic/, openai/, bedrock/, models/, vertex_ai/ ...
    if let Some(i) = m.rfind('/') {
        m = m[i + 1..].to_owned();
    }
    // Bedrock ids: [region.]anthropic.<model>-v1:0
    if let Some(i) = m.find("anthropic.") {
        m = m[i + "anthropic.".len()..].to_owned();
    }
    // Vertex "@date" and Bedrock ":0" revisions.
    if let Some(i) = m.find('@') {
        m.truncate(i);
    }
    if let Some(i) = m.find(':') {
        m.truncate(i);
    }
    // -v1, -v2 version suffixes (Bedrock).
    if let Some(i) = m.rfind("-v")
        && m[i + 2..].chars().all(|c| c.is_ascii_digit())
        && i + 2 < m.len()
    {
        m.truncate(i);
    }
    // Date suffixes: -20250929, -2024-08-06, -latest.
    if let Some(rest) = m.strip_suffix("-latest") {
        m = rest.to_owned();
    }
    // Byte checks only: the name may hold any UTF-8 (normalise is total), and every cut below
    // is at an ASCII '-', so a char boundary.
    let bytes = m.as_bytes();
    let digits = |b: &[u8]| b.iter().all(u8::is_ascii_digit);
    let n = bytes.len();
    if n > 9 && bytes[n - 9] == b'-' && digits(&bytes[n - 8..]) {
        m.truncate(n - 9);
    } else if n > 11 {
        let b = &bytes[n - 11..];
        if b[0] == b'-'
            && b[5] == b'-'
            && b[8] == b'-'
            && digits(&b[1..5])
            && digits(&b[6..8])
            && digits(&b[9..])
        {
            m.truncate(m.len() - 11);
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
}

//! Model names as clients write them, reduced to a canonical form for restriction lists:
//! lower case, no provider or region prefix, no date or version suffix, no context tag.

use crate::model::RestrictionMode;

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
    let bytes = m.as_bytes();
    if m.len() > 9
        && bytes[m.len() - 9] == b'-'
        && m[m.len() - 8..].chars().all(|c| c.is_ascii_digit())
    {
        m.truncate(m.len() - 9);
    } else if m.len() > 11 {
        let tail = &m[m.len() - 11..];
        let b = tail.as_bytes();
        if b[0] == b'-'
            && b[5] == b'-'
            && b[8] == b'-'
            && tail[1..5].chars().all(|c| c.is_ascii_digit())
            && tail[6..8].chars().all(|c| c.is_ascii_digit())
            && tail[9..].chars().all(|c| c.is_ascii_digit())
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

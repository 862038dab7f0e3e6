//! Which client sent a request, from its user agent and protocol headers.
//!
//! Recognition relies on stable signals (the user-agent product token each CLI sends, and
//! protocol headers such as Claude Code's `x-app: cli` or Codex's `originator`), never on
//! prompt text, so new client releases keep passing.

use salvo::http::HeaderMap;

/// Built-in client ids accepted in a key's `allowedClients`.
pub const BUILTIN: &[&str] = &["claude_code", "gemini_cli", "codex_cli", "droid_cli"];

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// True when the request comes from the built-in client `id`.
pub fn is_client(id: &str, h: &HeaderMap) -> bool {
    let ua = header(h, "user-agent").trim().to_ascii_lowercase();
    match id {
        // claude-cli/2.0.31 (external, cli) ; also the Agent SDK's "claude-cli/x (external, sdk-ts)".
        "claude_code" => {
            ua.starts_with("claude-cli/")
                || ua.starts_with("claude-code/")
                || header(h, "x-app") == "cli"
        }
        // GeminiCLI/0.1.5 (linux; x64) ; older builds: "gemini-cli/..."
        "gemini_cli" => ua.starts_with("geminicli/") || ua.starts_with("gemini-cli/"),
        // codex_cli_rs/0.46.0 (Debian 12; x86_64) ... ; codex_exec/... ; originator header.
        "codex_cli" => {
            ua.starts_with("codex_cli_rs/")
                || ua.starts_with("codex_exec/")
                || ua.starts_with("codex-cli/")
                || matches!(header(h, "originator"), "codex_cli_rs" | "codex_exec")
        }
        // Factory's droid CLI.
        "droid_cli" => {
            ua.starts_with("factory-cli/")
                || ua.starts_with("droid/")
                || ua.starts_with("droid-cli/")
        }
        _ => false,
    }
}

/// A custom pattern: `*` matches any run of characters; matching is case-insensitive and
/// against the whole user agent.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let t = text.to_ascii_lowercase();
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == t;
    }
    let mut pos = 0usize;
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        if i == 0 {
            if !t.starts_with(part) {
                return false;
            }
            pos = part.len();
        } else if i == parts.len() - 1 {
            return t.len() >= pos + part.len() && t[pos..].ends_with(part);
        } else {
            match t[pos..].find(part) {
                Some(off) => pos += off + part.len(),
                None => return false,
            }
        }
    }
    true
}

/// Does the request match any entry of `allowed` (built-in ids or custom user-agent patterns)?
pub fn allowed(allowed: &[String], h: &HeaderMap) -> bool {
    let ua = header(h, "user-agent");
    allowed.iter().any(|a| {
        if BUILTIN.contains(&a.as_str()) {
            is_client(a, h)
        } else {
            glob_match(a, ua)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use salvo::http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn builtin_clients() {
        assert!(is_client(
            "claude_code",
            &h(&[("user-agent", "claude-cli/2.1.197 (external, cli)")])
        ));
        assert!(is_client(
            "claude_code",
            &h(&[("user-agent", "claude-cli/9.9.9 (external, sdk-ts)")])
        ));
        assert!(is_client(
            "claude_code",
            &h(&[("user-agent", "something"), ("x-app", "cli")])
        ));
        assert!(!is_client(
            "claude_code",
            &h(&[("user-agent", "curl/7.88.1")])
        ));
        assert!(is_client(
            "gemini_cli",
            &h(&[("user-agent", "GeminiCLI/0.9.0 (linux; x64)")])
        ));
        assert!(is_client(
            "codex_cli",
            &h(&[(
                "user-agent",
                "codex_cli_rs/0.169.0 (Debian 12.0.0; x86_64) xterm"
            )])
        ));
        assert!(is_client(
            "codex_cli",
            &h(&[("originator", "codex_cli_rs")])
        ));
        assert!(is_client(
            "droid_cli",
            &h(&[("user-agent", "factory-cli/0.22.0")])
        ));
        assert!(!is_client("unknown", &h(&[("user-agent", "claude-cli/1")])));
    }

    #[test]
    fn custom_patterns() {
        assert!(glob_match("CherryStudio/*", "cherrystudio/1.5.0 (Windows)"));
        assert!(glob_match("*python-httpx*", "python-httpx/0.27"));
        assert!(glob_match("exact-ua", "EXACT-UA"));
        assert!(!glob_match("exact-ua", "exact-ua2"));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("a*b*c", "a-x-c-y-b"));
        let allowed_list = vec!["claude_code".to_string(), "CherryStudio/*".to_string()];
        assert!(allowed(
            &allowed_list,
            &h(&[("user-agent", "CherryStudio/1.0")])
        ));
        assert!(allowed(
            &allowed_list,
            &h(&[("user-agent", "claude-cli/2.0.0 (external, cli)")])
        ));
        assert!(!allowed(&allowed_list, &h(&[("user-agent", "curl/8")])));
        assert!(!allowed(&allowed_list, &h(&[])));
    }
}

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

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// Whole-text glob matching by dynamic programming, as a reference.
        fn reference(pattern: &str, text: &str) -> bool {
            let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
            let t: Vec<char> = text.to_ascii_lowercase().chars().collect();
            // m[j]: p[..i] matches t[..j].
            let mut m = vec![false; t.len() + 1];
            m[0] = true;
            for &pc in &p {
                let mut next = vec![false; t.len() + 1];
                if pc == '*' {
                    let mut any = false;
                    for j in 0..=t.len() {
                        any |= m[j];
                        next[j] = any;
                    }
                } else {
                    for j in 1..=t.len() {
                        next[j] = m[j - 1] && t[j - 1] == pc;
                    }
                }
                m = next;
            }
            m[t.len()]
        }

        fn ua_text() -> impl Strategy<Value = String> {
            prop_oneof![
                "[abAB*/ .-]{0,12}",
                any::<String>(),
                "(claude-cli|Claude-Code|GeminiCLI|gemini-cli|codex_cli_rs|codex_exec|codex-cli|factory-cli|droid|droid-cli)/[0-9.]{0,6}( \\(.{0,10}\\))?",
            ]
        }

        fn headers() -> impl Strategy<Value = HeaderMap> {
            let value = prop_oneof![
                ua_text().prop_map(String::into_bytes),
                prop::collection::vec(any::<u8>(), 0..24),
            ];
            let name = prop::sample::select(vec!["user-agent", "x-app", "originator", "x-other"]);
            prop::collection::vec((name, value), 0..4).prop_map(|pairs| {
                let mut h = HeaderMap::new();
                for (n, v) in pairs {
                    // Bytes a header may not hold are not sent by any client.
                    if let Ok(v) = salvo::http::HeaderValue::from_bytes(&v) {
                        h.append(n, v);
                    }
                }
                h
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn glob_matches_like_the_reference(p in ua_text(), t in ua_text()) {
                prop_assert_eq!(glob_match(&p, &t), reference(&p, &t), "{:?} ~ {:?}", p, t);
            }

            #[test]
            fn a_pattern_from_the_text_matches_it(t in ua_text(), cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..3)) {
                // Replacing any substrings of the text with `*` still matches it.
                let t = t.replace('*', "");
                let mut p: Vec<char> = t.chars().collect();
                for c in cuts {
                    if !p.is_empty() {
                        let i = c.index(p.len());
                        p[i] = '*';
                    }
                }
                let p: String = p.into_iter().collect();
                prop_assert!(glob_match(&p, &t), "{:?} ~ {:?}", p, t);
                prop_assert!(glob_match(&t.to_ascii_uppercase(), &t));
                prop_assert!(glob_match("*", &t));
            }

            #[test]
            fn client_matching_reads_any_headers(h in headers(), list in prop::collection::vec(
                prop_oneof![prop::sample::select(BUILTIN).prop_map(str::to_owned), ua_text()],
                0..4,
            )) {
                let got = allowed(&list, &h);
                let ua = h.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("");
                let want = list.iter().any(|a| if BUILTIN.contains(&a.as_str()) {
                    is_client(a, &h)
                } else {
                    glob_match(a, ua)
                });
                prop_assert_eq!(got, want);
                prop_assert!(!allowed(&[], &h));
            }

            #[test]
            fn builtin_clients_by_user_agent_in_any_case(
                (id, product) in prop::sample::select(vec![
                    ("claude_code", "claude-cli/"),
                    ("claude_code", "claude-code/"),
                    ("gemini_cli", "GeminiCLI/"),
                    ("gemini_cli", "gemini-cli/"),
                    ("codex_cli", "codex_cli_rs/"),
                    ("codex_cli", "codex_exec/"),
                    ("droid_cli", "factory-cli/"),
                    ("droid_cli", "droid/"),
                ]),
                upper in prop::collection::vec(any::<bool>(), 16),
                rest in "[ -~]{0,20}",
            ) {
                let product: String = product
                    .chars()
                    .zip(upper.iter().cycle())
                    .map(|(c, u)| if *u { c.to_ascii_uppercase() } else { c })
                    .collect();
                let mut h = HeaderMap::new();
                h.insert("user-agent", salvo::http::HeaderValue::from_str(&format!(" {product}{rest}")).unwrap());
                prop_assert!(is_client(id, &h), "{:?}", h);
                for other in BUILTIN.iter().filter(|o| **o != id) {
                    prop_assert!(!is_client(other, &h) || rest.is_empty() || *other == id);
                }
            }
        }
    }
}

//! Layering rules, checked against `src/` (in the spirit of rust-analyzer's tidy tests).
//!
//! Every `crate::` path (and every `super::` path that climbs out of its top-level module) in
//! non-test code is an edge between two top-level modules (the first path component under
//! `src/`: `src/relay/engine.rs` is `relay`, `src/model.rs` is `model`). The edges must respect
//! the layers below; ARCHITECTURE.md describes the same table.
//!
//! Rules:
//! 1. A module may reference modules of its own layer or of layers below it, never above.
//! 2. `relay` and `admin` never reference each other.
//! 3. `migrate` never references `relay`, `admin`, `state`, `server`.
//! 4. `mock` may reference only wire and data modules (and itself); only `main` and `lib` may
//!    reference `mock`.
//! 5. The graph of top-level modules has no cycles. It is checked on the edges that break none
//!    of rules 1-4 (a cycle through a forbidden edge goes when that edge does), so once those
//!    rules hold it covers the whole graph.
//! 6. Every top-level module has a layer in `LAYERS`.
//! 7. Inside a module folder, no two files import each other, directly or round a loop
//!    (`mod.rs` aside: it declares the files). What two files both need lives in one of them.
//!
//! Only non-test code counts: a file is read up to its first line that starts with
//! `#[cfg(test)]`. Comments and string and char literals are blanked before paths are read.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

/// The layers, top to bottom, and their modules. `mock` is its own case (rule 4).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "entry",
        &["main", "lib", "server", "listener", "ui", "upgrade"],
    ),
    (
        "routes",
        &["relay", "admin", "state", "migrate", "ops", "notify"],
    ),
    ("policy", &["limits", "scheduler", "accounts", "auth"]),
    ("wire", &["providers", "convert"]),
    (
        "data",
        &[
            "usage", "store", "model", "crypto", "config", "web", "metrics", "logfile", "events",
            "runtime",
        ],
    ),
    ("mock", &["mock"]),
];

/// Rule 3: what `migrate` must not reference.
const MIGRATE_MUST_NOT_USE: &[&str] = &["relay", "admin", "state", "server"];

// ---------------------------------------------------------------------------------------------
// The test

#[test]
fn src_follows_layering_rules() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let (modules, edges, siblings) = read_src(&src);
    assert!(
        modules.contains_key("lib") && modules.contains_key("relay"),
        "read no sources from {}",
        src.display()
    );
    let mut violations = check(&modules, &edges);
    violations.extend(sibling_cycles(&siblings));
    if !violations.is_empty() {
        panic!(
            "layering rules broken (see tests/suite/layering.rs and ARCHITECTURE.md):\n{}\n{} violation(s)",
            violations.join("\n"),
            violations.len()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Reading src/

/// One reference from a file to a top-level module.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    file: String,
    line: usize,
    from: String,
    to: String,
}

/// The top-level modules found in `src/` (each with its first file, for messages), every
/// reference between two different top-level modules, and every reference between two files
/// of one module folder (rule 7; `mod.rs` is no such file: it declares them).
fn read_src(src: &Path) -> (BTreeMap<String, String>, Vec<Edge>, Vec<SiblingEdge>) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();

    let mut modules: BTreeMap<String, String> = BTreeMap::new();
    let mut parsed = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(src).unwrap();
        let parts: Vec<String> = rel
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect();
        let display = format!("src/{}", parts.join("/"));
        let top = parts[0].trim_end_matches(".rs").to_string();
        modules
            .entry(top.clone())
            .or_insert_with(|| display.clone());
        let text = std::fs::read_to_string(path).unwrap();
        let in_folder = parts.len() > 1 && parts.last().is_some_and(|p| p != "mod.rs");
        parsed.push((display, top, module_path(&parts), in_folder, text));
    }
    let files: BTreeSet<&[String]> = parsed.iter().map(|p| p.2.as_slice()).collect();

    let mut edges = BTreeSet::new();
    let mut siblings = BTreeSet::new();
    for (display, top, module, in_folder, text) in &parsed {
        // `main.rs` is the binary crate: its `crate::` is itself, the library is `crs::`.
        let (roots, module): (&[&str], &[String]) = if top == "main" {
            (&["crs"], &[])
        } else {
            (&["crate", "super", "self"], module)
        };
        for (line, path) in references(text, module, roots) {
            if *in_folder {
                let (folder, name) = module.split_at(module.len() - 1);
                if path.len() > folder.len()
                    && path.starts_with(folder)
                    && path[folder.len()] != name[0]
                    && files.contains(&path[..=folder.len()])
                {
                    siblings.insert(SiblingEdge {
                        file: display.clone(),
                        line,
                        folder: folder.join("::"),
                        from: name[0].clone(),
                        to: path[folder.len()].clone(),
                    });
                }
            }
            let Some(first) = path.first() else { continue };
            // A name that is no module is an item of the crate root, `lib.rs`.
            let to = if modules.contains_key(first) {
                first.clone()
            } else {
                "lib".to_string()
            };
            if to != *top {
                edges.insert(Edge {
                    file: display.clone(),
                    line,
                    from: top.clone(),
                    to,
                });
            }
        }
    }
    (
        modules,
        edges.into_iter().collect(),
        siblings.into_iter().collect(),
    )
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file from its components under `src/`: `lib.rs` and `main.rs` are the
/// root, `relay/mod.rs` is `relay`, `relay/wire.rs` is `relay::wire`.
fn module_path(parts: &[String]) -> Vec<String> {
    let mut m: Vec<String> = parts
        .iter()
        .map(|p| p.trim_end_matches(".rs").to_string())
        .collect();
    if m.last().is_some_and(|l| l == "mod") || (m.len() == 1 && (m[0] == "lib" || m[0] == "main")) {
        m.pop();
    }
    m
}

/// A reference from one file of a module folder to a sibling file of the same folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SiblingEdge {
    file: String,
    line: usize,
    /// The folder's module path, `convert` or `providers::bedrock`.
    folder: String,
    from: String,
    to: String,
}

/// Rule 7: every sibling edge that lies on a loop, with the shortest loop through it.
fn sibling_cycles(edges: &[SiblingEdge]) -> Vec<String> {
    let mut graphs: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for e in edges {
        graphs
            .entry(&e.folder)
            .or_default()
            .entry(&e.from)
            .or_default()
            .insert(&e.to);
    }
    let mut out = Vec::new();
    for e in edges {
        if let Some(cycle) = loop_through(&graphs[e.folder.as_str()], &e.from, &e.to) {
            out.push(format!(
                "{}:{}: {}::{} -> {}::{}: rule 7: files of one folder import each other: {}",
                e.file, e.line, e.folder, e.from, e.folder, e.to, cycle
            ));
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The rules

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, ms))| ms.contains(&module))
        .map(|(i, (name, _))| (i, *name))
}

fn layer_name(module: &str) -> &'static str {
    layer_of(module).map_or("no layer", |(_, name)| name)
}

/// Every rule broken, one line each: `src/path.rs:LINE: from (layer) -> to (layer): rule`.
fn check(modules: &BTreeMap<String, String>, edges: &[Edge]) -> Vec<String> {
    let mut out: Vec<(String, usize, String)> = Vec::new();
    let mut report = |e: &Edge, rule: String| {
        let msg = format!(
            "{}:{}: {} ({}) -> {} ({}): {rule}",
            e.file,
            e.line,
            e.from,
            layer_name(&e.from),
            e.to,
            layer_name(&e.to)
        );
        out.push((e.file.clone(), e.line, msg));
    };

    // Edges that break none of rules 1-4. Rule 5 looks for cycles among these only: a cycle
    // through a forbidden edge goes when that edge does, and listing every allowed edge of it
    // too would bury the edges to fix.
    let mut allowed: Vec<&Edge> = Vec::new();
    for e in edges {
        let (Some((from_i, from_l)), Some((to_i, to_l))) = (layer_of(&e.from), layer_of(&e.to))
        else {
            allowed.push(e); // rule 6 reports the module
            continue;
        };
        let mut broken: Vec<String> = Vec::new();
        if e.to == "mock" || e.from == "mock" {
            if e.to == "mock" && e.from != "main" && e.from != "lib" {
                broken.push("rule 4: only main and lib may reference mock".into());
            }
            if e.from == "mock" && to_l != "wire" && to_l != "data" {
                broken.push("rule 4: mock may reference only wire and data modules".into());
            }
        } else {
            if to_i < from_i {
                broken.push(format!(
                    "rule 1: {from_l} must not reference {to_l}, a layer above it"
                ));
            }
            if (e.from == "relay" && e.to == "admin") || (e.from == "admin" && e.to == "relay") {
                broken.push("rule 2: relay and admin never reference each other".into());
            }
            if e.from == "migrate" && MIGRATE_MUST_NOT_USE.contains(&e.to.as_str()) {
                broken.push(format!(
                    "rule 3: migrate must not reference {}",
                    MIGRATE_MUST_NOT_USE.join(", ")
                ));
            }
        }
        if broken.is_empty() {
            allowed.push(e);
        }
        for rule in broken {
            report(e, rule);
        }
    }

    // Rule 5: an edge u -> v lies on a cycle if u is reachable from v; name the shortest one.
    let mut graph: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in &allowed {
        graph.entry(&e.from).or_default().insert(&e.to);
    }
    for e in allowed {
        if let Some(cycle) = loop_through(&graph, &e.from, &e.to) {
            report(e, format!("rule 5: cycle {cycle}"));
        }
    }

    for (module, file) in modules {
        if layer_of(module).is_none() {
            out.push((
                file.clone(),
                1,
                format!(
                    "{file}:1: {module} (no layer): rule 6: new module {module}: give it a layer \
                     in tests/suite/layering.rs and ARCHITECTURE.md"
                ),
            ));
        }
    }

    out.sort();
    out.into_iter().map(|(_, _, msg)| msg).collect()
}

/// The shortest loop through the edge `from -> to`, written `from -> to -> ... -> from`, if
/// the graph has one.
fn loop_through(graph: &BTreeMap<&str, BTreeSet<&str>>, from: &str, to: &str) -> Option<String> {
    let back = shortest_path(graph, to, from)?;
    Some(format!("{from} -> {}", back.join(" -> ")))
}

/// The shortest path from `from` to `to` (both included), if any.
fn shortest_path<'a>(
    graph: &BTreeMap<&'a str, BTreeSet<&'a str>>,
    from: &'a str,
    to: &'a str,
) -> Option<Vec<&'a str>> {
    let mut prev: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen = BTreeSet::from([from]);
    while let Some(n) = queue.pop_front() {
        if n == to {
            let mut path = vec![n];
            let mut cur = n;
            while let Some(&p) = prev.get(cur) {
                path.push(p);
                cur = p;
            }
            path.reverse();
            return Some(path);
        }
        for &m in graph.get(n).into_iter().flatten() {
            if seen.insert(m) {
                prev.insert(m, n);
                queue.push_back(m);
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// The parser

/// The part of a file that is not test code: everything before its first line that starts with
/// `#[cfg(test)]`.
fn non_test_part(text: &str) -> &str {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("#[cfg(test)]") {
            return &text[..offset];
        }
        offset += line.len();
    }
    text
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `text` with comments, string literals and char literals replaced by spaces (newlines kept,
/// so line numbers stay right).
fn blank_comments_and_strings(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let blank = |ch: char| if ch == '\n' { '\n' } else { ' ' };
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let prev = if i > 0 { c[i - 1] } else { ' ' };
        let prev2 = if i > 1 { c[i - 2] } else { ' ' };
        if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if ch == 'r'
            && (!is_ident_char(prev) || (prev == 'b' && !is_ident_char(prev2)))
            && raw_string_hashes(&c, i + 1).is_some()
        {
            // r"..." or r#"..."# (also br"...": the b is an identifier character before it).
            let hashes = raw_string_hashes(&c, i + 1).unwrap();
            let open = 1 + hashes + 1;
            for _ in 0..open {
                out.push(' ');
            }
            i += open;
            while i < c.len() {
                if c[i] == '"' && (1..=hashes).all(|k| at(i + k) == '#') {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += hashes + 1;
                    break;
                }
                out.push(blank(c[i]));
                i += 1;
            }
        } else if ch == '"' {
            out.push(' ');
            i += 1;
            while i < c.len() {
                if c[i] == '\\' {
                    out.push(' ');
                    out.push(blank(at(i + 1)));
                    i += 2;
                } else if c[i] == '"' {
                    out.push(' ');
                    i += 1;
                    break;
                } else {
                    out.push(blank(c[i]));
                    i += 1;
                }
            }
        } else if ch == '\'' && at(i + 1) == '\\' {
            // An escaped char literal: '\n', '\'', '\u{1F600}'.
            let mut j = i + 3;
            while j < c.len() && c[j] != '\'' && c[j] != '\n' {
                j += 1;
            }
            for &k in &c[i..=j.min(c.len() - 1)] {
                out.push(blank(k));
            }
            i = j + 1;
        } else if ch == '\'' && at(i + 2) == '\'' && at(i + 1) != '\n' {
            out.push_str("   ");
            i += 3;
        } else {
            // Anything else, including a lifetime's quote.
            out.push(ch);
            i += 1;
        }
    }
    out
}

/// If `c[i..]` is `#*"` (the rest of a raw string's opening after its `r`), the number of `#`.
fn raw_string_hashes(c: &[char], i: usize) -> Option<usize> {
    let mut n = 0;
    while c.get(i + n) == Some(&'#') {
        n += 1;
    }
    (c.get(i + n) == Some(&'"')).then_some(n)
}

#[derive(Debug, Clone)]
struct Tok {
    text: String,
    line: usize,
}

/// Identifiers, `::`, and single punctuation characters, with their 1-based line.
fn tokenize(clean: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    for (n, line) in clean.lines().enumerate() {
        let c: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < c.len() {
            if c[i].is_whitespace() {
                i += 1;
            } else if is_ident_char(c[i]) {
                let start = i;
                while i < c.len() && is_ident_char(c[i]) {
                    i += 1;
                }
                toks.push(Tok {
                    text: c[start..i].iter().collect(),
                    line: n + 1,
                });
            } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
                toks.push(Tok {
                    text: "::".into(),
                    line: n + 1,
                });
                i += 2;
            } else {
                toks.push(Tok {
                    text: c[i].to_string(),
                    line: n + 1,
                });
                i += 1;
            }
        }
    }
    toks
}

fn is_ident(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Every path in the non-test part of `text` that starts with one of `roots` (`crate`, `super`,
/// `self`; `crs` in `main.rs`), resolved from the file's module path `module` to a path from
/// the crate root, with the line of its first resolved component. Grouped imports give one
/// path per leaf; inline `mod name { ... }` blocks count for `super`.
fn references(text: &str, module: &[String], roots: &[&str]) -> Vec<(usize, Vec<String>)> {
    let clean = blank_comments_and_strings(non_test_part(text));
    let toks = tokenize(&clean);
    let text_at = |i: usize| toks.get(i).map(|t| t.text.as_str());

    let mut out = Vec::new();
    let mut depth = 0usize;
    // Inline modules: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = toks[i].text.as_str();
        match t {
            "{" => {
                depth += 1;
                if i >= 2 && text_at(i - 2) == Some("mod") && is_ident(&toks[i - 1].text) {
                    inline.push((toks[i - 1].text.clone(), depth));
                }
                i += 1;
            }
            "}" => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ if roots.contains(&t)
                && text_at(i + 1) == Some("::")
                && (i == 0 || text_at(i - 1) != Some("::")) =>
            {
                let mut leaves = Vec::new();
                let next = use_tree(&toks, i + 2, vec![toks[i].clone()], &mut leaves);
                let mut here: Vec<String> = module.to_vec();
                here.extend(inline.iter().map(|(name, _)| name.clone()));
                for leaf in leaves {
                    if let Some(r) = resolve(&here, &leaf, roots) {
                        out.push(r);
                    }
                }
                i = next.max(i + 1);
            }
            _ => i += 1,
        }
    }
    out
}

/// Read the rest of a path (or use tree) from `toks[i]`, after `prefix` and its `::`; push one
/// segment list per leaf. Returns the index after it.
fn use_tree(toks: &[Tok], mut i: usize, mut prefix: Vec<Tok>, leaves: &mut Vec<Vec<Tok>>) -> usize {
    let text_at = |i: usize| toks.get(i).map(|t| t.text.as_str());
    loop {
        match text_at(i) {
            Some("{") => {
                i += 1;
                loop {
                    match text_at(i) {
                        None => return i,
                        Some("}") => return i + 1,
                        Some(",") => i += 1,
                        Some("as") => i += 2,
                        Some(_) => {
                            let j = use_tree(toks, i, prefix.clone(), leaves);
                            i = if j == i { i + 1 } else { j };
                        }
                    }
                }
            }
            Some(t) if is_ident(t) => {
                prefix.push(toks[i].clone());
                i += 1;
                if text_at(i) == Some("::") && text_at(i + 1) != Some("<") {
                    i += 1;
                } else {
                    leaves.push(prefix);
                    return i;
                }
            }
            Some("*") => {
                leaves.push(prefix);
                return i + 1;
            }
            _ => {
                leaves.push(prefix);
                return i;
            }
        }
    }
}

/// A path's segments, resolved from module `here`: the path from the crate root and the line of
/// its first named component. `None` for a `super` above the crate root.
fn resolve(here: &[String], segs: &[Tok], roots: &[&str]) -> Option<(usize, Vec<String>)> {
    let mut path: Vec<String> = here.to_vec();
    let mut line = segs.first()?.line;
    let mut named = false;
    for (k, s) in segs.iter().enumerate() {
        match s.text.as_str() {
            t if k == 0
                && (t == "crate" || (roots.contains(&t) && t != "super" && t != "self")) =>
            {
                path.clear()
            }
            "super" if !named => {
                path.pop()?;
            }
            "self" => {}
            t => {
                if !named {
                    named = true;
                    line = s.line;
                }
                path.push(t.to_string());
            }
        }
    }
    Some((line, path))
}

// ---------------------------------------------------------------------------------------------
// Tests of the checker itself

fn refs(text: &str, module: &[&str]) -> Vec<(usize, String)> {
    let module: Vec<String> = module.iter().map(|s| s.to_string()).collect();
    references(text, &module, &["crate", "super", "self"])
        .into_iter()
        .map(|(line, p)| (line, p.join("::")))
        .collect()
}

#[test]
fn rule_7_finds_files_of_one_folder_that_import_each_other() {
    let edge = |folder: &str, from: &str, to: &str| SiblingEdge {
        file: format!("src/{folder}/{from}.rs"),
        line: 1,
        folder: folder.into(),
        from: from.into(),
        to: to.into(),
    };
    // A chain, and the same names in another folder: no loop.
    let chain = [
        edge("convert", "messages", "chat"),
        edge("convert", "chat", "images"),
        edge("admin", "chat", "messages"),
    ];
    assert!(sibling_cycles(&chain).is_empty());
    // Closing the loop names each of its edges.
    let mut looped = chain.to_vec();
    looped.push(edge("convert", "images", "messages"));
    let found = sibling_cycles(&looped);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found[0].contains("rule 7") && found[0].contains("messages -> chat -> images -> messages"),
        "{found:?}"
    );
}

#[test]
fn parser_reads_grouped_imports() {
    let src = "use crate::{a, b::c, d::{e, f as g}};\n\
               pub use crate::h::{self, I};\n\
               use crate::{\n    j::K,\n    l,\n};\n\
               use crate::m::*;\n\
               let x = crate::n::f::<T>(1);\n";
    assert_eq!(
        refs(src, &["x"]),
        [
            (1, "a"),
            (1, "b::c"),
            (1, "d::e"),
            (1, "d::f"),
            (2, "h"),
            (2, "h::I"),
            (4, "j::K"),
            (5, "l"),
            (7, "m"),
            (8, "n::f"),
        ]
        .map(|(l, p)| (l, p.to_string()))
    );
}

#[test]
fn parser_ignores_comments_strings_visibility_and_tests() {
    let src = "// crate::a::x\n\
               /// doc: crate::b::x\n\
               /* crate::c /* nested crate::d */ crate::e */\n\
               let s = \"crate::f \\\" crate::g\";\n\
               let r = r#\"crate::h \" crate::i\"#; let b = br\"crate::j\";\n\
               let q = '\"'; let e = '\\''; fn f<'a>(x: &'a str) -> &'a str { crate::real::f(x) }\n\
               pub(crate) fn g() {}\n\
               pub(in crate::k) fn h() {}\n\
               #[cfg(test)]\n\
               mod tests { use crate::l; }\n";
    assert_eq!(
        refs(src, &["x"]),
        [(6, "real::f"), (8, "k")].map(|(l, p)| (l, p.to_string()))
    );
}

#[test]
fn parser_resolves_super_and_self() {
    // From src/relay/sub/y.rs (module relay::sub::y).
    let src = "use super::z;\nuse super::super::x;\nuse super::super::super::store::Db;\n\
               use self::w;\nuse super::{self, super::q};\n";
    assert_eq!(
        refs(src, &["relay", "sub", "y"]),
        [
            (1, "relay::sub::z"),
            (2, "relay::x"),
            (3, "store::Db"),
            (4, "relay::sub::y::w"),
            (5, "relay::sub"),
            (5, "relay::q"),
        ]
        .map(|(l, p)| (l, p.to_string()))
    );
    // From src/model.rs (module model): super is the crate root.
    assert_eq!(
        refs("use super::config::Config;", &["model"]),
        [(1, "config::Config".to_string())]
    );
    // Inline modules: `super` in `usage::bucket` is `usage`.
    let src = "pub mod bucket {\n    use super::Clock;\n    fn f() { if x { y } }\n}\nuse super::store;\n";
    assert_eq!(
        refs(src, &["usage"]),
        [(2, "usage::Clock"), (5, "store")].map(|(l, p)| (l, p.to_string()))
    );
}

#[test]
fn checker_reports_rules() {
    let edge = |line: usize, from: &str, to: &str| Edge {
        file: "src/x.rs".into(),
        line,
        from: from.into(),
        to: to.into(),
    };
    let modules: BTreeMap<String, String> =
        ["store", "usage", "relay", "admin", "mock", "lib", "fresh"]
            .iter()
            .map(|m| (m.to_string(), format!("src/{m}.rs")))
            .collect();
    let edges = [
        edge(1, "store", "usage"),
        edge(2, "usage", "store"),
        edge(3, "usage", "relay"),
        edge(4, "relay", "admin"),
        edge(5, "relay", "mock"),
        edge(6, "lib", "mock"),
        edge(7, "relay", "usage"),
    ];
    assert_eq!(
        check(&modules, &edges),
        [
            "src/fresh.rs:1: fresh (no layer): rule 6: new module fresh: give it a layer in \
             tests/suite/layering.rs and ARCHITECTURE.md",
            "src/x.rs:1: store (data) -> usage (data): rule 5: cycle store -> usage -> store",
            "src/x.rs:2: usage (data) -> store (data): rule 5: cycle usage -> store -> usage",
            "src/x.rs:3: usage (data) -> relay (routes): rule 1: data must not reference routes, \
             a layer above it",
            "src/x.rs:4: relay (routes) -> admin (routes): rule 2: relay and admin never \
             reference each other",
            "src/x.rs:5: relay (routes) -> mock (mock): rule 4: only main and lib may reference \
             mock",
        ]
    );
}

//! The crate's structure, checked (test code aside):
//! - layers: a top-level module may use only modules on a lower floor
//!   (`crate::x` paths and `use crate::x` lines). A new module must be
//!   given a floor here; an import that runs back up fails with the file
//!   that has it.
//! - circles: no two modules (files) import each other, directly or round
//!   a longer circle (`crate::` and `super::` paths, `use` trees expanded).
//!   A child module naming its parent's items is part of the parent, not a
//!   circle.
//! - length: no function of the data path (`src/proxy/`) over 80 lines.

use std::collections::BTreeMap;
use std::path::Path;

/// Floor of each top-level module under `src/`, the ground floor first.
const FLOORS: &[(&str, u8)] = &[
    ("vocab", 0),
    ("codec", 0),
    ("http", 0),
    ("tls", 0),
    ("policy", 1),
    ("net", 1),
    ("config", 2),
    ("engine", 3),
    ("deploy", 3),
    ("ops", 4),
    ("proxy", 5),
    ("cli", 6),
];

/// Source without its test code: test files and inline `mod tests`.
fn production_source(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let in_tests_dir = path.components().any(|c| c.as_os_str() == "tests");
    if name == "tests.rs" || name.ends_with("_tests.rs") || in_tests_dir {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    Some(match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_string(),
        None => text,
    })
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The top-level modules a text names as `crate::x`.
fn used_modules(text: &str) -> Vec<String> {
    let mut used = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() && !used.contains(&name) {
            used.push(name);
        }
    }
    used
}

#[test]
fn no_module_imports_from_a_floor_above_its_own() {
    let floors: BTreeMap<&str, u8> = FLOORS.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let module = dir.file_name().unwrap().to_str().unwrap().to_string();
        let Some(&floor) = floors.get(module.as_str()) else {
            violations.push(format!("src/{module}/ has no floor in tests/layers.rs"));
            continue;
        };
        let mut files = Vec::new();
        rust_files(&dir, &mut files);
        for file in files {
            let Some(text) = production_source(&file) else {
                continue;
            };
            for used in used_modules(&text) {
                let Some(&to) = floors.get(used.as_str()) else {
                    continue; // a crate-root item, not a module
                };
                if used != module && to >= floor {
                    violations.push(format!(
                        "{} (floor {floor}) uses crate::{used} (floor {to})",
                        file.strip_prefix(&src).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layers:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    // The reader itself: a `use crate::proxy` line is found.
    let used = used_modules("use crate::proxy::state::Shared;\nlet x = crate::vocab::unmap(ip);");
    assert_eq!(used, ["proxy", "vocab"]);
}

// ------------------------------------------------------------ circles

/// The module a source file is: `src/a/b.rs` and `src/a/b/mod.rs` are
/// `a::b`. `None` for the crate roots.
fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    (!parts.is_empty() && parts != ["lib"] && parts != ["main"]).then_some(parts)
}

/// Every path a text names from `crate::` or `super::` (in `use` trees,
/// braces expanded, and inline), as written: `["super", "checks", "Ctx"]`.
fn named_paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        if !text.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &text[i..];
        let starts = (rest.starts_with("crate::") || rest.starts_with("super::"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if !starts {
            i += 1;
            continue;
        }
        let end = path_end(rest);
        expand(&rest[..end], &mut Vec::new(), &mut out);
        i += end.max(1);
    }
    out
}

/// Where the path (or `use` tree) at the start of `text` ends.
fn path_end(text: &str) -> usize {
    let mut depth = 0;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            c if c.is_alphanumeric() || c == '_' || c == ':' => {}
            ',' | ' ' | '\n' | '\t' if depth > 0 => {}
            _ if depth == 0 => return i,
            _ => {}
        }
    }
    text.len()
}

/// Expands a `use` tree (`a::{b, c::{d}}`) into its paths.
fn expand(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    match tree.find('{') {
        None => {
            let mut path = prefix.clone();
            path.extend(
                tree.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
            out.push(path);
        }
        Some(open) => {
            let head: Vec<String> = tree[..open]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let depth = prefix.len();
            prefix.extend(head);
            let mut level = 0;
            let mut start = 0;
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => level += 1,
                    '}' => level -= 1,
                    ',' if level == 0 => {
                        expand(&inner[start..i], prefix, out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand(&inner[start..], prefix, out);
            prefix.truncate(depth);
        }
    }
}

/// The module a named path lands in: the longest known module prefix of
/// the path made absolute from `from` (`super` climbs one module).
fn resolve(
    from: &[String],
    path: &[String],
    modules: &std::collections::BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    let mut abs: Vec<String> = from.to_vec();
    let mut segs = path.iter().peekable();
    if segs.peek().is_some_and(|s| *s == "crate") {
        abs.clear();
        segs.next();
    }
    while segs.peek().is_some_and(|s| *s == "super") {
        abs.pop();
        segs.next();
    }
    abs.extend(segs.filter(|s| *s != "self").cloned());
    (1..=abs.len())
        .rev()
        .map(|n| abs[..n].to_vec())
        .find(|m| modules.contains(m))
}

/// Circles of `use` between the crate's modules, each as `a -> b -> a`.
fn circles(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let sources: Vec<(Vec<String>, String)> = files
        .iter()
        .filter_map(|f| Some((module_of(src, f)?, production_source(f)?)))
        .collect();
    let modules: std::collections::BTreeSet<Vec<String>> =
        sources.iter().map(|(m, _)| m.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, std::collections::BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, text) in &sources {
        for path in named_paths(text) {
            if let Some(to) = resolve(module, &path, &modules) {
                // Its own items, or its parent's: a child module is part
                // of its parent (`super::Item` is not a circle).
                if &to != module && !module.starts_with(&to) {
                    edges.entry(module.clone()).or_default().insert(to);
                }
            }
        }
    }
    // Depth-first search for a way back to the start, from every module.
    let mut found = Vec::new();
    for start in &modules {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = std::collections::BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    let names: Vec<String> = trail.iter().map(|m| m.join("::")).collect();
                    found.push(format!("{} -> {}", names.join(" -> "), start.join("::")));
                } else if next > start && seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.clone());
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    found
}

#[test]
fn no_modules_import_each_other_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = circles(&src);
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_circle_check_reads_use_trees_and_finds_a_circle() {
    let paths = named_paths(
        "use super::{checks::{Ctx, Violation}, stream};\nlet x = crate::vocab::unmap(ip);",
    );
    let flat: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        flat,
        [
            "super::checks::Ctx",
            "super::checks::Violation",
            "super::stream",
            "crate::vocab::unmap"
        ]
    );
    let dir = std::env::temp_dir().join(format!("layers-circle-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("engine")).unwrap();
    std::fs::write(dir.join("engine/mod.rs"), "pub mod a;\npub mod b;\n").unwrap();
    std::fs::write(dir.join("engine/a.rs"), "use super::b::B;\npub struct A;\n").unwrap();
    std::fs::write(
        dir.join("engine/b.rs"),
        "pub struct B(crate::engine::a::A);\n",
    )
    .unwrap();
    let found = circles(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found, ["engine::a -> engine::b -> engine::a"]);
}

// ------------------------------------------------- long functions

/// Longest function allowed in the data path (`src/proxy/`), signature to
/// closing brace: a phase that grows past it is split.
const PROXY_FN_MAX_LINES: usize = 80;

/// `text` with comments and the insides of string and char literals
/// blanked (lines kept), so braces can be counted.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '"' => {
                out.push('"');
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        '\n' => out.push('\n'),
                        _ => {}
                    }
                }
                out.push('"');
            }
            // A char literal ('{', '\n'); a lifetime ('a) has no closing quote.
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                let literal = rest.starts_with('\\') || rest.chars().nth(1) == Some('\'');
                if literal {
                    for c in chars.by_ref() {
                        if c == '\'' {
                            break;
                        }
                    }
                    out.push_str("' '");
                } else {
                    out.push('\'');
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Functions of `text` longer than `max` lines: `(name, lines)`.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize)> {
    let code = code_only(text);
    let lines: Vec<&str> = code.lines().collect();
    let mut found = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        let Some(at) = line.find("fn ") else {
            continue;
        };
        let before = line[..at].trim();
        let is_item = before.split_whitespace().all(|w| {
            [
                "pub",
                "pub(crate)",
                "pub(super)",
                "async",
                "const",
                "unsafe",
            ]
            .contains(&w)
        });
        if !is_item {
            continue;
        }
        let name: String = line[at + 3..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let (mut depth, mut opened) = (0i64, false);
        for (k, l) in lines.iter().enumerate().skip(n) {
            for c in l.chars() {
                match c {
                    '{' => (depth, opened) = (depth + 1, true),
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if !opened && l.trim_end().ends_with(';') {
                break; // a declaration without a body
            }
            if opened && depth <= 0 {
                if k - n + 1 > max {
                    found.push((name.clone(), k - n + 1));
                }
                break;
            }
        }
    }
    found
}

#[test]
fn no_function_in_the_data_path_is_longer_than_80_lines() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/proxy");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let mut long = Vec::new();
    for file in files {
        let Some(text) = production_source(&file) else {
            continue;
        };
        for (name, lines) in long_functions(&text, PROXY_FN_MAX_LINES) {
            long.push(format!("{}: fn {name}: {lines} lines", file.display()));
        }
    }
    assert!(long.is_empty(), "split these:\n{}", long.join("\n"));
}

#[test]
fn the_length_check_counts_braces_of_code_only() {
    let text = "pub async fn short(x: char) -> bool {\n    let s = \"}}}\"; // }\n    x == '}'\n}\n\nfn long<'a>(a: &'a str) {\n    /* { */\n    let _ = a;\n\n}\n";
    assert_eq!(long_functions(text, 4), [("long".to_string(), 5)]);
    assert!(long_functions(text, 5).is_empty());
}

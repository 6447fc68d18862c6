//! The crate's layers, checked: a top-level module may use only modules on
//! a lower floor (`crate::x` paths and `use crate::x` lines, test code
//! aside). A new module must be given a floor here; an import that runs
//! back up fails with the file that has it.

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

//! Lints that clippy does not have: line length, leftovers, and the layering of DESIGN.md
//! (a lower layer never imports a higher one, checked as a grep, like Kafka's import-control).

use std::path::{Path, PathBuf};

const LINE_COLUMNS_MAX: usize = 100;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn all_sources() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["src", "tests", "benches", "bench/src", "fuzz/fuzz_targets"] {
        rust_files(&root().join(dir), &mut files);
    }
    files
}

#[test]
fn lines_fit_in_100_columns() {
    let mut long = Vec::new();
    for file in all_sources() {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (number, line) in text.lines().enumerate() {
            if line.chars().count() > LINE_COLUMNS_MAX {
                long.push(format!("{}:{}", file.display(), number + 1));
            }
        }
    }
    assert!(long.is_empty(), "lines over {LINE_COLUMNS_MAX} columns:\n{}", long.join("\n"));
}

#[test]
fn no_leftovers() {
    let banned = [concat!("FIX", "ME"), concat!("dbg", "!("), concat!("todo", "!(")];
    let mut found = Vec::new();
    for file in all_sources() {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (number, line) in text.lines().enumerate() {
            if banned.iter().any(|b| line.contains(b)) {
                found.push(format!("{}:{}: {}", file.display(), number + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "leftovers:\n{}", found.join("\n"));
}

/// The layering table of docs/ARCHITECTURE.md: each top-level module of `src/` with the
/// modules it may use (rows `| \`module\` | what | \`a\`, \`b\` |`).
fn layering_table() -> Vec<(String, Vec<String>)> {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).expect("ARCHITECTURE");
    let section = doc.split("## Layering").nth(1).expect("a Layering section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let names = |cell: &str| -> Vec<String> {
        cell.split('`').skip(1).step_by(2).map(str::to_string).collect()
    };
    let mut rows = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').collect();
        assert!(cells.len() == 3, "a layering row needs three cells: {line}");
        let module = names(cells[0]).into_iter().next().expect("a module name");
        rows.push((module, names(cells[2])));
    }
    assert!(rows.len() > 10, "the layering table was not found");
    rows
}

/// The top-level modules of the crate and their files.
fn crate_modules() -> Vec<(String, Vec<PathBuf>)> {
    let mut modules = Vec::new();
    let entries = std::fs::read_dir(root().join("src")).expect("src");
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.file_stem().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(&path, &mut files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path.clone());
        } else {
            continue;
        }
        modules.push((name, files));
    }
    modules.sort();
    modules
}

/// The crate modules a line refers to (`crate::name::...`, `crate::name;`,
/// `crate::{a, b::c}`).
fn referenced_modules(line: &str) -> Vec<String> {
    let identifier = |text: &str| -> String {
        let text = text.trim_start();
        text.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
    };
    let mut found = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        let rest = &line[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level names of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.push(identifier(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(identifier(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.push(identifier(rest));
        }
    }
    found.retain(|name| !name.is_empty());
    found
}

#[test]
fn every_module_uses_only_what_the_layering_table_allows() {
    let table = layering_table();
    let mut violations = Vec::new();
    for (module, files) in crate_modules() {
        let Some((_, allowed)) = table.iter().find(|(m, _)| *m == module) else {
            violations.push(format!("src/{module} has no row in the layering table"));
            continue;
        };
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for (number, line) in text.lines().enumerate() {
                for used in referenced_modules(line) {
                    if used != module && !allowed.contains(&used) {
                        violations.push(format!(
                            "{}:{}: {module} uses {used}: {}",
                            file.display(),
                            number + 1,
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}

#[test]
fn the_layering_check_sees_imports() {
    assert_eq!(referenced_modules("use crate::shard::mesh::{Mesh, Service};"), ["shard"]);
    assert_eq!(
        referenced_modules("use crate::{model, storage::{log, Error}, txn};"),
        ["model", "storage", "txn"]
    );
    assert_eq!(
        referenced_modules("let x = crate::txn::state::f(crate::group::g());"),
        ["txn", "group"]
    );
    assert!(referenced_modules("use super::Context;").is_empty());
}

/// `ApiKey::Name` tokens in a source text, in order of appearance.
fn api_keys_named(text: &str) -> Vec<String> {
    let mut keys = Vec::new();
    for piece in text.split("ApiKey::").skip(1) {
        let name: String = piece.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if !name.is_empty() && !keys.contains(&name) {
            keys.push(name);
        }
    }
    keys
}

/// The request fuzz target asserts that every served API has a decoder, but only a fuzz run
/// sees that; this keeps an API added to `protocol::versions` from reaching CI's fuzz step
/// without one.
#[test]
fn every_served_api_has_a_decoder_in_the_request_fuzz_target() {
    let read = |p: &str| std::fs::read_to_string(root().join(p)).expect(p);
    let served = api_keys_named(&read("src/protocol/versions.rs"));
    let target = read("fuzz/fuzz_targets/request.rs");
    assert!(served.len() > 40, "the served list was not found: {served:?}");
    let missing: Vec<_> =
        served.iter().filter(|k| !target.contains(&format!("ApiKey::{k} =>"))).collect();
    assert!(missing.is_empty(), "fuzz/fuzz_targets/request.rs has no decoder for {missing:?}");
}

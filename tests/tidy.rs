//! Lints that clippy does not have: line length, leftovers, and the layering of DESIGN.md
//! (a lower layer never imports a higher one, checked as a grep, like Kafka's import-control).

use std::path::{Path, PathBuf};

const LINE_COLUMNS_MAX: usize = 100;

/// For each layer, the crate modules it must not import.
const FORBIDDEN: &[(&str, &[&str])] = &[
    ("src/model", &["protocol", "storage", "shard", "api", "net", "broker", "wheel"]),
    ("src/wheel", &["protocol", "storage", "shard", "api", "net", "broker"]),
    ("src/protocol", &["storage", "shard", "api", "net", "broker"]),
    ("src/storage", &["protocol", "shard", "api", "net", "broker"]),
    ("src/shard", &["api", "net", "broker"]),
    ("src/group", &["api", "net", "broker"]),
    ("src/txn", &["api", "net", "broker"]),
    ("src/api", &["net", "broker"]),
    ("src/net", &["broker"]),
];

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
    for dir in ["src", "tests", "benches", "bench/src"] {
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

#[test]
fn lower_layers_never_import_higher_ones() {
    let mut violations = Vec::new();
    for (layer, forbidden) in FORBIDDEN {
        let mut files = Vec::new();
        rust_files(&root().join(layer), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for (number, line) in text.lines().enumerate() {
                for module in *forbidden {
                    let import = format!("crate::{module}");
                    let exact = line.contains(&format!("{import}::"))
                        || line.contains(&format!("{import};"));
                    if exact {
                        violations.push(format!(
                            "{}:{}: {}",
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

//! The layering, checked from the source: tools → daemon → storage →
//! protocol, never the other way, and a protocol core that does no I/O,
//! reads no clock and uses no runtime, RPC or storage crate.
//!
//! A `use` of a higher layer, or of a forbidden crate or call in the core's
//! production code, fails this test with the file and line.

use std::path::{Path, PathBuf};

/// The layers from the bottom up; a file may name its own layer and those
/// below it.
const LAYERS: [&str; 4] = ["protocol", "storage", "daemon", "tools"];

/// What the core's production code must not name: runtimes, RPC, storage
/// engines, the file system, sockets, processes, the environment, the clock.
const CORE_FORBIDDEN: &[&str] = &[
    "tokio",
    "tonic",
    "hyper",
    "tower",
    "sled",
    "std::fs",
    "std::net",
    "std::process",
    "std::env::",
    "SystemTime",
    "Instant",
    "now_v7",
    "now_utc",
    "now_local",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layer of a file under src/, or None for the crate root, the binary
/// and the cross-layer test modules at the top.
fn layer_of(rel: &Path) -> Option<usize> {
    let top = rel.components().next()?.as_os_str().to_str()?;
    LAYERS.iter().position(|l| *l == top)
}

/// Whether a file holds only test code (sibling test files and test
/// support).
fn is_test_file(rel: &Path) -> bool {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name == "tests.rs" || name.ends_with("_tests.rs") || name == "test_support.rs"
}

/// The lines of a file with comments dropped, each with its number and
/// whether it is test code (an inline `#[cfg(test)] mod` and what follows).
fn code_lines(text: &str, test_file: bool) -> Vec<(usize, String, bool)> {
    let mut out = Vec::new();
    let mut in_test = test_file;
    let mut cfg_test = false;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        if t.starts_with("#[cfg(test)]") {
            cfg_test = true;
            continue;
        }
        if cfg_test && t.starts_with("mod ") {
            in_test = true;
        }
        let test_line = in_test || cfg_test;
        cfg_test = false;
        let code = match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        out.push((i + 1, code.to_string(), test_line));
    }
    out
}

/// Every `crate::<layer>` (or `casebridge::<layer>`) a line names.
fn named_layers(line: &str) -> Vec<usize> {
    let mut found = Vec::new();
    for prefix in ["crate::", "casebridge::"] {
        let mut rest = line;
        while let Some(at) = rest.find(prefix) {
            let after = &rest[at + prefix.len()..];
            if let Some(l) = LAYERS.iter().position(|l| {
                after.starts_with(l)
                    && !after[l.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            }) {
                found.push(l);
            }
            rest = after;
        }
    }
    found
}

fn names_word(line: &str, word: &str) -> bool {
    let mut rest = line;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        let boundary = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if boundary(before) && (word.ends_with(':') || boundary(after)) {
            return true;
        }
        rest = &rest[at + word.len()..];
    }
    false
}

#[test]
fn dependencies_point_down_and_the_core_does_no_io() {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    for path in &files {
        let rel = path.strip_prefix(&root).expect("under src");
        let Some(layer) = layer_of(rel) else { continue };
        let text = std::fs::read_to_string(path).expect("source is readable");
        for (n, line, test) in code_lines(&text, is_test_file(rel)) {
            for named in named_layers(&line) {
                if named > layer {
                    wrong.push(format!(
                        "src/{}:{n}: the {} layer names the {} layer above it: {}",
                        rel.display(),
                        LAYERS[layer],
                        LAYERS[named],
                        line.trim()
                    ));
                }
            }
            if layer == 0 && !test {
                for word in CORE_FORBIDDEN {
                    if names_word(&line, word) {
                        wrong.push(format!(
                            "src/{}:{n}: the protocol core names `{word}`: {}",
                            rel.display(),
                            line.trim()
                        ));
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} layering violations:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_a_violation() {
    // The scanner itself: an upward name and a forbidden word are found,
    // comments and test modules are not held to the core's rule.
    assert_eq!(named_layers("use crate::daemon::clock::now_ms;"), vec![2]);
    assert_eq!(
        named_layers("use crate::protocolx::y;"),
        Vec::<usize>::new()
    );
    assert!(names_word(
        "let t = std::time::SystemTime::now();",
        "SystemTime"
    ));
    assert!(names_word("use tokio::sync::Notify;", "tokio"));
    assert!(!names_word("let tokio_like = 1;", "tokio"));
    let lines = code_lines(
        "// tokio\nfn a() {}\n#[cfg(test)]\nmod tests {\n use std::fs;\n}\n",
        false,
    );
    assert_eq!(lines.len(), 4);
    assert!(!lines[0].2, "production line");
    assert!(lines[1].2 && lines[2].2, "test module lines");
}

//! The adversarial suite: each case plays a hostile party (a node with its
//! own valid keys, a broker that lies, an agency system asking for what is
//! not its own) and asserts the exact refusal, that nothing changed but the
//! refusal's audit event where one is promised, and that the server still
//! serves. docs/threat-model.md names the case behind each claim.

mod durability;
mod envelope;
mod exchange;
pub(crate) mod harness;
mod identity;
mod limits;
pub(crate) mod node;

/// Every test docs/threat-model.md names exists, so a claim never points at
/// a test that was renamed or removed.
#[test]
fn the_threat_model_names_only_tests_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/threat-model.md")).expect("threat model");
    let mut sources = String::new();
    let mut todo = vec![root.join("src"), root.join("tests")];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("source dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                sources.push_str(&std::fs::read_to_string(&p).expect("source"));
            }
        }
    }
    let named: Vec<&str> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| s.contains("::") && !s.contains(' ') && !s.contains('('))
        .collect();
    assert!(
        named.len() > 60,
        "the threat model names {} tests",
        named.len()
    );
    for name in named {
        let last = name.rsplit("::").next().unwrap_or(name);
        // `a::{b, c}` names two functions.
        let fns: Vec<&str> = if let Some(inner) = name.split_once('{') {
            inner.1.trim_end_matches('}').split(", ").collect()
        } else {
            vec![last]
        };
        for f in fns {
            assert!(
                sources.contains(&format!("fn {f}(")),
                "docs/threat-model.md names `{name}`, but no test `{f}` exists"
            );
        }
    }
}

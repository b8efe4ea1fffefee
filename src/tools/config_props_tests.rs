//! Property tests for the TOML configs and profiles: the broker's, a
//! node's, an agency's and an auditor's, with bytes or lines mutated. See
//! `crate::props_tests` for the fixture and the long-run command.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::props_tests::{ByteMut, apply, beside, byte_muts, fx, run};

// ---------------------------------------------------------------------
// Configs and profiles
// ---------------------------------------------------------------------

/// Byte mutations, or text mutations that keep the TOML mostly readable:
/// lines dropped, duplicated or swapped, values replaced.
fn text_mutation() -> impl Strategy<Value = (Vec<ByteMut>, Vec<(usize, usize, String)>)> {
    prop_oneof![
        2 => byte_muts().prop_map(|m| (m, Vec::new())),
        3 => prop::collection::vec(
                (any::<usize>(), 0usize..4, prop_oneof![
                    Just(String::new()),
                    Just("\"\"".to_string()),
                    Just("0".to_string()),
                    Just("-1".to_string()),
                    Just("99999999999999999999".to_string()),
                    Just("\"127.0.0.1:99999\"".to_string()),
                    Just("\"/nonexistent\"".to_string()),
                    Just("\"ZZ\"".to_string()),
                    Just("[1, 2]".to_string()),
                    Just("{ a = 1 }".to_string()),
                    "[ -~]{0,24}",
                ]),
                1..4,
            )
            .prop_map(|e| (Vec::new(), e)),
    ]
}

fn apply_text(orig: &str, (muts, edits): &(Vec<ByteMut>, Vec<(usize, usize, String)>)) -> Vec<u8> {
    if !muts.is_empty() {
        return apply(orig.as_bytes(), muts);
    }
    let mut lines: Vec<String> = orig.lines().map(str::to_owned).collect();
    for (at, op, value) in edits {
        if lines.is_empty() {
            break;
        }
        let i = at % lines.len();
        match op {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 => {
                let j = (at / 7) % lines.len();
                lines.swap(i, j);
            }
            _ => {
                if let Some((key, _)) = lines[i].split_once('=') {
                    lines[i] = format!("{key}= {value}");
                }
            }
        }
    }
    (lines.join("\n") + "\n").into_bytes()
}

#[test]
fn config_mutations_never_panic() {
    let fx = fx();
    let files: Vec<(u8, PathBuf)> = vec![
        (0, fx.root.join("broker.toml")),
        (1, fx.root.join("nodes/HR.toml")),
        (2, fx.root.join("agencies/HR/police/profile.toml")),
        (3, fx.root.join("auditors/auditor/profile.toml")),
    ];
    let texts: Vec<(u8, PathBuf, String)> = files
        .into_iter()
        .map(|(k, p)| {
            let t = std::fs::read_to_string(&p).expect("config");
            (k, p, t)
        })
        .collect();
    for (k, p, _) in &texts {
        load_config(*k, p).expect("the fixture configs load");
    }
    run(
        "config: broker, node, agency and auditor TOML",
        4,
        (any::<usize>(), text_mutation()),
        |(which, m)| {
            let (kind, path, text) = &texts[which % texts.len()];
            let bytes = apply_text(text, &m);
            let p = beside(path, &bytes);
            let _ = load_config(*kind, &p);
            let _ = std::fs::remove_file(&p);
            Ok(())
        },
    );
}

fn load_config(kind: u8, p: &Path) -> Result<(), String> {
    use crate::daemon::config::{AgencyProfile, BrokerConfig, NodeConfig, load};
    match kind {
        0 => load::<BrokerConfig>(p)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        1 => load::<NodeConfig>(p).map(|_| ()).map_err(|e| e.to_string()),
        2 => load::<AgencyProfile>(p)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        _ => crate::tools::audit::load_profile(p)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

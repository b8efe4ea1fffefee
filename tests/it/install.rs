//! deploy/README.md's install steps, run as written on a fresh host layout.
//!
//! The federation walkthrough (deploy/federation.md, see `walkthrough.rs`)
//! leaves one directory per machine holding what that machine made and
//! received. Its daemons are stopped; then, for the broker's machine and
//! HR's node machine, the README's `sh` blocks under "## Install" (the
//! common block, then the machine's own) run in bash in that machine's
//! directory, against a fresh root file system of its own (`$ROOT`, with
//! the empty `/usr/local/bin` and `/etc/systemd/system` a fresh host has).
//! Three things are adapted, and only these, because a test may not change
//! the machine it runs on: absolute paths given to `install`, `cp` and
//! `chmod` are taken under `$ROOT`; owners (`-o`, `-g`, `chown`) are left out,
//! as the test machine has no `casebridge` user; `cargo`, `useradd` and
//! `systemctl` do nothing (the binary under test stands in for
//! `target/release/casebridge`). The config edits the README asks for
//! ("edit ...: listen, broker") are made on the installed file, and each
//! daemon is started with the `ExecStart=` line of its installed systemd
//! unit. The test passes when HR's agency sends a record through the
//! installed node to the installed broker.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::walkthrough::{Played, play};

/// The `sh` blocks of the README's "## Install" section, each with the
/// `### ` heading it is under ("" for the steps of every machine).
fn install_blocks(doc: &str) -> Vec<(String, String)> {
    let start = doc.find("\n## Install").expect("an Install section");
    let rest = &doc[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    let mut heading = String::new();
    let mut out = Vec::new();
    let mut lines = rest[..end].lines();
    while let Some(line) = lines.next() {
        if let Some(h) = line.strip_prefix("### ") {
            heading = h.trim().to_string();
        }
        if line.trim() == "```sh" {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            out.push((heading.clone(), body.join("\n")));
        }
    }
    out
}

/// What a test may not do to its machine, done under `$ROOT` instead.
const PRELUDE: &str = r#"
under() { case "$1" in /*) printf '%s%s' "$ROOT" "$1" ;; *) printf '%s' "$1" ;; esac; }
rooted() { local a=(); while (($#)); do case "$1" in -o|-g) shift 2 ;; *) a+=("$(under "$1")"); shift ;; esac; done; printf '%s\0' "${a[@]}"; }
install() { local a; mapfile -d '' a < <(rooted "$@"); command install "${a[@]}"; }
cp() { local a; mapfile -d '' a < <(rooted "$@"); command cp "${a[@]}"; }
chmod() { local a; mapfile -d '' a < <(rooted "$@"); command chmod "${a[@]}"; }
chown() { :; }
cargo() { :; }
useradd() { :; }
systemctl() { :; }
"#;

fn run_blocks(host: &Path, root: &Path, blocks: &[&str]) {
    let script = format!("{PRELUDE}\n{}", blocks.join("\n"));
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(host)
        .env("ROOT", root)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "the install steps failed in {}:\n{}\n--- stderr\n{}",
        host.display(),
        blocks.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh host's root file system, and the build the README installs from.
fn fresh_root(host: &Path, name: &str) -> PathBuf {
    let root = host.parent().expect("tmp").join(format!("root-{name}"));
    for d in ["usr/local/bin", "etc/systemd/system", "var/lib"] {
        std::fs::create_dir_all(root.join(d)).expect("root layout");
    }
    let release = host.join("target/release");
    std::fs::create_dir_all(&release).expect("target/release");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_casebridge"), release.join("casebridge"))
        .expect("the binary");
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy"),
        host.join("deploy"),
    )
    .expect("deploy/");
    root
}

/// The edits the README asks for, on the installed config: every absolute
/// path taken under `root`, and the given settings replaced.
fn edit_config(root: &Path, rel: &str, settings: &[(&str, String)]) -> PathBuf {
    let path = root.join(rel);
    let text = std::fs::read_to_string(&path).expect("installed config");
    let root_s = root.display().to_string();
    let mut out = String::new();
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        let line = match settings.iter().find(|(k, _)| *k == key) {
            Some((k, v)) if !line.trim_start().starts_with('#') => format!("{k} = \"{v}\""),
            _ => line
                .replace("\"/etc/", &format!("\"{root_s}/etc/"))
                .replace("\"/var/", &format!("\"{root_s}/var/")),
        };
        out.push_str(&line);
        out.push('\n');
    }
    std::fs::write(&path, out).expect("edit config");
    path
}

/// Starts a daemon with its installed unit's `ExecStart=`, paths under
/// `root`; returns once it says it listens.
fn start_unit(root: &Path, unit: &str, instance: &str) -> std::process::Child {
    let text =
        std::fs::read_to_string(root.join("etc/systemd/system").join(unit)).expect("unit file");
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let args: Vec<String> = exec
        .replace("%i", instance)
        .split_whitespace()
        .map(|a| {
            if a.starts_with('/') {
                format!("{}{a}", root.display())
            } else {
                a.to_string()
            }
        })
        .collect();
    let mut child = Command::new(&args[0])
        .args(&args[1..])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the daemon");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("daemon output");
    assert!(
        line.contains("listening on"),
        "{unit}: the daemon did not start: {line:?}"
    );
    child
}

#[test]
fn the_readme_install_steps_start_a_broker_and_a_node_that_carry_a_record() {
    let Played {
        tmp: _tmp,
        hosts,
        mut daemons,
        env,
        ..
    } = play();
    for (_, c) in daemons.0.iter_mut().rev() {
        let _ = c.kill();
        let _ = c.wait();
    }
    daemons.0.clear();
    let var = |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
            .expect("walkthrough variable")
    };

    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(repo.join("deploy/README.md")).expect("README");
    let blocks = install_blocks(&readme);
    let block = |heading: &str| -> &str {
        blocks
            .iter()
            .find(|(h, _)| h.starts_with(heading))
            .map(|(_, b)| b.as_str())
            .unwrap_or_else(|| panic!("no install block under {heading:?}"))
    };
    let common = block("");

    let broker_host = &hosts["broker"];
    let broker_root = fresh_root(broker_host, "broker");
    run_blocks(
        broker_host,
        &broker_root,
        &[common, block("Broker machine")],
    );
    let broker_addr = format!("{}:{}", var("BROKER_IP"), var("BROKER_PORT"));
    edit_config(
        &broker_root,
        "etc/casebridge/broker.toml",
        &[
            ("listen", broker_addr.clone()),
            ("metrics_listen", "off".into()),
        ],
    );

    let node_host = &hosts["node-hr"];
    let node_root = fresh_root(node_host, "node-hr");
    run_blocks(node_host, &node_root, &[common, block("Node machine")]);
    edit_config(
        &node_root,
        "etc/casebridge/nodes/HR.toml",
        &[
            ("listen", format!("{}:{}", var("HR_IP"), var("HR_PORT"))),
            ("broker", broker_addr),
            ("metrics_listen", "off".into()),
        ],
    );

    // Nothing private is readable by others in the installed layout.
    for root in [&broker_root, &node_root] {
        let mut files = Vec::new();
        crate::walkthrough::files_under(&root.join("etc/casebridge"), &mut files);
        for f in files
            .iter()
            .filter(|f| f.extension().is_some_and(|x| x == "key"))
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(f).expect("key").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{} is {mode:o}", f.display());
        }
    }

    daemons.0.push((
        "broker".into(),
        start_unit(&broker_root, "casebridge-broker.service", ""),
    ));
    daemons.0.push((
        "node-hr".into(),
        start_unit(&node_root, "casebridge-node@.service", "HR"),
    ));

    // HR's agency sends through the installed node to the installed broker:
    // the walkthrough's own send, again.
    let walkthrough = std::fs::read_to_string(repo.join("deploy/federation.md")).expect("doc");
    let send = walkthrough
        .split("```sh\n# host: agency-hr\n")
        .skip(1)
        .filter_map(|b| b.split("\n```").next())
        .find(|b| b.contains("casebridge send"))
        .expect("the walkthrough's send");
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", send])
        .current_dir(&hosts["agency-hr"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("send");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the send through the installed node failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("audit log index"),
        "the broker did not accept the record:\n{stdout}"
    );
    drop(daemons);
}

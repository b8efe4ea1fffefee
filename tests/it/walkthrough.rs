//! deploy/federation.md, played literally with the real binary: every
//! command block that names a machine (`# host: NAME`) runs in bash in that
//! machine's own directory, in the order written; the broker and the nodes
//! listen on loopback aliases (127.0.0.2 to 127.0.0.4, which Linux routes
//! without setup). The only thing shared between machines is the medium,
//! `$MEDIA`, and the test checks that no private key ever lands on it, and
//! that every private key exists on exactly one machine. It ends when the
//! record HR sent is in BA's inbox and the auditor has verified the log.

use std::collections::BTreeMap;
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A command block of the walkthrough.
struct Block {
    host: String,
    /// `# host: NAME, in the foreground`: a daemon, left running.
    daemon: bool,
    /// `# host: NAME, until ...`: repeated until it shows the record.
    until: bool,
    script: String,
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```sh" {
            continue;
        }
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let Some(marker) = body.first().and_then(|l| l.strip_prefix("# host: ")) else {
            continue;
        };
        let (host, how) = marker.split_once(',').unwrap_or((marker, ""));
        out.push(Block {
            host: host.trim().to_string(),
            daemon: how.contains("in the foreground"),
            until: how.contains("until"),
            script: body[1..].join("\n"),
        });
    }
    out
}

/// Daemons started by the walkthrough, stopped when the test ends.
pub(crate) struct Daemons(pub Vec<(String, Child)>);

impl Drop for Daemons {
    fn drop(&mut self) {
        // The nodes first, so that none sees the broker go.
        for (_, c) in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A free port on `ip`, for a daemon that is told its port in its config.
fn free_port(ip: &str) -> u16 {
    std::net::TcpListener::bind((ip, 0))
        .expect("bind a loopback alias")
        .local_addr()
        .expect("address")
        .port()
}

pub(crate) fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The walkthrough as played: one directory per machine under `tmp`, what
/// each block printed, and the daemons it left running.
pub(crate) struct Played {
    pub tmp: tempfile::TempDir,
    pub media: PathBuf,
    pub hosts: BTreeMap<String, PathBuf>,
    pub outputs: Vec<(String, String)>,
    pub daemons: Daemons,
    pub env: Vec<(&'static str, String)>,
}

/// Plays deploy/federation.md, every block in order, and returns what it left.
pub(crate) fn play() -> Played {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(repo.join("deploy/federation.md")).expect("walkthrough");
    let blocks = blocks(&doc);
    assert!(blocks.len() > 20, "the walkthrough's blocks were not found");

    let tmp = tempfile::tempdir().expect("tempdir");
    let media = tmp.path().join("media");
    std::fs::create_dir(&media).expect("media");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_casebridge"));
    let path = format!(
        "{}:{}",
        bin.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env: Vec<(&'static str, String)> = vec![
        ("PATH", path),
        ("MEDIA", media.display().to_string()),
        ("REPO", repo.display().to_string()),
        ("BROKER_IP", "127.0.0.2".into()),
        ("BROKER_PORT", free_port("127.0.0.2").to_string()),
        ("HR_IP", "127.0.0.3".into()),
        ("HR_PORT", free_port("127.0.0.3").to_string()),
        ("BA_IP", "127.0.0.4".into()),
        ("BA_PORT", free_port("127.0.0.4").to_string()),
        // Three daemons on one host: each its own loopback alias, any port.
        ("BROKER_METRICS", "127.0.0.2:0".into()),
        ("HR_METRICS", "127.0.0.3:0".into()),
        ("BA_METRICS", "127.0.0.4:0".into()),
        ("RUST_LOG", "warn".into()),
    ];
    let mut daemons = Daemons(Vec::new());
    let mut hosts = BTreeMap::new();
    let mut outputs = Vec::new();
    for b in &blocks {
        let dir = tmp.path().join(&b.host);
        if !dir.exists() {
            std::fs::create_dir(&dir).expect("host dir");
        }
        hosts.insert(b.host.clone(), dir.clone());
        // A daemon's block is one command, run in place of the shell so that
        // stopping it stops the daemon.
        let script = if b.daemon {
            assert!(!b.script.trim().contains('\n'), "{}: one command", b.host);
            format!("exec {}", b.script.trim())
        } else {
            b.script.clone()
        };
        let mut cmd = Command::new("bash");
        cmd.args(["-euo", "pipefail", "-c", &script])
            .current_dir(&dir)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
        if b.daemon {
            let mut child = cmd
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("spawn daemon");
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().expect("stdout"))
                .read_line(&mut line)
                .expect("daemon output");
            daemons.0.push((b.host.clone(), child));
            assert!(
                line.contains("listening on"),
                "{}: the daemon did not start: {line:?}",
                b.host
            );
            continue;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = cmd.output().expect("run bash");
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            let stderr = String::from_utf8_lossy(&out.stderr).to_string();
            assert!(
                out.status.success(),
                "{}: the block failed:\n{}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
                b.host,
                b.script
            );
            if !b.until || stdout.contains("missing-person-trace") {
                outputs.push((b.host.clone(), stdout));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: the record did not arrive within 30 s; the inbox says:\n{stdout}",
                b.host
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    Played {
        tmp,
        media,
        hosts,
        outputs,
        daemons,
        env,
    }
}

#[test]
fn the_federation_walkthrough_runs_as_written_and_delivers_a_record() {
    let Played {
        tmp,
        media,
        hosts,
        outputs,
        daemons,
        ..
    } = play();
    // The record HR sent is the one BA received, and the auditor verified
    // the log holding it.
    let sent = outputs
        .iter()
        .filter(|(h, _)| h == "agency-hr")
        .flat_map(|(_, o)| o.lines())
        .find_map(|l| {
            let first = l.split_whitespace().next()?;
            uuid::Uuid::parse_str(first)
                .is_ok()
                .then(|| first.to_string())
        })
        .unwrap_or_else(|| panic!("send printed no envelope id: {outputs:?}"));
    let inbox = &outputs
        .iter()
        .rev()
        .find(|(h, _)| h == "agency-ba")
        .expect("inbox ran")
        .1;
    assert!(inbox.contains(&sent), "BA's inbox lacks {sent}:\n{inbox}");
    assert!(inbox.contains("HR/missing-persons"), "{inbox}");
    let audit = &outputs
        .iter()
        .rev()
        .find(|(h, _)| h == "auditor")
        .expect("audit ran")
        .1;
    assert!(
        audit.contains("the root equals the checkpoint's"),
        "the auditor did not verify the log:\n{audit}"
    );

    // Nothing private travelled: no key on the medium, every key on one
    // machine only, and each where the table says.
    let mut on_media = Vec::new();
    files_under(&media, &mut on_media);
    assert!(
        on_media
            .iter()
            .all(|p| p.extension().is_none_or(|x| x != "key")),
        "a private key was copied to the medium: {on_media:?}"
    );
    for p in &on_media {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        assert!(
            !text.contains("PRIVATE KEY"),
            "{} holds a private key",
            p.display()
        );
    }
    let mut keys: BTreeMap<Vec<u8>, Vec<PathBuf>> = BTreeMap::new();
    for dir in hosts.values() {
        let mut files = Vec::new();
        files_under(dir, &mut files);
        for f in files
            .into_iter()
            .filter(|f| f.extension().is_some_and(|x| x == "key"))
        {
            keys.entry(std::fs::read(&f).expect("key"))
                .or_default()
                .push(f);
        }
    }
    for paths in keys.values() {
        assert_eq!(paths.len(), 1, "a private key on two machines: {paths:?}");
    }
    let key_hosts: BTreeMap<String, usize> = keys.values().fold(BTreeMap::new(), |mut m, p| {
        let host = p[0]
            .strip_prefix(tmp.path())
            .expect("under tmp")
            .components()
            .next()
            .expect("host")
            .as_os_str()
            .to_string_lossy()
            .to_string();
        *m.entry(host).or_default() += 1;
        m
    });
    let expected: BTreeMap<String, usize> = [
        ("agency-ba", 1),
        ("agency-hr", 1),
        ("auditor", 1),
        ("broker", 2),
        ("ca-ba", 1),
        ("ca-hr", 1),
        ("ca-root", 1),
        ("dirkey", 1),
        ("node-ba", 3),
        ("node-hr", 3),
    ]
    .into_iter()
    .map(|(h, n)| (h.to_string(), n))
    .collect();
    assert_eq!(key_hosts, expected);
    drop(daemons);
}

//! The agency's command line, run as a person runs it: the real binary
//! against a real federation on loopback, every call over mutual TLS.

use std::path::{Path, PathBuf};

use casebridge::protocol::proto::v1;

use crate::support::*;

/// What a run of the binary printed.
pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The first line of standard output (an envelope id, for the commands
    /// that make one).
    pub fn first_line(&self) -> String {
        self.stdout.lines().next().unwrap_or_default().to_string()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            if self.ok { "success" } else { "failure" },
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `casebridge args...` to its end, off the test's runtime (the
/// federation it talks to runs on that runtime).
pub async fn casebridge(args: &[&str]) -> Run {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_casebridge"))
            .args(&args)
            .env("RUST_LOG", "warn")
            .output()
    })
    .await
    .expect("join")
    .expect("run casebridge");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Writes a profile for `agency` into `dir` that reaches its node where the
/// federation really runs it, presenting the certificate of `cert_of`
/// (normally the agency itself).
pub fn profile_file(fed: &Fed, dir: &Path, agency: &str, cert_of: &str, node: &str) -> PathBuf {
    let files = fed.fed.dir.join("agencies").join(cert_of);
    let path = dir.join(format!("{}.toml", agency.replace('/', "-")));
    let text = format!(
        "federation = \"casebridge.test\"\nagency = \"{agency}\"\nnode = \"{node}\"\n\n[tls]\n\
         cert = \"{}\"\nkey = \"{}\"\nroot = \"{}\"\n",
        files.join("agency.crt").display(),
        files.join("agency.key").display(),
        fed.broker_config.tls.root.display(),
    );
    std::fs::write(&path, text).expect("write profile");
    path
}

/// [`profile_file`] for `agency` itself at its node.
pub fn own_profile(fed: &Fed, dir: &Path, agency: &str) -> PathBuf {
    let cc = cc(&agency[..2]);
    let node = fed.node_addr(cc).expect("node running").to_string();
    profile_file(fed, dir, agency, agency, &node)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

/// Waits until `agency`'s inbox holds `id`.
async fn arrived(fed: &Fed, agency: &str, id: &str) {
    until(&format!("{id} in the inbox of {agency}"), || async {
        inbox(fed, agency)
            .await
            .iter()
            .any(|e| e.envelope_id == id)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_h2_record_is_read_and_passed_on_from_the_command_line() {
    let fed = start(&["MK", "RS", "AL"]).await;
    let tmp = tempfile::tempdir().unwrap();
    let mk = own_profile(&fed, tmp.path(), "MK/police");
    let rs = own_profile(&fed, tmp.path(), "RS/police");
    let al = own_profile(&fed, tmp.path(), "AL/police");
    let record_file = format!(
        "{}/examples/records/intelligence_report.json",
        env!("CARGO_MANIFEST_DIR")
    );

    // MK/police sends an H2 intelligence report to RS/police.
    let sent = casebridge(&[
        "send",
        "--profile",
        p(&mk),
        "--to",
        "RS/police",
        "--kind",
        "intelligence-report",
        "--record",
        &record_file,
        "--purpose",
        "investigation-migrant-smuggling",
        "--legal-basis",
        "regional_police_convention",
        "--legal-basis-ref",
        "Police Cooperation Convention for Southeast Europe",
        "--handling",
        "H2",
        "--evaluation",
        "B3",
    ])
    .await;
    assert!(sent.ok && sent.stdout.contains("accepted"), "{sent}");
    let id = sent.first_line();
    settled(&fed, "MK/police", &id).await;

    // The plain inbox shows the handling notice.
    let listed = casebridge(&["inbox", "--profile", p(&rs)]).await;
    assert!(
        listed.ok
            && listed.stdout.contains(&id)
            && listed.stdout.contains("intelligence-report")
            && listed
                .stdout
                .contains("notice: H2: not to be passed on without the permission of MK/police"),
        "{listed}"
    );

    // Fetch shows the content and every restriction, readable or in JSON.
    let read = casebridge(&["fetch", "--profile", p(&rs), &id]).await;
    for says in [
        "handling code: H2",
        "purpose: investigation-migrant-smuggling",
        "legal basis: regional-police-convention (Police Cooperation Convention for Southeast Europe)",
        "expires: ",
        "onward transfer: only with the permission of MK/police",
        "content:",
    ] {
        assert!(read.ok && read.stdout.contains(says), "{says}: {read}");
    }
    let json = casebridge(&["fetch", "--profile", p(&rs), &id, "--json"]).await;
    assert!(json.ok, "{json}");
    let got: v1::InboxRecord = serde_json::from_str(&json.stdout).expect("fetch --json");
    assert_eq!(got.entry.as_ref().unwrap().envelope_id, id);
    assert_eq!(got.record, Some(record("intelligence_report")));
    assert!(got.entry.unwrap().restrictions.unwrap().no_onward_transfer);

    // Passing it on without the provider's permission is refused, with the
    // policy that refused it.
    let refused = casebridge(&["forward", "--profile", p(&rs), &id, "--to", "AL/police"]).await;
    assert!(
        !refused.ok
            && refused.stderr.contains("permission denied")
            && refused.stderr.contains("h2-onward-needs-permission"),
        "{refused}"
    );

    // RS/police asks MK/police, which sees the request and grants it.
    let asked = casebridge(&[
        "request-permission",
        "--profile",
        p(&rs),
        &id,
        "--to",
        "AL/police",
        "--justification",
        "the route continues through AL",
    ])
    .await;
    assert!(asked.ok && asked.stdout.contains("accepted"), "{asked}");
    let request = asked.first_line();
    settled(&fed, "RS/police", &request).await;
    arrived(&fed, "MK/police", &request).await;
    let provider_inbox = casebridge(&["inbox", "--profile", p(&mk)]).await;
    assert!(
        provider_inbox.stdout.contains(&format!(
            "permission: RS/police to pass record {id} on to AL/police"
        )),
        "{provider_inbox}"
    );
    let grant_args = [
        "grant-permission",
        "--profile",
        p(&mk),
        &request,
        "--conditions",
        "H2 stays",
        "--idempotency-key",
        "grant-route-al",
    ];
    let granted = casebridge(&grant_args).await;
    assert!(
        granted.ok && granted.stdout.contains("accepted"),
        "{granted}"
    );
    let grant = granted.first_line();
    // The same key again makes nothing new.
    let again = casebridge(&grant_args).await;
    assert!(
        again.ok
            && again.first_line() == grant
            && again
                .stdout
                .contains("made earlier under this idempotency key"),
        "{again}"
    );
    settled(&fed, "MK/police", &grant).await;

    // Now the record passes on, carrying its restrictions.
    let onward = casebridge(&["forward", "--profile", p(&rs), &id, "--to", "AL/police"]).await;
    assert!(onward.ok && onward.stdout.contains("accepted"), "{onward}");
    let onward_id = onward.first_line();
    settled(&fed, "RS/police", &onward_id).await;
    let passed = casebridge(&["fetch", "--profile", p(&al), &onward_id]).await;
    assert!(
        passed.ok
            && passed.stdout.contains(&format!("passes on record {id}"))
            && passed.stdout.contains("handling code: H2")
            && passed
                .stdout
                .contains("onward transfer: only with the permission of MK/police"),
        "{passed}"
    );

    // RS/police's own list shows both records it made, delivered.
    let list = casebridge(&["sent", "--profile", p(&rs)]).await;
    assert!(
        list.ok
            && list.stdout.contains(&request)
            && list.stdout.contains(&onward_id)
            && list.stdout.contains("permission-request")
            && list.stdout.contains("delivered"),
        "{list}"
    );
}

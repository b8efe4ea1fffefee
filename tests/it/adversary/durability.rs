//! Adversarial cases: durability, rollback and local files.
//!
//! The adversary here is whoever can put files back on the host (an insider
//! restoring a backup, an operator undoing a revocation) or read what the
//! daemons leave on disk. An older directory or policy bundle put back is
//! refused at start, naming the file and both versions; what `pki init` and
//! the stores write is readable by the owner only.

use std::path::{Path, PathBuf};

use casebridge::protocol::policy::Owner;
use casebridge::protocol::proto::v1;

use super::harness::still_serves;
use crate::support::*;

fn revoke_agency(id: &str) -> impl FnOnce(&mut v1::Directory) + '_ {
    move |d| {
        d.agencies
            .iter_mut()
            .find(|a| a.id == id)
            .expect("agency")
            .revoked = true;
    }
}

fn message(e: anyhow::Error) -> String {
    format!("{e:#}")
}

#[tokio::test]
async fn a_broker_restarted_with_an_older_directory_refuses_to_start() {
    let mut fed = start(&["BA", "HR"]).await;
    let version_1 = std::fs::read(&fed.broker_config.directory).unwrap();
    fed.stop_broker().await.unwrap();
    // Version 2 revokes HR/prosecutor; the broker runs with it once.
    edit_directory(&fed, revoke_agency("HR/prosecutor"));
    let version_2 = std::fs::read(&fed.broker_config.directory).unwrap();
    fed.start_broker().await.unwrap();
    let len = audit(&fed).await.len();
    fed.stop_broker().await.unwrap();

    // Version 1 put back would bring the revoked agency back.
    std::fs::write(&fed.broker_config.directory, &version_1).unwrap();
    let err = message(fed.start_broker().await.unwrap_err());
    let file = fed.broker_config.directory.display().to_string();
    assert!(
        err.contains(&format!(
            "{file}: directory version 1 is older than the version in force (2); refusing to start"
        )),
        "{err}"
    );
    assert!(fed.broker().is_none());

    // Nothing was recorded; with version 2 back the broker starts and serves.
    std::fs::write(&fed.broker_config.directory, &version_2).unwrap();
    fed.start_broker().await.unwrap();
    assert_eq!(
        audit(&fed).await.len(),
        len,
        "the refused start left no trace"
    );
    still_serves(&fed).await;
}

#[tokio::test]
async fn a_node_restarted_with_an_older_directory_refuses_to_start() {
    let mut fed = start(&["BA", "HR"]).await;
    let version_1 = std::fs::read(&fed.broker_config.directory).unwrap();
    fed.stop_node(cc("HR")).await.unwrap();
    edit_directory(&fed, revoke_agency("BA/prosecutor"));
    let version_2 = std::fs::read(&fed.broker_config.directory).unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    fed.stop_node(cc("HR")).await.unwrap();

    std::fs::write(&fed.broker_config.directory, &version_1).unwrap();
    let err = message(fed.start_node(cc("HR")).await.unwrap_err());
    let file = fed.node_configs[&cc("HR")].directory.display().to_string();
    assert!(
        err.contains(&format!(
            "{file}: directory version 1 is older than the version in force (2); refusing to start"
        )),
        "{err}"
    );
    assert!(fed.node(cc("HR")).is_none());

    std::fs::write(&fed.broker_config.directory, &version_2).unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    still_serves(&fed).await;
}

#[tokio::test]
async fn a_directory_changed_without_a_new_version_is_refused_at_start() {
    let mut fed = start(&["BA", "HR"]).await;
    let original = std::fs::read(&fed.broker_config.directory).unwrap();
    fed.stop_node(cc("HR")).await.unwrap();
    fed.stop_broker().await.unwrap();
    // Still version 1, but HR/police now revoked: a second "version 1".
    resign_directory(&fed, revoke_agency("HR/police"));
    let says = |file: &Path| {
        format!(
            "{}: directory version 1 is not the directory in force with that version; a changed \
             directory needs a new version; refusing to start",
            file.display()
        )
    };
    let err = message(fed.start_broker().await.unwrap_err());
    assert!(err.contains(&says(&fed.broker_config.directory)), "{err}");
    let err = message(fed.start_node(cc("HR")).await.unwrap_err());
    let file = fed.node_configs[&cc("HR")].directory.clone();
    assert!(err.contains(&says(&file)), "{err}");

    std::fs::write(&fed.broker_config.directory, &original).unwrap();
    fed.start_broker().await.unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    still_serves(&fed).await;
}

/// The files of a bundle directory, to put back later.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

fn restore(dir: &Path, files: &[(PathBuf, Vec<u8>)]) {
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::create_dir(dir).unwrap();
    for (p, bytes) in files {
        std::fs::write(p, bytes).unwrap();
    }
}

fn sign_hr_police(fed: &Fed, dir: &Path) {
    let signer = casebridge::storage::files::policy::signer_from_federation(
        &fed.fed.dir,
        &Owner::Agency("HR/police".parse().unwrap()),
    )
    .unwrap();
    casebridge::storage::files::policy::sign_bundle(dir, &signer).unwrap();
}

const NOTHING_NEW: &str = "// reviewed, nothing changes\n";

#[tokio::test]
async fn an_older_policy_bundle_is_refused_at_restart_by_broker_and_node() {
    let mut fed = start(&["BA", "HR"]).await;
    let dir = fed.broker_config.policies.join("agencies/HR/police");
    let version_1 = snapshot(&dir);

    // Version 2 goes into force by live reload, in the broker and in node HR.
    std::fs::write(dir.join("review.cedar"), NOTHING_NEW).unwrap();
    let toml = dir.join("bundle.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(&toml, text.replace("version = 1", "version = 2")).unwrap();
    sign_hr_police(&fed, &dir);
    let version_2 = snapshot(&dir);
    assert!(matches!(
        fed.broker().unwrap().reload_policies().await.unwrap(),
        casebridge::storage::files::policy::Reload::Replaced { .. }
    ));
    assert!(matches!(
        fed.node(cc("HR")).unwrap().reload_policies().await,
        casebridge::storage::files::policy::Reload::Replaced { .. }
    ));
    let len = audit(&fed).await.len();
    fed.stop_node(cc("HR")).await.unwrap();
    fed.stop_broker().await.unwrap();

    // Version 1 put back while they are down.
    restore(&dir, &version_1);
    let says = |policies: &Path| {
        format!(
            "{}: bundle HR/police version 1 is older than the version in force (2)",
            policies.join("agencies/HR/police/bundle.toml").display()
        )
    };
    let err = message(fed.start_broker().await.unwrap_err());
    assert!(err.contains(&says(&fed.broker_config.policies)), "{err}");
    let err = message(fed.start_node(cc("HR")).await.unwrap_err());
    let node_policies = fed.node_configs[&cc("HR")].policies.clone();
    assert!(err.contains(&says(&node_policies)), "{err}");

    restore(&dir, &version_2);
    fed.start_broker().await.unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    assert_eq!(
        audit(&fed).await.len(),
        len,
        "the refused starts left no trace"
    );
    still_serves(&fed).await;
}

#[tokio::test]
async fn a_bundle_changed_without_a_new_version_is_refused_at_restart() {
    let mut fed = start(&["BA", "HR"]).await;
    let dir = fed.broker_config.policies.join("agencies/HR/police");
    let original = snapshot(&dir);
    fed.stop_broker().await.unwrap();
    std::fs::write(dir.join("review.cedar"), NOTHING_NEW).unwrap();
    sign_hr_police(&fed, &dir);
    let err = message(fed.start_broker().await.unwrap_err());
    assert!(
        err.contains(&format!(
            "{}: bundle HR/police changed without a new version (still 1)",
            dir.join("bundle.toml").display()
        )),
        "{err}"
    );
    restore(&dir, &original);
    fed.start_broker().await.unwrap();
    still_serves(&fed).await;
}

#[cfg(unix)]
#[tokio::test]
async fn pki_init_and_the_stores_leave_nothing_readable_by_others() {
    use std::os::unix::fs::PermissionsExt as _;
    let fed = start(&["BA", "HR"]).await;
    still_serves(&fed).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The federation directory itself is the test's temporary directory;
    // everything in it was made by `pki init` and the daemons.
    let mut stack = vec![fed.fed.dir.clone()];
    let (mut dirs, mut files) = (0, 0);
    let mut stores = Vec::new();
    while let Some(d) = stack.pop() {
        if d != fed.fed.dir {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
            dirs += 1;
        }
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.parent().is_some_and(|d| d.ends_with("data")) {
                    stores.push(p.clone());
                }
                stack.push(p);
            } else {
                // Sled's files, keys, certificates, configs, the directory,
                // the policy bundles: all of them.
                assert_eq!(mode(&p), 0o600, "{}", p.display());
                files += 1;
            }
        }
    }
    stores.sort();
    let names: Vec<_> = stores
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["broker", "node-BA", "node-HR"]);
    assert!(dirs > 20 && files > 50, "{dirs} directories, {files} files");
}

/// Sends until the broker stops answering "accepted"; returns the ids it
/// accepted. Bounded: a broker that never fails ends the loop too.
async fn send_until_refused(fed: &Fed, at_most: usize) -> Vec<String> {
    let mut accepted = Vec::new();
    for _ in 0..at_most {
        let r = send(
            fed,
            "BA/police",
            &["HR/police"],
            record("wanted_alert"),
            police(),
        )
        .await;
        if r.state != v1::SendState::Accepted as i32 {
            break;
        }
        accepted.push(r.envelope_id);
    }
    accepted
}

/// The broker as its own process, with a file-size limit: once its store
/// grows past it, every write to the store fails (EFBIG; the signal that
/// would otherwise kill the process is ignored), as on a full disk.
#[tokio::test]
async fn a_broker_whose_disk_fails_stops_and_loses_nothing_it_acknowledged() {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};

    let mut fed = create(&["BA", "HR"]).await;
    let mut cfg = fed.broker_config.clone();
    cfg.listen = fed.broker_addr;
    let config = fed.fed.dir.join("broker-process.toml");
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();

    let log = fed.fed.dir.join("broker-process.log");
    let mut broker = Command::new("bash")
        .arg("-c")
        .arg(r#"trap "" XFSZ; ulimit -f 64; exec "$0" broker --config "$1""#)
        .arg(env!("CARGO_BIN_EXE_casebridge"))
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn broker");
    let mut out = std::io::BufReader::new(broker.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(
        line.contains("listening on"),
        "broker did not start: {line:?}"
    );
    fed.start_node(cc("BA")).await.unwrap();

    let accepted = send_until_refused(&fed, 500).await;
    assert!(!accepted.is_empty(), "the broker accepted nothing at all");
    let status = until("the broker to stop", || {
        let status = broker.try_wait().unwrap();
        async move { status }
    })
    .await;
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{stderr}");
    let data = cfg.data_dir.display().to_string();
    assert!(
        stderr.contains(&format!("error: broker stopped: writing to {data} failed:"))
            || stderr.contains(&format!("error: broker stopped: flush of {data} failed:")),
        "{stderr}"
    );
    assert!(
        stderr.contains("File too large")
            && stderr.contains("stopping: nothing more is acknowledged"),
        "{stderr}"
    );

    // Restarted on a healthy disk: every record it acknowledged is there
    // and is delivered; the refused one is still in the sender's outbox.
    fed.start_broker().await.unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    for id in &accepted {
        let st = settled(&fed, "BA/police", id).await;
        assert_eq!(
            st.recipient_status[0].state,
            v1::DeliveryState::Delivered as i32
        );
    }
    // The refused record waits in the sender's outbox for its next try,
    // which may come after the acknowledged ones have settled.
    until(
        "the refused record to be delivered after the restart",
        || async { (inbox(&fed, "HR/police").await.len() > accepted.len()).then_some(()) },
    )
    .await;
}

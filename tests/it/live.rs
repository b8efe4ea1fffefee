//! The directory and the policy set distributed while everything runs: the
//! broker reads its directory file again every refresh, nodes fetch the
//! directory and the policy set from the broker as often, and an auditor
//! fetches the directory and checks the log's record of every change.
//! Each node here keeps its own copy of the directory and of the policy
//! set, as on separate hosts, so what reaches it came from the broker.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use casebridge::daemon::live::Offer;
use casebridge::protocol::directory::Directory;
use casebridge::protocol::policy::Owner;
use casebridge::protocol::proto::v1;
use casebridge::tools::audit::Fetched;
use prost::Message as _;
use tonic::Code;
use v1::audit_event::Event;

use crate::adversary::harness;
use crate::support::*;

/// The refresh interval of these tests.
const REFRESH_SECS: u64 = 1;

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A federation of `countries` whose broker and nodes refresh every
/// [`REFRESH_SECS`], each node with its own directory file and policy
/// directory; not started.
async fn federation(countries: &[&str]) -> Fed {
    let mut fed = create(countries).await;
    fed.f.broker_config.directory_refresh_secs = REFRESH_SECS;
    let root = fed.fed.dir.clone();
    for (c, cfg) in fed.f.node_configs.iter_mut() {
        cfg.directory_refresh_secs = REFRESH_SECS;
        let own = root.join(format!("node-{c}"));
        std::fs::create_dir_all(&own).unwrap();
        std::fs::copy(&cfg.directory, own.join("directory.bin")).unwrap();
        cfg.directory = own.join("directory.bin");
        copy_tree(&cfg.policies, &own.join("policies"));
        cfg.policies = own.join("policies");
    }
    fed
}

fn revoke(id: &'static str) -> impl FnOnce(&mut v1::Directory) {
    move |d| {
        d.agencies
            .iter_mut()
            .find(|a| a.id == id)
            .expect("agency")
            .revoked = true;
    }
}

/// Signs the broker's directory after `edit` (which sets the version) with
/// the directory key and writes it to `to`, leaving the broker's file alone.
fn sign_to(fed: &Fed, to: &Path, edit: impl FnOnce(&mut v1::Directory)) {
    let key =
        casebridge::storage::files::keys::load_signing_key(&fed.fed.dir.join("ca/directory.key"))
            .unwrap();
    let bytes = std::fs::read(&fed.broker_config.directory).unwrap();
    let signed = v1::SignedDirectory::decode(bytes.as_slice()).unwrap();
    let mut dir = v1::Directory::decode(signed.directory.as_slice()).unwrap();
    edit(&mut dir);
    std::fs::write(to, Directory::sign(&dir, &key).encode_to_vec()).unwrap();
}

fn load(fed: &Fed, file: &Path) -> Directory {
    let key =
        casebridge::storage::files::directory::load_public_key(&fed.broker_config.directory_key)
            .unwrap();
    casebridge::storage::files::directory::load(file, &key, &fed.broker_config.federation).unwrap()
}

async fn hr_to_ba(fed: &Fed) -> Result<v1::SendResponse, tonic::Status> {
    try_send(
        fed,
        "HR/police",
        &["BA/police"],
        record("wanted_alert"),
        police_to_third_country(),
    )
    .await
}

/// Waits until the broker and every node of `fed` hold directory `version`,
/// and returns how long that took.
async fn everywhere(fed: &Fed, version: u64) -> Duration {
    let began = Instant::now();
    until(
        &format!("directory version {version} everywhere"),
        || async {
            let broker = fed.broker()?.directory().version == version;
            let nodes = fed.node_configs.keys().all(|c| {
                fed.node(*c)
                    .is_some_and(|n| n.directory().version == version)
            });
            (broker && nodes).then_some(())
        },
    )
    .await;
    began.elapsed()
}

#[tokio::test]
async fn a_revoked_agency_is_refused_at_its_node_and_at_the_broker_within_a_refresh() {
    let mut fed = federation(&["HR", "BA"]).await;
    start_all(&mut fed).await;
    assert_eq!(
        hr_to_ba(&fed).await.unwrap().state,
        v1::SendState::Accepted as i32
    );
    // Sealed while HR/police may still send, submitted after its revocation:
    // what a node that has not heard of it yet would send.
    let late = harness::seal_as(
        &fed,
        "HR/police",
        &["BA/police"],
        &record("wanted_alert"),
        police_to_third_country(),
    )
    .envelope;

    edit_directory(&fed, revoke("HR/police"));
    // The broker's next refresh reads the file, each node's next refresh
    // fetches it from the broker: two intervals at most, one tick each.
    let took = everywhere(&fed, 2).await;
    assert!(
        took < Duration::from_secs(2 * REFRESH_SECS + 8),
        "directory version 2 took {took:?} to reach everyone"
    );

    let err = hr_to_ba(&fed).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "agency HR/police is revoked");
    let err = exchange_as_node(&fed, "HR")
        .submit(v1::SubmitRequest {
            envelope: Some(late),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("HR/police is revoked"), "{err}");
    // The node kept the new directory: its file and its floor, so a restart
    // starts from it.
    let node_file = fed.node_configs[&cc("HR")].directory.clone();
    assert_eq!(load(&fed, &node_file).version, 2);
    fed.stop_node(cc("HR")).await.unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    assert_eq!(fed.node(cc("HR")).unwrap().directory().version, 2);

    // The change is in the log once.
    let changes: Vec<_> = audit(&fed)
        .await
        .into_iter()
        .filter_map(|e| match e.event {
            Some(Event::DirectoryChanged(d)) => Some(d.version),
            _ => None,
        })
        .collect();
    assert_eq!(changes, vec![1, 2]);
}

#[tokio::test]
async fn a_node_refuses_an_older_directory_from_its_broker_and_keeps_its_own() {
    // The node holds version 2; its broker (lagging, or lying) serves the
    // older version 1, validly signed.
    let mut fed = federation(&["HR", "BA"]).await;
    let node_file = fed.node_configs[&cc("HR")].directory.clone();
    sign_to(&fed, &node_file, |d| {
        revoke("HR/police")(d);
        d.version = 2;
    });
    start_all(&mut fed).await;
    let node = fed.node(cc("HR")).unwrap().clone();
    assert_eq!(node.directory().version, 2);

    let offer = node.refresh_directory().await.unwrap();
    let Offer::Refused { offered, reason } = offer else {
        panic!("the older directory was not refused: {offer:?}")
    };
    assert_eq!(offered.map(|o| o.version), Some(1));
    assert!(
        reason.contains("directory version 1 is older than the version in force (2)"),
        "{reason}"
    );
    // Still version 2 in force and on disk; the revocation holds.
    assert_eq!(node.directory().version, 2);
    assert_eq!(load(&fed, &node_file).version, 2);
    let err = hr_to_ba(&fed).await.unwrap_err();
    assert_status(&err, Code::PermissionDenied, "agency HR/police is revoked");
}

#[tokio::test]
async fn a_broker_given_an_older_directory_file_refuses_it_and_logs_the_refusal() {
    let mut fed = federation(&["HR", "BA"]).await;
    let version_1 = std::fs::read(&fed.broker_config.directory).unwrap();
    start_all(&mut fed).await;
    edit_directory(&fed, revoke("HR/police"));
    everywhere(&fed, 2).await;

    // Version 1 put back while the broker runs.
    std::fs::write(&fed.broker_config.directory, &version_1).unwrap();
    let refused = until("the broker's refusal of version 1", || async {
        audit(&fed).await.into_iter().find_map(|e| match e.event {
            Some(Event::DirectoryRefused(r)) => Some(r),
            _ => None,
        })
    })
    .await;
    assert_eq!((refused.version, refused.version_in_force), (1, 2));
    assert!(
        refused.reason.contains("older than the version in force"),
        "{}",
        refused.reason
    );
    // Refused once, whatever the number of refreshes that meet it.
    let broker = fed.broker().unwrap().clone();
    let again = broker
        .refresh_directory(
            &fed.broker_config.directory,
            &casebridge::storage::files::directory::load_public_key(
                &fed.broker_config.directory_key,
            )
            .unwrap(),
        )
        .await
        .unwrap();
    assert!(matches!(again, Offer::Refused { .. }), "{again:?}");
    let refusals = audit(&fed)
        .await
        .iter()
        .filter(|e| matches!(e.event, Some(Event::DirectoryRefused(_))))
        .count();
    assert_eq!(refusals, 1);
    // Version 2 stays in force at the broker, which serves it.
    assert_eq!(broker.directory().version, 2);
    let served = exchange_as_node(&fed, "BA")
        .get_directory(v1::GetDirectoryRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(served, *broker.directory().signed());
    assert!(hr_to_ba(&fed).await.is_err());
}

#[tokio::test]
async fn an_auditor_sees_each_directory_change_in_the_log() {
    let mut fed = federation(&["HR", "BA"]).await;
    start_all(&mut fed).await;
    let profile = fed.fed.auditor_profiles[0].1.clone();
    let copy: PathBuf = fed.fed.dir.join("auditor-directory.bin");
    std::fs::copy(&fed.broker_config.directory, &copy).unwrap();
    let report = casebridge::tools::audit::directory(&profile, Some(&copy))
        .await
        .unwrap();
    assert_eq!(report.fetched, Fetched::Same);

    for (version, id) in [(2, "HR/police"), (3, "BA/police")] {
        edit_directory(&fed, revoke(id));
        until("the broker's new directory", || async {
            (fed.broker()?.directory().version == version).then_some(())
        })
        .await;
        let report = casebridge::tools::audit::directory(&profile, Some(&copy))
            .await
            .unwrap();
        assert_eq!(
            report.fetched,
            Fetched::Saved {
                previous: version - 1
            }
        );
        assert_eq!(load(&fed, &copy).version, version);
    }
    let report = casebridge::tools::audit::directory(&profile, Some(&copy))
        .await
        .unwrap();
    let logged: Vec<_> = report.logged.iter().map(|l| (l.version, l.seen)).collect();
    assert_eq!(
        logged,
        vec![(1, Some(true)), (2, Some(true)), (3, Some(true))],
        "{report}"
    );
    assert_eq!(report.broker_version, 3);

    // An auditor whose copy is newer than the broker's directory refuses
    // the broker's, and keeps its copy.
    sign_to(&fed, &copy, |d| d.version = 4);
    let report = casebridge::tools::audit::directory(&profile, Some(&copy))
        .await
        .unwrap();
    let Fetched::Refused(why) = &report.fetched else {
        panic!("the broker's older directory was not refused: {report}")
    };
    assert!(why.contains("older than the version in force"), "{why}");
    assert_eq!(load(&fed, &copy).version, 4);
}

#[tokio::test]
async fn a_new_policy_set_at_the_broker_reaches_the_nodes_without_a_restart() {
    let mut fed = federation(&["HR", "BA"]).await;
    start_all(&mut fed).await;
    assert_eq!(
        hr_to_ba(&fed).await.unwrap().state,
        v1::SendState::Accepted as i32
    );

    // HR/police's new bundle, placed at the broker only.
    let dir = fed.broker_config.policies.join("agencies/HR/police");
    std::fs::write(
        dir.join("review.cedar"),
        r#"
@id("no-more-to-ba")
@reason("HR/police stopped sending to BA pending a review")
forbid (
  principal == Casebridge::Agency::"HR/police",
  action == Casebridge::Action::"transfer",
  resource == Casebridge::Agency::"BA/police"
);
"#,
    )
    .unwrap();
    let manifest = dir.join("bundle.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("version = 1", "version = 2")).unwrap();
    let signer = casebridge::storage::files::policy::signer_from_federation(
        &fed.fed.dir,
        &Owner::Agency("HR/police".parse().unwrap()),
    )
    .unwrap();
    casebridge::storage::files::policy::sign_bundle(&dir, &signer).unwrap();
    let broker = fed.broker().unwrap().clone();
    broker.reload_policies().await.unwrap();
    let hash = broker.policies().hash().to_string();

    until("the new policy set at every node", || async {
        fed.node_configs
            .keys()
            .all(|c| fed.node(*c).is_some_and(|n| n.policies().hash() == hash))
            .then_some(())
    })
    .await;
    // Written into each node's own policy directory: a restart loads it.
    for c in fed.node_configs.keys() {
        let own = &fed.node_configs[c].policies;
        assert!(own.join("agencies/HR/police/review.cedar").is_file());
    }
    // HR's node now refuses before sealing, naming the new policy.
    let err = hr_to_ba(&fed).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("no-more-to-ba"), "{}", err.message());
}

#[tokio::test]
async fn a_node_refuses_a_policy_set_that_goes_back_a_version() {
    let mut fed = federation(&["HR", "BA"]).await;
    // Only the refresh called below runs at HR's node.
    fed.f
        .node_configs
        .get_mut(&cc("HR"))
        .unwrap()
        .directory_refresh_secs = 3600;
    start_all(&mut fed).await;
    let node = fed.node(cc("HR")).unwrap().clone();
    // The node's own set moves HR/police to version 2 first.
    let own = fed.node_configs[&cc("HR")]
        .policies
        .join("agencies/HR/police");
    let manifest = own.join("bundle.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("version = 1", "version = 2")).unwrap();
    let signer = casebridge::storage::files::policy::signer_from_federation(
        &fed.fed.dir,
        &Owner::Agency("HR/police".parse().unwrap()),
    )
    .unwrap();
    casebridge::storage::files::policy::sign_bundle(&own, &signer).unwrap();
    assert!(matches!(
        node.reload_policies().await,
        casebridge::storage::files::policy::Reload::Replaced { .. }
    ));
    let in_force = node.policies().hash().to_string();

    // The broker still serves version 1 of that bundle: refused, and the
    // node's directory and set stay as they are.
    assert!(!node.refresh_policies().await.unwrap());
    assert_eq!(node.policies().hash(), in_force);
    assert!(
        std::fs::read_to_string(&manifest)
            .unwrap()
            .contains("version = 2")
    );
    let parent = fed.node_configs[&cc("HR")]
        .policies
        .parent()
        .unwrap()
        .to_path_buf();
    let strays: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(strays.is_empty(), "{strays:?}");
}

/// Every file under `dir` and its bytes.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            } else {
                out.push((e.path(), std::fs::read(e.path()).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Moves HR's own directory and policy set into a seed directory, as a
/// host that delivers them read-only (a ConfigMap, an image) would hold
/// them, and names it in HR's config: its own paths are left empty.
fn seed_hr(fed: &mut Fed) -> PathBuf {
    let seed = fed.fed.dir.join("seed-HR");
    std::fs::create_dir_all(&seed).unwrap();
    let cfg = fed.f.node_configs.get_mut(&cc("HR")).unwrap();
    std::fs::rename(&cfg.directory, seed.join("directory.bin")).unwrap();
    std::fs::rename(&cfg.policies, seed.join("policies")).unwrap();
    cfg.seed = Some(casebridge::daemon::config::NodeSeed {
        directory: seed.join("directory.bin"),
        policies: seed.join("policies"),
    });
    seed
}

/// A node whose directory and policy set are delivered read-only starts
/// from them, and keeps what it fetches in its own copies: the seed is
/// never written, and an older seed never takes a restarted node back.
#[tokio::test]
async fn a_seeded_node_starts_from_its_seed_and_keeps_newer_versions_in_its_own_copies() {
    let mut fed = federation(&["HR", "BA"]).await;
    let seed = seed_hr(&mut fed);
    let delivered = snapshot(&seed);
    let own_directory = fed.node_configs[&cc("HR")].directory.clone();
    let own_policies = fed.node_configs[&cc("HR")].policies.clone();
    assert!(!own_directory.exists() && !own_policies.exists());

    start_all(&mut fed).await;
    assert_eq!(
        std::fs::read(&own_directory).unwrap(),
        std::fs::read(seed.join("directory.bin")).unwrap()
    );
    let copied: Vec<_> = snapshot(&own_policies)
        .into_iter()
        .map(|(p, b)| (p.strip_prefix(&own_policies).unwrap().to_path_buf(), b))
        .collect();
    let given: Vec<_> = snapshot(&seed.join("policies"))
        .into_iter()
        .map(|(p, b)| {
            (
                p.strip_prefix(seed.join("policies")).unwrap().to_path_buf(),
                b,
            )
        })
        .collect();
    assert_eq!(copied, given, "the policy set, file for file");
    assert_accepted(&hr_to_ba(&fed).await.unwrap());

    // A newer directory at the broker reaches HR and is kept in its own copy.
    edit_directory(&fed, |_| {});
    everywhere(&fed, 2).await;
    until("HR's own copy at version 2", || async {
        (load(&fed, &own_directory).version == 2).then_some(())
    })
    .await;
    assert_eq!(snapshot(&seed), delivered, "the seed is never written");

    // Restarted with the same, older seed: it keeps version 2.
    fed.stop_node(cc("HR")).await.unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    assert_eq!(fed.node(cc("HR")).unwrap().directory().version, 2);
    assert_eq!(load(&fed, &own_directory).version, 2);
    assert_eq!(snapshot(&seed), delivered);
    assert_accepted(&hr_to_ba(&fed).await.unwrap());
}

/// Whoever can put files where the seed is read cannot give a node a
/// directory or a policy set the federation did not sign: the node refuses
/// to start, naming the seed, and writes nothing of it.
#[tokio::test]
async fn a_seed_that_does_not_verify_is_refused_and_nothing_is_written() {
    let mut fed = federation(&["HR", "BA"]).await;
    let seed = seed_hr(&mut fed);
    let cfg = fed.node_configs[&cc("HR")].clone();

    // A directory signed with another key than the pinned one.
    let genuine = std::fs::read(seed.join("directory.bin")).unwrap();
    let signed = v1::SignedDirectory::decode(genuine.as_slice()).unwrap();
    let mut dir = v1::Directory::decode(signed.directory.as_slice()).unwrap();
    dir.version += 1;
    let (forger, _) = casebridge::protocol::keys::SigningKey::generate().unwrap();
    std::fs::write(
        seed.join("directory.bin"),
        Directory::sign(&dir, &forger).encode_to_vec(),
    )
    .unwrap();
    let e = match casebridge::daemon::node::Node::from_config(&cfg).await {
        Err(e) => format!("{e:#}"),
        Ok(_) => panic!("a node started from a forged seed"),
    };
    assert!(e.contains("the seed's directory"), "{e}");
    assert!(!cfg.directory.exists() && !cfg.policies.exists());

    // The genuine directory, but a bundle changed after it was signed.
    std::fs::write(seed.join("directory.bin"), &genuine).unwrap();
    let bundle = seed.join("policies/agencies/HR/police");
    let cedar = std::fs::read_dir(&bundle)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cedar"))
        .expect("a policy file");
    let mut text = std::fs::read_to_string(&cedar).unwrap();
    text.push_str("\npermit (principal, action, resource);\n");
    std::fs::write(&cedar, text).unwrap();
    let e = match casebridge::daemon::node::Node::from_config(&cfg).await {
        Err(e) => format!("{e:#}"),
        Ok(_) => panic!("a node started from a tampered seed"),
    };
    assert!(e.contains("the seed's policy set"), "{e}");
    assert!(
        !cfg.directory.exists() && !cfg.policies.exists(),
        "nothing written before everything verified"
    );
}

//! The audit log as a transparency log: checkpoints, witnesses, proofs for
//! auditors, and tampering detected.

use casebridge::daemon::node::witness::{self, WitnessError};
use casebridge::daemon::tls::{ClientTls, Identity};
use casebridge::protocol::ids::Role;
use casebridge::protocol::merkle::{self, MemoryTree};
use casebridge::protocol::note::{self, Checkpoint, NoteSigner, Verifiers};
use casebridge::protocol::proto::v1;
use casebridge::protocol::transparency::{log_verifier, witness_verifier};
use prost::Message as _;
use tonic::Code;

use crate::support::*;

fn auditor(
    fed: &Fed,
) -> casebridge::daemon::rpc::audit_client::AuditClient<tonic::transport::Channel> {
    let d = fed.fed.dir.join("auditors/auditor");
    audit_as(fed, &d.join("auditor.crt"), &d.join("auditor.key"))
}

fn audit_as(
    fed: &Fed,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> casebridge::daemon::rpc::audit_client::AuditClient<tonic::transport::Channel> {
    let id = Identity::load(cert, key).unwrap();
    let root = casebridge::daemon::tls::load_certs(&fed.broker_config.tls.root)
        .unwrap()
        .remove(0);
    let tls = ClientTls::new(&id, &root, &fed.broker_config.federation).unwrap();
    casebridge::daemon::rpc::audit_client::AuditClient::new(
        tls.channel(&fed.broker_addr.to_string(), Role::Broker)
            .unwrap(),
    )
}

/// Sends `n` records BA → RS and waits for their receipts.
async fn traffic(fed: &Fed, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let r = send(
            fed,
            "BA/police",
            &["RS/police"],
            record("wanted_alert"),
            police(),
        )
        .await;
        settled(fed, "BA/police", &r.envelope_id).await;
        ids.push(r.envelope_id);
    }
    ids
}

fn verifiers(fed: &Fed) -> Verifiers {
    Verifiers::new([log_verifier(&directory(fed)).unwrap()]).unwrap()
}

#[tokio::test]
async fn nodes_witness_and_cosign_checkpoints_and_verify_their_own_inclusion() {
    let fed = start(&["BA", "RS"]).await;
    let ids = traffic(&fed, 3).await;
    let size = checkpoint_now(&fed).await;
    assert_eq!(size, fed.broker().unwrap().store.audit_len().await.unwrap());

    for c in ["BA", "RS"] {
        let node = fed.node(cc(c)).unwrap().clone();
        let mut client = exchange_as_node(&fed, c);
        let w = witness::witness_once(&node, &mut client).await.unwrap();
        assert_eq!(w.size, size);
        assert!(w.cosigned);
        if c == "BA" {
            assert_eq!(
                w.inclusions_verified, 3,
                "the sender proves each of its submissions is in the log"
            );
        }
    }
    for id in &ids {
        assert_eq!(
            status(&fed, "BA/police", id).await.inclusion_verified_at,
            size
        );
    }

    // The checkpoint now carries both cosignatures, each verifiable with the
    // node's key from the directory.
    let resp = auditor(&fed)
        .get_checkpoint(v1::GetCheckpointRequest { from_size: 0 })
        .await
        .unwrap()
        .into_inner();
    let opened = note::open_checkpoint(&resp.checkpoint, &verifiers(&fed)).unwrap();
    let cp = opened.checkpoint().clone();
    assert_eq!(cp.size(), size);
    let parsed = note::Note::parse(&resp.checkpoint).unwrap();
    let dir = directory(&fed);
    let mut witnesses = 0;
    for c in ["BA", "RS"] {
        let v = witness_verifier(&dir, cc(c)).unwrap();
        let sig = parsed
            .signatures()
            .iter()
            .find(|s| s.key_id() == v.key_id())
            .expect("cosignature");
        note::verify_cosignature(&cp, sig, &v).unwrap();
        witnesses += 1;
    }
    assert_eq!(witnesses, 2);

    // More entries: the next round is proven consistent with the last.
    traffic(&fed, 2).await;
    let bigger = checkpoint_now(&fed).await;
    let node = fed.node(cc("RS")).unwrap().clone();
    let w = witness::witness_once(&node, &mut exchange_as_node(&fed, "RS"))
        .await
        .unwrap();
    assert_eq!(w.size, bigger);
    assert!(bigger > size);
}

#[tokio::test]
async fn a_witness_cosigns_each_size_once_and_scans_only_after_a_change() {
    let fed = start(&["BA", "RS"]).await;
    traffic(&fed, 1).await;
    let size = checkpoint_now(&fed).await;
    let node = fed.node(cc("BA")).unwrap().clone();
    let mut client = exchange_as_node(&fed, "BA");
    let mut memory = witness::Memory::default();
    let w = witness::witness_round(&node, &mut client, &mut memory)
        .await
        .unwrap();
    assert_eq!(w.size, size);
    assert!(w.cosigned && w.cosign_sent && w.scanned, "{w:?}");
    // Nothing changed: the same checkpoint is checked but not cosigned
    // again, and no sent record is looked at.
    let w = witness::witness_round(&node, &mut client, &mut memory)
        .await
        .unwrap();
    assert_eq!(w.size, size);
    assert!(w.cosigned && !w.cosign_sent && !w.scanned, "{w:?}");
    // A submission settles: the next round looks for its proof.
    let ids = traffic(&fed, 1).await;
    let bigger = checkpoint_now(&fed).await;
    let w = witness::witness_round(&node, &mut client, &mut memory)
        .await
        .unwrap();
    assert_eq!(w.size, bigger);
    assert!(w.cosign_sent && w.scanned, "{w:?}");
    assert!(
        status(&fed, "BA/police", &ids[0])
            .await
            .inclusion_verified_at
            >= bigger
    );
}

#[tokio::test]
async fn a_forked_log_served_to_one_node_is_refused_with_evidence() {
    let fed = start(&["BA", "RS"]).await;
    traffic(&fed, 2).await;
    checkpoint_now(&fed).await;
    let node = fed.node(cc("RS")).unwrap().clone();
    witness::witness_once(&node, &mut exchange_as_node(&fed, "RS"))
        .await
        .unwrap();
    let accepted = note::open_checkpoint(
        &node.store.accepted_checkpoint().await.unwrap().unwrap(),
        &verifiers(&fed),
    )
    .unwrap()
    .checkpoint()
    .clone();

    // The broker's operator signs a rewritten history for RS only: a tree
    // with other entries, larger than what RS accepted.
    let key =
        casebridge::storage::files::keys::load_signing_key(&fed.fed.dir.join("broker/log.key"))
            .unwrap();
    let origin = directory(&fed).log().unwrap().origin.clone();
    let mut forged = MemoryTree::new();
    for i in 0..(accepted.size() + 3) {
        forged.append(merkle::leaf_hash(format!("rewritten entry {i}").as_bytes()));
    }
    let cp = Checkpoint::new(origin.clone(), forged.size(), forged.current_root()).unwrap();
    let signer = NoteSigner::new(&origin, key.key_pair()).unwrap();
    let note_bytes = note::sign_checkpoint(&cp, &signer).unwrap().to_bytes();
    let proof: Vec<Vec<u8>> = merkle::consistency_proof(&forged, accepted.size(), forged.size())
        .unwrap()
        .iter()
        .map(|h| h.to_vec())
        .collect();

    let err = witness::check_and_accept(&node, &note_bytes, &proof)
        .await
        .unwrap_err();
    assert!(matches!(err, WitnessError::Inconsistent(_)), "{err}");
    let evidence = node.store.evidence().await.unwrap();
    assert_eq!(evidence.len(), 1);
    assert!(
        evidence[0].contains("accepted checkpoint") && evidence[0].contains("offered checkpoint")
    );
    assert!(
        evidence[0].contains(&format!("{}\n", forged.size())),
        "both checkpoints are kept"
    );
    // The node stays on the checkpoint it accepted.
    let still = note::open_checkpoint(
        &node.store.accepted_checkpoint().await.unwrap().unwrap(),
        &verifiers(&fed),
    )
    .unwrap();
    assert_eq!(still.checkpoint().size(), accepted.size());

    // A shrunken log and a different root at the same size are refused too.
    let mut small = MemoryTree::new();
    small.append(merkle::leaf_hash(b"x"));
    let cp = Checkpoint::new(origin.clone(), 1, small.current_root()).unwrap();
    let shrunk = note::sign_checkpoint(&cp, &signer).unwrap().to_bytes();
    assert!(matches!(
        witness::check_and_accept(&node, &shrunk, &[]).await,
        Err(WitnessError::Inconsistent(_))
    ));
    // A checkpoint not signed by the log key is not even considered.
    let (other, _) = casebridge::protocol::keys::SigningKey::generate().unwrap();
    let impostor = NoteSigner::new(&origin, other.key_pair()).unwrap();
    let fake = note::sign_checkpoint(&Checkpoint::new(origin, 99, [0; 32]).unwrap(), &impostor)
        .unwrap()
        .to_bytes();
    assert!(matches!(
        witness::check_and_accept(&node, &fake, &[]).await,
        Err(WitnessError::BadCheckpoint(_))
    ));
}

#[tokio::test]
async fn auditors_get_entries_and_proofs_that_verify() {
    let fed = start(&["BA", "RS"]).await;
    let ids = traffic(&fed, 3).await;
    let size = checkpoint_now(&fed).await;
    let mut a = auditor(&fed);

    let entries = a
        .get_entries(v1::GetEntriesRequest {
            start: 0,
            end: size,
            leaves_only: false,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(entries.len() as u64, size);
    // Leaves alone: the same bytes at the same indexes, without the
    // broker's decoding.
    let bare = a
        .get_entries(v1::GetEntriesRequest {
            start: 0,
            end: size,
            leaves_only: true,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(bare.len(), entries.len());
    for (b, e) in bare.iter().zip(&entries) {
        assert_eq!((b.index, &b.leaf), (e.index, &e.leaf));
        assert!(b.event.is_none() && e.event.is_some());
    }
    let leaves: Vec<merkle::Hash> = entries.iter().map(|e| merkle::leaf_hash(&e.leaf)).collect();
    let cp_bytes = a
        .get_checkpoint(v1::GetCheckpointRequest { from_size: 0 })
        .await
        .unwrap()
        .into_inner()
        .checkpoint;
    let cp = note::open_checkpoint(&cp_bytes, &verifiers(&fed))
        .unwrap()
        .checkpoint()
        .clone();
    assert_eq!(
        &merkle::root_from_leaves(&leaves),
        cp.root_hash(),
        "the entries give the signed root"
    );

    let proof = a
        .prove_inclusion(v1::ProveInclusionRequest {
            target: Some(v1::prove_inclusion_request::Target::EnvelopeId(
                ids[1].clone(),
            )),
            tree_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    merkle::verify_inclusion_bytes(
        proof.index,
        proof.tree_size,
        &merkle::leaf_hash(&proof.leaf),
        &proof.proof,
        cp.root_hash(),
    )
    .unwrap();
    assert!(matches!(
        v1::AuditEvent::decode(proof.leaf.as_slice()).unwrap().event,
        Some(v1::audit_event::Event::SubmissionAccepted(_))
    ));

    traffic(&fed, 1).await;
    let bigger = checkpoint_now(&fed).await;
    let c = a
        .prove_consistency(v1::ProveConsistencyRequest {
            first_size: size,
            second_size: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let second = note::open_checkpoint(&c.checkpoint, &verifiers(&fed))
        .unwrap()
        .checkpoint()
        .clone();
    assert_eq!(second.size(), bigger);
    merkle::verify_consistency_bytes(size, bigger, cp.root_hash(), second.root_hash(), &c.proof)
        .unwrap();

    let refused_before = audit(&fed).await.len();
    let q = a
        .query(v1::QueryRequest {
            agency: "RS/police".into(),
            decision: "accepted".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.entries.len(), 4);
    let q = a
        .query(v1::QueryRequest {
            country: "HR".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(q.entries.is_empty());
    let q = a
        .query(v1::QueryRequest {
            kind: "wanted_alert".into(),
            decision: "delivered".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(q.entries.is_empty(), "receipts carry no kind");
    assert_eq!(
        audit(&fed).await.len(),
        refused_before,
        "reading changes nothing"
    );
}

#[tokio::test]
async fn only_auditors_read_the_log() {
    let fed = start(&["BA"]).await;
    let cfg = &fed.node_configs[&cc("BA")];
    let err = audit_as(&fed, &cfg.tls.cert, &cfg.tls.key)
        .get_entries(v1::GetEntriesRequest {
            start: 0,
            end: 10,
            leaves_only: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("for auditors"), "{}", err.message());
}

/// Stops the broker, lets `tamper` change the leaves in its store, and
/// checks that the broker's full check of the log (`casebridge broker
/// --check-log`) fails, naming `index`. Returns the federation, its broker
/// stopped.
async fn tampered(mut fed: Fed, tamper: impl FnOnce(&sled::Tree), index: u64) -> Fed {
    fed.stop_broker().await.unwrap();
    tamper_tree(&fed, "audit", tamper);
    let err = casebridge::daemon::broker::Broker::check_log(&fed.broker_config)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(&format!("first bad index {index}")), "{msg}");
    fed
}

/// Lets `tamper` change the tree `name` of the stopped broker's store.
fn tamper_tree(fed: &Fed, name: &str, tamper: impl FnOnce(&sled::Tree)) {
    let db = sled::open(&fed.broker_config.data_dir).unwrap();
    let tree = db.open_tree(name).unwrap();
    tamper(&tree);
    db.flush().unwrap();
}

async fn logged(entries: usize) -> Fed {
    let mut fed = start(&["BA", "RS"]).await;
    traffic(&fed, entries).await;
    checkpoint_now(&fed).await;
    fed.stop_node(cc("BA")).await.unwrap();
    fed.stop_node(cc("RS")).await.unwrap();
    fed
}

fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

#[tokio::test]
async fn a_changed_leaf_is_named_by_the_full_check() {
    let fed = logged(3).await;
    tampered(
        fed,
        |audit| {
            let mut v = audit.get(key(3)).unwrap().unwrap().to_vec();
            let last = v.len() - 1;
            v[last] ^= 1;
            audit.insert(key(3), v).unwrap();
        },
        3,
    )
    .await;
}

/// The start reads the stored tree, not the entries: a leaf dropped from
/// the middle of the log leaves the start as fast as ever, and the full
/// check names it.
#[tokio::test]
async fn a_dropped_leaf_is_named_by_the_full_check_not_read_at_start() {
    let fed = logged(3).await;
    let mut fed = tampered(fed, |audit| drop(audit.remove(key(4)).unwrap()), 4).await;
    fed.start_broker().await.unwrap();
}

/// The tree every proof is built from must give the signed root: one that
/// does not stops the broker at start, and the full check finds it too.
#[tokio::test]
async fn a_tree_that_disagrees_with_the_checkpoint_stops_the_broker_at_start() {
    let mut fed = logged(2).await;
    fed.stop_broker().await.unwrap();
    tamper_tree(&fed, "merkle_nodes", |nodes| {
        for kv in nodes.iter() {
            let (k, v) = kv.unwrap();
            let mut v = v.to_vec();
            v[0] ^= 1;
            nodes.insert(k, v).unwrap();
        }
    });
    let err = fed.start_broker().await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("the stored tree nodes do not give the signed root")
            && msg.contains("refusing to start"),
        "{msg}"
    );
    let err = casebridge::daemon::broker::Broker::check_log(&fed.broker_config)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("first bad index 0"), "{msg}");
}

#[tokio::test]
async fn swapped_leaves_are_named_by_the_full_check() {
    let fed = logged(3).await;
    tampered(
        fed,
        |audit| {
            let a = audit.get(key(2)).unwrap().unwrap();
            let b = audit.get(key(5)).unwrap().unwrap();
            audit.insert(key(2), b).unwrap();
            audit.insert(key(5), a).unwrap();
        },
        2,
    )
    .await;
}

#[tokio::test]
async fn an_untouched_log_restarts_cleanly_with_every_acknowledged_entry() {
    let mut fed = logged(2).await;
    let before = audit(&fed).await.len();
    fed.stop_broker().await.unwrap();
    fed.start_broker().await.unwrap();
    let b = fed.broker().unwrap();
    assert!(b.store.audit_len().await.unwrap() as usize >= before);
    assert_eq!(
        b.log.verify_stored(b.store.as_ref()).await.unwrap(),
        Some(before as u64)
    );
    assert_eq!(
        b.log.verify_latest(b.store.as_ref()).await.unwrap(),
        Some(before as u64)
    );
}

/// As after a crash between sequencing and integration: entries on disk
/// that the tree does not cover yet. The broker starts (the check at start
/// covers only what was integrated), its integrator catches up, and the
/// next checkpoint covers every entry, as the auditor's command verifies.
#[tokio::test]
async fn entries_sequenced_but_not_integrated_are_integrated_after_a_restart() {
    use casebridge::storage::broker::{Integrator, Sequencer};
    let mut fed = logged(2).await;
    fed.stop_broker().await.unwrap();
    let sequenced = {
        let store = casebridge::storage::sled::broker::SledStore::open(&fed.broker_config.data_dir)
            .unwrap();
        let integrated = store.audit_len().await.unwrap();
        assert_eq!(store.integrated_size().await.unwrap(), integrated);
        for n in 0..3 {
            store
                .append(v1::AuditEvent {
                    at_ms: n,
                    event: Some(v1::audit_event::Event::SubmissionRefused(
                        v1::SubmissionRefused {
                            submitting_node: "BA".into(),
                            reason: format!("sequenced only {n}"),
                            ..Default::default()
                        },
                    )),
                })
                .await
                .unwrap();
        }
        assert_eq!(store.integrated_size().await.unwrap(), integrated);
        integrated + 3
    };
    // Let the closed store's flush task notice that its database is gone.
    tokio::task::yield_now().await;
    fed.start_broker().await.unwrap();
    let b = fed.broker().unwrap().clone();
    until("the integrator to catch up", || {
        let b = b.clone();
        async move { (b.store.integrated_size().await.unwrap() >= sequenced).then_some(()) }
    })
    .await;
    assert!(checkpoint_now(&fed).await >= sequenced);
    let profile = fed.fed.auditor_profiles[0].1.clone();
    let report = casebridge::tools::audit::verify(&profile, None)
        .await
        .unwrap();
    assert!(report.size() >= sequenced);
}

#[tokio::test]
async fn the_auditor_commands_verify_the_live_log_and_keep_track_between_runs() {
    let fed = start(&["BA", "RS"]).await;
    let ids = traffic(&fed, 2).await;
    let first = checkpoint_now(&fed).await;
    let profile = fed.fed.auditor_profiles[0].1.clone();

    let report = casebridge::tools::audit::verify(&profile, None)
        .await
        .unwrap();
    assert_eq!(report.size(), first);
    assert_eq!(report.previous_size, None, "first run: nothing saved yet");

    traffic(&fed, 1).await;
    let second = checkpoint_now(&fed).await;
    let report = casebridge::tools::audit::verify(&profile, None)
        .await
        .unwrap();
    assert_eq!(report.size(), second);
    assert_eq!(
        report.previous_size,
        Some(first),
        "proven consistent with the checkpoint saved last time"
    );

    let proof = casebridge::tools::audit::prove(&profile, None, &ids[0])
        .await
        .unwrap();
    assert_eq!(proof.envelope_id.to_string(), ids[0]);
    assert_eq!(proof.matches_saved, Some(true));
    assert!(matches!(
        proof.event.event,
        Some(v1::audit_event::Event::SubmissionAccepted(_))
    ));

    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("report.html");
    casebridge::tools::audit::report(&profile, None, &path)
        .await
        .unwrap();
    let html = std::fs::read_to_string(&path).unwrap();
    assert!(html.contains("<svg") && html.contains("BA/police") && html.contains("RS/police"));
    assert!(
        !html.contains("Volkswagen") && !html.contains("TESTVIN"),
        "metadata only: no record content"
    );
}

/// The Audit API's status codes say what a client should do (fix the
/// request, ask for another size, or retry), a query pages with tokens
/// bound to its filters, and the auditor's command follows them with
/// `--all`, stops at `--limit` saying how to go on, and refuses a misspelt
/// filter naming the valid values.
#[tokio::test]
async fn the_audit_api_pages_queries_and_its_status_codes_say_what_to_do() {
    let fed = start(&["BA", "RS"]).await;
    traffic(&fed, 3).await;
    let size = checkpoint_now(&fed).await;
    let mut a = auditor(&fed);
    let accepted = |page_token: String| v1::QueryRequest {
        agency: "BA/police".into(),
        decision: "accepted".into(),
        limit: 1,
        page_token,
        ..Default::default()
    };

    // Page by page, one entry each, until the end of the log.
    let (mut token, mut indexes, mut pages, mut first_token) =
        (String::new(), Vec::new(), 0, String::new());
    loop {
        let q = a.query(accepted(token.clone())).await.unwrap().into_inner();
        pages += 1;
        indexes.extend(q.entries.iter().map(|e| e.index));
        assert_eq!(q.truncated, !q.next_page_token.is_empty());
        if !q.truncated {
            assert_eq!(q.next_index, size);
            break;
        }
        if first_token.is_empty() {
            first_token.clone_from(&q.next_page_token);
        }
        token = q.next_page_token;
        assert!(pages < 10, "every page moves on");
    }
    assert_eq!(indexes.len(), 3);
    assert_eq!(pages, 3);
    assert!(indexes.windows(2).all(|w| w[0] < w[1]));

    // Requests that are wrong whatever the log holds: INVALID_ARGUMENT.
    let bad = |q: v1::QueryRequest| {
        let mut a = a.clone();
        async move { a.query(q).await.unwrap_err() }
    };
    let other_filters = v1::QueryRequest {
        decision: "refused".into(),
        ..accepted(first_token.clone())
    };
    let e = bad(other_filters).await;
    assert_status(&e, Code::InvalidArgument, "other filters");
    let e = bad(v1::QueryRequest {
        start: 1,
        ..accepted(first_token.clone())
    })
    .await;
    assert_status(&e, Code::InvalidArgument, "not both");
    let e = bad(accepted("bm90IGEgdG9rZW4".into())).await;
    assert_status(&e, Code::InvalidArgument, "page token");
    let e = bad(v1::QueryRequest {
        decision: "acepted".into(),
        ..Default::default()
    })
    .await;
    assert_status(
        &e,
        Code::InvalidArgument,
        "decision \"acepted\" is not one of: accepted, refused, delivered",
    );
    let e = bad(v1::QueryRequest {
        kind: "wanted-alerts".into(),
        ..Default::default()
    })
    .await;
    assert_status(&e, Code::InvalidArgument, "wanted_alert");
    let e = bad(v1::QueryRequest {
        country: "Bosnia".into(),
        ..Default::default()
    })
    .await;
    assert_status(&e, Code::InvalidArgument, "country");

    // A size no checkpoint was signed at: FAILED_PRECONDITION, not a retry.
    let never = size + 1000;
    let e = a
        .prove_inclusion(v1::ProveInclusionRequest {
            target: Some(v1::prove_inclusion_request::Target::Index(0)),
            tree_size: never,
        })
        .await
        .unwrap_err();
    assert_status(
        &e,
        Code::FailedPrecondition,
        &format!("no checkpoint was signed at tree size {never}"),
    );
    let e = a
        .prove_consistency(v1::ProveConsistencyRequest {
            first_size: 1,
            second_size: never,
        })
        .await
        .unwrap_err();
    assert_status(&e, Code::FailedPrecondition, "no checkpoint was signed");
    let e = a
        .get_checkpoint(v1::GetCheckpointRequest { from_size: never })
        .await
        .unwrap_err();
    assert_status(&e, Code::FailedPrecondition, "beyond the latest checkpoint");
    // An entry outside the tree asked for, or outside the log.
    let e = a
        .prove_inclusion(v1::ProveInclusionRequest {
            target: Some(v1::prove_inclusion_request::Target::Index(size - 1)),
            tree_size: size - 1,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(e.code(), Code::FailedPrecondition),
        "{:?}: {}",
        e.code(),
        e.message()
    );
    let e = a
        .prove_inclusion(v1::ProveInclusionRequest {
            target: Some(v1::prove_inclusion_request::Target::Index(never)),
            tree_size: 0,
        })
        .await
        .unwrap_err();
    assert_status(&e, Code::OutOfRange, "beyond the log");
    let e = a
        .get_entries(v1::GetEntriesRequest {
            start: never,
            end: never + 1,
            leaves_only: false,
        })
        .await
        .unwrap_err();
    assert_status(&e, Code::OutOfRange, "beyond the log");
    let e = a
        .prove_consistency(v1::ProveConsistencyRequest {
            first_size: 0,
            second_size: 0,
        })
        .await
        .unwrap_err();
    assert_status(&e, Code::InvalidArgument, "first size");
    let e = a
        .prove_inclusion(v1::ProveInclusionRequest {
            target: Some(v1::prove_inclusion_request::Target::EnvelopeId(
                casebridge::protocol::ids::EnvelopeId::at(1).to_string(),
            )),
            tree_size: 0,
        })
        .await
        .unwrap_err();
    assert_status(&e, Code::NotFound, "no accepted submission");

    // The auditor's command: one page says it was cut and how to go on;
    // --all follows every page; --limit stops and says where.
    use casebridge::tools::audit::{QueryArgs, query};
    let profile = fed.fed.auditor_profiles[0].1.clone();
    let mut args = QueryArgs {
        agency: Some("BA/police".into()),
        decision: Some("accepted".into()),
        page_size: Some(1),
        ..Default::default()
    };
    let one = query(&profile, None, &args).await.unwrap();
    assert_eq!(one.entries.len(), 1);
    let notice = one.cut_notice().expect("a cut page says so");
    assert!(
        notice.contains("--page-token") && notice.contains("--all"),
        "{notice}"
    );
    args.all = true;
    let all = query(&profile, None, &args).await.unwrap();
    assert_eq!(all.entries.len(), 3);
    assert!(all.cut.is_none() && all.cut_notice().is_none());
    args.limit = Some(2);
    let two = query(&profile, None, &args).await.unwrap();
    assert_eq!(two.entries.len(), 2);
    let (reason, _) = two.cut.clone().expect("cut by --limit");
    assert!(reason.contains("--limit of 2"), "{reason}");
    args.limit = None;
    args.page_token = two.next_page_token.clone();
    let rest = query(&profile, None, &args).await.unwrap();
    assert_eq!(rest.entries.len(), 1);
    assert_eq!(rest.entries[0].index, all.entries[2].index);
    let e = query(
        &profile,
        None,
        &QueryArgs {
            decision: Some("acepted".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("one of: accepted, refused"), "{e}");
}

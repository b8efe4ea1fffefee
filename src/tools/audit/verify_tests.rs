use prost::Message as _;

use super::*;
use crate::daemon::tls::Identity;
use crate::protocol::ids::{Country, EnvelopeId};
use crate::protocol::note::{self, Checkpoint, Cosigner, NoteSigner};
use crate::protocol::proto::v1::audit_event::Event;
use crate::protocol::transparency::witness_name;
use crate::tools::audit::test_support::*;

// ---- against a broker over mTLS ----

/// A broker's audit API over an honest tree, serving entries that may
/// differ from it.
struct FakeLog {
    origin: String,
    log_key: crate::protocol::keys::SigningKey,
    hr_key: crate::protocol::keys::SigningKey,
    /// The leaves the checkpoint and the proofs are made from.
    leaves: Vec<Vec<u8>>,
    /// The leaves GetEntries serves.
    served: Vec<Vec<u8>>,
    /// Break HR's cosignature.
    forge_cosignature: bool,
    /// How GetEntries lies about the served leaves.
    lie: Lie,
    /// Every GetEntries request asked for leaves only.
    leaves_only: bool,
}

/// What a lying broker does to the pages it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Lie {
    #[default]
    None,
    /// Leaves out the entry with this index.
    Skip(u64),
    /// Serves the entries with this index and the next in the wrong order.
    Reorder(u64),
    /// Serves the leaf of the next entry under this index, and this one's
    /// under the next.
    Swap(u64),
    /// Adds one entry more than asked for to every page from this index.
    Extra(u64),
    /// Serves beside this entry's leaf an event the leaf does not hold.
    OtherEvent(u64),
}

fn fake_leaf(i: u64, tag: &str) -> Vec<u8> {
    v1::AuditEvent {
        at_ms: 1_700_000_000_000 + i as i64,
        event: Some(Event::SubmissionAccepted(v1::SubmissionAccepted {
            envelope: Some(summary_of(
                &[i as u8; 16],
                "HR/police",
                &["RS/police"],
                v1::RecordKind::WantedAlert,
            )),
            policy_bundle_hash: tag.to_string(),
            policy_explanation: String::new(),
        })),
    }
    .encode_to_vec()
}

impl FakeLog {
    fn tree(&self) -> MemoryTree {
        tree(
            &self
                .leaves
                .iter()
                .map(|l| merkle::leaf_hash(l))
                .collect::<Vec<_>>(),
        )
    }

    fn note(&self) -> Vec<u8> {
        use std::borrow::Borrow as _;
        let t = self.tree();
        let cp =
            Checkpoint::new(self.origin.clone(), t.size(), t.current_root()).expect("checkpoint");
        let log: &ring::signature::Ed25519KeyPair = self.log_key.borrow();
        let signer = NoteSigner::new(&self.origin, log).expect("signer");
        let mut n = note::sign_checkpoint(&cp, &signer).expect("sign");
        let hr: &ring::signature::Ed25519KeyPair = self.hr_key.borrow();
        let name = witness_name("casebridge.test", "HR".parse().expect("cc"));
        let cosigner = Cosigner::new(&name, hr).expect("cosigner");
        let sig = cosigner.cosign(&cp, 1_700_000_000).expect("cosign");
        let sig = if self.forge_cosignature {
            let mut raw = sig.signature().to_vec();
            raw[20] ^= 1;
            note::NoteSignature::new(sig.name(), sig.key_id(), raw).expect("sig")
        } else {
            sig
        };
        n.add_signature(sig).expect("add");
        n.to_bytes()
    }
}

#[derive(Clone)]
struct FakeBroker(std::sync::Arc<std::sync::Mutex<FakeLog>>);

impl FakeBroker {
    fn log(&self) -> std::sync::MutexGuard<'_, FakeLog> {
        self.0.lock().expect("lock")
    }
}

#[tonic::async_trait]
impl crate::daemon::rpc::audit_server::Audit for FakeBroker {
    async fn get_directory(
        &self,
        _: tonic::Request<v1::GetDirectoryRequest>,
    ) -> Result<tonic::Response<v1::SignedDirectory>, tonic::Status> {
        Err(tonic::Status::unimplemented("not served by this fake"))
    }

    async fn get_checkpoint(
        &self,
        _: tonic::Request<v1::GetCheckpointRequest>,
    ) -> Result<tonic::Response<v1::CheckpointResponse>, tonic::Status> {
        Ok(tonic::Response::new(v1::CheckpointResponse {
            checkpoint: self.log().note(),
            consistency_proof: vec![],
        }))
    }

    async fn get_entries(
        &self,
        req: tonic::Request<v1::GetEntriesRequest>,
    ) -> Result<tonic::Response<v1::GetEntriesResponse>, tonic::Status> {
        let r = req.into_inner();
        let mut log = self.log();
        log.leaves_only &= r.leaves_only;
        // Short pages, to exercise paging.
        let end = r.end.min(log.served.len() as u64).min(r.start + 7);
        let lie = log.lie;
        let entry = |i: u64| {
            let from = match lie {
                Lie::Swap(j) if i == j => j + 1,
                Lie::Swap(j) if i == j + 1 => j,
                _ => i,
            };
            let leaf = log.served[from as usize].clone();
            v1::LogEntry {
                index: i,
                event: if r.leaves_only {
                    None
                } else {
                    v1::AuditEvent::decode(leaf.as_slice()).ok()
                },
                leaf,
            }
        };
        let mut entries: Vec<v1::LogEntry> = (r.start..end).map(entry).collect();
        let at = |entries: &[v1::LogEntry], i: u64| entries.iter().position(|e| e.index == i);
        match lie {
            Lie::None => {}
            Lie::Skip(i) => entries.retain(|e| e.index != i),
            Lie::Reorder(i) => match (at(&entries, i), at(&entries, i + 1)) {
                (Some(a), Some(b)) => entries.swap(a, b),
                // The next entry first, even across pages; no more entries
                // than the page held.
                (Some(a), None) if ((i + 1) as usize) < log.served.len() => {
                    let n = entries.len();
                    entries.insert(a, entry(i + 1));
                    entries.truncate(n);
                }
                _ => {}
            },
            Lie::Swap(_) => {}
            Lie::Extra(i) => {
                if r.start >= i {
                    // One more than the whole range asked for.
                    entries = (r.start..=r.end)
                        .map(|j| match log.served.get(j as usize) {
                            Some(_) => entry(j),
                            None => v1::LogEntry {
                                index: j,
                                leaf: fake_leaf(j, "extra"),
                                event: None,
                            },
                        })
                        .collect();
                }
            }
            Lie::OtherEvent(i) => {
                if let Some(a) = at(&entries, i) {
                    entries[a].event =
                        v1::AuditEvent::decode(fake_leaf(i, "other").as_slice()).ok();
                }
            }
        }
        Ok(tonic::Response::new(v1::GetEntriesResponse { entries }))
    }

    async fn prove_inclusion(
        &self,
        req: tonic::Request<v1::ProveInclusionRequest>,
    ) -> Result<tonic::Response<v1::InclusionProof>, tonic::Status> {
        let r = req.into_inner();
        let log = self.log();
        let t = log.tree();
        let index = match r.target {
            Some(v1::prove_inclusion_request::Target::Index(i)) => i,
            Some(v1::prove_inclusion_request::Target::EnvelopeId(id)) => {
                let id: EnvelopeId = id.parse().expect("id");
                u64::from(id.as_bytes()[0])
            }
            None => return Err(tonic::Status::invalid_argument("no target")),
        };
        let proof = merkle::inclusion_proof(&t, index, t.size())
            .map_err(|e| tonic::Status::not_found(e.to_string()))?;
        Ok(tonic::Response::new(v1::InclusionProof {
            index,
            tree_size: t.size(),
            leaf: log.leaves[index as usize].clone(),
            proof: proof.iter().map(|h| h.to_vec()).collect(),
            checkpoint: log.note(),
        }))
    }

    async fn prove_consistency(
        &self,
        req: tonic::Request<v1::ProveConsistencyRequest>,
    ) -> Result<tonic::Response<v1::ConsistencyProof>, tonic::Status> {
        let r = req.into_inner();
        let log = self.log();
        let t = log.tree();
        if r.second_size != 0 && r.second_size != t.size() {
            return Err(tonic::Status::not_found("no checkpoint of that size"));
        }
        let proof = merkle::consistency_proof(&t, r.first_size, t.size())
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        Ok(tonic::Response::new(v1::ConsistencyProof {
            first_size: r.first_size,
            second_size: t.size(),
            proof: proof.iter().map(|h| h.to_vec()).collect(),
            checkpoint: log.note(),
        }))
    }

    async fn query(
        &self,
        _: tonic::Request<v1::QueryRequest>,
    ) -> Result<tonic::Response<v1::QueryResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("query"))
    }
}

/// A federation from `pki init` whose auditor profile points at a fake
/// broker; returns the profile path and the fake.
async fn fake_federation(dir: &Path) -> (PathBuf, FakeBroker) {
    let mut opts = crate::tools::pki::InitOptions::new(dir.join("fed"));
    opts.countries = vec!["HR".parse().expect("cc"), "RS".parse().expect("cc")];
    opts.base_port = 0;
    let fed = crate::tools::pki::init(&opts).expect("pki init");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (_, profile) = fed.auditor_profiles[0].clone();
    let text = std::fs::read_to_string(&profile).expect("profile");
    let text = text.replace("127.0.0.1:0", &addr.to_string());
    std::fs::write(&profile, text).expect("profile");

    let fed_dir = fed.dir.clone();
    let key =
        |p: &str| crate::storage::files::keys::load_signing_key(&fed_dir.join(p)).expect("key");
    let fake = FakeBroker(std::sync::Arc::new(std::sync::Mutex::new(FakeLog {
        origin: "casebridge.test/audit-log".into(),
        log_key: key("broker/log.key"),
        hr_key: key("nodes/HR/signing.key"),
        leaves: vec![],
        served: vec![],
        forge_cosignature: false,
        lie: Lie::None,
        leaves_only: true,
    })));
    let identity = Identity::load(
        &fed_dir.join("broker/broker.crt"),
        &fed_dir.join("broker/broker.key"),
    )
    .expect("identity");
    let root = crate::daemon::tls::load_certs(&fed_dir.join("ca/root.crt")).expect("root");
    let tls = crate::daemon::tls::ServerTls::new(&identity, &root[0], None, "casebridge.test")
        .expect("tls");
    let svc = crate::daemon::rpc::audit_server::AuditServer::new(fake.clone());
    tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tls.incoming(listener))
            .await;
    });
    (profile, fake)
}

fn set_log(fake: &FakeBroker, n: u64, tag: &str) {
    let mut log = fake.log();
    log.leaves = (0..n).map(|i| fake_leaf(i, tag)).collect();
    log.served = log.leaves.clone();
    log.lie = Lie::None;
}

async fn verify_err(profile: &Path) -> Inconsistent {
    let err = verify(profile, None).await.expect_err("must fail");
    eprintln!("error: {err:#}");
    err.downcast_ref::<Inconsistent>()
        .unwrap_or_else(|| panic!("not an inconsistency: {err:#}"))
        .clone()
}

#[tokio::test]
async fn verify_names_the_first_bad_index_against_a_broker() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (profile, fake) = fake_federation(tmp.path()).await;

    // No saved state, entry 13 of 40 served altered: found by the search.
    set_log(&fake, 40, "a");
    fake.log().served[13] = fake_leaf(13, "altered");
    fake.log().served[30] = fake_leaf(30, "altered too");
    let e = verify_err(&profile).await;
    assert_eq!(e.first_bad_index, Some(13), "{e}");
    assert!(e.to_string().contains("checkpoint commits to leaf"), "{e}");
    assert!(
        e.to_string()
            .starts_with("log inconsistent: first bad index 13: "),
        "{e}"
    );
    // Nothing was saved.
    let state = StateDir::new(tmp.path().join("fed/auditors/auditor/state"));
    assert!(
        state
            .load("casebridge.test/audit-log")
            .expect("load")
            .is_none()
    );

    // Honest: verified and saved.
    set_log(&fake, 40, "a");
    let r = verify(&profile, None).await.expect("verify");
    assert_eq!(r.size(), 40);
    assert_eq!(r.previous_size, None);
    assert_eq!(r.checkpoint.cosignatures.len(), 1);
    assert_eq!(
        r.checkpoint.missing,
        vec!["RS".parse::<Country>().expect("cc")]
    );

    // Grown, honest: consistent with the saved checkpoint.
    {
        let mut log = fake.log();
        for i in 40..55 {
            log.leaves.push(fake_leaf(i, "a"));
        }
        log.served = log.leaves.clone();
    }
    let r = verify(&profile, None).await.expect("verify");
    assert_eq!(r.previous_size, Some(40));
    assert!(
        r.to_string()
            .contains("consistent with the checkpoint you saved at size 40")
    );

    // History rewritten at 7 and re-signed: the signed tree is
    // self-consistent, but not with what this auditor saw.
    {
        let mut log = fake.log();
        log.leaves[7] = fake_leaf(7, "rewritten");
        log.leaves.push(fake_leaf(55, "a"));
        log.served = log.leaves.clone();
    }
    let e = verify_err(&profile).await;
    assert_eq!(e.first_bad_index, Some(7), "{e}");
    assert!(e.to_string().contains("history was rewritten"), "{e}");
    assert!(
        e.to_string()
            .contains("does not extend the checkpoint of size 55"),
        "{e}"
    );

    // Shrunk below what was saved.
    set_log(&fake, 50, "a");
    let e = verify_err(&profile).await;
    assert_eq!(e.first_bad_index, Some(50), "{e}");

    // Served entries missing (the page stops short).
    set_log(&fake, 60, "a");
    fake.log().served.truncate(58);
    let e = verify_err(&profile).await;
    assert_eq!(e.first_bad_index, Some(58), "{e}");

    // A forged witness cosignature fails the checkpoint.
    set_log(&fake, 60, "a");
    fake.log().forge_cosignature = true;
    let err = format!("{:#}", verify(&profile, None).await.expect_err("forged"));
    eprintln!("error: {err}");
    assert!(
        err.contains("cosignature by casebridge.test/node/HR"),
        "{err}"
    );
    fake.log().forge_cosignature = false;

    // Honest again: saved state still at 55 and consistent.
    let r = verify(&profile, None).await.expect("verify");
    assert_eq!(r.previous_size, Some(55));

    // prove: the fake finds envelope [i; 16] at index i.
    let id = EnvelopeId::from_bytes(&[9u8; 16]).expect("id");
    let p = prove(&profile, None, &id.to_string()).await.expect("prove");
    assert_eq!(p.index, 9);
    assert_eq!(p.matches_saved, Some(true));
    assert!(p.to_string().contains(
        "inclusion proof verified against checkpoint of size 60 signed by casebridge.test/audit-log"
    ));
    // A broker proving another entry than the one asked for.
    let other = EnvelopeId::from_bytes(
        &[{ 9u8 }; 15]
            .iter()
            .chain([1u8].iter())
            .copied()
            .collect::<Vec<_>>(),
    )
    .expect("id");
    let err = format!(
        "{:#}",
        prove(&profile, None, &other.to_string())
            .await
            .expect_err("other")
    );
    assert!(err.contains("not the submission of envelope"), "{err}");

    // report: verified, then written.
    let out = tmp.path().join("report.html");
    report(&profile, None, &out).await.expect("report");
    let html = std::fs::read_to_string(&out).expect("html");
    assert!(html.contains("Verified: all 60 entries"));
}

/// An auditor of `profile` that asks for pages of about two leaves, so
/// that several pages are in flight at once and most end short.
fn small_pages(profile: &Path) -> Auditor {
    let mut a = Auditor::connect(profile, None).expect("connect");
    a.page_bytes = 150;
    a
}

async fn verify_small_pages_err(profile: &Path) -> Inconsistent {
    let mut a = small_pages(profile);
    let err = verify_log(&mut a, |_, _| {}).await.expect_err("must fail");
    eprintln!("error: {err:#}");
    err.downcast_ref::<Inconsistent>()
        .unwrap_or_else(|| panic!("not an inconsistency: {err:#}"))
        .clone()
}

#[tokio::test]
async fn verify_takes_pages_in_flight_in_order() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (profile, fake) = fake_federation(tmp.path()).await;
    set_log(&fake, 61, "a");
    let mut a = small_pages(&profile);
    let mut seen = Vec::new();
    let r = verify_log(&mut a, |i, ev| seen.push((i, ev.at_ms)))
        .await
        .expect("verify");
    assert_eq!(r.size(), 61);
    let want: Vec<(u64, i64)> = (0..61).map(|i| (i, 1_700_000_000_000 + i as i64)).collect();
    assert_eq!(seen, want, "every entry visited once, in index order");
    assert!(fake.log().leaves_only, "verify asks for leaves only");
    let saved = StateDir::new(tmp.path().join("fed/auditors/auditor/state"))
        .load("casebridge.test/audit-log")
        .expect("load")
        .expect("saved");
    let want: Vec<Hash> = fake
        .log()
        .leaves
        .iter()
        .map(|l| merkle::leaf_hash(l))
        .collect();
    assert_eq!(saved.leaf_hashes, want);
}

#[tokio::test]
async fn verify_refuses_pages_that_lie() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (profile, fake) = fake_federation(tmp.path()).await;
    let state = StateDir::new(tmp.path().join("fed/auditors/auditor/state"));

    // An entry left out: the next one comes in its place.
    set_log(&fake, 61, "a");
    fake.log().lie = Lie::Skip(20);
    let e = verify_small_pages_err(&profile).await;
    assert_eq!(e.first_bad_index, Some(20), "{e}");
    // Whether entry 21 comes in its place or the page is empty depends on
    // where the pages start; either way nothing is taken past 19.
    let text = e.to_string();
    assert!(
        text.contains("asked for entry 20, the broker served entry 21")
            || text.contains("the broker serves no entry 20"),
        "{e}"
    );

    // Two entries in the wrong order.
    set_log(&fake, 61, "a");
    fake.log().lie = Lie::Reorder(33);
    let e = verify_small_pages_err(&profile).await;
    assert_eq!(e.first_bad_index, Some(33), "{e}");
    assert!(
        e.to_string()
            .contains("asked for entry 33, the broker served entry 34"),
        "{e}"
    );

    // Two leaves swapped under the right indexes: the root differs, and the
    // search names the first.
    set_log(&fake, 61, "a");
    fake.log().lie = Lie::Swap(45);
    let e = verify_small_pages_err(&profile).await;
    assert_eq!(e.first_bad_index, Some(45), "{e}");
    assert!(e.to_string().contains("checkpoint commits to leaf"), "{e}");

    // Pages larger than asked for, from index 25 on: refused where the
    // first such page starts, with nothing of it taken.
    set_log(&fake, 61, "a");
    fake.log().lie = Lie::Extra(25);
    let e = verify_small_pages_err(&profile).await;
    let at = e.first_bad_index.expect("an index");
    assert!((25..32).contains(&at), "{e}");
    assert!(e.to_string().contains("the broker answered with"), "{e}");

    // An event served beside a leaf that does not hold it (a broker that
    // sends events although asked for leaves only).
    set_log(&fake, 61, "a");
    fake.log().lie = Lie::OtherEvent(17);
    let e = verify_small_pages_err(&profile).await;
    assert_eq!(e.first_bad_index, Some(17), "{e}");
    assert!(
        e.to_string()
            .contains("the event served beside the leaf is not the event the leaf holds"),
        "{e}"
    );

    // A leaf the log committed to that is not an event.
    set_log(&fake, 61, "a");
    {
        let mut log = fake.log();
        log.leaves[9] = vec![0xff, 0xff, 0xff];
        log.served = log.leaves.clone();
    }
    let e = verify_small_pages_err(&profile).await;
    assert_eq!(e.first_bad_index, Some(9), "{e}");
    assert!(
        e.to_string().contains("not a casebridge.v1.AuditEvent"),
        "{e}"
    );
    assert!(
        state
            .load("casebridge.test/audit-log")
            .expect("load")
            .is_none(),
        "nothing is saved from a log that failed"
    );
}

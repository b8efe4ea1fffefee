//! Helpers shared by the audit tools' tests.

use std::path::PathBuf;

use crate::protocol::ids::Country;
use crate::protocol::merkle::{self, Hash, MemoryTree};
use crate::protocol::note::{self, Checkpoint, SignatureType, Verifier, Verifiers};
use crate::protocol::proto::v1;
use crate::protocol::proto::v1::audit_event::Event;
use crate::protocol::transparency::witness_name;

use super::*;
use crate::protocol::note::{Cosigner, NoteSigner};

pub(super) fn leaves(n: u64, tag: &str) -> Vec<Hash> {
    (0..n)
        .map(|i| merkle::leaf_hash(format!("{tag}{i}").as_bytes()))
        .collect()
}

pub(super) fn tree(hashes: &[Hash]) -> MemoryTree {
    let mut t = MemoryTree::new();
    for h in hashes {
        t.append(*h);
    }
    t
}

pub(super) fn signed_checkpoint(origin: &str, hashes: &[Hash]) -> Vec<u8> {
    let signer = NoteSigner::from_seed(origin, &[3; 32]).expect("signer");
    let cp = Checkpoint::new(
        origin,
        hashes.len() as u64,
        merkle::root_from_leaves(hashes),
    )
    .expect("checkpoint");
    note::sign_checkpoint(&cp, &signer)
        .expect("sign")
        .to_bytes()
}

pub(super) fn trust_with(
    origin: &str,
    log_seed: [u8; 32],
    witnesses: &[(&str, [u8; 32], bool)],
) -> LogTrust {
    let log_pk = NoteSigner::from_seed(origin, &log_seed)
        .expect("signer")
        .verifier()
        .public_key()
        .to_owned();
    let log = Verifier::new(origin, SignatureType::Ed25519, log_pk).expect("verifier");
    LogTrust {
        origin: origin.to_string(),
        log_only: Verifiers::new([log.clone()]).expect("verifiers"),
        log,
        witnesses: witnesses
            .iter()
            .map(|(cc, seed, revoked)| {
                let country: Country = cc.parse().expect("cc");
                let name = witness_name("casebridge.test", country);
                let pk = *Cosigner::from_seed(&name, seed)
                    .expect("cosigner")
                    .verifier()
                    .public_key();
                Witness {
                    country,
                    revoked: *revoked,
                    verifier: Verifier::new(&name, SignatureType::CosignatureV1, pk)
                        .expect("verifier"),
                    until_ms: None,
                }
            })
            .collect(),
    }
}

pub(super) fn cosigned(origin: &str, size: u64, cosigners: &[(&str, [u8; 32], u64)]) -> Vec<u8> {
    let signer = NoteSigner::from_seed(origin, &[1; 32]).expect("signer");
    let cp = Checkpoint::new(origin, size, merkle::leaf_hash(b"root")).expect("cp");
    let mut n = note::sign_checkpoint(&cp, &signer).expect("sign");
    for (cc, seed, ts) in cosigners {
        let name = witness_name("casebridge.test", cc.parse().expect("cc"));
        let c = Cosigner::from_seed(&name, seed).expect("cosigner");
        n.add_signature(c.cosign(&cp, *ts).expect("cosign"))
            .expect("add");
    }
    n.to_bytes()
}

pub(super) fn summary_of(
    id: &[u8],
    sender: &str,
    recipients: &[&str],
    kind: v1::RecordKind,
) -> v1::EnvelopeSummary {
    v1::EnvelopeSummary {
        envelope_id: id.to_vec(),
        sender_node: sender[..2].to_string(),
        sender_agency: sender.to_string(),
        recipients: recipients.iter().map(|s| s.to_string()).collect(),
        kind: kind as i32,
        declared_categories: vec![v1::DataCategory::Identity as i32],
        purpose: v1::Purpose::Prosecution as i32,
        legal_basis: v1::LegalBasis::EuropeanMlaConvention as i32,
        ..Default::default()
    }
}

pub(super) fn synthetic_log() -> Vec<v1::AuditEvent> {
    let a = [1u8; 16];
    let b = [2u8; 16];
    let c = [3u8; 16];
    vec![
        v1::AuditEvent {
            at_ms: 1_700_000_000_000,
            event: Some(Event::DirectoryChanged(v1::DirectoryChanged {
                version: 1,
                directory_sha256: vec![0xab; 32],
            })),
        },
        v1::AuditEvent {
            at_ms: 1_700_000_001_000,
            event: Some(Event::SubmissionAccepted(v1::SubmissionAccepted {
                envelope: Some(summary_of(
                    &a,
                    "HR/police",
                    &["RS/police", "RS/prosecutor", "BA/police"],
                    v1::RecordKind::WantedAlert,
                )),
                policy_bundle_hash: "sha256:1234".into(),
                policy_explanation: "permit: framework/mla".into(),
            })),
        },
        v1::AuditEvent {
            at_ms: 1_700_000_002_000,
            event: Some(Event::SubmissionRefused(v1::SubmissionRefused {
                submitting_node: "RS".into(),
                code: v1::RefusalCode::Policy as i32,
                reason: "forbidden by <framework> & \"H3\", 'quoted'".into(),
                envelope: Some(summary_of(
                    &b,
                    "RS/police",
                    &["HR/police"],
                    v1::RecordKind::WantedAlert,
                )),
                ..Default::default()
            })),
        },
        v1::AuditEvent {
            at_ms: 1_700_000_003_000,
            event: Some(Event::ReceiptRecorded(v1::ReceiptRecorded {
                envelope_id: a.to_vec(),
                recipient_node: "RS".into(),
                status: v1::ReceiptStatus::Delivered as i32,
                delivered_to: vec!["RS/police".into(), "RS/prosecutor".into()],
                ..Default::default()
            })),
        },
        v1::AuditEvent {
            at_ms: 1_700_000_004_000,
            event: Some(Event::ReceiptRecorded(v1::ReceiptRecorded {
                envelope_id: a.to_vec(),
                recipient_node: "BA".into(),
                status: v1::ReceiptStatus::Rejected as i32,
                code: v1::RejectionCode::UndeclaredCategories as i32,
                reason: "health data not declared".into(),
                ..Default::default()
            })),
        },
        v1::AuditEvent {
            at_ms: 1_700_000_005_000,
            event: Some(Event::ContentViolation(v1::ContentViolation {
                envelope_id: a.to_vec(),
                sender_node: "HR".into(),
                sender_agency: "HR/police".into(),
                reporting_node: "BA".into(),
                code: v1::RejectionCode::UndeclaredCategories as i32,
                detail: "<script>alert(1)</script>".into(),
                ..Default::default()
            })),
        },
        v1::AuditEvent {
            at_ms: 1_700_000_006_000,
            event: Some(Event::SubmissionRefused(v1::SubmissionRefused {
                submitting_node: "ME".into(),
                code: v1::RefusalCode::Malformed as i32,
                reason: "header does not parse".into(),
                ..Default::default()
            })),
        },
        v1::AuditEvent {
            at_ms: 1_700_000_007_000,
            event: Some(Event::SubmissionAccepted(v1::SubmissionAccepted {
                envelope: Some(summary_of(
                    &c,
                    "HR/prosecutor",
                    &["RS/prosecutor"],
                    v1::RecordKind::MlaRequest,
                )),
                ..Default::default()
            })),
        },
        // HR's node refused its own agency's transfer before sealing and
        // reported it: labels, no envelope id.
        v1::AuditEvent {
            at_ms: 1_700_000_008_000,
            event: Some(Event::SubmissionRefused(v1::SubmissionRefused {
                submitting_node: "HR".into(),
                code: v1::RefusalCode::Policy as i32,
                reason: "refused by node HR before sealing".into(),
                envelope: Some(summary_of(
                    &[],
                    "HR/police",
                    &["BA/police"],
                    v1::RecordKind::WantedAlert,
                )),
                policy_explanation: "refused for BA/police by built-in rule".into(),
                ..Default::default()
            })),
        },
    ]
}

pub(super) fn report_of(log: &[v1::AuditEvent]) -> (LogSummary, VerifyReport) {
    let mut summary = LogSummary::default();
    for (i, ev) in log.iter().enumerate() {
        summary.add(i as u64, ev);
    }
    let origin = "casebridge.test/audit-log";
    let trust = trust_with(
        origin,
        [1; 32],
        &[("HR", [2; 32], false), ("RS", [3; 32], false)],
    );
    let note = cosigned(origin, log.len() as u64, &[("HR", [2; 32], 1_700_000_100)]);
    let verified = VerifyReport {
        checkpoint: trust.open(&note).expect("open"),
        directory_version: 4,
        previous_size: Some(3),
        state_dir: PathBuf::from("/tmp/state"),
    };
    (summary, verified)
}

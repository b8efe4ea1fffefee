//! What must be refused, each with a precise error, persisting nothing but
//! the audit event of the refusal.

use casebridge::protocol::envelope::{self, SealInput};
use casebridge::protocol::ids::AgencyId;
use casebridge::protocol::proto::v1;
use prost::Message as _;
use tonic::Code;
use v1::RefusalCode as R;
use v1::audit_event::Event;

use crate::support::*;

const DAY: i64 = 86_400_000;

fn police_labels() -> v1::Labels {
    police_to_third_country()
}

/// Seals a record as node `node` would, from `from` to `to`.
fn seal(
    fed: &Fed,
    node: &str,
    from: &str,
    to: &[&str],
    created: i64,
    expires: i64,
) -> envelope::Sealed {
    let sender: AgencyId = from.parse().unwrap();
    let recipients: Vec<AgencyId> = to.iter().map(|a| a.parse().unwrap()).collect();
    let rec = record("wanted_alert");
    let input = SealInput {
        sender: &sender,
        recipients: &recipients,
        record: &rec,
        labels: police_labels(),
        created_at_ms: created,
        expires_at_ms: expires,
        onward_of: None,
        permission: None,
    };
    envelope::seal(&input, &node_signing_key(fed, node), &directory(fed)).unwrap()
}

/// An envelope whose header `node` signed after it was changed.
fn resigned(
    fed: &Fed,
    node: &str,
    header: &v1::EnvelopeHeader,
    ciphertext: Vec<u8>,
) -> v1::Envelope {
    let header = header.encode_to_vec();
    let signature = envelope::sign_header(&header, &node_signing_key(fed, node));
    v1::Envelope {
        header,
        signature,
        ciphertext,
    }
}

fn fresh(fed: &Fed) -> envelope::Sealed {
    let now = casebridge::daemon::clock::now_ms();
    seal(fed, "HR", "HR/police", &["BA/police"], now, now + DAY)
}

#[tokio::test]
async fn tampered_ciphertext() {
    let fed = start(&["HR", "BA"]).await;
    let mut env = fresh(&fed).envelope;
    let last = env.ciphertext.len() - 1;
    env.ciphertext[last] ^= 1;
    assert_refused(
        &fed,
        "HR",
        env,
        Code::InvalidArgument,
        R::CiphertextMismatch,
        "ciphertext does not match",
    )
    .await;
}

#[tokio::test]
async fn tampered_header() {
    let fed = start(&["HR", "BA"]).await;
    let mut env = fresh(&fed).envelope;
    // Change one byte inside the case reference: still parses, no longer signed.
    let pos = env
        .header
        .windows(11)
        .position(|w| w == b"TEST-CASE-1")
        .unwrap();
    env.header[pos + 10] = b'2';
    assert_refused(
        &fed,
        "HR",
        env,
        Code::PermissionDenied,
        R::BadSignature,
        "signature does not verify with node HR",
    )
    .await;
}

#[tokio::test]
async fn signature_by_another_nodes_key() {
    let fed = start(&["HR", "BA", "RS"]).await;
    let mut env = fresh(&fed).envelope;
    // RS signs a header that says it comes from HR; HR's connection submits it.
    env.signature = envelope::sign_header(&env.header, &node_signing_key(&fed, "RS"));
    assert_refused(
        &fed,
        "HR",
        env,
        Code::PermissionDenied,
        R::BadSignature,
        "signature does not verify with node HR",
    )
    .await;
}

#[tokio::test]
async fn envelope_of_another_node_submitted_by_this_one() {
    let fed = start(&["HR", "BA", "RS"]).await;
    let now = casebridge::daemon::clock::now_ms();
    let env = seal(&fed, "RS", "RS/police", &["BA/police"], now, now + DAY).envelope;
    assert_refused(
        &fed,
        "HR",
        env,
        Code::PermissionDenied,
        R::WrongSenderNode,
        "submitted by node HR",
    )
    .await;
}

#[tokio::test]
async fn sender_agency_of_another_country() {
    let fed = start(&["HR", "BA", "RS"]).await;
    // Node HR signs for an RS agency.
    let now = casebridge::daemon::clock::now_ms();
    let sealed = seal(&fed, "HR", "RS/police", &["BA/police"], now, now + DAY);
    let mut header = v1::EnvelopeHeader::decode(sealed.envelope.header.as_slice()).unwrap();
    header.sender_node = "HR".into();
    let env = resigned(&fed, "HR", &header, sealed.envelope.ciphertext);
    assert_refused(
        &fed,
        "HR",
        env,
        Code::PermissionDenied,
        R::ForeignAgency,
        "does not belong to sending node HR",
    )
    .await;
}

#[tokio::test]
async fn unknown_recipient_agency() {
    let fed = start(&["HR", "BA"]).await;
    let sealed = fresh(&fed);
    let mut header = v1::EnvelopeHeader::decode(sealed.envelope.header.as_slice()).unwrap();
    header.recipients = vec!["BA/customs".into()];
    let env = resigned(&fed, "HR", &header, sealed.envelope.ciphertext);
    assert_refused(
        &fed,
        "HR",
        env,
        Code::NotFound,
        R::UnknownAgency,
        "agency BA/customs is not in the directory",
    )
    .await;
}

#[tokio::test]
async fn revoked_agency() {
    let mut fed = create(&["HR", "BA"]).await;
    edit_directory(&fed, |d| {
        for a in &mut d.agencies {
            if a.id == "BA/police" {
                a.revoked = true;
            }
        }
    });
    start_all(&mut fed).await;
    let env = fresh(&fed).envelope;
    assert_refused(
        &fed,
        "HR",
        env,
        Code::FailedPrecondition,
        R::Revoked,
        "agency BA/police is revoked",
    )
    .await;
    // The node refuses to seal for it in the first place.
    let err = try_send(
        &fed,
        "HR/police",
        &["BA/police"],
        record("wanted_alert"),
        police_labels(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("revoked"));
}

#[tokio::test]
async fn replayed_envelope_id() {
    let mut fed = start(&["HR", "BA"]).await;
    // With BA down, its queue shows exactly what the broker kept.
    fed.stop_node(cc("BA")).await.unwrap();
    let env = fresh(&fed).envelope;
    let mut hr = exchange_as_node(&fed, "HR");
    hr.submit(v1::SubmitRequest {
        envelope: Some(env.clone()),
    })
    .await
    .unwrap();
    let before = audit(&fed).await.len();
    let err = hr
        .submit(v1::SubmitRequest {
            envelope: Some(env),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(
        err.message().contains("already submitted"),
        "{}",
        err.message()
    );
    let events = audit(&fed).await;
    assert_eq!(events.len(), before + 1);
    assert!(
        matches!(&events[before].event, Some(Event::SubmissionRefused(r)) if r.code == R::Duplicate as i32)
    );
    let queued = fed
        .broker()
        .unwrap()
        .store
        .pending(cc("BA"), None, 10)
        .await
        .unwrap();
    assert_eq!(queued.len(), 1, "the replay queued nothing more");
}

#[tokio::test]
async fn envelope_created_outside_the_replay_window() {
    let fed = start(&["HR", "BA"]).await;
    let now = casebridge::daemon::clock::now_ms();
    let env = seal(
        &fed,
        "HR",
        "HR/police",
        &["BA/police"],
        now - 8 * DAY,
        now + DAY,
    )
    .envelope;
    assert_refused(
        &fed,
        "HR",
        env,
        Code::FailedPrecondition,
        R::Replay,
        "outside the replay window",
    )
    .await;
}

#[tokio::test]
async fn expired_record() {
    let fed = start(&["HR", "BA"]).await;
    let now = casebridge::daemon::clock::now_ms();
    let env = seal(
        &fed,
        "HR",
        "HR/police",
        &["BA/police"],
        now - 2000,
        now - 1000,
    )
    .envelope;
    assert_refused(
        &fed,
        "HR",
        env,
        Code::FailedPrecondition,
        R::Expired,
        "record expired",
    )
    .await;
}

#[tokio::test]
async fn oversized_record() {
    let mut fed = create(&["HR", "BA"]).await;
    fed.broker_config.limits.max_envelope_bytes = 64 * 1024;
    start_all(&mut fed).await;
    let sender: AgencyId = "HR/police".parse().unwrap();
    let recipients = ["BA/police".parse().unwrap()];
    let rec = v1::CaseRecord {
        body: Some(v1::case_record::Body::JitEvidence(v1::JitEvidence {
            jit_reference: "JIT-TEST".into(),
            description: "large evidence".into(),
            attachments: vec![v1::Attachment {
                filename: "scan.bin".into(),
                media_type: "application/octet-stream".into(),
                content: vec![7u8; 100 * 1024],
                contains: vec![],
            }],
        })),
    };
    let now = casebridge::daemon::clock::now_ms();
    let input = SealInput {
        sender: &sender,
        recipients: &recipients,
        record: &rec,
        labels: police_labels(),
        created_at_ms: now,
        expires_at_ms: now + DAY,
        onward_of: None,
        permission: None,
    };
    let env = envelope::seal(&input, &node_signing_key(&fed, "HR"), &directory(&fed))
        .unwrap()
        .envelope;
    assert_refused(
        &fed,
        "HR",
        env,
        Code::ResourceExhausted,
        R::Oversized,
        "the limit is 65536",
    )
    .await;
}

#[tokio::test]
async fn malformed_header_protobuf() {
    let fed = start(&["HR", "BA"]).await;
    let mut env = fresh(&fed).envelope;
    env.header = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x01];
    assert_refused(
        &fed,
        "HR",
        env,
        Code::InvalidArgument,
        R::Malformed,
        "not a valid EnvelopeHeader protobuf",
    )
    .await;
}

#[tokio::test]
async fn request_without_an_envelope() {
    let fed = start(&["HR", "BA"]).await;
    let before = audit(&fed).await.len();
    let err = exchange_as_node(&fed, "HR")
        .submit(v1::SubmitRequest { envelope: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(audit(&fed).await.len(), before + 1);
}

#[tokio::test]
async fn the_sending_node_refuses_bad_labels_before_anything_leaves() {
    let fed = start(&["HR", "BA"]).await;
    let before = audit(&fed).await.len();
    let mut l = police_labels();
    l.handling = v1::HandlingCode::H3 as i32;
    let err = try_send(&fed, "HR/police", &["BA/police"], record("wanted_alert"), l)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("H3"), "{}", err.message());
    let mut l = police_labels();
    l.expires_at_ms = casebridge::daemon::clock::now_ms() + 400 * DAY;
    let err = try_send(&fed, "HR/police", &["BA/police"], record("wanted_alert"), l)
        .await
        .unwrap_err();
    assert!(
        err.message().contains("retention limit"),
        "{}",
        err.message()
    );
    let err = try_send(
        &fed,
        "HR/police",
        &["BA/nobody"],
        record("wanted_alert"),
        police_labels(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        audit(&fed).await.len(),
        before,
        "nothing reached the broker"
    );
}

/// Labels of an MLA request under the European MLA convention, with the
/// given third-country transfer ground.
/// HR is an EU member and BA is not (by the directory's regimes). An MLA
/// request from HR/prosecutor to BA/prosecutor under the convention alone
/// is refused by HR's node, which reports it; sealed anyway by a node that
/// skips its checks, it is refused by the broker; both refusals are in the
/// log, naming the rule. On appropriate safeguards the same request is
/// accepted, and its log entry carries the ground.
#[tokio::test]
async fn an_eu_members_transfer_to_a_non_member_without_a_ground_is_refused_and_logged() {
    let fed = start(&["HR", "BA"]).await;
    let dir = directory(&fed);
    assert!(dir.node(cc("HR")).unwrap().eu_member);
    assert!(!dir.node(cc("BA")).unwrap().eu_member);

    // At the sending node, before sealing.
    let before = audit(&fed).await.len();
    let err = try_send(
        &fed,
        "HR/prosecutor",
        &["BA/prosecutor"],
        record("mla_request"),
        mla_labels(v1::TransferGround::None),
    )
    .await
    .expect_err("refused at the node");
    assert_status(
        &err,
        Code::PermissionDenied,
        "eu-to-third-country-needs-ground",
    );
    let reported = until("the node's refusal in the log", || async {
        audit(&fed)
            .await
            .into_iter()
            .skip(before)
            .find_map(|e| match e.event {
                Some(Event::SubmissionRefused(r)) => Some(r),
                _ => None,
            })
    })
    .await;
    assert_eq!(reported.submitting_node, "HR");
    assert_eq!(reported.code, R::Policy as i32);
    assert!(
        reported
            .policy_explanation
            .contains("eu-to-third-country-needs-ground"),
        "{}",
        reported.policy_explanation
    );
    let summary = reported.envelope.expect("the refused labels");
    assert!(summary.envelope_id.is_empty(), "nothing was sealed");
    assert_eq!(summary.transfer_ground, v1::TransferGround::None as i32);

    // At the broker, from a node that skipped its own check.
    let sealed = crate::adversary::harness::seal_as(
        &fed,
        "HR/prosecutor",
        &["BA/prosecutor"],
        &record("mla_request"),
        mla_labels(v1::TransferGround::None),
    );
    assert_refused(
        &fed,
        "HR",
        sealed.envelope,
        Code::PermissionDenied,
        R::Policy,
        "eu-to-third-country-needs-ground",
    )
    .await;
    match audit(&fed).await.last().and_then(|e| e.event.clone()) {
        Some(Event::SubmissionRefused(r)) => {
            let e = r.envelope.expect("the verified header's labels");
            assert_eq!(e.sender_agency, "HR/prosecutor");
            assert_eq!(e.kind, v1::RecordKind::MlaRequest as i32);
            assert!(!e.envelope_id.is_empty());
        }
        other => panic!("expected the broker's refusal, got {other:?}"),
    }

    // On appropriate safeguards: accepted, the ground in the log.
    let sent = send(
        &fed,
        "HR/prosecutor",
        &["BA/prosecutor"],
        record("mla_request"),
        mla_labels(v1::TransferGround::AppropriateSafeguards),
    )
    .await;
    settled(&fed, "HR/prosecutor", &sent.envelope_id).await;
    let accepted = audit(&fed)
        .await
        .into_iter()
        .find_map(|e| match e.event {
            Some(Event::SubmissionAccepted(a)) => a.envelope,
            _ => None,
        })
        .expect("the accepted submission");
    assert_eq!(
        accepted.transfer_ground,
        v1::TransferGround::AppropriateSafeguards as i32
    );
}

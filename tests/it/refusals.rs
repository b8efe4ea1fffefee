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

//! Adversarial cases: the Exchange API against a node that asks about
//! exchanges it is not party to, names agencies in receipts that were never
//! recipients, reports purges of records it never held, grants or asks
//! permission for records it did not provide; and the node's inclusion
//! checks against a broker that answers "duplicate", lies about an index or
//! denies an acceptance.

use std::time::Duration;

use casebridge::daemon::node::witness;
use casebridge::protocol::bounds;
use casebridge::protocol::envelope;
use casebridge::protocol::ids::EnvelopeId;
use casebridge::protocol::proto::v1;
use prost::Message as _;
use tonic::Code;
use v1::audit_event::Event;

use super::harness::{header_of, receipt_for, seal_with, sign_receipt_as};
use crate::support::*;

const DAY: i64 = 86_400_000;

async fn proof_as(fed: &Fed, node: &str, id: &[u8]) -> Result<v1::InclusionProof, tonic::Status> {
    exchange_as_node(fed, node)
        .get_inclusion_proof(v1::InclusionProofRequest {
            envelope_id: id.to_vec(),
            tree_size: 0,
        })
        .await
        .map(tonic::Response::into_inner)
}

fn id_of(s: &v1::SendResponse) -> EnvelopeId {
    s.envelope_id.parse().unwrap()
}

// ---- node-scoped reads ----

#[tokio::test]
async fn a_node_cannot_read_the_log_entry_of_an_exchange_it_did_not_send() {
    let fed = start(&["BA", "RS", "ME"]).await;
    let sent = send(
        &fed,
        "BA/police",
        &["RS/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    settled(&fed, "BA/police", &sent.envelope_id).await;
    let size = checkpoint_now(&fed).await;
    let id = id_of(&sent);
    let unknown = EnvelopeId::at(casebridge::daemon::clock::now_ms());
    let before = audit(&fed).await.len();
    // A stranger, the recipient, and anyone asking about an unknown id get
    // one and the same answer: nothing tells them the envelope exists.
    for (node, asked) in [("ME", id), ("RS", id), ("ME", unknown), ("BA", unknown)] {
        let err = proof_as(&fed, node, asked.as_bytes()).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{node}: {}", err.message());
        assert_eq!(
            err.message(),
            format!("no submission {asked} of node {node} in the log")
        );
    }
    let err = proof_as(&fed, "BA", &[7; 15]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("must be 16 bytes, not 15"),
        "{}",
        err.message()
    );
    assert_eq!(audit(&fed).await.len(), before, "asking changes nothing");

    // The sender still gets its own acceptance, with a proof that verifies.
    let proof = proof_as(&fed, "BA", id.as_bytes()).await.unwrap();
    assert_eq!(proof.index, sent.log_index);
    assert!(proof.tree_size >= size);
    match v1::AuditEvent::decode(proof.leaf.as_slice()).unwrap().event {
        Some(Event::SubmissionAccepted(a)) => {
            assert_eq!(a.envelope.unwrap().envelope_id, id.as_bytes().to_vec())
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_node_reports_purges_only_of_records_delivered_to_it() {
    let mut fed = start(&["BA", "RS", "ME"]).await;
    let delivered = send(
        &fed,
        "BA/police",
        &["RS/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    settled(&fed, "BA/police", &delivered.envelope_id).await;
    let foreign = send(
        &fed,
        "BA/police",
        &["ME/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    settled(&fed, "BA/police", &foreign.envelope_id).await;
    // Addressed to RS but not delivered: RS is down, the envelope waits.
    fed.stop_node(cc("RS")).await.unwrap();
    let waiting = send(
        &fed,
        "BA/police",
        &["RS/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    assert_eq!(waiting.state, v1::SendState::Accepted as i32);

    let before = audit(&fed).await.len();
    let mut rs = exchange_as_node(&fed, "RS");
    let unknown = EnvelopeId::at(casebridge::daemon::clock::now_ms());
    for ids in [
        vec![id_of(&waiting)],
        vec![id_of(&foreign)],
        vec![unknown],
        vec![id_of(&delivered), id_of(&foreign)],
    ] {
        let err = rs
            .report_purge(v1::PurgeReport {
                envelope_ids: ids.iter().map(|i| i.as_bytes().to_vec()).collect(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{}", err.message());
        assert!(
            err.message().contains("was not delivered to node RS"),
            "{}",
            err.message()
        );
    }
    let d = id_of(&delivered).as_bytes().to_vec();
    for (ids, says) in [
        (vec![d.clone(), d.clone()], "twice"),
        (vec![vec![7; 15]], "an id is 16 bytes, not 15"),
        (
            vec![d.clone(); 1001],
            "names 1001 envelopes; the limit is 1000",
        ),
    ] {
        let err = rs
            .report_purge(v1::PurgeReport { envelope_ids: ids })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains(says), "{}", err.message());
    }
    assert_eq!(
        audit(&fed).await.len(),
        before,
        "a refused report logs nothing"
    );

    // What was delivered can be reported.
    let ok = rs
        .report_purge(v1::PurgeReport {
            envelope_ids: vec![id_of(&delivered).as_bytes().to_vec()],
        })
        .await
        .unwrap()
        .into_inner();
    match &audit(&fed).await[ok.log_index as usize].event {
        Some(Event::RecordsPurged(p)) => {
            assert_eq!(p.node, "RS");
            assert_eq!(p.envelope_ids, vec![id_of(&delivered).as_bytes().to_vec()]);
        }
        other => panic!("{other:?}"),
    }
}

// ---- receipts ----

/// Takes the first envelope queued for `node` off the broker, as that node
/// would (the node itself is stopped).
async fn first_queued(fed: &Fed, node: &str) -> (u64, v1::Envelope) {
    let mut stream = exchange_as_node(fed, node)
        .receive(v1::ReceiveRequest::default())
        .await
        .unwrap()
        .into_inner();
    // A safety net only: the envelope is queued before this is called.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let d = stream.message().await.unwrap().expect("a delivery");
            if let Some(v1::delivery::Item::Envelope(env)) = d.item {
                return (d.seq, env);
            }
        }
    })
    .await
    .expect("a queued envelope")
}

/// A receipt for `env` signed with `node`'s own key.
fn receipt(
    fed: &Fed,
    node: &str,
    env: &v1::Envelope,
    status: v1::ReceiptStatus,
    delivered_to: &[&str],
) -> v1::SignedReceipt {
    let mut body = receipt_for(env, node, status, delivered_to);
    if status == v1::ReceiptStatus::Rejected {
        body.code = v1::RejectionCode::Policy as i32;
    }
    sign_receipt_as(fed, node, &body)
}

#[tokio::test]
async fn a_receipt_names_only_recipients_of_the_envelope_at_the_signing_node() {
    let mut fed = start(&["BA", "RS"]).await;
    fed.stop_node(cc("RS")).await.unwrap();
    let sent = send(
        &fed,
        "BA/police",
        &["RS/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    let (seq, env) = first_queued(&fed, "RS").await;
    let before = audit(&fed).await.len();
    let mut rs = exchange_as_node(&fed, "RS");
    use v1::ReceiptStatus::{Delivered, Rejected};
    let cases: [(v1::ReceiptStatus, &[&str], &str); 5] = [
        (
            Delivered,
            &["RS/police", "RS/prosecutor"],
            "\"RS/prosecutor\" in delivered_to, which is not a recipient of envelope",
        ),
        (
            Delivered,
            &["BA/police"],
            "\"BA/police\" in delivered_to, which is not a recipient of envelope",
        ),
        (
            Delivered,
            &["RS/police", "RS/police"],
            "names RS/police twice",
        ),
        (Delivered, &[], "names no agency in delivered_to"),
        (Rejected, &["RS/police"], "it reached none"),
    ];
    for (status, to, says) in cases {
        let err = rs
            .acknowledge(v1::AcknowledgeRequest {
                seq,
                receipt: Some(receipt(&fed, "RS", &env, status, to)),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(err.message().contains(says), "{}", err.message());
    }
    assert_eq!(
        audit(&fed).await.len(),
        before,
        "no audit event for a refused receipt"
    );
    let store = &fed.broker().unwrap().store;
    assert!(
        store.queued(cc("RS"), seq).await.unwrap().is_some(),
        "the envelope stays queued"
    );
    let s = status(&fed, "BA/police", &sent.envelope_id).await;
    assert_eq!(
        s.recipient_status[0].state,
        v1::DeliveryState::Pending as i32,
        "nothing reached the sender"
    );

    // The true receipt is taken, logged and relayed.
    let ok = rs
        .acknowledge(v1::AcknowledgeRequest {
            seq,
            receipt: Some(receipt(&fed, "RS", &env, Delivered, &["RS/police"])),
        })
        .await
        .unwrap()
        .into_inner();
    match &audit(&fed).await[ok.log_index as usize].event {
        Some(Event::ReceiptRecorded(r)) => assert_eq!(r.delivered_to, vec!["RS/police"]),
        other => panic!("{other:?}"),
    }
    let s = settled(&fed, "BA/police", &sent.envelope_id).await;
    assert_eq!(
        s.recipient_status[0].receipt.as_ref().unwrap().delivered_to,
        vec!["RS/police"]
    );
}

#[tokio::test]
async fn a_revoked_node_is_refused_on_every_exchange_call() {
    let mut fed = start(&["BA", "RS"]).await;
    fed.stop_node(cc("RS")).await.unwrap();
    let sent = send(
        &fed,
        "BA/police",
        &["RS/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    let (seq, env) = first_queued(&fed, "RS").await;
    fed.stop_broker().await.unwrap();
    edit_directory(&fed, |d| {
        for n in &mut d.nodes {
            if n.country == "RS" {
                n.revoked = true;
            }
        }
    });
    fed.start_broker().await.unwrap();
    let before = audit(&fed).await.len();
    let mut rs = exchange_as_node(&fed, "RS");
    let revoked = |r: Result<(), tonic::Status>| {
        let err = r.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
        assert!(
            err.message().contains("node RS is revoked"),
            "{}",
            err.message()
        );
    };
    let good = receipt(
        &fed,
        "RS",
        &env,
        v1::ReceiptStatus::Delivered,
        &["RS/police"],
    );
    revoked(
        rs.acknowledge(v1::AcknowledgeRequest {
            seq,
            receipt: Some(good),
        })
        .await
        .map(drop),
    );
    revoked(rs.receive(v1::ReceiveRequest::default()).await.map(drop));
    revoked(
        rs.submit(v1::SubmitRequest {
            envelope: Some(env.clone()),
        })
        .await
        .map(drop),
    );
    revoked(
        rs.report_purge(v1::PurgeReport {
            envelope_ids: vec![id_of(&sent).as_bytes().to_vec()],
        })
        .await
        .map(drop),
    );
    revoked(
        rs.get_inclusion_proof(v1::InclusionProofRequest {
            envelope_id: id_of(&sent).as_bytes().to_vec(),
            tree_size: 0,
        })
        .await
        .map(drop),
    );
    revoked(
        rs.get_checkpoint(v1::GetCheckpointRequest { from_size: 0 })
            .await
            .map(drop),
    );
    revoked(rs.get_directory(v1::GetDirectoryRequest {}).await.map(drop));
    assert_eq!(
        audit(&fed).await.len(),
        before,
        "nothing logged for a revoked node"
    );
    assert!(
        fed.broker()
            .unwrap()
            .store
            .queued(cc("RS"), seq)
            .await
            .unwrap()
            .is_some()
    );
    // The broker still serves the others.
    exchange_as_node(&fed, "BA")
        .get_directory(v1::GetDirectoryRequest {})
        .await
        .unwrap();
}

// ---- provenance of onward transfers ----

/// H2 labels for police transfers from HR (EU) on, with a third-country
/// ground, kept 30 days (border police accept at most 90).
fn h2() -> v1::Labels {
    let mut l = labels(
        v1::Purpose::InvestigationMigrantSmuggling,
        v1::LegalBasis::SpecificSituationDerogation,
        v1::HandlingCode::H2,
    );
    l.legal_basis_reference = "Directive (EU) 2016/680, Art. 38".into();
    l.expires_at_ms = casebridge::daemon::clock::now_ms() + 30 * DAY;
    l.evaluation = Some(v1::Evaluation {
        source: v1::SourceReliability::B as i32,
        accuracy: v1::InformationAccuracy::InformationAccuracy3 as i32,
    });
    l
}

/// An envelope sealed by the sending agency's node with its own key,
/// bypassing the node's own checks, as a misbehaving node could.
fn seal_raw(
    fed: &Fed,
    from: &str,
    to: &str,
    record: v1::CaseRecord,
    labels: v1::Labels,
    onward_of: Option<EnvelopeId>,
    permission: Option<v1::PermissionScope>,
) -> v1::Envelope {
    let expires_at_ms = labels.expires_at_ms;
    seal_with(fed, from, &[to], &record, labels, |input| {
        input.expires_at_ms = expires_at_ms;
        input.onward_of = onward_of;
        input.permission = permission;
    })
    .envelope
}

fn grant_record() -> v1::CaseRecord {
    v1::CaseRecord {
        body: Some(v1::case_record::Body::PermissionGrant(
            v1::PermissionGrant {
                conditions: String::new(),
            },
        )),
    }
}

fn request_record() -> v1::CaseRecord {
    v1::CaseRecord {
        body: Some(v1::case_record::Body::PermissionRequest(
            v1::PermissionRequest {
                justification: "please".into(),
            },
        )),
    }
}

fn scope(original: &str, grantee: &str, third: &str) -> v1::PermissionScope {
    v1::PermissionScope {
        original_envelope_id: original.parse::<EnvelopeId>().unwrap().as_bytes().to_vec(),
        grantee: grantee.into(),
        third_agencies: vec![third.into()],
    }
}

fn provided_by(provider: &str) -> v1::Labels {
    let mut l = h2();
    l.provider = provider.into();
    l
}

/// Submits `env` as `node` and checks the refusal: the gRPC code, the
/// refusal code, the message, exactly one new audit event (the refusal),
/// and that the broker kept nothing of the envelope.
async fn refused(fed: &Fed, node: &str, env: v1::Envelope, code: v1::RefusalCode, says: &str) {
    let id = EnvelopeId::from_bytes(&header_of(&env).envelope_id).unwrap();
    let before = audit(fed).await.len();
    let err = exchange_as_node(fed, node)
        .submit(v1::SubmitRequest {
            envelope: Some(env),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains(says), "{}", err.message());
    assert_eq!(
        err.metadata()
            .get("casebridge-refusal")
            .and_then(|v| v.to_str().ok()),
        Some(code.as_str_name())
    );
    let events = audit(fed).await;
    assert_eq!(events.len(), before + 1, "exactly the refusal is logged");
    match &events[before].event {
        Some(Event::SubmissionRefused(r)) => {
            assert_eq!(r.code, code as i32);
            assert_eq!(r.submitting_node, node);
        }
        other => panic!("{other:?}"),
    }
    let store = &fed.broker().unwrap().store;
    assert!(!store.seen(&id).await.unwrap() && store.accepted(&id).await.unwrap().is_none());
}

/// HR/police provides an H2 record to RS/police, which passes it on to
/// BA/police with HR's permission. Returns (original, passed on).
async fn passed_on_once(fed: &Fed) -> (String, String) {
    let r0 = send(
        fed,
        "HR/police",
        &["RS/police"],
        record("intelligence_report"),
        h2(),
    )
    .await;
    settled(fed, "HR/police", &r0.envelope_id).await;
    let r1 = hop(fed, "HR/police", "RS/police", &r0.envelope_id, "BA/police").await;
    (r0.envelope_id, r1)
}

#[tokio::test]
async fn a_forwarder_cannot_grant_permission_for_the_providers_record() {
    // Observed: RS/police, which passed HR/police's record on, granted
    // BA/police permission to pass it on again, and the broker took it.
    let fed = start(&["HR", "RS", "BA"]).await;
    let (_, r1) = passed_on_once(&fed).await;
    let grant = seal_raw(
        &fed,
        "RS/police",
        "BA/police",
        grant_record(),
        h2(),
        None,
        Some(scope(&r1, "BA/police", "BA/border-police")),
    );
    refused(
        &fed,
        "RS",
        grant,
        v1::RefusalCode::Onward,
        &format!(
            "only the provider of record {r1} can grant permission to pass it on; RS/police is not"
        ),
    )
    .await;
    // Without HR's permission BA/police cannot pass it on, whoever said yes.
    let onward = seal_raw(
        &fed,
        "BA/police",
        "BA/border-police",
        record("intelligence_report"),
        provided_by("HR/police"),
        Some(r1.parse().unwrap()),
        None,
    );
    refused(
        &fed,
        "BA",
        onward,
        v1::RefusalCode::Policy,
        "h2-onward-needs-permission",
    )
    .await;
    // Nor through its own node, which knows who the provider is.
    let mut ba = fed.client("BA/police").unwrap();
    let err = ba
        .api
        .forward(v1::ForwardRequest {
            envelope_id: r1.clone(),
            recipients: vec!["BA/border-police".into()],
            labels: None,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("h2-onward-needs-permission"),
        "{}",
        err.message()
    );
    // The provider's grant still works: the broker still serves.
    hop(&fed, "HR/police", "BA/police", &r1, "BA/border-police").await;
}

#[tokio::test]
async fn permission_is_asked_of_the_provider_and_onward_headers_name_it() {
    let fed = start(&["HR", "RS", "BA", "ME"]).await;
    let (r0, r1) = passed_on_once(&fed).await;
    let r1_id: EnvelopeId = r1.parse().unwrap();

    // Asking the forwarder instead of the provider.
    let ask = seal_raw(
        &fed,
        "BA/police",
        "RS/police",
        request_record(),
        h2(),
        None,
        Some(scope(&r1, "BA/police", "BA/border-police")),
    );
    refused(
        &fed,
        "BA",
        ask,
        v1::RefusalCode::Onward,
        &format!("a permission request about {r1} goes to its provider HR/police"),
    )
    .await;
    // An onward header naming the wrong provider, or none.
    for (named, says) in [
        ("RS/police", "the header names provider \"RS/police\""),
        ("", "the header names provider \"\""),
    ] {
        let env = seal_raw(
            &fed,
            "BA/police",
            "BA/border-police",
            record("intelligence_report"),
            provided_by(named),
            Some(r1_id),
            None,
        );
        refused(
            &fed,
            "BA",
            env,
            v1::RefusalCode::Onward,
            &format!("record {r1} was provided by HR/police; {says}"),
        )
        .await;
    }
    // A record that passes nothing on names no provider.
    let env = seal_raw(
        &fed,
        "BA/police",
        "ME/police",
        record("intelligence_report"),
        provided_by("HR/police"),
        None,
        None,
    );
    refused(
        &fed,
        "BA",
        env,
        v1::RefusalCode::Onward,
        "names provider \"HR/police\" but passes no record on",
    )
    .await;
    // A record never received and an unknown one are answered alike.
    for original in [
        r0.parse::<EnvelopeId>().unwrap(),
        EnvelopeId::at(casebridge::daemon::clock::now_ms()),
    ] {
        let env = seal_raw(
            &fed,
            "ME/police",
            "ME/border-police",
            record("intelligence_report"),
            provided_by("HR/police"),
            Some(original),
            None,
        );
        refused(
            &fed,
            "ME",
            env,
            v1::RefusalCode::Onward,
            &format!("ME/police did not receive record {original}"),
        )
        .await;
    }
    // The provider grants only to an agency that received the record, and
    // a grant covers only the agencies it names.
    let grant = seal_raw(
        &fed,
        "HR/police",
        "ME/police",
        grant_record(),
        h2(),
        None,
        Some(scope(&r1, "ME/police", "ME/border-police")),
    );
    refused(
        &fed,
        "HR",
        grant,
        v1::RefusalCode::Onward,
        &format!("ME/police did not receive record {r1}"),
    )
    .await;
    let r2 = hop(&fed, "HR/police", "BA/police", &r1, "BA/border-police").await;
    let beyond = seal_raw(
        &fed,
        "BA/police",
        "BA/prosecutor",
        record("intelligence_report"),
        provided_by("HR/police"),
        Some(r1_id),
        None,
    );
    refused(
        &fed,
        "BA",
        beyond,
        v1::RefusalCode::Policy,
        "h2-onward-needs-permission",
    )
    .await;
    assert!(!r2.is_empty());
}

// ---- inclusion checks the broker cannot defeat ----

/// A record BA/police seals for RS/police as node BA would, kept for 30 days,
/// without going through BA's outbox.
fn ba_to_rs_for_a_month(fed: &Fed) -> envelope::Sealed {
    seal_with(
        fed,
        "BA/police",
        &["RS/police"],
        &record("wanted_alert"),
        police(),
        |input| input.expires_at_ms = input.created_at_ms + 30 * DAY,
    )
}

#[tokio::test]
async fn a_record_settled_by_a_duplicate_answer_gets_its_real_log_index_and_proof() {
    let fed = start(&["BA", "RS"]).await;
    let node = fed.node(cc("BA")).unwrap().clone();
    // An envelope the broker accepted but whose answer the node never saw.
    let sealed = ba_to_rs_for_a_month(&fed);
    let now = header_of(&sealed.envelope).created_at_ms;
    let first = exchange_as_node(&fed, "BA")
        .submit(v1::SubmitRequest {
            envelope: Some(sealed.envelope.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(first.log_index > 0);
    let queued = v1::SendStatus {
        envelope_id: sealed.id.to_string(),
        state: v1::SendState::Queued as i32,
        sender_agency: "BA/police".into(),
        recipients: vec!["RS/police".into()],
        created_at_ms: now,
        recipient_status: vec![v1::RecipientStatus {
            node: "RS".into(),
            agencies: vec!["RS/police".into()],
            state: v1::DeliveryState::Pending as i32,
            receipt: None,
            signed_receipt: None,
        }],
        ..Default::default()
    };
    node.store
        .enqueue(&sealed.id, &sealed.envelope, &queued)
        .await
        .unwrap();
    // The next record wakes the outbox: the retry is answered "duplicate",
    // the next one accepted.
    let later = send(
        &fed,
        "BA/police",
        &["RS/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    let retried = until("the retry settled", || async {
        let s = node.store.sent(&sealed.id).await.unwrap().unwrap();
        (s.state == v1::SendState::Accepted as i32).then_some(s)
    })
    .await;
    assert!(
        retried.detail.contains("answer was lost"),
        "{}",
        retried.detail
    );

    let size = checkpoint_now(&fed).await;
    witness::witness_once(&node, &mut exchange_as_node(&fed, "BA"))
        .await
        .unwrap();
    let s = status(&fed, "BA/police", &sealed.id.to_string()).await;
    assert_eq!(s.log_index, first.log_index, "the real index, proven");
    assert!(
        s.inclusion_verified_at >= size,
        "{}",
        s.inclusion_verified_at
    );
    let s = status(&fed, "BA/police", &later.envelope_id).await;
    assert_eq!(s.log_index, later.log_index);
    assert!(
        s.inclusion_verified_at >= size,
        "the records after it are proven too"
    );
    let evidence = node.store.evidence().await.unwrap();
    assert!(evidence.is_empty(), "{evidence:?}");
}

#[tokio::test]
async fn a_failed_inclusion_proof_is_kept_as_evidence_and_later_records_are_still_proven() {
    let mut fed = start(&["BA", "RS"]).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = send(
            &fed,
            "BA/police",
            &["RS/police"],
            record("wanted_alert"),
            police(),
        )
        .await;
        settled(&fed, "BA/police", &r.envelope_id).await;
        ids.push(r);
    }
    // The node stops; its state stays, and only this test witnesses.
    let node = fed.node(cc("BA")).unwrap().clone();
    fed.stop_node(cc("BA")).await.unwrap();
    let size = checkpoint_now(&fed).await;

    // As if the broker had answered the first submission with the index of
    // another acceptance.
    let first: EnvelopeId = ids[0].envelope_id.parse().unwrap();
    let wrong = ids[1].log_index;
    node.store
        .update_sent(
            &first,
            Box::new(move |s| {
                s.log_index = wrong;
                s.inclusion_verified_at = 0;
            }),
        )
        .await
        .unwrap();
    for r in &ids[1..] {
        node.store
            .update_sent(
                &r.envelope_id.parse().unwrap(),
                Box::new(|s| s.inclusion_verified_at = 0),
            )
            .await
            .unwrap();
    }
    // As if the broker had answered "duplicate" for an envelope it never
    // took: settled accepted, index unknown.
    let never = ba_to_rs_for_a_month(&fed);
    let status = v1::SendStatus {
        envelope_id: never.id.to_string(),
        state: v1::SendState::Queued as i32,
        sender_agency: "BA/police".into(),
        ..Default::default()
    };
    node.store
        .enqueue(&never.id, &never.envelope, &status)
        .await
        .unwrap();
    node.store
        .settle_accepted(
            &never.id,
            &envelope::unverified_summary(&never.envelope).unwrap(),
            Box::new(|s| s.state = v1::SendState::Accepted as i32),
        )
        .await
        .unwrap();

    let mut client = exchange_as_node(&fed, "BA");
    let w = witness::witness_once(&node, &mut client).await.unwrap();
    assert!(w.size >= size);
    assert_eq!(w.inclusions_failed, 2);
    assert_eq!(w.inclusions_verified, 2, "the records after a failure");
    for r in &ids[1..] {
        let s = node
            .store
            .sent(&r.envelope_id.parse().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.inclusion_verified_at, w.size);
        assert_eq!(s.log_index, r.log_index);
    }
    let evidence = node.store.evidence().await.unwrap();
    assert_eq!(evidence.len(), 2, "{evidence:#?}");
    let of = |id: &EnvelopeId| {
        evidence
            .iter()
            .find(|e| e.starts_with(&format!("inclusion of {id} not proven")))
            .unwrap_or_else(|| panic!("no evidence for {id}: {evidence:#?}"))
            .clone()
    };
    let e = of(&first);
    assert!(
        e.contains(&format!(
            "the broker answered the submission with log index {wrong} but proves entry {}",
            ids[0].log_index
        )),
        "{e}"
    );
    assert!(
        e.contains("--- the broker's answer ---") && e.contains("leaf "),
        "{e}"
    );
    let e = of(&never.id);
    assert!(e.contains("the broker denies having accepted it"), "{e}");
    assert!(
        e.contains("status 5 (Some requested entity was not found)"),
        "{e}"
    );

    // Failed checks are evidence, not retried every round; nothing is left.
    let w = witness::witness_once(&node, &mut client).await.unwrap();
    assert_eq!((w.inclusions_verified, w.inclusions_failed), (0, 0));
    assert_eq!(node.store.evidence().await.unwrap().len(), 2);
}

#[tokio::test]
async fn a_receipt_with_an_unbounded_reason_is_refused_before_it_reaches_the_log() {
    let mut fed = start(&["BA", "RS"]).await;
    fed.stop_node(cc("RS")).await.unwrap();
    send(
        &fed,
        "BA/police",
        &["RS/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    let (seq, env) = first_queued(&fed, "RS").await;
    let before = audit(&fed).await.len();
    let mut rs = exchange_as_node(&fed, "RS");
    let mut body = v1::ReceiptBody::decode(
        receipt(&fed, "RS", &env, v1::ReceiptStatus::Rejected, &[])
            .body
            .as_slice(),
    )
    .unwrap();
    body.reason = "x".repeat(1 << 20);
    let err = rs
        .acknowledge(v1::AcknowledgeRequest {
            seq,
            receipt: Some(sign_receipt_as(&fed, "RS", &body)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("the limit is 65536"),
        "{}",
        err.message()
    );
    assert!(err.message().len() < 300, "the message quotes no input");
    assert_eq!(audit(&fed).await.len(), before, "no audit event");
    assert!(
        fed.broker()
            .unwrap()
            .store
            .queued(cc("RS"), seq)
            .await
            .unwrap()
            .is_some(),
        "the envelope stays queued"
    );
    // A reason within its limit but a body over it is refused as well; an
    // honest receipt is still taken.
    body.reason = "y".repeat(bounds::MAX_REASON + 1);
    let err = rs
        .acknowledge(v1::AcknowledgeRequest {
            seq,
            receipt: Some(sign_receipt_as(&fed, "RS", &body)),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("receipt reason"),
        "{}",
        err.message()
    );
    let ok = rs
        .acknowledge(v1::AcknowledgeRequest {
            seq,
            receipt: Some(receipt(
                &fed,
                "RS",
                &env,
                v1::ReceiptStatus::Delivered,
                &["RS/police"],
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.log_index as usize, before);
}

/// Every byte under `dir`, file by file.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn holds(files: &[(std::path::PathBuf, Vec<u8>)], needle: &str) -> bool {
    files
        .iter()
        .any(|(_, b)| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// The broker's operator reads every byte the broker stores: the header
/// (including the case reference, which the search must find, or it proves
/// nothing) but never the record, even while it sits queued.
#[tokio::test]
async fn the_broker_stores_no_record_content_only_headers() {
    let mut fed = start(&["BA", "RS"]).await;
    fed.stop_node(cc("RS")).await.unwrap();
    let secret = format!(
        "secret-offence-{}",
        EnvelopeId::at(casebridge::daemon::clock::now_ms())
    );
    let control = format!(
        "CASE-{}",
        &EnvelopeId::at(casebridge::daemon::clock::now_ms()).to_string()[..8]
    );
    let mut rec = record("wanted_alert");
    match rec.body.as_mut() {
        Some(v1::case_record::Body::WantedAlert(w)) => w.offence.clone_from(&secret),
        other => panic!("{other:?}"),
    }
    let mut labels = police();
    labels.case_reference.clone_from(&control);
    let sent = send(&fed, "BA/police", &["RS/police"], rec, labels).await;
    assert!(sent.log_index > 0);
    let data_dir = fed.broker_config.data_dir.clone();
    // Queued, not yet delivered: the ciphertext is in the broker's store.
    assert!(first_queued(&fed, "RS").await.1.ciphertext.len() > secret.len());
    fed.stop_broker().await.unwrap();
    let files = files_under(&data_dir);
    assert!(holds(&files, &control), "the search finds header labels");
    assert!(
        !holds(&files, &secret),
        "the broker holds no record content"
    );

    // The recipient opens it.
    fed.start_broker().await.unwrap();
    fed.start_node(cc("RS")).await.unwrap();
    let entry = until("delivered", || {
        let fed = &fed;
        async move {
            let mut c = fed.client("RS/police").unwrap();
            let inbox = c
                .api
                .list_inbox(v1::ListInboxRequest::default())
                .await
                .ok()?
                .into_inner();
            inbox.entries.into_iter().next()
        }
    })
    .await;
    assert_eq!(entry.envelope_id, sent.envelope_id);
    // The same search does find the content where it is meant to be: in
    // the receiving node's store, which files the opened record.
    let rs_dir = fed.node_configs[&cc("RS")].data_dir.clone();
    fed.stop_node(cc("RS")).await.unwrap();
    assert!(holds(&files_under(&rs_dir), &secret));
}

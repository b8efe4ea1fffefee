//! Adversarial cases: the Exchange API against a node that asks about
//! exchanges it is not party to; and the node's inclusion checks against a
//! broker that answers "duplicate", lies about an index or denies an
//! acceptance.

use casebridge::envelope::{self, SealInput};
use casebridge::ids::{AgencyId, EnvelopeId};
use casebridge::node::witness;
use casebridge::proto::v1;
use prost::Message as _;
use tonic::Code;
use v1::audit_event::Event;

use crate::support::*;

const DAY: i64 = 86_400_000;

fn police() -> v1::Labels {
    labels(
        v1::Purpose::InvestigationOther,
        v1::LegalBasis::RegionalPoliceConvention,
        v1::HandlingCode::H0,
    )
}

async fn checkpoint_now(fed: &Fed) -> u64 {
    let b = fed.broker().unwrap();
    b.log.checkpoint(b.store.as_ref()).await.unwrap();
    b.store.latest_checkpoint().unwrap().unwrap().0
}

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
    let unknown = EnvelopeId::generate();
    let before = audit(&fed).len();
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
    assert_eq!(audit(&fed).len(), before, "asking changes nothing");

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

// ---- inclusion checks the broker cannot defeat ----

#[tokio::test]
async fn a_record_settled_by_a_duplicate_answer_gets_its_real_log_index_and_proof() {
    let fed = start(&["BA", "RS"]).await;
    let node = fed.node(cc("BA")).unwrap().clone();
    // An envelope the broker accepted but whose answer the node never saw.
    let sender: AgencyId = "BA/police".parse().unwrap();
    let recipients = ["RS/police".parse().unwrap()];
    let rec = record("wanted_alert");
    let now = casebridge::time::now_ms();
    let sealed = envelope::seal(
        &SealInput {
            sender: &sender,
            recipients: &recipients,
            record: &rec,
            labels: police(),
            created_at_ms: now,
            expires_at_ms: now + 30 * DAY,
            onward_of: None,
            permission: None,
        },
        &node_signing_key(&fed, "BA"),
        &directory(&fed),
    )
    .unwrap();
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
    let retried = until("the retry settled", || {
        let s = node.store.sent(&sealed.id).unwrap().unwrap();
        async move { (s.state == v1::SendState::Accepted as i32).then_some(s) }
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
    assert!(node.store.evidence().unwrap().is_empty());
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
        .update_sent(&first, |s| {
            s.log_index = wrong;
            s.inclusion_verified_at = 0;
        })
        .await
        .unwrap();
    for r in &ids[1..] {
        node.store
            .update_sent(&r.envelope_id.parse().unwrap(), |s| {
                s.inclusion_verified_at = 0
            })
            .await
            .unwrap();
    }
    // As if the broker had answered "duplicate" for an envelope it never
    // took: settled accepted, index unknown.
    let sender: AgencyId = "BA/police".parse().unwrap();
    let recipients = ["RS/police".parse().unwrap()];
    let rec = record("wanted_alert");
    let now = casebridge::time::now_ms();
    let never = envelope::seal(
        &SealInput {
            sender: &sender,
            recipients: &recipients,
            record: &rec,
            labels: police(),
            created_at_ms: now,
            expires_at_ms: now + 30 * DAY,
            onward_of: None,
            permission: None,
        },
        &node_signing_key(&fed, "BA"),
        &directory(&fed),
    )
    .unwrap();
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
            |s| s.state = v1::SendState::Accepted as i32,
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
            .unwrap()
            .unwrap();
        assert_eq!(s.inclusion_verified_at, w.size);
        assert_eq!(s.log_index, r.log_index);
    }
    let evidence = node.store.evidence().unwrap();
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
    assert!(e.contains("status NotFound"), "{e}");

    // Failed checks are evidence, not retried every round; nothing is left.
    let w = witness::witness_once(&node, &mut client).await.unwrap();
    assert_eq!((w.inclusions_verified, w.inclusions_failed), (0, 0));
    assert_eq!(node.store.evidence().unwrap().len(), 2);
}

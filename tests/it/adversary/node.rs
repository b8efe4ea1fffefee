//! Adversarial cases: a hostile broker against real nodes.
//!
//! The broker holds its real certificate and key (see [`hostile_broker`]) but
//! not a node's signing key: it can forge, replay, reorder and withhold
//! deliveries and relay receipts that answer something else. A node files a
//! record exactly once, keyed by what it verified, answers every delivery
//! that fails for good with a signed rejection without stalling the rest,
//! and applies a relayed receipt only when it answers the header the node
//! sent, from a node that was a recipient; anything else is kept as
//! evidence.

pub(crate) mod hostile_broker;
mod windows;

use casebridge::protocol::categories::CategorySet;
use casebridge::protocol::envelope::{self, SealInput};
use casebridge::protocol::ids::{AgencyId, EnvelopeId};
use casebridge::protocol::keys::SigningKey;
use casebridge::protocol::proto::v1;
use prost::Message as _;

use super::harness::{header_of, log_key, receipt_for, seal_as, sign_receipt_as};
use crate::support::*;
use hostile_broker::HostileBroker;

const DAY: i64 = 86_400_000;

/// An envelope sealed and signed with node BA's real key, from BA/police.
fn sealed_by_ba(
    fed: &Fed,
    to: &[&str],
    record: &v1::CaseRecord,
    declared: Option<CategorySet>,
    created: i64,
    expires: i64,
) -> envelope::Sealed {
    let sender: AgencyId = "BA/police".parse().unwrap();
    let recipients: Vec<AgencyId> = to.iter().map(|a| a.parse().unwrap()).collect();
    let input = SealInput {
        sender: &sender,
        recipients: &recipients,
        record,
        labels: police(),
        created_at_ms: created,
        expires_at_ms: expires,
        onward_of: None,
        permission: None,
    };
    let key = node_signing_key(fed, "BA");
    match declared {
        Some(d) => envelope::seal_declaring(&input, d, &key, &directory(fed)),
        None => envelope::seal(&input, &key, &directory(fed)),
    }
    .unwrap()
}

/// An honest envelope from BA/police, sealed now by node BA.
fn fresh_for(fed: &Fed, to: &[&str], record: &v1::CaseRecord) -> envelope::Sealed {
    seal_as(fed, "BA/police", to, record, police())
}

/// `header` signed by `key` over `ciphertext`.
fn signed_with(header: &v1::EnvelopeHeader, key: &SigningKey, ciphertext: &[u8]) -> v1::Envelope {
    let header = header.encode_to_vec();
    v1::Envelope {
        signature: envelope::sign_header(&header, key),
        header,
        ciphertext: ciphertext.to_vec(),
    }
}

/// The receipt in an acknowledgement, checked against the signing key of
/// the node it names.
fn receipt_in(fed: &Fed, ack: &v1::AcknowledgeRequest) -> v1::ReceiptBody {
    envelope::verify_receipt(
        ack.receipt.as_ref().expect("a receipt"),
        &directory(fed),
        casebridge::daemon::clock::now_ms(),
    )
    .expect("signed by the node it names")
}

fn sha(bytes: &[u8]) -> Vec<u8> {
    envelope::sha256(bytes).to_vec()
}

/// A federation of BA, HR and RS with nothing running but `behind`, whose
/// nodes dial the hostile broker.
async fn behind_hostile_broker(behind: &[&str]) -> (Fed, HostileBroker) {
    let mut fed = create(&["BA", "HR", "RS"]).await;
    let hb = HostileBroker::start(&fed).await;
    for c in behind {
        hb.start_node(&mut fed, cc(c)).await;
    }
    (fed, hb)
}

#[tokio::test]
async fn a_forged_envelope_reusing_a_real_id_changes_nothing_for_the_real_one() {
    let (fed, hb) = behind_hostile_broker(&["HR"]).await;
    let hr = cc("HR");
    let rec = record("wanted_alert");
    let real = fresh_for(&fed, &["HR/police"], &rec);

    // Another header under the real id, signed by the broker's own key.
    let mut h = header_of(&real.envelope);
    h.labels.as_mut().unwrap().case_reference = "FORGED-BY-BROKER".into();
    let forged = signed_with(&h, &log_key(&fed), &real.envelope.ciphertext);
    // The real header bytes under a signature that is not BA's.
    let mut unsigned = real.envelope.clone();
    unsigned.signature[0] ^= 1;

    let s1 = hb.deliver_envelope(hr, forged.clone());
    let s2 = hb.deliver_envelope(hr, unsigned);
    let s3 = hb.deliver_envelope(hr, real.envelope.clone());
    // Replayed: the same envelope again.
    let s4 = hb.deliver_envelope(hr, real.envelope.clone());
    let acks = [
        hb.wait_ack(hr, s1).await,
        hb.wait_ack(hr, s2).await,
        hb.wait_ack(hr, s3).await,
        hb.wait_ack(hr, s4).await,
    ];

    let forged_answer = receipt_in(&fed, &acks[0]);
    assert_eq!(forged_answer.status(), v1::ReceiptStatus::Rejected);
    assert_eq!(forged_answer.code(), v1::RejectionCode::BadSignature);
    assert!(forged_answer.reason.contains("signature does not verify"));
    assert_eq!(forged_answer.header_sha256, sha(&forged.header));
    let unsigned_answer = receipt_in(&fed, &acks[1]);
    assert_eq!(unsigned_answer.status(), v1::ReceiptStatus::Rejected);
    assert_eq!(unsigned_answer.code(), v1::RejectionCode::BadSignature);

    let delivered = receipt_in(&fed, &acks[2]);
    assert_eq!(delivered.status(), v1::ReceiptStatus::Delivered);
    assert_eq!(delivered.envelope_id, real.id.as_bytes().to_vec());
    assert_eq!(delivered.header_sha256, sha(&real.envelope.header));
    assert_eq!(delivered.delivered_to, ["HR/police"]);
    assert_eq!(
        acks[3].receipt, acks[2].receipt,
        "a replay gets the same receipt"
    );

    // Exactly once, with the real content and the real labels.
    let inbox = inbox(&fed, "HR/police").await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(inbox[0].envelope_id, real.id.to_string());
    let got = fetch(&fed, "HR/police", &real.id.to_string())
        .await
        .unwrap();
    assert_eq!(got.record, Some(rec));
    assert_eq!(
        got.entry.unwrap().labels.unwrap().case_reference,
        "TEST-CASE-1"
    );
    // What the node remembers for the id is its answer to the real header.
    let kept = fed
        .node(hr)
        .unwrap()
        .store
        .receipt_for(&real.id)
        .await
        .unwrap();
    assert_eq!(kept, acks[2].receipt);
    assert!(hb.queued(hr).is_empty());
}

#[tokio::test]
async fn a_delivery_that_fails_for_good_is_rejected_and_never_blocks_the_queue() {
    let (fed, hb) = behind_hostile_broker(&["HR"]).await;
    let hr = cc("HR");
    let rec = record("wanted_alert");
    let now = casebridge::daemon::clock::now_ms();
    let ba_key = node_signing_key(&fed, "BA");

    let garbage = v1::Envelope {
        header: b"\xff\xff not a header".to_vec(),
        signature: vec![0; 64],
        ciphertext: Vec::new(),
    };
    let expired = sealed_by_ba(&fed, &["HR/police"], &rec, None, now - 2 * DAY, now - DAY);
    let not_for_hr = fresh_for(&fed, &["RS/police"], &rec);
    let undeclared = sealed_by_ba(
        &fed,
        &["HR/police"],
        &rec,
        Some(CategorySet::new()),
        now,
        now + DAY,
    );
    // BA's own signature over a key wrapped for HR that does not open.
    let sealed = fresh_for(&fed, &["HR/police"], &rec);
    let mut h = header_of(&sealed.envelope);
    let last = h.wrapped_keys[0].sealed_key.len() - 1;
    h.wrapped_keys[0].sealed_key[last] ^= 1;
    let undecryptable = signed_with(&h, &ba_key, &sealed.envelope.ciphertext);
    let good = fresh_for(&fed, &["HR/police"], &rec);

    let poisons = [
        (
            garbage,
            v1::RejectionCode::InvalidHeader,
            "not a valid EnvelopeHeader",
        ),
        (expired.envelope, v1::RejectionCode::Expired, "expired"),
        (
            not_for_hr.envelope,
            v1::RejectionCode::NotARecipient,
            "node HR is not a recipient",
        ),
        (
            undeclared.envelope.clone(),
            v1::RejectionCode::UndeclaredCategories,
            "undeclared data categories",
        ),
        (
            undecryptable,
            v1::RejectionCode::Undecryptable,
            "cannot unwrap",
        ),
    ];
    let mut seqs = Vec::new();
    for (env, _, _) in &poisons {
        seqs.push(hb.deliver_envelope(hr, env.clone()));
    }
    // A delivery that carries nothing is skipped, not answered.
    let empty = hb.deliver_raw(hr, None);
    let good_seq = hb.deliver_envelope(hr, good.envelope.clone());
    // The rejection of a verified header is an answer like a delivery: the
    // same bytes get the same one.
    let again = hb.deliver_envelope(hr, undeclared.envelope.clone());

    for ((env, code, says), seq) in poisons.iter().zip(&seqs) {
        let ack = hb.wait_ack(hr, *seq).await;
        let body = receipt_in(&fed, &ack);
        assert_eq!(body.status(), v1::ReceiptStatus::Rejected, "{says}");
        assert_eq!(body.code(), *code, "{says}: {}", body.reason);
        assert!(body.reason.contains(says), "{says}: {}", body.reason);
        assert_eq!(body.header_sha256, sha(&env.header));
        assert_eq!(body.recipient_node, "HR");
        assert!(body.delivered_to.is_empty());
    }
    let good_ack = hb.wait_ack(hr, good_seq).await;
    assert_eq!(
        receipt_in(&fed, &good_ack).status(),
        v1::ReceiptStatus::Delivered
    );
    let again_ack = hb.wait_ack(hr, again).await;
    assert_eq!(again_ack.receipt, hb.wait_ack(hr, seqs[3]).await.receipt);

    let inbox = inbox(&fed, "HR/police").await;
    assert_eq!(
        inbox
            .iter()
            .map(|e| e.envelope_id.as_str())
            .collect::<Vec<_>>(),
        [good.id.to_string()]
    );
    assert_eq!(hb.queued(hr), [empty], "only the empty delivery is left");
    // Nothing of the unverified ones is remembered under the ids they claim.
    let store = &fed.node(hr).unwrap().store;
    assert_eq!(store.receipt_for(&expired.id).await.unwrap(), None);
    assert_eq!(store.receipt_for(&not_for_hr.id).await.unwrap(), None);
}

#[tokio::test]
async fn a_second_header_under_an_answered_id_is_rejected_and_the_first_stands() {
    let (fed, hb) = behind_hostile_broker(&["HR"]).await;
    let hr = cc("HR");
    let first_record = record("wanted_alert");
    let first = fresh_for(&fed, &["HR/police"], &first_record);
    let s1 = hb.deliver_envelope(hr, first.envelope.clone());
    assert_eq!(
        receipt_in(&fed, &hb.wait_ack(hr, s1).await).status(),
        v1::ReceiptStatus::Delivered
    );

    // A sending node that signs a second header under the same id, and a
    // broker that passes it on.
    let other = fresh_for(&fed, &["HR/police"], &record("wanted_alert"));
    let mut h = header_of(&other.envelope);
    h.envelope_id = first.id.as_bytes().to_vec();
    h.labels.as_mut().unwrap().case_reference = "SECOND-HEADER".into();
    let second = signed_with(
        &h,
        &node_signing_key(&fed, "BA"),
        &other.envelope.ciphertext,
    );
    let s2 = hb.deliver_envelope(hr, second.clone());
    let body = receipt_in(&fed, &hb.wait_ack(hr, s2).await);
    assert_eq!(body.status(), v1::ReceiptStatus::Rejected);
    assert_eq!(body.code(), v1::RejectionCode::InvalidHeader);
    assert!(
        body.reason.contains("already answered for another header"),
        "{}",
        body.reason
    );
    assert_eq!(body.header_sha256, sha(&second.header));

    let inbox = inbox(&fed, "HR/police").await;
    assert_eq!(inbox.len(), 1);
    assert_eq!(
        inbox[0].labels.as_ref().unwrap().case_reference,
        "TEST-CASE-1"
    );
    let got = fetch(&fed, "HR/police", &first.id.to_string())
        .await
        .unwrap();
    assert_eq!(got.record, Some(first_record));

    // And the node still files what comes next.
    let next = fresh_for(&fed, &["HR/police"], &record("wanted_alert"));
    let s3 = hb.deliver_envelope(hr, next.envelope);
    assert_eq!(
        receipt_in(&fed, &hb.wait_ack(hr, s3).await).status(),
        v1::ReceiptStatus::Delivered
    );
    assert_eq!(inbox_len(&fed, "HR/police").await, 2);
}

#[tokio::test]
async fn a_delivery_whose_answer_the_broker_refuses_does_not_block_the_queue() {
    let (fed, hb) = behind_hostile_broker(&["HR"]).await;
    let hr = cc("HR");
    let rec = record("wanted_alert");
    let first = fresh_for(&fed, &["HR/police"], &rec);
    let second = fresh_for(&fed, &["HR/police"], &rec);
    let refused_id = first.id.as_bytes().to_vec();
    hb.refuse_acks(move |_, ack| {
        let body = v1::ReceiptBody::decode(ack.receipt.as_ref()?.body.as_slice()).ok()?;
        (body.envelope_id == refused_id)
            .then(|| tonic::Status::invalid_argument("receipt does not answer envelope"))
    });
    let s1 = hb.deliver_envelope(hr, first.envelope);
    let s2 = hb.deliver_envelope(hr, second.envelope);

    let acked = hb.wait_ack(hr, s2).await;
    assert_eq!(
        receipt_in(&fed, &acked).status(),
        v1::ReceiptStatus::Delivered
    );
    assert_eq!(
        hb.queued(hr),
        [s1],
        "the refused one stays queued at the broker"
    );
    // Both are filed: the node's answer stands whatever the broker made of it.
    assert_eq!(inbox_len(&fed, "HR/police").await, 2);
}

async fn inbox_len(fed: &Fed, agency: &str) -> usize {
    inbox(fed, agency).await.len()
}

/// BA/police has sent one record to HR/police through the hostile broker,
/// which accepted it; the record waits for HR's receipt.
struct Sent {
    id: EnvelopeId,
    envelope: v1::Envelope,
}

async fn ba_sends_to_hr(fed: &Fed, hb: &HostileBroker) -> Sent {
    let resp = send(
        fed,
        "BA/police",
        &["HR/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    assert_accepted(&resp);
    let envelope = hb.wait_submits(cc("BA"), 1).await.remove(0);
    Sent {
        id: resp.envelope_id.parse().unwrap(),
        envelope,
    }
}

/// The receipt HR would give for the record BA sent.
fn honest_body(sent: &Sent) -> v1::ReceiptBody {
    receipt_for(
        &sent.envelope,
        "HR",
        v1::ReceiptStatus::Delivered,
        &["HR/police"],
    )
}

/// HR's state in BA/police's view of the record.
async fn hr_state(fed: &Fed, sent: &Sent) -> (v1::DeliveryState, Option<v1::SignedReceipt>) {
    let s = status(fed, "BA/police", &sent.id.to_string()).await;
    let rs = s
        .recipient_status
        .into_iter()
        .find(|r| r.node == "HR")
        .expect("HR is a recipient");
    (rs.state(), rs.signed_receipt)
}

/// Relays `r` to BA and checks that BA acknowledged it, applied nothing and
/// kept it as evidence saying `says`.
async fn assert_receipt_refused(
    fed: &Fed,
    hb: &HostileBroker,
    sent: &Sent,
    r: v1::SignedReceipt,
    says: &str,
) {
    let ba = cc("BA");
    let before_state = hr_state(fed, sent).await;
    let before = fed.node(ba).unwrap().store.evidence().await.unwrap();
    let seq = hb.relay_receipt(ba, r.clone());
    let ack = hb.wait_ack(ba, seq).await;
    assert_eq!(ack.receipt, None);
    assert_eq!(
        hr_state(fed, sent).await,
        before_state,
        "{says}: not applied"
    );
    let after = fed.node(ba).unwrap().store.evidence().await.unwrap();
    assert_eq!(after.len(), before.len() + 1, "{says}: kept as evidence");
    let kept = after.last().unwrap();
    assert!(kept.starts_with("relayed receipt refused: "), "{kept}");
    assert!(kept.contains(says), "{says}: {kept}");
    assert!(
        kept.contains(&hex::encode(&r.body)),
        "the receipt itself is kept"
    );
}

/// The honest receipt still applies after the refusals: the node serves on.
async fn assert_honest_receipt_applies(
    fed: &Fed,
    hb: &HostileBroker,
    sent: &Sent,
    r: v1::SignedReceipt,
) {
    let seq = hb.relay_receipt(cc("BA"), r.clone());
    hb.wait_ack(cc("BA"), seq).await;
    assert_eq!(
        hr_state(fed, sent).await,
        (v1::DeliveryState::Delivered, Some(r))
    );
}

#[tokio::test]
async fn a_relayed_receipt_for_another_header_is_refused_and_kept_as_evidence() {
    let (fed, hb) = behind_hostile_broker(&["BA", "HR"]).await;
    let sent = ba_sends_to_hr(&fed, &hb).await;
    assert_eq!(hr_state(&fed, &sent).await.0, v1::DeliveryState::Pending);

    // The broker gets HR to sign a rejection of a forged header under the
    // real id, and relays it to BA as the answer to BA's record.
    let mut h = header_of(&sent.envelope);
    h.labels.as_mut().unwrap().case_reference = "FORGED-BY-BROKER".into();
    let forged = signed_with(&h, &log_key(&fed), &sent.envelope.ciphertext);
    let seq = hb.deliver_envelope(cc("HR"), forged);
    let hr_signed = hb.wait_ack(cc("HR"), seq).await.receipt.unwrap();
    let hr_body = envelope::verify_receipt(
        &hr_signed,
        &directory(&fed),
        casebridge::daemon::clock::now_ms(),
    )
    .unwrap();
    assert_eq!(hr_body.envelope_id, sent.id.as_bytes().to_vec());
    assert_eq!(hr_body.code(), v1::RejectionCode::BadSignature);
    assert_receipt_refused(&fed, &hb, &sent, hr_signed, "not the header this node sent").await;

    // A delivery receipt HR signed for other bytes is refused alike.
    let mut body = honest_body(&sent);
    body.header_sha256 = vec![0; 32];
    assert_receipt_refused(
        &fed,
        &hb,
        &sent,
        sign_receipt_as(&fed, "HR", &body),
        "not the header this node sent",
    )
    .await;

    // The real envelope reaches HR; HR's receipt for it applies.
    let seq = hb.deliver_envelope(cc("HR"), sent.envelope.clone());
    let real = hb.wait_ack(cc("HR"), seq).await.receipt.unwrap();
    assert_honest_receipt_applies(&fed, &hb, &sent, real).await;
}

#[tokio::test]
async fn a_relayed_receipt_from_a_node_that_was_no_recipient_is_refused() {
    let (fed, hb) = behind_hostile_broker(&["BA"]).await;
    let sent = ba_sends_to_hr(&fed, &hb).await;

    let mut body = honest_body(&sent);
    body.recipient_node = "RS".into();
    body.delivered_to = vec!["RS/police".into()];
    assert_receipt_refused(
        &fed,
        &hb,
        &sent,
        sign_receipt_as(&fed, "RS", &body),
        "signed by node RS, which serves no recipient",
    )
    .await;

    // A receipt for an envelope BA never sent.
    let mut body = honest_body(&sent);
    body.envelope_id = EnvelopeId::at(casebridge::daemon::clock::now_ms())
        .as_bytes()
        .to_vec();
    assert_receipt_refused(
        &fed,
        &hb,
        &sent,
        sign_receipt_as(&fed, "HR", &body),
        "which this node did not send",
    )
    .await;

    assert_honest_receipt_applies(
        &fed,
        &hb,
        &sent,
        sign_receipt_as(&fed, "HR", &honest_body(&sent)),
    )
    .await;
}

#[tokio::test]
async fn an_unsigned_or_missigned_relayed_receipt_is_refused() {
    let (fed, hb) = behind_hostile_broker(&["BA"]).await;
    let sent = ba_sends_to_hr(&fed, &hb).await;
    let honest = sign_receipt_as(&fed, "HR", &honest_body(&sent));

    let unsigned = v1::SignedReceipt {
        body: honest.body.clone(),
        signature: Vec::new(),
    };
    assert_receipt_refused(
        &fed,
        &hb,
        &sent,
        unsigned,
        "does not verify: receipt signature does not verify with node HR's signing key",
    )
    .await;
    // Signed, but by RS, for a body that names HR.
    let by_rs = v1::SignedReceipt {
        body: honest.body.clone(),
        signature: sign_receipt_as(&fed, "RS", &honest_body(&sent)).signature,
    };
    assert_receipt_refused(&fed, &hb, &sent, by_rs, "does not verify").await;
    let garbage = v1::SignedReceipt {
        body: b"\xff\xff not a receipt".to_vec(),
        signature: vec![0; 64],
    };
    assert_receipt_refused(
        &fed,
        &hb,
        &sent,
        garbage,
        "does not verify: receipt body is not a valid ReceiptBody",
    )
    .await;

    assert_honest_receipt_applies(&fed, &hb, &sent, honest).await;
}

#[tokio::test]
async fn a_relayed_receipt_naming_an_agency_that_was_no_recipient_is_refused() {
    let (fed, hb) = behind_hostile_broker(&["BA"]).await;
    let sent = ba_sends_to_hr(&fed, &hb).await;

    let mut body = honest_body(&sent);
    body.delivered_to.push("HR/border-police".into());
    assert_receipt_refused(
        &fed,
        &hb,
        &sent,
        sign_receipt_as(&fed, "HR", &body),
        "names HR/border-police, which is not a recipient",
    )
    .await;
    let mut body = honest_body(&sent);
    body.status = v1::ReceiptStatus::Unspecified as i32;
    assert_receipt_refused(
        &fed,
        &hb,
        &sent,
        sign_receipt_as(&fed, "HR", &body),
        "no status",
    )
    .await;

    assert_honest_receipt_applies(
        &fed,
        &hb,
        &sent,
        sign_receipt_as(&fed, "HR", &honest_body(&sent)),
    )
    .await;
}

#[tokio::test]
async fn a_rejection_never_overrides_a_receipted_delivery() {
    let (fed, hb) = behind_hostile_broker(&["BA", "HR"]).await;
    let sent = ba_sends_to_hr(&fed, &hb).await;
    let hr = cc("HR");

    // The broker first hands HR the real header under a broken signature
    // (HR signs a rejection of exactly BA's header), then the real envelope.
    let mut broken = sent.envelope.clone();
    broken.signature[0] ^= 1;
    let s1 = hb.deliver_envelope(hr, broken);
    let s2 = hb.deliver_envelope(hr, sent.envelope.clone());
    let rejection = hb.wait_ack(hr, s1).await.receipt.unwrap();
    let delivery = hb.wait_ack(hr, s2).await.receipt.unwrap();
    assert_eq!(
        envelope::verify_receipt(
            &rejection,
            &directory(&fed),
            casebridge::daemon::clock::now_ms()
        )
        .unwrap()
        .header_sha256,
        sha(&sent.envelope.header),
        "HR rejected BA's very header"
    );

    assert_honest_receipt_applies(&fed, &hb, &sent, delivery).await;
    assert_receipt_refused(
        &fed,
        &hb,
        &sent,
        rejection,
        "node HR already receipted the delivery",
    )
    .await;
    assert_eq!(inbox_len(&fed, "HR/police").await, 1);
}

/// A broker that pairs one envelope's signed header with another's
/// ciphertext, and delivers out of order and more than once: the swapped
/// pair is refused (the header binds its ciphertext) and never filed, and each real record
/// is filed once, with its own content, whatever the order.
#[tokio::test]
async fn swapped_ciphertexts_are_refused_and_reordered_replays_file_each_record_once() {
    let (fed, hb) = behind_hostile_broker(&["HR"]).await;
    let hr = cc("HR");
    let first_rec = record("wanted_alert");
    let second_rec = record("intelligence_report");
    let first = fresh_for(&fed, &["HR/police"], &first_rec);
    let second = fresh_for(&fed, &["HR/police"], &second_rec);
    let mut swapped = first.envelope.clone();
    swapped.ciphertext.clone_from(&second.envelope.ciphertext);

    let s0 = hb.deliver_envelope(hr, swapped.clone());
    let s1 = hb.deliver_envelope(hr, second.envelope.clone());
    let s2 = hb.deliver_envelope(hr, first.envelope.clone());
    let s3 = hb.deliver_envelope(hr, second.envelope.clone());
    let s4 = hb.deliver_envelope(hr, swapped);
    let acks = [
        hb.wait_ack(hr, s0).await,
        hb.wait_ack(hr, s1).await,
        hb.wait_ack(hr, s2).await,
        hb.wait_ack(hr, s3).await,
        hb.wait_ack(hr, s4).await,
    ];
    let r = receipt_in(&fed, &acks[0]);
    assert_eq!(r.status(), v1::ReceiptStatus::Rejected, "{r:?}");
    assert!(r.delivered_to.is_empty());
    // Once the real pair was filed, the same header bytes get the answer
    // already given to them, which speaks of the ciphertext the header
    // binds; the swapped one is neither opened nor filed.
    assert_eq!(acks[4].receipt, acks[2].receipt);
    for i in [1, 2, 3] {
        let r = receipt_in(&fed, &acks[i]);
        assert_eq!(r.status(), v1::ReceiptStatus::Delivered, "{r:?}");
    }
    assert_eq!(
        acks[3].receipt, acks[1].receipt,
        "a replay gets the same receipt"
    );

    let inbox = inbox(&fed, "HR/police").await;
    assert_eq!(inbox.len(), 2, "each record once");
    for (sealed, rec) in [(&first, &first_rec), (&second, &second_rec)] {
        let got = fetch(&fed, "HR/police", &sealed.id.to_string())
            .await
            .unwrap();
        assert_eq!(got.record.as_ref(), Some(rec));
    }
    assert!(hb.queued(hr).is_empty(), "nothing blocks the queue");
}

//! Adversarial cases: envelopes and the inputs they are made from.
//!
//! A hostile sending node uses its own real keys and certificate from the
//! federation's pki directory to craft envelopes the library would never
//! seal; a hostile agency system sends requests no honest client would.
//! Each case asserts the exact refusal, that nothing changed but the
//! refusal's audit event where one is promised, and that the federation
//! still serves honest parties afterwards.

use std::collections::BTreeMap;

use casebridge::protocol::directory::Directory;
use casebridge::protocol::envelope;
use casebridge::protocol::ids::{Country, EnvelopeId};
use casebridge::protocol::proto::v1;
use casebridge::storage::broker::MailItem;
use hpke::Serializable as _;
use prost::Message as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};
use tonic::Code;
use v1::RefusalCode as R;
use v1::audit_event::Event;

use super::harness::{self, still_serves};
use crate::support::*;

const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------
// What a hostile node does with its own keys

/// An honest-looking envelope from HR/police to BA/police, sealed by HR.
fn fresh(fed: &Fed) -> v1::Envelope {
    harness::seal_as(
        fed,
        "HR/police",
        &["BA/police"],
        &record("wanted_alert"),
        police_to_third_country(),
    )
    .envelope
}

/// Lets `edit` change the header, then signs it with `node`'s real key: the
/// header is then exactly what that node signed.
fn resign(
    fed: &Fed,
    node: &str,
    env: &mut v1::Envelope,
    edit: impl FnOnce(&mut v1::EnvelopeHeader),
) {
    *env = harness::resign(env, &node_signing_key(fed, node), edit);
}

/// Replaces the ciphertext and binds its hash into the header, signed by
/// `node`.
fn replace_ciphertext(fed: &Fed, node: &str, env: &mut v1::Envelope, ciphertext: Vec<u8>) {
    let hash = envelope::sha256(&ciphertext).to_vec();
    env.ciphertext = ciphertext;
    resign(fed, node, env, |h| h.ciphertext_sha256 = hash);
}

fn random_key() -> [u8; 32] {
    let mut k = [0u8; 32];
    SystemRandom::new().fill(&mut k).unwrap();
    k
}

/// nonce || AES-256-GCM(key, plaintext) with the envelope id as associated
/// data, as the proto documents the payload.
fn aes_gcm(key: &[u8; 32], id: &EnvelopeId, plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    SystemRandom::new().fill(&mut nonce).unwrap();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let mut buf = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(id.as_bytes()),
        &mut buf,
    )
    .unwrap();
    [nonce.to_vec(), buf].concat()
}

/// HPKE-wraps `data_key` for node `cc` as the proto documents it: info =
/// "casebridge/v1 data-key\0" || envelope id || node.
fn wrap_for(dir: &Directory, data_key: &[u8], id: &EnvelopeId, cc: Country) -> v1::WrappedKey {
    let info = [
        b"casebridge/v1 data-key\0".as_slice(),
        id.as_bytes(),
        cc.as_str().as_bytes(),
    ]
    .concat();
    let (enc, sealed_key) = hpke::single_shot_seal::<
        hpke::aead::AesGcm256,
        hpke::kdf::HkdfSha256,
        casebridge::protocol::keys::HpkeKem,
        _,
    >(
        &hpke::OpModeS::Base,
        &dir.node(cc).unwrap().hpke_key,
        &info,
        data_key,
        &[],
        &mut rand_core::UnwrapErr(rand_core::OsRng),
    )
    .unwrap();
    v1::WrappedKey {
        node: cc.to_string(),
        encapsulated_key: enc.to_bytes().to_vec(),
        sealed_key,
        recipient_key_sha256: casebridge::protocol::keys::hpke_key_sha256(
            &dir.node(cc).unwrap().hpke_key,
        )
        .to_vec(),
    }
}

async fn submit(
    fed: &Fed,
    node: &str,
    env: v1::Envelope,
) -> Result<v1::SubmitResponse, tonic::Status> {
    exchange_as_node(fed, node)
        .submit(v1::SubmitRequest {
            envelope: Some(env),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The receipts the broker recorded for `id`, by recipient node.
async fn receipts_recorded(fed: &Fed, id: &EnvelopeId) -> BTreeMap<String, v1::ReceiptRecorded> {
    audit(fed)
        .await
        .into_iter()
        .filter_map(|e| match e.event {
            Some(Event::ReceiptRecorded(r)) if r.envelope_id == id.as_bytes() => {
                Some((r.recipient_node.clone(), r))
            }
            _ => None,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Every recipient reads the same record

/// A hostile HR node wraps one data key for RS and another for BA under one
/// signed header, with a ciphertext (a different record) that opens under
/// BA's key only. Neither recipient may file it: the key RS unwraps opens
/// nothing, and the key BA unwraps is not the one the header commits to.
#[tokio::test]
async fn recipients_given_different_data_keys_both_refuse() {
    let mut fed = start(&["HR", "RS", "BA"]).await;
    // The hostile node needs no node process, only its keys and certificate;
    // with HR's node stopped, the broker keeps the receipts it relays to HR.
    fed.stop_node(cc("HR")).await.unwrap();
    let rec = record("wanted_alert");
    let sealed = harness::seal_as(
        &fed,
        "HR/police",
        &["RS/police", "BA/police"],
        &rec,
        police_to_third_country(),
    );
    let id = sealed.id;
    let mut other = rec.clone();
    if let Some(v1::case_record::Body::WantedAlert(w)) = &mut other.body {
        w.instructions = "Disregard the earlier alert; the vehicle was found.".into();
    }
    let second_key = random_key();
    let dir = directory(&fed);
    let mut env = sealed.envelope.clone();
    env.ciphertext = aes_gcm(&second_key, &id, &other.encode_to_vec());
    let hash = envelope::sha256(&env.ciphertext).to_vec();
    resign(&fed, "HR", &mut env, |h| {
        h.ciphertext_sha256 = hash;
        let ba = h.wrapped_keys.iter_mut().find(|w| w.node == "BA").unwrap();
        *ba = wrap_for(&dir, &second_key, &id, cc("BA"));
    });
    submit(&fed, "HR", env)
        .await
        .expect("a well-formed, properly signed header is accepted by the broker");

    let receipts = until("both recipients' receipts", || async {
        let r = receipts_recorded(&fed, &id).await;
        (r.len() == 2).then_some(r)
    })
    .await;
    for node in ["RS", "BA"] {
        assert_eq!(
            receipts[node].status,
            v1::ReceiptStatus::Rejected as i32,
            "{node} filed a record whose key the header does not commit to: {:?}",
            receipts[node].reason
        );
    }
    // RS unwraps the committed key, which opens nothing; BA unwraps a key
    // the header does not commit to and refuses before decrypting.
    assert_eq!(receipts["RS"].code, v1::RejectionCode::Undecryptable as i32);
    assert_eq!(receipts["BA"].code, v1::RejectionCode::KeyCommitment as i32);
    assert!(
        receipts["BA"]
            .reason
            .contains("not the one the signed header commits to"),
        "{}",
        receipts["BA"].reason
    );
    // BA's refusal is evidence against the sender, logged as such.
    let violations: Vec<_> = audit(&fed)
        .await
        .into_iter()
        .filter_map(|e| match e.event {
            Some(Event::ContentViolation(v)) if v.envelope_id == id.as_bytes() => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(violations.len(), 1);
    assert_eq!(violations[0].reporting_node, "BA");
    assert_eq!(violations[0].code, v1::RejectionCode::KeyCommitment as i32);
    for agency in ["RS/police", "BA/police"] {
        assert!(inbox(&fed, agency).await.is_empty(), "{agency}'s inbox");
    }
    // The signed rejections are on their way to the sender.
    let queued = fed
        .broker()
        .unwrap()
        .store
        .pending(cc("HR"), None, 100)
        .await
        .unwrap();
    let mut rejected_by = Vec::new();
    for q in queued {
        if let MailItem::Receipt(r) = q.item {
            let body =
                envelope::verify_receipt(&r, &dir, casebridge::daemon::clock::now_ms()).unwrap();
            assert_eq!(body.envelope_id, id.as_bytes());
            assert_eq!(body.status, v1::ReceiptStatus::Rejected as i32);
            rejected_by.push(body.recipient_node);
        }
    }
    rejected_by.sort();
    assert_eq!(rejected_by, ["BA", "RS"]);

    fed.start_node(cc("HR")).await.unwrap();
    still_serves(&fed).await;
}

#[tokio::test]
async fn broker_refuses_a_header_without_a_key_commitment() {
    let fed = start(&["HR", "BA"]).await;
    for len in [0, 31] {
        let mut env = fresh(&fed);
        resign(&fed, "HR", &mut env, |h| h.data_key_sha256.truncate(len));
        assert_refused(
            &fed,
            "HR",
            env,
            Code::InvalidArgument,
            R::Malformed,
            &format!("data_key_sha256 is {len} bytes long"),
        )
        .await;
    }
    still_serves(&fed).await;
}

// ---------------------------------------------------------------------------
// Bounded header fields, refused by the broker

#[tokio::test]
async fn broker_refuses_more_declared_categories_than_there_are() {
    let fed = start(&["HR", "BA"]).await;
    let mut env = fresh(&fed);
    resign(&fed, "HR", &mut env, |h| {
        let once = h.declared_categories.clone();
        h.declared_categories = once.iter().cycle().take(300_003).copied().collect();
    });
    assert_refused(
        &fed,
        "HR",
        env,
        Code::InvalidArgument,
        R::InvalidLabels,
        "declared_categories has 300003 entries; the limit is 20",
    )
    .await;
    still_serves(&fed).await;
}

#[tokio::test]
async fn broker_refuses_more_recipients_than_configured() {
    let mut fed = create(&["HR", "RS", "BA"]).await;
    fed.broker_config.limits.max_recipients = 1;
    start_all(&mut fed).await;
    // An honest node configured for more sends; the broker's limit holds.
    let r = send(
        &fed,
        "HR/police",
        &["RS/police", "BA/police"],
        record("wanted_alert"),
        police_to_third_country(),
    )
    .await;
    assert_eq!(r.state, v1::SendState::Refused as i32, "{}", r.detail);
    assert!(
        r.detail
            .contains("recipients has 2 entries; the limit is 1"),
        "{}",
        r.detail
    );
    // A hostile node's header with a million copies of one recipient.
    let mut env = fresh(&fed);
    resign(&fed, "HR", &mut env, |h| {
        h.recipients = vec!["BA/police".into(); 1_000_000]
    });
    assert_refused(
        &fed,
        "HR",
        env,
        Code::InvalidArgument,
        R::InvalidLabels,
        "recipients has 1000000 entries; the limit is 1",
    )
    .await;
    still_serves(&fed).await;
}

#[tokio::test]
async fn broker_refuses_a_five_mib_legal_basis_reference() {
    let fed = start(&["HR", "BA"]).await;
    let mut env = fresh(&fed);
    resign(&fed, "HR", &mut env, |h| {
        h.labels.as_mut().unwrap().legal_basis_reference = "x".repeat(5 * MIB);
    });
    assert_refused(
        &fed,
        "HR",
        env,
        Code::InvalidArgument,
        R::InvalidLabels,
        "legal_basis_reference is 5242880 bytes long; the limit is 512",
    )
    .await;
    assert!(inbox(&fed, "BA/police").await.is_empty());
    still_serves(&fed).await;
}

#[tokio::test]
async fn broker_refuses_a_ciphertext_shorter_than_nonce_and_tag() {
    let fed = start(&["HR", "BA"]).await;
    for len in [0, 27] {
        let mut env = fresh(&fed);
        replace_ciphertext(&fed, "HR", &mut env, vec![0; len]);
        assert_refused(
            &fed,
            "HR",
            env,
            Code::InvalidArgument,
            R::Malformed,
            &format!("ciphertext is {len} bytes long; nonce and tag alone take 28"),
        )
        .await;
    }
    still_serves(&fed).await;
}

#[tokio::test]
async fn broker_quotes_only_a_prefix_of_a_huge_sender_agency() {
    let fed = start(&["HR", "BA"]).await;
    let mut env = fresh(&fed);
    resign(&fed, "HR", &mut env, |h| {
        h.sender_agency = format!("HR/{}", "p".repeat(MIB));
    });
    assert_refused(
        &fed,
        "HR",
        env,
        Code::InvalidArgument,
        R::InvalidLabels,
        "sender_agency is 1048579 bytes long; the limit is 35",
    )
    .await;
    still_serves(&fed).await;
}

// ---------------------------------------------------------------------------
// Bounded agency input, refused by the node before anything is sealed

/// Checks that an agency's Send was refused with `code` and a short message
/// saying `says`, and that nothing was sealed or sent.
async fn assert_send_refused(
    fed: &Fed,
    result: Result<v1::SendResponse, tonic::Status>,
    code: Code,
    says: &str,
    audit_before: usize,
) {
    let err = result.expect_err("must be refused");
    assert_status(&err, code, says);
    assert_eq!(
        audit(fed).await.len(),
        audit_before,
        "nothing reached the broker"
    );
    let node = fed.node(cc("HR")).unwrap();
    assert!(
        node.store.outbox().await.unwrap().is_empty(),
        "nothing sealed"
    );
    let mut c = fed.client("HR/police").unwrap();
    let sent = c
        .api
        .list_sent(v1::ListSentRequest {})
        .await
        .unwrap()
        .into_inner()
        .sent;
    assert!(sent.is_empty(), "no sent record");
}

#[tokio::test]
async fn send_refuses_a_five_mib_legal_basis_reference() {
    let fed = start(&["HR", "BA"]).await;
    let before = audit(&fed).await.len();
    let mut l = police_to_third_country();
    l.legal_basis_reference = "x".repeat(5 * MIB);
    let r = try_send(&fed, "HR/police", &["BA/police"], record("wanted_alert"), l).await;
    assert_send_refused(
        &fed,
        r,
        Code::InvalidArgument,
        "legal_basis_reference is 5242880 bytes long; the limit is 512",
        before,
    )
    .await;
    still_serves(&fed).await;
}

#[tokio::test]
async fn send_quotes_only_a_prefix_of_a_huge_recipient() {
    let fed = start(&["HR", "BA"]).await;
    let before = audit(&fed).await.len();
    let huge = format!("BA/{}", "p".repeat(MIB));
    let r = try_send(
        &fed,
        "HR/police",
        &[huge.as_str()],
        record("wanted_alert"),
        police_to_third_country(),
    )
    .await;
    assert_send_refused(
        &fed,
        r,
        Code::InvalidArgument,
        "recipients is 1048579 bytes long; the limit is 35",
        before,
    )
    .await;
    still_serves(&fed).await;
}

#[tokio::test]
async fn send_refuses_more_recipients_than_the_node_allows() {
    let mut fed = create(&["HR", "RS", "BA"]).await;
    fed.node_configs
        .get_mut(&cc("HR"))
        .unwrap()
        .limits
        .max_recipients = 1;
    start_all(&mut fed).await;
    let before = audit(&fed).await.len();
    let r = try_send(
        &fed,
        "HR/police",
        &["RS/police", "BA/police"],
        record("wanted_alert"),
        police_to_third_country(),
    )
    .await;
    assert_send_refused(
        &fed,
        r,
        Code::InvalidArgument,
        "recipients has 2 entries; the limit is 1",
        before,
    )
    .await;
    still_serves(&fed).await;
}

#[tokio::test]
async fn permission_requests_are_bounded() {
    let fed = start(&["HR", "BA"]).await;
    let sent = send(
        &fed,
        "HR/police",
        &["BA/police"],
        record("wanted_alert"),
        police_to_third_country(),
    )
    .await;
    settled(&fed, "HR/police", &sent.envelope_id).await;
    let before = audit(&fed).await.len();
    let mut ba = fed.client("BA/police").unwrap();
    let ask = |third: Vec<String>, justification: String| v1::RequestPermissionRequest {
        envelope_id: sent.envelope_id.clone(),
        third_agencies: third,
        justification,
        ..Default::default()
    };
    let cases = [
        (
            ask(vec!["BA/border-police".into(); 65], String::new()),
            "third_agencies has 65 entries; the limit is 64",
        ),
        (
            ask(vec![format!("BA/{}", "p".repeat(MIB))], String::new()),
            "third_agencies is 1048579 bytes long; the limit is 35",
        ),
        (
            ask(vec!["BA/border-police".into(); 2], String::new()),
            "third agency BA/border-police listed twice",
        ),
        (
            ask(vec!["BA/border-police".into()], "j".repeat(5 * MIB)),
            "justification is 5242880 bytes long; the limit is 4096",
        ),
    ];
    for (req, says) in cases {
        let err = ba.api.request_permission(req).await.unwrap_err();
        assert_status(&err, Code::InvalidArgument, says);
    }
    let err = ba
        .api
        .request_permission(v1::RequestPermissionRequest {
            envelope_id: "e".repeat(MIB),
            third_agencies: vec!["BA/border-police".into()],
            justification: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("envelope_id is 1048576 bytes long; the limit is 45"),
        "{}",
        short(err.message())
    );
    let err = fed
        .client("HR/police")
        .unwrap()
        .api
        .grant_permission(v1::GrantPermissionRequest {
            request_envelope_id: sent.envelope_id.clone(),
            conditions: "c".repeat(5 * MIB),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("conditions is 5242880 bytes long; the limit is 4096"),
        "{}",
        short(err.message())
    );
    assert_eq!(
        audit(&fed).await.len(),
        before,
        "nothing reached the broker"
    );
    for node in ["HR", "BA"] {
        let outbox = fed.node(cc(node)).unwrap().store.outbox().await.unwrap();
        assert!(outbox.is_empty(), "{node}'s outbox");
    }
    still_serves(&fed).await;
}

/// The receiving node applies its own bounds again: a header the broker
/// let through under wider limits, but over the node's, is rejected on
/// delivery with a signed receipt and filed nowhere.
#[tokio::test]
async fn receiving_node_checks_the_bounds_again() {
    let mut fed = create(&["HR", "RS", "BA"]).await;
    let ba_limits = &mut fed.node_configs.get_mut(&cc("BA")).unwrap().limits;
    ba_limits.max_recipients = 1;
    start_all(&mut fed).await;
    let sent = send(
        &fed,
        "HR/police",
        &["RS/police", "BA/police"],
        record("wanted_alert"),
        police_to_third_country(),
    )
    .await;
    assert_accepted(&sent);
    let status = settled(&fed, "HR/police", &sent.envelope_id).await;
    let at = |node: &str| {
        status
            .recipient_status
            .iter()
            .find(|r| r.node == node)
            .unwrap()
            .clone()
    };
    assert_eq!(at("RS").state, v1::DeliveryState::Delivered as i32);
    let ba = at("BA");
    assert_eq!(ba.state, v1::DeliveryState::Rejected as i32);
    let receipt = ba.receipt.unwrap();
    assert_eq!(receipt.code, v1::RejectionCode::InvalidHeader as i32);
    assert!(
        receipt
            .reason
            .contains("recipients has 2 entries; the limit is 1"),
        "{}",
        receipt.reason
    );
    assert!(inbox(&fed, "BA/police").await.is_empty());
    assert_eq!(inbox(&fed, "RS/police").await.len(), 1);
    still_serves(&fed).await;
}

/// A record whose envelope would exceed the broker's limit (the default,
/// 16 MiB, on both sides) is refused at Send, before it is sealed.
#[tokio::test]
async fn send_refuses_a_record_too_large_for_the_broker() {
    let fed = start(&["HR", "BA"]).await;
    let before = audit(&fed).await.len();
    let rec = evidence(17 * MIB);
    let r = try_send(
        &fed,
        "HR/police",
        &["BA/police"],
        rec,
        police_to_third_country(),
    )
    .await;
    assert_send_refused(
        &fed,
        r,
        Code::InvalidArgument,
        "the broker's limit is 16777216 bytes",
        before,
    )
    .await;
    still_serves(&fed).await;
}

/// A JIT evidence record carrying `len` bytes of attachment.
fn evidence(len: usize) -> v1::CaseRecord {
    v1::CaseRecord {
        body: Some(v1::case_record::Body::JitEvidence(v1::JitEvidence {
            jit_reference: "JIT-TEST".into(),
            description: "large evidence".into(),
            attachments: vec![v1::Attachment {
                filename: "scan.bin".into(),
                media_type: "application/octet-stream".into(),
                content: vec![7u8; len],
                contains: vec![],
            }],
        })),
    }
}

// ---------------------------------------------------------------------------
// Size limits that agree

/// Between the broker's envelope limit and its transport limit a hostile
/// node gets the typed refusal, with its audit event, not a transport error.
#[tokio::test]
async fn oversized_submit_gets_a_typed_refusal() {
    let mut fed = create(&["HR", "BA"]).await;
    fed.broker_config.limits.max_envelope_bytes = 64 * 1024;
    start_all(&mut fed).await;
    let env = harness::seal_as(
        &fed,
        "HR/police",
        &["BA/police"],
        &evidence(180 * 1024),
        police_to_third_country(),
    )
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
    still_serves(&fed).await;
}

/// A node configured with a larger envelope limit than the broker's seals a
/// record the broker's transport will not even read. The broker's answer is
/// final for that record; the next one goes through.
#[tokio::test]
async fn outbox_moves_on_past_a_record_the_broker_refuses_for_good() {
    let mut fed = create(&["HR", "BA"]).await;
    fed.broker_config.limits.max_envelope_bytes = 64 * 1024;
    start_all(&mut fed).await;
    let big = send(
        &fed,
        "HR/police",
        &["BA/police"],
        evidence(300 * 1024),
        police_to_third_country(),
    )
    .await;
    assert_eq!(big.state, v1::SendState::Refused as i32, "{}", big.detail);
    let small = send(
        &fed,
        "HR/police",
        &["BA/police"],
        record("wanted_alert"),
        police_to_third_country(),
    )
    .await;
    assert_accepted(&small);
    let s = status(&fed, "HR/police", &big.envelope_id).await;
    assert_eq!(s.state, v1::SendState::Refused as i32);
    assert!(
        fed.node(cc("HR"))
            .unwrap()
            .store
            .outbox()
            .await
            .unwrap()
            .is_empty(),
        "nothing left in the outbox"
    );
    assert!(inbox(&fed, "BA/police").await.len() <= 1);
    still_serves(&fed).await;
}

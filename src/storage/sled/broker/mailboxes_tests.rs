//! The sled queues: priority lanes, acknowledgement by seq whatever the
//! lane, the payload written once, reopening, and the migration of a store
//! written before lanes.

use prost::Message as _;

use super::*;
use crate::storage::broker::{Acceptance, EnvelopeAck, MailItem, Mailboxes, Queued};

fn cc(s: &str) -> Country {
    s.parse().unwrap()
}

fn event() -> v1::AuditEvent {
    v1::AuditEvent {
        at_ms: 1,
        event: Some(v1::audit_event::Event::SubmissionRefused(
            v1::SubmissionRefused::default(),
        )),
    }
}

/// An envelope from HR to `to` with `priority`; its header is its name.
fn envelope(name: &str, to: &[&str], priority: v1::Priority) -> Acceptance {
    let id = EnvelopeId::at(1);
    Acceptance {
        id,
        created_at_ms: 1,
        sender_node: cc("HR"),
        envelope: v1::Envelope {
            header: name.as_bytes().to_vec(),
            ciphertext: vec![7; 64],
            ..Default::default()
        },
        recipient_nodes: to.iter().map(|c| cc(c)).collect(),
        event: event(),
        summary: v1::EnvelopeSummary {
            envelope_id: id.as_bytes().to_vec(),
            priority: priority as i32,
            ..Default::default()
        },
        grants: vec![],
    }
}

fn ack(id: EnvelopeId, receipt: &str) -> EnvelopeAck {
    EnvelopeAck {
        id,
        receipt: v1::SignedReceipt {
            body: receipt.as_bytes().to_vec(),
            ..Default::default()
        },
        events: vec![event()],
        delivered: true,
    }
}

/// What a queued item is called in these tests: an envelope's header, a
/// receipt's body.
fn name(q: &Queued) -> String {
    match &q.item {
        MailItem::Envelope(_, env) => String::from_utf8(env.header.clone()).unwrap(),
        MailItem::Receipt(r) => String::from_utf8(r.body.clone()).unwrap(),
    }
}

fn names(qs: &[Queued]) -> Vec<String> {
    qs.iter().map(name).collect()
}

async fn accept(store: &SledStore, name: &str, to: &[&str], p: v1::Priority) -> EnvelopeId {
    let a = envelope(name, to, p);
    let id = a.id;
    store.accept(a).await.unwrap();
    id
}

/// The seq of the item called `name` queued for `node`.
async fn seq_of(store: &SledStore, node: Country, name_: &str) -> u64 {
    let all = store.pending(node, None, usize::MAX).await.unwrap();
    all.iter().find(|q| name(q) == name_).unwrap().seq
}

#[tokio::test]
async fn a_partial_acknowledgement_counts_down_without_rewriting_the_payload() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    let to = ["BA", "RS", "ME"];
    let id = accept(&store, "alert", &to, v1::Priority::Immediate).await;
    let payload = store.trees.payload.get(id.as_bytes()).unwrap().unwrap();
    let mut left = 3;
    for node in to {
        let seq = seq_of(&store, cc(node), "alert").await;
        store
            .ack_envelope(cc(node), seq, ack(id, node))
            .await
            .unwrap();
        left -= 1;
        let kept = store.trees.payload.get(id.as_bytes()).unwrap();
        let count = store.trees.remaining.get(id.as_bytes()).unwrap();
        if left > 0 {
            // The same bytes as written at accept: the bare envelope.
            assert_eq!(kept.as_ref(), Some(&payload));
            assert_eq!(count.unwrap()[..8], be(left));
        } else {
            assert_eq!(kept, None, "dropped at the last acknowledgement");
            assert_eq!(count, None);
        }
    }
    let env = v1::Envelope::decode(payload.as_ref()).unwrap();
    assert_eq!(env.header, b"alert");
}

#[tokio::test]
async fn a_store_written_before_lanes_is_migrated_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let urgent = EnvelopeId::at(1);
    let routine = EnvelopeId::at(1);
    {
        // The old layout: mail keys without a lane, the count and the
        // sender in front of each payload.
        let db = crate::storage::sled::open_db(dir.path()).unwrap();
        let (meta, mail, payload, accepted) = (
            db.open_tree("meta").unwrap(),
            db.open_tree("mail").unwrap(),
            db.open_tree("payload").unwrap(),
            db.open_tree("accepted").unwrap(),
        );
        let old_key = |node: &str, seq: u64| {
            let mut k = node.as_bytes().to_vec();
            k.extend_from_slice(&be(seq));
            k
        };
        let mut seq = 0;
        for (id, p, to) in [
            (routine, v1::Priority::Routine, &["BA", "RS"][..]),
            (urgent, v1::Priority::Urgent, &["BA"][..]),
        ] {
            let env = v1::Envelope {
                header: format!("{p:?}").into_bytes(),
                ..Default::default()
            };
            let mut v = be(to.len() as u64).to_vec();
            v.extend_from_slice(b"HR");
            v.extend_from_slice(&env.encode_to_vec());
            payload.insert(id.as_bytes(), v).unwrap();
            let summary = v1::EnvelopeSummary {
                priority: p as i32,
                ..Default::default()
            };
            let mut kept = be(0).to_vec();
            kept.extend_from_slice(&summary.encode_to_vec());
            accepted.insert(id.as_bytes(), kept).unwrap();
            for node in to {
                let mut item = vec![TAG_ENVELOPE];
                item.extend_from_slice(id.as_bytes());
                mail.insert(old_key(node, seq), item).unwrap();
                seq += 1;
            }
        }
        let mut receipt = vec![TAG_RECEIPT];
        receipt.extend_from_slice(
            &v1::SignedReceipt {
                body: b"Receipt".to_vec(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        mail.insert(old_key("BA", seq), receipt).unwrap();
        meta.insert(META_MAIL_NEXT, &be(seq + 1)).unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open(dir.path()).unwrap();
    let ba = store.pending(cc("BA"), None, 10).await.unwrap();
    assert_eq!(names(&ba), ["Receipt", "Urgent", "Routine"]);
    assert_eq!(
        ba.iter().map(|q| q.seq).collect::<Vec<_>>(),
        [3, 2, 0],
        "seqs kept"
    );
    // Acknowledged by the old seqs; the payload goes with the last.
    store
        .ack_envelope(cc("BA"), 0, ack(routine, "r1"))
        .await
        .unwrap();
    assert!(
        store
            .trees
            .payload
            .contains_key(routine.as_bytes())
            .unwrap()
    );
    store
        .ack_envelope(cc("RS"), 1, ack(routine, "r2"))
        .await
        .unwrap();
    assert!(
        !store
            .trees
            .payload
            .contains_key(routine.as_bytes())
            .unwrap()
    );
    store.ack_receipt(cc("BA"), 3).await.unwrap();
    assert_eq!(
        names(&store.pending(cc("BA"), None, 10).await.unwrap()),
        ["Urgent"]
    );
    assert_eq!(
        seq_of(&store, cc("HR"), "r2").await,
        5,
        "the counter goes on"
    );
    drop(store);
    tokio::task::yield_now().await;
    // Opening again finds it migrated and changes nothing.
    let store = SledStore::open(dir.path()).unwrap();
    assert_eq!(
        names(&store.pending(cc("BA"), None, 10).await.unwrap()),
        ["Urgent"]
    );
}

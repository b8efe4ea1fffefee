//! Tests of the node's sled store: the outbox and its lanes, filing, evidence.

use std::collections::HashSet;
use std::sync::Arc;

use prost::Message as _;
use tokio::sync::watch;

use super::SledNodeStore;
use crate::protocol::ids::{AgencyId, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::StorageError;
use crate::storage::node::idempotency::{EarlierCall, KeyedCall};
use crate::storage::node::{Inbox as _, Lane, Outbox as _, WitnessState as _};
use crate::storage::sled::GatedFlush;

#[tokio::test]
async fn evidence_recorded_in_the_same_millisecond_is_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledNodeStore::open(dir.path()).unwrap();
    store.record_evidence(7, "first").await.unwrap();
    store.record_evidence(7, "second").await.unwrap();
    store.record_evidence(6, "earlier").await.unwrap();
    assert_eq!(
        store.evidence().await.unwrap(),
        ["earlier", "first", "second"]
    );
}

/// A store in `dir` whose flushes wait for the gate, an envelope being
/// enqueued on a task of its own once the flush has started, and the
/// outbox subscription taken before.
async fn enqueue_held_at_the_flush(
    dir: &std::path::Path,
) -> (
    Arc<SledNodeStore>,
    Arc<GatedFlush>,
    EnvelopeId,
    tokio::task::JoinHandle<Result<(), StorageError>>,
    watch::Receiver<u64>,
) {
    let mut gated = None;
    let store = Arc::new(
        SledNodeStore::open_with(dir, |db| {
            let (f, started) = GatedFlush::over(db);
            gated = Some((f.clone(), started));
            f
        })
        .unwrap(),
    );
    let (gate, mut started) = gated.unwrap();
    let changed = store.outbox_changed();
    let id = EnvelopeId::at(0);
    let s = store.clone();
    let enqueue = tokio::spawn(async move {
        s.enqueue(&id, &v1::Envelope::default(), &v1::SendStatus::default())
            .await
    });
    started.recv().await.unwrap();
    (store, gate, id, enqueue, changed)
}

async fn outbox_ids(store: &SledNodeStore) -> Vec<EnvelopeId> {
    let outbox = store.outbox().await.unwrap();
    outbox.into_iter().map(|(i, _)| i).collect()
}

#[tokio::test]
async fn an_envelope_leaves_the_outbox_only_once_on_disk_and_then_signals() {
    let dir = tempfile::tempdir().unwrap();
    let (store, gate, id, enqueue, changed) = enqueue_held_at_the_flush(dir.path()).await;
    assert!(outbox_ids(&store).await.is_empty(), "not yet on disk");
    assert_eq!(store.outbox_len().await.unwrap(), 0, "not counted before");
    assert!(
        !changed.has_changed().unwrap(),
        "no signal before the flush"
    );
    gate.gate.add_permits(1);
    enqueue.await.unwrap().unwrap();
    assert!(changed.has_changed().unwrap(), "signalled once durable");
    assert_eq!(outbox_ids(&store).await, vec![id]);
    assert_eq!(store.outbox_len().await.unwrap(), 1);
}

#[tokio::test]
async fn an_envelope_whose_caller_stopped_waiting_still_reaches_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let (store, gate, id, caller, mut changed) = enqueue_held_at_the_flush(dir.path()).await;
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    gate.gate.add_permits(1);
    changed.changed().await.unwrap();
    assert_eq!(outbox_ids(&store).await, vec![id]);
}

fn with_priority(p: v1::Priority) -> v1::SendStatus {
    v1::SendStatus {
        labels: Some(v1::Labels {
            priority: p as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_outbox_gives_immediate_before_urgent_before_routine_queued_earlier() {
    use v1::Priority as P;
    let dir = tempfile::tempdir().unwrap();
    let store = SledNodeStore::open(dir.path()).unwrap();
    let queued = [
        P::Routine,
        P::Unspecified,
        P::Urgent,
        P::Routine,
        P::Immediate,
        P::Urgent,
        P::Immediate,
    ];
    let mut ids = Vec::new();
    for (i, p) in queued.iter().enumerate() {
        let id = EnvelopeId::at(1_000 + i as i64);
        store
            .enqueue(&id, &v1::Envelope::default(), &with_priority(*p))
            .await
            .unwrap();
        ids.push(id);
    }
    let expect = [
        (Lane::Immediate, ids[4]),
        (Lane::Immediate, ids[6]),
        (Lane::Urgent, ids[2]),
        (Lane::Urgent, ids[5]),
        (Lane::Routine, ids[0]),
        (Lane::Routine, ids[1]),
        (Lane::Routine, ids[3]),
    ];
    let none = HashSet::new();
    assert_eq!(store.outbox_waiting(10, &none).await.unwrap(), expect);
    let in_order: Vec<EnvelopeId> = expect.iter().map(|(_, id)| *id).collect();
    assert_eq!(outbox_ids(&store).await, in_order);

    // At most `per_lane` of each lane, leaving out those in flight.
    let in_flight = HashSet::from([ids[4], ids[0]]);
    assert_eq!(
        store.outbox_waiting(1, &in_flight).await.unwrap(),
        [
            (Lane::Immediate, ids[6]),
            (Lane::Urgent, ids[2]),
            (Lane::Routine, ids[1])
        ]
    );
    let got = store.outbox_envelopes(&expect[..3]).await.unwrap();
    assert_eq!(
        got.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        in_order[..3]
    );

    // Settled in whichever lane it waits.
    store.settle(&ids[4], Box::new(|_| {})).await.unwrap();
    store
        .settle_accepted(&ids[2], &v1::EnvelopeSummary::default(), Box::new(|_| {}))
        .await
        .unwrap();
    assert_eq!(
        store.outbox_waiting(1, &none).await.unwrap(),
        [
            (Lane::Immediate, ids[6]),
            (Lane::Urgent, ids[5]),
            (Lane::Routine, ids[0])
        ]
    );
    assert!(
        store
            .outbox_envelopes(&expect[..1])
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn an_outbox_from_before_the_lanes_is_moved_into_them_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (routine, immediate) = (EnvelopeId::at(1), EnvelopeId::at(2));
    let header = |p: v1::Priority| v1::Envelope {
        header: v1::EnvelopeHeader {
            labels: Some(v1::Labels {
                priority: p as i32,
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec(),
        ..Default::default()
    };
    {
        let db = crate::storage::sled::open_db(dir.path()).unwrap();
        let outbox = db.open_tree("outbox").unwrap();
        for (id, p) in [
            (routine, v1::Priority::Routine),
            (immediate, v1::Priority::Immediate),
        ] {
            outbox
                .insert(id.as_bytes(), header(p).encode_to_vec())
                .unwrap();
        }
        db.flush().unwrap();
    }
    let store = SledNodeStore::open(dir.path()).unwrap();
    assert_eq!(
        store.outbox_waiting(5, &HashSet::new()).await.unwrap(),
        [(Lane::Immediate, immediate), (Lane::Routine, routine)]
    );
    store.settle(&routine, Box::new(|_| {})).await.unwrap();
    assert_eq!(outbox_ids(&store).await, [immediate]);
}

#[tokio::test]
async fn one_envelope_delivered_twice_at_once_is_filed_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledNodeStore::open(dir.path()).unwrap());
    let id = EnvelopeId::at(5);
    let agency: AgencyId = "HR/police".parse().unwrap();
    let mut tasks = Vec::new();
    for n in 0..8u8 {
        let (store, agency) = (store.clone(), agency.clone());
        tasks.push(tokio::spawn(async move {
            let rec = v1::InboxRecord {
                entry: Some(v1::InboxEntry {
                    envelope_id: id.to_string(),
                    sender_agency: format!("attempt {n}"),
                    ..Default::default()
                }),
                record: None,
            };
            let receipt = v1::SignedReceipt {
                body: vec![n],
                signature: Vec::new(),
            };
            let in_force = store
                .deliver(&id, &[(agency, rec)], &receipt)
                .await
                .unwrap();
            (receipt == in_force, in_force)
        }));
    }
    let mut filed = 0;
    let mut answers = HashSet::new();
    for t in tasks {
        let (mine, in_force) = t.await.unwrap();
        filed += usize::from(mine);
        answers.insert(in_force.body);
    }
    assert_eq!(filed, 1, "exactly one delivery filed");
    assert_eq!(answers.len(), 1, "every delivery got the answer in force");
    let first = answers.into_iter().next().unwrap();
    let kept = store.fetch(&agency, &id).await.unwrap().unwrap();
    assert_eq!(
        kept.entry.unwrap().sender_agency,
        format!("attempt {}", first[0]),
        "the inbox holds what the filed one carried"
    );
    assert_eq!(store.receipt_for(&id).await.unwrap().unwrap().body, first);
}

fn keyed(agency: &str, key: &str, digest: u8, at_ms: i64) -> KeyedCall {
    KeyedCall {
        agency: agency.parse().unwrap(),
        key: key.into(),
        digest: [digest; 32],
        at_ms,
    }
}

fn sent_as(id: &EnvelopeId) -> v1::SendStatus {
    v1::SendStatus {
        envelope_id: id.to_string(),
        ..Default::default()
    }
}

/// What enqueuing `id` under `call` gives.
async fn enqueue_keyed(
    store: &SledNodeStore,
    id: EnvelopeId,
    call: &KeyedCall,
) -> Option<EarlierCall> {
    store
        .enqueue_keyed(&id, &v1::Envelope::default(), &sent_as(&id), call)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_used_again_gives_the_first_envelope_and_stores_nothing_new() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledNodeStore::open(dir.path()).unwrap();
    let (first, second, third) = (EnvelopeId::at(1), EnvelopeId::at(2), EnvelopeId::at(3));
    let call = keyed("HR/police", "key-1", 7, 1_000);
    assert_eq!(enqueue_keyed(&store, first, &call).await, None);

    // The same content again, and other content under the same key: the
    // store answers the first call either way and writes nothing.
    let earlier = EarlierCall {
        digest: [7; 32],
        id: first,
        at_ms: 1_000,
    };
    assert_eq!(
        enqueue_keyed(&store, second, &keyed("HR/police", "key-1", 7, 2_000)).await,
        Some(earlier)
    );
    assert_eq!(
        enqueue_keyed(&store, third, &keyed("HR/police", "key-1", 8, 3_000)).await,
        Some(earlier)
    );
    assert_eq!(outbox_ids(&store).await, vec![first]);
    assert!(store.sent(&second).await.unwrap().is_none());
    assert!(store.sent(&third).await.unwrap().is_none());
    assert!(store.sent_header_sha256(&second).await.unwrap().is_none());
    let agency: AgencyId = "HR/police".parse().unwrap();
    assert_eq!(
        store.keyed_call(&agency, "key-1", 0).await.unwrap(),
        Some(earlier)
    );
    assert_eq!(store.keyed_call(&agency, "key-2", 0).await.unwrap(), None);
    // Nothing waits for a flush that a refused write never asked for.
    assert_eq!(
        store
            .outbox_waiting(10, &HashSet::new())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn another_agencys_key_is_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledNodeStore::open(dir.path()).unwrap();
    let (a, b) = (EnvelopeId::at(1), EnvelopeId::at(2));
    assert_eq!(
        enqueue_keyed(&store, a, &keyed("HR/police", "shared", 7, 1_000)).await,
        None
    );
    // The same key and the same content from another agency of the node.
    assert_eq!(
        enqueue_keyed(&store, b, &keyed("HR/prosecutor", "shared", 7, 1_000)).await,
        None,
        "another agency's key finds nothing of this one's"
    );
    assert_eq!(outbox_ids(&store).await, vec![a, b]);
    let police: AgencyId = "HR/police".parse().unwrap();
    let prosecutor: AgencyId = "HR/prosecutor".parse().unwrap();
    assert_eq!(
        store
            .keyed_call(&police, "shared", 0)
            .await
            .unwrap()
            .map(|c| c.id),
        Some(a)
    );
    assert_eq!(
        store
            .keyed_call(&prosecutor, "shared", 0)
            .await
            .unwrap()
            .map(|c| c.id),
        Some(b)
    );
    // An agency id that is a prefix of another's shares nothing either.
    let short: AgencyId = "HR/p".parse().unwrap();
    assert_eq!(store.keyed_call(&short, "shared", 0).await.unwrap(), None);
}

#[tokio::test]
async fn keys_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let id = EnvelopeId::at(1);
    {
        let store = SledNodeStore::open(dir.path()).unwrap();
        assert_eq!(
            enqueue_keyed(&store, id, &keyed("HR/police", "k", 7, 1_000)).await,
            None
        );
    }
    let store = SledNodeStore::open(dir.path()).unwrap();
    let police: AgencyId = "HR/police".parse().unwrap();
    assert_eq!(
        store
            .keyed_call(&police, "k", 0)
            .await
            .unwrap()
            .map(|c| c.id),
        Some(id)
    );
    assert_eq!(
        enqueue_keyed(
            &store,
            EnvelopeId::at(2),
            &keyed("HR/police", "k", 7, 2_000)
        )
        .await
        .map(|c| c.id),
        Some(id)
    );
    assert_eq!(outbox_ids(&store).await, vec![id]);
}

#[tokio::test]
async fn keys_expire_after_the_retention_and_are_forgotten_in_time_order() {
    use crate::storage::node::idempotency::RETENTION_MS;
    let dir = tempfile::tempdir().unwrap();
    let store = SledNodeStore::open(dir.path()).unwrap();
    let police: AgencyId = "HR/police".parse().unwrap();
    let t0 = 1_000_000;
    let (old, renewed, young) = (EnvelopeId::at(1), EnvelopeId::at(2), EnvelopeId::at(3));
    assert_eq!(
        enqueue_keyed(&store, old, &keyed("HR/police", "old", 1, t0)).await,
        None
    );
    assert_eq!(
        enqueue_keyed(&store, young, &keyed("HR/police", "young", 2, t0 + 10)).await,
        None
    );
    // Still remembered at the end of the retention, not a moment after.
    let last = keyed("HR/police", "old", 1, t0 + RETENTION_MS);
    assert!(
        store
            .keyed_call(&police, "old", last.not_before_ms())
            .await
            .unwrap()
            .is_some()
    );
    let after = keyed("HR/police", "old", 1, t0 + RETENTION_MS + 1);
    assert_eq!(
        store
            .keyed_call(&police, "old", after.not_before_ms())
            .await
            .unwrap(),
        None
    );
    // Used again after it expired (before it was forgotten): a new record.
    assert_eq!(enqueue_keyed(&store, renewed, &after).await, None);
    assert_eq!(
        store
            .keyed_call(&police, "old", 0)
            .await
            .unwrap()
            .map(|c| c.id),
        Some(renewed)
    );

    // Forgetting what was first used before t0 + 5 leaves both keys: the
    // renewed one is newer, and "young" came later.
    assert_eq!(store.forget_keys(t0 + 5).await.unwrap(), 0);
    assert!(store.keyed_call(&police, "old", 0).await.unwrap().is_some());
    assert!(
        store
            .keyed_call(&police, "young", 0)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.forget_keys(t0 + 11).await.unwrap(), 1);
    assert_eq!(store.keyed_call(&police, "young", 0).await.unwrap(), None);
    assert_eq!(
        store
            .keyed_call(&police, "old", 0)
            .await
            .unwrap()
            .map(|c| c.id),
        Some(renewed)
    );
    assert_eq!(store.forget_keys(t0 + RETENTION_MS + 2).await.unwrap(), 1);
    assert_eq!(store.keyed_call(&police, "old", 0).await.unwrap(), None);
    // The records themselves stay.
    assert_eq!(outbox_ids(&store).await, vec![old, renewed, young]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_under_one_key_store_one_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledNodeStore::open(dir.path()).unwrap());
    let call = keyed("HR/police", "race", 7, 1_000);
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = store.clone();
            let call = call.clone();
            tokio::spawn(async move {
                let id = EnvelopeId::at(100 + i);
                let earlier = store
                    .enqueue_keyed(&id, &v1::Envelope::default(), &sent_as(&id), &call)
                    .await
                    .unwrap();
                earlier.map_or(id, |e| e.id)
            })
        })
        .collect();
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1, "every call names one envelope");
    assert_eq!(
        outbox_ids(&store).await,
        ids.into_iter().collect::<Vec<_>>()
    );
}

//! What every backend of the broker's store must do, as test functions
//! generic over the backend: each takes a [`Backend`], which opens the
//! same store as often as a test asks (a reopen is a restart), and each
//! backend runs all of them through [`conformance_tests`]. The sled backend
//! runs them always; the PostgreSQL backend when `CASEBRIDGE_TEST_POSTGRES`
//! names a server (`scripts/postgres.sh start`), on a database of its own.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::protocol::merkle;

/// Opens one store, again and again over the same data.
#[async_trait::async_trait]
pub(crate) trait Backend: Send + Sync {
    /// Opens the store; a store opened before must have been dropped.
    async fn open(&self) -> Arc<dyn BrokerStore>;
}

/// Runs every conformance test listed for a backend: `$make` is an async
/// expression giving `Option<impl Backend>` (None: skipped, said loudly),
/// `$finish` an async fn that takes it back after the test.
#[macro_export]
#[doc(hidden)]
macro_rules! conformance_tests {
    ($make:expr, $finish:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let Some(backend) = $make.await else { return };
                $crate::storage::broker::conformance::$name(&backend).await;
                $finish(backend).await;
            }
        )*
    };
}

/// Every test of this module, for [`conformance_tests`].
#[macro_export]
#[doc(hidden)]
macro_rules! all_conformance_tests {
    ($make:expr, $finish:path) => {
        $crate::conformance_tests!($make, $finish;
            acknowledged_events_survive_reopening,
            no_leaf_is_stored_over_the_cap,
            integration_covers_what_is_sequenced_and_catches_up_after_reopening,
            appends_in_one_write_and_concurrent_integrations_give_the_tree,
            lanes_deliver_immediate_first_then_receipts_urgent_and_routine,
            a_stream_moves_past_what_it_sent_and_an_immediate_still_goes_first,
            routine_is_not_starved_by_urgent_traffic,
            acknowledgements_find_their_item_by_seq_in_any_lane,
            a_partial_acknowledgement_keeps_the_envelope_for_the_others,
            the_queue_depth_counts_what_each_node_has_yet_to_acknowledge,
            lanes_and_seqs_survive_reopening,
            a_wakeup_counts_immediates_and_the_nodes_acknowledgements,
            a_duplicate_id_is_refused_and_writes_nothing,
            federation_state_is_kept_with_the_acceptance,
            checkpoints_and_cosignatures,
            versions_in_force_only_go_up,
            the_integrator_is_told_what_was_sequenced,
        );
    };
}

fn cc(s: &str) -> Country {
    s.parse().unwrap()
}

fn refusal(n: u64) -> v1::AuditEvent {
    v1::AuditEvent {
        at_ms: n as i64,
        event: Some(v1::audit_event::Event::SubmissionRefused(
            v1::SubmissionRefused {
                reason: format!("r{n}"),
                ..Default::default()
            },
        )),
    }
}

fn dir_event(version: u64) -> v1::AuditEvent {
    v1::AuditEvent {
        at_ms: 0,
        event: Some(v1::audit_event::Event::DirectoryChanged(
            v1::DirectoryChanged {
                version,
                directory_sha256: vec![version as u8; 32],
            },
        )),
    }
}

fn uncuttable() -> v1::AuditEvent {
    v1::AuditEvent {
        at_ms: 1,
        event: Some(v1::audit_event::Event::RecordsPurged(v1::RecordsPurged {
            node: "HR".into(),
            envelope_ids: vec![vec![1; 16]; crate::protocol::leaf::MAX_LEAF_BYTES / 16],
        })),
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
        event: refusal(1000),
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
        events: vec![refusal(2000)],
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

async fn accept(store: &dyn BrokerStore, name: &str, to: &[&str], p: v1::Priority) -> EnvelopeId {
    let a = envelope(name, to, p);
    let id = a.id;
    store.accept(a).await.unwrap();
    id
}

/// The seq of the item called `name_` queued for `node`.
async fn seq_of(store: &dyn BrokerStore, node: Country, name_: &str) -> u64 {
    let all = store.pending(node, None, usize::MAX).await.unwrap();
    all.iter().find(|q| name(q) == name_).unwrap().seq
}

pub(crate) async fn acknowledged_events_survive_reopening(b: &dyn Backend) {
    {
        let store = b.open().await;
        for n in 0..3 {
            store.append(refusal(n)).await.unwrap();
        }
        assert_eq!(
            store
                .record_if_changed(Subject::Directory, vec![1; 32], dir_event(1))
                .await
                .unwrap(),
            Some(3)
        );
        assert_eq!(
            store
                .record_if_changed(Subject::Directory, vec![1; 32], dir_event(1))
                .await
                .unwrap(),
            None,
            "same directory: no event"
        );
    }
    // Let a backend's tasks notice that the store is gone.
    tokio::task::yield_now().await;
    let store = b.open().await;
    assert_eq!(store.audit_len().await.unwrap(), 4);
    let events = store.audit_range(0, 4).await.unwrap();
    assert_eq!(events[2], refusal(2));
    assert!(matches!(
        events[3].event,
        Some(v1::audit_event::Event::DirectoryChanged(_))
    ));
    assert_eq!(
        store
            .record_if_changed(Subject::Directory, vec![2; 32], dir_event(2))
            .await
            .unwrap(),
        Some(4)
    );
    assert_eq!(
        store
            .record_if_changed(Subject::Policy, vec![2; 32], dir_event(2))
            .await
            .unwrap(),
        Some(5),
        "each subject has its own digest"
    );
}

pub(crate) async fn no_leaf_is_stored_over_the_cap(b: &dyn Backend) {
    use crate::protocol::leaf::MAX_LEAF_BYTES;
    let store = b.open().await;
    let mut long = refusal(0);
    if let Some(v1::audit_event::Event::SubmissionRefused(r)) = &mut long.event {
        r.reason = "x".repeat(20 << 20);
    }
    let i = store.append(long).await.unwrap();
    let leaf = store.leaves(i, i + 1).await.unwrap().remove(0);
    assert!(
        leaf.len() <= MAX_LEAF_BYTES,
        "free text cut: {}",
        leaf.len()
    );
    assert_eq!(
        store.leaf_hash(i).await.unwrap(),
        None,
        "not integrated yet"
    );
    assert_eq!(store.integrate().await.unwrap(), 1);
    assert_eq!(
        store.leaf_hash(i).await.unwrap(),
        Some(merkle::leaf_hash(&leaf)),
        "the tree holds the leaf as stored"
    );
    assert!(matches!(
        store.append(uncuttable()).await,
        Err(StoreError::Leaf(_))
    ));
    let mut a = envelope("too-large-event", &["BA"], v1::Priority::Routine);
    a.event = uncuttable();
    assert!(matches!(store.accept(a).await, Err(StoreError::Leaf(_))));
    assert_eq!(store.audit_len().await.unwrap(), 1, "nothing appended");
    assert!(store.pending(cc("BA"), None, 10).await.unwrap().is_empty());
}

pub(crate) async fn integration_covers_what_is_sequenced_and_catches_up_after_reopening(
    b: &dyn Backend,
) {
    {
        let store = b.open().await;
        for n in 0..5 {
            store.append(refusal(n)).await.unwrap();
        }
        // Sequenced, not integrated: no root, no proof, no leaf hash.
        assert_eq!(store.integrated_size().await.unwrap(), 0);
        assert!(matches!(
            store.root(5).await,
            Err(StoreError::NotIntegrated {
                size: 5,
                integrated: 0
            })
        ));
        assert!(matches!(
            store.inclusion_proof(0, 5).await,
            Err(StoreError::NotIntegrated { .. })
        ));
        assert_eq!(store.leaf_hash(0).await.unwrap(), None);
        assert!(store.leaf_hashes(0, 5).await.unwrap().is_empty());
        assert_eq!(store.integrate().await.unwrap(), 5);
        assert_eq!(store.integrate().await.unwrap(), 5, "idempotent");
        let leaves = store.leaves(0, 5).await.unwrap();
        let hashes: Vec<_> = leaves.iter().map(|l| merkle::leaf_hash(l)).collect();
        assert_eq!(
            store.root(5).await.unwrap(),
            merkle::root_from_leaves(&hashes)
        );
        assert_eq!(
            store.root(3).await.unwrap(),
            merkle::root_from_leaves(&hashes[..3])
        );
        // Sequenced before a restart, never integrated.
        for n in 5..8 {
            store.append(refusal(n)).await.unwrap();
        }
    }
    tokio::task::yield_now().await;
    let store = b.open().await;
    assert_eq!(store.audit_len().await.unwrap(), 8);
    assert_eq!(store.integrated_size().await.unwrap(), 5);
    assert_eq!(store.integrate().await.unwrap(), 8, "catches up");
    let leaves = store.leaves(0, 8).await.unwrap();
    assert_eq!(store.leaves(6, 100).await.unwrap(), leaves[6..]);
    assert!(store.leaves(8, 100).await.unwrap().is_empty());
    let hashes: Vec<_> = leaves.iter().map(|l| merkle::leaf_hash(l)).collect();
    let root = store.root(8).await.unwrap();
    assert_eq!(root, merkle::root_from_leaves(&hashes));
    let proof = store.inclusion_proof(6, 8).await.unwrap();
    merkle::verify_inclusion(6, 8, &hashes[6], &proof, &root).unwrap();
    let consistency = store.consistency_proof(5, 8).await.unwrap();
    merkle::verify_consistency(
        5,
        8,
        &merkle::root_from_leaves(&hashes[..5]),
        &root,
        &consistency,
    )
    .unwrap();
}

/// One write sequences many events; integrations running at once compute
/// the tree of `MemoryTree` and never take the integrated size back.
pub(crate) async fn appends_in_one_write_and_concurrent_integrations_give_the_tree(
    b: &dyn Backend,
) {
    let store = b.open().await;
    store.append(refusal(0)).await.unwrap();
    let range = store
        .append_all((1..300).map(refusal).collect())
        .await
        .unwrap();
    assert_eq!(range, 1..300);
    assert_eq!(store.append_all(Vec::new()).await.unwrap(), 0..0);
    assert_eq!(store.audit_len().await.unwrap(), 300);
    assert_eq!(
        store.audit_range(299, 300).await.unwrap(),
        vec![refusal(299)]
    );
    assert!(matches!(
        store.append_all(vec![refusal(300), uncuttable()]).await,
        Err(StoreError::Leaf(_))
    ));
    assert_eq!(store.audit_len().await.unwrap(), 300, "none or all");

    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let s = store.clone();
            tokio::spawn(async move {
                let mut sizes = Vec::new();
                for _ in 0..3 {
                    sizes.push(s.integrate().await.unwrap());
                }
                sizes
            })
        })
        .collect();
    for t in tasks {
        let sizes = t.await.unwrap();
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
        assert_eq!(sizes.last(), Some(&300));
    }
    assert_eq!(store.integrated_size().await.unwrap(), 300);
    let leaves = store.leaves(0, 300).await.unwrap();
    let mut tree = merkle::MemoryTree::new();
    for l in &leaves {
        tree.append(merkle::leaf_hash(l));
    }
    for size in [1, 2, 99, 100, 101, 256, 257, 300] {
        assert_eq!(store.root(size).await.unwrap(), tree.root(size).unwrap());
    }
    let hashes = store.leaf_hashes(0, 300).await.unwrap();
    assert_eq!(
        hashes,
        leaves
            .iter()
            .map(|l| merkle::leaf_hash(l))
            .collect::<Vec<_>>()
    );
    assert_eq!(store.leaf_hashes(10, 12).await.unwrap(), hashes[10..12]);
    assert!(store.leaf_hashes(300, 400).await.unwrap().is_empty());
    for (index, size) in [(0, 300), (150, 231), (299, 300)] {
        let proof = store.inclusion_proof(index, size).await.unwrap();
        assert_eq!(proof, merkle::inclusion_proof(&tree, index, size).unwrap());
    }
    for (m, n) in [(1, 300), (100, 231), (256, 257), (300, 300)] {
        let proof = store.consistency_proof(m, n).await.unwrap();
        assert_eq!(proof, merkle::consistency_proof(&tree, m, n).unwrap());
    }
}

pub(crate) async fn lanes_deliver_immediate_first_then_receipts_urgent_and_routine(
    b: &dyn Backend,
) {
    use v1::Priority::*;
    let store = b.open().await;
    let store = store.as_ref();
    for n in 0..3 {
        accept(store, &format!("routine{n}"), &["BA"], Routine).await;
    }
    accept(store, "unspecified", &["BA"], Unspecified).await;
    accept(store, "urgent0", &["BA"], Urgent).await;
    // BA sent something to RS; RS's receipt is relayed to BA.
    let mut from_ba = envelope("to-rs", &["RS"], Routine);
    from_ba.sender_node = cc("BA");
    let to_rs = from_ba.id;
    store.accept(from_ba).await.unwrap();
    let rs_seq = seq_of(store, cc("RS"), "to-rs").await;
    store
        .ack_envelope(cc("RS"), rs_seq, ack(to_rs, "receipt0"))
        .await
        .unwrap();
    accept(store, "immediate0", &["BA"], Immediate).await;
    accept(store, "urgent1", &["BA"], Urgent).await;

    let all = store.pending(cc("BA"), None, 100).await.unwrap();
    assert_eq!(
        names(&all),
        [
            "immediate0",
            "receipt0",
            "urgent0",
            "urgent1",
            "routine0",
            "routine1",
            "routine2",
            "unspecified"
        ]
    );
    let lanes: Vec<Lane> = all.iter().map(|q| q.lane).collect();
    assert_eq!(&lanes[..3], [Lane::Immediate, Lane::Receipt, Lane::Urgent]);
    assert_eq!(lanes[7], Lane::Routine, "unspecified is routine");
    assert!(store.pending(cc("RS"), None, 100).await.unwrap().is_empty());
    // A limit takes the head of that order.
    assert_eq!(
        names(&store.pending(cc("BA"), None, 2).await.unwrap()),
        ["immediate0", "receipt0"]
    );
}

pub(crate) async fn a_stream_moves_past_what_it_sent_and_an_immediate_still_goes_first(
    b: &dyn Backend,
) {
    use v1::Priority::*;
    let store = b.open().await;
    let store = store.as_ref();
    for n in 0..5 {
        accept(store, &format!("routine{n}"), &["BA"], Routine).await;
    }
    let mut cursor = Cursor::default();
    let first = store.pending(cc("BA"), Some(&cursor), 2).await.unwrap();
    assert_eq!(names(&first), ["routine0", "routine1"]);
    for q in &first {
        cursor.sent(q.lane, q.seq);
    }
    // Queued while the stream is part-way through the backlog.
    accept(store, "urgent0", &["BA"], Urgent).await;
    accept(store, "immediate0", &["BA"], Immediate).await;
    let next = store.pending(cc("BA"), Some(&cursor), 10).await.unwrap();
    assert_eq!(
        names(&next),
        ["immediate0", "urgent0", "routine2", "routine3", "routine4"],
        "nothing sent again, nothing skipped"
    );
    for q in &next {
        cursor.sent(q.lane, q.seq);
    }
    assert!(
        store
            .pending(cc("BA"), Some(&cursor), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // A stream that carries the immediate lane alone sees only it.
    let only = Cursor::only(Lane::Immediate);
    assert_eq!(
        names(&store.pending(cc("BA"), Some(&only), 10).await.unwrap()),
        ["immediate0"]
    );
    // A new stream (after a reconnect) starts again from what is queued.
    assert_eq!(store.pending(cc("BA"), None, 100).await.unwrap().len(), 7);
}

pub(crate) async fn routine_is_not_starved_by_urgent_traffic(b: &dyn Backend) {
    use v1::Priority::*;
    let store = b.open().await;
    let store = store.as_ref();
    for n in 0..3 {
        accept(store, &format!("routine{n}"), &["BA"], Routine).await;
    }
    for n in 0..20 {
        accept(store, &format!("urgent{n}"), &["BA"], Urgent).await;
    }
    let mut cursor = Cursor::default();
    let mut order = Vec::new();
    // One at a time, as a slow stream would take them.
    for _ in 0..16 {
        let q = store.pending(cc("BA"), Some(&cursor), 1).await.unwrap();
        cursor.sent(q[0].lane, q[0].seq);
        order.push(name(&q[0]));
    }
    let routine = order.iter().filter(|n| n.starts_with("routine")).count();
    assert!(routine >= 2, "routine gets its share: {order:?}");
}

pub(crate) async fn acknowledgements_find_their_item_by_seq_in_any_lane(b: &dyn Backend) {
    use v1::Priority::*;
    let store = b.open().await;
    let store = store.as_ref();
    let routine = accept(store, "routine0", &["BA"], Routine).await;
    let immediate = accept(store, "immediate0", &["BA"], Immediate).await;
    let urgent = accept(store, "urgent0", &["BA"], Urgent).await;
    let r_seq = seq_of(store, cc("BA"), "routine0").await;
    let i_seq = seq_of(store, cc("BA"), "immediate0").await;
    let u_seq = seq_of(store, cc("BA"), "urgent0").await;
    assert_eq!(
        store.queued(cc("BA"), i_seq).await.unwrap(),
        Some(Entry::Envelope(immediate))
    );
    assert_eq!(store.queued(cc("RS"), i_seq).await.unwrap(), None);
    assert_eq!(store.queued(cc("BA"), u64::MAX).await.unwrap(), None);
    // The wrong envelope for a seq is refused, whatever the lanes.
    assert!(matches!(
        store.ack_envelope(cc("BA"), r_seq, ack(urgent, "x")).await,
        Err(StoreError::WrongEnvelope { .. })
    ));
    assert!(!store.delivered(&immediate, cc("BA")).await.unwrap());
    store
        .ack_envelope(cc("BA"), i_seq, ack(immediate, "receipt-i"))
        .await
        .unwrap();
    assert!(store.delivered(&immediate, cc("BA")).await.unwrap());
    assert!(!store.delivered(&immediate, cc("RS")).await.unwrap());
    store
        .ack_envelope(cc("BA"), r_seq, ack(routine, "receipt-r"))
        .await
        .unwrap();
    assert!(matches!(
        store
            .ack_envelope(cc("BA"), r_seq, ack(routine, "receipt-r"))
            .await,
        Err(StoreError::NoSuchItem { .. })
    ));
    assert!(matches!(
        store
            .ack_envelope(cc("BA"), u64::MAX, ack(routine, "receipt-r"))
            .await,
        Err(StoreError::NoSuchItem { .. })
    ));
    assert_eq!(
        names(&store.pending(cc("BA"), None, 10).await.unwrap()),
        ["urgent0"]
    );
    assert_eq!(
        store.queued(cc("BA"), u_seq).await.unwrap(),
        Some(Entry::Envelope(urgent))
    );
    // The receipts went to the sender, in its receipt lane.
    let hr = store.pending(cc("HR"), None, 10).await.unwrap();
    assert_eq!(names(&hr), ["receipt-i", "receipt-r"]);
    assert!(hr.iter().all(|q| q.lane == Lane::Receipt));
    assert!(matches!(
        store
            .ack_envelope(cc("HR"), hr[0].seq, ack(routine, "x"))
            .await,
        Err(StoreError::NoSuchItem { .. })
    ));
    assert!(matches!(
        store.ack_receipt(cc("BA"), u_seq).await,
        Err(StoreError::ReceiptRequired { .. })
    ));
    assert_eq!(
        store.queued(cc("BA"), u_seq).await.unwrap(),
        Some(Entry::Envelope(urgent)),
        "a refused acknowledgement removes nothing"
    );
    assert_eq!(
        store.queued(cc("HR"), hr[1].seq).await.unwrap(),
        Some(Entry::Receipt)
    );
    store.ack_receipt(cc("HR"), hr[1].seq).await.unwrap();
    store.ack_receipt(cc("HR"), hr[0].seq).await.unwrap();
    assert!(matches!(
        store.ack_receipt(cc("HR"), hr[0].seq).await,
        Err(StoreError::NoSuchItem { .. })
    ));
    assert!(store.pending(cc("HR"), None, 10).await.unwrap().is_empty());
}

pub(crate) async fn a_partial_acknowledgement_keeps_the_envelope_for_the_others(b: &dyn Backend) {
    let store = b.open().await;
    let store = store.as_ref();
    let to = ["BA", "RS", "ME"];
    let id = accept(store, "alert", &to, v1::Priority::Immediate).await;
    let mut left = to.len();
    for node in to {
        let seq = seq_of(store, cc(node), "alert").await;
        let first = store
            .ack_envelope(cc(node), seq, ack(id, node))
            .await
            .unwrap();
        assert_eq!(
            store.audit_range(first, first + 1).await.unwrap(),
            vec![refusal(2000)],
            "the acknowledgement's event is sequenced"
        );
        left -= 1;
        for other in &to[to.len() - left..] {
            let pending = store.pending(cc(other), None, 10).await.unwrap();
            assert_eq!(names(&pending), ["alert"], "{other} still has it");
            let MailItem::Envelope(got, env) = &pending[0].item else {
                panic!("an envelope");
            };
            assert_eq!(*got, id);
            assert_eq!(env.ciphertext, vec![7; 64]);
        }
    }
    let receipts = store.pending(cc("HR"), None, 10).await.unwrap();
    assert_eq!(names(&receipts), ["BA", "RS", "ME"]);
}

pub(crate) async fn the_queue_depth_counts_what_each_node_has_yet_to_acknowledge(b: &dyn Backend) {
    use v1::Priority::*;
    let depths = |store: Arc<dyn BrokerStore>| async move {
        let mut d = Vec::new();
        for node in ["BA", "RS", "HR", "ME"] {
            d.push(store.queue_depth(cc(node)).await.unwrap());
        }
        d
    };
    let store = b.open().await;
    assert_eq!(depths(store.clone()).await, [0, 0, 0, 0]);
    let a = accept(store.as_ref(), "a", &["BA", "RS"], Routine).await;
    accept(store.as_ref(), "b", &["BA"], Immediate).await;
    accept(store.as_ref(), "c", &["BA"], Urgent).await;
    assert_eq!(depths(store.clone()).await, [3, 1, 0, 0]);
    // An acknowledgement takes the item off and queues its receipt for
    // the sender (HR).
    let seq = seq_of(store.as_ref(), cc("BA"), "a").await;
    store
        .ack_envelope(cc("BA"), seq, ack(a, "BA"))
        .await
        .unwrap();
    assert_eq!(depths(store.clone()).await, [2, 1, 1, 0]);
    let receipt = store.pending(cc("HR"), None, 10).await.unwrap()[0].seq;
    store.ack_receipt(cc("HR"), receipt).await.unwrap();
    assert_eq!(depths(store.clone()).await, [2, 1, 0, 0]);
    drop(store);
    tokio::task::yield_now().await;
    let store = b.open().await;
    assert_eq!(depths(store).await, [2, 1, 0, 0], "after reopening");
}

pub(crate) async fn lanes_and_seqs_survive_reopening(b: &dyn Backend) {
    use v1::Priority::*;
    let before;
    {
        let store = b.open().await;
        let store = store.as_ref();
        accept(store, "routine0", &["BA"], Routine).await;
        accept(store, "immediate0", &["BA"], Immediate).await;
        accept(store, "urgent0", &["BA"], Urgent).await;
        before = store.pending(cc("BA"), None, 10).await.unwrap();
    }
    tokio::task::yield_now().await;
    let store = b.open().await;
    let store = store.as_ref();
    let after = store.pending(cc("BA"), None, 10).await.unwrap();
    assert_eq!(names(&after), ["immediate0", "urgent0", "routine0"]);
    let seqs = |qs: &[Queued]| qs.iter().map(|q| (q.seq, q.lane)).collect::<Vec<_>>();
    assert_eq!(seqs(&after), seqs(&before));
    // New items continue the seq counter.
    accept(store, "routine1", &["BA"], Routine).await;
    assert_eq!(seq_of(store, cc("BA"), "routine1").await, 3);
}

/// Waits, bounded, until `rx` shows `done`; a backend may deliver its
/// wake-ups a moment after the write returned (PostgreSQL's notifications).
async fn until<T: Clone>(
    rx: &mut tokio::sync::watch::Receiver<T>,
    done: impl FnMut(&T) -> bool,
) -> T {
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(done))
        .await
        .expect("the wake-up came")
        .unwrap()
        .clone()
}

pub(crate) async fn a_wakeup_counts_immediates_and_the_nodes_acknowledgements(b: &dyn Backend) {
    use v1::Priority::*;
    let store = b.open().await;
    let store = store.as_ref();
    let mut ba = store.subscribe(cc("BA")).await.unwrap();
    let mut rs = store.subscribe(cc("RS")).await.unwrap();
    let mut hr = store.subscribe(cc("HR")).await.unwrap();
    let routine = accept(store, "routine0", &["BA"], Routine).await;
    accept(store, "immediate0", &["BA"], Immediate).await;
    let w = until(&mut ba, |w| w.queued >= 2).await;
    assert_eq!((w.queued, w.immediate, w.acked), (2, 1, 0));
    let seq = seq_of(store, cc("BA"), "routine0").await;
    store
        .ack_envelope(cc("BA"), seq, ack(routine, "receipt"))
        .await
        .unwrap();
    assert_eq!(until(&mut ba, |w| w.acked >= 1).await.acked, 1);
    // The receipt was queued for the sender.
    assert_eq!(until(&mut hr, |w| w.queued >= 1).await.queued, 1);
    let receipt = seq_of(store, cc("HR"), "receipt").await;
    store.ack_receipt(cc("HR"), receipt).await.unwrap();
    assert_eq!(until(&mut hr, |w| w.acked >= 1).await.acked, 1);
    assert!(!rs.has_changed().unwrap(), "only the nodes concerned");
    let _ = rs.borrow_and_update();
}

pub(crate) async fn a_duplicate_id_is_refused_and_writes_nothing(b: &dyn Backend) {
    let store = b.open().await;
    let a = envelope("first", &["BA"], v1::Priority::Routine);
    let id = a.id;
    assert!(!store.seen(&id).await.unwrap());
    assert_eq!(store.accept(a).await.unwrap(), 0);
    assert!(store.seen(&id).await.unwrap());
    let mut again = envelope("again", &["RS"], v1::Priority::Routine);
    again.id = id;
    assert!(matches!(
        store.accept(again).await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(store.audit_len().await.unwrap(), 1);
    assert!(store.pending(cc("RS"), None, 10).await.unwrap().is_empty());
    assert_eq!(
        names(&store.pending(cc("BA"), None, 10).await.unwrap()),
        ["first"]
    );
    // Concurrent acceptances of one id: exactly one wins.
    let b2 = envelope("race", &["ME"], v1::Priority::Routine);
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let s = store.clone();
            let mut a = envelope("race", &["ME"], v1::Priority::Routine);
            a.id = b2.id;
            tokio::spawn(async move { s.accept(a).await })
        })
        .collect();
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Duplicate) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(store.pending(cc("ME"), None, 10).await.unwrap().len(), 1);
}

pub(crate) async fn federation_state_is_kept_with_the_acceptance(b: &dyn Backend) {
    let store = b.open().await;
    let police: AgencyId = "HR/police".parse().unwrap();
    let court: AgencyId = "BA/court".parse().unwrap();
    let third: AgencyId = "RS/police".parse().unwrap();
    let original = EnvelopeId::at(1);
    let mut a = envelope("granting", &["BA"], v1::Priority::Urgent);
    a.created_at_ms = 1_000;
    a.summary.sender_agency = police.to_string();
    a.grants = vec![(original, court.clone(), third.clone())];
    let id = a.id;
    store.append(refusal(0)).await.unwrap();
    let index = store.accept(a).await.unwrap();
    assert_eq!(index, 1);
    let accepted = store.accepted(&id).await.unwrap().unwrap();
    assert_eq!(accepted.log_index, 1);
    assert_eq!(accepted.summary.priority, v1::Priority::Urgent as i32);
    assert_eq!(accepted.provider(), Some(police));
    assert!(store.accepted(&original).await.unwrap().is_none());
    assert!(store.granted(&original, &court, &third).await.unwrap());
    assert!(!store.granted(&original, &third, &court).await.unwrap());
    assert!(!store.granted(&id, &court, &third).await.unwrap());
    let mut later = envelope("later", &["BA"], v1::Priority::Routine);
    later.created_at_ms = 5_000;
    let later_id = later.id;
    store.accept(later).await.unwrap();
    assert_eq!(store.prune_seen(2_000).await.unwrap(), 1);
    assert!(!store.seen(&id).await.unwrap());
    assert!(store.seen(&later_id).await.unwrap());
    assert!(
        store.accepted(&id).await.unwrap().is_some(),
        "a pruned id keeps its summary"
    );
    assert_eq!(store.prune_seen(2_000).await.unwrap(), 0);
}

pub(crate) async fn checkpoints_and_cosignatures(b: &dyn Backend) {
    {
        let store = b.open().await;
        assert_eq!(store.latest_checkpoint().await.unwrap(), None);
        store
            .append_all((0..3).map(refusal).collect())
            .await
            .unwrap();
        store.integrate().await.unwrap();
        store
            .put_checkpoint(1, b"note of 1".to_vec())
            .await
            .unwrap();
        store
            .put_checkpoint(3, b"note of 3".to_vec())
            .await
            .unwrap();
        assert_eq!(
            store.latest_checkpoint().await.unwrap(),
            Some((3, b"note of 3".to_vec()))
        );
        store
            .put_cosignature(3, cc("RS"), "— RS sig".into())
            .await
            .unwrap();
        store
            .put_cosignature(3, cc("BA"), "— BA sig".into())
            .await
            .unwrap();
        store
            .put_cosignature(1, cc("BA"), "— BA old".into())
            .await
            .unwrap();
    }
    tokio::task::yield_now().await;
    let store = b.open().await;
    assert_eq!(
        store.latest_checkpoint().await.unwrap(),
        Some((3, b"note of 3".to_vec()))
    );
    assert_eq!(
        store.checkpoint(1).await.unwrap(),
        Some(b"note of 1".to_vec())
    );
    assert_eq!(store.checkpoint(2).await.unwrap(), None);
    let mut lines = store.cosignatures(3).await.unwrap();
    lines.sort();
    assert_eq!(lines, ["— BA sig", "— RS sig"]);
    assert_eq!(store.cosignatures(1).await.unwrap(), ["— BA old"]);
    assert!(store.cosignatures(2).await.unwrap().is_empty());
}

pub(crate) async fn versions_in_force_only_go_up(b: &dyn Backend) {
    use crate::protocol::directory::DirectoryVersion;
    use crate::protocol::policy::{BundleInfo, Owner};
    use crate::storage::in_force::InForce;
    let v = |version, digest| InForce {
        directory: Some(DirectoryVersion {
            version,
            digest: [digest; 32],
        }),
        bundles: vec![BundleInfo {
            owner: Owner::Framework,
            version,
            digest: [digest; 32],
        }],
    };
    {
        let store = b.open().await;
        assert_eq!(store.in_force().await.unwrap(), InForce::default());
        store.put_in_force(&v(2, 2)).await.unwrap();
        store.put_in_force(&v(1, 1)).await.unwrap();
        assert_eq!(store.in_force().await.unwrap(), v(2, 2), "never down");
        store.put_in_force(&v(2, 9)).await.unwrap();
        assert_eq!(store.in_force().await.unwrap(), v(2, 2), "same version");
    }
    tokio::task::yield_now().await;
    let store = b.open().await;
    assert_eq!(store.in_force().await.unwrap(), v(2, 2));
    store.put_in_force(&v(3, 3)).await.unwrap();
    assert_eq!(store.in_force().await.unwrap(), v(3, 3));
}

pub(crate) async fn the_integrator_is_told_what_was_sequenced(b: &dyn Backend) {
    let store = b.open().await;
    let mut sequenced = store.sequenced().await.unwrap();
    assert_eq!(*sequenced.borrow_and_update(), 0);
    store.append(refusal(0)).await.unwrap();
    assert_eq!(until(&mut sequenced, |n| *n >= 1).await, 1);
    store
        .accept(envelope("e", &["BA"], v1::Priority::Routine))
        .await
        .unwrap();
    assert_eq!(until(&mut sequenced, |n| *n >= 2).await, 2);
    assert_eq!(store.integrate().await.unwrap(), 2);
}

//! The sled broker store: durability, group commit, sequencing and
//! integration, wake-ups.

use std::sync::atomic::Ordering;

use super::*;
use crate::protocol::merkle;
use crate::storage::broker::{Acceptance, Checkpoints, Integrator, Mailboxes, Sequencer};
use crate::storage::sled::GatedFlush;

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

/// A store whose flushes wait for the returned gate (shared with the
/// batch tests).
pub(super) fn gated(
    dir: &std::path::Path,
) -> (
    std::sync::Arc<SledStore>,
    std::sync::Arc<GatedFlush>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let mut flush = None;
    let store = SledStore::open_with(dir, |db| {
        let (f, rx) = GatedFlush::over(db);
        flush = Some((f.clone(), rx));
        f
    })
    .unwrap();
    let (flush, rx) = flush.unwrap();
    (std::sync::Arc::new(store), flush, rx)
}

fn acceptance(to: &str) -> Acceptance {
    Acceptance {
        id: EnvelopeId::at(0),
        created_at_ms: 0,
        sender_node: "HR".parse().unwrap(),
        envelope: v1::Envelope {
            header: b"header".to_vec(),
            ..Default::default()
        },
        recipient_nodes: vec![to.parse().unwrap()],
        event: refusal(100),
        summary: v1::EnvelopeSummary::default(),
        grants: vec![],
    }
}

#[tokio::test]
async fn an_entry_is_in_the_log_only_once_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (store, flush, mut started) = gated(dir.path());
    let s = store.clone();
    let append = tokio::spawn(async move { s.append(refusal(0)).await });
    started.recv().await.unwrap();
    // Applied, not yet flushed: no reader and no checkpoint sees it.
    assert_eq!(store.audit_len().await.unwrap(), 0);
    assert!(store.leaves(0, 10).await.unwrap().is_empty());
    assert!(store.audit_range(0, 10).await.unwrap().is_empty());
    flush.gate.add_permits(1);
    assert_eq!(append.await.unwrap().unwrap(), 0);
    assert_eq!(store.audit_len().await.unwrap(), 1);
    assert_eq!(store.leaves(0, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_queued_envelope_is_delivered_only_once_its_submit_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (store, flush, mut started) = gated(dir.path());
    let ba: Country = "BA".parse().unwrap();
    let s = store.clone();
    let accept = tokio::spawn(async move { s.accept(acceptance("BA")).await });
    started.recv().await.unwrap();
    assert!(store.pending(ba, None, 10).await.unwrap().is_empty());
    assert!(store.queued(ba, 0).await.unwrap().is_none());
    flush.gate.add_permits(1);
    assert_eq!(accept.await.unwrap().unwrap(), 0);
    assert_eq!(store.pending(ba, None, 10).await.unwrap().len(), 1);
    assert!(store.queued(ba, 0).await.unwrap().is_some());
}

#[tokio::test]
async fn a_checkpoint_is_served_only_once_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (store, flush, mut started) = gated(dir.path());
    flush.gate.add_permits(1);
    store.append(refusal(0)).await.unwrap();
    started.recv().await.unwrap();
    let s = store.clone();
    let put = tokio::spawn(async move { s.put_checkpoint(1, b"note of 1".to_vec()).await });
    started.recv().await.unwrap();
    assert_eq!(store.latest_checkpoint().await.unwrap(), None);
    assert_eq!(store.checkpoint(1).await.unwrap(), None);
    flush.gate.add_permits(1);
    put.await.unwrap().unwrap();
    assert_eq!(
        store.latest_checkpoint().await.unwrap(),
        Some((1, b"note of 1".to_vec()))
    );
    assert_eq!(
        store.checkpoint(1).await.unwrap(),
        Some(b"note of 1".to_vec())
    );
}

#[tokio::test]
async fn a_failed_flush_is_fatal_and_what_it_covered_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let (store, flush, mut started) = gated(dir.path());
    let ba: Country = "BA".parse().unwrap();
    flush.gate.add_permits(1);
    store.append(refusal(0)).await.unwrap();
    started.recv().await.unwrap();

    flush.fail.store(true, Ordering::SeqCst);
    flush.gate.add_permits(1);
    let err = store.accept(acceptance("BA")).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("failed: No space left on device (os error 28); stopping"),
        "{err}"
    );
    let reason = store.failed().await;
    assert!(reason.starts_with(&format!("flush of {} failed", dir.path().display())));
    assert_eq!(
        store.audit_len().await.unwrap(),
        1,
        "the unflushed entry is not served"
    );
    assert!(store.pending(ba, None, 10).await.unwrap().is_empty());

    // Nothing is acknowledged any more, even if the disk came back.
    flush.fail.store(false, Ordering::SeqCst);
    flush.gate.add_permits(10);
    assert!(store.append(refusal(1)).await.is_err());
    assert!(store.put_checkpoint(1, b"note".to_vec()).await.is_err());
    assert_eq!(store.latest_checkpoint().await.unwrap(), None);
}

#[tokio::test(flavor = "current_thread")]
async fn concurrent_commits_share_one_flush() {
    let dir = tempfile::tempdir().unwrap();
    let (store, flush, mut started) = gated(dir.path());
    // A flush held open, so that the 64 commits below, whose transactions
    // run on blocking threads and finish at their own pace, all wait
    // together for the next one.
    let commit = store.commit.clone();
    let held = tokio::spawn(async move { commit.commit().await });
    started.recv().await.unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|n| {
            let s = store.clone();
            tokio::spawn(async move { s.append(refusal(n)).await.unwrap() })
        })
        .collect();
    while store.commit.requested() < 65 {
        tokio::task::yield_now().await;
    }
    flush.gate.add_permits(2);
    held.await.unwrap().unwrap();
    let mut indices = Vec::new();
    for t in tasks {
        indices.push(t.await.unwrap());
    }
    indices.sort_unstable();
    assert_eq!(
        indices,
        (0..64).collect::<Vec<u64>>(),
        "dense, unique indices"
    );
    assert_eq!(
        store.flushes(),
        2,
        "64 commits waiting together share one flush after the held one"
    );
    assert_eq!(store.audit_len().await.unwrap(), 64);
}

/// One write sequences many events; integrations running at once, in
/// batches smaller than the backlog, compute the tree of `MemoryTree` and
/// never take the integrated size back.
#[tokio::test]
async fn batched_appends_and_concurrent_batched_integrations_give_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(SledStore::open(dir.path()).unwrap());
    store.append(refusal(0)).await.unwrap();
    let flushes = store.flushes();
    let range = store
        .append_all((1..300).map(refusal).collect())
        .await
        .unwrap();
    assert_eq!(range, 1..300);
    assert_eq!(store.flushes(), flushes + 1, "one write, one flush");
    assert_eq!(store.audit_len().await.unwrap(), 300);
    assert_eq!(
        store.audit_range(299, 300).await.unwrap(),
        vec![refusal(299)]
    );
    let uncuttable = v1::AuditEvent {
        at_ms: 1,
        event: Some(v1::audit_event::Event::RecordsPurged(v1::RecordsPurged {
            node: "HR".into(),
            envelope_ids: vec![vec![1; 16]; crate::protocol::leaf::MAX_LEAF_BYTES / 16],
        })),
    };
    assert!(matches!(
        store.append_all(vec![refusal(300), uncuttable]).await,
        Err(StoreError::Leaf(_))
    ));
    assert_eq!(store.audit_len().await.unwrap(), 300, "none or all");

    let tasks: Vec<_> = [7u64, 64, 5, 300]
        .into_iter()
        .map(|batch| {
            let trees = store.trees.clone();
            tokio::task::spawn_blocking(move || {
                let mut sizes = Vec::new();
                for target in [100, 231, 300] {
                    sizes.push(trees.integrate(target, batch).unwrap());
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
    assert_eq!(store.integrate().await.unwrap(), 300);
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
        merkle::verify_inclusion(
            index,
            size,
            &hashes[index as usize],
            &proof,
            &tree.root(size).unwrap(),
        )
        .unwrap();
    }
}

#[tokio::test]
async fn only_what_is_on_disk_is_integrated_and_the_integrator_is_told() {
    let dir = tempfile::tempdir().unwrap();
    let (store, flush, mut started) = gated(dir.path());
    let mut sequenced = store.sequenced().await.unwrap();
    let s = store.clone();
    let append = tokio::spawn(async move { s.append(refusal(0)).await });
    started.recv().await.unwrap();
    // Applied, not flushed: nothing to integrate, nobody woken.
    assert_eq!(store.integrate().await.unwrap(), 0);
    assert!(!sequenced.has_changed().unwrap());
    flush.gate.add_permits(1);
    append.await.unwrap().unwrap();
    sequenced.changed().await.unwrap();
    assert_eq!(*sequenced.borrow_and_update(), 1);
    assert_eq!(store.integrate().await.unwrap(), 1);
}

#[tokio::test]
async fn a_delivery_wakes_its_node_once_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (store, flush, mut started) = gated(dir.path());
    let ba: Country = "BA".parse().unwrap();
    let mut ba_wakeup = store.subscribe(ba).await.unwrap();
    let rs_wakeup = store.subscribe("RS".parse().unwrap()).await.unwrap();
    let s = store.clone();
    let accept = tokio::spawn(async move { s.accept(acceptance("BA")).await });
    started.recv().await.unwrap();
    assert!(!ba_wakeup.has_changed().unwrap(), "not before the flush");
    flush.gate.add_permits(1);
    accept.await.unwrap().unwrap();
    ba_wakeup.changed().await.unwrap();
    ba_wakeup.borrow_and_update();
    assert_eq!(store.pending(ba, None, 10).await.unwrap().len(), 1);
    assert!(!rs_wakeup.has_changed().unwrap(), "only the recipient");
}

/// Every root, inclusion and consistency proof of a store that keeps the
/// upper levels in memory, as the store serves it, equals the proof read
/// node by node from `merkle_nodes` and the proof of `MemoryTree`, at
/// every size and index of a tree of a few hundred entries: before a
/// crash, after a crash that left nodes beyond the integrated size, and
/// after integrating past it again.
#[tokio::test]
async fn cached_upper_levels_give_the_proofs_of_the_stored_nodes() {
    async fn check(store: &SledStore, leaves: &[Vec<u8>]) {
        let size = store.integrated_size().await.unwrap();
        let mut tree = merkle::MemoryTree::new();
        for l in &leaves[..size as usize] {
            tree.append(merkle::leaf_hash(l));
        }
        let plain = log::StoredNodes(&store.trees.nodes);
        // Every size up to 70, then a spread, and the whole tree.
        for n in (1..=size).filter(|n| *n <= 70 || n % 11 == 0 || *n == size) {
            assert_eq!(store.root(n).await.unwrap(), tree.root(n).unwrap(), "{n}");
            for i in (0..n).step_by(if n > 64 { 7 } else { 1 }) {
                let fast = store.inclusion_proof(i, n).await.unwrap();
                assert_eq!(fast, merkle::inclusion_proof(&plain, i, n).unwrap());
                assert_eq!(fast, merkle::inclusion_proof(&tree, i, n).unwrap());
            }
            for m in (1..=n).step_by(if n > 64 { 5 } else { 1 }) {
                let fast = store.consistency_proof(m, n).await.unwrap();
                assert_eq!(fast, merkle::consistency_proof(&plain, m, n).unwrap());
                assert_eq!(fast, merkle::consistency_proof(&tree, m, n).unwrap());
            }
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let leaves: Vec<Vec<u8>> = (0..300)
        .map(|n| crate::protocol::leaf::encode(&refusal(n)).unwrap())
        .collect();
    {
        let store = SledStore::open_caching_from(dir.path(), 2).unwrap();
        store
            .append_all((0..150).map(refusal).collect())
            .await
            .unwrap();
        assert_eq!(store.integrate().await.unwrap(), 150);
        assert!(store.trees.upper.len() > 0, "the upper levels are held");
        check(&store, &leaves).await;
        // A crash during a later integration: its nodes were written, the
        // integrated size was not.
        store.trees.meta.insert(META_INTEGRATED, &be(61)).unwrap();
        store.db().flush().unwrap();
    }
    let store = SledStore::open_caching_from(dir.path(), 2).unwrap();
    assert_eq!(store.integrated_size().await.unwrap(), 61);
    check(&store, &leaves).await;
    store
        .append_all((150..300).map(refusal).collect())
        .await
        .unwrap();
    // In uneven batches, so that the cache grows from several of them.
    assert_eq!(store.trees.integrate(173, 9).unwrap(), 173);
    assert_eq!(store.integrate().await.unwrap(), 300);
    check(&store, &leaves).await;
    drop(store);
    // Nothing in memory, and everything in memory, give the same.
    for level in [0, 63] {
        let store = SledStore::open_caching_from(dir.path(), level).unwrap();
        check(&store, &leaves).await;
    }
}

/// The backend-neutral tests of the broker's store
/// ([`crate::storage::broker::conformance`]), on sled.
mod conformance {
    use std::sync::Arc;

    use crate::storage::broker::BrokerStore;
    use crate::storage::broker::conformance::Backend;
    use crate::storage::sled::broker::SledStore;

    pub(super) struct SledBackend(tempfile::TempDir);

    #[async_trait::async_trait]
    impl Backend for SledBackend {
        async fn open(&self) -> Arc<dyn BrokerStore> {
            Arc::new(SledStore::open(self.0.path()).unwrap())
        }
    }

    async fn sled() -> Option<SledBackend> {
        Some(SledBackend(tempfile::tempdir().unwrap()))
    }

    async fn done(_: SledBackend) {}

    crate::all_conformance_tests!(sled(), done);
}

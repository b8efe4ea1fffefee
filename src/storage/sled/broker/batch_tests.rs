//! Acceptances in batches: all land, in order, each with its own answer;
//! duplicates fail alone; a failed flush fails its whole batch; batches
//! share transactions and flushes.

use std::sync::atomic::Ordering;

use super::tests::gated;
use super::*;
use crate::storage::broker::{Acceptance, MailItem, Mailboxes, Sequencer};

fn ba() -> Country {
    "BA".parse().unwrap()
}

/// An acceptance for BA with envelope id `id`, its header `name`.
fn acceptance(id: EnvelopeId, name: &str) -> Acceptance {
    Acceptance {
        id,
        created_at_ms: 1,
        sender_node: "HR".parse().unwrap(),
        envelope: v1::Envelope {
            header: name.as_bytes().to_vec(),
            ..Default::default()
        },
        recipient_nodes: vec![ba()],
        event: v1::AuditEvent {
            at_ms: 1,
            event: Some(v1::audit_event::Event::SubmissionRefused(
                v1::SubmissionRefused::default(),
            )),
        },
        summary: v1::EnvelopeSummary::default(),
        grants: vec![],
    }
}

/// The headers of what is queued for BA, in queue order.
async fn queued_names(store: &SledStore) -> Vec<String> {
    store
        .pending(ba(), None, usize::MAX)
        .await
        .unwrap()
        .iter()
        .map(|q| match &q.item {
            MailItem::Envelope(_, env) => String::from_utf8(env.header.clone()).unwrap(),
            MailItem::Receipt(_) => "receipt".into(),
        })
        .collect()
}

fn spawn_accept(
    store: &Arc<SledStore>,
    id: EnvelopeId,
    name: &str,
) -> tokio::task::JoinHandle<Result<u64, StoreError>> {
    let s = store.clone();
    let a = acceptance(id, name);
    tokio::spawn(async move { s.accept(a).await })
}

/// Waits until `n` acceptances wait for the writer.
async fn until_waiting(store: &SledStore, n: usize) {
    while store.writes.lock().unwrap().items.len() < n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_acceptances_all_land_in_fewer_transactions_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, flush, _started) = gated(dir.path());
    flush.gate.add_permits(1_000);
    const N: usize = 200;
    // The first one starts the writer; while it is applied and flushed the
    // others arrive, and find the writer running.
    let first = spawn_accept(&store, EnvelopeId::at(1), "first");
    let tasks: Vec<_> = (1..N)
        .map(|n| spawn_accept(&store, EnvelopeId::at(1), &format!("e{n}")))
        .collect();
    let mut indexes = vec![first.await.unwrap().unwrap()];
    for t in tasks {
        indexes.push(t.await.unwrap().unwrap());
    }
    indexes.sort_unstable();
    assert_eq!(indexes, (0..N as u64).collect::<Vec<_>>(), "contiguous");
    let mut names = queued_names(&store).await;
    assert_eq!(names.len(), N, "each queued once");
    names.sort();
    names.dedup();
    assert_eq!(names.len(), N, "each queued once");
    assert_eq!(store.audit_len().await.unwrap(), N as u64);
    let flushes = store.flushes();
    assert_eq!(flushes, store.commit.requested(), "one commit per batch");
}

#[tokio::test]
async fn while_a_batch_is_flushed_the_next_gathers_and_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let (store, flush, mut started) = gated(dir.path());
    const N: usize = 200;
    let first = spawn_accept(&store, EnvelopeId::at(1), "first");
    started.recv().await.unwrap();
    let tasks: Vec<_> = (1..N)
        .map(|n| spawn_accept(&store, EnvelopeId::at(1), &format!("e{n}")))
        .collect();
    until_waiting(&store, N - 1).await;
    flush.gate.add_permits(N);
    let mut indexes = vec![first.await.unwrap().unwrap()];
    for t in tasks {
        indexes.push(t.await.unwrap().unwrap());
    }
    assert_eq!(
        indexes,
        (0..N as u64).collect::<Vec<_>>(),
        "in arrival order"
    );
    assert_eq!(queued_names(&store).await.len(), N);
    assert!(store.commit.requested() < N as u64);
    assert!(store.flushes() < N as u64);
    assert_eq!(store.flushes(), 2, "the held one, then one for the rest");
}

#[tokio::test]
async fn a_batch_waits_while_a_flush_runs_and_then_shares_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, flush, mut started) = gated(dir.path());
    let first = spawn_accept(&store, EnvelopeId::at(1), "first");
    started.recv().await.unwrap();
    // The writer waits on the first flush; these wait for the writer.
    let rest: Vec<_> = (0..10)
        .map(|n| spawn_accept(&store, EnvelopeId::at(1), &format!("e{n}")))
        .collect();
    until_waiting(&store, 10).await;
    assert!(queued_names(&store).await.is_empty(), "nothing is on disk");
    flush.gate.add_permits(2);
    assert_eq!(first.await.unwrap().unwrap(), 0);
    let mut indexes = Vec::new();
    for t in rest {
        indexes.push(t.await.unwrap().unwrap());
    }
    assert_eq!(indexes, (1..=10).collect::<Vec<_>>(), "in arrival order");
    assert_eq!(store.commit.requested(), 2, "one commit per batch");
    assert_eq!(store.flushes(), 2);
    let mut expected = vec!["first".to_string()];
    expected.extend((0..10).map(|n| format!("e{n}")));
    assert_eq!(queued_names(&store).await, expected);
}

#[tokio::test]
async fn a_duplicate_fails_alone_in_its_batch_and_in_a_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, flush, mut started) = gated(dir.path());
    let held = spawn_accept(&store, EnvelopeId::at(1), "held");
    started.recv().await.unwrap();
    flush.gate.add_permits(1);
    held.await.unwrap().unwrap();

    let (x, y) = (EnvelopeId::at(1), EnvelopeId::at(1));
    // Hold the writer in a flush so that the next four share one batch.
    let blocker = spawn_accept(&store, EnvelopeId::at(1), "blocker");
    started.recv().await.unwrap();
    let batch = [
        spawn_accept(&store, x, "x"),
        spawn_accept(&store, x, "x again"),
        spawn_accept(&store, y, "y"),
        spawn_accept(&store, x, "x a third time"),
    ];
    until_waiting(&store, 4).await;
    flush.gate.add_permits(100);
    blocker.await.unwrap().unwrap();
    let mut answers = Vec::new();
    for t in batch {
        answers.push(t.await.unwrap());
    }
    assert!(matches!(answers[0], Ok(2)), "{:?}", answers[0]);
    assert!(matches!(answers[1], Err(StoreError::Duplicate)));
    assert!(matches!(answers[2], Ok(3)), "{:?}", answers[2]);
    assert!(matches!(answers[3], Err(StoreError::Duplicate)));
    assert_eq!(store.commit.requested(), 3, "the four shared one batch");

    // A later batch: the duplicate fails, its companion lands.
    let later = [spawn_accept(&store, y, "y again"), {
        spawn_accept(&store, EnvelopeId::at(1), "z")
    }];
    let mut answers = Vec::new();
    for t in later {
        answers.push(t.await.unwrap());
    }
    assert!(matches!(answers[0], Err(StoreError::Duplicate)));
    assert!(matches!(answers[1], Ok(4)), "{:?}", answers[1]);
    assert_eq!(
        queued_names(&store).await,
        ["held", "blocker", "x", "y", "z"],
        "a duplicate leaves nothing behind"
    );
    assert_eq!(store.audit_len().await.unwrap(), 5);
    // A batch of duplicates only writes nothing and needs no flush.
    let before = store.commit.requested();
    assert!(matches!(
        store.accept(acceptance(x, "x once more")).await,
        Err(StoreError::Duplicate)
    ));
    assert_eq!(store.commit.requested(), before);
}

#[tokio::test]
async fn a_failed_flush_fails_every_acceptance_of_its_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (store, flush, mut started) = gated(dir.path());
    let first = spawn_accept(&store, EnvelopeId::at(1), "first");
    started.recv().await.unwrap();
    let batch: Vec<_> = (0..5)
        .map(|n| spawn_accept(&store, EnvelopeId::at(1), &format!("e{n}")))
        .collect();
    until_waiting(&store, 5).await;
    flush.gate.add_permits(1);
    assert_eq!(first.await.unwrap().unwrap(), 0);
    // The batch of five is applied and its flush has started: it fails.
    started.recv().await.unwrap();
    flush.fail.store(true, Ordering::SeqCst);
    flush.gate.add_permits(1);
    for t in batch {
        let err = t.await.unwrap().unwrap_err();
        assert!(
            err.to_string()
                .contains("failed: No space left on device (os error 28); stopping"),
            "{err}"
        );
    }
    assert_eq!(store.flushes(), 2);
    assert_eq!(queued_names(&store).await, ["first"], "nothing unflushed");
    assert_eq!(store.audit_len().await.unwrap(), 1);
    // And every later acceptance fails too.
    flush.fail.store(false, Ordering::SeqCst);
    flush.gate.add_permits(10);
    assert!(
        store
            .accept(acceptance(EnvelopeId::at(1), "later"))
            .await
            .is_err()
    );
    assert_eq!(queued_names(&store).await, ["first"]);
}

#[tokio::test]
async fn an_acceptance_whose_event_cannot_be_a_leaf_fails_alone() {
    use crate::protocol::leaf::MAX_LEAF_BYTES;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SledStore::open(dir.path()).unwrap());
    let mut a = acceptance(EnvelopeId::at(1), "too big");
    a.event = v1::AuditEvent {
        at_ms: 1,
        event: Some(v1::audit_event::Event::RecordsPurged(v1::RecordsPurged {
            node: "HR".into(),
            envelope_ids: vec![vec![1; 16]; MAX_LEAF_BYTES / 16],
        })),
    };
    let s = store.clone();
    let big = tokio::spawn(async move { s.accept(a).await });
    let ok = spawn_accept(&store, EnvelopeId::at(1), "fine");
    assert!(matches!(big.await.unwrap(), Err(StoreError::Leaf(_))));
    assert_eq!(ok.await.unwrap().unwrap(), 0);
    assert_eq!(queued_names(&store).await, ["fine"]);
}

fn envelope_ack(id: EnvelopeId, receipt: &str) -> crate::storage::broker::EnvelopeAck {
    crate::storage::broker::EnvelopeAck {
        id,
        receipt: v1::SignedReceipt {
            body: receipt.as_bytes().to_vec(),
            ..Default::default()
        },
        events: vec![acceptance(id, "").event],
        delivered: true,
    }
}

#[tokio::test]
async fn acknowledgements_in_one_batch_each_see_the_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (store, flush, mut started) = gated(dir.path());
    let (hr, si): (Country, Country) = ("HR".parse().unwrap(), "SI".parse().unwrap());
    let id = EnvelopeId::at(1);
    let mut a = acceptance(id, "to both");
    a.recipient_nodes = vec![ba(), si];
    let s = store.clone();
    let accepted = tokio::spawn(async move { s.accept(a).await });
    started.recv().await.unwrap();
    flush.gate.add_permits(1);
    assert_eq!(accepted.await.unwrap().unwrap(), 0);
    let seq_ba = store.pending(ba(), None, 10).await.unwrap()[0].seq;
    let seq_si = store.pending(si, None, 10).await.unwrap()[0].seq;

    // Hold the writer in a flush so that the next four share one batch.
    let blocker = spawn_accept(&store, EnvelopeId::at(1), "blocker");
    started.recv().await.unwrap();
    let ack = |node: Country, seq: u64, receipt: &str| {
        let s = store.clone();
        let a = envelope_ack(id, receipt);
        tokio::spawn(async move { s.ack_envelope(node, seq, a).await })
    };
    let batch = [
        ack(ba(), seq_ba, "from BA"),
        ack(ba(), seq_ba, "from BA again"),
        ack(si, seq_si, "from SI"),
        ack(si, seq_ba, "SI with the seq of BA"),
    ];
    until_waiting(&store, 4).await;
    flush.gate.add_permits(100);
    assert_eq!(blocker.await.unwrap().unwrap(), 1);
    let mut answers = Vec::new();
    for t in batch {
        answers.push(t.await.unwrap());
    }
    assert!(matches!(answers[0], Ok(2)), "{:?}", answers[0]);
    assert!(matches!(answers[1], Err(StoreError::NoSuchItem { .. })));
    assert!(matches!(answers[2], Ok(3)), "{:?}", answers[2]);
    assert!(matches!(answers[3], Err(StoreError::NoSuchItem { .. })));
    assert_eq!(store.commit.requested(), 3, "the four shared one batch");
    assert_eq!(store.audit_len().await.unwrap(), 4);
    assert!(store.delivered(&id, ba()).await.unwrap());
    assert!(store.delivered(&id, si).await.unwrap());
    assert!(
        store.trees.payload.get(id.as_bytes()).unwrap().is_none(),
        "the last acknowledgement of the batch removed the payload"
    );
    assert!(store.trees.remaining.get(id.as_bytes()).unwrap().is_none());
    let receipts = store.pending(hr, None, 10).await.unwrap();
    assert_eq!(receipts.len(), 2, "one receipt relayed per acknowledgement");

    // A receipt acknowledged twice at once: one finds nothing.
    let ack_receipt = |seq: u64| {
        let s = store.clone();
        tokio::spawn(async move { s.ack_receipt(hr, seq).await })
    };
    let twice = [ack_receipt(receipts[0].seq), ack_receipt(receipts[0].seq)];
    let mut answers = Vec::new();
    for t in twice {
        answers.push(t.await.unwrap());
    }
    assert_eq!(
        answers.iter().filter(|r| r.is_ok()).count(),
        1,
        "{answers:?}"
    );
    assert!(
        answers
            .iter()
            .any(|r| matches!(r, Err(StoreError::NoSuchItem { .. })))
    );
    assert_eq!(store.pending(hr, None, 10).await.unwrap().len(), 1);
}

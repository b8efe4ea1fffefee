//! Acceptances applied in batches: concurrent calls of
//! [`crate::storage::broker::Mailboxes::accept`] share one sled transaction
//! and one flush.
//!
//! Each call prepares its writes, joins the waiting list, and, if no writer
//! is running, starts one. The writer takes everything waiting (up to
//! [`MAX_BATCH`] items or about [`MAX_BATCH_BYTES`] of payload), applies it
//! in one transaction in which each item is checked before anything of it
//! is written (a duplicate id, also of an earlier item of the same batch,
//! fails only that item), waits for one group-commit flush, shows readers
//! what is now on disk, wakes the recipients' streams and answers each
//! caller; then it takes the next batch, until none waits. A failed
//! transaction or flush fails every caller of its batch. The writer is a
//! task of its own, so a caller that stops waiting never strands the
//! others, and it holds the store's handles only while there is work: it
//! lets them go before it answers the last batch, so a store dropped after
//! its last answer closes its database at once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use tokio::sync::oneshot;

use super::{Durable, SledStore, TAG_ENVELOPE, Trees, Wakeups, mailboxes, wake};
use crate::protocol::ids::{Country, EnvelopeId};
use crate::storage::broker::{Acceptance, Lane, StoreError};
use crate::storage::{GroupCommit, StorageError, be};

/// The most acceptances one transaction applies.
pub(super) const MAX_BATCH: usize = 256;
/// A batch takes no further item once its payloads reach this size.
pub(super) const MAX_BATCH_BYTES: usize = 8 << 20;

type Answer = oneshot::Sender<Result<u64, StoreError>>;

/// The acceptances waiting for the writer, and whether one runs.
#[derive(Default)]
pub(super) struct Waiting {
    pub(super) items: std::collections::VecDeque<(Prepared, Answer)>,
    writing: bool,
}

/// An acceptance encoded for its transaction.
pub(super) struct Prepared {
    id: EnvelopeId,
    created_at: [u8; 8],
    payload: Vec<u8>,
    remaining: Vec<u8>,
    lane: Lane,
    recipients: Vec<Country>,
    grants: Vec<Vec<u8>>,
    leaf: Vec<u8>,
    summary: Vec<u8>,
}

impl Prepared {
    /// Encodes `a`; fails if its audit event cannot be a leaf even cut.
    pub(super) fn of(a: Acceptance) -> Result<Prepared, StoreError> {
        let leaf = crate::protocol::leaf::encode(&a.event)?;
        Ok(Prepared {
            id: a.id,
            created_at: a.created_at_ms.to_be_bytes(),
            payload: a.envelope.encode_to_vec(),
            remaining: mailboxes::encode_remaining(a.recipient_nodes.len() as u64, a.sender_node),
            lane: Lane::of_priority(a.summary.priority),
            grants: a
                .grants
                .iter()
                .map(|(original, grantee, third)| mailboxes::grant_key(original, grantee, third))
                .collect(),
            recipients: a.recipient_nodes,
            leaf,
            summary: a.summary.encode_to_vec(),
        })
    }
}

/// What the writer uses of the store, held only while it writes.
struct Writer {
    trees: Arc<Trees>,
    commit: GroupCommit,
    durable: Arc<Durable>,
    wakeups: Arc<Wakeups>,
    waiting: Arc<Mutex<Waiting>>,
}

impl SledStore {
    /// Applies `p` with whatever else waits; returns its log index once it
    /// is on disk.
    pub(super) async fn accept_batched(&self, p: Prepared) -> Result<u64, StoreError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut w = lock(&self.accepts);
            w.items.push_back((p, tx));
            !std::mem::replace(&mut w.writing, true)
        };
        if start {
            let writer = Writer {
                trees: self.trees.clone(),
                commit: self.commit.clone(),
                durable: self.durable.clone(),
                wakeups: self.wakeups.clone(),
                waiting: self.accepts.clone(),
            };
            tokio::spawn(writer.run());
        }
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Storage(StorageError::Backend(
                "the acceptance writer stopped".into(),
            )))
        })
    }
}

impl Writer {
    async fn run(self) {
        loop {
            let batch = self.take();
            let answers = self.write(batch).await;
            let last = {
                let mut w = lock(&self.waiting);
                let last = w.items.is_empty();
                if last {
                    w.writing = false;
                }
                last
            };
            if last {
                drop(self);
                for (tx, r) in answers {
                    let _ = tx.send(r);
                }
                return;
            }
            for (tx, r) in answers {
                let _ = tx.send(r);
            }
        }
    }

    /// The next batch, in the order the acceptances arrived.
    fn take(&self) -> Vec<(Prepared, Answer)> {
        let mut w = lock(&self.waiting);
        let mut batch = Vec::new();
        let mut bytes = 0;
        while batch.len() < MAX_BATCH && (batch.is_empty() || bytes < MAX_BATCH_BYTES) {
            let Some(item) = w.items.pop_front() else {
                break;
            };
            bytes += item.0.payload.len();
            batch.push(item);
        }
        batch
    }

    /// Applies `batch` in one transaction, makes it durable and shows it;
    /// the answer of each item.
    async fn write(
        &self,
        batch: Vec<(Prepared, Answer)>,
    ) -> Vec<(Answer, Result<u64, StoreError>)> {
        let (items, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let applied = self
            .trees
            .transact(&|t| {
                let mut ids = HashSet::with_capacity(items.len());
                let mut out = Vec::with_capacity(items.len());
                for p in &items {
                    // Checked before any write of this item: a duplicate
                    // fails alone and leaves nothing behind.
                    if !ids.insert(p.id) || t.seen.get(p.id.as_bytes())?.is_some() {
                        out.push(Err(StoreError::Duplicate));
                        continue;
                    }
                    t.seen.insert(p.id.as_bytes(), &p.created_at)?;
                    t.payload.insert(p.id.as_bytes(), p.payload.as_slice())?;
                    t.remaining
                        .insert(p.id.as_bytes(), p.remaining.as_slice())?;
                    let mut item = vec![TAG_ENVELOPE];
                    item.extend_from_slice(p.id.as_bytes());
                    for node in &p.recipients {
                        t.enqueue(*node, p.lane, item.clone())?;
                    }
                    for grant in &p.grants {
                        t.grants
                            .insert(grant.as_slice(), p.id.as_bytes().as_slice())?;
                    }
                    let index = t.sequence_leaf(p.leaf.as_slice())?;
                    let mut kept = be(index).to_vec();
                    kept.extend_from_slice(&p.summary);
                    t.accepted.insert(p.id.as_bytes().as_slice(), kept)?;
                    out.push(Ok(index));
                }
                Ok(out)
            })
            // Read after the transaction, before the flush starts: every
            // transaction these counters count is applied, and the flush
            // covers it.
            .and_then(|r| Ok((r, self.trees.counters()?)));
        let (results, counters) = match applied {
            Ok(r) => r,
            Err(e) => {
                let e = match e {
                    StoreError::Storage(e) => StoreError::Storage(self.commit.stop_on_io(e)),
                    other => other,
                };
                return answers.into_iter().map(|tx| (tx, Err(again(&e)))).collect();
            }
        };
        if results.iter().any(Result::is_ok) {
            if let Err(e) = self.commit.commit().await {
                let e = StoreError::Storage(e);
                return answers.into_iter().map(|tx| (tx, Err(again(&e)))).collect();
            }
            self.durable.show(counters);
            for (p, r) in items.iter().zip(&results) {
                if r.is_ok() {
                    wake(&self.wakeups, p.recipients.iter().copied(), p.lane);
                }
            }
        }
        answers.into_iter().zip(results).collect()
    }
}

/// The same failure again, for another caller of the batch it failed.
fn again(e: &StoreError) -> StoreError {
    let storage = match e {
        StoreError::Storage(s) => match s {
            StorageError::Backend(m) => StorageError::Backend(m.clone()),
            StorageError::FlusherGone => StorageError::FlusherGone,
            StorageError::Stopped(m) => StorageError::Stopped(m.clone()),
            StorageError::Corrupt { tree, detail } => StorageError::Corrupt {
                tree,
                detail: detail.clone(),
            },
            StorageError::Io { path, source } => StorageError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
        },
        other => StorageError::Backend(other.to_string()),
    };
    StoreError::Storage(storage)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

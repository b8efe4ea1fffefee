//! The broker's queue writes applied in batches: concurrent calls of
//! [`crate::storage::broker::Mailboxes::accept`], `ack_envelope` and
//! `ack_receipt` share one sled transaction and one flush.
//!
//! Each call prepares its writes, joins the waiting list, and, if no writer
//! is running, starts one. The writer takes everything waiting (up to
//! [`MAX_BATCH`] items or about [`MAX_BATCH_BYTES`] of payload) and applies
//! it in arrival order in one transaction, in which each item is checked
//! before anything of it is written: an item that fails (a duplicate id,
//! also of an earlier item of the same batch; an acknowledgement of
//! nothing) fails alone and leaves nothing behind, and each later item sees
//! what the earlier ones wrote. Then one group-commit flush; then it shows
//! readers what is on disk, wakes the delivery streams concerned and
//! answers each caller, and takes the next batch, until none waits. A
//! failed transaction or flush fails every caller of its batch. The writer
//! is a task of its own, so a caller that stops waiting never strands the
//! others, and it holds the store's handles only while there is work: it
//! lets them go before it answers the last batch, so a store dropped after
//! its last answer closes its database at once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use tokio::sync::oneshot;

use super::{
    Durable, SledStore, TAG_ENVELOPE, TAG_RECEIPT, Trees, TxResult, Txn, Wakeups, corrupt,
    mailboxes, wake, wake_acked,
};
use crate::protocol::ids::{Country, EnvelopeId};
use crate::storage::broker::{Acceptance, EnvelopeAck, Lane, StoreError};
use crate::storage::{GroupCommit, StorageError, be};

/// The most writes one transaction applies.
pub(super) const MAX_BATCH: usize = 256;
/// A batch takes no further item once its payloads reach this size.
pub(super) const MAX_BATCH_BYTES: usize = 8 << 20;

type Answer = oneshot::Sender<Result<u64, StoreError>>;

/// The writes waiting for the writer, and whether one runs.
#[derive(Default)]
pub(super) struct Waiting {
    pub(super) items: std::collections::VecDeque<(Op, Answer)>,
    writing: bool,
}

/// One write of a batch; each answers with a log index (an acceptance's
/// event; the first event of an acknowledgement, 0 if none).
pub(super) enum Op {
    Accept(Prepared),
    AckEnvelope {
        node: Country,
        seq: u64,
        ack: PreparedAck,
    },
    AckReceipt {
        node: Country,
        seq: u64,
    },
}

/// An acknowledgement of an envelope, encoded for its transaction.
pub(super) struct PreparedAck {
    id: EnvelopeId,
    relay: Vec<u8>,
    delivered: bool,
    leaves: Vec<Vec<u8>>,
}

impl PreparedAck {
    /// Encodes `ack`; fails if one of its events cannot be a leaf even cut.
    pub(super) fn of(ack: EnvelopeAck) -> Result<PreparedAck, StoreError> {
        let mut relay = vec![TAG_RECEIPT];
        relay.extend_from_slice(&ack.receipt.encode_to_vec());
        let leaves = ack
            .events
            .iter()
            .map(crate::protocol::leaf::encode)
            .collect::<Result<_, _>>()?;
        Ok(PreparedAck {
            id: ack.id,
            relay,
            delivered: ack.delivered,
            leaves,
        })
    }
}

impl Op {
    /// The bytes it writes, roughly.
    fn size(&self) -> usize {
        match self {
            Op::Accept(p) => p.payload.len(),
            Op::AckEnvelope { ack, .. } => ack.relay.len(),
            Op::AckReceipt { .. } => 0,
        }
    }

    /// Checks, then applies, this write. The outer error (sled's) fails
    /// the batch; the inner one only this write, which then wrote nothing.
    /// `ids` are the envelopes accepted earlier in the batch; the sender
    /// is that of an acknowledged envelope.
    fn apply(
        &self,
        t: &Txn<'_>,
        ids: &mut HashSet<EnvelopeId>,
    ) -> TxResult<Result<(u64, Option<Country>), StoreError>> {
        match self {
            Op::Accept(p) => {
                if !ids.insert(p.id) || t.seen.get(p.id.as_bytes())?.is_some() {
                    return Ok(Err(StoreError::Duplicate));
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
                Ok(Ok((index, None)))
            }
            Op::AckEnvelope { node, seq, ack } => {
                let (node, seq) = (*node, *seq);
                let Some((key, item)) = mailboxes::find(t.mail, node, seq)? else {
                    return Ok(Err(StoreError::NoSuchItem { node, seq }));
                };
                match item.split_first() {
                    Some((&TAG_ENVELOPE, id)) if id == ack.id.as_bytes() => {}
                    Some((&TAG_ENVELOPE, id)) => {
                        let found = EnvelopeId::from_bytes(id)
                            .map(|i| i.to_string())
                            .unwrap_or_default();
                        return Ok(Err(StoreError::WrongEnvelope {
                            node,
                            seq,
                            found,
                            expected: ack.id,
                        }));
                    }
                    _ => return Ok(Err(StoreError::NoSuchItem { node, seq })),
                }
                let Some(r) = t.remaining.get(ack.id.as_bytes())? else {
                    return Ok(Err(corrupt(
                        "remaining",
                        format!("no count for {}", ack.id),
                    )));
                };
                let (remaining, sender) = match mailboxes::decode_remaining(&r) {
                    Ok(r) => r,
                    Err(e) => return Ok(Err(e)),
                };
                t.mail.remove(key.as_slice())?;
                if remaining <= 1 {
                    t.remaining.remove(ack.id.as_bytes())?;
                    t.payload.remove(ack.id.as_bytes())?;
                } else {
                    t.remaining.insert(
                        ack.id.as_bytes(),
                        mailboxes::encode_remaining(remaining - 1, sender),
                    )?;
                }
                t.enqueue(sender, Lane::Receipt, ack.relay.clone())?;
                if ack.delivered {
                    t.delivered
                        .insert(super::delivered_key(&ack.id, node), &[])?;
                }
                let mut first = None;
                for leaf in &ack.leaves {
                    let i = t.sequence_leaf(leaf.as_slice())?;
                    first.get_or_insert(i);
                }
                Ok(Ok((first.unwrap_or(0), Some(sender))))
            }
            Op::AckReceipt { node, seq } => {
                let (node, seq) = (*node, *seq);
                match mailboxes::find(t.mail, node, seq)? {
                    Some((key, v)) if v.first() == Some(&TAG_RECEIPT) => {
                        t.mail.remove(key.as_slice())?;
                        Ok(Ok((0, None)))
                    }
                    Some(_) => Ok(Err(StoreError::ReceiptRequired { node, seq })),
                    None => Ok(Err(StoreError::NoSuchItem { node, seq })),
                }
            }
        }
    }

    /// Tells the delivery streams concerned, once this write is on disk
    /// and shown; `sender` as [`Op::apply`] gave it.
    fn wake(&self, wakeups: &Wakeups, sender: Option<Country>) {
        match self {
            Op::Accept(p) => wake(wakeups, p.recipients.iter().copied(), p.lane),
            Op::AckEnvelope { node, .. } => {
                wake(wakeups, sender, Lane::Receipt);
                wake_acked(wakeups, *node);
            }
            Op::AckReceipt { node, .. } => wake_acked(wakeups, *node),
        }
    }
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
    /// Applies `op` with whatever else waits; returns its log index once
    /// it is on disk.
    pub(super) async fn write_batched(&self, op: Op) -> Result<u64, StoreError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut w = lock(&self.writes);
            w.items.push_back((op, tx));
            !std::mem::replace(&mut w.writing, true)
        };
        if start {
            let writer = Writer {
                trees: self.trees.clone(),
                commit: self.commit.clone(),
                durable: self.durable.clone(),
                wakeups: self.wakeups.clone(),
                waiting: self.writes.clone(),
            };
            tokio::spawn(writer.run());
        }
        rx.await.unwrap_or_else(|_| {
            Err(StoreError::Storage(StorageError::Backend(
                "the batch writer stopped".into(),
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

    /// The next batch, in the order its writes arrived.
    fn take(&self) -> Vec<(Op, Answer)> {
        let mut w = lock(&self.waiting);
        let mut batch = Vec::new();
        let mut bytes = 0;
        while batch.len() < MAX_BATCH && (batch.is_empty() || bytes < MAX_BATCH_BYTES) {
            let Some(item) = w.items.pop_front() else {
                break;
            };
            bytes += item.0.size();
            batch.push(item);
        }
        batch
    }

    /// Applies `batch` in one transaction, makes it durable and shows it;
    /// the answer of each item.
    async fn write(&self, batch: Vec<(Op, Answer)>) -> Vec<(Answer, Result<u64, StoreError>)> {
        let (ops, answers): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let applied = self
            .trees
            .transact(&|t| {
                let mut ids = HashSet::new();
                let mut out = Vec::with_capacity(ops.len());
                for op in &ops {
                    out.push(op.apply(t, &mut ids)?);
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
            for (op, r) in ops.iter().zip(&results) {
                if let Ok((_, sender)) = r {
                    op.wake(&self.wakeups, *sender);
                }
            }
        }
        answers
            .into_iter()
            .zip(results)
            .map(|(tx, r)| (tx, r.map(|(index, _)| index)))
            .collect()
    }
}

impl Drop for Writer {
    /// A writer that panicked answers nobody: its callers and those still
    /// waiting get an error (their answers are dropped), and the next
    /// write starts a new writer.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut w = lock(&self.waiting);
            w.items.clear();
            w.writing = false;
        }
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
            StorageError::InUse(dir) => StorageError::InUse(dir.clone()),
        },
        other => StorageError::Backend(other.to_string()),
    };
    StoreError::Storage(storage)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

//! Queues and payloads: what waits for each node, in priority lanes (see
//! [`super::lanes`]), and the wake-ups its delivery stream waits on.

use tokio::sync::watch;

use super::{Acceptance, Cursor, Entry, EnvelopeAck, Queued, StoreError};
use crate::protocol::ids::{Country, EnvelopeId};

/// What a node's wake-up counts: items queued for it; of those the
/// immediate ones, which a stream busy with a batch stops for; and the
/// node's acknowledgements, which open its stream's window (counters wrap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wakeup {
    pub queued: u64,
    pub immediate: u64,
    pub acked: u64,
}

/// The per-node delivery queues and the payloads they point to.
#[async_trait::async_trait]
pub trait Mailboxes: Send + Sync {
    /// Atomically records an accepted envelope: its id as seen, its
    /// summary and the grants it gives, its payload, one queue entry per
    /// recipient node, and its audit event, which this sequences (see
    /// [`super::Sequencer`]). Returns the event's log index. Fails with
    /// `Duplicate` if the id was seen before.
    ///
    /// It is one method, and a mailbox's, because the brief's Submit ends
    /// in one durable write: a crash must never leave a queued envelope
    /// without its audit event, nor an id seen whose envelope was never
    /// queued, so a backend does all of it in one transaction. Queueing is
    /// what the write is for; the rest is what must hold with it.
    async fn accept(&self, a: Acceptance) -> Result<u64, StoreError>;

    /// What the queued item `seq` of `node` is, whatever its lane, if it
    /// is still queued and durable. Reads no payload.
    async fn queued(&self, node: Country, seq: u64) -> Result<Option<Entry>, StoreError>;

    /// Up to `limit` queued items for `node` past `cursor` (None: from the
    /// start of every lane), in the order [`Cursor::schedule`] gives, only
    /// those whose write is durable: an envelope is never delivered before
    /// the Submit that queued it is. Each payload is read and decoded once.
    async fn pending(
        &self,
        node: Country,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError>;

    /// Whether `node` acknowledged `id` with a delivered receipt.
    async fn delivered(&self, id: &EnvelopeId, node: Country) -> Result<bool, StoreError>;

    /// Removes an envelope from `node`'s queue, sequences the receipt's
    /// audit events (and records the delivery, if it was one), queues the
    /// receipt for the sender in its receipt lane, and drops the payload
    /// once every recipient node has acknowledged, all in one durable
    /// write. The payload itself is written once, at accept, and removed
    /// once: a partial acknowledgement only counts down. Returns the first
    /// event's index.
    async fn ack_envelope(
        &self,
        node: Country,
        seq: u64,
        ack: EnvelopeAck,
    ) -> Result<u64, StoreError>;

    /// Removes a relayed receipt from `node`'s queue.
    async fn ack_receipt(&self, node: Country, seq: u64) -> Result<(), StoreError>;

    /// How many items (envelopes and relayed receipts, in every lane) are
    /// queued for `node` and durable: what its delivery streams have yet to
    /// see acknowledged. Counts the queue, so costs a read of its keys.
    async fn queue_depth(&self, node: Country) -> Result<u64, StoreError>;

    /// A wake-up for `node`'s delivery stream: the value changes after
    /// something queued for `node` became durable, or an acknowledgement by
    /// `node` did (from this broker or, with a shared backend, another). Mark it seen before reading
    /// [`Mailboxes::pending`], so nothing queued in between is missed.
    async fn subscribe(&self, node: Country) -> Result<watch::Receiver<Wakeup>, StoreError>;
}

//! What the node's agencies sent: the outbox of sealed envelopes waiting
//! for the broker, the sent records with the broker's answer and the
//! receipts relayed back, the hash of each header sent (which every receipt
//! must answer), and what the witness must still prove of each accepted
//! submission.
//!
//! The outbox has three priority [`Lane`]s: the submitter takes immediate
//! records before urgent ones before routine ones, oldest first within a
//! lane, and reads it in bounded batches of ids ([`Outbox::outbox_waiting`])
//! rather than whole.

use std::collections::HashSet;

use tokio::sync::watch;

use crate::protocol::ids::{AgencyId, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::StorageError;
use crate::storage::node::idempotency::{EarlierCall, KeyedCall};

/// A change to what an agency sees of a record it sent. A backend may apply
/// it more than once (a retried transaction), each time to the record as
/// stored.
pub type StatusUpdate = Box<dyn Fn(&mut v1::SendStatus) + Send + Sync + 'static>;

/// A priority lane of the outbox, most urgent first: the order of the
/// variants is the order in which the submitter serves them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    Immediate,
    Urgent,
    Routine,
}

impl Lane {
    /// Every lane, most urgent first.
    pub const ALL: [Lane; 3] = [Lane::Immediate, Lane::Urgent, Lane::Routine];

    /// The lane of a record's priority label (`v1::Priority`); a record
    /// without one, or with one this build does not know, goes routine.
    pub fn of(priority: i32) -> Lane {
        match v1::Priority::try_from(priority) {
            Ok(v1::Priority::Immediate) => Lane::Immediate,
            Ok(v1::Priority::Urgent) => Lane::Urgent,
            Ok(v1::Priority::Routine | v1::Priority::Unspecified) | Err(_) => Lane::Routine,
        }
    }

    /// The lane's place in [`Lane::ALL`], for per-lane counts.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[async_trait::async_trait]
pub trait Outbox: Send + Sync {
    /// Records a sealed envelope as sent (queued), with the hash of its
    /// header for checking receipts, and puts it in the outbox, in the lane
    /// of the priority label of `status` (the labels it was sealed with).
    /// Once it is
    /// durable, [`Outbox::outbox_changed`] tells the submitter.
    async fn enqueue(
        &self,
        id: &EnvelopeId,
        env: &v1::Envelope,
        status: &v1::SendStatus,
    ) -> Result<(), StorageError>;

    /// As [`Outbox::enqueue`], for a call made under an idempotency key, in
    /// the same durable write as the key: unless `call.agency` used
    /// `call.key` at or after [`KeyedCall::not_before_ms`], the envelope is
    /// enqueued and the key recorded with `id` and the call's digest
    /// (`None`). Otherwise nothing is written, whatever the digest, and the
    /// earlier call is returned once its own write is durable.
    async fn enqueue_keyed(
        &self,
        id: &EnvelopeId,
        env: &v1::Envelope,
        status: &v1::SendStatus,
        call: &KeyedCall,
    ) -> Result<Option<EarlierCall>, StorageError>;

    /// The call `agency` made under `key` at or after `not_before_ms`, if
    /// any, once its write is durable.
    async fn keyed_call(
        &self,
        agency: &AgencyId,
        key: &str,
        not_before_ms: i64,
    ) -> Result<Option<EarlierCall>, StorageError>;

    /// Forgets every idempotency key first used before `before_ms`; returns
    /// how many.
    async fn forget_keys(&self, before_ms: i64) -> Result<usize, StorageError>;

    /// Envelopes waiting for the broker, lane by lane (immediate first),
    /// oldest first within a lane; only those durable, so the broker never
    /// holds a record a crash could take from the node.
    async fn outbox(&self) -> Result<Vec<(EnvelopeId, v1::Envelope)>, StorageError>;

    /// How many envelopes wait for the broker (those durable, as
    /// [`Outbox::outbox`] gives them). Counts the outbox's keys.
    async fn outbox_len(&self) -> Result<u64, StorageError>;

    /// The ids of envelopes waiting for the broker, in the order of
    /// [`Outbox::outbox`]: at most `per_lane` of each lane, leaving out
    /// those in `skip` (being submitted already) and those not yet durable.
    /// Reads no envelope.
    async fn outbox_waiting(
        &self,
        per_lane: usize,
        skip: &HashSet<EnvelopeId>,
    ) -> Result<Vec<(Lane, EnvelopeId)>, StorageError>;

    /// The envelopes `ids` (each with the lane `outbox_waiting` gave it), in
    /// that order; one no longer in the outbox is left out.
    async fn outbox_envelopes(
        &self,
        ids: &[(Lane, EnvelopeId)],
    ) -> Result<Vec<(EnvelopeId, v1::Envelope)>, StorageError>;

    /// A subscription to the outbox: its value changes each time an
    /// envelope enqueued has become durable. The submitter marks the value
    /// seen, reads the outbox, then waits for the next change.
    fn outbox_changed(&self) -> watch::Receiver<u64>;

    /// Takes an envelope out of the outbox with the broker's answer.
    async fn settle(&self, id: &EnvelopeId, update: StatusUpdate) -> Result<(), StorageError>;

    /// Takes an envelope the broker accepted out of the outbox with the
    /// broker's answer, keeping `expected` (the summary its acceptance entry
    /// in the log must carry) for the inclusion check.
    async fn settle_accepted(
        &self,
        id: &EnvelopeId,
        expected: &v1::EnvelopeSummary,
        update: StatusUpdate,
    ) -> Result<(), StorageError>;

    /// Updates what an agency sees of a record it sent; false if there is
    /// no such record.
    async fn update_sent(
        &self,
        id: &EnvelopeId,
        update: StatusUpdate,
    ) -> Result<bool, StorageError>;

    /// The sent record `id`.
    async fn sent(&self, id: &EnvelopeId) -> Result<Option<v1::SendStatus>, StorageError>;

    /// SHA-256 of the header this node sent as `id`, which every receipt for
    /// `id` must answer.
    async fn sent_header_sha256(&self, id: &EnvelopeId) -> Result<Option<Vec<u8>>, StorageError>;

    /// Everything `agency` sent, oldest first.
    async fn sent_by(&self, agency: &AgencyId) -> Result<Vec<v1::SendStatus>, StorageError>;

    /// Records sent (accepted) that still wait for an inclusion check,
    /// oldest first: those whose log index is known, and those settled by a
    /// duplicate answer, whose index the proof will tell (log index 0; entry
    /// 0 is never a submission: the broker logs its directory first). A
    /// record whose proof failed is not checked again: its evidence is kept.
    async fn awaiting_inclusion(&self) -> Result<Vec<v1::SendStatus>, StorageError>;

    /// The summary the log's acceptance entry of a sent envelope must carry.
    async fn expected_acceptance(
        &self,
        id: &EnvelopeId,
    ) -> Result<Option<v1::EnvelopeSummary>, StorageError>;

    /// Keeps the evidence that the broker did not prove the inclusion of a
    /// submission it accepted, and stops checking that submission.
    async fn record_inclusion_failure(
        &self,
        id: &EnvelopeId,
        at_ms: i64,
        evidence: &str,
    ) -> Result<(), StorageError>;
}

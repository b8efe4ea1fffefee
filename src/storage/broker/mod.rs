//! The broker's storage seam: what the broker keeps, split by concern, each
//! concern behind an async trait that a backend implements.
//!
//! - [`Mailboxes`]: the per-node delivery queues and the payloads they point
//!   to, the atomic accept of a submission, acknowledgements, and the
//!   wake-up subscription a delivery stream waits on.
//! - The audit log, in three parts as transparency logs built for several
//!   writers have it: [`Sequencer`] durably assigns indexes and stores
//!   leaves; [`Integrator`] computes the Merkle tree over what was
//!   sequenced; [`Checkpoints`] keeps signed checkpoints and cosignatures;
//!   [`Lease`] says which of several brokers on one store integrates and
//!   signs.
//! - [`FederationState`]: seen ids, accepted summaries, grants, the digests
//!   of the directory and policy set last recorded, and (through
//!   [`VersionsInForce`]) the versions in force.
//!
//! [`BrokerStore`] is all of them together, so the daemon holds one
//! `Arc<dyn BrokerStore>`; code that needs one concern names that trait.
//!
//! Every method is async. A write that acknowledges anything returns only
//! once its changes are durable; readers see the log, the queues and the
//! checkpoints only as far as they are durable, and the tree only over
//! durable leaves. Errors are this module's [`StoreError`]: the outcomes a
//! caller acts on, or a backend-neutral [`StorageError`].

#[cfg(test)]
pub(crate) mod conformance;
pub mod lanes;
mod log;
mod mailboxes;
mod state;

pub use lanes::{Cursor, Lane};
pub use log::{Checkpoints, Integrator, Lease, Sequencer};
pub use mailboxes::{Mailboxes, Wakeup};
pub use state::{FederationState, Subject};

use crate::protocol::ids::{AgencyId, Country, EnvelopeId};
use crate::protocol::proto::v1;
pub use crate::storage::in_force::VersionsInForce;
pub use crate::storage::{Durability, StorageError};

/// Every concern of the broker's store, for the daemon to hold as one
/// `Arc<dyn BrokerStore>`. Implemented for every type that implements the
/// parts.
pub trait BrokerStore:
    Mailboxes + FederationState + Sequencer + Integrator + Checkpoints + Lease + Durability + 'static
{
}

impl<T> BrokerStore for T where
    T: Mailboxes
        + FederationState
        + Sequencer
        + Integrator
        + Checkpoints
        + Lease
        + Durability
        + 'static
{
}

/// An envelope the broker accepted, with everything written for it.
pub struct Acceptance {
    pub id: EnvelopeId,
    pub created_at_ms: i64,
    pub sender_node: Country,
    pub envelope: v1::Envelope,
    pub recipient_nodes: Vec<Country>,
    pub event: v1::AuditEvent,
    /// The header's metadata, kept by envelope id for onward transfers,
    /// permission checks and proofs by id.
    pub summary: v1::EnvelopeSummary,
    /// Permissions this envelope grants: (original, grantee, third agency).
    pub grants: Vec<(EnvelopeId, AgencyId, AgencyId)>,
}

/// What the broker remembers of an accepted envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub log_index: u64,
    pub summary: v1::EnvelopeSummary,
}

impl Accepted {
    /// The agency that provided the original record: the sender of a
    /// record that passes nothing on, else the provider the broker checked
    /// against the record passed on when it accepted this one. One read per
    /// hop, however long the chain of onward transfers.
    pub fn provider(&self) -> Option<AgencyId> {
        let s = &self.summary;
        if s.onward_of.is_empty() {
            s.sender_agency.parse().ok()
        } else {
            s.provider.parse().ok()
        }
    }
}

/// One queued item for a node.
#[derive(Debug, Clone)]
pub enum MailItem {
    Envelope(EnvelopeId, v1::Envelope),
    Receipt(v1::SignedReceipt),
}

/// A queued item as [`Mailboxes::pending`] gives it: its seq (what the
/// node acknowledges), its lane (what the stream's [`Cursor`] is told) and
/// the item.
#[derive(Debug, Clone)]
pub struct Queued {
    pub seq: u64,
    pub lane: Lane,
    pub item: MailItem,
}

/// What a queue entry is, without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Envelope(EnvelopeId),
    Receipt,
}

/// What acknowledging a queued envelope records.
pub struct EnvelopeAck {
    pub id: EnvelopeId,
    /// The receipt to relay to the sending node.
    pub receipt: v1::SignedReceipt,
    /// Audit events for the receipt (and a violation, if any).
    pub events: Vec<v1::AuditEvent>,
    /// The receipt says delivered: the acknowledging node now holds the
    /// record (what it may later report purged).
    pub delivered: bool,
}

/// What the broker's store answers besides success: an outcome the caller
/// acts on, or a failure of the backend.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("envelope id already seen")]
    Duplicate,
    #[error("no queued item {seq} for node {node}")]
    NoSuchItem { node: Country, seq: u64 },
    #[error("queued item {seq} for node {node} is an envelope; acknowledge it with a receipt")]
    ReceiptRequired { node: Country, seq: u64 },
    #[error("queued item {seq} for node {node} is {found}, not envelope {expected}")]
    WrongEnvelope {
        node: Country,
        seq: u64,
        found: String,
        expected: EnvelopeId,
    },
    /// A root or proof asked of a tree larger than what is integrated.
    #[error("the log is integrated up to {integrated} entries, not {size}")]
    NotIntegrated { size: u64, integrated: u64 },
    /// An event too large for the audit log even with its free text cut.
    #[error(transparent)]
    Leaf(#[from] crate::protocol::leaf::LeafTooLarge),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

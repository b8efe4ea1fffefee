//! The audit log: sequencing, integration, checkpoints.
//!
//! Sequencing and integration are apart, as in transparency logs built for
//! several writers: any broker sequences (durably assigns the next index to
//! an event and stores its leaf) as part of the write that the event
//! records, and one integrator computes the Merkle nodes over what was
//! sequenced and advances the integrated size. Checkpoints, roots and
//! proofs cover only integrated entries.

use tokio::sync::watch;

use super::StoreError;
use crate::protocol::merkle;
use crate::protocol::proto::v1;

/// Durably assigning indexes to events and storing their leaves.
#[async_trait::async_trait]
pub trait Sequencer: Send + Sync {
    /// Sequences one audit event (a refusal, a purge), and nothing else.
    /// The leaf is capped ([`crate::protocol::leaf::encode`]): nothing
    /// oversized is stored. Returns its index once it is durable.
    async fn append(&self, event: v1::AuditEvent) -> Result<u64, StoreError>;

    /// Sequences `events` in order in one write: they get consecutive
    /// indexes, returned once all of them are durable. Either all are
    /// sequenced or none (one over the leaf cap refuses the lot).
    async fn append_all(
        &self,
        events: Vec<v1::AuditEvent>,
    ) -> Result<std::ops::Range<u64>, StoreError>;

    /// Number of durably sequenced events; entries still being flushed are
    /// not counted, so no reader goes beyond what a crash keeps.
    async fn audit_len(&self) -> Result<u64, StoreError>;

    /// Sequenced audit events with index in `[from, to)`.
    async fn audit_range(&self, from: u64, to: u64) -> Result<Vec<v1::AuditEvent>, StoreError>;

    /// Sequenced leaves (exactly as hashed) with index in `[from, to)`.
    async fn leaves(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError>;

    /// The durably sequenced size, changing whenever it grows: what wakes
    /// the integrator.
    async fn sequenced(&self) -> Result<watch::Receiver<u64>, StoreError>;
}

/// Computing the Merkle tree over sequenced leaves.
#[async_trait::async_trait]
pub trait Integrator: Send + Sync {
    /// Computes the Merkle nodes of every durably sequenced entry not yet
    /// integrated and advances the integrated size; returns it. Idempotent,
    /// and safe to call concurrently. What it writes is derived from
    /// durable leaves only, so a crash loses nothing that the next call
    /// does not recompute identically.
    async fn integrate(&self) -> Result<u64, StoreError>;

    /// How many entries the tree covers.
    async fn integrated_size(&self) -> Result<u64, StoreError>;

    /// The Merkle root of the first `size` entries, from stored nodes.
    async fn root(&self, size: u64) -> Result<merkle::Hash, StoreError>;

    /// An inclusion proof of entry `index` in the tree of `size` entries.
    async fn inclusion_proof(&self, index: u64, size: u64)
    -> Result<Vec<merkle::Hash>, StoreError>;

    /// A consistency proof between trees of `size1` and `size2` entries.
    async fn consistency_proof(
        &self,
        size1: u64,
        size2: u64,
    ) -> Result<Vec<merkle::Hash>, StoreError>;

    /// The stored leaf hash of entry `index`, once integrated.
    async fn leaf_hash(&self, index: u64) -> Result<Option<merkle::Hash>, StoreError>;

    /// The stored leaf hashes of the integrated entries with index in
    /// `[from, to)`, in order; one that is missing is an error.
    async fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<merkle::Hash>, StoreError>;
}

/// Signed checkpoints of the integrated tree and their cosignatures.
#[async_trait::async_trait]
pub trait Checkpoints: Send + Sync {
    /// Stores a signed checkpoint (C2SP note bytes) for its tree size.
    async fn put_checkpoint(&self, size: u64, note: Vec<u8>) -> Result<(), StoreError>;

    /// The latest durable checkpoint: (size, signed note bytes). A
    /// checkpoint whose write is not yet durable is never served.
    async fn latest_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;

    /// The durable checkpoint of exactly `size` entries.
    async fn checkpoint(&self, size: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// Stores a witness's cosignature line for the checkpoint of `size`.
    async fn put_cosignature(
        &self,
        size: u64,
        witness: crate::protocol::ids::Country,
        line: String,
    ) -> Result<(), StoreError>;

    /// The cosignature lines held for the checkpoint of `size`.
    async fn cosignatures(&self, size: u64) -> Result<Vec<String>, StoreError>;
}

/// Which broker integrates the log and signs its checkpoints, where several
/// serve one store: a lease that one holder takes and renews, valid for a
/// time by the store's own clock, so that brokers need not agree on time.
///
/// The lease is for order, not for safety: the tree is integrated from
/// durable leaves under the store's own lock, and a checkpoint signs a root
/// of that one tree, so a broker that signs without knowing it lost the
/// lease (a paused process) signs the same log. What the lease saves is the
/// work of every broker integrating and signing at once.
#[async_trait::async_trait]
pub trait Lease: Send + Sync {
    /// Takes the lease for `holder`, or renews it, valid `ttl` from now;
    /// true when `holder` holds it afterwards. Another holder's lease is
    /// taken only once it has expired.
    async fn lead(&self, holder: &str, ttl: std::time::Duration) -> Result<bool, StoreError>;
    /// Gives the lease up if `holder` holds it, so that another broker
    /// takes it at once rather than when it expires.
    async fn resign(&self, holder: &str) -> Result<(), StoreError>;
}

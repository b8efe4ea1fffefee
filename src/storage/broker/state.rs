//! Federation state: what the broker remembers of accepted envelopes (seen
//! ids, summaries, grants) and of the directory and policy set in force.

use super::{Accepted, StoreError};
use crate::protocol::ids::{AgencyId, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::in_force::VersionsInForce;

/// What a change event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Directory,
    Policy,
}

/// Seen ids, accepted summaries, grants, and the versions in force.
#[async_trait::async_trait]
pub trait FederationState: VersionsInForce {
    /// Whether an envelope id was seen (accepted) within the replay window.
    async fn seen(&self, id: &EnvelopeId) -> Result<bool, StoreError>;

    /// The metadata and log index of an accepted envelope.
    async fn accepted(&self, id: &EnvelopeId) -> Result<Option<Accepted>, StoreError>;

    /// Whether the provider of `original` granted `grantee` permission to
    /// pass it on to `third`.
    async fn granted(
        &self,
        original: &EnvelopeId,
        grantee: &AgencyId,
        third: &AgencyId,
    ) -> Result<bool, StoreError>;

    /// Forgets seen ids created before `before_ms` (outside the replay
    /// window); returns how many.
    async fn prune_seen(&self, before_ms: i64) -> Result<usize, StoreError>;

    /// Sequences `event` if `digest` differs from the one last recorded for
    /// `subject` (the directory or the policy set in force), and records
    /// `digest`, in one durable write; returns the event's index if it did.
    /// It is state, not log: the log holds the event whatever the digest,
    /// the digest is what decides.
    async fn record_if_changed(
        &self,
        subject: Subject,
        digest: Vec<u8>,
        event: v1::AuditEvent,
    ) -> Result<Option<u64>, StoreError>;
}

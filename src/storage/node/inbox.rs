//! What the node received for its agencies: each agency's inbox, the
//! receipt the node gave for every header it verified (so a redelivery gets
//! the same answer and never a second inbox entry), and the ids of records
//! purged on expiry until the broker has logged the purge.

use crate::protocol::ids::{AgencyId, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::StorageError;

#[async_trait::async_trait]
pub trait Inbox: Send + Sync {
    /// Stores a delivered record in each recipient agency's inbox together
    /// with the receipt, atomically: either the agencies have it and the
    /// receipt is remembered, or neither. A rejection stores the receipt
    /// only. The caller has verified the header `id` comes from. Returns the
    /// receipt in force: `receipt`, or the one already stored for `id`, in
    /// which case nothing is filed.
    async fn deliver(
        &self,
        id: &EnvelopeId,
        entries: &[(AgencyId, v1::InboxRecord)],
        receipt: &v1::SignedReceipt,
    ) -> Result<v1::SignedReceipt, StorageError>;

    /// The receipt this node already gave for an envelope, if any. Only
    /// headers that verified ever get one stored, and its body names the
    /// hash of the header it answered.
    async fn receipt_for(&self, id: &EnvelopeId)
    -> Result<Option<v1::SignedReceipt>, StorageError>;

    /// The inbox of `agency`, oldest first, after `after` if given, at most
    /// `limit` records.
    async fn inbox(
        &self,
        agency: &AgencyId,
        after: Option<&EnvelopeId>,
        limit: usize,
    ) -> Result<Vec<v1::InboxRecord>, StorageError>;

    /// One record of `agency`'s inbox.
    async fn fetch(
        &self,
        agency: &AgencyId,
        id: &EnvelopeId,
    ) -> Result<Option<v1::InboxRecord>, StorageError>;

    /// Deletes every inbox record that expired by `now_ms`, remembering the
    /// envelope ids (nothing else) until the broker has logged the purge.
    /// Returns the ids purged now.
    async fn purge_expired(&self, now_ms: i64) -> Result<Vec<EnvelopeId>, StorageError>;

    /// Purged envelope ids the broker has not yet logged.
    async fn unreported_purges(&self) -> Result<Vec<EnvelopeId>, StorageError>;

    /// Forgets purged ids once the broker has logged them.
    async fn purges_reported(&self, ids: &[EnvelopeId]) -> Result<(), StorageError>;
}

//! What the node keeps as a witness of the broker's log: the last
//! checkpoint it accepted, from which the next must be consistent, and the
//! evidence of a broker that lied (an inconsistent log, a relayed receipt
//! that does not answer what this node sent).

use crate::storage::StorageError;

#[async_trait::async_trait]
pub trait WitnessState: Send + Sync {
    /// The last checkpoint this node accepted as witness (a signed note).
    async fn accepted_checkpoint(&self) -> Result<Option<Vec<u8>>, StorageError>;

    /// Records a checkpoint as accepted.
    async fn accept_checkpoint(&self, note: &[u8]) -> Result<(), StorageError>;

    /// Keeps a piece of evidence. Pieces recorded in the same millisecond
    /// are all kept, in the order recorded.
    async fn record_evidence(&self, at_ms: i64, evidence: &str) -> Result<(), StorageError>;

    /// Every piece of evidence kept, oldest first.
    async fn evidence(&self) -> Result<Vec<String>, StorageError>;
}

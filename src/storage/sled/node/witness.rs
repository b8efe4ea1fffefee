//! The witness's state: the checkpoint it accepted, what it expects to
//! find in the log, and the evidence of what it found wrong.

use super::SledNodeStore;
use crate::protocol::ids::EnvelopeId;
use crate::storage::StorageError;
use crate::storage::node::WitnessState;

/// An accepted envelope's summary, kept until its inclusion is verified.
pub(super) fn expect_key(id: &EnvelopeId) -> Vec<u8> {
    let mut k = b"expect/".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// Marks an envelope whose inclusion could not be verified.
pub(super) fn failed_key(id: &[u8]) -> Vec<u8> {
    let mut k = b"inclusion-failed/".to_vec();
    k.extend_from_slice(id);
    k
}

/// The start of an evidence entry's key: entries sort by time.
pub(super) fn evidence_key(at_ms: i64) -> Vec<u8> {
    let mut k = EVIDENCE.to_vec();
    k.extend_from_slice(&at_ms.to_be_bytes());
    k
}

const EVIDENCE: &[u8] = b"evidence/";

#[async_trait::async_trait]
impl WitnessState for SledNodeStore {
    async fn accepted_checkpoint(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.blocking(|t| Ok(t.witness.get(b"accepted")?.map(|v| v.to_vec())))
            .await
    }

    async fn accept_checkpoint(&self, note: &[u8]) -> Result<(), StorageError> {
        let note = note.to_vec();
        self.blocking(move |t| {
            t.witness
                .insert(b"accepted", note)
                .map_err(|e| t.stop_on_io(e))?;
            Ok(())
        })
        .await?;
        self.commit().await
    }

    async fn record_evidence(&self, at_ms: i64, evidence: &str) -> Result<(), StorageError> {
        let evidence = evidence.as_bytes().to_vec();
        self.blocking(move |t| {
            let _g = t.lock();
            let mut k = evidence_key(at_ms);
            let same_ms = t.witness.scan_prefix(&k).count() as u64;
            k.extend_from_slice(&same_ms.to_be_bytes());
            t.witness.insert(k, evidence).map_err(|e| t.stop_on_io(e))?;
            Ok(())
        })
        .await?;
        self.commit().await
    }

    async fn evidence(&self) -> Result<Vec<String>, StorageError> {
        self.blocking(|t| {
            t.witness
                .scan_prefix(EVIDENCE)
                .values()
                .map(|v| {
                    v.map_err(StorageError::from)
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                })
                .collect()
        })
        .await
    }
}

//! The audit log as a transparency log: signed checkpoints over the Merkle
//! tree the store keeps, the check at start that the stored tree is the one
//! the last checkpoint signed, and the answers the broker gives witnesses and
//! auditors.
//!
//! The tree itself is maintained by the store, in the same transaction as
//! each entry; this module only reads it and signs.

use crate::protocol::directory::Directory;
use crate::protocol::keys::SigningKey;
use crate::protocol::merkle;
use crate::protocol::note::{self, Checkpoint, NoteSigner, Verifier, Verifiers};
use crate::protocol::transparency::{LogKeyError, log_verifier};
use crate::storage::sled::broker::{BrokerStore, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] LogKeyError),
    #[error("the log key does not match the key the directory pins for {0}")]
    WrongKey(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error(
        "the stored log does not match its latest checkpoint (size {size}): first bad index {index}: {why}; \
         refusing to start"
    )]
    Tampered { size: u64, index: u64, why: String },
    #[error(
        "the stored log does not match its latest checkpoint (size {size}): {why}; refusing to start"
    )]
    RootMismatch { size: u64, why: String },
}

/// The broker's checkpoint signer and the verifiers of its witnesses.
pub struct TransparencyLog {
    origin: String,
    signer: NoteSigner<SigningKey>,
    log_verifier: Verifier,
}

impl TransparencyLog {
    /// The log of `key`, which must be the key the directory pins.
    pub fn new(key: SigningKey, dir: &Directory) -> Result<TransparencyLog, LogError> {
        let log = dir.log().ok_or(LogKeyError::NoLogKey)?;
        if key.public_key() != log.public_key {
            return Err(LogError::WrongKey(log.origin.clone()));
        }
        let signer =
            NoteSigner::new(&log.origin, key).map_err(|e| LogError::Checkpoint(e.to_string()))?;
        Ok(TransparencyLog {
            origin: log.origin.clone(),
            signer,
            log_verifier: log_verifier(dir)?,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Signs a checkpoint of the whole log if it grew since the last one.
    /// Returns the new size.
    ///
    /// The store counts only entries on disk, so the checkpoint signs
    /// nothing a crash could take back, and serves it only once it is on
    /// disk itself: a witness never holds a checkpoint the restarted broker
    /// could contradict at the same size.
    pub async fn checkpoint(&self, store: &dyn BrokerStore) -> Result<Option<u64>, LogError> {
        let size = store.audit_len()?;
        let last = store.latest_checkpoint()?.map(|(s, _)| s);
        if size == 0 || last == Some(size) {
            return Ok(None);
        }
        let root = store.root(size)?;
        let cp = Checkpoint::new(self.origin.clone(), size, root)
            .map_err(|e| LogError::Checkpoint(e.to_string()))?;
        let note = note::sign_checkpoint(&cp, &self.signer)
            .map_err(|e| LogError::Checkpoint(e.to_string()))?;
        store.put_checkpoint(size, note.to_bytes()).await?;
        Ok(Some(size))
    }

    /// The signed checkpoint of `size` (latest if None) with every
    /// cosignature the broker holds for it.
    pub fn checkpoint_note(
        &self,
        store: &dyn BrokerStore,
        size: Option<u64>,
    ) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        let found = match size {
            None => store.latest_checkpoint()?,
            Some(s) => store.checkpoint(s)?.map(|n| (s, n)),
        };
        let Some((size, bytes)) = found else {
            return Ok(None);
        };
        let mut n = note::Note::parse(&bytes).map_err(|e| LogError::Checkpoint(e.to_string()))?;
        for line in store.cosignatures(size)? {
            if let Ok(sig) = note::NoteSignature::parse_line(&line) {
                let _ = n.add_signature(sig);
            }
        }
        Ok(Some((size, n.to_bytes())))
    }

    /// Checks, at start, that the stored log is the one its latest
    /// checkpoint signed: every stored entry hashes to the leaf hash stored
    /// with it, there are no gaps, and the root of the first `size` leaves
    /// is the checkpoint's. Names the first bad index.
    pub fn verify_stored(&self, store: &dyn BrokerStore) -> Result<Option<u64>, LogError> {
        let Some((size, bytes)) = store.latest_checkpoint()? else {
            return Ok(None);
        };
        let verifiers = Verifiers::new([self.log_verifier.clone()])
            .map_err(|e| LogError::Checkpoint(e.to_string()))?;
        let opened = note::open_checkpoint(&bytes, &verifiers)
            .map_err(|e| LogError::Checkpoint(e.to_string()))?;
        let cp = opened.checkpoint();
        if cp.size() != size {
            return Err(LogError::Checkpoint(format!(
                "checkpoint stored under size {size} says {}",
                cp.size()
            )));
        }
        let len = store.audit_len()?;
        if len < size {
            return Err(LogError::Tampered {
                size,
                index: len,
                why: format!("the log holds only {len} entries"),
            });
        }
        let mut hashes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        let page = 4096;
        let mut from = 0;
        while from < len {
            let to = (from + page).min(len);
            let leaves = match store.leaves(from, to) {
                Ok(l) => l,
                Err(e) => {
                    let index = first_gap(store, from, to).unwrap_or(from);
                    return Err(LogError::Tampered {
                        size,
                        index,
                        why: e.to_string(),
                    });
                }
            };
            for (i, leaf) in (from..to).zip(leaves) {
                let h = merkle::leaf_hash(&leaf);
                if store.leaf_hash(i)? != Some(h) {
                    return Err(LogError::Tampered {
                        size,
                        index: i,
                        why: "entry does not hash to the leaf hash recorded when it was appended"
                            .into(),
                    });
                }
                hashes.push(h);
            }
            from = to;
        }
        let root =
            merkle::root_from_leaves(&hashes[..usize::try_from(size).unwrap_or(hashes.len())]);
        if &root != cp.root_hash() {
            return Err(LogError::RootMismatch {
                size,
                why: "the stored leaves do not give the signed root".into(),
            });
        }
        if store.root(size)? != root {
            return Err(LogError::RootMismatch {
                size,
                why: "the stored tree nodes do not give the signed root".into(),
            });
        }
        Ok(Some(size))
    }
}

fn first_gap(store: &dyn BrokerStore, from: u64, to: u64) -> Option<u64> {
    (from..to).find(|i| {
        store
            .leaves(*i, i + 1)
            .map(|l| l.len() != 1)
            .unwrap_or(true)
    })
}

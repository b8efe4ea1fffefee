//! The audit log as a transparency log: the integrator that keeps the
//! Merkle tree up with what is sequenced, signed checkpoints over the
//! integrated tree, the check at start that the stored tree is the one the
//! last checkpoint signed, and the answers the broker gives witnesses and
//! auditors.
//!
//! Every write that records an event sequences it (the store assigns its
//! index durably, in the same write); [`integrate`] computes the tree over
//! it afterwards, and checkpoints cover only what is integrated.

use crate::protocol::directory::Directory;
use crate::protocol::ids::Country;
use crate::protocol::keys::SigningKey;
use crate::protocol::merkle;
use crate::protocol::note::{self, Checkpoint, NoteSigner, SignatureType, Verifier, Verifiers};
use std::sync::Arc;

use crate::storage::broker::{BrokerStore, Checkpoints, Integrator, Sequencer, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the directory pins no transparency log key")]
    NoLogKey,
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

/// The key name a node cosigns checkpoints under.
pub fn witness_name(federation: &str, node: Country) -> String {
    format!("{federation}/node/{node}")
}

/// The verifier of node `cc`'s cosignatures: its directory signing key,
/// under its witness name.
pub fn witness_verifier(dir: &Directory, cc: Country) -> Option<Verifier> {
    let n = dir.node(cc)?;
    Verifier::new(
        &witness_name(&dir.federation, cc),
        SignatureType::CosignatureV1,
        n.signing_key,
    )
    .ok()
}

/// The verifier of the log's checkpoints, as the directory pins it.
pub fn log_verifier(dir: &Directory) -> Result<Verifier, LogError> {
    let log = dir.log().ok_or(LogError::NoLogKey)?;
    Verifier::new(&log.origin, SignatureType::Ed25519, log.public_key)
        .map_err(|e| LogError::Checkpoint(e.to_string()))
}

impl TransparencyLog {
    /// The log of `key`, which must be the key the directory pins.
    pub fn new(key: SigningKey, dir: &Directory) -> Result<TransparencyLog, LogError> {
        let log = dir.log().ok_or(LogError::NoLogKey)?;
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
    /// Integrates first whatever is sequenced, so a checkpoint signed right
    /// after a Submit covers it. The store sequences and integrates only
    /// entries on disk, so the checkpoint signs nothing a crash could take
    /// back, and serves it only once it is on disk itself: a witness never
    /// holds a checkpoint the restarted broker could contradict at the same
    /// size.
    pub async fn checkpoint<S: Integrator + Checkpoints + ?Sized>(
        &self,
        store: &S,
    ) -> Result<Option<u64>, LogError> {
        let size = store.integrate().await?;
        let last = store.latest_checkpoint().await?.map(|(s, _)| s);
        if size == 0 || last == Some(size) {
            return Ok(None);
        }
        let root = store.root(size).await?;
        let cp = Checkpoint::new(self.origin.clone(), size, root)
            .map_err(|e| LogError::Checkpoint(e.to_string()))?;
        let note = note::sign_checkpoint(&cp, &self.signer)
            .map_err(|e| LogError::Checkpoint(e.to_string()))?;
        store.put_checkpoint(size, note.to_bytes()).await?;
        Ok(Some(size))
    }

    /// The signed checkpoint of `size` (latest if None) with every
    /// cosignature the broker holds for it.
    pub async fn checkpoint_note<S: Checkpoints + ?Sized>(
        &self,
        store: &S,
        size: Option<u64>,
    ) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        let found = match size {
            None => store.latest_checkpoint().await?,
            Some(s) => store.checkpoint(s).await?.map(|n| (s, n)),
        };
        let Some((size, bytes)) = found else {
            return Ok(None);
        };
        let mut n = note::Note::parse(&bytes).map_err(|e| LogError::Checkpoint(e.to_string()))?;
        for line in store.cosignatures(size).await? {
            if let Ok(sig) = note::NoteSignature::parse_line(&line) {
                let _ = n.add_signature(sig);
            }
        }
        Ok(Some((size, n.to_bytes())))
    }

    /// Checks, at start, that the stored log is the one its latest
    /// checkpoint signed: every integrated entry hashes to the leaf hash
    /// stored when it was integrated, there are no gaps, and the root of the
    /// first `size` leaves is the checkpoint's. Names the first bad index.
    /// Entries sequenced but not yet integrated (after a crash) have no
    /// stored hash yet; the integrator computes theirs.
    pub async fn verify_stored<S: Sequencer + Integrator + Checkpoints + ?Sized>(
        &self,
        store: &S,
    ) -> Result<Option<u64>, LogError> {
        let Some((size, bytes)) = store.latest_checkpoint().await? else {
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
        let len = store.audit_len().await?;
        let integrated = store.integrated_size().await?;
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
            let leaves = match store.leaves(from, to).await {
                Ok(l) => l,
                Err(e) => {
                    let index = first_gap(store, from, to).await.unwrap_or(from);
                    return Err(LogError::Tampered {
                        size,
                        index,
                        why: e.to_string(),
                    });
                }
            };
            for (i, leaf) in (from..to).zip(leaves) {
                let h = merkle::leaf_hash(&leaf);
                if i < integrated && store.leaf_hash(i).await? != Some(h) {
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
        if integrated < size {
            return Err(LogError::RootMismatch {
                size,
                why: format!("the stored tree covers only {integrated} entries"),
            });
        }
        if store.root(size).await? != root {
            return Err(LogError::RootMismatch {
                size,
                why: "the stored tree nodes do not give the signed root".into(),
            });
        }
        Ok(Some(size))
    }
}

async fn first_gap<S: Sequencer + ?Sized>(store: &S, from: u64, to: u64) -> Option<u64> {
    for i in from..to {
        if store.leaves(i, i + 1).await.map_or(true, |l| l.len() != 1) {
            return Some(i);
        }
    }
    None
}

/// The integrator: integrates what an earlier run sequenced but left
/// unintegrated, then, each time the store says more is sequenced, that,
/// until the broker stops. A failure is logged and retried on the next
/// wake-up (the checkpoint signer also integrates before it signs).
pub async fn integrate(
    store: Arc<dyn BrokerStore>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut sequenced = match store.sequenced().await {
        Ok(rx) => rx,
        Err(e) => {
            tracing::error!(error = %e, "the integrator cannot follow the log");
            return;
        }
    };
    loop {
        // Seen before integrating: what is sequenced meanwhile wakes the
        // next round.
        sequenced.borrow_and_update();
        if let Err(e) = store.integrate().await {
            tracing::error!(error = %e, "could not integrate the log");
        }
        tokio::select! {
            changed = sequenced.changed() => if changed.is_err() { return },
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

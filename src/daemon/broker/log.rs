//! The audit log as a transparency log: the integrator that keeps the
//! Merkle tree up with what is sequenced, signed checkpoints over the
//! integrated tree, the check at start that the stored tree is the one the
//! last checkpoint signed (and the full re-hash of the log, on demand), and
//! the answers the broker gives witnesses and auditors.
//!
//! Every write that records an event sequences it (the store assigns its
//! index durably, in the same write); [`integrate`] computes the tree over
//! it afterwards, and checkpoints cover only what is integrated.

use std::sync::Arc;

use crate::protocol::directory::Directory;
use crate::protocol::keys::SigningKey;
use crate::protocol::merkle;
use crate::protocol::note::{self, Checkpoint, NoteSigner, Verifier, Verifiers};
use crate::protocol::transparency::{LogKeyError, log_verifier};
use crate::storage::broker::{BrokerStore, Checkpoints, Integrator, Sequencer, StoreError};

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
        "the stored log does not match its latest checkpoint (size {size}): first bad index {index}: {why}"
    )]
    Tampered { size: u64, index: u64, why: String },
    #[error("the stored log does not match its latest checkpoint (size {size}): {why}")]
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

    /// The latest checkpoint, opened with the log key.
    async fn latest<S: Checkpoints + ?Sized>(
        &self,
        store: &S,
    ) -> Result<Option<Checkpoint>, LogError> {
        let Some((size, bytes)) = store.latest_checkpoint().await? else {
            return Ok(None);
        };
        let verifiers = Verifiers::new([self.log_verifier.clone()])
            .map_err(|e| LogError::Checkpoint(e.to_string()))?;
        let opened = note::open_checkpoint(&bytes, &verifiers)
            .map_err(|e| LogError::Checkpoint(e.to_string()))?;
        let cp = opened.checkpoint().clone();
        if cp.size() != size {
            return Err(LogError::Checkpoint(format!(
                "checkpoint stored under size {size} says {}",
                cp.size()
            )));
        }
        Ok(Some(cp))
    }

    /// The check at start, whatever the log's length: the latest checkpoint
    /// verifies with the log key, the log holds at least its entries, the
    /// stored tree covers them and its root at the checkpoint's size is the
    /// signed root (`O(log n)` node reads), and the checkpoint's last entry
    /// hashes to its stored leaf hash. Every proof the broker serves is
    /// built from that tree, so a tree that disagrees with what was signed
    /// is refused here; the leaves themselves are re-hashed by
    /// [`TransparencyLog::verify_stored`], on demand (`casebridge broker
    /// --check-log`) and by every auditor's `audit verify`. Returns the
    /// checkpoint's size.
    pub async fn verify_latest<S: Sequencer + Integrator + Checkpoints + ?Sized>(
        &self,
        store: &S,
    ) -> Result<Option<u64>, LogError> {
        let Some(cp) = self.latest(store).await? else {
            return Ok(None);
        };
        let size = cp.size();
        holds(store, size).await?;
        let integrated = store.integrated_size().await?;
        if integrated < size {
            return Err(LogError::RootMismatch {
                size,
                why: format!("the stored tree covers only {integrated} entries"),
            });
        }
        let root = store.root(size).await.map_err(|e| LogError::RootMismatch {
            size,
            why: format!("the stored tree cannot give a root: {e}"),
        })?;
        if &root != cp.root_hash() {
            return Err(LogError::RootMismatch {
                size,
                why: "the stored tree nodes do not give the signed root".into(),
            });
        }
        // A checkpoint has at least one entry.
        let last = size - 1;
        // A storage failure is reported as one, not as tampering.
        let leaf = store.leaves(last, size).await?.pop();
        let stored = store.leaf_hash(last).await?;
        match leaf {
            Some(leaf) if stored == Some(merkle::leaf_hash(&leaf)) => Ok(Some(size)),
            _ => Err(LogError::Tampered {
                size,
                index: last,
                why: "the checkpoint's last entry is missing or does not hash to its stored \
                      leaf hash"
                    .into(),
            }),
        }
    }

    /// The full check, on demand: every entry of the log hashes to the
    /// leaf hash stored when it was integrated, there are no gaps, the root
    /// of the first `size` leaves is the latest checkpoint's, and so is the
    /// stored tree's. Names the first bad index. Reads every entry once, in
    /// pages, and keeps `O(log n)` hashes. Entries sequenced but not yet
    /// integrated (after a crash) have no stored hash yet; the integrator
    /// computes theirs.
    pub async fn verify_stored<S: Sequencer + Integrator + Checkpoints + ?Sized>(
        &self,
        store: &S,
    ) -> Result<Option<u64>, LogError> {
        let Some(cp) = self.latest(store).await? else {
            return Ok(None);
        };
        let size = cp.size();
        let len = holds(store, size).await?;
        let integrated = store.integrated_size().await?;
        let mut frontier = merkle::Frontier::default();
        let mut from = 0;
        while from < len {
            let to = from.saturating_add(CHECK_PAGE).min(len);
            let leaves = match store.leaves(from, to).await {
                Ok(l) if l.len() as u64 == to - from => l,
                Ok(l) => {
                    return Err(LogError::Tampered {
                        size,
                        index: from + l.len() as u64,
                        why: "the entry is missing".into(),
                    });
                }
                Err(e) => {
                    let index = first_gap(store, from, to).await.unwrap_or(from);
                    return Err(LogError::Tampered {
                        size,
                        index,
                        why: e.to_string(),
                    });
                }
            };
            let stored = if from < integrated {
                store.leaf_hashes(from, to.min(integrated)).await?
            } else {
                Vec::new()
            };
            for (i, leaf) in (from..to).zip(leaves) {
                let h = merkle::leaf_hash(&leaf);
                if i < integrated && stored.get((i - from) as usize) != Some(&h) {
                    return Err(LogError::Tampered {
                        size,
                        index: i,
                        why: "entry does not hash to the leaf hash recorded when it was appended"
                            .into(),
                    });
                }
                if i < size {
                    frontier.push(h);
                }
            }
            from = to;
        }
        if &frontier.root() != cp.root_hash() {
            return Err(LogError::RootMismatch {
                size,
                why: "the stored leaves do not give the signed root".into(),
            });
        }
        self.verify_latest(store).await
    }
}

/// The log's length, if it holds the checkpoint's `size` entries.
async fn holds<S: Sequencer + ?Sized>(store: &S, size: u64) -> Result<u64, LogError> {
    let len = store.audit_len().await?;
    if len < size {
        return Err(LogError::Tampered {
            size,
            index: len,
            why: format!("the log holds only {len} entries"),
        });
    }
    Ok(len)
}

/// Entries read at a time by the full check.
const CHECK_PAGE: u64 = 4096;

/// The first index in `[from, to)` whose entry cannot be read alone.
async fn first_gap<S: Sequencer + ?Sized>(store: &S, from: u64, to: u64) -> Option<u64> {
    for i in from..to {
        if store.leaves(i, i + 1).await.map_or(true, |l| l.len() != 1) {
            return Some(i);
        }
    }
    None
}

/// How long the log's lease is valid once taken or renewed; another broker
/// takes it over at most this long (plus one renewal) after its holder died.
pub const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(3);
/// How often the holder renews it, and others try to take it.
pub const LEASE_RENEW: std::time::Duration = std::time::Duration::from_secs(1);

/// Takes and keeps the log's lease for `holder` (see
/// [`crate::storage::broker::Lease`]) until the broker stops, telling
/// `leading` whether this broker integrates and signs. A renewal that fails
/// or comes too late counts as lost: another broker may have taken it.
pub async fn hold_lease(
    store: Arc<dyn BrokerStore>,
    holder: String,
    leading: tokio::sync::watch::Sender<bool>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(LEASE_RENEW);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        let asked = tokio::time::Instant::now();
        let held = match tokio::time::timeout(LEASE_TTL, store.lead(&holder, LEASE_TTL)).await {
            // Held only if the answer came while the lease it renewed was
            // still surely valid.
            Ok(Ok(held)) => held && asked.elapsed() < LEASE_TTL,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not renew the audit log's lease");
                false
            }
            Err(_) => {
                tracing::warn!("the audit log's lease was not renewed in time");
                false
            }
        };
        leading.send_if_modified(|was| {
            if *was == held {
                return false;
            }
            if held {
                tracing::info!(%holder, "this broker now integrates the audit log and signs its checkpoints");
            } else {
                tracing::info!(%holder, "another broker integrates the audit log and signs its checkpoints");
            }
            *was = held;
            true
        });
    }
}

/// The integrator: while this broker leads (see [`hold_lease`]),
/// integrates what an earlier run sequenced but left unintegrated, then,
/// each time the store says more is sequenced, that, until the broker
/// stops. A failure is logged and retried on the next wake-up (the
/// checkpoint signer also integrates before it signs).
pub async fn integrate(
    store: Arc<dyn BrokerStore>,
    mut leading: tokio::sync::watch::Receiver<bool>,
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
        tokio::select! {
            led = leading.wait_for(|l| *l) => if led.is_err() { return },
            _ = stopping.wait_for(|s| *s) => return,
        }
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

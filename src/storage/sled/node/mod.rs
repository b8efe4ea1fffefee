//! The node's store on sled: the [`crate::storage::node`] traits over one
//! sled database with a tree per kind of record.
//!
//! Every mutating method applies one sled transaction, then returns after a
//! group-commit flush: Ok means on disk. sled calls run on the calling
//! worker (they work in memory); only the flush waits on the disk, apart.
//!
//! Here: opening the store and what every part shares. The outbox and the
//! sent records are in `outbox`, the idempotency keys of sends in
//! `idempotency`, the inbox in `inbox`, the witness's state in `witness`.

mod idempotency;
mod inbox;
mod outbox;
#[cfg(test)]
mod tests;
mod witness;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use tokio::sync::watch;

use crate::protocol::ids::EnvelopeId;
use crate::protocol::proto::v1;
use crate::storage::in_force::InForce;
use crate::storage::in_force::VersionsInForce;
use crate::storage::node::Durability;
use crate::storage::{Flush, GroupCommit, StorageError};

/// A node's sled database.
pub struct SledNodeStore {
    trees: Arc<Trees>,
    /// Counts envelopes enqueued and durable; see [`Outbox::outbox_changed`].
    outbox_changed: watch::Sender<u64>,
}

/// The store's trees and its group commit.
struct Trees {
    inbox: sled::Tree,
    received: sled::Tree,
    outbox: sled::Tree,
    sent: sled::Tree,
    sent_headers: sled::Tree,
    purged: sled::Tree,
    witness: sled::Tree,
    meta: sled::Tree,
    /// Idempotency keys: [`idempotency::CALL_PREFIX`] ‖ agency ‖ 0 ‖ key → the earlier
    /// call, and [`idempotency::TIME_PREFIX`] ‖ time ‖ agency ‖ 0 ‖ key → nothing, by
    /// which old keys are forgotten in order.
    idempotency: sled::Tree,
    commit: GroupCommit,
    writer: Mutex<()>,
    /// Envelopes put in the outbox whose flush has not returned: not
    /// submitted until it has, so the broker never holds a record a crash
    /// could take from the sending node.
    unflushed: Mutex<HashSet<EnvelopeId>>,
}

type TxError = sled::transaction::TransactionError<StorageError>;

fn corrupt(tree: &'static str, e: impl ToString) -> StorageError {
    StorageError::Corrupt {
        tree,
        detail: e.to_string(),
    }
}

impl SledNodeStore {
    /// Opens (or creates) the store in `dir` with the default page cache
    /// ([`crate::storage::sled::DEFAULT_CACHE_MIB`]).
    pub fn open(dir: &std::path::Path) -> Result<SledNodeStore, StorageError> {
        SledNodeStore::open_with_cache(dir, crate::storage::sled::DEFAULT_CACHE_MIB)
    }

    /// Opens the store with a page cache of at most `cache_mib` MiB.
    pub fn open_with_cache(
        dir: &std::path::Path,
        cache_mib: u64,
    ) -> Result<SledNodeStore, StorageError> {
        SledNodeStore::open_inner(dir, cache_mib, |db| Arc::new(db))
    }

    /// Opens the store with `flush` in place of sled's own flush (it is
    /// given the database to wrap), for tests that make flushes fail.
    pub fn open_with(
        dir: &std::path::Path,
        flush: impl FnOnce(sled::Db) -> Arc<dyn Flush>,
    ) -> Result<SledNodeStore, StorageError> {
        SledNodeStore::open_inner(dir, crate::storage::sled::DEFAULT_CACHE_MIB, flush)
    }

    fn open_inner(
        dir: &std::path::Path,
        cache_mib: u64,
        flush: impl FnOnce(sled::Db) -> Arc<dyn Flush>,
    ) -> Result<SledNodeStore, StorageError> {
        let db = crate::storage::sled::open_db_with_cache(dir, cache_mib)?;
        outbox::outbox_into_lanes(&db.open_tree("outbox")?)?;
        let trees = Trees {
            inbox: db.open_tree("inbox")?,
            received: db.open_tree("received")?,
            outbox: db.open_tree("outbox")?,
            sent: db.open_tree("sent")?,
            sent_headers: db.open_tree("sent_headers")?,
            purged: db.open_tree("purged")?,
            witness: db.open_tree("witness")?,
            meta: db.open_tree("meta")?,
            idempotency: db.open_tree("idempotency")?,
            commit: GroupCommit::start(flush(db), dir.display().to_string()),
            writer: Mutex::new(()),
            unflushed: Mutex::new(HashSet::new()),
        };
        Ok(SledNodeStore {
            trees: Arc::new(trees),
            outbox_changed: watch::channel(0).0,
        })
    }

    /// Runs `f` on the store's trees.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Trees) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StorageError> {
        on_trees(self.trees.clone(), f).await
    }

    /// Waits until everything applied so far is on disk.
    async fn commit(&self) -> Result<(), StorageError> {
        self.trees.commit.commit().await
    }
}

/// Runs `f` on `trees`, on the calling worker: sled works in memory and
/// takes microseconds (the flush, which waits on the disk, runs apart in
/// the group commit); a hand-off to a blocking thread per operation cost
/// more CPU in wake-ups than the operation itself.
async fn on_trees<T: Send + 'static>(
    trees: Arc<Trees>,
    f: impl FnOnce(&Trees) -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    f(&trees)
}

fn task_failed(e: tokio::task::JoinError) -> StorageError {
    StorageError::Backend(format!("a store task failed: {e}"))
}

impl Trees {
    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unflushed(&self) -> std::sync::MutexGuard<'_, HashSet<EnvelopeId>> {
        self.unflushed.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn tx_err(&self, e: TxError) -> StorageError {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => self.stop_on_io(e),
        }
    }

    /// A sled I/O error stops the store (see [`GroupCommit::stop_on_io`]).
    fn stop_on_io(&self, e: sled::Error) -> StorageError {
        self.commit.stop_on_io(e.into())
    }

    fn decode_sent(v: &[u8]) -> Result<v1::SendStatus, StorageError> {
        v1::SendStatus::decode(v).map_err(|e| corrupt("sent", e))
    }
}

#[async_trait::async_trait]
impl Durability for SledNodeStore {
    async fn failed(&self) -> String {
        self.trees.commit.failed().await
    }
}

#[async_trait::async_trait]
impl VersionsInForce for SledNodeStore {
    async fn in_force(&self) -> Result<InForce, StorageError> {
        self.blocking(|t| {
            let mut entries = Vec::new();
            for kv in t.meta.scan_prefix(crate::storage::in_force::PREFIX) {
                let (k, v) = kv?;
                entries.push((k.to_vec(), v.to_vec()));
            }
            InForce::from_entries(entries).map_err(|e| corrupt("meta", e))
        })
        .await
    }

    async fn put_in_force(&self, in_force: &InForce) -> Result<(), StorageError> {
        let entries = in_force.entries();
        self.blocking(move |t| {
            let _g = t.lock();
            t.meta
                .transaction(|meta| {
                    for (k, v) in &entries {
                        if crate::storage::in_force::raises(meta.get(k)?.as_deref(), v) {
                            meta.insert(k.as_slice(), v.as_slice())?;
                        }
                    }
                    Ok(())
                })
                .map_err(|e| t.tx_err(e))
        })
        .await?;
        self.commit().await
    }
}

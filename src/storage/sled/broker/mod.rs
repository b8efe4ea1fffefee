//! The broker's store on sled: every concern of
//! [`crate::storage::broker`] over one sled database.
//!
//! Each write applies its changes in one sled transaction, then waits for a
//! group-commit flush: when a method returns Ok, its changes are on disk.
//! The queue writes (acceptances and acknowledgements), the most frequent,
//! share their transaction and flush with whatever else waits ([`batch`]). Readers see the log, the queues, the integrated
//! tree and the checkpoints only as far as they are on disk (or, for the
//! tree, derived from what is), so nothing is served that a crash could
//! take back. sled runs one transaction at a time, so indexes and queue
//! sequence numbers are handed out in commit order without a lock of ours.

mod batch;
#[cfg(test)]
mod batch_tests;
mod log;
mod mailboxes;
#[cfg(test)]
mod mailboxes_tests;
mod state;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::protocol::ids::{Country, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::broker::{Durability, Lane, StoreError, Wakeup};
use crate::storage::in_force::{InForce, VersionsInForce};
use crate::storage::{Flush, GroupCommit, StorageError, be, read_be};

const META_AUDIT_NEXT: &[u8] = b"audit_next";
const META_MAIL_NEXT: &[u8] = b"mail_next";
/// How many entries the stored Merkle nodes cover.
const META_INTEGRATED: &[u8] = b"merkle_integrated";
const TAG_ENVELOPE: u8 = 0;
const TAG_RECEIPT: u8 = 1;

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Storage(e.into())
    }
}

/// The embedded sled store.
pub struct SledStore {
    trees: Arc<Trees>,
    commit: GroupCommit,
    durable: Arc<Durable>,
    wakeups: Arc<Wakeups>,
    /// Acceptances and acknowledgements waiting for the writer that applies
    /// them in batches.
    writes: Arc<Mutex<batch::Waiting>>,
}

/// Per node, the wake-up of its delivery stream (see
/// [`crate::storage::broker::Mailboxes::subscribe`]).
type Wakeups = Mutex<HashMap<Country, watch::Sender<Wakeup>>>;

/// The database and its trees: cheap handles, cloned into the blocking
/// tasks that use them.
struct Trees {
    db: sled::Db,
    audit: sled::Tree,
    meta: sled::Tree,
    seen: sled::Tree,
    payload: sled::Tree,
    remaining: sled::Tree,
    mail: sled::Tree,
    accepted: sled::Tree,
    grants: sled::Tree,
    delivered: sled::Tree,
    nodes: sled::Tree,
    checkpoints: sled::Tree,
    cosignatures: sled::Tree,
    /// The upper levels of the integrated tree, in memory.
    upper: log::UpperNodes,
    /// Held while integrating: one integration at a time.
    integrating: Mutex<()>,
}

/// How far the log, the queues, the tree and the checkpoints may be shown:
/// sequenced entries and queue items below these counters are on disk, the
/// tree covers `integrated` entries, and the checkpoint of this size (0:
/// none) is on disk.
struct Durable {
    /// The sequenced size; its receivers wake the integrator.
    audit: watch::Sender<u64>,
    mail: AtomicU64,
    integrated: AtomicU64,
    checkpoint: AtomicU64,
}

impl SledStore {
    /// Opens (or creates) the store in `dir` with the default page cache
    /// ([`crate::storage::sled::DEFAULT_CACHE_MIB`]).
    pub fn open(dir: &std::path::Path) -> Result<SledStore, StoreError> {
        SledStore::open_with_cache(dir, crate::storage::sled::DEFAULT_CACHE_MIB)
    }

    /// Opens the store with a page cache of at most `cache_mib` MiB.
    pub fn open_with_cache(dir: &std::path::Path, cache_mib: u64) -> Result<SledStore, StoreError> {
        SledStore::open_inner(dir, cache_mib, log::CACHED_FROM_LEVEL, |db| Arc::new(db))
    }

    /// Opens the store keeping the Merkle tree in memory from `level` up,
    /// for tests that exercise the cached and the stored reads on small
    /// trees.
    #[cfg(test)]
    pub(crate) fn open_caching_from(
        dir: &std::path::Path,
        level: u8,
    ) -> Result<SledStore, StoreError> {
        SledStore::open_inner(dir, crate::storage::sled::DEFAULT_CACHE_MIB, level, |db| {
            Arc::new(db)
        })
    }

    /// Opens the store with `flush` in place of sled's own flush (it is
    /// given the database to wrap), for tests that make flushes fail or wait.
    pub fn open_with(
        dir: &std::path::Path,
        flush: impl FnOnce(sled::Db) -> Arc<dyn Flush>,
    ) -> Result<SledStore, StoreError> {
        SledStore::open_inner(
            dir,
            crate::storage::sled::DEFAULT_CACHE_MIB,
            log::CACHED_FROM_LEVEL,
            flush,
        )
    }

    fn open_inner(
        dir: &std::path::Path,
        cache_mib: u64,
        cached_from: u8,
        flush: impl FnOnce(sled::Db) -> Arc<dyn Flush>,
    ) -> Result<SledStore, StoreError> {
        let db = crate::storage::sled::open_db_with_cache(dir, cache_mib)?;
        let meta = db.open_tree("meta")?;
        let checkpoints = db.open_tree("checkpoints")?;
        // Everything found at open is on disk.
        let counter = |k: &[u8]| -> Result<u64, StoreError> {
            Ok(meta.get(k)?.and_then(|v| read_be(&v)).unwrap_or(0))
        };
        let audit = counter(META_AUDIT_NEXT)?;
        if meta.get(META_INTEGRATED)?.is_none() {
            // A store written before sequencing and integration were apart
            // integrated every entry as it appended it; a new one has none.
            // Written before anything is sequenced, so the flush of the
            // first sequenced entry covers it.
            meta.insert(META_INTEGRATED, &be(audit))?;
        }
        let durable = Durable {
            audit: watch::channel(audit).0,
            mail: AtomicU64::new(counter(META_MAIL_NEXT)?),
            integrated: AtomicU64::new(counter(META_INTEGRATED)?),
            checkpoint: AtomicU64::new(match checkpoints.last()? {
                Some((k, _)) => read_be(&k).ok_or_else(|| corrupt("checkpoints", "key"))?,
                None => 0,
            }),
        };
        let nodes = db.open_tree("merkle_nodes")?;
        let upper = log::UpperNodes::load(
            &nodes,
            cached_from,
            durable.integrated.load(Ordering::SeqCst),
        )?;
        let trees = Trees {
            audit: db.open_tree("audit")?,
            meta,
            seen: db.open_tree("seen")?,
            payload: db.open_tree("payload")?,
            remaining: db.open_tree("remaining")?,
            mail: db.open_tree("mail")?,
            accepted: db.open_tree("accepted")?,
            grants: db.open_tree("grants")?,
            delivered: db.open_tree("delivered")?,
            nodes,
            checkpoints,
            cosignatures: db.open_tree("cosignatures")?,
            upper,
            integrating: Mutex::new(()),
            db: db.clone(),
        };
        trees.migrate_to_lanes()?;
        Ok(SledStore {
            trees: Arc::new(trees),
            commit: GroupCommit::start(flush(db), dir.display().to_string()),
            durable: Arc::new(durable),
            wakeups: Default::default(),
            writes: Default::default(),
        })
    }

    /// The underlying database, for tests that corrupt it on purpose.
    pub fn db(&self) -> &sled::Db {
        &self.trees.db
    }

    /// Flushes completed so far (see [`GroupCommit::flushes`]).
    pub fn flushes(&self) -> u64 {
        self.commit.flushes()
    }

    /// Runs `f` on the trees, on the calling worker. A sled operation works
    /// in memory and takes microseconds (only the flush waits on the disk,
    /// and it runs apart, in [`GroupCommit`]); handing each one to a
    /// blocking thread cost more CPU in thread wake-ups than the operation.
    async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Trees) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        f(&self.trees)
    }

    /// Applies `f` in one transaction, waits until it is on disk, then
    /// shows readers what it sequenced and queued.
    async fn transact<R: Send + 'static>(
        &self,
        f: impl Fn(&Txn<'_>) -> TxResult<R> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (r, counters) = self
            .run(move |t| {
                let r = t.transact(&f)?;
                // Read after the transaction, before the flush starts: every
                // transaction these counters count is applied, and the flush
                // covers it.
                Ok((r, t.counters()?))
            })
            .await
            .map_err(|e| self.stop_on_io(e))?;
        self.commit.commit().await?;
        self.durable.show(counters);
        Ok(r)
    }

    /// A sled I/O error on a write stops the store (see
    /// [`GroupCommit::stop_on_io`]).
    fn stop_on_io(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::Storage(e) => StoreError::Storage(self.commit.stop_on_io(e)),
            other => other,
        }
    }
}

impl Durable {
    /// Shows readers the log and the queues up to `(audit, mail)`, the
    /// counters read after transactions that are now on disk.
    fn show(&self, (audit, mail): (u64, u64)) {
        self.mail.fetch_max(mail, Ordering::SeqCst);
        self.audit.send_if_modified(|n| {
            let grew = audit > *n;
            *n = (*n).max(audit);
            grew
        });
    }
}

/// Tells the delivery streams of `nodes` that something was queued for
/// them in `lane`.
fn wake(wakeups: &Wakeups, nodes: impl IntoIterator<Item = Country>, lane: Lane) {
    let all = wakeups.lock().unwrap_or_else(|p| p.into_inner());
    for node in nodes {
        if let Some(tx) = all.get(&node) {
            tx.send_modify(|w| {
                w.queued = w.queued.wrapping_add(1);
                if lane == Lane::Immediate {
                    w.immediate = w.immediate.wrapping_add(1);
                }
            });
        }
    }
}

/// Tells the delivery stream of `node` that it acknowledged an item.
fn wake_acked(wakeups: &Wakeups, node: Country) {
    let all = wakeups.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(tx) = all.get(&node) {
        tx.send_modify(|w| w.acked = w.acked.wrapping_add(1));
    }
}

type TxTree = sled::transaction::TransactionalTree;
type TxResult<T> = Result<T, sled::transaction::ConflictableTransactionError<StoreError>>;

/// The trees a write transaction may change.
struct Txn<'a> {
    audit: &'a TxTree,
    meta: &'a TxTree,
    seen: &'a TxTree,
    payload: &'a TxTree,
    remaining: &'a TxTree,
    mail: &'a TxTree,
    accepted: &'a TxTree,
    grants: &'a TxTree,
    delivered: &'a TxTree,
}

impl Trees {
    fn transact<R>(&self, f: &impl Fn(&Txn<'_>) -> TxResult<R>) -> Result<R, StoreError> {
        use sled::Transactional as _;
        let trees = (
            &self.audit,
            &self.meta,
            &self.seen,
            &self.payload,
            &self.remaining,
            &self.mail,
            &self.accepted,
            &self.grants,
            &self.delivered,
        );
        trees
            .transaction(
                |(audit, meta, seen, payload, remaining, mail, accepted, grants, delivered)| {
                    f(&Txn {
                        audit,
                        meta,
                        seen,
                        payload,
                        remaining,
                        mail,
                        accepted,
                        grants,
                        delivered,
                    })
                },
            )
            .map_err(|e| match e {
                sled::transaction::TransactionError::Abort(e) => e,
                sled::transaction::TransactionError::Storage(e) => e.into(),
            })
    }

    /// The next audit index and the next queue sequence number.
    fn counters(&self) -> Result<(u64, u64), StoreError> {
        let counter = |k: &[u8]| -> Result<u64, StoreError> {
            Ok(self.meta.get(k)?.and_then(|v| read_be(&v)).unwrap_or(0))
        };
        Ok((counter(META_AUDIT_NEXT)?, counter(META_MAIL_NEXT)?))
    }
}

impl Txn<'_> {
    fn next(&self, key: &[u8]) -> TxResult<u64> {
        let n = self.meta.get(key)?.and_then(|v| read_be(&v)).unwrap_or(0);
        self.meta.insert(key, &be(n + 1))?;
        Ok(n)
    }

    /// Sequences an event: stores it as the next leaf of the log. The leaf
    /// is capped ([`crate::protocol::leaf::encode`]): nothing oversized is
    /// stored. The Merkle nodes are the integrator's.
    fn sequence(&self, event: &v1::AuditEvent) -> TxResult<u64> {
        let leaf = match crate::protocol::leaf::encode(event) {
            Ok(leaf) => leaf,
            Err(e) => return abort(e.into()),
        };
        self.sequence_leaf(leaf)
    }

    /// Sequences a leaf already encoded (and capped).
    fn sequence_leaf(&self, leaf: impl Into<sled::IVec>) -> TxResult<u64> {
        let i = self.next(META_AUDIT_NEXT)?;
        self.audit.insert(&be(i), leaf)?;
        Ok(i)
    }

    /// Sequences leaves already encoded (and capped) under consecutive
    /// indexes, reading and writing the counter once; returns the first.
    fn sequence_leaves(&self, leaves: &[Vec<u8>]) -> TxResult<u64> {
        let first = self
            .meta
            .get(META_AUDIT_NEXT)?
            .and_then(|v| read_be(&v))
            .unwrap_or(0);
        for (i, leaf) in (first..).zip(leaves) {
            self.audit.insert(&be(i), leaf.as_slice())?;
        }
        self.meta
            .insert(META_AUDIT_NEXT, &be(first + leaves.len() as u64))?;
        Ok(first)
    }

    /// Queues `item` for `node` in `lane`, under the next seq.
    fn enqueue(&self, node: Country, lane: Lane, item: Vec<u8>) -> TxResult<u64> {
        let seq = self.next(META_MAIL_NEXT)?;
        self.mail
            .insert(mailboxes::mail_key(node, lane, seq), item)?;
        Ok(seq)
    }
}

#[async_trait::async_trait]
impl Durability for SledStore {
    async fn failed(&self) -> String {
        self.commit.failed().await
    }
}

#[async_trait::async_trait]
impl VersionsInForce for SledStore {
    async fn in_force(&self) -> Result<InForce, StorageError> {
        let entries = self
            .run(|t| {
                let mut entries = Vec::new();
                for kv in t.meta.scan_prefix(crate::storage::in_force::PREFIX) {
                    let (k, v) = kv?;
                    entries.push((k.to_vec(), v.to_vec()));
                }
                Ok(entries)
            })
            .await
            .map_err(storage)?;
        InForce::from_entries(entries).map_err(|e| StorageError::Corrupt {
            tree: "meta",
            detail: e,
        })
    }

    async fn put_in_force(&self, in_force: &InForce) -> Result<(), StorageError> {
        let entries = in_force.entries();
        self.transact(move |t| {
            for (k, v) in &entries {
                if crate::storage::in_force::raises(t.meta.get(k)?.as_deref(), v) {
                    t.meta.insert(k.as_slice(), v.as_slice())?;
                }
            }
            Ok(())
        })
        .await
        .map_err(storage)
    }
}

/// The storage failure inside a store error; the versions in force fail
/// with nothing else.
fn storage(e: StoreError) -> StorageError {
    match e {
        StoreError::Storage(e) => e,
        other => StorageError::Backend(other.to_string()),
    }
}

fn delivered_key(id: &EnvelopeId, node: Country) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.extend_from_slice(node.as_str().as_bytes());
    k
}

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(sled::transaction::ConflictableTransactionError::Abort(e))
}

fn corrupt(tree: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Storage(StorageError::Corrupt {
        tree,
        detail: detail.into(),
    })
}

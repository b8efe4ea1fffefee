//! The audit log on sled: leaves in `audit`, Merkle nodes in
//! `merkle_nodes` with the integrated size in `meta`, checkpoints and
//! cosignatures in trees of their own.

use std::sync::atomic::Ordering;

use prost::Message as _;
use tokio::sync::watch;

use super::{META_INTEGRATED, SledStore, Trees, corrupt};
use crate::protocol::ids::Country;
use crate::protocol::merkle;
use crate::protocol::proto::v1;
use crate::storage::broker::{Checkpoints, Integrator, Sequencer, StoreError};
use crate::storage::{be, read_be};

/// Leaves integrated in one transaction at most, so that integrating a
/// long backlog (after a crash) holds sled's transaction lock only briefly
/// at a time.
const INTEGRATION_BATCH: u64 = 1024;

fn node_key(n: merkle::NodeId) -> Vec<u8> {
    let mut k = vec![n.level];
    k.extend_from_slice(&be(n.index));
    k
}

type TxTree = sled::transaction::TransactionalTree;

/// Reads Merkle nodes inside the integration transaction, including those
/// it wrote itself.
struct TxNodes<'a>(&'a TxTree);

enum TxNodeError {
    Tx(sled::transaction::UnabortableTransactionError),
    Missing(merkle::NodeId),
}

impl merkle::HashReader for TxNodes<'_> {
    type Error = TxNodeError;
    fn read_node(&self, node: merkle::NodeId) -> Result<merkle::Hash, TxNodeError> {
        match self.0.get(node_key(node)).map_err(TxNodeError::Tx)? {
            Some(v) => v
                .as_ref()
                .try_into()
                .map_err(|_| TxNodeError::Missing(node)),
            None => Err(TxNodeError::Missing(node)),
        }
    }
}

/// Reads committed Merkle nodes.
struct StoredNodes<'a>(&'a sled::Tree);

impl merkle::HashReader for StoredNodes<'_> {
    type Error = StoreError;
    fn read_node(&self, node: merkle::NodeId) -> Result<merkle::Hash, StoreError> {
        match self.0.get(node_key(node))? {
            Some(v) => v
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("merkle_nodes", format!("node {node:?} is not 32 bytes"))),
            None => Err(corrupt("merkle_nodes", format!("node {node:?} is missing"))),
        }
    }
}

fn prove_error(e: &merkle::ProveError<StoreError>) -> StoreError {
    corrupt("merkle_nodes", e.to_string())
}

impl Trees {
    /// Integrates the entries below `target` not yet integrated, a batch
    /// per transaction; returns the integrated size. Each transaction reads
    /// where the last one stopped, so concurrent callers never integrate an
    /// entry twice.
    fn integrate(&self, target: u64) -> Result<u64, StoreError> {
        use sled::Transactional as _;
        loop {
            let done = (&self.audit, &self.meta, &self.nodes)
                .transaction(|(audit, meta, nodes)| {
                    let from = meta
                        .get(META_INTEGRATED)?
                        .and_then(|v| read_be(&v))
                        .unwrap_or(0);
                    if from >= target {
                        return Ok(from);
                    }
                    let to = target.min(from.saturating_add(INTEGRATION_BATCH));
                    for i in from..to {
                        let Some(leaf) = audit.get(be(i))? else {
                            return super::abort(corrupt(
                                "audit",
                                format!("entry {i} is missing; it cannot be integrated"),
                            ));
                        };
                        let completed =
                            merkle::completed_nodes(&TxNodes(nodes), i, merkle::leaf_hash(&leaf))
                                .map_err(|e| match e {
                                TxNodeError::Tx(e) => e.into(),
                                TxNodeError::Missing(n) => {
                                    sled::transaction::ConflictableTransactionError::Abort(corrupt(
                                        "merkle_nodes",
                                        format!("missing node {n:?} while integrating leaf {i}"),
                                    ))
                                }
                            })?;
                        for (node, hash) in completed {
                            nodes.insert(node_key(node), hash.as_slice())?;
                        }
                    }
                    meta.insert(META_INTEGRATED, &be(to))?;
                    Ok(to)
                })
                .map_err(|e| match e {
                    sled::transaction::TransactionError::Abort(e) => e,
                    sled::transaction::TransactionError::Storage(e) => e.into(),
                })?;
            if done >= target {
                return Ok(done);
            }
        }
    }
}

impl SledStore {
    /// Refuses a tree larger than what is integrated.
    fn integrated(&self, size: u64) -> Result<(), StoreError> {
        let integrated = self.durable.integrated.load(Ordering::SeqCst);
        if size > integrated {
            return Err(StoreError::NotIntegrated { size, integrated });
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Sequencer for SledStore {
    async fn append(&self, event: v1::AuditEvent) -> Result<u64, StoreError> {
        self.transact(move |t| t.sequence(&event)).await
    }

    async fn audit_len(&self) -> Result<u64, StoreError> {
        Ok(*self.durable.audit.borrow())
    }

    async fn audit_range(&self, from: u64, to: u64) -> Result<Vec<v1::AuditEvent>, StoreError> {
        let to = to.min(*self.durable.audit.borrow());
        self.run(move |t| {
            let mut out = Vec::new();
            for kv in t.audit.range(be(from)..be(to)) {
                let (_, v) = kv?;
                out.push(
                    v1::AuditEvent::decode(v.as_ref())
                        .map_err(|e| corrupt("audit", e.to_string()))?,
                );
            }
            Ok(out)
        })
        .await
    }

    async fn leaves(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let to = to.min(*self.durable.audit.borrow());
        self.run(move |t| {
            let mut out = Vec::new();
            for (expected, kv) in (from..).zip(t.audit.range(be(from)..be(to))) {
                let (k, v) = kv?;
                // A gap means an entry was removed behind the store's back.
                if read_be(&k) != Some(expected) {
                    return Err(corrupt("audit", format!("entry {expected} is missing")));
                }
                out.push(v.to_vec());
            }
            Ok(out)
        })
        .await
    }

    async fn sequenced(&self) -> Result<watch::Receiver<u64>, StoreError> {
        Ok(self.durable.audit.subscribe())
    }
}

#[async_trait::async_trait]
impl Integrator for SledStore {
    async fn integrate(&self) -> Result<u64, StoreError> {
        // Only what is on disk: the tree never covers an entry a crash
        // could take back.
        let target = *self.durable.audit.borrow();
        let size = self
            .run(move |t| t.integrate(target))
            .await
            .map_err(|e| self.stop_on_io(e))?;
        // Not flushed here: the nodes are derived from leaves on disk, a
        // crash that loses them leaves the integrated size behind, and the
        // next integration computes the same nodes again. A checkpoint's
        // own flush makes the nodes under it durable before it is served.
        Ok(self
            .durable
            .integrated
            .fetch_max(size, Ordering::SeqCst)
            .max(size))
    }

    async fn integrated_size(&self) -> Result<u64, StoreError> {
        Ok(self.durable.integrated.load(Ordering::SeqCst))
    }

    async fn root(&self, size: u64) -> Result<merkle::Hash, StoreError> {
        self.integrated(size)?;
        self.run(move |t| merkle::tree_root(&StoredNodes(&t.nodes), size))
            .await
    }

    async fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<Vec<merkle::Hash>, StoreError> {
        self.integrated(size)?;
        self.run(move |t| {
            merkle::inclusion_proof(&StoredNodes(&t.nodes), index, size)
                .map_err(|e| prove_error(&e))
        })
        .await
    }

    async fn consistency_proof(
        &self,
        size1: u64,
        size2: u64,
    ) -> Result<Vec<merkle::Hash>, StoreError> {
        self.integrated(size2)?;
        self.run(move |t| {
            merkle::consistency_proof(&StoredNodes(&t.nodes), size1, size2)
                .map_err(|e| prove_error(&e))
        })
        .await
    }

    async fn leaf_hash(&self, index: u64) -> Result<Option<merkle::Hash>, StoreError> {
        if index >= self.durable.integrated.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.run(move |t| {
            Ok(t.nodes
                .get(node_key(merkle::NodeId::new(0, index)))?
                .and_then(|v| v.as_ref().try_into().ok()))
        })
        .await
    }
}

#[async_trait::async_trait]
impl Checkpoints for SledStore {
    async fn put_checkpoint(&self, size: u64, note: Vec<u8>) -> Result<(), StoreError> {
        self.run(move |t| Ok(t.checkpoints.insert(be(size), note)?))
            .await
            .map_err(|e| self.stop_on_io(e))?;
        self.commit.commit().await?;
        // Served from now on, never before it is on disk: a checkpoint a
        // crash could take back would show witnesses a fork.
        self.durable.checkpoint.fetch_max(size, Ordering::SeqCst);
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let size = self.durable.checkpoint.load(Ordering::SeqCst);
        if size == 0 {
            return Ok(None);
        }
        self.run(move |t| match t.checkpoints.get(be(size))? {
            Some(v) => Ok(Some((size, v.to_vec()))),
            None => Err(corrupt(
                "checkpoints",
                format!("the checkpoint of size {size} is missing"),
            )),
        })
        .await
    }

    async fn checkpoint(&self, size: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if size > self.durable.checkpoint.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.run(move |t| Ok(t.checkpoints.get(be(size))?.map(|v| v.to_vec())))
            .await
    }

    async fn put_cosignature(
        &self,
        size: u64,
        witness: Country,
        line: String,
    ) -> Result<(), StoreError> {
        let mut k = be(size).to_vec();
        k.extend_from_slice(witness.as_str().as_bytes());
        self.run(move |t| Ok(t.cosignatures.insert(k, line.into_bytes())?))
            .await
            .map_err(|e| self.stop_on_io(e))?;
        self.commit.commit().await?;
        Ok(())
    }

    async fn cosignatures(&self, size: u64) -> Result<Vec<String>, StoreError> {
        self.run(move |t| {
            let mut out = Vec::new();
            for kv in t.cosignatures.scan_prefix(be(size)) {
                let (_, v) = kv?;
                out.push(
                    String::from_utf8(v.to_vec())
                        .map_err(|_| corrupt("cosignatures", "not UTF-8"))?,
                );
            }
            Ok(out)
        })
        .await
    }
}

//! The audit log on sled: leaves in `audit`, Merkle nodes in
//! `merkle_nodes` with the integrated size in `meta`, checkpoints and
//! cosignatures in trees of their own.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use prost::Message as _;
use tokio::sync::watch;

use super::{META_INTEGRATED, SledStore, Trees, corrupt};
use crate::protocol::ids::Country;
use crate::protocol::merkle;
use crate::protocol::proto::v1;
use crate::storage::broker::{Checkpoints, Integrator, Sequencer, StoreError};
use crate::storage::{be, read_be};

/// Leaves integrated in one batch at most, so that integrating a long
/// backlog (after a crash) keeps the nodes computed but not yet written to
/// a few MiB.
const INTEGRATION_BATCH: u64 = 1 << 16;

fn node_key(n: merkle::NodeId) -> Vec<u8> {
    let mut k = vec![n.level];
    k.extend_from_slice(&be(n.index));
    k
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

/// The nodes one integration batch computed, over the committed ones: a
/// left sibling is nearly always in the batch, so the stored tree is read
/// only at the batch's left edge.
struct BatchNodes<'a> {
    stored: StoredNodes<'a>,
    computed: HashMap<merkle::NodeId, merkle::Hash>,
}

impl merkle::HashReader for BatchNodes<'_> {
    type Error = StoreError;
    fn read_node(&self, node: merkle::NodeId) -> Result<merkle::Hash, StoreError> {
        match self.computed.get(&node) {
            Some(h) => Ok(*h),
            None => self.stored.read_node(node),
        }
    }
}

fn prove_error(e: &merkle::ProveError<StoreError>) -> StoreError {
    corrupt("merkle_nodes", e.to_string())
}

impl Trees {
    /// Integrates the entries below `target` not yet integrated; returns
    /// the integrated size. Each batch reads its leaves in one range scan,
    /// computes their nodes in memory and writes them in one batch, then
    /// the integrated size: a crash between the two leaves nodes that the
    /// next integration computes again, identically. One integration runs
    /// at a time, so the integrated size never goes back.
    pub(super) fn integrate(&self, target: u64, batch: u64) -> Result<u64, StoreError> {
        let _one = self.integrating.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let from = self
                .meta
                .get(META_INTEGRATED)?
                .and_then(|v| read_be(&v))
                .unwrap_or(0);
            if from >= target {
                return Ok(from);
            }
            let to = target.min(from.saturating_add(batch.max(1)));
            let mut nodes = BatchNodes {
                stored: StoredNodes(&self.nodes),
                computed: HashMap::new(),
            };
            let mut batch = sled::Batch::default();
            let mut next = from;
            for kv in self.audit.range(be(from)..be(to)) {
                let (k, leaf) = kv?;
                if read_be(&k) != Some(next) {
                    break;
                }
                let completed = merkle::completed_nodes(&nodes, next, merkle::leaf_hash(&leaf))
                    .map_err(|e| {
                        corrupt(
                            "merkle_nodes",
                            format!("while integrating leaf {next}: {e}"),
                        )
                    })?;
                for (node, hash) in completed {
                    batch.insert(node_key(node), hash.as_slice());
                    nodes.computed.insert(node, hash);
                }
                next += 1;
            }
            if next < to {
                return Err(corrupt(
                    "audit",
                    format!("entry {next} is missing; it cannot be integrated"),
                ));
            }
            self.nodes.apply_batch(batch)?;
            self.meta.insert(META_INTEGRATED, &be(to))?;
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

    async fn append_all(
        &self,
        events: Vec<v1::AuditEvent>,
    ) -> Result<std::ops::Range<u64>, StoreError> {
        let n = events.len() as u64;
        self.transact(move |t| {
            let mut first = None;
            for event in &events {
                let i = t.sequence(event)?;
                first.get_or_insert(i);
            }
            Ok(first)
        })
        .await
        .map(|first| match first {
            Some(first) => first..first + n,
            None => 0..0,
        })
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
            .run(move |t| t.integrate(target, INTEGRATION_BATCH))
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

    async fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<merkle::Hash>, StoreError> {
        let to = to.min(self.durable.integrated.load(Ordering::SeqCst));
        if from >= to {
            return Ok(Vec::new());
        }
        self.run(move |t| {
            let mut out = Vec::with_capacity(usize::try_from(to.saturating_sub(from)).unwrap_or(0));
            let start = node_key(merkle::NodeId::new(0, from));
            let end = node_key(merkle::NodeId::new(0, to));
            for (expected, kv) in (from..).zip(t.nodes.range(start..end)) {
                let (k, v) = kv?;
                if k.as_ref() != node_key(merkle::NodeId::new(0, expected)).as_slice() {
                    return Err(corrupt(
                        "merkle_nodes",
                        format!("the leaf hash of entry {expected} is missing"),
                    ));
                }
                out.push(v.as_ref().try_into().map_err(|_| {
                    corrupt(
                        "merkle_nodes",
                        format!("the leaf hash of entry {expected} is not 32 bytes"),
                    )
                })?);
            }
            if (out.len() as u64) < to.saturating_sub(from) {
                return Err(corrupt(
                    "merkle_nodes",
                    format!(
                        "the leaf hash of entry {} is missing",
                        from + out.len() as u64
                    ),
                ));
            }
            Ok(out)
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

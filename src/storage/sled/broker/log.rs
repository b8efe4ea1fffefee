//! The audit log on sled: leaves in `audit`, Merkle nodes in
//! `merkle_nodes` with the integrated size in `meta`, checkpoints and
//! cosignatures in trees of their own.

use std::collections::HashMap;
use std::sync::RwLock;
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
/// backlog (after a crash) keeps the nodes of a batch in memory to a few
/// MiB.
const INTEGRATION_BATCH: u64 = 1 << 16;

fn node_key(n: merkle::NodeId) -> Vec<u8> {
    let mut k = vec![n.level];
    k.extend_from_slice(&be(n.index));
    k
}

/// The lowest level of the Merkle tree kept in memory ([`UpperNodes`]).
/// A tree of `n` leaves has about `2n / 2^level` nodes at and above it:
/// 32 bytes per node makes a quarter of a byte per entry (2.5 MB at ten
/// million entries), while a proof then reads at most this many nodes
/// from disk.
pub(super) const CACHED_FROM_LEVEL: u8 = 8;

/// The integrated tree's nodes at and above one level, in memory: a proof
/// reads its upper part here and only the nodes below from sled, where
/// each read is a point lookup into a page that is seldom cached.
///
/// Filled at open from `merkle_nodes` up to the integrated size, then by
/// each integration batch with the nodes it wrote, level by level in index
/// order, so each level is a dense prefix. Nodes are immutable once
/// computed, and readers ask only for nodes within the integrated size
/// (which the proofs' size checks guarantee), so a node held here before
/// the integrated size covers it is never read early; after a crash the
/// cache is rebuilt from what the integrated size covers.
pub(super) struct UpperNodes {
    from_level: u8,
    /// `levels[k]` holds the nodes of level `from_level + k`, from index 0.
    levels: RwLock<Vec<Vec<merkle::Hash>>>,
}

impl UpperNodes {
    /// Loads the nodes at and above `from_level` that `integrated` entries
    /// complete.
    pub(super) fn load(
        nodes: &sled::Tree,
        from_level: u8,
        integrated: u64,
    ) -> Result<UpperNodes, StoreError> {
        let mut levels = Vec::new();
        for level in from_level..64 {
            let count = integrated >> level;
            if count == 0 {
                break;
            }
            let mut hashes = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
            let start = node_key(merkle::NodeId::new(level, 0));
            let end = node_key(merkle::NodeId::new(level, count));
            for (index, kv) in (0..).zip(nodes.range(start..end)) {
                let (k, v) = kv?;
                let node = merkle::NodeId::new(level, index);
                if k.as_ref() != node_key(node).as_slice() {
                    return Err(corrupt("merkle_nodes", format!("node {node} is missing")));
                }
                hashes.push(v.as_ref().try_into().map_err(|_| {
                    corrupt("merkle_nodes", format!("node {node} is not 32 bytes"))
                })?);
            }
            if (hashes.len() as u64) < count {
                let node = merkle::NodeId::new(level, hashes.len() as u64);
                return Err(corrupt("merkle_nodes", format!("node {node} is missing")));
            }
            levels.push(hashes);
        }
        Ok(UpperNodes {
            from_level,
            levels: RwLock::new(levels),
        })
    }

    /// Adds the nodes of one integration batch that extend their level;
    /// those already held (a batch computed again) and those of a lower
    /// level are left out.
    fn extend(&self, computed: &HashMap<merkle::NodeId, merkle::Hash>) {
        let mut upper: Vec<(merkle::NodeId, merkle::Hash)> = computed
            .iter()
            .filter(|(node, _)| node.level >= self.from_level)
            .map(|(node, hash)| (*node, *hash))
            .collect();
        if upper.is_empty() {
            return;
        }
        upper.sort_unstable_by_key(|(node, _)| *node);
        let mut levels = self.levels.write().unwrap_or_else(|p| p.into_inner());
        for (node, hash) in upper {
            let k = usize::from(node.level - self.from_level);
            while levels.len() <= k {
                levels.push(Vec::new());
            }
            let level = &mut levels[k];
            // Pushed only where it keeps the level dense; a gap cannot
            // arise from integration in order, and a node left out is
            // read from sled instead.
            if node.index == level.len() as u64 {
                level.push(hash);
            }
        }
    }

    fn get(&self, node: merkle::NodeId) -> Option<merkle::Hash> {
        let k = usize::from(node.level.checked_sub(self.from_level)?);
        let levels = self.levels.read().unwrap_or_else(|p| p.into_inner());
        levels
            .get(k)?
            .get(usize::try_from(node.index).ok()?)
            .copied()
    }

    /// How many nodes are held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        let levels = self.levels.read().unwrap_or_else(|p| p.into_inner());
        levels.iter().map(Vec::len).sum()
    }
}

/// Reads committed Merkle nodes.
pub(super) struct StoredNodes<'a>(pub(super) &'a sled::Tree);

impl merkle::HashReader for StoredNodes<'_> {
    type Error = StoreError;
    fn read_node(&self, node: merkle::NodeId) -> Result<merkle::Hash, StoreError> {
        match self.0.get(node_key(node))? {
            Some(v) => v.as_ref().try_into().map_err(|_| {
                corrupt(
                    "merkle_nodes",
                    format!(
                        "the node at level {} index {} is not 32 bytes",
                        node.level, node.index
                    ),
                )
            }),
            None => Err(corrupt(
                "merkle_nodes",
                format!(
                    "the node at level {} index {} is missing",
                    node.level, node.index
                ),
            )),
        }
    }
}

/// The nodes one integration batch computed, over the committed ones: a
/// left sibling is nearly always in the batch, so the stored tree is read
/// only at the batch's left edge.
struct BatchNodes<'a> {
    stored: CachedNodes<'a>,
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

/// Reads integrated Merkle nodes: the upper levels from memory, the rest
/// from sled. Gives exactly what [`StoredNodes`] gives for every node
/// within the integrated size.
pub(super) struct CachedNodes<'a> {
    upper: &'a UpperNodes,
    stored: StoredNodes<'a>,
}

impl<'a> CachedNodes<'a> {
    pub(super) fn of(trees: &'a Trees) -> CachedNodes<'a> {
        CachedNodes {
            upper: &trees.upper,
            stored: StoredNodes(&trees.nodes),
        }
    }
}

impl merkle::HashReader for CachedNodes<'_> {
    type Error = StoreError;
    fn read_node(&self, node: merkle::NodeId) -> Result<merkle::Hash, StoreError> {
        match self.upper.get(node) {
            Some(h) => Ok(h),
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
    /// computes their nodes with the batch's own nodes kept in memory,
    /// writes the nodes, then the integrated size: a crash in between
    /// leaves nodes that the next integration computes again, identically,
    /// and nothing reads a node beyond the integrated size. One
    /// integration runs at a time, so the integrated size never goes back.
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
                stored: CachedNodes::of(self),
                computed: HashMap::new(),
            };
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
                    // Plain writes, not a batch or a transaction: those
                    // take sled's global write lock and would hold up
                    // every Submit while a long backlog is integrated.
                    self.nodes.insert(node_key(node), hash.as_slice())?;
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
            // Before the integrated size moves: nothing reads these nodes
            // until it does.
            self.upper.extend(&nodes.computed);
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
        if events.is_empty() {
            return Ok(0..0);
        }
        // Encoded (and capped) before the transaction: none or all, and
        // nothing is encoded twice if sled runs the closure again.
        let leaves = events
            .iter()
            .map(crate::protocol::leaf::encode)
            .collect::<Result<Vec<_>, _>>()?;
        let n = leaves.len() as u64;
        let first = self.transact(move |t| t.sequence_leaves(&leaves)).await?;
        Ok(first..first + n)
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
        self.run(move |t| merkle::tree_root(&CachedNodes::of(t), size))
            .await
    }

    async fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<Vec<merkle::Hash>, StoreError> {
        self.integrated(size)?;
        self.run(move |t| {
            merkle::inclusion_proof(&CachedNodes::of(t), index, size).map_err(|e| prove_error(&e))
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
            merkle::consistency_proof(&CachedNodes::of(t), size1, size2)
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

/// One process at a time opens a sled store (sled locks its files), so the
/// broker that has it leads: the lease is always its own.
#[async_trait::async_trait]
impl crate::storage::broker::Lease for SledStore {
    async fn lead(&self, _holder: &str, _ttl: std::time::Duration) -> Result<bool, StoreError> {
        Ok(true)
    }

    async fn resign(&self, _holder: &str) -> Result<(), StoreError> {
        Ok(())
    }
}

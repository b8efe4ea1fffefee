//! The audit log on PostgreSQL: leaves in `audit` below the committed
//! `log_head.size`, Merkle nodes in `merkle_nodes` with the integrated size
//! in `integration`, checkpoints and cosignatures in tables of their own.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

use prost::Message as _;
use tokio::sync::watch;

use super::mailboxes::sequence;
use super::{PgStore, corrupt, int, notify, sequenced_note, uint};
use crate::protocol::ids::Country;
use crate::protocol::merkle;
use crate::protocol::proto::v1;
use crate::storage::broker::{Checkpoints, Integrator, Sequencer, StoreError};

/// Leaves integrated in one transaction at most.
const INTEGRATION_BATCH: i64 = 1 << 12;

/// The advisory lock key integrators take in turn ("cbintegr").
const INTEGRATION_LOCK: i64 = 0x6362_696e_7465_6772;

/// Node hashes known so far, recording every node asked for that is not:
/// a proof's or a root's choice of nodes depends only on sizes and
/// indexes, never on hash values, so one pass with placeholders names every
/// node needed, and a second pass, after one query, computes the answer.
#[derive(Default)]
struct Gather {
    known: HashMap<merkle::NodeId, merkle::Hash>,
    missing: RefCell<BTreeSet<merkle::NodeId>>,
}

impl merkle::HashReader for Gather {
    type Error = StoreError;
    fn read_node(&self, node: merkle::NodeId) -> Result<merkle::Hash, StoreError> {
        match self.known.get(&node) {
            Some(h) => Ok(*h),
            None => {
                self.missing.borrow_mut().insert(node);
                Ok([0; 32])
            }
        }
    }
}

impl PgStore {
    /// Reads `nodes` from `merkle_nodes`; one absent is an error.
    async fn read_nodes(
        &self,
        client: &(impl tokio_postgres::GenericClient + Sync),
        nodes: &BTreeSet<merkle::NodeId>,
        into: &mut HashMap<merkle::NodeId, merkle::Hash>,
    ) -> Result<(), StoreError> {
        if nodes.is_empty() {
            return Ok(());
        }
        let levels: Vec<i16> = nodes.iter().map(|n| i16::from(n.level)).collect();
        let indexes = nodes
            .iter()
            .map(|n| int(n.index))
            .collect::<Result<Vec<_>, _>>()?;
        let rows = client
            .query(
                "SELECT n.level, n.idx, n.hash FROM merkle_nodes n \
                 JOIN unnest($1::smallint[], $2::bigint[]) AS w(level, idx) \
                 ON n.level = w.level AND n.idx = w.idx",
                &[&levels, &indexes],
            )
            .await?;
        for r in rows {
            let level: i16 = r.get(0);
            let node = merkle::NodeId::new(
                u8::try_from(level).map_err(|_| corrupt("merkle_nodes", "level"))?,
                uint(r.get(1), "merkle_nodes")?,
            );
            let hash: &[u8] = r.get(2);
            into.insert(
                node,
                hash.try_into()
                    .map_err(|_| corrupt("merkle_nodes", format!("node {node} is not 32 bytes")))?,
            );
        }
        if let Some(absent) = nodes.iter().find(|n| !into.contains_key(n)) {
            return Err(corrupt("merkle_nodes", format!("node {absent} is missing")));
        }
        Ok(())
    }

    /// Runs `f` over the stored nodes it reads, fetching them in as few
    /// queries as its reads need (two passes for a proof).
    async fn with_nodes<R>(
        &self,
        f: impl Fn(&Gather) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let client = self.client().await?;
        let mut gather = Gather::default();
        // A proof reads its nodes in one pass; the bound only stops a
        // reader that would keep asking for new ones.
        for _ in 0..4 {
            let r = f(&gather)?;
            let missing = std::mem::take(&mut *gather.missing.borrow_mut());
            if missing.is_empty() {
                return Ok(r);
            }
            self.read_nodes(&**client, &missing, &mut gather.known)
                .await?;
        }
        Err(corrupt(
            "merkle_nodes",
            "a proof kept asking for more nodes",
        ))
    }

    async fn integrated_now(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let size: i64 = client
            .query_one("SELECT size FROM integration", &[])
            .await?
            .get(0);
        uint(size, "integration")
    }

    /// Refuses a tree larger than what is integrated.
    async fn check_integrated(&self, size: u64) -> Result<(), StoreError> {
        let integrated = self.integrated_now().await?;
        if size > integrated {
            return Err(StoreError::NotIntegrated { size, integrated });
        }
        Ok(())
    }

    /// One integration batch, in one transaction under the advisory lock;
    /// returns the integrated size and whether more is sequenced.
    async fn integrate_batch(&self) -> Result<(u64, bool), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INTEGRATION_LOCK])
            .await?;
        let from: i64 = tx
            .query_one("SELECT size FROM integration", &[])
            .await?
            .get(0);
        let target: i64 = tx.query_one("SELECT size FROM log_head", &[]).await?.get(0);
        if from >= target {
            return Ok((uint(from, "integration")?, false));
        }
        let to = target.min(from.saturating_add(INTEGRATION_BATCH));
        let rows = tx
            .query(
                "SELECT idx, leaf FROM audit WHERE idx >= $1 AND idx < $2 ORDER BY idx",
                &[&from, &to],
            )
            .await?;
        let from_u = uint(from, "integration")?;
        // The left siblings outside the batch: the roots of the perfect
        // subtrees the first `from` leaves make.
        let mut frontier = BTreeSet::new();
        for level in 0..64u8 {
            let k = from_u >> level;
            if k & 1 == 1 {
                frontier.insert(merkle::NodeId::new(level, k - 1));
            }
        }
        let mut known = HashMap::new();
        self.read_nodes(&*tx, &frontier, &mut known).await?;
        let mut nodes = Gather {
            known,
            missing: Default::default(),
        };
        let mut computed = Vec::new();
        let mut next = from_u;
        for r in &rows {
            let idx = uint(r.get(0), "audit")?;
            if idx != next {
                break;
            }
            let leaf: &[u8] = r.get(1);
            for (node, hash) in merkle::completed_nodes(&nodes, next, merkle::leaf_hash(leaf))? {
                nodes.known.insert(node, hash);
                computed.push((node, hash));
            }
            next += 1;
        }
        if let Some(node) = nodes.missing.borrow().first() {
            return Err(corrupt(
                "merkle_nodes",
                format!("node {node} is missing; it cannot be integrated"),
            ));
        }
        let to_u = uint(to, "log_head")?;
        if next < to_u {
            return Err(corrupt(
                "audit",
                format!("entry {next} is missing; it cannot be integrated"),
            ));
        }
        let levels: Vec<i16> = computed.iter().map(|(n, _)| i16::from(n.level)).collect();
        let indexes = computed
            .iter()
            .map(|(n, _)| int(n.index))
            .collect::<Result<Vec<_>, _>>()?;
        let hashes: Vec<&[u8]> = computed.iter().map(|(_, h)| h.as_slice()).collect();
        tx.execute(
            "INSERT INTO merkle_nodes (level, idx, hash) \
             SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::bytea[]) \
             ON CONFLICT DO NOTHING",
            &[&levels, &indexes, &hashes],
        )
        .await?;
        tx.execute("UPDATE integration SET size = $1", &[&to])
            .await?;
        tx.commit().await?;
        Ok((to_u, to < target))
    }
}

#[async_trait::async_trait]
impl Sequencer for PgStore {
    async fn append(&self, event: v1::AuditEvent) -> Result<u64, StoreError> {
        Ok(self.append_all(vec![event]).await?.start)
    }

    async fn append_all(
        &self,
        events: Vec<v1::AuditEvent>,
    ) -> Result<std::ops::Range<u64>, StoreError> {
        if events.is_empty() {
            return Ok(0..0);
        }
        let leaves = events
            .iter()
            .map(crate::protocol::leaf::encode)
            .collect::<Result<Vec<_>, _>>()?;
        let n = leaves.len() as u64;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let first = sequence(&tx, &leaves).await?;
        notify(&tx, &[sequenced_note(first + n)]).await?;
        tx.commit().await?;
        self.shared.show_sequenced(first + n);
        Ok(first..first + n)
    }

    async fn audit_len(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let size: i64 = client
            .query_one("SELECT size FROM log_head", &[])
            .await?
            .get(0);
        uint(size, "log_head")
    }

    async fn audit_range(&self, from: u64, to: u64) -> Result<Vec<v1::AuditEvent>, StoreError> {
        self.leaves(from, to)
            .await?
            .iter()
            .map(|l| {
                v1::AuditEvent::decode(l.as_slice()).map_err(|e| corrupt("audit", e.to_string()))
            })
            .collect()
    }

    async fn leaves(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let (Ok(from_), to_) = (i64::try_from(from), i64::try_from(to).unwrap_or(i64::MAX)) else {
            return Ok(Vec::new());
        };
        if from_ >= to_ {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        // Up to the committed head in the same statement: a leaf is there
        // only once its write committed, and every index below the head
        // is.
        let rows = client
            .query(
                "SELECT idx, leaf FROM audit \
                 WHERE idx >= $1 AND idx < LEAST($2, (SELECT size FROM log_head)) ORDER BY idx",
                &[&from_, &to_],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (expected, r) in (from..).zip(rows) {
            if uint(r.get(0), "audit")? != expected {
                return Err(corrupt("audit", format!("entry {expected} is missing")));
            }
            out.push(r.get(1));
        }
        Ok(out)
    }

    async fn sequenced(&self) -> Result<watch::Receiver<u64>, StoreError> {
        Ok(self.shared.sequenced.subscribe())
    }
}

#[async_trait::async_trait]
impl Integrator for PgStore {
    async fn integrate(&self) -> Result<u64, StoreError> {
        loop {
            let (size, more) = self.integrate_batch().await?;
            if !more {
                return Ok(size);
            }
        }
    }

    async fn integrated_size(&self) -> Result<u64, StoreError> {
        self.integrated_now().await
    }

    async fn root(&self, size: u64) -> Result<merkle::Hash, StoreError> {
        self.check_integrated(size).await?;
        self.with_nodes(|g| merkle::tree_root(g, size)).await
    }

    async fn inclusion_proof(
        &self,
        index: u64,
        size: u64,
    ) -> Result<Vec<merkle::Hash>, StoreError> {
        self.check_integrated(size).await?;
        self.with_nodes(|g| {
            merkle::inclusion_proof(g, index, size)
                .map_err(|e| corrupt("merkle_nodes", e.to_string()))
        })
        .await
    }

    async fn consistency_proof(
        &self,
        size1: u64,
        size2: u64,
    ) -> Result<Vec<merkle::Hash>, StoreError> {
        self.check_integrated(size2).await?;
        self.with_nodes(|g| {
            merkle::consistency_proof(g, size1, size2)
                .map_err(|e| corrupt("merkle_nodes", e.to_string()))
        })
        .await
    }

    async fn leaf_hash(&self, index: u64) -> Result<Option<merkle::Hash>, StoreError> {
        let Ok(index) = i64::try_from(index) else {
            return Ok(None);
        };
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT hash FROM merkle_nodes \
                 WHERE level = 0 AND idx = $1 AND idx < (SELECT size FROM integration)",
                &[&index],
            )
            .await?;
        Ok(row.and_then(|r| r.get::<_, &[u8]>(0).try_into().ok()))
    }

    async fn leaf_hashes(&self, from: u64, to: u64) -> Result<Vec<merkle::Hash>, StoreError> {
        let (Ok(from_), to_) = (i64::try_from(from), i64::try_from(to).unwrap_or(i64::MAX)) else {
            return Ok(Vec::new());
        };
        let client = self.client().await?;
        let integrated: i64 = client
            .query_one("SELECT size FROM integration", &[])
            .await?
            .get(0);
        let to_ = to_.min(integrated);
        if from_ >= to_ {
            return Ok(Vec::new());
        }
        let rows = client
            .query(
                "SELECT idx, hash FROM merkle_nodes \
                 WHERE level = 0 AND idx >= $1 AND idx < $2 ORDER BY idx",
                &[&from_, &to_],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for (expected, r) in (from..).zip(rows) {
            if uint(r.get(0), "merkle_nodes")? != expected {
                return Err(corrupt(
                    "merkle_nodes",
                    format!("the leaf hash of entry {expected} is missing"),
                ));
            }
            out.push(r.get::<_, &[u8]>(1).try_into().map_err(|_| {
                corrupt(
                    "merkle_nodes",
                    format!("the leaf hash of entry {expected} is not 32 bytes"),
                )
            })?);
        }
        let want = uint(to_ - from_, "merkle_nodes")?;
        if (out.len() as u64) < want {
            return Err(corrupt(
                "merkle_nodes",
                format!(
                    "the leaf hash of entry {} is missing",
                    from + out.len() as u64
                ),
            ));
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Checkpoints for PgStore {
    async fn put_checkpoint(&self, size: u64, note: Vec<u8>) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO checkpoints (size, note) VALUES ($1, $2) \
                 ON CONFLICT (size) DO UPDATE SET note = $2",
                &[&int(size)?, &note],
            )
            .await?;
        Ok(())
    }

    async fn latest_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1",
                &[],
            )
            .await?;
        row.map(|r| Ok((uint(r.get(0), "checkpoints")?, r.get(1))))
            .transpose()
    }

    async fn checkpoint(&self, size: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let Ok(size) = i64::try_from(size) else {
            return Ok(None);
        };
        let client = self.client().await?;
        Ok(client
            .query_opt("SELECT note FROM checkpoints WHERE size = $1", &[&size])
            .await?
            .map(|r| r.get(0)))
    }

    async fn put_cosignature(
        &self,
        size: u64,
        witness: Country,
        line: String,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO cosignatures (size, witness, line) VALUES ($1, $2, $3) \
                 ON CONFLICT (size, witness) DO UPDATE SET line = $3",
                &[&int(size)?, &witness.as_str(), &line],
            )
            .await?;
        Ok(())
    }

    async fn cosignatures(&self, size: u64) -> Result<Vec<String>, StoreError> {
        let Ok(size) = i64::try_from(size) else {
            return Ok(Vec::new());
        };
        let client = self.client().await?;
        Ok(client
            .query(
                "SELECT line FROM cosignatures WHERE size = $1 ORDER BY witness",
                &[&size],
            )
            .await?
            .into_iter()
            .map(|r| r.get(0))
            .collect())
    }
}

/// The lease's row name: the one lease there is.
const LOG_LEASE: &str = "log";

/// The lease in one row, taken or renewed in one statement, its expiry by
/// the database's clock.
#[async_trait::async_trait]
impl crate::storage::broker::Lease for PgStore {
    async fn lead(&self, holder: &str, ttl: std::time::Duration) -> Result<bool, StoreError> {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let row = client
            .query_opt(
                "INSERT INTO lease (name, holder, expires) \
                 VALUES ($1, $2, now() + $3::bigint * interval '1 millisecond') \
                 ON CONFLICT (name) DO UPDATE \
                   SET holder = EXCLUDED.holder, expires = EXCLUDED.expires \
                   WHERE lease.holder = EXCLUDED.holder OR lease.expires < now() \
                 RETURNING holder",
                &[&LOG_LEASE, &holder, &ttl_ms],
            )
            .await?;
        Ok(row.is_some())
    }

    async fn resign(&self, holder: &str) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM lease WHERE name = $1 AND holder = $2",
                &[&LOG_LEASE, &holder],
            )
            .await?;
        Ok(())
    }
}

//! The broker's durable state behind one narrow trait: the audit log, the
//! per-node delivery queues, the payloads they point to, and the ids seen
//! within the replay window.
//!
//! [`SledStore`] is the embedded default. Each operation applies its changes
//! in one sled transaction, then waits for a group-commit flush: when a
//! method returns Ok, its changes are on disk. Readers see the log, the
//! queues and the checkpoints only as far as they are on disk, so nothing is
//! served that a crash could take back.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message as _;

use crate::protocol::ids::{AgencyId, Country, EnvelopeId};
use crate::protocol::merkle;
use crate::protocol::proto::v1;
use crate::storage::in_force::InForce;
use crate::storage::{Flush, GroupCommit, StorageError, be, read_be};

/// An envelope the broker accepted, with everything written for it.
pub struct Acceptance {
    pub id: EnvelopeId,
    pub created_at_ms: i64,
    pub sender_node: Country,
    pub envelope: v1::Envelope,
    pub recipient_nodes: Vec<Country>,
    pub event: v1::AuditEvent,
    /// The header's metadata, kept by envelope id for onward transfers,
    /// permission checks and proofs by id.
    pub summary: v1::EnvelopeSummary,
    /// Permissions this envelope grants: (original, grantee, third agency).
    pub grants: Vec<(EnvelopeId, AgencyId, AgencyId)>,
}

/// What the broker remembers of an accepted envelope.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub log_index: u64,
    pub summary: v1::EnvelopeSummary,
}

impl Accepted {
    /// The agency that provided the original record: the sender of a
    /// record that passes nothing on, else the provider the broker checked
    /// against the record passed on when it accepted this one. One read per
    /// hop, however long the chain of onward transfers.
    pub fn provider(&self) -> Option<AgencyId> {
        let s = &self.summary;
        if s.onward_of.is_empty() {
            s.sender_agency.parse().ok()
        } else {
            s.provider.parse().ok()
        }
    }
}

/// One queued item for a node.
#[derive(Debug, Clone)]
pub enum MailItem {
    Envelope(EnvelopeId, v1::Envelope),
    Receipt(v1::SignedReceipt),
}

/// What acknowledging a queued envelope records.
pub struct EnvelopeAck {
    pub id: EnvelopeId,
    /// The receipt to relay to the sending node.
    pub receipt: v1::SignedReceipt,
    /// Audit events for the receipt (and a violation, if any).
    pub events: Vec<v1::AuditEvent>,
    /// The receipt says delivered: the acknowledging node now holds the
    /// record (what it may later report purged).
    pub delivered: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("envelope id already seen")]
    Duplicate,
    #[error("no queued item {seq} for node {node}")]
    NoSuchItem { node: Country, seq: u64 },
    #[error("queued item {seq} for node {node} is an envelope; acknowledge it with a receipt")]
    ReceiptRequired { node: Country, seq: u64 },
    #[error("queued item {seq} for node {node} is {found}, not envelope {expected}")]
    WrongEnvelope {
        node: Country,
        seq: u64,
        found: String,
        expected: EnvelopeId,
    },
    /// An event too large for the audit log even with its free text cut.
    #[error(transparent)]
    Leaf(#[from] crate::protocol::leaf::LeafTooLarge),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Storage(e.into())
    }
}

/// The broker's storage. Implementations must make every change durable
/// before returning Ok, and show readers the log, the queues and the
/// checkpoints only as far as they are durable.
#[tonic::async_trait]
pub trait BrokerStore: Send + Sync + 'static {
    /// Atomically records an accepted envelope: its id as seen, its payload,
    /// one queue entry per recipient node and its audit event. Returns the
    /// event's log index. Fails with `Duplicate` if the id was seen before.
    async fn accept(&self, a: Acceptance) -> Result<u64, StoreError>;
    /// Appends one audit event (a refusal, a purge), and nothing else.
    async fn append(&self, event: v1::AuditEvent) -> Result<u64, StoreError>;
    /// Whether an envelope id was seen (accepted) before.
    fn seen(&self, id: &EnvelopeId) -> Result<bool, StoreError>;
    /// The metadata and log index of an accepted envelope.
    fn accepted(&self, id: &EnvelopeId) -> Result<Option<Accepted>, StoreError>;
    /// Whether `node` acknowledged `id` with a delivered receipt.
    fn delivered(&self, id: &EnvelopeId, node: Country) -> Result<bool, StoreError>;
    /// Whether the provider of `original` granted `grantee` permission to
    /// pass it on to `third`.
    fn granted(
        &self,
        original: &EnvelopeId,
        grantee: &AgencyId,
        third: &AgencyId,
    ) -> Result<bool, StoreError>;
    /// The queued item `seq` of `node`, if it is still queued.
    fn queued(&self, node: Country, seq: u64) -> Result<Option<MailItem>, StoreError>;
    /// Up to `limit` queued items for `node` with seq > `after`, only those
    /// whose write is on disk: an envelope is never delivered before the
    /// Submit that queued it is durable.
    fn pending(
        &self,
        node: Country,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, MailItem)>, StoreError>;
    /// Removes an envelope from `node`'s queue, records the receipt's audit
    /// events (and the delivery, if it was one), queues the receipt for the
    /// sender, and drops the payload once every recipient node has
    /// acknowledged. Returns the first event's index.
    async fn ack_envelope(
        &self,
        node: Country,
        seq: u64,
        ack: EnvelopeAck,
    ) -> Result<u64, StoreError>;
    /// Removes a relayed receipt from `node`'s queue.
    async fn ack_receipt(&self, node: Country, seq: u64) -> Result<(), StoreError>;
    /// Number of audit events on disk; entries still being flushed are not
    /// counted, so no checkpoint or reader goes beyond what a crash keeps.
    fn audit_len(&self) -> Result<u64, StoreError>;
    /// Audit events with index in `[from, to)`.
    fn audit_range(&self, from: u64, to: u64) -> Result<Vec<v1::AuditEvent>, StoreError>;
    /// Appends `event` if `digest` differs from the one last recorded for
    /// `subject` (the directory or the policy set in force); returns the
    /// event's index if it did.
    async fn record_if_changed(
        &self,
        subject: Subject,
        digest: Vec<u8>,
        event: v1::AuditEvent,
    ) -> Result<Option<u64>, StoreError>;
    /// The log entries (leaves, exactly as hashed) with index in `[from, to)`.
    fn leaves(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError>;
    /// The Merkle root of the first `size` entries, from stored nodes.
    fn root(&self, size: u64) -> Result<merkle::Hash, StoreError>;
    /// An inclusion proof of entry `index` in the tree of `size` entries.
    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<merkle::Hash>, StoreError>;
    /// A consistency proof between trees of `size1` and `size2` entries.
    fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<merkle::Hash>, StoreError>;
    /// The stored leaf hash of entry `index` (written when it was appended).
    fn leaf_hash(&self, index: u64) -> Result<Option<merkle::Hash>, StoreError>;
    /// Stores a signed checkpoint (C2SP note bytes) for its tree size.
    async fn put_checkpoint(&self, size: u64, note: Vec<u8>) -> Result<(), StoreError>;
    /// The latest checkpoint on disk: (size, signed note bytes). A
    /// checkpoint whose flush has not returned is never served.
    fn latest_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError>;
    /// The checkpoint on disk of exactly `size` entries.
    fn checkpoint(&self, size: u64) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores a witness's cosignature line for the checkpoint of `size`.
    async fn put_cosignature(
        &self,
        size: u64,
        witness: Country,
        line: String,
    ) -> Result<(), StoreError>;
    /// The cosignature lines held for the checkpoint of `size`.
    fn cosignatures(&self, size: u64) -> Result<Vec<String>, StoreError>;
    /// Forgets seen ids created before `before_ms` (outside the replay window).
    async fn prune_seen(&self, before_ms: i64) -> Result<usize, StoreError>;
    /// The directory and policy bundle versions recorded as in force.
    fn in_force(&self) -> Result<InForce, StoreError>;
    /// Records the directory and policy bundle versions in force.
    async fn put_in_force(&self, in_force: &InForce) -> Result<(), StoreError>;
    /// Resolves, with the reason, once a flush has failed and the store can
    /// acknowledge nothing more; the broker then stops. Never otherwise.
    async fn failed(&self) -> String {
        std::future::pending().await
    }
}

const META_AUDIT_NEXT: &[u8] = b"audit_next";
const META_MAIL_NEXT: &[u8] = b"mail_next";

/// What a change event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Directory,
    Policy,
}

impl Subject {
    fn meta_key(self) -> &'static [u8] {
        match self {
            Subject::Directory => b"directory_sha256",
            Subject::Policy => b"policy_set_sha256",
        }
    }
}
const TAG_ENVELOPE: u8 = 0;
const TAG_RECEIPT: u8 = 1;

/// The embedded sled store.
pub struct SledStore {
    db: sled::Db,
    audit: sled::Tree,
    meta: sled::Tree,
    seen: sled::Tree,
    payload: sled::Tree,
    mail: sled::Tree,
    accepted: sled::Tree,
    grants: sled::Tree,
    delivered: sled::Tree,
    nodes: sled::Tree,
    checkpoints: sled::Tree,
    cosignatures: sled::Tree,
    commit: GroupCommit,
    // Serialises transactions so audit indices and queue sequence numbers
    // are handed out in commit order; the flush happens outside it.
    writer: Mutex<()>,
    durable: Durable,
}

/// How far the log, the queues and the checkpoints are known to be on disk:
/// audit entries and queue items below these counters, and the checkpoint
/// of this size (0: none).
struct Durable {
    audit: AtomicU64,
    mail: AtomicU64,
    checkpoint: AtomicU64,
}

impl SledStore {
    pub fn open(dir: &std::path::Path) -> Result<SledStore, StoreError> {
        SledStore::open_with(dir, |db| std::sync::Arc::new(db))
    }

    /// Opens the store with `flush` in place of sled's own flush (it is
    /// given the database to wrap), for tests that make flushes fail or wait.
    pub fn open_with(
        dir: &std::path::Path,
        flush: impl FnOnce(sled::Db) -> std::sync::Arc<dyn Flush>,
    ) -> Result<SledStore, StoreError> {
        let db = crate::storage::open_db(dir)?;
        let meta = db.open_tree("meta")?;
        let checkpoints = db.open_tree("checkpoints")?;
        // Everything found at open is on disk.
        let counter = |k: &[u8]| -> Result<u64, StoreError> {
            Ok(meta.get(k)?.and_then(|v| read_be(&v)).unwrap_or(0))
        };
        let durable = Durable {
            audit: AtomicU64::new(counter(META_AUDIT_NEXT)?),
            mail: AtomicU64::new(counter(META_MAIL_NEXT)?),
            checkpoint: AtomicU64::new(match checkpoints.last()? {
                Some((k, _)) => read_be(&k).ok_or_else(|| corrupt("checkpoints", "key"))?,
                None => 0,
            }),
        };
        Ok(SledStore {
            audit: db.open_tree("audit")?,
            meta,
            seen: db.open_tree("seen")?,
            payload: db.open_tree("payload")?,
            mail: db.open_tree("mail")?,
            accepted: db.open_tree("accepted")?,
            grants: db.open_tree("grants")?,
            delivered: db.open_tree("delivered")?,
            nodes: db.open_tree("merkle_nodes")?,
            checkpoints,
            cosignatures: db.open_tree("cosignatures")?,
            commit: GroupCommit::start(flush(db.clone()), dir.display().to_string()),
            db,
            writer: Mutex::new(()),
            durable,
        })
    }

    /// Waits until everything applied so far is on disk, then lets readers
    /// see it.
    async fn sync(&self) -> Result<(), StoreError> {
        // Under the writer lock, the counters are those of whole
        // transactions, every one of them applied before the flush starts.
        let (audit, mail) = {
            let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
            let counter = |k: &[u8]| -> Result<u64, StoreError> {
                Ok(self.meta.get(k)?.and_then(|v| read_be(&v)).unwrap_or(0))
            };
            (counter(META_AUDIT_NEXT)?, counter(META_MAIL_NEXT)?)
        };
        self.commit.commit().await?;
        self.durable.audit.fetch_max(audit, Ordering::SeqCst);
        self.durable.mail.fetch_max(mail, Ordering::SeqCst);
        Ok(())
    }

    /// The underlying database, for tests that corrupt it on purpose.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// Flushes completed so far (see [`GroupCommit::flushes`]).
    pub fn flushes(&self) -> u64 {
        self.commit.flushes()
    }

    fn write<R>(
        &self,
        f: impl Fn(&Txn<'_>) -> Result<R, sled::transaction::ConflictableTransactionError<StoreError>>,
    ) -> Result<R, StoreError> {
        use sled::Transactional as _;
        let _guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let trees = (
            &self.audit,
            &self.meta,
            &self.seen,
            &self.payload,
            &self.mail,
            &self.accepted,
            &self.grants,
            &self.delivered,
            &self.nodes,
        );
        trees
            .transaction(
                |(audit, meta, seen, payload, mail, accepted, grants, delivered, nodes)| {
                    f(&Txn {
                        audit,
                        meta,
                        seen,
                        payload,
                        mail,
                        accepted,
                        grants,
                        delivered,
                        nodes,
                    })
                },
            )
            .map_err(|e| match e {
                sled::transaction::TransactionError::Abort(e) => e,
                sled::transaction::TransactionError::Storage(e) => self.stop_on_io(e),
            })
    }

    /// A sled I/O error stops the store (see [`GroupCommit::stop_on_io`]).
    fn stop_on_io(&self, e: sled::Error) -> StoreError {
        StoreError::Storage(self.commit.stop_on_io(e.into()))
    }
}

type TxTree = sled::transaction::TransactionalTree;
type TxResult<T> = Result<T, sled::transaction::ConflictableTransactionError<StoreError>>;

struct Txn<'a> {
    audit: &'a TxTree,
    meta: &'a TxTree,
    seen: &'a TxTree,
    payload: &'a TxTree,
    mail: &'a TxTree,
    accepted: &'a TxTree,
    grants: &'a TxTree,
    delivered: &'a TxTree,
    nodes: &'a TxTree,
}

impl Txn<'_> {
    fn next(&self, key: &[u8]) -> TxResult<u64> {
        let n = self.meta.get(key)?.and_then(|v| read_be(&v)).unwrap_or(0);
        self.meta.insert(key, &be(n + 1))?;
        Ok(n)
    }
    /// Appends an event as the next leaf of the log, with the Merkle nodes
    /// it completes, so the tree and the log can never disagree. The leaf
    /// is capped ([`crate::protocol::leaf::encode`]): nothing oversized is stored.
    fn append(&self, event: &v1::AuditEvent) -> TxResult<u64> {
        let leaf = match crate::protocol::leaf::encode(event) {
            Ok(leaf) => leaf,
            Err(e) => return abort(e.into()),
        };
        let i = self.next(META_AUDIT_NEXT)?;
        let completed = merkle::completed_nodes(&TxNodes(self.nodes), i, merkle::leaf_hash(&leaf))
            .map_err(|e| match e {
                TxNodeError::Tx(e) => e.into(),
                TxNodeError::Missing(n) => {
                    sled::transaction::ConflictableTransactionError::Abort(corrupt(
                        "merkle_nodes",
                        format!("missing node {n:?} while appending leaf {i}"),
                    ))
                }
            })?;
        for (node, hash) in completed {
            self.nodes.insert(node_key(node), hash.as_slice())?;
        }
        self.audit.insert(&be(i), leaf)?;
        Ok(i)
    }
    fn enqueue(&self, node: Country, item: Vec<u8>) -> TxResult<u64> {
        let seq = self.next(META_MAIL_NEXT)?;
        self.mail.insert(mail_key(node, seq), item)?;
        Ok(seq)
    }
}

fn mail_key(node: Country, seq: u64) -> Vec<u8> {
    let mut k = node.as_str().as_bytes().to_vec();
    k.extend_from_slice(&be(seq));
    k
}

fn delivered_key(id: &EnvelopeId, node: Country) -> Vec<u8> {
    let mut k = id.as_bytes().to_vec();
    k.extend_from_slice(node.as_str().as_bytes());
    k
}

fn node_key(n: merkle::NodeId) -> Vec<u8> {
    let mut k = vec![n.level];
    k.extend_from_slice(&be(n.index));
    k
}

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
pub struct StoredNodes<'a>(&'a sled::Tree);

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

fn grant_key(original: &EnvelopeId, grantee: &AgencyId, third: &AgencyId) -> Vec<u8> {
    let mut k = original.as_bytes().to_vec();
    k.extend_from_slice(grantee.to_string().as_bytes());
    k.push(0);
    k.extend_from_slice(third.to_string().as_bytes());
    k
}

fn prove_error(e: &merkle::ProveError<StoreError>) -> StoreError {
    corrupt("merkle_nodes", e.to_string())
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

// payload value: remaining recipient-node count (u64 BE) || sender node (2
// bytes) || Envelope protobuf.
fn encode_payload(remaining: u64, sender: Country, env: &[u8]) -> Vec<u8> {
    let mut v = be(remaining).to_vec();
    v.extend_from_slice(sender.as_str().as_bytes());
    v.extend_from_slice(env);
    v
}

fn decode_payload(v: &[u8]) -> Result<(u64, Country, &[u8]), StoreError> {
    if v.len() < 10 {
        return Err(corrupt("payload", "short value"));
    }
    let remaining = read_be(&v[..8]).ok_or_else(|| corrupt("payload", "count"))?;
    let sender = std::str::from_utf8(&v[8..10])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt("payload", "sender"))?;
    Ok((remaining, sender, &v[10..]))
}

#[tonic::async_trait]
impl BrokerStore for SledStore {
    async fn accept(&self, a: Acceptance) -> Result<u64, StoreError> {
        let env_bytes = a.envelope.encode_to_vec();
        let payload = encode_payload(a.recipient_nodes.len() as u64, a.sender_node, &env_bytes);
        let mut item = vec![TAG_ENVELOPE];
        item.extend_from_slice(a.id.as_bytes());
        let summary = a.summary.encode_to_vec();
        let index = self.write(|t| {
            if t.seen.get(a.id.as_bytes())?.is_some() {
                return abort(StoreError::Duplicate);
            }
            t.seen
                .insert(a.id.as_bytes(), &a.created_at_ms.to_be_bytes())?;
            t.payload.insert(a.id.as_bytes(), payload.as_slice())?;
            for node in &a.recipient_nodes {
                t.enqueue(*node, item.clone())?;
            }
            for (original, grantee, third) in &a.grants {
                t.grants.insert(
                    grant_key(original, grantee, third),
                    a.id.as_bytes().as_slice(),
                )?;
            }
            let index = t.append(&a.event)?;
            let mut kept = be(index).to_vec();
            kept.extend_from_slice(&summary);
            t.accepted.insert(a.id.as_bytes().as_slice(), kept)?;
            Ok(index)
        })?;
        self.sync().await?;
        Ok(index)
    }

    async fn append(&self, event: v1::AuditEvent) -> Result<u64, StoreError> {
        let index = self.write(|t| t.append(&event))?;
        self.sync().await?;
        Ok(index)
    }

    fn seen(&self, id: &EnvelopeId) -> Result<bool, StoreError> {
        Ok(self.seen.contains_key(id.as_bytes())?)
    }

    fn accepted(&self, id: &EnvelopeId) -> Result<Option<Accepted>, StoreError> {
        let Some(v) = self.accepted.get(id.as_bytes())? else {
            return Ok(None);
        };
        if v.len() < 8 {
            return Err(corrupt("accepted", "short value"));
        }
        let log_index = read_be(&v[..8]).ok_or_else(|| corrupt("accepted", "index"))?;
        let summary =
            v1::EnvelopeSummary::decode(&v[8..]).map_err(|e| corrupt("accepted", e.to_string()))?;
        Ok(Some(Accepted { log_index, summary }))
    }

    fn delivered(&self, id: &EnvelopeId, node: Country) -> Result<bool, StoreError> {
        Ok(self.delivered.contains_key(delivered_key(id, node))?)
    }

    fn granted(
        &self,
        original: &EnvelopeId,
        grantee: &AgencyId,
        third: &AgencyId,
    ) -> Result<bool, StoreError> {
        Ok(self
            .grants
            .contains_key(grant_key(original, grantee, third))?)
    }

    fn queued(&self, node: Country, seq: u64) -> Result<Option<MailItem>, StoreError> {
        Ok(self
            .pending(node, seq.checked_sub(1), 1)?
            .into_iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, i)| i))
    }

    fn pending(
        &self,
        node: Country,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, MailItem)>, StoreError> {
        let start = mail_key(node, after.map_or(0, |a| a.saturating_add(1)));
        let durable = self.durable.mail.load(Ordering::SeqCst);
        let Some(last) = durable.checked_sub(1) else {
            return Ok(Vec::new());
        };
        let end = mail_key(node, last);
        let mut out = Vec::new();
        for kv in self.mail.range(start..=end) {
            let (k, v) = kv?;
            let seq = read_be(&k[2..]).ok_or_else(|| corrupt("mail", "key"))?;
            let item = match v.split_first() {
                Some((&TAG_ENVELOPE, id)) => {
                    let id =
                        EnvelopeId::from_bytes(id).map_err(|e| corrupt("mail", e.to_string()))?;
                    let Some(p) = self.payload.get(id.as_bytes())? else {
                        return Err(corrupt("payload", format!("missing payload for {id}")));
                    };
                    let (_, _, env) = decode_payload(&p)?;
                    let env =
                        v1::Envelope::decode(env).map_err(|e| corrupt("payload", e.to_string()))?;
                    MailItem::Envelope(id, env)
                }
                Some((&TAG_RECEIPT, r)) => MailItem::Receipt(
                    v1::SignedReceipt::decode(r).map_err(|e| corrupt("mail", e.to_string()))?,
                ),
                _ => return Err(corrupt("mail", "unknown item tag")),
            };
            out.push((seq, item));
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    async fn ack_envelope(
        &self,
        node: Country,
        seq: u64,
        ack: EnvelopeAck,
    ) -> Result<u64, StoreError> {
        let key = mail_key(node, seq);
        let mut relay = vec![TAG_RECEIPT];
        relay.extend_from_slice(&ack.receipt.encode_to_vec());
        let index = self.write(|t| {
            let item = match t.mail.get(&key)? {
                Some(v) => v,
                None => return abort(StoreError::NoSuchItem { node, seq }),
            };
            match item.split_first() {
                Some((&TAG_ENVELOPE, id)) if id == ack.id.as_bytes() => {}
                Some((&TAG_ENVELOPE, id)) => {
                    let found = EnvelopeId::from_bytes(id)
                        .map(|i| i.to_string())
                        .unwrap_or_default();
                    return abort(StoreError::WrongEnvelope {
                        node,
                        seq,
                        found,
                        expected: ack.id,
                    });
                }
                _ => return abort(StoreError::NoSuchItem { node, seq }),
            }
            t.mail.remove(key.as_slice())?;
            let Some(p) = t.payload.get(ack.id.as_bytes())? else {
                return abort(corrupt(
                    "payload",
                    format!("missing payload for {}", ack.id),
                ));
            };
            let (remaining, sender, env) = decode_payload(&p).or_else(abort)?;
            if remaining <= 1 {
                t.payload.remove(ack.id.as_bytes())?;
            } else {
                t.payload.insert(
                    ack.id.as_bytes(),
                    encode_payload(remaining - 1, sender, env),
                )?;
            }
            t.enqueue(sender, relay.clone())?;
            if ack.delivered {
                t.delivered.insert(delivered_key(&ack.id, node), &[])?;
            }
            let mut first = None;
            for e in &ack.events {
                let i = t.append(e)?;
                first.get_or_insert(i);
            }
            Ok(first.unwrap_or(0))
        })?;
        self.sync().await?;
        Ok(index)
    }

    async fn ack_receipt(&self, node: Country, seq: u64) -> Result<(), StoreError> {
        let key = mail_key(node, seq);
        self.write(|t| match t.mail.get(&key)? {
            Some(v) if v.first() == Some(&TAG_RECEIPT) => {
                t.mail.remove(key.as_slice())?;
                Ok(())
            }
            Some(_) => abort(StoreError::ReceiptRequired { node, seq }),
            None => abort(StoreError::NoSuchItem { node, seq }),
        })?;
        self.sync().await?;
        Ok(())
    }

    fn audit_len(&self) -> Result<u64, StoreError> {
        Ok(self.durable.audit.load(Ordering::SeqCst))
    }

    fn audit_range(&self, from: u64, to: u64) -> Result<Vec<v1::AuditEvent>, StoreError> {
        let to = to.min(self.durable.audit.load(Ordering::SeqCst));
        let mut out = Vec::new();
        for kv in self.audit.range(be(from)..be(to)) {
            let (_, v) = kv?;
            out.push(
                v1::AuditEvent::decode(v.as_ref()).map_err(|e| corrupt("audit", e.to_string()))?,
            );
        }
        Ok(out)
    }

    async fn record_if_changed(
        &self,
        subject: Subject,
        digest: Vec<u8>,
        event: v1::AuditEvent,
    ) -> Result<Option<u64>, StoreError> {
        let key = subject.meta_key();
        let index = self.write(|t| {
            if t.meta.get(key)?.as_deref() == Some(digest.as_slice()) {
                return Ok(None);
            }
            t.meta.insert(key, digest.as_slice())?;
            t.append(&event).map(Some)
        })?;
        self.sync().await?;
        Ok(index)
    }

    fn leaves(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let to = to.min(self.durable.audit.load(Ordering::SeqCst));
        let mut out = Vec::new();
        for (expected, kv) in (from..).zip(self.audit.range(be(from)..be(to))) {
            let (k, v) = kv?;
            // A gap means an entry was removed behind the store's back.
            if read_be(&k) != Some(expected) {
                return Err(corrupt("audit", format!("entry {expected} is missing")));
            }
            out.push(v.to_vec());
        }
        Ok(out)
    }

    fn root(&self, size: u64) -> Result<merkle::Hash, StoreError> {
        merkle::tree_root(&StoredNodes(&self.nodes), size)
    }

    fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<merkle::Hash>, StoreError> {
        merkle::inclusion_proof(&StoredNodes(&self.nodes), index, size).map_err(|e| prove_error(&e))
    }

    fn consistency_proof(&self, size1: u64, size2: u64) -> Result<Vec<merkle::Hash>, StoreError> {
        merkle::consistency_proof(&StoredNodes(&self.nodes), size1, size2)
            .map_err(|e| prove_error(&e))
    }

    fn leaf_hash(&self, index: u64) -> Result<Option<merkle::Hash>, StoreError> {
        Ok(self
            .nodes
            .get(node_key(merkle::NodeId::new(0, index)))?
            .and_then(|v| v.as_ref().try_into().ok()))
    }

    async fn put_checkpoint(&self, size: u64, note: Vec<u8>) -> Result<(), StoreError> {
        self.checkpoints
            .insert(be(size), note)
            .map_err(|e| self.stop_on_io(e))?;
        self.sync().await?;
        // Served from now on, never before it is on disk: a checkpoint a
        // crash could take back would show witnesses a fork.
        self.durable.checkpoint.fetch_max(size, Ordering::SeqCst);
        Ok(())
    }

    fn latest_checkpoint(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        let size = self.durable.checkpoint.load(Ordering::SeqCst);
        if size == 0 {
            return Ok(None);
        }
        match self.checkpoints.get(be(size))? {
            Some(v) => Ok(Some((size, v.to_vec()))),
            None => Err(corrupt(
                "checkpoints",
                format!("the checkpoint of size {size} is missing"),
            )),
        }
    }

    fn checkpoint(&self, size: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if size > self.durable.checkpoint.load(Ordering::SeqCst) {
            return Ok(None);
        }
        Ok(self.checkpoints.get(be(size))?.map(|v| v.to_vec()))
    }

    async fn put_cosignature(
        &self,
        size: u64,
        witness: Country,
        line: String,
    ) -> Result<(), StoreError> {
        let mut k = be(size).to_vec();
        k.extend_from_slice(witness.as_str().as_bytes());
        self.cosignatures
            .insert(k, line.into_bytes())
            .map_err(|e| self.stop_on_io(e))?;
        self.sync().await?;
        Ok(())
    }

    fn cosignatures(&self, size: u64) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for kv in self.cosignatures.scan_prefix(be(size)) {
            let (_, v) = kv?;
            out.push(
                String::from_utf8(v.to_vec()).map_err(|_| corrupt("cosignatures", "not UTF-8"))?,
            );
        }
        Ok(out)
    }

    async fn prune_seen(&self, before_ms: i64) -> Result<usize, StoreError> {
        let mut n = 0;
        for kv in self.seen.iter() {
            let (k, v) = kv?;
            let created = v
                .as_ref()
                .try_into()
                .map(i64::from_be_bytes)
                .unwrap_or(i64::MIN);
            if created < before_ms {
                self.seen.remove(k).map_err(|e| self.stop_on_io(e))?;
                n += 1;
            }
        }
        self.sync().await?;
        Ok(n)
    }

    fn in_force(&self) -> Result<InForce, StoreError> {
        let mut entries = Vec::new();
        for kv in self.meta.scan_prefix(crate::storage::in_force::PREFIX) {
            let (k, v) = kv?;
            entries.push((k.to_vec(), v.to_vec()));
        }
        InForce::from_entries(entries).map_err(|e| corrupt("meta", e))
    }

    async fn put_in_force(&self, in_force: &InForce) -> Result<(), StoreError> {
        let entries = in_force.entries();
        self.write(|t| {
            for (k, v) in &entries {
                if crate::storage::in_force::raises(t.meta.get(k)?.as_deref(), v) {
                    t.meta.insert(k.as_slice(), v.as_slice())?;
                }
            }
            Ok(())
        })?;
        self.sync().await
    }

    async fn failed(&self) -> String {
        self.commit.failed().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::GatedFlush;

    fn refusal(n: u64) -> v1::AuditEvent {
        v1::AuditEvent {
            at_ms: n as i64,
            event: Some(v1::audit_event::Event::SubmissionRefused(
                v1::SubmissionRefused {
                    reason: format!("r{n}"),
                    ..Default::default()
                },
            )),
        }
    }

    fn dir_event(version: u64) -> v1::AuditEvent {
        v1::AuditEvent {
            at_ms: 0,
            event: Some(v1::audit_event::Event::DirectoryChanged(
                v1::DirectoryChanged {
                    version,
                    directory_sha256: vec![version as u8; 32],
                },
            )),
        }
    }

    fn gated(
        dir: &std::path::Path,
    ) -> (
        std::sync::Arc<SledStore>,
        std::sync::Arc<GatedFlush>,
        tokio::sync::mpsc::UnboundedReceiver<()>,
    ) {
        let mut flush = None;
        let store = SledStore::open_with(dir, |db| {
            let (f, rx) = GatedFlush::over(db);
            flush = Some((f.clone(), rx));
            f
        })
        .unwrap();
        let (flush, rx) = flush.unwrap();
        (std::sync::Arc::new(store), flush, rx)
    }

    fn acceptance(to: &str) -> Acceptance {
        Acceptance {
            id: EnvelopeId::at(0),
            created_at_ms: 0,
            sender_node: "HR".parse().unwrap(),
            envelope: v1::Envelope {
                header: b"header".to_vec(),
                ..Default::default()
            },
            recipient_nodes: vec![to.parse().unwrap()],
            event: refusal(100),
            summary: v1::EnvelopeSummary::default(),
            grants: vec![],
        }
    }

    #[tokio::test]
    async fn an_entry_is_in_the_log_only_once_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (store, flush, mut started) = gated(dir.path());
        let s = store.clone();
        let append = tokio::spawn(async move { s.append(refusal(0)).await });
        started.recv().await.unwrap();
        // Applied, not yet flushed: no reader and no checkpoint sees it.
        assert_eq!(store.audit_len().unwrap(), 0);
        assert!(store.leaves(0, 10).unwrap().is_empty());
        assert!(store.audit_range(0, 10).unwrap().is_empty());
        flush.gate.add_permits(1);
        assert_eq!(append.await.unwrap().unwrap(), 0);
        assert_eq!(store.audit_len().unwrap(), 1);
        assert_eq!(store.leaves(0, 10).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_queued_envelope_is_delivered_only_once_its_submit_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (store, flush, mut started) = gated(dir.path());
        let ba: Country = "BA".parse().unwrap();
        let s = store.clone();
        let accept = tokio::spawn(async move { s.accept(acceptance("BA")).await });
        started.recv().await.unwrap();
        assert!(store.pending(ba, None, 10).unwrap().is_empty());
        assert!(store.queued(ba, 0).unwrap().is_none());
        flush.gate.add_permits(1);
        assert_eq!(accept.await.unwrap().unwrap(), 0);
        assert_eq!(store.pending(ba, None, 10).unwrap().len(), 1);
        assert!(store.queued(ba, 0).unwrap().is_some());
    }

    #[tokio::test]
    async fn a_checkpoint_is_served_only_once_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (store, flush, mut started) = gated(dir.path());
        flush.gate.add_permits(1);
        store.append(refusal(0)).await.unwrap();
        started.recv().await.unwrap();
        let s = store.clone();
        let put = tokio::spawn(async move { s.put_checkpoint(1, b"note of 1".to_vec()).await });
        started.recv().await.unwrap();
        assert_eq!(store.latest_checkpoint().unwrap(), None);
        assert_eq!(store.checkpoint(1).unwrap(), None);
        flush.gate.add_permits(1);
        put.await.unwrap().unwrap();
        assert_eq!(
            store.latest_checkpoint().unwrap(),
            Some((1, b"note of 1".to_vec()))
        );
        assert_eq!(store.checkpoint(1).unwrap(), Some(b"note of 1".to_vec()));
    }

    #[tokio::test]
    async fn a_failed_flush_is_fatal_and_what_it_covered_is_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let (store, flush, mut started) = gated(dir.path());
        let ba: Country = "BA".parse().unwrap();
        flush.gate.add_permits(1);
        store.append(refusal(0)).await.unwrap();
        started.recv().await.unwrap();

        flush.fail.store(true, Ordering::SeqCst);
        flush.gate.add_permits(1);
        let err = store.accept(acceptance("BA")).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("failed: No space left on device (os error 28); stopping"),
            "{err}"
        );
        let reason = store.failed().await;
        assert!(reason.starts_with(&format!("flush of {} failed", dir.path().display())));
        assert_eq!(
            store.audit_len().unwrap(),
            1,
            "the unflushed entry is not served"
        );
        assert!(store.pending(ba, None, 10).unwrap().is_empty());

        // Nothing is acknowledged any more, even if the disk came back.
        flush.fail.store(false, Ordering::SeqCst);
        flush.gate.add_permits(10);
        assert!(store.append(refusal(1)).await.is_err());
        assert!(store.put_checkpoint(1, b"note".to_vec()).await.is_err());
        assert_eq!(store.latest_checkpoint().unwrap(), None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn concurrent_commits_share_one_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SledStore::open(dir.path()).unwrap());
        let tasks: Vec<_> = (0..64)
            .map(|n| {
                let s = store.clone();
                tokio::spawn(async move { s.append(refusal(n)).await.unwrap() })
            })
            .collect();
        let mut indices = Vec::new();
        for t in tasks {
            indices.push(t.await.unwrap());
        }
        indices.sort_unstable();
        assert_eq!(
            indices,
            (0..64).collect::<Vec<u64>>(),
            "dense, unique indices"
        );
        assert_eq!(
            store.flushes(),
            1,
            "64 commits waiting together share one flush"
        );
        assert_eq!(store.audit_len().unwrap(), 64);
    }

    #[tokio::test]
    async fn acknowledged_events_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            for n in 0..3 {
                store.append(refusal(n)).await.unwrap();
            }
            assert_eq!(
                store
                    .record_if_changed(Subject::Directory, vec![1; 32], dir_event(1))
                    .await
                    .unwrap(),
                Some(3)
            );
            assert_eq!(
                store
                    .record_if_changed(Subject::Directory, vec![1; 32], dir_event(1))
                    .await
                    .unwrap(),
                None,
                "same directory: no event"
            );
        }
        // Let the flush task notice that its database is gone.
        tokio::task::yield_now().await;
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.audit_len().unwrap(), 4);
        let events = store.audit_range(0, 4).unwrap();
        assert_eq!(events[2], refusal(2));
        assert!(matches!(
            events[3].event,
            Some(v1::audit_event::Event::DirectoryChanged(_))
        ));
        assert_eq!(
            store
                .record_if_changed(Subject::Directory, vec![2; 32], dir_event(2))
                .await
                .unwrap(),
            Some(4)
        );
    }

    #[tokio::test]
    async fn no_leaf_is_stored_over_the_cap() {
        use crate::protocol::leaf::MAX_LEAF_BYTES;
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut long = refusal(0);
        if let Some(v1::audit_event::Event::SubmissionRefused(r)) = &mut long.event {
            r.reason = "x".repeat(20 << 20);
        }
        let i = store.append(long).await.unwrap();
        let leaf = store.leaves(i, i + 1).unwrap().remove(0);
        assert!(
            leaf.len() <= MAX_LEAF_BYTES,
            "free text cut: {}",
            leaf.len()
        );
        assert_eq!(
            store.leaf_hash(i).unwrap(),
            Some(merkle::leaf_hash(&leaf)),
            "the tree holds the leaf as stored"
        );
        let uncuttable = v1::AuditEvent {
            at_ms: 1,
            event: Some(v1::audit_event::Event::RecordsPurged(v1::RecordsPurged {
                node: "HR".into(),
                envelope_ids: vec![vec![1; 16]; MAX_LEAF_BYTES / 16],
            })),
        };
        assert!(matches!(
            store.append(uncuttable).await,
            Err(StoreError::Leaf(_))
        ));
        assert_eq!(store.audit_len().unwrap(), 1, "nothing appended");
    }
}

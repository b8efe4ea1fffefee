//! The node's store on sled: the [`crate::storage::node`] traits over one
//! sled database with a tree per kind of record.
//!
//! Every mutating method applies one sled transaction, then returns after a
//! group-commit flush: Ok means on disk. sled calls run on the calling
//! worker (they work in memory); only the flush waits on the disk, apart.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use prost::Message as _;
use sled::Transactional as _;
use sled::transaction::ConflictableTransactionError;
use tokio::sync::watch;

use crate::protocol::ids::{AgencyId, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::in_force::InForce;
use crate::storage::in_force::VersionsInForce;
use crate::storage::node::idempotency::{EarlierCall, KeyedCall};
use crate::storage::node::{Durability, Inbox, Lane, Outbox, StatusUpdate, WitnessState};
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
    /// Idempotency keys: [`CALL_PREFIX`] ‖ agency ‖ 0 ‖ key → the earlier
    /// call, and [`TIME_PREFIX`] ‖ time ‖ agency ‖ 0 ‖ key → nothing, by
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

fn inbox_key(agency: &AgencyId, id: &EnvelopeId) -> Vec<u8> {
    let mut k = agency.to_string().into_bytes();
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The first byte of an outbox key, per lane. Keys are the lane's byte and
/// the envelope id, so the tree iterates lane by lane, immediate first, and
/// oldest first within a lane (ids are time-ordered). The bytes sit above
/// the first byte of any id of this era, so the keys of an outbox written
/// before there were lanes (the bare id) sort below them all and are found
/// at open with one short range read.
const LANE_KEY: [u8; 3] = [0xfd, 0xfe, 0xff];

fn outbox_key(lane: Lane, id: &EnvelopeId) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = LANE_KEY[lane.index()];
    k[1..].copy_from_slice(id.as_bytes());
    k
}

/// The lane and id of an outbox key.
fn outbox_entry(k: &[u8]) -> Result<(Lane, EnvelopeId), StorageError> {
    let lane = k
        .first()
        .and_then(|b| LANE_KEY.iter().position(|l| l == b))
        .map(|i| Lane::ALL[i])
        .ok_or_else(|| corrupt("outbox", "key in no lane"))?;
    let id = EnvelopeId::from_bytes(&k[1..]).map_err(|e| corrupt("outbox", e))?;
    Ok((lane, id))
}

/// Moves the entries of an outbox written before there were lanes (keyed
/// by the bare id) into the lane of their priority label.
fn outbox_into_lanes(outbox: &sled::Tree) -> Result<(), StorageError> {
    let mut old = Vec::new();
    for kv in outbox.range(..LANE_KEY[0..1].to_vec()) {
        let (k, v) = kv?;
        let id = EnvelopeId::from_bytes(&k).map_err(|e| corrupt("outbox", e))?;
        let env = v1::Envelope::decode(v.as_ref()).map_err(|e| corrupt("outbox", e))?;
        let lane =
            Lane::of(crate::protocol::envelope::unverified_summary(&env).map_or(0, |s| s.priority));
        old.push((k, outbox_key(lane, &id), v));
    }
    if old.is_empty() {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    for (k, new, v) in old {
        batch.remove(k);
        batch.insert(new.as_slice(), v);
    }
    outbox.apply_batch(batch)?;
    outbox.flush()?;
    Ok(())
}

/// The first byte of an idempotency key's entry.
const CALL_PREFIX: &[u8] = b"k";
/// The first byte of an idempotency key's entry in time order.
const TIME_PREFIX: &[u8] = b"t";
/// Keys forgotten per transaction.
const FORGET_BATCH: usize = 1000;

/// The entry of `agency`'s key: agency ids hold no NUL byte, so an agency's
/// keys never run into another's.
fn call_key(agency: &AgencyId, key: &str) -> Vec<u8> {
    let mut k = CALL_PREFIX.to_vec();
    k.extend_from_slice(agency.to_string().as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// The time-ordered entry of a key first used at `at_ms`; `call` is the
/// call key without its prefix. Times before 1970 sort as 1970.
fn time_key(at_ms: i64, call: &[u8]) -> Vec<u8> {
    let mut k = TIME_PREFIX.to_vec();
    k.extend_from_slice(&u64::try_from(at_ms).unwrap_or(0).to_be_bytes());
    k.extend_from_slice(call);
    k
}

/// The time and the call key (without its prefix) of a time-ordered entry.
fn split_time_key(k: &[u8]) -> Result<(i64, &[u8]), StorageError> {
    let rest = k
        .strip_prefix(TIME_PREFIX)
        .filter(|r| r.len() > 8)
        .ok_or_else(|| corrupt("idempotency", "time key too short"))?;
    let (at, call) = rest.split_at(8);
    let at = u64::from_be_bytes(at.try_into().map_err(|e| corrupt("idempotency", e))?);
    let at = i64::try_from(at).map_err(|e| corrupt("idempotency", e))?;
    Ok((at, call))
}

fn encode_call(c: &EarlierCall) -> Vec<u8> {
    let mut v = Vec::with_capacity(56);
    v.extend_from_slice(&c.digest);
    v.extend_from_slice(c.id.as_bytes());
    v.extend_from_slice(&c.at_ms.to_be_bytes());
    v
}

fn decode_call(v: &[u8]) -> Result<EarlierCall, StorageError> {
    if v.len() != 56 {
        return Err(corrupt("idempotency", "entry is not 56 bytes"));
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&v[..32]);
    let id = EnvelopeId::from_bytes(&v[32..48]).map_err(|e| corrupt("idempotency", e))?;
    let mut at = [0u8; 8];
    at.copy_from_slice(&v[48..]);
    Ok(EarlierCall {
        digest,
        id,
        at_ms: i64::from_be_bytes(at),
    })
}

fn expect_key(id: &EnvelopeId) -> Vec<u8> {
    let mut k = b"expect/".to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

fn failed_key(id: &[u8]) -> Vec<u8> {
    let mut k = b"inclusion-failed/".to_vec();
    k.extend_from_slice(id);
    k
}

fn inbox_prefix(agency: &AgencyId) -> Vec<u8> {
    let mut k = agency.to_string().into_bytes();
    k.push(0);
    k
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
        outbox_into_lanes(&db.open_tree("outbox")?)?;
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

    /// Puts an envelope in the outbox with its sent record and header hash,
    /// and with its idempotency key if `call` is given, in one transaction,
    /// unless the key was used already: then nothing is written and the
    /// earlier call is returned.
    async fn enqueue_inner(
        &self,
        id: &EnvelopeId,
        env: &v1::Envelope,
        status: &v1::SendStatus,
        call: Option<KeyedCall>,
    ) -> Result<Option<EarlierCall>, StorageError> {
        let id = *id;
        let key = outbox_key(
            Lane::of(status.labels.as_ref().map_or(0, |l| l.priority)),
            &id,
        );
        let header_sha256 = crate::protocol::envelope::sha256(&env.header);
        let env = env.encode_to_vec();
        let status = status.encode_to_vec();
        let trees = self.trees.clone();
        let changed = self.outbox_changed.clone();
        // On a task of its own, so that a caller who stops waiting (an agency
        // that hangs up) cannot leave the envelope applied yet never released
        // to the submitter.
        let task = tokio::spawn(async move {
            let earlier = on_trees(trees.clone(), move |t| {
                t.unflushed().insert(id);
                let _g = t.lock();
                let applied = (&t.outbox, &t.sent, &t.sent_headers, &t.idempotency)
                    .transaction(|(outbox, sent, sent_headers, idempotency)| {
                        if let Some(call) = &call {
                            let ck = call_key(&call.agency, &call.key);
                            let earlier = match idempotency.get(&ck)? {
                                Some(v) => Some(
                                    decode_call(&v).map_err(ConflictableTransactionError::Abort)?,
                                ),
                                None => None,
                            };
                            match earlier {
                                Some(e) if e.at_ms >= call.not_before_ms() => {
                                    return Ok(Some(e));
                                }
                                // Expired and not yet forgotten: replaced.
                                Some(e) => {
                                    idempotency
                                        .remove(time_key(e.at_ms, &ck[CALL_PREFIX.len()..]))?;
                                }
                                None => {}
                            }
                            idempotency.insert(
                                ck.as_slice(),
                                encode_call(&EarlierCall {
                                    digest: call.digest,
                                    id,
                                    at_ms: call.at_ms,
                                })
                                .as_slice(),
                            )?;
                            idempotency
                                .insert(time_key(call.at_ms, &ck[CALL_PREFIX.len()..]), &[])?;
                        }
                        outbox.insert(key.as_slice(), env.as_slice())?;
                        sent.insert(id.as_bytes().as_slice(), status.as_slice())?;
                        sent_headers.insert(id.as_bytes().as_slice(), header_sha256.as_slice())?;
                        Ok(None)
                    })
                    .map_err(|e| t.tx_err(e));
                if !matches!(applied, Ok(None)) {
                    t.unflushed().remove(&id);
                }
                applied
            })
            .await?;
            // Either this envelope or, for a key used already, the earlier
            // call's write: on disk before anyone hears of it.
            trees.commit.commit().await?;
            if earlier.is_none() {
                trees.unflushed().remove(&id);
                changed.send_modify(|n| *n = n.wrapping_add(1));
            }
            Ok(earlier)
        });
        task.await.map_err(task_failed)?
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

#[async_trait::async_trait]
impl Outbox for SledNodeStore {
    async fn enqueue(
        &self,
        id: &EnvelopeId,
        env: &v1::Envelope,
        status: &v1::SendStatus,
    ) -> Result<(), StorageError> {
        self.enqueue_inner(id, env, status, None).await.map(|_| ())
    }

    async fn enqueue_keyed(
        &self,
        id: &EnvelopeId,
        env: &v1::Envelope,
        status: &v1::SendStatus,
        call: &KeyedCall,
    ) -> Result<Option<EarlierCall>, StorageError> {
        self.enqueue_inner(id, env, status, Some(call.clone()))
            .await
    }

    async fn keyed_call(
        &self,
        agency: &AgencyId,
        key: &str,
        not_before_ms: i64,
    ) -> Result<Option<EarlierCall>, StorageError> {
        let k = call_key(agency, key);
        let found = self
            .blocking(move |t| t.idempotency.get(k)?.map(|v| decode_call(&v)).transpose())
            .await?
            .filter(|c| c.at_ms >= not_before_ms);
        if found.is_some() {
            // The write that recorded it may still be on its way to disk.
            self.commit().await?;
        }
        Ok(found)
    }

    async fn forget_keys(&self, before_ms: i64) -> Result<usize, StorageError> {
        let mut forgotten = 0;
        loop {
            let n = self
                .blocking(move |t| {
                    let mut old = Vec::new();
                    let end = time_key(before_ms, &[]);
                    for k in t.idempotency.range(TIME_PREFIX.to_vec()..end).keys() {
                        old.push(k?);
                        if old.len() == FORGET_BATCH {
                            break;
                        }
                    }
                    if old.is_empty() {
                        return Ok(0);
                    }
                    let _g = t.lock();
                    t.idempotency
                        .transaction(|tx| {
                            for tk in &old {
                                tx.remove(tk.as_ref())?;
                                let (at, call) = split_time_key(tk)
                                    .map_err(ConflictableTransactionError::Abort)?;
                                let ck = [CALL_PREFIX, call].concat();
                                // A key used again after it expired has a
                                // newer entry: only the one this time
                                // stands for goes.
                                if let Some(v) = tx.get(&ck)? {
                                    let c = decode_call(&v)
                                        .map_err(ConflictableTransactionError::Abort)?;
                                    if c.at_ms == at {
                                        tx.remove(ck)?;
                                    }
                                }
                            }
                            Ok(())
                        })
                        .map_err(|e| t.tx_err(e))?;
                    Ok(old.len())
                })
                .await?;
            if n == 0 {
                break;
            }
            forgotten += n;
            self.commit().await?;
            if n < FORGET_BATCH {
                break;
            }
        }
        Ok(forgotten)
    }

    async fn outbox_len(&self) -> Result<u64, StorageError> {
        let unflushed = self.trees.unflushed().clone();
        let outbox = self.trees.outbox.clone();
        // A long outbox takes a while to count: on a blocking thread.
        tokio::task::spawn_blocking(move || {
            let mut n = 0u64;
            for k in outbox.iter().keys() {
                let (_, id) = outbox_entry(&k?)?;
                n += u64::from(!unflushed.contains(&id));
            }
            Ok(n)
        })
        .await
        .map_err(task_failed)?
    }

    async fn outbox(&self) -> Result<Vec<(EnvelopeId, v1::Envelope)>, StorageError> {
        self.blocking(|t| {
            let unflushed = t.unflushed().clone();
            let mut out = Vec::new();
            for kv in t.outbox.iter() {
                let (k, v) = kv?;
                let (_, id) = outbox_entry(&k)?;
                if unflushed.contains(&id) {
                    continue;
                }
                out.push((
                    id,
                    v1::Envelope::decode(v.as_ref()).map_err(|e| corrupt("outbox", e))?,
                ));
            }
            Ok(out)
        })
        .await
    }

    async fn outbox_waiting(
        &self,
        per_lane: usize,
        skip: &HashSet<EnvelopeId>,
    ) -> Result<Vec<(Lane, EnvelopeId)>, StorageError> {
        let skip = skip.clone();
        self.blocking(move |t| {
            let unflushed = t.unflushed().clone();
            let mut out = Vec::new();
            if per_lane == 0 {
                return Ok(out);
            }
            for lane in Lane::ALL {
                let mut taken = 0;
                // The keys only: no envelope is decoded here.
                for k in t.outbox.scan_prefix([LANE_KEY[lane.index()]]).keys() {
                    let (_, id) = outbox_entry(&k?)?;
                    if skip.contains(&id) || unflushed.contains(&id) {
                        continue;
                    }
                    out.push((lane, id));
                    taken += 1;
                    if taken == per_lane {
                        break;
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn outbox_envelopes(
        &self,
        ids: &[(Lane, EnvelopeId)],
    ) -> Result<Vec<(EnvelopeId, v1::Envelope)>, StorageError> {
        let ids = ids.to_vec();
        self.blocking(move |t| {
            let mut out = Vec::with_capacity(ids.len());
            for (lane, id) in ids {
                if let Some(v) = t.outbox.get(outbox_key(lane, &id))? {
                    out.push((
                        id,
                        v1::Envelope::decode(v.as_ref()).map_err(|e| corrupt("outbox", e))?,
                    ));
                }
            }
            Ok(out)
        })
        .await
    }

    fn outbox_changed(&self) -> watch::Receiver<u64> {
        self.outbox_changed.subscribe()
    }

    async fn settle(&self, id: &EnvelopeId, update: StatusUpdate) -> Result<(), StorageError> {
        let id = *id;
        self.blocking(move |t| {
            let _g = t.lock();
            (&t.outbox, &t.sent)
                .transaction(|(outbox, sent)| {
                    remove_from_outbox(outbox, &id)?;
                    update_status(sent, &id, &update)?;
                    Ok(())
                })
                .map_err(|e| t.tx_err(e))
        })
        .await?;
        self.commit().await
    }

    async fn settle_accepted(
        &self,
        id: &EnvelopeId,
        expected: &v1::EnvelopeSummary,
        update: StatusUpdate,
    ) -> Result<(), StorageError> {
        let id = *id;
        let expected = expected.encode_to_vec();
        self.blocking(move |t| {
            let _g = t.lock();
            (&t.outbox, &t.sent, &t.witness)
                .transaction(|(outbox, sent, witness)| {
                    remove_from_outbox(outbox, &id)?;
                    witness.insert(expect_key(&id), expected.as_slice())?;
                    update_status(sent, &id, &update)?;
                    Ok(())
                })
                .map_err(|e| t.tx_err(e))
        })
        .await?;
        self.commit().await
    }

    async fn update_sent(
        &self,
        id: &EnvelopeId,
        update: StatusUpdate,
    ) -> Result<bool, StorageError> {
        let id = *id;
        let found = self
            .blocking(move |t| {
                let _g = t.lock();
                match t.sent.get(id.as_bytes())? {
                    Some(v) => {
                        let mut s = Trees::decode_sent(&v)?;
                        update(&mut s);
                        t.sent
                            .insert(id.as_bytes(), s.encode_to_vec())
                            .map_err(|e| t.stop_on_io(e))?;
                        Ok(true)
                    }
                    None => Ok(false),
                }
            })
            .await?;
        if found {
            self.commit().await?;
        }
        Ok(found)
    }

    async fn sent(&self, id: &EnvelopeId) -> Result<Option<v1::SendStatus>, StorageError> {
        let id = *id;
        self.blocking(move |t| {
            t.sent
                .get(id.as_bytes())?
                .map(|v| Trees::decode_sent(&v))
                .transpose()
        })
        .await
    }

    async fn sent_header_sha256(&self, id: &EnvelopeId) -> Result<Option<Vec<u8>>, StorageError> {
        let id = *id;
        self.blocking(move |t| Ok(t.sent_headers.get(id.as_bytes())?.map(|v| v.to_vec())))
            .await
    }

    async fn sent_by(&self, agency: &AgencyId) -> Result<Vec<v1::SendStatus>, StorageError> {
        let me = agency.to_string();
        self.blocking(move |t| {
            let mut out = Vec::new();
            for kv in t.sent.iter() {
                let (_, v) = kv?;
                let s = Trees::decode_sent(&v)?;
                if s.sender_agency == me {
                    out.push(s);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn awaiting_inclusion(&self) -> Result<Vec<v1::SendStatus>, StorageError> {
        self.blocking(|t| {
            let mut out = Vec::new();
            for kv in t.sent.iter() {
                let (k, v) = kv?;
                let s = Trees::decode_sent(&v)?;
                if s.state == v1::SendState::Accepted as i32
                    && s.inclusion_verified_at == 0
                    && !t.witness.contains_key(failed_key(&k))?
                {
                    out.push(s);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn expected_acceptance(
        &self,
        id: &EnvelopeId,
    ) -> Result<Option<v1::EnvelopeSummary>, StorageError> {
        let id = *id;
        self.blocking(move |t| {
            t.witness
                .get(expect_key(&id))?
                .map(|v| v1::EnvelopeSummary::decode(v.as_ref()).map_err(|e| corrupt("witness", e)))
                .transpose()
        })
        .await
    }

    async fn record_inclusion_failure(
        &self,
        id: &EnvelopeId,
        at_ms: i64,
        evidence: &str,
    ) -> Result<(), StorageError> {
        let mut k = b"evidence/".to_vec();
        k.extend_from_slice(&at_ms.to_be_bytes());
        k.extend_from_slice(id.as_bytes());
        let mut batch = sled::Batch::default();
        batch.insert(k, evidence.as_bytes());
        batch.insert(failed_key(id.as_bytes()), &[]);
        self.blocking(move |t| Ok(t.witness.apply_batch(batch)?))
            .await?;
        self.commit().await
    }
}

#[async_trait::async_trait]
impl Inbox for SledNodeStore {
    async fn deliver(
        &self,
        id: &EnvelopeId,
        entries: &[(AgencyId, v1::InboxRecord)],
        receipt: &v1::SignedReceipt,
    ) -> Result<v1::SignedReceipt, StorageError> {
        let id = *id;
        let entries: Vec<(Vec<u8>, Vec<u8>)> = entries
            .iter()
            .map(|(agency, rec)| (inbox_key(agency, &id), rec.encode_to_vec()))
            .collect();
        let encoded = receipt.encode_to_vec();
        let earlier = self
            .blocking(move |t| {
                let _g = t.lock();
                (&t.inbox, &t.received)
                    .transaction(|(inbox, received)| {
                        if let Some(earlier) = received.get(id.as_bytes())? {
                            return Ok(Some(earlier));
                        }
                        for (k, rec) in &entries {
                            inbox.insert(k.as_slice(), rec.as_slice())?;
                        }
                        received.insert(id.as_bytes().as_slice(), encoded.as_slice())?;
                        Ok(None)
                    })
                    .map_err(|e| t.tx_err(e))
            })
            .await?;
        self.commit().await?;
        match earlier {
            Some(v) => v1::SignedReceipt::decode(v.as_ref()).map_err(|e| corrupt("received", e)),
            None => Ok(receipt.clone()),
        }
    }

    async fn receipt_for(
        &self,
        id: &EnvelopeId,
    ) -> Result<Option<v1::SignedReceipt>, StorageError> {
        let id = *id;
        self.blocking(move |t| {
            t.received
                .get(id.as_bytes())?
                .map(|v| v1::SignedReceipt::decode(v.as_ref()).map_err(|e| corrupt("received", e)))
                .transpose()
        })
        .await
    }

    async fn inbox(
        &self,
        agency: &AgencyId,
        after: Option<&EnvelopeId>,
        limit: usize,
    ) -> Result<Vec<v1::InboxRecord>, StorageError> {
        let prefix = inbox_prefix(agency);
        let start = match after {
            Some(id) => {
                let mut k = inbox_key(agency, id);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        self.blocking(move |t| {
            let mut out = Vec::new();
            for kv in t.inbox.range(start..) {
                let (k, v) = kv?;
                if !k.starts_with(&prefix) || out.len() >= limit {
                    break;
                }
                out.push(v1::InboxRecord::decode(v.as_ref()).map_err(|e| corrupt("inbox", e))?);
            }
            Ok(out)
        })
        .await
    }

    async fn fetch(
        &self,
        agency: &AgencyId,
        id: &EnvelopeId,
    ) -> Result<Option<v1::InboxRecord>, StorageError> {
        let key = inbox_key(agency, id);
        self.blocking(move |t| {
            t.inbox
                .get(key)?
                .map(|v| v1::InboxRecord::decode(v.as_ref()).map_err(|e| corrupt("inbox", e)))
                .transpose()
        })
        .await
    }

    async fn purge_expired(&self, now_ms: i64) -> Result<Vec<EnvelopeId>, StorageError> {
        let ids = self
            .blocking(move |t| {
                let mut expired = Vec::new();
                for kv in t.inbox.iter() {
                    let (k, v) = kv?;
                    let rec =
                        v1::InboxRecord::decode(v.as_ref()).map_err(|e| corrupt("inbox", e))?;
                    let expires = rec.entry.as_ref().map_or(i64::MAX, |e| e.expires_at_ms);
                    if expires != 0 && expires <= now_ms {
                        let id = k
                            .len()
                            .checked_sub(16)
                            .and_then(|at| EnvelopeId::from_bytes(&k[at..]).ok());
                        expired.push((k, id.ok_or_else(|| corrupt("inbox", "key"))?));
                    }
                }
                if expired.is_empty() {
                    return Ok(Vec::new());
                }
                let _g = t.lock();
                (&t.inbox, &t.purged)
                    .transaction(|(inbox, purged)| {
                        for (k, id) in &expired {
                            inbox.remove(k.as_ref())?;
                            purged.insert(id.as_bytes().as_slice(), &[])?;
                        }
                        Ok(())
                    })
                    .map_err(|e| t.tx_err(e))?;
                let mut ids: Vec<EnvelopeId> = expired.into_iter().map(|(_, id)| id).collect();
                ids.dedup();
                Ok(ids)
            })
            .await?;
        if !ids.is_empty() {
            self.commit().await?;
        }
        Ok(ids)
    }

    async fn unreported_purges(&self) -> Result<Vec<EnvelopeId>, StorageError> {
        self.blocking(|t| {
            t.purged
                .iter()
                .keys()
                .map(|k| {
                    k.map_err(StorageError::from)
                        .and_then(|k| EnvelopeId::from_bytes(&k).map_err(|e| corrupt("purged", e)))
                })
                .collect()
        })
        .await
    }

    async fn purges_reported(&self, ids: &[EnvelopeId]) -> Result<(), StorageError> {
        let ids = ids.to_vec();
        self.blocking(move |t| {
            for id in &ids {
                t.purged
                    .remove(id.as_bytes())
                    .map_err(|e| t.stop_on_io(e))?;
            }
            Ok(())
        })
        .await?;
        self.commit().await
    }
}

#[async_trait::async_trait]
impl WitnessState for SledNodeStore {
    async fn accepted_checkpoint(&self) -> Result<Option<Vec<u8>>, StorageError> {
        self.blocking(|t| Ok(t.witness.get(b"accepted")?.map(|v| v.to_vec())))
            .await
    }

    async fn accept_checkpoint(&self, note: &[u8]) -> Result<(), StorageError> {
        let note = note.to_vec();
        self.blocking(move |t| {
            t.witness
                .insert(b"accepted", note)
                .map_err(|e| t.stop_on_io(e))?;
            Ok(())
        })
        .await?;
        self.commit().await
    }

    async fn record_evidence(&self, at_ms: i64, evidence: &str) -> Result<(), StorageError> {
        let evidence = evidence.as_bytes().to_vec();
        self.blocking(move |t| {
            let _g = t.lock();
            let mut k = b"evidence/".to_vec();
            k.extend_from_slice(&at_ms.to_be_bytes());
            let same_ms = t.witness.scan_prefix(&k).count() as u64;
            k.extend_from_slice(&same_ms.to_be_bytes());
            t.witness.insert(k, evidence).map_err(|e| t.stop_on_io(e))?;
            Ok(())
        })
        .await?;
        self.commit().await
    }

    async fn evidence(&self) -> Result<Vec<String>, StorageError> {
        self.blocking(|t| {
            t.witness
                .scan_prefix(b"evidence/")
                .values()
                .map(|v| {
                    v.map_err(StorageError::from)
                        .map(|v| String::from_utf8_lossy(&v).into_owned())
                })
                .collect()
        })
        .await
    }
}

/// Takes `id` out of whichever lane of the outbox holds it, inside a
/// transaction.
fn remove_from_outbox(
    outbox: &sled::transaction::TransactionalTree,
    id: &EnvelopeId,
) -> sled::transaction::ConflictableTransactionResult<(), StorageError> {
    for lane in Lane::ALL {
        outbox.remove(outbox_key(lane, id).as_slice())?;
    }
    Ok(())
}

/// Applies `update` to the sent record `id`, if there is one, inside a
/// transaction.
fn update_status(
    sent: &sled::transaction::TransactionalTree,
    id: &EnvelopeId,
    update: &StatusUpdate,
) -> sled::transaction::ConflictableTransactionResult<(), StorageError> {
    if let Some(v) = sent.get(id.as_bytes())? {
        let mut s = Trees::decode_sent(&v)
            .map_err(sled::transaction::ConflictableTransactionError::Abort)?;
        update(&mut s);
        sent.insert(id.as_bytes().as_slice(), s.encode_to_vec())?;
    }
    Ok(())
}

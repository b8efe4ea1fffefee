//! The node's durable state: the agencies' inboxes, the outbox of sealed
//! envelopes waiting for the broker, what each agency sent with its
//! receipts and the hash of the header it sent, the receipts this node gave
//! for headers it verified (so a redelivery gets the same answer and never a
//! second inbox entry), and the evidence of a broker that lied.
//!
//! Every mutating method applies one sled transaction and returns after a
//! group-commit flush: Ok means on disk.

use std::sync::Mutex;

use prost::Message as _;
use sled::Transactional as _;

use crate::protocol::ids::{AgencyId, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::in_force::InForce;
use crate::storage::{Flush, GroupCommit, StorageError};

pub struct NodeStore {
    inbox: sled::Tree,
    received: sled::Tree,
    outbox: sled::Tree,
    sent: sled::Tree,
    sent_headers: sled::Tree,
    purged: sled::Tree,
    witness: sled::Tree,
    meta: sled::Tree,
    commit: GroupCommit,
    writer: Mutex<()>,
    /// Envelopes put in the outbox whose flush has not returned: not
    /// submitted until it has, so the broker never holds a record a crash
    /// could take from the sending node.
    unflushed: Mutex<std::collections::HashSet<EnvelopeId>>,
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

impl NodeStore {
    pub fn open(dir: &std::path::Path) -> Result<NodeStore, StorageError> {
        NodeStore::open_with(dir, |db| std::sync::Arc::new(db))
    }

    /// Opens the store with `flush` in place of sled's own flush (it is
    /// given the database to wrap), for tests that make flushes fail.
    pub fn open_with(
        dir: &std::path::Path,
        flush: impl FnOnce(sled::Db) -> std::sync::Arc<dyn Flush>,
    ) -> Result<NodeStore, StorageError> {
        let db = crate::storage::sled::open_db(dir)?;
        Ok(NodeStore {
            inbox: db.open_tree("inbox")?,
            received: db.open_tree("received")?,
            outbox: db.open_tree("outbox")?,
            sent: db.open_tree("sent")?,
            sent_headers: db.open_tree("sent_headers")?,
            purged: db.open_tree("purged")?,
            witness: db.open_tree("witness")?,
            meta: db.open_tree("meta")?,
            commit: GroupCommit::start(flush(db), dir.display().to_string()),
            writer: Mutex::new(()),
            unflushed: Mutex::new(std::collections::HashSet::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Resolves, with the reason, once a flush has failed and the store can
    /// acknowledge nothing more; the node then stops. Never otherwise.
    pub async fn failed(&self) -> String {
        self.commit.failed().await
    }

    /// The directory and policy bundle versions recorded as in force.
    pub fn in_force(&self) -> Result<InForce, StorageError> {
        let mut entries = Vec::new();
        for kv in self.meta.scan_prefix(crate::storage::in_force::PREFIX) {
            let (k, v) = kv?;
            entries.push((k.to_vec(), v.to_vec()));
        }
        InForce::from_entries(entries).map_err(|e| corrupt("meta", e))
    }

    /// Records the directory and policy bundle versions in force.
    pub async fn put_in_force(&self, in_force: &InForce) -> Result<(), StorageError> {
        let entries = in_force.entries();
        {
            let _g = self.lock();
            self.meta
                .transaction(|meta| {
                    for (k, v) in &entries {
                        if crate::storage::in_force::raises(meta.get(k)?.as_deref(), v) {
                            meta.insert(k.as_slice(), v.as_slice())?;
                        }
                    }
                    Ok(())
                })
                .map_err(|e| self.tx_err(e))?;
        }
        self.commit.commit().await
    }

    /// Records a sealed envelope as sent (queued), with the hash of its
    /// header for checking receipts, and puts it in the outbox.
    pub async fn enqueue(
        &self,
        id: &EnvelopeId,
        env: &v1::Envelope,
        status: &v1::SendStatus,
    ) -> Result<(), StorageError> {
        let header_sha256 = crate::protocol::envelope::sha256(&env.header);
        let unflushed = || self.unflushed.lock().unwrap_or_else(|p| p.into_inner());
        unflushed().insert(*id);
        {
            let _g = self.lock();
            (&self.outbox, &self.sent, &self.sent_headers)
                .transaction(|(outbox, sent, sent_headers)| {
                    outbox.insert(id.as_bytes().as_slice(), env.encode_to_vec())?;
                    sent.insert(id.as_bytes().as_slice(), status.encode_to_vec())?;
                    sent_headers.insert(id.as_bytes().as_slice(), header_sha256.as_slice())?;
                    Ok(())
                })
                .map_err(|e| self.tx_err(e))?;
        }
        self.commit.commit().await?;
        unflushed().remove(id);
        Ok(())
    }

    /// Envelopes waiting for the broker, oldest first; only those on disk.
    pub fn outbox(&self) -> Result<Vec<(EnvelopeId, v1::Envelope)>, StorageError> {
        let unflushed = self
            .unflushed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = Vec::new();
        for kv in self.outbox.iter() {
            let (k, v) = kv?;
            let id = EnvelopeId::from_bytes(&k).map_err(|e| corrupt("outbox", e))?;
            if unflushed.contains(&id) {
                continue;
            }
            out.push((
                id,
                v1::Envelope::decode(v.as_ref()).map_err(|e| corrupt("outbox", e))?,
            ));
        }
        Ok(out)
    }

    /// Takes an envelope out of the outbox with the broker's answer.
    pub async fn settle(
        &self,
        id: &EnvelopeId,
        update: impl Fn(&mut v1::SendStatus),
    ) -> Result<(), StorageError> {
        {
            let _g = self.lock();
            (&self.outbox, &self.sent)
                .transaction(|(outbox, sent)| {
                    outbox.remove(id.as_bytes().as_slice())?;
                    update_status(sent, id, &update)?;
                    Ok(())
                })
                .map_err(|e| self.tx_err(e))?;
        }
        self.commit.commit().await
    }

    /// Takes an envelope the broker accepted out of the outbox with the
    /// broker's answer, keeping `expected` (the summary its acceptance entry
    /// in the log must carry) for the inclusion check.
    pub async fn settle_accepted(
        &self,
        id: &EnvelopeId,
        expected: &v1::EnvelopeSummary,
        update: impl Fn(&mut v1::SendStatus),
    ) -> Result<(), StorageError> {
        let expected = expected.encode_to_vec();
        {
            let _g = self.lock();
            (&self.outbox, &self.sent, &self.witness)
                .transaction(|(outbox, sent, witness)| {
                    outbox.remove(id.as_bytes().as_slice())?;
                    witness.insert(expect_key(id), expected.as_slice())?;
                    update_status(sent, id, &update)?;
                    Ok(())
                })
                .map_err(|e| self.tx_err(e))?;
        }
        self.commit.commit().await
    }

    /// Updates what an agency sees of a record it sent.
    pub async fn update_sent(
        &self,
        id: &EnvelopeId,
        update: impl Fn(&mut v1::SendStatus),
    ) -> Result<bool, StorageError> {
        let found = {
            let _g = self.lock();
            match self.sent.get(id.as_bytes())? {
                Some(v) => {
                    let mut s =
                        v1::SendStatus::decode(v.as_ref()).map_err(|e| corrupt("sent", e))?;
                    update(&mut s);
                    self.sent
                        .insert(id.as_bytes(), s.encode_to_vec())
                        .map_err(|e| self.stop_on_io(e))?;
                    true
                }
                None => false,
            }
        };
        if found {
            self.commit.commit().await?;
        }
        Ok(found)
    }

    pub fn sent(&self, id: &EnvelopeId) -> Result<Option<v1::SendStatus>, StorageError> {
        self.sent
            .get(id.as_bytes())?
            .map(|v| v1::SendStatus::decode(v.as_ref()).map_err(|e| corrupt("sent", e)))
            .transpose()
    }

    /// SHA-256 of the header this node sent as `id`, which every receipt for
    /// `id` must answer.
    pub fn sent_header_sha256(&self, id: &EnvelopeId) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.sent_headers.get(id.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Everything `agency` sent, oldest first.
    pub fn sent_by(&self, agency: &AgencyId) -> Result<Vec<v1::SendStatus>, StorageError> {
        let me = agency.to_string();
        let mut out = Vec::new();
        for kv in self.sent.iter() {
            let (_, v) = kv?;
            let s = v1::SendStatus::decode(v.as_ref()).map_err(|e| corrupt("sent", e))?;
            if s.sender_agency == me {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// The receipt this node already gave for an envelope, if any. Only
    /// headers that verified ever get one stored, and its body names the
    /// hash of the header it answered.
    pub fn receipt_for(&self, id: &EnvelopeId) -> Result<Option<v1::SignedReceipt>, StorageError> {
        self.received
            .get(id.as_bytes())?
            .map(|v| v1::SignedReceipt::decode(v.as_ref()).map_err(|e| corrupt("received", e)))
            .transpose()
    }

    /// Stores a delivered record in each recipient agency's inbox together
    /// with the receipt, atomically: either the agencies have it and the
    /// receipt is remembered, or neither. A rejection stores the receipt only.
    /// The caller has verified the header `id` comes from. Returns the
    /// receipt in force: `receipt`, or the one already stored for `id`, in
    /// which case nothing is filed.
    pub async fn deliver(
        &self,
        id: &EnvelopeId,
        entries: &[(AgencyId, v1::InboxRecord)],
        receipt: &v1::SignedReceipt,
    ) -> Result<v1::SignedReceipt, StorageError> {
        let earlier = {
            let _g = self.lock();
            (&self.inbox, &self.received)
                .transaction(|(inbox, received)| {
                    if let Some(earlier) = received.get(id.as_bytes())? {
                        return Ok(Some(earlier));
                    }
                    for (agency, rec) in entries {
                        inbox.insert(inbox_key(agency, id), rec.encode_to_vec())?;
                    }
                    received.insert(id.as_bytes().as_slice(), receipt.encode_to_vec())?;
                    Ok(None)
                })
                .map_err(|e| self.tx_err(e))?
        };
        self.commit.commit().await?;
        match earlier {
            Some(v) => v1::SignedReceipt::decode(v.as_ref()).map_err(|e| corrupt("received", e)),
            None => Ok(receipt.clone()),
        }
    }

    /// The inbox of `agency`, oldest first, after `after` if given.
    pub fn inbox(
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
        let mut out = Vec::new();
        for kv in self.inbox.range(start..) {
            let (k, v) = kv?;
            if !k.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            out.push(v1::InboxRecord::decode(v.as_ref()).map_err(|e| corrupt("inbox", e))?);
        }
        Ok(out)
    }

    pub fn fetch(
        &self,
        agency: &AgencyId,
        id: &EnvelopeId,
    ) -> Result<Option<v1::InboxRecord>, StorageError> {
        self.inbox
            .get(inbox_key(agency, id))?
            .map(|v| v1::InboxRecord::decode(v.as_ref()).map_err(|e| corrupt("inbox", e)))
            .transpose()
    }

    /// Deletes every inbox record that expired by `now_ms`, remembering the
    /// envelope ids (nothing else) until the broker has logged the purge.
    /// Returns the ids purged now.
    pub async fn purge_expired(&self, now_ms: i64) -> Result<Vec<EnvelopeId>, StorageError> {
        let mut expired = Vec::new();
        for kv in self.inbox.iter() {
            let (k, v) = kv?;
            let rec = v1::InboxRecord::decode(v.as_ref()).map_err(|e| corrupt("inbox", e))?;
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
        {
            let _g = self.lock();
            (&self.inbox, &self.purged)
                .transaction(|(inbox, purged)| {
                    for (k, id) in &expired {
                        inbox.remove(k.as_ref())?;
                        purged.insert(id.as_bytes().as_slice(), &[])?;
                    }
                    Ok(())
                })
                .map_err(|e| self.tx_err(e))?;
        }
        self.commit.commit().await?;
        let mut ids: Vec<EnvelopeId> = expired.into_iter().map(|(_, id)| id).collect();
        ids.dedup();
        Ok(ids)
    }

    /// Purged envelope ids the broker has not yet logged.
    pub fn unreported_purges(&self) -> Result<Vec<EnvelopeId>, StorageError> {
        self.purged
            .iter()
            .keys()
            .map(|k| {
                k.map_err(StorageError::from)
                    .and_then(|k| EnvelopeId::from_bytes(&k).map_err(|e| corrupt("purged", e)))
            })
            .collect()
    }

    /// Forgets purged ids once the broker has logged them.
    pub async fn purges_reported(&self, ids: &[EnvelopeId]) -> Result<(), StorageError> {
        for id in ids {
            self.purged
                .remove(id.as_bytes())
                .map_err(|e| self.stop_on_io(e))?;
        }
        self.commit.commit().await
    }

    /// The last checkpoint this node accepted as witness (signed note).
    pub fn accepted_checkpoint(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.witness.get(b"accepted")?.map(|v| v.to_vec()))
    }

    /// Records a checkpoint as accepted.
    pub async fn accept_checkpoint(&self, note: &[u8]) -> Result<(), StorageError> {
        self.witness
            .insert(b"accepted", note)
            .map_err(|e| self.stop_on_io(e))?;
        self.commit.commit().await
    }

    /// Keeps evidence of a broker that lied: an inconsistent log, a relayed
    /// receipt that does not answer what this node sent. Pieces recorded in
    /// the same millisecond are all kept, in the order recorded.
    pub async fn record_evidence(&self, at_ms: i64, evidence: &str) -> Result<(), StorageError> {
        {
            let _g = self.lock();
            let mut k = b"evidence/".to_vec();
            k.extend_from_slice(&at_ms.to_be_bytes());
            let same_ms = self.witness.scan_prefix(&k).count() as u64;
            k.extend_from_slice(&same_ms.to_be_bytes());
            self.witness
                .insert(k, evidence.as_bytes())
                .map_err(|e| self.stop_on_io(e))?;
        }
        self.commit.commit().await
    }

    /// Every piece of evidence kept, oldest first.
    pub fn evidence(&self) -> Result<Vec<String>, StorageError> {
        self.witness
            .scan_prefix(b"evidence/")
            .values()
            .map(|v| {
                v.map_err(StorageError::from)
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
            })
            .collect()
    }

    /// Records sent (accepted) that still wait for an inclusion check,
    /// oldest first: those whose log index is known, and those settled by a
    /// duplicate answer, whose index the proof will tell (log index 0; entry
    /// 0 is never a submission: the broker logs its directory first). A
    /// record whose proof failed is not checked again: its evidence is kept.
    pub fn awaiting_inclusion(&self) -> Result<Vec<v1::SendStatus>, StorageError> {
        let mut out = Vec::new();
        for kv in self.sent.iter() {
            let (k, v) = kv?;
            let s = v1::SendStatus::decode(v.as_ref()).map_err(|e| corrupt("sent", e))?;
            if s.state == v1::SendState::Accepted as i32
                && s.inclusion_verified_at == 0
                && !self.witness.contains_key(failed_key(&k))?
            {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// The summary the log's acceptance entry of a sent envelope must carry.
    pub fn expected_acceptance(
        &self,
        id: &EnvelopeId,
    ) -> Result<Option<v1::EnvelopeSummary>, StorageError> {
        self.witness
            .get(expect_key(id))?
            .map(|v| v1::EnvelopeSummary::decode(v.as_ref()).map_err(|e| corrupt("witness", e)))
            .transpose()
    }

    /// Keeps the evidence that the broker did not prove the inclusion of a
    /// submission it accepted, and stops checking that submission.
    pub async fn record_inclusion_failure(
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
        self.witness.apply_batch(batch)?;
        self.commit.commit().await
    }
}

/// Applies `update` to the sent record `id`, if there is one, inside a
/// transaction.
fn update_status(
    sent: &sled::transaction::TransactionalTree,
    id: &EnvelopeId,
    update: &impl Fn(&mut v1::SendStatus),
) -> sled::transaction::ConflictableTransactionResult<(), StorageError> {
    if let Some(v) = sent.get(id.as_bytes())? {
        let mut s = v1::SendStatus::decode(v.as_ref()).map_err(|e| {
            sled::transaction::ConflictableTransactionError::Abort(corrupt("sent", e))
        })?;
        update(&mut s);
        sent.insert(id.as_bytes().as_slice(), s.encode_to_vec())?;
    }
    Ok(())
}

/// The node's versions in force behind the seam the daemons share
/// (the policy reload of both daemons uses it): the inherent methods above,
/// under the trait.
#[async_trait::async_trait]
impl crate::storage::in_force::VersionsInForce for NodeStore {
    async fn in_force(&self) -> Result<InForce, StorageError> {
        NodeStore::in_force(self)
    }

    async fn put_in_force(&self, in_force: &InForce) -> Result<(), StorageError> {
        NodeStore::put_in_force(self, in_force).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sled::GatedFlush;

    #[tokio::test]
    async fn evidence_recorded_in_the_same_millisecond_is_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = NodeStore::open(dir.path()).unwrap();
        store.record_evidence(7, "first").await.unwrap();
        store.record_evidence(7, "second").await.unwrap();
        store.record_evidence(6, "earlier").await.unwrap();
        assert_eq!(store.evidence().unwrap(), ["earlier", "first", "second"]);
    }

    #[tokio::test]
    async fn an_envelope_leaves_the_outbox_only_once_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut gated = None;
        let store = std::sync::Arc::new(
            NodeStore::open_with(dir.path(), |db| {
                let (f, started) = GatedFlush::over(db);
                gated = Some((f.clone(), started));
                f
            })
            .unwrap(),
        );
        let (gate, mut started) = gated.unwrap();
        let id = EnvelopeId::at(0);
        let s = store.clone();
        let enqueue = tokio::spawn(async move {
            s.enqueue(&id, &v1::Envelope::default(), &v1::SendStatus::default())
                .await
        });
        started.recv().await.unwrap();
        assert!(store.outbox().unwrap().is_empty(), "not yet on disk");
        gate.gate.add_permits(1);
        enqueue.await.unwrap().unwrap();
        let ids: Vec<EnvelopeId> = store
            .outbox()
            .unwrap()
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(ids, vec![id]);
    }
}

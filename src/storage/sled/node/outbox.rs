//! The outbox, in lanes by priority, and the sent records with their
//! header hashes.

use std::collections::HashSet;

use prost::Message as _;
use sled::Transactional as _;
use tokio::sync::watch;

use super::idempotency::claim;
use super::witness::{evidence_key, expect_key, failed_key};
use super::{SledNodeStore, Trees, corrupt, on_trees, task_failed};
use crate::protocol::ids::{AgencyId, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::StorageError;
use crate::storage::node::idempotency::{EarlierCall, KeyedCall};
use crate::storage::node::{Lane, Outbox, StatusUpdate};

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
pub(super) fn outbox_into_lanes(outbox: &sled::Tree) -> Result<(), StorageError> {
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

impl SledNodeStore {
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
                        if let Some(call) = &call
                            && let Some(earlier) = claim(idempotency, call, id)?
                        {
                            return Ok(Some(earlier));
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
        self.find_call(agency, key, not_before_ms).await
    }

    async fn forget_keys(&self, before_ms: i64) -> Result<usize, StorageError> {
        self.forget_calls(before_ms).await
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
        let mut k = evidence_key(at_ms);
        k.extend_from_slice(id.as_bytes());
        let mut batch = sled::Batch::default();
        batch.insert(k, evidence.as_bytes());
        batch.insert(failed_key(id.as_bytes()), &[]);
        self.blocking(move |t| Ok(t.witness.apply_batch(batch)?))
            .await?;
        self.commit().await
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

//! The queues and payloads on sled.
//!
//! - `mail`: node (2 bytes) || lane (1) || seq (u64 BE) → the item: an
//!   envelope's id, or a relayed receipt inline. Each lane of a node is a
//!   contiguous range in seq order; seq is the one per-store counter, so an
//!   acknowledgement by seq finds its item with one point read per lane.
//! - `payload`: envelope id → the Envelope protobuf, written once at accept
//!   and removed once, at the last recipient node's acknowledgement.
//! - `remaining`: envelope id → recipient nodes yet to acknowledge (u64 BE)
//!   || sender node (2 bytes): the small value a partial acknowledgement
//!   rewrites.
//!
//! A store written before lanes (mail keys without a lane byte, the count
//! and sender in front of each payload) is migrated at open, see
//! [`Trees::migrate_to_lanes`].

use std::sync::atomic::Ordering;

use prost::Message as _;
use tokio::sync::watch;

use super::batch::{Op, Prepared, PreparedAck};
use super::{SledStore, TAG_ENVELOPE, TAG_RECEIPT, Trees, TxTree, corrupt, delivered_key};
use crate::protocol::ids::{Country, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::broker::{
    Acceptance, Cursor, Entry, EnvelopeAck, Lane, MailItem, Mailboxes, Queued, StoreError, Wakeup,
};
use crate::storage::{be, read_be};

/// Set in `meta` once the queues are in lanes and the counts apart from
/// the payloads.
const META_MAIL_LANES: &[u8] = b"mail_lanes";

pub(super) fn grant_key(
    original: &EnvelopeId,
    grantee: &crate::protocol::ids::AgencyId,
    third: &crate::protocol::ids::AgencyId,
) -> Vec<u8> {
    let mut k = original.as_bytes().to_vec();
    k.extend_from_slice(grantee.to_string().as_bytes());
    k.push(0);
    k.extend_from_slice(third.to_string().as_bytes());
    k
}

pub(super) fn mail_key(node: Country, lane: Lane, seq: u64) -> Vec<u8> {
    let mut k = node.as_str().as_bytes().to_vec();
    k.push(lane.number());
    k.extend_from_slice(&be(seq));
    k
}

/// The count of recipient nodes yet to acknowledge and the sending node.
pub(super) fn encode_remaining(remaining: u64, sender: Country) -> Vec<u8> {
    let mut v = be(remaining).to_vec();
    v.extend_from_slice(sender.as_str().as_bytes());
    v
}

pub(super) fn decode_remaining(v: &[u8]) -> Result<(u64, Country), StoreError> {
    if v.len() != 10 {
        return Err(corrupt("remaining", "value is not 10 bytes"));
    }
    let remaining = read_be(&v[..8]).ok_or_else(|| corrupt("remaining", "count"))?;
    let sender = std::str::from_utf8(&v[8..10])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt("remaining", "sender"))?;
    Ok((remaining, sender))
}

fn entry(item: &[u8]) -> Result<Entry, StoreError> {
    match item.split_first() {
        Some((&TAG_ENVELOPE, id)) => Ok(Entry::Envelope(
            EnvelopeId::from_bytes(id).map_err(|e| corrupt("mail", e.to_string()))?,
        )),
        Some((&TAG_RECEIPT, _)) => Ok(Entry::Receipt),
        _ => Err(corrupt("mail", "unknown item tag")),
    }
}

/// The queue entry `seq` of `node` in a transaction: its key and value.
pub(super) fn find(
    mail: &TxTree,
    node: Country,
    seq: u64,
) -> super::TxResult<Option<(Vec<u8>, sled::IVec)>> {
    for lane in Lane::ALL {
        let key = mail_key(node, lane, seq);
        if let Some(v) = mail.get(&key)? {
            return Ok(Some((key, v)));
        }
    }
    Ok(None)
}

impl Trees {
    /// Up to `limit` items of `node` past `cursor` with seq below `durable`,
    /// in delivery order.
    fn pending(
        &self,
        node: Country,
        cursor: &Cursor,
        limit: usize,
        durable: u64,
    ) -> Result<Vec<Queued>, StoreError> {
        let Some(last) = durable.checked_sub(1) else {
            return Ok(Vec::new());
        };
        // Only the small entries of each lane are read here; payloads only
        // for what the schedule takes.
        let mut waiting: [Vec<(u64, sled::IVec)>; 4] = Default::default();
        for lane in Lane::ALL.into_iter().filter(|&l| cursor.carries(l)) {
            let from = cursor.after(lane).map_or(0, |a| a.saturating_add(1));
            if from > last {
                continue;
            }
            let range = mail_key(node, lane, from)..=mail_key(node, lane, last);
            let lane_items = &mut waiting[usize::from(lane.number())];
            for kv in self.mail.range(range).take(limit) {
                let (k, v) = kv?;
                let seq = k
                    .get(3..)
                    .and_then(read_be)
                    .ok_or_else(|| corrupt("mail", "key"))?;
                lane_items.push((seq, v));
            }
        }
        let counts = waiting.each_ref().map(Vec::len);
        let mut out = Vec::new();
        for (lane, i) in cursor.schedule(counts, limit) {
            let Some((seq, v)) = waiting[usize::from(lane.number())].get(i) else {
                break;
            };
            let item = match entry(v)? {
                Entry::Envelope(id) => {
                    let Some(p) = self.payload.get(id.as_bytes())? else {
                        return Err(corrupt("payload", format!("missing payload for {id}")));
                    };
                    let env = v1::Envelope::decode(p.as_ref())
                        .map_err(|e| corrupt("payload", e.to_string()))?;
                    MailItem::Envelope(id, env)
                }
                Entry::Receipt => MailItem::Receipt(
                    v1::SignedReceipt::decode(&v[1..])
                        .map_err(|e| corrupt("mail", e.to_string()))?,
                ),
            };
            out.push(Queued {
                seq: *seq,
                lane,
                item,
            });
        }
        Ok(out)
    }

    /// Brings a store written before lanes to the current layout: each mail
    /// key gains its lane (an envelope's from the priority in its accepted
    /// summary, a receipt's the receipt lane) and each payload's count and
    /// sender move to `remaining`. Queue items are few (what waits for
    /// delivery), and each step is its own transaction and idempotent (an
    /// old key is 10 bytes, a new one 11; a payload with a `remaining`
    /// entry is already split), so a crash part-way is finished at the
    /// next open. Flushed before the store serves anything.
    pub(super) fn migrate_to_lanes(&self) -> Result<(), StoreError> {
        if self.meta.contains_key(META_MAIL_LANES)? {
            return Ok(());
        }
        use sled::Transactional as _;
        let tx_err = |e: sled::transaction::TransactionError<StoreError>| match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => e.into(),
        };
        for kv in self.mail.iter() {
            let (k, v) = kv?;
            if k.len() != 10 {
                continue;
            }
            let node = std::str::from_utf8(&k[..2])
                .ok()
                .and_then(|s| s.parse::<Country>().ok())
                .ok_or_else(|| corrupt("mail", "key"))?;
            let seq = read_be(&k[2..]).ok_or_else(|| corrupt("mail", "key"))?;
            let lane = match entry(&v)? {
                Entry::Receipt => Lane::Receipt,
                Entry::Envelope(id) => match self.accepted.get(id.as_bytes())? {
                    Some(a) if a.len() >= 8 => v1::EnvelopeSummary::decode(&a[8..])
                        .map(|s| Lane::of_priority(s.priority))
                        .unwrap_or(Lane::Routine),
                    _ => Lane::Routine,
                },
            };
            let new = mail_key(node, lane, seq);
            self.mail
                .transaction(|m| {
                    m.insert(new.as_slice(), v.clone())?;
                    m.remove(k.clone())?;
                    Ok(())
                })
                .map_err(tx_err)?;
        }
        for kv in self.payload.iter() {
            let (id, p) = kv?;
            if self.remaining.contains_key(&id)? {
                continue;
            }
            if p.len() < 10 {
                return Err(corrupt("payload", "short value"));
            }
            (&self.payload, &self.remaining)
                .transaction(|(payload, remaining)| {
                    remaining.insert(id.clone(), &p[..10])?;
                    payload.insert(id.clone(), &p[10..])?;
                    Ok(())
                })
                .map_err(tx_err)?;
        }
        self.meta.insert(META_MAIL_LANES, &[1])?;
        self.db.flush()?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Mailboxes for SledStore {
    async fn accept(&self, a: Acceptance) -> Result<u64, StoreError> {
        self.write_batched(Op::Accept(Prepared::of(a)?)).await
    }

    async fn queued(&self, node: Country, seq: u64) -> Result<Option<Entry>, StoreError> {
        if seq >= self.durable.mail.load(Ordering::SeqCst) {
            return Ok(None);
        }
        self.run(move |t| {
            for lane in Lane::ALL {
                if let Some(v) = t.mail.get(mail_key(node, lane, seq))? {
                    return entry(&v).map(Some);
                }
            }
            Ok(None)
        })
        .await
    }

    async fn pending(
        &self,
        node: Country,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let durable = self.durable.mail.load(Ordering::SeqCst);
        let cursor = cursor.cloned().unwrap_or_default();
        self.run(move |t| t.pending(node, &cursor, limit, durable))
            .await
    }

    async fn delivered(&self, id: &EnvelopeId, node: Country) -> Result<bool, StoreError> {
        let key = delivered_key(id, node);
        self.run(move |t| Ok(t.delivered.contains_key(key)?)).await
    }

    async fn ack_envelope(
        &self,
        node: Country,
        seq: u64,
        ack: EnvelopeAck,
    ) -> Result<u64, StoreError> {
        let ack = PreparedAck::of(ack)?;
        self.write_batched(Op::AckEnvelope { node, seq, ack }).await
    }

    async fn ack_receipt(&self, node: Country, seq: u64) -> Result<(), StoreError> {
        self.write_batched(Op::AckReceipt { node, seq }).await?;
        Ok(())
    }

    async fn queue_depth(&self, node: Country) -> Result<u64, StoreError> {
        let durable = self.durable.mail.load(Ordering::SeqCst);
        let mail = self.trees.mail.clone();
        // A long queue takes a while to count: on a blocking thread, so that
        // the workers serving Submits and deliveries are not held meanwhile.
        tokio::task::spawn_blocking(move || {
            let mut depth = 0u64;
            for k in mail.scan_prefix(node.as_str().as_bytes()).keys() {
                let k = k?;
                let seq = k
                    .get(3..)
                    .and_then(read_be)
                    .ok_or_else(|| corrupt("mail", "key"))?;
                depth += u64::from(seq < durable);
            }
            Ok(depth)
        })
        .await
        .map_err(|e| {
            StoreError::Storage(crate::storage::StorageError::Backend(format!(
                "counting the queue of node {node} failed: {e}"
            )))
        })?
    }

    async fn subscribe(&self, node: Country) -> Result<watch::Receiver<Wakeup>, StoreError> {
        let mut all = self.wakeups.lock().unwrap_or_else(|p| p.into_inner());
        Ok(all
            .entry(node)
            .or_insert_with(|| watch::channel(Wakeup::default()).0)
            .subscribe())
    }
}

//! The queues and payloads on sled.

use std::sync::atomic::Ordering;

use prost::Message as _;
use tokio::sync::watch;

use super::{
    SledStore, TAG_ENVELOPE, TAG_RECEIPT, Trees, abort, corrupt, decode_payload, delivered_key,
    encode_payload, mail_key,
};
use crate::protocol::ids::{Country, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::broker::{Acceptance, EnvelopeAck, MailItem, Mailboxes, StoreError};
use crate::storage::{be, read_be};

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

impl Trees {
    /// Up to `limit` items of `node` with seq in `(after, durable)`.
    fn pending(
        &self,
        node: Country,
        after: Option<u64>,
        limit: usize,
        durable: u64,
    ) -> Result<Vec<(u64, MailItem)>, StoreError> {
        let start = mail_key(node, after.map_or(0, |a| a.saturating_add(1)));
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
}

#[async_trait::async_trait]
impl Mailboxes for SledStore {
    async fn accept(&self, a: Acceptance) -> Result<u64, StoreError> {
        let env_bytes = a.envelope.encode_to_vec();
        let payload = encode_payload(a.recipient_nodes.len() as u64, a.sender_node, &env_bytes);
        let mut item = vec![TAG_ENVELOPE];
        item.extend_from_slice(a.id.as_bytes());
        let summary = a.summary.encode_to_vec();
        let recipients = a.recipient_nodes.clone();
        let index = self
            .transact(move |t| {
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
                let index = t.sequence(&a.event)?;
                let mut kept = be(index).to_vec();
                kept.extend_from_slice(&summary);
                t.accepted.insert(a.id.as_bytes().as_slice(), kept)?;
                Ok(index)
            })
            .await?;
        self.wake(recipients);
        Ok(index)
    }

    async fn queued(&self, node: Country, seq: u64) -> Result<Option<MailItem>, StoreError> {
        Ok(self
            .pending(node, seq.checked_sub(1), 1)
            .await?
            .into_iter()
            .find(|(s, _)| *s == seq)
            .map(|(_, i)| i))
    }

    async fn pending(
        &self,
        node: Country,
        after: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, MailItem)>, StoreError> {
        let durable = self.durable.mail.load(Ordering::SeqCst);
        self.run(move |t| t.pending(node, after, limit, durable))
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
        let key = mail_key(node, seq);
        let mut relay = vec![TAG_RECEIPT];
        relay.extend_from_slice(&ack.receipt.encode_to_vec());
        let (index, sender) = self
            .transact(move |t| {
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
                    let i = t.sequence(e)?;
                    first.get_or_insert(i);
                }
                Ok((first.unwrap_or(0), sender))
            })
            .await?;
        self.wake([sender]);
        Ok(index)
    }

    async fn ack_receipt(&self, node: Country, seq: u64) -> Result<(), StoreError> {
        let key = mail_key(node, seq);
        self.transact(move |t| match t.mail.get(&key)? {
            Some(v) if v.first() == Some(&TAG_RECEIPT) => {
                t.mail.remove(key.as_slice())?;
                Ok(())
            }
            Some(_) => abort(StoreError::ReceiptRequired { node, seq }),
            None => abort(StoreError::NoSuchItem { node, seq }),
        })
        .await
    }

    async fn subscribe(&self, node: Country) -> Result<watch::Receiver<u64>, StoreError> {
        let mut all = self.wakeups.lock().unwrap_or_else(|p| p.into_inner());
        Ok(all
            .entry(node)
            .or_insert_with(|| watch::channel(0).0)
            .subscribe())
    }
}

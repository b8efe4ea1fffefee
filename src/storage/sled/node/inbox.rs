//! The inbox per agency, the receipts of what was delivered, and the
//! purges of expired records.

use prost::Message as _;
use sled::Transactional as _;

use super::{SledNodeStore, corrupt};
use crate::protocol::ids::{AgencyId, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::StorageError;
use crate::storage::node::Inbox;

fn inbox_key(agency: &AgencyId, id: &EnvelopeId) -> Vec<u8> {
    let mut k = agency.to_string().into_bytes();
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn inbox_prefix(agency: &AgencyId) -> Vec<u8> {
    let mut k = agency.to_string().into_bytes();
    k.push(0);
    k
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

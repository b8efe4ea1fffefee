//! Federation state on sled: `seen`, `accepted` and `grants`, and the
//! digests of what was last recorded in force in `meta`.

use prost::Message as _;

use super::mailboxes::grant_key;
use super::{SledStore, corrupt};
use crate::protocol::ids::{AgencyId, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::broker::{Accepted, FederationState, StoreError, Subject};
use crate::storage::read_be;

/// Where the digest last recorded for `subject` is kept in `meta`.
fn meta_key(subject: Subject) -> &'static [u8] {
    match subject {
        Subject::Directory => b"directory_sha256",
        Subject::Policy => b"policy_set_sha256",
    }
}

#[async_trait::async_trait]
impl FederationState for SledStore {
    async fn seen(&self, id: &EnvelopeId) -> Result<bool, StoreError> {
        let id = *id;
        self.run(move |t| Ok(t.seen.contains_key(id.as_bytes())?))
            .await
    }

    async fn accepted(&self, id: &EnvelopeId) -> Result<Option<Accepted>, StoreError> {
        let id = *id;
        self.run(move |t| {
            let Some(v) = t.accepted.get(id.as_bytes())? else {
                return Ok(None);
            };
            if v.len() < 8 {
                return Err(corrupt("accepted", "short value"));
            }
            let log_index = read_be(&v[..8]).ok_or_else(|| corrupt("accepted", "index"))?;
            let summary = v1::EnvelopeSummary::decode(&v[8..])
                .map_err(|e| corrupt("accepted", e.to_string()))?;
            Ok(Some(Accepted { log_index, summary }))
        })
        .await
    }

    async fn granted(
        &self,
        original: &EnvelopeId,
        grantee: &AgencyId,
        third: &AgencyId,
    ) -> Result<bool, StoreError> {
        let key = grant_key(original, grantee, third);
        self.run(move |t| Ok(t.grants.contains_key(key)?)).await
    }

    async fn prune_seen(&self, before_ms: i64) -> Result<usize, StoreError> {
        let n = self
            .run(move |t| {
                let mut n = 0;
                for kv in t.seen.iter() {
                    let (k, v) = kv?;
                    let created = v
                        .as_ref()
                        .try_into()
                        .map(i64::from_be_bytes)
                        .unwrap_or(i64::MIN);
                    if created < before_ms {
                        t.seen.remove(k)?;
                        n += 1;
                    }
                }
                Ok(n)
            })
            .await
            .map_err(|e| self.stop_on_io(e))?;
        self.commit.commit().await?;
        Ok(n)
    }

    async fn record_if_changed(
        &self,
        subject: Subject,
        digest: Vec<u8>,
        event: v1::AuditEvent,
    ) -> Result<Option<u64>, StoreError> {
        let key = meta_key(subject);
        self.transact(move |t| {
            if t.meta.get(key)?.as_deref() == Some(digest.as_slice()) {
                return Ok(None);
            }
            t.meta.insert(key, digest.as_slice())?;
            t.sequence(&event).map(Some)
        })
        .await
    }
}

//! Federation state on PostgreSQL: `seen`, `accepted`, `grants`, and in
//! `meta` the digests last recorded and the versions in force.

use prost::Message as _;

use super::mailboxes::sequence;
use super::{PgStore, corrupt, notify, sequenced_note, uint};
use crate::protocol::ids::{AgencyId, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::StorageError;
use crate::storage::broker::{Accepted, FederationState, StoreError, Subject};
use crate::storage::in_force::{InForce, VersionsInForce};

/// Where the digest last recorded for `subject` is kept in `meta`.
fn meta_key(subject: Subject) -> &'static [u8] {
    match subject {
        Subject::Directory => b"directory_sha256",
        Subject::Policy => b"policy_set_sha256",
    }
}

#[async_trait::async_trait]
impl FederationState for PgStore {
    async fn seen(&self, id: &EnvelopeId) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT 1 FROM seen WHERE id = $1",
                &[&id.as_bytes().as_slice()],
            )
            .await?
            .is_some())
    }

    async fn accepted(&self, id: &EnvelopeId) -> Result<Option<Accepted>, StoreError> {
        let client = self.client().await?;
        let Some(r) = client
            .query_opt(
                "SELECT log_index, summary FROM accepted WHERE id = $1",
                &[&id.as_bytes().as_slice()],
            )
            .await?
        else {
            return Ok(None);
        };
        let log_index = uint(r.get(0), "accepted")?;
        let summary = v1::EnvelopeSummary::decode(r.get::<_, &[u8]>(1))
            .map_err(|e| corrupt("accepted", e.to_string()))?;
        Ok(Some(Accepted { log_index, summary }))
    }

    async fn granted(
        &self,
        original: &EnvelopeId,
        grantee: &AgencyId,
        third: &AgencyId,
    ) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT 1 FROM grants WHERE original = $1 AND grantee = $2 AND third = $3",
                &[
                    &original.as_bytes().as_slice(),
                    &grantee.to_string(),
                    &third.to_string(),
                ],
            )
            .await?
            .is_some())
    }

    async fn prune_seen(&self, before_ms: i64) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute("DELETE FROM seen WHERE created_at_ms < $1", &[&before_ms])
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn record_if_changed(
        &self,
        subject: Subject,
        digest: Vec<u8>,
        event: v1::AuditEvent,
    ) -> Result<Option<u64>, StoreError> {
        let leaf = crate::protocol::leaf::encode(&event)?;
        let key = meta_key(subject);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The head first, as every writer takes it: brokers recording at
        // once take turns, and only the first records a change.
        tx.execute("SELECT 1 FROM log_head FOR UPDATE", &[]).await?;
        let stored = tx
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])
            .await?;
        if stored.is_some_and(|r| r.get::<_, &[u8]>(0) == digest.as_slice()) {
            return Ok(None);
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = $2",
            &[&key, &digest],
        )
        .await?;
        let index = sequence(&tx, std::slice::from_ref(&leaf)).await?;
        notify(&tx, &[sequenced_note(index + 1)]).await?;
        tx.commit().await?;
        self.shared.show_sequenced(index + 1);
        Ok(Some(index))
    }
}

fn storage(e: StoreError) -> StorageError {
    match e {
        StoreError::Storage(e) => e,
        other => StorageError::Backend(other.to_string()),
    }
}

#[async_trait::async_trait]
impl VersionsInForce for PgStore {
    async fn in_force(&self) -> Result<InForce, StorageError> {
        let client = self.client().await.map_err(storage)?;
        let prefix = crate::storage::in_force::PREFIX;
        let rows = client
            .query(
                "SELECT key, value FROM meta WHERE substring(key FROM 1 FOR $2) = $1 ORDER BY key",
                &[&prefix, &(prefix.len() as i32)],
            )
            .await
            .map_err(|e| super::pg_error(&e))?;
        let entries = rows.into_iter().map(|r| (r.get(0), r.get(1)));
        InForce::from_entries(entries).map_err(|e| StorageError::Corrupt {
            tree: "meta",
            detail: e,
        })
    }

    async fn put_in_force(&self, in_force: &InForce) -> Result<(), StorageError> {
        let entries = in_force.entries();
        let pg = |e: tokio_postgres::Error| super::pg_error(&e);
        let mut client = self.client().await.map_err(storage)?;
        let tx = client.transaction().await.map_err(pg)?;
        for (k, v) in &entries {
            let inserted = tx
                .execute(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[k, v],
                )
                .await
                .map_err(pg)?;
            if inserted == 1 {
                continue;
            }
            let stored: Vec<u8> = tx
                .query_one("SELECT value FROM meta WHERE key = $1 FOR UPDATE", &[k])
                .await
                .map_err(pg)?
                .get(0);
            if crate::storage::in_force::raises(Some(&stored), v) {
                tx.execute("UPDATE meta SET value = $2 WHERE key = $1", &[k, v])
                    .await
                    .map_err(pg)?;
            }
        }
        tx.commit().await.map_err(pg)?;
        Ok(())
    }
}

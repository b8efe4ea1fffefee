//! Moving a broker's store from sled to PostgreSQL (`casebridge broker
//! migrate`): queues and payloads, seen ids, summaries, grants,
//! deliveries, the log's leaves, checkpoints, cosignatures, the digests and
//! versions in force, all in one PostgreSQL transaction into a database
//! that holds nothing yet; then the Merkle tree is integrated again from
//! the leaves (it is derived from them, and comes out identical, which the
//! broker's start check confirms against the copied checkpoint). The sled
//! store is only read.

use std::collections::BTreeMap;

use crate::storage::broker::{Integrator, StoreError};
use crate::storage::postgres::PgStore;
use crate::storage::sled::broker::SledStore;
use crate::storage::{StorageError, read_be};

/// Leaves written per statement.
const CHUNK: usize = 2000;

/// What a migration copied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub log_entries: u64,
    pub queued: u64,
    pub payloads: u64,
    pub checkpoints: u64,
    pub cosignatures: u64,
    pub integrated: u64,
}

fn corrupt(tree: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Storage(StorageError::Corrupt {
        tree,
        detail: detail.into(),
    })
}

fn be_of(v: &[u8], tree: &'static str) -> Result<u64, StoreError> {
    read_be(v).ok_or_else(|| corrupt(tree, "not an 8-byte number"))
}

fn int(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| corrupt("meta", format!("{n} is too large")))
}

fn node_of(b: &[u8], tree: &'static str) -> Result<String, StoreError> {
    std::str::from_utf8(b)
        .ok()
        .filter(|s| s.parse::<crate::protocol::ids::Country>().is_ok())
        .map(str::to_string)
        .ok_or_else(|| corrupt(tree, "not a node"))
}

/// Copies everything of `from` into `to`, whose database must hold no
/// broker data yet.
pub async fn sled_to_postgres(from: &SledStore, to: &PgStore) -> Result<Migrated, StoreError> {
    let db = from.db();
    let tree = |name: &str| db.open_tree(name).map_err(StoreError::from);
    let meta = tree("meta")?;
    let counter = |k: &[u8]| -> Result<u64, StoreError> {
        match meta.get(k)? {
            Some(v) => be_of(&v, "meta"),
            None => Ok(0),
        }
    };
    let audit_next = counter(b"audit_next")?;
    let mail_next = counter(b"mail_next")?;
    let mut out = Migrated::default();

    let mut client = to.client().await?;
    let tx = client.transaction().await?;
    let size: i64 = tx
        .query_one("SELECT size FROM log_head FOR UPDATE", &[])
        .await?
        .get(0);
    let queued: i64 = tx.query_one("SELECT count(*) FROM mail", &[]).await?.get(0);
    if size != 0 || queued != 0 {
        return Err(StoreError::Storage(StorageError::Backend(format!(
            "the database already holds a log of {size} entries and {queued} queued items; \
             migrate only into a database no broker has used"
        ))));
    }

    // The log's leaves, in index order, with no gap.
    let audit = tree("audit")?;
    let (mut idx, mut leaves) = (Vec::new(), Vec::new());
    for (expected, kv) in (0u64..).zip(audit.iter()) {
        let (k, v) = kv?;
        if be_of(&k, "audit")? != expected {
            return Err(corrupt("audit", format!("entry {expected} is missing")));
        }
        idx.push(int(expected)?);
        leaves.push(v.to_vec());
        if idx.len() == CHUNK {
            tx.execute(
                "INSERT INTO audit (idx, leaf) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
                &[&idx, &leaves],
            )
            .await?;
            out.log_entries += idx.len() as u64;
            idx.clear();
            leaves.clear();
        }
    }
    if !idx.is_empty() {
        tx.execute(
            "INSERT INTO audit (idx, leaf) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
            &[&idx, &leaves],
        )
        .await?;
        out.log_entries += idx.len() as u64;
    }
    if out.log_entries != audit_next {
        return Err(corrupt(
            "audit",
            format!(
                "{} entries stored, but the counter says {audit_next}",
                out.log_entries
            ),
        ));
    }
    tx.execute("UPDATE log_head SET size = $1", &[&int(audit_next)?])
        .await?;

    // Queues: each node's counter goes on from the store's one counter,
    // above every seq it holds.
    let mut nodes = BTreeMap::new();
    for kv in tree("mail")?.iter() {
        let (k, v) = kv?;
        if k.len() != 11 {
            return Err(corrupt("mail", "a key of the layout before lanes"));
        }
        let node = node_of(&k[..2], "mail")?;
        let lane = i16::from(k[2]);
        let seq = int(be_of(&k[3..], "mail")?)?;
        let (envelope, receipt): (Option<&[u8]>, Option<&[u8]>) = match v.split_first() {
            Some((0, id)) => (Some(id), None),
            Some((1, r)) => (None, Some(r)),
            _ => return Err(corrupt("mail", "unknown item tag")),
        };
        tx.execute(
            "INSERT INTO mail (node, seq, lane, envelope_id, receipt) VALUES ($1, $2, $3, $4, $5)",
            &[&node, &seq, &lane, &envelope, &receipt],
        )
        .await?;
        nodes.insert(node, ());
        out.queued += 1;
    }
    for node in nodes.keys() {
        tx.execute(
            "INSERT INTO mail_counter (node, next) VALUES ($1, $2)",
            &[node, &int(mail_next)?],
        )
        .await?;
    }

    // Payloads with their counts.
    let remaining = tree("remaining")?;
    for kv in tree("payload")?.iter() {
        let (id, envelope) = kv?;
        let Some(r) = remaining.get(&id)? else {
            return Err(corrupt("remaining", "a payload without its count"));
        };
        if r.len() != 10 {
            return Err(corrupt("remaining", "value is not 10 bytes"));
        }
        let count = int(be_of(&r[..8], "remaining")?)?;
        let sender = node_of(&r[8..], "remaining")?;
        tx.execute(
            "INSERT INTO payload (id, envelope, remaining, sender) VALUES ($1, $2, $3, $4)",
            &[&id.as_ref(), &envelope.as_ref(), &count, &sender],
        )
        .await?;
        out.payloads += 1;
    }

    for kv in tree("seen")?.iter() {
        let (id, created) = kv?;
        let created = i64::from_be_bytes(
            created
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("seen", "not a time"))?,
        );
        tx.execute(
            "INSERT INTO seen (id, created_at_ms) VALUES ($1, $2)",
            &[&id.as_ref(), &created],
        )
        .await?;
    }
    for kv in tree("accepted")?.iter() {
        let (id, v) = kv?;
        if v.len() < 8 {
            return Err(corrupt("accepted", "short value"));
        }
        let index = int(be_of(&v[..8], "accepted")?)?;
        tx.execute(
            "INSERT INTO accepted (id, log_index, summary) VALUES ($1, $2, $3)",
            &[&id.as_ref(), &index, &&v[8..]],
        )
        .await?;
    }
    for kv in tree("grants")?.iter() {
        let (k, by) = kv?;
        if k.len() < 17 {
            return Err(corrupt("grants", "short key"));
        }
        let (original, rest) = k.split_at(16);
        let text = std::str::from_utf8(rest).map_err(|_| corrupt("grants", "not UTF-8"))?;
        let (grantee, third) = text
            .split_once('\0')
            .ok_or_else(|| corrupt("grants", "no separator"))?;
        tx.execute(
            "INSERT INTO grants (original, grantee, third, granted_by) VALUES ($1, $2, $3, $4)",
            &[&original, &grantee, &third, &by.as_ref()],
        )
        .await?;
    }
    for kv in tree("delivered")?.iter() {
        let (k, _) = kv?;
        if k.len() != 18 {
            return Err(corrupt("delivered", "key is not 18 bytes"));
        }
        let node = node_of(&k[16..], "delivered")?;
        tx.execute(
            "INSERT INTO delivered (id, node) VALUES ($1, $2)",
            &[&&k[..16], &node],
        )
        .await?;
    }
    for kv in tree("checkpoints")?.iter() {
        let (k, note) = kv?;
        tx.execute(
            "INSERT INTO checkpoints (size, note) VALUES ($1, $2)",
            &[&int(be_of(&k, "checkpoints")?)?, &note.as_ref()],
        )
        .await?;
        out.checkpoints += 1;
    }
    for kv in tree("cosignatures")?.iter() {
        let (k, line) = kv?;
        if k.len() != 10 {
            return Err(corrupt("cosignatures", "key is not 10 bytes"));
        }
        let line =
            String::from_utf8(line.to_vec()).map_err(|_| corrupt("cosignatures", "not UTF-8"))?;
        tx.execute(
            "INSERT INTO cosignatures (size, witness, line) VALUES ($1, $2, $3)",
            &[
                &int(be_of(&k[..8], "cosignatures")?)?,
                &node_of(&k[8..], "cosignatures")?,
                &line,
            ],
        )
        .await?;
        out.cosignatures += 1;
    }
    // The digests last recorded and the versions in force; the counters
    // and the integrated size are the target's own.
    for kv in meta.iter() {
        let (k, v) = kv?;
        let keep = k.as_ref() == b"directory_sha256"
            || k.as_ref() == b"policy_set_sha256"
            || k.starts_with(crate::storage::in_force::PREFIX);
        if keep {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ($1, $2)",
                &[&k.as_ref(), &v.as_ref()],
            )
            .await?;
        }
    }
    tx.commit().await?;
    drop(client);
    out.integrated = to.integrate().await?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ids::{AgencyId, Country, EnvelopeId};
    use crate::protocol::proto::v1;
    use crate::storage::broker::{
        Acceptance, Checkpoints, EnvelopeAck, FederationState, Mailboxes, Queued, Sequencer,
        Subject,
    };
    use crate::storage::in_force::VersionsInForce;
    use crate::storage::postgres::testing::TestDb;

    fn cc(s: &str) -> Country {
        s.parse().unwrap()
    }

    fn event(n: i64) -> v1::AuditEvent {
        v1::AuditEvent {
            at_ms: n,
            event: Some(v1::audit_event::Event::SubmissionRefused(
                v1::SubmissionRefused {
                    reason: format!("r{n}"),
                    ..Default::default()
                },
            )),
        }
    }

    fn envelope(name: &str, to: &[&str], priority: v1::Priority) -> Acceptance {
        let id = EnvelopeId::at(1);
        Acceptance {
            id,
            created_at_ms: 7,
            sender_node: cc("HR"),
            envelope: v1::Envelope {
                header: name.as_bytes().to_vec(),
                ..Default::default()
            },
            recipient_nodes: to.iter().map(|c| cc(c)).collect(),
            event: event(1),
            summary: v1::EnvelopeSummary {
                envelope_id: id.as_bytes().to_vec(),
                priority: priority as i32,
                ..Default::default()
            },
            grants: vec![],
        }
    }

    fn shape(qs: &[Queued]) -> Vec<(u64, crate::storage::broker::Lane, String)> {
        qs.iter()
            .map(|q| {
                let name = match &q.item {
                    crate::storage::broker::MailItem::Envelope(_, e) => e.header.clone(),
                    crate::storage::broker::MailItem::Receipt(r) => r.body.clone(),
                };
                (q.seq, q.lane, String::from_utf8(name).unwrap())
            })
            .collect()
    }

    #[tokio::test]
    async fn a_sled_store_moves_to_postgres_whole() {
        let Some(db) = TestDb::create().await else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let sled = SledStore::open(dir.path()).unwrap();
        let court: AgencyId = "BA/court".parse().unwrap();
        let third: AgencyId = "RS/police".parse().unwrap();
        let original = EnvelopeId::at(1);
        sled.record_if_changed(Subject::Directory, vec![1; 32], event(0))
            .await
            .unwrap();
        let mut granting = envelope("granting", &["BA", "RS"], v1::Priority::Urgent);
        granting.grants = vec![(original, court.clone(), third.clone())];
        let granting_id = granting.id;
        sled.accept(granting).await.unwrap();
        sled.accept(envelope("alert", &["BA"], v1::Priority::Immediate))
            .await
            .unwrap();
        let rs = sled.pending(cc("RS"), None, 10).await.unwrap();
        sled.ack_envelope(
            cc("RS"),
            rs[0].seq,
            EnvelopeAck {
                id: granting_id,
                receipt: v1::SignedReceipt {
                    body: b"receipt".to_vec(),
                    ..Default::default()
                },
                events: vec![event(2)],
                delivered: true,
            },
        )
        .await
        .unwrap();
        sled.append_all((10..40).map(event).collect())
            .await
            .unwrap();
        let size = sled.integrate().await.unwrap();
        sled.put_checkpoint(size, b"note".to_vec()).await.unwrap();
        sled.put_cosignature(size, cc("BA"), "— BA".into())
            .await
            .unwrap();
        let in_force = crate::storage::in_force::InForce {
            directory: Some(crate::protocol::directory::DirectoryVersion {
                version: 3,
                digest: [3; 32],
            }),
            bundles: vec![],
        };
        sled.put_in_force(&in_force).await.unwrap();

        let pg = PgStore::open(&db.settings).await.unwrap();
        let moved = sled_to_postgres(&sled, &pg).await.unwrap();
        assert_eq!(moved.log_entries, size);
        assert_eq!(moved.integrated, size);
        assert_eq!((moved.checkpoints, moved.cosignatures), (1, 1));
        assert_eq!(moved.payloads, 2);
        assert_eq!(pg.audit_len().await.unwrap(), size);
        assert_eq!(
            pg.leaves(0, size).await.unwrap(),
            sled.leaves(0, size).await.unwrap()
        );
        assert_eq!(pg.root(size).await.unwrap(), sled.root(size).await.unwrap());
        assert_eq!(
            pg.inclusion_proof(3, size).await.unwrap(),
            sled.inclusion_proof(3, size).await.unwrap()
        );
        for node in ["BA", "RS", "HR"] {
            assert_eq!(
                shape(&pg.pending(cc(node), None, 10).await.unwrap()),
                shape(&sled.pending(cc(node), None, 10).await.unwrap()),
                "{node}"
            );
        }
        assert_eq!(
            pg.latest_checkpoint().await.unwrap(),
            Some((size, b"note".to_vec()))
        );
        assert_eq!(pg.cosignatures(size).await.unwrap(), ["— BA"]);
        assert_eq!(pg.in_force().await.unwrap(), in_force);
        assert!(pg.seen(&granting_id).await.unwrap());
        assert_eq!(
            pg.accepted(&granting_id).await.unwrap(),
            sled.accepted(&granting_id).await.unwrap()
        );
        assert!(pg.granted(&original, &court, &third).await.unwrap());
        assert!(pg.delivered(&granting_id, cc("RS")).await.unwrap());
        assert_eq!(
            pg.record_if_changed(Subject::Directory, vec![1; 32], event(0))
                .await
                .unwrap(),
            None,
            "the digest in force came along"
        );
        // The envelope still queued for BA is acknowledged by its old seq,
        // and new items go above every old seq.
        let ba = pg.pending(cc("BA"), None, 10).await.unwrap();
        let old_max = ba.iter().map(|q| q.seq).max().unwrap();
        pg.accept(envelope("after", &["BA"], v1::Priority::Routine))
            .await
            .unwrap();
        let after = pg.pending(cc("BA"), None, 10).await.unwrap();
        assert!(after.iter().any(|q| q.seq > old_max));
        // Into a database already used: refused, nothing written.
        let e = sled_to_postgres(&sled, &pg).await.unwrap_err().to_string();
        assert!(
            e.contains("migrate only into a database no broker has used"),
            "{e}"
        );
        drop(pg);
        db.drop_db().await;
    }
}

//! The queues and payloads on PostgreSQL.
//!
//! - `mail`: (node, seq) → lane and the item: an envelope's id, or a
//!   relayed receipt inline; indexed by (node, lane, seq) for reading a
//!   lane past a cursor. `seq` comes from the node's `mail_counter` row.
//! - `payload`: envelope id → the Envelope protobuf, the recipient nodes
//!   yet to acknowledge and the sending node; written once at accept,
//!   removed at the last acknowledgement.

use prost::Message as _;
use tokio::sync::watch;

use super::{PgStore, acked_note, corrupt, int, notify, queued_note, sequenced_note, uint};
use crate::protocol::ids::{Country, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::broker::{
    Acceptance, Cursor, Entry, EnvelopeAck, Lane, MailItem, Mailboxes, Queued, StoreError, Wakeup,
};

pub(super) fn country(s: &str, table: &'static str) -> Result<Country, StoreError> {
    s.parse()
        .map_err(|_| corrupt(table, format!("{s:.8} is not a node")))
}

pub(super) fn envelope_id(b: &[u8], table: &'static str) -> Result<EnvelopeId, StoreError> {
    EnvelopeId::from_bytes(b).map_err(|e| corrupt(table, e.to_string()))
}

/// Takes the log's head row and moves it past `n` new entries, in `tx`;
/// returns the first new index. Every writer takes this row before any
/// counter row (see the module docs of [`super`]).
pub(super) async fn sequence(
    tx: &deadpool_postgres::Transaction<'_>,
    leaves: &[Vec<u8>],
) -> Result<u64, StoreError> {
    let n = int(leaves.len() as u64)?;
    let first: i64 = tx
        .query_one(
            "UPDATE log_head SET size = size + $1 RETURNING size - $1",
            &[&n],
        )
        .await?
        .get(0);
    if !leaves.is_empty() {
        tx.execute(
            "INSERT INTO audit (idx, leaf) \
             SELECT $1 + i - 1, l FROM unnest($2::bytea[]) WITH ORDINALITY AS t(l, i)",
            &[&first, &leaves],
        )
        .await?;
    }
    uint(first, "log_head")
}

/// The next seq of `node`'s queue, in `tx`.
async fn next_seq(
    tx: &deadpool_postgres::Transaction<'_>,
    node: Country,
) -> Result<i64, StoreError> {
    Ok(tx
        .query_one(
            "INSERT INTO mail_counter (node, next) VALUES ($1, 1) \
             ON CONFLICT (node) DO UPDATE SET next = mail_counter.next + 1 \
             RETURNING next - 1",
            &[&node.as_str()],
        )
        .await?
        .get(0))
}

fn lane_number(lane: Lane) -> i16 {
    i16::from(lane.number())
}

fn entry_of(envelope_id_: Option<&[u8]>) -> Result<Entry, StoreError> {
    match envelope_id_ {
        Some(id) => Ok(Entry::Envelope(envelope_id(id, "mail")?)),
        None => Ok(Entry::Receipt),
    }
}

#[async_trait::async_trait]
impl Mailboxes for PgStore {
    async fn accept(&self, a: Acceptance) -> Result<u64, StoreError> {
        let leaf = crate::protocol::leaf::encode(&a.event)?;
        let payload = a.envelope.encode_to_vec();
        let summary = a.summary.encode_to_vec();
        let lane = Lane::of_priority(a.summary.priority);
        let id = a.id.as_bytes().to_vec();
        let mut recipients = a.recipient_nodes.clone();
        // Counter rows in one order for every writer.
        recipients.sort_unstable_by(|x, y| x.as_str().cmp(y.as_str()));
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let fresh = tx
            .execute(
                "INSERT INTO seen (id, created_at_ms) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id, &a.created_at_ms],
            )
            .await?;
        if fresh == 0 {
            return Err(StoreError::Duplicate);
        }
        tx.execute(
            "INSERT INTO payload (id, envelope, remaining, sender) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET envelope = $2, remaining = $3, sender = $4",
            &[
                &id,
                &payload,
                &int(a.recipient_nodes.len() as u64)?,
                &a.sender_node.as_str(),
            ],
        )
        .await?;
        for (original, grantee, third) in &a.grants {
            tx.execute(
                "INSERT INTO grants (original, grantee, third, granted_by) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT DO NOTHING",
                &[
                    &original.as_bytes().as_slice(),
                    &grantee.to_string(),
                    &third.to_string(),
                    &id,
                ],
            )
            .await?;
        }
        let index = sequence(&tx, std::slice::from_ref(&leaf)).await?;
        let mut notes = Vec::new();
        for node in &recipients {
            let seq = next_seq(&tx, *node).await?;
            tx.execute(
                "INSERT INTO mail (node, seq, lane, envelope_id) VALUES ($1, $2, $3, $4)",
                &[&node.as_str(), &seq, &lane_number(lane), &id],
            )
            .await?;
            notes.push(queued_note(*node, lane == Lane::Immediate));
        }
        tx.execute(
            "INSERT INTO accepted (id, log_index, summary) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET log_index = $2, summary = $3",
            &[&id, &int(index)?, &summary],
        )
        .await?;
        notes.push(sequenced_note(index + 1));
        notify(&tx, &notes).await?;
        tx.commit().await?;
        self.shared.show_sequenced(index + 1);
        Ok(index)
    }

    async fn queued(&self, node: Country, seq: u64) -> Result<Option<Entry>, StoreError> {
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(None);
        };
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT envelope_id FROM mail WHERE node = $1 AND seq = $2",
                &[&node.as_str(), &seq],
            )
            .await?;
        row.map(|r| entry_of(r.get::<_, Option<&[u8]>>(0)))
            .transpose()
    }

    async fn pending(
        &self,
        node: Country,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<Vec<Queued>, StoreError> {
        let cursor = cursor.cloned().unwrap_or_default();
        let per_lane = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        // One snapshot: an item and its payload as of the same moment.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let mut waiting: [Vec<(u64, Option<Vec<u8>>, Option<Vec<u8>>)>; 4] = Default::default();
        for lane in Lane::ALL.into_iter().filter(|&l| cursor.carries(l)) {
            let after = match cursor.after(lane) {
                Some(a) => int(a)?,
                None => -1,
            };
            let rows = tx
                .query(
                    "SELECT seq, envelope_id, receipt FROM mail \
                     WHERE node = $1 AND lane = $2 AND seq > $3 ORDER BY seq LIMIT $4",
                    &[&node.as_str(), &lane_number(lane), &after, &per_lane],
                )
                .await?;
            let items = &mut waiting[usize::from(lane.number())];
            for r in rows {
                items.push((uint(r.get(0), "mail")?, r.get(1), r.get(2)));
            }
        }
        let counts = waiting.each_ref().map(Vec::len);
        let order = cursor.schedule(counts, limit);
        let ids: Vec<&[u8]> = order
            .iter()
            .filter_map(|(lane, i)| waiting[usize::from(lane.number())].get(*i))
            .filter_map(|(_, id, _)| id.as_deref())
            .collect();
        let mut payloads = std::collections::HashMap::new();
        if !ids.is_empty() {
            for r in tx
                .query(
                    "SELECT id, envelope FROM payload WHERE id = ANY($1)",
                    &[&ids],
                )
                .await?
            {
                payloads.insert(r.get::<_, Vec<u8>>(0), r.get::<_, Vec<u8>>(1));
            }
        }
        tx.commit().await?;
        let mut out = Vec::with_capacity(order.len());
        for (lane, i) in order {
            let Some((seq, id, receipt)) = waiting[usize::from(lane.number())].get(i) else {
                break;
            };
            let item = match (id, receipt) {
                (Some(id), _) => {
                    let eid = envelope_id(id, "mail")?;
                    let Some(p) = payloads.get(id) else {
                        return Err(corrupt("payload", format!("missing payload for {eid}")));
                    };
                    let env = v1::Envelope::decode(p.as_slice())
                        .map_err(|e| corrupt("payload", e.to_string()))?;
                    MailItem::Envelope(eid, env)
                }
                (None, Some(r)) => MailItem::Receipt(
                    v1::SignedReceipt::decode(r.as_slice())
                        .map_err(|e| corrupt("mail", e.to_string()))?,
                ),
                (None, None) => {
                    return Err(corrupt("mail", "an item with neither envelope nor receipt"));
                }
            };
            out.push(Queued {
                seq: *seq,
                lane,
                item,
            });
        }
        Ok(out)
    }

    async fn delivered(&self, id: &EnvelopeId, node: Country) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT 1 FROM delivered WHERE id = $1 AND node = $2",
                &[&id.as_bytes().as_slice(), &node.as_str()],
            )
            .await?
            .is_some())
    }

    async fn ack_envelope(
        &self,
        node: Country,
        seq: u64,
        ack: EnvelopeAck,
    ) -> Result<u64, StoreError> {
        let leaves = ack
            .events
            .iter()
            .map(crate::protocol::leaf::encode)
            .collect::<Result<Vec<_>, _>>()?;
        let relay = ack.receipt.encode_to_vec();
        let Ok(seq_) = i64::try_from(seq) else {
            return Err(StoreError::NoSuchItem { node, seq });
        };
        let id = ack.id.as_bytes().to_vec();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(item) = tx
            .query_opt(
                "SELECT envelope_id FROM mail WHERE node = $1 AND seq = $2 FOR UPDATE",
                &[&node.as_str(), &seq_],
            )
            .await?
        else {
            return Err(StoreError::NoSuchItem { node, seq });
        };
        match item.get::<_, Option<Vec<u8>>>(0) {
            Some(found) if found == id => {}
            Some(found) => {
                return Err(StoreError::WrongEnvelope {
                    node,
                    seq,
                    found: EnvelopeId::from_bytes(&found)
                        .map(|i| i.to_string())
                        .unwrap_or_default(),
                    expected: ack.id,
                });
            }
            None => return Err(StoreError::NoSuchItem { node, seq }),
        }
        let Some(p) = tx
            .query_opt(
                "SELECT remaining, sender FROM payload WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?
        else {
            return Err(corrupt("payload", format!("no count for {}", ack.id)));
        };
        let remaining: i64 = p.get(0);
        let sender = country(p.get(1), "payload")?;
        tx.execute(
            "DELETE FROM mail WHERE node = $1 AND seq = $2",
            &[&node.as_str(), &seq_],
        )
        .await?;
        if remaining <= 1 {
            tx.execute("DELETE FROM payload WHERE id = $1", &[&id])
                .await?;
        } else {
            tx.execute(
                "UPDATE payload SET remaining = remaining - 1 WHERE id = $1",
                &[&id],
            )
            .await?;
        }
        let first = sequence(&tx, &leaves).await?;
        let relay_seq = next_seq(&tx, sender).await?;
        tx.execute(
            "INSERT INTO mail (node, seq, lane, receipt) VALUES ($1, $2, $3, $4)",
            &[
                &sender.as_str(),
                &relay_seq,
                &lane_number(Lane::Receipt),
                &relay,
            ],
        )
        .await?;
        if ack.delivered {
            tx.execute(
                "INSERT INTO delivered (id, node) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&id, &node.as_str()],
            )
            .await?;
        }
        let size = first + leaves.len() as u64;
        notify(
            &tx,
            &[
                queued_note(sender, false),
                acked_note(node),
                sequenced_note(size),
            ],
        )
        .await?;
        tx.commit().await?;
        self.shared.show_sequenced(size);
        Ok(if leaves.is_empty() { 0 } else { first })
    }

    async fn queue_depth(&self, node: Country) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM mail WHERE node = $1",
                &[&node.as_str()],
            )
            .await?
            .get(0);
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn ack_receipt(&self, node: Country, seq: u64) -> Result<(), StoreError> {
        let Ok(seq_) = i64::try_from(seq) else {
            return Err(StoreError::NoSuchItem { node, seq });
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(item) = tx
            .query_opt(
                "DELETE FROM mail WHERE node = $1 AND seq = $2 RETURNING receipt IS NOT NULL",
                &[&node.as_str(), &seq_],
            )
            .await?
        else {
            return Err(StoreError::NoSuchItem { node, seq });
        };
        if !item.get::<_, bool>(0) {
            // Dropping the transaction rolls the delete back.
            return Err(StoreError::ReceiptRequired { node, seq });
        }
        notify(&tx, &[acked_note(node)]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn subscribe(&self, node: Country) -> Result<watch::Receiver<Wakeup>, StoreError> {
        let mut all = self
            .shared
            .wakeups
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        Ok(all
            .entry(node)
            .or_insert_with(|| watch::channel(Wakeup::default()).0)
            .subscribe())
    }
}

//! The broker's store on PostgreSQL: every concern of
//! [`crate::storage::broker`] over one database that several brokers may
//! share.
//!
//! - **Acknowledged means committed**: every connection runs with
//!   `synchronous_commit = on` (set as a start-up parameter of each
//!   session), and a method returns Ok only after its `COMMIT` did, so what
//!   it wrote is on the server's disk. Readers only ever see committed rows.
//! - **Sequencing** goes through one coordinator row, `log_head`: a write
//!   that sequences events does `UPDATE log_head SET size = size + n
//!   RETURNING` inside its own transaction, so indexes are assigned as part
//!   of the write, and the row lock, held to its commit, makes writes commit
//!   in index order. The committed `size` is thus the sequenced length with
//!   no gap below it, whichever broker wrote what.
//! - **Queue seqs** come from a counter row per node (`mail_counter`),
//!   taken the same way, after `log_head`: every writer takes `log_head`
//!   first and the counters after it in node order, so two writers never
//!   wait on each other in a cycle, and a node's seqs commit in order, as
//!   [`crate::storage::broker::lanes`] requires.
//! - **Wake-ups** travel as `NOTIFY casebridge` in the transaction of the
//!   write (delivered only if it commits). Each store holds one listening
//!   connection ([`listen`]) that fans them out to its watch channels;
//!   after a reconnect it bumps every watcher, since notifications sent
//!   while it was away are lost.
//! - **Integration** takes a transaction-scoped advisory lock, so brokers
//!   integrating at once take turns; what one has integrated the next
//!   skips.
//! - **Durability** ([`crate::storage::Durability::failed`]): a lost
//!   connection is an error of the call it broke, which the caller retries
//!   (the node resubmits, the stream reconnects); the store is not stopped
//!   by it, since a committed transaction stays committed whatever happens
//!   to the connection afterwards. It resolves only when the store can never
//!   acknowledge again: the database's schema moved past what this broker
//!   knows. A `COMMIT` whose answer is lost leaves the outcome in doubt; the
//!   caller sees an error, and a retried Submit is then either accepted or
//!   found a duplicate, as after a broker crash.

mod connect;
mod listen;
mod log;
mod mailboxes;
mod schema;
mod state;
pub mod testing;
#[cfg(test)]
mod tests;
pub mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::protocol::ids::Country;
use crate::storage::StorageError;
use crate::storage::broker::{Durability, StoreError, Wakeup};

pub use connect::{PgSettings, SettingsError};
pub use schema::SCHEMA_VERSION;

/// The channel every store of a database listens on.
const CHANNEL: &str = "casebridge";

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Storage(pg_error(&e))
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Storage(StorageError::Backend(format!(
            "no database connection: {}",
            pool_error(&e)
        )))
    }
}

/// The database's own sentence, where it gave one.
pub(crate) fn pg_error(e: &tokio_postgres::Error) -> StorageError {
    StorageError::Backend(match e.as_db_error() {
        Some(db) => format!("database: {}", db.message()),
        None => format!("database: {e}"),
    })
}

fn pool_error(e: &deadpool_postgres::PoolError) -> String {
    match e {
        deadpool_postgres::PoolError::Backend(e) => match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => {
                let mut s = e.to_string();
                let mut source = std::error::Error::source(e);
                while let Some(inner) = source {
                    s.push_str(": ");
                    s.push_str(&inner.to_string());
                    source = inner.source();
                }
                s
            }
        },
        other => other.to_string(),
    }
}

/// The broker's store on PostgreSQL.
pub struct PgStore {
    pool: deadpool_postgres::Pool,
    shared: Arc<Shared>,
    /// Dropped with the store: the listener ends.
    _closing: watch::Sender<()>,
}

/// What the listener fans out to, and what it found.
pub(crate) struct Shared {
    wakeups: Mutex<HashMap<Country, watch::Sender<Wakeup>>>,
    sequenced: watch::Sender<u64>,
    failure: watch::Sender<Option<String>>,
}

impl Shared {
    fn wake_queued(&self, node: Country, immediate: bool) {
        let all = self.wakeups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = all.get(&node) {
            tx.send_modify(|w| {
                w.queued = w.queued.wrapping_add(1);
                if immediate {
                    w.immediate = w.immediate.wrapping_add(1);
                }
            });
        }
    }

    fn wake_acked(&self, node: Country) {
        let all = self.wakeups.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = all.get(&node) {
            tx.send_modify(|w| w.acked = w.acked.wrapping_add(1));
        }
    }

    /// After a reconnect: notifications sent meanwhile are lost, so every
    /// watcher looks again.
    fn wake_all(&self) {
        let all = self.wakeups.lock().unwrap_or_else(|p| p.into_inner());
        for tx in all.values() {
            tx.send_modify(|w| {
                w.queued = w.queued.wrapping_add(1);
                w.immediate = w.immediate.wrapping_add(1);
                w.acked = w.acked.wrapping_add(1);
            });
        }
    }

    fn show_sequenced(&self, size: u64) {
        self.sequenced.send_if_modified(|n| {
            let grew = size > *n;
            *n = (*n).max(size);
            grew
        });
    }
}

impl PgStore {
    /// Connects, brings the schema up to date (refusing a database whose
    /// schema is newer than this broker knows) and starts the listener.
    pub async fn open(settings: &PgSettings) -> Result<PgStore, StoreError> {
        let pool = settings.pool()?;
        let mut client = pool.get().await?;
        schema::migrate(&mut client).await?;
        let size: i64 = client
            .query_one("SELECT size FROM log_head", &[])
            .await?
            .get(0);
        drop(client);
        let shared = Arc::new(Shared {
            wakeups: Mutex::new(HashMap::new()),
            sequenced: watch::channel(u64::try_from(size).unwrap_or(0)).0,
            failure: watch::channel(None).0,
        });
        let (closing, closed) = watch::channel(());
        let (listener, listening) =
            listen::Listener::start(settings.clone(), Arc::downgrade(&shared), closed)
                .await
                .map_err(StoreError::Storage)?;
        tokio::spawn(listener.run(listening));
        Ok(PgStore {
            pool,
            shared,
            _closing: closing,
        })
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}

#[async_trait::async_trait]
impl Durability for PgStore {
    async fn failed(&self) -> String {
        let mut rx = self.shared.failure.subscribe();
        let reason = rx
            .wait_for(Option::is_some)
            .await
            .map(|r| r.clone().unwrap_or_default());
        match reason {
            Ok(reason) => reason,
            Err(_) => std::future::pending().await,
        }
    }
}

/// A count or index as the database keeps it (BIGINT).
pub(crate) fn int(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| {
        StoreError::Storage(StorageError::Backend(format!(
            "{n} is beyond what the database stores"
        )))
    })
}

/// A count or index read back from the database.
pub(crate) fn uint(n: i64, table: &'static str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| corrupt(table, format!("negative number {n}")))
}

pub(crate) fn corrupt(table: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Storage(StorageError::Corrupt {
        tree: table,
        detail: detail.into(),
    })
}

/// Queues a notification in the transaction `tx`: sent only if it commits.
pub(crate) async fn notify(
    tx: &deadpool_postgres::Transaction<'_>,
    payloads: &[String],
) -> Result<(), StoreError> {
    if payloads.is_empty() {
        return Ok(());
    }
    tx.execute(
        "SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p",
        &[&CHANNEL, &payloads],
    )
    .await?;
    Ok(())
}

/// The notification that `node` has something new in a lane.
pub(crate) fn queued_note(node: Country, immediate: bool) -> String {
    format!("q:{}:{}", node.as_str(), if immediate { "i" } else { "-" })
}

/// The notification that `node` acknowledged an item.
pub(crate) fn acked_note(node: Country) -> String {
    format!("a:{}", node.as_str())
}

/// The notification that the log's sequenced size reached `size`.
pub(crate) fn sequenced_note(size: u64) -> String {
    format!("s:{size}")
}

//! What the sled-backed stores share: opening a data directory and group
//! commit.
//!
//! sled makes writes durable only on `flush`. Every commit path applies its
//! changes, then waits on [`GroupCommit::commit`]; writers that arrive while a
//! flush is running share the next one, so durability does not cost one
//! fsync per record.

use std::path::Path;

use tokio::sync::{mpsc, oneshot};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage: {0}")]
    Sled(#[from] sled::Error),
    #[error("storage: flush task has stopped")]
    FlusherGone,
    #[error("storage: corrupt entry in {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
}

/// Opens (or creates) a sled database in `dir`.
pub fn open_db(dir: &Path) -> Result<sled::Db, StorageError> {
    std::fs::create_dir_all(dir).map_err(|e| StorageError::Sled(sled::Error::Io(e)))?;
    Ok(sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        .open()?)
}

type Waiter = oneshot::Sender<Result<(), String>>;

/// A handle to the flush task of one database.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<Waiter>,
    flushes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl GroupCommit {
    /// Starts the flush task for `db`. It ends when every handle is dropped.
    pub fn start(db: sled::Db) -> GroupCommit {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        let flushes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = flushes.clone();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Everyone already waiting was applied before this flush
                // starts, so one flush covers them all.
                let mut batch = vec![first];
                while let Ok(w) = rx.try_recv() {
                    batch.push(w);
                }
                let result = db
                    .flush_async()
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = &result {
                    tracing::error!(error = %e, "flush failed; commits in this batch are not acknowledged");
                }
                for w in batch {
                    let _ = w.send(result.clone());
                }
            }
        });
        GroupCommit { tx, flushes }
    }

    /// How many flushes have completed; commits per flush is the batching.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Returns once everything applied before this call is on disk.
    pub async fn commit(&self) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(tx).map_err(|_| StorageError::FlusherGone)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StorageError::Sled(sled::Error::Io(std::io::Error::other(
                e,
            )))),
            Err(_) => Err(StorageError::FlusherGone),
        }
    }
}

/// Big-endian u64, so keys sort in numeric order.
pub fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Reads a big-endian u64 key or value.
pub fn read_be(b: &[u8]) -> Option<u64> {
    b.try_into().ok().map(u64::from_be_bytes)
}

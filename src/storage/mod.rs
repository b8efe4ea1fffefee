//! Storage: the traits of the seam (the broker's in [`broker`], the
//! versions in force in [`in_force`]), their backend-neutral errors, and
//! what every backend shares: private data directories and files, group
//! commit, and stopping for good when a flush fails. The backends live one
//! folder each ([`sled`], and for the broker [`postgres`]).
//!
//! sled makes writes durable only on `flush`. Every commit path applies its
//! changes, then waits on [`GroupCommit::commit`]; writers that arrive while a
//! flush is running share the next one, so durability does not cost one
//! fsync per record.
//!
//! A flush that fails is fatal. After a failed fsync the operating system
//! may have dropped the dirty pages, so a later flush that reports success
//! proves nothing about what came before it: the store refuses every later
//! commit, and [`GroupCommit::failed`] tells the daemon to stop.

pub mod broker;
pub mod files;
pub mod in_force;
pub mod migrate;
pub mod node;
pub mod postgres;
pub mod sled;

use std::future::Future;
use std::io::Write as _;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

/// What any storage backend reports, free of the engine's own types: each
/// backend converts its errors at its boundary.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The engine failed an operation (I/O, a lost connection); the text is
    /// the engine's own description.
    #[error("storage: {0}")]
    Backend(String),
    #[error("storage: flush task has stopped")]
    FlusherGone,
    #[error("storage: {0}")]
    Stopped(String),
    #[error("storage: corrupt entry in {tree}: {detail}")]
    Corrupt { tree: &'static str, detail: String },
    #[error("storage: {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// Another process holds the store's lock: a second broker or node
    /// started on the same data directory.
    #[error("the data directory {0} is in use by another running broker or node")]
    InUse(String),
}

/// Whether a store as a whole can still acknowledge anything; both
/// daemons' stores answer it.
#[async_trait::async_trait]
pub trait Durability: Send + Sync {
    /// Resolves, with the reason, once the store can make nothing durable
    /// any more (a flush failed) and acknowledges nothing; the daemon then
    /// stops. Never otherwise.
    async fn failed(&self) -> String;
}

/// Creates `dir` and any missing parents with mode 0700, and makes `dir`
/// itself 0700 if it already existed with a wider mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut p = dir;
    while !p.as_os_str().is_empty() && !p.exists() {
        missing.push(p);
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    for d in missing.iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            // Someone else made it meanwhile; its mode is fixed below.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        set_mode(d, 0o700)?;
    }
    set_mode(dir, 0o700)
}

/// Makes every directory under `dir` (and `dir`) 0700 and every file 0600.
pub fn restrict_tree(dir: &Path) -> std::io::Result<()> {
    set_mode(dir, 0o700)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            restrict_tree(&entry.path())?;
        } else if kind.is_file() {
            set_mode(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

/// Writes `bytes` to `path` so that only the owner can read it and no
/// reader ever sees half a file: a temporary file (0600) in the same
/// directory is written and synced, renamed over `path`, and the directory
/// synced so the rename survives a crash.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".casebridge-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    set_mode(tmp.path(), 0o600)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Makes a rename or a new entry in `dir` durable, where directories can
/// be synced.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// What makes applied writes durable: sled's flush in the daemons; tests
/// substitute one that fails or waits to exercise the paths around it.
pub trait Flush: Send + Sync + 'static {
    /// Makes everything applied so far durable. Takes the handle so that
    /// an implementation can let go of it before the flush ends.
    fn make_durable(self: Arc<Self>) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
}

type Waiter = oneshot::Sender<Result<(), String>>;

/// A handle to the flush task of one database.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<Waiter>,
    flushes: Arc<std::sync::atomic::AtomicU64>,
    requested: Arc<std::sync::atomic::AtomicU64>,
    failure: Arc<watch::Sender<Option<String>>>,
    // The handles own the flusher (and with it the database); the task holds
    // it weakly, so dropping the store closes the database at once, not when
    // the task next runs.
    _flusher: Arc<dyn Flush>,
    what: Arc<str>,
}

/// Why a store stops: the message a daemon exits with after the flush of
/// `what` failed with `error`.
pub fn flush_failure(what: &str, error: &str) -> String {
    stop_message(&format!("flush of {what}"), error)
}

/// Why a store stops after sled failed to write to `what`: sled keeps such
/// an error and fails every later write and flush with it.
pub fn write_failure(what: &str, error: &str) -> String {
    stop_message(&format!("writing to {what}"), error)
}

fn stop_message(action: &str, error: &str) -> String {
    format!(
        "{action} failed: {error}; stopping: nothing more is acknowledged, and what was not \
         flushed may be lost. Check the disk, then restart to resume from what is on disk"
    )
}

impl GroupCommit {
    /// Starts the flush task; `what` names the store in messages (its
    /// directory). The task ends when every handle is dropped.
    pub fn start(flusher: Arc<dyn Flush>, what: String) -> GroupCommit {
        let (tx, mut rx) = mpsc::unbounded_channel::<Waiter>();
        let flushes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failure = Arc::new(watch::channel(None).0);
        let counter = flushes.clone();
        let failed = failure.clone();
        let weak = Arc::downgrade(&flusher);
        let name: Arc<str> = what.as_str().into();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Everyone already waiting was applied before this flush
                // starts, so one flush covers them all.
                let mut batch = vec![first];
                while let Ok(w) = rx.try_recv() {
                    batch.push(w);
                }
                let stopped = failed.borrow().clone();
                let result = match stopped {
                    // Never flush again after a failure: a later success
                    // would not cover what the failed one lost.
                    Some(reason) => Err(reason),
                    None => {
                        let r = match weak.upgrade() {
                            Some(flusher) => flusher.make_durable().await,
                            None => Err("the store was closed".to_string()),
                        };
                        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        r.map_err(|e| {
                            let reason = flush_failure(&what, &e);
                            tracing::error!(store = %what, error = %e, "flush failed; the store stops acknowledging");
                            failed.send_replace(Some(reason.clone()));
                            reason
                        })
                    }
                };
                for w in batch {
                    let _ = w.send(result.clone());
                }
            }
        });
        GroupCommit {
            tx,
            flushes,
            requested: Default::default(),
            failure,
            _flusher: flusher,
            what: name,
        }
    }

    /// How many flushes have completed; commits per flush is the batching.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many commits were asked for; with [`GroupCommit::flushes`], how
    /// well they were batched.
    pub fn requested(&self) -> u64 {
        self.requested.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Returns once everything applied before this call is on disk.
    pub async fn commit(&self) -> Result<(), StorageError> {
        let (tx, rx) = oneshot::channel();
        self.requested
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.tx.send(tx).map_err(|_| StorageError::FlusherGone)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(StorageError::Stopped(reason)),
            Err(_) => Err(StorageError::FlusherGone),
        }
    }

    /// Passes `e` on, unless it is an I/O error of the database: the engine
    /// failed to write (sled keeps that error and fails every later write and
    /// flush), so the store stops as for a failed flush, and the error says so.
    pub fn stop_on_io(&self, e: StorageError) -> StorageError {
        let StorageError::Io { source: io, .. } = &e else {
            return e;
        };
        let reason = write_failure(&self.what, &io.to_string());
        self.failure.send_if_modified(|f| {
            if f.is_some() {
                return false;
            }
            tracing::error!(store = %self.what, error = %io, "write failed; the store stops acknowledging");
            *f = Some(reason.clone());
            true
        });
        StorageError::Stopped(self.failure.borrow().clone().unwrap_or(reason))
    }

    /// Resolves, with the reason, once a flush has failed; never otherwise.
    pub async fn failed(&self) -> String {
        let mut rx = self.failure.subscribe();
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

/// Big-endian u64, so keys sort in numeric order.
pub fn be(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Reads a big-endian u64 key or value.
pub fn read_be(b: &[u8]) -> Option<u64> {
    b.try_into().ok().map(u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_and_directories() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        create_private_dir(&deep).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            let mode = std::fs::metadata(tmp.path().join(d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{d}");
        }
        // An existing directory that is too open is tightened.
        set_mode(&deep, 0o755).unwrap();
        create_private_dir(&deep).unwrap();
        let mode = std::fs::metadata(&deep).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        let f = deep.join("file");
        std::fs::write(&f, b"old").unwrap();
        set_mode(&f, 0o644).unwrap();
        write_private(&f, b"new").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"new");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "replaced, not rewritten in place");
        let left: Vec<_> = std::fs::read_dir(&deep).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
    }
}

//! The embedded backend: one sled database per process, flushed by group
//! commit before anything is acknowledged.

pub mod broker;
pub mod node;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use super::{Flush, StorageError, create_private_dir, restrict_tree, set_mode};

impl From<::sled::Error> for StorageError {
    fn from(e: ::sled::Error) -> Self {
        match e {
            ::sled::Error::Io(source) => StorageError::Io {
                path: "sled".to_string(),
                source,
            },
            other => StorageError::Backend(other.to_string()),
        }
    }
}

/// The page cache a store keeps unless configured otherwise, in MiB. sled's
/// own default (1 GiB) made a daemon's memory grow with its backlog; the
/// cache bounds what sled keeps in memory, so it bounds the daemon's
/// resident size (see `[storage] cache_mib` in deploy/broker.example.toml).
pub const DEFAULT_CACHE_MIB: u64 = 64;

/// Opens (or creates) a sled database in `dir` with the default page
/// cache ([`DEFAULT_CACHE_MIB`]).
pub fn open_db(dir: &Path) -> Result<::sled::Db, StorageError> {
    open_db_with_cache(dir, DEFAULT_CACHE_MIB)
}

/// Opens (or creates) a sled database in `dir` whose page cache holds at
/// most `cache_mib` MiB. The directory is made 0700 and every file sled
/// created in it 0600, whatever the umask; files sled creates later are
/// inside the private directory.
pub fn open_db_with_cache(dir: &Path, cache_mib: u64) -> Result<::sled::Db, StorageError> {
    let io = |source| StorageError::Io {
        path: dir.display().to_string(),
        source,
    };
    create_private_dir(dir).map_err(io)?;
    let config = ::sled::Config::new()
        .path(dir)
        .mode(::sled::Mode::HighThroughput)
        .cache_capacity(cache_mib.saturating_mul(1024 * 1024));
    // A store closed in this process lets go of its lock when its last
    // flush has ended, a moment after its last handle is dropped: a reopen
    // right after (a restart in tests, the bench) waits that moment out. A
    // lock held by another process is still held after it.
    let started = std::time::Instant::now();
    let db = loop {
        match config.open() {
            Err(::sled::Error::Io(e)) if locked(&e) && started.elapsed() < LOCK_WAIT => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(::sled::Error::Io(e)) if locked(&e) => {
                return Err(StorageError::InUse(dir.display().to_string()));
            }
            r => break r.map_err(StorageError::from)?,
        }
    };
    restrict_store(dir).map_err(io)?;
    Ok(db)
}

/// Whether sled failed to open because another process holds the lock on
/// its database file. sled reports it as an I/O error of its own wording
/// around the operating system's (EWOULDBLOCK from `flock`).
fn locked(e: &std::io::Error) -> bool {
    e.to_string().contains("could not acquire lock")
}

/// How long an open waits for a store just closed in this process to let go
/// of its lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Makes sled's own files in `dir` private: `conf`, `db`, snapshots and the
/// `blobs` directory. Nothing else in `dir` is touched, so a data directory
/// configured by mistake as a shared one is not rewritten wholesale.
fn restrict_store(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry.file_type()?;
        if kind.is_file() && (name == "conf" || name == "db" || name.starts_with("snap.")) {
            set_mode(&entry.path(), 0o600)?;
        } else if kind.is_dir() && name == "blobs" {
            restrict_tree(&entry.path())?;
        }
    }
    Ok(())
}

impl Flush for ::sled::Db {
    fn make_durable(
        self: std::sync::Arc<Self>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        // The flush starts here, on a thread that holds the database only
        // until it is done; the future holds none of it. So a store whose
        // handles are all dropped closes (and lets go of its lock) as soon
        // as its last flush ends, whether or not the flush task is polled.
        let db = ::sled::Db::clone(&self);
        drop(self);
        let flush = tokio::task::spawn_blocking(move || db.flush());
        Box::pin(async move {
            match flush.await {
                Ok(r) => r.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(format!("the flush task failed: {e}")),
            }
        })
    }
}

/// A flush for tests that tells when it starts, then waits for a permit
/// before flushing for real, or fails when told to: it holds a store between
/// applying a write and making it durable.
#[cfg(test)]
pub(crate) struct GatedFlush {
    db: ::sled::Db,
    started: tokio::sync::mpsc::UnboundedSender<()>,
    pub(crate) gate: tokio::sync::Semaphore,
    pub(crate) fail: std::sync::atomic::AtomicBool,
}

#[cfg(test)]
impl GatedFlush {
    /// A closed gate over `db`, and the channel that tells each flush start.
    pub(crate) fn over(
        db: ::sled::Db,
    ) -> (
        std::sync::Arc<GatedFlush>,
        tokio::sync::mpsc::UnboundedReceiver<()>,
    ) {
        let (started, rx) = tokio::sync::mpsc::unbounded_channel();
        let f = GatedFlush {
            db,
            started,
            gate: tokio::sync::Semaphore::new(0),
            fail: Default::default(),
        };
        (std::sync::Arc::new(f), rx)
    }
}

#[cfg(test)]
impl Flush for GatedFlush {
    fn make_durable(
        self: std::sync::Arc<Self>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        Box::pin(async move {
            let _ = self.started.send(());
            self.gate
                .acquire()
                .await
                .map_err(|e| e.to_string())?
                .forget();
            if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
                return Err("No space left on device (os error 28)".into());
            }
            Flush::make_durable(std::sync::Arc::new(self.db.clone())).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{GroupCommit, flush_failure};
    use std::sync::Arc;

    /// A flush that fails the `fail_at`-th time (counting from 1) and
    /// passes through to sled otherwise.
    struct FailingFlush {
        db: ::sled::Db,
        calls: std::sync::atomic::AtomicU64,
        fail_at: u64,
    }

    impl Flush for FailingFlush {
        fn make_durable(
            self: Arc<Self>,
        ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                if n == self.fail_at {
                    return Err("Input/output error (os error 5)".into());
                }
                Flush::make_durable(Arc::new(self.db.clone())).await
            })
        }
    }

    #[tokio::test]
    async fn a_failed_flush_fails_that_commit_and_every_later_one_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let db = open_db(&dir.path().join("db")).unwrap();
        let flusher = Arc::new(FailingFlush {
            db: db.clone(),
            calls: Default::default(),
            fail_at: 2,
        });
        let gc = GroupCommit::start(flusher.clone(), "the test store".into());
        db.insert(b"a", b"1").unwrap();
        gc.commit().await.unwrap();
        db.insert(b"b", b"2").unwrap();
        let err = gc.commit().await.unwrap_err();
        assert!(
            matches!(&err, StorageError::Stopped(m) if m.contains("flush of the test store failed: Input/output error")),
            "{err}"
        );
        assert_eq!(
            gc.failed().await,
            flush_failure("the test store", "Input/output error (os error 5)")
        );
        // The next flush would succeed, but the store never answers OK again
        // and does not even try.
        db.insert(b"c", b"3").unwrap();
        assert!(matches!(gc.commit().await, Err(StorageError::Stopped(_))));
        assert_eq!(
            flusher.calls.load(std::sync::atomic::Ordering::SeqCst),
            2,
            "no flush after the failed one"
        );
    }

    #[test]
    fn a_store_directory_and_sleds_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data/store");
        let db = open_db(&dir).unwrap();
        db.insert(b"k", b"v").unwrap();
        db.flush().unwrap();
        drop(db);
        assert_eq!(mode(&tmp.path().join("data")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        // An existing store that was left open is tightened at open; other
        // files in its directory are none of its business.
        set_mode(&dir, 0o755).unwrap();
        set_mode(&dir.join("db"), 0o644).unwrap();
        std::fs::write(dir.join("notes.txt"), b"x").unwrap();
        set_mode(&dir.join("notes.txt"), 0o644).unwrap();
        let db = open_db(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        for f in ["conf", "db", "blobs"] {
            let want = if f == "blobs" { 0o700 } else { 0o600 };
            assert_eq!(mode(&dir.join(f)), want, "{f}");
        }
        assert_eq!(mode(&dir.join("notes.txt")), 0o644);
        drop(db);
    }
}

//! The auditor's state: the last checkpoint and the leaf hashes it saved.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};

use crate::protocol::merkle::{self, Hash};
use crate::protocol::note::{self, Checkpoint};

use super::*;

// ---- the auditor's state ------------------------------------------------------

/// What this auditor verified last time.
#[derive(Debug, Clone)]
pub struct SavedState {
    pub note: Vec<u8>,
    pub checkpoint: Checkpoint,
    /// Exactly `checkpoint.size()` hashes whose root is the checkpoint's.
    pub leaf_hashes: Vec<Hash>,
}

/// The auditor's state directory: the last verified checkpoint (signed note,
/// as served) and the leaf hashes it covers, 32 bytes each, append-only.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub(super) dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn damaged(&self, what: String) -> anyhow::Error {
        anyhow!(
            "the saved state in {} is damaged: {what}; move the directory away to verify the \
             log from scratch",
            self.dir.display()
        )
    }

    /// The saved state, if any. The checkpoint was verified when it was
    /// saved and is only parsed here, so that a later rotation of the log key
    /// does not lose the history; its origin must be `origin`, and the leaf
    /// hashes must lead to its root.
    pub fn load(&self, origin: &str) -> anyhow::Result<Option<SavedState>> {
        let cp_path = self.dir.join(LAST_CHECKPOINT_FILE);
        let note_bytes = match std::fs::read(&cp_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", cp_path.display())),
        };
        let parsed = note::Note::parse(&note_bytes)
            .map_err(|e| self.damaged(format!("{LAST_CHECKPOINT_FILE}: {e}")))?;
        let checkpoint = Checkpoint::parse(parsed.text())
            .map_err(|e| self.damaged(format!("{LAST_CHECKPOINT_FILE}: {e}")))?;
        if checkpoint.origin() != origin {
            bail!(
                "the checkpoint saved in {} is of the log {}, the directory names {}",
                cp_path.display(),
                crate::protocol::bounds::quoted(checkpoint.origin()),
                crate::protocol::bounds::quoted(origin)
            );
        }
        let hashes_path = self.dir.join(LEAF_HASHES_FILE);
        let raw = match std::fs::read(&hashes_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", hashes_path.display())),
        };
        if raw.len() % merkle::HASH_LEN != 0 {
            return Err(self.damaged(format!(
                "{LEAF_HASHES_FILE} is {} bytes, not a multiple of 32",
                raw.len()
            )));
        }
        let size = checkpoint.size();
        let have = (raw.len() / merkle::HASH_LEN) as u64;
        if have < size {
            return Err(self.damaged(format!(
                "{LEAF_HASHES_FILE} holds {have} hashes, the saved checkpoint has size {size}"
            )));
        }
        // Hashes beyond the checkpoint are left over from an interrupted
        // save; they were never verified and are dropped at the next one.
        let leaf_hashes: Vec<Hash> = raw
            .chunks_exact(merkle::HASH_LEN)
            .take(size as usize)
            .map(|c| {
                let mut h = [0u8; merkle::HASH_LEN];
                h.copy_from_slice(c);
                h
            })
            .collect();
        if merkle::root_from_leaves(&leaf_hashes) != *checkpoint.root_hash() {
            return Err(self.damaged(format!(
                "the {size} saved leaf hashes do not lead to the saved checkpoint's root"
            )));
        }
        Ok(Some(SavedState {
            note: note_bytes,
            checkpoint,
            leaf_hashes,
        }))
    }

    /// Saves a verified checkpoint and its leaf hashes. `kept` hashes were
    /// saved before and are identical; only the rest is appended. The hashes
    /// are made durable before the checkpoint is replaced, so an interrupted
    /// save leaves the previous state readable.
    pub fn save(&self, note_bytes: &[u8], leaf_hashes: &[Hash], kept: u64) -> anyhow::Result<()> {
        crate::storage::create_private_dir(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let hashes_path = self.dir.join(LEAF_HASHES_FILE);
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).truncate(false).read(true).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut file = opts
            .open(&hashes_path)
            .with_context(|| format!("opening {}", hashes_path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restricting {}", hashes_path.display()))?;
        }
        let kept = kept.min(leaf_hashes.len() as u64);
        let mut write = || -> std::io::Result<()> {
            use std::io::{Seek as _, SeekFrom};
            file.set_len(kept * merkle::HASH_LEN as u64)?;
            file.seek(SeekFrom::End(0))?;
            let mut buf = Vec::with_capacity((leaf_hashes.len() - kept as usize) * 32);
            for h in &leaf_hashes[kept as usize..] {
                buf.extend_from_slice(h);
            }
            file.write_all(&buf)?;
            file.sync_all()
        };
        write().with_context(|| format!("writing {}", hashes_path.display()))?;
        let cp_path = self.dir.join(LAST_CHECKPOINT_FILE);
        crate::storage::write_private(&cp_path, note_bytes)
            .with_context(|| format!("writing {}", cp_path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::audit::test_support::*;

    #[test]
    fn state_round_trips_appends_and_detects_damage() {
        let tmp = tempfile::tempdir().expect("tmp");
        let state = StateDir::new(tmp.path().join("state"));
        let origin = "casebridge.test/audit-log";
        assert!(state.load(origin).expect("empty").is_none());

        let first = leaves(5, "e");
        state
            .save(&signed_checkpoint(origin, &first), &first, 0)
            .expect("save");
        let s = state.load(origin).expect("load").expect("state");
        assert_eq!(s.checkpoint.size(), 5);
        assert_eq!(s.leaf_hashes, first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(state.path()), 0o700);
            for f in [LEAF_HASHES_FILE, LAST_CHECKPOINT_FILE] {
                assert_eq!(mode(&state.path().join(f)), 0o600, "{f}");
            }
        }

        let second = leaves(9, "e");
        state
            .save(&signed_checkpoint(origin, &second), &second, 5)
            .expect("save");
        let s = state.load(origin).expect("load").expect("state");
        assert_eq!(s.leaf_hashes, second);
        let raw = std::fs::read(state.path().join(LEAF_HASHES_FILE)).expect("read");
        assert_eq!(raw.len(), 9 * 32);

        // Another log's state is refused.
        assert!(state.load("elsewhere/audit-log").is_err());

        // Leftover hashes from an interrupted save are tolerated.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(state.path().join(LEAF_HASHES_FILE))
            .expect("open");
        f.write_all(&[7u8; 32]).expect("write");
        drop(f);
        assert_eq!(
            state
                .load(origin)
                .expect("load")
                .expect("state")
                .leaf_hashes
                .len(),
            9
        );

        // A flipped bit in a saved hash is damage.
        let mut raw = std::fs::read(state.path().join(LEAF_HASHES_FILE)).expect("read");
        raw[40] ^= 1;
        std::fs::write(state.path().join(LEAF_HASHES_FILE), &raw).expect("write");
        let err = state.load(origin).expect_err("damaged").to_string();
        assert!(err.contains("damaged"), "{err}");
        raw.truncate(100);
        std::fs::write(state.path().join(LEAF_HASHES_FILE), &raw).expect("write");
        assert!(state.load(origin).is_err());
    }
}

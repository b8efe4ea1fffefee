//! The versions in force, kept across restarts: the directory's version and
//! digest, and the newest version and digest of every policy bundle that was
//! ever in force. The broker and each node keep them in their stores and
//! refuse, at start, a directory or bundle older than what was in force, or
//! changed without a new version; otherwise an older file put back would
//! bring a revoked node or a withdrawn policy back to life.
//!
//! The comparisons are the ones a running daemon makes on a live policy
//! reload ([`crate::protocol::policy::check_versions`]) and on a new directory
//! ([`DirectoryVersion::check_successor`]); this module only keeps their
//! inputs in the store.

use std::path::Path;

use crate::protocol::directory::{Directory, DirectoryError, DirectoryVersion};
use crate::protocol::policy::{BundleInfo, Owner};
use crate::storage::{StorageError, be, read_be};

/// Where a daemon keeps the versions in force: the broker's store and the
/// node's both do, so the start-up check and the policy reload are written
/// once against this.
#[async_trait::async_trait]
pub trait VersionsInForce: Send + Sync {
    /// The directory and policy bundle versions recorded as in force.
    async fn in_force(&self) -> Result<InForce, StorageError>;
    /// Records the directory and policy bundle versions in force, durably
    /// before returning Ok. A recorded version never goes down: an entry is
    /// written only if it [`raises`] what is stored.
    async fn put_in_force(&self, in_force: &InForce) -> Result<(), StorageError>;
}

/// A directory file refused at start because it goes back from the one in
/// force.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {why}; refusing to start")]
pub struct DirectoryRefused {
    pub file: String,
    pub why: DirectoryError,
}

/// Every key this module writes starts with this, in the store's `meta`
/// tree.
pub const PREFIX: &[u8] = b"in_force/";
const DIRECTORY_KEY: &[u8] = b"in_force/directory";
const BUNDLE_PREFIX: &[u8] = b"in_force/bundle/";

/// What was in force when the daemon last ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InForce {
    pub directory: Option<DirectoryVersion>,
    /// The newest version of every bundle ever in force, by owner.
    pub bundles: Vec<BundleInfo>,
}

fn encode(version: u64, digest: &[u8; 32]) -> Vec<u8> {
    let mut v = be(version).to_vec();
    v.extend_from_slice(digest);
    v
}

fn decode(v: &[u8]) -> Option<(u64, [u8; 32])> {
    if v.len() != 40 {
        return None;
    }
    Some((read_be(&v[..8])?, v[8..].try_into().ok()?))
}

/// Whether the stored value `new` may replace `stored` under the same key:
/// only a newer version does, so that the recorded versions only ever go up,
/// whatever order concurrent writers reach the store in.
pub fn raises(stored: Option<&[u8]>, new: &[u8]) -> bool {
    match (stored.and_then(decode), decode(new)) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some((old, _)), Some((new, _))) => new > old,
    }
}

impl InForce {
    /// The key-value pairs to store, each under its own key; write one only
    /// if it [`raises`] what is stored.
    pub fn entries(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        if let Some(d) = &self.directory {
            out.push((DIRECTORY_KEY.to_vec(), encode(d.version, &d.digest)));
        }
        for b in &self.bundles {
            let mut k = BUNDLE_PREFIX.to_vec();
            k.extend_from_slice(b.owner.to_string().as_bytes());
            out.push((k, encode(b.version, &b.digest)));
        }
        out
    }

    /// Refuses `directory`, read from `file`, if it is older than the
    /// directory in force or changed without a new version.
    pub fn check_directory(
        &self,
        directory: &Directory,
        file: &Path,
    ) -> Result<(), DirectoryRefused> {
        match &self.directory {
            Some(in_force) => in_force
                .check_successor(directory)
                .map_err(|why| DirectoryRefused {
                    file: file.display().to_string(),
                    why,
                }),
            None => Ok(()),
        }
    }

    /// Reads back what [`InForce::entries`] wrote; a damaged entry is an
    /// error naming its key, never a silent reset of the floor.
    pub fn from_entries(
        entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<InForce, String> {
        let mut out = InForce::default();
        for (k, v) in entries {
            let name = String::from_utf8_lossy(&k).into_owned();
            let (version, digest) =
                decode(&v).ok_or_else(|| format!("{name}: not a version and a digest"))?;
            if k == DIRECTORY_KEY {
                out.directory = Some(DirectoryVersion { version, digest });
            } else if let Some(owner) = k.strip_prefix(BUNDLE_PREFIX) {
                let owner: Owner = std::str::from_utf8(owner)
                    .ok()
                    .and_then(|o| o.parse().ok())
                    .ok_or_else(|| format!("{name}: not a bundle owner"))?;
                out.bundles.push(BundleInfo {
                    owner,
                    version,
                    digest,
                });
            } else {
                return Err(format!("{name}: unknown entry"));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let in_force = InForce {
            directory: Some(DirectoryVersion {
                version: 7,
                digest: [1; 32],
            }),
            bundles: vec![
                BundleInfo {
                    owner: Owner::Framework,
                    version: 2,
                    digest: [2; 32],
                },
                BundleInfo {
                    owner: Owner::Agency("HR/police".parse().unwrap()),
                    version: 3,
                    digest: [3; 32],
                },
            ],
        };
        let mut entries = in_force.entries();
        entries.sort();
        let mut back = InForce::from_entries(entries.clone()).unwrap();
        back.bundles.sort_by_key(|b| b.owner.to_string());
        let mut want = in_force.clone();
        want.bundles.sort_by_key(|b| b.owner.to_string());
        assert_eq!(back, want);

        let mut short = entries.clone();
        short[0].1.pop();
        assert!(InForce::from_entries(short).is_err());
        // Recorded versions only go up.
        let v = |n| encode(n, &[n as u8; 32]);
        assert!(raises(None, &v(1)));
        assert!(raises(Some(&v(1)), &v(2)));
        assert!(!raises(Some(&v(2)), &v(1)));
        assert!(!raises(Some(&v(2)), &encode(2, &[9; 32])));
        assert!(!raises(None, b"short"));

        let mut bad_owner = entries;
        bad_owner[0].0 = b"in_force/bundle/not an owner".to_vec();
        assert!(InForce::from_entries(bad_owner).is_err());
    }
}

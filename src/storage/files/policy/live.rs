//! The policy set in force in a running broker or node, replaced while it
//! runs when its bundles change on disk.
//!
//! A new set takes effect only if every bundle in it loads (syntax, schema,
//! scope, signature) and no bundle goes back in version; otherwise the set
//! in force stays, and the refusal says which file, line and why.
//!
//! "Goes back" is measured against the newest version of each bundle ever
//! in force, before a restart too: the daemon hands in the versions its
//! store recorded, and records the new floor before a new set takes effect.
//!
//! Compiling and verifying a set is costly (Cedar parsing and validation,
//! certificate chains, signatures), while reading its few small files is
//! not. So a reload reads the tree, fingerprints what it read, and compiles
//! and verifies only if the fingerprint or the directory differs from the
//! set in force, or the last full check is older than
//! [`RECHECK_UNCHANGED_MS`] (a signer's certificate may have expired since).
//! After a refusal every reload checks in full again, as a refused tree may
//! load later (a certificate that becomes valid, a store that recovers).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::read_set;
use crate::protocol::directory::Directory;
use crate::protocol::policy::{
    BundleInfo, Policies, PolicyError, bundle_list, check_versions, raise_floor,
};
use crate::protocol::proto::v1;

/// What a reload found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The bundles on disk are the set in force.
    Unchanged,
    /// A new set is in force.
    Replaced {
        previous: String,
        hash: String,
        bundles: String,
    },
    /// The new set was refused; the previous one stays in force. `first`
    /// is false when this exact refusal was reported before.
    Refused { reason: String, first: bool },
}

/// How long a tree that did not change is trusted without a full check.
pub const RECHECK_UNCHANGED_MS: i64 = 60 * 60 * 1000;

/// The tree behind the set in force, as last checked in full.
struct Checked {
    /// [`crate::protocol::policy`]'s fingerprint of the files as read.
    fingerprint: [u8; 32],
    /// The digest of the directory the set was checked against.
    directory: Vec<u8>,
    at_ms: i64,
}

/// A policy set in force, and where its bundles live.
pub struct LivePolicies {
    dir: Option<PathBuf>,
    directory_key: [u8; 32],
    current: RwLock<Policies>,
    /// The files of the set in force, as the broker serves them to nodes.
    served: RwLock<Arc<v1::PolicySet>>,
    /// The newest version of every bundle ever in force; no set goes below.
    floor: Mutex<Vec<BundleInfo>>,
    last_refusal: Mutex<Option<String>>,
    /// What the set in force was loaded from; `None` after a refusal.
    checked: Mutex<Option<Checked>>,
    /// How many times a tree was compiled and verified in full.
    full_checks: AtomicU64,
}

impl LivePolicies {
    /// Loads the set in `dir` at `now_ms`; fails if any bundle fails, or
    /// goes back from the versions `in_force` (as the store recorded them).
    pub fn load(
        dir: &Path,
        directory: &Directory,
        directory_key: [u8; 32],
        in_force: &[BundleInfo],
        now_ms: i64,
    ) -> Result<LivePolicies, PolicyError> {
        let raw = read_set(dir);
        let fingerprint = raw.fingerprint();
        let files = super::distributed::set_files(&raw);
        let current = Policies::from_set(raw, directory, &directory_key, now_ms)?;
        check_versions(in_force, &current.bundles(), Some(dir))?;
        let floor = raise_floor(in_force, &current.bundles());
        Ok(LivePolicies {
            dir: Some(dir.to_path_buf()),
            directory_key,
            served: RwLock::new(Arc::new(v1::PolicySet {
                hash: current.hash().to_string(),
                bundles: files,
            })),
            current: RwLock::new(current),
            floor: Mutex::new(floor),
            last_refusal: Mutex::new(None),
            checked: Mutex::new(Some(Checked {
                fingerprint,
                directory: directory.digest(),
                at_ms: now_ms,
            })),
            full_checks: AtomicU64::new(1),
        })
    }

    /// A set that never changes, for tests and tools.
    pub fn fixed(policies: Policies) -> LivePolicies {
        LivePolicies {
            dir: None,
            directory_key: [0; 32],
            served: RwLock::new(Arc::new(v1::PolicySet {
                hash: policies.hash().to_string(),
                bundles: Vec::new(),
            })),
            current: RwLock::new(policies),
            floor: Mutex::new(Vec::new()),
            last_refusal: Mutex::new(None),
            checked: Mutex::new(None),
            full_checks: AtomicU64::new(0),
        }
    }

    /// How many times a policy tree was compiled and verified in full, the
    /// first load included; a reload of an unchanged tree does not count.
    pub fn full_checks(&self) -> u64 {
        self.full_checks.load(Ordering::Relaxed)
    }

    /// The newest version of every bundle ever in force, to record.
    pub fn in_force(&self) -> Vec<BundleInfo> {
        self.floor.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The set in force.
    pub fn current(&self) -> Policies {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The files of the set in force, with its hash.
    pub fn served(&self) -> Arc<v1::PolicySet> {
        self.served
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Where the bundles live; None for a fixed set.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Loads the set in `dir` as a reload would, without putting it in
    /// force: its hash if every bundle loads against `directory` at `now_ms`
    /// and none goes back from the versions in force, or why not.
    pub fn check_candidate(
        &self,
        dir: &Path,
        directory: &Directory,
        now_ms: i64,
    ) -> Result<String, String> {
        let next = Policies::from_set(read_set(dir), directory, &self.directory_key, now_ms)
            .map_err(|e| e.to_string())?;
        check_versions(&self.in_force(), &next.bundles(), Some(dir)).map_err(|e| e.to_string())?;
        Ok(next.hash().to_string())
    }

    /// Reads the bundles again (certificates checked at `now_ms`) and puts
    /// them in force if they load and do
    /// not roll back a version. A set that would replace the one in force
    /// is first handed to `record` with the new floor of versions; it takes
    /// effect only once that succeeded, so a crash can never leave a set in
    /// force whose versions the store does not hold. Files that read the
    /// same as those of the set in force are not compiled again (see the
    /// module's documentation).
    pub async fn reload<F, Fut>(&self, directory: &Directory, now_ms: i64, record: F) -> Reload
    where
        F: FnOnce(Vec<BundleInfo>) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let Some(dir) = &self.dir else {
            return Reload::Unchanged;
        };
        let raw = read_set(dir);
        let seen = Checked {
            fingerprint: raw.fingerprint(),
            directory: directory.digest(),
            at_ms: now_ms,
        };
        if self.is_in_force(&seen) {
            return Reload::Unchanged;
        }
        self.full_checks.fetch_add(1, Ordering::Relaxed);
        let current = self.current();
        let floor = self.in_force();
        let files = super::distributed::set_files(&raw);
        let next = Policies::from_set(raw, directory, &self.directory_key, now_ms)
            .and_then(|next| check_versions(&floor, &next.bundles(), Some(dir)).map(|()| next));
        let next = match next {
            Ok(next) if next.hash() == current.hash() => {
                *self.last_refusal.lock().unwrap_or_else(|p| p.into_inner()) = None;
                *self.checked.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
                return Reload::Unchanged;
            }
            Ok(next) => next,
            Err(e) => return self.refused(e.to_string()),
        };
        let raised = raise_floor(&floor, &next.bundles());
        if let Err(e) = record(raised.clone()).await {
            return self.refused(format!("could not record the versions in force: {e}"));
        }
        let outcome = Reload::Replaced {
            previous: current.hash().to_string(),
            hash: next.hash().to_string(),
            bundles: bundle_list(&next),
        };
        *self.floor.lock().unwrap_or_else(|p| p.into_inner()) = raised;
        *self.served.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(v1::PolicySet {
            hash: next.hash().to_string(),
            bundles: files,
        });
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        *self.last_refusal.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *self.checked.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
        outcome
    }

    /// Whether `seen` reads as the tree of the set in force, against the
    /// same directory, checked in full recently enough.
    fn is_in_force(&self, seen: &Checked) -> bool {
        let checked = self.checked.lock().unwrap_or_else(|p| p.into_inner());
        checked.as_ref().is_some_and(|c| {
            c.fingerprint == seen.fingerprint
                && c.directory == seen.directory
                && (c.at_ms..c.at_ms.saturating_add(RECHECK_UNCHANGED_MS)).contains(&seen.at_ms)
        })
    }

    fn refused(&self, reason: String) -> Reload {
        *self.checked.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let mut last = self.last_refusal.lock().unwrap_or_else(|p| p.into_inner());
        let first = last.as_deref() != Some(reason.as_str());
        *last = Some(reason.clone());
        Reload::Refused { reason, first }
    }
}

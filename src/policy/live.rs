//! The policy set in force in a running broker or node, replaced while it
//! runs when its bundles change on disk.
//!
//! A new set takes effect only if every bundle in it loads (syntax, schema,
//! scope, signature) and no bundle goes back in version; otherwise the set
//! in force stays, and the refusal says which file, line and why.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use super::{Policies, PolicyError};
use crate::directory::Directory;

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

/// A policy set in force, and where its bundles live.
pub struct LivePolicies {
    dir: Option<PathBuf>,
    directory_key: [u8; 32],
    current: RwLock<Policies>,
    last_refusal: Mutex<Option<String>>,
}

/// One line naming every bundle of a set with its version.
pub fn bundle_list(p: &Policies) -> String {
    p.bundles()
        .iter()
        .map(|b| format!("{} v{}", b.owner, b.version))
        .collect::<Vec<_>>()
        .join(", ")
}

impl LivePolicies {
    /// Loads the set in `dir`; fails if any bundle fails.
    pub fn load(
        dir: &Path,
        directory: &Directory,
        directory_key: [u8; 32],
    ) -> Result<LivePolicies, PolicyError> {
        let current = Policies::load(dir, directory, &directory_key)?;
        Ok(LivePolicies {
            dir: Some(dir.to_path_buf()),
            directory_key,
            current: RwLock::new(current),
            last_refusal: Mutex::new(None),
        })
    }

    /// A set that never changes, for tests and tools.
    pub fn fixed(policies: Policies) -> LivePolicies {
        LivePolicies {
            dir: None,
            directory_key: [0; 32],
            current: RwLock::new(policies),
            last_refusal: Mutex::new(None),
        }
    }

    /// The set in force.
    pub fn current(&self) -> Policies {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the bundles again and puts them in force if they load and do
    /// not roll back a version.
    pub fn reload(&self, directory: &Directory) -> Reload {
        let Some(dir) = &self.dir else {
            return Reload::Unchanged;
        };
        let current = self.current();
        let next = Policies::load(dir, directory, &self.directory_key)
            .and_then(|next| current.check_successor(&next).map(|()| next));
        match next {
            Ok(next) if next.hash() == current.hash() => {
                *self.last_refusal.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Reload::Unchanged
            }
            Ok(next) => {
                let outcome = Reload::Replaced {
                    previous: current.hash().to_string(),
                    hash: next.hash().to_string(),
                    bundles: bundle_list(&next),
                };
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
                *self.last_refusal.lock().unwrap_or_else(|p| p.into_inner()) = None;
                outcome
            }
            Err(e) => {
                let reason = e.to_string();
                let mut last = self.last_refusal.lock().unwrap_or_else(|p| p.into_inner());
                let first = last.as_deref() != Some(reason.as_str());
                *last = Some(reason.clone());
                Reload::Refused { reason, first }
            }
        }
    }
}

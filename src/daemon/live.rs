//! The directory distributed while the daemons run. The broker reads its
//! directory file again on every refresh; a node fetches the broker's
//! directory (and policy set) as often. Either way, what is offered is put
//! in force only if it verifies against the pinned directory key and is not
//! older than the directory in force, nor the same version with other
//! content: a broker cannot roll a node back, and an older file put back
//! cannot bring a revoked party back to life. The new version is recorded
//! as the floor in the daemon's store before it takes effect, so a restart
//! never goes below it either.
//!
//! Every call that consults the directory takes the one in force at that
//! moment ([`DirectorySlot::current`]), so a revocation applies to the next
//! call after the swap.

use std::sync::{Arc, RwLock};

use crate::protocol::directory::{Directory, DirectoryVersion};
use crate::storage::StorageError;
use crate::storage::in_force::{InForce, VersionsInForce};

/// Largest signed directory a node or auditor accepts from the broker.
pub const MAX_DIRECTORY_BYTES: usize = 16 << 20;

/// What became of a directory offered to a daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// It is the directory in force.
    Same,
    /// It is in force now, in place of `previous`.
    Applied {
        previous: DirectoryVersion,
        now: DirectoryVersion,
    },
    /// It was refused; the directory in force stays. `offered` is the
    /// refused directory's version, when it could be read at all.
    Refused {
        offered: Option<DirectoryVersion>,
        reason: String,
    },
}

/// The directory in force in a running daemon.
pub struct DirectorySlot(RwLock<Arc<Directory>>);

impl DirectorySlot {
    pub fn new(directory: Directory) -> Self {
        DirectorySlot(RwLock::new(Arc::new(directory)))
    }

    /// The directory in force now.
    pub fn current(&self) -> Arc<Directory> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `offered` in force if it may replace both the directory in
    /// force and the floor `store` holds (which another daemon on the same
    /// store may have raised), recording it as the new floor first. Called
    /// from one task at a time: the daemon's refresh.
    pub async fn offer<S: VersionsInForce + ?Sized>(
        &self,
        offered: Directory,
        store: &S,
    ) -> Result<Offer, StorageError> {
        let current = self.current();
        let version = offered.version_info();
        let previous = current.version_info();
        if version == previous {
            return Ok(Offer::Same);
        }
        let floor = store.in_force().await?.directory;
        for against in std::iter::once(previous).chain(floor) {
            if let Err(why) = against.check_successor(&offered) {
                return Ok(Offer::Refused {
                    offered: Some(version),
                    reason: why.to_string(),
                });
            }
        }
        store
            .put_in_force(&InForce {
                directory: Some(version),
                bundles: Vec::new(),
            })
            .await?;
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(offered);
        Ok(Offer::Applied {
            previous,
            now: version,
        })
    }
}

/// Remembers the last refusal reported, so that the same refusal, met on
/// every refresh, is reported once.
#[derive(Default)]
pub struct LastRefusal(std::sync::Mutex<Option<String>>);

impl LastRefusal {
    /// Whether `reason` differs from the last refusal reported; remembers it.
    pub fn first(&self, reason: &str) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let first = last.as_deref() != Some(reason);
        *last = Some(reason.to_string());
        first
    }

    /// Forgets the last refusal: the next one is reported again.
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::keys::{self, SigningKey};
    use crate::protocol::proto::v1;

    /// A store that keeps the versions in force in memory, raising only.
    #[derive(Default)]
    struct Memory(std::sync::Mutex<InForce>);

    #[async_trait::async_trait]
    impl VersionsInForce for Memory {
        async fn in_force(&self) -> Result<InForce, StorageError> {
            Ok(self.0.lock().unwrap().clone())
        }
        async fn put_in_force(&self, in_force: &InForce) -> Result<(), StorageError> {
            let mut stored = self.0.lock().unwrap();
            if let Some(d) = in_force.directory {
                if stored.directory.is_none_or(|s| d.version > s.version) {
                    stored.directory = Some(d);
                }
            }
            Ok(())
        }
    }

    fn directory(key: &SigningKey, version: u64, revoked: bool) -> Directory {
        let (_, hpke) = keys::generate_hpke();
        let dir = v1::Directory {
            version,
            federation: "f".into(),
            issued_at_ms: 1,
            nodes: vec![v1::NodeEntry {
                country: "HR".into(),
                signing_key: key.public_key().to_vec(),
                hpke_key: keys::hpke_public_bytes(&hpke).to_vec(),
                not_before_ms: 0,
                not_after_ms: i64::MAX,
                revoked: false,
                regime: v1::LegalRegime::EuMember as i32,
                national_ca_sha256: vec![],
                previous: vec![],
            }],
            agencies: vec![v1::AgencyEntry {
                id: "HR/police".into(),
                kind: v1::AgencyKind::CriminalPolice as i32,
                display_name: "Police".into(),
                revoked,
            }],
            auditors: vec![],
            log: None,
        };
        Directory::verify(&Directory::sign(&dir, key), &key.public_key(), "f").unwrap()
    }

    fn police_revoked(d: &Directory) -> bool {
        d.agency(&"HR/police".parse().unwrap()).unwrap().revoked
    }

    #[tokio::test]
    async fn a_newer_directory_goes_in_force_and_raises_the_floor() {
        let (key, _) = SigningKey::generate().unwrap();
        let store = Memory::default();
        let slot = DirectorySlot::new(directory(&key, 3, false));
        let v3 = slot.current().version_info();
        let v4 = directory(&key, 4, true);
        let now = v4.version_info();
        assert_eq!(
            slot.offer(v4.clone(), &store).await.unwrap(),
            Offer::Applied { previous: v3, now }
        );
        assert!(police_revoked(&slot.current()));
        assert_eq!(store.in_force().await.unwrap().directory, Some(now));
        // The same directory again changes nothing.
        assert_eq!(slot.offer(v4, &store).await.unwrap(), Offer::Same);
    }

    #[tokio::test]
    async fn an_older_or_changed_directory_is_refused_and_the_one_in_force_stays() {
        let (key, _) = SigningKey::generate().unwrap();
        let store = Memory::default();
        let slot = DirectorySlot::new(directory(&key, 5, true));
        let in_force = slot.current().version_info();

        let older = directory(&key, 4, false);
        let Offer::Refused { offered, reason } = slot.offer(older.clone(), &store).await.unwrap()
        else {
            panic!("an older directory was not refused")
        };
        assert_eq!(offered, Some(older.version_info()));
        assert!(
            reason.contains("older than the version in force"),
            "{reason}"
        );

        // Signed by the directory key, but the version in force with other
        // content (here, the agency no longer revoked): refused too.
        let changed = directory(&key, 5, false);
        let Offer::Refused { reason, .. } = slot.offer(changed, &store).await.unwrap() else {
            panic!("a changed directory under the same version was not refused")
        };
        assert!(reason.contains("needs a new version"), "{reason}");
        assert_eq!(slot.current().version_info(), in_force);
        assert!(police_revoked(&slot.current()));
        assert_eq!(store.in_force().await.unwrap().directory, None);
    }

    #[tokio::test]
    async fn the_floor_in_the_store_counts_too() {
        // Another daemon on the same store put version 7 in force; this one
        // still holds 5 and is offered 6.
        let (key, _) = SigningKey::generate().unwrap();
        let store = Memory::default();
        let v7 = directory(&key, 7, true).version_info();
        store
            .put_in_force(&InForce {
                directory: Some(v7),
                bundles: vec![],
            })
            .await
            .unwrap();
        let slot = DirectorySlot::new(directory(&key, 5, true));
        let offer = slot.offer(directory(&key, 6, false), &store).await.unwrap();
        assert!(matches!(offer, Offer::Refused { .. }), "{offer:?}");
        assert_eq!(slot.current().version, 5);
        assert_eq!(store.in_force().await.unwrap().directory, Some(v7));
    }

    #[test]
    fn a_refusal_is_reported_once_until_it_changes() {
        let last = LastRefusal::default();
        assert!(last.first("a"));
        assert!(!last.first("a"));
        assert!(last.first("b"));
        last.clear();
        assert!(last.first("b"));
    }
}

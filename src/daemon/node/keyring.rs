//! The node's application keys across a rotation: the pair it signs with
//! now, the next pair it has prepared, and the retired pairs it keeps.
//!
//! A rotation runs without downtime. The operator prepares the next pair
//! (`casebridge node new-keys`, `[keys.next]` in the config) and publishes it
//! in a new directory (`directory rotate-node`), which lists the old pair as
//! retired until the end of an overlap. From the moment the node sees that
//! directory in force it waits `switch_delay_secs`, so that the other nodes
//! have fetched the same directory, then signs with the next pair. Records
//! sealed to any pair it holds keep opening: a wrapped data key names the
//! SHA-256 of the HPKE key it was wrapped to, and [`Keyring::hpke_key`] finds
//! the private key by it. The broker and every node accept a retired key only
//! within its overlap, so the node drops nothing that others still accept.

use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;

use crate::daemon::config::{KeyPairFiles, NodeKeys};
use crate::protocol::directory::{Directory, NodeInfo};
use crate::protocol::ids::Country;
use crate::protocol::keys::{self, HpkePrivateKey, SigningKey};

/// One Ed25519 signing key with its X25519 HPKE key.
pub struct KeyPair {
    signing: Arc<SigningKey>,
    hpke: Arc<HpkePrivateKey>,
    signing_public: [u8; 32],
    hpke_public: [u8; 32],
    hpke_sha256: [u8; 32],
}

impl KeyPair {
    pub fn new(signing: SigningKey, hpke: HpkePrivateKey) -> KeyPair {
        let public = keys::hpke_public_of(&hpke);
        KeyPair {
            signing_public: signing.public_key(),
            hpke_public: keys::hpke_public_bytes(&public),
            hpke_sha256: keys::hpke_key_sha256(&public),
            signing: Arc::new(signing),
            hpke: Arc::new(hpke),
        }
    }

    /// Reads a pair from its key files (0600, as every key file).
    pub fn load(files: &KeyPairFiles) -> anyhow::Result<KeyPair> {
        let signing = crate::storage::files::keys::load_signing_key(&files.signing)?;
        let hpke = crate::storage::files::keys::load_hpke(&files.hpke)?;
        Ok(KeyPair::new(signing, hpke))
    }

    /// Whether the directory entry lists this pair as the node's current one.
    fn is_current_of(&self, n: &NodeInfo) -> bool {
        n.signing_key == self.signing_public
            && keys::hpke_public_bytes(&n.hpke_key) == self.hpke_public
    }
}

/// Which of the node's pairs the directory lists as current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listed {
    Current,
    Next,
    Neither,
}

/// Where the next pair is looked for when the config names none: beside
/// the current keys, as `casebridge node new-keys` writes it.
pub fn default_next_files(keys: &NodeKeys) -> KeyPairFiles {
    let beside = |p: &std::path::Path| {
        let name = p
            .file_name()
            .map(|n| format!("next-{}", n.to_string_lossy()))
            .unwrap_or_else(|| "next".into());
        p.with_file_name(name)
    };
    KeyPairFiles {
        signing: beside(&keys.signing),
        hpke: beside(&keys.hpke),
    }
}

/// The node's key pairs and which one it signs with.
pub struct Keyring {
    country: Country,
    current: KeyPair,
    /// The next pair, once read: at start if its files exist, else when a
    /// directory first lists keys the node does not hold yet.
    next: RwLock<Option<Arc<KeyPair>>>,
    next_files: KeyPairFiles,
    previous: Vec<KeyPair>,
    switch_delay_ms: i64,
    /// Since when (node clock, ms) the directory in force has listed the
    /// next pair as current; None while it lists the current pair.
    next_listed_since: Mutex<Option<i64>>,
}

impl Keyring {
    pub fn new(
        country: Country,
        current: KeyPair,
        next: Option<KeyPair>,
        next_files: KeyPairFiles,
        previous: Vec<KeyPair>,
        switch_delay: std::time::Duration,
    ) -> Keyring {
        Keyring {
            country,
            current,
            next: RwLock::new(next.map(Arc::new)),
            next_files,
            previous,
            switch_delay_ms: i64::try_from(switch_delay.as_millis()).unwrap_or(i64::MAX),
            next_listed_since: Mutex::new(None),
        }
    }

    /// Reads every pair the config names; the next pair too if its files
    /// are there already.
    pub fn from_config(country: Country, cfg: &NodeKeys) -> anyhow::Result<Keyring> {
        let current = KeyPair::load(&KeyPairFiles {
            signing: cfg.signing.clone(),
            hpke: cfg.hpke.clone(),
        })?;
        let next_files = cfg.next.clone().unwrap_or_else(|| default_next_files(cfg));
        let next = if cfg.next.is_some() || next_files.signing.exists() {
            Some(KeyPair::load(&next_files).context("reading the next key pair")?)
        } else {
            None
        };
        let previous = cfg
            .previous
            .iter()
            .map(|f| KeyPair::load(f).context("reading keys.previous"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Keyring::new(
            country,
            current,
            next,
            next_files,
            previous,
            std::time::Duration::from_secs(cfg.switch_delay_secs),
        ))
    }

    fn next(&self) -> Option<Arc<KeyPair>> {
        self.next.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn listed(&self, dir: &Directory) -> Listed {
        let Some(n) = dir.node(self.country) else {
            return Listed::Neither;
        };
        if self.current.is_current_of(n) {
            return Listed::Current;
        }
        if self.next().is_some_and(|p| p.is_current_of(n)) {
            return Listed::Next;
        }
        Listed::Neither
    }

    /// When `dir` lists keys the node does not hold, reads the next pair
    /// from its files, which may have been written since the node started.
    fn read_next_if_listed(&self, dir: &Directory) {
        if self.listed(dir) != Listed::Neither || !self.next_files.signing.exists() {
            return;
        }
        let Some(n) = dir.node(self.country) else {
            return;
        };
        match KeyPair::load(&self.next_files) {
            Ok(p) if p.is_current_of(n) => {
                tracing::info!(
                    node = %self.country,
                    file = %self.next_files.signing.display(),
                    "the directory lists this node's next key pair"
                );
                *self.next.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(p));
            }
            Ok(_) => tracing::warn!(
                node = %self.country,
                file = %self.next_files.signing.display(),
                "the directory lists keys for this node that are neither its keys nor its next pair"
            ),
            Err(e) => {
                tracing::warn!(node = %self.country, error = %e, "the next key pair cannot be read");
            }
        }
    }

    /// Takes note of a directory put in force at `now_ms` (at start and on
    /// each new version): reads the next pair if the directory lists it and
    /// it was not read yet, and starts the switch delay.
    pub fn directory_in_force(&self, dir: &Directory, now_ms: i64) {
        self.read_next_if_listed(dir);
        if self.observe(dir, now_ms) {
            tracing::info!(node = %self.country, "signing with the next key pair");
        }
    }

    /// Refuses a directory that lists neither the node's keys nor its next
    /// keys as its current pair: the node could not sign for it.
    pub fn check_listed(&self, dir: &Directory) -> anyhow::Result<()> {
        self.read_next_if_listed(dir);
        match (dir.node(self.country), self.listed(dir)) {
            (None, _) => anyhow::bail!("node {} is not in the directory", self.country),
            (Some(_), Listed::Neither) => anyhow::bail!(
                "the directory lists other keys for node {} than keys.signing and keys.hpke, \
                 or the next pair {} and {}",
                self.country,
                self.next_files.signing.display(),
                self.next_files.hpke.display()
            ),
            _ => Ok(()),
        }
    }

    /// Notes the directory in force at `now_ms`, and says whether the node
    /// signs with its next pair now: once the directory has listed it as
    /// current for the switch delay, or at once if the current key is no
    /// longer accepted (its overlap is over).
    fn observe(&self, dir: &Directory, now_ms: i64) -> bool {
        let listed = self.listed(dir);
        let mut since = self
            .next_listed_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match listed {
            Listed::Current => {
                *since = None;
                false
            }
            Listed::Next => {
                let first = *since.get_or_insert(now_ms);
                let current_accepted = dir.node(self.country).is_some_and(|n| {
                    n.signing_keys_at(now_ms)
                        .any(|k| *k == self.current.signing_public)
                });
                !current_accepted || now_ms.saturating_sub(first) >= self.switch_delay_ms
            }
            // A directory that lists keys this node does not hold: keep
            // to the pair chosen last.
            Listed::Neither => {
                since.is_some_and(|s| now_ms.saturating_sub(s) >= self.switch_delay_ms)
            }
        }
    }

    /// The key the node signs with at `now_ms` under `dir`: its current key,
    /// or its next key once [`Keyring::observe`] says so.
    pub fn signing_key(&self, dir: &Directory, now_ms: i64) -> Arc<SigningKey> {
        match (self.observe(dir, now_ms), self.next()) {
            (true, Some(next)) => next.signing.clone(),
            _ => self.current.signing.clone(),
        }
    }

    /// The private HPKE key whose public key has this SHA-256, among every
    /// pair the node holds.
    pub fn hpke_key(&self, sha256: &[u8; 32]) -> Option<Arc<HpkePrivateKey>> {
        if self.current.hpke_sha256 == *sha256 {
            return Some(self.current.hpke.clone());
        }
        if let Some(next) = self.next().filter(|p| p.hpke_sha256 == *sha256) {
            return Some(next.hpke.clone());
        }
        self.previous
            .iter()
            .find(|p| p.hpke_sha256 == *sha256)
            .map(|p| p.hpke.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::proto::v1;

    const FED: &str = "casebridge.test";

    fn pair() -> KeyPair {
        let (signing, _) = SigningKey::generate().unwrap();
        let (hpke, _) = keys::generate_hpke();
        KeyPair::new(signing, hpke)
    }

    fn entry(p: &KeyPair, previous: Vec<v1::RetiredKeys>) -> v1::NodeEntry {
        v1::NodeEntry {
            country: "HR".into(),
            signing_key: p.signing_public.to_vec(),
            hpke_key: p.hpke_public.to_vec(),
            not_before_ms: 0,
            not_after_ms: i64::MAX,
            revoked: false,
            regime: v1::LegalRegime::EuMember as i32,
            national_ca_sha256: vec![],
            previous,
        }
    }

    fn directory(node: v1::NodeEntry) -> Directory {
        let (key, _) = SigningKey::generate().unwrap();
        let raw = v1::Directory {
            version: 1,
            federation: FED.into(),
            issued_at_ms: 0,
            nodes: vec![node],
            agencies: vec![],
            auditors: vec![],
            log: None,
        };
        Directory::verify(&Directory::sign(&raw, &key), &key.public_key(), FED).unwrap()
    }

    fn retired(p: &KeyPair, until: i64) -> v1::RetiredKeys {
        v1::RetiredKeys {
            signing_key: p.signing_public.to_vec(),
            hpke_key: p.hpke_public.to_vec(),
            valid_until_ms: until,
        }
    }

    fn hr() -> Country {
        "HR".parse().unwrap()
    }

    fn nowhere() -> KeyPairFiles {
        KeyPairFiles {
            signing: "/nonexistent/next-signing.key".into(),
            hpke: "/nonexistent/next-hpke.key".into(),
        }
    }

    #[test]
    fn signs_with_the_next_key_only_after_the_switch_delay() {
        let (old, new) = (pair(), pair());
        let old_pub = old.signing_public;
        let new_pub = new.signing_public;
        let ring = Keyring::new(
            hr(),
            old,
            Some(new),
            nowhere(),
            vec![],
            std::time::Duration::from_secs(180),
        );
        let before = directory(entry(&ring.current, vec![]));
        assert_eq!(ring.signing_key(&before, 1_000).public_key(), old_pub);

        let next = ring.next().unwrap();
        let after = directory(entry(&next, vec![retired(&ring.current, 10_000_000)]));
        // First seen at 2 000 ms: the old key until 182 000 ms.
        assert_eq!(ring.signing_key(&after, 2_000).public_key(), old_pub);
        assert_eq!(ring.signing_key(&after, 181_999).public_key(), old_pub);
        assert_eq!(ring.signing_key(&after, 182_000).public_key(), new_pub);
        assert_eq!(ring.signing_key(&after, 500_000).public_key(), new_pub);
        // A directory that lists the old pair again takes the node back to it.
        assert_eq!(ring.signing_key(&before, 600_000).public_key(), old_pub);
    }

    #[test]
    fn opens_with_whichever_pair_the_wrapped_key_names() {
        let (old, new, older) = (pair(), pair(), pair());
        let shas = [old.hpke_sha256, new.hpke_sha256, older.hpke_sha256];
        let publics = [old.hpke_public, new.hpke_public, older.hpke_public];
        let ring = Keyring::new(
            hr(),
            old,
            Some(new),
            nowhere(),
            vec![older],
            std::time::Duration::ZERO,
        );
        for (sha, public) in shas.iter().zip(publics) {
            let key = ring.hpke_key(sha).expect("a pair the node holds");
            assert_eq!(keys::hpke_public_bytes(&keys::hpke_public_of(&key)), public);
        }
        assert!(ring.hpke_key(&[7; 32]).is_none());
    }

    #[test]
    fn a_directory_listing_keys_the_node_does_not_hold_is_refused_at_start() {
        let (old, new, stranger) = (pair(), pair(), pair());
        let ring = Keyring::new(
            hr(),
            old,
            Some(new),
            nowhere(),
            vec![],
            std::time::Duration::ZERO,
        );
        assert!(
            ring.check_listed(&directory(entry(&ring.current, vec![])))
                .is_ok()
        );
        let next = ring.next().unwrap();
        assert!(ring.check_listed(&directory(entry(&next, vec![]))).is_ok());
        let err = ring
            .check_listed(&directory(entry(&stranger, vec![])))
            .unwrap_err()
            .to_string();
        assert!(err.contains("other keys for node HR"), "{err}");
        // A signing key of one pair with the HPKE key of another is not a pair.
        let mut mixed = entry(&ring.current, vec![]);
        mixed.hpke_key = next.hpke_public.to_vec();
        assert!(ring.check_listed(&directory(mixed)).is_err());
    }

    #[test]
    fn reads_a_next_pair_written_after_start_and_switches_at_once_when_the_old_key_expired() {
        let tmp = tempfile::tempdir().unwrap();
        let files = KeyPairFiles {
            signing: tmp.path().join("next-signing.key"),
            hpke: tmp.path().join("next-hpke.key"),
        };
        let old = pair();
        let old_pub = old.signing_public;
        let ring = Keyring::new(
            hr(),
            old,
            None,
            files.clone(),
            vec![],
            std::time::Duration::from_secs(180),
        );
        // Written while the node runs, as `node new-keys` does.
        let (_, pkcs8) = SigningKey::generate().unwrap();
        crate::storage::files::keys::write_secret(
            &files.signing,
            keys::to_pem(&pkcs8, "PRIVATE KEY").as_bytes(),
        )
        .unwrap();
        let (hpke, _) = keys::generate_hpke();
        crate::storage::files::keys::write_secret(
            &files.hpke,
            hex::encode(keys::hpke_private_bytes(&hpke)).as_bytes(),
        )
        .unwrap();
        let next = KeyPair::load(&files).unwrap();
        let dir = directory(entry(&next, vec![retired(&ring.current, 10_000)]));
        ring.check_listed(&dir).unwrap();
        ring.directory_in_force(&dir, 5_000);
        assert!(ring.hpke_key(&next.hpke_sha256).is_some());
        // Within the overlap and the switch delay: the old key still.
        assert_eq!(ring.signing_key(&dir, 9_999).public_key(), old_pub);
        // The overlap is over before the delay: the next key at once,
        // never a key nobody accepts.
        assert_eq!(
            ring.signing_key(&dir, 10_000).public_key(),
            next.signing_public
        );
    }
}

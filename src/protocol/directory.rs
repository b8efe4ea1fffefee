//! The signed directory: nodes, agencies and auditors of the federation with
//! their public keys, validity and revocation.
//!
//! A [`Directory`] can only be built by verifying a `SignedDirectory` against
//! the pinned directory key, so holding one means its signature was checked.

use std::collections::BTreeMap;

use prost::Message as _;
use ring::digest;

use crate::protocol::ids::{AgencyId, Country};
use crate::protocol::keys::{self, HpkePublicKey, SigningKey};
use crate::protocol::proto::v1;

const DOMAIN: &[u8] = b"casebridge/v1 directory\0";

/// The most retired key pairs a node entry may list.
pub const MAX_RETIRED_KEYS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("directory signature does not verify against the pinned directory key")]
    BadSignature,
    #[error("directory is not a valid protobuf message")]
    Malformed,
    #[error(
        "directory is for federation {}, expected {}",
        crate::protocol::bounds::escaped(found),
        crate::protocol::bounds::escaped(expected)
    )]
    WrongFederation { found: String, expected: String },
    #[error("directory entry invalid: {0}")]
    Entry(String),
    #[error("directory version {offered} is older than the version in force ({current})")]
    Rollback { offered: u64, current: u64 },
    #[error(
        "directory version {version} is not the directory in force with that version; a changed \
         directory needs a new version"
    )]
    Changed { version: u64 },
}

/// What identifies a directory: its version and the digest of its signed
/// bytes. Kept in the stores so that a restart cannot go back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectoryVersion {
    pub version: u64,
    pub digest: [u8; 32],
}

impl DirectoryVersion {
    /// Decides whether `newer` may replace the directory this identifies:
    /// a newer version, or the very same directory.
    pub fn check_successor(&self, newer: &Directory) -> Result<(), DirectoryError> {
        let offered = newer.version_info();
        if offered.version < self.version {
            return Err(DirectoryError::Rollback {
                offered: offered.version,
                current: self.version,
            });
        }
        if offered.version == self.version && offered.digest != self.digest {
            return Err(DirectoryError::Changed {
                version: offered.version,
            });
        }
        Ok(())
    }
}

/// A node as the directory lists it.
#[derive(Clone)]
pub struct NodeInfo {
    pub country: Country,
    pub signing_key: [u8; 32],
    pub hpke_key: HpkePublicKey,
    pub not_before_ms: i64,
    pub not_after_ms: i64,
    pub revoked: bool,
    pub eu_member: bool,
    /// SHA-256 of the national CA certificate (DER) of this country.
    pub national_ca_sha256: Vec<u8>,
    /// The key pairs this node used before, each with the end of its
    /// overlap; at most [`MAX_RETIRED_KEYS`].
    pub previous: Vec<RetiredKeys>,
}

/// A node's retired key pair, valid for signatures and wrapped keys until
/// `valid_until_ms`.
#[derive(Clone)]
pub struct RetiredKeys {
    pub signing_key: [u8; 32],
    pub hpke_key: HpkePublicKey,
    pub valid_until_ms: i64,
}

impl NodeInfo {
    /// Whether the node may act at `now_ms`.
    pub fn active_at(&self, now_ms: i64) -> bool {
        !self.revoked && self.not_before_ms <= now_ms && now_ms < self.not_after_ms
    }

    /// The Ed25519 keys whose signatures count as this node's at `now_ms`:
    /// the current key first, then every retired key still within its
    /// overlap.
    pub fn signing_keys_at(&self, now_ms: i64) -> impl Iterator<Item = &[u8; 32]> {
        std::iter::once(&self.signing_key).chain(
            self.previous
                .iter()
                .filter(move |r| now_ms < r.valid_until_ms)
                .map(|r| &r.signing_key),
        )
    }

    /// Whether a data key wrapped to the HPKE key with this SHA-256 may be
    /// accepted for this node at `now_ms`: its current key, or a retired one
    /// still within its overlap.
    pub fn accepts_hpke_key(&self, sha256: &[u8], now_ms: i64) -> bool {
        keys::hpke_key_sha256(&self.hpke_key).as_slice() == sha256
            || self.previous.iter().any(|r| {
                now_ms < r.valid_until_ms && keys::hpke_key_sha256(&r.hpke_key).as_slice() == sha256
            })
    }
}

/// An agency as the directory lists it.
#[derive(Clone, Debug)]
pub struct AgencyInfo {
    pub id: AgencyId,
    pub kind: v1::AgencyKind,
    pub display_name: String,
    pub revoked: bool,
}

/// A verified directory.
#[derive(Clone)]
pub struct Directory {
    pub version: u64,
    pub federation: String,
    pub issued_at_ms: i64,
    nodes: BTreeMap<Country, NodeInfo>,
    agencies: BTreeMap<AgencyId, AgencyInfo>,
    auditors: BTreeMap<String, bool>,
    log: Option<LogInfo>,
    signed: v1::SignedDirectory,
}

/// The broker's transparency log as the directory pins it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogInfo {
    /// The checkpoint origin line.
    pub origin: String,
    /// The Ed25519 key that signs checkpoints.
    pub public_key: [u8; 32],
}

impl Directory {
    /// Verifies `signed` against the pinned `directory_key` and parses it.
    pub fn verify(
        signed: &v1::SignedDirectory,
        directory_key: &[u8],
        federation: &str,
    ) -> Result<Directory, DirectoryError> {
        if !keys::verify_ed25519(
            directory_key,
            &signing_input(&signed.directory),
            &signed.signature,
        ) {
            return Err(DirectoryError::BadSignature);
        }
        let dir = v1::Directory::decode(signed.directory.as_slice())
            .map_err(|_| DirectoryError::Malformed)?;
        if dir.federation != federation {
            return Err(DirectoryError::WrongFederation {
                found: dir.federation,
                expected: federation.to_string(),
            });
        }
        let mut nodes = BTreeMap::new();
        for n in &dir.nodes {
            let country: Country = n
                .country
                .parse()
                .map_err(|e| DirectoryError::Entry(format!("{e}")))?;
            let signing_key: [u8; 32] = n.signing_key.as_slice().try_into().map_err(|_| {
                DirectoryError::Entry(format!("node {country}: signing key is not 32 bytes"))
            })?;
            let hpke_key = keys::hpke_public_from_bytes(&n.hpke_key).ok_or_else(|| {
                DirectoryError::Entry(format!("node {country}: HPKE key is not an X25519 key"))
            })?;
            let info = NodeInfo {
                country,
                signing_key,
                hpke_key,
                not_before_ms: n.not_before_ms,
                not_after_ms: n.not_after_ms,
                revoked: n.revoked,
                eu_member: n.regime() == v1::LegalRegime::EuMember,
                national_ca_sha256: n.national_ca_sha256.clone(),
                previous: retired_keys(country, &n.previous)?,
            };
            if nodes.insert(country, info).is_some() {
                return Err(DirectoryError::Entry(format!(
                    "node {country} listed twice"
                )));
            }
        }
        check_keys_unshared(&nodes)?;
        let mut agencies = BTreeMap::new();
        for a in &dir.agencies {
            let id: AgencyId =
                a.id.parse()
                    .map_err(|e| DirectoryError::Entry(format!("{e}")))?;
            if !nodes.contains_key(&id.country()) {
                return Err(DirectoryError::Entry(format!(
                    "agency {id}: no node for its country"
                )));
            }
            let info = AgencyInfo {
                id: id.clone(),
                kind: a.kind(),
                display_name: a.display_name.clone(),
                revoked: a.revoked,
            };
            if agencies.insert(id.clone(), info).is_some() {
                return Err(DirectoryError::Entry(format!("agency {id} listed twice")));
            }
        }
        let auditors = dir
            .auditors
            .iter()
            .map(|a| (a.name.clone(), a.revoked))
            .collect();
        let log = match &dir.log {
            None => None,
            Some(l) => Some(LogInfo {
                origin: l.origin.clone(),
                public_key: l.public_key.as_slice().try_into().map_err(|_| {
                    DirectoryError::Entry("transparency log key is not 32 bytes".into())
                })?,
            }),
        };
        Ok(Directory {
            version: dir.version,
            federation: dir.federation,
            issued_at_ms: dir.issued_at_ms,
            nodes,
            agencies,
            auditors,
            log,
            signed: signed.clone(),
        })
    }

    /// Signs a directory with the federation's directory key.
    pub fn sign(dir: &v1::Directory, key: &SigningKey) -> v1::SignedDirectory {
        let bytes = dir.encode_to_vec();
        let signature = key.sign(&signing_input(&bytes));
        v1::SignedDirectory {
            directory: bytes,
            signature,
        }
    }

    /// Decides whether `newer` may replace this directory.
    pub fn check_successor(&self, newer: &Directory) -> Result<(), DirectoryError> {
        self.version_info().check_successor(newer)
    }

    /// This directory's version and digest.
    pub fn version_info(&self) -> DirectoryVersion {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(&self.digest());
        DirectoryVersion {
            version: self.version,
            digest,
        }
    }

    pub fn node(&self, cc: Country) -> Option<&NodeInfo> {
        self.nodes.get(&cc)
    }
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.values()
    }
    pub fn agency(&self, id: &AgencyId) -> Option<&AgencyInfo> {
        self.agencies.get(id)
    }
    pub fn agencies(&self) -> impl Iterator<Item = &AgencyInfo> {
        self.agencies.values()
    }
    /// Whether `name` is a listed, unrevoked auditor.
    pub fn auditor_active(&self, name: &str) -> bool {
        self.auditors.get(name) == Some(&false)
    }
    /// The broker's transparency log: checkpoint origin and key.
    pub fn log(&self) -> Option<&LogInfo> {
        self.log.as_ref()
    }
    pub fn signed(&self) -> &v1::SignedDirectory {
        &self.signed
    }
    /// SHA-256 of the signed directory bytes, as recorded in audit events.
    pub fn digest(&self) -> Vec<u8> {
        digest::digest(&digest::SHA256, &self.signed.directory)
            .as_ref()
            .to_vec()
    }
}

/// A node entry's retired key pairs, at most [`MAX_RETIRED_KEYS`].
fn retired_keys(
    country: Country,
    previous: &[v1::RetiredKeys],
) -> Result<Vec<RetiredKeys>, DirectoryError> {
    if previous.len() > MAX_RETIRED_KEYS {
        return Err(DirectoryError::Entry(format!(
            "node {country}: {} retired key pairs; at most {MAX_RETIRED_KEYS} are kept",
            previous.len()
        )));
    }
    previous
        .iter()
        .map(|r| {
            Ok(RetiredKeys {
                signing_key: r.signing_key.as_slice().try_into().map_err(|_| {
                    DirectoryError::Entry(format!(
                        "node {country}: a retired signing key is not 32 bytes"
                    ))
                })?,
                hpke_key: keys::hpke_public_from_bytes(&r.hpke_key).ok_or_else(|| {
                    DirectoryError::Entry(format!(
                        "node {country}: a retired HPKE key is not an X25519 key"
                    ))
                })?,
                valid_until_ms: r.valid_until_ms,
            })
        })
        .collect()
}

/// Refuses a key, current or retired, listed for two different nodes: a
/// signature or a wrapped key must name one node only.
fn check_keys_unshared(nodes: &BTreeMap<Country, NodeInfo>) -> Result<(), DirectoryError> {
    let mut owners: BTreeMap<(&str, [u8; 32]), Country> = BTreeMap::new();
    for n in nodes.values() {
        let signing = std::iter::once(n.signing_key)
            .chain(n.previous.iter().map(|r| r.signing_key))
            .map(|k| ("signing", k));
        let hpke = std::iter::once(&n.hpke_key)
            .chain(n.previous.iter().map(|r| &r.hpke_key))
            .map(|k| ("HPKE", keys::hpke_public_bytes(k)));
        for (what, key) in signing.chain(hpke) {
            match owners.insert((what, key), n.country) {
                Some(other) if other != n.country => {
                    return Err(DirectoryError::Entry(format!(
                        "the {what} key {} is listed for both node {other} and node {}",
                        hex::encode(&key[..8]),
                        n.country
                    )));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn signing_input(bytes: &[u8]) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(DOMAIN);
    ctx.update(bytes);
    ctx.finish().as_ref().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(fed: &str) -> (v1::Directory, SigningKey) {
        let (key, _) = SigningKey::generate().unwrap();
        let (_, hpke_pk) = keys::generate_hpke();
        let node = v1::NodeEntry {
            country: "HR".into(),
            signing_key: key.public_key().to_vec(),
            hpke_key: keys::hpke_public_bytes(&hpke_pk).to_vec(),
            not_before_ms: 0,
            not_after_ms: i64::MAX,
            revoked: false,
            regime: v1::LegalRegime::EuMember as i32,
            national_ca_sha256: vec![],
            previous: vec![],
        };
        let agency = v1::AgencyEntry {
            id: "HR/police".into(),
            kind: v1::AgencyKind::CriminalPolice as i32,
            display_name: "Police".into(),
            revoked: false,
        };
        let dir = v1::Directory {
            version: 3,
            federation: fed.into(),
            issued_at_ms: 1,
            nodes: vec![node],
            agencies: vec![agency],
            auditors: vec![],
            log: None,
        };
        (dir, key)
    }

    #[test]
    fn verifies_and_refuses_tampering() {
        let (dir, key) = sample("casebridge.test");
        let signed = Directory::sign(&dir, &key);
        let d = Directory::verify(&signed, &key.public_key(), "casebridge.test").unwrap();
        assert!(d.node("HR".parse().unwrap()).unwrap().eu_member);
        assert!(d.agency(&"HR/police".parse().unwrap()).is_some());

        let mut bad = signed.clone();
        bad.directory[5] ^= 1;
        assert!(matches!(
            Directory::verify(&bad, &key.public_key(), "casebridge.test"),
            Err(DirectoryError::BadSignature)
        ));
        let (other, _) = SigningKey::generate().unwrap();
        assert!(Directory::verify(&signed, &other.public_key(), "casebridge.test").is_err());
        assert!(matches!(
            Directory::verify(&signed, &key.public_key(), "elsewhere.test"),
            Err(DirectoryError::WrongFederation { .. })
        ));
    }

    #[test]
    fn refuses_rollback() {
        let (mut dir, key) = sample("f");
        let current =
            Directory::verify(&Directory::sign(&dir, &key), &key.public_key(), "f").unwrap();
        dir.version = 2;
        let older =
            Directory::verify(&Directory::sign(&dir, &key), &key.public_key(), "f").unwrap();
        assert!(matches!(
            current.check_successor(&older),
            Err(DirectoryError::Rollback {
                offered: 2,
                current: 3
            })
        ));
        assert!(older.check_successor(&current).is_ok());
        assert!(current.check_successor(&current).is_ok());

        // The same version with other content is refused too.
        dir.version = 3;
        dir.issued_at_ms += 1;
        let changed =
            Directory::verify(&Directory::sign(&dir, &key), &key.public_key(), "f").unwrap();
        let err = current.check_successor(&changed).unwrap_err();
        assert!(
            matches!(err, DirectoryError::Changed { version: 3 }),
            "{err}"
        );
    }
}

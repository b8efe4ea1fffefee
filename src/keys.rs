//! Application keys and the files that hold secrets.
//!
//! Each node has an Ed25519 signing key (ring) and an X25519 HPKE key; the
//! federation has a directory-signing key. These are separate from TLS keys.
//! Secret files are written 0600 and refused at load when group or others
//! can read them.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use hpke::{Deserializable, Kem as _, Serializable};
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};

/// The HPKE KEM used for wrapping data keys.
pub type HpkeKem = hpke::kem::X25519HkdfSha256;
pub type HpkePrivateKey = <HpkeKem as hpke::Kem>::PrivateKey;
pub type HpkePublicKey = <HpkeKem as hpke::Kem>::PublicKey;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: private key is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path}: not a valid {what}")]
    Invalid { path: PathBuf, what: &'static str },
    #[error("key generation failed")]
    Generate,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a secret file, refusing it if its permissions let anyone but the
/// owner read it.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(io_err(path))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    fs::read(path).map_err(io_err(path))
}

/// Writes a secret file with mode 0600, creating it with that mode so it is
/// never readable by others, not even for a moment.
pub fn write_secret(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io_err(path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err(path))?;
    }
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// An Ed25519 signing key (a node's, or the federation's directory key).
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Generates a key and returns it with its PKCS#8 encoding.
    pub fn generate() -> Result<(SigningKey, Vec<u8>), KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::Generate)?;
        Ok((SigningKey { pair }, pkcs8.as_ref().to_vec()))
    }

    pub fn from_pkcs8(der: &[u8]) -> Option<SigningKey> {
        Ed25519KeyPair::from_pkcs8(der)
            .ok()
            .map(|pair| SigningKey { pair })
    }

    /// Loads a PKCS#8 (DER or PEM "PRIVATE KEY") Ed25519 key file.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let bytes = read_secret(path)?;
        let der = pem_or_der(&bytes, "PRIVATE KEY");
        SigningKey::from_pkcs8(&der).ok_or_else(|| KeyError::Invalid {
            path: path.to_path_buf(),
            what: "Ed25519 PKCS#8 key",
        })
    }

    /// The ring key pair, for signing formats of its own (C2SP notes).
    pub fn key_pair(&self) -> &Ed25519KeyPair {
        &self.pair
    }

    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(msg).as_ref().to_vec()
    }
}

impl std::borrow::Borrow<Ed25519KeyPair> for SigningKey {
    fn borrow(&self) -> &Ed25519KeyPair {
        &self.pair
    }
}

/// Verifies an Ed25519 signature by a raw 32-byte public key.
pub fn verify_ed25519(public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    signature::UnparsedPublicKey::new(&signature::ED25519, public_key)
        .verify(msg, sig)
        .is_ok()
}

/// Generates an X25519 HPKE key pair.
pub fn generate_hpke() -> (HpkePrivateKey, HpkePublicKey) {
    HpkeKem::gen_keypair(&mut rand_core::UnwrapErr(rand_core::OsRng))
}

pub fn hpke_private_bytes(sk: &HpkePrivateKey) -> Vec<u8> {
    sk.to_bytes().to_vec()
}

pub fn hpke_public_bytes(pk: &HpkePublicKey) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&pk.to_bytes());
    out
}

pub fn hpke_public_from_bytes(b: &[u8]) -> Option<HpkePublicKey> {
    HpkePublicKey::from_bytes(b).ok()
}

/// Loads a raw 32-byte X25519 private key file (binary or hex).
pub fn load_hpke(path: &Path) -> Result<HpkePrivateKey, KeyError> {
    let bytes = read_secret(path)?;
    let raw = match std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| hex::decode(s.trim()).ok())
    {
        Some(raw) => raw,
        None => bytes,
    };
    HpkePrivateKey::from_bytes(&raw).map_err(|_| KeyError::Invalid {
        path: path.to_path_buf(),
        what: "X25519 private key",
    })
}

/// Returns the DER inside a PEM block with `label`, or the input unchanged.
fn pem_or_der(bytes: &[u8], label: &str) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return bytes.to_vec();
    };
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let (Some(s), Some(e)) = (text.find(&begin), text.find(&end)) else {
        return bytes.to_vec();
    };
    let body: String = text[s + begin.len()..e].split_whitespace().collect();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap_or_else(|_| bytes.to_vec())
}

/// Encodes DER as PEM with `label`.
pub fn to_pem(der: &[u8], label: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_written_0600_and_open_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let (key, pkcs8) = SigningKey::generate().unwrap();
        write_secret(&path, to_pem(&pkcs8, "PRIVATE KEY").as_bytes()).unwrap();
        let loaded = SigningKey::load(&path).unwrap();
        assert_eq!(loaded.public_key(), key.public_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            let err = SigningKey::load(&path).err().unwrap();
            assert!(
                matches!(err, KeyError::TooOpen { mode: 0o644, .. }),
                "{err}"
            );
        }
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let (key, _) = SigningKey::generate().unwrap();
        let sig = key.sign(b"msg");
        assert!(verify_ed25519(&key.public_key(), b"msg", &sig));
        assert!(!verify_ed25519(&key.public_key(), b"msh", &sig));
        let (other, _) = SigningKey::generate().unwrap();
        assert!(!verify_ed25519(&other.public_key(), b"msg", &sig));
    }

    #[test]
    fn hpke_keys_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hpke.key");
        let (sk, pk) = generate_hpke();
        write_secret(&path, hex::encode(hpke_private_bytes(&sk)).as_bytes()).unwrap();
        let loaded = load_hpke(&path).unwrap();
        assert_eq!(
            hpke_public_bytes(&HpkeKem::sk_to_pk(&loaded)),
            hpke_public_bytes(&pk)
        );
    }
}

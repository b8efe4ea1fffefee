//! Application keys: their types, and parsing them from the bytes of a key
//! file (PEM or DER).
//!
//! Each node has an Ed25519 signing key (ring) and an X25519 HPKE key; the
//! federation has a directory-signing key. These are separate from TLS keys.
//! A malformed key file is an error naming the file and what is wrong with
//! it. Reading and writing the files that hold secrets is the storage
//! layer's (`storage::files::keys`).

use std::path::{Path, PathBuf};

use crate::protocol::bounds::escaped;
use hpke::{Deserializable, Kem as _, Serializable};
use ring::rand::SystemRandom;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use rustls_pki_types::pem::{self, PemObject as _, SectionKind};

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
        "{path}: private key is readable by more than its owner (mode {mode:o}); run `chmod 600 {path}` (a key owned by root may be 0640, for its group)"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("{path}: not a valid {what}: {why}")]
    Invalid {
        path: PathBuf,
        what: &'static str,
        why: String,
    },
    #[error("key generation failed")]
    Generate,
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

    /// Parses the bytes of a PKCS#8 (DER or PEM "PRIVATE KEY") Ed25519 key
    /// file; `path` names the file in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<SigningKey, KeyError> {
        const WHAT: &str = "Ed25519 PKCS#8 key";
        let invalid = |why: String| KeyError::Invalid {
            path: path.to_path_buf(),
            what: WHAT,
            why,
        };
        let der = pem_or_der(bytes, "PRIVATE KEY").map_err(invalid)?;
        Ed25519KeyPair::from_pkcs8(&der)
            .map(|pair| SigningKey { pair })
            .map_err(|e| invalid(format!("the key does not parse ({e})")))
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

/// SHA-256 of a raw X25519 public key: how a wrapped data key names the
/// recipient key it was wrapped to.
pub fn hpke_key_sha256(pk: &HpkePublicKey) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(
        ring::digest::digest(&ring::digest::SHA256, &hpke_public_bytes(pk)).as_ref(),
    );
    out
}

/// The public half of an X25519 private key.
pub fn hpke_public_of(sk: &HpkePrivateKey) -> HpkePublicKey {
    <HpkeKem as hpke::Kem>::sk_to_pk(sk)
}

pub fn hpke_public_from_bytes(b: &[u8]) -> Option<HpkePublicKey> {
    HpkePublicKey::from_bytes(b).ok()
}

/// Parses the bytes of a raw 32-byte X25519 private key file (binary or
/// hex); `path` names the file in errors.
pub fn parse_hpke(path: &Path, bytes: &[u8]) -> Result<HpkePrivateKey, KeyError> {
    let raw = match std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| hex::decode(s.trim()).ok())
    {
        Some(raw) => raw,
        None => bytes.to_vec(),
    };
    let invalid = |why: String| KeyError::Invalid {
        path: path.to_path_buf(),
        what: "X25519 private key",
        why,
    };
    if raw.len() != 32 {
        return Err(invalid(format!(
            "expected 32 bytes (64 hex digits), found {} bytes",
            raw.len()
        )));
    }
    HpkePrivateKey::from_bytes(&raw).map_err(|e| invalid(e.to_string()))
}

/// Returns the DER inside the PEM block labelled `label`, or the input
/// itself if it is not PEM (has no "-----BEGIN " anywhere). A PEM file with
/// another label, a BEGIN line cut short, no end line or a body that is not
/// base64 is refused, saying which.
fn pem_or_der(bytes: &[u8], label: &str) -> Result<Vec<u8>, String> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let Some(at) = bytes.windows(BEGIN.len()).position(|w| w == BEGIN) else {
        return Ok(bytes.to_vec());
    };
    let wanted = SectionKind::try_from(label.as_bytes()).ok();
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes) {
        match section {
            Ok((kind, der)) if Some(kind) == wanted => return Ok(der),
            Ok(_) => continue,
            Err(pem::Error::MissingSectionEnd { end_marker }) if end_marker != label.as_bytes() => {
                return Err(format!(
                    "PEM block is labelled {}, expected {}",
                    escaped(&shown(&end_marker)),
                    escaped(label)
                ));
            }
            Err(e) => return Err(pem_error(&e)),
        }
    }
    // No block of this label: name the first one there is, if it has one.
    let rest = String::from_utf8_lossy(&bytes[at + BEGIN.len()..]);
    let found = rest
        .split(['\n', '\r'])
        .next()
        .and_then(|line| line.split("-----").next())
        .unwrap_or_default();
    if found == label {
        Err(format!(
            "no PEM block labelled {} (its BEGIN line must start a line)",
            escaped(label)
        ))
    } else {
        Err(format!(
            "PEM block is labelled {}, expected {}",
            escaped(&shown(found.as_bytes())),
            escaped(label)
        ))
    }
}

/// Says what is wrong with a PEM file, quoting at most a few dozen
/// characters of it.
pub(crate) fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { end_marker } => format!(
            "PEM block has no \"-----END {}-----\" line (truncated?)",
            shown(end_marker)
        ),
        pem::Error::IllegalSectionStart { line } => format!(
            "PEM BEGIN line {} does not end in five dashes (cut short?)",
            escaped(&shown(line))
        ),
        pem::Error::Base64Decode(why) => format!("PEM body is not valid base64 ({why})"),
        pem::Error::NoItemsFound => "no PEM block found".into(),
        other => format!("not valid PEM ({other})"),
    }
}

/// At most 40 characters of `bytes`, for quoting in a message.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).chars().take(40).collect()
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
    fn a_pem_begin_line_cut_short_is_an_error_not_a_panic() {
        for text in [
            "-----BEGIN PRIVATE KEY",
            "-----BEGIN PRIVATE KEY---",
            "-----BEGIN PRIVATE KEY-----",
            "x-----BEGIN PRIVATE KEY-----\nAAAA",
        ] {
            let e = pem_or_der(text.as_bytes(), "PRIVATE KEY");
            assert!(e.is_err(), "{text:?}: {e:?}");
        }
        let ok = to_pem(b"key", "PRIVATE KEY");
        assert_eq!(pem_or_der(ok.as_bytes(), "PRIVATE KEY").unwrap(), b"key");
    }

    #[test]
    fn pem_blocks_are_found_among_others_and_misplaced_ones_named() {
        let key = to_pem(b"key", "PRIVATE KEY");
        // After a certificate, with CRLF line ends: found.
        let both = format!("{}{key}", to_pem(b"cert", "CERTIFICATE")).replace('\n', "\r\n");
        assert_eq!(pem_or_der(both.as_bytes(), "PRIVATE KEY").unwrap(), b"key");
        // DER passes through unchanged.
        assert_eq!(
            pem_or_der(b"\x30\x03der", "PRIVATE KEY").unwrap(),
            b"\x30\x03der"
        );
        let cases = [
            (
                to_pem(b"x", "FOO BAR"),
                "labelled \"FOO BAR\", expected \"PRIVATE KEY\"",
            ),
            (format!("x{key}"), "BEGIN line must start a line"),
            (
                "-----BEGIN PRIVATE KEY\nAAAA\n".to_string(),
                "does not end in five dashes",
            ),
        ];
        for (text, says) in cases {
            let e = pem_or_der(text.as_bytes(), "PRIVATE KEY").unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
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
}

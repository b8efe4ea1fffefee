//! Witness cosignatures (<https://c2sp.org/tlog-cosignature>, Ed25519
//! `cosignature/v1`, signature type `0x04`): the cosigner, the message it
//! signs and the check of one cosignature line.

use std::borrow::Borrow;
use std::fmt;

use ring::signature::Ed25519KeyPair;

use super::keys::{pair_from_pkcs8, pair_from_seed, parse_private_key, signing_key_id};
use super::{
    Checkpoint, ED25519_SIGNATURE_LEN, NoteError, NoteKeyError, NoteSignature, SignatureType,
    TIMESTAMP_LEN, Verifier,
};

/// First line of the message an Ed25519 cosignature signs.
const COSIGNATURE_HEADER: &str = "cosignature/v1\n";

/// A witness's cosigning key: Ed25519 `cosignature/v1` (signature type
/// `0x04`).
///
/// The Ed25519 cosignature message does not include the cosigner's name, so
/// each cosigner needs a key of its own. casebridge nodes cosign with their
/// directory signing key: their other signatures are over 32-byte
/// domain-separated hashes, and a cosignature message starts with
/// `cosignature/v1\n` and is longer, so no signature can stand for the other.
pub struct Cosigner<K = Ed25519KeyPair> {
    name: String,
    key_id: u32,
    key: K,
}

impl<K: Borrow<Ed25519KeyPair>> Cosigner<K> {
    /// A cosigner named `name` (a schema-less URL identifying the witness).
    pub fn new(name: &str, key: K) -> Result<Cosigner<K>, NoteKeyError> {
        let (name, key_id) = signing_key_id(name, SignatureType::CosignatureV1, key.borrow())?;
        Ok(Cosigner { name, key_id, key })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID (computed with type byte `0x04`).
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier (print it for the verifier key text).
    pub fn verifier(&self) -> Verifier {
        Verifier::of_pair(
            &self.name,
            self.key_id,
            SignatureType::CosignatureV1,
            self.key.borrow(),
        )
    }

    /// Cosigns `checkpoint` as of `timestamp` (POSIX seconds, at most
    /// 2^63 − 1). The caller must first have checked the checkpoint's
    /// consistency with the last one it cosigned: that is what a cosignature
    /// states. Returns the signature line to hand back to the log
    /// ([`NoteSignature::to_line`]).
    pub fn cosign(
        &self,
        checkpoint: &Checkpoint,
        timestamp: u64,
    ) -> Result<NoteSignature, NoteError> {
        check_timestamp(timestamp)?;
        let message = cosignature_message(&checkpoint.text(), timestamp);
        let signature = self.key.borrow().sign(&message);
        let mut bytes = Vec::with_capacity(TIMESTAMP_LEN + ED25519_SIGNATURE_LEN);
        bytes.extend_from_slice(&timestamp.to_be_bytes());
        bytes.extend_from_slice(signature.as_ref());
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature: bytes,
        })
    }
}

impl Cosigner<Ed25519KeyPair> {
    /// A cosigner from a PKCS#8 v2 Ed25519 key.
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<Cosigner, NoteKeyError> {
        Cosigner::new(name, pair_from_pkcs8(pkcs8)?)
    }

    /// A cosigner from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Cosigner, NoteKeyError> {
        Cosigner::new(name, pair_from_seed(seed)?)
    }

    /// A cosigner from `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x04 || seed)>`.
    pub fn from_private_key(skey: &str) -> Result<Cosigner, NoteKeyError> {
        let (name, pair) = parse_private_key(skey, SignatureType::CosignatureV1)?;
        Cosigner::new(&name, pair)
    }
}

impl<K> fmt::Debug for Cosigner<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cosigner({}+{:08x})", self.name, self.key_id)
    }
}

pub(super) fn check_timestamp(timestamp: u64) -> Result<(), NoteError> {
    if timestamp > i64::MAX as u64 {
        Err(NoteError::TimestampOutOfRange(timestamp))
    } else {
        Ok(())
    }
}

/// The message an Ed25519 cosignature signs: `cosignature/v1\n`,
/// `time <decimal seconds>\n`, then the whole checkpoint text, extension lines
/// included.
pub(super) fn cosignature_message(checkpoint_text: &str, timestamp: u64) -> Vec<u8> {
    format!("{COSIGNATURE_HEADER}time {timestamp}\n{checkpoint_text}").into_bytes()
}

/// Verifies a witness's cosignature line over `checkpoint` and returns its
/// timestamp. `verifier` must be the witness's `0x04` key.
pub fn verify_cosignature(
    checkpoint: &Checkpoint,
    signature: &NoteSignature,
    verifier: &Verifier,
) -> Result<u64, NoteError> {
    let verified = verifier.verify(&checkpoint.text(), signature)?;
    verified.timestamp.ok_or(NoteError::InvalidSignature {
        name: signature.name.clone(),
        key_id: signature.key_id,
    })
}

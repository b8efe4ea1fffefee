//! Verifier keys (`<name>+<key ID>+<base64>`), sets of trusted verifiers,
//! Go-style private keys and the note signer (signature type `0x01`).

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

use super::cosignature::{check_timestamp, cosignature_message};
use super::{
    ED25519_KEY_LEN, NoteError, NoteKeyError, NoteSignature, SignatureType, TIMESTAMP_LEN,
    VerifiedSignature, is_valid_key_name, key_id,
};

const PRIVATE_KEY_PREFIX: &str = "PRIVATE+KEY+";

/// Parses exactly eight hex digits.
fn parse_key_id(hex: &str) -> Option<u32> {
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

pub(super) fn public_key_of(pair: &Ed25519KeyPair) -> [u8; ED25519_KEY_LEN] {
    let mut key = [0u8; ED25519_KEY_LEN];
    // ring's Ed25519 public keys are always 32 bytes.
    key.copy_from_slice(pair.public_key().as_ref());
    key
}

/// A trusted public key: name, type and Ed25519 key, with the key ID they
/// determine.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Verifier {
    pub(super) name: String,
    pub(super) key_id: u32,
    pub(super) signature_type: SignatureType,
    pub(super) public_key: [u8; ED25519_KEY_LEN],
}

impl Verifier {
    /// A verifier for `public_key` under `name`.
    pub fn new(
        name: &str,
        signature_type: SignatureType,
        public_key: [u8; 32],
    ) -> Result<Verifier, NoteKeyError> {
        if !is_valid_key_name(name) {
            return Err(NoteKeyError::InvalidKeyName(name.to_owned()));
        }
        Ok(Verifier {
            name: name.to_owned(),
            key_id: key_id(name, signature_type, &public_key),
            signature_type,
            public_key,
        })
    }

    /// The verifier of a signing key whose name and key ID are checked.
    pub(super) fn of_pair(
        name: &str,
        key_id: u32,
        signature_type: SignatureType,
        pair: &Ed25519KeyPair,
    ) -> Verifier {
        Verifier {
            name: name.to_owned(),
            key_id,
            signature_type,
            public_key: public_key_of(pair),
        }
    }

    /// Parses a verifier key `<name>+<hex key ID>+<base64(type || key)>`
    /// (type `0x01` or `0x04`), checking that the key ID matches.
    pub fn parse(vkey: &str) -> Result<Verifier, NoteKeyError> {
        // Split at the first two '+' only: base64 may contain '+'.
        let (name, rest) = vkey
            .split_once('+')
            .ok_or(NoteKeyError::MalformedVerifierKey)?;
        let (hex, encoded) = rest
            .split_once('+')
            .ok_or(NoteKeyError::MalformedVerifierKey)?;
        if !is_valid_key_name(name) {
            return Err(NoteKeyError::InvalidKeyName(name.to_owned()));
        }
        let claimed = parse_key_id(hex).ok_or(NoteKeyError::MalformedVerifierKey)?;
        let raw = STANDARD
            .decode(encoded)
            .map_err(|_| NoteKeyError::MalformedVerifierKey)?;
        let (&type_id, key) = raw
            .split_first()
            .ok_or(NoteKeyError::MalformedVerifierKey)?;
        let signature_type = SignatureType::from_id(type_id)
            .ok_or(NoteKeyError::UnsupportedSignatureType(type_id))?;
        let public_key = <[u8; ED25519_KEY_LEN]>::try_from(key)
            .map_err(|_| NoteKeyError::WrongKeyLength(key.len()))?;
        let verifier = Verifier::new(name, signature_type, public_key)?;
        if verifier.key_id != claimed {
            return Err(NoteKeyError::KeyIdMismatch {
                claimed,
                computed: verifier.key_id,
            });
        }
        Ok(verifier)
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature type.
    pub fn signature_type(&self) -> SignatureType {
        self.signature_type
    }

    /// The Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public_key
    }

    /// Verifies `signature` over a note's `text` (for a cosignature, the
    /// checkpoint text). The signature must carry this key's name and ID.
    pub fn verify(
        &self,
        text: &str,
        signature: &NoteSignature,
    ) -> Result<VerifiedSignature, NoteError> {
        let invalid = || NoteError::InvalidSignature {
            name: signature.name.clone(),
            key_id: signature.key_id,
        };
        if signature.name != self.name || signature.key_id != self.key_id {
            return Err(invalid());
        }
        let key = UnparsedPublicKey::new(&signature::ED25519, &self.public_key);
        let timestamp = match self.signature_type {
            SignatureType::Ed25519 => {
                key.verify(text.as_bytes(), &signature.signature)
                    .map_err(|_| invalid())?;
                None
            }
            SignatureType::CosignatureV1 => {
                let timestamp = signature.cosignature_timestamp().ok_or_else(invalid)?;
                check_timestamp(timestamp)?;
                let message = cosignature_message(text, timestamp);
                key.verify(&message, &signature.signature[TIMESTAMP_LEN..])
                    .map_err(|_| invalid())?;
                Some(timestamp)
            }
        };
        Ok(VerifiedSignature {
            name: self.name.clone(),
            key_id: self.key_id,
            signature_type: self.signature_type,
            timestamp,
        })
    }
}

impl fmt::Display for Verifier {
    /// The verifier key text form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = Vec::with_capacity(1 + ED25519_KEY_LEN);
        raw.push(self.signature_type.id());
        raw.extend_from_slice(&self.public_key);
        write!(
            f,
            "{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(raw)
        )
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({self})")
    }
}

impl FromStr for Verifier {
    type Err = NoteKeyError;

    fn from_str(vkey: &str) -> Result<Verifier, NoteKeyError> {
        Verifier::parse(vkey)
    }
}

/// The trusted keys a note is checked against, at most one per (name, key
/// ID).
#[derive(Debug, Clone, Default)]
pub struct Verifiers {
    keys: Vec<Verifier>,
}

impl Verifiers {
    /// A set of verifiers; exact duplicates collapse, two different keys with
    /// the same name and key ID are refused.
    pub fn new(verifiers: impl IntoIterator<Item = Verifier>) -> Result<Verifiers, NoteKeyError> {
        let mut keys: Vec<Verifier> = Vec::new();
        for verifier in verifiers {
            match keys
                .iter()
                .find(|k| k.name == verifier.name && k.key_id == verifier.key_id)
            {
                Some(existing) if *existing == verifier => {}
                Some(_) => {
                    return Err(NoteKeyError::AmbiguousVerifier {
                        name: verifier.name,
                        key_id: verifier.key_id,
                    });
                }
                None => keys.push(verifier),
            }
        }
        Ok(Verifiers { keys })
    }

    /// The verifier for a name and key ID.
    pub fn get(&self, name: &str, key_id: u32) -> Option<&Verifier> {
        self.keys
            .iter()
            .find(|k| k.name == name && k.key_id == key_id)
    }

    /// All verifiers.
    pub fn iter(&self) -> impl Iterator<Item = &Verifier> {
        self.keys.iter()
    }

    /// How many verifiers.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Signs notes with an Ed25519 key (signature type `0x01`).
///
/// `K` is an owned [`Ed25519KeyPair`] or a borrowed `&Ed25519KeyPair`.
pub struct NoteSigner<K = Ed25519KeyPair> {
    pub(super) name: String,
    pub(super) key_id: u32,
    pub(super) key: K,
}

/// Parses `PRIVATE+KEY+<name>+<hex key ID>+<base64(type || seed)>` and checks
/// the type and the key ID.
pub(super) fn parse_private_key(
    skey: &str,
    signature_type: SignatureType,
) -> Result<(String, Ed25519KeyPair), NoteKeyError> {
    let rest = skey
        .strip_prefix(PRIVATE_KEY_PREFIX)
        .ok_or(NoteKeyError::MalformedPrivateKey)?;
    let (name, rest) = rest
        .split_once('+')
        .ok_or(NoteKeyError::MalformedPrivateKey)?;
    let (hex, encoded) = rest
        .split_once('+')
        .ok_or(NoteKeyError::MalformedPrivateKey)?;
    if !is_valid_key_name(name) {
        return Err(NoteKeyError::InvalidKeyName(name.to_owned()));
    }
    let claimed = parse_key_id(hex).ok_or(NoteKeyError::MalformedPrivateKey)?;
    let raw = STANDARD
        .decode(encoded)
        .map_err(|_| NoteKeyError::MalformedPrivateKey)?;
    let (&type_id, seed) = raw.split_first().ok_or(NoteKeyError::MalformedPrivateKey)?;
    if SignatureType::from_id(type_id).is_none() {
        return Err(NoteKeyError::UnsupportedSignatureType(type_id));
    }
    if type_id != signature_type.id() {
        return Err(NoteKeyError::WrongSignatureType {
            expected: signature_type.id(),
            found: type_id,
        });
    }
    if seed.len() != ED25519_KEY_LEN {
        return Err(NoteKeyError::WrongKeyLength(seed.len()));
    }
    let pair = pair_from_seed(seed)?;
    let computed = key_id(name, signature_type, &public_key_of(&pair));
    if computed != claimed {
        return Err(NoteKeyError::KeyIdMismatch { claimed, computed });
    }
    Ok((name.to_owned(), pair))
}

/// The name and key ID of a signing key of `signature_type`: the name must
/// be valid (see [`is_valid_key_name`]).
pub(super) fn signing_key_id(
    name: &str,
    signature_type: SignatureType,
    pair: &Ed25519KeyPair,
) -> Result<(String, u32), NoteKeyError> {
    if !is_valid_key_name(name) {
        return Err(NoteKeyError::InvalidKeyName(name.to_owned()));
    }
    Ok((
        name.to_owned(),
        key_id(name, signature_type, &public_key_of(pair)),
    ))
}

/// The Ed25519 key pair in a PKCS#8 v2 document.
pub(super) fn pair_from_pkcs8(pkcs8: &[u8]) -> Result<Ed25519KeyPair, NoteKeyError> {
    Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| NoteKeyError::RejectedKey)
}

/// The Ed25519 key pair of a 32-byte seed.
pub(super) fn pair_from_seed(seed: &[u8]) -> Result<Ed25519KeyPair, NoteKeyError> {
    Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| NoteKeyError::RejectedKey)
}

impl<K: Borrow<Ed25519KeyPair>> NoteSigner<K> {
    /// A signer named `name` (for a log, its checkpoint origin).
    pub fn new(name: &str, key: K) -> Result<NoteSigner<K>, NoteKeyError> {
        let (name, key_id) = signing_key_id(name, SignatureType::Ed25519, key.borrow())?;
        Ok(NoteSigner { name, key_id, key })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier (print it for the verifier key text).
    pub fn verifier(&self) -> Verifier {
        Verifier::of_pair(
            &self.name,
            self.key_id,
            SignatureType::Ed25519,
            self.key.borrow(),
        )
    }
}

impl NoteSigner<Ed25519KeyPair> {
    /// A signer from a PKCS#8 v2 Ed25519 key (as `keys` writes them).
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<NoteSigner, NoteKeyError> {
        NoteSigner::new(name, pair_from_pkcs8(pkcs8)?)
    }

    /// A signer from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<NoteSigner, NoteKeyError> {
        NoteSigner::new(name, pair_from_seed(seed)?)
    }

    /// A signer from a Go-style private key string
    /// `PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>`.
    pub fn from_private_key(skey: &str) -> Result<NoteSigner, NoteKeyError> {
        let (name, pair) = parse_private_key(skey, SignatureType::Ed25519)?;
        NoteSigner::new(&name, pair)
    }
}

impl<K> fmt::Debug for NoteSigner<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteSigner({}+{:08x})", self.name, self.key_id)
    }
}

//! C2SP signed notes, tlog checkpoints and Ed25519 witness cosignatures.
//!
//! The audit log publishes its tree heads as checkpoints
//! (<https://c2sp.org/tlog-checkpoint>): a short text naming the log (the
//! origin), the tree size and the root hash, signed as a signed note
//! (<https://c2sp.org/signed-note>). The nodes act as witnesses: each checks
//! that a new checkpoint is consistent with the last one it cosigned and
//! returns a cosignature (<https://c2sp.org/tlog-cosignature>, Ed25519
//! `cosignature/v1`), which the broker appends to the note. A client that
//! trusts the log key and a quorum of node keys therefore knows every country
//! saw the same log. Using the C2SP formats rather than a casebridge format
//! lets standard tooling (Go's `sumdb/note`, transparency-dev witnesses and
//! monitors) read and check the log.
//!
//! Everything here is pure: no I/O and no clock (cosigners are given the
//! time). Signing is Ed25519 through ring; this module supports exactly two
//! signature types, `0x01` (note signatures) and `0x04` (cosignature/v1).
//!
//! Keys are identified as C2SP specifies: the key ID is the first four bytes
//! (big-endian) of `SHA-256(name || 0x0A || type || public key)`; verifier
//! keys are written `<name>+<8 hex digits key ID>+<base64(type || key)>`.
//!
//! Choices where the specifications leave room, all on the strict side:
//!
//! - Every signature by a known key is verified, and one that fails rejects
//!   the whole note (signed-note: "MAY reject"); repeated signatures by one
//!   key count once; repeated identical unknown signature lines are kept once.
//!   Go's `sumdb/note` instead verifies only the first signature per key.
//! - Base64 must be canonical (padded, no stray bits), so a parsed note
//!   serialises back to the same bytes.
//! - Key names also exclude control characters (they could not appear in a
//!   valid note anyway).
//! - A note carries at most [`MAX_SIGNATURES`] signatures (C2SP: at least 16
//!   must be accepted), which bounds the work of verifying one; callers
//!   still bound the size of the bytes they accept.
//! - [`open_checkpoint`] requires a verified `0x01` signature whose key name
//!   is the checkpoint's origin (tlog-checkpoint: "SHOULD match"), so a key
//!   trusted for one log cannot vouch for another, and cosignatures alone
//!   never make a checkpoint acceptable.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::digest;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};

use crate::protocol::merkle::Hash;

/// Most signatures a note may carry; C2SP requires accepting at least 16.
pub const MAX_SIGNATURES: usize = 100;

/// Start of every signature line: EM DASH (U+2014) and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
const PRIVATE_KEY_PREFIX: &str = "PRIVATE+KEY+";
const ED25519_KEY_LEN: usize = 32;
const ED25519_SIGNATURE_LEN: usize = 64;
const TIMESTAMP_LEN: usize = 8;
/// First line of the message an Ed25519 cosignature signs.
const COSIGNATURE_HEADER: &str = "cosignature/v1\n";

/// The signature types this module speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SignatureType {
    /// `0x01`: Ed25519 over the note text (signed-note).
    Ed25519,
    /// `0x04`: timestamped Ed25519 witness cosignature (tlog-cosignature).
    CosignatureV1,
}

impl SignatureType {
    /// The C2SP signature type identifier byte.
    pub const fn id(self) -> u8 {
        match self {
            SignatureType::Ed25519 => 0x01,
            SignatureType::CosignatureV1 => 0x04,
        }
    }

    /// The type with this identifier byte, if supported.
    pub const fn from_id(id: u8) -> Option<SignatureType> {
        match id {
            0x01 => Some(SignatureType::Ed25519),
            0x04 => Some(SignatureType::CosignatureV1),
            _ => None,
        }
    }
}

/// The C2SP key ID: `SHA-256(name || 0x0A || type || public key)[:4]`,
/// big-endian.
pub fn key_id(name: &str, signature_type: SignatureType, public_key: &[u8; 32]) -> u32 {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[signature_type.id()]);
    ctx.update(public_key);
    let sum = ctx.finish();
    let bytes = sum.as_ref();
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// Whether `name` is a valid key name: non-empty, with no Unicode white space,
/// no `+` and no control character.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c < ' ')
}

/// Why a note is malformed, or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Notes are UTF-8.
    #[error("note is not valid UTF-8")]
    InvalidUtf8,
    /// Notes hold no ASCII control character other than newline.
    #[error("control character U+{code:04X} at byte {offset}")]
    ControlCharacter { offset: usize, code: u32 },
    /// The text of a note ends with a newline.
    #[error("note text does not end with a newline")]
    TextWithoutFinalNewline,
    /// No blank line followed by at least one signature line.
    #[error("note has no blank line followed by signature lines")]
    NoSignatureBlock,
    /// The last signature line must end with a newline.
    #[error("the last signature line does not end with a newline")]
    UnterminatedSignature,
    /// A signature line must start with an em dash (U+2014) and a space.
    #[error("signature line {line} does not start with an em dash and a space")]
    SignaturePrefix { line: usize },
    /// The key name of a signature line is invalid (quoted by at most a
    /// short prefix: it may come from a peer).
    #[error("signature line {line}: invalid key name {name:?}")]
    InvalidKeyName { line: usize, name: String },
    /// A key name with nothing after it.
    #[error("signature line {line}: no signature after the key name")]
    MissingSignature { line: usize },
    /// The signature is not canonical standard base64.
    #[error("signature line {line}: signature is not canonical standard base64")]
    SignatureEncoding { line: usize },
    /// The decoded signature cannot hold a key ID and a signature.
    #[error("signature line {line}: {len} bytes cannot hold a key ID and a signature")]
    SignatureTooShort { line: usize, len: usize },
    /// Above [`MAX_SIGNATURES`].
    #[error("note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// A signature by a known key (or handed to its verifier) does not verify.
    #[error("signature by {name}+{key_id:08x} does not verify")]
    InvalidSignature { name: String, key_id: u32 },
    /// No signature is by a known key.
    #[error("no signature verifies with a known key")]
    NoVerifiedSignature,
    /// Cosignature timestamps are at most 2^63 − 1.
    #[error("cosignature timestamp {0} is above 2^63 - 1")]
    TimestampOutOfRange(u64),
}

/// Why a verifier key, a private key or a set of verifiers is unusable.
/// Never carries secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteKeyError {
    /// See [`is_valid_key_name`].
    #[error("invalid key name {0:?}: non-empty, without spaces, '+' or control characters")]
    InvalidKeyName(String),
    /// Not `<name>+<8 hex digits>+<base64>`.
    #[error("verifier key is not <name>+<8 hex digits>+<base64(type || key)>")]
    MalformedVerifierKey,
    /// Not `PRIVATE+KEY+<name>+<8 hex digits>+<base64>`.
    #[error("private key is not PRIVATE+KEY+<name>+<8 hex digits>+<base64(type || seed)>")]
    MalformedPrivateKey,
    /// A type other than `0x01` and `0x04`.
    #[error("signature type 0x{0:02x} is not supported (0x01 Ed25519, 0x04 cosignature/v1)")]
    UnsupportedSignatureType(u8),
    /// A supported type where the other one is needed.
    #[error("signature type 0x{found:02x} where 0x{expected:02x} is needed")]
    WrongSignatureType { expected: u8, found: u8 },
    /// Ed25519 keys and seeds are 32 bytes.
    #[error("key is {0} bytes, Ed25519 keys are 32")]
    WrongKeyLength(usize),
    /// The key ID written in the key is not the one computed from it.
    #[error("key ID {claimed:08x} does not match the key (computed {computed:08x})")]
    KeyIdMismatch { claimed: u32, computed: u32 },
    /// ring refused the private key.
    #[error("the Ed25519 private key was rejected")]
    RejectedKey,
    /// Two different keys with the same name and key ID.
    #[error("two different keys for {name}+{key_id:08x}")]
    AmbiguousVerifier { name: String, key_id: u32 },
}

/// Why a checkpoint is malformed or not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The signed note around it is malformed or does not verify.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The checkpoint text ends with a newline.
    #[error("checkpoint text does not end with a newline")]
    MissingFinalNewline,
    /// Origin, size and root hash are required.
    #[error("checkpoint has {0} lines, at least 3 are needed")]
    TooFewLines(usize),
    /// No line, extensions included, may be empty.
    #[error("checkpoint line {0} is empty")]
    EmptyLine(usize),
    /// A line holds a control character (a newline, for fields given to
    /// [`Checkpoint::new`]).
    #[error("checkpoint line {0} holds a control character")]
    ControlCharacter(usize),
    /// The size line is not ASCII decimal without leading zeros, or overflows.
    #[error("checkpoint tree size is not a decimal number without leading zeros")]
    BadTreeSize,
    /// The root hash line is not canonical base64 of 32 bytes.
    #[error("checkpoint root hash is not the base64 of 32 bytes")]
    BadRootHash,
    /// No verified `0x01` signature by a key named like the origin.
    #[error("no verified signature by the log {origin:?} itself")]
    NoLogSignature { origin: String },
    /// Signing with a key whose name is not the origin.
    #[error("log key {key_name:?} cannot sign checkpoints of origin {origin:?}")]
    OriginMismatch { origin: String, key_name: String },
}

fn check_control_characters(s: &str) -> Result<(), NoteError> {
    match s.char_indices().find(|&(_, c)| c < ' ' && c != '\n') {
        Some((offset, c)) => Err(NoteError::ControlCharacter {
            offset,
            code: u32::from(c),
        }),
        None => Ok(()),
    }
}

/// Parses exactly eight hex digits.
fn parse_key_id(hex: &str) -> Option<u32> {
    if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(hex, 16).ok()
}

fn public_key_of(pair: &Ed25519KeyPair) -> [u8; ED25519_KEY_LEN] {
    let mut key = [0u8; ED25519_KEY_LEN];
    // ring's Ed25519 public keys are always 32 bytes.
    key.copy_from_slice(pair.public_key().as_ref());
    key
}

/// One signature line of a note: key name, key ID and signature bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NoteSignature {
    name: String,
    key_id: u32,
    signature: Vec<u8>,
}

impl NoteSignature {
    /// A signature line from its parts; the signature has at least one byte
    /// (else [`NoteError::SignatureTooShort`]).
    pub fn new(name: &str, key_id: u32, signature: Vec<u8>) -> Result<NoteSignature, NoteError> {
        if !is_valid_key_name(name) {
            return Err(NoteError::InvalidKeyName {
                line: 1,
                name: crate::protocol::bounds::quote(name),
            });
        }
        if signature.is_empty() {
            return Err(NoteError::SignatureTooShort { line: 1, len: 4 });
        }
        Ok(NoteSignature {
            name: name.to_owned(),
            key_id,
            signature,
        })
    }

    /// Parses one signature line, `— <name> <base64(key ID || signature)>`,
    /// with or without its final newline (e.g. a cosignature a witness
    /// returned).
    pub fn parse_line(line: &str) -> Result<NoteSignature, NoteError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        check_control_characters(line)?;
        if line.contains('\n') {
            return Err(NoteError::ControlCharacter {
                offset: line.find('\n').unwrap_or(0),
                code: 0x0A,
            });
        }
        Self::parse_numbered(line, 1)
    }

    /// Parses signature line number `number` (from 1) of a note, without its
    /// newline.
    fn parse_numbered(line: &str, number: usize) -> Result<NoteSignature, NoteError> {
        let rest = line
            .strip_prefix(SIGNATURE_PREFIX)
            .ok_or(NoteError::SignaturePrefix { line: number })?;
        let (name, encoded) = rest.split_once(' ').unwrap_or((rest, ""));
        if !is_valid_key_name(name) {
            return Err(NoteError::InvalidKeyName {
                line: number,
                name: crate::protocol::bounds::quote(name),
            });
        }
        if encoded.is_empty() {
            return Err(NoteError::MissingSignature { line: number });
        }
        let raw = STANDARD
            .decode(encoded)
            .map_err(|_| NoteError::SignatureEncoding { line: number })?;
        if raw.len() < 5 {
            return Err(NoteError::SignatureTooShort {
                line: number,
                len: raw.len(),
            });
        }
        let (id, signature) = raw.split_at(4);
        Ok(NoteSignature {
            name: name.to_owned(),
            key_id: u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
            signature: signature.to_vec(),
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The signature bytes after the key ID (for a cosignature: timestamp
    /// and Ed25519 signature).
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The line as it appears in a note, newline included.
    pub fn to_line(&self) -> String {
        let mut raw = Vec::with_capacity(4 + self.signature.len());
        raw.extend_from_slice(&self.key_id.to_be_bytes());
        raw.extend_from_slice(&self.signature);
        format!("{SIGNATURE_PREFIX}{} {}\n", self.name, STANDARD.encode(raw))
    }

    /// The timestamp of a signature shaped like an Ed25519 cosignature
    /// (8-byte timestamp and 64-byte signature), unverified.
    pub fn cosignature_timestamp(&self) -> Option<u64> {
        if self.signature.len() != TIMESTAMP_LEN + ED25519_SIGNATURE_LEN {
            return None;
        }
        let mut ts = [0u8; TIMESTAMP_LEN];
        ts.copy_from_slice(&self.signature[..TIMESTAMP_LEN]);
        Some(u64::from_be_bytes(ts))
    }

    fn same_key(&self, other: &NoteSignature) -> bool {
        self.name == other.name && self.key_id == other.key_id
    }
}

/// A signature that verified, and with which kind of key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    name: String,
    key_id: u32,
    signature_type: SignatureType,
    timestamp: Option<u64>,
}

impl VerifiedSignature {
    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The key's signature type.
    pub fn signature_type(&self) -> SignatureType {
        self.signature_type
    }

    /// The signed time of a cosignature (POSIX seconds); `None` for `0x01`.
    pub fn timestamp(&self) -> Option<u64> {
        self.timestamp
    }
}

/// A trusted public key: name, type and Ed25519 key, with the key ID they
/// determine.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Verifier {
    name: String,
    key_id: u32,
    signature_type: SignatureType,
    public_key: [u8; ED25519_KEY_LEN],
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

/// A signed note: text and signature lines, verified or not.
///
/// Serialised as the text, a blank line and one line per signature; the text
/// is separated from the signatures by the last blank line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl Note {
    /// An unsigned note; the text must end with a newline and hold no control
    /// character other than newline.
    pub fn new(text: impl Into<String>) -> Result<Note, NoteError> {
        let text = text.into();
        check_control_characters(&text)?;
        if !text.ends_with('\n') {
            return Err(NoteError::TextWithoutFinalNewline);
        }
        Ok(Note {
            text,
            signatures: Vec::new(),
        })
    }

    /// Parses a signed note, without verifying anything.
    pub fn parse(msg: &[u8]) -> Result<Note, NoteError> {
        let msg = std::str::from_utf8(msg).map_err(|_| NoteError::InvalidUtf8)?;
        check_control_characters(msg)?;
        let split = msg.rfind("\n\n").ok_or(NoteError::NoSignatureBlock)?;
        let (text, block) = (&msg[..split + 1], &msg[split + 2..]);
        if block.is_empty() {
            return Err(NoteError::NoSignatureBlock);
        }
        let block = block
            .strip_suffix('\n')
            .ok_or(NoteError::UnterminatedSignature)?;
        let mut signatures = Vec::new();
        for (i, line) in block.split('\n').enumerate() {
            if i == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            signatures.push(NoteSignature::parse_numbered(line, i + 1)?);
        }
        Ok(Note {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The text, final newline included.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines, in order.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Adds a signature line at the end, replacing any by the same key
    /// (name and key ID).
    pub fn add_signature(&mut self, signature: NoteSignature) -> Result<(), NoteError> {
        self.signatures.retain(|s| !s.same_key(&signature));
        if self.signatures.len() >= MAX_SIGNATURES {
            return Err(NoteError::TooManySignatures);
        }
        self.signatures.push(signature);
        Ok(())
    }

    /// Signs the text with `signer` (replacing an earlier signature by the
    /// same key).
    pub fn sign<K: Borrow<Ed25519KeyPair>>(
        &mut self,
        signer: &NoteSigner<K>,
    ) -> Result<(), NoteError> {
        let signature = signer.key.borrow().sign(self.text.as_bytes());
        self.add_signature(NoteSignature {
            name: signer.name.clone(),
            key_id: signer.key_id,
            signature: signature.as_ref().to_vec(),
        })
    }

    /// The serialised note. Only a note with at least one signature is a
    /// valid signed note.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    /// Verifies the note against trusted keys.
    ///
    /// Every signature by a known key must verify (else
    /// [`NoteError::InvalidSignature`]) and at least one must exist (else
    /// [`NoteError::NoVerifiedSignature`]). Signatures by unknown keys,
    /// including ones sharing a name or a key ID (but not both) with a known
    /// key, are kept as unverified and otherwise ignored.
    pub fn verify(&self, verifiers: &Verifiers) -> Result<VerifiedNote, NoteError> {
        let mut verified: Vec<VerifiedSignature> = Vec::new();
        let mut unverified: Vec<NoteSignature> = Vec::new();
        for signature in &self.signatures {
            match verifiers.get(&signature.name, signature.key_id) {
                Some(verifier) => {
                    let ok = verifier.verify(&self.text, signature)?;
                    if !verified
                        .iter()
                        .any(|v| v.name == ok.name && v.key_id == ok.key_id)
                    {
                        verified.push(ok);
                    }
                }
                None => {
                    if !unverified.contains(signature) {
                        unverified.push(signature.clone());
                    }
                }
            }
        }
        if verified.is_empty() {
            return Err(NoteError::NoVerifiedSignature);
        }
        Ok(VerifiedNote {
            note: self.clone(),
            verified,
            unverified,
        })
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)?;
        f.write_str("\n")?;
        for signature in &self.signatures {
            f.write_str(&signature.to_line())?;
        }
        Ok(())
    }
}

/// Parses and verifies a signed note ([`Note::parse`], [`Note::verify`]).
pub fn open(msg: &[u8], verifiers: &Verifiers) -> Result<VerifiedNote, NoteError> {
    Note::parse(msg)?.verify(verifiers)
}

/// A note with at least one signature verified by a trusted key. Only
/// [`Note::verify`] makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedNote {
    note: Note,
    verified: Vec<VerifiedSignature>,
    unverified: Vec<NoteSignature>,
}

impl VerifiedNote {
    /// The text.
    pub fn text(&self) -> &str {
        &self.note.text
    }

    /// The note as parsed, all signature lines included.
    pub fn note(&self) -> &Note {
        &self.note
    }

    /// One entry per trusted key that signed, in note order.
    pub fn verified(&self) -> &[VerifiedSignature] {
        &self.verified
    }

    /// Signatures by unknown keys (identical lines once).
    pub fn unverified(&self) -> &[NoteSignature] {
        &self.unverified
    }
}

/// Signs notes with an Ed25519 key (signature type `0x01`).
///
/// `K` is an owned [`Ed25519KeyPair`] or a borrowed `&Ed25519KeyPair`.
pub struct NoteSigner<K = Ed25519KeyPair> {
    name: String,
    key_id: u32,
    key: K,
}

/// Parses `PRIVATE+KEY+<name>+<hex key ID>+<base64(type || seed)>` and checks
/// the type and the key ID.
fn parse_private_key(
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
    let pair = Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| NoteKeyError::RejectedKey)?;
    let computed = key_id(name, signature_type, &public_key_of(&pair));
    if computed != claimed {
        return Err(NoteKeyError::KeyIdMismatch { claimed, computed });
    }
    Ok((name.to_owned(), pair))
}

fn checked_name(name: &str) -> Result<String, NoteKeyError> {
    if is_valid_key_name(name) {
        Ok(name.to_owned())
    } else {
        Err(NoteKeyError::InvalidKeyName(name.to_owned()))
    }
}

impl<K: Borrow<Ed25519KeyPair>> NoteSigner<K> {
    /// A signer named `name` (for a log, its checkpoint origin).
    pub fn new(name: &str, key: K) -> Result<NoteSigner<K>, NoteKeyError> {
        let name = checked_name(name)?;
        let key_id = key_id(&name, SignatureType::Ed25519, &public_key_of(key.borrow()));
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
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            signature_type: SignatureType::Ed25519,
            public_key: public_key_of(self.key.borrow()),
        }
    }
}

impl NoteSigner<Ed25519KeyPair> {
    /// A signer from a PKCS#8 v2 Ed25519 key (as `keys` writes them).
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<NoteSigner, NoteKeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| NoteKeyError::RejectedKey)?;
        NoteSigner::new(name, pair)
    }

    /// A signer from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<NoteSigner, NoteKeyError> {
        let pair =
            Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| NoteKeyError::RejectedKey)?;
        NoteSigner::new(name, pair)
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
        let name = checked_name(name)?;
        let key_id = key_id(
            &name,
            SignatureType::CosignatureV1,
            &public_key_of(key.borrow()),
        );
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
        Verifier {
            name: self.name.clone(),
            key_id: self.key_id,
            signature_type: SignatureType::CosignatureV1,
            public_key: public_key_of(self.key.borrow()),
        }
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
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|_| NoteKeyError::RejectedKey)?;
        Cosigner::new(name, pair)
    }

    /// A cosigner from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Cosigner, NoteKeyError> {
        let pair =
            Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| NoteKeyError::RejectedKey)?;
        Cosigner::new(name, pair)
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

fn check_timestamp(timestamp: u64) -> Result<(), NoteError> {
    if timestamp > i64::MAX as u64 {
        Err(NoteError::TimestampOutOfRange(timestamp))
    } else {
        Ok(())
    }
}

/// The message an Ed25519 cosignature signs: `cosignature/v1\n`,
/// `time <decimal seconds>\n`, then the whole checkpoint text, extension lines
/// included.
fn cosignature_message(checkpoint_text: &str, timestamp: u64) -> Vec<u8> {
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

/// A tlog checkpoint: the body of a log's signed tree head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    origin: String,
    size: u64,
    root_hash: Hash,
    extensions: Vec<String>,
}

fn check_line(line: &str, number: usize) -> Result<(), CheckpointError> {
    if line.is_empty() {
        return Err(CheckpointError::EmptyLine(number));
    }
    if line.chars().any(|c| c < ' ') {
        return Err(CheckpointError::ControlCharacter(number));
    }
    Ok(())
}

fn parse_tree_size(line: &str) -> Result<u64, CheckpointError> {
    let canonical =
        line.bytes().all(|b| b.is_ascii_digit()) && (line == "0" || !line.starts_with('0'));
    if !canonical {
        return Err(CheckpointError::BadTreeSize);
    }
    line.parse().map_err(|_| CheckpointError::BadTreeSize)
}

impl Checkpoint {
    /// A checkpoint without extension lines. The origin must be non-empty and
    /// hold no control character.
    pub fn new(
        origin: impl Into<String>,
        size: u64,
        root_hash: Hash,
    ) -> Result<Checkpoint, CheckpointError> {
        let origin = origin.into();
        check_line(&origin, 1)?;
        Ok(Checkpoint {
            origin,
            size,
            root_hash,
            extensions: Vec::new(),
        })
    }

    /// The same checkpoint with extension lines (each non-empty, no control
    /// character). tlog-checkpoint does not recommend them: monitors cannot
    /// audit them.
    pub fn with_extensions(
        mut self,
        extensions: Vec<String>,
    ) -> Result<Checkpoint, CheckpointError> {
        for (i, line) in extensions.iter().enumerate() {
            check_line(line, i + 4)?;
        }
        self.extensions = extensions;
        Ok(self)
    }

    /// Parses a checkpoint from a note text: origin, decimal size (no leading
    /// zeros), base64 root hash, then optional non-empty extension lines.
    pub fn parse(text: &str) -> Result<Checkpoint, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::MissingFinalNewline)?;
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() < 3 {
            return Err(CheckpointError::TooFewLines(lines.len()));
        }
        for (i, line) in lines.iter().enumerate() {
            check_line(line, i + 1)?;
        }
        let size = parse_tree_size(lines[1])?;
        let root = STANDARD
            .decode(lines[2])
            .map_err(|_| CheckpointError::BadRootHash)?;
        let root_hash =
            Hash::try_from(root.as_slice()).map_err(|_| CheckpointError::BadRootHash)?;
        Ok(Checkpoint {
            origin: lines[0].to_owned(),
            size,
            root_hash,
            extensions: lines[3..].iter().map(|l| (*l).to_owned()).collect(),
        })
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The tree size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash of the tree at that size.
    pub fn root_hash(&self) -> &Hash {
        &self.root_hash
    }

    /// The extension lines.
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The note text: one line each for origin, size, root hash and
    /// extensions, each ending with a newline.
    pub fn text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root_hash)
        );
        for line in &self.extensions {
            text.push_str(line);
            text.push('\n');
        }
        text
    }
}

/// Signs `checkpoint` as its log. The signer's key name must be the origin.
pub fn sign_checkpoint<K: Borrow<Ed25519KeyPair>>(
    checkpoint: &Checkpoint,
    signer: &NoteSigner<K>,
) -> Result<Note, CheckpointError> {
    if signer.name() != checkpoint.origin() {
        return Err(CheckpointError::OriginMismatch {
            origin: checkpoint.origin.clone(),
            key_name: signer.name.clone(),
        });
    }
    let mut note = Note::new(checkpoint.text())?;
    note.sign(signer)?;
    Ok(note)
}

/// A checkpoint whose log signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedCheckpoint {
    checkpoint: Checkpoint,
    note: VerifiedNote,
}

impl OpenedCheckpoint {
    /// The checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The verified note around it (all signatures).
    pub fn note(&self) -> &VerifiedNote {
        &self.note
    }

    /// The verified cosignatures by trusted witnesses, one per witness key.
    pub fn cosignatures(&self) -> impl Iterator<Item = &VerifiedSignature> {
        self.note
            .verified
            .iter()
            .filter(|s| s.signature_type == SignatureType::CosignatureV1)
    }
}

/// Parses and verifies a signed checkpoint: the note must verify (see
/// [`Note::verify`]), its text must be a checkpoint, and one verified
/// signature must be an Ed25519 (`0x01`) signature by a key named like the
/// origin. Cosignatures by keys in `verifiers` are verified too and listed by
/// [`OpenedCheckpoint::cosignatures`]; counting them against a policy is the
/// caller's business.
pub fn open_checkpoint(
    msg: &[u8],
    verifiers: &Verifiers,
) -> Result<OpenedCheckpoint, CheckpointError> {
    // The text is looked at only once a trusted key has vouched for it.
    let note = open(msg, verifiers)?;
    let checkpoint = Checkpoint::parse(note.text())?;
    let by_log = note
        .verified
        .iter()
        .any(|s| s.signature_type == SignatureType::Ed25519 && s.name == checkpoint.origin);
    if !by_log {
        return Err(CheckpointError::NoLogSignature {
            origin: checkpoint.origin,
        });
    }
    Ok(OpenedCheckpoint { checkpoint, note })
}

#[cfg(test)]
#[path = "note_tests.rs"]
mod tests;

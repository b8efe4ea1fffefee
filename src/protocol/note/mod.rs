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
//!
//! The module is split by concern: this file holds signed notes (text,
//! signature lines, verification); `keys` the verifier keys, the sets of
//! them and the note signer; `checkpoint` the tlog checkpoint body and its
//! signing and opening; `cosignature` the witness cosigner and the
//! cosignature check.

use std::borrow::Borrow;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::digest;
use ring::signature::Ed25519KeyPair;

mod checkpoint;
mod cosignature;
mod keys;

pub use checkpoint::{
    Checkpoint, CheckpointError, OpenedCheckpoint, open_checkpoint, sign_checkpoint,
};
pub use cosignature::{Cosigner, verify_cosignature};
pub use keys::{NoteSigner, Verifier, Verifiers};

/// Most signatures a note may carry; C2SP requires accepting at least 16.
pub const MAX_SIGNATURES: usize = 100;

/// Start of every signature line: EM DASH (U+2014) and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";
const ED25519_KEY_LEN: usize = 32;
const ED25519_SIGNATURE_LEN: usize = 64;
const TIMESTAMP_LEN: usize = 8;

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
    #[error(
        "signature line {line}: invalid key name {}",
        crate::protocol::bounds::escaped(name)
    )]
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
    #[error(
        "invalid key name {}: non-empty, without spaces, '+' or control characters",
        crate::protocol::bounds::escaped(.0)
    )]
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

fn check_control_characters(s: &str) -> Result<(), NoteError> {
    match s.char_indices().find(|&(_, c)| c < ' ' && c != '\n') {
        Some((offset, c)) => Err(NoteError::ControlCharacter {
            offset,
            code: u32::from(c),
        }),
        None => Ok(()),
    }
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

#[cfg(test)]
#[path = "../note_tests.rs"]
mod tests;

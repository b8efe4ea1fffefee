//! tlog checkpoints (<https://c2sp.org/tlog-checkpoint>): the body of a
//! log's signed tree head, signing it as the log and opening a signed one.

use std::borrow::Borrow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::signature::Ed25519KeyPair;

use super::{
    Note, NoteError, NoteSigner, SignatureType, VerifiedNote, VerifiedSignature, Verifiers, open,
};
use crate::protocol::merkle::Hash;

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
    #[error(
        "no verified signature by the log {} itself",
        crate::protocol::bounds::escaped(origin)
    )]
    NoLogSignature { origin: String },
    /// Signing with a key whose name is not the origin.
    #[error(
        "log key {} cannot sign checkpoints of origin {}",
        crate::protocol::bounds::escaped(key_name),
        crate::protocol::bounds::escaped(origin)
    )]
    OriginMismatch { origin: String, key_name: String },
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

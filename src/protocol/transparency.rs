//! The transparency log's keys as the signed directory pins them, shared by
//! the broker (which signs checkpoints and collects cosignatures), the nodes
//! (which witness them) and the auditors: the verifier of the log's own
//! checkpoint signatures, and the name and verifier under which each node
//! cosigns.

use crate::protocol::directory::Directory;
use crate::protocol::ids::Country;
use crate::protocol::note::{SignatureType, Verifier};

/// Why the directory yields no verifier for the log's checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum LogKeyError {
    #[error("the directory pins no transparency log key")]
    NoLogKey,
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

/// The key name a node cosigns checkpoints under.
pub fn witness_name(federation: &str, node: Country) -> String {
    format!("{federation}/node/{node}")
}

/// The verifier of node `cc`'s cosignatures: its directory signing key,
/// under its witness name.
pub fn witness_verifier(dir: &Directory, cc: Country) -> Option<Verifier> {
    let n = dir.node(cc)?;
    Verifier::new(
        &witness_name(&dir.federation, cc),
        SignatureType::CosignatureV1,
        n.signing_key,
    )
    .ok()
}

/// The verifiers of node `cc`'s cosignatures at `now_ms`: its current
/// signing key, then each retired key still within its overlap.
pub fn witness_verifiers(dir: &Directory, cc: Country, now_ms: i64) -> Vec<Verifier> {
    let Some(n) = dir.node(cc) else {
        return Vec::new();
    };
    let name = witness_name(&dir.federation, cc);
    n.signing_keys_at(now_ms)
        .filter_map(|k| Verifier::new(&name, SignatureType::CosignatureV1, *k).ok())
        .collect()
}

/// The verifier of the log's checkpoints, as the directory pins it.
pub fn log_verifier(dir: &Directory) -> Result<Verifier, LogKeyError> {
    let log = dir.log().ok_or(LogKeyError::NoLogKey)?;
    Verifier::new(&log.origin, SignatureType::Ed25519, log.public_key)
        .map_err(|e| LogKeyError::Checkpoint(e.to_string()))
}

//! The directory files a party keeps: the signed directory and the pinned
//! directory public key. Verifying what was read is the core's
//! (`protocol::directory::Directory::verify`).

use std::path::Path;

use anyhow::Context as _;
use prost::Message as _;

use crate::protocol::directory::Directory;
use crate::protocol::proto::v1;

/// Loads a signed directory file and verifies it.
pub fn load(path: &Path, directory_key: &[u8], federation: &str) -> anyhow::Result<Directory> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    verify_bytes(&bytes, directory_key, federation).with_context(|| path.display().to_string())
}

/// Decodes and verifies a signed directory file's bytes.
pub fn verify_bytes(
    bytes: &[u8],
    directory_key: &[u8],
    federation: &str,
) -> anyhow::Result<Directory> {
    let signed = v1::SignedDirectory::decode(bytes).context("not a signed directory")?;
    Directory::verify(&signed, directory_key, federation).context("directory refused")
}

/// Reads a pinned public key file (hex, one line).
pub fn load_public_key(path: &Path) -> anyhow::Result<[u8; 32]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let raw = hex::decode(text.trim())
        .with_context(|| format!("{}: expected a hex Ed25519 public key", path.display()))?;
    raw.as_slice()
        .try_into()
        .map_err(|_| anyhow::anyhow!("{}: expected 32 bytes, got {}", path.display(), raw.len()))
}

//! Trust: the log key and the witnesses, from the signed directory.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};

use crate::protocol::bounds::quoted;
use crate::protocol::directory::{Directory, LogInfo};
use crate::protocol::ids::Country;
use crate::protocol::note::{self, Checkpoint, SignatureType, Verifier, Verifiers};
use crate::protocol::transparency::witness_name;

use super::*;

// ---- trust: the log key and the witnesses -----------------------------------

/// The log's checkpoint key, as the verified directory pins it.
fn log_key(dir: &Directory) -> anyhow::Result<&LogInfo> {
    let log = dir.log().ok_or_else(|| {
        anyhow!(
            "directory version {} names no transparency log (Directory.log); \
             the audit log cannot be verified",
            dir.version
        )
    })?;
    if log.origin.is_empty() {
        bail!("directory version {}: the log has no origin", dir.version);
    }
    Ok(log)
}

/// A node as a witness.
#[derive(Debug, Clone)]
pub(super) struct Witness {
    pub(super) country: Country,
    pub(super) revoked: bool,
    pub(super) verifier: Verifier,
    /// For a retired key: the end of its overlap (ms); only cosignatures
    /// made before it count.
    pub(super) until_ms: Option<i64>,
}

/// Everything an auditor checks a checkpoint with: the log key and the
/// nodes' cosigning keys.
#[derive(Debug, Clone)]
pub struct LogTrust {
    pub(super) origin: String,
    pub(super) log: Verifier,
    pub(super) log_only: Verifiers,
    pub(super) witnesses: Vec<Witness>,
}

/// A witness's verified cosignature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    pub country: Country,
    /// The key name, `<federation>/node/<CC>`.
    pub name: String,
    /// When the node cosigned (POSIX seconds, as signed).
    pub timestamp: u64,
    /// The node is revoked in the directory: shown, but not counted.
    pub revoked: bool,
}

/// A checkpoint whose log signature and every witness cosignature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The signed note exactly as served.
    pub note: Vec<u8>,
    /// The log key it was opened with, in verifier-key form.
    pub log_key: String,
    /// One per witness, in country order.
    pub cosignatures: Vec<Cosignature>,
    /// Unrevoked nodes that did not cosign it.
    pub missing: Vec<Country>,
    /// Signature lines by keys the directory does not list (`name+keyid`).
    pub unknown: Vec<String>,
}

impl CheckedCheckpoint {
    /// Cosignatures by unrevoked nodes.
    pub fn counted_cosignatures(&self) -> usize {
        self.cosignatures.iter().filter(|c| !c.revoked).count()
    }

    /// "cosigned by 2 of 3 nodes: HR at ..., RS at ..." and the rest, one
    /// line each.
    pub fn cosignature_lines(&self) -> Vec<String> {
        let total = self.counted_cosignatures() + self.missing.len();
        let mut lines = Vec::new();
        if self.cosignatures.is_empty() {
            lines.push(format!("no witness cosignatures (0 of {total} nodes)"));
        } else {
            lines.push(format!(
                "cosigned by {} of {total} nodes:",
                self.counted_cosignatures()
            ));
            for c in &self.cosignatures {
                lines.push(format!(
                    "  {}  {}  at {}{}",
                    c.country,
                    c.name,
                    format_seconds(c.timestamp),
                    if c.revoked {
                        "  (node revoked: not counted)"
                    } else {
                        ""
                    }
                ));
            }
        }
        if !self.missing.is_empty() {
            let missing: Vec<String> = self.missing.iter().map(Country::to_string).collect();
            lines.push(format!("not cosigned by: {}", missing.join(", ")));
        }
        if !self.unknown.is_empty() {
            lines.push(format!(
                "signatures by keys not in the directory (ignored): {}",
                self.unknown.join(", ")
            ));
        }
        lines
    }
}

impl LogTrust {
    /// The log key and the witnesses of a verified directory.
    pub fn from_directory(dir: &Directory) -> anyhow::Result<LogTrust> {
        let key = log_key(dir)?;
        let log = Verifier::new(&key.origin, SignatureType::Ed25519, key.public_key)
            .with_context(|| format!("log origin {}", quoted(&key.origin)))?;
        let log_only = Verifiers::new([log.clone()])?;
        let mut witnesses = Vec::new();
        for node in dir.nodes() {
            let name = witness_name(&dir.federation, node.country);
            let verifier = Verifier::new(&name, SignatureType::CosignatureV1, node.signing_key)
                .with_context(|| format!("witness key name {}", quoted(&name)))?;
            witnesses.push(Witness {
                country: node.country,
                revoked: node.revoked,
                verifier,
                until_ms: None,
            });
            for retired in &node.previous {
                let verifier =
                    Verifier::new(&name, SignatureType::CosignatureV1, retired.signing_key)
                        .with_context(|| format!("witness key name {}", quoted(&name)))?;
                witnesses.push(Witness {
                    country: node.country,
                    revoked: node.revoked,
                    verifier,
                    until_ms: Some(retired.valid_until_ms),
                });
            }
        }
        Ok(LogTrust {
            origin: key.origin.clone(),
            log,
            log_only,
            witnesses,
        })
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Opens a signed checkpoint: the log's own Ed25519 signature must
    /// verify (key named like the origin), and so must every cosignature by
    /// a key the directory lists for a node. A cosignature that fails is an
    /// error, not a missing witness: the broker attached a forged or broken
    /// signature to the log's checkpoint.
    pub fn open(&self, note_bytes: &[u8]) -> anyhow::Result<CheckedCheckpoint> {
        let opened = note::open_checkpoint(note_bytes, &self.log_only)
            .map_err(|e| anyhow!("does not verify with the log key {}: {e}", self.log))?;
        let checkpoint = opened.checkpoint().clone();
        let mut by_country: BTreeMap<Country, Cosignature> = BTreeMap::new();
        let mut unknown = Vec::new();
        for sig in opened.note().unverified() {
            let witness = self
                .witnesses
                .iter()
                .find(|w| w.verifier.name() == sig.name() && w.verifier.key_id() == sig.key_id());
            let Some(w) = witness else {
                let label = format!("{}+{:08x}", sig.name(), sig.key_id());
                if !unknown.contains(&label) {
                    unknown.push(label);
                }
                continue;
            };
            let timestamp =
                note::verify_cosignature(&checkpoint, sig, &w.verifier).map_err(|e| {
                    anyhow!(
                        "checkpoint of size {} carries a cosignature by {} (node {}) that does not \
                     verify: {e}",
                        checkpoint.size(),
                        sig.name(),
                        w.country
                    )
                })?;
            if let Some(until) = w.until_ms {
                let made_ms = i64::try_from(timestamp)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000);
                if made_ms >= until {
                    bail!(
                        "checkpoint of size {} carries a cosignature by a retired key of node {} \
                         made after that key's overlap ended",
                        checkpoint.size(),
                        w.country
                    );
                }
            }
            let entry = by_country.entry(w.country).or_insert(Cosignature {
                country: w.country,
                name: w.verifier.name().to_string(),
                timestamp,
                revoked: w.revoked,
            });
            entry.timestamp = entry.timestamp.max(timestamp);
        }
        let missing = self
            .witnesses
            .iter()
            .filter(|w| !w.revoked && !by_country.contains_key(&w.country))
            .map(|w| w.country)
            .collect();
        Ok(CheckedCheckpoint {
            checkpoint,
            note: note_bytes.to_vec(),
            log_key: self.log.to_string(),
            cosignatures: by_country.into_values().collect(),
            missing,
            unknown,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::audit::test_support::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    #[test]
    fn opens_checkpoints_and_reports_witnesses() {
        let origin = "casebridge.test/audit-log";
        let trust = trust_with(
            origin,
            [1; 32],
            &[
                ("HR", [2; 32], false),
                ("RS", [3; 32], false),
                ("BA", [4; 32], true),
            ],
        );
        let bytes = cosigned(
            origin,
            7,
            &[
                ("HR", [2; 32], 1_700_000_000),
                ("BA", [4; 32], 1_700_000_100),
                ("ME", [5; 32], 1),
            ],
        );
        let c = trust.open(&bytes).expect("open");
        assert_eq!(c.checkpoint.size(), 7);
        let who: Vec<&str> = c.cosignatures.iter().map(|c| c.country.as_str()).collect();
        assert_eq!(who, ["BA", "HR"]);
        assert_eq!(c.counted_cosignatures(), 1);
        assert_eq!(c.missing, vec!["RS".parse::<Country>().expect("cc")]);
        assert_eq!(c.unknown.len(), 1);
        assert!(c.unknown[0].starts_with("casebridge.test/node/ME+"));
        let lines = c.cosignature_lines().join("\n");
        assert!(lines.contains("cosigned by 1 of 2 nodes"), "{lines}");
        assert!(lines.contains("2023-11-14T22:13:20Z"), "{lines}");

        // A cosignature by HR's name and key ID that does not verify.
        let forged = cosigned(origin, 7, &[("HR", [2; 32], 5)]);
        let text = String::from_utf8(forged).expect("utf8");
        let (body, sigs) = text.split_at(text.rfind("\n\n").expect("sigs") + 2);
        let mut lines: Vec<String> = sigs.lines().map(str::to_string).collect();
        let hr = lines
            .iter_mut()
            .find(|l| l.contains("/node/HR"))
            .expect("hr");
        let sig = hr.rsplit(' ').next().expect("b64").to_string();
        let mut raw = STANDARD.decode(&sig).expect("b64");
        let last = raw.len() - 1;
        raw[last] ^= 1;
        *hr = hr.replace(&sig, &STANDARD.encode(raw));
        let tampered = format!("{body}{}\n", lines.join("\n"));
        let err = format!(
            "{:#}",
            trust.open(tampered.as_bytes()).expect_err("bad cosig")
        );
        assert!(
            err.contains("does not verify") && err.contains("node HR"),
            "{err}"
        );

        // Signed by another log key.
        let other = trust_with(origin, [9; 32], &[]);
        assert!(other.open(&cosigned(origin, 7, &[])).is_err());
        // Another origin.
        let elsewhere = trust_with("elsewhere/audit-log", [1; 32], &[]);
        assert!(elsewhere.open(&cosigned(origin, 7, &[])).is_err());
    }
}

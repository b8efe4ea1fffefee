//! `audit prove`: one submission's inclusion proof.

use std::fmt;
use std::path::Path;

use anyhow::{anyhow, bail};
use prost::Message as _;

use crate::protocol::ids::EnvelopeId;
use crate::protocol::merkle::{self, Hash};
use crate::protocol::proto::v1;
use crate::protocol::proto::v1::audit_event::Event;

use super::*;

// ---- prove --------------------------------------------------------------------

/// A submission's entry, proven included in a signed checkpoint.
#[derive(Debug, Clone)]
pub struct ProveReport {
    pub envelope_id: EnvelopeId,
    pub index: u64,
    pub leaf_hash: Hash,
    pub event: v1::AuditEvent,
    pub checkpoint: CheckedCheckpoint,
    /// `Some(true)` if this auditor saved the same leaf hash at that index
    /// before; `None` if its saved state does not reach that far.
    pub matches_saved: Option<bool>,
}

impl ProveReport {
    pub fn lines(&self) -> Vec<String> {
        let cp = &self.checkpoint.checkpoint;
        let mut lines = vec![
            format!(
                "envelope {}: entry {} of the audit log (tree size {})",
                self.envelope_id,
                self.index,
                cp.size()
            ),
            format!("  leaf hash {}", hex::encode(self.leaf_hash)),
        ];
        lines.extend(
            event_details(&self.event)
                .into_iter()
                .map(|(k, v)| format!("  {k}: {v}")),
        );
        lines.push(format!(
            "inclusion proof verified against checkpoint of size {} signed by {}",
            cp.size(),
            cp.origin()
        ));
        lines.extend(
            self.checkpoint
                .cosignature_lines()
                .into_iter()
                .map(|l| format!("  {l}")),
        );
        match self.matches_saved {
            Some(true) => lines.push("the same leaf you verified before at this index".into()),
            Some(false) => lines
                .push("WARNING: a different leaf than you verified before at this index".into()),
            None => {}
        }
        lines
    }
}

impl fmt::Display for ProveReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in self.lines() {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

/// The envelope an event is about, if any.
pub fn event_envelope_id(event: &v1::AuditEvent) -> Option<&[u8]> {
    match event.event.as_ref()? {
        Event::SubmissionAccepted(a) => a.envelope.as_ref().map(|e| e.envelope_id.as_slice()),
        Event::SubmissionRefused(r) => r.envelope.as_ref().map(|e| e.envelope_id.as_slice()),
        Event::ReceiptRecorded(r) => Some(&r.envelope_id),
        Event::ContentViolation(v) => Some(&v.envelope_id),
        Event::RecordsPurged(_)
        | Event::DirectoryChanged(_)
        | Event::DirectoryRefused(_)
        | Event::PolicyChanged(_) => None,
    }
}

/// Checks an inclusion proof answer for `envelope` against the trust set:
/// the checkpoint opens, sizes agree, the proof leads from the leaf to the
/// root, and the leaf is that envelope's submission.
pub fn check_inclusion(
    trust: &LogTrust,
    envelope: EnvelopeId,
    p: &v1::InclusionProof,
) -> anyhow::Result<(CheckedCheckpoint, Hash, v1::AuditEvent)> {
    let cp = trust
        .open(&p.checkpoint)
        .context("the checkpoint sent with the inclusion proof")?;
    if cp.checkpoint.size() != p.tree_size {
        bail!(
            "the inclusion proof is for tree size {}, its checkpoint has size {}",
            p.tree_size,
            cp.checkpoint.size()
        );
    }
    let leaf_hash = merkle::leaf_hash(&p.leaf);
    merkle::verify_inclusion_bytes(
        p.index,
        p.tree_size,
        &leaf_hash,
        &p.proof,
        cp.checkpoint.root_hash(),
    )
    .map_err(|e| {
        anyhow!(
            "the inclusion proof of entry {} does not verify against the checkpoint of size {}: {e}",
            p.index,
            p.tree_size
        )
    })?;
    let event = v1::AuditEvent::decode(p.leaf.as_slice()).with_context(|| {
        format!(
            "entry {}: the leaf is not a casebridge.v1.AuditEvent",
            p.index
        )
    })?;
    let is_submission = matches!(
        event.event,
        Some(Event::SubmissionAccepted(_) | Event::SubmissionRefused(_))
    );
    if !is_submission || event_envelope_id(&event) != Some(envelope.as_bytes().as_slice()) {
        bail!(
            "the broker proved entry {} ({}), which is not the submission of envelope {envelope}",
            p.index,
            event_summary(&event)
        );
    }
    Ok((cp, leaf_hash, event))
}

/// `casebridge audit prove ENVELOPE_ID`.
pub async fn prove(
    profile: &Path,
    directory: Option<&Path>,
    envelope_id: &str,
) -> anyhow::Result<ProveReport> {
    let envelope: EnvelopeId = envelope_id.parse().map_err(|_| {
        anyhow!(
            "{} is not an envelope id (a UUID)",
            crate::protocol::bounds::quoted(envelope_id)
        )
    })?;
    let mut auditor = Auditor::connect(profile, directory)?;
    let p = grpc(
        "ProveInclusion",
        auditor
            .api
            .prove_inclusion(v1::ProveInclusionRequest {
                target: Some(v1::prove_inclusion_request::Target::EnvelopeId(
                    envelope.to_string(),
                )),
                tree_size: 0,
            })
            .await,
    )?;
    let (checkpoint, leaf_hash, event) = check_inclusion(&auditor.trust, envelope, &p)?;
    let state = StateDir::new(auditor.profile.state_dir.clone());
    let matches_saved = match state.load(auditor.trust.origin()) {
        Ok(Some(s)) => s
            .leaf_hashes
            .get(usize::try_from(p.index).unwrap_or(usize::MAX))
            .map(|h| *h == leaf_hash),
        _ => None,
    };
    Ok(ProveReport {
        envelope_id: envelope,
        index: p.index,
        leaf_hash,
        event,
        checkpoint,
        matches_saved,
    })
}

//! The node as a witness of the broker's audit log.
//!
//! Each new checkpoint must be consistent with the last one this node
//! accepted: a log that shrank, changed its root at the same size, or whose
//! consistency proof fails has been forked or rewritten. Then the node
//! refuses it, keeps the evidence (both checkpoints and the failed proof)
//! and raises the alarm; otherwise it cosigns (C2SP tlog-cosignature) and
//! returns the cosignature to the broker. The node also checks that each of
//! its accepted submissions is included in the log it witnessed: it asks for
//! the proof by envelope id (the broker answers only the sending node) and
//! checks the entry against what it sent, field by field, not by id alone.
//! A proof that fails is evidence: kept with the broker's answer, raised at
//! error level, and no reason to stop checking the submissions after it.
//!
//! The first checkpoint a node ever sees is accepted without a proof (there
//! is nothing to be consistent with); from then on every step is proven.
//!
//! The node's witness task ([`run`]) keeps a [`Memory`] between rounds so
//! that an idle log costs next to nothing: a checkpoint size already
//! cosigned is not cosigned again (each cosignature is a durable write at the
//! broker), the sent records are scanned for pending proofs only when a
//! submission settled or the log grew since a scan left nothing pending
//! (and every [`FULL_SCAN_ROUNDS`] rounds regardless), and the rounds space
//! out up to [`IDLE_ROUND`] while nothing changes. Every checkpoint fetched
//! is still checked for consistency with the one accepted.

use std::time::Duration;

use prost::Message as _;

use super::NodeState;
use super::uplink::{CALL_TIMEOUT, Client, within};
use crate::protocol::ids::EnvelopeId;
use crate::protocol::merkle;
use crate::protocol::note::{self, Checkpoint, Cosigner, Verifiers};
use crate::protocol::proto::v1;
use crate::protocol::transparency::{log_verifier, witness_name};

#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    #[error(
        "ALARM: the broker's log is inconsistent with the checkpoint this node accepted: {0}; evidence kept"
    )]
    Inconsistent(String),
    #[error("checkpoint refused: {0}")]
    BadCheckpoint(String),
    #[error("inclusion of {id} not proven: {why}")]
    NotIncluded { id: String, why: String },
    #[error("{0}")]
    Other(#[from] anyhow::Error),
}

/// The time between rounds while the log grows or proofs are pending.
pub const ROUND: Duration = Duration::from_secs(1);
/// The longest time between rounds while nothing changes; a submission
/// settled by this node cuts the wait short.
pub const IDLE_ROUND: Duration = Duration::from_secs(8);
/// The sent records are scanned at least once in this many rounds.
pub const FULL_SCAN_ROUNDS: u32 = 64;

/// What the witness task knows from its earlier rounds.
#[derive(Debug, Default)]
pub struct Memory {
    /// The largest checkpoint size whose cosignature the broker took.
    cosigned: Option<u64>,
    /// The checkpoint size and this node's settled-submission count at the
    /// last scan of sent records, if that scan left nothing to prove.
    quiet: Option<(u64, u64)>,
    rounds_since_scan: u32,
    /// The checkpoint size of the last round.
    size: Option<u64>,
}

/// What one round of witnessing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessed {
    pub size: u64,
    /// The broker holds this node's cosignature of that size (made this
    /// round or an earlier one).
    pub cosigned: bool,
    /// A cosignature was sent this round.
    pub cosign_sent: bool,
    /// The sent records were scanned for submissions awaiting a proof.
    pub scanned: bool,
    pub inclusions_verified: usize,
    /// Submissions whose inclusion the broker failed to prove this round;
    /// the evidence of each is kept.
    pub inclusions_failed: usize,
}

/// Whether `next` may follow `prev`: the same tree or a proven extension.
pub fn check_consistency(
    prev: Option<&Checkpoint>,
    next: &Checkpoint,
    proof: &[Vec<u8>],
) -> Result<(), String> {
    let Some(prev) = prev else { return Ok(()) };
    if next.size() < prev.size() {
        return Err(format!(
            "the log shrank from {} to {} entries",
            prev.size(),
            next.size()
        ));
    }
    if next.size() == prev.size() {
        return if next.root_hash() == prev.root_hash() {
            Ok(())
        } else {
            Err(format!(
                "two different roots for the same size {}",
                next.size()
            ))
        };
    }
    merkle::verify_consistency_bytes(
        prev.size(),
        next.size(),
        prev.root_hash(),
        next.root_hash(),
        proof,
    )
    .map_err(|e| {
        format!(
            "consistency proof from {} to {} fails: {e}",
            prev.size(),
            next.size()
        )
    })
}

fn verifiers(state: &NodeState) -> Result<Verifiers, WitnessError> {
    let v =
        log_verifier(&state.directory()).map_err(|e| WitnessError::BadCheckpoint(e.to_string()))?;
    Verifiers::new([v]).map_err(|e| WitnessError::BadCheckpoint(e.to_string()))
}

fn open(state: &NodeState, bytes: &[u8]) -> Result<Checkpoint, WitnessError> {
    note::open_checkpoint(bytes, &verifiers(state)?)
        .map(|o| o.checkpoint().clone())
        .map_err(|e| WitnessError::BadCheckpoint(e.to_string()))
}

/// Checks a checkpoint the broker served against the last one accepted.
/// On success it becomes the accepted one and is returned; on inconsistency
/// the evidence is kept and the alarm raised.
pub async fn check_and_accept(
    state: &NodeState,
    note_bytes: &[u8],
    proof: &[Vec<u8>],
) -> Result<Checkpoint, WitnessError> {
    let next = open(state, note_bytes)?;
    let prev_bytes = state
        .store
        .accepted_checkpoint()
        .await
        .map_err(anyhow::Error::from)?;
    let prev = prev_bytes.as_deref().map(|b| open(state, b)).transpose()?;
    if let Err(why) = check_consistency(prev.as_ref(), &next, proof) {
        let evidence = format!(
            "inconsistent checkpoint: {why}\n--- accepted checkpoint ---\n{}--- offered checkpoint ---\n{}--- proof ---\n{}\n",
            prev_bytes
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default(),
            String::from_utf8_lossy(note_bytes),
            proof.iter().map(hex::encode).collect::<Vec<_>>().join("\n"),
        );
        state
            .store
            .record_evidence(state.now_ms(), &evidence)
            .await
            .map_err(anyhow::Error::from)?;
        state
            .metrics
            .alarm(crate::daemon::metrics::Alarm::InconsistentCheckpoint);
        tracing::error!(node = %state.country, %why, "ALARM: audit log fork or rewrite detected; checkpoint refused, evidence kept");
        return Err(WitnessError::Inconsistent(why));
    }
    if prev.as_ref().map(Checkpoint::size) != Some(next.size()) {
        state
            .store
            .accept_checkpoint(note_bytes)
            .await
            .map_err(anyhow::Error::from)?;
    }
    Ok(next)
}

/// The node's witness task: a round every [`ROUND`] while anything changes,
/// spacing out to [`IDLE_ROUND`] while nothing does, until the node stops.
pub async fn run(state: std::sync::Arc<NodeState>) {
    let mut stopping = state.stopping();
    let mut settled = state.settled.subscribe();
    let mut memory = Memory::default();
    let mut wait = ROUND;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ROUND) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        if wait > ROUND {
            tokio::select! {
                _ = tokio::time::sleep(wait - ROUND) => {}
                // A submission of this node's awaits its proof.
                _ = settled.changed() => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
        settled.borrow_and_update();
        let before = memory.size;
        // The broker in use, whichever that is this round.
        let mut client = state.uplink.link().client;
        let busy = match witness_round(&state, &mut client, &mut memory).await {
            Ok(w) => Some(w.size) != before || !w.cosigned || memory.quiet.is_none(),
            Err(e @ WitnessError::Inconsistent(_)) => {
                tracing::error!(node = %state.country, error = %e, "witness alarm");
                true
            }
            Err(e) => {
                tracing::debug!(node = %state.country, error = %e, "witness round incomplete");
                true
            }
        };
        wait = if busy {
            ROUND
        } else {
            (wait * 2).min(IDLE_ROUND)
        };
    }
}

/// One round with nothing remembered: fetch the latest checkpoint with a
/// proof from the accepted one, check it, cosign it, and verify the
/// inclusion of every one of this node's accepted submissions still
/// unproven.
pub async fn witness_once(
    state: &NodeState,
    client: &mut Client,
) -> Result<Witnessed, WitnessError> {
    witness_round(state, client, &mut Memory::default()).await
}

/// One round, skipping what `memory` shows to be done: a cosignature of the
/// same size, a scan of sent records when none can have become provable.
pub async fn witness_round(
    state: &NodeState,
    client: &mut Client,
    memory: &mut Memory,
) -> Result<Witnessed, WitnessError> {
    let from_size = match state
        .store
        .accepted_checkpoint()
        .await
        .map_err(anyhow::Error::from)?
    {
        Some(b) => open(state, &b)?.size(),
        None => 0,
    };
    let resp = within(
        CALL_TIMEOUT,
        client.get_checkpoint(v1::GetCheckpointRequest { from_size }),
    )
    .await
    .map_err(|s| anyhow::anyhow!("get checkpoint: {s}"))?
    .into_inner();
    let cp = check_and_accept(state, &resp.checkpoint, &resp.consistency_proof).await?;

    memory.size = Some(cp.size());

    let cosign_sent = memory.cosigned < Some(cp.size());
    let cosigned = !cosign_sent || {
        let name = witness_name(&state.federation, state.country);
        let signing = state.signing_key();
        let cosigner =
            Cosigner::new(&name, signing.key_pair()).map_err(|e| anyhow::anyhow!("{e}"))?;
        let now_secs = u64::try_from(state.now_ms() / 1000).unwrap_or(0);
        let line = cosigner
            .cosign(&cp, now_secs)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_line();
        let done = within(
            CALL_TIMEOUT,
            client.cosign(v1::CosignRequest {
                checkpoint: cp.text().into_bytes(),
                cosignature: line,
            }),
        )
        .await
        .is_ok();
        if done {
            memory.cosigned = Some(cp.size());
            state.metrics.cosigned(state.now_ms());
        }
        done
    };

    // Read before the scan: a submission settled after this is counted
    // again and scanned for in a later round.
    let settled = *state.settled.borrow();
    memory.rounds_since_scan = memory.rounds_since_scan.saturating_add(1);
    if memory.quiet == Some((cp.size(), settled)) && memory.rounds_since_scan < FULL_SCAN_ROUNDS {
        return Ok(Witnessed {
            size: cp.size(),
            cosigned,
            cosign_sent,
            scanned: false,
            inclusions_verified: 0,
            inclusions_failed: 0,
        });
    }
    memory.rounds_since_scan = 0;
    let mut verified = 0;
    let mut failed = 0;
    let mut left = 0;
    for sent in state
        .store
        .awaiting_inclusion()
        .await
        .map_err(anyhow::Error::from)?
    {
        // A known index beyond the witnessed tree waits for a later round;
        // an unknown one (0, settled by a duplicate answer) is asked for.
        if sent.log_index != 0 && sent.log_index >= cp.size() {
            left += 1;
            continue;
        }
        match prove_one(state, client, &cp, &sent).await {
            Ok(Inclusion::Proven) => verified += 1,
            Ok(Inclusion::NotYet) => left += 1,
            Ok(Inclusion::Disproven(e)) => {
                failed += 1;
                state
                    .metrics
                    .alarm(crate::daemon::metrics::Alarm::UnprovenSubmission);
                tracing::error!(node = %state.country, id = %sent.envelope_id, error = %e, "ALARM: the broker did not prove a submission it accepted; evidence kept");
            }
            Err(e) => {
                left += 1;
                tracing::error!(node = %state.country, id = %sent.envelope_id, error = %e, "could not check the inclusion of a submission; will try again");
            }
        }
    }
    memory.quiet = (left == 0).then_some((cp.size(), settled));
    Ok(Witnessed {
        size: cp.size(),
        cosigned,
        cosign_sent,
        scanned: true,
        inclusions_verified: verified,
        inclusions_failed: failed,
    })
}

/// What asking for one submission's inclusion proof came to.
enum Inclusion {
    /// Proven; the proven index and checkpoint size are recorded.
    Proven,
    /// No answer yet (not in a checkpoint, broker unreachable): next round.
    NotYet,
    /// The broker's answer disproves the acceptance; the evidence is kept
    /// and the submission is not asked about again.
    Disproven(WitnessError),
}

/// Proves the inclusion of one accepted submission in the witnessed
/// checkpoint `cp`. An error is this node's own (its store), not the
/// broker's.
async fn prove_one(
    state: &NodeState,
    client: &mut Client,
    cp: &Checkpoint,
    sent: &v1::SendStatus,
) -> anyhow::Result<Inclusion> {
    let id: EnvelopeId = sent
        .envelope_id
        .parse()
        .map_err(|e| anyhow::anyhow!("sent record {}: {e}", sent.envelope_id))?;
    let Some(expected) = state.store.expected_acceptance(&id).await? else {
        tracing::warn!(%id, "no record of what was sent; its inclusion cannot be checked");
        return Ok(Inclusion::NotYet);
    };
    let answer = within(
        CALL_TIMEOUT,
        client.get_inclusion_proof(v1::InclusionProofRequest {
            envelope_id: id.as_bytes().to_vec(),
            tree_size: cp.size(),
        }),
    )
    .await;
    let (result, broker_said) = match answer {
        Ok(resp) => {
            let proof = resp.into_inner();
            let result =
                verify_inclusion(cp, &id, &expected, sent.log_index, &proof).map(|()| proof.index);
            let said = format!(
                "inclusion proof: index {}, tree size {}\nleaf {}\nproof:\n{}\ncheckpoint:\n{}",
                proof.index,
                proof.tree_size,
                hex::encode(&proof.leaf),
                proof
                    .proof
                    .iter()
                    .map(hex::encode)
                    .collect::<Vec<_>>()
                    .join("\n"),
                String::from_utf8_lossy(&proof.checkpoint),
            );
            (result, said)
        }
        // The entry is not in that checkpoint yet, or the broker is down.
        Err(s) if s.code() != tonic::Code::NotFound => {
            tracing::debug!(%id, status = %s, "inclusion proof not available yet");
            return Ok(Inclusion::NotYet);
        }
        Err(s) => {
            let why = "the broker denies having accepted it".to_string();
            let said = format!(
                "status {} ({}): {}",
                i32::from(s.code()),
                s.code().description(),
                crate::protocol::bounds::escaped(
                    &s.message().chars().take(512).collect::<String>()
                )
            );
            (Err(not_included(&id, why)), said)
        }
    };
    match result {
        Ok(index) => {
            state
                .store
                .update_sent(&id, {
                    let size = cp.size();
                    Box::new(move |s| {
                        s.inclusion_verified_at = size;
                        s.log_index = index;
                    })
                })
                .await?;
            Ok(Inclusion::Proven)
        }
        Err(e) => {
            // The summary in the audit log's JSON form (canonical proto3).
            let expected = serde_json::to_string_pretty(&expected)
                .unwrap_or_else(|e| format!("(the summary could not be written out: {e})"));
            let evidence = format!(
                "inclusion of {id} not proven: {e}\n--- witnessed checkpoint ---\n{}--- expected acceptance ---\n{expected}\nlog index answered at submission: {}\n--- the broker's answer ---\n{broker_said}\n",
                cp.text(),
                sent.log_index,
            );
            state
                .store
                .record_inclusion_failure(&id, state.now_ms(), &evidence)
                .await?;
            Ok(Inclusion::Disproven(e))
        }
    }
}

fn not_included(id: &EnvelopeId, why: String) -> WitnessError {
    WitnessError::NotIncluded {
        id: id.to_string(),
        why,
    }
}

/// Checks that `proof` shows this node's submission `id` in the witnessed
/// checkpoint `cp`, as the acceptance of exactly what was sent: the entry's
/// summary must equal `expected` in every field (envelope id, sender,
/// recipients, labels, header and ciphertext digests), and its index the
/// one the broker answered at submission (`answered`, 0 if unknown).
fn verify_inclusion(
    cp: &Checkpoint,
    id: &EnvelopeId,
    expected: &v1::EnvelopeSummary,
    answered: u64,
    proof: &v1::InclusionProof,
) -> Result<(), WitnessError> {
    let not = |why: String| not_included(id, why);
    if proof.tree_size != cp.size() {
        return Err(not(format!(
            "proof is for size {}, not {}",
            proof.tree_size,
            cp.size()
        )));
    }
    if answered != 0 && proof.index != answered {
        return Err(not(format!(
            "the broker answered the submission with log index {answered} but proves entry {}",
            proof.index
        )));
    }
    let event = v1::AuditEvent::decode(proof.leaf.as_slice()).map_err(|e| not(e.to_string()))?;
    let logged = match event.event {
        Some(v1::audit_event::Event::SubmissionAccepted(a)) => a.envelope,
        _ => None,
    };
    let Some(logged) = logged else {
        return Err(not(format!("entry {} is not an acceptance", proof.index)));
    };
    if logged != *expected {
        let what = if logged.envelope_id != expected.envelope_id {
            "another envelope"
        } else if logged.header_sha256 != expected.header_sha256 {
            "another header"
        } else {
            "other labels than the signed header's"
        };
        return Err(not(format!(
            "entry {} records {what}, not what this node sent",
            proof.index
        )));
    }
    merkle::verify_inclusion_bytes(
        proof.index,
        proof.tree_size,
        &merkle::leaf_hash(&proof.leaf),
        &proof.proof,
        cp.root_hash(),
    )
    .map_err(|e| not(e.to_string()))
}

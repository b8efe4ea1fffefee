//! The broker's side of Acknowledge: a node answers a delivered envelope
//! with its signed receipt, which the broker checks against the envelope
//! queued for that node before recording it, relaying it to the sender and,
//! for a rejection that proves the sender's header false, logging a content
//! violation. A delivered receipt is simply taken off the queue.

use tonic::{Response, Status};

use super::BrokerState;
use crate::daemon::status::{broker_storage, envelope_ack};
use crate::protocol::envelope;
use crate::protocol::ids::{AgencyId, Country, EnvelopeId};
use crate::protocol::proto::v1;
use crate::storage::StorageError;
use crate::storage::broker::{Entry, EnvelopeAck, StoreError};

/// Checks and records a node's answer to the delivery queued at `ack.seq`.
pub(super) async fn acknowledge(
    state: &BrokerState,
    node: Country,
    ack: v1::AcknowledgeRequest,
) -> Result<Response<v1::AcknowledgeResponse>, Status> {
    let item = state
        .store
        .queued(node, ack.seq)
        .await
        .map_err(broker_storage)?;
    let id = match item {
        None => {
            return Err(Status::not_found(format!(
                "nothing queued at {} for node {node}",
                ack.seq
            )));
        }
        Some(Entry::Receipt) => {
            state
                .store
                .ack_receipt(node, ack.seq)
                .await
                .map_err(broker_storage)?;
            return Ok(Response::new(v1::AcknowledgeResponse { log_index: 0 }));
        }
        Some(Entry::Envelope(id)) => id,
    };
    let receipt = ack.receipt.ok_or_else(|| {
        Status::invalid_argument("an envelope is acknowledged with a signed receipt")
    })?;
    let dir = state.directory();
    let body = envelope::verify_receipt(&receipt, &dir, state.now_ms())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if body.recipient_node != node.as_str() {
        return Err(Status::permission_denied(format!(
            "receipt is signed for node {}, not {node}",
            body.recipient_node
        )));
    }
    // The queued header was verified at submission, and its summary kept
    // then: the receipt check, a violation and the relay to the sender
    // need that, not the payload.
    let summary = state
        .store
        .accepted(&id)
        .await
        .map_err(broker_storage)?
        .ok_or_else(|| {
            broker_storage(StoreError::Storage(StorageError::Corrupt {
                tree: "accepted",
                detail: format!("queued envelope {id} has no summary"),
            }))
        })?
        .summary;
    if EnvelopeId::from_bytes(&body.envelope_id).ok() != Some(id)
        || body.header_sha256 != summary.header_sha256
    {
        return Err(Status::invalid_argument(format!(
            "receipt does not answer envelope {id}"
        )));
    }
    let status = body.status();
    if status == v1::ReceiptStatus::Unspecified {
        return Err(Status::invalid_argument("receipt has no status"));
    }
    check_delivered_to(&body, &summary, node, id)?;
    let summary_created_at_ms = summary.created_at_ms;
    let receipt_sha = envelope::sha256(&receipt.body).to_vec();
    let now = state.now_ms();
    let mut events = vec![v1::AuditEvent {
        at_ms: now,
        event: Some(v1::audit_event::Event::ReceiptRecorded(
            v1::ReceiptRecorded {
                envelope_id: id.as_bytes().to_vec(),
                recipient_node: node.to_string(),
                status: body.status,
                code: body.code,
                reason: body.reason.clone(),
                delivered_to: body.delivered_to.clone(),
                receipt_sha256: receipt_sha.clone(),
            },
        )),
    }];
    let violation = is_content_violation(body.code());
    if status == v1::ReceiptStatus::Rejected && violation {
        tracing::warn!(%id, sender = %summary.sender_agency, reporter = %node, reason = %body.reason, "content violation");
        events.push(v1::AuditEvent {
            at_ms: now,
            event: Some(v1::audit_event::Event::ContentViolation(
                v1::ContentViolation {
                    envelope_id: id.as_bytes().to_vec(),
                    sender_node: summary.sender_node,
                    sender_agency: summary.sender_agency,
                    reporting_node: node.to_string(),
                    code: body.code,
                    detail: body.reason.clone(),
                    receipt_sha256: receipt_sha,
                },
            )),
        });
    }
    let index = match state
        .store
        .ack_envelope(
            node,
            ack.seq,
            EnvelopeAck {
                id,
                receipt,
                events,
                delivered: status == v1::ReceiptStatus::Delivered,
            },
        )
        .await
    {
        Ok(i) => i,
        Err(e) => return Err(envelope_ack(e, id, node)),
    };
    // The store wakes the sender's delivery stream for the relayed receipt.
    state
        .metrics
        .delivered(summary_created_at_ms, state.now_ms());
    tracing::info!(%id, %node, status = status.as_str_name(), index, "receipt recorded");
    Ok(Response::new(v1::AcknowledgeResponse { log_index: index }))
}

/// A receipt names, as delivered to, only agencies that are recipients of
/// the envelope at the node that signed it, each once; a rejection names
/// none. What a node claims here goes into the audit log and to the sender.
fn check_delivered_to(
    body: &v1::ReceiptBody,
    summary: &v1::EnvelopeSummary,
    node: Country,
    id: EnvelopeId,
) -> Result<(), Status> {
    if body.status() != v1::ReceiptStatus::Delivered {
        if !body.delivered_to.is_empty() {
            return Err(Status::invalid_argument(format!(
                "a rejection of envelope {id} names agencies in delivered_to; it reached none"
            )));
        }
        return Ok(());
    }
    if body.delivered_to.is_empty() {
        return Err(Status::invalid_argument(format!(
            "a delivery of envelope {id} names no agency in delivered_to"
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for a in &body.delivered_to {
        let here = a
            .parse::<AgencyId>()
            .is_ok_and(|agency| agency.country() == node)
            && summary.recipients.iter().any(|r| r == a);
        if !here {
            return Err(Status::invalid_argument(format!(
                "receipt names {} in delivered_to, which is not a recipient of envelope {id} at node {node}",
                crate::protocol::bounds::quoted(a)
            )));
        }
        if !seen.insert(a.as_str()) {
            return Err(Status::invalid_argument(format!(
                "receipt names {a} twice in delivered_to"
            )));
        }
    }
    Ok(())
}

/// Whether a rejection proves the sender's signed header false about what
/// it sent, which the audit log records as a content violation.
fn is_content_violation(code: v1::RejectionCode) -> bool {
    use v1::RejectionCode as C;
    match code {
        C::UndeclaredCategories | C::KindMismatch | C::KeyCommitment => true,
        C::Unspecified
        | C::BadSignature
        | C::Undecryptable
        | C::MalformedRecord
        | C::Expired
        | C::NotARecipient
        | C::Policy
        | C::InvalidHeader => false,
    }
}

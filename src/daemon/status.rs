//! Where the daemons' errors become answers: every mapping from an error of
//! ours to a gRPC status (code and message) and to the refusal and
//! rejection codes of the protocol.
//!
//! The matches on our own enums are exhaustive, with no fallback arm, so a
//! new variant does not compile until someone decides what a peer is told
//! about it. Replies never leak internals: a storage failure is logged here
//! and answered with a retry hint.

use std::fmt::Display;

use tonic::Status;

use crate::daemon::broker::log::LogError;
use crate::protocol::bounds::Exceeded;
use crate::protocol::envelope::EnvelopeError;
use crate::protocol::ids::{Country, EnvelopeId};
use crate::protocol::proto::v1;
use crate::protocol::proto::{LOG_INDEX_METADATA, REFUSAL_METADATA};
use crate::storage::StorageError;
use crate::storage::broker::StoreError;

// ---------------------------------------------------------------------
// Storage
// ---------------------------------------------------------------------

/// A failure of the broker's store, as the broker answers it. An audit event
/// over the leaf cap is a bug of the broker's (nothing was recorded); every
/// other failure is one to retry.
pub(crate) fn broker_storage(e: StoreError) -> Status {
    match e {
        StoreError::Leaf(e) => {
            tracing::error!(error = %e, "an audit event over the leaf cap was not recorded");
            Status::internal(format!("the broker could not record this: {e}"))
        }
        // The callers that expect these answer them themselves (a duplicate
        // submission is refused, an envelope acknowledged twice is not
        // found); anywhere else they are a store failure.
        e @ (StoreError::Duplicate
        | StoreError::NoSuchItem { .. }
        | StoreError::ReceiptRequired { .. }
        | StoreError::WrongEnvelope { .. }
        | StoreError::NotIntegrated { .. }
        | StoreError::Storage(_)) => unavailable("broker", &e),
    }
}

/// Acknowledging a queued envelope: an item no longer in the queue was
/// acknowledged before, on this stream or an earlier one.
pub(crate) fn envelope_ack(e: StoreError, id: EnvelopeId, node: Country) -> Status {
    match e {
        StoreError::NoSuchItem { .. } => {
            Status::not_found(format!("envelope {id} already acknowledged by node {node}"))
        }
        e @ (StoreError::Duplicate
        | StoreError::ReceiptRequired { .. }
        | StoreError::WrongEnvelope { .. }
        | StoreError::NotIntegrated { .. }
        | StoreError::Leaf(_)
        | StoreError::Storage(_)) => broker_storage(e),
    }
}

/// A failure of the node's store, as the node answers its agencies.
pub(crate) fn node_storage(e: StorageError) -> Status {
    match e {
        e @ (StorageError::Backend(_)
        | StorageError::FlusherGone
        | StorageError::Stopped(_)
        | StorageError::Corrupt { .. }
        | StorageError::Io { .. }
        | StorageError::InUse(_)) => unavailable("node", &e),
    }
}

fn unavailable(side: &str, e: &dyn Display) -> Status {
    tracing::error!(error = %e, "{side} storage failure");
    Status::unavailable(format!("{side} storage unavailable; try again"))
}

/// A failure reading the transparency log's checkpoints.
pub(crate) fn log(e: LogError) -> Status {
    match e {
        e @ (LogError::Store(_)
        | LogError::Key(_)
        | LogError::WrongKey(_)
        | LogError::Checkpoint(_)
        | LogError::Tampered { .. }
        | LogError::RootMismatch { .. }) => Status::internal(e.to_string()),
    }
}

// ---------------------------------------------------------------------
// Refusals of a submission (broker)
// ---------------------------------------------------------------------

/// The answer to a refused submission: the code's status with the reason,
/// and the refusal code and the log index of its audit event as metadata,
/// so a node can tell a refusal (final) from a failure (retry).
pub(crate) fn refused(code: v1::RefusalCode, reason: &str, index: u64) -> Status {
    let mut status = Status::new(refusal_status(code), format!("refused: {reason}"));
    let md = status.metadata_mut();
    if let Ok(v) = code.as_str_name().parse() {
        md.insert(REFUSAL_METADATA, v);
    }
    if let Ok(v) = index.to_string().parse() {
        md.insert(LOG_INDEX_METADATA, v);
    }
    status
}

/// The gRPC code a refusal answers with.
fn refusal_status(code: v1::RefusalCode) -> tonic::Code {
    use tonic::Code;
    use v1::RefusalCode as R;
    match code {
        R::Malformed | R::InvalidLabels | R::CiphertextMismatch | R::Unspecified => {
            Code::InvalidArgument
        }
        R::Oversized => Code::ResourceExhausted,
        R::BadSignature | R::WrongSenderNode | R::ForeignAgency | R::Policy | R::Onward => {
            Code::PermissionDenied
        }
        R::UnknownAgency => Code::NotFound,
        R::Revoked | R::Replay | R::Expired => Code::FailedPrecondition,
        R::Duplicate => Code::AlreadyExists,
    }
}

/// The refusal code for a failed envelope check.
pub(crate) fn refusal_code(e: &EnvelopeError) -> v1::RefusalCode {
    use v1::RefusalCode as R;
    match e {
        EnvelopeError::MalformedHeader
        | EnvelopeError::UnsupportedVersion(_)
        | EnvelopeError::WrappedKeys(_)
        | EnvelopeError::ShortCiphertext(_)
        | EnvelopeError::KeyCommitmentLength(_) => R::Malformed,
        EnvelopeError::InvalidField(_) | EnvelopeError::OutOfBounds(_) => R::InvalidLabels,
        EnvelopeError::UnknownNode(_) | EnvelopeError::UnknownAgency(_) => R::UnknownAgency,
        EnvelopeError::InactiveNode(_)
        | EnvelopeError::RevokedAgency(_)
        | EnvelopeError::RecipientKeyNotAccepted { .. } => R::Revoked,
        EnvelopeError::BadSignature(_) => R::BadSignature,
        EnvelopeError::CiphertextMismatch => R::CiphertextMismatch,
        EnvelopeError::ForeignSenderAgency { .. } => R::ForeignAgency,
        EnvelopeError::Expired { .. } => R::Expired,
        // Opening, receipts and sealing: not what verifying a header yields.
        EnvelopeError::NotARecipient(_)
        | EnvelopeError::Unwrap(_)
        | EnvelopeError::KeyCommitmentMismatch
        | EnvelopeError::Decrypt
        | EnvelopeError::MalformedRecord
        | EnvelopeError::KindMismatch { .. }
        | EnvelopeError::UndeclaredCategories(_)
        | EnvelopeError::MalformedReceipt
        | EnvelopeError::BadReceiptSignature(_)
        | EnvelopeError::EmptyRecord
        | EnvelopeError::Seal => R::Malformed,
    }
}

// ---------------------------------------------------------------------
// Rejections of a delivery (node)
// ---------------------------------------------------------------------

/// The rejection code a node's receipt gives for an envelope it could not
/// verify, open or file.
pub(crate) fn rejection_code(e: &EnvelopeError) -> v1::RejectionCode {
    use v1::RejectionCode as R;
    match e {
        EnvelopeError::BadSignature(_) => R::BadSignature,
        EnvelopeError::Unwrap(_)
        | EnvelopeError::Decrypt
        | EnvelopeError::RecipientKeyNotAccepted { .. } => R::Undecryptable,
        EnvelopeError::KeyCommitmentMismatch => R::KeyCommitment,
        EnvelopeError::MalformedRecord | EnvelopeError::EmptyRecord => R::MalformedRecord,
        EnvelopeError::UndeclaredCategories(_) => R::UndeclaredCategories,
        EnvelopeError::KindMismatch { .. } => R::KindMismatch,
        EnvelopeError::Expired { .. } => R::Expired,
        EnvelopeError::NotARecipient(_) => R::NotARecipient,
        EnvelopeError::MalformedHeader
        | EnvelopeError::UnsupportedVersion(_)
        | EnvelopeError::InvalidField(_)
        | EnvelopeError::OutOfBounds(_)
        | EnvelopeError::UnknownNode(_)
        | EnvelopeError::InactiveNode(_)
        | EnvelopeError::CiphertextMismatch
        | EnvelopeError::ShortCiphertext(_)
        | EnvelopeError::KeyCommitmentLength(_)
        | EnvelopeError::UnknownAgency(_)
        | EnvelopeError::RevokedAgency(_)
        | EnvelopeError::ForeignSenderAgency { .. }
        | EnvelopeError::WrappedKeys(_)
        | EnvelopeError::MalformedReceipt
        | EnvelopeError::BadReceiptSignature(_)
        | EnvelopeError::Seal => R::InvalidHeader,
    }
}

// ---------------------------------------------------------------------
// Requests an agency makes (node)
// ---------------------------------------------------------------------

/// A record, labels or recipients an agency gave that cannot be sealed.
pub(crate) fn invalid(e: EnvelopeError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// A request field over its bound.
pub(crate) fn exceeded(e: Exceeded) -> Status {
    Status::invalid_argument(e.to_string())
}

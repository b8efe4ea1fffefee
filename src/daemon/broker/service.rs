//! The exchange API: the broker's gRPC edge towards the national nodes.
//!
//! Submit runs the pipeline: authenticate the node → size → verify the
//! signed header against the directory → sender and recipients → replay
//! window and duplicate ids → policy → one durable write of the queue entries
//! and the audit event → answer. Every refusal writes its audit event and
//! nothing else, and answers with a precise reason.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::BrokerState;
use crate::daemon::tls::{Issuer, peer_of};
use crate::protocol::bounds::{
    self, MAX_BUNDLE_HASH, MAX_CASE_REFERENCE, MAX_PURGE_IDS, MAX_REFUSAL_EXPLANATION,
};
use crate::protocol::envelope::{self, EnvelopeError};
use crate::protocol::ids::{AgencyId, Country, EnvelopeId, Role};
use crate::protocol::policy::Onward;
use crate::protocol::proto::v1;
use crate::protocol::proto::{LOG_INDEX_METADATA, REFUSAL_METADATA};
use crate::storage::sled::broker::{Acceptance, Accepted, EnvelopeAck, MailItem, StoreError};

pub struct ExchangeService {
    state: Arc<BrokerState>,
}

impl ExchangeService {
    pub fn new(state: Arc<BrokerState>) -> Self {
        ExchangeService { state }
    }

    /// The node a request comes from: a node certificate issued directly by
    /// the federation root, for a node the directory lists as active.
    fn node<T>(&self, req: &Request<T>) -> Result<Country, Status> {
        let peer = peer_of(req)?;
        match (&peer.role, peer.issuer) {
            (Ok(Role::Node(cc)), Issuer::Root) => {
                let dir = self.state.directory();
                match dir.node(*cc) {
                    Some(n) if n.active_at(self.state.now_ms()) => Ok(*cc),
                    Some(_) => Err(Status::permission_denied(format!(
                        "node {cc} is revoked or not yet valid"
                    ))),
                    None => Err(Status::permission_denied(format!(
                        "node {cc} is not in the directory"
                    ))),
                }
            }
            (Ok(Role::Node(cc)), _) => Err(Status::permission_denied(format!(
                "certificate for node {cc} is not issued directly by the federation root"
            ))),
            (Ok(role), _) => Err(Status::permission_denied(format!(
                "the exchange API is for national nodes; this certificate is for {role}"
            ))),
            (Err(e), _) => Err(Status::permission_denied(format!(
                "certificate not accepted: {e}"
            ))),
        }
    }

    async fn refuse(
        &self,
        node: Country,
        code: v1::RefusalCode,
        reason: String,
        seen: Seen<'_>,
        decision: Option<&crate::protocol::policy::Decision>,
    ) -> Status {
        // The reason may quote what the peer sent; the event keeps a prefix.
        let reason = bounds::clip(&reason, bounds::MAX_REASON).into_owned();
        let (envelope, unverified_header_sha256) = match seen {
            Seen::Nothing => (None, Vec::new()),
            Seen::Unverified(env) => (None, envelope::sha256(&env.header).to_vec()),
            Seen::Verified(h) => (Some(h.summary()), Vec::new()),
        };
        let event = v1::AuditEvent {
            at_ms: self.state.now_ms(),
            event: Some(v1::audit_event::Event::SubmissionRefused(
                v1::SubmissionRefused {
                    submitting_node: node.to_string(),
                    code: code as i32,
                    reason: reason.clone(),
                    envelope,
                    policy_bundle_hash: decision.map(|d| d.bundle_hash.clone()).unwrap_or_default(),
                    policy_explanation: decision.map(|d| d.explanation.clone()).unwrap_or_default(),
                    unverified_header_sha256,
                },
            )),
        };
        let index = match self.state.store.append(event).await {
            Ok(i) => i,
            Err(e) => return storage_status(e),
        };
        tracing::info!(%node, code = code.as_str_name(), %reason, index, "submission refused");
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
}

/// What a refusal event may state about the envelope it refuses. Only a
/// header whose signature verified is recorded as what it says; of one that
/// did not, the event keeps the hash of its bytes and nothing it claims.
enum Seen<'a> {
    /// No envelope came.
    Nothing,
    /// The header was not verified (or failed verification).
    Unverified(&'a v1::Envelope),
    /// The header verified against the directory: its sending node signed it.
    Verified(&'a envelope::VerifiedHeader),
}

enum Refusal {
    Onward(String),
    Storage(StoreError),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Storage(e)
    }
}

type Grants = Vec<(EnvelopeId, AgencyId, AgencyId)>;

impl ExchangeService {
    /// Checks an onward transfer, permission request or grant against the
    /// record it is about, as the broker recorded it. Returns the facts
    /// policy decides on, and the permissions a grant gives.
    ///
    /// The provider of a record is the sender of the original, however many
    /// times it was passed on: the broker checked the provider named in each
    /// onward header against the record passed on before it accepted it,
    /// so the provider of any accepted record is one read away. Only the
    /// provider is asked, only the provider grants, and a grant names the
    /// record the grantee received and the third agencies it covers.
    fn onward_and_grants(
        &self,
        h: &envelope::VerifiedHeader,
    ) -> Result<(Option<Onward>, Grants), Refusal> {
        let store = &self.state.store;
        // A record as `agency` received it. An unknown id and a record the
        // agency never received are refused alike: the answer tells a node
        // nothing about exchanges it is not party to.
        let received_by = |id: &EnvelopeId, agency: &AgencyId| -> Result<Accepted, Refusal> {
            match store.accepted(id)? {
                Some(a)
                    if a.summary
                        .recipients
                        .iter()
                        .any(|r| *r == agency.to_string()) =>
                {
                    Ok(a)
                }
                _ => Err(Refusal::Onward(format!(
                    "{agency} did not receive record {id}"
                ))),
            }
        };
        let provider_of = |a: &Accepted, id: &EnvelopeId| {
            a.provider().ok_or_else(|| {
                Refusal::Onward(format!("the provider of record {id} is unreadable"))
            })
        };
        let named = h.labels.provider.as_str();
        let mut onward = None;
        if let Some(orig_id) = &h.onward_of {
            let orig = received_by(orig_id, &h.sender_agency)?;
            let provider = provider_of(&orig, orig_id)?;
            if named != provider.to_string() {
                return Err(Refusal::Onward(format!(
                    "record {orig_id} was provided by {provider}; the header names provider {:?}",
                    crate::protocol::bounds::quote(named)
                )));
            }
            let mut granted = true;
            for r in &h.recipients {
                granted &= store.granted(orig_id, &h.sender_agency, r)?;
            }
            onward = Some(Onward {
                originator: provider,
                original_handling: v1::HandlingCode::try_from(orig.summary.handling)
                    .unwrap_or(v1::HandlingCode::Unspecified),
                permission_granted: granted,
            });
        } else if !named.is_empty() {
            return Err(Refusal::Onward(format!(
                "the header names provider {:?} but passes no record on",
                crate::protocol::bounds::quote(named)
            )));
        }
        let mut grants = Vec::new();
        if let Some(p) = &h.permission {
            match h.kind {
                v1::RecordKind::PermissionRequest => {
                    // The grantee is the sender (envelope::verify checked).
                    let orig = received_by(&p.original, &p.grantee)?;
                    let provider = provider_of(&orig, &p.original)?;
                    if h.recipients.len() != 1 || h.recipients[0] != provider {
                        return Err(Refusal::Onward(format!(
                            "a permission request about {} goes to its provider {provider}",
                            p.original
                        )));
                    }
                }
                _ => {
                    // Whether the sender is the provider is asked first, so
                    // nobody else learns who provided the record.
                    let provider = store.accepted(&p.original)?.and_then(|a| a.provider());
                    if provider.as_ref() != Some(&h.sender_agency) {
                        return Err(Refusal::Onward(format!(
                            "only the provider of record {} can grant permission to pass it on; {} is not",
                            p.original, h.sender_agency
                        )));
                    }
                    received_by(&p.original, &p.grantee)?;
                    grants = p
                        .third_agencies
                        .iter()
                        .map(|t| (p.original, p.grantee.clone(), t.clone()))
                        .collect();
                }
            }
        }
        Ok((onward, grants))
    }
}

/// A short, quoted prefix of something a peer sent, for error messages.
fn quoted(s: &str) -> String {
    format!("{:?}", crate::protocol::bounds::quote(s))
}

/// A refusal report a node may make: for an active agency of its own, with
/// labels that name only what the directory and the vocabulary know, and
/// nothing a sealed envelope would have (nothing was sealed). Each error
/// names the field and the limit it broke.
struct RefusalReport {
    transfer: v1::EnvelopeSummary,
    policy_bundle_hash: String,
    policy_explanation: String,
}

fn check_refusal_report(
    node: Country,
    r: v1::RefusalReport,
    dir: &crate::protocol::directory::Directory,
) -> Result<RefusalReport, Status> {
    let invalid = |field: &str, why: String| Status::invalid_argument(format!("{field}: {why}"));
    let denied = |field: &str, why: String| Status::permission_denied(format!("{field}: {why}"));
    let t = r
        .transfer
        .ok_or_else(|| invalid("transfer", "missing".into()))?;
    // Who: only the reporting node's own agencies that the directory lists.
    if t.sender_node != node.as_str() {
        return Err(denied(
            "transfer.sender_node",
            format!(
                "node {node} reports only its own refusals, not {}",
                quoted(&t.sender_node)
            ),
        ));
    }
    let sender: crate::protocol::ids::AgencyId = t.sender_agency.parse().map_err(|_| {
        invalid(
            "transfer.sender_agency",
            format!("{} is not an agency id (CC/name)", quoted(&t.sender_agency)),
        )
    })?;
    if sender.country() != node {
        return Err(denied(
            "transfer.sender_agency",
            format!("node {node} cannot report for {sender}"),
        ));
    }
    match dir.agency(&sender) {
        Some(a) if !a.revoked => {}
        Some(_) => {
            return Err(denied(
                "transfer.sender_agency",
                format!("{sender} is revoked"),
            ));
        }
        None => {
            return Err(denied(
                "transfer.sender_agency",
                format!("{sender} is not in the directory"),
            ));
        }
    }
    // Nothing was sealed, so nothing a sealed envelope has may be claimed.
    for (field, given) in [
        ("transfer.envelope_id", !t.envelope_id.is_empty()),
        ("transfer.header_sha256", !t.header_sha256.is_empty()),
        (
            "transfer.ciphertext_sha256",
            !t.ciphertext_sha256.is_empty(),
        ),
        ("transfer.ciphertext_len", t.ciphertext_len != 0),
    ] {
        if given {
            return Err(invalid(
                field,
                "must be empty: a refusal before sealing has no envelope".into(),
            ));
        }
    }
    // Recipients: agencies the directory lists, each once, so at most as
    // many as it lists.
    let listed = dir.agencies().count();
    if t.recipients.is_empty() || t.recipients.len() > listed {
        return Err(invalid(
            "transfer.recipients",
            format!(
                "{} given; between 1 and {listed} (the agencies in the directory)",
                t.recipients.len()
            ),
        ));
    }
    let mut recipients = std::collections::BTreeSet::new();
    for (i, a) in t.recipients.iter().enumerate() {
        let field = format!("transfer.recipients[{i}]");
        let id: crate::protocol::ids::AgencyId = a
            .parse()
            .map_err(|_| invalid(&field, format!("{} is not an agency id", quoted(a))))?;
        if dir.agency(&id).is_none() {
            return Err(invalid(&field, format!("{id} is not in the directory")));
        }
        if !recipients.insert(id) {
            return Err(invalid(&field, format!("{a} is listed twice")));
        }
    }
    // Labels: values of the vocabulary, each category once.
    let mut categories = std::collections::BTreeSet::new();
    for (i, c) in t.declared_categories.iter().enumerate() {
        let field = format!("transfer.declared_categories[{i}]");
        if !matches!(v1::DataCategory::try_from(*c), Ok(d) if d != v1::DataCategory::Unspecified) {
            return Err(invalid(&field, format!("{c} is not a data category")));
        }
        if !categories.insert(*c) {
            return Err(invalid(&field, format!("{c} is listed twice")));
        }
    }
    let known = [
        (
            "transfer.kind",
            v1::RecordKind::try_from(t.kind).is_ok_and(|k| k != v1::RecordKind::Unspecified),
        ),
        (
            "transfer.purpose",
            v1::Purpose::try_from(t.purpose).is_ok_and(|p| p != v1::Purpose::Unspecified),
        ),
        (
            "transfer.legal_basis",
            v1::LegalBasis::try_from(t.legal_basis).is_ok_and(|b| b != v1::LegalBasis::Unspecified),
        ),
        (
            "transfer.handling",
            v1::HandlingCode::try_from(t.handling)
                .is_ok_and(|h| h != v1::HandlingCode::Unspecified),
        ),
        (
            "transfer.classification",
            v1::Classification::try_from(t.classification).is_ok(),
        ),
        (
            "transfer.priority",
            v1::Priority::try_from(t.priority).is_ok(),
        ),
    ];
    for (field, ok) in known {
        if !ok {
            return Err(invalid(field, "missing or not a known value".into()));
        }
    }
    if t.case_reference.len() > MAX_CASE_REFERENCE {
        return Err(invalid(
            "transfer.case_reference",
            format!(
                "{} bytes; the limit is {MAX_CASE_REFERENCE}",
                t.case_reference.len()
            ),
        ));
    }
    if !t.in_reply_to.is_empty() && t.in_reply_to.parse::<EnvelopeId>().is_err() {
        return Err(invalid(
            "transfer.in_reply_to",
            format!("{} is not an envelope id", quoted(&t.in_reply_to)),
        ));
    }
    if r.policy_bundle_hash.len() > MAX_BUNDLE_HASH
        || !r.policy_bundle_hash.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(invalid(
            "policy_bundle_hash",
            format!(
                "{} bytes; at most {MAX_BUNDLE_HASH} printable ASCII",
                r.policy_bundle_hash.len()
            ),
        ));
    }
    if r.policy_explanation.len() > MAX_REFUSAL_EXPLANATION {
        return Err(invalid(
            "policy_explanation",
            format!(
                "{} bytes; the limit is {MAX_REFUSAL_EXPLANATION}",
                r.policy_explanation.len()
            ),
        ));
    }
    Ok(RefusalReport {
        transfer: t,
        policy_bundle_hash: r.policy_bundle_hash,
        policy_explanation: r.policy_explanation,
    })
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
                "receipt names {:?} in delivered_to, which is not a recipient of envelope {id} at node {node}",
                crate::protocol::bounds::quote(a)
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
fn refusal_code(e: &EnvelopeError) -> v1::RefusalCode {
    use v1::RefusalCode as R;
    match e {
        EnvelopeError::MalformedHeader
        | EnvelopeError::UnsupportedVersion(_)
        | EnvelopeError::WrappedKeys(_)
        | EnvelopeError::ShortCiphertext(_)
        | EnvelopeError::KeyCommitmentLength(_) => R::Malformed,
        EnvelopeError::InvalidField(_) | EnvelopeError::OutOfBounds(_) => R::InvalidLabels,
        EnvelopeError::UnknownNode(_) | EnvelopeError::UnknownAgency(_) => R::UnknownAgency,
        EnvelopeError::InactiveNode(_) | EnvelopeError::RevokedAgency(_) => R::Revoked,
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

fn storage_status(e: StoreError) -> Status {
    if let StoreError::Leaf(e) = &e {
        tracing::error!(error = %e, "an audit event over the leaf cap was not recorded");
        return Status::internal(format!("the broker could not record this: {e}"));
    }
    tracing::error!(error = %e, "broker storage failure");
    Status::unavailable("broker storage unavailable; try again")
}

type DeliveryStream = Pin<Box<dyn Stream<Item = Result<v1::Delivery, Status>> + Send>>;

#[tonic::async_trait]
impl crate::daemon::rpc::exchange_server::Exchange for ExchangeService {
    async fn submit(
        &self,
        req: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitResponse>, Status> {
        use v1::RefusalCode as R;
        let node = self.node(&req)?;
        let Some(env) = req.into_inner().envelope else {
            return Err(self
                .refuse(
                    node,
                    R::Malformed,
                    "request carries no envelope".into(),
                    Seen::Nothing,
                    None,
                )
                .await);
        };
        let size = env.header.len() + env.signature.len() + env.ciphertext.len();
        let max = self.state.limits.max_envelope_bytes;
        if size > max {
            let reason = format!("envelope is {size} bytes; the limit is {max}");
            return Err(self
                .refuse(node, R::Oversized, reason, Seen::Unverified(&env), None)
                .await);
        }
        let now = self.state.now_ms();
        let dir = self.state.directory();
        let header = match envelope::verify_within(&env, &dir, now, &self.state.limits.bounds()) {
            Ok(h) => h,
            Err(e) => {
                return Err(self
                    .refuse(
                        node,
                        refusal_code(&e),
                        e.to_string(),
                        Seen::Unverified(&env),
                        None,
                    )
                    .await);
            }
        };
        if header.sender_node != node {
            let reason = format!(
                "envelope names sending node {} but was submitted by node {node}",
                header.sender_node
            );
            return Err(self
                .refuse(
                    node,
                    R::WrongSenderNode,
                    reason,
                    Seen::Verified(&header),
                    None,
                )
                .await);
        }
        let window_ms = i64::try_from(self.state.limits.replay_window_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        let skew_ms = i64::try_from(self.state.limits.clock_skew_secs.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        if header.created_at_ms < now.saturating_sub(window_ms) {
            let reason = format!(
                "created at {}, outside the replay window of {} s",
                crate::protocol::time::format_ms(header.created_at_ms),
                self.state.limits.replay_window_secs
            );
            return Err(self
                .refuse(node, R::Replay, reason, Seen::Verified(&header), None)
                .await);
        }
        if header.created_at_ms > now.saturating_add(skew_ms) {
            let reason = format!(
                "created at {}, in the future",
                crate::protocol::time::format_ms(header.created_at_ms)
            );
            return Err(self
                .refuse(node, R::Replay, reason, Seen::Verified(&header), None)
                .await);
        }
        if self.state.store.seen(&header.id).map_err(storage_status)? {
            let reason = format!("envelope id {} was already submitted", header.id);
            return Err(self
                .refuse(node, R::Duplicate, reason, Seen::Verified(&header), None)
                .await);
        }
        let (onward, grants) = match self.onward_and_grants(&header) {
            Ok(v) => v,
            Err(Refusal::Storage(e)) => return Err(storage_status(e)),
            Err(Refusal::Onward(reason)) => {
                return Err(self
                    .refuse(node, R::Onward, reason, Seen::Verified(&header), None)
                    .await);
            }
        };
        let transfer = match crate::protocol::policy::Transfer::from_header(&header, &dir, onward) {
            Ok(t) => t,
            Err(e) => {
                return Err(self
                    .refuse(
                        node,
                        R::UnknownAgency,
                        e.to_string(),
                        Seen::Verified(&header),
                        None,
                    )
                    .await);
            }
        };
        let decision = self.state.policies().decide(&transfer);
        if !decision.allowed {
            let reason = format!("policy: {}", decision.explanation);
            return Err(self
                .refuse(
                    node,
                    R::Policy,
                    reason,
                    Seen::Verified(&header),
                    Some(&decision),
                )
                .await);
        }

        let summary = header.summary();
        let recipient_nodes: Vec<Country> = header.recipient_nodes().copied().collect();
        let event = v1::AuditEvent {
            at_ms: now,
            event: Some(v1::audit_event::Event::SubmissionAccepted(
                v1::SubmissionAccepted {
                    envelope: Some(summary),
                    policy_bundle_hash: decision.bundle_hash.clone(),
                    policy_explanation: decision.explanation.clone(),
                },
            )),
        };
        let acceptance = Acceptance {
            id: header.id,
            created_at_ms: header.created_at_ms,
            sender_node: node,
            envelope: env,
            recipient_nodes: recipient_nodes.clone(),
            event,
            summary: header.summary(),
            grants,
        };
        let index = match self.state.store.accept(acceptance).await {
            Ok(i) => i,
            Err(StoreError::Duplicate) => {
                let reason = format!("envelope id {} was already submitted", header.id);
                return Err(self
                    .refuse(node, R::Duplicate, reason, Seen::Verified(&header), None)
                    .await);
            }
            Err(e) => return Err(storage_status(e)),
        };
        for cc in recipient_nodes {
            self.state.wakeup(cc).notify_waiters();
        }
        tracing::info!(id = %header.id, from = %header.sender_agency, kind = header.kind.as_str_name(), index, "accepted");
        Ok(Response::new(v1::SubmitResponse {
            envelope_id: header.id.as_bytes().to_vec(),
            log_index: index,
            accepted_at_ms: now,
            policy_bundle_hash: decision.bundle_hash,
        }))
    }

    type ReceiveStream = DeliveryStream;

    async fn receive(
        &self,
        req: Request<v1::ReceiveRequest>,
    ) -> Result<Response<Self::ReceiveStream>, Status> {
        let node = self.node(&req)?;
        let state = self.state.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let mut stopping = state.stopping();
        // One delivery stream per node: this one ends an older one, and a
        // newer one ends this.
        let (generation, mut current) = state.claim_delivery(node);
        tokio::spawn(async move {
            let replaced = || {
                Status::aborted(format!(
                    "a newer delivery stream of node {node} replaced this one"
                ))
            };
            let wakeup = state.wakeup(node);
            let mut after = None;
            loop {
                // Register for wake-ups before looking, so a submit that lands
                // between the look and the wait is not missed.
                let notified = wakeup.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let items = match state.store.pending(node, after, 64) {
                    Ok(items) => items,
                    Err(e) => {
                        let _ = tx.send(Err(storage_status(e))).await;
                        return;
                    }
                };
                if items.is_empty() {
                    tokio::select! {
                        _ = &mut notified => continue,
                        _ = tx.closed() => return,
                        _ = stopping.wait_for(|s| *s) => return,
                        _ = current.wait_for(|g| *g != generation) => {
                            let _ = tx.try_send(Err(replaced()));
                            return;
                        }
                    }
                }
                for (seq, item) in items {
                    after = Some(seq);
                    let item = match item {
                        MailItem::Envelope(_, env) => v1::delivery::Item::Envelope(env),
                        MailItem::Receipt(r) => v1::delivery::Item::Receipt(r),
                    };
                    let delivery = v1::Delivery {
                        seq,
                        item: Some(item),
                    };
                    tokio::select! {
                        sent = tx.send(Ok(delivery)) => if sent.is_err() { return },
                        _ = current.wait_for(|g| *g != generation) => {
                            let _ = tx.try_send(Err(replaced()));
                            return;
                        }
                    }
                }
            }
        });
        tracing::info!(%node, generation, "delivery stream opened");
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn acknowledge(
        &self,
        req: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        let node = self.node(&req)?;
        let ack = req.into_inner();
        let item = self
            .state
            .store
            .queued(node, ack.seq)
            .map_err(storage_status)?;
        let (id, env) = match item {
            None => {
                return Err(Status::not_found(format!(
                    "nothing queued at {} for node {node}",
                    ack.seq
                )));
            }
            Some(MailItem::Receipt(_)) => {
                self.state
                    .store
                    .ack_receipt(node, ack.seq)
                    .await
                    .map_err(storage_status)?;
                return Ok(Response::new(v1::AcknowledgeResponse { log_index: 0 }));
            }
            Some(MailItem::Envelope(id, env)) => (id, env),
        };
        let receipt = ack.receipt.ok_or_else(|| {
            Status::invalid_argument("an envelope is acknowledged with a signed receipt")
        })?;
        let dir = self.state.directory();
        let body = envelope::verify_receipt(&receipt, &dir)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if body.recipient_node != node.as_str() {
            return Err(Status::permission_denied(format!(
                "receipt is signed for node {}, not {node}",
                body.recipient_node
            )));
        }
        // The queued header was verified at submission; read it once here
        // for the receipt check, a violation and the relay to the sender.
        let summary = envelope::unverified_summary(&env).unwrap_or_default();
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
        let receipt_sha = envelope::sha256(&receipt.body).to_vec();
        let now = self.state.now_ms();
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
        let sender: Option<Country> = summary.sender_node.parse().ok();
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
        let index = match self
            .state
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
            Err(StoreError::NoSuchItem { .. }) => {
                return Err(Status::not_found(format!(
                    "envelope {id} already acknowledged by node {node}"
                )));
            }
            Err(e) => return Err(storage_status(e)),
        };
        if let Some(sender) = sender {
            self.state.wakeup(sender).notify_waiters();
        }
        tracing::info!(%id, %node, status = status.as_str_name(), index, "receipt recorded");
        Ok(Response::new(v1::AcknowledgeResponse { log_index: index }))
    }

    async fn report_purge(
        &self,
        req: Request<v1::PurgeReport>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        let node = self.node(&req)?;
        let reported = &req.get_ref().envelope_ids;
        if reported.len() > MAX_PURGE_IDS {
            return Err(Status::invalid_argument(format!(
                "envelope_ids names {} envelopes; the limit is {MAX_PURGE_IDS} per report",
                reported.len()
            )));
        }
        let mut ids = Vec::new();
        for raw in reported {
            let id = EnvelopeId::from_bytes(raw).map_err(|_| {
                Status::invalid_argument(format!(
                    "envelope_ids: an id is 16 bytes, not {}",
                    raw.len()
                ))
            })?;
            if ids.contains(raw) {
                return Err(Status::invalid_argument(format!(
                    "envelope_ids names {id} twice"
                )));
            }
            // Only what was delivered to this node belongs in its purge; an
            // unknown id and another node's envelope are answered alike.
            if !self
                .state
                .store
                .delivered(&id, node)
                .map_err(storage_status)?
            {
                return Err(Status::not_found(format!(
                    "envelope {id} was not delivered to node {node}; nothing was recorded"
                )));
            }
            ids.push(raw.clone());
        }
        if ids.is_empty() {
            return Ok(Response::new(v1::AcknowledgeResponse { log_index: 0 }));
        }
        let event = v1::AuditEvent {
            at_ms: self.state.now_ms(),
            event: Some(v1::audit_event::Event::RecordsPurged(v1::RecordsPurged {
                node: node.to_string(),
                envelope_ids: ids,
            })),
        };
        let index = self
            .state
            .store
            .append(event)
            .await
            .map_err(storage_status)?;
        tracing::info!(%node, index, "purge recorded");
        Ok(Response::new(v1::AcknowledgeResponse { log_index: index }))
    }

    async fn get_checkpoint(
        &self,
        req: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<v1::CheckpointResponse>, Status> {
        self.node(&req)?;
        checkpoint_response(&self.state, req.get_ref().from_size).map(Response::new)
    }

    async fn cosign(
        &self,
        req: Request<v1::CosignRequest>,
    ) -> Result<Response<v1::CosignResponse>, Status> {
        let node = self.node(&req)?;
        let req = req.into_inner();
        let text = String::from_utf8(req.checkpoint)
            .map_err(|_| Status::invalid_argument("checkpoint is not UTF-8"))?;
        let cp = crate::protocol::note::Checkpoint::parse(&text)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let stored = self
            .state
            .store
            .checkpoint(cp.size())
            .map_err(storage_status)?
            .ok_or_else(|| Status::not_found(format!("no checkpoint of size {}", cp.size())))?;
        let stored = crate::protocol::note::Note::parse(&stored)
            .map_err(|e| Status::internal(e.to_string()))?;
        if stored.text() != text {
            return Err(Status::invalid_argument(
                "that is not the checkpoint this log signed",
            ));
        }
        let sig = crate::protocol::note::NoteSignature::parse_line(&req.cosignature)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let dir = self.state.directory();
        let verifier = crate::protocol::transparency::witness_verifier(&dir, node)
            .ok_or_else(|| Status::permission_denied(format!("node {node} has no witness key")))?;
        crate::protocol::note::verify_cosignature(&cp, &sig, &verifier)
            .map_err(|e| Status::permission_denied(format!("cosignature does not verify: {e}")))?;
        self.state
            .store
            .put_cosignature(cp.size(), node, sig.to_line())
            .await
            .map_err(storage_status)?;
        tracing::debug!(%node, size = cp.size(), "cosignature recorded");
        Ok(Response::new(v1::CosignResponse {}))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<v1::InclusionProofRequest>,
    ) -> Result<Response<v1::InclusionProof>, Status> {
        let node = self.node(&req)?;
        let r = req.get_ref();
        let id = EnvelopeId::from_bytes(&r.envelope_id).map_err(|_| {
            Status::invalid_argument(format!(
                "envelope_id must be 16 bytes, not {}",
                r.envelope_id.len()
            ))
        })?;
        // Only the sending node learns where its submission is in the log;
        // for any other envelope the answer is the one for an unknown id.
        let accepted = self.state.store.accepted(&id).map_err(storage_status)?;
        let index = match accepted {
            Some(a) if a.summary.sender_node == node.as_str() => a.log_index,
            _ => {
                return Err(Status::not_found(format!(
                    "no submission {id} of node {node} in the log"
                )));
            }
        };
        inclusion_proof(&self.state, index, r.tree_size).map(Response::new)
    }

    async fn report_refusal(
        &self,
        req: Request<v1::RefusalReport>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        let node = self.node(&req)?;
        let r = check_refusal_report(node, req.into_inner(), &self.state.directory())?;
        let event = v1::AuditEvent {
            at_ms: self.state.now_ms(),
            event: Some(v1::audit_event::Event::SubmissionRefused(
                v1::SubmissionRefused {
                    submitting_node: node.to_string(),
                    code: v1::RefusalCode::Policy as i32,
                    reason: format!("refused by node {node} before sealing"),
                    envelope: Some(r.transfer),
                    policy_bundle_hash: r.policy_bundle_hash,
                    policy_explanation: r.policy_explanation,
                    unverified_header_sha256: Vec::new(),
                },
            )),
        };
        let index = self
            .state
            .store
            .append(event)
            .await
            .map_err(storage_status)?;
        Ok(Response::new(v1::AcknowledgeResponse { log_index: index }))
    }

    async fn get_directory(
        &self,
        req: Request<v1::GetDirectoryRequest>,
    ) -> Result<Response<v1::SignedDirectory>, Status> {
        self.node(&req)?;
        Ok(Response::new(self.state.directory().signed().clone()))
    }
}

/// The latest checkpoint with its cosignatures, and a consistency proof from
/// `from_size` to it.
pub(crate) fn checkpoint_response(
    state: &BrokerState,
    from_size: u64,
) -> Result<v1::CheckpointResponse, Status> {
    let (size, checkpoint) = state
        .log
        .checkpoint_note(state.store.as_ref(), None)
        .map_err(|e| Status::internal(e.to_string()))?
        .ok_or_else(|| Status::unavailable("no checkpoint yet"))?;
    if from_size > size {
        return Err(Status::invalid_argument(format!(
            "from_size {from_size} is beyond the latest checkpoint ({size})"
        )));
    }
    let consistency_proof = if from_size == 0 || from_size == size {
        Vec::new()
    } else {
        state
            .store
            .consistency_proof(from_size, size)
            .map_err(storage_status)?
            .iter()
            .map(|h| h.to_vec())
            .collect()
    };
    Ok(v1::CheckpointResponse {
        checkpoint,
        consistency_proof,
    })
}

/// An inclusion proof of entry `index` against the checkpoint of
/// `tree_size` (the latest if 0).
pub(crate) fn inclusion_proof(
    state: &BrokerState,
    index: u64,
    tree_size: u64,
) -> Result<v1::InclusionProof, Status> {
    let size = if tree_size == 0 {
        None
    } else {
        Some(tree_size)
    };
    let (size, checkpoint) = state
        .log
        .checkpoint_note(state.store.as_ref(), size)
        .map_err(|e| Status::internal(e.to_string()))?
        .ok_or_else(|| {
            Status::unavailable("no checkpoint of that size yet; try again in a second")
        })?;
    if index >= size {
        return Err(Status::unavailable(format!(
            "entry {index} is not yet in a checkpoint (latest covers {size}); try again in a second"
        )));
    }
    let proof = state
        .store
        .inclusion_proof(index, size)
        .map_err(storage_status)?;
    let leaf = state
        .store
        .leaves(index, index + 1)
        .map_err(storage_status)?
        .pop()
        .ok_or_else(|| Status::internal("entry missing"))?;
    Ok(v1::InclusionProof {
        index,
        tree_size: size,
        leaf,
        proof: proof.iter().map(|h| h.to_vec()).collect(),
        checkpoint,
    })
}

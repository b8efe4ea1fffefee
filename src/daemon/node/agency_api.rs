//! The agency API: the node's gRPC edge towards its own country's agencies.
//!
//! The calling agency is the one named in its certificate, which must have
//! been issued by this country's national CA; nothing in a request can speak
//! for another agency.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::idempotency::{self, Arrival, Content};
use super::{NodeState, SubmitOutcome};
use crate::daemon::status::{exceeded, invalid, node_storage};
use crate::daemon::tls::{Issuer, peer_of};
use crate::protocol::bounds;
use crate::protocol::envelope::{self, SealInput};
use crate::protocol::ids::{AgencyId, Country, EnvelopeId, Role};
use crate::protocol::proto::v1;
use crate::protocol::time::DAY_MS;

/// How long Send waits for the broker's answer before reporting "queued".
const SEND_WAIT: Duration = Duration::from_secs(10);

pub struct AgencyService {
    state: Arc<NodeState>,
}

impl AgencyService {
    pub fn new(state: Arc<NodeState>) -> Self {
        AgencyService { state }
    }

    fn agency<T>(&self, req: &Request<T>) -> Result<AgencyId, Status> {
        let me = self.state.country;
        let peer = peer_of(req)?;
        let agency = match (&peer.role, peer.issuer) {
            (Ok(Role::Agency(a)), Issuer::National(cc)) if cc == me && a.country() == me => {
                a.clone()
            }
            (Ok(Role::Agency(a)), _) if a.country() != me => {
                return Err(Status::permission_denied(format!(
                    "agency {a} belongs to {}; this node serves {me}",
                    a.country()
                )));
            }
            (Ok(Role::Agency(a)), _) => {
                return Err(Status::permission_denied(format!(
                    "certificate for {a} was not issued by the {me} national CA"
                )));
            }
            (Ok(role), _) => {
                return Err(Status::permission_denied(format!(
                    "the agency API is for agencies of {me}; this certificate is for {role}"
                )));
            }
            (Err(e), _) => {
                return Err(Status::permission_denied(format!(
                    "certificate not accepted: {e}"
                )));
            }
        };
        match self.state.directory().agency(&agency) {
            Some(info) if !info.revoked => Ok(agency),
            Some(_) => Err(Status::permission_denied(format!(
                "agency {agency} is revoked"
            ))),
            None => Err(Status::permission_denied(format!(
                "agency {agency} is not in the directory"
            ))),
        }
    }
}

/// Parses the envelope id in request field `field`.
fn envelope_id(field: &'static str, s: &str) -> Result<EnvelopeId, Status> {
    bounds::check_len(field, s.as_bytes(), bounds::MAX_ENVELOPE_ID_TEXT).map_err(exceeded)?;
    s.parse().map_err(|e: crate::protocol::ids::IdError| {
        Status::invalid_argument(format!("{field}: {e}"))
    })
}

type InboxStream = Pin<Box<dyn Stream<Item = Result<v1::InboxEntry, Status>> + Send>>;

#[tonic::async_trait]
impl crate::daemon::rpc::agency_server::Agency for AgencyService {
    async fn send(
        &self,
        req: Request<v1::SendRequest>,
    ) -> Result<Response<v1::SendResponse>, Status> {
        let sender = self.agency(&req)?;
        let req = req.into_inner();
        let key = match idempotency::arrive(&self.state, &sender, &req.idempotency_key, || {
            Content::send(&req)
        })
        .await?
        {
            Arrival::Repeat(earlier) => return Ok(Response::new(earlier)),
            Arrival::New(key) => key,
        };
        let record = req
            .record
            .ok_or_else(|| Status::invalid_argument("no record"))?;
        if matches!(
            crate::protocol::categories::record_kind(&record),
            Some(v1::RecordKind::PermissionRequest | v1::RecordKind::PermissionGrant)
        ) {
            return Err(Status::invalid_argument(
                "permission messages are sent with RequestPermission and GrantPermission",
            ));
        }
        let labels = req
            .labels
            .ok_or_else(|| Status::invalid_argument("no labels"))?;
        if !labels.provider.is_empty() {
            return Err(Status::invalid_argument(
                "labels.provider is set by the node when a record is passed on (Forward)",
            ));
        }
        if !labels.in_reply_to.is_empty() {
            let parent = envelope_id("labels.in_reply_to", &labels.in_reply_to)?;
            let known = self
                .state
                .store
                .fetch(&sender, &parent)
                .await
                .map_err(node_storage)?
                .is_some()
                || self
                    .state
                    .store
                    .sent(&parent)
                    .await
                    .map_err(node_storage)?
                    .is_some_and(|s| s.sender_agency == sender.to_string());
            if !known {
                return Err(Status::invalid_argument(format!(
                    "in_reply_to {parent}: no such record in {sender}'s inbox or sent records"
                )));
            }
        }
        let out = Outgoing {
            sender,
            recipients: req.recipients,
            record,
            labels,
            onward_of: None,
            permission: None,
            key,
        };
        self.dispatch(out).await.map(Response::new)
    }

    async fn forward(
        &self,
        req: Request<v1::ForwardRequest>,
    ) -> Result<Response<v1::SendResponse>, Status> {
        let sender = self.agency(&req)?;
        let req = req.into_inner();
        let key = match idempotency::arrive(&self.state, &sender, &req.idempotency_key, || {
            Content::forward(&req)
        })
        .await?
        {
            Arrival::Repeat(earlier) => return Ok(Response::new(earlier)),
            Arrival::New(key) => key,
        };
        let id = envelope_id("envelope_id", &req.envelope_id)?;
        let original = self.inbox_record(&sender, &id).await?;
        let entry = original.entry.unwrap_or_default();
        let provider = provider_of(&entry).to_string();
        let orig_labels = entry.labels.unwrap_or_default();
        let mut labels = onward_labels(&orig_labels, req.labels.unwrap_or_default())?;
        labels.provider = provider;
        let record = original
            .record
            .ok_or_else(|| Status::internal("stored record has no content"))?;
        let out = Outgoing {
            sender,
            recipients: req.recipients,
            record,
            labels,
            onward_of: Some(id),
            permission: None,
            key,
        };
        self.dispatch(out).await.map(Response::new)
    }

    async fn request_permission(
        &self,
        req: Request<v1::RequestPermissionRequest>,
    ) -> Result<Response<v1::SendResponse>, Status> {
        let sender = self.agency(&req)?;
        let req = req.into_inner();
        let key = match idempotency::arrive(&self.state, &sender, &req.idempotency_key, || {
            Content::request_permission(&req)
        })
        .await?
        {
            Arrival::Repeat(earlier) => return Ok(Response::new(earlier)),
            Arrival::New(key) => key,
        };
        bounds::check_strings(
            "third_agencies",
            &req.third_agencies,
            self.state.limits.max_recipients,
            bounds::MAX_AGENCY_ID,
        )
        .map_err(exceeded)?;
        bounds::check_len(
            "justification",
            req.justification.as_bytes(),
            bounds::MAX_PERMISSION_TEXT,
        )
        .map_err(exceeded)?;
        let id = envelope_id("envelope_id", &req.envelope_id)?;
        if req.third_agencies.is_empty() {
            return Err(Status::invalid_argument(
                "name the agencies the record would be passed on to",
            ));
        }
        let mut third: Vec<AgencyId> = Vec::with_capacity(req.third_agencies.len());
        for a in &req.third_agencies {
            let a: AgencyId = a.parse().map_err(|e: crate::protocol::ids::IdError| {
                Status::invalid_argument(format!("third_agencies: {e}"))
            })?;
            if third.contains(&a) {
                return Err(Status::invalid_argument(format!(
                    "third agency {a} listed twice"
                )));
            }
            third.push(a);
        }
        let entry = self
            .inbox_record(&sender, &id)
            .await?
            .entry
            .unwrap_or_default();
        // Only the provider of the original record can permit passing it on.
        let provider = provider_of(&entry).to_string();
        let mut labels = entry.labels.unwrap_or_default();
        labels.in_reply_to.clone_from(&entry.envelope_id);
        labels.expires_at_ms = 0;
        labels.provider.clear();
        let scope = v1::PermissionScope {
            original_envelope_id: id.as_bytes().to_vec(),
            grantee: sender.to_string(),
            third_agencies: req.third_agencies,
        };
        let record = v1::CaseRecord {
            body: Some(v1::case_record::Body::PermissionRequest(
                v1::PermissionRequest {
                    justification: req.justification,
                },
            )),
        };
        let out = Outgoing {
            sender,
            recipients: vec![provider],
            record,
            labels,
            onward_of: None,
            permission: Some(scope),
            key,
        };
        self.dispatch(out).await.map(Response::new)
    }

    async fn grant_permission(
        &self,
        req: Request<v1::GrantPermissionRequest>,
    ) -> Result<Response<v1::SendResponse>, Status> {
        let sender = self.agency(&req)?;
        let req = req.into_inner();
        let key = match idempotency::arrive(&self.state, &sender, &req.idempotency_key, || {
            Content::grant_permission(&req)
        })
        .await?
        {
            Arrival::Repeat(earlier) => return Ok(Response::new(earlier)),
            Arrival::New(key) => key,
        };
        bounds::check_len(
            "conditions",
            req.conditions.as_bytes(),
            bounds::MAX_PERMISSION_TEXT,
        )
        .map_err(exceeded)?;
        let id = envelope_id("request_envelope_id", &req.request_envelope_id)?;
        let entry = self
            .inbox_record(&sender, &id)
            .await?
            .entry
            .unwrap_or_default();
        let scope = match (entry.kind(), entry.permission.clone()) {
            (v1::RecordKind::PermissionRequest, Some(scope)) => scope,
            _ => {
                return Err(Status::invalid_argument(format!(
                    "{id} is not a permission request"
                )));
            }
        };
        let mut labels = entry.labels.unwrap_or_default();
        labels.in_reply_to.clone_from(&entry.envelope_id);
        labels.expires_at_ms = 0;
        labels.provider.clear();
        let record = v1::CaseRecord {
            body: Some(v1::case_record::Body::PermissionGrant(
                v1::PermissionGrant {
                    conditions: req.conditions,
                },
            )),
        };
        let out = Outgoing {
            sender,
            recipients: vec![scope.grantee.clone()],
            record,
            labels,
            onward_of: None,
            permission: Some(scope),
            key,
        };
        self.dispatch(out).await.map(Response::new)
    }

    async fn list_inbox(
        &self,
        req: Request<v1::ListInboxRequest>,
    ) -> Result<Response<v1::ListInboxResponse>, Status> {
        let agency = self.agency(&req)?;
        let req = req.into_inner();
        let after = if req.after.is_empty() {
            None
        } else {
            Some(envelope_id("after", &req.after)?)
        };
        let limit = if req.limit == 0 {
            1000
        } else {
            req.limit.min(10_000) as usize
        };
        let entries = self
            .state
            .store
            .inbox(&agency, after.as_ref(), limit)
            .await
            .map_err(node_storage)?
            .into_iter()
            .filter_map(|r| r.entry)
            .collect();
        Ok(Response::new(v1::ListInboxResponse { entries }))
    }

    type WatchInboxStream = InboxStream;

    async fn watch_inbox(
        &self,
        req: Request<v1::WatchInboxRequest>,
    ) -> Result<Response<Self::WatchInboxStream>, Status> {
        let agency = self.agency(&req)?;
        let state = self.state.clone();
        // Subscribe before listing so nothing falls between the two.
        let mut events = state.inbox_events.subscribe();
        let existing = state
            .store
            .inbox(&agency, None, usize::MAX)
            .await
            .map_err(node_storage)?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let mut stopping = state.stopping();
        tokio::spawn(async move {
            let mut seen = std::collections::HashSet::new();
            for r in existing {
                if let Some(e) = r.entry {
                    seen.insert(e.envelope_id.clone());
                    if tx.send(Ok(e)).await.is_err() {
                        return;
                    }
                }
            }
            loop {
                let ev = tokio::select! {
                    ev = events.recv() => ev,
                    _ = tx.closed() => return,
                    _ = stopping.wait_for(|s| *s) => return,
                };
                match ev {
                    Ok((a, e)) if a == agency && seen.insert(e.envelope_id.clone()) => {
                        if tx.send(Ok(e)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::data_loss(format!(
                                "watcher fell {n} entries behind; list the inbox again"
                            ))))
                            .await;
                        return;
                    }
                    Err(_) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn fetch(
        &self,
        req: Request<v1::FetchRequest>,
    ) -> Result<Response<v1::InboxRecord>, Status> {
        let agency = self.agency(&req)?;
        let id = envelope_id("envelope_id", &req.get_ref().envelope_id)?;
        match self
            .state
            .store
            .fetch(&agency, &id)
            .await
            .map_err(node_storage)?
        {
            Some(r) => Ok(Response::new(r)),
            None => Err(Status::not_found(format!(
                "{id} is not in {agency}'s inbox"
            ))),
        }
    }

    async fn status(
        &self,
        req: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::SendStatus>, Status> {
        let agency = self.agency(&req)?;
        let id = envelope_id("envelope_id", &req.get_ref().envelope_id)?;
        match self.state.store.sent(&id).await.map_err(node_storage)? {
            Some(s) if s.sender_agency == agency.to_string() => Ok(Response::new(s)),
            _ => Err(Status::not_found(format!("{agency} sent no record {id}"))),
        }
    }

    async fn list_sent(
        &self,
        req: Request<v1::ListSentRequest>,
    ) -> Result<Response<v1::ListSentResponse>, Status> {
        let agency = self.agency(&req)?;
        let sent = self
            .state
            .store
            .sent_by(&agency)
            .await
            .map_err(node_storage)?;
        Ok(Response::new(v1::ListSentResponse { sent }))
    }
}

/// The labels of a transfer refused before sealing, as an audit event
/// records them (no envelope id, no digests: nothing was sealed).
fn refused_summary(t: &crate::protocol::policy::Transfer, node: Country) -> v1::EnvelopeSummary {
    v1::EnvelopeSummary {
        sender_node: node.to_string(),
        sender_agency: t.sender.id.to_string(),
        recipients: t.recipients.iter().map(|r| r.id.to_string()).collect(),
        kind: t.kind as i32,
        declared_categories: t.categories.to_vec_i32(),
        purpose: t.labels.purpose,
        legal_basis: t.labels.legal_basis,
        handling: t.labels.handling,
        classification: t.labels.classification,
        priority: t.labels.priority,
        case_reference: t.labels.case_reference.clone(),
        created_at_ms: t.created_at_ms,
        expires_at_ms: t.expires_at_ms,
        in_reply_to: t.labels.in_reply_to.clone(),
        transfer_ground: t.labels.transfer_ground,
        ..Default::default()
    }
}

/// One record an agency sends, however it came to be sent.
struct Outgoing {
    sender: AgencyId,
    recipients: Vec<String>,
    record: v1::CaseRecord,
    labels: v1::Labels,
    onward_of: Option<EnvelopeId>,
    permission: Option<v1::PermissionScope>,
    /// The call's idempotency key, recorded with the envelope.
    key: Option<crate::storage::node::idempotency::KeyedCall>,
}

/// The agency that provided a record in an inbox: its sender, or for a
/// record passed on, the provider its header names (which the broker
/// checked against the record passed on).
fn provider_of(entry: &v1::InboxEntry) -> &str {
    match entry.labels.as_ref() {
        Some(l) if !entry.onward_of.is_empty() && !l.provider.is_empty() => &l.provider,
        _ => &entry.sender_agency,
    }
}

/// The labels of an onward transfer: what the agency gives, the original's
/// where it gives nothing, and never a weaker handling code than the
/// original's restriction.
fn onward_labels(orig: &v1::Labels, mut l: v1::Labels) -> Result<v1::Labels, Status> {
    if l.purpose == 0 {
        l.purpose = orig.purpose;
    }
    if l.legal_basis == 0 {
        l.legal_basis = orig.legal_basis;
        if l.legal_basis_reference.is_empty() {
            l.legal_basis_reference
                .clone_from(&orig.legal_basis_reference);
        }
    }
    if l.classification == 0 {
        l.classification = orig.classification;
    }
    if l.priority == 0 {
        l.priority = orig.priority;
    }
    if l.evaluation.is_none() {
        l.evaluation = orig.evaluation;
    }
    if l.case_reference.is_empty() {
        l.case_reference.clone_from(&orig.case_reference);
    }
    let orig_handling = orig.handling();
    if l.handling == 0 {
        l.handling = orig.handling;
    } else if orig_handling != v1::HandlingCode::H0 && l.handling() != orig_handling {
        return Err(Status::invalid_argument(format!(
            "the original's handling code {} travels with it and cannot be changed",
            orig_handling.as_str_name()
        )));
    }
    if l.handling() == v1::HandlingCode::H3 && l.handling_restriction.is_empty() {
        l.handling_restriction
            .clone_from(&orig.handling_restriction);
    }
    // Passing a record on never extends its life.
    if orig.expires_at_ms != 0 && (l.expires_at_ms == 0 || l.expires_at_ms > orig.expires_at_ms) {
        l.expires_at_ms = orig.expires_at_ms;
    }
    Ok(l)
}

impl AgencyService {
    async fn inbox_record(
        &self,
        agency: &AgencyId,
        id: &EnvelopeId,
    ) -> Result<v1::InboxRecord, Status> {
        self.state
            .store
            .fetch(agency, id)
            .await
            .map_err(node_storage)?
            .ok_or_else(|| Status::not_found(format!("{id} is not in {agency}'s inbox")))
    }

    /// The transfer as policy sees it, with what this node knows of an
    /// original being passed on and of the permissions its originator gave.
    #[allow(clippy::too_many_arguments)]
    async fn transfer(
        &self,
        sender: &AgencyId,
        recipients: &[AgencyId],
        kind: v1::RecordKind,
        record: &v1::CaseRecord,
        labels: &v1::Labels,
        now: i64,
        onward_of: Option<EnvelopeId>,
    ) -> Result<crate::protocol::policy::Transfer, Status> {
        use crate::protocol::policy::{AgencyFacts, Onward, Transfer};
        let dir = self.state.directory();
        let facts = |a: &AgencyId| {
            AgencyFacts::from_directory(&dir, a)
                .ok_or_else(|| Status::not_found(format!("{a} is not in the directory")))
        };
        let onward = match onward_of {
            None => None,
            Some(id) => {
                let entry = self
                    .inbox_record(sender, &id)
                    .await?
                    .entry
                    .unwrap_or_default();
                let originator: AgencyId = provider_of(&entry)
                    .parse()
                    .map_err(|_| Status::internal("stored sender agency unreadable"))?;
                let grants = self.grants(sender, &id).await?;
                Some(Onward {
                    originator,
                    original_handling: entry.labels.unwrap_or_default().handling(),
                    permission_granted: recipients.iter().all(|r| grants.contains(&r.to_string())),
                })
            }
        };
        Ok(Transfer {
            sender: facts(sender)?,
            recipients: recipients.iter().map(facts).collect::<Result<_, _>>()?,
            kind,
            categories: crate::protocol::categories::derive(record),
            labels: labels.clone(),
            created_at_ms: now,
            expires_at_ms: labels.expires_at_ms,
            onward,
        })
    }

    /// The agencies `grantee` may pass `original` on to, by the grants in
    /// its inbox.
    async fn grants(
        &self,
        grantee: &AgencyId,
        original: &EnvelopeId,
    ) -> Result<Vec<String>, Status> {
        let entries = self
            .state
            .store
            .inbox(grantee, None, usize::MAX)
            .await
            .map_err(node_storage)?;
        Ok(entries
            .into_iter()
            .filter_map(|r| r.entry)
            .filter(|e| e.kind() == v1::RecordKind::PermissionGrant)
            .filter_map(|e| e.permission)
            .filter(|p| {
                p.original_envelope_id == original.as_bytes() && p.grantee == grantee.to_string()
            })
            .flat_map(|p| p.third_agencies)
            .collect())
    }

    /// Checks, seals, stores in the outbox and waits briefly for the
    /// broker's answer; counts the outcome.
    async fn dispatch(&self, out: Outgoing) -> Result<v1::SendResponse, Status> {
        use crate::daemon::metrics::SendOutcome;
        let answer = self.check_and_seal(out).await;
        self.state.metrics.sent(match &answer {
            Ok(_) => SendOutcome::Sealed,
            Err(s) => match s.code() {
                tonic::Code::PermissionDenied => SendOutcome::Refused,
                tonic::Code::InvalidArgument
                | tonic::Code::NotFound
                | tonic::Code::FailedPrecondition
                | tonic::Code::OutOfRange
                | tonic::Code::ResourceExhausted => SendOutcome::Invalid,
                _ => SendOutcome::Error,
            },
        });
        answer
    }

    async fn check_and_seal(&self, out: Outgoing) -> Result<v1::SendResponse, Status> {
        let Outgoing {
            sender,
            recipients: requested,
            record,
            mut labels,
            onward_of,
            permission,
            key,
        } = out;
        let state = &self.state;
        let dir = state.directory();
        let now = state.now_ms();

        bounds::check_strings(
            "recipients",
            &requested,
            state.limits.max_recipients,
            bounds::MAX_AGENCY_ID,
        )
        .map_err(exceeded)?;
        if requested.is_empty() {
            return Err(Status::invalid_argument("no recipients"));
        }
        let mut recipients = Vec::with_capacity(requested.len());
        for r in &requested {
            let a: AgencyId = r.parse().map_err(|e: crate::protocol::ids::IdError| {
                Status::invalid_argument(e.to_string())
            })?;
            match dir.agency(&a) {
                Some(info) if !info.revoked => {}
                Some(_) => {
                    return Err(Status::failed_precondition(format!(
                        "recipient {a} is revoked"
                    )));
                }
                None => {
                    return Err(Status::not_found(format!(
                        "recipient {a} is not in the directory"
                    )));
                }
            }
            if a == sender {
                return Err(Status::invalid_argument("an agency cannot send to itself"));
            }
            if recipients.contains(&a) {
                return Err(Status::invalid_argument(format!(
                    "recipient {a} listed twice"
                )));
            }
            recipients.push(a);
        }
        let kind = crate::protocol::categories::record_kind(&record)
            .ok_or_else(|| Status::invalid_argument("record has no body"))?;
        envelope::check_labels(&labels).map_err(invalid)?;

        let max = now + i64::from(state.retention.max_days) * DAY_MS;
        if labels.expires_at_ms == 0 {
            labels.expires_at_ms = now + i64::from(state.retention.default_days) * DAY_MS;
        } else if labels.expires_at_ms <= now {
            return Err(Status::invalid_argument("expiry is in the past"));
        } else if labels.expires_at_ms > max {
            return Err(Status::invalid_argument(format!(
                "expiry {} is beyond this node's retention limit of {} days",
                crate::protocol::time::format_ms(labels.expires_at_ms),
                state.retention.max_days
            )));
        }

        let input = SealInput {
            sender: &sender,
            recipients: &recipients,
            record: &record,
            labels: labels.clone(),
            created_at_ms: now,
            expires_at_ms: labels.expires_at_ms,
            onward_of,
            permission,
        };
        // The broker would refuse a larger envelope, and its answer would
        // come only after the record had been sealed and queued.
        let size = envelope::sealed_len(&input).map_err(invalid)?;
        let max = state.limits.max_envelope_bytes;
        if size > max {
            return Err(Status::invalid_argument(format!(
                "the record would make an envelope of {size} bytes; the broker's limit is {max} bytes"
            )));
        }

        // Nothing leaves the country that the broker would refuse.
        let transfer = self
            .transfer(&sender, &recipients, kind, &record, &labels, now, onward_of)
            .await?;
        let decision = state.policies().decide(&transfer);
        if !decision.allowed {
            tracing::info!(from = %sender, reason = %decision.explanation, "refused before sealing");
            state.report_refusal(v1::RefusalReport {
                transfer: Some(refused_summary(&transfer, state.country)),
                policy_bundle_hash: decision.bundle_hash.clone(),
                // The broker takes an explanation up to its limit; a longer
                // one is reported cut, with a marker.
                policy_explanation: crate::protocol::bounds::clip(
                    &decision.explanation,
                    crate::protocol::bounds::MAX_REFUSAL_EXPLANATION,
                )
                .into_owned(),
            });
            return Err(Status::permission_denied(decision.explanation));
        }

        let sealed = envelope::seal(&input, &state.signing_key(), &dir).map_err(invalid)?;
        // Check the envelope as the broker and the recipients will, so that
        // nothing malformed leaves the country.
        envelope::verify_within(&sealed.envelope, &dir, now, &state.limits.bounds())
            .map_err(invalid)?;
        let mut by_node: BTreeMap<Country, Vec<String>> = BTreeMap::new();
        for a in &recipients {
            by_node.entry(a.country()).or_default().push(a.to_string());
        }
        let status = v1::SendStatus {
            envelope_id: sealed.id.to_string(),
            state: v1::SendState::Queued as i32,
            detail: "in the outbox".into(),
            log_index: 0,
            kind: kind as i32,
            recipients: requested.clone(),
            categories: sealed.categories.to_vec_i32(),
            labels: Some(labels),
            created_at_ms: now,
            recipient_status: by_node
                .into_iter()
                .map(|(node, agencies)| v1::RecipientStatus {
                    node: node.to_string(),
                    agencies,
                    state: v1::DeliveryState::Pending as i32,
                    receipt: None,
                    signed_receipt: None,
                })
                .collect(),
            sender_agency: sender.to_string(),
            inclusion_verified_at: 0,
        };
        let waiter = state.register_waiter(sealed.id);
        if let Some(earlier) =
            idempotency::enqueue(state, &sealed.id, &sealed.envelope, &status, key.as_ref()).await?
        {
            return Ok(earlier);
        }
        tracing::info!(id = %sealed.id, from = %sender, kind = kind.as_str_name(), categories = %sealed.categories, "sealed");

        // While the broker is known to be unreachable there is no answer to
        // wait for: the record is in the outbox, sent once it is back.
        let outcome = if state.uplink.reachable() {
            tokio::time::timeout(SEND_WAIT, waiter)
                .await
                .ok()
                .and_then(Result::ok)
        } else {
            None
        }
        .unwrap_or_else(|| {
            SubmitOutcome::Queued(if state.uplink.reachable() {
                "the broker has not answered yet; queued in the outbox".into()
            } else {
                "the broker is unreachable; queued in the outbox, to be sent when it is back".into()
            })
        });
        let (state_code, detail, log_index) = match outcome {
            SubmitOutcome::Accepted { log_index } => (
                v1::SendState::Accepted,
                "accepted by the broker".to_string(),
                log_index,
            ),
            SubmitOutcome::Refused(m) => (v1::SendState::Refused, m, 0),
            SubmitOutcome::Queued(m) => (v1::SendState::Queued, m, 0),
        };
        Ok(v1::SendResponse {
            envelope_id: sealed.id.to_string(),
            state: state_code as i32,
            detail,
            log_index,
            categories: sealed.categories.to_vec_i32(),
            repeat: false,
        })
    }
}

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
use super::claims::{self, Claim};
use crate::daemon::status::{self, broker_storage};
use crate::daemon::tls::{Issuer, peer_of};
use crate::protocol::bounds::{self, MAX_PURGE_IDS};
use crate::protocol::envelope;
use crate::protocol::ids::{AgencyId, Country, EnvelopeId, Role};
use crate::protocol::policy::Onward;
use crate::protocol::proto::v1;
use crate::storage::broker::{Acceptance, Accepted, Cursor, Lane, MailItem, StoreError, Wakeup};

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
            Err(e) => return broker_storage(e),
        };
        tracing::info!(%node, code = code.as_str_name(), %reason, index, "submission refused");
        status::refused(code, &reason, index)
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
    async fn onward_and_grants(
        &self,
        h: &envelope::VerifiedHeader,
    ) -> Result<(Option<Onward>, Grants), Refusal> {
        let store = &self.state.store;
        let provider_of = |a: &Accepted, id: &EnvelopeId| {
            a.provider().ok_or_else(|| {
                Refusal::Onward(format!("the provider of record {id} is unreadable"))
            })
        };
        let named = h.labels.provider.as_str();
        let mut onward = None;
        if let Some(orig_id) = &h.onward_of {
            let orig = self.received_by(orig_id, &h.sender_agency).await?;
            let provider = provider_of(&orig, orig_id)?;
            if named != provider.to_string() {
                return Err(Refusal::Onward(format!(
                    "record {orig_id} was provided by {provider}; the header names provider {}",
                    crate::protocol::bounds::quoted(named)
                )));
            }
            let mut granted = true;
            for r in &h.recipients {
                granted &= store.granted(orig_id, &h.sender_agency, r).await?;
            }
            onward = Some(Onward {
                originator: provider,
                original_handling: v1::HandlingCode::try_from(orig.summary.handling)
                    .unwrap_or(v1::HandlingCode::Unspecified),
                permission_granted: granted,
            });
        } else if !named.is_empty() {
            return Err(Refusal::Onward(format!(
                "the header names provider {} but passes no record on",
                crate::protocol::bounds::quoted(named)
            )));
        }
        let mut grants = Vec::new();
        if let Some(p) = &h.permission {
            match h.kind {
                v1::RecordKind::PermissionRequest => {
                    // The grantee is the sender (envelope::verify checked).
                    let orig = self.received_by(&p.original, &p.grantee).await?;
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
                    let provider = store
                        .accepted(&p.original)
                        .await?
                        .and_then(|a| a.provider());
                    if provider.as_ref() != Some(&h.sender_agency) {
                        return Err(Refusal::Onward(format!(
                            "only the provider of record {} can grant permission to pass it on; {} is not",
                            p.original, h.sender_agency
                        )));
                    }
                    self.received_by(&p.original, &p.grantee).await?;
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

    /// A record as `agency` received it. An unknown id and a record the
    /// agency never received are refused alike: the answer tells a node
    /// nothing about exchanges it is not party to.
    async fn received_by(&self, id: &EnvelopeId, agency: &AgencyId) -> Result<Accepted, Refusal> {
        match self.state.store.accepted(id).await? {
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
    }
}

type DeliveryStream = Pin<Box<dyn Stream<Item = Result<v1::Delivery, Status>> + Send>>;

/// A delivery stream that ends as soon as the broker stops, leaving
/// unsent whatever its task had queued: the node gets it again from the
/// next broker, and the stream's end does not wait for a node that reads
/// slowly.
struct UntilStopped {
    items: tokio_stream::wrappers::ReceiverStream<Result<v1::Delivery, Status>>,
    stopped: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl Stream for UntilStopped {
    type Item = Result<v1::Delivery, Status>;

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        if let Some(stopped) = self.stopped.as_mut() {
            if stopped.as_mut().poll(cx).is_ready() {
                self.stopped = None;
                return std::task::Poll::Ready(None);
            }
        } else {
            return std::task::Poll::Ready(None);
        }
        Pin::new(&mut self.items).poll_next(cx)
    }
}

/// How many queued items a delivery stream reads at a time. Small, so that
/// a batch read before an urgent envelope or a receipt was queued delays it
/// little; an immediate envelope cuts a batch short (see `receive`).
const DELIVERY_BATCH: usize = 16;

/// How many deliveries a stream has in flight (sent, not yet acknowledged)
/// at most. Without a window, what waits ahead of an immediate envelope is
/// whatever the transport buffers towards a node slower than the broker:
/// HTTP/2 stream windows of megabytes, hundreds of envelopes. With it, an
/// immediate envelope waits behind at most this many, while a node that
/// processes deliveries concurrently still has this many to work on.
pub const DELIVERY_WINDOW: usize = 64;

/// How many deliveries a node's immediate stream has in flight at most.
/// Alerts are rare and small; a node that marks everything immediate gets
/// no more than this many in hand on that stream, while its main stream
/// goes on with the other lanes beside it.
pub const IMMEDIATE_WINDOW: usize = 8;

impl ExchangeService {
    /// Submit's pipeline (see the module doc); the Submit handler counts
    /// its answers.
    async fn submit_checked(
        &self,
        req: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitResponse>, Status> {
        use v1::RefusalCode as R;
        let node = self.node(&req)?;
        let _op = self.state.operation()?;
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
                        status::refusal_code(&e),
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
        if self
            .state
            .store
            .seen(&header.id)
            .await
            .map_err(broker_storage)?
        {
            let reason = format!("envelope id {} was already submitted", header.id);
            return Err(self
                .refuse(node, R::Duplicate, reason, Seen::Verified(&header), None)
                .await);
        }
        let (onward, grants) = match self.onward_and_grants(&header).await {
            Ok(v) => v,
            Err(Refusal::Storage(e)) => return Err(broker_storage(e)),
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
                    envelope: Some(summary.clone()),
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
            recipient_nodes,
            event,
            summary,
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
            Err(e) => return Err(broker_storage(e)),
        };
        tracing::info!(id = %header.id, from = %header.sender_agency, kind = header.kind.as_str_name(), index, "accepted");
        Ok(Response::new(v1::SubmitResponse {
            envelope_id: header.id.as_bytes().to_vec(),
            log_index: index,
            accepted_at_ms: now,
            policy_bundle_hash: decision.bundle_hash,
        }))
    }
}

#[tonic::async_trait]
impl crate::daemon::rpc::exchange_server::Exchange for ExchangeService {
    async fn submit(
        &self,
        req: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitResponse>, Status> {
        let answer = self.submit_checked(req).await;
        self.state.metrics.submitted(&answer);
        answer
    }

    type ReceiveStream = DeliveryStream;

    async fn receive(
        &self,
        req: Request<v1::ReceiveRequest>,
    ) -> Result<Response<Self::ReceiveStream>, Status> {
        let node = self.node(&req)?;
        let immediate = match v1::DeliveryLanes::try_from(req.get_ref().lanes) {
            Ok(v1::DeliveryLanes::All) => false,
            Ok(v1::DeliveryLanes::Immediate) => true,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "unknown delivery lanes {}",
                    req.get_ref().lanes
                )));
            }
        };
        let window = if immediate {
            IMMEDIATE_WINDOW
        } else {
            DELIVERY_WINDOW
        };
        if self.state.is_stopping() {
            return Err(Status::unavailable("the broker is shutting down"));
        }
        let state = self.state.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let mut stopping = state.stopping();
        let ends = state.stopping();
        // One delivery stream of each kind per node: this one ends an older
        // one of its kind, and a newer one ends this.
        let (generation, mut current) = state.claim_delivery(node, immediate);
        let mut claims = state.claims.open(node, immediate);
        tokio::spawn(async move {
            let replaced = || {
                Status::aborted(format!(
                    "a newer delivery stream of node {node} replaced this one"
                ))
            };
            let mut wakeup = match state.store.subscribe(node).await {
                Ok(rx) => rx,
                Err(e) => {
                    let _ = tx.send(Err(broker_storage(e))).await;
                    return;
                }
            };
            // Where this stream has got to in each lane it carries: nothing
            // is sent twice on it, and a newer stream starts again from the
            // oldest unacknowledged item of every lane.
            let mut cursor = if immediate {
                Cursor::only(Lane::Immediate)
            } else {
                Cursor::default()
            };
            loop {
                // Marked seen before looking, so a submit, an
                // acknowledgement or a released claim that lands between the
                // look and the wait is not missed.
                let seen = *wakeup.borrow_and_update();
                claims.changes().borrow_and_update();
                if !immediate {
                    // The immediate lane is the immediate stream's while the
                    // node holds one, and this stream's again once it ends.
                    cursor.carry(Lane::Immediate, !claims.immediate_stream_open());
                }
                let items = match state
                    .store
                    .pending(node, Some(&cursor), DELIVERY_BATCH)
                    .await
                {
                    Ok(items) => items,
                    Err(e) => {
                        let _ = tx.send(Err(broker_storage(e))).await;
                        return;
                    }
                };
                // An immediate envelope queued while this batch goes out
                // ends the batch, on a stream that carries the immediate
                // lane among others: what is left of it is not sent (the
                // cursor moves only past what was), and the next look puts
                // the immediate first. Anything else queued meanwhile waits
                // for the next look, which follows every batch. The first
                // item of a look goes once the window has room, so a
                // stream makes progress however often immediates arrive.
                let cuts = !immediate && cursor.carries(Lane::Immediate);
                let immediate_queued = |w: &Wakeup| cuts && w.immediate != seen.immediate;
                let was_empty = items.is_empty();
                let (mut moved, mut blocked) = (false, false);
                for (n, q) in items.into_iter().enumerate() {
                    let first = n == 0;
                    let full = |c: &claims::StreamClaims| c.held() >= window;
                    while full(&claims) && !immediate_queued(&wakeup.borrow()) {
                        tokio::select! {
                            woken = wakeup.changed() => if woken.is_err() {
                                let _ = tx.try_send(Err(Status::unavailable("broker store closed")));
                                return;
                            },
                            _ = claims.changes().changed() => {}
                            _ = tx.closed() => return,
                            _ = stopping.wait_for(|s| *s) => return,
                            _ = current.wait_for(|g| *g != generation) => {
                                let _ = tx.try_send(Err(replaced()));
                                return;
                            }
                        }
                    }
                    let now = *wakeup.borrow();
                    if immediate_queued(&now) && (!first || full(&claims)) {
                        break;
                    }
                    match claims.claim(q.seq) {
                        Claim::Claimed => {}
                        // Sent on this stream before its cursor went back
                        // over this lane, and not yet acknowledged.
                        Claim::Mine => {
                            cursor.sent(q.lane, q.seq);
                            moved = true;
                            continue;
                        }
                        // In flight on another stream of the node: this
                        // stream waits until that one is acknowledged or
                        // its stream ends, and sends nothing past it.
                        Claim::Taken => {
                            blocked = true;
                            break;
                        }
                    }
                    let item = match q.item {
                        MailItem::Envelope(_, env) => v1::delivery::Item::Envelope(env),
                        MailItem::Receipt(r) => v1::delivery::Item::Receipt(r),
                    };
                    let delivery = v1::Delivery {
                        seq: q.seq,
                        item: Some(item),
                    };
                    tokio::select! {
                        sent = tx.send(Ok(delivery)) => if sent.is_err() { return },
                        // A node that does not read holds no stop up.
                        _ = stopping.wait_for(|s| *s) => return,
                        _ = wakeup.wait_for(immediate_queued), if !first => {
                            claims.unclaim(q.seq);
                            break;
                        }
                        _ = current.wait_for(|g| *g != generation) => {
                            let _ = tx.try_send(Err(replaced()));
                            return;
                        }
                    }
                    cursor.sent(q.lane, q.seq);
                    moved = true;
                }
                if was_empty || (blocked && !moved) {
                    // Nothing to send, or only what another stream holds:
                    // wait for something to change rather than look again.
                    // With nothing waiting, the immediate stream looks again
                    // only for a new immediate envelope, not at every
                    // routine record queued or acknowledged.
                    let any_change = !immediate || blocked;
                    let woken = async {
                        if any_change {
                            wakeup.changed().await
                        } else {
                            wakeup
                                .wait_for(|w| w.immediate != seen.immediate)
                                .await
                                .map(drop)
                        }
                    };
                    tokio::select! {
                        woken = woken => if woken.is_err() {
                            let _ = tx.try_send(Err(Status::unavailable("broker store closed")));
                            return;
                        },
                        _ = claims.changes().changed(), if any_change => {}
                        _ = tx.closed() => return,
                        _ = stopping.wait_for(|s| *s) => return,
                        _ = current.wait_for(|g| *g != generation) => {
                            let _ = tx.try_send(Err(replaced()));
                            return;
                        }
                    }
                }
            }
        });
        tracing::info!(%node, generation, immediate, "delivery stream opened");
        Ok(Response::new(Box::pin(UntilStopped {
            items: tokio_stream::wrappers::ReceiverStream::new(rx),
            stopped: Some(Box::pin(async move {
                let mut ends = ends;
                let _ = ends.wait_for(|s| *s).await;
            })),
        })))
    }

    async fn acknowledge(
        &self,
        req: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        let node = self.node(&req)?;
        let _op = self.state.operation()?;
        let seq = req.get_ref().seq;
        let answer = super::receipts::acknowledge(&self.state, node, req.into_inner()).await;
        // Answered, or answered before: no stream of the node has it in
        // flight any more. A refused answer leaves the item where it was.
        let settled = match &answer {
            Ok(_) => true,
            Err(s) => s.code() == tonic::Code::NotFound,
        };
        if settled {
            self.state.claims.acknowledged(node, seq);
        }
        answer
    }

    async fn report_purge(
        &self,
        req: Request<v1::PurgeReport>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        let node = self.node(&req)?;
        let _op = self.state.operation()?;
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
                .await
                .map_err(broker_storage)?
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
            .map_err(broker_storage)?;
        tracing::info!(%node, index, "purge recorded");
        Ok(Response::new(v1::AcknowledgeResponse { log_index: index }))
    }

    async fn get_checkpoint(
        &self,
        req: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<v1::CheckpointResponse>, Status> {
        self.node(&req)?;
        checkpoint_response(&self.state, req.get_ref().from_size)
            .await
            .map(Response::new)
    }

    async fn cosign(
        &self,
        req: Request<v1::CosignRequest>,
    ) -> Result<Response<v1::CosignResponse>, Status> {
        let node = self.node(&req)?;
        let _op = self.state.operation()?;
        let req = req.into_inner();
        let text = String::from_utf8(req.checkpoint)
            .map_err(|_| Status::invalid_argument("checkpoint is not UTF-8"))?;
        let cp = crate::protocol::note::Checkpoint::parse(&text)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let stored = self
            .state
            .store
            .checkpoint(cp.size())
            .await
            .map_err(broker_storage)?
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
        // The node's current key, or a retired one within its overlap (a
        // cosignature made just before the node's switch).
        let verifiers =
            crate::protocol::transparency::witness_verifiers(&dir, node, self.state.now_ms());
        let verifier = verifiers
            .iter()
            .find(|v| v.key_id() == sig.key_id())
            .or(verifiers.first())
            .ok_or_else(|| Status::permission_denied(format!("node {node} has no witness key")))?;
        crate::protocol::note::verify_cosignature(&cp, &sig, verifier)
            .map_err(|e| Status::permission_denied(format!("cosignature does not verify: {e}")))?;
        self.state
            .store
            .put_cosignature(cp.size(), node, sig.to_line())
            .await
            .map_err(broker_storage)?;
        self.state
            .metrics
            .cosigned(node, cp.size(), self.state.now_ms());
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
        let accepted = self
            .state
            .store
            .accepted(&id)
            .await
            .map_err(broker_storage)?;
        let index = match accepted {
            Some(a) if a.summary.sender_node == node.as_str() => a.log_index,
            _ => {
                return Err(Status::not_found(format!(
                    "no submission {id} of node {node} in the log"
                )));
            }
        };
        inclusion_proof(&self.state, index, r.tree_size)
            .await
            .map(Response::new)
    }

    async fn report_refusal(
        &self,
        req: Request<v1::RefusalReport>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        let node = self.node(&req)?;
        let _op = self.state.operation()?;
        super::refusal_report::report(&self.state, node, req.into_inner()).await
    }

    async fn get_directory(
        &self,
        req: Request<v1::GetDirectoryRequest>,
    ) -> Result<Response<v1::SignedDirectory>, Status> {
        self.node(&req)?;
        Ok(Response::new(self.state.directory().signed().clone()))
    }

    async fn get_policies(
        &self,
        req: Request<v1::GetPoliciesRequest>,
    ) -> Result<Response<v1::PolicySet>, Status> {
        self.node(&req)?;
        let set = self.state.served_policies();
        let size = prost::Message::encoded_len(set.as_ref());
        if size > crate::storage::files::policy::distributed::MAX_SET_BYTES {
            return Err(Status::resource_exhausted(format!(
                "the policy set in force is {size} bytes, more than the {} a node accepts",
                crate::storage::files::policy::distributed::MAX_SET_BYTES
            )));
        }
        Ok(Response::new(set.as_ref().clone()))
    }
}

/// The latest checkpoint with its cosignatures, and a consistency proof from
/// `from_size` to it.
pub(crate) async fn checkpoint_response(
    state: &BrokerState,
    from_size: u64,
) -> Result<v1::CheckpointResponse, Status> {
    let (size, checkpoint) = state
        .log
        .checkpoint_note(state.store.as_ref(), None)
        .await
        .map_err(status::log)?
        .ok_or_else(|| Status::unavailable("no checkpoint yet"))?;
    if from_size > size {
        // The caller holds a later checkpoint than this broker serves: asking
        // again changes nothing until the broker's log catches up.
        return Err(Status::failed_precondition(format!(
            "from_size {from_size} is beyond the latest checkpoint ({size})"
        )));
    }
    let consistency_proof = if from_size == 0 || from_size == size {
        Vec::new()
    } else {
        state
            .store
            .consistency_proof(from_size, size)
            .await
            .map_err(broker_storage)?
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
pub(crate) async fn inclusion_proof(
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
        .await
        .map_err(status::log)?
        .ok_or_else(|| match size {
            None => Status::unavailable("no checkpoint has been signed yet; try again in a second"),
            Some(s) => Status::failed_precondition(format!(
                "no checkpoint was signed at tree size {s}; ask for the latest (0) or a size a checkpoint was signed at"
            )),
        })?;
    if index >= size {
        // Against the latest checkpoint, the next one covers the entry: a
        // retry helps. Against a size asked for, it never will.
        return Err(if tree_size == 0 {
            Status::unavailable(format!(
                "entry {index} is not yet in a checkpoint (latest covers {size}); try again in a second"
            ))
        } else {
            Status::failed_precondition(format!(
                "entry {index} is not in the tree of size {size}; ask for a larger size or the latest (0)"
            ))
        });
    }
    let proof = state
        .store
        .inclusion_proof(index, size)
        .await
        .map_err(broker_storage)?;
    let leaf = state
        .store
        .leaves(index, index + 1)
        .await
        .map_err(broker_storage)?
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

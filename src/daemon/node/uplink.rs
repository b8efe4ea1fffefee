//! The node's link to the broker: one submission of a sealed envelope and
//! what its answer settles (the outbox loop that runs them is in
//! [`super::window`]), and the receive loop that verifies, opens and files
//! deliveries and relays receipts.
//!
//! Both loops retry with capped exponential backoff while the broker is
//! unreachable, and end when the node shuts down. Any definitive answer to a
//! submission (accepted, refused with a refusal code, or a status no retry
//! can change) settles that record, so nothing blocks the records queued
//! behind it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;

use super::{NodeState, SubmitOutcome};
use crate::daemon::metrics::SubmitAnswer;
use crate::daemon::status;
use crate::protocol::bounds;
use crate::protocol::envelope::{self, EnvelopeError};
use crate::protocol::ids::{AgencyId, EnvelopeId};
use crate::protocol::proto::REFUSAL_METADATA;
use crate::protocol::proto::v1;
use crate::storage::StorageError;
use crate::storage::node::StatusUpdate;

/// The node's client of the broker's exchange API.
pub type Client = crate::daemon::rpc::exchange_client::ExchangeClient<Channel>;

pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(10);
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn next_backoff(d: Duration) -> Duration {
    (d * 2).min(BACKOFF_MAX)
}

/// One attempt. Returns false if the broker could not give an answer, so the
/// envelope stays queued.
pub(super) async fn submit_one(
    state: &NodeState,
    link: Link,
    id: EnvelopeId,
    env: v1::Envelope,
) -> bool {
    let Link { mut client, index } = link;
    // What the broker's acceptance entry must say, checked by the witness.
    let expected = envelope::unverified_summary(&env);
    let mut req = tonic::Request::new(v1::SubmitRequest {
        envelope: Some(env),
    });
    req.set_timeout(SUBMIT_TIMEOUT);
    let answer = within(SUBMIT_TIMEOUT, client.submit(req)).await;
    match &answer {
        Err(status) if is_link_failure(status.code()) => {
            state.uplink.failed(index, Some(status.code()));
        }
        _ => state.uplink.answered(index),
    }
    let (outcome, settled) = match answer {
        Ok(resp) => {
            let r = resp.into_inner();
            let at = r.accepted_at_ms;
            let index = r.log_index;
            let res = settle_accepted(
                state,
                &id,
                expected.as_ref(),
                Box::new(move |s| {
                    s.state = v1::SendState::Accepted as i32;
                    s.log_index = index;
                    s.detail = format!(
                        "accepted by the broker at {}",
                        crate::protocol::time::format_ms(at)
                    );
                }),
            )
            .await;
            (SubmitOutcome::Accepted { log_index: index }, res)
        }
        Err(status) if status.metadata().get(REFUSAL_METADATA).is_some() => {
            let code = status
                .metadata()
                .get(REFUSAL_METADATA)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if code == v1::RefusalCode::Duplicate.as_str_name() {
                // Only this node can sign this id: an earlier attempt was
                // accepted but its answer was lost. The log index stays 0
                // (unknown) until the witness fetches the acceptance's
                // inclusion proof by envelope id, checks it and records the
                // index it proves; a broker that claims a duplicate it never
                // logged is caught there.
                let res = settle_accepted(
                    state,
                    &id,
                    expected.as_ref(),
                    Box::new(|s| {
                        s.state = v1::SendState::Accepted as i32;
                        s.detail = "accepted by the broker (an earlier attempt's answer was \
                                    lost; log index to be proven)"
                            .into();
                    }),
                )
                .await;
                (SubmitOutcome::Accepted { log_index: 0 }, res)
            } else {
                let msg = status.message().to_string();
                let res = settle_refused(state, &id, &msg).await;
                tracing::info!(%id, reason = %msg, "broker refused");
                (SubmitOutcome::Refused(msg), res)
            }
        }
        Err(status) if is_final(status.code()) => {
            // Not a refusal with its audit event, but an answer all the same:
            // submitting this envelope again would get it again, and would
            // hold up every record queued behind it.
            let msg = format!(
                "refused by the broker ({}): {}",
                status.code(),
                crate::protocol::bounds::quote(status.message())
            );
            let res = settle_refused(state, &id, &msg).await;
            tracing::warn!(%id, reason = %msg, "broker refused without a refusal code");
            (SubmitOutcome::Refused(msg), res)
        }
        Err(status) => {
            let why = format!(
                "broker unreachable ({}: {}); queued in the outbox",
                status.code(),
                crate::protocol::bounds::quote(status.message())
            );
            tracing::warn!(%id, %why, "submit failed");
            state.metrics.submitted(SubmitAnswer::Unavailable);
            state.resolve_waiter(&id, SubmitOutcome::Queued(why));
            return false;
        }
    };
    state.metrics.submitted(match &outcome {
        SubmitOutcome::Accepted { .. } => SubmitAnswer::Accepted,
        SubmitOutcome::Refused(_) => SubmitAnswer::Refused,
        SubmitOutcome::Queued(_) => SubmitAnswer::Unavailable,
    });
    if let Err(e) = settled {
        tracing::error!(%id, error = %e, "cannot record the broker's answer; will submit again");
        return false;
    }
    state.resolve_waiter(&id, outcome);
    true
}

/// Settles a record the broker refused for good, with the reason.
async fn settle_refused(
    state: &NodeState,
    id: &EnvelopeId,
    reason: &str,
) -> Result<(), crate::storage::StorageError> {
    let reason = reason.to_string();
    state
        .store
        .settle(
            id,
            Box::new(move |s| {
                s.state = v1::SendState::Refused as i32;
                s.detail = reason.clone();
            }),
        )
        .await
}

/// Whether a failed Submit's status is the broker's answer for good, as
/// opposed to a failure that a later attempt may not meet.
fn is_final(code: tonic::Code) -> bool {
    use tonic::Code as C;
    match code {
        C::InvalidArgument
        | C::NotFound
        | C::AlreadyExists
        | C::PermissionDenied
        | C::FailedPrecondition
        | C::OutOfRange
        | C::Unimplemented
        | C::Unauthenticated => true,
        // The broker down, overloaded or restarting, the connection lost, a
        // deadline passed: try again.
        C::Ok
        | C::Cancelled
        | C::Unknown
        | C::DeadlineExceeded
        | C::ResourceExhausted
        | C::Aborted
        | C::Internal
        | C::Unavailable
        | C::DataLoss => false,
    }
}

/// Settles an accepted envelope, keeping the summary its log entry must
/// carry (none only if this node's own header did not parse, which sealing
/// rules out; the witness then has nothing to check it against).
async fn settle_accepted(
    state: &NodeState,
    id: &EnvelopeId,
    expected: Option<&v1::EnvelopeSummary>,
    update: StatusUpdate,
) -> Result<(), crate::storage::StorageError> {
    match expected {
        Some(e) => state.store.settle_accepted(id, e, update).await,
        None => state.store.settle(id, update).await,
    }
}

/// Most deliveries handled at once on the main stream: verified, opened,
/// filed and acknowledged concurrently, so that their flushes and
/// acknowledgements share group commits at the node and at the broker.
pub const DELIVERY_WINDOW: usize = 32;

/// Most deliveries handled at once on the immediate stream: slots of their
/// own, so that an alert never waits for one of the main stream's to free.
pub const IMMEDIATE_DELIVERY_WINDOW: usize = 8;

/// Which of the node's two delivery streams a receive loop keeps open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Every lane (the immediate one only while no immediate stream is open).
    Main,
    /// Immediate envelopes alone.
    Immediate,
}

impl Stream {
    fn lanes(self) -> v1::DeliveryLanes {
        match self {
            Stream::Main => v1::DeliveryLanes::All,
            Stream::Immediate => v1::DeliveryLanes::Immediate,
        }
    }

    fn window(self) -> usize {
        match self {
            Stream::Main => DELIVERY_WINDOW,
            Stream::Immediate => IMMEDIATE_DELIVERY_WINDOW,
        }
    }
}

/// Keeps one delivery stream open, handling up to [`Stream::window`]
/// deliveries at once. A node runs one loop per [`Stream`], sharing one
/// [`InHand`].
///
/// Deliveries that claim the same envelope id are handled one after the
/// other, in the order they came on a stream, each seeing what the one
/// before filed; across the two streams, one at a time ([`InHand`]). A
/// broker that sends an envelope twice at once gets the same answer twice
/// and nothing is filed twice. A delivery whose handling fails ends the
/// stream once those in hand are done; the broker sends it again on the
/// next.
pub async fn receive_loop(state: Arc<NodeState>, kind: Stream, in_hand: Arc<InHand>) {
    let mut stopping = state.stopping();
    let mut reachable = state.uplink.watch();
    let mut backoff = BACKOFF_MIN;
    let request = v1::ReceiveRequest {
        lanes: kind.lanes() as i32,
    };
    loop {
        // What changes from here on, a failure and the broker found again,
        // is seen by the wait below.
        reachable.borrow_and_update();
        let Link { mut client, index } = state.uplink.link();
        let opened = tokio::select! {
            r = within(CALL_TIMEOUT, client.receive(request)) => r,
            _ = stopping.wait_for(|s| *s) => return,
        };
        // A broker that sends anything but immediate envelopes on the
        // immediate stream does not know of it: it took the request for a
        // second main stream, which replaces the first. This loop then
        // hands everything back to the main stream for good.
        let mut unsplit = false;
        match opened {
            Ok(resp) => {
                state.uplink.answered(index);
                let mut stream = resp.into_inner();
                let mut deliveries = Deliveries::default();
                loop {
                    let room = deliveries.tasks.len() < kind.window() && !unsplit;
                    let msg = tokio::select! {
                        Some(done) = deliveries.tasks.join_next_with_id(), if !deliveries.tasks.is_empty() => {
                            if deliveries.finished(done) {
                                continue;
                            }
                            break;
                        }
                        m = stream.message(), if room => m,
                        _ = stopped(&mut stopping) => return deliveries.stop().await,
                        else => break,
                    };
                    let d = match msg {
                        Ok(Some(d)) => d,
                        Ok(None) => {
                            // The broker ended it: it is going away.
                            state.uplink.failed(index, None);
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(%status, stream = ?kind, "delivery stream broke");
                            state.uplink.failed(index, Some(status.code()));
                            break;
                        }
                    };
                    backoff = BACKOFF_MIN;
                    if kind == Stream::Immediate && !is_immediate(&d) {
                        tracing::warn!(
                            "the broker sends other lanes on the immediate delivery stream; every delivery goes on the main stream"
                        );
                        unsplit = true;
                    }
                    let key = delivery_key(&d);
                    // One at a time per envelope id: wait for the one in hand
                    // (rare: a redelivery, or a broker that repeats itself).
                    let mut failed = false;
                    while key.is_some_and(|k| deliveries.busy.contains(&k)) {
                        let done = tokio::select! {
                            d = deliveries.tasks.join_next_with_id() => d,
                            _ = stopped(&mut stopping) => return deliveries.stop().await,
                        };
                        match done {
                            Some(done) => failed |= !deliveries.finished(done),
                            None => break,
                        }
                    }
                    if failed {
                        break;
                    }
                    deliveries.start(
                        &state,
                        &Link {
                            client: client.clone(),
                            index,
                        },
                        &in_hand,
                        key,
                        d,
                    );
                }
                // Those in hand finish before the stream is opened again,
                // which sends again whatever they did not acknowledge.
                drop(stream);
                while !deliveries.tasks.is_empty() {
                    tokio::select! {
                        Some(done) = deliveries.tasks.join_next_with_id() => {
                            deliveries.finished(done);
                        }
                        _ = stopped(&mut stopping) => return deliveries.stop().await,
                    }
                }
            }
            Err(status) => {
                tracing::debug!(%status, stream = ?kind, "cannot open the delivery stream");
                state.uplink.failed(index, Some(status.code()));
            }
        }
        if unsplit {
            return;
        }
        // A broker found again since the attempt (this one back, or the
        // next one) is used at once; otherwise the loop backs off.
        tokio::select! {
            _ = tokio::time::sleep(backoff) => backoff = next_backoff(backoff),
            _ = back_up(&mut reachable) => backoff = BACKOFF_MIN,
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

/// Resolves when the broker is found reachable, by a change not yet seen
/// (from unreachable to reachable).
pub(super) async fn back_up(reachable: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if reachable.changed().await.is_err() {
            return std::future::pending::<()>().await;
        }
        if *reachable.borrow_and_update() {
            return;
        }
    }
}

/// Whether a delivery is an envelope whose (unverified) header says it is
/// immediate: what the immediate stream carries.
fn is_immediate(d: &v1::Delivery) -> bool {
    use prost::Message as _;
    match &d.item {
        Some(v1::delivery::Item::Envelope(env)) => {
            v1::EnvelopeHeader::decode(env.header.as_slice()).is_ok_and(|h| {
                h.labels
                    .is_some_and(|l| l.priority == v1::Priority::Immediate as i32)
            })
        }
        _ => false,
    }
}

/// The envelope ids in hand on any of the node's delivery streams: a
/// delivery takes its id here before it is handled, so the two streams
/// never handle one id at once. The broker never sends one item on both,
/// but filing exactly once does not rest on the broker.
#[derive(Default)]
pub struct InHand {
    ids: std::sync::Mutex<HashMap<EnvelopeId, Arc<tokio::sync::Mutex<()>>>>,
}

impl InHand {
    async fn hold(self: &Arc<Self>, id: EnvelopeId) -> Held {
        let turn = self
            .ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_default()
            .clone();
        Held {
            guard: Some(turn.lock_owned().await),
            in_hand: self.clone(),
            id,
        }
    }
}

/// One envelope id in hand; the next delivery of that id waits for it.
struct Held {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    in_hand: Arc<InHand>,
    id: EnvelopeId,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut ids = self.in_hand.ids.lock().unwrap_or_else(|p| p.into_inner());
        self.guard = None;
        // Forgotten once nobody holds or waits for it, so the map holds
        // only what is in hand.
        if ids.get(&self.id).is_some_and(|t| Arc::strong_count(t) == 1) {
            ids.remove(&self.id);
        }
    }
}

/// Resolves once the node is stopping.
pub(super) async fn stopped(stopping: &mut tokio::sync::watch::Receiver<bool>) {
    // The guard it gives is dropped here, not held across what follows.
    let _ = stopping.wait_for(|s| *s).await;
}

/// The deliveries in hand: one task each, and the envelope id each claims.
#[derive(Default)]
struct Deliveries {
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
    by_task: HashMap<tokio::task::Id, EnvelopeId>,
    busy: HashSet<EnvelopeId>,
}

impl Deliveries {
    /// Ends those in hand at shutdown, once none runs any more: the broker
    /// sends again whatever they did not acknowledge.
    async fn stop(mut self) {
        self.tasks.shutdown().await;
    }

    fn start(
        &mut self,
        state: &Arc<NodeState>,
        link: &Link,
        in_hand: &Arc<InHand>,
        key: Option<EnvelopeId>,
        d: v1::Delivery,
    ) {
        let (state, link, in_hand) = (state.clone(), link.clone(), in_hand.clone());
        let task = self.tasks.spawn(async move {
            let _held = match key {
                Some(k) => Some(in_hand.hold(k).await),
                None => None,
            };
            handle_delivery(&state, link, d).await
        });
        if let Some(k) = key {
            self.by_task.insert(task.id(), k);
            self.busy.insert(k);
        }
    }

    /// Forgets a finished delivery; false if its handling failed, so that
    /// the stream must end.
    fn finished(
        &mut self,
        done: Result<(tokio::task::Id, anyhow::Result<()>), tokio::task::JoinError>,
    ) -> bool {
        let (task, outcome) = match done {
            Ok((task, outcome)) => (task, outcome),
            Err(e) => (e.id(), Err(anyhow::anyhow!("a delivery task failed: {e}"))),
        };
        if let Some(k) = self.by_task.remove(&task) {
            self.busy.remove(&k);
        }
        match outcome {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "delivery not acknowledged; it will come again");
                false
            }
        }
    }
}

/// The envelope id a delivery is about, for handling those about the same
/// one in turn: the id an envelope's header claims, or the one a relayed
/// receipt answers. Nothing is verified here.
fn delivery_key(d: &v1::Delivery) -> Option<EnvelopeId> {
    use prost::Message as _;
    match &d.item {
        Some(v1::delivery::Item::Envelope(env)) => claimed_id(&env.header),
        Some(v1::delivery::Item::Receipt(r)) => v1::ReceiptBody::decode(r.body.as_slice())
            .ok()
            .and_then(|b| EnvelopeId::from_bytes(&b.envelope_id).ok()),
        None => None,
    }
}

/// Answers one delivery and acknowledges it. Only a failure of the node's
/// own store or of the link to the broker is an error, and then the
/// delivery comes again; a delivery that fails its checks for good is
/// answered (a signed rejection, or an alarm for a relayed receipt), so it
/// never holds up the deliveries behind it.
async fn handle_delivery(state: &NodeState, link: Link, d: v1::Delivery) -> anyhow::Result<()> {
    let Link { mut client, index } = link;
    let receipt = match d.item {
        Some(v1::delivery::Item::Envelope(env)) => Some(accept_envelope(state, &env).await?),
        Some(v1::delivery::Item::Receipt(r)) => {
            record_receipt(state, &r).await?;
            None
        }
        None => {
            // Nothing to answer, and acknowledging would drop whatever the
            // broker meant to send: skip it and go on with the next.
            tracing::warn!(
                seq = d.seq,
                "delivery holds neither an envelope nor a receipt; skipped"
            );
            return Ok(());
        }
    };
    let answer = within(
        CALL_TIMEOUT,
        client.acknowledge(v1::AcknowledgeRequest {
            seq: d.seq,
            receipt,
        }),
    )
    .await;
    match &answer {
        Err(s) if is_link_failure(s.code()) => state.uplink.failed(index, Some(s.code())),
        _ => state.uplink.answered(index),
    }
    match answer {
        Ok(_) => Ok(()),
        // Acknowledged already, on an earlier stream.
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        // Asking again would get the same refusal: the delivery stays queued
        // at the broker, and the ones behind it go on.
        Err(s) if is_refusal(s.code()) => {
            tracing::error!(seq = d.seq, status = %s, "the broker refused this node's answer to a delivery");
            Ok(())
        }
        Err(s) => Err(anyhow::anyhow!("acknowledge {}: {s}", d.seq)),
    }
}

/// Whether the broker answered and refused, rather than failed to answer.
fn is_refusal(code: tonic::Code) -> bool {
    use tonic::Code as C;
    matches!(
        code,
        C::InvalidArgument
            | C::PermissionDenied
            | C::FailedPrecondition
            | C::OutOfRange
            | C::AlreadyExists
            | C::Unimplemented
    )
}

/// Verifies, opens and files one envelope, returning the signed receipt.
///
/// Exactly once, keyed by what this node verified. A receipt is stored only
/// for a header that verified and is addressed to this node, and is given
/// again only for the very header bytes it answered; so an envelope that
/// claims the id of a real one but carries other bytes neither finds the
/// real one's answer nor leaves one behind for it. Such an envelope (bad
/// signature, unknown sender, expired, not for this node, any header
/// check) is answered with a signed rejection that is not stored. An
/// envelope that verified but fails to open or fails the content checks is
/// rejected for good, and that answer is stored. Only a failure of the
/// node's own store is an error; then the delivery is tried again.
pub async fn accept_envelope(
    state: &NodeState,
    env: &v1::Envelope,
) -> Result<v1::SignedReceipt, StorageError> {
    let now = state.now_ms();
    let me = state.country;
    let header_sha256 = envelope::sha256(&env.header);
    // The same bytes, verified and answered before: the same answer, even if
    // the record has expired or its sender been revoked since.
    if let Some(r) = answered(state, &env.header, &header_sha256).await? {
        return Ok(r);
    }
    let dir = state.directory();
    let header =
        match envelope::verify_within(env, &dir, now, &state.limits.bounds()).and_then(|h| {
            if h.recipients_at(me).is_empty() {
                Err(EnvelopeError::NotARecipient(me))
            } else {
                Ok(h)
            }
        }) {
            Ok(h) => h,
            Err(e) => {
                let claimed = claimed_id(&env.header);
                let code = status::rejection_code(&e);
                tracing::warn!(
                    claimed = %claimed.map(|id| id.to_string()).unwrap_or_default(),
                    code = code.as_str_name(), reason = %e,
                    "rejected a delivery whose header does not verify"
                );
                let id = claimed.map(|id| id.as_bytes().to_vec()).unwrap_or_default();
                return Ok(rejection(
                    state,
                    id,
                    header_sha256,
                    now,
                    code,
                    e.to_string(),
                ));
            }
        };
    if state.store.receipt_for(&header.id).await?.is_some() {
        // Signed by the sender it names, yet not the header this node
        // answered under that id: the first answer stands, and nothing of
        // this one is kept.
        tracing::error!(
            id = %header.id, from = %header.sender_agency,
            "ALARM: a second, different header under an envelope id this node already answered; rejected"
        );
        let reason = format!(
            "envelope id {} was already answered for another header",
            header.id
        );
        return Ok(rejection(
            state,
            header.id.as_bytes().to_vec(),
            header_sha256,
            now,
            v1::RejectionCode::InvalidHeader,
            reason,
        ));
    }
    let mut body = v1::ReceiptBody {
        envelope_id: header.id.as_bytes().to_vec(),
        recipient_node: me.to_string(),
        at_ms: now,
        header_sha256: header_sha256.to_vec(),
        ..Default::default()
    };
    // The wrapped key names the HPKE key it was wrapped to (verify checked
    // that the directory accepts it): the current pair, or one the node
    // kept across a rotation.
    let opened = match header.wrapped_to(me).and_then(|sha| state.hpke_key(&sha)) {
        Some(key) => envelope::open(env, &header, me, &key),
        None => Err(EnvelopeError::Unwrap(
            "the data key is wrapped to an HPKE key this node does not hold",
        )),
    };
    let entries = match opened {
        Ok(opened) => {
            let agencies: Vec<AgencyId> = header.recipients_at(me);
            body.status = v1::ReceiptStatus::Delivered as i32;
            body.delivered_to = agencies.iter().map(ToString::to_string).collect();
            let entry = v1::InboxEntry {
                envelope_id: header.id.to_string(),
                sender_agency: header.sender_agency.to_string(),
                recipients: header.recipients.iter().map(ToString::to_string).collect(),
                kind: header.kind as i32,
                categories: opened.derived.to_vec_i32(),
                labels: Some(header.labels.clone()),
                created_at_ms: header.created_at_ms,
                received_at_ms: now,
                expires_at_ms: header.expires_at_ms,
                restrictions: Some(restrictions(&header)),
                onward_of: header
                    .onward_of
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                permission: header
                    .permission
                    .as_ref()
                    .map(crate::protocol::envelope::Permission::to_proto),
            };
            tracing::info!(
                id = %header.id, from = %header.sender_agency, kind = header.kind.as_str_name(),
                to = ?body.delivered_to, "delivered"
            );
            agencies
                .into_iter()
                .map(|a| {
                    (
                        a,
                        v1::InboxRecord {
                            entry: Some(entry.clone()),
                            record: Some(opened.record.clone()),
                        },
                    )
                })
                .collect()
        }
        Err(e) => {
            let code = status::rejection_code(&e);
            tracing::warn!(id = %header.id, code = code.as_str_name(), reason = %e, "rejected a delivery");
            body.status = v1::ReceiptStatus::Rejected as i32;
            body.code = code as i32;
            body.reason = bounds::clip(&e.to_string(), bounds::MAX_REASON).into_owned();
            Vec::new()
        }
    };
    let receipt = envelope::sign_receipt(&body, &state.signing_key());
    let in_force = state.store.deliver(&header.id, &entries, &receipt).await?;
    if in_force == receipt {
        for (agency, rec) in entries {
            if let Some(entry) = rec.entry {
                let _ = state.inbox_events.send((agency, entry));
            }
        }
    }
    Ok(in_force)
}

/// The envelope id a header claims, before anything is verified.
fn claimed_id(header: &[u8]) -> Option<EnvelopeId> {
    use prost::Message as _;
    v1::EnvelopeHeader::decode(header)
        .ok()
        .and_then(|h| EnvelopeId::from_bytes(&h.envelope_id).ok())
}

/// The receipt this node gave for exactly these header bytes, if any. Only
/// headers that verified get a receipt stored, so a match is a header this
/// node verified before; bytes that merely claim its id find nothing.
async fn answered(
    state: &NodeState,
    header: &[u8],
    header_sha256: &[u8; 32],
) -> Result<Option<v1::SignedReceipt>, StorageError> {
    use prost::Message as _;
    let Some(id) = claimed_id(header) else {
        return Ok(None);
    };
    Ok(state.store.receipt_for(&id).await?.filter(|r| {
        v1::ReceiptBody::decode(r.body.as_slice())
            .is_ok_and(|b| b.header_sha256.as_slice() == header_sha256.as_slice())
    }))
}

/// A signed rejection of header bytes that will not be filed.
fn rejection(
    state: &NodeState,
    envelope_id: Vec<u8>,
    header_sha256: [u8; 32],
    now: i64,
    code: v1::RejectionCode,
    reason: String,
) -> v1::SignedReceipt {
    let body = v1::ReceiptBody {
        envelope_id,
        recipient_node: state.country.to_string(),
        status: v1::ReceiptStatus::Rejected as i32,
        code: code as i32,
        reason,
        delivered_to: Vec::new(),
        at_ms: now,
        header_sha256: header_sha256.to_vec(),
    };
    envelope::sign_receipt(&body, &state.signing_key())
}

/// What the handling code obliges the recipient's systems to respect.
pub fn restrictions(h: &envelope::VerifiedHeader) -> v1::UsageRestrictions {
    // The provider's permission is what counts, however many hops ago it
    // provided the record (the broker checked the provider named).
    let from = match h.onward_of {
        Some(_) if !h.labels.provider.is_empty() => h.labels.provider.clone(),
        _ => h.sender_agency.to_string(),
    };
    let mut r = v1::UsageRestrictions::default();
    match h.labels.handling() {
        v1::HandlingCode::H0 => {
            r.crime_prevention_only = true;
            r.notices
                .push("H0: to be used to prevent and combat crime only".into());
        }
        v1::HandlingCode::H1 => {
            r.no_evidential_use = true;
            r.notices.push(format!(
                "H1: not to be used as evidence in judicial proceedings without the permission of {from}"
            ));
        }
        v1::HandlingCode::H2 => {
            r.no_onward_transfer = true;
            r.notices.push(format!(
                "H2: not to be passed on without the permission of {from}"
            ));
        }
        v1::HandlingCode::H3 => {
            r.provider_restriction = h.labels.handling_restriction.clone();
            r.notices.push(format!(
                "H3 restriction by {from}: {}",
                h.labels.handling_restriction
            ));
        }
        v1::HandlingCode::Unspecified => {}
    }
    r
}

/// Records a receipt the broker relayed for an envelope this node sent.
///
/// The receipt must be signed by the node it names, that node must serve a
/// recipient of the envelope, every agency it names must be a recipient
/// there, and it must answer the header this node sent under that id; a
/// rejection never overrides a delivery the same node receipted. A receipt
/// that fails is not applied: it is kept as evidence and the alarm raised,
/// and the delivery that carried it is acknowledged, so it holds up nothing.
/// Only a failure of the node's own store is an error.
async fn record_receipt(state: &NodeState, r: &v1::SignedReceipt) -> Result<(), StorageError> {
    let (id, body, created_at_ms) = match check_relayed_receipt(state, r).await? {
        Ok(checked) => checked,
        Err(why) => {
            state
                .metrics
                .alarm(crate::daemon::metrics::Alarm::BadReceipt);
            tracing::error!(node = %state.country, %why, "ALARM: relayed receipt refused; not applied, evidence kept");
            let evidence = receipt_evidence(&why, r);
            return state.store.record_evidence(state.now_ms(), &evidence).await;
        }
    };
    let node = body.recipient_node.clone();
    let state_of = match body.status() {
        v1::ReceiptStatus::Delivered => v1::DeliveryState::Delivered,
        _ => v1::DeliveryState::Rejected,
    };
    state
        .store
        .update_sent(&id, {
            let (node, body, r) = (node.clone(), body.clone(), r.clone());
            Box::new(move |s| {
                if let Some(rs) = s.recipient_status.iter_mut().find(|rs| rs.node == node) {
                    rs.state = state_of as i32;
                    rs.receipt = Some(body.clone());
                    rs.signed_receipt = Some(r.clone());
                }
            })
        })
        .await?;
    state.metrics.receipt(created_at_ms, state.now_ms());
    tracing::info!(%id, from = %node, status = body.status().as_str_name(), "receipt");
    Ok(())
}

/// A relayed receipt that answers what this node sent, or why it does not.
/// With the receipt, when the envelope was created.
type CheckedReceipt = Result<(EnvelopeId, v1::ReceiptBody, i64), String>;

/// Checks a relayed receipt against what this node sent. The outer error is
/// the store's; the inner one says why the receipt is refused.
async fn check_relayed_receipt(
    state: &NodeState,
    r: &v1::SignedReceipt,
) -> Result<CheckedReceipt, StorageError> {
    let body = match envelope::verify_receipt(r, &state.directory(), state.now_ms()) {
        Ok(b) => b,
        Err(e) => {
            return Ok(Err(format!(
                "it does not verify: {}",
                quote(&e.to_string())
            )));
        }
    };
    let Ok(id) = EnvelopeId::from_bytes(&body.envelope_id) else {
        return Ok(Err("it names no valid envelope id".into()));
    };
    let Some(sent) = state.store.sent(&id).await? else {
        return Ok(Err(format!(
            "it answers {id}, which this node did not send"
        )));
    };
    let node = &body.recipient_node;
    let Some(rs) = sent.recipient_status.iter().find(|rs| rs.node == *node) else {
        return Ok(Err(format!(
            "it is signed by node {node}, which serves no recipient of {id}"
        )));
    };
    match state.store.sent_header_sha256(&id).await? {
        Some(ours) if ours == body.header_sha256 => {}
        Some(ours) => {
            return Ok(Err(format!(
                "it answers header sha256 {}, not the header this node sent as {id} (sha256 {})",
                quote(&hex::encode(&body.header_sha256)),
                hex::encode(ours)
            )));
        }
        None => return Ok(Err(format!("this node kept no header hash for {id}"))),
    }
    if let Some(a) = body.delivered_to.iter().find(|a| !rs.agencies.contains(a)) {
        return Ok(Err(format!(
            "it names {}, which is not a recipient of {id} at node {node}",
            quote(a)
        )));
    }
    match body.status() {
        v1::ReceiptStatus::Delivered => {}
        v1::ReceiptStatus::Rejected if rs.state == v1::DeliveryState::Delivered as i32 => {
            return Ok(Err(format!(
                "it is a rejection, and node {node} already receipted the delivery of {id}"
            )));
        }
        v1::ReceiptStatus::Rejected => {}
        v1::ReceiptStatus::Unspecified => return Ok(Err("it has no status".into())),
    }
    Ok(Ok((id, body, sent.created_at_ms)))
}

/// The longest relayed receipt kept whole as evidence; a real one is a few
/// hundred bytes.
const EVIDENCE_RECEIPT_MAX: usize = 64 << 10;

fn receipt_evidence(why: &str, r: &v1::SignedReceipt) -> String {
    let keep = |b: &[u8]| {
        if b.len() <= EVIDENCE_RECEIPT_MAX {
            hex::encode(b)
        } else {
            format!(
                "{} (first {EVIDENCE_RECEIPT_MAX} of {} bytes)",
                hex::encode(&b[..EVIDENCE_RECEIPT_MAX]),
                b.len()
            )
        }
    };
    format!(
        "relayed receipt refused: {why}\n--- receipt body ---\n{}\n--- signature ---\n{}\n",
        keep(&r.body),
        keep(&r.signature)
    )
}

/// A short prefix of peer-supplied text, for messages and logs.
fn quote(s: &str) -> String {
    const MAX: usize = 80;
    match s.char_indices().nth(MAX) {
        None => s.to_string(),
        Some((at, _)) => format!("{}… ({} bytes)", &s[..at], s.len()),
    }
}

pub(super) use super::link::within;
pub use super::link::{CALL_TIMEOUT, Link, PROBE_INTERVAL, Uplink, is_link_failure};
pub use super::purge::{PURGE_INTERVAL, purge_loop, purge_once};

//! A hostile broker: an Exchange server holding the federation's real broker
//! certificate and key, so a real node dials it as its broker and cannot
//! tell it from the real one by TLS. The test scripts what it does: which
//! deliveries it streams to which node (forged, replayed, reordered, or
//! withheld by simply not scripting them), which receipts it relays, how it
//! answers Submit, GetCheckpoint and GetInclusionProof, which
//! acknowledgements it refuses. It records everything the nodes send it.
//!
//! Deliveries behave as the real broker's do on the wire: each node has a
//! queue in sequence order; a delivery stays queued until the node
//! acknowledges it, so a new Receive stream streams it again.

// A harness: not every case uses every knob.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use casebridge::daemon::tls::{Identity, ServerTls, peer_of};
use casebridge::protocol::ids::{Country, EnvelopeId, Role};
use casebridge::protocol::proto::v1;
use prost::Message as _;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::support::{Fed, until};

/// How the hostile broker answers one kind of request from node `Country`.
type Answer<Req, Resp> = Box<dyn Fn(Country, &Req) -> Result<Resp, Status> + Send + Sync>;

/// Whether the hostile broker refuses an acknowledgement, and how.
type AckRefusal = Box<dyn Fn(Country, &v1::AcknowledgeRequest) -> Option<Status> + Send + Sync>;

/// Everything the nodes sent the hostile broker, in arrival order.
#[derive(Debug, Clone, Default)]
pub struct Calls {
    pub streams_opened: Vec<Country>,
    pub acks: Vec<(Country, v1::AcknowledgeRequest)>,
    pub submits: Vec<(Country, v1::SubmitRequest)>,
    pub checkpoint_requests: Vec<(Country, v1::GetCheckpointRequest)>,
    pub cosigns: Vec<(Country, v1::CosignRequest)>,
    pub inclusion_requests: Vec<(Country, v1::InclusionProofRequest)>,
    pub refusals: Vec<(Country, v1::RefusalReport)>,
    pub purges: Vec<(Country, v1::PurgeReport)>,
}

impl Calls {
    /// The acknowledgements node `cc` sent, in order.
    pub fn acks_of(&self, cc: Country) -> Vec<v1::AcknowledgeRequest> {
        self.acks
            .iter()
            .filter(|(c, _)| *c == cc)
            .map(|(_, a)| a.clone())
            .collect()
    }
}

struct Shared {
    /// Per node: seq → item, until acknowledged. `None` is a delivery that
    /// carries neither an envelope nor a receipt.
    mail: Mutex<BTreeMap<Country, BTreeMap<u64, Option<v1::delivery::Item>>>>,
    next_seq: AtomicU64,
    mail_changed: Notify,
    calls: Mutex<Calls>,
    directory: Vec<u8>,
    on_submit: Mutex<Answer<v1::SubmitRequest, v1::SubmitResponse>>,
    on_checkpoint: Mutex<Answer<v1::GetCheckpointRequest, v1::CheckpointResponse>>,
    on_inclusion_proof: Mutex<Answer<v1::InclusionProofRequest, v1::InclusionProof>>,
    refuse_ack: Mutex<AckRefusal>,
    /// Submits are recorded and never answered.
    hold_submits: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running hostile broker. Stops when dropped.
pub struct HostileBroker {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl HostileBroker {
    /// Serves on a fresh loopback port with `fed`'s real broker identity.
    ///
    /// By default it accepts every submission (log index = how many it has
    /// seen), has no checkpoint or inclusion proof to give (UNAVAILABLE),
    /// serves the federation's real signed directory and takes every
    /// cosignature and report.
    pub async fn start(fed: &Fed) -> HostileBroker {
        let cfg = &fed.broker_config;
        let identity = Identity::load(&cfg.tls.cert, &cfg.tls.key).expect("broker identity");
        let root = casebridge::daemon::tls::load_certs(&cfg.tls.root)
            .expect("root")
            .remove(0);
        let tls = ServerTls::new(&identity, &root, None, &cfg.federation).expect("server tls");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let submitted = AtomicU64::new(0);
        let on_submit: Answer<v1::SubmitRequest, v1::SubmitResponse> = Box::new(move |_, req| {
            let n = submitted.fetch_add(1, Ordering::Relaxed) + 1;
            Ok(v1::SubmitResponse {
                envelope_id: claimed_id(req.envelope.as_ref())
                    .map(|id| id.as_bytes().to_vec())
                    .unwrap_or_default(),
                log_index: n,
                accepted_at_ms: casebridge::daemon::clock::now_ms(),
                policy_bundle_hash: String::new(),
            })
        });
        let on_checkpoint: Answer<v1::GetCheckpointRequest, v1::CheckpointResponse> =
            Box::new(|_, _| {
                Err(Status::unavailable(
                    "hostile broker: no checkpoint scripted",
                ))
            });
        let on_inclusion_proof: Answer<v1::InclusionProofRequest, v1::InclusionProof> =
            Box::new(|_, _| {
                Err(Status::unavailable(
                    "hostile broker: no inclusion proof scripted",
                ))
            });
        let shared = Arc::new(Shared {
            mail: Mutex::new(BTreeMap::new()),
            next_seq: AtomicU64::new(1),
            mail_changed: Notify::new(),
            calls: Mutex::new(Calls::default()),
            directory: std::fs::read(&cfg.directory).expect("directory"),
            on_submit: Mutex::new(on_submit),
            hold_submits: std::sync::atomic::AtomicBool::new(false),
            on_checkpoint: Mutex::new(on_checkpoint),
            on_inclusion_proof: Mutex::new(on_inclusion_proof),
            refuse_ack: Mutex::new(Box::new(|_, _| None)),
        });
        let service = casebridge::daemon::rpc::exchange_server::ExchangeServer::new(Service {
            shared: shared.clone(),
        })
        .max_decoding_message_size(1 << 30)
        .max_encoding_message_size(1 << 30);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(tls.incoming(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        HostileBroker {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Points node `cc` at this broker and starts it.
    pub async fn start_node(&self, fed: &mut Fed, cc: Country) {
        fed.node_configs.get_mut(&cc).expect("node config").broker = Some(self.addr.to_string());
        fed.start_node(cc).await.expect("start node");
    }

    /// Queues `item` for node `cc`; returns its sequence number.
    pub fn deliver(&self, cc: Country, item: v1::delivery::Item) -> u64 {
        self.deliver_raw(cc, Some(item))
    }

    /// Queues an envelope for node `cc`.
    pub fn deliver_envelope(&self, cc: Country, env: v1::Envelope) -> u64 {
        self.deliver(cc, v1::delivery::Item::Envelope(env))
    }

    /// Relays a receipt to node `cc`.
    pub fn relay_receipt(&self, cc: Country, r: v1::SignedReceipt) -> u64 {
        self.deliver(cc, v1::delivery::Item::Receipt(r))
    }

    /// Queues a delivery that may carry nothing at all.
    pub fn deliver_raw(&self, cc: Country, item: Option<v1::delivery::Item>) -> u64 {
        let seq = self.shared.next_seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.shared.mail)
            .entry(cc)
            .or_default()
            .insert(seq, item);
        self.shared.mail_changed.notify_waiters();
        seq
    }

    /// Sequence numbers still queued (unacknowledged) for node `cc`.
    pub fn queued(&self, cc: Country) -> Vec<u64> {
        lock(&self.shared.mail)
            .get(&cc)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Scripts the answer to Submit.
    pub fn answer_submit(
        &self,
        f: impl Fn(Country, &v1::SubmitRequest) -> Result<v1::SubmitResponse, Status>
        + Send
        + Sync
        + 'static,
    ) {
        *lock(&self.shared.on_submit) = Box::new(f);
    }

    /// Records every later Submit and never answers it, as a broker that
    /// hangs does: the node's call stays in flight.
    pub fn hold_submits(&self) {
        self.shared.hold_submits.store(true, Ordering::Relaxed);
    }

    /// Scripts the answer to GetCheckpoint.
    pub fn answer_checkpoint(
        &self,
        f: impl Fn(Country, &v1::GetCheckpointRequest) -> Result<v1::CheckpointResponse, Status>
        + Send
        + Sync
        + 'static,
    ) {
        *lock(&self.shared.on_checkpoint) = Box::new(f);
    }

    /// Scripts the answer to GetInclusionProof.
    pub fn answer_inclusion_proof(
        &self,
        f: impl Fn(Country, &v1::InclusionProofRequest) -> Result<v1::InclusionProof, Status>
        + Send
        + Sync
        + 'static,
    ) {
        *lock(&self.shared.on_inclusion_proof) = Box::new(f);
    }

    /// Scripts refusals of acknowledgements: a refused one stays queued.
    pub fn refuse_acks(
        &self,
        f: impl Fn(Country, &v1::AcknowledgeRequest) -> Option<Status> + Send + Sync + 'static,
    ) {
        *lock(&self.shared.refuse_ack) = Box::new(f);
    }

    /// A copy of everything recorded so far.
    pub fn calls(&self) -> Calls {
        lock(&self.shared.calls).clone()
    }

    /// Waits until node `cc` has sent `n` acknowledgements and returns them.
    pub async fn wait_acks(&self, cc: Country, n: usize) -> Vec<v1::AcknowledgeRequest> {
        until(&format!("{n} acknowledgements from {cc}"), || async move {
            let acks = self.calls().acks_of(cc);
            (acks.len() >= n).then_some(acks)
        })
        .await
    }

    /// Waits until node `cc` has acknowledged delivery `seq` and returns the
    /// acknowledgement.
    pub async fn wait_ack(&self, cc: Country, seq: u64) -> v1::AcknowledgeRequest {
        until(&format!("{cc} to acknowledge {seq}"), || async move {
            self.calls().acks_of(cc).into_iter().find(|a| a.seq == seq)
        })
        .await
    }

    /// Waits until node `cc` has submitted `n` envelopes and returns them.
    pub async fn wait_submits(&self, cc: Country, n: usize) -> Vec<v1::Envelope> {
        until(&format!("{n} submissions from {cc}"), || async move {
            let subs: Vec<v1::Envelope> = self
                .calls()
                .submits
                .into_iter()
                .filter(|(c, _)| *c == cc)
                .filter_map(|(_, s)| s.envelope)
                .collect();
            (subs.len() >= n).then_some(subs)
        })
        .await
    }
}

impl Drop for HostileBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The envelope id a header claims, unverified.
pub fn claimed_id(env: Option<&v1::Envelope>) -> Option<EnvelopeId> {
    let h = v1::EnvelopeHeader::decode(env?.header.as_slice()).ok()?;
    EnvelopeId::from_bytes(&h.envelope_id).ok()
}

struct Service {
    shared: Arc<Shared>,
}

impl Service {
    /// The calling node, from its certificate, as the real broker finds it.
    fn node<T>(&self, req: &Request<T>) -> Result<Country, Status> {
        match &peer_of(req)?.role {
            Ok(Role::Node(cc)) => Ok(*cc),
            other => Err(Status::permission_denied(format!("not a node: {other:?}"))),
        }
    }

    fn record(&self, f: impl FnOnce(&mut Calls)) {
        f(&mut lock(&self.shared.calls));
    }
}

#[tonic::async_trait]
impl casebridge::daemon::rpc::exchange_server::Exchange for Service {
    async fn submit(
        &self,
        req: Request<v1::SubmitRequest>,
    ) -> Result<Response<v1::SubmitResponse>, Status> {
        let cc = self.node(&req)?;
        let req = req.into_inner();
        self.record(|c| c.submits.push((cc, req.clone())));
        if self.shared.hold_submits.load(Ordering::Relaxed) {
            std::future::pending::<()>().await;
        }
        let answer = (lock(&self.shared.on_submit))(cc, &req);
        answer.map(Response::new)
    }

    type ReceiveStream = ReceiverStream<Result<v1::Delivery, Status>>;

    async fn receive(
        &self,
        req: Request<v1::ReceiveRequest>,
    ) -> Result<Response<Self::ReceiveStream>, Status> {
        let cc = self.node(&req)?;
        let (tx, rx) = mpsc::channel(16);
        if req.get_ref().lanes() == v1::DeliveryLanes::Immediate {
            // Everything scripted goes on the main stream; the node's
            // immediate stream stays open and quiet, as the real broker's
            // does when nothing immediate is queued.
            tokio::spawn(async move { tx.closed().await });
            return Ok(Response::new(ReceiverStream::new(rx)));
        }
        self.record(|c| c.streams_opened.push(cc));
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut after = 0u64;
            loop {
                let changed = shared.mail_changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let items: Vec<(u64, Option<v1::delivery::Item>)> = lock(&shared.mail)
                    .get(&cc)
                    .map(|m| m.range(after + 1..).map(|(s, i)| (*s, i.clone())).collect())
                    .unwrap_or_default();
                if items.is_empty() {
                    tokio::select! {
                        _ = &mut changed => continue,
                        _ = tx.closed() => return,
                    }
                }
                for (seq, item) in items {
                    after = seq;
                    if tx.send(Ok(v1::Delivery { seq, item })).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn acknowledge(
        &self,
        req: Request<v1::AcknowledgeRequest>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        let cc = self.node(&req)?;
        let ack = req.into_inner();
        self.record(|c| c.acks.push((cc, ack.clone())));
        let refused = (lock(&self.shared.refuse_ack))(cc, &ack);
        if let Some(status) = refused {
            return Err(status);
        }
        let removed = lock(&self.shared.mail)
            .get_mut(&cc)
            .and_then(|m| m.remove(&ack.seq));
        match removed {
            Some(_) => Ok(Response::new(v1::AcknowledgeResponse { log_index: 0 })),
            None => Err(Status::not_found(format!("nothing queued at {}", ack.seq))),
        }
    }

    async fn get_directory(
        &self,
        req: Request<v1::GetDirectoryRequest>,
    ) -> Result<Response<v1::SignedDirectory>, Status> {
        self.node(&req)?;
        v1::SignedDirectory::decode(self.shared.directory.as_slice())
            .map(Response::new)
            .map_err(|e| Status::internal(e.to_string()))
    }

    async fn get_policies(
        &self,
        req: Request<v1::GetPoliciesRequest>,
    ) -> Result<Response<v1::PolicySet>, Status> {
        self.node(&req)?;
        Err(Status::unimplemented("this broker serves no policy set"))
    }

    async fn report_purge(
        &self,
        req: Request<v1::PurgeReport>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        let cc = self.node(&req)?;
        let r = req.into_inner();
        self.record(|c| c.purges.push((cc, r)));
        Ok(Response::new(v1::AcknowledgeResponse::default()))
    }

    async fn report_refusal(
        &self,
        req: Request<v1::RefusalReport>,
    ) -> Result<Response<v1::AcknowledgeResponse>, Status> {
        let cc = self.node(&req)?;
        let r = req.into_inner();
        self.record(|c| c.refusals.push((cc, r)));
        Ok(Response::new(v1::AcknowledgeResponse::default()))
    }

    async fn get_checkpoint(
        &self,
        req: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<v1::CheckpointResponse>, Status> {
        let cc = self.node(&req)?;
        let r = req.into_inner();
        let answer = (lock(&self.shared.on_checkpoint))(cc, &r);
        self.record(|c| c.checkpoint_requests.push((cc, r)));
        answer.map(Response::new)
    }

    async fn cosign(
        &self,
        req: Request<v1::CosignRequest>,
    ) -> Result<Response<v1::CosignResponse>, Status> {
        let cc = self.node(&req)?;
        let r = req.into_inner();
        self.record(|c| c.cosigns.push((cc, r)));
        Ok(Response::new(v1::CosignResponse::default()))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<v1::InclusionProofRequest>,
    ) -> Result<Response<v1::InclusionProof>, Status> {
        let cc = self.node(&req)?;
        let r = req.into_inner();
        let answer = (lock(&self.shared.on_inclusion_proof))(cc, &r);
        self.record(|c| c.inclusion_requests.push((cc, r)));
        answer.map(Response::new)
    }
}

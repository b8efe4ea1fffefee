//! A national node: the agency API for its country's agencies, and the uplink
//! to the broker that submits sealed envelopes from the durable outbox and
//! receives, verifies, opens and files what is addressed to its agencies.
//!
//! The node holds its country's keys: it seals and signs for its own
//! agencies only, and opens only what was wrapped for it.

pub mod agency_api;
mod idempotency;
pub mod keyring;
mod link;
mod purge;
pub mod seed;
pub mod uplink;
pub mod window;
pub mod witness;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{broadcast, oneshot};

use crate::daemon::clock::Clock;
use crate::daemon::config::{NodeConfig, NodeLimits, Retention};
use crate::daemon::live::{DirectorySlot, LastRefusal, Offer};
use crate::daemon::tls::{ClientTls, Identity, ServerTls};
use crate::protocol::directory::Directory;
use crate::protocol::ids::{AgencyId, Country, EnvelopeId, Role};
use crate::protocol::keys::{HpkePrivateKey, SigningKey};
use crate::protocol::proto::v1;
use crate::storage::node::NodeStore;
use crate::storage::sled::node::SledNodeStore;

/// What became of one submission attempt, for an agency waiting on Send.
#[derive(Debug, Clone)]
pub enum SubmitOutcome {
    Accepted { log_index: u64 },
    Refused(String),
    Queued(String),
}

/// Everything the node's tasks share.
pub struct NodeState {
    pub country: Country,
    pub federation: String,
    directory: DirectorySlot,
    /// Where the node keeps its copy of the directory, and the pinned key
    /// every directory must verify against.
    directory_file: std::path::PathBuf,
    directory_key: [u8; 32],
    /// How often the directory and the policy set are fetched from the
    /// broker.
    directory_refresh: std::time::Duration,
    /// The last refusals logged, so that one met on every refresh is
    /// logged once.
    directory_refusal: LastRefusal,
    policy_refusal: LastRefusal,
    /// Held while the policy directory is read or replaced.
    policies_fs: tokio::sync::Mutex<()>,
    /// The node's key pairs: current, next and retired.
    keys: keyring::Keyring,
    /// What the node keeps, behind the traits of [`crate::storage::node`].
    pub store: Arc<dyn NodeStore>,
    policies: crate::storage::files::policy::LivePolicies,
    policy_reload: std::time::Duration,
    pub retention: Retention,
    /// Bounds on what agencies send and what the node receives.
    pub limits: NodeLimits,
    pub clock: Clock,
    /// Most submissions to the broker in flight at once.
    pub submit_window: usize,
    waiters: Mutex<HashMap<EnvelopeId, oneshot::Sender<SubmitOutcome>>>,
    inbox_events: broadcast::Sender<(AgencyId, v1::InboxEntry)>,
    refusals: tokio::sync::mpsc::UnboundedSender<v1::RefusalReport>,
    refusal_queue: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<v1::RefusalReport>>>,
    /// Counts ended submission attempts, each counted once the broker's
    /// answer is durably recorded (`resolve_waiter`): what tells the
    /// witness that a submission may await its inclusion proof.
    settled: tokio::sync::watch::Sender<u64>,
    stopping: tokio::sync::watch::Sender<bool>,
    /// The brokers, the one in use and whether it is reachable.
    pub uplink: Arc<uplink::Uplink>,
    /// What the node counts and measures, served on `metrics_listen`.
    pub metrics: crate::daemon::metrics::NodeMetrics,
}

impl NodeState {
    /// The directory in force now.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.current()
    }

    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// The key the node signs headers, receipts and cosignatures with now:
    /// its current key, or its next one once the directory in force has
    /// listed that for the switch delay.
    pub fn signing_key(&self) -> Arc<SigningKey> {
        self.keys.signing_key(&self.directory(), self.now_ms())
    }

    /// The private HPKE key whose public key has this SHA-256 (what a
    /// wrapped data key names), among the pairs the node holds.
    pub fn hpke_key(&self, sha256: &[u8; 32]) -> Option<Arc<HpkePrivateKey>> {
        self.keys.hpke_key(sha256)
    }

    /// The policy set in force for the pre-check.
    pub fn policies(&self) -> crate::protocol::policy::Policies {
        self.policies.current()
    }

    /// Reads the policy bundles again; a refused set leaves the one in force.
    /// A new set takes effect once its versions are recorded in the store.
    pub async fn reload_policies(&self) -> crate::storage::files::policy::Reload {
        let _files = self.policies_fs.lock().await;
        let directory = self.directory();
        let outcome = crate::daemon::in_force::reload_policies(
            &self.policies,
            &directory,
            self.now_ms(),
            self.store.as_ref(),
        )
        .await;
        match &outcome {
            crate::storage::files::policy::Reload::Replaced { bundles, .. } => {
                tracing::info!(node = %self.country, %bundles, "new policy set in force");
            }
            crate::storage::files::policy::Reload::Refused {
                reason,
                first: true,
            } => {
                tracing::error!(node = %self.country, %reason, "policy bundles refused; the set in force stays");
            }
            crate::storage::files::policy::Reload::Refused { first: false, .. }
            | crate::storage::files::policy::Reload::Unchanged => {}
        }
        outcome
    }

    /// Fetches the directory, then the policy set, from the broker in use
    /// and puts in force what is new and valid ([`NodeState::refresh_directory`],
    /// [`NodeState::refresh_policies`]).
    pub async fn refresh(&self) {
        match self.refresh_directory().await {
            Ok(_) => {}
            Err(e) => tracing::warn!(node = %self.country, error = %e, "directory refresh failed"),
        }
        if let Err(e) = self.refresh_policies().await {
            tracing::warn!(node = %self.country, error = %e, "policy refresh failed");
        }
    }

    /// Fetches the broker's directory and puts it in force if it verifies
    /// against the pinned directory key and is newer than the one in force:
    /// it is first written to the node's directory file (so a restart starts
    /// from it), then recorded as the floor in the store, then in force. An
    /// older one, or the same version with other content, is refused with a
    /// warning (once per reason) and the one in force stays. Err when the
    /// broker could not be asked or the directory could not be kept.
    pub async fn refresh_directory(&self) -> anyhow::Result<Offer> {
        use prost::Message as _;
        let link = self.uplink.link();
        let mut client = link
            .client
            .max_decoding_message_size(crate::daemon::live::MAX_DIRECTORY_BYTES);
        let signed = uplink::within(
            uplink::CALL_TIMEOUT,
            client.get_directory(v1::GetDirectoryRequest {}),
        )
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "could not fetch the directory from the broker at {}: {}",
                self.uplink.address(),
                s.message()
            )
        })?
        .into_inner();
        let current = self.directory();
        let offered = match Directory::verify(&signed, &self.directory_key, &self.federation) {
            Ok(d) => d,
            Err(e) => {
                return Ok(self.directory_refused(
                    &current,
                    Offer::Refused {
                        offered: None,
                        reason: format!("the directory the broker serves is refused: {e}"),
                    },
                ));
            }
        };
        if offered.version_info() == current.version_info() {
            self.directory_refusal.clear();
            return Ok(Offer::Same);
        }
        if let Err(e) = current.check_successor(&offered) {
            return Ok(self.directory_refused(
                &current,
                Offer::Refused {
                    offered: Some(offered.version_info()),
                    reason: format!("the directory the broker serves is refused: {e}"),
                },
            ));
        }
        // Kept before it takes effect: a restart starts from it. A file
        // already newer (put there by the operator) is left as it is.
        let on_disk = crate::storage::files::directory::load(
            &self.directory_file,
            &self.directory_key,
            &self.federation,
        )
        .ok()
        .map(|d| d.version);
        if on_disk.is_none_or(|v| v < offered.version) {
            crate::storage::write_private(&self.directory_file, &signed.encode_to_vec())
                .with_context(|| format!("writing {}", self.directory_file.display()))?;
        }
        let offer = self.directory.offer(offered, self.store.as_ref()).await?;
        match &offer {
            Offer::Applied { previous, now } => {
                self.directory_refusal.clear();
                tracing::info!(
                    node = %self.country,
                    version = now.version,
                    previous = previous.version,
                    digest = %hex::encode(now.digest),
                    "new directory in force"
                );
                // A rotation of this node's keys starts its switch delay now.
                self.keys
                    .directory_in_force(&self.directory(), self.now_ms());
                // The policy set is checked again against it.
                self.reload_policies().await;
            }
            Offer::Same => self.directory_refusal.clear(),
            Offer::Refused { .. } => return Ok(self.directory_refused(&current, offer)),
        }
        Ok(offer)
    }

    fn directory_refused(&self, current: &Directory, offer: Offer) -> Offer {
        if let Offer::Refused { reason, .. } = &offer {
            if self.directory_refusal.first(reason) {
                tracing::warn!(
                    node = %self.country,
                    %reason,
                    in_force = current.version,
                    "directory refused; the one in force stays"
                );
            }
        }
        offer
    }

    /// Fetches the broker's policy set and, if it is not the set in force,
    /// writes it into a fresh directory beside the node's policy directory,
    /// loads it there as a reload would (every bundle's signature checked
    /// against the directory, no version going back), and only then puts
    /// it in place of the policy directory and in force. Ok(true) when a
    /// new set took effect; a refused set leaves everything as it was.
    pub async fn refresh_policies(&self) -> anyhow::Result<bool> {
        use crate::storage::files::policy::distributed;
        let Some(dir) = self.policies.dir().map(std::path::Path::to_path_buf) else {
            return Ok(false);
        };
        let mut client = self
            .uplink
            .link()
            .client
            .max_decoding_message_size(distributed::MAX_SET_BYTES);
        let set = uplink::within(
            uplink::CALL_TIMEOUT,
            client.get_policies(v1::GetPoliciesRequest {}),
        )
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "could not fetch the policy set from the broker at {}: {}",
                self.uplink.address(),
                s.message()
            )
        })?
        .into_inner();
        if set.hash == self.policies().hash() {
            self.policy_refusal.clear();
            return Ok(false);
        }
        let checked = {
            let _files = self.policies_fs.lock().await;
            let staging = distributed::staging_beside(&dir, "incoming");
            let checked = distributed::write_set(&set, &staging).and_then(|()| {
                self.policies
                    .check_candidate(&staging, &self.directory(), self.now_ms())
            });
            match checked {
                Ok(hash) if hash == self.policies().hash() => {
                    let _ = std::fs::remove_dir_all(&staging);
                    Ok(false)
                }
                Ok(_) => {
                    let replaced = distributed::replace_dir(&staging, &dir);
                    if replaced.is_err() {
                        let _ = std::fs::remove_dir_all(&staging);
                    }
                    replaced
                        .with_context(|| format!("replacing {}", dir.display()))
                        .map(|()| true)
                }
                Err(reason) => {
                    let _ = std::fs::remove_dir_all(&staging);
                    if self.policy_refusal.first(&reason) {
                        tracing::warn!(
                            node = %self.country,
                            %reason,
                            "the broker's policy set is refused; the set in force stays"
                        );
                    }
                    Ok(false)
                }
            }
        }?;
        if !checked {
            return Ok(false);
        }
        self.policy_refusal.clear();
        Ok(matches!(
            self.reload_policies().await,
            crate::storage::files::policy::Reload::Replaced { .. }
        ))
    }

    /// Queues a local policy refusal for the broker's audit log.
    fn report_refusal(&self, report: v1::RefusalReport) {
        let _ = self.refusals.send(report);
    }

    fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    fn register_waiter(&self, id: EnvelopeId) -> oneshot::Receiver<SubmitOutcome> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        rx
    }

    /// Drops the waiter of an envelope that was never stored.
    fn forget_waiter(&self, id: &EnvelopeId) {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn resolve_waiter(&self, id: &EnvelopeId, outcome: SubmitOutcome) {
        self.settled.send_modify(|n| *n = n.wrapping_add(1));
        if let Some(tx) = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
        {
            let _ = tx.send(outcome);
        }
    }
}

/// A configured node, ready to serve.
pub struct Node {
    pub state: Arc<NodeState>,
    server_tls: ServerTls,
    /// How long a stop may take (`shutdown_grace_secs`).
    pub grace: std::time::Duration,
    /// The metrics endpoint, bound (None: `metrics_listen = "off"`).
    metrics: Option<TcpListener>,
}

#[async_trait::async_trait]
impl crate::daemon::metrics::Exporter for NodeState {
    /// Reads the outbox's depth, the broker's reachability and the versions
    /// in force.
    async fn sample(&self) {
        let m = &self.metrics;
        m.versions
            .set(self.directory().version, &self.policies.in_force());
        m.broker_connected.set(i64::from(self.uplink.reachable()));
        match self.store.outbox_len().await {
            Ok(n) => {
                m.outbox_depth.set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            Err(e) => {
                tracing::warn!(node = %self.country, error = %e, "metrics: cannot read the outbox's depth")
            }
        }
    }

    fn registry(&self) -> &prometheus_client::registry::Registry {
        self.metrics.registry()
    }
}

impl Node {
    /// Builds a node from its config: TLS identity, national CA, keys,
    /// pinned directory key and directory, and the store.
    pub async fn from_config(cfg: &NodeConfig) -> anyhow::Result<Node> {
        let identity = Identity::load(&cfg.tls.cert, &cfg.tls.key)?;
        let root = crate::daemon::tls::load_certs(&cfg.tls.root)?.remove(0);
        let national = crate::daemon::tls::load_certs(&cfg.national_ca)?.remove(0);
        let server_tls = ServerTls::new(
            &identity,
            &root,
            Some((cfg.country, national)),
            &cfg.federation,
        )?;
        let client_tls = ClientTls::new(&identity, &root, &cfg.federation)?;
        match crate::daemon::tls::role_of(&identity.chain[0], &cfg.federation) {
            Ok(Role::Node(cc)) if cc == cfg.country => {}
            Ok(other) => anyhow::bail!(
                "{}: the certificate is for {other}, not node {}",
                cfg.tls.cert.display(),
                cfg.country
            ),
            Err(why) => anyhow::bail!(
                "{}: the certificate is not node {}'s: {why}",
                cfg.tls.cert.display(),
                cfg.country
            ),
        }
        seed::apply(cfg, crate::daemon::clock::now_ms())?;
        let keys = keyring::Keyring::from_config(cfg.country, &cfg.keys)?;
        let key = crate::storage::files::directory::load_public_key(&cfg.directory_key)?;
        let directory =
            crate::storage::files::directory::load(&cfg.directory, &key, &cfg.federation)?;
        keys.check_listed(&directory)?;
        // A directory that already lists the next pair starts the switch
        // delay at this start.
        keys.directory_in_force(&directory, crate::daemon::clock::now_ms());
        let store: Arc<dyn NodeStore> =
            match SledNodeStore::open_with_cache(&cfg.data_dir, cfg.storage.cache_mib) {
                Ok(store) => Arc::new(store),
                // Says all, directory included.
                Err(e @ crate::storage::StorageError::InUse(_)) => return Err(e.into()),
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("opening node store in {}", cfg.data_dir.display())));
                }
            };
        let policies = crate::daemon::in_force::load_in_force(
            store.as_ref(),
            &directory,
            &cfg.directory,
            key,
            &cfg.policies,
            crate::daemon::clock::now_ms(),
        )
        .await?;
        let (refusals, refusal_queue) = tokio::sync::mpsc::unbounded_channel();
        let uplink = Arc::new(uplink::Uplink::new(&client_tls, &cfg.broker_addresses())?);
        let metrics = crate::daemon::metrics::NodeMetrics::new(uplink.losses.clone());
        let metrics_listener = match cfg.metrics_listen.addr() {
            Some(addr) => Some(crate::daemon::metrics::bind(addr).await?),
            None => None,
        };
        let state = NodeState {
            country: cfg.country,
            federation: cfg.federation.clone(),
            directory: DirectorySlot::new(directory),
            directory_file: cfg.directory.clone(),
            directory_key: key,
            directory_refresh: std::time::Duration::from_secs(cfg.directory_refresh_secs.max(1)),
            directory_refusal: LastRefusal::default(),
            policy_refusal: LastRefusal::default(),
            policies_fs: tokio::sync::Mutex::new(()),
            keys,
            store,
            policies,
            policy_reload: std::time::Duration::from_secs(cfg.policy_reload_secs.max(1)),
            retention: cfg.retention.clone(),
            limits: cfg.limits.clone(),
            clock: Arc::new(crate::daemon::clock::now_ms),
            submit_window: cfg.submit_window.max(1),
            waiters: Mutex::new(HashMap::new()),
            inbox_events: broadcast::channel(256).0,
            refusals,
            refusal_queue: Mutex::new(Some(refusal_queue)),
            settled: tokio::sync::watch::channel(0).0,
            stopping: tokio::sync::watch::channel(false).0,
            uplink,
            metrics,
        };
        Ok(Node {
            state: Arc::new(state),
            server_tls,
            grace: std::time::Duration::from_secs(cfg.shutdown_grace_secs.max(1)),
            metrics: metrics_listener,
        })
    }

    /// Where the metrics endpoint listens (None when off).
    pub fn metrics_addr(&self) -> Option<std::net::SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Runs the uplink to the broker and serves the agency API, gRPC health
    /// and reflection on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        // What is in force now is the floor for every later start.
        self.state
            .store
            .put_in_force(&crate::storage::in_force::InForce {
                directory: Some(self.state.directory().version_info()),
                bundles: self.state.policies.in_force(),
            })
            .await?;
        // A node that was stopped while the directory changed (a key
        // rotation, say) asks for the broker's directory before it takes
        // deliveries, so that it does not reject records signed with keys it
        // has not heard of yet. Bounded: a broker that does not answer
        // leaves it to the periodic refresh.
        if let Ok(Err(e)) = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            self.state.refresh_directory(),
        )
        .await
        {
            tracing::debug!(node = %self.state.country, error = %e, "no directory from the broker at start");
        }
        let metrics = match self.metrics {
            Some(l) => tokio::spawn(crate::daemon::metrics::serve(
                l,
                self.state.clone(),
                self.state.stopping(),
            )),
            None => tokio::spawn(async {}),
        };
        let probe = tokio::spawn(self.state.uplink.clone().run(self.state.stopping()));
        let outbox = tokio::spawn(window::outbox_loop(self.state.clone()));
        let in_hand = Arc::new(uplink::InHand::default());
        let receive = tokio::spawn(uplink::receive_loop(
            self.state.clone(),
            uplink::Stream::Main,
            in_hand.clone(),
        ));
        let receive_immediate = tokio::spawn(uplink::receive_loop(
            self.state.clone(),
            uplink::Stream::Immediate,
            in_hand,
        ));
        let purge = tokio::spawn(uplink::purge_loop(self.state.clone()));
        let reporter = {
            let queue = self
                .state
                .refusal_queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            let state = self.state.clone();
            let mut stopping = self.state.stopping();
            tokio::spawn(async move {
                let Some(mut queue) = queue else { return };
                loop {
                    let report = tokio::select! {
                        r = queue.recv() => match r { Some(r) => r, None => return },
                        _ = stopping.wait_for(|s| *s) => return,
                    };
                    // Best effort: a refusal that never left the node has no
                    // acknowledgement to honour, but the auditors should see it.
                    for attempt in 0..3u32 {
                        let mut client = state.uplink.link().client;
                        let sent = uplink::within(
                            uplink::CALL_TIMEOUT,
                            client.report_refusal(report.clone()),
                        );
                        match sent.await {
                            Ok(_) => break,
                            Err(s) => {
                                tracing::warn!(status = %s, attempt, "could not report a local refusal");
                                tokio::select! {
                                    _ = tokio::time::sleep(std::time::Duration::from_millis(
                                        200 << attempt,
                                    )) => {}
                                    _ = stopping.wait_for(|s| *s) => return,
                                }
                            }
                        }
                    }
                }
            })
        };
        let witness = tokio::spawn(witness::run(self.state.clone()));
        let reloader = {
            let state = self.state.clone();
            let mut stopping = state.stopping();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(state.policy_reload);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                    state.reload_policies().await;
                }
            })
        };
        let refresher = {
            let state = self.state.clone();
            let mut stopping = state.stopping();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(state.directory_refresh);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                    tokio::select! {
                        _ = state.refresh() => {}
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                }
            })
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<crate::daemon::rpc::agency_server::AgencyServer<agency_api::AgencyService>>()
            .await;
        let (reflection, reflection_v1alpha) =
            crate::daemon::rpc::reflection(crate::daemon::rpc::NODE_SERVICES)?;
        // Above the envelope limit, so that a record too large to send is
        // read and refused with a reason rather than cut off by the transport.
        let max = crate::protocol::bounds::transport_limit(self.state.limits.max_envelope_bytes);
        let api = crate::daemon::rpc::agency_server::AgencyServer::new(
            agency_api::AgencyService::new(self.state.clone()),
        )
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
        let addr = listener
            .local_addr()
            .map_or_else(|_| "an unknown address".to_string(), |a| a.to_string());
        tracing::info!(node = %self.state.country, %addr, "node serving");
        let state = self.state.clone();
        let fatal = Arc::new(Mutex::new(None::<String>));
        let stop_reason = fatal.clone();
        let (close, closing) = tokio::sync::watch::channel(false);
        let stopped_at = Arc::new(Mutex::new(None::<tokio::time::Instant>));
        let stop_time = stopped_at.clone();
        let server = crate::daemon::tls::server_builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(api)
            .serve_with_incoming_shutdown(
                self.server_tls
                    .incoming_until(listener, self.state.stopping(), closing),
                async move {
                    tokio::select! {
                        _ = shutdown => tracing::info!(node = %state.country, "node shutting down"),
                        // Nothing can be acknowledged any more: stop rather than
                        // answer every caller with an error.
                        reason = state.store.failed() => {
                            tracing::error!(node = %state.country, %reason, "node stopping");
                            *stop_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                        }
                    }
                    *stop_time.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(tokio::time::Instant::now());
                    state.stopping.send_replace(true);
                },
            );
        let grace = self.grace;
        let reserve = crate::daemon::shutdown::reserve(grace);
        let result =
            crate::daemon::shutdown::drain(server, self.state.stopping(), &close, grace - reserve)
                .await;
        self.state.stopping.send_replace(true);
        let deadline = stopped_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_else(tokio::time::Instant::now)
            + grace;
        crate::daemon::shutdown::join_until(
            vec![
                outbox,
                receive,
                receive_immediate,
                purge,
                reloader,
                refresher,
                witness,
                reporter,
                probe,
                metrics,
            ],
            deadline,
            "node",
        )
        .await;
        if let Some(reason) = fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
            anyhow::bail!("node {} stopped: {reason}", self.state.country);
        }
        tracing::info!(node = %self.state.country, "node stopped");
        match result {
            Some(r) => Ok(r?),
            None => {
                tracing::warn!(node = %self.state.country, "connections did not close in time; stopped regardless");
                Ok(())
            }
        }
    }
}

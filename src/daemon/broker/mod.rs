//! The broker: routes, stores and forwards envelopes it cannot read, decides
//! on policy from their signed headers, and keeps the audit log.
//!
//! The submit pipeline lives in [`service`]; durable state behind
//! [`crate::storage::broker::BrokerStore`]; the log's integrator and
//! checkpoint signer in [`log`]. The broker never holds a key that opens a
//! payload: it has the directory (public keys) and its own TLS identity,
//! nothing else.

pub mod audit_api;
pub mod claims;
pub mod log;
mod receipts;
mod refusal_report;
pub mod service;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::daemon::config::StorageBackend;
use crate::daemon::config::{BrokerConfig, Limits};
use crate::daemon::live::{DirectorySlot, LastRefusal, Offer};
use crate::daemon::tls::{Identity, ServerTls};
use crate::protocol::directory::Directory;
use crate::protocol::ids::Country;
use crate::protocol::policy::Policies;
use crate::protocol::proto::v1;
use crate::storage::broker::{BrokerStore, Subject};
use crate::storage::files::policy::{LivePolicies, Reload};
use crate::storage::postgres::PgStore;
use crate::storage::sled::broker::SledStore;

use crate::daemon::clock::Clock;

/// Everything the broker's services share.
pub struct BrokerState {
    pub federation: String,
    directory: DirectorySlot,
    /// The last directory refusal logged, so that a file refused on every
    /// refresh is logged once.
    directory_refusal: LastRefusal,
    pub store: Arc<dyn BrokerStore>,
    policies: LivePolicies,
    /// Signs checkpoints of the audit log.
    pub log: log::TransparencyLog,
    pub limits: Limits,
    pub clock: Clock,
    /// Per node and kind of stream (main, immediate), the generation of
    /// its delivery stream in use.
    deliveries: Mutex<HashMap<(Country, bool), tokio::sync::watch::Sender<u64>>>,
    /// Which delivery stream of a node has which item in flight.
    pub claims: Arc<claims::Claims>,
    stopping: tokio::sync::watch::Sender<bool>,
    /// Calls under way that may write (Submit, Acknowledge, ...): a stop
    /// waits for them before it signs the last checkpoint.
    operations: tokio::sync::watch::Sender<usize>,
    /// What the broker counts and measures, served on `metrics_listen`.
    pub metrics: crate::daemon::metrics::BrokerMetrics,
}

/// A call under way that may write; see [`BrokerState::operation`].
pub struct Operation<'a>(&'a tokio::sync::watch::Sender<usize>);

impl Drop for Operation<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl BrokerState {
    pub fn new(
        federation: String,
        directory: Directory,
        store: Arc<dyn BrokerStore>,
        policies: LivePolicies,
        log: log::TransparencyLog,
        limits: Limits,
        clock: Clock,
    ) -> Self {
        BrokerState {
            federation,
            directory: DirectorySlot::new(directory),
            directory_refusal: LastRefusal::default(),
            store,
            policies,
            log,
            limits,
            deliveries: Mutex::new(HashMap::new()),
            claims: Arc::default(),
            stopping: tokio::sync::watch::channel(false).0,
            operations: tokio::sync::watch::channel(0).0,
            metrics: crate::daemon::metrics::BrokerMetrics::new(clock()),
            clock,
        }
    }

    /// Admits a call that may write, unless the broker is stopping: then it
    /// answers UNAVAILABLE, and the node takes it elsewhere or later. The
    /// stop waits for every admitted call before its last checkpoint, so
    /// that checkpoint covers everything the calls sequenced.
    pub fn operation(&self) -> Result<Operation<'_>, tonic::Status> {
        self.operations.send_modify(|n| *n += 1);
        let op = Operation(&self.operations);
        // Counted before the look: a stop that raised `stopping` and then
        // found no call under way is seen here.
        if *self.stopping.borrow() {
            return Err(tonic::Status::unavailable("the broker is shutting down"));
        }
        Ok(op)
    }

    /// Whether the broker is stopping.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// The directory in force now.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.current()
    }

    /// Reads the directory file `file` again and puts it in force if it
    /// verifies against the pinned `key`, is newer than the directory in
    /// force and pins the same transparency log: recorded as the floor in
    /// the store, then in force, then logged (DirectoryChanged), and the
    /// policy bundles checked again against it. A file that is older, the
    /// same version with other content, or does not verify is refused with
    /// a warning and a DirectoryRefused event (once per reason); the
    /// directory in force stays.
    pub async fn refresh_directory(
        &self,
        file: &std::path::Path,
        key: &[u8; 32],
    ) -> anyhow::Result<Offer> {
        let current = self.directory();
        let offer = match crate::storage::files::directory::load(file, key, &self.federation) {
            Err(e) => Offer::Refused {
                offered: None,
                reason: format!("{e:#}"),
            },
            Ok(d) if d.log() != current.log() => Offer::Refused {
                offered: Some(d.version_info()),
                reason: format!(
                    "{}: directory version {} pins another transparency log than the one this \
                     broker signs",
                    file.display(),
                    d.version
                ),
            },
            Ok(d) => self.directory.offer(d, self.store.as_ref()).await?,
        };
        match &offer {
            Offer::Same => self.directory_refusal.clear(),
            Offer::Applied { previous, now } => {
                self.directory_refusal.clear();
                let dir = self.directory();
                let event = v1::AuditEvent {
                    at_ms: self.now_ms(),
                    event: Some(v1::audit_event::Event::DirectoryChanged(
                        v1::DirectoryChanged {
                            version: dir.version,
                            directory_sha256: dir.digest(),
                        },
                    )),
                };
                let index = self
                    .store
                    .record_if_changed(Subject::Directory, dir.digest(), event)
                    .await?;
                tracing::info!(
                    version = now.version,
                    previous = previous.version,
                    ?index,
                    "new directory in force"
                );
                self.reload_policies().await?;
            }
            Offer::Refused { offered, reason } => {
                if self.directory_refusal.first(reason) {
                    tracing::warn!(%reason, in_force = current.version, "directory refused; the one in force stays");
                    let event = v1::AuditEvent {
                        at_ms: self.now_ms(),
                        event: Some(v1::audit_event::Event::DirectoryRefused(
                            v1::DirectoryRefused {
                                version: offered.map(|o| o.version).unwrap_or(0),
                                directory_sha256: offered
                                    .map(|o| o.digest.to_vec())
                                    .unwrap_or_default(),
                                version_in_force: current.version,
                                reason: reason.clone(),
                            },
                        )),
                    };
                    self.store.append(event).await?;
                }
            }
        }
        Ok(offer)
    }

    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// The policy set in force.
    pub fn policies(&self) -> Policies {
        self.policies.current()
    }

    /// The files of the policy set in force, as nodes fetch them.
    pub fn served_policies(&self) -> Arc<v1::PolicySet> {
        self.policies.served()
    }

    /// How many times the policy bundles were compiled and verified in full
    /// (a reload of unchanged files is not).
    pub fn policy_full_checks(&self) -> u64 {
        self.policies.full_checks()
    }

    /// Reads the policy bundles again. A valid new set takes effect at once;
    /// a change and a refused set are both audit events, and a refused set
    /// leaves the one in force.
    pub async fn reload_policies(&self) -> anyhow::Result<Reload> {
        let directory = self.directory();
        let outcome = crate::daemon::in_force::reload_policies(
            &self.policies,
            &directory,
            self.now_ms(),
            self.store.as_ref(),
        )
        .await;
        let detail = match &outcome {
            Reload::Unchanged | Reload::Refused { first: false, .. } => return Ok(outcome),
            Reload::Replaced {
                previous, bundles, ..
            } => {
                tracing::info!(%bundles, "new policy set in force");
                format!("in force: {bundles} (replaces set {previous})")
            }
            Reload::Refused {
                reason,
                first: true,
            } => {
                tracing::error!(%reason, "policy bundles refused; the set in force stays");
                format!("refused, the set in force stays: {reason}")
            }
        };
        let current = self.policies();
        let event = v1::AuditEvent {
            at_ms: self.now_ms(),
            event: Some(v1::audit_event::Event::PolicyChanged(v1::PolicyChanged {
                bundle_hash: current.hash().to_string(),
                detail,
            })),
        };
        match &outcome {
            Reload::Replaced { hash, .. } => {
                self.store
                    .record_if_changed(Subject::Policy, hash.as_bytes().to_vec(), event)
                    .await?;
            }
            // An unchanged set returned above.
            Reload::Refused { .. } | Reload::Unchanged => {
                self.store.append(event).await?;
            }
        }
        Ok(outcome)
    }

    /// Resolves once the broker begins to shut down; long-lived streams end
    /// on it so the server can drain.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// Makes a new delivery stream `node`'s only one of its kind (main, or
    /// `immediate`): returns its generation and a receiver that changes when
    /// a newer stream of that kind replaces it. A node has at most one
    /// stream of each kind at a time, so it cannot pile them up.
    pub fn claim_delivery(
        &self,
        node: Country,
        immediate: bool,
    ) -> (u64, tokio::sync::watch::Receiver<u64>) {
        let mut all = self.deliveries.lock().unwrap_or_else(|p| p.into_inner());
        let tx = all
            .entry((node, immediate))
            .or_insert_with(|| tokio::sync::watch::channel(0).0);
        let generation = tx.borrow().wrapping_add(1);
        tx.send_replace(generation);
        (generation, tx.subscribe())
    }
}

#[async_trait::async_trait]
impl crate::daemon::metrics::Exporter for BrokerState {
    /// Reads what lives in the store and the state: queue depths for every
    /// node of the directory, the log's size, the newest checkpoint, its
    /// cosignatures, the witnesses and the versions in force. A value the
    /// store cannot give keeps its last one, with a warning.
    async fn sample(&self) {
        let m = &self.metrics;
        let now = self.now_ms();
        let dir = self.directory();
        m.versions.set(dir.version, &self.policies.in_force());
        m.queue_depth.clear();
        for node in dir.nodes() {
            match self.store.queue_depth(node.country).await {
                Ok(depth) => {
                    m.queue_depth
                        .get_or_create(&[("node", node.country.to_string())])
                        .set(i64::try_from(depth).unwrap_or(i64::MAX));
                }
                Err(e) => {
                    tracing::warn!(node = %node.country, error = %e, "metrics: cannot read the queue depth");
                }
            }
        }
        m.witnesses(dir.nodes().map(|n| n.country));
        match self.store.audit_len().await {
            Ok(n) => {
                m.log_size.set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the log's size"),
        }
        match self.store.latest_checkpoint().await {
            Ok(Some((size, _))) => {
                m.checkpoint(size, now);
                match self.store.cosignatures(size).await {
                    Ok(c) => {
                        m.checkpoint_cosignatures
                            .set(i64::try_from(c.len()).unwrap_or(i64::MAX));
                    }
                    Err(e) => tracing::warn!(error = %e, "metrics: cannot read the cosignatures"),
                }
            }
            Ok(None) => m.checkpoint(0, now),
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the newest checkpoint"),
        }
    }

    fn registry(&self) -> &prometheus_client::registry::Registry {
        self.metrics.registry()
    }
}

/// A configured broker, ready to serve.
pub struct Broker {
    pub state: Arc<BrokerState>,
    tls: ServerTls,
    policy_reload: std::time::Duration,
    /// The directory file, read again every `directory_refresh`, and the
    /// pinned key it must verify against.
    directory_file: std::path::PathBuf,
    directory_key: [u8; 32],
    directory_refresh: std::time::Duration,
    /// How long a stop may take (`shutdown_grace_secs`).
    pub grace: std::time::Duration,
    /// The metrics endpoint, bound (None: `metrics_listen = "off"`).
    metrics: Option<TcpListener>,
}

/// Opens the broker's store in the backend its config names: sled in
/// `data_dir`, or the PostgreSQL database of `[storage.postgres]`.
pub async fn open_store(cfg: &BrokerConfig) -> anyhow::Result<Arc<dyn BrokerStore>> {
    match cfg.storage.backend {
        StorageBackend::Sled => {
            match SledStore::open_with_cache(&cfg.data_dir, cfg.storage.cache_mib) {
                Ok(store) => Ok(Arc::new(store)),
                // Says all, directory included.
                Err(
                    e @ crate::storage::broker::StoreError::Storage(
                        crate::storage::StorageError::InUse(_),
                    ),
                ) => Err(e.into()),
                Err(e) => Err(anyhow::Error::new(e).context(format!(
                    "opening broker store in {}",
                    cfg.data_dir.display()
                ))),
            }
        }
        StorageBackend::Postgres => {
            let settings = cfg.storage.postgres_settings("broker config")?;
            let store = PgStore::open(&settings).await.with_context(|| {
                format!(
                    "opening broker store in PostgreSQL database {}",
                    settings.dbname().unwrap_or("(unnamed)")
                )
            })?;
            Ok(Arc::new(store))
        }
    }
}

/// `casebridge broker migrate`: copies the sled store in `from` (a
/// stopped broker's `data_dir`) into the PostgreSQL database that `to`
/// names, which must hold no broker data yet.
pub async fn migrate(
    from: &std::path::Path,
    to: &BrokerConfig,
) -> anyhow::Result<crate::storage::migrate::Migrated> {
    anyhow::ensure!(
        to.storage.backend == StorageBackend::Postgres,
        "the target config keeps its store in sled; migrate copies into PostgreSQL: set \
         [storage] backend = \"postgres\" and [storage.postgres]"
    );
    anyhow::ensure!(
        from.join("db").is_file() || from.join("conf").is_file(),
        "{} holds no sled store",
        from.display()
    );
    let sled = SledStore::open(from)
        .with_context(|| format!("opening the sled store in {}", from.display()))?;
    let settings = to.storage.postgres_settings("the target config")?;
    let pg = PgStore::open(&settings)
        .await
        .context("opening the PostgreSQL store")?;
    crate::storage::migrate::sled_to_postgres(&sled, &pg)
        .await
        .context("copying the store")
}

impl Broker {
    /// Builds a broker from its config: loads and checks the TLS identity,
    /// the pinned directory key and the directory, and opens the store.
    pub async fn from_config(cfg: &BrokerConfig) -> anyhow::Result<Broker> {
        let identity = Identity::load(&cfg.tls.cert, &cfg.tls.key)?;
        let root = crate::daemon::tls::load_certs(&cfg.tls.root)?.remove(0);
        let tls = ServerTls::new(&identity, &root, None, &cfg.federation)?;
        let key = crate::storage::files::directory::load_public_key(&cfg.directory_key)?;
        let directory =
            crate::storage::files::directory::load(&cfg.directory, &key, &cfg.federation)?;
        let store = open_store(cfg).await?;
        let policies = crate::daemon::in_force::load_in_force(
            store.as_ref(),
            &directory,
            &cfg.directory,
            key,
            &cfg.policies,
            crate::daemon::clock::now_ms(),
        )
        .await?;
        let log = log::TransparencyLog::new(
            crate::storage::files::keys::load_signing_key(&cfg.log_key)?,
            &directory,
        )
        .with_context(|| format!("{}", cfg.log_key.display()))?;
        // Independent of the log's length; `check_log` re-hashes it all.
        match log.verify_latest(store.as_ref()).await {
            Ok(Some(size)) => {
                tracing::info!(size, "stored audit tree matches its latest checkpoint");
            }
            Ok(None) => {}
            Err(e) => anyhow::bail!("{e}; refusing to start"),
        }
        let metrics = match cfg.metrics_listen.addr() {
            Some(addr) => Some(crate::daemon::metrics::bind(addr).await?),
            None => None,
        };
        let state = BrokerState::new(
            cfg.federation.clone(),
            directory,
            store,
            policies,
            log,
            cfg.limits.clone(),
            Arc::new(crate::daemon::clock::now_ms),
        );
        Ok(Broker {
            state: Arc::new(state),
            tls,
            policy_reload: std::time::Duration::from_secs(cfg.policy_reload_secs.max(1)),
            directory_file: cfg.directory.clone(),
            directory_key: key,
            directory_refresh: std::time::Duration::from_secs(cfg.directory_refresh_secs.max(1)),
            grace: std::time::Duration::from_secs(cfg.shutdown_grace_secs.max(1)),
            metrics,
        })
    }

    /// Where the metrics endpoint listens (None when off).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// `casebridge broker --check-log`: re-hashes every entry of the stored
    /// log against the stored tree and the latest checkpoint
    /// ([`log::TransparencyLog::verify_stored`]) without serving; the broker
    /// must be stopped. Returns the checkpoint's size, None when there is no
    /// checkpoint yet.
    pub async fn check_log(cfg: &BrokerConfig) -> anyhow::Result<Option<u64>> {
        let key = crate::storage::files::directory::load_public_key(&cfg.directory_key)?;
        let directory =
            crate::storage::files::directory::load(&cfg.directory, &key, &cfg.federation)?;
        let store = open_store(cfg).await?;
        let log = log::TransparencyLog::new(
            crate::storage::files::keys::load_signing_key(&cfg.log_key)?,
            &directory,
        )
        .with_context(|| format!("{}", cfg.log_key.display()))?;
        Ok(log.verify_stored(store.as_ref()).await?)
    }

    /// Records the directory and the policy set in force in the audit log
    /// if either changed since the last run. `serve` does this too; calling
    /// it first lets a caller know the events are written before the first
    /// connection.
    pub async fn record_state(&self) -> anyhow::Result<()> {
        let state = &self.state;
        let dir = state.directory();
        // What is in force now is the floor for every later start.
        state
            .store
            .put_in_force(&crate::storage::in_force::InForce {
                directory: Some(dir.version_info()),
                bundles: state.policies.in_force(),
            })
            .await?;
        let event = v1::AuditEvent {
            at_ms: state.now_ms(),
            event: Some(v1::audit_event::Event::DirectoryChanged(
                v1::DirectoryChanged {
                    version: dir.version,
                    directory_sha256: dir.digest(),
                },
            )),
        };
        if let Some(index) = state
            .store
            .record_if_changed(Subject::Directory, dir.digest(), event)
            .await?
        {
            tracing::info!(version = dir.version, index, "directory in force changed");
        }
        let policies = state.policies();
        let event = v1::AuditEvent {
            at_ms: state.now_ms(),
            event: Some(v1::audit_event::Event::PolicyChanged(v1::PolicyChanged {
                bundle_hash: policies.hash().to_string(),
                detail: format!(
                    "in force at start: {}",
                    crate::protocol::policy::bundle_list(&policies)
                ),
            })),
        };
        let digest = policies.hash().as_bytes().to_vec();
        if let Some(index) = state
            .store
            .record_if_changed(Subject::Policy, digest, event)
            .await?
        {
            tracing::info!(hash = policies.hash(), index, "policy set in force changed");
        }
        Ok(())
    }

    /// Serves the exchange API, gRPC health and reflection on `listener`
    /// until `shutdown` completes, then drains open calls.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let addr: Option<SocketAddr> = listener.local_addr().ok();
        self.record_state().await?;
        let metrics = match self.metrics {
            Some(l) => tokio::spawn(crate::daemon::metrics::serve(
                l,
                self.state.clone(),
                self.state.stopping(),
            )),
            None => tokio::spawn(async {}),
        };
        let reloader = {
            let state = self.state.clone();
            let every = self.policy_reload;
            let mut stopping = state.stopping();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                    if let Err(e) = state.reload_policies().await {
                        tracing::error!(error = %e, "could not record a policy change");
                    }
                }
            })
        };
        let refresher = {
            let state = self.state.clone();
            let every = self.directory_refresh;
            let (file, key) = (self.directory_file.clone(), self.directory_key);
            let mut stopping = state.stopping();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopping.wait_for(|s| *s) => return,
                    }
                    if let Err(e) = state.refresh_directory(&file, &key).await {
                        tracing::error!(error = %e, "could not record a directory change");
                    }
                }
            })
        };
        // Keeps the Merkle tree up with what is sequenced, from what an
        // earlier run left unintegrated on.
        // One broker of those on a shared store integrates and signs: the
        // one holding the log's lease (with sled, always this one).
        let holder = format!(
            "{}/{}",
            std::process::id(),
            uuid::Uuid::now_v7().as_simple()
        );
        let (leading_tx, leading) = tokio::sync::watch::channel(false);
        let lease = tokio::spawn(log::hold_lease(
            self.state.store.clone(),
            holder.clone(),
            leading_tx,
            self.state.stopping(),
        ));
        let integrator = tokio::spawn(log::integrate(
            self.state.store.clone(),
            leading.clone(),
            self.state.stopping(),
        ));
        let checkpointer = {
            let state = self.state.clone();
            let mut stopping = state.stopping();
            let mut leading = leading.clone();
            tokio::spawn(async move {
                let sequenced = state.store.sequenced().await;
                if let Err(e) = &sequenced {
                    tracing::error!(error = %e, "the checkpointer cannot follow the log; it signs every second");
                }
                let mut sequenced = sequenced.ok();
                // At least one checkpoint a second while entries arrive.
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopping.wait_for(|s| *s) => break,
                    }
                    tokio::select! {
                        led = leading.wait_for(|l| *l) => if led.is_err() { break },
                        _ = stopping.wait_for(|s| *s) => break,
                    }
                    let covered = match state.log.checkpoint(state.store.as_ref()).await {
                        Ok(Some(size)) => {
                            state.metrics.checkpoint(size, state.now_ms());
                            Some(size)
                        }
                        Ok(None) => state
                            .store
                            .latest_checkpoint()
                            .await
                            .ok()
                            .flatten()
                            .map(|(s, _)| s),
                        Err(e) => {
                            tracing::error!(error = %e, "could not sign a checkpoint");
                            None
                        }
                    };
                    // While the newest checkpoint covers everything
                    // sequenced, sleep until more is.
                    if let (Some(covered), Some(sequenced)) = (covered, sequenced.as_mut()) {
                        tokio::select! {
                            more = sequenced.wait_for(|&s| s > covered) => if more.is_err() { break },
                            // Checked again when the lease is lost.
                            _ = leading.wait_for(|l| !*l) => {}
                            _ = stopping.wait_for(|s| *s) => break,
                        }
                    }
                }
            })
        };
        let (health, health_service) = tonic_health::server::health_reporter();
        let exchange = service::ExchangeService::new(self.state.clone());
        // Above the envelope limit, so that an oversized envelope is read and
        // gets its typed, audited refusal rather than a transport error.
        let max = crate::protocol::bounds::transport_limit(self.state.limits.max_envelope_bytes);
        health
            .set_serving::<crate::daemon::rpc::exchange_server::ExchangeServer<service::ExchangeService>>()
            .await;
        health
            .set_serving::<crate::daemon::rpc::audit_server::AuditServer<audit_api::AuditService>>()
            .await;
        let (reflection, reflection_v1alpha) =
            crate::daemon::rpc::reflection(crate::daemon::rpc::BROKER_SERVICES)?;
        tracing::info!(
            addr = %addr.map_or_else(|| "an unknown address".to_string(), |a| a.to_string()),
            "broker serving"
        );
        let fatal = Arc::new(Mutex::new(None::<String>));
        let (close, closing) = tokio::sync::watch::channel(false);
        let grace = self.grace;
        let stopped_at = Arc::new(Mutex::new(None::<tokio::time::Instant>));
        let server = crate::daemon::tls::server_builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(reflection_v1alpha)
            .add_service(crate::daemon::rpc::audit_server::AuditServer::new(
                audit_api::AuditService::new(self.state.clone()),
            ))
            .add_service(
                crate::daemon::rpc::exchange_server::ExchangeServer::new(exchange)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .serve_with_incoming_shutdown(
                self.tls
                    .incoming_until(listener, self.state.stopping(), closing),
                {
                    let state = self.state.clone();
                    let fatal = fatal.clone();
                    let stopped_at = stopped_at.clone();
                    async move {
                        tokio::select! {
                            _ = shutdown => tracing::info!("broker shutting down"),
                            // Nothing can be acknowledged any more: stop rather
                            // than answer every caller with an error.
                            reason = state.store.failed() => {
                                tracing::error!(%reason, "broker stopping");
                                *fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
                            }
                        }
                        *stopped_at.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(tokio::time::Instant::now());
                        // No new connection, no new call that writes, and
                        // every delivery stream ends.
                        state.stopping.send_replace(true);
                        health
                            .set_not_serving::<crate::daemon::rpc::exchange_server::ExchangeServer<
                                service::ExchangeService,
                            >>()
                            .await;
                    }
                },
            );
        // The stop's bound: the connections drain until a reserve is left
        // for what follows, and are closed then if any is still open.
        let reserve = crate::daemon::shutdown::reserve(grace);
        let served =
            crate::daemon::shutdown::drain(server, self.state.stopping(), &close, grace - reserve)
                .await;
        self.state.stopping.send_replace(true);
        let deadline = stopped_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unwrap_or_else(tokio::time::Instant::now)
            + grace;
        // Calls admitted before the stop finish their writes (a call that
        // writes is short: its store write and its answer).
        let mut operations = self.state.operations.subscribe();
        if tokio::time::timeout_at(deadline, operations.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::error!("calls still writing when the time to stop was up");
        }
        crate::daemon::shutdown::join_until(
            vec![
                reloader,
                refresher,
                checkpointer,
                integrator,
                lease,
                metrics,
            ],
            deadline,
            "broker",
        )
        .await;
        // A last checkpoint covers everything sequenced, signed by the
        // leader, which then gives the lease up for another broker to take
        // at once. A broker that does not lead leaves it to the one that does.
        if *leading.borrow() {
            match tokio::time::timeout_at(
                deadline,
                self.state.log.checkpoint(self.state.store.as_ref()),
            )
            .await
            {
                Ok(Ok(Some(size))) => tracing::info!(size, "last checkpoint signed"),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "could not sign the last checkpoint"),
                Err(_) => tracing::error!("the last checkpoint was not signed in time"),
            }
            if let Ok(Err(e)) =
                tokio::time::timeout_at(deadline, self.state.store.resign(&holder)).await
            {
                tracing::warn!(error = %e, "could not give up the audit log's lease");
            }
        }
        match served {
            Some(r) => r?,
            None => tracing::warn!("connections did not close in time; stopping regardless"),
        }
        if let Some(reason) = fatal.lock().unwrap_or_else(|p| p.into_inner()).take() {
            anyhow::bail!("broker stopped: {reason}");
        }
        tracing::info!("broker stopped");
        Ok(())
    }
}

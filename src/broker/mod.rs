//! The broker: routes, stores and forwards envelopes it cannot read, decides
//! on policy from their signed headers, and keeps the audit log.
//!
//! The submit pipeline lives in [`service`]; durable state behind
//! [`store::BrokerStore`]. The broker never holds a key that opens a payload:
//! it has the directory (public keys) and its own TLS identity, nothing else.

pub mod service;
pub mod store;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::config::{BrokerConfig, Limits};
use crate::directory::Directory;
use crate::ids::Country;
use crate::policy::{PermitAllPlaceholder, PolicyEngine};
use crate::proto::v1;
use crate::tls::{Identity, ServerTls};
use store::{BrokerStore, SledStore, Subject};

/// A clock in Unix milliseconds; tests substitute their own.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Everything the broker's services share.
pub struct BrokerState {
    pub federation: String,
    directory: RwLock<Arc<Directory>>,
    pub store: Arc<dyn BrokerStore>,
    pub policy: Arc<dyn PolicyEngine>,
    pub limits: Limits,
    pub clock: Clock,
    wakeups: Mutex<HashMap<Country, Arc<Notify>>>,
    stopping: tokio::sync::watch::Sender<bool>,
}

impl BrokerState {
    pub fn new(
        federation: String,
        directory: Directory,
        store: Arc<dyn BrokerStore>,
        policy: Arc<dyn PolicyEngine>,
        limits: Limits,
        clock: Clock,
    ) -> Self {
        BrokerState {
            federation,
            directory: RwLock::new(Arc::new(directory)),
            store,
            policy,
            limits,
            clock,
            wakeups: Mutex::new(HashMap::new()),
            stopping: tokio::sync::watch::channel(false).0,
        }
    }

    pub fn directory(&self) -> Arc<Directory> {
        self.directory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// Resolves once the broker begins to shut down; long-lived streams end
    /// on it so the server can drain.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// The wake-up for `node`'s delivery streams.
    pub fn wakeup(&self, node: Country) -> Arc<Notify> {
        self.wakeups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(node)
            .or_default()
            .clone()
    }
}

/// A configured broker, ready to serve.
pub struct Broker {
    pub state: Arc<BrokerState>,
    tls: ServerTls,
}

impl Broker {
    /// Builds a broker from its config: loads and checks the TLS identity,
    /// the pinned directory key and the directory, and opens the store.
    pub fn from_config(cfg: &BrokerConfig) -> anyhow::Result<Broker> {
        let identity = Identity::load(&cfg.tls.cert, &cfg.tls.key)?;
        let root = crate::tls::load_certs(&cfg.tls.root)?.remove(0);
        let tls = ServerTls::new(&identity, &root, None, &cfg.federation)?;
        let key = crate::directory::load_public_key(&cfg.directory_key)?;
        let directory = crate::directory::load(&cfg.directory, &key, &cfg.federation)?;
        let store = SledStore::open(&cfg.data_dir)
            .with_context(|| format!("opening broker store in {}", cfg.data_dir.display()))?;
        let state = BrokerState::new(
            cfg.federation.clone(),
            directory,
            Arc::new(store),
            Arc::new(PermitAllPlaceholder),
            cfg.limits.clone(),
            Arc::new(crate::time::now_ms),
        );
        Ok(Broker {
            state: Arc::new(state),
            tls,
        })
    }

    /// Records the directory in force in the audit log if it changed since
    /// the last run. `serve` does this too; calling it first lets a caller
    /// know the event is written before the first connection.
    pub async fn record_directory(&self) -> anyhow::Result<()> {
        let dir = self.state.directory();
        let event = v1::AuditEvent {
            at_ms: self.state.now_ms(),
            event: Some(v1::audit_event::Event::DirectoryChanged(v1::DirectoryChanged {
                version: dir.version,
                directory_sha256: dir.digest(),
            })),
        };
        let recorded = self.state.store.record_if_changed(Subject::Directory, dir.digest(), event).await?;
        if let Some(index) = recorded {
            tracing::info!(version = dir.version, index, "directory in force changed");
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
        self.record_directory().await?;
        let (health, health_service) = tonic_health::server::health_reporter();
        let exchange = service::ExchangeService::new(self.state.clone());
        let max = self
            .state
            .limits
            .max_envelope_bytes
            .saturating_mul(2)
            .saturating_add(64 * 1024);
        health
            .set_serving::<v1::exchange_server::ExchangeServer<service::ExchangeService>>()
            .await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        tracing::info!(?addr, "broker serving");
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection)
            .add_service(
                v1::exchange_server::ExchangeServer::new(exchange)
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max),
            )
            .serve_with_incoming_shutdown(self.tls.incoming(listener), {
                let state = self.state.clone();
                async move {
                    shutdown.await;
                    tracing::info!("broker shutting down");
                    state.stopping.send_replace(true);
                }
            })
            .await?;
        tracing::info!("broker stopped");
        Ok(())
    }
}

//! A whole federation in one process, on loopback: the broker and any number
//! of nodes, each on its own port, started and stopped at will. The demo and
//! the integration tests use it; every connection is real mutual TLS over a
//! real socket, and every store is on disk.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use std::sync::Arc;

use crate::daemon::broker::{Broker, BrokerState};
use crate::daemon::config::{self, AgencyProfile, BrokerConfig, NodeConfig};
use crate::daemon::node::{Node, NodeState};
use crate::protocol::ids::{AgencyId, Country};
use crate::tools::client::AgencyClient;
use crate::tools::pki::{self, Federation, InitOptions};

struct Running {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task.await.context("server task panicked")?
    }
}

/// A running federation.
pub struct LocalFederation {
    pub fed: Federation,
    pub broker_config: BrokerConfig,
    pub broker_addr: SocketAddr,
    pub node_configs: BTreeMap<Country, NodeConfig>,
    node_addrs: BTreeMap<Country, SocketAddr>,
    // The ports of daemons not running, held (see `hold`).
    broker_port: Option<TcpSocket>,
    node_ports: BTreeMap<Country, TcpSocket>,
    broker: Option<Running>,
    nodes: BTreeMap<Country, Running>,
    broker_state: Option<Arc<BrokerState>>,
    node_states: BTreeMap<Country, Arc<NodeState>>,
    /// Where the running daemons serve their metrics (any free loopback
    /// port: `pki init` writes 127.0.0.1:0 for a federation on port 0).
    broker_metrics: Option<SocketAddr>,
    node_metrics: BTreeMap<Country, SocketAddr>,
}

/// Binds `addr`. A port not held (see `hold`) may be taken for a moment by
/// an outgoing connection as its local port: a bind that finds it in use
/// is tried again for up to a second.
async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 50 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            r => return r.with_context(|| format!("binding {addr}")),
        }
    }
}

/// Holds a port for a daemon that is not running: bound but not listening,
/// so a connection to it is refused, as to a stopped daemon, and no
/// outgoing connection can take it as its local port meanwhile (the kernel
/// skips explicitly bound ports when it picks one).
fn hold(addr: SocketAddr) -> anyhow::Result<TcpSocket> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }?;
    socket.set_reuseaddr(true)?;
    socket
        .bind(addr)
        .with_context(|| format!("holding {addr}"))?;
    Ok(socket)
}

/// Starts listening on `addr`: on its held port, or by binding it again if
/// it was not held (or a test moved the daemon to another address).
async fn listen(held: Option<TcpSocket>, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    match held.filter(|s| s.local_addr().ok() == Some(addr)) {
        Some(socket) => socket
            .listen(1024)
            .with_context(|| format!("listening on {addr}")),
        None => bind(addr).await,
    }
}

impl LocalFederation {
    /// Writes a federation of `countries` into `dir` and loads its configs,
    /// without starting anything.
    pub async fn create(dir: &Path, countries: &[Country]) -> anyhow::Result<LocalFederation> {
        Self::create_with_brokers(dir, countries, 1).await
    }

    /// [`LocalFederation::create`] from `pki init --brokers brokers`: the
    /// first broker is the one this federation runs; the other endpoints'
    /// configs are in `fed.broker_configs`, on ports of their own to choose.
    pub async fn create_with_brokers(
        dir: &Path,
        countries: &[Country],
        brokers: usize,
    ) -> anyhow::Result<LocalFederation> {
        let mut opts = InitOptions::new(dir);
        opts.countries = countries.to_vec();
        opts.brokers = brokers;
        opts.base_port = 0;
        let fed = pki::init(&opts)?;
        let broker_config: BrokerConfig = config::load(&fed.broker_config)?;
        // Reserve the broker's port now: nodes must know it before it runs.
        let broker_port = hold("127.0.0.1:0".parse()?)?;
        let broker_addr = broker_port.local_addr()?;
        // Auditors dial the broker at the address it will really have.
        for (_, profile) in &fed.auditor_profiles {
            let text = std::fs::read_to_string(profile)?;
            let mut table: toml::Table = toml::from_str(&text)?;
            table.insert(
                "broker".into(),
                toml::Value::String(broker_addr.to_string()),
            );
            std::fs::write(profile, toml::to_string(&table)?)?;
        }
        let mut node_configs = BTreeMap::new();
        let mut node_addrs = BTreeMap::new();
        let mut node_ports = BTreeMap::new();
        for (cc, p) in &fed.node_configs {
            // Every endpoint was written on port 0: the node names the
            // broker at its real address alone (a test lists others).
            let text = std::fs::read_to_string(p)?;
            let mut table: toml::Table = toml::from_str(&text)?;
            table.remove("brokers");
            table.insert(
                "broker".into(),
                toml::Value::String(broker_addr.to_string()),
            );
            std::fs::write(p, toml::to_string(&table)?)?;
            let mut cfg: NodeConfig = config::load(p)?;
            cfg.broker = Some(broker_addr.to_string());
            cfg.brokers.clear();
            let port = hold("127.0.0.1:0".parse()?)?;
            node_addrs.insert(*cc, port.local_addr()?);
            node_ports.insert(*cc, port);
            node_configs.insert(*cc, cfg);
        }
        Ok(LocalFederation {
            fed,
            broker_config,
            broker_addr,
            node_configs,
            node_addrs,
            broker_port: Some(broker_port),
            node_ports,
            broker: None,
            nodes: BTreeMap::new(),
            broker_state: None,
            node_states: BTreeMap::new(),
            broker_metrics: None,
            node_metrics: BTreeMap::new(),
        })
    }

    /// Creates the federation and starts the broker and every node.
    pub async fn start(dir: &Path, countries: &[Country]) -> anyhow::Result<LocalFederation> {
        let mut f = Self::create(dir, countries).await?;
        f.start_broker().await?;
        for cc in countries {
            f.start_node(*cc).await?;
        }
        Ok(f)
    }

    pub async fn start_broker(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.broker.is_none(), "broker already running");
        let broker = Broker::from_config(&self.broker_config).await?;
        self.broker_state = Some(broker.state.clone());
        self.broker_metrics = broker.metrics_addr();
        broker.record_state().await?;
        let listener = listen(self.broker_port.take(), self.broker_addr).await?;
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(broker.serve(listener, async {
            let _ = rx.await;
        }));
        self.broker = Some(Running { stop, task });
        Ok(())
    }

    /// Stops the broker gracefully and waits until its store is closed.
    pub async fn stop_broker(&mut self) -> anyhow::Result<()> {
        self.broker_state = None;
        self.broker_metrics = None;
        if let Some(r) = self.broker.take() {
            r.stop().await?;
            self.broker_port = hold(self.broker_addr).ok();
        }
        Ok(())
    }

    pub async fn start_node(&mut self, cc: Country) -> anyhow::Result<()> {
        anyhow::ensure!(!self.nodes.contains_key(&cc), "node {cc} already running");
        let cfg = self
            .node_configs
            .get(&cc)
            .with_context(|| format!("no node {cc}"))?;
        let node = Node::from_config(cfg).await?;
        self.node_states.insert(cc, node.state.clone());
        if let Some(addr) = node.metrics_addr() {
            self.node_metrics.insert(cc, addr);
        }
        let listener = listen(self.node_ports.remove(&cc), self.node_addrs[&cc]).await?;
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(node.serve(listener, async {
            let _ = rx.await;
        }));
        self.nodes.insert(cc, Running { stop, task });
        Ok(())
    }

    pub async fn stop_node(&mut self, cc: Country) -> anyhow::Result<()> {
        self.node_states.remove(&cc);
        self.node_metrics.remove(&cc);
        if let Some(r) = self.nodes.remove(&cc) {
            r.stop().await?;
            if let Some(port) = self.node_addrs.get(&cc).and_then(|a| hold(*a).ok()) {
                self.node_ports.insert(cc, port);
            }
        }
        Ok(())
    }

    /// The running broker's shared state (its store, directory and policy).
    pub fn broker(&self) -> Option<&Arc<BrokerState>> {
        self.broker_state.as_ref()
    }

    /// A running node's shared state.
    pub fn node(&self, cc: Country) -> Option<&Arc<NodeState>> {
        self.node_states.get(&cc)
    }

    /// Where the running broker serves its metrics.
    pub fn broker_metrics_addr(&self) -> Option<SocketAddr> {
        self.broker_metrics
    }

    /// Where a running node serves its metrics.
    pub fn node_metrics_addr(&self, cc: Country) -> Option<SocketAddr> {
        self.node_metrics.get(&cc).copied()
    }

    pub fn node_addr(&self, cc: Country) -> Option<SocketAddr> {
        self.node_addrs.get(&cc).copied()
    }

    pub fn agency_profile(&self, agency: &AgencyId) -> anyhow::Result<AgencyProfile> {
        let p = self
            .fed
            .agency_profile(agency)
            .with_context(|| format!("no profile for {agency}"))?;
        Ok(config::load(p)?)
    }

    /// An agency's client of its node.
    pub fn client(&self, agency: &str) -> anyhow::Result<AgencyClient> {
        let agency: AgencyId = agency.parse()?;
        let profile = self.agency_profile(&agency)?;
        let addr = self
            .node_addr(agency.country())
            .with_context(|| format!("no node for {agency}"))?;
        AgencyClient::from_parts(&profile, &addr.to_string())
    }

    /// Stops every node, then the broker.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let nodes: Vec<Country> = self.nodes.keys().copied().collect();
        for cc in nodes {
            self.stop_node(cc).await?;
        }
        self.stop_broker().await
    }
}

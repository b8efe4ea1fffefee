//! `casebridge health`: asks a running broker or node for its gRPC health
//! over the same mutual TLS its peers use, with the daemon's own
//! certificate. It is what a container's readiness probe or a monitoring
//! agent runs, where there is no shell and no grpcurl.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::daemon::config::{self, BrokerConfig, NodeConfig, TlsFiles};
use crate::daemon::tls::{ClientTls, Identity};
use crate::protocol::ids::Role;

/// Which daemon to ask, and how to reach it.
pub struct Target<'a> {
    /// The daemon's own config: its certificate, key and root are used.
    pub config: &'a Path,
    /// Node config (else broker config).
    pub node: bool,
    /// "host:port"; default `localhost` and the port the config listens on.
    /// The host must be a name in the daemon's certificate.
    pub address: Option<&'a str>,
    /// One service by its full name; default the server as a whole.
    pub service: Option<&'a str>,
    /// How long to wait for the answer, connecting included.
    pub timeout: Duration,
}

/// Asks once; `Ok(true)` when the daemon answers SERVING.
pub async fn check(t: &Target<'_>) -> anyhow::Result<bool> {
    let (tls, federation, port, role) = if t.node {
        let cfg: NodeConfig = config::load(t.config)?;
        let (tls, port) = (cfg.tls.clone(), cfg.listen.port());
        (tls, cfg.federation, port, Role::Node(cfg.country))
    } else {
        let cfg: BrokerConfig = config::load(t.config)?;
        let (tls, port) = (cfg.tls.clone(), cfg.listen.port());
        (tls, cfg.federation, port, Role::Broker)
    };
    let address = match t.address {
        Some(a) => a.to_string(),
        None => format!("localhost:{port}"),
    };
    let service = t.service.unwrap_or("").to_string();
    let asked = ask(&tls, &federation, &address, role, service);
    let status = tokio::time::timeout(t.timeout, asked).await.map_err(|_| {
        anyhow::anyhow!(
            "{address} did not answer a health check within {} s",
            t.timeout.as_secs_f64()
        )
    })??;
    let what = if t.service.unwrap_or("").is_empty() {
        "the server".to_string()
    } else {
        t.service.unwrap_or_default().to_string()
    };
    let word = match status {
        ServingStatus::Serving => "SERVING",
        ServingStatus::NotServing => "NOT_SERVING",
        ServingStatus::ServiceUnknown => "SERVICE_UNKNOWN",
        ServingStatus::Unknown => "UNKNOWN",
    };
    println!("{address}: {what} is {word}");
    Ok(status == ServingStatus::Serving)
}

async fn ask(
    files: &TlsFiles,
    federation: &str,
    address: &str,
    role: Role,
    service: String,
) -> anyhow::Result<ServingStatus> {
    let identity = Identity::load(&files.cert, &files.key)?;
    let root = crate::daemon::tls::load_certs(&files.root)?
        .into_iter()
        .next()
        .with_context(|| format!("{}: no certificate in the file", files.root.display()))?;
    let tls = ClientTls::new(&identity, &root, federation)?;
    let channel = tls.channel(address, role)?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest { service })
        .await
        .map_err(|s| anyhow::anyhow!("{address}: health check failed: {}", s.message()))?;
    Ok(ServingStatus::try_from(answer.into_inner().status).unwrap_or(ServingStatus::Unknown))
}

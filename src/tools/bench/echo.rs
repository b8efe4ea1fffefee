//! The yardstick: a unary gRPC echo served with the broker's certificate
//! and called with a node's, over the same mutual TLS 1.3 configurations
//! (`daemon::tls`) and server limits as the Exchange API. It does nothing
//! else, so its rate is what this machine's TLS, HTTP/2 and protobuf allow;
//! every casebridge rate is read against it.

use std::net::SocketAddr;
use std::path::Path;

use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::daemon::config::{self, BrokerConfig, NodeConfig};
use crate::daemon::tls::{ClientTls, Identity, ServerTls};
use crate::protocol::ids::Role;
pub use generated::echo_client::EchoClient;
use generated::echo_server::{Echo, EchoServer};
pub use generated::{EchoReply, EchoRequest};

/// The messages and service of `proto/casebridge/v1/bench.proto`, generated
/// apart from the federation's APIs: no daemon serves or lists it.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/bench/casebridge.v1.rs"));
}

struct EchoService;

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        Ok(Response::new(EchoReply {
            payload: req.into_inner().payload,
        }))
    }
}

/// Serves the echo on `listen` with the TLS identity of the broker
/// configured in `broker_config`, until `shutdown` completes. Prints the
/// same "listening on" line as the daemons.
pub async fn serve(
    broker_config: &Path,
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let cfg: BrokerConfig = config::load(broker_config)?;
    let identity = Identity::load(&cfg.tls.cert, &cfg.tls.key)?;
    let root = first_cert(&cfg.tls.root)?;
    let tls = ServerTls::new(&identity, &root, None, &cfg.federation)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("casebridge echo listening on {}", listener.local_addr()?);
    crate::daemon::tls::server_builder()
        .add_service(EchoServer::new(EchoService))
        .serve_with_incoming_shutdown(tls.incoming(listener), shutdown)
        .await?;
    Ok(())
}

fn first_cert(path: &Path) -> anyhow::Result<rustls_pki_types::CertificateDer<'static>> {
    crate::daemon::tls::load_certs(path)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("{}: no certificate", path.display()))
}

/// A client of the echo holding the certificate of the node configured in
/// `node_config`, on one connection (as an agency client has).
pub fn client(node_config: &Path, addr: SocketAddr) -> anyhow::Result<EchoClient<Channel>> {
    let cfg: NodeConfig = config::load(node_config)?;
    let identity = Identity::load(&cfg.tls.cert, &cfg.tls.key)?;
    let root = first_cert(&cfg.tls.root)?;
    let tls = ClientTls::new(&identity, &root, &cfg.federation)?;
    let channel = tls.channel(&addr.to_string(), Role::Broker)?;
    Ok(EchoClient::new(channel))
}

//! Mutual TLS for every connection: rustls with the ring provider, TLS 1.3
//! only, client certificates always required.
//!
//! Identity and role come from the certificate's SPIFFE URI SAN, and from who
//! issued it: node, broker and auditor certificates must be issued directly
//! by the federation root; agency certificates by their own country's
//! national CA. There is no switch to turn any of this off.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;

use crate::protocol::bounds::quoted;
use crate::protocol::ids::{Country, Role};
use crate::protocol::keys;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: {why}")]
    Pem { path: String, why: String },
    #[error("{0}: no certificate found")]
    NoCertificate(String),
    #[error("{0}: no private key found")]
    NoKey(String),
    #[error(transparent)]
    Key(#[from] keys::KeyError),
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    fn pem(path: &Path, e: &pem::Error) -> TlsError {
        TlsError::Pem {
            path: path.display().to_string(),
            why: keys::pem_error(e),
        }
    }
}

pub use crate::protocol::identity::{provider, role_of};

/// A certificate chain and its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Loads a PEM certificate chain and a PEM private key; the key file must
    /// not be readable by group or others (see `storage::files::keys`).
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        let chain = load_certs(cert)?;
        let key_bytes = crate::storage::files::keys::read_secret(key)?;
        let key = match PrivateKeyDer::from_pem_slice(&key_bytes) {
            Ok(k) => k,
            Err(pem::Error::NoItemsFound) => {
                return Err(TlsError::NoKey(key.display().to_string()));
            }
            Err(e) => return Err(TlsError::pem(key, &e)),
        };
        Ok(Identity { chain, key })
    }

    fn clone_key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

/// Loads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::pem(path, &e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.display().to_string()));
    }
    Ok(certs)
}

fn roots(anchors: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for a in anchors {
        store
            .add(a.clone())
            .map_err(|e| TlsError::Config(format!("trust anchor: {e}")))?;
    }
    Ok(Arc::new(store))
}

fn client_verifier(
    anchors: &[CertificateDer<'static>],
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(roots(anchors)?, provider())
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))
}

/// Who issued a peer's certificate, as far as this server can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issuer {
    /// Issued directly by the federation root (brokers, nodes, auditors).
    Root,
    /// Issued by this country's national CA (agencies).
    National(Country),
    /// Chains to the federation, but through someone else.
    Other,
}

/// The authenticated peer of one connection, computed once at handshake and
/// handed to every request on it as a request extension.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The role in the SPIFFE URI SAN, or why there is none.
    pub role: Result<Role, String>,
    pub issuer: Issuer,
    pub remote: Option<SocketAddr>,
}

/// Requests one connection may have open at once on the broker's and the
/// nodes' servers: 64. Advertised as HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS
/// (a client waits for a free stream) and enforced again in front of the
/// services. An open delivery stream counts as one while it is open.
pub const MAX_CONCURRENT_STREAMS: u32 = 64;

/// A gRPC server with the per-connection limits every casebridge server
/// applies.
pub fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .concurrency_limit_per_connection(MAX_CONCURRENT_STREAMS as usize)
}

/// Server-side TLS: accepts any certificate chaining to the federation root,
/// then classifies the peer so services can authorise by role, country and
/// issuer.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    root: Arc<dyn ClientCertVerifier>,
    national: Option<(Country, Arc<dyn ClientCertVerifier>)>,
    federation: String,
}

impl ServerTls {
    /// `root` is the federation root certificate; `national` this node's
    /// national CA, for servers that accept agency certificates.
    pub fn new(
        identity: &Identity,
        root: &CertificateDer<'static>,
        national: Option<(Country, CertificateDer<'static>)>,
        federation: &str,
    ) -> Result<ServerTls, TlsError> {
        let root_verifier = client_verifier(std::slice::from_ref(root))?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(root_verifier.clone())
            .with_single_cert(identity.chain.clone(), identity.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let national = match national {
            Some((cc, ca)) => Some((cc, client_verifier(&[ca])?)),
            None => None,
        };
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            root: root_verifier,
            national,
            federation: federation.to_string(),
        })
    }

    fn classify(&self, chain: &[CertificateDer<'static>], remote: Option<SocketAddr>) -> Peer {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return Peer {
                role: Err("no client certificate".into()),
                issuer: Issuer::Other,
                remote,
            };
        };
        let now = UnixTime::now();
        let issuer = if self.root.verify_client_cert(leaf, &[], now).is_ok() {
            Issuer::Root
        } else {
            match &self.national {
                Some((cc, v)) if v.verify_client_cert(leaf, intermediates, now).is_ok() => {
                    Issuer::National(*cc)
                }
                _ => Issuer::Other,
            }
        };
        Peer {
            role: role_of(leaf, &self.federation),
            issuer,
            remote,
        }
    }

    /// Accepts connections from `listener` until it is dropped (see
    /// [`ServerTls::incoming_until`]).
    pub fn incoming(self, listener: TcpListener) -> ReceiverStream<Result<TlsConn, io::Error>> {
        let never = || tokio::sync::watch::channel(false).1;
        self.incoming_until(listener, never(), never())
    }

    /// Accepts connections from `listener`, handshaking each on its own task
    /// so a slow client cannot stall the others.
    ///
    /// Once `stopping` turns true it accepts nothing more: the listener is
    /// closed (a new connection is refused, not left unread) and handshakes
    /// under way are dropped. Once `close` turns true, every connection it
    /// gave fails its reads and writes, so its server ends it.
    pub fn incoming_until(
        self,
        listener: TcpListener,
        stopping: tokio::sync::watch::Receiver<bool>,
        close: tokio::sync::watch::Receiver<bool>,
    ) -> ReceiverStream<Result<TlsConn, io::Error>> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut stop = stopping.clone();
            loop {
                let (tcp, remote) = tokio::select! {
                    _ = tx.closed() => return,
                    _ = raised(&mut stop) => return,
                    r = listener.accept() => match r {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let this = self.clone();
                let tx = tx.clone();
                let mut stop = stopping.clone();
                let close = close.clone();
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, this.acceptor.accept(tcp));
                    let done = tokio::select! {
                        done = handshake => done,
                        _ = raised(&mut stop) => return,
                    };
                    match done {
                        Ok(Ok(tls)) => {
                            let chain: Vec<_> = tls
                                .get_ref()
                                .1
                                .peer_certificates()
                                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                                .unwrap_or_default();
                            let peer = this.classify(&chain, Some(remote));
                            let conn = TlsConn {
                                inner: tls,
                                peer,
                                close: Some(Box::pin(async move {
                                    let mut close = close;
                                    raised(&mut close).await;
                                })),
                                closed: false,
                            };
                            tokio::select! {
                                _ = tx.send(Ok(conn)) => {}
                                _ = raised(&mut stop) => {}
                            }
                        }
                        Ok(Err(e)) => tracing::info!(%remote, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::info!(%remote, "TLS handshake timed out"),
                    }
                });
            }
        });
        ReceiverStream::new(rx)
    }
}

/// Resolves once `flag` is true; never if its sender is gone without.
async fn raised(flag: &mut tokio::sync::watch::Receiver<bool>) {
    if flag.wait_for(|f| *f).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One accepted TLS connection with its classified peer.
pub struct TlsConn {
    inner: tokio_rustls::server::TlsStream<TcpStream>,
    peer: Peer,
    /// Resolves when the server closes every connection still open.
    close: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    closed: bool,
}

impl TlsConn {
    /// An error once the server closes its connections.
    fn check_closed(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if let Some(close) = self.close.as_mut() {
            if close.as_mut().poll(cx).is_ready() {
                self.close = None;
                self.closed = true;
            }
        }
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the server is stopping",
            ));
        }
        Ok(())
    }
}

impl Connected for TlsConn {
    type ConnectInfo = Peer;
    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check_closed(cx)?;
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check_closed(cx)?;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check_closed(cx)?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check_closed(cx)?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Client-side TLS towards one server whose SPIFFE role is known in advance.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    // Brokers and nodes hold certificates issued directly by the federation
    // root; a national CA must not be able to stand in for either.
    root_only: Arc<dyn ClientCertVerifier>,
    federation: String,
}

impl ClientTls {
    pub fn new(
        identity: &Identity,
        root: &CertificateDer<'static>,
        federation: &str,
    ) -> Result<ClientTls, TlsError> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots(std::slice::from_ref(root))?)
            .with_client_auth_cert(identity.chain.clone(), identity.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            root_only: client_verifier(std::slice::from_ref(root))?,
            federation: federation.to_string(),
        })
    }

    /// A lazily connecting gRPC channel to `address` ("host:port"), which must
    /// present a certificate for `expected`. Reconnects by itself.
    pub fn channel(
        &self,
        address: &str,
        expected: Role,
    ) -> Result<tonic::transport::Channel, TlsError> {
        let (host, _) = address.rsplit_once(':').ok_or_else(|| {
            TlsError::Config(format!(
                "address {} has no port (expected host:port)",
                quoted(address)
            ))
        })?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let server_name = ServerName::try_from(host)
            .map_err(|_| TlsError::Config(format!("address {}: bad host name", quoted(address))))?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .map_err(|e| TlsError::Config(format!("address {}: {e}", quoted(address))))?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        let this = self.clone();
        let address = address.to_string();
        let connector = tower::service_fn(move |_uri: tonic::transport::Uri| {
            let this = this.clone();
            let address = address.clone();
            let server_name = server_name.clone();
            let expected = expected.clone();
            async move {
                let tcp = TcpStream::connect(&address).await.map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot connect to {address}: {e}"))
                })?;
                let _ = tcp.set_nodelay(true);
                let tls = this
                    .connector
                    .connect(server_name, tcp)
                    .await
                    .map_err(|e| {
                        io::Error::new(e.kind(), format!("TLS with {address} failed: {e}"))
                    })?;
                let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
                let role = leaf
                    .map(|c| role_of(c, &this.federation))
                    .unwrap_or_else(|| Err("no certificate".into()));
                // Server certificates carry both EKUs, so the root-only
                // client verifier checks the issuer exactly as the servers do.
                let direct = leaf.is_some_and(|c| {
                    this.root_only
                        .verify_client_cert(c, &[], UnixTime::now())
                        .is_ok()
                });
                if !direct {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!(
                            "{address}: certificate is not issued directly by the federation root"
                        ),
                    ));
                }
                match role {
                    Ok(role) if role == expected => {}
                    Ok(role) => {
                        return Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            format!("{address} is not {expected}: its certificate is for {role}"),
                        ));
                    }
                    Err(why) => {
                        return Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            format!("{address} is not {expected}: {why}"),
                        ));
                    }
                }
                Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        });
        Ok(endpoint.connect_with_connector_lazy(connector))
    }
}

/// Reads the authenticated peer a request arrived with.
pub fn peer_of<T>(req: &tonic::Request<T>) -> Result<&Peer, tonic::Status> {
    req.extensions()
        .get::<Peer>()
        .ok_or_else(|| tonic::Status::unauthenticated("no authenticated TLS peer"))
}

//! TLS to the database with rustls (the ring provider the daemons use), for
//! tokio-postgres: a few lines over `tokio-rustls`, which the daemons
//! already depend on, rather than a crate that would bring a second crypto
//! provider. The server's certificate is always verified, chain and host
//! name, against the configured root certificate.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

/// Makes a TLS connection per database connection; without a client
/// configuration (a plain connection over loopback or a Unix socket) it is
/// never asked to, and refuses if it is.
#[derive(Clone)]
pub struct MakeRustls {
    config: Option<Arc<rustls::ClientConfig>>,
}

impl MakeRustls {
    /// TLS verified against `roots` alone.
    pub fn verified_by(roots: rustls::RootCertStore) -> Result<MakeRustls, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(MakeRustls {
            config: Some(Arc::new(config)),
        })
    }

    /// No TLS: for `sslmode=disable` over loopback or a Unix socket.
    pub fn none() -> MakeRustls {
        MakeRustls { config: None }
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<RustlsConnect, io::Error> {
        // Asked for every connection, TLS or not; only `connect` is asked
        // when TLS is used.
        let Some(config) = self.config.clone() else {
            return Ok(RustlsConnect(None));
        };
        let name = ServerName::try_from(domain.to_string()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{domain} is not a host name a certificate can name"),
            )
        })?;
        Ok(RustlsConnect(Some((
            tokio_rustls::TlsConnector::from(config),
            name,
        ))))
    }
}

/// One TLS handshake to come (None: TLS is not configured).
pub struct RustlsConnect(Option<(tokio_rustls::TlsConnector, ServerName<'static>)>);

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let Some((connector, name)) = self.0 else {
                return Err(io::Error::other(
                    "the database asked for TLS, but no root certificate is configured",
                ));
            };
            let tls = connector.connect(name, stream).await?;
            Ok(RustlsStream(Box::new(tls)))
        })
    }
}

/// A TLS connection to the database.
pub struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    /// No channel binding: the password exchange (SCRAM) runs inside a TLS
    /// connection whose server certificate was verified.
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

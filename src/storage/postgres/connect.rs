//! Connection settings: the connection string, the password read apart,
//! TLS, the pool.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use tokio_postgres::config::{Host, SslMode};

use super::tls::MakeRustls;
use crate::storage::StorageError;

/// How long opening one connection may take before the call that needed it
/// fails (and is retried by its caller).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why connection settings were refused; each a sentence for the person
/// who wrote them.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("not a PostgreSQL connection string: {0}")]
    Unparsable(String),
    #[error(
        "the connection string holds a password; put it in a file of its own (postgres.password_file) instead"
    )]
    PasswordInUrl,
    #[error(
        "it connects to {0} without TLS; only loopback and Unix sockets may: add sslmode=verify-full and postgres.root_cert"
    )]
    PlainToRemote(String),
    #[error(
        "it asks for TLS (sslmode={0}) but no root certificate is configured (postgres.root_cert)"
    )]
    NoRoot(&'static str),
    #[error("{path}: {why}")]
    RootCert { path: String, why: String },
    #[error("it names no host")]
    NoHost,
}

/// Everything needed to connect to the broker's database.
#[derive(Clone)]
pub struct PgSettings {
    config: tokio_postgres::Config,
    tls: MakeRustls,
    pool_size: usize,
}

impl PgSettings {
    /// Settings from a connection string (URL or key=value form). TLS is
    /// used when it asks for it (`sslmode=require`, `verify-ca` or
    /// `verify-full`; with rustls the server's certificate and host name are
    /// always verified, against `root_cert`); without TLS, only a loopback
    /// address or a Unix socket is accepted. `password` is the password file's
    /// content; a connection string that holds a password itself is refused
    /// unless `allow_password_in_url` (tests, whose throwaway cluster's
    /// string carries one).
    pub fn new(
        url: &str,
        password: Option<&[u8]>,
        root_cert: Option<&Path>,
        pool_size: usize,
        allow_password_in_url: bool,
    ) -> Result<PgSettings, SettingsError> {
        let (url, verify) = strip_verify(url);
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| SettingsError::Unparsable(e.to_string()))?;
        if config.get_password().is_some() && !allow_password_in_url {
            return Err(SettingsError::PasswordInUrl);
        }
        if let Some(p) = password {
            config.password(trim_newline(p));
        }
        if config.get_hosts().is_empty() {
            return Err(SettingsError::NoHost);
        }
        let wants_tls = verify.is_some() || config.get_ssl_mode() == SslMode::Require;
        let tls = if wants_tls {
            let mode = verify.unwrap_or("require");
            let Some(root) = root_cert else {
                return Err(SettingsError::NoRoot(mode));
            };
            config.ssl_mode(SslMode::Require);
            MakeRustls::verified_by(roots(root)?).map_err(|e| SettingsError::RootCert {
                path: root.display().to_string(),
                why: e.to_string(),
            })?
        } else {
            for host in config.get_hosts() {
                if let Host::Tcp(name) = host {
                    let local = name == "localhost"
                        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
                    if !local {
                        return Err(SettingsError::PlainToRemote(name.clone()));
                    }
                }
            }
            config.ssl_mode(SslMode::Disable);
            MakeRustls::none()
        };
        config.options("-c synchronous_commit=on");
        config.connect_timeout(CONNECT_TIMEOUT);
        config.application_name("casebridge-broker");
        Ok(PgSettings {
            config,
            tls,
            pool_size: pool_size.max(2),
        })
    }

    /// The same settings for another database of the same server.
    pub fn with_dbname(&self, dbname: &str) -> PgSettings {
        let mut s = self.clone();
        s.config.dbname(dbname);
        s
    }

    /// The same settings with a pool of `pool_size` connections.
    pub fn with_pool_size(&self, pool_size: usize) -> PgSettings {
        let mut s = self.clone();
        s.pool_size = pool_size.max(2);
        s
    }

    /// The database's name.
    pub fn dbname(&self) -> Option<&str> {
        self.config.get_dbname()
    }

    pub(crate) fn pool(&self) -> Result<deadpool_postgres::Pool, StorageError> {
        let manager = deadpool_postgres::Manager::from_config(
            self.config.clone(),
            self.tls.clone(),
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        deadpool_postgres::Pool::builder(manager)
            .max_size(self.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| StorageError::Backend(format!("database pool: {e}")))
    }

    /// One connection outside the pool (the listener's), with the task
    /// that drives it.
    pub(crate) async fn connect(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<
                tokio_postgres::Socket,
                super::tls::RustlsStream<tokio_postgres::Socket>,
            >,
        ),
        tokio_postgres::Error,
    > {
        self.config.connect(self.tls.clone()).await
    }
}

/// `sslmode=verify-full` and `verify-ca`, which tokio-postgres does not
/// parse, as `require` (rustls verifies the certificate and host name in
/// every case); returns which was asked for.
fn strip_verify(url: &str) -> (String, Option<&'static str>) {
    for mode in ["verify-full", "verify-ca"] {
        let from = format!("sslmode={mode}");
        if url.contains(&from) {
            return (url.replace(&from, "sslmode=require"), Some(mode));
        }
    }
    (url.to_string(), None)
}

fn trim_newline(p: &[u8]) -> &[u8] {
    let mut p = p;
    while let Some((last, rest)) = p.split_last() {
        if *last == b'\n' || *last == b'\r' {
            p = rest;
        } else {
            break;
        }
    }
    p
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, SettingsError> {
    let err = |why: String| SettingsError::RootCert {
        path: path.display().to_string(),
        why,
    };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| err(format!("not a PEM certificate: {e}")))?;
        store
            .add(cert)
            .map_err(|e| err(format!("not a usable root certificate: {e}")))?;
    }
    if store.is_empty() {
        return Err(err("holds no certificate".into()));
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_refuse_what_they_must() {
        let s = |url: &str| PgSettings::new(url, None, None, 4, false).map(|_| ());
        assert!(matches!(
            s("postgres://u:secret@127.0.0.1/db"),
            Err(SettingsError::PasswordInUrl)
        ));
        assert!(s("postgres://u@127.0.0.1:5432/db").is_ok());
        assert!(s("postgres://u@localhost/db?sslmode=disable").is_ok());
        assert!(s("host=/run/postgresql user=u dbname=db").is_ok());
        let e = s("postgres://u@db.example/db").unwrap_err();
        assert!(matches!(e, SettingsError::PlainToRemote(_)), "{e}");
        assert!(e.to_string().contains("without TLS"), "{e}");
        assert!(matches!(
            s("postgres://u@db.example/db?sslmode=verify-full"),
            Err(SettingsError::NoRoot("verify-full"))
        ));
        assert!(matches!(
            s("postgres://u@db.example/db?sslmode=require"),
            Err(SettingsError::NoRoot("require"))
        ));
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("root.pem");
        std::fs::write(&bad, b"not a certificate").unwrap();
        assert!(matches!(
            PgSettings::new(
                "postgres://u@db.example/db?sslmode=verify-full",
                None,
                Some(&bad),
                4,
                false
            ),
            Err(SettingsError::RootCert { .. })
        ));
        let cert = rcgen::generate_simple_self_signed(vec!["db.example".into()]).unwrap();
        let good = dir.path().join("good.pem");
        std::fs::write(&good, cert.cert.pem()).unwrap();
        assert!(
            PgSettings::new(
                "postgres://u@db.example/db?sslmode=verify-full",
                Some(b"pw\n"),
                Some(&good),
                4,
                false
            )
            .is_ok()
        );
        assert!(matches!(
            s("not a url ::"),
            Err(SettingsError::Unparsable(_))
        ));
    }
}

//! Scratch databases for tests and the store bench: each gets a database
//! of its own on the server that `CASEBRIDGE_TEST_POSTGRES` names
//! (`scripts/postgres.sh start` makes one), so runs at once do not meet.

use super::PgSettings;
use crate::storage::broker::StoreError;

/// The variable naming the test server.
pub const ENV: &str = "CASEBRIDGE_TEST_POSTGRES";

/// A database made for one test or bench run, dropped by
/// [`TestDb::drop_db`].
pub struct TestDb {
    pub settings: PgSettings,
    /// Its connection string without the password, and the password, as a
    /// broker's config names them.
    pub url: String,
    pub password: Option<Vec<u8>>,
    admin: PgSettings,
    name: String,
}

impl TestDb {
    /// A new empty database, or None (said loudly) when no test server is
    /// configured; for tests, which fail on any other error.
    pub async fn create() -> Option<TestDb> {
        let Ok(url) = std::env::var(ENV) else {
            eprintln!("skipped: {ENV} not set");
            return None;
        };
        let url = via_socket(&url).unwrap_or(url);
        Some(
            TestDb::create_on(&url)
                .await
                .unwrap_or_else(|e| panic!("{ENV}: {e}")),
        )
    }

    /// A new empty database on the server `url` names.
    pub async fn create_on(url: &str) -> Result<TestDb, StoreError> {
        let admin = PgSettings::new(url, None, None, 2, true).map_err(|e| {
            StoreError::Storage(crate::storage::StorageError::Backend(e.to_string()))
        })?;
        let name = format!("t_{}", hex::encode(rand_bytes()));
        let (client, connection) = admin.connect().await?;
        let driver = tokio::spawn(connection);
        let made = client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await;
        drop(client);
        let _ = driver.await;
        made?;
        let parsed: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::from(e))?;
        let host = match parsed.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let url = format!(
            "host={} port={} user={} dbname={name}",
            quote(&host),
            parsed.get_ports().first().copied().unwrap_or(5432),
            quote(parsed.get_user().unwrap_or("postgres")),
        );
        Ok(TestDb {
            settings: admin.with_dbname(&name).with_pool_size(8),
            url,
            password: parsed.get_password().map(<[u8]>::to_vec),
            admin,
            name,
        })
    }

    /// Drops the database, closing whatever still uses it. A failure is
    /// only said: the server is a throwaway one.
    pub async fn drop_db(self) {
        let dropped = async {
            let (client, connection) = self.admin.connect().await?;
            let driver = tokio::spawn(connection);
            let r = client
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ))
                .await;
            drop(client);
            let _ = driver.await;
            r
        };
        if let Err(e) = dropped.await {
            eprintln!(
                "database {} was not dropped: {}",
                self.name,
                super::pg_error(&e)
            );
        }
    }
}

/// The variable naming the throwaway server's directory, which holds its
/// Unix socket (`scripts/postgres.sh start` sets it).
pub const DIR_ENV: &str = "CASEBRIDGE_TEST_POSTGRES_DIR";

/// `url` over the throwaway server's Unix socket, when it has one: tests
/// that start federations reserve loopback ports, and connections over TCP
/// would take ephemeral ports from the same range.
pub fn via_socket(url: &str) -> Option<String> {
    let dir = std::env::var(DIR_ENV).ok()?;
    let parsed: tokio_postgres::Config = url.parse().ok()?;
    let port = parsed.get_ports().first().copied().unwrap_or(5432);
    if !std::path::Path::new(&dir)
        .join(format!(".s.PGSQL.{port}"))
        .exists()
    {
        return None;
    }
    let mut out = format!(
        "host={} port={port} user={} dbname={}",
        quote(&dir),
        quote(parsed.get_user()?),
        quote(parsed.get_dbname().unwrap_or("postgres")),
    );
    if let Some(p) = parsed.get_password() {
        out.push_str(&format!(
            " password={}",
            quote(std::str::from_utf8(p).ok()?)
        ));
    }
    Some(out)
}

/// A value in a key=value connection string.
fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn rand_bytes() -> [u8; 8] {
    use rand_core::{OsRng, TryRngCore as _};
    let mut b = [0u8; 8];
    OsRng
        .try_fill_bytes(&mut b)
        .expect("the operating system's randomness");
    b
}

//! Databases for tests: each test gets a database of its own on the
//! server that `CASEBRIDGE_TEST_POSTGRES` names (`scripts/postgres.sh
//! start` makes one), so tests running at once do not meet.

use super::PgSettings;

/// The variable naming the test server.
pub const ENV: &str = "CASEBRIDGE_TEST_POSTGRES";

/// A database made for one test, dropped by [`TestDb::drop_db`].
pub struct TestDb {
    pub settings: PgSettings,
    admin: PgSettings,
    name: String,
}

impl TestDb {
    /// A new empty database, or None (said loudly) when no test server is
    /// configured.
    pub async fn create() -> Option<TestDb> {
        let Ok(url) = std::env::var(ENV) else {
            eprintln!("skipped: {ENV} not set");
            return None;
        };
        let admin =
            PgSettings::new(&url, None, None, 2, true).unwrap_or_else(|e| panic!("{ENV}: {e}"));
        let name = format!("t_{}", hex::encode(rand_bytes()));
        let (client, connection) = admin
            .connect()
            .await
            .expect("connecting to the test server");
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("creating a test database");
        drop(client);
        let _ = driver.await;
        Some(TestDb {
            settings: admin.with_dbname(&name),
            admin,
            name,
        })
    }

    /// Drops the database, closing whatever still uses it.
    pub async fn drop_db(self) {
        let (client, connection) = self
            .admin
            .connect()
            .await
            .expect("connecting to the test server");
        let driver = tokio::spawn(connection);
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .expect("dropping a test database");
        drop(client);
        let _ = driver.await;
    }
}

fn rand_bytes() -> [u8; 8] {
    use rand_core::{OsRng, TryRngCore as _};
    let mut b = [0u8; 8];
    OsRng
        .try_fill_bytes(&mut b)
        .expect("the operating system's randomness");
    b
}

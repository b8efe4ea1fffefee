//! `[storage]`: which backend keeps a daemon's store, the page cache, and
//! the broker's PostgreSQL settings.

use serde::{Deserialize, Serialize};

use std::path::{Path, PathBuf};

use super::{ConfigError, rebase};

fn default_cache_mib() -> u64 {
    crate::storage::sled::DEFAULT_CACHE_MIB
}

/// The `[storage]` both daemons share: which backend keeps the store, and
/// how much memory it may keep.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSettings {
    /// The store's page cache, in MiB: the bound on what the database keeps
    /// in memory, so on the daemon's resident size whatever its backlog.
    /// Default 64. (sled only.)
    #[serde(default = "default_cache_mib")]
    pub cache_mib: u64,
    /// "sled" (in `data_dir`) or, for the broker, "postgres" (the
    /// `[storage.postgres]` table). Default "sled".
    #[serde(default)]
    pub backend: StorageBackend,
    /// The broker's PostgreSQL database, when `backend = "postgres"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSettings>,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            cache_mib: default_cache_mib(),
            backend: StorageBackend::default(),
            postgres: None,
        }
    }
}

/// Which backend keeps a daemon's store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Sled,
    Postgres,
}

fn default_pool_size() -> usize {
    16
}

/// `[storage.postgres]`: the broker's database.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// The connection string, URL or key=value, without a password.
    pub url: String,
    /// The password, alone in a file that only the owner may read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Connections kept open at most. Default 16.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// The root certificate (PEM) the server's certificate must chain to,
    /// for `sslmode=verify-full` (or `require`, `verify-ca`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cert: Option<PathBuf>,
}

/// Most connections `storage.postgres.pool_size` accepts.
const MAX_POOL_SIZE: usize = 256;

impl StorageSettings {
    pub(super) fn resolve(&mut self, base: &Path) {
        if let Some(pg) = &mut self.postgres {
            if let Some(p) = &mut pg.password_file {
                rebase(p, base);
            }
            if let Some(p) = &mut pg.root_cert {
                rebase(p, base);
            }
        }
    }

    /// The broker's PostgreSQL settings, ready to connect with: the
    /// password file read (refused if others can read it), the root
    /// certificate loaded. Errors name `file` and the key.
    pub fn postgres_settings(
        &self,
        file: &str,
    ) -> Result<crate::storage::postgres::PgSettings, ConfigError> {
        let invalid = |key: &'static str, reason: String| ConfigError::Invalid {
            file: file.into(),
            key,
            reason,
        };
        let Some(pg) = &self.postgres else {
            return Err(invalid(
                "storage.postgres.url",
                "is required when storage.backend is \"postgres\"".into(),
            ));
        };
        if !(2..=MAX_POOL_SIZE).contains(&pg.pool_size) {
            return Err(invalid(
                "storage.postgres.pool_size",
                format!("must be between 2 and {MAX_POOL_SIZE}"),
            ));
        }
        let password = match &pg.password_file {
            Some(p) => Some(
                crate::storage::files::keys::read_secret(p)
                    .map_err(|e| invalid("storage.postgres.password_file", e.to_string()))?,
            ),
            None => None,
        };
        if let Some(root) = &pg.root_cert {
            if !root.is_file() {
                return Err(invalid(
                    "storage.postgres.root_cert",
                    format!("{} does not exist or is not a file", root.display()),
                ));
            }
        }
        use crate::storage::postgres::SettingsError;
        crate::storage::postgres::PgSettings::new(
            &pg.url,
            password.as_deref(),
            pg.root_cert.as_deref(),
            pg.pool_size,
            false,
        )
        .map_err(|e| match e {
            SettingsError::RootCert { .. } => invalid("storage.postgres.root_cert", e.to_string()),
            other => invalid("storage.postgres.url", other.to_string()),
        })
    }
}

/// Largest `storage.cache_mib` accepted: 64 GiB.
pub(super) const MAX_CACHE_MIB: u64 = 64 * 1024;

/// Checks `[storage]`; `postgres` says whether this daemon may keep its
/// store in PostgreSQL (the broker may, a node may not).
pub(super) fn check_storage(
    file: &str,
    s: &StorageSettings,
    postgres: bool,
) -> Result<(), ConfigError> {
    if !(1..=MAX_CACHE_MIB).contains(&s.cache_mib) {
        return Err(ConfigError::Invalid {
            file: file.into(),
            key: "storage.cache_mib",
            reason: format!("must be between 1 and {MAX_CACHE_MIB}"),
        });
    }
    match s.backend {
        StorageBackend::Sled => Ok(()),
        StorageBackend::Postgres if !postgres => Err(ConfigError::Invalid {
            file: file.into(),
            key: "storage.backend",
            reason: "a node keeps its store in sled; only the broker's may be \"postgres\"".into(),
        }),
        StorageBackend::Postgres => s.postgres_settings(file).map(|_| ()),
    }
}

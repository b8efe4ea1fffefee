//! What both daemons do with the versions in force: at start, refuse a
//! directory or policy bundles older than those in force; on a reload, read
//! the bundles again, check them against the versions in force, and record
//! the raised floor in the daemon's store before the new set takes effect.

use std::path::Path;

use anyhow::Context as _;

use crate::protocol::directory::Directory;
use crate::storage::files::policy::{LivePolicies, Reload};
use crate::storage::in_force::{InForce, VersionsInForce};

/// At start, once the store is open: refuses `directory` (read from
/// `directory_file`) if it is older than the one in force, then loads the
/// policy bundles under `policies_dir`, refusing any older than in force.
pub async fn load_in_force<S: VersionsInForce + ?Sized>(
    store: &S,
    directory: &Directory,
    directory_file: &Path,
    directory_key: [u8; 32],
    policies_dir: &Path,
    now_ms: i64,
) -> anyhow::Result<LivePolicies> {
    let in_force = store.in_force().await?;
    in_force.check_directory(directory, directory_file)?;
    LivePolicies::load(
        policies_dir,
        directory,
        directory_key,
        &in_force.bundles,
        now_ms,
    )
    .with_context(|| format!("policy bundles in {}", policies_dir.display()))
}

/// Reads `policies`' bundles again. A set that passes the version checks
/// is first recorded in `store` with `directory`'s version as the new
/// floor, and takes effect only once that is durable, so a crash never
/// leaves a set in force whose versions the store does not hold. `now_ms`
/// is the time the bundles are checked at.
pub async fn reload_policies<S: VersionsInForce + ?Sized>(
    policies: &LivePolicies,
    directory: &Directory,
    now_ms: i64,
    store: &S,
) -> Reload {
    let version = directory.version_info();
    policies
        .reload(directory, now_ms, |bundles| async move {
            let in_force = InForce {
                directory: Some(version),
                bundles,
            };
            store
                .put_in_force(&in_force)
                .await
                .map_err(|e| e.to_string())
        })
        .await
}

//! The policy reload both daemons run: read the bundles again, check them
//! against the versions in force, and record the raised floor in the
//! daemon's store before the new set takes effect.

use crate::protocol::directory::Directory;
use crate::storage::files::policy::{LivePolicies, Reload};
use crate::storage::in_force::{InForce, VersionsInForce};

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

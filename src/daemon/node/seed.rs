//! A node's own copies of the directory and the policy set, seeded at start
//! from read-only ones (a Kubernetes ConfigMap, a container image) named in
//! the config's `[seed]`.
//!
//! The node keeps what it fetches from the broker by writing over its
//! `directory` and `policies` paths, so those must be writable; where the
//! material is delivered read-only, they point at the node's writable state
//! and the seed fills them: the directory when the node has none or an
//! older one, the policy set when the node has none. Everything seeded is
//! verified first, as the node verifies what it loads (the directory against
//! the pinned key, every bundle's signature against the directory); what
//! does not verify is refused and nothing is written.

use anyhow::Context as _;

use crate::daemon::config::NodeConfig;
use crate::storage::files::directory;

/// What a start took from the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Seeded {
    /// The directory version written over the node's own (none, or older).
    pub directory: Option<u64>,
    /// Whether the policy set was copied (the node had none).
    pub policies: bool,
}

/// Seeds the node's directory and policy set from `cfg.seed`, if it names
/// one. A directory of the node's own that does not verify is an error, not
/// something to write over: an operator looks at it first.
pub fn apply(cfg: &NodeConfig, now_ms: i64) -> anyhow::Result<Seeded> {
    let Some(seed) = &cfg.seed else {
        return Ok(Seeded::default());
    };
    let key = directory::load_public_key(&cfg.directory_key)?;
    let bytes = std::fs::read(&seed.directory)
        .with_context(|| format!("reading {}", seed.directory.display()))?;
    let offered = directory::verify_bytes(&bytes, &key, &cfg.federation)
        .with_context(|| format!("the seed's directory {}", seed.directory.display()))?;
    let own = if cfg.directory.exists() {
        Some(
            directory::load(&cfg.directory, &key, &cfg.federation)
                .context("the node's own directory (the seed does not write over it)")?,
        )
    } else {
        None
    };
    // Everything is verified before anything is written.
    let (in_force, directory_bytes) = match own {
        Some(d) if d.version >= offered.version => (d, None),
        _ => (offered, Some(bytes)),
    };
    let take_policies = !cfg.policies.exists();
    if take_policies {
        crate::storage::files::policy::load_policies(&seed.policies, &in_force, &key, now_ms)
            .map_err(|e| {
                anyhow::anyhow!(
                    "the seed's policy set at {} is refused: {e}",
                    seed.policies.display()
                )
            })?;
    }

    let mut seeded = Seeded::default();
    if let Some(bytes) = &directory_bytes {
        crate::storage::write_private(&cfg.directory, bytes)
            .with_context(|| format!("writing {}", cfg.directory.display()))?;
        tracing::info!(
            node = %cfg.country,
            version = in_force.version,
            from = %seed.directory.display(),
            to = %cfg.directory.display(),
            "directory seeded"
        );
        seeded.directory = Some(in_force.version);
    }
    if take_policies {
        crate::storage::files::policy::distributed::copy_set(&seed.policies, &cfg.policies)
            .map_err(anyhow::Error::msg)?;
        tracing::info!(
            node = %cfg.country,
            from = %seed.policies.display(),
            to = %cfg.policies.display(),
            "policy set seeded"
        );
        seeded.policies = true;
    }
    Ok(seeded)
}

//! `casebridge config check FILE`: validates a broker's or a node's config
//! without starting anything. The file is parsed and checked as the daemon
//! would at start; then every file it names is loaded as the daemon loads
//! it (TLS certificate and key, federation root, national CA, the node's
//! signing and HPKE keys, the log key, the pinned directory key, the signed
//! directory, the policy bundles) and checked against the others. Nothing
//! is bound, and the store is not opened: its lock belongs to the daemon
//! that may be running on it.

use std::path::Path;

use crate::daemon::config::{self, BrokerConfig, NodeConfig};
use crate::daemon::tls::{Identity, ServerTls};
use crate::protocol::directory::Directory;
use crate::protocol::ids::Role;
use crate::tools::cli::error_text;

/// Which daemon a config is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Broker,
    Node,
}

/// What a check found: a one-line summary when the config holds, else one
/// sentence per problem.
pub type Outcome = Result<String, Vec<String>>;

/// Guesses the kind of a config from its keys: a node's names its
/// `country`. A file that does not parse is left to the check to report.
fn guess(path: &Path) -> Kind {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    match text.parse::<toml::Table>() {
        Ok(t) if t.contains_key("country") => Kind::Node,
        _ => Kind::Broker,
    }
}

/// Checks the config at `path`, of `kind` or, if None, of the kind its
/// keys say.
pub fn check(path: &Path, kind: Option<Kind>, now_ms: i64) -> Outcome {
    match kind.unwrap_or_else(|| guess(path)) {
        Kind::Broker => check_broker(path, now_ms),
        Kind::Node => check_node(path, now_ms),
    }
}

/// Collects problems: each check that fails adds its sentence.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn note<T>(&mut self, what: &str, r: anyhow::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(format!("{what}: {}", error_text(&e)));
                None
            }
        }
    }
}

/// The checks both daemons share: the TLS identity for `role`, the root,
/// the pinned directory key, the directory and the policy bundles.
struct Common {
    directory: Option<Directory>,
    policies: Option<usize>,
}

#[allow(clippy::too_many_arguments)]
fn check_common(
    p: &mut Problems,
    tls: &config::TlsFiles,
    national: Option<(crate::protocol::ids::Country, &Path)>,
    role: &Role,
    federation: &str,
    directory_file: &Path,
    directory_key: &Path,
    policies: &Path,
    now_ms: i64,
) -> Common {
    let identity = p.note(
        "TLS certificate and key",
        Identity::load(&tls.cert, &tls.key).map_err(anyhow::Error::from),
    );
    let root = p.note(
        "federation root certificate",
        crate::daemon::tls::load_certs(&tls.root)
            .map(|mut c| c.remove(0))
            .map_err(anyhow::Error::from),
    );
    let national = national.and_then(|(cc, path)| {
        p.note(
            "national CA certificate",
            crate::daemon::tls::load_certs(path)
                .map(|mut c| (cc, c.remove(0)))
                .map_err(anyhow::Error::from),
        )
    });
    if let (Some(identity), Some(root)) = (&identity, &root) {
        p.note(
            "TLS configuration",
            ServerTls::new(identity, root, national, federation).map_err(anyhow::Error::from),
        );
        match crate::daemon::tls::role_of(&identity.chain[0], federation) {
            Ok(r) if &r == role => {}
            Ok(r) => p.0.push(format!(
                "{}: the certificate is for {r}, not {role}",
                tls.cert.display()
            )),
            Err(why) => p.0.push(format!(
                "{}: the certificate is not {role}'s: {why}",
                tls.cert.display()
            )),
        }
    }
    let key = p.note(
        "pinned directory key",
        crate::storage::files::directory::load_public_key(directory_key),
    );
    let directory = key.and_then(|key| {
        p.note(
            "signed directory",
            crate::storage::files::directory::load(directory_file, &key, federation),
        )
        .map(|d| (d, key))
    });
    let policies = directory.as_ref().and_then(|(d, key)| {
        p.note(
            "policy bundles",
            crate::storage::files::policy::load_policies(policies, d, key, now_ms)
                .map_err(|e| anyhow::anyhow!("{}: {e}", policies.display())),
        )
        .map(|set| set.bundles().len())
    });
    Common {
        directory: directory.map(|(d, _)| d),
        policies,
    }
}

fn check_broker(path: &Path, now_ms: i64) -> Outcome {
    let cfg: BrokerConfig = config::load(path).map_err(|e| vec![e.to_string()])?;
    let mut p = Problems::default();
    let common = check_common(
        &mut p,
        &cfg.tls,
        None,
        &Role::Broker,
        &cfg.federation,
        &cfg.directory,
        &cfg.directory_key,
        &cfg.policies,
        now_ms,
    );
    let log_key = p.note(
        "log key",
        crate::storage::files::keys::load_signing_key(&cfg.log_key).map_err(anyhow::Error::from),
    );
    if let (Some(key), Some(d)) = (log_key, &common.directory) {
        p.note(
            "log key",
            crate::daemon::broker::log::TransparencyLog::new(key, d)
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("{}: {e}", cfg.log_key.display())),
        );
    }
    data_dir(&mut p, &cfg.data_dir);
    if !p.0.is_empty() {
        return Err(p.0);
    }
    Ok(format!(
        "{}: a valid broker config: federation {}, listening on {}, directory version {}, \
         {} policy bundles, data in {}",
        path.display(),
        cfg.federation,
        cfg.listen,
        common.directory.map_or(0, |d| d.version_info().version),
        common.policies.unwrap_or(0),
        cfg.data_dir.display(),
    ))
}

/// The file a node's start reads: its own, or the seed's while it has none
/// of its own yet.
fn seeded_or_own<'a>(own: &'a Path, seed: Option<&'a std::path::PathBuf>) -> &'a Path {
    match seed {
        Some(seed) if !own.exists() => seed,
        _ => own,
    }
}

fn check_node(path: &Path, now_ms: i64) -> Outcome {
    let cfg: NodeConfig = config::load(path).map_err(|e| vec![e.to_string()])?;
    let mut p = Problems::default();
    let common = check_common(
        &mut p,
        &cfg.tls,
        Some((cfg.country, &cfg.national_ca)),
        &Role::Node(cfg.country),
        &cfg.federation,
        seeded_or_own(&cfg.directory, cfg.seed.as_ref().map(|s| &s.directory)),
        &cfg.directory_key,
        seeded_or_own(&cfg.policies, cfg.seed.as_ref().map(|s| &s.policies)),
        now_ms,
    );
    let signing = p.note(
        "signing key",
        crate::storage::files::keys::load_signing_key(&cfg.keys.signing)
            .map_err(anyhow::Error::from),
    );
    let hpke = p.note(
        "HPKE key",
        crate::storage::files::keys::load_hpke(&cfg.keys.hpke).map_err(anyhow::Error::from),
    );
    if let (Some(signing), Some(hpke), Some(d)) = (&signing, &hpke, &common.directory) {
        match d.node(cfg.country) {
            Some(n)
                if n.signing_key == signing.public_key()
                    && crate::protocol::keys::hpke_public_bytes(
                        &<crate::protocol::keys::HpkeKem as hpke::Kem>::sk_to_pk(hpke),
                    ) == crate::protocol::keys::hpke_public_bytes(&n.hpke_key) => {}
            Some(_) => p.0.push(format!(
                "the directory lists other keys for node {} than {} and {}",
                cfg.country,
                cfg.keys.signing.display(),
                cfg.keys.hpke.display()
            )),
            None => {
                p.0.push(format!("node {} is not in the directory", cfg.country))
            }
        }
    }
    data_dir(&mut p, &cfg.data_dir);
    if !p.0.is_empty() {
        return Err(p.0);
    }
    let brokers = if cfg.brokers.is_empty() {
        cfg.broker.clone().unwrap_or_default()
    } else {
        cfg.brokers.join(", ")
    };
    Ok(format!(
        "{}: a valid node config: node {} of federation {}, listening on {}, broker {}, \
         directory version {}, {} policy bundles, data in {}",
        path.display(),
        cfg.country,
        cfg.federation,
        cfg.listen,
        brokers,
        common.directory.map_or(0, |d| d.version_info().version),
        common.policies.unwrap_or(0),
        cfg.data_dir.display(),
    ))
}

/// The data directory is made at the first start; it may be missing, but
/// must not be something other than a directory.
fn data_dir(p: &mut Problems, dir: &Path) {
    if dir.exists() && !dir.is_dir() {
        p.0.push(format!(
            "data_dir: {} exists and is not a directory",
            dir.display()
        ));
    }
}

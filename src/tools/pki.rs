//! `casebridge pki init`: a complete development federation in one directory.
//!
//! It writes the federation root CA, one national CA per country, TLS
//! certificates for the broker, each node, each agency and an auditor, each
//! node's Ed25519 signing key and X25519 HPKE key, the federation's directory
//! key, the signed directory, and ready-to-run config files. See
//! certs/README.md for the layout and the roles.
//!
//! The tree holds private keys, so it is private as a whole: every
//! directory is created 0700 and every file 0600, whatever the umask, each
//! file written atomically.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use prost::Message as _;
use rcgen::KeyPair;

use super::ca::{Ca, leaf_params, new_ca};
use crate::daemon::config::{
    AgencyProfile, BrokerConfig, Limits, LogFormat, MetricsListen, NodeConfig, NodeKeys,
    NodeLimits, Retention, StorageSettings, TlsFiles,
};
use crate::protocol::directory::Directory;
use crate::protocol::ids::{AgencyId, Country, Role};
use crate::protocol::policy::{agencies_for, default_countries, default_eu_members};
use crate::protocol::proto::v1;

/// What to generate.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub dir: PathBuf,
    pub countries: Vec<Country>,
    /// Broker k (from 0) listens on base + k, node N on base + brokers + N
    /// (with one broker: the broker on base, node N on base + 1 + N). Zero
    /// means "pick at start": configs are written with port 0 and the
    /// caller fills them in (the demo does this).
    pub base_port: u16,
    pub federation: String,
    pub auditors: Vec<String>,
    /// How many broker endpoints: the broker certificate names each
    /// (`broker-1` .. `broker-N`, besides localhost and 127.0.0.1), a config
    /// is written for each, and every node config lists them all.
    pub brokers: usize,
    /// The countries the directory lists as EU members; every other one is
    /// a non-member. The directory is the only place a regime is stated.
    pub eu_members: Vec<Country>,
}

impl InitOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        InitOptions {
            dir: dir.into(),
            countries: default_countries(),
            base_port: 7400,
            federation: "casebridge.test".into(),
            auditors: vec!["auditor".into()],
            brokers: 1,
            eu_members: default_eu_members(),
        }
    }
}

/// Most broker endpoints `pki init` writes.
pub const MAX_BROKERS: usize = crate::daemon::config::MAX_BROKERS;

/// Paths of what was written.
#[derive(Debug, Clone)]
pub struct Federation {
    pub dir: PathBuf,
    /// The first broker's config (`broker.toml`).
    pub broker_config: PathBuf,
    /// Every broker's config, the first one first (`broker.toml`,
    /// `broker-2.toml`, ...).
    pub broker_configs: Vec<PathBuf>,
    pub node_configs: Vec<(Country, PathBuf)>,
    pub agency_profiles: Vec<(AgencyId, PathBuf)>,
    pub auditor_profiles: Vec<(String, PathBuf)>,
}

impl Federation {
    pub fn node_config(&self, cc: Country) -> Option<&Path> {
        self.node_configs
            .iter()
            .find(|(c, _)| *c == cc)
            .map(|(_, p)| p.as_path())
    }
    pub fn agency_profile(&self, id: &AgencyId) -> Option<&Path> {
        self.agency_profiles
            .iter()
            .find(|(a, _)| a == id)
            .map(|(_, p)| p.as_path())
    }
}

/// Issues a leaf certificate for `role` and writes `<stem>.crt` (leaf, then
/// issuer if not the root) and `<stem>.key` (0600).
#[allow(clippy::too_many_arguments)]
fn issue_leaf(
    dir: &Path,
    stem: &str,
    role: &Role,
    fed: &str,
    ca: &Ca,
    chain_ca: bool,
    server: bool,
    hosts: &[String],
) -> anyhow::Result<()> {
    let p = if server {
        let mut dns = vec!["localhost".to_string()];
        dns.extend(hosts.iter().cloned());
        leaf_params(
            role,
            fed,
            365,
            &dns,
            &[std::net::Ipv4Addr::LOCALHOST.into()],
        )?
    } else {
        leaf_params(role, fed, 365, &[], &[])?
    };
    let key = KeyPair::generate()?;
    let cert = p.signed_by(&key, &ca.issuer)?;
    let mut pem = cert.pem();
    if chain_ca {
        pem.push_str(&ca.cert_pem);
    }
    write_public(&dir.join(format!("{stem}.crt")), pem.as_bytes())?;
    crate::storage::files::keys::write_secret(
        &dir.join(format!("{stem}.key")),
        key.serialize_pem().as_bytes(),
    )?;
    Ok(())
}

/// Writes a file that is not secret in itself (a certificate, a config);
/// still 0600, like everything in the tree.
fn write_public(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::storage::write_private(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

fn mkdir(path: &Path) -> anyhow::Result<()> {
    crate::storage::create_private_dir(path).with_context(|| format!("creating {}", path.display()))
}

fn write_toml<T: serde::Serialize>(path: &Path, header: &str, value: &T) -> anyhow::Result<()> {
    let body = toml::to_string_pretty(value)?;
    write_public(path, format!("{header}\n{body}").as_bytes())
}

fn rel(p: &str) -> PathBuf {
    PathBuf::from(p)
}

/// Writes a complete federation into `opts.dir`. Refuses to overwrite one.
pub fn init(opts: &InitOptions) -> anyhow::Result<Federation> {
    let dir = &opts.dir;
    let fed = opts.federation.as_str();
    if dir.join("broker.toml").exists() {
        bail!(
            "{} already holds a federation (broker.toml exists); choose another directory",
            dir.display()
        );
    }
    if opts.countries.is_empty() {
        bail!("no countries given");
    }
    if !(1..=MAX_BROKERS).contains(&opts.brokers) {
        bail!(
            "--brokers {}: a federation has between 1 and {MAX_BROKERS} broker endpoints",
            opts.brokers
        );
    }
    let broker_hosts: Vec<String> = (1..=opts.brokers).map(|k| format!("broker-{k}")).collect();
    let mut countries = opts.countries.clone();
    countries.sort();
    countries.dedup();
    let port = |i: usize| -> anyhow::Result<u16> {
        if opts.base_port == 0 {
            return Ok(0);
        }
        u16::try_from(usize::from(opts.base_port) + i)
            .context("--base-port too high for this many nodes")
    };
    // Each daemon's metrics on loopback, 2064 above its gRPC port (the
    // first broker's 7400 → 9464 and the first node's 7401 → 9465, the
    // defaults), so that a development federation on one host has no two
    // on one port; any free port when the federation's are.
    let metrics = |port: u16| -> anyhow::Result<MetricsListen> {
        let port = if port == 0 {
            0
        } else {
            port.checked_add(2064)
                .context("--base-port too high for the metrics ports 2064 above it")?
        };
        Ok(MetricsListen::At(std::net::SocketAddr::from((
            std::net::Ipv4Addr::LOCALHOST,
            port,
        ))))
    };

    if !dir.exists() {
        mkdir(dir)?;
    }
    for sub in ["ca", "broker", "nodes", "agencies", "auditors", "policies"] {
        mkdir(&dir.join(sub))?;
    }
    let root = new_ca(&format!("{fed} federation root CA"), fed, None, 3650)?;
    write_public(&dir.join("ca/root.crt"), root.cert_pem.as_bytes())?;
    crate::storage::files::keys::write_secret(
        &dir.join("ca/root.key"),
        root.issuer.key().serialize_pem().as_bytes(),
    )?;

    let dir_key = super::ca::write_signing_pair(&dir.join("ca"), "directory")?;

    issue_leaf(
        &dir.join("broker"),
        "broker",
        &Role::Broker,
        fed,
        &root,
        false,
        true,
        &broker_hosts,
    )?;
    let log_key = super::ca::write_signing_pair(&dir.join("broker"), "log")?;

    let now = crate::daemon::clock::now_ms();
    let mut directory = v1::Directory {
        version: 1,
        federation: fed.to_string(),
        issued_at_ms: now,
        log: Some(v1::TransparencyLog {
            origin: format!("{fed}/audit-log"),
            public_key: log_key.public_key().to_vec(),
        }),
        ..Default::default()
    };
    let broker_addrs = (0..opts.brokers)
        .map(|k| Ok(format!("127.0.0.1:{}", port(k)?)))
        .collect::<anyhow::Result<Vec<String>>>()?;
    let broker_addr = broker_addrs[0].clone();
    let mut node_configs = Vec::new();
    let mut agency_profiles = Vec::new();
    for (i, cc) in countries.iter().enumerate() {
        let national = new_ca(&format!("{cc} national CA"), fed, Some(&root), 1825)?;
        let ca_dir = dir.join("ca").join(cc.as_str());
        mkdir(&ca_dir)?;
        write_public(&ca_dir.join("ca.crt"), national.cert_pem.as_bytes())?;
        crate::storage::files::keys::write_secret(
            &ca_dir.join("ca.key"),
            national.issuer.key().serialize_pem().as_bytes(),
        )?;

        let node_dir = dir.join("nodes").join(cc.as_str());
        mkdir(&node_dir)?;
        issue_leaf(
            &node_dir,
            "node",
            &Role::Node(*cc),
            fed,
            &root,
            false,
            true,
            &[],
        )?;
        let (sign_pub, hpke_pub) = super::ca::write_node_keys(&node_dir)?;
        directory.nodes.push(v1::NodeEntry {
            country: cc.to_string(),
            signing_key: sign_pub.to_vec(),
            hpke_key: hpke_pub.to_vec(),
            not_before_ms: now - 3_600_000,
            not_after_ms: now + 365 * 86_400_000,
            revoked: false,
            national_ca_sha256: crate::protocol::envelope::sha256(national.cert_der.as_ref())
                .to_vec(),
            previous: Vec::new(),
            regime: if opts.eu_members.contains(cc) {
                v1::LegalRegime::EuMember
            } else {
                v1::LegalRegime::NonMember
            } as i32,
        });

        let node_addr = format!("127.0.0.1:{}", port(opts.brokers + i)?);
        let cfg = NodeConfig {
            federation: fed.to_string(),
            country: *cc,
            listen: node_addr.parse()?,
            broker: (opts.brokers == 1).then(|| broker_addr.clone()),
            brokers: if opts.brokers == 1 {
                Vec::new()
            } else {
                broker_addrs.clone()
            },
            data_dir: rel(&format!("../data/node-{cc}")),
            directory: rel("../directory.bin"),
            directory_key: rel("../ca/directory.pub"),
            tls: TlsFiles {
                cert: rel(&format!("{cc}/node.crt")),
                key: rel(&format!("{cc}/node.key")),
                root: rel("../ca/root.crt"),
            },
            national_ca: rel(&format!("../ca/{cc}/ca.crt")),
            keys: NodeKeys {
                signing: rel(&format!("{cc}/signing.key")),
                hpke: rel(&format!("{cc}/hpke.key")),
                next: None,
                previous: Vec::new(),
                switch_delay_secs: 180,
            },
            policies: rel("../policies"),
            seed: None,
            policy_reload_secs: 5,
            directory_refresh_secs: 60,
            submit_window: 32,
            retention: Retention::default(),
            limits: NodeLimits::default(),
            storage: StorageSettings::default(),
            shutdown_grace_secs: 10,
            log: LogFormat::Human,
            metrics_listen: metrics(port(opts.brokers + i)?)?,
            metrics_allow_remote: false,
        };
        let cfg_path = dir.join("nodes").join(format!("{cc}.toml"));
        write_toml(
            &cfg_path,
            &format!(
                "# casebridge node for {cc}, written by `casebridge pki init`.\n# Paths are relative to this file. Every key is described in deploy/node.example.toml."
            ),
            &cfg,
        )?;
        node_configs.push((*cc, cfg_path));

        for (name, kind, display) in agencies_for(*cc) {
            let id = AgencyId::new(*cc, name)?;
            let a_dir = dir.join("agencies").join(cc.as_str()).join(name);
            mkdir(&a_dir)?;
            issue_leaf(
                &a_dir,
                "agency",
                &Role::Agency(id.clone()),
                fed,
                &national,
                true,
                false,
                &[],
            )?;
            let profile = AgencyProfile {
                federation: fed.to_string(),
                agency: id.clone(),
                node: node_addr.clone(),
                tls: TlsFiles {
                    cert: rel("agency.crt"),
                    key: rel("agency.key"),
                    root: rel("../../../ca/root.crt"),
                },
            };
            let p = a_dir.join("profile.toml");
            write_toml(
                &p,
                &format!(
                    "# Agency profile for {id}: pass it to `casebridge send|inbox|status --profile`."
                ),
                &profile,
            )?;
            agency_profiles.push((id.clone(), p));
            directory.agencies.push(v1::AgencyEntry {
                id: id.to_string(),
                kind: kind as i32,
                display_name: format!("{display} ({cc})"),
                revoked: false,
            });
        }
    }

    let mut auditor_profiles = Vec::new();
    for name in &opts.auditors {
        let role = Role::Auditor(name.clone());
        if Role::from_spiffe_uri(&role.spiffe_uri(fed), fed).is_err() {
            bail!(
                "auditor name {}: use lower-case letters, digits and '-'",
                crate::protocol::bounds::quoted(name)
            );
        }
        let a_dir = dir.join("auditors").join(name);
        mkdir(&a_dir)?;
        issue_leaf(&a_dir, "auditor", &role, fed, &root, false, false, &[])?;
        let profile = AuditorProfile {
            federation: fed.to_string(),
            auditor: name.clone(),
            broker: broker_addr.clone(),
            directory_key: rel("../../ca/directory.pub"),
            state_dir: rel("state"),
            tls: TlsFiles {
                cert: rel("auditor.crt"),
                key: rel("auditor.key"),
                root: rel("../../ca/root.crt"),
            },
        };
        let p = a_dir.join("profile.toml");
        write_toml(
            &p,
            &format!("# Auditor profile for {name}: pass it to `casebridge audit ... --profile`."),
            &profile,
        )?;
        auditor_profiles.push((name.clone(), p));
        directory.auditors.push(v1::AuditorEntry {
            name: name.clone(),
            revoked: false,
        });
    }

    let signed = Directory::sign(&directory, &dir_key);
    write_public(&dir.join("directory.bin"), &signed.encode_to_vec())?;
    let verified = Directory::verify(&signed, &dir_key.public_key(), fed)
        .context("the directory just written does not verify")?;

    // The example policy bundles, each signed by its owner: the framework
    // with the directory key, each agency with its own key.
    crate::storage::files::policy::install_examples(
        &dir.join("policies"),
        dir,
        &crate::protocol::policy::agencies_in(&verified),
    )
    .context("installing the example policy bundles")?;
    // Bundles are written as `policy sign` writes them anywhere (under the
    // umask); inside the private `policies/` they are made private too.
    crate::storage::restrict_tree(&dir.join("policies"))
        .with_context(|| format!("restricting {}", dir.join("policies").display()))?;

    let mut broker = BrokerConfig {
        federation: fed.to_string(),
        listen: broker_addr.parse()?,
        data_dir: rel("data/broker"),
        directory: rel("directory.bin"),
        directory_key: rel("ca/directory.pub"),
        tls: TlsFiles {
            cert: rel("broker/broker.crt"),
            key: rel("broker/broker.key"),
            root: rel("ca/root.crt"),
        },
        log_key: rel("broker/log.key"),
        policies: rel("policies"),
        policy_reload_secs: 5,
        directory_refresh_secs: 60,
        limits: Limits::default(),
        storage: StorageSettings::default(),
        shutdown_grace_secs: 10,
        log: LogFormat::Human,
        metrics_listen: metrics(port(0)?)?,
        metrics_allow_remote: false,
    };
    let mut broker_configs = Vec::new();
    for (k, addr) in broker_addrs.iter().enumerate() {
        let (path, header) = if k == 0 {
            (
                dir.join("broker.toml"),
                "# casebridge broker, written by `casebridge pki init`.".to_string(),
            )
        } else {
            (
                dir.join(format!("broker-{}.toml", k + 1)),
                format!(
                    "# casebridge broker endpoint {}, written by `casebridge pki init`.\n\
                     # It shares data/broker with broker.toml: with the embedded store only one of\n\
                     # them runs at a time, the other standing by on its own port.",
                    k + 1
                ),
            )
        };
        broker.listen = addr.parse()?;
        broker.metrics_listen = metrics(port(k)?)?;
        write_toml(
            &path,
            &format!(
                "{header}\n# Paths are relative to this file. Every key is described in deploy/broker.example.toml."
            ),
            &broker,
        )?;
        broker_configs.push(path);
    }
    Ok(Federation {
        dir: dir.clone(),
        broker_config: broker_configs[0].clone(),
        broker_configs,
        node_configs,
        agency_profiles,
        auditor_profiles,
    })
}

/// `auditors/<name>/profile.toml`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditorProfile {
    pub federation: String,
    pub auditor: String,
    /// The broker's address, "host:port".
    pub broker: String,
    pub directory_key: PathBuf,
    /// Where this auditor keeps the last checkpoint it verified.
    pub state_dir: PathBuf,
    pub tls: TlsFiles,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_metrics_address_is_refused_when_the_config_is_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let fed = init(&{
            let mut o = InitOptions::new(dir.path().join("fed"));
            o.countries = vec!["HR".parse().unwrap()];
            o.base_port = 0;
            o
        })
        .unwrap();
        let text = std::fs::read_to_string(&fed.broker_config).unwrap();
        let loaded: BrokerConfig = crate::daemon::config::load(&fed.broker_config).unwrap();
        assert_eq!(
            loaded.metrics_listen,
            MetricsListen::At("127.0.0.1:0".parse().unwrap())
        );
        let mut table: toml::Table = toml::from_str(&text).unwrap();
        table.insert("metrics_listen".into(), "0.0.0.0:9464".into());
        std::fs::write(&fed.broker_config, toml::to_string(&table).unwrap()).unwrap();
        let e = crate::daemon::config::load::<BrokerConfig>(&fed.broker_config)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("key `metrics_listen`: 0.0.0.0:9464 is not a loopback address"),
            "{e}"
        );
        table.insert("metrics_allow_remote".into(), true.into());
        std::fs::write(&fed.broker_config, toml::to_string(&table).unwrap()).unwrap();
        assert!(crate::daemon::config::load::<BrokerConfig>(&fed.broker_config).is_ok());
    }

    #[test]
    fn writes_a_loadable_federation_with_private_keys_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = InitOptions::new(tmp.path().join("fed"));
        opts.countries = vec!["HR".parse().unwrap(), "BA".parse().unwrap()];
        let fed = init(&opts).unwrap();
        let broker: BrokerConfig = crate::daemon::config::load(&fed.broker_config).unwrap();
        let key = crate::storage::files::directory::load_public_key(&broker.directory_key).unwrap();
        let dir =
            crate::storage::files::directory::load(&broker.directory, &key, &broker.federation)
                .unwrap();
        assert!(dir.agency(&"BA/missing-persons".parse().unwrap()).is_some());
        assert!(dir.agency(&"HR/prosecutor".parse().unwrap()).is_some());
        for (_, p) in &fed.node_configs {
            let n: NodeConfig = crate::daemon::config::load(p).unwrap();
            crate::storage::files::keys::load_signing_key(&n.keys.signing).unwrap();
            crate::storage::files::keys::load_hpke(&n.keys.hpke).unwrap();
        }
        for (_, p) in &fed.agency_profiles {
            let a: AgencyProfile = crate::daemon::config::load(p).unwrap();
            crate::daemon::tls::Identity::load(&a.tls.cert, &a.tls.key).unwrap();
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            let (mut secrets, mut files, mut dirs) = (0, 0, 0);
            assert_eq!(mode(&fed.dir), 0o700);
            let mut stack = vec![fed.dir.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(d).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        dirs += 1;
                        assert_eq!(mode(&p), 0o700, "{}", p.display());
                        stack.push(p);
                    } else {
                        files += 1;
                        secrets += usize::from(p.extension().is_some_and(|x| x == "key"));
                        assert_eq!(mode(&p), 0o600, "{}", p.display());
                    }
                }
            }
            assert!(secrets > 10 && files > secrets && dirs > 10);
        }
        assert!(init(&opts).is_err(), "must not overwrite a federation");
    }

    #[test]
    fn several_broker_endpoints_are_named_in_the_certificate_and_every_node_config() {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = InitOptions::new(tmp.path().join("fed"));
        opts.countries = vec!["HR".parse().unwrap(), "BA".parse().unwrap()];
        opts.brokers = 3;
        let fed = init(&opts).unwrap();
        let listens: Vec<u16> = fed
            .broker_configs
            .iter()
            .map(|p| {
                crate::daemon::config::load::<BrokerConfig>(p)
                    .unwrap()
                    .listen
                    .port()
            })
            .collect();
        assert_eq!(listens, [7400, 7401, 7402]);
        let addrs: Vec<String> = (7400..7403).map(|p| format!("127.0.0.1:{p}")).collect();
        for (i, (_, p)) in fed.node_configs.iter().enumerate() {
            let n: NodeConfig = crate::daemon::config::load(p).unwrap();
            assert_eq!(n.broker_addresses(), addrs);
            assert_eq!(n.listen.port(), 7403 + i as u16);
            assert_eq!(n.metrics_listen.addr().unwrap().port(), 9467 + i as u16);
        }
        let metrics: Vec<u16> = fed
            .broker_configs
            .iter()
            .map(|p| {
                let b = crate::daemon::config::load::<BrokerConfig>(p).unwrap();
                b.metrics_listen.addr().unwrap().port()
            })
            .collect();
        assert_eq!(metrics, [9464, 9465, 9466]);
        let cert = crate::daemon::tls::load_certs(&fed.dir.join("broker/broker.crt")).unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(cert[0].as_ref()).unwrap();
        let names: Vec<String> = x509
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(names, ["localhost", "broker-1", "broker-2", "broker-3"]);

        opts.dir = tmp.path().join("none");
        opts.brokers = 0;
        assert!(init(&opts).is_err(), "a federation has a broker");
    }
}

//! Configuration files: the broker's, a node's, and an agency's profile.
//!
//! Every setting has a documented default (see deploy/*.example.toml).
//! Relative paths are resolved against the directory of the file that names
//! them. An invalid file is refused, naming the file, the key and the reason,
//! before any port is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::ids::{AgencyId, Country};

mod storage;
#[cfg(test)]
use storage::MAX_CACHE_MIB;
use storage::check_storage;
pub use storage::{PostgresSettings, StorageBackend, StorageSettings};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: String,
        key: &'static str,
        reason: String,
    },
}

/// Certificate and key of a TLS endpoint, and the federation root it trusts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key, mode 0600.
    pub key: PathBuf,
    /// The federation root CA certificate.
    pub root: PathBuf,
}

fn default_federation() -> String {
    "casebridge.test".into()
}
fn default_max_envelope() -> usize {
    crate::protocol::bounds::DEFAULT_MAX_ENVELOPE_BYTES
}
fn default_max_recipients() -> usize {
    crate::protocol::bounds::DEFAULT_MAX_RECIPIENTS
}
fn default_replay_window() -> u64 {
    7 * 24 * 3600
}
fn default_skew() -> u64 {
    300
}
fn default_log() -> LogFormat {
    LogFormat::Human
}
fn default_directory_refresh() -> u64 {
    60
}
fn default_reload() -> u64 {
    5
}

fn default_submit_window() -> usize {
    32
}

fn default_grace() -> u64 {
    10
}

/// Where a daemon serves its Prometheus metrics (`metrics_listen`): an
/// address, or "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsListen {
    Off,
    At(SocketAddr),
}

impl MetricsListen {
    /// The address to bind, None when off.
    pub fn addr(self) -> Option<SocketAddr> {
        match self {
            MetricsListen::Off => None,
            MetricsListen::At(a) => Some(a),
        }
    }
}

impl std::fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsListen::Off => f.write_str("off"),
            MetricsListen::At(a) => a.fmt(f),
        }
    }
}

impl std::str::FromStr for MetricsListen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(MetricsListen::Off);
        }
        s.parse().map(MetricsListen::At).map_err(|_| {
            format!(
                "\"{}\" is neither \"off\" nor an address of the form ip:port (such as 127.0.0.1:9464)",
                crate::protocol::bounds::clip(s, 64)
            )
        })
    }
}

impl<'de> Deserialize<'de> for MetricsListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for MetricsListen {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// The broker's metrics address unless its config says otherwise.
pub const BROKER_METRICS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);
/// A node's metrics address unless its config says otherwise.
pub const NODE_METRICS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9465);

fn default_broker_metrics() -> MetricsListen {
    MetricsListen::At(BROKER_METRICS)
}
fn default_node_metrics() -> MetricsListen {
    MetricsListen::At(NODE_METRICS)
}

/// The metrics endpoint has no TLS and no authentication: an address other
/// than loopback serves it to the network, which the config must say it
/// means (`metrics_allow_remote = true`).
fn check_metrics(file: &str, listen: MetricsListen, allow_remote: bool) -> Result<(), ConfigError> {
    match listen {
        MetricsListen::At(a) if !a.ip().is_loopback() && !allow_remote => {
            Err(ConfigError::Invalid {
                file: file.into(),
                key: "metrics_listen",
                reason: format!(
                    "{a} is not a loopback address; the metrics endpoint has neither TLS nor \
                     authentication, so serving it beyond this host takes \
                     `metrics_allow_remote = true` as well"
                ),
            })
        }
        _ => Ok(()),
    }
}

/// Most brokers a node config may list.
pub const MAX_BROKERS: usize = 16;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// Limits the broker enforces on every submission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest envelope accepted, in bytes (header + ciphertext). Default 16 MiB.
    #[serde(default = "default_max_envelope")]
    pub max_envelope_bytes: usize,
    /// How far back an envelope's creation time may lie, in seconds; envelope
    /// ids are remembered this long to refuse replays. Default 7 days.
    #[serde(default = "default_replay_window")]
    pub replay_window_secs: u64,
    /// How far ahead of the broker's clock a creation time may lie. Default 300 s.
    #[serde(default = "default_skew")]
    pub clock_skew_secs: u64,
    /// Most recipients of one envelope (and third agencies of one
    /// permission). Default 64.
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_envelope_bytes: default_max_envelope(),
            replay_window_secs: default_replay_window(),
            clock_skew_secs: default_skew(),
            max_recipients: default_max_recipients(),
        }
    }
}

impl Limits {
    /// The bounds headers are checked against.
    pub fn bounds(&self) -> crate::protocol::bounds::Bounds {
        crate::protocol::bounds::Bounds {
            max_recipients: self.max_recipients,
        }
    }
}

/// Limits a node applies to what its agencies ask it to send and to what
/// it receives. They should equal the broker's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeLimits {
    /// The broker's envelope limit, in bytes (header + signature +
    /// ciphertext): a record whose envelope would be larger is refused at
    /// Send, before it is sealed. Default 16 MiB.
    #[serde(default = "default_max_envelope")]
    pub max_envelope_bytes: usize,
    /// Most recipients of one envelope (and third agencies of one
    /// permission), for sending and receiving. Default 64.
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
}

impl Default for NodeLimits {
    fn default() -> Self {
        NodeLimits {
            max_envelope_bytes: default_max_envelope(),
            max_recipients: default_max_recipients(),
        }
    }
}

impl NodeLimits {
    /// The bounds headers are checked against.
    pub fn bounds(&self) -> crate::protocol::bounds::Bounds {
        crate::protocol::bounds::Bounds {
            max_recipients: self.max_recipients,
        }
    }
}

/// The `[limits]` both daemons share: the envelope size and recipients.
fn check_limits(
    file: &str,
    max_envelope_bytes: usize,
    max_recipients: usize,
) -> Result<(), ConfigError> {
    check_envelope_limit(file, "limits.max_envelope_bytes", max_envelope_bytes)?;
    check_recipient_limit(file, "limits.max_recipients", max_recipients)
}

fn check_envelope_limit(file: &str, key: &'static str, max: usize) -> Result<(), ConfigError> {
    if !(1024..=1 << 30).contains(&max) {
        return Err(ConfigError::Invalid {
            file: file.into(),
            key,
            reason: "must be between 1 KiB and 1 GiB".into(),
        });
    }
    Ok(())
}

fn check_recipient_limit(file: &str, key: &'static str, max: usize) -> Result<(), ConfigError> {
    let ceiling = crate::protocol::bounds::MAX_RECIPIENTS_CEILING;
    if !(1..=ceiling).contains(&max) {
        return Err(ConfigError::Invalid {
            file: file.into(),
            key,
            reason: format!("must be between 1 and {ceiling}"),
        });
    }
    Ok(())
}

/// `broker.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// SPIFFE trust domain of the federation. Default "casebridge.test".
    #[serde(default = "default_federation")]
    pub federation: String,
    /// Address of the exchange API.
    pub listen: SocketAddr,
    /// Where the broker keeps its queue and audit log.
    pub data_dir: PathBuf,
    /// The signed directory file.
    pub directory: PathBuf,
    /// The pinned directory public key (hex).
    pub directory_key: PathBuf,
    pub tls: TlsFiles,
    /// The Ed25519 key (PKCS#8 PEM, mode 0600) that signs the audit log's
    /// checkpoints; the directory pins its public half.
    pub log_key: PathBuf,
    /// The policy set: `framework/` and `agencies/<CC>/<name>/` bundles.
    pub policies: PathBuf,
    /// How often to look for changed policy bundles, in seconds. Default 5.
    #[serde(default = "default_reload")]
    pub policy_reload_secs: u64,
    /// How often to read the directory file again, in seconds: a newer
    /// signed directory found there is put in force (and served to the
    /// nodes), an older one refused. Default 60.
    #[serde(default = "default_directory_refresh")]
    pub directory_refresh_secs: u64,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub storage: StorageSettings,
    /// How long the broker may take to stop once asked (SIGTERM), in
    /// seconds: it stops accepting at once, ends delivery streams, lets
    /// calls in flight finish, closes what is still open when the time is
    /// nearly up and signs a last checkpoint. Default 10.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
    /// "human" or "json". Default "human".
    #[serde(default = "default_log")]
    pub log: LogFormat,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP), or
    /// "off". Default "127.0.0.1:9464".
    #[serde(default = "default_broker_metrics")]
    pub metrics_listen: MetricsListen,
    /// Whether `metrics_listen` may be an address other than loopback.
    /// Default false.
    #[serde(default)]
    pub metrics_allow_remote: bool,
}

fn default_retention_days() -> u32 {
    30
}
fn default_max_retention_days() -> u32 {
    365
}

/// How long records are kept at a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Expiry given to a record whose sender sets none. Default 30 days.
    #[serde(default = "default_retention_days")]
    pub default_days: u32,
    /// Longest expiry this node lets its agencies set. Default 365 days.
    #[serde(default = "default_max_retention_days")]
    pub max_days: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            default_days: default_retention_days(),
            max_days: default_max_retention_days(),
        }
    }
}

/// Where a node's start takes its directory and policy set from when its
/// own are missing (or, for the directory, older).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSeed {
    /// A signed directory file.
    pub directory: PathBuf,
    /// A policy set directory.
    pub policies: PathBuf,
}

/// The node's application keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeKeys {
    /// Ed25519 PKCS#8 signing key, mode 0600.
    pub signing: PathBuf,
    /// X25519 HPKE private key (hex), mode 0600.
    pub hpke: PathBuf,
    /// The next pair, prepared for a rotation (`casebridge node new-keys`):
    /// the node signs with it once the directory lists it as the node's
    /// current pair and `switch_delay_secs` have passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<KeyPairFiles>,
    /// Retired pairs, kept to open and answer records sealed to them before
    /// a rotation. At most 4.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<KeyPairFiles>,
    /// How long after it first sees a directory that lists its next pair as
    /// current the node waits before signing with it, so that the other
    /// nodes have fetched that directory too (default 180).
    #[serde(default = "default_switch_delay")]
    pub switch_delay_secs: u64,
}

/// The key files of one signing and HPKE pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPairFiles {
    /// Ed25519 PKCS#8 signing key, mode 0600.
    pub signing: PathBuf,
    /// X25519 HPKE private key (hex), mode 0600.
    pub hpke: PathBuf,
}

fn default_switch_delay() -> u64 {
    180
}

/// `nodes/<CC>.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    #[serde(default = "default_federation")]
    pub federation: String,
    /// The country this node serves.
    pub country: Country,
    /// Address of the agency API.
    pub listen: SocketAddr,
    /// The broker's exchange API, "host:port"; the host must be in the
    /// broker's certificate. The form for a single broker: set this or
    /// `brokers`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// The brokers' exchange APIs, "host:port" each, in order of
    /// preference: the node uses one at a time and moves to the next when
    /// it fails (see [`crate::daemon::node::uplink::Uplink`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub brokers: Vec<String>,
    pub data_dir: PathBuf,
    pub directory: PathBuf,
    pub directory_key: PathBuf,
    pub tls: TlsFiles,
    /// This country's national CA certificate: only agency certificates it
    /// issued are accepted on the agency API.
    pub national_ca: PathBuf,
    pub keys: NodeKeys,
    /// The federation's policy set, for checking before anything leaves
    /// the country (the broker decides with authority).
    pub policies: PathBuf,
    /// Read-only copies of the directory and the policy set that seed
    /// `directory` and `policies` at start (see
    /// [`crate::daemon::node::seed`]), for hosts that deliver them
    /// read-only. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<NodeSeed>,
    /// How often to look for changed policy bundles, in seconds. Default 5.
    #[serde(default = "default_reload")]
    pub policy_reload_secs: u64,
    /// How often to fetch the directory and the policy set from the broker,
    /// in seconds. A newer directory that verifies against the pinned key is
    /// saved to `directory` and put in force, an older one refused; a new
    /// policy set is written into `policies` and loaded. A revocation takes
    /// effect at the node within this interval of reaching the broker.
    /// Default 60.
    #[serde(default = "default_directory_refresh")]
    pub directory_refresh_secs: u64,
    /// Most envelopes submitted to the broker at once, waiting for their
    /// answers. Default 32; 1 submits one at a time.
    #[serde(default = "default_submit_window")]
    pub submit_window: usize,
    #[serde(default)]
    pub retention: Retention,
    #[serde(default)]
    pub limits: NodeLimits,
    #[serde(default)]
    pub storage: StorageSettings,
    /// How long the node may take to stop once asked (SIGTERM), in
    /// seconds. Default 10.
    #[serde(default = "default_grace")]
    pub shutdown_grace_secs: u64,
    #[serde(default = "default_log")]
    pub log: LogFormat,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP), or
    /// "off". Default "127.0.0.1:9465".
    #[serde(default = "default_node_metrics")]
    pub metrics_listen: MetricsListen,
    /// Whether `metrics_listen` may be an address other than loopback.
    /// Default false.
    #[serde(default)]
    pub metrics_allow_remote: bool,
}

/// `agencies/<CC>/<agency>/profile.toml`: what an agency's systems and the
/// command line need to reach their node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyProfile {
    #[serde(default = "default_federation")]
    pub federation: String,
    pub agency: AgencyId,
    /// The node's agency API, "host:port".
    pub node: String,
    pub tls: TlsFiles,
}

impl<'de> Deserialize<'de> for Country {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
impl Serialize for Country {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
impl<'de> Deserialize<'de> for AgencyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
impl Serialize for AgencyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Reads and parses a TOML file, then resolves its relative paths.
pub fn load<T: serde::de::DeserializeOwned + Resolve>(path: &Path) -> Result<T, ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    let mut value: T = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        file: file.clone(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    value.resolve(base);
    value.validate(&file)?;
    Ok(value)
}

/// Resolves relative paths against a base directory and checks the values.
pub trait Resolve {
    fn resolve(&mut self, base: &Path);
    fn validate(&self, _file: &str) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// Makes a relative path in a config file relative to the file's
/// directory `base`; an absolute path stays as it is.
pub fn rebase(p: &mut PathBuf, base: &Path) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

impl TlsFiles {
    fn resolve(&mut self, base: &Path) {
        rebase(&mut self.cert, base);
        rebase(&mut self.key, base);
        rebase(&mut self.root, base);
    }
}

fn check_files(file: &str, files: &[(&'static str, &Path)]) -> Result<(), ConfigError> {
    for (key, p) in files {
        if !p.is_file() {
            return Err(ConfigError::Invalid {
                file: file.to_string(),
                key,
                reason: format!("{} does not exist or is not a file", p.display()),
            });
        }
    }
    Ok(())
}

fn check_dir(file: &str, key: &'static str, p: &Path) -> Result<(), ConfigError> {
    if p.is_dir() {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            file: file.to_string(),
            key,
            reason: format!("{} is not a directory", p.display()),
        })
    }
}

fn check_federation(file: &str, fed: &str) -> Result<(), ConfigError> {
    let ok = !fed.is_empty()
        && fed.len() <= 253
        && fed
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            file: file.into(),
            key: "federation",
            reason: format!(
                "{} is not a valid trust domain (lower-case letters, digits, '.', '-')",
                crate::protocol::bounds::quoted(fed)
            ),
        })
    }
}

fn check_host_port(file: &str, key: &'static str, addr: &str) -> Result<(), ConfigError> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(ConfigError::Invalid {
            file: file.into(),
            key,
            reason: format!("\"{addr}\" is not an address of the form host:port"),
        }),
    }
}

/// Longest `shutdown_grace_secs` accepted.
const MAX_GRACE_SECS: u64 = 3600;

fn check_grace(file: &str, secs: u64) -> Result<(), ConfigError> {
    if !(1..=MAX_GRACE_SECS).contains(&secs) {
        return Err(ConfigError::Invalid {
            file: file.into(),
            key: "shutdown_grace_secs",
            reason: format!("must be between 1 and {MAX_GRACE_SECS} seconds"),
        });
    }
    Ok(())
}

/// A node's broker addresses: `broker` (one) or `brokers` (a list), never
/// both; each host:port, none twice.
fn check_brokers(file: &str, broker: Option<&str>, brokers: &[String]) -> Result<(), ConfigError> {
    let invalid = |key, reason: String| ConfigError::Invalid {
        file: file.into(),
        key,
        reason,
    };
    match (broker, brokers.is_empty()) {
        (Some(_), false) => {
            return Err(invalid(
                "brokers",
                "is set together with `broker`; set one of them: `broker` for a single broker \
                 or `brokers` for a list"
                    .into(),
            ));
        }
        (Some(b), true) => return check_host_port(file, "broker", b),
        (None, true) => {
            return Err(invalid(
                "broker",
                "is missing; name the broker's exchange API as `broker = \"host:port\"` or \
                 several as `brokers = [\"host:port\", ...]`"
                    .into(),
            ));
        }
        (None, false) => {}
    }
    if brokers.len() > MAX_BROKERS {
        return Err(invalid(
            "brokers",
            format!(
                "lists {} brokers; at most {MAX_BROKERS} are allowed",
                brokers.len()
            ),
        ));
    }
    for (i, b) in brokers.iter().enumerate() {
        check_host_port(file, "brokers", b)?;
        if brokers[..i].contains(b) {
            return Err(invalid("brokers", format!("lists \"{b}\" twice")));
        }
    }
    Ok(())
}

impl NodeConfig {
    /// The broker addresses in order of preference, whichever key named them.
    pub fn broker_addresses(&self) -> Vec<String> {
        match &self.broker {
            Some(b) => vec![b.clone()],
            None => self.brokers.clone(),
        }
    }
}

impl Resolve for BrokerConfig {
    fn resolve(&mut self, base: &Path) {
        rebase(&mut self.data_dir, base);
        rebase(&mut self.directory, base);
        rebase(&mut self.directory_key, base);
        rebase(&mut self.policies, base);
        rebase(&mut self.log_key, base);
        self.tls.resolve(base);
        self.storage.resolve(base);
    }
    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        check_federation(file, &self.federation)?;
        check_dir(file, "policies", &self.policies)?;
        check_files(
            file,
            &[
                ("directory", &self.directory),
                ("log_key", &self.log_key),
                ("directory_key", &self.directory_key),
                ("tls.cert", &self.tls.cert),
                ("tls.key", &self.tls.key),
                ("tls.root", &self.tls.root),
            ],
        )?;
        check_limits(
            file,
            self.limits.max_envelope_bytes,
            self.limits.max_recipients,
        )?;
        check_storage(file, &self.storage, true)?;
        check_grace(file, self.shutdown_grace_secs)?;
        check_metrics(file, self.metrics_listen, self.metrics_allow_remote)?;
        if self.limits.replay_window_secs < 60 {
            return Err(ConfigError::Invalid {
                file: file.into(),
                key: "limits.replay_window_secs",
                reason: "must be at least 60".into(),
            });
        }
        Ok(())
    }
}

impl Resolve for NodeConfig {
    fn resolve(&mut self, base: &Path) {
        rebase(&mut self.data_dir, base);
        rebase(&mut self.directory, base);
        rebase(&mut self.directory_key, base);
        rebase(&mut self.national_ca, base);
        rebase(&mut self.keys.signing, base);
        rebase(&mut self.keys.hpke, base);
        for pair in self
            .keys
            .next
            .iter_mut()
            .chain(self.keys.previous.iter_mut())
        {
            rebase(&mut pair.signing, base);
            rebase(&mut pair.hpke, base);
        }
        rebase(&mut self.policies, base);
        if let Some(seed) = &mut self.seed {
            rebase(&mut seed.directory, base);
            rebase(&mut seed.policies, base);
        }
        self.tls.resolve(base);
    }
    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        // Counted before any file is looked at.
        if self.keys.previous.len() > crate::protocol::directory::MAX_RETIRED_KEYS {
            return Err(ConfigError::Invalid {
                file: file.into(),
                key: "keys.previous",
                reason: format!(
                    "{} retired pairs; at most {} are kept",
                    self.keys.previous.len(),
                    crate::protocol::directory::MAX_RETIRED_KEYS
                ),
            });
        }
        check_federation(file, &self.federation)?;
        // With a seed, the node's own copies may not exist yet: the seed's
        // must.
        match &self.seed {
            Some(seed) => {
                check_files(file, &[("seed.directory", &seed.directory)])?;
                check_dir(file, "seed.policies", &seed.policies)?;
            }
            None => {
                check_files(file, &[("directory", &self.directory)])?;
                check_dir(file, "policies", &self.policies)?;
            }
        }
        check_brokers(file, self.broker.as_deref(), &self.brokers)?;
        check_grace(file, self.shutdown_grace_secs)?;
        check_metrics(file, self.metrics_listen, self.metrics_allow_remote)?;
        check_files(
            file,
            &[
                ("directory_key", &self.directory_key),
                ("tls.cert", &self.tls.cert),
                ("tls.key", &self.tls.key),
                ("tls.root", &self.tls.root),
                ("national_ca", &self.national_ca),
                ("keys.signing", &self.keys.signing),
                ("keys.hpke", &self.keys.hpke),
            ],
        )?;
        if let Some(next) = &self.keys.next {
            check_files(
                file,
                &[
                    ("keys.next.signing", &next.signing),
                    ("keys.next.hpke", &next.hpke),
                ],
            )?;
        }
        for p in &self.keys.previous {
            check_files(
                file,
                &[
                    ("keys.previous.signing", &p.signing),
                    ("keys.previous.hpke", &p.hpke),
                ],
            )?;
        }
        let r = &self.retention;
        if r.default_days == 0 || r.default_days > r.max_days {
            return Err(ConfigError::Invalid {
                file: file.into(),
                key: "retention.default_days",
                reason: format!("must be between 1 and retention.max_days ({})", r.max_days),
            });
        }
        check_limits(
            file,
            self.limits.max_envelope_bytes,
            self.limits.max_recipients,
        )?;
        check_storage(file, &self.storage, false)
    }
}

impl Resolve for AgencyProfile {
    fn resolve(&mut self, base: &Path) {
        self.tls.resolve(base);
    }
    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        check_federation(file, &self.federation)?;
        check_host_port(file, "node", &self.node)?;
        check_files(
            file,
            &[
                ("tls.cert", &self.tls.cert),
                ("tls.key", &self.tls.key),
                ("tls.root", &self.tls.root),
            ],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_values_name_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("broker.toml");
        std::fs::write(&p, "listen = \"127.0.0.1:1\"\nlisten_port = 3\n").unwrap();
        let e = load::<BrokerConfig>(&p).unwrap_err().to_string();
        assert!(
            e.contains("broker.toml") && e.contains("listen_port"),
            "{e}"
        );

        std::fs::write(
            &p,
            "listen = \"127.0.0.1:1\"\ndata_dir = \"d\"\ndirectory = \"missing.bin\"\n\
             directory_key = \"k\"\npolicies = \".\"\nlog_key = \"l\"\n[tls]\ncert = \"c\"\nkey = \"k\"\nroot = \"r\"\n",
        )
        .unwrap();
        let e = load::<BrokerConfig>(&p).unwrap_err().to_string();
        assert!(
            e.contains("key `directory`") && e.contains("missing.bin"),
            "{e}"
        );
    }

    #[test]
    fn the_deploy_examples_name_every_key_correctly() {
        let b: BrokerConfig =
            toml::from_str(include_str!("../../deploy/broker.example.toml")).unwrap();
        assert_eq!(b.policy_reload_secs, 5);
        assert_eq!(
            b.limits.max_envelope_bytes,
            crate::protocol::bounds::DEFAULT_MAX_ENVELOPE_BYTES
        );
        assert_eq!(
            b.limits.max_recipients,
            crate::protocol::bounds::DEFAULT_MAX_RECIPIENTS
        );
        let n: NodeConfig = toml::from_str(include_str!("../../deploy/node.example.toml")).unwrap();
        assert_eq!(n.country.as_str(), "HR");
        assert_eq!(n.keys.switch_delay_secs, 180);
        assert!(n.keys.next.is_none() && n.keys.previous.is_empty());
        // The rotation tables, as the example's comments give them.
        let rotating: NodeConfig = toml::from_str(
            &include_str!("../../deploy/node.example.toml")
                .replace("# [keys.next]", "[keys.next]")
                .replace("# [[keys.previous]]", "[[keys.previous]]")
                .replace("# signing = ", "signing = ")
                .replace("# hpke = ", "hpke = "),
        )
        .unwrap();
        let next = rotating.keys.next.as_ref().unwrap();
        assert!(next.signing.ends_with("next-signing.key"));
        assert_eq!(rotating.keys.previous.len(), 1);
        assert_eq!(
            n.limits.max_envelope_bytes,
            crate::protocol::bounds::DEFAULT_MAX_ENVELOPE_BYTES
        );
        assert_eq!(
            n.limits.max_recipients,
            crate::protocol::bounds::DEFAULT_MAX_RECIPIENTS
        );
        assert_eq!(b.storage.cache_mib, crate::storage::sled::DEFAULT_CACHE_MIB);
        assert_eq!(n.storage.cache_mib, crate::storage::sled::DEFAULT_CACHE_MIB);
        let _: AgencyProfile =
            toml::from_str(include_str!("../../deploy/agency-profile.example.toml")).unwrap();
    }

    #[test]
    fn a_node_names_one_broker_or_a_list_never_both() {
        let list = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert!(check_brokers("n.toml", Some("a:7400"), &[]).is_ok());
        assert!(check_brokers("n.toml", None, &list(&["a:7400", "b:7400"])).is_ok());
        let both = check_brokers("n.toml", Some("a:7400"), &list(&["b:7400"]))
            .unwrap_err()
            .to_string();
        assert!(
            both.starts_with("n.toml: key `brokers`: is set together with `broker`"),
            "{both}"
        );
        let none = check_brokers("n.toml", None, &[]).unwrap_err().to_string();
        assert!(
            none.starts_with("n.toml: key `broker`: is missing"),
            "{none}"
        );
        let twice = check_brokers("n.toml", None, &list(&["a:1", "a:1"]))
            .unwrap_err()
            .to_string();
        assert_eq!(twice, "n.toml: key `brokers`: lists \"a:1\" twice");
        let bad = check_brokers("n.toml", None, &list(&["a:1", "b"]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            bad,
            "n.toml: key `brokers`: \"b\" is not an address of the form host:port"
        );
        let many: Vec<String> = (0..=MAX_BROKERS).map(|i| format!("b{i}:1")).collect();
        assert!(check_brokers("n.toml", None, &many).is_err());

        let n: NodeConfig =
            toml::from_str(&include_str!("../../deploy/node.example.toml").replace(
                "broker = \"broker.casebridge.example.org:7400\"",
                "brokers = [\"x:1\", \"y:2\"]",
            ))
            .unwrap();
        assert_eq!(n.broker_addresses(), list(&["x:1", "y:2"]));
        assert_eq!(n.shutdown_grace_secs, 10);
    }

    #[test]
    fn a_node_keeps_at_most_four_retired_key_pairs() {
        let with_retired = |n: usize| -> NodeConfig {
            let mut text = include_str!("../../deploy/node.example.toml").to_string();
            for i in 0..n {
                text.push_str(&format!(
                    "\n[[keys.previous]]\nsigning = \"old-signing-{i}.key\"\nhpke = \"old-hpke-{i}.key\"\n"
                ));
            }
            toml::from_str(&text).unwrap()
        };
        let five = with_retired(crate::protocol::directory::MAX_RETIRED_KEYS + 1)
            .validate("n.toml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            five,
            "n.toml: key `keys.previous`: 5 retired pairs; at most 4 are kept"
        );
        // Four pass the count; the example's files are not on this machine.
        let four = with_retired(crate::protocol::directory::MAX_RETIRED_KEYS)
            .validate("n.toml")
            .unwrap_err()
            .to_string();
        assert!(!four.contains("keys.previous"), "{four}");
    }

    /// The TOML file a Kubernetes manifest holds under `key: |`.
    fn manifest_file(yaml: &str, key: &str) -> String {
        let start = yaml
            .find(&format!("  {key}: |\n"))
            .map(|i| i + key.len() + 6)
            .expect("the manifest holds the file");
        yaml[start..]
            .lines()
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| l.get(4..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_kubernetes_node_manifest_holds_a_valid_config() {
        let node: NodeConfig = toml::from_str(&manifest_file(
            include_str!("../../deploy/kubernetes/node-hr.yaml"),
            "node.toml",
        ))
        .unwrap();
        assert_eq!(node.broker_addresses().len(), 2);
        assert!(check_brokers("node.toml", node.broker.as_deref(), &node.brokers).is_ok());
        assert_eq!(node.shutdown_grace_secs, 10);
        // What the node writes is on its volume; the read-only mounts seed it.
        let state = Path::new("/var/lib/casebridge");
        assert!(node.directory.starts_with(state) && node.policies.starts_with(state));
        let seed = node.seed.expect("a seed");
        assert!(seed.directory.starts_with("/etc/casebridge/federation"));
        assert_eq!(seed.policies, Path::new("/etc/casebridge/policies"));
    }

    #[test]
    fn the_kubernetes_broker_manifest_holds_a_valid_config() {
        let broker: BrokerConfig = toml::from_str(&manifest_file(
            include_str!("../../deploy/kubernetes/broker.yaml"),
            "broker.toml",
        ))
        .unwrap();
        assert_eq!(broker.storage.backend, StorageBackend::Postgres);
        let pg = broker
            .storage
            .postgres
            .as_ref()
            .expect("[storage.postgres]");
        assert!(pg.url.contains("sslmode=verify-full"), "{}", pg.url);
        assert!(!pg.url.contains(":@") && !pg.url.contains("password"));
        assert_eq!(broker.listen.port(), 7400);
    }

    #[test]
    fn metrics_listen_defaults_to_loopback_and_refuses_a_remote_address_unless_allowed() {
        let b: BrokerConfig =
            toml::from_str(include_str!("../../deploy/broker.example.toml")).unwrap();
        let n: NodeConfig = toml::from_str(include_str!("../../deploy/node.example.toml")).unwrap();
        assert_eq!(b.metrics_listen, MetricsListen::At(BROKER_METRICS));
        assert_eq!(n.metrics_listen, MetricsListen::At(NODE_METRICS));
        assert!(!b.metrics_allow_remote && !n.metrics_allow_remote);

        let at = |s: &str| s.parse::<MetricsListen>().unwrap();
        assert_eq!(at("off"), MetricsListen::Off);
        assert_eq!(at("off").addr(), None);
        assert_eq!(at("[::1]:9464").addr(), Some("[::1]:9464".parse().unwrap()));
        for ok in ["off", "127.0.0.1:0", "127.0.0.2:9465", "[::1]:9464"] {
            assert!(check_metrics("b.toml", at(ok), false).is_ok(), "{ok}");
        }
        for remote in ["0.0.0.0:9464", "10.1.0.2:9465", "[::]:9464"] {
            let e = check_metrics("b.toml", at(remote), false)
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!(
                    "b.toml: key `metrics_listen`: {} is not a loopback address;",
                    at(remote)
                )) && e.contains("`metrics_allow_remote = true`"),
                "{e}"
            );
            assert!(check_metrics("b.toml", at(remote), true).is_ok());
        }
        let e = "localhost:9464".parse::<MetricsListen>().unwrap_err();
        assert_eq!(
            e,
            "\"localhost:9464\" is neither \"off\" nor an address of the form ip:port (such as 127.0.0.1:9464)"
        );
        let parsed: Result<NodeConfig, _> =
            toml::from_str(&include_str!("../../deploy/node.example.toml").replace(
                "metrics_listen = \"127.0.0.1:9465\"",
                "metrics_listen = \"nowhere\"",
            ));
        assert!(
            parsed
                .unwrap_err()
                .to_string()
                .contains("\"nowhere\" is neither")
        );
        // Written as read.
        assert_eq!(at("127.0.0.1:9464").to_string(), "127.0.0.1:9464");
    }

    #[test]
    fn limits_default_and_refuse_values_out_of_range() {
        let n: NodeLimits = toml::from_str("").unwrap();
        assert_eq!(n.max_envelope_bytes, 16 << 20);
        assert_eq!(n.max_recipients, 64);
        let b: Limits = toml::from_str("max_recipients = 8").unwrap();
        assert_eq!((b.max_recipients, b.bounds().max_recipients), (8, 8));
        for bad in [0, 1025] {
            let e = check_recipient_limit("node.toml", "limits.max_recipients", bad)
                .unwrap_err()
                .to_string();
            assert_eq!(
                e,
                "node.toml: key `limits.max_recipients`: must be between 1 and 1024"
            );
        }
        assert!(check_recipient_limit("f", "k", 1024).is_ok());
        assert!(check_envelope_limit("f", "k", 1023).is_err());
        assert!(check_envelope_limit("f", "k", 1 << 30).is_ok());
        assert!(check_envelope_limit("f", "k", (1 << 30) + 1).is_err());
    }

    #[test]
    fn the_storage_cache_defaults_and_refuses_values_out_of_range() {
        let s: StorageSettings = toml::from_str("").unwrap();
        assert_eq!(s.cache_mib, 64);
        let s: StorageSettings = toml::from_str("cache_mib = 256").unwrap();
        assert!(check_storage("broker.toml", &s, true).is_ok());
        for bad in [0, MAX_CACHE_MIB + 1] {
            let e = check_storage(
                "broker.toml",
                &StorageSettings {
                    cache_mib: bad,
                    ..Default::default()
                },
                true,
            )
            .unwrap_err()
            .to_string();
            assert_eq!(
                e,
                "broker.toml: key `storage.cache_mib`: must be between 1 and 65536"
            );
        }
    }

    #[test]
    fn the_postgres_backend_is_checked_key_by_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pg.password");
        std::fs::write(&pw, "secret\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let parse = |toml_text: &str| -> StorageSettings {
            let mut s: StorageSettings = toml::from_str(toml_text).unwrap();
            s.resolve(dir.path());
            s
        };
        let err = |s: &StorageSettings, broker: bool| {
            check_storage("broker.toml", s, broker)
                .unwrap_err()
                .to_string()
        };
        let sled = parse("");
        assert_eq!(sled.backend, StorageBackend::Sled);
        assert!(check_storage("node.toml", &sled, false).is_ok());

        assert_eq!(
            err(&parse("backend = \"postgres\""), true),
            "broker.toml: key `storage.postgres.url`: is required when storage.backend is \"postgres\""
        );
        let good = parse(
            "backend = \"postgres\"\n[postgres]\nurl = \"postgres://casebridge@127.0.0.1:5432/casebridge\"\npassword_file = \"pg.password\"\n",
        );
        assert!(check_storage("broker.toml", &good, true).is_ok());
        assert_eq!(good.postgres.as_ref().unwrap().pool_size, 16);
        assert!(
            err(&good, false).starts_with("broker.toml: key `storage.backend`: a node keeps"),
            "{}",
            err(&good, false)
        );
        let with_password = parse(
            "backend = \"postgres\"\n[postgres]\nurl = \"postgres://casebridge:hunter2@127.0.0.1/casebridge\"\n",
        );
        let e = err(&with_password, true);
        assert!(
            e.starts_with(
                "broker.toml: key `storage.postgres.url`: the connection string holds a password"
            ),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "the password is not echoed: {e}");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = err(&good, true);
        assert!(
            e.starts_with("broker.toml: key `storage.postgres.password_file`:"),
            "{e}"
        );
        let remote = parse(
            "backend = \"postgres\"\n[postgres]\nurl = \"postgres://casebridge@db.example/casebridge\"\n",
        );
        assert!(err(&remote, true).contains("without TLS"));
        let no_root = parse(
            "backend = \"postgres\"\n[postgres]\nurl = \"postgres://casebridge@db.example/casebridge?sslmode=verify-full\"\nroot_cert = \"missing.pem\"\n",
        );
        assert!(
            err(&no_root, true).starts_with("broker.toml: key `storage.postgres.root_cert`:"),
            "{}",
            err(&no_root, true)
        );
        let pool = parse(
            "backend = \"postgres\"\n[postgres]\nurl = \"postgres://casebridge@127.0.0.1/casebridge\"\npool_size = 1\n",
        );
        assert_eq!(
            err(&pool, true),
            "broker.toml: key `storage.postgres.pool_size`: must be between 2 and 256"
        );
    }
}

//! Keys made where they live, and certificate authorities that sign requests.
//!
//! `casebridge keys new` makes a party's TLS key and a PKCS#10 certificate
//! signing request on the machine that will hold the key (for a node also
//! its Ed25519 signing and X25519 HPKE keys, their public halves as files
//! the `directory` commands read); nothing secret leaves that machine.
//!
//! `casebridge ca init` makes the federation root CA, or a national CA's key
//! and request for the root to sign. `casebridge ca issue` signs a request:
//! the root for the broker, nodes, auditors and national CAs, a national CA
//! for its own country's agencies only. The certificate's content comes
//! from the CA operator's command line (role, SPIFFE id, names, validity),
//! never from the request alone: the request's self-signature is checked,
//! its SPIFFE id must be the one the command line names, and only its public
//! key is taken. A CA directory (`ca.toml`, `ca.crt`, `ca.key`) is all that
//! issuing needs, so it can live on a machine that is never online.
//!
//! `pki init` builds a development federation from the same pieces.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use crate::daemon::config::{KeyPairFiles, NodeConfig};
use crate::protocol::ids::{AgencyId, Country, Role};
use crate::protocol::keys::{self, SigningKey};

const HOUR: time::Duration = time::Duration::hours(1);
const DAY: time::Duration = time::Duration::days(1);

/// The longest validity `ca issue` grants, in days.
pub const MAX_DAYS: u32 = 3650;
/// The largest request file read.
const MAX_CSR_BYTES: u64 = 64 * 1024;

/// A CA able to sign: its key and certificate.
pub struct Ca {
    pub issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub cert_der: rustls::pki_types::CertificateDer<'static>,
}

/// A random, positive 16-byte serial number.
fn serial() -> anyhow::Result<SerialNumber> {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    b[0] &= 0x7f;
    b[0] |= 0x01;
    Ok(SerialNumber::from_slice(&b))
}

/// Certificate parameters with the federation as organisation, `cn` as
/// common name, valid from an hour ago for `days` days.
pub fn params(cn: &str, fed: &str, days: u32) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::OrganizationName, fed);
    p.distinguished_name.push(DnType::CommonName, cn);
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - HOUR;
    p.not_after = now + DAY * days;
    p.serial_number = Some(serial()?);
    Ok(p)
}

/// The parameters of a CA certificate: the root (no path length limit) or a
/// national CA (path length 0: it signs leaves only).
pub fn ca_params(
    cn: &str,
    fed: &str,
    days: u32,
    national: bool,
) -> anyhow::Result<CertificateParams> {
    let mut p = params(cn, fed, days)?;
    p.is_ca = if national {
        IsCa::Ca(BasicConstraints::Constrained(0))
    } else {
        IsCa::Ca(BasicConstraints::Unconstrained)
    };
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// Makes a CA with a new key: self-signed, or signed by `parent`.
pub fn new_ca(cn: &str, fed: &str, parent: Option<&Ca>, days: u32) -> anyhow::Result<Ca> {
    let p = ca_params(cn, fed, days, parent.is_some())?;
    let key = KeyPair::generate()?;
    let cert = match parent {
        Some(parent) => p.signed_by(&key, &parent.issuer)?,
        None => p.self_signed(&key)?,
    };
    Ok(Ca {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        issuer: Issuer::new(p, key),
    })
}

/// The parameters of a party's certificate: its SPIFFE id, client and
/// server use, and the DNS names and addresses it serves on.
pub fn leaf_params(
    role: &Role,
    fed: &str,
    days: u32,
    dns: &[String],
    ips: &[IpAddr],
) -> anyhow::Result<CertificateParams> {
    let mut p = params(&role.to_string(), fed, days)?;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ];
    p.subject_alt_names
        .push(SanType::URI(role.spiffe_uri(fed).try_into()?));
    for h in dns {
        if rustls::pki_types::DnsName::try_from(h.as_str()).is_err() {
            bail!("{} is not a DNS name", crate::protocol::bounds::quoted(h));
        }
        let name = h.as_str().try_into().map_err(|_| {
            anyhow::anyhow!("{} is not a DNS name", crate::protocol::bounds::quoted(h))
        })?;
        p.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in ips {
        p.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    Ok(p)
}

/// A node's signing and HPKE keys, written into `dir`: `signing.key` and
/// `hpke.key` (0600), and their public halves `signing.pub` and `hpke.pub`
/// (hex, one line). Returns the public halves.
pub fn write_node_keys(dir: &Path) -> anyhow::Result<([u8; 32], [u8; 32])> {
    write_node_pair(
        &KeyPairFiles {
            signing: dir.join("signing.key"),
            hpke: dir.join("hpke.key"),
        },
        false,
    )
}

/// A node's signing and HPKE keys, written to `files` (0600) with their
/// public halves beside them (the same names ending `.pub`, hex). With
/// `fresh`, refuses to write over any file that exists. Returns the public
/// halves.
fn write_node_pair(files: &KeyPairFiles, fresh: bool) -> anyhow::Result<([u8; 32], [u8; 32])> {
    let signing_pub_file = files.signing.with_extension("pub");
    let hpke_pub_file = files.hpke.with_extension("pub");
    if fresh {
        for f in [
            &files.signing,
            &files.hpke,
            &signing_pub_file,
            &hpke_pub_file,
        ] {
            if f.exists() {
                bail!(
                    "{} exists already; it is never overwritten (a prepared next pair stays \
                     until the rotation is done; move it away to make another)",
                    f.display()
                );
            }
        }
    }
    let (sign, sign_pkcs8) = SigningKey::generate()?;
    crate::storage::files::keys::write_secret(
        &files.signing,
        keys::to_pem(&sign_pkcs8, "PRIVATE KEY").as_bytes(),
    )?;
    let (hpke_sk, hpke_pk) = keys::generate_hpke();
    crate::storage::files::keys::write_secret(
        &files.hpke,
        hex::encode(keys::hpke_private_bytes(&hpke_sk)).as_bytes(),
    )?;
    let sign_pub = sign.public_key();
    let hpke_pub = keys::hpke_public_bytes(&hpke_pk);
    write_file(
        &signing_pub_file,
        format!("{}\n", hex::encode(sign_pub)).as_bytes(),
    )?;
    write_file(
        &hpke_pub_file,
        format!("{}\n", hex::encode(hpke_pub)).as_bytes(),
    )?;
    Ok((sign_pub, hpke_pub))
}

/// What `node new-keys` made.
pub struct NextKeys {
    pub files: KeyPairFiles,
    pub signing: [u8; 32],
    pub hpke: [u8; 32],
}

/// `casebridge node new-keys`: the node's next signing and HPKE pair,
/// written where the node looks for it (`[keys.next]`, or `next-signing.key`
/// and `next-hpke.key` beside its keys), 0600, never over an existing file.
/// A running node reads it when a directory lists it.
pub fn new_node_keys(cfg: &NodeConfig) -> anyhow::Result<NextKeys> {
    let files = cfg
        .keys
        .next
        .clone()
        .unwrap_or_else(|| crate::daemon::node::keyring::default_next_files(&cfg.keys));
    let (signing, hpke) = write_node_pair(&files, true)?;
    Ok(NextKeys {
        files,
        signing,
        hpke,
    })
}

/// What `node new-keys` prints: the files, the public keys and the
/// directory edit that publishes them.
pub fn new_keys_report(cfg: &NodeConfig, next: &NextKeys) -> String {
    format!(
        "next key pair of node {cc} written: {signing} and {hpke} (0600), public halves beside them\n\
         signing key: {signing_hex}\n\
         HPKE key:    {hpke_hex}\n\
         publish it with the directory key holder (the old pair stays valid for the overlap):\n  \
         casebridge directory rotate-node --directory-key directory.pub --country {cc} \
         --signing-key {signing_hex} --hpke-key {hpke_hex} --overlap-hours 24\n  \
         casebridge directory sign --key directory.key\n\
         the node signs with the new pair {delay} s after it first sees that directory",
        cc = cfg.country,
        signing = next.files.signing.display(),
        hpke = next.files.hpke.display(),
        signing_hex = hex::encode(next.signing),
        hpke_hex = hex::encode(next.hpke),
        delay = cfg.keys.switch_delay_secs,
    )
}

/// An Ed25519 key pair for signing (the directory's, the audit log's):
/// `<stem>.key` (0600) and `<stem>.pub` (hex). Returns the key.
pub fn write_signing_pair(dir: &Path, stem: &str) -> anyhow::Result<SigningKey> {
    let (key, pkcs8) = SigningKey::generate()?;
    crate::storage::files::keys::write_secret(
        &dir.join(format!("{stem}.key")),
        keys::to_pem(&pkcs8, "PRIVATE KEY").as_bytes(),
    )?;
    write_file(
        &dir.join(format!("{stem}.pub")),
        format!("{}\n", hex::encode(key.public_key())).as_bytes(),
    )?;
    Ok(key)
}

/// Writes a file atomically, 0600 (certificates and public keys are not
/// secret, but they sit among files that are).
pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::storage::write_private(path, bytes)
        .with_context(|| format!("writing {}", path.display()))
}

fn mkdir(path: &Path) -> anyhow::Result<()> {
    crate::storage::create_private_dir(path).with_context(|| format!("creating {}", path.display()))
}

/// The party a key or a certificate is for, as a command line names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PartyRole {
    Broker,
    Node,
    Agency,
    Auditor,
    /// A national CA (only for `ca issue`, by the root).
    NationalCa,
}

/// A role as the command line spells it.
pub fn role_name(r: PartyRole) -> &'static str {
    match r {
        PartyRole::Broker => "broker",
        PartyRole::Node => "node",
        PartyRole::Agency => "agency",
        PartyRole::Auditor => "auditor",
        PartyRole::NationalCa => "national-ca",
    }
}

/// `--country`, `--agency`, `--name`: who the party is.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Who {
    /// The node's (or national CA's) country.
    #[arg(long)]
    pub country: Option<String>,
    /// The agency, CC/name.
    #[arg(long)]
    pub agency: Option<String>,
    /// The auditor's name.
    #[arg(long)]
    pub name: Option<String>,
}

/// What a role and a [`Who`] name: the party's role, or for a national CA
/// its country.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Party(Role),
    NationalCa(Country),
}

impl Who {
    /// Resolves the party, refusing options that do not belong to the role.
    pub fn subject(&self, role: PartyRole) -> anyhow::Result<Subject> {
        let extra = |allowed: &str| -> anyhow::Result<()> {
            for (flag, v) in [
                ("--country", &self.country),
                ("--agency", &self.agency),
                ("--name", &self.name),
            ] {
                if v.is_some() && flag != allowed {
                    bail!("{flag} does not apply to the {} role", role_name(role));
                }
            }
            Ok(())
        };
        let need = |v: &Option<String>, flag: &str| -> anyhow::Result<String> {
            v.clone()
                .with_context(|| format!("the {} role needs {flag}", role_name(role)))
        };
        Ok(match role {
            PartyRole::Broker => {
                extra("")?;
                Subject::Party(Role::Broker)
            }
            PartyRole::Node => {
                extra("--country")?;
                Subject::Party(Role::Node(need(&self.country, "--country CC")?.parse()?))
            }
            PartyRole::NationalCa => {
                extra("--country")?;
                Subject::NationalCa(need(&self.country, "--country CC")?.parse()?)
            }
            PartyRole::Agency => {
                extra("--agency")?;
                Subject::Party(Role::Agency(
                    need(&self.agency, "--agency CC/name")?.parse()?,
                ))
            }
            PartyRole::Auditor => {
                extra("--name")?;
                Subject::Party(Role::Auditor(need(&self.name, "--name NAME")?))
            }
        })
    }
}

/// The file stem a role's TLS key and request use: `node.key`, `node.csr`.
pub fn stem(role: &Role) -> &'static str {
    match role {
        Role::Broker => "broker",
        Role::Node(_) => "node",
        Role::Agency(_) => "agency",
        Role::Auditor(_) => "auditor",
    }
}

fn check_spiffe(role: &Role, fed: &str) -> anyhow::Result<()> {
    match Role::from_spiffe_uri(&role.spiffe_uri(fed), fed) {
        Ok(r) if &r == role => Ok(()),
        _ => bail!(
            "{} is not a valid SPIFFE id: the federation and names use lower-case letters, \
             digits, '-' and '.'",
            role.spiffe_uri(fed)
        ),
    }
}

/// What `keys new` wrote.
#[derive(Debug)]
pub struct NewKeys {
    pub key: PathBuf,
    pub csr: PathBuf,
    /// Public key files: a node's `signing.pub` and `hpke.pub`, the broker's
    /// `log.pub`.
    pub public: Vec<PathBuf>,
}

/// What a signing request carries: the subject and, for a party, its
/// SPIFFE id.
fn request_params(cn: &str, fed: &str, uri: Option<String>) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::OrganizationName, fed);
    p.distinguished_name.push(DnType::CommonName, cn);
    if let Some(uri) = uri {
        p.subject_alt_names.push(SanType::URI(uri.try_into()?));
    }
    Ok(p)
}

/// `keys new`: the party's TLS key and request in `out` (and a node's
/// signing and HPKE keys, the broker's audit log key). Refuses to overwrite.
pub fn keys_new(role: &Role, fed: &str, out: &Path) -> anyhow::Result<NewKeys> {
    check_spiffe(role, fed)?;
    let s = stem(role);
    let key_path = out.join(format!("{s}.key"));
    if key_path.exists() {
        bail!(
            "{} already exists: a party's key is made once; choose another directory",
            key_path.display()
        );
    }
    if !out.exists() {
        mkdir(out)?;
    }
    // A request carries the subject and the SPIFFE id; what the certificate
    // finally says is the CA operator's.
    let key = KeyPair::generate()?;
    let csr = request_params(&role.to_string(), fed, Some(role.spiffe_uri(fed)))?
        .serialize_request(&key)?;
    crate::storage::files::keys::write_secret(&key_path, key.serialize_pem().as_bytes())?;
    let csr_path = out.join(format!("{s}.csr"));
    write_file(&csr_path, csr.pem()?.as_bytes())?;
    let mut public = Vec::new();
    match role {
        Role::Node(_) => {
            write_node_keys(out)?;
            public.push(out.join("signing.pub"));
            public.push(out.join("hpke.pub"));
        }
        Role::Broker => {
            write_signing_pair(out, "log")?;
            public.push(out.join("log.pub"));
        }
        _ => {}
    }
    Ok(NewKeys {
        key: key_path,
        csr: csr_path,
        public,
    })
}

/// `ca.toml` in a CA directory.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaInfo {
    pub federation: String,
    /// The country of a national CA; none for the federation root.
    pub country: Option<Country>,
}

/// `ca init`: a root CA (`country` none), self-signed, or a national CA's
/// key and request (`ca.csr`) for the root to sign with `ca issue --role
/// national-ca`; its `ca.crt` is the certificate that comes back.
pub fn ca_init(out: &Path, fed: &str, country: Option<Country>, days: u32) -> anyhow::Result<()> {
    if out.join("ca.key").exists() {
        bail!("{} already holds a CA (ca.key exists)", out.display());
    }
    check_spiffe(&Role::Broker, fed)?;
    if !(1..=MAX_DAYS).contains(&days) {
        bail!("--days {days}: a CA is valid for 1 to {MAX_DAYS} days");
    }
    if !out.exists() {
        mkdir(out)?;
    }
    let info = CaInfo {
        federation: fed.to_string(),
        country,
    };
    match country {
        None => {
            let ca = new_ca(&format!("{fed} federation root CA"), fed, None, days)?;
            crate::storage::files::keys::write_secret(
                &out.join("ca.key"),
                ca.issuer.key().serialize_pem().as_bytes(),
            )?;
            write_file(&out.join("ca.crt"), ca.cert_pem.as_bytes())?;
        }
        Some(cc) => {
            let key = KeyPair::generate()?;
            let csr =
                request_params(&format!("{cc} national CA"), fed, None)?.serialize_request(&key)?;
            crate::storage::files::keys::write_secret(
                &out.join("ca.key"),
                key.serialize_pem().as_bytes(),
            )?;
            write_file(&out.join("ca.csr"), csr.pem()?.as_bytes())?;
        }
    }
    write_file(
        &out.join("ca.toml"),
        format!(
            "# A casebridge certificate authority, written by `casebridge ca init`.\n{}",
            toml::to_string_pretty(&info)?
        )
        .as_bytes(),
    )?;
    Ok(())
}

/// A CA directory loaded for issuing.
pub struct CaDir {
    pub info: CaInfo,
    pub ca: Ca,
    /// The end of the CA certificate's validity.
    pub not_after: time::OffsetDateTime,
}

/// Loads `ca.toml`, `ca.crt` and `ca.key` and checks that they belong
/// together.
pub fn load_ca_dir(dir: &Path) -> anyhow::Result<CaDir> {
    let toml_path = dir.join("ca.toml");
    let text = std::fs::read_to_string(&toml_path).with_context(|| {
        format!(
            "reading {} (is {} a CA directory?)",
            toml_path.display(),
            dir.display()
        )
    })?;
    let info: CaInfo = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", toml_path.display(), e.message()))?;
    let crt = dir.join("ca.crt");
    if !crt.exists() {
        bail!(
            "{} has no ca.crt yet: have the federation root sign {} (casebridge ca issue --role \
             national-ca) and put the certificate there",
            dir.display(),
            dir.join("ca.csr").display()
        );
    }
    let cert_pem =
        std::fs::read_to_string(&crt).with_context(|| format!("reading {}", crt.display()))?;
    let key_pem = crate::storage::files::keys::read_secret(&dir.join("ca.key"))?;
    let key_pem = String::from_utf8(key_pem)
        .map_err(|_| anyhow::anyhow!("{}: not a PEM key", dir.join("ca.key").display()))?;
    let key = KeyPair::from_pem(&key_pem)
        .map_err(|e| anyhow::anyhow!("{}: not a key: {e}", dir.join("ca.key").display()))?;
    let der = crate::tools::directory_cli::load_cert_der(&crt)?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der)
        .map_err(|_| anyhow::anyhow!("{}: not a certificate", crt.display()))?;
    if x509.public_key().subject_public_key.data.as_ref() != rcgen::PublicKeyData::der_bytes(&key) {
        bail!(
            "{} does not certify the key in {}",
            crt.display(),
            dir.join("ca.key").display()
        );
    }
    let not_after = x509.validity().not_after.to_datetime();
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
        .map_err(|e| anyhow::anyhow!("{}: not a CA certificate: {e}", crt.display()))?;
    Ok(CaDir {
        info,
        ca: Ca {
            issuer,
            cert_pem,
            cert_der: der.into(),
        },
        not_after,
    })
}

/// What `ca issue` is asked to certify.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub subject: Subject,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub days: u32,
}

/// Reads a PEM certificate signing request and checks its self-signature.
pub fn read_csr(path: &Path) -> anyhow::Result<CertificateSigningRequestParams> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_CSR_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > MAX_CSR_BYTES {
        bail!(
            "{} is larger than {MAX_CSR_BYTES} bytes: not a signing request",
            path.display()
        );
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{}: not a PEM signing request", path.display()))?;
    parse_csr(&text).with_context(|| path.display().to_string())
}

/// Parses a PEM request; its signature must verify with the key it carries.
pub fn parse_csr(pem: &str) -> anyhow::Result<CertificateSigningRequestParams> {
    CertificateSigningRequestParams::from_pem(pem).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => anyhow::anyhow!(
            "the request's signature does not verify with the key it carries: it was altered or \
             not made with that key"
        ),
        rcgen::Error::UnsupportedExtension => anyhow::anyhow!(
            "the request asks for an extension casebridge does not issue; make it with \
             `casebridge keys new`"
        ),
        _ => anyhow::anyhow!("not a PEM certificate signing request (PKCS#10)"),
    })
}

/// Signs `csr` with `ca` for `req`, checking that this CA may issue it and
/// that the request names the same party. Returns the certificate PEM (for
/// a national CA followed by its own certificate, the chain an agency
/// presents).
pub fn issue(
    ca: &CaDir,
    csr: &CertificateSigningRequestParams,
    req: &IssueRequest,
) -> anyhow::Result<String> {
    let fed = ca.info.federation.as_str();
    match (&ca.info.country, &req.subject) {
        (None, Subject::Party(Role::Agency(id))) => bail!(
            "the federation root does not issue agency certificates: {id}'s comes from the \
             national CA of {}",
            id.country()
        ),
        (None, _) => {}
        (Some(cc), Subject::Party(Role::Agency(id))) if id.country() == *cc => {}
        (Some(cc), Subject::Party(Role::Agency(id))) => {
            bail!("the national CA of {cc} issues only {cc}'s agencies, not {id}")
        }
        (Some(cc), _) => bail!(
            "the national CA of {cc} issues only {cc}'s agencies; the broker, nodes, auditors \
             and national CAs get theirs from the federation root"
        ),
    }
    if !(1..=MAX_DAYS).contains(&req.days) {
        bail!(
            "--days {}: a certificate is valid for 1 to {MAX_DAYS} days",
            req.days
        );
    }
    let requested_uris: Vec<String> = csr
        .params
        .subject_alt_names
        .iter()
        .filter_map(|n| match n {
            SanType::URI(u) => Some(u.as_str().to_string()),
            _ => None,
        })
        .collect();
    let params = match &req.subject {
        Subject::Party(role) => {
            check_spiffe(role, fed)?;
            let expected = role.spiffe_uri(fed);
            if requested_uris != [expected.clone()] {
                bail!(
                    "the request asks for {}, but the command line says {expected}: issue for \
                     the party the request is from, or have it make a request for this one",
                    if requested_uris.is_empty() {
                        "no SPIFFE id".to_string()
                    } else {
                        requested_uris.join(", ")
                    }
                );
            }
            if matches!(role, Role::Agency(_) | Role::Auditor(_))
                && (!req.dns.is_empty() || !req.ips.is_empty())
            {
                bail!("agencies and auditors are clients only: give them no --dns or --ip");
            }
            leaf_params(role, fed, req.days, &req.dns, &req.ips)?
        }
        Subject::NationalCa(cc) => {
            if !requested_uris.is_empty() {
                bail!(
                    "a national CA's request names no SPIFFE id; this one names {}",
                    requested_uris.join(", ")
                );
            }
            if !req.dns.is_empty() || !req.ips.is_empty() {
                bail!("a national CA certificate names no --dns or --ip");
            }
            ca_params(&format!("{cc} national CA"), fed, req.days, true)?
        }
    };
    if params.not_after > ca.not_after {
        bail!(
            "--days {}: the certificate would outlive the CA's own, which ends {}",
            req.days,
            ca.not_after
        );
    }
    let cert = CertificateSigningRequestParams {
        params,
        public_key: csr.public_key.clone(),
    }
    .signed_by(&ca.ca.issuer)?;
    let mut pem = cert.pem();
    if ca.info.country.is_some() {
        pem.push_str(&ca.ca.cert_pem);
    }
    Ok(pem)
}

/// Parses `--ip` values.
pub fn parse_ips(ips: &[String]) -> anyhow::Result<Vec<IpAddr>> {
    ips.iter()
        .map(|s| {
            s.trim().parse().map_err(|_| {
                anyhow::anyhow!(
                    "--ip {} is not an IP address",
                    crate::protocol::bounds::quoted(s)
                )
            })
        })
        .collect()
}

/// A country code from the command line.
pub fn parse_country(s: &str) -> anyhow::Result<Country> {
    Ok(s.trim().parse()?)
}

/// An agency id from the command line.
pub fn parse_agency(s: &str) -> anyhow::Result<AgencyId> {
    Ok(s.trim().parse()?)
}

/// `casebridge keys ...`.
#[derive(clap::Subcommand, Debug)]
pub enum KeysCmd {
    /// Make a party's TLS private key and certificate signing request on the
    /// machine that will hold the key: for a node also its Ed25519 signing
    /// and X25519 HPKE keys (signing.pub and hpke.pub go into the
    /// directory), for the broker also its audit log key (log.pub goes into
    /// the directory). Private files are written 0600; send only the .csr
    /// and .pub files away.
    New {
        /// Whose keys: the broker, a node, an agency or an auditor.
        #[arg(long, value_enum)]
        role: PartyRole,
        #[command(flatten)]
        who: Who,
        /// The federation's SPIFFE trust domain.
        #[arg(long, default_value = "casebridge.test")]
        federation: String,
        /// The directory to write into (created 0700 if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

/// `casebridge ca ...`.
#[derive(clap::Subcommand, Debug)]
pub enum CaCmd {
    /// Make the federation root CA (self-signed), or with --country a
    /// national CA's key and signing request (ca.csr) for the root to sign
    /// with `ca issue --role national-ca`.
    Init {
        /// The CA directory to write (ca.toml, ca.key, ca.crt or ca.csr).
        #[arg(long)]
        out: PathBuf,
        /// The federation's SPIFFE trust domain.
        #[arg(long, default_value = "casebridge.test")]
        federation: String,
        /// Make the national CA of this country.
        #[arg(long)]
        country: Option<String>,
        /// Validity of the root's certificate, in days (a national CA's is
        /// set by the root when it issues).
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Sign a certificate signing request. The root issues broker, node,
    /// auditor and national CA certificates; a national CA only its own
    /// country's agencies. The SPIFFE id is the one the role and
    /// --country/--agency/--name make, and the request must name the same.
    Issue {
        /// The CA directory (from `ca init`).
        #[arg(long)]
        ca: PathBuf,
        /// The request (PEM), e.g. from `keys new`.
        #[arg(long)]
        csr: PathBuf,
        /// What the certificate is for: the broker, a node, an agency, an
        /// auditor or a national CA.
        #[arg(long, value_enum)]
        role: PartyRole,
        #[command(flatten)]
        who: Who,
        /// A DNS name the party serves on (repeat for more).
        #[arg(long)]
        dns: Vec<String>,
        /// An IP address the party serves on (repeat for more).
        #[arg(long)]
        ip: Vec<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Where to write the certificate (PEM; a national CA's agencies get
        /// the chain: their certificate, then the national CA's).
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs `keys ...`.
pub fn run_keys(cmd: KeysCmd) -> anyhow::Result<bool> {
    let KeysCmd::New {
        role,
        who,
        federation,
        out,
    } = cmd;
    let Subject::Party(party) = who.subject(role)? else {
        bail!("keys new: a national CA's key is made with `casebridge ca init --country CC`");
    };
    let made = keys_new(&party, &federation, &out)?;
    println!(
        "{} key for {} written to {} (0600; it stays on this machine)",
        role_name(role),
        party.spiffe_uri(&federation),
        made.key.display()
    );
    println!(
        "  signing request: {} (send it to the CA)",
        made.csr.display()
    );
    for p in &made.public {
        println!(
            "  public key:      {} (send it to the directory's keeper)",
            p.display()
        );
    }
    if matches!(party, Role::Node(_)) {
        println!("  signing.key and hpke.key (0600) stay here too");
    }
    Ok(true)
}

/// Runs `ca ...`.
pub fn run_ca(cmd: CaCmd) -> anyhow::Result<bool> {
    match cmd {
        CaCmd::Init {
            out,
            federation,
            country,
            days,
        } => {
            let country = country.as_deref().map(parse_country).transpose()?;
            ca_init(&out, &federation, country, days)?;
            match country {
                None => println!(
                    "federation root CA written to {}: ca.crt goes to every party, ca.key (0600)                      stays here",
                    out.display()
                ),
                Some(cc) => println!(
                    "national CA of {cc}: key in {} (0600); have the root sign {} with `casebridge                      ca issue --role national-ca --country {cc}` and put the certificate at {}",
                    out.join("ca.key").display(),
                    out.join("ca.csr").display(),
                    out.join("ca.crt").display()
                ),
            }
            Ok(true)
        }
        CaCmd::Issue {
            ca,
            csr,
            role,
            who,
            dns,
            ip,
            days,
            out,
        } => {
            let ca_dir = load_ca_dir(&ca)?;
            let request = read_csr(&csr)?;
            let req = IssueRequest {
                subject: who.subject(role)?,
                dns,
                ips: parse_ips(&ip)?,
                days,
            };
            let pem = issue(&ca_dir, &request, &req)
                .with_context(|| format!("{} not issued", csr.display()))?;
            write_file(&out, pem.as_bytes())?;
            let what = match &req.subject {
                Subject::Party(r) => r.spiffe_uri(&ca_dir.info.federation),
                Subject::NationalCa(cc) => format!("the national CA of {cc}"),
            };
            println!(
                "{}: certificate for {what}, valid {days} days",
                out.display()
            );
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FED: &str = "casebridge.test";

    struct Setup {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        hr: PathBuf,
        base: PathBuf,
    }

    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        ca_init(&root, FED, None, 3650).unwrap();
        let hr = tmp.path().join("hr-ca");
        ca_init(&hr, FED, Some("HR".parse().unwrap()), 1825).unwrap();
        let root_ca = load_ca_dir(&root).unwrap();
        let pem = issue(
            &root_ca,
            &read_csr(&hr.join("ca.csr")).unwrap(),
            &IssueRequest {
                subject: Subject::NationalCa("HR".parse().unwrap()),
                dns: vec![],
                ips: vec![],
                days: 1825,
            },
        )
        .unwrap();
        write_file(&hr.join("ca.crt"), pem.as_bytes()).unwrap();
        let base = tmp.path().to_path_buf();
        Setup {
            _tmp: tmp,
            root,
            hr,
            base,
        }
    }

    fn request(s: &Setup, role: Role, dir: &str) -> CertificateSigningRequestParams {
        let keys = keys_new(&role, FED, &s.base.join(dir)).unwrap();
        read_csr(&keys.csr).unwrap()
    }

    fn party(role: Role, days: u32) -> IssueRequest {
        IssueRequest {
            subject: Subject::Party(role),
            dns: vec![],
            ips: vec![],
            days,
        }
    }

    fn refused(ca: &CaDir, csr: &CertificateSigningRequestParams, req: &IssueRequest) -> String {
        format!("{:#}", issue(ca, csr, req).expect_err("must be refused"))
    }

    fn parse(pem: &str) -> Vec<Vec<u8>> {
        use rustls_pki_types::pem::PemObject as _;
        rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
            .map(|c| c.unwrap().to_vec())
            .collect()
    }

    #[test]
    fn the_root_issues_a_node_certificate_for_its_names_from_the_request_key() {
        let s = setup();
        let node: Role = Role::Node("HR".parse().unwrap());
        let csr = request(&s, node.clone(), "hr-node");
        let root = load_ca_dir(&s.root).unwrap();
        let mut req = party(node, 90);
        req.dns = vec!["node-hr.example.org".into(), "hr.internal".into()];
        req.ips = parse_ips(&["127.0.0.2".into(), "::1".into()]).unwrap();
        let pem = issue(&root, &csr, &req).unwrap();
        let ders = parse(&pem);
        assert_eq!(ders.len(), 1, "the root's leaves carry no chain");
        let (_, cert) = x509_parser::parse_x509_certificate(&ders[0]).unwrap();
        let (_, root_cert) =
            x509_parser::parse_x509_certificate(root.ca.cert_der.as_ref()).unwrap();
        cert.verify_signature(Some(root_cert.public_key())).unwrap();
        assert_eq!(
            cert.public_key().subject_public_key.data.as_ref(),
            rcgen::PublicKeyData::der_bytes(&csr.public_key)
        );
        let names: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "URI(spiffe://casebridge.test/node/HR)",
                "DNSName(node-hr.example.org)",
                "DNSName(hr.internal)",
                "IPAddress(7f:00:00:02)",
                "IPAddress(00:00:00:00:00:00:00:00:00:00:00:00:00:00:00:01)",
            ],
            "{names:?}"
        );
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(days, 90);
        // The node's own keys are there, the public halves readable.
        crate::storage::files::keys::load_signing_key(&s.base.join("hr-node/signing.key")).unwrap();
        crate::storage::files::directory::load_public_key(&s.base.join("hr-node/signing.pub"))
            .unwrap();
        crate::tools::directory_cli::load_hpke_public(&s.base.join("hr-node/hpke.pub")).unwrap();
        // And the key file is a loadable TLS identity with the certificate.
        write_file(&s.base.join("hr-node/node.crt"), pem.as_bytes()).unwrap();
        crate::daemon::tls::Identity::load(
            &s.base.join("hr-node/node.crt"),
            &s.base.join("hr-node/node.key"),
        )
        .unwrap();
    }

    #[test]
    fn a_national_ca_issues_its_own_agencies_with_the_chain() {
        let s = setup();
        let id: AgencyId = "HR/police".parse().unwrap();
        let csr = request(&s, Role::Agency(id.clone()), "hr-police");
        let hr = load_ca_dir(&s.hr).unwrap();
        let pem = issue(&hr, &csr, &party(Role::Agency(id), 365)).unwrap();
        let ders = parse(&pem);
        assert_eq!(ders.len(), 2, "leaf, then the national CA");
        let (_, leaf) = x509_parser::parse_x509_certificate(&ders[0]).unwrap();
        let (_, national) = x509_parser::parse_x509_certificate(&ders[1]).unwrap();
        leaf.verify_signature(Some(national.public_key())).unwrap();
        let root = load_ca_dir(&s.root).unwrap();
        let (_, root_cert) =
            x509_parser::parse_x509_certificate(root.ca.cert_der.as_ref()).unwrap();
        national
            .verify_signature(Some(root_cert.public_key()))
            .unwrap();
        assert!(national.is_ca());
    }

    #[test]
    fn each_refusal_is_a_sentence() {
        let s = setup();
        let root = load_ca_dir(&s.root).unwrap();
        let hr = load_ca_dir(&s.hr).unwrap();
        let hr_police: AgencyId = "HR/police".parse().unwrap();
        let ba_police: AgencyId = "BA/police".parse().unwrap();
        let agency_csr = request(&s, Role::Agency(hr_police.clone()), "a");
        let ba_csr = request(&s, Role::Agency(ba_police.clone()), "b");
        let node_csr = request(&s, Role::Node("HR".parse().unwrap()), "n");

        // An agency at the root.
        let e = refused(
            &root,
            &agency_csr,
            &party(Role::Agency(hr_police.clone()), 30),
        );
        assert!(e.contains("does not issue agency certificates"), "{e}");
        // Another country's agency at a national CA.
        let e = refused(&hr, &ba_csr, &party(Role::Agency(ba_police.clone()), 30));
        assert!(
            e.contains("issues only HR's agencies, not BA/police"),
            "{e}"
        );
        // A node at a national CA.
        let e = refused(
            &hr,
            &node_csr,
            &party(Role::Node("HR".parse().unwrap()), 30),
        );
        assert!(e.contains("issues only HR's agencies"), "{e}");
        // The command line names another party than the request.
        let e = refused(
            &root,
            &node_csr,
            &party(Role::Node("BA".parse().unwrap()), 30),
        );
        assert!(
            e.contains("the request asks for spiffe://casebridge.test/node/HR"),
            "{e}"
        );
        let e = refused(
            &hr,
            &agency_csr,
            &party(Role::Agency("HR/prosecutor".parse().unwrap()), 30),
        );
        assert!(e.contains("but the command line says"), "{e}");
        let e = refused(&root, &node_csr, &party(Role::Broker, 30));
        assert!(
            e.contains("but the command line says spiffe://casebridge.test/broker"),
            "{e}"
        );
        // A request for a national CA that names a party.
        let e = refused(
            &root,
            &node_csr,
            &IssueRequest {
                subject: Subject::NationalCa("HR".parse().unwrap()),
                dns: vec![],
                ips: vec![],
                days: 30,
            },
        );
        assert!(e.contains("names no SPIFFE id"), "{e}");
        // Validity: none, too long, or beyond the CA's own.
        let e = refused(
            &root,
            &node_csr,
            &party(Role::Node("HR".parse().unwrap()), 0),
        );
        assert!(e.contains("valid for 1 to"), "{e}");
        let e = refused(
            &hr,
            &agency_csr,
            &party(Role::Agency(hr_police.clone()), 3000),
        );
        assert!(e.contains("outlive the CA's own"), "{e}");
        // Names on a client.
        let mut req = party(Role::Agency(hr_police), 30);
        req.dns = vec!["x.example".into()];
        let e = refused(&hr, &agency_csr, &req);
        assert!(e.contains("clients only"), "{e}");
        // A bad DNS name.
        let mut req = party(Role::Node("HR".parse().unwrap()), 30);
        req.dns = vec!["not a name".into()];
        let e = refused(&root, &node_csr, &req);
        assert!(e.contains("is not a DNS name"), "{e}");
        assert!(
            parse_ips(&["1.2.3".into()])
                .unwrap_err()
                .to_string()
                .contains("not an IP")
        );
    }

    #[test]
    fn a_request_whose_signature_does_not_verify_is_refused() {
        let s = setup();
        let keys = keys_new(&Role::Node("HR".parse().unwrap()), FED, &s.base.join("n")).unwrap();
        let pem = std::fs::read_to_string(&keys.csr).unwrap();
        use rustls_pki_types::pem::PemObject as _;
        let der: Vec<u8> =
            rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec();
        // Change one byte of the signed content (the SPIFFE id's country)
        // and, separately, one byte of the signature.
        let at = der
            .windows(7)
            .position(|w| w == b"node/HR")
            .expect("the SPIFFE id is in the request")
            + 5;
        for (i, b) in [(at, b'B'), (der.len() - 1, der[der.len() - 1] ^ 1)] {
            let mut bad = der.clone();
            bad[i] = b;
            let text = keys::to_pem(&bad, "CERTIFICATE REQUEST");
            let e = format!("{:#}", parse_csr(&text).unwrap_err());
            assert!(e.contains("signature does not verify"), "{e}");
        }
        let e = format!("{:#}", parse_csr("hello").unwrap_err());
        assert!(e.contains("not a PEM certificate signing request"), "{e}");
        let big = s.base.join("big.csr");
        std::fs::write(&big, vec![b'A'; 70_000]).unwrap();
        assert!(format!("{:#}", read_csr(&big).unwrap_err()).contains("larger than"));
    }

    #[test]
    fn keys_and_cas_are_made_once_with_private_files_0600() {
        use std::os::unix::fs::PermissionsExt;
        let s = setup();
        let dir = s.base.join("broker");
        let k = keys_new(&Role::Broker, FED, &dir).unwrap();
        assert_eq!(k.public, [dir.join("log.pub")]);
        for f in ["broker.key", "log.key"] {
            let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        let e = keys_new(&Role::Broker, FED, &dir).unwrap_err().to_string();
        assert!(e.contains("already exists"), "{e}");
        let e = ca_init(&s.root, FED, None, 10).unwrap_err().to_string();
        assert!(e.contains("already holds a CA"), "{e}");
        let e = keys_new(&Role::Auditor("Bad Name".into()), FED, &s.base.join("x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a valid SPIFFE id"), "{e}");
        // A national CA not yet signed by the root cannot issue.
        let de = s.base.join("de-ca");
        ca_init(&de, FED, Some("DE".parse().unwrap()), 100).unwrap();
        let e = load_ca_dir(&de).err().unwrap().to_string();
        assert!(e.contains("has no ca.crt yet"), "{e}");
        // Nor with another CA's certificate.
        std::fs::copy(s.hr.join("ca.crt"), de.join("ca.crt")).unwrap();
        let e = load_ca_dir(&de).err().unwrap().to_string();
        assert!(e.contains("does not certify the key"), "{e}");
        // Options that do not belong to the role.
        let who = Who {
            country: Some("HR".into()),
            ..Default::default()
        };
        assert!(
            who.subject(PartyRole::Broker)
                .unwrap_err()
                .to_string()
                .contains("does not apply")
        );
        assert!(
            Who::default()
                .subject(PartyRole::Node)
                .unwrap_err()
                .to_string()
                .contains("needs --country")
        );
    }
}

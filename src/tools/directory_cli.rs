//! `casebridge directory ...`: read and edit the federation's signed
//! directory, with the directory key kept offline.
//!
//! The workflow has two halves. Edits (`add-country`, `add-agency`,
//! `revoke`, ...) need only the signed directory and the pinned directory
//! public key: they verify `directory.bin`, apply the change to an unsigned
//! draft next to it (`directory.draft.bin`, made from the signed directory
//! on the first edit), check that the result is a directory every party
//! would accept, and write the draft. `sign` is the only step that needs the
//! directory private key: it checks the draft again, raises the version,
//! sets the issue time, signs, and replaces `directory.bin` atomically. The
//! draft carries the version it was made from, so a draft made before
//! another signing is refused rather than undoing that signing's changes.
//!
//! Run the edits anywhere, carry the draft to the machine holding the key,
//! sign there, and carry `directory.bin` back: only the draft (nothing
//! secret) and the signed directory travel.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use prost::Message as _;

use crate::protocol::directory::Directory;
use crate::protocol::ids::{AgencyId, Country, Role};
use crate::protocol::keys::{self, SigningKey};
use crate::protocol::proto::v1;

/// The largest directory or draft file read.
pub const MAX_DIRECTORY_BYTES: u64 = 16 * 1024 * 1024;

/// The files an edit works on.
#[derive(Args, Debug, Clone)]
pub struct DirFiles {
    /// The signed directory.
    #[arg(long, default_value = "directory.bin")]
    pub directory: PathBuf,
    /// The pinned directory public key (hex), e.g. ca/directory.pub.
    #[arg(long)]
    pub directory_key: PathBuf,
    /// The unsigned draft the edits go to; default: directory.draft.bin
    /// next to --directory.
    #[arg(long)]
    pub draft: Option<PathBuf>,
}

impl DirFiles {
    pub fn draft_path(&self) -> PathBuf {
        draft_path(&self.directory, self.draft.as_deref())
    }
}

fn draft_path(directory: &Path, draft: Option<&Path>) -> PathBuf {
    match draft {
        Some(d) => d.to_path_buf(),
        None => directory.with_file_name("directory.draft.bin"),
    }
}

/// A country's legal regime.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    /// A member of the European Union.
    EuMember,
    /// Not a member: transfers to it from members need a third-country ground.
    NonMember,
}

impl Regime {
    pub fn to_proto(self) -> v1::LegalRegime {
        match self {
            Regime::EuMember => v1::LegalRegime::EuMember,
            Regime::NonMember => v1::LegalRegime::NonMember,
        }
    }
}

/// What `revoke` revokes.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct RevokeTarget {
    /// A node, by its country: its keys are no longer accepted.
    #[arg(long)]
    pub node: Option<String>,
    /// An agency, CC/name.
    #[arg(long)]
    pub agency: Option<String>,
    /// An auditor, by name.
    #[arg(long)]
    pub auditor: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum DirectoryCmd {
    /// Start a federation's directory: make the directory key pair
    /// (directory.key, 0600, and directory.pub, which every party pins) and
    /// the signed directory's first version, which lists only the broker's
    /// audit log. Countries, agencies and auditors are added with the edits.
    Init {
        /// Where to write directory.key, directory.pub and directory.bin.
        #[arg(long)]
        out: PathBuf,
        /// The federation's SPIFFE trust domain.
        #[arg(long, default_value = "casebridge.test")]
        federation: String,
        /// The broker's audit log public key (log.pub, from `keys new --role broker`).
        #[arg(long)]
        log_key: PathBuf,
    },
    /// Print the signed directory (or with --draft the pending draft):
    /// version, issue time, nodes with regime, key fingerprints, validity
    /// and revocation, agencies, auditors and the audit log's key.
    Show {
        #[command(flatten)]
        files: DirFiles,
        /// Show the pending draft instead of the signed directory.
        #[arg(long = "show-draft")]
        show_draft: bool,
    },
    /// Add a country: its node's public keys (as `keys new --role node`
    /// writes them), its national CA certificate and its legal regime.
    AddCountry {
        #[command(flatten)]
        files: DirFiles,
        /// Two-letter country code.
        #[arg(long)]
        country: String,
        /// The country's legal regime.
        #[arg(long, value_enum)]
        regime: Regime,
        /// The node's Ed25519 public key file (signing.pub).
        #[arg(long)]
        signing_key: PathBuf,
        /// The node's X25519 HPKE public key file (hpke.pub).
        #[arg(long)]
        hpke_key: PathBuf,
        /// The country's national CA certificate (PEM), which issues its
        /// agencies' certificates; the directory pins its SHA-256.
        #[arg(long)]
        national_ca: PathBuf,
        /// How many days from now the node's keys are valid.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Remove a country that has no agencies left.
    RemoveCountry {
        #[command(flatten)]
        files: DirFiles,
        /// Two-letter country code.
        #[arg(long)]
        country: String,
    },
    /// Set a country's legal regime.
    SetRegime {
        #[command(flatten)]
        files: DirFiles,
        /// Two-letter country code.
        #[arg(long)]
        country: String,
        /// The country's new legal regime.
        #[arg(long, value_enum)]
        regime: Regime,
    },
    /// Add an agency of a country already in the directory.
    AddAgency {
        #[command(flatten)]
        files: DirFiles,
        /// CC/name, e.g. HR/police.
        #[arg(long)]
        agency: String,
        /// The agency's kind, e.g. criminal-police, prosecutor, border-police,
        /// customs, interior-ministry, missing-persons, red-cross-tracing,
        /// labour-inspection.
        #[arg(long)]
        kind: String,
        /// The name people read, e.g. "Criminal police (HR)".
        #[arg(long)]
        display_name: String,
    },
    /// Remove an agency.
    RemoveAgency {
        #[command(flatten)]
        files: DirFiles,
        /// CC/name, e.g. HR/police.
        #[arg(long)]
        agency: String,
    },
    /// Add an auditor.
    AddAuditor {
        #[command(flatten)]
        files: DirFiles,
        /// Lower-case letters, digits and '-'.
        #[arg(long)]
        name: String,
    },
    /// Remove an auditor.
    RemoveAuditor {
        #[command(flatten)]
        files: DirFiles,
        /// The auditor's name in the directory.
        #[arg(long)]
        name: String,
    },
    /// Revoke a node, an agency or an auditor (it stays listed, refused).
    Revoke {
        #[command(flatten)]
        files: DirFiles,
        #[command(flatten)]
        target: RevokeTarget,
    },
    /// Rotate a node's keys: the new pair (from `casebridge node new-keys`)
    /// becomes current and the current pair is kept, retired, for the
    /// overlap, so that records sealed to it or signed with it before every
    /// party has the new directory still open and verify. At most 4 retired
    /// pairs are kept: those whose overlap is over are dropped first, and
    /// the edit is refused if that is not enough.
    RotateNode {
        #[command(flatten)]
        files: DirFiles,
        /// Two-letter country code of the node.
        #[arg(long)]
        country: String,
        /// The new Ed25519 public key: 64 hex digits, or a file holding them
        /// (next-signing.pub).
        #[arg(long)]
        signing_key: String,
        /// The new X25519 HPKE public key: 64 hex digits, or a file holding
        /// them (next-hpke.pub).
        #[arg(long)]
        hpke_key: String,
        /// How many hours from now the old pair stays valid. Longer than
        /// the time a record may wait at the broker plus the node's switch
        /// delay; 0 ends it at once (for a compromised key: records in
        /// flight are then refused).
        #[arg(long)]
        overlap_hours: u32,
    },
    /// Sign the draft with the directory key: the version goes up, the
    /// issue time is now, and the signed directory replaces --directory
    /// atomically. The only step that needs the private key.
    Sign {
        /// The signed directory to replace.
        #[arg(long, default_value = "directory.bin")]
        directory: PathBuf,
        /// The draft; default: directory.draft.bin next to --directory.
        #[arg(long)]
        draft: Option<PathBuf>,
        /// The directory private key (PKCS#8 PEM, 0600), e.g. ca/directory.key.
        #[arg(long)]
        key: PathBuf,
        /// The new version; default: one more than the signed directory's.
        /// It must be higher than the signed directory's.
        #[arg(long)]
        version: Option<u64>,
    },
}

/// Runs a `directory` subcommand.
pub fn run(cmd: DirectoryCmd) -> anyhow::Result<bool> {
    let now = crate::daemon::clock::now_ms();
    match cmd {
        DirectoryCmd::Init {
            out,
            federation,
            log_key,
        } => {
            let log = crate::storage::files::directory::load_public_key(&log_key)?;
            init(&out, &federation, log, now)?;
            println!(
                "directory of {federation} started in {}: directory.bin (version 1),                  directory.pub (every party pins it), directory.key (0600; keep it offline)",
                out.display()
            );
            Ok(true)
        }
        DirectoryCmd::Show { files, show_draft } => {
            let (dir, key) = load_signed(&files.directory, &files.directory_key)?;
            let draft = files.draft_path();
            if show_draft {
                let d = load_draft(&draft)?
                    .with_context(|| format!("there is no draft at {}", draft.display()))?;
                print!("{}", render(&d, None));
                println!(
                    "(unsigned draft made from version {}; `casebridge directory sign` signs it)",
                    d.version
                );
            } else {
                print!("{}", render(&dir, Some(&key)));
                if draft.exists() {
                    println!(
                        "a draft with pending edits is at {} (--show-draft prints it)",
                        draft.display()
                    );
                }
            }
            Ok(true)
        }
        DirectoryCmd::AddCountry {
            files,
            country,
            regime,
            signing_key,
            hpke_key,
            national_ca,
            days,
        } => {
            let cc = parse_country(&country)?;
            let signing = crate::storage::files::directory::load_public_key(&signing_key)?;
            let hpke = load_hpke_public(&hpke_key)?;
            let ca = load_cert_der(&national_ca)?;
            edit(&files, |d| {
                add_country(d, cc, regime, signing, hpke, &ca, days, now)
            })
        }
        DirectoryCmd::RemoveCountry { files, country } => {
            let cc = parse_country(&country)?;
            edit(&files, |d| remove_country(d, cc))
        }
        DirectoryCmd::SetRegime {
            files,
            country,
            regime,
        } => {
            let cc = parse_country(&country)?;
            edit(&files, |d| set_regime(d, cc, regime))
        }
        DirectoryCmd::AddAgency {
            files,
            agency,
            kind,
            display_name,
        } => {
            let id: AgencyId = agency.parse()?;
            let kind = parse_agency_kind(&kind)?;
            edit(&files, |d| add_agency(d, &id, kind, &display_name))
        }
        DirectoryCmd::RemoveAgency { files, agency } => {
            let id: AgencyId = agency.parse()?;
            edit(&files, |d| remove_agency(d, &id))
        }
        DirectoryCmd::AddAuditor { files, name } => edit(&files, |d| add_auditor(d, &name)),
        DirectoryCmd::RemoveAuditor { files, name } => edit(&files, |d| remove_auditor(d, &name)),
        DirectoryCmd::Revoke { files, target } => {
            let target = if let Some(cc) = &target.node {
                Revocation::Node(parse_country(cc)?)
            } else if let Some(a) = &target.agency {
                Revocation::Agency(a.parse()?)
            } else if let Some(n) = &target.auditor {
                Revocation::Auditor(n.clone())
            } else {
                bail!("revoke: say what to revoke: --node CC, --agency CC/name or --auditor NAME");
            };
            edit(&files, |d| revoke(d, &target))
        }
        DirectoryCmd::RotateNode {
            files,
            country,
            signing_key,
            hpke_key,
            overlap_hours,
        } => {
            let cc = parse_country(&country)?;
            let signing = public_key_arg("--signing-key", &signing_key)?;
            let hpke = public_key_arg("--hpke-key", &hpke_key)?;
            if keys::hpke_public_from_bytes(&hpke).is_none() {
                bail!("--hpke-key is not an X25519 public key");
            }
            edit(&files, |d| {
                rotate_node(d, cc, signing, hpke, overlap_hours, now)
            })
        }
        DirectoryCmd::Sign {
            directory,
            draft,
            key,
            version,
        } => {
            let draft = draft_path(&directory, draft.as_deref());
            let key = crate::storage::files::keys::load_signing_key(&key)?;
            let signed = sign(&directory, &draft, &key, version, now)?;
            println!(
                "{}: version {} signed, issued {}; the draft {} is removed. Give the broker this \
                 file to distribute.",
                directory.display(),
                signed.version,
                crate::protocol::time::format_ms(signed.issued_at_ms),
                draft.display()
            );
            Ok(true)
        }
    }
}

fn parse_country(s: &str) -> anyhow::Result<Country> {
    Ok(s.trim().parse()?)
}

/// Parses an agency kind as `criminal-police`, `criminal_police` or the
/// protobuf name; an unknown one is an error listing the valid ones.
pub fn parse_agency_kind(s: &str) -> anyhow::Result<v1::AgencyKind> {
    let upper = s.trim().to_ascii_uppercase().replace('-', "_");
    let name = if upper.starts_with("AGENCY_KIND_") {
        upper
    } else {
        format!("AGENCY_KIND_{upper}")
    };
    match v1::AgencyKind::from_str_name(&name) {
        Some(k) if k != v1::AgencyKind::Unspecified => Ok(k),
        _ => bail!(
            "unknown agency kind {}: valid kinds are {}",
            crate::protocol::bounds::quoted(s),
            agency_kinds().join(", ")
        ),
    }
}

fn agency_kinds() -> Vec<String> {
    (1..=i32::from(u8::MAX))
        .map_while(|i| v1::AgencyKind::try_from(i).ok())
        .map(kind_name)
        .collect()
}

/// `criminal-police` for `AGENCY_KIND_CRIMINAL_POLICE`.
pub fn kind_name(k: v1::AgencyKind) -> String {
    k.as_str_name()
        .trim_start_matches("AGENCY_KIND_")
        .to_ascii_lowercase()
        .replace('_', "-")
}

fn regime_name(r: v1::LegalRegime) -> &'static str {
    match r {
        v1::LegalRegime::EuMember => "eu-member",
        v1::LegalRegime::NonMember => "non-member",
        v1::LegalRegime::Unspecified => "unspecified",
    }
}

fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut bytes = Vec::new();
    f.take(MAX_DIRECTORY_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > MAX_DIRECTORY_BYTES {
        bail!(
            "{} is larger than {MAX_DIRECTORY_BYTES} bytes; it is not a directory",
            path.display()
        );
    }
    Ok(bytes)
}

/// Reads the signed directory and verifies it against the public key file;
/// returns its content and the key.
pub fn load_signed(path: &Path, key_file: &Path) -> anyhow::Result<(v1::Directory, [u8; 32])> {
    let key = crate::storage::files::directory::load_public_key(key_file)?;
    Ok((verify_file(path, &key)?, key))
}

fn verify_file(path: &Path, key: &[u8; 32]) -> anyhow::Result<v1::Directory> {
    let bytes = read_bounded(path)?;
    let signed = v1::SignedDirectory::decode(bytes.as_slice())
        .map_err(|_| anyhow::anyhow!("{}: not a signed directory", path.display()))?;
    // The federation is the one the directory names: the signature is what
    // binds it to this federation's key.
    let federation = v1::Directory::decode(signed.directory.as_slice())
        .map(|d| d.federation)
        .unwrap_or_default();
    let dir = Directory::verify(&signed, key, &federation)
        .with_context(|| format!("{}: directory refused", path.display()))?;
    v1::Directory::decode(dir.signed().directory.as_slice())
        .map_err(|_| anyhow::anyhow!("{}: not a directory", path.display()))
}

/// Reads the draft, if there is one.
pub fn load_draft(path: &Path) -> anyhow::Result<Option<v1::Directory>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = read_bounded(path)?;
    v1::Directory::decode(bytes.as_slice())
        .map(Some)
        .map_err(|_| anyhow::anyhow!("{}: not a directory draft", path.display()))
}

/// Checks that `dir` is a directory the parties accept: the same checks a
/// node makes on a signed one (made here with a throwaway key), and names
/// unique.
pub fn check(dir: &v1::Directory) -> anyhow::Result<()> {
    let (k, _) = SigningKey::generate()?;
    Directory::verify(&Directory::sign(dir, &k), &k.public_key(), &dir.federation)
        .map_err(|e| anyhow::anyhow!("the result would be refused: {e}"))?;
    let mut names = std::collections::BTreeSet::new();
    for a in &dir.auditors {
        if !names.insert(a.name.as_str()) {
            bail!(
                "the result would be refused: auditor {} listed twice",
                a.name
            );
        }
    }
    Ok(())
}

/// Applies one edit: to the draft if there is one, else to a new draft made
/// from the signed directory; the result must [`check`]. Writes the draft
/// atomically and prints what changed.
pub fn edit(
    files: &DirFiles,
    change: impl FnOnce(&mut v1::Directory) -> anyhow::Result<String>,
) -> anyhow::Result<bool> {
    let (signed, _) = load_signed(&files.directory, &files.directory_key)?;
    let path = files.draft_path();
    let mut draft = match load_draft(&path)? {
        Some(d) => {
            if d.version != signed.version {
                bail!(
                    "the draft {} was made from directory version {}, but {} is now version {}: \
                     it was signed since. Remove the draft and make the edits again on the new \
                     version",
                    path.display(),
                    d.version,
                    files.directory.display(),
                    signed.version
                );
            }
            d
        }
        None => signed,
    };
    let said = change(&mut draft)?;
    check(&draft)?;
    crate::storage::write_private(&path, &draft.encode_to_vec())
        .with_context(|| format!("writing {}", path.display()))?;
    println!(
        "{said}; draft {} written (sign it with `casebridge directory sign`)",
        path.display()
    );
    Ok(true)
}

/// Signs the draft at `draft` as the successor of the signed directory at
/// `directory`, replaces `directory` atomically and removes the draft.
pub fn sign(
    directory: &Path,
    draft: &Path,
    key: &SigningKey,
    version: Option<u64>,
    now_ms: i64,
) -> anyhow::Result<v1::Directory> {
    let current = verify_file(directory, &key.public_key()).with_context(|| {
        "the signed directory does not verify with this key: is it the federation's directory key?"
    })?;
    let Some(mut next) = load_draft(draft)? else {
        bail!(
            "there is no draft at {}: make the changes first (add-country, add-agency, revoke, ...)",
            draft.display()
        );
    };
    if next.version != current.version {
        bail!(
            "the draft {} was made from directory version {}, but {} is version {}: remove the \
             draft and make the edits again on the new version",
            draft.display(),
            next.version,
            directory.display(),
            current.version
        );
    }
    let version = match version {
        Some(v) if v <= current.version => bail!(
            "version {v} does not increase on the signed directory's version {}: every party \
             refuses a directory that is not newer than the one it has",
            current.version
        ),
        Some(v) => v,
        None => current
            .version
            .checked_add(1)
            .context("the directory version cannot go higher")?,
    };
    next.version = version;
    next.issued_at_ms = now_ms.max(current.issued_at_ms);
    check(&next)?;
    let signed = Directory::sign(&next, key);
    crate::storage::write_private(directory, &signed.encode_to_vec())
        .with_context(|| format!("writing {}", directory.display()))?;
    std::fs::remove_file(draft).with_context(|| format!("removing {}", draft.display()))?;
    Ok(next)
}

/// Writes a new directory key pair and the first signed directory into
/// `out`; refuses to overwrite a key.
pub fn init(out: &Path, federation: &str, log_key: [u8; 32], now_ms: i64) -> anyhow::Result<()> {
    if out.join("directory.key").exists() {
        bail!("{} already holds a directory key", out.display());
    }
    if Role::from_spiffe_uri(&Role::Broker.spiffe_uri(federation), federation).is_err() {
        bail!(
            "{} is not a valid trust domain",
            crate::protocol::bounds::quoted(federation)
        );
    }
    if !out.exists() {
        crate::storage::create_private_dir(out)
            .with_context(|| format!("creating {}", out.display()))?;
    }
    let key = crate::tools::ca::write_signing_pair(out, "directory")?;
    let dir = v1::Directory {
        version: 1,
        federation: federation.to_string(),
        issued_at_ms: now_ms,
        log: Some(v1::TransparencyLog {
            origin: format!("{federation}/audit-log"),
            public_key: log_key.to_vec(),
        }),
        ..Default::default()
    };
    check(&dir)?;
    let path = out.join("directory.bin");
    crate::storage::write_private(&path, &Directory::sign(&dir, &key).encode_to_vec())
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads a raw X25519 public key file (hex, one line).
pub fn load_hpke_public(path: &Path) -> anyhow::Result<[u8; 32]> {
    let raw = crate::storage::files::directory::load_public_key(path)?;
    if keys::hpke_public_from_bytes(&raw).is_none() {
        bail!("{}: not an X25519 public key", path.display());
    }
    Ok(raw)
}

/// Reads the first certificate of a PEM file, as DER.
pub fn load_cert_der(path: &Path) -> anyhow::Result<Vec<u8>> {
    let certs = crate::daemon::tls::load_certs(path)?;
    let first = certs
        .into_iter()
        .next()
        .with_context(|| format!("{}: no certificate in it", path.display()))?;
    Ok(first.as_ref().to_vec())
}

/// Adds a country's node.
#[allow(clippy::too_many_arguments)]
pub fn add_country(
    d: &mut v1::Directory,
    cc: Country,
    regime: Regime,
    signing_key: [u8; 32],
    hpke_key: [u8; 32],
    national_ca_der: &[u8],
    days: u32,
    now_ms: i64,
) -> anyhow::Result<String> {
    if d.nodes.iter().any(|n| n.country == cc.as_str()) {
        bail!("{cc} is already in the directory; to change its keys, rotate them");
    }
    if days == 0 {
        bail!("--days 0: the node's keys would never be valid");
    }
    if d.nodes.iter().any(|n| n.signing_key == signing_key) {
        bail!("another node already has this signing key; each node makes its own");
    }
    d.nodes.push(v1::NodeEntry {
        country: cc.to_string(),
        signing_key: signing_key.to_vec(),
        hpke_key: hpke_key.to_vec(),
        not_before_ms: now_ms - 3_600_000,
        not_after_ms: now_ms.saturating_add(i64::from(days) * 86_400_000),
        revoked: false,
        regime: regime.to_proto() as i32,
        national_ca_sha256: crate::protocol::envelope::sha256(national_ca_der).to_vec(),
        previous: Vec::new(),
    });
    Ok(format!(
        "country {cc} added ({}), its node's keys valid for {days} days",
        regime_name(regime.to_proto())
    ))
}

/// A public key given on the command line: 64 hex digits, or the name of a
/// file holding them.
fn public_key_arg(option: &str, arg: &str) -> anyhow::Result<[u8; 32]> {
    let text = arg.trim();
    if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut key = [0u8; 32];
        hex::decode_to_slice(text, &mut key)
            .with_context(|| format!("{option}: not a hex public key"))?;
        return Ok(key);
    }
    crate::storage::files::directory::load_public_key(Path::new(arg))
        .with_context(|| format!("{option}: neither 64 hex digits nor a readable key file"))
}

/// Rotates node `cc`'s keys: `signing` and `hpke` become current, the
/// current pair is retired until `overlap_hours` from `now_ms`. Retired
/// pairs whose overlap is over are dropped; at most
/// [`MAX_RETIRED_KEYS`](crate::protocol::directory::MAX_RETIRED_KEYS) stay.
pub fn rotate_node(
    d: &mut v1::Directory,
    cc: Country,
    signing: [u8; 32],
    hpke: [u8; 32],
    overlap_hours: u32,
    now_ms: i64,
) -> anyhow::Result<String> {
    use crate::protocol::directory::MAX_RETIRED_KEYS;
    let n = node_mut(d, cc)?;
    if n.signing_key == signing || n.hpke_key == hpke {
        bail!(
            "node {cc} has these keys now: a rotation needs a new pair (casebridge node new-keys)"
        );
    }
    if n.previous
        .iter()
        .any(|r| r.signing_key == signing || r.hpke_key == hpke)
    {
        bail!(
            "node {cc} used these keys before: a rotation needs a new pair (casebridge node new-keys)"
        );
    }
    let before = n.previous.len();
    n.previous.retain(|r| r.valid_until_ms > now_ms);
    let dropped = before - n.previous.len();
    if n.previous.len() >= MAX_RETIRED_KEYS {
        let first_end = n
            .previous
            .iter()
            .map(|r| r.valid_until_ms)
            .min()
            .unwrap_or(now_ms);
        bail!(
            "node {cc} has {MAX_RETIRED_KEYS} retired key pairs still within their overlap, the \
             most a directory keeps; rotate again after {}",
            crate::protocol::time::format_ms(first_end)
        );
    }
    let valid_until_ms = now_ms.saturating_add(i64::from(overlap_hours) * 3_600_000);
    n.previous.push(v1::RetiredKeys {
        signing_key: std::mem::replace(&mut n.signing_key, signing.to_vec()),
        hpke_key: std::mem::replace(&mut n.hpke_key, hpke.to_vec()),
        valid_until_ms,
    });
    let dropped = match dropped {
        0 => String::new(),
        1 => "; 1 retired pair past its overlap dropped".into(),
        k => format!("; {k} retired pairs past their overlap dropped"),
    };
    Ok(format!(
        "node {cc}: signing key {} and HPKE key {} current; the old pair stays valid until {} \
         ({overlap_hours} h){dropped}",
        fingerprint(&signing),
        fingerprint(&hpke),
        crate::protocol::time::format_ms(valid_until_ms),
    ))
}

fn node_mut(d: &mut v1::Directory, cc: Country) -> anyhow::Result<&mut v1::NodeEntry> {
    d.nodes
        .iter_mut()
        .find(|n| n.country == cc.as_str())
        .with_context(|| format!("{cc} is not in the directory"))
}

/// Removes a country with no agencies left.
pub fn remove_country(d: &mut v1::Directory, cc: Country) -> anyhow::Result<String> {
    node_mut(d, cc)?;
    let prefix = format!("{cc}/");
    let left: Vec<&str> = d
        .agencies
        .iter()
        .filter(|a| a.id.starts_with(&prefix))
        .map(|a| a.id.as_str())
        .collect();
    if !left.is_empty() {
        bail!(
            "{cc} still has agencies ({}): remove them first, or revoke the node (revoke --node {cc})",
            left.join(", ")
        );
    }
    d.nodes.retain(|n| n.country != cc.as_str());
    Ok(format!("country {cc} removed"))
}

/// Sets a country's legal regime.
pub fn set_regime(d: &mut v1::Directory, cc: Country, regime: Regime) -> anyhow::Result<String> {
    let n = node_mut(d, cc)?;
    if n.regime() == regime.to_proto() {
        bail!("{cc} is already {}", regime_name(regime.to_proto()));
    }
    n.regime = regime.to_proto() as i32;
    Ok(format!("{cc} is now {}", regime_name(regime.to_proto())))
}

/// Adds an agency of a listed country.
pub fn add_agency(
    d: &mut v1::Directory,
    id: &AgencyId,
    kind: v1::AgencyKind,
    display_name: &str,
) -> anyhow::Result<String> {
    let cc = id.country();
    if !d.nodes.iter().any(|n| n.country == cc.as_str()) {
        bail!("agency {id}: {cc} has no node in the directory; add the country first");
    }
    if d.agencies.iter().any(|a| a.id == id.to_string()) {
        bail!("agency {id} is already in the directory");
    }
    if kind == v1::AgencyKind::Unspecified {
        bail!("agency {id}: say its kind");
    }
    let display_name = display_name.trim();
    if display_name.is_empty() || display_name.len() > 200 {
        bail!("agency {id}: the display name must be 1 to 200 bytes");
    }
    d.agencies.push(v1::AgencyEntry {
        id: id.to_string(),
        kind: kind as i32,
        display_name: display_name.to_string(),
        revoked: false,
    });
    Ok(format!("agency {id} ({}) added", kind_name(kind)))
}

/// Removes an agency.
pub fn remove_agency(d: &mut v1::Directory, id: &AgencyId) -> anyhow::Result<String> {
    let before = d.agencies.len();
    d.agencies.retain(|a| a.id != id.to_string());
    if d.agencies.len() == before {
        bail!("agency {id} is not in the directory");
    }
    Ok(format!("agency {id} removed"))
}

/// Adds an auditor.
pub fn add_auditor(d: &mut v1::Directory, name: &str) -> anyhow::Result<String> {
    let role = Role::Auditor(name.to_string());
    if Role::from_spiffe_uri(&role.spiffe_uri(&d.federation), &d.federation).is_err() {
        bail!(
            "auditor name {}: use lower-case letters, digits and '-'",
            crate::protocol::bounds::quoted(name)
        );
    }
    if d.auditors.iter().any(|a| a.name == name) {
        bail!("auditor {name} is already in the directory");
    }
    d.auditors.push(v1::AuditorEntry {
        name: name.to_string(),
        revoked: false,
    });
    Ok(format!("auditor {name} added"))
}

/// Removes an auditor.
pub fn remove_auditor(d: &mut v1::Directory, name: &str) -> anyhow::Result<String> {
    let before = d.auditors.len();
    d.auditors.retain(|a| a.name != name);
    if d.auditors.len() == before {
        bail!(
            "auditor {} is not in the directory",
            crate::protocol::bounds::quoted(name)
        );
    }
    Ok(format!("auditor {name} removed"))
}

/// What to revoke.
#[derive(Debug, Clone)]
pub enum Revocation {
    Node(Country),
    Agency(AgencyId),
    Auditor(String),
}

/// Revokes a node, an agency or an auditor.
pub fn revoke(d: &mut v1::Directory, target: &Revocation) -> anyhow::Result<String> {
    let (flag, what) = match target {
        Revocation::Node(cc) => (&mut node_mut(d, *cc)?.revoked, format!("node {cc}")),
        Revocation::Agency(id) => (
            &mut d
                .agencies
                .iter_mut()
                .find(|a| a.id == id.to_string())
                .with_context(|| format!("agency {id} is not in the directory"))?
                .revoked,
            format!("agency {id}"),
        ),
        Revocation::Auditor(name) => (
            &mut d
                .auditors
                .iter_mut()
                .find(|a| &a.name == name)
                .with_context(|| {
                    format!(
                        "auditor {} is not in the directory",
                        crate::protocol::bounds::quoted(name)
                    )
                })?
                .revoked,
            format!("auditor {name}"),
        ),
    };
    if *flag {
        bail!("{what} is already revoked");
    }
    *flag = true;
    Ok(format!("{what} revoked"))
}

/// A short fingerprint of a key: the first 8 bytes of its SHA-256, in hex.
pub fn fingerprint(bytes: &[u8]) -> String {
    hex::encode(&crate::protocol::envelope::sha256(bytes)[..8])
}

/// The readable listing `show` prints.
pub fn render(d: &v1::Directory, key: Option<&[u8; 32]>) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "directory of federation {}, version {}, issued {}",
        d.federation,
        d.version,
        crate::protocol::time::format_ms(d.issued_at_ms)
    );
    if let Some(k) = key {
        let _ = writeln!(s, "signed by directory key {}", fingerprint(k));
    }
    match &d.log {
        Some(l) => {
            let _ = writeln!(
                s,
                "audit log: origin {}, checkpoint key {}",
                l.origin,
                fingerprint(&l.public_key)
            );
        }
        None => {
            let _ = writeln!(s, "audit log: none pinned");
        }
    }
    let _ = writeln!(s, "nodes ({}):", d.nodes.len());
    for n in &d.nodes {
        let _ = writeln!(
            s,
            "  {}  {:<10}  signing {}  hpke {}  national CA {}  valid {} to {}{}",
            n.country,
            regime_name(n.regime()),
            fingerprint(&n.signing_key),
            fingerprint(&n.hpke_key),
            hex::encode(n.national_ca_sha256.get(..8).unwrap_or(&[])),
            crate::protocol::time::format_ms(n.not_before_ms),
            crate::protocol::time::format_ms(n.not_after_ms),
            if n.revoked { "  REVOKED" } else { "" }
        );
        for r in &n.previous {
            let _ = writeln!(
                s,
                "      retired: signing {}  hpke {}  valid until {}",
                fingerprint(&r.signing_key),
                fingerprint(&r.hpke_key),
                crate::protocol::time::format_ms(r.valid_until_ms),
            );
        }
    }
    let _ = writeln!(s, "agencies ({}):", d.agencies.len());
    let width = d.agencies.iter().map(|a| a.id.len()).max().unwrap_or(0);
    for a in &d.agencies {
        let _ = writeln!(
            s,
            "  {:<width$}  {:<18}  {}{}",
            a.id,
            kind_name(a.kind()),
            a.display_name,
            if a.revoked { "  REVOKED" } else { "" }
        );
    }
    let _ = writeln!(s, "auditors ({}):", d.auditors.len());
    for a in &d.auditors {
        let _ = writeln!(
            s,
            "  {}{}",
            a.name,
            if a.revoked { "  REVOKED" } else { "" }
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hr_ba() -> (tempfile::TempDir, crate::tools::pki::Federation, DirFiles) {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = crate::tools::pki::InitOptions::new(tmp.path().join("fed"));
        opts.countries = vec!["HR".parse().unwrap(), "BA".parse().unwrap()];
        let fed = crate::tools::pki::init(&opts).unwrap();
        let files = DirFiles {
            directory: fed.dir.join("directory.bin"),
            directory_key: fed.dir.join("ca/directory.pub"),
            draft: None,
        };
        (tmp, fed, files)
    }

    fn node_keys() -> ([u8; 32], [u8; 32]) {
        let (s, _) = SigningKey::generate().unwrap();
        let (_, h) = keys::generate_hpke();
        (s.public_key(), keys::hpke_public_bytes(&h))
    }

    fn err(r: anyhow::Result<String>) -> String {
        format!("{:#}", r.expect_err("the edit must be refused"))
    }

    #[test]
    fn edits_are_drafted_then_signed_with_a_higher_version() {
        let (_tmp, fed, files) = hr_ba();
        let (s, h) = node_keys();
        let ca = load_cert_der(&fed.dir.join("ca/HR/ca.crt")).unwrap();
        edit(&files, |d| {
            add_country(d, "DE".parse().unwrap(), Regime::EuMember, s, h, &ca, 30, 0)
        })
        .unwrap();
        edit(&files, |d| {
            add_agency(
                d,
                &"DE/police".parse().unwrap(),
                v1::AgencyKind::CriminalPolice,
                "Polizei",
            )
        })
        .unwrap();
        edit(&files, |d| {
            revoke(d, &Revocation::Agency("BA/police".parse().unwrap()))
        })
        .unwrap();
        // The signed directory is unchanged until `sign`.
        let (before, _) = load_signed(&files.directory, &files.directory_key).unwrap();
        assert_eq!(before.version, 1);
        assert!(!before.nodes.iter().any(|n| n.country == "DE"));

        let key = crate::storage::files::keys::load_signing_key(&fed.dir.join("ca/directory.key"))
            .unwrap();
        let now = crate::daemon::clock::now_ms();
        sign(&files.directory, &files.draft_path(), &key, None, now).unwrap();
        assert!(!files.draft_path().exists());
        let pinned =
            crate::storage::files::directory::load_public_key(&files.directory_key).unwrap();
        let dir =
            crate::storage::files::directory::load(&files.directory, &pinned, "casebridge.test")
                .unwrap();
        assert_eq!(dir.version, 2);
        assert_eq!(dir.issued_at_ms, now);
        let de = dir.node("DE".parse().unwrap()).unwrap();
        assert!(de.eu_member);
        assert!(dir.agency(&"DE/police".parse().unwrap()).is_some());
        assert!(dir.agency(&"BA/police".parse().unwrap()).unwrap().revoked);
        assert!(!dir.node("BA".parse().unwrap()).unwrap().eu_member);

        // Nothing to sign now; a version that does not increase is refused.
        let e = sign(&files.directory, &files.draft_path(), &key, None, now).unwrap_err();
        assert!(format!("{e:#}").contains("there is no draft"), "{e:#}");
        edit(&files, |d| {
            set_regime(d, "BA".parse().unwrap(), Regime::EuMember)
        })
        .unwrap();
        for v in [1, 2] {
            let e = sign(&files.directory, &files.draft_path(), &key, Some(v), now).unwrap_err();
            assert!(format!("{e:#}").contains("does not increase"), "{e:#}");
        }
        sign(&files.directory, &files.draft_path(), &key, Some(10), now).unwrap();
        let dir =
            crate::storage::files::directory::load(&files.directory, &pinned, "casebridge.test")
                .unwrap();
        assert_eq!(dir.version, 10);
        assert!(dir.node("BA".parse().unwrap()).unwrap().eu_member);
    }

    #[test]
    fn rotate_node_retires_the_current_pair_for_the_overlap_and_keeps_at_most_four() {
        let (_tmp, fed, files) = hr_ba();
        // The next pair as `node new-keys` writes it beside HR's keys.
        let (_, hr_config) = &fed.node_configs[0];
        let cfg: crate::daemon::config::NodeConfig =
            crate::daemon::config::load(hr_config).unwrap();
        let next = crate::tools::ca::new_node_keys(&cfg).unwrap();
        assert!(next.files.signing.ends_with("next-signing.key"));
        let again = crate::tools::ca::new_node_keys(&cfg)
            .err()
            .unwrap()
            .to_string();
        assert!(again.contains("never overwritten"), "{again}");
        let report = crate::tools::ca::new_keys_report(&cfg, &next);
        assert!(report.contains("directory rotate-node"), "{report}");

        let hr: Country = cfg.country;
        let (before, _) = load_signed(&files.directory, &files.directory_key).unwrap();
        let old = before
            .nodes
            .iter()
            .find(|n| n.country == hr.as_str())
            .unwrap()
            .clone();
        let signing = public_key_arg(
            "--signing-key",
            &next
                .files
                .signing
                .with_extension("pub")
                .display()
                .to_string(),
        )
        .unwrap();
        let hpke = public_key_arg("--hpke-key", &hex::encode(next.hpke)).unwrap();
        assert_eq!(signing, next.signing);
        let now = 1_000_000;
        edit(&files, |d| rotate_node(d, hr, signing, hpke, 24, now)).unwrap();
        let draft = load_draft(&files.draft_path()).unwrap().unwrap();
        let n = draft
            .nodes
            .iter()
            .find(|n| n.country == hr.as_str())
            .unwrap();
        assert_eq!(n.signing_key, next.signing.to_vec());
        assert_eq!(n.hpke_key, next.hpke.to_vec());
        assert_eq!(n.previous.len(), 1);
        assert_eq!(n.previous[0].signing_key, old.signing_key);
        assert_eq!(n.previous[0].hpke_key, old.hpke_key);
        assert_eq!(n.previous[0].valid_until_ms, now + 24 * 3_600_000);
        assert!(render(&draft, None).contains("retired: signing"));

        // The same keys again, or keys used before, are not a rotation.
        let mut d = draft.clone();
        assert!(err(rotate_node(&mut d, hr, signing, hpke, 1, now)).contains("has these keys now"));
        let old_signing: [u8; 32] = old.signing_key.as_slice().try_into().unwrap();
        let (_, fresh_hpke) = node_keys();
        assert!(
            err(rotate_node(&mut d, hr, old_signing, fresh_hpke, 1, now))
                .contains("used these keys before")
        );

        // Four retired pairs within their overlap is the most; one past
        // its overlap is dropped to make room.
        let mut d = draft.clone();
        for _ in 0..3 {
            let (s, h) = node_keys();
            rotate_node(&mut d, hr, s, h, 1, now).unwrap();
        }
        let (s, h) = node_keys();
        let refused = err(rotate_node(&mut d, hr, s, h, 1, now));
        assert!(
            refused.contains("4 retired key pairs still within their overlap"),
            "{refused}"
        );
        let later = now + 3_600_000;
        let said = rotate_node(&mut d, hr, s, h, 1, later).unwrap();
        assert!(
            said.contains("3 retired pairs past their overlap dropped"),
            "{said}"
        );
        let n = d.nodes.iter().find(|n| n.country == hr.as_str()).unwrap();
        assert_eq!(n.previous.len(), 2);
        check(&d).unwrap();
    }

    #[test]
    fn a_stale_draft_or_a_foreign_key_is_refused() {
        let (_tmp, fed, files) = hr_ba();
        let key = crate::storage::files::keys::load_signing_key(&fed.dir.join("ca/directory.key"))
            .unwrap();
        edit(&files, |d| add_auditor(d, "second")).unwrap();
        let stale = std::fs::read(files.draft_path()).unwrap();
        sign(&files.directory, &files.draft_path(), &key, None, 1).unwrap();
        std::fs::write(files.draft_path(), &stale).unwrap();
        let e = sign(&files.directory, &files.draft_path(), &key, None, 2).unwrap_err();
        assert!(
            format!("{e:#}").contains("was made from directory version 1"),
            "{e:#}"
        );
        let e = edit(&files, |d| add_auditor(d, "third")).unwrap_err();
        assert!(format!("{e:#}").contains("signed since"), "{e:#}");
        std::fs::remove_file(files.draft_path()).unwrap();

        edit(&files, |d| add_auditor(d, "third")).unwrap();
        let (other, _) = SigningKey::generate().unwrap();
        let e = sign(&files.directory, &files.draft_path(), &other, None, 3).unwrap_err();
        assert!(
            format!("{e:#}").contains("is it the federation's directory key"),
            "{e:#}"
        );

        // A directory.bin signed by someone else is refused by the edits too.
        let (_other_tmp, other_fed, _) = hr_ba();
        std::fs::copy(other_fed.dir.join("directory.bin"), &files.directory).unwrap();
        let e = edit(&files, |d| add_auditor(d, "fourth")).unwrap_err();
        assert!(format!("{e:#}").contains("directory refused"), "{e:#}");
    }

    #[test]
    fn invalid_results_are_refused_with_sentences() {
        let (_tmp, fed, files) = hr_ba();
        let (d, _) = load_signed(&files.directory, &files.directory_key).unwrap();
        let ca = load_cert_der(&fed.dir.join("ca/HR/ca.crt")).unwrap();
        let hr: Country = "HR".parse().unwrap();
        let (s, h) = node_keys();

        let mut x = d.clone();
        assert!(
            err(add_country(&mut x, hr, Regime::EuMember, s, h, &ca, 1, 0))
                .contains("already in the directory")
        );
        let hr_key: [u8; 32] = x.nodes[0].signing_key.clone().try_into().unwrap();
        assert!(
            err(add_country(
                &mut x,
                "DE".parse().unwrap(),
                Regime::EuMember,
                hr_key,
                h,
                &ca,
                1,
                0
            ))
            .contains("already has this signing key")
        );
        assert!(
            err(add_country(
                &mut x,
                "DE".parse().unwrap(),
                Regime::EuMember,
                s,
                h,
                &ca,
                0,
                0
            ))
            .contains("never be valid")
        );
        assert!(err(remove_country(&mut x, hr)).contains("still has agencies"));
        assert!(
            err(remove_country(&mut x, "DE".parse().unwrap())).contains("not in the directory")
        );
        assert!(err(set_regime(&mut x, hr, Regime::EuMember)).contains("already eu-member"));
        assert!(
            err(add_agency(
                &mut x,
                &"DE/police".parse().unwrap(),
                v1::AgencyKind::CriminalPolice,
                "P"
            ))
            .contains("add the country first")
        );
        assert!(
            err(add_agency(
                &mut x,
                &"HR/police".parse().unwrap(),
                v1::AgencyKind::CriminalPolice,
                "P"
            ))
            .contains("already in the directory")
        );
        assert!(
            err(add_agency(
                &mut x,
                &"HR/customs".parse().unwrap(),
                v1::AgencyKind::Customs,
                " "
            ))
            .contains("display name")
        );
        assert!(
            err(remove_agency(&mut x, &"HR/customs".parse().unwrap()))
                .contains("not in the directory")
        );
        assert!(err(add_auditor(&mut x, "auditor")).contains("already in the directory"));
        assert!(err(add_auditor(&mut x, "Bad Name")).contains("lower-case"));
        assert!(err(remove_auditor(&mut x, "nobody")).contains("not in the directory"));
        revoke(&mut x, &Revocation::Node(hr)).unwrap();
        assert!(err(revoke(&mut x, &Revocation::Node(hr))).contains("already revoked"));
        assert!(
            err(revoke(&mut x, &Revocation::Auditor("nobody".into())))
                .contains("not in the directory")
        );
        // Nothing refused changed the directory beyond the revocation.
        let mut y = d.clone();
        revoke(&mut y, &Revocation::Node(hr)).unwrap();
        assert_eq!(x, y);

        // Removing every agency of a country lets it go.
        let ids: Vec<AgencyId> = d
            .agencies
            .iter()
            .filter(|a| a.id.starts_with("HR/"))
            .map(|a| a.id.parse().unwrap())
            .collect();
        let mut z = d.clone();
        for id in &ids {
            remove_agency(&mut z, id).unwrap();
        }
        remove_country(&mut z, hr).unwrap();
        check(&z).unwrap();
        // A draft with an agency whose node is gone is refused by `check`.
        let mut w = d.clone();
        w.nodes.retain(|n| n.country != "HR");
        assert!(format!("{:#}", check(&w).unwrap_err()).contains("no node for its country"));
        let mut w = d.clone();
        w.auditors.push(w.auditors[0].clone());
        assert!(format!("{:#}", check(&w).unwrap_err()).contains("listed twice"));
    }

    #[test]
    fn agency_kinds_parse_in_either_spelling_and_unknown_ones_list_the_valid() {
        for s in [
            "criminal-police",
            "criminal_police",
            "CRIMINAL_POLICE",
            "AGENCY_KIND_CRIMINAL_POLICE",
        ] {
            assert_eq!(
                parse_agency_kind(s).unwrap(),
                v1::AgencyKind::CriminalPolice
            );
        }
        let e = parse_agency_kind("polizei").unwrap_err().to_string();
        assert!(
            e.contains("criminal-police") && e.contains("labour-inspection"),
            "{e}"
        );
        assert!(parse_agency_kind("unspecified").is_err());
    }

    #[test]
    fn show_lists_regimes_fingerprints_and_revocations() {
        let (_tmp, _fed, files) = hr_ba();
        let (mut d, key) = load_signed(&files.directory, &files.directory_key).unwrap();
        revoke(&mut d, &Revocation::Agency("BA/police".parse().unwrap())).unwrap();
        let text = render(&d, Some(&key));
        assert!(text.contains("version 1"), "{text}");
        assert!(text.contains("HR  eu-member"), "{text}");
        assert!(text.contains("BA  non-member"), "{text}");
        assert!(
            text.contains(&fingerprint(&d.nodes[0].signing_key)),
            "{text}"
        );
        let line = text.lines().find(|l| l.contains("BA/police ")).unwrap();
        assert!(line.ends_with("REVOKED"), "{line}");
        assert!(text.contains("auditors (1):\n  auditor\n"), "{text}");
    }
}

//! `casebridge audit ...`: the auditor's commands, which check the broker's
//! audit log with proofs instead of taking its word.
//!
//! An auditor trusts two things: the directory key its profile pins, and its
//! own state directory. Everything else is checked. The signed directory
//! gives the log's checkpoint key (origin `<federation>/audit-log`) and each
//! node's Ed25519 key, under which the node cosigns checkpoints as a witness
//! (key name `<federation>/node/<CC>`, C2SP `cosignature/v1`). From there:
//!
//! - `verify` opens the latest checkpoint, fetches every entry, recomputes
//!   every leaf hash and the root, proves the checkpoint consistent with the
//!   one this auditor saved last time, and names the **first bad index** when
//!   anything differs (see [`verify_log`] for how it is found).
//! - `prove` checks one submission's inclusion proof against a signed
//!   checkpoint.
//! - `query` lists entries matching filters (text, JSON lines or CSV).
//! - `report` verifies like `verify`, then writes a self-contained HTML
//!   report of the flows between countries and of each agency's activity.
//!
//! The Merkle and note checks are [`crate::merkle`] and [`crate::note`]; this
//! module adds the auditor's state, the search for the first bad index, and
//! the rendering. The pure parts (trust set, prefix search, rows, CSV, HTML)
//! are plain functions and tested here; the gRPC calls are thin.
//! docs/audit-log.md specifies the leaves, the tree and the checkpoints for
//! auditors who use their own tools.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::{self, Write as _};
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use prost::Message as _;
use tonic::transport::Channel;

use crate::cli::{basis_name, categories_text, kind_name, purpose_name, short, status_line};
use crate::directory::Directory;
use crate::ids::{AgencyId, Country, EnvelopeId, Role};
use crate::merkle::{self, Hash, MemoryTree};
use crate::note::{self, Checkpoint, SignatureType, Verifier, Verifiers};
use crate::pki::AuditorProfile;
use crate::proto::v1;
use crate::proto::v1::audit_event::Event;
use crate::tls::{ClientTls, Identity};

/// Entries asked for per `GetEntries` call (the API's maximum). The broker
/// may answer with fewer (it also bounds a page by bytes); the next call
/// starts after the last entry received.
pub const PAGE: u64 = crate::broker::audit_api::PAGE_ENTRIES;

/// The saved checkpoint in an auditor's state directory (signed note bytes).
pub const LAST_CHECKPOINT_FILE: &str = "last-checkpoint";
/// The saved leaf hashes, 32 bytes per entry in index order, append-only.
pub const LEAF_HASHES_FILE: &str = "leaf-hashes";

/// The largest answer the auditor's client accepts: 128 MiB. That is more
/// than the broker sends ([`crate::broker::audit_api::MAX_RESPONSE_BYTES`]),
/// and more than a single leaf written before leaves were capped could be
/// (two copies of a request under the broker's former 32 MiB limit), so
/// every log a broker wrote can be read.
const MAX_MESSAGE: usize = 128 << 20;
const _: () = assert!(MAX_MESSAGE >= crate::broker::audit_api::MAX_RESPONSE_BYTES);

// ---- command line -----------------------------------------------------------

/// Which auditor, and which directory file.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditorArgs {
    /// The auditor's profile.toml (`auditors/<name>/profile.toml`).
    #[arg(long)]
    pub profile: PathBuf,
    /// The signed directory; default `directory.bin` two levels above the
    /// profile (the federation directory of `pki init`).
    #[arg(long)]
    pub directory: Option<PathBuf>,
}

/// Filters of `casebridge audit query`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct QueryArgs {
    /// Entries where this agency (CC/name) sent or received.
    #[arg(long)]
    pub agency: Option<String>,
    /// Entries where this country's agencies or node took part.
    #[arg(long)]
    pub country: Option<String>,
    /// Record kind, e.g. wanted_alert.
    #[arg(long)]
    pub kind: Option<String>,
    /// accepted, refused, delivered, rejected, violation, purged, directory or
    /// policy.
    #[arg(long)]
    pub decision: Option<String>,
    /// Entries at or after this time (RFC 3339, or a date YYYY-MM-DD).
    #[arg(long)]
    pub from: Option<String>,
    /// Entries before this time (RFC 3339, or a date YYYY-MM-DD).
    #[arg(long)]
    pub to: Option<String>,
    /// At most this many entries (the broker returns at most 10,000).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Scan from this log index: where a result the broker cut says to
    /// continue.
    #[arg(long)]
    pub start: Option<u64>,
}

/// `casebridge audit ...`.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCmd {
    /// Verify the whole log against the latest signed checkpoint and the
    /// checkpoint you saved last time; name the first bad index if any.
    Verify {
        #[command(flatten)]
        auditor: AuditorArgs,
    },
    /// Prove that a submission is in the log, against a signed checkpoint.
    Prove {
        #[command(flatten)]
        auditor: AuditorArgs,
        /// The envelope id (UUID).
        envelope_id: String,
    },
    /// List the entries matching every filter given.
    Query {
        #[command(flatten)]
        auditor: AuditorArgs,
        #[command(flatten)]
        filter: QueryArgs,
        /// One JSON object per entry (proto3 JSON of casebridge.v1.LogEntry).
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// CSV with a header row.
        #[arg(long)]
        csv: bool,
    },
    /// Verify the log, then write a self-contained HTML report.
    Report {
        #[command(flatten)]
        auditor: AuditorArgs,
        /// The HTML file to write.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs an audit command; `Ok(false)` is a clean failure already printed.
pub async fn run(cmd: AuditCmd) -> anyhow::Result<bool> {
    match cmd {
        AuditCmd::Verify { auditor } => {
            let report = verify(&auditor.profile, auditor.directory.as_deref()).await?;
            print!("{report}");
            Ok(true)
        }
        AuditCmd::Prove {
            auditor,
            envelope_id,
        } => {
            let proof = prove(&auditor.profile, auditor.directory.as_deref(), &envelope_id).await?;
            print!("{proof}");
            Ok(true)
        }
        AuditCmd::Query {
            auditor,
            filter,
            json,
            csv,
        } => {
            let result = query(&auditor.profile, auditor.directory.as_deref(), &filter).await?;
            let entries = &result.entries;
            let mut out = std::io::stdout().lock();
            if json {
                for e in entries {
                    writeln!(out, "{}", entry_json_line(e)?)?;
                }
            } else if csv {
                writeln!(out, "{}", csv_line(ROW_COLUMNS))?;
                for e in entries {
                    let r = row(
                        e.index,
                        e.event.as_ref().unwrap_or(&v1::AuditEvent::default()),
                    );
                    writeln!(out, "{}", csv_line(&r.csv_fields()))?;
                }
            } else {
                if entries.is_empty() {
                    eprintln!("no entries match");
                }
                for e in entries {
                    let r = row(
                        e.index,
                        e.event.as_ref().unwrap_or(&v1::AuditEvent::default()),
                    );
                    writeln!(out, "{}", r.text_line())?;
                }
            }
            // On stderr, so JSON and CSV on stdout stay whole.
            if let Some(notice) = result.cut_notice() {
                eprintln!("{notice}");
            }
            Ok(true)
        }
        AuditCmd::Report { auditor, out } => {
            report(&auditor.profile, auditor.directory.as_deref(), &out).await?;
            println!("report written to {}", out.display());
            Ok(true)
        }
    }
}

// ---- trust: the log key and the witnesses -----------------------------------

/// The broker's transparency log as the directory pins it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogKey {
    /// The checkpoint origin line, e.g. `casebridge.test/audit-log`.
    pub origin: String,
    /// The Ed25519 key that signs checkpoints.
    pub public_key: [u8; 32],
}

/// The log's checkpoint key from a verified directory.
///
/// Read from the `Directory.log` field of the signed bytes themselves, so it
/// does not depend on which accessors [`Directory`] offers; the bytes were
/// verified by [`Directory::verify`].
pub fn log_key(dir: &Directory) -> anyhow::Result<LogKey> {
    let raw = v1::Directory::decode(dir.signed().directory.as_slice())
        .context("the verified directory does not decode")?;
    let log = raw.log.ok_or_else(|| {
        anyhow!(
            "directory version {} names no transparency log (Directory.log); \
             the audit log cannot be verified",
            dir.version
        )
    })?;
    let public_key = <[u8; 32]>::try_from(log.public_key.as_slice()).map_err(|_| {
        anyhow!(
            "directory version {}: the log key is {} bytes, Ed25519 keys are 32",
            dir.version,
            log.public_key.len()
        )
    })?;
    if log.origin.is_empty() {
        bail!("directory version {}: the log has no origin", dir.version);
    }
    Ok(LogKey {
        origin: log.origin,
        public_key,
    })
}

/// The key name under which node `cc` cosigns checkpoints as a witness.
pub fn witness_name(federation: &str, cc: Country) -> String {
    format!("{federation}/node/{cc}")
}

/// A node as a witness.
#[derive(Debug, Clone)]
struct Witness {
    country: Country,
    revoked: bool,
    verifier: Verifier,
}

/// Everything an auditor checks a checkpoint with: the log key and the
/// nodes' cosigning keys.
#[derive(Debug, Clone)]
pub struct LogTrust {
    origin: String,
    log: Verifier,
    log_only: Verifiers,
    witnesses: Vec<Witness>,
}

/// A witness's verified cosignature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    pub country: Country,
    /// The key name, `<federation>/node/<CC>`.
    pub name: String,
    /// When the node cosigned (POSIX seconds, as signed).
    pub timestamp: u64,
    /// The node is revoked in the directory: shown, but not counted.
    pub revoked: bool,
}

/// A checkpoint whose log signature and every witness cosignature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCheckpoint {
    pub checkpoint: Checkpoint,
    /// The signed note exactly as served.
    pub note: Vec<u8>,
    /// The log key it was opened with, in verifier-key form.
    pub log_key: String,
    /// One per witness, in country order.
    pub cosignatures: Vec<Cosignature>,
    /// Unrevoked nodes that did not cosign it.
    pub missing: Vec<Country>,
    /// Signature lines by keys the directory does not list (`name+keyid`).
    pub unknown: Vec<String>,
}

impl CheckedCheckpoint {
    /// Cosignatures by unrevoked nodes.
    pub fn counted_cosignatures(&self) -> usize {
        self.cosignatures.iter().filter(|c| !c.revoked).count()
    }

    /// "cosigned by 2 of 3 nodes: HR at ..., RS at ..." and the rest, one
    /// line each.
    pub fn cosignature_lines(&self) -> Vec<String> {
        let total = self.counted_cosignatures() + self.missing.len();
        let mut lines = Vec::new();
        if self.cosignatures.is_empty() {
            lines.push(format!("no witness cosignatures (0 of {total} nodes)"));
        } else {
            lines.push(format!(
                "cosigned by {} of {total} nodes:",
                self.counted_cosignatures()
            ));
            for c in &self.cosignatures {
                lines.push(format!(
                    "  {}  {}  at {}{}",
                    c.country,
                    c.name,
                    format_seconds(c.timestamp),
                    if c.revoked {
                        "  (node revoked: not counted)"
                    } else {
                        ""
                    }
                ));
            }
        }
        if !self.missing.is_empty() {
            let missing: Vec<String> = self.missing.iter().map(Country::to_string).collect();
            lines.push(format!("not cosigned by: {}", missing.join(", ")));
        }
        if !self.unknown.is_empty() {
            lines.push(format!(
                "signatures by keys not in the directory (ignored): {}",
                self.unknown.join(", ")
            ));
        }
        lines
    }
}

impl LogTrust {
    /// The log key and the witnesses of a verified directory.
    pub fn from_directory(dir: &Directory) -> anyhow::Result<LogTrust> {
        let key = log_key(dir)?;
        let log = Verifier::new(&key.origin, SignatureType::Ed25519, key.public_key)
            .with_context(|| format!("log origin {:?}", key.origin))?;
        let log_only = Verifiers::new([log.clone()])?;
        let mut witnesses = Vec::new();
        for node in dir.nodes() {
            let name = witness_name(&dir.federation, node.country);
            let verifier = Verifier::new(&name, SignatureType::CosignatureV1, node.signing_key)
                .with_context(|| format!("witness key name {name:?}"))?;
            witnesses.push(Witness {
                country: node.country,
                revoked: node.revoked,
                verifier,
            });
        }
        Ok(LogTrust {
            origin: key.origin,
            log,
            log_only,
            witnesses,
        })
    }

    /// The log's origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Opens a signed checkpoint: the log's own Ed25519 signature must
    /// verify (key named like the origin), and so must every cosignature by
    /// a key the directory lists for a node. A cosignature that fails is an
    /// error, not a missing witness: the broker attached a forged or broken
    /// signature to the log's checkpoint.
    pub fn open(&self, note_bytes: &[u8]) -> anyhow::Result<CheckedCheckpoint> {
        let opened = note::open_checkpoint(note_bytes, &self.log_only)
            .map_err(|e| anyhow!("does not verify with the log key {}: {e}", self.log))?;
        let checkpoint = opened.checkpoint().clone();
        let mut by_country: BTreeMap<Country, Cosignature> = BTreeMap::new();
        let mut unknown = Vec::new();
        for sig in opened.note().unverified() {
            let witness = self
                .witnesses
                .iter()
                .find(|w| w.verifier.name() == sig.name() && w.verifier.key_id() == sig.key_id());
            let Some(w) = witness else {
                let label = format!("{}+{:08x}", sig.name(), sig.key_id());
                if !unknown.contains(&label) {
                    unknown.push(label);
                }
                continue;
            };
            let timestamp =
                note::verify_cosignature(&checkpoint, sig, &w.verifier).map_err(|e| {
                    anyhow!(
                        "checkpoint of size {} carries a cosignature by {} (node {}) that does not \
                     verify: {e}",
                        checkpoint.size(),
                        sig.name(),
                        w.country
                    )
                })?;
            let entry = by_country.entry(w.country).or_insert(Cosignature {
                country: w.country,
                name: w.verifier.name().to_string(),
                timestamp,
                revoked: w.revoked,
            });
            entry.timestamp = entry.timestamp.max(timestamp);
        }
        let missing = self
            .witnesses
            .iter()
            .filter(|w| !w.revoked && !by_country.contains_key(&w.country))
            .map(|w| w.country)
            .collect();
        Ok(CheckedCheckpoint {
            checkpoint,
            note: note_bytes.to_vec(),
            log_key: self.log.to_string(),
            cosignatures: by_country.into_values().collect(),
            missing,
            unknown,
        })
    }
}

// ---- the auditor's connection -------------------------------------------------

/// The default directory file of a profile: `directory.bin` in the
/// federation directory, two levels above `auditors/<name>/profile.toml`.
pub fn default_directory_path(profile: &Path) -> PathBuf {
    profile
        .parent()
        .unwrap_or(Path::new("."))
        .join("..")
        .join("..")
        .join("directory.bin")
}

fn rebase(p: &mut PathBuf, base: &Path) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

/// Reads an auditor profile; relative paths are relative to the file.
pub fn load_profile(path: &Path) -> anyhow::Result<AuditorProfile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut p: AuditorProfile = toml::from_str(&text).map_err(|e| {
        anyhow!(
            "{}: not an auditor profile: {}",
            path.display(),
            e.to_string().trim_end()
        )
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    rebase(&mut p.directory_key, base);
    rebase(&mut p.state_dir, base);
    rebase(&mut p.tls.cert, base);
    rebase(&mut p.tls.key, base);
    rebase(&mut p.tls.root, base);
    Ok(p)
}

/// An auditor connected (lazily) to the broker's audit API, with the
/// verified directory and the trust it gives.
pub struct Auditor {
    pub profile: AuditorProfile,
    pub directory: Directory,
    pub trust: LogTrust,
    pub api: v1::audit_client::AuditClient<Channel>,
}

impl Auditor {
    /// Loads the profile, the pinned directory key and the signed directory
    /// (`directory`, or [`default_directory_path`]), and prepares the mTLS
    /// channel to the broker. The first call dials.
    pub fn connect(profile: &Path, directory: Option<&Path>) -> anyhow::Result<Auditor> {
        let p = load_profile(profile)?;
        let key = crate::directory::load_public_key(&p.directory_key)?;
        let dir_path = directory
            .map(Path::to_path_buf)
            .unwrap_or_else(|| default_directory_path(profile));
        let dir = crate::directory::load(&dir_path, &key, &p.federation)
            .context("the signed directory (pass --directory FILE to use another)")?;
        let trust = LogTrust::from_directory(&dir)?;
        let identity = Identity::load(&p.tls.cert, &p.tls.key)?;
        let root = crate::tls::load_certs(&p.tls.root)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{}: no certificate", p.tls.root.display()))?;
        let tls = ClientTls::new(&identity, &root, &p.federation)?;
        let channel = tls
            .channel(&p.broker, Role::Broker)
            .with_context(|| format!("broker address {}", p.broker))?;
        let api = v1::audit_client::AuditClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Auditor {
            profile: p,
            directory: dir,
            trust,
            api,
        })
    }

    async fn latest_checkpoint(&mut self) -> anyhow::Result<CheckedCheckpoint> {
        let resp = grpc(
            "GetCheckpoint",
            self.api
                .get_checkpoint(v1::GetCheckpointRequest { from_size: 0 })
                .await,
        )?;
        self.trust
            .open(&resp.checkpoint)
            .context("the broker's latest checkpoint")
    }

    async fn prove_consistency(
        &mut self,
        first_size: u64,
        second_size: u64,
    ) -> anyhow::Result<v1::ConsistencyProof> {
        let p = grpc(
            "ProveConsistency",
            self.api
                .prove_consistency(v1::ProveConsistencyRequest {
                    first_size,
                    second_size,
                })
                .await,
        )?;
        if p.first_size != first_size || p.second_size != second_size {
            bail!(
                "asked for a consistency proof from {first_size} to {second_size}, the broker \
                 answered for {} to {}",
                p.first_size,
                p.second_size
            );
        }
        Ok(p)
    }

    async fn entries(&mut self, start: u64, end: u64) -> anyhow::Result<Vec<v1::LogEntry>> {
        Ok(grpc(
            "GetEntries",
            self.api
                .get_entries(v1::GetEntriesRequest { start, end })
                .await,
        )?
        .entries)
    }
}

fn grpc<T>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) -> anyhow::Result<T> {
    r.map(tonic::Response::into_inner)
        .map_err(|s| anyhow!("{what}: {}", status_line(&s)))
}

// ---- the auditor's state ------------------------------------------------------

/// What this auditor verified last time.
#[derive(Debug, Clone)]
pub struct SavedState {
    pub note: Vec<u8>,
    pub checkpoint: Checkpoint,
    /// Exactly `checkpoint.size()` hashes whose root is the checkpoint's.
    pub leaf_hashes: Vec<Hash>,
}

/// The auditor's state directory: the last verified checkpoint (signed note,
/// as served) and the leaf hashes it covers, 32 bytes each, append-only.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn damaged(&self, what: String) -> anyhow::Error {
        anyhow!(
            "the saved state in {} is damaged: {what}; move the directory away to verify the \
             log from scratch",
            self.dir.display()
        )
    }

    /// The saved state, if any. The checkpoint was verified when it was
    /// saved and is only parsed here, so that a later rotation of the log key
    /// does not lose the history; its origin must be `origin`, and the leaf
    /// hashes must lead to its root.
    pub fn load(&self, origin: &str) -> anyhow::Result<Option<SavedState>> {
        let cp_path = self.dir.join(LAST_CHECKPOINT_FILE);
        let note_bytes = match std::fs::read(&cp_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", cp_path.display())),
        };
        let parsed = note::Note::parse(&note_bytes)
            .map_err(|e| self.damaged(format!("{LAST_CHECKPOINT_FILE}: {e}")))?;
        let checkpoint = Checkpoint::parse(parsed.text())
            .map_err(|e| self.damaged(format!("{LAST_CHECKPOINT_FILE}: {e}")))?;
        if checkpoint.origin() != origin {
            bail!(
                "the checkpoint saved in {} is of the log {:?}, the directory names {:?}",
                cp_path.display(),
                checkpoint.origin(),
                origin
            );
        }
        let hashes_path = self.dir.join(LEAF_HASHES_FILE);
        let raw = match std::fs::read(&hashes_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", hashes_path.display())),
        };
        if raw.len() % merkle::HASH_LEN != 0 {
            return Err(self.damaged(format!(
                "{LEAF_HASHES_FILE} is {} bytes, not a multiple of 32",
                raw.len()
            )));
        }
        let size = checkpoint.size();
        let have = (raw.len() / merkle::HASH_LEN) as u64;
        if have < size {
            return Err(self.damaged(format!(
                "{LEAF_HASHES_FILE} holds {have} hashes, the saved checkpoint has size {size}"
            )));
        }
        // Hashes beyond the checkpoint are left over from an interrupted
        // save; they were never verified and are dropped at the next one.
        let leaf_hashes: Vec<Hash> = raw
            .chunks_exact(merkle::HASH_LEN)
            .take(size as usize)
            .map(|c| {
                let mut h = [0u8; merkle::HASH_LEN];
                h.copy_from_slice(c);
                h
            })
            .collect();
        if merkle::root_from_leaves(&leaf_hashes) != *checkpoint.root_hash() {
            return Err(self.damaged(format!(
                "the {size} saved leaf hashes do not lead to the saved checkpoint's root"
            )));
        }
        Ok(Some(SavedState {
            note: note_bytes,
            checkpoint,
            leaf_hashes,
        }))
    }

    /// Saves a verified checkpoint and its leaf hashes. `kept` hashes were
    /// saved before and are identical; only the rest is appended. The hashes
    /// are made durable before the checkpoint is replaced, so an interrupted
    /// save leaves the previous state readable.
    pub fn save(&self, note_bytes: &[u8], leaf_hashes: &[Hash], kept: u64) -> anyhow::Result<()> {
        crate::storage::create_private_dir(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let hashes_path = self.dir.join(LEAF_HASHES_FILE);
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).truncate(false).read(true).write(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut file = opts
            .open(&hashes_path)
            .with_context(|| format!("opening {}", hashes_path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restricting {}", hashes_path.display()))?;
        }
        let kept = kept.min(leaf_hashes.len() as u64);
        let mut write = || -> std::io::Result<()> {
            use std::io::{Seek as _, SeekFrom};
            file.set_len(kept * merkle::HASH_LEN as u64)?;
            file.seek(SeekFrom::End(0))?;
            let mut buf = Vec::with_capacity((leaf_hashes.len() - kept as usize) * 32);
            for h in &leaf_hashes[kept as usize..] {
                buf.extend_from_slice(h);
            }
            file.write_all(&buf)?;
            file.sync_all()
        };
        write().with_context(|| format!("writing {}", hashes_path.display()))?;
        let cp_path = self.dir.join(LAST_CHECKPOINT_FILE);
        crate::storage::write_private(&cp_path, note_bytes)
            .with_context(|| format!("writing {}", cp_path.display()))
    }
}

// ---- finding the first bad index ----------------------------------------------

/// Binary search for the first index at which the entries a broker serves
/// stop being the leaves a checkpoint commits to.
///
/// "The first `k` served entries are the first `k` leaves of the checkpoint's
/// tree" is monotonic in `k` (true up to the first bad index, false after),
/// and it can be checked with a consistency proof from size `k` to the
/// checkpoint's size against the root recomputed from the first `k` served
/// entries ([`prefix_in_tree`]). Starting from a length known to be good (0,
/// or the size of a checkpoint this auditor verified and saved) and one known
/// to be bad (the checkpoint's size, when the recomputed root differs), the
/// search needs `log2(size)` proofs. A broker that refuses or forges a proof
/// can only move the blame earlier, never hide a bad entry: every prefix
/// accepted is proven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixSearch {
    good: u64,
    bad: u64,
}

impl PrefixSearch {
    /// `good`: a prefix length known to be in the tree; `bad`: a larger one
    /// known not to be. A `good` that is not below `bad` is lowered to
    /// `bad − 1`.
    pub fn new(good: u64, bad: u64) -> PrefixSearch {
        let bad = bad.max(1);
        PrefixSearch {
            good: good.min(bad - 1),
            bad,
        }
    }

    /// The next prefix length to check, or `None` when the search is over.
    pub fn next_probe(&self) -> Option<u64> {
        (self.bad - self.good > 1).then(|| self.good + (self.bad - self.good) / 2)
    }

    /// Records whether the prefix of length `probe` is in the tree.
    pub fn record(&mut self, probe: u64, in_tree: bool) {
        if probe <= self.good || probe >= self.bad {
            return;
        }
        if in_tree {
            self.good = probe;
        } else {
            self.bad = probe;
        }
    }

    /// The first bad index: the longest proven prefix's length. Final once
    /// [`PrefixSearch::next_probe`] is `None`.
    pub fn first_bad_index(&self) -> u64 {
        self.good
    }
}

/// Checks that the first `k` served leaves (their hashes in `served`) are the
/// first `k` leaves of the tree of `size` leaves with root `root`, with a
/// consistency proof from `k` to `size`. `0 < k < size`.
pub fn prefix_in_tree<P: AsRef<[u8]>>(
    served: &MemoryTree,
    k: u64,
    size: u64,
    root: &Hash,
    proof: &[P],
) -> Result<(), merkle::ProofError> {
    let prefix_root = served
        .root(k)
        .map_err(|_| merkle::ProofError::IndexOutOfRange {
            index: k,
            size: served.size(),
        })?;
    merkle::verify_consistency_bytes(k, size, &prefix_root, root, proof)
}

/// A log that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log inconsistent: {}", self.describe())]
pub struct Inconsistent {
    /// The first index whose entry is wrong, missing or unprovable, when one
    /// could be named.
    pub first_bad_index: Option<u64>,
    /// What is wrong, the problem at the first bad index first.
    pub problems: Vec<String>,
}

impl Inconsistent {
    fn describe(&self) -> String {
        let all = self.problems.join("; also: ");
        match self.first_bad_index {
            Some(i) => format!("first bad index {i}: {all}"),
            None => all,
        }
    }
}

#[derive(Debug, Clone)]
struct Finding {
    index: Option<u64>,
    detail: String,
}

impl Finding {
    fn at(index: u64, detail: String) -> Finding {
        Finding {
            index: Some(index),
            detail,
        }
    }
    fn global(detail: String) -> Finding {
        Finding {
            index: None,
            detail,
        }
    }
}

fn inconsistent(mut findings: Vec<Finding>) -> Inconsistent {
    // Indexed findings first, lowest index first; then the others in order.
    findings.sort_by_key(|f| f.index.unwrap_or(u64::MAX));
    Inconsistent {
        first_bad_index: findings.first().and_then(|f| f.index),
        problems: findings.into_iter().map(|f| f.detail).collect(),
    }
}

fn short_hash(h: &[u8]) -> String {
    let hex = hex::encode(h);
    if hex.len() > 16 {
        format!("{}…", &hex[..16])
    } else {
        hex
    }
}

// ---- verify -------------------------------------------------------------------

/// The outcome of a successful verification.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The checkpoint everything was verified against.
    pub checkpoint: CheckedCheckpoint,
    /// The directory version whose keys were used.
    pub directory_version: u64,
    /// The size of the checkpoint saved last time, now proven to be a prefix
    /// of this one; `None` on a first verification.
    pub previous_size: Option<u64>,
    /// Where the checkpoint and the leaf hashes were saved.
    pub state_dir: PathBuf,
}

impl VerifyReport {
    pub fn size(&self) -> u64 {
        self.checkpoint.checkpoint.size()
    }

    pub fn root(&self) -> &Hash {
        self.checkpoint.checkpoint.root_hash()
    }

    /// The report for people, one fact per line.
    pub fn lines(&self) -> Vec<String> {
        let cp = &self.checkpoint.checkpoint;
        let mut lines = vec![
            format!("checkpoint {} of size {}", cp.origin(), cp.size()),
            format!(
                "  root {} (hex {})",
                STANDARD.encode(cp.root_hash()),
                hex::encode(cp.root_hash())
            ),
            format!(
                "  signed by the log key {} (directory version {})",
                self.checkpoint.log_key, self.directory_version
            ),
        ];
        lines.extend(
            self.checkpoint
                .cosignature_lines()
                .into_iter()
                .map(|l| format!("  {l}")),
        );
        lines.push(format!(
            "all {} entries fetched: every leaf hash recomputed, the root equals the checkpoint's",
            cp.size()
        ));
        match self.previous_size {
            Some(m) => lines.push(format!(
                "consistent with the checkpoint you saved at size {m} ({} new entries)",
                cp.size().saturating_sub(m)
            )),
            None => lines.push(
                "first verification: no earlier checkpoint was saved, nothing to compare with"
                    .to_string(),
            ),
        }
        lines.push(format!(
            "saved the checkpoint and {} leaf hashes in {}",
            cp.size(),
            self.state_dir.display()
        ));
        lines
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in self.lines() {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

/// Progress of a long fetch on stderr: a line redrawn every second on a
/// terminal, a plain line every ten seconds otherwise; nothing for short runs.
struct Progress {
    what: &'static str,
    total: u64,
    tty: bool,
    last: Instant,
    shown: bool,
}

impl Progress {
    fn new(what: &'static str, total: u64) -> Progress {
        Progress {
            what,
            total,
            tty: std::io::stderr().is_terminal(),
            last: Instant::now(),
            shown: false,
        }
    }

    fn tick(&mut self, done: u64) {
        let every = if self.tty {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let pct = done.saturating_mul(100) / self.total.max(1);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(
                err,
                "\r{}: {done} of {} entries ({pct}%)",
                self.what, self.total
            );
            let _ = err.flush();
        } else {
            let _ = writeln!(
                err,
                "{}: {done} of {} entries ({pct}%)",
                self.what, self.total
            );
        }
        self.shown = true;
    }

    fn finish(&mut self) {
        if self.tty && self.shown {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }
}

/// One line about an event, for error messages and `prove`.
pub fn event_summary(event: &v1::AuditEvent) -> String {
    let r = row(0, event);
    let mut s = format!("{} at {}", r.decision, crate::time::format_ms(r.at_ms));
    if !r.sender.is_empty() || !r.recipients.is_empty() {
        let _ = write!(s, ", {} → {}", r.sender, r.recipients.join(", "));
    }
    if !r.kind.is_empty() {
        let _ = write!(s, ", {}", r.kind);
    }
    if !r.reason.is_empty() {
        let _ = write!(s, ": {}", r.reason);
    }
    s
}

/// What the entries fetched so far showed.
struct Fetched {
    hashes: Vec<Hash>,
    /// Every index below the checkpoint size was served.
    complete: bool,
}

/// Verifies the whole log as `auditor` sees it and, on success, saves the
/// checkpoint and the leaf hashes in the state directory. `visit` sees every
/// entry's event (decoded from the leaf itself, never from the broker's
/// separate `event` field) in index order; use its results only if this
/// returns `Ok`.
///
/// The checks, all of which must pass:
///
/// 1. The latest checkpoint verifies with the log key, and every cosignature
///    by a node key verifies ([`LogTrust::open`]).
/// 2. If a checkpoint of size `m` was saved: the new size is not smaller,
///    and a consistency proof from `m` leads from the saved root to the new
///    one (equal sizes need equal roots).
/// 3. Every entry `0..size` is served, in order; each leaf decodes as an
///    `AuditEvent` equal to the event served beside it; for `i < m` its leaf
///    hash equals the hash saved last time.
/// 4. The root recomputed from all leaf hashes equals the checkpoint's.
///
/// The first bad index is the lowest index at which any check failed: the
/// first leaf that differs from what this auditor saved (3), the first entry
/// missing or malformed (3), or, when the root differs (4), the first index
/// whose entry is not provably the checkpoint's leaf, found by
/// [`PrefixSearch`] with consistency proofs from the broker; an inclusion
/// proof for that index then shows which leaf the checkpoint has there.
pub async fn verify_log<F>(auditor: &mut Auditor, mut visit: F) -> anyhow::Result<VerifyReport>
where
    F: FnMut(u64, &v1::AuditEvent),
{
    let state = StateDir::new(auditor.profile.state_dir.clone());
    let current = auditor.latest_checkpoint().await?;
    let size = current.checkpoint.size();
    let root = *current.checkpoint.root_hash();
    let saved = state.load(auditor.trust.origin())?;
    let mut findings: Vec<Finding> = Vec::new();

    // 2. The saved checkpoint is a prefix of the new one.
    let mut proven_from: Option<u64> = None;
    if let Some(saved) = &saved {
        let m = saved.checkpoint.size();
        let saved_root = saved.checkpoint.root_hash();
        if m > size {
            findings.push(Finding::at(
                size,
                format!(
                    "the broker's latest checkpoint has size {size}, smaller than the checkpoint \
                     of size {m} you verified before: entries from index {size} on are gone"
                ),
            ));
        } else if m == size || m == 0 {
            if m == size && *saved_root != root {
                findings.push(Finding::global(format!(
                    "the broker signed two different roots for tree size {size}: {} saved, {} now \
                     (a fork)",
                    short_hash(saved_root),
                    short_hash(&root)
                )));
            } else {
                proven_from = Some(m);
            }
        } else {
            let proof = auditor.prove_consistency(m, size).await?;
            findings.extend(check_proof_checkpoint(&auditor.trust, &proof, &root));
            match merkle::verify_consistency_bytes(m, size, saved_root, &root, &proof.proof) {
                Ok(()) => proven_from = Some(m),
                Err(e) => findings.push(Finding::global(format!(
                    "the checkpoint of size {size} does not extend the checkpoint of size {m} \
                     you saved: {e}"
                ))),
            }
        }
    }

    // 3. Every entry, every leaf hash.
    let saved_hashes: &[Hash] = saved.as_ref().map_or(&[], |s| &s.leaf_hashes);
    let saved_size = saved.as_ref().map_or(0, |s| s.checkpoint.size());
    let fetched = fetch_all(
        auditor,
        size,
        saved_hashes,
        saved_size,
        &mut findings,
        &mut visit,
    )
    .await?;

    // 4. The root.
    let root_ok = fetched.complete && merkle::root_from_leaves(&fetched.hashes) == root;
    if !root_ok {
        let served = {
            let mut t = MemoryTree::new();
            for h in &fetched.hashes {
                t.append(*h);
            }
            t
        };
        let saved_prefix_matches = !findings
            .iter()
            .any(|f| f.index.is_some_and(|i| i < saved_size));
        let good = match proven_from {
            Some(m) if saved_prefix_matches && m <= served.size() => m,
            _ => 0,
        };
        let bad = if fetched.complete {
            size
        } else {
            served.size() + 1
        };
        let f = search_first_bad(auditor, &served, size, &root, good, bad)
            .await
            .context(
                "log inconsistent: the entries served do not lead to the checkpoint's root, and \
                 searching for the first bad index failed",
            )?;
        // One finding per index: the first one found there says enough.
        for x in f {
            if x.index.is_none() || !findings.iter().any(|y| y.index == x.index) {
                findings.push(x);
            }
        }
    }

    if !findings.is_empty() {
        return Err(inconsistent(findings).into());
    }
    state.save(&current.note, &fetched.hashes, saved_size.min(size))?;
    Ok(VerifyReport {
        checkpoint: current,
        directory_version: auditor.directory.version,
        previous_size: proven_from.filter(|_| saved.is_some()),
        state_dir: state.dir.clone(),
    })
}

/// The signed checkpoint a proof response carries must be the one already
/// verified: another root for the same size, signed by the log, is a fork.
fn check_proof_checkpoint(
    trust: &LogTrust,
    proof: &v1::ConsistencyProof,
    root: &Hash,
) -> Option<Finding> {
    if proof.checkpoint.is_empty() {
        return None;
    }
    match trust.open(&proof.checkpoint) {
        Ok(cp) if cp.checkpoint.size() != proof.second_size => Some(Finding::global(format!(
            "the checkpoint sent with a consistency proof to size {} has size {}",
            proof.second_size,
            cp.checkpoint.size()
        ))),
        Ok(cp) if cp.checkpoint.root_hash() != root => Some(Finding::global(format!(
            "the broker signed two different roots for tree size {}: {} and {} (a fork)",
            proof.second_size,
            short_hash(root),
            short_hash(cp.checkpoint.root_hash())
        ))),
        Ok(_) => None,
        Err(e) => Some(Finding::global(format!(
            "the checkpoint sent with a consistency proof to size {}: {e:#}",
            proof.second_size
        ))),
    }
}

async fn fetch_all<F>(
    auditor: &mut Auditor,
    size: u64,
    saved_hashes: &[Hash],
    saved_size: u64,
    findings: &mut Vec<Finding>,
    visit: &mut F,
) -> anyhow::Result<Fetched>
where
    F: FnMut(u64, &v1::AuditEvent),
{
    // The size is the broker's claim: reserve for it only up to a bound.
    let mut hashes: Vec<Hash> = Vec::with_capacity(usize::try_from(size.min(1 << 20)).unwrap_or(0));
    let mut progress = Progress::new("fetching the audit log", size);
    let mut first_saved_mismatch = false;
    let mut first_malformed = false;
    let mut next = 0u64;
    while next < size {
        let end = next.saturating_add(PAGE).min(size);
        let page = auditor.entries(next, end).await?;
        if page.is_empty() {
            findings.push(Finding::at(
                next,
                format!(
                    "the broker serves no entry {next} although its checkpoint has size {size}"
                ),
            ));
            break;
        }
        for entry in page {
            if next >= end {
                break;
            }
            if entry.index != next {
                findings.push(Finding::at(
                    next,
                    format!(
                        "asked for entry {next}, the broker served entry {}",
                        entry.index
                    ),
                ));
                progress.finish();
                return Ok(Fetched {
                    hashes,
                    complete: false,
                });
            }
            let hash = merkle::leaf_hash(&entry.leaf);
            let event = match v1::AuditEvent::decode(entry.leaf.as_slice()) {
                Ok(ev) => {
                    if entry.event.as_ref().is_some_and(|served| *served != ev) && !first_malformed
                    {
                        first_malformed = true;
                        findings.push(Finding::at(
                            next,
                            "the event served beside the leaf is not the event the leaf holds"
                                .to_string(),
                        ));
                    }
                    ev
                }
                Err(e) => {
                    if !first_malformed {
                        first_malformed = true;
                        findings.push(Finding::at(
                            next,
                            format!("the leaf is not a casebridge.v1.AuditEvent: {e}"),
                        ));
                    }
                    v1::AuditEvent::default()
                }
            };
            if next < saved_size && !first_saved_mismatch {
                let before = saved_hashes[next as usize];
                if before != hash {
                    first_saved_mismatch = true;
                    findings.push(Finding::at(
                        next,
                        format!(
                            "the broker now serves leaf {} ({}) where you verified leaf {} in the \
                             checkpoint of size {saved_size}: history was rewritten",
                            short_hash(&hash),
                            event_summary(&event),
                            short_hash(&before)
                        ),
                    ));
                }
            }
            visit(next, &event);
            hashes.push(hash);
            next += 1;
        }
        progress.tick(next);
    }
    progress.finish();
    Ok(Fetched {
        complete: next == size,
        hashes,
    })
}

/// Runs [`PrefixSearch`] against the broker and explains the index found.
async fn search_first_bad(
    auditor: &mut Auditor,
    served: &MemoryTree,
    size: u64,
    root: &Hash,
    good: u64,
    bad: u64,
) -> anyhow::Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let mut search = PrefixSearch::new(good, bad);
    while let Some(k) = search.next_probe() {
        let proof = auditor.prove_consistency(k, size).await?;
        findings.extend(check_proof_checkpoint(&auditor.trust, &proof, root));
        let ok = prefix_in_tree(served, k, size, root, &proof.proof).is_ok();
        search.record(k, ok);
    }
    let f = search.first_bad_index();
    if f >= size {
        return Ok(findings);
    }
    let served_hash = (f < served.size()).then(|| served.read_leaf(f)).flatten();
    // Which leaf does the checkpoint hold at f? An inclusion proof says.
    let committed = match grpc(
        "ProveInclusion",
        auditor
            .api
            .prove_inclusion(v1::ProveInclusionRequest {
                target: Some(v1::prove_inclusion_request::Target::Index(f)),
                tree_size: size,
            })
            .await,
    ) {
        Ok(p) => {
            let h = merkle::leaf_hash(&p.leaf);
            if p.index == f
                && p.tree_size == size
                && merkle::verify_inclusion_bytes(f, size, &h, &p.proof, root).is_ok()
            {
                Some((h, p.leaf))
            } else {
                None
            }
        }
        Err(_) => None,
    };
    let served_text = match served_hash {
        Some(h) => {
            let ev = match auditor.entries(f, f + 1).await {
                Ok(e) => e
                    .into_iter()
                    .find(|e| e.index == f)
                    .and_then(|e| v1::AuditEvent::decode(e.leaf.as_slice()).ok()),
                Err(_) => None,
            };
            match ev {
                Some(ev) => format!(
                    "the entry served at {f} ({}, leaf {}) is not",
                    event_summary(&ev),
                    short_hash(&h)
                ),
                None => format!("the entry served at {f} (leaf {}) is not", short_hash(&h)),
            }
        }
        None => format!("the broker serves no entry {f}"),
    };
    let detail = match committed {
        Some((h, leaf)) => {
            let what = v1::AuditEvent::decode(leaf.as_slice())
                .map(|ev| event_summary(&ev))
                .unwrap_or_else(|_| "not an AuditEvent".to_string());
            format!(
                "entries 0..{f} are proven in the checkpoint of size {size}, but {served_text}: \
                 the checkpoint commits to leaf {} there ({what})",
                short_hash(&h)
            )
        }
        None => format!(
            "entries 0..{f} are proven in the checkpoint of size {size}, but {served_text}, \
             and the broker gives no valid inclusion proof for index {f}"
        ),
    };
    findings.push(Finding::at(f, detail));
    Ok(findings)
}

trait ReadLeaf {
    fn read_leaf(&self, index: u64) -> Option<Hash>;
}

impl ReadLeaf for MemoryTree {
    fn read_leaf(&self, index: u64) -> Option<Hash> {
        use merkle::HashReader as _;
        self.read_node(merkle::NodeId::new(0, index)).ok()
    }
}

/// `casebridge audit verify`: verifies the log and saves the checkpoint.
pub async fn verify(profile: &Path, directory: Option<&Path>) -> anyhow::Result<VerifyReport> {
    let mut auditor = Auditor::connect(profile, directory)?;
    verify_log(&mut auditor, |_, _| {}).await
}

// ---- prove --------------------------------------------------------------------

/// A submission's entry, proven included in a signed checkpoint.
#[derive(Debug, Clone)]
pub struct ProveReport {
    pub envelope_id: EnvelopeId,
    pub index: u64,
    pub leaf_hash: Hash,
    pub event: v1::AuditEvent,
    pub checkpoint: CheckedCheckpoint,
    /// `Some(true)` if this auditor saved the same leaf hash at that index
    /// before; `None` if its saved state does not reach that far.
    pub matches_saved: Option<bool>,
}

impl ProveReport {
    pub fn lines(&self) -> Vec<String> {
        let cp = &self.checkpoint.checkpoint;
        let mut lines = vec![
            format!(
                "envelope {}: entry {} of the audit log (tree size {})",
                self.envelope_id,
                self.index,
                cp.size()
            ),
            format!("  leaf hash {}", hex::encode(self.leaf_hash)),
        ];
        lines.extend(
            event_details(&self.event)
                .into_iter()
                .map(|(k, v)| format!("  {k}: {v}")),
        );
        lines.push(format!(
            "inclusion proof verified against checkpoint of size {} signed by {}",
            cp.size(),
            cp.origin()
        ));
        lines.extend(
            self.checkpoint
                .cosignature_lines()
                .into_iter()
                .map(|l| format!("  {l}")),
        );
        match self.matches_saved {
            Some(true) => lines.push("the same leaf you verified before at this index".into()),
            Some(false) => lines
                .push("WARNING: a different leaf than you verified before at this index".into()),
            None => {}
        }
        lines
    }
}

impl fmt::Display for ProveReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in self.lines() {
            writeln!(f, "{l}")?;
        }
        Ok(())
    }
}

/// The envelope an event is about, if any.
pub fn event_envelope_id(event: &v1::AuditEvent) -> Option<&[u8]> {
    match event.event.as_ref()? {
        Event::SubmissionAccepted(a) => a.envelope.as_ref().map(|e| e.envelope_id.as_slice()),
        Event::SubmissionRefused(r) => r.envelope.as_ref().map(|e| e.envelope_id.as_slice()),
        Event::ReceiptRecorded(r) => Some(&r.envelope_id),
        Event::ContentViolation(v) => Some(&v.envelope_id),
        Event::RecordsPurged(_) | Event::DirectoryChanged(_) | Event::PolicyChanged(_) => None,
    }
}

/// Checks an inclusion proof answer for `envelope` against the trust set:
/// the checkpoint opens, sizes agree, the proof leads from the leaf to the
/// root, and the leaf is that envelope's submission.
pub fn check_inclusion(
    trust: &LogTrust,
    envelope: EnvelopeId,
    p: &v1::InclusionProof,
) -> anyhow::Result<(CheckedCheckpoint, Hash, v1::AuditEvent)> {
    let cp = trust
        .open(&p.checkpoint)
        .context("the checkpoint sent with the inclusion proof")?;
    if cp.checkpoint.size() != p.tree_size {
        bail!(
            "the inclusion proof is for tree size {}, its checkpoint has size {}",
            p.tree_size,
            cp.checkpoint.size()
        );
    }
    let leaf_hash = merkle::leaf_hash(&p.leaf);
    merkle::verify_inclusion_bytes(
        p.index,
        p.tree_size,
        &leaf_hash,
        &p.proof,
        cp.checkpoint.root_hash(),
    )
    .map_err(|e| {
        anyhow!(
            "the inclusion proof of entry {} does not verify against the checkpoint of size {}: {e}",
            p.index,
            p.tree_size
        )
    })?;
    let event = v1::AuditEvent::decode(p.leaf.as_slice()).with_context(|| {
        format!(
            "entry {}: the leaf is not a casebridge.v1.AuditEvent",
            p.index
        )
    })?;
    let is_submission = matches!(
        event.event,
        Some(Event::SubmissionAccepted(_) | Event::SubmissionRefused(_))
    );
    if !is_submission || event_envelope_id(&event) != Some(envelope.as_bytes().as_slice()) {
        bail!(
            "the broker proved entry {} ({}), which is not the submission of envelope {envelope}",
            p.index,
            event_summary(&event)
        );
    }
    Ok((cp, leaf_hash, event))
}

/// `casebridge audit prove ENVELOPE_ID`.
pub async fn prove(
    profile: &Path,
    directory: Option<&Path>,
    envelope_id: &str,
) -> anyhow::Result<ProveReport> {
    let envelope: EnvelopeId = envelope_id
        .parse()
        .map_err(|_| anyhow!("{envelope_id:?} is not an envelope id (a UUID)"))?;
    let mut auditor = Auditor::connect(profile, directory)?;
    let p = grpc(
        "ProveInclusion",
        auditor
            .api
            .prove_inclusion(v1::ProveInclusionRequest {
                target: Some(v1::prove_inclusion_request::Target::EnvelopeId(
                    envelope.to_string(),
                )),
                tree_size: 0,
            })
            .await,
    )?;
    let (checkpoint, leaf_hash, event) = check_inclusion(&auditor.trust, envelope, &p)?;
    let state = StateDir::new(auditor.profile.state_dir.clone());
    let matches_saved = match state.load(auditor.trust.origin()) {
        Ok(Some(s)) => s
            .leaf_hashes
            .get(usize::try_from(p.index).unwrap_or(usize::MAX))
            .map(|h| *h == leaf_hash),
        _ => None,
    };
    Ok(ProveReport {
        envelope_id: envelope,
        index: p.index,
        leaf_hash,
        event,
        checkpoint,
        matches_saved,
    })
}

// ---- rows: one entry as fields --------------------------------------------------

/// One entry as flat fields, for text, CSV and the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Row {
    pub index: u64,
    pub at_ms: i64,
    /// submission-accepted, submission-refused, receipt, content-violation,
    /// records-purged, directory-changed, policy-changed, or unknown.
    pub event: &'static str,
    /// The query vocabulary: accepted, refused, delivered, rejected,
    /// violation, purged, directory, policy (or unknown).
    pub decision: &'static str,
    /// The refusal or rejection code.
    pub code: String,
    pub reason: String,
    pub envelope_id: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub kind: String,
    pub categories: Vec<String>,
    pub purpose: String,
    pub legal_basis: String,
    pub policy_bundle_hash: String,
}

/// The CSV header, in the order of [`Row::csv_fields`].
pub const ROW_COLUMNS: &[&str] = &[
    "index",
    "time",
    "event",
    "decision",
    "code",
    "reason",
    "envelope_id",
    "sender",
    "recipients",
    "kind",
    "categories",
    "purpose",
    "legal_basis",
    "policy_bundle_hash",
];

fn envelope_text(id: &[u8]) -> String {
    if id.is_empty() {
        return String::new();
    }
    EnvelopeId::from_bytes(id)
        .map(|e| e.to_string())
        .unwrap_or_else(|_| hex::encode(id))
}

fn category_names(cats: &[i32]) -> Vec<String> {
    cats.iter()
        .map(|c| match v1::DataCategory::try_from(*c) {
            Ok(c) => crate::categories::short_name(c).to_string(),
            Err(_) => c.to_string(),
        })
        .collect()
}

fn refusal_code(c: i32) -> String {
    v1::RefusalCode::try_from(c)
        .map(|c| short(c.as_str_name(), "REFUSAL_CODE_"))
        .unwrap_or_else(|_| c.to_string())
}

fn rejection_code(c: i32) -> String {
    v1::RejectionCode::try_from(c)
        .map(|c| short(c.as_str_name(), "REJECTION_CODE_"))
        .unwrap_or_else(|_| c.to_string())
}

fn with_envelope(r: &mut Row, e: &v1::EnvelopeSummary) {
    r.envelope_id = envelope_text(&e.envelope_id);
    r.sender = if e.sender_agency.is_empty() {
        format!("node {}", e.sender_node)
    } else {
        e.sender_agency.clone()
    };
    r.recipients = e.recipients.clone();
    r.kind = kind_name(e.kind);
    r.categories = category_names(&e.declared_categories);
    r.purpose = purpose_name(e.purpose);
    r.legal_basis = basis_name(e.legal_basis);
}

/// The fields of entry `index`.
pub fn row(index: u64, event: &v1::AuditEvent) -> Row {
    let mut r = Row {
        index,
        at_ms: event.at_ms,
        event: "unknown",
        decision: "unknown",
        ..Row::default()
    };
    match &event.event {
        Some(Event::SubmissionAccepted(a)) => {
            r.event = "submission-accepted";
            r.decision = "accepted";
            if let Some(e) = &a.envelope {
                with_envelope(&mut r, e);
            }
            r.policy_bundle_hash = a.policy_bundle_hash.clone();
        }
        Some(Event::SubmissionRefused(x)) => {
            r.event = "submission-refused";
            r.decision = "refused";
            // A refusal is the submitting node's; the header's labels show
            // only when they are that node's own.
            match crate::broker::audit_api::attributed(x) {
                Some(e) => with_envelope(&mut r, e),
                None => r.sender = format!("node {}", x.submitting_node),
            }
            r.code = refusal_code(x.code);
            // A node's own refusal states its explanation once, apart.
            r.reason =
                if x.policy_explanation.is_empty() || x.reason.contains(&x.policy_explanation) {
                    x.reason.clone()
                } else {
                    format!("{}: {}", x.reason, x.policy_explanation)
                };
            r.policy_bundle_hash = x.policy_bundle_hash.clone();
        }
        Some(Event::ReceiptRecorded(x)) => {
            r.event = "receipt";
            let rejected = x.status == v1::ReceiptStatus::Rejected as i32;
            r.decision = if rejected { "rejected" } else { "delivered" };
            r.envelope_id = envelope_text(&x.envelope_id);
            r.sender = format!("node {}", x.recipient_node);
            r.recipients = x.delivered_to.clone();
            if rejected || x.code != 0 {
                r.code = rejection_code(x.code);
            }
            r.reason = x.reason.clone();
        }
        Some(Event::ContentViolation(x)) => {
            r.event = "content-violation";
            r.decision = "violation";
            r.envelope_id = envelope_text(&x.envelope_id);
            r.sender = if x.sender_agency.is_empty() {
                format!("node {}", x.sender_node)
            } else {
                x.sender_agency.clone()
            };
            r.recipients = vec![format!("node {}", x.reporting_node)];
            r.code = rejection_code(x.code);
            r.reason = x.detail.clone();
        }
        Some(Event::RecordsPurged(x)) => {
            r.event = "records-purged";
            r.decision = "purged";
            r.sender = format!("node {}", x.node);
            r.reason = format!("{} records purged", x.envelope_ids.len());
        }
        Some(Event::DirectoryChanged(x)) => {
            r.event = "directory-changed";
            r.decision = "directory";
            r.reason = format!(
                "directory version {}, sha256 {}",
                x.version,
                hex::encode(&x.directory_sha256)
            );
        }
        Some(Event::PolicyChanged(x)) => {
            r.event = "policy-changed";
            r.decision = "policy";
            r.reason = x.detail.clone();
            r.policy_bundle_hash = x.bundle_hash.clone();
        }
        None => {}
    }
    r
}

impl Row {
    /// The fields in [`ROW_COLUMNS`] order.
    pub fn csv_fields(&self) -> Vec<String> {
        vec![
            self.index.to_string(),
            crate::time::format_ms(self.at_ms),
            self.event.to_string(),
            self.decision.to_string(),
            self.code.clone(),
            self.reason.clone(),
            self.envelope_id.clone(),
            self.sender.clone(),
            self.recipients.join(";"),
            self.kind.clone(),
            self.categories.join(";"),
            self.purpose.clone(),
            self.legal_basis.clone(),
            self.policy_bundle_hash.clone(),
        ]
    }

    /// One line for people.
    pub fn text_line(&self) -> String {
        let mut s = format!(
            "{:>6}  {}  {}",
            self.index,
            crate::time::format_ms(self.at_ms),
            self.event
        );
        if !self.sender.is_empty() || !self.recipients.is_empty() {
            let to = if self.recipients.is_empty() {
                "-".to_string()
            } else {
                self.recipients.join(", ")
            };
            let _ = write!(s, "  {} → {to}", self.sender);
        }
        if !self.kind.is_empty() {
            let _ = write!(s, "  {}", self.kind);
        }
        if matches!(self.event, "submission-accepted" | "submission-refused") {
            let cats = if self.categories.is_empty() {
                "no personal data".to_string()
            } else {
                self.categories.join(", ")
            };
            let _ = write!(s, "  [{cats}]");
        }
        if !self.purpose.is_empty() {
            let _ = write!(s, "  {} / {}", self.purpose, self.legal_basis);
        }
        let _ = write!(s, "  {}", self.decision);
        if !self.code.is_empty() {
            let _ = write!(s, " ({})", self.code);
        }
        if !self.reason.is_empty() {
            let _ = write!(s, ": {}", one_line(&self.reason));
        }
        s
    }
}

fn one_line(s: &str) -> Cow<'_, str> {
    if s.contains(['\n', '\r']) {
        Cow::Owned(
            s.split(['\n', '\r'])
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" / "),
        )
    } else {
        Cow::Borrowed(s)
    }
}

/// Labelled details of an event, for `prove`.
pub fn event_details(event: &v1::AuditEvent) -> Vec<(&'static str, String)> {
    let r = row(0, event);
    let mut d = vec![
        ("event", r.event.to_string()),
        ("time", crate::time::format_ms(r.at_ms)),
    ];
    if !r.sender.is_empty() {
        d.push(("sender", r.sender.clone()));
    }
    if !r.recipients.is_empty() {
        d.push(("recipients", r.recipients.join(", ")));
    }
    if !r.kind.is_empty() {
        d.push(("kind", r.kind.clone()));
    }
    if let Some(Event::SubmissionAccepted(x)) = &event.event {
        if let Some(e) = &x.envelope {
            d.push(("categories", categories_text(&e.declared_categories)));
        }
    }
    if let Some(Event::SubmissionRefused(x)) = &event.event {
        if let Some(e) = crate::broker::audit_api::attributed(x) {
            d.push(("categories", categories_text(&e.declared_categories)));
        }
    }
    if !r.purpose.is_empty() {
        d.push(("purpose", r.purpose.clone()));
        d.push(("legal basis", r.legal_basis.clone()));
    }
    let mut decision = r.decision.to_string();
    if !r.code.is_empty() {
        let _ = write!(decision, " ({})", r.code);
    }
    if !r.reason.is_empty() {
        let _ = write!(decision, ": {}", r.reason);
    }
    d.push(("decision", decision));
    if !r.policy_bundle_hash.is_empty() {
        d.push(("policy bundle", r.policy_bundle_hash.clone()));
    }
    let explanation = match &event.event {
        Some(Event::SubmissionAccepted(x)) => x.policy_explanation.as_str(),
        Some(Event::SubmissionRefused(x)) => x.policy_explanation.as_str(),
        _ => "",
    };
    if !explanation.is_empty() {
        d.push(("policy explanation", one_line(explanation).into_owned()));
    }
    d
}

// ---- CSV and HTML escaping ------------------------------------------------------

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote, a line
/// break or leading/trailing space, quotes doubled. A field that a
/// spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, tab
/// or carriage return) gets a leading `'` and is quoted; no value casebridge
/// writes itself starts so, only text from peers could.
pub fn csv_field(s: &str) -> Cow<'_, str> {
    let formula = s.starts_with(['=', '+', '-', '@', '\t', '\r']);
    let needs_quotes =
        formula || s.contains([',', '"', '\n', '\r']) || s.starts_with(' ') || s.ends_with(' ');
    if !needs_quotes {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 4);
    out.push('"');
    if formula {
        out.push('\'');
    }
    for c in s.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    Cow::Owned(out)
}

/// A CSV record of `fields`, without the line ending.
pub fn csv_line<S: AsRef<str>>(fields: &[S]) -> String {
    fields
        .iter()
        .map(|f| csv_field(f.as_ref()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Text escaped for HTML and XML content and quoted attribute values.
pub fn html_escape(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

// ---- query ----------------------------------------------------------------------

const DECISIONS: &[&str] = &[
    "accepted",
    "refused",
    "delivered",
    "rejected",
    "violation",
    "purged",
    "directory",
    "policy",
];

/// The request for `args`, with every filter checked first.
pub fn query_request(args: &QueryArgs) -> anyhow::Result<v1::QueryRequest> {
    let mut req = v1::QueryRequest::default();
    if let Some(a) = &args.agency {
        let id: AgencyId = a
            .parse()
            .map_err(|_| anyhow!("--agency {a:?}: expected CC/name, e.g. HR/police"))?;
        req.agency = id.to_string();
    }
    if let Some(c) = &args.country {
        let cc: Country = c
            .trim()
            .to_ascii_uppercase()
            .parse()
            .map_err(|_| anyhow!("--country {c:?}: expected a two-letter code, e.g. HR"))?;
        req.country = cc.to_string();
    }
    if let Some(k) = &args.kind {
        let kind = crate::categories::parse_kind_short_name(k.trim())
            .ok_or_else(|| anyhow!("--kind {k:?}: unknown record kind, e.g. wanted_alert"))?;
        req.kind = crate::categories::kind_short_name(kind).to_string();
    }
    if let Some(d) = &args.decision {
        let d = d.trim().to_ascii_lowercase();
        if !DECISIONS.contains(&d.as_str()) {
            bail!("--decision {d:?}: one of {}", DECISIONS.join(", "));
        }
        req.decision = d;
    }
    if let Some(t) = &args.from {
        req.from_ms = parse_time_ms(t).with_context(|| format!("--from {t:?}"))?;
    }
    if let Some(t) = &args.to {
        req.to_ms = parse_time_ms(t).with_context(|| format!("--to {t:?}"))?;
    }
    if req.from_ms != 0 && req.to_ms != 0 && req.to_ms <= req.from_ms {
        bail!("--to must be after --from");
    }
    req.limit = args.limit.unwrap_or(0);
    req.start = args.start.unwrap_or(0);
    Ok(req)
}

/// What `casebridge audit query` found.
#[derive(Debug, Default)]
pub struct QueryResult {
    pub entries: Vec<v1::LogEntry>,
    /// Set when the broker cut the result (entry, byte or time limit): its
    /// reason and the index to continue from (`--start`).
    pub cut: Option<(String, u64)>,
}

impl QueryResult {
    /// The line saying the result was cut, if it was.
    pub fn cut_notice(&self) -> Option<String> {
        self.cut.as_ref().map(|(reason, next)| {
            format!(
                "result cut by the broker after {} entries ({reason}); more entries may match: \
                 continue with --start {next}",
                self.entries.len()
            )
        })
    }
}

/// `casebridge audit query`: the matching entries, each with its event
/// decoded from the leaf (an entry whose served event differs from its leaf
/// is refused). Query results are not proven; `verify` and `prove` are the
/// checks.
pub async fn query(
    profile: &Path,
    directory: Option<&Path>,
    args: &QueryArgs,
) -> anyhow::Result<QueryResult> {
    let req = query_request(args)?;
    let mut auditor = Auditor::connect(profile, directory)?;
    let resp = grpc("Query", auditor.api.query(req).await)?;
    let cut = resp.truncated.then(|| {
        let reason = if resp.truncated_reason.is_empty() {
            "no reason given".to_string()
        } else {
            crate::bounds::clip(&one_line(&resp.truncated_reason), 200).into_owned()
        };
        (reason, resp.next_index)
    });
    let mut entries = resp.entries;
    for e in &mut entries {
        let ev = v1::AuditEvent::decode(e.leaf.as_slice()).with_context(|| {
            format!(
                "entry {}: the leaf is not a casebridge.v1.AuditEvent",
                e.index
            )
        })?;
        if e.event.as_ref().is_some_and(|served| *served != ev) {
            bail!(
                "entry {}: the event the broker served is not the event its leaf holds",
                e.index
            );
        }
        e.event = Some(ev);
    }
    Ok(QueryResult { entries, cut })
}

/// One entry as proto3 JSON (pbjson) on one line. proto3 JSON leaves out
/// fields with default values, which would drop `"index"` from entry 0; it is
/// always written here (a uint64, so a JSON string, as proto3 JSON wants).
pub fn entry_json_line(e: &v1::LogEntry) -> anyhow::Result<String> {
    let mut v = serde_json::to_value(e)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "index".into(),
            serde_json::Value::String(e.index.to_string()),
        );
    }
    Ok(serde_json::to_string(&v)?)
}

/// Parses RFC 3339 (`2025-03-01T12:00:00Z`, fractions and `±HH:MM` offsets
/// allowed, `T` or a space) or a bare date (midnight UTC) into Unix
/// milliseconds.
pub fn parse_time_ms(s: &str) -> anyhow::Result<i64> {
    let b = s.trim().as_bytes();
    let bad = || anyhow!("expected RFC 3339, e.g. 2025-03-01T12:00:00Z, or a date 2025-03-01");
    let num = |from: usize, len: usize| -> anyhow::Result<u32> {
        let digits = b.get(from..from + len).ok_or_else(bad)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(digits
            .iter()
            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let sep = |at: usize, c: &[u8]| -> anyhow::Result<()> {
        match b.get(at) {
            Some(x) if c.contains(x) => Ok(()),
            _ => Err(bad()),
        }
    };
    let year = num(0, 4)?;
    sep(4, b"-")?;
    let month = num(5, 2)?;
    sep(7, b"-")?;
    let day = num(8, 2)?;
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or_else(|| anyhow!("month {month} out of range"))?;
    let date = time::Date::from_calendar_date(year as i32, month, day as u8)
        .map_err(|e| anyhow!("invalid date: {e}"))?;
    if b.len() == 10 {
        return Ok(date.midnight().assume_utc().unix_timestamp() * 1000);
    }
    sep(10, b"Tt ")?;
    let hour = num(11, 2)?;
    sep(13, b":")?;
    let minute = num(14, 2)?;
    sep(16, b":")?;
    let second = num(17, 2)?;
    let mut at = 19;
    let mut millis = 0u32;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 3 {
                millis = millis * 10 + u32::from(b[at] - b'0');
            }
            at += 1;
        }
        if at == start {
            return Err(bad());
        }
        for _ in (at - start)..3 {
            millis *= 10;
        }
    }
    let offset_seconds: i32 = match b.get(at) {
        Some(b'Z' | b'z') if b.len() == at + 1 => 0,
        Some(&c @ (b'+' | b'-')) if b.len() == at + 6 => {
            let h = num(at + 1, 2)?;
            sep(at + 3, b":")?;
            let m = num(at + 4, 2)?;
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let secs = (h * 3600 + m * 60) as i32;
            if c == b'-' { -secs } else { secs }
        }
        _ => return Err(bad()),
    };
    let t = time::Time::from_hms_milli(hour as u8, minute as u8, second as u8, millis as u16)
        .map_err(|e| anyhow!("invalid time: {e}"))?;
    let local = time::PrimitiveDateTime::new(date, t).assume_utc();
    let ms = local.unix_timestamp() * 1000 + i64::from(millis) - i64::from(offset_seconds) * 1000;
    Ok(ms)
}

fn format_seconds(s: u64) -> String {
    crate::time::format_ms(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX))
}

// ---- report: aggregation --------------------------------------------------------

/// Counts of one agency's activity. `[as sender, as recipient]` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgencyStats {
    pub by_kind: BTreeMap<String, [u64; 2]>,
    pub by_purpose: BTreeMap<String, [u64; 2]>,
    /// accepted, refused, delivered, rejected, violation.
    pub by_decision: BTreeMap<&'static str, [u64; 2]>,
    /// Submissions it sent that were refused.
    pub refusals: Vec<Row>,
    /// Its records that a receiving node rejected.
    pub rejections: Vec<Row>,
    /// Content violations reported against its records.
    pub violations: Vec<Row>,
}

const SENT: usize = 0;
const RECEIVED: usize = 1;

/// What a report shows, accumulated entry by entry.
#[derive(Debug, Clone, Default)]
pub struct LogSummary {
    pub entries: u64,
    pub first_at_ms: Option<i64>,
    pub last_at_ms: Option<i64>,
    /// Entries per decision (accepted, refused, ...).
    pub by_decision: BTreeMap<&'static str, u64>,
    /// Accepted envelopes per (sender country, recipient country); an
    /// envelope to several agencies of one country counts once for it.
    pub accepted_flows: BTreeMap<(String, String), u64>,
    /// Refused submissions, counted the same way.
    pub refused_flows: BTreeMap<(String, String), u64>,
    pub agencies: BTreeMap<String, AgencyStats>,
    /// Refusals whose header could not be parsed, and receipts for unknown
    /// envelopes.
    pub unattributed: Vec<Row>,
    /// Directory and policy changes, purges.
    pub federation_events: Vec<Row>,
    /// Envelope id → sending agency, to attribute receipts.
    senders: HashMap<Vec<u8>, String>,
}

fn country_of(party: &str) -> String {
    party.split('/').next().unwrap_or(party).to_string()
}

impl LogSummary {
    fn agency(&mut self, id: &str) -> &mut AgencyStats {
        self.agencies.entry(id.to_string()).or_default()
    }

    fn count_submission(&mut self, e: &v1::EnvelopeSummary, decision: &'static str, refused: bool) {
        let kind = kind_name(e.kind);
        let purpose = purpose_name(e.purpose);
        let sender = e.sender_agency.clone();
        let s = self.agency(&sender);
        s.by_kind.entry(kind.clone()).or_default()[SENT] += 1;
        s.by_purpose.entry(purpose.clone()).or_default()[SENT] += 1;
        s.by_decision.entry(decision).or_default()[SENT] += 1;
        let mut to: BTreeSet<String> = BTreeSet::new();
        for r in &e.recipients {
            let a = self.agency(r);
            a.by_kind.entry(kind.clone()).or_default()[RECEIVED] += 1;
            a.by_purpose.entry(purpose.clone()).or_default()[RECEIVED] += 1;
            a.by_decision.entry(decision).or_default()[RECEIVED] += 1;
            to.insert(country_of(r));
        }
        let from = if sender.is_empty() {
            e.sender_node.clone()
        } else {
            country_of(&sender)
        };
        let flows = if refused {
            &mut self.refused_flows
        } else {
            &mut self.accepted_flows
        };
        for cc in to {
            *flows.entry((from.clone(), cc)).or_default() += 1;
        }
    }

    /// Adds entry `index`.
    pub fn add(&mut self, index: u64, event: &v1::AuditEvent) {
        self.entries += 1;
        if event.at_ms != 0 {
            self.first_at_ms = Some(self.first_at_ms.map_or(event.at_ms, |t| t.min(event.at_ms)));
            self.last_at_ms = Some(self.last_at_ms.map_or(event.at_ms, |t| t.max(event.at_ms)));
        }
        let r = row(index, event);
        *self.by_decision.entry(r.decision).or_default() += 1;
        match &event.event {
            Some(Event::SubmissionAccepted(a)) => match &a.envelope {
                Some(e) if !e.sender_agency.is_empty() => {
                    self.count_submission(e, "accepted", false);
                    self.senders
                        .insert(e.envelope_id.clone(), e.sender_agency.clone());
                }
                _ => self.unattributed.push(r),
            },
            Some(Event::SubmissionRefused(x)) => match crate::broker::audit_api::attributed(x) {
                Some(e) if !e.sender_agency.is_empty() => {
                    self.count_submission(e, "refused", true);
                    self.agency(&e.sender_agency).refusals.push(r);
                }
                _ => self.unattributed.push(r),
            },
            Some(Event::ReceiptRecorded(x)) => {
                let sender = self.senders.get(&x.envelope_id).cloned();
                let rejected = x.status == v1::ReceiptStatus::Rejected as i32;
                let decision = if rejected { "rejected" } else { "delivered" };
                for a in &x.delivered_to {
                    self.agency(a).by_decision.entry(decision).or_default()[RECEIVED] += 1;
                }
                match sender {
                    Some(s) => {
                        let st = self.agency(&s);
                        st.by_decision.entry(decision).or_default()[SENT] += 1;
                        if rejected {
                            st.rejections.push(r);
                        }
                    }
                    None => self.unattributed.push(r),
                }
            }
            Some(Event::ContentViolation(x)) => {
                let sender = if x.sender_agency.is_empty() {
                    self.senders.get(&x.envelope_id).cloned()
                } else {
                    Some(x.sender_agency.clone())
                };
                match sender {
                    Some(s) => {
                        let st = self.agency(&s);
                        st.by_decision.entry("violation").or_default()[SENT] += 1;
                        st.violations.push(r);
                    }
                    None => self.unattributed.push(r),
                }
            }
            Some(
                Event::RecordsPurged(_) | Event::DirectoryChanged(_) | Event::PolicyChanged(_),
            )
            | None => self.federation_events.push(r),
        }
    }
}

// ---- report: rendering ----------------------------------------------------------

/// Everything a report is rendered from; rendering reads no clock and does
/// no I/O.
pub struct ReportInput<'a> {
    pub federation: &'a str,
    pub auditor: &'a str,
    pub broker: &'a str,
    pub generated_at_ms: i64,
    pub verified: &'a VerifyReport,
    pub summary: &'a LogSummary,
    /// Agency id → display name, from the directory.
    pub agency_names: &'a BTreeMap<String, String>,
}

const CSS: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:72rem;\
padding:0 1rem;color:#0f172a;line-height:1.4}\
h1{font-size:1.6rem;margin-bottom:.2rem}h2{margin-top:2rem;border-bottom:1px solid #cbd5e1}\
h3{margin:1.4rem 0 .4rem}.meta{color:#475569}\
table{border-collapse:collapse;margin:.4rem 0 1rem}\
th,td{border:1px solid #cbd5e1;padding:.2rem .5rem;text-align:left;vertical-align:top;overflow-wrap:anywhere}\
th{background:#f1f5f9}td.n{text-align:right;font-variant-numeric:tabular-nums}\
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85rem}\
pre{background:#f8fafc;border:1px solid #e2e8f0;padding:.6rem;overflow-x:auto}\
.ok{color:#166534;font-weight:600}.grid{display:flex;flex-wrap:wrap;gap:1.5rem}\
.agency{border:1px solid #e2e8f0;border-radius:6px;padding:.2rem 1rem;margin:1rem 0}\
.charts{display:flex;flex-wrap:wrap;gap:2rem}figure{margin:0}figcaption{color:#475569;font-size:.9rem}";

fn esc(s: &str) -> Cow<'_, str> {
    html_escape(s)
}

/// A heat-map matrix of flows: rows are sending countries, columns receiving
/// countries, each cell's colour scaled to the largest count.
pub fn flow_matrix_svg(title: &str, flows: &BTreeMap<(String, String), u64>) -> String {
    let countries: Vec<&str> = flows
        .keys()
        .flat_map(|(a, b)| [a.as_str(), b.as_str()])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    const CELL: usize = 44;
    const LEFT: usize = 64;
    const TOP: usize = 56;
    let n = countries.len();
    let width = LEFT + CELL * n.max(1) + 16;
    let height = TOP + CELL * n.max(1) + 16;
    let max = flows.values().copied().max().unwrap_or(0).max(1);
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         viewBox=\"0 0 {width} {height}\" role=\"img\" aria-label=\"{}\" \
         font-family=\"system-ui,sans-serif\" font-size=\"13\">",
        esc(title)
    );
    let _ = write!(s, "<title>{}</title>", esc(title));
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"16\" text-anchor=\"middle\" fill=\"#475569\">to →</text>\
         <text x=\"14\" y=\"{}\" text-anchor=\"middle\" fill=\"#475569\" \
         transform=\"rotate(-90 14 {})\">from →</text>",
        LEFT + CELL * n.max(1) / 2,
        TOP + CELL * n.max(1) / 2,
        TOP + CELL * n.max(1) / 2
    );
    if n == 0 {
        let _ = write!(
            s,
            "<text x=\"{LEFT}\" y=\"{}\" fill=\"#475569\">none</text></svg>",
            TOP + 20
        );
        return s;
    }
    for (j, to) in countries.iter().enumerate() {
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-weight=\"600\">{}</text>",
            LEFT + j * CELL + CELL / 2,
            TOP - 10,
            esc(to)
        );
    }
    for (i, from) in countries.iter().enumerate() {
        let y = TOP + i * CELL;
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-weight=\"600\">{}</text>",
            LEFT - 8,
            y + CELL / 2 + 5,
            esc(from)
        );
        for (j, to) in countries.iter().enumerate() {
            let x = LEFT + j * CELL;
            let count = flows
                .get(&((*from).to_string(), (*to).to_string()))
                .copied()
                .unwrap_or(0);
            let t = count as f64 / max as f64;
            let (fill, ink) = if count == 0 {
                ("#f8fafc".to_string(), "#94a3b8")
            } else {
                (heat(t), if t > 0.55 { "#ffffff" } else { "#0f172a" })
            };
            let _ = write!(
                s,
                "<g><title>{} → {}: {count}</title><rect x=\"{x}\" y=\"{y}\" width=\"{CELL}\" \
                 height=\"{CELL}\" fill=\"{fill}\" stroke=\"#ffffff\" stroke-width=\"2\"/>\
                 <text x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"{ink}\">{}</text></g>",
                esc(from),
                esc(to),
                x + CELL / 2,
                y + CELL / 2 + 5,
                if count == 0 {
                    "·".to_string()
                } else {
                    count.to_string()
                }
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// Light blue to dark blue; `t` in `0..=1`.
fn heat(t: f64) -> String {
    let t = t.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * (0.15 + 0.85 * t)).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        lerp(219.0, 30.0),
        lerp(234.0, 64.0),
        lerp(254.0, 175.0)
    )
}

fn counts_table(
    out: &mut String,
    caption: &str,
    head: [&str; 2],
    rows: impl IntoIterator<Item = (String, [u64; 2])>,
) {
    let rows: Vec<_> = rows.into_iter().collect();
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<table><caption>{}</caption><tr><th></th><th>{}</th><th>{}</th></tr>",
        esc(caption),
        esc(head[0]),
        esc(head[1])
    );
    for (k, [a, b]) in rows {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"n\">{a}</td><td class=\"n\">{b}</td></tr>",
            esc(&k)
        );
    }
    out.push_str("</table>");
}

fn rows_table(out: &mut String, caption: &str, rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "<h4>{}</h4><table><tr><th>index</th><th>time</th><th>envelope</th><th>from → to</th>\
         <th>kind</th><th>purpose / legal basis</th><th>decision</th><th>reason</th></tr>",
        esc(caption)
    );
    for r in rows {
        let code = if r.code.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.code)
        };
        let purpose = if r.purpose.is_empty() {
            String::new()
        } else {
            format!("{} / {}", r.purpose, r.legal_basis)
        };
        let _ = write!(
            out,
            "<tr><td class=\"n\">{}</td><td>{}</td><td><code>{}</code></td><td>{} → {}</td>\
             <td>{}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
            r.index,
            esc(&crate::time::format_ms(r.at_ms)),
            esc(&r.envelope_id),
            esc(&r.sender),
            esc(&r.recipients.join(", ")),
            esc(&r.kind),
            esc(&purpose),
            esc(r.decision),
            esc(&code),
            esc(&r.reason)
        );
    }
    out.push_str("</table>");
}

/// The report as one self-contained HTML document: inline CSS and SVG, no
/// script, no external resource (a Content-Security-Policy forbids them),
/// every text from the log escaped.
pub fn render_report(input: &ReportInput<'_>) -> String {
    let v = input.verified;
    let cp = &v.checkpoint.checkpoint;
    let sum = input.summary;
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'; img-src data:\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Audit report: {fed}</title><style>{CSS}</style></head><body>\
         <h1>Audit report: {fed}</h1><p class=\"meta\">Generated {at} by auditor {aud} from the \
         broker at {broker}.</p>",
        fed = esc(input.federation),
        at = esc(&crate::time::format_ms(input.generated_at_ms)),
        aud = esc(input.auditor),
        broker = esc(input.broker)
    );

    // The checkpoint.
    h.push_str("<h2 id=\"checkpoint\">Checkpoint</h2><table>");
    let period = match (sum.first_at_ms, sum.last_at_ms) {
        (Some(a), Some(b)) => format!(
            "{} to {}",
            crate::time::format_ms(a),
            crate::time::format_ms(b)
        ),
        _ => "no entries".to_string(),
    };
    for (k, val) in [
        ("origin", cp.origin().to_string()),
        ("tree size", cp.size().to_string()),
        ("root (base64)", STANDARD.encode(cp.root_hash())),
        ("root (hex)", hex::encode(cp.root_hash())),
        ("log key", v.checkpoint.log_key.clone()),
        ("directory version", v.directory_version.to_string()),
        ("entries from", period),
    ] {
        let _ = write!(
            h,
            "<tr><th>{}</th><td><code>{}</code></td></tr>",
            esc(k),
            esc(&val)
        );
    }
    h.push_str("</table>");
    let _ = write!(
        h,
        "<p class=\"ok\">Verified: all {} entries fetched, every leaf hash recomputed, the Merkle \
         root equals the signed checkpoint's.",
        cp.size()
    );
    if let Some(m) = v.previous_size {
        let _ = write!(
            h,
            " Consistent with the checkpoint this auditor saved at size {m}."
        );
    }
    h.push_str("</p><h3>Witness cosignatures</h3>");
    if v.checkpoint.cosignatures.is_empty() {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str("<table><tr><th>node</th><th>key name</th><th>cosigned at</th></tr>");
        for c in &v.checkpoint.cosignatures {
            let _ = write!(
                h,
                "<tr><td>{}{}</td><td><code>{}</code></td><td>{}</td></tr>",
                esc(c.country.as_str()),
                if c.revoked { " (revoked)" } else { "" },
                esc(&c.name),
                esc(&format_seconds(c.timestamp))
            );
        }
        h.push_str("</table>");
    }
    if !v.checkpoint.missing.is_empty() {
        let m: Vec<String> = v
            .checkpoint
            .missing
            .iter()
            .map(Country::to_string)
            .collect();
        let _ = write!(h, "<p>Not cosigned by: {}.</p>", esc(&m.join(", ")));
    }
    if !v.checkpoint.unknown.is_empty() {
        let _ = write!(
            h,
            "<p>Signatures by keys not in the directory (ignored): <code>{}</code>.</p>",
            esc(&v.checkpoint.unknown.join(", "))
        );
    }
    let _ = write!(
        h,
        "<details><summary>Signed checkpoint note</summary><pre>{}</pre></details>",
        esc(&String::from_utf8_lossy(&v.checkpoint.note))
    );

    // Flows.
    h.push_str("<h2 id=\"flows\">Flows between countries</h2><div class=\"charts\">");
    let _ = write!(
        h,
        "<figure>{}<figcaption>Accepted transfers, sending country (rows) to receiving country \
         (columns); an envelope to several agencies of one country counts once.</figcaption>\
         </figure>",
        flow_matrix_svg("Accepted transfers", &sum.accepted_flows)
    );
    let _ = write!(
        h,
        "<figure>{}<figcaption>Refused submissions, counted the same way.</figcaption></figure>",
        flow_matrix_svg("Refused submissions", &sum.refused_flows)
    );
    h.push_str("</div>");

    // Totals.
    h.push_str("<h2 id=\"totals\">Entries by decision</h2><table><tr><th>decision</th><th>entries</th></tr>");
    for (d, n) in &sum.by_decision {
        let _ = write!(h, "<tr><td>{}</td><td class=\"n\">{n}</td></tr>", esc(d));
    }
    let _ = write!(
        h,
        "<tr><th>total</th><td class=\"n\">{}</td></tr></table>",
        sum.entries
    );

    // Agencies.
    h.push_str("<h2 id=\"agencies\">Agencies</h2>");
    if sum.agencies.is_empty() {
        h.push_str("<p>No exchanges.</p>");
    }
    for (id, st) in &sum.agencies {
        let name = input
            .agency_names
            .get(id)
            .map(|n| format!(" — {n}"))
            .unwrap_or_default();
        let _ = write!(
            h,
            "<section class=\"agency\"><h3>{}{}</h3><div class=\"grid\">",
            esc(id),
            esc(&name)
        );
        counts_table(
            &mut h,
            "By kind",
            ["sent", "received"],
            st.by_kind.iter().map(|(k, v)| (k.clone(), *v)),
        );
        counts_table(
            &mut h,
            "By purpose",
            ["sent", "received"],
            st.by_purpose.iter().map(|(k, v)| (k.clone(), *v)),
        );
        counts_table(
            &mut h,
            "By decision",
            ["as sender", "as recipient"],
            st.by_decision.iter().map(|(k, v)| ((*k).to_string(), *v)),
        );
        h.push_str("</div>");
        rows_table(&mut h, "Refusals", &st.refusals);
        rows_table(&mut h, "Rejected by the receiving node", &st.rejections);
        rows_table(&mut h, "Content violations", &st.violations);
        h.push_str("</section>");
    }
    if !sum.unattributed.is_empty() {
        h.push_str("<h2 id=\"unattributed\">Not attributable to an agency</h2>");
        rows_table(&mut h, "Entries", &sum.unattributed);
    }
    h.push_str("<h2 id=\"federation\">Directory, policy and purges</h2>");
    if sum.federation_events.is_empty() {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str("<table><tr><th>index</th><th>time</th><th>event</th><th>by</th><th>detail</th><th>policy bundle</th></tr>");
        for r in &sum.federation_events {
            let _ = write!(
                h,
                "<tr><td class=\"n\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td><code>{}</code></td></tr>",
                r.index,
                esc(&crate::time::format_ms(r.at_ms)),
                esc(r.event),
                esc(&r.sender),
                esc(&r.reason),
                esc(&r.policy_bundle_hash)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}

/// `casebridge audit report --out FILE`: verifies the log like `verify`
/// (saving the checkpoint), then writes the report built from the verified
/// entries.
pub async fn report(profile: &Path, directory: Option<&Path>, out: &Path) -> anyhow::Result<()> {
    let mut auditor = Auditor::connect(profile, directory)?;
    let mut summary = LogSummary::default();
    let verified = verify_log(&mut auditor, |i, ev| summary.add(i, ev)).await?;
    let agency_names: BTreeMap<String, String> = auditor
        .directory
        .agencies()
        .map(|a| (a.id.to_string(), a.display_name.clone()))
        .collect();
    let html = render_report(&ReportInput {
        federation: &auditor.profile.federation,
        auditor: &auditor.profile.auditor,
        broker: &auditor.profile.broker,
        generated_at_ms: crate::time::now_ms(),
        verified: &verified,
        summary: &summary,
        agency_names: &agency_names,
    });
    let tmp = out.with_extension("html.tmp");
    std::fs::write(&tmp, html.as_bytes())
        .and_then(|()| std::fs::rename(&tmp, out))
        .with_context(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::{Cosigner, NoteSigner};

    // ---- first bad index ----

    fn leaves(n: u64, tag: &str) -> Vec<Hash> {
        (0..n)
            .map(|i| merkle::leaf_hash(format!("{tag}{i}").as_bytes()))
            .collect()
    }

    fn tree(hashes: &[Hash]) -> MemoryTree {
        let mut t = MemoryTree::new();
        for h in hashes {
            t.append(*h);
        }
        t
    }

    /// Runs the search as `verify_log` does, with `honest` as the broker's
    /// real tree; returns the index and the number of proofs asked for.
    fn search(honest: &MemoryTree, served: &MemoryTree, good: u64, bad: u64) -> (u64, usize) {
        let size = honest.size();
        let root = honest.current_root();
        let mut s = PrefixSearch::new(good, bad);
        let mut probes = 0;
        while let Some(k) = s.next_probe() {
            probes += 1;
            let proof = merkle::consistency_proof(honest, k, size).expect("proof");
            s.record(k, prefix_in_tree(served, k, size, &root, &proof).is_ok());
        }
        (s.first_bad_index(), probes)
    }

    #[test]
    fn finds_the_first_altered_leaf_in_every_position() {
        for n in 1..=40u64 {
            let honest_leaves = leaves(n, "e");
            let honest = tree(&honest_leaves);
            let log2 = 64 - n.leading_zeros() as usize;
            for j in 0..n {
                let mut served_leaves = honest_leaves.clone();
                served_leaves[j as usize] = merkle::leaf_hash(b"forged");
                // A second alteration later must not hide the first.
                if j + 3 < n {
                    served_leaves[(j + 3) as usize] = merkle::leaf_hash(b"forged too");
                }
                let served = tree(&served_leaves);
                assert_ne!(served.current_root(), honest.current_root());
                let (found, probes) = search(&honest, &served, 0, n);
                assert_eq!(found, j, "n {n}, altered {j}");
                assert!(probes <= log2, "n {n}: {probes} proofs");
            }
        }
    }

    #[test]
    fn a_known_good_prefix_narrows_the_search() {
        let honest_leaves = leaves(100, "e");
        let honest = tree(&honest_leaves);
        let mut served_leaves = honest_leaves.clone();
        served_leaves[77] = merkle::leaf_hash(b"forged");
        let served = tree(&served_leaves);
        assert_eq!(search(&honest, &served, 60, 100).0, 77);
        // A wrong "good" bound beyond the bad one is clamped, not trusted.
        assert_eq!(PrefixSearch::new(200, 100).next_probe(), None);
        assert_eq!(PrefixSearch::new(200, 100).first_bad_index(), 99);
    }

    #[test]
    fn missing_entries_are_found_where_they_stop() {
        // The broker served only 30 of 50 entries, the first 30 correct:
        // the prefix of 31 cannot be checked, so the bound is 31.
        let honest_leaves = leaves(50, "e");
        let honest = tree(&honest_leaves);
        let served = tree(&honest_leaves[..30]);
        assert_eq!(search(&honest, &served, 0, 31).0, 30);
        // With an alteration among the 30 it is that one.
        let mut short = honest_leaves[..30].to_vec();
        short[4] = merkle::leaf_hash(b"x");
        assert_eq!(search(&honest, &tree(&short), 0, 31).0, 4);
    }

    #[test]
    fn a_forged_proof_cannot_clear_a_bad_prefix() {
        let honest = tree(&leaves(16, "e"));
        let mut served_leaves = leaves(16, "e");
        served_leaves[3] = merkle::leaf_hash(b"forged");
        let served = tree(&served_leaves);
        let root = honest.current_root();
        // A broker answering with the proof for the served tree instead.
        let forged = merkle::consistency_proof(&served, 8, 16).expect("proof");
        assert!(prefix_in_tree(&served, 8, 16, &root, &forged).is_err());
        let honest_proof = merkle::consistency_proof(&honest, 3, 16).expect("proof");
        assert!(prefix_in_tree(&served, 3, 16, &root, &honest_proof).is_ok());
        // Beyond what was served.
        assert!(prefix_in_tree(&tree(&leaves(2, "e")), 3, 16, &root, &honest_proof).is_err());
    }

    #[test]
    fn inconsistency_names_the_lowest_index_first() {
        let e = inconsistent(vec![
            Finding::global("fork".into()),
            Finding::at(17, "leaf differs".into()),
            Finding::at(9, "missing".into()),
        ]);
        assert_eq!(e.first_bad_index, Some(9));
        assert_eq!(
            e.to_string(),
            "log inconsistent: first bad index 9: missing; also: leaf differs; also: fork"
        );
        let e = inconsistent(vec![Finding::global("fork".into())]);
        assert_eq!(e.to_string(), "log inconsistent: fork");
    }

    // ---- state ----

    fn signed_checkpoint(origin: &str, hashes: &[Hash]) -> Vec<u8> {
        let signer = NoteSigner::from_seed(origin, &[3; 32]).expect("signer");
        let cp = Checkpoint::new(
            origin,
            hashes.len() as u64,
            merkle::root_from_leaves(hashes),
        )
        .expect("checkpoint");
        note::sign_checkpoint(&cp, &signer)
            .expect("sign")
            .to_bytes()
    }

    #[test]
    fn state_round_trips_appends_and_detects_damage() {
        let tmp = tempfile::tempdir().expect("tmp");
        let state = StateDir::new(tmp.path().join("state"));
        let origin = "casebridge.test/audit-log";
        assert!(state.load(origin).expect("empty").is_none());

        let first = leaves(5, "e");
        state
            .save(&signed_checkpoint(origin, &first), &first, 0)
            .expect("save");
        let s = state.load(origin).expect("load").expect("state");
        assert_eq!(s.checkpoint.size(), 5);
        assert_eq!(s.leaf_hashes, first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode(state.path()), 0o700);
            for f in [LEAF_HASHES_FILE, LAST_CHECKPOINT_FILE] {
                assert_eq!(mode(&state.path().join(f)), 0o600, "{f}");
            }
        }

        let second = leaves(9, "e");
        state
            .save(&signed_checkpoint(origin, &second), &second, 5)
            .expect("save");
        let s = state.load(origin).expect("load").expect("state");
        assert_eq!(s.leaf_hashes, second);
        let raw = std::fs::read(state.path().join(LEAF_HASHES_FILE)).expect("read");
        assert_eq!(raw.len(), 9 * 32);

        // Another log's state is refused.
        assert!(state.load("elsewhere/audit-log").is_err());

        // Leftover hashes from an interrupted save are tolerated.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(state.path().join(LEAF_HASHES_FILE))
            .expect("open");
        f.write_all(&[7u8; 32]).expect("write");
        drop(f);
        assert_eq!(
            state
                .load(origin)
                .expect("load")
                .expect("state")
                .leaf_hashes
                .len(),
            9
        );

        // A flipped bit in a saved hash is damage.
        let mut raw = std::fs::read(state.path().join(LEAF_HASHES_FILE)).expect("read");
        raw[40] ^= 1;
        std::fs::write(state.path().join(LEAF_HASHES_FILE), &raw).expect("write");
        let err = state.load(origin).expect_err("damaged").to_string();
        assert!(err.contains("damaged"), "{err}");
        raw.truncate(100);
        std::fs::write(state.path().join(LEAF_HASHES_FILE), &raw).expect("write");
        assert!(state.load(origin).is_err());
    }

    // ---- trust ----

    fn trust_with(
        origin: &str,
        log_seed: [u8; 32],
        witnesses: &[(&str, [u8; 32], bool)],
    ) -> LogTrust {
        let log_pk = NoteSigner::from_seed(origin, &log_seed)
            .expect("signer")
            .verifier()
            .public_key()
            .to_owned();
        let log = Verifier::new(origin, SignatureType::Ed25519, log_pk).expect("verifier");
        LogTrust {
            origin: origin.to_string(),
            log_only: Verifiers::new([log.clone()]).expect("verifiers"),
            log,
            witnesses: witnesses
                .iter()
                .map(|(cc, seed, revoked)| {
                    let country: Country = cc.parse().expect("cc");
                    let name = witness_name("casebridge.test", country);
                    let pk = *Cosigner::from_seed(&name, seed)
                        .expect("cosigner")
                        .verifier()
                        .public_key();
                    Witness {
                        country,
                        revoked: *revoked,
                        verifier: Verifier::new(&name, SignatureType::CosignatureV1, pk)
                            .expect("verifier"),
                    }
                })
                .collect(),
        }
    }

    fn cosigned(origin: &str, size: u64, cosigners: &[(&str, [u8; 32], u64)]) -> Vec<u8> {
        let signer = NoteSigner::from_seed(origin, &[1; 32]).expect("signer");
        let cp = Checkpoint::new(origin, size, merkle::leaf_hash(b"root")).expect("cp");
        let mut n = note::sign_checkpoint(&cp, &signer).expect("sign");
        for (cc, seed, ts) in cosigners {
            let name = witness_name("casebridge.test", cc.parse().expect("cc"));
            let c = Cosigner::from_seed(&name, seed).expect("cosigner");
            n.add_signature(c.cosign(&cp, *ts).expect("cosign"))
                .expect("add");
        }
        n.to_bytes()
    }

    #[test]
    fn opens_checkpoints_and_reports_witnesses() {
        let origin = "casebridge.test/audit-log";
        let trust = trust_with(
            origin,
            [1; 32],
            &[
                ("HR", [2; 32], false),
                ("RS", [3; 32], false),
                ("BA", [4; 32], true),
            ],
        );
        let bytes = cosigned(
            origin,
            7,
            &[
                ("HR", [2; 32], 1_700_000_000),
                ("BA", [4; 32], 1_700_000_100),
                ("ME", [5; 32], 1),
            ],
        );
        let c = trust.open(&bytes).expect("open");
        assert_eq!(c.checkpoint.size(), 7);
        let who: Vec<&str> = c.cosignatures.iter().map(|c| c.country.as_str()).collect();
        assert_eq!(who, ["BA", "HR"]);
        assert_eq!(c.counted_cosignatures(), 1);
        assert_eq!(c.missing, vec!["RS".parse::<Country>().expect("cc")]);
        assert_eq!(c.unknown.len(), 1);
        assert!(c.unknown[0].starts_with("casebridge.test/node/ME+"));
        let lines = c.cosignature_lines().join("\n");
        assert!(lines.contains("cosigned by 1 of 2 nodes"), "{lines}");
        assert!(lines.contains("2023-11-14T22:13:20Z"), "{lines}");

        // A cosignature by HR's name and key ID that does not verify.
        let forged = cosigned(origin, 7, &[("HR", [2; 32], 5)]);
        let text = String::from_utf8(forged).expect("utf8");
        let (body, sigs) = text.split_at(text.rfind("\n\n").expect("sigs") + 2);
        let mut lines: Vec<String> = sigs.lines().map(str::to_string).collect();
        let hr = lines
            .iter_mut()
            .find(|l| l.contains("/node/HR"))
            .expect("hr");
        let sig = hr.rsplit(' ').next().expect("b64").to_string();
        let mut raw = STANDARD.decode(&sig).expect("b64");
        let last = raw.len() - 1;
        raw[last] ^= 1;
        *hr = hr.replace(&sig, &STANDARD.encode(raw));
        let tampered = format!("{body}{}\n", lines.join("\n"));
        let err = format!(
            "{:#}",
            trust.open(tampered.as_bytes()).expect_err("bad cosig")
        );
        assert!(
            err.contains("does not verify") && err.contains("node HR"),
            "{err}"
        );

        // Signed by another log key.
        let other = trust_with(origin, [9; 32], &[]);
        assert!(other.open(&cosigned(origin, 7, &[])).is_err());
        // Another origin.
        let elsewhere = trust_with("elsewhere/audit-log", [1; 32], &[]);
        assert!(elsewhere.open(&cosigned(origin, 7, &[])).is_err());
    }

    // ---- rows, CSV, HTML, times ----

    fn summary_of(
        id: &[u8],
        sender: &str,
        recipients: &[&str],
        kind: v1::RecordKind,
    ) -> v1::EnvelopeSummary {
        v1::EnvelopeSummary {
            envelope_id: id.to_vec(),
            sender_node: sender[..2].to_string(),
            sender_agency: sender.to_string(),
            recipients: recipients.iter().map(|s| s.to_string()).collect(),
            kind: kind as i32,
            declared_categories: vec![v1::DataCategory::Identity as i32],
            purpose: v1::Purpose::Prosecution as i32,
            legal_basis: v1::LegalBasis::EuropeanMlaConvention as i32,
            ..Default::default()
        }
    }

    fn synthetic_log() -> Vec<v1::AuditEvent> {
        let a = [1u8; 16];
        let b = [2u8; 16];
        let c = [3u8; 16];
        vec![
            v1::AuditEvent {
                at_ms: 1_700_000_000_000,
                event: Some(Event::DirectoryChanged(v1::DirectoryChanged {
                    version: 1,
                    directory_sha256: vec![0xab; 32],
                })),
            },
            v1::AuditEvent {
                at_ms: 1_700_000_001_000,
                event: Some(Event::SubmissionAccepted(v1::SubmissionAccepted {
                    envelope: Some(summary_of(
                        &a,
                        "HR/police",
                        &["RS/police", "RS/prosecutor", "BA/police"],
                        v1::RecordKind::WantedAlert,
                    )),
                    policy_bundle_hash: "sha256:1234".into(),
                    policy_explanation: "permit: framework/mla".into(),
                })),
            },
            v1::AuditEvent {
                at_ms: 1_700_000_002_000,
                event: Some(Event::SubmissionRefused(v1::SubmissionRefused {
                    submitting_node: "RS".into(),
                    code: v1::RefusalCode::Policy as i32,
                    reason: "forbidden by <framework> & \"H3\", 'quoted'".into(),
                    envelope: Some(summary_of(
                        &b,
                        "RS/police",
                        &["HR/police"],
                        v1::RecordKind::WantedAlert,
                    )),
                    ..Default::default()
                })),
            },
            v1::AuditEvent {
                at_ms: 1_700_000_003_000,
                event: Some(Event::ReceiptRecorded(v1::ReceiptRecorded {
                    envelope_id: a.to_vec(),
                    recipient_node: "RS".into(),
                    status: v1::ReceiptStatus::Delivered as i32,
                    delivered_to: vec!["RS/police".into(), "RS/prosecutor".into()],
                    ..Default::default()
                })),
            },
            v1::AuditEvent {
                at_ms: 1_700_000_004_000,
                event: Some(Event::ReceiptRecorded(v1::ReceiptRecorded {
                    envelope_id: a.to_vec(),
                    recipient_node: "BA".into(),
                    status: v1::ReceiptStatus::Rejected as i32,
                    code: v1::RejectionCode::UndeclaredCategories as i32,
                    reason: "health data not declared".into(),
                    ..Default::default()
                })),
            },
            v1::AuditEvent {
                at_ms: 1_700_000_005_000,
                event: Some(Event::ContentViolation(v1::ContentViolation {
                    envelope_id: a.to_vec(),
                    sender_node: "HR".into(),
                    sender_agency: "HR/police".into(),
                    reporting_node: "BA".into(),
                    code: v1::RejectionCode::UndeclaredCategories as i32,
                    detail: "<script>alert(1)</script>".into(),
                    ..Default::default()
                })),
            },
            v1::AuditEvent {
                at_ms: 1_700_000_006_000,
                event: Some(Event::SubmissionRefused(v1::SubmissionRefused {
                    submitting_node: "ME".into(),
                    code: v1::RefusalCode::Malformed as i32,
                    reason: "header does not parse".into(),
                    ..Default::default()
                })),
            },
            v1::AuditEvent {
                at_ms: 1_700_000_007_000,
                event: Some(Event::SubmissionAccepted(v1::SubmissionAccepted {
                    envelope: Some(summary_of(
                        &c,
                        "HR/prosecutor",
                        &["RS/prosecutor"],
                        v1::RecordKind::MlaRequest,
                    )),
                    ..Default::default()
                })),
            },
        ]
    }

    #[test]
    fn rows_of_each_event_type() {
        let log = synthetic_log();
        let r = row(1, &log[1]);
        assert_eq!(r.event, "submission-accepted");
        assert_eq!(r.decision, "accepted");
        assert_eq!(r.sender, "HR/police");
        assert_eq!(r.kind, "wanted_alert");
        assert_eq!(r.envelope_id, "01010101-0101-0101-0101-010101010101");
        assert_eq!(r.policy_bundle_hash, "sha256:1234");
        let line = r.text_line();
        assert!(
            line.contains("HR/police → RS/police, RS/prosecutor, BA/police"),
            "{line}"
        );
        assert!(line.contains("[identity]"), "{line}");
        let r = row(2, &log[2]);
        assert_eq!((r.decision, r.code.as_str()), ("refused", "policy"));
        let r = row(4, &log[4]);
        assert_eq!(
            (r.decision, r.code.as_str()),
            ("rejected", "undeclared-categories")
        );
        assert_eq!(row(5, &log[5]).decision, "violation");
        assert_eq!(row(6, &log[6]).sender, "node ME");
        assert_eq!(row(0, &log[0]).decision, "directory");
        assert_eq!(row(9, &v1::AuditEvent::default()).event, "unknown");
        assert_eq!(event_envelope_id(&log[3]), Some([1u8; 16].as_slice()));
        assert!(
            event_details(&log[1])
                .iter()
                .any(|(k, v)| *k == "policy explanation" && v.contains("framework"))
        );
        assert_eq!(ROW_COLUMNS.len(), r.csv_fields().len());
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field(""), "");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"no\""), "\"say \"\"no\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field("cr\rhere"), "\"cr\rhere\"");
        assert_eq!(csv_field(" padded"), "\" padded\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("@cmd"), "\"'@cmd\"");
        assert_eq!(csv_field("-1"), "\"'-1\"");
        assert_eq!(csv_field("2025-01-01T00:00:00Z"), "2025-01-01T00:00:00Z");
        assert_eq!(csv_line(&["1", "a,b", "c"]), "1,\"a,b\",c");
        let log = synthetic_log();
        let line = csv_line(&row(2, &log[2]).csv_fields());
        assert!(
            line.contains("\"forbidden by <framework> & \"\"H3\"\", 'quoted'\""),
            "{line}"
        );
        assert!(line.contains(",HR/police,"), "{line}");
    }

    #[test]
    fn json_lines_always_carry_the_index() {
        let log = synthetic_log();
        for index in [0u64, 7] {
            let e = v1::LogEntry {
                index,
                leaf: log[1].encode_to_vec(),
                event: Some(log[1].clone()),
            };
            let line = entry_json_line(&e).expect("json");
            assert!(!line.contains('\n'));
            let v: serde_json::Value = serde_json::from_str(&line).expect("parse");
            assert_eq!(v["index"], serde_json::Value::String(index.to_string()));
            let back: v1::LogEntry = serde_json::from_str(&line).expect("LogEntry");
            assert_eq!(back, e);
        }
    }

    #[test]
    fn html_escapes_markup_and_quotes() {
        assert_eq!(html_escape("plain text"), "plain text");
        assert_eq!(
            html_escape("<a href=\"x\" title='y'>&</a>"),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(html_escape("&amp;"), "&amp;amp;");
    }

    #[test]
    fn parses_rfc3339_and_dates() {
        assert_eq!(parse_time_ms("1970-01-01").expect("date"), 0);
        assert_eq!(
            parse_time_ms("2023-11-14T22:13:20Z").expect("z"),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time_ms("2023-11-14 22:13:20.5z").expect("frac"),
            1_700_000_000_500
        );
        assert_eq!(
            parse_time_ms("2023-11-14T22:13:20.123456Z").expect("micro"),
            1_700_000_000_123
        );
        assert_eq!(
            parse_time_ms("2023-11-15T00:13:20+02:00").expect("offset"),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time_ms("2023-11-14T20:13:20-02:00").expect("offset"),
            1_700_000_000_000
        );
        for bad in [
            "",
            "2023-13-01",
            "2023-02-30",
            "2023-11-14T25:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+0200",
            "yesterday",
            "2023-11-14T22:13:20Zjunk",
            "२०२३-11-14",
        ] {
            assert!(parse_time_ms(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn query_filters_are_checked() {
        let ok = QueryArgs {
            agency: Some("HR/police".into()),
            country: Some("rs".into()),
            kind: Some("wanted_alert".into()),
            decision: Some("Refused".into()),
            from: Some("2025-01-01".into()),
            to: Some("2025-02-01T00:00:00Z".into()),
            limit: Some(10),
            start: Some(7),
        };
        let req = query_request(&ok).expect("request");
        assert_eq!(req.country, "RS");
        assert_eq!(req.decision, "refused");
        assert_eq!(req.limit, 10);
        assert_eq!(req.start, 7);
        assert!(req.from_ms < req.to_ms);
        for bad in [
            QueryArgs {
                agency: Some("police".into()),
                ..Default::default()
            },
            QueryArgs {
                country: Some("Croatia".into()),
                ..Default::default()
            },
            QueryArgs {
                kind: Some("gossip".into()),
                ..Default::default()
            },
            QueryArgs {
                decision: Some("maybe".into()),
                ..Default::default()
            },
            QueryArgs {
                from: Some("2025-02-01".into()),
                to: Some("2025-01-01".into()),
                ..Default::default()
            },
        ] {
            assert!(query_request(&bad).is_err(), "{bad:?}");
        }
    }

    fn report_of(log: &[v1::AuditEvent]) -> (LogSummary, VerifyReport) {
        let mut summary = LogSummary::default();
        for (i, ev) in log.iter().enumerate() {
            summary.add(i as u64, ev);
        }
        let origin = "casebridge.test/audit-log";
        let trust = trust_with(
            origin,
            [1; 32],
            &[("HR", [2; 32], false), ("RS", [3; 32], false)],
        );
        let note = cosigned(origin, log.len() as u64, &[("HR", [2; 32], 1_700_000_100)]);
        let verified = VerifyReport {
            checkpoint: trust.open(&note).expect("open"),
            directory_version: 4,
            previous_size: Some(3),
            state_dir: PathBuf::from("/tmp/state"),
        };
        (summary, verified)
    }

    #[test]
    fn summary_attributes_every_event() {
        let (s, _) = report_of(&synthetic_log());
        assert_eq!(s.entries, 8);
        assert_eq!(s.by_decision["accepted"], 2);
        assert_eq!(s.by_decision["refused"], 2);
        // One envelope to two RS agencies and one BA agency: RS once, BA once.
        assert_eq!(s.accepted_flows[&("HR".to_string(), "RS".to_string())], 2);
        assert_eq!(s.accepted_flows[&("HR".to_string(), "BA".to_string())], 1);
        assert_eq!(s.refused_flows[&("RS".to_string(), "HR".to_string())], 1);
        let hr = &s.agencies["HR/police"];
        assert_eq!(hr.by_decision["accepted"], [1, 0]);
        assert_eq!(hr.by_decision["refused"], [0, 1]);
        assert_eq!(hr.by_decision["delivered"], [1, 0]);
        assert_eq!(hr.by_decision["rejected"], [1, 0]);
        assert_eq!(hr.by_decision["violation"], [1, 0]);
        assert_eq!(hr.rejections.len(), 1);
        assert_eq!(hr.violations.len(), 1);
        assert_eq!(hr.by_kind["wanted_alert"], [1, 1]);
        let rs = &s.agencies["RS/police"];
        assert_eq!(rs.refusals.len(), 1);
        assert_eq!(rs.by_decision["delivered"], [0, 1]);
        assert_eq!(s.agencies["RS/prosecutor"].by_kind["mla_request"], [0, 1]);
        assert_eq!(s.unattributed.len(), 1);
        assert_eq!(s.federation_events.len(), 1);
        assert_eq!(s.first_at_ms, Some(1_700_000_000_000));
        assert_eq!(s.last_at_ms, Some(1_700_000_007_000));
    }

    #[test]
    fn report_is_self_contained_and_escaped() {
        let (summary, verified) = report_of(&synthetic_log());
        let names: BTreeMap<String, String> =
            [("HR/police".to_string(), "Criminal police <HR>".to_string())].into();
        let html = render_report(&ReportInput {
            federation: "casebridge.test",
            auditor: "auditor",
            broker: "127.0.0.1:7400",
            generated_at_ms: 1_700_000_000_000,
            verified: &verified,
            summary: &summary,
            agency_names: &names,
        });
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.ends_with("</html>\n"));
        // Nothing from outside the file.
        for external in ["<script", "<link", "src=", "url(", "@import", "https://"] {
            assert!(!html.contains(external), "{external}");
        }
        // Peer text is escaped, never markup.
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(
            html.contains("forbidden by &lt;framework&gt; &amp; &quot;H3&quot;, &#39;quoted&#39;")
        );
        assert!(html.contains("Criminal police &lt;HR&gt;"));
        // The checkpoint and the witnesses.
        assert!(html.contains("casebridge.test/audit-log"));
        assert!(html.contains(&STANDARD.encode(merkle::leaf_hash(b"root"))));
        assert!(html.contains("casebridge.test/node/HR"));
        assert!(html.contains("Not cosigned by: RS."));
        assert!(html.contains("saved at size 3"));
        // The charts, with their cells.
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(html.contains("<title>HR → RS: 2</title>"));
        assert!(html.contains("undeclared-categories"));
        // Balanced tables.
        assert_eq!(
            html.matches("<table").count(),
            html.matches("</table>").count()
        );
        assert_eq!(
            html.matches("<section").count(),
            html.matches("</section>").count()
        );
    }

    // ---- against a broker over mTLS ----

    /// A broker's audit API over an honest tree, serving entries that may
    /// differ from it.
    struct FakeLog {
        origin: String,
        log_key: crate::keys::SigningKey,
        hr_key: crate::keys::SigningKey,
        /// The leaves the checkpoint and the proofs are made from.
        leaves: Vec<Vec<u8>>,
        /// The leaves GetEntries serves.
        served: Vec<Vec<u8>>,
        /// Break HR's cosignature.
        forge_cosignature: bool,
    }

    fn fake_leaf(i: u64, tag: &str) -> Vec<u8> {
        v1::AuditEvent {
            at_ms: 1_700_000_000_000 + i as i64,
            event: Some(Event::SubmissionAccepted(v1::SubmissionAccepted {
                envelope: Some(summary_of(
                    &[i as u8; 16],
                    "HR/police",
                    &["RS/police"],
                    v1::RecordKind::WantedAlert,
                )),
                policy_bundle_hash: tag.to_string(),
                policy_explanation: String::new(),
            })),
        }
        .encode_to_vec()
    }

    impl FakeLog {
        fn tree(&self) -> MemoryTree {
            tree(
                &self
                    .leaves
                    .iter()
                    .map(|l| merkle::leaf_hash(l))
                    .collect::<Vec<_>>(),
            )
        }

        fn note(&self) -> Vec<u8> {
            use std::borrow::Borrow as _;
            let t = self.tree();
            let cp = Checkpoint::new(self.origin.clone(), t.size(), t.current_root())
                .expect("checkpoint");
            let log: &ring::signature::Ed25519KeyPair = self.log_key.borrow();
            let signer = NoteSigner::new(&self.origin, log).expect("signer");
            let mut n = note::sign_checkpoint(&cp, &signer).expect("sign");
            let hr: &ring::signature::Ed25519KeyPair = self.hr_key.borrow();
            let name = witness_name("casebridge.test", "HR".parse().expect("cc"));
            let cosigner = Cosigner::new(&name, hr).expect("cosigner");
            let sig = cosigner.cosign(&cp, 1_700_000_000).expect("cosign");
            let sig = if self.forge_cosignature {
                let mut raw = sig.signature().to_vec();
                raw[20] ^= 1;
                note::NoteSignature::new(sig.name(), sig.key_id(), raw).expect("sig")
            } else {
                sig
            };
            n.add_signature(sig).expect("add");
            n.to_bytes()
        }
    }

    #[derive(Clone)]
    struct FakeBroker(std::sync::Arc<std::sync::Mutex<FakeLog>>);

    impl FakeBroker {
        fn log(&self) -> std::sync::MutexGuard<'_, FakeLog> {
            self.0.lock().expect("lock")
        }
    }

    #[tonic::async_trait]
    impl v1::audit_server::Audit for FakeBroker {
        async fn get_checkpoint(
            &self,
            _: tonic::Request<v1::GetCheckpointRequest>,
        ) -> Result<tonic::Response<v1::CheckpointResponse>, tonic::Status> {
            Ok(tonic::Response::new(v1::CheckpointResponse {
                checkpoint: self.log().note(),
                consistency_proof: vec![],
            }))
        }

        async fn get_entries(
            &self,
            req: tonic::Request<v1::GetEntriesRequest>,
        ) -> Result<tonic::Response<v1::GetEntriesResponse>, tonic::Status> {
            let r = req.into_inner();
            let log = self.log();
            // Short pages, to exercise paging.
            let end = r.end.min(log.served.len() as u64).min(r.start + 7);
            let entries = (r.start..end)
                .map(|i| {
                    let leaf = log.served[i as usize].clone();
                    v1::LogEntry {
                        index: i,
                        event: v1::AuditEvent::decode(leaf.as_slice()).ok(),
                        leaf,
                    }
                })
                .collect();
            Ok(tonic::Response::new(v1::GetEntriesResponse { entries }))
        }

        async fn prove_inclusion(
            &self,
            req: tonic::Request<v1::ProveInclusionRequest>,
        ) -> Result<tonic::Response<v1::InclusionProof>, tonic::Status> {
            let r = req.into_inner();
            let log = self.log();
            let t = log.tree();
            let index = match r.target {
                Some(v1::prove_inclusion_request::Target::Index(i)) => i,
                Some(v1::prove_inclusion_request::Target::EnvelopeId(id)) => {
                    let id: EnvelopeId = id.parse().expect("id");
                    u64::from(id.as_bytes()[0])
                }
                None => return Err(tonic::Status::invalid_argument("no target")),
            };
            let proof = merkle::inclusion_proof(&t, index, t.size())
                .map_err(|e| tonic::Status::not_found(e.to_string()))?;
            Ok(tonic::Response::new(v1::InclusionProof {
                index,
                tree_size: t.size(),
                leaf: log.leaves[index as usize].clone(),
                proof: proof.iter().map(|h| h.to_vec()).collect(),
                checkpoint: log.note(),
            }))
        }

        async fn prove_consistency(
            &self,
            req: tonic::Request<v1::ProveConsistencyRequest>,
        ) -> Result<tonic::Response<v1::ConsistencyProof>, tonic::Status> {
            let r = req.into_inner();
            let log = self.log();
            let t = log.tree();
            if r.second_size != 0 && r.second_size != t.size() {
                return Err(tonic::Status::not_found("no checkpoint of that size"));
            }
            let proof = merkle::consistency_proof(&t, r.first_size, t.size())
                .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            Ok(tonic::Response::new(v1::ConsistencyProof {
                first_size: r.first_size,
                second_size: t.size(),
                proof: proof.iter().map(|h| h.to_vec()).collect(),
                checkpoint: log.note(),
            }))
        }

        async fn query(
            &self,
            _: tonic::Request<v1::QueryRequest>,
        ) -> Result<tonic::Response<v1::QueryResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("query"))
        }
    }

    /// A federation from `pki init` whose auditor profile points at a fake
    /// broker; returns the profile path and the fake.
    async fn fake_federation(dir: &Path) -> (PathBuf, FakeBroker) {
        let mut opts = crate::pki::InitOptions::new(dir.join("fed"));
        opts.countries = vec!["HR".parse().expect("cc"), "RS".parse().expect("cc")];
        opts.base_port = 0;
        let fed = crate::pki::init(&opts).expect("pki init");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (_, profile) = fed.auditor_profiles[0].clone();
        let text = std::fs::read_to_string(&profile).expect("profile");
        let text = text.replace("127.0.0.1:0", &addr.to_string());
        std::fs::write(&profile, text).expect("profile");

        let fed_dir = fed.dir.clone();
        let key = |p: &str| crate::keys::SigningKey::load(&fed_dir.join(p)).expect("key");
        let fake = FakeBroker(std::sync::Arc::new(std::sync::Mutex::new(FakeLog {
            origin: "casebridge.test/audit-log".into(),
            log_key: key("broker/log.key"),
            hr_key: key("nodes/HR/signing.key"),
            leaves: vec![],
            served: vec![],
            forge_cosignature: false,
        })));
        let identity = Identity::load(
            &fed_dir.join("broker/broker.crt"),
            &fed_dir.join("broker/broker.key"),
        )
        .expect("identity");
        let root = crate::tls::load_certs(&fed_dir.join("ca/root.crt")).expect("root");
        let tls =
            crate::tls::ServerTls::new(&identity, &root[0], None, "casebridge.test").expect("tls");
        let svc = v1::audit_server::AuditServer::new(fake.clone());
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tls.incoming(listener))
                .await;
        });
        (profile, fake)
    }

    fn set_log(fake: &FakeBroker, n: u64, tag: &str) {
        let mut log = fake.log();
        log.leaves = (0..n).map(|i| fake_leaf(i, tag)).collect();
        log.served = log.leaves.clone();
    }

    async fn verify_err(profile: &Path) -> Inconsistent {
        let err = verify(profile, None).await.expect_err("must fail");
        eprintln!("error: {err:#}");
        err.downcast_ref::<Inconsistent>()
            .unwrap_or_else(|| panic!("not an inconsistency: {err:#}"))
            .clone()
    }

    #[tokio::test]
    async fn verify_names_the_first_bad_index_against_a_broker() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (profile, fake) = fake_federation(tmp.path()).await;

        // No saved state, entry 13 of 40 served altered: found by the search.
        set_log(&fake, 40, "a");
        fake.log().served[13] = fake_leaf(13, "altered");
        fake.log().served[30] = fake_leaf(30, "altered too");
        let e = verify_err(&profile).await;
        assert_eq!(e.first_bad_index, Some(13), "{e}");
        assert!(e.to_string().contains("checkpoint commits to leaf"), "{e}");
        assert!(
            e.to_string()
                .starts_with("log inconsistent: first bad index 13: "),
            "{e}"
        );
        // Nothing was saved.
        let state = StateDir::new(tmp.path().join("fed/auditors/auditor/state"));
        assert!(
            state
                .load("casebridge.test/audit-log")
                .expect("load")
                .is_none()
        );

        // Honest: verified and saved.
        set_log(&fake, 40, "a");
        let r = verify(&profile, None).await.expect("verify");
        assert_eq!(r.size(), 40);
        assert_eq!(r.previous_size, None);
        assert_eq!(r.checkpoint.cosignatures.len(), 1);
        assert_eq!(
            r.checkpoint.missing,
            vec!["RS".parse::<Country>().expect("cc")]
        );

        // Grown, honest: consistent with the saved checkpoint.
        {
            let mut log = fake.log();
            for i in 40..55 {
                log.leaves.push(fake_leaf(i, "a"));
            }
            log.served = log.leaves.clone();
        }
        let r = verify(&profile, None).await.expect("verify");
        assert_eq!(r.previous_size, Some(40));
        assert!(
            r.to_string()
                .contains("consistent with the checkpoint you saved at size 40")
        );

        // History rewritten at 7 and re-signed: the signed tree is
        // self-consistent, but not with what this auditor saw.
        {
            let mut log = fake.log();
            log.leaves[7] = fake_leaf(7, "rewritten");
            log.leaves.push(fake_leaf(55, "a"));
            log.served = log.leaves.clone();
        }
        let e = verify_err(&profile).await;
        assert_eq!(e.first_bad_index, Some(7), "{e}");
        assert!(e.to_string().contains("history was rewritten"), "{e}");
        assert!(
            e.to_string()
                .contains("does not extend the checkpoint of size 55"),
            "{e}"
        );

        // Shrunk below what was saved.
        set_log(&fake, 50, "a");
        let e = verify_err(&profile).await;
        assert_eq!(e.first_bad_index, Some(50), "{e}");

        // Served entries missing (the page stops short).
        set_log(&fake, 60, "a");
        fake.log().served.truncate(58);
        let e = verify_err(&profile).await;
        assert_eq!(e.first_bad_index, Some(58), "{e}");

        // A forged witness cosignature fails the checkpoint.
        set_log(&fake, 60, "a");
        fake.log().forge_cosignature = true;
        let err = format!("{:#}", verify(&profile, None).await.expect_err("forged"));
        eprintln!("error: {err}");
        assert!(
            err.contains("cosignature by casebridge.test/node/HR"),
            "{err}"
        );
        fake.log().forge_cosignature = false;

        // Honest again: saved state still at 55 and consistent.
        let r = verify(&profile, None).await.expect("verify");
        assert_eq!(r.previous_size, Some(55));

        // prove: the fake finds envelope [i; 16] at index i.
        let id = EnvelopeId::from_bytes(&[9u8; 16]).expect("id");
        let p = prove(&profile, None, &id.to_string()).await.expect("prove");
        assert_eq!(p.index, 9);
        assert_eq!(p.matches_saved, Some(true));
        assert!(p.to_string().contains(
            "inclusion proof verified against checkpoint of size 60 signed by casebridge.test/audit-log"
        ));
        // A broker proving another entry than the one asked for.
        let other = EnvelopeId::from_bytes(
            &[{ 9u8 }; 15]
                .iter()
                .chain([1u8].iter())
                .copied()
                .collect::<Vec<_>>(),
        )
        .expect("id");
        let err = format!(
            "{:#}",
            prove(&profile, None, &other.to_string())
                .await
                .expect_err("other")
        );
        assert!(err.contains("not the submission of envelope"), "{err}");

        // report: verified, then written.
        let out = tmp.path().join("report.html");
        report(&profile, None, &out).await.expect("report");
        let html = std::fs::read_to_string(&out).expect("html");
        assert!(html.contains("Verified: all 60 entries"));
    }

    #[test]
    fn empty_flows_render_an_empty_chart() {
        let svg = flow_matrix_svg("Nothing <here>", &BTreeMap::new());
        assert!(svg.contains("Nothing &lt;here&gt;"));
        assert!(svg.ends_with("</svg>"));
    }
}

//! `casebridge audit directory`: the auditor's copy of the directory, kept
//! up with the broker's, and the directory changes the log records.
//!
//! The broker's directory is fetched, verified against the pinned directory
//! key and compared with the auditor's copy: a newer one replaces the copy,
//! an older one (or the same version with other content) is refused and the
//! copy stays. Every directory seen is also kept in the state directory
//! under `directories/<version>-<sha256>.bin`, so that each DirectoryChanged
//! event the log holds can be checked against a directory this auditor
//! verified itself: a logged digest no directory seen has is reported.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use prost::Message as _;

use crate::protocol::directory::Directory;
use crate::protocol::proto::v1;
use crate::protocol::proto::v1::audit_event::Event;

use super::*;

/// Where an auditor keeps every directory it has seen, in its state
/// directory.
pub const DIRECTORIES_DIR: &str = "directories";

/// What the broker's directory was to the auditor's copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// The same directory.
    Same,
    /// Newer: saved as the auditor's copy.
    Saved { previous: u64 },
    /// Refused: the auditor's copy stays.
    Refused(String),
}

/// One directory event of the log, checked against the directories seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedDirectory {
    pub index: u64,
    pub version: u64,
    pub sha256: String,
    /// For a DirectoryChanged event: whether this auditor holds a verified
    /// directory with that version and digest. None for a refusal.
    pub seen: Option<bool>,
    /// For a DirectoryRefused event: the broker's reason.
    pub refused: Option<String>,
}

/// What `audit directory` found.
#[derive(Debug, Clone)]
pub struct DirectoryReport {
    pub broker_version: u64,
    pub broker_sha256: String,
    pub fetched: Fetched,
    pub logged: Vec<LoggedDirectory>,
    /// Set when the log's directory events could not all be listed.
    pub cut: Option<String>,
}

impl DirectoryReport {
    /// Logged changes to a directory this auditor has not seen.
    pub fn unseen(&self) -> impl Iterator<Item = &LoggedDirectory> {
        self.logged.iter().filter(|l| l.seen == Some(false))
    }
}

impl fmt::Display for DirectoryReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "broker's directory: version {}, sha256 {}",
            self.broker_version, self.broker_sha256
        )?;
        match &self.fetched {
            Fetched::Same => writeln!(f, "it is this auditor's copy")?,
            Fetched::Saved { previous } => writeln!(
                f,
                "newer than this auditor's copy (version {previous}): saved"
            )?,
            Fetched::Refused(why) => writeln!(f, "REFUSED, this auditor's copy stays: {why}")?,
        }
        for l in &self.logged {
            match (&l.refused, l.seen) {
                (Some(reason), _) => writeln!(
                    f,
                    "log index {}: the broker refused directory version {}: {reason}",
                    l.index, l.version
                )?,
                (None, Some(true)) => writeln!(
                    f,
                    "log index {}: directory version {} in force, sha256 {}: seen and verified",
                    l.index, l.version, l.sha256
                )?,
                (None, _) => writeln!(
                    f,
                    "log index {}: directory version {} in force, sha256 {}: NOT SEEN by this \
                     auditor",
                    l.index, l.version, l.sha256
                )?,
            }
        }
        if let Some(cut) = &self.cut {
            writeln!(f, "{cut}")?;
        }
        Ok(())
    }
}

/// The file a directory is kept under in `state_dir`.
fn seen_path(state_dir: &Path, d: &Directory) -> PathBuf {
    state_dir
        .join(DIRECTORIES_DIR)
        .join(format!("{}-{}.bin", d.version, hex::encode(d.digest())))
}

/// Keeps `d` among the directories seen.
fn keep(state_dir: &Path, d: &Directory) -> anyhow::Result<()> {
    let path = seen_path(state_dir, d);
    if path.exists() {
        return Ok(());
    }
    let dir = state_dir.join(DIRECTORIES_DIR);
    crate::storage::create_private_dir(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    crate::storage::write_private(&path, &d.signed().encode_to_vec())
        .with_context(|| format!("writing {}", path.display()))
}

/// The version and digest of every directory kept in `state_dir`, from the
/// file names (each file was verified before it was kept).
fn seen(state_dir: &Path) -> std::collections::BTreeSet<(u64, String)> {
    let Ok(entries) = std::fs::read_dir(state_dir.join(DIRECTORIES_DIR)) else {
        return Default::default();
    };
    entries
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let (version, digest) = name.strip_suffix(".bin")?.split_once('-')?;
            Some((version.parse().ok()?, digest.to_string()))
        })
        .collect()
}

/// `casebridge audit directory`: fetches the broker's directory, verifies
/// it against the pinned key, saves it as the auditor's copy (`directory`,
/// or the profile's default) if it is newer, refuses it if it is older, and
/// lists the directory events of the log with whether each logged
/// directory is one this auditor has seen.
pub async fn directory(
    profile: &Path,
    directory: Option<&Path>,
) -> anyhow::Result<DirectoryReport> {
    let mut auditor = Auditor::connect(profile, directory)?;
    let copy = directory
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_directory_path(profile));
    let state_dir = auditor.profile.state_dir.clone();
    let key = crate::storage::files::directory::load_public_key(&auditor.profile.directory_key)?;
    let signed = grpc(
        "GetDirectory",
        auditor.api.get_directory(v1::GetDirectoryRequest {}).await,
    )?;
    let served = Directory::verify(&signed, &key, &auditor.profile.federation)
        .context("the broker's directory")?;
    let local = &auditor.directory;
    keep(&state_dir, local)?;
    let fetched = if served.version_info() == local.version_info() {
        Fetched::Same
    } else {
        match local.check_successor(&served) {
            Ok(()) => {
                keep(&state_dir, &served)?;
                crate::storage::write_private(&copy, &signed.encode_to_vec())
                    .with_context(|| format!("writing {}", copy.display()))?;
                Fetched::Saved {
                    previous: local.version,
                }
            }
            Err(e) => Fetched::Refused(e.to_string()),
        }
    };
    let known = seen(&state_dir);
    let mut logged = Vec::new();
    let mut start = 0;
    let mut cut = None;
    // Pages through the log's directory events; each page moves on.
    for _ in 0..10_000 {
        let args = QueryArgs {
            decision: Some("directory".into()),
            start: Some(start),
            ..QueryArgs::default()
        };
        let req = query_request(&args)?;
        let resp = grpc("Query", auditor.api.query(req).await)?;
        for e in &resp.entries {
            match e.event.as_ref().and_then(|e| e.event.as_ref()) {
                Some(Event::DirectoryChanged(c)) => {
                    let sha256 = hex::encode(&c.directory_sha256);
                    logged.push(LoggedDirectory {
                        index: e.index,
                        version: c.version,
                        seen: Some(known.contains(&(c.version, sha256.clone()))),
                        sha256,
                        refused: None,
                    });
                }
                Some(Event::DirectoryRefused(r)) => logged.push(LoggedDirectory {
                    index: e.index,
                    version: r.version,
                    sha256: hex::encode(&r.directory_sha256),
                    seen: None,
                    refused: Some(one_line(&r.reason).into_owned()),
                }),
                _ => {}
            }
        }
        if !resp.truncated {
            break;
        }
        match resp.next_index {
            next if next > start => start = next,
            _ => {
                cut = Some(format!(
                    "the broker cut the listing at index {start} without moving on; later \
                     directory events are not listed"
                ));
                break;
            }
        }
    }
    Ok(DirectoryReport {
        broker_version: served.version,
        broker_sha256: hex::encode(served.digest()),
        fetched,
        logged,
        cut,
    })
}

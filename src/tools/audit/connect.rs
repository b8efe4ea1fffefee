//! The auditor's connection: its profile, its directory and its gRPC client.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail};
use tonic::transport::Channel;

use crate::daemon::config::rebase;
use crate::daemon::tls::{ClientTls, Identity};
use crate::protocol::directory::Directory;
use crate::protocol::ids::Role;
use crate::protocol::proto::v1;
use crate::tools::cli::status_line;
use crate::tools::pki::AuditorProfile;

use super::*;

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
    pub api: crate::daemon::rpc::audit_client::AuditClient<Channel>,
    /// The bytes of leaves `verify` asks for per page; the broker bounds a
    /// page anyway, so this only trades requests against memory.
    pub page_bytes: u64,
}

impl Auditor {
    /// Loads the profile, the pinned directory key and the signed directory
    /// (`directory`, or [`default_directory_path`]), and prepares the mTLS
    /// channel to the broker. The first call dials.
    pub fn connect(profile: &Path, directory: Option<&Path>) -> anyhow::Result<Auditor> {
        let p = load_profile(profile)?;
        let key = crate::storage::files::directory::load_public_key(&p.directory_key)?;
        let dir_path = directory
            .map(Path::to_path_buf)
            .unwrap_or_else(|| default_directory_path(profile));
        let dir = crate::storage::files::directory::load(&dir_path, &key, &p.federation)
            .context("the signed directory (pass --directory FILE to use another)")?;
        let trust = LogTrust::from_directory(&dir)?;
        let identity = Identity::load(&p.tls.cert, &p.tls.key)?;
        let root = crate::daemon::tls::load_certs(&p.tls.root)?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("{}: no certificate", p.tls.root.display()))?;
        let tls = ClientTls::new(&identity, &root, &p.federation)?;
        let channel = tls
            .channel(&p.broker, Role::Broker)
            .with_context(|| format!("broker address {}", p.broker))?;
        let api = crate::daemon::rpc::audit_client::AuditClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Auditor {
            profile: p,
            directory: dir,
            trust,
            api,
            page_bytes: fetch::PAGE_TARGET_BYTES,
        })
    }

    pub(super) async fn latest_checkpoint(&mut self) -> anyhow::Result<CheckedCheckpoint> {
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

    pub(super) async fn prove_consistency(
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

    pub(super) async fn entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> anyhow::Result<Vec<v1::LogEntry>> {
        Ok(grpc(
            "GetEntries",
            self.api
                .get_entries(v1::GetEntriesRequest {
                    start,
                    end,
                    leaves_only: false,
                })
                .await,
        )?
        .entries)
    }
}

pub(super) fn grpc<T>(
    what: &str,
    r: Result<tonic::Response<T>, tonic::Status>,
) -> anyhow::Result<T> {
    r.map(tonic::Response::into_inner)
        .map_err(|s| anyhow!("{what}: {}", status_line(&s)))
}

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
//! The Merkle and note checks are [`crate::protocol::merkle`] and [`crate::protocol::note`]; this
//! module adds the auditor's state, the search for the first bad index, and
//! the rendering. The pure parts (trust set, prefix search, rows, CSV, HTML)
//! are plain functions and tested here; the gRPC calls are thin.
//! docs/audit-log.md specifies the leaves, the tree and the checkpoints for
//! auditors who use their own tools.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::protocol::proto::v1;

/// The saved checkpoint in an auditor's state directory (signed note bytes).
pub const LAST_CHECKPOINT_FILE: &str = "last-checkpoint";
/// The saved leaf hashes, 32 bytes per entry in index order, append-only.
pub const LEAF_HASHES_FILE: &str = "leaf-hashes";

/// The largest answer the auditor's client accepts: 128 MiB. That is more
/// than the broker sends ([`crate::protocol::audit::MAX_RESPONSE_BYTES`]),
/// and more than a single leaf written before leaves were capped could be
/// (two copies of a request under the broker's former 32 MiB limit), so
/// every log a broker wrote can be read.
const MAX_MESSAGE: usize = 128 << 20;
const _: () = assert!(MAX_MESSAGE >= crate::protocol::audit::MAX_RESPONSE_BYTES);

mod connect;
mod directory;
mod fetch;
mod prove;
mod query;
mod report;
mod rows;
mod search;
mod state;
mod summary;
#[cfg(test)]
mod test_support;
mod trust;
mod verify;

pub use connect::*;
pub use directory::*;
use fetch::Leaves;
pub use prove::*;
pub use query::*;
pub use report::*;
pub use rows::*;
pub use search::*;
pub use state::*;
pub use summary::*;
pub use trust::*;
pub use verify::*;

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
    /// At most this many entries in all; a result cut by it says so and how
    /// to go on.
    #[arg(long)]
    pub limit: Option<u64>,
    /// Entries per request to the broker (at most 10,000, its default).
    #[arg(long)]
    pub page_size: Option<u32>,
    /// Fetch every page, not only the first, until the end of the log (or
    /// --limit).
    #[arg(long)]
    pub all: bool,
    /// Go on where a cut result said to: its page token, with the same
    /// filters.
    #[arg(long, conflicts_with = "start")]
    pub page_token: Option<String>,
    /// Scan from this log index.
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
    /// Fetch the broker's directory, verify it against the pinned key and
    /// save it if it is newer than this auditor's copy (refuse it if older);
    /// then list the directory changes the log records, each checked
    /// against the directories this auditor has seen.
    Directory {
        #[command(flatten)]
        auditor: AuditorArgs,
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
            let mut out = std::io::BufWriter::new(std::io::stdout());
            if csv {
                writeln!(out, "{}", csv_line(ROW_COLUMNS))?;
            }
            // Each page is written as it arrives, so `--all` over a long log
            // holds one page at a time.
            let result = query_each(
                &auditor.profile,
                auditor.directory.as_deref(),
                &filter,
                |e| {
                    let r = || {
                        row(
                            e.index,
                            e.event.as_ref().unwrap_or(&v1::AuditEvent::default()),
                        )
                    };
                    if json {
                        writeln!(out, "{}", entry_json_line(e)?)?;
                    } else if csv {
                        writeln!(out, "{}", csv_line(&r().csv_fields()))?;
                    } else {
                        writeln!(out, "{}", r().text_line())?;
                    }
                    Ok(())
                },
            )
            .await?;
            out.flush()?;
            // On stderr, so JSON and CSV on stdout stay whole.
            if result.count == 0 && !json && !csv {
                eprintln!("no entries match");
            }
            if let Some(notice) = result.cut_notice() {
                eprintln!("{notice}");
            }
            Ok(true)
        }
        AuditCmd::Directory { auditor } => {
            let report = directory(&auditor.profile, auditor.directory.as_deref()).await?;
            print!("{report}");
            Ok(!matches!(report.fetched, Fetched::Refused(_)) && report.unseen().next().is_none())
        }
        AuditCmd::Report { auditor, out } => {
            let verified = report(&auditor.profile, auditor.directory.as_deref(), &out).await?;
            print!("{verified}");
            println!("report written to {}", out.display());
            Ok(true)
        }
    }
}

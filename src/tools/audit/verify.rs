//! `audit verify`: the whole log, checked against a signed checkpoint.

use std::fmt::{self, Write as _};
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::protocol::merkle::{self, Hash, MemoryTree};
use crate::protocol::proto::v1;

use super::*;

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
    let mut s = format!(
        "{} at {}",
        r.decision,
        crate::protocol::time::format_ms(r.at_ms)
    );
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
    /// The root of `hashes`, if every index below the checkpoint size was
    /// served.
    root: Option<Hash>,
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
    let complete = fetched.root.is_some();
    let root_ok = fetched.root == Some(root);
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
        let bad = if complete { size } else { served.size() + 1 };
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
pub(super) fn check_proof_checkpoint(
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

/// Fetches every entry `0..size` in index order ([`Leaves`]) and checks
/// each as it comes: its index, its leaf against the saved hash, its leaf
/// as an event (and against the broker's decoding if it sent one). The
/// root of the leaf hashes is computed as they come ([`merkle::Frontier`]).
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
    let mut frontier = merkle::Frontier::default();
    let mut progress = Progress::new("fetching the audit log", size);
    let mut first_saved_mismatch = false;
    let mut first_malformed = false;
    let mut pages = Leaves::new(auditor.api.clone(), size, auditor.page_bytes);
    let mut next = 0u64;
    let mut complete = true;
    'pages: while next < size {
        let page = pages.next(next).await?;
        if page.oversized() {
            findings.push(Finding::at(
                next,
                format!(
                    "asked for {} entries from {next}, the broker answered with {}",
                    page.end - page.start,
                    page.served
                ),
            ));
            complete = false;
            break;
        }
        if page.entries.is_empty() {
            findings.push(Finding::at(
                next,
                format!(
                    "the broker serves no entry {next} although its checkpoint has size {size}"
                ),
            ));
            complete = false;
            break;
        }
        for entry in page.entries {
            if entry.index != next {
                findings.push(Finding::at(
                    next,
                    format!(
                        "asked for entry {next}, the broker served entry {}",
                        entry.index
                    ),
                ));
                complete = false;
                break 'pages;
            }
            if entry.event_differs && !first_malformed {
                first_malformed = true;
                findings.push(Finding::at(
                    next,
                    "the event served beside the leaf is not the event the leaf holds".to_string(),
                ));
            }
            let event = match entry.event {
                Ok(ev) => ev,
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
            let hash = entry.hash;
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
            frontier.push(hash);
            hashes.push(hash);
            next += 1;
        }
        progress.tick(next);
    }
    progress.finish();
    let complete = complete && next == size;
    Ok(Fetched {
        root: complete.then(|| frontier.root()),
        hashes,
    })
}

/// `casebridge audit verify`: verifies the log and saves the checkpoint.
pub async fn verify(profile: &Path, directory: Option<&Path>) -> anyhow::Result<VerifyReport> {
    let mut auditor = Auditor::connect(profile, directory)?;
    verify_log(&mut auditor, |_, _| {}).await
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;

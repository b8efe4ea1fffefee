//! Facts of the audit API that the broker and the auditors' tools share: the
//! documented bounds of a page and of a query (`auditor.proto`), and how a
//! log entry is attributed to a node when the log is read.

use std::time::Duration;

use crate::protocol::leaf::MAX_LEAF_BYTES;
use crate::protocol::proto::v1;

/// Entries in one `GetEntries` page at most.
pub const PAGE_ENTRIES: u64 = 1000;
/// Entries in one `GetEntries` page at most when only the leaves are asked
/// for (`leaves_only`): each costs the broker a read and a copy, not a
/// decoding and an encoding, so a page holds more of them; the byte bound
/// [`PAGE_BYTES`] is the same.
pub const PAGE_LEAVES: u64 = 16_384;
/// Bytes of entries in one `GetEntries` page or `Query` answer at most:
/// 4 MiB. An answer ends before the entry that would take it past this,
/// but always holds at least one entry.
pub const PAGE_BYTES: usize = 4 << 20;
/// The largest answer the audit API sends: a page of [`PAGE_BYTES`], or a
/// single entry whose leaf is at the cap served with its decoded event
/// (twice the leaf), with framing. An auditor's client must accept this.
pub const MAX_RESPONSE_BYTES: usize = (if PAGE_BYTES > 2 * MAX_LEAF_BYTES {
    PAGE_BYTES
} else {
    2 * MAX_LEAF_BYTES
}) + 64 * 1024;
/// Entries one `Query` returns at most; also its default `limit`.
pub const QUERY_MAX_ENTRIES: usize = 10_000;
/// How long one `Query` scans at most before it answers with what it found
/// and where to continue.
pub const QUERY_TIME_LIMIT: Duration = Duration::from_secs(10);

/// The header labels of a refusal that belong to the node that submitted
/// it. A refusal is that node's act; a header naming another country's
/// sender (a forgery, or someone else's envelope passed on) does not make
/// the refusal that country's. Logs written before the broker recorded only
/// verified headers hold claims, so the check is made on reading too.
pub fn attributed(r: &v1::SubmissionRefused) -> Option<&v1::EnvelopeSummary> {
    r.envelope.as_ref().filter(|e| {
        e.sender_node == r.submitting_node
            && e.sender_agency.split_once('/').map(|(cc, _)| cc) == Some(r.submitting_node.as_str())
    })
}

//! The audit API: read-only access to the transparency log for auditors.
//!
//! Only auditor certificates issued directly by the federation root, for an
//! auditor the directory lists, are served. Proofs cost O(log n) reads of
//! stored tree nodes; queries scan the entries a chunk at a time (the
//! store reads off the async workers, and the scan yields between chunks)
//! within bounds of time, entries and bytes that the answer reports when it
//! meets them. Pages of entries are bounded by count and by
//! bytes, so every answer fits the auditor's client
//! ([`crate::protocol::audit::MAX_RESPONSE_BYTES`]).

use std::sync::Arc;
use std::time::Instant;

use prost::Message as _;
use tonic::{Request, Response, Status};

use super::BrokerState;
use super::service::{checkpoint_response, inclusion_proof};
use crate::daemon::status::{self, broker_storage};
use crate::daemon::tls::{Issuer, peer_of};
use crate::protocol::audit::{
    PAGE_BYTES, PAGE_ENTRIES, PAGE_LEAVES, QUERY_MAX_ENTRIES, QUERY_TIME_LIMIT, attributed,
    check_filters, page_token, parse_page_token,
};
use crate::protocol::ids::{EnvelopeId, Role};
use crate::protocol::leaf::MAX_LEAF_BYTES;
use crate::protocol::proto::v1;
use crate::storage::broker::{Sequencer, StoreError};

/// Leaves read at a time while scanning.
const SCAN_CHUNK: u64 = 256;
/// Bytes counted per entry for its framing inside a response.
const ENTRY_FRAMING: usize = 8;

pub struct AuditService {
    state: Arc<BrokerState>,
}

impl AuditService {
    pub fn new(state: Arc<BrokerState>) -> Self {
        AuditService { state }
    }

    fn auditor<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let peer = peer_of(req)?;
        match (&peer.role, peer.issuer) {
            (Ok(Role::Auditor(name)), Issuer::Root)
                if self.state.directory().auditor_active(name) =>
            {
                Ok(name.clone())
            }
            (Ok(Role::Auditor(name)), Issuer::Root) => Err(Status::permission_denied(format!(
                "auditor {name} is not listed or is revoked"
            ))),
            (Ok(Role::Auditor(name)), _) => Err(Status::permission_denied(format!(
                "certificate for auditor {name} is not issued directly by the federation root"
            ))),
            (Ok(role), _) => Err(Status::permission_denied(format!(
                "the audit API is for auditors; this certificate is for {role}"
            ))),
            (Err(e), _) => Err(Status::permission_denied(format!(
                "certificate not accepted: {e}"
            ))),
        }
    }
}

/// An entry as served. A leaf over the cap (which only a broker before the
/// cap could have written) is served without its decoded event, so that
/// the entry is no larger than its leaf.
fn log_entry(index: u64, leaf: Vec<u8>) -> v1::LogEntry {
    let event = if leaf.len() <= MAX_LEAF_BYTES {
        v1::AuditEvent::decode(leaf.as_slice()).ok()
    } else {
        None
    };
    v1::LogEntry { index, leaf, event }
}

/// How a page serves each entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serve {
    /// The leaf with the broker's decoding of it.
    WithEvents,
    /// The leaf alone, as stored: no decoding, no encoding of an event.
    LeavesOnly,
}

/// Where a page asked for by `r` ends in a log of `len` entries, by count
/// (the byte bound is [`page`]'s), and how it serves its entries.
fn page_bounds(r: &v1::GetEntriesRequest, len: u64) -> (u64, Serve) {
    let (most, serve) = if r.leaves_only {
        (PAGE_LEAVES, Serve::LeavesOnly)
    } else {
        (PAGE_ENTRIES, Serve::WithEvents)
    };
    (r.end.min(len).min(r.start.saturating_add(most)), serve)
}

/// The entries of `[start, end)` that fit one page: all of them, or those
/// before the one that would take the page past [`PAGE_BYTES`] (at least
/// one).
async fn page<S: Sequencer + ?Sized>(
    store: &S,
    start: u64,
    end: u64,
    serve: Serve,
) -> Result<Vec<v1::LogEntry>, StoreError> {
    let mut entries = Vec::new();
    let mut bytes = 0usize;
    let mut next = start;
    while next < end {
        let chunk_end = next.saturating_add(SCAN_CHUNK).min(end);
        for (index, leaf) in (next..).zip(store.leaves(next, chunk_end).await?) {
            let entry = match serve {
                Serve::WithEvents => log_entry(index, leaf),
                Serve::LeavesOnly => v1::LogEntry {
                    index,
                    leaf,
                    event: None,
                },
            };
            let size = entry.encoded_len() + ENTRY_FRAMING;
            if !entries.is_empty() && bytes + size > PAGE_BYTES {
                return Ok(entries);
            }
            bytes += size;
            entries.push(entry);
        }
        next = chunk_end;
    }
    Ok(entries)
}

/// What one query scan found, and where and why it stopped early if it did.
struct Scan {
    entries: Vec<v1::LogEntry>,
    /// The first index not scanned (or not returned).
    next: u64,
    /// Why the scan stopped before the end of the log.
    cut: Option<String>,
}

/// How far one query may go.
struct Bounds {
    max_entries: usize,
    max_bytes: usize,
    deadline: Instant,
}

impl Bounds {
    /// The bounds of a query starting now.
    fn query() -> Bounds {
        Bounds {
            max_entries: QUERY_MAX_ENTRIES,
            max_bytes: PAGE_BYTES,
            deadline: Instant::now() + QUERY_TIME_LIMIT,
        }
    }
}

/// Where a query starts: its page token's index, or `start`. Checks the
/// filters first, so that a misspelt value is an error, never an empty
/// page.
fn query_start(q: &v1::QueryRequest) -> Result<u64, Status> {
    check_filters(q).map_err(Status::invalid_argument)?;
    if q.page_token.is_empty() {
        return Ok(q.start);
    }
    if q.start != 0 {
        return Err(Status::invalid_argument(
            "give either a page token or a start index, not both",
        ));
    }
    parse_page_token(q, &q.page_token).map_err(Status::invalid_argument)
}

/// Scans the log from where `q` starts for entries matching `q`, until the
/// end of the log, the entry limit, the byte limit or the deadline,
/// whichever comes first. Each chunk of leaves read is scanned whole before
/// the clock is looked at, so every scan makes progress.
async fn scan<S: Sequencer + ?Sized>(
    store: &S,
    q: &v1::QueryRequest,
    b: &Bounds,
) -> Result<Scan, Status> {
    let from = query_start(q)?;
    let len = store.audit_len().await.map_err(broker_storage)?;
    if from > len {
        return Err(Status::out_of_range(format!(
            "start {from} is beyond the log ({len} entries)"
        )));
    }
    let asked = q.limit as usize;
    let limit = if asked == 0 {
        b.max_entries
    } else {
        asked.min(b.max_entries)
    };
    let mut found = Scan {
        entries: Vec::new(),
        next: from,
        cut: None,
    };
    let mut bytes = 0usize;
    while found.next < len {
        let start = found.next;
        let end = start.saturating_add(SCAN_CHUNK).min(len);
        for (index, leaf) in (start..).zip(store.leaves(start, end).await.map_err(broker_storage)?)
        {
            let hit = v1::AuditEvent::decode(leaf.as_slice()).is_ok_and(|ev| matches(q, &ev));
            if hit {
                let entry = log_entry(index, leaf);
                let size = entry.encoded_len() + ENTRY_FRAMING;
                if found.entries.len() >= limit {
                    found.cut = Some(if asked != 0 && asked <= b.max_entries {
                        format!("the limit of {limit} entries was reached")
                    } else {
                        format!("at most {} entries are returned per query", b.max_entries)
                    });
                } else if !found.entries.is_empty() && bytes + size > b.max_bytes {
                    found.cut = Some(format!(
                        "at most {} bytes of entries are returned per query",
                        b.max_bytes
                    ));
                }
                if found.cut.is_some() {
                    found.next = index;
                    return Ok(found);
                }
                bytes += size;
                found.entries.push(entry);
            }
            found.next = index + 1;
        }
        if found.next < len && Instant::now() >= b.deadline {
            found.cut = Some(format!(
                "the scan stopped after its time limit of {} s",
                QUERY_TIME_LIMIT.as_secs()
            ));
            return Ok(found);
        }
    }
    Ok(found)
}

/// What a query can filter on, read off one event.
struct Facts<'a> {
    decision: &'static str,
    agencies: Vec<&'a str>,
    nodes: Vec<&'a str>,
    kind: Option<i32>,
}

type Parties<'a> = (Vec<&'a str>, Vec<&'a str>, Option<i32>);

fn summary(s: &v1::EnvelopeSummary) -> Parties<'_> {
    let mut agencies: Vec<&str> = vec![s.sender_agency.as_str()];
    agencies.extend(s.recipients.iter().map(String::as_str));
    (agencies, vec![s.sender_node.as_str()], Some(s.kind))
}

fn facts(e: &v1::AuditEvent) -> Facts<'_> {
    use v1::audit_event::Event;
    match &e.event {
        Some(Event::SubmissionAccepted(a)) => {
            let (agencies, nodes, kind) = a.envelope.as_ref().map(summary).unwrap_or_default();
            Facts {
                decision: "accepted",
                agencies,
                nodes,
                kind,
            }
        }
        Some(Event::SubmissionRefused(r)) => {
            let (agencies, _, kind) = attributed(r).map(summary).unwrap_or_default();
            Facts {
                decision: "refused",
                agencies,
                nodes: vec![r.submitting_node.as_str()],
                kind,
            }
        }
        Some(Event::ReceiptRecorded(r)) => Facts {
            decision: if r.status == v1::ReceiptStatus::Delivered as i32 {
                "delivered"
            } else {
                "rejected"
            },
            agencies: r.delivered_to.iter().map(String::as_str).collect(),
            nodes: vec![r.recipient_node.as_str()],
            kind: None,
        },
        Some(Event::ContentViolation(v)) => Facts {
            decision: "violation",
            agencies: vec![v.sender_agency.as_str()],
            nodes: vec![v.sender_node.as_str(), v.reporting_node.as_str()],
            kind: None,
        },
        Some(Event::RecordsPurged(p)) => Facts {
            decision: "purged",
            agencies: vec![],
            nodes: vec![p.node.as_str()],
            kind: None,
        },
        Some(Event::DirectoryChanged(_)) => Facts {
            decision: "directory",
            agencies: vec![],
            nodes: vec![],
            kind: None,
        },
        Some(Event::DirectoryRefused(_)) => Facts {
            decision: "directory",
            agencies: vec![],
            nodes: vec![],
            kind: None,
        },
        Some(Event::PolicyChanged(_)) => Facts {
            decision: "policy",
            agencies: vec![],
            nodes: vec![],
            kind: None,
        },
        None => Facts {
            decision: "",
            agencies: vec![],
            nodes: vec![],
            kind: None,
        },
    }
}

fn matches(q: &v1::QueryRequest, e: &v1::AuditEvent) -> bool {
    let f = facts(e);
    if !q.decision.is_empty() && q.decision != f.decision {
        return false;
    }
    if !q.agency.is_empty() && !f.agencies.contains(&q.agency.as_str()) {
        return false;
    }
    if !q.country.is_empty() {
        let prefix = format!("{}/", q.country);
        let in_agencies = f.agencies.iter().any(|a| a.starts_with(&prefix));
        if !in_agencies && !f.nodes.contains(&q.country.as_str()) {
            return false;
        }
    }
    if !q.kind.is_empty() {
        let want = crate::protocol::categories::parse_kind_short_name(&q.kind).map(|k| k as i32);
        if want.is_none() || f.kind != want {
            return false;
        }
    }
    (q.from_ms == 0 || e.at_ms >= q.from_ms) && (q.to_ms == 0 || e.at_ms < q.to_ms)
}

/// The answer when no checkpoint of the size asked for (`None`: the
/// latest) exists.
fn no_checkpoint_of(size: Option<u64>) -> Status {
    match size {
        None => Status::unavailable("no checkpoint has been signed yet; try again in a second"),
        Some(s) => Status::failed_precondition(format!(
            "no checkpoint was signed at tree size {s}; ask for the latest (0) or a size a checkpoint was signed at"
        )),
    }
}

#[tonic::async_trait]
impl crate::daemon::rpc::audit_server::Audit for AuditService {
    async fn get_directory(
        &self,
        req: Request<v1::GetDirectoryRequest>,
    ) -> Result<Response<v1::SignedDirectory>, Status> {
        self.auditor(&req)?;
        Ok(Response::new(self.state.directory().signed().clone()))
    }

    async fn get_checkpoint(
        &self,
        req: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<v1::CheckpointResponse>, Status> {
        self.auditor(&req)?;
        checkpoint_response(&self.state, req.get_ref().from_size)
            .await
            .map(Response::new)
    }

    async fn get_entries(
        &self,
        req: Request<v1::GetEntriesRequest>,
    ) -> Result<Response<v1::GetEntriesResponse>, Status> {
        self.auditor(&req)?;
        let r = req.get_ref();
        let len = self.state.store.audit_len().await.map_err(broker_storage)?;
        let (end, serve) = page_bounds(r, len);
        if r.start > end {
            return Err(Status::out_of_range(format!(
                "start {} is beyond the log ({len} entries)",
                r.start
            )));
        }
        Ok(Response::new(v1::GetEntriesResponse {
            entries: page(self.state.store.as_ref(), r.start, end, serve)
                .await
                .map_err(broker_storage)?,
        }))
    }

    async fn prove_inclusion(
        &self,
        req: Request<v1::ProveInclusionRequest>,
    ) -> Result<Response<v1::InclusionProof>, Status> {
        self.auditor(&req)?;
        let r = req.get_ref();
        let index = match &r.target {
            Some(v1::prove_inclusion_request::Target::Index(i)) => {
                let len = self.state.store.audit_len().await.map_err(broker_storage)?;
                if *i >= len {
                    return Err(Status::out_of_range(format!(
                        "entry {i} is beyond the log ({len} entries)"
                    )));
                }
                *i
            }
            Some(v1::prove_inclusion_request::Target::EnvelopeId(id)) => {
                let id: EnvelopeId = id.parse().map_err(|e: crate::protocol::ids::IdError| {
                    Status::invalid_argument(e.to_string())
                })?;
                self.state
                    .store
                    .accepted(&id)
                    .await
                    .map_err(broker_storage)?
                    .ok_or_else(|| {
                        Status::not_found(format!("no accepted submission {id} in the log"))
                    })?
                    .log_index
            }
            None => return Err(Status::invalid_argument("give an index or an envelope id")),
        };
        inclusion_proof(&self.state, index, r.tree_size)
            .await
            .map(Response::new)
    }

    async fn prove_consistency(
        &self,
        req: Request<v1::ProveConsistencyRequest>,
    ) -> Result<Response<v1::ConsistencyProof>, Status> {
        self.auditor(&req)?;
        let r = req.get_ref();
        let wanted = if r.second_size == 0 {
            None
        } else {
            Some(r.second_size)
        };
        let (second, checkpoint) = self
            .state
            .log
            .checkpoint_note(self.state.store.as_ref(), wanted)
            .await
            .map_err(status::log)?
            .ok_or_else(|| no_checkpoint_of(wanted))?;
        if r.first_size == 0 || r.first_size > second {
            return Err(Status::invalid_argument(format!(
                "first size must be between 1 and {second}, not {}",
                r.first_size
            )));
        }
        let proof = if r.first_size == second {
            Vec::new()
        } else {
            self.state
                .store
                .consistency_proof(r.first_size, second)
                .await
                .map_err(broker_storage)?
        };
        Ok(Response::new(v1::ConsistencyProof {
            first_size: r.first_size,
            second_size: second,
            proof: proof.iter().map(|h| h.to_vec()).collect(),
            checkpoint,
        }))
    }

    async fn query(
        &self,
        req: Request<v1::QueryRequest>,
    ) -> Result<Response<v1::QueryResponse>, Status> {
        self.auditor(&req)?;
        let q = req.into_inner();
        let bounds = Bounds::query();
        let found = scan(self.state.store.as_ref(), &q, &bounds).await?;
        let next_page_token = if found.cut.is_some() {
            page_token(&q, found.next)
        } else {
            String::new()
        };
        Ok(Response::new(v1::QueryResponse {
            entries: found.entries,
            truncated: found.cut.is_some(),
            truncated_reason: found.cut.unwrap_or_default(),
            next_index: found.next,
            next_page_token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::storage::sled::broker::SledStore;

    async fn store_of(n: u64, reason_bytes: usize) -> (tempfile::TempDir, SledStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for i in 0..n {
            store
                .append(v1::AuditEvent {
                    at_ms: i as i64,
                    event: Some(v1::audit_event::Event::SubmissionRefused(
                        v1::SubmissionRefused {
                            submitting_node: "HR".into(),
                            reason: "r".repeat(reason_bytes),
                            ..Default::default()
                        },
                    )),
                })
                .await
                .unwrap();
        }
        (dir, store)
    }

    fn later() -> Bounds {
        Bounds {
            deadline: Instant::now() + Duration::from_secs(3600),
            ..Bounds::query()
        }
    }

    #[tokio::test]
    async fn a_scan_out_of_time_says_so_and_where_to_go_on() {
        let (_dir, store) = store_of(SCAN_CHUNK * 2 + 5, 1).await;
        let q = v1::QueryRequest::default();
        // A deadline already past: one chunk is scanned, then the scan stops.
        let past = Bounds {
            deadline: Instant::now(),
            ..Bounds::query()
        };
        let found = scan(&store, &q, &past).await.unwrap();
        assert_eq!(found.next, SCAN_CHUNK, "every scan makes progress");
        assert_eq!(found.entries.len() as u64, SCAN_CHUNK);
        assert!(found.cut.unwrap().contains("time limit of 10 s"));
        let rest = scan(
            &store,
            &v1::QueryRequest {
                start: found.next,
                ..Default::default()
            },
            &later(),
        )
        .await
        .unwrap();
        assert_eq!(rest.next, SCAN_CHUNK * 2 + 5);
        assert_eq!(rest.cut, None);
        assert_eq!(rest.entries.len() as u64, SCAN_CHUNK + 5);
    }

    #[tokio::test]
    async fn a_scan_stops_at_the_entry_cap_and_says_so() {
        let (_dir, store) = store_of(12, 1).await;
        let few = Bounds {
            max_entries: 10,
            ..later()
        };
        let found = scan(&store, &v1::QueryRequest::default(), &few)
            .await
            .unwrap();
        assert_eq!(found.entries.len(), 10);
        assert_eq!(found.next, 10);
        assert!(found.cut.unwrap().contains("at most 10 entries"));
        let q = v1::QueryRequest {
            limit: u32::MAX,
            ..Default::default()
        };
        let found = scan(&store, &q, &few).await.unwrap();
        assert_eq!(found.entries.len(), 10, "a larger limit is capped");
        assert!(found.cut.unwrap().contains("at most 10 entries"));
        let q = v1::QueryRequest {
            limit: 3,
            ..Default::default()
        };
        let found = scan(&store, &q, &few).await.unwrap();
        assert_eq!(found.entries.len(), 3);
        assert!(found.cut.unwrap().contains("the limit of 3 entries"));
    }

    #[tokio::test]
    async fn pages_and_scans_stop_at_the_byte_cap() {
        let (_dir, store) = store_of(80, MAX_LEAF_BYTES).await;
        let entries = page(&store, 0, 80, Serve::WithEvents).await.unwrap();
        let bytes: usize = entries.iter().map(|e| e.encoded_len()).sum();
        assert!(entries.len() < 80 && !entries.is_empty());
        assert!(bytes <= PAGE_BYTES);
        // Leaves alone: twice as many fit, each served exactly as stored.
        let leaves = page(&store, 0, 80, Serve::LeavesOnly).await.unwrap();
        let bytes: usize = leaves.iter().map(|e| e.encoded_len()).sum();
        assert!(leaves.len() < 80 && leaves.len() > entries.len());
        assert!(bytes <= PAGE_BYTES);
        let stored = store.leaves(0, leaves.len() as u64).await.unwrap();
        for (i, (e, leaf)) in leaves.iter().zip(&stored).enumerate() {
            assert_eq!(e.index, i as u64);
            assert_eq!(&e.leaf, leaf);
            assert!(e.event.is_none());
        }
        let found = scan(&store, &v1::QueryRequest::default(), &later())
            .await
            .unwrap();
        assert_eq!(found.entries.len(), entries.len());
        assert_eq!(found.next, entries.len() as u64);
        assert!(found.cut.unwrap().contains("bytes of entries"));
    }

    #[test]
    fn a_page_never_holds_more_entries_than_its_kind_allows() {
        let ask = |start, end, leaves_only| {
            page_bounds(
                &v1::GetEntriesRequest {
                    start,
                    end,
                    leaves_only,
                },
                u64::MAX,
            )
        };
        assert_eq!(
            ask(5, u64::MAX, false),
            (5 + PAGE_ENTRIES, Serve::WithEvents)
        );
        assert_eq!(ask(5, u64::MAX, true), (5 + PAGE_LEAVES, Serve::LeavesOnly));
        assert_eq!(ask(5, 9, true).0, 9);
        assert_eq!(ask(u64::MAX - 1, u64::MAX, true).0, u64::MAX);
        let short = page_bounds(
            &v1::GetEntriesRequest {
                start: 0,
                end: 100,
                leaves_only: true,
            },
            40,
        );
        assert_eq!(short.0, 40);
    }

    #[test]
    fn an_oversized_legacy_leaf_is_served_without_its_event() {
        let small = log_entry(0, vec![8, 1]);
        assert!(small.event.is_some());
        let big = log_entry(1, vec![0; MAX_LEAF_BYTES + 1]);
        assert!(big.event.is_none());
    }
}

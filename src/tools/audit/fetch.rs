//! Fetching the whole log for `verify`: pages of leaves, several asked for
//! at once and taken strictly in index order, each hashed and decoded on a
//! blocking thread while the next ones are read and sent by the broker.
//!
//! The broker's answers are checked here only for their bound (a page never
//! holds more entries than were asked for); whether the entries are the
//! right ones, dense and in order, is for the caller, which sees every page
//! in index order exactly as it was served.

use std::collections::VecDeque;

use anyhow::Context as _;
use prost::Message as _;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::daemon::rpc::audit_client::AuditClient;
use crate::protocol::audit::{PAGE_BYTES, PAGE_LEAVES};
use crate::protocol::merkle::{self, Hash};
use crate::protocol::proto::v1;

use super::grpc;

/// Pages asked for ahead of the one being checked: while the auditor hashes
/// one page, the broker reads and sends the next. A few suffice to keep
/// both busy; each is one request of the connection's concurrent streams.
pub(super) const PAGES_IN_FLIGHT: usize = 4;

/// The bytes of leaves a page is asked to hold: half of what the broker
/// may send in one answer, so that a page seldom ends short of the range
/// asked for (a short page costs one more request, in turn).
pub(super) const PAGE_TARGET_BYTES: u64 = (PAGE_BYTES / 2) as u64;

/// The leaf size assumed before any page has come: about that of an
/// accepted submission's event.
const FIRST_GUESS_LEAF_BYTES: u64 = 256;

/// One served entry, hashed and decoded.
pub(super) struct Checked {
    pub index: u64,
    /// The RFC 9162 leaf hash of the leaf bytes exactly as served.
    pub hash: Hash,
    /// The leaf's length in bytes.
    pub leaf_len: usize,
    /// The leaf decoded as an `AuditEvent`, or why it is not one.
    pub event: Result<v1::AuditEvent, prost::DecodeError>,
    /// The broker served its own decoding beside the leaf, and it is not
    /// what the leaf holds.
    pub event_differs: bool,
}

/// One page as the broker answered a request for `[start, end)`.
pub(super) struct Page {
    pub start: u64,
    pub end: u64,
    /// How many entries the broker put in the answer.
    pub served: usize,
    /// The entries in the order served; empty when the answer held more
    /// entries than asked for (none of it is looked at then).
    pub entries: Vec<Checked>,
}

impl Page {
    /// The answer held more entries than the request allowed.
    pub fn oversized(&self) -> bool {
        self.served as u64 > self.end - self.start
    }
}

/// Hashes and decodes the entries of one answer, off the async workers.
fn check(start: u64, end: u64, entries: Vec<v1::LogEntry>) -> Page {
    let served = entries.len();
    let mut page = Page {
        start,
        end,
        served,
        entries: Vec::new(),
    };
    if page.oversized() {
        return page;
    }
    page.entries = entries
        .into_iter()
        .map(|e| {
            let hash = merkle::leaf_hash(&e.leaf);
            let event = v1::AuditEvent::decode(e.leaf.as_slice());
            let event_differs = match (&event, &e.event) {
                (Ok(ours), Some(theirs)) => ours != theirs,
                _ => false,
            };
            Checked {
                index: e.index,
                hash,
                leaf_len: e.leaf.len(),
                event,
                event_differs,
            }
        })
        .collect();
    page
}

/// Asks for the leaves of `[start, end)` and checks the answer.
async fn fetch(mut api: AuditClient<Channel>, start: u64, end: u64) -> anyhow::Result<Page> {
    let answer = grpc(
        "GetEntries",
        api.get_entries(v1::GetEntriesRequest {
            start,
            end,
            leaves_only: true,
        })
        .await,
    )?;
    tokio::task::spawn_blocking(move || check(start, end, answer.entries))
        .await
        .context("checking a page of entries")
}

/// The log's leaves `[0, size)`, fetched ahead in pages.
pub(super) struct Leaves {
    api: AuditClient<Channel>,
    size: u64,
    /// The bytes of leaves each request asks for.
    target_bytes: u64,
    /// Requests in flight, in index order and contiguous: each starts where
    /// the one before it ends.
    in_flight: VecDeque<(u64, JoinHandle<anyhow::Result<Page>>)>,
    /// Where the next request starts.
    asked: u64,
    /// Leaf bytes and entries received so far, to size the next requests.
    bytes: u64,
    entries: u64,
}

impl Leaves {
    /// Pages of about `target_bytes` of leaves each (at least one entry).
    pub fn new(api: AuditClient<Channel>, size: u64, target_bytes: u64) -> Leaves {
        Leaves {
            api,
            size,
            target_bytes,
            in_flight: VecDeque::new(),
            asked: 0,
            bytes: 0,
            entries: 0,
        }
    }

    /// How many entries the next request asks for: about `target_bytes` of
    /// leaves at the average size seen so far.
    fn page_len(&self) -> u64 {
        let average = self
            .bytes
            .checked_div(self.entries)
            .map_or(FIRST_GUESS_LEAF_BYTES, |a| a.max(1));
        (self.target_bytes / average).clamp(1, PAGE_LEAVES)
    }

    fn request(&self, start: u64, end: u64) -> JoinHandle<anyhow::Result<Page>> {
        tokio::spawn(fetch(self.api.clone(), start, end))
    }

    /// The next page, starting at `from`: the request in flight that starts
    /// there, or, when the page before ended short of its range, a request
    /// for the rest of that range. Keeps [`PAGES_IN_FLIGHT`] requests
    /// going after it.
    pub async fn next(&mut self, from: u64) -> anyhow::Result<Page> {
        // Requests behind `from` are not the caller's way any more.
        while let Some((start, task)) = self.in_flight.front() {
            if *start >= from {
                break;
            }
            task.abort();
            self.in_flight.pop_front();
        }
        if self.in_flight.is_empty() {
            self.asked = self.asked.max(from);
        }
        // Until a page has shown the size of the leaves, one request at a
        // time: ranges sized on a wrong guess would each end short.
        let window = if self.entries == 0 {
            1
        } else {
            PAGES_IN_FLIGHT
        };
        while self.in_flight.len() < window && self.asked < self.size {
            let start = self.asked;
            let end = start.saturating_add(self.page_len()).min(self.size);
            self.in_flight.push_back((start, self.request(start, end)));
            self.asked = end;
        }
        let page = match self.in_flight.front() {
            Some((start, _)) if *start == from => {
                let (_, task) = self.in_flight.pop_front().context("no page in flight")?;
                task.await.context("fetching a page of entries")??
            }
            // The rest of a range whose page ended short.
            Some((start, _)) => fetch(self.api.clone(), from, *start).await?,
            None => fetch(self.api.clone(), from, self.asked.max(from + 1)).await?,
        };
        self.entries += page.entries.len() as u64;
        self.bytes += page.entries.iter().map(|e| e.leaf_len as u64).sum::<u64>();
        Ok(page)
    }
}

impl Drop for Leaves {
    fn drop(&mut self) {
        // A verification that stopped early asks for nothing more.
        for (_, task) in &self.in_flight {
            task.abort();
        }
    }
}

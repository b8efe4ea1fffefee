//! Delivery claims: which of a node's delivery streams has which queued item
//! in flight.
//!
//! A node may hold two delivery streams at once: its main stream, which
//! carries every lane, and an immediate stream, which carries the immediate
//! lane alone so that an alert never waits behind routine deliveries the
//! node already has in hand. A stream claims an item before it sends it and
//! holds the claim until the node acknowledges the item or the stream ends;
//! an item one stream holds is not sent on another. So the broker never has
//! one item in flight on two streams of a node at once, and nothing is lost
//! either: a stream that ends releases what it held, and the next look of a
//! stream that carries that lane sends it again.
//!
//! The claims a stream holds are also its window: what it sent that the node
//! has not yet acknowledged. A claim is released by the acknowledgement this
//! broker took, so the window of each stream is exact whichever stream the
//! other acknowledgements answered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::protocol::ids::Country;

/// The claims of every node's delivery streams.
#[derive(Default)]
pub struct Claims {
    nodes: Mutex<HashMap<Country, NodeClaims>>,
    next_stream: AtomicU64,
}

/// One node's claims.
struct NodeClaims {
    /// Queued item (by seq) → the stream that holds it.
    by_seq: HashMap<u64, u64>,
    /// Stream → how many items it holds.
    held: HashMap<u64, usize>,
    /// Open streams, and of those the immediate ones.
    streams: usize,
    immediate_streams: usize,
    /// Changes when a claim is released and when an immediate stream opens
    /// or ends: what a stream waiting for room, for an item another stream
    /// held, or for the immediate lane to come back to it waits on.
    changed: watch::Sender<u64>,
}

impl NodeClaims {
    fn new() -> NodeClaims {
        NodeClaims {
            by_seq: HashMap::new(),
            held: HashMap::new(),
            streams: 0,
            immediate_streams: 0,
            changed: watch::channel(0).0,
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// What [`StreamClaims::claim`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The item was free and this stream holds it now: send it.
    Claimed,
    /// This stream holds it already (sent, not yet acknowledged).
    Mine,
    /// Another stream of the node holds it.
    Taken,
}

impl Claims {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Country, NodeClaims>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new delivery stream of `node`; it releases everything it
    /// holds when dropped.
    pub fn open(self: &Arc<Self>, node: Country, immediate: bool) -> StreamClaims {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let changes = {
            let mut nodes = self.lock();
            let n = nodes.entry(node).or_insert_with(NodeClaims::new);
            n.streams += 1;
            if immediate {
                n.immediate_streams += 1;
                n.bump();
            }
            n.changed.subscribe()
        };
        StreamClaims {
            claims: self.clone(),
            node,
            id,
            immediate,
            changes,
        }
    }

    /// The node acknowledged `seq` (or it was acknowledged before): whoever
    /// held it holds it no longer.
    pub fn acknowledged(&self, node: Country, seq: u64) {
        let mut nodes = self.lock();
        let Some(n) = nodes.get_mut(&node) else {
            return;
        };
        if let Some(stream) = n.by_seq.remove(&seq) {
            if let Some(h) = n.held.get_mut(&stream) {
                *h = h.saturating_sub(1);
            }
            n.bump();
        }
    }
}

/// One delivery stream's claims.
pub struct StreamClaims {
    claims: Arc<Claims>,
    node: Country,
    id: u64,
    immediate: bool,
    changes: watch::Receiver<u64>,
}

impl StreamClaims {
    /// Claims the queued item `seq` for this stream, unless another holds it.
    pub fn claim(&self, seq: u64) -> Claim {
        let mut nodes = self.claims.lock();
        let Some(n) = nodes.get_mut(&self.node) else {
            // Registered at open and removed only once no stream is open.
            return Claim::Taken;
        };
        match n.by_seq.get(&seq) {
            Some(&s) if s == self.id => Claim::Mine,
            Some(_) => Claim::Taken,
            None => {
                n.by_seq.insert(seq, self.id);
                *n.held.entry(self.id).or_default() += 1;
                Claim::Claimed
            }
        }
    }

    /// Gives back a claim whose item was not sent after all.
    pub fn unclaim(&self, seq: u64) {
        let mut nodes = self.claims.lock();
        let Some(n) = nodes.get_mut(&self.node) else {
            return;
        };
        if n.by_seq.get(&seq) == Some(&self.id) {
            n.by_seq.remove(&seq);
            if let Some(h) = n.held.get_mut(&self.id) {
                *h = h.saturating_sub(1);
            }
            n.bump();
        }
    }

    /// How many items this stream holds: sent, not yet acknowledged.
    pub fn held(&self) -> usize {
        let nodes = self.claims.lock();
        nodes
            .get(&self.node)
            .and_then(|n| n.held.get(&self.id).copied())
            .unwrap_or(0)
    }

    /// Whether the node has an immediate stream open (other than this one).
    pub fn immediate_stream_open(&self) -> bool {
        let nodes = self.claims.lock();
        let own = usize::from(self.immediate);
        nodes
            .get(&self.node)
            .is_some_and(|n| n.immediate_streams > own)
    }

    /// Changes when a claim of this node's streams is released, or an
    /// immediate stream opens or ends.
    pub fn changes(&mut self) -> &mut watch::Receiver<u64> {
        &mut self.changes
    }
}

impl Drop for StreamClaims {
    fn drop(&mut self) {
        let mut nodes = self.claims.lock();
        let Some(n) = nodes.get_mut(&self.node) else {
            return;
        };
        n.by_seq.retain(|_, s| *s != self.id);
        n.held.remove(&self.id);
        n.streams = n.streams.saturating_sub(1);
        if self.immediate {
            n.immediate_streams = n.immediate_streams.saturating_sub(1);
        }
        n.bump();
        if n.streams == 0 && n.by_seq.is_empty() {
            nodes.remove(&self.node);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hr() -> Country {
        "HR".parse().expect("a country code")
    }

    #[test]
    fn an_item_is_held_by_one_stream_until_acknowledged_or_its_stream_ends() {
        let claims = Arc::new(Claims::default());
        let main = claims.open(hr(), false);
        let alert = claims.open(hr(), true);
        assert!(main.immediate_stream_open());
        assert!(!alert.immediate_stream_open());

        assert_eq!(main.claim(1), Claim::Claimed);
        assert_eq!(main.claim(1), Claim::Mine);
        assert_eq!(alert.claim(1), Claim::Taken);
        assert_eq!(alert.claim(2), Claim::Claimed);
        assert_eq!(main.claim(2), Claim::Taken);
        assert_eq!((main.held(), alert.held()), (1, 1));

        claims.acknowledged(hr(), 1);
        assert_eq!(main.held(), 0);
        assert_eq!(alert.claim(1), Claim::Claimed, "free once acknowledged");

        alert.unclaim(1);
        assert_eq!(alert.held(), 1);
        drop(alert);
        assert!(!main.immediate_stream_open());
        assert_eq!(main.claim(2), Claim::Claimed, "free once its stream ended");
        drop(main);
        assert!(
            claims.lock().is_empty(),
            "nothing kept for a node without streams"
        );
    }

    #[test]
    fn a_release_wakes_the_other_streams() {
        let claims = Arc::new(Claims::default());
        let mut main = claims.open(hr(), false);
        main.changes().borrow_and_update();
        let alert = claims.open(hr(), true);
        assert!(main.changes().has_changed().unwrap_or(false));
        main.changes().borrow_and_update();
        assert_eq!(alert.claim(5), Claim::Claimed);
        claims.acknowledged(hr(), 5);
        assert!(main.changes().has_changed().unwrap_or(false));
    }
}

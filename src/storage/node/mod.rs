//! The node's storage seam: what a national node keeps, split by concern,
//! each behind an async trait a backend implements.
//!
//! - [`Inbox`] ([`inbox`]): records delivered to the node's agencies, the
//!   receipts the node gave, and the ids of purged records until the broker
//!   has logged the purge.
//! - [`Outbox`] ([`outbox`]): sealed envelopes waiting for the broker, what
//!   each agency sent with the broker's answers and receipts, and what the
//!   witness still has to prove of each accepted submission.
//! - [`WitnessState`] ([`witness`]): the checkpoint this node last accepted
//!   as witness and the evidence of a broker that lied.
//!
//! Every method is async and returns once its effect is durable: a backend
//! runs blocking work off the async workers. [`NodeStore`] bundles the
//! concerns so that the daemon holds one `Arc<dyn NodeStore>`; the sled
//! backend is [`crate::storage::sled::node::SledNodeStore`].

pub mod inbox;
pub mod outbox;
pub mod witness;

pub use inbox::Inbox;
pub use outbox::{Outbox, StatusUpdate};
pub use witness::WitnessState;

use crate::storage::StorageError;
use crate::storage::in_force::InForce;

/// The directory and policy bundle versions the node had in force, kept
/// across restarts so that an older file put back is refused.
#[tonic::async_trait]
pub trait NodeInForce: Send + Sync {
    /// The versions recorded as in force.
    async fn in_force(&self) -> Result<InForce, StorageError>;

    /// Records `in_force`; a recorded version only ever goes up.
    async fn put_in_force(&self, in_force: &InForce) -> Result<(), StorageError>;
}

/// Whether the store can still acknowledge anything.
#[tonic::async_trait]
pub trait Durability: Send + Sync {
    /// Resolves, with the reason, once the store failed to make a write
    /// durable and acknowledges nothing more; the node then stops. Never
    /// otherwise.
    async fn failed(&self) -> String;
}

/// Everything a node keeps, as one object the daemon can share.
pub trait NodeStore: Inbox + Outbox + WitnessState + NodeInForce + Durability {}

impl<T> NodeStore for T where T: Inbox + Outbox + WitnessState + NodeInForce + Durability {}

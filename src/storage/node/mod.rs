//! The node's storage seam: what a national node keeps, split by concern,
//! each behind an async trait a backend implements.
//!
//! - [`Inbox`] ([`inbox`]): records delivered to the node's agencies, the
//!   receipts the node gave, and the ids of purged records until the broker
//!   has logged the purge.
//! - [`Outbox`] ([`outbox`]): sealed envelopes waiting for the broker, what
//!   each agency sent with the broker's answers and receipts, and what the
//!   witness still has to prove of each accepted submission.
//! - [`idempotency`]: the idempotency keys of agencies' calls, written with
//!   the envelope each created ([`Outbox::enqueue_keyed`]) and forgotten
//!   after [`idempotency::RETENTION_MS`].
//! - [`WitnessState`] ([`witness`]): the checkpoint this node last accepted
//!   as witness and the evidence of a broker that lied.
//! - [`VersionsInForce`] (shared with the broker): the directory and policy
//!   bundle versions in force, the floor for every later start.
//! - [`Durability`] (shared with the broker): whether the store can still
//!   acknowledge anything.
//!
//! Every method is async and returns once its effect is durable: a backend
//! runs blocking work off the async workers. [`NodeStore`] bundles the
//! concerns so that the daemon holds one `Arc<dyn NodeStore>`; the sled
//! backend is [`crate::storage::sled::node::SledNodeStore`].

pub mod idempotency;
pub mod inbox;
pub mod outbox;
pub mod witness;

pub use inbox::Inbox;
pub use outbox::{Lane, Outbox, StatusUpdate};
pub use witness::WitnessState;

pub use crate::storage::Durability;
use crate::storage::in_force::VersionsInForce;

/// Everything a node keeps, as one object the daemon can share.
pub trait NodeStore: Inbox + Outbox + WitnessState + VersionsInForce + Durability {}

impl<T> NodeStore for T where T: Inbox + Outbox + WitnessState + VersionsInForce + Durability {}

//! Idempotency keys: what an agency's call that created an envelope left
//! behind, so that the same call repeated (an answer lost to a timeout, a
//! broken connection or a node restart) creates nothing new.
//!
//! A key belongs to the calling agency; the store keeps, per agency and
//! key, the digest of the call's content, the envelope it created and when.
//! The entry is written in the same durable write that puts the envelope in
//! the outbox ([`crate::storage::node::Outbox::enqueue_keyed`]), so a crash
//! leaves both or neither. Entries are kept for [`RETENTION_MS`] and then
//! forgotten ([`crate::storage::node::Outbox::forget_keys`]).

use crate::protocol::ids::{AgencyId, EnvelopeId};
use crate::protocol::time::DAY_MS;

/// How long a key is remembered after the call that first used it: 7 days.
/// Later, the same key makes a new record.
pub const RETENTION_MS: i64 = 7 * DAY_MS;

/// A call made under an idempotency key: whose key, the key, the digest of
/// what the call asks for, and when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedCall {
    pub agency: AgencyId,
    /// 1 to 128 bytes of printable ASCII, checked where the call arrives.
    pub key: String,
    pub digest: [u8; 32],
    pub at_ms: i64,
}

impl KeyedCall {
    /// The earliest first use of a key that is still remembered at this
    /// call's time.
    pub fn not_before_ms(&self) -> i64 {
        self.at_ms.saturating_sub(RETENTION_MS)
    }
}

/// What an earlier call under the same key left: the digest of its content
/// and the envelope it created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EarlierCall {
    pub digest: [u8; 32],
    pub id: EnvelopeId,
    pub at_ms: i64,
}

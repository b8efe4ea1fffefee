//! The wall clock, read only here and in the tools: the protocol core takes
//! "now" as an argument.

use std::sync::Arc;

/// A source of "now" in Unix milliseconds, replaceable in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The system clock as a [`Clock`].
pub fn system() -> Clock {
    Arc::new(now_ms)
}

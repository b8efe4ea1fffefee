//! The human form of a wire timestamp (Unix milliseconds), and the length of
//! a day in that unit. Reading the clock
//! is the daemons' business: see `daemon::clock`.

/// One day in milliseconds, the unit of retention periods.
pub const DAY_MS: i64 = 86_400_000;

/// RFC 3339 in UTC, to the second, or the raw number if out of range.
pub fn format_ms(ms: i64) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_else(|| ms.to_string())
}

//! `audit query`: filters, results and times.

use std::path::Path;

use anyhow::{anyhow, bail};
use prost::Message as _;

use crate::protocol::ids::{AgencyId, Country};
use crate::protocol::proto::v1;

use super::*;

// ---- query ----------------------------------------------------------------------

const DECISIONS: &[&str] = &[
    "accepted",
    "refused",
    "delivered",
    "rejected",
    "violation",
    "purged",
    "directory",
    "policy",
];

/// The request for `args`, with every filter checked first.
pub fn query_request(args: &QueryArgs) -> anyhow::Result<v1::QueryRequest> {
    let mut req = v1::QueryRequest::default();
    if let Some(a) = &args.agency {
        let id: AgencyId = a
            .parse()
            .map_err(|_| anyhow!("--agency {a:?}: expected CC/name, e.g. HR/police"))?;
        req.agency = id.to_string();
    }
    if let Some(c) = &args.country {
        let cc: Country = c
            .trim()
            .to_ascii_uppercase()
            .parse()
            .map_err(|_| anyhow!("--country {c:?}: expected a two-letter code, e.g. HR"))?;
        req.country = cc.to_string();
    }
    if let Some(k) = &args.kind {
        let kind = crate::tools::cli::parse_kind(k).context("--kind")?;
        req.kind = crate::protocol::categories::kind_short_name(kind).to_string();
    }
    if let Some(d) = &args.decision {
        let d = d.trim().to_ascii_lowercase();
        if !DECISIONS.contains(&d.as_str()) {
            bail!("--decision {d:?}: one of {}", DECISIONS.join(", "));
        }
        req.decision = d;
    }
    if let Some(t) = &args.from {
        req.from_ms = parse_time_ms(t).with_context(|| format!("--from {t:?}"))?;
    }
    if let Some(t) = &args.to {
        req.to_ms = parse_time_ms(t).with_context(|| format!("--to {t:?}"))?;
    }
    if req.from_ms != 0 && req.to_ms != 0 && req.to_ms <= req.from_ms {
        bail!("--to must be after --from");
    }
    req.limit = args.limit.unwrap_or(0);
    req.start = args.start.unwrap_or(0);
    Ok(req)
}

/// What `casebridge audit query` found.
#[derive(Debug, Default)]
pub struct QueryResult {
    pub entries: Vec<v1::LogEntry>,
    /// Set when the broker cut the result (entry, byte or time limit): its
    /// reason and the index to continue from (`--start`).
    pub cut: Option<(String, u64)>,
}

impl QueryResult {
    /// The line saying the result was cut, if it was.
    pub fn cut_notice(&self) -> Option<String> {
        self.cut.as_ref().map(|(reason, next)| {
            format!(
                "result cut by the broker after {} entries ({reason}); more entries may match: \
                 continue with --start {next}",
                self.entries.len()
            )
        })
    }
}

/// `casebridge audit query`: the matching entries, each with its event
/// decoded from the leaf (an entry whose served event differs from its leaf
/// is refused). Query results are not proven; `verify` and `prove` are the
/// checks.
pub async fn query(
    profile: &Path,
    directory: Option<&Path>,
    args: &QueryArgs,
) -> anyhow::Result<QueryResult> {
    let req = query_request(args)?;
    let mut auditor = Auditor::connect(profile, directory)?;
    let resp = grpc("Query", auditor.api.query(req).await)?;
    let cut = resp.truncated.then(|| {
        let reason = if resp.truncated_reason.is_empty() {
            "no reason given".to_string()
        } else {
            crate::protocol::bounds::clip(&one_line(&resp.truncated_reason), 200).into_owned()
        };
        (reason, resp.next_index)
    });
    let mut entries = resp.entries;
    for e in &mut entries {
        let ev = v1::AuditEvent::decode(e.leaf.as_slice()).with_context(|| {
            format!(
                "entry {}: the leaf is not a casebridge.v1.AuditEvent",
                e.index
            )
        })?;
        if e.event.as_ref().is_some_and(|served| *served != ev) {
            bail!(
                "entry {}: the event the broker served is not the event its leaf holds",
                e.index
            );
        }
        e.event = Some(ev);
    }
    Ok(QueryResult { entries, cut })
}

/// One entry as proto3 JSON (pbjson) on one line. proto3 JSON leaves out
/// fields with default values, which would drop `"index"` from entry 0; it is
/// always written here (a uint64, so a JSON string, as proto3 JSON wants).
pub fn entry_json_line(e: &v1::LogEntry) -> anyhow::Result<String> {
    let mut v = serde_json::to_value(e)?;
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "index".into(),
            serde_json::Value::String(e.index.to_string()),
        );
    }
    Ok(serde_json::to_string(&v)?)
}

/// Parses RFC 3339 (`2025-03-01T12:00:00Z`, fractions and `±HH:MM` offsets
/// allowed, `T` or a space) or a bare date (midnight UTC) into Unix
/// milliseconds; fractions below a millisecond are dropped.
pub fn parse_time_ms(s: &str) -> anyhow::Result<i64> {
    const EXPECTED: &str = "expected RFC 3339, e.g. 2025-03-01T12:00:00Z, or a date 2025-03-01";
    let bad = || anyhow!(EXPECTED);
    let s = s.trim();
    // A bare date is midnight UTC; RFC 3339 lets a space stand for the `T`,
    // which the parser wants as a letter.
    let text = match (s.get(..10), s.get(10..11), s.get(11..)) {
        (Some(date), None, _) => format!("{date}T00:00:00Z"),
        (Some(date), Some(" "), Some(rest)) => format!("{date}T{rest}"),
        _ => s.to_string(),
    };
    let t = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| anyhow!("{EXPECTED}: {e}"))?;
    i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).map_err(|_| bad())
}

pub(super) fn format_seconds(s: u64) -> String {
    crate::protocol::time::format_ms(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::audit::test_support::*;

    #[test]
    fn json_lines_always_carry_the_index() {
        let log = synthetic_log();
        for index in [0u64, 7] {
            let e = v1::LogEntry {
                index,
                leaf: log[1].encode_to_vec(),
                event: Some(log[1].clone()),
            };
            let line = entry_json_line(&e).expect("json");
            assert!(!line.contains('\n'));
            let v: serde_json::Value = serde_json::from_str(&line).expect("parse");
            assert_eq!(v["index"], serde_json::Value::String(index.to_string()));
            let back: v1::LogEntry = serde_json::from_str(&line).expect("LogEntry");
            assert_eq!(back, e);
        }
    }

    #[test]
    fn parses_rfc3339_and_dates() {
        assert_eq!(parse_time_ms("1970-01-01").expect("date"), 0);
        assert_eq!(
            parse_time_ms("2023-11-14T22:13:20Z").expect("z"),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time_ms("2023-11-14 22:13:20.5z").expect("frac"),
            1_700_000_000_500
        );
        assert_eq!(
            parse_time_ms("2023-11-14T22:13:20.123456Z").expect("micro"),
            1_700_000_000_123
        );
        assert_eq!(
            parse_time_ms("2023-11-15T00:13:20+02:00").expect("offset"),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time_ms("2023-11-14T20:13:20-02:00").expect("offset"),
            1_700_000_000_000
        );
        for bad in [
            "",
            "2023-13-01",
            "2023-02-30",
            "2023-11-14T25:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+0200",
            "yesterday",
            "2023-11-14T22:13:20Zjunk",
            "२०२३-11-14",
        ] {
            assert!(parse_time_ms(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_bad_date_says_which_part_is_wrong() {
        for (bad, names) in [("2023-13-01", "month"), ("2023-11-14T25:00:00Z", "hour")] {
            let message = parse_time_ms(bad).expect_err(bad).to_string();
            assert!(
                message.starts_with("expected RFC 3339, e.g. 2025-03-01T12:00:00Z"),
                "{message}"
            );
            assert!(message.contains(names), "{message}");
        }
    }

    #[test]
    fn query_filters_are_checked() {
        let ok = QueryArgs {
            agency: Some("HR/police".into()),
            country: Some("rs".into()),
            kind: Some("wanted_alert".into()),
            decision: Some("Refused".into()),
            from: Some("2025-01-01".into()),
            to: Some("2025-02-01T00:00:00Z".into()),
            limit: Some(10),
            start: Some(7),
        };
        let req = query_request(&ok).expect("request");
        assert_eq!(req.country, "RS");
        assert_eq!(req.decision, "refused");
        assert_eq!(req.limit, 10);
        assert_eq!(req.start, 7);
        assert!(req.from_ms < req.to_ms);
        for bad in [
            QueryArgs {
                agency: Some("police".into()),
                ..Default::default()
            },
            QueryArgs {
                country: Some("Croatia".into()),
                ..Default::default()
            },
            QueryArgs {
                kind: Some("gossip".into()),
                ..Default::default()
            },
            QueryArgs {
                decision: Some("maybe".into()),
                ..Default::default()
            },
            QueryArgs {
                from: Some("2025-02-01".into()),
                to: Some("2025-01-01".into()),
                ..Default::default()
            },
        ] {
            assert!(query_request(&bad).is_err(), "{bad:?}");
        }
    }
}

//! `audit query`: filters, results and times.

use std::path::Path;

use anyhow::{anyhow, bail};
use prost::Message as _;

use crate::protocol::audit::{DECISIONS, QUERY_MAX_ENTRIES};
use crate::protocol::ids::{AgencyId, Country};
use crate::protocol::proto::v1;

use super::*;

// ---- query ----------------------------------------------------------------------

/// The request for `args`, with every filter checked first: an unknown
/// value is an error naming the valid ones, never an empty result.
pub fn query_request(args: &QueryArgs) -> anyhow::Result<v1::QueryRequest> {
    let mut req = v1::QueryRequest::default();
    if let Some(a) = &args.agency {
        let id: AgencyId = a
            .parse()
            .map_err(|_| anyhow!("--agency \"{a}\": expected CC/name, e.g. HR/police"))?;
        req.agency = id.to_string();
    }
    if let Some(c) = &args.country {
        let cc: Country = c
            .trim()
            .to_ascii_uppercase()
            .parse()
            .map_err(|_| anyhow!("--country \"{c}\": expected a two-letter code, e.g. HR"))?;
        req.country = cc.to_string();
    }
    if let Some(k) = &args.kind {
        let kind = crate::tools::cli::parse_kind(k).map_err(|e| anyhow!("--kind: {e:#}"))?;
        req.kind = crate::protocol::categories::kind_short_name(kind).to_string();
    }
    if let Some(d) = &args.decision {
        let d = d.trim().to_ascii_lowercase();
        if !DECISIONS.contains(&d.as_str()) {
            bail!(
                "--decision \"{d}\": unknown decision; one of: {}",
                DECISIONS.join(", ")
            );
        }
        req.decision = d;
    }
    if let Some(t) = &args.from {
        req.from_ms = parse_time_ms(t).with_context(|| format!("--from \"{t}\""))?;
    }
    if let Some(t) = &args.to {
        req.to_ms = parse_time_ms(t).with_context(|| format!("--to \"{t}\""))?;
    }
    if req.from_ms != 0 && req.to_ms != 0 && req.to_ms <= req.from_ms {
        bail!("--to must be after --from");
    }
    match args.page_size {
        Some(0) => bail!("--page-size must be at least 1"),
        Some(n) if n as usize > QUERY_MAX_ENTRIES => bail!(
            "--page-size {n}: the broker returns at most {QUERY_MAX_ENTRIES} entries per page"
        ),
        Some(n) => req.limit = n,
        None => {}
    }
    if args.limit == Some(0) {
        bail!("--limit must be at least 1");
    }
    if let Some(t) = &args.page_token {
        if args.start.is_some() {
            bail!("give either --page-token or --start, not both");
        }
        // Checked here too, so a token from another query is refused before
        // anything is asked.
        crate::protocol::audit::parse_page_token(&req, t.trim())
            .map_err(|e| anyhow!("--page-token: {e}"))?;
        req.page_token = t.trim().to_string();
    }
    req.start = args.start.unwrap_or(0);
    Ok(req)
}

/// How a query result was cut, and how to go on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Why: the broker's reason, or the `--limit` reached.
    pub reason: String,
    /// The first log index not scanned.
    pub next_index: u64,
    /// The token that continues the query (`--page-token`).
    pub page_token: String,
}

/// What `casebridge audit query` found.
#[derive(Debug, Default)]
pub struct QueryResult {
    pub entries: Vec<v1::LogEntry>,
    /// Set when the result was cut (a page the broker cut, without `--all`,
    /// or `--limit`): its reason and the index to continue from.
    pub cut: Option<(String, u64)>,
    /// The page token to continue from, when cut.
    pub next_page_token: Option<String>,
}

impl QueryResult {
    /// The line saying the result was cut, if it was.
    pub fn cut_notice(&self) -> Option<String> {
        let (reason, next) = self.cut.as_ref()?;
        Some(cut_notice(
            self.entries.len() as u64,
            &Cut {
                reason: reason.clone(),
                next_index: *next,
                page_token: self.next_page_token.clone().unwrap_or_default(),
            },
        ))
    }
}

/// What [`query_each`] did: how many entries it passed on, and whether and
/// where the result was cut.
#[derive(Debug, Default)]
pub struct QueryOutcome {
    pub count: u64,
    pub pages: u64,
    pub cut: Option<Cut>,
}

impl QueryOutcome {
    /// The line saying the result was cut, if it was.
    pub fn cut_notice(&self) -> Option<String> {
        self.cut.as_ref().map(|c| cut_notice(self.count, c))
    }
}

fn cut_notice(count: u64, c: &Cut) -> String {
    format!(
        "result cut after {count} entries ({}); more entries may match from log index {}: \
         go on with --page-token {} and the same filters, or give --all for every page",
        c.reason, c.next_index, c.page_token
    )
}

/// `casebridge audit query`, each matching entry passed to `each` as its
/// page arrives: its event decoded from the leaf (an entry whose served
/// event differs from its leaf is refused). One page unless `--all`; never
/// more than `--limit` entries; a result cut either way says so. Query
/// results are not proven; `verify` and `prove` are the checks.
pub async fn query_each(
    profile: &Path,
    directory: Option<&Path>,
    args: &QueryArgs,
    mut each: impl FnMut(&v1::LogEntry) -> anyhow::Result<()>,
) -> anyhow::Result<QueryOutcome> {
    let mut req = query_request(args)?;
    let page_size = if req.limit == 0 {
        QUERY_MAX_ENTRIES as u64
    } else {
        u64::from(req.limit)
    };
    let mut auditor = Auditor::connect(profile, directory)?;
    let mut done = QueryOutcome::default();
    loop {
        let left = args.limit.map(|l| l.saturating_sub(done.count));
        // A page no larger than what --limit leaves, so that the broker
        // says whether more match after it.
        let size = left.map_or(page_size, |l| l.min(page_size));
        req.limit = u32::try_from(size).unwrap_or(u32::MAX);
        let resp = grpc("Query", auditor.api.query(req.clone()).await)?;
        done.pages += 1;
        let before = done.count;
        for mut e in resp.entries {
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
            each(&e)?;
            done.count += 1;
        }
        if !resp.truncated {
            return Ok(done);
        }
        if resp.next_page_token.is_empty() {
            bail!("the broker cut the result but gave no page token to go on with");
        }
        if args.limit.is_some_and(|l| done.count >= l) {
            done.cut = Some(Cut {
                reason: format!("the --limit of {} entries was reached", done.count),
                next_index: resp.next_index,
                page_token: resp.next_page_token,
            });
            return Ok(done);
        }
        if !args.all {
            let reason = if resp.truncated_reason.is_empty() {
                "no reason given".to_string()
            } else {
                crate::protocol::bounds::clip(&one_line(&resp.truncated_reason), 200).into_owned()
            };
            done.cut = Some(Cut {
                reason: format!("the broker cut the page: {reason}"),
                next_index: resp.next_index,
                page_token: resp.next_page_token,
            });
            return Ok(done);
        }
        // A page that neither found nor scanned anything would never end.
        if done.count == before && resp.next_index <= req_start(&req) {
            bail!("the broker's page moved no further; stopped");
        }
        req.start = 0;
        req.page_token = resp.next_page_token;
    }
}

/// Where `req` starts scanning, as far as the client can tell.
fn req_start(req: &v1::QueryRequest) -> u64 {
    if req.page_token.is_empty() {
        req.start
    } else {
        crate::protocol::audit::parse_page_token(req, &req.page_token).unwrap_or(0)
    }
}

/// [`query_each`], the entries collected.
pub async fn query(
    profile: &Path,
    directory: Option<&Path>,
    args: &QueryArgs,
) -> anyhow::Result<QueryResult> {
    let mut entries = Vec::new();
    let done = query_each(profile, directory, args, |e| {
        entries.push(e.clone());
        Ok(())
    })
    .await?;
    Ok(QueryResult {
        entries,
        cut: done.cut.as_ref().map(|c| (c.reason.clone(), c.next_index)),
        next_page_token: done.cut.map(|c| c.page_token),
    })
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
            page_size: Some(5),
            start: Some(7),
            ..Default::default()
        };
        let req = query_request(&ok).expect("request");
        assert_eq!(req.country, "RS");
        assert_eq!(req.decision, "refused");
        assert_eq!(req.limit, 5, "the page size is asked of the broker");
        assert_eq!(req.start, 7);
        let message = query_request(&QueryArgs {
            decision: Some("acepted".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("\"acepted\"") && message.contains("accepted, refused, delivered"),
            "{message}"
        );
        let message = query_request(&QueryArgs {
            kind: Some("gossip".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(message.contains("wanted-alert"), "{message}");
        // A page token continues only the query it came from.
        let refused = v1::QueryRequest {
            decision: "refused".into(),
            ..Default::default()
        };
        let token = crate::protocol::audit::page_token(&refused, 40);
        let next = query_request(&QueryArgs {
            decision: Some("refused".into()),
            page_token: Some(token.clone()),
            ..Default::default()
        })
        .expect("its own query");
        assert_eq!(next.page_token, token);
        assert!(
            query_request(&QueryArgs {
                decision: Some("accepted".into()),
                page_token: Some(token),
                ..Default::default()
            })
            .is_err()
        );
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
            QueryArgs {
                page_size: Some(0),
                ..Default::default()
            },
            QueryArgs {
                page_size: Some(10_001),
                ..Default::default()
            },
            QueryArgs {
                limit: Some(0),
                ..Default::default()
            },
            QueryArgs {
                page_token: Some("not a token".into()),
                ..Default::default()
            },
        ] {
            assert!(query_request(&bad).is_err(), "{bad:?}");
        }
    }
}

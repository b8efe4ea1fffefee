//! Facts of the audit API that the broker and the auditors' tools share: the
//! documented bounds of a page and of a query (`auditor.proto`), and how a
//! log entry is attributed to a node when the log is read.

use std::time::Duration;

use crate::protocol::leaf::MAX_LEAF_BYTES;
use crate::protocol::proto::v1;

/// Entries in one `GetEntries` page at most.
pub const PAGE_ENTRIES: u64 = 1000;
/// Entries in one `GetEntries` page at most when only the leaves are asked
/// for (`leaves_only`): each costs the broker a read and a copy, not a
/// decoding and an encoding, so a page holds more of them; the byte bound
/// [`PAGE_BYTES`] is the same.
pub const PAGE_LEAVES: u64 = 16_384;
/// Bytes of entries in one `GetEntries` page or `Query` answer at most:
/// 4 MiB. An answer ends before the entry that would take it past this,
/// but always holds at least one entry.
pub const PAGE_BYTES: usize = 4 << 20;
/// The largest answer the audit API sends: a page of [`PAGE_BYTES`], or a
/// single entry whose leaf is at the cap served with its decoded event
/// (twice the leaf), with framing. An auditor's client must accept this.
pub const MAX_RESPONSE_BYTES: usize = (if PAGE_BYTES > 2 * MAX_LEAF_BYTES {
    PAGE_BYTES
} else {
    2 * MAX_LEAF_BYTES
}) + 64 * 1024;
/// Entries one `Query` returns at most; also its default `limit`.
pub const QUERY_MAX_ENTRIES: usize = 10_000;
/// How long one `Query` scans at most before it answers with what it found
/// and where to continue.
pub const QUERY_TIME_LIMIT: Duration = Duration::from_secs(10);

/// The header labels of a refusal that belong to the node that submitted
/// it. A refusal is that node's act; a header naming another country's
/// sender (a forgery, or someone else's envelope passed on) does not make
/// the refusal that country's. Logs written before the broker recorded only
/// verified headers hold claims, so the check is made on reading too.
pub fn attributed(r: &v1::SubmissionRefused) -> Option<&v1::EnvelopeSummary> {
    r.envelope.as_ref().filter(|e| {
        e.sender_node == r.submitting_node
            && e.sender_agency.split_once('/').map(|(cc, _)| cc) == Some(r.submitting_node.as_str())
    })
}

/// The values `QueryRequest.decision` takes (and `audit query --decision`).
pub const DECISIONS: &[&str] = &[
    "accepted",
    "refused",
    "delivered",
    "rejected",
    "violation",
    "purged",
    "directory",
    "policy",
];

/// The record kinds' short names, as `QueryRequest.kind` takes them.
pub fn kind_names() -> Vec<&'static str> {
    (1..=64)
        .filter_map(|k| v1::RecordKind::try_from(k).ok())
        .map(crate::protocol::categories::kind_short_name)
        .collect()
}

/// Checks a query's filters as the broker reads them: exact spellings
/// (`CC/name`, `CC`, a kind's short name, a decision of [`DECISIONS`]), and
/// `to_ms` after `from_ms` when both are given. The error is a sentence
/// naming the field and, for a closed vocabulary, the valid values.
pub fn check_filters(q: &v1::QueryRequest) -> Result<(), String> {
    use crate::protocol::bounds::quote;
    if !q.agency.is_empty() && q.agency.parse::<crate::protocol::ids::AgencyId>().is_err() {
        return Err(format!(
            "agency \"{}\" is not an agency id (CC/name, e.g. HR/police)",
            quote(&q.agency)
        ));
    }
    if !q.country.is_empty() && q.country.parse::<crate::protocol::ids::Country>().is_err() {
        return Err(format!(
            "country \"{}\" is not a two-letter country code, e.g. HR",
            quote(&q.country)
        ));
    }
    if !q.kind.is_empty() && crate::protocol::categories::parse_kind_short_name(&q.kind).is_none() {
        return Err(format!(
            "kind \"{}\" is not a record kind; one of: {}",
            quote(&q.kind),
            kind_names().join(", ")
        ));
    }
    if !q.decision.is_empty() && !DECISIONS.contains(&q.decision.as_str()) {
        return Err(format!(
            "decision \"{}\" is not one of: {}",
            quote(&q.decision),
            DECISIONS.join(", ")
        ));
    }
    if q.from_ms != 0 && q.to_ms != 0 && q.to_ms <= q.from_ms {
        return Err(format!(
            "to_ms {} is not after from_ms {}",
            q.to_ms, q.from_ms
        ));
    }
    Ok(())
}

/// The version byte of a page token.
const TOKEN_VERSION: u8 = 1;
/// Bytes of the filters' digest a page token carries.
const TOKEN_DIGEST: usize = 8;

/// The digest of a query's filters (not its page size or start) that binds
/// a page token to its query.
fn filters_digest(q: &v1::QueryRequest) -> [u8; TOKEN_DIGEST] {
    let text = format!(
        "casebridge audit query filters v1\n{}\n{}\n{}\n{}\n{}\n{}",
        q.agency, q.country, q.kind, q.decision, q.from_ms, q.to_ms
    );
    let full = crate::protocol::envelope::sha256(text.as_bytes());
    let mut d = [0u8; TOKEN_DIGEST];
    d.copy_from_slice(&full[..TOKEN_DIGEST]);
    d
}

/// The page token that continues query `q` at log index `next`: URL-safe
/// base64 of a version byte, the index and a digest of the filters. It is
/// not secret; it only keeps a client from continuing one query with
/// another's position.
pub fn page_token(q: &v1::QueryRequest, next: u64) -> String {
    use base64::Engine as _;
    let mut raw = Vec::with_capacity(1 + 8 + TOKEN_DIGEST);
    raw.push(TOKEN_VERSION);
    raw.extend_from_slice(&next.to_be_bytes());
    raw.extend_from_slice(&filters_digest(q));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// The log index a page token continues query `q` at, or why the token does
/// not fit `q`.
pub fn parse_page_token(q: &v1::QueryRequest, token: &str) -> Result<u64, String> {
    use base64::Engine as _;
    let bad = || {
        format!(
            "page token \"{}\" is not one this broker gave",
            crate::protocol::bounds::quote(token)
        )
    };
    if token.len() > 64 {
        return Err(bad());
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let [version, rest @ ..] = raw.as_slice() else {
        return Err(bad());
    };
    if *version != TOKEN_VERSION || rest.len() != 8 + TOKEN_DIGEST {
        return Err(bad());
    }
    let (index, digest) = rest.split_at(8);
    if digest != filters_digest(q) {
        return Err(
            "the page token belongs to a query with other filters; give the same filters to go on"
                .to_string(),
        );
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(index);
    Ok(u64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_token_continues_only_its_own_query() {
        let q = v1::QueryRequest {
            agency: "HR/police".into(),
            decision: "refused".into(),
            ..Default::default()
        };
        let t = page_token(&q, 12_345);
        assert_eq!(parse_page_token(&q, &t), Ok(12_345));
        // The page size and start are not part of the query's identity.
        let resized = v1::QueryRequest {
            limit: 7,
            ..q.clone()
        };
        assert_eq!(parse_page_token(&resized, &t), Ok(12_345));
        let other = v1::QueryRequest {
            decision: "accepted".into(),
            ..q.clone()
        };
        assert!(
            parse_page_token(&other, &t)
                .unwrap_err()
                .contains("other filters")
        );
        for bad in ["", "x", "!!!!", &"A".repeat(100), &t[..t.len() - 1]] {
            assert!(parse_page_token(&q, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unknown_filter_values_are_refused_naming_the_valid_ones() {
        let ok = v1::QueryRequest {
            agency: "HR/police".into(),
            country: "RS".into(),
            kind: "wanted_alert".into(),
            decision: "accepted".into(),
            from_ms: 1,
            to_ms: 2,
            ..Default::default()
        };
        assert_eq!(check_filters(&ok), Ok(()));
        let e = check_filters(&v1::QueryRequest {
            decision: "acepted".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.contains("\"acepted\"") && e.contains("accepted, refused, delivered"),
            "{e}"
        );
        let e = check_filters(&v1::QueryRequest {
            kind: "gossip".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            e.contains("mla_request") && e.contains("permission_grant"),
            "{e}"
        );
        for bad in [
            v1::QueryRequest {
                agency: "police".into(),
                ..Default::default()
            },
            v1::QueryRequest {
                country: "Croatia".into(),
                ..Default::default()
            },
            v1::QueryRequest {
                from_ms: 5,
                to_ms: 5,
                ..Default::default()
            },
        ] {
            assert!(check_filters(&bad).is_err(), "{bad:?}");
        }
    }
}

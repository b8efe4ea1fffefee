//! The audit log's leaves: the encoding of an event, under a hard size cap.
//!
//! Every leaf is served whole, to auditors page by page and to witnesses in
//! proofs, forever. One oversized event would make its page unreadable for
//! every reader, so the store encodes every event it appends through
//! [`encode`]: an event over [`MAX_LEAF_BYTES`] has its free-text fields cut
//! (with a marker saying how much was cut), and an event still too large
//! after that is refused, never stored.

use prost::Message as _;

use crate::protocol::bounds::clip;
use crate::protocol::proto::v1;

/// The largest leaf the broker stores: 64 KiB. Every field of an event is
/// bounded well below this (labels, recipients, categories, reasons); free
/// text is cut to fit.
pub const MAX_LEAF_BYTES: usize = 64 * 1024;

/// An event too large for a leaf even with its free text cut.
#[derive(Debug, thiserror::Error)]
#[error(
    "audit event of {size} bytes exceeds the leaf cap of {max} bytes even with its free text cut"
)]
pub struct LeafTooLarge {
    pub size: usize,
    pub max: usize,
}

/// The free-text fields of an event, the only fields [`encode`] may cut.
fn free_text(e: &mut v1::AuditEvent) -> Vec<&mut String> {
    use v1::audit_event::Event;
    match &mut e.event {
        Some(Event::SubmissionAccepted(a)) => vec![&mut a.policy_explanation],
        Some(Event::SubmissionRefused(r)) => vec![&mut r.reason, &mut r.policy_explanation],
        Some(Event::ReceiptRecorded(r)) => vec![&mut r.reason],
        Some(Event::ContentViolation(v)) => vec![&mut v.detail],
        Some(Event::PolicyChanged(p)) => vec![&mut p.detail],
        Some(Event::DirectoryRefused(d)) => vec![&mut d.reason],
        Some(Event::RecordsPurged(_) | Event::DirectoryChanged(_)) | None => vec![],
    }
}

/// The leaf for `event`: its protobuf encoding, at most [`MAX_LEAF_BYTES`].
/// If it is larger, its free-text fields are cut to one common length, the
/// longest that makes the event fit (shorter fields stay whole).
pub fn encode(event: &v1::AuditEvent) -> Result<Vec<u8>, LeafTooLarge> {
    let size = event.encoded_len();
    if size <= MAX_LEAF_BYTES {
        return Ok(event.encode_to_vec());
    }
    let mut event = event.clone();
    let excess = size - MAX_LEAF_BYTES;
    let mut fields = free_text(&mut event);
    let mut lens: Vec<usize> = fields.iter().map(|f| f.len()).collect();
    lens.sort_unstable();
    // The text that may stay, shared out so that no field is cut below
    // the length of a shorter one.
    let mut budget = lens.iter().sum::<usize>().saturating_sub(excess);
    let mut level = usize::MAX;
    for (i, len) in lens.iter().enumerate() {
        let left = lens.len() - i;
        if len.saturating_mul(left) <= budget {
            budget -= len;
        } else {
            level = budget / left;
            break;
        }
    }
    for f in fields.iter_mut() {
        if f.len() > level {
            let cut = clip(f, level).into_owned();
            **f = cut;
        }
    }
    let size = event.encoded_len();
    if size > MAX_LEAF_BYTES {
        return Err(LeafTooLarge {
            size,
            max: MAX_LEAF_BYTES,
        });
    }
    Ok(event.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use v1::audit_event::Event;

    fn refused(reason: &str, explanation: &str) -> v1::AuditEvent {
        v1::AuditEvent {
            at_ms: 1,
            event: Some(Event::SubmissionRefused(v1::SubmissionRefused {
                submitting_node: "HR".into(),
                code: v1::RefusalCode::Policy as i32,
                reason: reason.into(),
                policy_explanation: explanation.into(),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn small_events_are_encoded_as_they_are() {
        let e = refused("no", "because");
        assert_eq!(encode(&e).unwrap(), e.encode_to_vec());
    }

    #[test]
    fn oversized_free_text_is_cut_with_a_marker() {
        let big = "é".repeat(MAX_LEAF_BYTES); // two bytes each
        let e = refused(&big, &big);
        let leaf = encode(&e).unwrap();
        assert!(leaf.len() <= MAX_LEAF_BYTES, "{}", leaf.len());
        let back = v1::AuditEvent::decode(leaf.as_slice()).unwrap();
        let Some(Event::SubmissionRefused(r)) = back.event else {
            panic!("not a refusal")
        };
        assert_eq!(r.submitting_node, "HR");
        for text in [&r.reason, &r.policy_explanation] {
            assert!(
                text.starts_with("éé") && text.ends_with("bytes cut]"),
                "{text}"
            );
            assert!(
                text.len() > MAX_LEAF_BYTES / 3,
                "both fields keep a fair share"
            );
        }
    }

    #[test]
    fn an_event_without_free_text_to_cut_is_refused() {
        let e = v1::AuditEvent {
            at_ms: 1,
            event: Some(Event::RecordsPurged(v1::RecordsPurged {
                node: "HR".into(),
                envelope_ids: vec![vec![7; 16]; MAX_LEAF_BYTES / 16],
            })),
        };
        let err = encode(&e).unwrap_err();
        assert!(err.size > MAX_LEAF_BYTES);
        assert!(err.to_string().contains("leaf cap of 65536 bytes"));
    }

    #[test]
    fn clip_keeps_char_boundaries_and_says_what_was_cut() {
        assert_eq!(clip("short", 10), "short");
        let s = "ž".repeat(100);
        let c = clip(&s, 61);
        assert!(c.len() <= 61, "{c}");
        assert!(c.ends_with("… [180 bytes cut]"), "{c}");
        assert_eq!(clip(&s, 5), "žž");
    }
}

//! Limits on everything a peer or an agency controls.
//!
//! Every string and repeated field that arrives in an envelope header or in
//! an Agency API request has its limit here, and the proto comment of each
//! field states it. A limit is enforced where the input first arrives (the
//! node's Agency API for what an agency asks, the broker's Submit for what a
//! node signed) and again by the receiving node, with an error that names the
//! field and the limit. Errors quote peer input only through [`quote`].
//!
//! Pure: no I/O, no state.

use std::borrow::Cow;

/// An envelope id on the wire: a UUIDv7 in 16 bytes.
pub const ENVELOPE_ID_LEN: usize = 16;
/// An envelope id as text: the longest UUID spelling the parser accepts
/// ("urn:uuid:" and 36 characters).
pub const MAX_ENVELOPE_ID_TEXT: usize = 45;
/// A country code: two letters.
pub const COUNTRY_LEN: usize = 2;
/// An agency id, "CC/name" with a name of at most 32 characters.
pub const MAX_AGENCY_ID: usize = 35;
/// A SHA-256 digest in a header (ciphertext binding, data-key commitment).
pub const DIGEST_LEN: usize = 32;
/// An Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// A wrapped key's HPKE encapsulated key: an X25519 public key.
pub const ENCAPSULATED_KEY_LEN: usize = 32;
/// A wrapped key's sealed data key: 32 key bytes and a 16-byte tag.
pub const SEALED_KEY_LEN: usize = 48;
/// The AES-256-GCM nonce before every payload.
pub const NONCE_LEN: usize = 12;
/// The AES-256-GCM tag after every payload.
pub const TAG_LEN: usize = 16;
/// `Labels.legal_basis_reference`: the name of an agreement or ground.
pub const MAX_LEGAL_BASIS_REFERENCE: usize = 512;
/// `Labels.case_reference`: a pseudonymous reference.
pub const MAX_CASE_REFERENCE: usize = 128;
/// `Labels.handling_restriction`: the provider's H3 text.
pub const MAX_HANDLING_RESTRICTION: usize = 4096;
/// `PermissionRequest.justification` and `PermissionGrant.conditions`.
pub const MAX_PERMISSION_TEXT: usize = 4096;
/// Recipients of one envelope, and third agencies of one permission, unless
/// configured otherwise (`limits.max_recipients`).
pub const DEFAULT_MAX_RECIPIENTS: usize = 64;
/// The most a configuration may allow.
pub const MAX_RECIPIENTS_CEILING: usize = 1024;
/// The broker's envelope limit (header + signature + ciphertext) unless
/// configured otherwise (`limits.max_envelope_bytes`, on the broker and on
/// every node alike).
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 16 << 20;
/// `idempotency_key` of the Agency API calls that create an envelope: at
/// least 1 and at most this many bytes of printable ASCII.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;
/// How many bytes of a peer's input an error message quotes.
pub const QUOTE_LEN: usize = 40;

/// The longest reason a receipt or a refusal may give, in bytes.
pub const MAX_REASON: usize = 4096;
/// The largest serialized receipt body a node may sign or send.
pub const MAX_RECEIPT_BODY: usize = 64 * 1024;
/// The longest explanation a node may give with a refusal it reports.
pub const MAX_REFUSAL_EXPLANATION: usize = 16 * 1024;
/// The longest policy set hash a refusal report may name.
pub const MAX_BUNDLE_HASH: usize = 128;
/// The most envelope ids one purge report may name.
pub const MAX_PURGE_IDS: usize = 1000;

/// The largest gRPC message a server decodes when its envelopes may be
/// `max_envelope_bytes`: far enough above the envelope limit that an
/// oversized envelope is read and refused with its own typed, audited
/// refusal rather than cut off by the transport.
pub fn transport_limit(max_envelope_bytes: usize) -> usize {
    max_envelope_bytes
        .saturating_mul(2)
        .saturating_add(64 * 1024)
}

/// The configurable bounds a header is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most recipients of one envelope and third agencies of one permission.
    pub max_recipients: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            max_recipients: DEFAULT_MAX_RECIPIENTS,
        }
    }
}

/// An input over its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    #[error("{field} is {len} bytes long; the limit is {max}")]
    Length {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{field} has {count} entries; the limit is {max}")]
    Count {
        field: &'static str,
        count: usize,
        max: usize,
    },
}

/// Refuses `value` if it is longer than `max` bytes.
pub fn check_len(field: &'static str, value: &[u8], max: usize) -> Result<(), Exceeded> {
    if value.len() > max {
        return Err(Exceeded::Length {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// Refuses a list of `count` entries if there are more than `max`.
pub fn check_count(field: &'static str, count: usize, max: usize) -> Result<(), Exceeded> {
    if count > max {
        return Err(Exceeded::Count { field, count, max });
    }
    Ok(())
}

/// Refuses a list longer than `max` or with any string longer than
/// `max_each`.
pub fn check_strings(
    field: &'static str,
    values: &[String],
    max: usize,
    max_each: usize,
) -> Result<(), Exceeded> {
    check_count(field, values.len(), max)?;
    values
        .iter()
        .try_for_each(|v| check_len(field, v.as_bytes(), max_each))
}

/// Room kept for the marker [`clip`] appends.
const MARKER_ROOM: usize = 40;

/// Cuts `s` to at most `max` bytes on a character boundary. A cut string
/// ends with a marker saying how many bytes were cut, so a reader never
/// takes a cut text for the whole.
pub fn clip(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let keep = floor_boundary(s, max.saturating_sub(MARKER_ROOM));
    if max < MARKER_ROOM {
        return Cow::Borrowed(&s[..floor_boundary(s, max)]);
    }
    Cow::Owned(format!("{}… [{} bytes cut]", &s[..keep], s.len() - keep))
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// At most [`QUOTE_LEN`] bytes of `s`, cut at a character boundary, marked
/// with "…" and the full length when cut: what an error may echo of input
/// it did not write itself.
pub fn quote(s: &str) -> String {
    if s.len() <= QUOTE_LEN {
        return s.to_string();
    }
    let end = floor_boundary(s, QUOTE_LEN);
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// [`quote`] in double quotes, with quotes, backslashes and control
/// characters escaped: what a peer or a person sent cannot break the line it
/// is shown in, nor pass for the text around it.
pub fn quoted(s: &str) -> String {
    escaped(&quote(s))
}

/// `s` in double quotes with quotes, backslashes and control characters
/// escaped, uncut: for text already cut by [`quote`], or bounded otherwise.
pub fn escaped(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// [`quote`] for bytes, in hex.
pub fn quote_hex(b: &[u8]) -> String {
    let shown = &b[..b.len().min(QUOTE_LEN / 2)];
    if shown.len() == b.len() {
        hex::encode(b)
    } else {
        format!("{}… ({} bytes)", hex::encode(shown), b.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_escapes_what_could_break_a_line() {
        assert_eq!(quoted("HR/police"), "\"HR/police\"");
        assert_eq!(quoted("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    }

    #[test]
    fn quote_keeps_short_input_and_cuts_long_input() {
        assert_eq!(quote("HR/police"), "HR/police");
        assert_eq!(quote(&"x".repeat(QUOTE_LEN)), "x".repeat(QUOTE_LEN));
        let long = "y".repeat(5 << 20);
        assert_eq!(quote(&long), format!("{}… (5242880 bytes)", "y".repeat(40)));
        // Never splits a character.
        let wide = "ž".repeat(100);
        let q = quote(&wide);
        assert!(q.starts_with(&"ž".repeat(20)), "{q}");
        assert!(q.ends_with("… (200 bytes)"), "{q}");
    }

    #[test]
    fn quote_hex_is_short_whatever_the_input() {
        assert_eq!(quote_hex(&[1, 2, 3]), "010203");
        let q = quote_hex(&[0xab; 1 << 20]);
        assert!(q.len() < 80, "{q}");
        assert!(
            q.starts_with("abab") && q.ends_with(" (1048576 bytes)"),
            "{q}"
        );
    }

    #[test]
    fn limits_name_the_field_and_the_limit() {
        assert_eq!(check_len("labels.case_reference", &[0; 128], 128), Ok(()));
        assert_eq!(
            check_len("labels.case_reference", &[0; 129], 128)
                .unwrap_err()
                .to_string(),
            "labels.case_reference is 129 bytes long; the limit is 128"
        );
        assert_eq!(
            check_count("recipients", 65, 64).unwrap_err().to_string(),
            "recipients has 65 entries; the limit is 64"
        );
        let list = vec!["HR/police".to_string(), "x".repeat(36)];
        assert_eq!(
            check_strings("recipients", &list, 2, MAX_AGENCY_ID),
            Err(Exceeded::Length {
                field: "recipients",
                len: 36,
                max: 35
            })
        );
        assert_eq!(check_strings("recipients", &list[..1], 1, 35), Ok(()));
    }

    #[test]
    fn the_transport_reads_more_than_the_envelope_limit() {
        for max in [1024, 64 * 1024, DEFAULT_MAX_ENVELOPE_BYTES, 1 << 30] {
            assert!(transport_limit(max) > max + 64 * 1024 - 1);
        }
        assert_eq!(transport_limit(usize::MAX), usize::MAX);
    }
}

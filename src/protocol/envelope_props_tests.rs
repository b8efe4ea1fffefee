//! Property tests for envelopes and receipts: arbitrary bytes, byte
//! mutations and protobuf field edits of a valid envelope and receipt, and
//! headers and receipt bodies re-signed by a real node. See
//! `crate::props_tests` for the fixture and the long-run command.

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use prost::Message as _;

use crate::props_tests::{apply, byte_muts, edit_fields, field_edits, fx, run};
use crate::protocol::directory::Directory;
use crate::protocol::envelope::{self, VerifiedHeader};
use crate::protocol::ids::{AgencyId, Country};
use crate::protocol::proto::v1;

/// Checks what a `VerifiedHeader` promises, whatever bytes it came from.
fn check_invariants(h: &VerifiedHeader, dir: &Directory, now: i64) -> Result<(), TestCaseError> {
    prop_assert_eq!(h.sender_agency.country(), h.sender_node);
    prop_assert!(dir.agency(&h.sender_agency).is_some_and(|a| !a.revoked));
    prop_assert!(dir.node(h.sender_node).is_some_and(|n| n.active_at(now)));
    prop_assert!(!h.recipients.is_empty());
    let mut seen = std::collections::BTreeSet::new();
    for r in &h.recipients {
        prop_assert!(seen.insert(r.clone()), "recipient {} twice", r);
        prop_assert!(*r != h.sender_agency);
        prop_assert!(dir.agency(r).is_some_and(|a| !a.revoked));
    }
    let nodes: std::collections::BTreeSet<Country> =
        h.recipients.iter().map(AgencyId::country).collect();
    let wrapped: std::collections::BTreeSet<Country> = h.wrapped_keys.keys().copied().collect();
    prop_assert_eq!(nodes, wrapped);
    prop_assert!(h.kind != v1::RecordKind::Unspecified);
    prop_assert!(envelope::check_labels(&h.labels).is_ok());
    prop_assert!(h.expires_at_ms > h.created_at_ms && h.expires_at_ms > now);
    let permission_kind = matches!(
        h.kind,
        v1::RecordKind::PermissionRequest | v1::RecordKind::PermissionGrant
    );
    prop_assert_eq!(permission_kind, h.permission.is_some());
    Ok(())
}

// ---------------------------------------------------------------------
// Envelopes
// ---------------------------------------------------------------------

#[test]
fn envelope_arbitrary_bytes_never_verify() {
    let fx = fx();
    run(
        "envelope: arbitrary bytes",
        1,
        (
            prop::collection::vec(any::<u8>(), 0..512),
            prop::collection::vec(any::<u8>(), 0..80),
            prop::collection::vec(any::<u8>(), 0..128),
        ),
        |(header, signature, ciphertext)| {
            let env = v1::Envelope {
                header,
                signature,
                ciphertext,
            };
            let _ = envelope::unverified_summary(&env);
            prop_assert!(envelope::verify(&env, &fx.dir, fx.now).is_err());
            // The wire form of a whole envelope, as it arrives.
            let _ = v1::Envelope::decode(env.header.as_slice());
            Ok(())
        },
    );
}

#[derive(Debug, Clone, Copy)]
enum Part {
    Header,
    Signature,
    Ciphertext,
}

#[test]
fn envelope_byte_mutations_verify_only_when_unchanged() {
    let fx = fx();
    let part = prop_oneof![
        4 => Just(Part::Header),
        1 => Just(Part::Signature),
        2 => Just(Part::Ciphertext),
    ];
    run(
        "envelope: byte mutations",
        1,
        (part, byte_muts()),
        |(part, muts)| {
            let mut env = fx.envelope.clone();
            match part {
                Part::Header => env.header = apply(&env.header, &muts),
                Part::Signature => env.signature = apply(&env.signature, &muts),
                Part::Ciphertext => env.ciphertext = apply(&env.ciphertext, &muts),
            }
            let _ = envelope::unverified_summary(&env);
            if envelope::verify(&env, &fx.dir, fx.now).is_ok() {
                prop_assert_eq!(&env.header, &fx.envelope.header);
                prop_assert_eq!(&env.ciphertext, &fx.envelope.ciphertext);
            }
            Ok(())
        },
    );
}

#[test]
fn envelope_field_edits_under_the_old_signature_never_verify() {
    let fx = fx();
    run(
        "envelope: header field edits, old signature",
        1,
        field_edits(),
        |edits| {
            let mut env = fx.envelope.clone();
            env.header = edit_fields(&env.header, &edits);
            if envelope::verify(&env, &fx.dir, fx.now).is_ok() {
                prop_assert_eq!(&env.header, &fx.envelope.header);
            }
            Ok(())
        },
    );
}

#[test]
fn envelope_field_edits_signed_by_a_real_node_keep_every_invariant() {
    // A compromised node signs whatever it likes: verify must still hold
    // every promise of a VerifiedHeader, and opening must not panic.
    let fx = fx();
    let verified = AtomicU64::new(0);
    run(
        "envelope: header field edits, re-signed by the node",
        2,
        field_edits(),
        |edits| {
            let header = edit_fields(&fx.envelope.header, &edits);
            let env = v1::Envelope {
                signature: envelope::sign_header(&header, &fx.hr),
                header,
                ciphertext: fx.envelope.ciphertext.clone(),
            };
            if let Ok(h) = envelope::verify(&env, &fx.dir, fx.now) {
                verified.fetch_add(1, Ordering::Relaxed);
                check_invariants(&h, &fx.dir, fx.now)?;
                for (cc, key) in [("RS", &fx.rs_hpke), ("BA", &fx.ba_hpke)] {
                    let cc: Country = cc.parse().expect("country");
                    let _ = envelope::open(&env, &h, cc, key);
                }
            }
            Ok(())
        },
    );
    println!(
        "props: envelope: {} re-signed edits verified and kept every invariant",
        verified.load(Ordering::Relaxed)
    );
}

#[test]
fn open_refuses_any_other_ciphertext() {
    let fx = fx();
    let header = envelope::verify(&fx.envelope, &fx.dir, fx.now).expect("fixture");
    let rs: Country = "RS".parse().expect("RS");
    let mutated = byte_muts().prop_map(|m| apply(&fx.envelope.ciphertext, &m));
    let arbitrary = prop::collection::vec(any::<u8>(), 0..64);
    run(
        "envelope: open with other ciphertexts",
        1,
        prop_oneof![3 => mutated, 1 => arbitrary],
        |ciphertext| {
            let env = v1::Envelope {
                ciphertext,
                ..fx.envelope.clone()
            };
            if envelope::open(&env, &header, rs, &fx.rs_hpke).is_ok() {
                prop_assert_eq!(&env.ciphertext, &fx.envelope.ciphertext);
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------
// Receipts
// ---------------------------------------------------------------------

#[test]
fn receipt_arbitrary_bytes_never_verify() {
    let fx = fx();
    run(
        "receipt: arbitrary bytes",
        1,
        (
            prop::collection::vec(any::<u8>(), 0..256),
            prop::collection::vec(any::<u8>(), 0..80),
        ),
        |(body, signature)| {
            let r = v1::SignedReceipt { body, signature };
            prop_assert!(envelope::verify_receipt(&r, &fx.dir, 0).is_err());
            Ok(())
        },
    );
}

#[test]
fn receipt_mutations_verify_only_when_the_body_is_unchanged() {
    let fx = fx();
    let mutation = prop_oneof![
        2 => byte_muts().prop_map(|m| (true, m, Vec::new())),
        1 => byte_muts().prop_map(|m| (false, m, Vec::new())),
        2 => field_edits().prop_map(|e| (true, Vec::new(), e)),
    ];
    run(
        "receipt: byte and field mutations",
        1,
        mutation,
        |(body, muts, edits)| {
            let mut r = fx.receipt.clone();
            if body && edits.is_empty() {
                r.body = apply(&r.body, &muts);
            } else if body {
                r.body = edit_fields(&r.body, &edits);
            } else {
                r.signature = apply(&r.signature, &muts);
            }
            if envelope::verify_receipt(&r, &fx.dir, 0).is_ok() {
                prop_assert_eq!(&r.body, &fx.receipt.body);
            }
            Ok(())
        },
    );
}

#[test]
fn receipts_signed_over_arbitrary_bodies_never_panic() {
    let fx = fx();
    run(
        "receipt: arbitrary bodies signed by a node",
        2,
        field_edits(),
        |edits| {
            let body = edit_fields(&fx.receipt.body, &edits);
            // Sign the raw bytes as a node would sign an encoded body.
            let decoded = v1::ReceiptBody::decode(body.as_slice());
            if let Ok(b) = decoded {
                let signed = envelope::sign_receipt(&b, &fx.rs);
                let got = envelope::verify_receipt(&signed, &fx.dir, 0);
                if b.recipient_node == "RS" {
                    prop_assert_eq!(got.ok(), Some(b));
                }
            }
            Ok(())
        },
    );
}

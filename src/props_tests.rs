//! Property tests for every parser and check that a peer or a file can
//! reach: envelope headers (`envelope::verify`, `open`), receipts, the
//! signed directory, signed notes, checkpoints and cosignature lines,
//! policy bundles (compile and signature), the TOML configs and profiles,
//! key and certificate files, and identifiers.
//!
//! Each target is fed arbitrary bytes and structured mutations of a valid
//! object (bytes flipped, inserted, deleted, replaced; protobuf fields
//! changed, dropped, duplicated, added; files renamed, added, removed).
//! Each property: nothing panics, and a mutated object never verifies
//! unless the part its signature covers is byte-identical to the original.
//!
//! The valid objects come from a real development federation written by
//! `pki init` into a temporary directory, once per test binary.
//!
//! `cargo test` runs a short pass. A long one, with the number of cases run
//! per target printed:
//!
//! ```text
//! CASEBRIDGE_PROP_CASES=100000 cargo test --release --lib props_tests -- --nocapture
//! ```
//!
//! The policy bundle properties live in `policy::props_tests`, beside the
//! crate-private bundle code they drive; they share this fixture.
//!
//! `CASEBRIDGE_PROP_CASES` is the number of cases for a cheap target; the
//! costly ones (Cedar compilation, files written per case) run a fixed
//! fraction of it, as the printed counts show.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost::Message as _;

use crate::protocol::directory::Directory;
use crate::protocol::envelope::{self, SealInput, VerifiedHeader};
use crate::protocol::ids::{AgencyId, Country, EnvelopeId, Role};
use crate::protocol::keys::{HpkePrivateKey, SigningKey};
use crate::protocol::note::{self, Checkpoint, Cosigner, NoteSigner, Verifiers};
use crate::protocol::proto::v1;

pub(crate) const FED: &str = "casebridge.test";

// ---------------------------------------------------------------------
// Running properties
// ---------------------------------------------------------------------

/// Cases for a cheap target: `CASEBRIDGE_PROP_CASES`, or a short default.
pub(crate) fn base_cases() -> u32 {
    std::env::var("CASEBRIDGE_PROP_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Runs `test` on `cases / cost` values of `strategy` (at least 8), then
/// prints how many cases ran.
pub(crate) fn run<S: Strategy>(
    name: &str,
    cost: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let cases = (base_cases() / cost).max(8);
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    };
    let count = AtomicU64::new(0);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |v| {
        count.fetch_add(1, Ordering::Relaxed);
        test(v)
    });
    println!(
        "props: {name}: {} cases (shrinking included)",
        count.load(Ordering::Relaxed)
    );
    if let Err(e) = result {
        panic!("{name}: {e}");
    }
}

// ---------------------------------------------------------------------
// Mutations
// ---------------------------------------------------------------------

/// One change to a byte string. Positions are taken modulo the length.
#[derive(Debug, Clone)]
pub(crate) enum ByteMut {
    Flip { at: usize, bit: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Truncate { at: usize },
    Append(Vec<u8>),
    Duplicate { at: usize, len: usize },
}

pub(crate) fn byte_mut() -> impl Strategy<Value = ByteMut> {
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| ByteMut::Flip { at, bit }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| ByteMut::Set { at, byte }),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| ByteMut::Insert { at, bytes }),
        2 => (any::<usize>(), 1usize..16).prop_map(|(at, len)| ByteMut::Delete { at, len }),
        1 => any::<usize>().prop_map(|at| ByteMut::Truncate { at }),
        1 => prop::collection::vec(any::<u8>(), 1..16).prop_map(ByteMut::Append),
        1 => (any::<usize>(), 1usize..16).prop_map(|(at, len)| ByteMut::Duplicate { at, len }),
    ]
}

pub(crate) fn byte_muts() -> impl Strategy<Value = Vec<ByteMut>> {
    prop::collection::vec(byte_mut(), 1..4)
}

pub(crate) fn apply(orig: &[u8], muts: &[ByteMut]) -> Vec<u8> {
    let mut b = orig.to_vec();
    for m in muts {
        let n = b.len();
        let pos = |at: usize| if n == 0 { 0 } else { at % n };
        match m {
            ByteMut::Flip { at, bit } if n > 0 => b[pos(*at)] ^= 1 << bit,
            ByteMut::Set { at, byte } if n > 0 => b[pos(*at)] = *byte,
            ByteMut::Insert { at, bytes } => {
                let p = if n == 0 { 0 } else { at % (n + 1) };
                b.splice(p..p, bytes.iter().copied());
            }
            ByteMut::Delete { at, len } if n > 0 => {
                let p = pos(*at);
                let end = (p + len).min(n);
                b.drain(p..end);
            }
            ByteMut::Truncate { at } => b.truncate(if n == 0 { 0 } else { at % n }),
            ByteMut::Append(bytes) => b.extend_from_slice(bytes),
            ByteMut::Duplicate { at, len } if n > 0 => {
                let p = pos(*at);
                let end = (p + len).min(n);
                let chunk = b[p..end].to_vec();
                b.splice(end..end, chunk);
            }
            _ => {}
        }
    }
    b
}

/// A top-level protobuf field as it is on the wire.
#[derive(Debug, Clone, PartialEq)]
enum Wire {
    Varint(u64),
    Fixed64([u8; 8]),
    Len(Vec<u8>),
    Fixed32([u8; 4]),
}

fn read_varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..70).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f).checked_shl(shift).unwrap_or(0);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Splits an encoded message into its top-level fields.
fn wire_fields(b: &[u8]) -> Option<Vec<(u32, Wire)>> {
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let key = read_varint(b, &mut i)?;
        let num = u32::try_from(key >> 3).ok()?;
        let value = match key & 7 {
            0 => Wire::Varint(read_varint(b, &mut i)?),
            1 => Wire::Fixed64(b.get(i..i + 8)?.try_into().ok()?),
            2 => {
                let len = usize::try_from(read_varint(b, &mut i)?).ok()?;
                let v = b.get(i..i.checked_add(len)?)?.to_vec();
                i += len;
                Wire::Len(v)
            }
            5 => Wire::Fixed32(b.get(i..i + 4)?.try_into().ok()?),
            _ => return None,
        };
        if matches!(value, Wire::Fixed64(_)) {
            i += 8;
        }
        if matches!(value, Wire::Fixed32(_)) {
            i += 4;
        }
        out.push((num, value));
    }
    Some(out)
}

fn wire_encode(fields: &[(u32, Wire)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (num, v) in fields {
        let wt = match v {
            Wire::Varint(_) => 0,
            Wire::Fixed64(_) => 1,
            Wire::Len(_) => 2,
            Wire::Fixed32(_) => 5,
        };
        write_varint(&mut out, (u64::from(*num) << 3) | wt);
        match v {
            Wire::Varint(x) => write_varint(&mut out, *x),
            Wire::Fixed64(x) => out.extend_from_slice(x),
            Wire::Len(x) => {
                write_varint(&mut out, x.len() as u64);
                out.extend_from_slice(x);
            }
            Wire::Fixed32(x) => out.extend_from_slice(x),
        }
    }
    out
}

/// A change to one field of an encoded protobuf message. `pick` chooses
/// among the fields present, modulo their number.
#[derive(Debug, Clone)]
enum FieldEdit {
    SetVarint { pick: usize, value: u64 },
    SetBytes { pick: usize, value: Vec<u8> },
    MutateBytes { pick: usize, muts: Vec<ByteMut> },
    Drop { pick: usize },
    Duplicate { pick: usize },
    Add { num: u32, value: Wire },
    Swap { a: usize, b: usize },
}

/// Values that mean something to casebridge's parsers, so that edits reach
/// past the first check.
fn interesting_bytes() -> impl Strategy<Value = Vec<u8>> {
    let words: Vec<Vec<u8>> = [
        "HR",
        "RS",
        "BA",
        "XK",
        "hr",
        "HR/police",
        "RS/police",
        "BA/police",
        "RS/prosecutor",
        "HR/missing-persons",
        "XX/police",
        "RS/Police",
        "",
        "spiffe://casebridge.test/node/HR",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    prop_oneof![
        3 => prop::sample::select(words),
        2 => prop::collection::vec(any::<u8>(), 16..=16),
        1 => prop::collection::vec(any::<u8>(), 32..=32),
        2 => prop::collection::vec(any::<u8>(), 0..48),
    ]
}

fn interesting_varint() -> impl Strategy<Value = u64> {
    let now = crate::daemon::clock::now_ms() as u64;
    prop_oneof![
        2 => 0u64..40,
        1 => Just(u64::MAX),
        1 => Just(i64::MAX as u64),
        1 => Just(i64::MIN as u64),
        1 => Just(u32::MAX as u64),
        2 => (0u64..400_000_000).prop_map(move |d| now.wrapping_add(d).wrapping_sub(200_000_000)),
        1 => any::<u64>(),
    ]
}

fn field_edit() -> impl Strategy<Value = FieldEdit> {
    prop_oneof![
        3 => (any::<usize>(), interesting_varint())
            .prop_map(|(pick, value)| FieldEdit::SetVarint { pick, value }),
        3 => (any::<usize>(), interesting_bytes())
            .prop_map(|(pick, value)| FieldEdit::SetBytes { pick, value }),
        3 => (any::<usize>(), byte_muts())
            .prop_map(|(pick, muts)| FieldEdit::MutateBytes { pick, muts }),
        1 => any::<usize>().prop_map(|pick| FieldEdit::Drop { pick }),
        1 => any::<usize>().prop_map(|pick| FieldEdit::Duplicate { pick }),
        1 => (1u32..20, prop_oneof![
                interesting_varint().prop_map(Wire::Varint),
                interesting_bytes().prop_map(Wire::Len),
            ])
            .prop_map(|(num, value)| FieldEdit::Add { num, value }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| FieldEdit::Swap { a, b }),
    ]
}

fn field_edits() -> impl Strategy<Value = Vec<FieldEdit>> {
    prop::collection::vec(field_edit(), 1..4)
}

/// Applies field edits to an encoded message (which must parse as wire
/// format; the result is returned re-encoded).
fn edit_fields(encoded: &[u8], edits: &[FieldEdit]) -> Vec<u8> {
    let Some(mut fields) = wire_fields(encoded) else {
        return encoded.to_vec();
    };
    for e in edits {
        let n = fields.len();
        match e {
            FieldEdit::SetVarint { pick, value } if n > 0 => {
                let f = &mut fields[pick % n];
                f.1 = match &f.1 {
                    Wire::Len(_) => Wire::Len(value.to_le_bytes().to_vec()),
                    _ => Wire::Varint(*value),
                };
            }
            FieldEdit::SetBytes { pick, value } if n > 0 => {
                fields[pick % n].1 = Wire::Len(value.clone());
            }
            FieldEdit::MutateBytes { pick, muts } if n > 0 => {
                if let Wire::Len(v) = &mut fields[pick % n].1 {
                    *v = apply(v, muts);
                }
            }
            FieldEdit::Drop { pick } if n > 0 => {
                fields.remove(pick % n);
            }
            FieldEdit::Duplicate { pick } if n > 0 => {
                let f = fields[pick % n].clone();
                fields.push(f);
            }
            FieldEdit::Add { num, value } => fields.push((*num, value.clone())),
            FieldEdit::Swap { a, b } if n > 0 => fields.swap(a % n, b % n),
            _ => {}
        }
    }
    wire_encode(&fields)
}

// ---------------------------------------------------------------------
// The fixture: a development federation and valid objects of each kind
// ---------------------------------------------------------------------

pub(crate) struct Fx {
    _tmp: tempfile::TempDir,
    pub(crate) root: PathBuf,
    pub(crate) now: i64,
    pub(crate) dir: Directory,
    pub(crate) dir_key: [u8; 32],
    directory_signer: SigningKey,
    hr: SigningKey,
    rs_hpke: HpkePrivateKey,
    ba_hpke: HpkePrivateKey,
    envelope: v1::Envelope,
    receipt: v1::SignedReceipt,
    /// A checkpoint note signed by the log and cosigned by node HR.
    checkpoint_note: Vec<u8>,
    cosignature: String,
    verifiers: Verifiers,
    witness: note::Verifier,
}

pub(crate) fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("fed");
        let mut opts = crate::tools::pki::InitOptions::new(&root);
        opts.countries = ["HR", "RS", "BA"]
            .iter()
            .map(|c| c.parse().expect("country"))
            .collect();
        crate::tools::pki::init(&opts).expect("pki init");
        let dir_key =
            crate::storage::files::directory::load_public_key(&root.join("ca/directory.pub"))
                .expect("directory key");
        let dir =
            crate::storage::files::directory::load(&root.join("directory.bin"), &dir_key, FED)
                .expect("directory");
        let hr = crate::storage::files::keys::load_signing_key(&root.join("nodes/HR/signing.key"))
            .expect("HR key");
        let rs_hpke = crate::storage::files::keys::load_hpke(&root.join("nodes/RS/hpke.key"))
            .expect("RS key");
        let ba_hpke = crate::storage::files::keys::load_hpke(&root.join("nodes/BA/hpke.key"))
            .expect("BA key");
        let now = crate::daemon::clock::now_ms();

        let record: v1::CaseRecord = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/records/wanted_alert.json"
            ))
            .expect("record"),
        )
        .expect("record JSON");
        let sender: AgencyId = "HR/police".parse().expect("agency");
        let recipients: Vec<AgencyId> = ["RS/police", "BA/police"]
            .iter()
            .map(|a| a.parse().expect("agency"))
            .collect();
        let labels = v1::Labels {
            purpose: v1::Purpose::InvestigationOther as i32,
            legal_basis: v1::LegalBasis::SpecificSituationDerogation as i32,
            legal_basis_reference: "Test agreement, Art. 5".into(),
            handling: v1::HandlingCode::H0 as i32,
            classification: v1::Classification::Restricted as i32,
            priority: v1::Priority::Routine as i32,
            case_reference: "TEST-CASE-1".into(),
            ..Default::default()
        };
        let input = SealInput {
            sender: &sender,
            recipients: &recipients,
            record: &record,
            labels,
            created_at_ms: now - 1000,
            expires_at_ms: now + 86_400_000,
            onward_of: None,
            permission: None,
        };
        let envelope = envelope::seal(&input, &hr, &dir).expect("seal").envelope;
        envelope::verify(&envelope, &dir, now).expect("the fixture verifies");

        let rs = crate::storage::files::keys::load_signing_key(&root.join("nodes/RS/signing.key"))
            .expect("RS key");
        let h = v1::EnvelopeHeader::decode(envelope.header.as_slice()).expect("header");
        let receipt = envelope::sign_receipt(
            &v1::ReceiptBody {
                envelope_id: h.envelope_id,
                recipient_node: "RS".into(),
                status: v1::ReceiptStatus::Delivered as i32,
                code: 0,
                reason: String::new(),
                delivered_to: vec!["RS/police".into()],
                at_ms: now,
                header_sha256: envelope::sha256(&envelope.header).to_vec(),
            },
            &rs,
        );

        let log_key = crate::storage::files::keys::load_signing_key(&root.join("broker/log.key"))
            .expect("log key");
        let origin = format!("{FED}/audit-log");
        let cp = Checkpoint::new(&origin, 12345, [7u8; 32]).expect("checkpoint");
        let mut note =
            note::sign_checkpoint(&cp, &NoteSigner::new(&origin, log_key).expect("signer"))
                .expect("sign");
        let witness_name = format!("{FED}/node/HR");
        let hr_again =
            crate::storage::files::keys::load_signing_key(&root.join("nodes/HR/signing.key"))
                .expect("HR key");
        let cosigner = Cosigner::new(&witness_name, hr_again).expect("cosigner");
        let cosig = cosigner.cosign(&cp, 1_750_000_000).expect("cosign");
        let cosignature = cosig.to_line();
        note.add_signature(cosig).expect("add cosignature");
        let log_verifier = crate::protocol::transparency::log_verifier(&dir).expect("log verifier");
        let witness =
            crate::protocol::transparency::witness_verifier(&dir, "HR".parse().expect("HR"))
                .expect("witness verifier");
        let verifiers = Verifiers::new([log_verifier, witness.clone()]).expect("verifiers");
        note::open_checkpoint(&note.to_bytes(), &verifiers).expect("the fixture opens");

        let directory_signer =
            crate::storage::files::keys::load_signing_key(&root.join("ca/directory.key"))
                .expect("key");
        Fx {
            _tmp: tmp,
            root,
            now,
            dir,
            dir_key,
            directory_signer,
            hr,
            rs_hpke,
            ba_hpke,
            envelope,
            receipt,
            checkpoint_note: note.to_bytes(),
            cosignature,
            verifiers,
            witness,
        }
    })
}

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
            prop_assert!(envelope::verify_receipt(&r, &fx.dir).is_err());
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
            if envelope::verify_receipt(&r, &fx.dir).is_ok() {
                prop_assert_eq!(&r.body, &fx.receipt.body);
            }
            Ok(())
        },
    );
}

#[test]
fn receipts_signed_over_arbitrary_bodies_never_panic() {
    let fx = fx();
    let rs = crate::storage::files::keys::load_signing_key(&fx.root.join("nodes/RS/signing.key"))
        .expect("RS key");
    run(
        "receipt: arbitrary bodies signed by a node",
        2,
        field_edits(),
        |edits| {
            let body = edit_fields(&fx.receipt.body, &edits);
            // Sign the raw bytes as a node would sign an encoded body.
            let decoded = v1::ReceiptBody::decode(body.as_slice());
            if let Ok(b) = decoded {
                let signed = envelope::sign_receipt(&b, &rs);
                let got = envelope::verify_receipt(&signed, &fx.dir);
                if b.recipient_node == "RS" {
                    prop_assert_eq!(got.ok(), Some(b));
                }
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------
// The signed directory
// ---------------------------------------------------------------------

#[test]
fn directory_arbitrary_bytes_never_verify() {
    let fx = fx();
    run(
        "directory: arbitrary bytes",
        1,
        prop::collection::vec(any::<u8>(), 0..512),
        |bytes| {
            // As a directory file or a GetDirectory answer arrives.
            if let Ok(signed) = v1::SignedDirectory::decode(bytes.as_slice()) {
                prop_assert!(Directory::verify(&signed, &fx.dir_key, FED).is_err());
            }
            let signed = v1::SignedDirectory {
                directory: bytes,
                signature: vec![0; 64],
            };
            prop_assert!(Directory::verify(&signed, &fx.dir_key, FED).is_err());
            Ok(())
        },
    );
}

#[test]
fn directory_mutations_verify_only_when_unchanged() {
    let fx = fx();
    let signed = fx.dir.signed().clone();
    let mutation = prop_oneof![
        3 => byte_muts().prop_map(|m| (0u8, m, Vec::new())),
        1 => byte_muts().prop_map(|m| (1u8, m, Vec::new())),
        3 => field_edits().prop_map(|e| (2u8, Vec::new(), e)),
        1 => byte_muts().prop_map(|m| (3u8, m, Vec::new())),
    ];
    run(
        "directory: byte and field mutations",
        1,
        mutation,
        |(what, muts, edits)| {
            let mut s = signed.clone();
            match what {
                0 => s.directory = apply(&s.directory, &muts),
                1 => s.signature = apply(&s.signature, &muts),
                2 => s.directory = edit_fields(&s.directory, &edits),
                _ => {
                    // The file as a whole.
                    let file = apply(&s.encode_to_vec(), &muts);
                    match v1::SignedDirectory::decode(file.as_slice()) {
                        Ok(d) => s = d,
                        Err(_) => return Ok(()),
                    }
                }
            }
            if Directory::verify(&s, &fx.dir_key, FED).is_ok() {
                prop_assert_eq!(&s.directory, &signed.directory);
            }
            Ok(())
        },
    );
}

#[test]
fn directories_signed_over_arbitrary_content_never_panic() {
    // The directory authority signs what it is given: parsing the entries
    // must still fail cleanly on nonsense.
    let fx = fx();
    let verified = AtomicU64::new(0);
    run(
        "directory: arbitrary content signed by the authority",
        2,
        field_edits(),
        |edits| {
            let bytes = edit_fields(&fx.dir.signed().directory, &edits);
            let Ok(d) = v1::Directory::decode(bytes.as_slice()) else {
                return Ok(());
            };
            let signed = Directory::sign(&d, &fx.directory_signer);
            if let Ok(dir) = Directory::verify(&signed, &fx.dir_key, FED) {
                verified.fetch_add(1, Ordering::Relaxed);
                for a in dir.agencies() {
                    prop_assert!(dir.node(a.id.country()).is_some());
                }
                let _ = fx.dir.check_successor(&dir);
            }
            Ok(())
        },
    );
    println!(
        "props: directory: {} re-signed edits verified",
        verified.load(Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------
// Signed notes, checkpoints, cosignatures
// ---------------------------------------------------------------------

#[test]
fn notes_from_arbitrary_bytes_never_verify() {
    let fx = fx();
    let texty = prop::collection::vec(
        prop_oneof![
            4 => 0x20u8..0x7f,
            2 => Just(b'\n'),
            1 => Just(b'+'),
            1 => any::<u8>(),
        ],
        0..300,
    );
    run("note: arbitrary bytes", 1, texty, |bytes| {
        if let Ok(n) = note::Note::parse(&bytes) {
            let _ = n.text();
        }
        prop_assert!(note::open(&bytes, &fx.verifiers).is_err());
        prop_assert!(note::open_checkpoint(&bytes, &fx.verifiers).is_err());
        if let Ok(text) = std::str::from_utf8(&bytes) {
            if let Ok(cp) = Checkpoint::parse(text) {
                // What parses prints back as it was.
                prop_assert_eq!(cp.text(), text);
            }
            let _ = note::NoteSignature::parse_line(text);
            let _ = note::Verifier::parse(text);
        }
        Ok(())
    });
}

#[test]
fn checkpoint_note_mutations_verify_only_when_the_text_is_unchanged() {
    let fx = fx();
    let orig_text = note::Note::parse(&fx.checkpoint_note)
        .expect("note")
        .text()
        .to_string();
    run("checkpoint: note mutations", 1, byte_muts(), |muts| {
        let bytes = apply(&fx.checkpoint_note, &muts);
        if let Ok(v) = note::open(&bytes, &fx.verifiers) {
            prop_assert_eq!(v.text(), orig_text.as_str());
        }
        if let Ok(c) = note::open_checkpoint(&bytes, &fx.verifiers) {
            prop_assert_eq!(c.checkpoint().text(), orig_text.clone());
            for cosig in c.cosignatures() {
                prop_assert_eq!(cosig.name(), fx.witness.name());
            }
        }
        Ok(())
    });
}

#[test]
fn cosignature_mutations_verify_only_when_unchanged() {
    let fx = fx();
    let text = note::Note::parse(&fx.checkpoint_note)
        .expect("note")
        .text()
        .to_string();
    let orig_sig = note::NoteSignature::parse_line(&fx.cosignature).expect("line");
    let which = prop_oneof![Just(true), Just(false)];
    run(
        "cosignature: line and checkpoint mutations",
        1,
        (which, byte_muts()),
        |(line, muts)| {
            let (l, t) = if line {
                (apply(fx.cosignature.as_bytes(), &muts), text.clone())
            } else {
                let t = apply(text.as_bytes(), &muts);
                (
                    fx.cosignature.as_bytes().to_vec(),
                    String::from_utf8_lossy(&t).into_owned(),
                )
            };
            let Ok(l) = String::from_utf8(l) else {
                return Ok(());
            };
            let (Ok(sig), Ok(cp)) = (note::NoteSignature::parse_line(&l), Checkpoint::parse(&t))
            else {
                return Ok(());
            };
            if note::verify_cosignature(&cp, &sig, &fx.witness).is_ok() {
                prop_assert_eq!(cp.text(), text.clone());
                prop_assert_eq!(sig.signature(), orig_sig.signature());
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------
// Configs, profiles, key and certificate files
// ---------------------------------------------------------------------

static FILE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` as a 0600 file beside `like` (so relative paths in it
/// resolve as in the original) and returns its path.
fn beside(like: &Path, bytes: &[u8]) -> PathBuf {
    let n = FILE_SEQ.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        ".prop-{n}-{}",
        like.file_name().and_then(|s| s.to_str()).unwrap_or("file")
    );
    let p = like.with_file_name(name);
    crate::storage::files::keys::write_secret(&p, bytes).expect("write");
    p
}

/// Byte mutations, or text mutations that keep the TOML mostly readable:
/// lines dropped, duplicated or swapped, values replaced.
fn text_mutation() -> impl Strategy<Value = (Vec<ByteMut>, Vec<(usize, usize, String)>)> {
    prop_oneof![
        2 => byte_muts().prop_map(|m| (m, Vec::new())),
        3 => prop::collection::vec(
                (any::<usize>(), 0usize..4, prop_oneof![
                    Just(String::new()),
                    Just("\"\"".to_string()),
                    Just("0".to_string()),
                    Just("-1".to_string()),
                    Just("99999999999999999999".to_string()),
                    Just("\"127.0.0.1:99999\"".to_string()),
                    Just("\"/nonexistent\"".to_string()),
                    Just("\"ZZ\"".to_string()),
                    Just("[1, 2]".to_string()),
                    Just("{ a = 1 }".to_string()),
                    "[ -~]{0,24}",
                ]),
                1..4,
            )
            .prop_map(|e| (Vec::new(), e)),
    ]
}

fn apply_text(orig: &str, (muts, edits): &(Vec<ByteMut>, Vec<(usize, usize, String)>)) -> Vec<u8> {
    if !muts.is_empty() {
        return apply(orig.as_bytes(), muts);
    }
    let mut lines: Vec<String> = orig.lines().map(str::to_owned).collect();
    for (at, op, value) in edits {
        if lines.is_empty() {
            break;
        }
        let i = at % lines.len();
        match op {
            0 => {
                lines.remove(i);
            }
            1 => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            2 => {
                let j = (at / 7) % lines.len();
                lines.swap(i, j);
            }
            _ => {
                if let Some((key, _)) = lines[i].split_once('=') {
                    lines[i] = format!("{key}= {value}");
                }
            }
        }
    }
    (lines.join("\n") + "\n").into_bytes()
}

#[test]
fn config_mutations_never_panic() {
    let fx = fx();
    let files: Vec<(u8, PathBuf)> = vec![
        (0, fx.root.join("broker.toml")),
        (1, fx.root.join("nodes/HR.toml")),
        (2, fx.root.join("agencies/HR/police/profile.toml")),
        (3, fx.root.join("auditors/auditor/profile.toml")),
    ];
    let texts: Vec<(u8, PathBuf, String)> = files
        .into_iter()
        .map(|(k, p)| {
            let t = std::fs::read_to_string(&p).expect("config");
            (k, p, t)
        })
        .collect();
    for (k, p, _) in &texts {
        load_config(*k, p).expect("the fixture configs load");
    }
    run(
        "config: broker, node, agency and auditor TOML",
        4,
        (any::<usize>(), text_mutation()),
        |(which, m)| {
            let (kind, path, text) = &texts[which % texts.len()];
            let bytes = apply_text(text, &m);
            let p = beside(path, &bytes);
            let _ = load_config(*kind, &p);
            let _ = std::fs::remove_file(&p);
            Ok(())
        },
    );
}

fn load_config(kind: u8, p: &Path) -> Result<(), String> {
    use crate::daemon::config::{AgencyProfile, BrokerConfig, NodeConfig, load};
    match kind {
        0 => load::<BrokerConfig>(p)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        1 => load::<NodeConfig>(p).map(|_| ()).map_err(|e| e.to_string()),
        2 => load::<AgencyProfile>(p)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        _ => crate::tools::audit::load_profile(p)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

#[test]
fn key_and_certificate_file_mutations_never_panic() {
    let fx = fx();
    let files: Vec<(u8, PathBuf)> = vec![
        (0, fx.root.join("nodes/HR/signing.key")),
        (1, fx.root.join("nodes/HR/hpke.key")),
        (2, fx.root.join("nodes/HR/node.key")),
        (3, fx.root.join("nodes/HR/node.crt")),
        (4, fx.root.join("ca/directory.pub")),
        (5, fx.root.join("broker/log.key")),
        (3, fx.root.join("agencies/HR/police/agency.crt")),
    ];
    let originals: Vec<(u8, PathBuf, Vec<u8>)> = files
        .into_iter()
        .map(|(k, p)| {
            let b = std::fs::read(&p).expect("key file");
            (k, p, b)
        })
        .collect();
    for (k, p, _) in &originals {
        load_key(fx, *k, p).expect("the fixture keys load");
    }
    run(
        "keys: PEM, DER, hex and raw key and certificate files",
        4,
        (any::<usize>(), byte_muts()),
        |(which, muts)| {
            let (kind, path, bytes) = &originals[which % originals.len()];
            let p = beside(path, &apply(bytes, &muts));
            let _ = load_key(fx, *kind, &p);
            let _ = std::fs::remove_file(&p);
            Ok(())
        },
    );
}

fn load_key(fx: &Fx, kind: u8, p: &Path) -> Result<(), String> {
    match kind {
        0 | 5 => crate::storage::files::keys::load_signing_key(p)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        1 => crate::storage::files::keys::load_hpke(p)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        2 => crate::daemon::tls::Identity::load(&fx.root.join("nodes/HR/node.crt"), p)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        3 => {
            let certs = crate::daemon::tls::load_certs(p).map_err(|e| e.to_string())?;
            // As a peer's certificate reaches the role check.
            for c in &certs {
                let _ = crate::daemon::tls::role_of(c, FED);
            }
            Ok(())
        }
        _ => crate::storage::files::directory::load_public_key(p)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

#[test]
fn certificate_der_mutations_never_panic() {
    let fx = fx();
    let certs = crate::daemon::tls::load_certs(&fx.root.join("agencies/HR/police/agency.crt"))
        .expect("certificates");
    let leaf = certs[0].as_ref().to_vec();
    crate::daemon::tls::role_of(&certs[0], FED).expect("fixture role");
    run(
        "certificates: DER mutations at the role check",
        1,
        byte_muts(),
        |muts| {
            let der = rustls::pki_types::CertificateDer::from(apply(&leaf, &muts));
            let _ = crate::daemon::tls::role_of(&der, FED);
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------

#[test]
fn identifiers_parse_only_what_they_print() {
    let strings = prop_oneof![
        3 => "[A-Za-z0-9/:._-]{0,40}",
        2 => "(spiffe://)?[a-z.]{0,16}/(node|agency|auditor|broker)(/[A-Za-z0-9-]{0,6}){0,3}",
        1 => any::<String>(),
    ];
    run(
        "ids: countries, agencies, envelope ids, SPIFFE ids",
        1,
        strings,
        |s| {
            if let Ok(c) = s.parse::<Country>() {
                prop_assert_eq!(c.to_string(), s.clone());
            }
            if let Ok(a) = s.parse::<AgencyId>() {
                prop_assert_eq!(a.to_string(), s.clone());
            }
            if let Ok(id) = s.parse::<EnvelopeId>() {
                prop_assert_eq!(id.to_string().parse::<EnvelopeId>().ok(), Some(id));
            }
            if let Ok(r) = Role::from_spiffe_uri(&s, FED) {
                prop_assert_eq!(r.spiffe_uri(FED), s.clone());
            }
            let _ = EnvelopeId::from_bytes(s.as_bytes());
            Ok(())
        },
    );
}

#[test]
fn the_fixture_covers_what_it_claims() {
    // A regression guard for the properties above: their originals verify,
    // so a mutation that "never verifies" is tested against a real object.
    let fx = fx();
    assert!(envelope::verify(&fx.envelope, &fx.dir, fx.now).is_ok());
    assert!(envelope::verify_receipt(&fx.receipt, &fx.dir).is_ok());
    assert!(note::open_checkpoint(&fx.checkpoint_note, &fx.verifiers).is_ok());
}

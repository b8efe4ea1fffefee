//! The shared part of the property tests: the runner, the mutation
//! strategies (bytes flipped, inserted, deleted, replaced; protobuf fields
//! changed, dropped, duplicated, added) and the fixture, a real development
//! federation written by `pki init` into a temporary directory, once per
//! test binary, with a valid object of each kind.
//!
//! The properties cover every parser and check that a peer or a file can
//! reach. Each target is fed arbitrary bytes and structured mutations of a
//! valid object. Each property: nothing panics, and a mutated object never
//! verifies unless the part its signature covers is byte-identical to the
//! original. They live in the lowest layer whose code they drive:
//!
//! - `protocol::envelope_props_tests`: envelope headers (`envelope::verify`,
//!   `open`) and receipts;
//! - `protocol::directory_props_tests`: the signed directory;
//! - `protocol::note_props_tests`: signed notes, checkpoints and cosignature
//!   lines;
//! - `protocol::ids_props_tests`: identifiers;
//! - `protocol::policy::props_tests`: policy bundles (compile and signature),
//!   beside the crate-private bundle code they drive;
//! - `daemon::key_file_props_tests`: key and certificate files;
//! - `tools::config_props_tests`: the TOML configs and profiles.
//!
//! `cargo test` runs a short pass. A long one, with the number of cases run
//! per target printed:
//!
//! ```text
//! CASEBRIDGE_PROP_CASES=100000 cargo test --release --lib props_tests -- --nocapture
//! ```
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
use crate::protocol::envelope::{self, SealInput};
use crate::protocol::ids::AgencyId;
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
pub(crate) enum Wire {
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
pub(crate) enum FieldEdit {
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

pub(crate) fn field_edits() -> impl Strategy<Value = Vec<FieldEdit>> {
    prop::collection::vec(field_edit(), 1..4)
}

/// Applies field edits to an encoded message (which must parse as wire
/// format; the result is returned re-encoded).
pub(crate) fn edit_fields(encoded: &[u8], edits: &[FieldEdit]) -> Vec<u8> {
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
    pub(crate) directory_signer: SigningKey,
    pub(crate) hr: SigningKey,
    /// Node RS's signing key, which signs the fixture's receipt.
    pub(crate) rs: SigningKey,
    pub(crate) rs_hpke: HpkePrivateKey,
    pub(crate) ba_hpke: HpkePrivateKey,
    pub(crate) envelope: v1::Envelope,
    pub(crate) receipt: v1::SignedReceipt,
    /// A checkpoint note signed by the log and cosigned by node HR.
    pub(crate) checkpoint_note: Vec<u8>,
    pub(crate) cosignature: String,
    pub(crate) verifiers: Verifiers,
    pub(crate) witness: note::Verifier,
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
            rs,
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

// ---------------------------------------------------------------------
// Files written beside the fixture's
// ---------------------------------------------------------------------

static FILE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` as a 0600 file beside `like` (so relative paths in it
/// resolve as in the original) and returns its path.
pub(crate) fn beside(like: &Path, bytes: &[u8]) -> PathBuf {
    let n = FILE_SEQ.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        ".prop-{n}-{}",
        like.file_name().and_then(|s| s.to_str()).unwrap_or("file")
    );
    let p = like.with_file_name(name);
    crate::storage::files::keys::write_secret(&p, bytes).expect("write");
    p
}

#[test]
fn the_fixture_covers_what_it_claims() {
    // A regression guard for the properties above: their originals verify,
    // so a mutation that "never verifies" is tested against a real object.
    let fx = fx();
    assert!(envelope::verify(&fx.envelope, &fx.dir, fx.now).is_ok());
    assert!(envelope::verify_receipt(&fx.receipt, &fx.dir, 0).is_ok());
    assert!(note::open_checkpoint(&fx.checkpoint_note, &fx.verifiers).is_ok());
}

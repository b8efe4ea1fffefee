//! Property tests for signed notes, checkpoints and cosignature lines:
//! arbitrary bytes and byte mutations of the fixture's cosigned checkpoint.
//! See `crate::props_tests` for the fixture and the long-run command.

use proptest::prelude::*;

use crate::props_tests::{apply, byte_muts, fx, run};
use crate::protocol::note::{self, Checkpoint};

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

//! Property tests for the signed directory: arbitrary bytes, byte
//! mutations and protobuf field edits of the fixture's directory, and
//! arbitrary content signed by the directory authority. See
//! `crate::props_tests` for the fixture and the long-run command.

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use prost::Message as _;

use crate::props_tests::{FED, apply, byte_muts, edit_fields, field_edits, fx, run};
use crate::protocol::directory::Directory;
use crate::protocol::proto::v1;

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

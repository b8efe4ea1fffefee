//! Property tests for policy bundles, beside the bundle code they drive:
//! a valid bundle (the framework's, signed with the directory key, and an
//! agency's, signed with its TLS key under its national CA) with files
//! changed, removed, renamed or added, and its SIGNATURE and signer.crt
//! mutated. Compilation never panics, and the signature verifies only for
//! the original files. See `crate::props_tests` for the fixture and the
//! long-run command.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use super::bundle::{self, RawBundle};
use super::schema::Vocabulary;
use super::signing::{self, Trust};
use super::{Owner, SIGNATURE_FILE, SIGNER_FILE};
use crate::props_tests::{ByteMut, apply, byte_muts, fx, run};
use crate::protocol::ids::AgencyId;

/// A bundle directory of the fixture as the storage layer reads it: the
/// signed files, the SIGNATURE and the signer.crt.
fn read_fixture(dir: &Path) -> RawBundle {
    let mut raw = RawBundle {
        files: BTreeMap::new(),
        signature: None,
        signer: None,
    };
    for entry in std::fs::read_dir(dir).expect("bundle directory") {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 name")
            .to_string();
        let content = std::fs::read(&path).expect("bundle file");
        match name.as_str() {
            SIGNATURE_FILE => raw.signature = Some(content),
            SIGNER_FILE => raw.signer = Some(content),
            _ => {
                raw.files.insert(name, content);
            }
        }
    }
    raw
}

/// The time the fixture's certificates are checked at.
fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone)]
enum BundleMut {
    /// Byte mutations of the n-th file.
    File(usize, Vec<ByteMut>),
    /// Remove the n-th file.
    Remove(usize),
    /// Rename the n-th file.
    Rename(usize, String),
    /// Add a file.
    Add(String, Vec<u8>),
    /// Byte mutations of SIGNATURE.
    Signature(Vec<ByteMut>),
    /// Byte mutations of signer.crt.
    Signer(Vec<ByteMut>),
}

fn bundle_mut() -> impl Strategy<Value = BundleMut> {
    let cedar = "permit (principal, action, resource);\n"
        .as_bytes()
        .to_vec();
    prop_oneof![
        6 => (any::<usize>(), byte_muts()).prop_map(|(i, m)| BundleMut::File(i, m)),
        1 => any::<usize>().prop_map(BundleMut::Remove),
        1 => (any::<usize>(), "[a-z]{1,8}\\.cedar").prop_map(|(i, n)| BundleMut::Rename(i, n)),
        1 => ("[a-z]{1,8}\\.cedar", prop_oneof![Just(cedar), prop::collection::vec(any::<u8>(), 0..64)])
            .prop_map(|(n, c)| BundleMut::Add(n, c)),
        2 => byte_muts().prop_map(BundleMut::Signature),
        2 => byte_muts().prop_map(BundleMut::Signer),
    ]
}

fn mutate_bundle(orig: &RawBundle, m: &BundleMut) -> RawBundle {
    let mut files = orig.files.clone();
    let mut signature = orig.signature.clone();
    let mut signer = orig.signer.clone();
    let names: Vec<String> = files.keys().cloned().collect();
    let nth = |i: usize| names[i % names.len()].clone();
    match m {
        BundleMut::File(i, muts) => {
            let name = nth(*i);
            let v = apply(&files[&name], muts);
            files.insert(name, v);
        }
        BundleMut::Remove(i) => {
            files.remove(&nth(*i));
        }
        BundleMut::Rename(i, to) => {
            if let Some(v) = files.remove(&nth(*i)) {
                files.insert(to.clone(), v);
            }
        }
        BundleMut::Add(name, content) => {
            files.insert(name.clone(), content.clone());
        }
        BundleMut::Signature(muts) => signature = signature.map(|s| apply(&s, muts)),
        BundleMut::Signer(muts) => signer = signer.map(|s| apply(&s, muts)),
    }
    RawBundle {
        files,
        signature,
        signer,
    }
}

fn bundle_property(name: &str, owner: Owner, orig: &RawBundle) {
    let fx = fx();
    let vocabulary = Vocabulary::new().expect("vocabulary");
    let trust = Trust {
        directory: &fx.dir,
        directory_key: &fx.dir_key,
        now_ms: now_ms(),
    };
    let base = owner.relative_dir_string();
    // The original is valid, so every failure below is the mutation's.
    bundle::compile(&vocabulary, &base, Some(&owner), &orig.files).expect("fixture compiles");
    signing::verify(&owner, &bundle::digest(&orig.files), orig, &trust, &base)
        .expect("fixture verifies");
    run(name, 16, bundle_mut(), |m| {
        let raw = mutate_bundle(orig, &m);
        let _ = bundle::compile(&vocabulary, &base, Some(&owner), &raw.files);
        let digest = bundle::digest(&raw.files);
        if signing::verify(&owner, &digest, &raw, &trust, &base).is_ok() {
            prop_assert_eq!(&raw.files, &orig.files);
        }
        Ok(())
    });
}

#[test]
fn framework_bundle_mutations_verify_only_when_unchanged() {
    let raw = read_fixture(&fx().root.join("policies/framework"));
    bundle_property("policy: framework bundle mutations", Owner::Framework, &raw);
}

#[test]
fn agency_bundle_mutations_verify_only_when_unchanged() {
    let id: AgencyId = "HR/police".parse().expect("agency");
    let raw = read_fixture(&fx().root.join("policies/agencies/HR/police"));
    bundle_property("policy: agency bundle mutations", Owner::Agency(id), &raw);
}

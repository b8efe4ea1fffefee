//! Checking a bundle as read: compiling it ([`super::bundle`]) and checking
//! its signature ([`super::signing`]), reporting both kinds of problem
//! together.

use std::path::Path;

use super::bundle::{Compiled, RawBundle, SignatureStatus, compile, digest, report};
use super::schema::Vocabulary;
use super::signing::{self, Trust};
use super::{BundleReport, Diagnostic, Owner};
use crate::protocol::directory::Directory;

/// Validates one bundle directory, as read from `dir`: its files,
/// manifest, Cedar syntax, schema (strict) and, for agency bundles, scope.
/// The signature is reported as present or absent but not checked; use
/// [`verify_bundle`] for that.
pub(crate) fn validate_bundle(
    dir: &Path,
    raw: &RawBundle,
) -> Result<BundleReport, Vec<Diagnostic>> {
    let vocabulary = vocabulary_or_diag(dir)?;
    let base = dir.display().to_string();
    let compiled = compile(&vocabulary, &base, None, &raw.files)?;
    let signature = match (&raw.signature, &raw.signer) {
        (None, _) => SignatureStatus::Unsigned,
        (Some(_), Some(chain)) => SignatureStatus::NotChecked {
            signer: signing::describe_chain(chain).ok(),
        },
        (Some(_), None) => SignatureStatus::NotChecked { signer: None },
    };
    Ok(report(dir, compiled, signature))
}

/// As [`validate_bundle`], and also checks the signature against a
/// federation at `now_ms`: the framework's against `directory_key`, an
/// agency's against its national CA as `directory` pins it.
pub(crate) fn verify_bundle(
    dir: &Path,
    raw: &RawBundle,
    directory: &Directory,
    directory_key: &[u8; 32],
    now_ms: i64,
) -> Result<BundleReport, Vec<Diagnostic>> {
    let vocabulary = vocabulary_or_diag(dir)?;
    let base = dir.display().to_string();
    let compiled = compile(&vocabulary, &base, None, &raw.files)?;
    let trust = Trust {
        directory,
        directory_key,
        now_ms,
    };
    let signer = signing::verify(
        &compiled.info.owner,
        &compiled.info.digest,
        raw,
        &trust,
        &base,
    )
    .map_err(|d| vec![d])?;
    Ok(report(dir, compiled, SignatureStatus::Verified { signer }))
}

fn vocabulary_or_diag(dir: &Path) -> Result<Vocabulary, Vec<Diagnostic>> {
    Vocabulary::new().map_err(|e| {
        vec![Diagnostic::new(
            dir.display().to_string(),
            None,
            e.to_string(),
        )]
    })
}

/// Compiles and verifies the bundle of `owner` as read from the owner's
/// place in a policy set (or why it could not be read).
pub(crate) fn load_bundle(
    vocabulary: &Vocabulary,
    raw: Result<RawBundle, Vec<Diagnostic>>,
    owner: &Owner,
    trust: &Trust<'_>,
) -> Result<Compiled, Vec<Diagnostic>> {
    let base = owner.relative_dir_string();
    let raw = raw?;
    // Report content and signature problems together: a data-protection
    // officer fixing one should not have to come back for the other.
    let compiled = compile(vocabulary, &base, Some(owner), &raw.files);
    let signature = signing::verify(owner, &digest(&raw.files), &raw, trust, &base);
    match (compiled, signature) {
        (Ok(c), Ok(_)) => Ok(c),
        (Ok(_), Err(d)) => Err(vec![d]),
        (Err(diags), Ok(_)) => Err(diags),
        (Err(mut diags), Err(d)) => {
            diags.push(d);
            Err(diags)
        }
    }
}

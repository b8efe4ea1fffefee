//! The policy bundles a party keeps on disk: reading a bundle directory or a
//! whole policy set into the core's in-memory bundles, signing and
//! installing bundles, and the set in force that is reloaded when they
//! change ([`LivePolicies`]).
//!
//! A bundle is a flat directory: `bundle.toml`, one or more `*.cedar` files,
//! `SIGNATURE`, and for agency bundles `signer.crt`. Anything else is refused,
//! so what is signed is exactly what is enforced and nothing rides along.
//! Compiling, validating and checking signatures is the core's
//! (`protocol::policy`); every diagnostic names the file (and line) as the
//! core reports it.

pub mod distributed;
mod live;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

pub use live::{LivePolicies, Reload};

use crate::protocol::directory::Directory;
use crate::protocol::ids::{AgencyId, Country};
use crate::protocol::keys::SigningKey;
use crate::protocol::policy::{
    self, AgencyFacts, BundleReport, BundleSigner, Diagnostic, MANIFEST_FILE, Owner, Policies,
    PolicyError, RawBundle, RawSet, SIGNATURE_FILE, SIGNER_FILE, SignatureStatus,
};

/// Largest file a bundle may hold.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most files a bundle may hold.
const MAX_FILES: usize = 256;

/// Loads the policy set in `dir` (`framework/` and
/// `agencies/<CC>/<name>/`), checking every bundle's syntax, schema, scope
/// and signature: the framework's against the pinned `directory_key`, each
/// agency's against its national CA as `directory` pins it, with
/// certificates valid at `now_ms`.
///
/// Fails if any bundle fails, listing every problem found; the caller keeps
/// the set it had in force.
pub fn load_policies(
    dir: &Path,
    directory: &Directory,
    directory_key: &[u8; 32],
    now_ms: i64,
) -> Result<Policies, PolicyError> {
    Policies::from_set(read_set(dir), directory, directory_key, now_ms)
}

/// Reads a policy set directory: the framework, every agency bundle, and
/// any directory where no bundle belongs.
fn read_set(dir: &Path) -> RawSet {
    let framework = read_bundle(
        &dir.join("framework"),
        &Owner::Framework.relative_dir_string(),
    );
    let agencies = agency_dirs(&dir.join("agencies")).map(|found| {
        found
            .into_iter()
            .map(|(owner, path)| {
                let raw = match &owner {
                    Ok(id) => read_bundle(&path, &Owner::Agency(id.clone()).relative_dir_string()),
                    Err(_) => Err(Vec::new()),
                };
                (owner, raw)
            })
            .collect()
    });
    RawSet {
        framework,
        agencies,
        strays: top_level_strays(dir),
    }
}

/// Validates one bundle directory: its files, manifest, Cedar syntax,
/// schema (strict) and, for agency bundles, scope. The signature is reported
/// as present or absent but not checked; use [`verify_bundle_dir`] for that.
pub fn validate_bundle_dir(dir: &Path) -> Result<BundleReport, Vec<Diagnostic>> {
    let raw = read_bundle(dir, &dir.display().to_string())?;
    policy::validate_bundle(dir, &raw)
}

/// As [`validate_bundle_dir`], and also checks the signature against a
/// federation at `now_ms`: the framework's against `directory_key`, an
/// agency's against its national CA as `directory` pins it.
pub fn verify_bundle_dir(
    dir: &Path,
    directory: &Directory,
    directory_key: &[u8; 32],
    now_ms: i64,
) -> Result<BundleReport, Vec<Diagnostic>> {
    let raw = read_bundle(dir, &dir.display().to_string())?;
    policy::verify_bundle(dir, &raw, directory, directory_key, now_ms)
}

/// The framework signer: the federation's directory key (PKCS#8 PEM, e.g.
/// `<federation>/ca/directory.key`; refused if group or others can read
/// it).
pub fn framework_signer(key_file: &Path) -> Result<BundleSigner, PolicyError> {
    let key: SigningKey = super::keys::load_signing_key(key_file)?;
    Ok(BundleSigner::Framework(key))
}

/// An agency signer: its TLS private key (ECDSA P-256, PKCS#8 PEM) and
/// certificate chain (PEM: the agency certificate, then its national CA),
/// e.g. `agency.key` and `agency.crt` as `pki init` writes them. The agency
/// is the one the certificate's SPIFFE id names; the key must match the
/// certificate.
pub fn agency_signer(key_file: &Path, chain_file: &Path) -> Result<BundleSigner, PolicyError> {
    let key_bytes = super::keys::read_secret(key_file)?;
    let chain_pem = fs::read(chain_file).map_err(PolicyError::io(chain_file))?;
    BundleSigner::agency_from_pem(key_file, &key_bytes, chain_file, chain_pem)
}

/// The signer for `owner` in a federation directory written by
/// `casebridge pki init`: `ca/directory.key` for the framework,
/// `agencies/<CC>/<name>/agency.{key,crt}` for an agency.
pub fn signer_from_federation(
    federation_dir: &Path,
    owner: &Owner,
) -> Result<BundleSigner, PolicyError> {
    match owner {
        Owner::Framework => framework_signer(&federation_dir.join("ca/directory.key")),
        Owner::Agency(a) => {
            let dir = federation_dir
                .join("agencies")
                .join(a.country().as_str())
                .join(a.name());
            agency_signer(&dir.join("agency.key"), &dir.join("agency.crt"))
        }
    }
}

/// Validates the bundle in `dir` and signs it: writes `SIGNATURE` (hex)
/// and, for an agency, `signer.crt`. Refuses a bundle that does not
/// validate, or whose owner is not the signer's.
pub fn sign_bundle(dir: &Path, signer: &BundleSigner) -> Result<BundleReport, PolicyError> {
    let raw = read_bundle(dir, &dir.display().to_string()).map_err(PolicyError::Refused)?;
    let (sig, compiled) = policy::sign_raw(dir, &raw, signer)?;
    let sig_path = dir.join(SIGNATURE_FILE);
    fs::write(&sig_path, format!("{}\n", hex::encode(sig))).map_err(PolicyError::io(&sig_path))?;
    let signer_path = dir.join(SIGNER_FILE);
    let signer_desc = match signer {
        BundleSigner::Agency {
            chain_pem, agency, ..
        } => {
            fs::write(&signer_path, chain_pem).map_err(PolicyError::io(&signer_path))?;
            Some(format!("agency {agency}"))
        }
        BundleSigner::Framework(_) => {
            if signer_path.exists() {
                fs::remove_file(&signer_path).map_err(PolicyError::io(&signer_path))?;
            }
            Some("the federation's directory key".to_string())
        }
    };
    Ok(policy::report(
        dir,
        compiled,
        SignatureStatus::NotChecked {
            signer: signer_desc,
        },
    ))
}

/// Writes the example framework bundle and one bundle per agency of
/// `agencies` (see `protocol::policy::template_for`) into `policies_dir`, and signs each
/// with the keys of the federation in `federation_dir` as `pki init` lays
/// it out: the framework with `ca/directory.key`, each agency's with
/// `agencies/<CC>/<name>/agency.key` and `agency.crt`.
///
/// Refuses to write into a `policies_dir` that already holds a framework.
pub fn install_examples(
    policies_dir: &Path,
    federation_dir: &Path,
    agencies: &[AgencyFacts],
) -> Result<(), PolicyError> {
    let framework_dir = policies_dir.join("framework");
    if framework_dir.exists() {
        return Err(PolicyError::Exists(framework_dir));
    }
    for (owner, files) in policy::render_examples(agencies) {
        let dir = policies_dir.join(owner.relative_dir());
        fs::create_dir_all(&dir).map_err(PolicyError::io(&dir))?;
        for (name, content) in &files {
            let path = dir.join(name);
            fs::write(&path, content).map_err(PolicyError::io(&path))?;
        }
        let signer = signer_from_federation(federation_dir, &owner)?;
        sign_bundle(&dir, &signer)?;
    }
    Ok(())
}

/// Reads a bundle directory, refusing anything that is not one of the
/// bundle's files.
pub(crate) fn read_bundle(dir: &Path, base: &str) -> Result<RawBundle, Vec<Diagnostic>> {
    let entries = fs::read_dir(dir).map_err(|e| {
        vec![Diagnostic::new(
            base,
            None,
            format!("cannot read bundle directory: {e}"),
        )]
    })?;
    let mut diags = Vec::new();
    let mut raw = RawBundle {
        files: BTreeMap::new(),
        signature: None,
        signer: None,
    };
    let mut count = 0usize;
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                diags.push(Diagnostic::new(
                    base,
                    None,
                    format!("cannot read bundle directory: {e}"),
                ));
                continue;
            }
        };
        count += 1;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            diags.push(Diagnostic::new(
                base,
                None,
                format!(
                    "file name {} is not UTF-8",
                    crate::protocol::bounds::escaped(&entry.file_name().to_string_lossy())
                ),
            ));
            continue;
        };
        let file = format!("{base}/{name}");
        let known = name == MANIFEST_FILE
            || name == SIGNATURE_FILE
            || name == SIGNER_FILE
            || (name.ends_with(".cedar") && name.len() > ".cedar".len());
        if !known {
            diags.push(Diagnostic::new(
                file,
                None,
                "unexpected file: a bundle holds bundle.toml, *.cedar files, SIGNATURE and (agency bundles) signer.crt, nothing else",
            ));
            continue;
        }
        let meta = match fs::symlink_metadata(entry.path()) {
            Ok(m) => m,
            Err(e) => {
                diags.push(Diagnostic::new(file, None, format!("cannot read: {e}")));
                continue;
            }
        };
        if !meta.file_type().is_file() {
            diags.push(Diagnostic::new(
                file,
                None,
                "not a regular file (a bundle is a flat directory of regular files; no links)",
            ));
            continue;
        }
        if meta.len() > MAX_FILE_BYTES {
            diags.push(Diagnostic::new(
                file,
                None,
                format!("file is larger than {MAX_FILE_BYTES} bytes"),
            ));
            continue;
        }
        let content = match fs::read(entry.path()) {
            Ok(c) => c,
            Err(e) => {
                diags.push(Diagnostic::new(file, None, format!("cannot read: {e}")));
                continue;
            }
        };
        if name == SIGNATURE_FILE {
            raw.signature = Some(content);
        } else if name == SIGNER_FILE {
            raw.signer = Some(content);
        } else {
            raw.files.insert(name, content);
        }
    }
    if count > MAX_FILES {
        diags.push(Diagnostic::new(
            base,
            None,
            format!("bundle holds {count} files, more than {MAX_FILES}"),
        ));
    }
    if diags.is_empty() {
        Ok(raw)
    } else {
        Err(diags)
    }
}

/// An agency bundle's directory and the owner its place names, or why the
/// place names none.
pub(crate) type AgencyDir = (Result<AgencyId, Diagnostic>, PathBuf);

/// The agency bundle directories under `agencies/`: `<CC>/<name>`.
pub(crate) fn agency_dirs(agencies_dir: &Path) -> Result<Vec<AgencyDir>, Diagnostic> {
    let mut out = Vec::new();
    if !agencies_dir.exists() {
        return Ok(out);
    }
    for country in sorted_entries(agencies_dir, "agencies")? {
        let (cc_name, cc_path) = country;
        let rel_cc = format!("agencies/{cc_name}");
        if !cc_path.is_dir() {
            out.push((
                Err(Diagnostic::new(
                    rel_cc,
                    None,
                    "unexpected file: agencies/ holds one directory per country",
                )),
                cc_path,
            ));
            continue;
        }
        let cc: Country = match cc_name.parse() {
            Ok(cc) => cc,
            Err(_) => {
                out.push((
                    Err(Diagnostic::new(
                        rel_cc,
                        None,
                        "not a country code: agencies/ holds one directory per country (e.g. agencies/HR)",
                    )),
                    cc_path,
                ));
                continue;
            }
        };
        for (name, path) in sorted_entries(&cc_path, &rel_cc)? {
            let rel = format!("{rel_cc}/{name}");
            let owner = if !path.is_dir() {
                Err(Diagnostic::new(
                    rel,
                    None,
                    "unexpected file: agencies/<CC>/ holds one bundle directory per agency",
                ))
            } else {
                AgencyId::new(cc, &name).map_err(|e| Diagnostic::new(rel, None, e.to_string()))
            };
            out.push((owner, path));
        }
    }
    Ok(out)
}

fn sorted_entries(dir: &Path, rel: &str) -> Result<Vec<(String, PathBuf)>, Diagnostic> {
    let read = fs::read_dir(dir)
        .map_err(|e| Diagnostic::new(rel, None, format!("cannot read directory: {e}")))?;
    let mut out = Vec::new();
    for entry in read {
        let entry =
            entry.map_err(|e| Diagnostic::new(rel, None, format!("cannot read directory: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        out.push((name, entry.path()));
    }
    out.sort();
    Ok(out)
}

/// Directories in a policy set's root other than `framework/` and
/// `agencies/`: a bundle put there would silently not be in force.
pub(crate) fn top_level_strays(dir: &Path) -> Vec<Diagnostic> {
    let Ok(entries) = sorted_entries(dir, ".") else {
        return Vec::new();
    };
    entries
        .into_iter()
        .filter(|(name, path)| path.is_dir() && name != "framework" && name != "agencies")
        .map(|(name, _)| {
            Diagnostic::new(
                name,
                None,
                "unexpected directory: bundles live in framework/ and agencies/<CC>/<name>/",
            )
        })
        .collect()
}

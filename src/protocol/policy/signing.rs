//! Who may sign which bundle, and checking that they did.
//!
//! The framework bundle speaks for the whole federation, so it is signed
//! with the federation's directory key (Ed25519), which every node and the
//! broker already pin. An agency bundle speaks for one agency, so it is
//! signed with that agency's own TLS key (ECDSA P-256): the signature is
//! accepted only if the signer certificate chains to the agency's national
//! CA *as the signed directory pins it by digest*, and names the bundle's
//! owner in its SPIFFE id. A national CA can thus vouch only for its own
//! country's agencies, and no agency can sign for another.
//!
//! Both sign the 32-byte bundle digest, which is already domain-separated
//! (see `docs/policy.md`).

use std::path::Path;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;

use super::bundle::{self, Compiled, RawBundle};
use super::schema::Vocabulary;
use super::{Diagnostic, Owner, PolicyError, SIGNATURE_FILE, SIGNER_FILE};
use crate::protocol::directory::Directory;
use crate::protocol::ids::{AgencyId, Role};
use crate::protocol::keys::{self, SigningKey};

/// What a signature is checked against.
pub(crate) struct Trust<'a> {
    pub directory: &'a Directory,
    pub directory_key: &'a [u8; 32],
    /// When the signer certificate must be valid (Unix milliseconds).
    pub now_ms: i64,
}

/// Checks the signature of a bundle whose digest is `digest`; returns who
/// signed it.
pub(crate) fn verify(
    owner: &Owner,
    digest: &[u8; 32],
    raw: &RawBundle,
    trust: &Trust<'_>,
    base: &str,
) -> Result<String, Diagnostic> {
    let sig_file = format!("{base}/{SIGNATURE_FILE}");
    let signer_file = format!("{base}/{SIGNER_FILE}");
    if let Owner::Agency(id) = owner {
        // The most basic question first: is this agency one of ours?
        match trust.directory.agency(id) {
            None => {
                return Err(Diagnostic::new(
                    sig_file,
                    None,
                    format!("agency {id} is not listed in the directory"),
                ));
            }
            Some(a) if a.revoked => {
                return Err(Diagnostic::new(
                    sig_file,
                    None,
                    format!("agency {id} is revoked in the directory; remove its bundle"),
                ));
            }
            Some(_) => {}
        }
    }
    let Some(sig_text) = &raw.signature else {
        return Err(Diagnostic::new(
            sig_file,
            None,
            "bundle is not signed: SIGNATURE is missing (sign it with `casebridge policy sign`)",
        ));
    };
    let sig = std::str::from_utf8(sig_text)
        .ok()
        .and_then(|t| hex::decode(t.trim()).ok())
        .ok_or_else(|| Diagnostic::new(&sig_file, None, "not a hex signature"))?;
    match owner {
        Owner::Framework => {
            if raw.signer.is_some() {
                return Err(Diagnostic::new(
                    signer_file,
                    None,
                    "the framework bundle is signed with the directory key and carries no signer.crt",
                ));
            }
            if keys::verify_ed25519(trust.directory_key, digest, &sig) {
                Ok("the federation's directory key".to_string())
            } else {
                Err(Diagnostic::new(
                    sig_file,
                    None,
                    "signature does not verify against the federation's directory key (tampered, or signed with another key)",
                ))
            }
        }
        Owner::Agency(id) => verify_agency(id, digest, &sig, raw, trust, &sig_file, &signer_file),
    }
}

fn verify_agency(
    id: &AgencyId,
    digest: &[u8; 32],
    sig: &[u8],
    raw: &RawBundle,
    trust: &Trust<'_>,
    sig_file: &str,
    signer_file: &str,
) -> Result<String, Diagnostic> {
    let err = |file: &str, reason: String| Diagnostic::new(file, None, reason);
    let dir = trust.directory;
    let cc = id.country();
    let Some(chain_pem) = &raw.signer else {
        return Err(err(
            signer_file,
            "missing: an agency bundle carries its signer's certificate chain".into(),
        ));
    };
    let chain = parse_chain(chain_pem).map_err(|e| err(signer_file, e))?;
    let [leaf, ca] = chain.as_slice() else {
        return Err(err(
            signer_file,
            format!(
                "expected two certificates (the agency's, then its national CA's), found {}",
                chain.len()
            ),
        ));
    };
    let node = dir
        .node(cc)
        .ok_or_else(|| err(signer_file, format!("the directory lists no node for {cc}")))?;
    if node.national_ca_sha256.is_empty() {
        return Err(err(
            signer_file,
            format!(
                "the directory does not pin {cc}'s national CA, so no {cc} agency bundle can be verified"
            ),
        ));
    }
    if crate::protocol::envelope::sha256(ca.as_ref()).as_slice()
        != node.national_ca_sha256.as_slice()
    {
        return Err(err(
            signer_file,
            format!("the CA certificate is not {cc}'s national CA as the directory pins it"),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| {
        err(
            signer_file,
            format!("national CA certificate unusable: {e}"),
        )
    })?;
    let verifier = WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        crate::protocol::identity::provider(),
    )
    .build()
    .map_err(|e| {
        err(
            signer_file,
            format!("national CA certificate unusable: {e}"),
        )
    })?;
    verifier
        .verify_client_cert(leaf, &[], unix_time(trust.now_ms))
        .map_err(|e| {
            err(
                signer_file,
                format!("the signer certificate is not valid under {cc}'s national CA: {e}"),
            )
        })?;
    match crate::protocol::identity::role_of(leaf, &dir.federation) {
        Ok(Role::Agency(a)) if a == *id => {}
        Ok(role) => {
            return Err(err(
                signer_file,
                format!("the signer certificate is for {role}, not for agency {id}"),
            ));
        }
        Err(e) => {
            return Err(err(
                signer_file,
                format!("the signer certificate names no agency: {e}"),
            ));
        }
    }
    let key = leaf_public_key(leaf).map_err(|e| err(signer_file, e))?;
    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, key)
        .verify(digest, sig)
        .map_err(|_| {
            err(
                sig_file,
                "signature does not verify with the signer certificate's key (tampered, or signed with another key)".into(),
            )
        })?;
    Ok(format!(
        "agency {id} (certificate issued by {cc}'s national CA)"
    ))
}

fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate chain: {}", keys::pem_error(&e)))?;
    if certs.is_empty() {
        return Err("no certificate found".into());
    }
    Ok(certs)
}

fn leaf_public_key(leaf: &CertificateDer<'_>) -> Result<Vec<u8>, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|_| "the signer certificate does not parse".to_string())?;
    Ok(parsed.public_key().subject_public_key.data.to_vec())
}

/// Describes the signer of a `signer.crt` without trusting it.
pub(crate) fn describe_chain(pem: &[u8]) -> Result<String, String> {
    let chain = parse_chain(pem)?;
    let leaf = chain.first().ok_or("no certificate")?;
    crate::protocol::identity::agency_of(leaf)
        .map(|a| format!("agency {a} (claimed by signer.crt)"))
}

/// A key that can sign bundles of one owner.
pub enum BundleSigner {
    /// The federation's directory key, for the framework bundle.
    Framework(SigningKey),
    /// An agency's TLS key and certificate chain, for its own bundle.
    Agency {
        agency: AgencyId,
        key: EcdsaKeyPair,
        chain_pem: Vec<u8>,
    },
}

impl std::fmt::Debug for BundleSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BundleSigner({})", self.owner())
    }
}

impl BundleSigner {
    /// An agency signer from the bytes of its TLS private key (ECDSA P-256,
    /// PKCS#8 PEM) and certificate chain (PEM: the agency certificate, then
    /// its national CA); the paths name the files in errors. The agency is
    /// the one the certificate's SPIFFE id names; the key must match the
    /// certificate.
    pub fn agency_from_pem(
        key_file: &Path,
        key_bytes: &[u8],
        chain_file: &Path,
        chain_pem: Vec<u8>,
    ) -> Result<BundleSigner, PolicyError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(key_bytes).map_err(|e| {
            PolicyError::Signer(format!(
                "{}: not a PKCS#8 PEM private key: {}",
                key_file.display(),
                keys::pem_error(&e)
            ))
        })?;
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            der.secret_pkcs8_der(),
            &SystemRandom::new(),
        )
        .map_err(|_| {
            PolicyError::Signer(format!("{}: not an ECDSA P-256 key", key_file.display()))
        })?;
        let chain = parse_chain(&chain_pem)
            .map_err(|e| PolicyError::Signer(format!("{}: {e}", chain_file.display())))?;
        if chain.len() != 2 {
            return Err(PolicyError::Signer(format!(
                "{}: expected the agency certificate and its national CA, found {} certificates",
                chain_file.display(),
                chain.len()
            )));
        }
        let leaf = &chain[0];
        let agency = crate::protocol::identity::agency_of(leaf)
            .map_err(|e| PolicyError::Signer(format!("{}: {e}", chain_file.display())))?;
        let public = leaf_public_key(leaf)
            .map_err(|e| PolicyError::Signer(format!("{}: {e}", chain_file.display())))?;
        if public.as_slice() != key.public_key().as_ref() {
            return Err(PolicyError::Signer(format!(
                "{} does not belong to the certificate in {}",
                key_file.display(),
                chain_file.display()
            )));
        }
        Ok(BundleSigner::Agency {
            agency,
            key,
            chain_pem,
        })
    }

    /// Whose bundles this signer can sign.
    pub fn owner(&self) -> Owner {
        match self {
            BundleSigner::Framework(_) => Owner::Framework,
            BundleSigner::Agency { agency, .. } => Owner::Agency(agency.clone()),
        }
    }

    pub(crate) fn sign(&self, digest: &[u8; 32]) -> Result<Vec<u8>, PolicyError> {
        match self {
            BundleSigner::Framework(k) => Ok(k.sign(digest)),
            BundleSigner::Agency { key, .. } => key
                .sign(&SystemRandom::new(), digest)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| PolicyError::Signer("ECDSA signing failed".into())),
        }
    }
}

/// Validates the bundle read from `dir` and signs its digest with
/// `signer`: the signature, and the compiled bundle to report on. Refuses a
/// bundle that does not validate, or whose owner is not the signer's.
pub(crate) fn sign_raw(
    dir: &Path,
    raw: &RawBundle,
    signer: &BundleSigner,
) -> Result<(Vec<u8>, Compiled), PolicyError> {
    let vocabulary = Vocabulary::new()?;
    let base = dir.display().to_string();
    let compiled =
        bundle::compile(&vocabulary, &base, None, &raw.files).map_err(PolicyError::Refused)?;
    let owner = compiled.info.owner.clone();
    if owner != signer.owner() {
        return Err(PolicyError::Signer(format!(
            "{}: the bundle belongs to {owner}; this key signs for {}",
            dir.display(),
            signer.owner()
        )));
    }
    let sig = signer.sign(&compiled.info.digest)?;
    Ok((sig, compiled))
}

/// `ms` Unix milliseconds as rustls counts time (before 1970 is 1970).
fn unix_time(ms: i64) -> UnixTime {
    UnixTime::since_unix_epoch(std::time::Duration::from_millis(
        u64::try_from(ms).unwrap_or(0),
    ))
}

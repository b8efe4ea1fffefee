//! Who a certificate speaks for: the SPIFFE id in its subject alternative
//! name, parsed into a [`Role`], and the rustls crypto provider every
//! certificate check uses.
//!
//! The core depends on rustls and webpki only to verify certificate chains
//! (a policy bundle's signer certificate against its national CA); neither
//! does any I/O, and the time a chain is checked at is the caller's. The TLS
//! connections themselves are the daemons' (`daemon::tls`).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;

use crate::protocol::ids::{AgencyId, Role};

/// The ring crypto provider, the only one casebridge uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The `spiffe://` URIs among a certificate's subject alternative names.
fn spiffe_uris(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| "certificate does not parse".to_string())?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|_| "malformed subject alternative name".to_string())?
        .ok_or_else(|| "certificate has no subject alternative name".to_string())?;
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) if u.starts_with("spiffe://") => {
                Some((*u).to_string())
            }
            _ => None,
        })
        .collect())
}

/// Parses the one SPIFFE URI SAN of a certificate into a role of the
/// federation `federation`.
pub fn role_of(cert: &CertificateDer<'_>, federation: &str) -> Result<Role, String> {
    match spiffe_uris(cert)?.as_slice() {
        [uri] => Role::from_spiffe_uri(uri, federation).map_err(|e| e.to_string()),
        [] => Err("certificate has no SPIFFE URI".into()),
        _ => Err("certificate has more than one SPIFFE URI".into()),
    }
}

/// The agency a certificate's SPIFFE id names, in whatever trust domain it
/// names; for describing and pre-checking signers, not for trusting them.
pub fn agency_of(cert: &CertificateDer<'_>) -> Result<AgencyId, String> {
    let uris = spiffe_uris(cert)?;
    let [uri] = uris.as_slice() else {
        return Err("certificate does not carry exactly one SPIFFE id".into());
    };
    let domain = uri
        .trim_start_matches("spiffe://")
        .split('/')
        .next()
        .unwrap_or_default();
    match Role::from_spiffe_uri(uri, domain) {
        Ok(Role::Agency(a)) => Ok(a),
        Ok(role) => Err(format!("certificate is for {role}, not for an agency")),
        Err(e) => Err(e.to_string()),
    }
}

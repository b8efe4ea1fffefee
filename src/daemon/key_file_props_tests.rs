//! Property tests for key and certificate files (PEM, DER, hex and raw) as
//! the daemons load them, and for certificates at the role check. See
//! `crate::props_tests` for the fixture and the long-run command.

use std::path::{Path, PathBuf};

use proptest::prelude::*;

use crate::props_tests::{FED, Fx, apply, beside, byte_muts, fx, run};

// ---------------------------------------------------------------------
// Key and certificate files
// ---------------------------------------------------------------------

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

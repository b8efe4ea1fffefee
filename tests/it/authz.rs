//! Mutual TLS and authorisation: a valid certificate of the wrong role,
//! country or issuer gets PERMISSION_DENIED; no certificate gets no
//! connection at all.

use std::path::{Path, PathBuf};

use casebridge::daemon::config::{AgencyProfile, TlsFiles};
use casebridge::protocol::proto::v1;
use casebridge::tools::client::AgencyClient;
use tonic::Code;

use crate::support::*;

fn profile_with(fed: &Fed, agency: &str, cert: &Path, key: &Path) -> AgencyProfile {
    AgencyProfile {
        federation: fed.broker_config.federation.clone(),
        agency: agency.parse().unwrap(),
        node: String::new(),
        tls: TlsFiles {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            root: fed.broker_config.tls.root.clone(),
        },
    }
}

/// Calls ListInbox on `node`'s agency API presenting `cert`, under a profile
/// that claims to be `node`'s police whatever the certificate says: the
/// client's own check is bypassed, so that the node's is what is tested.
async fn list_inbox_at(fed: &Fed, node: &str, cert: &Path, key: &Path) -> tonic::Status {
    let profile = profile_with(fed, &format!("{node}/police"), cert, key);
    let addr = fed.node_addr(cc(node)).unwrap().to_string();
    let mut c = AgencyClient::presenting_any_certificate(&profile, &addr).unwrap();
    c.api
        .list_inbox(v1::ListInboxRequest::default())
        .await
        .unwrap_err()
}

fn agency_files(fed: &Fed, agency: &str) -> (PathBuf, PathBuf) {
    let d = fed.fed.dir.join("agencies").join(agency);
    (d.join("agency.crt"), d.join("agency.key"))
}

fn auditor_files(fed: &Fed) -> (PathBuf, PathBuf) {
    let d = fed.fed.dir.join("auditors/auditor");
    (d.join("auditor.crt"), d.join("auditor.key"))
}

#[tokio::test]
async fn an_agency_certificate_at_the_broker_is_denied() {
    let fed = start(&["HR", "BA"]).await;
    let (cert, key) = agency_files(&fed, "HR/police");
    let err = exchange_as(&fed, &cert, &key)
        .get_directory(v1::GetDirectoryRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("agency HR/police"),
        "{}",
        err.message()
    );
    let (cert, key) = auditor_files(&fed);
    let err = exchange_as(&fed, &cert, &key)
        .get_directory(v1::GetDirectoryRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    // The node's own certificate works.
    exchange_as_node(&fed, "HR")
        .get_directory(v1::GetDirectoryRequest {})
        .await
        .unwrap();
}

#[tokio::test]
async fn a_foreign_agency_at_a_node_is_denied() {
    let fed = start(&["HR", "RS"]).await;
    let (cert, key) = agency_files(&fed, "RS/police");
    let err = list_inbox_at(&fed, "HR", &cert, &key).await;
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("belongs to RS"), "{}", err.message());
}

#[tokio::test]
async fn a_profile_naming_another_agency_than_its_certificate_is_refused_by_the_client() {
    let fed = start(&["RS"]).await;
    let (cert, key) = agency_files(&fed, "RS/border-police");
    let profile = profile_with(&fed, "RS/police", &cert, &key);
    let addr = fed.node_addr(cc("RS")).unwrap().to_string();
    let err = format!(
        "{:#}",
        AgencyClient::from_parts(&profile, &addr).err().unwrap()
    );
    assert!(
        err.contains("the profile names agency RS/police")
            && err.contains("spiffe://casebridge.test/agency/RS/border-police"),
        "{err}"
    );
    // The same certificate under its own agency's name connects.
    let profile = profile_with(&fed, "RS/border-police", &cert, &key);
    let mut c = AgencyClient::from_parts(&profile, &addr).unwrap();
    c.api
        .list_inbox(v1::ListInboxRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_auditor_or_node_certificate_on_the_agency_api_is_denied() {
    let fed = start(&["HR", "RS"]).await;
    let (cert, key) = auditor_files(&fed);
    let err = list_inbox_at(&fed, "HR", &cert, &key).await;
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("auditor auditor"),
        "{}",
        err.message()
    );
    let cfg = &fed.node_configs[&cc("HR")];
    let err = list_inbox_at(&fed, "HR", &cfg.tls.cert, &cfg.tls.key).await;
    assert_eq!(err.code(), Code::PermissionDenied);
}

/// Issues a certificate for `spiffe` signed by the CA in `ca_dir`.
fn forge(fed: &Fed, ca_dir: &str, spiffe: &str, out: &Path) -> (PathBuf, PathBuf) {
    let dir = fed.fed.dir.join(ca_dir);
    let ca_pem = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names
        .push(rcgen::SanType::URI(spiffe.try_into().unwrap()));
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    let (c, k) = (out.join("forged.crt"), out.join("forged.key"));
    std::fs::write(&c, cert.pem() + &ca_pem).unwrap();
    casebridge::storage::files::keys::write_secret(&k, key.serialize_pem().as_bytes()).unwrap();
    (c, k)
}

#[tokio::test]
async fn a_national_ca_cannot_speak_for_another_country_or_for_a_node() {
    let fed = start(&["HR", "RS"]).await;
    let tmp = tempfile::tempdir().unwrap();
    // RS's national CA issues a certificate claiming to be HR's police.
    let (cert, key) = forge(
        &fed,
        "ca/RS",
        "spiffe://casebridge.test/agency/HR/police",
        tmp.path(),
    );
    let err = list_inbox_at(&fed, "HR", &cert, &key).await;
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message().contains("not issued by the HR national CA"),
        "{}",
        err.message()
    );

    // HR's national CA issues a certificate claiming to be node HR.
    let (cert, key) = forge(
        &fed,
        "ca/HR",
        "spiffe://casebridge.test/node/HR",
        tmp.path(),
    );
    let err = exchange_as(&fed, &cert, &key)
        .get_directory(v1::GetDirectoryRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .contains("not issued directly by the federation root"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn a_client_without_a_certificate_gets_no_connection() {
    let fed = start(&["HR"]).await;
    let root = casebridge::daemon::tls::load_certs(&fed.broker_config.tls.root).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root[0].clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(casebridge::daemon::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(fed.broker_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    // In TLS 1.3 the client learns of the refusal on its first read.
    let result = async {
        let mut tls = connector.connect(name, tcp).await?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        let mut buf = [0u8; 1];
        tls.read(&mut buf).await
    }
    .await;
    assert!(
        result.is_err() || matches!(result, Ok(0)),
        "a certificate-less client must be cut off: {result:?}"
    );
}

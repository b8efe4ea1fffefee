//! The wrong-identity matrix: every method of the Exchange, Audit and
//! Agency services called with each wrong party's certificate (an agency's
//! on the Exchange API, a node's on the Audit API or on another node's
//! Agency API, the auditor's or the broker's anywhere they do not belong,
//! certificates a CA was not entitled to issue, and outsiders the TLS
//! handshake itself refuses), and the agency-level cases: an agency asking
//! its own node for another agency's records, by guessing or by reusing
//! real envelope ids.
//!
//! Each case sends requests that would succeed with the right identity, so
//! only the identity is wrong; asserts the exact status and message; that
//! nothing changed (audit log, broker queues, inboxes, outboxes, sent
//! records); and that the federation still serves an honest round trip.
//!
//! Health and reflection are answered to any certificate that chains to the
//! federation root, by design: they say only that a service is serving and
//! which public protocol it speaks. The case below checks that this is all
//! they say, and that outsiders do not get past the handshake to ask.

use casebridge::protocol::ids::{EnvelopeId, Role};
use casebridge::protocol::proto::v1;
use tonic::{Code, Status};

use super::harness::{self, Issuer, Server, Snapshot, Who};
use crate::support::{self, Fed, cc};

/// The outcome of one call, reduced to its status.
type Outcome = (&'static str, Result<(), Status>);

fn ok<T>(r: Result<tonic::Response<T>, Status>) -> Result<(), Status> {
    r.map(|_| ())
}

/// Asserts that every call failed with `code` and a message holding
/// `fragment`.
#[track_caller]
fn assert_all(outcomes: Vec<Outcome>, code: Code, fragment: &str, who: &Who) {
    assert!(!outcomes.is_empty());
    for (method, r) in outcomes {
        match r {
            Ok(()) => panic!("{method} succeeded for {}", who.label()),
            Err(s) => {
                assert_eq!(
                    s.code(),
                    code,
                    "{method} for {}: {:?} {}",
                    who.label(),
                    s.code(),
                    s.message()
                );
                assert!(
                    s.message().contains(fragment),
                    "{method} for {}: {:?} lacks {fragment:?}",
                    who.label(),
                    s.message()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------
// Exchange API
// ---------------------------------------------------------------------

/// Requests for every Exchange method that node HR could make successfully
/// (or, for Acknowledge, that reach the queue): only the caller is wrong.
struct ExchangeMenu {
    envelope: v1::Envelope,
    receipt: v1::SignedReceipt,
    cosign: v1::CosignRequest,
    purge: v1::PurgeReport,
    refusal: v1::RefusalReport,
}

async fn exchange_menu(fed: &Fed) -> ExchangeMenu {
    let sealed = harness::seal_as(
        fed,
        "HR/police",
        &["RS/police"],
        &support::record("wanted_alert"),
        support::police_to_third_country(),
    );
    let body = harness::receipt_for(
        &sealed.envelope,
        "RS",
        v1::ReceiptStatus::Delivered,
        &["RS/police"],
    );
    let receipt = harness::sign_receipt_as(fed, "RS", &body);
    let (_, note) = harness::checkpoint_covering_log(fed).await;
    let text = harness::checkpoint_text(&note);
    let now_s = u64::try_from(casebridge::daemon::clock::now_ms() / 1000).unwrap();
    let cosign = v1::CosignRequest {
        cosignature: harness::cosign_as(fed, "HR", &text, now_s),
        checkpoint: text.into_bytes(),
    };
    ExchangeMenu {
        envelope: sealed.envelope,
        receipt,
        cosign,
        purge: harness::purge_report(&[EnvelopeId::at(casebridge::daemon::clock::now_ms())]),
        refusal: harness::refusal_report("HR", "HR/police", "refused before sealing"),
    }
}

/// Calls all nine Exchange methods as `who`.
async fn every_exchange_method(fed: &Fed, who: &Who, m: &ExchangeMenu) -> Vec<Outcome> {
    let mut c = harness::exchange_client_as(fed, who);
    vec![
        (
            "Submit",
            ok(c.submit(v1::SubmitRequest {
                envelope: Some(m.envelope.clone()),
            })
            .await),
        ),
        (
            "Receive",
            ok(c.receive(v1::ReceiveRequest::default()).await),
        ),
        (
            "Acknowledge",
            ok(c.acknowledge(v1::AcknowledgeRequest {
                seq: 1,
                receipt: Some(m.receipt.clone()),
            })
            .await),
        ),
        (
            "GetDirectory",
            ok(c.get_directory(v1::GetDirectoryRequest {}).await),
        ),
        ("ReportPurge", ok(c.report_purge(m.purge.clone()).await)),
        (
            "ReportRefusal",
            ok(c.report_refusal(m.refusal.clone()).await),
        ),
        (
            "GetCheckpoint",
            ok(c.get_checkpoint(v1::GetCheckpointRequest { from_size: 0 })
                .await),
        ),
        ("Cosign", ok(c.cosign(m.cosign.clone()).await)),
        (
            "GetInclusionProof",
            ok(c.get_inclusion_proof(v1::InclusionProofRequest {
                envelope_id: EnvelopeId::at(casebridge::daemon::clock::now_ms())
                    .as_bytes()
                    .to_vec(),
                tree_size: 0,
            })
            .await),
        ),
    ]
}

/// Starts HR, RS and BA, calls every Exchange method as `who` (made by
/// `make` once the federation runs), and checks the refusal, that nothing
/// changed and that the federation still serves.
async fn exchange_denies(make: impl FnOnce(&Fed) -> Who, fragment: &str) {
    let fed = support::start(&["HR", "RS", "BA"]).await;
    let who = make(&fed);
    let menu = exchange_menu(&fed).await;
    let before = Snapshot::settled(&fed).await;
    let outcomes = every_exchange_method(&fed, &who, &menu).await;
    assert_all(outcomes, Code::PermissionDenied, fragment, &who);
    before.assert_unchanged(&fed).await;
    harness::still_serves(&fed).await;
}

#[tokio::test]
async fn exchange_refuses_an_agency_certificate_on_every_method() {
    exchange_denies(
        |_| Who::Agency("HR/police"),
        "the exchange API is for national nodes; this certificate is for agency HR/police",
    )
    .await;
}

#[tokio::test]
async fn exchange_refuses_the_auditor_certificate_on_every_method() {
    exchange_denies(
        |_| Who::Auditor("auditor"),
        "the exchange API is for national nodes; this certificate is for auditor auditor",
    )
    .await;
}

#[tokio::test]
async fn exchange_refuses_the_broker_certificate_used_as_a_client_on_every_method() {
    exchange_denies(
        |_| Who::Broker,
        "the exchange API is for national nodes; this certificate is for broker",
    )
    .await;
}

#[tokio::test]
async fn exchange_refuses_a_node_certificate_issued_by_a_national_ca_on_every_method() {
    exchange_denies(
        |fed| {
            let id = harness::spiffe(fed, &Role::Node(cc("HR")));
            harness::mint(fed, Issuer::National("HR"), &[&id])
        },
        "certificate for node HR is not issued directly by the federation root",
    )
    .await;
}

#[tokio::test]
async fn exchange_refuses_a_root_issued_node_certificate_for_a_country_not_in_the_directory() {
    exchange_denies(
        |fed| {
            let id = harness::spiffe(fed, &Role::Node(cc("XK")));
            harness::mint(fed, Issuer::Root, &[&id])
        },
        "node XK is not in the directory",
    )
    .await;
}

#[tokio::test]
async fn exchange_refuses_a_certificate_of_another_trust_domain() {
    exchange_denies(
        |fed| harness::mint(fed, Issuer::Root, &["spiffe://other.test/node/HR"]),
        "certificate not accepted: invalid SPIFFE id \"spiffe://other.test/node/HR\": foreign trust domain",
    )
    .await;
}

#[tokio::test]
async fn exchange_refuses_a_root_issued_certificate_without_a_spiffe_id() {
    exchange_denies(
        |fed| harness::mint(fed, Issuer::Root, &[]),
        "certificate not accepted: certificate has no subject alternative name",
    )
    .await;
}

#[tokio::test]
async fn exchange_refuses_a_root_issued_certificate_naming_two_parties() {
    exchange_denies(
        |fed| {
            let hr = harness::spiffe(fed, &Role::Node(cc("HR")));
            let rs = harness::spiffe(fed, &Role::Node(cc("RS")));
            harness::mint(fed, Issuer::Root, &[&hr, &rs])
        },
        "certificate not accepted: certificate has more than one SPIFFE URI",
    )
    .await;
}

#[tokio::test]
async fn exchange_refuses_a_revoked_node_on_every_method() {
    let mut fed = support::start(&["HR", "RS", "BA"]).await;
    fed.stop_broker().await.unwrap();
    support::edit_directory(&fed, |d| {
        for n in &mut d.nodes {
            if n.country == "BA" {
                n.revoked = true;
            }
        }
    });
    fed.start_broker().await.unwrap();
    let who = Who::Node("BA");
    let menu = exchange_menu(&fed).await;
    let before = Snapshot::settled(&fed).await;
    let outcomes = every_exchange_method(&fed, &who, &menu).await;
    assert_all(
        outcomes,
        Code::PermissionDenied,
        "node BA is revoked or not yet valid",
        &who,
    );
    before.assert_unchanged(&fed).await;
    harness::still_serves(&fed).await;
}

#[tokio::test]
async fn the_broker_refuses_outsiders_at_the_tls_handshake() {
    let fed = support::start(&["HR", "RS"]).await;
    let before = Snapshot::settled(&fed).await;
    // No certificate at all.
    assert_eq!(
        harness::handshake(&fed, None, Server::Broker).await,
        harness::Handshake::Alert(rustls::AlertDescription::CertificateRequired)
    );
    // A certificate for node HR from a CA the federation does not know.
    let id = harness::spiffe(&fed, &Role::Node(cc("HR")));
    let stranger = harness::mint(&fed, Issuer::Stranger, &[&id]);
    assert_eq!(
        harness::handshake(&fed, Some(&stranger), Server::Broker).await,
        harness::Handshake::Alert(rustls::AlertDescription::UnknownCA)
    );
    // Through gRPC the same certificate never reaches a service.
    let err = harness::exchange_client_as(&fed, &stranger)
        .get_directory(v1::GetDirectoryRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unknown, "{}", err.message());
    assert!(
        err.message().contains("transport error"),
        "{}",
        err.message()
    );
    // The real node certificate is accepted at the same handshake.
    assert_eq!(
        harness::handshake(&fed, Some(&Who::Node("HR")), Server::Broker).await,
        harness::Handshake::Accepted
    );
    before.assert_unchanged(&fed).await;
    harness::still_serves(&fed).await;
}

// ---------------------------------------------------------------------
// Audit API
// ---------------------------------------------------------------------

/// Calls all five Audit methods as `who`, with requests an auditor would
/// get answers to.
async fn every_audit_method(fed: &Fed, who: &Who) -> Vec<Outcome> {
    let mut c = harness::audit_client_as(fed, who);
    vec![
        (
            "GetCheckpoint",
            ok(c.get_checkpoint(v1::GetCheckpointRequest { from_size: 0 })
                .await),
        ),
        (
            "GetEntries",
            ok(c.get_entries(v1::GetEntriesRequest {
                start: 0,
                end: 10,
                leaves_only: false,
            })
            .await),
        ),
        (
            "ProveInclusion",
            ok(c.prove_inclusion(v1::ProveInclusionRequest {
                target: Some(v1::prove_inclusion_request::Target::Index(0)),
                tree_size: 0,
            })
            .await),
        ),
        (
            "ProveConsistency",
            ok(c.prove_consistency(v1::ProveConsistencyRequest {
                first_size: 1,
                second_size: 0,
            })
            .await),
        ),
        ("Query", ok(c.query(v1::QueryRequest::default()).await)),
    ]
}

/// Starts HR and RS with one honest exchange in the log, calls every Audit
/// method as `who` (made by `make`), and checks the refusal; then checks
/// that the real auditor is still served.
async fn audit_denies(make: impl FnOnce(&Fed) -> Who, fragment: &str) {
    let fed = support::start(&["HR", "RS"]).await;
    harness::still_serves(&fed).await;
    let who = make(&fed);
    harness::checkpoint_covering_log(&fed).await;
    let before = Snapshot::settled(&fed).await;
    let outcomes = every_audit_method(&fed, &who).await;
    assert_all(outcomes, Code::PermissionDenied, fragment, &who);
    before.assert_unchanged(&fed).await;
    auditor_still_served(&fed).await;
    harness::still_serves(&fed).await;
}

/// The real auditor gets answers to every Audit method.
async fn auditor_still_served(fed: &Fed) {
    for (method, r) in every_audit_method(fed, &Who::Auditor("auditor")).await {
        if let Err(s) = r {
            panic!("{method} for the auditor: {s:?}");
        }
    }
}

#[tokio::test]
async fn audit_refuses_a_node_certificate_on_every_method() {
    audit_denies(
        |_| Who::Node("HR"),
        "the audit API is for auditors; this certificate is for node HR",
    )
    .await;
}

#[tokio::test]
async fn audit_refuses_an_agency_certificate_on_every_method() {
    audit_denies(
        |_| Who::Agency("RS/police"),
        "the audit API is for auditors; this certificate is for agency RS/police",
    )
    .await;
}

#[tokio::test]
async fn audit_refuses_the_broker_certificate_on_every_method() {
    audit_denies(
        |_| Who::Broker,
        "the audit API is for auditors; this certificate is for broker",
    )
    .await;
}

#[tokio::test]
async fn audit_refuses_an_auditor_the_directory_does_not_list() {
    audit_denies(
        |fed| {
            let id = harness::spiffe(fed, &Role::Auditor("mallory".into()));
            harness::mint(fed, Issuer::Root, &[&id])
        },
        "auditor mallory is not listed or is revoked",
    )
    .await;
}

#[tokio::test]
async fn audit_refuses_an_auditor_certificate_issued_by_a_national_ca() {
    audit_denies(
        |fed| {
            let id = harness::spiffe(fed, &Role::Auditor("auditor".into()));
            harness::mint(fed, Issuer::National("HR"), &[&id])
        },
        "certificate for auditor auditor is not issued directly by the federation root",
    )
    .await;
}

#[tokio::test]
async fn audit_refuses_a_revoked_auditor() {
    let mut fed = support::start(&["HR", "RS"]).await;
    fed.stop_broker().await.unwrap();
    support::edit_directory(&fed, |d| {
        for a in &mut d.auditors {
            a.revoked = true;
        }
    });
    fed.start_broker().await.unwrap();
    harness::checkpoint_covering_log(&fed).await;
    let who = Who::Auditor("auditor");
    let before = Snapshot::settled(&fed).await;
    let outcomes = every_audit_method(&fed, &who).await;
    assert_all(
        outcomes,
        Code::PermissionDenied,
        "auditor auditor is not listed or is revoked",
        &who,
    );
    before.assert_unchanged(&fed).await;
    harness::still_serves(&fed).await;
}

// ---------------------------------------------------------------------
// Agency API
// ---------------------------------------------------------------------

/// Real ids at node HR: a record in HR/missing-persons' inbox and one
/// HR/police sent.
struct AgencyMenu {
    inbox_id: String,
    sent_id: String,
}

async fn agency_menu(fed: &Fed) -> AgencyMenu {
    let received = support::send(
        fed,
        "BA/missing-persons",
        &["HR/missing-persons"],
        support::record("missing_person_trace"),
        support::humanitarian(),
    )
    .await;
    let sent = support::send(
        fed,
        "HR/police",
        &["RS/police"],
        support::record("wanted_alert"),
        support::police_to_third_country(),
    )
    .await;
    support::settled(fed, "BA/missing-persons", &received.envelope_id).await;
    support::settled(fed, "HR/police", &sent.envelope_id).await;
    AgencyMenu {
        inbox_id: received.envelope_id,
        sent_id: sent.envelope_id,
    }
}

/// Calls all nine Agency methods at node HR as `who`.
async fn every_agency_method(fed: &Fed, who: &Who, m: &AgencyMenu) -> Vec<Outcome> {
    let mut c = harness::agency_client_as(fed, who, "HR");
    vec![
        (
            "Send",
            ok(c.send(v1::SendRequest {
                recipients: vec!["RS/police".into()],
                record: Some(support::record("wanted_alert")),
                labels: Some(support::police_to_third_country()),
                ..Default::default()
            })
            .await),
        ),
        (
            "ListInbox",
            ok(c.list_inbox(v1::ListInboxRequest::default()).await),
        ),
        (
            "WatchInbox",
            ok(c.watch_inbox(v1::WatchInboxRequest {}).await),
        ),
        (
            "Fetch",
            ok(c.fetch(v1::FetchRequest {
                envelope_id: m.inbox_id.clone(),
            })
            .await),
        ),
        (
            "Status",
            ok(c.status(v1::StatusRequest {
                envelope_id: m.sent_id.clone(),
            })
            .await),
        ),
        ("ListSent", ok(c.list_sent(v1::ListSentRequest {}).await)),
        (
            "Forward",
            ok(c.forward(v1::ForwardRequest {
                envelope_id: m.inbox_id.clone(),
                recipients: vec!["RS/police".into()],
                labels: None,
                ..Default::default()
            })
            .await),
        ),
        (
            "RequestPermission",
            ok(c.request_permission(v1::RequestPermissionRequest {
                envelope_id: m.inbox_id.clone(),
                third_agencies: vec!["RS/police".into()],
                justification: "needed".into(),
                ..Default::default()
            })
            .await),
        ),
        (
            "GrantPermission",
            ok(c.grant_permission(v1::GrantPermissionRequest {
                request_envelope_id: m.inbox_id.clone(),
                conditions: String::new(),
                ..Default::default()
            })
            .await),
        ),
    ]
}

/// Starts HR, RS and BA with real records at HR, calls every Agency method
/// of node HR as `who` (made by `make`), and checks the refusal.
async fn agency_api_denies(make: impl FnOnce(&Fed) -> Who, fragment: &str) {
    let fed = support::start(&["HR", "RS", "BA"]).await;
    let menu = agency_menu(&fed).await;
    let who = make(&fed);
    let before = Snapshot::settled(&fed).await;
    let outcomes = every_agency_method(&fed, &who, &menu).await;
    assert_all(outcomes, Code::PermissionDenied, fragment, &who);
    before.assert_unchanged(&fed).await;
    harness::still_serves(&fed).await;
}

#[tokio::test]
async fn agency_api_refuses_its_own_nodes_certificate_on_every_method() {
    agency_api_denies(
        |_| Who::Node("HR"),
        "the agency API is for agencies of HR; this certificate is for node HR",
    )
    .await;
}

#[tokio::test]
async fn agency_api_refuses_another_nodes_certificate_on_every_method() {
    agency_api_denies(
        |_| Who::Node("RS"),
        "the agency API is for agencies of HR; this certificate is for node RS",
    )
    .await;
}

#[tokio::test]
async fn agency_api_refuses_the_auditor_certificate_on_every_method() {
    agency_api_denies(
        |_| Who::Auditor("auditor"),
        "the agency API is for agencies of HR; this certificate is for auditor auditor",
    )
    .await;
}

#[tokio::test]
async fn agency_api_refuses_the_broker_certificate_on_every_method() {
    agency_api_denies(
        |_| Who::Broker,
        "the agency API is for agencies of HR; this certificate is for broker",
    )
    .await;
}

#[tokio::test]
async fn agency_api_refuses_another_countrys_agency_on_every_method() {
    agency_api_denies(
        |_| Who::Agency("RS/police"),
        "agency RS/police belongs to RS; this node serves HR",
    )
    .await;
}

#[tokio::test]
async fn agency_api_refuses_an_own_agency_certificate_from_another_countrys_ca() {
    agency_api_denies(
        |fed| {
            let id = harness::spiffe(fed, &Role::Agency("HR/police".parse().unwrap()));
            harness::mint(fed, Issuer::National("RS"), &[&id])
        },
        "certificate for HR/police was not issued by the HR national CA",
    )
    .await;
}

#[tokio::test]
async fn agency_api_refuses_an_agency_certificate_issued_by_the_root() {
    agency_api_denies(
        |fed| {
            let id = harness::spiffe(fed, &Role::Agency("HR/police".parse().unwrap()));
            harness::mint(fed, Issuer::Root, &[&id])
        },
        "certificate for HR/police was not issued by the HR national CA",
    )
    .await;
}

#[tokio::test]
async fn agency_api_refuses_an_agency_the_directory_does_not_list() {
    agency_api_denies(
        |fed| {
            let id = harness::spiffe(fed, &Role::Agency("HR/customs".parse().unwrap()));
            harness::mint(fed, Issuer::National("HR"), &[&id])
        },
        "agency HR/customs is not in the directory",
    )
    .await;
}

#[tokio::test]
async fn agency_api_refuses_a_certificate_without_a_spiffe_id() {
    agency_api_denies(
        |fed| harness::mint(fed, Issuer::National("HR"), &[]),
        "certificate not accepted: certificate has no subject alternative name",
    )
    .await;
}

#[tokio::test]
async fn agency_api_refuses_a_revoked_agency_on_every_method() {
    let mut fed = support::start(&["HR", "RS", "BA"]).await;
    let menu = agency_menu(&fed).await;
    fed.stop_node(cc("HR")).await.unwrap();
    fed.stop_broker().await.unwrap();
    support::edit_directory(&fed, |d| {
        for a in &mut d.agencies {
            if a.id == "HR/prosecutor" {
                a.revoked = true;
            }
        }
    });
    fed.start_broker().await.unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    let who = Who::Agency("HR/prosecutor");
    let before = Snapshot::settled(&fed).await;
    let outcomes = every_agency_method(&fed, &who, &menu).await;
    assert_all(
        outcomes,
        Code::PermissionDenied,
        "agency HR/prosecutor is revoked",
        &who,
    );
    before.assert_unchanged(&fed).await;
    harness::still_serves(&fed).await;
}

#[tokio::test]
async fn a_node_refuses_outsiders_at_the_tls_handshake() {
    let fed = support::start(&["HR", "RS"]).await;
    let before = Snapshot::settled(&fed).await;
    assert_eq!(
        harness::handshake(&fed, None, Server::Node("HR")).await,
        harness::Handshake::Alert(rustls::AlertDescription::CertificateRequired)
    );
    let id = harness::spiffe(&fed, &Role::Agency("HR/police".parse().unwrap()));
    let stranger = harness::mint(&fed, Issuer::Stranger, &[&id]);
    assert_eq!(
        harness::handshake(&fed, Some(&stranger), Server::Node("HR")).await,
        harness::Handshake::Alert(rustls::AlertDescription::UnknownCA)
    );
    let err = harness::agency_client_as(&fed, &stranger, "HR")
        .list_inbox(v1::ListInboxRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unknown, "{}", err.message());
    assert!(
        err.message().contains("transport error"),
        "{}",
        err.message()
    );
    assert_eq!(
        harness::handshake(&fed, Some(&Who::Agency("HR/police")), Server::Node("HR")).await,
        harness::Handshake::Accepted
    );
    before.assert_unchanged(&fed).await;
    harness::still_serves(&fed).await;
}

// ---------------------------------------------------------------------
// Health and reflection
// ---------------------------------------------------------------------

/// The services any federation member may learn a server speaks: the
/// published protocols in proto/ and the standard gRPC ones.
const PUBLIC_SERVICES: [&str; 6] = [
    "casebridge.v1.Exchange",
    "casebridge.v1.Audit",
    "casebridge.v1.Agency",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

async fn listed_services(fed: &Fed, who: &Who, server: Server) -> Vec<String> {
    support::listed_services(harness::reflection_client_as(fed, who, server)).await
}

#[tokio::test]
async fn health_and_reflection_tell_any_member_only_public_facts() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    let fed = support::start(&["HR", "RS"]).await;
    let forged_node = {
        let id = harness::spiffe(&fed, &Role::Node(cc("HR")));
        harness::mint(&fed, Issuer::National("HR"), &[&id])
    };
    let before = Snapshot::settled(&fed).await;
    let members = [
        Who::Node("HR"),
        Who::Node("RS"),
        Who::Agency("HR/police"),
        Who::Agency("RS/police"),
        Who::Auditor("auditor"),
        Who::Broker,
        forged_node,
    ];
    for who in &members {
        for (server, service) in [
            (Server::Broker, "casebridge.v1.Exchange"),
            (Server::Broker, "casebridge.v1.Audit"),
            (Server::Node("HR"), "casebridge.v1.Agency"),
        ] {
            let status = harness::health_client_as(&fed, who, server)
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap_or_else(|e| panic!("health of {service} for {}: {e:?}", who.label()))
                .into_inner()
                .status;
            assert_eq!(status, ServingStatus::Serving as i32);
            // A service the server does not run is not guessed at either.
            harness::assert_status(
                harness::health_client_as(&fed, who, server)
                    .check(HealthCheckRequest {
                        service: "casebridge.v1.Internal".into(),
                    })
                    .await,
                Code::NotFound,
                "",
            );
        }
        for server in [Server::Broker, Server::Node("HR")] {
            let listed = listed_services(&fed, who, server).await;
            assert!(!listed.is_empty());
            for s in &listed {
                assert!(
                    PUBLIC_SERVICES.contains(&s.as_str()),
                    "{server:?} lists {s} to {}",
                    who.label()
                );
            }
        }
    }
    before.assert_unchanged(&fed).await;
    harness::still_serves(&fed).await;
}

// ---------------------------------------------------------------------
// Agency-level: one agency asking its own node for another's records
// ---------------------------------------------------------------------

/// MK/police sent an H2 report to RS/police, which asked MK/police for
/// permission to pass it on to AL/police. So RS/police holds the report in
/// its inbox and the request in its sent records; MK/police holds the
/// report in its sent records and the request in its inbox.
struct Victims {
    fed: Fed,
    report: String,
    request: String,
}

async fn victims() -> Victims {
    let fed = support::start(&["MK", "RS", "AL"]).await;
    let report = support::send(
        &fed,
        "MK/police",
        &["RS/police"],
        support::record("intelligence_report"),
        support::h2_labels(),
    )
    .await;
    support::assert_accepted(&report);
    support::settled(&fed, "MK/police", &report.envelope_id).await;
    let mut rs = fed.client("RS/police").unwrap();
    let request = rs
        .api
        .request_permission(v1::RequestPermissionRequest {
            envelope_id: report.envelope_id.clone(),
            third_agencies: vec!["AL/police".into()],
            justification: "the route continues through AL".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    support::assert_accepted(&request);
    support::settled(&fed, "RS/police", &request.envelope_id).await;
    Victims {
        fed,
        report: report.envelope_id,
        request: request.envelope_id,
    }
}

/// An Agency client of its own node for a real agency of the federation.
fn own_node(
    fed: &Fed,
    agency: &'static str,
) -> casebridge::daemon::rpc::agency_client::AgencyClient<tonic::transport::Channel> {
    fed.client(agency).unwrap().api
}

#[tokio::test]
async fn an_agency_lists_only_its_own_inbox() {
    let v = victims().await;
    let before = Snapshot::settled(&v.fed).await;
    for (agency, victim_holds) in [
        ("RS/border-police", &v.report),
        ("MK/prosecutor", &v.request),
    ] {
        let entries = own_node(&v.fed, agency)
            .list_inbox(v1::ListInboxRequest::default())
            .await
            .unwrap()
            .into_inner()
            .entries;
        assert!(entries.is_empty(), "{agency} sees {entries:?}");
        assert!(!victim_holds.is_empty());
    }
    // The victims do see theirs.
    assert_eq!(support::inbox(&v.fed, "RS/police").await.len(), 1);
    assert_eq!(support::inbox(&v.fed, "MK/police").await.len(), 1);
    before.assert_unchanged(&v.fed).await;
    harness::still_serves(&v.fed).await;
}

#[tokio::test]
async fn an_agency_cannot_fetch_another_agencys_record_by_its_real_id() {
    let v = victims().await;
    let before = Snapshot::settled(&v.fed).await;
    let r = own_node(&v.fed, "RS/border-police")
        .fetch(v1::FetchRequest {
            envelope_id: v.report.clone(),
        })
        .await;
    let s = harness::assert_status(
        r,
        Code::NotFound,
        &format!("{} is not in RS/border-police's inbox", v.report),
    );
    assert!(!s.message().contains("RS/police"), "{}", s.message());
    let r = own_node(&v.fed, "MK/prosecutor")
        .fetch(v1::FetchRequest {
            envelope_id: v.request.clone(),
        })
        .await;
    harness::assert_status(
        r,
        Code::NotFound,
        &format!("{} is not in MK/prosecutor's inbox", v.request),
    );
    before.assert_unchanged(&v.fed).await;
    harness::still_serves(&v.fed).await;
}

#[tokio::test]
async fn real_and_guessed_ids_of_others_get_the_same_answer() {
    let v = victims().await;
    let before = Snapshot::settled(&v.fed).await;
    let guessed = EnvelopeId::at(casebridge::daemon::clock::now_ms()).to_string();
    let mut c = own_node(&v.fed, "RS/border-police");
    let answer = |s: Status, id: &str| {
        assert_eq!(s.code(), Code::NotFound, "{}", s.message());
        s.message().replace(id, "<id>")
    };
    // Fetch and Status say the same for a real id of someone else's and
    // for an id nobody used: no oracle for which ids exist.
    let real = c
        .fetch(v1::FetchRequest {
            envelope_id: v.report.clone(),
        })
        .await
        .unwrap_err();
    let fake = c
        .fetch(v1::FetchRequest {
            envelope_id: guessed.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(answer(real, &v.report), answer(fake, &guessed));
    let real = c
        .status(v1::StatusRequest {
            envelope_id: v.request.clone(),
        })
        .await
        .unwrap_err();
    let fake = c
        .status(v1::StatusRequest {
            envelope_id: guessed.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(answer(real, &v.request), answer(fake, &guessed));
    // A malformed id is refused as such, and echoes at most itself.
    harness::assert_status(
        c.fetch(v1::FetchRequest {
            envelope_id: "../RS/police/*".into(),
        })
        .await,
        Code::InvalidArgument,
        "expected a UUID",
    );
    before.assert_unchanged(&v.fed).await;
    harness::still_serves(&v.fed).await;
}

#[tokio::test]
async fn an_agency_cannot_see_the_status_of_another_agencys_sent_record() {
    let v = victims().await;
    let before = Snapshot::settled(&v.fed).await;
    // RS/police sent the request; MK/police sent the report.
    for (agency, id) in [
        ("RS/border-police", &v.request),
        ("MK/prosecutor", &v.report),
    ] {
        let r = own_node(&v.fed, agency)
            .status(v1::StatusRequest {
                envelope_id: id.clone(),
            })
            .await;
        harness::assert_status(r, Code::NotFound, &format!("{agency} sent no record {id}"));
    }
    before.assert_unchanged(&v.fed).await;
    harness::still_serves(&v.fed).await;
}

#[tokio::test]
async fn an_agency_lists_only_what_it_sent() {
    let v = victims().await;
    let before = Snapshot::settled(&v.fed).await;
    for agency in ["RS/border-police", "MK/prosecutor", "MK/border-police"] {
        let sent = own_node(&v.fed, agency)
            .list_sent(v1::ListSentRequest {})
            .await
            .unwrap()
            .into_inner()
            .sent;
        assert!(sent.is_empty(), "{agency} sees {sent:?}");
    }
    let mine = own_node(&v.fed, "MK/police")
        .list_sent(v1::ListSentRequest {})
        .await
        .unwrap()
        .into_inner()
        .sent;
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].envelope_id, v.report);
    before.assert_unchanged(&v.fed).await;
    harness::still_serves(&v.fed).await;
}

#[tokio::test]
async fn an_agency_cannot_forward_another_agencys_record() {
    let v = victims().await;
    let before = Snapshot::settled(&v.fed).await;
    let r = own_node(&v.fed, "RS/border-police")
        .forward(v1::ForwardRequest {
            envelope_id: v.report.clone(),
            recipients: vec!["AL/police".into()],
            labels: None,
            ..Default::default()
        })
        .await;
    harness::assert_status(
        r,
        Code::NotFound,
        &format!("{} is not in RS/border-police's inbox", v.report),
    );
    // Nothing sealed, nothing reported: no audit event, no outbox entry.
    before.assert_unchanged(&v.fed).await;
    harness::still_serves(&v.fed).await;
}

#[tokio::test]
async fn an_agency_cannot_request_permission_for_another_agencys_record() {
    let v = victims().await;
    let before = Snapshot::settled(&v.fed).await;
    let r = own_node(&v.fed, "RS/border-police")
        .request_permission(v1::RequestPermissionRequest {
            envelope_id: v.report.clone(),
            third_agencies: vec!["AL/border-police".into()],
            justification: "mine now".into(),
            ..Default::default()
        })
        .await;
    harness::assert_status(
        r,
        Code::NotFound,
        &format!("{} is not in RS/border-police's inbox", v.report),
    );
    before.assert_unchanged(&v.fed).await;
    harness::still_serves(&v.fed).await;
}

#[tokio::test]
async fn an_agency_cannot_grant_a_permission_request_addressed_to_another_agency() {
    let v = victims().await;
    let before = Snapshot::settled(&v.fed).await;
    for agency in ["MK/prosecutor", "MK/border-police"] {
        let r = own_node(&v.fed, agency)
            .grant_permission(v1::GrantPermissionRequest {
                request_envelope_id: v.request.clone(),
                conditions: "granted by someone else".into(),
                ..Default::default()
            })
            .await;
        harness::assert_status(
            r,
            Code::NotFound,
            &format!("{} is not in {agency}'s inbox", v.request),
        );
    }
    before.assert_unchanged(&v.fed).await;
    // The real originator still can; the broker records the grant.
    let grant = own_node(&v.fed, "MK/police")
        .grant_permission(v1::GrantPermissionRequest {
            request_envelope_id: v.request.clone(),
            conditions: "H2 stays".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    support::assert_accepted(&grant);
    harness::still_serves(&v.fed).await;
}

#[tokio::test]
async fn an_agency_cannot_reply_in_the_thread_of_another_agencys_record() {
    let v = victims().await;
    let before = Snapshot::settled(&v.fed).await;
    for (agency, id) in [
        ("RS/border-police", &v.report),
        ("RS/border-police", &v.request),
    ] {
        let mut l = support::h2_labels();
        l.in_reply_to.clone_from(id);
        let r = own_node(&v.fed, agency)
            .send(v1::SendRequest {
                recipients: vec!["MK/police".into()],
                record: Some(support::record("intelligence_report")),
                labels: Some(l),
                ..Default::default()
            })
            .await;
        harness::assert_status(
            r,
            Code::InvalidArgument,
            &format!("in_reply_to {id}: no such record in {agency}'s inbox or sent records"),
        );
    }
    before.assert_unchanged(&v.fed).await;
    harness::still_serves(&v.fed).await;
}

#[tokio::test]
async fn an_agency_watching_its_inbox_sees_only_its_own_entries() {
    let v = victims().await;
    let mut watcher = own_node(&v.fed, "RS/border-police")
        .watch_inbox(v1::WatchInboxRequest {})
        .await
        .unwrap()
        .into_inner();
    // A new record for RS/police, then one for RS/border-police: the
    // watcher's first entry must be its own, the second never comes.
    let theirs = support::send(
        &v.fed,
        "MK/police",
        &["RS/police"],
        support::record("intelligence_report"),
        support::h2_labels(),
    )
    .await;
    support::settled(&v.fed, "MK/police", &theirs.envelope_id).await;
    let mine = support::send(
        &v.fed,
        "MK/border-police",
        &["RS/border-police"],
        support::record("intelligence_report"),
        support::h2_labels(),
    )
    .await;
    support::assert_accepted(&mine);
    let first = watcher.message().await.unwrap().unwrap();
    assert_eq!(first.envelope_id, mine.envelope_id);
    assert_eq!(first.sender_agency, "MK/border-police");
    harness::still_serves(&v.fed).await;
}

#[tokio::test]
async fn an_inbox_cursor_from_another_agency_reveals_nothing() {
    let v = victims().await;
    let before = Snapshot::settled(&v.fed).await;
    let entries = own_node(&v.fed, "RS/border-police")
        .list_inbox(v1::ListInboxRequest {
            after: v.report.clone(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(entries.is_empty(), "{entries:?}");
    // Nor does the smallest cursor.
    let entries = own_node(&v.fed, "RS/border-police")
        .list_inbox(v1::ListInboxRequest {
            after: "00000000-0000-0000-0000-000000000000".into(),
            limit: 10_000,
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(entries.is_empty(), "{entries:?}");
    before.assert_unchanged(&v.fed).await;
    harness::still_serves(&v.fed).await;
}

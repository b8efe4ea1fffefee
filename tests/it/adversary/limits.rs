//! Adversarial cases: limits. A node that reports refusals it may not
//! report or floods the audit log with them, a forged sender that would be
//! attributed to the country it claims, a log of maximal leaves that the
//! auditor commands must still read, and per-peer limits on the servers.

use std::time::Duration;

use casebridge::daemon::rpc::audit_client::AuditClient;
use casebridge::daemon::tls::Identity;
use casebridge::protocol::audit::{MAX_RESPONSE_BYTES, PAGE_BYTES};
use casebridge::protocol::envelope::{self, SealInput};
use casebridge::protocol::ids::AgencyId;
use casebridge::protocol::leaf::MAX_LEAF_BYTES;
use casebridge::protocol::proto::v1;
use prost::Message as _;
use tonic::Code;
use v1::audit_event::Event;

use super::harness::{Who, audit_client_as};
use crate::support::*;

const DAY: i64 = 86_400_000;

/// A refusal report as an honest node HR makes it for HR/police → BA/police.
fn honest_report() -> v1::RefusalReport {
    v1::RefusalReport {
        transfer: Some(v1::EnvelopeSummary {
            sender_node: "HR".into(),
            sender_agency: "HR/police".into(),
            recipients: vec!["BA/police".into()],
            kind: v1::RecordKind::WantedAlert as i32,
            declared_categories: vec![v1::DataCategory::Identity as i32],
            purpose: v1::Purpose::InvestigationOther as i32,
            legal_basis: v1::LegalBasis::SpecificSituationDerogation as i32,
            handling: v1::HandlingCode::H0 as i32,
            classification: v1::Classification::Restricted as i32,
            priority: v1::Priority::Routine as i32,
            case_reference: "TEST-CASE-1".into(),
            ..Default::default()
        }),
        policy_bundle_hash: "0123abcd".into(),
        policy_explanation: "refused for BA/police: outbound \"no-third-country\"".into(),
    }
}

/// Sends `report` as node `node` and checks the exact refusal: code, the
/// field and limit named, and no audit event.
async fn assert_report_refused(
    fed: &Fed,
    node: &str,
    report: v1::RefusalReport,
    code: Code,
    says: &[&str],
) {
    let before = audit(fed).await.len();
    let err = exchange_as_node(fed, node)
        .report_refusal(report)
        .await
        .unwrap_err();
    assert_eq!(err.code(), code, "{}", err.message());
    for s in says {
        assert!(err.message().contains(s), "{:?} lacks {s:?}", err.message());
    }
    assert!(
        err.message().len() < 512,
        "the message quotes no input whole"
    );
    assert_eq!(
        audit(fed).await.len(),
        before,
        "a refused report leaves no event"
    );
    still_serves(fed, node).await;
}

/// An honest call of `node` still works.
async fn still_serves(fed: &Fed, node: &str) {
    exchange_as_node(fed, node)
        .get_directory(v1::GetDirectoryRequest {})
        .await
        .expect("the broker still serves");
}

/// The federation's auditor at the broker, with the largest answer the
/// audit API promises as its decoding limit.
fn auditor(fed: &Fed) -> AuditClient<tonic::transport::Channel> {
    audit_client_as(fed, &Who::Auditor("auditor")).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

fn auditor_profile(fed: &Fed) -> std::path::PathBuf {
    fed.fed.auditor_profiles[0].1.clone()
}

/// Verify, query and report, as an auditor runs them, all read the log.
async fn auditor_commands_read_the_log(fed: &Fed) {
    let size = checkpoint_now(fed).await;
    let profile = auditor_profile(fed);
    let report = casebridge::tools::audit::verify(&profile, None)
        .await
        .expect("audit verify");
    assert_eq!(report.size(), size);
    let q = casebridge::tools::audit::query(&profile, None, &Default::default())
        .await
        .expect("audit query");
    assert!(!q.entries.is_empty());
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("report.html");
    casebridge::tools::audit::report(&profile, None, &path)
        .await
        .expect("audit report");
}

// ---- A: refusal reports --------------------------------------------------------

#[tokio::test]
async fn huge_refusal_reports_are_refused_and_the_log_stays_readable() {
    let fed = start(&["HR", "BA"]).await;
    for _ in 0..2 {
        let mut r = honest_report();
        r.policy_explanation = "x".repeat(20 << 20);
        assert_report_refused(
            &fed,
            "HR",
            r,
            Code::InvalidArgument,
            &["policy_explanation", "20971520 bytes", "limit is 16384"],
        )
        .await;
    }
    auditor_commands_read_the_log(&fed).await;
    let sent = send(
        &fed,
        "HR/police",
        &["BA/police"],
        record("wanted_alert"),
        police_to_third_country(),
    )
    .await;
    settled(&fed, "HR/police", &sent.envelope_id).await;
}

#[tokio::test]
async fn an_honest_refusal_report_is_logged_with_its_explanation_once() {
    let fed = start(&["HR", "BA"]).await;
    let before = audit(&fed).await.len();
    let report = honest_report();
    let explanation = report.policy_explanation.clone();
    exchange_as_node(&fed, "HR")
        .report_refusal(report)
        .await
        .expect("an honest report is taken");
    let events = audit(&fed).await;
    assert_eq!(events.len(), before + 1);
    match &events[before].event {
        Some(Event::SubmissionRefused(r)) => {
            assert_eq!(r.submitting_node, "HR");
            assert_eq!(r.code, v1::RefusalCode::Policy as i32);
            assert_eq!(r.policy_explanation, explanation);
            assert_eq!(r.reason, "refused by node HR before sealing");
            let t = r.envelope.as_ref().unwrap();
            assert!(t.envelope_id.is_empty(), "nothing was sealed");
            assert_eq!(t.sender_agency, "HR/police");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refusal_report_for_an_agency_not_in_the_directory_is_refused() {
    let fed = start(&["HR", "BA"]).await;
    let mut r = honest_report();
    r.transfer.as_mut().unwrap().sender_agency = "HR/ghost".into();
    assert_report_refused(
        &fed,
        "HR",
        r,
        Code::PermissionDenied,
        &["transfer.sender_agency", "HR/ghost is not in the directory"],
    )
    .await;
}

#[tokio::test]
async fn a_refusal_report_for_a_revoked_agency_is_refused() {
    let mut fed = create(&["HR", "BA"]).await;
    edit_directory(&fed, |d| {
        for a in &mut d.agencies {
            if a.id == "HR/police" {
                a.revoked = true;
            }
        }
    });
    start_all(&mut fed).await;
    assert_report_refused(
        &fed,
        "HR",
        honest_report(),
        Code::PermissionDenied,
        &["transfer.sender_agency", "HR/police is revoked"],
    )
    .await;
}

#[tokio::test]
async fn a_refusal_report_for_another_country_is_refused() {
    let fed = start(&["HR", "BA"]).await;
    assert_report_refused(
        &fed,
        "BA",
        honest_report(),
        Code::PermissionDenied,
        &[
            "transfer.sender_node",
            "node BA reports only its own refusals",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_refusal_report_naming_another_tenants_envelope_is_refused() {
    let fed = start(&["HR", "BA"]).await;
    // A real envelope of BA's, accepted and delivered.
    let sent = send(
        &fed,
        "BA/police",
        &["HR/police"],
        record("wanted_alert"),
        labels(
            v1::Purpose::InvestigationOther,
            v1::LegalBasis::RegionalPoliceConvention,
            v1::HandlingCode::H0,
        ),
    )
    .await;
    settled(&fed, "BA/police", &sent.envelope_id).await;
    let id: casebridge::protocol::ids::EnvelopeId = sent.envelope_id.parse().unwrap();
    let mut r = honest_report();
    r.transfer.as_mut().unwrap().envelope_id = id.as_bytes().to_vec();
    assert_report_refused(
        &fed,
        "HR",
        r,
        Code::InvalidArgument,
        &["transfer.envelope_id", "must be empty"],
    )
    .await;
}

#[tokio::test]
async fn a_refusal_report_with_unknown_or_too_many_recipients_is_refused() {
    let fed = start(&["HR", "BA"]).await;
    let mut r = honest_report();
    r.transfer.as_mut().unwrap().recipients = vec!["BA/police".into(), "BA/ghost".into()];
    assert_report_refused(
        &fed,
        "HR",
        r,
        Code::InvalidArgument,
        &["transfer.recipients[1]", "BA/ghost is not in the directory"],
    )
    .await;

    let mut r = honest_report();
    r.transfer.as_mut().unwrap().recipients = vec!["BA/police".into(); 300_003];
    let listed = directory(&fed).agencies().count();
    assert_report_refused(
        &fed,
        "HR",
        r,
        Code::InvalidArgument,
        &[
            "transfer.recipients",
            "300003 given",
            &format!("between 1 and {listed}"),
        ],
    )
    .await;

    let mut r = honest_report();
    r.transfer.as_mut().unwrap().recipients = vec!["BA/police".into(), "BA/police".into()];
    assert_report_refused(
        &fed,
        "HR",
        r,
        Code::InvalidArgument,
        &["transfer.recipients[1]", "listed twice"],
    )
    .await;
}

#[tokio::test]
async fn a_refusal_report_with_unbounded_labels_is_refused() {
    let fed = start(&["HR", "BA"]).await;
    let mut r = honest_report();
    r.transfer.as_mut().unwrap().case_reference = "C".repeat(5 << 20);
    assert_report_refused(
        &fed,
        "HR",
        r,
        Code::InvalidArgument,
        &["transfer.case_reference", "5242880 bytes", "limit is 128"],
    )
    .await;

    let mut r = honest_report();
    r.transfer.as_mut().unwrap().declared_categories = vec![1; 300_003];
    assert_report_refused(
        &fed,
        "HR",
        r,
        Code::InvalidArgument,
        &["transfer.declared_categories[1]", "listed twice"],
    )
    .await;

    let mut r = honest_report();
    r.policy_bundle_hash = "h".repeat(1 << 20);
    assert_report_refused(
        &fed,
        "HR",
        r,
        Code::InvalidArgument,
        &["policy_bundle_hash", "at most 128"],
    )
    .await;

    let mut r = honest_report();
    r.transfer.as_mut().unwrap().kind = 9999;
    assert_report_refused(
        &fed,
        "HR",
        r,
        Code::InvalidArgument,
        &["transfer.kind", "not a known value"],
    )
    .await;
}

// ---- B: refusals of bad submissions ---------------------------------------------

/// Node RS submits an envelope whose header claims HR/police sent it, signed
/// with RS's own key: a forged sender.
fn forged_by_rs(fed: &Fed) -> v1::Envelope {
    let now = casebridge::daemon::clock::now_ms();
    let sender: AgencyId = "HR/police".parse().unwrap();
    let recipients: Vec<AgencyId> = vec!["BA/police".parse().unwrap()];
    let rec = record("wanted_alert");
    let input = SealInput {
        sender: &sender,
        recipients: &recipients,
        record: &rec,
        labels: police_to_third_country(),
        created_at_ms: now,
        expires_at_ms: now + DAY,
        onward_of: None,
        permission: None,
    };
    envelope::seal(&input, &node_signing_key(fed, "RS"), &directory(fed))
        .unwrap()
        .envelope
}

#[tokio::test]
async fn a_forged_sender_is_attributed_to_the_node_that_submitted_it() {
    let fed = start(&["HR", "RS", "BA"]).await;
    let env = forged_by_rs(&fed);
    let header_sha = envelope::sha256(&env.header).to_vec();
    let before = audit(&fed).await.len();
    let err = exchange_as_node(&fed, "RS")
        .submit(v1::SubmitRequest {
            envelope: Some(env),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(err.message().contains("signature does not verify"));
    let events = audit(&fed).await;
    assert_eq!(events.len(), before + 1, "only the refusal");
    let refusal = match &events[before].event {
        Some(Event::SubmissionRefused(r)) => r.clone(),
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(refusal.submitting_node, "RS");
    assert_eq!(refusal.code, v1::RefusalCode::BadSignature as i32);
    assert_eq!(
        refusal.envelope, None,
        "nothing the unverified header claims is recorded"
    );
    assert_eq!(refusal.unverified_header_sha256, header_sha);

    // The auditor's query finds the refusal under RS, not under HR.
    checkpoint_now(&fed).await;
    let query = |country: &str| {
        let mut a = auditor(&fed);
        let country = country.to_string();
        async move {
            a.query(v1::QueryRequest {
                country,
                decision: "refused".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .entries
            .into_iter()
            .map(|e| e.index)
            .collect::<Vec<_>>()
        }
    };
    let index = before as u64;
    assert!(query("RS").await.contains(&index));
    assert!(!query("HR").await.contains(&index));
    assert!(!query("BA").await.contains(&index));

    // The report counts it for no HR agency.
    let mut summary = casebridge::tools::audit::LogSummary::default();
    for (i, e) in events.iter().enumerate() {
        summary.add(i as u64, e);
    }
    assert!(
        summary
            .agencies
            .get("HR/police")
            .is_none_or(|s| s.refusals.is_empty()),
        "no refusal counted for HR/police"
    );
    assert!(summary.refused_flows.is_empty(), "no HR → BA refused flow");
    let row = casebridge::tools::audit::row(index, &events[before]);
    assert_eq!(row.sender, "node RS");
    still_serves(&fed, "RS").await;
}

#[tokio::test]
async fn consumers_attribute_old_unverified_refusals_to_the_submitting_node() {
    // A log written before refusals kept only verified headers holds the
    // claims; the query and the report read them by the submitting node.
    let claimed = v1::SubmissionRefused {
        submitting_node: "RS".into(),
        code: v1::RefusalCode::BadSignature as i32,
        reason: "signature does not verify with node HR's signing key".into(),
        envelope: Some(v1::EnvelopeSummary {
            sender_node: "HR".into(),
            sender_agency: "HR/police".into(),
            recipients: vec!["BA/police".into()],
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(casebridge::protocol::audit::attributed(&claimed), None);
    let event = v1::AuditEvent {
        at_ms: 1,
        event: Some(Event::SubmissionRefused(claimed)),
    };
    let mut summary = casebridge::tools::audit::LogSummary::default();
    summary.add(0, &event);
    assert!(summary.agencies.is_empty() && summary.refused_flows.is_empty());
    assert_eq!(summary.unattributed.len(), 1);
    assert_eq!(casebridge::tools::audit::row(0, &event).sender, "node RS");
}

// ---- C: leaf cap, paging, and the auditor commands -------------------------------

#[tokio::test]
async fn a_log_of_maximal_leaves_is_read_by_every_auditor_command() {
    let fed = start(&["HR", "BA"]).await;
    let store = fed.broker().unwrap().store.clone();
    let n = 70u64;
    for i in 0..n {
        let event = v1::AuditEvent {
            at_ms: casebridge::daemon::clock::now_ms(),
            event: Some(Event::SubmissionRefused(v1::SubmissionRefused {
                submitting_node: "HR".into(),
                code: v1::RefusalCode::Malformed as i32,
                reason: format!("{i} {}", "r".repeat(1 << 20)),
                ..Default::default()
            })),
        };
        store.append(event).await.unwrap();
    }
    let len = store.audit_len().await.unwrap();
    for leaf in store.leaves(0, len).await.unwrap() {
        assert!(leaf.len() <= MAX_LEAF_BYTES, "leaf of {} bytes", leaf.len());
    }

    // GetEntries pages by bytes: a page stops short and fits the client.
    checkpoint_now(&fed).await;
    let page = auditor(&fed)
        .get_entries(v1::GetEntriesRequest {
            start: 0,
            end: len,
            leaves_only: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!page.entries.is_empty() && (page.entries.len() as u64) < len);
    assert!(page.encoded_len() <= PAGE_BYTES);

    auditor_commands_read_the_log(&fed).await;

    // A query over them is cut by bytes, says so, and can be followed.
    let profile = auditor_profile(&fed);
    let mut args = casebridge::tools::audit::QueryArgs {
        decision: Some("refused".into()),
        ..Default::default()
    };
    let mut found = 0;
    let mut cuts = 0;
    loop {
        let q = casebridge::tools::audit::query(&profile, None, &args)
            .await
            .unwrap();
        found += q.entries.len() as u64;
        match &q.cut {
            Some((reason, next)) => {
                cuts += 1;
                assert!(reason.contains("bytes of entries"), "{reason}");
                assert!(q.cut_notice().unwrap().contains("--page-token"));
                assert!(*next > 0);
                args.page_token = q.next_page_token.clone();
            }
            None => break,
        }
        assert!(cuts < 10, "the cursor moves on");
    }
    assert_eq!(found, n);
    assert!(cuts >= 1, "the result was cut, and said so");
    still_serves(&fed, "HR").await;
}

#[tokio::test]
async fn a_query_limit_is_reported_not_applied_silently() {
    let fed = start(&["HR", "BA"]).await;
    let mut c = exchange_as_node(&fed, "HR");
    for _ in 0..3 {
        c.report_refusal(honest_report()).await.unwrap();
    }
    checkpoint_now(&fed).await;
    let q = auditor(&fed)
        .query(v1::QueryRequest {
            decision: "refused".into(),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(q.entries.len(), 2);
    assert!(q.truncated);
    assert!(
        q.truncated_reason.contains("limit of 2 entries"),
        "{}",
        q.truncated_reason
    );
    assert!(
        q.next_index > q.entries[1].index,
        "continues after what it gave"
    );
    let rest = auditor(&fed)
        .query(v1::QueryRequest {
            decision: "refused".into(),
            start: q.next_index,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.entries.len(), 1);
    assert!(!rest.truncated && rest.truncated_reason.is_empty());
    assert_eq!(
        rest.next_index,
        fed.broker().unwrap().store.audit_len().await.unwrap()
    );
}

// ---- D: per-peer limits -----------------------------------------------------------

#[tokio::test]
async fn a_new_delivery_stream_replaces_the_old_one() {
    let mut fed = start(&["HR", "BA"]).await;
    // BA's node is down; a hostile holder of its certificate opens streams.
    fed.stop_node(cc("BA")).await.unwrap();
    let mut old = exchange_as_node(&fed, "BA")
        .receive(v1::ReceiveRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut new = exchange_as_node(&fed, "BA")
        .receive(v1::ReceiveRequest::default())
        .await
        .unwrap()
        .into_inner();
    let sent = send(
        &fed,
        "HR/police",
        &["BA/police"],
        record("wanted_alert"),
        police_to_third_country(),
    )
    .await;
    // The safety net bounds a broken build; it measures nothing.
    let bound = Duration::from_secs(30);
    let ended = tokio::time::timeout(bound, old.message())
        .await
        .expect("the old stream ends");
    let status = ended.expect_err("the old stream ends with a status");
    assert_eq!(status.code(), Code::Aborted);
    assert!(
        status
            .message()
            .contains("a newer delivery stream of node BA replaced this one")
    );
    let delivery = tokio::time::timeout(bound, new.message())
        .await
        .expect("the new stream delivers")
        .unwrap()
        .unwrap();
    let Some(v1::delivery::Item::Envelope(env)) = delivery.item else {
        panic!("expected an envelope")
    };
    let h = v1::EnvelopeHeader::decode(env.header.as_slice()).unwrap();
    assert_eq!(
        casebridge::protocol::ids::EnvelopeId::from_bytes(&h.envelope_id)
            .unwrap()
            .to_string(),
        sent.envelope_id
    );
    // The node comes back: its own stream replaces the hostile one and the
    // record is delivered.
    drop(new);
    fed.start_node(cc("BA")).await.unwrap();
    settled(&fed, "HR/police", &sent.envelope_id).await;
}

/// A node holds at most one delivery stream of each kind: a new immediate
/// stream ends the older immediate one and leaves the main stream alone;
/// a kind of stream the broker does not know is refused.
#[tokio::test]
async fn a_new_immediate_stream_replaces_only_the_old_immediate_one() {
    let mut fed = start(&["HR", "BA"]).await;
    fed.stop_node(cc("BA")).await.unwrap();
    let mut ba = exchange_as_node(&fed, "BA");
    let immediate = v1::ReceiveRequest {
        lanes: v1::DeliveryLanes::Immediate as i32,
    };
    let mut main = ba
        .receive(v1::ReceiveRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut old = ba.receive(immediate).await.unwrap().into_inner();
    let _new = ba.receive(immediate).await.unwrap().into_inner();
    let bound = Duration::from_secs(30);
    let ended = tokio::time::timeout(bound, old.message())
        .await
        .expect("the old immediate stream ends");
    assert_eq!(ended.expect_err("ends with a status").code(), Code::Aborted);
    // The main stream is still the node's: it delivers what comes next.
    let sent = send(
        &fed,
        "HR/police",
        &["BA/police"],
        record("wanted_alert"),
        police_to_third_country(),
    )
    .await;
    let delivery = tokio::time::timeout(bound, main.message())
        .await
        .expect("the main stream delivers")
        .unwrap()
        .unwrap();
    let Some(v1::delivery::Item::Envelope(env)) = delivery.item else {
        panic!("expected an envelope")
    };
    let h = v1::EnvelopeHeader::decode(env.header.as_slice()).unwrap();
    assert_eq!(
        casebridge::protocol::ids::EnvelopeId::from_bytes(&h.envelope_id)
            .unwrap()
            .to_string(),
        sent.envelope_id
    );
    let unknown = ba
        .receive(v1::ReceiveRequest { lanes: 99 })
        .await
        .map(drop)
        .expect_err("an unknown kind of stream is refused");
    assert_eq!(unknown.code(), Code::InvalidArgument);
}

/// The SETTINGS_MAX_CONCURRENT_STREAMS a server advertises to a client
/// holding `cert`/`key`, read off a raw HTTP/2 connection.
async fn advertised_streams(
    fed: &Fed,
    addr: std::net::SocketAddr,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> usize {
    let id = Identity::load(cert, key).unwrap();
    let root = casebridge::daemon::tls::load_certs(&fed.broker_config.tls.root)
        .unwrap()
        .remove(0);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(casebridge::daemon::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
            .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    // Frames are sent from static slices, so the client needs no buffer type
    // of its own.
    let (mut send, conn) = h2::client::Builder::new()
        .handshake::<_, &'static [u8]>(tls)
        .await
        .unwrap();
    let driver = tokio::spawn(conn);
    // The server's SETTINGS come first; once an answer arrives, they were
    // read.
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("https://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (answer, mut body) = send.send_request(req, false).unwrap();
    // An empty HealthCheckRequest: a 5-byte gRPC frame header of zeros.
    body.send_data(&[0, 0, 0, 0, 0][..], true).unwrap();
    answer.await.unwrap();
    let n = send.current_max_send_streams();
    driver.abort();
    n
}

#[tokio::test]
async fn servers_limit_concurrent_requests_per_connection() {
    let fed = start(&["HR", "BA"]).await;
    let want = casebridge::daemon::tls::MAX_CONCURRENT_STREAMS as usize;
    let node = &fed.node_configs[&cc("HR")];
    assert_eq!(
        advertised_streams(&fed, fed.broker_addr, &node.tls.cert, &node.tls.key).await,
        want,
        "the broker"
    );
    let agency = fed.agency_profile(&"HR/police".parse().unwrap()).unwrap();
    assert_eq!(
        advertised_streams(
            &fed,
            fed.node_addr(cc("HR")).unwrap(),
            &agency.tls.cert,
            &agency.tls.key
        )
        .await,
        want,
        "the node"
    );
    still_serves(&fed, "HR").await;
}

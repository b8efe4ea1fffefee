//! Handling codes after delivery: H2 records are passed on only with the
//! originator's permission, asked and granted through casebridge itself and
//! checked by the broker.

use casebridge::protocol::envelope::{self, SealInput};
use casebridge::protocol::ids::{AgencyId, EnvelopeId};
use casebridge::protocol::proto::v1;
use tonic::Code;
use v1::audit_event::Event;

use crate::support::*;

/// Seals an envelope as node `node` with an explicit onward or permission
/// field, bypassing the node's own checks, as a misbehaving node could. A
/// record passed on names `MK/police`, the provider in these tests.
fn seal_raw(
    fed: &Fed,
    node: &str,
    from: &str,
    to: &str,
    record: v1::CaseRecord,
    onward_of: Option<EnvelopeId>,
    permission: Option<v1::PermissionScope>,
) -> v1::Envelope {
    let sender: AgencyId = from.parse().unwrap();
    let recipients = [to.parse().unwrap()];
    let now = casebridge::daemon::clock::now_ms();
    let mut labels = h2_labels();
    if onward_of.is_some() {
        labels.provider = "MK/police".into();
    }
    let input = SealInput {
        sender: &sender,
        recipients: &recipients,
        record: &record,
        labels,
        created_at_ms: now,
        expires_at_ms: now + 86_400_000,
        onward_of,
        permission,
    };
    envelope::seal(&input, &node_signing_key(fed, node), &directory(fed))
        .unwrap()
        .envelope
}

/// Submits `env` as node `node`, bypassing its own checks, and expects the
/// broker to refuse it with a message containing `says`.
async fn submit_refused(fed: &Fed, node: &str, env: v1::Envelope, says: &str) {
    let err = exchange_as_node(fed, node)
        .submit(v1::SubmitRequest {
            envelope: Some(env),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains(says), "{}", err.message());
}

#[tokio::test]
async fn h2_onward_transfer_needs_the_originators_permission() {
    let fed = start(&["MK", "RS", "AL", "ME", "BA"]).await;
    let report = send(
        &fed,
        "MK/police",
        &["RS/police"],
        record("intelligence_report"),
        h2_labels(),
    )
    .await;
    settled(&fed, "MK/police", &report.envelope_id).await;
    let entry = &inbox(&fed, "RS/police").await[0];
    let r = entry.restrictions.as_ref().unwrap();
    assert!(
        r.no_onward_transfer && r.notices[0].contains("MK/police"),
        "{r:?}"
    );

    // The RS node refuses locally with the explanation: nothing leaves.
    let before = audit(&fed).await.len();
    let mut rs = fed.client("RS/police").unwrap();
    let err = rs
        .api
        .forward(forward(&report.envelope_id, "AL/police"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(
        err.message().contains("h2-onward-needs-permission"),
        "{}",
        err.message()
    );
    // Nothing was sealed or sent, but the refusal and its explanation reach
    // the audit log as the node reports them.
    let reported = until("the reported refusal", || async {
        let events = audit(&fed).await;
        (events.len() > before).then(|| events[before].clone())
    })
    .await;
    match reported.event {
        Some(Event::SubmissionRefused(r)) => {
            assert_eq!(r.submitting_node, "RS");
            assert!(
                r.reason.contains("before sealing")
                    && r.policy_explanation.contains("h2-onward-needs-permission"),
                "{} / {}",
                r.reason,
                r.policy_explanation
            );
            let t = r.envelope.unwrap();
            assert!(
                t.envelope_id.is_empty() && t.ciphertext_sha256.is_empty(),
                "nothing was sealed"
            );
            assert_eq!(t.recipients, vec!["AL/police".to_string()]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(audit(&fed).await.len(), before + 1);

    // The broker refuses it too, should a node skip its own check.
    let original: EnvelopeId = report.envelope_id.parse().unwrap();
    let env = seal_raw(
        &fed,
        "RS",
        "RS/police",
        "AL/police",
        record("intelligence_report"),
        Some(original),
        None,
    );
    submit_refused(&fed, "RS", env, "h2-onward-needs-permission").await;
    let refusal = audit(&fed).await.pop().unwrap();
    match refusal.event {
        Some(Event::SubmissionRefused(r)) => {
            assert_eq!(r.code, v1::RefusalCode::Policy as i32);
            assert!(!r.policy_bundle_hash.is_empty());
            assert!(r.policy_explanation.contains("h2-onward-needs-permission"));
        }
        other => panic!("{other:?}"),
    }

    // Nobody but the originator can grant.
    let scope = v1::PermissionScope {
        original_envelope_id: original.as_bytes().to_vec(),
        grantee: "RS/police".into(),
        third_agencies: vec!["AL/police".into()],
    };
    let fake_grant = v1::CaseRecord {
        body: Some(v1::case_record::Body::PermissionGrant(
            v1::PermissionGrant {
                conditions: String::new(),
            },
        )),
    };
    let env = seal_raw(
        &fed,
        "BA",
        "BA/police",
        "RS/police",
        fake_grant,
        None,
        Some(scope),
    );
    submit_refused(&fed, "BA", env, "only the provider of record").await;

    // Ask, and the originator grants.
    let req = rs
        .api
        .request_permission(v1::RequestPermissionRequest {
            envelope_id: report.envelope_id.clone(),
            third_agencies: vec!["AL/police".into()],
            justification: "route continues through AL".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(req.state, v1::SendState::Accepted as i32, "{}", req.detail);
    settled(&fed, "RS/police", &req.envelope_id).await;
    let asked = fetch(&fed, "MK/police", &req.envelope_id)
        .await
        .unwrap()
        .entry
        .unwrap();
    assert_eq!(asked.kind, v1::RecordKind::PermissionRequest as i32);
    assert_eq!(
        asked.permission.as_ref().unwrap().third_agencies,
        vec!["AL/police".to_string()]
    );

    let mut mk = fed.client("MK/police").unwrap();
    let grant = mk
        .api
        .grant_permission(v1::GrantPermissionRequest {
            request_envelope_id: req.envelope_id,
            conditions: "H2 stays".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_accepted(&grant);
    settled(&fed, "MK/police", &grant.envelope_id).await;

    // Now it goes through, to AL and only to AL.
    let onward = rs
        .api
        .forward(forward(&report.envelope_id, "AL/police"))
        .await
        .unwrap()
        .into_inner();
    assert_accepted(&onward);
    settled(&fed, "RS/police", &onward.envelope_id).await;
    let got = fetch(&fed, "AL/police", &onward.envelope_id)
        .await
        .unwrap()
        .entry
        .unwrap();
    assert_eq!(got.onward_of, report.envelope_id);
    assert_eq!(
        got.labels.unwrap().handling,
        v1::HandlingCode::H2 as i32,
        "H2 travels with the record"
    );
    let err = rs
        .api
        .forward(forward(&report.envelope_id, "ME/police"))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::PermissionDenied,
        "the grant covers AL only"
    );
}

#[tokio::test]
async fn only_a_recipient_can_pass_a_record_on() {
    let fed = start(&["MK", "RS", "AL"]).await;
    let report = send(
        &fed,
        "MK/police",
        &["RS/police"],
        record("intelligence_report"),
        h2_labels(),
    )
    .await;
    settled(&fed, "MK/police", &report.envelope_id).await;
    let original: EnvelopeId = report.envelope_id.parse().unwrap();
    // AL never received it, yet claims to pass it on.
    let env = seal_raw(
        &fed,
        "AL",
        "AL/police",
        "RS/prosecutor",
        record("intelligence_report"),
        Some(original),
        None,
    );
    submit_refused(&fed, "AL", env, "did not receive").await;
    // And the agency API will not forward what is not in the inbox.
    let mut al = fed.client("AL/police").unwrap();
    let err = al
        .api
        .forward(forward(&report.envelope_id, "RS/prosecutor"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn h1_and_h3_reach_the_recipient_as_restrictions() {
    let fed = start(&["RS", "ME"]).await;
    let mut l = labels(
        v1::Purpose::Prosecution,
        v1::LegalBasis::EuropeanMlaConvention,
        v1::HandlingCode::H1,
    );
    let h1 = send(
        &fed,
        "RS/prosecutor",
        &["ME/prosecutor"],
        record("mla_request"),
        l.clone(),
    )
    .await;
    l.handling = v1::HandlingCode::H3 as i32;
    l.handling_restriction = "Only for case KTO-112; destroy after the hearing.".into();
    let h3 = send(
        &fed,
        "RS/prosecutor",
        &["ME/prosecutor"],
        record("mla_request"),
        l,
    )
    .await;
    settled(&fed, "RS/prosecutor", &h3.envelope_id).await;
    settled(&fed, "RS/prosecutor", &h1.envelope_id).await;
    let r1 = fetch(&fed, "ME/prosecutor", &h1.envelope_id)
        .await
        .unwrap()
        .entry
        .unwrap()
        .restrictions
        .unwrap();
    assert!(r1.no_evidential_use && !r1.no_onward_transfer);
    assert!(
        r1.notices[0].contains("not to be used as evidence"),
        "{:?}",
        r1.notices
    );
    let r3 = fetch(&fed, "ME/prosecutor", &h3.envelope_id)
        .await
        .unwrap()
        .entry
        .unwrap()
        .restrictions
        .unwrap();
    assert_eq!(
        r3.provider_restriction, "Only for case KTO-112; destroy after the hearing.",
        "verbatim"
    );
}

#[tokio::test]
async fn a_node_reports_refusals_only_for_its_own_agencies() {
    let fed = start(&["RS", "HR"]).await;
    let report = v1::RefusalReport {
        transfer: Some(v1::EnvelopeSummary {
            sender_node: "HR".into(),
            sender_agency: "HR/police".into(),
            ..Default::default()
        }),
        policy_bundle_hash: String::new(),
        policy_explanation: "made up".into(),
    };
    let before = audit(&fed).await.len();
    let err = exchange_as_node(&fed, "RS")
        .report_refusal(report)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(audit(&fed).await.len(), before);
}

#[tokio::test]
async fn a_record_passes_three_hops_each_with_its_providers_permission() {
    let fed = start(&["HR", "RS", "BA", "ME"]).await;
    let mut l = labels(
        v1::Purpose::InvestigationMigrantSmuggling,
        v1::LegalBasis::SpecificSituationDerogation,
        v1::HandlingCode::H2,
    );
    l.legal_basis_reference = "Directive (EU) 2016/680, Art. 38".into();
    // Border police keep records at most 90 days.
    l.expires_at_ms = casebridge::daemon::clock::now_ms() + 30 * 86_400_000;
    l.evaluation = Some(v1::Evaluation {
        source: v1::SourceReliability::B as i32,
        accuracy: v1::InformationAccuracy::InformationAccuracy3 as i32,
    });
    let r0 = send(
        &fed,
        "HR/police",
        &["RS/police"],
        record("intelligence_report"),
        l,
    )
    .await;
    settled(&fed, "HR/police", &r0.envelope_id).await;
    let r1 = hop(&fed, "HR/police", "RS/police", &r0.envelope_id, "BA/police").await;
    let r2 = hop(&fed, "HR/police", "BA/police", &r1, "BA/border-police").await;
    let r3 = hop(
        &fed,
        "HR/police",
        "BA/border-police",
        &r2,
        "ME/border-police",
    )
    .await;

    // The broker holds the provider with every copy, and the log shows each
    // hop with the record it passes on and whose it is.
    let store = &fed.broker().unwrap().store;
    let mut passed_on = r0.envelope_id.clone();
    for id in [&r1, &r2, &r3] {
        let id: EnvelopeId = id.parse().unwrap();
        let kept = store.accepted(&id).await.unwrap().unwrap();
        assert_eq!(kept.provider().unwrap().to_string(), "HR/police");
        let s = kept.summary;
        assert_eq!(
            EnvelopeId::from_bytes(&s.onward_of).unwrap().to_string(),
            passed_on
        );
        assert_eq!(s.provider, "HR/police");
        passed_on = id.to_string();
    }
    let original: EnvelopeId = r0.envelope_id.parse().unwrap();
    assert_eq!(
        store
            .accepted(&original)
            .await
            .unwrap()
            .unwrap()
            .provider()
            .unwrap()
            .to_string(),
        "HR/police"
    );
}

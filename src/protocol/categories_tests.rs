use super::*;
use DataCategory as C;
use v1::case_record::Body;

fn record(body: Body) -> v1::CaseRecord {
    v1::CaseRecord { body: Some(body) }
}

fn set(cs: &[DataCategory]) -> CategorySet {
    cs.iter().copied().collect()
}

/// A record whose only populated content is `p`, inside a body whose own
/// fields add nothing.
fn with_person(p: v1::Person) -> v1::CaseRecord {
    record(Body::InformationRequest(v1::InformationRequest {
        subjects: vec![p],
        ..Default::default()
    }))
}

fn person_categories(p: v1::Person) -> CategorySet {
    derive(&with_person(p))
}

fn s(x: &str) -> String {
    x.to_owned()
}

fn every_body() -> Vec<(Body, RecordKind)> {
    vec![
        (Body::MlaRequest(Default::default()), RecordKind::MlaRequest),
        (
            Body::MlaResponse(Default::default()),
            RecordKind::MlaResponse,
        ),
        (
            Body::InformationRequest(Default::default()),
            RecordKind::InformationRequest,
        ),
        (
            Body::InformationResponse(Default::default()),
            RecordKind::InformationResponse,
        ),
        (
            Body::MissingPersonTrace(Default::default()),
            RecordKind::MissingPersonTrace,
        ),
        (
            Body::TraceResult(Default::default()),
            RecordKind::TraceResult,
        ),
        (
            Body::WantedAlert(Default::default()),
            RecordKind::WantedAlert,
        ),
        (
            Body::IntelligenceReport(Default::default()),
            RecordKind::IntelligenceReport,
        ),
        (
            Body::MigrantRegistration(Default::default()),
            RecordKind::MigrantRegistration,
        ),
        (
            Body::JitEvidence(Default::default()),
            RecordKind::JitEvidence,
        ),
        (Body::Statistics(Default::default()), RecordKind::Statistics),
        (
            Body::PermissionRequest(Default::default()),
            RecordKind::PermissionRequest,
        ),
        (
            Body::PermissionGrant(Default::default()),
            RecordKind::PermissionGrant,
        ),
    ]
}

#[path = "categories_tests/names_tests.rs"]
mod names;
#[path = "categories_tests/parts_tests.rs"]
mod parts;
#[path = "categories_tests/person_tests.rs"]
mod person;

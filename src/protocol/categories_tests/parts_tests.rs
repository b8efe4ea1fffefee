//! The categories of free text, locations, vehicles, finances, statistics and attachments.

use super::*;

#[test]
fn free_text_fields_give_case_narrative() {
    let bodies = [
        Body::MlaRequest(v1::MlaRequest {
            case_summary: s("x"),
            ..Default::default()
        }),
        Body::MlaRequest(v1::MlaRequest {
            requested_measures: vec![s(""), s("x")],
            ..Default::default()
        }),
        Body::MlaResponse(v1::MlaResponse {
            summary: s("x"),
            ..Default::default()
        }),
        Body::InformationRequest(v1::InformationRequest {
            question: s("x"),
            ..Default::default()
        }),
        Body::InformationResponse(v1::InformationResponse {
            answer: s("x"),
            ..Default::default()
        }),
        Body::MissingPersonTrace(v1::MissingPersonTrace {
            circumstances: s("x"),
            ..Default::default()
        }),
        Body::TraceResult(v1::TraceResult {
            notes: s("x"),
            ..Default::default()
        }),
        Body::WantedAlert(v1::WantedAlert {
            offence: s("x"),
            ..Default::default()
        }),
        Body::WantedAlert(v1::WantedAlert {
            instructions: s("x"),
            ..Default::default()
        }),
        Body::IntelligenceReport(v1::IntelligenceReport {
            summary: s("x"),
            ..Default::default()
        }),
        Body::JitEvidence(v1::JitEvidence {
            description: s("x"),
            ..Default::default()
        }),
    ];
    for body in bodies {
        assert_eq!(
            derive(&record(body.clone())),
            set(&[C::CaseNarrative]),
            "{body:?}"
        );
    }
}

#[test]
fn administrative_fields_add_nothing() {
    let bodies = [
        Body::MlaRequest(v1::MlaRequest {
            requesting_authority: s("Prosecutor"),
            requested_measures: vec![s("")],
            deadline: s("2025-01-01"),
            ..Default::default()
        }),
        Body::MlaResponse(v1::MlaResponse {
            responding_authority: s("Prosecutor"),
            ..Default::default()
        }),
        Body::InformationRequest(v1::InformationRequest {
            directly_accessible: true,
            ..Default::default()
        }),
        Body::TraceResult(v1::TraceResult {
            outcome: v1::TraceOutcome::FoundAlive as i32,
            ..Default::default()
        }),
        Body::WantedAlert(v1::WantedAlert {
            weapons: vec![v1::Weapon {
                r#type: s("rifle"),
                make: s("x"),
                serial_number: s("123"),
            }],
            cross_border_pursuit: true,
            ..Default::default()
        }),
        Body::IntelligenceReport(v1::IntelligenceReport {
            area: v1::CrimeArea::Terrorism as i32,
            ..Default::default()
        }),
        Body::JitEvidence(v1::JitEvidence {
            jit_reference: s("JIT-2025-01"),
            ..Default::default()
        }),
    ];
    for body in bodies {
        assert!(derive(&record(body.clone())).is_empty(), "{body:?}");
    }
}

#[test]
fn locations_give_location_and_empty_ones_do_not() {
    let some = |l: v1::Location| Some(l);
    let populated = [
        v1::Location {
            country: s("HR"),
            ..Default::default()
        },
        v1::Location {
            place: s("x"),
            ..Default::default()
        },
        v1::Location {
            latitude: 45.1,
            ..Default::default()
        },
        v1::Location {
            longitude: -0.5,
            ..Default::default()
        },
        v1::Location {
            latitude: f64::NAN,
            ..Default::default()
        },
        v1::Location {
            observed_at: s("2025"),
            ..Default::default()
        },
    ];
    for l in populated {
        for body in [
            Body::MissingPersonTrace(v1::MissingPersonTrace {
                last_known_location: some(l.clone()),
                ..Default::default()
            }),
            Body::TraceResult(v1::TraceResult {
                location: some(l.clone()),
                ..Default::default()
            }),
            Body::WantedAlert(v1::WantedAlert {
                last_seen: some(l.clone()),
                ..Default::default()
            }),
            Body::MigrantRegistration(v1::MigrantRegistration {
                registered_at: some(l.clone()),
                ..Default::default()
            }),
        ] {
            assert_eq!(
                derive(&record(body.clone())),
                set(&[C::Location]),
                "{body:?}"
            );
        }
    }
    let empty = record(Body::WantedAlert(v1::WantedAlert {
        last_seen: Some(v1::Location {
            latitude: -0.0,
            ..Default::default()
        }),
        ..Default::default()
    }));
    assert!(derive(&empty).is_empty());
}

#[test]
fn vehicles_routes_and_communications() {
    let vehicle = || v1::Vehicle {
        vin: s("x"),
        ..Default::default()
    };
    let route = || v1::TravelMovement {
        border_crossing: s("x"),
        ..Default::default()
    };
    let cases: Vec<(Body, &[DataCategory])> = vec![
        (
            Body::InformationRequest(v1::InformationRequest {
                vehicles: vec![vehicle()],
                ..Default::default()
            }),
            &[C::Vehicle],
        ),
        (
            Body::InformationResponse(v1::InformationResponse {
                vehicles: vec![Default::default(), vehicle()],
                ..Default::default()
            }),
            &[C::Vehicle],
        ),
        (
            Body::WantedAlert(v1::WantedAlert {
                vehicles: vec![vehicle()],
                ..Default::default()
            }),
            &[C::Vehicle],
        ),
        (
            Body::IntelligenceReport(v1::IntelligenceReport {
                vehicles: vec![vehicle()],
                routes: vec![route()],
                ..Default::default()
            }),
            &[C::TravelMovement, C::Vehicle],
        ),
        (
            Body::MigrantRegistration(v1::MigrantRegistration {
                route: vec![route()],
                ..Default::default()
            }),
            &[C::TravelMovement],
        ),
        (
            Body::IntelligenceReport(v1::IntelligenceReport {
                communications: Some(v1::Communications {
                    device_ids: vec![s("IMEI")],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            &[C::Communications],
        ),
        (
            Body::IntelligenceReport(v1::IntelligenceReport {
                communications: Some(v1::Communications {
                    emails: vec![s("a@example.org")],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            &[C::Communications],
        ),
        (
            Body::IntelligenceReport(v1::IntelligenceReport {
                vehicles: vec![Default::default()],
                routes: vec![Default::default()],
                communications: Some(v1::Communications {
                    phone_numbers: vec![s("")],
                    ..Default::default()
                }),
                ..Default::default()
            }),
            &[],
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(derive(&record(body.clone())), set(expected), "{body:?}");
    }
}

#[test]
fn financial_records_and_their_holders() {
    let cases: Vec<(Body, &[DataCategory])> = vec![
        (
            Body::MlaRequest(v1::MlaRequest {
                accounts: vec![v1::FinancialInfo {
                    iban: s("XX00"),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            &[C::Financial],
        ),
        (
            Body::MlaResponse(v1::MlaResponse {
                financial_records: vec![v1::FinancialInfo {
                    period: s("2024"),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            &[C::Financial],
        ),
        (
            Body::MlaResponse(v1::MlaResponse {
                financial_records: vec![v1::FinancialInfo {
                    account_holder: s("A. Person"),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            &[C::Identity, C::Financial],
        ),
        (
            Body::MlaRequest(v1::MlaRequest {
                accounts: vec![Default::default()],
                ..Default::default()
            }),
            &[],
        ),
    ];
    for (body, expected) in cases {
        assert_eq!(derive(&record(body.clone())), set(expected), "{body:?}");
    }
}

#[test]
fn statistics_derive_nothing_however_filled() {
    let stats = record(Body::Statistics(v1::Statistics {
        period: s("2024-Q4"),
        region: s("region"),
        counts: vec![v1::StatisticCount {
            indicator: s("crossings"),
            dimension: s("HR-BA"),
            value: 1234,
        }],
    }));
    assert!(derive(&stats).is_empty());
}

// -- attachments ---------------------------------------------------------

fn attachment_categories(a: v1::Attachment) -> CategorySet {
    derive(&record(Body::JitEvidence(v1::JitEvidence {
        attachments: vec![a],
        ..Default::default()
    })))
}

#[test]
fn attachments_add_declared_categories_and_narrative_for_content() {
    let with_content = v1::Attachment {
        media_type: s("application/pdf"),
        content: b"%PDF".to_vec(),
        contains: vec![C::Financial as i32, C::Biometric as i32],
        ..Default::default()
    };
    assert_eq!(
        attachment_categories(with_content),
        set(&[C::Financial, C::CaseNarrative, C::Biometric])
    );

    let declared_only = v1::Attachment {
        contains: vec![C::Health as i32],
        ..Default::default()
    };
    assert_eq!(attachment_categories(declared_only), set(&[C::Health]));

    let named_only = v1::Attachment {
        filename: s("statement.pdf"),
        ..Default::default()
    };
    assert_eq!(attachment_categories(named_only), set(&[C::CaseNarrative]));

    let unknown_and_unspecified = v1::Attachment {
        contains: vec![0, 13, 999, -1, C::Vehicle as i32],
        ..Default::default()
    };
    assert_eq!(
        attachment_categories(unknown_and_unspecified),
        set(&[C::Vehicle])
    );

    let type_only = v1::Attachment {
        media_type: s("text/plain"),
        ..Default::default()
    };
    assert!(attachment_categories(type_only).is_empty());
    assert!(attachment_categories(v1::Attachment::default()).is_empty());
}

#[test]
fn attachments_are_walked_in_every_body_that_holds_them() {
    let a = || v1::Attachment {
        contains: vec![C::Genetic as i32],
        ..Default::default()
    };
    let bodies = [
        Body::MlaResponse(v1::MlaResponse {
            evidence: vec![a()],
            ..Default::default()
        }),
        Body::InformationResponse(v1::InformationResponse {
            attachments: vec![a()],
            ..Default::default()
        }),
        Body::JitEvidence(v1::JitEvidence {
            attachments: vec![a()],
            ..Default::default()
        }),
    ];
    for body in bodies {
        assert_eq!(
            derive(&record(body.clone())),
            set(&[C::Genetic]),
            "{body:?}"
        );
    }
}

// -- the set -------------------------------------------------------------

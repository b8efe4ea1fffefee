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

// -- kinds ---------------------------------------------------------------

#[test]
fn record_kind_follows_the_body() {
    for (body, kind) in every_body() {
        assert_eq!(record_kind(&record(body)), Some(kind));
    }
    assert_eq!(record_kind(&v1::CaseRecord::default()), None);
}

#[test]
fn absent_and_empty_bodies_derive_nothing() {
    assert!(derive(&v1::CaseRecord::default()).is_empty());
    for (body, kind) in every_body() {
        assert!(derive(&record(body)).is_empty(), "{kind:?}");
    }
}

// -- person --------------------------------------------------------------

#[test]
fn each_identity_field_alone_gives_identity() {
    let cases = [
        v1::Person {
            family_name: s("Test"),
            ..Default::default()
        },
        v1::Person {
            given_names: s("Test"),
            ..Default::default()
        },
        v1::Person {
            date_of_birth: s("1987"),
            ..Default::default()
        },
        v1::Person {
            place_of_birth: s("Nowhere"),
            ..Default::default()
        },
        v1::Person {
            nationality: s("XK"),
            ..Default::default()
        },
        v1::Person {
            sex: s("female"),
            ..Default::default()
        },
        v1::Person {
            aliases: vec![s(""), s("Nobody")],
            ..Default::default()
        },
    ];
    for p in cases {
        assert_eq!(person_categories(p.clone()), set(&[C::Identity]), "{p:?}");
    }
}

#[test]
fn each_person_part_gives_its_category() {
    let cases: Vec<(v1::Person, &[DataCategory])> = vec![
        (
            v1::Person {
                minor: true,
                ..Default::default()
            },
            &[C::Minor],
        ),
        (
            v1::Person {
                documents: vec![v1::IdentityDocument {
                    number: s("X1"),
                    ..Default::default()
                }],
                ..Default::default()
            },
            &[C::IdentityDocument],
        ),
        (
            v1::Person {
                documents: vec![v1::IdentityDocument {
                    expiry_date: s("2030"),
                    ..Default::default()
                }],
                ..Default::default()
            },
            &[C::IdentityDocument],
        ),
        (
            v1::Person {
                contacts: vec![v1::ContactDetails {
                    email: s("a@example.org"),
                    ..Default::default()
                }],
                ..Default::default()
            },
            &[C::Contact],
        ),
        (
            v1::Person {
                contacts: vec![v1::ContactDetails {
                    postal_address: s("1 Test St"),
                    ..Default::default()
                }],
                ..Default::default()
            },
            &[C::Contact],
        ),
        (
            v1::Person {
                biometrics: Some(v1::Biometrics {
                    fingerprints: vec![v1::Fingerprint {
                        template: vec![1],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            },
            &[C::Biometric],
        ),
        (
            v1::Person {
                biometrics: Some(v1::Biometrics {
                    face_image: vec![0xff, 0xd8],
                    ..Default::default()
                }),
                ..Default::default()
            },
            &[C::Biometric],
        ),
        (
            v1::Person {
                biometrics: Some(v1::Biometrics {
                    face_image_format: s("image/jpeg"),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &[C::Biometric],
        ),
        (
            v1::Person {
                genetic: Some(v1::GeneticReference {
                    sample_id: s("S1"),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &[C::Genetic],
        ),
        (
            v1::Person {
                genetic: Some(v1::GeneticReference {
                    laboratory: s("Lab"),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &[C::Genetic],
        ),
        (
            v1::Person {
                health: Some(v1::HealthInformation {
                    description: s("diabetic"),
                }),
                ..Default::default()
            },
            &[C::Health],
        ),
        (
            v1::Person {
                criminal_record: vec![v1::CriminalRecordEntry {
                    court: s("Test court"),
                    ..Default::default()
                }],
                ..Default::default()
            },
            &[C::CriminalRecord],
        ),
        (
            v1::Person {
                criminal_record: vec![v1::CriminalRecordEntry {
                    offence: s("theft"),
                    ..Default::default()
                }],
                ..Default::default()
            },
            &[C::CriminalRecord],
        ),
        (
            v1::Person {
                victim: Some(v1::VictimStatus {
                    description: s("victim of trafficking"),
                }),
                ..Default::default()
            },
            &[C::VictimStatus],
        ),
        (
            v1::Person {
                role: s("witness"),
                ..Default::default()
            },
            &[],
        ),
    ];
    for (p, expected) in cases {
        assert_eq!(person_categories(p.clone()), set(expected), "{p:?}");
    }
}

#[test]
fn each_sensitive_attribute_is_its_own_special_category() {
    let cases = [
        (
            v1::SensitiveAttributes {
                racial_or_ethnic_origin: s("x"),
                ..Default::default()
            },
            C::RacialEthnicOrigin,
        ),
        (
            v1::SensitiveAttributes {
                political_opinions: s("x"),
                ..Default::default()
            },
            C::PoliticalOpinions,
        ),
        (
            v1::SensitiveAttributes {
                religious_beliefs: s("x"),
                ..Default::default()
            },
            C::ReligiousBeliefs,
        ),
        (
            v1::SensitiveAttributes {
                trade_union_membership: s("x"),
                ..Default::default()
            },
            C::TradeUnionMembership,
        ),
        (
            v1::SensitiveAttributes {
                sex_life_or_orientation: s("x"),
                ..Default::default()
            },
            C::SexLifeOrientation,
        ),
    ];
    for (attrs, c) in cases {
        let got = person_categories(v1::Person {
            sensitive: Some(attrs),
            ..Default::default()
        });
        assert_eq!(got, set(&[c]));
        assert!(is_special(c));
    }
}

#[test]
fn present_but_empty_person_parts_add_nothing() {
    let p = v1::Person {
        aliases: vec![s(""), s("")],
        minor: false,
        documents: vec![Default::default()],
        contacts: vec![Default::default(), Default::default()],
        biometrics: Some(v1::Biometrics {
            fingerprints: vec![Default::default()],
            ..Default::default()
        }),
        genetic: Some(Default::default()),
        health: Some(Default::default()),
        sensitive: Some(Default::default()),
        criminal_record: vec![Default::default()],
        victim: Some(Default::default()),
        ..Default::default()
    };
    assert!(person_categories(p).is_empty());
    assert!(person_categories(v1::Person::default()).is_empty());
}

#[test]
fn a_full_person_gives_every_person_category() {
    let p = v1::Person {
        family_name: s("Test"),
        minor: true,
        documents: vec![v1::IdentityDocument {
            r#type: s("passport"),
            ..Default::default()
        }],
        contacts: vec![v1::ContactDetails {
            phone: s("+000"),
            ..Default::default()
        }],
        biometrics: Some(v1::Biometrics {
            fingerprints: vec![v1::Fingerprint {
                finger: s("left thumb"),
                ..Default::default()
            }],
            ..Default::default()
        }),
        genetic: Some(v1::GeneticReference {
            profile_format: s("STR"),
            ..Default::default()
        }),
        health: Some(v1::HealthInformation {
            description: s("x"),
        }),
        sensitive: Some(v1::SensitiveAttributes {
            racial_or_ethnic_origin: s("x"),
            political_opinions: s("x"),
            religious_beliefs: s("x"),
            trade_union_membership: s("x"),
            sex_life_or_orientation: s("x"),
        }),
        criminal_record: vec![v1::CriminalRecordEntry {
            sentence: s("x"),
            ..Default::default()
        }],
        victim: Some(v1::VictimStatus {
            description: s("x"),
        }),
        role: s("suspect"),
        ..Default::default()
    };
    let expected: CategorySet = ALL_CATEGORIES
        .iter()
        .copied()
        .filter(|c| {
            !matches!(
                c,
                C::Location
                    | C::TravelMovement
                    | C::Vehicle
                    | C::Financial
                    | C::Communications
                    | C::CaseNarrative
            )
        })
        .collect();
    assert_eq!(person_categories(p), expected);
}

#[test]
fn persons_are_walked_in_every_body_that_holds_them() {
    let p = || v1::Person {
        minor: true,
        ..Default::default()
    };
    let bodies = [
        Body::MlaRequest(v1::MlaRequest {
            persons: vec![p()],
            ..Default::default()
        }),
        Body::InformationRequest(v1::InformationRequest {
            subjects: vec![p()],
            ..Default::default()
        }),
        Body::InformationResponse(v1::InformationResponse {
            subjects: vec![p()],
            ..Default::default()
        }),
        Body::MissingPersonTrace(v1::MissingPersonTrace {
            missing_person: Some(p()),
            ..Default::default()
        }),
        Body::MissingPersonTrace(v1::MissingPersonTrace {
            relatives: vec![v1::Person::default(), p()],
            ..Default::default()
        }),
        Body::TraceResult(v1::TraceResult {
            person: Some(p()),
            ..Default::default()
        }),
        Body::WantedAlert(v1::WantedAlert {
            persons: vec![p()],
            ..Default::default()
        }),
        Body::IntelligenceReport(v1::IntelligenceReport {
            persons: vec![p()],
            ..Default::default()
        }),
        Body::MigrantRegistration(v1::MigrantRegistration {
            person: Some(p()),
            ..Default::default()
        }),
        Body::MigrantRegistration(v1::MigrantRegistration {
            family_links: vec![p()],
            ..Default::default()
        }),
    ];
    for body in bodies {
        assert_eq!(derive(&record(body.clone())), set(&[C::Minor]), "{body:?}");
    }
}

// -- body fields ---------------------------------------------------------

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

#[test]
fn category_set_helpers() {
    let derived = set(&[C::Biometric, C::Identity, C::CaseNarrative]);
    let declared = set(&[C::Identity, C::CaseNarrative, C::Contact]);
    assert!(!derived.is_subset(&declared));
    assert_eq!(derived.difference(&declared), set(&[C::Biometric]));
    assert!(derived.difference(&declared).has_special());
    assert!(!declared.has_special());
    assert!(set(&[C::Identity]).is_subset(&declared));
    assert!(CategorySet::new().is_subset(&declared));
    assert_eq!(derived.to_vec_i32(), vec![1, 10, 20]);
    assert_eq!(
        derived.iter().collect::<Vec<_>>(),
        vec![C::Identity, C::CaseNarrative, C::Biometric]
    );
    assert_eq!((&derived).into_iter().count(), 3);
    assert_eq!(derived.len(), 3);
    assert!(derived.contains(C::Biometric) && !derived.contains(C::Contact));
    assert_eq!(derived.to_string(), "identity, case_narrative, biometric");
    assert_eq!(CategorySet::new().to_string(), "none");

    let mut s = CategorySet::new();
    assert!(!s.insert(C::Unspecified));
    assert!(s.is_empty());
    assert!(s.insert(C::Minor));
    assert!(!s.insert(C::Minor));
    assert_eq!(set(&[C::Unspecified, C::Minor]), s);
}

// -- names ---------------------------------------------------------------

/// Every value the generated enum accepts, so the tests notice a value
/// added to the proto but not to `ALL_CATEGORIES`.
fn enum_categories() -> Vec<DataCategory> {
    (0..256)
        .filter_map(|v| DataCategory::try_from(v).ok())
        .collect()
}

fn enum_kinds() -> Vec<RecordKind> {
    (0..256)
        .filter_map(|v| RecordKind::try_from(v).ok())
        .collect()
}

#[test]
fn category_short_names_round_trip() {
    let all = enum_categories();
    assert_eq!(all.len(), ALL_CATEGORIES.len() + 1);
    for c in all {
        let name = short_name(c);
        assert_eq!(
            c.as_str_name()
                .strip_prefix("DATA_CATEGORY_")
                .map(str::to_lowercase),
            Some(name.to_owned())
        );
        if c == C::Unspecified {
            assert_eq!(parse_short_name(name), None);
        } else {
            assert_eq!(parse_short_name(name), Some(c));
        }
    }
    assert_eq!(ALL_CATEGORIES.to_vec(), enum_categories()[1..].to_vec());
    assert_eq!(parse_short_name("IDENTITY"), None);
    assert_eq!(parse_short_name("DATA_CATEGORY_IDENTITY"), None);
    assert_eq!(parse_short_name(""), None);
}

#[test]
fn kind_short_names_round_trip() {
    let all = enum_kinds();
    assert_eq!(all.len(), ALL_KINDS.len() + 1);
    for k in all {
        let name = kind_short_name(k);
        assert_eq!(
            k.as_str_name()
                .strip_prefix("RECORD_KIND_")
                .map(str::to_lowercase),
            Some(name.to_owned())
        );
        if k == RecordKind::Unspecified {
            assert_eq!(parse_kind_short_name(name), None);
        } else {
            assert_eq!(parse_kind_short_name(name), Some(k));
        }
    }
    assert_eq!(ALL_KINDS.to_vec(), enum_kinds()[1..].to_vec());
    // The names DOMAIN.md uses.
    for name in [
        "mla_request",
        "mla_response",
        "information_request",
        "information_response",
        "missing_person_trace",
        "trace_result",
        "wanted_alert",
        "intelligence_report",
        "migrant_registration",
        "jit_evidence",
        "statistics",
        "permission_request",
        "permission_grant",
    ] {
        assert!(parse_kind_short_name(name).is_some(), "{name}");
    }
}

#[test]
fn special_categories_are_exactly_the_twenties() {
    for c in enum_categories() {
        assert_eq!(is_special(c), c as i32 >= 20, "{c:?}");
    }
}

// -- example records -----------------------------------------------------

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/records");

/// One row of the README's table: the file, its kind, its categories as
/// parsed, and the categories cell as written.
struct Row {
    file: String,
    kind: RecordKind,
    categories: CategorySet,
    cell: String,
}

fn readme_rows() -> Vec<Row> {
    let readme = std::fs::read_to_string(format!("{EXAMPLES}/README.md"))
        .expect("examples/records/README.md is readable");
    let unquote = |cell: &str| cell.trim().trim_matches('`').to_owned();
    let mut rows = Vec::new();
    for line in readme.lines() {
        let cells: Vec<&str> = line.split('|').collect();
        if cells.len() != 6 || !unquote(cells[1]).ends_with(".json") {
            continue;
        }
        let file = unquote(cells[1]);
        let kind = parse_kind_short_name(&unquote(cells[3]))
            .unwrap_or_else(|| panic!("{file}: bad kind {:?}", cells[3]));
        let categories = match cells[4].trim() {
            "none" => CategorySet::new(),
            list => list
                .split(',')
                .map(|name| {
                    parse_short_name(&unquote(name))
                        .unwrap_or_else(|| panic!("{file}: bad category {name:?}"))
                })
                .collect(),
        };
        let cell = cells[4].replace('`', "").trim().to_owned();
        rows.push(Row {
            file,
            kind,
            categories,
            cell,
        });
    }
    rows
}

#[test]
fn example_records_derive_what_their_readme_says() {
    let rows = readme_rows();
    let mut on_disk: Vec<String> = std::fs::read_dir(EXAMPLES)
        .expect("examples/records is readable")
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".json"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = rows.iter().map(|r| r.file.clone()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "README table and files differ");
    assert_eq!(on_disk.len(), 8);

    for row in rows {
        let file = &row.file;
        let text = std::fs::read_to_string(format!("{EXAMPLES}/{file}"))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let record: v1::CaseRecord =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(record_kind(&record), Some(row.kind), "{file}");
        let derived = derive(&record);
        assert_eq!(
            derived, row.categories,
            "{file}: README says `{}`, code derives `{derived}`",
            row.cell
        );
        // Enum order keeps the README comparable with the demo's output.
        assert_eq!(row.cell, derived.to_string(), "{file}: README order");

        // Canonical proto3 JSON: re-encoding gives back the same document,
        // so no field is misspelt, defaulted or in a non-canonical form.
        let original: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let reencoded = serde_json::to_value(&record).expect("encodable");
        assert_eq!(original, reencoded, "{file} is not canonical proto3 JSON");
    }
}

#[test]
fn scenario_six_lie_is_visible_as_a_difference() {
    let text = std::fs::read_to_string(format!("{EXAMPLES}/fingerprints.json")).expect("readable");
    let record: v1::CaseRecord = serde_json::from_str(&text).expect("valid record");
    let declared = set(&[C::Identity]);
    let undeclared = derive(&record).difference(&declared);
    assert!(undeclared.contains(C::Biometric));
    assert!(undeclared.has_special());
}

#[test]
fn declared_lists_are_unique_known_and_bounded() {
    let all: Vec<i32> = ALL_CATEGORIES.iter().map(|c| *c as i32).collect();
    assert_eq!(
        parse_declared("declared_categories", &all).map(|s| s.len()),
        Ok(CATEGORY_COUNT)
    );
    assert_eq!(
        parse_declared("declared_categories", &[]),
        Ok(CategorySet::new())
    );
    let too_many: Vec<i32> = all.iter().cycle().take(300_003).copied().collect();
    assert_eq!(
        parse_declared("declared_categories", &too_many)
            .unwrap_err()
            .to_string(),
        "declared_categories has 300003 entries; the limit is 20"
    );
    let twice = [C::Identity as i32, C::Health as i32, C::Identity as i32];
    assert_eq!(
        parse_declared("declared_categories", &twice),
        Err(ListError::Twice(C::Identity))
    );
    assert_eq!(
        ListError::Twice(C::Identity).to_string(),
        "data category identity listed twice"
    );
    for bad in [0, 13, -1, 999] {
        assert_eq!(
            parse_declared("declared_categories", &[C::Health as i32, bad]),
            Err(ListError::Unknown(bad))
        );
    }
}

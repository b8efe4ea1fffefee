//! Record kinds and the categories a person's parts give.

use super::*;

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

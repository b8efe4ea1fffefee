//! Verifying a header against the directory: bounds, identities, recipients, validity and labels.

use super::*;

#[test]
fn header_fields_are_bounded() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &["BA/police", "RS/police"], &rec);
    let hr = &fx.node("HR").sign;
    let forge = |b: &Bounds, f: &dyn Fn(&mut v1::EnvelopeHeader)| {
        let mut env = sealed.envelope.clone();
        resign(&mut env, hr, f);
        verify_within(&env, &fx.dir, NOW, b).expect_err("must be refused")
    };
    let d = Bounds::default();
    let len = |field, len, max| EnvelopeError::OutOfBounds(Exceeded::Length { field, len, max });
    let count =
        |field, count, max| EnvelopeError::OutOfBounds(Exceeded::Count { field, count, max });
    assert_eq!(
        forge(&d, &|h| h.recipients = vec!["BA/police".into(); 65]),
        count("recipients", 65, 64)
    );
    // The configured maximum, not the default, applies.
    let two = Bounds { max_recipients: 1 };
    assert_eq!(forge(&two, &|_| {}), count("recipients", 2, 1));
    assert_eq!(
        forge(&d, &|h| h.recipients[0] =
            format!("BA/{}", "p".repeat(1 << 20))),
        len("recipients", (1 << 20) + 3, 35)
    );
    assert_eq!(
        forge(&d, &|h| h.sender_agency =
            "HR/".to_string() + &"p".repeat(33)),
        len("sender_agency", 36, 35)
    );
    assert_eq!(
        forge(&d, &|h| h.sender_node = "HRV".into()),
        len("sender_node", 3, 2)
    );
    assert_eq!(
        forge(&d, &|h| h.wrapped_keys =
            vec![h.wrapped_keys[0].clone(); 65]),
        count("wrapped_keys", 65, 64)
    );
    assert_eq!(
        forge(&d, &|h| h.onward_of = vec![1; 17]),
        len("onward_of", 17, 16)
    );
    assert_eq!(
        forge(&d, &|h| h.ciphertext_sha256 = vec![1; 33]),
        len("ciphertext_sha256", 33, 32)
    );
    assert_eq!(
        forge(&d, &|h| h.envelope_id.push(0)),
        EnvelopeError::InvalidField("envelope_id: 17 bytes long; an envelope id is 16".into())
    );
    assert_eq!(
        forge(&d, &|h| h.labels.as_mut().unwrap().legal_basis_reference =
            "x".repeat(5 << 20)),
        len("labels.legal_basis_reference", 5 << 20, 512)
    );
    // A bound is checked before the signature: nothing large is worked on.
    let mut env = sealed.envelope.clone();
    resign(&mut env, &fx.node("RS").sign, |h| {
        h.recipients = vec!["BA/police".into(); 100_000]
    });
    assert_eq!(fx.verify_err(&env), count("recipients", 100_000, 64));
}

#[test]
fn permission_scope_is_bounded() {
    let scope = |third: Vec<String>| v1::PermissionScope {
        original_envelope_id: EnvelopeId::at(1_700_000_000_000).as_bytes().to_vec(),
        grantee: "RS/police".into(),
        third_agencies: third,
    };
    let d = Bounds::default();
    assert!(Permission::parse(&scope(vec!["BA/police".into()]), &d).is_ok());
    assert_eq!(
        Permission::parse(&scope(vec!["BA/police".into(); 65]), &d),
        Err(EnvelopeError::OutOfBounds(Exceeded::Count {
            field: "permission.third_agencies",
            count: 65,
            max: 64
        }))
    );
    assert_eq!(
        Permission::parse(&scope(vec!["BA/police".into(); 2]), &d),
        Err(EnvelopeError::InvalidField(
            "permission scope: third agency BA/police listed twice".into()
        ))
    );
    assert_eq!(
        Permission::parse(&scope(vec!["BA/".to_string() + &"p".repeat(40)]), &d),
        Err(EnvelopeError::OutOfBounds(Exceeded::Length {
            field: "permission.third_agencies",
            len: 43,
            max: 35
        }))
    );
    let mut long_id = scope(vec!["BA/police".into()]);
    long_id.original_envelope_id = vec![0; 1 << 20];
    assert_eq!(
        Permission::parse(&long_id, &d),
        Err(EnvelopeError::OutOfBounds(Exceeded::Length {
            field: "permission.original_envelope_id",
            len: 1 << 20,
            max: 16
        }))
    );
}

#[test]
fn sealed_len_is_the_size_of_the_sealed_envelope() {
    let fx = Fx::new();
    let big = v1::CaseRecord {
        body: Some(v1::case_record::Body::JitEvidence(v1::JitEvidence {
            jit_reference: "JIT".into(),
            description: "scan".into(),
            attachments: vec![v1::Attachment {
                filename: "scan.bin".into(),
                media_type: "application/octet-stream".into(),
                content: vec![7; 300_000],
                contains: vec![],
            }],
        })),
    };
    for (rec, to) in [
        (record("wanted_alert.json"), vec!["BA/police"]),
        (record("fingerprints.json"), vec!["BA/police", "RS/police"]),
        (
            record("statistics.json"),
            vec!["BA/police", "BA/missing-persons"],
        ),
        (big, vec!["RS/police", "BA/police", "BA/missing-persons"]),
    ] {
        let sender = ag("HR/police");
        let recipients: Vec<AgencyId> = to.iter().map(|r| ag(r)).collect();
        let input = SealInput {
            sender: &sender,
            recipients: &recipients,
            record: &rec,
            labels: labels(),
            created_at_ms: CREATED,
            expires_at_ms: EXPIRES,
            onward_of: Some(EnvelopeId::at(1_700_000_000_000)),
            permission: None,
        };
        let env = seal(&input, &fx.node("HR").sign, &fx.dir).unwrap().envelope;
        assert_eq!(
            sealed_len(&input),
            Ok(env.header.len() + env.signature.len() + env.ciphertext.len()),
            "{to:?}"
        );
    }
}

#[test]
fn payload_is_bound_to_the_envelope_id() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let mut env = fx.seal("HR/police", &["BA/police"], &rec).envelope;
    reseal_payload(
        &fx,
        &mut env,
        &rec.encode_to_vec(),
        Some(EnvelopeId::at(1_700_000_000_000)),
        "HR",
    );
    let vh = fx.verify(&env);
    assert_eq!(fx.open(&env, &vh, "BA").err(), Some(EnvelopeError::Decrypt));
}

#[test]
fn ciphertext_shorter_than_nonce_and_tag_is_refused_by_verify() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    for len in [0, 1, NONCE_LEN, NONCE_LEN + AES_256_GCM.tag_len() - 1] {
        let mut env = sealed.envelope.clone();
        env.ciphertext.truncate(len);
        let hash = sha256(&env.ciphertext).to_vec();
        resign(&mut env, &fx.node("HR").sign, |h| {
            h.ciphertext_sha256 = hash
        });
        let err = fx.verify_err(&env);
        assert_eq!(err, EnvelopeError::ShortCiphertext(len));
        assert_eq!(
            err.to_string(),
            format!("ciphertext is {len} bytes long; nonce and tag alone take 28")
        );
    }
    // Nonce and tag around an empty record are the shortest payload.
    let mut env = sealed.envelope.clone();
    reseal_payload(&fx, &mut env, &[], None, "HR");
    assert_eq!(env.ciphertext.len(), 28);
    assert!(verify(&env, &fx.dir, NOW).is_ok());
}

#[test]
fn undecodable_payload_is_a_malformed_record() {
    let fx = Fx::new();
    let mut env = fx
        .seal("HR/police", &["BA/police"], &record("wanted_alert.json"))
        .envelope;
    // Field 7 (wanted_alert), length 100, with 2 bytes following.
    reseal_payload(&fx, &mut env, &[0x3a, 100, 1, 2], None, "HR");
    let vh = fx.verify(&env);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::MalformedRecord)
    );
}

#[test]
fn kind_mismatch_built_by_hand() {
    // `seal` takes the kind from the body, so a mismatch needs a forged header.
    let fx = Fx::new();
    let rec = record("fingerprints.json");
    let sealed = fx.seal("HR/police", &["BA/police"], &rec);
    let mut env = sealed.envelope.clone();
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.kind = v1::RecordKind::WantedAlert as i32
    });
    let vh = fx.verify(&env);
    assert_eq!(vh.kind, v1::RecordKind::WantedAlert);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::KindMismatch {
            declared: v1::RecordKind::WantedAlert,
            found: Some(v1::RecordKind::InformationResponse),
        })
    );
    // A body-less record (it encodes to nothing) behind a valid header.
    let mut env = sealed.envelope.clone();
    reseal_payload(&fx, &mut env, &[], None, "HR");
    let vh = fx.verify(&env);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::KindMismatch {
            declared: v1::RecordKind::InformationResponse,
            found: None
        })
    );
}

#[test]
fn lying_sender_is_caught_at_open() {
    let fx = Fx::new();
    let rec = record("fingerprints.json");
    let input = SealInput {
        sender: &ag("HR/police"),
        recipients: &[ag("BA/police")],
        record: &rec,
        labels: labels(),
        created_at_ms: CREATED,
        expires_at_ms: EXPIRES,
        onward_of: None,
        permission: None,
    };
    let hr = &fx.node("HR").sign;
    let sealed = seal_declaring(&input, cats(&[v1::DataCategory::Identity]), hr, &fx.dir).unwrap();
    // The header is honest about nothing but validly signed.
    let vh = fx.verify(&sealed.envelope);
    assert_eq!(vh.categories, cats(&[v1::DataCategory::Identity]));
    let err = fx.open(&sealed.envelope, &vh, "BA").err().unwrap();
    assert_eq!(
        err,
        EnvelopeError::UndeclaredCategories(vec![
            v1::DataCategory::CaseNarrative,
            v1::DataCategory::Biometric
        ])
    );
    assert_eq!(
        err.to_string(),
        "content holds undeclared data categories: case_narrative, biometric"
    );

    let declared = cats(&[v1::DataCategory::Identity, v1::DataCategory::CaseNarrative]);
    let sealed = seal_declaring(&input, declared, hr, &fx.dir).unwrap();
    let vh = fx.verify(&sealed.envelope);
    assert_eq!(
        fx.open(&sealed.envelope, &vh, "BA").err(),
        Some(EnvelopeError::UndeclaredCategories(vec![
            v1::DataCategory::Biometric
        ]))
    );
}

// ---------------------------------------------------------------------
// Header checks against the directory

#[test]
fn malformed_header_and_version() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    for garbage in [vec![0x12, 0x10, 0x01], vec![0xff; 8], vec![0x0a, 0x01]] {
        let mut env = sealed.envelope.clone();
        env.header = garbage;
        assert_eq!(fx.verify_err(&env), EnvelopeError::MalformedHeader);
    }
    for version in [0, 2] {
        let mut env = sealed.envelope.clone();
        resign(&mut env, &fx.node("HR").sign, |h| h.version = version);
        assert_eq!(
            fx.verify_err(&env),
            EnvelopeError::UnsupportedVersion(version)
        );
    }
}

#[test]
fn sender_node_must_parse_and_be_listed() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    let hr = &fx.node("HR").sign;
    let mut env = sealed.envelope.clone();
    resign(&mut env, hr, |h| h.sender_node = "hr".into());
    assert!(
        matches!(fx.verify_err(&env), EnvelopeError::InvalidField(f) if f.starts_with("sender_node: "))
    );
    let mut env = sealed.envelope.clone();
    resign(&mut env, hr, |h| h.sender_node = "ME".into());
    assert_eq!(fx.verify_err(&env), EnvelopeError::UnknownNode(cc("ME")));
    // Claiming RS while signed by HR.
    let mut env = sealed.envelope.clone();
    resign(&mut env, hr, |h| h.sender_node = "RS".into());
    assert_eq!(fx.verify_err(&env), EnvelopeError::BadSignature(cc("RS")));
}

#[test]
fn foreign_sender_agency_is_refused() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["RS/police"], &record("wanted_alert.json"));
    let mut env = sealed.envelope.clone();
    // HR signs a header in which BA/police (a real agency) sends.
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.sender_agency = "BA/police".into()
    });
    assert_eq!(
        fx.verify_err(&env),
        EnvelopeError::ForeignSenderAgency {
            agency: ag("BA/police"),
            node: cc("HR")
        }
    );
    // A sender agency that does not parse.
    let mut env = sealed.envelope.clone();
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.sender_agency = "HR police".into()
    });
    assert!(
        matches!(fx.verify_err(&env), EnvelopeError::InvalidField(f) if f.starts_with("sender_agency: "))
    );
}

#[test]
fn sender_agency_must_be_listed_and_unrevoked() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/customs", &["BA/police"], &rec);
    assert_eq!(
        fx.verify_err(&sealed.envelope),
        EnvelopeError::UnknownAgency(ag("HR/customs"))
    );
    let sealed = fx.seal("RS/revoked", &["BA/police"], &rec);
    assert_eq!(
        fx.verify_err(&sealed.envelope),
        EnvelopeError::RevokedAgency(ag("RS/revoked"))
    );
    // Revoking HR/police in a newer directory refuses its envelopes.
    let sealed = fx.seal("HR/police", &["BA/police"], &rec);
    let dir = fx.dir_with(|d| {
        d.agencies
            .iter_mut()
            .find(|a| a.id == "HR/police")
            .unwrap()
            .revoked = true
    });
    assert_eq!(
        verify(&sealed.envelope, &dir, NOW).err(),
        Some(EnvelopeError::RevokedAgency(ag("HR/police")))
    );
}

#[test]
fn recipient_agencies_must_be_listed_and_unrevoked() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &["BA/police", "BA/customs"], &rec);
    assert_eq!(
        fx.verify_err(&sealed.envelope),
        EnvelopeError::UnknownAgency(ag("BA/customs"))
    );
    let sealed = fx.seal("HR/police", &["RS/police", "RS/revoked"], &rec);
    assert_eq!(
        fx.verify_err(&sealed.envelope),
        EnvelopeError::RevokedAgency(ag("RS/revoked"))
    );
}

#[test]
fn recipient_list_checks() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &[], &rec);
    assert_eq!(
        fx.verify_err(&sealed.envelope),
        EnvelopeError::InvalidField("no recipients".into())
    );
    let sealed = fx.seal("HR/police", &["BA/police", "RS/police", "BA/police"], &rec);
    assert_eq!(
        fx.verify_err(&sealed.envelope),
        EnvelopeError::InvalidField("recipient BA/police listed twice".into())
    );
    let sealed = fx.seal("HR/police", &["BA/police", "HR/police"], &rec);
    assert_eq!(
        fx.verify_err(&sealed.envelope),
        EnvelopeError::InvalidField("recipient HR/police is the sender".into())
    );
    let mut env = fx.seal("HR/police", &["BA/police"], &rec).envelope;
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.recipients.push("ba/police".into())
    });
    assert!(
        matches!(fx.verify_err(&env), EnvelopeError::InvalidField(f) if f.starts_with("recipient: "))
    );
}

#[test]
fn inactive_nodes_are_refused() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    let set = |c: &'static str, f: NodeEdit| {
        fx.dir_with(move |d| f(d.nodes.iter_mut().find(|n| n.country == c).unwrap()))
    };
    let cases: [(&str, NodeEdit, EnvelopeError); 6] = [
        (
            "HR",
            |n| n.revoked = true,
            EnvelopeError::InactiveNode(cc("HR")),
        ),
        (
            "HR",
            |n| n.not_after_ms = NOW,
            EnvelopeError::InactiveNode(cc("HR")),
        ),
        (
            "HR",
            |n| n.not_before_ms = NOW + 1,
            EnvelopeError::InactiveNode(cc("HR")),
        ),
        (
            "BA",
            |n| n.revoked = true,
            EnvelopeError::InactiveNode(cc("BA")),
        ),
        (
            "BA",
            |n| n.not_after_ms = NOW - 1,
            EnvelopeError::InactiveNode(cc("BA")),
        ),
        (
            "BA",
            |n| n.not_before_ms = NOW + 1,
            EnvelopeError::InactiveNode(cc("BA")),
        ),
    ];
    for (c, f, want) in cases {
        let dir = set(c, f);
        assert_eq!(verify(&sealed.envelope, &dir, NOW).err(), Some(want));
    }
    // Boundaries: valid from not_before inclusive to not_after exclusive.
    let dir = set("HR", |n| {
        n.not_before_ms = NOW;
        n.not_after_ms = NOW + 1;
    });
    assert!(verify(&sealed.envelope, &dir, NOW).is_ok());
    // A revoked node not involved in the envelope does not matter.
    let dir = set("RS", |n| n.revoked = true);
    assert!(verify(&sealed.envelope, &dir, NOW).is_ok());
}

#[test]
fn wrapped_key_set_must_match_recipient_nodes() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &["BA/police", "RS/police"], &rec);
    let hr = &fx.node("HR").sign;
    let forge = |f: fn(&mut v1::EnvelopeHeader)| {
        let mut env = sealed.envelope.clone();
        resign(&mut env, hr, f);
        fx.verify_err(&env)
    };
    assert_eq!(
        forge(|h| h.wrapped_keys.retain(|w| w.node != "BA")),
        EnvelopeError::WrappedKeys("no key for recipient node BA".into())
    );
    assert_eq!(
        forge(|h| h.wrapped_keys.push(h.wrapped_keys[0].clone())),
        EnvelopeError::WrappedKeys("two keys for BA".into())
    );
    assert_eq!(
        forge(|h| {
            let mut extra = h.wrapped_keys[0].clone();
            extra.node = "HR".into();
            h.wrapped_keys.push(extra);
        }),
        EnvelopeError::WrappedKeys("key for HR, which serves no recipient".into())
    );
    assert_eq!(
        forge(|h| h.wrapped_keys[1].node = "rs".into()),
        EnvelopeError::WrappedKeys(IdError::Country("rs".into()).to_string())
    );
    assert_eq!(
        forge(|h| h.wrapped_keys.clear()),
        EnvelopeError::WrappedKeys("no key for recipient node BA".into())
    );
}

#[test]
fn header_field_checks() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    let hr = &fx.node("HR").sign;
    let forge = |f: &dyn Fn(&mut v1::EnvelopeHeader)| {
        let mut env = sealed.envelope.clone();
        resign(&mut env, hr, f);
        fx.verify_err(&env)
    };
    assert!(matches!(
        forge(&|h| h.envelope_id.truncate(15)),
        EnvelopeError::InvalidField(f) if f.starts_with("envelope_id: ")
    ));
    assert_eq!(
        forge(&|h| h.kind = 0),
        EnvelopeError::InvalidField("kind 0".into())
    );
    assert_eq!(
        forge(&|h| h.kind = 99),
        EnvelopeError::InvalidField("kind 99".into())
    );
    assert_eq!(
        forge(&|h| h.declared_categories.push(0)),
        EnvelopeError::InvalidField("data category 0".into())
    );
    assert_eq!(
        forge(&|h| h.declared_categories.push(13)),
        EnvelopeError::InvalidField("data category 13".into())
    );
    assert_eq!(
        forge(&|h| h.labels = None),
        EnvelopeError::InvalidField("no labels".into())
    );
    assert_eq!(
        forge(&|h| h.labels.as_mut().unwrap().purpose = 0),
        EnvelopeError::InvalidField("purpose is missing or unknown".into())
    );
    // Each declared category once, so never more than there are.
    let first = sealed
        .categories
        .iter()
        .next()
        .expect("wanted alert has categories");
    assert_eq!(
        forge(&|h| h.declared_categories.push(first as i32)),
        EnvelopeError::InvalidField(format!(
            "data category {} listed twice",
            categories::short_name(first)
        ))
    );
    assert_eq!(
        forge(&|h| h.declared_categories = vec![first as i32; 300_003]),
        EnvelopeError::OutOfBounds(Exceeded::Count {
            field: "declared_categories",
            count: 300_003,
            max: categories::CATEGORY_COUNT
        })
    );
}

#[test]
fn expiry_checks() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let at = |created: i64, expires: i64| {
        let sealed = fx
            .seal_with("HR/police", &["BA/police"], &rec, |i| {
                i.created_at_ms = created;
                i.expires_at_ms = expires;
            })
            .unwrap();
        verify(&sealed.envelope, &fx.dir, NOW).err()
    };
    assert_eq!(
        at(CREATED, NOW),
        Some(EnvelopeError::Expired {
            expires_at_ms: NOW,
            now_ms: NOW
        })
    );
    assert_eq!(
        at(CREATED, NOW - 1),
        Some(EnvelopeError::Expired {
            expires_at_ms: NOW - 1,
            now_ms: NOW
        })
    );
    assert_eq!(at(CREATED, NOW + 1), None);
    let not_after = Some(EnvelopeError::InvalidField(
        "expires_at is not after created_at".into(),
    ));
    assert_eq!(at(EXPIRES, EXPIRES), not_after);
    assert_eq!(at(EXPIRES, EXPIRES - 1), not_after);
    // Ordering is checked before expiry.
    assert_eq!(at(NOW - 5, NOW - 10), not_after);
    // The same envelope verifies before its expiry and not after.
    let sealed = fx.seal("HR/police", &["BA/police"], &rec);
    assert!(verify(&sealed.envelope, &fx.dir, EXPIRES - 1).is_ok());
    assert_eq!(
        verify(&sealed.envelope, &fx.dir, EXPIRES).err(),
        Some(EnvelopeError::Expired {
            expires_at_ms: EXPIRES,
            now_ms: EXPIRES
        })
    );
}

#[test]
fn labels_are_checked_by_verify() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let with = |f: LabelsEdit| {
        let sealed = fx
            .seal_with("HR/police", &["BA/police"], &rec, |i| f(&mut i.labels))
            .unwrap();
        fx.verify_err(&sealed.envelope)
    };
    assert_eq!(
        with(|l| l.purpose = 0),
        EnvelopeError::InvalidField("purpose is missing or unknown".into())
    );
    assert_eq!(
        with(|l| l.handling = v1::HandlingCode::H3 as i32),
        EnvelopeError::InvalidField(
            "handling code H3 needs the provider's restriction text".into()
        )
    );
    let sealed = fx
        .seal_with("HR/police", &["BA/police"], &rec, |i| {
            i.labels.handling = v1::HandlingCode::H3 as i32;
            i.labels.handling_restriction = "Not to be shared with customs.".into();
        })
        .unwrap();
    assert_eq!(
        fx.verify(&sealed.envelope).labels.handling_restriction,
        "Not to be shared with customs."
    );
}

#[test]
fn check_labels_table() {
    assert_eq!(check_labels(&labels()), Ok(()));
    let refused: &[(LabelsEdit, &str)] = &[
        (|l| l.purpose = 0, "purpose is missing or unknown"),
        (|l| l.purpose = 99, "purpose is missing or unknown"),
        (|l| l.legal_basis = 0, "legal basis is missing or unknown"),
        (|l| l.legal_basis = 42, "legal basis is missing or unknown"),
        (|l| l.handling = 0, "handling code is missing or unknown"),
        (|l| l.handling = 5, "handling code is missing or unknown"),
        (
            |l| l.handling = v1::HandlingCode::H3 as i32,
            "handling code H3 needs the provider's restriction text",
        ),
        (
            |l| {
                l.handling = v1::HandlingCode::H3 as i32;
                l.handling_restriction = " \t\n".into();
            },
            "handling code H3 needs the provider's restriction text",
        ),
        (
            |l| l.handling_restriction = "x".into(),
            "a restriction text is only carried with handling code H3",
        ),
        (|l| l.classification = 4, "classification is unknown"),
        (|l| l.priority = -1, "priority is unknown"),
        (
            |l| l.evaluation.as_mut().unwrap().source = 5,
            "4x4 evaluation is unknown",
        ),
        (
            |l| l.evaluation.as_mut().unwrap().accuracy = 5,
            "4x4 evaluation is unknown",
        ),
        (
            |l| l.in_reply_to = "not-a-uuid".into(),
            "in_reply_to is not an envelope id",
        ),
    ];
    for (f, why) in refused {
        let mut l = labels();
        f(&mut l);
        assert_eq!(
            check_labels(&l),
            Err(EnvelopeError::InvalidField((*why).into())),
            "{why}"
        );
    }
    let too_long: &[(LabelsEdit, &str, usize, usize)] = &[
        (
            |l| l.case_reference = "x".repeat(129),
            "labels.case_reference",
            129,
            128,
        ),
        (
            |l| {
                l.handling = v1::HandlingCode::H3 as i32;
                l.handling_restriction = "x".repeat(4097);
            },
            "labels.handling_restriction",
            4097,
            4096,
        ),
        (
            |l| l.legal_basis_reference = "x".repeat(5 << 20),
            "labels.legal_basis_reference",
            5 << 20,
            512,
        ),
        (
            |l| l.in_reply_to = "x".repeat(46),
            "labels.in_reply_to",
            46,
            45,
        ),
    ];
    for (f, field, len, max) in too_long {
        let mut l = labels();
        f(&mut l);
        let err = check_labels(&l).unwrap_err();
        assert_eq!(
            err,
            EnvelopeError::OutOfBounds(Exceeded::Length {
                field,
                len: *len,
                max: *max
            })
        );
        assert_eq!(
            err.to_string(),
            format!("{field} is {len} bytes long; the limit is {max}")
        );
    }
    let accepted: &[LabelsEdit] = &[
        |l| {
            l.handling = v1::HandlingCode::H3 as i32;
            l.handling_restriction = "x".repeat(4096);
        },
        |l| l.case_reference = "x".repeat(128),
        |l| l.legal_basis_reference = "x".repeat(512),
        |l| l.in_reply_to = format!("urn:uuid:{}", EnvelopeId::at(1_700_000_000_000)),
        |l| l.in_reply_to = EnvelopeId::at(1_700_000_000_000).to_string(),
        |l| l.evaluation = None,
        |l| l.handling = v1::HandlingCode::H0 as i32,
        // Classification and priority are optional.
        |l| {
            l.classification = 0;
            l.priority = 0;
        },
    ];
    for (i, f) in accepted.iter().enumerate() {
        let mut l = labels();
        f(&mut l);
        assert_eq!(check_labels(&l), Ok(()), "accepted case {i}");
    }
}

//! Compiling the examples, decisions and explanations, on bundles in
//! memory. Bundles on disk, signed in a federation, are tested with the
//! tools that write them (`tools::policy_tests`); the decision table for the
//! example bundles is in `tests/it/policy_table.rs`.

use super::*;
use crate::protocol::categories::CategorySet;
use crate::protocol::proto::v1;

fn id(s: &str) -> AgencyId {
    s.parse().unwrap()
}

// -- the examples ------------------------------------------------------------

#[test]
fn example_bundles_compile_without_warnings_for_every_template() {
    let policies = Policies::examples(&default_agencies()).unwrap();
    assert!(policies.is_examples());
    assert!(policies.hash().starts_with(EXAMPLES_HASH_PREFIX));
    let vocabulary = schema::Vocabulary::new().unwrap();
    for (owner, files) in examples::render(&default_agencies()) {
        let c = bundle::compile_files(&vocabulary, &owner, files).unwrap();
        assert!(c.warnings.is_empty(), "{owner}: {:#?}", c.warnings);
        for s in c.summaries() {
            assert!(s.reason.is_some(), "{owner}: {} has no @reason", s.id);
            assert!(!s.id.contains('#'), "{owner}: a policy without @id");
        }
    }
    // Every default agency has a bundle; the hash is stable.
    for a in default_agencies() {
        assert!(policies.has_bundle(&a.id), "{}", a.id);
    }
    assert_eq!(
        policies.hash(),
        Policies::examples(&default_agencies()).unwrap().hash()
    );
    assert_eq!(policies.bundles().len(), default_agencies().len() + 1);
}

fn labels(purpose: v1::Purpose, basis: v1::LegalBasis, reference: &str) -> v1::Labels {
    v1::Labels {
        purpose: purpose as i32,
        legal_basis: basis as i32,
        legal_basis_reference: reference.into(),
        handling: v1::HandlingCode::H1 as i32,
        classification: v1::Classification::Restricted as i32,
        priority: v1::Priority::Routine as i32,
        ..Default::default()
    }
}

fn facts(s: &str) -> AgencyFacts {
    default_agencies()
        .into_iter()
        .find(|a| a.id.to_string() == s)
        .unwrap_or_else(|| panic!("no default agency {s}"))
}

fn transfer(from: &str, to: &[&str], categories: &[v1::DataCategory], l: v1::Labels) -> Transfer {
    Transfer {
        sender: facts(from),
        recipients: to.iter().map(|t| facts(t)).collect(),
        kind: v1::RecordKind::InformationResponse,
        categories: categories.iter().copied().collect::<CategorySet>(),
        labels: l,
        created_at_ms: 1_700_000_000_000,
        expires_at_ms: 1_700_000_000_000 + 30 * 86_400_000,
        onward: None,
    }
}

#[test]
fn scenario_five_explanation_names_layer_policy_file_and_line() {
    let policies = Policies::examples(&default_agencies()).unwrap();
    let t = transfer(
        "HR/police",
        &["XK/police"],
        &[
            v1::DataCategory::Identity,
            v1::DataCategory::CaseNarrative,
            v1::DataCategory::Biometric,
        ],
        labels(
            v1::Purpose::Statistics,
            v1::LegalBasis::AppropriateSafeguards,
            "HR-XK police cooperation arrangement, Art. 9 safeguards",
        ),
    );
    let d = policies.decide(&t);
    assert!(!d.allowed);
    assert_eq!(d.bundle_hash, policies.hash());
    let (who, layer) = d.refusal().unwrap();
    assert_eq!(who, &id("XK/police"));
    assert_eq!(layer.layer, Layer::Framework);
    assert_eq!(layer.determining.len(), 1);
    let p = &layer.determining[0];
    assert_eq!(p.id, "no-biometric-genetic-for-statistics");
    assert_eq!(p.file, "framework/special-categories.cedar");
    let text = include_str!("../../../examples/policies/framework/special-categories.cedar");
    let line = text
        .lines()
        .position(|l| l.contains("@id(\"no-biometric-genetic-for-statistics\")"))
        .unwrap()
        + 1;
    assert_eq!(p.line as usize, line);
    let e = d.explanation();
    assert!(
        e.starts_with(&format!(
            "refused for XK/police by framework policy \"no-biometric-genetic-for-statistics\" (framework/special-categories.cedar:{line}): biometric and genetic data are never used for statistics"
        )),
        "{e}"
    );
    assert!(e.contains("[unsigned example policies]"), "{e}");
}

#[test]
fn permitted_explanations_name_the_permits_of_every_layer() {
    let policies = Policies::examples(&default_agencies()).unwrap();
    let mut t = transfer(
        "SI/police",
        &["HR/police", "BA/police"],
        &[v1::DataCategory::Location, v1::DataCategory::Vehicle],
        labels(
            v1::Purpose::ImmediateThreat,
            v1::LegalBasis::SpecificSituationDerogation,
            "LED Art. 38(1)(c)",
        ),
    );
    t.kind = v1::RecordKind::WantedAlert;
    t.labels.priority = v1::Priority::Immediate as i32;
    let d = policies.decide(&t);
    assert!(d.allowed, "{d}");
    let lines: Vec<String> = d.explanation().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("permitted for HR/police: framework \"lawful-transfer\" (framework/lawful-transfer.cedar:"), "{}", lines[0]);
    assert!(lines[0].contains(
        "SI/police outbound \"police-outbound-law-enforcement\" (agencies/SI/police/outbound.cedar:"
    ));
    assert!(lines[0].contains("HR/police inbound \"police-inbound-immediate-wanted-alerts\""));
    assert!(lines[1].starts_with("permitted for BA/police"));
}

#[test]
fn unknown_label_values_and_empty_recipient_lists_are_refused() {
    let policies = Policies::examples(&default_agencies()).unwrap();
    let mut t = transfer(
        "RS/police",
        &["ME/police"],
        &[v1::DataCategory::Identity],
        labels(
            v1::Purpose::InvestigationOther,
            v1::LegalBasis::RegionalPoliceConvention,
            "",
        ),
    );
    assert!(policies.decide(&t).allowed, "{}", policies.decide(&t));
    t.labels.handling = 77;
    let d = policies.decide(&t);
    assert!(!d.allowed);
    assert!(
        d.input_error
            .as_deref()
            .unwrap()
            .contains("Handling value 77"),
        "{d}"
    );
    t.labels.handling = v1::HandlingCode::H1 as i32;
    t.recipients.clear();
    assert!(!policies.decide(&t).allowed);
}

#[test]
fn retention_days_round_up_and_treat_no_expiry_as_unlimited() {
    let mut t = transfer("RS/police", &["ME/police"], &[], v1::Labels::default());
    t.expires_at_ms = t.created_at_ms + 86_400_000;
    assert_eq!(t.retention_days(), 1);
    t.expires_at_ms += 1;
    assert_eq!(t.retention_days(), 2);
    t.expires_at_ms = t.created_at_ms - 5;
    assert_eq!(t.retention_days(), 0);
    t.expires_at_ms = 0;
    assert_eq!(t.retention_days(), i64::MAX);
}

#[test]
fn a_policy_that_cannot_be_evaluated_refuses_its_layer() {
    // Overflow is an evaluation error; Cedar would skip the forbid, the
    // layer refuses instead.
    let files = [
        ("bundle.toml", "owner = \"framework\"\nversion = 1\n"),
        (
            "p.cedar",
            "permit (principal, action, resource);\n@id(\"overflows\")\nforbid (principal, action, resource) when { context.retention_days + 9223372036854775807 < 0 };\n",
        ),
    ]
    .iter()
    .map(|(n, c)| (n.to_string(), c.as_bytes().to_vec()))
    .collect();
    let vocabulary = schema::Vocabulary::new().unwrap();
    let framework =
        bundle::compile(&vocabulary, "framework", Some(&Owner::Framework), &files).unwrap();
    // The example agency bundles under this framework.
    let mut compiled = std::collections::BTreeMap::new();
    for (owner, files) in examples::render(&default_agencies()) {
        if let Owner::Agency(a) = &owner {
            let b = bundle::compile_files(&vocabulary, &owner, files).unwrap();
            compiled.insert(a.clone(), b);
        }
    }
    let policies = Policies::assemble(vocabulary, framework, compiled, true);
    let t = transfer(
        "RS/police",
        &["ME/police"],
        &[v1::DataCategory::Identity],
        labels(
            v1::Purpose::InvestigationOther,
            v1::LegalBasis::RegionalPoliceConvention,
            "",
        ),
    );
    let d = policies.decide(&t);
    assert!(!d.allowed);
    let (_, layer) = d.refusal().unwrap();
    assert_eq!(layer.layer, Layer::Framework);
    assert_eq!(layer.errors.len(), 1);
    assert_eq!(layer.errors[0].policy.id, "overflows");
    assert!(d.explanation().contains("could not be evaluated"), "{d}");
}

#[test]
fn policies_are_shareable() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Policies>();
    shareable::<Decision>();
}

#[test]
fn a_remembered_decision_answers_only_the_very_same_inputs() {
    let base = {
        let mut t = transfer(
            "SI/police",
            &["HR/police", "BA/police"],
            &[v1::DataCategory::Location, v1::DataCategory::Vehicle],
            labels(
                v1::Purpose::ImmediateThreat,
                v1::LegalBasis::SpecificSituationDerogation,
                "LED Art. 38(1)(c)",
            ),
        );
        t.kind = v1::RecordKind::WantedAlert;
        t.labels.priority = v1::Priority::Immediate as i32;
        t
    };
    // Each differs from the base in one input the layers read.
    let mut variants = vec![base.clone()];
    let mut vary = |f: &dyn Fn(&mut Transfer)| {
        let mut t = base.clone();
        f(&mut t);
        variants.push(t);
    };
    vary(&|t| t.kind = v1::RecordKind::InformationResponse);
    vary(&|t| t.labels.priority = v1::Priority::Routine as i32);
    vary(&|t| t.labels.legal_basis_reference = String::new());
    vary(&|t| t.labels.purpose = v1::Purpose::InvestigationOther as i32);
    vary(&|t| t.labels.handling = v1::HandlingCode::H3 as i32);
    vary(&|t| {
        t.categories.insert(v1::DataCategory::Biometric);
    });
    vary(&|t| t.recipients[1].eu_member = !t.recipients[1].eu_member);
    vary(&|t| t.sender.kind = v1::AgencyKind::Customs);
    vary(&|t| t.expires_at_ms = 0);
    vary(&|t| t.recipients.reverse());
    vary(&|t| {
        t.onward = Some(Onward {
            originator: id("HR/police"),
            original_handling: v1::HandlingCode::H2,
            permission_granted: false,
        })
    });
    vary(&|t| {
        t.onward = Some(Onward {
            originator: id("HR/police"),
            original_handling: v1::HandlingCode::H2,
            permission_granted: true,
        })
    });

    let warm = Policies::examples(&default_agencies()).unwrap();
    let first: Vec<Decision> = variants.iter().map(|t| warm.decide(t)).collect();
    assert!(first[0].allowed, "{}", first[0]);
    assert!(first.iter().any(|d| !d.allowed), "some variant is refused");
    assert!(warm.inner.decisions.len() > 2);
    // Asked again in another order, every answer is the one a set that
    // never decided anything gives for exactly those inputs.
    for (t, before) in variants.iter().zip(&first).rev() {
        let again = warm.decide(t);
        assert_eq!(&again, before);
        let cold = Policies::examples(&default_agencies()).unwrap();
        assert_eq!(again, cold.decide(t), "{again}");
    }
}

/// Policies whose framework and agency bundles all permit everything.
fn permit_all() -> Policies {
    let bundle = |owner: &str| {
        let policies = if owner == "framework" {
            "@id(\"everything\")\npermit (principal, action, resource);\n".to_string()
        } else {
            format!(
                "@id(\"everything-out\")\npermit (principal == Casebridge::Agency::\"{owner}\", action, resource);\n\
                 @id(\"everything-in\")\npermit (principal, action, resource == Casebridge::Agency::\"{owner}\");\n"
            )
        };
        [
            ("bundle.toml", format!("owner = \"{owner}\"\nversion = 1\n")),
            ("p.cedar", policies),
        ]
        .iter()
        .map(|(n, c)| (n.to_string(), c.as_bytes().to_vec()))
        .collect::<std::collections::BTreeMap<_, _>>()
    };
    let vocabulary = schema::Vocabulary::new().unwrap();
    let framework = bundle::compile(
        &vocabulary,
        "framework",
        Some(&Owner::Framework),
        &bundle("framework"),
    )
    .unwrap();
    let mut compiled = std::collections::BTreeMap::new();
    for a in default_agencies() {
        let owner = Owner::Agency(a.id.clone());
        let b = bundle::compile(
            &vocabulary,
            &a.id.to_string(),
            Some(&owner),
            &bundle(&a.id.to_string()),
        )
        .unwrap();
        compiled.insert(a.id.clone(), b);
    }
    Policies::assemble(vocabulary, framework, compiled, true)
}

#[test]
fn an_eu_members_personal_data_leaves_for_a_non_member_only_on_a_ground_whatever_the_bundles_say() {
    let policies = permit_all();
    let mla = |ground: v1::TransferGround| {
        let mut l = labels(
            v1::Purpose::Prosecution,
            v1::LegalBasis::EuropeanMlaConvention,
            "European Convention on Mutual Assistance in Criminal Matters, Art. 1",
        );
        l.transfer_ground = ground as i32;
        transfer(
            "HR/prosecutor",
            &["BA/prosecutor"],
            &[v1::DataCategory::Identity],
            l,
        )
    };
    let d = policies.decide(&mla(v1::TransferGround::None));
    assert!(!d.allowed, "{d}");
    let refusing: Vec<&Layer> = d.recipients[0]
        .layers
        .iter()
        .filter(|l| !l.allowed)
        .map(|l| &l.layer)
        .collect();
    assert_eq!(refusing, [&Layer::BuiltIn], "{d}");
    assert_eq!(
        d.refusal().unwrap().1.determining[0].id,
        decide::NEEDS_GROUND
    );
    assert!(
        d.explanation()
            .contains("by built-in rule \"eu-to-third-country-needs-ground\""),
        "{d}"
    );
    for ground in [
        v1::TransferGround::AdequacyDecision,
        v1::TransferGround::AppropriateSafeguards,
        v1::TransferGround::SpecificSituationDerogation,
    ] {
        let d = policies.decide(&mla(ground));
        assert!(d.allowed, "{ground:?}: {d}");
        assert_eq!(d.recipients[0].layers.len(), 3, "no built-in layer");
    }
    // No personal data, a member recipient, or a non-member sender: the rule
    // does not apply.
    let mut t = mla(v1::TransferGround::None);
    t.categories = CategorySet::new();
    assert!(policies.decide(&t).allowed);
    let mut t = mla(v1::TransferGround::None);
    t.recipients = vec![facts("SI/prosecutor")];
    assert!(policies.decide(&t).allowed);
    let mut t = mla(v1::TransferGround::None);
    t.sender = facts("RS/prosecutor");
    assert!(policies.decide(&t).allowed);
    // A ground given as the legal basis itself, named, still counts.
    let mut t = mla(v1::TransferGround::None);
    t.labels.legal_basis = v1::LegalBasis::AppropriateSafeguards as i32;
    assert!(policies.decide(&t).allowed);
    // A transfer ground the schema does not know refuses before Cedar runs.
    let mut t = mla(v1::TransferGround::None);
    t.labels.transfer_ground = 99;
    let d = policies.decide(&t);
    assert!(!d.allowed && d.input_error.is_some(), "{d}");
}

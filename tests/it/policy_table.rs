//! The example policy bundles, decided on a table of transfers.
//!
//! Each row is one transfer between agencies of the default development
//! federation and the decision the example bundles must reach: permitted
//! (every layer naming the permit that let it through), or refused by a
//! given layer and policy, by a layer's default deny, or for want of a
//! bundle. Pure: no servers, no keys; `Policies::examples` builds the same
//! bundles `pki init` installs and signs.

use casebridge::protocol::categories::CategorySet;
use casebridge::protocol::policy::{
    AgencyFacts, Onward, Policies, Transfer, default_agencies, default_eu_members,
};
use casebridge::protocol::proto::v1::{
    self, AgencyKind, Classification as Cl, DataCategory as C, HandlingCode as H,
    InformationAccuracy as Acc, LegalBasis as B, Priority as P, Purpose as Pu, RecordKind as K,
    SourceReliability as Src,
};
use casebridge::protocol::time::DAY_MS;

const CREATED_MS: i64 = 1_760_000_000_000;

#[derive(Debug, Clone)]
enum Expect {
    Permit,
    /// Refused for `recipient` first by `layer` ("framework", "outbound",
    /// "inbound") through the forbid policy `policy`.
    Forbid {
        recipient: &'static str,
        layer: &'static str,
        policy: &'static str,
    },
    /// Refused for `recipient` by `layer` because no policy permits it.
    DefaultDeny {
        recipient: &'static str,
        layer: &'static str,
    },
    /// Refused for `recipient` because `layer`'s agency has no bundle.
    NoBundle {
        recipient: &'static str,
        layer: &'static str,
    },
}

#[derive(Debug, Clone)]
struct Case {
    name: &'static str,
    from: &'static str,
    to: Vec<&'static str>,
    kind: K,
    categories: Vec<C>,
    labels: v1::Labels,
    retention_days: i64,
    onward: Option<Onward>,
    expect: Expect,
}

/// A transfer with unremarkable labels: regional police convention, H1,
/// restricted, routine, 30 days, identity data.
fn case(name: &'static str, from: &'static str, to: &[&'static str], kind: K) -> Case {
    Case {
        name,
        from,
        to: to.to_vec(),
        kind,
        categories: vec![C::Identity],
        labels: v1::Labels {
            purpose: Pu::InvestigationOther as i32,
            legal_basis: B::RegionalPoliceConvention as i32,
            legal_basis_reference: "Police Cooperation Convention for Southeast Europe".into(),
            handling: H::H1 as i32,
            classification: Cl::Restricted as i32,
            priority: P::Routine as i32,
            ..Default::default()
        },
        retention_days: 30,
        onward: None,
        expect: Expect::Permit,
    }
}

impl Case {
    fn cats(mut self, c: &[C]) -> Self {
        self.categories = c.to_vec();
        self
    }
    fn purpose(mut self, p: Pu) -> Self {
        self.labels.purpose = p as i32;
        self
    }
    fn basis(mut self, b: B, reference: &str) -> Self {
        self.labels.legal_basis = b as i32;
        self.labels.legal_basis_reference = reference.into();
        self
    }
    fn ground(mut self, g: v1::TransferGround) -> Self {
        self.labels.transfer_ground = g as i32;
        self
    }
    fn handling(mut self, h: H) -> Self {
        self.labels.handling = h as i32;
        self.labels.handling_restriction = if h == H::H3 {
            "For identification only; the family is informed through the requesting institute."
                .into()
        } else {
            String::new()
        };
        self
    }
    fn eval(mut self, s: Src, a: Acc) -> Self {
        self.labels.evaluation = Some(v1::Evaluation {
            source: s as i32,
            accuracy: a as i32,
        });
        self
    }
    fn class(mut self, c: Cl) -> Self {
        self.labels.classification = c as i32;
        self
    }
    fn priority(mut self, p: P) -> Self {
        self.labels.priority = p as i32;
        self
    }
    fn retention(mut self, days: i64) -> Self {
        self.retention_days = days;
        self
    }
    fn onward(mut self, originator: &str, original: H, granted: bool) -> Self {
        self.onward = Some(Onward {
            originator: originator.parse().expect("agency id"),
            original_handling: original,
            permission_granted: granted,
        });
        self
    }
    fn permit(self) -> Self {
        Case {
            expect: Expect::Permit,
            ..self
        }
    }
    fn forbid(self, recipient: &'static str, layer: &'static str, policy: &'static str) -> Self {
        Case {
            expect: Expect::Forbid {
                recipient,
                layer,
                policy,
            },
            ..self
        }
    }
    fn default_deny(self, recipient: &'static str, layer: &'static str) -> Self {
        Case {
            expect: Expect::DefaultDeny { recipient, layer },
            ..self
        }
    }
    fn no_bundle(self, recipient: &'static str, layer: &'static str) -> Self {
        Case {
            expect: Expect::NoBundle { recipient, layer },
            ..self
        }
    }

    fn transfer(&self) -> Transfer {
        Transfer {
            sender: facts(self.from),
            recipients: self.to.iter().map(|t| facts(t)).collect(),
            kind: self.kind,
            categories: self.categories.iter().copied().collect::<CategorySet>(),
            labels: self.labels.clone(),
            created_at_ms: CREATED_MS,
            expires_at_ms: CREATED_MS + self.retention_days * DAY_MS,
            onward: self.onward.clone(),
        }
    }
}

/// The default agencies, plus customs agencies, which have no example
/// bundle.
fn facts(id: &str) -> AgencyFacts {
    if let Some(a) = default_agencies()
        .into_iter()
        .find(|a| a.id.to_string() == id)
    {
        return a;
    }
    let id: casebridge::protocol::ids::AgencyId = id.parse().expect("agency id");
    assert_eq!(id.name(), "customs", "unknown agency {id} in the table");
    AgencyFacts {
        eu_member: default_eu_members().contains(&id.country()),
        id,
        kind: AgencyKind::Customs,
    }
}

const TRACE: &[C] = &[C::Identity, C::Contact, C::Location, C::Genetic];
const INTEL: &[C] = &[
    C::Identity,
    C::TravelMovement,
    C::Vehicle,
    C::Communications,
    C::CaseNarrative,
];

fn table() -> Vec<Case> {
    vec![
        // -- the demo's scenarios, labels as the demo sends them ---------------
        case(
            "1a tracing request",
            "BA/missing-persons",
            &["HR/missing-persons"],
            K::MissingPersonTrace,
        )
        .cats(TRACE)
        .purpose(Pu::MissingPersons)
        .basis(
            B::HumanitarianAgreement,
            "BA-HR agreement on tracing missing persons",
        )
        .handling(H::H3)
        .class(Cl::Restricted)
        .priority(P::Routine)
        .retention(30)
        .permit(),
        case(
            "1b trace result",
            "HR/missing-persons",
            &["BA/missing-persons"],
            K::TraceResult,
        )
        .cats(&[C::Identity, C::Location, C::Genetic])
        .purpose(Pu::MissingPersons)
        .basis(
            B::SpecificSituationDerogation,
            "LED Art. 38(1)(a): vital interests of the missing person",
        )
        .handling(H::H3)
        .retention(30)
        .permit(),
        case(
            "2a MLA request for bank records",
            "RS/prosecutor",
            &["ME/prosecutor"],
            K::MlaRequest,
        )
        .cats(&[
            C::Identity,
            C::IdentityDocument,
            C::Financial,
            C::CaseNarrative,
        ])
        .purpose(Pu::Prosecution)
        .basis(B::EuropeanMlaConvention, "")
        .handling(H::H1)
        .class(Cl::Confidential)
        .priority(P::Urgent)
        .retention(180)
        .permit(),
        case(
            "2b MLA response",
            "ME/prosecutor",
            &["RS/prosecutor"],
            K::MlaResponse,
        )
        .cats(&[C::Financial, C::CaseNarrative])
        .purpose(Pu::Prosecution)
        .basis(B::EuropeanMlaConvention, "")
        .handling(H::H1)
        .class(Cl::Confidential)
        .priority(P::Urgent)
        .retention(180)
        .permit(),
        case(
            "3 immediate wanted-vehicle alert to three countries",
            "SI/police",
            &["HR/police", "BA/police", "RS/police"],
            K::WantedAlert,
        )
        .cats(&[C::Location, C::Vehicle, C::CaseNarrative])
        .purpose(Pu::ImmediateThreat)
        .basis(
            B::SpecificSituationDerogation,
            "LED Art. 38(1)(c): immediate and serious threat to public security",
        )
        .handling(H::H0)
        .eval(Src::B, Acc::InformationAccuracy2)
        .class(Cl::Restricted)
        .priority(P::Immediate)
        .retention(14)
        .permit(),
        case(
            "4 intelligence on a smuggling route",
            "MK/police",
            &["RS/police"],
            K::IntelligenceReport,
        )
        .cats(INTEL)
        .purpose(Pu::InvestigationMigrantSmuggling)
        .basis(B::RegionalPoliceConvention, "")
        .handling(H::H2)
        .eval(Src::B, Acc::InformationAccuracy3)
        .retention(180)
        .permit(),
        case(
            "4 onward to AL without MK's permission",
            "RS/police",
            &["AL/police"],
            K::IntelligenceReport,
        )
        .cats(INTEL)
        .purpose(Pu::InvestigationMigrantSmuggling)
        .basis(B::RegionalPoliceConvention, "")
        .handling(H::H2)
        .eval(Src::B, Acc::InformationAccuracy3)
        .retention(180)
        .onward("MK/police", H::H2, false)
        .forbid("AL/police", "framework", "h2-onward-needs-permission"),
        case(
            "4 onward to AL with MK's permission",
            "RS/police",
            &["AL/police"],
            K::IntelligenceReport,
        )
        .cats(INTEL)
        .purpose(Pu::InvestigationMigrantSmuggling)
        .basis(B::RegionalPoliceConvention, "")
        .handling(H::H2)
        .eval(Src::B, Acc::InformationAccuracy3)
        .retention(180)
        .onward("MK/police", H::H2, true)
        .permit(),
        case(
            "5 fingerprints for statistics",
            "HR/police",
            &["XK/police"],
            K::InformationResponse,
        )
        .cats(&[C::Identity, C::CaseNarrative, C::Biometric])
        .purpose(Pu::Statistics)
        .basis(
            B::AppropriateSafeguards,
            "HR-XK police cooperation arrangement, Art. 9 safeguards",
        )
        .handling(H::H1)
        .forbid(
            "XK/police",
            "framework",
            "no-biometric-genetic-for-statistics",
        ),
        // -- third-country transfers ---------------------------------------------
        case(
            "EU to non-member on a police convention",
            "HR/police",
            &["RS/police"],
            K::InformationResponse,
        )
        .purpose(Pu::InvestigationOrganisedCrime)
        .forbid("RS/police", "framework", "eu-to-third-country-needs-ground"),
        case(
            "EU to non-member with appropriate safeguards",
            "HR/police",
            &["RS/police"],
            K::InformationResponse,
        )
        .purpose(Pu::InvestigationOrganisedCrime)
        .basis(
            B::AppropriateSafeguards,
            "HR-RS agreement on police cooperation, Art. 12",
        )
        .permit(),
        case(
            "EU to non-member, safeguards not named",
            "HR/police",
            &["RS/police"],
            K::InformationResponse,
        )
        .purpose(Pu::InvestigationOrganisedCrime)
        .basis(B::AppropriateSafeguards, "  ")
        .forbid("RS/police", "framework", "eu-to-third-country-needs-ground"),
        case(
            "EU to non-member, adequacy decision",
            "SI/border-police",
            &["BA/border-police"],
            K::MigrantRegistration,
        )
        .cats(&[C::Identity, C::TravelMovement])
        .purpose(Pu::BorderManagement)
        .basis(
            B::AdequacyDecision,
            "hypothetical adequacy decision for the test",
        )
        .retention(60)
        .permit(),
        case(
            "EU to EU on a police convention",
            "SI/police",
            &["HR/police"],
            K::InformationResponse,
        )
        .purpose(Pu::InvestigationOrganisedCrime)
        .permit(),
        case(
            "non-member to EU on a police convention",
            "RS/police",
            &["HR/police"],
            K::InformationResponse,
        )
        .purpose(Pu::InvestigationOrganisedCrime)
        .permit(),
        case(
            "EU to non-member, statistics without personal data",
            "HR/police",
            &["ME/police"],
            K::Statistics,
        )
        .cats(&[])
        .purpose(Pu::Statistics)
        .permit(),
        case(
            "EU prosecutor's MLA request to a non-member: convention and safeguards",
            "HR/prosecutor",
            &["BA/prosecutor"],
            K::MlaRequest,
        )
        .cats(&[C::Identity, C::Financial])
        .purpose(Pu::Prosecution)
        .basis(
            B::EuropeanMlaConvention,
            "European Convention on Mutual Assistance in Criminal Matters (1959), Art. 1",
        )
        .ground(v1::TransferGround::AppropriateSafeguards)
        .permit(),
        case(
            "EU prosecutor's MLA request to a non-member: convention without a ground",
            "HR/prosecutor",
            &["BA/prosecutor"],
            K::MlaRequest,
        )
        .cats(&[C::Identity, C::Financial])
        .purpose(Pu::Prosecution)
        .basis(
            B::EuropeanMlaConvention,
            "European Convention on Mutual Assistance in Criminal Matters (1959), Art. 1",
        )
        .forbid(
            "BA/prosecutor",
            "framework",
            "eu-to-third-country-needs-ground",
        ),
        case(
            "EU prosecutor's MLA request to a non-member: a ground but no treaty",
            "HR/prosecutor",
            &["BA/prosecutor"],
            K::MlaRequest,
        )
        .cats(&[C::Identity, C::Financial])
        .purpose(Pu::Prosecution)
        .basis(
            B::AppropriateSafeguards,
            "HR-BA exchange of letters on safeguards",
        )
        .forbid(
            "BA/prosecutor",
            "inbound",
            "prosecutor-inbound-mla-needs-treaty",
        ),
        case(
            "EU prosecutor's MLA request to a member needs no ground",
            "HR/prosecutor",
            &["SI/prosecutor"],
            K::MlaRequest,
        )
        .cats(&[C::Identity, C::Financial])
        .purpose(Pu::Prosecution)
        .basis(
            B::EuropeanMlaConvention,
            "European Convention on Mutual Assistance in Criminal Matters (1959), Art. 1",
        )
        .permit(),
        case(
            "one of two recipients outside the EU without a ground",
            "SI/police",
            &["HR/police", "RS/police"],
            K::InformationResponse,
        )
        .purpose(Pu::InvestigationOrganisedCrime)
        .forbid("RS/police", "framework", "eu-to-third-country-needs-ground"),
        // -- missing-persons tracing -------------------------------------------------
        case(
            "tracing with a case narrative",
            "BA/missing-persons",
            &["HR/missing-persons"],
            K::MissingPersonTrace,
        )
        .cats(&[C::Identity, C::Location, C::CaseNarrative])
        .purpose(Pu::MissingPersons)
        .basis(
            B::HumanitarianAgreement,
            "BA-HR agreement on tracing missing persons",
        )
        .handling(H::H3)
        .forbid("HR/missing-persons", "framework", "tracing-categories-only"),
        case(
            "tracing with health data",
            "BA/missing-persons",
            &["HR/missing-persons"],
            K::MissingPersonTrace,
        )
        .cats(&[C::Identity, C::Health])
        .purpose(Pu::MissingPersons)
        .basis(
            B::HumanitarianAgreement,
            "BA-HR agreement on tracing missing persons",
        )
        .handling(H::H3)
        .forbid("HR/missing-persons", "framework", "tracing-categories-only"),
        case(
            "tracing with fingerprints",
            "BA/missing-persons",
            &["HR/missing-persons"],
            K::MissingPersonTrace,
        )
        .cats(&[C::Identity, C::Biometric])
        .purpose(Pu::MissingPersons)
        .basis(
            B::HumanitarianAgreement,
            "BA-HR agreement on tracing missing persons",
        )
        .handling(H::H3)
        .forbid("HR/missing-persons", "framework", "tracing-categories-only"),
        case(
            "tracing with bank data",
            "BA/missing-persons",
            &["HR/missing-persons"],
            K::MissingPersonTrace,
        )
        .cats(&[C::Identity, C::Financial])
        .purpose(Pu::MissingPersons)
        .basis(
            B::HumanitarianAgreement,
            "BA-HR agreement on tracing missing persons",
        )
        .handling(H::H3)
        .forbid("HR/missing-persons", "framework", "tracing-categories-only"),
        case(
            "tracing with a minor's status",
            "BA/missing-persons",
            &["HR/missing-persons"],
            K::MissingPersonTrace,
        )
        .cats(&[C::Identity, C::Minor])
        .purpose(Pu::MissingPersons)
        .basis(
            B::HumanitarianAgreement,
            "BA-HR agreement on tracing missing persons",
        )
        .handling(H::H3)
        .forbid("HR/missing-persons", "framework", "tracing-categories-only"),
        case(
            "a police request to a missing-persons institute with a narrative",
            "RS/police",
            &["BA/missing-persons"],
            K::InformationRequest,
        )
        .cats(&[C::Identity, C::CaseNarrative])
        .purpose(Pu::InvestigationOther)
        .forbid("BA/missing-persons", "framework", "tracing-categories-only"),
        case(
            "a tracing request used for an investigation",
            "BA/missing-persons",
            &["HR/missing-persons"],
            K::MissingPersonTrace,
        )
        .cats(TRACE)
        .purpose(Pu::InvestigationOther)
        .basis(
            B::HumanitarianAgreement,
            "BA-HR agreement on tracing missing persons",
        )
        .handling(H::H3)
        .forbid(
            "HR/missing-persons",
            "framework",
            "tracing-records-for-tracing-only",
        ),
        case(
            "police report a finding to a missing-persons institute",
            "RS/police",
            &["BA/missing-persons"],
            K::InformationResponse,
        )
        .cats(&[C::Identity, C::Location])
        .purpose(Pu::MissingPersons)
        .permit(),
        case(
            "police send a DNA profile under a police convention",
            "RS/police",
            &["BA/missing-persons"],
            K::TraceResult,
        )
        .cats(&[C::Identity, C::Genetic])
        .purpose(Pu::MissingPersons)
        .basis(
            B::RegionalPoliceConvention,
            "RS-BA police protocol on identification",
        )
        .forbid(
            "BA/missing-persons",
            "inbound",
            "missing-persons-inbound-genetic-needs-humanitarian-basis",
        ),
        case(
            "an institute asks the police for help",
            "BA/missing-persons",
            &["BA/police"],
            K::MissingPersonTrace,
        )
        .cats(&[C::Identity, C::Location])
        .purpose(Pu::MissingPersons)
        .basis(B::HumanitarianAgreement, "national law on missing persons")
        .permit(),
        case(
            "an institute sends a trace result to the police",
            "HR/missing-persons",
            &["BA/police"],
            K::TraceResult,
        )
        .cats(&[C::Identity, C::Location])
        .purpose(Pu::MissingPersons)
        .basis(
            B::SpecificSituationDerogation,
            "LED Art. 38(1)(a): vital interests of the missing person",
        )
        .default_deny("BA/police", "outbound"),
        // -- special categories -------------------------------------------------------
        case(
            "genetic data for statistics",
            "RS/police",
            &["ME/police"],
            K::InformationResponse,
        )
        .cats(&[C::Genetic])
        .purpose(Pu::Statistics)
        .forbid(
            "ME/police",
            "framework",
            "no-biometric-genetic-for-statistics",
        ),
        case(
            "fingerprints without a named basis",
            "RS/police",
            &["ME/police"],
            K::InformationResponse,
        )
        .cats(&[C::Identity, C::Biometric])
        .purpose(Pu::InvestigationOrganisedCrime)
        .basis(B::RegionalPoliceConvention, "")
        .forbid(
            "ME/police",
            "framework",
            "special-categories-need-named-basis",
        ),
        case(
            "fingerprints for an organised-crime case",
            "RS/police",
            &["ME/police"],
            K::InformationResponse,
        )
        .cats(&[C::Identity, C::Biometric])
        .purpose(Pu::InvestigationOrganisedCrime)
        .permit(),
        case(
            "fingerprints for a minor offence",
            "RS/police",
            &["ME/police"],
            K::InformationResponse,
        )
        .cats(&[C::Identity, C::Biometric])
        .purpose(Pu::InvestigationOther)
        .forbid(
            "ME/police",
            "inbound",
            "police-inbound-special-categories-for-serious-crime",
        ),
        // -- statistics -------------------------------------------------------------
        case(
            "statistics with personal data",
            "RS/police",
            &["ME/police"],
            K::Statistics,
        )
        .cats(&[C::Identity])
        .purpose(Pu::Statistics)
        .forbid("ME/police", "framework", "statistics-without-personal-data"),
        case(
            "aggregated border statistics",
            "RS/border-police",
            &["ME/border-police"],
            K::Statistics,
        )
        .cats(&[])
        .purpose(Pu::Statistics)
        .permit(),
        // -- retention -----------------------------------------------------------------
        case(
            "kept 366 days",
            "RS/police",
            &["ME/police"],
            K::InformationResponse,
        )
        .retention(366)
        .forbid("ME/police", "framework", "retention-at-most-365-days"),
        case(
            "kept 365 days",
            "RS/police",
            &["ME/police"],
            K::InformationResponse,
        )
        .retention(365)
        .permit(),
        case(
            "border police accept 90 days at most",
            "RS/police",
            &["ME/border-police"],
            K::InformationResponse,
        )
        .purpose(Pu::InvestigationMigrantSmuggling)
        .retention(120)
        .forbid(
            "ME/border-police",
            "inbound",
            "border-police-inbound-retention-90-days",
        ),
        case(
            "border police accept 90 days",
            "RS/police",
            &["ME/border-police"],
            K::InformationResponse,
        )
        .purpose(Pu::InvestigationMigrantSmuggling)
        .retention(90)
        .permit(),
        // -- the agencies' own layers ------------------------------------------------
        case(
            "confidential MLA material to the police",
            "RS/prosecutor",
            &["ME/police"],
            K::InformationRequest,
        )
        .purpose(Pu::Prosecution)
        .basis(B::EuropeanMlaConvention, "")
        .class(Cl::Confidential)
        .forbid(
            "ME/police",
            "outbound",
            "prosecutor-outbound-confidential-to-prosecutors-only",
        ),
        case(
            "restricted MLA request to the police",
            "RS/prosecutor",
            &["ME/police"],
            K::InformationRequest,
        )
        .purpose(Pu::Prosecution)
        .basis(B::EuropeanMlaConvention, "")
        .permit(),
        case(
            "MLA on a police convention",
            "RS/prosecutor",
            &["ME/prosecutor"],
            K::MlaRequest,
        )
        .cats(&[C::Identity, C::Financial])
        .purpose(Pu::Prosecution)
        .basis(B::RegionalPoliceConvention, "")
        .forbid(
            "ME/prosecutor",
            "inbound",
            "prosecutor-inbound-mla-needs-treaty",
        ),
        case(
            "intelligence without a 4x4 evaluation",
            "MK/police",
            &["RS/police"],
            K::IntelligenceReport,
        )
        .cats(INTEL)
        .purpose(Pu::InvestigationMigrantSmuggling)
        .handling(H::H2)
        .forbid(
            "RS/police",
            "inbound",
            "police-inbound-intelligence-needs-evaluation",
        ),
        case(
            "a minor's data for a minor offence",
            "RS/police",
            &["ME/police"],
            K::InformationResponse,
        )
        .cats(&[C::Identity, C::Minor])
        .purpose(Pu::InvestigationOther)
        .forbid(
            "ME/police",
            "outbound",
            "police-outbound-minors-only-to-protect",
        ),
        case(
            "a minor's data in a trafficking case",
            "RS/police",
            &["ME/police"],
            K::InformationResponse,
        )
        .cats(&[C::Identity, C::Minor, C::VictimStatus])
        .purpose(Pu::InvestigationTraffickingInHumanBeings)
        .permit(),
        case(
            "police findings to a prosecutor",
            "RS/police",
            &["ME/prosecutor"],
            K::InformationResponse,
        )
        .cats(&[C::Identity, C::CaseNarrative])
        .purpose(Pu::Prosecution)
        .permit(),
        case(
            "a wanted alert to a prosecutor",
            "RS/police",
            &["ME/prosecutor"],
            K::WantedAlert,
        )
        .cats(&[C::Identity, C::CaseNarrative])
        .purpose(Pu::InvestigationOther)
        .default_deny("ME/prosecutor", "inbound"),
        case(
            "border police writing to a prosecutor",
            "RS/border-police",
            &["ME/prosecutor"],
            K::InformationResponse,
        )
        .purpose(Pu::InvestigationMigrantSmuggling)
        .default_deny("ME/prosecutor", "outbound"),
        case(
            "a routine wanted alert from border police",
            "RS/border-police",
            &["ME/police"],
            K::WantedAlert,
        )
        .purpose(Pu::BorderManagement)
        .permit(),
        // -- agencies without a bundle --------------------------------------------------
        case(
            "to customs, which have no bundle",
            "RS/police",
            &["ME/customs"],
            K::InformationResponse,
        )
        .purpose(Pu::InvestigationOrganisedCrime)
        .no_bundle("ME/customs", "inbound"),
        case(
            "from customs, which have no bundle",
            "HR/customs",
            &["RS/police"],
            K::InformationResponse,
        )
        .purpose(Pu::InvestigationOrganisedCrime)
        .basis(B::AppropriateSafeguards, "HR-RS customs agreement, Art. 7")
        .no_bundle("RS/police", "outbound"),
        // -- onward transfers and handling codes ----------------------------------------
        case(
            "an H3 trace result passed on without permission",
            "BA/missing-persons",
            &["ME/missing-persons"],
            K::TraceResult,
        )
        .cats(&[C::Identity, C::Location])
        .purpose(Pu::MissingPersons)
        .basis(
            B::HumanitarianAgreement,
            "regional humanitarian data-sharing agreement",
        )
        .handling(H::H3)
        .onward("HR/missing-persons", H::H3, false)
        .forbid(
            "ME/missing-persons",
            "framework",
            "h3-onward-needs-permission",
        ),
        case(
            "an H3 trace result passed on with permission",
            "BA/missing-persons",
            &["ME/missing-persons"],
            K::TraceResult,
        )
        .cats(&[C::Identity, C::Location])
        .purpose(Pu::MissingPersons)
        .basis(
            B::HumanitarianAgreement,
            "regional humanitarian data-sharing agreement",
        )
        .handling(H::H3)
        .onward("HR/missing-persons", H::H3, true)
        .permit(),
        case(
            "an H1 MLA answer passed on to the police",
            "RS/prosecutor",
            &["RS/police"],
            K::MlaResponse,
        )
        .cats(&[C::Financial, C::CaseNarrative])
        .purpose(Pu::Prosecution)
        .basis(B::EuropeanMlaConvention, "")
        .handling(H::H1)
        .onward("ME/prosecutor", H::H1, false)
        .permit(),
        case(
            "an H1 answer passed on as H0",
            "RS/prosecutor",
            &["RS/police"],
            K::MlaResponse,
        )
        .cats(&[C::Financial, C::CaseNarrative])
        .purpose(Pu::Prosecution)
        .basis(B::EuropeanMlaConvention, "")
        .handling(H::H0)
        .onward("ME/prosecutor", H::H1, false)
        .forbid("RS/police", "framework", "onward-keeps-handling-code"),
        case(
            "an H0 alert passed on",
            "RS/police",
            &["AL/police"],
            K::WantedAlert,
        )
        .cats(&[C::Location, C::Vehicle])
        .purpose(Pu::ImmediateThreat)
        .handling(H::H0)
        .priority(P::Immediate)
        .onward("SI/police", H::H0, false)
        .permit(),
        case(
            "asking MK for permission to pass a report on",
            "RS/police",
            &["MK/police"],
            K::PermissionRequest,
        )
        .cats(&[C::CaseNarrative])
        .purpose(Pu::InvestigationMigrantSmuggling)
        .handling(H::H2)
        .permit(),
        case(
            "MK granting the permission",
            "MK/police",
            &["RS/police"],
            K::PermissionGrant,
        )
        .cats(&[])
        .purpose(Pu::InvestigationMigrantSmuggling)
        .handling(H::H2)
        .permit(),
        case(
            "a prosecutor asks another for permission",
            "ME/prosecutor",
            &["RS/prosecutor"],
            K::PermissionRequest,
        )
        .cats(&[C::CaseNarrative])
        .purpose(Pu::Prosecution)
        .basis(B::EuropeanMlaConvention, "")
        .permit(),
        case(
            "border police grant a permission",
            "SI/border-police",
            &["HR/border-police"],
            K::PermissionGrant,
        )
        .cats(&[])
        .purpose(Pu::BorderManagement)
        .handling(H::H2)
        .permit(),
        case(
            "an institute asks another for permission",
            "BA/missing-persons",
            &["HR/missing-persons"],
            K::PermissionRequest,
        )
        .cats(&[])
        .purpose(Pu::MissingPersons)
        .basis(
            B::HumanitarianAgreement,
            "BA-HR agreement on tracing missing persons",
        )
        .handling(H::H3)
        .permit(),
        case(
            "an immediate alert reaches the border crossings",
            "SI/police",
            &["HR/border-police"],
            K::WantedAlert,
        )
        .cats(&[C::Vehicle, C::Location])
        .purpose(Pu::InvestigationOther)
        .handling(H::H0)
        .priority(P::Immediate)
        .retention(14)
        .permit(),
        // -- labels -------------------------------------------------------------------------
        case(
            "no purpose",
            "RS/police",
            &["ME/police"],
            K::InformationResponse,
        )
        .purpose(Pu::Unspecified)
        .forbid(
            "ME/police",
            "framework",
            "purpose-legal-basis-and-handling-required",
        ),
        case(
            "no legal basis",
            "RS/police",
            &["ME/police"],
            K::InformationResponse,
        )
        .basis(B::Unspecified, "")
        .forbid(
            "ME/police",
            "framework",
            "purpose-legal-basis-and-handling-required",
        ),
    ]
}

/// What is wrong with `c`'s decision, if anything.
fn check(policies: &Policies, c: &Case) -> Option<String> {
    let d = policies.decide(&c.transfer());
    let explanation = d.explanation();
    if d.bundle_hash != policies.hash() {
        return Some("decision carries another bundle hash".into());
    }
    if d.recipients.len() != c.to.len() {
        return Some(format!(
            "{} recipient decisions for {} recipients",
            d.recipients.len(),
            c.to.len()
        ));
    }
    match &c.expect {
        Expect::Permit => {
            if !d.allowed {
                return Some(format!("refused, expected permitted:\n{explanation}"));
            }
            for r in &d.recipients {
                for l in &r.layers {
                    if l.determining.is_empty() {
                        return Some(format!("{} permitted without a named permit", l.layer));
                    }
                }
            }
            None
        }
        Expect::Forbid {
            recipient,
            layer,
            policy,
        } => {
            let Some((who, l)) = d.refusal().filter(|_| !d.allowed) else {
                return Some(format!(
                    "permitted, expected refused by {policy}:\n{explanation}"
                ));
            };
            if who.to_string() != *recipient || l.layer.name() != *layer {
                return Some(format!(
                    "refused for {who} by {}, expected for {recipient} by {layer}:\n{explanation}",
                    l.layer
                ));
            }
            if !l.determining.iter().any(|p| p.id == *policy) {
                return Some(format!(
                    "refused by {:?}, expected {policy}:\n{explanation}",
                    l.determining.iter().map(|p| &p.id).collect::<Vec<_>>()
                ));
            }
            let named = format!("policy \"{policy}\" (");
            if !explanation.contains(&named) {
                return Some(format!(
                    "explanation does not name {policy}:\n{explanation}"
                ));
            }
            None
        }
        Expect::DefaultDeny { recipient, layer } => {
            let Some((who, l)) = d.refusal().filter(|_| !d.allowed) else {
                return Some(format!(
                    "permitted, expected a default deny:\n{explanation}"
                ));
            };
            if who.to_string() != *recipient
                || l.layer.name() != *layer
                || !l.determining.is_empty()
                || l.no_bundle
            {
                return Some(format!(
                    "expected a default deny by {layer} for {recipient}:\n{explanation}"
                ));
            }
            if !explanation.contains("no policy permits it (default deny)") {
                return Some(format!(
                    "explanation does not say default deny:\n{explanation}"
                ));
            }
            None
        }
        Expect::NoBundle { recipient, layer } => {
            let Some((who, l)) = d.refusal().filter(|_| !d.allowed) else {
                return Some(format!(
                    "permitted, expected refused for want of a bundle:\n{explanation}"
                ));
            };
            if who.to_string() != *recipient || l.layer.name() != *layer || !l.no_bundle {
                return Some(format!(
                    "expected no bundle in {layer} for {recipient}:\n{explanation}"
                ));
            }
            if !explanation.contains("has no policy bundle in force") {
                return Some(format!(
                    "explanation does not say there is no bundle:\n{explanation}"
                ));
            }
            None
        }
    }
}

#[test]
fn example_policies_decide_the_table() {
    let policies = Policies::examples(&default_agencies()).expect("example bundles load");
    let table = table();
    assert!(table.len() >= 40, "{} cases", table.len());
    let failures: Vec<String> = table
        .iter()
        .filter_map(|c| check(&policies, c).map(|why| format!("{}: {why}", c.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        table.len(),
        failures.join("\n\n")
    );
}

#[test]
fn every_example_policy_decides_at_least_one_row() {
    let policies = Policies::examples(&default_agencies()).expect("example bundles load");
    let mut used = std::collections::BTreeSet::new();
    for c in table() {
        let d = policies.decide(&c.transfer());
        for r in &d.recipients {
            for l in &r.layers {
                for p in &l.determining {
                    used.insert(p.id.clone());
                }
            }
        }
    }
    let unused: Vec<String> = policies
        .policies()
        .into_iter()
        .map(|p| p.id)
        .filter(|id| !used.contains(id))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(unused.is_empty(), "policies no row exercises: {unused:?}");
}

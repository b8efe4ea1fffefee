//! The example bundles of `examples/policies/`, embedded in the binary.
//!
//! The framework is used as is; agency bundles are instantiated from one
//! template per agency kind by replacing `{{owner}}` with the agency id. The
//! same rendering feeds [`Policies::examples`](super::Policies::examples)
//! (unsigned, in memory) and `storage::files::policy::install_examples`
//! (written and signed into a federation by `pki init`), so what the tests
//! decide on is byte for byte what a development federation enforces. The
//! agencies a development federation has are here too ([`agencies_for`],
//! [`default_countries`]), for `pki init` and the examples alike.

use std::collections::BTreeMap;

use super::Owner;
use super::decide::AgencyFacts;
use crate::protocol::directory::Directory;
use crate::protocol::ids::{AgencyId, Country};
use crate::protocol::proto::v1;

/// The placeholder a template uses for its owner's agency id.
const OWNER_PLACEHOLDER: &str = "{{owner}}";

type Files = &'static [(&'static str, &'static str)];

const FRAMEWORK: Files = &[
    (
        "bundle.toml",
        include_str!("../../../examples/policies/framework/bundle.toml"),
    ),
    (
        "lawful-transfer.cedar",
        include_str!("../../../examples/policies/framework/lawful-transfer.cedar"),
    ),
    (
        "missing-persons.cedar",
        include_str!("../../../examples/policies/framework/missing-persons.cedar"),
    ),
    (
        "onward.cedar",
        include_str!("../../../examples/policies/framework/onward.cedar"),
    ),
    (
        "retention.cedar",
        include_str!("../../../examples/policies/framework/retention.cedar"),
    ),
    (
        "special-categories.cedar",
        include_str!("../../../examples/policies/framework/special-categories.cedar"),
    ),
    (
        "statistics.cedar",
        include_str!("../../../examples/policies/framework/statistics.cedar"),
    ),
    (
        "third-country.cedar",
        include_str!("../../../examples/policies/framework/third-country.cedar"),
    ),
];

macro_rules! template {
    ($name:literal) => {
        &[
            (
                "bundle.toml",
                include_str!(concat!(
                    "../../../examples/policies/templates/",
                    $name,
                    "/bundle.toml"
                )),
            ),
            (
                "inbound.cedar",
                include_str!(concat!(
                    "../../../examples/policies/templates/",
                    $name,
                    "/inbound.cedar"
                )),
            ),
            (
                "outbound.cedar",
                include_str!(concat!(
                    "../../../examples/policies/templates/",
                    $name,
                    "/outbound.cedar"
                )),
            ),
        ]
    };
}

/// The templates, by name (their directory under `templates/`).
const TEMPLATES: [(&str, Files); 4] = [
    ("police", template!("police")),
    ("prosecutor", template!("prosecutor")),
    ("border-police", template!("border-police")),
    ("missing-persons", template!("missing-persons")),
];

/// The template an agency of `kind` gets, by name; `None` for kinds without
/// one (customs, interior ministry, Red Cross tracing, labour inspection),
/// which get no example bundle and can therefore neither send nor receive.
pub fn template_for(kind: v1::AgencyKind) -> Option<&'static str> {
    match kind {
        v1::AgencyKind::CriminalPolice => Some("police"),
        v1::AgencyKind::Prosecutor => Some("prosecutor"),
        v1::AgencyKind::BorderPolice => Some("border-police"),
        v1::AgencyKind::MissingPersons => Some("missing-persons"),
        v1::AgencyKind::Unspecified
        | v1::AgencyKind::Customs
        | v1::AgencyKind::InteriorMinistry
        | v1::AgencyKind::RedCrossTracing
        | v1::AgencyKind::LabourInspection => None,
    }
}

fn template_files(name: &str) -> Option<Files> {
    TEMPLATES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, files)| *files)
}

/// The countries a development federation has unless told otherwise: those
/// the scenarios in docs and the demo play.
pub fn default_countries() -> Vec<Country> {
    ["HR", "RS", "BA", "ME", "SI", "MK", "AL", "XK"]
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect()
}

/// The agencies each country gets.
pub fn agencies_for(cc: Country) -> Vec<(&'static str, v1::AgencyKind, &'static str)> {
    let mut v = vec![
        ("police", v1::AgencyKind::CriminalPolice, "Criminal police"),
        (
            "prosecutor",
            v1::AgencyKind::Prosecutor,
            "Prosecutor's office",
        ),
        (
            "border-police",
            v1::AgencyKind::BorderPolice,
            "Border police",
        ),
    ];
    if matches!(cc.as_str(), "BA" | "HR" | "RS" | "ME" | "XK") {
        v.push((
            "missing-persons",
            v1::AgencyKind::MissingPersons,
            "Missing-persons institute",
        ));
    }
    v
}

/// The countries of [`default_countries`] that a development federation
/// lists as EU members unless told otherwise (`pki init --eu-members`). The
/// regime of a country is the directory's word alone; this is only what
/// `pki init` writes into a new directory.
pub fn default_eu_members() -> Vec<Country> {
    ["HR", "SI"].iter().filter_map(|c| c.parse().ok()).collect()
}

/// The agencies `pki init` creates for `countries` ([`agencies_for`]), each
/// an EU member if its country is in `eu_members`.
pub fn agencies_of(countries: &[Country], eu_members: &[Country]) -> Vec<AgencyFacts> {
    countries
        .iter()
        .flat_map(|&cc| {
            agencies_for(cc)
                .into_iter()
                .filter_map(move |(name, kind, _)| {
                    AgencyId::new(cc, name).ok().map(|id| AgencyFacts {
                        id,
                        kind,
                        eu_member: eu_members.contains(&cc),
                    })
                })
        })
        .collect()
}

/// The agencies a directory lists, with the kind and regime it states for
/// each ([`AgencyFacts::from_directory`]).
pub fn agencies_in(directory: &Directory) -> Vec<AgencyFacts> {
    directory
        .agencies()
        .filter_map(|a| AgencyFacts::from_directory(directory, &a.id))
        .collect()
}

/// The agencies of a default development federation: [`agencies_of`] the
/// [`default_countries`], members as [`default_eu_members`].
pub fn default_agencies() -> Vec<AgencyFacts> {
    agencies_of(&default_countries(), &default_eu_members())
}

/// The example bundles for `agencies`: the framework, then one per agency
/// with a template, each as file name → content.
pub(crate) fn render(agencies: &[AgencyFacts]) -> Vec<(Owner, BTreeMap<String, Vec<u8>>)> {
    let framework = FRAMEWORK
        .iter()
        .map(|(n, c)| (n.to_string(), c.as_bytes().to_vec()))
        .collect();
    let mut out = vec![(Owner::Framework, framework)];
    let mut seen = std::collections::BTreeSet::new();
    for a in agencies {
        if !seen.insert(a.id.clone()) {
            continue;
        }
        let Some(files) = template_for(a.kind).and_then(template_files) else {
            continue;
        };
        let owner = a.id.to_string();
        let files = files
            .iter()
            .map(|(n, c)| {
                (
                    n.to_string(),
                    c.replace(OWNER_PLACEHOLDER, &owner).into_bytes(),
                )
            })
            .collect();
        out.push((Owner::Agency(a.id.clone()), files));
    }
    out
}

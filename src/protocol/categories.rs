//! The data categories of a case record, derived from its content.
//!
//! A record's categories are computed here, by code, from the fields that are
//! actually populated — they are never typed by hand. The sending node uses
//! [`derive`] to fill the header's declared categories, policy decides on
//! them, and the receiving node runs the same function on the decrypted
//! record to catch a sender whose header understates what it sends. Both ends
//! must therefore agree exactly; `docs/categories.md` is the normative
//! description of the mapping for anyone reimplementing it, and the records
//! in `examples/records/` serve as shared test vectors.
//!
//! "Populated" means different from the proto3 default, applied recursively:
//! a non-empty string or byte string (whitespace counts), a non-zero number,
//! `true`, a message with at least one populated field, a repeated field with
//! at least one populated element. A present but empty message therefore adds
//! nothing, so a sender cannot be refused for an empty placeholder and a
//! receiver cannot be fooled by one.
//!
//! Every message is destructured field by field without `..`, so adding a
//! field to the proto breaks this module's build until someone decides which
//! category the new field belongs to.
//!
//! The module does no I/O and holds no state.

use std::collections::BTreeSet;
use std::fmt;

use crate::protocol::proto::v1::{self, DataCategory, RecordKind, case_record::Body};

/// A set of data categories, iterated in enum order.
///
/// [`DataCategory::Unspecified`] is not a category and is never stored:
/// inserting it is a no-op.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CategorySet(BTreeSet<DataCategory>);

impl CategorySet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `c`; returns whether it was newly added.
    pub fn insert(&mut self, c: DataCategory) -> bool {
        c != DataCategory::Unspecified && self.0.insert(c)
    }

    pub fn contains(&self, c: DataCategory) -> bool {
        self.0.contains(&c)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The categories in enum order.
    pub fn iter(&self) -> impl Iterator<Item = DataCategory> + '_ {
        self.0.iter().copied()
    }

    /// Whether every category in `self` is also in `other`: a record whose
    /// derived set is a subset of its declared set is honestly labelled.
    pub fn is_subset(&self, other: &CategorySet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The categories in `self` that are not in `other`, e.g. the derived
    /// categories a header failed to declare.
    pub fn difference(&self, other: &CategorySet) -> CategorySet {
        CategorySet(self.0.difference(&other.0).copied().collect())
    }

    /// Whether any category in the set is a special category.
    pub fn has_special(&self) -> bool {
        self.iter().any(is_special)
    }

    /// The set as the `repeated DataCategory` wire values, in enum order.
    pub fn to_vec_i32(&self) -> Vec<i32> {
        self.iter().map(|c| c as i32).collect()
    }
}

impl FromIterator<DataCategory> for CategorySet {
    fn from_iter<I: IntoIterator<Item = DataCategory>>(iter: I) -> Self {
        let mut set = CategorySet::new();
        for c in iter {
            set.insert(c);
        }
        set
    }
}

impl<'a> IntoIterator for &'a CategorySet {
    type Item = DataCategory;
    type IntoIter = std::iter::Copied<std::collections::btree_set::Iter<'a, DataCategory>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().copied()
    }
}

/// Comma-separated short names in enum order, or `none` for the empty set.
impl fmt::Display for CategorySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, c) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(short_name(c))?;
        }
        Ok(())
    }
}

/// How many data categories there are; a list of categories holds each at
/// most once, so never more than this.
pub const CATEGORY_COUNT: usize = ALL_CATEGORIES.len();

/// Why a list of categories from a peer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("{0}")]
    TooMany(crate::protocol::bounds::Exceeded),
    #[error("data category {0}")]
    Unknown(i32),
    #[error("data category {} listed twice", short_name(*.0))]
    Twice(DataCategory),
}

/// Parses a declared list of categories (the wire's `repeated
/// DataCategory`): each a known category, each listed once, and so at most
/// [`CATEGORY_COUNT`] of them. The count is checked before anything else.
pub fn parse_declared(field: &'static str, raw: &[i32]) -> Result<CategorySet, ListError> {
    crate::protocol::bounds::check_count(field, raw.len(), CATEGORY_COUNT)
        .map_err(ListError::TooMany)?;
    let mut set = CategorySet::new();
    for &value in raw {
        let c = DataCategory::try_from(value)
            .ok()
            .filter(|c| *c != DataCategory::Unspecified)
            .ok_or(ListError::Unknown(value))?;
        if !set.insert(c) {
            return Err(ListError::Twice(c));
        }
    }
    Ok(set)
}

/// The kind of a record, which is fixed by the body it carries; `None` when
/// the record has no body.
pub fn record_kind(record: &v1::CaseRecord) -> Option<RecordKind> {
    record.body.as_ref().map(|body| match body {
        Body::MlaRequest(_) => RecordKind::MlaRequest,
        Body::MlaResponse(_) => RecordKind::MlaResponse,
        Body::InformationRequest(_) => RecordKind::InformationRequest,
        Body::InformationResponse(_) => RecordKind::InformationResponse,
        Body::MissingPersonTrace(_) => RecordKind::MissingPersonTrace,
        Body::TraceResult(_) => RecordKind::TraceResult,
        Body::WantedAlert(_) => RecordKind::WantedAlert,
        Body::IntelligenceReport(_) => RecordKind::IntelligenceReport,
        Body::MigrantRegistration(_) => RecordKind::MigrantRegistration,
        Body::JitEvidence(_) => RecordKind::JitEvidence,
        Body::Statistics(_) => RecordKind::Statistics,
        Body::PermissionRequest(_) => RecordKind::PermissionRequest,
        Body::PermissionGrant(_) => RecordKind::PermissionGrant,
    })
}

/// The data categories of `record`, derived from every populated field.
///
/// A record without a body has no categories. The mapping is documented in
/// `docs/categories.md`.
pub fn derive(record: &v1::CaseRecord) -> CategorySet {
    let mut out = CategorySet::new();
    if let Some(body) = &record.body {
        walk_body(body, &mut out);
    }
    out
}

/// Whether `c` is a special category of personal data, which the law allows
/// only where strictly necessary and with safeguards.
pub fn is_special(c: DataCategory) -> bool {
    use DataCategory as C;
    match c {
        C::Biometric
        | C::Genetic
        | C::Health
        | C::RacialEthnicOrigin
        | C::PoliticalOpinions
        | C::ReligiousBeliefs
        | C::TradeUnionMembership
        | C::SexLifeOrientation => true,
        C::Unspecified
        | C::Identity
        | C::Contact
        | C::IdentityDocument
        | C::Location
        | C::TravelMovement
        | C::Vehicle
        | C::Financial
        | C::Communications
        | C::CriminalRecord
        | C::CaseNarrative
        | C::VictimStatus
        | C::Minor => false,
    }
}

/// The lowercase short name of a category, as the CLI accepts it and the
/// demo prints it: the proto name without its `DATA_CATEGORY_` prefix.
pub fn short_name(c: DataCategory) -> &'static str {
    use DataCategory as C;
    match c {
        C::Unspecified => "unspecified",
        C::Identity => "identity",
        C::Contact => "contact",
        C::IdentityDocument => "identity_document",
        C::Location => "location",
        C::TravelMovement => "travel_movement",
        C::Vehicle => "vehicle",
        C::Financial => "financial",
        C::Communications => "communications",
        C::CriminalRecord => "criminal_record",
        C::CaseNarrative => "case_narrative",
        C::VictimStatus => "victim_status",
        C::Minor => "minor",
        C::Biometric => "biometric",
        C::Genetic => "genetic",
        C::Health => "health",
        C::RacialEthnicOrigin => "racial_ethnic_origin",
        C::PoliticalOpinions => "political_opinions",
        C::ReligiousBeliefs => "religious_beliefs",
        C::TradeUnionMembership => "trade_union_membership",
        C::SexLifeOrientation => "sex_life_orientation",
    }
}

/// The category with short name `s` (exact, lowercase).
///
/// `"unspecified"` is refused: a person typing a category means a real one.
pub fn parse_short_name(s: &str) -> Option<DataCategory> {
    ALL_CATEGORIES.iter().copied().find(|&c| short_name(c) == s)
}

/// The lowercase short name of a record kind, as used in DOMAIN.md, by the
/// CLI and in the demo: the proto name without its `RECORD_KIND_` prefix.
pub fn kind_short_name(k: RecordKind) -> &'static str {
    use RecordKind as K;
    match k {
        K::Unspecified => "unspecified",
        K::MlaRequest => "mla_request",
        K::MlaResponse => "mla_response",
        K::InformationRequest => "information_request",
        K::InformationResponse => "information_response",
        K::MissingPersonTrace => "missing_person_trace",
        K::TraceResult => "trace_result",
        K::WantedAlert => "wanted_alert",
        K::IntelligenceReport => "intelligence_report",
        K::MigrantRegistration => "migrant_registration",
        K::JitEvidence => "jit_evidence",
        K::Statistics => "statistics",
        K::PermissionRequest => "permission_request",
        K::PermissionGrant => "permission_grant",
    }
}

/// The record kind with short name `s` (exact, lowercase); `"unspecified"`
/// is refused.
pub fn parse_kind_short_name(s: &str) -> Option<RecordKind> {
    ALL_KINDS.iter().copied().find(|&k| kind_short_name(k) == s)
}

/// Every real category, in enum order; the tests check it against the enum.
const ALL_CATEGORIES: [DataCategory; 20] = {
    use DataCategory as C;
    [
        C::Identity,
        C::Contact,
        C::IdentityDocument,
        C::Location,
        C::TravelMovement,
        C::Vehicle,
        C::Financial,
        C::Communications,
        C::CriminalRecord,
        C::CaseNarrative,
        C::VictimStatus,
        C::Minor,
        C::Biometric,
        C::Genetic,
        C::Health,
        C::RacialEthnicOrigin,
        C::PoliticalOpinions,
        C::ReligiousBeliefs,
        C::TradeUnionMembership,
        C::SexLifeOrientation,
    ]
};

/// Every real record kind, in enum order; the tests check it against the
/// enum.
const ALL_KINDS: [RecordKind; 13] = {
    use RecordKind as K;
    [
        K::MlaRequest,
        K::MlaResponse,
        K::InformationRequest,
        K::InformationResponse,
        K::MissingPersonTrace,
        K::TraceResult,
        K::WantedAlert,
        K::IntelligenceReport,
        K::MigrantRegistration,
        K::JitEvidence,
        K::Statistics,
        K::PermissionRequest,
        K::PermissionGrant,
    ]
};

// ---------------------------------------------------------------------------
// The walk. Fields bound to `_` are deliberately uncategorised; the reason is
// given beside each and in docs/categories.md.

fn text(s: &str) -> bool {
    !s.is_empty()
}

fn any_text(list: &[String]) -> bool {
    list.iter().any(|s| text(s))
}

fn add_if(out: &mut CategorySet, populated: bool, c: DataCategory) {
    if populated {
        out.insert(c);
    }
}

fn walk_body(body: &Body, out: &mut CategorySet) {
    use DataCategory as C;
    match body {
        Body::MlaRequest(v1::MlaRequest {
            // An authority, not a natural person.
            requesting_authority: _,
            case_summary,
            requested_measures,
            persons,
            accounts,
            // A date about the request, not about anyone.
            deadline: _,
        }) => {
            add_if(out, text(case_summary), C::CaseNarrative);
            add_if(out, any_text(requested_measures), C::CaseNarrative);
            walk_persons(persons, out);
            accounts.iter().for_each(|a| walk_financial(a, out));
        }
        Body::MlaResponse(v1::MlaResponse {
            // An authority, not a natural person.
            responding_authority: _,
            summary,
            financial_records,
            evidence,
        }) => {
            add_if(out, text(summary), C::CaseNarrative);
            financial_records
                .iter()
                .for_each(|a| walk_financial(a, out));
            evidence.iter().for_each(|a| walk_attachment(a, out));
        }
        Body::InformationRequest(v1::InformationRequest {
            question,
            subjects,
            vehicles,
            // Drives the response deadline, says nothing about a person.
            directly_accessible: _,
        }) => {
            add_if(out, text(question), C::CaseNarrative);
            walk_persons(subjects, out);
            add_if(out, vehicles.iter().any(vehicle), C::Vehicle);
        }
        Body::InformationResponse(v1::InformationResponse {
            answer,
            subjects,
            vehicles,
            attachments,
        }) => {
            add_if(out, text(answer), C::CaseNarrative);
            walk_persons(subjects, out);
            add_if(out, vehicles.iter().any(vehicle), C::Vehicle);
            attachments.iter().for_each(|a| walk_attachment(a, out));
        }
        Body::MissingPersonTrace(v1::MissingPersonTrace {
            missing_person,
            last_known_location,
            relatives,
            circumstances,
        }) => {
            if let Some(p) = missing_person {
                walk_person(p, out);
            }
            add_if(out, location(last_known_location), C::Location);
            walk_persons(relatives, out);
            add_if(out, text(circumstances), C::CaseNarrative);
        }
        Body::TraceResult(v1::TraceResult {
            // A status of the trace; whatever it reveals is about the person
            // reported beside it, who carries their own categories.
            outcome: _,
            person,
            location: loc,
            notes,
        }) => {
            if let Some(p) = person {
                walk_person(p, out);
            }
            add_if(out, location(loc), C::Location);
            add_if(out, text(notes), C::CaseNarrative);
        }
        Body::WantedAlert(v1::WantedAlert {
            offence,
            persons,
            vehicles,
            // Objects, not personal data; whoever holds one is a person
            // listed beside it.
            weapons: _,
            last_seen,
            // An operational instruction, not a fact about anyone.
            cross_border_pursuit: _,
            instructions,
        }) => {
            add_if(out, text(offence), C::CaseNarrative);
            walk_persons(persons, out);
            add_if(out, vehicles.iter().any(vehicle), C::Vehicle);
            add_if(out, location(last_seen), C::Location);
            add_if(out, text(instructions), C::CaseNarrative);
        }
        Body::IntelligenceReport(v1::IntelligenceReport {
            // Classifies the case, not a person.
            area: _,
            summary,
            persons,
            routes,
            vehicles,
            communications,
        }) => {
            add_if(out, text(summary), C::CaseNarrative);
            walk_persons(persons, out);
            add_if(out, routes.iter().any(travel), C::TravelMovement);
            add_if(out, vehicles.iter().any(vehicle), C::Vehicle);
            add_if(
                out,
                communications.as_ref().is_some_and(comms),
                C::Communications,
            );
        }
        Body::MigrantRegistration(v1::MigrantRegistration {
            person,
            route,
            family_links,
            registered_at,
        }) => {
            if let Some(p) = person {
                walk_person(p, out);
            }
            add_if(out, route.iter().any(travel), C::TravelMovement);
            walk_persons(family_links, out);
            add_if(out, location(registered_at), C::Location);
        }
        Body::JitEvidence(v1::JitEvidence {
            // A team reference, pseudonymous like the case reference.
            jit_reference: _,
            description,
            attachments,
        }) => {
            add_if(out, text(description), C::CaseNarrative);
            attachments.iter().for_each(|a| walk_attachment(a, out));
        }
        // Aggregated counts with labels: the schema has no place for data
        // about a person, and a statistics exchange must stay category-free
        // so that it can be allowed where nothing personal may go.
        Body::Statistics(v1::Statistics {
            period: _,
            region: _,
            counts: _,
        }) => {}
        // Control messages about a record, not about a person: the scope is
        // in the header; the free text explains the request or its terms.
        Body::PermissionRequest(v1::PermissionRequest { justification }) => {
            add_if(out, text(justification), C::CaseNarrative);
        }
        Body::PermissionGrant(v1::PermissionGrant { conditions }) => {
            add_if(out, text(conditions), C::CaseNarrative);
        }
    }
}

fn walk_persons(persons: &[v1::Person], out: &mut CategorySet) {
    persons.iter().for_each(|p| walk_person(p, out));
}

fn walk_person(p: &v1::Person, out: &mut CategorySet) {
    use DataCategory as C;
    let v1::Person {
        family_name,
        given_names,
        date_of_birth,
        place_of_birth,
        nationality,
        sex,
        aliases,
        minor,
        documents,
        contacts,
        biometrics,
        genetic,
        health,
        sensitive,
        criminal_record,
        victim,
        // The person's part in the case ("missing person", "relative",
        // "witness"): it adds no category beyond those the person already
        // carries, so a tracing record can name relatives as relatives.
        role: _,
    } = p;
    let identity = [
        family_name,
        given_names,
        date_of_birth,
        place_of_birth,
        nationality,
        sex,
    ]
    .iter()
    .any(|s| text(s))
        || any_text(aliases);
    add_if(out, identity, C::Identity);
    add_if(out, *minor, C::Minor);
    add_if(out, documents.iter().any(document), C::IdentityDocument);
    add_if(out, contacts.iter().any(contact), C::Contact);
    add_if(
        out,
        biometrics.as_ref().is_some_and(biometric),
        C::Biometric,
    );
    add_if(out, genetic.as_ref().is_some_and(genetic_ref), C::Genetic);
    add_if(out, health.as_ref().is_some_and(health_info), C::Health);
    if let Some(s) = sensitive {
        walk_sensitive(s, out);
    }
    add_if(
        out,
        criminal_record.iter().any(criminal_entry),
        C::CriminalRecord,
    );
    add_if(
        out,
        victim.as_ref().is_some_and(victim_status),
        C::VictimStatus,
    );
}

fn walk_sensitive(s: &v1::SensitiveAttributes, out: &mut CategorySet) {
    use DataCategory as C;
    let v1::SensitiveAttributes {
        racial_or_ethnic_origin,
        political_opinions,
        religious_beliefs,
        trade_union_membership,
        sex_life_or_orientation,
    } = s;
    add_if(out, text(racial_or_ethnic_origin), C::RacialEthnicOrigin);
    add_if(out, text(political_opinions), C::PoliticalOpinions);
    add_if(out, text(religious_beliefs), C::ReligiousBeliefs);
    add_if(out, text(trade_union_membership), C::TradeUnionMembership);
    add_if(out, text(sex_life_or_orientation), C::SexLifeOrientation);
}

fn walk_financial(a: &v1::FinancialInfo, out: &mut CategorySet) {
    let v1::FinancialInfo {
        iban,
        bank,
        account_holder,
        period,
        summary,
    } = a;
    let financial = [iban, bank, account_holder, period, summary]
        .iter()
        .any(|s| text(s));
    add_if(out, financial, DataCategory::Financial);
    // The holder is usually a natural person named outside any Person
    // message; a recipient that may not receive identities must not get one
    // this way.
    add_if(out, text(account_holder), DataCategory::Identity);
}

fn walk_attachment(a: &v1::Attachment, out: &mut CategorySet) {
    let v1::Attachment {
        filename,
        // Describes the encoding, not the content.
        media_type: _,
        content,
        contains,
    } = a;
    // The bytes are opaque to this code, so the sender's declaration is all
    // there is. Values this build does not know are skipped rather than
    // guessed at; rejecting them is the caller's choice.
    for &value in contains {
        if let Ok(c) = DataCategory::try_from(value) {
            out.insert(c);
        }
    }
    // Whatever else the file holds, it is case material; a filename is free
    // text and routinely names the person or the case.
    add_if(
        out,
        !content.is_empty() || text(filename),
        DataCategory::CaseNarrative,
    );
}

fn document(d: &v1::IdentityDocument) -> bool {
    let v1::IdentityDocument {
        r#type,
        number,
        issuing_country,
        expiry_date,
    } = d;
    [r#type, number, issuing_country, expiry_date]
        .iter()
        .any(|s| text(s))
}

fn contact(c: &v1::ContactDetails) -> bool {
    let v1::ContactDetails {
        phone,
        email,
        postal_address,
    } = c;
    [phone, email, postal_address].iter().any(|s| text(s))
}

fn location(l: &Option<v1::Location>) -> bool {
    let Some(v1::Location {
        country,
        place,
        latitude,
        longitude,
        observed_at,
    }) = l
    else {
        return false;
    };
    // 0.0 is the proto3 default; a NaN is not, and counts as present.
    [country, place, observed_at].iter().any(|s| text(s)) || *latitude != 0.0 || *longitude != 0.0
}

fn travel(t: &v1::TravelMovement) -> bool {
    let v1::TravelMovement {
        from_place,
        to_place,
        border_crossing,
        date,
        means,
    } = t;
    [from_place, to_place, border_crossing, date, means]
        .iter()
        .any(|s| text(s))
}

fn vehicle(v: &v1::Vehicle) -> bool {
    let v1::Vehicle {
        make,
        model,
        colour,
        registration,
        registration_country,
        vin,
    } = v;
    [make, model, colour, registration, registration_country, vin]
        .iter()
        .any(|s| text(s))
}

fn comms(c: &v1::Communications) -> bool {
    let v1::Communications {
        phone_numbers,
        emails,
        device_ids,
    } = c;
    any_text(phone_numbers) || any_text(emails) || any_text(device_ids)
}

// A format label or finger name without a template still counts: one rule
// ("anything in the biometrics block") is easier for every implementation to
// get identical than a judgement of which field makes data biometric.
fn biometric(b: &v1::Biometrics) -> bool {
    let v1::Biometrics {
        fingerprints,
        face_image,
        face_image_format,
    } = b;
    fingerprints.iter().any(|f| {
        let v1::Fingerprint {
            finger,
            format,
            template,
        } = f;
        text(finger) || text(format) || !template.is_empty()
    }) || !face_image.is_empty()
        || text(face_image_format)
}

fn genetic_ref(g: &v1::GeneticReference) -> bool {
    let v1::GeneticReference {
        sample_id,
        laboratory,
        profile_format,
    } = g;
    [sample_id, laboratory, profile_format]
        .iter()
        .any(|s| text(s))
}

fn health_info(h: &v1::HealthInformation) -> bool {
    let v1::HealthInformation { description } = h;
    text(description)
}

fn victim_status(v: &v1::VictimStatus) -> bool {
    let v1::VictimStatus { description } = v;
    text(description)
}

fn criminal_entry(e: &v1::CriminalRecordEntry) -> bool {
    let v1::CriminalRecordEntry {
        offence,
        court,
        date,
        sentence,
    } = e;
    [offence, court, date, sentence].iter().any(|s| text(s))
}

#[cfg(test)]
mod tests {
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
        let text =
            std::fs::read_to_string(format!("{EXAMPLES}/fingerprints.json")).expect("readable");
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
}

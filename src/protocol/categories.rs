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
#[path = "categories_tests.rs"]
mod tests;

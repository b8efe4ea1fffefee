//! The Cedar schema every bundle is validated against, and the mapping from
//! casebridge's typed labels to the schema's vocabulary.
//!
//! The schema lives in `casebridge.cedarschema` beside this file so that a
//! data-protection officer can read it; it is embedded at build time. Closed
//! vocabularies are enumerated entity types there, so the validator refuses
//! a misspelt value. The names are derived here from the proto enum names by
//! one rule (drop the prefix; lower case except handling codes and the 4x4
//! evaluation), and a unit test checks the schema lists exactly the values
//! the protos define, so the two cannot drift apart unnoticed.

use std::str::FromStr as _;

use cedar_policy::{EntityId, EntityTypeName, EntityUid, Schema};

use super::PolicyError;
use crate::protocol::proto::v1;

/// The schema text, as shipped.
pub const SCHEMA_TEXT: &str = include_str!("casebridge.cedarschema");

/// The namespace of every casebridge type and action.
pub const NAMESPACE: &str = "Casebridge";

/// The parsed schema and the names every request uses.
#[derive(Clone)]
pub(crate) struct Vocabulary {
    pub schema: Schema,
    pub action: EntityUid,
    pub agency_type: EntityTypeName,
}

impl Vocabulary {
    pub fn new() -> Result<Vocabulary, PolicyError> {
        let (schema, _warnings) = Schema::from_cedarschema_str(SCHEMA_TEXT)
            .map_err(|e| PolicyError::Internal(format!("embedded Cedar schema: {e}")))?;
        let action = EntityUid::from_str(&format!("{NAMESPACE}::Action::\"transfer\""))
            .map_err(|e| PolicyError::Internal(format!("action name: {e}")))?;
        let agency_type = type_name("Agency")?;
        Ok(Vocabulary {
            schema,
            action,
            agency_type,
        })
    }

    /// The entity uid of an agency.
    pub fn agency(&self, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.agency_type.clone(), EntityId::new(id))
    }
}

pub(crate) fn type_name(name: &str) -> Result<EntityTypeName, PolicyError> {
    EntityTypeName::from_str(&format!("{NAMESPACE}::{name}"))
        .map_err(|e| PolicyError::Internal(format!("type name {name}: {e}")))
}

/// The enumerated entity types of the schema and, for each, how a proto
/// enum value name becomes a Cedar value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Enum {
    AgencyKind,
    RecordKind,
    Category,
    Purpose,
    LegalBasis,
    TransferGround,
    Handling,
    SourceReliability,
    InformationAccuracy,
    Classification,
    Priority,
}

impl Enum {
    #[cfg(test)]
    pub const ALL: [Enum; 11] = [
        Enum::AgencyKind,
        Enum::RecordKind,
        Enum::Category,
        Enum::Purpose,
        Enum::LegalBasis,
        Enum::TransferGround,
        Enum::Handling,
        Enum::SourceReliability,
        Enum::InformationAccuracy,
        Enum::Classification,
        Enum::Priority,
    ];

    /// The Cedar type name without the namespace.
    pub fn type_name(self) -> &'static str {
        match self {
            Enum::AgencyKind => "AgencyKind",
            Enum::RecordKind => "RecordKind",
            Enum::Category => "Category",
            Enum::Purpose => "Purpose",
            Enum::LegalBasis => "LegalBasis",
            Enum::TransferGround => "TransferGround",
            Enum::Handling => "Handling",
            Enum::SourceReliability => "SourceReliability",
            Enum::InformationAccuracy => "InformationAccuracy",
            Enum::Classification => "Classification",
            Enum::Priority => "Priority",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Enum::AgencyKind => "AGENCY_KIND_",
            Enum::RecordKind => "RECORD_KIND_",
            Enum::Category => "DATA_CATEGORY_",
            Enum::Purpose => "PURPOSE_",
            Enum::LegalBasis => "LEGAL_BASIS_",
            Enum::TransferGround => "TRANSFER_GROUND_",
            Enum::Handling => "HANDLING_CODE_",
            Enum::SourceReliability => "SOURCE_RELIABILITY_",
            Enum::InformationAccuracy => "INFORMATION_ACCURACY_",
            Enum::Classification => "CLASSIFICATION_",
            Enum::Priority => "PRIORITY_",
        }
    }

    /// Handling codes and the 4x4 evaluation keep the spelling people use
    /// for them ("H2", "B", "3"); everything else is lower case.
    fn keeps_case(self) -> bool {
        matches!(
            self,
            Enum::Handling | Enum::SourceReliability | Enum::InformationAccuracy
        )
    }

    /// The Cedar value for a proto enum value name, e.g.
    /// `PURPOSE_MISSING_PERSONS` → `missing_persons`, `HANDLING_CODE_H2` →
    /// `H2`; `None` for `DATA_CATEGORY_UNSPECIFIED` (not a category) or a
    /// name without this enum's prefix.
    pub fn value_of(self, proto_name: &str) -> Option<String> {
        let rest = proto_name.strip_prefix(self.prefix())?;
        if rest == "UNSPECIFIED" {
            return (self != Enum::Category).then(|| "unspecified".to_string());
        }
        Some(if self.keeps_case() {
            rest.to_string()
        } else {
            rest.to_ascii_lowercase()
        })
    }

    /// The entity uid of `value` in this enum.
    pub fn uid(self, value: &str) -> Result<EntityUid, PolicyError> {
        Ok(EntityUid::from_type_name_and_id(
            type_name(self.type_name())?,
            EntityId::new(value),
        ))
    }

    /// Every proto value name of this enum, in wire order.
    #[cfg(test)]
    pub fn proto_names(self) -> Vec<&'static str> {
        (0..256).filter_map(|v| self.proto_name(v)).collect()
    }

    /// The proto value name of wire value `v`, if `v` is defined.
    pub fn proto_name(self, v: i32) -> Option<&'static str> {
        match self {
            Enum::AgencyKind => v1::AgencyKind::try_from(v).ok().map(|e| e.as_str_name()),
            Enum::RecordKind => v1::RecordKind::try_from(v).ok().map(|e| e.as_str_name()),
            Enum::Category => v1::DataCategory::try_from(v).ok().map(|e| e.as_str_name()),
            Enum::Purpose => v1::Purpose::try_from(v).ok().map(|e| e.as_str_name()),
            Enum::LegalBasis => v1::LegalBasis::try_from(v).ok().map(|e| e.as_str_name()),
            Enum::TransferGround => v1::TransferGround::try_from(v)
                .ok()
                .map(|e| e.as_str_name()),
            Enum::Handling => v1::HandlingCode::try_from(v).ok().map(|e| e.as_str_name()),
            Enum::SourceReliability => v1::SourceReliability::try_from(v)
                .ok()
                .map(|e| e.as_str_name()),
            Enum::InformationAccuracy => v1::InformationAccuracy::try_from(v)
                .ok()
                .map(|e| e.as_str_name()),
            Enum::Classification => v1::Classification::try_from(v)
                .ok()
                .map(|e| e.as_str_name()),
            Enum::Priority => v1::Priority::try_from(v).ok().map(|e| e.as_str_name()),
        }
    }

    /// The Cedar value of wire value `v`, or why there is none.
    pub fn value_of_wire(self, v: i32) -> Result<String, String> {
        self.proto_name(v)
            .and_then(|n| self.value_of(n))
            .ok_or_else(|| format!("{} value {v} is not defined", self.type_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The values the schema text lists for `entity <name> enum [...]`.
    fn schema_values(name: &str) -> BTreeSet<String> {
        let text: String = SCHEMA_TEXT
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let start = text
            .find(&format!("entity {name} enum ["))
            .unwrap_or_else(|| panic!("schema has no enum {name}"));
        let rest = &text[start..];
        let end = rest.find(']').expect("enum list closes");
        rest[..end]
            .split('"')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn embedded_schema_parses_without_warnings() {
        let (_, warnings) = Schema::from_cedarschema_str(SCHEMA_TEXT).unwrap();
        assert_eq!(warnings.count(), 0);
        Vocabulary::new().unwrap();
    }

    #[test]
    fn schema_enums_list_exactly_the_proto_values() {
        for e in Enum::ALL {
            let from_proto: BTreeSet<String> = e
                .proto_names()
                .into_iter()
                .filter_map(|n| e.value_of(n))
                .collect();
            assert!(!from_proto.is_empty(), "{e:?}");
            assert_eq!(
                schema_values(e.type_name()),
                from_proto,
                "schema enum {} differs from the proto enum",
                e.type_name()
            );
        }
    }

    #[test]
    fn category_names_are_the_short_names() {
        for name in Enum::Category.proto_names() {
            let Some(value) = Enum::Category.value_of(name) else {
                continue;
            };
            let c = crate::protocol::categories::parse_short_name(&value).expect("a category");
            assert_eq!(crate::protocol::categories::short_name(c), value);
        }
    }

    #[test]
    fn value_spelling() {
        assert_eq!(
            Enum::Purpose.value_of("PURPOSE_MISSING_PERSONS").as_deref(),
            Some("missing_persons")
        );
        assert_eq!(
            Enum::Handling.value_of("HANDLING_CODE_H2").as_deref(),
            Some("H2")
        );
        assert_eq!(
            Enum::InformationAccuracy
                .value_of("INFORMATION_ACCURACY_3")
                .as_deref(),
            Some("3")
        );
        assert_eq!(
            Enum::Handling
                .value_of("HANDLING_CODE_UNSPECIFIED")
                .as_deref(),
            Some("unspecified")
        );
        assert_eq!(Enum::Category.value_of("DATA_CATEGORY_UNSPECIFIED"), None);
        assert_eq!(Enum::Purpose.value_of("HANDLING_CODE_H2"), None);
        assert!(Enum::Purpose.value_of_wire(999).is_err());
    }
}

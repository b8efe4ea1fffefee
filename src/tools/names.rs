//! How names print and parse on the command line: lower case with hyphens
//! (`missing-person-trace`), the snake_case spelling accepted as well; an
//! unknown name is an error listing the valid ones.

use crate::protocol::categories;
use crate::protocol::proto::v1;

/// Parses a label value given on the command line, e.g. "missing-persons" for
/// `PURPOSE_MISSING_PERSONS` or "h2" for `HANDLING_CODE_H2`.
pub fn parse_label<E>(
    what: &str,
    prefix: &str,
    value: &str,
    from_name: fn(&str) -> Option<E>,
    names: &[&str],
) -> anyhow::Result<E> {
    let key = format!(
        "{prefix}{}",
        value.trim().to_ascii_uppercase().replace(['-', ' '], "_")
    );
    from_name(&key).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown {what} {}; one of: {}",
            crate::protocol::bounds::quoted(value),
            names.join(", ")
        )
    })
}

/// The printed spelling of a short name: hyphens, not underscores.
pub fn kebab(name: &str) -> String {
    name.replace('_', "-")
}

/// A name as a person typed it, in the spelling the protocol's short names
/// use: lower case with underscores, so that either spelling is accepted.
fn snake(input: &str) -> String {
    input.trim().to_ascii_lowercase().replace(['-', ' '], "_")
}

/// Every record kind's printed name.
pub fn kind_names() -> Vec<String> {
    (1..=i32::from(u8::MAX))
        .filter_map(|i| v1::RecordKind::try_from(i).ok())
        .map(|k| kebab(categories::kind_short_name(k)))
        .collect()
}

/// Every data category's printed name.
pub fn category_names() -> Vec<String> {
    (1..=i32::from(u8::MAX))
        .filter_map(|i| v1::DataCategory::try_from(i).ok())
        .map(|c| kebab(categories::short_name(c)))
        .collect()
}

/// A record kind as given on the command line, in either spelling; an
/// unknown one is an error listing the valid ones.
pub fn parse_kind(input: &str) -> anyhow::Result<v1::RecordKind> {
    categories::parse_kind_short_name(&snake(input)).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown record kind {}; the kinds are {}",
            crate::protocol::bounds::quoted(input),
            kind_names().join(", ")
        )
    })
}

/// A data category as given on the command line, in either spelling; an
/// unknown one is an error listing the valid ones.
pub fn parse_category(input: &str) -> anyhow::Result<v1::DataCategory> {
    categories::parse_short_name(&snake(input)).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown data category {}; the categories are {}",
            crate::protocol::bounds::quoted(input),
            category_names().join(", ")
        )
    })
}

/// The short, lower-case form of an enum name without its prefix.
pub fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
        .replace('_', "-")
}

pub fn purpose_name(p: i32) -> String {
    v1::Purpose::try_from(p)
        .map(|p| short(p.as_str_name(), "PURPOSE_"))
        .unwrap_or_else(|_| p.to_string())
}
pub fn basis_name(b: i32) -> String {
    v1::LegalBasis::try_from(b)
        .map(|b| short(b.as_str_name(), "LEGAL_BASIS_"))
        .unwrap_or_else(|_| b.to_string())
}
pub fn handling_name(h: i32) -> String {
    v1::HandlingCode::try_from(h)
        .map(|h| short(h.as_str_name(), "HANDLING_CODE_").to_uppercase())
        .unwrap_or_else(|_| h.to_string())
}
pub fn kind_name(k: i32) -> String {
    v1::RecordKind::try_from(k)
        .map(|k| kebab(categories::kind_short_name(k)))
        .unwrap_or_else(|_| k.to_string())
}
pub fn categories_text(cats: &[i32]) -> String {
    let v: Vec<String> = cats
        .iter()
        .filter_map(|c| v1::DataCategory::try_from(*c).ok())
        .map(|c| kebab(categories::short_name(c)))
        .collect();
    if v.is_empty() {
        "none (no personal data)".into()
    } else {
        v.join(", ")
    }
}

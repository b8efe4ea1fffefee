//! Load-time checks on string literals the schema cannot type.
//!
//! Closed vocabularies are enumerated entity types in the schema, so Cedar's
//! validator already refuses `Casebridge::Purpose::"statistcs"`, and strict
//! validation refuses comparing them with plain strings. What remains as
//! strings are open values with a known shape: an agency's `country` (two
//! upper-case letters) and an onward transfer's `originator` (an agency id).
//! A policy comparing them with a literal of the wrong shape,
//! `resource.country == "hr"`, would silently never match; this lint refuses
//! it at load. It is best effort: it looks at `==`, `!=` and the `contains`
//! family where one side is the attribute and the other a literal or a set
//! of literals, which is how such policies are written.

use cedar_policy::Policy;
use serde_json::Value;

use crate::protocol::ids::{AgencyId, Country};

/// What is wrong with the policy's string literals, if anything.
pub(crate) fn check(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    // A static policy always converts; a failure would only lose the lint.
    if let Ok(json) = policy.to_json() {
        walk(&json, &mut out);
    }
    out
}

const COMPARISONS: [&str; 5] = ["==", "!=", "contains", "containsAll", "containsAny"];

fn walk(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (key, inner) in map {
                if COMPARISONS.contains(&key.as_str()) {
                    if let (Some(l), Some(r)) = (inner.get("left"), inner.get("right")) {
                        check_pair(l, r, out);
                        check_pair(r, l, out);
                    }
                }
                walk(inner, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
        _ => {}
    }
}

fn attr_name(v: &Value) -> Option<&str> {
    v.get(".")?.get("attr")?.as_str()
}

fn string_literals(v: &Value) -> Vec<&str> {
    if let Some(s) = v.get("Value").and_then(Value::as_str) {
        return vec![s];
    }
    v.get("Set")
        .and_then(Value::as_array)
        .map(|items| items.iter().flat_map(string_literals).collect())
        .unwrap_or_default()
}

fn check_pair(attr_side: &Value, literal_side: &Value, out: &mut Vec<String>) {
    let Some(attr) = attr_name(attr_side) else {
        return;
    };
    for s in string_literals(literal_side) {
        let problem = match attr {
            "country" if s.parse::<Country>().is_err() => Some(format!(
                "{} is compared with `country` but is not a country code (two upper-case letters, e.g. \"HR\")",
                crate::protocol::bounds::escaped(s)
            )),
            "originator" if !s.is_empty() && s.parse::<AgencyId>().is_err() => Some(format!(
                "{} is compared with `originator` but is not an agency id (\"CC/name\", e.g. \"MK/police\")",
                crate::protocol::bounds::escaped(s)
            )),
            _ => None,
        };
        out.extend(problem);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint(src: &str) -> Vec<String> {
        check(&Policy::parse(None, src).unwrap())
    }

    #[test]
    fn refuses_misshapen_country_and_originator_literals() {
        assert!(
            lint(r#"permit(principal, action, resource) when { resource.country == "HR" };"#)
                .is_empty()
        );
        assert_eq!(
            lint(r#"permit(principal, action, resource) when { resource.country == "hr" };"#).len(),
            1
        );
        assert_eq!(
            lint(r#"permit(principal, action, resource) when { ["HR", "Serbia"].contains(principal.country) };"#)
                .len(),
            1
        );
        assert_eq!(
            lint(
                r#"forbid(principal, action, resource) when { "MK-police" != context.originator };"#
            )
            .len(),
            1
        );
        assert!(lint(r#"forbid(principal, action, resource) when { context.originator == "MK/police" || context.originator == "" };"#).is_empty());
        // Free text is free.
        assert!(lint(r#"forbid(principal, action, resource) when { context.legal_basis_reference == "anything at all" };"#).is_empty());
    }
}

//! Property tests for identifiers: what parses prints back as it was. See
//! `crate::props_tests` for the runner and the long-run command.

use proptest::prelude::*;

use crate::props_tests::{FED, run};
use crate::protocol::ids::{AgencyId, Country, EnvelopeId, Role};

// ---------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------

#[test]
fn identifiers_parse_only_what_they_print() {
    let strings = prop_oneof![
        3 => "[A-Za-z0-9/:._-]{0,40}",
        2 => "(spiffe://)?[a-z.]{0,16}/(node|agency|auditor|broker)(/[A-Za-z0-9-]{0,6}){0,3}",
        1 => any::<String>(),
    ];
    run(
        "ids: countries, agencies, envelope ids, SPIFFE ids",
        1,
        strings,
        |s| {
            if let Ok(c) = s.parse::<Country>() {
                prop_assert_eq!(c.to_string(), s.clone());
            }
            if let Ok(a) = s.parse::<AgencyId>() {
                prop_assert_eq!(a.to_string(), s.clone());
            }
            if let Ok(id) = s.parse::<EnvelopeId>() {
                prop_assert_eq!(id.to_string().parse::<EnvelopeId>().ok(), Some(id));
            }
            if let Ok(r) = Role::from_spiffe_uri(&s, FED) {
                prop_assert_eq!(r.spiffe_uri(FED), s.clone());
            }
            let _ = EnvelopeId::from_bytes(s.as_bytes());
            Ok(())
        },
    );
}

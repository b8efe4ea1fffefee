//! Validated identifiers: countries, agencies, envelope ids and the
//! SPIFFE-style identities carried in certificates.
//!
//! Past the gRPC edge nothing is a bare string: an [`AgencyId`] has been
//! parsed, so its country is a real [`Country`] and its name is well formed.

use std::fmt;
use std::str::FromStr;

use crate::protocol::bounds::{quote, quote_hex};

/// Why an identifier was refused. Each quotes at most a short prefix of
/// the input ([`crate::protocol::bounds::quote`]), which may have come from a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error(
        "invalid country code {}: expected two upper-case letters (ISO 3166-1 alpha-2 or XK)",
        crate::protocol::bounds::escaped(.0)
    )]
    Country(String),
    #[error(
        "invalid agency id {}: expected CC/name with name in [a-z0-9-]{{1,32}}",
        crate::protocol::bounds::escaped(.0)
    )]
    Agency(String),
    #[error("invalid envelope id {}: expected a UUID", crate::protocol::bounds::escaped(.0))]
    Envelope(String),
    #[error("invalid SPIFFE id {}: {}", crate::protocol::bounds::escaped(.0), .1)]
    Spiffe(String, &'static str),
}

/// A two-letter country code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Country([u8; 2]);

impl Country {
    pub fn as_str(&self) -> &str {
        // Only ASCII upper-case letters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl FromStr for Country {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let b = s.as_bytes();
        if b.len() == 2 && b.iter().all(u8::is_ascii_uppercase) {
            Ok(Country([b[0], b[1]]))
        } else {
            Err(IdError::Country(quote(s)))
        }
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An agency: `CC/name`, e.g. `HR/police` or `BA/missing-persons`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgencyId {
    country: Country,
    name: String,
}

impl AgencyId {
    pub fn new(country: Country, name: &str) -> Result<Self, IdError> {
        if valid_name(name) {
            Ok(AgencyId {
                country,
                name: name.to_string(),
            })
        } else {
            Err(IdError::Agency(quote(&format!("{country}/{name}"))))
        }
    }
    pub fn country(&self) -> Country {
        self.country
    }
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

impl FromStr for AgencyId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let (cc, name) = s.split_once('/').ok_or_else(|| IdError::Agency(quote(s)))?;
        let country = cc.parse().map_err(|_| IdError::Agency(quote(s)))?;
        AgencyId::new(country, name).map_err(|_| IdError::Agency(quote(s)))
    }
}

impl fmt::Display for AgencyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.country, self.name)
    }
}

/// A unique, time-ordered envelope id (UUIDv7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvelopeId(uuid::Uuid);

impl EnvelopeId {
    /// A fresh id for an envelope created at `created_at_ms` (Unix
    /// milliseconds, from the caller's clock): 48 bits of that time, then a
    /// counter seeded at random that keeps ids made in this process within
    /// one millisecond in order, then random bits.
    pub fn at(created_at_ms: i64) -> Self {
        static ORDER: std::sync::Mutex<uuid::ContextV7> =
            std::sync::Mutex::new(uuid::ContextV7::new());
        let ms = u64::try_from(created_at_ms).unwrap_or(0);
        let subsec_nanos = u32::try_from(ms % 1000).unwrap_or(0) * 1_000_000;
        let ts = uuid::Timestamp::from_unix(&ORDER, ms / 1000, subsec_nanos);
        EnvelopeId(uuid::Uuid::new_v7(ts))
    }
    pub fn from_bytes(b: &[u8]) -> Result<Self, IdError> {
        uuid::Uuid::from_slice(b)
            .map(EnvelopeId)
            .map_err(|_| IdError::Envelope(quote_hex(b)))
    }
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl FromStr for EnvelopeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        uuid::Uuid::parse_str(s.trim())
            .map(EnvelopeId)
            .map_err(|_| IdError::Envelope(quote(s)))
    }
}

impl fmt::Display for EnvelopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The role a certificate's SPIFFE id grants. Authorisation is by role and
/// country, never by a certificate's common name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    Broker,
    Node(Country),
    Agency(AgencyId),
    Auditor(String),
}

impl Role {
    /// The SPIFFE URI for this role in `federation`.
    pub fn spiffe_uri(&self, federation: &str) -> String {
        match self {
            Role::Broker => format!("spiffe://{federation}/broker"),
            Role::Node(cc) => format!("spiffe://{federation}/node/{cc}"),
            Role::Agency(a) => format!("spiffe://{federation}/agency/{}/{}", a.country(), a.name()),
            Role::Auditor(n) => format!("spiffe://{federation}/auditor/{n}"),
        }
    }

    /// Parses `spiffe://<federation>/<role path>`, requiring the expected
    /// trust domain.
    pub fn from_spiffe_uri(uri: &str, federation: &str) -> Result<Role, IdError> {
        let err = |why| IdError::Spiffe(quote(uri), why);
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| err("not a spiffe:// URI"))?;
        let (domain, path) = rest.split_once('/').ok_or_else(|| err("no path"))?;
        if domain != federation {
            return Err(err("foreign trust domain"));
        }
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["broker"] => Ok(Role::Broker),
            ["node", cc] => Ok(Role::Node(cc.parse().map_err(|_| err("bad country"))?)),
            ["agency", cc, name] => {
                let country = cc.parse().map_err(|_| err("bad country"))?;
                Ok(Role::Agency(
                    AgencyId::new(country, name).map_err(|_| err("bad agency name"))?,
                ))
            }
            ["auditor", name] if valid_name(name) => Ok(Role::Auditor(name.to_string())),
            _ => Err(err("unknown role")),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Broker => f.write_str("broker"),
            Role::Node(cc) => write!(f, "node {cc}"),
            Role::Agency(a) => write!(f, "agency {a}"),
            Role::Auditor(n) => write!(f, "auditor {n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agency_ids_parse_and_print() {
        let a: AgencyId = "BA/missing-persons".parse().unwrap();
        assert_eq!(a.country().as_str(), "BA");
        assert_eq!(a.to_string(), "BA/missing-persons");
        for bad in [
            "ba/police",
            "BA",
            "BA/",
            "BA/Police",
            "BA/po lice",
            "BAX/police",
            "BA/-x",
        ] {
            assert!(bad.parse::<AgencyId>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn spiffe_roles_round_trip() {
        let fed = "casebridge.test";
        for role in [
            Role::Broker,
            Role::Node("HR".parse().unwrap()),
            Role::Agency("RS/prosecutor".parse().unwrap()),
            Role::Auditor("dpa-hr".into()),
        ] {
            let uri = role.spiffe_uri(fed);
            assert_eq!(Role::from_spiffe_uri(&uri, fed).unwrap(), role);
        }
        assert!(Role::from_spiffe_uri("spiffe://other.test/broker", fed).is_err());
        assert!(Role::from_spiffe_uri("spiffe://casebridge.test/node/hr", fed).is_err());
        assert!(Role::from_spiffe_uri("spiffe://casebridge.test/admin", fed).is_err());
        assert!(Role::from_spiffe_uri("https://casebridge.test/broker", fed).is_err());
    }

    #[test]
    fn envelope_ids_are_time_ordered() {
        let a = EnvelopeId::at(1_700_000_000_000);
        let b = EnvelopeId::at(1_700_000_000_000);
        let c = EnvelopeId::at(1_700_000_000_001);
        assert!(a < b && b < c);
        assert_eq!(a.to_string().parse::<EnvelopeId>().unwrap(), a);
        assert_eq!(EnvelopeId::from_bytes(a.as_bytes()).unwrap(), a);
        assert!(EnvelopeId::from_bytes(&[1, 2, 3]).is_err());
    }

    #[test]
    fn errors_quote_only_a_prefix_of_the_input() {
        let huge = format!("BA/{}", "p".repeat(1 << 20));
        for e in [
            huge.parse::<AgencyId>().unwrap_err(),
            huge.parse::<Country>().unwrap_err(),
            huge.parse::<EnvelopeId>().unwrap_err(),
            EnvelopeId::from_bytes(huge.as_bytes()).unwrap_err(),
            Role::from_spiffe_uri(&huge, "casebridge.test").unwrap_err(),
        ] {
            let text = e.to_string();
            assert!(text.len() < 200, "{} bytes: {}", text.len(), &text[..200]);
            assert!(text.contains("bytes)"), "{text}");
        }
        assert_eq!(
            "BA/Police".parse::<AgencyId>().unwrap_err().to_string(),
            "invalid agency id \"BA/Police\": expected CC/name with name in [a-z0-9-]{1,32}"
        );
    }
}

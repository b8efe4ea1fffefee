//! Policy decisions on signed envelope headers.
//!
//! The broker asks a [`PolicyEngine`] whether a verified header may pass;
//! every answer carries an explanation and the hash of the policy bundle set
//! in force, both of which go into the audit event.
//!
//! Only [`PermitAllPlaceholder`] exists so far. It is what its name says: it
//! permits every transfer that passed the cryptographic and directory checks,
//! and says so in every explanation and audit event. It stands in for the
//! Cedar engine that enforces the federation's and each agency's rules.

use crate::envelope::VerifiedHeader;

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Which policies determined the decision, in words.
    pub explanation: String,
    /// Hash identifying the exact policy set in force.
    pub bundle_hash: String,
}

/// Facts about an onward transfer that only the broker's records establish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Onward {
    pub originator: crate::ids::AgencyId,
    pub original_handling: crate::proto::v1::HandlingCode,
    pub permission_granted: bool,
}

/// Decides on a header the broker has verified.
pub trait PolicyEngine: Send + Sync + 'static {
    fn decide(&self, header: &VerifiedHeader, onward: Option<&Onward>) -> Decision;
}

/// Permits everything. A placeholder, named as one wherever it shows.
#[derive(Debug, Default, Clone)]
pub struct PermitAllPlaceholder;

/// The bundle hash recorded while the placeholder is in force.
pub const PLACEHOLDER_BUNDLE_HASH: &str = "placeholder:permit-all";

impl PolicyEngine for PermitAllPlaceholder {
    fn decide(&self, _header: &VerifiedHeader, _onward: Option<&Onward>) -> Decision {
        Decision {
            allowed: true,
            explanation:
                "permitted by the permit-all placeholder (no policy bundles are enforced yet)"
                    .into(),
            bundle_hash: PLACEHOLDER_BUNDLE_HASH.into(),
        }
    }
}

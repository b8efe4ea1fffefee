//! A client of a node's agency API, built from an agency profile. The
//! command line, the demo and the tests use it; other languages use proto/.
//!
//! A profile names its agency twice: in `agency` and in its certificate's
//! SPIFFE id. The node trusts only the certificate, so a profile whose
//! `agency` says otherwise would make every command speak for an agency the
//! person did not mean; [`check_agency`] refuses such a profile before any
//! connection is made.

use std::path::Path;

use anyhow::Context as _;
use rustls::pki_types::CertificateDer;
use tonic::transport::Channel;

use crate::daemon::config::AgencyProfile;
use crate::daemon::tls::{ClientTls, Identity};
use crate::protocol::ids::{AgencyId, Role};

/// An agency's authenticated connection to its node.
#[derive(Clone)]
pub struct AgencyClient {
    pub agency: AgencyId,
    pub api: crate::daemon::rpc::agency_client::AgencyClient<Channel>,
}

/// Checks that the certificate `cert` (read from `cert_file`) speaks for
/// the agency the profile names, in the profile's trust domain. The error
/// is a sentence naming both.
pub fn check_agency(
    profile: &AgencyProfile,
    cert: &CertificateDer<'_>,
    cert_file: &Path,
) -> anyhow::Result<()> {
    let named = Role::Agency(profile.agency.clone()).spiffe_uri(&profile.federation);
    match crate::protocol::identity::role_of(cert, &profile.federation) {
        Ok(Role::Agency(a)) if a == profile.agency => Ok(()),
        Ok(role) => anyhow::bail!(
            "the profile names agency {}, but its certificate {} is for {role} ({}), not {named}; \
             use the profile that goes with this certificate, or correct `agency`",
            profile.agency,
            cert_file.display(),
            role.spiffe_uri(&profile.federation),
        ),
        Err(why) => anyhow::bail!(
            "the profile names agency {}, but its certificate {} does not carry its SPIFFE id \
             {named}: {why}",
            profile.agency,
            cert_file.display(),
        ),
    }
}

impl AgencyClient {
    /// Connects as the agency of the profile at `path` (lazily: the first
    /// call dials). A profile whose `agency` is not its certificate's is
    /// refused.
    pub fn from_profile(path: &Path) -> anyhow::Result<AgencyClient> {
        let profile: AgencyProfile = crate::daemon::config::load(path)?;
        Self::from_parts(&profile, &profile.node)
            .with_context(|| format!("agency profile {}", path.display()))
    }

    /// Connects as the agency of `profile` to the node at `node_addr`. A
    /// profile whose `agency` is not its certificate's is refused.
    pub fn from_parts(profile: &AgencyProfile, node_addr: &str) -> anyhow::Result<AgencyClient> {
        let identity = Identity::load(&profile.tls.cert, &profile.tls.key)?;
        check_agency(profile, &identity.chain[0], &profile.tls.cert)?;
        Self::connect(profile, &identity, node_addr)
    }

    /// Connects to the node at `node_addr` presenting the profile's
    /// certificate, whatever agency it is for: the node alone decides who
    /// is calling. Only for tests of that decision (a client that lies
    /// about itself); everything else uses [`AgencyClient::from_parts`].
    pub fn presenting_any_certificate(
        profile: &AgencyProfile,
        node_addr: &str,
    ) -> anyhow::Result<AgencyClient> {
        let identity = Identity::load(&profile.tls.cert, &profile.tls.key)?;
        Self::connect(profile, &identity, node_addr)
    }

    fn connect(
        profile: &AgencyProfile,
        identity: &Identity,
        node_addr: &str,
    ) -> anyhow::Result<AgencyClient> {
        let root = crate::daemon::tls::load_certs(&profile.tls.root)?.remove(0);
        let tls = ClientTls::new(identity, &root, &profile.federation)?;
        let channel = tls
            .channel(node_addr, Role::Node(profile.agency.country()))
            .with_context(|| format!("node address {node_addr}"))?;
        Ok(AgencyClient {
            agency: profile.agency.clone(),
            api: crate::daemon::rpc::agency_client::AgencyClient::new(channel)
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
        })
    }
}

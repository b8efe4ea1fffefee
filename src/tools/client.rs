//! A client of a node's agency API, built from an agency profile. The
//! command line, the demo and the tests use it; other languages use proto/.

use std::path::Path;

use anyhow::Context as _;
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

impl AgencyClient {
    /// Connects as the agency of `profile` (lazily: the first call dials).
    pub fn from_profile(path: &Path) -> anyhow::Result<AgencyClient> {
        let profile: AgencyProfile = crate::daemon::config::load(path)?;
        Self::from_parts(&profile, &profile.node)
    }

    /// Connects as the agency of `profile` to the node at `node_addr`.
    pub fn from_parts(profile: &AgencyProfile, node_addr: &str) -> anyhow::Result<AgencyClient> {
        let identity = Identity::load(&profile.tls.cert, &profile.tls.key)?;
        let root = crate::daemon::tls::load_certs(&profile.tls.root)?.remove(0);
        let tls = ClientTls::new(&identity, &root, &profile.federation)?;
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

//! The generated gRPC clients and servers of `casebridge.v1` (Exchange,
//! Audit, Agency), over the messages of `protocol::proto`, and what each
//! daemon tells about them: reflection of the services it serves, in both
//! generations of the reflection protocol.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/services/casebridge.v1.rs"));
}

pub use generated::*;

use prost::Message as _;

/// The encoded file descriptor set of every `casebridge.v1` file.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("casebridge_descriptor");

/// The APIs the broker serves.
pub const BROKER_SERVICES: &[&str] = &["casebridge.v1.Exchange", "casebridge.v1.Audit"];
/// The API a node serves.
pub const NODE_SERVICES: &[&str] = &["casebridge.v1.Agency"];
/// gRPC health, which both daemons serve.
pub const HEALTH_SERVICE: &str = "grpc.health.v1.Health";
/// Both generations of gRPC reflection, which both daemons serve.
pub const REFLECTION_SERVICES: &[&str] = &[
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Every service a daemon serving the APIs `apis` lists: those, health and
/// both reflection services.
pub fn listed_services(apis: &[&str]) -> Vec<String> {
    apis.iter()
        .chain(std::iter::once(&HEALTH_SERVICE))
        .chain(REFLECTION_SERVICES)
        .map(ToString::to_string)
        .collect()
}

/// The `casebridge.v1` files with the services not in `apis` taken out, so
/// that a daemon describes no service it does not serve (the messages stay:
/// the APIs share them).
fn served_descriptors(apis: &[&str]) -> Result<prost_types::FileDescriptorSet, prost::DecodeError> {
    let mut set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET)?;
    for file in &mut set.file {
        let package = file.package.clone().unwrap_or_default();
        file.service.retain(|s| {
            let name = format!("{package}.{}", s.name.as_deref().unwrap_or_default());
            apis.contains(&name.as_str())
        });
    }
    Ok(set)
}

/// The reflection services of a daemon serving `apis`: the v1 protocol and
/// the older v1alpha one that some clients still speak, both listing exactly
/// [`listed_services`] and describing only those.
#[allow(clippy::type_complexity)]
pub fn reflection(
    apis: &[&str],
) -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let set = served_descriptors(apis)?;
    let builder = || {
        let mut b = tonic_reflection::server::Builder::configure()
            .register_file_descriptor_set(set.clone())
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // Each generation describes the other's service too, since both
            // are listed.
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            );
        for name in listed_services(apis) {
            b = b.with_service_name(name);
        }
        b
    };
    Ok((builder().build_v1()?, builder().build_v1alpha()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemons_serve_every_service_of_the_descriptor_set_between_them() {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let mut all: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| {
                let package = f.package.clone().unwrap_or_default();
                f.service
                    .iter()
                    .map(move |s| format!("{package}.{}", s.name.as_deref().unwrap_or_default()))
            })
            .collect();
        all.sort();
        let mut served: Vec<String> = BROKER_SERVICES
            .iter()
            .chain(NODE_SERVICES)
            .map(ToString::to_string)
            .collect();
        served.sort();
        assert_eq!(all, served);
        let broker = served_descriptors(BROKER_SERVICES).unwrap();
        let services: Vec<&str> = broker
            .file
            .iter()
            .flat_map(|f| f.service.iter().filter_map(|s| s.name.as_deref()))
            .collect();
        assert_eq!(services.len(), 2, "{services:?}");
        assert!(!services.contains(&"Agency"));
    }
}

//! Generated protobuf, gRPC and canonical JSON code for `casebridge.v1`.
//!
//! Only this module and the gRPC edges (`broker::service`, `node::agency_api`)
//! touch prost types directly; the cores work on validated domain types.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("casebridge.v1");
    include!(concat!(env!("OUT_DIR"), "/casebridge.v1.serde.rs"));

    /// The encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("casebridge_descriptor");
}

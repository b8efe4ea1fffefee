//! The generated gRPC clients and servers of `casebridge.v1` (Exchange,
//! Audit, Agency), over the messages of `protocol::proto`.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/services/casebridge.v1.rs"));
}

pub use generated::*;

/// The encoded file descriptor set, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("casebridge_descriptor");

//! Generated protobuf messages and their canonical proto3 JSON (serde) for
//! `casebridge.v1`, and the names of the gRPC metadata that travels beside
//! them. The gRPC services over them are generated separately, in
//! `daemon::rpc`, so that the core needs no gRPC runtime.
//!
//! Only this module and the gRPC edges (`daemon::broker::service`,
//! `daemon::node::agency_api`) touch prost types directly; the cores work on
//! validated domain types.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/messages/casebridge.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/messages/casebridge.v1.serde.rs"));
}

/// gRPC metadata key carrying a refusal's code, so a node can tell a
/// refusal (final) from a failure (retry).
pub const REFUSAL_METADATA: &str = "casebridge-refusal";
/// gRPC metadata key carrying the log index of a refusal's audit event.
pub const LOG_INDEX_METADATA: &str = "casebridge-log-index";

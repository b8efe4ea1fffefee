//! casebridge: a secure broker for cross-border case-record exchange between
//! law-enforcement, judicial and humanitarian agencies.
//!
//! Four layers, each depending only on those below it (ARCHITECTURE.md is
//! the map; `layers_tests` checks the direction):
//!
//! - [`tools`]: the person-facing commands (send, inbox, status, audit,
//!   policy, pki, demo) and the in-process local federation;
//! - [`daemon`]: the broker and the node, with their gRPC services, TLS,
//!   configuration and clock;
//! - [`storage`]: the storage seam and its backends (sled);
//! - [`protocol`]: the protocol core both sides share: identities, categories,
//!   envelopes and receipts, the directory, Merkle trees, signed notes and
//!   checkpoints, policy decisions. No I/O, no clock, no runtime.
#![forbid(unsafe_code)]

pub mod daemon;
pub mod protocol;
pub mod storage;
pub mod tools;

#[cfg(test)]
mod layers_tests;
#[cfg(test)]
mod props_tests;

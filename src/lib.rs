//! casebridge: a secure broker for cross-border case-record exchange between
//! law-enforcement, judicial and humanitarian agencies.
//!
//! See ARCHITECTURE.md for the map of this crate.
#![forbid(unsafe_code)]

pub mod audit_cli;
pub mod bounds;
pub mod broker;
pub mod categories;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod directory;
pub mod envelope;
pub mod ids;
pub mod in_force;
pub mod keys;
pub mod local;
pub mod merkle;
pub mod node;
pub mod note;
pub mod pki;
pub mod policy;
pub mod policy_cli;
#[cfg(test)]
mod props_tests;
pub mod proto;
pub mod shutdown;
pub mod storage;
pub mod time;
pub mod tls;

pub use shutdown::shutdown_signal;

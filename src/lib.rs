//! casebridge: a secure broker for cross-border case-record exchange between
//! law-enforcement, judicial and humanitarian agencies.
//!
//! See ARCHITECTURE.md for the map of this crate.
#![forbid(unsafe_code)]

pub mod broker;
pub mod categories;
pub mod config;
pub mod directory;
pub mod envelope;
pub mod ids;
pub mod keys;
pub mod node;
pub mod pki;
pub mod policy;
pub mod proto;
pub mod storage;
pub mod time;
pub mod tls;

//! The person-facing commands and the in-process local federation. Tools use
//! the daemons and the protocol core; nothing below depends on them.

pub mod audit;
pub mod bench;
pub mod ca;
pub mod cli;
pub mod client;
pub mod config_check;
pub mod demo;
pub mod directory_cli;
pub mod health;
pub mod local;
pub mod names;
pub mod pki;
pub mod policy_cli;

#[cfg(test)]
mod config_props_tests;
#[cfg(test)]
mod policy_tests;

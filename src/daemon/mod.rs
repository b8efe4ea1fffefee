//! The daemons: the broker and the national node, with what they need to run
//! (mutual TLS, configuration files, the clock, graceful shutdown, metrics).

pub mod broker;
pub mod clock;
pub mod config;
pub mod in_force;
pub mod live;
pub mod metrics;
pub mod node;
pub mod rpc;
pub mod shutdown;
pub(crate) mod status;
pub mod tls;

#[cfg(test)]
mod key_file_props_tests;

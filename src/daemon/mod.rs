//! The daemons: the broker and the national node, with what they need to run
//! (mutual TLS, configuration files, the clock, graceful shutdown).

pub mod broker;
pub mod clock;
pub mod config;
pub mod in_force;
pub mod node;
pub mod rpc;
pub mod shutdown;
pub mod tls;

//! The embedded backend: one sled database per process, flushed by group
//! commit before anything is acknowledged.

pub mod broker;
pub mod node;

//! Integration tests: a whole federation in this process, on loopback, with
//! real mutual TLS, real crypto and real stores in temporary directories.

mod adversary;
mod authz;
mod bench;
mod brokers;
mod cli_commands;
mod cli_errors;
mod delivery;
mod durability;
mod health;
mod idempotency;
mod install;
mod live;
mod metrics;
mod onward;
mod policy_live;
mod policy_table;
mod postgres;
mod refusals;
mod rotation;
mod shutdown;
mod support;
mod transparency;
mod uplink;
mod walkthrough;

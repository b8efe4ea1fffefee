//! Adversarial cases: a hostile broker against real nodes.
//!
//! The broker holds its real certificate and key (see [`hostile_broker`]) but
//! not a node's signing key: it can forge, replay, reorder and withhold
//! deliveries and relay receipts that answer something else.

pub(crate) mod hostile_broker;

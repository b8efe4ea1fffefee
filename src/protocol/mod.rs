//! The protocol core: what the broker, the nodes and the auditors agree on,
//! as values and pure functions. It reads no file or socket and no clock
//! ("now" is an argument) and knows nothing of tokio, tonic or any storage
//! engine; `layers_tests` holds it to that. It does draw randomness from the
//! operating system for keys, nonces and data keys.

pub mod audit;
pub mod bounds;
pub mod categories;
pub mod directory;
pub mod envelope;
pub mod identity;
pub mod ids;
pub mod keys;
pub mod leaf;
pub mod merkle;
pub mod note;
pub mod policy;
pub mod proto;
pub mod time;
pub mod transparency;

#[cfg(test)]
mod directory_props_tests;
#[cfg(test)]
mod envelope_props_tests;
#[cfg(test)]
mod ids_props_tests;
#[cfg(test)]
mod note_props_tests;

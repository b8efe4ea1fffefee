//! The adversarial suite: each case plays a hostile party (a node with its
//! own valid keys, a broker that lies, an agency system asking for what is
//! not its own) and asserts the exact refusal, that nothing changed but the
//! refusal's audit event where one is promised, and that the server still
//! serves. docs/threat-model.md names the case behind each claim.

mod durability;
mod envelope;
mod exchange;
mod harness;
mod identity;
mod limits;
mod node;

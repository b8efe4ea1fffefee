//! Adversarial cases: durability.

//! Adversarial cases: identity.

//! Adversarial cases: limits.

//! Adversarial cases: harness.

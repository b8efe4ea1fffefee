//! Adversarial cases: envelope.

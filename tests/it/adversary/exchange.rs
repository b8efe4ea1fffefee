//! Adversarial cases: exchange.

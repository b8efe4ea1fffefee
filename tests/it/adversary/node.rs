//! Adversarial cases: node.

//! The files a party keeps: its key files, the signed directory and the
//! pinned directory key, and its policy bundles. Each module reads the files
//! into the core's values (`protocol::keys`, `protocol::directory`,
//! `protocol::policy`), which check them; every error names the file, as the
//! core's diagnostics do.

pub mod directory;
pub mod keys;
pub mod policy;

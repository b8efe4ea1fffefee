//! Data-protection policy: may this agency pass this record to that agency?
//!
//! Policies are written in Cedar by the federation (the *framework*) and by
//! each agency (its own *bundle*), and every transfer must pass three layers,
//! each evaluated on its own with Cedar's authorizer:
//!
//! 1. the framework bundle, which states the rules every member agreed to;
//! 2. the sender's bundle, whose policies speak for what it sends
//!    (`principal == Casebridge::Agency::"<owner>"`);
//! 3. the recipient's bundle, whose policies speak for what it accepts
//!    (`resource == Casebridge::Agency::"<owner>"`).
//!
//! In every layer nothing is permitted unless a policy permits it, and a
//! `forbid` always wins; a policy that cannot be evaluated refuses too. An
//! agency without a bundle therefore can neither send nor receive. A record
//! with several recipients is decided per recipient and passes only if every
//! recipient passes.
//!
//! Why layers rather than one policy set: an agency's data-protection officer
//! writes and signs its own bundle, and Cedar's "forbid wins" inside one set
//! would let any bundle veto any transfer, while "any permit suffices" would
//! let any bundle open a door for others. Evaluating each layer separately
//! and requiring all three keeps each bundle's authority to its owner, which
//! loading enforces: an agency bundle whose policies speak for
//! another agency is refused.
//!
//! Bundles are signed: the framework by the federation's directory key, an
//! agency's by its own TLS key, which its national CA vouches for and the
//! signed directory pins. A [`Policies`] value exists only after every bundle
//! of a set parsed, validated against the embedded Cedar schema in strict
//! mode, respected its scope and carried a valid signature (or was built from
//! the embedded examples, labelled as such). Every [`Decision`] names the
//! policies that determined it and carries the hash of the set in force.
//!
//! Everything here is pure: no I/O, no clock ("now" is an argument).
//! Reading and writing bundle directories, and the set in force that is
//! reloaded when they change, are `storage::files::policy`'s. `docs/policy.md` is the guide for data-protection
//! officers; `examples/policies/` holds the example framework and the
//! per-kind agency templates.

mod bundle;
mod check;
mod decide;
mod examples;
mod lint;
mod schema;
mod signing;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[cfg(test)]
pub(crate) use bundle::digest as bundle_digest;
pub(crate) use bundle::report;
pub use bundle::{BundleReport, Effect, PolicyRef, SignatureStatus};
pub(crate) use bundle::{RawBundle, RawSet};
pub(crate) use check::{validate_bundle, verify_bundle};
pub use decide::{
    AgencyFacts, Decision, EvalError, Layer, LayerOutcome, NEEDS_GROUND, Onward, RecipientDecision,
    Transfer,
};
pub(crate) use examples::render as render_examples;
pub use examples::{
    agencies_for, agencies_in, agencies_of, default_agencies, default_countries,
    default_eu_members, template_for,
};
pub use signing::BundleSigner;
pub(crate) use signing::sign_raw;

use crate::protocol::directory::Directory;
use crate::protocol::ids::AgencyId;

/// The file in a bundle directory that holds its manifest.
pub const MANIFEST_FILE: &str = "bundle.toml";
/// The file that holds a bundle's signature (hex).
pub const SIGNATURE_FILE: &str = "SIGNATURE";
/// The file that holds an agency bundle signer's certificate chain (PEM:
/// leaf, then national CA).
pub const SIGNER_FILE: &str = "signer.crt";
/// Prefix of [`Policies::hash`] for the unsigned example set.
pub const EXAMPLES_HASH_PREFIX: &str = "unsigned-examples:";

/// One problem found in a bundle: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as a path relative to the policy set's directory when a set
    /// is loaded, or as given when a single bundle is validated.
    pub file: String,
    /// 1-based line, where the problem has one.
    pub line: Option<u32>,
    pub reason: String,
}

impl Diagnostic {
    pub(crate) fn new(
        file: impl Into<String>,
        line: Option<u32>,
        reason: impl Into<String>,
    ) -> Self {
        Diagnostic {
            file: file.into(),
            line,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

fn list(diags: &[Diagnostic]) -> String {
    diags
        .iter()
        .map(|d| format!("  {d}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Why a policy set or bundle could not be loaded, signed or installed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// One or more bundles are invalid, unsigned or wrongly signed.
    #[error("policy bundles refused:\n{}", list(.0))]
    Refused(Vec<Diagnostic>),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Key(#[from] crate::protocol::keys::KeyError),
    /// A signing key or certificate is unusable, or does not belong to the
    /// bundle's owner.
    #[error("signer: {0}")]
    Signer(String),
    #[error("agency {0} is not listed in the directory")]
    UnknownAgency(AgencyId),
    #[error("{0} already exists; refusing to overwrite policy bundles")]
    Exists(PathBuf),
    /// A newer set would take a bundle back to an older version, or change
    /// a bundle without raising its version.
    #[error("policy set update refused: {0}")]
    Rollback(String),
    /// The embedded schema or example bundles do not load; a build defect
    /// the unit tests catch.
    #[error("internal: {0}")]
    Internal(String),
}

impl PolicyError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PolicyError + '_ {
        move |source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The per-file diagnostics, if this is a refusal of bundle content.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            PolicyError::Refused(d) => d,
            _ => &[],
        }
    }
}

/// Whose bundle: the federation's framework, or one agency's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    Framework,
    Agency(AgencyId),
}

impl Owner {
    /// The directory of this owner's bundle inside a policy set directory:
    /// `framework` or `agencies/<CC>/<name>`.
    pub fn relative_dir(&self) -> PathBuf {
        match self {
            Owner::Framework => PathBuf::from("framework"),
            Owner::Agency(a) => Path::new("agencies")
                .join(a.country().as_str())
                .join(a.name()),
        }
    }

    pub(crate) fn relative_dir_string(&self) -> String {
        match self {
            Owner::Framework => "framework".to_string(),
            Owner::Agency(a) => format!("agencies/{}/{}", a.country(), a.name()),
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Framework => f.write_str("framework"),
            Owner::Agency(a) => a.fmt(f),
        }
    }
}

impl std::str::FromStr for Owner {
    type Err = crate::protocol::ids::IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "framework" {
            Ok(Owner::Framework)
        } else {
            s.parse().map(Owner::Agency)
        }
    }
}

/// What identifies one bundle in force, as recorded in audit events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    pub owner: Owner,
    pub version: u64,
    /// The bundle digest (see `docs/policy.md`, "Bundle digest").
    pub digest: [u8; 32],
}

impl BundleInfo {
    pub fn digest_hex(&self) -> String {
        hex::encode(self.digest)
    }
}

/// An immutable, validated and verified set of policy bundles: the
/// framework and any number of agency bundles.
///
/// Cheap to clone; safe to share between threads.
#[derive(Clone)]
pub struct Policies {
    inner: Arc<Inner>,
}

struct Inner {
    vocabulary: schema::Vocabulary,
    framework: bundle::Compiled,
    agencies: BTreeMap<AgencyId, bundle::Compiled>,
    hash: String,
    examples: bool,
    /// The recipient decisions this set has made, by their full inputs.
    decisions: decide::DecisionCache,
}

impl fmt::Debug for Policies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policies")
            .field("hash", &self.inner.hash)
            .field("bundles", &self.bundles())
            .finish()
    }
}

impl Policies {
    /// Builds the policy set read from a directory (`framework/` and
    /// `agencies/<CC>/<name>/`; see `storage::files::policy`), checking
    /// every bundle's syntax, schema, scope and signature: the framework's
    /// against the pinned `directory_key`, each agency's against its
    /// national CA as `directory` pins it, with certificates valid at
    /// `now_ms`.
    ///
    /// Fails if any bundle fails, listing every problem found; the caller
    /// keeps the set it had in force.
    pub(crate) fn from_set(
        set: bundle::RawSet,
        directory: &Directory,
        directory_key: &[u8; 32],
        now_ms: i64,
    ) -> Result<Policies, PolicyError> {
        let vocabulary = schema::Vocabulary::new()?;
        let mut diags = Vec::new();
        let trust = signing::Trust {
            directory,
            directory_key,
            now_ms,
        };

        let framework =
            match check::load_bundle(&vocabulary, set.framework, &Owner::Framework, &trust) {
                Ok(b) => Some(b),
                Err(mut d) => {
                    diags.append(&mut d);
                    None
                }
            };

        let mut agencies = BTreeMap::new();
        match set.agencies {
            Ok(found) => {
                for (owner, raw) in found {
                    match owner {
                        // A revoked agency can neither send nor receive; its
                        // bundle is not in force, and must not keep the rest
                        // of the federation's set from loading.
                        Ok(id) if directory.agency(&id).is_some_and(|a| a.revoked) => {
                            tracing::warn!(agency = %id, "bundle of a revoked agency ignored");
                        }
                        Ok(id) => match check::load_bundle(
                            &vocabulary,
                            raw,
                            &Owner::Agency(id.clone()),
                            &trust,
                        ) {
                            Ok(b) => {
                                agencies.insert(id, b);
                            }
                            Err(mut d) => diags.append(&mut d),
                        },
                        Err(d) => diags.push(d),
                    }
                }
            }
            Err(d) => diags.push(d),
        }
        diags.extend(set.strays);

        match framework {
            Some(framework) if diags.is_empty() => {
                Ok(Policies::assemble(vocabulary, framework, agencies, false))
            }
            _ => Err(PolicyError::Refused(diags)),
        }
    }

    /// The example bundles of `examples/policies/` for `agencies`: the
    /// framework, and one bundle per agency whose kind has a template (see
    /// [`template_for`]). Unsigned: the hash starts with
    /// [`EXAMPLES_HASH_PREFIX`] and every explanation says so. For tests, the
    /// demo and `policy explain` without a federation.
    pub fn examples(agencies: &[AgencyFacts]) -> Result<Policies, PolicyError> {
        let vocabulary = schema::Vocabulary::new()?;
        let rendered = examples::render(agencies);
        let mut framework = None;
        let mut compiled = BTreeMap::new();
        for (owner, files) in rendered {
            let b = bundle::compile_files(&vocabulary, &owner, files).map_err(|d| {
                PolicyError::Internal(format!("example bundle {owner}:\n{}", list(&d)))
            })?;
            match owner {
                Owner::Framework => framework = Some(b),
                Owner::Agency(id) => {
                    compiled.insert(id, b);
                }
            }
        }
        let framework =
            framework.ok_or_else(|| PolicyError::Internal("no example framework bundle".into()))?;
        Ok(Policies::assemble(vocabulary, framework, compiled, true))
    }

    fn assemble(
        vocabulary: schema::Vocabulary,
        framework: bundle::Compiled,
        agencies: BTreeMap<AgencyId, bundle::Compiled>,
        examples: bool,
    ) -> Policies {
        let mut infos: Vec<&BundleInfo> = std::iter::once(&framework.info)
            .chain(agencies.values().map(|b| &b.info))
            .collect();
        let set = set_hash(&mut infos);
        let hash = if examples {
            format!("{EXAMPLES_HASH_PREFIX}{set}")
        } else {
            set
        };
        Policies {
            inner: Arc::new(Inner {
                vocabulary,
                framework,
                agencies,
                hash,
                examples,
                decisions: decide::DecisionCache::default(),
            }),
        }
    }

    /// The hash of the set in force, recorded with every decision: lowercase
    /// hex SHA-256 over the bundles' owners, versions and digests (see
    /// `docs/policy.md`), prefixed with [`EXAMPLES_HASH_PREFIX`] for the
    /// unsigned examples.
    pub fn hash(&self) -> &str {
        &self.inner.hash
    }

    /// Whether this is the unsigned example set.
    pub fn is_examples(&self) -> bool {
        self.inner.examples
    }

    /// Every bundle in force, framework first, then agencies in id order.
    pub fn bundles(&self) -> Vec<BundleInfo> {
        std::iter::once(self.inner.framework.info.clone())
            .chain(self.inner.agencies.values().map(|b| b.info.clone()))
            .collect()
    }

    /// Whether `agency` has a bundle in force (without one it can neither
    /// send nor receive).
    pub fn has_bundle(&self, agency: &AgencyId) -> bool {
        self.inner.agencies.contains_key(agency)
    }

    /// Every policy in force, for `casebridge policy list` style output.
    pub fn policies(&self) -> Vec<PolicyRef> {
        std::iter::once(&self.inner.framework)
            .chain(self.inner.agencies.values())
            .flat_map(|b| b.summaries())
            .collect()
    }

    /// Refuses `next` as a successor of this set if it takes any bundle
    /// back to an older version, or changes a bundle's content without
    /// raising its version. Bundles may be added and removed.
    pub fn check_successor(&self, next: &Policies) -> Result<(), PolicyError> {
        check_versions(&self.bundles(), &next.bundles(), None)
    }

    /// Decides on one transfer: per recipient, the framework, the sender's
    /// outbound and the recipient's inbound layer must all permit.
    pub fn decide(&self, transfer: &Transfer) -> Decision {
        decide::decide(self, transfer)
    }
}

/// One line naming every bundle of a set with its version.
pub fn bundle_list(p: &Policies) -> String {
    p.bundles()
        .iter()
        .map(|b| format!("{} v{}", b.owner, b.version))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses `next` bundles that go back from the versions `in_force` (an
/// older version, or the same version with other content). A bundle of
/// `next` found in `dir` is named by its `bundle.toml` there. The one rule
/// for live reloads and for starts against the versions a store recorded.
pub fn check_versions(
    in_force: &[BundleInfo],
    next: &[BundleInfo],
    dir: Option<&Path>,
) -> Result<(), PolicyError> {
    let current: BTreeMap<&Owner, &BundleInfo> = in_force.iter().map(|b| (&b.owner, b)).collect();
    for b in next {
        let Some(old) = current.get(&b.owner) else {
            continue;
        };
        let file = dir
            .map(|d| {
                format!(
                    "{}: ",
                    d.join(b.owner.relative_dir()).join("bundle.toml").display()
                )
            })
            .unwrap_or_default();
        if b.version < old.version {
            return Err(PolicyError::Rollback(format!(
                "{file}bundle {} version {} is older than the version in force ({})",
                b.owner, b.version, old.version
            )));
        }
        if b.version == old.version && b.digest != old.digest {
            return Err(PolicyError::Rollback(format!(
                "{file}bundle {} changed without a new version (still {})",
                b.owner, b.version
            )));
        }
    }
    Ok(())
}

/// `in_force` with every bundle of `next` that is newer, or new: the floor
/// no later set may go below.
pub fn raise_floor(in_force: &[BundleInfo], next: &[BundleInfo]) -> Vec<BundleInfo> {
    let mut floor: BTreeMap<Owner, BundleInfo> = in_force
        .iter()
        .map(|b| (b.owner.clone(), b.clone()))
        .collect();
    for b in next {
        match floor.get(&b.owner) {
            Some(old) if old.version >= b.version => {}
            _ => {
                floor.insert(b.owner.clone(), b.clone());
            }
        }
    }
    floor.into_values().collect()
}

/// The set hash over `infos` (sorted here by owner).
fn set_hash(infos: &mut [&BundleInfo]) -> String {
    infos.sort_by_key(|b| b.owner.to_string());
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"casebridge/v1 policy-set\0");
    for b in infos.iter() {
        let owner = b.owner.to_string();
        ctx.update(&(owner.len() as u64).to_be_bytes());
        ctx.update(owner.as_bytes());
        ctx.update(&b.version.to_be_bytes());
        ctx.update(&b.digest);
    }
    hex::encode(ctx.finish().as_ref())
}

#[cfg(test)]
mod props_tests;
#[cfg(test)]
mod tests;

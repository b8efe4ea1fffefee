//! Policy bundles: a bundle directory's files as read, its digest, and
//! compiling its Cedar files into a validated policy set that respects its
//! owner's scope. Reading the directory is `storage::files::policy`'s.
//!
//! A bundle is a flat directory: `bundle.toml`, one or more `*.cedar` files,
//! `SIGNATURE`, and for agency bundles `signer.crt`. Anything else is refused,
//! so what is signed is exactly what is enforced and nothing rides along.
//!
//! Each `.cedar` file is split into its policies here (a policy ends at a `;`
//! outside strings and comments) and each is parsed on its own, so every
//! diagnostic and every explanation can name the file and line of the policy
//! it is about; Cedar's own source spans are relative to that policy.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use cedar_policy::{
    Policy, PolicyId, PolicySet, PrincipalConstraint, ResourceConstraint, ValidationMode, Validator,
};
use miette::Diagnostic as _;

use super::schema::Vocabulary;
use super::{BundleInfo, Diagnostic, MANIFEST_FILE, Owner, lint};
use crate::protocol::ids::AgencyId;

/// Domain separation for the bundle digest.
const DIGEST_DOMAIN: &[u8] = b"casebridge/v1 policy-bundle\0";
/// The annotations a policy may carry.
const ANNOTATIONS: [&str; 2] = ["id", "reason"];

/// A bundle directory as read from disk (by `storage::files::policy`).
pub(crate) struct RawBundle {
    /// Every file the digest covers: `bundle.toml` and the `.cedar` files.
    pub files: BTreeMap<String, Vec<u8>>,
    pub signature: Option<Vec<u8>>,
    pub signer: Option<Vec<u8>>,
}

/// A policy set directory as read from disk: the framework bundle, the
/// agency bundles under `agencies/<CC>/<name>/` with the owner each place
/// names, and what was found where no bundle belongs; each with why it could
/// not be read.
pub(crate) struct RawSet {
    pub framework: Result<RawBundle, Vec<Diagnostic>>,
    pub agencies: Result<Vec<RawAgencyBundle>, Diagnostic>,
    pub strays: Vec<Diagnostic>,
}

/// An agency bundle's place in a set: the owner it names (or why it names
/// none) and the bundle read there.
pub(crate) type RawAgencyBundle = (
    Result<AgencyId, Diagnostic>,
    Result<RawBundle, Vec<Diagnostic>>,
);

/// Domain separation for [`RawSet::fingerprint`].
const FINGERPRINT_DOMAIN: &[u8] = b"casebridge/v1 policy-set-as-read\0";

impl RawSet {
    /// SHA-256 over everything read: every file of every bundle (manifest,
    /// policies, signature, signer chain) with its place, and every problem
    /// met while reading. Two reads with the same fingerprint would load to
    /// the same outcome at the same time against the same directory, so a
    /// reload can skip compiling and verifying a tree that did not change.
    pub(crate) fn fingerprint(&self) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(FINGERPRINT_DOMAIN);
        let mut put = |tag: u8, bytes: &[u8]| {
            ctx.update(&[tag]);
            ctx.update(&(bytes.len() as u64).to_be_bytes());
            ctx.update(bytes);
        };
        fn bundle(put: &mut impl FnMut(u8, &[u8]), raw: &Result<RawBundle, Vec<Diagnostic>>) {
            match raw {
                Ok(b) => {
                    put(b'B', &[]);
                    for (name, content) in &b.files {
                        put(b'n', name.as_bytes());
                        put(b'c', content);
                    }
                    match &b.signature {
                        Some(s) => put(b'S', s),
                        None => put(b's', &[]),
                    }
                    match &b.signer {
                        Some(s) => put(b'C', s),
                        None => put(b'x', &[]),
                    }
                }
                Err(diags) => {
                    put(b'E', &[]);
                    for d in diags {
                        put(b'd', d.to_string().as_bytes());
                    }
                }
            }
        }
        bundle(&mut put, &self.framework);
        match &self.agencies {
            Ok(found) => {
                put(b'A', &[]);
                for (owner, raw) in found {
                    match owner {
                        Ok(id) => put(b'o', id.to_string().as_bytes()),
                        Err(d) => put(b'd', d.to_string().as_bytes()),
                    }
                    bundle(&mut put, raw);
                }
            }
            Err(d) => put(b'd', d.to_string().as_bytes()),
        }
        put(b'T', &[]);
        for d in &self.strays {
            put(b'd', d.to_string().as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

/// Whether a policy permits or forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Permit,
    Forbid,
}

impl From<cedar_policy::Effect> for Effect {
    fn from(e: cedar_policy::Effect) -> Self {
        match e {
            cedar_policy::Effect::Permit => Effect::Permit,
            cedar_policy::Effect::Forbid => Effect::Forbid,
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Effect::Permit => "permit",
            Effect::Forbid => "forbid",
        })
    }
}

/// What the compiler knows about one policy.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    /// Path of the file relative to the set root (or as given).
    pub file: String,
    /// The `@id` annotation, or `<file>#<n>` for the n-th policy in a file.
    pub id: String,
    pub line: u32,
    pub effect: Effect,
    pub reason: Option<String>,
}

/// A bundle that parsed, validated and respected its scope.
pub(crate) struct Compiled {
    pub info: BundleInfo,
    pub description: Option<String>,
    pub set: PolicySet,
    pub meta: HashMap<PolicyId, Meta>,
    /// Policy ids in file and source order.
    pub order: Vec<PolicyId>,
    pub files: Vec<String>,
    pub warnings: Vec<Diagnostic>,
}

impl Compiled {
    /// The policy `pid` of this bundle, as listings and decisions name it.
    pub fn policy_ref(&self, pid: &PolicyId) -> Option<PolicyRef> {
        self.meta.get(pid).map(|m| PolicyRef {
            owner: self.info.owner.clone(),
            file: m.file.clone(),
            id: m.id.clone(),
            line: m.line,
            effect: m.effect,
            reason: m.reason.clone(),
        })
    }

    /// Every policy of the bundle, in file and source order.
    pub fn summaries(&self) -> Vec<PolicyRef> {
        self.order
            .iter()
            .filter_map(|pid| self.policy_ref(pid))
            .collect()
    }
}

/// One policy of a bundle: a listing names every policy with it, a decision
/// the policies that determined a layer's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRef {
    /// Whose bundle it is in.
    pub owner: Owner,
    /// Its file, relative to the policy set's directory.
    pub file: String,
    /// Its `@id`, or `<file>#<n>` for the n-th policy of a file without one.
    pub id: String,
    pub line: u32,
    pub effect: Effect,
    /// Its `@reason` annotation.
    pub reason: Option<String>,
}

/// `"no-biometric-genetic-for-statistics" (framework/special-categories.cedar:12)`
impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\" ({}:{})", self.id, self.file, self.line)
    }
}

/// What is known about a bundle's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureStatus {
    /// No `SIGNATURE` file: the bundle cannot be loaded into a set.
    Unsigned,
    /// Signed, but not checked against a federation; `signer` describes the
    /// signer certificate where there is one.
    NotChecked { signer: Option<String> },
    /// Checked against the federation's directory: who signed it.
    Verified { signer: String },
}

/// The result of validating one bundle directory.
#[derive(Debug, Clone)]
pub struct BundleReport {
    pub dir: PathBuf,
    pub owner: Owner,
    pub version: u64,
    pub description: Option<String>,
    pub digest: [u8; 32],
    /// The files the digest covers, in digest order.
    pub files: Vec<String>,
    pub policies: Vec<PolicyRef>,
    /// Problems that do not stop the bundle from loading, e.g. a policy
    /// Cedar proves can never apply.
    pub warnings: Vec<Diagnostic>,
    pub signature: SignatureStatus,
}

impl fmt::Display for BundleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "bundle {} version {} in {}",
            self.owner,
            self.version,
            self.dir.display()
        )?;
        if let Some(d) = &self.description {
            writeln!(f, "  {d}")?;
        }
        writeln!(f, "  digest {}", hex::encode(self.digest))?;
        match &self.signature {
            SignatureStatus::Unsigned => writeln!(f, "  signature: none (unsigned)")?,
            SignatureStatus::NotChecked { signer: Some(s) } => writeln!(
                f,
                "  signature: present, signer {s}, not checked against a federation"
            )?,
            SignatureStatus::NotChecked { signer: None } => {
                writeln!(f, "  signature: present, not checked against a federation")?
            }
            SignatureStatus::Verified { signer } => {
                writeln!(f, "  signature: verified, signed by {signer}")?
            }
        }
        writeln!(
            f,
            "  {} policies in {} files:",
            self.policies.len(),
            self.files.iter().filter(|f| f.ends_with(".cedar")).count()
        )?;
        for p in &self.policies {
            writeln!(f, "    {:<6} {:<48} {}:{}", p.effect, p.id, p.file, p.line)?;
        }
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        Ok(())
    }
}

pub(crate) fn report(dir: &Path, c: Compiled, signature: SignatureStatus) -> BundleReport {
    BundleReport {
        dir: dir.to_path_buf(),
        policies: c.summaries(),
        owner: c.info.owner,
        version: c.info.version,
        description: c.description,
        digest: c.info.digest,
        files: c.files,
        warnings: c.warnings,
        signature,
    }
}

/// Compiles in-memory files (the examples) as the bundle of `owner`.
pub(crate) fn compile_files(
    vocabulary: &Vocabulary,
    owner: &Owner,
    files: BTreeMap<String, Vec<u8>>,
) -> Result<Compiled, Vec<Diagnostic>> {
    compile(
        vocabulary,
        &owner.relative_dir_string(),
        Some(owner),
        &files,
    )
}

/// The bundle digest: SHA-256 over the domain string and, for every file in
/// byte order of its name, the name's length (u64 big-endian), the name, the
/// content's length (u64 big-endian) and the content.
pub(crate) fn digest(files: &BTreeMap<String, Vec<u8>>) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(DIGEST_DOMAIN);
    for (name, content) in files {
        ctx.update(&(name.len() as u64).to_be_bytes());
        ctx.update(name.as_bytes());
        ctx.update(&(content.len() as u64).to_be_bytes());
        ctx.update(content);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    owner: String,
    version: u64,
    description: Option<String>,
}

/// 1-based line of byte offset `pos` in `text`.
pub(crate) fn line_of(text: &str, pos: usize) -> u32 {
    let pos = pos.min(text.len());
    let n = text.as_bytes()[..pos]
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    u32::try_from(n + 1).unwrap_or(u32::MAX)
}

/// One policy's text inside a file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Statement<'a> {
    /// Byte offset of `src` in the file.
    pub start: usize,
    /// Byte offset of the statement's first token (its first annotation or
    /// its effect) in the file.
    pub first_token: usize,
    pub src: &'a str,
}

/// Splits Cedar source into statements: each ends at a `;` outside string
/// literals and `//` comments, which is the only place a `;` can end a
/// policy. Trailing text without a `;` is returned as a statement too, so
/// the parser reports it. Whitespace- and comment-only stretches are
/// dropped.
pub(crate) fn split_statements(text: &str) -> Vec<Statement<'_>> {
    #[derive(Clone, Copy)]
    enum State {
        Code,
        Str,
        Comment,
    }
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut state = State::Code;
    let mut start = 0usize;
    let mut first: Option<usize> = None;
    let mut i = 0usize;
    while i < b.len() {
        match state {
            State::Code => match b[i] {
                b'"' => {
                    first.get_or_insert(i);
                    state = State::Str;
                }
                b'/' if b.get(i + 1) == Some(&b'/') => {
                    state = State::Comment;
                    i += 1;
                }
                b';' => {
                    let first_token = *first.get_or_insert(i);
                    out.push(Statement {
                        start,
                        first_token,
                        src: &text[start..=i],
                    });
                    start = i + 1;
                    first = None;
                }
                c if c.is_ascii_whitespace() => {}
                _ => {
                    first.get_or_insert(i);
                }
            },
            State::Str => match b[i] {
                b'\\' => i += 1,
                b'"' => state = State::Code,
                _ => {}
            },
            State::Comment => {
                if b[i] == b'\n' || b[i] == b'\r' {
                    state = State::Code;
                }
            }
        }
        i += 1;
    }
    if let Some(first_token) = first {
        out.push(Statement {
            start,
            first_token,
            src: &text[start..],
        });
    }
    out
}

/// Where a compiled policy came from, while compiling.
struct Origin<'a> {
    file: String,
    text: &'a str,
    stmt_start: usize,
}

/// Compiles a bundle's files. `base` prefixes file names in diagnostics and
/// explanations; `expected`, when given, is the owner the bundle's place
/// names, which the manifest must agree with.
pub(crate) fn compile(
    vocabulary: &Vocabulary,
    base: &str,
    expected: Option<&Owner>,
    files: &BTreeMap<String, Vec<u8>>,
) -> Result<Compiled, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let manifest_file = format!("{base}/{MANIFEST_FILE}");

    // The manifest.
    let manifest = match files.get(MANIFEST_FILE) {
        None => {
            diags.push(Diagnostic::new(
                &manifest_file,
                None,
                "missing: every bundle has a bundle.toml naming its owner and version",
            ));
            None
        }
        Some(bytes) => match std::str::from_utf8(bytes) {
            Err(_) => {
                diags.push(Diagnostic::new(&manifest_file, None, "not UTF-8"));
                None
            }
            Ok(text) => match toml::from_str::<Manifest>(text) {
                Err(e) => {
                    let line = e.span().map(|s| line_of(text, s.start));
                    diags.push(Diagnostic::new(
                        &manifest_file,
                        line,
                        e.message().trim().to_string(),
                    ));
                    None
                }
                Ok(m) => Some((m, text)),
            },
        },
    };
    let mut owner = None;
    let mut version = 0;
    let mut description = None;
    if let Some((m, text)) = manifest {
        let owner_line = text
            .lines()
            .position(|l| l.trim_start().starts_with("owner"))
            .and_then(|n| u32::try_from(n + 1).ok());
        match m.owner.parse::<Owner>() {
            Err(_) => diags.push(Diagnostic::new(
                &manifest_file,
                owner_line,
                format!(
                    "owner {} is neither \"framework\" nor an agency id (\"CC/name\")",
                    crate::protocol::bounds::escaped(&m.owner)
                ),
            )),
            Ok(o) => {
                if let Some(exp) = expected.filter(|exp| **exp != o) {
                    diags.push(Diagnostic::new(
                        &manifest_file,
                        owner_line,
                        format!(
                            "owner \"{o}\" does not match the bundle's place in the policy set, which is {exp}'s ({})",
                            exp.relative_dir_string()
                        ),
                    ));
                }
                owner = Some(o);
            }
        }
        if m.version == 0 {
            diags.push(Diagnostic::new(
                &manifest_file,
                None,
                "version must be 1 or more",
            ));
        }
        version = m.version;
        description = m.description;
    }
    let owner_uid = match &owner {
        Some(Owner::Agency(a)) => Some(vocabulary.agency(&a.to_string())),
        _ => None,
    };

    // The policies.
    let mut set = PolicySet::new();
    let mut meta: HashMap<PolicyId, Meta> = HashMap::new();
    let mut origins: HashMap<PolicyId, Origin<'_>> = HashMap::new();
    let mut order = Vec::new();
    let mut seen_ids: HashMap<String, (String, u32)> = HashMap::new();
    let mut cedar_files = 0;
    let mut warnings = Vec::new();
    for (name, bytes) in files.iter().filter(|(n, _)| n.ends_with(".cedar")) {
        cedar_files += 1;
        let file = format!("{base}/{name}");
        let Ok(text) = std::str::from_utf8(bytes) else {
            diags.push(Diagnostic::new(file, None, "not UTF-8"));
            continue;
        };
        let statements = split_statements(text);
        if statements.is_empty() {
            warnings.push(Diagnostic::new(&file, None, "holds no policy"));
        }
        for (n, stmt) in statements.iter().enumerate() {
            let n = n + 1;
            let line = line_of(text, stmt.first_token);
            let pid = PolicyId::new(format!("{name}#{n}"));
            let policy = match Policy::parse(Some(pid.clone()), stmt.src) {
                Ok(p) => p,
                Err(errs) => {
                    for e in errs.iter() {
                        let at = e
                            .labels()
                            .and_then(|mut l| l.next())
                            .map(|l| line_of(text, stmt.start + l.offset()));
                        diags.push(Diagnostic::new(&file, at.or(Some(line)), e.to_string()));
                    }
                    continue;
                }
            };
            let mut ok = true;
            for (key, _) in policy.annotations() {
                if !ANNOTATIONS.contains(&key) {
                    ok = false;
                    diags.push(Diagnostic::new(
                        &file,
                        Some(line),
                        format!("unknown annotation @{key}: policies may carry @id(\"...\") and @reason(\"...\")"),
                    ));
                }
            }
            let id = match policy.annotation("id") {
                Some(id) if valid_policy_id(id) => id.to_string(),
                Some(id) => {
                    ok = false;
                    diags.push(Diagnostic::new(
                        &file,
                        Some(line),
                        format!(
                            "@id({}): a policy id is 1 to 80 letters, digits, '-', '_' or '.'",
                            crate::protocol::bounds::escaped(id)
                        ),
                    ));
                    id.to_string()
                }
                None => format!("{name}#{n}"),
            };
            if let Some((other_file, other_line)) = seen_ids.get(&id) {
                ok = false;
                diags.push(Diagnostic::new(
                    &file,
                    Some(line),
                    format!("policy id \"{id}\" is already used at {other_file}:{other_line}"),
                ));
            } else {
                seen_ids.insert(id.clone(), (file.clone(), line));
            }
            if let Some(owner_uid) = &owner_uid {
                let principal = policy.principal_constraint();
                let resource = policy.resource_constraint();
                let speaks_for_owner = matches!(&principal, PrincipalConstraint::Eq(u) if u == owner_uid)
                    || matches!(&resource, ResourceConstraint::Eq(u) if u == owner_uid);
                if !speaks_for_owner {
                    ok = false;
                    diags.push(Diagnostic::new(
                        &file,
                        Some(line),
                        format!(
                            "policy \"{id}\" speaks for other agencies: in an agency bundle every policy constrains `principal == {owner_uid}` (what the agency sends) or `resource == {owner_uid}` (what it accepts); this one has principal {}, resource {}",
                            describe_principal(&principal),
                            describe_resource(&resource)
                        ),
                    ));
                }
            }
            for problem in lint::check(&policy) {
                ok = false;
                diags.push(Diagnostic::new(
                    &file,
                    Some(line),
                    format!("policy \"{id}\": {problem}"),
                ));
            }
            if !ok {
                continue;
            }
            let effect = Effect::from(policy.effect());
            let reason = policy.annotation("reason").map(str::to_owned);
            if let Err(e) = set.add(policy) {
                diags.push(Diagnostic::new(&file, Some(line), e.to_string()));
                continue;
            }
            meta.insert(
                pid.clone(),
                Meta {
                    file: file.clone(),
                    id,
                    line,
                    effect,
                    reason,
                },
            );
            origins.insert(
                pid.clone(),
                Origin {
                    file: file.clone(),
                    text,
                    stmt_start: stmt.start,
                },
            );
            order.push(pid);
        }
    }
    if cedar_files == 0 {
        diags.push(Diagnostic::new(base, None, "bundle has no .cedar file"));
    }

    // The schema, in strict mode.
    let result = Validator::new(vocabulary.schema.clone()).validate(&set, ValidationMode::Strict);
    let locate = |pid: &PolicyId, offset: Option<usize>| -> (String, Option<u32>, String) {
        match (origins.get(pid), meta.get(pid)) {
            (Some(o), Some(m)) => (
                o.file.clone(),
                Some(offset.map_or(m.line, |off| line_of(o.text, o.stmt_start + off))),
                m.id.clone(),
            ),
            _ => (base.to_string(), None, pid.to_string()),
        }
    };
    for e in result.validation_errors() {
        let offset = e.labels().and_then(|mut l| l.next()).map(|l| l.offset());
        let (file, line, id) = locate(e.policy_id(), offset);
        let mut reason = rename_policy(&e.to_string(), e.policy_id(), &id);
        if let Some(help) = e.help() {
            reason.push_str(&format!(" ({help})"));
        }
        diags.push(Diagnostic::new(file, line, reason));
    }
    for w in result.validation_warnings() {
        let offset = w.labels().and_then(|mut l| l.next()).map(|l| l.offset());
        let (file, line, id) = locate(w.policy_id(), offset);
        warnings.push(Diagnostic::new(
            file,
            line,
            rename_policy(&w.to_string(), w.policy_id(), &id),
        ));
    }

    match owner {
        Some(owner) if diags.is_empty() => Ok(Compiled {
            info: BundleInfo {
                owner,
                version,
                digest: digest(files),
            },
            description,
            set,
            meta,
            order,
            files: files.keys().cloned().collect(),
            warnings,
        }),
        _ => Err(diags),
    }
}

/// Replaces Cedar's internal policy id in a message with the policy's own.
pub(crate) fn rename_policy(message: &str, internal: &PolicyId, id: &str) -> String {
    message
        .replace(
            &format!("for policy `{internal}`"),
            &format!("in policy \"{id}\""),
        )
        .replace(&format!("policy `{internal}`"), &format!("policy \"{id}\""))
}

fn valid_policy_id(id: &str) -> bool {
    (1..=80).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn describe_principal(c: &PrincipalConstraint) -> String {
    match c {
        PrincipalConstraint::Any => "unconstrained".into(),
        PrincipalConstraint::In(u) => format!("in {u}"),
        PrincipalConstraint::Eq(u) => format!("== {u}"),
        PrincipalConstraint::Is(t) => format!("is {t}"),
        PrincipalConstraint::IsIn(t, u) => format!("is {t} in {u}"),
    }
}

fn describe_resource(c: &ResourceConstraint) -> String {
    match c {
        ResourceConstraint::Any => "unconstrained".into(),
        ResourceConstraint::In(u) => format!("in {u}"),
        ResourceConstraint::Eq(u) => format!("== {u}"),
        ResourceConstraint::Is(t) => format!("is {t}"),
        ResourceConstraint::IsIn(t, u) => format!("is {t} in {u}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_split_at_semicolons_outside_strings_and_comments() {
        let text = "// a; comment\n@id(\"a;b\")\npermit(principal, action, resource);\n\n  forbid(principal, action, resource) when { context.legal_basis_reference == \"x\\\";\" };\n// trailing; comment\n";
        let s = split_statements(text);
        assert_eq!(s.len(), 2);
        assert_eq!(line_of(text, s[0].first_token), 2);
        assert!(s[0].src.ends_with("resource);"));
        assert_eq!(line_of(text, s[1].first_token), 5);
        assert!(s[1].src.trim_start().starts_with("forbid"));
        assert!(s[1].src.ends_with("};"));
        assert!(split_statements("// only a comment\n\n").is_empty());
        let open = split_statements("permit(principal, action, resource)");
        assert_eq!(open.len(), 1);
    }

    #[test]
    fn digest_depends_on_names_and_content_and_nothing_else() {
        let mut files = BTreeMap::new();
        files.insert("a.cedar".to_string(), b"x".to_vec());
        files.insert("bundle.toml".to_string(), b"y".to_vec());
        let d = digest(&files);
        assert_eq!(d, digest(&files.clone()));
        let mut renamed = BTreeMap::new();
        renamed.insert("b.cedar".to_string(), b"x".to_vec());
        renamed.insert("bundle.toml".to_string(), b"y".to_vec());
        assert_ne!(d, digest(&renamed));
        // Moving a byte from one file's content to its neighbour's name
        // changes the digest: lengths are framed.
        let mut shifted = BTreeMap::new();
        shifted.insert("a.cedar".to_string(), b"xb".to_vec());
        shifted.insert("undle.toml".to_string(), b"y".to_vec());
        assert_ne!(d, digest(&shifted));
    }
}

//! `casebridge policy ...`: the data-protection officer's commands to
//! validate, sign and explain policy bundles.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use crate::daemon::clock::now_ms;
use crate::protocol::categories::CategorySet;
use crate::protocol::directory::Directory;
use crate::protocol::ids::AgencyId;
use crate::protocol::policy::{self, AgencyFacts, Onward, Owner, Policies, Transfer};
use crate::protocol::proto::v1;
use crate::storage::files::policy as files;
use crate::tools::cli::parse_label;

/// The directory and pinned key of the federation at `dir` (a `pki init`
/// layout).
fn federation(dir: &Path) -> anyhow::Result<(Directory, [u8; 32])> {
    let key = crate::storage::files::directory::load_public_key(&dir.join("ca/directory.pub"))?;
    let text = std::fs::read_to_string(dir.join("broker.toml")).ok();
    let fed_name = text
        .as_deref()
        .and_then(|t| toml::from_str::<toml::Table>(t).ok())
        .and_then(|t| {
            t.get("federation")
                .and_then(|v| v.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "casebridge.test".into());
    let directory =
        crate::storage::files::directory::load(&dir.join("directory.bin"), &key, &fed_name)?;
    Ok((directory, key))
}

/// `casebridge policy validate DIR [--federation FED]`.
pub fn validate(dir: &Path, federation_dir: Option<&Path>) -> anyhow::Result<bool> {
    let result = match federation_dir {
        Some(f) => {
            let (directory, key) = federation(f)?;
            files::verify_bundle_dir(dir, &directory, &key, now_ms())
        }
        None => files::validate_bundle_dir(dir),
    };
    match result {
        Ok(report) => {
            print!("{report}");
            println!("valid");
            Ok(true)
        }
        Err(diags) => {
            for d in &diags {
                eprintln!("{d}");
            }
            eprintln!("invalid: {} problem(s)", diags.len());
            Ok(false)
        }
    }
}

/// `casebridge policy sign DIR (--federation FED | --key KEY [--cert CERT])`.
pub fn sign(
    dir: &Path,
    federation_dir: Option<&Path>,
    key: Option<&Path>,
    cert: Option<&Path>,
) -> anyhow::Result<()> {
    let signer = match (federation_dir, key, cert) {
        (Some(fed), None, None) => {
            let manifest =
                std::fs::read_to_string(dir.join(policy::MANIFEST_FILE)).with_context(|| {
                    format!("reading {}", dir.join(policy::MANIFEST_FILE).display())
                })?;
            let owner: Owner = toml::from_str::<toml::Table>(&manifest)?
                .get("owner")
                .and_then(|v| v.as_str())
                .context("bundle.toml has no owner")?
                .parse()?;
            files::signer_from_federation(fed, &owner)?
        }
        (None, Some(key), None) => files::framework_signer(key)?,
        (None, Some(key), Some(cert)) => files::agency_signer(key, cert)?,
        _ => bail!("give either --federation, or --key (and --cert for an agency bundle)"),
    };
    let report = files::sign_bundle(dir, &signer)?;
    print!("{report}");
    println!("signed");
    Ok(())
}

/// What `policy explain` is asked about.
#[derive(Debug, Clone, clap::Args)]
pub struct ExplainArgs {
    /// A federation's policy set; its federation directory is the parent.
    /// Default: the example bundles, unsigned.
    #[arg(long)]
    pub policies: Option<PathBuf>,
    /// The sending agency, CC/name.
    #[arg(long)]
    pub from: String,
    /// The recipients, CC/name[,CC/name...].
    #[arg(long, value_delimiter = ',', required = true)]
    pub to: Vec<String>,
    /// Record kind, e.g. missing-person-trace (snake_case is accepted too).
    #[arg(long)]
    pub kind: String,
    /// Data categories, e.g. identity,biometric (none for no personal data).
    #[arg(long, value_delimiter = ',', default_value = "none")]
    pub categories: Vec<String>,
    /// Purpose, e.g. missing-persons, prosecution, immediate-threat.
    #[arg(long)]
    pub purpose: String,
    /// Legal basis, e.g. humanitarian-agreement, european-mla-convention.
    #[arg(long, default_value = "regional-police-convention")]
    pub legal_basis: String,
    /// The named agreement or ground.
    #[arg(long, default_value = "")]
    pub legal_basis_ref: String,
    /// Third-country transfer ground: none, adequacy-decision,
    /// appropriate-safeguards or specific-situation-derogation.
    #[arg(long, default_value = "none")]
    pub transfer_ground: String,
    /// Handling code: H0, H1, H2 or H3.
    #[arg(long, default_value = "H0")]
    pub handling: String,
    /// The provider's restriction text, required with H3.
    #[arg(long, default_value = "")]
    pub restriction: String,
    /// 4x4 evaluation, e.g. B2.
    #[arg(long)]
    pub evaluation: Option<String>,
    /// unclassified, restricted or confidential.
    #[arg(long, default_value = "restricted")]
    pub classification: String,
    /// routine, urgent or immediate.
    #[arg(long, default_value = "routine")]
    pub priority: String,
    /// Days the record is kept.
    #[arg(long, default_value_t = 30)]
    pub retention_days: u32,
    /// For an onward transfer: the agency that originated the record.
    #[arg(long)]
    pub onward_from: Option<String>,
    /// For an onward transfer: the original's handling code.
    #[arg(long, default_value = "H0")]
    pub original_handling: String,
    /// For an onward transfer: whether the originator has given permission.
    #[arg(long)]
    pub permission_granted: bool,
}

fn facts_for(id: &AgencyId, directory: Option<&Directory>) -> anyhow::Result<AgencyFacts> {
    if let Some(d) = directory {
        return AgencyFacts::from_directory(d, id)
            .with_context(|| format!("{id} is not in the federation's directory"));
    }
    policy::default_agencies()
        .into_iter()
        .find(|a| a.id == *id)
        .with_context(|| format!("{id} is not an agency of the example federation"))
}

/// `casebridge policy explain`: prints the decision and the policies that
/// determined it. Returns whether the transfer is permitted.
pub fn explain(a: &ExplainArgs) -> anyhow::Result<bool> {
    let (policies, directory): (Policies, Option<Directory>) = match &a.policies {
        Some(dir) => {
            let fed = dir
                .parent()
                .context("--policies has no parent (the federation directory)")?;
            let (directory, key) = federation(fed)?;
            let p = files::load_policies(dir, &directory, &key, now_ms())?;
            (p, Some(directory))
        }
        None => (Policies::examples(&policy::default_agencies())?, None),
    };
    let from: AgencyId = a.from.parse()?;
    let sender = facts_for(&from, directory.as_ref())?;
    let recipients =
        a.to.iter()
            .map(|t| {
                t.parse::<AgencyId>()
                    .map_err(anyhow::Error::from)
                    .and_then(|id| facts_for(&id, directory.as_ref()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
    let kind = crate::tools::cli::parse_kind(&a.kind)?;
    let mut cats = CategorySet::new();
    for c in &a.categories {
        if c == "none" || c.is_empty() {
            continue;
        }
        cats.insert(crate::tools::cli::parse_category(c)?);
    }
    let label_args = crate::tools::cli::LabelArgs {
        purpose: a.purpose.clone(),
        legal_basis: a.legal_basis.clone(),
        legal_basis_ref: a.legal_basis_ref.clone(),
        transfer_ground: a.transfer_ground.clone(),
        handling: a.handling.clone(),
        restriction: a.restriction.clone(),
        evaluation: a.evaluation.clone(),
        classification: a.classification.clone(),
        priority: a.priority.clone(),
        case_ref: String::new(),
        in_reply_to: String::new(),
        expires_in_days: Some(a.retention_days),
    };
    let now = crate::daemon::clock::now_ms();
    let labels = label_args.to_labels(now)?;
    let onward = match &a.onward_from {
        None => None,
        Some(o) => Some(Onward {
            originator: o.parse()?,
            original_handling: parse_label(
                "handling code",
                "HANDLING_CODE_",
                &a.original_handling,
                v1::HandlingCode::from_str_name,
                &["H0", "H1", "H2", "H3"],
            )?,
            permission_granted: a.permission_granted,
        }),
    };
    let transfer = Transfer {
        sender,
        recipients,
        kind,
        categories: cats,
        expires_at_ms: labels.expires_at_ms,
        labels,
        created_at_ms: now,
        onward,
    };
    let decision = policies.decide(&transfer);
    println!(
        "{}",
        if decision.allowed {
            "PERMITTED"
        } else {
            "REFUSED"
        }
    );
    println!("{}", decision.explanation());
    println!(
        "policy set {}{}",
        decision.bundle_hash,
        if policies.is_examples() {
            " (example bundles, unsigned)"
        } else {
            ""
        }
    );
    Ok(decision.allowed)
}

//! Policy bundles on disk, in a federation `pki init` wrote: loading, scope,
//! signatures and explanations. Here, in the tools layer, because the
//! federation fixture is `pki init`'s. The decision table for the example
//! bundles is in `tests/it/policy_table.rs`.

use std::path::{Path, PathBuf};

use crate::daemon::clock::now_ms;
use crate::protocol::ids::{AgencyId, Country};
use crate::protocol::policy::*;
use crate::storage::files::directory;
use crate::storage::files::policy::{
    agency_signer, framework_signer, install_examples, load_policies, read_bundle, sign_bundle,
    signer_from_federation, validate_bundle_dir, verify_bundle_dir,
};

fn id(s: &str) -> AgencyId {
    s.parse().unwrap()
}

fn cc(s: &str) -> Country {
    s.parse().unwrap()
}

fn write(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

const HR_POLICE_OWNER: &str = "owner = \"HR/police\"\nversion = 1\n";

/// A valid inbound policy for HR/police, at line 2 of its file.
const HR_INBOUND: &str = "// inbound\n@id(\"accept-police\")\npermit (\n  principal,\n  action == Casebridge::Action::\"transfer\",\n  resource == Casebridge::Agency::\"HR/police\"\n)\nwhen { principal.kind == Casebridge::AgencyKind::\"criminal_police\" };\n";

/// Validates a one-file HR/police bundle whose policy file is `cedar`.
fn validate_hr(cedar: &str) -> Result<BundleReport, Vec<Diagnostic>> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    write(
        &dir,
        &[("bundle.toml", HR_POLICE_OWNER), ("p.cedar", cedar)],
    );
    validate_bundle_dir(&dir)
}

fn only(diags: Vec<Diagnostic>) -> Diagnostic {
    assert_eq!(diags.len(), 1, "{diags:#?}");
    diags.into_iter().next().unwrap()
}

// -- scope ------------------------------------------------------------------

#[test]
fn a_valid_agency_bundle_validates() {
    let report = validate_hr(HR_INBOUND).unwrap();
    assert_eq!(report.owner, Owner::Agency(id("HR/police")));
    assert_eq!(report.signature, SignatureStatus::Unsigned);
    assert_eq!(report.policies.len(), 1);
    assert_eq!(report.policies[0].id, "accept-police");
    assert_eq!(report.policies[0].line, 2);
    assert!(report.to_string().contains("accept-police"));
}

#[test]
fn agency_bundles_may_only_speak_for_their_owner() {
    let cases = [
        // Another agency as principal.
        "\n\n@id(\"x\")\npermit (principal == Casebridge::Agency::\"RS/police\", action, resource);\n",
        // Unconstrained.
        "\n\n@id(\"x\")\npermit (principal, action, resource);\n",
        // `in`, even of itself.
        "\n\n@id(\"x\")\npermit (principal in Casebridge::Agency::\"HR/police\", action, resource);\n",
        // `is`.
        "\n\n@id(\"x\")\npermit (principal is Casebridge::Agency, action, resource);\n",
        // Another agency as resource.
        "\n\n@id(\"x\")\nforbid (principal, action, resource == Casebridge::Agency::\"BA/police\");\n",
    ];
    for cedar in cases {
        let d = only(validate_hr(cedar).unwrap_err());
        assert!(d.file.ends_with("/p.cedar"), "{d}");
        assert_eq!(d.line, Some(3), "{d}");
        assert!(d.reason.contains("speaks for other agencies"), "{d}");
    }
}

#[test]
fn the_framework_may_use_any_scope() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("framework");
    write(
        &dir,
        &[
            ("bundle.toml", "owner = \"framework\"\nversion = 1\n"),
            (
                "p.cedar",
                "permit (principal, action, resource);\nforbid (principal == Casebridge::Agency::\"RS/police\", action, resource);\n",
            ),
        ],
    );
    let report = validate_bundle_dir(&dir).unwrap();
    assert_eq!(report.owner, Owner::Framework);
    // Without @id, the n-th policy of a file is called <file>#<n>.
    assert_eq!(report.policies[1].id, "p.cedar#2");
    assert_eq!(report.policies[1].line, 2);
}

// -- syntax and schema ---------------------------------------------------------

#[test]
fn syntax_errors_name_file_and_line() {
    let d = only(
        validate_hr(&format!(
            "{HR_INBOUND}\n@id(\"broken\")\nforbid (principal, action, resource == Casebridge::Agency::\"HR/police\")\nwhen {{ context.retention_days > }};\n"
        ))
        .unwrap_err(),
    );
    assert!(d.file.ends_with("/p.cedar"));
    assert_eq!(d.line, Some(12), "{d}");
    assert!(d.reason.contains("unexpected token"), "{d}");
}

#[test]
fn schema_violations_name_file_line_and_reason() {
    // A misspelt vocabulary value, an unknown attribute and a string where
    // the schema has an enumerated type, each on its own line.
    let cedar = "@id(\"typos\")\nforbid (principal, action, resource == Casebridge::Agency::\"HR/police\")\nwhen {\n  context.purpose == Casebridge::Purpose::\"statistcs\" ||\n  context.retention > 30 ||\n  context.handling == \"H2\"\n};\n";
    let diags = validate_hr(cedar).unwrap_err();
    let at = |line: u32| {
        diags
            .iter()
            .find(|d| d.line == Some(line))
            .unwrap_or_else(|| panic!("nothing at line {line}: {diags:#?}"))
    };
    assert!(at(4).reason.contains("statistcs"), "{diags:#?}");
    assert!(at(4).reason.contains("in policy \"typos\""), "{diags:#?}");
    assert!(
        at(4).reason.contains("\"statistics\""),
        "help lists valid values"
    );
    assert!(at(5).reason.contains("retention"), "{diags:#?}");
    assert!(diags.iter().all(|d| d.file.ends_with("/p.cedar")));
    assert!(diags.len() >= 3, "{diags:#?}");
}

#[test]
fn string_literal_lint_refuses_misshapen_countries() {
    let d = only(
        validate_hr(
            "@id(\"c\")\npermit (principal, action, resource == Casebridge::Agency::\"HR/police\")\nwhen { principal.country == \"Serbia\" };\n",
        )
        .unwrap_err(),
    );
    assert_eq!(d.line, Some(1));
    assert!(d.reason.contains("not a country code"), "{d}");
}

#[test]
fn annotations_ids_and_files_are_checked() {
    let dup = format!("{HR_INBOUND}{HR_INBOUND}");
    let d = only(validate_hr(&dup).unwrap_err());
    assert!(d.reason.contains("already used"), "{d}");
    assert_eq!(d.line, Some(10));

    let d = only(validate_hr(&HR_INBOUND.replace("@id", "@ident")).unwrap_err());
    assert!(d.reason.contains("unknown annotation @ident"), "{d}");

    let d = only(validate_hr(&HR_INBOUND.replace("accept-police", "accept police")).unwrap_err());
    assert!(d.reason.contains("policy id"), "{d}");

    let d = only(
        validate_hr(
            "permit (principal == ?principal, action, resource == Casebridge::Agency::\"HR/police\");",
        )
        .unwrap_err(),
    );
    assert!(d.reason.contains("static policy"), "{d}");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    write(
        &dir,
        &[
            ("bundle.toml", HR_POLICE_OWNER),
            ("p.cedar", HR_INBOUND),
            ("p.cedar~", HR_INBOUND),
        ],
    );
    let d = only(validate_bundle_dir(&dir).unwrap_err());
    assert!(
        d.file.ends_with("p.cedar~") && d.reason.contains("unexpected file"),
        "{d}"
    );

    let dir = tmp.path().join("c");
    write(
        &dir,
        &[
            (
                "bundle.toml",
                "owner = \"HR/police\"\nversion = 1\ncolour = \"blue\"\n",
            ),
            ("p.cedar", HR_INBOUND),
        ],
    );
    let d = only(validate_bundle_dir(&dir).unwrap_err());
    assert!(d.file.ends_with("bundle.toml"), "{d}");
    assert_eq!(d.line, Some(3), "{d}");

    let dir = tmp.path().join("d");
    write(&dir, &[("bundle.toml", HR_POLICE_OWNER)]);
    let d = only(validate_bundle_dir(&dir).unwrap_err());
    assert!(d.reason.contains("no .cedar file"), "{d}");
}

// -- signed sets in a federation ---------------------------------------------

struct Fed {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    policies: PathBuf,
    directory: crate::protocol::directory::Directory,
    key: [u8; 32],
}

impl Fed {
    fn new() -> Fed {
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = crate::tools::pki::InitOptions::new(tmp.path().join("fed"));
        opts.countries = vec![cc("HR"), cc("BA"), cc("RS")];
        crate::tools::pki::init(&opts).unwrap();
        let dir = opts.dir.clone();
        let key = directory::load_public_key(&dir.join("ca/directory.pub")).unwrap();
        let directory =
            directory::load(&dir.join("directory.bin"), &key, &opts.federation).unwrap();
        let policies = tmp.path().join("policies");
        install_examples(
            &policies,
            &dir,
            &AgencyFacts::all_from_directory(&directory),
        )
        .unwrap();
        Fed {
            _tmp: tmp,
            dir,
            policies,
            directory,
            key,
        }
    }

    fn load(&self) -> Result<Policies, PolicyError> {
        load_policies(&self.policies, &self.directory, &self.key, now_ms())
    }

    fn refused(&self) -> Vec<Diagnostic> {
        match self.load() {
            Err(PolicyError::Refused(d)) => d,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn bundle(&self, owner: &str) -> PathBuf {
        self.policies
            .join(owner.parse::<Owner>().unwrap().relative_dir())
    }

    fn sign(&self, owner: &str) {
        let owner: Owner = owner.parse().unwrap();
        let signer = signer_from_federation(&self.dir, &owner).unwrap();
        sign_bundle(&self.policies.join(owner.relative_dir()), &signer).unwrap();
    }
}

#[test]
fn a_signed_example_set_loads_and_its_hash_follows_its_bundles() {
    let fed = Fed::new();
    let policies = fed.load().unwrap();
    assert!(!policies.is_examples());
    assert_eq!(policies.hash().len(), 64);
    let agencies = AgencyFacts::all_from_directory(&fed.directory);
    assert_eq!(policies.bundles().len(), 1 + agencies.len());
    // The same bundles as the in-memory examples, only signed.
    let examples = Policies::examples(&agencies).unwrap();
    assert_eq!(policies.bundles(), examples.bundles());
    assert_eq!(
        examples.hash(),
        format!("{EXAMPLES_HASH_PREFIX}{}", policies.hash())
    );
    // Every bundle verifies on its own too.
    for b in policies.bundles() {
        let report = verify_bundle_dir(
            &fed.policies.join(b.owner.relative_dir()),
            &fed.directory,
            &fed.key,
            now_ms(),
        )
        .unwrap();
        assert!(matches!(report.signature, SignatureStatus::Verified { .. }));
        assert_eq!(report.digest, b.digest);
    }

    // A new version of HR/police's bundle, signed by HR/police.
    let dir = fed.bundle("HR/police");
    write(
        &dir,
        &[
            ("bundle.toml", "owner = \"HR/police\"\nversion = 2\n"),
            (
                "extra.cedar",
                "@id(\"no-minors\")\nforbid (principal, action, resource == Casebridge::Agency::\"HR/police\") when { context.categories.contains(Casebridge::Category::\"minor\") };\n",
            ),
        ],
    );
    fed.sign("HR/police");
    let next = fed.load().unwrap();
    assert_ne!(next.hash(), policies.hash());
    policies.check_successor(&next).unwrap();
    assert!(matches!(
        next.check_successor(&policies),
        Err(PolicyError::Rollback(_))
    ));
    let hr = next
        .bundles()
        .into_iter()
        .find(|b| b.owner == Owner::Agency(id("HR/police")))
        .unwrap();
    assert_eq!(hr.version, 2);
}

#[test]
fn unsigned_and_tampered_bundles_are_refused() {
    let fed = Fed::new();
    let dir = fed.bundle("BA/police");
    std::fs::remove_file(dir.join(SIGNATURE_FILE)).unwrap();
    let d = only(fed.refused());
    assert_eq!(d.file, "agencies/BA/police/SIGNATURE");
    assert!(d.reason.contains("not signed"), "{d}");
    fed.sign("BA/police");
    fed.load().unwrap();

    // One byte changed after signing.
    let path = dir.join("inbound.cedar");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"immediate\"", "\"urgent\"")).unwrap();
    let d = only(fed.refused());
    assert!(d.reason.contains("does not verify"), "{d}");

    // A file added after signing.
    std::fs::write(&path, text).unwrap();
    fed.load().unwrap();
    std::fs::write(
        dir.join("more.cedar"),
        HR_INBOUND.replace("HR/police", "BA/police"),
    )
    .unwrap();
    let d = only(fed.refused());
    assert!(d.reason.contains("does not verify"), "{d}");

    // The framework too.
    std::fs::remove_file(dir.join("more.cedar")).unwrap();
    let fw = fed.bundle("framework").join("retention.cedar");
    let text = std::fs::read_to_string(&fw).unwrap();
    std::fs::write(&fw, text.replace("365", "3650")).unwrap();
    let d = only(fed.refused());
    assert_eq!(d.file, "framework/SIGNATURE");
}

#[test]
fn a_framework_signed_with_another_key_is_refused() {
    let fed = Fed::new();
    let tmp = tempfile::tempdir().unwrap();
    let (_, pkcs8) = crate::protocol::keys::SigningKey::generate().unwrap();
    let key_path = tmp.path().join("other.key");
    crate::storage::files::keys::write_secret(
        &key_path,
        crate::protocol::keys::to_pem(&pkcs8, "PRIVATE KEY").as_bytes(),
    )
    .unwrap();
    sign_bundle(
        &fed.bundle("framework"),
        &framework_signer(&key_path).unwrap(),
    )
    .unwrap();
    let d = only(fed.refused());
    assert_eq!(d.file, "framework/SIGNATURE");
    assert!(d.reason.contains("directory key"), "{d}");
    // An agency key cannot sign the framework at all.
    let agency = signer_from_federation(&fed.dir, &Owner::Agency(id("HR/police"))).unwrap();
    assert!(matches!(
        sign_bundle(&fed.bundle("framework"), &agency),
        Err(PolicyError::Signer(_))
    ));
}

#[test]
fn an_agency_bundle_signed_by_another_agency_is_refused() {
    let fed = Fed::new();
    let dir = fed.bundle("HR/police");
    let other = signer_from_federation(&fed.dir, &Owner::Agency(id("HR/prosecutor"))).unwrap();
    // sign_bundle refuses outright...
    assert!(matches!(
        sign_bundle(&dir, &other),
        Err(PolicyError::Signer(_))
    ));
    // ...and a signature made anyway is refused at load.
    let raw = read_bundle(&dir, "x").unwrap();
    let sig = other.sign(&bundle_digest(&raw.files)).unwrap();
    std::fs::write(dir.join(SIGNATURE_FILE), hex::encode(sig)).unwrap();
    std::fs::copy(
        fed.dir.join("agencies/HR/prosecutor/agency.crt"),
        dir.join(SIGNER_FILE),
    )
    .unwrap();
    let d = only(fed.refused());
    assert_eq!(d.file, "agencies/HR/police/signer.crt");
    assert!(
        d.reason
            .contains("for agency HR/prosecutor, not for agency HR/police"),
        "{d}"
    );

    // HR/police's certificate with HR/prosecutor's signature.
    std::fs::copy(
        fed.dir.join("agencies/HR/police/agency.crt"),
        dir.join(SIGNER_FILE),
    )
    .unwrap();
    let d = only(fed.refused());
    assert!(d.reason.contains("does not verify"), "{d}");
}

/// Issues a certificate for `agency` from country `issuer`'s national CA and
/// writes it (with that CA) and its key to `dir`.
fn foreign_certificate(
    fed: &Fed,
    agency: &AgencyId,
    issuer: &str,
    dir: &Path,
) -> (PathBuf, PathBuf) {
    use rcgen::{
        CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    };
    let ca_dir = fed.dir.join("ca").join(issuer);
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.crt")).unwrap();
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca.key")).unwrap()).unwrap();
    let ca = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.subject_alt_names.push(SanType::URI(
        crate::protocol::ids::Role::Agency(agency.clone())
            .spiffe_uri("casebridge.test")
            .try_into()
            .unwrap(),
    ));
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &ca).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let crt = dir.join("agency.crt");
    let key_path = dir.join("agency.key");
    std::fs::write(&crt, format!("{}{ca_pem}", cert.pem())).unwrap();
    crate::storage::files::keys::write_secret(&key_path, key.serialize_pem().as_bytes()).unwrap();
    (key_path, crt)
}

#[test]
fn an_agency_bundle_vouched_for_by_another_countrys_ca_is_refused() {
    let fed = Fed::new();
    let tmp = tempfile::tempdir().unwrap();
    let hr_police = id("HR/police");
    // BA's national CA issues a certificate naming HR/police.
    let (key, crt) = foreign_certificate(&fed, &hr_police, "BA", tmp.path());
    let signer = agency_signer(&key, &crt).unwrap();
    assert_eq!(signer.owner(), Owner::Agency(hr_police.clone()));
    sign_bundle(&fed.bundle("HR/police"), &signer).unwrap();
    let d = only(fed.refused());
    assert_eq!(d.file, "agencies/HR/police/signer.crt");
    assert!(d.reason.contains("not HR's national CA"), "{d}");

    // The same leaf presented with HR's CA: it does not chain.
    let leaf = std::fs::read_to_string(&crt).unwrap();
    let leaf = &leaf
        [..leaf.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----\n".len()];
    let hr_ca = std::fs::read_to_string(fed.dir.join("ca/HR/ca.crt")).unwrap();
    std::fs::write(
        fed.bundle("HR/police").join(SIGNER_FILE),
        format!("{leaf}{hr_ca}"),
    )
    .unwrap();
    let d = only(fed.refused());
    assert!(d.reason.contains("not valid under HR's national CA"), "{d}");
}

#[test]
fn content_problems_in_a_set_are_refused_at_load_with_file_and_line() {
    let fed = Fed::new();
    // An overreaching policy, signed by its (legitimate) owner.
    let dir = fed.bundle("RS/police");
    write(
        &dir,
        &[(
            "overreach.cedar",
            "// RS police trying to speak for ME police\n@id(\"me-accepts-all\")\npermit (principal, action, resource == Casebridge::Agency::\"ME/police\");\n",
        )],
    );
    // sign_bundle will not sign it...
    let signer = signer_from_federation(&fed.dir, &Owner::Agency(id("RS/police"))).unwrap();
    assert!(matches!(
        sign_bundle(&dir, &signer),
        Err(PolicyError::Refused(_))
    ));
    // ...and load refuses it whatever its signature says.
    let diags = fed.refused();
    let d = diags
        .iter()
        .find(|d| d.reason.contains("speaks for other agencies"))
        .unwrap_or_else(|| panic!("{diags:#?}"));
    assert_eq!(d.file, "agencies/RS/police/overreach.cedar");
    assert_eq!(d.line, Some(2));
    let err = fed.load().unwrap_err().to_string();
    assert!(err.contains("agencies/RS/police/overreach.cedar:2: policy \"me-accepts-all\" speaks for other agencies"), "{err}");
}

#[test]
fn bundles_out_of_place_or_for_unknown_agencies_are_refused() {
    let fed = Fed::new();
    // HR/police's signed bundle copied to RS/police's place.
    let rs = fed.bundle("RS/police");
    std::fs::remove_dir_all(&rs).unwrap();
    std::fs::create_dir_all(&rs).unwrap();
    for e in std::fs::read_dir(fed.bundle("HR/police")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), rs.join(e.file_name())).unwrap();
    }
    let diags = fed.refused();
    assert!(
        diags
            .iter()
            .any(|d| d.file == "agencies/RS/police/bundle.toml"
                && d.reason.contains("does not match")),
        "{diags:#?}"
    );
    std::fs::remove_dir_all(&rs).unwrap();
    // Without a bundle RS/police is simply absent.
    let policies = fed.load().unwrap();
    assert!(!policies.has_bundle(&id("RS/police")));

    // A bundle for an agency the directory does not list.
    let ghost = fed.policies.join("agencies/HR/customs");
    write(
        &ghost,
        &[
            ("bundle.toml", "owner = \"HR/customs\"\nversion = 1\n"),
            ("p.cedar", &HR_INBOUND.replace("HR/police", "HR/customs")),
        ],
    );
    let d = only(fed.refused());
    assert!(d.reason.contains("not listed in the directory"), "{d}");
    std::fs::remove_dir_all(&ghost).unwrap();

    // A stray directory.
    std::fs::create_dir_all(fed.policies.join("drafts")).unwrap();
    let d = only(fed.refused());
    assert_eq!(d.file, "drafts");
}

#[test]
fn install_examples_refuses_to_overwrite() {
    let fed = Fed::new();
    let agencies = AgencyFacts::all_from_directory(&fed.directory);
    assert!(matches!(
        install_examples(&fed.policies, &fed.dir, &agencies),
        Err(PolicyError::Exists(_))
    ));
}

/// `policy explain --transfer-ground`: an MLA request from an EU member's
/// prosecutor to a non-member's is permitted on appropriate safeguards,
/// refused without a ground, and a misspelt ground lists the valid ones.
#[test]
fn policy_explain_takes_the_transfer_ground() {
    let args = |ground: &str| crate::tools::policy_cli::ExplainArgs {
        policies: None,
        from: "HR/prosecutor".into(),
        to: vec!["BA/prosecutor".into()],
        kind: "mla_request".into(),
        categories: vec!["identity".into(), "financial".into()],
        purpose: "prosecution".into(),
        legal_basis: "european-mla-convention".into(),
        legal_basis_ref: "European Convention on Mutual Assistance in Criminal Matters".into(),
        transfer_ground: ground.into(),
        handling: "H1".into(),
        restriction: String::new(),
        evaluation: None,
        classification: "restricted".into(),
        priority: "routine".into(),
        retention_days: 30,
        onward_from: None,
        original_handling: "H0".into(),
        permission_granted: false,
    };
    let explain = crate::tools::policy_cli::explain;
    assert!(explain(&args("appropriate-safeguards")).unwrap());
    assert!(explain(&args("Adequacy_Decision")).unwrap());
    assert!(!explain(&args("none")).unwrap());
    let e = explain(&args("trust-me")).unwrap_err().to_string();
    assert!(
        e.contains(
            "none, adequacy-decision, appropriate-safeguards, specific-situation-derogation"
        ),
        "{e}"
    );
}

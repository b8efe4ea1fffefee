use super::*;
use crate::protocol::ids::IdError;

type NodeEdit = fn(&mut v1::NodeEntry);
type LabelsEdit = fn(&mut v1::Labels);

const FED: &str = "casebridge.test";
const NOW: i64 = 1_750_000_000_000;
const CREATED: i64 = NOW - 60_000;
const EXPIRES: i64 = NOW + 86_400_000;
const CASE_REF: &str = "HR-2025-0001";
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/records");

fn cc(s: &str) -> Country {
    s.parse().unwrap()
}

fn ag(s: &str) -> AgencyId {
    s.parse().unwrap()
}

fn record(file: &str) -> v1::CaseRecord {
    let path = format!("{EXAMPLES}/{file}");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn labels() -> v1::Labels {
    v1::Labels {
        purpose: v1::Purpose::InvestigationOther as i32,
        legal_basis: v1::LegalBasis::RegionalPoliceConvention as i32,
        legal_basis_reference: "Police Cooperation Convention for Southeast Europe".into(),
        handling: v1::HandlingCode::H1 as i32,
        evaluation: Some(v1::Evaluation {
            source: v1::SourceReliability::B as i32,
            accuracy: v1::InformationAccuracy::InformationAccuracy2 as i32,
        }),
        classification: v1::Classification::Restricted as i32,
        priority: v1::Priority::Routine as i32,
        case_reference: CASE_REF.into(),
        ..Default::default()
    }
}

fn cats(cs: &[v1::DataCategory]) -> CategorySet {
    cs.iter().copied().collect()
}

/// One node of the test federation with its secret keys.
struct Node {
    country: Country,
    sign: SigningKey,
    hpke: HpkePrivateKey,
}

/// A federation of HR, RS and BA with a signed, verified directory.
struct Fx {
    dir_key: SigningKey,
    nodes: Vec<Node>,
    raw: v1::Directory,
    dir: Directory,
}

fn sign_dir(raw: &v1::Directory, key: &SigningKey) -> Directory {
    Directory::verify(&Directory::sign(raw, key), &key.public_key(), FED)
        .expect("directory verifies")
}

impl Fx {
    fn new() -> Fx {
        let (dir_key, _) = SigningKey::generate().unwrap();
        let mut nodes = Vec::new();
        let mut entries = Vec::new();
        for (c, regime) in [
            ("HR", v1::LegalRegime::EuMember),
            ("RS", v1::LegalRegime::NonMember),
            ("BA", v1::LegalRegime::NonMember),
        ] {
            let (sign, _) = SigningKey::generate().unwrap();
            let (hpke, hpke_pub) = keys::generate_hpke();
            entries.push(v1::NodeEntry {
                country: c.into(),
                signing_key: sign.public_key().to_vec(),
                hpke_key: keys::hpke_public_bytes(&hpke_pub).to_vec(),
                not_before_ms: 0,
                not_after_ms: i64::MAX,
                revoked: false,
                regime: regime as i32,
                national_ca_sha256: vec![],
            });
            nodes.push(Node {
                country: cc(c),
                sign,
                hpke,
            });
        }
        let agency = |id: &str, kind: v1::AgencyKind, revoked: bool| v1::AgencyEntry {
            id: id.into(),
            kind: kind as i32,
            display_name: format!("{id} (test)"),
            revoked,
        };
        let raw = v1::Directory {
            version: 1,
            federation: FED.into(),
            issued_at_ms: CREATED - 1,
            nodes: entries,
            agencies: vec![
                agency("HR/police", v1::AgencyKind::CriminalPolice, false),
                agency("RS/police", v1::AgencyKind::CriminalPolice, false),
                agency("BA/missing-persons", v1::AgencyKind::MissingPersons, false),
                agency("BA/police", v1::AgencyKind::CriminalPolice, false),
                agency("RS/revoked", v1::AgencyKind::CriminalPolice, true),
            ],
            auditors: vec![],
            log: None,
        };
        let dir = sign_dir(&raw, &dir_key);
        Fx {
            dir_key,
            nodes,
            raw,
            dir,
        }
    }

    fn node(&self, c: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.country.as_str() == c)
            .expect("node in fixture")
    }

    /// The fixture's directory after `f`, signed by the same directory key.
    fn dir_with(&self, f: impl FnOnce(&mut v1::Directory)) -> Directory {
        let mut raw = self.raw.clone();
        f(&mut raw);
        sign_dir(&raw, &self.dir_key)
    }

    /// Seals as the sender's node after letting `f` adjust the input.
    fn seal_with(
        &self,
        sender: &str,
        recipients: &[&str],
        record: &v1::CaseRecord,
        f: impl FnOnce(&mut SealInput<'_>),
    ) -> Result<Sealed, EnvelopeError> {
        let sender = ag(sender);
        let recipients: Vec<AgencyId> = recipients.iter().map(|r| ag(r)).collect();
        let mut input = SealInput {
            sender: &sender,
            recipients: &recipients,
            record,
            labels: labels(),
            created_at_ms: CREATED,
            expires_at_ms: EXPIRES,
            onward_of: None,
            permission: None,
        };
        f(&mut input);
        seal(
            &input,
            &self.node(sender.country().as_str()).sign,
            &self.dir,
        )
    }

    fn seal(&self, sender: &str, recipients: &[&str], record: &v1::CaseRecord) -> Sealed {
        self.seal_with(sender, recipients, record, |_| {})
            .expect("seals")
    }

    fn verify(&self, env: &v1::Envelope) -> VerifiedHeader {
        verify(env, &self.dir, NOW).expect("verifies")
    }

    fn verify_err(&self, env: &v1::Envelope) -> EnvelopeError {
        verify(env, &self.dir, NOW).expect_err("verify must fail")
    }

    fn open(
        &self,
        env: &v1::Envelope,
        vh: &VerifiedHeader,
        me: &str,
    ) -> Result<Opened, EnvelopeError> {
        open(env, vh, cc(me), &self.node(me).hpke)
    }
}

/// Decodes the header, lets `f` change it, re-encodes it and signs it
/// with `key` exactly as `seal` does.
fn resign(env: &mut v1::Envelope, key: &SigningKey, f: impl FnOnce(&mut v1::EnvelopeHeader)) {
    let mut h = v1::EnvelopeHeader::decode(env.header.as_slice()).expect("header decodes");
    f(&mut h);
    env.header = h.encode_to_vec();
    env.signature = key.sign(&header_signing_input(&env.header));
}

/// HPKE-wraps `data_key` to `node`'s directory key for envelope `id`.
fn wrap_for(data_key: &[u8], id: &EnvelopeId, node: Country, dir: &Directory) -> v1::WrappedKey {
    let (enc, sealed_key) = hpke::single_shot_seal::<Aead, Kdf, HpkeKem, _>(
        &hpke::OpModeS::Base,
        &dir.node(node).expect("node").hpke_key,
        &wrap_info(id, node),
        data_key,
        &[],
        &mut rand_core::UnwrapErr(rand_core::OsRng),
    )
    .expect("hpke seal");
    v1::WrappedKey {
        node: node.to_string(),
        encapsulated_key: enc.to_bytes().to_vec(),
        sealed_key,
    }
}

/// Replaces the payload with `plaintext` under a fresh data key (AAD: the
/// id `aad_id`, or the envelope's own id), rewraps the key for every node
/// in the header, rebinds the ciphertext hash and re-signs as `signer`.
fn reseal_payload(
    fx: &Fx,
    env: &mut v1::Envelope,
    plaintext: &[u8],
    aad_id: Option<EnvelopeId>,
    signer: &str,
) {
    let h = v1::EnvelopeHeader::decode(env.header.as_slice()).unwrap();
    let id = EnvelopeId::from_bytes(&h.envelope_id).unwrap();
    let rng = SystemRandom::new();
    let mut data_key = [0u8; 32];
    rng.fill(&mut data_key).unwrap();
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).unwrap();
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &data_key).unwrap());
    let mut buf = plaintext.to_vec();
    let aad = aad_id.unwrap_or(id);
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad.as_bytes()),
        &mut buf,
    )
    .unwrap();
    env.ciphertext = nonce.to_vec();
    env.ciphertext.extend_from_slice(&buf);
    let hash = sha256(&env.ciphertext).to_vec();
    let wrapped: Vec<_> = h
        .wrapped_keys
        .iter()
        .map(|w| wrap_for(&data_key, &id, w.node.parse().unwrap(), &fx.dir))
        .collect();
    resign(env, &fx.node(signer).sign, |h| {
        h.ciphertext_sha256 = hash;
        h.wrapped_keys = wrapped;
        h.data_key_sha256 = key_commitment(&id, &data_key).to_vec();
    });
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

// ---------------------------------------------------------------------
// Round trips

#[test]
fn round_trip_single_recipient() {
    let fx = Fx::new();
    let rec = record("missing_person_trace.json");
    let sealed = fx.seal("HR/police", &["BA/missing-persons"], &rec);
    let derived = categories::derive(&rec);
    assert_eq!(sealed.categories, derived);
    assert!(derived.contains(v1::DataCategory::Genetic));

    let vh = fx.verify(&sealed.envelope);
    assert_eq!(vh.id, sealed.id);
    assert_eq!(vh.sender_node, cc("HR"));
    assert_eq!(vh.sender_agency, ag("HR/police"));
    assert_eq!(vh.recipients, vec![ag("BA/missing-persons")]);
    assert_eq!(vh.kind, v1::RecordKind::MissingPersonTrace);
    assert_eq!(vh.categories, derived);
    assert_eq!(vh.labels, labels());
    assert_eq!((vh.created_at_ms, vh.expires_at_ms), (CREATED, EXPIRES));
    assert_eq!(vh.header_sha256, sha256(&sealed.envelope.header));
    assert_eq!(vh.ciphertext_sha256, sha256(&sealed.envelope.ciphertext));
    assert_eq!(vh.ciphertext_len, sealed.envelope.ciphertext.len() as u64);
    assert_eq!(
        vh.recipient_nodes().copied().collect::<Vec<_>>(),
        vec![cc("BA")]
    );
    assert_eq!(vh.wrapped_keys[&cc("BA")].node, "BA");

    let opened = fx.open(&sealed.envelope, &vh, "BA").expect("BA opens");
    assert_eq!(opened.record, rec);
    assert_eq!(opened.derived, derived);
    // Neither the sender's node nor a bystander holds a wrapped key.
    assert_eq!(
        fx.open(&sealed.envelope, &vh, "HR").err(),
        Some(EnvelopeError::NotARecipient(cc("HR")))
    );
    assert_eq!(
        fx.open(&sealed.envelope, &vh, "RS").err(),
        Some(EnvelopeError::NotARecipient(cc("RS")))
    );
}

#[test]
fn round_trip_recipients_at_several_nodes() {
    let fx = Fx::new();
    let rec = record("fingerprints.json");
    let sealed = fx.seal(
        "HR/police",
        &["RS/police", "BA/police", "BA/missing-persons"],
        &rec,
    );
    let vh = fx.verify(&sealed.envelope);
    assert_eq!(
        vh.recipient_nodes().copied().collect::<Vec<_>>(),
        vec![cc("BA"), cc("RS")]
    );
    assert_eq!(vh.wrapped_keys.len(), 2);
    assert_eq!(
        vh.recipients,
        vec![ag("RS/police"), ag("BA/police"), ag("BA/missing-persons")]
    );
    assert_eq!(
        vh.recipients_at(cc("BA")),
        vec![ag("BA/police"), ag("BA/missing-persons")]
    );
    assert_eq!(vh.recipients_at(cc("RS")), vec![ag("RS/police")]);
    assert!(vh.recipients_at(cc("HR")).is_empty());
    assert_eq!(vh.kind, v1::RecordKind::InformationResponse);
    let expected = cats(&[
        v1::DataCategory::Identity,
        v1::DataCategory::CaseNarrative,
        v1::DataCategory::Biometric,
    ]);
    assert_eq!(vh.categories, expected);

    let at_ba = fx.open(&sealed.envelope, &vh, "BA").expect("BA opens");
    let at_rs = fx.open(&sealed.envelope, &vh, "RS").expect("RS opens");
    assert_eq!(at_ba.record, rec);
    assert_eq!(at_rs.record, rec);
    assert_eq!(at_ba.derived, expected);
    assert_eq!(at_rs.derived, expected);
    assert_eq!(
        fx.open(&sealed.envelope, &vh, "HR").err(),
        Some(EnvelopeError::NotARecipient(cc("HR")))
    );
}

#[test]
fn every_example_record_round_trips() {
    let fx = Fx::new();
    for file in [
        "fingerprints.json",
        "intelligence_report.json",
        "missing_person_trace.json",
        "mla_request.json",
        "mla_response.json",
        "statistics.json",
        "trace_result.json",
        "wanted_alert.json",
    ] {
        let rec = record(file);
        let sealed = fx.seal("RS/police", &["HR/police"], &rec);
        let vh = fx.verify(&sealed.envelope);
        assert_eq!(Some(vh.kind), categories::record_kind(&rec), "{file}");
        let opened = fx
            .open(&sealed.envelope, &vh, "HR")
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(opened.record, rec, "{file}");
        assert_eq!(opened.derived, categories::derive(&rec), "{file}");
    }
}

#[test]
fn statistics_carry_no_categories() {
    let fx = Fx::new();
    let rec = record("statistics.json");
    let sealed = fx.seal("RS/police", &["BA/police"], &rec);
    assert!(sealed.categories.is_empty());
    let vh = fx.verify(&sealed.envelope);
    assert!(vh.categories.is_empty());
    assert_eq!(vh.kind, v1::RecordKind::Statistics);
    assert!(
        fx.open(&sealed.envelope, &vh, "BA")
            .unwrap()
            .derived
            .is_empty()
    );
}

#[test]
fn over_declaring_is_allowed() {
    let fx = Fx::new();
    let rec = record("statistics.json");
    let declared = cats(&[v1::DataCategory::Identity, v1::DataCategory::Health]);
    let input = SealInput {
        sender: &ag("HR/police"),
        recipients: &[ag("BA/police")],
        record: &rec,
        labels: labels(),
        created_at_ms: CREATED,
        expires_at_ms: EXPIRES,
        onward_of: None,
        permission: None,
    };
    let sealed = seal_declaring(&input, declared.clone(), &fx.node("HR").sign, &fx.dir).unwrap();
    assert_eq!(sealed.categories, declared);
    let vh = fx.verify(&sealed.envelope);
    assert_eq!(vh.categories, declared);
    let opened = fx.open(&sealed.envelope, &vh, "BA").unwrap();
    assert!(opened.derived.is_empty());
}

#[test]
fn sealing_is_randomised() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let a = fx.seal("HR/police", &["RS/police"], &rec);
    let b = fx.seal("HR/police", &["RS/police"], &rec);
    assert!(a.id < b.id);
    assert_ne!(a.envelope.ciphertext, b.envelope.ciphertext);
    assert_ne!(a.envelope.header, b.envelope.header);
    // Nonce plus GCM tag around the encoded record.
    assert_eq!(
        a.envelope.ciphertext.len(),
        NONCE_LEN + rec.encoded_len() + AES_256_GCM.tag_len()
    );
}

#[test]
fn seal_refuses_empty_record_and_unknown_node() {
    let fx = Fx::new();
    let empty = v1::CaseRecord::default();
    assert_eq!(
        fx.seal_with("HR/police", &["BA/police"], &empty, |_| {})
            .err(),
        Some(EnvelopeError::EmptyRecord)
    );
    let rec = record("wanted_alert.json");
    assert_eq!(
        fx.seal_with("HR/police", &["ME/police"], &rec, |_| {})
            .err(),
        Some(EnvelopeError::UnknownNode(cc("ME")))
    );
}

#[test]
fn wrong_hpke_key_fails_to_unwrap() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &["BA/police", "RS/police"], &rec);
    let vh = fx.verify(&sealed.envelope);
    // BA's wrapped key with RS's (or a fresh) private key.
    assert_eq!(
        open(&sealed.envelope, &vh, cc("BA"), &fx.node("RS").hpke).err(),
        Some(EnvelopeError::Unwrap("HPKE open failed"))
    );
    let (stranger, _) = keys::generate_hpke();
    assert_eq!(
        open(&sealed.envelope, &vh, cc("RS"), &stranger).err(),
        Some(EnvelopeError::Unwrap("HPKE open failed"))
    );
    // Not a recipient takes precedence over the key.
    assert_eq!(
        open(&sealed.envelope, &vh, cc("HR"), &fx.node("HR").hpke).err(),
        Some(EnvelopeError::NotARecipient(cc("HR")))
    );
}

// ---------------------------------------------------------------------
// Tampering with the envelope

#[test]
fn tampered_ciphertext_is_caught_by_the_header_hash() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    for i in [0, NONCE_LEN, sealed.envelope.ciphertext.len() - 1] {
        let mut env = sealed.envelope.clone();
        env.ciphertext[i] ^= 0x01;
        assert_eq!(
            fx.verify_err(&env),
            EnvelopeError::CiphertextMismatch,
            "byte {i}"
        );
    }
    let mut env = sealed.envelope.clone();
    env.ciphertext.push(0);
    assert_eq!(fx.verify_err(&env), EnvelopeError::CiphertextMismatch);
    let mut env = sealed.envelope.clone();
    env.ciphertext.truncate(NONCE_LEN);
    assert_eq!(fx.verify_err(&env), EnvelopeError::CiphertextMismatch);
}

#[test]
fn tampered_header_byte_breaks_the_signature() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    let mut env = sealed.envelope.clone();
    let at = find(&env.header, CASE_REF.as_bytes()) + CASE_REF.len() - 1;
    env.header[at] = b'2';
    // Still a well-formed header, claiming another case reference.
    let claimed = unverified_summary(&env).expect("still parses");
    assert_eq!(claimed.case_reference, "HR-2025-0002");
    assert_eq!(fx.verify_err(&env), EnvelopeError::BadSignature(cc("HR")));

    // Same for the recipient list: BA/police -> BA/polica.
    let mut env = sealed.envelope.clone();
    let at = find(&env.header, b"BA/police") + 8;
    env.header[at] = b'a';
    assert_eq!(
        unverified_summary(&env).unwrap().recipients,
        vec!["BA/polica".to_string()]
    );
    assert_eq!(fx.verify_err(&env), EnvelopeError::BadSignature(cc("HR")));
}

#[test]
fn header_signed_by_another_key_is_refused() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    let header = sealed.envelope.header.clone();
    for key in [&fx.node("RS").sign, &fx.node("BA").sign, &fx.dir_key] {
        let mut env = sealed.envelope.clone();
        env.signature = key.sign(&header_signing_input(&header));
        assert_eq!(fx.verify_err(&env), EnvelopeError::BadSignature(cc("HR")));
    }
    // The right key over the wrong domain (a receipt) or the raw bytes.
    let hr = &fx.node("HR").sign;
    for msg in [
        domain_hash(RECEIPT_DOMAIN, &header).to_vec(),
        header.clone(),
        sha256(&header).to_vec(),
    ] {
        let mut env = sealed.envelope.clone();
        env.signature = hr.sign(&msg);
        assert_eq!(fx.verify_err(&env), EnvelopeError::BadSignature(cc("HR")));
    }
}

#[test]
fn mangled_signature_is_refused() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    let good = sealed.envelope.signature.clone();
    assert_eq!(good.len(), 64);
    let mut variants = vec![
        good[..63].to_vec(),
        good[..32].to_vec(),
        Vec::new(),
        [good.clone(), vec![0]].concat(),
    ];
    for i in [0, 31, 32, 63] {
        let mut s = good.clone();
        s[i] ^= 0x80;
        variants.push(s);
    }
    for sig in variants {
        let mut env = sealed.envelope.clone();
        let len = sig.len();
        env.signature = sig;
        assert_eq!(
            fx.verify_err(&env),
            EnvelopeError::BadSignature(cc("HR")),
            "signature len {len}"
        );
    }
}

#[test]
fn resigning_an_unchanged_header_still_verifies() {
    // Guards the hand-built envelopes below: the helpers alone are valid.
    let fx = Fx::new();
    let rec = record("fingerprints.json");
    let mut env = fx.seal("HR/police", &["BA/police"], &rec).envelope;
    resign(&mut env, &fx.node("HR").sign, |_| {});
    let vh = fx.verify(&env);
    assert_eq!(fx.open(&env, &vh, "BA").unwrap().record, rec);
    reseal_payload(&fx, &mut env, &rec.encode_to_vec(), None, "HR");
    let vh = fx.verify(&env);
    assert_eq!(fx.open(&env, &vh, "BA").unwrap().record, rec);
}

#[test]
fn garbage_wrapped_key_fails_to_unwrap() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &["BA/police", "RS/police"], &rec);
    let hr = &fx.node("HR").sign;

    // BA's sealed key replaced with garbage: header valid, BA cannot open, RS still can.
    let mut env = sealed.envelope.clone();
    resign(&mut env, hr, |h| {
        let w = h.wrapped_keys.iter_mut().find(|w| w.node == "BA").unwrap();
        w.sealed_key = vec![0x5a; w.sealed_key.len()];
    });
    let vh = fx.verify(&env);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::Unwrap("HPKE open failed"))
    );
    assert_eq!(fx.open(&env, &vh, "RS").unwrap().record, rec);

    // A random (well-formed) encapsulated key.
    let mut env = sealed.envelope.clone();
    let (_, random_pub) = keys::generate_hpke();
    resign(&mut env, hr, |h| {
        h.wrapped_keys
            .iter_mut()
            .find(|w| w.node == "BA")
            .unwrap()
            .encapsulated_key = keys::hpke_public_bytes(&random_pub).to_vec();
    });
    let vh = fx.verify(&env);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::Unwrap("HPKE open failed"))
    );

    // An encapsulated key of the wrong length does not get past verify.
    let mut env = sealed.envelope.clone();
    resign(&mut env, hr, |h| {
        h.wrapped_keys
            .iter_mut()
            .find(|w| w.node == "BA")
            .unwrap()
            .encapsulated_key = vec![1, 2, 3, 4, 5];
    });
    assert_eq!(
            fx.verify_err(&env),
            EnvelopeError::WrappedKeys(
                "key for BA has a 5-byte encapsulated key and a 48-byte sealed key; they are 32 and 48 bytes"
                    .into()
            )
        );

    // The wrapped keys of BA and RS swapped: each is bound to its node by the HPKE info.
    let mut env = sealed.envelope.clone();
    resign(&mut env, hr, |h| {
        for w in &mut h.wrapped_keys {
            w.node = if w.node == "BA" {
                "RS".into()
            } else {
                "BA".into()
            };
        }
    });
    let vh = fx.verify(&env);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::Unwrap("HPKE open failed"))
    );
    assert_eq!(
        fx.open(&env, &vh, "RS").err(),
        Some(EnvelopeError::Unwrap("HPKE open failed"))
    );
}

#[test]
fn wrapped_key_is_bound_to_the_envelope_id() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let a = fx.seal("HR/police", &["BA/police"], &rec);
    let b = fx.seal("HR/police", &["BA/police"], &rec);
    // A's header carrying B's ciphertext and B's wrapped key: the key
    // was wrapped for B's id, so it does not unwrap under A's.
    let mut env = a.envelope.clone();
    env.ciphertext = b.envelope.ciphertext.clone();
    let b_header = v1::EnvelopeHeader::decode(b.envelope.header.as_slice()).unwrap();
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.ciphertext_sha256 = b_header.ciphertext_sha256.clone();
        h.wrapped_keys = b_header.wrapped_keys.clone();
    });
    let vh = fx.verify(&env);
    assert_eq!(vh.id, a.id);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::Unwrap("HPKE open failed"))
    );
}

#[test]
fn payload_under_another_data_key_fails_to_decrypt() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let a = fx.seal("HR/police", &["BA/police"], &rec);
    let b = fx.seal("HR/police", &["BA/police"], &rec);
    // A's header and wrapped key, B's ciphertext with the hash rebound:
    // the header verifies, the key unwraps, the payload does not decrypt.
    let mut env = a.envelope.clone();
    env.ciphertext = b.envelope.ciphertext.clone();
    let hash = sha256(&env.ciphertext).to_vec();
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.ciphertext_sha256 = hash
    });
    let vh = fx.verify(&env);
    assert_eq!(fx.open(&env, &vh, "BA").err(), Some(EnvelopeError::Decrypt));
}

/// AES-GCM under a fresh key, as a dishonest sender would make it.
fn encrypt_under(key: &[u8; 32], id: &EnvelopeId, plaintext: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new().fill(&mut nonce).unwrap();
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let mut buf = plaintext.to_vec();
    k.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(id.as_bytes()),
        &mut buf,
    )
    .unwrap();
    [nonce.to_vec(), buf].concat()
}

#[test]
fn key_commitment_is_the_documented_hash() {
    let id = EnvelopeId::at(1_700_000_000_000);
    let key = [0x42u8; 32];
    let spelled_out = sha256(
        &[
            b"casebridge/v1 data-key-commitment\0".as_slice(),
            id.as_bytes(),
            &key,
        ]
        .concat(),
    );
    assert_eq!(key_commitment(&id, &key), spelled_out);
    assert_ne!(key_commitment(&id, &[0x43; 32]), spelled_out);
    assert_ne!(
        key_commitment(&EnvelopeId::at(1_700_000_000_000), &key),
        spelled_out
    );
    assert!(constant_time_eq(&spelled_out, &spelled_out.clone()));
    let mut other = spelled_out;
    other[31] ^= 1;
    assert!(!constant_time_eq(&spelled_out, &other));
}

#[test]
fn sealing_commits_to_the_data_key() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &["BA/police", "RS/police"], &rec);
    let vh = fx.verify(&sealed.envelope);
    // Both recipients unwrap the committed key and read the same record.
    let at_ba = fx.open(&sealed.envelope, &vh, "BA").unwrap();
    let at_rs = fx.open(&sealed.envelope, &vh, "RS").unwrap();
    assert_eq!(at_ba.record, at_rs.record);
    let h = v1::EnvelopeHeader::decode(sealed.envelope.header.as_slice()).unwrap();
    assert_eq!(h.data_key_sha256.len(), 32);
    assert_eq!(vh.data_key_sha256.to_vec(), h.data_key_sha256);
}

#[test]
fn header_without_a_key_commitment_is_malformed() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    for len in [0, 31, 33] {
        let mut env = sealed.envelope.clone();
        resign(&mut env, &fx.node("HR").sign, |h| {
            h.data_key_sha256.resize(len, 7)
        });
        assert_eq!(fx.verify_err(&env), EnvelopeError::KeyCommitmentLength(len));
    }
}

/// One signed header, a different data key wrapped for each recipient
/// node: whichever node unwraps a key other than the committed one
/// refuses before decrypting, so no two recipients read different
/// records.
#[test]
fn recipients_given_different_data_keys_cannot_read_different_records() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &["BA/police", "RS/police"], &rec);
    let id = sealed.id;
    let mut other = rec.clone();
    if let Some(v1::case_record::Body::WantedAlert(w)) = &mut other.body {
        w.instructions = "Disregard the earlier alert.".into();
    }
    let second = [0x17u8; 32];
    let rewrap_ba = |h: &mut v1::EnvelopeHeader| {
        let ba = h.wrapped_keys.iter_mut().find(|w| w.node == "BA").unwrap();
        *ba = wrap_for(&second, &id, cc("BA"), &fx.dir);
    };

    // The payload opens under BA's (uncommitted) key only: both refuse.
    let mut env = sealed.envelope.clone();
    env.ciphertext = encrypt_under(&second, &id, &other.encode_to_vec());
    let hash = sha256(&env.ciphertext).to_vec();
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.ciphertext_sha256 = hash;
        rewrap_ba(h);
    });
    let vh = fx.verify(&env);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::KeyCommitmentMismatch)
    );
    assert_eq!(fx.open(&env, &vh, "RS").err(), Some(EnvelopeError::Decrypt));

    // The payload opens under the committed key: RS reads it, BA (given
    // another key) refuses rather than read something else.
    let mut env = sealed.envelope.clone();
    resign(&mut env, &fx.node("HR").sign, rewrap_ba);
    let vh = fx.verify(&env);
    assert_eq!(fx.open(&env, &vh, "RS").unwrap().record, rec);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::KeyCommitmentMismatch)
    );

    // Committing to the second key instead moves the refusal to RS.
    let commitment = key_commitment(&id, &second).to_vec();
    let mut env = sealed.envelope.clone();
    env.ciphertext = encrypt_under(&second, &id, &other.encode_to_vec());
    let hash = sha256(&env.ciphertext).to_vec();
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.ciphertext_sha256 = hash;
        h.data_key_sha256 = commitment;
        rewrap_ba(h);
    });
    let vh = fx.verify(&env);
    assert_eq!(fx.open(&env, &vh, "BA").unwrap().record, other);
    assert_eq!(
        fx.open(&env, &vh, "RS").err(),
        Some(EnvelopeError::KeyCommitmentMismatch)
    );
}

#[test]
fn header_fields_are_bounded() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &["BA/police", "RS/police"], &rec);
    let hr = &fx.node("HR").sign;
    let forge = |b: &Bounds, f: &dyn Fn(&mut v1::EnvelopeHeader)| {
        let mut env = sealed.envelope.clone();
        resign(&mut env, hr, f);
        verify_within(&env, &fx.dir, NOW, b).expect_err("must be refused")
    };
    let d = Bounds::default();
    let len = |field, len, max| EnvelopeError::OutOfBounds(Exceeded::Length { field, len, max });
    let count =
        |field, count, max| EnvelopeError::OutOfBounds(Exceeded::Count { field, count, max });
    assert_eq!(
        forge(&d, &|h| h.recipients = vec!["BA/police".into(); 65]),
        count("recipients", 65, 64)
    );
    // The configured maximum, not the default, applies.
    let two = Bounds { max_recipients: 1 };
    assert_eq!(forge(&two, &|_| {}), count("recipients", 2, 1));
    assert_eq!(
        forge(&d, &|h| h.recipients[0] =
            format!("BA/{}", "p".repeat(1 << 20))),
        len("recipients", (1 << 20) + 3, 35)
    );
    assert_eq!(
        forge(&d, &|h| h.sender_agency =
            "HR/".to_string() + &"p".repeat(33)),
        len("sender_agency", 36, 35)
    );
    assert_eq!(
        forge(&d, &|h| h.sender_node = "HRV".into()),
        len("sender_node", 3, 2)
    );
    assert_eq!(
        forge(&d, &|h| h.wrapped_keys =
            vec![h.wrapped_keys[0].clone(); 65]),
        count("wrapped_keys", 65, 64)
    );
    assert_eq!(
        forge(&d, &|h| h.onward_of = vec![1; 17]),
        len("onward_of", 17, 16)
    );
    assert_eq!(
        forge(&d, &|h| h.ciphertext_sha256 = vec![1; 33]),
        len("ciphertext_sha256", 33, 32)
    );
    assert_eq!(
        forge(&d, &|h| h.envelope_id.push(0)),
        EnvelopeError::InvalidField("envelope_id: 17 bytes long; an envelope id is 16".into())
    );
    assert_eq!(
        forge(&d, &|h| h.labels.as_mut().unwrap().legal_basis_reference =
            "x".repeat(5 << 20)),
        len("labels.legal_basis_reference", 5 << 20, 512)
    );
    // A bound is checked before the signature: nothing large is worked on.
    let mut env = sealed.envelope.clone();
    resign(&mut env, &fx.node("RS").sign, |h| {
        h.recipients = vec!["BA/police".into(); 100_000]
    });
    assert_eq!(fx.verify_err(&env), count("recipients", 100_000, 64));
}

#[test]
fn permission_scope_is_bounded() {
    let scope = |third: Vec<String>| v1::PermissionScope {
        original_envelope_id: EnvelopeId::at(1_700_000_000_000).as_bytes().to_vec(),
        grantee: "RS/police".into(),
        third_agencies: third,
    };
    let d = Bounds::default();
    assert!(Permission::parse(&scope(vec!["BA/police".into()]), &d).is_ok());
    assert_eq!(
        Permission::parse(&scope(vec!["BA/police".into(); 65]), &d),
        Err(EnvelopeError::OutOfBounds(Exceeded::Count {
            field: "permission.third_agencies",
            count: 65,
            max: 64
        }))
    );
    assert_eq!(
        Permission::parse(&scope(vec!["BA/police".into(); 2]), &d),
        Err(EnvelopeError::InvalidField(
            "permission scope: third agency BA/police listed twice".into()
        ))
    );
    assert_eq!(
        Permission::parse(&scope(vec!["BA/".to_string() + &"p".repeat(40)]), &d),
        Err(EnvelopeError::OutOfBounds(Exceeded::Length {
            field: "permission.third_agencies",
            len: 43,
            max: 35
        }))
    );
    let mut long_id = scope(vec!["BA/police".into()]);
    long_id.original_envelope_id = vec![0; 1 << 20];
    assert_eq!(
        Permission::parse(&long_id, &d),
        Err(EnvelopeError::OutOfBounds(Exceeded::Length {
            field: "permission.original_envelope_id",
            len: 1 << 20,
            max: 16
        }))
    );
}

#[test]
fn sealed_len_is_the_size_of_the_sealed_envelope() {
    let fx = Fx::new();
    let big = v1::CaseRecord {
        body: Some(v1::case_record::Body::JitEvidence(v1::JitEvidence {
            jit_reference: "JIT".into(),
            description: "scan".into(),
            attachments: vec![v1::Attachment {
                filename: "scan.bin".into(),
                media_type: "application/octet-stream".into(),
                content: vec![7; 300_000],
                contains: vec![],
            }],
        })),
    };
    for (rec, to) in [
        (record("wanted_alert.json"), vec!["BA/police"]),
        (record("fingerprints.json"), vec!["BA/police", "RS/police"]),
        (
            record("statistics.json"),
            vec!["BA/police", "BA/missing-persons"],
        ),
        (big, vec!["RS/police", "BA/police", "BA/missing-persons"]),
    ] {
        let sender = ag("HR/police");
        let recipients: Vec<AgencyId> = to.iter().map(|r| ag(r)).collect();
        let input = SealInput {
            sender: &sender,
            recipients: &recipients,
            record: &rec,
            labels: labels(),
            created_at_ms: CREATED,
            expires_at_ms: EXPIRES,
            onward_of: Some(EnvelopeId::at(1_700_000_000_000)),
            permission: None,
        };
        let env = seal(&input, &fx.node("HR").sign, &fx.dir).unwrap().envelope;
        assert_eq!(
            sealed_len(&input),
            Ok(env.header.len() + env.signature.len() + env.ciphertext.len()),
            "{to:?}"
        );
    }
}

#[test]
fn payload_is_bound_to_the_envelope_id() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let mut env = fx.seal("HR/police", &["BA/police"], &rec).envelope;
    reseal_payload(
        &fx,
        &mut env,
        &rec.encode_to_vec(),
        Some(EnvelopeId::at(1_700_000_000_000)),
        "HR",
    );
    let vh = fx.verify(&env);
    assert_eq!(fx.open(&env, &vh, "BA").err(), Some(EnvelopeError::Decrypt));
}

#[test]
fn ciphertext_shorter_than_nonce_and_tag_is_refused_by_verify() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    for len in [0, 1, NONCE_LEN, NONCE_LEN + AES_256_GCM.tag_len() - 1] {
        let mut env = sealed.envelope.clone();
        env.ciphertext.truncate(len);
        let hash = sha256(&env.ciphertext).to_vec();
        resign(&mut env, &fx.node("HR").sign, |h| {
            h.ciphertext_sha256 = hash
        });
        let err = fx.verify_err(&env);
        assert_eq!(err, EnvelopeError::ShortCiphertext(len));
        assert_eq!(
            err.to_string(),
            format!("ciphertext is {len} bytes long; nonce and tag alone take 28")
        );
    }
    // Nonce and tag around an empty record are the shortest payload.
    let mut env = sealed.envelope.clone();
    reseal_payload(&fx, &mut env, &[], None, "HR");
    assert_eq!(env.ciphertext.len(), 28);
    assert!(verify(&env, &fx.dir, NOW).is_ok());
}

#[test]
fn undecodable_payload_is_a_malformed_record() {
    let fx = Fx::new();
    let mut env = fx
        .seal("HR/police", &["BA/police"], &record("wanted_alert.json"))
        .envelope;
    // Field 7 (wanted_alert), length 100, with 2 bytes following.
    reseal_payload(&fx, &mut env, &[0x3a, 100, 1, 2], None, "HR");
    let vh = fx.verify(&env);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::MalformedRecord)
    );
}

#[test]
fn kind_mismatch_built_by_hand() {
    // `seal` takes the kind from the body, so a mismatch needs a forged header.
    let fx = Fx::new();
    let rec = record("fingerprints.json");
    let sealed = fx.seal("HR/police", &["BA/police"], &rec);
    let mut env = sealed.envelope.clone();
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.kind = v1::RecordKind::WantedAlert as i32
    });
    let vh = fx.verify(&env);
    assert_eq!(vh.kind, v1::RecordKind::WantedAlert);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::KindMismatch {
            declared: v1::RecordKind::WantedAlert,
            found: Some(v1::RecordKind::InformationResponse),
        })
    );
    // A body-less record (it encodes to nothing) behind a valid header.
    let mut env = sealed.envelope.clone();
    reseal_payload(&fx, &mut env, &[], None, "HR");
    let vh = fx.verify(&env);
    assert_eq!(
        fx.open(&env, &vh, "BA").err(),
        Some(EnvelopeError::KindMismatch {
            declared: v1::RecordKind::InformationResponse,
            found: None
        })
    );
}

#[test]
fn lying_sender_is_caught_at_open() {
    let fx = Fx::new();
    let rec = record("fingerprints.json");
    let input = SealInput {
        sender: &ag("HR/police"),
        recipients: &[ag("BA/police")],
        record: &rec,
        labels: labels(),
        created_at_ms: CREATED,
        expires_at_ms: EXPIRES,
        onward_of: None,
        permission: None,
    };
    let hr = &fx.node("HR").sign;
    let sealed = seal_declaring(&input, cats(&[v1::DataCategory::Identity]), hr, &fx.dir).unwrap();
    // The header is honest about nothing but validly signed.
    let vh = fx.verify(&sealed.envelope);
    assert_eq!(vh.categories, cats(&[v1::DataCategory::Identity]));
    let err = fx.open(&sealed.envelope, &vh, "BA").err().unwrap();
    assert_eq!(
        err,
        EnvelopeError::UndeclaredCategories(vec![
            v1::DataCategory::CaseNarrative,
            v1::DataCategory::Biometric
        ])
    );
    assert_eq!(
        err.to_string(),
        "content holds undeclared data categories: case_narrative, biometric"
    );

    let declared = cats(&[v1::DataCategory::Identity, v1::DataCategory::CaseNarrative]);
    let sealed = seal_declaring(&input, declared, hr, &fx.dir).unwrap();
    let vh = fx.verify(&sealed.envelope);
    assert_eq!(
        fx.open(&sealed.envelope, &vh, "BA").err(),
        Some(EnvelopeError::UndeclaredCategories(vec![
            v1::DataCategory::Biometric
        ]))
    );
}

// ---------------------------------------------------------------------
// Header checks against the directory

#[test]
fn malformed_header_and_version() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    for garbage in [vec![0x12, 0x10, 0x01], vec![0xff; 8], vec![0x0a, 0x01]] {
        let mut env = sealed.envelope.clone();
        env.header = garbage;
        assert_eq!(fx.verify_err(&env), EnvelopeError::MalformedHeader);
    }
    for version in [0, 2] {
        let mut env = sealed.envelope.clone();
        resign(&mut env, &fx.node("HR").sign, |h| h.version = version);
        assert_eq!(
            fx.verify_err(&env),
            EnvelopeError::UnsupportedVersion(version)
        );
    }
}

#[test]
fn sender_node_must_parse_and_be_listed() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    let hr = &fx.node("HR").sign;
    let mut env = sealed.envelope.clone();
    resign(&mut env, hr, |h| h.sender_node = "hr".into());
    assert!(
        matches!(fx.verify_err(&env), EnvelopeError::InvalidField(f) if f.starts_with("sender_node: "))
    );
    let mut env = sealed.envelope.clone();
    resign(&mut env, hr, |h| h.sender_node = "ME".into());
    assert_eq!(fx.verify_err(&env), EnvelopeError::UnknownNode(cc("ME")));
    // Claiming RS while signed by HR.
    let mut env = sealed.envelope.clone();
    resign(&mut env, hr, |h| h.sender_node = "RS".into());
    assert_eq!(fx.verify_err(&env), EnvelopeError::BadSignature(cc("RS")));
}

#[test]
fn foreign_sender_agency_is_refused() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["RS/police"], &record("wanted_alert.json"));
    let mut env = sealed.envelope.clone();
    // HR signs a header in which BA/police (a real agency) sends.
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.sender_agency = "BA/police".into()
    });
    assert_eq!(
        fx.verify_err(&env),
        EnvelopeError::ForeignSenderAgency {
            agency: ag("BA/police"),
            node: cc("HR")
        }
    );
    // A sender agency that does not parse.
    let mut env = sealed.envelope.clone();
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.sender_agency = "HR police".into()
    });
    assert!(
        matches!(fx.verify_err(&env), EnvelopeError::InvalidField(f) if f.starts_with("sender_agency: "))
    );
}

#[test]
fn sender_agency_must_be_listed_and_unrevoked() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/customs", &["BA/police"], &rec);
    assert_eq!(
        fx.verify_err(&sealed.envelope),
        EnvelopeError::UnknownAgency(ag("HR/customs"))
    );
    let sealed = fx.seal("RS/revoked", &["BA/police"], &rec);
    assert_eq!(
        fx.verify_err(&sealed.envelope),
        EnvelopeError::RevokedAgency(ag("RS/revoked"))
    );
    // Revoking HR/police in a newer directory refuses its envelopes.
    let sealed = fx.seal("HR/police", &["BA/police"], &rec);
    let dir = fx.dir_with(|d| {
        d.agencies
            .iter_mut()
            .find(|a| a.id == "HR/police")
            .unwrap()
            .revoked = true
    });
    assert_eq!(
        verify(&sealed.envelope, &dir, NOW).err(),
        Some(EnvelopeError::RevokedAgency(ag("HR/police")))
    );
}

#[test]
fn recipient_agencies_must_be_listed_and_unrevoked() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &["BA/police", "BA/customs"], &rec);
    assert_eq!(
        fx.verify_err(&sealed.envelope),
        EnvelopeError::UnknownAgency(ag("BA/customs"))
    );
    let sealed = fx.seal("HR/police", &["RS/police", "RS/revoked"], &rec);
    assert_eq!(
        fx.verify_err(&sealed.envelope),
        EnvelopeError::RevokedAgency(ag("RS/revoked"))
    );
}

#[test]
fn recipient_list_checks() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &[], &rec);
    assert_eq!(
        fx.verify_err(&sealed.envelope),
        EnvelopeError::InvalidField("no recipients".into())
    );
    let sealed = fx.seal("HR/police", &["BA/police", "RS/police", "BA/police"], &rec);
    assert_eq!(
        fx.verify_err(&sealed.envelope),
        EnvelopeError::InvalidField("recipient BA/police listed twice".into())
    );
    let sealed = fx.seal("HR/police", &["BA/police", "HR/police"], &rec);
    assert_eq!(
        fx.verify_err(&sealed.envelope),
        EnvelopeError::InvalidField("recipient HR/police is the sender".into())
    );
    let mut env = fx.seal("HR/police", &["BA/police"], &rec).envelope;
    resign(&mut env, &fx.node("HR").sign, |h| {
        h.recipients.push("ba/police".into())
    });
    assert!(
        matches!(fx.verify_err(&env), EnvelopeError::InvalidField(f) if f.starts_with("recipient: "))
    );
}

#[test]
fn inactive_nodes_are_refused() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    let set = |c: &'static str, f: NodeEdit| {
        fx.dir_with(move |d| f(d.nodes.iter_mut().find(|n| n.country == c).unwrap()))
    };
    let cases: [(&str, NodeEdit, EnvelopeError); 6] = [
        (
            "HR",
            |n| n.revoked = true,
            EnvelopeError::InactiveNode(cc("HR")),
        ),
        (
            "HR",
            |n| n.not_after_ms = NOW,
            EnvelopeError::InactiveNode(cc("HR")),
        ),
        (
            "HR",
            |n| n.not_before_ms = NOW + 1,
            EnvelopeError::InactiveNode(cc("HR")),
        ),
        (
            "BA",
            |n| n.revoked = true,
            EnvelopeError::InactiveNode(cc("BA")),
        ),
        (
            "BA",
            |n| n.not_after_ms = NOW - 1,
            EnvelopeError::InactiveNode(cc("BA")),
        ),
        (
            "BA",
            |n| n.not_before_ms = NOW + 1,
            EnvelopeError::InactiveNode(cc("BA")),
        ),
    ];
    for (c, f, want) in cases {
        let dir = set(c, f);
        assert_eq!(verify(&sealed.envelope, &dir, NOW).err(), Some(want));
    }
    // Boundaries: valid from not_before inclusive to not_after exclusive.
    let dir = set("HR", |n| {
        n.not_before_ms = NOW;
        n.not_after_ms = NOW + 1;
    });
    assert!(verify(&sealed.envelope, &dir, NOW).is_ok());
    // A revoked node not involved in the envelope does not matter.
    let dir = set("RS", |n| n.revoked = true);
    assert!(verify(&sealed.envelope, &dir, NOW).is_ok());
}

#[test]
fn wrapped_key_set_must_match_recipient_nodes() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let sealed = fx.seal("HR/police", &["BA/police", "RS/police"], &rec);
    let hr = &fx.node("HR").sign;
    let forge = |f: fn(&mut v1::EnvelopeHeader)| {
        let mut env = sealed.envelope.clone();
        resign(&mut env, hr, f);
        fx.verify_err(&env)
    };
    assert_eq!(
        forge(|h| h.wrapped_keys.retain(|w| w.node != "BA")),
        EnvelopeError::WrappedKeys("no key for recipient node BA".into())
    );
    assert_eq!(
        forge(|h| h.wrapped_keys.push(h.wrapped_keys[0].clone())),
        EnvelopeError::WrappedKeys("two keys for BA".into())
    );
    assert_eq!(
        forge(|h| {
            let mut extra = h.wrapped_keys[0].clone();
            extra.node = "HR".into();
            h.wrapped_keys.push(extra);
        }),
        EnvelopeError::WrappedKeys("key for HR, which serves no recipient".into())
    );
    assert_eq!(
        forge(|h| h.wrapped_keys[1].node = "rs".into()),
        EnvelopeError::WrappedKeys(IdError::Country("rs".into()).to_string())
    );
    assert_eq!(
        forge(|h| h.wrapped_keys.clear()),
        EnvelopeError::WrappedKeys("no key for recipient node BA".into())
    );
}

#[test]
fn header_field_checks() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    let hr = &fx.node("HR").sign;
    let forge = |f: &dyn Fn(&mut v1::EnvelopeHeader)| {
        let mut env = sealed.envelope.clone();
        resign(&mut env, hr, f);
        fx.verify_err(&env)
    };
    assert!(matches!(
        forge(&|h| h.envelope_id.truncate(15)),
        EnvelopeError::InvalidField(f) if f.starts_with("envelope_id: ")
    ));
    assert_eq!(
        forge(&|h| h.kind = 0),
        EnvelopeError::InvalidField("kind 0".into())
    );
    assert_eq!(
        forge(&|h| h.kind = 99),
        EnvelopeError::InvalidField("kind 99".into())
    );
    assert_eq!(
        forge(&|h| h.declared_categories.push(0)),
        EnvelopeError::InvalidField("data category 0".into())
    );
    assert_eq!(
        forge(&|h| h.declared_categories.push(13)),
        EnvelopeError::InvalidField("data category 13".into())
    );
    assert_eq!(
        forge(&|h| h.labels = None),
        EnvelopeError::InvalidField("no labels".into())
    );
    assert_eq!(
        forge(&|h| h.labels.as_mut().unwrap().purpose = 0),
        EnvelopeError::InvalidField("purpose is missing or unknown".into())
    );
    // Each declared category once, so never more than there are.
    let first = sealed
        .categories
        .iter()
        .next()
        .expect("wanted alert has categories");
    assert_eq!(
        forge(&|h| h.declared_categories.push(first as i32)),
        EnvelopeError::InvalidField(format!(
            "data category {} listed twice",
            categories::short_name(first)
        ))
    );
    assert_eq!(
        forge(&|h| h.declared_categories = vec![first as i32; 300_003]),
        EnvelopeError::OutOfBounds(Exceeded::Count {
            field: "declared_categories",
            count: 300_003,
            max: categories::CATEGORY_COUNT
        })
    );
}

#[test]
fn expiry_checks() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let at = |created: i64, expires: i64| {
        let sealed = fx
            .seal_with("HR/police", &["BA/police"], &rec, |i| {
                i.created_at_ms = created;
                i.expires_at_ms = expires;
            })
            .unwrap();
        verify(&sealed.envelope, &fx.dir, NOW).err()
    };
    assert_eq!(
        at(CREATED, NOW),
        Some(EnvelopeError::Expired {
            expires_at_ms: NOW,
            now_ms: NOW
        })
    );
    assert_eq!(
        at(CREATED, NOW - 1),
        Some(EnvelopeError::Expired {
            expires_at_ms: NOW - 1,
            now_ms: NOW
        })
    );
    assert_eq!(at(CREATED, NOW + 1), None);
    let not_after = Some(EnvelopeError::InvalidField(
        "expires_at is not after created_at".into(),
    ));
    assert_eq!(at(EXPIRES, EXPIRES), not_after);
    assert_eq!(at(EXPIRES, EXPIRES - 1), not_after);
    // Ordering is checked before expiry.
    assert_eq!(at(NOW - 5, NOW - 10), not_after);
    // The same envelope verifies before its expiry and not after.
    let sealed = fx.seal("HR/police", &["BA/police"], &rec);
    assert!(verify(&sealed.envelope, &fx.dir, EXPIRES - 1).is_ok());
    assert_eq!(
        verify(&sealed.envelope, &fx.dir, EXPIRES).err(),
        Some(EnvelopeError::Expired {
            expires_at_ms: EXPIRES,
            now_ms: EXPIRES
        })
    );
}

#[test]
fn labels_are_checked_by_verify() {
    let fx = Fx::new();
    let rec = record("wanted_alert.json");
    let with = |f: LabelsEdit| {
        let sealed = fx
            .seal_with("HR/police", &["BA/police"], &rec, |i| f(&mut i.labels))
            .unwrap();
        fx.verify_err(&sealed.envelope)
    };
    assert_eq!(
        with(|l| l.purpose = 0),
        EnvelopeError::InvalidField("purpose is missing or unknown".into())
    );
    assert_eq!(
        with(|l| l.handling = v1::HandlingCode::H3 as i32),
        EnvelopeError::InvalidField(
            "handling code H3 needs the provider's restriction text".into()
        )
    );
    let sealed = fx
        .seal_with("HR/police", &["BA/police"], &rec, |i| {
            i.labels.handling = v1::HandlingCode::H3 as i32;
            i.labels.handling_restriction = "Not to be shared with customs.".into();
        })
        .unwrap();
    assert_eq!(
        fx.verify(&sealed.envelope).labels.handling_restriction,
        "Not to be shared with customs."
    );
}

#[test]
fn check_labels_table() {
    assert_eq!(check_labels(&labels()), Ok(()));
    let refused: &[(LabelsEdit, &str)] = &[
        (|l| l.purpose = 0, "purpose is missing or unknown"),
        (|l| l.purpose = 99, "purpose is missing or unknown"),
        (|l| l.legal_basis = 0, "legal basis is missing or unknown"),
        (|l| l.legal_basis = 42, "legal basis is missing or unknown"),
        (|l| l.handling = 0, "handling code is missing or unknown"),
        (|l| l.handling = 5, "handling code is missing or unknown"),
        (
            |l| l.handling = v1::HandlingCode::H3 as i32,
            "handling code H3 needs the provider's restriction text",
        ),
        (
            |l| {
                l.handling = v1::HandlingCode::H3 as i32;
                l.handling_restriction = " \t\n".into();
            },
            "handling code H3 needs the provider's restriction text",
        ),
        (
            |l| l.handling_restriction = "x".into(),
            "a restriction text is only carried with handling code H3",
        ),
        (|l| l.classification = 4, "classification is unknown"),
        (|l| l.priority = -1, "priority is unknown"),
        (
            |l| l.evaluation.as_mut().unwrap().source = 5,
            "4x4 evaluation is unknown",
        ),
        (
            |l| l.evaluation.as_mut().unwrap().accuracy = 5,
            "4x4 evaluation is unknown",
        ),
        (
            |l| l.in_reply_to = "not-a-uuid".into(),
            "in_reply_to is not an envelope id",
        ),
    ];
    for (f, why) in refused {
        let mut l = labels();
        f(&mut l);
        assert_eq!(
            check_labels(&l),
            Err(EnvelopeError::InvalidField((*why).into())),
            "{why}"
        );
    }
    let too_long: &[(LabelsEdit, &str, usize, usize)] = &[
        (
            |l| l.case_reference = "x".repeat(129),
            "labels.case_reference",
            129,
            128,
        ),
        (
            |l| {
                l.handling = v1::HandlingCode::H3 as i32;
                l.handling_restriction = "x".repeat(4097);
            },
            "labels.handling_restriction",
            4097,
            4096,
        ),
        (
            |l| l.legal_basis_reference = "x".repeat(5 << 20),
            "labels.legal_basis_reference",
            5 << 20,
            512,
        ),
        (
            |l| l.in_reply_to = "x".repeat(46),
            "labels.in_reply_to",
            46,
            45,
        ),
    ];
    for (f, field, len, max) in too_long {
        let mut l = labels();
        f(&mut l);
        let err = check_labels(&l).unwrap_err();
        assert_eq!(
            err,
            EnvelopeError::OutOfBounds(Exceeded::Length {
                field,
                len: *len,
                max: *max
            })
        );
        assert_eq!(
            err.to_string(),
            format!("{field} is {len} bytes long; the limit is {max}")
        );
    }
    let accepted: &[LabelsEdit] = &[
        |l| {
            l.handling = v1::HandlingCode::H3 as i32;
            l.handling_restriction = "x".repeat(4096);
        },
        |l| l.case_reference = "x".repeat(128),
        |l| l.legal_basis_reference = "x".repeat(512),
        |l| l.in_reply_to = format!("urn:uuid:{}", EnvelopeId::at(1_700_000_000_000)),
        |l| l.in_reply_to = EnvelopeId::at(1_700_000_000_000).to_string(),
        |l| l.evaluation = None,
        |l| l.handling = v1::HandlingCode::H0 as i32,
        // Classification and priority are optional.
        |l| {
            l.classification = 0;
            l.priority = 0;
        },
    ];
    for (i, f) in accepted.iter().enumerate() {
        let mut l = labels();
        f(&mut l);
        assert_eq!(check_labels(&l), Ok(()), "accepted case {i}");
    }
}

// ---------------------------------------------------------------------
// Receipts

fn receipt_body(node: &str) -> v1::ReceiptBody {
    v1::ReceiptBody {
        envelope_id: EnvelopeId::at(1_700_000_000_000).as_bytes().to_vec(),
        recipient_node: node.into(),
        status: v1::ReceiptStatus::Delivered as i32,
        code: v1::RejectionCode::Unspecified as i32,
        reason: "delivered to 2 inboxes".into(),
        delivered_to: vec!["BA/police".into(), "BA/missing-persons".into()],
        at_ms: NOW,
        header_sha256: vec![7; 32],
    }
}

#[test]
fn receipt_round_trip() {
    let fx = Fx::new();
    let body = receipt_body("BA");
    let signed = sign_receipt(&body, &fx.node("BA").sign);
    assert_eq!(signed.body, body.encode_to_vec());
    assert_eq!(verify_receipt(&signed, &fx.dir), Ok(body));
}

#[test]
fn receipt_signed_by_another_node_is_refused() {
    let fx = Fx::new();
    let body = receipt_body("HR");
    for key in [&fx.node("RS").sign, &fx.node("BA").sign, &fx.dir_key] {
        let signed = sign_receipt(&body, key);
        assert_eq!(
            verify_receipt(&signed, &fx.dir),
            Err(EnvelopeError::BadReceiptSignature(cc("HR")))
        );
    }
    // HR's key over the header domain is not a receipt signature.
    let bytes = body.encode_to_vec();
    let cross = v1::SignedReceipt {
        signature: fx.node("HR").sign.sign(&header_signing_input(&bytes)),
        body: bytes,
    };
    assert_eq!(
        verify_receipt(&cross, &fx.dir),
        Err(EnvelopeError::BadReceiptSignature(cc("HR")))
    );
}

#[test]
fn tampered_receipt_is_refused() {
    let fx = Fx::new();
    let signed = sign_receipt(&receipt_body("BA"), &fx.node("BA").sign);

    let mut r = signed.clone();
    let at = find(&r.body, b"delivered to 2");
    r.body[at + 13] = b'3';
    assert_eq!(
        v1::ReceiptBody::decode(r.body.as_slice()).unwrap().reason,
        "delivered to 3 inboxes"
    );
    assert_eq!(
        verify_receipt(&r, &fx.dir),
        Err(EnvelopeError::BadReceiptSignature(cc("BA")))
    );

    // Re-pointing the receipt at another node changes whose key is used.
    let mut r = signed.clone();
    let at = find(&r.body, &[0x12, 2, b'B', b'A']);
    r.body[at + 2..at + 4].copy_from_slice(b"RS");
    assert_eq!(
        verify_receipt(&r, &fx.dir),
        Err(EnvelopeError::BadReceiptSignature(cc("RS")))
    );

    let mut r = signed.clone();
    r.signature.truncate(63);
    assert_eq!(
        verify_receipt(&r, &fx.dir),
        Err(EnvelopeError::BadReceiptSignature(cc("BA")))
    );

    let mut r = signed.clone();
    r.body = vec![0x0a, 0x05, 0x01];
    assert_eq!(
        verify_receipt(&r, &fx.dir),
        Err(EnvelopeError::MalformedReceipt)
    );

    let other = sign_receipt(&receipt_body("ME"), &fx.node("BA").sign);
    assert_eq!(
        verify_receipt(&other, &fx.dir),
        Err(EnvelopeError::UnknownNode(cc("ME")))
    );
    let other = sign_receipt(&receipt_body("ba"), &fx.node("BA").sign);
    assert!(matches!(
        verify_receipt(&other, &fx.dir),
        Err(EnvelopeError::InvalidField(f)) if f.starts_with("receipt node: ")
    ));
}

// ---------------------------------------------------------------------
// Unverified summaries

#[test]
fn unverified_summary_of_garbage_is_none() {
    for header in [vec![0x12, 0x10, 0x01], vec![0xff; 8], vec![0x0a, 0x01]] {
        let env = v1::Envelope {
            header,
            signature: vec![],
            ciphertext: vec![1, 2, 3],
        };
        assert_eq!(unverified_summary(&env), None);
    }
}

#[test]
fn unverified_summary_matches_the_verified_one() {
    let fx = Fx::new();
    let rec = record("trace_result.json");
    let in_reply_to = EnvelopeId::at(1_700_000_000_000).to_string();
    let sealed = fx
        .seal_with(
            "HR/police",
            &["BA/missing-persons", "RS/police"],
            &rec,
            |i| {
                i.labels.in_reply_to = in_reply_to.clone();
            },
        )
        .unwrap();
    let vh = fx.verify(&sealed.envelope);
    let s = unverified_summary(&sealed.envelope).expect("parses");
    assert_eq!(s, vh.summary());
    assert_eq!(s.envelope_id, sealed.id.as_bytes().to_vec());
    assert_eq!(s.sender_node, "HR");
    assert_eq!(s.sender_agency, "HR/police");
    assert_eq!(
        s.recipients,
        vec!["BA/missing-persons".to_string(), "RS/police".to_string()]
    );
    assert_eq!(s.kind, v1::RecordKind::TraceResult as i32);
    assert_eq!(s.declared_categories, categories::derive(&rec).to_vec_i32());
    assert_eq!(s.purpose, v1::Purpose::InvestigationOther as i32);
    assert_eq!(s.handling, v1::HandlingCode::H1 as i32);
    assert_eq!(s.case_reference, CASE_REF);
    assert_eq!(s.in_reply_to, in_reply_to);
    assert_eq!((s.created_at_ms, s.expires_at_ms), (CREATED, EXPIRES));
    assert_eq!(s.header_sha256, sha256(&sealed.envelope.header).to_vec());
    assert_eq!(s.ciphertext_len, sealed.envelope.ciphertext.len() as u64);
}

#[test]
fn unverified_summary_reports_forged_claims() {
    let fx = Fx::new();
    let sealed = fx.seal("HR/police", &["BA/police"], &record("wanted_alert.json"));
    let mut env = sealed.envelope.clone();
    resign(&mut env, &fx.node("RS").sign, |h| {
        h.sender_agency = "HR/customs".into();
        h.labels = None;
        h.ciphertext_sha256 = vec![9; 32];
    });
    env.ciphertext.truncate(5);
    let s = unverified_summary(&env).expect("parses");
    assert_eq!(s.sender_node, "HR");
    assert_eq!(s.sender_agency, "HR/customs");
    assert_eq!(
        (s.purpose, s.handling, s.case_reference.as_str()),
        (0, 0, "")
    );
    assert_eq!(s.ciphertext_sha256, vec![9; 32]);
    assert_eq!(s.ciphertext_len, 5);
    assert_eq!(s.header_sha256, sha256(&env.header).to_vec());
    assert_eq!(fx.verify_err(&env), EnvelopeError::BadSignature(cc("HR")));
}

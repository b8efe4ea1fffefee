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
                previous: vec![],
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
        recipient_key_sha256: keys::hpke_key_sha256(&dir.node(node).expect("node").hpke_key)
            .to_vec(),
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

#[path = "envelope_tests/receipt_tests.rs"]
mod receipt;
#[path = "envelope_tests/rotation_tests.rs"]
mod rotation;
#[path = "envelope_tests/sealing_tests.rs"]
mod sealing;
#[path = "envelope_tests/verify_tests.rs"]
mod verify;

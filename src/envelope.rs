//! Sealing, signing, verifying and opening envelopes, and signing receipts.
//!
//! This is the pure core of casebridge's end-to-end protection: no sockets,
//! no files, no clocks (the caller passes the time). The sender seals a
//! record under a fresh AES-256-GCM data key, wraps that key with HPKE for
//! each recipient node and signs the header bytes with Ed25519. Anyone with
//! the directory can [`verify`] a header; only a recipient node's HPKE key
//! can [`open`] the payload.

use std::collections::{BTreeMap, BTreeSet};

use hpke::{Deserializable as _, Serializable as _};
use prost::Message as _;
use ring::aead::{self, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::digest;
use ring::rand::{SecureRandom as _, SystemRandom};

use crate::categories::{self, CategorySet};
use crate::directory::Directory;
use crate::ids::{AgencyId, Country, EnvelopeId};
use crate::keys::{self, HpkeKem, HpkePrivateKey, SigningKey};
use crate::proto::v1;

/// The header format this code writes and accepts.
pub const HEADER_VERSION: u32 = 1;
const HEADER_DOMAIN: &[u8] = b"casebridge/v1 envelope-header\0";
const RECEIPT_DOMAIN: &[u8] = b"casebridge/v1 receipt\0";
const WRAP_INFO: &[u8] = b"casebridge/v1 data-key\0";
const NONCE_LEN: usize = 12;

type Aead = hpke::aead::AesGcm256;
type Kdf = hpke::kdf::HkdfSha256;

/// Every way an envelope or receipt can fail a check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("header is not a valid EnvelopeHeader protobuf")]
    MalformedHeader,
    #[error("unsupported header version {0} (this node speaks {HEADER_VERSION})")]
    UnsupportedVersion(u32),
    #[error("invalid header field: {0}")]
    InvalidField(String),
    #[error("sending node {0} is not in the directory")]
    UnknownNode(Country),
    #[error("node {0} is revoked or outside its validity period")]
    InactiveNode(Country),
    #[error("signature does not verify with node {0}'s signing key")]
    BadSignature(Country),
    #[error("ciphertext does not match the SHA-256 bound in the signed header")]
    CiphertextMismatch,
    #[error("agency {0} is not in the directory")]
    UnknownAgency(AgencyId),
    #[error("agency {0} is revoked")]
    RevokedAgency(AgencyId),
    #[error("sender agency {agency} does not belong to sending node {node}")]
    ForeignSenderAgency { agency: AgencyId, node: Country },
    #[error("wrapped keys do not match the recipient nodes: {0}")]
    WrappedKeys(String),
    #[error("record expired at {expires_at_ms} (now {now_ms})")]
    Expired { expires_at_ms: i64, now_ms: i64 },
    #[error("node {0} is not a recipient of this envelope")]
    NotARecipient(Country),
    #[error("cannot unwrap the data key: {0}")]
    Unwrap(&'static str),
    #[error("payload does not decrypt under the unwrapped data key")]
    Decrypt,
    #[error("payload is not a valid CaseRecord protobuf")]
    MalformedRecord,
    #[error("record body is {found:?} but the header declares {declared:?}")]
    KindMismatch { declared: v1::RecordKind, found: Option<v1::RecordKind> },
    #[error("content holds undeclared data categories: {}", names(.0))]
    UndeclaredCategories(Vec<v1::DataCategory>),
    #[error("receipt body is not a valid ReceiptBody protobuf")]
    MalformedReceipt,
    #[error("receipt signature does not verify with node {0}'s signing key")]
    BadReceiptSignature(Country),
    #[error("record has no body")]
    EmptyRecord,
    #[error("crypto failure while sealing")]
    Seal,
}

fn names(cats: &[v1::DataCategory]) -> String {
    cats.iter().map(|c| categories::short_name(*c)).collect::<Vec<_>>().join(", ")
}

/// What an agency asks its node to send.
pub struct SealInput<'a> {
    pub sender: &'a AgencyId,
    pub recipients: &'a [AgencyId],
    pub record: &'a v1::CaseRecord,
    pub labels: v1::Labels,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
}

/// A sealed envelope with what the sender needs to track it.
pub struct Sealed {
    pub id: EnvelopeId,
    pub envelope: v1::Envelope,
    pub categories: CategorySet,
}

/// Seals `input` for its recipients, declaring the categories derived from
/// the content.
pub fn seal(input: &SealInput<'_>, key: &SigningKey, dir: &Directory) -> Result<Sealed, EnvelopeError> {
    let derived = categories::derive(input.record);
    seal_declaring(input, derived, key, dir)
}

/// Seals with the categories given rather than the derived ones.
///
/// A correct node never needs this: it exists so that tests and the demo can
/// play a node that lies about its content, which the receiving node must
/// catch.
pub fn seal_declaring(
    input: &SealInput<'_>,
    declared: CategorySet,
    key: &SigningKey,
    dir: &Directory,
) -> Result<Sealed, EnvelopeError> {
    let kind = categories::record_kind(input.record).ok_or(EnvelopeError::EmptyRecord)?;
    let id = EnvelopeId::generate();
    let rng = SystemRandom::new();

    let mut data_key = [0u8; 32];
    rng.fill(&mut data_key).map_err(|_| EnvelopeError::Seal)?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| EnvelopeError::Seal)?;
    let aead_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &data_key).map_err(|_| EnvelopeError::Seal)?);
    let mut buf = input.record.encode_to_vec();
    aead_key
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(id.as_bytes()), &mut buf)
        .map_err(|_| EnvelopeError::Seal)?;
    let mut ciphertext = nonce.to_vec();
    ciphertext.extend_from_slice(&buf);

    let nodes: BTreeSet<Country> = input.recipients.iter().map(AgencyId::country).collect();
    let mut wrapped_keys = Vec::with_capacity(nodes.len());
    for cc in nodes {
        let node = dir.node(cc).ok_or(EnvelopeError::UnknownNode(cc))?;
        let (enc, sealed_key) = hpke::single_shot_seal::<Aead, Kdf, HpkeKem, _>(
            &hpke::OpModeS::Base,
            &node.hpke_key,
            &wrap_info(&id, cc),
            &data_key,
            &[],
            &mut rand_core::UnwrapErr(rand_core::OsRng),
        )
        .map_err(|_| EnvelopeError::Seal)?;
        wrapped_keys.push(v1::WrappedKey {
            node: cc.to_string(),
            encapsulated_key: enc.to_bytes().to_vec(),
            sealed_key,
        });
    }

    let header = v1::EnvelopeHeader {
        version: HEADER_VERSION,
        envelope_id: id.as_bytes().to_vec(),
        sender_node: input.sender.country().to_string(),
        sender_agency: input.sender.to_string(),
        recipients: input.recipients.iter().map(ToString::to_string).collect(),
        kind: kind as i32,
        declared_categories: declared.to_vec_i32(),
        labels: Some(input.labels.clone()),
        created_at_ms: input.created_at_ms,
        expires_at_ms: input.expires_at_ms,
        ciphertext_sha256: sha256(&ciphertext).to_vec(),
        wrapped_keys,
    };
    let header = header.encode_to_vec();
    let signature = key.sign(&header_signing_input(&header));
    Ok(Sealed {
        id,
        envelope: v1::Envelope { header, signature, ciphertext },
        categories: declared,
    })
}

/// A header whose signature, ciphertext binding, sender and recipients have
/// been checked against the directory. Only [`verify`] builds one.
#[derive(Debug, Clone)]
pub struct VerifiedHeader {
    pub id: EnvelopeId,
    pub sender_node: Country,
    pub sender_agency: AgencyId,
    pub recipients: Vec<AgencyId>,
    pub kind: v1::RecordKind,
    pub categories: CategorySet,
    pub labels: v1::Labels,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub header_sha256: [u8; 32],
    pub ciphertext_sha256: [u8; 32],
    pub ciphertext_len: u64,
    /// One wrapped key per recipient node.
    pub wrapped_keys: BTreeMap<Country, v1::WrappedKey>,
}

impl VerifiedHeader {
    /// The recipient nodes, one per country among the recipients.
    pub fn recipient_nodes(&self) -> impl Iterator<Item = &Country> {
        self.wrapped_keys.keys()
    }

    /// The recipients served by node `cc`.
    pub fn recipients_at(&self, cc: Country) -> Vec<AgencyId> {
        self.recipients.iter().filter(|a| a.country() == cc).cloned().collect()
    }

    /// The header's metadata as an audit event records it.
    pub fn summary(&self) -> v1::EnvelopeSummary {
        v1::EnvelopeSummary {
            envelope_id: self.id.as_bytes().to_vec(),
            sender_node: self.sender_node.to_string(),
            sender_agency: self.sender_agency.to_string(),
            recipients: self.recipients.iter().map(ToString::to_string).collect(),
            kind: self.kind as i32,
            declared_categories: self.categories.to_vec_i32(),
            purpose: self.labels.purpose,
            legal_basis: self.labels.legal_basis,
            handling: self.labels.handling,
            classification: self.labels.classification,
            priority: self.labels.priority,
            case_reference: self.labels.case_reference.clone(),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.expires_at_ms,
            header_sha256: self.header_sha256.to_vec(),
            ciphertext_sha256: self.ciphertext_sha256.to_vec(),
            ciphertext_len: self.ciphertext_len,
            in_reply_to: self.labels.in_reply_to.clone(),
        }
    }
}

/// Parses a header without trusting it, for refusal audit events. Returns the
/// summary of whatever it claims, or None if it does not parse.
pub fn unverified_summary(env: &v1::Envelope) -> Option<v1::EnvelopeSummary> {
    let h = v1::EnvelopeHeader::decode(env.header.as_slice()).ok()?;
    let labels = h.labels.unwrap_or_default();
    Some(v1::EnvelopeSummary {
        envelope_id: h.envelope_id,
        sender_node: h.sender_node,
        sender_agency: h.sender_agency,
        recipients: h.recipients,
        kind: h.kind,
        declared_categories: h.declared_categories,
        purpose: labels.purpose,
        legal_basis: labels.legal_basis,
        handling: labels.handling,
        classification: labels.classification,
        priority: labels.priority,
        case_reference: labels.case_reference,
        created_at_ms: h.created_at_ms,
        expires_at_ms: h.expires_at_ms,
        header_sha256: sha256(&env.header).to_vec(),
        ciphertext_sha256: h.ciphertext_sha256,
        ciphertext_len: env.ciphertext.len() as u64,
        in_reply_to: labels.in_reply_to,
    })
}

/// Verifies an envelope's header against the directory at time `now_ms`:
/// signature by the sending node, ciphertext binding, sender agency,
/// recipients, wrapped keys, labels and expiry. Never re-encodes the header.
pub fn verify(env: &v1::Envelope, dir: &Directory, now_ms: i64) -> Result<VerifiedHeader, EnvelopeError> {
    let h = v1::EnvelopeHeader::decode(env.header.as_slice()).map_err(|_| EnvelopeError::MalformedHeader)?;
    if h.version != HEADER_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(h.version));
    }
    let sender_node: Country = h
        .sender_node
        .parse()
        .map_err(|e| EnvelopeError::InvalidField(format!("sender_node: {e}")))?;
    let node = dir.node(sender_node).ok_or(EnvelopeError::UnknownNode(sender_node))?;
    if !node.active_at(now_ms) {
        return Err(EnvelopeError::InactiveNode(sender_node));
    }
    if !keys::verify_ed25519(&node.signing_key, &header_signing_input(&env.header), &env.signature) {
        return Err(EnvelopeError::BadSignature(sender_node));
    }
    // From here on the header is what the sending node signed.
    if h.ciphertext_sha256.as_slice() != sha256(&env.ciphertext) {
        return Err(EnvelopeError::CiphertextMismatch);
    }
    let id = EnvelopeId::from_bytes(&h.envelope_id)
        .map_err(|e| EnvelopeError::InvalidField(format!("envelope_id: {e}")))?;
    let sender_agency: AgencyId = h
        .sender_agency
        .parse()
        .map_err(|e| EnvelopeError::InvalidField(format!("sender_agency: {e}")))?;
    if sender_agency.country() != sender_node {
        return Err(EnvelopeError::ForeignSenderAgency { agency: sender_agency, node: sender_node });
    }
    check_agency(dir, &sender_agency)?;

    if h.recipients.is_empty() {
        return Err(EnvelopeError::InvalidField("no recipients".into()));
    }
    let mut recipients = Vec::with_capacity(h.recipients.len());
    let mut seen = BTreeSet::new();
    for r in &h.recipients {
        let a: AgencyId = r.parse().map_err(|e| EnvelopeError::InvalidField(format!("recipient: {e}")))?;
        if !seen.insert(a.clone()) {
            return Err(EnvelopeError::InvalidField(format!("recipient {a} listed twice")));
        }
        if a == sender_agency {
            return Err(EnvelopeError::InvalidField(format!("recipient {a} is the sender")));
        }
        check_agency(dir, &a)?;
        let rn = dir.node(a.country()).ok_or(EnvelopeError::UnknownNode(a.country()))?;
        if !rn.active_at(now_ms) {
            return Err(EnvelopeError::InactiveNode(a.country()));
        }
        recipients.push(a);
    }

    let nodes: BTreeSet<Country> = recipients.iter().map(AgencyId::country).collect();
    let mut wrapped_keys = BTreeMap::new();
    for w in h.wrapped_keys {
        let cc: Country = w
            .node
            .parse()
            .map_err(|e| EnvelopeError::WrappedKeys(format!("{e}")))?;
        if !nodes.contains(&cc) {
            return Err(EnvelopeError::WrappedKeys(format!("key for {cc}, which serves no recipient")));
        }
        if wrapped_keys.insert(cc, w).is_some() {
            return Err(EnvelopeError::WrappedKeys(format!("two keys for {cc}")));
        }
    }
    if let Some(missing) = nodes.iter().find(|cc| !wrapped_keys.contains_key(cc)) {
        return Err(EnvelopeError::WrappedKeys(format!("no key for recipient node {missing}")));
    }

    let kind = v1::RecordKind::try_from(h.kind)
        .ok()
        .filter(|k| *k != v1::RecordKind::Unspecified)
        .ok_or_else(|| EnvelopeError::InvalidField(format!("kind {}", h.kind)))?;
    let mut cats = CategorySet::new();
    for c in h.declared_categories {
        let c = v1::DataCategory::try_from(c)
            .ok()
            .filter(|c| *c != v1::DataCategory::Unspecified)
            .ok_or_else(|| EnvelopeError::InvalidField(format!("data category {c}")))?;
        cats.insert(c);
    }
    let labels = h.labels.ok_or_else(|| EnvelopeError::InvalidField("no labels".into()))?;
    check_labels(&labels)?;
    if h.expires_at_ms <= h.created_at_ms {
        return Err(EnvelopeError::InvalidField("expires_at is not after created_at".into()));
    }
    if h.expires_at_ms <= now_ms {
        return Err(EnvelopeError::Expired { expires_at_ms: h.expires_at_ms, now_ms });
    }
    Ok(VerifiedHeader {
        id,
        sender_node,
        sender_agency,
        recipients,
        kind,
        categories: cats,
        labels,
        created_at_ms: h.created_at_ms,
        expires_at_ms: h.expires_at_ms,
        header_sha256: sha256(&env.header),
        ciphertext_sha256: sha256(&env.ciphertext),
        ciphertext_len: env.ciphertext.len() as u64,
        wrapped_keys,
    })
}

fn check_agency(dir: &Directory, a: &AgencyId) -> Result<(), EnvelopeError> {
    match dir.agency(a) {
        None => Err(EnvelopeError::UnknownAgency(a.clone())),
        Some(info) if info.revoked => Err(EnvelopeError::RevokedAgency(a.clone())),
        Some(_) => Ok(()),
    }
}

/// Checks that the labels are complete and well formed. Used by the sending
/// node before sealing and by every verifier after.
pub fn check_labels(l: &v1::Labels) -> Result<(), EnvelopeError> {
    let bad = |what: &str| Err(EnvelopeError::InvalidField(what.to_string()));
    if !matches!(v1::Purpose::try_from(l.purpose), Ok(p) if p != v1::Purpose::Unspecified) {
        return bad("purpose is missing or unknown");
    }
    if !matches!(v1::LegalBasis::try_from(l.legal_basis), Ok(b) if b != v1::LegalBasis::Unspecified) {
        return bad("legal basis is missing or unknown");
    }
    let handling = match v1::HandlingCode::try_from(l.handling) {
        Ok(h) if h != v1::HandlingCode::Unspecified => h,
        _ => return bad("handling code is missing or unknown"),
    };
    if handling == v1::HandlingCode::H3 && l.handling_restriction.trim().is_empty() {
        return bad("handling code H3 needs the provider's restriction text");
    }
    if handling != v1::HandlingCode::H3 && !l.handling_restriction.is_empty() {
        return bad("a restriction text is only carried with handling code H3");
    }
    if v1::Classification::try_from(l.classification).is_err() {
        return bad("classification is unknown");
    }
    if v1::Priority::try_from(l.priority).is_err() {
        return bad("priority is unknown");
    }
    if let Some(e) = &l.evaluation {
        if v1::SourceReliability::try_from(e.source).is_err()
            || v1::InformationAccuracy::try_from(e.accuracy).is_err()
        {
            return bad("4x4 evaluation is unknown");
        }
    }
    if l.case_reference.len() > 128 {
        return bad("case reference is longer than 128 bytes");
    }
    if l.handling_restriction.len() > 4096 {
        return bad("restriction text is longer than 4096 bytes");
    }
    if !l.in_reply_to.is_empty() && l.in_reply_to.parse::<EnvelopeId>().is_err() {
        return bad("in_reply_to is not an envelope id");
    }
    Ok(())
}

/// A record opened by its recipient node, content checked against the header.
pub struct Opened {
    pub record: v1::CaseRecord,
    pub derived: CategorySet,
}

/// Opens a verified envelope with recipient node `me`'s HPKE key, then checks
/// the content: the body's kind must match the header and its derived
/// categories must be within those declared.
pub fn open(
    env: &v1::Envelope,
    header: &VerifiedHeader,
    me: Country,
    hpke_key: &HpkePrivateKey,
) -> Result<Opened, EnvelopeError> {
    let wrapped = header.wrapped_keys.get(&me).ok_or(EnvelopeError::NotARecipient(me))?;
    let enc = <HpkeKem as hpke::Kem>::EncappedKey::from_bytes(&wrapped.encapsulated_key)
        .map_err(|_| EnvelopeError::Unwrap("malformed encapsulated key"))?;
    let data_key = hpke::single_shot_open::<Aead, Kdf, HpkeKem>(
        &hpke::OpModeR::Base,
        hpke_key,
        &enc,
        &wrap_info(&header.id, me),
        &wrapped.sealed_key,
        &[],
    )
    .map_err(|_| EnvelopeError::Unwrap("HPKE open failed"))?;
    if data_key.len() != 32 || env.ciphertext.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(EnvelopeError::Decrypt);
    }
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &data_key).map_err(|_| EnvelopeError::Decrypt)?);
    let (nonce, body) = env.ciphertext.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| EnvelopeError::Decrypt)?;
    let mut buf = body.to_vec();
    let plain = key
        .open_in_place(nonce, aead::Aad::from(header.id.as_bytes()), &mut buf)
        .map_err(|_| EnvelopeError::Decrypt)?;
    let record = v1::CaseRecord::decode(&*plain).map_err(|_| EnvelopeError::MalformedRecord)?;
    let found = categories::record_kind(&record);
    if found != Some(header.kind) {
        return Err(EnvelopeError::KindMismatch { declared: header.kind, found });
    }
    let derived = categories::derive(&record);
    let undeclared: Vec<_> = derived.difference(&header.categories).iter().collect();
    if !undeclared.is_empty() {
        return Err(EnvelopeError::UndeclaredCategories(undeclared));
    }
    Ok(Opened { record, derived })
}

/// Signs a receipt with the recipient node's key.
pub fn sign_receipt(body: &v1::ReceiptBody, key: &SigningKey) -> v1::SignedReceipt {
    let bytes = body.encode_to_vec();
    let signature = key.sign(&domain_hash(RECEIPT_DOMAIN, &bytes));
    v1::SignedReceipt { body: bytes, signature }
}

/// Verifies a receipt against the key of the node it names.
pub fn verify_receipt(r: &v1::SignedReceipt, dir: &Directory) -> Result<v1::ReceiptBody, EnvelopeError> {
    let body = v1::ReceiptBody::decode(r.body.as_slice()).map_err(|_| EnvelopeError::MalformedReceipt)?;
    let cc: Country = body
        .recipient_node
        .parse()
        .map_err(|e| EnvelopeError::InvalidField(format!("receipt node: {e}")))?;
    let node = dir.node(cc).ok_or(EnvelopeError::UnknownNode(cc))?;
    if !keys::verify_ed25519(&node.signing_key, &domain_hash(RECEIPT_DOMAIN, &r.body), &r.signature) {
        return Err(EnvelopeError::BadReceiptSignature(cc));
    }
    Ok(body)
}

fn header_signing_input(header: &[u8]) -> [u8; 32] {
    domain_hash(HEADER_DOMAIN, header)
}

fn domain_hash(domain: &[u8], bytes: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(domain);
    ctx.update(bytes);
    to32(ctx.finish().as_ref())
}

fn wrap_info(id: &EnvelopeId, node: Country) -> Vec<u8> {
    let mut info = WRAP_INFO.to_vec();
    info.extend_from_slice(id.as_bytes());
    info.extend_from_slice(node.as_str().as_bytes());
    info
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    to32(digest::digest(&digest::SHA256, bytes).as_ref())
}

fn to32(b: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(b);
    out
}

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

use crate::protocol::bounds::{self, Bounds, Exceeded};
use crate::protocol::categories::{self, CategorySet};
use crate::protocol::directory::Directory;
use crate::protocol::ids::{AgencyId, Country, EnvelopeId};
use crate::protocol::keys::{self, HpkeKem, HpkePrivateKey, SigningKey};
use crate::protocol::proto::v1;

/// The header format this code writes and accepts.
pub const HEADER_VERSION: u32 = 1;
const HEADER_DOMAIN: &[u8] = b"casebridge/v1 envelope-header\0";
const RECEIPT_DOMAIN: &[u8] = b"casebridge/v1 receipt\0";
const WRAP_INFO: &[u8] = b"casebridge/v1 data-key\0";
const KEY_COMMITMENT_DOMAIN: &[u8] = b"casebridge/v1 data-key-commitment\0";
const NONCE_LEN: usize = bounds::NONCE_LEN;

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
    #[error(
        "ciphertext is {0} bytes long; nonce and tag alone take {min}",
        min = NONCE_LEN + bounds::TAG_LEN
    )]
    ShortCiphertext(usize),
    #[error("{0}")]
    OutOfBounds(#[from] Exceeded),
    #[error(
        "data_key_sha256 is {0} bytes long; a header commits to its data key with a 32-byte SHA-256"
    )]
    KeyCommitmentLength(usize),
    #[error("agency {0} is not in the directory")]
    UnknownAgency(AgencyId),
    #[error("agency {0} is revoked")]
    RevokedAgency(AgencyId),
    #[error("sender agency {agency} does not belong to sending node {node}")]
    ForeignSenderAgency { agency: AgencyId, node: Country },
    #[error("wrapped keys do not match the recipient nodes: {0}")]
    WrappedKeys(String),
    #[error(
        "the data key for {node} is wrapped to HPKE key {key}, which is neither {node}'s current \
         key nor a retired one still within its overlap"
    )]
    RecipientKeyNotAccepted { node: Country, key: String },
    #[error("record expired at {expires_at_ms} (now {now_ms})")]
    Expired { expires_at_ms: i64, now_ms: i64 },
    #[error("node {0} is not a recipient of this envelope")]
    NotARecipient(Country),
    #[error("cannot unwrap the data key: {0}")]
    Unwrap(&'static str),
    #[error("the data key wrapped for this node is not the one the signed header commits to")]
    KeyCommitmentMismatch,
    #[error("payload does not decrypt under the unwrapped data key")]
    Decrypt,
    #[error("payload is not a valid CaseRecord protobuf")]
    MalformedRecord,
    #[error(
        "the record is a {} but the header declares a {}",
        found.map_or("record of no kind", categories::kind_short_name),
        categories::kind_short_name(*declared)
    )]
    KindMismatch {
        declared: v1::RecordKind,
        found: Option<v1::RecordKind>,
    },
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
    cats.iter()
        .map(|c| categories::short_name(*c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What an agency asks its node to send.
pub struct SealInput<'a> {
    pub sender: &'a AgencyId,
    pub recipients: &'a [AgencyId],
    pub record: &'a v1::CaseRecord,
    pub labels: v1::Labels,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    /// The record this one passes on, if it does.
    pub onward_of: Option<EnvelopeId>,
    /// The scope of a permission request or grant.
    pub permission: Option<v1::PermissionScope>,
}

/// A sealed envelope with what the sender needs to track it.
pub struct Sealed {
    pub id: EnvelopeId,
    pub envelope: v1::Envelope,
    pub categories: CategorySet,
}

/// Seals `input` for its recipients, declaring the categories derived from
/// the content.
pub fn seal(
    input: &SealInput<'_>,
    key: &SigningKey,
    dir: &Directory,
) -> Result<Sealed, EnvelopeError> {
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
    let id = EnvelopeId::at(input.created_at_ms);
    let rng = SystemRandom::new();

    let mut data_key = [0u8; 32];
    rng.fill(&mut data_key).map_err(|_| EnvelopeError::Seal)?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| EnvelopeError::Seal)?;
    let aead_key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &data_key).map_err(|_| EnvelopeError::Seal)?,
    );
    // nonce ‖ record, sealed in place behind the nonce, then the tag: the
    // record is encoded once, into the buffer that becomes the ciphertext.
    let mut ciphertext =
        Vec::with_capacity(NONCE_LEN + input.record.encoded_len() + AES_256_GCM.tag_len());
    ciphertext.extend_from_slice(&nonce);
    input
        .record
        .encode(&mut ciphertext)
        .map_err(|_| EnvelopeError::Seal)?;
    let tag = aead_key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(id.as_bytes()),
            &mut ciphertext[NONCE_LEN..],
        )
        .map_err(|_| EnvelopeError::Seal)?;
    ciphertext.extend_from_slice(tag.as_ref());

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
            recipient_key_sha256: keys::hpke_key_sha256(&node.hpke_key).to_vec(),
        });
    }

    let header = header_of(
        input,
        kind,
        &declared,
        id.as_bytes(),
        sha256(&ciphertext),
        key_commitment(&id, &data_key),
        wrapped_keys,
    );
    let header = header.encode_to_vec();
    let signature = sign_header(&header, key);
    Ok(Sealed {
        id,
        envelope: v1::Envelope {
            header,
            signature,
            ciphertext,
        },
        categories: declared,
    })
}

/// The header [`seal`] signs for `input`.
fn header_of(
    input: &SealInput<'_>,
    kind: v1::RecordKind,
    declared: &CategorySet,
    id: &[u8; bounds::ENVELOPE_ID_LEN],
    ciphertext_sha256: [u8; 32],
    data_key_sha256: [u8; 32],
    wrapped_keys: Vec<v1::WrappedKey>,
) -> v1::EnvelopeHeader {
    v1::EnvelopeHeader {
        version: HEADER_VERSION,
        envelope_id: id.to_vec(),
        sender_node: input.sender.country().to_string(),
        sender_agency: input.sender.to_string(),
        recipients: input.recipients.iter().map(ToString::to_string).collect(),
        kind: kind as i32,
        declared_categories: declared.to_vec_i32(),
        labels: Some(input.labels.clone()),
        created_at_ms: input.created_at_ms,
        expires_at_ms: input.expires_at_ms,
        ciphertext_sha256: ciphertext_sha256.to_vec(),
        wrapped_keys,
        onward_of: input
            .onward_of
            .map(|id| id.as_bytes().to_vec())
            .unwrap_or_default(),
        permission: input.permission.clone(),
        data_key_sha256: data_key_sha256.to_vec(),
    }
}

/// The size, as the broker counts it (header + signature + ciphertext), of
/// the envelope [`seal`] makes of `input`, computed without sealing: every
/// field that sealing fills in has a fixed length.
pub fn sealed_len(input: &SealInput<'_>) -> Result<usize, EnvelopeError> {
    let kind = categories::record_kind(input.record).ok_or(EnvelopeError::EmptyRecord)?;
    let nodes: BTreeSet<Country> = input.recipients.iter().map(AgencyId::country).collect();
    let wrapped_keys = nodes
        .into_iter()
        .map(|cc| v1::WrappedKey {
            node: cc.to_string(),
            encapsulated_key: vec![0; bounds::ENCAPSULATED_KEY_LEN],
            sealed_key: vec![0; bounds::SEALED_KEY_LEN],
            recipient_key_sha256: vec![0; bounds::DIGEST_LEN],
        })
        .collect();
    let declared = categories::derive(input.record);
    let header = header_of(
        input,
        kind,
        &declared,
        &[0; bounds::ENVELOPE_ID_LEN],
        [0; 32],
        [0; 32],
        wrapped_keys,
    );
    Ok(header.encoded_len()
        + bounds::SIGNATURE_LEN
        + NONCE_LEN
        + input.record.encoded_len()
        + bounds::TAG_LEN)
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
    /// The record this one passes on, if it does.
    pub onward_of: Option<EnvelopeId>,
    /// The scope of a permission request or grant.
    pub permission: Option<Permission>,
    /// The signed commitment to the data key.
    pub data_key_sha256: [u8; 32],
}

/// A checked permission scope: `grantee` may pass `original` on to
/// `third_agencies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permission {
    pub original: EnvelopeId,
    pub grantee: AgencyId,
    pub third_agencies: Vec<AgencyId>,
}

impl Permission {
    fn parse(p: &v1::PermissionScope, bounds: &Bounds) -> Result<Permission, EnvelopeError> {
        let bad = |what: String| EnvelopeError::InvalidField(format!("permission scope: {what}"));
        bounds::check_len(
            "permission.original_envelope_id",
            &p.original_envelope_id,
            bounds::ENVELOPE_ID_LEN,
        )?;
        bounds::check_len(
            "permission.grantee",
            p.grantee.as_bytes(),
            bounds::MAX_AGENCY_ID,
        )?;
        bounds::check_strings(
            "permission.third_agencies",
            &p.third_agencies,
            bounds.max_recipients,
            bounds::MAX_AGENCY_ID,
        )?;
        let original =
            EnvelopeId::from_bytes(&p.original_envelope_id).map_err(|e| bad(e.to_string()))?;
        let grantee: AgencyId = p
            .grantee
            .parse()
            .map_err(|e: crate::protocol::ids::IdError| bad(e.to_string()))?;
        if p.third_agencies.is_empty() {
            return Err(bad("no third agencies".into()));
        }
        let mut third_agencies: Vec<AgencyId> = Vec::with_capacity(p.third_agencies.len());
        for a in &p.third_agencies {
            let a: AgencyId = a
                .parse()
                .map_err(|e: crate::protocol::ids::IdError| bad(e.to_string()))?;
            if third_agencies.contains(&a) {
                return Err(bad(format!("third agency {a} listed twice")));
            }
            third_agencies.push(a);
        }
        Ok(Permission {
            original,
            grantee,
            third_agencies,
        })
    }

    pub fn to_proto(&self) -> v1::PermissionScope {
        v1::PermissionScope {
            original_envelope_id: self.original.as_bytes().to_vec(),
            grantee: self.grantee.to_string(),
            third_agencies: self
                .third_agencies
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }
}

impl VerifiedHeader {
    /// The SHA-256 of the HPKE public key node `cc`'s data key is wrapped
    /// to (checked by [`verify`] to be one the directory accepts), so that
    /// the node picks the private key that opens it.
    pub fn wrapped_to(&self, cc: Country) -> Option<[u8; 32]> {
        let w = self.wrapped_keys.get(&cc)?;
        w.recipient_key_sha256.as_slice().try_into().ok()
    }

    /// The recipient nodes, one per country among the recipients.
    pub fn recipient_nodes(&self) -> impl Iterator<Item = &Country> {
        self.wrapped_keys.keys()
    }

    /// The recipients served by node `cc`.
    pub fn recipients_at(&self, cc: Country) -> Vec<AgencyId> {
        self.recipients
            .iter()
            .filter(|a| a.country() == cc)
            .cloned()
            .collect()
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
            onward_of: self
                .onward_of
                .map(|id| id.as_bytes().to_vec())
                .unwrap_or_default(),
            provider: self.labels.provider.clone(),
            transfer_ground: self.labels.transfer_ground,
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
        onward_of: h.onward_of,
        provider: labels.provider,
        transfer_ground: labels.transfer_ground,
    })
}

/// [`verify_within`] the default [`Bounds`].
pub fn verify(
    env: &v1::Envelope,
    dir: &Directory,
    now_ms: i64,
) -> Result<VerifiedHeader, EnvelopeError> {
    verify_within(env, dir, now_ms, &Bounds::default())
}

/// Verifies an envelope's header against the directory at time `now_ms`:
/// the bounds of every field, signature by the sending node, ciphertext
/// binding, sender agency, recipients, wrapped keys, the data-key
/// commitment's presence, labels and expiry. Never re-encodes the header.
pub fn verify_within(
    env: &v1::Envelope,
    dir: &Directory,
    now_ms: i64,
    bounds: &Bounds,
) -> Result<VerifiedHeader, EnvelopeError> {
    let h = v1::EnvelopeHeader::decode(env.header.as_slice())
        .map_err(|_| EnvelopeError::MalformedHeader)?;
    if h.version != HEADER_VERSION {
        return Err(EnvelopeError::UnsupportedVersion(h.version));
    }
    check_bounds(&h, bounds)?;
    let sender_node: Country = h
        .sender_node
        .parse()
        .map_err(|e| EnvelopeError::InvalidField(format!("sender_node: {e}")))?;
    let node = dir
        .node(sender_node)
        .ok_or(EnvelopeError::UnknownNode(sender_node))?;
    if !node.active_at(now_ms) {
        return Err(EnvelopeError::InactiveNode(sender_node));
    }
    // The node's current key, or a retired one within its overlap: a
    // record signed before a rotation reached its signer still verifies.
    let signed = header_signing_input(&env.header);
    if !node
        .signing_keys_at(now_ms)
        .any(|k| keys::verify_ed25519(k, &signed, &env.signature))
    {
        return Err(EnvelopeError::BadSignature(sender_node));
    }
    // From here on the header is what the sending node signed.
    let ciphertext_sha256 = sha256(&env.ciphertext);
    if h.ciphertext_sha256.as_slice() != ciphertext_sha256 {
        return Err(EnvelopeError::CiphertextMismatch);
    }
    if env.ciphertext.len() < NONCE_LEN + bounds::TAG_LEN {
        return Err(EnvelopeError::ShortCiphertext(env.ciphertext.len()));
    }
    let data_key_sha256: [u8; 32] = h
        .data_key_sha256
        .as_slice()
        .try_into()
        .map_err(|_| EnvelopeError::KeyCommitmentLength(h.data_key_sha256.len()))?;
    let id = EnvelopeId::from_bytes(&h.envelope_id)
        .map_err(|e| EnvelopeError::InvalidField(format!("envelope_id: {e}")))?;
    let sender_agency: AgencyId = h
        .sender_agency
        .parse()
        .map_err(|e| EnvelopeError::InvalidField(format!("sender_agency: {e}")))?;
    if sender_agency.country() != sender_node {
        return Err(EnvelopeError::ForeignSenderAgency {
            agency: sender_agency,
            node: sender_node,
        });
    }
    check_agency(dir, &sender_agency)?;

    if h.recipients.is_empty() {
        return Err(EnvelopeError::InvalidField("no recipients".into()));
    }
    let mut recipients = Vec::with_capacity(h.recipients.len());
    let mut seen = BTreeSet::new();
    for r in &h.recipients {
        let a: AgencyId = r
            .parse()
            .map_err(|e| EnvelopeError::InvalidField(format!("recipient: {e}")))?;
        if !seen.insert(a.clone()) {
            return Err(EnvelopeError::InvalidField(format!(
                "recipient {a} listed twice"
            )));
        }
        if a == sender_agency {
            return Err(EnvelopeError::InvalidField(format!(
                "recipient {a} is the sender"
            )));
        }
        check_agency(dir, &a)?;
        let rn = dir
            .node(a.country())
            .ok_or(EnvelopeError::UnknownNode(a.country()))?;
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
            return Err(EnvelopeError::WrappedKeys(format!(
                "key for {cc}, which serves no recipient"
            )));
        }
        if w.encapsulated_key.len() != bounds::ENCAPSULATED_KEY_LEN
            || w.sealed_key.len() != bounds::SEALED_KEY_LEN
        {
            return Err(EnvelopeError::WrappedKeys(format!(
                "key for {cc} has a {}-byte encapsulated key and a {}-byte sealed key; they are {} and {} bytes",
                w.encapsulated_key.len(),
                w.sealed_key.len(),
                bounds::ENCAPSULATED_KEY_LEN,
                bounds::SEALED_KEY_LEN
            )));
        }
        if w.recipient_key_sha256.len() != bounds::DIGEST_LEN {
            return Err(EnvelopeError::WrappedKeys(format!(
                "key for {cc} names its recipient key with {} bytes; it takes the key's 32-byte SHA-256",
                w.recipient_key_sha256.len()
            )));
        }
        let rn = dir.node(cc).ok_or(EnvelopeError::UnknownNode(cc))?;
        if !rn.accepts_hpke_key(&w.recipient_key_sha256, now_ms) {
            return Err(EnvelopeError::RecipientKeyNotAccepted {
                node: cc,
                key: hex_prefix(&w.recipient_key_sha256),
            });
        }
        if wrapped_keys.insert(cc, w).is_some() {
            return Err(EnvelopeError::WrappedKeys(format!("two keys for {cc}")));
        }
    }
    if let Some(missing) = nodes.iter().find(|cc| !wrapped_keys.contains_key(cc)) {
        return Err(EnvelopeError::WrappedKeys(format!(
            "no key for recipient node {missing}"
        )));
    }

    let kind = v1::RecordKind::try_from(h.kind)
        .ok()
        .filter(|k| *k != v1::RecordKind::Unspecified)
        .ok_or_else(|| EnvelopeError::InvalidField(format!("kind {}", h.kind)))?;
    let cats =
        categories::parse_declared("declared_categories", &h.declared_categories).map_err(|e| {
            match e {
                categories::ListError::TooMany(e) => EnvelopeError::OutOfBounds(e),
                e => EnvelopeError::InvalidField(e.to_string()),
            }
        })?;
    let labels = h
        .labels
        .ok_or_else(|| EnvelopeError::InvalidField("no labels".into()))?;
    check_labels(&labels)?;
    if labels.expires_at_ms != 0 && labels.expires_at_ms != h.expires_at_ms {
        return Err(EnvelopeError::InvalidField(
            "labels.expires_at_ms disagrees with the header's expires_at_ms".into(),
        ));
    }
    if h.expires_at_ms <= h.created_at_ms {
        return Err(EnvelopeError::InvalidField(
            "expires_at is not after created_at".into(),
        ));
    }
    if h.expires_at_ms <= now_ms {
        return Err(EnvelopeError::Expired {
            expires_at_ms: h.expires_at_ms,
            now_ms,
        });
    }
    let onward_of = if h.onward_of.is_empty() {
        None
    } else {
        Some(
            EnvelopeId::from_bytes(&h.onward_of)
                .map_err(|e| EnvelopeError::InvalidField(format!("onward_of: {e}")))?,
        )
    };
    let permission = h
        .permission
        .as_ref()
        .map(|p| Permission::parse(p, bounds))
        .transpose()?;
    let is_permission_kind = matches!(
        kind,
        v1::RecordKind::PermissionRequest | v1::RecordKind::PermissionGrant
    );
    match (&permission, is_permission_kind) {
        (None, true) => {
            return Err(EnvelopeError::InvalidField(
                "a permission message needs a permission scope".into(),
            ));
        }
        (Some(_), false) => {
            return Err(EnvelopeError::InvalidField(
                "only permission messages carry a permission scope".into(),
            ));
        }
        _ => {}
    }
    if let Some(p) = &permission {
        let recipient_is_grantee = recipients.len() == 1 && recipients[0] == p.grantee;
        let ok = match kind {
            // The grantee asks; the grant goes back to the grantee.
            v1::RecordKind::PermissionRequest => p.grantee == sender_agency,
            _ => recipient_is_grantee,
        };
        if !ok {
            return Err(EnvelopeError::InvalidField(format!(
                "permission scope names grantee {} which does not fit this {}",
                p.grantee,
                categories::kind_short_name(kind)
            )));
        }
        if onward_of.is_some() {
            return Err(EnvelopeError::InvalidField(
                "a permission message is not an onward transfer".into(),
            ));
        }
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
        ciphertext_sha256,
        ciphertext_len: env.ciphertext.len() as u64,
        wrapped_keys,
        onward_of,
        permission,
        data_key_sha256,
    })
}

/// The lengths and counts of a header's fields, checked before anything
/// else is done with them. Labels are bounded by [`check_labels`], the
/// permission scope by its parser.
fn check_bounds(h: &v1::EnvelopeHeader, b: &Bounds) -> Result<(), EnvelopeError> {
    use bounds::{check_count, check_len, check_strings};
    if h.envelope_id.len() != bounds::ENVELOPE_ID_LEN {
        return Err(EnvelopeError::InvalidField(format!(
            "envelope_id: {} bytes long; an envelope id is {}",
            h.envelope_id.len(),
            bounds::ENVELOPE_ID_LEN
        )));
    }
    check_len("sender_node", h.sender_node.as_bytes(), bounds::COUNTRY_LEN)?;
    check_len(
        "sender_agency",
        h.sender_agency.as_bytes(),
        bounds::MAX_AGENCY_ID,
    )?;
    check_strings(
        "recipients",
        &h.recipients,
        b.max_recipients,
        bounds::MAX_AGENCY_ID,
    )?;
    check_count(
        "declared_categories",
        h.declared_categories.len(),
        categories::CATEGORY_COUNT,
    )?;
    check_count("wrapped_keys", h.wrapped_keys.len(), b.max_recipients)?;
    check_len(
        "ciphertext_sha256",
        &h.ciphertext_sha256,
        bounds::DIGEST_LEN,
    )?;
    check_len("onward_of", &h.onward_of, bounds::ENVELOPE_ID_LEN)?;
    if h.data_key_sha256.len() != bounds::DIGEST_LEN {
        return Err(EnvelopeError::KeyCommitmentLength(h.data_key_sha256.len()));
    }
    Ok(())
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
    bounds::check_len(
        "labels.legal_basis_reference",
        l.legal_basis_reference.as_bytes(),
        bounds::MAX_LEGAL_BASIS_REFERENCE,
    )?;
    bounds::check_len(
        "labels.case_reference",
        l.case_reference.as_bytes(),
        bounds::MAX_CASE_REFERENCE,
    )?;
    bounds::check_len(
        "labels.handling_restriction",
        l.handling_restriction.as_bytes(),
        bounds::MAX_HANDLING_RESTRICTION,
    )?;
    bounds::check_len(
        "labels.in_reply_to",
        l.in_reply_to.as_bytes(),
        bounds::MAX_ENVELOPE_ID_TEXT,
    )?;
    if !matches!(v1::Purpose::try_from(l.purpose), Ok(p) if p != v1::Purpose::Unspecified) {
        return bad("purpose is missing or unknown");
    }
    if !matches!(v1::LegalBasis::try_from(l.legal_basis), Ok(b) if b != v1::LegalBasis::Unspecified)
    {
        return bad("legal basis is missing or unknown");
    }
    if v1::TransferGround::try_from(l.transfer_ground).is_err() {
        return bad("third-country transfer ground is unknown");
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
    let wrapped = header
        .wrapped_keys
        .get(&me)
        .ok_or(EnvelopeError::NotARecipient(me))?;
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
    // Every recipient must read the same record: only the key the signed
    // header commits to may open the payload.
    if !constant_time_eq(
        &key_commitment(&header.id, &data_key),
        &header.data_key_sha256,
    ) {
        return Err(EnvelopeError::KeyCommitmentMismatch);
    }
    if data_key.len() != 32 || env.ciphertext.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(EnvelopeError::Decrypt);
    }
    let key = LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, &data_key).map_err(|_| EnvelopeError::Decrypt)?,
    );
    let (nonce, body) = env.ciphertext.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| EnvelopeError::Decrypt)?;
    let mut buf = body.to_vec();
    let plain = key
        .open_in_place(nonce, aead::Aad::from(header.id.as_bytes()), &mut buf)
        .map_err(|_| EnvelopeError::Decrypt)?;
    let record = v1::CaseRecord::decode(&*plain).map_err(|_| EnvelopeError::MalformedRecord)?;
    let found = categories::record_kind(&record);
    if found != Some(header.kind) {
        return Err(EnvelopeError::KindMismatch {
            declared: header.kind,
            found,
        });
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
    v1::SignedReceipt {
        body: bytes,
        signature,
    }
}

/// Verifies a receipt against the keys of the node it names at `now_ms`:
/// its current key, or a retired one still within its overlap.
pub fn verify_receipt(
    r: &v1::SignedReceipt,
    dir: &Directory,
    now_ms: i64,
) -> Result<v1::ReceiptBody, EnvelopeError> {
    bounds::check_len("receipt body", &r.body, bounds::MAX_RECEIPT_BODY)?;
    let body =
        v1::ReceiptBody::decode(r.body.as_slice()).map_err(|_| EnvelopeError::MalformedReceipt)?;
    bounds::check_len("receipt reason", body.reason.as_bytes(), bounds::MAX_REASON)?;
    bounds::check_strings(
        "receipt delivered_to",
        &body.delivered_to,
        bounds::MAX_RECIPIENTS_CEILING,
        bounds::MAX_AGENCY_ID,
    )?;
    let cc: Country = body
        .recipient_node
        .parse()
        .map_err(|e| EnvelopeError::InvalidField(format!("receipt node: {e}")))?;
    let node = dir.node(cc).ok_or(EnvelopeError::UnknownNode(cc))?;
    let signed = domain_hash(RECEIPT_DOMAIN, &r.body);
    if !node
        .signing_keys_at(now_ms)
        .any(|k| keys::verify_ed25519(k, &signed, &r.signature))
    {
        return Err(EnvelopeError::BadReceiptSignature(cc));
    }
    Ok(body)
}

/// Signs serialized header bytes as a node does: Ed25519 over the
/// domain-separated SHA-256 of the bytes.
pub fn sign_header(header: &[u8], key: &SigningKey) -> Vec<u8> {
    key.sign(&header_signing_input(header))
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

/// The commitment to a data key that a header carries:
/// SHA-256("casebridge/v1 data-key-commitment\0" || envelope id || data key).
pub fn key_commitment(id: &EnvelopeId, data_key: &[u8]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(KEY_COMMITMENT_DOMAIN);
    ctx.update(id.as_bytes());
    ctx.update(data_key);
    to32(ctx.finish().as_ref())
}

/// Compares two digests without a branch on their contents. (ring's own
/// comparison is deprecated and makes no promise about timing.)
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn wrap_info(id: &EnvelopeId, node: Country) -> Vec<u8> {
    let mut info = WRAP_INFO.to_vec();
    info.extend_from_slice(id.as_bytes());
    info.extend_from_slice(node.as_str().as_bytes());
    info
}

/// The first bytes of a digest in hex, to name a key in an error.
fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
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

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;

//! The hostile-node harness: lets a test act as any party of a running
//! in-process federation (`support::start`), with that party's real
//! certificate and keys from the federation's PKI directory, or with
//! certificates it mints itself, and craft what a dishonest party would
//! send.
//!
//! Everything here is built from the library and the files `pki init`
//! writes; nothing is mocked. It has four parts:
//!
//! - **Identities and clients** ([`Who`], [`mint`], [`exchange_client_as`],
//!   [`audit_client_as`], [`agency_client_as`], [`health_client_as`],
//!   [`reflection_client_as`], [`handshake`]): a gRPC client of any service
//!   holding any party's certificate, including the wrong one: an agency's
//!   certificate on the Exchange API, a node's on the Audit API or on another
//!   node's Agency API, the broker's as a client, a certificate the wrong CA
//!   issued, or one from a CA the federation never heard of.
//! - **Keys** ([`node_keys`], [`directory_key`], [`log_key`]): the
//!   application keys a compromised node (or the directory authority, or the
//!   broker's log) holds.
//! - **Crafting** ([`seal_as`], [`resign`], [`break_signature`],
//!   [`swap_ciphertext`], [`flip_ciphertext`], [`reencode_header`],
//!   [`receipt_for`], [`sign_receipt_as`], [`cosign_as`],
//!   [`sign_checkpoint_with`], [`purge_report`], [`refusal_report`]):
//!   envelopes sealed and signed with a node's real keys and then mutated,
//!   receipts, checkpoints and cosignatures with arbitrary content, purge and
//!   refusal reports.
//! - **Assertions** ([`assert_status`], [`log_size`], [`audit_events_since`],
//!   [`Snapshot`], [`still_serves`]): the exact status and a fragment of its
//!   message; that nothing changed but the refusal events a case promises;
//!   and that the federation still serves an honest send afterwards.
//!
//! The module is self-contained (it uses only `support` for starting
//! federations and waiting) so that other adversarial files can use it as
//! it is.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use casebridge::daemon::tls::{ClientTls, Identity};
use casebridge::protocol::envelope::{self, SealInput, Sealed};
use casebridge::protocol::ids::{AgencyId, Country, EnvelopeId, Role};
use casebridge::protocol::keys::{HpkePrivateKey, SigningKey};
use casebridge::protocol::note::{self, Checkpoint, Cosigner, NoteSigner};
use casebridge::protocol::proto::v1;
use prost::Message as _;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::support::{self, Fed, cc};

/// Largest message the harness's clients send or accept: big enough for
/// any test, so the server's limits, not the client's, decide.
const CLIENT_MAX: usize = 256 << 20;

// ---------------------------------------------------------------------
// Identities
// ---------------------------------------------------------------------

/// A party whose certificate a client presents.
#[derive(Clone, Debug)]
pub enum Who {
    /// The broker's own certificate, used as a client.
    Broker,
    /// A node's certificate, e.g. `Node("HR")`.
    Node(&'static str),
    /// An agency's certificate, e.g. `Agency("HR/police")`.
    Agency(&'static str),
    /// An auditor's certificate, e.g. `Auditor("auditor")`.
    Auditor(&'static str),
    /// A certificate made by [`mint`].
    Minted {
        label: String,
        cert: PathBuf,
        key: PathBuf,
    },
}

impl Who {
    /// The certificate chain and key files of this party.
    pub fn files(&self, fed: &Fed) -> (PathBuf, PathBuf) {
        let d = &fed.fed.dir;
        match self {
            Who::Broker => (d.join("broker/broker.crt"), d.join("broker/broker.key")),
            Who::Node(c) => {
                let cfg = &fed.node_configs[&cc(c)];
                (cfg.tls.cert.clone(), cfg.tls.key.clone())
            }
            Who::Agency(a) => {
                let dir = d.join("agencies").join(a);
                (dir.join("agency.crt"), dir.join("agency.key"))
            }
            Who::Auditor(n) => {
                let dir = d.join("auditors").join(n);
                (dir.join("auditor.crt"), dir.join("auditor.key"))
            }
            Who::Minted { cert, key, .. } => (cert.clone(), key.clone()),
        }
    }

    /// A short description for assertion messages.
    pub fn label(&self) -> String {
        match self {
            Who::Broker => "the broker".into(),
            Who::Node(c) => format!("node {c}"),
            Who::Agency(a) => format!("agency {a}"),
            Who::Auditor(n) => format!("auditor {n}"),
            Who::Minted { label, .. } => label.clone(),
        }
    }

    fn identity(&self, fed: &Fed) -> Identity {
        let (cert, key) = self.files(fed);
        Identity::load(&cert, &key).expect("identity files")
    }
}

/// Who issues a certificate made by [`mint`].
#[derive(Clone, Copy, Debug)]
pub enum Issuer {
    /// The federation root CA (as for brokers, nodes and auditors).
    Root,
    /// A country's national CA (as for that country's agencies).
    National(&'static str),
    /// A CA the federation does not know, made on the spot.
    Stranger,
}

static MINTED: AtomicU64 = AtomicU64::new(0);

/// Issues a certificate carrying `uris` as its URI SANs (a SPIFFE id is
/// one; none or two are mistakes a CA could make), signed by `issuer`, as
/// a CA insider or an outsider would. Both EKUs are set, as `pki init` sets
/// them. The files live in the federation's directory, so they last as
/// long as `fed`.
pub fn mint(fed: &Fed, issuer: Issuer, uris: &[&str]) -> Who {
    let n = MINTED.fetch_add(1, Ordering::Relaxed);
    let out = fed.fed.dir.join("minted");
    std::fs::create_dir_all(&out).expect("minted dir");
    let (issuer_rc, chain_tail) = match issuer {
        Issuer::Root => (
            ca_from(
                &fed.fed.dir.join("ca/root.crt"),
                &fed.fed.dir.join("ca/root.key"),
            ),
            String::new(),
        ),
        Issuer::National(c) => {
            let dir = fed.fed.dir.join("ca").join(c);
            let pem = std::fs::read_to_string(dir.join("ca.crt")).expect("national CA");
            (ca_from(&dir.join("ca.crt"), &dir.join("ca.key")), pem)
        }
        Issuer::Stranger => {
            let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "stranger root CA");
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            let key = rcgen::KeyPair::generate().expect("key");
            p.self_signed(&key).expect("stranger CA");
            (rcgen::Issuer::new(p, key), String::new())
        }
    };
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name
        .push(rcgen::DnType::CommonName, format!("minted {n}"));
    for uri in uris {
        p.subject_alt_names
            .push(rcgen::SanType::URI((*uri).try_into().expect("URI")));
    }
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, &issuer_rc).expect("sign");
    let (c, k) = (
        out.join(format!("minted-{n}.crt")),
        out.join(format!("minted-{n}.key")),
    );
    std::fs::write(&c, cert.pem() + &chain_tail).expect("write cert");
    casebridge::storage::files::keys::write_secret(&k, key.serialize_pem().as_bytes())
        .expect("write key");
    Who::Minted {
        label: format!("a certificate for {uris:?} issued by {issuer:?}"),
        cert: c,
        key: k,
    }
}

fn ca_from(cert: &Path, key: &Path) -> rcgen::Issuer<'static, rcgen::KeyPair> {
    let pem = std::fs::read_to_string(cert).expect("CA certificate");
    let key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(key).expect("CA key")).expect("CA key");
    rcgen::Issuer::from_ca_cert_pem(&pem, key).expect("CA")
}

/// The SPIFFE id of `role` in `fed`'s trust domain.
pub fn spiffe(fed: &Fed, role: &Role) -> String {
    role.spiffe_uri(&fed.broker_config.federation)
}

// ---------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------

/// A server of the federation a client can dial.
#[derive(Clone, Copy, Debug)]
pub enum Server {
    Broker,
    Node(&'static str),
}

impl Server {
    fn addr_and_role(self, fed: &Fed) -> (SocketAddr, Role) {
        match self {
            Server::Broker => (fed.broker_addr, Role::Broker),
            Server::Node(c) => (
                fed.node_addr(cc(c)).expect("node address"),
                Role::Node(cc(c)),
            ),
        }
    }
}

/// A lazily connecting channel to `server` presenting `who`'s certificate.
/// The client side checks the server as the library always does.
pub fn channel_as(fed: &Fed, who: &Who, server: Server) -> Channel {
    let (addr, role) = server.addr_and_role(fed);
    let root = casebridge::daemon::tls::load_certs(&fed.broker_config.tls.root)
        .expect("root")
        .remove(0);
    ClientTls::new(&who.identity(fed), &root, &fed.broker_config.federation)
        .expect("client TLS")
        .channel(&addr.to_string(), role)
        .expect("channel")
}

/// An Exchange API client of the broker holding `who`'s certificate.
pub fn exchange_client_as(
    fed: &Fed,
    who: &Who,
) -> casebridge::daemon::rpc::exchange_client::ExchangeClient<Channel> {
    casebridge::daemon::rpc::exchange_client::ExchangeClient::new(channel_as(
        fed,
        who,
        Server::Broker,
    ))
    .max_decoding_message_size(CLIENT_MAX)
    .max_encoding_message_size(CLIENT_MAX)
}

/// An Audit API client of the broker holding `who`'s certificate.
pub fn audit_client_as(
    fed: &Fed,
    who: &Who,
) -> casebridge::daemon::rpc::audit_client::AuditClient<Channel> {
    casebridge::daemon::rpc::audit_client::AuditClient::new(channel_as(fed, who, Server::Broker))
        .max_decoding_message_size(CLIENT_MAX)
        .max_encoding_message_size(CLIENT_MAX)
}

/// An Agency API client of node `node` holding `who`'s certificate.
pub fn agency_client_as(
    fed: &Fed,
    who: &Who,
    node: &'static str,
) -> casebridge::daemon::rpc::agency_client::AgencyClient<Channel> {
    casebridge::daemon::rpc::agency_client::AgencyClient::new(channel_as(
        fed,
        who,
        Server::Node(node),
    ))
    .max_decoding_message_size(CLIENT_MAX)
    .max_encoding_message_size(CLIENT_MAX)
}

/// A gRPC health client of `server` holding `who`'s certificate.
pub fn health_client_as(
    fed: &Fed,
    who: &Who,
    server: Server,
) -> tonic_health::pb::health_client::HealthClient<Channel> {
    tonic_health::pb::health_client::HealthClient::new(channel_as(fed, who, server))
}

/// A gRPC reflection client of `server` holding `who`'s certificate.
pub fn reflection_client_as(
    fed: &Fed,
    who: &Who,
    server: Server,
) -> tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient<Channel> {
    tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(channel_as(
        fed, who, server,
    ))
}

/// What became of a raw TLS connection attempt.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    /// The server completed the handshake and spoke HTTP/2.
    Accepted,
    /// The server refused with this TLS alert.
    Alert(rustls::AlertDescription),
    /// The connection ended some other way.
    Other(String),
}

/// Connects to `server` with plain rustls (TLS 1.3, trusting the federation
/// root), presenting `who`'s certificate or none, sends the HTTP/2 preface
/// and reads. In TLS 1.3 a client learns that its certificate was refused
/// on its first read, as a fatal alert.
pub async fn handshake(fed: &Fed, who: Option<&Who>, server: Server) -> Handshake {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (addr, _) = server.addr_and_role(fed);
    let root = casebridge::daemon::tls::load_certs(&fed.broker_config.tls.root).expect("root");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root[0].clone()).expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(casebridge::daemon::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots);
    let mut config = match who {
        None => builder.with_no_client_auth(),
        Some(w) => {
            let id = w.identity(fed);
            builder
                .with_client_auth_cert(id.chain, id.key)
                .expect("client cert")
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let result = async {
        let mut tls = connector.connect(name, tcp).await?;
        tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
        tls.flush().await?;
        let mut buf = [0u8; 9];
        tls.read(&mut buf).await
    }
    .await;
    match result {
        Ok(n) if n > 0 => Handshake::Accepted,
        Ok(_) => Handshake::Other("connection closed without an alert".into()),
        Err(e) => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::AlertReceived(a)) => Handshake::Alert(*a),
            _ => Handshake::Other(e.to_string()),
        },
    }
}

// ---------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------

/// A node's application keys, as a compromised node holds them.
pub struct NodeKeys {
    pub country: Country,
    pub signing: SigningKey,
    pub hpke: HpkePrivateKey,
}

/// Loads node `c`'s signing and HPKE keys from the PKI directory.
pub fn node_keys(fed: &Fed, c: &str) -> NodeKeys {
    let cfg = &fed.node_configs[&cc(c)];
    NodeKeys {
        country: cc(c),
        signing: casebridge::storage::files::keys::load_signing_key(&cfg.keys.signing)
            .expect("signing key"),
        hpke: casebridge::storage::files::keys::load_hpke(&cfg.keys.hpke).expect("HPKE key"),
    }
}

/// The federation's directory-signing key.
pub fn directory_key(fed: &Fed) -> SigningKey {
    casebridge::storage::files::keys::load_signing_key(&fed.fed.dir.join("ca/directory.key"))
        .expect("directory key")
}

/// The broker's checkpoint-signing key.
pub fn log_key(fed: &Fed) -> SigningKey {
    casebridge::storage::files::keys::load_signing_key(&fed.broker_config.log_key).expect("log key")
}

// ---------------------------------------------------------------------
// Crafting
// ---------------------------------------------------------------------

/// Seals `record` from `from` to `to` with the sending node's real keys,
/// created now and expiring in a day, exactly as an honest node would, but
/// without the node's pre-checks (policy, retention, duplicates).
pub fn seal_as(
    fed: &Fed,
    from: &str,
    to: &[&str],
    record: &v1::CaseRecord,
    labels: v1::Labels,
) -> Sealed {
    seal_with(fed, from, to, record, labels, |_| {})
}

/// As [`seal_as`], letting `edit` change the input before sealing (onward
/// transfers, permissions, times).
pub fn seal_with(
    fed: &Fed,
    from: &str,
    to: &[&str],
    record: &v1::CaseRecord,
    labels: v1::Labels,
    edit: impl FnOnce(&mut SealInput<'_>),
) -> Sealed {
    let sender: AgencyId = from.parse().expect("sender");
    let recipients: Vec<AgencyId> = to.iter().map(|a| a.parse().expect("recipient")).collect();
    let now = casebridge::daemon::clock::now_ms();
    let mut input = SealInput {
        sender: &sender,
        recipients: &recipients,
        record,
        labels,
        created_at_ms: now,
        expires_at_ms: now + 86_400_000,
        onward_of: None,
        permission: None,
    };
    edit(&mut input);
    let keys = node_keys(fed, sender.country().as_str());
    envelope::seal(&input, &keys.signing, &support::directory(fed)).expect("seal")
}

/// The header of `env`, decoded.
pub fn header_of(env: &v1::Envelope) -> v1::EnvelopeHeader {
    v1::EnvelopeHeader::decode(env.header.as_slice()).expect("header")
}

/// `env` with its header changed by `edit`, re-encoded and re-signed with
/// `key` (a node's real key: the signature is valid; only the content is
/// dishonest). The ciphertext stays.
pub fn resign(
    env: &v1::Envelope,
    key: &SigningKey,
    edit: impl FnOnce(&mut v1::EnvelopeHeader),
) -> v1::Envelope {
    let mut h = header_of(env);
    edit(&mut h);
    let header = h.encode_to_vec();
    v1::Envelope {
        signature: envelope::sign_header(&header, key),
        header,
        ciphertext: env.ciphertext.clone(),
    }
}

/// `env` with one bit of its signature flipped.
pub fn break_signature(env: &v1::Envelope) -> v1::Envelope {
    let mut e = env.clone();
    if let Some(b) = e.signature.first_mut() {
        *b ^= 0x01;
    }
    e
}

/// `env` carrying `other`'s ciphertext under its own signed header.
pub fn swap_ciphertext(env: &v1::Envelope, other: &v1::Envelope) -> v1::Envelope {
    let mut e = env.clone();
    e.ciphertext.clone_from(&other.ciphertext);
    e
}

/// `env` with one bit of its ciphertext flipped.
pub fn flip_ciphertext(env: &v1::Envelope) -> v1::Envelope {
    let mut e = env.clone();
    if let Some(b) = e.ciphertext.last_mut() {
        *b ^= 0x80;
    }
    e
}

/// `env` with its header bytes re-encoded so that they decode to the same
/// header but differ as bytes (an unknown field appended), signature kept:
/// a verifier that re-encoded before checking would accept it.
pub fn reencode_header(env: &v1::Envelope) -> v1::Envelope {
    let mut e = env.clone();
    let mut header = header_of(env).encode_to_vec();
    // Field 1000, varint 1: ignored by prost, but not by the signature.
    header.extend_from_slice(&[0xC0, 0x3E, 0x01]);
    e.header = header;
    e
}

/// A receipt body answering `env` as node `node` would.
pub fn receipt_for(
    env: &v1::Envelope,
    node: &str,
    status: v1::ReceiptStatus,
    delivered_to: &[&str],
) -> v1::ReceiptBody {
    let h = header_of(env);
    v1::ReceiptBody {
        envelope_id: h.envelope_id,
        recipient_node: node.into(),
        status: status as i32,
        code: 0,
        reason: String::new(),
        delivered_to: delivered_to.iter().map(ToString::to_string).collect(),
        at_ms: casebridge::daemon::clock::now_ms(),
        header_sha256: envelope::sha256(&env.header).to_vec(),
    }
}

/// Signs any receipt body with node `node`'s real key.
pub fn sign_receipt_as(fed: &Fed, node: &str, body: &v1::ReceiptBody) -> v1::SignedReceipt {
    envelope::sign_receipt(body, &node_keys(fed, node).signing)
}

/// The broker's latest checkpoint (signed note bytes) and its size.
pub async fn latest_checkpoint(fed: &Fed) -> Option<(u64, Vec<u8>)> {
    let store = &fed.broker().expect("broker running").store;
    store.latest_checkpoint().await.expect("checkpoint")
}

/// Waits until the broker has signed a checkpoint covering the whole log.
pub async fn checkpoint_covering_log(fed: &Fed) -> (u64, Vec<u8>) {
    let want = log_size(fed).await;
    support::until("a checkpoint covering the log", || async move {
        latest_checkpoint(fed)
            .await
            .filter(|(size, _)| *size >= want)
    })
    .await
}

/// The checkpoint text (body only) of a signed note.
pub fn checkpoint_text(note_bytes: &[u8]) -> String {
    note::Note::parse(note_bytes)
        .expect("note")
        .text()
        .to_string()
}

/// A C2SP cosignature line over `checkpoint_text`, made with node `node`'s
/// real key under its witness name, as of `timestamp` (seconds).
pub fn cosign_as(fed: &Fed, node: &str, checkpoint_text: &str, timestamp: u64) -> String {
    let name =
        casebridge::protocol::transparency::witness_name(&fed.broker_config.federation, cc(node));
    let cosigner = Cosigner::new(&name, node_keys(fed, node).signing).expect("cosigner");
    let cp = Checkpoint::parse(checkpoint_text).expect("checkpoint");
    cosigner.cosign(&cp, timestamp).expect("cosign").to_line()
}

/// A signed checkpoint note for `origin`, `size` and `root`, signed with
/// `key` under the origin's name (the log's key makes a valid one; any
/// other key a forgery).
pub fn sign_checkpoint_with(key: SigningKey, origin: &str, size: u64, root: [u8; 32]) -> Vec<u8> {
    let cp = Checkpoint::new(origin, size, root).expect("checkpoint");
    let signer = NoteSigner::new(origin, key).expect("signer");
    note::sign_checkpoint(&cp, &signer)
        .expect("sign checkpoint")
        .to_bytes()
}

/// A purge report naming `ids`.
pub fn purge_report(ids: &[EnvelopeId]) -> v1::PurgeReport {
    v1::PurgeReport {
        envelope_ids: ids.iter().map(|i| i.as_bytes().to_vec()).collect(),
    }
}

/// A refusal report as node `node` would send for `sender_agency`, with an
/// explanation of the caller's choosing.
pub fn refusal_report(node: &str, sender_agency: &str, explanation: &str) -> v1::RefusalReport {
    let now = casebridge::daemon::clock::now_ms();
    v1::RefusalReport {
        transfer: Some(v1::EnvelopeSummary {
            sender_node: node.into(),
            sender_agency: sender_agency.into(),
            recipients: vec!["RS/police".into()],
            kind: v1::RecordKind::WantedAlert as i32,
            purpose: v1::Purpose::InvestigationOther as i32,
            created_at_ms: now,
            expires_at_ms: now + 86_400_000,
            ..Default::default()
        }),
        policy_bundle_hash: "0".repeat(64),
        policy_explanation: explanation.into(),
    }
}

// ---------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------

/// Asserts that `result` failed with exactly `code` and a message holding
/// `fragment`; returns the status for further checks.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    fragment: &str,
) -> Status {
    match result {
        Ok(v) => panic!("expected {code:?} ({fragment:?}), got success: {v:?}"),
        Err(s) => {
            assert_eq!(
                s.code(),
                code,
                "expected {code:?} ({fragment:?}), got {:?}: {}",
                s.code(),
                s.message()
            );
            assert!(
                s.message().contains(fragment),
                "expected a message containing {fragment:?}, got {:?}",
                s.message()
            );
            s
        }
    }
}

/// The number of entries in the broker's audit log.
pub async fn log_size(fed: &Fed) -> u64 {
    let store = &fed.broker().expect("broker running").store;
    store.audit_len().await.expect("audit length")
}

/// The audit events appended since the log had `n` entries.
pub async fn audit_events_since(fed: &Fed, n: u64) -> Vec<v1::AuditEvent> {
    let store = &fed.broker().expect("broker running").store;
    store
        .audit_range(n, store.audit_len().await.expect("audit length"))
        .await
        .expect("audit range")
}

/// What a hostile call must not change: the audit log's size, the broker's
/// queues, and each running node's inboxes, outbox and sent records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub log: u64,
    /// Items queued at the broker per node.
    pub queues: BTreeMap<String, usize>,
    /// Inbox entries per agency, at running nodes.
    pub inboxes: BTreeMap<String, usize>,
    /// Sent records per agency, at running nodes.
    pub sent: BTreeMap<String, usize>,
    /// Outbox entries per running node.
    pub outboxes: BTreeMap<String, usize>,
}

impl Snapshot {
    /// Reads the state now.
    pub async fn take(fed: &Fed) -> Snapshot {
        let broker = fed.broker().expect("broker running");
        let dir = support::directory(fed);
        let mut s = Snapshot {
            log: broker.store.audit_len().await.expect("audit length"),
            queues: BTreeMap::new(),
            inboxes: BTreeMap::new(),
            sent: BTreeMap::new(),
            outboxes: BTreeMap::new(),
        };
        for n in dir.nodes() {
            let pending = broker
                .store
                .pending(n.country, None, usize::MAX)
                .await
                .expect("pending");
            s.queues.insert(n.country.to_string(), pending.len());
            if let Some(node) = fed.node(n.country) {
                s.outboxes.insert(
                    n.country.to_string(),
                    node.store.outbox().await.expect("outbox").len(),
                );
            }
        }
        for a in dir.agencies() {
            if let Some(node) = fed.node(a.id.country()) {
                let inbox = node
                    .store
                    .inbox(&a.id, None, usize::MAX)
                    .await
                    .expect("inbox");
                s.inboxes.insert(a.id.to_string(), inbox.len());
                let sent = node.store.sent_by(&a.id).await.expect("sent");
                s.sent.insert(a.id.to_string(), sent.len());
            }
        }
        s
    }

    /// Waits until no queue or outbox holds anything (every delivery and
    /// receipt was acknowledged), then reads the state.
    pub async fn settled(fed: &Fed) -> Snapshot {
        support::until("queues and outboxes to drain", || async move {
            let s = Snapshot::take(fed).await;
            let idle = s.queues.values().all(|n| *n == 0) && s.outboxes.values().all(|n| *n == 0);
            idle.then_some(s)
        })
        .await
    }

    /// Asserts that nothing changed since this snapshot.
    pub async fn assert_unchanged(&self, fed: &Fed) {
        let now = Snapshot::take(fed).await;
        if now != *self {
            let new = audit_events_since(fed, self.log).await;
            panic!("state changed:\nbefore {self:?}\nafter  {now:?}\nnew events {new:?}");
        }
    }

    /// Asserts that the only change since this snapshot is audit events,
    /// one per entry of `expected`, each satisfying its predicate, in order.
    /// Returns the new events.
    pub async fn assert_only_events(
        &self,
        fed: &Fed,
        expected: &[&dyn Fn(&v1::audit_event::Event) -> bool],
    ) -> Vec<v1::AuditEvent> {
        let now = Snapshot::take(fed).await;
        let new = audit_events_since(fed, self.log).await;
        assert_eq!(
            new.len(),
            expected.len(),
            "expected {} new audit events, got {new:?}",
            expected.len()
        );
        for (e, ok) in new.iter().zip(expected) {
            let ev = e.event.as_ref().expect("event");
            assert!(ok(ev), "unexpected audit event {ev:?}");
        }
        let without_log = Snapshot {
            log: self.log,
            ..now
        };
        assert_eq!(&without_log, self, "only the audit log may change");
        new
    }
}

/// An honest transfer the example policies permit between two running
/// nodes: sender, recipient, record, labels.
fn honest_pair(fed: &Fed) -> (&'static str, &'static str, v1::CaseRecord, v1::Labels) {
    let running = |a: &str| fed.node(cc(&a[..2])).is_some();
    let prosecution = support::labels(
        v1::Purpose::Prosecution,
        v1::LegalBasis::EuropeanMlaConvention,
        v1::HandlingCode::H1,
    );
    let mut regional = support::labels(
        v1::Purpose::InvestigationMigrantSmuggling,
        v1::LegalBasis::RegionalPoliceConvention,
        v1::HandlingCode::H0,
    );
    regional.legal_basis_reference = "Police Cooperation Convention for Southeast Europe".into();
    regional.evaluation = Some(v1::Evaluation {
        source: v1::SourceReliability::B as i32,
        accuracy: v1::InformationAccuracy::InformationAccuracy3 as i32,
    });
    let candidates = [
        (
            "HR/police",
            "RS/police",
            "wanted_alert",
            support::police_to_third_country(),
        ),
        (
            "HR/police",
            "BA/police",
            "wanted_alert",
            support::police_to_third_country(),
        ),
        (
            "BA/missing-persons",
            "HR/missing-persons",
            "missing_person_trace",
            support::humanitarian(),
        ),
        ("RS/prosecutor", "ME/prosecutor", "mla_request", prosecution),
        ("MK/police", "RS/police", "intelligence_report", regional),
    ];
    candidates
        .into_iter()
        .find(|(from, to, _, _)| running(from) && running(to))
        .map(|(from, to, rec, labels)| (from, to, support::record(rec), labels))
        .expect("no known honest pair among the running nodes")
}

/// Runs an honest send → broker → inbox round trip between two running
/// nodes and checks that the record arrives intact: the federation still
/// serves after whatever the test did to it.
pub async fn still_serves(fed: &Fed) {
    let (from, to, record, labels) = honest_pair(fed);
    let resp = support::send(fed, from, &[to], record.clone(), labels).await;
    assert_eq!(
        resp.state,
        v1::SendState::Accepted as i32,
        "an honest send from {from} to {to} must still be accepted: {}",
        resp.detail
    );
    let got = support::until("the honest record in the inbox", || {
        let id = resp.envelope_id.clone();
        async move { support::fetch(fed, to, &id).await.ok() }
    })
    .await;
    assert_eq!(got.record.as_ref(), Some(&record), "content arrives intact");
}

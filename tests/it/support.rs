//! Shared helpers: start a federation, build labels and records, wait for
//! deliveries, and talk to the broker as a node would.

use std::future::Future;
use std::time::Duration;

use casebridge::daemon::tls::{ClientTls, Identity};
use casebridge::protocol::directory::Directory;
use casebridge::protocol::ids::{Country, EnvelopeId, Role};
use casebridge::protocol::keys::SigningKey;
use casebridge::protocol::proto::v1;
use casebridge::tools::local::LocalFederation;
use prost::Message as _;
use tonic::Code;
use tonic::transport::Channel;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;

pub fn cc(s: &str) -> Country {
    s.parse().expect("country code")
}

pub struct Fed {
    pub f: LocalFederation,
    // Dropped last: the stores live here.
    _tmp: tempfile::TempDir,
    _shared: Option<Shared>,
}

/// Held shared by every federation of the suite, and alone by a test that
/// must not overlap them: `casebridge bench` runs a federation of its own
/// processes, whose load and ports would otherwise race with the
/// federations that reserve ports before binding them. A waiting `alone`
/// never blocks a federation (a test may hold two), so it runs when none is
/// left.
#[derive(Default)]
struct Gate {
    /// Federations alive, and whether a test runs alone.
    state: std::sync::Mutex<(usize, bool)>,
    changed: tokio::sync::Notify,
}

static GATE: std::sync::LazyLock<Gate> = std::sync::LazyLock::new(Gate::default);

impl Gate {
    /// Waits until `enter` takes its turn.
    async fn pass(&self, enter: impl Fn(&mut (usize, bool)) -> bool) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if enter(&mut self.state.lock().unwrap_or_else(|p| p.into_inner())) {
                return;
            }
            changed.await;
        }
    }

    fn leave(&self, leave: impl Fn(&mut (usize, bool))) {
        leave(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_waiters();
    }
}

pub struct Shared(());

impl Drop for Shared {
    fn drop(&mut self) {
        GATE.leave(|s| s.0 -= 1);
    }
}

pub struct Alone(());

impl Drop for Alone {
    fn drop(&mut self) {
        GATE.leave(|s| s.1 = false);
    }
}

/// Waits until no federation of the suite runs, and keeps new ones from
/// starting until the guard is dropped.
pub async fn alone() -> Alone {
    GATE.pass(|s| {
        let free = s.0 == 0 && !s.1;
        if free {
            s.1 = true;
        }
        free
    })
    .await;
    Alone(())
}

async fn shared() -> Shared {
    GATE.pass(|s| {
        if !s.1 {
            s.0 += 1;
        }
        !s.1
    })
    .await;
    Shared(())
}

impl std::ops::Deref for Fed {
    type Target = LocalFederation;
    fn deref(&self) -> &LocalFederation {
        &self.f
    }
}
impl std::ops::DerefMut for Fed {
    fn deref_mut(&mut self) -> &mut LocalFederation {
        &mut self.f
    }
}

impl Fed {
    /// Starts the broker, and waits until every running node has found it
    /// (a node that saw the broker go answers Send with QUEUED at once until
    /// its probe finds it again).
    pub async fn start_broker(&mut self) -> anyhow::Result<()> {
        self.f.start_broker().await?;
        let nodes: Vec<_> = self
            .f
            .node_configs
            .keys()
            .filter_map(|c| self.f.node(*c).cloned())
            .collect();
        for n in nodes {
            until("the node finding the broker", || {
                let n = n.clone();
                async move { n.uplink.reachable().then_some(()) }
            })
            .await;
        }
        Ok(())
    }
}

/// Writes a federation of `countries` without starting it.
pub async fn create(countries: &[&str]) -> Fed {
    create_with(countries, 1, Some(shared().await)).await
}

/// [`create`] from `pki init --brokers brokers`.
pub async fn create_with_brokers(countries: &[&str], brokers: usize) -> Fed {
    create_with(countries, brokers, Some(shared().await)).await
}

/// [`create`] for a test that holds [`alone`].
pub async fn create_while_alone(countries: &[&str], brokers: usize, _alone: &Alone) -> Fed {
    create_with(countries, brokers, None).await
}

async fn create_with(countries: &[&str], brokers: usize, shared: Option<Shared>) -> Fed {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cs: Vec<Country> = countries.iter().map(|c| cc(c)).collect();
    let f = LocalFederation::create_with_brokers(tmp.path(), &cs, brokers)
        .await
        .expect("create federation");
    Fed {
        f,
        _tmp: tmp,
        _shared: shared,
    }
}

/// Starts the broker and every node of `fed`.
pub async fn start_all(fed: &mut Fed) {
    fed.start_broker().await.expect("broker");
    let ccs: Vec<Country> = fed.node_configs.keys().copied().collect();
    for c in ccs {
        fed.start_node(c).await.expect("node");
    }
}

pub async fn start(countries: &[&str]) -> Fed {
    let mut fed = create(countries).await;
    start_all(&mut fed).await;
    fed
}

pub fn record(name: &str) -> v1::CaseRecord {
    let path = format!(
        "{}/examples/records/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("example record");
    serde_json::from_str(&text).expect("record JSON")
}

pub fn labels(
    purpose: v1::Purpose,
    basis: v1::LegalBasis,
    handling: v1::HandlingCode,
) -> v1::Labels {
    v1::Labels {
        purpose: purpose as i32,
        legal_basis: basis as i32,
        handling: handling as i32,
        classification: v1::Classification::Restricted as i32,
        priority: v1::Priority::Routine as i32,
        case_reference: "TEST-CASE-1".into(),
        legal_basis_reference: "Test agreement, Art. 5".into(),
        ..Default::default()
    }
}

/// Labels for police transfers from an EU member to a non-member.
/// Police labels for a transfer inside the regional police convention.
pub fn police() -> v1::Labels {
    labels(
        v1::Purpose::InvestigationOther,
        v1::LegalBasis::RegionalPoliceConvention,
        v1::HandlingCode::H0,
    )
}

pub fn police_to_third_country() -> v1::Labels {
    labels(
        v1::Purpose::InvestigationOther,
        v1::LegalBasis::SpecificSituationDerogation,
        v1::HandlingCode::H0,
    )
}

pub fn humanitarian() -> v1::Labels {
    labels(
        v1::Purpose::MissingPersons,
        v1::LegalBasis::HumanitarianAgreement,
        v1::HandlingCode::H0,
    )
}

pub async fn send(
    fed: &Fed,
    from: &str,
    to: &[&str],
    record: v1::CaseRecord,
    labels: v1::Labels,
) -> v1::SendResponse {
    try_send(fed, from, to, record, labels).await.expect("send")
}

/// Fails, with the node's reason, unless the send was accepted.
#[track_caller]
pub fn assert_accepted(resp: &v1::SendResponse) {
    assert_eq!(
        resp.state,
        v1::SendState::Accepted as i32,
        "{}",
        resp.detail
    );
}

pub async fn try_send(
    fed: &Fed,
    from: &str,
    to: &[&str],
    record: v1::CaseRecord,
    labels: v1::Labels,
) -> Result<v1::SendResponse, tonic::Status> {
    let mut c = fed.client(from).expect("client");
    c.api
        .send(v1::SendRequest {
            recipients: to.iter().map(ToString::to_string).collect(),
            record: Some(record),
            labels: Some(labels),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// Polls `f` until it yields Some. Bounded: gives up after 30 s, so a
/// broken delivery path fails the test instead of hanging it. The bound is a
/// safety net, not a measurement.
pub async fn until<T, Fut: Future<Output = Option<T>>>(
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> T {
    for _ in 0..3000 {
        if let Some(v) = f().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting for {what}");
}

/// The sender's status of `id` once no recipient node is pending.
pub async fn settled(fed: &Fed, from: &str, id: &str) -> v1::SendStatus {
    let c = fed.client(from).expect("client");
    until(&format!("receipts for {id}"), || {
        let mut c = c.clone();
        let id = id.to_string();
        async move {
            let s = c
                .api
                .status(v1::StatusRequest { envelope_id: id })
                .await
                .ok()?
                .into_inner();
            let done = !s.recipient_status.is_empty()
                && s.recipient_status
                    .iter()
                    .all(|r| r.state != v1::DeliveryState::Pending as i32);
            done.then_some(s)
        }
    })
    .await
}

pub async fn status(fed: &Fed, from: &str, id: &str) -> v1::SendStatus {
    let mut c = fed.client(from).expect("client");
    c.api
        .status(v1::StatusRequest {
            envelope_id: id.into(),
        })
        .await
        .expect("status")
        .into_inner()
}

pub async fn inbox(fed: &Fed, agency: &str) -> Vec<v1::InboxEntry> {
    let mut c = fed.client(agency).expect("client");
    c.api
        .list_inbox(v1::ListInboxRequest::default())
        .await
        .expect("list inbox")
        .into_inner()
        .entries
}

pub async fn fetch(fed: &Fed, agency: &str, id: &str) -> Result<v1::InboxRecord, tonic::Status> {
    let mut c = fed.client(agency).expect("client");
    c.api
        .fetch(v1::FetchRequest {
            envelope_id: id.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

pub async fn audit(fed: &Fed) -> Vec<v1::AuditEvent> {
    let store = &fed.broker().expect("broker running").store;
    store
        .audit_range(0, store.audit_len().await.expect("len"))
        .await
        .expect("audit")
}

pub fn directory(fed: &Fed) -> Directory {
    let key =
        casebridge::storage::files::directory::load_public_key(&fed.broker_config.directory_key)
            .expect("key");
    casebridge::storage::files::directory::load(
        &fed.broker_config.directory,
        &key,
        &fed.broker_config.federation,
    )
    .expect("dir")
}

pub fn node_signing_key(fed: &Fed, c: &str) -> SigningKey {
    casebridge::storage::files::keys::load_signing_key(&fed.node_configs[&cc(c)].keys.signing)
        .expect("signing key")
}

/// A client of the broker's exchange API holding `cert`/`key`.
pub fn exchange_as(
    fed: &Fed,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> casebridge::daemon::rpc::exchange_client::ExchangeClient<Channel> {
    let id = Identity::load(cert, key).expect("identity");
    let root = casebridge::daemon::tls::load_certs(&fed.broker_config.tls.root)
        .expect("root")
        .remove(0);
    let tls = ClientTls::new(&id, &root, &fed.broker_config.federation).expect("tls");
    let ch = tls
        .channel(&fed.broker_addr.to_string(), Role::Broker)
        .expect("channel");
    casebridge::daemon::rpc::exchange_client::ExchangeClient::new(ch)
}

/// A client of the broker's exchange API as node `c`.
pub fn exchange_as_node(
    fed: &Fed,
    c: &str,
) -> casebridge::daemon::rpc::exchange_client::ExchangeClient<Channel> {
    let cfg = &fed.node_configs[&cc(c)];
    exchange_as(fed, &cfg.tls.cert, &cfg.tls.key)
}

/// Re-signs the federation's directory after `edit`, as the federation's
/// directory authority would.
pub fn edit_directory(fed: &Fed, edit: impl FnOnce(&mut v1::Directory)) {
    resign_directory(fed, |dir| {
        edit(dir);
        dir.version += 1;
    });
}

/// Re-signs the federation's directory after `edit` with the directory key,
/// keeping the version `edit` leaves (a directory key holder who wants an
/// old version number to mean something else does not raise it).
pub fn resign_directory(fed: &Fed, edit: impl FnOnce(&mut v1::Directory)) {
    let key =
        casebridge::storage::files::keys::load_signing_key(&fed.fed.dir.join("ca/directory.key"))
            .expect("directory key");
    let bytes = std::fs::read(&fed.broker_config.directory).expect("directory");
    let signed = v1::SignedDirectory::decode(bytes.as_slice()).expect("signed directory");
    let mut dir = v1::Directory::decode(signed.directory.as_slice()).expect("directory");
    edit(&mut dir);
    let signed = Directory::sign(&dir, &key);
    std::fs::write(&fed.broker_config.directory, signed.encode_to_vec()).expect("write directory");
}

pub fn events_of(events: &[v1::AuditEvent]) -> Vec<&v1::audit_event::Event> {
    events.iter().filter_map(|e| e.event.as_ref()).collect()
}

/// Signs a checkpoint of the broker's log now and returns its size.
pub async fn checkpoint_now(fed: &Fed) -> u64 {
    let b = fed.broker().expect("broker running");
    b.log
        .checkpoint(b.store.as_ref())
        .await
        .expect("checkpoint");
    b.store
        .latest_checkpoint()
        .await
        .expect("read checkpoint")
        .expect("a checkpoint")
        .0
}

/// H2 labels of a regional police exchange (the onward-transfer cases).
/// A prosecutor's MLA request under the European MLA convention, on
/// `ground` for a transfer out of the EU.
pub fn mla_labels(ground: v1::TransferGround) -> v1::Labels {
    let mut l = labels(
        v1::Purpose::Prosecution,
        v1::LegalBasis::EuropeanMlaConvention,
        v1::HandlingCode::H1,
    );
    l.legal_basis_reference =
        "European Convention on Mutual Assistance in Criminal Matters (1959), Art. 1".into();
    l.transfer_ground = ground as i32;
    l
}

pub fn h2_labels() -> v1::Labels {
    let mut l = labels(
        v1::Purpose::InvestigationMigrantSmuggling,
        v1::LegalBasis::RegionalPoliceConvention,
        v1::HandlingCode::H2,
    );
    l.legal_basis_reference = "Police Cooperation Convention for Southeast Europe".into();
    l.evaluation = Some(v1::Evaluation {
        source: v1::SourceReliability::B as i32,
        accuracy: v1::InformationAccuracy::InformationAccuracy3 as i32,
    });
    l
}

/// A request to pass record `id` on to `to`, under the labels it came with.
pub fn forward(id: &str, to: &str) -> v1::ForwardRequest {
    v1::ForwardRequest {
        envelope_id: id.into(),
        recipients: vec![to.into()],
        labels: None,
        ..Default::default()
    }
}

/// `holder` asks the provider for permission to pass `id` on to `to`, the
/// provider grants it, and `holder` passes it on, all through the Agency
/// API. Checks that the request reached the provider, not the agency
/// `holder` got the record from. Returns the record passed on.
pub async fn hop(fed: &Fed, provider: &str, holder: &str, id: &str, to: &str) -> String {
    let mut h = fed.client(holder).unwrap();
    let req = h
        .api
        .request_permission(v1::RequestPermissionRequest {
            envelope_id: id.into(),
            third_agencies: vec![to.into()],
            justification: "the route continues".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(req.state, v1::SendState::Accepted as i32, "{}", req.detail);
    let asked = settled(fed, holder, &req.envelope_id).await;
    assert_eq!(asked.recipients, vec![provider.to_string()]);
    let mut p = fed.client(provider).unwrap();
    let grant = p
        .api
        .grant_permission(v1::GrantPermissionRequest {
            request_envelope_id: req.envelope_id,
            conditions: "H2 stays".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_accepted(&grant);
    settled(fed, provider, &grant.envelope_id).await;
    let onward = h.api.forward(forward(id, to)).await.unwrap().into_inner();
    assert_accepted(&onward);
    settled(fed, holder, &onward.envelope_id).await;
    let got = fetch(fed, to, &onward.envelope_id)
        .await
        .unwrap()
        .entry
        .unwrap();
    assert_eq!(got.onward_of, id);
    assert_eq!(got.sender_agency, holder);
    let labels = got.labels.unwrap();
    assert_eq!(labels.provider, provider, "the provider travels with it");
    assert_eq!(labels.handling, v1::HandlingCode::H2 as i32);
    let r = got.restrictions.unwrap();
    assert!(
        r.no_onward_transfer && r.notices[0].contains(&format!("permission of {provider}")),
        "{r:?}"
    );
    onward.envelope_id
}

/// The services a server lists over gRPC reflection.
pub async fn listed_services(mut c: ServerReflectionClient<Channel>) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = c
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    match stream.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(l)) => {
            l.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("{other:?}"),
    }
}

/// No error message or refusal reason may be longer than this, whatever the
/// input.
pub const SHORT: usize = 512;

/// The start of a message, for assertion output.
pub fn short(s: &str) -> &str {
    let mut end = s.len().min(200);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Checks a refusal's gRPC code and that its message says `says` and is
/// short.
pub fn assert_status(err: &tonic::Status, code: Code, says: &str) {
    assert_eq!(err.code(), code, "{}", short(err.message()));
    assert!(
        err.message().contains(says),
        "message {:?} lacks {says:?}",
        short(err.message())
    );
    assert!(
        err.message().len() <= SHORT,
        "message is {} bytes long",
        err.message().len()
    );
}

/// Submits `env` as node `node` and checks the refusal: gRPC code, a short
/// message saying `says`, the refusal code in the metadata, exactly one new
/// audit event (the refusal, with a short reason saying `says`), nothing
/// queued, and the id not remembered as seen (unless it was refused as a
/// duplicate, whose id was already seen).
pub async fn assert_refused(
    fed: &Fed,
    node: &str,
    env: v1::Envelope,
    code: Code,
    refusal: v1::RefusalCode,
    says: &str,
) {
    let before = audit(fed).await.len();
    let id = v1::EnvelopeHeader::decode(env.header.as_slice())
        .ok()
        .and_then(|h| EnvelopeId::from_bytes(&h.envelope_id).ok());
    let err = exchange_as_node(fed, node)
        .submit(v1::SubmitRequest {
            envelope: Some(env),
        })
        .await
        .expect_err("must be refused");
    assert_status(&err, code, says);
    assert_eq!(
        err.metadata()
            .get("casebridge-refusal")
            .and_then(|v| v.to_str().ok()),
        Some(refusal.as_str_name())
    );
    let events = audit(fed).await;
    assert_eq!(events.len(), before + 1, "exactly one new audit event");
    match &events[before].event {
        Some(v1::audit_event::Event::SubmissionRefused(r)) => {
            assert_eq!(r.code, refusal as i32);
            assert_eq!(r.submitting_node, node);
            assert!(r.reason.contains(says));
            assert!(
                r.reason.len() <= SHORT,
                "reason is {} bytes",
                r.reason.len()
            );
        }
        other => panic!("expected a refusal event, got {other:?}"),
    }
    let store = &fed.broker().expect("broker running").store;
    for c in fed.node_configs.keys() {
        assert!(
            store
                .pending(*c, None, 100)
                .await
                .expect("pending")
                .is_empty(),
            "queue of {c} must stay empty"
        );
    }
    if let Some(id) = id {
        if refusal != v1::RefusalCode::Duplicate {
            assert!(
                !store.seen(&id).await.expect("seen"),
                "a refused id is not remembered as seen"
            );
        }
    }
}

/// A database of its own on the server `CASEBRIDGE_TEST_POSTGRES` names
/// (`scripts/postgres.sh start`; over its Unix socket where it has one),
/// for a broker on PostgreSQL; dropped by [`PgDb::drop_db`].
pub struct PgDb {
    db: casebridge::storage::postgres::testing::TestDb,
    /// The connection string without its password.
    pub url: String,
    /// The password, alone in a 0600 file.
    pub password_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
    /// Held like a federation's: a test that restarts the server runs
    /// [`alone`], never while another test makes or uses a database.
    _shared: Option<Shared>,
}

impl PgDb {
    /// A new empty database, or None (said loudly) when no test server is
    /// configured.
    pub async fn create() -> Option<PgDb> {
        if std::env::var(casebridge::storage::postgres::testing::ENV).is_err() {
            return Self::create_with(None).await;
        }
        Self::create_with(Some(shared().await)).await
    }

    /// [`PgDb::create`] for a test that holds [`alone`].
    pub async fn create_while_alone(_alone: &Alone) -> Option<PgDb> {
        Self::create_with(None).await
    }

    async fn create_with(shared: Option<Shared>) -> Option<PgDb> {
        use casebridge::storage::postgres::testing::{ENV, TestDb, via_socket};
        let Ok(url) = std::env::var(ENV) else {
            eprintln!("skipped: {ENV} not set");
            return None;
        };
        let url = via_socket(&url).unwrap_or(url);
        let db = TestDb::create_on(&url)
            .await
            .expect("creating a test database");
        let dir = tempfile::tempdir().expect("tempdir");
        let password_file = dir.path().join("postgres.password");
        casebridge::storage::files::keys::write_secret(
            &password_file,
            db.password
                .as_deref()
                .expect("a password in CASEBRIDGE_TEST_POSTGRES"),
        )
        .expect("writing the password file");
        Some(PgDb {
            url: db.url.clone(),
            db,
            password_file,
            _dir: dir,
            _shared: shared,
        })
    }

    /// The holder of the audit log's lease (`pid/id` of the broker that
    /// integrates and signs), while it has not run out.
    pub async fn log_lease_holder(&self) -> Option<String> {
        let mut cfg: tokio_postgres::Config = self.url.parse().expect("a connection string");
        cfg.password(self.db.password.as_deref().expect("a password"));
        let (client, connection) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connecting to the test database");
        let driver = tokio::spawn(connection);
        let row = client
            .query_opt(
                "SELECT holder FROM lease WHERE name = 'log' AND expires > now()",
                &[],
            )
            .await
            .expect("reading the lease");
        drop(client);
        let _ = driver.await;
        row.map(|r| r.get(0))
    }

    /// Drops the database, closing whatever still uses it.
    pub async fn drop_db(self) {
        self.db.drop_db().await;
    }
}

/// Writes a federation of `countries` whose broker keeps its store in
/// `db`, without starting it.
pub async fn create_on_postgres(countries: &[&str], db: &PgDb) -> Fed {
    let mut fed = create(countries).await;
    fed.f.broker_config.storage = postgres_storage(db);
    fed
}

/// The broker's `[storage]` for keeping its store in `db`.
pub fn postgres_storage(db: &PgDb) -> casebridge::daemon::config::StorageSettings {
    use casebridge::daemon::config::{PostgresSettings, StorageBackend, StorageSettings};
    StorageSettings {
        backend: StorageBackend::Postgres,
        postgres: Some(PostgresSettings {
            url: db.url.clone(),
            password_file: Some(db.password_file.clone()),
            pool_size: 8,
            root_cert: None,
        }),
        ..Default::default()
    }
}

/// Starts the broker binary on `config` (the one `CASEBRIDGE_BROKER_BIN`
/// names, else this build's) and returns once it says it listens; its
/// standard error goes to `stderr`.
pub fn spawn_broker_process(
    config: &std::path::Path,
    stderr: std::process::Stdio,
) -> std::process::Child {
    use std::io::BufRead as _;
    let bin = std::env::var("CASEBRIDGE_BROKER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_casebridge").to_string());
    let mut child = std::process::Command::new(bin)
        .args(["broker", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn broker");
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("broker output");
    assert!(
        line.contains("listening on"),
        "broker did not start: {line:?}"
    );
    child
}

//! Several broker processes on one PostgreSQL database: nodes that talk to
//! different brokers exchange records over one log, and the broker that
//! leads the log can be killed (or the database restarted) under a stream
//! of sends without losing or duplicating an acknowledged record. The
//! brokers are the real binary; the nodes run in this process. Skipped,
//! said loudly, without `CASEBRIDGE_TEST_POSTGRES`. Which broker leads
//! the log is read from the database's `lease` row.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use casebridge::daemon::tls::{ClientTls, Identity};
use casebridge::protocol::ids::Role;
use casebridge::protocol::note::{self, Verifiers};
use casebridge::protocol::proto::v1;
use casebridge::protocol::transparency::{log_verifier, witness_verifier};

use crate::support::*;

/// A broker as its own process, so it can be killed for real.
struct BrokerProcess(Child);

impl BrokerProcess {
    /// Starts the binary on `config` and waits until it listens.
    async fn start(config: &Path) -> BrokerProcess {
        let config = config.to_path_buf();
        tokio::task::spawn_blocking(move || {
            BrokerProcess(crate::support::spawn_broker_process(&config, Stdio::null()))
        })
        .await
        .expect("broker start")
    }

    /// Whether the lease holder `holder` (`pid/id`) is this process.
    fn holds(&self, holder: &str) -> bool {
        holder.split('/').next() == Some(self.0.id().to_string().as_str())
    }

    /// SIGKILL: no chance to flush, sign or release anything.
    async fn kill(mut self) {
        tokio::task::spawn_blocking(move || {
            self.0.kill().expect("SIGKILL");
            self.0.wait().expect("reap");
        })
        .await
        .unwrap();
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The two broker configs `pki init --brokers 2` wrote, on `db`: broker 1
/// at the address the federation reserved (the auditor's), broker 2 at a
/// new one.
struct Pair {
    configs: [PathBuf; 2],
    addrs: [SocketAddr; 2],
}

async fn two_brokers(fed: &Fed, db: &PgDb) -> Pair {
    assert_eq!(fed.fed.broker_configs.len(), 2, "pki init --brokers 2");
    let second = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let addrs = [fed.broker_addr, second];
    let mut configs = [PathBuf::new(), PathBuf::new()];
    for (k, addr) in addrs.iter().enumerate() {
        let mut cfg: casebridge::daemon::config::BrokerConfig =
            casebridge::daemon::config::load(&fed.fed.broker_configs[k]).unwrap();
        cfg.storage = postgres_storage(db);
        cfg.listen = *addr;
        let path = fed
            .fed
            .dir
            .join(format!("broker-{}-on-postgres.toml", k + 1));
        std::fs::write(&path, toml::to_string(&cfg).unwrap()).unwrap();
        configs[k] = path;
    }
    Pair { configs, addrs }
}

/// Node `c` lists `brokers` in that order.
fn lists(fed: &mut Fed, c: &str, brokers: &[SocketAddr]) {
    let cfg = fed.f.node_configs.get_mut(&cc(c)).expect("node config");
    cfg.broker = None;
    cfg.brokers = brokers.iter().map(ToString::to_string).collect();
}

/// Waits, up to `limit`, until node `c` uses the broker at `addr` and
/// knows it reachable.
async fn uses(fed: &Fed, c: &str, addr: SocketAddr, limit: Duration) {
    let node = fed.node(cc(c)).expect("node running").clone();
    let addr = addr.to_string();
    within(
        limit,
        &format!("node {c} using the broker at {addr}"),
        || {
            let node = node.clone();
            let addr = addr.clone();
            async move { (node.uplink.reachable() && node.uplink.address() == addr).then_some(()) }
        },
    )
    .await;
}

/// Polls `f` every 20 ms until it yields Some; panics after `limit`.
async fn within<T, Fut: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> Fut,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The auditor's client of the broker at `addr`.
fn auditor_at(
    fed: &Fed,
    addr: SocketAddr,
) -> casebridge::daemon::rpc::audit_client::AuditClient<tonic::transport::Channel> {
    let d = fed.fed.dir.join("auditors/auditor");
    let id = Identity::load(&d.join("auditor.crt"), &d.join("auditor.key")).unwrap();
    let root = casebridge::daemon::tls::load_certs(&fed.broker_config.tls.root)
        .unwrap()
        .remove(0);
    let tls = ClientTls::new(&id, &root, &fed.broker_config.federation).unwrap();
    casebridge::daemon::rpc::audit_client::AuditClient::new(
        tls.channel(&addr.to_string(), Role::Broker).unwrap(),
    )
}

/// The latest checkpoint the broker at `addr` serves: its size and the
/// countries whose witness cosignatures it carries (each verified).
async fn latest_checkpoint(fed: &Fed, addr: SocketAddr) -> Option<(u64, BTreeSet<String>)> {
    let resp = auditor_at(fed, addr)
        .get_checkpoint(v1::GetCheckpointRequest { from_size: 0 })
        .await
        .ok()?
        .into_inner();
    if resp.checkpoint.is_empty() {
        return None;
    }
    let dir = directory(fed);
    let verifiers = Verifiers::new([log_verifier(&dir).unwrap()]).unwrap();
    let opened = note::open_checkpoint(&resp.checkpoint, &verifiers).expect("a signed checkpoint");
    let cp = opened.checkpoint().clone();
    let parsed = note::Note::parse(&resp.checkpoint).unwrap();
    let mut cosigned = BTreeSet::new();
    for c in fed.node_configs.keys() {
        let v = witness_verifier(&dir, *c).unwrap();
        if let Some(sig) = parsed
            .signatures()
            .iter()
            .find(|s| s.key_id() == v.key_id())
        {
            note::verify_cosignature(&cp, sig, &v).expect("a valid cosignature");
            cosigned.insert(c.to_string());
        }
    }
    Some((cp.size(), cosigned))
}

/// Points the auditor's profile at the broker at `addr`.
fn audit_through(fed: &Fed, addr: SocketAddr) -> PathBuf {
    let profile = fed.fed.auditor_profiles[0].1.clone();
    let text = std::fs::read_to_string(&profile).unwrap();
    let mut table: toml::Table = toml::from_str(&text).unwrap();
    table.insert("broker".into(), toml::Value::String(addr.to_string()));
    std::fs::write(&profile, toml::to_string(&table).unwrap()).unwrap();
    profile
}

async fn started_nodes(fed: &mut Fed) {
    let ccs: Vec<_> = fed.node_configs.keys().copied().collect();
    for c in ccs {
        fed.start_node(c).await.expect("node");
    }
}

#[tokio::test]
async fn two_brokers_one_log() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let mut fed = create_with_brokers(&["BA", "HR"], 2).await;
    let pair = two_brokers(&fed, &db).await;
    let [a, b] = pair.addrs;
    let _one = BrokerProcess::start(&pair.configs[0]).await;
    let _two = BrokerProcess::start(&pair.configs[1]).await;
    lists(&mut fed, "HR", &[a, b]);
    lists(&mut fed, "BA", &[b, a]);
    started_nodes(&mut fed).await;
    uses(&fed, "HR", a, Duration::from_secs(10)).await;
    uses(&fed, "BA", b, Duration::from_secs(10)).await;

    let from_hr = send(
        &fed,
        "HR/police",
        &["BA/police"],
        record("wanted_alert"),
        police_to_third_country(),
    )
    .await;
    assert_accepted(&from_hr);
    let from_ba = send(
        &fed,
        "BA/police",
        &["HR/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    assert_accepted(&from_ba);
    // Each receipt comes back through the other broker.
    let dir = directory(&fed);
    for (from, id, to) in [
        ("HR/police", &from_hr.envelope_id, "BA"),
        ("BA/police", &from_ba.envelope_id, "HR"),
    ] {
        let st = settled(&fed, from, id).await;
        let rs = &st.recipient_status[0];
        assert_eq!(rs.state, v1::DeliveryState::Delivered as i32);
        let body = casebridge::protocol::envelope::verify_receipt(
            rs.signed_receipt.as_ref().expect("a signed receipt"),
            &dir,
            casebridge::daemon::clock::now_ms(),
        )
        .unwrap();
        assert_eq!(body.recipient_node, to);
    }
    for (agency, id) in [
        ("BA/police", &from_hr.envelope_id),
        ("HR/police", &from_ba.envelope_id),
    ] {
        let got: Vec<String> = inbox(&fed, agency)
            .await
            .into_iter()
            .map(|e| e.envelope_id)
            .collect();
        assert_eq!(got, vec![id.clone()], "exactly once in {agency}");
    }
    // Both still on their own broker: the exchange crossed brokers.
    uses(&fed, "HR", a, Duration::from_secs(1)).await;
    uses(&fed, "BA", b, Duration::from_secs(1)).await;

    // One log: the auditor, through broker 1, checks a checkpoint that
    // covers both submissions, and both are proven in it.
    let covered = from_hr.log_index.max(from_ba.log_index);
    let profile = fed.fed.auditor_profiles[0].1.clone();
    let size = within(
        Duration::from_secs(10),
        "a checkpoint covering both submissions",
        || {
            let profile = profile.clone();
            async move {
                let report = casebridge::tools::audit::verify(&profile, None)
                    .await
                    .ok()?;
                (report.size() > covered).then_some(report.size())
            }
        },
    )
    .await;
    for id in [&from_hr.envelope_id, &from_ba.envelope_id] {
        let proof = casebridge::tools::audit::prove(&profile, None, id)
            .await
            .unwrap();
        assert_eq!(&proof.envelope_id.to_string(), id);
    }
    // Broker 2 serves the same log: the auditor's next run through it is
    // consistent with the one through broker 1.
    let profile = audit_through(&fed, b);
    let report = casebridge::tools::audit::verify(&profile, None)
        .await
        .unwrap();
    assert!(report.size() >= size);
    assert_eq!(report.previous_size, Some(size));

    fed.f.shutdown().await.unwrap();
    db.drop_db().await;
}

/// A stream of sends from BA/police to HR/police by `senders` concurrent
/// callers, `total` in all.
struct Load {
    answered: Arc<AtomicUsize>,
    #[allow(clippy::type_complexity)]
    tasks: Vec<tokio::task::JoinHandle<Vec<(Instant, Result<v1::SendResponse, tonic::Status>)>>>,
}

impl Load {
    fn start(fed: &Fed, total: usize, senders: usize) -> Load {
        let answered = Arc::new(AtomicUsize::new(0));
        let tasks = (0..senders)
            .map(|k| {
                let mut c = fed.client("BA/police").expect("client");
                let answered = answered.clone();
                let n = total / senders + usize::from(k < total % senders);
                tokio::spawn(async move {
                    let mut out = Vec::with_capacity(n);
                    for _ in 0..n {
                        let r = c
                            .api
                            .send(v1::SendRequest {
                                recipients: vec!["HR/police".into()],
                                record: Some(record("wanted_alert")),
                                labels: Some(police()),
                                ..Default::default()
                            })
                            .await
                            .map(tonic::Response::into_inner);
                        answered.fetch_add(1, Ordering::Relaxed);
                        out.push((Instant::now(), r));
                    }
                    out
                })
            })
            .collect();
        Load { answered, tasks }
    }

    /// Waits until `n` sends have been answered.
    async fn reached(&self, n: usize) {
        let answered = self.answered.clone();
        within(
            Duration::from_secs(20),
            &format!("{n} sends answered"),
            || {
                let answered = answered.clone();
                async move { (answered.load(Ordering::Relaxed) >= n).then_some(()) }
            },
        )
        .await;
    }

    /// Every answer: the ids of the sends the node acknowledged (ACCEPTED
    /// or QUEUED), how many calls failed or were refused, and the longest
    /// time in which no call was answered.
    async fn finish(self) -> (Vec<String>, usize, Duration) {
        let mut acked = Vec::new();
        let mut failed = 0;
        let mut times = Vec::new();
        for t in self.tasks {
            for (at, r) in t.await.expect("sender") {
                times.push(at);
                match r {
                    Ok(r)
                        if r.state == v1::SendState::Accepted as i32
                            || r.state == v1::SendState::Queued as i32 =>
                    {
                        acked.push(r.envelope_id)
                    }
                    _ => failed += 1,
                }
            }
        }
        times.sort();
        let pause = times
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .unwrap_or_default();
        (acked, failed, pause)
    }
}

/// Every acknowledged send is delivered, and each envelope sits in HR's
/// inbox exactly once; nothing else is there.
async fn delivered_exactly_once(fed: &Fed, acked: &[String]) {
    for id in acked {
        let st = settled(fed, "BA/police", id).await;
        assert_eq!(
            st.recipient_status[0].state,
            v1::DeliveryState::Delivered as i32,
            "{id}"
        );
    }
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for e in inbox(fed, "HR/police").await {
        *count.entry(e.envelope_id).or_default() += 1;
    }
    let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "delivered more than once: {dups:?}");
    let acked: BTreeSet<&String> = acked.iter().collect();
    let got: BTreeSet<&String> = count.keys().collect();
    let missing: Vec<_> = acked.difference(&got).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    let unknown: Vec<_> = got.difference(&acked).collect();
    assert!(
        unknown.is_empty(),
        "delivered but never acknowledged: {unknown:?}"
    );
}

#[tokio::test]
async fn the_leading_broker_killed_under_load_loses_nothing() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let mut fed = create_with_brokers(&["BA", "HR"], 2).await;
    let pair = two_brokers(&fed, &db).await;
    let [a, b] = pair.addrs;
    let one = BrokerProcess::start(&pair.configs[0]).await;
    within(
        Duration::from_secs(10),
        "broker 1's first checkpoint",
        || latest_checkpoint(&fed, a),
    )
    .await;
    let two = BrokerProcess::start(&pair.configs[1]).await;
    for c in ["BA", "HR"] {
        lists(&mut fed, c, &[a, b]);
    }
    started_nodes(&mut fed).await;
    uses(&fed, "BA", a, Duration::from_secs(10)).await;
    uses(&fed, "HR", a, Duration::from_secs(10)).await;
    let holder = db.log_lease_holder().await.expect("a lease holder");
    assert!(one.holds(&holder), "broker 1 leads the log: {holder}");
    // The auditor's run before the kill.
    let profile = fed.fed.auditor_profiles[0].1.clone();
    let checked = casebridge::tools::audit::verify(&profile, None)
        .await
        .unwrap()
        .size();

    const TOTAL: usize = 200;
    let load = Load::start(&fed, TOTAL, 8);
    load.reached(TOTAL / 3).await;
    // Broker 1 has signed under the load: what it sequenced is covered by
    // a checkpoint, and more is on its way when it dies.
    let mut signed = within(
        Duration::from_secs(10),
        "a checkpoint signed under the load",
        || async {
            latest_checkpoint(&fed, a)
                .await
                .map(|(size, _)| size)
                .filter(|size| *size > checked)
        },
    )
    .await;
    if let Some((size, _)) = latest_checkpoint(&fed, b).await {
        signed = signed.max(size);
    }
    let holder = db.log_lease_holder().await.expect("a lease holder");
    assert!(
        one.holds(&holder),
        "broker 1 leads the log at the kill: {holder}"
    );
    let answered_at_kill = load.answered.load(Ordering::Relaxed);
    one.kill().await;
    let killed = Instant::now();
    assert!(
        load.answered.load(Ordering::Relaxed) < TOTAL,
        "the stream of sends outlasts the kill"
    );
    // Broker 1 may have signed once more between the read above and its
    // death; broker 2 cannot sign before broker 1's lease runs out, so what
    // the shared store holds now is still broker 1's.
    let signed_before_kill = signed;
    if let Some((size, _)) = latest_checkpoint(&fed, b).await {
        signed = signed.max(size);
    }

    let mut moved = Duration::ZERO;
    for c in ["BA", "HR"] {
        uses(&fed, c, b, Duration::from_secs(10)).await;
        moved = moved.max(killed.elapsed());
    }
    let next = within(
        Duration::from_secs(10),
        "a checkpoint larger than any before the kill",
        || async {
            latest_checkpoint(&fed, b)
                .await
                .filter(|(size, _)| *size > signed)
        },
    )
    .await;
    let next_signed = killed.elapsed();
    assert!(next.0 > signed);
    // Only the lease holder signs, and broker 1 is dead.
    let holder = db.log_lease_holder().await.expect("a lease holder");
    assert!(two.holds(&holder), "broker 2 leads the log: {holder}");

    let (acked, failed, pause) = load.finish().await;
    let all_done = killed.elapsed();
    eprintln!(
        "broker 1 killed after {} of {TOTAL} sends were answered (largest checkpoint read before the kill \
         {signed_before_kill}, after it {signed}); \
         both nodes on broker 2 after {moved:?}; a checkpoint of {} signed after {next_signed:?}; \
         {} sends acknowledged, {failed} failed; the stream ended {all_done:?} after the kill, \
         its longest pause {pause:?}",
        answered_at_kill,
        next.0,
        acked.len()
    );
    assert_eq!(failed, 0, "every Send is answered, a broker down or not");
    delivered_exactly_once(&fed, &acked).await;

    // The auditor, now through broker 2, checks the log across the change,
    // consistent with its run before the kill.
    let profile = audit_through(&fed, b);
    let report = within(Duration::from_secs(10), "the auditor's check", || {
        let profile = profile.clone();
        async move { casebridge::tools::audit::verify(&profile, None).await.ok() }
    })
    .await;
    assert!(report.size() > signed);
    assert_eq!(report.previous_size, Some(checked));
    // And the witnesses go on cosigning what broker 2 signs.
    let t = Instant::now();
    let (size, _) = within(
        Duration::from_secs(20),
        "a checkpoint after the kill cosigned by both witnesses",
        || async {
            latest_checkpoint(&fed, b)
                .await
                .filter(|(size, w)| *size > signed && w.len() == 2)
        },
    )
    .await;
    eprintln!(
        "a checkpoint of {size} after the kill carried both cosignatures {:?} after the stream ended",
        t.elapsed()
    );

    fed.f.shutdown().await.unwrap();
    db.drop_db().await;
}

/// Restarts the test server (`scripts/postgres.sh restart`), closing every
/// connection; returns how long it took.
async fn restart_postgres(cluster: String) -> Duration {
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let out = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres.sh"))
            .arg("restart")
            .arg(&cluster)
            .output()
            .expect("running scripts/postgres.sh");
        assert!(
            out.status.success(),
            "the server did not restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        t.elapsed()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_database_restart_under_load_loses_nothing() {
    use casebridge::storage::postgres::testing::ENV;
    let (Ok(_), Ok(cluster)) = (
        std::env::var(ENV),
        std::env::var("CASEBRIDGE_TEST_POSTGRES_DIR"),
    ) else {
        eprintln!("skipped: {ENV} not set");
        return;
    };
    // The restart closes every connection to the server: no other test
    // may be using it meanwhile.
    let alone = alone().await;
    let db = PgDb::create_while_alone(&alone).await.expect("a database");
    let mut fed = create_while_alone(&["BA", "HR"], 2, &alone).await;
    let pair = two_brokers(&fed, &db).await;
    let [a, b] = pair.addrs;
    let _one = BrokerProcess::start(&pair.configs[0]).await;
    let _two = BrokerProcess::start(&pair.configs[1]).await;
    for c in ["BA", "HR"] {
        lists(&mut fed, c, &[a, b]);
    }
    started_nodes(&mut fed).await;
    uses(&fed, "BA", a, Duration::from_secs(10)).await;
    uses(&fed, "HR", a, Duration::from_secs(10)).await;
    let profile = fed.fed.auditor_profiles[0].1.clone();
    let checked = within(Duration::from_secs(10), "the auditor's first check", || {
        let profile = profile.clone();
        async move { casebridge::tools::audit::verify(&profile, None).await.ok() }
    })
    .await
    .size();

    const TOTAL: usize = 200;
    let load = Load::start(&fed, TOTAL, 8);
    load.reached(TOTAL / 3).await;
    let answered_at_restart = load.answered.load(Ordering::Relaxed);
    let took = restart_postgres(cluster).await;
    let restarted = Instant::now();
    assert!(
        load.answered.load(Ordering::Relaxed) < TOTAL,
        "the stream of sends outlasts the restart"
    );
    let (acked, failed, pause) = load.finish().await;
    let stream_ended = restarted.elapsed();
    eprintln!(
        "the database restarted in {took:?} after {answered_at_restart} of {TOTAL} sends were answered; \
         {} sends acknowledged, {failed} failed; the stream ended {stream_ended:?} after the restart, \
         its longest pause {pause:?}",
        acked.len()
    );
    assert!(
        acked.len() >= TOTAL / 3,
        "what was acknowledged before the restart is counted"
    );
    delivered_exactly_once(&fed, &acked).await;
    let settled_after = restarted.elapsed();

    // The log goes on: a larger checkpoint, checked by the auditor
    // consistent with its run before the restart.
    let report = within(
        Duration::from_secs(10),
        "the auditor's check after the restart",
        || {
            let profile = profile.clone();
            async move {
                casebridge::tools::audit::verify(&profile, None)
                    .await
                    .ok()
                    .filter(|r| r.size() > checked)
            }
        },
    )
    .await;
    assert_eq!(report.previous_size, Some(checked));
    eprintln!(
        "every acknowledged record delivered {settled_after:?} after the restart; checkpoint {} checked",
        report.size()
    );

    fed.f.shutdown().await.unwrap();
    db.drop_db().await;
    drop(alone);
}

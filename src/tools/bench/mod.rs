//! `casebridge bench`: the project's own benchmark. It writes a throwaway
//! federation, starts the broker, the nodes and an echo server as separate
//! processes of this executable on loopback (so that each one's CPU and
//! memory are its own), and measures the Agency and Exchange APIs, records
//! end to end, a backlog with immediate alerts, and the audit log. Every
//! rate is printed beside the rate of a raw gRPC echo over the same mutual
//! TLS, measured in the same run: the ceiling of any gRPC service on the
//! machine at hand.
//!
//! The folder by concern: `federation` (the processes), `echo` (the
//! yardstick), `drive` (closed loops, inbox watches), `workloads` (the
//! phases), `procstat` (CPU and memory from `/proc`), `report` (the table
//! and JSON lines), `store` (`--store`: the audit log's store alone, at a
//! size of its own).

mod drive;
pub mod echo;
mod federation;
mod procstat;
pub mod report;
mod store;
mod workloads;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::protocol::ids::{AgencyId, Country};
use crate::protocol::proto::v1;
use federation::BenchFederation;

/// Set in the environment of the daemons the bench starts: each asks the
/// kernel to stop it when the bench process ends, so a bench that is killed
/// leaves no broker or node behind.
pub const EXIT_WITH_PARENT_ENV: &str = "CASEBRIDGE_EXIT_WITH_PARENT";
use report::{Report, ms};

/// What to measure, and how much. The defaults finish within about three
/// minutes on a two-core machine.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Countries of the federation, one node each (default: those of `pki init`).
    #[arg(long, value_delimiter = ',')]
    pub countries: Option<Vec<String>>,
    /// The sending country; its police sends every record.
    #[arg(long, default_value = "BA")]
    pub from: String,
    /// The receiving country for one-to-one traffic and the backlog.
    #[arg(long, default_value = "HR")]
    pub to: String,
    /// Closed-loop concurrencies for the echo, Send and Submit.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,
    /// Echo calls per concurrency.
    #[arg(long, default_value_t = 4000)]
    pub echo_count: usize,
    /// Agency Sends per concurrency.
    #[arg(long, default_value_t = 500)]
    pub send_count: usize,
    /// Records sent end to end (Send → inbox → receipt at the sender).
    #[arg(long, default_value_t = 500)]
    pub e2e_count: usize,
    /// Concurrency of the end-to-end loop.
    #[arg(long, default_value_t = 16)]
    pub e2e_concurrency: usize,
    /// Agency Sends started at a fixed rate (an open loop) for the
    /// send-ack latency at a stated load.
    #[arg(long, default_value_t = 500)]
    pub paced_count: usize,
    /// The rate of those Sends, per second (default: half the end-to-end
    /// rate measured just before, in the same run).
    #[arg(long)]
    pub paced_rate: Option<f64>,
    /// Pre-sealed envelopes submitted directly per concurrency.
    #[arg(long, default_value_t = 1000)]
    pub submit_count: usize,
    /// Routine envelopes queued for a stopped node, then drained (the
    /// regional-scale figure is measured with 100000; it takes far longer
    /// than the default run).
    #[arg(long, default_value_t = 3000)]
    pub backlog: usize,
    /// At most this many immediate alerts while the backlog drains.
    #[arg(long, default_value_t = 20)]
    pub alerts: usize,
    /// Milliseconds between two alerts.
    #[arg(long, default_value_t = 250)]
    pub alert_every_ms: u64,
    /// Seconds of idleness over which each process's CPU is read (after as
    /// many, at most ten, for the witnesses to settle).
    #[arg(long, default_value_t = 10)]
    pub idle_secs: u64,
    /// Inclusion and consistency proofs asked for (each).
    #[arg(long, default_value_t = 200)]
    pub proofs: usize,
    /// Tiny counts: proves every figure is produced, in seconds.
    #[arg(long)]
    pub quick: bool,
    /// Only the audit log's store: appends, integration, the broker's
    /// start, proofs, `audit verify` and the full re-hash at
    /// `--log-entries` (no federation of processes, no echo).
    #[arg(long)]
    pub store: bool,
    /// Entries the store bench fills the log with (the targets are stated
    /// at 10000000; that takes several minutes and a few GiB of disk).
    #[arg(long, default_value_t = 100_000)]
    pub log_entries: u64,
    /// Of those, appended one event per call; the rest in batches.
    #[arg(long, default_value_t = 20_000)]
    pub single_appends: usize,
    /// Events per batched append of the store bench.
    #[arg(long, default_value_t = 1000)]
    pub append_batch: usize,
    /// Concurrent writers of the store bench.
    #[arg(long, default_value_t = 64)]
    pub store_writers: usize,
    /// The broker store's backend: "sled", or "postgres" in a new database
    /// (dropped at the end) on the server that `--postgres-url` or the
    /// variable CASEBRIDGE_TEST_POSTGRES names (`scripts/postgres.sh start`).
    #[arg(long, value_enum, default_value_t = StoreBackend::Sled)]
    pub backend: StoreBackend,
    /// The server of `--backend postgres`: a connection string of a role
    /// that may create databases (default: CASEBRIDGE_TEST_POSTGRES).
    #[arg(long)]
    pub postgres_url: Option<String>,
    /// Keep the federation (configs, stores, daemon logs) in this directory.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// One JSON object per figure instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Which backend keeps the broker's store in the bench.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreBackend {
    #[default]
    Sled,
    Postgres,
}

impl BenchArgs {
    /// The counts of `--quick`.
    fn quickened(mut self) -> BenchArgs {
        if self.countries.is_none() {
            self.countries = Some(vec!["BA".into(), "HR".into(), "RS".into()]);
        }
        self.echo_count = 64;
        self.send_count = 8;
        self.e2e_count = 8;
        self.e2e_concurrency = self.e2e_concurrency.min(4);
        self.paced_count = 8;
        self.submit_count = 16;
        self.backlog = 16;
        self.alerts = 2;
        self.alert_every_ms = 10;
        self.idle_secs = 1;
        self.proofs = 8;
        self.log_entries = 600;
        self.single_appends = 100;
        self.append_batch = 50;
        self.store_writers = 8;
        self
    }
}

/// Runs the bench and prints its report; the processes are stopped whatever
/// happens.
pub async fn run(args: BenchArgs) -> anyhow::Result<bool> {
    let args = if args.quick { args.quickened() } else { args };
    let countries: Vec<Country> = match &args.countries {
        Some(cs) => cs
            .iter()
            .map(|c| c.trim().parse())
            .collect::<Result<_, _>>()?,
        None => crate::tools::pki::InitOptions::new(".").countries,
    };
    let from: Country = args.from.parse()?;
    let to: Country = args.to.parse()?;
    anyhow::ensure!(from != to, "--from and --to must differ");
    anyhow::ensure!(
        countries.contains(&from) && countries.contains(&to),
        "--from and --to must be among the countries"
    );
    let tmp;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    if args.store {
        let report = store::measure(&dir, &args).await?;
        print!(
            "{}",
            if args.json {
                report.json_lines()
            } else {
                report.table()
            }
        );
        return Ok(true);
    }
    let mut fed = BenchFederation::write(&dir, &countries)?;
    let database = match args.backend {
        StoreBackend::Sled => None,
        StoreBackend::Postgres => {
            let (db, settings) = postgres_database(&dir, &args).await?;
            if let Err(e) = fed.broker_storage(settings) {
                db.drop_db().await;
                return Err(e);
            }
            Some(db)
        }
    };
    let measured = measure(&mut fed, &args, from, to).await;
    let stopped = fed.stop_all().await;
    if let Some(db) = database {
        db.drop_db().await;
    }
    let mut report = measured?;
    stopped?;
    if args.backend == StoreBackend::Postgres {
        report.note("the broker's store was a PostgreSQL database (--backend postgres)");
    }
    if args.json {
        print!("{}", report.json_lines());
    } else {
        print!("{}", report.table());
    }
    Ok(true)
}

/// A new database for one run on the server of `--postgres-url` (or
/// CASEBRIDGE_TEST_POSTGRES), and the broker's settings for it, the
/// password in a 0600 file in `dir`.
async fn postgres_database(
    dir: &std::path::Path,
    args: &BenchArgs,
) -> anyhow::Result<(
    crate::storage::postgres::testing::TestDb,
    crate::daemon::config::PostgresSettings,
)> {
    use crate::storage::postgres::testing::{ENV, TestDb};
    let url = match &args.postgres_url {
        Some(u) => u.clone(),
        None => std::env::var(ENV).map_err(|_| {
            anyhow::anyhow!(
                "--backend postgres needs --postgres-url or {ENV}: a connection string to a \
                 server where it may create a database (scripts/postgres.sh start prints one)"
            )
        })?,
    };
    let db = TestDb::create_on(&url)
        .await
        .context("making a database for the bench on the PostgreSQL server")?;
    let password_file = match &db.password {
        Some(p) => {
            let file = std::path::absolute(dir.join("postgres.password"))?;
            if let Err(e) = crate::storage::files::keys::write_secret(&file, p) {
                db.drop_db().await;
                return Err(e.into());
            }
            Some(file)
        }
        None => None,
    };
    let settings = crate::daemon::config::PostgresSettings {
        url: db.url.clone(),
        password_file,
        pool_size: 64,
        root_cert: None,
    };
    Ok((db, settings))
}

fn progress(what: &str) {
    eprintln!("bench: {what}");
}

fn police(cc: Country) -> anyhow::Result<AgencyId> {
    Ok(AgencyId::new(cc, "police")?)
}

/// CPU per record in microseconds, from two readings of a process.
fn cpu_per(before: &procstat::CpuReading, after: &procstat::CpuReading, n: usize) -> f64 {
    procstat::used(before, after).as_secs_f64() * 1e6 / n.max(1) as f64
}

const MIB: f64 = 1024.0 * 1024.0;

async fn measure(
    fed: &mut BenchFederation,
    args: &BenchArgs,
    from: Country,
    to: Country,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let countries: Vec<Country> = fed.fed.node_configs.iter().map(|(cc, _)| *cc).collect();

    progress(&format!(
        "starting the broker, {} nodes and the echo server",
        countries.len()
    ));
    fed.start_echo().await?;
    fed.start_broker().await?;
    for cc in &countries {
        fed.start_node(*cc).await?;
    }
    let sender = police(from)?;
    let target = police(to)?;
    let others: Vec<AgencyId> = countries
        .iter()
        .filter(|cc| **cc != from)
        .map(|cc| police(*cc))
        .collect::<anyhow::Result<_>>()?;
    let mut watches = BTreeMap::new();
    for a in &others {
        watches.insert(
            a.clone(),
            drive::InboxWatch::start(fed.profile(a)?.to_path_buf()),
        );
    }
    let parties = workloads::Parties {
        sender,
        target,
        others,
        record: workloads::record()?,
        watches,
    };

    // Serving means a record goes from the sender to every other country.
    progress("waiting until every process serves");
    let mut client = fed.client(&parties.sender)?;
    let id = warm_up(&mut client, &parties).await?;
    for a in &parties.others {
        parties
            .watch(a)?
            .wait_all(std::slice::from_ref(&id), workloads::ARRIVAL_WAIT)
            .await?;
    }

    // The witnesses poll often just after a record and space their rounds
    // out while nothing happens: idle is read once they have settled.
    let settle_secs = args.idle_secs.min(10);
    progress(&format!(
        "idle CPU over {} s, after {settle_secs} s without traffic",
        args.idle_secs
    ));
    tokio::time::sleep(Duration::from_secs(settle_secs)).await;
    let procs = fed.processes();
    let before: Vec<_> = procs
        .iter()
        .map(|(_, pid)| procstat::cpu(*pid))
        .collect::<anyhow::Result<_>>()?;
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    for ((name, pid), b) in procs.iter().zip(&before) {
        let a = procstat::cpu(*pid)?;
        let key = name.replace(' ', ".");
        report.add(
            format!("idle.{key}.cpu"),
            format!("idle CPU, {name}"),
            procstat::precise_percent_of_core(b, &a),
            "% core",
        );
    }

    // The yardstick, at every concurrency a rate is compared at.
    let levels: BTreeSet<usize> = args
        .concurrency
        .iter()
        .copied()
        .chain([args.e2e_concurrency, 16])
        .filter(|c| *c > 0)
        .collect();
    let echo_pid = fed
        .echo
        .as_ref()
        .map(federation::Daemon::pid)
        .context("no echo server")?;
    let mut echo = BTreeMap::new();
    let echo_cpu = procstat::cpu(echo_pid)?;
    let mut echo_calls = 0;
    for c in &levels {
        progress(&format!("echo at concurrency {c}"));
        let run = workloads::echo(fed, from, *c, args.echo_count).await?;
        echo_calls += run.latencies.len();
        echo.insert(*c, run.rate());
        report.add(
            format!("echo.c{c}.rate"),
            format!("echo over mTLS, c{c}"),
            run.rate(),
            "per s",
        );
        add_latency(
            &mut report,
            &format!("echo.c{c}"),
            &format!("echo c{c}"),
            &run.latencies,
        );
    }
    let echo_cpu_after = procstat::cpu(echo_pid)?;
    report.add(
        "cpu.echo.server",
        "CPU per echo, echo server",
        cpu_per(&echo_cpu, &echo_cpu_after, echo_calls),
        "µs",
    );
    let echo_at = |c: usize| echo.get(&c).copied().unwrap_or(0.0);
    let echo_best = echo.values().copied().fold(0.0, f64::max);

    let mut auditor = crate::tools::audit::Auditor::connect(&auditor_profile(fed)?, None)?;
    let load_started = Instant::now();
    let log_before = workloads::log_size(&mut auditor).await?;

    for c in &args.concurrency {
        progress(&format!("Agency Send at concurrency {c}"));
        let run = workloads::agency_send(fed, &parties, *c, args.send_count).await?;
        report.rate(
            format!("send.c{c}.rate"),
            format!("Agency Send, c{c}"),
            run.rate(),
            echo_at(*c),
        );
        add_latency(
            &mut report,
            &format!("send.c{c}"),
            &format!("send-ack c{c}"),
            &run.latencies,
        );
    }
    settle(&parties, &mut client).await?;

    let c = args.e2e_concurrency;
    progress(&format!("end to end at concurrency {c}"));
    let broker = fed.broker_pid()?;
    let sending = fed.node_pid(from)?;
    let receiving = fed.node_pid(to)?;
    let cpu0 = [
        procstat::cpu(broker)?,
        procstat::cpu(sending)?,
        procstat::cpu(receiving)?,
    ];
    let e2e = workloads::end_to_end(fed, &parties, c, args.e2e_count).await?;
    let cpu1 = [
        procstat::cpu(broker)?,
        procstat::cpu(sending)?,
        procstat::cpu(receiving)?,
    ];
    let n = e2e.run.latencies.len();
    report.rate(
        format!("e2e.c{c}.rate"),
        format!("end to end, c{c}"),
        e2e.run.rate(),
        echo_at(c),
    );
    add_latency(&mut report, "e2e.inbox", "send → inbox", &e2e.to_inbox);
    add_latency(
        &mut report,
        "e2e.receipt",
        "send → receipt at sender",
        &e2e.to_receipt,
    );
    report.add(
        "cpu.e2e.broker",
        "CPU per record e2e, broker",
        cpu_per(&cpu0[0], &cpu1[0], n),
        "µs",
    );
    report.add(
        "cpu.e2e.sender",
        format!("CPU per record e2e, node {from}"),
        cpu_per(&cpu0[1], &cpu1[1], n),
        "µs",
    );
    report.add(
        "cpu.e2e.receiver",
        format!("CPU per record e2e, node {to}"),
        cpu_per(&cpu0[2], &cpu1[2], n),
        "µs",
    );

    // Latency at a stated load: a closed loop measures it at saturation,
    // where it is whatever the queue makes it.
    let paced = args.paced_rate.unwrap_or(e2e.run.rate() / 2.0);
    if paced > 0.0 && args.paced_count > 0 {
        progress(&format!("Agency Send paced at {paced:.0}/s"));
        let run = workloads::paced_send(fed, &parties, paced, args.paced_count).await?;
        report.add("send.paced.offered", "Send paced, offered", paced, "per s");
        report.add(
            "send.paced.rate",
            "Send paced, achieved",
            run.rate(),
            "per s",
        );
        add_latency(&mut report, "send.paced", "send-ack paced", &run.latencies);
        settle(&parties, &mut client).await?;
    }

    let mut submitted = Vec::new();
    let mut broker_cpu = Duration::ZERO;
    let mut submits = 0;
    for c in &args.concurrency {
        progress(&format!("Exchange Submit at concurrency {c}"));
        let (envelopes, ids) = workloads::seal_many(fed, &parties, args.submit_count)?;
        let b0 = procstat::cpu(broker)?;
        let run = workloads::submit(fed, &parties, envelopes, *c).await?;
        let b1 = procstat::cpu(broker)?;
        broker_cpu += procstat::used(&b0, &b1);
        submits += run.latencies.len();
        submitted.extend(ids);
        report.rate(
            format!("submit.c{c}.rate"),
            format!("Exchange Submit, c{c}"),
            run.rate(),
            echo_at(*c),
        );
        add_latency(
            &mut report,
            &format!("submit.c{c}"),
            &format!("submit c{c}"),
            &run.latencies,
        );
    }
    report.add(
        "cpu.submit.broker",
        "CPU per Submit, broker",
        broker_cpu.as_secs_f64() * 1e6 / submits.max(1) as f64,
        "µs",
    );
    progress("waiting for the submitted envelopes to be delivered");
    parties
        .watch(&parties.target)?
        .wait_all(&submitted, workloads::ARRIVAL_WAIT)
        .await?;

    progress(&format!(
        "a backlog of {} for node {to}, drained under immediate alerts",
        args.backlog
    ));
    let b = workloads::backlog(
        fed,
        &parties,
        args.backlog,
        args.alerts,
        Duration::from_millis(args.alert_every_ms),
    )
    .await?;
    report.rate(
        "backlog.fill.rate",
        "backlog fill (Submit c16)",
        b.fill.rate(),
        echo_at(16),
    );
    let drain_rate = args.backlog as f64 / b.drain.as_secs_f64().max(1e-9);
    report.rate(
        "backlog.drain.rate",
        format!("backlog drain to node {to}"),
        drain_rate,
        echo_best,
    );
    report.add(
        "backlog.rss.before",
        "broker RSS before the backlog",
        b.rss_before as f64 / MIB,
        "MiB",
    );
    report.add(
        "backlog.rss.filled",
        "broker RSS, backlog queued",
        b.rss_filled as f64 / MIB,
        "MiB",
    );
    report.add(
        "backlog.rss.drained",
        "broker RSS, backlog drained",
        b.rss_drained as f64 / MIB,
        "MiB",
    );
    report.add(
        "alert.count",
        "immediate alerts during the drain",
        b.alerts.len() as f64,
        "alerts",
    );
    add_latency(
        &mut report,
        "alert",
        &format!("alert → last of {} inboxes", parties.others.len()),
        &b.alerts,
    );
    if !b.alerts_during_drain {
        report.note(
            "the backlog had drained before the last alert reached its last inbox: the alerts waited behind it, or it was too short to outlast them (--backlog)",
        );
    }

    progress("the audit log");
    let log_after = workloads::settled_log_size(&mut auditor).await?;
    let load_time = load_started.elapsed();
    let appended = log_after.saturating_sub(log_before);
    report.rate(
        "audit.appends.rate",
        "audit appends (under the load above)",
        appended as f64 / load_time.as_secs_f64(),
        echo_best,
    );
    let audit = workloads::audit(&auditor_profile(fed)?, args.proofs).await?;
    report.add(
        "audit.size",
        "audit log entries",
        audit.size as f64,
        "entries",
    );
    add_latency(
        &mut report,
        "audit.inclusion",
        "inclusion proof",
        &audit.inclusion,
    );
    add_latency(
        &mut report,
        "audit.consistency",
        "consistency proof",
        &audit.consistency,
    );
    report.add(
        "audit.verify",
        format!("audit verify of {} entries", audit.size),
        audit.verify.as_secs_f64(),
        "s",
    );

    report.note(format!(
        "ratios: a rate at concurrency cN is divided by the echo at cN; the drain and the audit appends by the echo's best rate ({echo_best:.0}/s)"
    ));
    report.note(format!(
        "{} nodes, records of {} bytes, example policies; CPU per record from /proc in clock ticks, idle CPU from the threads' nanosecond accounting; proof latencies are client round trips",
        countries.len(),
        workloads::RECORD_BYTES
    ));
    if args.backlog < 100_000 {
        report.note(format!(
            "backlog of {} (the regional figure is --backlog 100000; the 1,000,000 memory figure is --backlog 1000000)",
            args.backlog
        ));
    }
    report.note(format!(
        "audit figures at this run's log of {} entries; the store alone at 10 M entries is measured by `casebridge bench --store --log-entries 10000000`",
        audit.size
    ));
    Ok(report)
}

/// The first auditor's profile.
fn auditor_profile(fed: &BenchFederation) -> anyhow::Result<PathBuf> {
    fed.fed
        .auditor_profiles
        .first()
        .map(|(_, p)| p.clone())
        .context("the federation has no auditor")
}

/// One record to every other country, retried while the nodes connect.
async fn warm_up(
    client: &mut crate::tools::client::AgencyClient,
    p: &workloads::Parties,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match workloads::send(client, &p.others, &p.record, v1::Priority::Routine).await {
            Ok(id) => return Ok(id),
            Err(e) if Instant::now() > deadline => {
                return Err(e.context("the federation did not start serving"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until what the previous phase sent has reached its inbox, so that
/// the next phase starts on a quiet federation.
async fn settle(
    p: &workloads::Parties,
    client: &mut crate::tools::client::AgencyClient,
) -> anyhow::Result<()> {
    let id = workloads::send(
        client,
        std::slice::from_ref(&p.target),
        &p.record,
        v1::Priority::Routine,
    )
    .await?;
    p.watch(&p.target)?
        .wait_all(&[id], workloads::ARRIVAL_WAIT)
        .await?;
    Ok(())
}

/// p50 and p99 of `samples`, in milliseconds.
fn add_latency(report: &mut Report, key: &str, label: &str, samples: &[Duration]) {
    report.percentiles(key, label, samples, "ms", ms);
}

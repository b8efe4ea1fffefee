//! `casebridge bench --store`: the audit log's store on its own, at a size
//! no load test reaches in minutes. It writes a federation of two countries
//! into a temporary directory, fills the broker's sled store directly with
//! `--log-entries` audit events through the storage traits (many
//! concurrent writers, so group commit shares flushes: first one event per
//! `Sequencer::append`, then `Sequencer::append_all` batches), integrates
//! them, then starts the broker in this process on that store and measures
//! its start, inclusion and consistency proofs as the Audit API and the
//! witnesses get them (the handlers' own functions, without the network),
//! a full `audit verify` through the Audit API over loopback mTLS, and the
//! broker's full re-hash (`broker --check-log`) once it is stopped.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::report::Report;
use super::{BenchArgs, progress};
use crate::daemon::broker::Broker;
use crate::daemon::broker::log::TransparencyLog;
use crate::daemon::broker::service::{checkpoint_response, inclusion_proof};
use crate::protocol::ids::Country;
use crate::protocol::proto::v1;
use crate::storage::broker::BrokerStore;
use crate::tools::local::LocalFederation;

/// A representative audit event: an accepted submission's summary, about
/// the size the broker logs for a one-to-one record.
fn event(n: u64) -> v1::AuditEvent {
    let mut id = [0u8; 16];
    id[8..].copy_from_slice(&n.to_be_bytes());
    v1::AuditEvent {
        at_ms: 1_700_000_000_000 + n as i64,
        event: Some(v1::audit_event::Event::SubmissionAccepted(
            v1::SubmissionAccepted {
                envelope: Some(v1::EnvelopeSummary {
                    envelope_id: id.to_vec(),
                    sender_node: "BA".into(),
                    sender_agency: "BA/police".into(),
                    recipients: vec!["HR/police".into()],
                    kind: v1::RecordKind::WantedAlert as i32,
                    declared_categories: vec![
                        v1::DataCategory::Identity as i32,
                        v1::DataCategory::Location as i32,
                    ],
                    purpose: v1::Purpose::InvestigationOrganisedCrime as i32,
                    legal_basis: v1::LegalBasis::BilateralAgreement as i32,
                    ..Default::default()
                }),
                policy_bundle_hash: "ab".repeat(32),
                policy_explanation: "permitted by framework/wanted-alerts (bundle framework v1)"
                    .into(),
            },
        )),
    }
}

/// Appends events `[from, to)` with `writers` concurrent tasks, each
/// taking `batch` events at a time (`append` when 1, else `append_all`).
async fn append(
    store: &Arc<dyn BrokerStore>,
    from: u64,
    to: u64,
    writers: usize,
    batch: u64,
) -> anyhow::Result<Duration> {
    let next = Arc::new(AtomicU64::new(from));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..writers.max(1) {
        let (store, next) = (store.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let first = next.fetch_add(batch, Ordering::Relaxed);
                if first >= to {
                    return Ok::<_, anyhow::Error>(());
                }
                let last = (first + batch).min(to);
                if last - first == 1 {
                    store.append(event(first)).await?;
                } else {
                    store.append_all((first..last).map(event).collect()).await?;
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}

/// Runs `f` until the database it opens is no longer locked by the store
/// closed just before (whose last task lets go of it shortly after), and
/// returns how long the run that succeeded took.
async fn when_unlocked<T>(
    mut f: impl AsyncFnMut() -> anyhow::Result<T>,
) -> anyhow::Result<Duration> {
    let mut tries = 0;
    loop {
        let started = Instant::now();
        match f().await {
            Ok(_) => return Ok(started.elapsed()),
            Err(e) if tries < 100 && format!("{e:#}").contains("in use by another running") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// µs, as a float.
fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn add_latency(report: &mut Report, key: &str, label: &str, samples: &[Duration]) {
    report.percentiles(key, label, samples, "µs", us);
}

/// A spread of indexes (or sizes) in `[lo, hi)`, deterministic.
fn spread(n: usize, lo: u64, hi: u64) -> impl Iterator<Item = u64> {
    let span = hi.saturating_sub(lo).max(1);
    // A step coprime with most spans visits the range evenly.
    (0..n as u64).map(move |k| lo + (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) % span))
}

/// Runs the store bench in `dir` and returns its figures.
pub async fn measure(dir: &Path, args: &BenchArgs) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let n = args.log_entries.max(2);
    let countries: Vec<Country> = vec!["BA".parse()?, "HR".parse()?];
    let mut fed = LocalFederation::create(dir, &countries).await?;
    let database = match args.backend {
        super::StoreBackend::Sled => None,
        super::StoreBackend::Postgres => Some(on_postgres(dir, args, &mut fed).await?),
    };
    let measured = measure_on(&mut fed, args, n, &mut report).await;
    if let Some(db) = database {
        db.drop_db().await;
    }
    measured?;
    if args.backend == super::StoreBackend::Postgres {
        report.note("the broker's store was a PostgreSQL database (--backend postgres)");
    }
    Ok(report)
}

/// Points the broker's config at a new database on the server that
/// `--postgres-url` or `CASEBRIDGE_TEST_POSTGRES` names.
async fn on_postgres(
    dir: &Path,
    args: &BenchArgs,
    fed: &mut LocalFederation,
) -> anyhow::Result<crate::storage::postgres::testing::TestDb> {
    use crate::daemon::config::StorageBackend;
    let (db, settings) = super::postgres_database(dir, args).await?;
    let storage = &mut fed.broker_config.storage;
    storage.backend = StorageBackend::Postgres;
    storage.postgres = Some(settings);
    Ok(db)
}

async fn measure_on(
    fed: &mut LocalFederation,
    args: &BenchArgs,
    n: u64,
    report: &mut Report,
) -> anyhow::Result<()> {
    let open = crate::daemon::broker::open_store;

    let single = (args.single_appends as u64).min(n);
    {
        let store = open(&fed.broker_config).await?;
        progress(&format!(
            "store: {single} appends of one event, {} writers",
            args.store_writers
        ));
        let took = append(&store, 0, single, args.store_writers, 1).await?;
        report.add(
            "store.append.single.rate",
            format!(
                "audit append, one event per call ({} writers)",
                args.store_writers
            ),
            single as f64 / took.as_secs_f64().max(1e-9),
            "per s",
        );
        progress(&format!(
            "store: {} events appended in batches of {}",
            n - single,
            args.append_batch
        ));
        let took = append(
            &store,
            single,
            n,
            args.store_writers,
            args.append_batch.max(2) as u64,
        )
        .await?;
        report.add(
            "store.append.batched.rate",
            format!(
                "audit append, batches of {} ({} writers)",
                args.append_batch, args.store_writers
            ),
            (n - single) as f64 / took.as_secs_f64().max(1e-9),
            "per s",
        );
        progress("store: integrating");
        let started = Instant::now();
        let size = store.integrate().await?;
        anyhow::ensure!(size == n, "integrated {size} of {n} entries");
        report.add(
            "store.integrate.rate",
            "audit integration (Merkle nodes of every entry)",
            n as f64 / started.elapsed().as_secs_f64().max(1e-9),
            "per s",
        );
    }
    // Let the closed store's flush task notice that its database is gone.
    tokio::task::yield_now().await;
    // The two parts of a start that could depend on the log's length: the
    // store's own open (sled's recovery), and the check of the stored tree
    // against the latest checkpoint (signed here first).
    let started = Instant::now();
    let store = open(&fed.broker_config).await?;
    report.add(
        "store.open",
        format!("store open with {n} entries"),
        started.elapsed().as_secs_f64() * 1000.0,
        "ms",
    );
    let log = {
        let cfg = &fed.broker_config;
        let key = crate::storage::files::directory::load_public_key(&cfg.directory_key)?;
        let directory =
            crate::storage::files::directory::load(&cfg.directory, &key, &cfg.federation)?;
        TransparencyLog::new(
            crate::storage::files::keys::load_signing_key(&cfg.log_key)?,
            &directory,
        )?
    };
    log.checkpoint(store.as_ref()).await?;
    let started = Instant::now();
    log.verify_latest(store.as_ref()).await?;
    report.add(
        "store.start_check",
        "start check: stored tree against the latest checkpoint",
        us(started.elapsed()),
        "µs",
    );
    drop(store);
    tokio::task::yield_now().await;

    progress("store: starting the broker on the filled store");
    let took = when_unlocked(async || fed.start_broker().await).await?;
    report.add(
        "store.broker.start",
        format!("broker start with {n} entries"),
        took.as_secs_f64() * 1000.0,
        "ms",
    );
    let state = fed.broker().context("the broker is not running")?.clone();
    state.log.checkpoint(state.store.as_ref()).await?;
    let size = state.store.integrated_size().await?;
    report.add("store.size", "audit log size", size as f64, "entries");

    let mut samples = Vec::with_capacity(args.proofs);
    for index in spread(args.proofs, 0, size) {
        let t = Instant::now();
        inclusion_proof(&state, index, 0)
            .await
            .map_err(|s| anyhow::anyhow!("inclusion proof of {index}: {}", s.message()))?;
        samples.push(t.elapsed());
    }
    add_latency(
        report,
        "store.inclusion",
        "inclusion proof, server time",
        &samples,
    );
    samples.clear();
    for from in spread(args.proofs, 1, size) {
        let t = Instant::now();
        checkpoint_response(&state, from)
            .await
            .map_err(|s| anyhow::anyhow!("consistency proof from {from}: {}", s.message()))?;
        samples.push(t.elapsed());
    }
    add_latency(
        report,
        "store.consistency",
        "consistency proof, server time",
        &samples,
    );

    // The broker's state holds its store: only the broker may keep it.
    drop(state);
    progress("store: audit verify through the Audit API");
    let profile = fed
        .fed
        .auditor_profiles
        .first()
        .map(|(_, p)| p.clone())
        .context("no auditor profile")?;
    let started = Instant::now();
    let verified = crate::tools::audit::verify(&profile, None).await?;
    report.add(
        "store.verify",
        format!(
            "audit verify of {} entries (Audit API, loopback mTLS)",
            verified.size()
        ),
        started.elapsed().as_secs_f64(),
        "s",
    );
    fed.stop_broker().await?;

    progress("store: the broker's full re-hash (--check-log)");
    let cfg = fed.broker_config.clone();
    let took = when_unlocked(async || Broker::check_log(&cfg).await).await?;
    report.add(
        "store.check_log",
        "broker --check-log (every entry re-hashed)",
        took.as_secs_f64(),
        "s",
    );
    if n < 10_000_000 {
        report.note(format!(
            "the store bench ran with {n} entries; the targets are stated at 10,000,000 \
             (--log-entries 10000000, release build)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    /// Every figure is produced (never how fast).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_bench_produces_every_figure() {
        every_figure(&["bench", "--store", "--quick"]).await;
    }

    /// The same on PostgreSQL, when a test server is configured.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_store_bench_produces_every_figure_on_postgres() {
        if std::env::var(crate::storage::postgres::testing::ENV).is_err() {
            eprintln!(
                "skipped: {} not set",
                crate::storage::postgres::testing::ENV
            );
            return;
        }
        every_figure(&["bench", "--store", "--quick", "--backend", "postgres"]).await;
    }

    async fn every_figure(argv: &[&str]) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cli = Cli::parse_from(argv);
        let args = cli.args.quickened();
        let dir = tempfile::tempdir().unwrap();
        let report = measure(dir.path(), &args).await.unwrap();
        for key in [
            "store.append.single.rate",
            "store.append.batched.rate",
            "store.integrate.rate",
            "store.open",
            "store.start_check",
            "store.broker.start",
            "store.inclusion.p50",
            "store.inclusion.p99",
            "store.consistency.p50",
            "store.consistency.p99",
            "store.verify",
            "store.check_log",
        ] {
            let f = report.get(key).unwrap_or_else(|| panic!("{key} missing"));
            assert!(f.value.is_finite() && f.value > 0.0, "{key}: {}", f.value);
        }
        let size = report.get("store.size").unwrap().value;
        assert!(size >= args.log_entries as f64, "{size}");
    }
}

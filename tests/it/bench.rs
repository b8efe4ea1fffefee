//! `casebridge bench --quick` runs the built binary's broker, nodes and echo
//! as processes and produces every figure. It asserts that each figure
//! exists and is a real number, never how fast anything was.

use std::collections::BTreeMap;
use std::process::Command;

/// Rates, latencies, sizes and times: each must have been measured (> 0).
const POSITIVE: &[&str] = &[
    "echo.c1.rate",
    "echo.c16.rate",
    "echo.c64.rate",
    "send.c1.rate",
    "send.c16.rate",
    "send.c64.rate",
    "send.c1.p50",
    "send.c1.p99",
    "send.c64.p50",
    "send.c64.p99",
    "send.paced.offered",
    "send.paced.rate",
    "send.paced.p99",
    "e2e.inbox.p50",
    "e2e.inbox.p99",
    "e2e.receipt.p50",
    "e2e.receipt.p99",
    "submit.c1.rate",
    "submit.c16.rate",
    "submit.c64.rate",
    "backlog.fill.rate",
    "backlog.drain.rate",
    "backlog.rss.before",
    "backlog.rss.filled",
    "backlog.rss.drained",
    "alert.count",
    "alert.p50",
    "alert.p99",
    "audit.appends.rate",
    "audit.size",
    "audit.inclusion.p50",
    "audit.inclusion.p99",
    "audit.consistency.p50",
    "audit.consistency.p99",
    "audit.verify",
];

/// CPU readings come in clock ticks: a short run may read zero.
const NON_NEGATIVE: &[&str] = &[
    "idle.broker.cpu",
    "idle.node.BA.cpu",
    "idle.node.HR.cpu",
    "idle.node.RS.cpu",
    "cpu.echo.server",
    "cpu.e2e.broker",
    "cpu.e2e.sender",
    "cpu.e2e.receiver",
    "cpu.submit.broker",
];

/// Rates compared with the echo of the same run.
const RATIOS: &[&str] = &[
    "send.c1.rate",
    "send.c16.rate",
    "send.c64.rate",
    "submit.c1.rate",
    "submit.c16.rate",
    "submit.c64.rate",
    "backlog.fill.rate",
    "backlog.drain.rate",
    "audit.appends.rate",
];

/// Runs `casebridge bench --quick --json --dir DIR` with `extra` arguments
/// and checks that every figure was produced.
async fn quick_bench(dir: &std::path::Path, extra: &[&str]) {
    let path = dir.to_path_buf();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_casebridge"))
            .args(["bench", "--quick", "--json"])
            .args(&extra)
            .arg("--dir")
            .arg(path)
            .output()
    })
    .await
    .unwrap()
    .expect("run casebridge bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");

    let mut figures = BTreeMap::new();
    let mut notes = 0;
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
        if v.get("note").is_some() {
            notes += 1;
            continue;
        }
        let key = v["key"].as_str().expect("key").to_string();
        figures.insert(key, v);
    }
    assert!(notes > 0, "the reduced counts are said");
    let e2e = figures
        .keys()
        .find(|k| k.starts_with("e2e.c") && k.ends_with(".rate"))
        .cloned()
        .expect("an end-to-end rate");

    let value = |key: &str| -> f64 {
        let f = figures
            .get(key)
            .unwrap_or_else(|| panic!("no figure {key} in {stdout}"));
        let v = f["value"].as_f64().expect("a number");
        assert!(v.is_finite(), "{key} = {v}");
        v
    };
    for key in POSITIVE.iter().copied().chain([e2e.as_str()]) {
        assert!(value(key) > 0.0, "{key} was not measured");
    }
    for key in NON_NEGATIVE {
        assert!(value(key) >= 0.0, "{key} is negative");
    }
    for key in RATIOS.iter().copied().chain([e2e.as_str()]) {
        let f = &figures[key];
        let echo = f["echo"].as_f64().expect("the echo's rate");
        let ratio = f["ratio"].as_f64().expect("a ratio");
        assert!(echo > 0.0 && ratio.is_finite() && ratio > 0.0, "{key}: {f}");
    }
}

#[tokio::test]
async fn the_quick_bench_produces_every_figure() {
    let _alone = crate::support::alone().await;
    let dir = tempfile::tempdir().unwrap();
    quick_bench(dir.path(), &[]).await;

    // Every process was stopped: sled refuses a store that another process
    // still holds, and each one opens again.
    let broker: casebridge::daemon::config::BrokerConfig =
        casebridge::daemon::config::load(&dir.path().join("broker.toml")).expect("config");
    casebridge::storage::sled::broker::SledStore::open(&broker.data_dir)
        .expect("the broker stopped");
    for cc in ["BA", "HR", "RS"] {
        let node: casebridge::daemon::config::NodeConfig =
            casebridge::daemon::config::load(&dir.path().join(format!("nodes/{cc}.toml")))
                .expect("config");
        casebridge::storage::sled::node::SledNodeStore::open(&node.data_dir)
            .unwrap_or_else(|e| panic!("node {cc} stopped: {e}"));
    }
}

/// The same on PostgreSQL: the broker's config names a database made for
/// the run, and the run drops it at the end.
#[tokio::test]
async fn the_quick_bench_produces_every_figure_on_postgres() {
    let env = casebridge::storage::postgres::testing::ENV;
    let Ok(url) = std::env::var(env) else {
        eprintln!("skipped: {env} not set");
        return;
    };
    let _alone = crate::support::alone().await;
    let dir = tempfile::tempdir().unwrap();
    quick_bench(
        dir.path(),
        &["--backend", "postgres", "--postgres-url", &url],
    )
    .await;

    let broker: casebridge::daemon::config::BrokerConfig =
        casebridge::daemon::config::load(&dir.path().join("broker.toml")).expect("config");
    assert_eq!(
        broker.storage.backend,
        casebridge::daemon::config::StorageBackend::Postgres
    );
    let pg = broker
        .storage
        .postgres
        .expect("the [storage.postgres] table");
    let used: tokio_postgres::Config = pg.url.parse().expect("the database's connection string");
    let name = used.get_dbname().expect("a database name").to_string();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test server");
    let driver = tokio::spawn(connection);
    let left = client
        .query("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .expect("list the databases");
    assert!(
        left.is_empty(),
        "the bench's database {name} was not dropped"
    );
    drop(client);
    let _ = driver.await;
}

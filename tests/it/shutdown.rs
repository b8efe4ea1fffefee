//! A broker asked to stop (SIGTERM) while it streams a large backlog to a
//! node: it stops within its `shutdown_grace_secs`, its last checkpoint
//! covers every entry it sequenced, and after a restart nothing it
//! acknowledged is lost or filed twice.
//!
//! The backlog is `CASEBRIDGE_SHUTDOWN_BACKLOG` envelopes (default 2,000),
//! and the broker the binary at `CASEBRIDGE_BROKER_BIN` (default this
//! build's): the regional figure is measured with
//! `cargo build --release && CASEBRIDGE_BROKER_BIN=target/release/casebridge
//! CASEBRIDGE_SHUTDOWN_BACKLOG=100000 cargo test --test it shutdown -- --nocapture`.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use casebridge::protocol::envelope::{self, SealInput};
use casebridge::protocol::ids::AgencyId;
use casebridge::protocol::proto::v1;
use casebridge::storage::broker::{Checkpoints, Sequencer};

use crate::support::*;

/// The broker's stop bound in this test, in seconds.
const GRACE_SECS: u64 = 5;

/// The broker as its own process, stopped with a signal.
struct Broker(Child);

impl Broker {
    fn spawn(config: &std::path::Path) -> Broker {
        Broker(crate::support::spawn_broker_process(
            config,
            Stdio::inherit(),
        ))
    }

    /// Sends SIGTERM and waits for the process to end: how long it took and
    /// whether it exited with success.
    fn terminate(mut self) -> (Duration, bool) {
        let pid = self.0.id().to_string();
        let started = Instant::now();
        let killed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(killed.success(), "SIGTERM not sent");
        let status = self.0.wait().expect("wait for the broker");
        (started.elapsed(), status.success())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Seals `n` records from BA/police to HR/police, on both cores.
async fn seal_many(fed: &Fed, n: usize) -> Vec<(String, v1::Envelope)> {
    seal_many_of(fed, n, record("wanted_alert")).await
}

/// A wanted alert of about `kib` KiB.
fn large_record(kib: usize) -> v1::CaseRecord {
    let mut r = record("wanted_alert");
    if let Some(v1::case_record::Body::WantedAlert(a)) = r.body.as_mut() {
        a.instructions.push_str(&" .".repeat(kib << 9));
    }
    r
}

/// Seals `n` copies of `rec` from BA/police to HR/police, on both cores.
async fn seal_many_of(fed: &Fed, n: usize, rec: v1::CaseRecord) -> Vec<(String, v1::Envelope)> {
    let key = Arc::new(node_signing_key(fed, "BA"));
    let dir = Arc::new(directory(fed));
    let mut parts = Vec::new();
    let per = n.div_ceil(2);
    for part in 0..2 {
        let (key, dir, rec) = (key.clone(), dir.clone(), rec.clone());
        let count = per.min(n.saturating_sub(part * per));
        parts.push(tokio::task::spawn_blocking(move || {
            let sender: AgencyId = "BA/police".parse().unwrap();
            let to: Vec<AgencyId> = vec!["HR/police".parse().unwrap()];
            (0..count)
                .map(|_| {
                    let now = casebridge::daemon::clock::now_ms();
                    let s = envelope::seal(
                        &SealInput {
                            sender: &sender,
                            recipients: &to,
                            record: &rec,
                            labels: police(),
                            created_at_ms: now,
                            expires_at_ms: now + 86_400_000,
                            onward_of: None,
                            permission: None,
                        },
                        &key,
                        &dir,
                    )
                    .expect("seal");
                    (s.id.to_string(), s.envelope)
                })
                .collect::<Vec<_>>()
        }));
    }
    let mut all = Vec::with_capacity(n);
    for p in parts {
        all.extend(p.await.expect("sealing"));
    }
    all
}

/// Submits every envelope as node BA, 32 at a time.
async fn submit_all(fed: &Fed, envelopes: Vec<v1::Envelope>) {
    let client = exchange_as_node(fed, "BA")
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let envelopes = Arc::new(envelopes);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (mut c, envelopes, next) = (client.clone(), envelopes.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(env) = envelopes.get(i) else { return };
                c.submit(v1::SubmitRequest {
                    envelope: Some(env.clone()),
                })
                .await
                .expect("submit");
            }
        });
    }
    while let Some(t) = tasks.join_next().await {
        t.expect("a submit task");
    }
}

/// How many records HR/police holds.
async fn filed(fed: &Fed) -> usize {
    let node = fed.node(cc("HR")).expect("node HR running");
    node.store
        .inbox(&"HR/police".parse().unwrap(), None, usize::MAX)
        .await
        .expect("inbox")
        .len()
}

#[tokio::test]
async fn a_broker_streaming_a_backlog_stops_within_its_grace_and_loses_nothing() {
    let backlog: usize = std::env::var("CASEBRIDGE_SHUTDOWN_BACKLOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let mut fed = create(&["BA", "HR"]).await;
    let mut cfg = fed.broker_config.clone();
    cfg.listen = fed.broker_addr;
    cfg.shutdown_grace_secs = GRACE_SECS;
    let config = fed.fed.dir.join("broker-process.toml");
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();

    let sealed = seal_many(&fed, backlog).await;
    let mut ids: Vec<String> = sealed.iter().map(|(id, _)| id.clone()).collect();
    let spawn = config.clone();
    let broker = tokio::task::spawn_blocking(move || Broker::spawn(&spawn))
        .await
        .unwrap();
    let filling = Instant::now();
    submit_all(&fed, sealed.into_iter().map(|(_, e)| e).collect()).await;
    eprintln!(
        "backlog of {backlog} queued in {:.1} s",
        filling.elapsed().as_secs_f64()
    );

    // The node streams the backlog; the broker is asked to stop mid-way.
    fed.start_node(cc("HR")).await.unwrap();
    until("the node streaming the backlog", || {
        let fed = &fed;
        async move { (filed(fed).await >= 64.min(backlog)).then_some(()) }
    })
    .await;
    let (took, success) = tokio::task::spawn_blocking(move || broker.terminate())
        .await
        .unwrap();
    let before = filed(&fed).await;
    eprintln!(
        "broker stopped {:.3} s after SIGTERM with {} of {backlog} delivered",
        took.as_secs_f64(),
        before
    );
    assert!(success, "the broker exits with success when asked to stop");
    assert!(
        took <= Duration::from_millis(GRACE_SECS * 1000 + 500),
        "the broker took {took:?} to stop; its bound is {GRACE_SECS} s"
    );
    assert!(before < backlog, "the backlog was still streaming");

    // The last checkpoint covers every entry sequenced.
    {
        let store = casebridge::storage::sled::broker::SledStore::open_with_cache(
            &fed.broker_config.data_dir,
            16,
        )
        .expect("open the stopped broker's store");
        let len = store.audit_len().await.unwrap();
        let (size, _) = store
            .latest_checkpoint()
            .await
            .unwrap()
            .expect("a checkpoint");
        assert_eq!(size, len, "the last checkpoint covers the whole log");
    }

    // The node stops within the same bound while the broker is away.
    let stopping = Instant::now();
    fed.stop_node(cc("HR")).await.unwrap();
    assert!(
        stopping.elapsed() <= Duration::from_millis(10_500),
        "the node took {:?} to stop",
        stopping.elapsed()
    );

    // After a restart every record arrives, each once.
    fed.start_broker().await.unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    let node = fed.node(cc("HR")).unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(60 + backlog as u64 / 50);
    loop {
        if filed(&fed).await == backlog {
            break;
        }
        assert!(Instant::now() < deadline, "the backlog did not drain");
        let poll = if backlog > 10_000 { 2_000 } else { 100 };
        tokio::time::sleep(Duration::from_millis(poll)).await;
    }
    let mut got: Vec<String> = node
        .store
        .inbox(&"HR/police".parse().unwrap(), None, usize::MAX)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|r| r.entry.map(|e| e.envelope_id))
        .collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "every record, exactly once");
    fed.f.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_node_that_never_reads_its_stream_holds_no_stop_up() {
    let mut fed = create(&["BA", "HR"]).await;
    fed.broker_config.shutdown_grace_secs = 2;
    fed.start_broker().await.unwrap();
    // More than HTTP/2 flow control lets through to a reader that does not
    // read: the broker's sends block.
    let sealed = seal_many_of(&fed, 96, large_record(256)).await;
    submit_all(&fed, sealed.into_iter().map(|(_, e)| e).collect()).await;

    // Node HR opens its delivery stream and never reads it; someone else
    // opens a connection and never finishes the handshake.
    let mut hr = exchange_as_node(&fed, "HR");
    let _stalled = hr
        .receive(v1::ReceiveRequest {
            lanes: v1::DeliveryLanes::All as i32,
        })
        .await
        .expect("a delivery stream");
    let _silent = tokio::net::TcpStream::connect(fed.broker_addr)
        .await
        .unwrap();
    let state = fed.broker().unwrap().clone();
    let addr = fed.broker_addr;

    let started = Instant::now();
    fed.stop_broker().await.unwrap();
    let took = started.elapsed();
    eprintln!("the broker stopped in {took:?}");
    assert!(
        took <= Duration::from_millis(2_500),
        "the broker took {took:?} to stop; its bound is 2 s"
    );
    assert!(state.is_stopping());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
    drop(state);
    let store = casebridge::storage::sled::broker::SledStore::open_with_cache(
        &fed.broker_config.data_dir,
        16,
    )
    .expect("open the stopped broker's store");
    let (size, _) = store
        .latest_checkpoint()
        .await
        .unwrap()
        .expect("a checkpoint");
    assert_eq!(size, store.audit_len().await.unwrap());
}

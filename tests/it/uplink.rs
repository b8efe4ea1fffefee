//! The node's uplink in virtual time: Send answers at once while the broker
//! is unreachable, the outbox goes as soon as a broker is back, and a node
//! moves between the brokers it lists.

use std::time::Duration;

use casebridge::protocol::proto::v1;
use tokio::time::Instant;

use crate::support::*;

/// An address where nothing listens.
async fn dead_address() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().to_string()
}

/// Waits until node `c` uses the broker at `addr` and knows it reachable.
async fn uses(fed: &Fed, c: &str, addr: &str) {
    let node = fed.node(cc(c)).expect("node running").clone();
    until(&format!("node {c} using {addr}"), || {
        let node = node.clone();
        async move { (node.uplink.reachable() && node.uplink.address() == addr).then_some(()) }
    })
    .await;
}

async fn accepted(fed: &Fed, id: &str) {
    until(&format!("{id} accepted"), || async move {
        (status(fed, "BA/police", id).await.state == v1::SendState::Accepted as i32).then_some(())
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn send_answers_at_once_while_the_broker_is_down_and_the_outbox_goes_when_it_is_back() {
    let mut fed = start(&["BA", "HR"]).await;
    fed.stop_broker().await.unwrap();
    let node = fed.node(cc("BA")).unwrap().clone();
    until("the node noticing the outage", || {
        let node = node.clone();
        async move { (!node.uplink.reachable()).then_some(()) }
    })
    .await;

    let mut ids = Vec::new();
    for _ in 0..2 {
        let t = Instant::now();
        let r = send(
            &fed,
            "BA/police",
            &["HR/police"],
            record("wanted_alert"),
            police(),
        )
        .await;
        assert_eq!(r.state, v1::SendState::Queued as i32, "{}", r.detail);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "Send waited {:?} for a broker known to be down",
            t.elapsed()
        );
        ids.push(r.envelope_id);
    }
    // Long enough for the outbox to back off well past a second.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(!node.uplink.reachable());

    // Not `Fed::start_broker`, which waits for the nodes to find it.
    fed.f.start_broker().await.unwrap();
    let back = Instant::now();
    for id in &ids {
        accepted(&fed, id).await;
    }
    assert!(
        back.elapsed() <= Duration::from_secs(1),
        "the outbox went {:?} after the broker was back",
        back.elapsed()
    );
    for id in &ids {
        settled(&fed, "BA/police", id).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_skips_a_broker_address_where_nothing_answers() {
    let mut fed = create(&["BA", "HR"]).await;
    let live = fed.broker_addr.to_string();
    let dead = dead_address().await;
    for cfg in fed.node_configs.values_mut() {
        cfg.broker = None;
        cfg.brokers = vec![dead.clone(), live.clone()];
    }
    start_all(&mut fed).await;
    let t = Instant::now();
    uses(&fed, "BA", &live).await;
    uses(&fed, "HR", &live).await;
    let took = t.elapsed();
    eprintln!("failover from a dead address took {took:?} of virtual time");
    assert!(took <= Duration::from_secs(2), "failover took {took:?}");

    let r = send(
        &fed,
        "BA/police",
        &["HR/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    assert_eq!(r.state, v1::SendState::Accepted as i32, "{}", r.detail);
    let st = settled(&fed, "BA/police", &r.envelope_id).await;
    assert_eq!(
        st.recipient_status[0].state,
        v1::DeliveryState::Delivered as i32
    );
}

#[tokio::test(start_paused = true)]
async fn a_node_follows_its_broker_to_the_next_address_on_the_same_data() {
    let mut fed = create(&["BA", "HR"]).await;
    let a = fed.broker_addr.to_string();
    let b = dead_address().await;
    for cfg in fed.node_configs.values_mut() {
        cfg.broker = None;
        cfg.brokers = vec![a.clone(), b.clone()];
    }
    start_all(&mut fed).await;
    let first = send(
        &fed,
        "BA/police",
        &["HR/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    assert_accepted(&first);
    settled(&fed, "BA/police", &first.envelope_id).await;

    // A stops; the same data is served from the list's second address.
    fed.stop_broker().await.unwrap();
    fed.f.broker_addr = b.parse().unwrap();
    // Not `Fed::start_broker`, which waits for the nodes to find it.
    fed.f.start_broker().await.unwrap();
    let t = Instant::now();
    uses(&fed, "BA", &b).await;
    uses(&fed, "HR", &b).await;
    let took = t.elapsed();
    eprintln!("failover to the next broker took {took:?} of virtual time");
    assert!(took <= Duration::from_secs(2), "failover took {took:?}");

    let next = send(
        &fed,
        "BA/police",
        &["HR/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    assert_accepted(&next);
    let st = settled(&fed, "BA/police", &next.envelope_id).await;
    assert_eq!(
        st.recipient_status[0].state,
        v1::DeliveryState::Delivered as i32
    );
    assert_eq!(inbox(&fed, "HR/police").await.len(), 2);
}

/// What a daemon logged, as a log collector reads it.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

/// Runs in a process of its own (this test binary, asked for this test
/// alone): tracing caches whether a log statement is enabled the first time
/// any thread reaches it, so another test running beside it without a
/// subscriber could make the statements under test invisible here.
#[test]
fn a_node_logs_losing_and_regaining_the_broker_at_info() {
    const ALONE: &str = "CASEBRIDGE_TEST_UPLINK_LOG_ALONE";
    if std::env::var_os(ALONE).is_some() {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(logs_losing_and_regaining_the_broker());
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "uplink::a_node_logs_losing_and_regaining_the_broker_at_info",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ALONE, "1")
        .output()
        .expect("run the test alone");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// One thread: every task of the federation logs to the subscriber set here.
async fn logs_losing_and_regaining_the_broker() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let mut fed = start(&["HR"]).await;
    let broker = fed.broker_addr.to_string();
    fed.stop_broker().await.unwrap();
    let node = fed.node(cc("HR")).expect("node running").clone();
    until("the node losing the broker", || async {
        (!node.uplink.reachable()).then_some(())
    })
    .await;
    fed.start_broker().await.unwrap();
    until("the node regaining the broker", || async {
        node.uplink.reachable().then_some(())
    })
    .await;
    let text = logs.text();
    let lost = text
        .lines()
        .find(|l| l.contains("lost the broker"))
        .unwrap_or_else(|| panic!("no loss logged:\n{text}"));
    assert!(lost.contains(" INFO ") && lost.contains(&broker), "{lost}");
    let back = text
        .lines()
        .find(|l| l.contains("broker reachable again"))
        .unwrap_or_else(|| panic!("no return logged:\n{text}"));
    assert!(back.contains(" INFO ") && back.contains(&broker), "{back}");
    assert!(node.uplink.losses.get() >= 1, "the loss is counted");
}

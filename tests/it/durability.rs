//! Store and forward: records wait for a node that is down, for a broker
//! that is down, and survive a broker that is killed, without loss and
//! without duplicates.

use std::process::{Child, Stdio};

use casebridge::protocol::proto::v1;
use v1::audit_event::Event;

use crate::support::*;

#[tokio::test]
async fn records_wait_for_a_node_that_is_down() {
    let mut fed = start(&["BA", "HR"]).await;
    fed.stop_node(cc("HR")).await.unwrap();
    let resp = send(
        &fed,
        "BA/police",
        &["HR/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    assert_eq!(resp.state, v1::SendState::Accepted as i32);
    let st = status(&fed, "BA/police", &resp.envelope_id).await;
    assert_eq!(
        st.recipient_status[0].state,
        v1::DeliveryState::Pending as i32
    );
    assert_eq!(
        fed.broker()
            .unwrap()
            .store
            .pending(cc("HR"), None, 10)
            .await
            .unwrap()
            .len(),
        1
    );

    fed.start_node(cc("HR")).await.unwrap();
    let st = settled(&fed, "BA/police", &resp.envelope_id).await;
    assert_eq!(
        st.recipient_status[0].state,
        v1::DeliveryState::Delivered as i32
    );
    assert_eq!(inbox(&fed, "HR/police").await.len(), 1);
    assert!(
        fed.broker()
            .unwrap()
            .store
            .pending(cc("HR"), None, 10)
            .await
            .unwrap()
            .is_empty(),
        "payload dropped after the receipt"
    );

    // The inbox survives a restart of the node.
    fed.stop_node(cc("HR")).await.unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    let entries = inbox(&fed, "HR/police").await;
    assert_eq!(entries.len(), 1);
    assert!(
        fetch(&fed, "HR/police", &entries[0].envelope_id)
            .await
            .unwrap()
            .record
            .is_some()
    );
}

#[tokio::test]
async fn the_outbox_drains_when_the_broker_returns() {
    let mut fed = start(&["BA", "HR"]).await;
    fed.stop_broker().await.unwrap();
    let resp = send(
        &fed,
        "BA/police",
        &["HR/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    assert_eq!(resp.state, v1::SendState::Queued as i32, "{}", resp.detail);
    assert_eq!(
        status(&fed, "BA/police", &resp.envelope_id).await.state,
        v1::SendState::Queued as i32
    );
    // The outbox is durable: a node restart while the broker is away keeps it.
    fed.stop_node(cc("BA")).await.unwrap();
    fed.start_node(cc("BA")).await.unwrap();
    assert_eq!(outbox_len(&fed, "BA").await, 1);

    fed.start_broker().await.unwrap();
    let st = settled(&fed, "BA/police", &resp.envelope_id).await;
    assert_eq!(st.state, v1::SendState::Accepted as i32);
    assert_eq!(
        st.recipient_status[0].state,
        v1::DeliveryState::Delivered as i32
    );
    assert_eq!(outbox_len(&fed, "BA").await, 0);
    assert_eq!(inbox(&fed, "HR/police").await.len(), 1);
}

/// How many envelopes wait in the outbox of the running node `node`.
async fn outbox_len(fed: &Fed, node: &str) -> usize {
    let node = fed.node(cc(node)).expect("node running");
    node.store.outbox().await.expect("outbox").len()
}

#[tokio::test]
async fn a_redelivered_envelope_gets_the_same_receipt_and_one_inbox_entry() {
    let mut fed = start(&["BA", "HR"]).await;
    fed.stop_node(cc("HR")).await.unwrap();
    send(
        &fed,
        "BA/police",
        &["HR/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    let env = match fed
        .broker()
        .unwrap()
        .store
        .pending(cc("HR"), None, 1)
        .await
        .unwrap()
        .remove(0)
        .item
    {
        casebridge::storage::broker::MailItem::Envelope(_, env) => env,
        other => panic!("{other:?}"),
    };
    fed.start_node(cc("HR")).await.unwrap();
    let node = fed.node(cc("HR")).unwrap().clone();
    let first = casebridge::daemon::node::uplink::accept_envelope(&node, &env)
        .await
        .unwrap();
    let second = casebridge::daemon::node::uplink::accept_envelope(&node, &env)
        .await
        .unwrap();
    assert_eq!(first, second);
    until("delivery", || {
        let fed = &fed;
        async move { (inbox(fed, "HR/police").await.len() == 1).then_some(()) }
    })
    .await;
    assert_eq!(inbox(&fed, "HR/police").await.len(), 1);
}

#[tokio::test]
async fn a_broker_restart_loses_nothing_and_duplicates_nothing() {
    let mut fed = start(&["BA", "HR"]).await;
    fed.stop_node(cc("HR")).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            send(
                &fed,
                "BA/police",
                &["HR/police"],
                record("wanted_alert"),
                police(),
            )
            .await
            .envelope_id,
        );
    }
    fed.stop_broker().await.unwrap();
    fed.start_broker().await.unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    for id in &ids {
        settled(&fed, "BA/police", id).await;
    }
    let mut got: Vec<String> = inbox(&fed, "HR/police")
        .await
        .into_iter()
        .map(|e| e.envelope_id)
        .collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids);
    let events = audit(&fed).await;
    let accepted = events
        .iter()
        .filter(|e| matches!(e.event, Some(Event::SubmissionAccepted(_))))
        .count();
    let receipts = events
        .iter()
        .filter(|e| matches!(e.event, Some(Event::ReceiptRecorded(_))))
        .count();
    assert_eq!((accepted, receipts), (3, 3));
}

/// The broker as its own process, so it can be killed for real.
struct BrokerProcess(Child);

impl BrokerProcess {
    fn spawn(config: &std::path::Path) -> BrokerProcess {
        BrokerProcess(crate::support::spawn_broker_process(config, Stdio::null()))
    }

    fn kill(mut self) {
        self.0.kill().expect("SIGKILL");
        self.0.wait().expect("reap");
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_killed_broker_loses_no_acknowledged_record() {
    let mut fed = create(&["BA", "HR"]).await;
    let mut cfg = fed.broker_config.clone();
    cfg.listen = fed.broker_addr;
    let config = fed.fed.dir.join("broker-process.toml");
    std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();

    let broker = BrokerProcess::spawn(&config);
    fed.start_node(cc("BA")).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let r = send(
            &fed,
            "BA/police",
            &["HR/police"],
            record("wanted_alert"),
            police(),
        )
        .await;
        assert_eq!(r.state, v1::SendState::Accepted as i32, "{}", r.detail);
        ids.push(r.envelope_id);
    }
    // Every one of them was acknowledged; SIGKILL gives the broker no chance
    // to flush anything more.
    tokio::task::spawn_blocking(move || broker.kill())
        .await
        .unwrap();

    let broker = tokio::task::spawn_blocking(move || BrokerProcess::spawn(&config))
        .await
        .unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    for id in &ids {
        let st = settled(&fed, "BA/police", id).await;
        assert_eq!(
            st.recipient_status[0].state,
            v1::DeliveryState::Delivered as i32
        );
    }
    let mut got: Vec<String> = inbox(&fed, "HR/police")
        .await
        .into_iter()
        .map(|e| e.envelope_id)
        .collect();
    got.sort();
    ids.sort();
    assert_eq!(got, ids, "every acknowledged record, exactly once");
    fed.f.shutdown().await.unwrap();
    drop(broker);
}

#[tokio::test]
async fn expired_records_are_purged_and_the_purge_is_logged_without_content() {
    let fed = start(&["BA", "HR"]).await;
    let mut l = police();
    let now = casebridge::daemon::clock::now_ms();
    l.expires_at_ms = now + 2 * 86_400_000;
    let keep = send(
        &fed,
        "BA/police",
        &["HR/police"],
        record("wanted_alert"),
        police(),
    )
    .await;
    let short = send(&fed, "BA/police", &["HR/police"], record("wanted_alert"), l).await;
    settled(&fed, "BA/police", &short.envelope_id).await;
    settled(&fed, "BA/police", &keep.envelope_id).await;

    let node = fed.node(cc("HR")).unwrap().clone();
    let mut client = exchange_as_node(&fed, "HR");
    let purged =
        casebridge::daemon::node::uplink::purge_once(&node, &mut client, now + 3 * 86_400_000)
            .await
            .unwrap();
    assert_eq!(
        purged.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![short.envelope_id.clone()]
    );
    let left: Vec<String> = inbox(&fed, "HR/police")
        .await
        .into_iter()
        .map(|e| e.envelope_id)
        .collect();
    assert_eq!(left, vec![keep.envelope_id]);
    assert!(
        node.store.unreported_purges().await.unwrap().is_empty(),
        "the broker logged it"
    );

    let events = audit(&fed).await;
    let purge = events
        .iter()
        .find_map(|e| match &e.event {
            Some(Event::RecordsPurged(p)) => Some(p.clone()),
            _ => None,
        })
        .expect("purge event");
    assert_eq!(purge.node, "HR");
    let ids: Vec<String> = purge
        .envelope_ids
        .iter()
        .map(|b| {
            casebridge::protocol::ids::EnvelopeId::from_bytes(b)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, vec![short.envelope_id]);

    // A node cannot log purges of records it never received.
    let stranger = casebridge::protocol::ids::EnvelopeId::at(casebridge::daemon::clock::now_ms());
    let err = exchange_as_node(&fed, "BA")
        .report_purge(v1::PurgeReport {
            envelope_ids: vec![stranger.as_bytes().to_vec()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

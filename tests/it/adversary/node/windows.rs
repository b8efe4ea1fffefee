//! The node's windows: submissions taken from the outbox lane by lane, and
//! deliveries handled concurrently yet filed once each.

use casebridge::protocol::envelope::Sealed;
use casebridge::protocol::ids::EnvelopeId;
use casebridge::protocol::proto::v1;
use casebridge::storage::node::Outbox as _;
use casebridge::storage::sled::node::SledNodeStore;

use super::hostile_broker::{HostileBroker, claimed_id};
use super::{behind_hostile_broker, fresh_for, inbox_len};
use crate::adversary::harness::seal_as;
use crate::support::*;

/// What node BA records of a record it queued, as the agency API would.
fn queued(sealed: &Sealed, labels: &v1::Labels) -> v1::SendStatus {
    v1::SendStatus {
        envelope_id: sealed.id.to_string(),
        state: v1::SendState::Queued as i32,
        sender_agency: "BA/police".into(),
        recipients: vec!["HR/police".into()],
        labels: Some(labels.clone()),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_immediate_record_is_submitted_before_routine_ones_queued_earlier() {
    let mut fed = create(&["BA", "HR", "RS"]).await;
    let hb = HostileBroker::start(&fed).await;
    let ba = cc("BA");
    // One submission at a time, so the order they reach the broker is the
    // order the node chose them in.
    fed.node_configs.get_mut(&ba).unwrap().submit_window = 1;
    let routine: Vec<Sealed> = (0..3)
        .map(|_| fresh_for(&fed, &["HR/police"], &record("wanted_alert")))
        .collect();
    let mut alert_labels = police();
    alert_labels.priority = v1::Priority::Immediate as i32;
    let alert = seal_as(
        &fed,
        "BA/police",
        &["HR/police"],
        &record("wanted_alert"),
        alert_labels.clone(),
    );
    // Queued while the node was down: the routine records first.
    {
        let store = SledNodeStore::open(&fed.node_configs[&ba].data_dir).unwrap();
        for r in &routine {
            store
                .enqueue(&r.id, &r.envelope, &queued(r, &police()))
                .await
                .unwrap();
        }
        store
            .enqueue(&alert.id, &alert.envelope, &queued(&alert, &alert_labels))
            .await
            .unwrap();
    }
    hb.start_node(&mut fed, ba).await;
    let order: Vec<EnvelopeId> = hb
        .wait_submits(ba, 4)
        .await
        .iter()
        .map(|e| claimed_id(Some(e)).unwrap())
        .collect();
    assert_eq!(
        order,
        [alert.id, routine[0].id, routine[1].id, routine[2].id],
        "the alert first, then the routine records in the order queued"
    );
    for s in routine.iter().chain([&alert]) {
        let id = s.id.to_string();
        until("the record accepted", || async {
            let st = status(&fed, "BA/police", &id).await;
            (st.state == v1::SendState::Accepted as i32).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn one_envelope_delivered_many_times_at_once_is_filed_and_announced_once() {
    let (fed, hb) = behind_hostile_broker(&["HR"]).await;
    let hr = cc("HR");
    let mut watcher = fed.client("HR/police").unwrap();
    let mut arrivals = watcher
        .api
        .watch_inbox(v1::WatchInboxRequest {})
        .await
        .unwrap()
        .into_inner();
    let twice = fresh_for(&fed, &["HR/police"], &record("wanted_alert"));
    let seqs: Vec<u64> = (0..8)
        .map(|_| hb.deliver_envelope(hr, twice.envelope.clone()))
        .collect();
    let mut receipts = Vec::new();
    for seq in seqs {
        receipts.push(hb.wait_ack(hr, seq).await.receipt);
    }
    assert!(
        receipts.iter().all(|r| r.is_some() && *r == receipts[0]),
        "every delivery gets the one answer"
    );
    assert_eq!(inbox_len(&fed, "HR/police").await, 1);

    // Announced once: everything announced for those deliveries was
    // announced before they were acknowledged, so before this one.
    let last = fresh_for(&fed, &["HR/police"], &record("wanted_alert"));
    let seq = hb.deliver_envelope(hr, last.envelope.clone());
    hb.wait_ack(hr, seq).await;
    let mut announced = Vec::new();
    loop {
        let e = tokio::time::timeout(std::time::Duration::from_secs(30), arrivals.message())
            .await
            .expect("bounded wait")
            .unwrap()
            .expect("an arrival");
        if e.envelope_id == last.id.to_string() {
            break;
        }
        announced.push(e.envelope_id);
    }
    assert_eq!(announced, [twice.id.to_string()]);
    assert!(hb.queued(hr).is_empty());
}

#[tokio::test]
async fn an_unreachable_broker_is_probed_with_one_submission_at_a_time() {
    let mut fed = create(&["BA", "HR", "RS"]).await;
    let hb = HostileBroker::start(&fed).await;
    let ba = cc("BA");
    hb.answer_submit(|_, _| Err(tonic::Status::unavailable("down for maintenance")));
    let queued_records: Vec<Sealed> = (0..5)
        .map(|_| fresh_for(&fed, &["HR/police"], &record("wanted_alert")))
        .collect();
    {
        let store = SledNodeStore::open(&fed.node_configs[&ba].data_dir).unwrap();
        for r in &queued_records {
            store
                .enqueue(&r.id, &r.envelope, &queued(r, &police()))
                .await
                .unwrap();
        }
    }
    hb.start_node(&mut fed, ba).await;
    // The whole window at first; once the broker fails, only the oldest
    // record, after a pause each time.
    let tried: Vec<EnvelopeId> = hb
        .wait_submits(ba, 7)
        .await
        .iter()
        .map(|e| claimed_id(Some(e)).unwrap())
        .collect();
    let mut first_round = tried[..5].to_vec();
    first_round.sort();
    let all: Vec<EnvelopeId> = queued_records.iter().map(|r| r.id).collect();
    assert_eq!(first_round, all);
    assert_eq!(tried[5..], [all[0], all[0]]);

    hb.answer_submit(|_, req| {
        Ok(v1::SubmitResponse {
            envelope_id: claimed_id(req.envelope.as_ref())
                .map(|id| id.as_bytes().to_vec())
                .unwrap_or_default(),
            log_index: 1,
            accepted_at_ms: casebridge::daemon::clock::now_ms(),
            policy_bundle_hash: String::new(),
        })
    });
    for r in &queued_records {
        let id = r.id.to_string();
        until("the record accepted", || async {
            let st = status(&fed, "BA/police", &id).await;
            (st.state == v1::SendState::Accepted as i32).then_some(())
        })
        .await;
    }
    let node = fed.node(ba).unwrap();
    assert!(node.store.outbox().await.unwrap().is_empty());
}

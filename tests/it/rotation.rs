//! A node's signing and HPKE keys rotated while records flow: the new pair
//! reaches everyone in a directory distributed live, each node switches to
//! its next pair once that directory has been in force for its switch delay,
//! and what was sealed or signed with the old pair still verifies and opens
//! within the overlap the directory states, and is refused after it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use casebridge::protocol::proto::v1;
use tonic::Code;
use v1::audit_event::Event;

use crate::adversary::harness;
use crate::support::*;

/// The directory refresh interval of these tests.
const REFRESH_SECS: u64 = 1;
/// How long a node waits, after it first sees its next pair listed, before
/// it signs with it.
const SWITCH_DELAY_SECS: u64 = 2;
/// Senders running at once.
const SENDERS: usize = 4;
/// Records acknowledged before the rotation, and after both switches.
const BEFORE: usize = 24;
const AFTER: usize = 24;

/// The public halves of a node's next pair.
struct NextKeys {
    signing: [u8; 32],
    hpke: [u8; 32],
}

/// Makes node `c`'s next pair as `casebridge node new-keys` does, beside
/// its keys, while the node runs.
fn new_keys(fed: &Fed, c: &str) -> NextKeys {
    let next = casebridge::tools::ca::new_node_keys(&fed.node_configs[&cc(c)]).unwrap();
    NextKeys {
        signing: next.signing,
        hpke: next.hpke,
    }
}

/// A federation of `countries` whose broker and nodes refresh the directory
/// every [`REFRESH_SECS`], each node with its own copy of the directory (as
/// on separate hosts); not started.
async fn federation(countries: &[&str]) -> Fed {
    let mut fed = create(countries).await;
    fed.f.broker_config.directory_refresh_secs = REFRESH_SECS;
    let root = fed.fed.dir.clone();
    for (c, cfg) in fed.f.node_configs.iter_mut() {
        cfg.directory_refresh_secs = REFRESH_SECS;
        cfg.keys.switch_delay_secs = SWITCH_DELAY_SECS;
        let own = root.join(format!("node-{c}"));
        std::fs::create_dir_all(&own).unwrap();
        std::fs::copy(&cfg.directory, own.join("directory.bin")).unwrap();
        cfg.directory = own.join("directory.bin");
    }
    fed
}

/// The directory edit `directory rotate-node` makes: node `c`'s current pair
/// retired until `valid_until_ms`, `next` current.
fn rotate(dir: &mut v1::Directory, c: &str, next: &NextKeys, valid_until_ms: i64) {
    let n = dir
        .nodes
        .iter_mut()
        .find(|n| n.country == c)
        .expect("node in the directory");
    n.previous.push(v1::RetiredKeys {
        signing_key: std::mem::replace(&mut n.signing_key, next.signing.to_vec()),
        hpke_key: std::mem::replace(&mut n.hpke_key, next.hpke.to_vec()),
        valid_until_ms,
    });
}

/// What the senders were told: acknowledged envelope ids, and refusals.
#[derive(Default)]
struct Sent {
    acknowledged: Vec<String>,
    refused: Vec<String>,
}

/// Sends as HR/police to BA/police in a loop until `stop`.
async fn sender(
    mut client: casebridge::tools::client::AgencyClient,
    stop: Arc<AtomicBool>,
    sent: Arc<std::sync::Mutex<Sent>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let answer = client
            .api
            .send(v1::SendRequest {
                recipients: vec!["BA/police".into()],
                record: Some(record("wanted_alert")),
                labels: Some(police_to_third_country()),
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner);
        let mut sent = sent.lock().unwrap();
        match answer {
            Ok(r) if r.state == v1::SendState::Refused as i32 => {
                sent.refused
                    .push(format!("{}: {}", r.envelope_id, r.detail));
            }
            Ok(r) => sent.acknowledged.push(r.envelope_id),
            Err(e) => sent.refused.push(e.message().to_string()),
        }
    }
}

async fn acknowledged_at_least(sent: &std::sync::Mutex<Sent>, n: usize) {
    until(&format!("{n} records acknowledged"), || async {
        (sent.lock().unwrap().acknowledged.len() >= n).then_some(())
    })
    .await;
}

/// Waits until node `c` signs with `key`.
async fn signs_with(fed: &Fed, c: &str, key: [u8; 32]) {
    until(&format!("node {c} signing with its next key"), || async {
        (fed.node(cc(c))?.signing_key().public_key() == key).then_some(())
    })
    .await;
}

#[tokio::test]
async fn rotating_a_nodes_keys_loses_and_refuses_nothing_in_flight() {
    let mut fed = federation(&["HR", "BA"]).await;
    start_all(&mut fed).await;

    // Sealed by HR with its old key, wrapped to BA's old key, before the
    // rotation; submitted only once both nodes have switched: records in
    // flight across the whole rotation.
    let in_flight: Vec<v1::Envelope> = (0..4)
        .map(|_| {
            harness::seal_as(
                &fed,
                "HR/police",
                &["BA/police"],
                &record("wanted_alert"),
                police_to_third_country(),
            )
            .envelope
        })
        .collect();

    let client = fed.client("HR/police").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(std::sync::Mutex::new(Sent::default()));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| tokio::spawn(sender(client.clone(), stop.clone(), sent.clone())))
        .collect();
    acknowledged_at_least(&sent, BEFORE).await;

    // Both nodes rotated in one new directory, distributed live: their next
    // pairs made while they run, published by the directory key holder.
    let hr_next = new_keys(&fed, "HR");
    let ba_next = new_keys(&fed, "BA");
    let overlap_ms = 3_600_000;
    let until_ms = casebridge::daemon::clock::now_ms() + overlap_ms;
    edit_directory(&fed, |d| {
        rotate(d, "HR", &hr_next, until_ms);
        rotate(d, "BA", &ba_next, until_ms);
    });
    until("directory version 2 everywhere", || async {
        let everywhere = fed.broker()?.directory().version == 2
            && ["HR", "BA"]
                .iter()
                .all(|c| fed.node(cc(c)).is_some_and(|n| n.directory().version == 2));
        everywhere.then_some(())
    })
    .await;
    signs_with(&fed, "HR", hr_next.signing).await;
    signs_with(&fed, "BA", ba_next.signing).await;
    let switched = sent.lock().unwrap().acknowledged.len();
    acknowledged_at_least(&sent, switched + AFTER).await;

    let mut late_ids = Vec::new();
    let mut hr = exchange_as_node(&fed, "HR");
    for env in in_flight {
        let id = harness::header_of(&env).envelope_id;
        hr.submit(v1::SubmitRequest {
            envelope: Some(env),
        })
        .await
        .expect("a record sealed before the rotation is accepted within the overlap");
        late_ids.push(casebridge::protocol::ids::EnvelopeId::from_bytes(&id).unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    assert!(
        sent.refused.is_empty(),
        "refused during the rotation: {:#?}",
        sent.refused
    );

    // Every acknowledged record delivered, each once.
    for id in &sent.acknowledged {
        let status = settled(&fed, "HR/police", id).await;
        assert!(
            status
                .recipient_status
                .iter()
                .all(|r| r.state == v1::DeliveryState::Delivered as i32),
            "{id}: {status:?}"
        );
    }
    let mut expected: Vec<String> = sent.acknowledged.clone();
    expected.extend(late_ids.iter().map(ToString::to_string));
    let inbox = until("every record in BA/police's inbox", || async {
        let entries = inbox(&fed, "BA/police").await;
        (entries.len() >= expected.len()).then_some(entries)
    })
    .await;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &inbox {
        *counts.entry(e.envelope_id.as_str()).or_default() += 1;
    }
    for id in &expected {
        assert_eq!(
            counts.get(id.as_str()),
            Some(&1),
            "{id} in BA/police's inbox"
        );
    }
    assert_eq!(inbox.len(), expected.len(), "nothing else in the inbox");

    // Nothing refused at the broker, nothing rejected by BA; the rotation
    // shows as the directory change.
    let events = audit(&fed).await;
    for e in events_of(&events) {
        match e {
            Event::SubmissionRefused(r) => panic!("refused at the broker: {}", r.reason),
            Event::ReceiptRecorded(r) => assert_eq!(
                r.status,
                v1::ReceiptStatus::Delivered as i32,
                "rejected by {}: {}",
                r.recipient_node,
                r.reason
            ),
            _ => {}
        }
    }
    let versions: Vec<u64> = events_of(&events)
        .into_iter()
        .filter_map(|e| match e {
            Event::DirectoryChanged(d) => Some(d.version),
            _ => None,
        })
        .collect();
    assert_eq!(versions, vec![1, 2]);
}

#[tokio::test]
async fn a_record_sealed_to_a_retired_key_after_its_overlap_is_refused_by_the_broker() {
    let mut fed = federation(&["HR", "BA"]).await;
    fed.start_broker().await.unwrap();
    // HR, a node with valid keys, seals to BA's key of directory version 1.
    let seal = |fed: &Fed| {
        harness::seal_as(
            fed,
            "HR/police",
            &["BA/police"],
            &record("wanted_alert"),
            police_to_third_country(),
        )
        .envelope
    };
    let within = seal(&fed);
    let after = seal(&fed);
    let (sign, _) = casebridge::protocol::keys::SigningKey::generate().unwrap();
    let (_, hpke) = casebridge::protocol::keys::generate_hpke();
    let ba_next = NextKeys {
        signing: sign.public_key(),
        hpke: casebridge::protocol::keys::hpke_public_bytes(&hpke),
    };
    let broker_at = |fed: &Fed, version: u64| {
        let broker = fed.broker().cloned();
        async move {
            until(
                &format!("the broker on directory version {version}"),
                || {
                    let broker = broker.clone();
                    async move { (broker?.directory().version == version).then_some(()) }
                },
            )
            .await
        }
    };

    // Version 2: BA rotated, its old key retired for an hour. Within the
    // overlap the record is accepted.
    let now = casebridge::daemon::clock::now_ms();
    edit_directory(&fed, |d| rotate(d, "BA", &ba_next, now + 3_600_000));
    broker_at(&fed, 2).await;
    let mut hr = exchange_as_node(&fed, "HR");
    hr.submit(v1::SubmitRequest {
        envelope: Some(within),
    })
    .await
    .expect("accepted within the overlap");

    // Version 3: the overlap is over (it ended a second ago). HR submits a
    // record wrapped to BA's retired key, signed with its own valid key.
    edit_directory(&fed, |d| {
        let n = d.nodes.iter_mut().find(|n| n.country == "BA").unwrap();
        n.previous[0].valid_until_ms = casebridge::daemon::clock::now_ms() - 1_000;
    });
    broker_at(&fed, 3).await;
    let id = harness::header_of(&after).envelope_id;
    let err = hr
        .submit(v1::SubmitRequest {
            envelope: Some(after),
        })
        .await
        .expect_err("a record wrapped to a key past its overlap is refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(
        err.message()
            .contains("neither BA's current key nor a retired one still within its overlap"),
        "{err}"
    );
    // Refused, logged as refused, and queued for no one.
    let events = audit(&fed).await;
    let refused: Vec<_> = events_of(&events)
        .into_iter()
        .filter_map(|e| match e {
            Event::SubmissionRefused(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].code, v1::RefusalCode::Revoked as i32);
    assert!(
        refused[0].reason.contains("retired one"),
        "{}",
        refused[0].reason
    );
    let accepted: Vec<_> = events_of(&events)
        .into_iter()
        .filter_map(|e| match e {
            Event::SubmissionAccepted(a) => a.envelope.as_ref().map(|s| s.envelope_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(accepted.len(), 1);
    assert!(!accepted.contains(&id));
}

#[tokio::test]
async fn a_node_stopped_during_a_rotation_takes_the_new_directory_before_its_deliveries() {
    let mut fed = federation(&["HR", "BA"]).await;
    start_all(&mut fed).await;
    // BA is down for the whole rotation of HR's keys; its own directory file
    // stays at version 1.
    fed.stop_node(cc("BA")).await.unwrap();
    let hr_next = new_keys(&fed, "HR");
    let until_ms = casebridge::daemon::clock::now_ms() + 3_600_000;
    edit_directory(&fed, |d| rotate(d, "HR", &hr_next, until_ms));
    signs_with(&fed, "HR", hr_next.signing).await;

    // Signed with HR's new key, queued at the broker for BA.
    let sent = send(
        &fed,
        "HR/police",
        &["BA/police"],
        record("wanted_alert"),
        police_to_third_country(),
    )
    .await;
    assert_accepted(&sent);
    fed.start_node(cc("BA")).await.unwrap();
    let status = settled(&fed, "HR/police", &sent.envelope_id).await;
    assert!(
        status
            .recipient_status
            .iter()
            .all(|r| r.state == v1::DeliveryState::Delivered as i32),
        "{status:?}"
    );
    assert_eq!(fed.node(cc("BA")).unwrap().directory().version, 2);
}

//! What must work: one-to-one, one-to-many, threads, and the signed receipts
//! that come back.

use casebridge::protocol::envelope;
use casebridge::protocol::proto::v1;
use v1::audit_event::Event;

use crate::support::*;

#[tokio::test]
async fn one_to_one_delivers_the_exact_record_with_a_signed_receipt() {
    let fed = start(&["BA", "HR"]).await;
    let rec = record("missing_person_trace");
    let mut l = humanitarian();
    l.handling = v1::HandlingCode::H3 as i32;
    l.handling_restriction = "Humanitarian use only.".into();
    let resp = send(
        &fed,
        "BA/missing-persons",
        &["HR/missing-persons"],
        rec.clone(),
        l,
    )
    .await;
    assert_accepted(&resp);

    let status = settled(&fed, "BA/missing-persons", &resp.envelope_id).await;
    assert_eq!(status.recipient_status.len(), 1);
    let rs = &status.recipient_status[0];
    assert_eq!(rs.state, v1::DeliveryState::Delivered as i32);
    let body = envelope::verify_receipt(
        rs.signed_receipt.as_ref().unwrap(),
        &directory(&fed),
        casebridge::daemon::clock::now_ms(),
    )
    .unwrap();
    assert_eq!(body.recipient_node, "HR");
    assert_eq!(body.delivered_to, vec!["HR/missing-persons".to_string()]);

    let got = fetch(&fed, "HR/missing-persons", &resp.envelope_id)
        .await
        .unwrap();
    assert_eq!(got.record.as_ref(), Some(&rec), "content arrives unchanged");
    let entry = got.entry.unwrap();
    assert_eq!(entry.sender_agency, "BA/missing-persons");
    assert_eq!(
        entry.labels.unwrap().handling_restriction,
        "Humanitarian use only.",
        "H3 text verbatim"
    );
    assert_eq!(entry.categories, resp.categories);

    // Only the addressed agency sees it.
    assert!(fetch(&fed, "HR/police", &resp.envelope_id).await.is_err());
    assert!(inbox(&fed, "HR/police").await.is_empty());

    let events = audit(&fed).await;
    let kinds = events_of(&events);
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(
        matches!(kinds[0], Event::DirectoryChanged(d) if d.version == 1),
        "the directory in force comes first"
    );
    let policy_hash = match kinds[1] {
        Event::PolicyChanged(p) => p.bundle_hash.clone(),
        other => panic!("then the policy set in force: {other:?}"),
    };
    match kinds[2] {
        Event::SubmissionAccepted(a) => {
            assert_eq!(
                a.envelope.as_ref().unwrap().sender_agency,
                "BA/missing-persons"
            );
            assert_eq!(
                a.policy_bundle_hash, policy_hash,
                "each decision names the set in force"
            );
            assert!(
                a.policy_explanation
                    .contains("missing-persons-inbound-tracing"),
                "{}",
                a.policy_explanation
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(kinds[3], Event::ReceiptRecorded(r) if r.status == v1::ReceiptStatus::Delivered as i32)
    );
}

#[tokio::test]
async fn one_to_many_reaches_every_country_once() {
    let fed = start(&["SI", "HR", "BA", "RS"]).await;
    let mut l = labels(
        v1::Purpose::ImmediateThreat,
        v1::LegalBasis::SpecificSituationDerogation,
        v1::HandlingCode::H0,
    );
    l.priority = v1::Priority::Immediate as i32;
    l.evaluation = Some(v1::Evaluation {
        source: v1::SourceReliability::B as i32,
        accuracy: v1::InformationAccuracy::InformationAccuracy2 as i32,
    });
    let to = ["HR/police", "BA/police", "RS/police"];
    let resp = send(&fed, "SI/police", &to, record("wanted_alert"), l).await;
    let status = settled(&fed, "SI/police", &resp.envelope_id).await;
    let mut nodes: Vec<&str> = status
        .recipient_status
        .iter()
        .map(|r| r.node.as_str())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["BA", "HR", "RS"]);
    assert!(
        status
            .recipient_status
            .iter()
            .all(|r| r.state == v1::DeliveryState::Delivered as i32)
    );
    for a in to {
        let entries = inbox(&fed, a).await;
        assert_eq!(entries.len(), 1, "{a}");
        assert_eq!(entries[0].envelope_id, resp.envelope_id);
        assert_eq!(entries[0].recipients.len(), 3);
    }
}

#[tokio::test]
async fn two_agencies_at_one_node_share_one_wrapped_key_and_both_get_it() {
    let fed = start(&["BA", "HR"]).await;
    let resp = send(
        &fed,
        "BA/police",
        &["HR/police", "HR/border-police"],
        record("wanted_alert"),
        immediate_alert(),
    )
    .await;
    let status = settled(&fed, "BA/police", &resp.envelope_id).await;
    assert_eq!(status.recipient_status.len(), 1, "one receipt per node");
    assert_eq!(status.recipient_status[0].agencies.len(), 2);
    assert_eq!(inbox(&fed, "HR/police").await.len(), 1);
    assert_eq!(inbox(&fed, "HR/border-police").await.len(), 1);
}

fn immediate_alert() -> v1::Labels {
    let mut l = labels(
        v1::Purpose::ImmediateThreat,
        v1::LegalBasis::RegionalPoliceConvention,
        v1::HandlingCode::H0,
    );
    l.priority = v1::Priority::Immediate as i32;
    l
}

fn humanitarian_police() -> v1::Labels {
    police_to_third_country()
}

#[tokio::test]
async fn a_reply_joins_the_thread_of_its_request() {
    let fed = start(&["RS", "ME"]).await;
    let l = labels(
        v1::Purpose::Prosecution,
        v1::LegalBasis::EuropeanMlaConvention,
        v1::HandlingCode::H1,
    );
    let req = send(
        &fed,
        "RS/prosecutor",
        &["ME/prosecutor"],
        record("mla_request"),
        l.clone(),
    )
    .await;
    settled(&fed, "RS/prosecutor", &req.envelope_id).await;

    let mut reply_labels = l.clone();
    reply_labels.in_reply_to = req.envelope_id.clone();
    let reply = send(
        &fed,
        "ME/prosecutor",
        &["RS/prosecutor"],
        record("mla_response"),
        reply_labels,
    )
    .await;
    settled(&fed, "ME/prosecutor", &reply.envelope_id).await;
    let got = fetch(&fed, "RS/prosecutor", &reply.envelope_id)
        .await
        .unwrap();
    assert_eq!(
        got.entry.unwrap().labels.unwrap().in_reply_to,
        req.envelope_id
    );
    let evidence = match got.record.unwrap().body {
        Some(v1::case_record::Body::MlaResponse(r)) => r.evidence,
        other => panic!("not an MLA response: {other:?}"),
    };
    assert!(
        !evidence.is_empty() && !evidence[0].content.is_empty(),
        "attachment arrives"
    );

    // A reply must answer something the replying agency holds.
    let mut stray = l;
    stray.in_reply_to =
        casebridge::protocol::ids::EnvelopeId::at(casebridge::daemon::clock::now_ms()).to_string();
    let err = try_send(
        &fed,
        "ME/prosecutor",
        &["RS/prosecutor"],
        record("mla_response"),
        stray,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("in_reply_to"), "{}", err.message());
}

#[tokio::test]
async fn watch_inbox_streams_new_arrivals() {
    let fed = start(&["BA", "HR"]).await;
    let mut watcher = fed.client("HR/missing-persons").unwrap();
    let mut stream = watcher
        .api
        .watch_inbox(v1::WatchInboxRequest {})
        .await
        .unwrap()
        .into_inner();
    let resp = send(
        &fed,
        "BA/missing-persons",
        &["HR/missing-persons"],
        record("missing_person_trace"),
        humanitarian(),
    )
    .await;
    let first = tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
        .await
        .expect("bounded wait")
        .unwrap()
        .unwrap();
    assert_eq!(first.envelope_id, resp.envelope_id);
}

#[tokio::test]
async fn a_lying_sender_is_caught_by_the_receiving_node_and_logged_as_a_violation() {
    let fed = start(&["HR", "BA"]).await;
    // Node HR seals fingerprints but declares identity only.
    let dir = directory(&fed);
    let key = node_signing_key(&fed, "HR");
    let sender: casebridge::protocol::ids::AgencyId = "HR/police".parse().unwrap();
    let recipients = ["BA/police".parse().unwrap()];
    let rec = record("fingerprints");
    let now = casebridge::daemon::clock::now_ms();
    let input = envelope::SealInput {
        sender: &sender,
        recipients: &recipients,
        record: &rec,
        labels: humanitarian_police(),
        created_at_ms: now,
        expires_at_ms: now + 86_400_000,
        onward_of: None,
        permission: None,
    };
    let declared = [v1::DataCategory::Identity].into_iter().collect();
    let sealed = envelope::seal_declaring(&input, declared, &key, &dir).unwrap();
    let mut hr = exchange_as_node(&fed, "HR");
    hr.submit(v1::SubmitRequest {
        envelope: Some(sealed.envelope),
    })
    .await
    .unwrap();

    let events = until("the violation", || async {
        let e = audit(&fed).await;
        e.iter()
            .any(|e| matches!(e.event, Some(Event::ContentViolation(_))))
            .then_some(e)
    })
    .await;
    let violation = events
        .iter()
        .find_map(|e| match &e.event {
            Some(Event::ContentViolation(v)) => Some(v.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(violation.sender_agency, "HR/police");
    assert_eq!(violation.reporting_node, "BA");
    assert_eq!(
        violation.code,
        v1::RejectionCode::UndeclaredCategories as i32
    );
    assert!(
        violation.detail.contains("biometric"),
        "{}",
        violation.detail
    );
    assert!(
        inbox(&fed, "BA/police").await.is_empty(),
        "content never reaches the agency"
    );
}

/// An immediate alert queued behind a backlog of routine records for a node
/// that is down is the first thing the node is given when it connects, then
/// an urgent record, then the routine backlog in the order it was queued.
#[tokio::test]
async fn an_immediate_envelope_overtakes_a_routine_backlog() {
    let mut fed = start(&["BA", "HR"]).await;
    fed.stop_node(cc("HR")).await.unwrap();
    // More than the broker reads from a queue at a time.
    let backlog = 20;
    let mut routine = Vec::new();
    for _ in 0..backlog {
        let r = send(
            &fed,
            "BA/police",
            &["HR/police"],
            record("wanted_alert"),
            police(),
        )
        .await;
        routine.push(r.envelope_id);
    }
    let mut urgent_labels = police();
    urgent_labels.priority = v1::Priority::Urgent as i32;
    let urgent = send(
        &fed,
        "BA/police",
        &["HR/police"],
        record("wanted_alert"),
        urgent_labels,
    )
    .await
    .envelope_id;
    let alert = send(
        &fed,
        "BA/police",
        &["HR/police"],
        record("wanted_alert"),
        immediate_alert(),
    )
    .await
    .envelope_id;
    let store = &fed.broker().expect("broker running").store;
    until("the whole backlog queued", || async {
        let n = store.pending(cc("HR"), None, usize::MAX).await.ok()?.len();
        (n == backlog + 2).then_some(())
    })
    .await;

    // The delivery stream, as node HR opens it.
    let mut stream = exchange_as_node(&fed, "HR")
        .receive(v1::ReceiveRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut order = Vec::new();
    // A safety net only: everything is queued before the stream opens.
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while order.len() < backlog + 2 {
            let d = stream.message().await.unwrap().expect("a delivery");
            let Some(v1::delivery::Item::Envelope(env)) = d.item else {
                panic!("only envelopes are queued for HR: {d:?}");
            };
            let summary = envelope::unverified_summary(&env).expect("header");
            let id = casebridge::protocol::ids::EnvelopeId::from_bytes(&summary.envelope_id)
                .expect("id")
                .to_string();
            order.push((d.seq, id));
        }
    })
    .await
    .expect("every queued envelope delivered");
    drop(stream);
    assert_eq!(order[0].1, alert, "the immediate alert comes first");
    assert_eq!(order[1].1, urgent, "then the urgent record");
    let mut got: Vec<&String> = order[2..].iter().map(|(_, id)| id).collect();
    assert!(
        order[2..].windows(2).all(|w| w[0].0 < w[1].0),
        "routine records in the order they were queued: {order:?}"
    );
    got.sort();
    let mut want: Vec<&String> = routine.iter().collect();
    want.sort();
    assert_eq!(got, want, "the whole backlog, each once");

    // The node, started, files every one of them.
    fed.start_node(cc("HR")).await.unwrap();
    until("the backlog filed", || async {
        (inbox(&fed, "HR/police").await.len() == backlog + 2).then_some(())
    })
    .await;
    for id in [&alert, &urgent] {
        let st = settled(&fed, "BA/police", id).await;
        assert_eq!(
            st.recipient_status[0].state,
            v1::DeliveryState::Delivered as i32
        );
    }
}

/// A node slower than the broker: the broker keeps at most a window of
/// deliveries unacknowledged, so an immediate alert queued while a routine
/// backlog is being delivered is the next delivery once the node
/// acknowledges one, not one after everything a transport could buffer.
#[tokio::test]
async fn an_immediate_envelope_overtakes_a_backlog_being_delivered() {
    use casebridge::daemon::broker::service::DELIVERY_WINDOW;
    let mut fed = start(&["BA", "HR"]).await;
    fed.stop_node(cc("HR")).await.unwrap();
    let window = DELIVERY_WINDOW;
    let backlog = window + 8;
    for _ in 0..backlog {
        send(
            &fed,
            "BA/police",
            &["HR/police"],
            record("wanted_alert"),
            police(),
        )
        .await;
    }
    let store = fed.broker().expect("broker running").store.clone();
    let queued = |n: usize| {
        let store = store.clone();
        async move {
            let len = store.pending(cc("HR"), None, usize::MAX).await.ok()?.len();
            (len == n).then_some(())
        }
    };
    until("the backlog queued", || queued(backlog)).await;

    let mut hr = exchange_as_node(&fed, "HR");
    let mut stream = hr
        .receive(v1::ReceiveRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut first = None;
    for _ in 0..window {
        let (seq, env) = next_envelope(&mut stream).await;
        first.get_or_insert((seq, env));
    }
    // The window is full; the alert is queued behind the rest.
    let alert = send(
        &fed,
        "BA/police",
        &["HR/police"],
        record("wanted_alert"),
        immediate_alert(),
    )
    .await
    .envelope_id;
    until("the alert queued", || queued(backlog + 1)).await;
    let (seq, env) = first.expect("a first delivery");
    acknowledge_as_hr(&fed, &mut hr, seq, &env).await;
    let (_, env) = next_envelope(&mut stream).await;
    assert_eq!(
        id_of(&env),
        alert,
        "the alert comes next, ahead of {} routine records",
        backlog - window
    );
}

/// Queues `n` routine records for HR (stopped) and waits until they are.
async fn routine_backlog_for_hr(fed: &mut Fed, n: usize) -> Vec<String> {
    fed.stop_node(cc("HR")).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..n {
        let r = send(
            fed,
            "BA/police",
            &["HR/police"],
            record("wanted_alert"),
            police(),
        )
        .await;
        ids.push(r.envelope_id);
    }
    queued_for_hr(fed, n).await;
    ids
}

/// Waits until `n` items are queued for HR.
async fn queued_for_hr(fed: &Fed, n: usize) {
    let store = fed.broker().expect("broker running").store.clone();
    until("the records queued for HR", || {
        let store = store.clone();
        async move {
            let len = store.pending(cc("HR"), None, usize::MAX).await.ok()?.len();
            (len == n).then_some(())
        }
    })
    .await;
}

async fn send_alert_to_hr(fed: &Fed) -> String {
    send(
        fed,
        "BA/police",
        &["HR/police"],
        record("wanted_alert"),
        immediate_alert(),
    )
    .await
    .envelope_id
}

/// Opens one of HR's delivery streams by hand.
async fn hr_stream(
    hr: &mut casebridge::daemon::rpc::exchange_client::ExchangeClient<tonic::transport::Channel>,
    lanes: v1::DeliveryLanes,
) -> tonic::Streaming<v1::Delivery> {
    hr.receive(v1::ReceiveRequest {
        lanes: lanes as i32,
    })
    .await
    .unwrap()
    .into_inner()
}

/// A node that holds an immediate stream gets an alert on it at once, while
/// its main stream is stalled with a full window of routine deliveries it
/// has not acknowledged; and the main stream never carries that alert too.
#[tokio::test]
async fn an_immediate_envelope_goes_on_its_own_stream_while_the_main_stream_is_stalled() {
    use casebridge::daemon::broker::service::DELIVERY_WINDOW;
    let mut fed = start(&["BA", "HR"]).await;
    let backlog = DELIVERY_WINDOW + 8;
    routine_backlog_for_hr(&mut fed, backlog).await;

    let mut hr = exchange_as_node(&fed, "HR");
    let mut main = hr_stream(&mut hr, v1::DeliveryLanes::All).await;
    let mut firsts = Vec::new();
    for _ in 0..DELIVERY_WINDOW {
        firsts.push(next_envelope(&mut main).await);
    }
    // The main stream's window is full and nothing is acknowledged.
    let mut alerts = hr_stream(&mut hr, v1::DeliveryLanes::Immediate).await;
    let alert = send_alert_to_hr(&fed).await;
    let (alert_seq, env) = next_envelope(&mut alerts).await;
    assert_eq!(id_of(&env), alert, "the alert overtakes the stalled stream");

    // The main stream goes on with routine records only: the alert is in
    // flight on the immediate stream, never on both.
    for (seq, env) in firsts {
        acknowledge_as_hr(&fed, &mut hr, seq, &env).await;
    }
    for _ in 0..backlog - DELIVERY_WINDOW {
        let (seq, env) = next_envelope(&mut main).await;
        assert_ne!(seq, alert_seq);
        assert_ne!(id_of(&env), alert);
    }
    acknowledge_as_hr(&fed, &mut hr, alert_seq, &env).await;
    queued_for_hr(&fed, backlog - DELIVERY_WINDOW).await;
}

/// An alert held unacknowledged on an immediate stream that then ends comes
/// again on the main stream, which carries the immediate lane again; while
/// the immediate stream held it, the main stream did not send it.
#[tokio::test]
async fn a_node_whose_immediate_stream_ends_gets_its_immediates_on_the_main_stream() {
    let mut fed = start(&["BA", "HR"]).await;
    routine_backlog_for_hr(&mut fed, 0).await;
    let mut hr = exchange_as_node(&fed, "HR");
    let mut main = hr_stream(&mut hr, v1::DeliveryLanes::All).await;
    let alert_id = {
        let mut alerts = hr_stream(&mut hr, v1::DeliveryLanes::Immediate).await;
        let alert = send_alert_to_hr(&fed).await;
        let (_, env) = next_envelope(&mut alerts).await;
        assert_eq!(id_of(&env), alert);
        // Queued after the alert, and the first the main stream sends: the
        // alert is the immediate stream's while it is open.
        let routine = send(
            &fed,
            "BA/police",
            &["HR/police"],
            record("wanted_alert"),
            police(),
        )
        .await
        .envelope_id;
        let (seq, env) = next_envelope(&mut main).await;
        assert_eq!(id_of(&env), routine);
        acknowledge_as_hr(&fed, &mut hr, seq, &env).await;
        alert
        // The immediate stream ends here, its alert unacknowledged.
    };
    let (seq, env) = next_envelope(&mut main).await;
    assert_eq!(
        id_of(&env),
        alert_id,
        "the main stream takes the alert back"
    );
    acknowledge_as_hr(&fed, &mut hr, seq, &env).await;
    queued_for_hr(&fed, 0).await;
}

/// A whole federation whose nodes hold both streams files an alert and a
/// routine record sent to a node that was away, each once, with receipts.
#[tokio::test]
async fn alerts_and_routine_records_queued_for_an_absent_node_are_each_filed_once() {
    let mut fed = start(&["BA", "HR"]).await;
    let routine = routine_backlog_for_hr(&mut fed, 3).await;
    let alert = send_alert_to_hr(&fed).await;
    queued_for_hr(&fed, 4).await;
    fed.start_node(cc("HR")).await.unwrap();
    for id in routine.iter().chain([&alert]) {
        let status = settled(&fed, "BA/police", id).await;
        assert_eq!(
            status.recipient_status[0].state,
            v1::DeliveryState::Delivered as i32
        );
    }
    let entries = inbox(&fed, "HR/police").await;
    assert_eq!(entries.len(), 4, "each record filed once");
    queued_for_hr(&fed, 0).await;
}

/// Acknowledges a delivered envelope as HR's node would.
async fn acknowledge_as_hr(
    fed: &Fed,
    hr: &mut casebridge::daemon::rpc::exchange_client::ExchangeClient<tonic::transport::Channel>,
    seq: u64,
    env: &v1::Envelope,
) {
    let summary = envelope::unverified_summary(env).expect("header");
    let body = v1::ReceiptBody {
        envelope_id: summary.envelope_id,
        recipient_node: "HR".into(),
        status: v1::ReceiptStatus::Delivered as i32,
        delivered_to: vec!["HR/police".into()],
        at_ms: casebridge::daemon::clock::now_ms(),
        header_sha256: summary.header_sha256,
        ..Default::default()
    };
    let receipt = envelope::sign_receipt(&body, &node_signing_key(fed, "HR"));
    hr.acknowledge(v1::AcknowledgeRequest {
        seq,
        receipt: Some(receipt),
    })
    .await
    .unwrap();
}

/// The envelope id an envelope's header claims, as text.
fn id_of(env: &v1::Envelope) -> String {
    let id = envelope::unverified_summary(env)
        .expect("header")
        .envelope_id;
    casebridge::protocol::ids::EnvelopeId::from_bytes(&id)
        .unwrap()
        .to_string()
}

/// The next delivery on `stream`, an envelope.
async fn next_envelope(stream: &mut tonic::Streaming<v1::Delivery>) -> (u64, v1::Envelope) {
    // A safety net only: each awaited delivery is due.
    let d = tokio::time::timeout(std::time::Duration::from_secs(30), stream.message())
        .await
        .expect("a delivery in time")
        .unwrap()
        .expect("a delivery");
    match d.item {
        Some(v1::delivery::Item::Envelope(env)) => (d.seq, env),
        other => panic!("only envelopes are queued here: {other:?}"),
    }
}

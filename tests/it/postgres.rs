//! The broker on PostgreSQL: the core delivery path end to end (send,
//! deliver, receipt, the log checked as an auditor checks it), and a
//! restart that finds everything where it was. Runs on a database of its
//! own on the server `CASEBRIDGE_TEST_POSTGRES` names; skipped, said
//! loudly, without one.

use casebridge::protocol::envelope;
use casebridge::protocol::proto::v1;
use v1::audit_event::Event;

use crate::support::*;

#[tokio::test]
async fn delivery_receipt_and_audit_with_the_broker_on_postgres() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let mut fed = create_on_postgres(&["BA", "HR"], &db).await;
    start_all(&mut fed).await;
    let rec = record("missing_person_trace");
    let resp = send(
        &fed,
        "BA/missing-persons",
        &["HR/missing-persons"],
        rec.clone(),
        humanitarian(),
    )
    .await;
    assert_accepted(&resp);
    let status = settled(&fed, "BA/missing-persons", &resp.envelope_id).await;
    let rs = &status.recipient_status[0];
    assert_eq!(rs.state, v1::DeliveryState::Delivered as i32);
    let body = envelope::verify_receipt(
        rs.signed_receipt.as_ref().unwrap(),
        &directory(&fed),
        casebridge::daemon::clock::now_ms(),
    )
    .unwrap();
    assert_eq!(body.recipient_node, "HR");
    let got = fetch(&fed, "HR/missing-persons", &resp.envelope_id)
        .await
        .unwrap();
    assert_eq!(got.record.as_ref(), Some(&rec), "content arrives unchanged");

    let events = audit(&fed).await;
    let kinds = events_of(&events);
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(matches!(kinds[2], Event::SubmissionAccepted(_)));
    assert!(
        matches!(kinds[3], Event::ReceiptRecorded(r) if r.status == v1::ReceiptStatus::Delivered as i32)
    );

    // The log as an auditor checks it: every leaf re-hashed against the
    // signed checkpoint, and the submission proven included.
    let size = checkpoint_now(&fed).await;
    assert_eq!(size, 4);
    let profile = fed.fed.auditor_profiles[0].1.clone();
    let report = casebridge::tools::audit::verify(&profile, None)
        .await
        .unwrap();
    assert_eq!(report.size(), size);
    let proof = casebridge::tools::audit::prove(&profile, None, &resp.envelope_id)
        .await
        .unwrap();
    assert_eq!(proof.envelope_id.to_string(), resp.envelope_id);

    // A restart reads the same database: the log checks against its
    // checkpoint, the id is still seen, and traffic goes on.
    fed.stop_broker().await.unwrap();
    fed.start_broker().await.unwrap();
    let b = fed.broker().unwrap().clone();
    assert_eq!(
        b.log.verify_stored(b.store.as_ref()).await.unwrap(),
        Some(size)
    );
    let again = send(
        &fed,
        "BA/missing-persons",
        &["HR/missing-persons"],
        record("missing_person_trace"),
        humanitarian(),
    )
    .await;
    assert_accepted(&again);
    let status = settled(&fed, "BA/missing-persons", &again.envelope_id).await;
    assert_eq!(
        status.recipient_status[0].state,
        v1::DeliveryState::Delivered as i32
    );
    assert!(checkpoint_now(&fed).await > size);
    let report = casebridge::tools::audit::verify(&profile, None)
        .await
        .unwrap();
    assert_eq!(
        report.previous_size,
        Some(size),
        "consistent with the last run"
    );

    fed.f.shutdown().await.unwrap();
    db.drop_db().await;
}

/// A federation that ran on sled moves to PostgreSQL: `broker migrate`
/// copies the stopped broker's store, the broker starts on the database
/// (its start check re-derives the tree against the signed checkpoint),
/// what was queued is still delivered, and the auditor's next run proves
/// the log consistent with the one it checked before.
#[tokio::test]
async fn a_broker_moves_from_sled_to_postgres_with_broker_migrate() {
    let Some(db) = PgDb::create().await else {
        return;
    };
    let mut fed = start(&["BA", "HR"]).await;
    let first = send(
        &fed,
        "BA/missing-persons",
        &["HR/missing-persons"],
        record("missing_person_trace"),
        humanitarian(),
    )
    .await;
    settled(&fed, "BA/missing-persons", &first.envelope_id).await;
    let size = checkpoint_now(&fed).await;
    let profile = fed.fed.auditor_profiles[0].1.clone();
    let report = casebridge::tools::audit::verify(&profile, None)
        .await
        .unwrap();
    assert_eq!(report.size(), size);
    // HR is away: what is sent now waits in the broker's queue.
    fed.stop_node(cc("HR")).await.unwrap();
    let queued = send(
        &fed,
        "BA/missing-persons",
        &["HR/missing-persons"],
        record("missing_person_trace"),
        humanitarian(),
    )
    .await;
    assert_accepted(&queued);
    until("the broker to accept it", || {
        let fed = &fed;
        let id = queued.envelope_id.clone();
        async move {
            let s = status(fed, "BA/missing-persons", &id).await;
            (s.log_index > 0).then_some(())
        }
    })
    .await;
    fed.stop_broker().await.unwrap();
    tokio::task::yield_now().await;

    let data_dir = fed.broker_config.data_dir.clone();
    let mut to = fed.broker_config.clone();
    to.storage = postgres_storage(&db);
    let moved = casebridge::daemon::broker::migrate(&data_dir, &to)
        .await
        .unwrap();
    assert!(moved.log_entries > size, "{moved:?}");
    assert_eq!(moved.integrated, moved.log_entries);
    assert_eq!(moved.queued, 1, "{moved:?}");
    assert!(moved.checkpoints >= 1);
    let again = casebridge::daemon::broker::migrate(&data_dir, &to)
        .await
        .unwrap_err();
    assert!(
        format!("{again:#}").contains("migrate only into a database no broker has used"),
        "{again:#}"
    );

    fed.f.broker_config = to;
    fed.start_broker().await.unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    let status = settled(&fed, "BA/missing-persons", &queued.envelope_id).await;
    assert_eq!(
        status.recipient_status[0].state,
        v1::DeliveryState::Delivered as i32
    );
    let bigger = checkpoint_now(&fed).await;
    assert!(bigger > size);
    let report = casebridge::tools::audit::verify(&profile, None)
        .await
        .unwrap();
    assert_eq!(report.size(), bigger);
    assert_eq!(
        report.previous_size,
        Some(size),
        "consistent with what the auditor checked on sled"
    );
    fed.f.shutdown().await.unwrap();
    db.drop_db().await;
}

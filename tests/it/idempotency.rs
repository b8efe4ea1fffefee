//! Exactly once from the agency's call: Send, Forward, RequestPermission and
//! GrantPermission under an idempotency key make one envelope however often
//! the agency calls, through lost answers, races and a node killed between
//! the call and its answer. Keys belong to the calling agency.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};

use casebridge::protocol::ids::EnvelopeId;
use casebridge::protocol::proto::v1;
use tonic::Code;
use v1::audit_event::Event;

use crate::adversary::node::hostile_broker::{HostileBroker, claimed_id};
use crate::support::*;

fn keyed_send(
    to: &[&str],
    record: v1::CaseRecord,
    labels: v1::Labels,
    key: &str,
) -> v1::SendRequest {
    v1::SendRequest {
        recipients: to.iter().map(ToString::to_string).collect(),
        record: Some(record),
        labels: Some(labels),
        idempotency_key: key.into(),
    }
}

async fn send_as(
    fed: &Fed,
    from: &str,
    req: v1::SendRequest,
) -> Result<v1::SendResponse, tonic::Status> {
    let mut c = fed.client(from).expect("client");
    c.api.send(req).await.map(tonic::Response::into_inner)
}

/// The record `BA/police` sends `HR/police` in these tests.
fn alert(key: &str) -> v1::SendRequest {
    keyed_send(&["HR/police"], record("wanted_alert"), police(), key)
}

/// How many records `agency` sent, as its node lists them.
async fn sent_count(fed: &Fed, agency: &str) -> usize {
    let mut c = fed.client(agency).expect("client");
    c.api
        .list_sent(v1::ListSentRequest {})
        .await
        .expect("list sent")
        .into_inner()
        .sent
        .len()
}

/// The envelope ids of the acceptances in the broker's audit log.
async fn accepted_ids(fed: &Fed) -> Vec<String> {
    audit(fed)
        .await
        .into_iter()
        .filter_map(|e| match e.event {
            Some(Event::SubmissionAccepted(a)) => a.envelope.map(|s| {
                EnvelopeId::from_bytes(&s.envelope_id)
                    .expect("envelope id")
                    .to_string()
            }),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn another_agency_using_the_same_key_gets_a_record_of_its_own() {
    let fed = start(&["BA", "HR"]).await;
    let key = "0193b0f2-shared-key";
    let police = send_as(&fed, "BA/police", alert(key)).await.unwrap();
    assert!(!police.repeat);

    // Another agency of the same node, the same key: neither the police's
    // envelope nor a refusal (which would tell it the key was in use).
    let mut l = humanitarian();
    l.handling = v1::HandlingCode::H3 as i32;
    l.handling_restriction = "Humanitarian use only.".into();
    let theirs = keyed_send(
        &["HR/missing-persons"],
        record("missing_person_trace"),
        l,
        key,
    );
    let mp = send_as(&fed, "BA/missing-persons", theirs.clone())
        .await
        .unwrap();
    assert!(!mp.repeat, "a new record, not a repeat");
    assert_ne!(mp.envelope_id, police.envelope_id);
    // Each agency's repeat finds its own record.
    let again = send_as(&fed, "BA/missing-persons", theirs).await.unwrap();
    assert_eq!(
        (again.envelope_id.as_str(), again.repeat),
        (mp.envelope_id.as_str(), true)
    );
    let again = send_as(&fed, "BA/police", alert(key)).await.unwrap();
    assert_eq!(
        (again.envelope_id.as_str(), again.repeat),
        (police.envelope_id.as_str(), true)
    );
    // The police's very request under the key, made by a third agency, is
    // that agency's own call: a record of its own if policy allows it, a
    // policy refusal if not, never the police's envelope nor a conflict.
    match send_as(&fed, "BA/prosecutor", alert(key)).await {
        Ok(r) => {
            assert_ne!(r.envelope_id, police.envelope_id);
            assert!(!r.repeat);
        }
        Err(s) => assert_eq!(s.code(), Code::PermissionDenied, "{}", s.message()),
    }
    settled(&fed, "BA/police", &police.envelope_id).await;
    settled(&fed, "BA/missing-persons", &mp.envelope_id).await;
    assert_eq!(inbox(&fed, "HR/police").await.len(), 1);
    assert_eq!(inbox(&fed, "HR/missing-persons").await.len(), 1);
}

#[tokio::test]
async fn a_repeated_call_answers_the_first_envelope_and_one_is_delivered() {
    let fed = start(&["BA", "HR"]).await;
    let first = send_as(&fed, "BA/police", alert("send-1")).await.unwrap();
    assert_accepted(&first);
    assert!(!first.repeat);
    settled(&fed, "BA/police", &first.envelope_id).await;

    let again = send_as(&fed, "BA/police", alert("send-1")).await.unwrap();
    assert_eq!(again.envelope_id, first.envelope_id);
    assert!(again.repeat);
    // The state now, as Status gives it.
    let st = status(&fed, "BA/police", &first.envelope_id).await;
    assert_eq!(
        (again.state, again.log_index, &again.categories),
        (st.state, st.log_index, &st.categories)
    );
    assert_eq!(again.log_index, first.log_index);

    assert_eq!(sent_count(&fed, "BA/police").await, 1);
    let got = inbox(&fed, "HR/police").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].envelope_id, first.envelope_id);
    assert_eq!(accepted_ids(&fed).await, vec![first.envelope_id.clone()]);

    // Without a key every call is a record of its own, as before.
    let a = send_as(&fed, "BA/police", alert("")).await.unwrap();
    let b = send_as(&fed, "BA/police", alert("")).await.unwrap();
    assert_ne!(a.envelope_id, b.envelope_id);
    assert!(!a.repeat && !b.repeat);
}

#[tokio::test]
async fn a_key_used_again_for_other_content_is_refused_and_nothing_is_queued_or_logged() {
    let fed = start(&["BA", "HR"]).await;
    let first = send_as(&fed, "BA/police", alert("send-2")).await.unwrap();
    settled(&fed, "BA/police", &first.envelope_id).await;
    let log = audit(&fed).await.len();

    let mut other_labels = police();
    other_labels.case_reference = "TEST-CASE-2".into();
    let mut other_recipients = alert("send-2");
    other_recipients.recipients = vec!["HR/prosecutor".into()];
    for req in [
        keyed_send(
            &["HR/police"],
            record("wanted_alert"),
            other_labels,
            "send-2",
        ),
        other_recipients,
        keyed_send(
            &["HR/police"],
            record("missing_person_trace"),
            police(),
            "send-2",
        ),
    ] {
        let err = send_as(&fed, "BA/police", req).await.unwrap_err();
        assert_status(
            &err,
            Code::FailedPrecondition,
            "was used by BA/police for different content",
        );
        assert!(
            err.message().contains(&first.envelope_id),
            "{}",
            err.message()
        );
    }
    // The same key on another call that makes an envelope is other content
    // too, refused before anything else is looked at.
    let mut ba = fed.client("BA/police").unwrap();
    let err = ba
        .api
        .forward(v1::ForwardRequest {
            idempotency_key: "send-2".into(),
            ..forward(&first.envelope_id, "HR/police")
        })
        .await
        .unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "different content");

    // Nothing sealed, queued or logged for the refused calls.
    assert_eq!(sent_count(&fed, "BA/police").await, 1);
    assert!(
        fed.node(cc("BA"))
            .unwrap()
            .store
            .outbox()
            .await
            .unwrap()
            .is_empty()
    );
    let events = audit(&fed).await;
    assert!(
        events[log..]
            .iter()
            .all(|e| !matches!(&e.event, Some(Event::SubmissionAccepted(a)) if a.envelope.as_ref().is_some_and(|s| s.sender_node == "BA"))),
        "no new acceptance from BA"
    );
    assert!(
        events[log..]
            .iter()
            .all(|e| !matches!(&e.event, Some(Event::SubmissionRefused(_)))),
        "no refusal reported either"
    );
    assert_eq!(inbox(&fed, "HR/police").await.len(), 1);
}

#[tokio::test]
async fn keys_are_checked_where_they_arrive() {
    let fed = start(&["BA", "HR"]).await;
    let long = "k".repeat(129);
    let err = send_as(&fed, "BA/police", alert(&long)).await.unwrap_err();
    assert_status(
        &err,
        Code::InvalidArgument,
        "idempotency_key is 129 bytes long; the limit is 128",
    );
    for bad in ["with space", "tab\t", "ключ"] {
        let err = send_as(&fed, "BA/police", alert(bad)).await.unwrap_err();
        assert_status(&err, Code::InvalidArgument, "printable ASCII");
    }
    let mut c = fed.client("BA/police").unwrap();
    let err = c
        .api
        .grant_permission(v1::GrantPermissionRequest {
            request_envelope_id: EnvelopeId::at(1).to_string(),
            conditions: String::new(),
            idempotency_key: long.clone(),
        })
        .await
        .unwrap_err();
    assert_status(&err, Code::InvalidArgument, "the limit is 128");
    assert_eq!(sent_count(&fed, "BA/police").await, 0);
    let ok = send_as(&fed, "BA/police", alert(&"k".repeat(128)))
        .await
        .unwrap();
    assert!(!ok.repeat);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_under_one_key_make_one_envelope() {
    let fed = start(&["BA", "HR"]).await;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let c = fed.client("BA/police").unwrap();
            tokio::spawn(async move {
                let mut api = c.api;
                api.send(alert("race-1"))
                    .await
                    .map(tonic::Response::into_inner)
            })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    let mut new = 0;
    for c in calls {
        let r = c.await.unwrap().unwrap();
        new += usize::from(!r.repeat);
        ids.insert(r.envelope_id);
    }
    assert_eq!(ids.len(), 1, "every call names the same envelope");
    assert_eq!(new, 1, "one call made it, the others repeat it");
    let id = ids.into_iter().next().unwrap();
    settled(&fed, "BA/police", &id).await;
    assert_eq!(sent_count(&fed, "BA/police").await, 1);
    assert_eq!(inbox(&fed, "HR/police").await.len(), 1);
    assert_eq!(accepted_ids(&fed).await, vec![id]);
}

#[tokio::test]
async fn forward_and_permissions_take_keys_too() {
    let fed = start(&["MK", "RS", "AL"]).await;
    let report = send(
        &fed,
        "MK/police",
        &["RS/police"],
        record("intelligence_report"),
        h2_labels(),
    )
    .await;
    settled(&fed, "MK/police", &report.envelope_id).await;
    let mut rs = fed.client("RS/police").unwrap();
    let mut mk = fed.client("MK/police").unwrap();

    let ask = v1::RequestPermissionRequest {
        envelope_id: report.envelope_id.clone(),
        third_agencies: vec!["AL/police".into()],
        justification: "the route continues".into(),
        idempotency_key: "ask-1".into(),
    };
    let asked = rs
        .api
        .request_permission(ask.clone())
        .await
        .unwrap()
        .into_inner();
    let again = rs
        .api
        .request_permission(ask.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.envelope_id.as_str(), again.repeat),
        (asked.envelope_id.as_str(), true)
    );
    settled(&fed, "RS/police", &asked.envelope_id).await;

    let grant = v1::GrantPermissionRequest {
        request_envelope_id: asked.envelope_id.clone(),
        conditions: "H2 stays".into(),
        idempotency_key: "grant-1".into(),
    };
    let granted = mk
        .api
        .grant_permission(grant.clone())
        .await
        .unwrap()
        .into_inner();
    let again = mk.api.grant_permission(grant).await.unwrap().into_inner();
    assert_eq!(
        (again.envelope_id.as_str(), again.repeat),
        (granted.envelope_id.as_str(), true)
    );
    settled(&fed, "MK/police", &granted.envelope_id).await;

    let fwd = v1::ForwardRequest {
        idempotency_key: "forward-1".into(),
        ..forward(&report.envelope_id, "AL/police")
    };
    let onward = rs.api.forward(fwd.clone()).await.unwrap().into_inner();
    assert_accepted(&onward);
    let again = rs.api.forward(fwd).await.unwrap().into_inner();
    assert_eq!(
        (again.envelope_id.as_str(), again.repeat),
        (onward.envelope_id.as_str(), true)
    );
    settled(&fed, "RS/police", &onward.envelope_id).await;

    // One key per agency across the calls: the request's key on a forward.
    let err = rs
        .api
        .forward(v1::ForwardRequest {
            idempotency_key: "ask-1".into(),
            ..forward(&report.envelope_id, "AL/police")
        })
        .await
        .unwrap_err();
    assert_status(&err, Code::FailedPrecondition, "different content");

    assert_eq!(
        inbox(&fed, "MK/police").await.len(),
        1,
        "one permission request"
    );
    assert_eq!(
        inbox(&fed, "RS/police").await.len(),
        2,
        "the record and one grant"
    );
    assert_eq!(inbox(&fed, "AL/police").await.len(), 1, "passed on once");
    assert_eq!(accepted_ids(&fed).await.len(), 4);
}

/// A node as its own process, so it can be killed for real.
struct NodeProcess(Child);

impl NodeProcess {
    /// Starts node `c` of `fed` on its agency address, dialling `broker`.
    async fn start(fed: &Fed, c: &str, broker: &str) -> NodeProcess {
        let mut cfg = fed.node_configs[&cc(c)].clone();
        cfg.listen = fed.node_addr(cc(c)).expect("node address");
        cfg.broker = Some(broker.to_string());
        cfg.brokers.clear();
        let config = fed.fed.dir.join(format!("node-{c}-process.toml"));
        std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();
        tokio::task::spawn_blocking(move || NodeProcess::spawn(&config))
            .await
            .unwrap()
    }

    fn spawn(config: &std::path::Path) -> NodeProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_casebridge"))
            .args(["node", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn node");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("node output");
        assert!(
            line.contains("listening on"),
            "node did not start: {line:?}"
        );
        NodeProcess(child)
    }

    /// SIGKILL: the node gets no chance to do anything more.
    async fn kill(self) {
        tokio::task::spawn_blocking(move || {
            let mut me = self;
            me.0.kill().expect("SIGKILL");
            me.0.wait().expect("reap");
        })
        .await
        .unwrap();
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// After a kill and a retry under `key`: the retry names `id`, and exactly
/// one envelope reached the recipient and one acceptance the log.
async fn exactly_one(fed: &Fed, retry: &v1::SendResponse, id: &str) {
    assert_eq!(retry.envelope_id, id);
    let st = settled(fed, "BA/police", id).await;
    assert_eq!(st.state, v1::SendState::Accepted as i32, "{}", st.detail);
    assert_eq!(
        st.recipient_status[0].state,
        v1::DeliveryState::Delivered as i32
    );
    let got: Vec<String> = inbox(fed, "HR/police")
        .await
        .into_iter()
        .map(|e| e.envelope_id)
        .collect();
    assert_eq!(got, vec![id.to_string()], "one envelope delivered");
    assert_eq!(
        accepted_ids(fed).await,
        vec![id.to_string()],
        "one acceptance logged"
    );
    assert_eq!(sent_count(fed, "BA/police").await, 1);
}

#[tokio::test]
async fn a_node_killed_between_the_call_and_its_answer_sends_one_envelope() {
    let mut fed = create(&["BA", "HR"]).await;
    // A broker that takes the submission and never answers: the node has
    // sealed the record and written it durably (only durable envelopes are
    // submitted), and the agency is still waiting for its answer.
    let hostile = HostileBroker::start(&fed).await;
    hostile.hold_submits();
    let node = NodeProcess::start(&fed, "BA", &hostile.addr.to_string()).await;
    let mut c = fed.client("BA/police").unwrap();
    let call = tokio::spawn(async move { c.api.send(alert("kill-1")).await });
    let submitted = hostile.wait_submits(cc("BA"), 1).await;
    let id = claimed_id(submitted.first())
        .expect("an envelope id")
        .to_string();
    node.kill().await;
    let lost = call.await.unwrap();
    assert!(lost.is_err(), "the agency never read an answer: {lost:?}");
    drop(hostile);

    // The real broker, the node again, the recipient; the agency retries.
    fed.start_broker().await.unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    let node = NodeProcess::start(&fed, "BA", &fed.broker_addr.to_string()).await;
    let retry = send_as(&fed, "BA/police", alert("kill-1")).await.unwrap();
    assert!(retry.repeat);
    exactly_one(&fed, &retry, &id).await;
    node.kill().await;
    fed.f.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_node_killed_after_answering_answers_the_retry_with_the_same_envelope() {
    let mut fed = create(&["BA", "HR"]).await;
    fed.start_broker().await.unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    let node = NodeProcess::start(&fed, "BA", &fed.broker_addr.to_string()).await;
    let first = send_as(&fed, "BA/police", alert("kill-2")).await.unwrap();
    node.kill().await;
    let node = NodeProcess::start(&fed, "BA", &fed.broker_addr.to_string()).await;
    let retry = send_as(&fed, "BA/police", alert("kill-2")).await.unwrap();
    assert!(retry.repeat);
    exactly_one(&fed, &retry, &first.envelope_id).await;
    node.kill().await;
    fed.f.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_node_killed_while_the_call_is_in_flight_sends_one_envelope_either_way() {
    let mut fed = create(&["BA", "HR"]).await;
    fed.start_broker().await.unwrap();
    fed.start_node(cc("HR")).await.unwrap();
    let node = NodeProcess::start(&fed, "BA", &fed.broker_addr.to_string()).await;
    let mut c = fed.client("BA/police").unwrap();
    let call = tokio::spawn(async move { c.api.send(alert("kill-3")).await });
    // Killed as soon as the broker has accepted the envelope: the node may
    // or may not have answered the agency by then. Either way the retry
    // leaves one envelope, and the one any answer named.
    let id = until("the broker's acceptance", || async {
        accepted_ids(&fed).await.pop()
    })
    .await;
    node.kill().await;
    let answered = call.await.unwrap().ok().map(|r| r.into_inner().envelope_id);
    let node = NodeProcess::start(&fed, "BA", &fed.broker_addr.to_string()).await;
    let retry = send_as(&fed, "BA/police", alert("kill-3")).await.unwrap();
    assert!(retry.repeat);
    if let Some(answered) = &answered {
        assert_eq!(answered, &id);
    }
    exactly_one(&fed, &retry, &id).await;
    node.kill().await;
    fed.f.shutdown().await.unwrap();
}

/// Runs `casebridge send` as `BA/police` to `HR/police` with the labels of
/// [`police`], plus `args`; returns whether it succeeded, its stdout and
/// its stderr.
async fn cli_send(fed: &Fed, args: &[&str]) -> (bool, String, String) {
    let agency = "BA/police".parse().unwrap();
    let mut profile = fed.agency_profile(&agency).unwrap();
    profile.node = fed.node_addr(cc("BA")).unwrap().to_string();
    let path = fed.fed.dir.join("cli-profile.toml");
    std::fs::write(&path, toml::to_string(&profile).unwrap()).unwrap();
    let record = format!(
        "{}/examples/records/wanted_alert.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_casebridge"));
    cmd.arg("send")
        .arg("--profile")
        .arg(&path)
        .args(["--to", "HR/police", "--kind", "wanted_alert", "--record"])
        .arg(record)
        .args([
            "--purpose",
            "investigation-other",
            "--legal-basis",
            "regional-police-convention",
            "--legal-basis-ref",
            "Test agreement, Art. 5",
            "--case-ref",
            "TEST-CASE-1",
        ])
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run casebridge send"))
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_answer(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test]
async fn the_cli_sends_once_under_a_key_and_makes_a_key_when_none_is_given() {
    let fed = start(&["BA", "HR"]).await;
    let (ok, out, err) = cli_send(&fed, &["--idempotency-key", "cli-1", "--json"]).await;
    assert!(ok, "{err}");
    let first = json_answer(&out);
    let (ok, out, err) = cli_send(&fed, &["--idempotency-key", "cli-1", "--json"]).await;
    assert!(ok, "{err}");
    let again = json_answer(&out);
    assert_eq!(again["envelopeId"], first["envelopeId"]);
    assert_eq!(again["repeat"], true);

    // Without a key the command makes one, says which, and a run with it
    // gets that run's envelope back.
    let (ok, out, err) = cli_send(&fed, &[]).await;
    assert!(ok, "{err}");
    let key = err
        .lines()
        .find_map(|l| l.strip_prefix("idempotency key "))
        .unwrap_or_else(|| panic!("no key on stderr: {err}"))
        .to_string();
    let uuid = uuid::Uuid::parse_str(&key).expect("a UUID");
    assert_eq!(uuid.get_version_num(), 7);
    let made = out.lines().next().unwrap().to_string();
    assert_ne!(first["envelopeId"].as_str(), Some(made.as_str()));
    let (ok, out, err) = cli_send(&fed, &["--idempotency-key", &key]).await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().next(), Some(made.as_str()));
    assert!(
        out.contains("made earlier under this idempotency key"),
        "{out}"
    );

    settled(&fed, "BA/police", &made).await;
    settled(&fed, "BA/police", first["envelopeId"].as_str().unwrap()).await;
    assert_eq!(inbox(&fed, "HR/police").await.len(), 2);
}

#[tokio::test]
async fn the_cli_calls_again_with_the_same_key_and_then_names_it() {
    let mut fed = start(&["BA", "HR"]).await;
    fed.stop_node(cc("BA")).await.unwrap();
    let started = std::time::Instant::now();
    let (ok, _, err) = cli_send(&fed, &["--idempotency-key", "cli-2"]).await;
    assert!(!ok);
    assert!(err.contains("unavailable"), "{err}");
    assert!(
        err.contains("run again with --idempotency-key cli-2"),
        "{err}"
    );
    // Five attempts, with 0.25 + 0.5 + 1 + 2 s between them.
    assert_eq!(
        err.matches("calling again with the same idempotency key")
            .count(),
        4,
        "{err}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(3750));
}

#[tokio::test]
async fn keys_are_forgotten_after_seven_days_by_the_purge() {
    let fed = start(&["BA", "HR"]).await;
    let first = send_as(&fed, "BA/police", alert("week-1")).await.unwrap();
    settled(&fed, "BA/police", &first.envelope_id).await;
    let node = fed.node(cc("BA")).unwrap().clone();
    let mut client = exchange_as_node(&fed, "BA");
    let now = casebridge::daemon::clock::now_ms();
    // Six days on, the key is still remembered.
    casebridge::daemon::node::uplink::purge_once(&node, &mut client, now + 6 * 86_400_000)
        .await
        .unwrap();
    let again = send_as(&fed, "BA/police", alert("week-1")).await.unwrap();
    assert_eq!(
        (again.envelope_id.as_str(), again.repeat),
        (first.envelope_id.as_str(), true)
    );
    // A purge more than seven days after the first call forgets it: the
    // same call now makes a record of its own.
    casebridge::daemon::node::uplink::purge_once(&node, &mut client, now + 8 * 86_400_000)
        .await
        .unwrap();
    let later = send_as(&fed, "BA/police", alert("week-1")).await.unwrap();
    assert!(!later.repeat);
    assert_ne!(later.envelope_id, first.envelope_id);
    assert_eq!(sent_count(&fed, "BA/police").await, 2);
}

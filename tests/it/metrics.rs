//! The metrics endpoints: what the broker and the nodes export after real
//! traffic, that the endpoint answers `GET /metrics` and nothing else, and
//! that the example alert rules name only metrics that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use casebridge::protocol::proto::v1;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::*;

/// An HTTP answer as read off the socket.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` as is on a fresh connection to `addr` and reads the
/// answer to its end (the endpoint closes after one answer), bounded in time.
async fn http(addr: SocketAddr, request: &[u8]) -> Option<Answer> {
    let run = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        // The server may answer and close before reading all of a large
        // request; what it answered is what counts.
        let _ = s.write_all(request).await;
        let mut bytes = Vec::new();
        let _ = s.read_to_end(&mut bytes).await;
        let text = String::from_utf8(bytes).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head.split(' ').nth(1)?.parse().ok()?;
        Some(Answer {
            status,
            head: head.to_ascii_lowercase(),
            body: body.to_string(),
        })
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), run)
        .await
        .expect("the metrics endpoint answered in time")
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The samples of a scrape: series (name and labels, as written) → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The metric names a scrape exports.
fn names(text: &str) -> BTreeSet<String> {
    samples(text)
        .keys()
        .map(|s| s.split('{').next().unwrap_or(s).to_string())
        .collect()
}

async fn scrape(addr: SocketAddr) -> BTreeMap<String, f64> {
    let a = http(addr, &get("/metrics")).await.expect("an answer");
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.head
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{}",
        a.head
    );
    assert!(a.body.ends_with("# EOF\n"), "the whole exposition");
    samples(&a.body)
}

fn value(s: &BTreeMap<String, f64>, series: &str) -> f64 {
    *s.get(series)
        .unwrap_or_else(|| panic!("{series} is exported: {:?}", s.keys().collect::<Vec<_>>()))
}

#[tokio::test]
async fn broker_and_node_metrics_after_traffic() {
    let mut fed = start(&["BA", "HR"]).await;
    let broker = fed
        .broker_metrics_addr()
        .expect("the broker serves metrics");
    let hr = fed.node_metrics_addr(cc("HR")).expect("HR serves metrics");
    let ba = fed.node_metrics_addr(cc("BA")).expect("BA serves metrics");
    assert!(broker.ip().is_loopback() && hr.ip().is_loopback());

    let before = scrape(broker).await;
    assert_eq!(
        value(
            &before,
            "casebridge_broker_submits_total{outcome=\"accepted\"}"
        ),
        0.0
    );
    assert!(value(&before, "casebridge_directory_version") >= 1.0);
    assert!(
        value(
            &before,
            "casebridge_policy_bundle_version{bundle=\"framework\"}"
        ) >= 1.0
    );

    // Two records HR → BA, delivered and receipted.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let resp = send(
            &fed,
            "BA/missing-persons",
            &["HR/missing-persons"],
            record("missing_person_trace"),
            humanitarian(),
        )
        .await;
        assert_accepted(&resp);
        ids.push(resp.envelope_id);
    }
    for id in &ids {
        settled(&fed, "BA/missing-persons", id).await;
    }
    // One send HR's node refuses on its policies, before sealing: an EU
    // member's transfer to a non-member without a ground.
    let err = try_send(
        &fed,
        "HR/prosecutor",
        &["BA/prosecutor"],
        record("mla_request"),
        mla_labels(v1::TransferGround::None),
    )
    .await
    .expect_err("refused at the node");
    assert_eq!(
        err.code(),
        tonic::Code::PermissionDenied,
        "{}",
        err.message()
    );
    // And one submission the broker refuses: a request with no envelope.
    let refused = exchange_as_node(&fed, "HR")
        .submit(v1::SubmitRequest { envelope: None })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // Each receipt is counted once the broker recorded it, as the sender
    // may already see it relayed.
    let after = until("both deliveries counted", || async {
        let s = scrape(broker).await;
        (value(&s, "casebridge_broker_delivery_latency_seconds_count") == 2.0).then_some(s)
    })
    .await;
    assert_eq!(
        value(
            &after,
            "casebridge_broker_submits_total{outcome=\"accepted\"}"
        ),
        2.0
    );
    assert_eq!(
        value(
            &after,
            "casebridge_broker_submits_total{outcome=\"refused\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "casebridge_broker_refusals_total{code=\"MALFORMED\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&after, "casebridge_broker_refusals_total{code=\"POLICY\"}"),
        0.0
    );
    // Accepted twice, receipted twice, refused once, on top of the events
    // at start.
    assert!(
        value(&after, "casebridge_broker_log_size")
            >= value(&before, "casebridge_broker_log_size") + 5.0
    );
    for node in ["BA", "HR"] {
        assert!(
            after.contains_key(&format!("casebridge_broker_queue_depth{{node=\"{node}\"}}")),
            "a depth for {node}"
        );
    }

    // The checkpoint over all of it, with both witnesses' cosignatures.
    let log_size = value(&after, "casebridge_broker_log_size");
    let cosigned = until(
        "a checkpoint over the traffic, cosigned by both nodes",
        || async {
            let s = scrape(broker).await;
            (value(&s, "casebridge_broker_checkpoint_size") >= log_size
                && value(&s, "casebridge_broker_checkpoint_cosignatures") >= 2.0)
                .then_some(s)
        },
    )
    .await;
    assert!(value(&cosigned, "casebridge_broker_checkpoint_age_seconds") >= 0.0);
    for node in ["BA", "HR"] {
        assert!(
            value(
                &cosigned,
                &format!("casebridge_broker_witness_cosigned_size{{node=\"{node}\"}}")
            ) >= 1.0
        );
    }

    // At the sending node: both receipts, nothing left in the outbox, the
    // broker reachable, no alarm.
    let sender = until("both receipts counted at the sender", || async {
        let s = scrape(ba).await;
        (value(&s, "casebridge_node_receipt_latency_seconds_count") == 2.0).then_some(s)
    })
    .await;
    assert_eq!(value(&sender, "casebridge_node_outbox_depth"), 0.0);
    assert_eq!(
        value(&sender, "casebridge_node_sends_total{outcome=\"sealed\"}"),
        2.0
    );
    assert_eq!(
        value(
            &sender,
            "casebridge_node_submits_total{outcome=\"accepted\"}"
        ),
        2.0
    );
    for outcome in ["refused", "unavailable"] {
        assert_eq!(
            value(
                &sender,
                &format!("casebridge_node_submits_total{{outcome=\"{outcome}\"}}")
            ),
            0.0
        );
    }
    assert_eq!(value(&sender, "casebridge_node_broker_connected"), 1.0);
    assert_eq!(value(&sender, "casebridge_node_broker_losses_total"), 0.0);
    assert_eq!(
        value(
            &sender,
            "casebridge_node_witness_alarms_total{alarm=\"inconsistent_checkpoint\"}"
        ),
        0.0
    );
    assert_eq!(
        value(&sender, "casebridge_directory_version"),
        value(&before, "casebridge_directory_version")
    );
    let receiver = scrape(hr).await;
    assert_eq!(
        value(&receiver, "casebridge_node_receipt_latency_seconds_count"),
        0.0
    );
    for (outcome, n) in [("sealed", 0.0), ("refused", 1.0), ("invalid", 0.0)] {
        assert_eq!(
            value(
                &receiver,
                &format!("casebridge_node_sends_total{{outcome=\"{outcome}\"}}")
            ),
            n,
            "{outcome}"
        );
    }
    until("HR's cosignature time", || async {
        let s = scrape(hr).await;
        (value(&s, "casebridge_node_witness_last_cosign_timestamp_seconds") > 0.0).then_some(())
    })
    .await;

    // The broker goes: the nodes lose it, count it, and find it again.
    fed.stop_broker().await.unwrap();
    let lost = until("BA losing the broker", || async {
        let s = scrape(ba).await;
        (value(&s, "casebridge_node_broker_connected") == 0.0).then_some(s)
    })
    .await;
    assert!(value(&lost, "casebridge_node_broker_losses_total") >= 1.0);
    // What an agency sends meanwhile waits in the outbox.
    send(
        &fed,
        "BA/missing-persons",
        &["HR/missing-persons"],
        record("missing_person_trace"),
        humanitarian(),
    )
    .await;
    assert_eq!(
        value(&scrape(ba).await, "casebridge_node_outbox_depth"),
        1.0
    );
    fed.start_broker().await.unwrap();
    until("BA finding the broker and emptying its outbox", || async {
        let s = scrape(ba).await;
        (value(&s, "casebridge_node_broker_connected") == 1.0
            && value(&s, "casebridge_node_outbox_depth") == 0.0)
            .then_some(())
    })
    .await;
    // A new broker process, new metrics: counted from its start.
    let restarted = fed.broker_metrics_addr().expect("metrics again");
    assert_eq!(
        value(
            &scrape(restarted).await,
            "casebridge_broker_submits_total{outcome=\"refused\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn the_metrics_endpoint_answers_only_get_of_metrics() {
    let fed = start(&["HR"]).await;
    for addr in [
        fed.broker_metrics_addr().unwrap(),
        fed.node_metrics_addr(cc("HR")).unwrap(),
    ] {
        let ok = http(addr, &get("/metrics")).await.unwrap();
        assert_eq!(ok.status, 200);
        assert!(
            ok.body.contains("\ncasebridge_directory_version "),
            "{}",
            ok.body
        );

        for path in [
            "/",
            "/metrics/",
            "/metricsx",
            "/debug/pprof",
            "/metrics/../admin",
        ] {
            let a = http(addr, &get(path)).await.unwrap();
            assert_eq!(a.status, 404, "GET {path}");
            assert_eq!(
                a.body,
                "not found: this endpoint serves GET /metrics only\n"
            );
        }
        // The query string is not the path.
        assert_eq!(http(addr, &get("/metrics?x=1")).await.unwrap().status, 200);

        for method in ["POST", "PUT", "DELETE", "HEAD", "OPTIONS"] {
            let req = format!(
                "{method} /metrics HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let a = http(addr, req.as_bytes()).await.unwrap();
            assert_eq!(a.status, 405, "{method}");
            assert!(a.head.contains("\r\nallow: get"), "{method}: {}", a.head);
        }

        // A request head over the bound is not served.
        let huge = format!(
            "GET /metrics HTTP/1.1\r\nHost: localhost\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        if let Some(a) = http(addr, huge.as_bytes()).await {
            assert_eq!(a.status, 431, "an oversized head");
        }
        // Too many header lines, and bytes that are not HTTP.
        let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
        let req = format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\n{many}\r\n");
        if let Some(a) = http(addr, req.as_bytes()).await {
            assert_eq!(a.status, 431, "too many headers");
        }
        if let Some(a) = http(addr, b"\x16\x03\x01\x00\x05hello\r\n\r\n").await {
            assert_eq!(a.status, 400, "not HTTP");
        }
        // Still serving after all of that.
        assert_eq!(http(addr, &get("/metrics")).await.unwrap().status, 200);
    }
}

/// The metric names each `expr:` of deploy/prometheus/alerts.yml uses,
/// including the lines of a block (`expr: |`).
fn alert_metrics(yaml: &str) -> BTreeSet<String> {
    let mut exprs = Vec::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let indent = line.len() - line.trim_start().len();
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest == "|" || rest == ">" {
            while let Some(next) = lines.peek() {
                let inner = next.len() - next.trim_start().len();
                if next.trim().is_empty() || inner > indent {
                    exprs.push(next.to_string());
                    lines.next();
                } else {
                    break;
                }
            }
        } else {
            exprs.push(rest.to_string());
        }
    }
    let mut names = BTreeSet::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("casebridge_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

#[tokio::test]
async fn every_metric_the_example_alerts_use_is_exported() {
    let yaml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/prometheus/alerts.yml"
    ))
    .expect("deploy/prometheus/alerts.yml");
    let used = alert_metrics(&yaml);
    // The four the deployment guide promises, and more.
    for must in [
        "casebridge_broker_queue_depth",
        "casebridge_broker_checkpoint_age_seconds",
        "casebridge_broker_witness_last_cosign_timestamp_seconds",
        "casebridge_node_witness_alarms_total",
    ] {
        assert!(used.contains(must), "{must} in {used:?}");
    }

    let fed = start(&["HR"]).await;
    let mut exported = BTreeSet::new();
    for addr in [
        fed.broker_metrics_addr().unwrap(),
        fed.node_metrics_addr(cc("HR")).unwrap(),
    ] {
        let a = http(addr, &get("/metrics")).await.unwrap();
        exported.extend(names(&a.body));
    }
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "alerts.yml uses {missing:?}, which no endpoint exports ({exported:?})"
    );
}

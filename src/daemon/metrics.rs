//! Prometheus metrics: what each daemon counts and measures
//! ([`BrokerMetrics`], [`NodeMetrics`], with the [`Versions`] in force both
//! report), and the small HTTP/1 server that exposes them, on an address of
//! its own (`metrics_listen`, loopback by default), apart from the gRPC
//! port and without TLS: it answers `GET /metrics` and nothing else.
//!
//! Counters and histograms move where the event happens; values that live
//! in the store or the daemon's state (queue depths, log and checkpoint
//! sizes, versions in force) are read when a scrape arrives
//! ([`Exporter::sample`]), one scrape at a time.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::protocol::ids::Country;
use crate::protocol::policy::BundleInfo;

/// One label with a fixed set of values (an outcome, a code).
pub type Kind = [(&'static str, &'static str); 1];
/// One label naming a node, a bundle or another open set.
pub type Named = [(&'static str, String); 1];
/// A gauge of seconds (a time or an age).
pub type Seconds = Gauge<f64, AtomicU64>;

/// The buckets of every latency histogram: 10 ms to about 11 minutes.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 4.0, 9))
}

/// Milliseconds to seconds, negative (a clock behind another) as zero.
fn secs(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The directory and policy bundle versions in force, which both daemons
/// report.
#[derive(Default)]
pub struct Versions {
    directory: Gauge,
    bundles: Family<Named, Gauge>,
}

impl Versions {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "casebridge_directory_version",
            "Version of the signed directory in force",
            self.directory.clone(),
        );
        registry.register(
            "casebridge_policy_bundle_version",
            "Version of each policy bundle in force, by bundle owner (framework or agency)",
            self.bundles.clone(),
        );
    }

    /// Sets the versions to those in force now; a bundle no longer in force
    /// is no longer reported.
    pub fn set(&self, directory: u64, bundles: &[BundleInfo]) {
        self.directory.set(gauge_value(directory));
        self.bundles.clear();
        for b in bundles {
            self.bundles
                .get_or_create(&[("bundle", b.owner.to_string())])
                .set(gauge_value(b.version));
        }
    }
}

/// A refusal code as its label: its protocol name without the prefix
/// (`POLICY`, `MALFORMED`, ...).
fn code_label(code: crate::protocol::proto::v1::RefusalCode) -> &'static str {
    let name = code.as_str_name();
    name.strip_prefix("REFUSAL_CODE_").unwrap_or(name)
}

/// What the broker counts and measures.
pub struct BrokerMetrics {
    registry: Registry,
    submits: Family<Kind, Counter>,
    refusals: Family<Kind, Counter>,
    pub queue_depth: Family<Named, Gauge>,
    delivery_latency: Histogram,
    pub log_size: Gauge,
    pub checkpoint_size: Gauge,
    checkpoint_age: Seconds,
    pub checkpoint_cosignatures: Gauge,
    witness_last_cosign: Family<Named, Seconds>,
    witness_cosigned_size: Family<Named, Gauge>,
    pub versions: Versions,
    /// When the newest checkpoint this broker knows of was first seen (or
    /// signed here): its size and the time, Unix ms.
    checkpoint_seen: Mutex<Option<(u64, i64)>>,
    /// Per witness, the largest size it cosigned and when, Unix ms; a
    /// witness not heard from since the start counts from the start.
    witnesses: Mutex<HashMap<Country, (u64, i64)>>,
    started_ms: i64,
}

impl BrokerMetrics {
    /// The broker's metrics, all at zero, registered; `now_ms` is the start.
    pub fn new(now_ms: i64) -> Self {
        let m = BrokerMetrics {
            registry: Registry::default(),
            submits: Family::default(),
            refusals: Family::default(),
            queue_depth: Family::default(),
            delivery_latency: latency(),
            log_size: Gauge::default(),
            checkpoint_size: Gauge::default(),
            checkpoint_age: Seconds::default(),
            checkpoint_cosignatures: Gauge::default(),
            witness_last_cosign: Family::default(),
            witness_cosigned_size: Family::default(),
            versions: Versions::default(),
            checkpoint_seen: Mutex::new(None),
            witnesses: Mutex::new(HashMap::new()),
            started_ms: now_ms,
        };
        let mut r = Registry::default();
        r.register(
            "casebridge_broker_submits",
            "Submit calls answered, by outcome: accepted, refused (with a refusal code and an audit event), unavailable, error",
            m.submits.clone(),
        );
        r.register(
            "casebridge_broker_refusals",
            "Submissions refused, by refusal code",
            m.refusals.clone(),
        );
        r.register(
            "casebridge_broker_queue_depth",
            "Items (envelopes and relayed receipts) queued for each recipient node",
            m.queue_depth.clone(),
        );
        r.register(
            "casebridge_broker_delivery_latency_seconds",
            "From an envelope's creation at the sending node to the recipient node's receipt at the broker",
            m.delivery_latency.clone(),
        );
        r.register(
            "casebridge_broker_log_size",
            "Entries sequenced into the audit log",
            m.log_size.clone(),
        );
        r.register(
            "casebridge_broker_checkpoint_size",
            "Tree size of the newest signed checkpoint",
            m.checkpoint_size.clone(),
        );
        r.register(
            "casebridge_broker_checkpoint_age_seconds",
            "Seconds since the newest checkpoint was signed (or, for one signed before this broker started, since the start)",
            m.checkpoint_age.clone(),
        );
        r.register(
            "casebridge_broker_checkpoint_cosignatures",
            "Witness cosignatures on the newest checkpoint",
            m.checkpoint_cosignatures.clone(),
        );
        r.register(
            "casebridge_broker_witness_last_cosign_timestamp_seconds",
            "When each witness node last cosigned a checkpoint, Unix seconds (the broker's start if not since)",
            m.witness_last_cosign.clone(),
        );
        r.register(
            "casebridge_broker_witness_cosigned_size",
            "Largest checkpoint size each witness node cosigned since the broker started",
            m.witness_cosigned_size.clone(),
        );
        m.versions.register(&mut r);
        // Every outcome and code is reported from the start, at zero, so
        // that a rule sees each go up from its first occurrence.
        for outcome in ["accepted", "refused", "unavailable", "error"] {
            let _ = m.submits.get_or_create(&[("outcome", outcome)]);
        }
        for code in
            (1..64).filter_map(|c| crate::protocol::proto::v1::RefusalCode::try_from(c).ok())
        {
            let _ = m.refusals.get_or_create(&[("code", code_label(code))]);
        }
        BrokerMetrics { registry: r, ..m }
    }

    /// Counts a Submit by its answer: accepted, refused (by the refusal code
    /// the answer carries), unavailable, or error.
    pub fn submitted<T>(&self, answer: &Result<T, tonic::Status>) {
        let outcome = match answer {
            Ok(_) => "accepted",
            Err(s) => match s
                .metadata()
                .get(crate::protocol::proto::REFUSAL_METADATA)
                .and_then(|v| v.to_str().ok())
                .and_then(crate::protocol::proto::v1::RefusalCode::from_str_name)
            {
                Some(code) => {
                    self.refusals
                        .get_or_create(&[("code", code_label(code))])
                        .inc();
                    "refused"
                }
                None if s.code() == tonic::Code::Unavailable => "unavailable",
                None => "error",
            },
        };
        self.submits.get_or_create(&[("outcome", outcome)]).inc();
    }

    /// A recipient node's receipt was recorded for an envelope created at
    /// `created_at_ms`.
    pub fn delivered(&self, created_at_ms: i64, now_ms: i64) {
        self.delivery_latency
            .observe(secs(now_ms.saturating_sub(created_at_ms)));
    }

    /// The newest checkpoint is of `size`: a size not seen before starts its
    /// age at `now_ms`.
    pub fn checkpoint(&self, size: u64, now_ms: i64) {
        let mut seen = self
            .checkpoint_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let at = match *seen {
            Some((s, at)) if s == size => at,
            Some(_) => now_ms,
            // Signed before this broker started, or none yet.
            None => self.started_ms.min(now_ms),
        };
        *seen = Some((size, at));
        self.checkpoint_size.set(gauge_value(size));
        self.checkpoint_age.set(secs(now_ms.saturating_sub(at)));
    }

    /// `node` cosigned the checkpoint of `size`.
    pub fn cosigned(&self, node: Country, size: u64, now_ms: i64) {
        let mut w = self.witnesses.lock().unwrap_or_else(|p| p.into_inner());
        let e = w.entry(node).or_insert((0, now_ms));
        *e = (e.0.max(size), now_ms);
    }

    /// Reports the witnesses among `nodes` (the directory's).
    pub fn witnesses(&self, nodes: impl Iterator<Item = Country>) {
        let mut w = self.witnesses.lock().unwrap_or_else(|p| p.into_inner());
        self.witness_last_cosign.clear();
        self.witness_cosigned_size.clear();
        for node in nodes {
            let (size, at) = *w.entry(node).or_insert((0, self.started_ms));
            let label = [("node", node.to_string())];
            self.witness_last_cosign.get_or_create(&label).set(secs(at));
            self.witness_cosigned_size
                .get_or_create(&label)
                .set(gauge_value(size));
        }
    }
}

/// What a node counts and measures.
pub struct NodeMetrics {
    registry: Registry,
    pub outbox_depth: Gauge,
    pub broker_connected: Gauge,
    receipt_latency: Histogram,
    witness_alarms: Family<Kind, Counter>,
    witness_last_cosign: Seconds,
    sends: Family<Kind, Counter>,
    submits: Family<Kind, Counter>,
    pub versions: Versions,
}

/// How the node answered an agency's Send, Forward, RequestPermission or
/// GrantPermission that reached its checks.
#[derive(Debug, Clone, Copy)]
pub enum SendOutcome {
    /// Sealed and put in the outbox.
    Sealed,
    /// Refused by the node's policies before anything was sealed (and
    /// reported to the broker's log as a refusal).
    Refused,
    /// Refused as invalid: labels, recipients, expiry, size.
    Invalid,
    /// Not answered for a failure of the node's own (its store).
    Error,
}

impl SendOutcome {
    const ALL: [SendOutcome; 4] = [
        SendOutcome::Sealed,
        SendOutcome::Refused,
        SendOutcome::Invalid,
        SendOutcome::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            SendOutcome::Sealed => "sealed",
            SendOutcome::Refused => "refused",
            SendOutcome::Invalid => "invalid",
            SendOutcome::Error => "error",
        }
    }
}

/// The broker's answer to one of this node's submissions.
#[derive(Debug, Clone, Copy)]
pub enum SubmitAnswer {
    /// Accepted (or found accepted already).
    Accepted,
    /// Refused for good: the record is settled as refused.
    Refused,
    /// No answer: the broker unreachable or failing; submitted again later.
    Unavailable,
}

impl SubmitAnswer {
    const ALL: [SubmitAnswer; 3] = [
        SubmitAnswer::Accepted,
        SubmitAnswer::Refused,
        SubmitAnswer::Unavailable,
    ];

    fn label(self) -> &'static str {
        match self {
            SubmitAnswer::Accepted => "accepted",
            SubmitAnswer::Refused => "refused",
            SubmitAnswer::Unavailable => "unavailable",
        }
    }
}

/// What a node's witness raises the alarm about.
#[derive(Debug, Clone, Copy)]
pub enum Alarm {
    /// A checkpoint inconsistent with the one accepted before.
    InconsistentCheckpoint,
    /// A submission the broker accepted that it did not prove included.
    UnprovenSubmission,
    /// A relayed receipt that does not answer what this node sent.
    BadReceipt,
}

impl Alarm {
    fn label(self) -> &'static str {
        match self {
            Alarm::InconsistentCheckpoint => "inconsistent_checkpoint",
            Alarm::UnprovenSubmission => "unproven_submission",
            Alarm::BadReceipt => "bad_receipt",
        }
    }
}

impl NodeMetrics {
    /// The node's metrics, registered; `losses` counts the times the node
    /// lost the broker (the uplink counts them as they happen).
    pub fn new(losses: Counter) -> Self {
        let m = NodeMetrics {
            registry: Registry::default(),
            outbox_depth: Gauge::default(),
            broker_connected: Gauge::default(),
            receipt_latency: latency(),
            witness_alarms: Family::default(),
            witness_last_cosign: Seconds::default(),
            sends: Family::default(),
            submits: Family::default(),
            versions: Versions::default(),
        };
        let mut r = Registry::default();
        r.register(
            "casebridge_node_sends",
            "Agency sends (Send, Forward, RequestPermission, GrantPermission) that reached the node's checks, by outcome: sealed, refused (by the node's policies), invalid, error",
            m.sends.clone(),
        );
        r.register(
            "casebridge_node_submits",
            "The broker's answers to this node's submissions, by outcome: accepted, refused, unavailable (to be submitted again)",
            m.submits.clone(),
        );
        r.register(
            "casebridge_node_outbox_depth",
            "Envelopes in the node's outbox, waiting for the broker's answer",
            m.outbox_depth.clone(),
        );
        r.register(
            "casebridge_node_broker_connected",
            "1 while the broker in use is reachable, 0 while it is not",
            m.broker_connected.clone(),
        );
        r.register(
            "casebridge_node_broker_losses",
            "Times the node lost the broker in use",
            losses,
        );
        r.register(
            "casebridge_node_receipt_latency_seconds",
            "From an envelope's creation to the recipient node's receipt reaching this sending node",
            m.receipt_latency.clone(),
        );
        r.register(
            "casebridge_node_witness_alarms",
            "Alarms raised (evidence kept): inconsistent_checkpoint, unproven_submission, bad_receipt",
            m.witness_alarms.clone(),
        );
        r.register(
            "casebridge_node_witness_last_cosign_timestamp_seconds",
            "When this node last cosigned a checkpoint, Unix seconds (0: not since it started)",
            m.witness_last_cosign.clone(),
        );
        m.versions.register(&mut r);
        for alarm in [
            Alarm::InconsistentCheckpoint,
            Alarm::UnprovenSubmission,
            Alarm::BadReceipt,
        ] {
            let _ = m.witness_alarms.get_or_create(&[("alarm", alarm.label())]);
        }
        for outcome in SendOutcome::ALL {
            let _ = m.sends.get_or_create(&[("outcome", outcome.label())]);
        }
        for answer in SubmitAnswer::ALL {
            let _ = m.submits.get_or_create(&[("outcome", answer.label())]);
        }
        NodeMetrics { registry: r, ..m }
    }

    /// A receipt for an envelope created at `created_at_ms` arrived.
    pub fn receipt(&self, created_at_ms: i64, now_ms: i64) {
        self.receipt_latency
            .observe(secs(now_ms.saturating_sub(created_at_ms)));
    }

    /// The node answered an agency's send.
    pub fn sent(&self, outcome: SendOutcome) {
        self.sends
            .get_or_create(&[("outcome", outcome.label())])
            .inc();
    }

    /// The broker answered a submission (or did not).
    pub fn submitted(&self, answer: SubmitAnswer) {
        self.submits
            .get_or_create(&[("outcome", answer.label())])
            .inc();
    }

    /// The witness raised an alarm.
    pub fn alarm(&self, alarm: Alarm) {
        self.witness_alarms
            .get_or_create(&[("alarm", alarm.label())])
            .inc();
    }

    /// The witness cosigned a checkpoint.
    pub fn cosigned(&self, now_ms: i64) {
        self.witness_last_cosign.set(secs(now_ms));
    }
}

/// A daemon whose metrics the endpoint serves.
#[async_trait::async_trait]
pub trait Exporter: Send + Sync + 'static {
    /// Brings the values read at scrape time up to date.
    async fn sample(&self);
    /// The registry to encode.
    fn registry(&self) -> &Registry;
}

impl BrokerMetrics {
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

impl NodeMetrics {
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

/// Connections served at once; more are closed on arrival.
const MAX_CONNECTIONS: usize = 16;
/// The time a client has to send its request line and headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// The most a connection may last, answer included.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// The most a request's line and headers may take, in bytes (hyper's
/// smallest read buffer).
pub const MAX_REQUEST_HEAD: usize = 8192;
/// The most header lines a request may have.
const MAX_HEADERS: usize = 32;

/// The exposition format served.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds the metrics endpoint at `addr` (port 0: any free port).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr} (metrics_listen): {e}"))
}

/// Serves `exporter`'s metrics on `listener` until `stopping` turns true:
/// `GET /metrics` answers the registry in the OpenMetrics text format, any
/// other path 404, any other method on it 405. Requests are read with
/// bounded heads and time, one request per connection, at most
/// [`MAX_CONNECTIONS`] at once; scrapes are sampled one at a time.
pub async fn serve(
    listener: TcpListener,
    exporter: Arc<dyn Exporter>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let scrape = Arc::new(tokio::sync::Mutex::new(()));
    let mut connections = tokio::task::JoinSet::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving metrics on http://{addr}/metrics");
    }
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopping.wait_for(|s| *s) => break,
        };
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was
                // taken: wait a little rather than spin.
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    _ = stopping.wait_for(|s| *s) => break,
                }
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let (exporter, scrape) = (exporter.clone(), scrape.clone());
        connections.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let (exporter, scrape) = (exporter.clone(), scrape.clone());
                async move { Ok::<_, Infallible>(answer(exporter.as_ref(), &scrape, &req).await) }
            });
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_HEAD)
                .max_headers(MAX_HEADERS)
                .keep_alive(false);
            let conn = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await {
                tracing::debug!(error = %e, "metrics endpoint: connection ended");
            }
        });
    }
    connections.shutdown().await;
}

/// The answer to one request.
async fn answer<B>(
    exporter: &dyn Exporter,
    scrape: &tokio::sync::Mutex<()>,
    req: &hyper::Request<B>,
) -> hyper::Response<String> {
    use hyper::{Method, StatusCode, header};
    let plain = |status: StatusCode, text: &str| {
        let mut r = hyper::Response::new(format!("{text}\n"));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: this endpoint serves GET /metrics only",
        );
    }
    if req.method() != Method::GET {
        let mut r = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: /metrics answers GET only",
        );
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        return r;
    }
    let text = {
        let _one = scrape.lock().await;
        exporter.sample().await;
        let mut text = String::new();
        match prometheus_client::encoding::text::encode(&mut text, exporter.registry()) {
            Ok(()) => text,
            Err(_) => {
                return plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the metrics could not be encoded",
                );
            }
        }
    };
    let mut r = hyper::Response::new(text);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn a_submit_is_counted_by_outcome_and_a_refusal_by_its_code() {
        let m = BrokerMetrics::new(0);
        m.submitted::<()>(&Ok(()));
        m.submitted::<()>(&Err(crate::daemon::status::refused(
            crate::protocol::proto::v1::RefusalCode::Policy,
            "policy: no",
            7,
        )));
        m.submitted::<()>(&Err(tonic::Status::unavailable("stopping")));
        m.submitted::<()>(&Err(tonic::Status::permission_denied("not a node")));
        let text = encoded(m.registry());
        for line in [
            "casebridge_broker_submits_total{outcome=\"accepted\"} 1",
            "casebridge_broker_submits_total{outcome=\"refused\"} 1",
            "casebridge_broker_submits_total{outcome=\"unavailable\"} 1",
            "casebridge_broker_submits_total{outcome=\"error\"} 1",
            "casebridge_broker_refusals_total{code=\"POLICY\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    #[test]
    fn the_checkpoint_age_counts_from_when_a_size_was_first_seen() {
        let m = BrokerMetrics::new(1_000);
        m.checkpoint(5, 31_000);
        assert_eq!(m.checkpoint_age.get(), 30.0);
        m.checkpoint(5, 41_000);
        assert_eq!(m.checkpoint_age.get(), 40.0);
        m.checkpoint(9, 42_000);
        assert_eq!(m.checkpoint_age.get(), 0.0);
        assert_eq!(m.checkpoint_size.get(), 9);
    }

    #[test]
    fn a_witness_not_heard_from_counts_from_the_start() {
        let m = BrokerMetrics::new(5_000);
        let (hr, ba): (Country, Country) = ("HR".parse().unwrap(), "BA".parse().unwrap());
        m.cosigned(hr, 12, 9_000);
        m.witnesses([hr, ba].into_iter());
        let text = encoded(m.registry());
        for line in [
            "casebridge_broker_witness_last_cosign_timestamp_seconds{node=\"HR\"} 9.0",
            "casebridge_broker_witness_last_cosign_timestamp_seconds{node=\"BA\"} 5.0",
            "casebridge_broker_witness_cosigned_size{node=\"HR\"} 12",
            "casebridge_broker_witness_cosigned_size{node=\"BA\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }
}

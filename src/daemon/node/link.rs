//! The brokers a node lists and the one it uses: the link every call goes
//! through, its reachability, the move to the next broker when a call fails
//! for the link, the probe that finds one that answers, and the time limit
//! on every call.

use std::sync::Arc;
use std::time::Duration;

use super::uplink::{Client, stopped};

/// How long any call to the broker may wait for its answer (Submit has
/// its own, longer, limit; a delivery stream's limit is on its opening).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// While the broker is unreachable, the least time between two probes of
/// the same broker address.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// How long a probe may take, connection and TLS handshake included.
const PROBE_TIMEOUT: Duration = Duration::from_secs(6);

/// Runs a call to the broker, which must answer within `limit`.
pub(super) async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(limit, call).await {
        Ok(r) => r,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "the broker did not answer within {} s",
            limit.as_secs()
        ))),
    }
}

/// Whether a failed call says the link to the broker failed (no connection,
/// a failed handshake, the broker going away or not answering), rather than
/// the broker's answer.
pub fn is_link_failure(code: tonic::Code) -> bool {
    use tonic::Code as C;
    matches!(
        code,
        C::Unavailable | C::DeadlineExceeded | C::Unknown | C::Cancelled
    )
}

/// One broker to call: its client and its place in the node's list.
#[derive(Clone)]
pub struct Link {
    pub client: Client,
    pub index: usize,
}

/// The node's uplink: the brokers it may use, in order of preference, the
/// one in use, and whether it is known to be reachable.
///
/// Every task that calls the broker takes the broker in use at each attempt
/// ([`Uplink::link`]). A call that fails for the link ([`is_link_failure`]),
/// and a delivery stream that ends, make the uplink unreachable and move it
/// to the next broker of the list, at once; the uplink's probe ([`Uplink::run`])
/// then asks brokers in turn for their health, the next one at once and the
/// same one again no sooner than [`PROBE_INTERVAL`] after it last failed,
/// until one answers: that one is in use and the uplink reachable again. So
/// a node whose broker fails is using the next one that answers within a
/// probe's round trip (plus the connect timeout, 5 s, for an address that
/// does not answer at all), and one whose only broker comes back notices
/// within [`PROBE_INTERVAL`] of its return. The failure itself is seen at
/// once when the connection is refused, the handshake fails, the broker
/// answers UNAVAILABLE or ends the delivery stream; a broker that goes
/// silent with its connections open, when a call's time limit
/// ([`CALL_TIMEOUT`]) or the channel's HTTP/2 keep-alive runs out.
///
/// The reachability is a watch ([`Uplink::watch`]): Send answers at once
/// while the broker is unreachable, and the outbox and delivery loops start
/// again as soon as it is reachable.
pub struct Uplink {
    brokers: Vec<(String, tonic::transport::Channel)>,
    current: std::sync::atomic::AtomicUsize,
    reachable: tokio::sync::watch::Sender<bool>,
    /// When the broker in use was lost, while it is.
    lost_at: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// The times the node lost the broker in use (a metric).
    pub losses: prometheus_client::metrics::counter::Counter,
}

impl Uplink {
    /// An uplink to `addresses` ("host:port" each, at least one), which
    /// must present the broker's certificate.
    pub fn new(
        tls: &crate::daemon::tls::ClientTls,
        addresses: &[String],
    ) -> Result<Uplink, crate::daemon::tls::TlsError> {
        if addresses.is_empty() {
            return Err(crate::daemon::tls::TlsError::Config(
                "a node needs at least one broker address".into(),
            ));
        }
        let brokers = addresses
            .iter()
            .map(|a| {
                tls.channel(a, crate::protocol::ids::Role::Broker)
                    .map(|c| (a.clone(), c))
            })
            .collect::<Result<_, _>>()?;
        Ok(Uplink {
            brokers,
            current: std::sync::atomic::AtomicUsize::new(0),
            reachable: tokio::sync::watch::channel(true).0,
            lost_at: std::sync::Mutex::new(None),
            losses: prometheus_client::metrics::counter::Counter::default(),
        })
    }

    /// The uplink became unreachable: counted, and logged at INFO.
    fn lost(&self, index: usize) {
        self.losses.inc();
        *self.lost_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(tokio::time::Instant::now());
        tracing::info!(broker = %self.brokers[index].0, "lost the broker; trying until one answers");
    }

    /// The uplink is reachable again through broker `index`: logged at
    /// INFO with how long it was not.
    fn regained(&self, index: usize) {
        let since = self
            .lost_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let after_secs = since.map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        tracing::info!(broker = %self.brokers[index].0, after_secs, "broker reachable again");
    }

    /// The broker in use.
    pub fn link(&self) -> Link {
        let index = self.current.load(std::sync::atomic::Ordering::Acquire) % self.brokers.len();
        let client = Client::new(self.brokers[index].1.clone())
            .max_decoding_message_size(1 << 30)
            .max_encoding_message_size(1 << 30);
        Link { client, index }
    }

    /// The address of the broker in use.
    pub fn address(&self) -> &str {
        let index = self.current.load(std::sync::atomic::Ordering::Acquire) % self.brokers.len();
        &self.brokers[index].0
    }

    /// Whether the broker is known to be reachable: no call failed for the
    /// link since one last succeeded.
    pub fn reachable(&self) -> bool {
        *self.reachable.borrow()
    }

    /// Changes when the broker becomes unreachable or reachable again.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<bool> {
        self.reachable.subscribe()
    }

    /// A call to broker `index` was answered.
    pub fn answered(&self, index: usize) {
        if self.current.load(std::sync::atomic::Ordering::Acquire) % self.brokers.len() == index
            && self
                .reachable
                .send_if_modified(|r| !std::mem::replace(r, true))
        {
            self.regained(index);
        }
    }

    /// A call to broker `index` failed, or its delivery stream ended: if it
    /// is the one in use, the uplink is unreachable and moves to the next.
    /// A failure that is the broker's answer (not [`is_link_failure`])
    /// changes nothing.
    pub fn failed(&self, index: usize, code: Option<tonic::Code>) {
        if code.is_some_and(|c| !is_link_failure(c)) {
            return;
        }
        let n = self.brokers.len();
        let moved = self
            .current
            .fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |c| (c % n == index).then_some((index + 1) % n),
            )
            .is_ok();
        if moved {
            let next = &self.brokers[(index + 1) % n].0;
            if n > 1 {
                tracing::warn!(failed = %self.brokers[index].0, %next, "broker failed; moving to the next");
            }
            if self
                .reachable
                .send_if_modified(|r| std::mem::replace(r, false))
            {
                self.lost(index);
            }
        }
    }

    /// Asks broker `index` for the health of its exchange API.
    async fn probe(&self, index: usize) -> bool {
        use tonic::server::NamedService as _;
        let mut health =
            tonic_health::pb::health_client::HealthClient::new(self.brokers[index].1.clone());
        let req = tonic_health::pb::HealthCheckRequest {
            service: crate::daemon::rpc::exchange_server::ExchangeServer::<
                crate::daemon::broker::service::ExchangeService,
            >::NAME
                .to_string(),
        };
        match tokio::time::timeout(PROBE_TIMEOUT, health.check(req)).await {
            Ok(Ok(r)) => {
                r.into_inner().status
                    == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            }
            // Any other answer is a broker answering all the same.
            Ok(Err(s)) if !is_link_failure(s.code()) => true,
            Ok(Err(s)) => {
                tracing::debug!(broker = %self.brokers[index].0, status = %s, "probe failed");
                false
            }
            Err(_) => false,
        }
    }

    /// The probe: whenever the uplink is unreachable, asks the brokers in
    /// turn until one answers, and makes it the one in use. Ends when
    /// `stopping` turns true.
    pub async fn run(self: Arc<Self>, mut stopping: tokio::sync::watch::Receiver<bool>) {
        let mut state = self.watch();
        let n = self.brokers.len();
        // When each broker last failed or was probed in vain.
        let mut last: Vec<Option<tokio::time::Instant>> = vec![None; n];
        loop {
            tokio::select! {
                r = state.wait_for(|r| !*r) => if r.is_err() { return },
                _ = stopped(&mut stopping) => return,
            }
            let now = tokio::time::Instant::now();
            let failed = (self.current.load(std::sync::atomic::Ordering::Acquire) + n - 1) % n;
            last[failed] = Some(now);
            loop {
                let index = self.current.load(std::sync::atomic::Ordering::Acquire) % n;
                if let Some(at) = last[index] {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at + PROBE_INTERVAL) => {}
                        _ = stopped(&mut stopping) => return,
                    }
                }
                if self.reachable() {
                    // A call got through meanwhile.
                    break;
                }
                let ok = tokio::select! {
                    ok = self.probe(index) => ok,
                    _ = stopped(&mut stopping) => return,
                };
                if ok {
                    if self.current.load(std::sync::atomic::Ordering::Acquire) % n == index
                        && !self.reachable.send_replace(true)
                    {
                        self.regained(index);
                    }
                    last.iter_mut().for_each(|t| *t = None);
                    break;
                }
                last[index] = Some(tokio::time::Instant::now());
                // Moves on to the next broker, unless a call moved it already.
                let _ = self.current.compare_exchange(
                    index,
                    (index + 1) % n,
                    std::sync::atomic::Ordering::AcqRel,
                    std::sync::atomic::Ordering::Acquire,
                );
            }
        }
    }
}

//! The measured phases, each against the running processes: the echo, the
//! Agency API's Send, records end to end, the Exchange API's Submit with
//! pre-sealed envelopes, a routine backlog with immediate alerts, and the
//! audit log through the Audit API.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tonic::transport::Channel;

use super::drive::{InboxWatch, Run, closed_loop, open_loop};
use super::federation::BenchFederation;
use super::procstat;
use crate::daemon::config::{self, NodeConfig};
use crate::daemon::rpc::exchange_client::ExchangeClient;
use crate::daemon::tls::{ClientTls, Identity};
use crate::protocol::envelope::{self, SealInput};
use crate::protocol::ids::{AgencyId, Country, Role};
use crate::protocol::proto::v1;
use crate::protocol::time::DAY_MS;
use crate::tools::client::AgencyClient;

/// How long one record may take to arrive before the bench gives up.
pub const ARRIVAL_WAIT: Duration = Duration::from_secs(300);

/// The size every record is padded to, encoded.
pub const RECORD_BYTES: usize = 4096;

/// The example wanted alert, its instructions padded so that the encoded
/// record is [`RECORD_BYTES`] long.
pub fn record() -> anyhow::Result<v1::CaseRecord> {
    let mut r: v1::CaseRecord =
        serde_json::from_str(include_str!("../../../examples/records/wanted_alert.json"))
            .context("the embedded example record")?;
    use prost::Message as _;
    let short = r.encoded_len();
    let pad = " .".repeat(RECORD_BYTES.saturating_sub(short) / 2);
    if let Some(v1::case_record::Body::WantedAlert(a)) = r.body.as_mut() {
        a.instructions.push_str(&pad);
    }
    // The length prefixes grow by a byte or two with the text: trim after.
    while r.encoded_len() > RECORD_BYTES {
        let Some(v1::case_record::Body::WantedAlert(a)) = r.body.as_mut() else {
            break;
        };
        if a.instructions.pop().is_none() {
            break;
        }
    }
    Ok(r)
}

/// Police labels under the regional police convention, at `priority`.
pub fn labels(priority: v1::Priority) -> v1::Labels {
    v1::Labels {
        purpose: v1::Purpose::InvestigationOther as i32,
        legal_basis: v1::LegalBasis::RegionalPoliceConvention as i32,
        legal_basis_reference: "Regional police cooperation convention, Art. 5".into(),
        handling: v1::HandlingCode::H0 as i32,
        classification: v1::Classification::Restricted as i32,
        priority: priority as i32,
        case_reference: "BENCH-1".into(),
        ..Default::default()
    }
}

/// Who sends what to whom.
pub struct Parties {
    pub sender: AgencyId,
    pub target: AgencyId,
    pub others: Vec<AgencyId>,
    pub record: v1::CaseRecord,
    /// A watch on the inbox of every agency in `others`.
    pub watches: BTreeMap<AgencyId, InboxWatch>,
}

impl Parties {
    pub fn watch(&self, a: &AgencyId) -> anyhow::Result<&InboxWatch> {
        self.watches
            .get(a)
            .with_context(|| format!("no inbox watch for {a}"))
    }
}

/// Sends `record` from `client` and returns the envelope id once the node
/// answered Accepted. Any other answer is an error: the bench measures
/// records the broker took.
pub async fn send(
    client: &mut AgencyClient,
    to: &[AgencyId],
    record: &v1::CaseRecord,
    priority: v1::Priority,
) -> anyhow::Result<String> {
    let resp = client
        .api
        .send(v1::SendRequest {
            recipients: to.iter().map(ToString::to_string).collect(),
            record: Some(record.clone()),
            labels: Some(labels(priority)),
            ..Default::default()
        })
        .await
        .context("Send")?
        .into_inner();
    if resp.state != v1::SendState::Accepted as i32 {
        bail!(
            "Send answered {}: {}",
            v1::SendState::try_from(resp.state)
                .unwrap_or_default()
                .as_str_name(),
            resp.detail
        );
    }
    Ok(resp.envelope_id)
}

/// Closed loop of unary echoes with a 4 KiB payload.
pub async fn echo(
    fed: &BenchFederation,
    sender: Country,
    concurrency: usize,
    count: usize,
) -> anyhow::Result<Run> {
    let cfg = fed.fed.node_config(sender).context("no sender node")?;
    let client = super::echo::client(cfg, fed.echo_addr()?)?;
    let payload = vec![0x5a_u8; RECORD_BYTES];
    closed_loop(concurrency, count, move |_| {
        let mut c = client.clone();
        let payload = payload.clone();
        async move {
            let r = c
                .echo(super::echo::EchoRequest { payload })
                .await
                .context("Echo")?;
            if r.into_inner().payload.len() != RECORD_BYTES {
                bail!("the echo answered with another payload");
            }
            Ok(())
        }
    })
    .await
}

/// One operation of a load loop.
type Op = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// One routine Agency Send from the sender to the target per call, returning
/// when the node answered.
fn routine_send(
    fed: &BenchFederation,
    p: &Parties,
) -> anyhow::Result<impl Fn(usize) -> Op + Clone + Send + 'static> {
    let client = fed.client(&p.sender)?;
    let to = Arc::new(vec![p.target.clone()]);
    let record = Arc::new(p.record.clone());
    Ok(move |_| {
        let mut c = client.clone();
        let to = to.clone();
        let record = record.clone();
        Box::pin(async move {
            send(&mut c, &to, &record, v1::Priority::Routine)
                .await
                .map(|_| ())
        }) as Op
    })
}

/// Closed loop of Agency Sends, each returning when the node answered.
pub async fn agency_send(
    fed: &BenchFederation,
    p: &Parties,
    concurrency: usize,
    count: usize,
) -> anyhow::Result<Run> {
    closed_loop(concurrency, count, routine_send(fed, p)?).await
}

/// Agency Sends started at a fixed rate (an open loop), each returning when
/// the node answered: send-ack latency at a stated load.
pub async fn paced_send(
    fed: &BenchFederation,
    p: &Parties,
    rate: f64,
    count: usize,
) -> anyhow::Result<Run> {
    open_loop(rate, count, PACED_IN_FLIGHT, routine_send(fed, p)?).await
}

/// Sends of the paced loop in flight at most: far above what a rate the
/// node keeps up with needs, and a bound on the bench's own memory when it
/// does not.
const PACED_IN_FLIGHT: usize = 1024;

/// End to end: per record, the time from Send to the recipient's inbox and
/// to the recipient's signed receipt visible in the sender's Status.
pub struct EndToEnd {
    pub run: Run,
    pub to_inbox: Vec<Duration>,
    pub to_receipt: Vec<Duration>,
}

pub async fn end_to_end(
    fed: &BenchFederation,
    p: &Parties,
    concurrency: usize,
    count: usize,
) -> anyhow::Result<EndToEnd> {
    let client = fed.client(&p.sender)?;
    let to = vec![p.target.clone()];
    let record = Arc::new(p.record.clone());
    let watch = p.watch(&p.target)?.clone();
    let samples: Arc<std::sync::Mutex<(Vec<Duration>, Vec<Duration>)>> = Arc::default();
    let run = {
        let samples = samples.clone();
        closed_loop(concurrency, count, move |_| {
            let mut c = client.clone();
            let to = to.clone();
            let record = record.clone();
            let watch = watch.clone();
            let samples = samples.clone();
            async move {
                let t0 = Instant::now();
                let id = send(&mut c, &to, &record, v1::Priority::Routine).await?;
                let inbox = watch
                    .wait_all(std::slice::from_ref(&id), ARRIVAL_WAIT)
                    .await?;
                receipt_visible(&mut c, &id).await?;
                let receipt = Instant::now();
                let mut s = samples.lock().unwrap_or_else(|e| e.into_inner());
                s.0.push(inbox.saturating_duration_since(t0));
                s.1.push(receipt.saturating_duration_since(t0));
                Ok(())
            }
        })
        .await?
    };
    let (to_inbox, to_receipt) =
        std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(EndToEnd {
        run,
        to_inbox,
        to_receipt,
    })
}

/// Polls the sender's Status, backing off from 2 ms to 50 ms, until every
/// recipient node's signed receipt says delivered.
async fn receipt_visible(c: &mut AgencyClient, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + ARRIVAL_WAIT;
    let mut pause = Duration::from_millis(2);
    loop {
        let st = c
            .api
            .status(v1::StatusRequest {
                envelope_id: id.to_string(),
            })
            .await
            .context("Status")?
            .into_inner();
        let delivered = !st.recipient_status.is_empty()
            && st.recipient_status.iter().all(|r| {
                r.state == v1::DeliveryState::Delivered as i32 && r.signed_receipt.is_some()
            });
        if delivered {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no receipt for {id} within {} s", ARRIVAL_WAIT.as_secs());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// A client of the broker's Exchange API holding the certificate of the
/// node configured in `node_config`.
pub fn exchange_as_node(
    node_config: &NodeConfig,
    broker: &str,
) -> anyhow::Result<ExchangeClient<Channel>> {
    let identity = Identity::load(&node_config.tls.cert, &node_config.tls.key)?;
    let root = crate::daemon::tls::load_certs(&node_config.tls.root)?
        .into_iter()
        .next()
        .context("no root certificate")?;
    let tls = ClientTls::new(&identity, &root, &node_config.federation)?;
    Ok(ExchangeClient::new(tls.channel(broker, Role::Broker)?))
}

/// Envelopes sealed by the sender's node as its outbox would, ready to be
/// submitted directly.
pub fn seal_many(
    fed: &BenchFederation,
    p: &Parties,
    n: usize,
) -> anyhow::Result<(Vec<v1::Envelope>, Vec<String>)> {
    let cfg: NodeConfig = config::load(
        fed.fed
            .node_config(p.sender.country())
            .context("no sender node")?,
    )?;
    let key = crate::storage::files::keys::load_signing_key(&cfg.keys.signing)?;
    let dir_key = crate::storage::files::directory::load_public_key(&cfg.directory_key)?;
    let dir = crate::storage::files::directory::load(&cfg.directory, &dir_key, &cfg.federation)?;
    let recipients = vec![p.target.clone()];
    let mut envelopes = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let now = crate::daemon::clock::now_ms();
        let sealed = envelope::seal(
            &SealInput {
                sender: &p.sender,
                recipients: &recipients,
                record: &p.record,
                labels: labels(v1::Priority::Routine),
                created_at_ms: now,
                expires_at_ms: now + DAY_MS,
                onward_of: None,
                permission: None,
            },
            &key,
            &dir,
        )?;
        ids.push(sealed.id.to_string());
        envelopes.push(sealed.envelope);
    }
    Ok((envelopes, ids))
}

/// Submits `envelopes` to the broker as the sender's node, closed loop.
pub async fn submit(
    fed: &BenchFederation,
    p: &Parties,
    envelopes: Vec<v1::Envelope>,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let cfg: NodeConfig = config::load(
        fed.fed
            .node_config(p.sender.country())
            .context("no sender node")?,
    )?;
    let client = exchange_as_node(&cfg, &fed.broker_addr()?.to_string())?
        .max_encoding_message_size(64 << 20)
        .max_decoding_message_size(64 << 20);
    let count = envelopes.len();
    let envelopes = Arc::new(envelopes);
    closed_loop(concurrency, count, move |i| {
        let mut c = client.clone();
        let envelopes = envelopes.clone();
        async move {
            let envelope = envelopes.get(i).cloned();
            c.submit(v1::SubmitRequest { envelope })
                .await
                .context("Submit")?;
            Ok(())
        }
    })
    .await
}

/// A routine backlog to one stopped node, drained while immediate alerts go
/// to every other country.
pub struct Backlog {
    pub fill: Run,
    pub drain: Duration,
    pub rss_before: u64,
    pub rss_filled: u64,
    pub rss_drained: u64,
    /// Send → last recipient's inbox, one per alert sent while the backlog drained.
    pub alerts: Vec<Duration>,
    /// Whether the backlog was still draining when the last alert arrived
    /// (if not, the later alerts met a shorter backlog, or none).
    pub alerts_during_drain: bool,
}

pub async fn backlog(
    fed: &mut BenchFederation,
    p: &Parties,
    size: usize,
    max_alerts: usize,
    alert_every: Duration,
) -> anyhow::Result<Backlog> {
    let broker = fed.broker_pid()?;
    let target = p.target.country();
    let (envelopes, ids) = seal_many(fed, p, size)?;
    fed.stop_node(target).await?;
    let rss_before = procstat::rss(broker)?;
    let fill = submit(fed, p, envelopes, 16).await?;
    let rss_filled = procstat::rss(broker)?;

    fed.start_node(target).await?;
    let started = Instant::now();
    let watch = p.watch(&p.target)?.clone();
    let drained = {
        let ids = ids.clone();
        let watch = watch.clone();
        tokio::spawn(async move { watch.wait_all(&ids, ARRIVAL_WAIT).await })
    };
    let mut client = fed.client(&p.sender)?;
    // Alerts go out on a schedule, each one followed on its own until it
    // reaches the last inbox, so that a slow one does not hold back the next.
    // At least one goes, so that the figure exists even when the backlog
    // drains first (the report then says so).
    let mut arrivals = tokio::task::JoinSet::new();
    let mut sent = 0;
    while sent < max_alerts.max(1) && (sent == 0 || !drained.is_finished()) {
        let t0 = Instant::now();
        let id = send(&mut client, &p.others, &p.record, v1::Priority::Immediate).await?;
        sent += 1;
        let watches: Vec<InboxWatch> = p
            .others
            .iter()
            .map(|a| p.watch(a).cloned())
            .collect::<anyhow::Result<_>>()?;
        arrivals.spawn(async move {
            let mut last = t0;
            for w in &watches {
                last = last.max(w.wait_all(std::slice::from_ref(&id), ARRIVAL_WAIT).await?);
            }
            anyhow::Ok(last.saturating_duration_since(t0))
        });
        tokio::time::sleep(alert_every.saturating_sub(t0.elapsed())).await;
    }
    let mut alerts = Vec::with_capacity(sent);
    while let Some(a) = arrivals.join_next().await {
        alerts.push(a.context("an alert watch panicked")??);
    }
    let alerts_during_drain = !drained.is_finished();
    let last = drained.await.context("the drain watch panicked")??;
    let drain = last.saturating_duration_since(started);
    let rss_drained = procstat::rss(broker)?;
    Ok(Backlog {
        fill,
        drain,
        rss_before,
        rss_filled,
        rss_drained,
        alerts,
        alerts_during_drain,
    })
}

/// The audit log as an auditor sees it.
pub struct Audit {
    pub size: u64,
    pub inclusion: Vec<Duration>,
    pub consistency: Vec<Duration>,
    pub verify: Duration,
}

/// The size of the latest checkpoint the broker serves.
pub async fn log_size(auditor: &mut crate::tools::audit::Auditor) -> anyhow::Result<u64> {
    let resp = auditor
        .api
        .get_checkpoint(v1::GetCheckpointRequest { from_size: 0 })
        .await
        .context("GetCheckpoint")?
        .into_inner();
    Ok(auditor.trust.open(&resp.checkpoint)?.checkpoint.size())
}

/// Waits until the log's checkpoint stops growing (the broker signs one a
/// second while entries arrive) and returns its size.
pub async fn settled_log_size(auditor: &mut crate::tools::audit::Auditor) -> anyhow::Result<u64> {
    let mut size = log_size(auditor).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = log_size(auditor).await?;
        if now == size {
            return Ok(size);
        }
        size = now;
    }
}

pub async fn audit(profile: &std::path::Path, proofs: usize) -> anyhow::Result<Audit> {
    let mut auditor = crate::tools::audit::Auditor::connect(profile, None)?;
    let size = settled_log_size(&mut auditor).await?;
    if size < 2 {
        bail!("the audit log has {size} entries: nothing to prove");
    }
    let mut inclusion = Vec::with_capacity(proofs);
    let mut consistency = Vec::with_capacity(proofs);
    for i in 0..proofs as u64 {
        // Spread over the log, deterministically.
        let index = (i.wrapping_mul(2_654_435_761)) % size;
        let t = Instant::now();
        auditor
            .api
            .prove_inclusion(v1::ProveInclusionRequest {
                target: Some(v1::prove_inclusion_request::Target::Index(index)),
                tree_size: 0,
            })
            .await
            .context("ProveInclusion")?;
        inclusion.push(t.elapsed());
        let first = 1 + index % (size - 1);
        let t = Instant::now();
        auditor
            .api
            .prove_consistency(v1::ProveConsistencyRequest {
                first_size: first,
                second_size: 0,
            })
            .await
            .context("ProveConsistency")?;
        consistency.push(t.elapsed());
    }
    let t = Instant::now();
    let report = crate::tools::audit::verify(profile, None).await?;
    let verify = t.elapsed();
    Ok(Audit {
        size: report.size(),
        inclusion,
        consistency,
        verify,
    })
}

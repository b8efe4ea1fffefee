//! How load is driven and observed: a closed loop of workers, each sending
//! its next request when the previous one is answered; an open loop that
//! starts requests on a fixed schedule whatever the answers do; and watchers
//! of agencies' inboxes that note when each record arrived.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::protocol::proto::v1;
use crate::tools::client::AgencyClient;

/// A closed loop's outcome.
pub struct Run {
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Run {
    /// Operations per second.
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.latencies.len() as f64 / s
        } else {
            0.0
        }
    }
}

/// Runs `count` operations with `concurrency` workers, each starting its
/// next operation when its previous one ends. The first error stops them all.
pub async fn closed_loop<F, Fut>(concurrency: usize, count: usize, op: F) -> anyhow::Result<Run>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for _ in 0..concurrency.clamp(1, count.max(1)) {
        let op = op.clone();
        let next = next.clone();
        workers.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return anyhow::Ok(latencies);
                }
                let t = Instant::now();
                op(i).await?;
                latencies.push(t.elapsed());
            }
        });
    }
    let mut latencies = Vec::with_capacity(count);
    while let Some(done) = workers.join_next().await {
        latencies.extend(done.context("a load worker panicked")??);
    }
    Ok(Run {
        elapsed: start.elapsed(),
        latencies,
    })
}

/// Starts operation `i` at `i / rate` seconds after the start, whether or
/// not earlier ones have been answered, so that a slow answer cannot hold
/// back the load (a closed loop would slow down with the server and hide
/// its queueing). Each latency is counted from the operation's scheduled
/// start, not from when it could be started. At most `max_in_flight` run at
/// once: beyond that the schedule slips, and the latencies show it.
pub async fn open_loop<F, Fut>(
    rate: f64,
    count: usize,
    max_in_flight: usize,
    op: F,
) -> anyhow::Result<Run>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0,
        "an open loop needs a positive rate"
    );
    let slots = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
    let start = Instant::now();
    let mut running = JoinSet::new();
    for i in 0..count {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .context("the open loop's slots were closed")?;
        let op = op.clone();
        running.spawn(async move {
            let _slot = slot;
            op(i).await?;
            anyhow::Ok(due.elapsed())
        });
    }
    let mut latencies = Vec::with_capacity(count);
    while let Some(done) = running.join_next().await {
        latencies.push(done.context("a load task panicked")??);
    }
    Ok(Run {
        elapsed: start.elapsed(),
        latencies,
    })
}

/// When each record reached one agency's inbox, as seen through WatchInbox.
/// The watch reconnects by itself, reading the agency's profile again each
/// time: the node may be stopped and started on another port.
#[derive(Clone)]
pub struct InboxWatch {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    changed: watch::Sender<u64>,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl InboxWatch {
    pub fn start(profile: PathBuf) -> InboxWatch {
        let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
        let (changed, _) = watch::channel(0u64);
        let task = {
            let seen = seen.clone();
            let changed = changed.clone();
            tokio::spawn(async move {
                loop {
                    let Ok(mut client) = AgencyClient::from_profile(&profile) else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    if let Ok(resp) = client.api.watch_inbox(v1::WatchInboxRequest {}).await {
                        let mut stream = resp.into_inner();
                        while let Ok(Some(entry)) = stream.message().await {
                            let now = Instant::now();
                            lock(&seen).entry(entry.envelope_id).or_insert(now);
                            changed.send_modify(|n| *n += 1);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        InboxWatch {
            seen,
            changed,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    pub fn arrived(&self, id: &str) -> Option<Instant> {
        lock(&self.seen).get(id).copied()
    }

    /// Waits until every one of `ids` has arrived; returns the last arrival.
    pub async fn wait_all(&self, ids: &[String], within: Duration) -> anyhow::Result<Instant> {
        let deadline = tokio::time::Instant::now() + within;
        let mut rx = self.changed.subscribe();
        loop {
            let last = {
                let seen = lock(&self.seen);
                ids.iter()
                    .map(|id| seen.get(id).copied())
                    .try_fold(None::<Instant>, |acc, t| {
                        t.map(|t| Some(acc.map_or(t, |a| a.max(t))))
                    })
            };
            match last {
                Some(Some(t)) => return Ok(t),
                Some(None) => return Ok(Instant::now()),
                None => {}
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let missing = ids.iter().filter(|id| self.arrived(id).is_none()).count();
                bail!(
                    "{missing} of {} records did not reach the inbox within {} s",
                    ids.len(),
                    within.as_secs()
                );
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

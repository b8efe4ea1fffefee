//! The node's submit window: the outbox loop keeps up to `submit_window`
//! envelopes submitted to the broker at once, each settled by its own
//! answer, and fills the window from the lanes of the outbox: immediate
//! before urgent before routine, without starving a lane.
//!
//! The window is filled in strict priority order, within one cap: while a
//! less urgent lane has records waiting, the lanes more urgent than it may
//! hold together all but an eighth of the window for it. So an alert that
//! finds the window busy with routine records takes the next free slot,
//! while a burst of alerts large enough to keep the whole window busy
//! still lets urgent and routine records through, each at an eighth of the
//! window at least. A lane with nothing waiting is not held a share, so a
//! window with a single kind of traffic is used whole by it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::NodeState;
use super::uplink::{BACKOFF_MIN, back_up, next_backoff, stopped, submit_one};
use crate::protocol::ids::EnvelopeId;
use crate::storage::StorageError;
use crate::storage::node::Lane;

/// Submits outbox envelopes until each has a final answer, up to the node's
/// submit window at once, lane by lane (see [`plan`]).
///
/// No envelope is submitted twice at once: those in flight are left out of
/// each read of the outbox. When the broker cannot be reached, the loop
/// waits (backing off), then probes with one submission at a time until the
/// broker answers again; a new envelope in the outbox ends the wait early,
/// and a broker found reachable again (the uplink's probe answered, or a
/// delivery stream opened) ends it and the backing off.
pub async fn outbox_loop(state: Arc<NodeState>) {
    let mut stopping = state.stopping();
    let mut reachable = state.uplink.watch();
    let mut changed = state.store.outbox_changed();
    let window = state.submit_window.max(1);
    let mut submits = Submits::default();
    let mut backoff = BACKOFF_MIN;
    // After a failure: nothing starts before the instant, then one at a time
    // until an answer comes.
    let mut paused_until: Option<tokio::time::Instant> = None;
    let mut probing = false;
    // Counts failures; a submission started before the latest one that
    // fails too is the same outage, and does not back off further.
    let mut epoch = 0u64;
    loop {
        // Every turn: a submission ended, the pause did, or the outbox grew.
        if paused_until.is_none() {
            // Whatever is enqueued from here on wakes the wait below, and so
            // does the broker found again after a failure of what starts.
            changed.borrow_and_update();
            reachable.borrow_and_update();
            let limit = if probing { 1 } else { window };
            if let Err(e) = submits.start(&state, limit, epoch).await {
                tracing::error!(error = %e, "cannot read the outbox");
                paused_until = Some(tokio::time::Instant::now() + backoff);
                backoff = next_backoff(backoff);
            }
        }
        tokio::select! {
            Some(done) = submits.tasks.join_next_with_id(), if !submits.tasks.is_empty() => {
                let mut next = Some(done);
                // Every answer in hand, before the outbox is read again.
                while let Some(done) = next {
                    let (id, started_in, answered) = submits.finished(done, epoch);
                    if answered {
                        backoff = BACKOFF_MIN;
                        probing = false;
                        paused_until = None;
                    } else if started_in == epoch {
                        match id {
                            Some(id) => tracing::debug!(%id, "submission not answered; backing off"),
                            None => tracing::debug!("a submission ended unanswered; backing off"),
                        }
                        epoch += 1;
                        probing = true;
                        paused_until = Some(tokio::time::Instant::now() + backoff);
                        backoff = next_backoff(backoff);
                    }
                    next = submits.tasks.try_join_next_with_id();
                }
            }
            _ = sleep_until(paused_until), if paused_until.is_some() => paused_until = None,
            _ = outbox_changed(&mut changed) => paused_until = None,
            _ = back_up(&mut reachable), if paused_until.is_some() => {
                backoff = BACKOFF_MIN;
                probing = false;
                paused_until = None;
            }
            // What is in flight ends here; a submission whose answer is
            // lost is answered "duplicate" on the next start.
            _ = stopped(&mut stopping) => return submits.tasks.shutdown().await,
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The submissions in flight: one task each, and the envelope and lane of
/// each task.
#[derive(Default)]
struct Submits {
    /// Each task answers the epoch it started in and whether the broker's
    /// answer was recorded.
    tasks: tokio::task::JoinSet<(u64, bool)>,
    by_task: HashMap<tokio::task::Id, (EnvelopeId, Lane)>,
    in_flight: HashSet<EnvelopeId>,
    per_lane: PerLane,
}

impl Submits {
    /// Starts what the window of `limit` has room for, lane by lane.
    async fn start(
        &mut self,
        state: &Arc<NodeState>,
        limit: usize,
        epoch: u64,
    ) -> Result<(), StorageError> {
        let free = limit.saturating_sub(self.in_flight.len());
        if free == 0 {
            return Ok(());
        }
        let waiting = state.store.outbox_waiting(free, &self.in_flight).await?;
        let mut counts = [0; 3];
        for (lane, _) in &waiting {
            counts[lane.index()] += 1;
        }
        let mut take = plan(limit, self.per_lane, counts);
        let chosen: Vec<(Lane, EnvelopeId)> = waiting
            .into_iter()
            .filter(|(lane, _)| {
                let n = &mut take[lane.index()];
                let keep = *n > 0;
                *n = n.saturating_sub(1);
                keep
            })
            .collect();
        let lanes: HashMap<EnvelopeId, Lane> = chosen.iter().map(|(l, id)| (*id, *l)).collect();
        for (id, env) in state.store.outbox_envelopes(&chosen).await? {
            let Some(&lane) = lanes.get(&id) else {
                continue;
            };
            let (state, link) = (state.clone(), state.uplink.link());
            let task = self
                .tasks
                .spawn(async move { (epoch, submit_one(&state, link, id, env).await) });
            self.by_task.insert(task.id(), (id, lane));
            self.in_flight.insert(id);
            self.per_lane[lane.index()] += 1;
        }
        Ok(())
    }

    /// Forgets a finished submission: its envelope, the epoch it started in
    /// and whether it was answered. A task that failed was not answered,
    /// and counts as a failure in the current epoch, `now`.
    fn finished(
        &mut self,
        done: Result<(tokio::task::Id, (u64, bool)), tokio::task::JoinError>,
        now: u64,
    ) -> (Option<EnvelopeId>, u64, bool) {
        let (task, outcome) = match done {
            Ok((task, outcome)) => (task, Some(outcome)),
            Err(e) => {
                tracing::error!(error = %e, "a submission task failed");
                (e.id(), None)
            }
        };
        let id = self.by_task.remove(&task).map(|(id, lane)| {
            self.in_flight.remove(&id);
            let n = &mut self.per_lane[lane.index()];
            *n = n.saturating_sub(1);
            id
        });
        match outcome {
            Some((epoch, answered)) => (id, epoch, answered),
            None => (id, now, false),
        }
    }
}

/// Resolves when an envelope was enqueued since the value was last seen;
/// never if the store is gone (the node is stopping then).
async fn outbox_changed(changed: &mut tokio::sync::watch::Receiver<u64>) {
    if changed.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Per lane, in the order of [`Lane::ALL`].
pub type PerLane = [usize; 3];

/// The share of a window of `window` slots kept for each less urgent lane
/// with records waiting: none in a window too small to share.
pub fn share(window: usize) -> usize {
    window / 8
}

/// How many records of each lane to start now, given the window's size,
/// what is in flight of each lane and what waits in each (at least as many
/// as could be started, if that many wait).
pub fn plan(window: usize, in_flight: PerLane, waiting: PerLane) -> PerLane {
    let mut free = window.saturating_sub(in_flight.iter().sum());
    let mut start = [0; 3];
    // In flight or starting, of this lane and the more urgent ones.
    let mut held = 0;
    for lane in Lane::ALL {
        let i = lane.index();
        held += in_flight[i];
        let kept = waiting[i + 1..].iter().filter(|w| **w > 0).count() * share(window);
        let cap = window.saturating_sub(kept);
        let n = waiting[i].min(free).min(cap.saturating_sub(held));
        start[i] = n;
        free -= n;
        held += n;
    }
    start
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_urgent_lane_is_served_first() {
        assert_eq!(plan(32, [0, 0, 0], [3, 5, 40]), [3, 5, 24]);
        assert_eq!(plan(32, [0, 0, 30], [1, 0, 40]), [1, 0, 1]);
        assert_eq!(plan(32, [0, 0, 31], [1, 1, 40]), [1, 0, 0]);
    }

    #[test]
    fn a_lane_alone_uses_the_whole_window() {
        assert_eq!(plan(32, [0, 0, 0], [40, 0, 0]), [32, 0, 0]);
        assert_eq!(plan(32, [0, 0, 0], [0, 0, 40]), [0, 0, 32]);
        assert_eq!(plan(32, [0, 0, 12], [0, 0, 40]), [0, 0, 20]);
    }

    #[test]
    fn a_window_full_of_alerts_still_lets_each_lower_lane_through() {
        // Alerts hold the window alone; a slot frees up.
        assert_eq!(plan(32, [31, 0, 0], [40, 9, 40]), [0, 0, 1]);
        assert_eq!(plan(32, [27, 0, 4], [40, 9, 40]), [0, 1, 0]);
        // Alerts at their cap: the rest goes to the lanes below.
        assert_eq!(plan(32, [24, 0, 0], [40, 9, 40]), [0, 4, 4]);
        assert_eq!(plan(32, [24, 4, 3], [40, 9, 40]), [0, 0, 1]);
        assert_eq!(plan(32, [24, 4, 4], [40, 9, 40]), [0, 0, 0]);
        // Below it, alerts come first again.
        assert_eq!(plan(32, [23, 4, 4], [40, 9, 40]), [1, 0, 0]);
        assert_eq!(plan(32, [0, 0, 0], [40, 9, 40]), [24, 4, 4]);
    }

    #[test]
    fn a_window_of_one_is_strict_priority() {
        assert_eq!(plan(1, [0, 0, 0], [1, 1, 1]), [1, 0, 0]);
        assert_eq!(plan(1, [0, 0, 0], [0, 1, 1]), [0, 1, 0]);
        assert_eq!(plan(1, [0, 0, 1], [1, 1, 1]), [0, 0, 0]);
    }

    #[test]
    fn nothing_more_starts_than_waits_or_fits() {
        for window in [0, 1, 2, 8, 32, 100] {
            for in_flight in [[0, 0, 0], [1, 2, 3], [window, 0, 0], [0, 0, window]] {
                for waiting in [[0, 0, 0], [1, 0, 7], [50, 50, 50]] {
                    let s = plan(window, in_flight, waiting);
                    let busy: usize = in_flight.iter().sum();
                    assert!(
                        s.iter().sum::<usize>() <= window.saturating_sub(busy),
                        "{window} {in_flight:?} {waiting:?}: {s:?}"
                    );
                    for i in 0..3 {
                        assert!(s[i] <= waiting[i]);
                    }
                }
            }
        }
    }
}

//! Retention at the node: expired inbox records deleted, their purges
//! reported to the broker (envelope ids only), expired idempotency keys
//! forgotten.

use std::sync::Arc;
use std::time::Duration;

use super::NodeState;
use super::link::{CALL_TIMEOUT, within};
use super::uplink::Client;
use crate::protocol::bounds::MAX_PURGE_IDS;
use crate::protocol::ids::EnvelopeId;
use crate::protocol::proto::v1;

/// How often a node looks for expired records.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// Purges expired records now and then, and reports the purges.
pub async fn purge_loop(state: Arc<NodeState>) {
    let mut stopping = state.stopping();
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
        let mut client = state.uplink.link().client;
        if let Err(e) = purge_once(&state, &mut client, state.now_ms()).await {
            tracing::warn!(error = %e, "purge not completed; will try again");
        }
    }
}

/// Deletes every inbox record expired at `now_ms` and reports every purge
/// the broker has not yet logged. Only envelope ids leave the node. Also
/// forgets the idempotency keys first used more than
/// [`crate::storage::node::idempotency::RETENTION_MS`] before `now_ms`.
pub async fn purge_once(
    state: &NodeState,
    client: &mut Client,
    now_ms: i64,
) -> anyhow::Result<Vec<EnvelopeId>> {
    let purged = state.store.purge_expired(now_ms).await?;
    let forgotten = state
        .store
        .forget_keys(now_ms.saturating_sub(crate::storage::node::idempotency::RETENTION_MS))
        .await?;
    if forgotten > 0 {
        tracing::info!(count = forgotten, "forgot expired idempotency keys");
    }
    if !purged.is_empty() {
        tracing::info!(count = purged.len(), ids = ?purged.iter().map(ToString::to_string).collect::<Vec<_>>(), "purged expired records");
    }
    let unreported = state.store.unreported_purges().await?;
    for chunk in unreported.chunks(MAX_PURGE_IDS) {
        let report = v1::PurgeReport {
            envelope_ids: chunk.iter().map(|id| id.as_bytes().to_vec()).collect(),
        };
        within(CALL_TIMEOUT, client.report_purge(report))
            .await
            .map_err(|s| anyhow::anyhow!("reporting purge: {s}"))?;
        state.store.purges_reported(chunk).await?;
    }
    Ok(purged)
}

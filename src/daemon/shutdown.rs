//! The shutdown signal every long-running command waits on.

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The longest a daemon waits, once it closed what was still open, for its
/// server to end.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Runs a daemon's server (a tonic server whose shutdown signal raises
/// `stopping`) to its end, within a bound once it stops: from the moment
/// `stopping` turns true, its connections have until `drain_until` to end
/// by themselves (the listener is closed at once, long-lived streams end on
/// `stopping`, calls in flight finish), and then `close` is raised, which
/// ends every connection still open ([`crate::daemon::tls::ServerTls::incoming`]).
/// Returns the server's result, or None if it had not ended even then.
pub async fn drain<E>(
    server: impl std::future::Future<Output = Result<(), E>>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    close: &tokio::sync::watch::Sender<bool>,
    grace: std::time::Duration,
) -> Option<Result<(), E>> {
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => return Some(r),
        _ = stopping.wait_for(|s| *s) => {}
    }
    match tokio::time::timeout(grace, &mut server).await {
        Ok(r) => Some(r),
        Err(_) => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "connections still open when the time to stop was nearly up; closing them"
            );
            close.send_replace(true);
            tokio::time::timeout(CLOSE_WAIT, &mut server).await.ok()
        }
    }
}

/// What a daemon keeps of its stop time for the work after its server
/// ended (in-flight writes, a last checkpoint): a fifth of it, between
/// 0.5 s and 2 s.
pub fn reserve(grace: std::time::Duration) -> std::time::Duration {
    (grace / 5)
        .clamp(
            std::time::Duration::from_millis(500),
            std::time::Duration::from_secs(2),
        )
        .min(grace / 2)
}

/// Waits for `tasks` until `deadline`, then aborts those still running.
pub async fn join_until(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    deadline: tokio::time::Instant,
    what: &str,
) {
    let mut tasks = tasks;
    let all = async {
        for t in &mut tasks {
            let _ = t.await;
        }
    };
    if tokio::time::timeout_at(deadline, all).await.is_err() {
        tracing::warn!(%what, "tasks still running when the time to stop was up; ended");
        for t in &tasks {
            t.abort();
        }
    }
}

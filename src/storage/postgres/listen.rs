//! The listening connection: one per store, outside the pool, that turns
//! the database's notifications into the store's watch channels, and
//! reconnects when the connection is lost.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::watch;

use super::{CHANNEL, PgSettings, Shared, schema};
use crate::protocol::ids::Country;
use crate::storage::StorageError;

/// The wait before connecting again after the listening connection was
/// lost or could not be made, doubling up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

type Connection = tokio_postgres::Connection<
    tokio_postgres::Socket,
    super::tls::RustlsStream<tokio_postgres::Socket>,
>;

pub(super) struct Listener {
    settings: PgSettings,
    shared: Weak<Shared>,
    closed: watch::Receiver<()>,
}

/// A listening connection: the client and the connection it drives.
pub(super) type Listening = (tokio_postgres::Client, Connection);

impl Listener {
    /// Connects and listens before the store is handed out, so nothing
    /// committed after the open is missed; [`Listener::run`] takes the
    /// connection on.
    pub(super) async fn start(
        settings: PgSettings,
        shared: Weak<Shared>,
        closed: watch::Receiver<()>,
    ) -> Result<(Listener, Listening), StorageError> {
        let (client, connection) = settings.connect().await.map_err(|e| super::pg_error(&e))?;
        let listener = Listener {
            settings,
            shared,
            closed,
        };
        let listening = listener.listen(client, connection).await?;
        Ok((listener, listening))
    }

    /// Runs `fut` while driving `connection`; notifications that arrive
    /// meanwhile are handled after it.
    async fn drive<T>(
        &self,
        connection: &mut Connection,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, StorageError> {
        tokio::pin!(fut);
        let mut buffered = Vec::new();
        let r = {
            let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
            loop {
                tokio::select! {
                    r = &mut fut => break r,
                    m = messages.next() => match m {
                        Some(Ok(m)) => buffered.push(m),
                        Some(Err(e)) => return Err(super::pg_error(&e)),
                        None => return Err(StorageError::Backend(
                            "database: the listening connection closed".into(),
                        )),
                    },
                }
            }
        };
        for m in buffered {
            self.handle(m);
        }
        Ok(r)
    }

    /// Runs LISTEN on `client` while driving `connection`.
    async fn listen(
        &self,
        client: tokio_postgres::Client,
        mut connection: Connection,
    ) -> Result<Listening, StorageError> {
        let sql = format!("LISTEN {CHANNEL}");
        self.drive(&mut connection, client.batch_execute(&sql))
            .await?
            .map_err(|e| super::pg_error(&e))?;
        Ok((client, connection))
    }

    pub(super) async fn run(mut self, first: Listening) {
        let mut backoff = FIRST_BACKOFF;
        let mut current = Some(first);
        loop {
            if let Some((client, connection)) = current.take() {
                backoff = FIRST_BACKOFF;
                if self.serve(client, connection).await.is_err() {
                    return;
                }
            }
            if self.closing() {
                return;
            }
            // Lost: wait, connect again, then everyone looks again.
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.closed.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
            match self.reconnect().await {
                Ok(c) => current = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "the store's listening connection to the database could not be made again; retrying")
                }
            }
        }
    }

    fn closing(&self) -> bool {
        self.shared.strong_count() == 0 || self.closed.has_changed().is_err()
    }

    async fn reconnect(&self) -> Result<Listening, StorageError> {
        let (client, connection) = self
            .settings
            .connect()
            .await
            .map_err(|e| super::pg_error(&e))?;
        let (client, connection) = self.listen(client, connection).await?;
        let Some(shared) = self.shared.upgrade() else {
            return Ok((client, connection));
        };
        let mut connection = connection;
        let check = self
            .drive(&mut connection, async {
                let version = schema::version(&client).await;
                let size = client.query_one("SELECT size FROM log_head", &[]).await;
                (version, size)
            })
            .await?;
        match check {
            (Ok(v), _) if v > schema::SCHEMA_VERSION => {
                let reason = schema::newer_schema(v);
                tracing::error!(%reason, "the store stops acknowledging");
                shared.failure.send_if_modified(|f| {
                    let new = f.is_none();
                    if new {
                        *f = Some(reason.clone());
                    }
                    new
                });
            }
            (_, Ok(row)) => {
                let size: i64 = row.get(0);
                shared.show_sequenced(u64::try_from(size).unwrap_or(0));
            }
            _ => {}
        }
        tracing::info!("the store's listening connection to the database is back");
        shared.wake_all();
        Ok((client, connection))
    }

    /// Fans out notifications until the connection is lost (Ok) or the
    /// store is dropped (Err).
    async fn serve(
        &mut self,
        client: tokio_postgres::Client,
        mut connection: Connection,
    ) -> Result<(), ()> {
        let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
        loop {
            tokio::select! {
                m = messages.next() => match m {
                    Some(Ok(m)) => self.handle(m),
                    Some(Err(e)) => {
                        tracing::warn!(error = %super::pg_error(&e), "the store's listening connection to the database was lost; reconnecting");
                        drop(client);
                        return Ok(());
                    }
                    None => {
                        tracing::warn!("the store's listening connection to the database closed; reconnecting");
                        drop(client);
                        return Ok(());
                    }
                },
                _ = self.closed.changed() => return Err(()),
            }
        }
    }

    fn handle(&self, m: tokio_postgres::AsyncMessage) {
        let tokio_postgres::AsyncMessage::Notification(n) = m else {
            return;
        };
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let payload = n.payload();
        let mut parts = payload.split(':');
        let node = |s: Option<&str>| s.and_then(|s| s.parse::<Country>().ok());
        match parts.next() {
            Some("q") => {
                if let Some(c) = node(parts.next()) {
                    shared.wake_queued(c, parts.next() == Some("i"));
                }
            }
            Some("a") => {
                if let Some(c) = node(parts.next()) {
                    shared.wake_acked(c);
                }
            }
            Some("s") => {
                if let Some(size) = parts.next().and_then(|s| s.parse().ok()) {
                    shared.show_sequenced(size);
                }
            }
            _ => {}
        }
    }
}

//! The schema and its versions: each migration runs once, in order, in one
//! transaction with the version it brings recorded in `schema_version`;
//! brokers opening the database at once take turns on an advisory lock.
//! A database whose schema is newer than this broker knows is refused.

use super::corrupt;
use crate::storage::StorageError;
use crate::storage::broker::StoreError;

/// The advisory lock key brokers take while migrating ("cbschema").
const MIGRATION_LOCK: i64 = 0x6362_7363_6865_6d61;

/// The migrations, the first bringing version 1.
const MIGRATIONS: &[&str] = &[
    // 1: everything the broker keeps.
    "
    CREATE TABLE log_head (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        size bigint NOT NULL CHECK (size >= 0)
    );
    INSERT INTO log_head (size) VALUES (0);
    CREATE TABLE audit (
        idx bigint PRIMARY KEY,
        leaf bytea NOT NULL
    );
    CREATE TABLE integration (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        size bigint NOT NULL CHECK (size >= 0)
    );
    INSERT INTO integration (size) VALUES (0);
    CREATE TABLE merkle_nodes (
        level smallint NOT NULL,
        idx bigint NOT NULL,
        hash bytea NOT NULL,
        PRIMARY KEY (level, idx)
    );
    CREATE TABLE checkpoints (
        size bigint PRIMARY KEY,
        note bytea NOT NULL
    );
    CREATE TABLE cosignatures (
        size bigint NOT NULL,
        witness text NOT NULL,
        line text NOT NULL,
        PRIMARY KEY (size, witness)
    );
    CREATE TABLE seen (
        id bytea PRIMARY KEY,
        created_at_ms bigint NOT NULL
    );
    CREATE TABLE accepted (
        id bytea PRIMARY KEY,
        log_index bigint NOT NULL,
        summary bytea NOT NULL
    );
    CREATE TABLE grants (
        original bytea NOT NULL,
        grantee text NOT NULL,
        third text NOT NULL,
        granted_by bytea NOT NULL,
        PRIMARY KEY (original, grantee, third)
    );
    CREATE TABLE payload (
        id bytea PRIMARY KEY,
        envelope bytea NOT NULL,
        remaining bigint NOT NULL,
        sender text NOT NULL
    );
    CREATE TABLE mail_counter (
        node text PRIMARY KEY,
        next bigint NOT NULL
    );
    CREATE TABLE mail (
        node text NOT NULL,
        seq bigint NOT NULL,
        lane smallint NOT NULL,
        envelope_id bytea,
        receipt bytea,
        PRIMARY KEY (node, seq),
        CHECK ((envelope_id IS NULL) <> (receipt IS NULL))
    );
    CREATE INDEX mail_by_lane ON mail (node, lane, seq);
    CREATE TABLE delivered (
        id bytea NOT NULL,
        node text NOT NULL,
        PRIMARY KEY (id, node)
    );
    CREATE TABLE meta (
        key bytea PRIMARY KEY,
        value bytea NOT NULL
    );
    ",
    // 2: the lease of the broker that integrates the log and signs its
    // checkpoints, valid until `expires` by the database's clock.
    "
    CREATE TABLE lease (
        name text PRIMARY KEY,
        holder text NOT NULL,
        expires timestamptz NOT NULL
    );
    ",
];

/// The schema version this broker knows and brings a database to.
pub const SCHEMA_VERSION: i32 = MIGRATIONS.len() as i32;

/// The sentence a broker stops with when the database is ahead of it.
pub(super) fn newer_schema(found: i32) -> String {
    format!(
        "the database's schema is at version {found}, newer than version {SCHEMA_VERSION} that \
         this broker knows; refusing to run against it: run a broker of the version that \
         migrated it, or a newer one"
    )
}

/// The schema version recorded in the database (0: none).
pub(super) async fn version(client: &tokio_postgres::Client) -> Result<i32, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('schema_version') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = client
        .query_one("SELECT max(version) FROM schema_version", &[])
        .await?
        .get(0);
    Ok(v.unwrap_or(0))
}

/// Brings the database to [`SCHEMA_VERSION`] in one transaction; refuses
/// one that is newer.
pub(super) async fn migrate(client: &mut deadpool_postgres::Object) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now()
         )",
    )
    .await?;
    let current: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM schema_version", &[])
        .await?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(StoreError::Storage(StorageError::Stopped(newer_schema(
            current,
        ))));
    }
    if current < 0 {
        return Err(corrupt("schema_version", format!("version {current}")));
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = n as i32 + 1;
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(version, "database schema migrated");
    }
    tx.commit().await?;
    Ok(())
}

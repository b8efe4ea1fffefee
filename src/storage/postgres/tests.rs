//! The PostgreSQL store: the backend-neutral tests, and what only a
//! shared database shows: several brokers on one database, the schema's
//! versions, the session settings. Each test runs on a database of its own
//! on the server `CASEBRIDGE_TEST_POSTGRES` names, and is skipped, said
//! loudly, without one.

use std::sync::Arc;
use std::time::Duration;

use super::testing::TestDb;
use super::*;
use crate::protocol::ids::EnvelopeId;
use crate::protocol::proto::v1;
use crate::storage::broker::conformance::Backend;
use crate::storage::broker::{Acceptance, BrokerStore, Integrator, Mailboxes, Sequencer};

pub(super) struct PgBackend(TestDb);

#[async_trait::async_trait]
impl Backend for PgBackend {
    async fn open(&self) -> Arc<dyn BrokerStore> {
        Arc::new(PgStore::open(&self.0.settings).await.unwrap())
    }
}

async fn postgres() -> Option<PgBackend> {
    TestDb::create().await.map(PgBackend)
}

async fn done(b: PgBackend) {
    b.0.drop_db().await;
}

/// The backend-neutral tests of the broker's store
/// ([`crate::storage::broker::conformance`]), on PostgreSQL.
mod conformance {
    use super::{done, postgres};
    crate::all_conformance_tests!(postgres(), done);
}

fn refusal(n: u64) -> v1::AuditEvent {
    v1::AuditEvent {
        at_ms: n as i64,
        event: Some(v1::audit_event::Event::SubmissionRefused(
            v1::SubmissionRefused {
                reason: format!("r{n}"),
                ..Default::default()
            },
        )),
    }
}

fn acceptance(to: &str) -> Acceptance {
    Acceptance {
        id: EnvelopeId::at(0),
        created_at_ms: 0,
        sender_node: "HR".parse().unwrap(),
        envelope: v1::Envelope {
            header: b"header".to_vec(),
            ..Default::default()
        },
        recipient_nodes: vec![to.parse().unwrap()],
        event: refusal(100),
        summary: v1::EnvelopeSummary::default(),
        grants: vec![],
    }
}

/// Two brokers on one database: writes from both get dense, unique
/// indexes and per-node seqs; each one's delivery stream is woken by the
/// other's acceptance; integrations from both agree.
#[tokio::test]
async fn two_brokers_share_one_database() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let a = Arc::new(PgStore::open(&db.settings).await.unwrap());
    let b = Arc::new(PgStore::open(&db.settings).await.unwrap());
    let ba: Country = "BA".parse().unwrap();
    let mut woken_at_a = a.subscribe(ba).await.unwrap();
    let mut sequenced_at_a = a.sequenced().await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..40u64 {
        let s: Arc<PgStore> = if n % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            if n % 4 == 1 {
                s.append(refusal(n)).await.unwrap()
            } else {
                s.accept(acceptance("BA")).await.unwrap()
            }
        }));
    }
    let mut indexes = Vec::new();
    for t in tasks {
        indexes.push(t.await.unwrap());
    }
    indexes.sort_unstable();
    assert_eq!(indexes, (0..40).collect::<Vec<u64>>(), "dense and unique");
    assert_eq!(a.audit_len().await.unwrap(), 40);
    assert_eq!(b.audit_len().await.unwrap(), 40);
    let pending = a.pending(ba, None, 100).await.unwrap();
    let mut seqs: Vec<u64> = pending.iter().map(|q| q.seq).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..30).collect::<Vec<u64>>());
    // B's acceptances woke A's stream, and A's integrator saw B's entries.
    tokio::time::timeout(
        Duration::from_secs(20),
        woken_at_a.wait_for(|w| w.queued >= 30),
    )
    .await
    .expect("woken by both brokers' acceptances")
    .unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        sequenced_at_a.wait_for(|n| *n >= 40),
    )
    .await
    .expect("told of both brokers' entries")
    .unwrap();
    let (x, y) = tokio::join!(a.integrate(), b.integrate());
    assert_eq!((x.unwrap(), y.unwrap()), (40, 40));
    assert_eq!(a.root(40).await.unwrap(), b.root(40).await.unwrap());
    let leaves = b.leaves(0, 40).await.unwrap();
    let hashes: Vec<_> = leaves
        .iter()
        .map(|l| crate::protocol::merkle::leaf_hash(l))
        .collect();
    assert_eq!(
        a.root(40).await.unwrap(),
        crate::protocol::merkle::root_from_leaves(&hashes)
    );
    drop((a, b));
    db.drop_db().await;
}

/// The log's lease between two brokers on one database: one holds it at a
/// time; the other takes it once it expired or was given up, and the first
/// then cannot renew it. Expiry is by the database's clock, so a lease
/// given for no time at all has already expired.
#[tokio::test]
async fn one_broker_at_a_time_holds_the_logs_lease() {
    use crate::storage::broker::Lease as _;
    let Some(db) = TestDb::create().await else {
        return;
    };
    let a = PgStore::open(&db.settings).await.unwrap();
    let b = PgStore::open(&db.settings).await.unwrap();
    let long = Duration::from_secs(60);
    assert!(a.lead("a", long).await.unwrap(), "free: a takes it");
    assert!(a.lead("a", long).await.unwrap(), "a renews its own");
    assert!(
        !b.lead("b", long).await.unwrap(),
        "b waits while a's is valid"
    );
    b.resign("b").await.unwrap();
    assert!(
        !b.lead("b", long).await.unwrap(),
        "b cannot give up a's lease"
    );
    a.resign("a").await.unwrap();
    assert!(
        b.lead("b", long).await.unwrap(),
        "given up: b takes it at once"
    );
    assert!(!a.lead("a", long).await.unwrap(), "a lost it");
    // b's lease runs out (given for no time): a takes it, and b, still
    // believing it leads, cannot renew.
    assert!(b.lead("b", Duration::ZERO).await.unwrap());
    assert!(a.lead("a", long).await.unwrap(), "expired: a takes it");
    assert!(!b.lead("b", long).await.unwrap(), "b's renewal is refused");
    let holders: i64 = a
        .client()
        .await
        .unwrap()
        .query_one("SELECT count(*) FROM lease", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(holders, 1);
    drop((a, b));
    db.drop_db().await;
}

/// Every session the store opens commits synchronously, whatever the
/// server's default.
#[tokio::test]
async fn every_session_commits_synchronously() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PgStore::open(&db.settings).await.unwrap();
    {
        let admin = store.client().await.unwrap();
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {} SET synchronous_commit = off",
                db.settings.dbname().unwrap()
            ))
            .await
            .unwrap();
    }
    drop(store);
    let store = PgStore::open(&db.settings).await.unwrap();
    let client = store.client().await.unwrap();
    let setting: String = client
        .query_one("SHOW synchronous_commit", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(setting, "on");
    drop(client);
    drop(store);
    db.drop_db().await;
}

/// A database migrated by a newer broker is refused with a sentence that
/// says so; one at this broker's version opens again unchanged.
#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PgStore::open(&db.settings).await.unwrap();
    store.append(refusal(0)).await.unwrap();
    let client = store.client().await.unwrap();
    let version: i32 = client
        .query_one("SELECT max(version) FROM schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    drop(store);
    let again = PgStore::open(&db.settings).await.unwrap();
    assert_eq!(
        again.audit_len().await.unwrap(),
        1,
        "nothing migrated twice"
    );
    drop(again);
    client
        .execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
    drop(client);
    let Err(e) = PgStore::open(&db.settings).await else {
        panic!("a newer schema was accepted");
    };
    let e = e.to_string();
    assert!(
        e.contains(&format!(
            "schema is at version {}, newer than version {SCHEMA_VERSION}",
            SCHEMA_VERSION + 1
        )) && e.contains("refusing to run"),
        "{e}"
    );
    db.drop_db().await;
}

/// A listening connection that is cut is made again, and every watcher is
/// woken, since what was notified meanwhile is lost.
#[tokio::test]
async fn a_lost_listening_connection_comes_back_and_wakes_everyone() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = Arc::new(PgStore::open(&db.settings).await.unwrap());
    let other = PgStore::open(&db.settings).await.unwrap();
    let ba: Country = "BA".parse().unwrap();
    let mut woken = store.subscribe(ba).await.unwrap();
    let client = other.client().await.unwrap();
    let cut = client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(cut, 2, "both stores' listening connections");
    tokio::time::timeout(Duration::from_secs(20), woken.wait_for(|w| w.acked >= 1))
        .await
        .expect("woken after the reconnect")
        .unwrap();
    let before = woken.borrow_and_update().queued;
    // And it listens again: an acceptance by the other store wakes it.
    other.accept(acceptance("BA")).await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(20),
        woken.wait_for(|w| w.queued > before),
    )
    .await
    .expect("woken by a later acceptance")
    .unwrap();
    drop(client);
    drop((store, other));
    db.drop_db().await;
}

/// With `sslmode=verify-full` the store talks to the server over TLS,
/// verified against the configured root (the throwaway server's CA, which
/// `scripts/postgres.sh` names in `CASEBRIDGE_TEST_POSTGRES_ROOT`); against
/// another root it does not connect at all.
#[tokio::test]
async fn verify_full_connects_over_verified_tls_only() {
    let Ok(root) = std::env::var("CASEBRIDGE_TEST_POSTGRES_ROOT") else {
        eprintln!("skipped: CASEBRIDGE_TEST_POSTGRES_ROOT not set");
        return;
    };
    let Some(db) = TestDb::create().await else {
        return;
    };
    let url = format!(
        "{}?sslmode=verify-full",
        std::env::var(super::testing::ENV).unwrap()
    );
    let settings = PgSettings::new(&url, None, Some(std::path::Path::new(&root)), 4, true)
        .unwrap()
        .with_dbname(db.settings.dbname().unwrap());
    let store = PgStore::open(&settings).await.unwrap();
    store.append(refusal(0)).await.unwrap();
    let client = store.client().await.unwrap();
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ssl, "the session runs over TLS");
    drop(client);
    drop(store);

    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(&other, cert.cert.pem()).unwrap();
    let wrong = PgSettings::new(&url, None, Some(&other), 4, true)
        .unwrap()
        .with_dbname(db.settings.dbname().unwrap());
    let Err(e) = PgStore::open(&wrong).await else {
        panic!("connected to a server whose certificate the root does not sign");
    };
    assert!(e.to_string().contains("no database connection"), "{e}");
    db.drop_db().await;
}

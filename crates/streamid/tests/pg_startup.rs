//! PostgreSQL-only startup behaviour (spec §4.2 step 2a, §14.2 item 9): a restart waits
//! for the writer lock held by an earlier incarnation's open transaction, bounded by
//! `writer_lock_timeout`. (SQLite gets the same guarantee from its write lock and from
//! rolling back a dead process's transaction itself.) Every other startup scenario —
//! restarts, writer-list changes, repairs, backwards streams, several tables, NULL
//! instances, anyone-may-write — is in the behaviour suite (`tests/suite`).
// Test crate: panicking on unexpected errors is the point (helpers included), and the shared
// `common` module's items are `pub` for the other test binaries.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Env;
use streamid::{Error, MultiWriterIdGenerator, StreamConfig, StreamTransaction};

fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
}

/// Opens a stream transaction on `client`, allocates one ID and writes its row, uncommitted.
async fn write_uncommitted<'a>(
    g: &MultiWriterIdGenerator,
    client: &'a mut tokio_postgres::Client,
) -> (StreamTransaction<'a>, i64) {
    let mut tx = g.transaction(client).await.unwrap();
    let id = tx.next_id().await.unwrap();
    let instance = g.instance_name().to_owned();
    tx.execute(
        "INSERT INTO events (stream_ordering, instance_name) VALUES ($1, $2)",
        &[&id, &instance],
    )
    .await
    .unwrap();
    (tx, id)
}

async fn start_config(env: &Env, config: StreamConfig) -> MultiWriterIdGenerator {
    MultiWriterIdGenerator::postgres(env.pool.clone(), config)
        .await
        .expect("generator start")
}

// ----- waiting for an earlier incarnation (§4.2 step 2a) -------------------------------------

/// Backends of this database waiting for an advisory lock held by `blocker`.
async fn waiting_on(env: &Env, blocker: i32) -> i64 {
    let client = env.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND NOT l.granted \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
               AND a.wait_event_type = 'Lock' AND a.wait_event = 'advisory' \
               AND $1 = ANY(pg_blocking_pids(a.pid))",
            &[&blocker],
        )
        .await
        .unwrap()
        .get(0)
}

/// A writer whose housekeeping never runs during the test, so after [`lose_lease`] it stays
/// "dead" while its transaction lives on in PostgreSQL — a crashed process whose COMMIT is
/// still in flight.
async fn start_crashable(env: &Env) -> MultiWriterIdGenerator {
    let config = env
        .config("w1", &["w1"])
        .reclaim_interval(Duration::from_secs(3600));
    env.create_sequence(&config).await;
    MultiWriterIdGenerator::postgres(env.pool.clone(), config)
        .await
        .unwrap()
}

/// Ends the lease connection (tagged, idle), as the death of its process would.
async fn lose_lease(env: &Env) {
    let client = env.pool.get().await.unwrap();
    let ended: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name LIKE 'streamid:%' AND state = 'idle' \
             AND datname = current_database()) t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ended, 1, "exactly the lease connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_waits_for_previous_incarnations_open_transaction() {
    // why: spec §4.2 step 2a and §14.2 item 9 — a restart must not cover an ID the previous
    // process's transaction can still commit: startup waits on the writer lock.
    let env = Env::new().await;
    let old = start_crashable(&env).await;
    old.shutdown().await; // its position writes are lost, as in a crash
    let mut client = env.pool.get().await.unwrap();
    let (tx, id) = write_uncommitted(&old, &mut client).await;
    assert_eq!(id, 2);
    let blocker: i32 = tx
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(old);
    lose_lease(&env).await;

    let startup = tokio::spawn(MultiWriterIdGenerator::postgres(
        env.pool.clone(),
        env.config("w1", &["w1"]),
    ));
    common::eventually("the restart waits on the writer lock", async || {
        waiting_on(&env, blocker).await == 1
    })
    .await;
    assert!(!startup.is_finished(), "blocked on the lock");
    assert_eq!(env.recorded().await, map(&[("w1", 1)]));

    tx.commit().await.unwrap();
    let g = startup.await.unwrap().expect("startup after the commit");
    assert_eq!(
        g.minimal_local_current_token(),
        2,
        "covers the committed row"
    );
    assert_eq!(g.current_token(), 2);
    assert_eq!(
        env.sequence_last("events_seq").await,
        2,
        "L = T adopted after the wait"
    );
    assert_eq!(env.recorded().await, map(&[("w1", 2)]));
    assert_eq!(g.next_id().await.unwrap().id(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_writer_lock_timeout_names_blocking_pid() {
    // why: spec §4.2 step 2a — the wait is bounded; on timeout startup fails with an error
    // naming the blocking backends, and changes nothing.
    let env = Env::new().await;
    let old = start_crashable(&env).await;
    old.shutdown().await;
    let mut client = env.pool.get().await.unwrap();
    let (tx, id) = write_uncommitted(&old, &mut client).await;
    assert_eq!(id, 2);
    let blocker: i32 = tx
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(old);
    lose_lease(&env).await;

    let config = env
        .config("w1", &["w1"])
        .writer_lock_timeout(Duration::from_millis(300));
    let err = MultiWriterIdGenerator::postgres(env.pool.clone(), config.clone())
        .await
        .unwrap_err();
    let message = err.to_string();
    match err {
        Error::WriterLockTimeout {
            stream,
            instance,
            waited_ms,
            blockers,
        } => {
            assert_eq!((stream.as_str(), instance.as_str()), ("events", "w1"));
            assert!(waited_ms >= 300, "waited {waited_ms} ms");
            assert!(blockers.contains(&format!("pid {blocker}")), "{blockers}");
            assert!(message.contains(&format!("pid {blocker}")), "{message}");
            assert!(message.contains("pg_terminate_backend"), "{message}");
        }
        other => panic!("expected WriterLockTimeout, got {other:?}"),
    }
    assert_eq!(env.sequence_last("events_seq").await, 2, "nothing taken");
    assert_eq!(env.recorded().await, map(&[("w1", 1)]));

    // Once the old transaction rolled back, 2 is a gap: L = 2 is neither 1, T (0) nor Q (1),
    // so the restart takes an ID of its own.
    tx.rollback().await.unwrap();
    let g = start_config(&env, config).await;
    assert_eq!(env.sequence_last("events_seq").await, 3);
    assert_eq!(g.minimal_local_current_token(), 3);
    assert_eq!(g.current_token(), 3);
    assert_eq!(env.recorded().await, map(&[("w1", 3)]));
    assert_eq!(g.next_id().await.unwrap().id(), 4);
}

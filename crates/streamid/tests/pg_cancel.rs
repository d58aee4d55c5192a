//! PostgreSQL-only cancellation sweeps and unknown COMMIT outcomes (spec §5.3, §7.2, §7.3,
//! §7.4, FIX-5): `next_id` swept while the pool connects, `retry` swept through its
//! attempts, connections killed before and during COMMIT, and the resolver. The sweeps of
//! the operations both backends share (`next_id`, `next_ids`, `complete`, and the
//! transaction's begin, `next_id`, `next_ids`, `commit`, `rollback`) are in the behaviour
//! suite (`tests/suite/scenarios/cancel.rs`); this binary reuses its sweep helper.
// A test binary: panicking on an unexpected error is the point; the shared harness's
// items are `pub` for the suite.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;
// Shared with the behaviour suite; only part of each is used here.
#[allow(dead_code)]
#[path = "suite/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "suite/sweep.rs"]
mod sweep;

use std::time::Duration;

use common::error_log::{self, assert_no_streamid_errors};
use common::{Env, eventually};
use harness::Harness;
use streamid::{Error, MultiWriterIdGenerator};
use sweep::{Cut, Step, poll_then_drop, sweep};

const INSERT: &str =
    "INSERT INTO events (stream_ordering, instance_name, payload) VALUES ($1, $2, $3)";

/// A fresh PostgreSQL environment, as a harness (for the shared sweep) and its `Env`.
async fn pg() -> Harness {
    Harness::postgres().await
}

fn env_of(h: &Harness) -> &Env {
    match h {
        Harness::Pg(env) => env,
        Harness::Sqlite(_) => unreachable!("pg_cancel runs on PostgreSQL only"),
    }
}

async fn start(env: &Env) -> MultiWriterIdGenerator {
    error_log::install();
    env.start("w", &["w"]).await
}

async fn count_rows(env: &Env, payload: &str) -> i64 {
    let client = env.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM events WHERE payload = $1",
            &[&payload],
        )
        .await
        .unwrap()
        .get(0)
}

async fn row_exists(env: &Env, id: i64) -> bool {
    let client = env.pool.get().await.unwrap();
    client
        .query_opt("SELECT 1 FROM events WHERE stream_ordering = $1", &[&id])
        .await
        .unwrap()
        .is_some()
}

// ----- sweeps --------------------------------------------------------------------------

// why: upstream #19800 / spec §5.2 step 4: the fetch's marker is set before the pooled
// connection is even opened; `next_id` dropped while the pool connects (TCP, startup,
// authentication) must remove it too. Every step starts with an empty pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_19800_cancelled_next_id_while_connecting_does_not_stall() {
    error_log::install();
    let h = pg().await;
    let env = env_of(&h);
    let pool = env.db.pool(2).unwrap();
    let config = env.config("w", &["w"]);
    env.create_sequence(&config).await;
    let generator = MultiWriterIdGenerator::postgres(pool.clone(), config)
        .await
        .unwrap();
    let polls = sweep(&h, &generator, "next_id on a cold pool", async |cut| {
        // Background tasks may hold a connection for a moment; wait until none is left.
        eventually("the pool is empty", async || {
            pool.retain(|_, _| false);
            pool.status().size == 0
        })
        .await;
        match poll_then_drop(generator.next_id(), cut).await {
            Some(alloc) => {
                alloc.unwrap().complete().await.unwrap();
                Step::Completed
            }
            None => Step::Dropped { lost: 1 },
        }
    })
    .await;
    // A warm pool needs 2 polls (send, reply); more means connecting was swept too.
    assert!(
        polls >= 3,
        "connecting took only {polls} polls: nothing was swept"
    );
}

// why: upstream #19800 / spec §7.4, §7.2: `retry` dropped at any `.await` — inside an
// attempt, in the rollback of a failed attempt, in BEGIN or in COMMIT — finishes every
// attempt's IDs (an in-flight COMMIT through the resolver), and at most one attempt's row
// ever commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_19800_cancelled_retry_does_not_stall() {
    let h = pg().await;
    let env = env_of(&h);
    let generator = start(env).await;
    let polls = sweep(&h, &generator, "retry", async |cut| {
        let payload = format!("retry-{}-{}", cut.polls, cut.at_wake);
        let mut client = env.pool.get().await.unwrap();
        let mut attempts = 0u32;
        let op = generator.retry(&mut client, async |tx| {
            attempts += 1;
            let id = tx.next_id().await?;
            tx.execute(INSERT, &[&id, &"w", &payload]).await?;
            if attempts == 1 {
                tx.batch_execute(
                    "DO $$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '40001'; END $$",
                )
                .await?;
            }
            Ok(id)
        });
        let done = poll_then_drop(op, cut).await;
        eventually("every attempt is decided", async || {
            generator.unresolved_commits() == 0 && generator.unfinished_ids() == 0
        })
        .await;
        let rows = count_rows(env, &payload).await;
        assert!(rows <= 1, "{rows} attempts committed");
        if rows == 1 {
            let client = env.pool.get().await.unwrap();
            let id: i64 = client
                .query_one(
                    "SELECT stream_ordering FROM events WHERE payload = $1",
                    &[&payload],
                )
                .await
                .unwrap()
                .get(0);
            assert!(
                generator.current_token() >= id,
                "a committed row is covered"
            );
        }
        match done {
            Some(result) => {
                let id = result.unwrap();
                assert_eq!(attempts, 2);
                assert_eq!(rows, 1);
                assert!(row_exists(env, id).await);
                Step::Completed
            }
            None => Step::Dropped { lost: 1 },
        }
    })
    .await;
    assert!(polls >= 8, "retry completed after {polls} polls");
}

// ----- unknown commit outcomes through a lost connection ---------------------------------

async fn backend_pid(tx: &tokio_postgres::Transaction<'_>) -> i32 {
    tx.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

async fn terminate(env: &Env, pid: i32) {
    let client = env.pool.get().await.unwrap();
    let ok: bool = client
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(ok, "pg_terminate_backend({pid})");
}

// why: spec §7.2/§7.3 (FIX-5): the transaction's backend is killed before COMMIT; `commit()`
// fails, the transaction aborted, so its IDs are finished (as failure; at once or through
// the resolver) and `P` catches up over the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connection_before_commit() {
    let env = Env::new().await;
    let generator = start(&env).await;
    let mut client = env.pool.get().await.unwrap();
    let mut tx = generator.transaction(&mut client).await.unwrap();
    let id = tx.next_id().await.unwrap();
    tx.execute(INSERT, &[&id, &"w", &"killed"]).await.unwrap();
    let pid = backend_pid(&tx).await;
    terminate(&env, pid).await;
    eventually("the backend is gone", async || {
        let c = env.pool.get().await.unwrap();
        c.query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .await
            .unwrap()
            .is_none()
    })
    .await;
    let err = tx.commit().await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::CommitOutcomeUnknown { .. } | Error::Database { .. }
        ),
        "{err:?}"
    );
    drop(client);
    eventually("the IDs are finished", async || {
        generator.unfinished_ids() == 0 && generator.unresolved_commits() == 0
    })
    .await;
    assert!(!row_exists(&env, id).await);
    assert_eq!(generator.current_token(), id);
    assert_eq!(generator.max_allocated_token().await.unwrap(), id);
    generator.check_invariants().unwrap();
    assert_no_streamid_errors();
}

/// A helper table whose deferred constraint trigger sleeps `secs` at COMMIT, so COMMIT
/// stays in flight long enough to interfere with.
async fn slow_commits(env: &Env, secs: f64) {
    env.exec(&format!(
        "CREATE TABLE slow_commit (x INT); \
         CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS \
           $$ BEGIN PERFORM pg_sleep({secs}); RETURN NULL; END $$; \
         CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON slow_commit \
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit()"
    ))
    .await;
}

// why: spec §7.2 row 5 and §7.3 (FIX-5): the backend is killed while COMMIT is being
// processed: no success reply, so the outcome is unknown — `commit()` returns the
// commit-outcome-unknown error, the ID stays unfinished (`P` below it) until
// `pg_xact_status` says aborted, then `P` catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connection_during_commit_is_resolved_as_aborted() {
    let env = Env::new().await;
    slow_commits(&env, 5.0).await;
    let generator = start(&env).await;
    let mut client = env.pool.get().await.unwrap();
    let mut tx = generator.transaction(&mut client).await.unwrap();
    let id = tx.next_id().await.unwrap();
    let xid = tx.xid().unwrap();
    tx.execute(INSERT, &[&id, &"w", &"killed"]).await.unwrap();
    tx.execute("INSERT INTO slow_commit VALUES (1)", &[])
        .await
        .unwrap();
    let pid = backend_pid(&tx).await;
    let (result, ()) = tokio::join!(tx.commit(), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        // COMMIT is in flight (the trigger sleeps): nothing may cover the ID.
        assert_eq!(generator.unfinished_ids(), 1);
        assert!(generator.current_token() < id);
        terminate(&env, pid).await;
    });
    let err = result.unwrap_err();
    match &err {
        Error::CommitOutcomeUnknown { xid: x, ids, .. } => {
            assert_eq!(*x, xid);
            assert_eq!(ids, &vec![id]);
        }
        other => panic!("expected CommitOutcomeUnknown, got {other:?}"),
    }
    drop(client);
    assert_eq!(generator.unresolved_commits(), 1);
    assert!(
        generator.current_token() < id,
        "unknown outcome: P stays below the ID"
    );
    eventually("the resolver finds the transaction aborted", async || {
        generator.unresolved_commits() == 0
    })
    .await;
    assert_eq!(generator.unfinished_ids(), 0);
    assert!(!row_exists(&env, id).await);
    assert_eq!(generator.current_token(), id, "P passes the aborted ID");
    generator.check_invariants().unwrap();
    assert_no_streamid_errors();
}

// why: spec §7.4: an attempt whose COMMIT outcome is unknown (here: the backend is killed
// while COMMIT runs) MUST NOT be retried — running it again could write the row twice; the
// retry function returns the commit-outcome-unknown error and the resolver decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_does_not_retry_an_unknown_commit_outcome() {
    let env = Env::new().await;
    slow_commits(&env, 5.0).await;
    let generator = start(&env).await;
    let mut client = env.pool.get().await.unwrap();
    let pid = std::sync::atomic::AtomicI32::new(0);
    let mut attempts = 0u32;
    let mut ids = Vec::new();
    let retry = generator.retry(&mut client, async |tx| {
        attempts += 1;
        let id = tx.next_id().await?;
        ids.push(id);
        tx.execute(INSERT, &[&id, &"w", &"retry-unknown"]).await?;
        tx.execute("INSERT INTO slow_commit VALUES (1)", &[])
            .await?;
        let backend: i32 = tx.query_one("SELECT pg_backend_pid()", &[]).await?.get(0);
        pid.store(backend, std::sync::atomic::Ordering::Release);
        Ok(id)
    });
    let (result, ()) = tokio::join!(retry, async {
        eventually("the attempt reaches COMMIT", async || {
            pid.load(std::sync::atomic::Ordering::Acquire) != 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        terminate(&env, pid.load(std::sync::atomic::Ordering::Acquire)).await;
    });
    let err = result.unwrap_err();
    assert!(matches!(err, Error::CommitOutcomeUnknown { .. }), "{err:?}");
    assert!(!err.is_retryable());
    assert_eq!(attempts, 1, "an unknown outcome was retried");
    drop(client);
    eventually("the resolver decides the attempt", async || {
        generator.unresolved_commits() == 0 && generator.unfinished_ids() == 0
    })
    .await;
    assert_eq!(count_rows(&env, "retry-unknown").await, 0);
    assert_eq!(generator.current_token(), ids[0]);
    generator.check_invariants().unwrap();
    assert_no_streamid_errors();
}

// why: spec §7.3 (FIX-5): while PostgreSQL reports the in-doubt transaction `in progress`
// the resolver must keep polling and finish nothing; once it commits, the IDs are
// finished with success: `P` covers the row and the position is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_in_progress_holds_p_until_it_commits() {
    let env = Env::new().await;
    slow_commits(&env, 1.5).await;
    let generator = start(&env).await;
    let mut client = env.pool.get().await.unwrap();
    let mut tx = generator.transaction(&mut client).await.unwrap();
    let id = tx.next_id().await.unwrap();
    let xid = tx.xid().unwrap().to_string();
    tx.execute(INSERT, &[&id, &"w", &"slow"]).await.unwrap();
    tx.execute("INSERT INTO slow_commit VALUES (1)", &[])
        .await
        .unwrap();
    // One poll sends COMMIT; dropping the future leaves its outcome unknown.
    assert!(
        poll_then_drop(
            tx.commit(),
            Cut {
                polls: 1,
                at_wake: false,
            }
        )
        .await
        .is_none()
    );
    assert_eq!(generator.unresolved_commits(), 1);
    // The resolver polls (100 ms, 200 ms, 400 ms, …). Whatever the timing: a state read
    // *before* PostgreSQL still says `in progress` must hold the ID back.
    let observer = env.pool.get().await.unwrap();
    let mut confirmed = 0;
    loop {
        let held = (
            generator.unresolved_commits(),
            generator.unfinished_ids(),
            generator.current_token() < id,
            generator.current_token_for_writer("w") < id,
            env.recorded().await["w"] < id,
        );
        let status: Option<String> = observer
            .query_one("SELECT pg_xact_status($1::text::xid8)", &[&xid])
            .await
            .unwrap()
            .get(0);
        if status.as_deref() != Some("in progress") {
            break;
        }
        assert_eq!(
            held,
            (1, 1, true, true, true),
            "in progress: nothing may cover {id}"
        );
        confirmed += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        confirmed >= 3,
        "observed the commit in progress only {confirmed} times"
    );
    eventually("the resolver finds the transaction committed", async || {
        generator.unresolved_commits() == 0
    })
    .await;
    assert!(row_exists(&env, id).await);
    assert_eq!(generator.unfinished_ids(), 0);
    assert_eq!(generator.current_token(), id);
    eventually("the resolved commit's position is recorded", async || {
        env.recorded().await["w"] == id
    })
    .await;
    generator.check_invariants().unwrap();
    assert_no_streamid_errors();
}

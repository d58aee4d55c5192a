//! PostgreSQL-only runtime behaviour (spec §7.2, §7.4, §8.4): the retry helper and
//! serialization failures, failures raised at COMMIT by deferred constraints, and the
//! coalesced position upsert counted by a trigger. Everything both backends share —
//! completion, the transaction path, replication through `advance` — is in the behaviour
//! suite (`tests/suite`).
// A test binary: panicking on an unexpected error is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Env, eventually};
use streamid::{Error, MultiWriterIdGenerator, StreamTransaction};

const INSERT: &str =
    "INSERT INTO events (stream_ordering, instance_name, payload) VALUES ($1, $2, $3)";

/// Starts `instance` with a position write tick long enough that only completions write
/// `stream_positions` during the test (the tick's refresh is a SHOULD of §8.2).
async fn start_without_tick(env: &Env, instance: &str, writers: &[&str]) -> MultiWriterIdGenerator {
    let config = env
        .config(instance, writers)
        .position_write_interval(Duration::from_secs(3600));
    env.create_sequence(&config).await;
    let generator = MultiWriterIdGenerator::postgres(env.pool.clone(), config)
        .await
        .expect("generator start");
    // The tick fires once at once when the writer task first runs; let that happen now,
    // so that no write in the test comes from the tick.
    tokio::time::sleep(Duration::from_millis(100)).await;
    generator
}

/// `(minimal_local_current_token, current_token_for_writer(own), current_token)`.
fn row_of(generator: &MultiWriterIdGenerator) -> (i64, i64, i64) {
    (
        generator.minimal_local_current_token(),
        generator.current_token_for_writer(generator.instance_name()),
        generator.current_token(),
    )
}

/// Stream IDs of rows in `events`, ascending.
async fn event_ids(env: &Env) -> Vec<i64> {
    let client = env.pool.get().await.unwrap();
    client
        .query(
            "SELECT stream_ordering FROM events ORDER BY stream_ordering",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn insert_row(tx: &StreamTransaction<'_>, id: i64, payload: &str) {
    let instance = "w";
    tx.execute(INSERT, &[&id, &instance, &payload])
        .await
        .unwrap();
}

// ----- coalesced position writes ------------------------------------------------------

// why: spec §8.4 (FIX-6): at most one upsert in flight, values read when the statement is
// issued, so concurrent completions share one statement; each `complete()` returns only
// once its value is recorded (§5.3; here the row is locked meanwhile, so none may return),
// and the row ends exactly at the last ID. The current-thread runtime makes the
// interleaving deterministic: all 50 completions finish their IDs before the position
// writer runs once.
#[tokio::test(flavor = "current_thread")]
async fn concurrent_completions_share_one_upsert() {
    let env = Env::new().await;
    let generator = start_without_tick(&env, "w", &["w"]).await;
    assert_eq!(env.recorded().await.get("w"), Some(&1));
    env.exec(
        "CREATE TABLE upserts (at timestamptz DEFAULT clock_timestamp()); \
         CREATE FUNCTION count_upsert() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN INSERT INTO upserts DEFAULT VALUES; RETURN NULL; END $$; \
         CREATE TRIGGER count_upsert AFTER INSERT ON stream_positions \
         FOR EACH STATEMENT EXECUTE FUNCTION count_upsert()",
    )
    .await;
    let mut allocs = Vec::new();
    for _ in 0..50 {
        allocs.push(generator.next_id().await.unwrap());
    }
    let last = allocs.last().unwrap().id();
    assert_eq!(last, 51);
    // Hold the row, so the position write cannot finish until we let it.
    let mut locker = env.pool.get().await.unwrap();
    let lock = locker.transaction().await.unwrap();
    lock.execute(
        "SELECT 1 FROM stream_positions WHERE instance_name = 'w' FOR UPDATE",
        &[],
    )
    .await
    .unwrap();
    let tasks: Vec<_> = allocs
        .into_iter()
        .map(|a| tokio::spawn(a.complete()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The IDs are finished at the first poll; the callers still wait for the row.
    assert_eq!(generator.unfinished_ids(), 0);
    assert_eq!(row_of(&generator), (last, last, last));
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "complete() returned before its position was recorded"
    );
    lock.commit().await.unwrap();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Every complete() has returned, so the row already holds the largest value.
    assert_eq!(env.recorded().await.get("w"), Some(&last));
    let client = env.pool.get().await.unwrap();
    let upserts: i64 = client
        .query_one("SELECT count(*) FROM upserts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        upserts, 1,
        "50 concurrent completions must share one upsert"
    );
    generator.check_invariants().unwrap();
}

// ----- retries and failures at COMMIT --------------------------------------------------

// why: spec §7.4: a serialization failure (40001) rolls the attempt back and finishes its
// IDs as gaps when it ends (before the next attempt); the next attempt allocates fresh IDs; the final row exists exactly once and
// `P` catches up over the failed attempt's gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_serialization_failure_finishes_every_attempt() {
    let env = Env::new().await;
    let generator = env.start("w", &["w"]).await;
    let mut client = env.pool.get().await.unwrap();
    let mut attempts = 0u32;
    let mut seen = Vec::new();
    let id = generator
        .retry(&mut client, async |tx| {
            attempts += 1;
            if let Some(&failed) = seen.first() {
                // Finished when its attempt ended, not when the last one does (§14.2.7).
                assert_eq!(generator.unfinished_ids(), 0);
                assert_eq!(generator.current_token(), failed);
            }
            let id = tx.next_id().await?;
            seen.push(id);
            tx.execute(INSERT, &[&id, &"w", &"retry"]).await?;
            if attempts == 1 {
                tx.batch_execute(
                    "DO $$ BEGIN RAISE EXCEPTION 'forced' USING ERRCODE = '40001'; END $$",
                )
                .await?;
            }
            Ok(id)
        })
        .await
        .unwrap();
    assert_eq!(attempts, 2);
    assert_eq!(seen, vec![2, 3]);
    assert_eq!(id, 3);
    assert_eq!(generator.unfinished_ids(), 0);
    assert_eq!(row_of(&generator), (3, 3, 3));
    assert_eq!(generator.max_allocated_token().await.unwrap(), 3);
    assert_eq!(event_ids(&env).await, vec![3], "the final row exists once");
    generator.check_invariants().unwrap();
}

// why: spec §7.4 "(any statement, or COMMIT)": a serialization failure raised at COMMIT
// (here by a deferred constraint trigger) is retried too; the failed COMMIT's IDs are
// finished as failure (§7.2 row 2) and the retried transaction's row exists once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_serialization_failure_at_commit() {
    let env = Env::new().await;
    env.exec(
        "CREATE TABLE commit_check (fail BOOLEAN NOT NULL); \
         CREATE FUNCTION commit_check() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.fail THEN RAISE EXCEPTION 'forced at commit' USING ERRCODE = '40001'; END IF; \
           RETURN NULL; END $$; \
         CREATE CONSTRAINT TRIGGER commit_check AFTER INSERT ON commit_check \
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION commit_check()",
    )
    .await;
    let generator = env.start("w", &["w"]).await;
    let mut client = env.pool.get().await.unwrap();
    let mut attempts = 0u32;
    let id = generator
        .retry(&mut client, async |tx| {
            attempts += 1;
            let id = tx.next_id().await?;
            tx.execute(INSERT, &[&id, &"w", &"retry"]).await?;
            let fail = attempts == 1;
            tx.execute("INSERT INTO commit_check VALUES ($1)", &[&fail])
                .await?;
            Ok(id)
        })
        .await
        .unwrap();
    assert_eq!((attempts, id), (2, 3));
    assert_eq!(generator.unfinished_ids(), 0);
    assert_eq!(generator.unresolved_commits(), 0);
    assert_eq!(row_of(&generator), (3, 3, 3));
    assert_eq!(event_ids(&env).await, vec![3]);
    generator.check_invariants().unwrap();
}

// why: spec §7.4: attempts are bounded (here 3); the last retryable error is returned and
// every attempt's IDs are finished, so nothing holds `P` back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_gives_up_after_the_configured_attempts() {
    let env = Env::new().await;
    let config = env.config("w", &["w"]).retry_attempts(3);
    env.create_sequence(&config).await;
    let generator = MultiWriterIdGenerator::postgres(env.pool.clone(), config)
        .await
        .unwrap();
    let mut client = env.pool.get().await.unwrap();
    let mut attempts = 0u32;
    let err = generator
        .retry(&mut client, async |tx| {
            attempts += 1;
            let id = tx.next_id().await?;
            tx.execute(INSERT, &[&id, &"w", &"retry"]).await?;
            tx.batch_execute("DO $$ BEGIN RAISE EXCEPTION 'dead' USING ERRCODE = '40P01'; END $$")
                .await?;
            Ok(id)
        })
        .await
        .unwrap_err();
    assert_eq!(attempts, 3);
    assert!(err.is_retryable(), "{err}");
    assert_eq!(err.code(), Some("40P01"));
    assert_eq!(generator.unfinished_ids(), 0);
    assert_eq!(row_of(&generator), (4, 4, 4), "IDs 2, 3, 4 are gaps");
    assert!(event_ids(&env).await.is_empty());
    generator.check_invariants().unwrap();
}

// why: spec §7.4: only 40001/40P01 are retried; any other error is returned at once, after
// the attempt's IDs were finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_returns_a_non_retryable_error_at_once() {
    let env = Env::new().await;
    let generator = env.start("w", &["w"]).await;
    let mut client = env.pool.get().await.unwrap();
    let mut attempts = 0u32;
    let err = generator
        .retry(&mut client, async |tx| {
            attempts += 1;
            let id = tx.next_id().await?;
            tx.execute("SELECT 1 / 0", &[]).await?;
            Ok(id)
        })
        .await
        .unwrap_err();
    assert_eq!(attempts, 1);
    assert!(!err.is_retryable());
    assert_eq!(err.code(), Some("22012"));
    assert_eq!(generator.unfinished_ids(), 0);
    assert_eq!(row_of(&generator), (2, 2, 2));
    generator.check_invariants().unwrap();
}

// why: spec §7.2 row 2: a COMMIT answered with an error (here a DEFERRABLE INITIALLY
// DEFERRED unique constraint) rolled the transaction back: the IDs are finished at once
// with outcome failure (not handed to the resolver) and no position write is scheduled
// for them (§6.6).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_constraint_failure_at_commit_finishes_ids_as_failure() {
    let env = Env::new().await;
    env.exec(
        "CREATE TABLE guard (x INT, CONSTRAINT guard_x UNIQUE (x) DEFERRABLE INITIALLY DEFERRED)",
    )
    .await;
    let generator = start_without_tick(&env, "w", &["w"]).await;
    let a = generator.next_id().await.unwrap();
    a.complete().await.unwrap();
    assert_eq!(env.recorded().await.get("w"), Some(&2));

    let mut client = env.pool.get().await.unwrap();
    let mut tx = generator.transaction(&mut client).await.unwrap();
    let id = tx.next_id().await.unwrap();
    assert_eq!(id, 3);
    insert_row(&tx, id, "deferred").await;
    tx.batch_execute("INSERT INTO guard VALUES (1), (1)")
        .await
        .unwrap();
    let err = tx.commit().await.unwrap_err();
    assert_eq!(err.code(), Some("23505"), "{err:?}");
    assert!(!matches!(err, Error::CommitOutcomeUnknown { .. }));
    assert_eq!(generator.unfinished_ids(), 0, "finished at once");
    assert_eq!(
        generator.unresolved_commits(),
        0,
        "not handed to the resolver"
    );
    assert_eq!(row_of(&generator), (3, 3, 3), "the gap is decided");
    assert!(event_ids(&env).await.is_empty());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.recorded().await.get("w"),
        Some(&2),
        "a failed commit must not write stream_positions"
    );

    // Control: a committed transaction does schedule the write.
    let mut tx = generator.transaction(&mut client).await.unwrap();
    let id = tx.next_id().await.unwrap();
    insert_row(&tx, id, "ok").await;
    tx.commit().await.unwrap();
    eventually("the committed position is recorded", async || {
        env.recorded().await.get("w") == Some(&4)
    })
    .await;
    generator.check_invariants().unwrap();
}

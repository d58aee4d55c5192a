//! Completion, the transaction path and replication through `advance`, against a real
//! PostgreSQL (spec §5.3, §6, §7, §8, §12.3).
// A test binary: panicking on an unexpected error is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
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

/// Every ID finished, no commit outcome pending, invariants hold.
async fn settle(generator: &MultiWriterIdGenerator) {
    eventually(
        "every ID is finished and every outcome resolved",
        async || generator.unfinished_ids() == 0 && generator.unresolved_commits() == 0,
    )
    .await;
    generator.check_invariants().unwrap();
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

// ----- completion ----------------------------------------------------------------------

// why: spec §6.3 worked example, run through the real generator: out-of-order completion
// moves the own position to the largest finished ID below the smallest unfinished one
// (upstream #8257), `P` follows for a sole writer, and `complete()` returns only once the
// resulting announced position is in `stream_positions` (§5.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worked_example_out_of_order_completion() {
    let env = Env::new().await;
    // Rows 1–7 by w; stream_positions(w) = 7; the sequence last handed out 7.
    for id in 1..=7 {
        env.insert(id, Some("w")).await;
    }
    env.exec(
        "CREATE TABLE stream_positions (stream_name TEXT NOT NULL, instance_name TEXT NOT NULL, \
         stream_id BIGINT NOT NULL); \
         CREATE UNIQUE INDEX stream_positions_idx ON stream_positions (stream_name, instance_name); \
         INSERT INTO stream_positions VALUES ('events', 'w', 7)",
    )
    .await;
    let generator = env.start("w", &["w"]).await;
    assert_eq!(env.sequence_last("events_seq").await, 7);
    assert_eq!(row_of(&generator), (7, 7, 7), "startup: L = T = 7");
    assert_eq!(generator.positions(), BTreeMap::from([("w".to_owned(), 7)]));

    let mut allocs = BTreeMap::new();
    for expected in 8..=11 {
        let a = generator.next_id().await.unwrap();
        assert_eq!(a.id(), expected);
        env.insert(expected, Some("w")).await;
        allocs.insert(expected, a);
    }
    assert_eq!(generator.unfinished_ids(), 4);
    assert_eq!(row_of(&generator), (7, 7, 7));
    generator.check_invariants().unwrap();

    // (finished ID, expected (positions[w], announced, P), expected row after complete())
    let steps = [
        (9, (7, 7, 7), 7),
        (8, (9, 9, 9), 9),
        (11, (9, 9, 9), 9),
        (10, (11, 11, 11), 11),
    ];
    for (id, expected, row) in steps {
        allocs.remove(&id).unwrap().complete().await.unwrap();
        assert_eq!(row_of(&generator), expected, "after finishing {id}");
        assert_eq!(
            env.recorded().await.get("w"),
            Some(&row),
            "stream_positions right after complete() of {id} returned"
        );
        generator.check_invariants().unwrap();
    }
    assert_eq!(generator.unfinished_ids(), 0);
    assert_eq!(generator.max_allocated_token().await.unwrap(), 11);
}

// why: spec §6.1, §6.2 and §5.3: completed in allocation order, each completion moves the
// own position, the announced position and (sole writer) `P` to its ID, and `complete()`
// returns with `stream_positions` already there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_order_completion_moves_every_position_step_by_step() {
    let env = Env::new().await;
    let generator = env.start("w", &["w"]).await;
    let mut allocs = Vec::new();
    for _ in 0..3 {
        allocs.push(generator.next_id().await.unwrap());
    }
    assert_eq!(allocs.iter().map(|a| a.id()).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(row_of(&generator), (1, 1, 1));
    for alloc in allocs {
        let id = alloc.id();
        env.insert(id, Some("w")).await;
        alloc.complete().await.unwrap();
        assert_eq!(row_of(&generator), (id, id, id));
        assert_eq!(env.recorded().await.get("w"), Some(&id));
        generator.check_invariants().unwrap();
    }
    assert_eq!(generator.unfinished_ids(), 0);
}

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

// why: spec §5.3: dropping an `Allocation` is the failure path — its IDs are finished at
// once (positions move over the gap) but no `stream_positions` write is scheduled for
// them (§6.6, §8.2: failures never trigger a write themselves); the next successful
// completion records the newest announced position, covering the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_allocation_moves_positions_but_writes_no_row() {
    let env = Env::new().await;
    let generator = start_without_tick(&env, "w", &["w"]).await;
    let a = generator.next_id().await.unwrap();
    env.insert(a.id(), Some("w")).await;
    a.complete().await.unwrap();
    assert_eq!(env.recorded().await.get("w"), Some(&2));

    let b = generator.next_id().await.unwrap();
    assert_eq!(b.id(), 3);
    drop(b);
    assert_eq!(generator.unfinished_ids(), 0, "Drop finishes synchronously");
    assert_eq!(row_of(&generator), (3, 3, 3), "the gap is decided");
    generator.check_invariants().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.recorded().await.get("w"),
        Some(&2),
        "a dropped allocation must not write stream_positions"
    );

    // Out of order: drop 5 while 4 is outstanding, then complete 4.
    let c = generator.next_id().await.unwrap();
    let d = generator.next_id().await.unwrap();
    assert_eq!((c.id(), d.id()), (4, 5));
    drop(d);
    assert_eq!(row_of(&generator), (3, 3, 3), "5 is blocked behind 4");
    env.insert(4, Some("w")).await;
    c.complete().await.unwrap();
    assert_eq!(row_of(&generator), (5, 5, 5));
    assert_eq!(env.recorded().await.get("w"), Some(&5));
    generator.check_invariants().unwrap();
}

// why: spec §5.3 and §8.4: if the upsert covering a completion fails, `complete()` returns
// the error but the IDs stay finished; the writer retries with back-off (newest value) and
// the row catches up once the write can succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_position_write_is_reported_and_retried() {
    let env = Env::new().await;
    let generator = start_without_tick(&env, "w", &["w"]).await;
    env.exec("ALTER TABLE stream_positions ADD CONSTRAINT cap CHECK (stream_id < 3)")
        .await;
    let a = generator.next_id().await.unwrap();
    a.complete().await.unwrap();
    assert_eq!(env.recorded().await.get("w"), Some(&2));

    let b = generator.next_id().await.unwrap();
    let err = b.complete().await.unwrap_err();
    assert!(
        matches!(err, Error::PositionNotRecorded { position: 3, .. }),
        "{err:?}"
    );
    assert_eq!(generator.unfinished_ids(), 0, "the IDs stay finished");
    assert_eq!(row_of(&generator), (3, 3, 3));
    assert_eq!(env.recorded().await.get("w"), Some(&2));

    env.exec("ALTER TABLE stream_positions DROP CONSTRAINT cap")
        .await;
    eventually("the position writer retries the failed write", async || {
        env.recorded().await.get("w") == Some(&3)
    })
    .await;
    generator.check_invariants().unwrap();
}

// ----- the transaction path ----------------------------------------------------------------

// why: spec §7.2 row 1: once the server confirms COMMIT, `commit()` finishes the IDs with
// success before it returns (positions already cover them) and the row is visible; the
// position write is scheduled, not awaited (§8.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_commit_finishes_ids_before_returning() {
    let env = Env::new().await;
    let generator = env.start("w", &["w"]).await;
    let mut client = env.pool.get().await.unwrap();
    let mut tx = generator.transaction(&mut client).await.unwrap();
    let ids = tx.next_ids(3).await.unwrap();
    let last = tx.next_id().await.unwrap();
    assert_eq!(ids, vec![2, 3, 4]);
    assert_eq!(last, 5);
    assert!(tx.xid().is_some(), "the first allocation records the xid");
    assert_eq!(tx.ids(), vec![2, 3, 4, 5]);
    for id in [2, 3, 4, 5] {
        insert_row(&tx, id, "commit").await;
    }
    assert_eq!(generator.unfinished_ids(), 4);
    assert!(generator.current_token() < 2);
    tx.commit().await.unwrap();
    assert_eq!(generator.unfinished_ids(), 0);
    assert_eq!(row_of(&generator), (5, 5, 5));
    assert_eq!(event_ids(&env).await, vec![2, 3, 4, 5]);
    eventually("the committed position is recorded", async || {
        env.recorded().await.get("w") == Some(&5)
    })
    .await;
    generator.check_invariants().unwrap();
}

// why: spec §7.2 row 3: `rollback()` finishes the IDs at once as gaps; the rows vanish and
// positions pass the gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_rollback_finishes_ids_as_gaps() {
    let env = Env::new().await;
    let generator = env.start("w", &["w"]).await;
    let mut client = env.pool.get().await.unwrap();
    let mut tx = generator.transaction(&mut client).await.unwrap();
    let ids = tx.next_ids(2).await.unwrap();
    for &id in &ids {
        insert_row(&tx, id, "rollback").await;
    }
    tx.rollback().await.unwrap();
    assert_eq!(generator.unfinished_ids(), 0);
    assert_eq!(row_of(&generator), (3, 3, 3));
    assert!(event_ids(&env).await.is_empty());
    generator.check_invariants().unwrap();
}

// why: spec §7.2 row 4 and style item 8: a `StreamTransaction` dropped without `commit()`
// rolls back and its `Drop` finishes the IDs synchronously (a transaction that never sent
// COMMIT cannot commit); the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_transaction_rolls_back_and_finishes_ids() {
    let env = Env::new().await;
    let generator = env.start("w", &["w"]).await;
    let mut client = env.pool.get().await.unwrap();
    {
        let mut tx = generator.transaction(&mut client).await.unwrap();
        let id = tx.next_id().await.unwrap();
        insert_row(&tx, id, "dropped").await;
        assert_eq!(generator.unfinished_ids(), 1);
    }
    assert_eq!(
        generator.unfinished_ids(),
        0,
        "Drop finishes the IDs at once"
    );
    assert_eq!(row_of(&generator), (2, 2, 2));
    // The same connection: ROLLBACK was queued ahead of this statement.
    let rows: i64 = client
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "the dropped transaction rolled back");
    assert!(event_ids(&env).await.is_empty());
    generator.check_invariants().unwrap();
}

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

// ----- replication through advance ---------------------------------------------------------

/// Relays every generator's announced position to every other (spec §12.1, §12.3).
fn relay(generators: &[&MultiWriterIdGenerator]) {
    for g in generators {
        let own = g.instance_name();
        let announced = g.current_token_for_writer(own);
        for h in generators {
            if h.instance_name() != own {
                h.advance(own, announced);
            }
        }
    }
}

/// The safety half of §1.2: no generator reports a position covering an undecided ID.
/// `undecided` maps each undecided ID to the writer that allocated it.
fn assert_safe(generators: &[&MultiWriterIdGenerator], undecided: &BTreeMap<i64, &str>) {
    for g in generators {
        g.check_invariants().unwrap();
        if let Some((&low, _)) = undecided.first_key_value() {
            assert!(
                g.current_token() < low,
                "{}: P = {} covers undecided {low}",
                g.instance_name(),
                g.current_token()
            );
        }
        for h in generators {
            let w = h.instance_name();
            if let Some(low) = undecided
                .iter()
                .find_map(|(&id, &by)| (by == w).then_some(id))
            {
                let p = g.current_token_for_writer(w);
                assert!(
                    p < low,
                    "{}: position of {w} = {p} covers {low}",
                    g.instance_name()
                );
            }
        }
    }
}

// why: spec §1.2 (safety and liveness), §6.2 and §6.4: with three writers replicating by
// `advance`, `P` passes an ID only once every ID up to it is decided, whoever allocated
// it, and reaches the last ID everywhere once all are decided and relayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_replicating_through_advance_pass_only_decided_ids() {
    let env = Env::new().await;
    let writers = ["a", "b", "c"];
    let a = env.start("a", &writers).await;
    let b = env.start("b", &writers).await;
    let c = env.start("c", &writers).await;
    let all = [&a, &b, &c];
    for g in all {
        assert_eq!(g.current_token(), 1);
    }

    let mut undecided = BTreeMap::new();
    let a2 = a.next_id().await.unwrap();
    let b3 = b.next_id().await.unwrap();
    let c4 = c.next_id().await.unwrap();
    let b5 = b.next_id().await.unwrap();
    assert_eq!([a2.id(), b3.id(), c4.id(), b5.id()], [2, 3, 4, 5]);
    for (id, w) in [(2, "a"), (3, "b"), (4, "c"), (5, "b")] {
        undecided.insert(id, w);
    }
    relay(&all);
    assert_safe(&all, &undecided);

    // b finishes 3 out of order; 2 (a) and 4 (c) are still open.
    env.insert(3, Some("b")).await;
    b3.complete().await.unwrap();
    undecided.remove(&3);
    relay(&all);
    assert_safe(&all, &undecided);
    assert_eq!(a.current_token(), 1, "2 is undecided");

    // a finishes 2: a knows 2 and 3 are decided and walks over them, stopping at 4 (c's).
    // b and c know only positions (a: 3, b: 3, c: 1), so they stay below c's 4 as well.
    env.insert(2, Some("a")).await;
    a2.complete().await.unwrap();
    undecided.remove(&2);
    relay(&all);
    assert_safe(&all, &undecided);
    assert_eq!(a.current_token(), 3);

    // b rolls 5 back (a gap), c finishes 4.
    drop(b5);
    undecided.remove(&5);
    relay(&all);
    assert_safe(&all, &undecided);
    env.insert(4, Some("c")).await;
    c4.complete().await.unwrap();
    undecided.remove(&4);
    relay(&all);
    relay(&all);
    for g in all {
        assert_eq!(g.current_token(), 5, "{} converges", g.instance_name());
        for w in writers {
            assert_eq!(g.current_token_for_writer(w), 5);
        }
        g.check_invariants().unwrap();
    }
}

// why: spec §6.2 step 5, §6.4 and §12.1: an idle writer's announced position follows the
// others (its minimal position stays put), so relaying it lets a third process's `P` move
// past a writer that writes nothing (upstream #15595, #16633); the followed value is a
// decided value and is persisted at the tick (§8.2 SHOULD).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_writer_follows_the_others() {
    let env = Env::new().await;
    let writers = ["a", "b", "c"];
    let a = env.start("a", &writers).await; // idle throughout
    let b = env.start("b", &writers).await;
    let c = env.start("c", &writers).await; // only listens

    let mut last = 0;
    for _ in 0..5 {
        let alloc = b.next_id().await.unwrap();
        last = alloc.id();
        env.insert(last, Some("b")).await;
        alloc.complete().await.unwrap();
    }
    assert_eq!(b.current_token_for_writer("b"), last);
    // c hears only from b: a has said nothing, so its start position holds P back.
    c.advance("b", b.current_token_for_writer("b"));
    assert_eq!(c.current_token(), 1, "a's position (1) holds P back");

    a.advance("b", b.current_token_for_writer("b"));
    assert_eq!(
        a.minimal_local_current_token(),
        1,
        "own position moves only by completion"
    );
    assert_eq!(
        a.current_token_for_writer("a"),
        last,
        "idle: announced follows the stream"
    );
    // a relays its announced position: c's P moves past the idle writer.
    c.advance("a", a.current_token_for_writer("a"));
    assert_eq!(c.current_token(), last);
    eventually("the idle writer's row follows at the tick", async || {
        env.recorded().await.get("a") == Some(&last)
    })
    .await;
    for g in [&a, &b, &c] {
        g.check_invariants().unwrap();
    }
}

// why: spec §12.3 and I5: own echoes never touch state (the own position moves only by
// local completion), and with a non-empty writer list unlisted instances are ignored
// (§6.4); duplicated and reordered announcements are harmless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_echoes_and_unlisted_instances_are_ignored() {
    let env = Env::new().await;
    let writers = ["a", "b"];
    let a = env.start("a", &writers).await;
    let b = env.start("b", &writers).await;
    let alloc = a.next_id().await.unwrap(); // 2, outstanding
    let before = (a.positions(), row_of(&a));

    a.advance("a", 100);
    a.advance("zed", 100);
    assert_eq!(
        (a.positions(), row_of(&a)),
        before,
        "own echo / unlisted ignored"
    );
    assert!(!a.positions().contains_key("zed"));

    // b commits 3 and 4; a hears of it twice and out of order: P stays below a's own 2.
    for _ in 0..2 {
        let x = b.next_id().await.unwrap();
        x.complete().await.unwrap();
    }
    let announced_b = b.current_token_for_writer("b");
    assert_eq!(announced_b, 4);
    a.advance("b", announced_b);
    a.advance("b", 3);
    a.advance("b", announced_b);
    assert_eq!(a.positions().get("b"), Some(&4));
    assert_eq!(a.current_token(), 1, "a's own 2 is outstanding");
    assert_eq!(a.minimal_local_current_token(), 1);
    a.check_invariants().unwrap();

    alloc.complete().await.unwrap();
    // Idle now: the announced position follows the largest ID known allocated (4), not
    // the echoed 100, which nobody allocated.
    assert_eq!(row_of(&a), (2, 4, 4));
    a.advance("a", 1000);
    assert_eq!(row_of(&a), (2, 4, 4), "an echo never moves this process");
    assert_eq!(
        a.positions(),
        BTreeMap::from([("a".to_owned(), 2), ("b".to_owned(), 4)])
    );
    a.check_invariants().unwrap();
}

// why: spec §6.2 ("gaps stop the walk; past a gap P moves only when the slowest writer's
// position passes it") and §1.2: a rolled-back ID of another writer is a gap this process
// cannot see; `P` stops below it even though every later ID is decided, until that
// writer's position passes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn p_stops_at_a_gap_until_the_slowest_writer_passes_it() {
    let env = Env::new().await;
    let writers = ["a", "b", "c"];
    let a = env.start("a", &writers).await;
    let b = env.start("b", &writers).await;
    let c = env.start("c", &writers).await;

    let mut client = env.pool.get().await.unwrap();
    let mut tx = a.transaction(&mut client).await.unwrap();
    let gap = tx.next_id().await.unwrap();
    assert_eq!(gap, 2);
    let b3 = b.next_id().await.unwrap();
    let c4 = c.next_id().await.unwrap();
    env.insert(3, Some("b")).await;
    b3.complete().await.unwrap();
    env.insert(4, Some("c")).await;
    c4.complete().await.unwrap();
    c.advance("b", b.current_token_for_writer("b"));
    c.advance("a", a.current_token_for_writer("a"));
    assert_eq!(c.positions().get("b"), Some(&3));
    assert_eq!(c.current_token(), 1, "P stops below a's 2");

    // a rolls 2 back: decided, but c cannot know until a's position passes it.
    insert_row(&tx, gap, "gap").await;
    tx.rollback().await.unwrap();
    assert_eq!(c.current_token(), 1, "nothing told c yet");
    let known: BTreeSet<i64> = event_ids(&env).await.into_iter().collect();
    assert_eq!(known, BTreeSet::from([3, 4]));
    c.advance("a", a.current_token_for_writer("a"));
    assert_eq!(c.positions().get("a"), Some(&2));
    assert_eq!(
        c.current_token(),
        4,
        "past the gap, the decided run 3, 4 is walked"
    );
    c.check_invariants().unwrap();
    a.check_invariants().unwrap();
    b.check_invariants().unwrap();
    settle(&a).await;
}

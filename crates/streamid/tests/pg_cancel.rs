//! Cancellation sweeps (style items 7 and 8) and unknown COMMIT outcomes (spec §5.3, §7.2,
//! §7.3, FIX-5), against a real PostgreSQL.
//!
//! A sweep drops an operation's future after exactly 0, 1, 2, … polls — waiting for the
//! future's own waker between polls, so every poll sees real progress from the server —
//! until the operation completes. After each drop it asserts that every ID is finished
//! exactly once (`unfinished_ids() == 0`, no commit outcome left pending), that the
//! tracker's invariants hold, and that `current_token()` catches up to
//! `max_allocated_token()` (upstream #19800: a cancelled request must not stall the stream).
// A test binary: panicking on an unexpected error is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use common::error_log::{self, assert_no_streamid_errors};
use common::{Env, eventually};
use streamid::{Error, MultiWriterIdGenerator};

const INSERT: &str =
    "INSERT INTO events (stream_ordering, instance_name, payload) VALUES ($1, $2, $3)";

/// A sweep gives up (and fails) if an operation needs more polls than this.
const MAX_POLLS: usize = 200;

/// Where a sweep step cuts an operation off.
#[derive(Debug, Clone, Copy)]
struct Cut {
    /// Polls before the drop.
    polls: usize,
    /// Drop when the future's waker fires after the last poll (the I/O it waited for has
    /// arrived, unseen), rather than right after the last poll (the I/O still in flight).
    at_wake: bool,
}

impl Cut {
    /// Drop right after `polls` polls.
    fn now(polls: usize) -> Cut {
        Cut {
            polls,
            at_wake: false,
        }
    }
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let when = if self.at_wake {
            "at the next wake"
        } else {
            "at once"
        };
        write!(f, "dropped after {} polls, {when}", self.polls)
    }
}

/// Polls `fut` exactly `cut.polls` times, each time after its waker fired, then drops it.
/// Returns its output if it completed within those polls.
///
/// Like rust-postgres' `Cancellable { polls_left }`: the task is woken only by `fut`'s own
/// wakers, so poll `k + 1` happens once the I/O that poll `k` waited for has progressed;
/// the drop lands at the `.await` the last poll stopped at.
async fn poll_then_drop<F: Future>(fut: F, cut: Cut) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut left = cut.polls;
    let limited = std::future::poll_fn(move |cx| {
        if left == 0 {
            return Poll::Ready(None);
        }
        left -= 1;
        match fut.as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending if left == 0 && !cut.at_wake => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    });
    // The timeout only keeps a broken operation from hanging the test; it never fires in
    // a passing run (`fut` is woken long before).
    tokio::time::timeout(Duration::from_secs(20), limited)
        .await
        .expect("the operation under test hung")
}

/// What a sweep step did.
enum Step {
    /// The operation completed within its polls: this pass of the sweep ends.
    Completed,
    /// The future was dropped. `lost` IDs may have been handed out by the sequence and
    /// never registered (a fetch dropped in flight): gaps nobody learns, which spec §1.2
    /// lets `P` pass only at the next allocation.
    Dropped { lost: i64 },
}

/// After a step: every ID finished, nothing pending, invariants hold, `P` within `lost` of
/// the sequence head and, after one more allocation, exactly at it.
async fn check_after_step(generator: &MultiWriterIdGenerator, what: &str, cut: Cut, lost: i64) {
    eventually(
        &format!("{what} {cut}: every ID finished, every outcome resolved"),
        async || generator.unfinished_ids() == 0 && generator.unresolved_commits() == 0,
    )
    .await;
    generator
        .check_invariants()
        .unwrap_or_else(|e| panic!("{what} {cut}: {e}"));
    let head = generator.max_allocated_token().await.unwrap();
    let p = generator.current_token();
    assert!(
        p <= head && head - p <= lost,
        "{what} {cut}: P = {p}, sequence head = {head}, at most {lost} lost"
    );
    // The next allocation passes whatever a cancelled fetch took (spec §1.2, liveness).
    let next = generator.next_id().await.unwrap();
    let id = next.id();
    drop(next);
    assert_eq!(generator.current_token(), id, "{what} {cut}: stalled");
    assert_eq!(generator.max_allocated_token().await.unwrap(), id);
    assert_eq!(generator.unfinished_ids(), 0);
    generator.check_invariants().unwrap();
    assert_no_streamid_errors();
}

/// Runs `step(cut)` for `cut.polls = 0, 1, 2, …` until the operation completes, once
/// dropping at once and once at the next wake, checking after each step. Returns the
/// number of polls the operation needed.
async fn sweep(
    generator: &MultiWriterIdGenerator,
    what: &str,
    mut step: impl AsyncFnMut(Cut) -> Step,
) -> usize {
    let mut needed = 0;
    for at_wake in [false, true] {
        let mut done = false;
        for polls in 0..=MAX_POLLS {
            let cut = Cut { polls, at_wake };
            match step(cut).await {
                Step::Completed => {
                    check_after_step(generator, what, cut, 0).await;
                    needed = needed.max(polls);
                    done = true;
                    break;
                }
                Step::Dropped { lost } => check_after_step(generator, what, cut, lost).await,
            }
        }
        assert!(done, "{what} did not complete within {MAX_POLLS} polls");
    }
    needed
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

// why: upstream #19800 / spec §5.2 step 4, §5.3 (FIX-5): `next_id` dropped at any `.await`
// leaves no ID unfinished and no marker behind, so the stream never stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_19800_cancelled_next_id_does_not_stall() {
    let env = Env::new().await;
    let generator = start(&env).await;
    let polls = sweep(&generator, "next_id", async |cut| {
        match poll_then_drop(generator.next_id(), cut).await {
            Some(alloc) => {
                let alloc = alloc.unwrap();
                assert!(alloc.id() > 1);
                drop(alloc);
                Step::Completed
            }
            None => Step::Dropped { lost: 1 },
        }
    })
    .await;
    assert!(
        polls >= 2,
        "next_id completed after {polls} polls: nothing was swept"
    );
}

// why: upstream #19800 / spec §5.2 step 4: the batch form, whose lost IDs are all gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_19800_cancelled_next_ids_does_not_stall() {
    let env = Env::new().await;
    let generator = start(&env).await;
    let polls = sweep(&generator, "next_ids(5)", async |cut| match poll_then_drop(
        generator.next_ids(5),
        cut,
    )
    .await
    {
        Some(alloc) => {
            let alloc = alloc.unwrap();
            assert_eq!(alloc.ids().len(), 5);
            alloc.complete().await.unwrap();
            Step::Completed
        }
        None => Step::Dropped { lost: 5 },
    })
    .await;
    assert!(polls >= 2, "next_ids completed after {polls} polls");
}

// why: upstream #19800 / spec §5.2 step 4: the fetch's marker is set before the pooled
// connection is even opened; `next_id` dropped while the pool connects (TCP, startup,
// authentication) must remove it too. Every step starts with an empty pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_19800_cancelled_next_id_while_connecting_does_not_stall() {
    error_log::install();
    let env = Env::new().await;
    let pool = env.db.pool(2).unwrap();
    let config = env.config("w", &["w"]);
    env.create_sequence(&config).await;
    let generator = MultiWriterIdGenerator::postgres(pool.clone(), config)
        .await
        .unwrap();
    let polls = sweep(&generator, "next_id on a cold pool", async |cut| {
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

// why: upstream #19800 / spec §5.3: `Allocation::complete` finishes the IDs at its first
// poll. Dropped unpolled, the allocation takes the failure path (no position write);
// dropped later, the IDs are finished and the row is written in the background.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_19800_cancelled_complete_does_not_stall() {
    let env = Env::new().await;
    error_log::install();
    // A long tick, so only a successful completion can write `stream_positions`.
    let config = env
        .config("w", &["w"])
        .position_write_interval(Duration::from_secs(3600));
    env.create_sequence(&config).await;
    let generator = MultiWriterIdGenerator::postgres(env.pool.clone(), config)
        .await
        .unwrap();
    // The tick fires once at once when the writer task first runs; let that happen now.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let polls = sweep(&generator, "Allocation::complete", async |cut| {
        let alloc = generator.next_id().await.unwrap();
        let id = alloc.id();
        let recorded_before = env.recorded().await["w"];
        let done = poll_then_drop(alloc.complete(), cut).await;
        assert_eq!(generator.unfinished_ids(), 0, "finished synchronously");
        assert_eq!(generator.current_token(), id);
        if cut.polls == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(
                env.recorded().await["w"],
                recorded_before,
                "dropped unpolled: the failure path writes no position"
            );
        } else {
            eventually("the row is written in the background", async || {
                env.recorded().await["w"] == id
            })
            .await;
        }
        match done {
            Some(result) => {
                result.unwrap();
                assert_eq!(
                    env.recorded().await["w"],
                    id,
                    "recorded when complete() returns"
                );
                Step::Completed
            }
            None => Step::Dropped { lost: 0 },
        }
    })
    .await;
    assert!(polls >= 2, "complete() returned after {polls} polls");
}

// why: upstream #19800 / spec §7.1: `transaction()` dropped at any `.await` leaves no
// transaction open on the connection and nothing in the tracker; a completed one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_19800_cancelled_transaction_begin_does_not_stall() {
    let env = Env::new().await;
    let generator = start(&env).await;
    let polls = sweep(&generator, "transaction()", async |cut| {
        let mut client = env.pool.get().await.unwrap();
        let step = match poll_then_drop(generator.transaction(&mut client), cut).await {
            Some(tx) => {
                let mut tx = tx.unwrap();
                let id = tx.next_id().await.unwrap();
                tx.execute(INSERT, &[&id, &"w", &"begin"]).await.unwrap();
                tx.commit().await.unwrap();
                assert!(row_exists(&env, id).await);
                Step::Completed
            }
            None => Step::Dropped { lost: 0 },
        };
        // The connection is usable and not left inside a transaction: two statements
        // see different transaction start times.
        let t1: String = client
            .query_one("SELECT transaction_timestamp()::text", &[])
            .await
            .unwrap()
            .get(0);
        tokio::time::sleep(Duration::from_millis(2)).await;
        let t2: String = client
            .query_one("SELECT transaction_timestamp()::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_ne!(
            t1, t2,
            "a cancelled BEGIN left the connection in a transaction"
        );
        step
    })
    .await;
    assert!(polls >= 2, "transaction() completed after {polls} polls");
}

// why: upstream #19800 / spec §7.1, §5.2 step 4: `StreamTransaction::next_id` dropped at
// any `.await` leaves the transaction usable; a later allocation in it works and its
// commit lets `P` pass the cancelled fetch's gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_19800_cancelled_transaction_next_id_does_not_stall() {
    let env = Env::new().await;
    let generator = start(&env).await;
    let polls = sweep(&generator, "StreamTransaction::next_id", async |cut| {
        let mut client = env.pool.get().await.unwrap();
        let mut tx = generator.transaction(&mut client).await.unwrap();
        let first = poll_then_drop(tx.next_id(), cut).await;
        let mut ids: Vec<i64> = first.iter().map(|r| *r.as_ref().unwrap()).collect();
        ids.push(tx.next_id().await.unwrap());
        assert_eq!(
            tx.ids(),
            ids,
            "only registered IDs belong to the transaction"
        );
        for &id in &ids {
            tx.execute(INSERT, &[&id, &"w", &"tx-next-id"])
                .await
                .unwrap();
        }
        tx.commit().await.unwrap();
        let last = *ids.last().unwrap();
        assert_eq!(generator.current_token(), last, "commit() finished the IDs");
        for &id in &ids {
            assert!(row_exists(&env, id).await);
        }
        if first.is_some() {
            Step::Completed
        } else {
            Step::Dropped { lost: 0 }
        }
    })
    .await;
    assert!(polls >= 2, "next_id completed after {polls} polls");
}

// why: upstream #19800 / spec §7.2 row 4: a `StreamTransaction` dropped right after a
// cancelled `next_ids` (no commit) rolls back and strands nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_19800_cancelled_transaction_next_ids_then_drop_does_not_stall() {
    let env = Env::new().await;
    let generator = start(&env).await;
    sweep(
        &generator,
        "StreamTransaction::next_ids(3) + drop",
        async |cut| {
            let mut client = env.pool.get().await.unwrap();
            let mut tx = generator.transaction(&mut client).await.unwrap();
            let done = poll_then_drop(tx.next_ids(3), cut).await;
            if let Some(ids) = &done {
                let ids = ids.as_ref().unwrap();
                assert_eq!(ids.len(), 3);
                assert_eq!(generator.unfinished_ids(), 3);
            }
            drop(tx);
            assert_eq!(
                generator.unfinished_ids(),
                0,
                "Drop finishes the IDs at once"
            );
            match done {
                Some(_) => Step::Completed,
                None => Step::Dropped { lost: 3 },
            }
        },
    )
    .await;
}

// why: upstream #19800 / spec §7.2 and §7.3 (FIX-5): `commit()` dropped before its first
// poll rolls back; dropped after it, COMMIT is in flight and the outcome is unknown — the
// IDs stay unfinished (`P` below them) until the resolver reads `pg_xact_status`, and a
// committed row is then covered by `P` and recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_19800_cancelled_commit_is_resolved() {
    let env = Env::new().await;
    let generator = start(&env).await;
    let mut in_doubt_steps = 0;
    let polls = sweep(&generator, "StreamTransaction::commit", async |cut| {
        let mut client = env.pool.get().await.unwrap();
        let mut tx = generator.transaction(&mut client).await.unwrap();
        let id = tx.next_id().await.unwrap();
        tx.execute(INSERT, &[&id, &"w", &"commit"]).await.unwrap();
        let done = poll_then_drop(tx.commit(), cut).await;
        if generator.unresolved_commits() > 0 {
            in_doubt_steps += 1;
            // Outcome unknown: the ID must not be covered yet.
            assert_eq!(
                generator.unfinished_ids(),
                1,
                "in doubt: not finished early"
            );
            assert!(generator.current_token() < id);
            assert!(generator.current_token_for_writer("w") < id);
        }
        eventually("the commit outcome is resolved", async || {
            generator.unresolved_commits() == 0 && generator.unfinished_ids() == 0
        })
        .await;
        let committed = row_exists(&env, id).await;
        assert_eq!(
            committed,
            cut.polls > 0,
            "COMMIT was sent iff the future was polled"
        );
        assert_eq!(generator.current_token(), id);
        if committed {
            eventually("a resolved commit's position is recorded", async || {
                env.recorded().await["w"] >= id
            })
            .await;
        }
        match done {
            Some(result) => {
                result.unwrap();
                Step::Completed
            }
            None => Step::Dropped { lost: 0 },
        }
    })
    .await;
    assert!(polls >= 2, "commit completed after {polls} polls");
    assert!(
        in_doubt_steps >= 1,
        "the sweep never left a commit in doubt"
    );
}

// why: upstream #19800 / spec §7.2 row 3: `rollback()` finishes the IDs at its first poll,
// whether or not the ROLLBACK then completes; dropped unpolled, `Drop` does it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_19800_cancelled_rollback_does_not_stall() {
    let env = Env::new().await;
    let generator = start(&env).await;
    let polls = sweep(&generator, "StreamTransaction::rollback", async |cut| {
        let mut client = env.pool.get().await.unwrap();
        let mut tx = generator.transaction(&mut client).await.unwrap();
        let id = tx.next_id().await.unwrap();
        tx.execute(INSERT, &[&id, &"w", &"rollback"]).await.unwrap();
        let done = poll_then_drop(tx.rollback(), cut).await;
        assert_eq!(generator.unfinished_ids(), 0, "finished at once");
        assert_eq!(generator.unresolved_commits(), 0);
        assert_eq!(generator.current_token(), id, "the gap is decided");
        assert!(!row_exists(&env, id).await);
        match done {
            Some(result) => {
                result.unwrap();
                Step::Completed
            }
            None => Step::Dropped { lost: 0 },
        }
    })
    .await;
    assert!(polls >= 2, "rollback completed after {polls} polls");
}

// why: upstream #19800 / spec §7.4, §7.2: `retry` dropped at any `.await` — inside an
// attempt, in the rollback of a failed attempt, in BEGIN or in COMMIT — finishes every
// attempt's IDs (an in-flight COMMIT through the resolver), and at most one attempt's row
// ever commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_19800_cancelled_retry_does_not_stall() {
    let env = Env::new().await;
    let generator = start(&env).await;
    let polls = sweep(&generator, "retry", async |cut| {
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
        let rows = count_rows(&env, &payload).await;
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
                assert!(row_exists(&env, id).await);
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
    assert!(poll_then_drop(tx.commit(), Cut::now(1)).await.is_none());
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

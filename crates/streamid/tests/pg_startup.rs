//! Startup recovery against a real PostgreSQL (spec §4, §8, §9, §13, §14.2): restarts after
//! out-of-order commits, writer-list changes, the decided starting position, sequence
//! repairs, backwards streams, several backing tables, NULL instances, anyone-may-write
//! streams and the wait for an earlier incarnation's transactions.
// Test crate: panicking on unexpected errors is the point (helpers included), and the shared
// `common` module's items are `pub` for the other test binaries.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Env;
use streamid::{Error, MultiWriterIdGenerator, StreamConfig, StreamTransaction};

const W12: [&str; 2] = ["w1", "w2"];

fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
}

/// `stream_positions` as the library creates it (spec §8.1), for seeding rows before the
/// first startup.
const POSITIONS_DDL: &str = "\
    CREATE TABLE IF NOT EXISTS stream_positions (stream_name TEXT NOT NULL, \
        instance_name TEXT NOT NULL, stream_id BIGINT NOT NULL); \
    CREATE UNIQUE INDEX IF NOT EXISTS stream_positions_idx \
        ON stream_positions (stream_name, instance_name)";

/// Writes a `stream_positions` row of stream `events` directly (what a process left behind).
async fn record(env: &Env, instance: &str, value: i64) {
    env.exec(POSITIONS_DDL).await;
    let client = env.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO stream_positions (stream_name, instance_name, stream_id) \
             VALUES ('events', $1, $2) ON CONFLICT (stream_name, instance_name) \
             DO UPDATE SET stream_id = EXCLUDED.stream_id",
            &[&instance, &value],
        )
        .await
        .unwrap();
}

/// Creates `events_seq` (suitable shape) if needed and makes `last` its last handed-out value.
async fn set_sequence(env: &Env, last: i64) {
    env.exec(&format!(
        "CREATE SEQUENCE IF NOT EXISTS events_seq AS BIGINT INCREMENT BY 1 NO CYCLE CACHE 1; \
         SELECT setval('events_seq', {last}, true)"
    ))
    .await;
}

async fn start_config(env: &Env, config: StreamConfig) -> MultiWriterIdGenerator {
    MultiWriterIdGenerator::postgres(env.pool.clone(), config)
        .await
        .expect("generator start")
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

/// Allocates one ID in autocommit, writes its row and completes it (position recorded).
async fn write_committed(env: &Env, g: &MultiWriterIdGenerator) -> i64 {
    let a = g.next_id().await.unwrap();
    env.insert(a.id(), Some(g.instance_name())).await;
    let id = a.id();
    a.complete().await.unwrap();
    id
}

// ----- restart after out-of-order completion -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_after_out_of_order_commits_recovers_own_position_and_p_up_to_gap() {
    // why: spec §4.5 — the scan from min(positions) recovers the own position (assignment
    // from own rows, possibly below start) and lets P skip the committed run, stopping at the
    // first gap; §4.4 L = T is adopted without allocating.
    let env = Env::new().await;
    let g1 = env.start("w1", &W12).await;
    let g2 = env.start("w2", &W12).await;
    // Both processes "crash" before recording anything after startup.
    g1.shutdown().await;
    g2.shutdown().await;
    assert_eq!(env.recorded().await, map(&[("w1", 1), ("w2", 1)]));

    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(env.pool.get().await.unwrap());
    }
    let mut txs = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let g = if i % 2 == 0 { &g1 } else { &g2 };
        txs.push(write_uncommitted(g, client).await);
    }
    let ids: Vec<i64> = txs.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids, [2, 3, 4, 5, 6, 7]);
    // Commit in reverse order; 5 (w2) rolls back and is a gap.
    let mut txs: Vec<Option<StreamTransaction<'_>>> =
        txs.into_iter().map(|(t, _)| Some(t)).collect();
    for i in [5, 4, 2, 1, 0] {
        txs[i].take().unwrap().commit().await.unwrap();
    }
    txs[3].take().unwrap().rollback().await.unwrap();
    drop(txs);
    drop(clients);
    drop(g1);
    drop(g2);
    assert_eq!(
        env.recorded().await,
        map(&[("w1", 1), ("w2", 1)]),
        "the crash left the rows stale"
    );

    let g1 = env.start("w1", &W12).await;
    assert_eq!(
        env.sequence_last("events_seq").await,
        7,
        "L = T adopted, no ID taken"
    );
    assert_eq!(g1.current_token(), 4, "rows 2, 3, 4 committed; 5 is a gap");
    assert_eq!(
        g1.minimal_local_current_token(),
        6,
        "the own position is the last own row (6), below start (7)"
    );
    assert_eq!(g1.current_token_for_writer("w1"), 7);
    assert_eq!(g1.positions(), map(&[("w1", 6), ("w2", 1)]));
    assert_eq!(g1.current_token_for_writer("w2"), 4);
    assert_eq!(g1.max_allocated_token().await.unwrap(), 7);
    assert_eq!(env.recorded().await, map(&[("w1", 7), ("w2", 1)]));
    g1.check_invariants().unwrap();

    // A reader starting now scans from w2's stale row and stops at the same gap.
    let reader = env.start("r", &W12).await;
    assert_eq!(reader.current_token(), 4);
    assert_eq!(reader.positions(), map(&[("w1", 7), ("w2", 1)]));

    // w2 restarts: every position is now at 7 and P passes the gap.
    let g2 = env.start("w2", &W12).await;
    assert_eq!(g2.current_token(), 7);
    assert_eq!(g2.minimal_local_current_token(), 7);
    assert_eq!(env.recorded().await, map(&[("w1", 7), ("w2", 7)]));
    g2.check_invariants().unwrap();

    // The gap is passed elsewhere only once w2's position passes it.
    g1.advance("w2", 7);
    reader.advance("w2", 7);
    assert_eq!(g1.current_token(), 7);
    assert_eq!(reader.current_token(), 7);
    let next = g1.next_id().await.unwrap();
    assert_eq!(next.id(), 8, "above every row and recorded position");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_scan_skips_committed_run_past_stale_row() {
    // why: spec §4.5 / upstream #8257 — a crash between committing rows and recording the
    // position: the scan recovers the own position from own rows and P over the gapless run.
    let env = Env::new().await;
    let g = env.start("w1", &["w1"]).await;
    g.shutdown().await;
    let mut client = env.pool.get().await.unwrap();
    for _ in 0..4 {
        let (tx, _) = write_uncommitted(&g, &mut client).await;
        tx.commit().await.unwrap();
    }
    drop(client);
    drop(g);
    assert_eq!(env.recorded().await, map(&[("w1", 1)]));

    // A reader with the stale row: P recovered by the scan, not stuck at 1.
    let reader = env.start("r", &["w1"]).await;
    assert_eq!(reader.current_token(), 5);
    let g = env.start("w1", &["w1"]).await;
    assert_eq!(g.current_token(), 5);
    assert_eq!(g.minimal_local_current_token(), 5);
    assert_eq!(env.recorded().await, map(&[("w1", 5)]));
    assert_eq!(g.next_id().await.unwrap().id(), 6);
}

// ----- writer-list changes --------------------------------------------------------------

/// Rows 2 (w1), 3 (w2), 5 (w1), 6 (w2), 4 a gap; recorded w1 = 5, w2 = 6, w3 = 3.
async fn seed_three_writers(env: &Env) {
    for (id, inst) in [(2, "w1"), (3, "w2"), (5, "w1"), (6, "w2")] {
        env.insert(id, Some(inst)).await;
    }
    record(env, "w1", 5).await;
    record(env, "w2", 6).await;
    record(env, "w3", 3).await;
    set_sequence(env, 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_writer_row_deleted_and_no_longer_holds_p_back() {
    // why: spec §4.2 step 8 and §2.2 — rows of writers no longer listed are deleted at
    // startup; otherwise the removed writer would pin P forever.
    let env = Env::new().await;
    seed_three_writers(&env).await;

    // With the old list w3 (at 3) holds P back: 4 is a gap.
    let old = env.start("r", &["w1", "w2", "w3"]).await;
    assert_eq!(old.current_token(), 3);
    assert_eq!(old.positions(), map(&[("w1", 5), ("w2", 6), ("w3", 3)]));
    drop(old);
    assert_eq!(env.recorded().await.get("w3"), Some(&3), "listed: kept");

    let new = env.start("r", &W12).await;
    assert_eq!(env.recorded().await, map(&[("w1", 5), ("w2", 6)]));
    assert_eq!(new.positions(), map(&[("w1", 5), ("w2", 6)]));
    assert_eq!(new.current_token(), 6);
    new.check_invariants().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_added_writer_starts_at_p_not_at_its_old_position() {
    // why: spec §4.2 steps 8 and 12 (upstream #8419) — a writer removed and later re-added
    // starts at P instead of a far-behind position every process would scan from.
    let env = Env::new().await;
    seed_three_writers(&env).await;
    drop(env.start("r", &W12).await); // w3 removed: its row (3) is deleted

    let reader = env.start("r", &["w1", "w2", "w3"]).await;
    assert_eq!(reader.current_token(), 6);
    assert_eq!(reader.positions(), map(&[("w1", 5), ("w2", 6), ("w3", 6)]));

    let w3 = env.start("w3", &["w1", "w2", "w3"]).await;
    assert_eq!(w3.minimal_local_current_token(), 6);
    assert_eq!(w3.current_token(), 6);
    assert_eq!(env.recorded().await.get("w3"), Some(&6));
    assert_eq!(w3.next_id().await.unwrap().id(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_16473_new_writer_first_in_flight_id_holds_p_back() {
    // why: upstream #16473, spec §4.2 step 12 and §6.2 — a writer added to a running stream
    // gets an entry at P everywhere, so its first in-flight ID holds P back.
    let env = Env::new().await;
    for id in 2..=5 {
        env.insert(id, Some("w1")).await;
    }
    record(&env, "w1", 5).await;
    set_sequence(&env, 5).await;

    // The writer list grows to [w1, w2]; w2 has never run.
    let g1 = env.start("w1", &W12).await;
    assert_eq!(g1.current_token(), 5);
    assert_eq!(g1.positions(), map(&[("w1", 5), ("w2", 5)]));

    let g2 = env.start("w2", &W12).await;
    assert_eq!(env.recorded().await, map(&[("w1", 5), ("w2", 5)]));
    let mut client = env.pool.get().await.unwrap();
    let (tx, id) = write_uncommitted(&g2, &mut client).await;
    assert_eq!(id, 6);

    assert_eq!(write_committed(&env, &g1).await, 7);
    assert_eq!(g1.minimal_local_current_token(), 7);
    assert_eq!(g1.current_token(), 5, "w2's in-flight 6 holds P back");
    let reader = env.start("r", &W12).await;
    assert_eq!(reader.current_token(), 5, "a reader starting now too");

    tx.commit().await.unwrap();
    let w2_pos = g2.current_token_for_writer("w2");
    assert_eq!(w2_pos, 6);
    g1.advance("w2", w2_pos);
    reader.advance("w2", w2_pos);
    assert_eq!(g1.current_token(), 7);
    assert_eq!(reader.current_token(), 7);
    g1.check_invariants().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advance_from_unlisted_instance_is_ignored() {
    // why: spec §6.4 and §14.2 item 14 — with a non-empty writer list, positions from
    // unlisted instances (a removed writer's late write, an old-list process) are ignored.
    let env = Env::new().await;
    seed_three_writers(&env).await;
    let reader = env.start("r", &W12).await;
    let writer = env.start("w1", &W12).await;
    let before = reader.positions();
    assert_eq!(reader.current_token(), 6);
    reader.advance("w3", 100);
    reader.advance("someone", 100);
    writer.advance("w3", 100);
    assert_eq!(reader.positions(), before);
    assert_eq!(reader.current_token(), 6);
    assert_eq!(
        reader.current_token_for_writer("w3"),
        6,
        "unknown: counts as P"
    );
    assert!(!writer.positions().contains_key("w3"));
    // Own positions are never moved by advance either (I5).
    let own = writer.minimal_local_current_token();
    writer.advance("w1", 100);
    assert_eq!(writer.minimal_local_current_token(), own);
    // A listed writer is applied.
    reader.advance("w1", 9);
    reader.advance("w2", 9);
    assert_eq!(reader.current_token(), 9);
}

// ----- startup row and decided starting position -----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_row_per_writer_keeps_readers_below_in_flight_ids() {
    // why: spec §4.2 step 15 and §14.2 item 2 — every writer records its starting position
    // at startup; without w2's row a reader starting before w2 writes would take P from w1's
    // row and skip w2's in-flight ID.
    let env = Env::new().await;
    let writers = ["w1", "w2", "w3"];
    let g1 = env.start("w1", &writers).await;
    assert_eq!(env.recorded().await, map(&[("w1", 1)]));
    let g2 = env.start("w2", &writers).await;
    assert_eq!(env.recorded().await, map(&[("w1", 1), ("w2", 1)]));
    let r = env.start("r", &writers).await;
    assert_eq!(env.recorded().await.len(), 2, "readers record nothing");
    assert!(
        !r.positions().contains_key("r"),
        "readers have no own entry"
    );
    assert_eq!(r.positions(), map(&[("w1", 1), ("w2", 1), ("w3", 1)]));

    let mut client = env.pool.get().await.unwrap();
    let (tx, id) = write_uncommitted(&g2, &mut client).await;
    assert_eq!(id, 2);
    assert_eq!(write_committed(&env, &g1).await, 3);
    assert_eq!(env.recorded().await.get("w1"), Some(&3));

    let g3 = env.start("w3", &writers).await;
    assert_eq!(
        env.recorded().await.get("w3"),
        Some(&3),
        "row written by startup"
    );
    assert_eq!(g3.minimal_local_current_token(), 3);
    assert_eq!(g3.current_token(), 1, "w2's 2 is in flight");

    let r2 = env.start("r2", &writers).await;
    assert_eq!(
        r2.current_token(),
        1,
        "w2's startup row holds P below its in-flight 2"
    );

    tx.commit().await.unwrap();
    r2.advance("w2", 2);
    assert_eq!(r2.current_token(), 3);
    for g in [&g1, &g2, &g3, &r, &r2] {
        g.check_invariants().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_never_adopts_another_writers_uncommitted_head() {
    // why: spec §4.4, §13 "A restart announces an in-flight ID", §14.2 item 1 — when L is
    // not 1, a row or a recorded position, the writer takes an ID of its own instead of
    // adopting the head, which may be another writer's uncommitted ID.
    let env = Env::new().await;
    let g1 = env.start("w1", &W12).await;
    let g2 = env.start("w2", &W12).await;
    let mut client = env.pool.get().await.unwrap();
    let (tx, id) = write_uncommitted(&g2, &mut client).await;
    assert_eq!(id, 2);

    drop(g1);
    let g1 = env.start("w1", &W12).await;
    assert_eq!(env.sequence_last("events_seq").await, 3, "w1 took F = 3");
    assert_eq!(g1.minimal_local_current_token(), 3);
    assert_eq!(g1.current_token_for_writer("w1"), 3);
    assert_eq!(g1.current_token(), 1, "2 is still in flight");
    assert_eq!(env.recorded().await.get("w1"), Some(&3));

    // A reader hearing w1's announced position must not step onto 2.
    let reader = env.start("r", &W12).await;
    reader.advance("w1", g1.current_token_for_writer("w1"));
    assert_eq!(reader.current_token(), 1);

    tx.commit().await.unwrap();
    reader.advance("w2", 2);
    assert_eq!(reader.current_token(), 3);
    assert_eq!(g1.next_id().await.unwrap().id(), 4);
    g1.check_invariants().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_adopts_l_when_it_is_one_a_row_or_a_recorded_position() {
    // why: spec §4.4 — L = 1, L = T and L = Q are decided and adopted without taking an ID
    // (the common single-writer restart equals the original's behaviour).
    let env = Env::new().await;
    // L = 1: a fresh stream restarted.
    drop(env.start("w1", &["w1"]).await);
    let g = env.start("w1", &["w1"]).await;
    assert_eq!(env.sequence_last("events_seq").await, 1);
    assert_eq!(g.minimal_local_current_token(), 1);

    // L = Q: 2 and 3 allocated, only 2 written, both completed: recorded 3 > T = 2.
    let a = g.next_ids(2).await.unwrap();
    assert_eq!(a.ids(), &[2, 3]);
    env.insert(2, Some("w1")).await;
    a.complete().await.unwrap();
    assert_eq!(env.recorded().await, map(&[("w1", 3)]));
    drop(g);
    let g = env.start("w1", &["w1"]).await;
    assert_eq!(env.sequence_last("events_seq").await, 3, "L = Q adopted");
    assert_eq!(g.current_token(), 3);

    // L = T: the last ID is a committed row.
    assert_eq!(write_committed(&env, &g).await, 4);
    g.shutdown().await;
    drop(g);
    env.exec("UPDATE stream_positions SET stream_id = 2").await; // a lost position write
    let g = env.start("w1", &["w1"]).await;
    assert_eq!(env.sequence_last("events_seq").await, 4, "L = T adopted");
    assert_eq!(g.current_token(), 4);
    assert_eq!(g.minimal_local_current_token(), 4);
    assert_eq!(env.recorded().await, map(&[("w1", 4)]));
}

// ----- sequence repairs -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_behind_rows_is_repaired_before_the_first_id() {
    // why: spec §4.3 (FIX-1, invariant I9) — rows with IDs above the sequence: startup moves
    // the sequence past them, so no new ID collides with a row.
    let env = Env::new().await;
    let config = env.config("w1", &W12);
    env.create_sequence(&config).await;
    for id in 2..=10 {
        env.insert(id, Some(if id % 2 == 0 { "w1" } else { "w2" }))
            .await;
    }
    assert_eq!(env.sequence_last("events_seq").await, 1);
    // A stale row below the rows: Q is compared with the sequence *after* the table repair
    // (FIX-3), so even strict mode starts.
    record(&env, "w2", 4).await;

    let g = start_config(&env, config.strict_consistency(true)).await;
    assert_eq!(env.sequence_last("events_seq").await, 10);
    assert_eq!(g.current_token(), 10);
    assert_eq!(g.minimal_local_current_token(), 10);
    assert_eq!(env.recorded().await, map(&[("w1", 10), ("w2", 4)]));
    assert_eq!(g.next_id().await.unwrap().id(), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_ahead_of_sequence_are_repaired_in_default_mode() {
    // why: spec §4.3 FIX-2 (upstream #16095, #18544, #19467) — a recorded position ahead of
    // the sequence and every row is repaired, not refused: the sequence moves past it.
    let env = Env::new().await;
    env.insert(2, Some("w1")).await;
    env.insert(3, Some("w1")).await;
    set_sequence(&env, 3).await;
    record(&env, "w2", 50).await; // e.g. restored from a later moment than the sequence

    let g = env.start("w1", &W12).await;
    assert_eq!(env.sequence_last("events_seq").await, 50);
    assert_eq!(g.minimal_local_current_token(), 50, "L = Q adopted");
    assert_eq!(g.current_token(), 50);
    assert_eq!(env.recorded().await, map(&[("w1", 50), ("w2", 50)]));
    assert_eq!(g.next_id().await.unwrap().id(), 51);
}

// ----- backwards streams ------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backwards_stream_positions_negative_and_restart() {
    // why: spec §9 (upstream #8447) — IDs -2, -3, …; negative positions and stream_positions
    // values that never go forwards; the backwards scan and restart work; max_allocated_token
    // is negative (§6.5).
    let env = Env::new().await;
    let cfg = |i: &str| env.config(i, &W12).backwards();
    env.create_sequence(&cfg("w1")).await;
    let g = start_config(&env, cfg("w1")).await;
    let g2 = start_config(&env, cfg("w2")).await;
    assert_eq!(g.current_token(), -1);
    assert_eq!(g.max_allocated_token().await.unwrap(), -1);
    let mut history = vec![env.recorded().await["w1"]];
    assert_eq!(history, [-1]);

    let a = g.next_id().await.unwrap();
    assert_eq!(a.id(), -2, "a fresh backwards stream hands out -2 first");
    let b = g.next_ids(3).await.unwrap();
    assert_eq!(b.ids(), &[-3, -4, -5]);
    env.insert(-2, Some("w1")).await;
    a.complete().await.unwrap();
    assert_eq!(g.minimal_local_current_token(), -2);
    assert_eq!(g.current_token(), -2);
    history.push(env.recorded().await["w1"]);
    env.insert(-3, Some("w1")).await;
    env.insert(-4, Some("w1")).await;
    b.complete().await.unwrap(); // -5 written nowhere: a gap
    assert_eq!(g.minimal_local_current_token(), -5);
    assert_eq!(g.current_token(), -5);
    assert_eq!(g.max_allocated_token().await.unwrap(), -5);
    history.push(env.recorded().await["w1"]);
    assert_eq!(history, [-1, -2, -5], "rows only move towards -inf");
    g.check_invariants().unwrap();
    drop(g);
    drop(g2);

    // A reader with w2's row stale at -1 scans `<= -1` and stops at the gap -5.
    let reader = start_config(&env, cfg("r")).await;
    assert_eq!(reader.positions(), map(&[("w1", -5), ("w2", -1)]));
    assert_eq!(reader.current_token(), -4);

    // Restart: L = Q = 5 (internal) adopted; the row does not move forwards to T (-4).
    let g = start_config(&env, cfg("w1")).await;
    assert_eq!(env.recorded().await["w1"], -5);
    assert_eq!(env.sequence_last("events_seq").await, 5);
    assert_eq!(g.current_token_for_writer("w1"), -5);
    assert_eq!(g.next_id().await.unwrap().id(), -6);
    g.shutdown().await;
    drop(g);

    // A row ahead of the sequence (more negative) is repaired past, and kept.
    record(&env, "w1", -9).await;
    let g = start_config(&env, cfg("w1")).await;
    assert_eq!(env.sequence_last("events_seq").await, 9);
    assert_eq!(env.recorded().await["w1"], -9);
    assert_eq!(g.max_allocated_token().await.unwrap(), -9);
    assert_eq!(g.next_id().await.unwrap().id(), -10);
}

// ----- several tables, NULL instances -------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_over_two_tables_takes_max_and_scans_both() {
    // why: spec §2.1 tables and §4.2 step 4 / §4.5 — tables share one ID space: T is the
    // maximum across all of them and the startup scan covers every table.
    let env = Env::new().await;
    env.exec(
        "CREATE TABLE events_extra (stream_ordering BIGINT NOT NULL, instance_name TEXT, \
         payload TEXT)",
    )
    .await;
    let cfg = |i: &str| {
        env.config(i, &W12)
            .table("events_extra", "instance_name", "stream_ordering")
    };
    for (id, inst) in [(2, "w1"), (3, "w2"), (4, "w1"), (6, "w2")] {
        env.insert(id, Some(inst)).await;
    }
    let client = env.pool.get().await.unwrap();
    for (id, inst) in [(5_i64, "w2"), (7, "w1"), (9, "w2")] {
        client
            .execute(
                "INSERT INTO events_extra (stream_ordering, instance_name) VALUES ($1, $2)",
                &[&id, &inst],
            )
            .await
            .unwrap();
    }
    // create_sequence also looks at both tables.
    env.create_sequence(&cfg("w1")).await;
    assert_eq!(env.sequence_last("events_seq").await, 9);
    // Now put the sequence behind the second table and the positions far behind.
    env.exec("SELECT setval('events_seq', 1, true)").await;
    record(&env, "w1", 3).await;
    record(&env, "w2", 3).await;

    let reader = start_config(&env, cfg("r")).await;
    assert_eq!(
        env.sequence_last("events_seq").await,
        9,
        "T from events_extra"
    );
    assert_eq!(
        reader.current_token(),
        7,
        "4, 6 in events, 5, 7 in events_extra; 8 a gap"
    );

    let g = start_config(&env, cfg("w1")).await;
    assert_eq!(
        g.minimal_local_current_token(),
        7,
        "own row 7 lives in events_extra"
    );
    assert_eq!(g.current_token(), 7);
    assert_eq!(g.current_token_for_writer("w1"), 9);
    assert_eq!(g.next_id().await.unwrap().id(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_13585_null_instance_names_do_not_crash_startup() {
    // why: upstream #13585, spec §4.5 FIX-8 — rows with NULL instance names are sorted by ID
    // only; startup must not fail, and they still count as decided.
    let env = Env::new().await;
    for (id, inst) in [
        (2, None),
        (3, Some("w1")),
        (3, None),
        (4, None),
        (5, Some("w2")),
    ] {
        env.insert(id, inst).await;
    }
    record(&env, "w1", 1).await;
    record(&env, "w2", 1).await;
    set_sequence(&env, 5).await;

    let reader = env.start("r", &W12).await;
    assert_eq!(reader.current_token(), 5);
    let g = env.start("w1", &W12).await;
    assert_eq!(g.current_token(), 5);
    assert_eq!(g.minimal_local_current_token(), 3, "last own row");
    assert_eq!(g.current_token_for_writer("w1"), 5);
    g.check_invariants().unwrap();
}

// ----- anyone may write ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anyone_may_write_records_nothing_and_anyone_allocates() {
    // why: spec §2.2 "Empty" and §4.2 steps 8, 14, 15 — with writers = [] any instance may
    // allocate, nothing writes or deletes stream_positions rows, P starts at max(1, T).
    let env = Env::new().await;
    record(&env, "old", 1).await; // left from a time with a writer list
    let a = env.start("a", &[]).await;
    let b = env.start("b", &[]).await;
    assert_eq!(a.positions(), map(&[("a", 1)]));
    let ia = write_committed(&env, &a).await;
    let ib = write_committed(&env, &b).await;
    assert_eq!((ia, ib), (2, 3));
    assert_eq!(
        env.recorded().await,
        map(&[("old", 1)]),
        "nothing written or deleted"
    );
    assert_eq!(a.current_token(), 2);
    // b has not heard of a: the documented weaker guarantee.
    assert_eq!(b.current_token(), 3);
    a.advance("b", 3);
    assert_eq!(
        a.positions(),
        map(&[("a", 2), ("b", 3)]),
        "unknown instances are learnt"
    );
    assert_eq!(a.current_token(), 3);

    let c = env.start("c", &[]).await;
    assert_eq!(c.current_token(), 3, "P = max(1, T)");
    assert_eq!(c.positions(), map(&[("c", 3)]));
    assert_eq!(env.recorded().await, map(&[("old", 1)]));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_waits_for_previous_incarnations_open_transaction() {
    // why: spec §4.2 step 2a and §14.2 item 9 — a restart must not cover an ID the previous
    // process's transaction can still commit: startup waits on the writer lock.
    let env = Env::new().await;
    let old = env.start("w1", &["w1"]).await;
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
    let old = env.start("w1", &["w1"]).await;
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

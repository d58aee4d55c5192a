//! Allocation and completion in autocommit (spec §5, §6.1–§6.3, §8): the worked example,
//! `complete()` recording the position, dropped allocations, failed position writes and
//! the refusals of §5.1.

use std::collections::BTreeMap;
use std::time::Duration;

use streamid::{Error, MAX_BATCH};

use super::{W12, row_of, start_without_tick};
use crate::common::eventually;
use crate::harness::{Harness, Tx};

// why: issue 2's acceptance surface end to end — a fresh stream counts 1 as persisted and
// hands out 2 first (§10.3); autocommit and transaction allocation; a gapless run of
// locally decided IDs lets P pass a silent writer's start position (§6.2); advance (§6.4);
// max_allocated_token (§6.5); the position row catches up (§8.2).
pub async fn acceptance_surface(h: &Harness) {
    let generator = h.start("writer-1", &["writer-1", "writer-2"]).await;
    assert_eq!(generator.current_token(), 1);

    let a = generator.next_id().await.unwrap();
    assert_eq!(a.id(), 2);
    let b = generator.next_ids(5).await.unwrap();
    assert_eq!(b.ids(), &[3, 4, 5, 6, 7]);
    h.insert(a.id(), Some("writer-1")).await;
    a.complete().await.unwrap();
    assert_eq!(generator.minimal_local_current_token(), 2);
    assert_eq!(h.recorded().await.get("writer-1"), Some(&2));
    drop(b);
    assert_eq!(generator.minimal_local_current_token(), 7);
    // writer-2 has said nothing yet, but every ID up to 7 was decided here: the gapless
    // run lets P pass writer-2's starting position.
    assert_eq!(generator.current_token(), 7);
    assert_eq!(generator.current_token_for_writer("writer-1"), 7);

    let mut conn = h.conn().await;
    let mut tx = conn.begin(&generator).await.unwrap();
    let id = tx.next_id().await.unwrap();
    assert_eq!(id, 8);
    tx.insert(id, "writer-1", "acceptance").await;
    tx.commit().await.unwrap();
    assert_eq!(generator.minimal_local_current_token(), 8);

    generator.advance("writer-2", 8);
    assert_eq!(generator.current_token(), 8);
    assert_eq!(generator.persisted_upto_position(), 8);
    assert_eq!(generator.positions().get("writer-2"), Some(&8));
    assert_eq!(generator.max_allocated_token().await.unwrap(), 8);
    eventually("the position row catches up", async || {
        h.recorded().await.get("writer-1") == Some(&8)
    })
    .await;
    generator.check_invariants().unwrap();
}

// why: spec §6.3 worked example, run through the real generator: out-of-order completion
// moves the own position to the largest finished ID below the smallest unfinished one
// (upstream #8257), `P` follows for a sole writer, and `complete()` returns only once the
// resulting announced position is in `stream_positions` (§5.3).
pub async fn worked_example_out_of_order_completion(h: &Harness) {
    // Rows 1–7 by w; stream_positions(w) = 7; the sequence last handed out 7.
    for id in 1..=7 {
        h.insert(id, Some("w")).await;
    }
    h.record("w", 7).await;
    let generator = h.start("w", &["w"]).await;
    assert_eq!(h.counter_last().await, 7);
    assert_eq!(row_of(&generator), (7, 7, 7), "startup: L = T = 7");
    assert_eq!(generator.positions(), BTreeMap::from([("w".to_owned(), 7)]));

    let mut allocs = BTreeMap::new();
    for expected in 8..=11 {
        let a = generator.next_id().await.unwrap();
        assert_eq!(a.id(), expected);
        h.insert(expected, Some("w")).await;
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
            h.recorded().await.get("w"),
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
pub async fn in_order_completion_moves_every_position_step_by_step(h: &Harness) {
    let generator = h.start("w", &["w"]).await;
    let mut allocs = Vec::new();
    for _ in 0..3 {
        allocs.push(generator.next_id().await.unwrap());
    }
    assert_eq!(allocs.iter().map(|a| a.id()).collect::<Vec<_>>(), [2, 3, 4]);
    assert_eq!(row_of(&generator), (1, 1, 1));
    for alloc in allocs {
        let id = alloc.id();
        h.insert(id, Some("w")).await;
        alloc.complete().await.unwrap();
        assert_eq!(row_of(&generator), (id, id, id));
        assert_eq!(h.recorded().await.get("w"), Some(&id));
        generator.check_invariants().unwrap();
    }
    assert_eq!(generator.unfinished_ids(), 0);
}

// why: spec §5.3: dropping an `Allocation` is the failure path — its IDs are finished at
// once (positions move over the gap) but no `stream_positions` write is scheduled for
// them (§6.6, §8.2: failures never trigger a write themselves); the next successful
// completion records the newest announced position, covering the gap.
pub async fn dropped_allocation_moves_positions_but_writes_no_row(h: &Harness) {
    let generator = start_without_tick(h, "w", &["w"]).await;
    let a = generator.next_id().await.unwrap();
    h.insert(a.id(), Some("w")).await;
    a.complete().await.unwrap();
    assert_eq!(h.recorded().await.get("w"), Some(&2));

    let b = generator.next_id().await.unwrap();
    assert_eq!(b.id(), 3);
    drop(b);
    assert_eq!(generator.unfinished_ids(), 0, "Drop finishes synchronously");
    assert_eq!(row_of(&generator), (3, 3, 3), "the gap is decided");
    generator.check_invariants().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        h.recorded().await.get("w"),
        Some(&2),
        "a dropped allocation must not write stream_positions"
    );

    // Out of order: drop 5 while 4 is outstanding, then complete 4.
    let c = generator.next_id().await.unwrap();
    let d = generator.next_id().await.unwrap();
    assert_eq!((c.id(), d.id()), (4, 5));
    drop(d);
    assert_eq!(row_of(&generator), (3, 3, 3), "5 is blocked behind 4");
    h.insert(4, Some("w")).await;
    c.complete().await.unwrap();
    assert_eq!(row_of(&generator), (5, 5, 5));
    assert_eq!(h.recorded().await.get("w"), Some(&5));
    generator.check_invariants().unwrap();
}

// why: spec §5.3 and §8.4: if the upsert covering a completion fails, `complete()` returns
// the error but the IDs stay finished; the writer retries with back-off (newest value) and
// the row catches up once the write can succeed.
pub async fn failed_position_write_is_reported_and_retried(h: &Harness) {
    let generator = start_without_tick(h, "w", &["w"]).await;
    // Make every write of a position >= 3 fail. SQLite cannot add a CHECK constraint to an
    // existing table; a trigger on the upsert's UPDATE does the same.
    let (cap, uncap) = match h {
        Harness::Pg(_) => (
            "ALTER TABLE stream_positions ADD CONSTRAINT cap CHECK (stream_id < 3)",
            "ALTER TABLE stream_positions DROP CONSTRAINT cap",
        ),
        Harness::Sqlite(_) => (
            "CREATE TRIGGER cap BEFORE UPDATE ON stream_positions \
             WHEN NEW.stream_id >= 3 BEGIN SELECT RAISE(ABORT, 'cap'); END",
            "DROP TRIGGER cap",
        ),
    };
    h.exec(cap).await;
    let a = generator.next_id().await.unwrap();
    a.complete().await.unwrap();
    assert_eq!(h.recorded().await.get("w"), Some(&2));

    let b = generator.next_id().await.unwrap();
    let err = b.complete().await.unwrap_err();
    assert!(
        matches!(err, Error::PositionNotRecorded { position: 3, .. }),
        "{err:?}"
    );
    assert_eq!(generator.unfinished_ids(), 0, "the IDs stay finished");
    assert_eq!(row_of(&generator), (3, 3, 3));
    assert_eq!(h.recorded().await.get("w"), Some(&2));

    h.exec(uncap).await;
    eventually("the position writer retries the failed write", async || {
        h.recorded().await.get("w") == Some(&3)
    })
    .await;
    generator.check_invariants().unwrap();
}

// why: upstream #10149, spec §5.1 — a reader's allocation returns the not-a-writer error
// before any I/O or state change: the sequence/counter does not move, no lock is taken.
pub async fn non_writer_allocation_refused_before_any_io(h: &Harness) {
    // On PostgreSQL the generator's pool is closed: any I/O would fail differently.
    let reader = h.start_then_cut_io(h.config("r", &W12)).await;
    for result in [reader.next_id().await, reader.next_ids(3).await] {
        match result {
            Err(Error::NotAWriter {
                stream,
                instance,
                writers,
            }) => {
                assert_eq!((stream.as_str(), instance.as_str()), ("events", "r"));
                assert_eq!(writers, ["w1", "w2"]);
            }
            other => panic!("expected NotAWriter, got {other:?}"),
        }
    }
    let message = reader.next_id().await.unwrap_err().to_string();
    assert!(
        message.contains("\"r\"") && message.contains("not a writer"),
        "{message}"
    );

    let mut conn = h.conn().await;
    let mut tx = conn.begin(&reader).await.unwrap();
    assert!(matches!(tx.next_id().await, Err(Error::NotAWriter { .. })));
    assert!(
        matches!(tx.next_ids(0).await, Err(Error::NotAWriter { .. })),
        "not-a-writer is checked first"
    );
    if let Tx::Pg(pg) = &tx {
        let locks: i64 = pg
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() \
                 AND locktype = 'advisory'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(locks, 0, "no writer lock taken");
        assert_eq!(pg.xid(), None);
    }
    drop(tx);
    assert_eq!(h.counter_last().await, 1, "counter not advanced");
    assert_eq!(reader.unfinished_ids(), 0);
    assert!(h.recorded().await.is_empty());
    reader.check_invariants().unwrap();
}

// why: spec §5.1 FIX-4 — next_ids(0) (and its transaction form) returns the
// invalid-argument error and allocates nothing; the original allocated one ID.
pub async fn next_ids_zero_is_invalid_argument_and_allocates_nothing(h: &Harness) {
    let g = h.start_then_cut_io(h.config("w1", &["w1"])).await;
    for n in [0, MAX_BATCH + 1] {
        match g.next_ids(n).await {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains(&format!("n = {n}")), "{message}");
            }
            other => panic!("next_ids({n}): expected InvalidArgument, got {other:?}"),
        }
    }
    let mut conn = h.conn().await;
    let mut tx = conn.begin(&g).await.unwrap();
    assert!(matches!(
        tx.next_ids(0).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(tx.ids().is_empty());
    if let Tx::Pg(pg) = &tx {
        assert_eq!(pg.xid(), None, "nothing sent");
    }
    assert_eq!(h.counter_last().await, 1, "nothing allocated");
    assert_eq!(g.unfinished_ids(), 0);
    // The next real allocation gets the first ID.
    assert_eq!(tx.next_id().await.unwrap(), 2);
    tx.rollback().await.unwrap();
    assert_eq!(g.unfinished_ids(), 0);
    g.check_invariants().unwrap();
}

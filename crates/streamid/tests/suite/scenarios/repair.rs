//! Sequence/counter repair and the consistency check (spec §4.3, FIX-1, FIX-2, FIX-3;
//! SQLite: §4.6 step 7 raises the counter exactly as §4.3).

use streamid::{Error, StreamConfig};

use super::{W12, map};
use crate::common::eventually;
use crate::harness::{Harness, quiet};

/// Rows 2 and 3 (times `sign`), the sequence/counter at 3, and `stream_positions` (w2) of
/// `stream` at `ahead` (times `sign`).
async fn seed_positions_ahead(h: &Harness, stream: &str, sign: i64, ahead: i64) {
    h.insert(2 * sign, Some("w1")).await;
    h.insert(3 * sign, Some("w1")).await;
    h.set_counter(3).await;
    h.record_for(stream, "w2", ahead * sign).await;
}

/// The repair statement the strict-mode error must give (spec §4.3; on SQLite the counter
/// row takes the sequence's place, §4.6), with `agg` = `MAX(stream_id)` or
/// `-MIN(stream_id)` and `stream` already quoted as a literal.
fn expected_repair_sql(h: &Harness, agg: &str, stream: &str) -> String {
    match h {
        Harness::Pg(_) => format!(
            "SELECT setval('\"events_seq\"', GREATEST(\n    \
             (SELECT {agg} FROM stream_positions WHERE stream_name = {stream}),\n    \
             (SELECT last_value FROM \"events_seq\")));"
        ),
        Harness::Sqlite(_) => format!(
            "UPDATE streamid_sequences SET last_value = MAX(last_value, \
             (SELECT {agg} FROM stream_positions WHERE stream_name = {stream})) \
             WHERE name = 'events_seq';"
        ),
    }
}

// why: spec §4.3 (FIX-1, invariant I9) — rows with IDs above the sequence/counter: startup
// moves it past them, so no new ID collides with a row. A stale row below the rows: Q is
// compared with the value *after* the table repair (FIX-3), so even strict mode starts.
pub async fn sequence_behind_rows_is_repaired_before_the_first_id(h: &Harness) {
    let config = h.config("w1", &W12);
    h.set_counter(1).await;
    for id in 2..=10 {
        h.insert(id, Some(if id % 2 == 0 { "w1" } else { "w2" }))
            .await;
    }
    assert_eq!(h.counter_last().await, 1);
    h.record("w2", 4).await;

    let g = h.start_config(config.strict_consistency(true)).await;
    assert_eq!(h.counter_last().await, 10);
    assert_eq!(g.current_token(), 10);
    assert_eq!(g.minimal_local_current_token(), 10);
    assert_eq!(h.recorded().await, map(&[("w1", 10), ("w2", 4)]));
    assert_eq!(g.next_id().await.unwrap().id(), 11);
}

// why: spec §4.3 FIX-2 (upstream #16095, #18544, #19467) — a recorded position ahead of
// the sequence/counter and every row is repaired, not refused: it moves past the position.
pub async fn positions_ahead_of_sequence_are_repaired_in_default_mode(h: &Harness) {
    h.insert(2, Some("w1")).await;
    h.insert(3, Some("w1")).await;
    h.set_counter(3).await;
    h.record("w2", 50).await; // e.g. restored from a later moment than the sequence

    let g = h.start("w1", &W12).await;
    assert_eq!(h.counter_last().await, 50);
    assert_eq!(g.minimal_local_current_token(), 50, "L = Q adopted");
    assert_eq!(g.current_token(), 50);
    assert_eq!(h.recorded().await, map(&[("w1", 50), ("w2", 50)]));
    assert_eq!(g.next_id().await.unwrap().id(), 51);
}

// why: spec §4.3 FIX-2 (upstream #16095, #18544, #19467) — strict mode refuses with the
// inconsistent-database error naming stream, sequence (SQLite: counter), Q with its
// instance, base, the likely causes and the exact repair statement; nothing is changed.
pub async fn strict_mode_refuses_positions_ahead_of_sequence_with_exact_repair_sql(h: &Harness) {
    seed_positions_ahead(h, "events", 1, 50).await;
    let config = h.config("w1", &W12).strict_consistency(true);
    let repair = expected_repair_sql(h, "MAX(stream_id)", "'events'");
    let err = h.try_start(config).await.unwrap_err();
    let message = err.to_string();
    match err {
        Error::InconsistentDatabase {
            stream,
            sequence,
            recorded,
            recorded_by,
            base,
            repair_sql,
        } => {
            assert_eq!(stream, "events");
            assert_eq!(sequence, "events_seq");
            assert_eq!((recorded, recorded_by.as_str(), base), (50, "w2", 3));
            assert_eq!(repair_sql, repair);
        }
        other => panic!("expected InconsistentDatabase, got {other:?}"),
    }
    for part in [
        "\"events\"",
        "events_seq",
        "50",
        "\"w2\"",
        "(3)",
        repair.as_str(),
        "promoted replica",
        "restore",
        "only moves the sequence forward",
        "without strict_consistency",
    ] {
        assert!(message.contains(part), "message lacks {part:?}: {message}");
    }
    assert_eq!(h.counter_last().await, 3, "sequence untouched");
    assert_eq!(h.recorded().await, map(&[("w2", 50)]), "no row written");
}

// why: upstream #19973, spec §4.3 FIX-3 — after running the repair statement the check
// compares Q with the repaired sequence/counter, so strict startup no longer refuses; the
// statement never moves it back.
pub async fn synapse_19973_strict_startup_succeeds_right_after_repair(h: &Harness) {
    seed_positions_ahead(h, "events", 1, 50).await;
    let config = h.config("w1", &W12).strict_consistency(true);
    let Err(Error::InconsistentDatabase { repair_sql, .. }) = h.try_start(config.clone()).await
    else {
        panic!("expected a refusal first");
    };
    h.exec(&repair_sql).await;
    assert_eq!(h.counter_last().await, 50);
    // Running it twice never moves the sequence back.
    h.exec(&repair_sql).await;
    assert_eq!(h.counter_last().await, 50);

    let g = h
        .try_start(config)
        .await
        .expect("strict start after repair");
    assert_eq!(g.current_token(), 50);
    assert_eq!(g.minimal_local_current_token(), 50, "L = Q adopted");
    assert_eq!(h.counter_last().await, 50);
    assert_eq!(g.next_id().await.unwrap().id(), 51);
}

// why: spec §4.3 (backwards: -MIN) and §2.3 — the repair statement is exact for backwards
// streams and quotes a stream name holding quotes safely; running it repairs.
pub async fn strict_repair_sql_backwards_with_odd_stream_name(h: &Harness) {
    let stream = "o'brien; DROP TABLE events; --";
    seed_positions_ahead(h, stream, -1, 50).await;
    let config = quiet(
        StreamConfig::new(stream, "w1")
            .table("events", "instance_name", "stream_ordering")
            .sequence("events_seq")
            .writers(W12)
            .backwards()
            .strict_consistency(true),
    );
    let err = h.try_start(config.clone()).await.unwrap_err();
    let Error::InconsistentDatabase {
        recorded,
        base,
        repair_sql,
        ..
    } = err
    else {
        panic!("expected InconsistentDatabase, got {err:?}");
    };
    assert_eq!((recorded, base), (-50, -3));
    assert_eq!(
        repair_sql,
        expected_repair_sql(h, "-MIN(stream_id)", "'o''brien; DROP TABLE events; --'")
    );
    h.exec(&repair_sql).await;
    assert_eq!(h.counter_last().await, 50);
    let g = h
        .try_start(config)
        .await
        .expect("strict start after repair");
    assert_eq!(g.current_token(), -50);
    assert_eq!(
        h.recorded_for(stream).await,
        map(&[("w1", -50), ("w2", -50)])
    );
    assert_eq!(g.next_id().await.unwrap().id(), -51);
    assert_eq!(h.event_ids().await, vec![-3, -2], "the table survived");
}

// why: after a database crash a sequence can come back below values it had handed out (its
// WAL record was never flushed; RELIABILITY.md, weak points). A live process that knows a
// larger allocated ID moves it forward at its next housekeeping tick — by consuming values,
// never by setting it back — so no ID is handed out twice and allocation keeps working.
pub async fn sequence_that_went_backwards_is_moved_past_known_ids(h: &Harness) {
    let config = h
        .config("w1", &["w1"])
        .reclaim_interval(std::time::Duration::from_millis(50));
    h.prepare(&config).await;
    let g = h.start_config(config).await;
    let ids = g.next_ids(20).await.unwrap();
    let largest = *ids.ids().last().unwrap();
    drop(ids);
    // The crash loses the last values: the sequence/counter is back at 3.
    h.set_counter(3).await;
    eventually("the sequence is moved past the known IDs", async || {
        h.counter_last().await >= largest
    })
    .await;
    let next = g.next_id().await.unwrap().id();
    assert!(
        next > largest,
        "{next} was handed out again (largest {largest})"
    );
}

//! Stream shapes (spec §2.1, §4.2 step 4, §4.5, §9): backwards streams, several backing
//! tables, NULL instance names.

use super::{W12, map};
use crate::harness::Harness;

// why: spec §9 (upstream #8447) — IDs -2, -3, …; negative positions and stream_positions
// values that never go forwards; the backwards scan and restart work; max_allocated_token
// is negative (§6.5); the sequence/counter holds the internal (positive) form.
pub async fn backwards_stream_positions_negative_and_restart(h: &Harness) {
    let cfg = |i: &str| h.config(i, &W12).backwards();
    h.prepare(&cfg("w1")).await;
    let g = h.start_config(cfg("w1")).await;
    let g2 = h.start_config(cfg("w2")).await;
    assert_eq!(g.current_token(), -1);
    assert_eq!(g.max_allocated_token().await.unwrap(), -1);
    let mut history = vec![h.recorded().await["w1"]];
    assert_eq!(history, [-1]);

    let a = g.next_id().await.unwrap();
    assert_eq!(a.id(), -2, "a fresh backwards stream hands out -2 first");
    let b = g.next_ids(3).await.unwrap();
    assert_eq!(b.ids(), &[-3, -4, -5]);
    h.insert(-2, Some("w1")).await;
    a.complete().await.unwrap();
    assert_eq!(g.minimal_local_current_token(), -2);
    assert_eq!(g.current_token(), -2);
    history.push(h.recorded().await["w1"]);
    h.insert(-3, Some("w1")).await;
    h.insert(-4, Some("w1")).await;
    b.complete().await.unwrap(); // -5 written nowhere: a gap
    assert_eq!(g.minimal_local_current_token(), -5);
    assert_eq!(g.current_token(), -5);
    assert_eq!(g.max_allocated_token().await.unwrap(), -5);
    history.push(h.recorded().await["w1"]);
    assert_eq!(history, [-1, -2, -5], "rows only move towards -inf");
    g.check_invariants().unwrap();
    drop(g);
    drop(g2);

    // A reader with w2's row stale at -1 scans `<= -1` and stops at the gap -5.
    let reader = h.start_config(cfg("r")).await;
    assert_eq!(reader.positions(), map(&[("w1", -5), ("w2", -1)]));
    assert_eq!(reader.current_token(), -4);

    // Restart: L = Q = 5 (internal) adopted; the row does not move forwards to T (-4).
    let g = h.start_config(cfg("w1")).await;
    assert_eq!(h.recorded().await["w1"], -5);
    assert_eq!(h.counter_last().await, 5);
    assert_eq!(g.current_token_for_writer("w1"), -5);
    assert_eq!(g.next_id().await.unwrap().id(), -6);
    g.shutdown().await;
    drop(g);

    // A row ahead of the sequence (more negative) is repaired past, and kept.
    h.record("w1", -9).await;
    let g = h.start_config(cfg("w1")).await;
    assert_eq!(h.counter_last().await, 9);
    assert_eq!(h.recorded().await["w1"], -9);
    assert_eq!(g.max_allocated_token().await.unwrap(), -9);
    assert_eq!(g.next_id().await.unwrap().id(), -10);
}

// why: spec §2.1 tables and §4.2 step 4 / §4.5 — tables share one ID space: T is the
// maximum across all of them and the startup scan covers every table.
pub async fn stream_over_two_tables_takes_max_and_scans_both(h: &Harness) {
    h.create_table("events_extra").await;
    let cfg = |i: &str| {
        h.config(i, &W12)
            .table("events_extra", "instance_name", "stream_ordering")
    };
    for (id, inst) in [(2, "w1"), (3, "w2"), (4, "w1"), (6, "w2")] {
        h.insert(id, Some(inst)).await;
    }
    for (id, inst) in [(5, "w2"), (7, "w1"), (9, "w2")] {
        h.insert_into("events_extra", id, Some(inst)).await;
    }
    if let Harness::Pg(env) = h {
        // create_sequence also looks at both tables.
        env.create_sequence(&cfg("w1")).await;
        assert_eq!(h.counter_last().await, 9);
    }
    // Now put the sequence/counter behind the second table and the positions far behind.
    h.set_counter(1).await;
    h.record("w1", 3).await;
    h.record("w2", 3).await;

    let reader = h.start_config(cfg("r")).await;
    assert_eq!(h.counter_last().await, 9, "T from events_extra");
    assert_eq!(
        reader.current_token(),
        7,
        "4, 6 in events, 5, 7 in events_extra; 8 a gap"
    );

    let g = h.start_config(cfg("w1")).await;
    assert_eq!(
        g.minimal_local_current_token(),
        7,
        "own row 7 lives in events_extra"
    );
    assert_eq!(g.current_token(), 7);
    assert_eq!(g.current_token_for_writer("w1"), 9);
    assert_eq!(g.next_id().await.unwrap().id(), 10);
}

// why: upstream #13585, spec §4.5 FIX-8 — rows with NULL instance names are sorted by ID
// only; startup must not fail, and they still count as decided.
pub async fn synapse_13585_null_instance_names_do_not_crash_startup(h: &Harness) {
    for (id, inst) in [
        (2, None),
        (3, Some("w1")),
        (3, None),
        (4, None),
        (5, Some("w2")),
    ] {
        h.insert(id, inst).await;
    }
    h.record("w1", 1).await;
    h.record("w2", 1).await;
    h.set_counter(5).await;

    let reader = h.start("r", &W12).await;
    assert_eq!(reader.current_token(), 5);
    let g = h.start("w1", &W12).await;
    assert_eq!(g.current_token(), 5);
    assert_eq!(g.minimal_local_current_token(), 3, "last own row");
    assert_eq!(g.current_token_for_writer("w1"), 5);
    g.check_invariants().unwrap();
}

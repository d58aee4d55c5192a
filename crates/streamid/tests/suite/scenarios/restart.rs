//! Restarts (spec §4.2, §4.4, §4.5): recovery after out-of-order commits, the scan over a
//! committed run, the startup row of every writer and the decided starting position.

use super::{W12, map, write_committed};
use crate::harness::{Conn, Gen, Harness, Tx};

/// Opens a stream transaction, allocates one ID and writes its row, uncommitted.
async fn write_uncommitted<'a>(g: &Gen, conn: &'a mut Conn) -> (Tx<'a>, i64) {
    let mut tx = conn.begin(g).await.unwrap();
    let id = tx.next_id().await.unwrap();
    tx.insert(id, g.instance_name(), "uncommitted").await;
    (tx, id)
}

// why: spec §4.5 — the scan from min(positions) recovers the own position (assignment
// from own rows, possibly below start) and lets P skip the committed run, stopping at the
// first gap; §4.4 L = T is adopted without allocating.
pub async fn restart_after_out_of_order_commits_recovers_own_position_and_p_up_to_gap(h: &Harness) {
    let g1 = h.start("w1", &W12).await;
    let g2 = h.start("w2", &W12).await;
    // Both processes "crash" before recording anything after startup.
    g1.shutdown().await;
    g2.shutdown().await;
    assert_eq!(h.recorded().await, map(&[("w1", 1), ("w2", 1)]));

    let mut conns = Vec::new();
    for _ in 0..6 {
        conns.push(h.conn().await);
    }
    let mut txs = Vec::new();
    for (i, conn) in conns.iter_mut().enumerate() {
        let g = if i % 2 == 0 { &g1 } else { &g2 };
        txs.push(write_uncommitted(g, conn).await);
    }
    let ids: Vec<i64> = txs.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids, [2, 3, 4, 5, 6, 7]);
    // Commit in reverse order; 5 (w2) rolls back and is a gap.
    let mut txs: Vec<Option<Tx<'_>>> = txs.into_iter().map(|(t, _)| Some(t)).collect();
    for i in [5, 4, 2, 1, 0] {
        txs[i].take().unwrap().commit().await.unwrap();
    }
    txs[3].take().unwrap().rollback().await.unwrap();
    drop(txs);
    drop(conns);
    drop(g1);
    drop(g2);
    assert_eq!(
        h.recorded().await,
        map(&[("w1", 1), ("w2", 1)]),
        "the crash left the rows stale"
    );

    let g1 = h.start("w1", &W12).await;
    assert_eq!(h.counter_last().await, 7, "L = T adopted, no ID taken");
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
    assert_eq!(h.recorded().await, map(&[("w1", 7), ("w2", 1)]));
    g1.check_invariants().unwrap();

    // A reader starting now scans from w2's stale row and stops at the same gap.
    let reader = h.start("r", &W12).await;
    assert_eq!(reader.current_token(), 4);
    assert_eq!(reader.positions(), map(&[("w1", 7), ("w2", 1)]));

    // w2 restarts: every position is now at 7 and P passes the gap.
    let g2 = h.start("w2", &W12).await;
    assert_eq!(g2.current_token(), 7);
    assert_eq!(g2.minimal_local_current_token(), 7);
    assert_eq!(h.recorded().await, map(&[("w1", 7), ("w2", 7)]));
    g2.check_invariants().unwrap();

    // The gap is passed elsewhere only once w2's position passes it.
    g1.advance("w2", 7);
    reader.advance("w2", 7);
    assert_eq!(g1.current_token(), 7);
    assert_eq!(reader.current_token(), 7);
    let next = g1.next_id().await.unwrap();
    assert_eq!(next.id(), 8, "above every row and recorded position");
}

// why: spec §4.5 / upstream #8257 — a crash between committing rows and recording the
// position: the scan recovers the own position from own rows and P over the gapless run.
pub async fn restart_scan_skips_committed_run_past_stale_row(h: &Harness) {
    let g = h.start("w1", &["w1"]).await;
    g.shutdown().await;
    let mut conn = h.conn().await;
    for _ in 0..4 {
        let (tx, _) = write_uncommitted(&g, &mut conn).await;
        tx.commit().await.unwrap();
    }
    drop(conn);
    drop(g);
    assert_eq!(h.recorded().await, map(&[("w1", 1)]));

    // A reader with the stale row: P recovered by the scan, not stuck at 1.
    let reader = h.start("r", &["w1"]).await;
    assert_eq!(reader.current_token(), 5);
    let g = h.start("w1", &["w1"]).await;
    assert_eq!(g.current_token(), 5);
    assert_eq!(g.minimal_local_current_token(), 5);
    assert_eq!(h.recorded().await, map(&[("w1", 5)]));
    assert_eq!(g.next_id().await.unwrap().id(), 6);
}

// why: spec §4.2 step 15 and §14.2 item 2 — every writer records its starting position
// at startup; without w2's row a reader starting before w2 writes would take P from w1's
// row and skip w2's in-flight ID.
pub async fn startup_row_per_writer_keeps_readers_below_in_flight_ids(h: &Harness) {
    let writers = ["w1", "w2", "w3"];
    let g1 = h.start("w1", &writers).await;
    assert_eq!(h.recorded().await, map(&[("w1", 1)]));
    let g2 = h.start("w2", &writers).await;
    assert_eq!(h.recorded().await, map(&[("w1", 1), ("w2", 1)]));
    let r = h.start("r", &writers).await;
    assert_eq!(h.recorded().await.len(), 2, "readers record nothing");
    assert!(
        !r.positions().contains_key("r"),
        "readers have no own entry"
    );
    assert_eq!(r.positions(), map(&[("w1", 1), ("w2", 1), ("w3", 1)]));

    let mut conn = h.conn().await;
    let (tx, id) = write_uncommitted(&g2, &mut conn).await;
    assert_eq!(id, 2);
    assert_eq!(write_committed(h, &g1).await, 3);
    assert_eq!(h.recorded().await.get("w1"), Some(&3));

    let g3 = h.start("w3", &writers).await;
    assert_eq!(
        h.recorded().await.get("w3"),
        Some(&3),
        "row written by startup"
    );
    assert_eq!(g3.minimal_local_current_token(), 3);
    assert_eq!(g3.current_token(), 1, "w2's 2 is in flight");

    let r2 = h.start("r2", &writers).await;
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

// why: spec §4.4, §13 "A restart announces an in-flight ID", §14.2 item 1 — when L is
// not 1, a row or a recorded position, the writer takes an ID of its own instead of
// adopting the head, which may be another writer's uncommitted ID.
pub async fn restart_never_adopts_another_writers_uncommitted_head(h: &Harness) {
    let g1 = h.start("w1", &W12).await;
    let g2 = h.start("w2", &W12).await;
    let mut conn = h.conn().await;
    let (tx, id) = write_uncommitted(&g2, &mut conn).await;
    assert_eq!(id, 2);

    let g1 = h.restart(g1, "w1", &W12).await;
    assert_eq!(h.counter_last().await, 3, "w1 took F = 3");
    assert_eq!(g1.minimal_local_current_token(), 3);
    assert_eq!(g1.current_token_for_writer("w1"), 3);
    assert_eq!(g1.current_token(), 1, "2 is still in flight");
    assert_eq!(h.recorded().await.get("w1"), Some(&3));

    // A reader hearing w1's announced position must not step onto 2.
    let reader = h.start("r", &W12).await;
    reader.advance("w1", g1.current_token_for_writer("w1"));
    assert_eq!(reader.current_token(), 1);

    tx.commit().await.unwrap();
    reader.advance("w2", 2);
    assert_eq!(reader.current_token(), 3);
    assert_eq!(g1.next_id().await.unwrap().id(), 4);
    g1.check_invariants().unwrap();
}

// why: spec §4.4 — L = 1, L = T and L = Q are decided and adopted without taking an ID
// (the common single-writer restart equals the original's behaviour).
pub async fn restart_adopts_l_when_it_is_one_a_row_or_a_recorded_position(h: &Harness) {
    // L = 1: a fresh stream restarted.
    let g = h.start("w1", &["w1"]).await;
    let g = h.restart(g, "w1", &["w1"]).await;
    assert_eq!(h.counter_last().await, 1);
    assert_eq!(g.minimal_local_current_token(), 1);

    // L = Q: 2 and 3 allocated, only 2 written, both completed: recorded 3 > T = 2.
    let a = g.next_ids(2).await.unwrap();
    assert_eq!(a.ids(), &[2, 3]);
    h.insert(2, Some("w1")).await;
    a.complete().await.unwrap();
    assert_eq!(h.recorded().await, map(&[("w1", 3)]));
    let g = h.restart(g, "w1", &["w1"]).await;
    assert_eq!(h.counter_last().await, 3, "L = Q adopted");
    assert_eq!(g.current_token(), 3);

    // L = T: the last ID is a committed row.
    assert_eq!(write_committed(h, &g).await, 4);
    g.shutdown().await;
    drop(g);
    h.exec("UPDATE stream_positions SET stream_id = 2").await; // a lost position write
    let g = h.start("w1", &["w1"]).await;
    assert_eq!(h.counter_last().await, 4, "L = T adopted");
    assert_eq!(g.current_token(), 4);
    assert_eq!(g.minimal_local_current_token(), 4);
    assert_eq!(h.recorded().await, map(&[("w1", 4)]));
}

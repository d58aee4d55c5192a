//! Changes of the writer list and anyone-may-write streams (spec §2.2, §4.2 steps 8, 12,
//! 14, 15).

use super::{W12, map, seed_three_writers, write_committed};
use crate::harness::Harness;

// why: spec §4.2 step 8 and §2.2 — rows of writers no longer listed are deleted at
// startup; otherwise the removed writer would pin P forever.
pub async fn removed_writer_row_deleted_and_no_longer_holds_p_back(h: &Harness) {
    seed_three_writers(h).await;

    // With the old list w3 (at 3) holds P back: 4 is a gap.
    let old = h.start("r", &["w1", "w2", "w3"]).await;
    assert_eq!(old.current_token(), 3);
    assert_eq!(old.positions(), map(&[("w1", 5), ("w2", 6), ("w3", 3)]));
    drop(old);
    assert_eq!(h.recorded().await.get("w3"), Some(&3), "listed: kept");

    let new = h.start("r", &W12).await;
    assert_eq!(h.recorded().await, map(&[("w1", 5), ("w2", 6)]));
    assert_eq!(new.positions(), map(&[("w1", 5), ("w2", 6)]));
    assert_eq!(new.current_token(), 6);
    new.check_invariants().unwrap();
}

// why: spec §4.2 steps 8 and 12 (upstream #8419) — a writer removed and later re-added
// starts at P instead of a far-behind position every process would scan from.
pub async fn re_added_writer_starts_at_p_not_at_its_old_position(h: &Harness) {
    seed_three_writers(h).await;
    drop(h.start("r", &W12).await); // w3 removed: its row (3) is deleted

    let reader = h.start("r", &["w1", "w2", "w3"]).await;
    assert_eq!(reader.current_token(), 6);
    assert_eq!(reader.positions(), map(&[("w1", 5), ("w2", 6), ("w3", 6)]));

    let w3 = h.start("w3", &["w1", "w2", "w3"]).await;
    assert_eq!(w3.minimal_local_current_token(), 6);
    assert_eq!(w3.current_token(), 6);
    assert_eq!(h.recorded().await.get("w3"), Some(&6));
    assert_eq!(w3.next_id().await.unwrap().id(), 7);
}

// why: upstream #16473, spec §4.2 step 12 and §6.2 — a writer added to a running stream
// gets an entry at P everywhere, so its first in-flight ID holds P back.
pub async fn synapse_16473_new_writer_first_in_flight_id_holds_p_back(h: &Harness) {
    for id in 2..=5 {
        h.insert(id, Some("w1")).await;
    }
    h.record("w1", 5).await;
    h.set_counter(5).await;

    // The writer list grows to [w1, w2]; w2 has never run.
    let g1 = h.start("w1", &W12).await;
    assert_eq!(g1.current_token(), 5);
    assert_eq!(g1.positions(), map(&[("w1", 5), ("w2", 5)]));

    let g2 = h.start("w2", &W12).await;
    assert_eq!(h.recorded().await, map(&[("w1", 5), ("w2", 5)]));
    let mut conn = h.conn().await;
    let mut tx = conn.begin(&g2).await.unwrap();
    let id = tx.next_id().await.unwrap();
    tx.insert(id, "w2", "in flight").await;
    assert_eq!(id, 6);

    assert_eq!(write_committed(h, &g1).await, 7);
    assert_eq!(g1.minimal_local_current_token(), 7);
    assert_eq!(g1.current_token(), 5, "w2's in-flight 6 holds P back");
    let reader = h.start("r", &W12).await;
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

// why: spec §2.2 "Empty" and §4.2 steps 8, 14, 15 — with writers = [] any instance may
// allocate, nothing writes or deletes stream_positions rows, P starts at max(1, T).
pub async fn anyone_may_write_records_nothing_and_anyone_allocates(h: &Harness) {
    h.record("old", 1).await; // left from a time with a writer list
    let a = h.start("a", &[]).await;
    let b = h.start("b", &[]).await;
    assert_eq!(a.positions(), map(&[("a", 1)]));
    let ia = write_committed(h, &a).await;
    let ib = write_committed(h, &b).await;
    assert_eq!((ia, ib), (2, 3));
    assert_eq!(
        h.recorded().await,
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

    let c = h.start("c", &[]).await;
    assert_eq!(c.current_token(), 3, "P = max(1, T)");
    assert_eq!(c.positions(), map(&[("c", 3)]));
    assert_eq!(h.recorded().await, map(&[("old", 1)]));
}

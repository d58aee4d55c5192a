//! Several writers replicating through `advance` (spec §1.2, §6.2, §6.4, §12.3): `P`
//! passes only decided IDs, idle writers follow, echoes and unlisted instances are
//! ignored, gaps stop `P` until the slowest writer passes them.

use std::collections::{BTreeMap, BTreeSet};

use super::{W12, map, row_of, seed_three_writers, settle};
use crate::harness::{Gen, Harness};

/// Relays every generator's announced position to every other (spec §12.1, §12.3).
fn relay(generators: &[&Gen]) {
    for g in generators {
        let own = g.instance_name();
        let announced = g.current_token_for_writer(own);
        for other in generators {
            if other.instance_name() != own {
                other.advance(own, announced);
            }
        }
    }
}

/// The safety half of §1.2: no generator reports a position covering an undecided ID.
/// `undecided` maps each undecided ID to the writer that allocated it.
fn assert_safe(generators: &[&Gen], undecided: &BTreeMap<i64, &str>) {
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
        for other in generators {
            let w = other.instance_name();
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
pub async fn writers_replicating_through_advance_pass_only_decided_ids(h: &Harness) {
    let writers = ["a", "b", "c"];
    let a = h.start("a", &writers).await;
    let b = h.start("b", &writers).await;
    let c = h.start("c", &writers).await;
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
    h.insert(3, Some("b")).await;
    b3.complete().await.unwrap();
    undecided.remove(&3);
    relay(&all);
    assert_safe(&all, &undecided);
    assert_eq!(a.current_token(), 1, "2 is undecided");

    // a finishes 2: a knows 2 and 3 are decided and walks over them, stopping at 4 (c's).
    // b and c know only positions (a: 3, b: 3, c: 1), so they stay below c's 4 as well.
    h.insert(2, Some("a")).await;
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
    h.insert(4, Some("c")).await;
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
pub async fn idle_writer_follows_the_others(h: &Harness) {
    let writers = ["a", "b", "c"];
    let a = h.start("a", &writers).await; // idle throughout
    let b = h.start("b", &writers).await;
    let c = h.start("c", &writers).await; // only listens

    let mut last = 0;
    for _ in 0..5 {
        let alloc = b.next_id().await.unwrap();
        last = alloc.id();
        h.insert(last, Some("b")).await;
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
    crate::common::eventually("the idle writer's row follows at the tick", async || {
        h.recorded().await.get("a") == Some(&last)
    })
    .await;
    for g in [&a, &b, &c] {
        g.check_invariants().unwrap();
    }
}

// why: spec §12.3 and I5: own echoes never touch state (the own position moves only by
// local completion), and with a non-empty writer list unlisted instances are ignored
// (§6.4); duplicated and reordered announcements are harmless.
pub async fn own_echoes_and_unlisted_instances_are_ignored(h: &Harness) {
    let writers = ["a", "b"];
    let a = h.start("a", &writers).await;
    let b = h.start("b", &writers).await;
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

// why: spec §6.4 and §14.2 item 14 — with a non-empty writer list, positions from
// unlisted instances (a removed writer's late write, an old-list process) are ignored;
// unknown writers count as P.
pub async fn advance_from_unlisted_instance_is_ignored(h: &Harness) {
    seed_three_writers(h).await;
    let reader = h.start("r", &W12).await;
    let writer = h.start("w1", &W12).await;
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
    assert_eq!(reader.positions(), map(&[("w1", 9), ("w2", 9)]));
}

// why: spec §6.2 ("gaps stop the walk; past a gap P moves only when the slowest writer's
// position passes it") and §1.2: a rolled-back ID of another writer is a gap this process
// cannot see; `P` stops below it even though every later ID is decided, until that
// writer's position passes it.
pub async fn p_stops_at_a_gap_until_the_slowest_writer_passes_it(h: &Harness) {
    let writers = ["a", "b", "c"];
    let a = h.start("a", &writers).await;
    let b = h.start("b", &writers).await;
    let c = h.start("c", &writers).await;

    let mut conn = h.conn().await;
    let mut tx = conn.begin(&a).await.unwrap();
    let gap = tx.next_id().await.unwrap();
    assert_eq!(gap, 2);
    let b3 = b.next_id().await.unwrap();
    let c4 = c.next_id().await.unwrap();
    h.insert(3, Some("b")).await;
    b3.complete().await.unwrap();
    h.insert(4, Some("c")).await;
    c4.complete().await.unwrap();
    c.advance("b", b.current_token_for_writer("b"));
    c.advance("a", a.current_token_for_writer("a"));
    assert_eq!(c.positions().get("b"), Some(&3));
    assert_eq!(c.current_token(), 1, "P stops below a's 2");

    // a rolls 2 back: decided, but c cannot know until a's position passes it.
    tx.insert(gap, "a", "gap").await;
    tx.rollback().await.unwrap();
    assert_eq!(c.current_token(), 1, "nothing told c yet");
    let known: BTreeSet<i64> = h.event_ids().await.into_iter().collect();
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

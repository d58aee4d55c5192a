//! Property tests of the position tracker against the reference model and the global
//! safety and liveness guarantee (spec §1.2, §3.2), plus named regression scenarios.

use proptest::prelude::*;
use streamid_core::testing::strategy::{ops, sim_setup, solo_ops, solo_setup, startup_input};
use streamid_core::testing::{Op, Sim, Solo};
use streamid_core::{Advance, Tracker};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Several writers, one sequence, a lossy reordering bus.
    #[test]
    fn multi_writer_sim_is_safe_and_live((writers, open) in sim_setup(), ops in ops(300)) {
        Sim::new(writers, open).run(&ops).map_err(TestCaseError::fail)?;
    }

    /// One tracker, other writers heard at arbitrary truthful positions.
    #[test]
    fn single_tracker_matches_model((open, initial, persisted) in solo_setup(), ops in solo_ops(300)) {
        Solo::new(open, initial, persisted).run(&ops).map_err(TestCaseError::fail)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Startup (spec §4.2 steps 9–14, §4.5) against its model; a listed writer then runs
    /// as in `single_tracker_matches_model`.
    #[test]
    fn startup_matches_model(input in startup_input(), ops in solo_ops(100)) {
        let mut solo = Solo::started(&input).map_err(TestCaseError::fail)?;
        let ops = if input.start.is_some() { ops } else { Vec::new() };
        solo.run(&ops).map_err(TestCaseError::fail)?;
    }
}

// ----- named scenarios ------------------------------------------------------------------
//
// Each `Sim` scenario runs under the full checks (model, invariants, global safety after
// every step; liveness in `quiesce`) and asserts what the scenario is about.

fn apply_all(sim: &mut Sim, ops: &[Op]) {
    for op in ops {
        sim.apply(op).unwrap_or_else(|e| panic!("{e}"));
    }
}

fn p_of(sim: &Sim) -> Vec<i64> {
    (0..sim.writers())
        .map(|w| sim.tracker(w).persisted_upto())
        .collect()
}

/// Writer `w` starts a fetch.
fn begin(w: u8) -> Op {
    Op::BeginFetch { w }
}

/// Writer `w`'s oldest fetch registers `k` (1–3) new IDs.
fn register(w: u8, k: u8) -> Op {
    Op::CompleteFetch {
        w,
        fetch: 0,
        n: k - 1,
    }
}

/// Writer `w` finishes its `k` (1–3) smallest unfinished IDs, largest first.
fn finish(w: u8, k: u8, committed: bool) -> Op {
    let (pick, count, reverse) = (0, k - 1, true);
    Op::Finish {
        w,
        pick,
        count,
        committed,
        reverse,
    }
}

/// Upstream #9424 across processes: w0's fetch has been handed 2 but not registered; w1 is
/// handed 3, commits it and announces. Neither process may pass 2 — w0 because of its
/// marker, w1 because w0's announced position stays below 2.
#[test]
fn unregistered_id_holds_p_on_every_process() {
    let mut sim = Sim::new(2, false);
    let w0_handed_2 = Op::Assign {
        w: 0,
        fetch: 0,
        n: 0,
    };
    apply_all(&mut sim, &[begin(0), w0_handed_2, begin(1), register(1, 1)]);
    apply_all(&mut sim, &[finish(1, 1, true), Op::Gossip, Op::Gossip]);
    assert_eq!(p_of(&sim), [1, 1]);
    assert_eq!(sim.tracker(1).announced(), 3, "w1 is idle: it announces 3");
    assert_eq!(
        sim.tracker(0).announced(),
        1,
        "w0 is busy: it stays below 2"
    );
    apply_all(&mut sim, &[register(0, 1), finish(0, 1, false), Op::Gossip]);
    assert_eq!(p_of(&sim), [3, 3]);
    sim.quiesce().unwrap();
}

/// Stale, duplicated and reordered announcements never move anything back (spec §6.4).
#[test]
fn stale_duplicated_and_reordered_announcements_are_harmless() {
    let mut sim = Sim::new(2, false);
    let write = [begin(1), register(1, 1), finish(1, 1, true)];
    apply_all(&mut sim, &write); // 2
    apply_all(&mut sim, &[Op::Announce { w: 1 }, Op::Duplicate { msg: 0 }]);
    apply_all(&mut sim, &write); // 3
    apply_all(&mut sim, &[Op::Announce { w: 1 }]);
    // The bus holds [2, 2, 3]: deliver 3 first, then both stale copies of 2.
    apply_all(&mut sim, &[Op::Deliver { msg: 2, to: 0 }]);
    assert_eq!(sim.tracker(0).positions()["w1"], 3);
    let stale = Op::Deliver { msg: 0, to: 0 };
    apply_all(&mut sim, &[stale.clone(), stale]);
    assert_eq!(sim.tracker(0).positions()["w1"], 3);
    assert_eq!(p_of(&sim), [3, 3]);
    sim.quiesce().unwrap();
}

/// A value a cancelled fetch consumed is known to nobody: `P` stops below it until the
/// next allocation (spec §1.2, liveness), then passes it.
#[test]
fn gap_nobody_learnt_is_passed_at_the_next_allocation() {
    let mut sim = Sim::new(2, false);
    let w0_loses_2 = Op::CancelFetch {
        w: 0,
        fetch: 0,
        consumed_ids: true,
    };
    apply_all(&mut sim, &[begin(0), w0_loses_2, Op::Gossip]);
    assert_eq!((p_of(&sim), sim.last_allocated()), (vec![1, 1], 2));
    apply_all(&mut sim, &[begin(1), register(1, 1), finish(1, 1, true)]);
    // Two rounds: w0 learns 3 in the first, after it has announced.
    apply_all(&mut sim, &[Op::Gossip, Op::Gossip]);
    assert_eq!(p_of(&sim), [3, 3]);
    sim.quiesce().unwrap();
}

/// An idle writer follows the stream through `advance` and re-announces it, so it never
/// holds `P` back (spec §6.2 step 5, §12.2). A busy writer's announced position stays
/// where it was when its fetch began, and holds everyone else's `P` there.
#[test]
fn idle_writer_follows_busy_writer_holds() {
    let mut sim = Sim::new(3, false);
    for _ in 0..3 {
        apply_all(&mut sim, &[begin(2), register(2, 3), finish(2, 3, true)]);
    }
    // w1 keeps 11 open, having begun its fetch knowing only 1; w0 never writes.
    apply_all(
        &mut sim,
        &[begin(1), register(1, 1), Op::Gossip, Op::Gossip],
    );
    assert_eq!(
        sim.tracker(0).announced(),
        10,
        "idle w0 follows what it heard"
    );
    assert_eq!(
        sim.tracker(0).minimal_local(),
        1,
        "its minimal position stays"
    );
    assert_eq!(
        sim.tracker(1).announced(),
        1,
        "busy w1 announces what it had"
    );
    assert_eq!(p_of(&sim), [1, 1, 10], "w2's own run walks past w1's 1");
    apply_all(&mut sim, &[finish(1, 1, false), Op::Gossip]);
    assert_eq!(p_of(&sim), [11, 11, 11]);
    sim.quiesce().unwrap();
}

/// Finishing an ID that was never registered (a caller's bug) must be ignored: pushing it
/// as decided lets `P` walk onto it once the sequence hands it to someone. Before the fix
/// the tracker pushed it, and here `P` reached 3 (in debug builds a `debug_assert!` fired
/// first: `P` above `max_seen`).
#[test]
fn finishing_an_unregistered_id_is_ignored() {
    let mut a = Tracker::new("a", ["a", "b"], [("a", 1), ("b", 1)], 1);
    let result = a.finish(&[3]);
    assert_eq!(result.unknown_ids, 1);
    assert!(!result.changes.any());
    // b is handed 2 and 3, commits 2 and announces it while 3 is still open.
    assert!(matches!(a.advance("b", 2), Advance::Applied(_)));
    assert_eq!(a.persisted_upto(), 2, "3 is b's open ID");
    a.check_invariants().unwrap();
}

/// Spec §3.2 I2's caveat: a process that saw the row of a's committed but unfinished ID 2
/// (a reader that started and scanned it) announces 2, and a's `P` — hence its announced
/// position — walks onto a's own unfinished ID. Correct, so `check_invariants` accepts it
/// (it used to report "I3: announced 2 >= unfinished ID 2").
#[test]
fn p_may_reach_a_committed_unfinished_local_id() {
    let mut a = Tracker::new("a", ["a", "b"], [("a", 1), ("b", 1)], 1);
    let ticket = a.begin_fetch();
    a.register(ticket, &[2]).unwrap();
    a.advance("b", 2);
    assert_eq!((a.persisted_upto(), a.min_unfinished()), (2, Some(2)));
    a.check_invariants().unwrap();
    a.finish(&[2]);
    assert_eq!((a.minimal_local(), a.persisted_upto()), (2, 2));
    a.check_invariants().unwrap();
}

/// `register` ends a fetch without releasing the IDs its marker held back (spec §5.2 step
/// 3); the next `finish` does, even one of no IDs. That one runs `update_persisted` for no
/// ID (§6.1 step 4), so `P` moves only with the next real completion. (Before the fix the
/// tracker ran it anyway, and `P` jumped to 3 here.)
#[test]
fn blocked_ids_wait_for_the_next_finish_after_register() {
    let mut a = Tracker::new("a", ["a"], [("a", 1)], 1);
    let slow = a.begin_fetch(); // marker 1
    let lost = a.begin_fetch(); // marker 1; the server hands it 2, then it is dropped
    let fast = a.begin_fetch(); // marker 1
    a.cancel_fetch(lost);
    a.register(fast, &[3]).unwrap();
    a.finish(&[3]);
    assert_eq!(a.blocked_count(), 1, "the slow fetch might still return 2");
    a.register(slow, &[4]).unwrap();
    assert_eq!((a.blocked_count(), a.minimal_local()), (1, 1));
    let nothing = a.finish(&[]);
    assert!(nothing.changes.positions && !nothing.changes.persisted);
    let row = |a: &Tracker| (a.minimal_local(), a.announced(), a.persisted_upto());
    assert_eq!(row(&a), (3, 3, 1));
    a.finish(&[4]);
    assert_eq!(row(&a), (4, 4, 4));
    a.check_invariants().unwrap();
}

/// Own echoes and unlisted instances never touch state (spec §6.4, §12.3), whatever value
/// they carry.
#[test]
fn echoes_and_unlisted_instances_are_ignored() {
    let mut sim = Sim::new(2, false);
    let echo = Op::Deliver { msg: 0, to: 1 };
    apply_all(
        &mut sim,
        &[Op::Stray { to: 0, value: 200 }, Op::Announce { w: 1 }, echo],
    );
    assert_eq!(sim.tracker(0).positions().len(), 2);
    let mut open = Sim::new(2, true);
    apply_all(&mut open, &[Op::Stray { to: 1, value: 200 }]); // from itself
    assert_eq!(open.tracker(1).minimal_local(), 1);
    sim.quiesce().unwrap();
    open.quiesce().unwrap();
}

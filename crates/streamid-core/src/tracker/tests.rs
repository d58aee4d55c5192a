//! Unit tests of the tracker: the spec's worked example and named interleavings.
use super::*;

fn fetch(t: &mut Tracker, ids: &[i64]) {
    let ticket = t.begin_fetch();
    t.register(ticket, ids).unwrap();
    t.check_invariants().unwrap();
}

/// Spec §6.3, row by row.
#[test]
fn worked_example_out_of_order_completion() {
    let mut t = Tracker::new("w", ["w"], [("w", 7)], 7);
    fetch(&mut t, &[8, 9, 10, 11]);
    let row = |t: &Tracker| (t.minimal_local(), t.announced(), t.persisted_upto());
    assert_eq!(row(&t), (7, 7, 7));
    t.finish(&[9]);
    assert_eq!((row(&t), t.blocked_count()), ((7, 7, 7), 1));
    t.finish(&[8]);
    assert_eq!((row(&t), t.blocked_count()), ((9, 9, 9), 0));
    t.finish(&[11]);
    assert_eq!((row(&t), t.blocked_count()), ((9, 9, 9), 1));
    t.finish(&[10]);
    assert_eq!((row(&t), t.blocked_count()), ((11, 11, 11), 0));
    t.check_invariants().unwrap();
}

/// Upstream #9424: an ID handed out but not yet registered must hold P back even when
/// another writer announces a larger position.
#[test]
fn fetch_in_flight_holds_p_below_its_ids() {
    let mut t = Tracker::new("a", ["a", "b"], [("a", 5), ("b", 5)], 5);
    let ticket = t.begin_fetch(); // the sequence will hand us 6
    // b was handed 7 and committed it; its announcement arrives first.
    t.advance("b", 7);
    assert_eq!(t.persisted_upto(), 5, "P must not pass the unregistered 6");
    assert!(t.writer_position("a") < 6);
    t.register(ticket, &[6]).unwrap();
    assert_eq!(t.persisted_upto(), 5);
    t.finish(&[6]);
    assert_eq!(t.persisted_upto(), 7);
    t.check_invariants().unwrap();
}

/// FIX-5 / spec §5.2 step 4: a cancelled fetch must release IDs it was blocking.
#[test]
fn cancelled_fetch_releases_blocked_ids() {
    let mut t = Tracker::new("a", ["a"], [("a", 1)], 1);
    let slow = t.begin_fetch(); // marker 1
    fetch(&mut t, &[2]);
    t.finish(&[2]);
    assert_eq!(t.minimal_local(), 1, "2 is blocked by the fetch in flight");
    t.cancel_fetch(slow);
    assert!(t.is_idle());
    assert_eq!((t.minimal_local(), t.persisted_upto()), (2, 2));
    t.check_invariants().unwrap();
}

#[test]
fn register_refuses_ids_not_above_marker() {
    let mut t = Tracker::new("a", ["a"], [("a", 10)], 10);
    let ticket = t.begin_fetch();
    let err = t.register(ticket, &[10]).unwrap_err();
    assert_eq!(err, RegisterError::NotAboveMarker { id: 10, marker: 10 });
    assert!(t.is_idle(), "the refused fetch must not stay in flight");
    let ticket = t.begin_fetch();
    assert_eq!(t.register(ticket, &[]), Err(RegisterError::Empty));
    assert!(t.is_idle());
}

#[test]
fn advance_ignores_own_and_unlisted_instances() {
    let mut t = Tracker::new("a", ["a", "b"], [("a", 3), ("b", 3)], 3);
    assert_eq!(t.advance("a", 100), Advance::IgnoredOwn);
    assert_eq!(t.advance("zombie", 100), Advance::IgnoredUnlisted);
    assert_eq!(t.persisted_upto(), 3);
    assert_eq!(t.positions().len(), 2);
    // Anyone-may-write streams learn new writers.
    let mut open = Tracker::new("a", Vec::<&str>::new(), Vec::<(&str, i64)>::new(), 3);
    assert!(matches!(open.advance("new", 9), Advance::Applied(_)));
    assert_eq!(open.positions().get("new"), Some(&9));
}

/// An idle writer follows the stream (spec §6.2 step 5); a smaller value never moves a
/// writer back.
#[test]
fn idle_writer_follows_and_advance_is_monotonic() {
    let mut t = Tracker::new("a", ["a", "b"], [("a", 3), ("b", 3)], 3);
    t.advance("b", 10);
    assert_eq!(t.persisted_upto(), 10);
    assert_eq!(t.announced(), 10);
    assert_eq!(
        t.minimal_local(),
        3,
        "the minimal position moves only by completion"
    );
    t.advance("b", 4);
    assert_eq!(t.writer_position("b"), 10);
}

/// Gaps stop the walk; P passes them only when the slowest writer's position does.
#[test]
fn gap_stops_the_heap_walk() {
    let mut t = Tracker::new("a", ["a", "b"], [("a", 1), ("b", 1)], 1);
    fetch(&mut t, &[2]);
    t.advance("b", 4); // b used 3 and 4
    // 2 still unfinished: P stays at 1.
    assert_eq!(t.persisted_upto(), 1);
    t.finish(&[2]);
    assert_eq!(t.persisted_upto(), 4);
}

#[test]
fn busy_own_position_holds_p() {
    let mut t = Tracker::new("a", ["a", "b"], [("a", 5), ("b", 5)], 5);
    fetch(&mut t, &[6, 7]);
    t.finish(&[7]);
    t.advance("b", 20);
    assert_eq!(t.persisted_upto(), 5, "6 is still open");
    t.finish(&[6]);
    // Idle again: a's next ID will exceed 20, and b has decided everything up to 20.
    assert_eq!(t.persisted_upto(), 20);
    assert_eq!(t.announced(), 20);
    assert_eq!(t.minimal_local(), 7);
}

/// IDs that are not unfinished are neither blocked nor pushed: a never-registered one
/// may still be undecided (it used to be pushed, letting `P` walk onto it).
#[test]
fn finish_ignores_unknown_ids_entirely() {
    let mut t = Tracker::new("a", ["a"], [("a", 1)], 1);
    fetch(&mut t, &[2]);
    let result = t.finish(&[3, 2, 2]);
    assert_eq!(
        result.unknown_ids, 2,
        "3 never registered, 2 finished twice"
    );
    assert_eq!((t.minimal_local(), t.persisted_upto()), (2, 2));
    assert!(t.known_finished.is_empty());
    let again = t.finish(&[4]);
    assert_eq!((again.unknown_ids, again.changes.any()), (1, false));
    assert!(t.known_finished.is_empty());
    t.check_invariants().unwrap();
}

/// Spec §6.1 step 4 runs `update_persisted` once per finished ID, so a finish of none
/// only releases blocked IDs; a cancelled fetch does run it (§5.2 step 4).
#[test]
fn finish_of_no_ids_does_not_update_p() {
    let mut t = Tracker::new("a", ["a", "b"], [("a", 5), ("b", 5)], 3);
    let result = t.finish(&[]);
    assert!(!result.changes.any());
    assert_eq!(t.persisted_upto(), 3);
    let ticket = t.begin_fetch();
    t.cancel_fetch(ticket); // runs update_persisted without a push
    assert_eq!(t.persisted_upto(), 5);
}

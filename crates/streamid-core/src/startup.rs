//! Building a [`Tracker`] from what startup read from the database (spec §4.2 steps 9–14,
//! §4.5).
//!
//! The backend reads recorded positions and decides the writer's starting position; this
//! module decides whether backing-table rows must be scanned (and from where), and turns the
//! scanned rows into `P` and the own position. It keeps the rule that rows are ordered by ID
//! only: instance values may be NULL and are never compared (FIX-8).

use std::collections::BTreeSet;

use crate::Tracker;

/// Startup state between reading `stream_positions` and scanning the backing tables.
///
/// Call, in order: [`load_position`](Self::load_position) for each `stream_positions` row,
/// [`set_start`](Self::set_start) for a writer, then [`scan_from`](Self::scan_from) to learn
/// whether (and from which ID) to scan the tables, and [`finish`](Self::finish) with the
/// rows found.
///
/// # Example
///
/// ```
/// use streamid_core::Startup;
///
/// // Writer "a" restarts. Both writers recorded 5, then committed 6 (a) and 7 (b) before
/// // their rows in stream_positions were updated. The sequence's last value, 7, is a row,
/// // so it is decided and becomes a's starting position (spec §4.4).
/// let mut s = Startup::new("a", ["a", "b"]);
/// s.load_position("a", 5);
/// s.load_position("b", 5);
/// s.set_start(7);
/// assert_eq!(s.scan_from(), Some(5));
/// let t = s.finish(7, [(Some("a"), 6), (Some("b"), 7)]);
/// assert_eq!(t.persisted_upto(), 7); // the scan skipped the committed run 6, 7
/// assert_eq!(t.minimal_local(), 6); // a's last own row
/// assert_eq!(t.announced(), 7);
/// ```
#[derive(Debug, Clone)]
pub struct Startup {
    tracker: Tracker,
    start: Option<i64>,
}

impl Startup {
    /// Begins startup for `own` with the configured writer list (empty: anyone may write).
    pub fn new<W, S>(own: &str, writers: W) -> Startup
    where
        W: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let writers: BTreeSet<String> =
            writers.into_iter().map(|w| w.as_ref().to_owned()).collect();
        Startup {
            tracker: Tracker::empty(own, writers),
            start: None,
        }
    }

    /// Step 9: a `stream_positions` row (internal value). Returns `false`, ignoring it, when
    /// the writer list is empty or does not contain the instance.
    pub fn load_position(&mut self, instance: &str, value: i64) -> bool {
        let writers = self.tracker.writers();
        if writers.is_empty() || !writers.contains(instance) {
            return false;
        }
        self.tracker.set_position(instance, value);
        true
    }

    /// Step 10: the writer's starting position (spec §4.4), a decided value.
    pub fn set_start(&mut self, start: i64) {
        self.start = Some(start);
        let own = self.tracker.own().to_owned();
        self.tracker.set_position(&own, start);
    }

    /// The ID from which the backing tables must be scanned (`m`, spec §4.5 case B), or
    /// `None` when no position is known and `P` comes from the table maxima (case A).
    pub fn scan_from(&self) -> Option<i64> {
        self.tracker.positions().values().copied().min()
    }

    /// Steps 11–14: recovers `P` and the own position from the scanned rows (ignored in case
    /// A), defaults missing writers to `P` and seeds `max_seen` and the announced position.
    ///
    /// `table_max` is `T`, the largest ID in the backing tables (0 if empty); `rows` are
    /// `(instance, id)` pairs with `id >= scan_from()`, in any order.
    pub fn finish<'a, R>(self, table_max: i64, rows: R) -> Tracker
    where
        R: IntoIterator<Item = (Option<&'a str>, i64)>,
    {
        let Startup { mut tracker, start } = self;
        let positions = tracker.positions();
        let mut largest_row = 0;
        match positions.values().copied().min() {
            None => tracker.set_persisted(table_max.max(1)),
            Some(m) => {
                tracker.set_persisted(m);
                let own = tracker.own().to_owned();
                let mut rows: Vec<(Option<&str>, i64)> =
                    rows.into_iter().filter(|&(_, id)| id >= m).collect();
                // By ID only: instance columns may be NULL (FIX-8, upstream #13585).
                rows.sort_unstable_by_key(|&(_, id)| id);
                largest_row = rows.last().map_or(0, |&(_, id)| id);
                let known = positions.values().copied().chain(start).fold(m, i64::max);
                tracker.seed_bounds(known.max(largest_row));
                let is_writer_entry = tracker.own_position().is_some();
                for (instance, id) in rows {
                    tracker.update_persisted(std::iter::once(id));
                    if is_writer_entry && instance == Some(own.as_str()) {
                        // Assignment, not maximum: the original's conservative behaviour.
                        tracker.set_position(&own, id);
                    }
                }
            }
        }
        tracker.default_missing_writers();
        tracker.seed_bounds(start.unwrap_or(0).max(largest_row));
        tracker
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_stream_writer_starts_at_one() {
        let mut s = Startup::new("a", ["a", "b"]);
        s.set_start(1);
        assert_eq!(s.scan_from(), Some(1));
        let t = s.finish(0, []);
        assert_eq!(t.persisted_upto(), 1);
        assert_eq!(t.positions().get("b"), Some(&1));
        assert_eq!(t.max_seen(), 1);
        t.check_invariants().unwrap();
    }

    #[test]
    fn reader_without_positions_takes_table_max() {
        let s = Startup::new("r", ["a"]);
        assert_eq!(s.scan_from(), None);
        let t = s.finish(42, []);
        assert_eq!(t.persisted_upto(), 42);
        assert_eq!(t.positions().get("a"), Some(&42));
        assert_eq!(t.positions().get("r"), None, "readers have no own entry");
    }

    #[test]
    fn anyone_may_write_gets_own_entry_at_p() {
        let mut s = Startup::new("x", Vec::<&str>::new());
        assert!(!s.load_position("y", 5), "empty W loads no positions");
        let t = s.finish(9, []);
        assert_eq!(t.persisted_upto(), 9);
        assert_eq!(t.positions().get("x"), Some(&9));
    }

    /// The scan lets P skip a committed run past a stale recorded position, and stops at
    /// the first gap; NULL instances are fine.
    #[test]
    fn scan_recovers_p_up_to_first_gap() {
        let mut s = Startup::new("r", ["a", "b"]);
        s.load_position("a", 10);
        s.load_position("b", 10);
        assert!(!s.load_position("removed", 3));
        let t = s.finish(
            14,
            [
                (Some("b"), 12),
                (None, 11),
                (Some("a"), 14),
                (Some("a"), 10),
            ],
        );
        assert_eq!(t.persisted_upto(), 12, "13 is a gap");
        assert_eq!(t.max_seen(), 14);
        assert_eq!(t.announced(), 14);
    }

    /// The own entry is assigned from own rows (possibly below start); max_seen keeps start.
    #[test]
    fn own_rows_assign_own_position() {
        let mut s = Startup::new("a", ["a", "b"]);
        s.load_position("a", 3);
        s.load_position("b", 8);
        s.set_start(10); // an ID of its own (spec §4.4): a gap
        let t = s.finish(9, [(Some("a"), 9), (Some("b"), 8)]);
        assert_eq!(t.persisted_upto(), 9);
        assert_eq!(
            t.minimal_local(),
            9,
            "assigned from the last own row, below start"
        );
        assert_eq!(t.max_seen(), 10, "start is known, so nobody waits for it");
        assert_eq!(t.announced(), 10);
        t.check_invariants().unwrap();
    }
}

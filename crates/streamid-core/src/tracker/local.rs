//! The tracker's local IDs: every registered ID above the own position, which of them are
//! unfinished, and the smallest unfinished one. The spec's `unfinished` (§3.1) is the
//! unfinished local IDs; its `blocked` is the others.
//!
//! Both used to be `BTreeSet`s. Removing a random ID from a 100k-entry B-tree misses the
//! cache on most levels, and made a completion with 100k IDs in flight 7× as expensive as
//! with one (`BENCHMARKS.md`, issue 2). Here a completion usually reads one entry of a sorted
//! array, at a guessed index, and sets one bit.
//!
//! # What each structure holds
//!
//! - `run`: local IDs in strictly increasing order. A registered ID above every ID in `run`
//!   is appended, which is the usual case because the sequence hands out increasing IDs.
//!   Releases pop from the front. `count_below` finds an ID by interpolation, so the
//!   first probe hits when the local IDs are consecutive.
//! - `finished`: one bit per entry of `run`, set when that ID has finished.
//! - `late`: the other local IDs: registered while `run` already held a larger ID, because a
//!   fetch that began earlier returned after a later one. This is rare, and each costs
//!   `O(log n)`. Kept apart because inserting into the middle of `run` could cost `O(n)`.
//! - `cursor`: an index into `run`, at the smallest unfinished ID there that is not a
//!   straggler. It steps forward over finished IDs, and back by one for each ID popped from
//!   the front, so it stays on the same ID.
//! - `stragglers`: the unfinished IDs that the cursor does not find: every unfinished ID in
//!   `late`, and the unfinished IDs in `run` before the cursor. (An ID in `run` gets there
//!   only when it is registered again after it finished. That is a caller's bug, but it is
//!   still handled exactly.)
//! - `unfinished_len`: the number of unfinished IDs.
//!
//! Memory is proportional to the local IDs held, whatever the IDs other writers take in
//! between: about 8 bytes and one bit per ID in `run`.
//!
//! # Invariant
//!
//! With `local = run ∪ late`:
//!
//! 1. `run` is strictly increasing and as long as `finished`. `late` is disjoint from `run`,
//!    and each of its IDs is below `run`'s last ID, so `late` is empty whenever `run` is.
//! 2. The unfinished IDs are the `run[i]` without `finished[i]`, and the `late` IDs that are
//!    stragglers. `unfinished_len` counts them.
//! 3. `stragglers = unfinished ∩ (late ∪ run[..cursor])`.
//! 4. `cursor == run.len()`, or `run[cursor]` is unfinished.
//!
//! By 3, every unfinished ID that is not a straggler is in `run[cursor..]`. `run` is sorted,
//! and by 4 `run[cursor]` is unfinished, so `min(unfinished)` is the smaller of `run[cursor]`
//! and the smallest straggler: `O(1)`, or `O(log n)` while there are stragglers.
//!
//! # Cost
//!
//! Finding an ID in `run` costs `O(log d)` when the interpolated guess is `d` entries off,
//! so at most `O(log n)`. `register` appends, in amortised `O(1)`. `finish` finds the ID,
//! sets its bit, and moves the cursor; the cursor never moves back, because `run` only grows
//! at its end, so each ID is stepped over once. A release pops each ID once. `late` IDs and
//! stragglers cost `O(log n)` each. Capacity is given back once `run` is a quarter full.

use std::collections::{BTreeSet, VecDeque};

/// Capacity below which `run` is not shrunk.
const MIN_CAPACITY: usize = 64;

/// The local IDs of one tracker; see the module documentation.
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalIds {
    /// Local IDs, strictly increasing.
    run: VecDeque<i64>,
    /// Whether `run[i]` has finished.
    finished: Bits,
    /// Local IDs registered below `run`'s last ID.
    late: BTreeSet<i64>,
    /// `run.len()`, or the index of an unfinished ID in `run` with every unfinished ID
    /// before it in `stragglers`.
    cursor: usize,
    /// Unfinished IDs in `late` or in `run[..cursor]`.
    stragglers: BTreeSet<i64>,
    /// The number of unfinished IDs.
    unfinished_len: usize,
}

impl LocalIds {
    /// The number of local IDs, finished or not.
    pub(crate) fn len(&self) -> usize {
        self.run.len() + self.late.len()
    }

    /// The number of unfinished IDs.
    pub(crate) fn unfinished_len(&self) -> usize {
        self.unfinished_len
    }

    /// The smallest unfinished ID.
    pub(crate) fn min_unfinished(&self) -> Option<i64> {
        let tracked = self.run.get(self.cursor).copied();
        match (tracked, self.stragglers.first()) {
            (Some(t), Some(&s)) => Some(t.min(s)),
            (t, s) => t.or(s.copied()),
        }
    }

    /// The smallest local ID.
    pub(crate) fn first(&self) -> Option<i64> {
        match (self.run.front(), self.late.first()) {
            (Some(&r), Some(&l)) => Some(r.min(l)),
            (r, l) => r.or(l).copied(),
        }
    }

    /// The largest local ID. It is in `run` (invariant 1).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn last(&self) -> Option<i64> {
        self.run.back().copied()
    }

    /// Whether `id` is a local ID that has finished (the spec's `blocked`).
    pub(crate) fn is_blocked(&self, id: i64) -> bool {
        match self.run_index(id) {
            Some(i) => self.finished.get(i),
            None => self.late.contains(&id) && !self.stragglers.contains(&id),
        }
    }

    /// Adds `id` as unfinished. Registering an unfinished ID again changes nothing;
    /// registering a finished one makes it unfinished again.
    pub(crate) fn register(&mut self, id: i64) {
        if self.run.back().is_none_or(|&last| id > last) {
            // The usual case. Invariant 3 holds because the new index is not below the
            // cursor; 4 because the cursor either pointed at an unfinished ID already or was
            // `run.len()`, which is now the new ID's index.
            self.run.push_back(id);
            self.finished.push_back(false);
            self.unfinished_len += 1;
        } else if let Some(i) = self.run_index(id) {
            if self.finished.get(i) {
                self.finished.set(i, false);
                self.unfinished_len += 1;
                // `run[cursor]` is unfinished and `id` was not, so `i != cursor`.
                debug_assert_ne!(i, self.cursor, "{id} was finished, yet at the cursor");
                if i < self.cursor {
                    self.stragglers.insert(id);
                }
            }
        } else if !self.stragglers.contains(&id) {
            // A new `late` ID, or a finished one registered again.
            self.late.insert(id);
            self.stragglers.insert(id);
            self.unfinished_len += 1;
        }
        debug_assert!(self.cursor_is_valid());
    }

    /// Marks `id` finished. Returns `false` if it was not unfinished; nothing changes then.
    pub(crate) fn finish(&mut self, id: i64) -> bool {
        match self.run_index(id) {
            Some(i) if !self.finished.get(i) => {
                self.finished.set(i, true);
                if i < self.cursor {
                    self.stragglers.remove(&id);
                } else if i == self.cursor {
                    // Invariant 4: step to the next unfinished ID. The IDs stepped over are
                    // finished, so invariant 3 still holds.
                    self.cursor += 1;
                    while self.cursor < self.run.len() && self.finished.get(self.cursor) {
                        self.cursor += 1;
                    }
                }
            }
            Some(_) => return false,
            None => {
                // In `late`, the unfinished IDs are the stragglers (invariant 3).
                if !self.stragglers.remove(&id) {
                    return false;
                }
            }
        }
        self.unfinished_len -= 1;
        debug_assert!(self.cursor_is_valid());
        true
    }

    /// The largest local ID below `bound`. Costs `O(log n)`.
    pub(crate) fn last_below(&self, bound: i64) -> Option<i64> {
        let from_run = self.count_below(bound).checked_sub(1);
        let from_run = from_run.and_then(|i| self.run.get(i)).copied();
        let from_late = self.late.range(..bound).next_back().copied();
        from_run.max(from_late)
    }

    /// Removes and returns the smallest local ID if it is below `bound`. The caller
    /// guarantees `bound <= min_unfinished()`: only finished IDs are released.
    pub(crate) fn pop_below(&mut self, bound: i64) -> Option<i64> {
        let front = self.run.front().copied().filter(|&id| id < bound);
        let late = self.late.first().copied().filter(|&id| id < bound);
        // The smaller first: invariant 1 then holds after every pop, since `run`'s last ID
        // leaves only after every `late` ID below it.
        let id = match (front, late) {
            (Some(r), Some(l)) if l < r => self.late.pop_first(),
            (Some(_), _) => {
                // A released ID is finished, so the cursor is past it (invariant 4).
                debug_assert!(self.finished.get(0), "releasing the unfinished {front:?}");
                debug_assert!(self.cursor > 0);
                self.cursor = self.cursor.saturating_sub(1);
                self.finished.pop_front();
                let id = self.run.pop_front();
                let capacity = self.run.capacity();
                if capacity > MIN_CAPACITY && self.run.len() < capacity / 4 {
                    self.run.shrink_to((2 * self.run.len()).max(MIN_CAPACITY));
                    self.finished.shrink();
                }
                id
            }
            (None, Some(l)) => {
                debug_assert!(
                    !self.stragglers.contains(&l),
                    "releasing the unfinished {l}"
                );
                self.late.pop_first()
            }
            (None, None) => None,
        };
        debug_assert!(self.cursor_is_valid());
        id
    }

    /// The index of `id` in `run`.
    fn run_index(&self, id: i64) -> Option<usize> {
        let i = self.count_below(id);
        (self.run.get(i) == Some(&id)).then_some(i)
    }

    /// The number of IDs in `run` below `x`. Guesses the index by linear interpolation between
    /// `run`'s ends, then gallops from the guess and bisects: `O(log d)` probes for a guess
    /// `d` entries off, none far from the guess.
    fn count_below(&self, x: i64) -> usize {
        let (Some(&first), Some(&last)) = (self.run.front(), self.run.back()) else {
            return 0;
        };
        if x <= first {
            return 0;
        }
        if x > last {
            return self.run.len();
        }
        // Now `first < x <= last`, so `span > 0` and `run.len() >= 2`. The answer `hi` is
        // kept with `run[lo] < x <= run[hi]`.
        let top = self.run.len() - 1;
        let span = u128::from(last.abs_diff(first));
        let offset = u128::from(x.abs_diff(first));
        // `offset <= span`, so the guess is at most `top`.
        let guess = usize::try_from(offset * (top as u128) / span).unwrap_or(top);
        let (mut lo, mut hi) = (0, top);
        let mut step = 1;
        if self.run[guess] < x {
            lo = guess;
            while step < hi - lo {
                if self.run[lo + step] >= x {
                    hi = lo + step;
                    break;
                }
                lo += step;
                step *= 2;
            }
        } else {
            hi = guess;
            while step < hi - lo {
                if self.run[hi - step] < x {
                    lo = hi - step;
                    break;
                }
                hi -= step;
                step *= 2;
            }
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.run[mid] < x {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }

    /// Invariant 4, cheaply, for `debug_assert!`s.
    fn cursor_is_valid(&self) -> bool {
        self.run
            .get(self.cursor)
            .map_or(self.cursor == self.run.len(), |id| {
                !self.finished.get(self.cursor) && !self.stragglers.contains(id)
            })
    }

    /// Checks invariants 1–4 in `O(n)`, plus `O(log n)` per `late` ID or straggler; returns
    /// the first violation.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some((a, b)) = self
            .run
            .iter()
            .zip(self.run.iter().skip(1))
            .find(|(a, b)| a >= b)
        {
            return Err(format!("run not strictly increasing: {a} then {b}"));
        }
        if self.finished.len() != self.run.len() {
            return Err(format!(
                "{} finished bits for {} IDs in run",
                self.finished.len(),
                self.run.len()
            ));
        }
        if let Some(&l) = self.late.last()
            && self.run.back().is_none_or(|&last| l >= last)
        {
            return Err(format!(
                "late ID {l} not below run's last {:?}",
                self.last()
            ));
        }
        if self.cursor > self.run.len() {
            return Err(format!("cursor {} past run's end", self.cursor));
        }
        // Walk `run` in order, checking the bits and which IDs are stragglers.
        let (mut unfinished, mut stragglers) = (0, 0);
        for (i, &id) in self.run.iter().enumerate() {
            let is_unfinished = !self.finished.get(i);
            unfinished += usize::from(is_unfinished);
            let is_straggler = self.stragglers.contains(&id);
            stragglers += usize::from(is_straggler);
            if is_straggler != (is_unfinished && i < self.cursor) {
                return Err(format!(
                    "{id} (unfinished: {is_unfinished}, index {i}, cursor {}) straggler: \
                     {is_straggler}",
                    self.cursor
                ));
            }
            if i == self.cursor && !is_unfinished {
                return Err(format!("the cursor points at the finished {id}"));
            }
        }
        for &id in &self.late {
            let is_straggler = self.stragglers.contains(&id);
            unfinished += usize::from(is_straggler);
            stragglers += usize::from(is_straggler);
            if self.run_index(id).is_some() {
                return Err(format!("{id} both in run and late"));
            }
        }
        if stragglers != self.stragglers.len() {
            return Err(format!(
                "{} stragglers, {stragglers} of them local",
                self.stragglers.len()
            ));
        }
        if unfinished != self.unfinished_len {
            return Err(format!(
                "{unfinished} unfinished IDs, counted {}",
                self.unfinished_len
            ));
        }
        Ok(())
    }
}

/// A deque of bits, stored 64 to a word.
#[derive(Debug, Clone, Default)]
struct Bits {
    /// The bits; bit `j` of the sequence is bit `j % 64` of `words[j / 64]`.
    words: VecDeque<u64>,
    /// Bits of `words[0]` already popped from the front, `< 64`.
    skip: usize,
    /// The number of bits.
    len: usize,
}

impl Bits {
    #[cfg(any(test, feature = "testing"))]
    fn len(&self) -> usize {
        self.len
    }

    /// Bit `i`; `false` past the end.
    fn get(&self, i: usize) -> bool {
        let j = self.skip + i;
        i < self.len
            && self
                .words
                .get(j / 64)
                .is_some_and(|w| w >> (j % 64) & 1 == 1)
    }

    /// Sets bit `i`; nothing past the end.
    fn set(&mut self, i: usize, value: bool) {
        let j = self.skip + i;
        if i < self.len
            && let Some(word) = self.words.get_mut(j / 64)
        {
            let mask = 1 << (j % 64);
            if value {
                *word |= mask;
            } else {
                *word &= !mask;
            }
        }
    }

    fn push_back(&mut self, value: bool) {
        if (self.skip + self.len).is_multiple_of(64) {
            self.words.push_back(0);
        }
        self.len += 1;
        self.set(self.len - 1, value);
    }

    fn pop_front(&mut self) {
        if self.len == 0 {
            return;
        }
        self.len -= 1;
        self.skip += 1;
        if self.len == 0 {
            self.words.clear();
            self.skip = 0;
        } else if self.skip == 64 {
            self.words.pop_front();
            self.skip = 0;
        }
    }

    fn shrink(&mut self) {
        self.words.shrink_to(self.words.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ids(local: &LocalIds) -> Vec<i64> {
        let mut all: Vec<i64> = local.run.iter().chain(&local.late).copied().collect();
        all.sort_unstable();
        all
    }

    fn checked(local: &LocalIds) {
        local.check().unwrap_or_else(|e| panic!("{e}: {local:?}"));
    }

    #[test]
    fn in_order_completion_moves_the_cursor() {
        let mut l = LocalIds::default();
        for id in [8, 9, 10, 11] {
            l.register(id);
        }
        assert!(l.finish(9));
        assert_eq!((l.min_unfinished(), l.cursor), (Some(8), 0));
        assert!(l.finish(8));
        assert_eq!((l.min_unfinished(), l.cursor), (Some(10), 2));
        assert!(!l.finish(8), "finished twice");
        assert!(l.is_blocked(9) && !l.is_blocked(10) && !l.is_blocked(12));
        assert_eq!(l.last_below(10), Some(9));
        assert_eq!(
            (l.pop_below(10), l.pop_below(10), l.pop_below(10)),
            (Some(8), Some(9), None)
        );
        assert_eq!((l.cursor, l.len(), l.first()), (0, 2, Some(10)));
        checked(&l);
    }

    /// A fetch that began earlier registers after a later one: its ID goes to `late` and is
    /// a straggler until it finishes.
    #[test]
    fn late_registration() {
        let mut l = LocalIds::default();
        l.register(12);
        l.register(13);
        l.register(11);
        assert_eq!(l.late.iter().copied().collect::<Vec<_>>(), [11]);
        assert_eq!(
            (l.min_unfinished(), l.first(), l.last()),
            (Some(11), Some(11), Some(13))
        );
        checked(&l);
        assert!(l.finish(12));
        assert_eq!(l.min_unfinished(), Some(11));
        assert!(l.finish(11));
        assert!(!l.finish(11));
        assert_eq!(l.min_unfinished(), Some(13));
        assert!(l.is_blocked(11) && l.is_blocked(12));
        assert_eq!(l.last_below(13), Some(12));
        assert_eq!((l.pop_below(13), l.pop_below(13)), (Some(11), Some(12)));
        assert_eq!(ids(&l), [13]);
        checked(&l);
    }

    /// A caller's bug, handled as the ordered sets did: a finished ID registered again is
    /// unfinished again, even behind the cursor.
    #[test]
    fn registering_a_finished_id_again() {
        let mut l = LocalIds::default();
        for id in [1, 2, 3] {
            l.register(id);
        }
        l.finish(1);
        l.finish(2);
        assert_eq!(l.cursor, 2);
        l.register(1);
        assert_eq!((l.min_unfinished(), l.unfinished_len()), (Some(1), 2));
        l.register(1);
        assert_eq!(l.unfinished_len(), 2, "already unfinished: no change");
        checked(&l);
        l.finish(1);
        assert_eq!(l.min_unfinished(), Some(3));
        checked(&l);
    }

    #[test]
    fn capacity_is_given_back() {
        let mut l = LocalIds::default();
        for id in 1..=10_000 {
            l.register(id);
        }
        for id in 1..=9_990 {
            l.finish(id);
        }
        while l.pop_below(9_991).is_some() {}
        assert!(l.run.capacity() <= 4 * MIN_CAPACITY, "{}", l.run.capacity());
        assert!(l.finished.words.capacity() <= 4, "{:?}", l.finished);
        checked(&l);
    }

    /// The search finds every ID in few probes when the IDs are spread unevenly.
    #[test]
    fn count_below_with_uneven_gaps() {
        let mut l = LocalIds::default();
        let run: Vec<i64> = (0..200)
            .map(|i| i * i * i)
            .chain([10_000_000, 1 << 40, i64::MAX])
            .collect();
        for &id in &run {
            l.register(id);
        }
        for x in run
            .iter()
            .flat_map(|&id| [id - 1, id, id.saturating_add(1)])
        {
            let expected = run.partition_point(|&id| id < x);
            assert_eq!(l.count_below(x), expected, "count_below({x})");
        }
        assert_eq!(l.count_below(i64::MIN), 0);
        checked(&l);
    }

    #[test]
    fn bits_across_words() {
        let mut b = Bits::default();
        for i in 0..200 {
            b.push_back(i % 3 == 0);
        }
        for _ in 0..70 {
            b.pop_front();
        }
        assert_eq!(b.len(), 130);
        assert!((0..130).all(|i| b.get(i) == ((i + 70) % 3 == 0)));
        b.set(129, true);
        b.set(0, true);
        assert!(b.get(129) && b.get(0) && !b.get(130));
        while b.len() > 0 {
            b.pop_front();
        }
        assert!(b.words.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Register(i64),
        Finish(i64),
        /// Release everything below the smallest unfinished ID, or below this if smaller.
        Release(i64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0i64..60).prop_map(Op::Register),
            4 => (0i64..60).prop_map(Op::Finish),
            1 => (0i64..60).prop_map(Op::Release),
        ]
    }

    proptest! {
        /// Against two ordered sets, the representation this replaced.
        #[test]
        fn matches_ordered_sets(ops in proptest::collection::vec(op(), 0..200)) {
            let mut l = LocalIds::default();
            let (mut local, mut unfinished) = (BTreeSet::new(), BTreeSet::new());
            for op in ops {
                match op {
                    Op::Register(id) => {
                        l.register(id);
                        local.insert(id);
                        unfinished.insert(id);
                    }
                    Op::Finish(id) => {
                        prop_assert_eq!(l.finish(id), unfinished.remove(&id));
                    }
                    Op::Release(at) => {
                        let bound = unfinished.first().map_or(at, |&u: &i64| u.min(at));
                        let expected: Vec<i64> = local.range(..bound).copied().collect();
                        prop_assert_eq!(l.last_below(bound), expected.last().copied());
                        let mut popped = Vec::new();
                        while let Some(id) = l.pop_below(bound) {
                            popped.push(id);
                        }
                        prop_assert_eq!(popped, expected);
                        local.retain(|&id| id >= bound);
                    }
                }
                l.check().map_err(TestCaseError::fail)?;
                prop_assert_eq!(ids(&l), local.iter().copied().collect::<Vec<_>>());
                prop_assert_eq!(l.len(), local.len());
                prop_assert_eq!(l.unfinished_len(), unfinished.len());
                prop_assert_eq!(l.min_unfinished(), unfinished.first().copied());
                prop_assert_eq!(l.first(), local.first().copied());
                prop_assert_eq!(l.last(), local.last().copied());
                for id in -1..61 {
                    let blocked = local.contains(&id) && !unfinished.contains(&id);
                    prop_assert_eq!(l.is_blocked(id), blocked, "is_blocked({})", id);
                }
            }
        }
    }
}

//! The position tracker: one process's bookkeeping for one stream (spec §3, §5.2, §6).
//!
//! It owns the sets of local IDs that are in flight, unfinished and finished-but-blocked,
//! every writer's position, the persisted-up-to position `P`, the largest ID seen and the
//! announced position. It keeps the invariants of spec §3.2 — above all: `P` and every
//! position only ever cover *decided* IDs — provided its caller reports facts truthfully
//! (an ID is finished only once its transaction's outcome is known; `advance` carries only
//! positions another process announced).
//!
//! It must never do I/O, read a clock or panic on any input: the async layer calls it from
//! `Drop` implementations, where a panic would abort.
//!
//! The local IDs (the spec's `unfinished` and `blocked`) live in [`local::LocalIds`].

#[cfg(any(test, feature = "testing"))]
mod invariants;
mod local;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use local::LocalIds;

/// One process's position state for one stream.
///
/// # Caller's contract
///
/// Methods fall into four groups; the async layer holds one mutex around the tracker and
/// calls them in short critical sections, never across I/O:
///
/// - **Queries** (`&self`): [`persisted_upto`](Self::persisted_upto),
///   [`writer_position`](Self::writer_position), [`announced`](Self::announced),
///   [`minimal_local`](Self::minimal_local), [`positions`](Self::positions),
///   [`max_seen`](Self::max_seen), [`is_idle`](Self::is_idle) and the counters.
/// - **Local commands**: [`begin_fetch`](Self::begin_fetch) before asking the sequence for
///   IDs, then exactly one of [`register`](Self::register) (IDs received, in the same
///   critical section that receives them) or [`cancel_fetch`](Self::cancel_fetch) (the fetch
///   failed or was dropped). Every registered ID is later passed to
///   [`finish`](Self::finish) exactly once, when its transaction's outcome is known.
/// - **Inputs from other processes**: [`advance`](Self::advance).
/// - **Outputs**: every command returns [`Changes`], telling the caller what to publish
///   after releasing the lock (watchers, announcer, the `stream_positions` row).
#[derive(Debug, Clone)]
pub struct Tracker {
    /// This process's instance name.
    own: String,
    /// The configured writer list; empty means "anyone may write" (spec §2.2).
    writers: BTreeSet<String>,
    /// `positions[own]`, the minimal local position; `None` for readers (spec §6.5).
    own_position: Option<i64>,
    /// `positions[w]` for every `w != own`.
    others: BTreeMap<String, i64>,
    /// `min(others)`, cached because `update_persisted` needs it on every completion and
    /// only `advance` changes `others`.
    min_others: Option<i64>,
    /// One marker per fetch in flight (a multiset: marker -> count). Each marker is the
    /// value of `max_seen` when the fetch began; every ID the fetch returns is `> marker`.
    in_flight: BTreeMap<i64, u32>,
    /// Every registered local ID above the own position: the spec's `unfinished` ones and
    /// the finished ones not yet below every unfinished or possibly-in-flight ID (the spec's
    /// `blocked`, which is `local` minus `unfinished`). Empty whenever idle.
    ///
    /// Kept instead of `blocked` for speed (`benches/tracker.rs`, `BENCHMARKS.md`):
    /// `register` appends to a sorted array (new IDs exceed every marker), a release pops a
    /// prefix, and `finish` sets the ID's bit and moves a cursor to the smallest unfinished
    /// ID. With 100k IDs completing in random order `blocked` holds ~N·ln N ≈ 1.2M IDs, and
    /// ordered sets missed the cache on each of their levels.
    local: LocalIds,
    /// The persisted-up-to position: every ID `<= persisted` is decided.
    persisted: i64,
    /// Decided values above `persisted` (a min-heap); lets `persisted` walk over runs with
    /// no gap. Values `<= persisted` are dropped. Blocked IDs are not pushed while they
    /// stay in `local` (the walk looks them up there) but when released, if still above
    /// `persisted`: the spec's `known_finished` is this heap plus the blocked IDs.
    known_finished: BinaryHeap<Reverse<i64>>,
    /// The largest ID known to have been allocated by anyone. `>= persisted`.
    max_seen: i64,
    /// What this process publishes as its own position. `>= persisted`, `>= own_position`.
    announced: i64,
}

/// Proof that a fetch was started with [`Tracker::begin_fetch`]; hand it back to
/// [`Tracker::register`] or [`Tracker::cancel_fetch`].
///
/// Deliberately neither `Clone` nor `Copy`: each fetch ends exactly once.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a fetch in flight holds the stream back until registered or cancelled"]
pub struct FetchTicket {
    marker: i64,
}

impl FetchTicket {
    /// The marker: `max_seen` when the fetch began. Every ID the fetch may return is above it.
    pub fn marker(&self) -> i64 {
        self.marker
    }
}

/// What a command changed, so the caller knows what to publish (spec §6.6).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// The persisted-up-to position moved.
    pub persisted: bool,
    /// The announced position moved (poke the announcer; maybe write `stream_positions`).
    pub announced: bool,
    /// Some writer's position moved (own or other).
    pub positions: bool,
}

impl Changes {
    /// Whether anything observable changed.
    pub fn any(&self) -> bool {
        self.persisted || self.announced || self.positions
    }
}

/// The result of [`Tracker::finish`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Finish {
    /// What changed.
    pub changes: Changes,
    /// IDs that were not unfinished (finished twice, or never registered). They were
    /// ignored; a non-zero count is a bug in the caller and should be logged.
    pub unknown_ids: usize,
}

/// The result of [`Tracker::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Advance {
    /// The position was applied.
    Applied(Changes),
    /// The instance is this process: its own position only moves by local completion.
    IgnoredOwn,
    /// The writer list is non-empty and does not contain the instance (a removed writer's
    /// late message, or a process running an old writer list).
    IgnoredUnlisted,
}

/// [`Tracker::register`] refused the IDs a fetch returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterError {
    /// An ID is not above the fetch's marker: the sequence handed out a value at or below
    /// one already known to be allocated, so it went backwards (a `setval` lowered it) or
    /// caches values per connection. The fetch was cancelled; the IDs must not be used.
    NotAboveMarker {
        /// The offending ID.
        id: i64,
        /// The fetch's marker.
        marker: i64,
    },
    /// The fetch returned no IDs at all. The fetch was cancelled.
    Empty,
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterError::NotAboveMarker { id, marker } => write!(
                f,
                "the sequence returned {id}, not above {marker} which was already allocated: \
                 it went backwards or caches values"
            ),
            RegisterError::Empty => write!(f, "the sequence returned no IDs"),
        }
    }
}

impl std::error::Error for RegisterError {}

impl Tracker {
    /// Creates a tracker from an initial state, without a database: this process's
    /// instance name, the configured writers (empty: anyone may write), known positions
    /// (the own entry, if present, is the minimal local position) and the persisted-up-to
    /// position.
    ///
    /// Values are internal (positive). Positions are clamped to at least `persisted`
    /// being covered: `max_seen` and `announced` start at the largest value given. Every
    /// listed writer without a position starts at `persisted` (spec §4.2 step 12); with an
    /// empty writer list the own entry defaults to `persisted` (step 14). For startup from a
    /// database, use [`Startup`](crate::Startup).
    ///
    /// # Example
    ///
    /// ```
    /// use streamid_core::Tracker;
    /// let t = Tracker::new("a", ["a", "b"], [("b", 12)], 10);
    /// assert_eq!(t.persisted_upto(), 10);
    /// assert_eq!(t.writer_position("a"), 12); // announced: idle, follows max seen
    /// assert_eq!(t.minimal_local(), 10);
    /// ```
    pub fn new<W, P, S>(own: &str, writers: W, positions: P, persisted: i64) -> Tracker
    where
        W: IntoIterator<Item = S>,
        P: IntoIterator<Item = (S, i64)>,
        S: AsRef<str>,
    {
        let writers: BTreeSet<String> =
            writers.into_iter().map(|w| w.as_ref().to_owned()).collect();
        let persisted = persisted.max(1);
        let mut t = Tracker::empty(own, writers);
        t.persisted = persisted;
        for (w, p) in positions {
            t.set_position(w.as_ref(), p);
        }
        t.default_missing_writers();
        t.recompute_min_others();
        let max = t.all_positions().fold(persisted, i64::max);
        t.max_seen = max;
        t.announced = max;
        t
    }

    /// A tracker with nothing known: `P = max_seen = announced = 1` (ID 1 counts as
    /// persisted, spec §10.3).
    pub(crate) fn empty(own: &str, writers: BTreeSet<String>) -> Tracker {
        Tracker {
            own: own.to_owned(),
            writers,
            own_position: None,
            others: BTreeMap::new(),
            min_others: None,
            in_flight: BTreeMap::new(),
            local: LocalIds::default(),
            persisted: 1,
            known_finished: BinaryHeap::new(),
            max_seen: 1,
            announced: 1,
        }
    }

    // ----- queries -------------------------------------------------------------------

    /// This process's instance name.
    pub fn own(&self) -> &str {
        &self.own
    }

    /// The persisted-up-to position `P`: every ID `<= P` is decided.
    pub fn persisted_upto(&self) -> i64 {
        self.persisted
    }

    /// The announced position: what this process publishes as its own position.
    pub fn announced(&self) -> i64 {
        self.announced
    }

    /// `current_token_for_writer(w)` (spec §6.5): the announced position for `own`;
    /// otherwise `max(positions[w], P)`, an unknown writer counting as `P`.
    pub fn writer_position(&self, writer: &str) -> i64 {
        if writer == self.own {
            return self.announced;
        }
        self.others
            .get(writer)
            .map_or(self.persisted, |&p| p.max(self.persisted))
    }

    /// `positions[own]`, or `P` for a process without an own entry (a reader).
    pub fn minimal_local(&self) -> i64 {
        self.own_position.unwrap_or(self.persisted)
    }

    /// A copy of every known position, the own entry being the minimal local position.
    pub fn positions(&self) -> BTreeMap<String, i64> {
        let mut map = self.others.clone();
        if let Some(p) = self.own_position {
            map.insert(self.own.clone(), p);
        }
        map
    }

    /// The largest ID known to have been allocated by anyone.
    pub fn max_seen(&self) -> i64 {
        self.max_seen
    }

    /// Whether this process has neither unfinished IDs nor fetches in flight.
    pub fn is_idle(&self) -> bool {
        self.local.unfinished_len() == 0 && self.in_flight.is_empty()
    }

    /// The configured writers (empty: anyone may write).
    pub fn writers(&self) -> &BTreeSet<String> {
        &self.writers
    }

    /// Whether this process may allocate: it is listed, or the list is empty.
    pub fn is_writer(&self) -> bool {
        self.writers.is_empty() || self.writers.contains(&self.own)
    }

    /// Number of local IDs allocated and not finished.
    pub fn unfinished_count(&self) -> usize {
        self.local.unfinished_len()
    }

    /// The smallest local unfinished ID.
    pub fn min_unfinished(&self) -> Option<i64> {
        self.local.min_unfinished()
    }

    /// Number of fetches in flight.
    pub fn in_flight_count(&self) -> usize {
        self.in_flight.values().map(|&c| c as usize).sum()
    }

    /// Number of local IDs finished but held back by a smaller unfinished ID.
    pub fn blocked_count(&self) -> usize {
        // `unfinished ⊆ local`.
        self.local.len().saturating_sub(self.local.unfinished_len())
    }

    // ----- local commands --------------------------------------------------------------

    /// Starts a fetch (spec §5.2 step 1): records `max_seen` as a marker, which keeps `P`
    /// and the announced position below every ID the fetch can return.
    pub fn begin_fetch(&mut self) -> FetchTicket {
        let marker = self.max_seen;
        *self.in_flight.entry(marker).or_insert(0) += 1;
        FetchTicket { marker }
    }

    /// Registers the IDs a fetch returned (spec §5.2 step 3) and ends the fetch. Call it in
    /// the same critical section that receives the IDs.
    ///
    /// # Errors
    ///
    /// Refuses IDs not above the marker (see [`RegisterError`]); the fetch is then cancelled
    /// as by [`cancel_fetch`](Self::cancel_fetch) and the IDs must not be used.
    pub fn register(&mut self, ticket: FetchTicket, ids: &[i64]) -> Result<(), RegisterError> {
        let marker = ticket.marker;
        let problem = match ids.iter().copied().min() {
            None => Some(RegisterError::Empty),
            Some(low) if low <= marker => Some(RegisterError::NotAboveMarker { id: low, marker }),
            Some(_) => None,
        };
        if let Some(err) = problem {
            self.cancel_fetch(ticket);
            return Err(err);
        }
        for &id in ids {
            self.local.register(id);
        }
        if let Some(&high) = ids.iter().max() {
            self.max_seen = self.max_seen.max(high);
        }
        self.remove_marker(marker);
        Ok(())
    }

    /// Ends a fetch that failed or was dropped before its IDs were registered (spec §5.2
    /// step 4). IDs the server may have handed out become gaps. Releases IDs the marker was
    /// holding back.
    pub fn cancel_fetch(&mut self, ticket: FetchTicket) -> Changes {
        let before = self.marks();
        self.remove_marker(ticket.marker);
        self.release_blocked(true);
        self.update_persisted(std::iter::empty());
        self.changes_since(before)
    }

    /// Finishes local IDs whose transactions' outcomes are known (spec §6.1). The outcome
    /// (committed or not) does not affect the state.
    ///
    /// IDs that are not unfinished are ignored entirely and counted in
    /// [`Finish::unknown_ids`]: neither blocked nor pushed as decided values (an ID never
    /// registered may still be undecided, and a second finish adds nothing).
    pub fn finish(&mut self, ids: &[i64]) -> Finish {
        let before = self.marks();
        let mut unknown_ids = 0;
        for &id in ids {
            // Step 1: leaving `unfinished` makes it blocked (it stays in `local`), which also
            // counts as step 4's push (see `known_finished`).
            if !self.local.finish(id) {
                unknown_ids += 1;
            }
        }
        // §6.1 step 4 runs `update_persisted` once per finished ID; with none, not at all.
        let update = unknown_ids < ids.len();
        self.release_blocked(update);
        if update {
            self.update_persisted(std::iter::empty());
        }
        Finish {
            changes: self.changes_since(before),
            unknown_ids,
        }
    }

    // ----- inputs from other processes -----------------------------------------------

    /// Applies another writer's announced position (spec §6.4). Idempotent and
    /// commutative: duplicated or reordered messages are harmless.
    pub fn advance(&mut self, instance: &str, value: i64) -> Advance {
        if instance == self.own {
            return Advance::IgnoredOwn;
        }
        if !self.writers.is_empty() && !self.writers.contains(instance) {
            return Advance::IgnoredUnlisted;
        }
        let before = self.marks();
        let entry = self.others.entry(instance.to_owned()).or_insert(0);
        let raised = value > *entry;
        if raised {
            *entry = value;
            self.recompute_min_others();
        }
        self.max_seen = self.max_seen.max(value);
        self.update_persisted(std::iter::once(value));
        let mut changes = self.changes_since(before);
        changes.positions |= raised;
        Advance::Applied(changes)
    }

    // ----- internals -----------------------------------------------------------------

    /// §6.1 steps 2–3: releases the blocked IDs below every unfinished or possibly-in-flight
    /// ID (all of them when idle), raising the own position to the largest. They leave
    /// `local` and are pushed onto `known_finished` if still above `P`; when
    /// `update_follows`, `P` is first raised as `update_persisted` will raise it, so that
    /// IDs it covers are never pushed.
    fn release_blocked(&mut self, update_follows: bool) {
        let bound = if self.is_idle() {
            i64::MAX
        } else {
            self.bound()
        };
        // Everything in `local` below `bound` is finished, since `bound <= min(unfinished)`.
        if self.local.first().is_none_or(|low| low >= bound) {
            return;
        }
        let Some(new_cur) = self.local.last_below(bound) else {
            return;
        };
        let cur = self.own_position.unwrap_or(0);
        self.own_position = Some(cur.max(new_cur));
        self.announced = self.announced.max(cur).max(new_cur);
        if update_follows {
            self.raise_persisted();
        }
        // Each ID leaves `local` once, so this loop is amortised O(1) per ID.
        while let Some(id) = self.local.pop_below(bound) {
            self.push_known(id);
        }
    }

    /// Whether `id` is blocked: a local ID finished but not released.
    fn is_blocked(&self, id: i64) -> bool {
        self.local.is_blocked(id)
    }

    /// The smallest ID a local unfinished ID or a fetch in flight may hold:
    /// `min(min(unfinished), min(in_flight) + 1)`.
    fn bound(&self) -> i64 {
        let unfinished = self.local.min_unfinished().unwrap_or(i64::MAX);
        let in_flight = self
            .in_flight
            .first_key_value()
            .map_or(i64::MAX, |(&m, _)| m.saturating_add(1));
        unfinished.min(in_flight)
    }

    /// §6.2 `update_persisted`, for a batch of pushed values (the state equals pushing and
    /// updating one by one, because step 5 follows the walk). Step 1's push follows step 3
    /// here, which only saves pushing values the walk would pop at once.
    pub(crate) fn update_persisted(&mut self, pushed: impl Iterator<Item = i64>) {
        self.raise_persisted();
        for v in pushed {
            self.push_known(v);
        }
        // Step 4, the walk over `known_finished`: the heap and the blocked IDs.
        while let Some(next) = self.persisted.checked_add(1) {
            match self.known_finished.peek() {
                Some(&Reverse(top)) if top <= self.persisted => {
                    self.known_finished.pop();
                }
                Some(&Reverse(top)) if top == next => {
                    self.known_finished.pop();
                    self.persisted = next;
                }
                _ if self.is_blocked(next) => self.persisted = next,
                _ => break,
            }
        }
        // After the walk, so that announced >= P always (I4).
        self.announced = self.announced.max(self.persisted);
        if self.is_idle() {
            self.announced = self.announced.max(self.max_seen);
        }
        debug_assert!(
            self.max_seen >= self.persisted,
            "max_seen {} must never be below P {}",
            self.max_seen,
            self.persisted
        );
    }

    /// §6.2 steps 2–3: `P = max(P, min_curr)`.
    fn raise_persisted(&mut self) {
        let our = self.own_position.unwrap_or(0);
        let mut min_curr = self.min_others.unwrap_or(our);
        // An idle process's next ID exceeds max_seen, so its own (maybe old) position must
        // not hold P back; a busy one's must.
        if our != 0 && !self.is_idle() {
            min_curr = min_curr.min(our);
        }
        self.persisted = self.persisted.max(min_curr);
    }

    /// §6.2 step 1: pushes a decided value onto `known_finished`, discarding it at once
    /// when it is `<= P` (the walk would only pop it).
    fn push_known(&mut self, v: i64) {
        if v > self.persisted {
            self.known_finished.push(Reverse(v));
        }
    }

    fn remove_marker(&mut self, marker: i64) {
        if let Some(count) = self.in_flight.get_mut(&marker) {
            *count -= 1;
            if *count == 0 {
                self.in_flight.remove(&marker);
            }
        }
    }

    fn recompute_min_others(&mut self) {
        self.min_others = self.others.values().copied().min();
    }

    fn all_positions(&self) -> impl Iterator<Item = i64> + '_ {
        self.own_position
            .into_iter()
            .chain(self.others.values().copied())
    }

    /// Sets a position during construction (no monotonicity: startup may assign).
    pub(crate) fn set_position(&mut self, writer: &str, value: i64) {
        if writer == self.own {
            self.own_position = Some(value);
        } else {
            self.others.insert(writer.to_owned(), value);
            self.recompute_min_others();
        }
    }

    pub(crate) fn own_position(&self) -> Option<i64> {
        self.own_position
    }

    /// Gives every listed writer without an entry `P` (spec §4.2 step 12), or with an empty
    /// writer list, the own entry (step 14).
    pub(crate) fn default_missing_writers(&mut self) {
        let p = self.persisted;
        if self.writers.is_empty() {
            self.own_position.get_or_insert(p);
        } else {
            let missing: Vec<String> = self
                .writers
                .iter()
                .filter(|w| **w != self.own && !self.others.contains_key(*w))
                .cloned()
                .collect();
            for w in missing {
                self.others.insert(w, p);
            }
            if self.writers.contains(&self.own) {
                self.own_position.get_or_insert(p);
            }
        }
        self.recompute_min_others();
    }

    pub(crate) fn seed_bounds(&mut self, extra: i64) {
        let max = self
            .all_positions()
            .fold(self.persisted.max(extra), i64::max);
        self.max_seen = self.max_seen.max(max);
        self.announced = self.max_seen;
    }

    pub(crate) fn set_persisted(&mut self, p: i64) {
        self.persisted = p;
    }

    fn marks(&self) -> Marks {
        Marks {
            persisted: self.persisted,
            announced: self.announced,
            own: self.own_position,
            min_others: self.min_others,
            others_len: self.others.len(),
        }
    }

    fn changes_since(&self, before: Marks) -> Changes {
        let after = self.marks();
        Changes {
            persisted: before.persisted != after.persisted,
            announced: before.announced != after.announced,
            // Raising another writer's entry without moving the minimum is reported by
            // `advance` itself.
            positions: before.own != after.own
                || before.min_others != after.min_others
                || before.others_len != after.others_len,
        }
    }
}

#[derive(Clone, Copy)]
struct Marks {
    persisted: i64,
    announced: i64,
    own: Option<i64>,
    min_others: Option<i64>,
    others_len: usize,
}

#[cfg(test)]
mod tests;

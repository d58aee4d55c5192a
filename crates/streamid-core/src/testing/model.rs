//! A naive reference implementation of one process's tracker (spec §5.2, §6.1, §6.2, §6.4,
//! §6.5), the oracle the property tests compare [`Tracker`](crate::Tracker) with.
//!
//! It follows the specification's text literally: plain vectors, every minimum recomputed
//! by a linear scan, every value pushed onto `known_finished` one at a time, no caches. It
//! is slow on purpose and must stay obviously correct; never optimise it.

mod startup;

pub use startup::StartupInput;

use std::collections::BTreeMap;

use crate::Changes;

/// The reference model of one process's tracker state (spec §3.1), one field per row of
/// the state table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Model {
    own: String,
    /// `W`; empty means anyone may write.
    writers: Vec<String>,
    /// `positions`, including the own entry (the minimal local position).
    positions: BTreeMap<String, i64>,
    unfinished: Vec<i64>,
    /// One marker per fetch in flight (a multiset).
    in_flight: Vec<i64>,
    blocked: Vec<i64>,
    persisted: i64,
    /// A multiset; the minimum is found by scanning.
    known_finished: Vec<i64>,
    max_seen: i64,
    announced: i64,
}

/// `(P, announced, positions)` before a command, to report its [`Changes`].
type Snapshot = (i64, i64, BTreeMap<String, i64>);

impl Model {
    /// The state [`Tracker::new`](crate::Tracker::new) documents for the same arguments:
    /// `P = max(persisted, 1)`; the given positions; every listed writer without one (or,
    /// with an empty list, the own entry) at `P`; `max_seen = announced` = the largest
    /// value of all.
    pub fn new(own: &str, writers: &[&str], positions: &[(&str, i64)], persisted: i64) -> Model {
        let persisted = persisted.max(1);
        let mut map: BTreeMap<String, i64> = BTreeMap::new();
        for &(w, p) in positions {
            map.insert(w.to_owned(), p);
        }
        if writers.is_empty() {
            map.entry(own.to_owned()).or_insert(persisted);
        }
        for &w in writers {
            map.entry(w.to_owned()).or_insert(persisted);
        }
        let mut max = persisted;
        for &p in map.values() {
            max = max.max(p);
        }
        Model {
            own: own.to_owned(),
            writers: writers.iter().map(|w| (*w).to_owned()).collect(),
            positions: map,
            unfinished: Vec::new(),
            in_flight: Vec::new(),
            blocked: Vec::new(),
            persisted,
            known_finished: Vec::new(),
            max_seen: max,
            announced: max,
        }
    }

    // ----- getters (spec §6.5) -----------------------------------------------------

    /// `P`.
    pub fn persisted_upto(&self) -> i64 {
        self.persisted
    }

    /// The announced position.
    pub fn announced(&self) -> i64 {
        self.announced
    }

    /// `current_token_for_writer(w)`: `announced` for `own`, else `max(positions[w], P)`,
    /// an unknown writer counting as `P`.
    pub fn writer_position(&self, writer: &str) -> i64 {
        if writer == self.own {
            return self.announced;
        }
        match self.positions.get(writer) {
            Some(&p) if p > self.persisted => p,
            _ => self.persisted,
        }
    }

    /// `positions[own]`, or `P` without an own entry.
    pub fn minimal_local(&self) -> i64 {
        match self.positions.get(&self.own) {
            Some(&p) => p,
            None => self.persisted,
        }
    }

    /// A copy of `positions`.
    pub fn positions(&self) -> BTreeMap<String, i64> {
        self.positions.clone()
    }

    /// `max_seen`.
    pub fn max_seen(&self) -> i64 {
        self.max_seen
    }

    /// Idle: no unfinished ID and no fetch in flight.
    pub fn is_idle(&self) -> bool {
        self.unfinished.is_empty() && self.in_flight.is_empty()
    }

    /// The local unfinished IDs, ascending.
    pub fn unfinished(&self) -> Vec<i64> {
        let mut ids = self.unfinished.clone();
        ids.sort_unstable();
        ids
    }

    /// Number of fetches in flight.
    pub fn in_flight_count(&self) -> usize {
        self.in_flight.len()
    }

    /// Number of finished IDs held back by a smaller unfinished or possibly-in-flight ID.
    pub fn blocked_count(&self) -> usize {
        self.blocked.len()
    }

    // ----- commands ----------------------------------------------------------------

    /// §5.2 step 1: `marker = max_seen`, inserted into `in_flight`. Returns the marker.
    pub fn begin_fetch(&mut self) -> i64 {
        let marker = self.max_seen;
        self.in_flight.push(marker);
        marker
    }

    /// §5.2 step 3: add `ids` to `unfinished`, raise `max_seen` to the largest, remove one
    /// occurrence of `marker`.
    pub fn register(&mut self, marker: i64, ids: &[i64]) {
        for &id in ids {
            self.unfinished.push(id);
            if id > self.max_seen {
                self.max_seen = id;
            }
        }
        self.remove_marker(marker);
    }

    /// §5.2 step 4: remove one occurrence of `marker`, then §6.1 steps 2–3 and §6.2 steps
    /// 2–5 without a push.
    pub fn cancel_fetch(&mut self, marker: i64) -> Changes {
        let before = self.snapshot();
        self.remove_marker(marker);
        self.release_blocked();
        self.update_persisted(None);
        self.changes_since(&before)
    }

    /// §6.1. IDs that are not unfinished (a caller's bug) are ignored entirely, as
    /// [`Finish::unknown_ids`](crate::Finish::unknown_ids) documents: neither blocked nor
    /// pushed. Returns the changes and the number of ignored IDs.
    pub fn finish(&mut self, ids: &[i64]) -> (Changes, usize) {
        let before = self.snapshot();
        let mut finished = Vec::new();
        let mut unknown = 0;
        // Step 1.
        for &id in ids {
            match self.unfinished.iter().position(|&u| u == id) {
                Some(i) => {
                    self.unfinished.remove(i);
                    self.blocked.push(id);
                    finished.push(id);
                }
                None => unknown += 1,
            }
        }
        // Steps 2–3.
        self.release_blocked();
        // Step 4, one ID at a time, in the given order.
        for id in finished {
            self.update_persisted(Some(id));
        }
        (self.changes_since(&before), unknown)
    }

    /// §6.4. Returns `None` when ignored (own or unlisted instance), otherwise the changes.
    pub fn advance(&mut self, instance: &str, value: i64) -> Option<Changes> {
        if instance == self.own {
            return None;
        }
        if !self.writers.is_empty() && !self.writers.iter().any(|w| w == instance) {
            return None;
        }
        let before = self.snapshot();
        let old = self.positions.get(instance).copied().unwrap_or(0);
        self.positions.insert(instance.to_owned(), old.max(value));
        self.max_seen = self.max_seen.max(value);
        self.update_persisted(Some(value));
        Some(self.changes_since(&before))
    }

    // ----- the algorithms ------------------------------------------------------------

    /// §6.1 steps 2–3.
    fn release_blocked(&mut self) {
        let new_cur;
        if !self.unfinished.is_empty() || !self.in_flight.is_empty() {
            let mut bound = i64::MAX;
            for &u in &self.unfinished {
                bound = bound.min(u);
            }
            for &m in &self.in_flight {
                bound = bound.min(m + 1);
            }
            let released: Vec<i64> = self
                .blocked
                .iter()
                .copied()
                .filter(|&b| b < bound)
                .collect();
            self.blocked.retain(|&b| b >= bound);
            new_cur = released.into_iter().max();
        } else {
            new_cur = self.blocked.iter().copied().max();
            self.blocked.clear();
        }
        if let Some(new_cur) = new_cur {
            let cur = self.positions.get(&self.own).copied().unwrap_or(0);
            self.positions.insert(self.own.clone(), cur.max(new_cur));
            self.announced = self.announced.max(cur).max(new_cur);
        }
    }

    /// §6.2, with the push of step 1 when `pushed` is given.
    fn update_persisted(&mut self, pushed: Option<i64>) {
        // Step 1.
        if let Some(v) = pushed {
            self.known_finished.push(v);
        }
        // Step 2.
        let our = self.positions.get(&self.own).copied().unwrap_or(0);
        let mut others_min: Option<i64> = None;
        for (w, &p) in &self.positions {
            if *w != self.own {
                others_min = Some(others_min.map_or(p, |m| m.min(p)));
            }
        }
        let mut min_curr = others_min.unwrap_or(our);
        if our != 0 && !self.is_idle() {
            min_curr = min_curr.min(our);
        }
        // Step 3.
        self.persisted = self.persisted.max(min_curr);
        // Step 4: the heap walk, with the minimum found by a scan.
        while let Some((i, &min)) = self
            .known_finished
            .iter()
            .enumerate()
            .min_by_key(|(_, v)| **v)
        {
            if min <= self.persisted {
                self.known_finished.remove(i);
            } else if min == self.persisted + 1 {
                self.known_finished.remove(i);
                self.persisted += 1;
            } else {
                break;
            }
        }
        // Step 5.
        self.announced = self.announced.max(self.persisted);
        if self.is_idle() {
            self.announced = self.announced.max(self.max_seen);
        }
    }

    fn remove_marker(&mut self, marker: i64) {
        if let Some(i) = self.in_flight.iter().position(|&m| m == marker) {
            self.in_flight.remove(i);
        }
    }

    fn snapshot(&self) -> Snapshot {
        (self.persisted, self.announced, self.positions.clone())
    }

    fn changes_since(&self, before: &Snapshot) -> Changes {
        Changes {
            persisted: before.0 != self.persisted,
            announced: before.1 != self.announced,
            positions: before.2 != self.positions,
        }
    }
}

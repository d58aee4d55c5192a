//! The tracker's full `O(n)` invariant check (spec §3.2), compiled for tests and the
//! `testing` feature only; property tests call it after every step.

use std::cmp::Reverse;

use super::Tracker;

impl Tracker {
    /// Checks every internal invariant in `O(n)`; returns a description of the first
    /// violation. Property tests call it after every step.
    #[cfg(any(test, feature = "testing"))]
    pub fn check_invariants(&self) -> Result<(), String> {
        let fail = |msg: String| Err(msg);
        if self.max_seen < self.persisted {
            return fail(format!(
                "I10: max_seen {} < P {}",
                self.max_seen, self.persisted
            ));
        }
        if self.announced < self.persisted {
            return fail(format!(
                "I4: announced {} < P {}",
                self.announced, self.persisted
            ));
        }
        if let Some(own) = self.own_position {
            if self.announced < own {
                return fail(format!(
                    "I3: announced {} < own position {own}",
                    self.announced
                ));
            }
            if let Some(u) = self.local.min_unfinished()
                && own >= u
            {
                return fail(format!("I5: own position {own} >= unfinished ID {u}"));
            }
        }
        // Not checked: `announced < min(unfinished)`, nor `P < min(unfinished)`. Both fail
        // in correct runs (spec §3.2 I2, I3): a process that saw the row of a local ID that
        // committed but is not finished yet may announce it, and `P`, hence `announced`,
        // walks onto it. Simulations where "decided" means "finished" assert them globally.
        if let (Some(own), Some(low)) = (self.own_position, self.local.first())
            && low <= own
        {
            return fail(format!("local ID {low} at or below own position {own}"));
        }
        if let Some(id) = self.local.last()
            && id > self.max_seen
        {
            return fail(format!("local ID {id} above max_seen {}", self.max_seen));
        }
        if self.persisted < i64::MAX && self.is_blocked(self.persisted + 1) {
            return fail(format!(
                "walk stopped at P {} below a blocked ID",
                self.persisted
            ));
        }
        if let Some(&Reverse(v)) = self.known_finished.peek()
            && v <= self.persisted.saturating_add(1)
        {
            return fail(format!(
                "known_finished holds {v}, walk stopped at P {}",
                self.persisted
            ));
        }
        self.local.check()?;
        if self.is_idle() && self.local.len() > 0 {
            return fail(format!("idle with {} blocked IDs", self.local.len()));
        }
        if self.min_others != self.others.values().copied().min() {
            return fail("min_others cache is stale".to_owned());
        }
        if self.in_flight.values().any(|&c| c == 0) {
            return fail("in_flight holds a zero count".to_owned());
        }
        if let Some((&m, _)) = self.in_flight.last_key_value()
            && m > self.max_seen
        {
            return fail(format!("marker {m} above max_seen {}", self.max_seen));
        }
        Ok(())
    }
}

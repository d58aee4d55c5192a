//! The safety checks every simulation runs after every step: one process's [`View`]
//! against the global [`Truth`] (spec §1.2) and against its previous view (spec §3.2).
//!
//! In the simulations an ID is decided exactly when it is finished, so the stricter forms
//! hold here and are asserted: nothing any process reports covers an undecided ID.

use super::View;
use super::truth::Truth;

/// One process to check: its name and the names of every writer, whose indices are the
/// holder indices [`Truth`] uses.
pub(crate) struct Subject<'a> {
    pub(crate) own: &'a str,
    pub(crate) names: &'a [String],
}

impl Subject<'_> {
    fn holder(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Checks `now` against the truth and, if given, the previous view of this process.
    pub(crate) fn check(
        &self,
        now: &View,
        before: Option<&View>,
        truth: &Truth,
    ) -> Result<(), String> {
        let own = self.own;
        let p = now.persisted_upto;
        // Safety of P: every ID <= P is decided (spec §1.2, I2), and P is a decided value (I7).
        let min_all = truth.min_undecided(None);
        if p >= min_all {
            return Err(format!("{own}: P {p} covers undecided ID {min_all}"));
        }
        self.decided_value(truth, "P", p)?;
        // Positions cover only decided IDs of their writer (spec §1.2, I5, I7).
        for (w, &pos) in &now.positions {
            self.covers_only_decided(truth, &format!("positions[{w}]"), w, pos)?;
        }
        for (w, &pos) in &now.writer_positions {
            if pos < p {
                return Err(format!("{own}: I4: writer_position({w}) {pos} < P {p}"));
            }
            if self.holder(w).is_none() && pos != p {
                return Err(format!("{own}: unknown writer {w} at {pos}, not at P {p}"));
            }
            self.covers_only_decided(truth, &format!("writer_position({w})"), w, pos)?;
        }
        // The announced position (I3, I4).
        let announced = now.announced;
        if now.writer_positions.get(own) != Some(&announced) {
            return Err(format!(
                "{own}: writer_position(own) is not announced {announced}"
            ));
        }
        if announced < now.minimal_local {
            return Err(format!(
                "{own}: I3: announced {announced} < minimal local {}",
                now.minimal_local
            ));
        }
        if now.is_idle && announced != now.max_seen {
            return Err(format!(
                "{own}: idle, announced {announced} != max_seen {}",
                now.max_seen
            ));
        }
        // max_seen (I10, and it only holds allocated values).
        if now.max_seen < p {
            return Err(format!("{own}: I10: max_seen {} < P {p}", now.max_seen));
        }
        if now.max_seen > truth.last() {
            return Err(format!("{own}: max_seen {} never handed out", now.max_seen));
        }
        if let Some(before) = before {
            monotonic(own, before, now)?;
        }
        Ok(())
    }

    fn covers_only_decided(
        &self,
        truth: &Truth,
        what: &str,
        writer: &str,
        pos: i64,
    ) -> Result<(), String> {
        self.decided_value(truth, what, pos)?;
        if let Some(h) = self.holder(writer) {
            let min = truth.min_undecided(Some(h));
            if pos >= min {
                return Err(format!(
                    "{}: {what} = {pos} covers {writer}'s undecided ID {min}",
                    self.own
                ));
            }
        }
        Ok(())
    }

    fn decided_value(&self, truth: &Truth, what: &str, v: i64) -> Result<(), String> {
        if truth.is_decided_value(v) {
            Ok(())
        } else {
            Err(format!(
                "{}: I7: {what} = {v} is not a decided value",
                self.own
            ))
        }
    }
}

/// I1: `P`, `announced`, `max_seen`, every `positions` entry and every writer position
/// never decrease; no entry disappears.
fn monotonic(own: &str, before: &View, now: &View) -> Result<(), String> {
    let scalars = [
        ("P", before.persisted_upto, now.persisted_upto),
        ("announced", before.announced, now.announced),
        ("max_seen", before.max_seen, now.max_seen),
        ("minimal_local", before.minimal_local, now.minimal_local),
    ];
    for (what, b, n) in scalars {
        if n < b {
            return Err(format!("{own}: I1: {what} went back from {b} to {n}"));
        }
    }
    let maps = [
        ("positions", &before.positions, &now.positions),
        (
            "writer_position",
            &before.writer_positions,
            &now.writer_positions,
        ),
    ];
    for (what, b, n) in maps {
        for (w, &old) in b {
            match n.get(w) {
                None => return Err(format!("{own}: I1: {what}[{w}] disappeared")),
                Some(&new) if new < old => {
                    return Err(format!(
                        "{own}: I1: {what}[{w}] went back from {old} to {new}"
                    ));
                }
                Some(_) => {}
            }
        }
    }
    Ok(())
}

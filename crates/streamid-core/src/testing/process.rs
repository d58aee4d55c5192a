//! One simulated process: a [`Tracker`] and a [`Model`] driven in lockstep, with the fetches
//! and unfinished IDs the caller (the async layer) would hold. Every command is applied to
//! both and their results compared; [`Proc::check`] compares their views and checks safety.

use super::check::Subject;
use super::truth::{Fate, Truth};
use super::{Model, View};
use crate::{Advance, FetchTicket, Tracker};

/// A fetch in flight: the tracker's ticket, the model's marker and, once the sequence has
/// answered, the IDs it handed out (not yet known to the tracker).
#[derive(Debug)]
struct Fetch {
    ticket: FetchTicket,
    marker: i64,
    answer: Option<Vec<i64>>,
}

/// A simulated process.
#[derive(Debug)]
pub(crate) struct Proc {
    pub(crate) name: String,
    /// Its index as a holder of IDs in [`Truth`].
    holder: usize,
    pub(crate) tracker: Tracker,
    model: Model,
    fetches: Vec<Fetch>,
    /// Registered, not yet finished; ascending.
    unfinished: Vec<i64>,
    /// The view at the last check, for monotonicity.
    view: Option<View>,
}

impl Proc {
    pub(crate) fn new(name: &str, holder: usize, tracker: Tracker, model: Model) -> Proc {
        Proc {
            name: name.to_owned(),
            holder,
            tracker,
            model,
            fetches: Vec::new(),
            unfinished: Vec::new(),
            view: None,
        }
    }

    pub(crate) fn has_fetch(&self) -> bool {
        !self.fetches.is_empty()
    }

    pub(crate) fn has_unanswered(&self) -> bool {
        self.fetches.iter().any(|f| f.answer.is_none())
    }

    pub(crate) fn has_unfinished(&self) -> bool {
        !self.unfinished.is_empty()
    }

    /// Spec §5.2 step 1.
    pub(crate) fn begin_fetch(&mut self) -> Result<(), String> {
        let ticket = self.tracker.begin_fetch();
        let marker = self.model.begin_fetch();
        if ticket.marker() != marker {
            return Err(format!(
                "{}: marker {} != model's {marker}",
                self.name,
                ticket.marker()
            ));
        }
        self.fetches.push(Fetch {
            ticket,
            marker,
            answer: None,
        });
        Ok(())
    }

    /// The sequence answers the `pick`-th unanswered fetch (modulo) with `n` IDs.
    pub(crate) fn answer(&mut self, truth: &mut Truth, pick: usize, n: usize) {
        let unanswered: Vec<usize> = (0..self.fetches.len())
            .filter(|&k| self.fetches[k].answer.is_none())
            .collect();
        if unanswered.is_empty() {
            return;
        }
        let k = unanswered[pick % unanswered.len()];
        self.fetches[k].answer = Some(truth.hand_out(self.holder, n));
    }

    /// Spec §5.2 step 3 for the `pick`-th fetch (modulo); an unanswered one gets `n` IDs.
    pub(crate) fn complete(
        &mut self,
        truth: &mut Truth,
        pick: usize,
        n: usize,
    ) -> Result<(), String> {
        if self.fetches.is_empty() {
            return Ok(());
        }
        let fetch = self.fetches.remove(pick % self.fetches.len());
        let ids = match fetch.answer {
            Some(ids) => ids,
            None => truth.hand_out(self.holder, n),
        };
        self.tracker
            .register(fetch.ticket, &ids)
            .map_err(|e| format!("{}: register {ids:?}: {e}", self.name))?;
        self.model.register(fetch.marker, &ids);
        self.unfinished.extend(ids);
        self.unfinished.sort_unstable();
        Ok(())
    }

    /// Spec §5.2 step 4 for the `pick`-th fetch (modulo). IDs the sequence handed out
    /// become gaps; an unanswered fetch consumes one ID first if `consumed`.
    pub(crate) fn cancel(
        &mut self,
        truth: &mut Truth,
        pick: usize,
        consumed: bool,
    ) -> Result<(), String> {
        if self.fetches.is_empty() {
            return Ok(());
        }
        let fetch = self.fetches.remove(pick % self.fetches.len());
        let lost = match fetch.answer {
            Some(ids) => ids,
            None if consumed => truth.hand_out(self.holder, 1),
            None => Vec::new(),
        };
        for id in lost {
            truth.decide(id, Fate::Gap)?;
        }
        let got = self.tracker.cancel_fetch(fetch.ticket);
        let want = self.model.cancel_fetch(fetch.marker);
        if got != want {
            return Err(format!(
                "{}: cancel_fetch changes {got:?}, model {want:?}",
                self.name
            ));
        }
        Ok(())
    }

    /// Spec §6.1: finishes `1 + count % 3` (at most all) unfinished IDs, consecutive in ID
    /// order from the `pick`-th (modulo, wrapping), in reverse order if `reverse`.
    pub(crate) fn finish(
        &mut self,
        truth: &mut Truth,
        pick: usize,
        count: usize,
        committed: bool,
        reverse: bool,
    ) -> Result<(), String> {
        let len = self.unfinished.len();
        if len == 0 {
            return Ok(());
        }
        let k = (1 + count % 3).min(len);
        let start = pick % len;
        let mut ids: Vec<i64> = (0..k).map(|i| self.unfinished[(start + i) % len]).collect();
        if reverse {
            ids.reverse();
        }
        self.unfinished.retain(|u| !ids.contains(u));
        let fate = if committed {
            Fate::Committed
        } else {
            Fate::RolledBack
        };
        for &id in &ids {
            truth.decide(id, fate)?;
        }
        let got = self.tracker.finish(&ids);
        let (changes, unknown) = self.model.finish(&ids);
        if got.changes != changes || got.unknown_ids != unknown || unknown != 0 {
            return Err(format!(
                "{}: finish {ids:?} gave {got:?}, model ({changes:?}, {unknown} unknown)",
                self.name
            ));
        }
        Ok(())
    }

    /// A caller's bug: finishes `ids`, none of which is unfinished (finished before, or
    /// never registered). Both must ignore them all (spec §6.1 step 4 then pushes nothing).
    pub(crate) fn finish_unknown(&mut self, ids: &[i64]) -> Result<(), String> {
        let got = self.tracker.finish(ids);
        let (changes, unknown) = self.model.finish(ids);
        if got.changes != changes || got.unknown_ids != unknown || unknown != ids.len() {
            return Err(format!(
                "{}: finish of unknown {ids:?} gave {got:?}, model ({changes:?}, {unknown} unknown)",
                self.name
            ));
        }
        Ok(())
    }

    /// Finishes every unfinished ID (committed) and cancels every fetch.
    pub(crate) fn settle(&mut self, truth: &mut Truth) -> Result<(), String> {
        while self.has_fetch() {
            self.cancel(truth, 0, false)?;
        }
        while self.has_unfinished() {
            self.finish(truth, 0, 2, true, false)?;
        }
        Ok(())
    }

    /// Spec §6.4: `advance(from, value)`. Own-position changes are refused (I5).
    pub(crate) fn receive(&mut self, from: &str, value: i64) -> Result<(), String> {
        let own_entry = self.tracker.positions().get(&self.name).copied();
        let got = self.tracker.advance(from, value);
        let want = self.model.advance(from, value);
        let writers = self.tracker.writers();
        let ok = match (got, want) {
            (Advance::Applied(c), Some(m)) => c == m,
            (Advance::IgnoredOwn, None) => from == self.name,
            (Advance::IgnoredUnlisted, None) => {
                from != self.name && !writers.is_empty() && !writers.contains(from)
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{}: advance({from}, {value}) gave {got:?}, model {want:?}",
                self.name
            ));
        }
        if self.tracker.positions().get(&self.name).copied() != own_entry {
            return Err(format!("{}: I5: advance moved positions[own]", self.name));
        }
        Ok(())
    }

    /// Compares the tracker with the model, runs `check_invariants` and the safety checks
    /// against `truth`, then remembers the view for the next monotonicity check.
    pub(crate) fn check(&mut self, names: &[String], truth: &Truth) -> Result<(), String> {
        let view = View::of_tracker(&self.tracker, names);
        let model = View::of_model(&self.model, names);
        if view != model {
            return Err(format!(
                "{}: tracker and model differ\n tracker {view:?}\n model   {model:?}",
                self.name
            ));
        }
        self.tracker
            .check_invariants()
            .map_err(|e| format!("{}: check_invariants: {e}", self.name))?;
        let subject = Subject {
            own: &self.name,
            names,
        };
        subject.check(&view, self.view.as_ref(), truth)?;
        if self.unfinished != self.model.unfinished() {
            return Err(format!(
                "{}: unfinished {:?} != model's",
                self.name, self.unfinished
            ));
        }
        self.view = Some(view);
        Ok(())
    }
}

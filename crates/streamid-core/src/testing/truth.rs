//! The global truth of a simulated stream: the sequence, and for every value it handed out,
//! who holds it and whether it is decided (spec §1.1). Simulations check every reported
//! position against it (spec §1.2, §3.2).
//!
//! Values `<= base` predate the simulation (history) and count as decided, as does 1 (spec
//! §10.3). Decidedness never reverts.

use std::fmt;

/// What happened to one handed-out ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Handed out; its transaction may still make a row visible.
    Undecided,
    /// Finished with outcome success.
    Committed,
    /// Finished with outcome failure.
    RolledBack,
    /// Handed to a fetch that was cancelled before registering it: never written.
    Gap,
}

/// The sequence and the fate of every value it handed out.
#[derive(Debug, Clone)]
pub(crate) struct Truth {
    /// Values `<= base` are history: decided before the simulation started.
    base: i64,
    /// `ids[i]` is the holder (a process index) and fate of ID `base + 1 + i`.
    ids: Vec<(usize, Fate)>,
}

impl Truth {
    /// A sequence whose last handed-out value is `base` (1 for a fresh stream, whose first
    /// ID is 2).
    pub(crate) fn new(base: i64) -> Truth {
        Truth {
            base: base.max(1),
            ids: Vec::new(),
        }
    }

    /// The last value the sequence handed out.
    pub(crate) fn last(&self) -> i64 {
        self.base + self.ids.len() as i64
    }

    /// Hands the next `n` values to `holder`, undecided.
    pub(crate) fn hand_out(&mut self, holder: usize, n: usize) -> Vec<i64> {
        let first = self.last() + 1;
        self.ids
            .extend(std::iter::repeat_n((holder, Fate::Undecided), n));
        (first..first + n as i64).collect()
    }

    /// Decides `id`. Errors if it was not handed out or was already decided (I6: every ID
    /// is finished exactly once).
    pub(crate) fn decide(&mut self, id: i64, fate: Fate) -> Result<(), String> {
        let slot = self
            .slot_mut(id)
            .ok_or(format!("decide {id}: never handed out"))?;
        if slot.1 != Fate::Undecided {
            return Err(format!("decide {id}: already {:?}", slot.1));
        }
        slot.1 = fate;
        Ok(())
    }

    /// The fate of a handed-out ID above the history, or `None`.
    pub(crate) fn fate(&self, id: i64) -> Option<(usize, Fate)> {
        let i = usize::try_from(id - self.base - 1).ok()?;
        self.ids.get(i).copied()
    }

    /// Whether `v` is a decided value (spec §1.1): history, or a handed-out ID that is
    /// decided. Values not handed out yet are not.
    pub(crate) fn is_decided_value(&self, v: i64) -> bool {
        if (1..=self.base).contains(&v) {
            return true;
        }
        matches!(self.fate(v), Some((_, fate)) if fate != Fate::Undecided)
    }

    /// The smallest undecided ID held by `holder` (any holder for `None`), or `i64::MAX`.
    pub(crate) fn min_undecided(&self, holder: Option<usize>) -> i64 {
        self.ids
            .iter()
            .enumerate()
            .find(|(_, (h, fate))| *fate == Fate::Undecided && holder.is_none_or(|x| x == *h))
            .map_or(i64::MAX, |(i, _)| self.base + 1 + i as i64)
    }

    /// The largest decided value `v` with every ID of `holder` at or below it decided:
    /// the most a truthful announcement by `holder` can carry.
    pub(crate) fn largest_safe_for(&self, holder: usize) -> i64 {
        let limit = self.min_undecided(Some(holder)).min(self.last() + 1);
        (1..limit)
            .rev()
            .find(|&v| self.is_decided_value(v))
            .unwrap_or(1)
    }

    fn slot_mut(&mut self, id: i64) -> Option<&mut (usize, Fate)> {
        let i = usize::try_from(id - self.base - 1).ok()?;
        self.ids.get_mut(i)
    }
}

impl fmt::Display for Truth {
    /// One character per ID above the history: `u` undecided, `c` committed, `r` rolled
    /// back, `g` gap, each followed by its holder.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "history <= {}; ", self.base)?;
        for (i, (holder, fate)) in self.ids.iter().enumerate() {
            let c = match fate {
                Fate::Undecided => 'u',
                Fate::Committed => 'c',
                Fate::RolledBack => 'r',
                Fate::Gap => 'g',
            };
            write!(f, "{}:{c}{holder} ", self.base + 1 + i as i64)?;
        }
        Ok(())
    }
}

//! One tracker driven alone, compared with the [`Model`](super::Model) after every step.
//!
//! The process is `a`; the other writers `b` and `c` are simulated abstractly: the sequence
//! hands them IDs, which get decided at any time, and `a` hears from them at any *truthful*
//! position — any decided value covering none of their undecided IDs, fresh or stale. This
//! reaches states a simulation of real trackers rarely does (positions that jump, arrive out
//! of order, or land on other writers' gaps), and arbitrary initial states through
//! [`Tracker::new`].

use super::process::Proc;
use super::truth::{Fate, Truth};
use super::{Model, NOBODY, StartupInput};
use crate::{Startup, Tracker};

const NAMES: [&str; 3] = ["a", "b", "c"];

/// One step of a [`Solo`]. Indices are resolved modulo the current sizes; an op with
/// nothing to act on is a no-op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SoloOp {
    /// `a` starts a fetch.
    BeginFetch,
    /// The sequence hands `1 + n % 3` IDs to one of `a`'s fetches, unregistered.
    Assign {
        /// Which unanswered fetch.
        fetch: u8,
        /// The number of IDs, `1 + n % 3`.
        n: u8,
    },
    /// One of `a`'s fetches registers its IDs (handed `1 + n % 3` first if unanswered).
    CompleteFetch {
        /// Which fetch.
        fetch: u8,
        /// The number of IDs if unanswered, `1 + n % 3`.
        n: u8,
    },
    /// One of `a`'s fetches is cancelled; its IDs become gaps.
    CancelFetch {
        /// Which fetch.
        fetch: u8,
        /// Whether an unanswered fetch consumed an ID.
        consumed_ids: bool,
    },
    /// `a` finishes `1 + count % 3` unfinished IDs from the `pick`-th.
    Finish {
        /// The first ID's index.
        pick: u8,
        /// The number of IDs, `1 + count % 3`.
        count: u8,
        /// The outcome.
        committed: bool,
        /// Pass the IDs in descending order.
        reverse: bool,
    },
    /// A caller's bug, which must change nothing but the release of blocked IDs (spec
    /// §6.1 steps 2–3): `a` finishes again the `pick`-th ID it already finished (none if
    /// there is none), plus, if `phantom`, the next value the sequence will hand out.
    FinishUnknown {
        /// Which already finished ID.
        pick: u8,
        /// Also pass a value never registered.
        phantom: bool,
    },
    /// The sequence hands `1 + n % 3` IDs to `b` or `c`.
    OtherAllocate {
        /// `b` if even, `c` if odd.
        who: u8,
        /// The number of IDs, `1 + n % 3`.
        n: u8,
    },
    /// One of `b`'s and `c`'s undecided IDs is decided: committed, or a gap.
    OtherDecide {
        /// Which undecided ID.
        pick: u8,
        /// Committed (else a gap nobody learns).
        committed: bool,
    },
    /// `a` hears from `b` or `c` at a truthful position: the `back`-th largest decided
    /// value that covers none of that writer's undecided IDs.
    Advance {
        /// `b` if even, `c` if odd.
        who: u8,
        /// How far back from the freshest truthful value.
        back: u8,
    },
    /// `a` receives `value + 1` from an unlisted instance, or from itself when `echo` or
    /// the writer list is empty; it must be ignored.
    Stray {
        /// Any value.
        value: u8,
        /// Claim to come from `a` itself.
        echo: bool,
    },
}

/// One tracker, `a`, driven alone and compared with the [`Model`](super::Model) after
/// every [`SoloOp`]; the other writers `b` and `c` exist only in the global truth and are
/// heard at arbitrary truthful positions. Safety is checked after every step, liveness in
/// [`quiesce`](Self::quiesce).
#[derive(Debug)]
pub struct Solo {
    names: Vec<String>,
    open: bool,
    proc: Proc,
    truth: Truth,
    steps: usize,
}

impl Solo {
    /// Writers `a`, `b`, `c` (or an empty list if `open`); `a` starts as
    /// `Tracker::new("a", W, positions, persisted)` with `positions` from `initial` (for
    /// `a`, `b`, `c`; `None` leaves an entry out, so it defaults to `P` — except `b` and `c`
    /// in `open` mode, which must be known and so start at `persisted`). Every value up to
    /// the largest given is history, hence decided.
    pub fn new(open: bool, initial: [Option<i64>; 3], persisted: i64) -> Solo {
        let persisted = persisted.max(1);
        let mut positions: Vec<(&str, i64)> = Vec::new();
        for (i, (name, p)) in NAMES.iter().zip(initial).enumerate() {
            match p {
                Some(p) => positions.push((name, p.max(1))),
                None if open && i > 0 => positions.push((name, persisted)),
                None => {}
            }
        }
        let list: Vec<&str> = if open { Vec::new() } else { NAMES.to_vec() };
        let tracker = Tracker::new(
            "a",
            list.iter().copied(),
            positions.iter().copied(),
            persisted,
        );
        let model = Model::new("a", &list, &positions, persisted);
        let base = positions.iter().map(|&(_, p)| p).fold(persisted, i64::max);
        Solo {
            names: NAMES.iter().map(|n| (*n).to_owned()).collect(),
            open,
            proc: Proc::new("a", 0, tracker, model),
            truth: Truth::new(base),
            steps: 0,
        }
    }

    /// Starts `a` from the database state `input` (whose `own` must be `"a"`, instances
    /// among `a`, `b`, `c` or others) through [`Startup`], and its model through
    /// [`Model::startup`]. Every value up to the largest in `input` or in the result is
    /// history, hence decided.
    ///
    /// # Errors
    ///
    /// `scan_from()` is not the minimum of the entries steps 9–10 set.
    pub fn started(input: &StartupInput) -> Result<Solo, String> {
        let mut s = Startup::new(&input.own, &input.writers);
        for (instance, value) in &input.loaded {
            s.load_position(instance, *value);
        }
        if let Some(start) = input.start {
            s.set_start(start);
        }
        // The entries steps 9–10 set: listed rows, then the own start over its row.
        let mut entries: std::collections::BTreeMap<&str, i64> = input
            .loaded
            .iter()
            .filter(|(i, _)| input.writers.contains(i))
            .map(|(i, v)| (i.as_str(), *v))
            .collect();
        if let Some(start) = input.start {
            entries.insert(&input.own, start);
        }
        let m = entries.values().copied().min();
        if s.scan_from() != m {
            return Err(format!("scan_from {:?}, expected {m:?}", s.scan_from()));
        }
        let rows = input.rows.iter().map(|(i, id)| (i.as_deref(), *id));
        let tracker = s.finish(input.table_max, rows);
        let values = input
            .loaded
            .iter()
            .map(|&(_, v)| v)
            .chain(input.rows.iter().map(|&(_, id)| id));
        let base = values
            .chain([
                input.table_max,
                input.start.unwrap_or(1),
                tracker.max_seen(),
            ])
            .fold(1, i64::max);
        Ok(Solo {
            names: NAMES.iter().map(|n| (*n).to_owned()).collect(),
            open: input.writers.is_empty(),
            proc: Proc::new(&input.own, 0, tracker, Model::startup(input)),
            truth: Truth::new(base),
            steps: 0,
        })
    }

    /// The tracker under test.
    pub fn tracker(&self) -> &Tracker {
        &self.proc.tracker
    }

    /// Applies every op, checking after each, then [`quiesce`](Self::quiesce)s.
    ///
    /// # Errors
    ///
    /// The first violation, with the step, the op and the global truth.
    pub fn run(&mut self, ops: &[SoloOp]) -> Result<(), String> {
        self.check().map_err(|e| format!("initial state: {e}"))?;
        ops.iter().try_for_each(|op| self.apply(op))?;
        self.quiesce()
    }

    /// Applies one op, then checks.
    ///
    /// # Errors
    ///
    /// The first violation, with the step, the op and the global truth.
    pub fn apply(&mut self, op: &SoloOp) -> Result<(), String> {
        self.steps += 1;
        self.step(op)
            .and_then(|()| self.check())
            .map_err(|e| format!("step {} ({op:?}): {e}\ntruth: {}", self.steps, self.truth))
    }

    fn step(&mut self, op: &SoloOp) -> Result<(), String> {
        let (p, truth) = (&mut self.proc, &mut self.truth);
        match *op {
            SoloOp::BeginFetch => p.begin_fetch(),
            SoloOp::Assign { fetch, n } => {
                p.answer(truth, fetch.into(), 1 + usize::from(n % 3));
                Ok(())
            }
            SoloOp::CompleteFetch { fetch, n } => {
                p.complete(truth, fetch.into(), 1 + usize::from(n % 3))
            }
            SoloOp::CancelFetch {
                fetch,
                consumed_ids,
            } => p.cancel(truth, fetch.into(), consumed_ids),
            SoloOp::Finish {
                pick,
                count,
                committed,
                reverse,
            } => p.finish(truth, pick.into(), count.into(), committed, reverse),
            SoloOp::FinishUnknown { pick, phantom } => {
                let done: Vec<i64> = (1..=truth.last())
                    .filter(|&v| {
                        matches!(truth.fate(v), Some((0, Fate::Committed | Fate::RolledBack)))
                    })
                    .collect();
                let mut ids = Vec::new();
                if !done.is_empty() {
                    ids.push(done[usize::from(pick) % done.len()]);
                }
                if phantom {
                    ids.push(truth.last() + 1);
                }
                p.finish_unknown(&ids)
            }
            SoloOp::OtherAllocate { who, n } => {
                truth.hand_out(1 + usize::from(who % 2), 1 + usize::from(n % 3));
                Ok(())
            }
            SoloOp::OtherDecide { pick, committed } => {
                let open: Vec<i64> = (1..=truth.last())
                    .filter(|&v| matches!(truth.fate(v), Some((h, Fate::Undecided)) if h != 0))
                    .collect();
                if open.is_empty() {
                    return Ok(());
                }
                let fate = if committed {
                    Fate::Committed
                } else {
                    Fate::Gap
                };
                truth.decide(open[usize::from(pick) % open.len()], fate)
            }
            SoloOp::Advance { who, back } => {
                let who = 1 + usize::from(who % 2);
                let top = truth.largest_safe_for(who);
                let truthful: Vec<i64> = (1..=top)
                    .rev()
                    .filter(|&v| truth.is_decided_value(v))
                    .collect();
                let value = truthful[usize::from(back) % truthful.len()];
                p.receive(NAMES[who], value)
            }
            SoloOp::Stray { value, echo } => {
                let from = if echo || self.open { "a" } else { NOBODY };
                p.receive(from, i64::from(value) + 1)
            }
        }
    }

    fn check(&mut self) -> Result<(), String> {
        self.proc.check(&self.names, &self.truth)
    }

    /// Liveness: settles `a` (every ID finished, every fetch cancelled), decides every
    /// other writer's ID, and lets `b` and `c` announce their freshest truthful positions;
    /// `a`'s `P` must then be the sequence's last value.
    ///
    /// # Errors
    ///
    /// The first violation of safety or liveness.
    pub fn quiesce(&mut self) -> Result<(), String> {
        self.proc.settle(&mut self.truth)?;
        for v in 1..=self.truth.last() {
            if matches!(self.truth.fate(v), Some((_, Fate::Undecided))) {
                self.truth.decide(v, Fate::Committed)?;
            }
        }
        self.check().map_err(|e| format!("settling: {e}"))?;
        for (who, name) in NAMES.iter().enumerate().skip(1) {
            let value = self.truth.largest_safe_for(who);
            self.proc.receive(name, value)?;
            self.check().map_err(|e| format!("final advance: {e}"))?;
        }
        let t = &self.proc.tracker;
        if t.persisted_upto() != self.truth.last() {
            return Err(format!(
                "liveness: P {} != last {}; positions {:?}\ntruth: {}",
                t.persisted_upto(),
                self.truth.last(),
                t.positions(),
                self.truth
            ));
        }
        Ok(())
    }
}

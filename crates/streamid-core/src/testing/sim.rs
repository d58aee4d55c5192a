//! A deterministic simulation of several writers of one stream: each process a [`Tracker`]
//! checked against a [`Model`](super::Model), one sequence, a global truth of which IDs are
//! decided, and a replication bus that reorders, duplicates and drops announcements.
//!
//! After every [`Op`] it checks, for every process: tracker and model agree; the tracker's
//! own invariants; and the safety guarantee of spec §1.2 against the global truth (nothing
//! reported covers an undecided ID, every reported value is decided, I1, I3, I4, I10). At
//! the end, [`Sim::quiesce`] checks liveness.

use super::process::Proc;
use super::truth::{Fate, Truth};
use super::{Model, NOBODY};
use crate::Tracker;

/// One step of a [`Sim`]. Indices are resolved modulo the current sizes when the op is
/// applied; an op whose writer lacks what it needs (a fetch, an unfinished ID) goes to the
/// next writer that has it, and is a no-op only if none has. So every generated sequence is
/// applicable, and shrinking keeps it so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Writer `w` starts a fetch (spec §5.2 step 1).
    BeginFetch {
        /// The writer.
        w: u8,
    },
    /// The sequence hands `1 + n % 3` IDs to one of `w`'s fetches; the tracker does not
    /// know them until the fetch completes (the window of upstream #9424).
    Assign {
        /// The writer.
        w: u8,
        /// Which unanswered fetch.
        fetch: u8,
        /// The number of IDs, `1 + n % 3`.
        n: u8,
    },
    /// One of `w`'s fetches registers its IDs (spec §5.2 step 3); an unanswered one is
    /// handed `1 + n % 3` IDs first.
    CompleteFetch {
        /// The writer.
        w: u8,
        /// Which fetch.
        fetch: u8,
        /// The number of IDs if the fetch was not answered yet, `1 + n % 3`.
        n: u8,
    },
    /// One of `w`'s fetches fails or is dropped (spec §5.2 step 4). IDs it was handed
    /// become gaps; an unanswered fetch has consumed one ID first if `consumed_ids`.
    CancelFetch {
        /// The writer.
        w: u8,
        /// Which fetch.
        fetch: u8,
        /// Whether the server consumed an ID that nobody will learn.
        consumed_ids: bool,
    },
    /// Writer `w` finishes `1 + count % 3` of its unfinished IDs, consecutive in ID order
    /// from the `pick`-th, committed or rolled back: the moment they become decided.
    Finish {
        /// The writer.
        w: u8,
        /// The first ID's index.
        pick: u8,
        /// The number of IDs, `1 + count % 3`.
        count: u8,
        /// The outcome (does not affect the tracker, only the truth's record).
        committed: bool,
        /// Pass the IDs in descending order.
        reverse: bool,
    },
    /// Writer `w` puts its announced position on the bus (spec §12.1).
    Announce {
        /// The writer.
        w: u8,
    },
    /// A message leaves the bus and reaches writer `to`; its sender ignores it (an echo).
    Deliver {
        /// Which message.
        msg: u8,
        /// The receiving writer.
        to: u8,
    },
    /// A message on the bus is duplicated.
    Duplicate {
        /// Which message.
        msg: u8,
    },
    /// A message on the bus is lost.
    Drop {
        /// Which message.
        msg: u8,
    },
    /// Writer `w` registers the IDs of every fetch in flight (an unanswered fetch gets one)
    /// and finishes every unfinished ID, in ascending order, committed: it becomes idle.
    /// Lets positions move in runs with many writers.
    Settle {
        /// The writer.
        w: u8,
    },
    /// A healthy network round: every writer announces and every announcement reaches
    /// every other writer, in writer order.
    Gossip,
    /// Writer `to` receives `value + 1` from an instance outside the writer list, or (with
    /// an empty writer list) from itself: either way it must be ignored (spec §6.4).
    Stray {
        /// The receiving writer.
        to: u8,
        /// Any value, possibly undecided or never handed out.
        value: u8,
    },
}

/// An announcement on the bus: `(instance, announced position)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Msg {
    from: usize,
    value: i64,
}

/// Several writers of one stream: each a [`Tracker`] checked against a
/// [`Model`](super::Model), one sequence, the global truth of which IDs are decided, and a
/// replication bus. [`apply`](Self::apply) checks model agreement, `check_invariants` and
/// global safety after every [`Op`]; [`quiesce`](Self::quiesce) checks liveness.
#[derive(Debug)]
pub struct Sim {
    names: Vec<String>,
    /// An empty writer list ("anyone may write"), every writer known from the start.
    open: bool,
    procs: Vec<Proc>,
    truth: Truth,
    bus: Vec<Msg>,
    steps: usize,
}

impl Sim {
    /// `writers` (at least 1) fresh writers `w0`, `w1`, …: each starts as on a fresh stream,
    /// `Tracker::new(w, W, [(w_i, 1)…], 1)`, and the sequence's first ID is 2. With `open`,
    /// the writer list is empty (anyone may write) but every writer is known at 1.
    pub fn new(writers: usize, open: bool) -> Sim {
        let names: Vec<String> = (0..writers.max(1)).map(|i| format!("w{i}")).collect();
        let list: Vec<&str> = if open {
            Vec::new()
        } else {
            names.iter().map(String::as_str).collect()
        };
        let start: Vec<(&str, i64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        let procs = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let tracker = Tracker::new(n, list.iter().copied(), start.iter().copied(), 1);
                let model = Model::new(n, &list, &start, 1);
                Proc::new(n, i, tracker, model)
            })
            .collect();
        Sim {
            names,
            open,
            procs,
            truth: Truth::new(1),
            bus: Vec::new(),
            steps: 0,
        }
    }

    /// The tracker of writer `w`.
    pub fn tracker(&self, w: usize) -> &Tracker {
        &self.procs[w % self.procs.len()].tracker
    }

    /// The number of writers.
    pub fn writers(&self) -> usize {
        self.procs.len()
    }

    /// The last value the sequence handed out.
    pub fn last_allocated(&self) -> i64 {
        self.truth.last()
    }

    /// Applies every op, checking after each, then [`quiesce`](Self::quiesce)s.
    ///
    /// # Errors
    ///
    /// The first violation, with the step, the op and the global truth.
    pub fn run(&mut self, ops: &[Op]) -> Result<(), String> {
        ops.iter().try_for_each(|op| self.apply(op))?;
        self.quiesce()
    }

    /// Applies one op, then checks every process.
    ///
    /// # Errors
    ///
    /// The first violation, with the step, the op and the global truth.
    pub fn apply(&mut self, op: &Op) -> Result<(), String> {
        self.steps += 1;
        self.step(op)
            .and_then(|()| self.check_all())
            .map_err(|e| format!("step {} ({op:?}): {e}\ntruth: {}", self.steps, self.truth))
    }

    fn step(&mut self, op: &Op) -> Result<(), String> {
        let n = self.procs.len();
        let truth = &mut self.truth;
        match *op {
            Op::BeginFetch { w } => self.procs[usize::from(w) % n].begin_fetch(),
            Op::Assign { w, fetch, n: k } => {
                if let Some(i) = pick(&self.procs, w, Proc::has_unanswered) {
                    self.procs[i].answer(truth, fetch.into(), 1 + usize::from(k % 3));
                }
                Ok(())
            }
            Op::CompleteFetch { w, fetch, n: k } => match pick(&self.procs, w, Proc::has_fetch) {
                Some(i) => self.procs[i].complete(truth, fetch.into(), 1 + usize::from(k % 3)),
                None => Ok(()),
            },
            Op::CancelFetch {
                w,
                fetch,
                consumed_ids,
            } => match pick(&self.procs, w, Proc::has_fetch) {
                Some(i) => self.procs[i].cancel(truth, fetch.into(), consumed_ids),
                None => Ok(()),
            },
            Op::Finish {
                w,
                pick: p,
                count,
                committed,
                reverse,
            } => match pick(&self.procs, w, Proc::has_unfinished) {
                Some(i) => self.procs[i].finish(truth, p.into(), count.into(), committed, reverse),
                None => Ok(()),
            },
            Op::Announce { w } => self.announce(usize::from(w) % n),
            Op::Deliver { msg, to } => {
                if self.bus.is_empty() {
                    return Ok(());
                }
                let m = self.bus.remove(usize::from(msg) % self.bus.len());
                let from = self.names[m.from].clone();
                self.procs[usize::from(to) % n].receive(&from, m.value)
            }
            Op::Duplicate { msg } => {
                if !self.bus.is_empty() {
                    let m = self.bus[usize::from(msg) % self.bus.len()];
                    self.bus.push(m);
                }
                Ok(())
            }
            Op::Drop { msg } => {
                if !self.bus.is_empty() {
                    self.bus.remove(usize::from(msg) % self.bus.len());
                }
                Ok(())
            }
            Op::Settle { w } => {
                let proc = &mut self.procs[usize::from(w) % n];
                while proc.has_fetch() {
                    proc.complete(truth, 0, 1)?;
                }
                while proc.has_unfinished() {
                    proc.finish(truth, 0, 2, true, false)?;
                }
                Ok(())
            }
            Op::Gossip => self.gossip(1),
            Op::Stray { to, value } => {
                let proc = &mut self.procs[usize::from(to) % n];
                let from = if self.open {
                    proc.name.clone()
                } else {
                    NOBODY.to_owned()
                };
                proc.receive(&from, i64::from(value) + 1)
            }
        }
    }

    /// Enqueues writer `i`'s announced position, which must cover only its decided IDs
    /// and be a decided value (I3, I7).
    fn announce(&mut self, i: usize) -> Result<(), String> {
        let value = self.procs[i].tracker.announced();
        let min = self.truth.min_undecided(Some(i));
        if value >= min || !self.truth.is_decided_value(value) {
            return Err(format!(
                "{}: announces {value}, undecided (own undecided from {min})",
                self.names[i]
            ));
        }
        self.bus.push(Msg { from: i, value });
        Ok(())
    }

    fn check_all(&mut self) -> Result<(), String> {
        let (names, truth) = (&self.names, &self.truth);
        self.procs
            .iter_mut()
            .try_for_each(|p| p.check(names, truth))
    }

    /// Liveness (spec §1.2, I10): finishes every unfinished ID, cancels every fetch and
    /// lets every writer announce to every other for a few rounds. Then every process must
    /// have `P` = the largest value anyone learnt, and every value above it must be a gap
    /// nobody learnt (a cancelled fetch's); after one more allocation and announcement
    /// rounds, `P` must be the sequence's last value everywhere.
    ///
    /// # Errors
    ///
    /// The first violation of safety or liveness.
    pub fn quiesce(&mut self) -> Result<(), String> {
        for i in 0..self.procs.len() {
            self.procs[i].settle(&mut self.truth)?;
            self.check_all().map_err(|e| format!("settling: {e}"))?;
        }
        self.gossip(3)?;
        let known = self
            .procs
            .iter()
            .map(|p| p.tracker.max_seen())
            .max()
            .unwrap_or(1);
        self.converged(known)?;
        for v in known + 1..=self.truth.last() {
            if !matches!(self.truth.fate(v), Some((_, Fate::Gap))) {
                return Err(format!(
                    "liveness: {v} > every max_seen {known} but not a gap\ntruth: {}",
                    self.truth
                ));
            }
        }
        // The next allocation passes the gaps nobody learnt.
        let first = &mut self.procs[0];
        first.begin_fetch()?;
        first.complete(&mut self.truth, 0, 1)?;
        first.settle(&mut self.truth)?;
        self.check_all()
            .map_err(|e| format!("final allocation: {e}"))?;
        self.gossip(3)?;
        self.converged(self.truth.last())
    }

    /// `rounds` times: every writer announces, and every announcement reaches every other
    /// writer.
    /// Messages already on the bus stay there.
    fn gossip(&mut self, rounds: usize) -> Result<(), String> {
        for _ in 0..rounds {
            for i in 0..self.procs.len() {
                let value = self.procs[i].tracker.announced();
                self.announce(i)?;
                self.bus.pop();
                for to in (0..self.procs.len()).filter(|&to| to != i) {
                    let from = self.names[i].clone();
                    self.procs[to].receive(&from, value)?;
                    self.check_all().map_err(|e| format!("gossip: {e}"))?;
                }
            }
        }
        Ok(())
    }

    fn converged(&self, target: i64) -> Result<(), String> {
        for p in &self.procs {
            let t = &p.tracker;
            if !t.is_idle() || t.persisted_upto() != target || t.max_seen() != target {
                return Err(format!(
                    "liveness: {} quiescent at P {}, max_seen {}, positions {:?}; expected {target}\ntruth: {}",
                    p.name,
                    t.persisted_upto(),
                    t.max_seen(),
                    t.positions(),
                    self.truth
                ));
            }
        }
        Ok(())
    }
}

/// The first process from `w` (modulo, rotating) that satisfies `has`.
fn pick(procs: &[Proc], w: u8, has: impl Fn(&Proc) -> bool) -> Option<usize> {
    let n = procs.len();
    (0..n)
        .map(|i| (usize::from(w) + i) % n)
        .find(|&i| has(&procs[i]))
}

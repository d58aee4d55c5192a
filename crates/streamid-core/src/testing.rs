//! Test support shared by property tests, the async crate's tests and benchmarks
//! (feature `testing`).
//!
//! - [`Model`]: a naive, obviously correct reference implementation of one process's
//!   tracker, following the specification's text literally; the oracle for [`Tracker`]
//!   (and, through [`Model::startup`] and [`StartupInput`], for [`Startup`](crate::Startup)).
//! - [`Sim`]: a deterministic simulation of several writers (each a [`Tracker`] checked
//!   against a [`Model`]), one sequence and a replication bus that reorders, duplicates and
//!   drops announcements, asserting the safety guarantee (spec §1.2, §3.2) after every
//!   [`Op`] and liveness at quiescence.
//! - [`Solo`]: one tracker driven alone, with other writers simulated abstractly as
//!   truthful announcements of arbitrary consistent values; it starts from
//!   [`Tracker::new`] or from a database state through `Startup`.
//! - [`strategy`]: proptest strategies generating setups and op sequences for both.
//! - [`View`]: everything a caller can observe of a process, compared after every step.
//!
//! Nothing here is optimised: clarity first, since these are the oracles.

mod check;
mod model;
mod process;
mod sim;
mod solo;
pub mod strategy;
mod truth;

use std::collections::BTreeMap;

pub use model::{Model, StartupInput};
pub use sim::{Op, Sim};
pub use solo::{Solo, SoloOp};

use crate::Tracker;

/// The name no process uses: `writer_position` of an unknown writer must be `P`.
const NOBODY: &str = "nobody";

/// Everything a caller can observe of one process: the getters of spec §6.5 and the
/// counters. Two implementations agree when their views are equal after every command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// `persisted_upto()` (`P`).
    pub persisted_upto: i64,
    /// `announced()`.
    pub announced: i64,
    /// `minimal_local()`.
    pub minimal_local: i64,
    /// `max_seen()`.
    pub max_seen: i64,
    /// `is_idle()`.
    pub is_idle: bool,
    /// Number of local unfinished IDs.
    pub unfinished: usize,
    /// Number of fetches in flight.
    pub in_flight: usize,
    /// Number of finished IDs held back in `blocked`.
    pub blocked: usize,
    /// `positions()`.
    pub positions: BTreeMap<String, i64>,
    /// `writer_position(w)` for every name asked, plus one unknown name.
    pub writer_positions: BTreeMap<String, i64>,
}

impl View {
    /// The view of a [`Tracker`], asking `writer_position` for each of `names`.
    pub fn of_tracker(t: &Tracker, names: &[String]) -> View {
        View {
            persisted_upto: t.persisted_upto(),
            announced: t.announced(),
            minimal_local: t.minimal_local(),
            max_seen: t.max_seen(),
            is_idle: t.is_idle(),
            unfinished: t.unfinished_count(),
            in_flight: t.in_flight_count(),
            blocked: t.blocked_count(),
            positions: t.positions(),
            writer_positions: asked(names)
                .map(|n| (n.to_owned(), t.writer_position(n)))
                .collect(),
        }
    }

    /// The view of a [`Model`], asking `writer_position` for each of `names`.
    pub fn of_model(m: &Model, names: &[String]) -> View {
        View {
            persisted_upto: m.persisted_upto(),
            announced: m.announced(),
            minimal_local: m.minimal_local(),
            max_seen: m.max_seen(),
            is_idle: m.is_idle(),
            unfinished: m.unfinished().len(),
            in_flight: m.in_flight_count(),
            blocked: m.blocked_count(),
            positions: m.positions(),
            writer_positions: asked(names)
                .map(|n| (n.to_owned(), m.writer_position(n)))
                .collect(),
        }
    }
}

fn asked(names: &[String]) -> impl Iterator<Item = &str> {
    names.iter().map(String::as_str).chain([NOBODY])
}

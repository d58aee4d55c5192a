//! The gap ledger and event log of a stream as `streamid gaps` shows them: rows of the
//! library's `stream_gaps` and `stream_events` tables, read by the backend modules.

use serde::Serialize;

/// A stream's gap ledger and its most recent events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Ledger {
    /// Whether the tables exist (a generator of this library created them).
    pub(crate) tables_exist: bool,
    /// IDs finished without a row, per writer and cause.
    pub(crate) gaps: Vec<GapRow>,
    /// The most recent events, newest first.
    pub(crate) events: Vec<EventRow>,
}

/// One row of `stream_gaps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct GapRow {
    /// The writer whose IDs they were.
    pub(crate) instance: String,
    /// Why they have no row (`rolled_back`, `abandoned`, `reclaimed`, …).
    pub(crate) cause: String,
    /// How many.
    pub(crate) gaps: i64,
}

/// One row of `stream_events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct EventRow {
    /// When, as the database prints it.
    pub(crate) at: String,
    /// The writer concerned.
    pub(crate) instance: String,
    /// What happened (`registered`, `reclaimed`, …).
    pub(crate) event: String,
    /// The writer's epoch, if recorded.
    pub(crate) epoch: Option<i64>,
    /// The position involved, if any.
    pub(crate) position: Option<i64>,
    /// The process that acted, if another one.
    pub(crate) by_instance: Option<String>,
}

//! The gap ledger: IDs finished without a row, counted per writer and cause (issue 5).
//!
//! A gap is harmless — readers skip it — but a stream with many gaps of one cause tells an
//! operator something (a client that keeps cancelling requests, a writer that keeps dying).
//! Counts are kept in memory and flushed as increments to `stream_gaps` by the
//! generator's housekeeping task.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// Why IDs were finished without a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum GapCause {
    /// The transaction was rolled back explicitly.
    RolledBack,
    /// The allocation or transaction was dropped without an outcome: an error return, a
    /// cancelled future, a panic.
    Abandoned,
    /// The server refused the COMMIT (serialization failure, deferred constraint, …).
    CommitFailed,
    /// The COMMIT's outcome was unknown and PostgreSQL later reported it aborted.
    ResolvedAborted,
    /// A dead writer's position was raised by recovery to an ID taken for it (spec §12.6).
    Reclaimed,
}

impl GapCause {
    /// The name stored in `stream_gaps.cause`.
    pub fn as_str(self) -> &'static str {
        match self {
            GapCause::RolledBack => "rolled_back",
            GapCause::Abandoned => "abandoned",
            GapCause::CommitFailed => "commit_failed",
            GapCause::ResolvedAborted => "resolved_aborted",
            GapCause::Reclaimed => "reclaimed",
        }
    }
}

impl std::fmt::Display for GapCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Gap counts of one process, by (writer, cause).
#[derive(Default)]
pub(crate) struct GapLedger {
    inner: Mutex<Ledger>,
}

#[derive(Default)]
struct Ledger {
    /// Everything counted since the generator started.
    total: BTreeMap<(String, GapCause), u64>,
    /// Counted but not yet flushed to `stream_gaps`.
    unflushed: BTreeMap<(String, GapCause), u64>,
}

impl GapLedger {
    pub(crate) fn record(&self, writer: &str, cause: GapCause, count: u64) {
        if count == 0 {
            return;
        }
        let mut l = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        *l.total.entry((writer.to_owned(), cause)).or_default() += count;
        *l.unflushed.entry((writer.to_owned(), cause)).or_default() += count;
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<(String, GapCause), u64> {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .total
            .clone()
    }

    /// Takes the increments not yet flushed; give them back with
    /// [`restore`](Self::restore) if the flush fails.
    pub(crate) fn take_unflushed(&self) -> BTreeMap<(String, GapCause), u64> {
        std::mem::take(
            &mut self
                .inner
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .unflushed,
        )
    }

    pub(crate) fn restore(&self, increments: BTreeMap<(String, GapCause), u64>) {
        let mut l = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for (key, n) in increments {
            *l.unflushed.entry(key).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_flushes_increments() {
        let ledger = GapLedger::default();
        ledger.record("w", GapCause::RolledBack, 2);
        ledger.record("w", GapCause::RolledBack, 1);
        ledger.record("dead", GapCause::Reclaimed, 1);
        let taken = ledger.take_unflushed();
        assert_eq!(taken.get(&("w".to_owned(), GapCause::RolledBack)), Some(&3));
        assert!(ledger.take_unflushed().is_empty());
        ledger.restore(taken);
        assert_eq!(ledger.take_unflushed().len(), 2);
        assert_eq!(ledger.snapshot().values().sum::<u64>(), 4);
    }
}

//! The two readers that tail the table while it is written, and what they saw.
//!
//! - **naive**: `id > last`, `last` = the largest ID seen. Misses every row that commits
//!   after a row with a larger ID was read.
//! - **streamid**: `id > last AND id <= P`, where `P` is the reader generator's
//!   persisted-up-to position read *before* the query, then `last = P`. Nothing at or below
//!   `P` can still appear, so it misses nothing.
//!
//! Each reader records every ID in the order it saw it; [`crate::report`] compares that log
//! with the table.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use streamid::MultiWriterIdGenerator;
use tokio::sync::watch;

use crate::store::{IdRange, Store};

/// Pause between two reads of one reader.
pub(crate) const POLL: Duration = Duration::from_millis(2);

/// How a reader decides what to read next.
#[derive(Debug, Clone)]
pub(crate) enum ReaderKind {
    /// `id > largest seen`.
    Naive,
    /// `id > last P AND id <= P`, `P` from this (non-writer) generator.
    Streamid(MultiWriterIdGenerator),
}

impl ReaderKind {
    /// `"naive"` or `"streamid"`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            ReaderKind::Naive => "naive",
            ReaderKind::Streamid(_) => "streamid",
        }
    }
}

/// Tells the readers to keep tailing or to make their last read and stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Keep reading.
    Tail,
    /// Read once more, then return the log.
    Finish,
}

/// Every ID a reader saw, in the order it saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReaderLog {
    /// The IDs, as returned by successive queries.
    pub(crate) seen: Vec<i64>,
}

/// Rows seen so far, for the live view.
#[derive(Debug, Default)]
pub(crate) struct ReaderProgress {
    /// IDs received (duplicates included).
    pub(crate) seen: AtomicU64,
}

/// Tails the table until `phase` says [`Phase::Finish`], then reads once more.
///
/// # Errors
///
/// The first database error.
pub(crate) async fn run(
    kind: ReaderKind,
    store: Arc<Store>,
    mut phase: watch::Receiver<Phase>,
    progress: Arc<ReaderProgress>,
) -> Result<ReaderLog> {
    let mut log = ReaderLog::default();
    let mut last = 0;
    loop {
        let finishing = *phase.borrow_and_update() == Phase::Finish;
        let range = match &kind {
            ReaderKind::Naive => Some(IdRange {
                after: last,
                upto: None,
            }),
            ReaderKind::Streamid(generator) => {
                let p = generator.persisted_upto_position();
                (p > last).then_some(IdRange {
                    after: last,
                    upto: Some(p),
                })
            }
        };
        if let Some(range) = range {
            let ids = store
                .read_ids(range)
                .await
                .with_context(|| format!("the {} reader failed", kind.name()))?;
            last = match range.upto {
                Some(p) => p,
                None => ids.iter().copied().max().unwrap_or(last).max(last),
            };
            progress.seen.fetch_add(ids.len() as u64, Ordering::Relaxed);
            log.seen.extend(ids);
        }
        if finishing {
            return Ok(log);
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            changed = phase.changed() => {
                if changed.is_err() {
                    // The demo is gone (it failed elsewhere); nobody wants the log.
                    return Ok(log);
                }
            }
        }
    }
}

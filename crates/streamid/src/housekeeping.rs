//! Per-generator housekeeping (issue 5): the lease heartbeat and re-registration after a
//! lost lease, the gap-ledger flush, and dead-writer recovery (spec §12.6).
//!
//! One task per generator, ticking every `reclaim_interval`; it holds only a weak reference
//! to the stream state, so dropping the generator stops it (and drops the lease, whose
//! connection closing releases the lock).

use std::sync::{Arc, Weak};

use tokio::task::JoinHandle;

use crate::backend::Backend;
use crate::gaps::GapCause;
use crate::state::StreamState;

/// What proves this process alive while it writes.
pub(crate) enum WriterLease {
    /// A PostgreSQL session-level advisory lock on a dedicated connection.
    Postgres(crate::postgres::lease::Lease),
    /// A lock on a file next to the SQLite database, held until dropped.
    Sqlite {
        _held: crate::sqlite::lease::FileLease,
    },
}

/// The running task; dropping it stops the task.
pub(crate) struct Housekeeping {
    task: JoinHandle<()>,
}

impl Drop for Housekeeping {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Housekeeping {
    pub(crate) fn spawn(
        state: &Arc<StreamState>,
        backend: Backend,
        lease: Option<WriterLease>,
    ) -> Housekeeping {
        let task = tokio::spawn(run(Arc::downgrade(state), backend, lease));
        Housekeeping { task }
    }
}

async fn run(state: Weak<StreamState>, backend: Backend, mut lease: Option<WriterLease>) {
    let Some(interval) = state.upgrade().map(|s| s.config.reclaim_interval) else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(state) = state.upgrade() else {
            return;
        };
        keep_lease(&state, &backend, &mut lease).await;
        flush_gaps(&state, &backend).await;
        let last = keep_sequence_ahead(&state, &backend).await;
        if state.config.reclaim
            && let Some(last) = last
        {
            reclaim_dead_writers(&state, &backend, last).await;
        }
    }
}

/// Heartbeat on the lease; after losing it (connection gone, or epoch fenced), refuse
/// allocation and try to take it back and register a new epoch.
async fn keep_lease(state: &StreamState, backend: &Backend, lease: &mut Option<WriterLease>) {
    let Backend::Postgres { pg, .. } = backend else {
        return; // a file lock cannot be lost while the process lives
    };
    if !state.config.persists_position() {
        return;
    }
    let epoch = state.registration.epoch();
    let healthy = match lease.as_ref() {
        Some(WriterLease::Postgres(l)) if !state.registration.is_fenced() => {
            matches!(l.heartbeat(epoch).await, Ok(true))
        }
        _ => false,
    };
    if healthy {
        return;
    }
    state.fence("the lease was lost or the epoch fenced");
    *lease = None;
    let config = &state.config;
    let again = match crate::postgres::lease::Lease::acquire(
        &pg.pool,
        config,
        config.reclaim_interval,
    )
    .await
    {
        Ok(l) => l,
        Err(err) => {
            tracing::warn!(stream = %config.stream, error = %err, "re-acquiring the writer lease failed; retrying");
            return;
        }
    };
    match crate::postgres::lease::register(pg, config).await {
        Ok(epoch) => {
            if let Err(err) = again.tag(epoch).await {
                tracing::warn!(error = %err, "tagging the lease connection failed");
            }
            state.registration.registered(epoch);
            *lease = Some(WriterLease::Postgres(again));
            tracing::info!(stream = %config.stream, instance = %config.instance, epoch, "writer re-registered after losing its lease");
        }
        Err(err) => {
            tracing::warn!(stream = %config.stream, error = %err, "re-registering the writer failed; retrying");
        }
    }
}

/// Writes gap-ledger increments to `stream_gaps`; keeps them for the next tick on failure.
/// Also run by [`shutdown`](crate::MultiWriterIdGenerator::shutdown); increments are taken
/// under the ledger's lock, so concurrent flushes never write one twice.
pub(crate) async fn flush_gaps(state: &StreamState, backend: &Backend) {
    let increments = state.gaps.take_unflushed();
    if increments.is_empty() {
        return;
    }
    let rows = increments
        .iter()
        .map(|((writer, cause), n)| (writer.clone(), cause.as_str(), *n as i64))
        .collect();
    if let Err(err) = backend.add_gaps(&state.config.stream, rows).await {
        tracing::debug!(error = %err, "recording gaps failed; retrying at the next tick");
        state.gaps.restore(increments);
    }
}

/// The most values [`keep_sequence_ahead`] consumes: far above what a crash can lose (the
/// sequence values handed out since its last WAL flush, a fraction of a second's worth).
const MAX_SEQUENCE_CATCH_UP: i64 = 1_000_000;

/// After a database crash a sequence can come back below values it had already handed out
/// (its WAL record was never flushed), and would hand them out again — IDs that other
/// processes may already treat as gaps. A process that knows a larger allocated ID moves it
/// past that ID, by consuming values, never by setting it (which could undo a concurrent
/// `nextval`). Returns the last allocated value (internal form), or `None` if unreadable.
async fn keep_sequence_ahead(state: &StreamState, backend: &Backend) -> Option<i64> {
    // `max_seen` first: the sequence read after it is at least every value handed out by
    // then, unless it went backwards.
    let known = state.lock().max_seen();
    let last = backend.last_allocated().await.ok()?;
    if last >= known {
        return Some(last);
    }
    let config = &state.config;
    if known - last > MAX_SEQUENCE_CATCH_UP {
        // Far more than a crash can lose: a position from somewhere else (a hand-edited
        // row, a bogus announcement). Consuming that many values would hammer the database.
        tracing::error!(
            stream = %config.stream,
            last_allocated = config.sign * last,
            known_allocated = config.sign * known,
            "a position far beyond the sequence is known here; not moving the sequence"
        );
        return Some(last);
    }
    tracing::error!(
        stream = %config.stream,
        last_allocated = config.sign * last,
        known_allocated = config.sign * known,
        "the sequence went backwards (a crash lost unflushed sequence values?): moving it past \
         every ID known to be allocated"
    );
    match backend.advance_sequence_past(known).await {
        Ok(last) => Some(last),
        Err(err) => {
            tracing::warn!(stream = %config.stream, error = %err, "moving the sequence forward failed; retrying");
            None
        }
    }
}

/// Spec §12.6 step 5: while a listed writer holds `P` back below the last allocated ID,
/// try to prove it dead and raise it to a fresh ID.
async fn reclaim_dead_writers(state: &StreamState, backend: &Backend, last: i64) {
    let config = &state.config;
    if config.writers.is_empty() {
        return; // unknown writers cannot be proven dead
    }
    let (persisted, candidates) = {
        let t = state.lock();
        let p = t.persisted_upto();
        let positions = t.positions();
        let candidates: Vec<String> = config
            .writers
            .iter()
            .filter(|w| **w != config.instance && positions.get(*w).is_some_and(|&pos| pos <= p))
            .cloned()
            .collect();
        (p, candidates)
    };
    if candidates.is_empty() || last <= persisted {
        return; // nothing is held back
    }
    for writer in candidates {
        match backend.reclaim(config, &writer).await {
            Ok(Some((f, epoch))) => {
                tracing::warn!(
                    stream = %config.stream,
                    writer,
                    position = config.sign * f,
                    "recovered a dead writer: the database proved it can no longer commit"
                );
                state.gaps.record(&writer, GapCause::Reclaimed, 1);
                state.advance(&writer, f);
                state.announce_for(&writer, f, epoch);
            }
            Ok(None) => {}
            Err(err) => {
                tracing::debug!(stream = %config.stream, writer, error = %err, "recovering a writer failed");
            }
        }
    }
}

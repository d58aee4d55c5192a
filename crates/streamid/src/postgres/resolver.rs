//! Resolving unknown commit outcomes (spec §7.3, FIX-5).
//!
//! When COMMIT was sent and no reply came back, the transaction may have committed. Its IDs
//! stay unfinished — so `P`, the own position and the announced position stay below them —
//! until `pg_xact_status` says `committed` or `aborted`. This task polls on fresh pooled
//! connections with back-off, and finishes the IDs with the matching outcome.
//!
//! It must never finish IDs while their transaction can still commit: on any doubt (query
//! failed, status `in progress`) it polls again.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_postgres::types::Type;

use crate::gaps::GapCause;
use crate::postgres::statements::{self, XactFunctions};
use crate::state::{Outcome, StreamState};

const FIRST_POLL: Duration = Duration::from_millis(100);
const MAX_POLL: Duration = Duration::from_secs(5);
/// The longest wait after a poll that could not ask (server unreachable, query failed): the
/// back-off to `MAX_POLL` is for transactions PostgreSQL still reports `in progress`. Backing
/// off during an outage instead left the IDs unresolved for up to 5 s after the server was
/// back, holding every reader's position (RELIABILITY.md, PostgreSQL restart).
const MAX_RETRY_UNREACHABLE: Duration = Duration::from_secs(1);
/// A backend `idle in transaction` this long with our transaction never received COMMIT
/// (spec §7.3): ending it cannot lose a commit.
const ORPHAN_AFTER_SECS: f64 = 2.0;

/// A transaction whose COMMIT outcome is unknown.
#[derive(Debug)]
pub(crate) struct InDoubt {
    /// Internal form.
    pub(crate) ids: Vec<i64>,
    pub(crate) xid: i64,
}

/// Handle for submitting transactions in doubt; cheap to clone.
#[derive(Clone)]
pub(crate) struct Resolver {
    tx: mpsc::UnboundedSender<InDoubt>,
    pending: Arc<AtomicUsize>,
}

impl Resolver {
    /// Spawns the resolving task for one generator.
    pub(crate) fn spawn(
        state: Weak<StreamState>,
        pool: deadpool_postgres::Pool,
        xact: XactFunctions,
        warn_after: Duration,
    ) -> Resolver {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(rx, state, pool, xact, warn_after, Arc::clone(&pending)));
        Resolver { tx, pending }
    }

    /// Hands the IDs over; never blocks (called from `Drop`). If the task is gone (the
    /// runtime is shutting down) the IDs stay unfinished, which is safe.
    pub(crate) fn submit(&self, in_doubt: InDoubt) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(err) = self.tx.send(in_doubt) {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            tracing::error!(
                xid = err.0.xid,
                ids = ?err.0.ids,
                "cannot resolve a commit outcome: the resolver stopped; the IDs stay unfinished"
            );
        }
    }

    /// Transactions whose outcome is still unknown.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

struct Entry {
    in_doubt: InDoubt,
    since: Instant,
    next_poll: Instant,
    delay: Duration,
    warned: bool,
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<InDoubt>,
    state: Weak<StreamState>,
    pool: deadpool_postgres::Pool,
    xact: XactFunctions,
    warn_after: Duration,
    pending: Arc<AtomicUsize>,
) {
    let gauge = metrics::gauge!("streamid_commit_outcomes_unknown");
    let mut entries: Vec<Entry> = Vec::new();
    let mut senders_gone = false;
    loop {
        let next_poll = entries.iter().map(|e| e.next_poll).min();
        tokio::select! {
            received = rx.recv(), if !senders_gone => match received {
                Some(in_doubt) => {
                    let now = Instant::now();
                    entries.push(Entry {
                        in_doubt,
                        since: now,
                        next_poll: now + FIRST_POLL,
                        delay: FIRST_POLL,
                        warned: false,
                    });
                }
                None => senders_gone = true,
            },
            () = sleep_until(next_poll) => {}
        }
        if senders_gone && entries.is_empty() {
            return;
        }
        let Some(state) = state.upgrade() else { return };
        let now = Instant::now();
        let mut i = 0;
        while i < entries.len() {
            if entries[i].next_poll > now {
                i += 1;
                continue;
            }
            match poll(&pool, xact, entries[i].in_doubt.xid).await {
                Poll::Decided(outcome) => {
                    let entry = entries.swap_remove(i);
                    state.finish(&entry.in_doubt.ids, outcome);
                    pending.fetch_sub(1, Ordering::AcqRel);
                    tracing::info!(
                        xid = entry.in_doubt.xid,
                        committed = outcome == Outcome::Success,
                        "resolved a commit whose outcome was unknown"
                    );
                }
                pending => {
                    let e = &mut entries[i];
                    let cap = match pending {
                        Poll::Unreachable => MAX_RETRY_UNREACHABLE,
                        _ => MAX_POLL,
                    };
                    e.delay = (e.delay * 2).min(cap);
                    e.next_poll = Instant::now() + e.delay;
                    if !e.warned && e.since.elapsed() >= warn_after {
                        e.warned = true;
                        tracing::warn!(
                            xid = e.in_doubt.xid,
                            ids = ?e.in_doubt.ids,
                            waited_ms = e.since.elapsed().as_millis() as u64,
                            "commit outcome still unknown; the stream position waits for it"
                        );
                    }
                    i += 1;
                }
            }
        }
        gauge.set(entries.len() as f64);
    }
}

/// Sleeps until `at`, or forever without a deadline.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// What one poll learned.
enum Poll {
    /// PostgreSQL knows the outcome.
    Decided(Outcome),
    /// `in progress`: poll again, backing off.
    InProgress,
    /// The question could not be asked: poll again soon.
    Unreachable,
}

/// One poll of `pg_xact_status`.
async fn poll(pool: &deadpool_postgres::Pool, xact: XactFunctions, xid: i64) -> Poll {
    let Ok(client) = pool.get().await else {
        return Poll::Unreachable;
    };
    let xid_text = xid.to_string();
    let status = client
        .query_typed_one(xact.status, &[(&xid_text, Type::TEXT)])
        .await
        .and_then(|row| row.try_get::<_, Option<String>>(0));
    let Ok(status) = status else {
        return Poll::Unreachable;
    };
    match status.as_deref() {
        Some("committed") => Poll::Decided(Outcome::Success),
        Some("aborted") => Poll::Decided(Outcome::Failure(GapCause::ResolvedAborted)),
        // Too old to be tracked: long decided, and any row it made is long visible.
        None => Poll::Decided(Outcome::Failure(GapCause::ResolvedAborted)),
        Some(_) => {
            end_orphan(&client, xid).await;
            Poll::InProgress
        }
    }
}

/// A transaction whose COMMIT never reached the server stays `in progress` until the server
/// notices the client is gone. If its backend sits `idle in transaction`, COMMIT did not
/// arrive and cannot arrive any more (our side gave up on that connection), so ending the
/// backend aborts it without losing a commit.
async fn end_orphan(client: &tokio_postgres::Client, xid: i64) {
    let low = (xid as u64 & 0xFFFF_FFFF).to_string();
    let Ok(rows) = client
        .query_typed(statements::BACKEND_BY_XID, &[(&low, Type::TEXT)])
        .await
    else {
        return;
    };
    for row in rows {
        let (Ok(pid), Ok(state), Ok(secs)) = (
            row.try_get::<_, i32>(0),
            row.try_get::<_, String>(1),
            row.try_get::<_, f64>(2),
        ) else {
            continue;
        };
        if state == "idle in transaction" && secs >= ORPHAN_AFTER_SECS {
            tracing::warn!(
                pid,
                xid,
                "ending an orphaned backend whose COMMIT never arrived"
            );
            let _ = client
                .query_typed(statements::TERMINATE_BACKEND, &[(&pid, Type::INT4)])
                .await;
        }
    }
}

//! The coalesced `stream_positions` writer (spec §8.2–§8.4, FIX-6).
//!
//! One background task per writer generator owns the upsert. Callers only raise `latest`
//! (an atomic maximum) and wake the task; the task reads the newest value when it issues the
//! statement, so at most one upsert is in flight and values are never queued. Callers that
//! must know their value is recorded wait on a watch channel for the first write covering it.
//!
//! It must never block allocation or completion: a failed upsert is logged, reported to
//! waiters and retried with back-off.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::Error;

/// A write that failed, shared by every waiter it concerns.
pub(crate) type WriteFailure = Arc<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
struct WriteStatus {
    /// The largest value written (internal form).
    written: i64,
    /// Failed attempts so far.
    failures: u64,
    /// The value the last failed attempt tried to write, and why it failed.
    last_failure: Option<(i64, WriteFailure)>,
    /// The task has exited; nothing more will be written.
    stopped: bool,
}

struct Shared {
    latest: AtomicI64,
    dirty: Notify,
    closing: AtomicBool,
    status: watch::Sender<WriteStatus>,
}

/// Handle to the position-writing task. Dropping it makes the task flush once and exit.
pub(crate) struct PositionWriter {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

impl PositionWriter {
    /// Spawns the task. `written` is the value startup already recorded (internal form);
    /// `write(v)` performs the guarded upsert of internal value `v`; `interval` is the
    /// refresh tick for idle writers.
    pub(crate) fn spawn<F, Fut>(written: i64, interval: Duration, write: F) -> PositionWriter
    where
        F: Fn(i64) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Error>> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            latest: AtomicI64::new(written),
            dirty: Notify::new(),
            closing: AtomicBool::new(false),
            status: watch::Sender::new(WriteStatus {
                written,
                failures: 0,
                last_failure: None,
                stopped: false,
            }),
        });
        let task = tokio::spawn(run(Arc::clone(&shared), written, interval, write));
        PositionWriter {
            shared,
            task: Mutex::new(Some(task)),
        }
    }

    /// Raises the value to write at the next tick, without waking the task.
    pub(crate) fn note(&self, announced: i64) {
        self.shared.latest.fetch_max(announced, Ordering::AcqRel);
    }

    /// Raises the value to write and wakes the task.
    pub(crate) fn request(&self, announced: i64) {
        self.note(announced);
        self.shared.dirty.notify_one();
    }

    /// Waits until a value `>= value` is recorded, or until the attempt that would have
    /// covered it failed.
    pub(crate) async fn wait_recorded(&self, value: i64) -> Result<(), Option<WriteFailure>> {
        let mut rx = self.shared.status.subscribe();
        let failures_before = rx.borrow().failures;
        loop {
            {
                let s = rx.borrow_and_update();
                if s.written >= value {
                    return Ok(());
                }
                if s.failures > failures_before
                    && let Some((attempted, err)) = &s.last_failure
                    && *attempted >= value
                {
                    return Err(Some(Arc::clone(err)));
                }
                if s.stopped {
                    return Err(None);
                }
            }
            if rx.changed().await.is_err() {
                return Err(None);
            }
        }
    }

    /// Writes the newest value once more and stops the task, waiting at most `timeout`.
    pub(crate) async fn shutdown(&self, timeout: Duration) -> bool {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.dirty.notify_one();
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match task {
            Some(task) => tokio::time::timeout(timeout, task).await.is_ok(),
            None => true,
        }
    }
}

impl Drop for PositionWriter {
    fn drop(&mut self) {
        // The task flushes the newest value and exits on its own.
        self.shared.closing.store(true, Ordering::Release);
        self.shared.dirty.notify_one();
    }
}

async fn run<F, Fut>(shared: Arc<Shared>, mut written: i64, interval: Duration, write: F)
where
    F: Fn(i64) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = FIRST_BACKOFF;
    loop {
        tokio::select! {
            () = shared.dirty.notified() => {}
            _ = tick.tick() => {}
        }
        let closing = shared.closing.load(Ordering::Acquire);
        // Read the newest value now: requests made while an upsert ran are coalesced here.
        let value = shared.latest.load(Ordering::Acquire);
        if value > written {
            match write(value).await {
                Ok(()) => {
                    written = value;
                    backoff = FIRST_BACKOFF;
                    shared.status.send_modify(|s| s.written = value);
                }
                Err(err) => {
                    tracing::warn!(position = value, error = %err, "recording the stream position failed; retrying");
                    let err: WriteFailure = Arc::new(err);
                    shared.status.send_modify(|s| {
                        s.failures += 1;
                        s.last_failure = Some((value, err));
                    });
                    if !closing {
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        shared.dirty.notify_one();
                    }
                }
            }
        }
        if closing {
            shared.status.send_modify(|s| s.stopped = true);
            return;
        }
    }
}

//! The receiving side shared by the network transports: a task of the transport drives its
//! connection and forwards message payloads into a bounded queue; the queue closing means
//! the connection is lost.
//!
//! The queue is bounded and a full queue drops messages instead of waiting: a forwarding
//! task that waited would stop driving its connection, and on PostgreSQL the same
//! connection carries the driver's `pg_notify` calls — the driver, waiting for one of those,
//! would never drain the queue. Dropped messages are repaired by the periodic
//! re-announcement, like any other loss.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Subscriber, TransportError};

/// Messages the driver may fall behind by before new ones are dropped.
const CAPACITY: usize = 4096;

/// How long connecting, subscribing, publishing or a health check may take before the
/// connection counts as lost.
pub(crate) const NETWORK_TIMEOUT: Duration = Duration::from_secs(10);

/// How often an otherwise silent connection is checked (`SELECT` / `PING`), so that a
/// half-open TCP connection of a process that never publishes (a reader) is noticed.
pub(crate) const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// Aborts a task when dropped.
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why the connection ended, written by the forwarding task before it drops its sender.
type Reason = Arc<Mutex<Option<String>>>;

/// A new queue: the forwarding task's end and the subscriber's end (give the forwarding
/// task to [`Inbox::own`], so that dropping the subscriber stops it).
pub(crate) fn queue(transport: &'static str) -> (Outbox, Inbox) {
    let (tx, rx) = mpsc::channel(CAPACITY);
    let reason = Reason::default();
    (
        Outbox {
            tx,
            reason: Arc::clone(&reason),
            transport,
            dropped: 0,
        },
        Inbox {
            rx,
            reason,
            tasks: Vec::new(),
        },
    )
}

/// The forwarding task's end of the queue.
pub(crate) struct Outbox {
    tx: mpsc::Sender<String>,
    reason: Reason,
    transport: &'static str,
    dropped: u64,
}

impl Outbox {
    /// Queues one payload; false once the subscriber is gone (the task should end).
    pub(crate) fn deliver(&mut self, payload: String) -> bool {
        match self.tx.try_send(payload) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped += 1;
                if self.dropped <= 10 || self.dropped.is_multiple_of(1000) {
                    tracing::warn!(
                        transport = self.transport,
                        dropped = self.dropped,
                        "replication: the receive queue is full; dropped a message"
                    );
                }
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Records why the connection ended; the subscriber reports it once the queue is drained.
    pub(crate) fn lost(self, reason: impl Into<String>) {
        set_reason(&self.reason, reason.into());
    }
}

fn set_reason(slot: &Reason, reason: String) {
    let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
    // The first reason is the cause; later ones are consequences.
    if slot.is_none() {
        *slot = Some(reason);
    }
}

/// The subscriber's end: yields queued payloads, then the reason the connection ended.
pub(crate) struct Inbox {
    rx: mpsc::Receiver<String>,
    reason: Reason,
    tasks: Vec<AbortOnDrop>,
}

impl Inbox {
    /// Ties `task` to this subscriber: it is aborted when the subscriber is dropped.
    pub(crate) fn own(&mut self, task: JoinHandle<()>) {
        self.tasks.push(AbortOnDrop(task));
    }
}

impl Subscriber for Inbox {
    fn recv(&mut self) -> BoxFuture<'_, Result<String, TransportError>> {
        // Cancel safe: `mpsc::Receiver::recv` is, and nothing else is awaited.
        async move {
            match self.rx.recv().await {
                Some(payload) => Ok(payload),
                None => {
                    let reason = self
                        .reason
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .clone();
                    Err(reason
                        .unwrap_or_else(|| "connection closed".to_owned())
                        .into())
                }
            }
        }
        .boxed()
    }
}

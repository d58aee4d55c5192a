//! The state one generator shares with its allocations, transactions and background tasks:
//! the tracker behind its one mutex, and publication of every change (spec §6.6).
//!
//! Rule: the mutex is held for in-memory updates only — never across an `.await`, database
//! I/O or user code. Publication (watch channel, position writer) happens after the lock is
//! released and never blocks.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use streamid_core::{Changes, FetchTicket, Tracker};
use tokio::sync::watch;

use crate::config::ValidConfig;
use crate::persist::PositionWriter;

/// Whether the IDs being finished had their rows committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The transaction committed: schedule a `stream_positions` write.
    Success,
    /// No row will ever carry these IDs (gaps), and why: publish and count only.
    Failure(crate::gaps::GapCause),
}

/// Per-stream metric handles, registered once so the hot path does not build keys.
struct Metrics {
    persisted_upto: metrics::Gauge,
    unfinished: metrics::Gauge,
    finished_ok: metrics::Counter,
    finished_failed: metrics::Counter,
}

impl Metrics {
    fn new(stream: &str) -> Metrics {
        let label = [("stream", stream.to_owned())];
        Metrics {
            persisted_upto: metrics::gauge!("streamid_persisted_upto", &label),
            unfinished: metrics::gauge!("streamid_unfinished_ids", &label),
            finished_ok: metrics::counter!(
                "streamid_ids_finished_total",
                &[
                    ("stream", stream.to_owned()),
                    ("outcome", "success".to_owned())
                ]
            ),
            finished_failed: metrics::counter!(
                "streamid_ids_finished_total",
                &[
                    ("stream", stream.to_owned()),
                    ("outcome", "failure".to_owned())
                ]
            ),
        }
    }
}

/// A generator's shared state.
pub(crate) struct StreamState {
    pub(crate) config: ValidConfig,
    /// Poisoning is ignored: tracker operations do not panic (they return outcomes), so a
    /// panic elsewhere while the guard was held cannot have left the tracker half-updated.
    tracker: Mutex<Tracker>,
    /// The current token (API form), for [`subscribe`](crate::MultiWriterIdGenerator::subscribe).
    token: watch::Sender<i64>,
    /// Bumped on every observable change; waiters re-read the tracker when it moves.
    version: watch::Sender<u64>,
    /// Poked when the announced position moved and should be announced promptly (§12.2).
    pub(crate) announce: Arc<tokio::sync::Notify>,
    /// Set with `announce` when a local completion raised the announced position: the
    /// driver announces those at once, without waiting out the coalescing window of the
    /// announcements that only follow other writers (spec §12.2 items 1 and 2).
    pub(crate) own_completion: Arc<std::sync::atomic::AtomicBool>,
    /// This process finished an allocation of its own since it started: with an empty
    /// writer list, only such processes announce (spec §12.2).
    pub(crate) has_written: std::sync::atomic::AtomicBool,
    /// `Some` for configured writers (spec §8.2).
    pub(crate) writer: Option<PositionWriter>,
    /// The replication driver, once [`replicate`](crate::MultiWriterIdGenerator::replicate)
    /// started one; dropped with the state, which stops it.
    pub(crate) replication: Mutex<Option<crate::replication::Replication>>,
    /// This writer's registration (epoch and fenced flag), shared with the position
    /// writer so that a fenced writer never records a position.
    pub(crate) registration: Arc<Registration>,
    /// Positions recovered for dead writers, waiting to be announced on their behalf:
    /// `(writer, position, the epoch that fenced it)`.
    pub(crate) foreign: Mutex<Vec<(String, i64, i64)>>,
    /// The housekeeping task (lease, gap flush, recovery); dropped with the state.
    pub(crate) housekeeping: Mutex<Option<crate::housekeeping::Housekeeping>>,
    /// IDs finished without a row, by writer and cause.
    pub(crate) gaps: crate::gaps::GapLedger,
    /// Cached `instance_map` ids for token strings.
    pub(crate) instance_ids: crate::tokens::InstanceIds,
    metrics: Metrics,
}

impl StreamState {
    pub(crate) fn new(
        config: ValidConfig,
        tracker: Tracker,
        writer: Option<PositionWriter>,
        registration: Arc<Registration>,
    ) -> StreamState {
        let token = watch::Sender::new(config.sign * tracker.persisted_upto());
        let metrics = Metrics::new(&config.stream);
        metrics.persisted_upto.set(tracker.persisted_upto() as f64);
        StreamState {
            config,
            tracker: Mutex::new(tracker),
            token,
            version: watch::Sender::new(0),
            announce: Arc::new(tokio::sync::Notify::new()),
            own_completion: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            has_written: std::sync::atomic::AtomicBool::new(false),
            writer,
            registration,
            replication: Mutex::new(None),
            instance_ids: crate::tokens::InstanceIds::default(),
            gaps: crate::gaps::GapLedger::default(),
            foreign: Mutex::new(Vec::new()),
            housekeeping: Mutex::new(None),
            metrics,
        }
    }

    /// A receiver of the current token (API form).
    pub(crate) fn subscribe_token(&self) -> watch::Receiver<i64> {
        self.token.subscribe()
    }

    /// A receiver that changes whenever anything observable changed.
    pub(crate) fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Locks the tracker for a short, I/O-free critical section.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sign `f` (spec §0).
    pub(crate) fn sign(&self) -> i64 {
        self.config.sign
    }

    /// Finishes local IDs (internal form) and publishes. Returns the announced position
    /// (internal) right after, the value a successful completion waits to see recorded.
    /// Never blocks, never panics: safe in `Drop`.
    pub(crate) fn finish(&self, ids: &[i64], outcome: Outcome) -> i64 {
        let (result, tracker_view) = {
            let mut t = self.lock();
            let result = t.finish(ids);
            (result, View::of(&t))
        };
        if result.unknown_ids > 0 {
            tracing::error!(
                stream = %self.config.stream,
                unknown = result.unknown_ids,
                "finished IDs that were not unfinished; this is a bug in streamid"
            );
        }
        match outcome {
            Outcome::Success => self.metrics.finished_ok.increment(ids.len() as u64),
            Outcome::Failure(cause) => {
                self.metrics.finished_failed.increment(ids.len() as u64);
                self.gaps
                    .record(&self.config.instance, cause, ids.len() as u64);
            }
        }
        self.has_written
            .store(true, std::sync::atomic::Ordering::Release);
        if result.changes.announced {
            self.own_completion
                .store(true, std::sync::atomic::Ordering::Release);
            self.announce.notify_one();
        }
        self.publish(result.changes, tracker_view, outcome == Outcome::Success);
        tracker_view.announced
    }

    /// Queues an announcement of a recovered writer's position (internal form) and wakes
    /// the announcer (spec §12.6 step 4).
    pub(crate) fn announce_for(&self, writer: &str, position: i64, epoch: i64) {
        self.foreign
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((writer.to_owned(), position, epoch));
        self.announce.notify_one();
    }

    /// Refuses allocation while fenced (issue 5).
    pub(crate) fn check_not_fenced(&self) -> Result<(), crate::Error> {
        if self.registration.is_fenced() {
            return Err(crate::Error::Fenced {
                stream: self.config.stream.clone(),
                instance: self.config.instance.clone(),
            });
        }
        Ok(())
    }

    /// The epoch check a registered PostgreSQL writer adds to its transactions.
    pub(crate) fn fence_check(
        &self,
        writer_lock: i64,
    ) -> Option<crate::postgres::statements::Fence> {
        let epoch = self.registration.epoch();
        (epoch > 0).then(|| crate::postgres::statements::Fence {
            epoch,
            tag: format!("{}:{epoch}", crate::keys::app_prefix(writer_lock)),
        })
    }

    /// Marks this writer fenced (logged once per transition).
    pub(crate) fn fence(&self, why: &str) {
        if !self
            .registration
            .fenced
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            tracing::error!(
                stream = %self.config.stream,
                instance = %self.config.instance,
                why,
                "this writer is fenced: allocation is refused until it re-registers"
            );
        }
    }

    /// Starts a fetch: the returned guard cancels it if dropped before registration.
    pub(crate) fn begin_fetch(self: &Arc<Self>) -> FetchGuard {
        let ticket = self.lock().begin_fetch();
        FetchGuard {
            state: Arc::clone(self),
            ticket: Some(ticket),
        }
    }

    /// Applies another writer's position (internal form) and publishes.
    pub(crate) fn advance(&self, instance: &str, value: i64) {
        let (outcome, view) = {
            let mut t = self.lock();
            let outcome = t.advance(instance, value);
            (outcome, View::of(&t))
        };
        match outcome {
            streamid_core::Advance::Applied(changes) => {
                // With an empty writer list, processes would echo each other's every write;
                // they announce at the next tick instead (spec §12.2 item 2).
                if changes.announced && !self.config.writers.is_empty() {
                    self.announce.notify_one();
                }
                self.publish(changes, view, false);
            }
            streamid_core::Advance::IgnoredOwn => tracing::debug!(
                stream = %self.config.stream,
                instance,
                "ignored a position for this instance: its own position moves only by completion"
            ),
            streamid_core::Advance::IgnoredUnlisted => tracing::warn!(
                stream = %self.config.stream,
                instance,
                value = self.sign() * value,
                "ignored a position from an instance that is not in the writer list"
            ),
        }
    }

    fn publish(&self, changes: Changes, view: View, write_position: bool) {
        self.metrics.unfinished.set(view.unfinished as f64);
        if changes.any() {
            self.metrics.persisted_upto.set(view.persisted as f64);
            let token = self.sign() * view.persisted;
            self.token
                .send_if_modified(|t| std::mem::replace(t, token) != token);
            self.version.send_modify(|v| *v += 1);
        }
        if let Some(writer) = &self.writer {
            if write_position {
                writer.request(view.announced);
            } else if changes.announced {
                // Idle writers follow the stream; their row is refreshed at the next tick.
                writer.note(view.announced);
            }
        }
    }
}

/// A writer's registration in `stream_writers` (PostgreSQL): its epoch (0 when not
/// registered) and whether it knows itself fenced (issue 5).
#[derive(Default)]
pub(crate) struct Registration {
    epoch: std::sync::atomic::AtomicI64,
    pub(crate) fenced: std::sync::atomic::AtomicBool,
}

impl Registration {
    pub(crate) fn epoch(&self) -> i64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn is_fenced(&self) -> bool {
        self.fenced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Records a new epoch and lifts the fence.
    pub(crate) fn registered(&self, epoch: i64) {
        self.epoch
            .store(epoch, std::sync::atomic::Ordering::Release);
        self.fenced
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

/// Values read under the lock for publication after it.
#[derive(Clone, Copy)]
struct View {
    persisted: i64,
    announced: i64,
    unfinished: usize,
}

impl View {
    fn of(t: &Tracker) -> View {
        View {
            persisted: t.persisted_upto(),
            announced: t.announced(),
            unfinished: t.unfinished_count(),
        }
    }
}

/// A fetch in flight (spec §5.2). Dropping it before [`register`](Self::register) — the
/// fetch failed, or its future was cancelled — removes the marker and releases whatever it
/// held back (FIX-5).
pub(crate) struct FetchGuard {
    state: Arc<StreamState>,
    ticket: Option<FetchTicket>,
}

impl FetchGuard {
    /// Registers the fetched IDs (internal form) in one critical section. On a refusal the
    /// fetch is cancelled and the IDs must not be used.
    pub(crate) fn register(mut self, ids: &[i64]) -> Result<(), crate::Error> {
        let Some(ticket) = self.ticket.take() else {
            return Ok(());
        };
        let refused = self.state.lock().register(ticket, ids);
        match refused {
            Ok(()) => Ok(()),
            Err(streamid_core::RegisterError::NotAboveMarker { id, marker }) => {
                self.republish();
                let sign = self.state.sign();
                Err(crate::Error::SequenceWentBackwards {
                    sequence: self.sequence_name(),
                    id: sign * id,
                    known: sign * marker,
                })
            }
            Err(streamid_core::RegisterError::Empty) => {
                self.republish();
                Err(crate::Error::InvalidArgument(
                    "the sequence returned no IDs".to_owned(),
                ))
            }
        }
    }

    fn sequence_name(&self) -> String {
        self.state
            .config
            .sequence
            .as_ref()
            .map_or_else(|| "streamid_sequences".to_owned(), |s| s.plain())
    }

    /// After a refused registration (which cancelled the fetch), publish like a cancel.
    fn republish(&self) {
        let view = View::of(&self.state.lock());
        let all = Changes {
            persisted: true,
            announced: true,
            positions: true,
        };
        self.state.publish(all, view, false);
    }
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let (changes, view) = {
                let mut t = self.state.lock();
                let changes = t.cancel_fetch(ticket);
                (changes, View::of(&t))
            };
            self.state.publish(changes, view, false);
        }
    }
}

//! The replication driver: one task per replicating generator (spec §12.2–§12.4).
//!
//! It owns the transport connection and, in one loop: applies received announcements with
//! `advance` (ignoring other streams, own echoes and malformed messages); announces this
//! writer's position when it moved (coalesced: the newest value is read when sending) and at
//! every tick (FIX-9); and on every (re)connect resynchronises from `stream_positions` and
//! announces at once. It holds only a weak reference to the stream state, so dropping the
//! generator stops it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Instant;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::coalesce::Coalescer;
use super::{Announcement, Publisher, ReplicationOptions, ReplicationStatus, Transport};
use crate::backend::Backend;
use crate::state::StreamState;

#[derive(Default)]
struct Status {
    connected: bool,
    last_message: Option<Instant>,
    last_error: Option<String>,
    reconnects: u64,
    sent: u64,
    malformed: u64,
    stale: u64,
    heard: BTreeMap<String, Instant>,
}

/// A running replication driver; dropping it stops the task.
pub(crate) struct Replication {
    name: &'static str,
    stop: Arc<Notify>,
    task: JoinHandle<()>,
    status: Arc<Mutex<Status>>,
}

impl Replication {
    pub(crate) fn spawn(
        state: &Arc<StreamState>,
        backend: Backend,
        transport: Arc<dyn Transport>,
        options: ReplicationOptions,
    ) -> Replication {
        let stop = Arc::new(Notify::new());
        let status = Arc::new(Mutex::new(Status::default()));
        let driver = Driver {
            state: Arc::downgrade(state),
            announce: Arc::clone(&state.announce),
            own_completion: Arc::clone(&state.own_completion),
            stream: state.config.stream.clone(),
            instance: state.config.instance.clone(),
            sign: state.config.sign,
            epochs: std::collections::HashMap::new(),
            backend,
            transport: Arc::clone(&transport),
            options,
            status: Arc::clone(&status),
            last_sent: None,
        };
        let task = tokio::spawn(driver.run(Arc::clone(&stop)));
        Replication {
            name: transport.name(),
            stop,
            task,
            status,
        }
    }

    pub(crate) fn status(&self) -> ReplicationStatus {
        let s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        ReplicationStatus {
            transport: self.name,
            connected: s.connected,
            since_last_message: s.last_message.map(|t| now.duration_since(t)),
            last_error: s.last_error.clone(),
            reconnects: s.reconnects,
            sent: s.sent,
            malformed: s.malformed,
            stale: s.stale,
            writers: s
                .heard
                .iter()
                .map(|(w, t)| (w.clone(), now.duration_since(*t)))
                .collect(),
        }
    }
}

impl Drop for Replication {
    fn drop(&mut self) {
        self.stop.notify_one();
        self.task.abort();
    }
}

struct Driver {
    state: Weak<StreamState>,
    announce: Arc<Notify>,
    own_completion: Arc<std::sync::atomic::AtomicBool>,
    stream: String,
    instance: String,
    sign: i64,
    /// The highest registration epoch heard of per writer: announcements of an older epoch
    /// come from an incarnation that was replaced, and are dropped (issue 5).
    epochs: std::collections::HashMap<String, u64>,
    backend: Backend,
    transport: Arc<dyn Transport>,
    options: ReplicationOptions,
    status: Arc<Mutex<Status>>,
    /// The last position sent and when.
    last_sent: Option<(i64, Instant)>,
}

/// Why the connection loop ended.
enum End {
    Stop,
    Lost,
}

impl Driver {
    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn run(mut self, stop: Arc<Notify>) {
        let mut delay = self.options.reconnect_min;
        loop {
            let connected = tokio::select! {
                () = stop.notified() => return,
                c = self.transport.connect() => c,
            };
            match connected {
                Ok((mut publisher, mut subscriber)) => {
                    delay = self.options.reconnect_min;
                    self.status().connected = true;
                    let end = self
                        .serve(&stop, publisher.as_mut(), subscriber.as_mut())
                        .await;
                    let mut s = self.status();
                    s.connected = false;
                    match end {
                        End::Stop => return,
                        End::Lost => s.reconnects += 1,
                    }
                }
                Err(err) => {
                    tracing::warn!(stream = %self.stream, transport = self.transport.name(), error = %err, "replication: connecting failed; retrying");
                    self.status().last_error = Some(err.to_string());
                }
            }
            if self.state.strong_count() == 0 {
                return;
            }
            tokio::select! {
                () = stop.notified() => return,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(self.options.reconnect_max);
        }
    }

    /// One connection's life: resync, announce, then serve until it is lost.
    async fn serve(
        &mut self,
        stop: &Notify,
        publisher: &mut dyn Publisher,
        subscriber: &mut dyn super::Subscriber,
    ) -> End {
        if self.resync().await.is_none() {
            return End::Stop;
        }
        if !self.send(publisher, true).await {
            return End::Lost;
        }
        let mut tick = tokio::time::interval(self.options.announce_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        // The wait for a coalesced announcement is an arm of the loop (see `coalesce`).
        let mut coalescer = Coalescer::new(self.options.coalesce);
        loop {
            let due = coalescer.due();
            let window = async {
                match due {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = stop.notified() => return End::Stop,
                () = window => {
                    coalescer.sent(Instant::now());
                    if !self.send(publisher, false).await {
                        return End::Lost;
                    }
                }
                message = subscriber.recv() => match message {
                    Ok(text) => {
                        if !self.receive(&text) {
                            return End::Stop;
                        }
                    }
                    Err(err) => {
                        tracing::warn!(stream = %self.stream, transport = self.transport.name(), error = %err, "replication: connection lost; reconnecting");
                        self.status().last_error = Some(err.to_string());
                        return End::Lost;
                    }
                },
                () = self.announce.notified() => {
                    let own = self.own_completion.swap(false, Ordering::AcqRel);
                    let now = Instant::now();
                    if coalescer.request(own, self.last_sent.map(|(_, at)| at), now) {
                        coalescer.sent(now);
                        if !self.send(publisher, false).await {
                            return End::Lost;
                        }
                    }
                }
                _ = tick.tick() => {
                    if !self.send(publisher, true).await {
                        return End::Lost;
                    }
                }
            }
        }
    }

    /// Spec §12.4: after subscribing, apply every recorded position. `None` if the
    /// generator is gone.
    async fn resync(&mut self) -> Option<()> {
        match self.backend.load_epochs(&self.stream).await {
            Ok(epochs) => {
                for (instance, epoch) in epochs {
                    self.learn_epoch(&instance, epoch.max(0) as u64);
                }
            }
            Err(err) => {
                tracing::debug!(stream = %self.stream, error = %err, "replication: reading writer epochs failed");
            }
        }
        let rows = self.backend.load_positions(&self.stream).await;
        // Read after the rows: rows hold decided values (I7), at most the sequence's value
        // then. One above it was edited in or restored; applying it would let `P` pass IDs
        // not yet handed out or in flight (RELIABILITY.md, "Bad input").
        let last = self.backend.last_allocated().await;
        let state = self.state.upgrade()?;
        match (rows, last) {
            (Ok(rows), Ok(last)) => {
                for (instance, value) in rows {
                    let internal = self.sign * value;
                    if instance == self.instance {
                        continue;
                    } else if internal > last {
                        tracing::error!(
                            stream = %self.stream,
                            instance,
                            position = value,
                            last_allocated = self.sign * last,
                            "replication: ignored a stream_positions row from the future (ahead of the sequence: edited by hand or restored?)"
                        );
                        continue;
                    }
                    state.advance(&instance, internal);
                }
            }
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(stream = %self.stream, error = %err, "replication: resync from stream_positions failed");
            }
        }
        Some(())
    }

    /// Announces the current announced position if this process is a writer (spec §12.2);
    /// `force` re-sends an unchanged value (periodic and on connect). False if the
    /// connection failed.
    async fn send(&mut self, publisher: &mut dyn Publisher, force: bool) -> bool {
        let Some(state) = self.state.upgrade() else {
            return true;
        };
        // Positions recovered for dead writers go out on their behalf (spec §12.6 step 4).
        let foreign: Vec<(String, i64, i64)> =
            std::mem::take(&mut *state.foreign.lock().unwrap_or_else(PoisonError::into_inner));
        for (instance, position, epoch) in foreign {
            let epoch = epoch.max(0) as u64;
            self.learn_epoch(&instance, epoch);
            let message = Announcement {
                stream: self.stream.clone(),
                instance,
                position,
                epoch,
            }
            .encode();
            if let Some(message) = message
                && let Err(err) = publisher.publish(&message).await
            {
                self.status().last_error = Some(err.to_string());
                return false;
            }
        }
        let writes = state.config.persists_position()
            || (state.config.writers.is_empty() && state.has_written.load(Ordering::Acquire));
        // A fenced writer is silent: its replacement may already hold IDs it would cover.
        if !writes || state.registration.is_fenced() {
            return true;
        }
        let epoch = state.registration.epoch().max(0) as u64;
        let position = state.lock().announced();
        drop(state);
        if !force && self.last_sent.is_some_and(|(p, _)| p == position) {
            return true;
        }
        let message = Announcement {
            stream: self.stream.clone(),
            instance: self.instance.clone(),
            position,
            epoch,
        }
        .encode();
        let Some(message) = message else {
            tracing::error!(stream = %self.stream, "replication: stream and instance names are too long to announce");
            return true;
        };
        match publisher.publish(&message).await {
            Ok(()) => {
                self.last_sent = Some((position, Instant::now()));
                self.status().sent += 1;
                true
            }
            Err(err) => {
                tracing::warn!(stream = %self.stream, error = %err, "replication: announcing failed; reconnecting");
                self.status().last_error = Some(err.to_string());
                false
            }
        }
    }

    /// Records `epoch` for `instance`; false if a newer epoch is already known (the sender
    /// was replaced by a new incarnation).
    fn learn_epoch(&mut self, instance: &str, epoch: u64) -> bool {
        match self.epochs.get_mut(instance) {
            Some(known) if *known > epoch => false,
            Some(known) => {
                *known = epoch;
                true
            }
            None => {
                self.epochs.insert(instance.to_owned(), epoch);
                true
            }
        }
    }

    /// Applies one message (spec §12.3). False if the generator is gone.
    fn receive(&mut self, text: &str) -> bool {
        let now = Instant::now();
        self.status().last_message = Some(now);
        let announcement = match Announcement::decode(text) {
            Ok(a) => a,
            Err(err) => {
                let count = {
                    let mut s = self.status();
                    s.malformed += 1;
                    s.malformed
                };
                // Logged at the first few and then every thousandth: a noisy channel must
                // not flood the logs.
                if count <= 10 || count % 1000 == 0 {
                    tracing::warn!(stream = %self.stream, error = %err, count, "replication: dropped a malformed message");
                }
                return true;
            }
        };
        if announcement.stream != self.stream || announcement.instance == self.instance {
            return true;
        }
        if !self.learn_epoch(&announcement.instance, announcement.epoch) {
            self.status().stale += 1;
            tracing::debug!(
                stream = %self.stream,
                instance = %announcement.instance,
                epoch = announcement.epoch,
                "replication: dropped an announcement of a replaced incarnation"
            );
            return true;
        }
        let Some(state) = self.state.upgrade() else {
            return false;
        };
        self.status()
            .heard
            .insert(announcement.instance.clone(), now);
        state.advance(&announcement.instance, announcement.position);
        true
    }
}

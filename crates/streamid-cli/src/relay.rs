//! An in-process stand-in for replication: passes each writer's own position to every
//! other generator of the demo.
//!
//! In a deployment each generator lives in its own process and learns the others'
//! positions through a replication transport (LISTEN/NOTIFY, Redis, NATS). The library's
//! transports are not built yet, so this task polls every [`POLL`] and, when a writer's
//! `current_token_for_writer(own)` changed, calls `advance(writer, position)` on all other
//! generators. `advance` is idempotent and monotonic, so a position relayed twice or late
//! is harmless. Replace this module with a transport when one exists.

use std::time::Duration;

use streamid::MultiWriterIdGenerator;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// How often writers' positions are checked.
pub(crate) const POLL: Duration = Duration::from_millis(1);

/// The running relay; [`stop`](Self::stop) it when the demo ends.
#[derive(Debug)]
pub(crate) struct Relay {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Starts relaying the positions of `writers` to each other and to `readers`.
    pub(crate) fn spawn(
        writers: Vec<MultiWriterIdGenerator>,
        readers: Vec<MultiWriterIdGenerator>,
    ) -> Relay {
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(relay(writers, readers, stopped));
        Relay { stop, task }
    }

    /// Relays once more and stops.
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!("the relay task ended abnormally: {e}");
        }
    }
}

async fn relay(
    writers: Vec<MultiWriterIdGenerator>,
    readers: Vec<MultiWriterIdGenerator>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut relayed = vec![i64::MIN; writers.len()];
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        let last_round = *stopped.borrow();
        relay_once(&writers, &readers, &mut relayed);
        if last_round {
            return;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => {}
        }
    }
}

/// Passes every writer position that changed since the last round to all other generators.
fn relay_once(
    writers: &[MultiWriterIdGenerator],
    readers: &[MultiWriterIdGenerator],
    relayed: &mut [i64],
) {
    for (i, (writer, last)) in writers.iter().zip(relayed.iter_mut()).enumerate() {
        let name = writer.instance_name();
        let position = writer.current_token_for_writer(name);
        if position == *last {
            continue;
        }
        let others = writers
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, g)| g)
            .chain(readers);
        for other in others {
            other.advance(name, position);
        }
        *last = position;
    }
}

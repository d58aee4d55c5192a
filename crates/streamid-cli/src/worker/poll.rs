//! `--replication poll`: a replication transport that reads `stream_positions` instead of
//! listening to a channel.
//!
//! Every writer already records its position there (coalesced, right after its commits, and
//! refreshed periodically when idle), and the library itself applies those rows when a
//! transport (re)connects. Polling them is therefore as safe as that resynchronisation; it
//! is only slower (one query per [`POLL_POSITIONS`](super::POLL_POSITIONS)) and needs no
//! extra infrastructure, which makes it the way for processes sharing one SQLite file to
//! learn each other's positions. Announcing is a no-op: the library's position writer
//! already publishes by writing the rows.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use streamid::replication::{
    Announcement, Connection, Publisher, Subscriber, Transport, TransportError,
};

use crate::exit::one_line;
use crate::store::Store;

/// A boxed future, as the transport traits take them.
type Boxed<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Polls the stream's rows of `stream_positions` every `every`.
pub(crate) struct PositionsPoll {
    store: Arc<Store>,
    every: Duration,
}

impl PositionsPoll {
    pub(crate) fn new(store: Arc<Store>, every: Duration) -> PositionsPoll {
        PositionsPoll { store, every }
    }
}

impl Transport for PositionsPoll {
    fn name(&self) -> &'static str {
        "stream_positions poll"
    }

    fn connect(&self) -> Boxed<'static, Result<Connection, TransportError>> {
        let poller = Poller {
            store: Arc::clone(&self.store),
            every: self.every,
            heard: HashMap::new(),
            queue: VecDeque::new(),
        };
        Box::pin(async move {
            Ok((
                Box::new(Silent) as Box<dyn Publisher>,
                Box::new(poller) as Box<dyn Subscriber>,
            ))
        })
    }
}

/// Publishes nothing: the position writer's rows are the announcements.
struct Silent;

impl Publisher for Silent {
    fn publish<'a>(&'a mut self, _message: &'a str) -> Boxed<'a, Result<(), TransportError>> {
        Box::pin(async { Ok(()) })
    }
}

struct Poller {
    store: Arc<Store>,
    every: Duration,
    /// The last position passed on per writer: only changes become messages.
    heard: HashMap<String, i64>,
    /// Messages found by the last poll and not yet received.
    queue: VecDeque<String>,
}

impl Subscriber for Poller {
    fn recv(&mut self) -> Boxed<'_, Result<String, TransportError>> {
        Box::pin(async move {
            loop {
                if let Some(message) = self.queue.pop_front() {
                    return Ok(message);
                }
                tokio::time::sleep(self.every).await;
                let stream = &self.store.layout().stream;
                // A failed read counts as a lost connection: the driver reconnects with
                // back-off and resynchronises.
                let rows = self
                    .store
                    .database()
                    .recorded_positions(stream)
                    .await
                    .map_err(|e| TransportError::from(one_line(&e)))?;
                for (instance, position) in rows {
                    if self.heard.get(&instance) == Some(&position) {
                        continue;
                    }
                    self.heard.insert(instance.clone(), position);
                    // Forwards streams only (the workers' streams): API form = internal.
                    let message = Announcement {
                        stream: stream.clone(),
                        instance,
                        position,
                        epoch: 0,
                    }
                    .encode();
                    self.queue.extend(message);
                }
            }
        })
    }
}

//! [`InProcess`]: a transport between generators of one process (tests, simulations, and
//! processes that run several writers).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::{broadcast, watch};

use super::{Connection, Publisher, Subscriber, Transport, TransportError};

/// Messages a subscriber may fall behind by before it starts losing the oldest (lost
/// messages are repaired by the periodic re-announcement).
const CAPACITY: usize = 4096;

/// An in-process pub/sub channel. Clone it and give a clone to each generator.
///
/// It can also simulate an unreliable network for tests: [`disconnect_all`](Self::disconnect_all)
/// drops every connection (each reconnects and resynchronises) and
/// [`set_delivering`](Self::set_delivering) silently loses messages.
///
/// # Examples
///
/// ```no_run
/// # async fn example(a: streamid::MultiWriterIdGenerator, b: streamid::MultiWriterIdGenerator) {
/// use streamid::replication::InProcess;
///
/// let bus = InProcess::new();
/// a.replicate(bus.clone());
/// b.replicate(bus);
/// # }
/// ```
#[derive(Clone)]
pub struct InProcess {
    hub: Arc<Hub>,
}

struct Hub {
    messages: broadcast::Sender<Arc<str>>,
    /// Bumped by `disconnect_all`; subscribers of an older generation fail.
    generation: watch::Sender<u64>,
    delivering: AtomicBool,
    refusing: AtomicBool,
}

impl InProcess {
    /// A new, empty channel.
    pub fn new() -> InProcess {
        InProcess {
            hub: Arc::new(Hub {
                messages: broadcast::channel(CAPACITY).0,
                generation: watch::Sender::new(0),
                delivering: AtomicBool::new(true),
                refusing: AtomicBool::new(false),
            }),
        }
    }

    /// Breaks every current connection, as if the network dropped them.
    pub fn disconnect_all(&self) {
        self.hub.generation.send_modify(|g| *g += 1);
    }

    /// While `false`, published messages are silently lost.
    pub fn set_delivering(&self, delivering: bool) {
        self.hub.delivering.store(delivering, Ordering::Release);
    }

    /// While `true`, connecting fails (and [`disconnect_all`](Self::disconnect_all) keeps
    /// everyone out).
    pub fn set_refusing(&self, refusing: bool) {
        self.hub.refusing.store(refusing, Ordering::Release);
    }
}

impl Default for InProcess {
    fn default() -> InProcess {
        InProcess::new()
    }
}

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcess")
            .field("subscribers", &self.hub.messages.receiver_count())
            .finish()
    }
}

impl Transport for InProcess {
    fn name(&self) -> &'static str {
        "in-process"
    }

    fn connect(&self) -> BoxFuture<'static, Result<Connection, TransportError>> {
        let hub = Arc::clone(&self.hub);
        async move {
            if hub.refusing.load(Ordering::Acquire) {
                return Err("the in-process channel refuses connections".into());
            }
            let generation = hub.generation.subscribe();
            let subscriber = InProcessSubscriber {
                messages: hub.messages.subscribe(),
                generation,
            };
            let publisher = InProcessPublisher { hub };
            Ok((
                Box::new(publisher) as Box<dyn Publisher>,
                Box::new(subscriber) as Box<dyn Subscriber>,
            ))
        }
        .boxed()
    }
}

struct InProcessPublisher {
    hub: Arc<Hub>,
}

impl Publisher for InProcessPublisher {
    fn publish<'a>(&'a mut self, message: &'a str) -> BoxFuture<'a, Result<(), TransportError>> {
        if self.hub.delivering.load(Ordering::Acquire) {
            // No receivers is not an error: nobody is listening yet.
            let _ = self.hub.messages.send(Arc::from(message));
        }
        futures_util::future::ready(Ok(())).boxed()
    }
}

struct InProcessSubscriber {
    messages: broadcast::Receiver<Arc<str>>,
    generation: watch::Receiver<u64>,
}

impl Subscriber for InProcessSubscriber {
    fn recv(&mut self) -> BoxFuture<'_, Result<String, TransportError>> {
        async move {
            loop {
                tokio::select! {
                    changed = self.generation.changed() => {
                        let _ = changed;
                        return Err("disconnected".into());
                    }
                    message = self.messages.recv() => match message {
                        Ok(m) => return Ok(m.to_string()),
                        // Lossy by design: the periodic re-announcement repairs it.
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => return Err("closed".into()),
                    },
                }
            }
        }
        .boxed()
    }
}

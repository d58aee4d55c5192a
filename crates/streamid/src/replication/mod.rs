//! Replication between processes (spec §12): writers announce their positions through a
//! transport; every process applies what it hears with `advance`.
//!
//! A [`Transport`] only moves opaque text messages; everything else — coalescing, the
//! periodic re-announcement that keeps idle writers from holding the stream back (FIX-9),
//! resynchronisation from `stream_positions` on every (re)connect, reconnecting with
//! back-off, dropping malformed messages and own echoes — lives in one driver shared by all
//! transports. Correctness never depends on delivery: transports may lose, duplicate or
//! reorder messages.
//!
//! Implementations: [`InProcess`] (several generators in one process), [`PgNotify`]
//! (PostgreSQL `LISTEN/NOTIFY`, no extra infrastructure) and, with the `redis` feature,
//! `Redis` pub/sub (`streamid::replication::Redis`).
//!
//! # Examples
//!
//! Every process of a stream replicates through the same channel:
//!
//! ```no_run
//! # async fn example(pool: deadpool_postgres::Pool) -> Result<(), streamid::Error> {
//! use std::time::Duration;
//!
//! use streamid::replication::{PgNotify, ReplicationOptions};
//! use streamid::{MultiWriterIdGenerator, StreamConfig};
//!
//! let config = StreamConfig::new("events", "writer-1")
//!     .table("events", "instance_name", "stream_ordering")
//!     .sequence("events_stream_seq")
//!     .writers(["writer-1", "writer-2"]);
//! let generator = MultiWriterIdGenerator::postgres(pool, config).await?;
//! let database: tokio_postgres::Config = "postgres://app@db.internal/app".parse()?;
//! generator.replicate_with(
//!     PgNotify::new(database),
//!     ReplicationOptions {
//!         announce_interval: Duration::from_millis(500),
//!         ..ReplicationOptions::default()
//!     },
//! );
//! if let Some(status) = generator.replication_status() {
//!     println!("connected: {}, reconnects: {}", status.connected, status.reconnects);
//! }
//! # Ok(())
//! # }
//! ```

mod coalesce;
mod codec;
mod driver;
mod in_process;
mod inbox;
mod postgres;
#[cfg(feature = "redis")]
mod redis;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::BoxFuture;

#[cfg(feature = "redis")]
pub use self::redis::Redis;
pub use codec::{Announcement, DecodeError};
pub(crate) use driver::Replication;
pub use in_process::InProcess;
pub use postgres::PgNotify;

/// The error a transport reports; the driver logs it and reconnects.
pub type TransportError = Box<dyn std::error::Error + Send + Sync>;

/// A connected, subscribed transport: its sending and receiving halves.
pub type Connection = (Box<dyn Publisher>, Box<dyn Subscriber>);

/// The sending half of a transport connection.
pub trait Publisher: Send {
    /// Sends one message to every subscriber of the channel (at most once).
    fn publish<'a>(&'a mut self, message: &'a str) -> BoxFuture<'a, Result<(), TransportError>>;
}

/// The receiving half of a transport connection.
pub trait Subscriber: Send {
    /// The next message; an error means the connection is lost (the driver reconnects).
    fn recv(&mut self) -> BoxFuture<'_, Result<String, TransportError>>;
}

/// A pub/sub channel that carries announcements between processes.
///
/// Implement it to replicate over another system; see [`InProcess`] for a small example.
pub trait Transport: Send + Sync + 'static {
    /// A short name for logs and [`ReplicationStatus`].
    fn name(&self) -> &'static str;

    /// Connects and subscribes. The subscription must be active when this returns: the
    /// driver resynchronises right after, and relies on hearing every later message.
    fn connect(&self) -> BoxFuture<'static, Result<Connection, TransportError>>;
}

/// Tuning for [`MultiWriterIdGenerator::replicate`](crate::MultiWriterIdGenerator::replicate).
#[derive(Debug, Clone)]
pub struct ReplicationOptions {
    /// How often each writer re-announces its position, changed or not (default 1 s):
    /// bounds how long an idle writer or a lost message holds other processes back.
    pub announce_interval: Duration,
    /// The coalescing window (default 1 ms); every announcement carries the newest
    /// position. One caused by local completions goes out at once unless another such one
    /// went out within the window; one that only follows other writers' positions (an idle
    /// writer's echo) waits until the window since the last announcement has passed.
    pub coalesce: Duration,
    /// First reconnection delay, doubled after each failure (default 100 ms).
    pub reconnect_min: Duration,
    /// Longest reconnection delay (default 1 s). Keep it at most `announce_interval`: once
    /// the transport is reachable again, a process must be back within the liveness bound of
    /// spec §1.2 (with 5 s, a reader sat out up to 5 s after a PostgreSQL restart; see
    /// RELIABILITY.md).
    pub reconnect_max: Duration,
}

impl Default for ReplicationOptions {
    fn default() -> ReplicationOptions {
        ReplicationOptions {
            announce_interval: Duration::from_secs(1),
            coalesce: Duration::from_millis(1),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(1),
        }
    }
}

/// What replication is doing, for health checks and dashboards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationStatus {
    /// The transport's name.
    pub transport: &'static str,
    /// Connected and subscribed right now.
    pub connected: bool,
    /// Time since the last message was received (any stream, any writer).
    pub since_last_message: Option<Duration>,
    /// The last connection or publishing error.
    pub last_error: Option<String>,
    /// Connections lost so far.
    pub reconnects: u64,
    /// Announcements sent.
    pub sent: u64,
    /// Messages dropped because they were malformed.
    pub malformed: u64,
    /// Announcements dropped because they came from an incarnation of their writer that a
    /// newer one replaced (an older registration epoch).
    pub stale: u64,
    /// Per writer of this stream, the time since it was last heard from (spec §12.4: a
    /// stream written but no longer replicated shows up here before readers stall).
    pub writers: BTreeMap<String, Duration>,
}

//! [`Redis`]: replication over Redis pub/sub (feature `redis`).

use std::pin::pin;

use ::redis::aio::{MultiplexedConnection, PubSubSink};
use ::redis::{AsyncConnectionConfig, Client};
use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;

use super::inbox::{self, HEALTH_CHECK_INTERVAL, NETWORK_TIMEOUT};
use super::{Connection, Publisher, Subscriber, Transport, TransportError};
use crate::Error;

/// Replication over Redis pub/sub (cargo feature `redis`), for deployments that already run
/// Redis.
///
/// Each replicating generator opens two connections of its own: one subscribed to the
/// channel, and one that `PUBLISH`es its announcements. Redis pub/sub delivers at most once
/// and nothing while a subscriber is disconnected; the replication driver repairs that by
/// resynchronising from `stream_positions` on every reconnect and by periodic
/// re-announcements (see [`replication`](crate::replication)). All streams may share one
/// channel (messages name their stream); every process of a stream must use the same server
/// and channel.
///
/// The subscribed connection is checked with `PING` every 30 s while idle, and connecting,
/// subscribing and publishing each give up after 10 s (the connection then counts as lost
/// and is re-established with back-off).
///
/// # Examples
///
/// ```no_run
/// # fn example(generator: streamid::MultiWriterIdGenerator) -> Result<(), streamid::Error> {
/// use streamid::replication::Redis;
///
/// generator.replicate(Redis::new("redis://127.0.0.1:6379/")?.channel("streamid-events"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Redis {
    client: Client,
    channel: String,
}

impl Redis {
    /// Replication through the Redis server at `url` (`redis://[:password@]host[:port][/db]`,
    /// or `redis+unix:///path`), on channel `"streamid"`. Nothing is connected yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if `url` is not a Redis URL (the message does not repeat a
    /// password it may hold).
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid::replication::Redis;
    ///
    /// let transport = Redis::new("redis://127.0.0.1:6379/").unwrap();
    /// assert_eq!(transport.channel_name(), "streamid");
    /// assert!(Redis::new("not a url").is_err());
    /// ```
    pub fn new(url: &str) -> Result<Redis, Error> {
        let client = Client::open(url).map_err(|e| Error::InvalidConfig {
            field: "redis url",
            value: redact(url),
            rule: e.to_string(),
        })?;
        Ok(Redis {
            client,
            channel: DEFAULT_CHANNEL.to_owned(),
        })
    }

    /// Uses channel `name` instead of `"streamid"`. Every process of a stream must use the
    /// same channel. Redis channel names are arbitrary strings.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid::replication::Redis;
    ///
    /// let transport = Redis::new("redis://127.0.0.1/").unwrap().channel("positions:events");
    /// assert_eq!(transport.channel_name(), "positions:events");
    /// ```
    #[must_use]
    pub fn channel(mut self, name: impl Into<String>) -> Redis {
        self.channel = name.into();
        self
    }

    /// The channel's name.
    pub fn channel_name(&self) -> &str {
        &self.channel
    }
}

/// The channel used unless [`Redis::channel`] says otherwise.
const DEFAULT_CHANNEL: &str = "streamid";

/// `url` without the password of its user-info part, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://<credentials hidden>{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the connection info: it may hold a password.
        f.debug_struct("Redis")
            .field(
                "addr",
                &self.client.get_connection_info().addr().to_string(),
            )
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Transport for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn connect(&self) -> BoxFuture<'static, Result<Connection, TransportError>> {
        let client = self.client.clone();
        let channel = self.channel.clone();
        async move {
            match tokio::time::timeout(NETWORK_TIMEOUT, connect(client, channel)).await {
                Ok(connected) => connected,
                Err(_) => Err(format!(
                    "connecting and subscribing took longer than {NETWORK_TIMEOUT:?}"
                )
                .into()),
            }
        }
        .boxed()
    }
}

async fn connect(client: Client, channel: String) -> Result<Connection, TransportError> {
    let (mut sink, mut messages) = client.get_async_pubsub().await?.split();
    // Confirmed by the server when this returns: the subscription is active.
    sink.subscribe(&channel).await?;
    let publishing = client
        .get_multiplexed_async_connection_with_config(
            &AsyncConnectionConfig::new()
                .set_connection_timeout(Some(NETWORK_TIMEOUT))
                .set_response_timeout(Some(NETWORK_TIMEOUT)),
        )
        .await?;
    let (mut outbox, mut inbox) = inbox::queue("redis");
    let listened = channel.clone();
    // Forwards this channel's messages, pings an idle connection now and then, and ends
    // (dropping the queue) when the pub/sub stream closes.
    inbox.own(tokio::spawn(async move {
        let mut health = pin!(health_check(sink));
        loop {
            tokio::select! {
                reason = &mut health => {
                    outbox.lost(reason);
                    return;
                }
                message = messages.next() => match message {
                    Some(message) => {
                        if message.get_channel_name() != listened {
                            continue;
                        }
                        // Not UTF-8: passed on lossily, so the driver counts it as malformed.
                        let payload = String::from_utf8_lossy(message.get_payload_bytes());
                        if !outbox.deliver(payload.into_owned()) {
                            return;
                        }
                    }
                    None => {
                        outbox.lost("the pub/sub connection was closed");
                        return;
                    }
                },
            }
        }
    }));
    let publisher = RedisPublisher {
        connection: publishing,
        channel,
    };
    Ok((
        Box::new(publisher) as Box<dyn Publisher>,
        Box::new(inbox) as Box<dyn Subscriber>,
    ))
}

/// Resolves (with the reason) once the subscribed connection fails a periodic `PING`.
async fn health_check(mut sink: PubSubSink) -> String {
    loop {
        tokio::time::sleep(HEALTH_CHECK_INTERVAL).await;
        match tokio::time::timeout(NETWORK_TIMEOUT, sink.ping::<::redis::Value>()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return format!("health check failed: {err}"),
            Err(_) => return format!("health check got no answer within {NETWORK_TIMEOUT:?}"),
        }
    }
}

struct RedisPublisher {
    connection: MultiplexedConnection,
    channel: String,
}

impl Publisher for RedisPublisher {
    fn publish<'a>(&'a mut self, message: &'a str) -> BoxFuture<'a, Result<(), TransportError>> {
        async move {
            // The number of subscribers that received it; zero is not an error.
            let _receivers: i64 = ::redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(message)
                .query_async(&mut self.connection)
                .await?;
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact("redis://:secret@host:6379/0"),
            "redis://<credentials hidden>@host:6379/0"
        );
        assert_eq!(redact("redis://host/"), "redis://host/");
        assert_eq!(redact("garbage"), "garbage");
    }
}

//! [`PgNotify`]: replication over PostgreSQL `LISTEN/NOTIFY`.

use std::pin::pin;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, Socket, Statement};

use super::inbox::{self, HEALTH_CHECK_INTERVAL, NETWORK_TIMEOUT};
use super::{Connection, Publisher, Subscriber, Transport, TransportError};
use crate::Error;
use crate::ident::Ident;

/// Replication over PostgreSQL `LISTEN/NOTIFY`: no infrastructure beyond the database the
/// stream already lives in.
///
/// Each replicating generator opens one **dedicated** connection of its own (not from the
/// pool: a pooled connection would lose its `LISTEN` when recycled), `LISTEN`s on the
/// channel, and publishes its announcements on the same connection with
/// `SELECT pg_notify(channel, message)` in autocommit — after the completion that caused
/// them, never inside a data transaction (a `NOTIFY` there makes PostgreSQL serialise
/// commits database-wide). The connection's `application_name` is
/// [`APPLICATION_NAME`](PgNotify::APPLICATION_NAME), so it is easy to spot in
/// `pg_stat_activity`.
///
/// Notifications are delivered within one database: every process of a stream must connect
/// to the same database, and all streams may share one channel (messages name their
/// stream). `NOTIFY` is lossy while a listener is disconnected; the replication driver
/// repairs that by resynchronising from `stream_positions` on every reconnect and by
/// periodic re-announcements (see [`replication`](crate::replication)).
///
/// The connection is checked every 30 s while idle, and connecting, subscribing and
/// publishing each give up after 10 s (the connection then counts as lost and is
/// re-established with back-off). A `connect_timeout` already set on the config is kept.
///
/// # TLS
///
/// [`new`](Self::new) connects without TLS ([`NoTls`]), like the connections of a
/// `deadpool_postgres` pool built with `NoTls`. To use TLS, pass any `tokio_postgres` TLS
/// connector (for example from `postgres-native-tls` or `tokio-postgres-rustls`) to
/// [`with_tls`](Self::with_tls).
///
/// # Examples
///
/// ```no_run
/// # async fn example(generator: streamid::MultiWriterIdGenerator) -> Result<(), streamid::Error> {
/// use streamid::replication::PgNotify;
///
/// let config: tokio_postgres::Config = "postgres://app@db.internal/app".parse()?;
/// generator.replicate(PgNotify::new(config).channel("streamid_events")?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgNotify<T = NoTls> {
    config: Config,
    tls: T,
    channel: Ident,
}

impl PgNotify<NoTls> {
    /// Replication over the database `config` connects to, without TLS, on channel
    /// `"streamid"`.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid::replication::PgNotify;
    ///
    /// let mut config = tokio_postgres::Config::new();
    /// config.host("127.0.0.1").user("app").dbname("app");
    /// let transport = PgNotify::new(config);
    /// assert_eq!(transport.channel_name(), "streamid");
    /// ```
    pub fn new(config: Config) -> PgNotify<NoTls> {
        PgNotify::with_tls(config, NoTls)
    }

    /// The `application_name` of the dedicated connections (with or without TLS), e.g. for
    /// `SELECT pid FROM pg_stat_activity WHERE application_name = 'streamid-notify'`.
    pub const APPLICATION_NAME: &'static str = APPLICATION_NAME;
}

impl<T> PgNotify<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    /// Replication over the database `config` connects to, through the TLS connector `tls`,
    /// on channel `"streamid"`.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid::replication::PgNotify;
    ///
    /// let config: tokio_postgres::Config = "postgres://app@db.internal/app".parse().unwrap();
    /// // Any `MakeTlsConnect` connector; `NoTls` stands in for a real one here.
    /// let transport = PgNotify::with_tls(config, tokio_postgres::NoTls);
    /// # let _ = transport;
    /// ```
    pub fn with_tls(config: Config, tls: T) -> PgNotify<T> {
        PgNotify {
            config,
            tls,
            channel: default_channel(),
        }
    }

    /// Uses channel `name` instead of `"streamid"`. Every process of a stream must use the
    /// same channel.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] unless `name` is an identifier (`[A-Za-z_][A-Za-z0-9_$]*`,
    /// at most 63 bytes). It is used as written, case-sensitively (`LISTEN "Name"`).
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid::replication::PgNotify;
    ///
    /// let transport = PgNotify::new(tokio_postgres::Config::new());
    /// let transport = transport.channel("events_positions").unwrap();
    /// assert_eq!(transport.channel_name(), "events_positions");
    /// assert!(PgNotify::new(tokio_postgres::Config::new()).channel("no spaces").is_err());
    /// ```
    pub fn channel(mut self, name: &str) -> Result<PgNotify<T>, Error> {
        self.channel = Ident::parse("channel", name)?;
        Ok(self)
    }

    /// The channel's name.
    pub fn channel_name(&self) -> &str {
        self.channel.as_str()
    }
}

/// The channel used unless [`PgNotify::channel`] says otherwise.
const DEFAULT_CHANNEL: &str = "streamid";

/// The `application_name` of the dedicated connections.
const APPLICATION_NAME: &str = "streamid-notify";

fn default_channel() -> Ident {
    Ident::parse("channel", DEFAULT_CHANNEL)
        .unwrap_or_else(|e| unreachable!("the default channel is an identifier: {e}"))
}

impl<T> std::fmt::Debug for PgNotify<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the config: it may hold a password.
        f.debug_struct("PgNotify")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .field("channel", &self.channel.as_str())
            .finish_non_exhaustive()
    }
}

impl<T> Transport for PgNotify<T>
where
    T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    fn name(&self) -> &'static str {
        "postgres-notify"
    }

    fn connect(&self) -> BoxFuture<'static, Result<Connection, TransportError>> {
        let mut config = self.config.clone();
        config.application_name(APPLICATION_NAME);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(NETWORK_TIMEOUT);
        }
        let tls = self.tls.clone();
        let channel = self.channel.clone();
        async move {
            match tokio::time::timeout(NETWORK_TIMEOUT, connect(config, tls, channel)).await {
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

async fn connect<T>(config: Config, tls: T, channel: Ident) -> Result<Connection, TransportError>
where
    T: MakeTlsConnect<Socket> + Send + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let (client, mut connection) = config.connect(tls).await.map_err(describe)?;
    let client = Arc::new(client);
    let (mut outbox, mut inbox) = inbox::queue("postgres-notify");
    let listened = channel.as_str().to_owned();
    let checker = Arc::clone(&client);
    // Drives the connection: forwards this channel's notifications, checks an idle
    // connection now and then, and ends (dropping the queue) when the connection does.
    inbox.own(tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
        let mut health = pin!(health_check(&checker));
        loop {
            tokio::select! {
                reason = &mut health => {
                    outbox.lost(reason);
                    return;
                }
                message = messages.next() => match message {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        if n.channel() == listened && !outbox.deliver(n.payload().to_owned()) {
                            return;
                        }
                    }
                    Some(Ok(AsyncMessage::Notice(notice))) => {
                        tracing::debug!(severity = notice.severity(), message = notice.message(), "replication: notice on the LISTEN connection");
                    }
                    Some(Ok(_)) => {}
                    Some(Err(err)) => {
                        outbox.lost(describe(err).to_string());
                        return;
                    }
                    None => {
                        outbox.lost("the LISTEN connection was closed");
                        return;
                    }
                },
            }
        }
    }));
    // The quoted identifier matches `pg_notify`'s text argument exactly (no case folding).
    client
        .batch_execute(&format!("LISTEN {channel}"))
        .await
        .map_err(describe)?;
    let notify = client
        .prepare("SELECT pg_notify($1, $2)")
        .await
        .map_err(describe)?;
    let publisher = PgPublisher {
        client,
        notify,
        channel: channel.as_str().to_owned(),
    };
    Ok((
        Box::new(publisher) as Box<dyn Publisher>,
        Box::new(inbox) as Box<dyn Subscriber>,
    ))
}

/// Resolves (with the reason) once the connection fails a periodic check.
async fn health_check(client: &Client) -> String {
    loop {
        tokio::time::sleep(HEALTH_CHECK_INTERVAL).await;
        match tokio::time::timeout(NETWORK_TIMEOUT, client.simple_query("SELECT 1")).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => return format!("health check failed: {}", describe(err)),
            Err(_) => return format!("health check got no answer within {NETWORK_TIMEOUT:?}"),
        }
    }
}

/// tokio-postgres' `Display` omits the server's message; the source chain has it.
fn describe(err: tokio_postgres::Error) -> TransportError {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text.into()
}

struct PgPublisher {
    /// Shared with the connection task's health check; the connection lives while either
    /// holds it.
    client: Arc<Client>,
    notify: Statement,
    channel: String,
}

impl Publisher for PgPublisher {
    fn publish<'a>(&'a mut self, message: &'a str) -> BoxFuture<'a, Result<(), TransportError>> {
        async move {
            // Autocommit on the dedicated connection: never part of a data transaction.
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&self.channel, &message];
            let sent = self.client.execute(&self.notify, &params);
            match tokio::time::timeout(NETWORK_TIMEOUT, sent).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) => Err(describe(err)),
                Err(_) => Err(format!("pg_notify got no answer within {NETWORK_TIMEOUT:?}").into()),
            }
        }
        .boxed()
    }
}

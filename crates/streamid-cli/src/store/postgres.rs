//! The PostgreSQL store: a throwaway cluster from `streamid-testkit` or a server of the
//! user's, reached through one `deadpool-postgres` pool.
//!
//! All of the CLI's PostgreSQL SQL is here: constants for the library's tables, and
//! [`TableSql`] for a stream's table, built once from names the library validated. The pool
//! is sized so every writer can hold a connection for its whole transaction while the
//! readers and the generators' background tasks still get one.

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use streamid::{MultiWriterIdGenerator, StreamConfig, StreamTable};
use streamid_testkit::PgServer;
use tokio_postgres::NoTls;
use tokio_postgres::types::Type;

use super::ledger::{EventRow, GapRow, Ledger};
use super::{Event, IdRange, Layout, TableSql, quoted_index, quoted_sequence};
use crate::plan::redact;

/// The statements on one stream's table, PostgreSQL dialect. `committed_at` is taken by
/// the INSERT, right before COMMIT: the closest the table can get to commit order without
/// `track_commit_timestamp`; the demo's ground truth orders by it.
pub(super) fn table_sql(table: &StreamTable) -> TableSql {
    let t = table.quoted_table();
    TableSql {
        create: format!(
            "CREATE TABLE IF NOT EXISTS {t} (\
                     id BIGINT NOT NULL, \
                     instance_name TEXT, \
                     payload TEXT, \
                     committed_at TIMESTAMPTZ DEFAULT clock_timestamp()\
                 ); \
                 CREATE INDEX IF NOT EXISTS {} ON {t} (id)",
            quoted_index(table)
        ),
        drop: format!(
            "DROP TABLE IF EXISTS {t}; DROP SEQUENCE IF EXISTS {}",
            quoted_sequence(table)
        ),
        insert: format!("INSERT INTO {t} (id, instance_name, payload) VALUES ($1, $2, $3)"),
        read_after: format!("SELECT id FROM {t} WHERE id > $1 ORDER BY id"),
        read_range: format!("SELECT id FROM {t} WHERE id > $1 AND id <= $2 ORDER BY id"),
        read_rows: format!(
            "SELECT id, instance_name FROM {t} WHERE id > $1 AND id <= $2 ORDER BY id"
        ),
        committed: format!("SELECT id FROM {t} ORDER BY committed_at, id"),
    }
}

/// Serialises the workers' schema set-up across processes (an arbitrary constant key:
/// "stridcli").
const SCHEMA_LOCK: &str = "SELECT pg_advisory_xact_lock(8315161359049567337)";
/// Whether a relation exists; `$1` is its quoted name as text (NULL instead of an error).
const EXISTS: &str = "SELECT to_regclass($1) IS NOT NULL";
/// Forgets the positions of an earlier demo run (they would be ahead of the new sequence).
const FORGET_POSITIONS: &str = "DELETE FROM stream_positions WHERE stream_name = $1";
/// Every writer's recorded position of a stream.
const POSITIONS: &str =
    "SELECT instance_name, stream_id FROM stream_positions WHERE stream_name = $1";
/// The gap ledger of a stream.
const GAPS: &str = "SELECT instance_name, cause, gaps FROM stream_gaps WHERE stream_name = $1 \
    ORDER BY instance_name, cause";
/// The most recent events of a stream, newest first.
const EVENTS: &str = "SELECT at::text, instance_name, event, epoch, position, by_instance \
    FROM stream_events WHERE stream_name = $1 ORDER BY at DESC LIMIT $2";

/// Connection attempts give up after this long when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The demo's PostgreSQL database.
pub(crate) struct PgStore {
    pool: Pool,
    /// The connection URL (or key-value string), for child processes (`bench latency`).
    url: String,
    description: String,
    /// The throwaway cluster, stopped and deleted when this store is dropped.
    server: Option<PgServer>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("description", &self.description)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Starts a throwaway cluster with fsync on and creates a database on it.
    pub(super) async fn temporary(writers: usize) -> Result<PgStore> {
        let server = tokio::task::spawn_blocking(|| PgServer::builder().fsync(true).start())
            .await
            .context("starting PostgreSQL")?
            .map_err(|e| testkit_error("starting a throwaway PostgreSQL cluster", &e))?;
        let db = server
            .create_database()
            .await
            .map_err(|e| testkit_error("creating the demo database", &e))?;
        let pool = db
            .pool(pool_size(writers))
            .map_err(|e| testkit_error("creating the connection pool", &e))?;
        check_connection(&pool, &db.url).await?;
        Ok(PgStore {
            pool,
            url: db.url.clone(),
            description: format!(
                "PostgreSQL (throwaway cluster on {}:{}, fsync on)",
                server.host(),
                server.port()
            ),
            server: Some(server),
        })
    }

    /// Connects to the server `url` names; `purpose` becomes the connections'
    /// `application_name` unless the URL sets one.
    pub(super) async fn connect(url: &str, writers: usize, purpose: &str) -> Result<PgStore> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .with_context(|| format!("parsing the database URL {}", redact(url)))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name(purpose);
        }
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size(writers))
            .build()
            .context("creating the connection pool")?;
        check_connection(&pool, url).await?;
        Ok(PgStore {
            pool,
            url: url.to_owned(),
            description: format!("PostgreSQL ({})", redact(url)),
            server: None,
        })
    }

    /// The connection URL or key-value string (it may hold a password: never print it).
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The connection pool (for the library's auditor).
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// See [`Database::describe`](super::Database::describe).
    pub(super) fn describe(&self) -> String {
        self.description.clone()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.context("connecting to PostgreSQL")
    }

    /// See [`Store::reset_schema`](super::Store::reset_schema).
    pub(super) async fn reset_schema(&self, layout: &Layout) -> Result<()> {
        let table = layout.table.table();
        let client = self.client().await?;
        client
            .batch_execute(&layout.pg.drop)
            .await
            .with_context(|| format!("dropping table {table}"))?;
        client
            .batch_execute(&layout.pg.create)
            .await
            .with_context(|| format!("creating table {table}"))?;
        if exists(&**client, "stream_positions").await? {
            client
                .execute(FORGET_POSITIONS, &[&layout.stream])
                .await
                .context("forgetting the stream's recorded positions")?;
        }
        self.create_sequence(&**client, layout).await
    }

    /// See [`Store::ensure_schema`](super::Store::ensure_schema). Under an advisory lock, in
    /// one transaction: `CREATE ... IF NOT EXISTS` alone can fail when two sessions create
    /// the same table at once. The sequence is created only when it is missing:
    /// `create_sequence` also places an existing sequence above the table's rows, which must
    /// not race with writers that already use it.
    pub(super) async fn ensure_schema(&self, layout: &Layout) -> Result<()> {
        let table = layout.table.table();
        let mut client = self.client().await?;
        let tx = client.transaction().await.context("beginning the set-up")?;
        tx.batch_execute(SCHEMA_LOCK)
            .await
            .context("waiting for the set-up lock")?;
        tx.batch_execute(&layout.pg.create)
            .await
            .with_context(|| format!("creating table {table}"))?;
        if !exists(&*tx, &quoted_sequence(&layout.table)).await? {
            self.create_sequence(&*tx, layout).await?;
        }
        tx.commit().await.context("committing the set-up")
    }

    async fn create_sequence<C>(&self, client: &C, layout: &Layout) -> Result<()>
    where
        C: tokio_postgres::GenericClient + Sync,
    {
        let config = layout.config("setup", &[]).sequence(layout.sequence());
        streamid::create_sequence(client, &config)
            .await
            .with_context(|| format!("creating sequence {}", layout.sequence()))
    }

    /// See [`Store::generator`](super::Store::generator).
    pub(super) async fn generator(
        &self,
        instance: &str,
        config: StreamConfig,
        layout: &Layout,
    ) -> Result<MultiWriterIdGenerator> {
        let config = config.sequence(layout.sequence());
        MultiWriterIdGenerator::postgres(self.pool.clone(), config)
            .await
            .with_context(|| format!("starting the generator of {instance}"))
    }

    /// See [`Store::write_event`](super::Store::write_event).
    pub(super) async fn write_event(
        &self,
        sql: &TableSql,
        generator: &MultiWriterIdGenerator,
        event: &Event,
        on_allocated: impl FnOnce(i64) + Send,
    ) -> Result<i64> {
        let mut client = self.client().await?;
        let mut tx = generator.transaction(&mut client).await?;
        let id = tx.next_id().await?;
        on_allocated(id);
        tokio::time::sleep(event.delay).await;
        tx.query_typed(
            &sql.insert,
            &[
                (&id, Type::INT8),
                (&event.instance, Type::TEXT),
                (&event.payload, Type::TEXT),
            ],
        )
        .await
        .with_context(|| format!("inserting row {id}"))?;
        if event.rollback {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(id)
    }

    /// See [`Store::read_ids`](super::Store::read_ids).
    pub(super) async fn read_ids(&self, sql: &TableSql, range: IdRange) -> Result<Vec<i64>> {
        let client = self.client().await?;
        let rows = match range.upto {
            None => {
                client
                    .query_typed(&sql.read_after, &[(&range.after, Type::INT8)])
                    .await
            }
            Some(upto) => {
                client
                    .query_typed(
                        &sql.read_range,
                        &[(&range.after, Type::INT8), (&upto, Type::INT8)],
                    )
                    .await
            }
        }
        .context("reading the stream's rows")?;
        ids(&rows)
    }

    /// See [`Store::read_rows`](super::Store::read_rows).
    pub(super) async fn read_rows(
        &self,
        sql: &TableSql,
        range: IdRange,
    ) -> Result<Vec<(i64, Option<String>)>> {
        let client = self.client().await?;
        let upto = range.upto.unwrap_or(i64::MAX);
        let rows = client
            .query_typed(
                &sql.read_rows,
                &[(&range.after, Type::INT8), (&upto, Type::INT8)],
            )
            .await
            .context("reading the stream's rows")?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .context("reading a row")
    }

    /// See [`Store::committed_in_commit_order`](super::Store::committed_in_commit_order).
    pub(super) async fn committed_in_commit_order(&self, sql: &TableSql) -> Result<Vec<i64>> {
        let client = self.client().await?;
        let rows = client
            .query_typed(&sql.committed, &[])
            .await
            .context("counting the stream's rows")?;
        ids(&rows)
    }

    /// See [`Database::recorded_positions`](super::Database::recorded_positions).
    pub(super) async fn recorded_positions(&self, stream: &str) -> Result<Vec<(String, i64)>> {
        let client = self.client().await?;
        if !exists(&**client, "stream_positions").await? {
            return Ok(Vec::new());
        }
        let rows = client
            .query_typed(POSITIONS, &[(&stream, Type::TEXT)])
            .await
            .context("reading stream_positions")?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .context("reading a recorded position")
    }

    /// See [`Database::ledger`](super::Database::ledger).
    pub(super) async fn ledger(&self, stream: &str, events: u32) -> Result<Ledger> {
        let client = self.client().await?;
        if !(exists(&**client, "stream_gaps").await? && exists(&**client, "stream_events").await?) {
            return Ok(Ledger::default());
        }
        let gaps = client
            .query_typed(GAPS, &[(&stream, Type::TEXT)])
            .await
            .context("reading stream_gaps")?
            .iter()
            .map(|r| {
                Ok(GapRow {
                    instance: r.try_get(0)?,
                    cause: r.try_get(1)?,
                    gaps: r.try_get(2)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .context("reading a gap row")?;
        let events = client
            .query_typed(
                EVENTS,
                &[(&stream, Type::TEXT), (&i64::from(events), Type::INT8)],
            )
            .await
            .context("reading stream_events")?
            .iter()
            .map(|r| {
                Ok(EventRow {
                    at: r.try_get(0)?,
                    instance: r.try_get(1)?,
                    event: r.try_get(2)?,
                    epoch: r.try_get(3)?,
                    position: r.try_get(4)?,
                    by_instance: r.try_get(5)?,
                })
            })
            .collect::<Result<_, tokio_postgres::Error>>()
            .context("reading an event row")?;
        Ok(Ledger {
            tables_exist: true,
            gaps,
            events,
        })
    }
}

/// Whether the relation `name` (quoted where needed) exists.
async fn exists<C>(client: &C, name: &str) -> Result<bool>
where
    C: tokio_postgres::GenericClient + Sync,
{
    client
        .query_one(EXISTS, &[&name])
        .await
        .and_then(|row| row.try_get::<_, bool>(0))
        .with_context(|| format!("looking for {name}"))
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Close idle connections before the cluster goes away, so its shutdown does not log
        // terminated sessions.
        self.pool.close();
        drop(self.server.take());
    }
}

fn ids(rows: &[tokio_postgres::Row]) -> Result<Vec<i64>> {
    rows.iter()
        .map(|r| r.try_get::<_, i64>(0).context("reading an id"))
        .collect()
}

/// Writers hold one connection each for a whole transaction; the readers, the reader
/// generator and every generator's background position writer need a few more.
fn pool_size(writers: usize) -> usize {
    writers * 2 + 8
}

/// Fails early, with the URL (password hidden), when the server cannot be reached.
async fn check_connection(pool: &Pool, url: &str) -> Result<()> {
    pool.get()
        .await
        .map(drop)
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))
}

/// The testkit's errors carry command output and log tails over many lines: keep the first
/// line and the fix for the one-line error, and log everything at DEBUG.
fn testkit_error(what: &str, err: &streamid_testkit::Error) -> anyhow::Error {
    tracing::debug!("{what}: {err}");
    let first = err
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    match err.hint() {
        Some(hint) => anyhow!("{what}: {first} (fix: {hint})"),
        None => anyhow!("{what}: {first} (details: RUST_LOG=debug)"),
    }
}

//! The PostgreSQL store: a throwaway cluster from `streamid-testkit` or a server of the
//! user's, reached through one `deadpool-postgres` pool.
//!
//! All of the demo's PostgreSQL SQL is in the constants below. The pool is sized so every
//! writer can hold a connection for its whole transaction while the readers and the
//! generators' background tasks still get one.

use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use streamid::MultiWriterIdGenerator;
use streamid_testkit::PgServer;
use tokio_postgres::NoTls;
use tokio_postgres::types::Type;

use super::{Event, IdRange, TABLE, stream_config};
use crate::plan::redact;

/// The stream's sequence.
const SEQUENCE: &str = "demo_events_seq";

/// A fresh, empty stream: the table and sequence of an earlier run are dropped, and so are
/// its recorded positions (they would be ahead of the new sequence). `committed_at` is
/// taken by the INSERT, right before COMMIT: the closest the table can get to commit order
/// without `track_commit_timestamp`. The index on `id` serves both readers.
const CREATE_SCHEMA: &str = "
    DROP TABLE IF EXISTS demo_events;
    DROP SEQUENCE IF EXISTS demo_events_seq;
    CREATE TABLE demo_events (
        id BIGINT NOT NULL,
        instance_name TEXT,
        payload TEXT,
        committed_at TIMESTAMPTZ DEFAULT clock_timestamp()
    );
    CREATE INDEX demo_events_id_idx ON demo_events (id);
    DO $$ BEGIN
        IF to_regclass('stream_positions') IS NOT NULL THEN
            DELETE FROM stream_positions WHERE stream_name = 'demo_events';
        END IF;
    END $$;";

/// One event row; `committed_at` takes its default.
const INSERT: &str = "INSERT INTO demo_events (id, instance_name, payload) VALUES ($1, $2, $3)";
/// The naive reader's query: everything above the largest ID seen so far.
const READ_AFTER: &str = "SELECT id FROM demo_events WHERE id > $1 ORDER BY id";
/// The streamid reader's query: above the last position, up to the persisted-up-to one.
const READ_RANGE: &str = "SELECT id FROM demo_events WHERE id > $1 AND id <= $2 ORDER BY id";
/// Ground truth at the end: every committed row, in commit order.
const COMMITTED: &str = "SELECT id FROM demo_events ORDER BY committed_at, id";

/// Connection attempts give up after this long when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The demo's PostgreSQL database.
pub(crate) struct PgStore {
    pool: Pool,
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
            description: format!(
                "PostgreSQL (throwaway cluster on {}:{}, fsync on)",
                server.host(),
                server.port()
            ),
            server: Some(server),
        })
    }

    /// Connects to the server `url` names.
    pub(super) async fn connect(url: &str, writers: usize) -> Result<PgStore> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .with_context(|| format!("parsing the database URL {}", redact(url)))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("streamid demo");
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
            description: format!("PostgreSQL ({})", redact(url)),
            server: None,
        })
    }

    /// See [`Store::describe`](super::Store::describe).
    pub(super) fn describe(&self) -> String {
        self.description.clone()
    }

    /// See [`Store::create_schema`](super::Store::create_schema).
    pub(super) async fn create_schema(&self) -> Result<()> {
        let client = self.pool.get().await.context("connecting to PostgreSQL")?;
        client
            .batch_execute(CREATE_SCHEMA)
            .await
            .context("creating table demo_events")?;
        let config = stream_config("setup", &[]).sequence(SEQUENCE);
        streamid::create_sequence(&**client, &config)
            .await
            .context("creating sequence demo_events_seq")?;
        Ok(())
    }

    /// See [`Store::generator`](super::Store::generator).
    pub(super) async fn generator(
        &self,
        instance: &str,
        writers: &[String],
    ) -> Result<MultiWriterIdGenerator> {
        let config = stream_config(instance, writers).sequence(SEQUENCE);
        MultiWriterIdGenerator::postgres(self.pool.clone(), config)
            .await
            .with_context(|| format!("starting the generator of {instance}"))
    }

    /// See [`Store::write_event`](super::Store::write_event).
    pub(super) async fn write_event(
        &self,
        generator: &MultiWriterIdGenerator,
        event: &Event,
        on_allocated: impl FnOnce(i64) + Send,
    ) -> Result<i64> {
        let mut client = self.pool.get().await.context("connecting to PostgreSQL")?;
        let mut tx = generator.transaction(&mut client).await?;
        let id = tx.next_id().await?;
        on_allocated(id);
        tokio::time::sleep(event.delay).await;
        tx.query_typed(
            INSERT,
            &[
                (&id, Type::INT8),
                (&event.instance, Type::TEXT),
                (&event.payload, Type::TEXT),
            ],
        )
        .await
        .with_context(|| format!("inserting row {id} into {TABLE}"))?;
        if event.rollback {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(id)
    }

    /// See [`Store::read_ids`](super::Store::read_ids).
    pub(super) async fn read_ids(&self, range: IdRange) -> Result<Vec<i64>> {
        let client = self.pool.get().await.context("connecting to PostgreSQL")?;
        let rows = match range.upto {
            None => {
                client
                    .query_typed(READ_AFTER, &[(&range.after, Type::INT8)])
                    .await
            }
            Some(upto) => {
                client
                    .query_typed(
                        READ_RANGE,
                        &[(&range.after, Type::INT8), (&upto, Type::INT8)],
                    )
                    .await
            }
        }
        .with_context(|| format!("reading {TABLE}"))?;
        ids(&rows)
    }

    /// See [`Store::committed_in_commit_order`](super::Store::committed_in_commit_order).
    pub(super) async fn committed_in_commit_order(&self) -> Result<Vec<i64>> {
        let client = self.pool.get().await.context("connecting to PostgreSQL")?;
        let rows = client
            .query_typed(COMMITTED, &[])
            .await
            .with_context(|| format!("counting the rows of {TABLE}"))?;
        ids(&rows)
    }
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

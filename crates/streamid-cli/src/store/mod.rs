//! The demo's database, behind one small interface: [`Store`].
//!
//! Everything the demo does to a database goes through [`Store`]'s methods — create the
//! schema, start a generator for an instance, write one event in a stream transaction, read
//! IDs in a range, list the committed rows. Each backend lives in its own child module with
//! its SQL; the rest of the CLI never sees a driver type. A new backend is a new variant
//! plus one arm per method.

mod postgres;
mod sqlite;

use std::time::Duration;

use anyhow::Result;
use streamid::{MultiWriterIdGenerator, StreamConfig};

use crate::plan::StoreSpec;

pub(crate) use postgres::PgStore;
pub(crate) use sqlite::SqliteStore;

/// The stream's name (its key in `stream_positions`).
pub(crate) const STREAM: &str = "demo_events";
/// The table the writers fill and the readers tail.
pub(crate) const TABLE: &str = "demo_events";
/// The instance name of the reader generator (not a writer).
pub(crate) const READER_INSTANCE: &str = "reader";

/// The database of one demo run.
#[derive(Debug)]
pub(crate) enum Store {
    /// PostgreSQL: a throwaway cluster or a server of the user's.
    Postgres(PgStore),
    /// SQLite: a file in a temporary directory (the default) or at a path the user keeps.
    Sqlite(SqliteStore),
}

/// One write as a writer task decided it.
#[derive(Debug, Clone)]
pub(crate) struct Event {
    /// The writing instance (stored in the row).
    pub(crate) instance: String,
    /// The row's payload.
    pub(crate) payload: String,
    /// How long to wait between allocating the ID and inserting the row.
    pub(crate) delay: Duration,
    /// Roll the transaction back instead of committing it.
    pub(crate) rollback: bool,
}

/// Which IDs a read returns: `after < id <= upto` (no upper bound when `upto` is `None`),
/// ascending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IdRange {
    /// Exclusive lower bound.
    pub(crate) after: i64,
    /// Inclusive upper bound, if any.
    pub(crate) upto: Option<i64>,
}

impl Store {
    /// Connects to (or starts) the database `spec` names, sized for `writers` writer tasks.
    ///
    /// # Errors
    ///
    /// What connecting, starting the server, or opening the SQLite file reported.
    pub(crate) async fn open(spec: &StoreSpec, writers: usize) -> Result<Store> {
        Ok(match spec {
            StoreSpec::PostgresTemp => Store::Postgres(PgStore::temporary(writers).await?),
            StoreSpec::Postgres { url } => Store::Postgres(PgStore::connect(url, writers).await?),
            StoreSpec::Sqlite { path } => Store::Sqlite(SqliteStore::open(path).await?),
            StoreSpec::SqliteTemp => Store::Sqlite(SqliteStore::temporary().await?),
        })
    }

    /// A short description for the report, e.g. `PostgreSQL (throwaway cluster, fsync on)`
    /// or `SQLite (demo.db, kept)`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Store::Postgres(pg) => pg.describe(),
            Store::Sqlite(db) => db.describe(),
        }
    }

    /// Drops and recreates the demo table and its sequence (SQLite: forgets its counter
    /// row), and forgets the stream's recorded positions, so every run starts from an empty
    /// stream.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub(crate) async fn create_schema(&self) -> Result<()> {
        match self {
            Store::Postgres(pg) => pg.create_schema().await,
            Store::Sqlite(db) => db.create_schema().await,
        }
    }

    /// Starts the generator of `instance` on the demo stream written by `writers`.
    ///
    /// # Errors
    ///
    /// The library's startup error.
    pub(crate) async fn generator(
        &self,
        instance: &str,
        writers: &[String],
    ) -> Result<MultiWriterIdGenerator> {
        match self {
            Store::Postgres(pg) => pg.generator(instance, writers).await,
            Store::Sqlite(db) => db.generator(instance, writers).await,
        }
    }

    /// Writes `event` in one stream transaction of `generator`: allocate an ID (reported to
    /// `on_allocated` at once), wait `event.delay`, insert the row, then commit or roll back
    /// as `event.rollback` says. Returns the ID.
    ///
    /// # Errors
    ///
    /// Any database error; the transaction's IDs are finished by the library either way.
    pub(crate) async fn write_event(
        &self,
        generator: &MultiWriterIdGenerator,
        event: &Event,
        on_allocated: impl FnOnce(i64) + Send,
    ) -> Result<i64> {
        match self {
            Store::Postgres(pg) => pg.write_event(generator, event, on_allocated).await,
            Store::Sqlite(db) => db.write_event(generator, event, on_allocated).await,
        }
    }

    /// The IDs of the rows in `range`, ascending.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub(crate) async fn read_ids(&self, range: IdRange) -> Result<Vec<i64>> {
        match self {
            Store::Postgres(pg) => pg.read_ids(range).await,
            Store::Sqlite(db) => db.read_ids(range).await,
        }
    }

    /// Every committed row's ID, in the order the rows were committed (PostgreSQL: by
    /// `committed_at`, ties by ID; SQLite: by `rowid`, exact since SQLite commits one write
    /// transaction at a time): the ground truth of the report.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub(crate) async fn committed_in_commit_order(&self) -> Result<Vec<i64>> {
        match self {
            Store::Postgres(pg) => pg.committed_in_commit_order().await,
            Store::Sqlite(db) => db.committed_in_commit_order().await,
        }
    }
}

/// The demo stream's configuration as seen from `instance`, without backend specifics.
fn stream_config(instance: &str, writers: &[String]) -> StreamConfig {
    StreamConfig::new(STREAM, instance)
        .table(TABLE, "instance_name", "id")
        .writers(writers.iter().cloned())
        .position_write_interval(Duration::from_millis(100))
        .writer_lock_timeout(Duration::from_secs(10))
        .startup_timeout(Duration::from_secs(30))
}

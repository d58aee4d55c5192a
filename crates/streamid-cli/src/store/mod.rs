//! The CLI's databases, behind two small interfaces.
//!
//! - [`Database`]: one database, either backend — connect, describe, and what the
//!   subcommands read that belongs to no table of ours (recorded positions, the gap ledger).
//! - [`Store`]: a [`Database`] plus one stream [`Layout`] — create the stream's table, start a
//!   generator for an instance, write one event in a stream transaction, read IDs in a range,
//!   list the committed rows. The demo and the `worker` subcommands run on it.
//!
//! Each backend lives in its own child module with its SQL, built once per [`Layout`] from
//! names validated by the library ([`StreamTable`]); the rest of the CLI never sees a driver
//! type. A new backend is a new variant plus one arm per method.

mod ledger;
mod postgres;
mod sqlite;

use std::time::Duration;

use anyhow::Result;
use streamid::{MultiWriterIdGenerator, StreamConfig, StreamTable};

use crate::plan::{ConfigError, StoreSpec};

pub(crate) use ledger::Ledger;
pub(crate) use postgres::PgStore;
pub(crate) use sqlite::SqliteStore;

/// The demo's stream (its key in `stream_positions`) and table.
pub(crate) const DEMO_STREAM: &str = "demo_events";
/// The instance name of the demo's reader generator (not a writer).
pub(crate) const READER_INSTANCE: &str = "reader";
/// The column holding the writing instance, in every table the CLI creates.
pub(crate) const INSTANCE_COLUMN: &str = "instance_name";
/// The column holding the stream ID, in every table the CLI creates.
pub(crate) const ID_COLUMN: &str = "id";

/// One database, either backend.
#[derive(Debug)]
pub(crate) enum Database {
    /// PostgreSQL: a throwaway cluster or a server of the user's.
    Postgres(PgStore),
    /// SQLite: a file in a temporary directory (the demo's default) or at a path.
    Sqlite(SqliteStore),
}

/// A stream's table as the CLI creates it: `id BIGINT NOT NULL, instance_name TEXT,
/// payload TEXT, committed_at` (a timestamp taken by the INSERT), indexed on `id`; on
/// PostgreSQL its sequence is `<table>_seq`. Holds both backends' statements, built once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The stream's name (its key in `stream_positions`).
    pub(crate) stream: String,
    /// The table, with [`INSTANCE_COLUMN`] and [`ID_COLUMN`].
    pub(crate) table: StreamTable,
    pg: TableSql,
    sqlite: TableSql,
}

/// The statements on one stream's table, in one backend's dialect, built once from names
/// the library validated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TableSql {
    /// The table and its index, if missing.
    create: String,
    /// The table (PostgreSQL: and its sequence), if present: the demo's fresh start.
    drop: String,
    /// One event row; `committed_at` takes its default.
    insert: String,
    /// The naive reader's query: everything above the largest ID seen so far.
    read_after: String,
    /// The streamid reader's query: above the last position, up to the persisted-up-to one.
    read_range: String,
    /// The token reader's query: as `read_range`, with each row's writer.
    read_rows: String,
    /// Ground truth at the end: every committed row, in commit order.
    committed: String,
}

impl Layout {
    /// The layout of stream `stream` in table `table` (`name` or `schema.name`).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a table name the library rejects.
    pub(crate) fn new(stream: &str, table: &str) -> Result<Layout, ConfigError> {
        let table = StreamTable::new(table, INSTANCE_COLUMN, ID_COLUMN)
            .map_err(ConfigError::from_library)?;
        Ok(Layout {
            stream: stream.to_owned(),
            pg: postgres::table_sql(&table),
            sqlite: sqlite::table_sql(&table),
            table,
        })
    }

    /// The demo's stream and table, `demo_events`.
    pub(crate) fn demo() -> Layout {
        // A constant, valid name: the library cannot reject it.
        Layout::new(DEMO_STREAM, DEMO_STREAM).unwrap_or_else(|e| unreachable!("{e}"))
    }

    /// The PostgreSQL sequence, `<table>_seq`, unquoted.
    pub(crate) fn sequence(&self) -> String {
        format!("{}_seq", self.table.table())
    }

    /// The stream's configuration as seen from `instance`, without backend specifics.
    pub(crate) fn config(&self, instance: &str, writers: &[String]) -> StreamConfig {
        StreamConfig::new(&self.stream, instance)
            .table(self.table.table(), INSTANCE_COLUMN, ID_COLUMN)
            .writers(writers.iter().cloned())
            .position_write_interval(Duration::from_millis(100))
            .writer_lock_timeout(Duration::from_secs(10))
            .startup_timeout(Duration::from_secs(30))
    }
}

/// The table's sequence, double-quoted for SQL: `"app"."t_seq"` for `app.t`. Safe because
/// the library validated every part of the table's name (`[A-Za-z_][A-Za-z0-9_$]*`, no
/// quotes).
fn quoted_sequence(table: &StreamTable) -> String {
    match table.table().rsplit_once('.') {
        Some((schema, name)) => format!("\"{schema}\".\"{name}_seq\""),
        None => format!("\"{}_seq\"", table.table_name()),
    }
}

/// The table's index on `id`, double-quoted and unqualified (an index always lives in its
/// table's schema): `"t_id_idx"`.
fn quoted_index(table: &StreamTable) -> String {
    format!("\"{}_id_idx\"", table.table_name())
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

impl Database {
    /// Connects to (or starts) the database `spec` names, with room for `writers` writer
    /// tasks; `purpose` names the connections on PostgreSQL (`application_name`).
    ///
    /// # Errors
    ///
    /// What connecting, starting the server, or opening the SQLite file reported.
    pub(crate) async fn open(spec: &StoreSpec, writers: usize, purpose: &str) -> Result<Database> {
        Ok(match spec {
            StoreSpec::PostgresTemp => Database::Postgres(PgStore::temporary(writers).await?),
            StoreSpec::Postgres { url } => {
                Database::Postgres(PgStore::connect(url, writers, purpose).await?)
            }
            StoreSpec::Sqlite { path } => Database::Sqlite(SqliteStore::open(path).await?),
            StoreSpec::SqliteTemp => Database::Sqlite(SqliteStore::temporary().await?),
        })
    }

    /// Connects to an existing database, for subcommands that only read (`verify`,
    /// `gaps`): a missing SQLite file is an error rather than a new, empty database.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open); a missing SQLite file.
    pub(crate) async fn open_existing(spec: &StoreSpec, purpose: &str) -> Result<Database> {
        if let StoreSpec::Sqlite { path } = spec
            && !path.exists()
        {
            anyhow::bail!(
                "SQLite database {} does not exist (check the path given to --database)",
                path.display()
            );
        }
        Database::open(spec, 1, purpose).await
    }

    /// A short description for reports, e.g. `PostgreSQL (throwaway cluster, fsync on)` or
    /// `SQLite (demo.db, kept)`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Database::Postgres(pg) => pg.describe(),
            Database::Sqlite(db) => db.describe(),
        }
    }

    /// Every writer's recorded position of `stream` in `stream_positions` (none if the
    /// table does not exist yet).
    ///
    /// # Errors
    ///
    /// The database's error.
    pub(crate) async fn recorded_positions(&self, stream: &str) -> Result<Vec<(String, i64)>> {
        match self {
            Database::Postgres(pg) => pg.recorded_positions(stream).await,
            Database::Sqlite(db) => db.recorded_positions(stream).await,
        }
    }

    /// `stream`'s rows of `stream_gaps` and its `events` most recent rows of
    /// `stream_events` (both empty if the tables do not exist yet).
    ///
    /// # Errors
    ///
    /// The database's error.
    pub(crate) async fn ledger(&self, stream: &str, events: u32) -> Result<Ledger> {
        match self {
            Database::Postgres(pg) => pg.ledger(stream, events).await,
            Database::Sqlite(db) => db.ledger(stream, events).await,
        }
    }
}

/// A database and the stream the demo or a worker writes and reads.
#[derive(Debug)]
pub(crate) struct Store {
    db: Database,
    layout: Layout,
}

impl Store {
    /// Opens the database (see [`Database::open`]) for the stream `layout` describes.
    ///
    /// # Errors
    ///
    /// As [`Database::open`].
    pub(crate) async fn open(
        spec: &StoreSpec,
        layout: Layout,
        writers: usize,
        purpose: &str,
    ) -> Result<Store> {
        let db = Database::open(spec, writers, purpose).await?;
        Ok(Store { db, layout })
    }

    /// The database.
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// The stream.
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// See [`Database::describe`].
    pub(crate) fn describe(&self) -> String {
        self.db.describe()
    }

    /// Drops and recreates the table and its sequence (SQLite: forgets its counter row),
    /// and forgets the stream's recorded positions, so the run starts from an empty stream.
    /// The demo's way; a worker uses [`ensure_schema`](Self::ensure_schema).
    ///
    /// # Errors
    ///
    /// The database's error.
    pub(crate) async fn reset_schema(&self) -> Result<()> {
        match &self.db {
            Database::Postgres(pg) => pg.reset_schema(&self.layout).await,
            Database::Sqlite(db) => db.reset_schema(&self.layout).await,
        }
    }

    /// Creates the table (and on PostgreSQL its sequence) if missing, keeping what exists:
    /// idempotent and safe when several processes run it at once.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub(crate) async fn ensure_schema(&self) -> Result<()> {
        match &self.db {
            Database::Postgres(pg) => pg.ensure_schema(&self.layout).await,
            Database::Sqlite(db) => db.ensure_schema(&self.layout).await,
        }
    }

    /// Starts the generator of `instance` on the stream written by `writers`.
    ///
    /// # Errors
    ///
    /// The library's startup error.
    pub(crate) async fn generator(
        &self,
        instance: &str,
        writers: &[String],
    ) -> Result<MultiWriterIdGenerator> {
        let config = self.layout.config(instance, writers);
        match &self.db {
            Database::Postgres(pg) => pg.generator(instance, config, &self.layout).await,
            Database::Sqlite(db) => db.generator(instance, config).await,
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
        match &self.db {
            Database::Postgres(pg) => {
                pg.write_event(&self.layout.pg, generator, event, on_allocated)
                    .await
            }
            Database::Sqlite(db) => {
                db.write_event(&self.layout.sqlite, generator, event, on_allocated)
                    .await
            }
        }
    }

    /// The IDs of the rows in `range`, ascending.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub(crate) async fn read_ids(&self, range: IdRange) -> Result<Vec<i64>> {
        match &self.db {
            Database::Postgres(pg) => pg.read_ids(&self.layout.pg, range).await,
            Database::Sqlite(db) => db.read_ids(&self.layout.sqlite, range).await,
        }
    }

    /// The rows in `range` with their writing instance, ascending by ID.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub(crate) async fn read_rows(&self, range: IdRange) -> Result<Vec<(i64, Option<String>)>> {
        match &self.db {
            Database::Postgres(pg) => pg.read_rows(&self.layout.pg, range).await,
            Database::Sqlite(db) => db.read_rows(&self.layout.sqlite, range).await,
        }
    }

    /// Every committed row's ID, in the order the rows were committed (PostgreSQL: by
    /// `committed_at`, ties by ID; SQLite: by `rowid`, exact since SQLite commits one write
    /// transaction at a time): the ground truth of the demo's report.
    ///
    /// # Errors
    ///
    /// The database's error.
    pub(crate) async fn committed_in_commit_order(&self) -> Result<Vec<i64>> {
        match &self.db {
            Database::Postgres(pg) => pg.committed_in_commit_order(&self.layout.pg).await,
            Database::Sqlite(db) => db.committed_in_commit_order(&self.layout.sqlite).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_keep_the_schema() {
        let layout = Layout::new("s", "app.events").unwrap();
        assert_eq!(layout.sequence(), "app.events_seq");
        assert_eq!(quoted_sequence(&layout.table), "\"app\".\"events_seq\"");
        assert_eq!(quoted_index(&layout.table), "\"events_id_idx\"");
        let demo = Layout::demo();
        assert_eq!(demo.sequence(), "demo_events_seq");
        assert_eq!(quoted_sequence(&demo.table), "\"demo_events_seq\"");
        assert!(Layout::new("s", "bad name").is_err());
    }
}

//! The SQLite store: the embedded default. One database file, either in a temporary
//! directory deleted at the end of the run or at a path the user keeps.
//!
//! Writers go through the library's [`SqliteTransaction`](streamid::SqliteTransaction):
//! the ID is allocated first (in the counter's own short transaction), then the writer
//! waits, then the INSERT takes SQLite's write lock and the transaction commits or rolls
//! back. Readers use plain rusqlite connections of their own, on Tokio's blocking pool.
//! All of the demo's SQLite SQL is in the constants below.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use rusqlite::{Connection, OpenFlags};
use streamid::MultiWriterIdGenerator;
use tempfile::TempDir;

use super::{Event, IdRange, STREAM, TABLE, stream_config};

/// The database file's name inside the temporary directory.
const TEMP_FILE: &str = "demo.db";

/// A fresh, empty stream: the table of an earlier run is dropped. `committed_at` is taken
/// by the INSERT, for people looking at the file; the report orders commits by `rowid`
/// instead, which is exact here (see [`COMMITTED`]).
const CREATE_TABLE: &str = "
    DROP TABLE IF EXISTS demo_events;
    CREATE TABLE demo_events (
        id INTEGER NOT NULL,
        instance_name TEXT,
        payload TEXT,
        committed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
    );
    CREATE INDEX demo_events_id_idx ON demo_events (id);";

/// Whether one of the library's tables exists (it creates them at generator startup).
const TABLE_EXISTS: &str = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1";
/// Forgets the positions of an earlier run (they would be ahead of the new counter).
const FORGET_POSITIONS: &str = "DELETE FROM stream_positions WHERE stream_name = ?1";
/// Forgets the counter of an earlier run: startup recreates it, so the first ID is 2 again.
/// SQLite has no sequence; the counter row is named after the stream.
const FORGET_COUNTER: &str = "DELETE FROM streamid_sequences WHERE name = ?1";

/// One event row; `committed_at` takes its default.
const INSERT: &str = "INSERT INTO demo_events (id, instance_name, payload) VALUES (?1, ?2, ?3)";
/// The naive reader's query: everything above the largest ID seen so far.
const READ_AFTER: &str = "SELECT id FROM demo_events WHERE id > ?1 ORDER BY id";
/// The streamid reader's query: above the last position, up to the persisted-up-to one.
const READ_RANGE: &str = "SELECT id FROM demo_events WHERE id > ?1 AND id <= ?2 ORDER BY id";
/// Ground truth at the end: every committed row, in commit order. SQLite runs one write
/// transaction at a time and gives each new row `max(rowid) + 1`, so `rowid` order is
/// exactly commit order (rolled-back rows leave no rowid behind).
const COMMITTED: &str = "SELECT id FROM demo_events ORDER BY rowid";

/// How long a connection waits for another one's write lock before failing. Every writer
/// queues for the lock at each allocation and each commit, so be generous.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle reader connections kept for reuse.
const MAX_IDLE_READERS: usize = 4;

/// The demo's SQLite database.
pub(crate) struct SqliteStore {
    path: PathBuf,
    description: String,
    /// Idle connections of the readers (and of the final count).
    idle: Arc<Mutex<Vec<Connection>>>,
    /// The temporary directory holding the file, deleted when this store is dropped.
    temp_dir: Option<TempDir>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("temporary", &self.temp_dir.is_some())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// A new database file in a fresh temporary directory, deleted with the store.
    pub(super) async fn temporary() -> Result<SqliteStore> {
        let dir = tempfile::Builder::new()
            .prefix("streamid-demo-")
            .tempdir()
            .context("creating a temporary directory for the SQLite database")?;
        let path = dir.path().join(TEMP_FILE);
        let description = format!(
            "SQLite (temporary file {}, deleted at exit)",
            path.display()
        );
        SqliteStore::start(path, description, Some(dir)).await
    }

    /// The database file at `path`, created if missing and kept afterwards.
    pub(super) async fn open(path: &Path) -> Result<SqliteStore> {
        let description = format!("SQLite ({}, kept)", path.display());
        SqliteStore::start(path.to_owned(), description, None).await
    }

    /// Opens a first connection, so a bad path fails before anything else starts.
    async fn start(
        path: PathBuf,
        description: String,
        temp_dir: Option<TempDir>,
    ) -> Result<SqliteStore> {
        let store = SqliteStore {
            path,
            description,
            idle: Arc::default(),
            temp_dir,
        };
        // Connecting switches the file to WAL, which reads and writes it: a missing
        // directory, a read-only file or a file that is not a database fails here.
        store.with_connection(|_| Ok(())).await?;
        Ok(store)
    }

    /// See [`Store::describe`](super::Store::describe).
    pub(super) fn describe(&self) -> String {
        self.description.clone()
    }

    /// See [`Store::create_schema`](super::Store::create_schema).
    pub(super) async fn create_schema(&self) -> Result<()> {
        self.with_connection(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(CREATE_TABLE)?;
            for (table, forget) in [
                ("stream_positions", FORGET_POSITIONS),
                ("streamid_sequences", FORGET_COUNTER),
            ] {
                let exists: i64 = tx.query_row(TABLE_EXISTS, [table], |r| r.get(0))?;
                if exists > 0 {
                    tx.execute(forget, [STREAM])?;
                }
            }
            tx.commit()
        })
        .await
        .with_context(|| format!("creating table {TABLE}"))
    }

    /// See [`Store::generator`](super::Store::generator).
    pub(super) async fn generator(
        &self,
        instance: &str,
        writers: &[String],
    ) -> Result<MultiWriterIdGenerator> {
        let config = stream_config(instance, writers).busy_timeout(BUSY_TIMEOUT);
        MultiWriterIdGenerator::sqlite(&self.path, config)
            .await
            .with_context(|| format!("starting the generator of {instance}"))
    }

    /// See [`Store::write_event`](super::Store::write_event). The ID is allocated before
    /// the transaction's first statement, as SQLite requires; the INSERT then takes the
    /// write lock, which the commit or rollback releases.
    pub(super) async fn write_event(
        &self,
        generator: &MultiWriterIdGenerator,
        event: &Event,
        on_allocated: impl FnOnce(i64) + Send,
    ) -> Result<i64> {
        let mut tx = generator.sqlite_transaction().await?;
        let id = tx.next_id().await?;
        on_allocated(id);
        tokio::time::sleep(event.delay).await;
        tx.execute(INSERT, (id, event.instance.clone(), event.payload.clone()))
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
        self.with_connection(move |conn| match range.upto {
            None => query_ids(conn, READ_AFTER, [range.after]),
            Some(upto) => query_ids(conn, READ_RANGE, [range.after, upto]),
        })
        .await
        .with_context(|| format!("reading {TABLE}"))
    }

    /// See [`Store::committed_in_commit_order`](super::Store::committed_in_commit_order).
    pub(super) async fn committed_in_commit_order(&self) -> Result<Vec<i64>> {
        self.with_connection(|conn| query_ids(conn, COMMITTED, []))
            .await
            .with_context(|| format!("counting the rows of {TABLE}"))
    }

    /// Runs `f` on an idle connection (or a new one) on the blocking pool, and keeps the
    /// connection for the next call if it is not inside a transaction.
    async fn with_connection<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let idle = Arc::clone(&self.idle);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let reused = idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let mut conn = match reused {
                Some(conn) => conn,
                None => connect(&path)?,
            };
            let result = f(&mut conn).map_err(|e| sqlite_error(&path, e));
            if conn.is_autocommit() {
                let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
                if idle.len() < MAX_IDLE_READERS {
                    idle.push(conn);
                }
            }
            result
        })
        .await
        .map_err(|e| anyhow!("a SQLite task failed: {e}"))?
    }
}

/// Opens a connection to `path` (creating the file if missing) with the busy timeout, in
/// WAL mode like the library's own connections (readers then never block the writers).
fn connect(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| sqlite_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .and_then(|()| conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())))
        .map_err(|e| sqlite_error(path, e))?;
    Ok(conn)
}

/// The error with the file's path and, for the usual causes, what to do about it.
fn sqlite_error(path: &Path, err: rusqlite::Error) -> anyhow::Error {
    use rusqlite::ErrorCode;
    let hint = match err.sqlite_error_code() {
        Some(ErrorCode::CannotOpen) => {
            " (check that the directory exists and is writable, or pick another sqlite:PATH)"
        }
        Some(ErrorCode::ReadOnly) => {
            " (SQLite needs write access to the file and its directory, for the -wal and -shm \
             files)"
        }
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => {
            " (the file is not a SQLite database: pick another sqlite:PATH)"
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            " (another process holds the database's write lock)"
        }
        _ => "",
    };
    anyhow!("SQLite database {}: {err}{hint}", path.display())
}

fn query_ids<P: rusqlite::Params>(
    conn: &Connection,
    sql: &str,
    params: P,
) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let ids = stmt.query_map(params, |r| r.get::<_, i64>(0))?;
    ids.collect()
}

//! The SQLite store: the embedded default. One database file, either in a temporary
//! directory deleted at the end of the run or at a path the user keeps.
//!
//! Writers go through the library's [`SqliteTransaction`](streamid::SqliteTransaction):
//! the ID is allocated first (in the counter's own short transaction), then the writer
//! waits, then the INSERT takes SQLite's write lock and the transaction commits or rolls
//! back. Readers use plain rusqlite connections of their own, on Tokio's blocking pool.
//! All of the CLI's SQLite SQL is here: constants for the library's tables, and
//! [`TableSql`] for a stream's table, built once from names the library validated.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use rusqlite::{Connection, OpenFlags};
use streamid::{MultiWriterIdGenerator, StreamConfig, StreamTable};
use tempfile::TempDir;

use super::ledger::{EventRow, GapRow, Ledger};
use super::{Event, IdRange, Layout, TableSql, quoted_index};

/// The database file's name inside the temporary directory.
const TEMP_FILE: &str = "demo.db";

/// The statements on one stream's table, SQLite dialect. `committed_at` is for people
/// looking at the file; the demo's ground truth orders by `rowid` instead, which is exact
/// here: SQLite runs one write transaction at a time and gives each new row
/// `max(rowid) + 1`, so `rowid` order is commit order (rolled-back rows leave no rowid).
pub(super) fn table_sql(table: &StreamTable) -> TableSql {
    let t = table.quoted_table();
    TableSql {
        create: format!(
            "CREATE TABLE IF NOT EXISTS {t} (\
                     id INTEGER NOT NULL, \
                     instance_name TEXT, \
                     payload TEXT, \
                     committed_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))\
                 ); \
                 CREATE INDEX IF NOT EXISTS {} ON {} (id);",
            quoted_index_in_schema(table),
            quoted_table_name(table),
        ),
        drop: format!("DROP TABLE IF EXISTS {t};"),
        insert: format!("INSERT INTO {t} (id, instance_name, payload) VALUES (?1, ?2, ?3)"),
        read_after: format!("SELECT id FROM {t} WHERE id > ?1 ORDER BY id"),
        read_range: format!("SELECT id FROM {t} WHERE id > ?1 AND id <= ?2 ORDER BY id"),
        read_rows: format!(
            "SELECT id, instance_name FROM {t} WHERE id > ?1 AND id <= ?2 ORDER BY id"
        ),
        committed: format!("SELECT id FROM {t} ORDER BY rowid"),
    }
}

/// SQLite names an index's schema on the index, not on its table: `"s"."t_id_idx"` on
/// `"t"`, for a table `s.t` of an attached database `s`.
fn quoted_index_in_schema(table: &StreamTable) -> String {
    match table.table().split_once('.') {
        Some((schema, _)) => format!("\"{schema}\".{}", quoted_index(table)),
        None => quoted_index(table),
    }
}

/// The table's own name, double-quoted, without its schema.
fn quoted_table_name(table: &StreamTable) -> String {
    format!("\"{}\"", table.table_name())
}

/// Whether one of the library's tables exists (it creates them at generator startup).
const TABLE_EXISTS: &str = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1";
/// Forgets the positions of an earlier demo run (they would be ahead of the new counter).
const FORGET_POSITIONS: &str = "DELETE FROM stream_positions WHERE stream_name = ?1";
/// Forgets the counter of an earlier demo run: startup recreates it, so the first ID is 2
/// again. SQLite has no sequence; the counter row is named after the stream.
const FORGET_COUNTER: &str = "DELETE FROM streamid_sequences WHERE name = ?1";
/// Every writer's recorded position of a stream.
const POSITIONS: &str =
    "SELECT instance_name, stream_id FROM stream_positions WHERE stream_name = ?1";
/// The gap ledger of a stream.
const GAPS: &str = "SELECT instance_name, cause, gaps FROM stream_gaps WHERE stream_name = ?1 \
    ORDER BY instance_name, cause";
/// The most recent events of a stream, newest first.
const EVENTS: &str = "SELECT at, instance_name, event, epoch, position, by_instance \
    FROM stream_events WHERE stream_name = ?1 ORDER BY at DESC, rowid DESC LIMIT ?2";

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

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// See [`Database::describe`](super::Database::describe).
    pub(super) fn describe(&self) -> String {
        self.description.clone()
    }

    /// See [`Store::reset_schema`](super::Store::reset_schema).
    pub(super) async fn reset_schema(&self, layout: &Layout) -> Result<()> {
        let (sql, stream) = (layout.sqlite.clone(), layout.stream.clone());
        self.with_connection(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(&sql.drop)?;
            tx.execute_batch(&sql.create)?;
            for (table, forget) in [
                ("stream_positions", FORGET_POSITIONS),
                ("streamid_sequences", FORGET_COUNTER),
            ] {
                if table_exists(&tx, table)? {
                    tx.execute(forget, [&stream])?;
                }
            }
            tx.commit()
        })
        .await
        .with_context(|| format!("creating table {}", layout.table.table()))
    }

    /// See [`Store::ensure_schema`](super::Store::ensure_schema). One immediate
    /// transaction: SQLite's write lock serialises concurrent set-ups, and `IF NOT EXISTS`
    /// keeps what exists. The counter row is the library's (created at generator startup).
    pub(super) async fn ensure_schema(&self, layout: &Layout) -> Result<()> {
        let sql = layout.sqlite.clone();
        self.with_connection(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.execute_batch(&sql.create)?;
            tx.commit()
        })
        .await
        .with_context(|| format!("creating table {}", layout.table.table()))
    }

    /// See [`Store::generator`](super::Store::generator).
    pub(super) async fn generator(
        &self,
        instance: &str,
        config: StreamConfig,
    ) -> Result<MultiWriterIdGenerator> {
        let config = config.busy_timeout(BUSY_TIMEOUT);
        MultiWriterIdGenerator::sqlite(&self.path, config)
            .await
            .with_context(|| format!("starting the generator of {instance}"))
    }

    /// See [`Store::write_event`](super::Store::write_event). The ID is allocated before
    /// the transaction's first statement, as SQLite requires; the INSERT then takes the
    /// write lock, which the commit or rollback releases.
    pub(super) async fn write_event(
        &self,
        sql: &TableSql,
        generator: &MultiWriterIdGenerator,
        event: &Event,
        on_allocated: impl FnOnce(i64) + Send,
    ) -> Result<i64> {
        let mut tx = generator.sqlite_transaction().await?;
        let id = tx.next_id().await?;
        on_allocated(id);
        tokio::time::sleep(event.delay).await;
        tx.execute(
            &sql.insert,
            (id, event.instance.clone(), event.payload.clone()),
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
        let sql = sql.clone();
        self.with_connection(move |conn| match range.upto {
            None => query_ids(conn, &sql.read_after, [range.after]),
            Some(upto) => query_ids(conn, &sql.read_range, [range.after, upto]),
        })
        .await
        .context("reading the stream's rows")
    }

    /// See [`Store::read_rows`](super::Store::read_rows).
    pub(super) async fn read_rows(
        &self,
        sql: &TableSql,
        range: IdRange,
    ) -> Result<Vec<(i64, Option<String>)>> {
        let query = sql.read_rows.clone();
        let upto = range.upto.unwrap_or(i64::MAX);
        self.with_connection(move |conn| {
            let mut stmt = conn.prepare_cached(&query)?;
            let rows = stmt.query_map([range.after, upto], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
        .context("reading the stream's rows")
    }

    /// See [`Store::committed_in_commit_order`](super::Store::committed_in_commit_order).
    pub(super) async fn committed_in_commit_order(&self, sql: &TableSql) -> Result<Vec<i64>> {
        let query = sql.committed.clone();
        self.with_connection(move |conn| query_ids(conn, &query, []))
            .await
            .context("counting the stream's rows")
    }

    /// See [`Database::recorded_positions`](super::Database::recorded_positions).
    pub(super) async fn recorded_positions(&self, stream: &str) -> Result<Vec<(String, i64)>> {
        let stream = stream.to_owned();
        self.with_connection(move |conn| {
            if !table_exists(conn, "stream_positions")? {
                return Ok(Vec::new());
            }
            let mut stmt = conn.prepare_cached(POSITIONS)?;
            let rows = stmt.query_map([stream], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
        .await
        .context("reading stream_positions")
    }

    /// See [`Database::ledger`](super::Database::ledger).
    pub(super) async fn ledger(&self, stream: &str, events: u32) -> Result<Ledger> {
        let stream = stream.to_owned();
        self.with_connection(move |conn| {
            if !(table_exists(conn, "stream_gaps")? && table_exists(conn, "stream_events")?) {
                return Ok(Ledger::default());
            }
            let gaps = conn
                .prepare_cached(GAPS)?
                .query_map([&stream], |r| {
                    Ok(GapRow {
                        instance: r.get(0)?,
                        cause: r.get(1)?,
                        gaps: r.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let events = conn
                .prepare_cached(EVENTS)?
                .query_map((&stream, i64::from(events)), |r| {
                    Ok(EventRow {
                        at: r.get(0)?,
                        instance: r.get(1)?,
                        event: r.get(2)?,
                        epoch: r.get(3)?,
                        position: r.get(4)?,
                        by_instance: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Ledger {
                tables_exist: true,
                gaps,
                events,
            })
        })
        .await
        .context("reading the gap ledger")
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
        .map_err(|e| sqlite_error(path, e))?;
    // Switching a new file to WAL needs an exclusive lock, and when several processes open
    // the file at once (workers starting together) SQLite answers BUSY at once instead of
    // waiting (to avoid a lock-upgrade deadlock): retry within the busy timeout. Once the
    // file is in WAL mode the switch is a no-op.
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())) {
            Ok(()) => return Ok(conn),
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(sqlite_error(path, e)),
        }
    }
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

/// Whether one of the library's tables exists (it creates them at generator startup).
fn table_exists(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.query_row(TABLE_EXISTS, [table], |r| r.get::<_, i64>(0))
        .map(|n| n > 0)
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

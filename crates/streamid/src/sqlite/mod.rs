//! The embedded SQLite backend (spec §4.6, §5.4): IDs from a counter row advanced in its own
//! short `BEGIN IMMEDIATE` transaction, so several processes sharing one database file never
//! receive the same ID, and IDs still complete out of order.
//!
//! rusqlite is synchronous: every database call runs on tokio's blocking pool, on a
//! connection taken from a small per-generator pool. A closure that is still running when
//! its future is dropped runs to completion and returns (or, mid-transaction, closes) its
//! connection; it never holds the tracker lock.

pub(crate) mod audit;
pub(crate) mod lease;
pub(crate) mod startup;
pub(crate) mod statements;
mod transaction;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, ErrorCode, OpenFlags};

pub use transaction::SqliteTransaction;

use crate::Error;
pub(crate) use statements::Statements;

/// Idle connections kept per generator; more are opened on demand and closed after use.
const MAX_IDLE: usize = 8;

/// The database file, its statements and a pool of connections; cheap to clone.
#[derive(Clone)]
pub(crate) struct SqliteBackend {
    pub(crate) pool: Arc<SqlitePool>,
    pub(crate) statements: Arc<Statements>,
}

/// Connections to one database file.
pub(crate) struct SqlitePool {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl SqlitePool {
    pub(crate) fn new(path: &Path, busy_timeout: Duration) -> SqlitePool {
        SqlitePool {
            path: path.to_owned(),
            busy_timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The database file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens a connection: WAL (readers never block the writer), a busy timeout (writers of
    /// other processes wait instead of failing at once).
    pub(crate) fn open(&self) -> Result<Connection, Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags)
            .map_err(|e| self.error("open the database", e))?;
        // SQLite quietly opens a write-protected file read-only; no instance can run on
        // one (startup writes), so say so now rather than fail later at some other step
        // (the WAL switch cannot create its files next to an immutable file, say).
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            let source = rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                Some("the database file can only be opened read-only".to_owned()),
            );
            return Err(self.error("open the database", source));
        }
        conn.busy_timeout(self.busy_timeout)
            .map_err(|e| self.error("set the busy timeout", e))?;
        // SQLite's legacy "double-quoted string literal" rule would read a quoted column
        // name that matches no column as a string constant: a misspelt instance column
        // would silently become the constant name of every row, a misspelt ID column a
        // startup type error. With it off, both are "no such column" (MissingObject).
        for dqs in [
            DbConfig::SQLITE_DBCONFIG_DQS_DML,
            DbConfig::SQLITE_DBCONFIG_DQS_DDL,
        ] {
            conn.set_db_config(dqs, false)
                .map_err(|e| self.error("disable double-quoted string literals", e))?;
        }
        // Switching a new file to WAL takes an exclusive lock and does not wait on the busy
        // handler: two processes opening a fresh file at once would fail. Retry within the
        // busy timeout instead.
        let deadline = std::time::Instant::now() + self.busy_timeout;
        let mode: String = loop {
            match conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)) {
                Ok(mode) => break mode,
                Err(e)
                    if matches!(
                        e.sqlite_error_code(),
                        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
                    ) && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(self.error("switch to WAL mode", e)),
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %self.path.display(), mode, "SQLite did not switch to WAL mode");
        }
        Ok(conn)
    }

    fn take(&self) -> Result<Connection, Error> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => self.open(),
        }
    }

    /// Returns a connection to the pool, unless it is inside a transaction (then dropping it
    /// rolls that back).
    pub(crate) fn put(&self, conn: Connection) {
        if !conn.is_autocommit() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Runs `f` on a pooled connection on the blocking pool.
    pub(crate) async fn run<T, F>(
        self: &Arc<Self>,
        operation: &'static str,
        f: F,
    ) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let pool = Arc::clone(self);
        blocking(move || {
            let mut conn = pool.take()?;
            let result = f(&mut conn);
            if result.is_err() && !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            pool.put(conn);
            result.map_err(|e| pool.error(operation, e))
        })
        .await
    }

    /// Wraps a rusqlite error with the operation, the file and what to do about it.
    pub(crate) fn error(&self, operation: &'static str, source: rusqlite::Error) -> Error {
        let hint = match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                "the database stayed locked by another connection or process for longer than the \
                 busy timeout: find the process holding a long write transaction, or raise \
                 StreamConfig::busy_timeout"
            }
            Some(ErrorCode::ReadOnly) => {
                "the database is read-only: SQLite needs write access to the file and to its \
                 directory (for the -wal and -shm files)"
            }
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                "the file is not a SQLite database or is corrupt: check the path, or restore the \
                 file from a backup"
            }
            Some(ErrorCode::CannotOpen) => {
                "the file cannot be opened: check that its directory exists and is writable"
            }
            _ => "",
        };
        Error::Sqlite {
            operation,
            path: self.path.display().to_string(),
            hint,
            source,
        }
    }
}

/// Runs blocking work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a SQLite task failed: {e}")))?
}

/// Takes `n` values from the counter in its own immediate transaction.
pub(crate) fn advance_counter(
    conn: &mut Connection,
    counter: &str,
    n: i64,
) -> rusqlite::Result<i64> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let last: i64 = tx.query_row(statements::ADVANCE_COUNTER, (counter, n), |r| r.get(0))?;
    tx.commit()?;
    Ok(last)
}

impl SqliteBackend {
    /// Takes `n` IDs (internal form, ascending) in a committed transaction of their own.
    pub(crate) async fn fetch_ids(&self, n: usize) -> Result<Vec<i64>, Error> {
        let counter = self.statements.counter.clone();
        let count = n as i64;
        let last = self
            .pool
            .run("allocate stream IDs", move |conn| {
                advance_counter(conn, &counter, count)
            })
            .await?;
        Ok((last - count + 1..=last).collect())
    }

    /// Raises the counter to at least `target` in one immediate transaction (atomic across
    /// processes); returns its last value.
    pub(crate) async fn advance_counter_past(&self, target: i64) -> Result<i64, Error> {
        let counter = self.statements.counter.clone();
        self.pool
            .run("move the counter forward", move |conn| {
                let tx =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                let last: i64 =
                    tx.query_row(statements::RAISE_COUNTER, (&counter, target), |r| r.get(0))?;
                tx.commit()?;
                Ok(last)
            })
            .await
    }

    /// The counter's last value (internal form).
    pub(crate) async fn last_allocated(&self) -> Result<i64, Error> {
        let counter = self.statements.counter.clone();
        self.pool
            .run("read the counter", move |conn| {
                conn.query_row(statements::READ_COUNTER, [counter], |r| r.get(0))
            })
            .await
    }

    /// Every recorded position of `stream` (API form).
    pub(crate) async fn load_positions(&self, stream: &str) -> Result<Vec<(String, i64)>, Error> {
        let stream = stream.to_owned();
        self.pool
            .run("read stream_positions", move |conn| {
                let mut stmt = conn.prepare_cached(statements::LOAD_POSITIONS)?;
                let rows = stmt.query_map([stream], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect()
            })
            .await
    }

    /// The id of `instance` in `instance_map`, inserting it on first use.
    pub(crate) async fn instance_id(&self, instance: &str) -> Result<i32, Error> {
        let instance = instance.to_owned();
        self.pool
            .run("look up the instance id", move |conn| {
                conn.execute_batch(statements::CREATE_INSTANCE_MAP)?;
                conn.execute(statements::INSERT_INSTANCE, [&instance])?;
                conn.query_row(statements::INSTANCE_ID, [&instance], |r| r.get(0))
            })
            .await
    }

    /// The instance with id `id`, if any.
    pub(crate) async fn instance_name(&self, id: i32) -> Result<Option<String>, Error> {
        use rusqlite::OptionalExtension;
        self.pool
            .run("look up the instance name", move |conn| {
                conn.execute_batch(statements::CREATE_INSTANCE_MAP)?;
                conn.query_row(statements::INSTANCE_NAME, [id], |r| r.get(0))
                    .optional()
            })
            .await
    }

    /// Adds gap-ledger increments to `stream_gaps`.
    pub(crate) async fn add_gaps(
        &self,
        stream: &str,
        increments: Vec<(String, &'static str, i64)>,
    ) -> Result<(), Error> {
        let stream = stream.to_owned();
        self.pool
            .run("record gaps", move |conn| {
                let tx = conn.transaction()?;
                for (instance, cause, n) in &increments {
                    tx.execute(statements::ADD_GAPS, (&stream, instance, cause, n))?;
                }
                tx.commit()
            })
            .await
    }

    /// The guarded upsert, `value` in API form.
    pub(crate) async fn upsert_position(
        &self,
        stream: &str,
        instance: &str,
        value: i64,
    ) -> Result<(), Error> {
        let sql = self.statements.upsert_position;
        let (stream, instance) = (stream.to_owned(), instance.to_owned());
        self.pool
            .run("record the stream position", move |conn| {
                conn.execute(sql, (stream, instance, value)).map(|_| ())
            })
            .await
    }
}

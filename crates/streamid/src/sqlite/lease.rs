//! Writer leases and dead-writer recovery on SQLite (issue 5).
//!
//! A live writer holds an exclusive lock on a lease file next to the database for its whole
//! life; the operating system releases it when the process dies. SQLite itself rolls back a
//! dead process's unfinished transaction, so once the lease is free no transaction of that
//! writer can still commit — the proof. Recovery then takes `F` from the counter and records
//! it as the writer's position, in one `BEGIN IMMEDIATE` transaction, while holding the
//! lease file so the writer cannot restart in between.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::TransactionBehavior;

use super::{SqliteBackend, blocking, statements};
use crate::config::ValidConfig;
use crate::{Error, keys};

/// How often acquisition retries while the lease file is locked.
const RETRY: Duration = Duration::from_millis(100);

/// A held lease file lock; dropping it releases the lock.
pub(crate) struct FileLease {
    _file: File,
}

/// The lease file of `(stream, writer)` for the database at `db`.
pub(crate) fn lease_path(db: &Path, config: &ValidConfig, writer: &str) -> PathBuf {
    let key = keys::lease(&config.stream, writer) as u64;
    let mut name = db.as_os_str().to_owned();
    name.push(format!(".streamid-{key:016x}.lease"));
    PathBuf::from(name)
}

fn open(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| {
            Error::Internal(format!(
                "cannot open the lease file {}: {e}",
                path.display()
            ))
        })
}

impl FileLease {
    /// Takes the lease, waiting up to `timeout` for a previous holder.
    pub(crate) async fn acquire(
        db: &Path,
        config: &ValidConfig,
        timeout: Duration,
    ) -> Result<FileLease, Error> {
        let path = lease_path(db, config, &config.instance);
        let deadline = Instant::now() + timeout;
        loop {
            let file = open(&path)?;
            match file.try_lock() {
                Ok(()) => return Ok(FileLease { _file: file }),
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(source)) => {
                    return Err(Error::Io {
                        operation: "lock the writer lease file",
                        path: path.display().to_string(),
                        source,
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::LeaseHeld {
                    stream: config.stream.clone(),
                    instance: config.instance.clone(),
                    waited_ms: timeout.as_millis(),
                });
            }
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// Tries to recover `writer`: `Some(F)` (internal form) when its lease file is free (or did
/// not exist yet: it never started) and `F` was recorded as its position, `None` when it
/// may be alive.
pub(crate) async fn reclaim(
    db: &SqliteBackend,
    path: &Path,
    config: &ValidConfig,
    writer: &str,
) -> Result<Option<i64>, Error> {
    let lease = lease_path(path, config, writer);
    let pool = std::sync::Arc::clone(&db.pool);
    let counter = db.statements.counter.clone();
    let upsert = db.statements.upsert_position;
    let (stream, me, writer, sign) = (
        config.stream.clone(),
        config.instance.clone(),
        writer.to_owned(),
        config.sign,
    );
    blocking(move || {
        // A missing lease file means the writer never started on this file: it cannot
        // commit either, and must not stall the stream (spec §1.2, as on PostgreSQL, where
        // the proof covers a writer that never started). Creating and locking the file
        // here keeps it from starting until this recovery has committed.
        let file = open(&lease)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => {
                return Err(Error::Internal(format!(
                    "cannot lock {}: {e}",
                    lease.display()
                )));
            }
        }
        // Holding the dead writer's lease: it cannot restart until this commits.
        let mut conn = pool.take()?;
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let f: i64 =
                tx.query_row(statements::ADVANCE_COUNTER, (&counter, 1_i64), |r| r.get(0))?;
            tx.execute(upsert, (&stream, &writer, sign * f))?;
            tx.execute(
                statements::RECORD_EVENT,
                (&stream, &writer, "reclaimed", sign * f, &me),
            )?;
            tx.commit()?;
            Ok(f)
        })();
        pool.put(conn);
        drop(file);
        result
            .map(Some)
            .map_err(|e| pool.error("recover a dead writer", e))
    })
    .await
}

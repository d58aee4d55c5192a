//! The SQLite transaction path: a transaction on its own connection that allocates IDs and
//! finishes them exactly when its outcome is known.
//!
//! SQLite allows one writer at a time, and the counter is advanced in its own committed
//! transaction (so a rollback can never re-issue an ID). Hence IDs are allocated *before*
//! the transaction's first statement: the transaction begins (`BEGIN IMMEDIATE`, taking the
//! write lock) at its first statement, and allocating after that would wait for its own lock.
//! Because commits are serialised by that lock, rows of different transactions still commit
//! out of ID order, which is what the tracker is for.
//!
//! The connection moves into each blocking call and back. COMMIT runs in a blocking closure
//! that owns the IDs and finishes them itself, so a dropped `commit()` future still finishes
//! them with the true outcome.

use std::sync::Arc;

use rusqlite::Connection;

use super::{SqliteBackend, blocking};
use crate::Error;
use crate::gaps::GapCause;
use crate::state::{Outcome, StreamState};

/// A SQLite transaction that allocates stream IDs — the embedded counterpart of
/// [`StreamTransaction`](crate::StreamTransaction).
///
/// **Dropping it** without [`commit`](Self::commit) rolls back and finishes its IDs as gaps.
/// Allocate every ID before the first [`execute`](Self::execute)/[`run`](Self::run): the
/// transaction takes SQLite's write lock at its first statement.
///
/// # Cancel safety
///
/// Every method may be cancelled. A statement still running when its future is dropped
/// completes on the blocking pool, and the transaction is then rolled back; a COMMIT still
/// running finishes the IDs with its real outcome.
///
/// # Examples
///
/// ```no_run
/// # async fn example(generator: streamid::MultiWriterIdGenerator) -> Result<(), streamid::Error> {
/// let mut tx = generator.sqlite_transaction().await?;
/// let id = tx.next_id().await?;
/// tx.execute(
///     "INSERT INTO events (stream_ordering, instance_name) VALUES (?1, ?2)",
///     (id, "writer-1"),
/// )
/// .await?;
/// tx.commit().await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "dropping a SqliteTransaction rolls it back"]
pub struct SqliteTransaction {
    backend: SqliteBackend,
    /// `None` while a blocking call holds it, or after a cancelled call lost it.
    conn: Option<Connection>,
    /// `BEGIN IMMEDIATE` was issued.
    began: bool,
    ids: Ids,
}

/// A transaction's IDs (internal form); dropping finishes them as gaps.
struct Ids {
    state: Arc<StreamState>,
    ids: Vec<i64>,
}

impl Ids {
    fn finish(mut self, outcome: Outcome) {
        let ids = std::mem::take(&mut self.ids);
        if !ids.is_empty() {
            self.state.finish(&ids, outcome);
        }
    }
}

impl Drop for Ids {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut self.ids);
        if !ids.is_empty() {
            self.state
                .finish(&ids, Outcome::Failure(GapCause::Abandoned));
        }
    }
}

/// A rolled-back transaction's IDs, finished as gaps (cause: rolled back) when dropped.
struct RolledBack(Option<Ids>);

impl Drop for RolledBack {
    fn drop(&mut self) {
        if let Some(ids) = self.0.take() {
            ids.finish(Outcome::Failure(GapCause::RolledBack));
        }
    }
}

impl SqliteTransaction {
    pub(crate) async fn begin(
        backend: SqliteBackend,
        state: Arc<StreamState>,
    ) -> Result<SqliteTransaction, Error> {
        let pool = Arc::clone(&backend.pool);
        let conn = blocking(move || pool.take()).await?;
        Ok(SqliteTransaction {
            backend,
            conn: Some(conn),
            began: false,
            ids: Ids {
                state,
                ids: Vec::new(),
            },
        })
    }

    /// Allocates one ID. Call before the first statement.
    ///
    /// # Errors
    ///
    /// [`Error::NotAWriter`]; [`Error::InvalidArgument`] after the first statement;
    /// [`Error::Sqlite`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an ID not yet received is a gap.
    pub async fn next_id(&mut self) -> Result<i64, Error> {
        let ids = self.next_ids(1).await?;
        ids.first()
            .copied()
            .ok_or_else(|| Error::Internal("the counter returned no IDs".to_owned()))
    }

    /// Allocates `n` IDs (ascending for forwards streams). Call before the first statement.
    ///
    /// # Errors
    ///
    /// As [`next_id`](Self::next_id); [`Error::InvalidArgument`] for `n == 0`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn next_ids(&mut self, n: usize) -> Result<Vec<i64>, Error> {
        let state = Arc::clone(&self.ids.state);
        state.config.check_allocation(n)?;
        if self.began {
            return Err(Error::InvalidArgument(
                "a SQLite stream transaction allocates its IDs before its first statement: \
                 the counter needs the write lock this transaction now holds"
                    .to_owned(),
            ));
        }
        let fetch = state.begin_fetch();
        let ids = self.backend.fetch_ids(n).await?;
        fetch.register(&ids)?;
        self.ids.ids.extend_from_slice(&ids);
        let sign = state.sign();
        Ok(ids.into_iter().map(|id| sign * id).collect())
    }

    /// The IDs allocated so far (API form).
    pub fn ids(&self) -> Vec<i64> {
        let sign = self.ids.state.sign();
        self.ids.ids.iter().map(|id| sign * id).collect()
    }

    /// Executes one statement in the transaction; returns the number of rows changed.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] if the statement fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; afterwards the transaction can only be dropped or rolled back.
    pub async fn execute<P>(&mut self, sql: &str, params: P) -> Result<usize, Error>
    where
        P: rusqlite::Params + Send + 'static,
    {
        let sql = sql.to_owned();
        self.run(move |conn| conn.execute(&sql, params)).await
    }

    /// Runs `f` with the transaction's connection on the blocking pool, for queries and
    /// anything [`execute`](Self::execute) cannot express.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] if `f` fails.
    ///
    /// # Cancel safety
    ///
    /// As [`execute`](Self::execute).
    pub async fn run<T, F>(&mut self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let conn = self.take_conn()?;
        let begin = !self.began;
        self.began = true;
        let pool = Arc::clone(&self.backend.pool);
        let (conn, result) = blocking(move || {
            let result = (|| {
                if begin {
                    conn.execute_batch("BEGIN IMMEDIATE")?;
                }
                f(&conn)
            })();
            let result = result.map_err(|e| pool.error("run a statement in the transaction", e));
            Ok((conn, result))
        })
        .await?;
        self.conn = Some(conn);
        result
    }

    /// Commits; the IDs are finished (success) before it returns.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] if COMMIT fails: the transaction is rolled back and its IDs are
    /// finished as gaps.
    ///
    /// # Cancel safety
    ///
    /// Dropped before its first poll, the transaction rolls back. Dropped later, the COMMIT
    /// completes on the blocking pool and finishes the IDs with its outcome.
    pub async fn commit(mut self) -> Result<(), Error> {
        let conn = self.take_conn()?;
        let began = self.began;
        let state = Arc::clone(&self.ids.state);
        let ids = std::mem::replace(
            &mut self.ids,
            Ids {
                state,
                ids: Vec::new(),
            },
        );
        let pool = Arc::clone(&self.backend.pool);
        blocking(move || {
            let result = if began {
                conn.execute_batch("COMMIT")
            } else {
                Ok(())
            };
            match result {
                Ok(()) => {
                    ids.finish(Outcome::Success);
                    pool.put(conn);
                    Ok(())
                }
                Err(e) => {
                    // A failed COMMIT may leave the transaction open (SQLITE_BUSY): end it,
                    // so the rows can never commit, before declaring the IDs gaps.
                    let _ = conn.execute_batch("ROLLBACK");
                    drop(conn);
                    ids.finish(Outcome::Failure(GapCause::CommitFailed));
                    Err(pool.error("commit", e))
                }
            }
        })
        .await
    }

    /// Rolls back; the IDs are finished as gaps.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] if ROLLBACK fails (the connection is then closed, which rolls back).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn rollback(mut self) -> Result<(), Error> {
        let state = Arc::clone(&self.ids.state);
        let ids = std::mem::replace(
            &mut self.ids,
            Ids {
                state,
                ids: Vec::new(),
            },
        );
        // Finish after ROLLBACK returns (the rows are gone before positions move), or at
        // once if this future is dropped first: a transaction that never sent COMMIT cannot
        // commit, so its IDs must not wait for the blocking ROLLBACK (spec §7.2).
        let _finish = RolledBack(Some(ids));
        let Ok(conn) = self.take_conn() else {
            return Ok(()); // the connection was lost, which rolled the transaction back
        };
        let began = self.began;
        let pool = Arc::clone(&self.backend.pool);
        blocking(move || {
            let result = if began {
                conn.execute_batch("ROLLBACK")
            } else {
                Ok(())
            };
            // On failure the connection is closed (dropped), which rolls back.
            match result {
                Ok(()) => {
                    pool.put(conn);
                    Ok(())
                }
                Err(e) => Err(pool.error("rollback", e)),
            }
        })
        .await
    }

    fn take_conn(&mut self) -> Result<Connection, Error> {
        self.conn.take().ok_or_else(|| {
            Error::InvalidArgument(
                "the transaction's connection was lost when an earlier call was cancelled; \
                 drop the transaction (it is rolled back) and start a new one"
                    .to_owned(),
            )
        })
    }
}

impl Drop for SqliteTransaction {
    fn drop(&mut self) {
        // The connection (if still here) is closed, which rolls back; the IDs are finished
        // as gaps by `Ids::drop`. A transaction that never began holds no lock: keep it.
        if let Some(conn) = self.conn.take()
            && conn.is_autocommit()
        {
            self.backend.pool.put(conn);
        }
    }
}

impl std::fmt::Debug for SqliteTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTransaction")
            .field("stream", &self.ids.state.config.stream)
            .field("ids", &self.ids())
            .field("began", &self.began)
            .finish()
    }
}

//! [`Allocation`]: IDs taken in autocommit, owned until completed or dropped (spec §5.3).

use std::sync::Arc;

use tokio_postgres::types::Type;

use crate::Error;
use crate::gaps::GapCause;
use crate::postgres::statements;
use crate::state::{Outcome, StreamState};

/// Stream IDs allocated by [`next_id`](crate::MultiWriterIdGenerator::next_id) or
/// [`next_ids`](crate::MultiWriterIdGenerator::next_ids), owned until
/// [`complete`](Self::complete)d or dropped.
///
/// **Dropping it** without `complete()` is the failure path: the IDs are finished at once as
/// gaps (no row may use them) and no `stream_positions` write is made for them.
///
/// Write the rows in your own transaction and call `complete()` only after it committed;
/// drop the allocation after a rollback. Call [`bind`](Self::bind) inside that transaction
/// first: an *unbound* allocation is safe while this process lives, but if the process
/// crashes while its COMMIT is still being processed, a restart of this instance (or a
/// recovery by another process) cannot see that COMMIT and may cover its IDs too early.
/// [`StreamTransaction`](crate::StreamTransaction) does all of this for you and is the
/// recommended path.
///
/// # Examples
///
/// ```no_run
/// # async fn example(generator: streamid::MultiWriterIdGenerator, pool: deadpool_postgres::Pool) -> Result<(), streamid::Error> {
/// let alloc = generator.next_id().await?;
/// let mut client = pool.get().await?;
/// let tx = client.transaction().await?;
/// alloc.bind(&tx).await?;
/// tx.execute("INSERT INTO events (stream_ordering) VALUES ($1)", &[&alloc.id()]).await?;
/// tx.commit().await?;
/// alloc.complete().await?; // returns once the position is recorded
/// # Ok(())
/// # }
/// ```
#[must_use = "dropping an Allocation gives its IDs up; call complete() after committing rows"]
pub struct Allocation {
    state: Arc<StreamState>,
    /// Internal form, ascending; empty once finished.
    internal: Vec<i64>,
    /// API form, in allocation order.
    ids: Vec<i64>,
    /// PostgreSQL only.
    writer_lock: Option<i64>,
}

impl Allocation {
    pub(crate) fn new(
        state: Arc<StreamState>,
        ids: Vec<i64>,
        writer_lock: Option<i64>,
    ) -> Allocation {
        let sign = state.sign();
        Allocation {
            ids: ids.iter().map(|id| sign * id).collect(),
            internal: ids,
            state,
            writer_lock,
        }
    }

    /// The first (for `next_id`, the only) ID.
    pub fn id(&self) -> i64 {
        self.ids.first().copied().unwrap_or_default()
    }

    /// All IDs, ascending for forwards streams (descending for backwards ones).
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// Takes the writer lock inside your transaction (spec §5.3), so a restart of this
    /// instance waits for that transaction to end. Call it before writing rows.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] if the statement fails; [`Error::WrongBackend`] on SQLite.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; the lock, once taken, is held until the transaction ends.
    pub async fn bind(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), Error> {
        const OP: &str = "bind the allocation to the transaction";
        let Some(key) = self.writer_lock else {
            return Err(Error::WrongBackend {
                operation: "Allocation::bind",
                expected: "PostgreSQL",
                actual: "SQLite",
            });
        };
        tx.query_typed(statements::ADVISORY_XACT_LOCK_SHARED, &[(&key, Type::INT8)])
            .await
            .map_err(Error::db(OP))?;
        if let Some(fence) = self.state.fence_check(key) {
            // The tag holds hex digits, colons and digits only.
            tx.batch_execute(&format!("SET LOCAL application_name = '{}'", fence.tag))
                .await
                .map_err(Error::db(OP))?;
            let checked = tx
                .batch_execute(&statements::fence_check(key, fence.epoch))
                .await;
            if let Err(err) = checked {
                if err.code() == Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO) {
                    self.state
                        .fence("a bound transaction found its epoch fenced");
                    return Err(Error::Fenced {
                        stream: self.state.config.stream.clone(),
                        instance: self.state.config.instance.clone(),
                    });
                }
                return Err(Error::db(OP)(err));
            }
        }
        Ok(())
    }

    /// Declares the rows committed: finishes the IDs at once (at the first poll, before any
    /// `.await`), then returns when the resulting position is recorded in
    /// `stream_positions`. Concurrent completions share one upsert (spec §8.4).
    ///
    /// # Errors
    ///
    /// [`Error::PositionNotRecorded`] if the upsert covering this position failed; the IDs
    /// stay finished and the row is retried in the background.
    ///
    /// # Cancel safety
    ///
    /// Dropped before its first poll, the allocation takes the failure path. Dropped later,
    /// the IDs are finished and the row is written in the background.
    pub async fn complete(mut self) -> Result<(), Error> {
        let ids = std::mem::take(&mut self.internal);
        let announced = self.state.finish(&ids, Outcome::Success);
        let Some(writer) = &self.state.writer else {
            return Ok(());
        };
        match writer.wait_recorded(announced).await {
            Ok(()) => Ok(()),
            Err(Some(source)) => Err(Error::PositionNotRecorded {
                stream: self.state.config.stream.clone(),
                position: self.state.sign() * announced,
                source,
            }),
            Err(None) => Err(Error::ShutDown(self.state.config.stream.clone())),
        }
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut self.internal);
        if !ids.is_empty() {
            self.state
                .finish(&ids, Outcome::Failure(GapCause::Abandoned));
        }
    }
}

impl std::fmt::Debug for Allocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Allocation")
            .field("stream", &self.state.config.stream)
            .field("ids", &self.ids)
            .finish()
    }
}

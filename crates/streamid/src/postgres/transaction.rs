//! The transaction path (spec §7): IDs allocated inside the caller's transaction, finished
//! exactly when the transaction's outcome is known.
//!
//! The IDs live in [`TxIds`], whose `Drop` finishes them with outcome *failure*; a COMMIT in
//! flight moves them to [`InDoubt`] instead, whose `Drop` hands them to the resolver. So
//! every way out — commit, rollback, error, cancellation at any `.await`, panic — finishes
//! every ID exactly once, and never while its transaction could still commit.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use tokio_postgres::error::Severity;
use tokio_postgres::{SimpleQueryMessage, Transaction};

use crate::Error;
use crate::gaps::GapCause;
use crate::postgres::PgBackend;
use crate::postgres::resolver::{self, Resolver};
use crate::postgres::statements::FirstAllocation;
use crate::state::{Outcome, StreamState};

/// A PostgreSQL transaction that allocates stream IDs (spec §7) — the recommended way to
/// write a stream.
///
/// **Dropping it** without [`commit`](Self::commit) rolls the transaction back and finishes
/// its IDs as gaps. It dereferences to [`tokio_postgres::Transaction`], so run your own
/// statements on it; never end it with your own `COMMIT`, `ROLLBACK`, `END` or
/// `PREPARE TRANSACTION` statement, which would void the guarantee.
///
/// Created by [`MultiWriterIdGenerator::transaction`](crate::MultiWriterIdGenerator::transaction).
///
/// # Cancel safety
///
/// Every method may be cancelled (its future dropped) at any `.await`: IDs received are
/// finished when the transaction is dropped, IDs not yet received become gaps, and a COMMIT
/// already sent is resolved in the background with `pg_xact_status`.
///
/// # Examples
///
/// ```no_run
/// # async fn example(generator: streamid::MultiWriterIdGenerator, pool: deadpool_postgres::Pool) -> Result<(), streamid::Error> {
/// let mut client = pool.get().await?;
/// let mut tx = generator.transaction(&mut client).await?;
/// let id = tx.next_id().await?;
/// tx.execute(
///     "INSERT INTO events (stream_ordering, instance_name) VALUES ($1, $2)",
///     &[&id, &"writer-1"],
/// )
/// .await?;
/// tx.commit().await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "dropping a StreamTransaction rolls it back"]
pub struct StreamTransaction<'a> {
    tx: Transaction<'a>,
    ids: TxIds,
}

/// The IDs of one transaction and everything needed to finish them.
struct TxIds {
    state: Arc<StreamState>,
    backend: PgBackend,
    resolver: Resolver,
    /// Internal form; non-empty only after an allocation.
    ids: Vec<i64>,
    /// Recorded by the first allocation, in the same round trip.
    xid: Option<i64>,
}

impl TxIds {
    /// Finishes the IDs now.
    fn finish(mut self, outcome: Outcome) {
        let ids = std::mem::take(&mut self.ids);
        if !ids.is_empty() {
            self.state.finish(&ids, outcome);
        }
    }

    /// The API form of the IDs.
    fn external(&self) -> Vec<i64> {
        let sign = self.state.sign();
        self.ids.iter().map(|id| sign * id).collect()
    }
}

impl Drop for TxIds {
    fn drop(&mut self) {
        // COMMIT was never sent, so the transaction cannot commit: finish at once, even
        // before the server processed the rollback (spec §7.2).
        let ids = std::mem::take(&mut self.ids);
        if !ids.is_empty() {
            self.state
                .finish(&ids, Outcome::Failure(GapCause::Abandoned));
        }
    }
}

/// IDs whose COMMIT is in flight. Dropped (the commit future was cancelled, or no reply
/// came), it hands them to the resolver instead of finishing them.
struct InDoubt {
    ids: Option<TxIds>,
}

impl InDoubt {
    fn settle(&mut self) -> Option<TxIds> {
        self.ids.take()
    }

    /// Hands the IDs to the resolver and describes them.
    fn to_resolver(ids: TxIds, source: Option<tokio_postgres::Error>) -> Error {
        let external = ids.external();
        let mut ids = ids;
        let taken = std::mem::take(&mut ids.ids);
        let xid = ids.xid.unwrap_or(-1);
        match ids.xid {
            Some(xid) => ids.resolver.submit(resolver::InDoubt { ids: taken, xid }),
            None => tracing::error!(
                ids = ?external,
                "commit outcome unknown for a transaction without a recorded id; \
                 its IDs stay unfinished (this is a bug in streamid)"
            ),
        }
        Error::CommitOutcomeUnknown {
            xid,
            ids: external,
            source,
        }
    }
}

impl Drop for InDoubt {
    fn drop(&mut self) {
        if let Some(ids) = self.ids.take() {
            let err = InDoubt::to_resolver(ids, None);
            tracing::warn!("{err}");
        }
    }
}

impl<'a> StreamTransaction<'a> {
    pub(crate) fn new(
        tx: Transaction<'a>,
        state: Arc<StreamState>,
        backend: PgBackend,
        resolver: Resolver,
    ) -> StreamTransaction<'a> {
        StreamTransaction {
            tx,
            ids: TxIds {
                state,
                backend,
                resolver,
                ids: Vec::new(),
                xid: None,
            },
        }
    }

    /// Allocates one ID for a row of this transaction. The first allocation also takes the
    /// writer lock and records the transaction id, in the same round trip (spec §7.1).
    ///
    /// # Errors
    ///
    /// [`Error::NotAWriter`] on a reader; [`Error::Database`] if the statement fails (the
    /// transaction is then aborted, as with any failed statement).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an ID not yet received becomes a gap.
    pub async fn next_id(&mut self) -> Result<i64, Error> {
        let ids = self.allocate(1).await?;
        ids.first()
            .copied()
            .ok_or_else(|| Error::InvalidArgument("the sequence returned no IDs".to_owned()))
    }

    /// Allocates `n` IDs (ascending) for rows of this transaction.
    ///
    /// # Errors
    ///
    /// As [`next_id`](Self::next_id); [`Error::InvalidArgument`] for `n == 0` or
    /// `n > MAX_BATCH`, before any I/O.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn next_ids(&mut self, n: usize) -> Result<Vec<i64>, Error> {
        self.allocate(n).await
    }

    async fn allocate(&mut self, n: usize) -> Result<Vec<i64>, Error> {
        const OP: &str = "allocate stream IDs in the transaction";
        let state = &self.ids.state;
        state.config.check_allocation(n)?;
        state.check_not_fenced()?;
        let backend = &self.ids.backend;
        let first = self.ids.xid.is_none().then(|| FirstAllocation {
            writer_lock: backend.writer_lock,
            xact: backend.xact,
            fence: state.fence_check(backend.writer_lock),
        });
        let sql = backend.statements.transaction_allocation(n, first.as_ref());
        let fetch = state.begin_fetch();
        let messages = match self.tx.simple_query(&sql).await {
            Ok(messages) => messages,
            Err(err) if is_fenced(&err, first.as_ref()) => {
                // Our epoch is gone: another process recovered this writer. The fence check
                // failed the transaction, so nothing in it can commit; any ID is a gap.
                drop(fetch);
                state.fence("a transaction found its epoch fenced");
                return Err(Error::Fenced {
                    stream: state.config.stream.clone(),
                    instance: state.config.instance.clone(),
                });
            }
            Err(err) => return Err(Error::db(OP)(err)),
        };
        let reply = parse_allocation(&messages, first.as_ref())?;
        let mut ids = reply.ids;
        ids.sort_unstable();
        fetch.register(&ids)?;
        // No `.await` between registering and taking ownership: a drop from here on finishes.
        self.ids.ids.extend_from_slice(&ids);
        if reply.xid.is_some() {
            self.ids.xid = reply.xid;
        }
        let sign = self.ids.state.sign();
        Ok(ids.into_iter().map(|id| sign * id).collect())
    }

    /// The IDs allocated so far (API form).
    pub fn ids(&self) -> Vec<i64> {
        self.ids.external()
    }

    /// The transaction id recorded by the first allocation.
    pub fn xid(&self) -> Option<i64> {
        self.ids.xid
    }

    /// Commits; once the server confirms, finishes the IDs (success) before returning. The
    /// `stream_positions` row is written in the background, coalesced.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] if the server refused the COMMIT (the transaction rolled back; its
    /// IDs are finished as gaps). [`Error::CommitOutcomeUnknown`] if no reply came: the IDs
    /// stay unfinished until `pg_xact_status` resolves the transaction in the background.
    ///
    /// # Cancel safety
    ///
    /// Dropped before its first poll, the transaction rolls back. Dropped later, COMMIT is in
    /// flight and the outcome is resolved in the background as above.
    pub async fn commit(self) -> Result<(), Error> {
        const OP: &str = "commit";
        let StreamTransaction { tx, ids } = self;
        if ids.ids.is_empty() {
            return tx.commit().await.map_err(Error::db(OP));
        }
        let mut in_doubt = InDoubt { ids: Some(ids) };
        let result = tx.commit().await;
        let Some(ids) = in_doubt.settle() else {
            return Ok(());
        };
        match result {
            Ok(()) => {
                ids.finish(Outcome::Success);
                Ok(())
            }
            // An ERROR reply: the server rolled the transaction back.
            Err(e) if is_rollback_reply(&e) => {
                ids.finish(Outcome::Failure(GapCause::CommitFailed));
                Err(Error::db(OP)(e))
            }
            Err(e) => Err(InDoubt::to_resolver(ids, Some(e))),
        }
    }

    /// Rolls back. The IDs are finished as gaps at once, whether or not the ROLLBACK
    /// succeeds: a transaction that never sent COMMIT cannot commit.
    ///
    /// # Errors
    ///
    /// [`Error::Database`] if the ROLLBACK failed (the transaction is aborted anyway).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn rollback(self) -> Result<(), Error> {
        let StreamTransaction { tx, ids } = self;
        ids.finish(Outcome::Failure(GapCause::RolledBack));
        tx.rollback().await.map_err(Error::db("rollback"))
    }
}

/// An error reply of severity ERROR to COMMIT means the transaction rolled back. FATAL or
/// PANIC (the backend is going away) leaves the outcome open, as does no reply at all.
fn is_rollback_reply(err: &tokio_postgres::Error) -> bool {
    err.as_db_error()
        .is_some_and(|db| matches!(db.parsed_severity(), Some(Severity::Error)))
}

/// The replies to [`Statements::transaction_allocation`].
///
/// [`Statements::transaction_allocation`]: crate::postgres::statements::Statements::transaction_allocation
struct AllocationReply {
    xid: Option<i64>,
    ids: Vec<i64>,
}

/// The fence check of a first allocation failed: the writer's epoch is gone.
fn is_fenced(err: &tokio_postgres::Error, first: Option<&FirstAllocation>) -> bool {
    first.is_some_and(|f| f.fence.is_some())
        && err.code() == Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
}

/// Reads the simple-query replies: with a first allocation, the lock's row, then (for a
/// registered writer) the `SET` and the epoch check, the transaction id, then the IDs.
fn parse_allocation(
    messages: &[SimpleQueryMessage],
    first: Option<&FirstAllocation>,
) -> Result<AllocationReply, Error> {
    let bad = |what: &str| Error::Internal(format!("unexpected reply while allocating: {what}"));
    // Rows grouped by statement: CommandComplete ends each statement's rows.
    let mut statements: Vec<Vec<&str>> = vec![Vec::new()];
    for m in messages {
        match m {
            SimpleQueryMessage::Row(row) => {
                let value = row.get(0).ok_or_else(|| bad("a NULL value"))?;
                if let Some(current) = statements.last_mut() {
                    current.push(value);
                }
            }
            SimpleQueryMessage::CommandComplete(_) => statements.push(Vec::new()),
            _ => {}
        }
    }
    let parse = |s: &str| s.parse::<i64>().map_err(|_| bad(s));
    let group = |i: usize| {
        statements
            .get(i)
            .ok_or_else(|| bad("a statement's reply is missing"))
    };
    let (xid, ids_at) = match first {
        None => (None, 0),
        Some(first) => {
            // The lock's row; with a fence, the SET and the check's row; then the xid.
            let xid_at = if first.fence.is_some() { 3 } else { 1 };
            let xid = group(xid_at)?
                .first()
                .ok_or_else(|| bad("no transaction id"))?;
            (Some(parse(xid)?), xid_at + 1)
        }
    };
    let ids = group(ids_at)?
        .iter()
        .map(|s| parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(AllocationReply { xid, ids })
}

impl<'a> Deref for StreamTransaction<'a> {
    type Target = Transaction<'a>;

    fn deref(&self) -> &Transaction<'a> {
        &self.tx
    }
}

impl DerefMut for StreamTransaction<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl std::fmt::Debug for StreamTransaction<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTransaction")
            .field("stream", &self.ids.state.config.stream)
            .field("ids", &self.ids.external())
            .field("xid", &self.ids.xid)
            .finish()
    }
}

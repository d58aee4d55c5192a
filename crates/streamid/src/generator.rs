//! [`MultiWriterIdGenerator`]: the public face of one stream in one process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use std::path::Path;

use crate::allocation::Allocation;
use crate::backend::Backend;
use crate::config::{StreamConfig, ValidConfig};
use crate::housekeeping::{Housekeeping, WriterLease};
use crate::persist::PositionWriter;
use crate::postgres::{self, PgBackend, Resolver, StreamTransaction};
use crate::sqlite::{self, SqliteBackend, SqliteTransaction};
use crate::state::{Registration, StreamState};
use crate::{Error, keys};

/// How long [`shutdown`](MultiWriterIdGenerator::shutdown) waits for the final position write.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// Allocates stream IDs for one stream in one process, and knows the positions below which
/// everything is committed.
///
/// Cheap to clone (`Arc` inside); `Send + Sync`. Background tasks (the coalesced
/// `stream_positions` writer, the commit-outcome resolver) stop when the last clone and the
/// last allocation are dropped; call [`shutdown`](Self::shutdown) for a final flush.
///
/// # Examples
///
/// ```no_run
/// # async fn example(pool: deadpool_postgres::Pool) -> Result<(), streamid::Error> {
/// use streamid::{MultiWriterIdGenerator, StreamConfig};
///
/// let config = StreamConfig::new("events", "writer-1")
///     .table("events", "instance_name", "stream_ordering")
///     .sequence("events_stream_seq")
///     .writers(["writer-1", "writer-2"]);
/// let generator = MultiWriterIdGenerator::postgres(pool.clone(), config).await?;
///
/// let mut client = pool.get().await?;
/// let mut tx = generator.transaction(&mut client).await?;
/// let id = tx.next_id().await?;
/// tx.execute(
///     "INSERT INTO events (stream_ordering, instance_name) VALUES ($1, $2)",
///     &[&id, &"writer-1"],
/// )
/// .await?;
/// tx.commit().await?;
///
/// // Readers read `stream_ordering <= generator.current_token()` and never miss a row.
/// assert!(generator.current_token() >= 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MultiWriterIdGenerator {
    pub(crate) state: Arc<StreamState>,
    pub(crate) backend: Backend,
}

impl MultiWriterIdGenerator {
    /// Validates the configuration, runs startup recovery (spec §4) and starts the
    /// background tasks.
    ///
    /// A writer's startup first waits until no transaction of an earlier process with the
    /// same instance name can still commit (bounded by
    /// [`writer_lock_timeout`](StreamConfig::writer_lock_timeout)).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] before any I/O; [`Error::MissingObject`] when the sequence, a
    /// table or a column is missing (the message says how to create it);
    /// [`Error::UnsuitableSequence`]; [`Error::InconsistentDatabase`] in strict mode;
    /// [`Error::WriterLockTimeout`]; [`Error::Timeout`] after
    /// [`startup_timeout`](StreamConfig::startup_timeout); [`Error::Database`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: startup runs in one transaction, rolled back if dropped.
    pub async fn postgres(
        pool: deadpool_postgres::Pool,
        config: StreamConfig,
    ) -> Result<MultiWriterIdGenerator, Error> {
        let config = config.validate(true)?;
        let statements = Arc::new(postgres::sequence::statements_for(&config)?);
        let timeout = config.startup_timeout;
        // Spec §12.6.1: a writer holds its lease from before its startup until it exits.
        let lease = if config.persists_position() {
            Some(postgres::lease::Lease::acquire(&pool, &config, config.writer_lock_timeout).await?)
        } else {
            None
        };
        let started =
            tokio::time::timeout(timeout, postgres::startup::run(&pool, &config, &statements))
                .await
                .map_err(|_| Error::Timeout {
                    operation: "startup",
                    waited_ms: timeout.as_millis(),
                })??;
        let pg = PgBackend {
            pool: pool.clone(),
            statements,
            xact: postgres::statements::XactFunctions::for_version(started.server_version),
            writer_lock: keys::writer_lock(&config.stream, &config.instance),
        };
        let (warn_after, xact) = (config.unresolved_warn_after, pg.xact);
        let registration = Arc::new(Registration::default());
        let lease = match (lease, started.epoch) {
            (Some(lease), Some(epoch)) => {
                lease.tag(epoch).await?;
                registration.registered(epoch);
                Some(WriterLease::Postgres(lease))
            }
            _ => None,
        };
        let mut resolver = None;
        let state = Arc::new_cyclic(|weak| {
            let r = Resolver::spawn(weak.clone(), pool, xact, warn_after);
            resolver = Some(r.clone());
            let backend = Backend::Postgres {
                pg: pg.clone(),
                resolver: r,
            };
            let writer = position_writer(&config, &backend, started.recorded, &registration);
            StreamState::new(config, started.tracker, writer, registration)
        });
        let resolver =
            resolver.ok_or_else(|| Error::Internal("the resolver was not started".to_owned()))?;
        let backend = Backend::Postgres { pg, resolver };
        Ok(MultiWriterIdGenerator::with_housekeeping(
            state, backend, lease,
        ))
    }

    /// Opens (creating if missing) the SQLite database at `path` and runs startup recovery
    /// (spec §4.6): the embedded backend, with the same semantics as
    /// [`postgres`](Self::postgres). IDs come from a counter row advanced in its own short
    /// `BEGIN IMMEDIATE` transaction, so several processes may share one file. The file is
    /// switched to WAL mode. No sequence needs to be configured (the counter is named after
    /// [`sequence`](StreamConfig::sequence) if given, else after the stream).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] before any I/O; [`Error::MissingObject`] when a backing
    /// table or column is missing; [`Error::InconsistentDatabase`] in strict mode;
    /// [`Error::Sqlite`] when the file is locked, read-only, corrupt or unreadable (the
    /// message says which, and what to do).
    ///
    /// # Cancel safety
    ///
    /// Startup runs to completion on the blocking pool even if the future is dropped; it is
    /// one transaction, so it either commits or leaves nothing behind.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), streamid::Error> {
    /// use streamid::{MultiWriterIdGenerator, StreamConfig};
    ///
    /// let config = StreamConfig::new("events", "writer-1")
    ///     .table("events", "instance_name", "stream_ordering")
    ///     .writers(["writer-1"]);
    /// let generator = MultiWriterIdGenerator::sqlite("events.db", config).await?;
    /// let mut tx = generator.sqlite_transaction().await?;
    /// let id = tx.next_id().await?;
    /// tx.execute("INSERT INTO events (stream_ordering, instance_name) VALUES (?1, ?2)", (id, "writer-1")).await?;
    /// tx.commit().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn sqlite(
        path: impl AsRef<Path>,
        config: StreamConfig,
    ) -> Result<MultiWriterIdGenerator, Error> {
        let config = config.validate(false)?;
        let pool = Arc::new(sqlite::SqlitePool::new(path.as_ref(), config.busy_timeout));
        // Open first: a bad path is reported as a SQLite error before anything else.
        let conn = {
            let pool = Arc::clone(&pool);
            sqlite::blocking(move || pool.open()).await?
        };
        // The lease before startup (spec §12.6.1), as on PostgreSQL.
        let lease = if config.persists_position() {
            Some(WriterLease::Sqlite {
                _held: sqlite::lease::FileLease::acquire(
                    path.as_ref(),
                    &config,
                    config.writer_lock_timeout,
                )
                .await?,
            })
        } else {
            None
        };
        let statements = Arc::new(sqlite::Statements::new(&config));
        let started = {
            let (pool, config, statements) =
                (Arc::clone(&pool), config.clone(), Arc::clone(&statements));
            sqlite::blocking(move || {
                let mut conn = conn;
                let started = sqlite::startup::run(&pool, &mut conn, &config, &statements);
                pool.put(conn);
                started
            })
        };
        let timeout = config.startup_timeout;
        let started =
            tokio::time::timeout(timeout, started)
                .await
                .map_err(|_| Error::Timeout {
                    operation: "startup",
                    waited_ms: timeout.as_millis(),
                })??;
        let backend = Backend::Sqlite(SqliteBackend { pool, statements });
        let registration = Arc::new(Registration::default());
        let writer = position_writer(&config, &backend, started.recorded, &registration);
        let state = Arc::new(StreamState::new(
            config,
            started.tracker,
            writer,
            registration,
        ));
        Ok(MultiWriterIdGenerator::with_housekeeping(
            state, backend, lease,
        ))
    }

    /// Starts the housekeeping task (lease, gap ledger, recovery) and builds the handle.
    fn with_housekeeping(
        state: Arc<StreamState>,
        backend: Backend,
        lease: Option<WriterLease>,
    ) -> MultiWriterIdGenerator {
        let task = Housekeeping::spawn(&state, backend.clone(), lease);
        *state
            .housekeeping
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
        MultiWriterIdGenerator { state, backend }
    }

    /// Allocates one ID in autocommit. See [`Allocation`] for how to use it.
    ///
    /// # Errors
    ///
    /// [`Error::NotAWriter`] on a reader, before any I/O; [`Error::Database`] or
    /// [`Error::Pool`] if the sequence cannot be reached.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an ID the server handed out before the future was dropped is a gap and
    /// holds nothing back.
    pub async fn next_id(&self) -> Result<Allocation, Error> {
        self.next_ids(1).await
    }

    /// Allocates `n` IDs in autocommit, in one round trip.
    ///
    /// # Errors
    ///
    /// As [`next_id`](Self::next_id); [`Error::InvalidArgument`] for `n == 0` or
    /// `n > MAX_BATCH`, allocating nothing.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn next_ids(&self, n: usize) -> Result<Allocation, Error> {
        self.state.config.check_allocation(n)?;
        self.state.check_not_fenced()?;
        let fetch = self.state.begin_fetch();
        let ids = self.backend.fetch_ids(n).await?;
        fetch.register(&ids)?;
        Ok(Allocation::new(
            Arc::clone(&self.state),
            ids,
            self.backend.writer_lock(),
        ))
    }

    /// Begins a transaction on `client` that allocates IDs inside it (spec §7): the fast,
    /// recommended path — one commit, and crash-safe through the writer lock.
    ///
    /// # Errors
    ///
    /// [`Error::WrongBackend`] on a SQLite generator (use
    /// [`sqlite_transaction`](Self::sqlite_transaction)); [`Error::Database`] if BEGIN fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a transaction begun before the future was dropped is rolled back.
    pub async fn transaction<'a>(
        &self,
        client: &'a mut tokio_postgres::Client,
    ) -> Result<StreamTransaction<'a>, Error> {
        let Backend::Postgres { pg, resolver } = &self.backend else {
            return Err(self.wrong_backend("transaction", "PostgreSQL"));
        };
        let tx = client.transaction().await.map_err(Error::db("begin"))?;
        Ok(StreamTransaction::new(
            tx,
            Arc::clone(&self.state),
            pg.clone(),
            resolver.clone(),
        ))
    }

    /// Starts a transaction on the SQLite database that allocates IDs (the embedded
    /// counterpart of [`transaction`](Self::transaction)); see [`SqliteTransaction`].
    ///
    /// # Errors
    ///
    /// [`Error::WrongBackend`] on a PostgreSQL generator; [`Error::Sqlite`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn sqlite_transaction(&self) -> Result<SqliteTransaction, Error> {
        let Backend::Sqlite(db) = &self.backend else {
            return Err(self.wrong_backend("sqlite_transaction", "SQLite"));
        };
        SqliteTransaction::begin(db.clone(), Arc::clone(&self.state)).await
    }

    fn wrong_backend(&self, operation: &'static str, expected: &'static str) -> Error {
        Error::WrongBackend {
            operation,
            expected,
            actual: self.backend.name(),
        }
    }

    /// Runs `f` in a fresh [`StreamTransaction`] and commits, retrying on serialization
    /// failure (`40001`) or deadlock (`40P01`) up to
    /// [`retry_attempts`](StreamConfig::retry_attempts) times. Each failed attempt's IDs are
    /// finished as gaps when it ends; the next attempt allocates fresh ones.
    ///
    /// # Errors
    ///
    /// The last attempt's error; [`Error::CommitOutcomeUnknown`] is never retried.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(generator: streamid::MultiWriterIdGenerator, pool: deadpool_postgres::Pool) -> Result<(), streamid::Error> {
    /// let mut client = pool.get().await?;
    /// let id = generator
    ///     .retry(&mut client, async |tx| {
    ///         let id = tx.next_id().await?;
    ///         tx.execute("INSERT INTO events (stream_ordering) VALUES ($1)", &[&id]).await?;
    ///         Ok(id)
    ///     })
    ///     .await?;
    /// # let _ = id;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn retry<T, F>(
        &self,
        client: &mut tokio_postgres::Client,
        mut f: F,
    ) -> Result<T, Error>
    where
        F: AsyncFnMut(&mut StreamTransaction<'_>) -> Result<T, Error>,
    {
        let attempts = self.state.config.retry_attempts;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt >= attempts;
            let mut tx = self.transaction(client).await?;
            match f(&mut tx).await {
                Ok(value) => match tx.commit().await {
                    Ok(()) => return Ok(value),
                    Err(e) if e.is_retryable() && !last => log_retry(attempt, &e),
                    Err(e) => return Err(e),
                },
                Err(e) => {
                    let _ = tx.rollback().await;
                    if !e.is_retryable() || last {
                        return Err(e);
                    }
                    log_retry(attempt, &e);
                }
            }
        }
    }

    /// The current token: the persisted-up-to position. Every ID at or below it (backwards
    /// streams: at or above it) is decided, whoever allocated it; read rows up to it and you
    /// never miss one.
    pub fn current_token(&self) -> i64 {
        self.persisted_upto_position()
    }

    /// The persisted-up-to position `P` (same as [`current_token`](Self::current_token)).
    pub fn persisted_upto_position(&self) -> i64 {
        self.state.sign() * self.state.lock().persisted_upto()
    }

    /// Writer `w`'s position: for this instance, its announced position; otherwise the
    /// larger of `w`'s known position and `P` (an unknown writer counts as `P`).
    pub fn current_token_for_writer(&self, writer: &str) -> i64 {
        self.state.sign() * self.state.lock().writer_position(writer)
    }

    /// This instance's own position, reached by its own completions (`P` for a reader).
    pub fn minimal_local_current_token(&self) -> i64 {
        self.state.sign() * self.state.lock().minimal_local()
    }

    /// Every known writer position; this instance's entry is its minimal position.
    pub fn positions(&self) -> BTreeMap<String, i64> {
        let sign = self.state.sign();
        let mut positions = self.state.lock().positions();
        positions.values_mut().for_each(|p| *p *= sign);
        positions
    }

    /// The last ID the sequence handed out (negative on backwards streams).
    ///
    /// # Errors
    ///
    /// [`Error::Database`] or [`Error::Pool`].
    pub async fn max_allocated_token(&self) -> Result<i64, Error> {
        Ok(self.state.sign() * self.backend.last_allocated().await?)
    }

    /// Applies another writer's announced position, as received through replication
    /// (`value` in API form). Positions of this instance and, with a non-empty writer list,
    /// of unlisted instances are ignored (and logged).
    pub fn advance(&self, instance: &str, value: i64) {
        self.state.advance(instance, self.state.sign() * value);
    }

    /// Starts replicating this stream's positions through `transport` (spec §12), replacing
    /// any transport started before: this process announces its own position (when it is a
    /// writer) and applies every other writer's announcements. See
    /// [`replication`](crate::replication) for the transports.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(generator: streamid::MultiWriterIdGenerator) {
    /// let bus = streamid::replication::InProcess::new();
    /// generator.replicate(bus.clone());
    /// # }
    /// ```
    pub fn replicate(&self, transport: impl crate::replication::Transport) {
        self.replicate_with(transport, crate::replication::ReplicationOptions::default());
    }

    /// [`replicate`](Self::replicate) with tuning.
    pub fn replicate_with(
        &self,
        transport: impl crate::replication::Transport,
        options: crate::replication::ReplicationOptions,
    ) {
        let driver = crate::replication::Replication::spawn(
            &self.state,
            self.backend.clone(),
            Arc::new(transport),
            options,
        );
        let old = self
            .state
            .replication
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .replace(driver);
        drop(old);
    }

    /// Replication's connection state and per-writer freshness, if replicating.
    pub fn replication_status(&self) -> Option<crate::replication::ReplicationStatus> {
        self.state
            .replication
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .map(crate::replication::Replication::status)
    }

    /// The stream's name.
    pub fn stream_name(&self) -> &str {
        &self.state.config.stream
    }

    /// This process's instance name.
    pub fn instance_name(&self) -> &str {
        &self.state.config.instance
    }

    /// Transactions whose COMMIT outcome is still being resolved.
    pub fn unresolved_commits(&self) -> usize {
        self.backend.unresolved()
    }

    /// IDs this process finished without a row (and IDs it took to recover dead writers),
    /// by writer and cause, since it started. Flushed as increments to `stream_gaps`.
    pub fn gaps(&self) -> BTreeMap<(String, crate::GapCause), u64> {
        self.state.gaps.snapshot()
    }

    /// Whether this writer is fenced (its lease was lost or another process recovered it);
    /// allocation is refused until it re-registers, which happens automatically.
    pub fn is_fenced(&self) -> bool {
        self.state.registration.is_fenced()
    }

    /// Local IDs allocated and not yet finished.
    pub fn unfinished_ids(&self) -> usize {
        self.state.lock().unfinished_count()
    }

    /// Writes the newest announced position to `stream_positions` once more (bounded to
    /// 5 s) and stops the position writer, and writes the gap ledger's last increments to
    /// `stream_gaps` (bounded likewise). Allocation keeps working; positions are then
    /// recorded only at the next startup.
    pub async fn shutdown(&self) {
        if let Some(writer) = &self.state.writer
            && !writer.shutdown(SHUTDOWN_FLUSH).await
        {
            tracing::warn!(stream = %self.state.config.stream, "the final position write timed out");
        }
        let gaps = crate::housekeeping::flush_gaps(&self.state, &self.backend);
        if tokio::time::timeout(SHUTDOWN_FLUSH, gaps).await.is_err() {
            tracing::warn!(stream = %self.state.config.stream, "the final gap-ledger write timed out");
        }
    }

    /// Checks the tracker's internal invariants (tests only).
    #[cfg(any(test, feature = "testing"))]
    pub fn check_invariants(&self) -> Result<(), String> {
        self.state.lock().check_invariants()
    }
}

/// The coalesced `stream_positions` writer of a configured writer (spec §8.2), or `None`.
/// A fenced writer records nothing (the write fails and is retried after re-registration),
/// and on PostgreSQL the row is written only under the writer's current epoch: a zombie
/// cannot raise the row of the incarnation that replaced it (issue 5).
fn position_writer(
    config: &ValidConfig,
    backend: &Backend,
    recorded: Option<i64>,
    registration: &Arc<Registration>,
) -> Option<PositionWriter> {
    let recorded = recorded?;
    let backend = backend.clone();
    let registration = Arc::clone(registration);
    let (stream, instance, sign) = (config.stream.clone(), config.instance.clone(), config.sign);
    Some(PositionWriter::spawn(
        recorded,
        config.position_write_interval,
        move |value| {
            let backend = backend.clone();
            let registration = Arc::clone(&registration);
            let (stream, instance) = (stream.clone(), instance.clone());
            async move {
                if registration.is_fenced() {
                    return Err(Error::Fenced { stream, instance });
                }
                backend
                    .upsert_own_position(&stream, &instance, sign * value, registration.epoch())
                    .await
            }
        },
    ))
}

fn log_retry(attempt: u32, err: &Error) {
    tracing::debug!(attempt, error = %err, "retrying the stream transaction");
}

impl std::fmt::Debug for MultiWriterIdGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiWriterIdGenerator")
            .field("stream", &self.state.config.stream)
            .field("instance", &self.state.config.instance)
            .finish_non_exhaustive()
    }
}

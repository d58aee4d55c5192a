//! The one error type of the `streamid` crate, shaped by what the caller does next.

use std::sync::Arc;

/// Everything that can go wrong in `streamid`.
///
/// Variants carry the offending values; messages say what failed and, where there is one,
/// how to fix it. Database errors keep the driver's error as their [`source`]; use
/// [`Error::code`] or [`Error::as_db_error`] to branch on SQLSTATE and
/// [`Error::is_retryable`] to decide whether to try again.
///
/// [`source`]: std::error::Error::source
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A [`StreamConfig`](crate::StreamConfig) field breaks a rule. Nothing was sent to the
    /// database.
    #[error("invalid configuration: {field} = {value:?}: {rule}")]
    InvalidConfig {
        /// The configuration field (`"table"`, `"writers"`, …).
        field: &'static str,
        /// The offending value.
        value: String,
        /// The rule it breaks.
        rule: String,
    },

    /// An argument is out of range (`next_ids(0)`, …). Nothing was allocated.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// This instance is not in the stream's writer list, so it may not allocate IDs.
    #[error(
        "instance {instance:?} is not a writer of stream {stream:?} (writers: {writers:?}): \
         add it to StreamConfig::writers on every process, restarting them, before it allocates"
    )]
    NotAWriter {
        /// The stream.
        stream: String,
        /// This instance.
        instance: String,
        /// The configured writers.
        writers: Vec<String>,
    },

    /// A sequence, table or column the configuration names does not exist.
    #[error("{kind} {name} does not exist{hint}")]
    MissingObject {
        /// `"sequence"`, `"table"` or `"column"`.
        kind: &'static str,
        /// The object's name as configured.
        name: String,
        /// How to create it.
        hint: String,
    },

    /// The stream's sequence would break uniqueness or ordering.
    #[error("sequence {sequence} is unsuitable: {problem}; fix it with: {fix}")]
    UnsuitableSequence {
        /// The sequence.
        sequence: String,
        /// What is wrong (type, increment, cycling, cache).
        problem: String,
        /// The statement that fixes it.
        fix: String,
    },

    /// Strict consistency is on and `stream_positions` records a position ahead of the
    /// sequence and every row. Nothing was changed.
    #[error(
        "inconsistent database: stream {stream:?} records position {recorded} (instance \
         {recorded_by:?}) in stream_positions, beyond what sequence {sequence} and the backing \
         tables allow ({base}); starting would let the sequence hand out IDs that readers \
         already treat as persisted. Likely causes: a restore whose tables and sequence come \
         from different moments; a promoted replica (sequences are pre-logged, so a standby's \
         need not match what was handed out); a port that rebuilt sequences but copied \
         stream_positions; two streams sharing one stream name. Repair (it only moves the \
         sequence forward):\n{repair_sql}\nStarting without strict_consistency repairs the \
         same way automatically"
    )]
    InconsistentDatabase {
        /// The stream.
        stream: String,
        /// The sequence.
        sequence: String,
        /// The largest recorded position (API form).
        recorded: i64,
        /// The instance holding it.
        recorded_by: String,
        /// What the sequence and the tables allow (API form).
        base: i64,
        /// The statement that repairs the sequence.
        repair_sql: String,
    },

    /// The sequence returned an ID at or below one already known to be allocated.
    #[error(
        "sequence {sequence} returned {id}, not above {known} which was already allocated: it \
         was moved backwards (setval) or caches values; the IDs were not used"
    )]
    SequenceWentBackwards {
        /// The sequence.
        sequence: String,
        /// The ID it returned (API form).
        id: i64,
        /// The largest ID known to be allocated before (API form).
        known: i64,
    },

    /// COMMIT was sent but no reply arrived. The transaction may or may not have committed;
    /// its IDs stay unfinished until PostgreSQL says which, so no position passes them.
    #[error(
        "commit outcome unknown for transaction {xid} (stream IDs {ids:?}): the connection failed \
         while COMMIT was in flight; streamid resolves it in the background"
    )]
    CommitOutcomeUnknown {
        /// The transaction id (`pg_current_xact_id()`).
        xid: i64,
        /// The transaction's stream IDs (API form).
        ids: Vec<i64>,
        /// What failed.
        #[source]
        source: Option<tokio_postgres::Error>,
    },

    /// Startup waited for a transaction of an earlier process with this instance name
    /// (the writer lock) and gave up.
    #[error(
        "startup of {instance:?} on stream {stream:?} timed out after {waited_ms} ms waiting for \
         transactions of an earlier process with the same instance name to end; blocking \
         backends: {blockers}. If that process is gone, end them with pg_terminate_backend(pid)"
    )]
    WriterLockTimeout {
        /// The stream.
        stream: String,
        /// This instance.
        instance: String,
        /// How long startup waited.
        waited_ms: u128,
        /// The blocking backends (pid, state, application, transaction start).
        blockers: String,
    },

    /// An operation did not finish in time.
    #[error("{operation} timed out after {waited_ms} ms")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// How long it waited.
        waited_ms: u128,
    },

    /// A position could not be recorded in `stream_positions`. The IDs are finished;
    /// the row is retried in the background and repaired at the next startup.
    #[error("recording position {position} of stream {stream:?} failed: {source}")]
    PositionNotRecorded {
        /// The stream.
        stream: String,
        /// The position (API form).
        position: i64,
        /// Why.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },

    /// Another live process holds this instance's writer lease: two processes may not run
    /// the same instance of a stream (spec §1.3).
    #[error(
        "another process holds the lease of instance {instance:?} on stream {stream:?} (waited \
         {waited_ms} ms): stop it first, or give this process another instance name"
    )]
    LeaseHeld {
        /// The stream.
        stream: String,
        /// This instance.
        instance: String,
        /// How long it waited.
        waited_ms: u128,
    },

    /// This writer was fenced: its lease connection was lost or another process proved it
    /// dead and raised its position (spec §12.6). Transactions of the old epoch cannot
    /// commit; it re-registers automatically — retry shortly.
    #[error(
        "writer {instance:?} of stream {stream:?} is fenced: it lost its lease or another \
         process recovered it as dead; it re-registers automatically, retry the transaction"
    )]
    Fenced {
        /// The stream.
        stream: String,
        /// This instance.
        instance: String,
    },

    /// A token is invalid (spec §11): malformed string, unknown instance id, entry not
    /// ahead of its stream position.
    #[error(transparent)]
    InvalidToken(#[from] streamid_core::TokenError),

    /// A line of an observation log (JSON Lines, see [`Observation`](crate::Observation))
    /// is not an observation.
    #[error("observation log line {line}: {problem}")]
    InvalidObservation {
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: String,
    },

    /// A SQLite error, with the file and what to do about it.
    #[error("{operation} on SQLite database {path}: {source}{}", hint_suffix(.hint))]
    Sqlite {
        /// What streamid was doing.
        operation: &'static str,
        /// The database file.
        path: String,
        /// What to do about it (empty if nothing specific).
        hint: &'static str,
        /// The driver's error.
        #[source]
        source: rusqlite::Error,
    },

    /// A file next to the database (a writer's lease file) could not be used.
    #[error("{operation} {path}: {source}; check that the directory exists and is writable")]
    Io {
        /// What streamid was doing.
        operation: &'static str,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The operation belongs to the other backend (e.g. a PostgreSQL transaction on a
    /// SQLite-backed generator).
    #[error("{operation} needs a {expected} generator, but this one uses {actual}")]
    WrongBackend {
        /// The operation attempted.
        operation: &'static str,
        /// The backend it needs.
        expected: &'static str,
        /// The generator's backend.
        actual: &'static str,
    },

    /// A bug in streamid; please report it.
    #[error("internal error (a bug in streamid): {0}")]
    Internal(String),

    /// The generator was shut down.
    #[error("the generator for stream {0:?} was shut down")]
    ShutDown(String),

    /// A database or connection error.
    #[error("{operation}: {source}")]
    Database {
        /// What streamid (or the caller) was doing.
        operation: &'static str,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// No connection could be taken from the pool.
    #[error("{operation}: could not get a connection from the pool: {source}")]
    Pool {
        /// What streamid was doing.
        operation: &'static str,
        /// The pool's error.
        #[source]
        source: deadpool_postgres::PoolError,
    },
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!("; {hint}")
    }
}

/// SQLSTATEs after which a transaction may simply be run again.
const RETRYABLE: [&str; 2] = ["40001", "40P01"];

impl Error {
    /// The SQLSTATE of a database error, if the server sent one.
    pub fn code(&self) -> Option<&str> {
        self.as_db_error().map(|e| e.code().code())
    }

    /// The server's error, if this is one.
    pub fn as_db_error(&self) -> Option<&tokio_postgres::error::DbError> {
        match self {
            Error::Database { source, .. } => source.as_db_error(),
            Error::Pool {
                source: deadpool_postgres::PoolError::Backend(e),
                ..
            } => e.as_db_error(),
            _ => None,
        }
    }

    /// Whether running the whole transaction again may succeed: a serialization failure
    /// (`40001`) or a deadlock (`40P01`). An unknown commit outcome is never retryable.
    pub fn is_retryable(&self) -> bool {
        self.code().is_some_and(|c| RETRYABLE.contains(&c))
    }

    pub(crate) fn db(operation: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
        move |source| Error::Database { operation, source }
    }

    pub(crate) fn pool(
        operation: &'static str,
    ) -> impl FnOnce(deadpool_postgres::PoolError) -> Error {
        move |source| Error::Pool { operation, source }
    }
}

/// Lets callers use `?` on their own statements inside a
/// [`StreamTransaction`](crate::StreamTransaction) or a retry closure.
impl From<tokio_postgres::Error> for Error {
    fn from(source: tokio_postgres::Error) -> Error {
        Error::Database {
            operation: "statement",
            source,
        }
    }
}

/// Lets callers use `?` on `pool.get()`.
impl From<deadpool_postgres::PoolError> for Error {
    fn from(source: deadpool_postgres::PoolError) -> Error {
        Error::Pool {
            operation: "get a connection",
            source,
        }
    }
}

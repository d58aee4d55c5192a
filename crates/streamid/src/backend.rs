//! The store interface: what the generator needs from a database, one variant per backend.
//!
//! A closed enum rather than a public trait, so the interface can change without a breaking
//! release (the style of tokio-postgres' sealed `GenericClient`). Each operation is one short
//! autocommit unit of work; nothing here touches the tracker.

use crate::Error;
use crate::postgres::{PgBackend, Resolver};
use crate::sqlite::SqliteBackend;

/// A generator's database.
#[derive(Clone)]
pub(crate) enum Backend {
    /// A PostgreSQL sequence and `stream_positions`, plus the resolver of unknown commits.
    Postgres { pg: PgBackend, resolver: Resolver },
    /// The embedded SQLite counter and `stream_positions`.
    Sqlite(SqliteBackend),
}

impl Backend {
    /// Takes `n` IDs, internal form, ascending.
    pub(crate) async fn fetch_ids(&self, n: usize) -> Result<Vec<i64>, Error> {
        match self {
            Backend::Postgres { pg, .. } => pg.fetch_ids(n).await,
            Backend::Sqlite(db) => db.fetch_ids(n).await,
        }
    }

    /// The last value handed out, internal form.
    pub(crate) async fn last_allocated(&self) -> Result<i64, Error> {
        match self {
            Backend::Postgres { pg, .. } => pg.last_allocated().await,
            Backend::Sqlite(db) => db.last_allocated().await,
        }
    }

    /// Moves the sequence (counter) to at least `target` (internal form) without ever moving
    /// it back; returns the new last allocated value.
    pub(crate) async fn advance_sequence_past(&self, target: i64) -> Result<i64, Error> {
        match self {
            Backend::Postgres { pg, .. } => pg.advance_sequence_past(target).await,
            Backend::Sqlite(db) => db.advance_counter_past(target).await,
        }
    }

    /// The guarded upsert of `instance`'s row, `value` in API form.
    pub(crate) async fn upsert_position(
        &self,
        stream: &str,
        instance: &str,
        value: i64,
    ) -> Result<(), Error> {
        match self {
            Backend::Postgres { pg, .. } => pg.upsert_position(stream, instance, value).await,
            Backend::Sqlite(db) => db.upsert_position(stream, instance, value).await,
        }
    }

    /// Every `(instance, stream_id)` row of `stream_positions` for `stream` (API form), for
    /// resynchronisation (spec §12.4).
    pub(crate) async fn load_positions(&self, stream: &str) -> Result<Vec<(String, i64)>, Error> {
        match self {
            Backend::Postgres { pg, .. } => pg.load_positions(stream).await,
            Backend::Sqlite(db) => db.load_positions(stream).await,
        }
    }

    /// The id of `instance` in `instance_map` (spec §11.4), inserted on first use.
    pub(crate) async fn instance_id(&self, instance: &str) -> Result<i32, Error> {
        match self {
            Backend::Postgres { pg, .. } => pg.instance_id(instance).await,
            Backend::Sqlite(db) => db.instance_id(instance).await,
        }
    }

    /// The instance with id `id` in `instance_map`.
    pub(crate) async fn instance_name(&self, id: i32) -> Result<Option<String>, Error> {
        match self {
            Backend::Postgres { pg, .. } => pg.instance_name(id).await,
            Backend::Sqlite(db) => db.instance_name(id).await,
        }
    }

    /// Adds gap-ledger increments `(writer, cause, count)` to `stream_gaps`.
    pub(crate) async fn add_gaps(
        &self,
        stream: &str,
        increments: Vec<(String, &'static str, i64)>,
    ) -> Result<(), Error> {
        match self {
            Backend::Postgres { pg, .. } => pg.add_gaps(stream, increments).await,
            Backend::Sqlite(db) => db.add_gaps(stream, increments).await,
        }
    }

    /// Tries to recover a dead `writer` (spec §12.6): `Some((F, epoch))` when proven, `F`
    /// in internal form and `epoch` the one that fenced it (0 on SQLite, which has no
    /// epochs).
    pub(crate) async fn reclaim(
        &self,
        config: &crate::config::ValidConfig,
        writer: &str,
    ) -> Result<Option<(i64, i64)>, Error> {
        match self {
            Backend::Postgres { pg, .. } => {
                crate::postgres::lease::reclaim(pg, config, writer).await
            }
            Backend::Sqlite(db) => {
                let path = db.pool.path().to_owned();
                let f = crate::sqlite::lease::reclaim(db, &path, config, writer).await?;
                Ok(f.map(|f| (f, 0)))
            }
        }
    }

    /// Every writer's registered epoch of `stream` (PostgreSQL; none on SQLite), for
    /// resynchronisation: announcements of older epochs are ignored.
    pub(crate) async fn load_epochs(&self, stream: &str) -> Result<Vec<(String, i64)>, Error> {
        match self {
            Backend::Postgres { pg, .. } => pg.load_epochs(stream).await,
            Backend::Sqlite(_) => Ok(Vec::new()),
        }
    }

    /// The guarded upsert of this writer's own row, only while `epoch` is its registered
    /// epoch (PostgreSQL; a plain guarded upsert on SQLite), `value` in API form.
    pub(crate) async fn upsert_own_position(
        &self,
        stream: &str,
        instance: &str,
        value: i64,
        epoch: i64,
    ) -> Result<(), Error> {
        match self {
            Backend::Postgres { pg, .. } if epoch > 0 => {
                pg.upsert_own_position(stream, instance, value, epoch).await
            }
            _ => self.upsert_position(stream, instance, value).await,
        }
    }

    /// The writer lock key for [`Allocation::bind`](crate::Allocation::bind) (PostgreSQL
    /// only; SQLite serialises writers itself).
    pub(crate) fn writer_lock(&self) -> Option<i64> {
        match self {
            Backend::Postgres { pg, .. } => Some(pg.writer_lock),
            Backend::Sqlite(_) => None,
        }
    }

    /// Transactions whose commit outcome is being resolved.
    pub(crate) fn unresolved(&self) -> usize {
        match self {
            Backend::Postgres { resolver, .. } => resolver.pending(),
            Backend::Sqlite(_) => 0,
        }
    }

    /// `"PostgreSQL"` or `"SQLite"`, for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Backend::Postgres { .. } => "PostgreSQL",
            Backend::Sqlite(_) => "SQLite",
        }
    }
}

//! The PostgreSQL backend: IDs from a sequence, positions in `stream_positions`, and the
//! transaction path.
//!
//! This module and its children are the only places that talk to PostgreSQL. Statements come
//! from [`statements`]; nothing here holds the tracker lock across I/O.

pub(crate) mod audit;
pub(crate) mod lease;
pub(crate) mod resolver;
pub(crate) mod sequence;
pub(crate) mod startup;
pub(crate) mod statements;
mod transaction;

use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio_postgres::types::Type;

pub(crate) use resolver::Resolver;
pub use sequence::create_sequence;
pub use transaction::StreamTransaction;

use crate::Error;
use statements::{Statements, XactFunctions};

/// Connection pool, statements and server facts; cheap to clone.
#[derive(Clone)]
pub(crate) struct PgBackend {
    pub(crate) pool: Pool,
    pub(crate) statements: Arc<Statements>,
    pub(crate) xact: XactFunctions,
    /// The writer lock key of this instance (spec §4.2 step 2a).
    pub(crate) writer_lock: i64,
}

impl PgBackend {
    async fn client(&self, operation: &'static str) -> Result<deadpool_postgres::Object, Error> {
        self.pool.get().await.map_err(Error::pool(operation))
    }

    /// Takes `n` IDs from the sequence in autocommit (spec §5.2 step 2), internal form,
    /// ascending.
    pub(crate) async fn fetch_ids(&self, n: usize) -> Result<Vec<i64>, Error> {
        const OP: &str = "allocate stream IDs";
        let client = self.client(OP).await?;
        let rows = if n == 1 {
            client.query_typed(&self.statements.nextval_one, &[]).await
        } else {
            let n = n as i64;
            client
                .query_typed(&self.statements.nextval_many, &[(&n, Type::INT8)])
                .await
        }
        .map_err(Error::db(OP))?;
        let mut ids = rows
            .iter()
            .map(|r| r.try_get::<_, i64>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(Error::db(OP))?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// Consumes sequence values until the last one handed out is at least `target`: unlike
    /// `setval`, `nextval` can never undo a concurrent allocation. The values consumed are
    /// gaps nobody learns.
    pub(crate) async fn advance_sequence_past(&self, target: i64) -> Result<i64, Error> {
        const OP: &str = "move the sequence forward";
        /// Values consumed per round trip (> 2M/s with `generate_series`, anchors §D3).
        const CHUNK: i64 = 100_000;
        let client = self.client(OP).await?;
        let mut last = last_allocated(&**client, &self.statements).await?;
        while last < target {
            let n = (target - last).min(CHUNK);
            last = client
                .query_typed_one(
                    &self.statements.consume_values,
                    &[(&n, tokio_postgres::types::Type::INT8)],
                )
                .await
                .and_then(|r| r.try_get::<_, Option<i64>>(0))
                .map_err(Error::db(OP))?
                .unwrap_or(last);
        }
        Ok(last)
    }

    /// The last value the sequence handed out (internal form, FIX-1).
    pub(crate) async fn last_allocated(&self) -> Result<i64, Error> {
        const OP: &str = "read the sequence";
        let client = self.client(OP).await?;
        last_allocated(&**client, &self.statements).await
    }

    /// Every writer's registered epoch of `stream`.
    pub(crate) async fn load_epochs(&self, stream: &str) -> Result<Vec<(String, i64)>, Error> {
        const OP: &str = "read stream_writers";
        let client = self.client(OP).await?;
        let rows = client
            .query_typed(statements::LOAD_EPOCHS, &[(&stream, Type::TEXT)])
            .await
            .map_err(Error::db(OP))?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(Error::db(OP))
    }

    /// The own-row upsert guarded by the writer's epoch, `value` in API form.
    pub(crate) async fn upsert_own_position(
        &self,
        stream: &str,
        instance: &str,
        value: i64,
        epoch: i64,
    ) -> Result<(), Error> {
        const OP: &str = "record the stream position";
        let client = self.client(OP).await?;
        client
            .execute_typed(
                self.statements.upsert_own_position,
                &[
                    (&stream, Type::TEXT),
                    (&instance, Type::TEXT),
                    (&value, Type::INT8),
                    (&self.writer_lock, Type::INT8),
                    (&epoch, Type::INT8),
                ],
            )
            .await
            .map_err(Error::db(OP))?;
        Ok(())
    }

    /// Every recorded position of `stream` (API form).
    pub(crate) async fn load_positions(&self, stream: &str) -> Result<Vec<(String, i64)>, Error> {
        const OP: &str = "read stream_positions";
        let client = self.client(OP).await?;
        let rows = client
            .query_typed(statements::LOAD_POSITIONS, &[(&stream, Type::TEXT)])
            .await
            .map_err(Error::db(OP))?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(Error::db(OP))
    }

    /// The id of `instance` in `instance_map`, inserting it (and creating the table) on
    /// first use (spec §11.4).
    pub(crate) async fn instance_id(&self, instance: &str) -> Result<i32, Error> {
        const OP: &str = "look up the instance id";
        let mut client = self.client(OP).await?;
        let exists: bool = client
            .query_one(statements::INSTANCE_MAP_EXISTS, &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(Error::db(OP))?;
        if !exists {
            let tx = client.transaction().await.map_err(Error::db(OP))?;
            tx.query_typed(
                statements::ADVISORY_XACT_LOCK,
                &[(&crate::keys::ddl_lock(), Type::INT8)],
            )
            .await
            .map_err(Error::db(OP))?;
            tx.batch_execute(statements::CREATE_INSTANCE_MAP)
                .await
                .map_err(Error::db(OP))?;
            tx.commit().await.map_err(Error::db(OP))?;
        }
        for insert in [false, true] {
            if insert {
                client
                    .execute_typed(statements::INSERT_INSTANCE, &[(&instance, Type::TEXT)])
                    .await
                    .map_err(Error::db(OP))?;
            }
            let row = client
                .query_typed_opt(statements::INSTANCE_ID, &[(&instance, Type::TEXT)])
                .await
                .map_err(Error::db(OP))?;
            if let Some(row) = row {
                return row.try_get(0).map_err(Error::db(OP));
            }
        }
        Err(Error::Internal(format!(
            "instance {instance:?} vanished from instance_map"
        )))
    }

    /// The instance with id `id`, if any.
    pub(crate) async fn instance_name(&self, id: i32) -> Result<Option<String>, Error> {
        const OP: &str = "look up the instance name";
        let client = self.client(OP).await?;
        let exists: bool = client
            .query_one(statements::INSTANCE_MAP_EXISTS, &[])
            .await
            .and_then(|r| r.try_get(0))
            .map_err(Error::db(OP))?;
        if !exists {
            return Ok(None);
        }
        client
            .query_typed_opt(statements::INSTANCE_NAME, &[(&id, Type::INT4)])
            .await
            .map_err(Error::db(OP))?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(Error::db(OP))
    }

    /// Adds gap-ledger increments to `stream_gaps`.
    pub(crate) async fn add_gaps(
        &self,
        stream: &str,
        increments: Vec<(String, &'static str, i64)>,
    ) -> Result<(), Error> {
        const OP: &str = "record gaps";
        let mut client = self.client(OP).await?;
        let tx = client.transaction().await.map_err(Error::db(OP))?;
        for (instance, cause, n) in &increments {
            tx.execute_typed(
                statements::ADD_GAPS,
                &[
                    (&stream, Type::TEXT),
                    (instance, Type::TEXT),
                    (cause, Type::TEXT),
                    (n, Type::INT8),
                ],
            )
            .await
            .map_err(Error::db(OP))?;
        }
        tx.commit().await.map_err(Error::db(OP))
    }

    /// The guarded upsert of this instance's row (spec §8.3), `value` in API form.
    pub(crate) async fn upsert_position(
        &self,
        stream: &str,
        instance: &str,
        value: i64,
    ) -> Result<(), Error> {
        const OP: &str = "record the stream position";
        let client = self.client(OP).await?;
        upsert_position(&**client, &self.statements, stream, instance, value).await
    }
}

/// `SELECT last_value, is_called`: the value actually handed out last (spec §10.1).
pub(crate) async fn last_allocated<C: tokio_postgres::GenericClient>(
    client: &C,
    statements: &Statements,
) -> Result<i64, Error> {
    const OP: &str = "read the sequence";
    let row = client
        .query_one(statements.last_allocated.as_str(), &[])
        .await
        .map_err(Error::db(OP))?;
    let last: i64 = row.try_get(0).map_err(Error::db(OP))?;
    let called: bool = row.try_get(1).map_err(Error::db(OP))?;
    Ok(if called { last } else { last - 1 })
}

pub(crate) async fn upsert_position<C: tokio_postgres::GenericClient>(
    client: &C,
    statements: &Statements,
    stream: &str,
    instance: &str,
    value: i64,
) -> Result<(), Error> {
    client
        .execute_typed(
            statements.upsert_position,
            &[
                (&stream, Type::TEXT),
                (&instance, Type::TEXT),
                (&value, Type::INT8),
            ],
        )
        .await
        .map_err(Error::db("record the stream position"))?;
    Ok(())
}

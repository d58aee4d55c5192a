//! Writer leases and dead-writer recovery on PostgreSQL (spec §12.6, issue 5).
//!
//! A live writer holds its **lease** — a session-level advisory lock — on a connection taken
//! out of the pool for the generator's life, tagged with the writer's `application_name`.
//! Any process may **reclaim** a writer only with PostgreSQL's proof that it can no longer
//! commit: its lease is free, no backend carries its tag, and its writer lock is free. The
//! recovering process takes `F = nextval` *before* the proof and applies `F` only if the proof
//! succeeds; the same transaction bumps the writer's epoch (fencing any zombie) and records
//! the event. It never uses the sequence head, which may be another writer's open ID.

use std::time::{Duration, Instant};

use deadpool_postgres::{Object, Pool};
use tokio_postgres::types::Type;

use super::PgBackend;
use super::statements;
use crate::config::ValidConfig;
use crate::{Error, keys};

/// How often a lease acquisition retries while another connection holds the lease.
const RETRY: Duration = Duration::from_millis(200);

/// A held lease: dropping it closes its connection, which releases the lock.
pub(crate) struct Lease {
    client: deadpool_postgres::ClientWrapper,
    writer_lock: i64,
}

impl Lease {
    /// Takes the lease of `config`'s instance, waiting up to `timeout` for a previous holder.
    pub(crate) async fn acquire(
        pool: &Pool,
        config: &ValidConfig,
        timeout: Duration,
    ) -> Result<Lease, Error> {
        const OP: &str = "acquire the writer lease";
        let key = keys::lease(&config.stream, &config.instance);
        let deadline = Instant::now() + timeout;
        loop {
            let client = Object::take(pool.get().await.map_err(Error::pool(OP))?);
            let got: bool = client
                .query_typed_one(statements::TRY_LEASE, &[(&key, Type::INT8)])
                .await
                .and_then(|r| r.try_get(0))
                .map_err(Error::db(OP))?;
            if got {
                return Ok(Lease {
                    client,
                    writer_lock: keys::writer_lock(&config.stream, &config.instance),
                });
            }
            drop(client);
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

    /// Tags the lease connection with the writer's `application_name` for `epoch`.
    pub(crate) async fn tag(&self, epoch: i64) -> Result<(), Error> {
        // The tag holds hex digits, colons and digits only.
        let tag = format!("{}:{epoch}", keys::app_prefix(self.writer_lock));
        self.client
            .batch_execute(&format!("SET application_name = '{tag}'"))
            .await
            .map_err(Error::db("tag the lease connection"))
    }

    /// Refreshes `stream_writers.heartbeat`; `Ok(false)` when the epoch was fenced.
    pub(crate) async fn heartbeat(&self, epoch: i64) -> Result<bool, Error> {
        let n = self
            .client
            .execute_typed(
                statements::HEARTBEAT,
                &[(&self.writer_lock, Type::INT8), (&epoch, Type::INT8)],
            )
            .await
            .map_err(Error::db("heartbeat"))?;
        Ok(n == 1)
    }
}

/// Registers a new epoch for this writer after its lease was re-acquired; waits (bounded)
/// for transactions of the old epoch.
pub(crate) async fn register(pg: &PgBackend, config: &ValidConfig) -> Result<i64, Error> {
    const OP: &str = "register the writer";
    let mut client = pg.pool.get().await.map_err(Error::pool(OP))?;
    let tx = client.transaction().await.map_err(Error::db(OP))?;
    let ms = config.writer_lock_timeout.as_millis().max(1);
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {ms}"))
        .await
        .map_err(Error::db(OP))?;
    tx.query_typed(
        statements::ADVISORY_XACT_LOCK,
        &[(&pg.writer_lock, Type::INT8)],
    )
    .await
    .map_err(Error::db(OP))?;
    tx.query_typed(
        statements::LOCK_WRITER_ROW,
        &[(&pg.writer_lock, Type::INT8)],
    )
    .await
    .map_err(Error::db(OP))?;
    let epoch: i64 = tx
        .query_typed_one(
            statements::REGISTER_WRITER,
            &[
                (&pg.writer_lock, Type::INT8),
                (&config.stream, Type::TEXT),
                (&config.instance, Type::TEXT),
            ],
        )
        .await
        .and_then(|r| r.try_get(0))
        .map_err(Error::db(OP))?;
    tx.commit().await.map_err(Error::db(OP))?;
    Ok(epoch)
}

/// Tries to recover `writer` (spec §12.6): `Some((F, epoch))` when PostgreSQL proved it dead,
/// `F` (internal form) was recorded as its position and `epoch` fences it; `None` when it
/// may be alive.
pub(crate) async fn reclaim(
    pg: &PgBackend,
    config: &ValidConfig,
    writer: &str,
) -> Result<Option<(i64, i64)>, Error> {
    const OP: &str = "recover a dead writer";
    let lease = keys::lease(&config.stream, writer);
    let writer_lock = keys::writer_lock(&config.stream, writer);
    let mut client = pg.pool.get().await.map_err(Error::pool(OP))?;

    // A cheap look first, so live writers cost no sequence value.
    if !lease_free(&mut client, lease).await? {
        return Ok(None);
    }
    // Step 2: F before the proof. A later incarnation receives IDs above F; an earlier one
    // is caught by the proof.
    let f: i64 = client
        .query_typed_one(&pg.statements.nextval_one, &[])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(Error::db(OP))?;

    // Step 3, the proof, and step 4's writes, in one short transaction.
    let tx = client.transaction().await.map_err(Error::db(OP))?;
    tx.batch_execute("SET LOCAL lock_timeout = 1000")
        .await
        .map_err(Error::db(OP))?;
    let proven = try_lock(&tx, lease).await?
        && tagged_backends(&tx, writer_lock).await? == 0
        && try_lock(&tx, writer_lock).await?;
    if !proven {
        return Ok(None); // rolled back on drop; F is a gap nobody learns
    }
    tx.query_typed(statements::LOCK_WRITER_ROW, &[(&writer_lock, Type::INT8)])
        .await
        .map_err(Error::db(OP))?;
    let epoch: Option<i64> = tx
        .query_typed_opt(statements::FENCE_WRITER, &[(&writer_lock, Type::INT8)])
        .await
        .map_err(Error::db(OP))?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(Error::db(OP))?;
    super::upsert_position(
        &*tx,
        &pg.statements,
        &config.stream,
        writer,
        config.sign * f,
    )
    .await?;
    tx.execute_typed(
        statements::RECORD_EVENT,
        &[
            (&config.stream, Type::TEXT),
            (&writer, Type::TEXT),
            (&"reclaimed", Type::TEXT),
            (&epoch, Type::INT8),
            (&(config.sign * f), Type::INT8),
            (&config.instance, Type::TEXT),
        ],
    )
    .await
    .map_err(Error::db(OP))?;
    tx.commit().await.map_err(Error::db(OP))?;
    Ok(Some((f, epoch.unwrap_or(0))))
}

/// Whether nobody holds `lease` (checked with a transaction-level try-lock, released at
/// once: a session-level one left behind by a lost connection would block the writer's
/// restart).
async fn lease_free(client: &mut Object, lease: i64) -> Result<bool, Error> {
    let tx = client
        .transaction()
        .await
        .map_err(Error::db("check a writer's lease"))?;
    let free = try_lock(&tx, lease).await?;
    tx.rollback()
        .await
        .map_err(Error::db("check a writer's lease"))?;
    Ok(free)
}

async fn try_lock(tx: &deadpool_postgres::Transaction<'_>, key: i64) -> Result<bool, Error> {
    tx.query_typed_one(statements::TRY_XACT_LOCK, &[(&key, Type::INT8)])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(Error::db("try an advisory lock"))
}

async fn tagged_backends(
    tx: &deadpool_postgres::Transaction<'_>,
    writer_lock: i64,
) -> Result<i64, Error> {
    let pattern = format!("{}:%", keys::app_prefix(writer_lock));
    tx.query_typed_one(statements::TAGGED_BACKENDS, &[(&pattern, Type::TEXT)])
        .await
        .and_then(|r| r.try_get(0))
        .map_err(Error::db("look for a writer's backends"))
}

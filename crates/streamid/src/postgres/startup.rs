//! PostgreSQL startup (spec §4.1–§4.5): waits for earlier incarnations, repairs the
//! sequence, recovers positions and `P`, and records the writer's starting position — all in
//! one transaction on one connection, so a failure leaves nothing half-done (only `setval`
//! and `nextval` survive a rollback, and they only move the sequence forward).
//!
//! Order matters: `S` is read after `T` and `Q` so a commit during startup cannot look like
//! an inconsistency (spec §14.2 item 4).

use std::time::Instant;

use streamid_core::{Startup, Tracker};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;
use tokio_postgres::{GenericClient, IsolationLevel, Transaction};

use crate::Error;
use crate::config::ValidConfig;
use crate::keys;
use crate::postgres::statements::{self, Statements};

/// What startup produced.
pub(crate) struct Started {
    pub(crate) tracker: Tracker,
    /// The announced position recorded in step 15 (internal form), for writers.
    pub(crate) recorded: Option<i64>,
    /// The writer's new epoch in `stream_writers`, for writers.
    pub(crate) epoch: Option<i64>,
    pub(crate) server_version: i32,
}

/// Runs the whole startup on one pooled connection.
pub(crate) async fn run(
    pool: &deadpool_postgres::Pool,
    config: &ValidConfig,
    statements: &Statements,
) -> Result<Started, Error> {
    let mut client = pool.get().await.map_err(Error::pool("startup"))?;
    let server_version: i32 = client
        .query_one(statements::SERVER_VERSION, &[])
        .await
        .map_err(Error::db("startup: read the server version"))?
        .try_get(0)
        .map_err(Error::db("startup: read the server version"))?;
    ensure_positions_table(&mut client).await?;
    let own_is_writer = config.persists_position();
    let lock_key = keys::writer_lock(&config.stream, &config.instance);

    let client: &mut tokio_postgres::Client = &mut client;
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(Error::db("startup: begin"))?;

    // Step 2a: wait until no transaction of an earlier process with this instance name can
    // still commit; then register a new epoch, which fences the old one.
    let mut epoch = None;
    if own_is_writer {
        let waited = Instant::now();
        match wait_and_register(&tx, config, lock_key).await {
            Ok(e) => epoch = Some(e),
            Err(err) => {
                drop(tx);
                return Err(describe_lock_timeout(pool, config, lock_key, waited, err).await);
            }
        }
    }

    // Step 6 (properties only): a missing or unsuitable sequence fails before any lock.
    check_sequence(&tx, statements).await?;
    // Step 3: one startup per sequence at a time.
    tx.query_typed(
        &statements.sequence_lock,
        &[(&keys::SEQUENCE_LOCK_CLASS, Type::INT4)],
    )
    .await
    .map_err(Error::db("startup: lock the sequence"))?;

    // Steps 4–6.
    let (table_max, table_of_max) = table_maxima(&tx, config, statements).await?;
    let recorded = recorded_max(&tx, config, statements).await?;
    let sequence_last = super::last_allocated(&tx, statements).await?;

    // Step 7.
    let last = repair_sequence(
        &tx,
        config,
        statements,
        table_max,
        &table_of_max,
        recorded.as_ref(),
        sequence_last,
    )
    .await?;

    let mut startup = Startup::new(&config.instance, &config.writers);
    if !config.writers.is_empty() {
        delete_stale_writers(&tx, config).await?; // step 8
        load_positions(&tx, config, &mut startup).await?; // step 9
    }
    // Step 10 (spec §4.4): adopt `L` only when it is decided.
    let recorded_value = recorded.as_ref().map(|(q, _)| *q);
    let mut start = None;
    if own_is_writer {
        let s = if last == 1 || last == table_max || Some(last) == recorded_value {
            last
        } else {
            // An ID of our own: never written, so decided at once, and above every ID
            // handed out so far.
            let row = tx
                .query_one(statements.nextval_one.as_str(), &[])
                .await
                .map_err(Error::db("startup: allocate the starting position"))?;
            row.try_get::<_, i64>(0)
                .map_err(Error::db("startup: allocate the starting position"))?
        };
        startup.set_start(s);
        start = Some(s);
    }

    // Step 11: scan rows from the smallest known position.
    let rows = match startup.scan_from() {
        Some(m) => scan_rows(&tx, config, statements, m).await?,
        None => Vec::new(),
    };
    let tracker = startup.finish(
        table_max,
        rows.iter().map(|(inst, id)| (inst.as_deref(), *id)),
    );

    // Step 15: the starting row, so a reader starting before any write cannot take `P` from
    // the table maxima while this writer holds a lower ID.
    let mut recorded_position = None;
    if own_is_writer {
        let announced = tracker.announced();
        super::upsert_position(
            &tx,
            statements,
            &config.stream,
            &config.instance,
            config.sign * announced,
        )
        .await?;
        recorded_position = Some(announced);
    }
    tx.commit().await.map_err(Error::db("startup: commit"))?;
    tracing::info!(
        stream = %config.stream,
        instance = %config.instance,
        start = start.map(|s| config.sign * s),
        persisted_upto = config.sign * tracker.persisted_upto(),
        "stream started"
    );
    Ok(Started {
        tracker,
        recorded: recorded_position,
        epoch,
        server_version,
    })
}

/// Step 1: create `stream_positions` (and the reliability tables `stream_writers`,
/// `stream_gaps`, `stream_events`) if missing, serialised by an advisory lock so concurrent
/// first startups do not collide on the catalog.
async fn ensure_positions_table(client: &mut tokio_postgres::Client) -> Result<(), Error> {
    const OP: &str = "startup: create stream_positions";
    let mut exists = true;
    for check in [statements::POSITIONS_EXISTS, statements::RELIABILITY_EXISTS] {
        exists &= client
            .query_one(check, &[])
            .await
            .map_err(Error::db(OP))?
            .try_get::<_, bool>(0)
            .map_err(Error::db(OP))?;
    }
    if exists {
        return Ok(());
    }
    let tx = client.transaction().await.map_err(Error::db(OP))?;
    tx.query_typed(
        statements::ADVISORY_XACT_LOCK,
        &[(&keys::ddl_lock(), Type::INT8)],
    )
    .await
    .map_err(Error::db(OP))?;
    tx.batch_execute(statements::CREATE_POSITIONS)
        .await
        .map_err(Error::db(OP))?;
    tx.batch_execute(statements::CREATE_RELIABILITY)
        .await
        .map_err(Error::db(OP))?;
    tx.commit().await.map_err(Error::db(OP))
}

/// Step 2a, then the new epoch: both wait (bounded) for transactions of earlier
/// incarnations — the first through the writer lock, the second through their `FOR SHARE`
/// lock on the `stream_writers` row.
async fn wait_and_register(
    tx: &Transaction<'_>,
    config: &ValidConfig,
    key: i64,
) -> Result<i64, tokio_postgres::Error> {
    // Only integers are spliced; `SET` takes no parameters.
    let ms = config.writer_lock_timeout.as_millis().max(1);
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {ms}"))
        .await?;
    tx.query_typed(statements::ADVISORY_XACT_LOCK, &[(&key, Type::INT8)])
        .await?;
    tx.query_typed(statements::LOCK_WRITER_ROW, &[(&key, Type::INT8)])
        .await?;
    let epoch: i64 = tx
        .query_typed_one(
            statements::REGISTER_WRITER,
            &[
                (&key, Type::INT8),
                (&config.stream, Type::TEXT),
                (&config.instance, Type::TEXT),
            ],
        )
        .await?
        .try_get(0)?;
    tx.batch_execute("SET LOCAL lock_timeout TO DEFAULT")
        .await?;
    Ok(epoch)
}

/// Turns a failed writer-lock wait into an error naming the blocking backends.
async fn describe_lock_timeout(
    pool: &deadpool_postgres::Pool,
    config: &ValidConfig,
    key: i64,
    waited: Instant,
    err: tokio_postgres::Error,
) -> Error {
    if err.code() != Some(&SqlState::LOCK_NOT_AVAILABLE) {
        return Error::db("startup: wait for earlier transactions of this instance")(err);
    }
    let (classid, objid) = keys::halves(key);
    let blockers = match pool.get().await {
        Ok(client) => match client
            .query_typed(
                statements::LOCK_HOLDERS,
                &[(&classid, Type::INT8), (&objid, Type::INT8)],
            )
            .await
        {
            Ok(rows) => rows
                .iter()
                .map(|r| {
                    let text = |i: usize| r.try_get::<_, String>(i).unwrap_or_default();
                    format!(
                        "pid {} ({}, application {:?}, transaction since {}, client {})",
                        r.try_get::<_, i32>(0).unwrap_or_default(),
                        text(1),
                        text(2),
                        text(3),
                        text(4)
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Err(e) => format!("(could not list them: {e})"),
        },
        Err(e) => format!("(could not list them: {e})"),
    };
    Error::WriterLockTimeout {
        stream: config.stream.clone(),
        instance: config.instance.clone(),
        waited_ms: waited.elapsed().as_millis(),
        blockers: if blockers.is_empty() {
            "none any more".to_owned()
        } else {
            blockers
        },
    }
}

/// Step 6, properties: `BIGINT`, increment 1, no cycle, cache 1 (spec §10.2).
async fn check_sequence(tx: &Transaction<'_>, statements: &Statements) -> Result<(), Error> {
    const OP: &str = "startup: inspect the sequence";
    let seq = &statements.sequence;
    let quoted = seq.to_string();
    let row = tx
        .query_typed_opt(statements::SEQUENCE_PROPERTIES, &[(&quoted, Type::TEXT)])
        .await
        .map_err(Error::db(OP))?;
    let Some(row) = row else {
        return Err(Error::MissingObject {
            kind: "sequence",
            name: seq.plain(),
            hint: format!(
                "{}; create it with streamid::create_sequence, or run:\n{}",
                seq.case_hint(),
                statements.setup_script
            ),
        });
    };
    let data_type: String = row.try_get(0).map_err(Error::db(OP))?;
    let increment: i64 = row.try_get(1).map_err(Error::db(OP))?;
    let cycle: bool = row.try_get(2).map_err(Error::db(OP))?;
    let cache: i64 = row.try_get(3).map_err(Error::db(OP))?;
    let mut problems = Vec::new();
    if data_type != "bigint" {
        problems.push(format!("its type is {data_type}, not bigint"));
    }
    if increment != 1 {
        problems.push(format!("it increments by {increment}, not 1"));
    }
    if cycle {
        problems.push("it cycles, so IDs would repeat".to_owned());
    }
    if cache != 1 {
        problems.push(format!(
            "it caches {cache} values per connection, so IDs stop increasing across connections"
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::UnsuitableSequence {
        sequence: seq.plain(),
        problem: problems.join(", "),
        fix: format!("ALTER SEQUENCE {seq} AS BIGINT INCREMENT BY 1 NO CYCLE CACHE 1"),
    })
}

/// Step 4: `T`, the largest row ID (internal form) and the table holding it.
pub(crate) async fn table_maxima<C: GenericClient + Sync>(
    client: &C,
    config: &ValidConfig,
    statements: &Statements,
) -> Result<(i64, String), Error> {
    let mut best = (0, String::new());
    for ((sql, check), table) in statements
        .table_max
        .iter()
        .zip(&statements.columns_exist)
        .zip(&config.tables)
    {
        client.query(check.as_str(), &[]).await.map_err(|e| {
            missing_table_or(e, config, statements, table, "startup: check the table")
        })?;
        let row = client.query_one(sql.as_str(), &[]).await.map_err(|e| {
            missing_table_or(
                e,
                config,
                statements,
                table,
                "startup: read the table maximum",
            )
        })?;
        let max: i64 = row
            .try_get(0)
            .map_err(Error::db("startup: read the table maximum"))?;
        if max > best.0 || best.1.is_empty() {
            best = (max.max(best.0), table.table.plain());
        }
    }
    Ok(best)
}

/// Maps "table/column does not exist" to [`Error::MissingObject`] with the fix: the columns
/// needed, then the statements of spec §10.4 (§2.4), which need the table to exist.
fn missing_table_or(
    err: tokio_postgres::Error,
    config: &ValidConfig,
    statements: &Statements,
    table: &crate::config::TableSpec,
    operation: &'static str,
) -> Error {
    let (inst, id) = (&table.instance_column, &table.id_column);
    let (kind, name, fix) = match err.code() {
        Some(c) if *c == SqlState::UNDEFINED_TABLE => (
            "table",
            table.table.plain(),
            format!(
                "create it, e.g.:\nCREATE TABLE {} ({inst} TEXT, {id} BIGINT NOT NULL);",
                table.table
            ),
        ),
        Some(c) if *c == SqlState::UNDEFINED_COLUMN => (
            "column",
            format!(
                "{} or {} of table {}",
                inst.as_str(),
                id.as_str(),
                table.table.plain()
            ),
            format!("add the missing column to {}", table.table),
        ),
        _ => return Error::db(operation)(err),
    };
    Error::MissingObject {
        kind,
        name,
        hint: format!(
            "{}: stream {:?} stores rows in it, with at least columns `{inst} TEXT NULL` and \
             `{id} BIGINT NOT NULL`; {fix}\nThen create the sequence with \
             streamid::create_sequence, or run:\n{}",
            table.table.case_hint(),
            config.stream,
            statements.setup_script
        ),
    }
}

/// Step 5: `Q` (internal form) and the instance holding it.
async fn recorded_max(
    tx: &Transaction<'_>,
    config: &ValidConfig,
    statements: &Statements,
) -> Result<Option<(i64, String)>, Error> {
    const OP: &str = "startup: read recorded positions";
    let row = tx
        .query_typed_one(statements.recorded_max, &[(&config.stream, Type::TEXT)])
        .await
        .map_err(Error::db(OP))?;
    let Some(q) = row.try_get::<_, Option<i64>>(0).map_err(Error::db(OP))? else {
        return Ok(None);
    };
    let holder = tx
        .query_typed(statements::LOAD_POSITIONS, &[(&config.stream, Type::TEXT)])
        .await
        .map_err(Error::db(OP))?
        .iter()
        .find(|r| r.try_get::<_, i64>(1).ok().map(|v| v * config.sign) == Some(q))
        .and_then(|r| r.try_get::<_, String>(0).ok())
        .unwrap_or_default();
    Ok(Some((q, holder)))
}

/// Step 7 (spec §4.3, FIX-1/2/3): put the sequence past every row, recorded position and 1.
/// Returns `L`, the last allocated value after repair.
async fn repair_sequence(
    tx: &Transaction<'_>,
    config: &ValidConfig,
    statements: &Statements,
    table_max: i64,
    table_of_max: &str,
    recorded: Option<&(i64, String)>,
    sequence_last: i64,
) -> Result<i64, Error> {
    let sign = config.sign;
    let seq = statements.sequence.plain();
    let base = sequence_last.max(table_max).max(1);
    let (q, holder) = recorded.cloned().unwrap_or((0, String::new()));
    if config.strict_consistency && q > base {
        return Err(inconsistent(config, statements, q, &holder, base));
    }
    let target = base.max(q);
    if target <= sequence_last {
        return Ok(sequence_last);
    }
    let last: i64 = tx
        .query_typed_one(&statements.setval_guarded, &[(&target, Type::INT8)])
        .await
        .map_err(Error::db("startup: repair the sequence"))?
        .try_get(0)
        .map_err(Error::db("startup: repair the sequence"))?;
    if table_max > sequence_last {
        tracing::warn!(
            sequence = %seq,
            table = %table_of_max,
            before = sign * sequence_last,
            table_max = sign * table_max,
            after = sign * last,
            "sequence behind rows: moved it past the largest row"
        );
    }
    if q > base {
        tracing::warn!(
            stream = %config.stream,
            sequence = %seq,
            recorded = sign * q,
            recorded_by = %holder,
            before = sign * sequence_last,
            base = sign * base,
            after = sign * last,
            "stream_positions is ahead of the sequence and every row: moved the sequence past it. \
             Likely causes: a restore whose tables and sequence come from different moments; a \
             promoted replica (sequences are pre-logged, so a standby's need not match what was \
             handed out); a port that rebuilt sequences but copied stream_positions; or two \
             streams sharing one stream name"
        );
    }
    if table_max <= sequence_last && q <= base {
        tracing::debug!(sequence = %seq, "moved a fresh sequence to 1: the first ID will be 2");
    }
    Ok(last)
}

fn inconsistent(
    config: &ValidConfig,
    statements: &Statements,
    q: i64,
    holder: &str,
    base: i64,
) -> Error {
    let sign = config.sign;
    let seq_lit = statements.sequence.regclass_literal();
    let seq = &statements.sequence;
    let agg = if sign > 0 {
        "MAX(stream_id)"
    } else {
        "-MIN(stream_id)"
    };
    let stream_lit = config.stream.replace('\'', "''");
    let repair_sql = format!(
        "SELECT setval({seq_lit}, GREATEST(\n    (SELECT {agg} FROM stream_positions WHERE stream_name = '{stream_lit}'),\n    (SELECT last_value FROM {seq})));"
    );
    Error::InconsistentDatabase {
        stream: config.stream.clone(),
        sequence: seq.plain(),
        recorded: sign * q,
        recorded_by: holder.to_owned(),
        base: sign * base,
        repair_sql,
    }
}

/// Step 8: rows of writers no longer configured are removed (logged at INFO).
async fn delete_stale_writers(tx: &Transaction<'_>, config: &ValidConfig) -> Result<(), Error> {
    let rows = tx
        .query_typed(
            statements::DELETE_STALE_WRITERS,
            &[
                (&config.stream, Type::TEXT),
                (&config.writers, Type::TEXT_ARRAY),
            ],
        )
        .await
        .map_err(Error::db("startup: delete rows of removed writers"))?;
    for row in rows {
        tracing::info!(
            stream = %config.stream,
            instance = %row.try_get::<_, String>(0).unwrap_or_default(),
            position = row.try_get::<_, i64>(1).unwrap_or_default(),
            "deleted the position of a writer no longer in the writer list"
        );
    }
    Ok(())
}

/// Step 9.
async fn load_positions(
    tx: &Transaction<'_>,
    config: &ValidConfig,
    startup: &mut Startup,
) -> Result<(), Error> {
    const OP: &str = "startup: load positions";
    let rows = tx
        .query_typed(statements::LOAD_POSITIONS, &[(&config.stream, Type::TEXT)])
        .await
        .map_err(Error::db(OP))?;
    for row in rows {
        let instance: String = row.try_get(0).map_err(Error::db(OP))?;
        let value: i64 = row.try_get(1).map_err(Error::db(OP))?;
        startup.load_position(&instance, config.sign * value);
    }
    Ok(())
}

/// Step 11 (spec §4.5): every row at or beyond `m`, internal form, any order.
async fn scan_rows(
    tx: &Transaction<'_>,
    config: &ValidConfig,
    statements: &Statements,
    m: i64,
) -> Result<Vec<(Option<String>, i64)>, Error> {
    const OP: &str = "startup: scan rows beyond the recorded positions";
    let mut out = Vec::new();
    let from = config.sign * m;
    for (sql, table) in statements.table_scan.iter().zip(&config.tables) {
        let rows = tx
            .query_typed(sql, &[(&from, Type::INT8)])
            .await
            .map_err(|e| missing_table_or(e, config, statements, table, OP))?;
        for row in rows {
            let instance: Option<String> = row.try_get(0).map_err(Error::db(OP))?;
            let id: i64 = row.try_get(1).map_err(Error::db(OP))?;
            out.push((instance, config.sign * id));
        }
    }
    Ok(out)
}

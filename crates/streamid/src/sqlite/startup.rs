//! SQLite startup (spec §4.6): §4.2 in one `BEGIN IMMEDIATE` transaction, with the counter
//! row in place of the sequence.
//!
//! SQLite's write lock replaces both PostgreSQL advisory locks: it serialises startups
//! (step 3), and since a crashed process's locks are released and its uncommitted
//! transaction rolled back by SQLite itself, holding the write lock also proves that no
//! transaction of an earlier incarnation can still commit (step 2a).

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use streamid_core::{Startup, Tracker};

use super::SqlitePool;
use super::statements::{self, Statements};
use crate::Error;
use crate::config::{TableSpec, ValidConfig};

/// What startup produced: the tracker, and the position recorded for a writer (internal).
pub(crate) struct Started {
    pub(crate) tracker: Tracker,
    pub(crate) recorded: Option<i64>,
}

/// Runs the whole startup on `conn` (blocking).
pub(crate) fn run(
    pool: &SqlitePool,
    conn: &mut Connection,
    config: &ValidConfig,
    st: &Statements,
) -> Result<Started, Error> {
    let err = |op: &'static str| move |e: rusqlite::Error| pool.error(op, e);
    conn.execute_batch(statements::CREATE_POSITIONS)
        .map_err(err("startup: create stream_positions"))?;
    conn.execute_batch(statements::CREATE_COUNTERS)
        .map_err(err("startup: create streamid_sequences"))?;
    conn.execute_batch(statements::CREATE_RELIABILITY)
        .map_err(err("startup: create stream_gaps and stream_events"))?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(err("startup: begin"))?;
    let sign = config.sign;

    // Steps 4–6.
    let table_max = table_max(pool, &tx, config, st)?;
    let recorded: Option<i64> = tx
        .query_row(st.recorded_max, [&config.stream], |r| r.get(0))
        .map_err(err("startup: read recorded positions"))?;
    tx.execute(statements::ENSURE_COUNTER, [&st.counter])
        .map_err(err("startup: create the counter"))?;
    let counter_last: i64 = tx
        .query_row(statements::READ_COUNTER, [&st.counter], |r| r.get(0))
        .map_err(err("startup: read the counter"))?;

    // Step 7 (spec §4.3): above every row and recorded position (the original restarts at
    // P + 1, which after a crash can re-issue an ID a committed row beyond a gap holds).
    let base = counter_last.max(table_max).max(1);
    let q = recorded.unwrap_or(0);
    if config.strict_consistency && q > base {
        let counter_sql = st.counter.replace('\'', "''");
        let stream_sql = config.stream.replace('\'', "''");
        let agg = if sign > 0 {
            "MAX(stream_id)"
        } else {
            "-MIN(stream_id)"
        };
        return Err(Error::InconsistentDatabase {
            stream: config.stream.clone(),
            sequence: st.counter.clone(),
            recorded: sign * q,
            recorded_by: holder_of(&tx, config, q).unwrap_or_default(),
            base: sign * base,
            repair_sql: format!(
                "UPDATE streamid_sequences SET last_value = MAX(last_value, \
                 (SELECT {agg} FROM stream_positions WHERE stream_name = '{stream_sql}')) \
                 WHERE name = '{counter_sql}';"
            ),
        });
    }
    let target = base.max(q);
    let last = if target > counter_last {
        let last: i64 = tx
            .query_row(statements::RAISE_COUNTER, (&st.counter, target), |r| {
                r.get(0)
            })
            .map_err(err("startup: repair the counter"))?;
        tracing::warn!(
            stream = %config.stream,
            counter = %st.counter,
            before = sign * counter_last,
            table_max = sign * table_max,
            recorded = sign * q,
            after = sign * last,
            "the counter was behind rows or recorded positions: moved it past them"
        );
        last
    } else {
        counter_last
    };

    let mut startup = Startup::new(&config.instance, &config.writers);
    if !config.writers.is_empty() {
        // Step 8.
        let sql = Statements::delete_stale_writers(config.writers.len());
        let mut params: Vec<&dyn rusqlite::ToSql> = vec![&config.stream];
        params.extend(config.writers.iter().map(|w| w as &dyn rusqlite::ToSql));
        let mut stmt = tx
            .prepare(&sql)
            .map_err(err("startup: delete removed writers"))?;
        let deleted = stmt
            .query_map(params.as_slice(), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(err("startup: delete removed writers"))?;
        drop(stmt);
        for (instance, position) in deleted {
            tracing::info!(stream = %config.stream, instance, position, "deleted the position of a writer no longer in the writer list");
        }
        // Step 9.
        let mut stmt = tx
            .prepare(statements::LOAD_POSITIONS)
            .map_err(err("startup: load positions"))?;
        let rows = stmt
            .query_map([&config.stream], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(err("startup: load positions"))?;
        drop(stmt);
        for (instance, value) in rows {
            startup.load_position(&instance, sign * value);
        }
    }

    // Step 10 (spec §4.4), with "one ID of its own" from the counter.
    let own_is_writer = config.persists_position();
    if own_is_writer {
        let start = if last == 1 || last == table_max || Some(last) == recorded {
            last
        } else {
            advance_counter_in(&tx, &st.counter)
                .map_err(err("startup: allocate the starting position"))?
        };
        startup.set_start(start);
    }

    // Step 11.
    let rows = match startup.scan_from() {
        Some(m) => scan(pool, &tx, config, st, m)?,
        None => Vec::new(),
    };
    let tracker = startup.finish(table_max, rows.iter().map(|(i, id)| (i.as_deref(), *id)));

    // Step 15.
    let mut recorded_position = None;
    if own_is_writer {
        let announced = tracker.announced();
        tx.execute(
            st.upsert_position,
            (&config.stream, &config.instance, sign * announced),
        )
        .map_err(err("startup: record the starting position"))?;
        recorded_position = Some(announced);
    }
    tx.commit().map_err(err("startup: commit"))?;
    Ok(Started {
        tracker,
        recorded: recorded_position,
    })
}

/// The counter advanced inside the startup transaction (which already holds the lock).
fn advance_counter_in(tx: &Transaction<'_>, counter: &str) -> rusqlite::Result<i64> {
    tx.query_row(statements::ADVANCE_COUNTER, (counter, 1_i64), |r| r.get(0))
}

fn holder_of(tx: &Transaction<'_>, config: &ValidConfig, q: i64) -> Option<String> {
    tx.query_row(
        "SELECT instance_name FROM stream_positions WHERE stream_name = ?1 AND stream_id = ?2",
        (&config.stream, config.sign * q),
        |r| r.get(0),
    )
    .optional()
    .ok()
    .flatten()
}

/// Step 4 with a check that both columns exist.
fn table_max(
    pool: &SqlitePool,
    tx: &Transaction<'_>,
    config: &ValidConfig,
    st: &Statements,
) -> Result<i64, Error> {
    let mut max = 0;
    for ((check, sql), table) in st
        .columns_exist
        .iter()
        .zip(&st.table_max)
        .zip(&config.tables)
    {
        let missing = |e| missing_or(pool, e, table);
        tx.prepare(check).map_err(missing)?;
        let value: i64 = tx.query_row(sql, [], |r| r.get(0)).map_err(missing)?;
        max = max.max(value);
    }
    Ok(max)
}

/// Step 11's scan (spec §4.5), internal form.
fn scan(
    pool: &SqlitePool,
    tx: &Transaction<'_>,
    config: &ValidConfig,
    st: &Statements,
    m: i64,
) -> Result<Vec<(Option<String>, i64)>, Error> {
    let mut out = Vec::new();
    for (sql, table) in st.table_scan.iter().zip(&config.tables) {
        let missing = |e| missing_or(pool, e, table);
        let mut stmt = tx.prepare(sql).map_err(missing)?;
        let rows = stmt
            .query_map([config.sign * m], |r| {
                Ok((r.get::<_, Option<String>>(0)?, r.get::<_, i64>(1)?))
            })
            .and_then(Iterator::collect::<rusqlite::Result<Vec<_>>>)
            .map_err(missing)?;
        out.extend(rows.into_iter().map(|(i, id)| (i, config.sign * id)));
    }
    Ok(out)
}

/// "no such table/column" becomes [`Error::MissingObject`] with the fix.
fn missing_or(pool: &SqlitePool, e: rusqlite::Error, table: &TableSpec) -> Error {
    let text = e.to_string();
    let kind = if text.contains("no such table") {
        "table"
    } else if text.contains("no such column") {
        "column"
    } else {
        return pool.error("startup: read the backing table", e);
    };
    Error::MissingObject {
        kind,
        name: if kind == "table" {
            table.table.plain()
        } else {
            format!(
                "{} or {} of table {}",
                table.instance_column.as_str(),
                table.id_column.as_str(),
                table.table.plain()
            )
        },
        hint: format!(
            ": create it first, e.g.\nCREATE TABLE {} ({} TEXT, {} INTEGER NOT NULL);",
            table.table, table.instance_column, table.id_column
        ),
    }
}

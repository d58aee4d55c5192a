//! The auditor's reads on PostgreSQL ([`Audit::postgres`](crate::Audit::postgres)): every
//! row of the stream's tables, in one read-only snapshot. Nothing here touches the tracker.

use deadpool_postgres::Pool;
use tokio_postgres::IsolationLevel;
use tokio_postgres::error::SqlState;

use crate::Error;
use crate::config::TableSpec;
use crate::verify::StreamRow;

/// `id::int8, instance::text` of every row: the casts accept any integer ID column and any
/// instance column type. Built from validated, quoted names only.
fn select_rows(table: &TableSpec) -> String {
    format!(
        "SELECT {}::int8, {}::text FROM {}",
        table.id_column, table.instance_column, table.table
    )
}

/// Reads every row of `tables`; `StreamRow::table` is the index into `tables`.
pub(crate) async fn read_rows(pool: &Pool, tables: &[TableSpec]) -> Result<Vec<StreamRow>, Error> {
    let mut client = pool.get().await.map_err(Error::pool("verify: connect"))?;
    // One snapshot for all tables: a row moving between them cannot be counted twice or
    // not at all.
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(Error::db("verify: begin"))?;
    let mut out = Vec::new();
    for (index, table) in tables.iter().enumerate() {
        let rows = tx
            .query(&select_rows(table), &[])
            .await
            .map_err(|e| missing_or(e, table))?;
        out.reserve(rows.len());
        for row in rows {
            out.push(StreamRow {
                table: index,
                id: row.try_get(0).map_err(Error::db("verify: read an ID"))?,
                instance: row
                    .try_get(1)
                    .map_err(Error::db("verify: read an instance"))?,
            });
        }
    }
    tx.commit()
        .await
        .map_err(Error::db("verify: end the snapshot"))?;
    Ok(out)
}

/// "No such table/column" becomes [`Error::MissingObject`].
fn missing_or(err: tokio_postgres::Error, table: &TableSpec) -> Error {
    let (kind, name) = match err.code() {
        Some(c) if *c == SqlState::UNDEFINED_TABLE => ("table", table.table.plain()),
        Some(c) if *c == SqlState::UNDEFINED_COLUMN => ("column", table.columns()),
        _ => return Error::db("verify: read the stream's rows")(err),
    };
    Error::MissingObject {
        kind,
        name,
        hint: format!(
            "{}: check the names given to the audit",
            table.table.case_hint()
        ),
    }
}

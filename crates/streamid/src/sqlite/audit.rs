//! The auditor's reads on SQLite ([`Audit::sqlite`](crate::Audit::sqlite)): every row of the
//! stream's tables, in one read transaction. Nothing here touches the tracker.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};

use super::{SqlitePool, blocking};
use crate::Error;
use crate::config::TableSpec;
use crate::verify::StreamRow;

/// How long the audit waits for a writer's lock (WAL readers rarely wait at all).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Every row's ID and instance. Built from validated, quoted names only.
fn select_rows(table: &TableSpec) -> String {
    format!(
        "SELECT {}, {} FROM {}",
        table.id_column, table.instance_column, table.table
    )
}

/// Reads every row of `tables` from the existing database at `path`.
pub(crate) async fn read_rows(path: &Path, tables: &[TableSpec]) -> Result<Vec<StreamRow>, Error> {
    let pool = SqlitePool::new(path, BUSY_TIMEOUT);
    let tables = tables.to_vec();
    blocking(move || {
        // No SQLITE_OPEN_CREATE: auditing a misspelt path must not create an empty database.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(pool.path(), flags)
            .map_err(|e| pool.error("verify: open the database", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| pool.error("verify: set the busy timeout", e))?;
        let tx = conn
            .transaction()
            .map_err(|e| pool.error("verify: begin", e))?;
        let mut out = Vec::new();
        for (index, table) in tables.iter().enumerate() {
            read_table(&tx, index, table, &mut out).map_err(|e| missing_or(&pool, e, table))?;
        }
        tx.commit()
            .map_err(|e| pool.error("verify: end the read", e))?;
        Ok(out)
    })
    .await
}

fn read_table(
    conn: &Connection,
    index: usize,
    table: &TableSpec,
    out: &mut Vec<StreamRow>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(&select_rows(table))?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let instance = match row.get_ref(1)? {
            ValueRef::Null => None,
            ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Integer(i) => Some(i.to_string()),
            ValueRef::Real(r) => Some(r.to_string()),
        };
        out.push(StreamRow {
            table: index,
            id: row.get(0)?,
            instance,
        });
    }
    Ok(())
}

/// "No such table/column" becomes [`Error::MissingObject`].
fn missing_or(pool: &SqlitePool, e: rusqlite::Error, table: &TableSpec) -> Error {
    let text = e.to_string();
    let (kind, name) = if text.contains("no such table") {
        ("table", table.table.plain())
    } else if text.contains("no such column") {
        ("column", table.columns())
    } else {
        return pool.error("verify: read the stream's rows", e);
    };
    Error::MissingObject {
        kind,
        name,
        hint: format!(
            " in {}: check the names given to the audit",
            pool.path().display()
        ),
    }
}

//! [`StreamTable`]: one backing table of a stream, its names validated by the rules of
//! [`StreamConfig::table`](crate::StreamConfig::table), for code that works on a stream's
//! tables without a generator (the auditor, tools that create tables).
//!
//! It owns no connection and performs no I/O. The quoted forms it hands out are safe to
//! splice into SQL: the accepted alphabet (`[A-Za-z_][A-Za-z0-9_$]*`, 1–63 bytes, optionally
//! `schema.`-qualified) contains no quote of either kind.

use crate::Error;
use crate::config::TableSpec;

/// A stream's backing table: the table, the column naming the writing instance, and the
/// column holding the stream ID, all validated.
///
/// # Examples
///
/// ```
/// use streamid::StreamTable;
///
/// let table = StreamTable::new("events", "instance_name", "stream_ordering")?;
/// assert_eq!(table.quoted_table(), "\"events\"");
/// assert!(StreamTable::new("events; DROP TABLE x", "i", "id").is_err());
/// # Ok::<(), streamid::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamTable {
    pub(crate) spec: TableSpec,
}

impl StreamTable {
    /// Validates the names: `table` is `name` or `schema.name`, the columns are plain names.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the field (`table`, `instance_column`, `id_column`)
    /// and the rule it breaks.
    pub fn new(table: &str, instance_column: &str, id_column: &str) -> Result<StreamTable, Error> {
        Ok(StreamTable {
            spec: TableSpec::parse(table, instance_column, id_column)?,
        })
    }

    /// The table as written (`events` or `schema.events`), unquoted, for messages.
    pub fn table(&self) -> String {
        self.spec.table.plain()
    }

    /// The table's own name without its schema, unquoted (`events` for `app.events`), e.g.
    /// to derive the names of an index or a sequence.
    pub fn table_name(&self) -> &str {
        self.spec.table.unqualified()
    }

    /// The instance column, unquoted.
    pub fn instance_column(&self) -> &str {
        self.spec.instance_column.as_str()
    }

    /// The ID column, unquoted.
    pub fn id_column(&self) -> &str {
        self.spec.id_column.as_str()
    }

    /// The table, double-quoted for SQL (`"app"."events"`).
    pub fn quoted_table(&self) -> String {
        self.spec.table.to_string()
    }

    /// The instance column, double-quoted for SQL.
    pub fn quoted_instance_column(&self) -> String {
        self.spec.instance_column.to_string()
    }

    /// The ID column, double-quoted for SQL.
    pub fn quoted_id_column(&self) -> String {
        self.spec.id_column.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated_and_quoted() {
        let t = StreamTable::new("app.Events", "inst", "id$1").unwrap();
        assert_eq!(t.table(), "app.Events");
        assert_eq!(t.table_name(), "Events");
        assert_eq!(t.quoted_table(), "\"app\".\"Events\"");
        assert_eq!(t.quoted_instance_column(), "\"inst\"");
        assert_eq!(t.quoted_id_column(), "\"id$1\"");
        for (table, inst, id, field) in [
            ("a\"b", "i", "c", "table"),
            ("t", "", "c", "instance_column"),
            ("t", "i", "1c", "id_column"),
        ] {
            match StreamTable::new(table, inst, id) {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected an invalid {field}, got {other:?}"),
            }
        }
    }
}

//! The independent audit (issue 5): checks a stream's tables against what its readers
//! observed, and finds rows that were skipped and IDs that were handed out twice.
//!
//! It reads the tables directly and never uses the tracker, a generator, `stream_positions`
//! or anything else of the code it checks: the point is that a bug in streamid cannot hide
//! itself. All reasoning is in a pure function ([`Audit::check`]); the database is only
//! read, in one snapshot, by [`Audit::postgres`] and [`Audit::sqlite`].
//!
//! Readers record what they acted on as [`Observation`]s (JSON Lines, see there). The checks:
//!
//! - **(a) no miss**: for each observation at position `P`, every row with `id <= P`
//!   (backwards streams: `id >= P`) — read at audit time — had been listed by that reader at
//!   or before that observation. Otherwise the row became visible after the reader moved past
//!   it: a [`Violation::Miss`]. Token readers are also held to their token's writer
//!   positions.
//! - **(b) no ID handed out twice**: no two rows with one ID and different non-NULL
//!   instances; and per table no two rows with one ID unless the stream legitimately stores
//!   several rows per ID ([`Audit::allow_shared_ids`]).
//! - **(c) readers are sane**: no reader lists a row twice, lists rows out of ascending order
//!   (plain readers), lists a row its observation does not cover, or lists a row no table
//!   holds.
//!
//! The audit assumes rows are only ever added during the audited run (no deletes, no ID
//! updates). Rows above a reader's last position are not misses (the reader stopped first);
//! [`ReaderSummary`] counts them.

mod check;
mod observation;
mod report;

use std::path::Path;

pub use check::StreamRow;
pub use observation::{Observation, read_observations};
pub use report::{ReaderSummary, VerifyReport, Violation};

use crate::config::TableSpec;
use crate::{Error, StreamConfig, StreamTable};

/// An audit of one stream: its tables, its direction, and how strict to be.
///
/// # Examples
///
/// ```no_run
/// # async fn example(pool: deadpool_postgres::Pool) -> Result<(), streamid::Error> {
/// use streamid::{Audit, StreamTable};
///
/// let log = std::fs::read("observations.jsonl").expect("the readers' log");
/// let observations = streamid::read_observations(&log[..])?;
/// let audit = Audit::new(StreamTable::new("events", "instance_name", "stream_ordering")?);
/// let report = audit.postgres(&pool, &observations).await?;
/// if !report.is_ok() {
///     eprintln!("{report}");
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Audit {
    tables: Vec<TableSpec>,
    backwards: bool,
    shared_ids: bool,
    max_violations: usize,
}

impl Audit {
    /// How many violations a report lists by default (all are counted).
    pub const DEFAULT_MAX_VIOLATIONS: usize = 100;

    /// An audit of a forwards stream stored in `table`.
    pub fn new(table: StreamTable) -> Audit {
        Audit {
            tables: vec![table.spec],
            backwards: false,
            shared_ids: false,
            max_violations: Audit::DEFAULT_MAX_VIOLATIONS,
        }
    }

    /// An audit of the stream `config` describes: its tables and direction.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] if the configuration is invalid (as a generator would
    /// report it; the sequence is not needed).
    pub fn for_stream(config: &StreamConfig) -> Result<Audit, Error> {
        let valid = config.validate(false)?;
        Ok(Audit {
            tables: valid.tables,
            backwards: valid.sign < 0,
            shared_ids: false,
            max_violations: Audit::DEFAULT_MAX_VIOLATIONS,
        })
    }

    /// Adds another table of the stream (all tables share one ID space).
    pub fn table(mut self, table: StreamTable) -> Audit {
        self.tables.push(table.spec);
        self
    }

    /// Whether the stream counts backwards (default `false`): positions are then compared
    /// with `>=`.
    pub fn backwards(mut self, backwards: bool) -> Audit {
        self.backwards = backwards;
        self
    }

    /// Whether one table may hold several rows with the same ID (default `false`: such
    /// rows are [`Violation::DuplicateRow`]s). Rows of different instances sharing an ID are
    /// violations either way.
    pub fn allow_shared_ids(mut self, allow: bool) -> Audit {
        self.shared_ids = allow;
        self
    }

    /// How many violations the report lists (default
    /// [`DEFAULT_MAX_VIOLATIONS`](Self::DEFAULT_MAX_VIOLATIONS)); all are counted.
    pub fn max_violations(mut self, max: usize) -> Audit {
        self.max_violations = max;
        self
    }

    /// The audit itself, on rows already read: pure, deterministic, no I/O.
    ///
    /// `rows[i].table` indexes the audit's tables in the order they were added.
    /// Observations are taken in slice order per reader.
    pub fn check(&self, rows: &[StreamRow], observations: &[Observation]) -> VerifyReport {
        let table_names: Vec<String> = self.tables.iter().map(|t| t.table.plain()).collect();
        check::check(
            rows,
            observations,
            &check::Options {
                table_names: &table_names,
                backwards: self.backwards,
                shared_ids: self.shared_ids,
                max_violations: self.max_violations,
            },
        )
    }

    /// Reads every row of the stream's tables from PostgreSQL, in one read-only
    /// `REPEATABLE READ` snapshot, and [`check`](Self::check)s them.
    ///
    /// # Errors
    ///
    /// [`Error::MissingObject`] if a table or column does not exist; [`Error::Pool`] or
    /// [`Error::Database`] otherwise.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn postgres(
        &self,
        pool: &deadpool_postgres::Pool,
        observations: &[Observation],
    ) -> Result<VerifyReport, Error> {
        let rows = crate::postgres::audit::read_rows(pool, &self.tables).await?;
        Ok(self.check(&rows, observations))
    }

    /// Reads every row of the stream's tables from the SQLite database at `path`, in one
    /// read transaction, and [`check`](Self::check)s them. The file must exist.
    ///
    /// # Errors
    ///
    /// [`Error::MissingObject`] if a table or column does not exist; [`Error::Sqlite`] if
    /// the file cannot be opened or read, or an ID is not an integer.
    ///
    /// # Cancel safety
    ///
    /// The read runs to completion on the blocking pool even if the future is dropped.
    pub async fn sqlite(
        &self,
        path: impl AsRef<Path>,
        observations: &[Observation],
    ) -> Result<VerifyReport, Error> {
        let rows = crate::sqlite::audit::read_rows(path.as_ref(), &self.tables).await?;
        Ok(self.check(&rows, observations))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_stream_takes_the_tables_and_the_direction() {
        let config = StreamConfig::new("s", "auditor")
            .table("a", "inst", "id")
            .table("b", "inst", "id")
            .backwards();
        let audit = Audit::for_stream(&config).unwrap();
        assert_eq!(audit.tables.len(), 2);
        assert!(audit.backwards);
        assert!(Audit::for_stream(&StreamConfig::new("s", "auditor")).is_err());
    }

    #[test]
    fn check_names_tables_in_the_order_they_were_added() {
        let audit = Audit::new(StreamTable::new("a", "inst", "id").unwrap())
            .table(StreamTable::new("b", "inst", "id").unwrap());
        let row = |table| StreamRow {
            table,
            id: Some(2),
            instance: Some("w".to_owned()),
        };
        let report = audit.check(&[row(1), row(1), row(0)], &[]);
        assert_eq!(
            report.violations,
            [Violation::DuplicateRow {
                table: "b".to_owned(),
                id: 2,
                rows: 2
            }]
        );
    }
}

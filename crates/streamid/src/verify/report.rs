//! What the audit found: [`VerifyReport`], its per-reader [`ReaderSummary`] lines and the
//! [`Violation`]s. Counts are complete; the list of violations is capped.
//!
//! Every ID and position here is in API form (negative on backwards streams).

use std::fmt;

use serde::Serialize;

/// The outcome of an audit ([`Audit::check`](crate::Audit::check) and friends).
///
/// Serialises to one JSON object with every field below; [`is_ok`](Self::is_ok) is the
/// verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Whether the stream counts backwards (positions compared with `>=`).
    pub backwards: bool,
    /// Rows read from the stream's tables.
    pub rows: u64,
    /// Distinct IDs among them.
    pub distinct_ids: u64,
    /// Rows whose ID column is NULL (not checked further).
    pub null_ids: u64,
    /// Observations read, all readers.
    pub observations: u64,
    /// One line per reader, in order of first appearance.
    pub readers: Vec<ReaderSummary>,
    /// Rows at or below an acted-on position that the reader had not read by then.
    pub misses: u64,
    /// IDs held by rows of different (non-NULL) instances.
    pub ids_handed_out_twice: u64,
    /// Extra rows with the ID of another row of the same table (unless shared IDs are
    /// allowed; IDs already counted in `ids_handed_out_twice` are not counted again).
    pub duplicate_rows: u64,
    /// IDs a reader listed more than once.
    pub seen_twice: u64,
    /// IDs a reader listed after a larger one (plain readers only: token readers legitimately
    /// read a fast writer's rows before a slow writer's).
    pub misordered: u64,
    /// IDs a reader listed that its observation does not cover (above its position and
    /// above its token's position for the row's writer).
    pub beyond_position: u64,
    /// IDs a reader listed that no table holds (the audit assumes no row is deleted).
    pub unknown_rows: u64,
    /// The first violations found (database checks first, then each reader's), at most the
    /// audit's `max_violations`.
    pub violations: Vec<Violation>,
    /// Violations found but not listed because of that cap.
    pub violations_omitted: u64,
}

/// What the audit saw of one reader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ReaderSummary {
    /// The reader's name.
    pub reader: String,
    /// Its observations.
    pub observations: u64,
    /// Distinct IDs it listed.
    pub seen: u64,
    /// The position of its last observation.
    pub final_position: i64,
    /// Whether it tails with multi-writer tokens (an observation carried `writers`).
    pub tokens: bool,
    /// Distinct IDs in the tables that it never listed (misses, and rows above its final
    /// position).
    pub rows_not_seen: u64,
    /// Rows above what its last observation covers: written after it stopped, not misses.
    pub rows_beyond_final_position: u64,
    /// Its misses (rows it had not read by an observation covering them).
    pub misses: u64,
    /// IDs it listed more than once.
    pub seen_twice: u64,
    /// IDs it listed after a larger one.
    pub misordered: u64,
    /// IDs it listed beyond what their observation covers.
    pub beyond_position: u64,
    /// IDs it listed that no table holds.
    pub unknown_rows: u64,
    /// It listed every distinct ID in the tables.
    pub all_rows_seen: bool,
}

/// One broken guarantee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Violation {
    /// A row at or below a position the reader acted on, which it had not read by then: it
    /// became visible after the reader moved past it.
    Miss {
        /// The row's ID.
        id: i64,
        /// The reader.
        reader: String,
        /// The position it acted on.
        position: i64,
        /// Which of the reader's observations (1-based) covered the row.
        observation: u64,
    },
    /// Rows of different instances hold one ID: the ID was handed out twice.
    IdHandedOutTwice {
        /// The ID.
        id: i64,
        /// The instances holding it, sorted.
        instances: Vec<String>,
    },
    /// Several rows of one table hold one ID.
    DuplicateRow {
        /// The table.
        table: String,
        /// The ID.
        id: i64,
        /// How many rows hold it.
        rows: u64,
    },
    /// A reader listed an ID twice.
    SeenTwice {
        /// The reader.
        reader: String,
        /// The ID.
        id: i64,
    },
    /// A reader listed an ID after a larger one.
    Misordered {
        /// The reader.
        reader: String,
        /// The ID.
        id: i64,
        /// The ID listed just before it.
        after: i64,
    },
    /// A reader listed an ID its observation does not cover.
    BeyondPosition {
        /// The reader.
        reader: String,
        /// The ID.
        id: i64,
        /// The observation's position.
        position: i64,
    },
    /// A reader listed an ID no table holds.
    UnknownRow {
        /// The reader.
        reader: String,
        /// The ID.
        id: i64,
    },
}

impl VerifyReport {
    /// No violation of any kind.
    pub fn is_ok(&self) -> bool {
        self.violation_count() == 0
    }

    /// Violations of all kinds, listed or not.
    pub fn violation_count(&self) -> u64 {
        self.misses
            + self.ids_handed_out_twice
            + self.duplicate_rows
            + self.seen_twice
            + self.misordered
            + self.beyond_position
            + self.unknown_rows
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Miss {
                id,
                reader,
                position,
                observation,
            } => write!(
                f,
                "MISS: row {id} is at or below position {position}, which reader {reader:?} \
                 acted on (observation {observation}) before reading it"
            ),
            Violation::IdHandedOutTwice { id, instances } => {
                write!(f, "ID handed out twice: {id} is held by {instances:?}")
            }
            Violation::DuplicateRow { table, id, rows } => {
                write!(f, "duplicate rows: {rows} rows of {table} hold ID {id}")
            }
            Violation::SeenTwice { reader, id } => {
                write!(f, "reader {reader:?} read row {id} twice")
            }
            Violation::Misordered { reader, id, after } => {
                write!(f, "reader {reader:?} read row {id} after row {after}")
            }
            Violation::BeyondPosition {
                reader,
                id,
                position,
            } => write!(
                f,
                "reader {reader:?} read row {id}, beyond what its observation at position \
                 {position} covers"
            ),
            Violation::UnknownRow { reader, id } => {
                write!(f, "reader {reader:?} read row {id}, which no table holds")
            }
        }
    }
}

impl fmt::Display for VerifyReport {
    /// A few lines for people: the verdict, the counts, each reader, the listed violations.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.is_ok() { "OK" } else { "FAILED" };
        writeln!(
            f,
            "verdict: {verdict} ({} violations)",
            self.violation_count()
        )?;
        writeln!(
            f,
            "rows: {} ({} distinct IDs{}), observations: {}, readers: {}{}",
            self.rows,
            self.distinct_ids,
            if self.null_ids > 0 {
                format!(", {} with a NULL ID", self.null_ids)
            } else {
                String::new()
            },
            self.observations,
            self.readers.len(),
            if self.backwards { ", backwards" } else { "" }
        )?;
        writeln!(
            f,
            "misses: {}, IDs handed out twice: {}, duplicate rows: {}, seen twice: {}, \
             misordered: {}, beyond position: {}, unknown rows: {}",
            self.misses,
            self.ids_handed_out_twice,
            self.duplicate_rows,
            self.seen_twice,
            self.misordered,
            self.beyond_position,
            self.unknown_rows
        )?;
        for r in &self.readers {
            let broken =
                r.misses + r.seen_twice + r.misordered + r.beyond_position + r.unknown_rows;
            writeln!(
                f,
                "reader {:?}{}: {} observations, final position {}, saw {} rows, {} not seen \
                 ({} beyond its final position){}{}",
                r.reader,
                if r.tokens { " (tokens)" } else { "" },
                r.observations,
                r.final_position,
                r.seen,
                r.rows_not_seen,
                r.rows_beyond_final_position,
                if r.all_rows_seen {
                    ", every row seen"
                } else {
                    ""
                },
                if broken > 0 {
                    format!(
                        "; {} misses, {} seen twice, {} misordered, {} beyond position, {} \
                         unknown",
                        r.misses, r.seen_twice, r.misordered, r.beyond_position, r.unknown_rows
                    )
                } else {
                    String::new()
                }
            )?;
        }
        for v in &self.violations {
            writeln!(f, "  {v}")?;
        }
        if self.violations_omitted > 0 {
            writeln!(f, "  ... and {} more", self.violations_omitted)?;
        }
        Ok(())
    }
}

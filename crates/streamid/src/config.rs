//! Stream configuration: the user's builder ([`StreamConfig`]) and its validated form.
//!
//! Validation happens before any I/O (spec §2.3): names are checked once here, and only the
//! validated [`Ident`]/[`QualifiedName`] values ever reach SQL.

use std::time::Duration;

use crate::Error;
use crate::ident::{Ident, QualifiedName};

/// The largest `n` accepted by `next_ids(n)`: bigger batches are almost certainly a bug, and
/// would hold the stream back until every one of their IDs is finished.
pub const MAX_BATCH: usize = 1_000_000;

/// How a stream is stored and who may write it.
///
/// Every process of a stream must use the same stream name, tables, sequence, direction and
/// writer list (spec §1.3).
///
/// # Examples
///
/// ```
/// use streamid::StreamConfig;
///
/// let config = StreamConfig::new("events", "writer-1")
///     .table("events", "instance_name", "stream_ordering")
///     .sequence("events_stream_seq")
///     .writers(["writer-1", "writer-2"]);
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
pub struct StreamConfig {
    pub(crate) stream: String,
    pub(crate) instance: String,
    pub(crate) tables: Vec<(String, String, String)>,
    pub(crate) sequence: Option<String>,
    pub(crate) writers: Vec<String>,
    pub(crate) backwards: bool,
    pub(crate) strict_consistency: bool,
    pub(crate) startup_timeout: Duration,
    pub(crate) writer_lock_timeout: Duration,
    pub(crate) position_write_interval: Duration,
    pub(crate) unresolved_warn_after: Duration,
    pub(crate) retry_attempts: u32,
    pub(crate) busy_timeout: Duration,
    pub(crate) reclaim: bool,
    pub(crate) reclaim_interval: Duration,
}

impl StreamConfig {
    /// A stream named `stream` (its key in `stream_positions`), seen from the process named
    /// `instance`.
    pub fn new(stream: impl Into<String>, instance: impl Into<String>) -> StreamConfig {
        StreamConfig {
            stream: stream.into(),
            instance: instance.into(),
            tables: Vec::new(),
            sequence: None,
            writers: Vec::new(),
            backwards: false,
            strict_consistency: false,
            startup_timeout: Duration::from_secs(60),
            writer_lock_timeout: Duration::from_secs(30),
            position_write_interval: Duration::from_secs(1),
            unresolved_warn_after: Duration::from_secs(30),
            retry_attempts: 5,
            busy_timeout: Duration::from_secs(5),
            reclaim: true,
            reclaim_interval: Duration::from_millis(500),
        }
    }

    /// Adds a backing table: its name (`table` or `schema.table`), the column holding the
    /// writing instance's name (nullable) and the column holding the stream ID. Repeatable:
    /// all tables share one ID space.
    pub fn table(
        mut self,
        table: impl Into<String>,
        instance_column: impl Into<String>,
        id_column: impl Into<String>,
    ) -> StreamConfig {
        self.tables
            .push((table.into(), instance_column.into(), id_column.into()));
        self
    }

    /// The PostgreSQL sequence IDs come from (`name` or `schema.name`). Create it with
    /// [`create_sequence`](crate::create_sequence).
    pub fn sequence(mut self, sequence: impl Into<String>) -> StreamConfig {
        self.sequence = Some(sequence.into());
        self
    }

    /// The instances allowed to allocate IDs. Empty (the default) means anyone may write;
    /// then positions are not persisted and a process only waits for writers it has heard
    /// from (spec §2.2).
    pub fn writers<I, S>(mut self, writers: I) -> StreamConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.writers = writers.into_iter().map(Into::into).collect();
        self
    }

    /// Hands out negative IDs (`-2`, `-3`, …), for data that sorts before the stream's start.
    pub fn backwards(mut self) -> StreamConfig {
        self.backwards = true;
        self
    }

    /// Refuse to start, instead of repairing the sequence, when `stream_positions` records
    /// a position ahead of the sequence (default `false`).
    pub fn strict_consistency(mut self, strict: bool) -> StreamConfig {
        self.strict_consistency = strict;
        self
    }

    /// Bound on the whole startup (default 60 s).
    pub fn startup_timeout(mut self, timeout: Duration) -> StreamConfig {
        self.startup_timeout = timeout;
        self
    }

    /// How long a writer's startup waits for transactions of an earlier process with the
    /// same instance name (default 30 s).
    pub fn writer_lock_timeout(mut self, timeout: Duration) -> StreamConfig {
        self.writer_lock_timeout = timeout;
        self
    }

    /// How often an idle writer refreshes its `stream_positions` row when its announced
    /// position moved (default 1 s).
    pub fn position_write_interval(mut self, interval: Duration) -> StreamConfig {
        self.position_write_interval = interval;
        self
    }

    /// After how long an unresolved commit outcome is logged at WARN (default 30 s).
    pub fn unresolved_warn_after(mut self, after: Duration) -> StreamConfig {
        self.unresolved_warn_after = after;
        self
    }

    /// Attempts made by [`MultiWriterIdGenerator::retry`](crate::MultiWriterIdGenerator::retry)
    /// (default 5).
    pub fn retry_attempts(mut self, attempts: u32) -> StreamConfig {
        self.retry_attempts = attempts;
        self
    }

    /// SQLite only: how long a statement waits for another connection's or process's write
    /// lock before failing (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> StreamConfig {
        self.busy_timeout = timeout;
        self
    }

    /// Whether this process recovers dead writers of the stream (default `true`; spec
    /// §12.6): a listed writer that holds the current token back is raised to a fresh ID
    /// once the database proves it can no longer commit, so a crashed writer does not stall
    /// the stream until it restarts.
    pub fn reclaim_dead_writers(mut self, reclaim: bool) -> StreamConfig {
        self.reclaim = reclaim;
        self
    }

    /// How often the lease heartbeat and dead-writer recovery run (default 500 ms). A killed
    /// writer stops holding other processes back within about two intervals plus the
    /// replication delay.
    pub fn reclaim_interval(mut self, interval: Duration) -> StreamConfig {
        self.reclaim_interval = interval;
        self
    }

    /// Checks the configuration without any I/O: the rules every constructor checks first
    /// (names, the writer list, the tables, retry attempts), except the sequence, which only
    /// [`MultiWriterIdGenerator::postgres`](crate::MultiWriterIdGenerator::postgres)
    /// requires. Use it to reject bad input early, e.g. a command line or a config file.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidConfig`] naming the field and the rule it breaks.
    ///
    /// # Examples
    ///
    /// ```
    /// use streamid::StreamConfig;
    ///
    /// let config = StreamConfig::new("events", "w1").table("events", "instance_name", "id");
    /// assert!(config.check().is_ok());
    /// assert!(config.writers(["w1", "w1"]).check().is_err());
    /// ```
    pub fn check(&self) -> Result<(), Error> {
        self.validate(false).map(drop)
    }

    /// Checks every rule of spec §2.3; `needs_sequence` is false for the embedded backend.
    pub(crate) fn validate(&self, needs_sequence: bool) -> Result<ValidConfig, Error> {
        let invalid = |field: &'static str, value: &str, rule: &str| Error::InvalidConfig {
            field,
            value: value.to_owned(),
            rule: rule.to_owned(),
        };
        check_name("stream", &self.stream)?;
        check_name("instance", &self.instance)?;
        let mut writers: Vec<String> = Vec::with_capacity(self.writers.len());
        for w in &self.writers {
            check_name("writers", w)?;
            if writers.contains(w) {
                return Err(invalid("writers", w, "each writer is listed once"));
            }
            writers.push(w.clone());
        }
        if self.tables.is_empty() {
            return Err(invalid(
                "tables",
                "",
                "at least one backing table is required: add .table(table, instance_column, id_column)",
            ));
        }
        let tables = self
            .tables
            .iter()
            .map(|(t, i, c)| TableSpec::parse(t, i, c))
            .collect::<Result<Vec<_>, Error>>()?;
        let sequence = match (&self.sequence, needs_sequence) {
            (Some(s), _) => Some(QualifiedName::parse("sequence", s)?),
            (None, true) => {
                return Err(invalid(
                    "sequence",
                    "",
                    "a sequence is required on PostgreSQL: add .sequence(name)",
                ));
            }
            (None, false) => None,
        };
        if self.retry_attempts == 0 {
            return Err(invalid("retry_attempts", "0", "at least one attempt"));
        }
        Ok(ValidConfig {
            stream: self.stream.clone(),
            instance: self.instance.clone(),
            tables,
            sequence,
            writers,
            sign: if self.backwards { -1 } else { 1 },
            strict_consistency: self.strict_consistency,
            startup_timeout: self.startup_timeout,
            writer_lock_timeout: self.writer_lock_timeout,
            position_write_interval: self.position_write_interval,
            unresolved_warn_after: self.unresolved_warn_after,
            retry_attempts: self.retry_attempts,
            busy_timeout: self.busy_timeout,
            reclaim: self.reclaim,
            reclaim_interval: self.reclaim_interval.max(Duration::from_millis(10)),
        })
    }
}

/// Names that are bound as parameters (never spliced into SQL): non-empty, no NUL.
fn check_name(field: &'static str, value: &str) -> Result<(), Error> {
    let rule = if value.is_empty() {
        "must not be empty"
    } else if value.contains('\0') {
        "must not contain NUL"
    } else {
        return Ok(());
    };
    Err(Error::InvalidConfig {
        field,
        value: value.to_owned(),
        rule: rule.to_owned(),
    })
}

/// One validated backing table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableSpec {
    pub(crate) table: QualifiedName,
    pub(crate) instance_column: Ident,
    pub(crate) id_column: Ident,
}

impl TableSpec {
    /// The columns as "missing object" errors name them: `inst or id of table t`.
    pub(crate) fn columns(&self) -> String {
        format!(
            "{} or {} of table {}",
            self.instance_column.as_str(),
            self.id_column.as_str(),
            self.table.plain()
        )
    }

    /// Validates the names of [`StreamConfig::table`]'s three arguments.
    pub(crate) fn parse(
        table: &str,
        instance_column: &str,
        id_column: &str,
    ) -> Result<TableSpec, Error> {
        Ok(TableSpec {
            table: QualifiedName::parse("table", table)?,
            instance_column: Ident::parse("instance_column", instance_column)?,
            id_column: Ident::parse("id_column", id_column)?,
        })
    }
}

/// A configuration that passed [`StreamConfig::validate`].
#[derive(Debug, Clone)]
pub(crate) struct ValidConfig {
    pub(crate) stream: String,
    pub(crate) instance: String,
    pub(crate) tables: Vec<TableSpec>,
    pub(crate) sequence: Option<QualifiedName>,
    pub(crate) writers: Vec<String>,
    /// `f`: +1 forwards, -1 backwards (spec §0).
    pub(crate) sign: i64,
    pub(crate) strict_consistency: bool,
    pub(crate) startup_timeout: Duration,
    pub(crate) writer_lock_timeout: Duration,
    pub(crate) position_write_interval: Duration,
    pub(crate) unresolved_warn_after: Duration,
    pub(crate) retry_attempts: u32,
    pub(crate) busy_timeout: Duration,
    pub(crate) reclaim: bool,
    pub(crate) reclaim_interval: Duration,
}

impl ValidConfig {
    /// Whether this process may allocate.
    pub(crate) fn is_writer(&self) -> bool {
        self.writers.is_empty() || self.writers.contains(&self.instance)
    }

    /// Whether this process writes its row in `stream_positions` (spec §8.2).
    pub(crate) fn persists_position(&self) -> bool {
        !self.writers.is_empty() && self.writers.contains(&self.instance)
    }

    /// The spec §5.1 refusals, before any I/O.
    pub(crate) fn check_allocation(&self, n: usize) -> Result<(), Error> {
        if !self.is_writer() {
            return Err(Error::NotAWriter {
                stream: self.stream.clone(),
                instance: self.instance.clone(),
                writers: self.writers.clone(),
            });
        }
        if n == 0 || n > MAX_BATCH {
            return Err(Error::InvalidArgument(format!(
                "n = {n}: allocate between 1 and {MAX_BATCH} IDs at a time"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> StreamConfig {
        StreamConfig::new("s", "w1")
            .table("t", "inst", "id")
            .sequence("seq")
    }

    #[test]
    fn valid_config_passes() {
        let v = base()
            .writers(["w1", "w2"])
            .backwards()
            .validate(true)
            .unwrap();
        assert_eq!(v.sign, -1);
        assert!(v.is_writer() && v.persists_position());
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases: Vec<(StreamConfig, &str)> = vec![
            (
                StreamConfig::new("", "w")
                    .table("t", "i", "c")
                    .sequence("s"),
                "stream",
            ),
            (
                StreamConfig::new("s", "")
                    .table("t", "i", "c")
                    .sequence("s"),
                "instance",
            ),
            (
                StreamConfig::new("s\0", "w")
                    .table("t", "i", "c")
                    .sequence("s"),
                "stream",
            ),
            (base().writers(["a", "a"]), "writers"),
            (base().writers([""]), "writers"),
            (StreamConfig::new("s", "w").sequence("s"), "tables"),
            (StreamConfig::new("s", "w").table("t", "i", "c"), "sequence"),
            (base().table("x;--", "i", "c"), "table"),
            (base().table("t", "i\"", "c"), "instance_column"),
            (base().table("t", "i", "1c"), "id_column"),
            (base().sequence("a.b.c"), "sequence"),
            (base().retry_attempts(0), "retry_attempts"),
        ];
        for (config, field) in cases {
            match config.validate(true) {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected invalid {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn allocation_refusals() {
        let reader = base().writers(["w2"]).validate(true).unwrap();
        assert!(matches!(
            reader.check_allocation(1),
            Err(Error::NotAWriter { .. })
        ));
        let writer = base().validate(true).unwrap();
        assert!(matches!(
            writer.check_allocation(0),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            writer.check_allocation(MAX_BATCH + 1),
            Err(Error::InvalidArgument(_))
        ));
        assert!(writer.check_allocation(MAX_BATCH).is_ok());
    }
}

//! Raw options of `streamid verify` and `streamid gaps`; validated by
//! [`crate::plan::VerifyPlan`] and [`crate::plan::GapsPlan`].

use std::path::PathBuf;

use clap::Args;

/// Exit codes of `streamid verify`.
pub(crate) const VERIFY_EXIT_CODES: &str = "\
Exit codes:
  0  no violations: no row was missed, no ID handed out twice, every reader sane
  1  violations found (listed in the report)
  2  usage or configuration error (bad option, invalid table or column name)
  3  database or runtime error (cannot connect, missing table or file, an observation
     file that cannot be read or parsed)";

/// Exit codes of `streamid gaps`.
pub(crate) const GAPS_EXIT_CODES: &str = "\
Exit codes:
  0  printed (also when the stream has no gaps, or the tables do not exist yet)
  2  usage or configuration error
  3  database or runtime error";

pub(crate) const VERIFY_LONG_ABOUT: &str = "\
Audits a stream against what its readers observed, reading the tables directly (never
streamid's own bookkeeping).

Readers record what they acted on in observation files, JSON Lines, one object per line and
round, in order:
  {\"reader\": \"r1\", \"position\": 57, \"seen\": [52, 55, 57]}
meaning: reader r1 acted on position 57 and had by then read every row it listed with
id <= 57 (this round and earlier ones). Token readers add \"token\" (its string form) and
\"writers\" (the token's writers ahead of the position, with their positions). `streamid
worker read` writes such files.

Checks: (a) every row with id <= P (with --backwards: id >= P) was read by the reader at or
before its observation at P, else it is a MISS (the row appeared below a position already
acted on); (b) no ID is held by rows of two instances, and no table holds one ID twice
(unless --allow-shared-ids); (c) no reader read a row twice, out of ascending order, above
its position, or a row no table holds. Rows above a reader's last position are counted, not
reported: the reader stopped first.";

pub(crate) const GAPS_LONG_ABOUT: &str = "\
Shows a stream's gap ledger: the IDs its writers finished without a row, per writer and cause
(rolled_back, abandoned, commit_failed, resolved_aborted, reclaimed), from table stream_gaps,
and the stream's most recent events (writer registrations, reclaims) from stream_events.
Both tables are written by streamid's generators; they are empty until one ran.";

/// Which stream, in which database: shared by `verify`, `gaps` and the workers.
#[derive(Debug, Clone, Args)]
pub(crate) struct TargetArgs {
    /// Database: postgres://..., a key=value string, or sqlite:PATH (verify and gaps: the
    /// file must exist; workers create it).
    #[arg(long, value_name = "URL", env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database: String,

    /// The stream's name (its key in stream_positions).
    #[arg(long, value_name = "NAME")]
    pub(crate) stream: String,
}

/// Raw options of `streamid verify`.
#[derive(Debug, Clone, Args)]
pub(crate) struct VerifyArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,

    /// The stream's table (`name` or `schema.name`).
    #[arg(long, value_name = "TABLE")]
    pub(crate) table: String,

    /// The column naming the writing instance.
    #[arg(long, value_name = "COLUMN")]
    pub(crate) instance_column: String,

    /// The column holding the stream ID.
    #[arg(long, value_name = "COLUMN")]
    pub(crate) id_column: String,

    /// The stream counts backwards (negative IDs): positions are compared with >=.
    #[arg(long)]
    pub(crate) backwards: bool,

    /// The table may hold several rows per ID (rows of different instances sharing an ID
    /// are still violations).
    #[arg(long)]
    pub(crate) allow_shared_ids: bool,

    /// Observation files (JSON Lines); several readers may share one file.
    #[arg(long, value_name = "FILE", num_args = 1.., required = true)]
    pub(crate) observations: Vec<PathBuf>,

    /// How many violations to list (all are counted).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub(crate) max_violations: usize,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Raw options of `streamid gaps`.
#[derive(Debug, Clone, Args)]
pub(crate) struct GapsArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,

    /// How many of the most recent events to show.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub(crate) events: u32,

    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub(crate) json: bool,
}

//! Raw options of the hidden `streamid worker` subcommands; validated by
//! [`crate::plan::WritePlan`] and [`crate::plan::ReadPlan`].
//!
//! The workers are building blocks for multi-process tests, fault injection and soak runs
//! (issue 4 item 5, issue 5 items 4 and 6): a parent test starts several `worker write`
//! processes and a `worker read` process on one database, kills or restarts what it likes,
//! and finally runs `streamid verify` on the readers' observations. They are hidden from
//! `streamid --help` (clap `hide = true`) because they are not meant for people, but they
//! are stable: `streamid worker write --help` documents them, and the crate's README lists
//! their output formats.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{LoadArgs, TargetArgs};

/// Exit codes of both workers.
pub(crate) const WORKER_EXIT_CODES: &str = "\
Exit codes:
  0  finished: the bound was reached, the stream went idle (read), or SIGTERM/Ctrl-C
  2  usage or configuration error
  3  database or runtime error (cannot start; write: more than 50 writes in a row failed)";

pub(crate) const WRITE_LONG_ABOUT: &str = "\
A writer process for multi-process tests: runs one generator as --instance on the stream, and
writes rows (id, instance_name, payload) to --table in stream transactions, each after a
random wait of 0..--max-delay-ms between allocating its ID and inserting its row, rolling
back a share (--rollback-rate). Creates the table (and on PostgreSQL its sequence
<table>_seq) if missing; safe when several workers start at once.

Prints one JSON line per write to stdout (or --log FILE, appended), flushed at once, so a
parent knows what was committed even if the worker is killed later:
  {\"event\":\"committed\",\"id\":17,\"instance\":\"a\"}
  {\"event\":\"rolled_back\",\"id\":18,\"instance\":\"a\"}
  {\"event\":\"failed\",\"id\":19,\"instance\":\"a\",\"error\":\"...\"}      (id null if none)
  {\"event\":\"unknown\",\"id\":20,\"instance\":\"a\",\"error\":\"...\"}     (COMMIT outcome unknown)
plus \"started\", \"progress\" (every --report-every-ms) and \"done\" lines with counts and
positions; \"done\" adds the final positions(), current_token_for_writer() of every writer,
current_token() and max_allocated_token(). --idle writes nothing (an idle writer);
--wait-for-signal keeps following the stream after the last write until SIGTERM. A failed write is retried with the next one after a pause; after 50 failures in a
row the worker gives up. SIGTERM or Ctrl-C: writes in flight finish, positions are flushed,
\"done\" is printed, exit 0.";

pub(crate) const READ_LONG_ABOUT: &str = "\
A reader process for multi-process tests: runs a reader generator (--instance, not one of
--writers) and tails --table with `id > last AND id <= P`, P = persisted_upto_position() read
before each query, appending one observation per round to --observations (JSON Lines, the
format `streamid verify` reads, flushed at once). With --tokens it also tails with
multi-writer tokens as reader `<instance>+tokens`, recording each token's string form and
its writers.

With --keep-going a failed round (database error) is retried after a pause; nothing is
recorded for it, so the observations stay exact.

It stops when the stream has been idle for --until-idle (the last allocated ID equals P and
no new rows arrived), after --duration, or on SIGTERM/Ctrl-C, and prints a \"done\" JSON line
to stdout. Replication: notify (PostgreSQL LISTEN/NOTIFY), redis:URL, poll (reads
stream_positions every 20 ms; works on SQLite, where it is the only cross-process way), or
none (positions never reach the reader: only for writers).";

/// `streamid worker ...`.
#[derive(Debug, Clone, Args)]
pub(crate) struct WorkerArgs {
    /// Which worker.
    #[command(subcommand)]
    pub(crate) command: WorkerCommand,
}

/// The workers.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum WorkerCommand {
    /// Write rows as one writer instance, logging every outcome as a JSON line.
    #[command(long_about = WRITE_LONG_ABOUT, after_long_help = WORKER_EXIT_CODES)]
    Write(WriteArgs),
    /// Tail the stream as a reader, appending observations for `streamid verify`.
    #[command(long_about = READ_LONG_ABOUT, after_long_help = WORKER_EXIT_CODES)]
    Read(ReadArgs),
}

/// What both workers need: the database, the stream and who writes it.
#[derive(Debug, Clone, Args)]
pub(crate) struct StreamArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,

    /// The stream's table (`name` or `schema.name`), created if missing.
    #[arg(long, value_name = "TABLE")]
    pub(crate) table: String,

    /// This process's instance name.
    #[arg(long, value_name = "NAME")]
    pub(crate) instance: String,

    /// Every writer instance of the stream, comma-separated (the same list in every
    /// process).
    #[arg(long, value_name = "A,B,...", value_delimiter = ',', required = true)]
    pub(crate) writers: Vec<String>,

    /// How positions travel between processes: notify (PostgreSQL only), redis:URL, poll,
    /// or none.
    #[arg(long, value_name = "HOW", default_value = "none")]
    pub(crate) replication: String,
}

/// Raw options of `streamid worker write`.
#[derive(Debug, Clone, Args)]
pub(crate) struct WriteArgs {
    #[command(flatten)]
    pub(crate) stream: StreamArgs,

    #[command(flatten)]
    pub(crate) load: LoadArgs,

    /// Print a "progress" line this often.
    #[arg(long, value_name = "MS")]
    pub(crate) report_every_ms: Option<u64>,

    /// Append the JSON lines to this file instead of printing them.
    #[arg(long, value_name = "FILE")]
    pub(crate) log: Option<PathBuf>,

    /// Seed of the random waits and rollback decisions [default: random].
    #[arg(long, value_name = "N")]
    pub(crate) seed: Option<u64>,

    /// Write nothing: an idle writer that only follows the stream and announces its
    /// position, until SIGTERM or Ctrl-C.
    #[arg(long, conflicts_with_all = ["rows", "duration"])]
    pub(crate) idle: bool,

    /// After the last write, keep following the stream (replicating, announcing) until
    /// SIGTERM or Ctrl-C, then print "done": lets a parent compare every process's final
    /// positions once all writers have finished.
    #[arg(long)]
    pub(crate) wait_for_signal: bool,
}

/// Raw options of `streamid worker read`.
#[derive(Debug, Clone, Args)]
pub(crate) struct ReadArgs {
    #[command(flatten)]
    pub(crate) stream: StreamArgs,

    /// Append observations (JSON Lines) to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) observations: PathBuf,

    /// Also tail with multi-writer tokens, as reader `<instance>+tokens`.
    #[arg(long)]
    pub(crate) tokens: bool,

    /// Stop once the stream has been idle this long, e.g. 2s.
    #[arg(long, value_name = "DURATION")]
    pub(crate) until_idle: Option<String>,

    /// Stop after this long.
    #[arg(long, value_name = "DURATION")]
    pub(crate) duration: Option<String>,

    /// Pause between two rounds, in ms.
    #[arg(long, value_name = "MS", default_value_t = 2)]
    pub(crate) poll_ms: u64,

    /// Carry on after database errors (connection lost, server restarting): log, pause and
    /// retry the round, giving up after 60 s of failed rounds in a row. Without it the first
    /// error ends the reader (exit 3).
    #[arg(long)]
    pub(crate) keep_going: bool,
}

//! Stage one of parsing: the raw command line exactly as clap sees it.
//!
//! Nothing here judges whether values make sense together; [`crate::plan`] does that. The
//! only thing recorded beyond clap's derive is where `--database` came from, because
//! `--postgres-temp` overrides `DATABASE_URL` from the environment but conflicts with an
//! explicit `--database`.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

mod audit;
mod bench;
mod worker;

pub(crate) use audit::{GapsArgs, TargetArgs, VerifyArgs};
pub(crate) use bench::{BenchArgs, BenchCommand, LatencyArgs, LatencyReaderArgs};
pub(crate) use worker::{ReadArgs, StreamArgs, WorkerArgs, WorkerCommand, WriteArgs};

/// Exit codes of the whole command, shown in `--help` and in the README (a macro so
/// `concat!` can use it). Each subcommand's `--help` details its own.
macro_rules! exit_codes {
    () => {
        "Exit codes:
  0  success: demo verdict OK, verify found no violation (also after --help, and when
     stdout is closed early, e.g. `| head`)
  1  demo verdict FAILED, verify found violations, or a bench latency sample was never
     covered
  2  usage or configuration error (bad or conflicting options)
  3  database or runtime error (cannot connect, cannot start PostgreSQL, cannot open the
     SQLite file, a query failed)"
    };
}

#[cfg(test)]
const EXIT_CODES: &str = exit_codes!();

/// Exit codes of `streamid demo`.
const DEMO_EXIT_CODES: &str = "\
Exit codes:
  0  verdict OK: the streamid reader saw every committed row exactly once, in ID order
     (also after --help, and when stdout is closed early, e.g. `| head`)
  1  verdict FAILED: the streamid reader missed, duplicated or misordered a row
  2  usage or configuration error (bad or conflicting options)
  3  database or runtime error (cannot connect, cannot start PostgreSQL, cannot open the
     SQLite file, a query failed)";

const LONG_ABOUT: &str = concat!(
    "streamid: multi-writer stream IDs on PostgreSQL and SQLite.

Writers take IDs before they commit and commit in any order, so a reader that tails
`WHERE id > last_seen` silently misses rows. streamid tells every process a position below
which everything is decided; readers that stay below it miss nothing.

Errors are printed on one line to stderr as `streamid: error: ...`. Logs go to stderr;
set RUST_LOG (default `warn`) to see more.

",
    exit_codes!()
);

const DEMO_LONG_ABOUT: &str = "\
Shows the guarantee: writers commit out of order, a naive reader misses rows, a streamid
reader misses none.

N writer tasks, each with its own generator instance (writer-1 ... writer-N), write the
stream `demo_events`: each write opens a transaction, allocates an ID, waits a random
0..--max-delay-ms (so commits land out of order), inserts a row and commits, or rolls back
with probability --rollback-rate. In-process replication passes each writer's position to the
other generators and to a reader generator (instance `reader`).

Two readers tail the table meanwhile: the naive reader reads `id > last_seen`; the streamid
reader reads `id > last AND id <= P` with P the reader generator's persisted-up-to position.
The final report counts committed rows and out-of-order commits from the database itself,
then compares what each reader saw. The naive reader's misses are expected and reported;
only the streamid reader decides the verdict.

By default the demo runs on an embedded SQLite database in a temporary directory, deleted at
the end; --database sqlite:PATH keeps the file. On SQLite, commits are serialised by the
write lock, yet land out of ID order because IDs are allocated before the wait.

The demo drops and recreates table demo_events (PostgreSQL: and sequence demo_events_seq;
SQLite: forgets the stream's counter row in streamid_sequences), and deletes the stream's
rows from stream_positions; in a database of your own they are kept afterwards.";

/// The `streamid` command line.
#[derive(Debug, Parser)]
#[command(
    name = "streamid",
    version,
    about = "Multi-writer stream IDs: see the guarantee, inspect and check streams",
    long_about = LONG_ABOUT,
    after_long_help = "Run `streamid <subcommand> --help` for a subcommand's options and exit codes."
)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Writers commit out of order; a naive reader misses rows, a streamid reader none.
    #[command(long_about = DEMO_LONG_ABOUT, after_long_help = DEMO_EXIT_CODES)]
    Demo(DemoArgs),
    /// Audit a stream against its readers' observations: missed rows, IDs handed out twice.
    #[command(long_about = audit::VERIFY_LONG_ABOUT, after_long_help = audit::VERIFY_EXIT_CODES)]
    Verify(VerifyArgs),
    /// Show a stream's gap ledger (IDs without a row, per writer and cause) and its events.
    #[command(long_about = audit::GAPS_LONG_ABOUT, after_long_help = audit::GAPS_EXIT_CODES)]
    Gaps(GapsArgs),
    /// Benchmarks: `bench latency` measures replication latency between processes.
    Bench(BenchArgs),
    /// Writer and reader processes for multi-process tests, fault injection and soak runs.
    ///
    /// Hidden from `--help`: building blocks for tests, documented in `cli/worker.rs`, in
    /// `streamid worker write --help` / `streamid worker read --help`, and in the crate's
    /// README.
    #[command(hide = true)]
    Worker(WorkerArgs),
}

/// Raw options of `streamid demo`; validated by [`crate::plan::DemoPlan::from_args`].
#[derive(Debug, Clone, Args)]
pub(crate) struct DemoArgs {
    /// Writer tasks, each with its own generator instance (writer-1 ... writer-N); 1 to 64.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub(crate) writers: u32,

    #[command(flatten)]
    pub(crate) load: LoadArgs,

    /// Database: sqlite:PATH (file kept afterwards), postgres://... or a key=value string
    /// [default: SQLite in a temporary directory, deleted at the end].
    #[arg(long, value_name = "URL", env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database: Option<String>,

    /// Start a throwaway PostgreSQL cluster (fsync on) for this run; needs the PostgreSQL
    /// server binaries. Overrides DATABASE_URL from the environment.
    #[arg(long)]
    pub(crate) postgres_temp: bool,

    /// Print the final report as one JSON object on stdout (progress goes to stderr).
    #[arg(long)]
    pub(crate) json: bool,

    /// No live view or progress lines; only the final report.
    #[arg(long, short)]
    pub(crate) quiet: bool,

    /// Seed for the random delays and rollback decisions [default: random, printed in the
    /// report].
    #[arg(long, value_name = "N")]
    pub(crate) seed: Option<u64>,

    /// Whether `--database` came from `DATABASE_URL` rather than the command line (set by
    /// [`parse`], not an option).
    #[arg(skip)]
    pub(crate) database_from_env: bool,
}

/// How much and how writers write: shared by `streamid demo` and `streamid worker write`;
/// validated by `plan::Load::from_args`.
#[derive(Debug, Clone, Args)]
pub(crate) struct LoadArgs {
    /// Stop after N writes (committed or rolled back) [default: demo 2000, or none with
    /// --duration; worker: no limit].
    #[arg(long, value_name = "N")]
    pub(crate) rows: Option<u64>,

    /// Stop writing after this long, e.g. 10s, 500ms, 2m (with --rows: whichever comes first).
    #[arg(long, value_name = "DURATION")]
    pub(crate) duration: Option<String>,

    /// Probability that a write rolls back instead of committing, 0 to 1.
    #[arg(long, value_name = "P", default_value_t = 0.05)]
    pub(crate) rollback_rate: f64,

    /// Longest random wait between allocating an ID and writing its row, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 20)]
    pub(crate) max_delay_ms: u64,
}

/// Parses `args` (including the program name) into raw options.
///
/// # Errors
///
/// clap's error, including the requests to show help or the version.
pub(crate) fn parse<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(args)?;
    let mut cli = Cli::from_arg_matches(&matches)?;
    if let Command::Demo(demo) = &mut cli.command {
        demo.database_from_env = matches
            .subcommand_matches("demo")
            .and_then(|m| m.value_source("database"))
            == Some(ValueSource::EnvVariable);
    }
    if let Command::Bench(BenchArgs {
        command: BenchCommand::Latency(latency),
    }) = &mut cli.command
    {
        latency.database_from_env = matches
            .subcommand_matches("bench")
            .and_then(|m| m.subcommand_matches("latency"))
            .and_then(|m| m.value_source("database"))
            == Some(ValueSource::EnvVariable);
    }
    Ok(cli)
}

/// The visible subcommands' names, for error messages.
pub(crate) fn subcommand_names() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_demo_options() {
        let cli = parse([
            "streamid",
            "demo",
            "--writers",
            "8",
            "--rows",
            "10",
            "--rollback-rate",
            "0.5",
            "--postgres-temp",
            "--json",
        ])
        .unwrap();
        let Command::Demo(demo) = cli.command else {
            panic!("not the demo: {:?}", cli.command);
        };
        assert_eq!(demo.writers, 8);
        assert_eq!(demo.load.rows, Some(10));
        assert_eq!(demo.load.rollback_rate, 0.5);
        assert!(demo.postgres_temp && demo.json && !demo.quiet);
    }

    #[test]
    fn the_long_help_lists_the_exit_codes() {
        assert!(LONG_ABOUT.contains(EXIT_CODES));
    }

    #[test]
    fn parses_the_worker_and_audit_options() {
        let cli = parse([
            "streamid",
            "worker",
            "write",
            "--database",
            "sqlite:x.db",
            "--stream",
            "s",
            "--table",
            "t",
            "--instance",
            "a",
            "--writers",
            "a,b",
            "--rows",
            "5",
        ])
        .unwrap();
        let Command::Worker(WorkerArgs {
            command: WorkerCommand::Write(write),
        }) = cli.command
        else {
            panic!("not worker write: {:?}", cli.command);
        };
        assert_eq!(write.stream.writers, ["a", "b"]);
        assert_eq!(write.stream.replication, "none");
        assert_eq!(write.load.rows, Some(5));
        let cli = parse([
            "streamid",
            "verify",
            "--database",
            "sqlite:x.db",
            "--stream",
            "s",
            "--table",
            "t",
            "--instance-column",
            "i",
            "--id-column",
            "id",
            "--observations",
            "a.jsonl",
            "b.jsonl",
        ])
        .unwrap();
        let Command::Verify(verify) = cli.command else {
            panic!("not verify: {:?}", cli.command);
        };
        assert_eq!(verify.observations.len(), 2);
    }

    #[test]
    fn the_workers_are_hidden() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("verify") && help.contains("gaps"), "{help}");
        assert!(!help.contains("worker"), "{help}");
        assert_eq!(subcommand_names(), ["demo", "verify", "gaps", "bench"]);
    }
}

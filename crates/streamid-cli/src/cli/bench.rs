//! Raw options of `streamid bench`; validated by [`crate::plan::LatencyPlan`] and
//! [`crate::plan::LatencyReaderPlan`].

use clap::{Args, Subcommand};

/// Exit codes of `streamid bench latency`.
pub(crate) const BENCH_EXIT_CODES: &str = "\
Exit codes:
  0  measured: every sample was covered by the reader process
  1  some samples were never covered by the reader's persisted-up-to position
  2  usage or configuration error
  3  database or runtime error (cannot connect, cannot start PostgreSQL or redis-server)";

pub(crate) const LATENCY_LONG_ABOUT: &str = "\
Measures replication latency: the time from a writer's commit to another process's
persisted-up-to position covering the committed ID.

A measuring writer (instance bench-writer) commits one row at a time in stream transactions,
--interval-ms apart, and records the wall-clock time each COMMIT returned. A reader process
(a child `streamid` process; a task of this process with --transport in-process) subscribes
to its generator's current token and records the wall-clock time of every change. Each
sample's latency is the time from its commit until the reader's persisted-up-to position
first covered its ID; p50, p90, p99 and the maximum are reported. Both clocks are the same
machine's, so the latency includes everything a user's reader waits for: the announcement
after the commit, the transport, and the reader waking up.

Replication uses the library's default options (coalescing 1 ms, periodic announcement
every 1 s): what users get. The periodic announcement matters only for idle writers; the
measured commits are announced at once.

--load-writers K adds K writers committing continuously (no wait, no rollback) while the
samples are taken: separate processes for notify and Redis, tasks of this process for
in-process. Under load, the reader's position covers a sample only once every smaller ID,
whoever allocated it, is decided, so the latency also includes the rest of the concurrent
transactions.

The run drops and recreates table bench_latency and its sequence bench_latency_seq, and
forgets the stream's rows in stream_positions; on a database of your own they are kept
afterwards. --postgres-temp starts a throwaway PostgreSQL cluster (fsync on); redis-temp a
throwaway redis-server (both deleted at the end).";

/// `streamid bench ...`.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    /// Which benchmark.
    #[command(subcommand)]
    pub(crate) command: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum BenchCommand {
    /// Replication latency: from a commit to another process's persisted-up-to position.
    #[command(long_about = LATENCY_LONG_ABOUT, after_long_help = BENCH_EXIT_CODES)]
    Latency(LatencyArgs),
    /// The reader process of `bench latency` (started by it; not for people).
    #[command(hide = true)]
    LatencyReader(LatencyReaderArgs),
}

/// Raw options of `streamid bench latency`.
#[derive(Debug, Clone, Args)]
pub(crate) struct LatencyArgs {
    /// PostgreSQL database: postgres://... or a key=value string.
    #[arg(long, value_name = "URL", env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database: Option<String>,

    /// Start a throwaway PostgreSQL cluster (fsync on) for this run. Overrides DATABASE_URL
    /// from the environment.
    #[arg(long)]
    pub(crate) postgres_temp: bool,

    /// How positions travel: notify (PostgreSQL LISTEN/NOTIFY), redis:redis://HOST:PORT,
    /// redis-temp (a throwaway redis-server), or in-process (reference: one process).
    #[arg(long, value_name = "HOW", default_value = "notify")]
    pub(crate) transport: String,

    /// Commits to measure.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub(crate) samples: u64,

    /// Writers committing continuously meanwhile (0: idle stream).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub(crate) load_writers: u32,

    /// Pause between two measured commits, in ms.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    pub(crate) interval_ms: u64,

    /// Print the result as one JSON object on stdout.
    #[arg(long)]
    pub(crate) json: bool,

    /// Whether `--database` came from `DATABASE_URL` (set by [`super::parse`]).
    #[arg(skip)]
    pub(crate) database_from_env: bool,
}

/// Raw options of the hidden `streamid bench latency-reader`.
#[derive(Debug, Clone, Args)]
pub(crate) struct LatencyReaderArgs {
    /// The PostgreSQL database.
    #[arg(long, value_name = "URL")]
    pub(crate) database: String,

    /// notify or redis:URL.
    #[arg(long, value_name = "HOW")]
    pub(crate) transport: String,

    /// Every writer instance of the stream, comma-separated.
    #[arg(long, value_name = "A,B,...", value_delimiter = ',', required = true)]
    pub(crate) writers: Vec<String>,
}

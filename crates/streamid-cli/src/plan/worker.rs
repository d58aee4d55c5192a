//! The hidden `streamid worker write|read` subcommands: raw options become a [`WritePlan`]
//! or a [`ReadPlan`], or a [`ConfigError`]. No I/O.

use std::path::PathBuf;
use std::time::Duration;

use super::database::existing_database;
use super::{ConfigError, Load, StoreSpec, parse_duration};
use crate::cli::{ReadArgs, StreamArgs, WriteArgs};
use crate::store::Layout;

/// The longest pause between two reads of `worker read`.
const MAX_POLL_MS: u64 = 10_000;

/// How positions travel between the worker processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Replication {
    /// Not at all: only `stream_positions`, read at startup.
    None,
    /// PostgreSQL `LISTEN/NOTIFY` on the worker's own database.
    Notify,
    /// Redis pub/sub at this URL.
    Redis {
        /// `redis://...`.
        url: String,
    },
    /// Polling `stream_positions` (any backend; the cross-process way on SQLite).
    Poll,
}

/// What both workers share.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WorkerSetup {
    /// The database.
    pub(crate) store: StoreSpec,
    /// The stream and its table.
    pub(crate) layout: Layout,
    /// This process's instance.
    pub(crate) instance: String,
    /// Every writer of the stream.
    pub(crate) writers: Vec<String>,
    /// How positions travel.
    pub(crate) replication: Replication,
}

/// A validated `streamid worker write`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WritePlan {
    /// Database, stream, instance, replication.
    pub(crate) setup: WorkerSetup,
    /// How much to write (no bound: until SIGTERM or Ctrl-C), the rollback rate and the
    /// longest wait between allocating and inserting.
    pub(crate) load: Load,
    /// How often to print a progress line, if at all.
    pub(crate) report_every: Option<Duration>,
    /// Where the JSON lines go (stdout if `None`).
    pub(crate) log: Option<PathBuf>,
    /// Seed of the random choices.
    pub(crate) seed: u64,
    /// Write nothing (an idle writer) until SIGTERM or Ctrl-C.
    pub(crate) idle: bool,
    /// After the last write, keep running until SIGTERM or Ctrl-C.
    pub(crate) wait_for_signal: bool,
}

/// A validated `streamid worker read`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ReadPlan {
    /// Database, stream, instance, replication.
    pub(crate) setup: WorkerSetup,
    /// The observation log to append to.
    pub(crate) observations: PathBuf,
    /// Also tail with multi-writer tokens.
    pub(crate) tokens: bool,
    /// Stop after the stream was idle this long.
    pub(crate) until_idle: Option<Duration>,
    /// Stop after this long.
    pub(crate) duration: Option<Duration>,
    /// Pause between two rounds.
    pub(crate) poll: Duration,
    /// Retry rounds that failed with a database error.
    pub(crate) keep_going: bool,
}

impl WritePlan {
    /// Validates raw arguments; `seed` is used when `--seed` is absent.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`].
    pub(crate) fn from_args(args: &WriteArgs, seed: u64) -> Result<WritePlan, ConfigError> {
        let setup = WorkerSetup::from_args(&args.stream)?;
        if !setup.writers.contains(&setup.instance) {
            return Err(invalid(
                "--instance",
                &setup.instance,
                "a writer must be one of --writers",
            ));
        }
        let load = Load::from_args(&args.load, None)?;
        let report_every = match args.report_every_ms {
            Some(0) => {
                return Err(invalid("--report-every-ms", "0", "must be at least 1"));
            }
            ms => ms.map(Duration::from_millis),
        };
        Ok(WritePlan {
            setup,
            load,
            report_every,
            log: args.log.clone(),
            seed: args.seed.unwrap_or(seed),
            idle: args.idle,
            wait_for_signal: args.wait_for_signal,
        })
    }
}

impl ReadPlan {
    /// Validates raw arguments.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`].
    pub(crate) fn from_args(args: &ReadArgs) -> Result<ReadPlan, ConfigError> {
        let setup = WorkerSetup::from_args(&args.stream)?;
        if setup.writers.contains(&setup.instance) {
            return Err(invalid(
                "--instance",
                &setup.instance,
                "a reader must not be one of --writers",
            ));
        }
        if args.poll_ms == 0 || args.poll_ms > MAX_POLL_MS {
            return Err(invalid(
                "--poll-ms",
                &args.poll_ms.to_string(),
                "must be between 1 and 10000",
            ));
        }
        Ok(ReadPlan {
            setup,
            observations: args.observations.clone(),
            tokens: args.tokens,
            until_idle: duration_option("--until-idle", args.until_idle.as_deref())?,
            duration: args.duration.as_deref().map(parse_duration).transpose()?,
            poll: Duration::from_millis(args.poll_ms),
            keep_going: args.keep_going,
        })
    }
}

impl WorkerSetup {
    /// Checks the names by the library's own rules (the stream configuration every
    /// process of the run will use), the database and the replication.
    fn from_args(args: &StreamArgs) -> Result<WorkerSetup, ConfigError> {
        let store = existing_database(&args.target.database)?;
        let layout = Layout::new(&args.target.stream, &args.table)?;
        layout
            .config(&args.instance, &args.writers)
            .check()
            .map_err(ConfigError::from_library)?;
        let replication = replication(&args.replication, &store)?;
        Ok(WorkerSetup {
            store,
            layout,
            instance: args.instance.clone(),
            writers: args.writers.clone(),
            replication,
        })
    }
}

fn replication(value: &str, store: &StoreSpec) -> Result<Replication, ConfigError> {
    let replication = match value.trim() {
        "none" => Replication::None,
        "notify" => Replication::Notify,
        "poll" => Replication::Poll,
        other => match other.strip_prefix("redis:") {
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                Replication::Redis {
                    url: url.to_owned(),
                }
            }
            _ => {
                return Err(invalid(
                    "--replication",
                    value,
                    "use notify, redis:redis://HOST:PORT, poll or none",
                ));
            }
        },
    };
    if replication == Replication::Notify && matches!(store, StoreSpec::Sqlite { .. }) {
        return Err(invalid(
            "--replication",
            value,
            "LISTEN/NOTIFY needs PostgreSQL: on SQLite use poll (or redis:URL)",
        ));
    }
    Ok(replication)
}

fn duration_option(
    option: &'static str,
    value: Option<&str>,
) -> Result<Option<Duration>, ConfigError> {
    value
        .map(|v| {
            parse_duration(v).map_err(|e| match e {
                ConfigError::Duration { value, problem } => ConfigError::Invalid {
                    option,
                    value,
                    problem,
                },
                other => other,
            })
        })
        .transpose()
}

fn invalid(option: &'static str, value: &str, problem: &str) -> ConfigError {
    ConfigError::Invalid {
        option,
        value: value.to_owned(),
        problem: problem.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{LoadArgs, TargetArgs};

    fn stream(database: &str, instance: &str, replication: &str) -> StreamArgs {
        StreamArgs {
            target: TargetArgs {
                database: database.into(),
                stream: "s".into(),
            },
            table: "events".into(),
            instance: instance.into(),
            writers: vec!["a".into(), "b".into()],
            replication: replication.into(),
        }
    }

    fn write(stream: StreamArgs) -> WriteArgs {
        WriteArgs {
            stream,
            load: LoadArgs {
                rows: Some(10),
                duration: None,
                rollback_rate: 0.1,
                max_delay_ms: 5,
            },
            report_every_ms: None,
            log: None,
            seed: None,
            idle: false,
            wait_for_signal: false,
        }
    }

    fn read(stream: StreamArgs) -> ReadArgs {
        ReadArgs {
            stream,
            observations: "o.jsonl".into(),
            tokens: true,
            until_idle: Some("2s".into()),
            duration: None,
            poll_ms: 2,
            keep_going: false,
        }
    }

    const PG: &str = "postgres://u@h/db";

    #[test]
    fn writers_write_and_readers_read() {
        let plan = WritePlan::from_args(&write(stream(PG, "a", "notify")), 9).unwrap();
        assert_eq!(plan.setup.replication, Replication::Notify);
        assert_eq!(plan.seed, 9);
        assert_eq!(plan.setup.layout.sequence(), "events_seq");
        let err = WritePlan::from_args(&write(stream(PG, "r", "none")), 9).unwrap_err();
        assert!(err.to_string().contains("one of --writers"), "{err}");
        let plan =
            ReadPlan::from_args(&read(stream(PG, "r", "redis:redis://127.0.0.1:1"))).unwrap();
        assert_eq!(
            plan.setup.replication,
            Replication::Redis {
                url: "redis://127.0.0.1:1".into()
            }
        );
        assert_eq!(plan.until_idle, Some(Duration::from_secs(2)));
        let err = ReadPlan::from_args(&read(stream(PG, "a", "none"))).unwrap_err();
        assert!(err.to_string().contains("must not be one of"), "{err}");
    }

    #[test]
    fn replication_must_suit_the_backend() {
        let sqlite = "sqlite:/tmp/w.db";
        let err = WritePlan::from_args(&write(stream(sqlite, "a", "notify")), 1).unwrap_err();
        assert!(err.to_string().contains("poll"), "{err}");
        assert!(WritePlan::from_args(&write(stream(sqlite, "a", "poll")), 1).is_ok());
        for bad in ["redis", "redis:", "carrier-pigeon", "redis:http://x"] {
            assert!(
                WritePlan::from_args(&write(stream(PG, "a", bad)), 1).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_and_values_are_checked() {
        let mut args = write(stream(PG, "a", "none"));
        args.stream.table = "no good".into();
        let err = WritePlan::from_args(&args, 1).unwrap_err();
        assert!(err.to_string().starts_with("--table "), "{err}");
        let mut args = write(stream(PG, "a", "none"));
        args.stream.writers = vec!["a".into(), "a".into()];
        let err = WritePlan::from_args(&args, 1).unwrap_err();
        assert!(err.to_string().starts_with("--writers "), "{err}");
        let mut args = read(stream(PG, "r", "none"));
        args.stream.target.stream = String::new();
        let err = ReadPlan::from_args(&args).unwrap_err();
        assert!(err.to_string().starts_with("--stream "), "{err}");
        let mut args = write(stream(PG, "a", "none"));
        args.load.rows = Some(0);
        assert_eq!(WritePlan::from_args(&args, 1), Err(ConfigError::ZeroRows));
        let mut args = read(stream(PG, "r", "none"));
        args.until_idle = Some("soon".into());
        let err = ReadPlan::from_args(&args).unwrap_err();
        assert!(err.to_string().starts_with("--until-idle "), "{err}");
    }
}

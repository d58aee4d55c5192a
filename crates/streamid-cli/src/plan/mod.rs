//! Stage two of parsing: raw [`DemoArgs`] become a validated [`DemoPlan`], or a typed
//! [`ConfigError`].
//!
//! Everything the demo needs to know before it touches a database is checked here, so the
//! runtime code never re-validates and a usage mistake never costs a server start. This
//! module performs no I/O and reads no environment (clap already read `DATABASE_URL`).

use std::fmt;
use std::time::Duration;

use crate::cli::{DemoArgs, LoadArgs};

mod audit;
mod bench;
mod database;
mod worker;

pub(crate) use audit::{GapsPlan, VerifyPlan};
pub(crate) use bench::{BenchTransport, LatencyPlan, LatencyReaderPlan};
pub(crate) use database::{StoreSpec, redact};
pub(crate) use worker::{ReadPlan, Replication, WorkerSetup, WritePlan};

/// The most writer tasks the demo runs (each holds a connection while it writes).
pub(crate) const MAX_WRITERS: u32 = 64;
/// The longest random delay between allocating an ID and writing its row.
pub(crate) const MAX_DELAY_MS: u64 = 10_000;
/// The longest run `--duration` accepts.
pub(crate) const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Rows written when neither `--rows` nor `--duration` is given.
pub(crate) const DEFAULT_ROWS: u64 = 2000;

/// A validated `streamid demo` run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DemoPlan {
    /// Writer tasks, each with its own generator instance (`writer-1` … `writer-N`).
    pub(crate) writers: usize,
    /// When the writers stop.
    pub(crate) bound: Bound,
    /// Probability in `[0, 1]` that a write rolls back instead of committing.
    pub(crate) rollback_rate: f64,
    /// Upper bound of the random delay between allocating an ID and writing its row.
    pub(crate) max_delay: Duration,
    /// Where the stream lives.
    pub(crate) store: StoreSpec,
    /// Print the final report as one JSON object instead of text.
    pub(crate) json: bool,
    /// Suppress the live view and the periodic progress lines.
    pub(crate) quiet: bool,
    /// Seed of the writers' random delays and rollback decisions.
    pub(crate) seed: u64,
}

/// When the writers stop: after `rows` writes, after `duration`, or whichever comes first.
/// At least one of the two is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bound {
    /// Writes (committed or rolled back) across all writers.
    pub(crate) rows: Option<u64>,
    /// Wall-clock time of the writing phase.
    pub(crate) duration: Option<Duration>,
}

/// A command line that parses but asks for something the demo cannot do (exit code 2).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ConfigError {
    /// `--writers` is outside `1..=MAX_WRITERS`.
    Writers(u32),
    /// `--rollback-rate` is outside `[0, 1]` (or not a number).
    RollbackRate(f64),
    /// `--rows 0`.
    ZeroRows,
    /// `--duration` does not parse or is out of range.
    Duration {
        /// The value given.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// `--max-delay-ms` is above [`MAX_DELAY_MS`].
    MaxDelay(u64),
    /// `--database` names no backend the demo knows.
    DatabaseUrl {
        /// The value given, with any password hidden.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// `--postgres-temp` and `--database` were both given.
    ConflictingDatabase,
    /// Any other option value that cannot work (a name the library rejects, a replication
    /// the backend does not offer, ...).
    Invalid {
        /// The option, e.g. `--table`.
        option: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
}

impl ConfigError {
    /// The library's verdict on a name, as the option that carried it.
    pub(crate) fn from_library(err: streamid::Error) -> ConfigError {
        match err {
            streamid::Error::InvalidConfig { field, value, rule } => ConfigError::Invalid {
                option: match field {
                    "table" => "--table",
                    "instance_column" => "--instance-column",
                    "id_column" => "--id-column",
                    "stream" => "--stream",
                    "instance" => "--instance",
                    "writers" => "--writers",
                    _ => "option",
                },
                value,
                problem: rule,
            },
            other => ConfigError::Invalid {
                option: "option",
                value: String::new(),
                problem: other.to_string(),
            },
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Writers(n) => {
                write!(f, "--writers {n}: must be between 1 and {MAX_WRITERS}")
            }
            ConfigError::RollbackRate(r) => {
                write!(f, "--rollback-rate {r}: must be between 0 and 1")
            }
            ConfigError::ZeroRows => f.write_str("--rows 0: must be at least 1"),
            ConfigError::Duration { value, problem } => {
                write!(f, "--duration {value:?}: {problem}")
            }
            ConfigError::MaxDelay(ms) => {
                write!(f, "--max-delay-ms {ms}: must be at most {MAX_DELAY_MS}")
            }
            ConfigError::DatabaseUrl { value, problem } => {
                write!(f, "--database {value:?}: {problem}")
            }
            ConfigError::ConflictingDatabase => f.write_str(
                "--postgres-temp and --database cannot be used together: pick one database",
            ),
            ConfigError::Invalid {
                option,
                value,
                problem,
            } => write!(f, "{option} {value:?}: {problem}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl DemoPlan {
    /// Validates raw arguments. `seed` is used when `--seed` is absent (the caller draws it,
    /// keeping this function deterministic).
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`] found, in the order of the options in `--help`.
    pub(crate) fn from_args(args: &DemoArgs, seed: u64) -> Result<DemoPlan, ConfigError> {
        if args.writers == 0 || args.writers > MAX_WRITERS {
            return Err(ConfigError::Writers(args.writers));
        }
        let load = Load::from_args(&args.load, Some(DEFAULT_ROWS))?;
        Ok(DemoPlan {
            writers: args.writers as usize,
            bound: load.bound,
            rollback_rate: load.rollback_rate,
            max_delay: load.max_delay,
            store: database::store_spec(args)?,
            json: args.json,
            quiet: args.quiet,
            seed: args.seed.unwrap_or(seed),
        })
    }
}

/// Validated [`LoadArgs`]: how much and how writers write.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Load {
    /// When the writers stop.
    pub(crate) bound: Bound,
    /// Probability in `[0, 1]` that a write rolls back.
    pub(crate) rollback_rate: f64,
    /// Upper bound of the random wait between allocating an ID and writing its row.
    pub(crate) max_delay: Duration,
}

impl Load {
    /// Validates `args`; `default_rows` bounds the run when neither `--rows` nor
    /// `--duration` is given (`None`: unbounded).
    pub(super) fn from_args(
        args: &LoadArgs,
        default_rows: Option<u64>,
    ) -> Result<Load, ConfigError> {
        let duration = args.duration.as_deref().map(parse_duration).transpose()?;
        let rows = match (args.rows, duration) {
            (Some(0), _) => return Err(ConfigError::ZeroRows),
            (Some(rows), _) => Some(rows),
            (None, None) => default_rows,
            (None, Some(_)) => None,
        };
        if !(0.0..=1.0).contains(&args.rollback_rate) {
            return Err(ConfigError::RollbackRate(args.rollback_rate));
        }
        if args.max_delay_ms > MAX_DELAY_MS {
            return Err(ConfigError::MaxDelay(args.max_delay_ms));
        }
        Ok(Load {
            bound: Bound { rows, duration },
            rollback_rate: args.rollback_rate,
            max_delay: Duration::from_millis(args.max_delay_ms),
        })
    }
}

/// Parses `90`, `90s`, `1.5s`, `500ms`, `2m` or `1h` (a bare number is seconds).
pub(super) fn parse_duration(value: &str) -> Result<Duration, ConfigError> {
    let bad = |problem: &str| ConfigError::Duration {
        value: value.to_owned(),
        problem: problem.to_owned(),
    };
    let text = value.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| bad("expected a number with a unit, e.g. 10s, 500ms, 2m or 1h"))?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad("unknown unit: use ms, s, m or h")),
    };
    let seconds = number * scale;
    if seconds <= 0.0 {
        return Err(bad("must be positive"));
    }
    if seconds > MAX_DURATION.as_secs_f64() {
        return Err(bad("must be at most 24h"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> DemoArgs {
        DemoArgs {
            writers: 4,
            load: LoadArgs {
                rows: None,
                duration: None,
                rollback_rate: 0.05,
                max_delay_ms: 20,
            },
            database: None,
            postgres_temp: true,
            json: false,
            quiet: false,
            seed: None,
            database_from_env: false,
        }
    }

    fn plan(change: impl FnOnce(&mut DemoArgs)) -> Result<DemoPlan, ConfigError> {
        let mut a = args();
        change(&mut a);
        DemoPlan::from_args(&a, 7)
    }

    #[test]
    fn defaults_make_a_valid_plan() {
        let p = plan(|_| {}).unwrap();
        assert_eq!(p.writers, 4);
        assert_eq!(p.bound.rows, Some(DEFAULT_ROWS));
        assert_eq!(p.bound.duration, None);
        assert_eq!(p.max_delay, Duration::from_millis(20));
        assert_eq!(p.store, StoreSpec::PostgresTemp);
        assert_eq!(p.seed, 7);
    }

    #[test]
    fn writers_must_be_in_range() {
        assert_eq!(plan(|a| a.writers = 0), Err(ConfigError::Writers(0)));
        assert_eq!(plan(|a| a.writers = 65), Err(ConfigError::Writers(65)));
        assert_eq!(plan(|a| a.writers = 1).unwrap().writers, 1);
        assert_eq!(plan(|a| a.writers = 64).unwrap().writers, 64);
    }

    #[test]
    fn rollback_rate_must_be_a_probability() {
        for bad in [2.0, -0.1, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                plan(|a| a.load.rollback_rate = bad),
                Err(ConfigError::RollbackRate(_))
            ));
        }
        for good in [0.0, 0.5, 1.0] {
            assert_eq!(
                plan(|a| a.load.rollback_rate = good).unwrap().rollback_rate,
                good
            );
        }
    }

    #[test]
    fn rows_and_duration_bound_the_run() {
        assert_eq!(plan(|a| a.load.rows = Some(0)), Err(ConfigError::ZeroRows));
        let p = plan(|a| a.load.duration = Some("10s".into())).unwrap();
        assert_eq!(p.bound.rows, None, "--duration alone is not capped by rows");
        assert_eq!(p.bound.duration, Some(Duration::from_secs(10)));
        let p = plan(|a| {
            a.load.rows = Some(5);
            a.load.duration = Some("1m".into());
        })
        .unwrap();
        assert_eq!(p.bound.rows, Some(5));
        assert_eq!(p.bound.duration, Some(Duration::from_secs(60)));
    }

    #[test]
    fn durations_parse_with_units() {
        let ok = |s: &str| parse_duration(s).unwrap();
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("10"), Duration::from_secs(10));
        assert_eq!(ok("1.5s"), Duration::from_millis(1500));
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("2m"), Duration::from_secs(120));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        for bad in ["", "s", "10x", "0s", "-1s", "25h", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn max_delay_is_bounded() {
        assert_eq!(
            plan(|a| a.load.max_delay_ms = 10_001),
            Err(ConfigError::MaxDelay(10_001))
        );
        assert_eq!(
            plan(|a| a.load.max_delay_ms = 0).unwrap().max_delay,
            Duration::ZERO
        );
    }

    #[test]
    fn errors_are_one_line() {
        let errors = [
            ConfigError::Writers(0),
            ConfigError::RollbackRate(2.0),
            ConfigError::ZeroRows,
            ConfigError::ConflictingDatabase,
        ];
        for e in errors {
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}

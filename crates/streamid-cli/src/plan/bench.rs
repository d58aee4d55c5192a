//! `streamid bench latency` (and its hidden reader process): raw options become a
//! [`LatencyPlan`] or a [`LatencyReaderPlan`], or a [`ConfigError`]. No I/O.

use std::time::Duration;

use super::database::existing_database;
use super::{ConfigError, StoreSpec};
use crate::cli::{LatencyArgs, LatencyReaderArgs};

/// The most samples one run takes.
const MAX_SAMPLES: u64 = 1_000_000;
/// The most load writers (each a process with its own connections).
const MAX_LOAD_WRITERS: u32 = 32;
/// The longest pause between two measured commits.
const MAX_INTERVAL_MS: u64 = 10_000;

/// How positions travel in a latency run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BenchTransport {
    /// PostgreSQL `LISTEN/NOTIFY` on the run's database.
    Notify,
    /// Redis pub/sub at this URL.
    Redis {
        /// `redis://...`.
        url: String,
    },
    /// A throwaway `redis-server` started for the run.
    RedisTemp,
    /// The in-process transport: measuring writer, load writers and reader in one process.
    InProcess,
}

impl BenchTransport {
    /// The name reports use.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            BenchTransport::Notify => "notify",
            BenchTransport::Redis { .. } | BenchTransport::RedisTemp => "redis",
            BenchTransport::InProcess => "in-process",
        }
    }
}

/// A validated `streamid bench latency`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LatencyPlan {
    /// PostgreSQL: a throwaway cluster or the user's server.
    pub(crate) store: StoreSpec,
    /// How positions travel.
    pub(crate) transport: BenchTransport,
    /// Commits to measure.
    pub(crate) samples: u64,
    /// Writers committing continuously meanwhile.
    pub(crate) load_writers: u32,
    /// Pause between two measured commits.
    pub(crate) interval: Duration,
    /// Print JSON.
    pub(crate) json: bool,
}

/// A validated `streamid bench latency-reader`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LatencyReaderPlan {
    /// The database's URL.
    pub(crate) url: String,
    /// `Notify` or `Redis` (the parent resolved `redis-temp` to a URL).
    pub(crate) transport: BenchTransport,
    /// Every writer of the stream.
    pub(crate) writers: Vec<String>,
}

impl LatencyPlan {
    /// Validates raw arguments.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`].
    pub(crate) fn from_args(args: &LatencyArgs) -> Result<LatencyPlan, ConfigError> {
        let database = args.database.as_deref().map(str::trim);
        let store = match (args.postgres_temp, database) {
            (true, Some(_)) if !args.database_from_env => {
                return Err(ConfigError::ConflictingDatabase);
            }
            (true, _) => StoreSpec::PostgresTemp,
            (false, None) => {
                return Err(invalid(
                    "--database",
                    "",
                    "missing: give --database postgres://... or --postgres-temp",
                ));
            }
            (false, Some(url)) => StoreSpec::Postgres {
                url: postgres_url(url)?,
            },
        };
        if args.samples == 0 || args.samples > MAX_SAMPLES {
            return Err(invalid(
                "--samples",
                &args.samples.to_string(),
                "must be between 1 and 1000000",
            ));
        }
        if args.load_writers > MAX_LOAD_WRITERS {
            return Err(invalid(
                "--load-writers",
                &args.load_writers.to_string(),
                "must be at most 32",
            ));
        }
        if args.interval_ms > MAX_INTERVAL_MS {
            return Err(invalid(
                "--interval-ms",
                &args.interval_ms.to_string(),
                "must be at most 10000",
            ));
        }
        Ok(LatencyPlan {
            store,
            transport: transport(&args.transport, true)?,
            samples: args.samples,
            load_writers: args.load_writers,
            interval: Duration::from_millis(args.interval_ms),
            json: args.json,
        })
    }
}

impl LatencyReaderPlan {
    /// Validates raw arguments.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`].
    pub(crate) fn from_args(args: &LatencyReaderArgs) -> Result<LatencyReaderPlan, ConfigError> {
        Ok(LatencyReaderPlan {
            url: postgres_url(&args.database)?,
            transport: transport(&args.transport, false)?,
            writers: args.writers.clone(),
        })
    }
}

/// A PostgreSQL database's URL (the benchmark needs a sequence and LISTEN/NOTIFY).
fn postgres_url(url: &str) -> Result<String, ConfigError> {
    match existing_database(url)? {
        StoreSpec::Postgres { url } => Ok(url),
        _ => Err(invalid(
            "--database",
            url,
            "the benchmark needs PostgreSQL: use postgres://... or --postgres-temp",
        )),
    }
}

/// `notify`, `redis:URL`, and for the parent also `redis-temp` and `in-process`.
fn transport(value: &str, parent: bool) -> Result<BenchTransport, ConfigError> {
    let transport = match value.trim() {
        "notify" => BenchTransport::Notify,
        "redis-temp" if parent => BenchTransport::RedisTemp,
        "in-process" if parent => BenchTransport::InProcess,
        other => match other.strip_prefix("redis:") {
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                BenchTransport::Redis {
                    url: url.to_owned(),
                }
            }
            _ => {
                return Err(invalid(
                    "--transport",
                    value,
                    "use notify, redis:redis://HOST:PORT, redis-temp or in-process",
                ));
            }
        },
    };
    Ok(transport)
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

    fn args(database: Option<&str>, postgres_temp: bool, transport: &str) -> LatencyArgs {
        LatencyArgs {
            database: database.map(str::to_owned),
            postgres_temp,
            transport: transport.into(),
            samples: 100,
            load_writers: 2,
            interval_ms: 5,
            json: true,
            database_from_env: false,
        }
    }

    #[test]
    fn picks_the_database_and_the_transport() {
        let plan = LatencyPlan::from_args(&args(None, true, "redis-temp")).unwrap();
        assert_eq!(plan.store, StoreSpec::PostgresTemp);
        assert_eq!(plan.transport, BenchTransport::RedisTemp);
        assert_eq!(plan.interval, Duration::from_millis(5));
        let plan =
            LatencyPlan::from_args(&args(Some("postgres://u@h/d"), false, "redis:redis://h:1"))
                .unwrap();
        assert_eq!(
            plan.transport,
            BenchTransport::Redis {
                url: "redis://h:1".into()
            }
        );
        assert_eq!(plan.transport.name(), "redis");
        let mut from_env = args(Some("postgres://u@h/d"), true, "in-process");
        from_env.database_from_env = true;
        assert_eq!(
            LatencyPlan::from_args(&from_env).unwrap().store,
            StoreSpec::PostgresTemp
        );
    }

    #[test]
    fn rejects_bad_options() {
        let bad = [
            args(None, false, "notify"),
            args(Some("postgres://u@h/d"), true, "notify"),
            args(Some("sqlite:x.db"), false, "notify"),
            args(None, true, "carrier-pigeon"),
            args(None, true, "redis:http://x"),
        ];
        for a in bad {
            assert!(LatencyPlan::from_args(&a).is_err(), "{a:?}");
        }
        let mut a = args(None, true, "notify");
        a.samples = 0;
        assert!(LatencyPlan::from_args(&a).is_err());
        let reader = LatencyReaderArgs {
            database: "postgres://u@h/d".into(),
            transport: "in-process".into(),
            writers: vec!["w".into()],
        };
        assert!(LatencyReaderPlan::from_args(&reader).is_err());
    }
}

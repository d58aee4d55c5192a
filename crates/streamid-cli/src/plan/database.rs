//! Which database `--database`, `DATABASE_URL` and `--postgres-temp` select: a
//! [`StoreSpec`], checked without connecting. Also hides passwords in anything printed.

use std::path::PathBuf;

use super::ConfigError;
use crate::cli::DemoArgs;

/// The database the demo runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreSpec {
    /// A throwaway PostgreSQL cluster started through `streamid-testkit` (`--postgres-temp`).
    PostgresTemp,
    /// An existing PostgreSQL server (`--database postgres://...` or `DATABASE_URL`).
    Postgres {
        /// The connection URL or key-value string, as given.
        url: String,
    },
    /// An SQLite file (`--database sqlite:PATH`).
    Sqlite {
        /// The database file.
        path: PathBuf,
    },
    /// An SQLite file in a temporary directory (the default).
    SqliteTemp,
}

/// Picks the database: `--postgres-temp` wins over a `DATABASE_URL` from the environment,
/// but not over an explicit `--database`.
pub(super) fn store_spec(args: &DemoArgs) -> Result<StoreSpec, ConfigError> {
    let database = args.database.as_deref().map(str::trim);
    match (args.postgres_temp, database) {
        (true, Some(_)) if !args.database_from_env => Err(ConfigError::ConflictingDatabase),
        (true, _) => Ok(StoreSpec::PostgresTemp),
        (false, None) => Ok(StoreSpec::SqliteTemp),
        (false, Some("")) => Err(bad_url("", "empty; use postgres://... or sqlite:PATH")),
        (false, Some(url)) => parse_database(url),
    }
}

/// The database of a subcommand that needs an existing one (`verify`, `gaps`, the
/// workers): `postgres://...`, a key-value string or `sqlite:PATH`.
pub(super) fn existing_database(value: &str) -> Result<StoreSpec, ConfigError> {
    match value.trim() {
        "" => Err(bad_url("", "empty; use postgres://... or sqlite:PATH")),
        url => parse_database(url),
    }
}

fn parse_database(url: &str) -> Result<StoreSpec, ConfigError> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err(bad_url(url, "no file: use sqlite:PATH"));
        }
        return Ok(StoreSpec::Sqlite { path: path.into() });
    }
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let is_key_value = !url.contains("://") && url.contains('=');
    if !is_url && !is_key_value {
        return Err(bad_url(
            url,
            "unsupported database: use postgres://..., a key=value connection string, \
             or sqlite:PATH",
        ));
    }
    match url.parse::<tokio_postgres::Config>() {
        Ok(_) => Ok(StoreSpec::Postgres {
            url: url.to_owned(),
        }),
        Err(e) => Err(bad_url(url, &format!("not a valid PostgreSQL URL: {e}"))),
    }
}

fn bad_url(url: &str, problem: &str) -> ConfigError {
    ConfigError::DatabaseUrl {
        value: redact(url),
        problem: problem.to_owned(),
    }
}

/// `url` with the password of a `scheme://user:password@host` URL replaced by `***`, and
/// `password=...` of a key-value string likewise.
pub(crate) fn redact(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let start = scheme_end + 3;
            return format!("{}***{}", &url[..start + colon + 1], &url[start + at..]);
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|part| match part.split_once('=') {
            Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> DemoArgs {
        DemoArgs {
            writers: 4,
            load: crate::cli::LoadArgs {
                rows: None,
                duration: None,
                rollback_rate: 0.05,
                max_delay_ms: 20,
            },
            database: None,
            postgres_temp: false,
            json: false,
            quiet: false,
            seed: None,
            database_from_env: false,
        }
    }

    #[test]
    fn database_choice() {
        let url = "postgres://u:secret@localhost:5432/db";
        let spec = |temp: bool, db: Option<&str>, env: bool| {
            let mut a = args();
            a.postgres_temp = temp;
            a.database = db.map(str::to_owned);
            a.database_from_env = env;
            store_spec(&a)
        };
        assert_eq!(spec(false, None, false), Ok(StoreSpec::SqliteTemp));
        assert_eq!(
            spec(false, Some(url), false),
            Ok(StoreSpec::Postgres { url: url.into() })
        );
        assert_eq!(
            spec(false, Some("host=/tmp dbname=x"), true),
            Ok(StoreSpec::Postgres {
                url: "host=/tmp dbname=x".into()
            })
        );
        assert_eq!(
            spec(false, Some("sqlite:/tmp/demo.db"), false),
            Ok(StoreSpec::Sqlite {
                path: "/tmp/demo.db".into()
            })
        );
        assert_eq!(spec(true, Some(url), true), Ok(StoreSpec::PostgresTemp));
        assert_eq!(
            spec(true, Some(url), false),
            Err(ConfigError::ConflictingDatabase)
        );
        assert!(matches!(
            spec(false, Some("mysql://x"), false),
            Err(ConfigError::DatabaseUrl { .. })
        ));
        assert!(matches!(
            spec(false, Some("sqlite:"), false),
            Err(ConfigError::DatabaseUrl { .. })
        ));
        match spec(false, Some("postgres://u:secret@h:notaport/db"), false) {
            Err(e @ ConfigError::DatabaseUrl { .. }) => {
                assert!(!e.to_string().contains("secret"), "{e}");
            }
            other => panic!("expected a URL error, got {other:?}"),
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db?x=a@b"), "postgres://h/db?x=a@b");
        assert_eq!(
            redact("host=h password=pw user=u"),
            "host=h password=*** user=u"
        );
    }
}

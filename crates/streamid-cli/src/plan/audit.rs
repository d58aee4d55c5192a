//! `streamid verify` and `streamid gaps`: raw options become a [`VerifyPlan`] or a
//! [`GapsPlan`], or a [`ConfigError`]. No I/O.

use std::path::PathBuf;

use streamid::{Audit, StreamTable};

use super::ConfigError;
use super::database::existing_database;
use crate::cli::{GapsArgs, VerifyArgs};
use crate::plan::StoreSpec;

/// A validated `streamid verify` run.
#[derive(Debug, Clone)]
pub(crate) struct VerifyPlan {
    /// The database (PostgreSQL or an SQLite file).
    pub(crate) store: StoreSpec,
    /// The stream's name.
    pub(crate) stream: String,
    /// The audit: table, direction, strictness.
    pub(crate) audit: Audit,
    /// The observation files, in the order given.
    pub(crate) observations: Vec<PathBuf>,
    /// Print JSON instead of text.
    pub(crate) json: bool,
}

/// A validated `streamid gaps` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GapsPlan {
    /// The database (PostgreSQL or an SQLite file).
    pub(crate) store: StoreSpec,
    /// The stream's name.
    pub(crate) stream: String,
    /// How many recent events to show.
    pub(crate) events: u32,
    /// Print JSON instead of text.
    pub(crate) json: bool,
}

impl VerifyPlan {
    /// Validates raw arguments: the database URL, and the table and column names by the
    /// library's own rules.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`].
    pub(crate) fn from_args(args: &VerifyArgs) -> Result<VerifyPlan, ConfigError> {
        let store = existing_database(&args.target.database)?;
        let table = StreamTable::new(&args.table, &args.instance_column, &args.id_column)
            .map_err(ConfigError::from_library)?;
        let audit = Audit::new(table)
            .backwards(args.backwards)
            .allow_shared_ids(args.allow_shared_ids)
            .max_violations(args.max_violations);
        Ok(VerifyPlan {
            store,
            stream: args.target.stream.clone(),
            audit,
            observations: args.observations.clone(),
            json: args.json,
        })
    }
}

impl GapsPlan {
    /// Validates raw arguments.
    ///
    /// # Errors
    ///
    /// The first [`ConfigError`].
    pub(crate) fn from_args(args: &GapsArgs) -> Result<GapsPlan, ConfigError> {
        Ok(GapsPlan {
            store: existing_database(&args.target.database)?,
            stream: args.target.stream.clone(),
            events: args.events,
            json: args.json,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::TargetArgs;

    fn verify_args() -> VerifyArgs {
        VerifyArgs {
            target: TargetArgs {
                database: "sqlite:/tmp/x.db".into(),
                stream: "s".into(),
            },
            table: "events".into(),
            instance_column: "instance_name".into(),
            id_column: "id".into(),
            backwards: false,
            allow_shared_ids: false,
            observations: vec!["o.jsonl".into()],
            max_violations: 20,
            json: false,
        }
    }

    #[test]
    fn verify_checks_names_with_the_library() {
        let plan = VerifyPlan::from_args(&verify_args()).unwrap();
        assert_eq!(
            plan.store,
            StoreSpec::Sqlite {
                path: "/tmp/x.db".into()
            }
        );
        let mut bad = verify_args();
        bad.id_column = "id; DROP TABLE x".into();
        let err = VerifyPlan::from_args(&bad).unwrap_err();
        assert!(err.to_string().starts_with("--id-column "), "{err}");
        let mut bad = verify_args();
        bad.target.database = "mysql://x".into();
        assert!(matches!(
            VerifyPlan::from_args(&bad),
            Err(ConfigError::DatabaseUrl { .. })
        ));
    }

    #[test]
    fn gaps_needs_a_database_url() {
        let args = GapsArgs {
            target: TargetArgs {
                database: String::new(),
                stream: "s".into(),
            },
            events: 5,
            json: true,
        };
        assert!(matches!(
            GapsPlan::from_args(&args),
            Err(ConfigError::DatabaseUrl { .. })
        ));
    }
}

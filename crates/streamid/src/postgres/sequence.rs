//! Creating a stream's sequence correctly (spec §10.4).

use tokio_postgres::GenericClient;
use tokio_postgres::types::Type;

use crate::config::ValidConfig;
use crate::postgres::statements::Statements;
use crate::{Error, StreamConfig};

/// Creates the stream's sequence if it is missing and places it above every existing row
/// and at least at 1, so the first ID handed out is 2 on an empty stream (spec §10.3).
///
/// Run it during schema set-up, before writers start. Running it again never moves the
/// sequence back. It never uses `START WITH`/`RESTART WITH`, whose `is_called = false` state
/// made the original treat an unallocated ID as persisted (upstream #18712). The backing
/// tables must exist.
///
/// # Errors
///
/// [`Error::InvalidConfig`] for a bad configuration; [`Error::MissingObject`] if a backing
/// table or column is missing; [`Error::Database`] otherwise.
///
/// # Examples
///
/// ```no_run
/// # async fn example(pool: deadpool_postgres::Pool) -> Result<(), streamid::Error> {
/// use streamid::{StreamConfig, create_sequence};
///
/// let config = StreamConfig::new("events", "writer-1")
///     .table("events", "instance_name", "stream_ordering")
///     .sequence("events_stream_seq");
/// let client = pool.get().await?;
/// create_sequence(&**client, &config).await?;
/// # Ok(())
/// # }
/// ```
pub async fn create_sequence<C>(client: &C, config: &StreamConfig) -> Result<(), Error>
where
    C: GenericClient + Sync,
{
    let config = config.validate(true)?;
    let statements = statements_for(&config)?;
    client
        .batch_execute(&statements.create_sequence)
        .await
        .map_err(Error::db("create the sequence"))?;
    let table_max = super::startup::table_maxima(client, &config, &statements)
        .await?
        .0;
    client
        .query_typed(&statements.place_sequence, &[(&table_max, Type::INT8)])
        .await
        .map_err(Error::db("place the sequence above existing rows"))?;
    Ok(())
}

pub(crate) fn statements_for(config: &ValidConfig) -> Result<Statements, Error> {
    match &config.sequence {
        Some(seq) => Ok(Statements::new(config, seq)),
        None => Err(Error::InvalidConfig {
            field: "sequence",
            value: String::new(),
            rule: "a sequence is required on PostgreSQL: add .sequence(name)".to_owned(),
        }),
    }
}

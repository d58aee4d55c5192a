//! The hidden `streamid worker write|read` subcommands: one writer or one reader per
//! process, for multi-process tests, fault injection and soak runs.
//!
//! Both start the same way ([`start`]): open the database, create the stream's table if
//! missing (idempotent, safe when several workers start at once), start a generator for
//! the instance, and replicate positions as `--replication` says. Both stop cleanly on
//! SIGTERM or Ctrl-C: work in flight finishes, the generator flushes its position and gap
//! ledger, and a final `done` line is printed.

mod poll;
mod read;
mod write;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use streamid::MultiWriterIdGenerator;
use streamid::replication::PgNotify;

use crate::plan::{Replication, StoreSpec, WorkerSetup};
use crate::store::Store;

pub(crate) use read::run as read;
pub(crate) use write::run as write;

/// How often `--replication poll` reads `stream_positions`.
const POLL_POSITIONS: Duration = Duration::from_millis(20);

/// Opens the store, ensures the table exists, starts the generator of the instance and its
/// replication.
async fn start(setup: &WorkerSetup, purpose: &str) -> Result<(Arc<Store>, MultiWriterIdGenerator)> {
    let store = Store::open(&setup.store, setup.layout.clone(), 1, purpose).await?;
    let store = Arc::new(store);
    store.ensure_schema().await?;
    let generator = store.generator(&setup.instance, &setup.writers).await?;
    match &setup.replication {
        Replication::None => {}
        Replication::Notify => {
            let StoreSpec::Postgres { url } = &setup.store else {
                bail!("--replication notify needs PostgreSQL");
            };
            let config: tokio_postgres::Config = url
                .parse()
                .context("parsing the database URL for LISTEN/NOTIFY")?;
            generator.replicate(PgNotify::new(config));
        }
        Replication::Redis { url } => {
            let redis = streamid::replication::Redis::new(url).context("--replication redis")?;
            generator.replicate(redis);
        }
        Replication::Poll => {
            generator.replicate(poll::PositionsPoll::new(Arc::clone(&store), POLL_POSITIONS));
        }
    }
    Ok((store, generator))
}

/// What a worker's "done" line reports of its generator at the end, so that a parent can
/// check that every process agrees on the final positions.
#[derive(Debug, Serialize)]
struct Final {
    /// `positions()`: every known writer position (this instance's entry is its minimal
    /// position).
    positions: BTreeMap<String, i64>,
    /// `current_token_for_writer(w)` for every writer `w` of the stream.
    writer_positions: BTreeMap<String, i64>,
    /// `current_token()`.
    current_token: i64,
    /// `max_allocated_token()`; `null` if the database could not tell (logged).
    max_allocated_token: Option<i64>,
}

impl Final {
    /// Reads them from `generator` (the database only for the last allocated ID: a
    /// failure there must not cost the "done" line).
    async fn of(generator: &MultiWriterIdGenerator, writers: &[String]) -> Final {
        let max_allocated_token = match generator.max_allocated_token().await {
            Ok(max) => Some(max),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the last allocated ID for the done line");
                None
            }
        };
        Final {
            positions: generator.positions(),
            writer_positions: writers
                .iter()
                .map(|w| (w.clone(), generator.current_token_for_writer(w)))
                .collect(),
            current_token: generator.current_token(),
            max_allocated_token,
        }
    }
}

/// Resolves at SIGTERM or Ctrl-C (SIGINT).
async fn stop_requested() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                return;
            }
            Err(e) => tracing::warn!("cannot watch for SIGTERM: {e}"),
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

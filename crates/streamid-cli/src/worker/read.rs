//! `streamid worker read`: a reader process that tails the stream and appends
//! [`Observation`]s for `streamid verify`.
//!
//! Two tails share the generator:
//! - **plain** (reader `<instance>`): `P = persisted_upto_position()`, read *before* the
//!   query, then `id > last AND id <= P`, then `last = P`. Nothing at or below `P` can still
//!   appear, so a correct library makes it miss nothing.
//! - **tokens** (reader `<instance>+tokens`, with `--tokens`): the multi-writer token `T`,
//!   taken before the query, then the rows in `(T_prev, T]` — a fast writer's rows up to its
//!   own position, the others' up to `T`'s stream position. The observation records `T`'s
//!   string form and its writers, so the audit holds the reader to all `T` promised.
//!
//! Each round that moved appends one observation line, flushed at once.

use anyhow::{Context as _, Result};
use serde::Serialize;
use streamid::{MultiWriterIdGenerator, MultiWriterStreamToken, Observation};
use tokio::time::Instant;

use crate::output::{self, JsonLines};
use crate::plan::{ReadPlan, Replication};
use crate::report::Verdict;
use crate::store::{IdRange, Store};

/// Why the reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Reason {
    /// Idle for `--until-idle`.
    Idle,
    /// `--duration` elapsed.
    Duration,
    /// SIGTERM or Ctrl-C.
    Signal,
}

/// The last line, on stdout.
#[derive(Serialize)]
struct Done<'a> {
    event: &'static str,
    reader: &'a str,
    reason: Reason,
    observations: u64,
    rows: u64,
    token_observations: u64,
    token_rows: u64,
    position: i64,
    max_allocated: i64,
}

/// One tail's progress.
#[derive(Default)]
struct Tally {
    observations: u64,
    rows: u64,
}

/// Runs `streamid worker read`.
///
/// # Errors
///
/// Start-up and database errors; an observation log that cannot be written.
pub(crate) async fn run(plan: ReadPlan) -> Result<Verdict> {
    if plan.setup.replication == Replication::None {
        tracing::warn!(
            "--replication none: writers' positions reach this reader only at its start"
        );
    }
    let out = JsonLines::append(&plan.observations)?;
    let (store, generator) = super::start(&plan.setup, "streamid worker read").await?;
    let name = generator.instance_name().to_owned();
    let token_name = format!("{name}+tokens");
    let deadline = plan.duration.map(|d| Instant::now() + d);
    let stop = super::stop_requested();
    tokio::pin!(stop);

    let (mut plain, mut tokens) = (Tally::default(), Tally::default());
    let mut last = 0;
    let mut previous = MultiWriterStreamToken::from_stream(0);
    let mut idle_since: Option<Instant> = None;
    let reason = loop {
        let position = generator.persisted_upto_position();
        let mut new_rows = 0;
        if position > last {
            let seen = store
                .read_ids(IdRange {
                    after: last,
                    upto: Some(position),
                })
                .await?;
            new_rows += seen.len();
            plain.rows += seen.len() as u64;
            plain.observations += 1;
            out.write_line(&Observation::new(&name, position, seen).to_json_line())?;
            last = position;
        }
        if plan.tokens {
            let token = generator.token()?;
            if token != previous {
                let observation =
                    token_round(&store, &generator, &token_name, &previous, &token).await?;
                new_rows += observation.seen.len();
                tokens.rows += observation.seen.len() as u64;
                tokens.observations += 1;
                out.write_line(&observation.to_json_line())?;
                previous = token;
            }
        }
        let now = Instant::now();
        let caught_up = generator.max_allocated_token().await? == position;
        if new_rows == 0 && caught_up {
            let since = *idle_since.get_or_insert(now);
            if plan.until_idle.is_some_and(|idle| now - since >= idle) {
                break Reason::Idle;
            }
        } else {
            idle_since = None;
        }
        if deadline.is_some_and(|d| now >= d) {
            break Reason::Duration;
        }
        tokio::select! {
            () = tokio::time::sleep(plan.poll) => {}
            () = &mut stop => break Reason::Signal,
        }
    };
    let max_allocated = generator
        .max_allocated_token()
        .await
        .context("reading the last allocated ID")?;
    generator.shutdown().await;
    let done = Done {
        event: "done",
        reader: &name,
        reason,
        observations: plain.observations,
        rows: plain.rows,
        token_observations: tokens.observations,
        token_rows: tokens.rows,
        position: last,
        max_allocated,
    };
    output::print_result(&done, true, String::new)?;
    Ok(Verdict::Ok)
}

/// One round of the token tail: the rows in `(previous, token]`.
async fn token_round(
    store: &Store,
    generator: &MultiWriterIdGenerator,
    reader: &str,
    previous: &MultiWriterStreamToken,
    token: &MultiWriterStreamToken,
) -> Result<Observation> {
    let rows = store
        .read_rows(IdRange {
            after: previous.stream(),
            upto: Some(token.max_stream_pos()),
        })
        .await?;
    let seen = rows
        .into_iter()
        .filter(|(id, instance)| {
            MultiWriterStreamToken::is_stream_position_in_range(
                Some(previous),
                Some(token),
                instance.as_deref(),
                *id,
            )
        })
        .map(|(id, _)| id)
        .collect();
    Ok(Observation {
        reader: reader.to_owned(),
        position: token.stream(),
        seen,
        token: Some(generator.token_to_string(token).await?),
        writers: token.instance_map().clone(),
    })
}

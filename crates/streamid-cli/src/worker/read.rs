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
//! Each round that moved appends one observation line, flushed at once. With
//! `--keep-going` a round that fails (the database restarting, a cut connection) is retried
//! after a pause instead of ending the reader; it recorded nothing for the failed part.

use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;
use streamid::{MultiWriterIdGenerator, MultiWriterStreamToken, Observation};
use tokio::time::Instant;

use crate::exit::one_line;
use crate::output::{self, JsonLines};
use crate::plan::{ReadPlan, Replication};
use crate::report::Verdict;
use crate::store::{IdRange, Store};

/// With `--keep-going`, how long rounds may fail in a row before the reader gives up.
const GIVE_UP_AFTER: Duration = Duration::from_secs(60);
/// With `--keep-going`, the least pause after a failed round.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

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
    #[serde(flatten)]
    last: super::Final,
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
    let deadline = plan.duration.map(|d| Instant::now() + d);
    let stop = super::stop_requested();
    tokio::pin!(stop);

    let mut tails = Tails {
        plain: Tally::default(),
        tokens: Tally::default(),
        last: 0,
        previous: MultiWriterStreamToken::from_stream(0),
    };
    let mut idle_since: Option<Instant> = None;
    let mut failing_since: Option<Instant> = None;
    let reason = loop {
        let mut pause = plan.poll;
        match tails.round(&plan, &store, &generator, &out).await {
            Ok(quiet) => {
                failing_since = None;
                let now = Instant::now();
                if quiet {
                    let since = *idle_since.get_or_insert(now);
                    if plan.until_idle.is_some_and(|idle| now - since >= idle) {
                        break Reason::Idle;
                    }
                } else {
                    idle_since = None;
                }
            }
            Err(e) if plan.keep_going => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= GIVE_UP_AFTER {
                    return Err(e.context(format!(
                        "giving up after {GIVE_UP_AFTER:?} of failed rounds in a row"
                    )));
                }
                tracing::warn!(error = %one_line(&e), "a read round failed; retrying");
                idle_since = None;
                pause = pause.max(RETRY_PAUSE);
            }
            Err(e) => return Err(e),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break Reason::Duration;
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = &mut stop => break Reason::Signal,
        }
    };
    let Tails {
        plain,
        tokens,
        last,
        ..
    } = tails;
    let max_allocated = generator
        .max_allocated_token()
        .await
        .context("reading the last allocated ID")?;
    let last_state = super::Final::of(&generator, &plan.setup.writers).await;
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
        last: last_state,
    };
    output::print_result(&done, true, String::new)?;
    Ok(Verdict::Ok)
}

/// Both tails' progress across rounds.
struct Tails {
    plain: Tally,
    tokens: Tally,
    /// The plain tail's last position acted on.
    last: i64,
    /// The token tail's last token acted on.
    previous: MultiWriterStreamToken,
}

impl Tails {
    /// One round of both tails; `Ok(true)` when it found nothing new and the reader is
    /// caught up with the last allocated ID. A failed round records nothing for the part
    /// that failed, so a retry reads the same range again.
    async fn round(
        &mut self,
        plan: &ReadPlan,
        store: &Store,
        generator: &MultiWriterIdGenerator,
        out: &JsonLines,
    ) -> Result<bool> {
        let name = generator.instance_name();
        let position = generator.persisted_upto_position();
        let mut new_rows = 0;
        if position > self.last {
            let seen = store
                .read_ids(IdRange {
                    after: self.last,
                    upto: Some(position),
                })
                .await?;
            new_rows += seen.len();
            self.plain.rows += seen.len() as u64;
            self.plain.observations += 1;
            out.write_line(&Observation::new(name, position, seen).to_json_line())?;
            self.last = position;
        }
        if plan.tokens {
            let token = generator.token()?;
            if token != self.previous {
                let token_name = format!("{name}+tokens");
                let observation =
                    token_round(store, generator, &token_name, &self.previous, &token).await?;
                new_rows += observation.seen.len();
                self.tokens.rows += observation.seen.len() as u64;
                self.tokens.observations += 1;
                out.write_line(&observation.to_json_line())?;
                self.previous = token;
            }
        }
        let caught_up = generator.max_allocated_token().await? == position;
        Ok(new_rows == 0 && caught_up)
    }
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

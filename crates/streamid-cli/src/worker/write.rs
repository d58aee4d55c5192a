//! `streamid worker write`: one writer instance per process, logging every outcome.
//!
//! The writing itself is the demo's writer task ([`crate::writer`]) with a log and
//! `keep_going`; this module adds the start, progress and done lines and the clean stop.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::{Result, anyhow};
use serde::Serialize;
use streamid::MultiWriterIdGenerator;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::output::JsonLines;
use crate::plan::WritePlan;
use crate::report::Verdict;
use crate::writer::{self, Budget, WriterSetup, WriterStats};

/// The lines besides the per-write outcomes ([`writer::WriteLine`]).
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Line<'a> {
    /// The generator is up.
    Started {
        instance: &'a str,
        stream: &'a str,
        pid: u32,
        /// `current_token_for_writer(own)` at start.
        position: i64,
    },
    /// Every `--report-every-ms`.
    Progress(Counts<'a>),
    /// The last line.
    Done {
        #[serde(flatten)]
        counts: Counts<'a>,
        /// Stopped by SIGTERM or Ctrl-C.
        interrupted: bool,
        #[serde(flatten)]
        last: super::Final,
    },
}

#[derive(Serialize)]
struct Counts<'a> {
    instance: &'a str,
    committed: u64,
    rolled_back: u64,
    failed: u64,
    /// This writer's position.
    position: i64,
    /// The persisted-up-to position as this process sees it.
    persisted_upto: i64,
}

fn counts<'a>(generator: &'a MultiWriterIdGenerator, stats: &WriterStats) -> Counts<'a> {
    let instance = generator.instance_name();
    Counts {
        instance,
        committed: stats.committed.load(Ordering::Relaxed),
        rolled_back: stats.rolled_back.load(Ordering::Relaxed),
        failed: stats.failed.load(Ordering::Relaxed),
        position: generator.current_token_for_writer(instance),
        persisted_upto: generator.persisted_upto_position(),
    }
}

/// Runs `streamid worker write`.
///
/// # Errors
///
/// Start-up errors; more than [`writer::MAX_FAILURES_IN_A_ROW`] failed writes in a row; a
/// log that cannot be written.
pub(crate) async fn run(plan: WritePlan) -> Result<Verdict> {
    let log = Arc::new(match &plan.log {
        Some(path) => JsonLines::append(path)?,
        None => JsonLines::stdout(),
    });
    let (store, generator) = super::start(&plan.setup, "streamid worker write").await?;
    let instance = generator.instance_name();
    log.write(&Line::Started {
        instance,
        stream: generator.stream_name(),
        pid: std::process::id(),
        position: generator.current_token_for_writer(instance),
    })?;
    let budget = Arc::new(Budget::new(plan.load.bound));
    let stats = Arc::new(WriterStats::default());
    let setup = WriterSetup {
        // A clone: the store must outlive the writer task, since dropping it closes the
        // pool the generator's final flush in `shutdown` needs.
        store: Arc::clone(&store),
        budget: Arc::clone(&budget),
        stats: Arc::clone(&stats),
        max_delay: plan.load.max_delay,
        rollback_rate: plan.load.rollback_rate,
        seed: plan.seed,
        log: Some(Arc::clone(&log)),
        keep_going: true,
    };
    // `--idle`: no writer task at all.
    let mut task = (!plan.idle).then(|| tokio::spawn(writer::run(generator.clone(), setup)));
    let mut outcome = Ok(());
    let mut tick = plan.report_every.map(tokio::time::interval);
    if let Some(t) = &mut tick {
        t.set_missed_tick_behavior(MissedTickBehavior::Skip);
    }
    let stop = super::stop_requested();
    tokio::pin!(stop);
    let mut interrupted = false;
    loop {
        tokio::select! {
            joined = joined(&mut task) => {
                task = None;
                outcome = joined.map_err(|e| anyhow!("the writer task panicked: {e}"))?;
                // `--wait-for-signal`: keep following the stream until told to stop.
                if interrupted || !plan.wait_for_signal || outcome.is_err() {
                    break;
                }
            }
            _ = async { tick.as_mut()?.tick().await; Some(()) }, if tick.is_some() => {
                log.write(&Line::Progress(counts(&generator, &stats)))?;
            }
            () = &mut stop, if !interrupted => {
                interrupted = true;
                budget.stop();
                if task.is_none() {
                    break;
                }
            }
        }
    }
    generator.shutdown().await;
    let last = super::Final::of(&generator, &plan.setup.writers).await;
    drop(store);
    log.write(&Line::Done {
        counts: counts(&generator, &stats),
        interrupted,
        last,
    })?;
    outcome.map(|()| Verdict::Ok)
}

/// The writer task's end; never, without one.
async fn joined(
    task: &mut Option<JoinHandle<Result<()>>>,
) -> Result<Result<()>, tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

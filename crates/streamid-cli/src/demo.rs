//! `streamid demo`: sets the stage, runs writers, replication and readers, waits for the streamid
//! reader to catch up, and builds the report from the database.
//!
//! Order of a run: open the store → fresh schema → one generator per writer plus the
//! reader generator → in-process replication → readers → writers (until the budget is spent, Ctrl-C, or a
//! writer fails) → wait (bounded) until the reader generator's persisted-up-to position
//! reaches the last allocated ID → readers' final reads → count the table → report.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow};
use streamid::MultiWriterIdGenerator;
use streamid::replication::InProcess;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, MissedTickBehavior};

use crate::output;
use crate::plan::DemoPlan;
use crate::reader::{self, Phase, ReaderKind, ReaderLog, ReaderProgress};
use crate::report::{Report, RunFacts, Verdict};
use crate::store::{Layout, READER_INSTANCE, Store};
use crate::view::{Snapshot, View, WriterLine};
use crate::writer::{self, Budget, WriterSetup, WriterStats};

/// How often the view is refreshed (the plain view prints at most once a second).
const TICK: Duration = Duration::from_millis(100);
/// How long the streamid reader may take to catch up with the writers after they stop.
const CATCH_UP_LIMIT: Duration = Duration::from_secs(10);

/// Runs the demo on a fresh Tokio runtime and prints the report on stdout.
///
/// # Errors
///
/// Configuration errors (an unavailable backend), database and runtime errors, and a
/// failure to write to stdout (a broken pipe is reported as such, for `main` to forgive).
pub(crate) fn run(plan: DemoPlan) -> Result<Verdict> {
    output::block_on(run_async(plan))
}

/// The demo's moving parts once the database is ready.
struct Cast {
    writers: Vec<MultiWriterIdGenerator>,
    stats: Vec<Arc<WriterStats>>,
    reader: MultiWriterIdGenerator,
    naive_progress: Arc<ReaderProgress>,
    streamid_progress: Arc<ReaderProgress>,
}

impl Cast {
    fn snapshot(&self, phase: &'static str, elapsed: Duration, budget: &Budget) -> Snapshot {
        let writers = self
            .writers
            .iter()
            .zip(&self.stats)
            .map(|(g, s)| WriterLine {
                name: g.instance_name().to_owned(),
                position: g.current_token_for_writer(g.instance_name()),
                committed: s.committed.load(Ordering::Relaxed),
                rolled_back: s.rolled_back.load(Ordering::Relaxed),
            })
            .collect();
        Snapshot {
            phase,
            elapsed,
            writers,
            persisted_upto: self.reader.persisted_upto_position(),
            max_allocated: budget.max_allocated(),
            naive_seen: self.naive_progress.seen.load(Ordering::Relaxed),
            streamid_seen: self.streamid_progress.seen.load(Ordering::Relaxed),
        }
    }

    fn writer_reported_commits(&self) -> u64 {
        self.stats
            .iter()
            .map(|s| s.committed.load(Ordering::Relaxed))
            .sum()
    }
}

async fn run_async(plan: DemoPlan) -> Result<Verdict> {
    let store = Store::open(&plan.store, Layout::demo(), plan.writers, "streamid demo").await?;
    let store = Arc::new(store);
    store.reset_schema().await?;
    let names: Vec<String> = (1..=plan.writers).map(|i| format!("writer-{i}")).collect();
    let mut writers = Vec::with_capacity(names.len());
    for name in &names {
        writers.push(store.generator(name, &names).await?);
    }
    let reader_generator = store.generator(READER_INSTANCE, &names).await?;
    let cast = Cast {
        stats: names.iter().map(|_| Arc::default()).collect(),
        writers,
        reader: reader_generator,
        naive_progress: Arc::default(),
        streamid_progress: Arc::default(),
    };
    let start_position = cast.reader.persisted_upto_position();
    // Every generator replicates over one in-process channel: the same driver (coalesced
    // and periodic announcements) that LISTEN/NOTIFY or Redis use between processes.
    let bus = InProcess::new();
    for generator in cast.writers.iter().chain([&cast.reader]) {
        generator.replicate(bus.clone());
    }

    let (phase, phase_rx) = watch::channel(Phase::Tail);
    let spawn_reader = |kind: ReaderKind, progress: &Arc<ReaderProgress>| {
        tokio::spawn(reader::run(
            kind,
            Arc::clone(&store),
            phase_rx.clone(),
            Arc::clone(progress),
        ))
    };
    let naive = spawn_reader(ReaderKind::Naive, &cast.naive_progress);
    let streamid = spawn_reader(
        ReaderKind::Streamid(cast.reader.clone()),
        &cast.streamid_progress,
    );

    let mut view = View::new(plan.quiet, plan.json, &names);
    view.start(&header(&plan, &store))?;
    let budget = Arc::new(Budget::new(plan.bound));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (i, (generator, stats)) in cast.writers.iter().zip(&cast.stats).enumerate() {
        let setup = WriterSetup {
            store: Arc::clone(&store),
            budget: Arc::clone(&budget),
            stats: Arc::clone(stats),
            max_delay: plan.max_delay,
            rollback_rate: plan.rollback_rate,
            seed: plan.seed.wrapping_add(i as u64),
            log: None,
            keep_going: false,
        };
        tasks.spawn(writer::run(generator.clone(), setup));
    }

    let interrupted = drive_writers(&mut tasks, &mut view, &cast, &budget, started).await?;
    let duration = started.elapsed();

    let max_allocated = cast
        .reader
        .max_allocated_token()
        .await
        .context("reading the last allocated ID")?;
    let caught_up = catch_up(&cast, &mut view, &budget, started, max_allocated).await?;
    let persisted_upto = cast.reader.persisted_upto_position();
    let _ = phase.send(Phase::Finish);
    let naive_log = join_reader(naive).await?;
    let streamid_log = join_reader(streamid).await?;
    view.finish(&cast.snapshot("done", duration, &budget))?;

    let committed = store.committed_in_commit_order().await?;
    let facts = RunFacts {
        backend: store.describe(),
        writers: plan.writers,
        seed: plan.seed,
        start_position,
        max_allocated,
        persisted_upto,
        caught_up,
        interrupted,
        writer_reported_commits: cast.writer_reported_commits(),
        duration,
    };
    let report = Report::new(facts, &committed, &naive_log, &streamid_log);
    print_report(&report, plan.json)?;
    for generator in cast.writers.iter().chain([&cast.reader]) {
        generator.shutdown().await;
    }
    Ok(report.verdict)
}

fn header(plan: &DemoPlan, store: &Store) -> String {
    let bound = match (plan.bound.rows, plan.bound.duration) {
        (Some(rows), Some(d)) => format!("{rows} writes or {:.1} s", d.as_secs_f64()),
        (Some(rows), None) => format!("{rows} writes"),
        (None, Some(d)) => format!("{:.1} s", d.as_secs_f64()),
        (None, None) => "no bound".to_owned(),
    };
    format!(
        "streamid demo: {} writers on {}, {bound}, rollback rate {}, delays up to {} ms \
         (Ctrl-C stops early)",
        plan.writers,
        store.describe(),
        plan.rollback_rate,
        plan.max_delay.as_millis()
    )
}

/// Refreshes the view until every writer task ended. Returns whether Ctrl-C cut the run
/// short.
async fn drive_writers(
    tasks: &mut JoinSet<Result<()>>,
    view: &mut View,
    cast: &Cast,
    budget: &Budget,
    started: Instant,
) -> Result<bool> {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut interrupted = false;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => return Ok(interrupted),
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => return Err(e),
                Some(Err(e)) => return Err(anyhow!("a writer task panicked: {e}")),
            },
            _ = tick.tick() => {
                if let Err(e) = view.update(&cast.snapshot("writing", started.elapsed(), budget)) {
                    budget.stop();
                    return Err(e.into());
                }
            }
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                budget.stop();
            }
        }
    }
}

/// Waits until the reader generator's persisted-up-to position reaches `target`, at most
/// [`CATCH_UP_LIMIT`]. Returns whether it did.
async fn catch_up(
    cast: &Cast,
    view: &mut View,
    budget: &Budget,
    started: Instant,
    target: i64,
) -> Result<bool> {
    let deadline = Instant::now() + CATCH_UP_LIMIT;
    loop {
        if cast.reader.persisted_upto_position() >= target {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                target,
                persisted_upto = cast.reader.persisted_upto_position(),
                "the streamid reader did not catch up with the writers in time"
            );
            return Ok(false);
        }
        view.update(&cast.snapshot("catching up", started.elapsed(), budget))?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn join_reader(handle: JoinHandle<Result<ReaderLog>>) -> Result<ReaderLog> {
    handle
        .await
        .map_err(|e| anyhow!("a reader task panicked: {e}"))?
}

fn print_report(report: &Report, json: bool) -> Result<()> {
    output::print_result(report, json, || report.to_text())
}

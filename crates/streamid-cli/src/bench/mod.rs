//! `streamid bench latency`: the time from a writer's commit to another process's
//! persisted-up-to position covering it (issue 4 item 6; results in `BENCHMARKS.md`).
//!
//! One run: reset the stream `bench_latency`, start the measuring writer (this process),
//! the load writers ([`load`]) and the reader ([`reader`]: a child process, or a task for
//! the in-process transport), let the load warm up, then commit `--samples` rows one at a
//! time, recording when each `commit()` returned. The reader records when its current
//! token changed; [`stats`] matches the two by ID. All replication uses the library's
//! default options.

mod load;
mod reader;
mod stats;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use streamid::MultiWriterIdGenerator;
use streamid::replication::{InProcess, PgNotify};
use tokio::sync::oneshot;

use crate::output;
use crate::plan::{BenchTransport, LatencyPlan, StoreSpec};
use crate::report::Verdict;
use crate::store::{Database, Event, Layout, Store};

pub(crate) use reader::run as latency_reader;

/// The stream and table of the benchmark.
const STREAM: &str = "bench_latency";
/// The measuring writer's instance.
const WRITER: &str = "bench-writer";
/// The reader's instance (not a writer).
const READER: &str = "bench-reader";
/// Load and replication settle this long before the first sample.
const WARM_UP: Duration = Duration::from_secs(1);
/// Unmeasured commits before the first sample.
const WARM_UP_WRITES: u32 = 20;
/// After the last sample: how long the measuring writer may wait for its own position,
/// then how long the reader gets on top (more than one periodic announcement).
const SETTLE: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_millis(1200);

/// The benchmark's stream.
fn layout() -> Layout {
    // A constant, valid name: the library cannot reject it.
    Layout::new(STREAM, STREAM).unwrap_or_else(|e| unreachable!("{e}"))
}

/// How this process's generators replicate.
enum Transport {
    Notify,
    Redis { url: String },
    InProcess(InProcess),
}

impl Transport {
    fn replicate(&self, generator: &MultiWriterIdGenerator, database: &str) -> Result<()> {
        match self {
            Transport::Notify => {
                let config: tokio_postgres::Config = database
                    .parse()
                    .context("parsing the database URL for LISTEN/NOTIFY")?;
                generator.replicate(PgNotify::new(config));
            }
            Transport::Redis { url } => {
                generator.replicate(streamid::replication::Redis::new(url).context("--transport")?);
            }
            Transport::InProcess(bus) => generator.replicate(bus.clone()),
        }
        Ok(())
    }

    /// The `--replication`/`--transport` value for child processes.
    fn arg(&self) -> String {
        match self {
            Transport::Redis { url } => format!("redis:{url}"),
            Transport::Notify | Transport::InProcess(_) => "notify".to_owned(),
        }
    }
}

async fn open_store(url: &str, writers: usize, purpose: &str) -> Result<Store> {
    let spec = StoreSpec::Postgres {
        url: url.to_owned(),
    };
    Store::open(&spec, layout(), writers, purpose).await
}

/// Waits until `generator`'s replication is connected (and so subscribed).
async fn wait_connected(generator: &MultiWriterIdGenerator) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = generator.replication_status();
        if status.as_ref().is_some_and(|s| s.connected) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let error = status.and_then(|s| s.last_error).unwrap_or_default();
            bail!("replication did not connect within 30 s: {error}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The result, printed as text or JSON.
#[derive(Serialize)]
struct Report {
    transport: &'static str,
    /// `idle` or `load`.
    mode: &'static str,
    load_writers: u32,
    samples: u64,
    covered: u64,
    not_covered: u64,
    early: u64,
    interval_ms: u64,
    /// Commits per second of the load writers while the samples were taken.
    load_commits_per_s: f64,
    latency_us: Option<stats::Percentiles>,
    database: String,
    duration_s: f64,
}

/// The reader, wherever it runs.
enum Reader {
    Process(Box<reader::ReaderProcess>),
    Task {
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<Vec<stats::Change>>,
        _generator: MultiWriterIdGenerator,
    },
}

impl Reader {
    async fn finish(self) -> Result<Vec<stats::Change>> {
        match self {
            Reader::Process(process) => process.finish().await,
            Reader::Task { stop, task, .. } => {
                let _ = stop.send(());
                task.await.context("the reader task panicked")
            }
        }
    }
}

/// Runs `streamid bench latency`.
///
/// # Errors
///
/// Start-up errors (database, redis-server, child processes); a failed write.
pub(crate) async fn latency(plan: LatencyPlan) -> Result<Verdict> {
    let mut _redis = None;
    let transport = match &plan.transport {
        BenchTransport::Notify => Transport::Notify,
        BenchTransport::Redis { url } => Transport::Redis { url: url.clone() },
        BenchTransport::RedisTemp => {
            let server = tokio::task::spawn_blocking(streamid_testkit::RedisServer::start)
                .await
                .context("starting redis-server")?
                .context("starting a throwaway redis-server")?;
            let url = server.url();
            _redis = Some(server);
            Transport::Redis { url }
        }
        BenchTransport::InProcess => Transport::InProcess(InProcess::new()),
    };
    let k = plan.load_writers;
    let store = Store::open(&plan.store, layout(), k as usize + 2, "streamid bench").await?;
    let store = Arc::new(store);
    store.reset_schema().await?;
    let Database::Postgres(pg) = store.database() else {
        bail!("the benchmark runs on PostgreSQL only");
    };
    let url = pg.url().to_owned();
    let loads: Vec<String> = (1..=k).map(load::instance).collect();
    let writers: Vec<String> = std::iter::once(WRITER.to_owned())
        .chain(loads.iter().cloned())
        .collect();
    let generator = store.generator(WRITER, &writers).await?;
    transport.replicate(&generator, &url)?;
    wait_connected(&generator).await?;

    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let in_process = matches!(transport, Transport::InProcess(_));
    let load = if k == 0 {
        load::Load::None
    } else if in_process {
        let mut generators = Vec::new();
        for instance in &loads {
            let g = store.generator(instance, &writers).await?;
            transport.replicate(&g, &url)?;
            generators.push(g);
        }
        load::Load::tasks(&store, generators)
    } else {
        load::Load::processes(&url, &transport.arg(), &loads, &writers, dir.path()).await?
    };
    let reader = if in_process {
        let g = store.generator(READER, &writers).await?;
        transport.replicate(&g, &url)?;
        wait_connected(&g).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(reader::record(g.subscribe(), async {
            let _ = stopped.await;
        }));
        Reader::Task {
            stop,
            task,
            _generator: g,
        }
    } else {
        let process = reader::ReaderProcess::start(&url, &transport.arg(), &writers).await?;
        Reader::Process(Box::new(process))
    };

    tokio::time::sleep(WARM_UP).await;
    for _ in 0..WARM_UP_WRITES {
        commit(&store, &generator).await?;
        tokio::time::sleep(plan.interval).await;
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    for _ in 0..plan.samples {
        let id = commit(&store, &generator).await?;
        samples.push(stats::Sample {
            id,
            committed_ns: reader::now_ns(),
        });
        tokio::time::sleep(plan.interval).await;
    }
    let elapsed = started.elapsed();
    if let Some(last) = samples.last() {
        let _ = generator.wait_for_persisted(last.id, SETTLE).await?;
    }
    tokio::time::sleep(GRACE).await;
    let changes = reader.finish().await?;
    load.stop().await?;
    generator.shutdown().await;

    let matched = stats::analyse(&samples, &changes)?;
    let others = match (samples.first(), samples.last()) {
        (Some(first), Some(last)) => (last.id - first.id + 1) as f64 - samples.len() as f64,
        _ => 0.0,
    };
    let report = Report {
        transport: plan.transport.name(),
        mode: if k == 0 { "idle" } else { "load" },
        load_writers: k,
        samples: plan.samples,
        covered: matched.covered,
        not_covered: matched.not_covered,
        early: matched.early,
        interval_ms: u64::try_from(plan.interval.as_millis()).unwrap_or(u64::MAX),
        load_commits_per_s: if k == 0 {
            0.0
        } else {
            others / elapsed.as_secs_f64()
        },
        latency_us: matched.latency_us,
        database: store.describe(),
        duration_s: elapsed.as_secs_f64(),
    };
    output::print_result(&report, plan.json, || text(&report))?;
    Ok(if matched.not_covered == 0 {
        Verdict::Ok
    } else {
        Verdict::Failed
    })
}

/// One measured (or warm-up) commit of the measuring writer: its ID.
async fn commit(store: &Store, generator: &MultiWriterIdGenerator) -> Result<i64> {
    let event = Event {
        instance: WRITER.to_owned(),
        payload: "latency sample".to_owned(),
        delay: Duration::ZERO,
        rollback: false,
    };
    store.write_event(generator, &event, |_| {}).await
}

fn text(r: &Report) -> String {
    let load = if r.load_writers == 0 {
        "idle stream".to_owned()
    } else {
        format!(
            "{} load writers ({:.0} commits/s)",
            r.load_writers, r.load_commits_per_s
        )
    };
    let mut out = format!(
        "streamid bench latency: transport {}, {load}, {} samples, one every {} ms, on {}\n",
        r.transport, r.samples, r.interval_ms, r.database
    );
    match &r.latency_us {
        Some(p) => out.push_str(&format!(
            "commit -> the reader's persisted-up-to (us): min {:.1}  p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}\n",
            p.min, p.p50, p.p90, p.p99, p.max, p.mean
        )),
        None => out.push_str("no sample was covered\n"),
    }
    out.push_str(&format!(
        "covered {} of {} samples ({} seen before the commit returned, counted as 0); {:.1} s\n",
        r.covered, r.samples, r.early, r.duration_s
    ));
    out
}

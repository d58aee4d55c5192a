//! Dead-writer recovery, epoch fencing and the gap ledger on PostgreSQL (issue 5 items 1–3,
//! spec §12.6 and the liveness and safety clauses of §1.2).
//!
//! A dead writer is simulated three ways: a child OS process (this test binary re-executed
//! with `RECLAIM_CHILD_ROLE` set, running the `child_process` test) killed with SIGKILL; a
//! generator dropped in-process; and a *zombie* — a generator whose lease connection is
//! terminated while its housekeeping cannot take the lease back (`reclaim_interval` of an
//! hour: the first tick runs at start, the next never does during a test).
//!
//! Recovery times measured here are printed (`--nocapture` to see them); assertions use the
//! issue's bound of 2 s plus a margin for a loaded test machine.
// A test binary: panicking on an unexpected error is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Env, eventually};
use deadpool_postgres::Pool;
use streamid::replication::{InProcess, PgNotify};
use streamid::{Error, GapCause, MultiWriterIdGenerator, StreamConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The issue's bound: a killed writer stops holding `P` back within 2 s.
const BOUND: Duration = Duration::from_secs(2);
/// Slack for a loaded machine (debug build, tests in parallel).
const MARGIN: Duration = Duration::from_secs(1);

const INSERT: &str = "INSERT INTO events (stream_ordering, instance_name) VALUES ($1, $2)";

// ----- helpers ---------------------------------------------------------------------------

/// `env.config` with a fast housekeeping tick, for tests that do not measure the bound.
fn fast(env: &Env, instance: &str, writers: &[&str]) -> StreamConfig {
    env.config(instance, writers)
        .reclaim_interval(Duration::from_millis(100))
}

/// A writer whose housekeeping never ticks again after its start: once its lease
/// connection is terminated it cannot re-acquire it — alive, but cut off (a zombie).
/// Returns once the first (immediate) tick has run — its heartbeat is the lease
/// connection's last statement — or a lease lost before it would be taken back at once.
async fn start_zombie(env: &Env, instance: &str, writers: &[&str]) -> MultiWriterIdGenerator {
    let config = env
        .config(instance, writers)
        .reclaim_interval(Duration::from_secs(3600));
    let g = start(env, config).await;
    let pattern = format!("{}:%", tag_prefix(env, instance).await);
    eventually("the zombie's first heartbeat", async || {
        let client = env.pool.get().await.unwrap();
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1 \
                 AND state = 'idle' AND query LIKE 'UPDATE stream_writers SET heartbeat%' \
                 AND datname = current_database()",
                &[&pattern],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    })
    .await;
    g
}

async fn start(env: &Env, config: StreamConfig) -> MultiWriterIdGenerator {
    start_on(env, &env.pool, config).await
}

async fn start_on(env: &Env, pool: &Pool, config: StreamConfig) -> MultiWriterIdGenerator {
    env.create_sequence(&config).await;
    MultiWriterIdGenerator::postgres(pool.clone(), config)
        .await
        .expect("generator start")
}

/// Writes one committed row through a stream transaction; returns its ID.
async fn write(g: &MultiWriterIdGenerator, pool: &Pool) -> i64 {
    write_n(g, pool, 1).await
}

/// Writes `n` committed rows in one stream transaction; returns the largest ID. With
/// `n > 1` the other processes learn only the writer's new position, not each ID, so they
/// cannot walk over the smaller ones (§6.2): a dead writer then really holds `P` back.
async fn write_n(g: &MultiWriterIdGenerator, pool: &Pool, n: usize) -> i64 {
    let mut client = pool.get().await.unwrap();
    let mut tx = g.transaction(&mut client).await.unwrap();
    let ids = tx.next_ids(n).await.unwrap();
    let instance = g.instance_name().to_owned();
    for id in &ids {
        tx.execute(INSERT, &[id, &instance]).await.unwrap();
    }
    tx.commit().await.unwrap();
    *ids.last().unwrap()
}

/// Writes two rows per transaction, a transaction every `every`, until stopped; returns
/// the largest ID of each.
struct Writing {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<i64>>,
}

impl Writing {
    fn start(g: &MultiWriterIdGenerator, pool: &Pool, every: Duration) -> Writing {
        let stop = Arc::new(AtomicBool::new(false));
        let (g, pool, flag) = (g.clone(), pool.clone(), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let mut ids = Vec::new();
            while !flag.load(Ordering::Acquire) {
                ids.push(write_n(&g, &pool, 2).await);
                tokio::time::sleep(every).await;
            }
            ids
        });
        Writing { stop, task }
    }

    async fn stop(self) -> Vec<i64> {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap()
    }
}

/// Waits on every generator at once for `P >= target`; the time each took, `None` on
/// timeout.
async fn wait_all(
    generators: &[&MultiWriterIdGenerator],
    target: i64,
    timeout: Duration,
) -> Vec<Option<Duration>> {
    let waits = generators.iter().map(|g| async move {
        let t = Instant::now();
        let outcome = g.wait_for_persisted(target, timeout).await.unwrap();
        outcome.is_reached().then(|| t.elapsed())
    });
    futures_util::future::join_all(waits).await
}

/// Asserts that every generator reaches `target` within the bound; returns the slowest time.
async fn assert_all_reach(
    generators: &[&MultiWriterIdGenerator],
    target: i64,
    what: &str,
) -> Duration {
    let times = wait_all(generators, target, BOUND + MARGIN).await;
    let mut slowest = Duration::ZERO;
    for (g, t) in generators.iter().zip(&times) {
        let t = t.unwrap_or_else(|| {
            panic!(
                "{what}: {} stuck at P = {} below {target} after {:?} (positions {:?})",
                g.instance_name(),
                g.current_token(),
                BOUND + MARGIN,
                g.positions()
            )
        });
        slowest = slowest.max(t);
    }
    slowest
}

/// The `stream_writers.writer_key` of `instance` (its writer-lock key).
async fn writer_key(env: &Env, instance: &str) -> i64 {
    let client = env.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT writer_key FROM stream_writers WHERE stream_name = 'events' \
             AND instance_name = $1",
            &[&instance],
        )
        .await
        .unwrap()
        .get(0)
}

/// `stream_writers.epoch` of `instance`.
async fn epoch(env: &Env, instance: &str) -> i64 {
    let client = env.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT epoch FROM stream_writers WHERE stream_name = 'events' AND instance_name = $1",
            &[&instance],
        )
        .await
        .unwrap()
        .get(0)
}

/// The `application_name` prefix of `instance`'s connections.
async fn tag_prefix(env: &Env, instance: &str) -> String {
    format!("streamid:{:016x}", writer_key(env, instance).await as u64)
}

/// Terminates `instance`'s lease connection — its only idle tagged backend — as the death
/// of its process (or a network cut) would.
async fn lose_lease(env: &Env, instance: &str) {
    let pattern = format!("{}:%", tag_prefix(env, instance).await);
    eventually("the lease connection is terminated", async || {
        let client = env.pool.get().await.unwrap();
        let ended: i64 = client
            .query_one(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name LIKE $1 AND state = 'idle' \
                 AND datname = current_database()) t",
                &[&pattern],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            ended <= 1,
            "{ended} idle connections carry the tag of {instance}"
        );
        ended == 1
    })
    .await;
}

/// `(event, epoch, position, by_instance)` rows of `stream_events` for `instance`, in order.
async fn events_for(env: &Env, instance: &str) -> Vec<(String, Option<i64>, i64, String)> {
    let client = env.pool.get().await.unwrap();
    client
        .query(
            "SELECT event, epoch, position, by_instance FROM stream_events \
             WHERE stream_name = 'events' AND instance_name = $1 ORDER BY at, position",
            &[&instance],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

/// Row IDs in `events`, ascending.
async fn row_ids(env: &Env) -> Vec<i64> {
    let client = env.pool.get().await.unwrap();
    client
        .query("SELECT stream_ordering FROM events ORDER BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// `stream_gaps` of stream `events`.
async fn stream_gaps(env: &Env) -> BTreeMap<(String, String), i64> {
    let client = env.pool.get().await.unwrap();
    client
        .query(
            "SELECT instance_name, cause, gaps FROM stream_gaps WHERE stream_name = 'events'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect()
}

/// A reader's-eye audit that does not trust the library: every ~20 ms it reads `P` from a
/// generator and then the rows at or below it; at the end no row at or below an observed
/// `P` may have appeared later (§1.2 "Readers").
struct Audit {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<(i64, Vec<i64>)>>,
}

impl Audit {
    fn start(g: &MultiWriterIdGenerator, pool: &Pool) -> Audit {
        let stop = Arc::new(AtomicBool::new(false));
        let (g, pool, flag) = (g.clone(), pool.clone(), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Acquire) {
                let p = g.current_token();
                let client = pool.get().await.unwrap();
                let rows: Vec<i64> = client
                    .query(
                        "SELECT stream_ordering FROM events WHERE stream_ordering <= $1 ORDER BY 1",
                        &[&p],
                    )
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                seen.push((p, rows));
                drop(client);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        });
        Audit { stop, task }
    }

    /// Fails if a row at or below an observed `P` became visible after the observation.
    async fn check(self, env: &Env) -> usize {
        self.stop.store(true, Ordering::Release);
        let seen = self.task.await.unwrap();
        let all = row_ids(env).await;
        for (p, rows) in &seen {
            let now: Vec<i64> = all.iter().copied().filter(|id| id <= p).collect();
            assert_eq!(
                &now, rows,
                "a row at or below the observed P = {p} appeared later"
            );
        }
        seen.len()
    }
}

// ----- advisory-lock keys (pinned derivation, cross-checked against stream_writers) -------

fn fnv(parts: &[&[u8]]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for part in parts {
        feed(&(part.len() as u64).to_le_bytes());
        feed(part);
    }
    h as i64
}

fn lease_key(stream: &str, instance: &str) -> i64 {
    fnv(&[b"streamid/lease/v1", stream.as_bytes(), instance.as_bytes()])
}

fn writer_lock_key(stream: &str, instance: &str) -> i64 {
    fnv(&[
        b"streamid/writer-lock/v1",
        stream.as_bytes(),
        instance.as_bytes(),
    ])
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

// ----- child processes -------------------------------------------------------------------

const ROLE: &str = "RECLAIM_CHILD_ROLE";
const URL: &str = "RECLAIM_CHILD_URL";
const INSTANCE: &str = "RECLAIM_CHILD_INSTANCE";
const WRITERS: &str = "RECLAIM_CHILD_WRITERS";

/// A child process running [`child_process`]; killed (SIGKILL) when dropped.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Proc {
    fn spawn(role: &str, url: &str, instance: &str, writers: &[&str]) -> Proc {
        let exe = std::env::current_exe().expect("test binary");
        let mut child = Command::new(exe)
            .args([
                "child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role)
            .env(URL, url)
            .env(INSTANCE, instance)
            .env(WRITERS, writers.join(","))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take().expect("stdin");
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // libtest may print "test child_process ... " on the same line.
                if let Some(at) = line.find("CHILD ") {
                    let _ = tx.send(line[at + 6..].to_owned());
                }
            }
        });
        Proc {
            child,
            stdin,
            lines,
        }
    }

    /// The next line starting with `prefix` (others are skipped), within 30 s.
    async fn expect(&mut self, prefix: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.recv())
                .await
                .unwrap_or_else(|_| panic!("child: no {prefix:?} line within 30 s"))
                .unwrap_or_else(|| panic!("child exited before printing {prefix:?}"));
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.trim().to_owned();
            }
        }
    }

    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("write to child");
        self.stdin.flush().expect("flush child stdin");
    }

    /// Waits (up to 30 s) for the child to exit by itself, successfully.
    fn wait_exit(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("child status") {
                assert!(status.success(), "child failed: {status}");
                return;
            }
            assert!(Instant::now() < deadline, "child did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no destructor, no final position write, no ROLLBACK sent.
    fn kill(&mut self) {
        self.child.kill().expect("kill child");
        self.child.wait().expect("reap child");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// why: not a test of its own — the entry point of the child processes the multi-process
// tests start (it returns at once unless `RECLAIM_CHILD_ROLE` is set).
#[test]
fn child_process() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(child_main(&role));
}

async fn child_main(role: &str) {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} unset"));
    let (url, instance) = (var(URL), var(INSTANCE));
    let writers: Vec<String> = var(WRITERS).split(',').map(str::to_owned).collect();
    let pg: tokio_postgres::Config = url.parse().expect("url");
    let manager = deadpool_postgres::Manager::from_config(
        pg.clone(),
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager).max_size(8).build().expect("pool");
    let config = StreamConfig::new("events", &instance)
        .table("events", "instance_name", "stream_ordering")
        .sequence("events_seq")
        .writers(writers)
        .position_write_interval(Duration::from_millis(50))
        .writer_lock_timeout(Duration::from_secs(10));
    let g = MultiWriterIdGenerator::postgres(pool.clone(), config)
        .await
        .expect("child start");
    g.replicate(PgNotify::new(pg));
    println!("CHILD READY");
    match role {
        // Writes a few rows, then dies (SIGKILL from the parent) inside an open
        // transaction that has allocated an ID and written its row.
        "dead" => {
            for _ in 0..20 {
                write(&g, &pool).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut client = pool.get().await.unwrap();
            let mut tx = g.transaction(&mut client).await.unwrap();
            let id = tx.next_id().await.unwrap();
            tx.execute(INSERT, &[&id, &instance]).await.unwrap();
            println!("CHILD OPEN {id}");
            tokio::time::sleep(Duration::from_secs(120)).await;
            drop(tx);
        }
        // Keeps writing; answers `WAIT <tag> <target> <origin unix ms>` with
        // `WAITED <tag> <reached> <ms since origin>`, `STOP` with `STOPPED`, `EXIT` by exiting.
        "survivor" => survivor(g, pool).await,
        _ => panic!("unknown role {role}"),
    }
}

async fn survivor(g: MultiWriterIdGenerator, pool: Pool) {
    let mut writing = Some(Writing::start(&g, &pool, Duration::from_millis(20)));
    let (tx, mut commands) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    while let Some(line) = commands.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["WAIT", tag, target, origin] => {
                let (tag, target, origin) = (
                    (*tag).to_owned(),
                    target.parse::<i64>().unwrap(),
                    origin.parse::<u128>().unwrap(),
                );
                let g = g.clone();
                tokio::spawn(async move {
                    let outcome = g.wait_for_persisted(target, BOUND + MARGIN).await.unwrap();
                    let ms = unix_ms().saturating_sub(origin);
                    println!(
                        "CHILD WAITED {tag} {} {ms} {}",
                        outcome.is_reached(),
                        g.current_token()
                    );
                });
            }
            ["STOP"] => {
                if let Some(w) = writing.take() {
                    w.stop().await;
                }
                println!("CHILD STOPPED");
            }
            ["EXIT"] => return,
            other => panic!("unknown command {other:?}"),
        }
    }
}

/// Sends `WAIT` to a survivor child and parses its answer: `(reached, ms since origin)`.
async fn child_wait(c: &mut Proc, tag: &str, target: i64, origin: u128) -> (bool, u128) {
    c.send(&format!("WAIT {tag} {target} {origin}"));
    let answer = c.expect(&format!("WAITED {tag} ")).await;
    let mut words = answer.split_whitespace();
    let reached = words.next().unwrap() == "true";
    let ms = words.next().unwrap().parse().unwrap();
    (reached, ms)
}

// ----- item 1: a killed writer is recovered within the bound ------------------------------

// why: issue 5 item 1 and spec §12.6 — a writer process killed with SIGKILL while its
// transaction is open must stop holding P back within 2 s on every surviving process (two
// writers in different processes and a reader, replicating over LISTEN/NOTIFY), and keep not
// holding it back while the stream moves on (§12.6 step 5: repeated recovery with fresh IDs).
// Safety at the same time: the killed transaction's ID never becomes a row, recovery
// positions are fresh gaps above it, and an independent reader audit finds no row appearing
// at or below a P it observed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_writer_process_is_recovered_within_the_bound() {
    let env = Env::new().await;
    let writers = ["b", "c", "d"];
    let b = start(&env, env.config("b", &writers)).await; // default 500 ms tick
    let r = start(&env, env.config("r", &writers)).await; // a reader, recovering too
    b.replicate(PgNotify::new(env.db.config.clone()));
    r.replicate(PgNotify::new(env.db.config.clone()));

    let mut d = Proc::spawn("dead", &env.db.url, "d", &writers);
    d.expect("READY").await;
    let mut c = Proc::spawn("survivor", &env.db.url, "c", &writers);
    c.expect("READY").await;
    let audit = Audit::start(&r, &env.pool);
    let writing = Writing::start(&b, &env.pool, Duration::from_millis(20));

    // Kill d in the middle of its transaction.
    let open: i64 = d.expect("OPEN ").await.parse().unwrap();
    assert!(b.current_token() < open && r.current_token() < open);
    // At a random phase of the survivors' recovery ticks, so runs sample the whole bound.
    let phase = rand::random_range(0..600);
    tokio::time::sleep(Duration::from_millis(phase)).await;
    d.kill();
    let killed_unix = unix_ms();
    let survivors = [&b, &r];
    let (parent, (child_reached, child_ms)) = tokio::join!(
        wait_all(&survivors, open, BOUND + MARGIN),
        child_wait(&mut c, "killed", open, killed_unix)
    );
    assert!(child_reached, "survivor c never passed {open}");
    for (who, t) in ["b", "r"].iter().zip(&parent) {
        assert!(
            t.is_some(),
            "{who} never passed the killed writer's open ID {open}"
        );
    }
    let parent_ms: Vec<u128> = parent.iter().flatten().map(Duration::as_millis).collect();
    println!(
        "SIGKILLed writer stopped holding P back after: b, r {parent_ms:?} ms; c {child_ms} ms"
    );

    // The stream moves on for 3 s: at each checkpoint every survivor reaches the largest ID
    // allocated so far, within the bound (the dead writer is recovered again and again).
    let mut checkpoints = Vec::new();
    for k in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let target = b.max_allocated_token().await.unwrap();
        let origin = unix_ms();
        let tag = format!("cp{k}");
        let (parent, (reached, ms)) = tokio::join!(
            wait_all(&survivors, target, BOUND + MARGIN),
            child_wait(&mut c, &tag, target, origin)
        );
        assert!(reached, "survivor c stuck below checkpoint {target}");
        assert!(
            parent.iter().all(Option::is_some),
            "b or r stuck below {target}"
        );
        let mut times: Vec<u128> = parent.iter().flatten().map(Duration::as_millis).collect();
        times.push(ms);
        checkpoints.push(times);
    }
    println!("checkpoints while writing (b, r, c ms): {checkpoints:?}");

    // Everyone stops; every survivor reaches the last allocated ID.
    writing.stop().await;
    c.send("STOP");
    c.expect("STOPPED").await;
    let last = b.max_allocated_token().await.unwrap();
    let origin = unix_ms();
    let slowest = assert_all_reach(&[&b, &r], last, "after the last write").await;
    let (reached, ms) = child_wait(&mut c, "final", last, origin).await;
    assert!(reached, "survivor c stuck below {last} at the end");
    println!("final: b/r {} ms, c {ms} ms", slowest.as_millis());
    c.send("EXIT");
    c.wait_exit();
    let rows = row_ids(&env).await;
    let samples = audit.check(&env).await;
    assert!(samples > 20, "the audit ran ({samples} samples)");
    // Stop recovering, so the bookkeeping below is read at rest.
    drop((b, r));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Safety and bookkeeping.
    assert!(
        !rows.contains(&open),
        "the killed transaction's row committed"
    );
    let unique: BTreeSet<i64> = rows.iter().copied().collect();
    assert_eq!(unique.len(), rows.len(), "an ID was used twice");
    let events = events_for(&env, "d").await;
    assert!(
        events.len() >= 2,
        "the dead writer must be recovered repeatedly while the stream moves on: {events:?}"
    );
    let mut positions = Vec::new();
    for (event, epoch, position, by) in &events {
        assert_eq!(event, "reclaimed");
        assert!(epoch.is_some(), "the recovery fences an epoch");
        assert!(
            *position > open,
            "recovered to {position}, not above the open ID {open}"
        );
        assert!(
            !unique.contains(position),
            "recovery position {position} is a row's ID"
        );
        assert!(["b", "c", "r"].contains(&by.as_str()), "recovered by {by}");
        positions.push(*position);
    }
    let distinct: BTreeSet<i64> = positions.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        positions.len(),
        "each recovery takes a fresh ID"
    );
    assert_eq!(
        env.recorded().await.get("d"),
        distinct.last(),
        "stream_positions(d) holds the newest recovery"
    );
    assert!(epoch(&env, "d").await > 1, "recoveries bumped d's epoch");
}

// why: spec §12.6 step 5 — a writer that exits (its generator dropped: lease connection
// closed, no final announcement) and never comes back is recovered again and again while
// the stream moves on, so it never holds P back for long on the writers or on a reader
// (in-process replication). Each recovery is one `stream_events` row and one `reclaimed` gap
// in the ledger of the process that made it, under the dead writer's name, flushed to
// `stream_gaps`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_writer_is_recovered_repeatedly_as_the_stream_moves_on() {
    let env = Env::new().await;
    let writers = ["a", "b", "d"];
    let bus = InProcess::new();
    let a = start(&env, env.config("a", &writers)).await;
    let b = start(&env, env.config("b", &writers)).await;
    let r = start(&env, env.config("r", &writers)).await;
    let d = start(&env, env.config("d", &writers)).await;
    for g in [&a, &b, &r, &d] {
        g.replicate(bus.clone());
    }
    let audit = Audit::start(&r, &env.pool);
    let wa = Writing::start(&a, &env.pool, Duration::from_millis(15));
    let wb = Writing::start(&b, &env.pool, Duration::from_millis(15));
    for _ in 0..5 {
        write(&d, &env.pool).await;
    }
    drop(d); // lease connection closed, no final announcement
    let died = a.max_allocated_token().await.unwrap();
    let first = assert_all_reach(&[&a, &b, &r], died, "passing the dead writer").await;
    println!(
        "dropped writer: P passed the head at its death after {} ms",
        first.as_millis()
    );
    let mut times = Vec::new();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let target = a.max_allocated_token().await.unwrap();
        times.push(
            assert_all_reach(&[&a, &b, &r], target, "while writing")
                .await
                .as_millis(),
        );
    }
    println!("dropped writer: checkpoints reached after {times:?} ms");
    wa.stop().await;
    wb.stop().await;
    let last = a.max_allocated_token().await.unwrap();
    assert_all_reach(&[&a, &b, &r], last, "after the last write").await;

    let events = events_for(&env, "d").await;
    assert!(events.len() >= 2, "recovered repeatedly: {events:?}");
    // Every recovery is counted exactly once, by the process that made it.
    let counted: u64 = [&a, &b, &r]
        .iter()
        .map(|g| {
            g.gaps()
                .get(&("d".to_owned(), GapCause::Reclaimed))
                .copied()
                .unwrap_or(0)
        })
        .sum();
    let n = events.len() as u64;
    // A recovery made between reading the events and the ledgers would count once more.
    assert!(
        (n..=n + 3).contains(&counted),
        "{counted} reclaimed gaps for {n} recoveries"
    );
    for g in [&a, &b, &r] {
        let mine = events.iter().filter(|e| e.3 == g.instance_name()).count() as u64;
        let ledger = g
            .gaps()
            .get(&("d".to_owned(), GapCause::Reclaimed))
            .copied()
            .unwrap_or(0);
        assert!(
            ledger >= mine,
            "{}: ledger {ledger} < events {mine}",
            g.instance_name()
        );
    }
    eventually("stream_gaps counts every recovery", async || {
        let total: u64 = [&a, &b, &r]
            .iter()
            .map(|g| {
                g.gaps()
                    .get(&("d".to_owned(), GapCause::Reclaimed))
                    .copied()
                    .unwrap_or(0)
            })
            .sum();
        stream_gaps(&env)
            .await
            .get(&("d".to_owned(), "reclaimed".to_owned()))
            .copied()
            == Some(total as i64)
    })
    .await;
    audit.check(&env).await;
}

// ----- item 1: recovery never covers an ID that can still commit ---------------------------

// why: spec §12.6 steps 1 and 3 — a writer that is alive (its lease held) is never
// recovered however long it stays silent with a transaction open: other processes keep P
// below its open ID, write no recovery, and (the cheap lease check) take no sequence value
// for it. When it commits, P passes its row within the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_live_writer_is_never_recovered() {
    let env = Env::new().await;
    let writers = ["w", "b"];
    let bus = InProcess::new();
    let w = start(&env, env.config("w", &writers)).await;
    let b = start(&env, fast(&env, "b", &writers)).await;
    w.replicate(bus.clone());
    b.replicate(bus.clone());

    let mut client = env.pool.get().await.unwrap();
    let mut tx = w.transaction(&mut client).await.unwrap();
    let x = tx.next_id().await.unwrap();
    tx.execute(INSERT, &[&x, &"w"]).await.unwrap();
    for _ in 0..3 {
        write(&b, &env.pool).await;
    }
    let last = b.max_allocated_token().await.unwrap();
    // 2.5 s of silence: 25 recovery ticks of b.
    let until = Instant::now() + BOUND + Duration::from_millis(500);
    while Instant::now() < until {
        assert!(
            b.current_token() < x,
            "P passed the open ID {x} of a live writer"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(
        events_for(&env, "w").await,
        vec![],
        "a live writer was recovered"
    );
    assert!(env.recorded().await["w"] < x);
    assert_eq!(
        b.max_allocated_token().await.unwrap(),
        last,
        "recovery attempts on a live writer cost sequence values"
    );
    assert!(
        !b.gaps()
            .contains_key(&("w".to_owned(), GapCause::Reclaimed))
    );

    tx.commit().await.unwrap();
    let t = assert_all_reach(&[&b], last, "after the live writer committed").await;
    println!(
        "live writer committed: P passed it after {} ms",
        t.as_millis()
    );
    assert!(row_ids(&env).await.contains(&x));
}

// why: spec §12.6 steps 2 and 4 — recovery raises a dead writer to a fresh ID taken for
// it, never to the sequence head, which may be another live writer's open ID: here the head
// is `w`'s uncommitted ID, every smaller ID is decided, and a recovery to the head would
// let P walk onto it (the recovered value counts as decided, §6.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_never_uses_the_sequence_head() {
    let env = Env::new().await;
    let writers = ["b", "d", "w"];
    let bus = InProcess::new();
    let b = start(&env, fast(&env, "b", &writers)).await;
    let d = start(&env, env.config("d", &writers)).await;
    let w = start(&env, env.config("w", &writers)).await;
    b.replicate(bus.clone());
    w.replicate(bus.clone());
    drop(d); // dead at its starting position
    let mut client = env.pool.get().await.unwrap();
    let mut tx = w.transaction(&mut client).await.unwrap();
    let head = tx.next_id().await.unwrap();
    tx.execute(INSERT, &[&head, &"w"]).await.unwrap();
    eventually("b recovers d", async || {
        !events_for(&env, "d").await.is_empty()
    })
    .await;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert!(b.current_token() < head, "P covers the open head {head}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (_, _, position, _) in events_for(&env, "d").await {
        assert!(
            position > head,
            "recovered d to {position}, not above the head {head}"
        );
    }
    tx.commit().await.unwrap();
    let last = b.max_allocated_token().await.unwrap();
    assert_all_reach(&[&b], last, "after the head committed").await;
}

// why: spec §12.6 step 3 and issue 5 item 1 — a writer whose process is gone (its lease
// connection terminated, housekeeping never retaking it) while its transaction is still
// open in PostgreSQL can still commit, so it must NOT be recovered: its tagged backend and
// the writer lock its transaction holds make the proof fail (the recovering process takes
// `F` first, so its attempts do cost sequence values — gaps nobody learns). Once the
// transaction commits, recovery goes through and P covers the committed row correctly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_writer_with_open_transaction_is_recovered_only_after_it_ends() {
    let env = Env::new().await;
    let writers = ["w", "b"];
    let w = start_zombie(&env, "w", &writers).await;
    let b = start(&env, fast(&env, "b", &writers)).await;
    let mut client = env.pool.get().await.unwrap();
    let mut tx = w.transaction(&mut client).await.unwrap();
    let x = tx.next_id().await.unwrap();
    tx.execute(INSERT, &[&x, &"w"]).await.unwrap();
    let y = write(&b, &env.pool).await;
    assert!(y > x);
    lose_lease(&env, "w").await;
    // The open transaction's backend still carries w's tag.
    let prefix = tag_prefix(&env, "w").await;
    let app: String = tx
        .query_one("SELECT current_setting('application_name')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(app.starts_with(&prefix), "{app}");

    let before = b.max_allocated_token().await.unwrap();
    let until = Instant::now() + BOUND;
    while Instant::now() < until {
        assert!(b.current_token() < x, "P passed {x}, still committable");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        b.max_allocated_token().await.unwrap() > before,
        "b never attempted a recovery (no F taken): the test proves nothing"
    );
    assert_eq!(
        events_for(&env, "w").await,
        vec![],
        "recovered while committable"
    );
    assert!(env.recorded().await["w"] < x);

    tx.commit().await.unwrap();
    let committed = Instant::now();
    drop(client);
    let t = assert_all_reach(&[&b], y, "after the open transaction committed").await;
    println!(
        "lost writer's transaction committed: recovered after {} ms",
        committed.elapsed().as_millis().min(t.as_millis() + 5)
    );
    let events = events_for(&env, "w").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].2 > y && events[0].3 == "b", "{events:?}");
    assert!(
        row_ids(&env).await.contains(&x),
        "the committed row is there"
    );
    assert!(b.current_token() >= x);
    drop(w);
}

// why: spec §12.6 step 3 — each part of the proof is necessary: while the dead writer's
// lease is held, or a backend carries its tag, or its writer lock is held, it is not
// recovered (each held here by a bare connection, the dead writer's generator gone); once
// all are free it is. A proof that skipped any one check fails this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proof_needs_lease_tag_and_writer_lock_all_free() {
    let env = Env::new().await;
    let writers = ["d", "b"];
    let d = start_zombie(&env, "d", &writers).await;
    let b = start(&env, fast(&env, "b", &writers)).await;
    let key = writer_key(&env, "d").await;
    assert_eq!(key, writer_lock_key("events", "d"), "key derivation");
    let prefix = tag_prefix(&env, "d").await;
    write(&d, &env.pool).await; // unknown to b: holds b's P back
    write(&b, &env.pool).await;
    // Two bare sessions stand in for what a dead writer may leave behind; at every moment
    // one of them holds something until the end.
    let s1 = Arc::new(env.db.client().await.unwrap());
    let s2 = env.db.client().await.unwrap();
    let lease = lease_key("events", "d");
    let waiter = {
        let s1 = Arc::clone(&s1);
        tokio::spawn(async move {
            s1.batch_execute(&format!("SELECT pg_advisory_lock({lease})"))
                .await
        })
    };
    eventually("s1 queues for d's lease", async || {
        let c = env.pool.get().await.unwrap();
        c.query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
            == 1
    })
    .await;
    drop(d); // its lease passes straight to the queued s1
    waiter.await.unwrap().unwrap();

    let quiet = |what: &'static str| {
        let (env, b) = (&env, &b);
        async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            assert_eq!(events_for(env, "d").await, vec![], "recovered while {what}");
            let p = b.current_token();
            assert!(
                p < b.max_allocated_token().await.unwrap(),
                "{what}: P moved to {p}"
            );
            b.max_allocated_token().await.unwrap()
        }
    };
    // 1. The lease held (a live writer): b does not even take an F.
    let before = b.max_allocated_token().await.unwrap();
    assert_eq!(
        quiet("its lease is held").await,
        before,
        "F taken for a held lease"
    );
    // 2. Only a backend carrying d's tag (say, a COMMIT still being processed).
    s2.batch_execute(&format!("SET application_name = '{prefix}:1'"))
        .await
        .unwrap();
    s1.batch_execute(&format!("SELECT pg_advisory_unlock({lease})"))
        .await
        .unwrap();
    let before = b.max_allocated_token().await.unwrap();
    assert!(
        quiet("a backend carries its tag").await > before,
        "no attempt made"
    );
    // 3. Only its writer lock, held by an open transaction.
    s1.batch_execute(&format!(
        "BEGIN; SELECT pg_advisory_xact_lock_shared({key})"
    ))
    .await
    .unwrap();
    s2.batch_execute("SET application_name = 'test'")
        .await
        .unwrap();
    let before = b.max_allocated_token().await.unwrap();
    assert!(
        quiet("its writer lock is held").await > before,
        "no attempt made"
    );
    // All free: recovered.
    s1.batch_execute("COMMIT").await.unwrap();
    let last = b.max_allocated_token().await.unwrap();
    assert_all_reach(&[&b], last, "once everything is free").await;
    assert_eq!(events_for(&env, "d").await.len(), 1);
}

// why: spec §1.2 liveness and §12.6 — a listed writer that has never started (spec §1.3
// item 2: an added writer starts only after every process runs with the new list) can
// never commit until it starts — its lease is free, no backend carries its tag, its writer
// lock is free — so it must not hold the others' P back; when it starts it allocates above
// the recovery position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_writer_that_never_started_does_not_stall_the_stream() {
    let env = Env::new().await;
    let writers = ["a", "b", "ghost"];
    let bus = InProcess::new();
    let a = start(&env, fast(&env, "a", &writers)).await;
    let b = start(&env, fast(&env, "b", &writers)).await;
    a.replicate(bus.clone());
    b.replicate(bus.clone());
    let wa = Writing::start(&a, &env.pool, Duration::from_millis(10));
    let wb = Writing::start(&b, &env.pool, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    wa.stop().await;
    wb.stop().await;
    let last = a.max_allocated_token().await.unwrap();
    assert_all_reach(&[&a, &b], last, "with a never-started writer listed").await;
    let ghost = start(&env, env.config("ghost", &writers)).await;
    assert!(write(&ghost, &env.pool).await > last);
}

// ----- item 2: epoch fencing --------------------------------------------------------------

// why: issue 5 item 2 — a zombie writer (lease lost, process still running, unaware) that
// another process recovered must not commit anything afterwards: its next transaction's
// first allocation finds its epoch gone in PostgreSQL (`stream_writers`, FOR KEY SHARE) and
// fails with `Error::Fenced`; it stays fenced (autocommit allocation refused too), no row of
// it appears; a restart takes a new epoch and allocates above the recovery position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zombie_writer_is_fenced_by_postgres_after_recovery() {
    let env = Env::new().await;
    let writers = ["a", "b"];
    let a = start_zombie(&env, "a", &writers).await;
    let b = start(&env, fast(&env, "b", &writers)).await;
    let e0 = epoch(&env, "a").await;
    let x = write(&a, &env.pool).await; // unknown to b: holds b's P back
    // An autocommit allocation taken before the recovery, not yet bound (spec §5.3).
    let early = a.next_id().await.unwrap();
    write(&b, &env.pool).await;
    lose_lease(&env, "a").await;
    eventually("b recovers a", async || {
        !events_for(&env, "a").await.is_empty()
    })
    .await;
    let events = events_for(&env, "a").await;
    let f = events[0].2;
    assert_eq!(events[0].1, Some(e0 + 1), "the recovery fenced a's epoch");
    assert_eq!(epoch(&env, "a").await, e0 + 1);
    assert!(!a.is_fenced(), "the zombie does not know yet");

    let mut client = env.pool.get().await.unwrap();
    let mut tx = a.transaction(&mut client).await.unwrap();
    match tx.next_id().await {
        Err(Error::Fenced { stream, instance }) => {
            assert_eq!((stream.as_str(), instance.as_str()), ("events", "a"));
        }
        other => panic!("expected Fenced at the first allocation, got {other:?}"),
    }
    assert!(a.is_fenced());
    assert!(matches!(tx.next_id().await, Err(Error::Fenced { .. })));
    assert!(tx.ids().is_empty());
    let _ = tx.commit().await; // nothing to commit, whatever the caller tries
    // Binding the early allocation afterwards is refused by the same check in PostgreSQL.
    let mut client2 = env.pool.get().await.unwrap();
    let tx2 = client2.transaction().await.unwrap();
    assert!(matches!(early.bind(&tx2).await, Err(Error::Fenced { .. })));
    assert!(
        early.id() < f,
        "the early ID {} is covered by the recovery",
        early.id()
    );
    drop(tx2);
    drop(early);
    assert!(matches!(a.next_id().await, Err(Error::Fenced { .. })));
    let a_rows: Vec<i64> = {
        let c = env.pool.get().await.unwrap();
        c.query(
            "SELECT stream_ordering FROM events WHERE instance_name = 'a'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    assert_eq!(a_rows, vec![x], "the fenced zombie committed a row");
    assert_eq!(a.unfinished_ids(), 0);

    // A restart of a takes a new epoch and allocates above the recovery position.
    drop(a);
    let a = start(&env, fast(&env, "a", &writers)).await;
    assert_eq!(epoch(&env, "a").await, e0 + 2);
    assert!(!a.is_fenced());
    let z = write(&a, &env.pool).await;
    assert!(
        z > f,
        "restart allocated {z} below the recovery position {f}"
    );
}

// why: issue 5 item 2 ("a restarted writer takes a new epoch; announcements from older
// epochs are ignored") and spec §1.2 safety — once a cut-off process of instance `a` has
// been replaced by a new incarnation, nothing the old one still says about `a` may cover
// the new one's open ID: neither its announcements (an idle process announces the largest
// ID it has seen) nor its `stream_positions` writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_incarnations_announcements_never_cover_the_new_ones_ids() {
    let env = Env::new().await;
    let writers = ["a", "b"];
    let bus = InProcess::new();
    let old = start_zombie(&env, "a", &writers).await;
    let b = start(&env, fast(&env, "b", &writers)).await;
    let r = start(&env, fast(&env, "r", &writers)).await;
    for g in [&old, &b, &r] {
        g.replicate(bus.clone());
    }
    write(&old, &env.pool).await;
    // The old process loses its lease (it stays up, replicating) and `a` is restarted.
    lose_lease(&env, "a").await;
    let new = start(&env, fast(&env, "a", &writers)).await;
    new.replicate(bus.clone());
    let mut client = env.pool.get().await.unwrap();
    let mut tx = new.transaction(&mut client).await.unwrap();
    let y = tx.next_id().await.unwrap();
    tx.execute(INSERT, &[&y, &"a"]).await.unwrap();
    // The stream moves on past y.
    for _ in 0..3 {
        write(&b, &env.pool).await;
    }
    let until = Instant::now() + BOUND;
    while Instant::now() < until {
        for g in [&b, &r] {
            assert!(
                g.current_token() < y,
                "{} reports P = {} covering the new incarnation's open ID {y} \
                 (positions {:?})",
                g.instance_name(),
                g.current_token(),
                g.positions()
            );
        }
        assert!(
            env.recorded().await["a"] < y,
            "stream_positions(a) covers {y}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tx.commit().await.unwrap();
    drop(old);
}

// why: issue 5 item 2 — a writer whose lease is lost learns it at its next heartbeat,
// refuses to allocate (`Error::Fenced`, `is_fenced()`) until its housekeeping has taken the
// lease back and registered a new epoch (here it cannot get a connection meanwhile, and
// another process recovers it — epoch + 1); then it allocates again above the recovery
// position, with epoch + 2 in `stream_writers` and on its lease connection's tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_writer_re_registers_with_a_new_epoch() {
    let env = Env::new().await;
    let writers = ["a", "b"];
    let a_pool = env.db.pool(3).unwrap();
    // a does not recover others: its housekeeping's only use of its pool is then taking
    // the lease back.
    let a = start_on(
        &env,
        &a_pool,
        fast(&env, "a", &writers).reclaim_dead_writers(false),
    )
    .await;
    let b = start(&env, fast(&env, "b", &writers)).await;
    let e0 = epoch(&env, "a").await;
    write(&a, &a_pool).await; // unknown to b: holds b's P back
    write(&b, &env.pool).await;
    // Take every connection of a's pool: re-acquiring the lease has to wait.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(a_pool.get().await.unwrap());
    }
    lose_lease(&env, "a").await;
    eventually("a notices the lost lease", async || a.is_fenced()).await;
    eventually("b recovers a", async || {
        !events_for(&env, "a").await.is_empty()
    })
    .await;
    let f = events_for(&env, "a").await[0].2;
    assert_eq!(epoch(&env, "a").await, e0 + 1);
    {
        let client = &mut held[0];
        let mut tx = a.transaction(client).await.unwrap();
        assert!(matches!(tx.next_id().await, Err(Error::Fenced { .. })));
    }
    assert!(matches!(a.next_id().await, Err(Error::Fenced { .. })));

    drop(held);
    eventually("a re-registers", async || !a.is_fenced()).await;
    assert_eq!(
        epoch(&env, "a").await,
        e0 + 2,
        "a new epoch after the fence"
    );
    let z = write(&a, &a_pool).await;
    assert!(z > f, "allocated {z} below the recovery position {f}");
    let tag = format!("{}:{}", tag_prefix(&env, "a").await, e0 + 2);
    let client = env.pool.get().await.unwrap();
    let tagged: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
             AND datname = current_database()",
            &[&tag],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tagged, 1, "the new lease connection carries {tag}");
    // Live again: b does not recover it any more.
    let n = events_for(&env, "a").await.len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(events_for(&env, "a").await.len(), n);
}

// why: issue 5 item 1 — every writer registers in `stream_writers` with its epoch, start and
// heartbeat; the heartbeat moves while it runs; a restart takes the next epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_writers_rows_carry_epoch_and_a_moving_heartbeat() {
    let env = Env::new().await;
    let writers = ["a", "b"];
    let a = start(&env, fast(&env, "a", &writers)).await;
    let _b = start(&env, fast(&env, "b", &writers)).await;
    let _reader = start(&env, fast(&env, "r", &writers)).await;
    let rows = async || -> BTreeMap<String, (i64, i64, f64, f64)> {
        let client = env.pool.get().await.unwrap();
        client
            .query(
                "SELECT instance_name, writer_key, epoch, \
                 extract(epoch FROM started)::float8, extract(epoch FROM heartbeat)::float8 \
                 FROM stream_writers WHERE stream_name = 'events'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
            .collect()
    };
    let first = rows().await;
    assert_eq!(
        first.keys().map(String::as_str).collect::<Vec<_>>(),
        ["a", "b"],
        "writers register, readers do not"
    );
    for (w, (key, epoch, started, heartbeat)) in &first {
        assert_eq!(*key, writer_lock_key("events", w));
        assert_eq!(*epoch, 1);
        assert!(heartbeat >= started);
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let later = rows().await;
    for w in ["a", "b"] {
        assert!(later[w].3 > first[w].3, "{w}'s heartbeat did not move");
        assert_eq!(later[w].2, first[w].2, "{w}'s start moved");
    }
    drop(a);
    let _a = MultiWriterIdGenerator::postgres(env.pool.clone(), fast(&env, "a", &writers))
        .await
        .unwrap();
    let again = rows().await;
    assert_eq!(again["a"].1, 2, "a restart takes the next epoch");
    assert!(again["a"].2 > first["a"].2, "a restart moves `started`");
    assert_eq!(again["b"].1, 1);
}

// ----- item 3: the gap ledger -------------------------------------------------------------

// why: issue 5 item 3 — IDs finished without a row are counted per writer and cause:
// rolled back, abandoned (a dropped transaction, a dropped autocommit allocation),
// commit-failed (a deferred constraint refusing the COMMIT) and reclaimed (recorded by the
// recovering process under the dead writer's name); `gaps()` shows them and the
// housekeeping flushes them to `stream_gaps` (exactly once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gap_ledger_counts_each_cause_and_flushes_to_stream_gaps() {
    let env = Env::new().await;
    env.exec(
        "CREATE TABLE parent (id INT PRIMARY KEY); \
         CREATE TABLE child (p INT REFERENCES parent DEFERRABLE INITIALLY DEFERRED)",
    )
    .await;
    let writers = ["a", "d"];
    let a = start(&env, fast(&env, "a", &writers)).await;
    let d = start_zombie(&env, "d", &writers).await;
    let mut client = env.pool.get().await.unwrap();

    // Rolled back: 4.
    let mut tx = a.transaction(&mut client).await.unwrap();
    tx.next_ids(4).await.unwrap();
    tx.rollback().await.unwrap();
    // Abandoned: a dropped transaction (2) and a dropped allocation (3).
    let mut tx = a.transaction(&mut client).await.unwrap();
    tx.next_ids(2).await.unwrap();
    drop(tx);
    drop(a.next_ids(3).await.unwrap());
    // Commit failed: 1.
    let mut tx = a.transaction(&mut client).await.unwrap();
    let id = tx.next_id().await.unwrap();
    tx.execute(INSERT, &[&id, &"a"]).await.unwrap();
    tx.execute("INSERT INTO child VALUES (1)", &[])
        .await
        .unwrap();
    assert!(matches!(tx.commit().await, Err(Error::Database { .. })));
    // A committed row is no gap.
    write(&a, &env.pool).await;
    // Reclaimed: d writes a row a does not know of, and dies.
    write(&d, &env.pool).await;
    lose_lease(&env, "d").await;
    eventually("a recovers d", async || {
        !events_for(&env, "d").await.is_empty()
    })
    .await;

    let key = |w: &str, c: GapCause| (w.to_owned(), c);
    let expected_a = BTreeMap::from([
        (key("a", GapCause::RolledBack), 4),
        (key("a", GapCause::Abandoned), 5),
        (key("a", GapCause::CommitFailed), 1),
        (key("d", GapCause::Reclaimed), 1),
    ]);
    eventually("a's ledger", async || a.gaps() == expected_a).await;
    assert_eq!(events_for(&env, "d").await.len(), 1);
    assert_eq!(
        d.gaps(),
        BTreeMap::new(),
        "the zombie finished nothing without a row"
    );
    let expected_rows = BTreeMap::from([
        (("a".to_owned(), "rolled_back".to_owned()), 4),
        (("a".to_owned(), "abandoned".to_owned()), 5),
        (("a".to_owned(), "commit_failed".to_owned()), 1),
        (("d".to_owned(), "reclaimed".to_owned()), 1),
    ]);
    eventually("stream_gaps holds the ledger", async || {
        stream_gaps(&env).await == expected_rows
    })
    .await;
    // Flushed once: later ticks add nothing.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(stream_gaps(&env).await, expected_rows);
    assert_eq!(
        GapCause::RolledBack.to_string(),
        "rolled_back",
        "Display is the stored name"
    );
}

// ----- configuration ----------------------------------------------------------------------

// why: `reclaim_dead_writers(false)` turns recovery off in that process: a dead writer
// then holds its P back (well past the bound) with no recovery recorded and no sequence
// value taken; another process whose P the dead writer holds back recovers it and
// announces the position on its behalf, which releases the first one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reclaim_dead_writers_false_disables_recovery() {
    let env = Env::new().await;
    let writers = ["b", "d"];
    let bus = InProcess::new();
    let b = start(&env, fast(&env, "b", &writers).reclaim_dead_writers(false)).await;
    b.replicate(bus.clone());
    // d dies holding an ID it never used (nobody, not even a restarted reader scanning the
    // rows, can tell it is decided).
    let d = start_zombie(&env, "d", &writers).await;
    let held = d.next_id().await.unwrap();
    lose_lease(&env, "d").await;
    write(&b, &env.pool).await;
    let last = b.max_allocated_token().await.unwrap();
    assert!(held.id() < last);
    let waited = wait_all(&[&b], last, BOUND + MARGIN).await;
    assert_eq!(waited, vec![None], "P moved without recovery");
    assert_eq!(events_for(&env, "d").await, vec![]);
    assert_eq!(
        b.max_allocated_token().await.unwrap(),
        last,
        "an F was taken"
    );

    let r = start(&env, fast(&env, "r", &writers)).await;
    r.replicate(bus.clone());
    assert_all_reach(&[&b, &r], last, "after another process recovered d").await;
    let events = events_for(&env, "d").await;
    assert!(
        !events.is_empty() && events.iter().all(|e| e.3 == "r"),
        "{events:?}"
    );
    drop(held);
}

// why: spec §1.3 assumption 1 enforced (issue 5 item 1) — a second live process with the
// same instance name is refused with `Error::LeaseHeld` after `writer_lock_timeout`
// (the lease wait), changing nothing; once the first is gone the name can start again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_live_process_with_the_same_instance_is_refused() {
    let env = Env::new().await;
    let writers = ["a", "b"];
    let a = start(&env, fast(&env, "a", &writers)).await;
    let e = epoch(&env, "a").await;
    let t = Instant::now();
    let err = MultiWriterIdGenerator::postgres(
        env.pool.clone(),
        fast(&env, "a", &writers).writer_lock_timeout(Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    let waited = t.elapsed();
    match &err {
        Error::LeaseHeld {
            stream,
            instance,
            waited_ms,
        } => {
            assert_eq!((stream.as_str(), instance.as_str()), ("events", "a"));
            assert_eq!(*waited_ms, 300);
        }
        other => panic!("expected LeaseHeld, got {other:?}"),
    }
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert_eq!(
        epoch(&env, "a").await,
        e,
        "the refused start registered an epoch"
    );
    assert!(!a.is_fenced());
    write(&a, &env.pool).await;

    drop(a);
    let a2 = MultiWriterIdGenerator::postgres(env.pool.clone(), fast(&env, "a", &writers))
        .await
        .expect("restart once the first process is gone");
    assert_eq!(epoch(&env, "a").await, e + 1);
    write(&a2, &env.pool).await;
}

//! Dead-writer recovery on SQLite (issue 5 item 1, spec §12.6, §4.6): OS processes sharing
//! one database file. A writer's lease is an exclusive lock on a file next to the database,
//! released by the operating system when the process dies; SQLite rolls back the dead
//! process's open transaction itself, so a free lease file proves the writer can no longer
//! commit.
//!
//! Child processes are this test binary re-executed with `RECLAIM_SQLITE_ROLE` set (the
//! `child_process` test); they replicate with the parent over a small UDP transport defined
//! here (spec §4.6: "a transport that suits one machine"). Recovery times are printed
//! (`--nocapture`); assertions use the issue's bound of 2 s plus a margin.
// A test binary: panicking on an unexpected error is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use streamid::replication::{
    Connection, InProcess, Publisher, Subscriber, Transport, TransportError,
};
use streamid::{Error, GapCause, MultiWriterIdGenerator, StreamConfig};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The issue's bound: a killed writer stops holding `P` back within 2 s.
const BOUND: Duration = Duration::from_secs(2);
/// Slack for a loaded machine (debug build, tests in parallel).
const MARGIN: Duration = Duration::from_secs(1);

const INSERT: &str = "INSERT INTO events (stream_ordering, instance_name) VALUES (?1, ?2)";

// ----- a UDP transport between processes of one machine -------------------------------------

/// Every process binds its own port and sends each announcement to every port of the
/// stream (its own echo is ignored by the driver). Lossy, like any transport may be.
#[derive(Clone)]
struct Udp {
    port: u16,
    peers: Vec<u16>,
}

struct UdpPublisher {
    socket: Arc<tokio::net::UdpSocket>,
    peers: Vec<u16>,
}

struct UdpSubscriber {
    socket: Arc<tokio::net::UdpSocket>,
}

impl Transport for Udp {
    fn name(&self) -> &'static str {
        "udp"
    }

    fn connect(&self) -> BoxFuture<'static, Result<Connection, TransportError>> {
        let (port, peers) = (self.port, self.peers.clone());
        async move {
            let socket = Arc::new(tokio::net::UdpSocket::bind(("127.0.0.1", port)).await?);
            let publisher = UdpPublisher {
                socket: Arc::clone(&socket),
                peers,
            };
            Ok((
                Box::new(publisher) as Box<dyn Publisher>,
                Box::new(UdpSubscriber { socket }) as Box<dyn Subscriber>,
            ))
        }
        .boxed()
    }
}

impl Publisher for UdpPublisher {
    fn publish<'a>(&'a mut self, message: &'a str) -> BoxFuture<'a, Result<(), TransportError>> {
        async move {
            for &peer in &self.peers {
                self.socket
                    .send_to(message.as_bytes(), ("127.0.0.1", peer))
                    .await?;
            }
            Ok(())
        }
        .boxed()
    }
}

impl Subscriber for UdpSubscriber {
    fn recv(&mut self) -> BoxFuture<'_, Result<String, TransportError>> {
        async move {
            let mut buf = vec![0_u8; 8192];
            let (n, _) = self.socket.recv_from(&mut buf).await?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        }
        .boxed()
    }
}

/// `n` free UDP ports of 127.0.0.1.
fn free_ports(n: usize) -> Vec<u16> {
    let sockets: Vec<std::net::UdpSocket> = (0..n)
        .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"))
        .collect();
    sockets
        .iter()
        .map(|s| s.local_addr().expect("addr").port())
        .collect()
}

// ----- helpers ---------------------------------------------------------------------------

/// A fresh directory with `events.db` holding the backing table; removed on drop.
struct Db {
    dir: PathBuf,
    path: PathBuf,
}

impl Db {
    fn new(name: &str) -> Db {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "streamid-reclaim-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("events.db");
        rusqlite::Connection::open(&path)
            .and_then(|c| {
                c.execute_batch(
                    "CREATE TABLE events (stream_ordering INTEGER NOT NULL, instance_name TEXT)",
                )
            })
            .expect("schema");
        Db { dir, path }
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> T {
        read(&self.path, f).await
    }

    async fn rows(&self) -> Vec<i64> {
        rows_upto(&self.path, i64::MAX).await
    }

    /// `(position, by_instance)` of every recovery of `instance`.
    async fn recoveries(&self, instance: &str) -> Vec<(i64, String)> {
        let instance = instance.to_owned();
        self.read(move |c| {
            let exists: bool = c.query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'stream_events'",
                [],
                |r| r.get(0),
            )?;
            if !exists {
                return Ok(Vec::new());
            }
            c.prepare(
                "SELECT position, by_instance FROM stream_events WHERE stream_name = 'events' \
                 AND instance_name = ?1 AND event = 'reclaimed' ORDER BY rowid",
            )?
            .query_map([instance], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })
        .await
    }

    async fn recorded(&self, instance: &str) -> Option<i64> {
        let instance = instance.to_owned();
        self.read(move |c| {
            let mut s = c.prepare(
                "SELECT stream_id FROM stream_positions WHERE stream_name = 'events' \
                 AND instance_name = ?1",
            )?;
            let mut rows = s.query_map([instance], |r| r.get(0))?;
            rows.next().transpose()
        })
        .await
    }

    async fn counter(&self) -> i64 {
        self.read(|c| {
            c.query_row(
                "SELECT last_value FROM streamid_sequences WHERE name = 'events'",
                [],
                |r| r.get(0),
            )
        })
        .await
    }

    async fn gaps(&self, instance: &str, cause: &str) -> Option<i64> {
        let (instance, cause) = (instance.to_owned(), cause.to_owned());
        self.read(move |c| {
            let mut s = c.prepare(
                "SELECT gaps FROM stream_gaps WHERE stream_name = 'events' \
                 AND instance_name = ?1 AND cause = ?2",
            )?;
            let mut rows = s.query_map([instance, cause], |r| r.get(0))?;
            rows.next().transpose()
        })
        .await
    }
}

/// Runs `f` on a fresh connection to `path` (on the blocking pool).
async fn read<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
) -> T {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(&path).expect("open");
        conn.busy_timeout(Duration::from_secs(10)).expect("busy");
        f(&conn).expect("query")
    })
    .await
    .unwrap()
}

/// Row IDs at or below `p`, ascending.
async fn rows_upto(path: &Path, p: i64) -> Vec<i64> {
    read(path, move |c| {
        c.prepare("SELECT stream_ordering FROM events WHERE stream_ordering <= ?1 ORDER BY 1")?
            .query_map([p], |r| r.get(0))?
            .collect()
    })
    .await
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(instance: &str, writers: &[&str]) -> StreamConfig {
    StreamConfig::new("events", instance)
        .table("events", "instance_name", "stream_ordering")
        .writers(writers.iter().copied())
        .busy_timeout(Duration::from_secs(10))
        .position_write_interval(Duration::from_millis(50))
        .writer_lock_timeout(Duration::from_secs(5))
}

async fn start(path: &Path, config: StreamConfig) -> MultiWriterIdGenerator {
    MultiWriterIdGenerator::sqlite(path, config)
        .await
        .expect("generator start")
}

/// Writes `n` committed rows in one transaction; returns the largest ID. With `n > 1` the
/// other processes learn only the writer's new position, not each ID, so a dead writer
/// really holds their `P` back (they cannot walk over the smaller IDs, §6.2).
async fn write_n(g: &MultiWriterIdGenerator, n: usize) -> i64 {
    let mut tx = g.sqlite_transaction().await.unwrap();
    let ids = tx.next_ids(n).await.unwrap();
    let instance = g.instance_name().to_owned();
    for &id in &ids {
        tx.execute(INSERT, (id, instance.clone())).await.unwrap();
    }
    tx.commit().await.unwrap();
    *ids.last().unwrap()
}

/// Writes two rows per transaction every `every` until stopped.
struct Writing {
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Writing {
    fn start(g: &MultiWriterIdGenerator, every: Duration) -> Writing {
        let stop = Arc::new(AtomicBool::new(false));
        let (g, flag) = (g.clone(), Arc::clone(&stop));
        let task = tokio::spawn(async move {
            while !flag.load(Ordering::Acquire) {
                write_n(&g, 2).await;
                tokio::time::sleep(every).await;
            }
        });
        Writing { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap();
    }
}

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

/// The lease key of `(stream, instance)`: FNV-1a over length-prefixed parts, the pinned
/// derivation of the library's `keys` module.
fn lease_key(stream: &str, instance: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [
        b"streamid/lease/v1".as_slice(),
        stream.as_bytes(),
        instance.as_bytes(),
    ] {
        for &b in (part.len() as u64).to_le_bytes().iter().chain(part) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h as i64
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// The reader's-eye audit of §1.2: samples `P` and the rows at or below it; at the end no
/// row at or below an observed `P` may have appeared later.
struct Audit {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<(i64, Vec<i64>)>>,
}

impl Audit {
    fn start(g: &MultiWriterIdGenerator, db: &Db) -> Audit {
        let stop = Arc::new(AtomicBool::new(false));
        let (g, flag, path) = (g.clone(), Arc::clone(&stop), db.path.clone());
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Acquire) {
                let p = g.current_token();
                seen.push((p, rows_upto(&path, p).await));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        });
        Audit { stop, task }
    }

    async fn check(self, db: &Db) -> usize {
        self.stop.store(true, Ordering::Release);
        let seen = self.task.await.unwrap();
        let all = db.rows().await;
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

// ----- child processes -------------------------------------------------------------------

const ROLE: &str = "RECLAIM_SQLITE_ROLE";
const DB: &str = "RECLAIM_SQLITE_DB";
const INSTANCE: &str = "RECLAIM_SQLITE_INSTANCE";
const WRITERS: &str = "RECLAIM_SQLITE_WRITERS";
const PORT: &str = "RECLAIM_SQLITE_PORT";
const PEERS: &str = "RECLAIM_SQLITE_PEERS";

/// A child process running [`child_process`]; killed (SIGKILL) when dropped.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Proc {
    fn spawn(
        role: &str,
        db: &Path,
        instance: &str,
        writers: &[&str],
        port: u16,
        peers: &[u16],
    ) -> Proc {
        let exe = std::env::current_exe().expect("test binary");
        let peers: Vec<String> = peers.iter().map(u16::to_string).collect();
        let mut child = Command::new(exe)
            .args([
                "child_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role)
            .env(DB, db)
            .env(INSTANCE, instance)
            .env(WRITERS, writers.join(","))
            .env(PORT, port.to_string())
            .env(PEERS, peers.join(","))
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

    /// SIGKILL: no destructor runs, the OS releases the lease file lock.
    fn kill(&mut self) {
        self.child.kill().expect("kill child");
        self.child.wait().expect("reap child");
    }

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
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// why: not a test of its own — the entry point of the child processes the multi-process
// tests start (it returns at once unless `RECLAIM_SQLITE_ROLE` is set).
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
    let (path, instance) = (PathBuf::from(var(DB)), var(INSTANCE));
    let writers: Vec<String> = var(WRITERS).split(',').map(str::to_owned).collect();
    let writers: Vec<&str> = writers.iter().map(String::as_str).collect();
    let port: u16 = var(PORT).parse().unwrap();
    let peers: Vec<u16> = var(PEERS).split(',').map(|p| p.parse().unwrap()).collect();
    let g = start(&path, config(&instance, &writers)).await;
    g.replicate(Udp { port, peers });
    println!("CHILD READY");
    match role {
        // Writes a few rows, then dies (SIGKILL from the parent) inside an open
        // transaction holding SQLite's write lock, its ID allocated and its row written.
        "dead" => {
            for _ in 0..20 {
                write_n(&g, 1).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut tx = g.sqlite_transaction().await.unwrap();
            let id = tx.next_id().await.unwrap();
            tx.execute(INSERT, (id, instance.clone())).await.unwrap();
            println!("CHILD OPEN {id}");
            tokio::time::sleep(Duration::from_secs(120)).await;
            drop(tx);
        }
        // Holds the instance name, and an allocated ID, until killed.
        "holder" => {
            let held = g.next_id().await.unwrap();
            println!("CHILD HELD {}", held.id());
            tokio::time::sleep(Duration::from_secs(120)).await;
            drop(held);
        }
        // Keeps writing; answers `WAIT <tag> <target> <origin unix ms>` with
        // `WAITED <tag> <reached> <ms since origin>`, `STOP` with `STOPPED`, `EXIT` by exiting.
        "survivor" => survivor(g).await,
        _ => panic!("unknown role {role}"),
    }
}

async fn survivor(g: MultiWriterIdGenerator) {
    let mut writing = Some(Writing::start(&g, Duration::from_millis(20)));
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
                    println!("CHILD WAITED {tag} {} {ms}", outcome.is_reached());
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

async fn child_wait(c: &mut Proc, tag: &str, target: i64, origin: u128) -> (bool, u128) {
    c.send(&format!("WAIT {tag} {target} {origin}"));
    let answer = c.expect(&format!("WAITED {tag} ")).await;
    let mut words = answer.split_whitespace();
    let reached = words.next().unwrap() == "true";
    let ms = words.next().unwrap().parse().unwrap();
    (reached, ms)
}

// ----- tests -----------------------------------------------------------------------------

// why: issue 5 item 1 on the embedded backend — a writer process killed with SIGKILL in the
// middle of a transaction (SQLite's write lock held, its ID allocated, its row written)
// stops holding P back within 2 s on every surviving process sharing the file (a writer in
// another process, a writer and a reader in this one, replicating over UDP), and keeps not
// holding it back while the stream moves on (repeated recovery, spec §12.6 step 5). The
// killed transaction's row never appears, recovery positions are fresh counter values
// above it, and a reader audit finds no row appearing at or below a P it observed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_writer_process_is_recovered_within_the_bound() {
    let db = Db::new("kill");
    let writers = ["s", "c", "d"];
    let ports = free_ports(4);
    let (s_port, r_port, c_port, d_port) = (ports[0], ports[1], ports[2], ports[3]);
    let s = start(&db.path, config("s", &writers)).await;
    let r = start(&db.path, config("r", &writers)).await;
    s.replicate(Udp {
        port: s_port,
        peers: ports.clone(),
    });
    r.replicate(Udp {
        port: r_port,
        peers: ports.clone(),
    });
    let mut d = Proc::spawn("dead", &db.path, "d", &writers, d_port, &ports);
    d.expect("READY").await;
    let mut c = Proc::spawn("survivor", &db.path, "c", &writers, c_port, &ports);
    c.expect("READY").await;
    let audit = Audit::start(&r, &db);
    let writing = Writing::start(&s, Duration::from_millis(20));

    let open: i64 = d.expect("OPEN ").await.parse().unwrap();
    assert!(s.current_token() < open && r.current_token() < open);
    // At a random phase of the survivors' recovery ticks, so runs sample the whole bound.
    let phase = rand::random_range(0..600);
    tokio::time::sleep(Duration::from_millis(phase)).await;
    d.kill();
    let killed_unix = unix_ms();
    let survivors = [&s, &r];
    let (parent, (child_reached, child_ms)) = tokio::join!(
        wait_all(&survivors, open, BOUND + MARGIN),
        child_wait(&mut c, "killed", open, killed_unix)
    );
    assert!(child_reached, "survivor c never passed {open}");
    for (who, t) in ["s", "r"].iter().zip(&parent) {
        assert!(
            t.is_some(),
            "{who} never passed the killed writer's open ID {open}"
        );
    }
    let parent_ms: Vec<u128> = parent.iter().flatten().map(Duration::as_millis).collect();
    println!("sqlite: SIGKILLed writer passed after: s, r {parent_ms:?} ms; c {child_ms} ms");

    let mut checkpoints = Vec::new();
    for k in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let target = s.max_allocated_token().await.unwrap();
        let origin = unix_ms();
        let tag = format!("cp{k}");
        let (parent, (reached, ms)) = tokio::join!(
            wait_all(&survivors, target, BOUND + MARGIN),
            child_wait(&mut c, &tag, target, origin)
        );
        assert!(reached, "survivor c stuck below checkpoint {target}");
        assert!(
            parent.iter().all(Option::is_some),
            "s or r stuck below {target}"
        );
        let mut times: Vec<u128> = parent.iter().flatten().map(Duration::as_millis).collect();
        times.push(ms);
        checkpoints.push(times);
    }
    println!("sqlite: checkpoints while writing (s, r, c ms): {checkpoints:?}");

    writing.stop().await;
    c.send("STOP");
    c.expect("STOPPED").await;
    let last = s.max_allocated_token().await.unwrap();
    let origin = unix_ms();
    let (parent, (reached, ms)) = tokio::join!(
        wait_all(&survivors, last, BOUND + MARGIN),
        child_wait(&mut c, "final", last, origin)
    );
    assert!(
        reached && parent.iter().all(Option::is_some),
        "stuck below {last} at the end"
    );
    println!("sqlite: final (s, r, c ms): {parent:?} {ms}");
    c.send("EXIT");
    c.wait_exit();
    let samples = audit.check(&db).await;
    assert!(samples > 20, "the audit ran ({samples} samples)");
    drop((s, r));
    tokio::time::sleep(Duration::from_millis(300)).await;

    let rows = db.rows().await;
    assert!(
        !rows.contains(&open),
        "the killed transaction's row committed"
    );
    let unique: BTreeSet<i64> = rows.iter().copied().collect();
    assert_eq!(unique.len(), rows.len(), "an ID was used twice");
    let recoveries = db.recoveries("d").await;
    assert!(
        recoveries.len() >= 2,
        "recovered repeatedly: {recoveries:?}"
    );
    let positions: BTreeSet<i64> = recoveries.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        positions.len(),
        recoveries.len(),
        "each recovery takes a fresh ID"
    );
    for (p, by) in &recoveries {
        assert!(*p > open && !unique.contains(p), "recovered to {p}");
        assert!(["s", "c", "r"].contains(&by.as_str()), "recovered by {by}");
    }
    assert_eq!(db.recorded("d").await, positions.last().copied());
}

// why: spec §1.3 assumption 1 enforced on SQLite (issue 5 item 1) — while a process holds
// an instance name (its lease file locked), a second process with the same name is refused
// with `Error::LeaseHeld` after `writer_lock_timeout`; the live holder is never recovered;
// once it is killed the operating system frees the lease and the name starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_live_process_with_the_same_instance_is_refused() {
    let db = Db::new("lease");
    let writers = ["w", "p"];
    let ports = free_ports(1);
    let mut holder = Proc::spawn("holder", &db.path, "w", &writers, ports[0], &ports);
    let held: i64 = holder.expect("HELD ").await.parse().unwrap();
    // The lease: a file next to the database, named after the (stream, instance) key.
    let lease = db.dir.join(format!(
        "events.db.streamid-{:016x}.lease",
        lease_key("events", "w") as u64
    ));
    assert!(lease.exists(), "no lease file {}", lease.display());

    let t = Instant::now();
    let err = MultiWriterIdGenerator::sqlite(
        &db.path,
        config("w", &writers).writer_lock_timeout(Duration::from_millis(300)),
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
            assert_eq!((stream.as_str(), instance.as_str()), ("events", "w"));
            assert_eq!(*waited_ms, 300);
        }
        other => panic!("expected LeaseHeld, got {other:?}"),
    }
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(5));

    // Another instance works meanwhile, and does not recover the live holder, whose open
    // ID holds its P back.
    let p = start(
        &db.path,
        config("p", &writers).reclaim_interval(Duration::from_millis(100)),
    )
    .await;
    let y = write_n(&p, 1).await;
    assert!(y > held);
    let counter = db.counter().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(
        p.current_token() < held,
        "P passed the live holder's ID {held}"
    );
    assert_eq!(
        db.recoveries("w").await,
        vec![],
        "a live holder was recovered"
    );
    assert_eq!(
        db.counter().await,
        counter,
        "recovery attempts took counter values"
    );

    // Killed: its lease file is free, p recovers it, and the name starts again.
    holder.kill();
    let t = Instant::now();
    assert_eq!(wait_all(&[&p], y, BOUND + MARGIN).await.len(), 1);
    assert!(
        p.current_token() >= y,
        "the killed holder was not recovered"
    );
    println!(
        "sqlite: killed holder recovered after {} ms",
        t.elapsed().as_millis()
    );
    let w = start(&db.path, config("w", &writers)).await;
    assert!(write_n(&w, 1).await > y);
}

// why: `reclaim_dead_writers(false)` on SQLite — a writer process killed while holding an
// allocated ID holds back P of a process with recovery disabled, which takes no counter
// value and records nothing; a reader with recovery enabled (in the same process as the
// first, replicating in-process) recovers it — one `stream_events` row, one `reclaimed`
// gap in its ledger and in `stream_gaps` — and announces the position on the dead writer's
// behalf, which releases the first one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_writer_is_recovered_unless_recovery_is_disabled() {
    let db = Db::new("disabled");
    let writers = ["a", "d"];
    let bus = InProcess::new();
    let a = start(
        &db.path,
        config("a", &writers)
            .reclaim_dead_writers(false)
            .reclaim_interval(Duration::from_millis(100)),
    )
    .await;
    a.replicate(bus.clone());
    let ports = free_ports(1);
    let mut d = Proc::spawn("holder", &db.path, "d", &writers, ports[0], &ports);
    let held: i64 = d.expect("HELD ").await.parse().unwrap();
    d.kill();
    let y = write_n(&a, 1).await;
    assert!(y > held);
    let counter = db.counter().await;
    assert_eq!(
        wait_all(&[&a], y, BOUND + MARGIN).await,
        vec![None],
        "P moved"
    );
    assert_eq!(db.recoveries("d").await, vec![]);
    assert_eq!(db.counter().await, counter, "a took a counter value");

    let r = start(
        &db.path,
        config("r", &writers).reclaim_interval(Duration::from_millis(100)),
    )
    .await;
    r.replicate(bus.clone());
    let times = wait_all(&[&a, &r], y, BOUND + MARGIN).await;
    assert!(times.iter().all(Option::is_some), "stuck: {times:?}");
    let recoveries = db.recoveries("d").await;
    assert_eq!(recoveries.len(), 1, "{recoveries:?}");
    assert_eq!(recoveries[0].1, "r");
    assert!(recoveries[0].0 > y);
    assert_eq!(
        r.gaps().get(&("d".to_owned(), GapCause::Reclaimed)),
        Some(&1)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while db.gaps("d", "reclaimed").await != Some(1) {
        assert!(
            Instant::now() < deadline,
            "stream_gaps never recorded the recovery"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// why: spec §1.2 liveness and §12.6 on SQLite — a listed writer that has never started
// (spec §1.3 item 2: a writer added to the list starts only after every process runs with
// the new list) has no transaction and can never commit until it starts, so it must not
// hold the others' P back; on PostgreSQL the proof covers it (lease free, no backend, writer
// lock free), on SQLite its lease file is free, or not yet created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listed_writer_that_never_started_does_not_stall_the_stream() {
    let db = Db::new("ghost");
    let writers = ["a", "b", "ghost"];
    let bus = InProcess::new();
    let fast = |i: &str| config(i, &writers).reclaim_interval(Duration::from_millis(100));
    let a = start(&db.path, fast("a")).await;
    let b = start(&db.path, fast("b")).await;
    a.replicate(bus.clone());
    b.replicate(bus.clone());
    let wa = Writing::start(&a, Duration::from_millis(10));
    let wb = Writing::start(&b, Duration::from_millis(10));
    tokio::time::sleep(Duration::from_millis(500)).await;
    wa.stop().await;
    wb.stop().await;
    let last = a.max_allocated_token().await.unwrap();
    let times = wait_all(&[&a, &b], last, BOUND + MARGIN).await;
    assert!(
        times.iter().all(Option::is_some),
        "a never-started writer holds P back: a at {}, b at {}, last {last} ({:?})",
        a.current_token(),
        b.current_token(),
        a.positions()
    );
    // Once recovered, the writer can still start, and allocates above everything.
    let ghost = start(&db.path, config("ghost", &writers)).await;
    assert!(write_n(&ghost, 1).await > last);
}

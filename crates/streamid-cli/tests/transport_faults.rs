//! Multi-process runs of the real binary with the replication transport broken mid-run
//! (issue 4 item 5): three `streamid worker write` processes, one idle writer process and a
//! `streamid worker read --tokens` process on one PostgreSQL stream, then `streamid verify`
//! on the reader's observations.
//!
//! - over LISTEN/NOTIFY, the listeners' backends are terminated (`pg_terminate_backend`)
//!   three times while the writers write;
//! - over Redis, the private `redis-server` is stopped for half a second, twice, while the
//!   writers write (nothing is persisted: it comes back empty);
//! - with no fault, the reader's lag behind the commits is measured while an idle writer
//!   (one that writes nothing) is listed among the writers: it must not hold the reader back.
//!
//! Every run must end with zero misses and duplicates, every committed row seen by both the
//! plain and the token reader, and every process agreeing on the final positions: each
//! prints its final `current_token()`, `current_token_for_writer(w)` for every writer, and
//! `max_allocated_token()` in its "done" line, and all of them equal the last allocated ID.

// A test binary: panicking on a failed step (helpers included) is how it reports failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The writers that write, and the one that only follows the stream.
const ACTIVE: [&str; 3] = ["a", "b", "c"];
const IDLE: &str = "idle";
/// How long the active writers write.
const WRITING: Duration = Duration::from_secs(5);

fn streamid() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamid"));
    cmd.env_remove("DATABASE_URL").env_remove("RUST_LOG");
    cmd
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
}

fn stream_args(database: &str, instance: &str, replication: &str) -> Vec<String> {
    let writers = [&ACTIVE[..], &[IDLE]].concat().join(",");
    [
        "--database",
        database,
        "--stream",
        "events",
        "--table",
        "events",
        "--instance",
        instance,
        "--writers",
        &writers,
        "--replication",
        replication,
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The processes of one run and where they write.
struct Run {
    database: String,
    replication: String,
    dir: PathBuf,
    writers: Vec<(String, Child)>,
}

impl Run {
    /// Starts the three active writers and the idle one, and waits until each has started.
    fn start(database: &str, replication: &str, dir: &Path) -> Run {
        let mut run = Run {
            database: database.to_owned(),
            replication: replication.to_owned(),
            dir: dir.to_owned(),
            writers: Vec::new(),
        };
        for instance in ACTIVE.iter().chain([&IDLE]) {
            let mut cmd = streamid();
            cmd.args(["worker", "write"])
                .args(stream_args(database, instance, replication))
                .arg("--log")
                .arg(dir.join(format!("{instance}.log")))
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if *instance == IDLE {
                cmd.arg("--idle");
            } else {
                let writing = format!("{}ms", WRITING.as_millis());
                cmd.args(["--duration", &writing, "--wait-for-signal"])
                    .args(["--rollback-rate", "0.1", "--max-delay-ms", "4"]);
            }
            let child = cmd.spawn().expect("start a writer");
            run.writers.push((instance.to_string(), child));
        }
        // Every listed writer runs before the reader starts (a listed writer that never ran
        // holds the reader at its start position until dead-writer recovery).
        for (instance, _) in &run.writers {
            run.wait_for_line(instance, "started");
        }
        run
    }

    fn log(&self, instance: &str) -> PathBuf {
        self.dir.join(format!("{instance}.log"))
    }

    fn observations(&self) -> PathBuf {
        self.dir.join("observations.jsonl")
    }

    fn wait_for_line(&self, instance: &str, event: &str) {
        let needle = format!("\"event\":\"{event}\"");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !std::fs::read_to_string(self.log(instance)).is_ok_and(|t| t.contains(&needle)) {
            assert!(
                Instant::now() < deadline,
                "writer {instance} printed no {event} line within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn start_reader(&self) -> Child {
        streamid()
            .args(["worker", "read"])
            .args(stream_args(&self.database, "r", &self.replication))
            .args(["--tokens", "--until-idle", "2s", "--duration", "50s"])
            .arg("--observations")
            .arg(self.observations())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the reader")
    }

    /// Waits for the reader to go idle, then stops every writer with SIGTERM and checks the
    /// verdict and the agreement on the final positions. Returns the committed IDs.
    fn finish(mut self, reader: Child) -> BTreeSet<i64> {
        let out = wait(reader, "the reader", Duration::from_secs(55));
        let reader_done: Value =
            serde_json::from_slice(&out.stdout).expect("the reader's done line");
        assert_eq!(reader_done["reason"], "idle", "{reader_done}");
        let mut done = vec![("r".to_owned(), reader_done)];
        let mut committed = BTreeSet::new();
        // One at a time, so that a failed check leaves the rest to `Drop`.
        while !self.writers.is_empty() {
            let (instance, child) = self.writers.remove(0);
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success());
            wait(
                child,
                &format!("writer {instance}"),
                Duration::from_secs(20),
            );
            let (ids, line) = outcomes(&self.dir.join(format!("{instance}.log")));
            if instance == IDLE {
                assert!(ids.is_empty(), "the idle writer wrote {ids:?}");
            } else {
                assert!(!ids.is_empty(), "writer {instance} committed nothing");
            }
            committed.extend(ids);
            done.push((instance, line));
        }
        assert_agreement(&done);
        assert_verified(&self.database, &self.observations(), committed.len());
        committed
    }
}

impl Drop for Run {
    /// A failed test must not leave writers behind: `--idle` and `--wait-for-signal` ones
    /// run until told to stop.
    fn drop(&mut self) {
        for (_, child) in &mut self.writers {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits for `child`, at most `limit`; kills it and fails after that.
fn wait(mut child: Child, what: &str, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("poll the child").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("collect");
            panic!(
                "{what} did not finish within {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("collect the output");
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The IDs a writer's log reports as committed, and its done line.
fn outcomes(log: &Path) -> (BTreeSet<i64>, Value) {
    let text = std::fs::read_to_string(log).expect("read a writer log");
    let mut committed = BTreeSet::new();
    let mut done = None;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        match v["event"].as_str() {
            Some("committed") => assert!(committed.insert(v["id"].as_i64().unwrap())),
            Some("done") => done = Some(v),
            Some("started" | "rolled_back") => {}
            other => panic!("unexpected line {other:?}: {line}"),
        }
    }
    let done = done.unwrap_or_else(|| panic!("no done line in {}", log.display()));
    assert_eq!(done["failed"], 0, "{done}");
    assert_eq!(done["interrupted"], true, "{done}");
    (committed, done)
}

/// Every process's current token, and its view of every writer's position, equal the last
/// allocated ID, which every process reports alike.
fn assert_agreement(done: &[(String, Value)]) {
    let last = done[0].1["max_allocated_token"]
        .as_i64()
        .expect("max_allocated_token");
    for (process, line) in done {
        assert_eq!(line["max_allocated_token"], last, "{process}: {line}");
        assert_eq!(line["current_token"], last, "{process}: {line}");
        let writers: BTreeMap<String, i64> =
            serde_json::from_value(line["writer_positions"].clone()).expect("writer_positions");
        assert_eq!(writers.len(), ACTIVE.len() + 1, "{process}: {line}");
        assert!(writers.values().all(|&p| p == last), "{process}: {line}");
        assert!(line["positions"].is_object(), "{process}: {line}");
    }
    assert_eq!(done[0].1["position"], last, "the reader read up to {last}");
}

/// `streamid verify`: no miss, no duplicate, every committed row seen by both tails.
fn assert_verified(database: &str, observations: &Path, committed: usize) {
    let out = streamid()
        .args(["verify", "--database", database, "--stream", "events"])
        .args(["--table", "events", "--instance-column", "instance_name"])
        .args(["--id-column", "id", "--json", "--observations"])
        .arg(observations)
        .output()
        .expect("run streamid verify");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["misses"], 0, "{report}");
    assert_eq!(report["ids_handed_out_twice"], 0, "{report}");
    assert_eq!(report["duplicate_rows"], 0, "{report}");
    assert_eq!(report["rows"], committed, "{report}");
    let readers = report["readers"].as_array().expect("readers");
    assert_eq!(readers.len(), 2, "plain and token reader: {report}");
    for reader in readers {
        assert_eq!(reader["all_rows_seen"], true, "{report}");
        assert_eq!(reader["seen"], committed, "{report}");
    }
}

/// Runs the fault `inject` at 1.2 s, 2.4 s and 3.6 s into the writing.
fn with_faults(mut inject: impl FnMut(usize)) {
    let started = Instant::now();
    for round in 0..3_u32 {
        let at = Duration::from_millis(1200) * (round + 1);
        std::thread::sleep(at.saturating_sub(started.elapsed()));
        inject(round as usize);
    }
    assert!(
        started.elapsed() < WRITING,
        "the faults took longer than the writing ({:?}): the machine is too slow for this test",
        started.elapsed()
    );
}

#[test]
fn notify_listeners_terminated_mid_run_lose_nothing() {
    let rt = runtime();
    let db = rt
        .block_on(streamid_testkit::fresh_database())
        .unwrap_or_else(|e| panic!("cannot start PostgreSQL for the tests: {e}"));
    let admin = rt.block_on(db.client()).expect("connect");
    let dir = tempfile::tempdir().expect("temp dir");
    let run = Run::start(&db.url, "notify", dir.path());
    let reader = run.start_reader();
    let mut terminated = Vec::new();
    with_faults(|_| {
        let rows = rt
            .block_on(admin.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = 'streamid-notify' AND datname = current_database()",
                &[],
            ))
            .expect("terminate the listeners");
        terminated.push(rows.len());
    });
    eprintln!("notify: listeners terminated per round: {terminated:?}");
    // Each round finds the listeners the previous one killed reconnected.
    assert!(terminated.iter().all(|&n| n >= 1), "{terminated:?}");
    assert!(terminated.iter().sum::<usize>() >= 10, "{terminated:?}");
    run.finish(reader);
}

#[test]
fn redis_restarted_mid_run_loses_nothing() {
    let redis = streamid_testkit::RedisServer::start()
        .unwrap_or_else(|e| panic!("cannot start redis-server for the tests: {e}"));
    let db = runtime()
        .block_on(streamid_testkit::fresh_database())
        .unwrap_or_else(|e| panic!("cannot start PostgreSQL for the tests: {e}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let run = Run::start(&db.url, &format!("redis:{}", redis.url()), dir.path());
    let reader = run.start_reader();
    with_faults(|round| {
        if round == 1 {
            return; // two outages, with a calm round between them
        }
        redis.stop().expect("stop redis-server");
        assert!(!redis.is_running());
        std::thread::sleep(Duration::from_millis(500));
        redis.start_again().expect("start redis-server again");
    });
    run.finish(reader);
}

/// Polls the writers' logs and the reader's observations while they run: the IDs committed,
/// and for every one the reader's position covered, the time from its line appearing in a
/// log to the reader's position covering it (at the polling's resolution).
fn reader_lags(run: &Run, until: Instant) -> (usize, Vec<Duration>) {
    let mut committed_at: BTreeMap<i64, Instant> = BTreeMap::new();
    let mut covered_at: BTreeMap<i64, Instant> = BTreeMap::new();
    let mut reader_position = 0;
    while Instant::now() < until {
        let now = Instant::now();
        for instance in ACTIVE {
            let text = std::fs::read_to_string(run.log(instance)).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("\"committed\"")) {
                let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
                if let Some(id) = v["id"].as_i64() {
                    committed_at.entry(id).or_insert(now);
                }
            }
        }
        let observations = std::fs::read_to_string(run.observations()).unwrap_or_default();
        for line in observations
            .lines()
            .filter(|l| l.contains("\"reader\":\"r\""))
        {
            let v: Value = serde_json::from_str(line).unwrap_or(Value::Null);
            reader_position = v["position"].as_i64().unwrap_or(0).max(reader_position);
        }
        for &id in committed_at.range(..=reader_position).map(|(id, _)| id) {
            covered_at.entry(id).or_insert(now);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let lags = committed_at
        .iter()
        .filter_map(|(id, at)| Some(covered_at.get(id)?.saturating_duration_since(*at)))
        .collect();
    (committed_at.len(), lags)
}

#[test]
fn an_idle_writer_does_not_hold_the_reader_back() {
    let db = runtime()
        .block_on(streamid_testkit::fresh_database())
        .unwrap_or_else(|e| panic!("cannot start PostgreSQL for the tests: {e}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let run = Run::start(&db.url, "notify", dir.path());
    let reader = run.start_reader();
    let (committed, mut lags) =
        reader_lags(&run, Instant::now() + WRITING + Duration::from_secs(1));
    lags.sort();
    assert!(committed > 100, "too few commits: {committed}");
    // A reader held back by the idle writer covers next to nothing by then (13 of ~1000
    // when the idle writer announced nothing, `--replication none`).
    assert!(
        lags.len() * 10 >= committed * 9,
        "the reader covered only {} of {committed} commits within 1 s of the end",
        lags.len()
    );
    let median = lags[lags.len() / 2];
    let p90 = lags[lags.len() * 9 / 10];
    eprintln!(
        "idle writer: reader lag over {} commits: median {median:?}, p90 {p90:?}, max {:?}",
        lags.len(),
        lags[lags.len() - 1]
    );
    // Held back by a silent writer, the reader would move only when the idle writer's
    // periodic announcement (every 1 s) arrives: a median near 500 ms.
    assert!(median < Duration::from_millis(150), "median lag {median:?}");
    assert!(p90 < Duration::from_millis(500), "p90 lag {p90:?}");
    run.finish(reader);
}

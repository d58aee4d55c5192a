//! Multi-process runs of the real binary: two `streamid worker write` processes and one
//! `streamid worker read` process on one database, then `streamid verify` on the reader's
//! observations and `streamid gaps` on the ledger.
//!
//! - PostgreSQL (private cluster from the testkit) with `--replication notify`, and with
//!   `--replication redis:URL` (private `redis-server` from the testkit);
//! - SQLite (one file shared by the three processes) with `--replication poll`: processes
//!   on one SQLite file have no channel between them, so they learn each other's positions
//!   by polling `stream_positions`, where every writer records its position.
//!
//! Each run must end with zero misses and zero duplicates, every committed row (as the
//! writers' logs report them) seen by both the plain and the token reader; then a planted
//! miss — a row inserted afterwards with a rolled-back ID, below positions the reader acted
//! on — makes `verify` exit 1 and name the ID.

// A test binary: panicking on a failed step (helpers included) is how it reports failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const WRITES: u32 = 150;

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

/// The stream options every process of a run shares.
fn stream_args(database: &str, instance: &str, replication: &str) -> Vec<String> {
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
        "a,b",
        "--replication",
        replication,
    ]
    .map(str::to_owned)
    .to_vec()
}

fn spawn_writer(database: &str, instance: &str, replication: &str, log: &Path) -> Child {
    streamid()
        .args(["worker", "write"])
        .args(stream_args(database, instance, replication))
        .args(["--rows", &WRITES.to_string()])
        .args(["--rollback-rate", "0.15", "--max-delay-ms", "4"])
        .args(["--report-every-ms", "200", "--log"])
        .arg(log)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a writer")
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

/// The IDs a writer's log reports as committed and as rolled back.
fn outcomes(log: &Path) -> (BTreeSet<i64>, BTreeSet<i64>) {
    let text = std::fs::read_to_string(log).expect("read a writer log");
    let (mut committed, mut rolled_back) = (BTreeSet::new(), BTreeSet::new());
    let mut done = false;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        match v["event"].as_str() {
            Some("committed") => assert!(committed.insert(v["id"].as_i64().unwrap())),
            Some("rolled_back") => assert!(rolled_back.insert(v["id"].as_i64().unwrap())),
            Some("done") => {
                done = true;
                assert_eq!(v["failed"], 0, "{line}");
                assert_eq!(v["interrupted"], false, "{line}");
            }
            Some("started" | "progress") => {}
            other => panic!("unexpected line {other:?}: {line}"),
        }
    }
    assert!(done, "no done line in {}", log.display());
    assert_eq!(committed.len() + rolled_back.len(), WRITES as usize);
    (committed, rolled_back)
}

fn verify(database: &str, observations: &Path, json: bool) -> Output {
    let mut cmd = streamid();
    cmd.args(["verify", "--database", database, "--stream", "events"])
        .args(["--table", "events", "--instance-column", "instance_name"])
        .args(["--id-column", "id", "--observations"])
        .arg(observations);
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("run streamid verify")
}

/// Two writers and a reader (plain and token tails) on `database`; checks the verdict and
/// returns the committed and rolled-back IDs.
fn run_workers(
    database: &str,
    replication: &str,
    dir: &Path,
) -> (BTreeSet<i64>, BTreeSet<i64>, PathBuf) {
    let started = Instant::now();
    let logs = [dir.join("a.log"), dir.join("b.log")];
    let writers: Vec<Child> = ["a", "b"]
        .iter()
        .zip(&logs)
        .map(|(instance, log)| spawn_writer(database, instance, replication, log))
        .collect();
    // Let both writers register first, so the reader never starts while a listed writer
    // has not run yet (such a writer holds the reader at its start position until it runs
    // or dead-writer recovery takes over).
    std::thread::sleep(Duration::from_millis(300));
    let observations = dir.join("observations.jsonl");
    let reader = streamid()
        .args(["worker", "read"])
        .args(stream_args(database, "r", replication))
        .args([
            "--tokens",
            "--until-idle",
            "2s",
            "--duration",
            "90s",
            "--observations",
        ])
        .arg(&observations)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the reader");
    for (i, w) in writers.into_iter().enumerate() {
        wait(w, &format!("writer {i}"), Duration::from_secs(60));
    }
    let out = wait(reader, "the reader", Duration::from_secs(100));
    let done: Value = serde_json::from_slice(&out.stdout).expect("the reader's done line");
    assert_eq!(done["reason"], "idle", "{done}");
    assert_eq!(done["position"], done["max_allocated"], "{done}");
    eprintln!(
        "{replication}: workers and reader finished in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let (mut committed, mut rolled_back) = (BTreeSet::new(), BTreeSet::new());
    for log in &logs {
        let (c, r) = outcomes(log);
        committed.extend(c);
        rolled_back.extend(r);
    }
    assert!(committed.is_disjoint(&rolled_back));

    let out = verify(database, &observations, true);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["misses"], 0, "{report}");
    assert_eq!(report["ids_handed_out_twice"], 0, "{report}");
    assert_eq!(report["duplicate_rows"], 0, "{report}");
    assert_eq!(report["rows"], committed.len(), "{report}");
    let readers = report["readers"].as_array().expect("readers");
    assert_eq!(readers.len(), 2, "{report}");
    for reader in readers {
        assert_eq!(reader["all_rows_seen"], true, "{report}");
        assert_eq!(reader["seen"], committed.len(), "{report}");
    }
    assert_eq!(readers[1]["reader"], "r+tokens");
    (committed, rolled_back, observations)
}

/// A planted miss: the row of a rolled-back ID, inserted after the reader moved past it.
fn assert_planted_miss_is_reported(database: &str, observations: &Path, id: i64) {
    let out = verify(database, observations, false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("verdict: FAILED"), "{text}");
    assert!(text.contains(&format!("MISS: row {id} ")), "{text}");
    let out = verify(database, observations, true);
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(report["misses"], 2, "both readers missed it: {report}");
    for reader in report["readers"].as_array().expect("readers") {
        assert_eq!(reader["misses"], 1, "{report}");
    }
    assert_eq!(report["violations"][0]["id"], id, "{report}");
}

/// `streamid gaps` shows each writer's rolled-back IDs.
fn assert_gaps_show_rollbacks(database: &str, rolled_back: usize) {
    let out = streamid()
        .args([
            "gaps",
            "--database",
            database,
            "--stream",
            "events",
            "--json",
        ])
        .output()
        .expect("run streamid gaps");
    assert_eq!(out.status.code(), Some(0));
    let ledger: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let gaps = ledger["gaps"].as_array().expect("gaps");
    let rolled: i64 = gaps
        .iter()
        .filter(|g| g["cause"] == "rolled_back")
        .map(|g| g["gaps"].as_i64().unwrap())
        .sum();
    assert_eq!(rolled, rolled_back as i64, "{ledger}");
    for writer in ["a", "b"] {
        assert!(
            gaps.iter().any(|g| g["instance"] == writer),
            "{writer}: {ledger}"
        );
    }
    let text = streamid()
        .args(["gaps", "--database", database, "--stream", "events"])
        .output()
        .expect("run streamid gaps");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("rolled_back"), "{text}");
}

#[test]
fn postgres_workers_over_notify_miss_nothing_and_verify_catches_a_planted_miss() {
    let rt = runtime();
    let db = rt
        .block_on(streamid_testkit::fresh_database())
        .unwrap_or_else(|e| panic!("cannot start PostgreSQL for the tests: {e}"));
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, rolled_back, observations) = run_workers(&db.url, "notify", dir.path());
    assert_gaps_show_rollbacks(&db.url, rolled_back.len());

    let late = *rolled_back.first().expect("some writes rolled back");
    rt.block_on(async {
        let client = db.client().await.expect("connect");
        client
            .execute(
                "INSERT INTO events (id, instance_name) VALUES ($1, 'a')",
                &[&late],
            )
            .await
            .expect("plant a row");
    });
    assert_planted_miss_is_reported(&db.url, &observations, late);
}

#[test]
fn postgres_workers_over_redis_miss_nothing() {
    let redis = streamid_testkit::RedisServer::start()
        .unwrap_or_else(|e| panic!("cannot start redis-server for the tests: {e}"));
    let db = runtime()
        .block_on(streamid_testkit::fresh_database())
        .unwrap_or_else(|e| panic!("cannot start PostgreSQL for the tests: {e}"));
    let dir = tempfile::tempdir().expect("temp dir");
    run_workers(&db.url, &format!("redis:{}", redis.url()), dir.path());
}

#[test]
fn sqlite_workers_polling_positions_miss_nothing_and_verify_catches_a_planted_miss() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.db");
    let database = format!("sqlite:{}", path.display());
    let (_, rolled_back, observations) = run_workers(&database, "poll", dir.path());
    assert_gaps_show_rollbacks(&database, rolled_back.len());

    let late = *rolled_back.first().expect("some writes rolled back");
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute(
        "INSERT INTO events (id, instance_name) VALUES (?1, 'a')",
        [late],
    )
    .expect("plant a row");
    assert_planted_miss_is_reported(&database, &observations, late);
}

#[test]
fn a_writer_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = format!("sqlite:{}", dir.path().join("events.db").display());
    let child = streamid()
        .args(["worker", "write"])
        .args(stream_args(&database, "a", "none"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a writer");
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let out = wait(child, "the writer", Duration::from_secs(20));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last: Value = serde_json::from_str(stdout.lines().last().expect("a line")).expect("JSON");
    assert_eq!(last["event"], "done", "{stdout}");
    assert_eq!(last["interrupted"], true, "{stdout}");
    let committed = stdout.matches("\"event\":\"committed\"").count() as u64;
    assert_eq!(last["committed"], committed, "{stdout}");
    assert!(committed > 0, "{stdout}");
}

#[test]
fn worker_and_audit_usage_errors_are_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sqlite = format!("sqlite:{}", dir.path().join("x.db").display());
    let cases: Vec<(Vec<String>, i32, &str)> = vec![
        (
            [
                vec!["worker".into(), "write".into()],
                stream_args(&sqlite, "a", "notify"),
            ]
            .concat(),
            2,
            "--replication",
        ),
        (
            [
                vec!["worker".into(), "read".into()],
                stream_args(&sqlite, "a", "poll"),
                vec!["--observations".into(), "o".into()],
            ]
            .concat(),
            2,
            "must not be one of --writers",
        ),
        (
            [
                vec!["worker".into(), "write".into()],
                stream_args(&sqlite, "a", "poll"),
                vec!["--table".into(), "x;y".into()],
            ]
            .concat(),
            2,
            "--table",
        ),
        (
            [
                "verify",
                "--database",
                &sqlite,
                "--stream",
                "s",
                "--table",
                "t",
                "--instance-column",
                "i",
                "--id-column",
                "id",
            ]
            .map(str::to_owned)
            .to_vec(),
            2,
            "--observations",
        ),
        (
            [
                "verify",
                "--database",
                &sqlite,
                "--stream",
                "s",
                "--table",
                "t",
                "--instance-column",
                "i",
                "--id-column",
                "id",
                "--observations",
                "o.jsonl",
            ]
            .map(str::to_owned)
            .to_vec(),
            3,
            "o.jsonl",
        ),
        (
            ["gaps", "--database", &sqlite, "--stream", "s"]
                .map(str::to_owned)
                .to_vec(),
            3,
            "does not exist",
        ),
    ];
    for (args, code, needle) in cases {
        let out = streamid().args(&args).output().expect("run streamid");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("streamid: error: "), "{stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    assert!(
        !dir.path().join("x.db").exists(),
        "gaps created the file it was asked to read"
    );
}

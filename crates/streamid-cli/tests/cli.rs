//! Runs the real `streamid` binary: the demo on SQLite (the default temporary file and a
//! kept one) and on a throwaway PostgreSQL, its JSON report, help, and the one-line errors
//! with their exit codes.

// A test binary: panicking on a failed step (helpers included) is how it reports failure.
#![allow(clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;

use assert_cmd::Command;
use assert_cmd::cargo::cargo_bin_cmd;
use predicates::prelude::*;
use serde_json::Value;

/// An unreachable server: nothing listens on port 1.
const UNREACHABLE: &str = "postgres://postgres@127.0.0.1:1/x";

fn streamid() -> Command {
    let mut cmd = cargo_bin_cmd!("streamid");
    cmd.env_remove("DATABASE_URL").env_remove("RUST_LOG");
    cmd
}

/// Asserts stderr is exactly one `streamid: error: ...` line and returns it.
fn one_line_error(stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(stderr.starts_with("streamid: error: "), "{stderr:?}");
    stderr
}

/// Runs `streamid demo ARGS --rows 300 --writers 4 --json`, asserts exit 0 and a verdict
/// OK with every documented key, and returns the report.
fn demo_json(cmd: &mut Command, args: &[&str]) -> Value {
    let output = cmd
        .arg("demo")
        .args(args)
        .args(["--rows", "300", "--writers", "4", "--json"])
        .output()
        .expect("run streamid");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        output.status.code()
    );
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {stdout}"));
    for key in [
        "verdict",
        "ok",
        "backend",
        "writers",
        "seed",
        "rows_committed",
        "rows_rolled_back",
        "ids_allocated",
        "out_of_order_commits",
        "duplicate_ids_in_table",
        "writer_reported_commits",
        "naive_reader",
        "streamid_reader",
        "max_allocated",
        "persisted_upto",
        "caught_up",
        "interrupted",
        "duration_s",
        "rows_per_s",
    ] {
        assert!(report.get(key).is_some(), "missing key {key}: {report}");
    }
    for reader in ["naive_reader", "streamid_reader"] {
        for key in ["seen", "missed", "duplicates", "misordered", "not_in_table"] {
            assert!(report[reader].get(key).is_some(), "missing {reader}.{key}");
        }
    }
    assert_eq!(report["verdict"], "OK", "{report}");
    assert_eq!(report["writers"], 4);
    let streamid = &report["streamid_reader"];
    assert_eq!(streamid["missed"], 0, "{report}");
    assert_eq!(streamid["duplicates"], 0, "{report}");
    assert_eq!(streamid["misordered"], 0, "{report}");
    assert_eq!(streamid["seen"], report["rows_committed"], "{report}");
    let committed = report["rows_committed"].as_u64().expect("a count");
    let rolled_back = report["rows_rolled_back"].as_u64().expect("a count");
    assert_eq!(
        committed + rolled_back,
        300,
        "every write commits or rolls back, and IDs start afresh: {report}"
    );
    assert!(committed > 0);
    assert_eq!(report["caught_up"], true);
    report
}

#[test]
fn demo_on_postgres_misses_nothing_and_reports_json() {
    // --postgres-temp must win over DATABASE_URL from the environment.
    let report = demo_json(
        streamid().env("DATABASE_URL", UNREACHABLE),
        &["--postgres-temp"],
    );
    let backend = report["backend"].as_str().expect("a string");
    assert!(backend.starts_with("PostgreSQL"), "{backend}");
}

#[test]
fn demo_defaults_to_a_temporary_sqlite_database_and_deletes_it() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let report = demo_json(streamid().env("TMPDIR", tmp.path()), &[]);
    let backend = report["backend"].as_str().expect("a string");
    assert!(backend.starts_with("SQLite (temporary file"), "{backend}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read the temp dir")
        .collect();
    assert!(
        left.is_empty(),
        "the temporary database was not deleted: {left:?}"
    );
}

#[test]
fn demo_on_a_kept_sqlite_file_keeps_the_rows_and_starts_afresh_each_run() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = tmp.path().join("kept.db");
    let database = format!("sqlite:{}", path.display());
    for run in 1..=2 {
        let report = demo_json(&mut streamid(), &["--database", &database]);
        let backend = report["backend"].as_str().expect("a string");
        assert!(backend.contains("kept"), "{backend}");
        assert!(path.exists(), "run {run}: {} is gone", path.display());
        let conn = rusqlite::Connection::open(&path).expect("open the kept file");
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM demo_events", [], |r| r.get(0))
            .expect("count the rows");
        assert_eq!(
            Some(rows),
            report["rows_committed"].as_i64(),
            "run {run}: {report}"
        );
    }
}

#[test]
fn an_unusable_sqlite_path_is_a_one_line_runtime_error() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").expect("write a file");
    let mut paths = vec![
        "/proc/nope/x.db".to_owned(),
        file.join("x.db").display().to_string(),
    ];
    // A directory without permissions stops everyone but root.
    let locked = tmp.path().join("locked");
    std::fs::create_dir(&locked).expect("create a directory");
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o500))
        .expect("chmod the directory");
    if std::fs::write(locked.join("probe"), "").is_err() {
        paths.push(locked.join("x.db").display().to_string());
    }
    for path in paths {
        let output = streamid()
            .args(["demo", "--rows", "10", "--database"])
            .arg(format!("sqlite:{path}"))
            .output()
            .expect("run streamid");
        assert_eq!(output.status.code(), Some(3), "{path}");
        let line = one_line_error(&output.stderr);
        assert!(line.contains(&path), "{path}: {line}");
        assert!(output.stdout.is_empty(), "{path}");
    }
}

#[test]
fn bad_arguments_are_one_line_usage_errors() {
    for (args, needle) in [
        (&["--writers", "0"][..], "--writers 0"),
        (&["--rollback-rate", "2"][..], "--rollback-rate 2"),
        (&["--writers", "many"][..], "--writers"),
        (&["--duration", "5 fortnights"][..], "--duration"),
        (&["--no-such-option"][..], "--no-such-option"),
        (
            &["--postgres-temp", "--database", UNREACHABLE][..],
            "cannot be used together",
        ),
    ] {
        let output = streamid()
            .arg("demo")
            .args(args)
            .output()
            .expect("run streamid");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let line = one_line_error(&output.stderr);
        assert!(line.contains(needle), "{args:?}: {line}");
        assert!(output.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_missing_subcommand_is_a_one_line_usage_error() {
    let output = streamid().output().expect("run streamid");
    assert_eq!(output.status.code(), Some(2));
    one_line_error(&output.stderr);
}

#[test]
fn an_unreachable_database_is_a_one_line_runtime_error() {
    let output = streamid()
        .args(["demo", "--database", UNREACHABLE, "--rows", "10"])
        .output()
        .expect("run streamid");
    assert_eq!(output.status.code(), Some(3));
    let line = one_line_error(&output.stderr);
    assert!(line.contains("127.0.0.1:1"), "{line}");
}

#[test]
fn database_url_is_honoured_and_its_password_hidden() {
    let output = streamid()
        .env("DATABASE_URL", "postgres://demo:hunter2@127.0.0.1:1/x")
        .args(["demo", "--quiet"])
        .output()
        .expect("run streamid");
    assert_eq!(output.status.code(), Some(3));
    let line = one_line_error(&output.stderr);
    assert!(line.contains("127.0.0.1:1"), "{line}");
    assert!(!line.contains("hunter2"), "{line}");
}

#[test]
fn every_subcommand_has_help_with_exit_codes() {
    for args in [
        &["--help"][..],
        &["demo", "--help"][..],
        &["help", "demo"][..],
        &["verify", "--help"][..],
        &["gaps", "--help"][..],
        &["worker", "write", "--help"][..],
        &["worker", "read", "--help"][..],
    ] {
        streamid()
            .args(args)
            .assert()
            .success()
            .stdout(predicate::str::contains("Exit codes:"))
            .stdout(predicate::str::contains("3  database or runtime error"));
    }
    streamid()
        .args(["demo", "--help"])
        .assert()
        .stdout(predicate::str::contains("DATABASE_URL"))
        .stdout(predicate::str::contains("--rollback-rate"));
    // The workers are for tests: documented under their own --help, hidden from the list.
    streamid()
        .arg("--help")
        .assert()
        .stdout(predicate::str::contains("verify"))
        .stdout(predicate::str::contains("worker").not());
}

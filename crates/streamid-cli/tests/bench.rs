//! `streamid bench latency`: the JSON report's shape (not its numbers, which depend on the
//! machine), its text form, usage errors, and its help.

// A test binary: panicking on a failed step (helpers included) is how it reports failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, Output};

use serde_json::Value;

fn streamid() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamid"));
    cmd.env_remove("DATABASE_URL").env_remove("RUST_LOG");
    cmd
}

fn run(args: &[&str]) -> Output {
    streamid().args(args).output().expect("run streamid")
}

fn fresh_database() -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
        .block_on(streamid_testkit::fresh_database())
        .unwrap_or_else(|e| panic!("cannot start PostgreSQL for the tests: {e}"))
        .url
}

/// Checks the report's keys and the consistency of its counts.
fn assert_report(out: &Output, transport: &str, load_writers: u64, samples: u64) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "one JSON line: {text}");
    let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(report["transport"], transport, "{report}");
    let mode = if load_writers == 0 { "idle" } else { "load" };
    assert_eq!(report["mode"], mode, "{report}");
    assert_eq!(report["load_writers"], load_writers, "{report}");
    assert_eq!(report["samples"], samples, "{report}");
    assert_eq!(report["covered"], samples, "{report}");
    assert_eq!(report["not_covered"], 0, "{report}");
    assert!(report["early"].as_u64().unwrap() <= samples, "{report}");
    assert!(report["interval_ms"].is_u64(), "{report}");
    assert!(
        report["load_commits_per_s"].as_f64().unwrap() >= 0.0,
        "{report}"
    );
    if load_writers > 0 {
        assert!(
            report["load_commits_per_s"].as_f64().unwrap() > 0.0,
            "{report}"
        );
    }
    assert!(report["duration_s"].as_f64().unwrap() > 0.0, "{report}");
    assert!(report["database"].as_str().unwrap().contains("PostgreSQL"));
    let latency = &report["latency_us"];
    let keys = ["min", "p50", "p90", "p99", "max", "mean"];
    let values: Vec<f64> = keys
        .iter()
        .map(|k| {
            latency[k]
                .as_f64()
                .unwrap_or_else(|| panic!("{k}: {report}"))
        })
        .collect();
    assert_eq!(latency.as_object().unwrap().len(), keys.len(), "{report}");
    // min <= p50 <= p90 <= p99 <= max
    assert!(values[..5].windows(2).all(|w| w[0] <= w[1]), "{report}");
    report
}

#[test]
fn latency_over_notify_on_a_temporary_cluster_reports_json() {
    let out = run(&[
        "bench",
        "latency",
        "--postgres-temp",
        "--samples",
        "20",
        "--json",
    ]);
    let report = assert_report(&out, "notify", 0, 20);
    assert!(
        report["database"].as_str().unwrap().contains("fsync on"),
        "{report}"
    );
}

#[test]
fn latency_under_load_from_writer_processes_and_in_process() {
    let database = fresh_database();
    let out = run(&[
        "bench",
        "latency",
        "--database",
        &database,
        "--samples",
        "20",
        "--load-writers",
        "2",
        "--interval-ms",
        "2",
        "--json",
    ]);
    assert_report(&out, "notify", 2, 20);
    // A second run on the same database starts from a fresh stream.
    let out = run(&[
        "bench",
        "latency",
        "--database",
        &database,
        "--transport",
        "in-process",
        "--samples",
        "20",
        "--load-writers",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("transport in-process, 1 load writers"),
        "{stdout}"
    );
    assert!(stdout.contains("p99"), "{stdout}");
    assert!(stdout.contains("covered 20 of 20 samples"), "{stdout}");
}

#[test]
fn latency_usage_errors_are_one_line_and_help_lists_the_exit_codes() {
    for (args, needle) in [
        (&["bench", "latency"][..], "--database"),
        (
            &[
                "bench",
                "latency",
                "--postgres-temp",
                "--transport",
                "pigeon",
            ][..],
            "--transport",
        ),
        (
            &["bench", "latency", "--database", "sqlite:x.db"][..],
            "PostgreSQL",
        ),
        (
            &["bench", "latency", "--postgres-temp", "--samples", "0"][..],
            "--samples",
        ),
    ] {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("streamid: error: "), "{stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let out = run(&["bench", "latency", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0));
    assert!(help.contains("Exit codes:"), "{help}");
    assert!(help.contains("--load-writers"), "{help}");
    let out = run(&["--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("bench"), "{help}");
    assert!(!help.contains("latency-reader"), "{help}");
}

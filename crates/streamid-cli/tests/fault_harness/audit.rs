//! The end of every run: stop the writers, measure how long the reader needs to catch up,
//! run `streamid verify` on its observations, check the writers' logs against the table,
//! read `streamid gaps` and the recovery events, and return a [`Report`] (also printed as
//! one `FAULT-REPORT {json}` line on stderr, and appended to `$STREAMID_FAULT_REPORT`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use super::fleet::Fleet;
use super::{RECLAIM_BOUND, SLACK, STREAM, streamid};

/// One injected fault, recorded when it ended.
#[derive(Debug, Clone)]
pub struct FaultRecord {
    pub kind: String,
    pub detail: String,
    pub at: Instant,
    /// The server's clock then (seconds since the epoch).
    pub server_at: f64,
    /// The last allocated ID then: the stall after the fault lasts until the reader's `P`
    /// reaches it.
    pub allocated: i64,
}

#[derive(Debug, Serialize)]
pub struct FaultSummary {
    pub kind: String,
    pub detail: String,
    /// Seconds into the run.
    pub at_s: f64,
    /// How long until the reader's `P` covered every ID allocated before the fault ended.
    pub stall_ms: Option<u64>,
    /// For a killed writer: from the kill to the first recovery of it by another process.
    pub recovered_ms: Option<u64>,
}

/// What a run observed.
#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub writers: usize,
    pub duration_s: f64,
    pub faults: Vec<FaultSummary>,
    /// Rows in the table at the end.
    pub rows: u64,
    /// Outcomes the writers logged.
    pub committed: usize,
    pub rolled_back: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Of the `unknown` ones: found committed (row present) / aborted.
    pub unknown_committed: usize,
    pub unknown_aborted: usize,
    /// Outcomes the writers' resolvers settled with `pg_xact_status` (their INFO lines).
    pub resolved: usize,
    /// From `streamid verify`.
    pub misses: u64,
    pub ids_handed_out_twice: u64,
    pub duplicate_rows: u64,
    /// From the writers stopping until the reader's `P` reached the last allocated ID.
    pub catch_up_ms: u64,
    pub max_stall_ms: u64,
    /// `streamid gaps`: IDs finished without a row, per cause.
    pub gaps: BTreeMap<String, i64>,
    /// `stream_events` rows with event `reclaimed`.
    pub reclaims: usize,
    pub final_position: i64,
}

/// The writers' logged outcomes, by ID.
#[derive(Default)]
struct Outcomes {
    /// IDs with more than one outcome line, in any logs: handed out twice.
    reissued: BTreeSet<i64>,
    committed: BTreeMap<i64, String>,
    rolled_back: BTreeSet<i64>,
    failed: BTreeSet<i64>,
    unknown: BTreeSet<i64>,
}

impl Fleet<'_> {
    /// Stops the writers and audits the run; panics on any miss, duplicate, lost commit or
    /// a reader that does not catch up within the bound.
    pub fn finish(mut self, scenario: &str) -> Report {
        let duration = self.started.elapsed();
        self.stop_writers();
        let catch_up = match self
            .timeline
            .wait_until(RECLAIM_BOUND + SLACK, || self.cluster.last_allocated())
        {
            Ok(d) => d,
            Err(latest) => panic!(
                "{scenario}: the reader's P stalled at {latest} below the last allocated ID {} \
                 for more than {:?} after the writers stopped; reader stderr:\n{}",
                self.cluster.last_allocated(),
                RECLAIM_BOUND + SLACK,
                self.stderr_tail("r")
            ),
        };
        let done = self.stop_reader();
        let final_position = done["position"].as_i64().expect("position");
        assert_eq!(
            done["position"], done["max_allocated"],
            "{scenario}: {done}"
        );

        let verify = verify(&self.cluster.direct_url(), &self.observations);
        for key in [
            "misses",
            "ids_handed_out_twice",
            "duplicate_rows",
            "seen_twice",
        ] {
            assert_eq!(verify[key], 0, "{scenario}: {key}: {verify}");
        }
        assert_eq!(verify["ok"], true, "{scenario}: {verify}");
        for reader in verify["readers"].as_array().expect("readers") {
            assert_eq!(reader["all_rows_seen"], true, "{scenario}: {verify}");
        }

        let outcomes = self.outcomes();
        assert!(
            outcomes.reissued.is_empty(),
            "{scenario}: IDs handed out twice (the sequence went back?): {:?}",
            outcomes.reissued
        );
        let table = self.table();
        for (id, instance) in &outcomes.committed {
            assert_eq!(
                table.get(id),
                Some(instance),
                "{scenario}: row {id}, logged committed by {instance}, is not in the table"
            );
        }
        for id in outcomes.rolled_back.iter().chain(&outcomes.failed) {
            assert!(
                !table.contains_key(id),
                "{scenario}: row {id} is in the table although its writer logged it \
                 rolled back or failed"
            );
        }
        let unknown_committed = outcomes
            .unknown
            .iter()
            .filter(|id| table.contains_key(id))
            .count();

        let reclaimed = self.cluster.query(&format!(
            "SELECT instance_name, extract(epoch FROM at)::float8 FROM stream_events \
             WHERE stream_name = '{STREAM}' AND event = 'reclaimed' ORDER BY at"
        ));
        let reclaimed: Vec<(String, f64)> =
            reclaimed.iter().map(|r| (r.get(0), r.get(1))).collect();
        let faults: Vec<FaultSummary> = self
            .faults
            .iter()
            .map(|f| FaultSummary {
                kind: f.kind.clone(),
                detail: f.detail.clone(),
                at_s: (f.at - self.started).as_secs_f64(),
                stall_ms: self
                    .timeline
                    .reached_after(f.allocated, f.at)
                    .map(|d| d.as_millis() as u64),
                recovered_ms: (f.kind == "kill -9")
                    .then(|| {
                        let instance = f.detail.split(' ').next().unwrap_or_default();
                        reclaimed
                            .iter()
                            .find(|(w, at)| w == instance && *at >= f.server_at - 0.05)
                            .map(|(_, at)| ((at - f.server_at).max(0.0) * 1000.0) as u64)
                    })
                    .flatten(),
            })
            .collect();
        let report = Report {
            scenario: scenario.to_owned(),
            writers: self.writers.len(),
            duration_s: duration.as_secs_f64(),
            max_stall_ms: faults.iter().filter_map(|f| f.stall_ms).max().unwrap_or(0),
            faults,
            rows: verify["rows"].as_u64().expect("rows"),
            committed: outcomes.committed.len(),
            rolled_back: outcomes.rolled_back.len(),
            failed: outcomes.failed.len(),
            unknown: outcomes.unknown.len(),
            unknown_committed,
            unknown_aborted: outcomes.unknown.len() - unknown_committed,
            resolved: self.stderr_count("resolved a commit whose outcome was unknown"),
            misses: verify["misses"].as_u64().expect("misses"),
            ids_handed_out_twice: verify["ids_handed_out_twice"].as_u64().expect("twice"),
            duplicate_rows: verify["duplicate_rows"].as_u64().expect("duplicates"),
            catch_up_ms: catch_up.as_millis() as u64,
            gaps: self.gaps(),
            reclaims: reclaimed.len(),
            final_position,
        };
        publish(&report);
        report
    }

    fn outcomes(&self) -> Outcomes {
        let mut o = Outcomes::default();
        let mut seen = BTreeSet::new();
        for instance in &self.writers {
            let text = std::fs::read_to_string(self.log_of(instance)).unwrap_or_default();
            for line in text.lines() {
                let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                let id = v["id"].as_i64();
                if let Some(id) = id
                    && matches!(
                        v["event"].as_str(),
                        Some("committed" | "rolled_back" | "failed" | "unknown")
                    )
                    && !seen.insert(id)
                {
                    o.reissued.insert(id);
                }
                match (v["event"].as_str(), id) {
                    (Some("committed"), Some(id)) => {
                        let twice = o.committed.insert(id, instance.clone());
                        assert!(twice.is_none(), "ID {id} logged committed twice");
                    }
                    (Some("rolled_back"), Some(id)) => {
                        o.rolled_back.insert(id);
                    }
                    (Some("failed"), Some(id)) => {
                        o.failed.insert(id);
                    }
                    (Some("unknown"), Some(id)) => {
                        o.unknown.insert(id);
                    }
                    _ => {}
                }
            }
        }
        o
    }

    /// Every row of the table: ID → writer.
    fn table(&self) -> BTreeMap<i64, String> {
        self.cluster
            .query(&format!("SELECT id, instance_name FROM {STREAM}"))
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    fn gaps(&self) -> BTreeMap<String, i64> {
        let out = streamid()
            .args(["gaps", "--database", &self.cluster.direct_url()])
            .args(["--stream", STREAM, "--json"])
            .output()
            .expect("run streamid gaps");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ledger: Value = serde_json::from_slice(&out.stdout).expect("gaps JSON");
        let mut by_cause = BTreeMap::new();
        for g in ledger["gaps"].as_array().expect("gaps") {
            let cause = g["cause"].as_str().expect("cause").to_owned();
            *by_cause.entry(cause).or_insert(0) += g["gaps"].as_i64().expect("count");
        }
        by_cause
    }
}

fn verify(database: &str, observations: &std::path::Path) -> Value {
    let out = streamid()
        .args(["verify", "--database", database, "--stream", STREAM])
        .args(["--table", STREAM, "--instance-column", "instance_name"])
        .args(["--id-column", "id", "--json", "--observations"])
        .arg(observations)
        .output()
        .expect("run streamid verify");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no report ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn publish(report: &Report) {
    let line = serde_json::to_string(report).expect("a report");
    eprintln!("FAULT-REPORT {line}");
    if let Some(path) = std::env::var_os("STREAMID_FAULT_REPORT") {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open $STREAMID_FAULT_REPORT");
        writeln!(file, "{line}").expect("write the report");
    }
}

/// Asserts that the stall after the last fault stayed within the reclaim bound plus slack.
pub fn assert_no_long_stall_after_last_fault(report: &Report) {
    let last = report.faults.last().expect("a fault was injected");
    assert_stall_within_bound(report, last);
}

/// Asserts that the stall after every fault stayed within the reclaim bound plus slack
/// (for runs whose faults are far enough apart not to overlap).
pub fn assert_no_long_stall_after_any_fault(report: &Report) {
    assert!(!report.faults.is_empty(), "no fault was injected");
    for fault in &report.faults {
        assert_stall_within_bound(report, fault);
    }
}

fn assert_stall_within_bound(report: &Report, fault: &FaultSummary) {
    let stall = fault
        .stall_ms
        .expect("the reader caught up after the fault");
    let bound = (RECLAIM_BOUND + SLACK).as_millis() as u64;
    assert!(
        stall <= bound,
        "{}: P stalled {stall} ms after a fault ({} {}), bound {bound} ms",
        report.scenario,
        fault.kind,
        fault.detail
    );
}

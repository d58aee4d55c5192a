//! The final report: what the database holds, compared with what each reader saw.
//!
//! Honesty rule: every count of committed rows comes from the table, read after the writers
//! stopped; out-of-order commits come from the table's commit order; rolled-back rows are
//! the IDs the sequence (SQLite: counter) handed out that have no row. The writers' own
//! tallies appear once, as `writer_reported_commits`, for comparison only.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::reader::ReaderLog;

/// The demo's outcome, which decides the exit code (0 or 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) enum Verdict {
    /// The streamid reader saw every committed row exactly once, in ID order.
    #[serde(rename = "OK")]
    Ok,
    /// It missed, duplicated or misordered a row.
    #[serde(rename = "FAILED")]
    Failed,
}

/// What one reader saw, judged against the table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ReaderReport {
    /// IDs received, duplicates included.
    pub(crate) seen: u64,
    /// Committed rows it never received.
    pub(crate) missed: u64,
    /// IDs received more than once (each extra receipt counts).
    pub(crate) duplicates: u64,
    /// Receipts of an ID smaller than the one received just before.
    pub(crate) misordered: u64,
    /// IDs received that are not in the table at the end (never expected).
    pub(crate) not_in_table: u64,
}

impl ReaderReport {
    /// Compares `log` with the `committed` IDs.
    pub(crate) fn new(log: &ReaderLog, committed: &HashSet<i64>) -> ReaderReport {
        let distinct: HashSet<i64> = log.seen.iter().copied().collect();
        ReaderReport {
            seen: log.seen.len() as u64,
            missed: committed.iter().filter(|id| !distinct.contains(id)).count() as u64,
            duplicates: (log.seen.len() - distinct.len()) as u64,
            misordered: log.seen.windows(2).filter(|w| w[1] < w[0]).count() as u64,
            not_in_table: distinct.iter().filter(|id| !committed.contains(id)).count() as u64,
        }
    }

    /// Saw every committed row exactly once, in order, and nothing else.
    pub(crate) fn is_exact(&self) -> bool {
        self.missed == 0 && self.duplicates == 0 && self.misordered == 0 && self.not_in_table == 0
    }
}

/// Everything measured outside the table that the report needs.
#[derive(Debug, Clone)]
pub(crate) struct RunFacts {
    /// The store's description.
    pub(crate) backend: String,
    /// Writer tasks.
    pub(crate) writers: usize,
    /// Seed of the random choices.
    pub(crate) seed: u64,
    /// The persisted-up-to position before the first write (IDs above it are this run's).
    pub(crate) start_position: i64,
    /// The last ID the sequence (SQLite: counter) handed out, read after the writers stopped.
    pub(crate) max_allocated: i64,
    /// The reader generator's persisted-up-to position at the final read.
    pub(crate) persisted_upto: i64,
    /// Whether that position reached `max_allocated` before the final read.
    pub(crate) caught_up: bool,
    /// Whether the run was cut short by Ctrl-C.
    pub(crate) interrupted: bool,
    /// Commits the writer tasks counted themselves.
    pub(crate) writer_reported_commits: u64,
    /// The writing phase.
    pub(crate) duration: Duration,
}

/// The final report, printed as text or as one JSON object.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// `"OK"` or `"FAILED"`.
    pub(crate) verdict: Verdict,
    /// `verdict == OK`.
    pub(crate) ok: bool,
    /// The database.
    pub(crate) backend: String,
    /// Writer tasks.
    pub(crate) writers: usize,
    /// Seed of the random choices (pass `--seed` to repeat them).
    pub(crate) seed: u64,
    /// Rows in the table at the end.
    pub(crate) rows_committed: u64,
    /// IDs handed out by the sequence (SQLite: counter) without a row: rolled-back writes.
    pub(crate) rows_rolled_back: u64,
    /// IDs the sequence (SQLite: counter) handed out during the run.
    pub(crate) ids_allocated: u64,
    /// Commits whose ID is below the largest ID committed before them (in commit order):
    /// each is a row a naive reader can miss.
    pub(crate) out_of_order_commits: u64,
    /// Rows sharing an ID with another row (never expected).
    pub(crate) duplicate_ids_in_table: u64,
    /// Commits the writers counted (bookkeeping, for comparison with `rows_committed`).
    pub(crate) writer_reported_commits: u64,
    /// The naive reader (`id > last_seen`).
    pub(crate) naive_reader: ReaderReport,
    /// The streamid reader (`id <= persisted_upto_position()`).
    pub(crate) streamid_reader: ReaderReport,
    /// The last ID the sequence (SQLite: counter) handed out.
    pub(crate) max_allocated: i64,
    /// The reader generator's persisted-up-to position at the final read.
    pub(crate) persisted_upto: i64,
    /// Whether the streamid reader caught up with every allocated ID before its final read.
    pub(crate) caught_up: bool,
    /// Whether Ctrl-C cut the run short.
    pub(crate) interrupted: bool,
    /// Seconds of writing.
    pub(crate) duration_s: f64,
    /// Committed rows per second of writing.
    pub(crate) rows_per_s: f64,
}

impl Report {
    /// Builds the report from the table's IDs in commit order and the readers' logs.
    pub(crate) fn new(
        facts: RunFacts,
        committed_in_commit_order: &[i64],
        naive: &ReaderLog,
        streamid: &ReaderLog,
    ) -> Report {
        let committed: HashSet<i64> = committed_in_commit_order.iter().copied().collect();
        let rows_committed = committed_in_commit_order.len() as u64;
        let ids_allocated = (facts.max_allocated - facts.start_position).max(0) as u64;
        let streamid_reader = ReaderReport::new(streamid, &committed);
        let verdict = if streamid_reader.is_exact() {
            Verdict::Ok
        } else {
            Verdict::Failed
        };
        let secs = facts.duration.as_secs_f64();
        Report {
            verdict,
            ok: verdict == Verdict::Ok,
            backend: facts.backend,
            writers: facts.writers,
            seed: facts.seed,
            rows_committed,
            rows_rolled_back: ids_allocated.saturating_sub(committed.len() as u64),
            ids_allocated,
            out_of_order_commits: out_of_order(committed_in_commit_order),
            duplicate_ids_in_table: rows_committed - committed.len() as u64,
            writer_reported_commits: facts.writer_reported_commits,
            naive_reader: ReaderReport::new(naive, &committed),
            streamid_reader,
            max_allocated: facts.max_allocated,
            persisted_upto: facts.persisted_upto,
            caught_up: facts.caught_up,
            interrupted: facts.interrupted,
            duration_s: (secs * 1000.0).round() / 1000.0,
            rows_per_s: if secs > 0.0 {
                (rows_committed as f64 / secs).round()
            } else {
                0.0
            },
        }
    }

    /// The report as text, ending with the verdict line.
    pub(crate) fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!(
            "streamid demo: {} writers on {} (seed {}){}",
            self.writers,
            self.backend,
            self.seed,
            if self.interrupted {
                ", interrupted"
            } else {
                ""
            }
        ));
        line(format!(
            "rows committed        {:>8}   (counted in the table at the end)",
            self.rows_committed
        ));
        line(format!(
            "rows rolled back      {:>8}   (IDs allocated without a row)",
            self.rows_rolled_back
        ));
        line(format!(
            "out-of-order commits  {:>8}   (committed after a larger ID had committed)",
            self.out_of_order_commits
        ));
        line(format!(
            "duration              {:>8.2} s ({} rows/s committed)",
            self.duration_s, self.rows_per_s
        ));
        if self.duplicate_ids_in_table > 0 {
            line(format!(
                "duplicate IDs         {:>8}   (rows sharing an ID: a generator bug)",
                self.duplicate_ids_in_table
            ));
        }
        if self.writer_reported_commits != self.rows_committed {
            line(format!(
                "note: the writers counted {} commits, the table holds {} rows",
                self.writer_reported_commits, self.rows_committed
            ));
        }
        line(String::new());
        line(format!(
            "{:<18}{:>8}{:>8}{:>12}{:>12}",
            "", "seen", "missed", "duplicates", "misordered"
        ));
        for (name, r) in [
            ("naive reader", &self.naive_reader),
            ("streamid reader", &self.streamid_reader),
        ] {
            let mut row = format!(
                "{name:<18}{:>8}{:>8}{:>12}{:>12}",
                r.seen, r.missed, r.duplicates, r.misordered
            );
            if r.not_in_table > 0 {
                let _ = write!(row, "   ({} not in the table)", r.not_in_table);
            }
            line(row);
        }
        line(String::new());
        line(self.verdict_line());
        out
    }

    fn verdict_line(&self) -> String {
        let naive = match self.naive_reader.missed {
            0 => "the naive reader happened to miss none this time (more --writers or a \
                  longer --max-delay-ms make misses likelier)"
                .to_owned(),
            n => format!(
                "the naive reader missed {n} (expected: that is the lost-row bug streamid \
                 prevents)"
            ),
        };
        match self.verdict {
            Verdict::Ok => format!(
                "verdict: OK: the streamid reader saw all {} committed rows exactly once, in \
                 ID order; {naive}",
                self.rows_committed
            ),
            Verdict::Failed => {
                let r = &self.streamid_reader;
                format!(
                    "verdict: FAILED: the streamid reader missed {}, duplicated {} and \
                     misordered {} of {} committed rows{}",
                    r.missed,
                    r.duplicates,
                    r.misordered,
                    self.rows_committed,
                    if self.caught_up {
                        ""
                    } else {
                        " (it had not caught up with the writers when it made its final read)"
                    }
                )
            }
        }
    }
}

/// Counts IDs below the largest ID committed before them.
fn out_of_order(commit_order: &[i64]) -> u64 {
    let mut max = i64::MIN;
    let mut count = 0;
    for &id in commit_order {
        if id < max {
            count += 1;
        } else {
            max = id;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(ids: &[i64]) -> ReaderLog {
        ReaderLog { seen: ids.to_vec() }
    }

    fn facts() -> RunFacts {
        RunFacts {
            backend: "test".into(),
            writers: 2,
            seed: 1,
            start_position: 1,
            max_allocated: 7,
            persisted_upto: 7,
            caught_up: true,
            interrupted: false,
            writer_reported_commits: 5,
            duration: Duration::from_secs(2),
        }
    }

    #[test]
    fn out_of_order_commits_are_counted_against_the_running_maximum() {
        assert_eq!(out_of_order(&[2, 3, 4]), 0);
        assert_eq!(out_of_order(&[3, 2, 5, 4, 6]), 2);
        assert_eq!(out_of_order(&[9, 2, 3, 4]), 3);
        assert_eq!(out_of_order(&[]), 0);
    }

    #[test]
    fn readers_are_judged_against_the_table() {
        let committed: HashSet<i64> = [2, 3, 5, 6].into();
        let exact = ReaderReport::new(&log(&[2, 3, 5, 6]), &committed);
        assert!(exact.is_exact());
        let naive = ReaderReport::new(&log(&[2, 5, 6]), &committed);
        assert_eq!((naive.seen, naive.missed), (3, 1));
        assert!(!naive.is_exact());
        let bad = ReaderReport::new(&log(&[2, 5, 3, 3, 6, 9]), &committed);
        assert_eq!(bad.duplicates, 1);
        assert_eq!(bad.misordered, 1);
        assert_eq!(bad.not_in_table, 1);
        assert_eq!(bad.missed, 0);
    }

    #[test]
    fn the_verdict_follows_the_streamid_reader_only() {
        // Commit order 2, 4, 3, 5, 6; 7 rolled back.
        let table = [2, 4, 3, 5, 6];
        let report = Report::new(facts(), &table, &log(&[2, 4, 5, 6]), &log(&[2, 3, 4, 5, 6]));
        assert_eq!(report.verdict, Verdict::Ok);
        assert_eq!(report.rows_committed, 5);
        assert_eq!(report.rows_rolled_back, 1);
        assert_eq!(report.out_of_order_commits, 1);
        assert_eq!(report.naive_reader.missed, 1);
        assert_eq!(report.rows_per_s, 3.0);
        let text = report.to_text();
        assert!(text.contains("verdict: OK"), "{text}");
        assert!(text.contains("naive reader missed 1"), "{text}");

        let report = Report::new(facts(), &table, &log(&[2, 3, 4, 5, 6]), &log(&[2, 4, 5, 6]));
        assert_eq!(report.verdict, Verdict::Failed);
        assert!(report.to_text().contains("verdict: FAILED"));
    }

    #[test]
    fn json_has_the_documented_keys() {
        let report = Report::new(facts(), &[2, 3], &log(&[2, 3]), &log(&[2, 3]));
        let json = serde_json::to_value(&report).unwrap();
        for key in [
            "verdict",
            "ok",
            "rows_committed",
            "rows_rolled_back",
            "out_of_order_commits",
            "naive_reader",
            "streamid_reader",
            "duration_s",
            "rows_per_s",
        ] {
            assert!(json.get(key).is_some(), "missing {key}: {json}");
        }
        assert_eq!(json["verdict"], "OK");
        assert_eq!(json["streamid_reader"]["missed"], 0);
    }
}

//! The audit's pure logic: rows and observations in, a [`VerifyReport`] out. No I/O, no
//! clock, no tracker — the point of an independent audit is that it shares nothing with the
//! code it checks.
//!
//! Internally every ID and position is multiplied by the stream's sign, so "covered" is
//! always `id <= position`; the report converts back.
//!
//! Cost: sorting the rows once, then per reader O(rows + IDs listed) with hash lookups —
//! each row is checked against the first observation of each reader that covers it, and a
//! reader's set of seen IDs only grows, so later observations need not look at it again.

use std::collections::{HashMap, HashSet};

use super::Observation;
use super::report::{ReaderSummary, VerifyReport, Violation};

/// One row of a stream's table, as the auditor read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRow {
    /// Which of the audit's tables holds it (index, in the order the tables were added).
    pub table: usize,
    /// The stream ID (API form); `None` if the column is NULL.
    pub id: Option<i64>,
    /// The writing instance, if the row names one.
    pub instance: Option<String>,
}

/// What the pure check needs besides rows and observations.
pub(crate) struct Options<'a> {
    pub(crate) table_names: &'a [String],
    pub(crate) backwards: bool,
    pub(crate) shared_ids: bool,
    pub(crate) max_violations: usize,
}

/// Interned instance name; `None` for a NULL instance column.
type Inst = Option<u32>;

/// The violations list (capped) and the report's counters (complete).
struct Findings {
    report: VerifyReport,
    cap: usize,
    sign: i64,
}

impl Findings {
    fn push(&mut self, v: Violation) {
        let r = &mut self.report;
        match &v {
            Violation::Miss { .. } => r.misses += 1,
            Violation::IdHandedOutTwice { .. } => r.ids_handed_out_twice += 1,
            Violation::DuplicateRow { rows, .. } => r.duplicate_rows += rows - 1,
            Violation::SeenTwice { .. } => r.seen_twice += 1,
            Violation::Misordered { .. } => r.misordered += 1,
            Violation::BeyondPosition { .. } => r.beyond_position += 1,
            Violation::UnknownRow { .. } => r.unknown_rows += 1,
        }
        if r.violations.len() < self.cap {
            r.violations.push(v);
        } else {
            r.violations_omitted += 1;
        }
    }
}

/// The rows, indexed for the reader checks.
struct Index {
    /// Interned instance names.
    ids_of: HashMap<String, u32>,
    /// Distinct `(id, instance)` pairs, internal form, sorted.
    pairs: Vec<(i64, Inst)>,
    /// Per instance (NULL included), its distinct IDs ascending.
    groups: Vec<(Inst, Vec<i64>)>,
    /// Distinct IDs.
    distinct: Vec<i64>,
}

impl Index {
    /// The instances holding `id` (empty if no row does).
    fn instances(&self, id: i64) -> impl Iterator<Item = Inst> + '_ {
        let start = self.pairs.partition_point(|p| p.0 < id);
        self.pairs[start..]
            .iter()
            .take_while(move |p| p.0 == id)
            .map(|p| p.1)
    }
}

/// Runs every check. See [`Audit::check`](crate::Audit::check).
pub(crate) fn check(
    rows: &[StreamRow],
    observations: &[Observation],
    options: &Options<'_>,
) -> VerifyReport {
    let sign = if options.backwards { -1 } else { 1 };
    let mut findings = Findings {
        report: VerifyReport {
            backwards: options.backwards,
            rows: rows.len() as u64,
            distinct_ids: 0,
            null_ids: 0,
            observations: observations.len() as u64,
            readers: Vec::new(),
            misses: 0,
            ids_handed_out_twice: 0,
            duplicate_rows: 0,
            seen_twice: 0,
            misordered: 0,
            beyond_position: 0,
            unknown_rows: 0,
            violations: Vec::new(),
            violations_omitted: 0,
        },
        cap: options.max_violations,
        sign,
    };
    let index = check_rows(rows, options, &mut findings);
    findings.report.distinct_ids = index.distinct.len() as u64;
    for (reader, list) in by_reader(observations) {
        let summary = check_reader(reader, &list, &index, &mut findings);
        findings.report.readers.push(summary);
    }
    findings.report
}

/// Check (b): no ID held by two instances; no ID twice in one table unless shared IDs are
/// allowed. Returns the index the reader checks use.
fn check_rows(rows: &[StreamRow], options: &Options<'_>, findings: &mut Findings) -> Index {
    let sign = findings.sign;
    let mut ids_of: HashMap<String, u32> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut sorted: Vec<(i64, usize, Inst)> = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(id) = row.id else {
            findings.report.null_ids += 1;
            continue;
        };
        let inst = row.instance.as_ref().map(|name| {
            *ids_of.entry(name.clone()).or_insert_with(|| {
                names.push(name.clone());
                (names.len() - 1) as u32
            })
        });
        sorted.push((sign * id, row.table, inst));
    }
    sorted.sort_unstable();

    let mut pairs: Vec<(i64, Inst)> = Vec::with_capacity(sorted.len());
    let mut distinct = Vec::new();
    for run in sorted.chunk_by(|a, b| a.0 == b.0) {
        let k = run[0].0;
        distinct.push(k);
        let mut instances: Vec<u32> = run.iter().filter_map(|r| r.2).collect();
        instances.sort_unstable();
        instances.dedup();
        let handed_out_twice = instances.len() > 1;
        if handed_out_twice {
            let mut held_by: Vec<String> = instances
                .iter()
                .map(|&i| names[i as usize].clone())
                .collect();
            held_by.sort();
            findings.push(Violation::IdHandedOutTwice {
                id: sign * k,
                instances: held_by,
            });
        }
        // An ID handed out twice is reported once, not again as duplicate rows.
        if !options.shared_ids && !handed_out_twice {
            for same_table in run.chunk_by(|a, b| a.1 == b.1) {
                if same_table.len() > 1 {
                    let table = options
                        .table_names
                        .get(same_table[0].1)
                        .cloned()
                        .unwrap_or_else(|| format!("table #{}", same_table[0].1));
                    findings.push(Violation::DuplicateRow {
                        table,
                        id: sign * k,
                        rows: same_table.len() as u64,
                    });
                }
            }
        }
        let mut insts: Vec<Inst> = run.iter().map(|r| r.2).collect();
        insts.sort_unstable();
        insts.dedup();
        pairs.extend(insts.into_iter().map(|i| (k, i)));
    }

    let mut by_inst: HashMap<Inst, Vec<i64>> = HashMap::new();
    for &(k, inst) in &pairs {
        by_inst.entry(inst).or_default().push(k);
    }
    let mut groups: Vec<(Inst, Vec<i64>)> = by_inst.into_iter().collect();
    groups.sort_unstable_by_key(|g| g.0);
    Index {
        ids_of,
        pairs,
        groups,
        distinct,
    }
}

/// The observations of each reader, readers in order of first appearance.
fn by_reader(observations: &[Observation]) -> Vec<(&str, Vec<&Observation>)> {
    let mut order: Vec<(&str, Vec<&Observation>)> = Vec::new();
    let mut slot: HashMap<&str, usize> = HashMap::new();
    for o in observations {
        let i = *slot.entry(&o.reader).or_insert_with(|| {
            order.push((&o.reader, Vec::new()));
            order.len() - 1
        });
        order[i].1.push(o);
    }
    order
}

/// Checks (a) and (c) for one reader.
fn check_reader(
    reader: &str,
    observations: &[&Observation],
    index: &Index,
    findings: &mut Findings,
) -> ReaderSummary {
    let sign = findings.sign;
    let before = findings.report.reader_counts();
    let tokens = observations.iter().any(|o| !o.writers.is_empty());
    let mut seen: HashSet<i64> = HashSet::new();
    // Per group, how many of its IDs are checked already (covered by an earlier observation).
    let mut checked = vec![0usize; index.groups.len()];
    // The last ID listed, for the order check.
    let mut last: Option<i64> = None;
    for (n, o) in observations.iter().enumerate() {
        let position = sign * o.position;
        let cover: HashMap<u32, i64> = o
            .writers
            .iter()
            .filter_map(|(w, p)| index.ids_of.get(w).map(|&i| (i, sign * p)))
            .collect();
        // A token reader's rows legitimately arrive out of ID order across rounds; within a
        // round, every reader lists them ascending.
        if tokens {
            last = None;
        }
        for &id in &o.seen {
            let k = sign * id;
            if !seen.insert(k) {
                findings.push(Violation::SeenTwice {
                    reader: reader.to_owned(),
                    id,
                });
            }
            if let Some(before) = last
                && k < before
            {
                findings.push(Violation::Misordered {
                    reader: reader.to_owned(),
                    id,
                    after: sign * before,
                });
            }
            last = Some(k);
            let mut holders = index.instances(k).peekable();
            if holders.peek().is_none() {
                findings.push(Violation::UnknownRow {
                    reader: reader.to_owned(),
                    id,
                });
                continue;
            }
            let covered = k <= position
                || holders.any(|inst| {
                    inst.and_then(|i| cover.get(&i))
                        .is_some_and(|&upto| k <= upto)
                });
            if !covered {
                findings.push(Violation::BeyondPosition {
                    reader: reader.to_owned(),
                    id,
                    position: o.position,
                });
            }
        }
        for ((inst, ids), done) in index.groups.iter().zip(checked.iter_mut()) {
            let upto = match inst.and_then(|i| cover.get(&i)) {
                Some(&writer) => writer.max(position),
                None => position,
            };
            while let Some(&k) = ids.get(*done)
                && k <= upto
            {
                if !seen.contains(&k) {
                    findings.push(Violation::Miss {
                        id: sign * k,
                        reader: reader.to_owned(),
                        position: o.position,
                        observation: n as u64 + 1,
                    });
                }
                *done += 1;
            }
        }
    }
    let rows_not_seen = index.distinct.iter().filter(|k| !seen.contains(k)).count() as u64;
    let rows_beyond_final_position = index
        .groups
        .iter()
        .zip(&checked)
        .map(|((_, ids), done)| (ids.len() - done) as u64)
        .sum();
    let after = findings.report.reader_counts();
    ReaderSummary {
        reader: reader.to_owned(),
        observations: observations.len() as u64,
        seen: seen.len() as u64,
        final_position: observations.last().map_or(0, |o| o.position),
        tokens,
        rows_not_seen,
        rows_beyond_final_position,
        all_rows_seen: rows_not_seen == 0,
        misses: after.0 - before.0,
        seen_twice: after.1 - before.1,
        misordered: after.2 - before.2,
        beyond_position: after.3 - before.3,
        unknown_rows: after.4 - before.4,
    }
}

impl VerifyReport {
    /// The reader-level counters: misses, seen twice, misordered, beyond position,
    /// unknown rows.
    fn reader_counts(&self) -> (u64, u64, u64, u64, u64) {
        (
            self.misses,
            self.seen_twice,
            self.misordered,
            self.beyond_position,
            self.unknown_rows,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, instance: &str) -> StreamRow {
        StreamRow {
            table: 0,
            id: Some(id),
            instance: Some(instance.to_owned()),
        }
    }

    fn run(rows: &[StreamRow], observations: &[Observation]) -> VerifyReport {
        run_with(rows, observations, false, false, 100)
    }

    fn run_with(
        rows: &[StreamRow],
        observations: &[Observation],
        backwards: bool,
        shared_ids: bool,
        max_violations: usize,
    ) -> VerifyReport {
        let names = ["events".to_owned(), "more".to_owned()];
        check(
            rows,
            observations,
            &Options {
                table_names: &names,
                backwards,
                shared_ids,
                max_violations,
            },
        )
    }

    fn obs(reader: &str, position: i64, seen: &[i64]) -> Observation {
        Observation::new(reader, position, seen.to_vec())
    }

    #[test]
    fn a_clean_run_passes() {
        let rows = [row(2, "a"), row(3, "b"), row(5, "a"), row(6, "b")];
        let observations = [
            obs("r", 1, &[]),
            obs("r", 3, &[2, 3]),
            obs("r", 4, &[]),
            obs("r", 6, &[5, 6]),
        ];
        let report = run(&rows, &observations);
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.rows, 4);
        assert_eq!(report.distinct_ids, 4);
        assert_eq!(report.observations, 4);
        let r = &report.readers[0];
        assert_eq!((r.observations, r.seen, r.final_position), (4, 4, 6));
        assert!(r.all_rows_seen && !r.tokens);
        assert_eq!(r.rows_beyond_final_position, 0);
    }

    #[test]
    fn a_row_that_appears_below_an_acted_on_position_is_a_miss() {
        // Row 4 committed after the reader had moved to 6: it never saw it.
        let rows = [row(2, "a"), row(4, "b"), row(6, "a")];
        let observations = [obs("r", 3, &[2]), obs("r", 6, &[6])];
        let report = run(&rows, &observations);
        assert!(!report.is_ok());
        assert_eq!(report.misses, 1);
        assert_eq!(
            report.violations,
            [Violation::Miss {
                id: 4,
                reader: "r".into(),
                position: 6,
                observation: 2
            }]
        );
        assert_eq!(report.readers[0].rows_not_seen, 1);
        // Listing the row in a later round does not repair the miss.
        let late = [obs("r", 3, &[2]), obs("r", 6, &[6]), obs("r", 7, &[4])];
        let report = run(&rows, &late);
        assert_eq!(report.misses, 1);
        assert_eq!(report.misordered, 1);
        assert_eq!(report.beyond_position, 0, "4 <= 7 is covered");
    }

    #[test]
    fn rows_above_the_final_position_are_not_misses() {
        let rows = [row(2, "a"), row(3, "a"), row(9, "b")];
        let report = run(&rows, &[obs("r", 3, &[2, 3])]);
        assert!(report.is_ok(), "{report}");
        let r = &report.readers[0];
        assert_eq!(r.rows_beyond_final_position, 1);
        assert_eq!(r.rows_not_seen, 1);
        assert!(!r.all_rows_seen);
    }

    #[test]
    fn an_id_of_two_instances_is_handed_out_twice() {
        let rows = [row(2, "a"), row(2, "b"), row(3, "a")];
        let report = run(&rows, &[]);
        assert_eq!(report.ids_handed_out_twice, 1);
        assert_eq!(
            report.violations,
            [Violation::IdHandedOutTwice {
                id: 2,
                instances: vec!["a".into(), "b".into()]
            }]
        );
        // Allowing shared IDs never excuses two instances.
        assert_eq!(
            run_with(&rows, &[], false, true, 10).ids_handed_out_twice,
            1
        );
    }

    #[test]
    fn duplicate_rows_of_one_table_are_errors_unless_shared_ids_are_allowed() {
        let null = StreamRow {
            table: 0,
            id: Some(4),
            instance: None,
        };
        let rows = [row(4, "a"), row(4, "a"), null, row(5, "a")];
        let report = run(&rows, &[]);
        assert_eq!(report.duplicate_rows, 2);
        assert_eq!(
            report.ids_handed_out_twice, 0,
            "NULL instances are not counted"
        );
        assert_eq!(
            report.violations,
            [Violation::DuplicateRow {
                table: "events".into(),
                id: 4,
                rows: 3
            }]
        );
        assert!(run_with(&rows, &[], false, true, 10).is_ok());
        // The same ID in two tables, same writer: one stream row spread over two tables.
        let mut other = row(5, "a");
        other.table = 1;
        assert!(run(&[row(5, "a"), other], &[]).is_ok());
    }

    #[test]
    fn readers_must_not_see_a_row_twice_or_out_of_order() {
        let rows = [row(2, "a"), row(3, "a"), row(4, "a")];
        let report = run(&rows, &[obs("r", 3, &[3, 2]), obs("r", 4, &[4, 3])]);
        assert_eq!(report.misordered, 2, "{report}");
        assert_eq!(report.seen_twice, 1, "{report}");
        assert!(report.violations.contains(&Violation::SeenTwice {
            reader: "r".into(),
            id: 3
        }));
        assert!(report.violations.contains(&Violation::Misordered {
            reader: "r".into(),
            id: 2,
            after: 3
        }));
    }

    #[test]
    fn listing_rows_beyond_the_position_or_not_in_any_table_is_reported() {
        let rows = [row(2, "a"), row(5, "a")];
        let report = run(&rows, &[obs("r", 3, &[2, 5, 7])]);
        assert_eq!(report.beyond_position, 1);
        assert_eq!(report.unknown_rows, 1);
        assert!(report.violations.contains(&Violation::UnknownRow {
            reader: "r".into(),
            id: 7
        }));
    }

    #[test]
    fn backwards_streams_compare_with_greater_or_equal() {
        let rows = [row(-2, "a"), row(-3, "b"), row(-5, "a")];
        let clean = [obs("r", -3, &[-2, -3]), obs("r", -5, &[-5])];
        assert!(run_with(&rows, &clean, true, false, 10).is_ok());
        let missed = [obs("r", -2, &[-2]), obs("r", -5, &[-5])];
        let report = run_with(&rows, &missed, true, false, 10);
        assert_eq!(
            report.violations,
            [Violation::Miss {
                id: -3,
                reader: "r".into(),
                position: -5,
                observation: 2
            }]
        );
        // The same observations on a forwards stream: -5 <= -2, so they are out of order.
        assert!(!run_with(&rows, &clean, false, false, 10).is_ok());
    }

    #[test]
    fn token_readers_are_held_to_their_writer_positions() {
        // b is ahead: the token promises b's rows up to 8 although P is 3.
        let rows = [
            row(2, "a"),
            row(3, "a"),
            row(6, "b"),
            row(7, "b"),
            row(5, "a"),
        ];
        let mut first = obs("t", 3, &[2, 3, 6]);
        first.writers.insert("b".into(), 8);
        first.token = Some("m3~2.8".into());
        let second = obs("t", 8, &[5, 7]);
        let report = run(&rows, &[first.clone(), second]);
        // 7 <= 8 was promised by the first token but only read in the second round.
        assert_eq!(
            report.violations,
            [Violation::Miss {
                id: 7,
                reader: "t".into(),
                position: 3,
                observation: 1
            }],
            "{report}"
        );
        assert!(report.readers[0].tokens);
        // Reading it in the first round makes the run clean, although 5 comes after 7.
        let mut first_ok = first;
        first_ok.seen = vec![2, 3, 6, 7];
        let report = run(&rows, &[first_ok, obs("t", 8, &[5])]);
        assert!(report.is_ok(), "{report}");
        // A token covers only its writer's rows: a's row 5 above P = 3 is not covered.
        let mut beyond = obs("t", 3, &[2, 3, 5]);
        beyond.writers.insert("b".into(), 8);
        assert_eq!(run(&rows, &[beyond]).beyond_position, 1);
    }

    #[test]
    fn readers_are_checked_independently_and_violations_are_capped() {
        let rows: Vec<StreamRow> = (2..12).map(|id| row(id, "a")).collect();
        let observations = [
            obs("good", 11, &(2..12).collect::<Vec<_>>()),
            obs("bad", 11, &[]),
        ];
        let report = run_with(&rows, &observations, false, false, 3);
        assert_eq!(report.misses, 10);
        assert_eq!(report.violations.len(), 3);
        assert_eq!(report.violations_omitted, 7);
        assert_eq!(report.readers.len(), 2);
        assert!(report.readers[0].all_rows_seen);
        assert_eq!(report.readers[0].misses, 0);
        assert_eq!(report.readers[1].rows_not_seen, 10);
        assert_eq!(report.readers[1].misses, 10);
        assert!(report.to_string().contains("10 misses"), "{report}");
    }

    #[test]
    fn null_ids_are_counted_and_skipped() {
        let rows = [StreamRow {
            table: 0,
            id: None,
            instance: Some("a".into()),
        }];
        let report = run(&rows, &[]);
        assert_eq!(
            (report.rows, report.null_ids, report.distinct_ids),
            (1, 1, 0)
        );
        assert!(report.is_ok());
    }
}

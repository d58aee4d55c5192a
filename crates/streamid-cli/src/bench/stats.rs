//! From the measuring writer's commits and the reader's token changes to latencies and
//! percentiles.

use anyhow::{Context as _, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

/// The longest latency the histogram records exactly (longer ones are clamped): 60 s.
const HIGHEST_NS: u64 = 60_000_000_000;

/// One measured commit: its ID and the wall-clock time its COMMIT returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sample {
    /// The committed ID.
    pub(crate) id: i64,
    /// Nanoseconds since the Unix epoch when `commit()` returned.
    pub(crate) committed_ns: i64,
}

/// One change of the reader's current token: the new position and the wall-clock time the
/// reader saw it, in nanoseconds since the Unix epoch.
pub(crate) type Change = (i64, i64);

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) min: f64,
    pub(crate) p50: f64,
    pub(crate) p90: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

/// The samples matched with the reader's changes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Matched {
    /// Samples the reader's position covered.
    pub(crate) covered: u64,
    /// Samples it never covered (a liveness failure).
    pub(crate) not_covered: u64,
    /// Covered samples whose coverage the reader saw before the writer's `commit()` had
    /// returned (counted as 0): the announcement raced the writer's own return.
    pub(crate) early: u64,
    /// Percentiles of the covered samples (`None` if there are none).
    pub(crate) latency_us: Option<Percentiles>,
}

/// Matches every sample with the first change whose position covers its ID. `changes`
/// must be in the order the reader saw them (positions never decrease).
///
/// # Errors
///
/// Only if the histogram cannot be created (it can, for these constant bounds).
pub(crate) fn analyse(samples: &[Sample], changes: &[Change]) -> Result<Matched> {
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, HIGHEST_NS, 3).context("creating the histogram")?;
    let (mut covered, mut not_covered, mut early) = (0, 0, 0);
    for sample in samples {
        let first = changes.partition_point(|&(position, _)| position < sample.id);
        let Some(&(_, seen_ns)) = changes.get(first) else {
            not_covered += 1;
            continue;
        };
        covered += 1;
        let latency = seen_ns - sample.committed_ns;
        if latency < 0 {
            early += 1;
        }
        let ns = u64::try_from(latency).unwrap_or(0).clamp(1, HIGHEST_NS);
        histogram.saturating_record(ns);
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    let latency_us = (covered > 0).then(|| Percentiles {
        min: us(histogram.min()),
        p50: us(histogram.value_at_quantile(0.5)),
        p90: us(histogram.value_at_quantile(0.9)),
        p99: us(histogram.value_at_quantile(0.99)),
        max: us(histogram.max()),
        mean: histogram.mean() / 1000.0,
    });
    Ok(Matched {
        covered,
        not_covered,
        early,
        latency_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_each_sample_with_the_first_covering_change() {
        let samples = [
            Sample {
                id: 5,
                committed_ns: 1_000_000,
            },
            Sample {
                id: 7,
                committed_ns: 2_000_000,
            },
            Sample {
                id: 9,
                committed_ns: 3_000_000,
            },
            Sample {
                id: 20,
                committed_ns: 4_000_000,
            },
        ];
        // 5 is covered at 1.5 ms (a jump from 4 to 8 also covers 7, seen before its commit
        // returned); 9 at 3.2 ms; 20 never.
        let changes = [(4, 900_000), (8, 1_500_000), (9, 3_200_000)];
        let m = analyse(&samples, &changes).unwrap();
        assert_eq!((m.covered, m.not_covered, m.early), (3, 1, 1));
        let p = m.latency_us.unwrap();
        assert!((p.max - 500.0).abs() < 1.0, "{p:?}");
        assert!(p.min < 0.01, "{p:?}");
        assert!((p.p50 - 200.0).abs() < 1.0, "{p:?}");
    }

    #[test]
    fn nothing_covered_has_no_percentiles() {
        let samples = [Sample {
            id: 3,
            committed_ns: 10,
        }];
        let m = analyse(&samples, &[]).unwrap();
        assert_eq!((m.covered, m.not_covered), (0, 1));
        assert_eq!(m.latency_us, None);
    }
}

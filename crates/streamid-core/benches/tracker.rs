//! Completion cost of the position tracker with `n` IDs in flight (spec §6.7: amortised
//! `O(log n)` per ID; the original scans every blocked ID, upstream #9190, #10755).
//!
//! Each iteration finishes one randomly chosen unfinished ID and registers one new ID, so
//! `n` stays constant. Two shapes:
//!
//! - `random`: IDs complete in random order; `P` moves whenever the smallest one finishes.
//! - `smallest_pinned`: one extra ID, the smallest, never finishes, so every finished ID
//!   piles up in `blocked` (millions over a run) and `P` never moves: a completion that
//!   scanned `blocked` would show here.
//!
//! Run: `cargo bench -p streamid-core --bench tracker -- --warm-up-time 1 --measurement-time 3`
//! (results in `BENCHMARKS.md`).

// Benchmark set-up: a failed registration is a bug in this file, not a condition to handle.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use streamid_core::Tracker;

/// IDs in flight.
const SIZES: [usize; 4] = [1, 100, 10_000, 100_000];

/// A single writer with `n` unfinished IDs, completing them in random order.
struct Load {
    tracker: Tracker,
    /// The unfinished IDs that may be finished (the pinned one is not among them).
    open: Vec<i64>,
    next: i64,
    rng: StdRng,
}

impl Load {
    fn new(n: usize, pinned: bool) -> Load {
        let mut tracker = Tracker::new("w", ["w"], [("w", 1)], 1);
        let mut next = 2;
        if pinned {
            let ticket = tracker.begin_fetch();
            tracker.register(ticket, &[next]).unwrap();
            next += 1;
        }
        let mut open = Vec::with_capacity(n);
        while open.len() < n {
            let batch: Vec<i64> = (next..next + (n - open.len()).min(1000) as i64).collect();
            let ticket = tracker.begin_fetch();
            tracker.register(ticket, &batch).unwrap();
            next += batch.len() as i64;
            open.extend(batch);
        }
        Load {
            tracker,
            open,
            next,
            rng: StdRng::seed_from_u64(0x5eed),
        }
    }

    /// Finishes one random unfinished ID and registers a new one.
    fn step(&mut self) {
        let i = self.rng.random_range(0..self.open.len());
        let id = self.open.swap_remove(i);
        black_box(self.tracker.finish(&[id]));
        let ticket = self.tracker.begin_fetch();
        self.tracker.register(ticket, &[self.next]).unwrap();
        self.open.push(self.next);
        self.next += 1;
    }
}

fn completion(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracker_completion");
    for (shape, pinned) in [("random", false), ("smallest_pinned", true)] {
        for n in SIZES {
            let mut load = Load::new(n, pinned);
            group.bench_function(BenchmarkId::new(shape, n), |b| b.iter(|| load.step()));
            assert_eq!(load.tracker.unfinished_count(), n + usize::from(pinned));
        }
    }
    group.finish();
}

criterion_group!(benches, completion);
criterion_main!(benches);

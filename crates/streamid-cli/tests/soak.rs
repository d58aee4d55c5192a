//! Soak test (issue 5 item 6): writer processes over LISTEN/NOTIFY with rollbacks, a random
//! writer killed (SIGKILL) and restarted at a fixed period, and one PostgreSQL crash restart
//! (`pg_ctl stop -m immediate`, fsync on) in the middle; the run must end with zero misses
//! and zero duplicates (`streamid verify`), every logged commit in the table, and the
//! reader caught up within the reclaim bound plus slack (see `fault_harness`).
//!
//! - `soak_short` runs in every `cargo test` (about 8 s of writing).
//! - `soak` is the full run, ignored by default:
//!
//!   ```sh
//!   cargo test -p streamid-cli --test soak -- --ignored --nocapture
//!   ```
//!
//!   Parameters (environment): `STREAMID_SOAK_SECS` (60), `STREAMID_SOAK_WRITERS` (8),
//!   `STREAMID_SOAK_KILL_EVERY_SECS` (10), `STREAMID_SOAK_ROLLBACK_RATE` (0.05),
//!   `STREAMID_SOAK_MAX_DELAY_MS` (20). The PostgreSQL restart comes at half time.
//!
//! Both print a `FAULT-REPORT {json}` line (appended to `$STREAMID_FAULT_REPORT` if set).

// A test binary: panicking on a failed step is how it reports failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod fault_harness;

use std::time::{Duration, Instant};

use fault_harness::{Cluster, Fleet, WriteOptions, assert_no_long_stall_after_last_fault};

/// One soak run's shape.
#[derive(Debug, Clone, Copy)]
struct Soak {
    duration: Duration,
    writers: usize,
    kill_every: Duration,
    options: WriteOptions,
}

impl Soak {
    /// The full run, with the environment's overrides.
    fn from_env() -> Soak {
        Soak {
            duration: Duration::from_secs(env("STREAMID_SOAK_SECS", 60)),
            writers: env("STREAMID_SOAK_WRITERS", 8),
            kill_every: Duration::from_secs(env("STREAMID_SOAK_KILL_EVERY_SECS", 10)),
            options: WriteOptions {
                rollback_rate: env("STREAMID_SOAK_ROLLBACK_RATE", 0.05),
                max_delay_ms: env("STREAMID_SOAK_MAX_DELAY_MS", 20),
            },
        }
    }

    fn run(self, name: &str) {
        assert!(self.writers >= 2, "a soak needs at least two writers");
        let cluster = Cluster::start(false);
        let mut fleet = Fleet::start(&cluster, self.writers, self.options);
        let start = Instant::now();
        let restart_at = start + self.duration / 2;
        let mut restarted = false;
        let mut next_kill = start + self.kill_every;
        let mut rng = Lcg(0x5eed ^ u64::from(std::process::id()));
        while start.elapsed() < self.duration {
            let now = Instant::now();
            if !restarted && now >= restart_at {
                cluster
                    .server
                    .restart_immediate()
                    .expect("restart PostgreSQL");
                fleet.fault("pg restart -m immediate", "mid-run");
                restarted = true;
            } else if now >= next_kill {
                let live = fleet.live();
                let victim = live[rng.below(live.len())].clone();
                fleet.kill9(&victim);
                // Dead for a moment, so recovery by the others has to happen.
                std::thread::sleep(Duration::from_millis(500));
                fleet.restart(&victim);
                next_kill += self.kill_every;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            restarted,
            "the run was too short for the PostgreSQL restart"
        );
        let report = fleet.finish(name);
        assert_no_long_stall_after_last_fault(&report);
        eprintln!(
            "{name}: {} rows, {} writers, {:.0} s, faults {}, max stall {} ms, catch-up {} ms, \
             unknown outcomes {} ({} committed), gaps {:?}",
            report.rows,
            report.writers,
            report.duration_s,
            report.faults.len(),
            report.max_stall_ms,
            report.catch_up_ms,
            report.unknown,
            report.unknown_committed,
            report.gaps
        );
    }
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
        Err(_) => default,
    }
}

/// A tiny deterministic generator for picking victims (no extra dependency).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// The short soak of every `cargo test`: 4 writers, 8 s, a kill every 2.5 s, one
/// PostgreSQL restart at 4 s.
#[test]
fn soak_short() {
    Soak {
        duration: Duration::from_secs(8),
        writers: 4,
        kill_every: Duration::from_millis(2500),
        options: WriteOptions {
            rollback_rate: 0.05,
            max_delay_ms: 20,
        },
    }
    .run("soak (short)");
}

#[test]
#[ignore = "soak: run with cargo test -p streamid-cli --test soak -- --ignored"]
fn soak() {
    Soak::from_env().run("soak");
}

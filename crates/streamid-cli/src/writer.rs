//! Writer tasks: each owns one generator instance and writes events until the shared
//! [`Budget`] runs out. The demo runs several in one process; `streamid worker write` runs
//! one per process, with a [`JsonLines`] log of every outcome and the will to carry on
//! after failed writes (faults are what its runs inject).
//!
//! The counters here ([`WriterStats`], [`Budget::max_allocated`]) feed the live view and
//! the workers' progress lines only. The demo's report never trusts them: it counts rows in
//! the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;
use streamid::MultiWriterIdGenerator;
use tokio::time::Instant;

use crate::exit::one_line;
use crate::output::JsonLines;
use crate::plan::Bound;
use crate::store::{Event, Store};

/// A writer that tolerates failures gives up after this many failed writes in a row.
pub(crate) const MAX_FAILURES_IN_A_ROW: u32 = 50;
/// The pause after a failed write, doubled per failure in a row up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(20);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// How many writes may still start, shared by all writers: at most `rows` writes, none
/// after `deadline`, none after [`stop`](Self::stop).
#[derive(Debug)]
pub(crate) struct Budget {
    /// Writes left to start (`u64::MAX` when only a deadline bounds the run).
    remaining: AtomicU64,
    deadline: Option<Instant>,
    stopped: AtomicBool,
    /// The largest ID any writer allocated (for the live view's lag).
    max_allocated: AtomicI64,
}

impl Budget {
    /// A budget for `bound`, starting now (no bound: until [`stop`](Self::stop)).
    pub(crate) fn new(bound: Bound) -> Budget {
        Budget {
            remaining: AtomicU64::new(bound.rows.unwrap_or(u64::MAX)),
            deadline: bound.duration.map(|d| Instant::now() + d),
            stopped: AtomicBool::new(false),
            max_allocated: AtomicI64::new(0),
        }
    }

    /// Takes one write from the budget; `false` when the run is over.
    pub(crate) fn claim(&self) -> bool {
        if self.stopped.load(Ordering::Relaxed)
            || self.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return false;
        }
        self.remaining
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Ends the run early (Ctrl-C, or another writer failed): writes in progress finish,
    /// no new one starts.
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// The largest ID any writer has allocated so far (0 before the first).
    pub(crate) fn max_allocated(&self) -> i64 {
        self.max_allocated.load(Ordering::Relaxed)
    }

    fn allocated(&self, id: i64) {
        self.max_allocated.fetch_max(id, Ordering::Relaxed);
    }
}

/// One writer's counters, as its task reports them.
#[derive(Debug, Default)]
pub(crate) struct WriterStats {
    /// Transactions committed.
    pub(crate) committed: AtomicU64,
    /// Transactions rolled back on purpose.
    pub(crate) rolled_back: AtomicU64,
    /// Writes that failed (only counted by writers that carry on after failures).
    pub(crate) failed: AtomicU64,
}

/// One line of a writer's log: the outcome of one write, with its ID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum WriteLine<'a> {
    /// The row is committed.
    Committed {
        /// Its ID.
        id: i64,
        /// The writer.
        instance: &'a str,
    },
    /// The transaction was rolled back on purpose; the ID is a gap.
    RolledBack {
        /// The ID.
        id: i64,
        /// The writer.
        instance: &'a str,
    },
    /// The write failed; its ID (if one was allocated) is a gap.
    Failed {
        /// The ID, if allocated.
        id: Option<i64>,
        /// The writer.
        instance: &'a str,
        /// Why, on one line.
        error: String,
    },
    /// COMMIT was sent but its outcome is unknown: the row may or may not exist.
    Unknown {
        /// The ID, if allocated.
        id: Option<i64>,
        /// The writer.
        instance: &'a str,
        /// Why, on one line.
        error: String,
    },
}

/// What a writer task needs besides its generator.
#[derive(Debug, Clone)]
pub(crate) struct WriterSetup {
    /// The database.
    pub(crate) store: Arc<Store>,
    /// The shared budget.
    pub(crate) budget: Arc<Budget>,
    /// This writer's counters.
    pub(crate) stats: Arc<WriterStats>,
    /// Upper bound of the random delay before the row is written.
    pub(crate) max_delay: Duration,
    /// Probability of rolling back.
    pub(crate) rollback_rate: f64,
    /// Seed of this writer's random choices.
    pub(crate) seed: u64,
    /// Where each outcome is logged, if anywhere.
    pub(crate) log: Option<Arc<JsonLines>>,
    /// Log failed writes and carry on (up to [`MAX_FAILURES_IN_A_ROW`] in a row) instead of
    /// ending at the first.
    pub(crate) keep_going: bool,
}

/// Writes events through `generator` until the budget runs out.
///
/// # Errors
///
/// The first database error, with the writer's name; the budget is stopped so the other
/// writers end too.
pub(crate) async fn run(generator: MultiWriterIdGenerator, setup: WriterSetup) -> Result<()> {
    let result = write_until_done(&generator, &setup).await;
    if result.is_err() {
        setup.budget.stop();
    }
    result.with_context(|| format!("{} failed", generator.instance_name()))
}

async fn write_until_done(generator: &MultiWriterIdGenerator, setup: &WriterSetup) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(setup.seed);
    let max_delay_us = u64::try_from(setup.max_delay.as_micros()).unwrap_or(u64::MAX);
    let instance = generator.instance_name().to_owned();
    let mut n: u64 = 0;
    let mut failures_in_a_row = 0;
    while setup.budget.claim() {
        n += 1;
        let event = Event {
            instance: instance.clone(),
            payload: format!("event {n} of {instance}"),
            delay: Duration::from_micros(rng.random_range(0..=max_delay_us)),
            rollback: rng.random::<f64>() < setup.rollback_rate,
        };
        let budget = &setup.budget;
        let mut allocated = None;
        let written = setup
            .store
            .write_event(generator, &event, |id| {
                budget.allocated(id);
                allocated = Some(id);
            })
            .await;
        let line = match written {
            Ok(id) => {
                failures_in_a_row = 0;
                let (counter, line) = if event.rollback {
                    let line = WriteLine::RolledBack {
                        id,
                        instance: &instance,
                    };
                    (&setup.stats.rolled_back, line)
                } else {
                    let line = WriteLine::Committed {
                        id,
                        instance: &instance,
                    };
                    (&setup.stats.committed, line)
                };
                counter.fetch_add(1, Ordering::Relaxed);
                line
            }
            Err(e) if setup.keep_going => {
                failures_in_a_row += 1;
                setup.stats.failed.fetch_add(1, Ordering::Relaxed);
                if failures_in_a_row > MAX_FAILURES_IN_A_ROW {
                    return Err(e.context(format!(
                        "giving up after {MAX_FAILURES_IN_A_ROW} failed writes in a row"
                    )));
                }
                tracing::warn!(error = %one_line(&e), "a write failed; carrying on");
                failure_line(&instance, allocated, &e)
            }
            Err(e) => return Err(e),
        };
        if let Some(log) = &setup.log {
            log.write(&line)?;
        }
        if failures_in_a_row > 0 {
            let pause = FIRST_PAUSE.saturating_mul(1 << failures_in_a_row.min(10));
            tokio::time::sleep(pause.min(MAX_PAUSE)).await;
        }
    }
    Ok(())
}

/// The log line of a failed write: `unknown` when COMMIT's outcome is unknown (the row may
/// exist), `failed` otherwise.
fn failure_line<'a>(instance: &'a str, id: Option<i64>, err: &anyhow::Error) -> WriteLine<'a> {
    let error = one_line(err);
    let unknown = err.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<streamid::Error>(),
            Some(streamid::Error::CommitOutcomeUnknown { .. })
        )
    });
    if unknown {
        WriteLine::Unknown {
            id,
            instance,
            error,
        }
    } else {
        WriteLine::Failed {
            id,
            instance,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rows: Option<u64>, duration: Option<Duration>) -> Bound {
        Bound { rows, duration }
    }

    #[test]
    fn the_budget_hands_out_exactly_rows_claims() {
        let budget = Budget::new(plan(Some(3), None));
        assert!((0..3).all(|_| budget.claim()));
        assert!(!budget.claim());
        assert!(!budget.claim(), "an exhausted budget stays exhausted");
    }

    #[test]
    fn stop_ends_the_budget() {
        let budget = Budget::new(plan(None, Some(Duration::from_secs(3600))));
        assert!(budget.claim());
        budget.stop();
        assert!(!budget.claim());
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_ends_the_budget() {
        let budget = Budget::new(plan(None, Some(Duration::from_secs(1))));
        assert!(budget.claim());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!budget.claim());
    }

    #[test]
    fn log_lines_have_the_documented_shape() {
        let line = |l: WriteLine<'_>| serde_json::to_string(&l).unwrap();
        assert_eq!(
            line(WriteLine::Committed {
                id: 17,
                instance: "a"
            }),
            r#"{"event":"committed","id":17,"instance":"a"}"#
        );
        assert_eq!(
            line(WriteLine::RolledBack {
                id: 18,
                instance: "a"
            }),
            r#"{"event":"rolled_back","id":18,"instance":"a"}"#
        );
        let failed = failure_line("a", None, &anyhow::anyhow!("connection\nreset"));
        assert_eq!(
            line(failed),
            r#"{"event":"failed","id":null,"instance":"a","error":"connection; reset"}"#
        );
    }

    #[test]
    fn no_bound_runs_until_stopped() {
        let budget = Budget::new(plan(None, None));
        assert!((0..1000).all(|_| budget.claim()));
        budget.stop();
        assert!(!budget.claim());
    }

    #[test]
    fn max_allocated_only_grows() {
        let budget = Budget::new(plan(Some(1), None));
        budget.allocated(5);
        budget.allocated(3);
        assert_eq!(budget.max_allocated(), 5);
    }
}

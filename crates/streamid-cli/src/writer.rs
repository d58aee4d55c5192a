//! Writer tasks: each owns one generator instance and writes events until the shared
//! [`Budget`] runs out.
//!
//! The counters here ([`WriterStats`], [`Budget::max_allocated`]) feed the live view only.
//! The final report never trusts them: it counts rows in the database.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use streamid::MultiWriterIdGenerator;
use tokio::time::Instant;

use crate::plan::DemoPlan;
use crate::store::{Event, Store};

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
    /// A budget for `plan`'s bound, starting now.
    pub(crate) fn new(plan: &DemoPlan) -> Budget {
        Budget {
            remaining: AtomicU64::new(plan.bound.rows.unwrap_or(u64::MAX)),
            deadline: plan.bound.duration.map(|d| Instant::now() + d),
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
    while setup.budget.claim() {
        n += 1;
        let event = Event {
            instance: instance.clone(),
            payload: format!("event {n} of {instance}"),
            delay: Duration::from_micros(rng.random_range(0..=max_delay_us)),
            rollback: rng.random::<f64>() < setup.rollback_rate,
        };
        let budget = &setup.budget;
        setup
            .store
            .write_event(generator, &event, |id| budget.allocated(id))
            .await?;
        let counter = if event.rollback {
            &setup.stats.rolled_back
        } else {
            &setup.stats.committed
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Bound, StoreSpec};

    fn plan(rows: Option<u64>, duration: Option<Duration>) -> DemoPlan {
        DemoPlan {
            writers: 2,
            bound: Bound { rows, duration },
            rollback_rate: 0.0,
            max_delay: Duration::ZERO,
            store: StoreSpec::PostgresTemp,
            json: false,
            quiet: true,
            seed: 1,
        }
    }

    #[test]
    fn the_budget_hands_out_exactly_rows_claims() {
        let budget = Budget::new(&plan(Some(3), None));
        assert!((0..3).all(|_| budget.claim()));
        assert!(!budget.claim());
        assert!(!budget.claim(), "an exhausted budget stays exhausted");
    }

    #[test]
    fn stop_ends_the_budget() {
        let budget = Budget::new(&plan(None, Some(Duration::from_secs(3600))));
        assert!(budget.claim());
        budget.stop();
        assert!(!budget.claim());
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_ends_the_budget() {
        let budget = Budget::new(&plan(None, Some(Duration::from_secs(1))));
        assert!(budget.claim());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!budget.claim());
    }

    #[test]
    fn max_allocated_only_grows() {
        let budget = Budget::new(&plan(Some(1), None));
        budget.allocated(5);
        budget.allocated(3);
        assert_eq!(budget.max_allocated(), 5);
    }
}

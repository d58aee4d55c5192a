//! Cancellation sweeps (style items 7 and 8; rust-postgres' `Cancellable { polls_left }`).
//!
//! A sweep drops an operation's future after exactly 0, 1, 2, … polls — waiting for the
//! future's own waker between polls, so every poll sees real progress from the database —
//! until the operation completes. After each drop it asserts that every ID is finished
//! exactly once (`unfinished_ids() == 0`, no commit outcome left pending), that the
//! tracker's invariants hold, and that `current_token()` catches up with
//! `max_allocated_token()` (upstream #19800: a cancelled request must not stall the stream).

use std::future::Future;
use std::task::Poll;
use std::time::Duration;

use crate::common::error_log::assert_no_streamid_errors;
use crate::common::eventually;
use crate::harness::{Gen, Harness};

/// A sweep gives up (and fails) if an operation needs more polls than this.
const MAX_POLLS: usize = 200;

/// Where a sweep step cuts an operation off.
#[derive(Debug, Clone, Copy)]
pub struct Cut {
    /// Polls before the drop.
    pub polls: usize,
    /// Drop when the future's waker fires after the last poll (the I/O it waited for has
    /// arrived, unseen), rather than right after the last poll (the I/O still in flight).
    pub at_wake: bool,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let when = if self.at_wake {
            "at the next wake"
        } else {
            "at once"
        };
        write!(f, "dropped after {} polls, {when}", self.polls)
    }
}

/// Polls `fut` exactly `cut.polls` times, each time after its waker fired, then drops it.
/// Returns its output if it completed within those polls.
///
/// The task is woken only by `fut`'s own wakers, so poll `k + 1` happens once the I/O that
/// poll `k` waited for has progressed (a server reply; a blocking-pool task finishing);
/// the drop lands at the `.await` the last poll stopped at.
pub async fn poll_then_drop<F: Future>(fut: F, cut: Cut) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    let mut left = cut.polls;
    let limited = std::future::poll_fn(move |cx| {
        if left == 0 {
            return Poll::Ready(None);
        }
        left -= 1;
        match fut.as_mut().poll(cx) {
            Poll::Ready(output) => Poll::Ready(Some(output)),
            Poll::Pending if left == 0 && !cut.at_wake => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    });
    // The timeout only keeps a broken operation from hanging the test; it never fires in
    // a passing run (`fut` is woken long before).
    tokio::time::timeout(Duration::from_secs(20), limited)
        .await
        .expect("the operation under test hung")
}

/// What a sweep step did.
pub enum Step {
    /// The operation completed within its polls: this pass of the sweep ends.
    Completed,
    /// The future was dropped. `lost` IDs may have been handed out by the sequence/counter
    /// and never registered (a fetch dropped in flight): gaps nobody learns, which spec
    /// §1.2 lets `P` pass only at the next allocation.
    Dropped { lost: i64 },
}

/// After a step: every ID finished, nothing pending, invariants hold, `P` within `lost` of
/// the head and, after one more allocation, exactly at it.
async fn check_after_step(g: &Gen, what: &str, cut: Cut, lost: i64) {
    eventually(
        &format!("{what} {cut}: every ID finished, every outcome resolved"),
        async || g.unfinished_ids() == 0 && g.unresolved_commits() == 0,
    )
    .await;
    g.check_invariants()
        .unwrap_or_else(|e| panic!("{what} {cut}: {e}"));
    let head = g.max_allocated_token().await.unwrap();
    let p = g.current_token();
    assert!(
        p <= head && head - p <= lost,
        "{what} {cut}: P = {p}, head = {head}, at most {lost} lost"
    );
    // The next allocation passes whatever a cancelled fetch took (spec §1.2, liveness).
    let mut late = 0;
    loop {
        let next = g.next_id().await.unwrap();
        let id = next.id();
        drop(next);
        assert_eq!(g.current_token(), id, "{what} {cut}: stalled");
        if g.max_allocated_token().await.unwrap() == id {
            break;
        }
        // A fetch whose future was dropped may still take its value after this allocation:
        // on SQLite it runs on the blocking pool; on PostgreSQL its query is already on
        // the wire of another connection than this allocation's (a cancelled transaction's
        // `nextval`), and the server may run it later. One more gap, which the next
        // allocation passes.
        late += 1;
        assert!(
            late <= 20,
            "{what} {cut}: the head keeps moving past {id} after it was allocated"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(g.unfinished_ids(), 0);
    g.check_invariants().unwrap();
    assert_no_streamid_errors();
}

/// Runs `step(cut)` for `cut.polls = 0, 1, 2, …` until the operation completes, once
/// dropping at once and once at the next wake, checking after each step. Returns the
/// number of polls the operation needed.
///
/// On PostgreSQL every swept operation waits for the server at least once, so it needs
/// two polls; finishing within one means the OS paused this thread until the reply had
/// arrived (a loaded machine), and nothing was cut off in flight: the sweep is then run
/// again, up to three times.
pub async fn sweep(
    h: &Harness,
    g: &Gen,
    what: &str,
    mut step: impl AsyncFnMut(Cut) -> Step,
) -> usize {
    let mut needed = 0;
    for _round in 0..3 {
        for at_wake in [false, true] {
            let mut done = false;
            for polls in 0..=MAX_POLLS {
                let cut = Cut { polls, at_wake };
                match step(cut).await {
                    Step::Completed => {
                        check_after_step(g, what, cut, 0).await;
                        needed = needed.max(polls);
                        done = true;
                        break;
                    }
                    Step::Dropped { lost } => check_after_step(g, what, cut, lost).await,
                }
            }
            assert!(done, "{what} did not complete within {MAX_POLLS} polls");
        }
        if h.is_sqlite() || needed >= 2 {
            break;
        }
    }
    needed
}

/// Fails if a sweep of an operation needing I/O never cut it off in flight.
///
/// On PostgreSQL such an operation needs at least two polls (send, then the reply wakes
/// it). On SQLite it is one call on the blocking pool: the first poll spawns it and may
/// already find it finished, so one poll is legitimate there and the sweep cuts it off in
/// flight only when the blocking call is slower than the poll — no assertion.
pub fn assert_swept(h: &Harness, what: &str, polls: usize) {
    if let Harness::Pg(_) = h {
        assert!(
            polls >= 2,
            "{what} completed after {polls} polls: nothing was swept"
        );
    }
}

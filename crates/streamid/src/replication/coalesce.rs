//! When the replication driver announces (spec §12.2): the coalescing window.
//!
//! Every announcement reads the newest position when it is sent, and the driver has at most
//! one in flight (it awaits each publish). Beyond that:
//!
//! - one caused by a **local completion** goes out at once, unless another such one went
//!   out within the last window: a writer's own commits never wait behind its echoes;
//! - one that only **follows other writers** (an idle writer's echo, up to one per message
//!   heard) waits until the window since the last announcement of any kind has passed.
//!
//! Both kinds stay bounded to one per window. Under load every writer echoes often, so a
//! single window for both would delay each writer's own commits by up to a window at every
//! hop (measured in BENCHMARKS.md, "Replication latency"). The driver waits for
//! [`due`](Coalescer::due) in an arm of its loop, so it keeps receiving messages meanwhile.

use std::time::{Duration, Instant};

/// The driver's coalescing state for one connection.
#[derive(Debug)]
pub(super) struct Coalescer {
    window: Duration,
    /// When the waiting announcement goes out, if one waits.
    due: Option<Instant>,
    /// The waiting announcement includes a local completion.
    own_waiting: bool,
    /// When an announcement including a local completion last went out.
    last_own: Option<Instant>,
}

impl Coalescer {
    pub(super) fn new(window: Duration) -> Coalescer {
        Coalescer {
            window,
            due: None,
            own_waiting: false,
            last_own: None,
        }
    }

    /// A change to announce (`own`: a local completion caused it); `last_sent` is when the
    /// last announcement of any kind went out. True: announce now, then call
    /// [`sent`](Self::sent). False: it waits until [`due`](Self::due).
    pub(super) fn request(&mut self, own: bool, last_sent: Option<Instant>, now: Instant) -> bool {
        self.own_waiting |= own;
        let since = if own { self.last_own } else { last_sent };
        match since.map(|at| at + self.window).filter(|&at| at > now) {
            Some(at) => {
                self.due = Some(self.due.map_or(at, |due| due.min(at)));
                false
            }
            None => true,
        }
    }

    /// When the waiting announcement is due, if one waits.
    pub(super) fn due(&self) -> Option<Instant> {
        self.due
    }

    /// An announcement goes out now: it carries everything waiting.
    pub(super) fn sent(&mut self, now: Instant) {
        self.due = None;
        if std::mem::take(&mut self.own_waiting) {
            self.last_own = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn own_completions_go_out_at_once_once_per_window() {
        let t = Instant::now();
        let mut c = Coalescer::new(MS);
        // An echo went out just now; an own completion does not wait for it.
        assert!(c.request(true, Some(t), t));
        c.sent(t);
        // A second one within the window waits for the window since the first.
        assert!(!c.request(true, Some(t), t + MS / 4));
        assert_eq!(c.due(), Some(t + MS));
        c.sent(t + MS);
        assert_eq!(c.due(), None);
        // After the window, at once again.
        assert!(c.request(true, Some(t + MS), t + MS * 3));
    }

    #[test]
    fn echoes_wait_for_the_window_since_any_announcement() {
        let t = Instant::now();
        let mut c = Coalescer::new(MS);
        assert!(c.request(false, None, t), "nothing sent yet");
        c.sent(t);
        assert!(!c.request(false, Some(t), t + MS / 2));
        assert_eq!(c.due(), Some(t + MS));
        // An own completion meanwhile goes out at once and carries the echo along.
        assert!(c.request(true, Some(t), t + MS / 2));
        c.sent(t + MS / 2);
        assert_eq!(c.due(), None);
        // The next own completion waits for the window since that one, echo or not.
        assert!(!c.request(true, Some(t + MS / 2), t + MS));
        assert!(!c.request(false, Some(t + MS / 2), t + MS));
        assert_eq!(c.due(), Some(t + MS + MS / 2));
    }

    #[test]
    fn a_zero_window_never_waits() {
        let t = Instant::now();
        let mut c = Coalescer::new(Duration::ZERO);
        for own in [true, false, true] {
            assert!(c.request(own, Some(t), t));
            c.sent(t);
        }
        assert_eq!(c.due(), None);
    }
}

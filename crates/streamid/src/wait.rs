//! Waiting for positions (spec §12.5): block until a position is covered, with a timeout
//! that is a result, not an error, and a bound on positions from the future.

use std::time::Duration;

use streamid_core::Tracker;
use tokio::sync::watch;

use crate::{Error, MultiWriterIdGenerator};

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a wait can time out; check whether the position was reached"]
pub enum WaitOutcome {
    /// The position is covered.
    Reached,
    /// The timeout expired first.
    TimedOut,
}

impl WaitOutcome {
    /// Whether the position was reached.
    pub fn is_reached(self) -> bool {
        self == WaitOutcome::Reached
    }
}

impl MultiWriterIdGenerator {
    /// A receiver of the current token: it changes whenever
    /// [`current_token`](Self::current_token) moves.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example(generator: streamid::MultiWriterIdGenerator) {
    /// let mut token = generator.subscribe();
    /// while token.changed().await.is_ok() {
    ///     let upto = *token.borrow_and_update();
    ///     println!("everything up to {upto} is decided");
    /// }
    /// # }
    /// ```
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.state.subscribe_token()
    }

    /// Waits until the current token covers `position` (backwards streams: reaches it from
    /// above), or `timeout` expires.
    ///
    /// A position beyond [`max_allocated_token`](Self::max_allocated_token) can never be
    /// reached (a hand-edited token, a restored database); it is bounded to that maximum
    /// and logged as an error instead of blocking the caller (upstream #17274).
    ///
    /// # Errors
    ///
    /// Only the database errors of reading the maximum allocated token.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_for_persisted(
        &self,
        position: i64,
        timeout: Duration,
    ) -> Result<WaitOutcome, Error> {
        let target = self.bounded(position).await?;
        Ok(self
            .wait_until(timeout, |t| t.persisted_upto() >= target)
            .await)
    }

    /// Waits until writer `instance`'s position covers `position`, or `timeout` expires.
    /// Returns at once for this process's own instance (its writes are local). Positions
    /// from the future are bounded as in [`wait_for_persisted`](Self::wait_for_persisted).
    ///
    /// # Errors
    ///
    /// Only the database errors of reading the maximum allocated token.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_for_writer(
        &self,
        instance: &str,
        position: i64,
        timeout: Duration,
    ) -> Result<WaitOutcome, Error> {
        if instance == self.state.config.instance {
            return Ok(WaitOutcome::Reached);
        }
        let target = self.bounded(position).await?;
        Ok(self
            .wait_until(timeout, |t| t.writer_position(instance) >= target)
            .await)
    }

    /// `position` in internal form, bounded by the last allocated value (spec §12.5).
    pub(crate) async fn bounded(&self, position: i64) -> Result<i64, Error> {
        let sign = self.state.sign();
        let wanted = sign * position;
        if wanted <= self.state.lock().persisted_upto() {
            return Ok(wanted);
        }
        let max = self.backend.last_allocated().await?;
        if wanted > max {
            tracing::error!(
                stream = %self.state.config.stream,
                position,
                max_allocated = sign * max,
                "position from the future: waiting for the largest allocated ID instead"
            );
            return Ok(max);
        }
        Ok(wanted)
    }

    /// Waits until `reached` holds for the tracker, re-checking on every change.
    pub(crate) async fn wait_until(
        &self,
        timeout: Duration,
        reached: impl Fn(&Tracker) -> bool,
    ) -> WaitOutcome {
        // Subscribe before the first check, so a change in between is not missed.
        let mut changes = self.state.subscribe_changes();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if reached(&self.state.lock()) {
                return WaitOutcome::Reached;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return WaitOutcome::TimedOut,
            }
        }
    }
}

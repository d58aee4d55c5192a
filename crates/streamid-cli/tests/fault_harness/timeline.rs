//! The reader's persisted-up-to position over time, taken by tailing its observation log
//! (one JSON line per round that moved, flushed at once) every few milliseconds.
//!
//! Stall measurements come from here: "how long after instant `t` did the reader's `P`
//! first reach `x`". The resolution is the tail's period plus the reader's `--poll-ms`.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the log is read.
const TAIL_EVERY: Duration = Duration::from_millis(5);

/// A background tail of one reader's observations.
pub struct Timeline {
    points: Arc<Mutex<Vec<(Instant, i64)>>>,
    stop: Arc<AtomicBool>,
    tail: Option<JoinHandle<()>>,
}

impl Timeline {
    /// Tails `path` (which may not exist yet) for the plain observations of `reader`.
    pub fn follow(path: PathBuf, reader: &str) -> Timeline {
        let points = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tail = {
            let (points, stop, reader) =
                (Arc::clone(&points), Arc::clone(&stop), reader.to_owned());
            std::thread::spawn(move || tail(&path, &reader, &points, &stop))
        };
        Timeline {
            points,
            stop,
            tail: Some(tail),
        }
    }

    /// The reader's latest position (0 before the first observation).
    pub fn latest(&self) -> i64 {
        self.points.lock().unwrap().last().map_or(0, |p| p.1)
    }

    /// How long after `since` the position first was at least `target` (zero if it already
    /// was at `since`); `None` if it has not got there yet.
    pub fn reached_after(&self, target: i64, since: Instant) -> Option<Duration> {
        let points = self.points.lock().unwrap();
        let before = points
            .iter()
            .take_while(|(at, _)| *at <= since)
            .last()
            .is_some_and(|&(_, p)| p >= target);
        if before {
            return Some(Duration::ZERO);
        }
        points
            .iter()
            .find(|&&(at, p)| at > since && p >= target)
            .map(|&(at, _)| at - since)
    }

    /// Waits (at most `limit`) until the position reaches `target(now)`, re-evaluated at
    /// every check; returns how long it took, or `Err(latest position)`.
    pub fn wait_until(
        &self,
        limit: Duration,
        mut target: impl FnMut() -> i64,
    ) -> Result<Duration, i64> {
        let start = Instant::now();
        loop {
            let goal = target();
            if self.latest() >= goal {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                return Err(self.latest());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Observations seen so far.
    pub fn len(&self) -> usize {
        self.points.lock().unwrap().len()
    }
}

impl Drop for Timeline {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(tail) = self.tail.take() {
            let _ = tail.join();
        }
    }
}

fn tail(path: &PathBuf, reader: &str, points: &Mutex<Vec<(Instant, i64)>>, stop: &AtomicBool) {
    let mut offset = 0u64;
    let mut partial = String::new();
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(TAIL_EVERY);
        let Ok(mut file) = std::fs::File::open(path) else {
            continue;
        };
        if file.seek(SeekFrom::Start(offset)).is_err() {
            continue;
        }
        let mut chunk = String::new();
        let Ok(n) = file.read_to_string(&mut chunk) else {
            continue;
        };
        if n == 0 {
            continue;
        }
        let now = Instant::now();
        offset += n as u64;
        partial.push_str(&chunk);
        let complete = partial.rfind('\n').map_or(0, |i| i + 1);
        let lines: String = partial.drain(..complete).collect();
        let mut points = points.lock().unwrap();
        for line in lines.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["reader"] == reader
                && let Some(p) = v["position"].as_i64()
            {
                points.push((now, p));
            }
        }
    }
}

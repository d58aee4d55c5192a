//! Progress while the demo runs: a live indicatif view on a terminal, a plain line every
//! second otherwise, nothing with `--quiet`.
//!
//! Progress goes to stdout, or to stderr with `--json` so stdout holds only the report.
//! The view only displays [`Snapshot`]s; it never queries anything itself.

use std::io::{self, IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often the plain view prints a line.
const PLAIN_EVERY: Duration = Duration::from_secs(1);

/// One writer's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WriterLine {
    /// Instance name.
    pub(crate) name: String,
    /// `current_token_for_writer(own)`.
    pub(crate) position: i64,
    /// Commits so far.
    pub(crate) committed: u64,
    /// Rollbacks so far.
    pub(crate) rolled_back: u64,
}

/// The state of the run at one moment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Snapshot {
    /// `"writing"`, `"catching up"` or `"done"`.
    pub(crate) phase: &'static str,
    /// Since the writers started.
    pub(crate) elapsed: Duration,
    /// One line per writer.
    pub(crate) writers: Vec<WriterLine>,
    /// The reader generator's persisted-up-to position.
    pub(crate) persisted_upto: i64,
    /// The largest ID any writer allocated.
    pub(crate) max_allocated: i64,
    /// IDs received by the naive reader.
    pub(crate) naive_seen: u64,
    /// IDs received by the streamid reader.
    pub(crate) streamid_seen: u64,
}

impl Snapshot {
    fn lag(&self) -> i64 {
        (self.max_allocated - self.persisted_upto).max(0)
    }

    fn rows_per_s(&self) -> f64 {
        let committed: u64 = self.writers.iter().map(|w| w.committed).sum();
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            committed as f64 / secs
        } else {
            0.0
        }
    }

    fn positions(&self) -> String {
        format!(
            "persisted-up-to {}  max allocated {}  lag {}  {:.0} rows/s",
            self.persisted_upto,
            self.max_allocated,
            self.lag(),
            self.rows_per_s(),
        )
    }

    fn readers(&self) -> String {
        format!(
            "naive saw {}, streamid saw {}",
            self.naive_seen, self.streamid_seen
        )
    }

    /// The plain view's line.
    fn plain_line(&self) -> String {
        let writers: Vec<String> = self
            .writers
            .iter()
            .map(|w| format!("{}={}", w.name, w.position))
            .collect();
        format!(
            "[{:>6.1}s] {}: {}; readers: {}; writer positions {}",
            self.elapsed.as_secs_f64(),
            self.phase,
            self.positions(),
            self.readers(),
            writers.join(" ")
        )
    }
}

/// Where progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Stdout,
    Stderr,
}

/// The progress display of one run.
#[derive(Debug)]
pub(crate) enum View {
    /// `--quiet`.
    Off,
    /// Not a terminal: a line every [`PLAIN_EVERY`].
    Plain {
        /// Where lines go.
        target: Target,
        /// When the last line was printed.
        last: Option<Instant>,
    },
    /// A terminal: one bar per writer plus the stream's and the readers' bars.
    Live {
        /// Keeps the bars drawn together.
        multi: MultiProgress,
        /// One per writer.
        writers: Vec<ProgressBar>,
        /// Persisted-up-to position, lag, rate.
        stream: ProgressBar,
        /// Rows each reader saw.
        readers: ProgressBar,
    },
}

impl View {
    /// Chooses the view for the options and the terminal at hand.
    pub(crate) fn new(quiet: bool, json: bool, writers: &[String]) -> View {
        if quiet {
            return View::Off;
        }
        let target = if json { Target::Stderr } else { Target::Stdout };
        let is_tty = match target {
            Target::Stdout => io::stdout().is_terminal(),
            Target::Stderr => io::stderr().is_terminal(),
        };
        if !is_tty {
            return View::Plain { target, last: None };
        }
        let draw = match target {
            Target::Stdout => ProgressDrawTarget::stdout(),
            Target::Stderr => ProgressDrawTarget::stderr(),
        };
        let multi = MultiProgress::with_draw_target(draw);
        let style = ProgressStyle::with_template("{spinner} {prefix:<9} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let bar = |prefix: &str| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(prefix.to_owned());
            bar
        };
        let writers = writers.iter().map(|w| bar(w)).collect();
        let stream = bar("stream");
        let readers = bar("readers");
        View::Live {
            multi,
            writers,
            stream,
            readers,
        }
    }

    /// Announces the run.
    ///
    /// # Errors
    ///
    /// Writing failed (a closed pipe, for instance).
    pub(crate) fn start(&mut self, header: &str) -> io::Result<()> {
        match self {
            View::Off => Ok(()),
            View::Plain { target, .. } => write_line(*target, header),
            View::Live { multi, .. } => multi.println(header),
        }
    }

    /// Shows `snapshot` (the plain view at most once per second).
    ///
    /// # Errors
    ///
    /// Writing failed (a closed pipe, for instance).
    pub(crate) fn update(&mut self, snapshot: &Snapshot) -> io::Result<()> {
        match self {
            View::Off => Ok(()),
            View::Plain { target, last } => {
                if last.is_some_and(|t| t.elapsed() < PLAIN_EVERY) {
                    return Ok(());
                }
                *last = Some(Instant::now());
                write_line(*target, &snapshot.plain_line())
            }
            View::Live {
                writers,
                stream,
                readers,
                ..
            } => {
                for (bar, w) in writers.iter().zip(&snapshot.writers) {
                    bar.set_message(format!(
                        "position {:>8}  committed {:>7}  rolled back {:>5}",
                        w.position, w.committed, w.rolled_back
                    ));
                    bar.tick();
                }
                stream.set_message(snapshot.positions());
                stream.tick();
                readers.set_message(format!("{} ({})", snapshot.readers(), snapshot.phase));
                readers.tick();
                Ok(())
            }
        }
    }

    /// Ends the view: the plain view prints `snapshot`; the live view clears its bars, so
    /// the report follows on a clean screen.
    ///
    /// # Errors
    ///
    /// Writing failed (a closed pipe, for instance).
    pub(crate) fn finish(&mut self, snapshot: &Snapshot) -> io::Result<()> {
        match self {
            View::Off => Ok(()),
            View::Plain { target, .. } => write_line(*target, &snapshot.plain_line()),
            View::Live {
                multi,
                writers,
                stream,
                readers,
            } => {
                for bar in writers.iter().chain([&*stream, &*readers]) {
                    bar.finish_and_clear();
                }
                multi.clear()
            }
        }
    }
}

fn write_line(target: Target, line: &str) -> io::Result<()> {
    match target {
        Target::Stdout => writeln!(io::stdout().lock(), "{line}"),
        Target::Stderr => writeln!(io::stderr().lock(), "{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_show_positions_lag_and_rate() {
        let snapshot = Snapshot {
            phase: "writing",
            elapsed: Duration::from_secs(2),
            writers: vec![
                WriterLine {
                    name: "writer-1".into(),
                    position: 40,
                    committed: 30,
                    rolled_back: 1,
                },
                WriterLine {
                    name: "writer-2".into(),
                    position: 38,
                    committed: 10,
                    rolled_back: 0,
                },
            ],
            persisted_upto: 38,
            max_allocated: 45,
            naive_seen: 35,
            streamid_seen: 33,
        };
        let line = snapshot.plain_line();
        assert!(line.contains("persisted-up-to 38"), "{line}");
        assert!(line.contains("lag 7"), "{line}");
        assert!(line.contains("20 rows/s"), "{line}");
        assert!(line.contains("writer-1=40 writer-2=38"), "{line}");
        assert!(line.contains("naive saw 35, streamid saw 33"), "{line}");
    }
}

//! The reader side of `bench latency`: record every change of a generator's current token
//! with the wall-clock time it was seen — in a child process (`streamid bench
//! latency-reader`, for the network transports) or in a task (in-process).
//!
//! The child speaks JSON lines on stdout: `{"event":"ready"}` once its replication is
//! connected, then, when its stdin closes, `{"event":"changes","changes":[[position,
//! unix_ns], ...]}`.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::{oneshot, watch};

use super::stats::Change;
use super::{READER, Transport};
use crate::output;
use crate::plan::LatencyReaderPlan;
use crate::report::Verdict;

/// How long a reader may take to connect, and to report after being told to stop.
const PATIENCE: Duration = Duration::from_secs(30);

/// Nanoseconds since the Unix epoch, now (the clock both processes share).
pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Records the token's initial value and every change, with the time each was seen, until
/// `stop` resolves (or the generator is gone).
pub(crate) async fn record(
    mut token: watch::Receiver<i64>,
    stop: impl Future<Output = ()>,
) -> Vec<Change> {
    let mut changes = vec![(*token.borrow_and_update(), now_ns())];
    tokio::pin!(stop);
    loop {
        tokio::select! {
            changed = token.changed() => {
                if changed.is_err() {
                    break;
                }
                let position = *token.borrow_and_update();
                changes.push((position, now_ns()));
            }
            () = &mut stop => break,
        }
    }
    changes
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Line {
    Ready,
    Changes { changes: Vec<Change> },
}

/// Runs `streamid bench latency-reader`.
///
/// # Errors
///
/// Start-up errors; replication that does not connect within 30 s.
pub(crate) async fn run(plan: LatencyReaderPlan) -> Result<Verdict> {
    let transport = match &plan.transport {
        crate::plan::BenchTransport::Redis { url } => Transport::Redis { url: url.clone() },
        _ => Transport::Notify,
    };
    let store = super::open_store(&plan.url, 1, "streamid bench reader").await?;
    let generator = store.generator(READER, &plan.writers).await?;
    transport.replicate(&generator, &plan.url)?;
    super::wait_connected(&generator).await?;
    let (stopped, stop) = oneshot::channel();
    // Stdin closing is the parent's signal (also when the parent dies).
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = stopped.send(());
    });
    let token = generator.subscribe();
    output::print_result(&Line::Ready, true, String::new)?;
    let changes = record(token, async {
        let _ = stop.await;
    })
    .await;
    output::print_result(&Line::Changes { changes }, true, String::new)?;
    generator.shutdown().await;
    Ok(Verdict::Ok)
}

/// A running reader process, as the parent sees it.
pub(crate) struct ReaderProcess {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl ReaderProcess {
    /// Starts `streamid bench latency-reader` and waits until its replication is connected.
    pub(crate) async fn start(url: &str, transport: &str, writers: &[String]) -> Result<Self> {
        let exe = std::env::current_exe().context("locating the streamid binary")?;
        let mut child = Command::new(exe)
            .args(["bench", "latency-reader", "--database", url])
            .args(["--transport", transport, "--writers", &writers.join(",")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting the reader process")?;
        let stdout = child.stdout.take().context("the reader's stdout")?;
        let mut reader = ReaderProcess {
            child,
            lines: BufReader::new(stdout).lines(),
        };
        match reader.next_line().await? {
            Line::Ready => Ok(reader),
            Line::Changes { .. } => bail!("the reader process reported before it was ready"),
        }
    }

    /// Closes its stdin and returns the changes it recorded.
    pub(crate) async fn finish(mut self) -> Result<Vec<Change>> {
        drop(self.child.stdin.take());
        let changes = match self.next_line().await? {
            Line::Changes { changes } => changes,
            Line::Ready => bail!("the reader process said it was ready twice"),
        };
        let status = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .context("the reader process did not exit")??;
        if !status.success() {
            bail!("the reader process failed ({status})");
        }
        Ok(changes)
    }

    async fn next_line(&mut self) -> Result<Line> {
        let line = tokio::time::timeout(PATIENCE, self.lines.next_line())
            .await
            .map_err(|_| anyhow!("the reader process did not answer within {PATIENCE:?}"))?
            .context("reading the reader process's output")?;
        let Some(line) = line else {
            let status = self.child.wait().await?;
            bail!("the reader process exited ({status}); see its error above");
        };
        serde_json::from_str(&line).with_context(|| format!("the reader process printed {line:?}"))
    }
}

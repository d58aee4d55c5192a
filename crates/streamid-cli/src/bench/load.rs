//! The load of `bench latency --load-writers K`: K writers committing continuously (no wait
//! between allocating and inserting, no rollback) — `streamid worker write` processes for the
//! network transports, writer tasks of this process for the in-process transport.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

use crate::plan::Bound;
use crate::store::Store;
use crate::writer::{self, Budget, WriterSetup, WriterStats};

/// How long a load writer may take to start, and to stop after SIGTERM.
const PATIENCE: Duration = Duration::from_secs(30);

/// The running load writers.
pub(crate) enum Load {
    /// No load: an idle stream.
    None,
    /// Writer processes, each with its log file.
    Processes(Vec<(Child, PathBuf)>),
    /// Writer tasks sharing one budget.
    Tasks {
        budget: Arc<Budget>,
        tasks: Vec<JoinHandle<Result<()>>>,
    },
}

/// The instance name of load writer `i` (from 1).
pub(crate) fn instance(i: u32) -> String {
    format!("load-{i}")
}

impl Load {
    /// Starts `instances` as `streamid worker write` processes replicating with
    /// `replication` (`notify` or `redis:URL`), and waits until each has started.
    pub(crate) async fn processes(
        url: &str,
        replication: &str,
        instances: &[String],
        writers: &[String],
        dir: &Path,
    ) -> Result<Load> {
        let exe = std::env::current_exe().context("locating the streamid binary")?;
        let layout = super::layout();
        let mut children = Vec::new();
        for instance in instances {
            let log = dir.join(format!("{instance}.log"));
            let errors = File::create(dir.join(format!("{instance}.err")))
                .context("creating a load writer's error log")?;
            let child = Command::new(&exe)
                .args(["worker", "write", "--database", url])
                .args(["--stream", &layout.stream, "--table", &layout.table.table()])
                .args(["--instance", instance, "--writers", &writers.join(",")])
                .args(["--replication", replication])
                .args(["--max-delay-ms", "0", "--rollback-rate", "0", "--log"])
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(errors)
                .kill_on_drop(true)
                .spawn()
                .context("starting a load writer process")?;
            children.push((child, log));
        }
        for (child, log) in &mut children {
            wait_started(child, log).await?;
        }
        Ok(Load::Processes(children))
    }

    /// Starts one writer task per generator, writing through `store` until stopped.
    pub(crate) fn tasks(
        store: &Arc<Store>,
        generators: Vec<streamid::MultiWriterIdGenerator>,
    ) -> Load {
        let budget = Arc::new(Budget::new(Bound {
            rows: None,
            duration: None,
        }));
        let tasks = generators
            .into_iter()
            .enumerate()
            .map(|(i, generator)| {
                let setup = WriterSetup {
                    store: Arc::clone(store),
                    budget: Arc::clone(&budget),
                    stats: Arc::new(WriterStats::default()),
                    max_delay: Duration::ZERO,
                    rollback_rate: 0.0,
                    seed: i as u64,
                    log: None,
                    keep_going: false,
                };
                tokio::spawn(writer::run(generator, setup))
            })
            .collect();
        Load::Tasks { budget, tasks }
    }

    /// Stops every load writer (SIGTERM for processes) and waits for them.
    pub(crate) async fn stop(self) -> Result<()> {
        match self {
            Load::None => Ok(()),
            Load::Processes(children) => {
                for (child, _) in &children {
                    if let Some(pid) = child.id() {
                        // A writer ends cleanly on SIGTERM; `kill_on_drop` is the fallback.
                        let _ = Command::new("kill")
                            .args(["-TERM", &pid.to_string()])
                            .status()
                            .await;
                    }
                }
                for (mut child, log) in children {
                    let status = tokio::time::timeout(PATIENCE, child.wait())
                        .await
                        .map_err(|_| anyhow!("a load writer did not stop within {PATIENCE:?}"))??;
                    if !status.success() {
                        bail!("load writer {} failed ({status})", log.display());
                    }
                }
                Ok(())
            }
            Load::Tasks { budget, tasks } => {
                budget.stop();
                for task in tasks {
                    task.await.context("a load writer task panicked")??;
                }
                Ok(())
            }
        }
    }
}

/// Waits until the writer's log has its "started" line; fails if it exits first.
async fn wait_started(child: &mut Child, log: &Path) -> Result<()> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if std::fs::read_to_string(log).is_ok_and(|t| t.contains("\"event\":\"started\"")) {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            let errors = std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
            bail!(
                "load writer {} exited at start ({status}): {}",
                log.display(),
                errors.trim()
            );
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "load writer {} did not start within {PATIENCE:?}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

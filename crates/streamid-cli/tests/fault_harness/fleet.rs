//! [`Fleet`]: the worker processes of one run — `streamid worker write` per writer instance
//! and one `streamid worker read` (instance `r`, plain and token tails, `--keep-going`) —
//! with the faults the scenarios inject into them.
//!
//! Every writer logs its outcomes to `<instance>.log` (appended across restarts) and its
//! stderr to `<instance>.err`; the reader's observations go to `observations.jsonl`, which
//! the [`Timeline`] tails.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::audit::FaultRecord;
use super::{Cluster, STREAM, Timeline, streamid};

/// How writers write.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Share of transactions rolled back on purpose.
    pub rollback_rate: f64,
    /// Longest wait between allocating an ID and inserting its row: transactions stay open
    /// that long, so kills and cuts land inside them.
    pub max_delay_ms: u64,
}

/// The processes of one run.
pub struct Fleet<'c> {
    pub cluster: &'c Cluster,
    pub dir: tempfile::TempDir,
    /// Every listed writer instance (`--writers`), running or not.
    pub writers: Vec<String>,
    pub options: WriteOptions,
    running: BTreeMap<String, Child>,
    reader: Option<Child>,
    pub observations: PathBuf,
    pub timeline: Timeline,
    pub faults: Vec<FaultRecord>,
    pub started: Instant,
    spawned: u64,
}

impl<'c> Fleet<'c> {
    /// Starts `n` writers (`w1` … `wn`), waits until each has registered, then starts the
    /// reader.
    pub fn start(cluster: &'c Cluster, n: usize, options: WriteOptions) -> Fleet<'c> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let observations = dir.path().join("observations.jsonl");
        let timeline = Timeline::follow(observations.clone(), "r");
        let mut fleet = Fleet {
            cluster,
            writers: (1..=n).map(|i| format!("w{i}")).collect(),
            options,
            running: BTreeMap::new(),
            reader: None,
            observations,
            timeline,
            faults: Vec::new(),
            started: Instant::now(),
            spawned: 0,
            dir,
        };
        for w in fleet.writers.clone() {
            fleet.spawn_writer(&w);
        }
        for w in fleet.writers.clone() {
            fleet.await_started(&w, 0);
        }
        fleet.spawn_reader();
        fleet
    }

    fn args(&self, instance: &str) -> Vec<String> {
        [
            "--database",
            &self.cluster.worker_url(),
            "--stream",
            STREAM,
            "--table",
            STREAM,
            "--instance",
            instance,
            "--writers",
            &self.writers.join(","),
            "--replication",
            "notify",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    pub fn log_of(&self, instance: &str) -> PathBuf {
        self.dir.path().join(format!("{instance}.log"))
    }

    fn stderr_of(&self, instance: &str) -> File {
        let path = self.dir.path().join(format!("{instance}.err"));
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open a stderr file")
    }

    fn spawn_writer(&mut self, instance: &str) {
        self.spawned += 1;
        let child = streamid()
            .args(["worker", "write"])
            .args(self.args(instance))
            .args(["--rollback-rate", &self.options.rollback_rate.to_string()])
            .args(["--max-delay-ms", &self.options.max_delay_ms.to_string()])
            .args(["--seed", &self.spawned.to_string(), "--log"])
            .arg(self.log_of(instance))
            // The resolver logs each outcome it settles at INFO: the audit counts them.
            .env("RUST_LOG", "warn,streamid::postgres::resolver=info")
            .stdout(Stdio::null())
            .stderr(self.stderr_of(instance))
            .spawn()
            .expect("start a writer");
        self.running.insert(instance.to_owned(), child);
    }

    /// Waits until `instance` has logged more than `before` "started" lines; a process that
    /// exits first (the server is restarting, its lease is still held) is started again.
    fn await_started(&mut self, instance: &str, before: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if count_events(&self.log_of(instance), "started") > before {
                return;
            }
            let exited = self
                .running
                .get_mut(instance)
                .and_then(|c| c.try_wait().expect("poll a writer"));
            if let Some(status) = exited {
                assert!(
                    Instant::now() < deadline,
                    "{instance} keeps failing to start ({status}): {}",
                    self.stderr_tail(instance)
                );
                std::thread::sleep(Duration::from_millis(300));
                self.spawn_writer(instance);
            }
            assert!(
                Instant::now() < deadline,
                "{instance} did not start: {}",
                self.stderr_tail(instance)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn_reader(&mut self) {
        let child = streamid()
            .args(["worker", "read"])
            .args(self.args("r"))
            .args(["--tokens", "--keep-going", "--poll-ms", "5"])
            .args(["--duration", "1800s", "--observations"])
            .arg(&self.observations)
            .stdout(Stdio::piped())
            .stderr(self.stderr_of("r"))
            .spawn()
            .expect("start the reader");
        self.reader = Some(child);
    }

    /// Writers running now.
    pub fn live(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// Records a fault that ended just now; the stall after it is measured against the last
    /// allocated ID at this moment.
    pub fn fault(&mut self, kind: &str, detail: impl Into<String>) {
        let record = FaultRecord {
            kind: kind.to_owned(),
            detail: detail.into(),
            at: Instant::now(),
            server_at: self.cluster.server_now(),
            allocated: self.cluster.last_allocated(),
        };
        self.faults.push(record);
    }

    /// `kill -9` of `instance` while it has a stream transaction open (waits up to 3 s for
    /// one; kills anyway after that). Returns whether a transaction was open.
    pub fn kill9(&mut self, instance: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut open = false;
        while Instant::now() < deadline {
            if self.cluster.open_transactions(instance) > 0 {
                open = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let server_at = self.cluster.server_now();
        let mut child = self.running.remove(instance).expect("a running writer");
        child.kill().expect("SIGKILL a writer");
        child.wait().expect("reap the writer");
        let detail = format!("{instance} (transaction open: {open})");
        self.fault("kill -9", detail);
        // Recovery is timed from the kill, not from the end of this bookkeeping.
        if let Some(last) = self.faults.last_mut() {
            last.server_at = server_at;
        }
        open
    }

    /// Starts a killed writer again and waits until it has registered (a new epoch).
    pub fn restart(&mut self, instance: &str) {
        assert!(
            !self.running.contains_key(instance),
            "{instance} is running"
        );
        let before = count_events(&self.log_of(instance), "started");
        self.spawn_writer(instance);
        self.await_started(instance, before);
    }

    /// SIGTERM to every running writer; waits until all have exited (cleanly).
    pub fn stop_writers(&mut self) {
        let running = std::mem::take(&mut self.running);
        for child in running.values() {
            sigterm(child);
        }
        for (instance, child) in running {
            let status = wait_for(child, Duration::from_secs(60), &instance);
            assert!(
                status.success(),
                "{instance} exited with {status}: {}",
                self.stderr_tail(&instance)
            );
        }
    }

    /// SIGTERM to the reader; returns its "done" line.
    pub fn stop_reader(&mut self) -> serde_json::Value {
        let child = self.reader.take().expect("a reader");
        sigterm(&child);
        let out = child.wait_with_output().expect("reap the reader");
        assert!(
            out.status.success(),
            "the reader failed ({}): {}",
            out.status,
            self.stderr_tail("r")
        );
        serde_json::from_slice(&out.stdout).expect("the reader's done line")
    }

    /// The last lines of a worker's stderr, for failure messages.
    pub fn stderr_tail(&self, instance: &str) -> String {
        let path = self.dir.path().join(format!("{instance}.err"));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Lines of every worker's stderr that contain `needle`.
    pub fn stderr_count(&self, needle: &str) -> usize {
        let mut n = 0;
        for instance in self.writers.iter().map(String::as_str).chain(["r"]) {
            let path = self.dir.path().join(format!("{instance}.err"));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            n += text.lines().filter(|l| l.contains(needle)).count();
        }
        n
    }
}

impl Drop for Fleet<'_> {
    fn drop(&mut self) {
        for child in self.running.values_mut().chain(self.reader.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            // Keep the logs of a failed run for a look.
            let kept = self.dir.path().to_owned();
            eprintln!("fault run failed; logs in {}", kept.display());
            std::mem::forget(std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("a temp dir"),
            ));
        }
    }
}

fn sigterm(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

fn wait_for(mut child: Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("poll a child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines of a writer log with `"event":"<event>"`.
pub fn count_events(log: &Path, event: &str) -> usize {
    let needle = format!("\"event\":\"{event}\"");
    std::fs::read_to_string(log)
        .map(|t| t.lines().filter(|l| l.contains(&needle)).count())
        .unwrap_or(0)
}

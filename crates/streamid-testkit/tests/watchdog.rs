//! Servers that are never dropped (a `static`, `mem::forget`, `process::exit`) are cleaned up
//! by the watchdog once the test process is gone.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use streamid_testkit::PgServer;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const CHILD_ENV: &str = "STREAMID_TESTKIT_WATCHDOG_CHILD";

/// Not a test of its own: the body of the child process that `watchdog_*` spawns (a no-op in
/// a normal run).
#[test]
fn child_process_entry() -> TestResult {
    if std::env::var_os(CHILD_ENV).is_none() {
        return Ok(());
    }
    let shared = PgServer::shared()?;
    let own = PgServer::start()?;
    for server in [shared, &own] {
        let pid = std::fs::read_to_string(server.data_dir().join("postmaster.pid"))?;
        let pid = pid.lines().next().unwrap_or_default();
        println!("SERVER {pid} {}", server.socket_dir().display());
    }
    std::mem::forget(own);
    // Exit without unwinding, so nothing at all is dropped.
    std::process::exit(0)
}

/// Alive and not a zombie (PID 1 here may not reap orphans promptly).
fn process_alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn watchdog_stops_and_deletes_servers_left_behind() -> TestResult {
    let out = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()?;
    // libtest prints "test child_process_entry ... " right before our first line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let servers: Vec<(String, PathBuf)> = stdout
        .lines()
        .filter_map(|l| l.split_once("SERVER ").map(|(_, rest)| rest))
        .filter_map(|l| l.split_once(' '))
        .map(|(pid, dir)| (pid.to_string(), PathBuf::from(dir)))
        .collect();
    assert_eq!(servers.len(), 2, "child output: {stdout}");

    let deadline = Instant::now() + Duration::from_secs(15);
    let gone = |(pid, dir): &(String, PathBuf)| !process_alive(pid) && !Path::exists(dir);
    while !servers.iter().all(gone) {
        assert!(
            Instant::now() < deadline,
            "servers still there after 15 s: {servers:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

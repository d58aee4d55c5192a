//! The private `redis-server`: start, outage simulation, clean-up on drop and by the
//! watchdog, and the install hint.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use streamid_testkit::RedisServer;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const CHILD_ENV: &str = "STREAMID_TESTKIT_REDIS_CHILD";

/// Sends one inline command and returns the first reply line.
fn command(port: u16, line: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{line}\r\n").as_bytes())?;
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        reply.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&reply).trim_end().to_owned())
}

fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn serves_restarts_on_the_same_port_and_cleans_up() -> TestResult {
    let redis = RedisServer::start()?;
    let port = redis.port();
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}/"));
    assert_eq!(command(port, "PING")?, "+PONG");
    assert_eq!(command(port, "SET k v")?, "+OK");
    let first = redis.pid().ok_or("no pid")?;

    redis.stop()?;
    assert!(!redis.is_running() && redis.pid().is_none());
    assert!(command(port, "PING").is_err(), "still answering after stop");
    redis.stop()?; // idempotent

    redis.start_again()?;
    assert_eq!(redis.port(), port);
    assert_eq!(command(port, "GET k")?, "$-1", "nothing is persisted");
    redis.restart()?;
    let last = redis.pid().ok_or("no pid")?;
    assert_ne!(first, last);
    assert_eq!(command(port, "PING")?, "+PONG");

    let dir = redis.log_file().parent().ok_or("no dir")?.to_path_buf();
    drop(redis);
    assert!(!process_alive(last), "redis-server survived the drop");
    assert!(!dir.exists(), "{} was not deleted", dir.display());
    Ok(())
}

/// Not a test of its own: the body of the child processes the tests below spawn (a no-op in
/// a normal run).
#[test]
fn child_process_entry() -> TestResult {
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("forget") => {
            let redis = RedisServer::start()?;
            let dir = redis.log_file().parent().ok_or("no dir")?.to_path_buf();
            println!("SERVER {} {}", redis.pid().ok_or("no pid")?, dir.display());
            std::mem::forget(redis);
            // Exit without unwinding, so nothing at all is dropped.
            std::process::exit(0)
        }
        Ok("missing") => {
            let err = RedisServer::start()
                .err()
                .ok_or("started without a binary")?;
            println!("KIND {:?}", err.kind());
            println!("ERROR {}", err.to_string().replace('\n', " "));
            Ok(())
        }
        _ => Ok(()),
    }
}

fn run_child(mode: &str, extra_env: &[(&str, &str)]) -> Result<String, Box<dyn std::error::Error>> {
    let out = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "child_process_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .envs(extra_env.iter().copied())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

#[test]
fn watchdog_kills_a_server_left_behind() -> TestResult {
    let stdout = run_child("forget", &[])?;
    let (pid, dir) = stdout
        .lines()
        .find_map(|l| l.split_once("SERVER ").map(|(_, rest)| rest))
        .and_then(|l| l.split_once(' '))
        .ok_or_else(|| format!("child output: {stdout}"))?;
    let (pid, dir): (u32, PathBuf) = (pid.parse()?, PathBuf::from(dir));
    let deadline = Instant::now() + Duration::from_secs(15);
    while process_alive(pid) || dir.exists() {
        assert!(
            Instant::now() < deadline,
            "redis-server {pid} or {} still there after 15 s",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[test]
fn a_missing_binary_names_the_fix() -> TestResult {
    let stdout = run_child("missing", &[("REDIS_SERVER", "/nonexistent/redis-server")])?;
    assert!(stdout.contains("KIND BinariesNotFound"), "{stdout}");
    assert!(
        stdout.contains("apt-get install -y redis-server"),
        "{stdout}"
    );
    Ok(())
}

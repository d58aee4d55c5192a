//! [`RedisServer`]: a private, throwaway `redis-server`.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};
use crate::process;
use crate::server::make_temp_dir;

/// How long start-up may take before we give up.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the server log quoted in errors.
const LOG_TAIL: usize = 20;
/// Attempts at starting when another process grabbed our free port in the meantime.
const PORT_ATTEMPTS: usize = 3;

/// A private `redis-server` on a free port of 127.0.0.1, without persistence (`--save ""
/// --appendonly no`), running as a child process of the test.
///
/// The binary is `$REDIS_SERVER`, else `redis-server` on `$PATH`; when there is none the
/// error says what to install ([`REDIS_INSTALL_HINT`](crate::REDIS_INSTALL_HINT)). Dropping
/// the server kills it and deletes its directory; a watchdog process does the same once the
/// test process is gone, so a server never outlives the test run.
///
/// [`stop`](Self::stop), [`start_again`](Self::start_again) and [`restart`](Self::restart)
/// simulate an outage: every connection breaks, and the server comes back empty on the
/// same port.
///
/// ```no_run
/// # fn demo() -> Result<(), streamid_testkit::Error> {
/// use streamid_testkit::RedisServer;
///
/// let redis = RedisServer::start()?;
/// println!("connect to {}", redis.url());
/// redis.restart()?; // clients see their connections drop
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisServer {
    binary: PathBuf,
    dir: PathBuf,
    log_file: PathBuf,
    /// Holds the running server's pid for the watchdog.
    pid_file: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
    watchdog: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and returns once it answers `PING`.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::BinariesNotFound`] (with an install hint) when there is no
    /// `redis-server`; [`ErrorKind::Startup`] with the server log's tail when it does not
    /// come up.
    pub fn start() -> Result<RedisServer, Error> {
        let binary = locate()?;
        let dir = make_temp_dir("streamid-redis")?;
        let mut server = RedisServer {
            binary,
            log_file: dir.join("redis.log"),
            pid_file: dir.join("redis.pid"),
            dir,
            port: 0,
            child: Mutex::new(None),
            watchdog: None,
        };
        // From here on an early return drops `server`, which kills and deletes what exists.
        server.watchdog = Some(spawn_watchdog(&server.dir)?);
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = process::free_port()?;
            match server.start_again() {
                Ok(()) => break,
                Err(_) if attempt < PORT_ATTEMPTS && server.log_mentions("already in use") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(server)
    }

    /// The TCP port, on [`host`](Self::host).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server listens on: always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// A connection URL: `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://{}:{}/", self.host(), self.port)
    }

    /// The server log (in the server's temp dir, deleted on drop).
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        let mut child = self.child();
        let running = child.as_mut()?;
        matches!(running.try_wait(), Ok(None)).then(|| running.id())
    }

    /// Whether the server process is running.
    pub fn is_running(&self) -> bool {
        self.child()
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the server (SIGKILL, like a crash) and waits until it is gone. Open
    /// connections break; nothing is kept. Does nothing if it is not running.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Io`] if the process could not be killed or reaped.
    pub fn stop(&self) -> Result<(), Error> {
        let mut child = self.child();
        if let Some(mut running) = child.take() {
            running
                .kill()
                .map_err(|e| Error::io("killing redis-server", e))?;
            running
                .wait()
                .map_err(|e| Error::io("waiting for redis-server to exit", e))?;
            let _ = std::fs::remove_file(&self.pid_file);
        }
        Ok(())
    }

    /// Starts the server again on the same port (empty: nothing is persisted) and waits
    /// until it answers `PING`. Does nothing if it is running.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Command`] if `redis-server` cannot be run; [`ErrorKind::Startup`] with the
    /// log's tail if it exits or does not answer within 30 s.
    pub fn start_again(&self) -> Result<(), Error> {
        let mut child = self.child();
        if child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
        {
            return Ok(());
        }
        let mut cmd = Command::new(&self.binary);
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", self.host()])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&self.log_file)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: Ctrl-C on the test run is for the tests; the drop or
            // the watchdog ends the server.
            .process_group(0);
        let spawned = cmd.spawn().map_err(|e| {
            Error::new(
                ErrorKind::Command,
                format!("could not run {}: {e}", self.binary.display()),
            )
            .with_redis_install_hint()
        })?;
        std::fs::write(&self.pid_file, spawned.id().to_string())
            .map_err(|e| Error::io(format_args!("writing {}", self.pid_file.display()), e))?;
        let running = child.insert(spawned);
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Ok(Some(status)) = running.try_wait() {
                *child = None;
                let _ = std::fs::remove_file(&self.pid_file);
                return Err(Error::new(
                    ErrorKind::Startup,
                    format!("redis-server exited at start-up ({status})"),
                )
                .with_command(format!("{} --port {}", self.binary.display(), self.port))
                .with_output(self.log_tail()));
            }
            if answers_ping(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Startup,
                    format!(
                        "redis-server did not answer PING on port {} within {TIMEOUT:?}",
                        self.port
                    ),
                )
                .with_output(self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A simulated outage: [`stop`](Self::stop), then [`start_again`](Self::start_again) on
    /// the same port.
    ///
    /// # Errors
    ///
    /// As for [`stop`](Self::stop) and [`start_again`](Self::start_again).
    pub fn restart(&self) -> Result<(), Error> {
        self.stop()?;
        self.start_again()
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn log_tail(&self) -> String {
        format!(
            "server log {}:\n{}",
            self.log_file.display(),
            process::tail(&self.log_file, LOG_TAIL)
        )
    }

    fn log_mentions(&self, needle: &str) -> bool {
        process::tail(&self.log_file, 10).contains(needle)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut watchdog) = self.watchdog.take() {
            // SIGKILL: the watchdog ignores the catchable signals on purpose.
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// `$REDIS_SERVER`, else `redis-server` on `$PATH`.
fn locate() -> Result<PathBuf, Error> {
    if let Some(explicit) = std::env::var_os("REDIS_SERVER").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(explicit);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::new(
                ErrorKind::BinariesNotFound,
                format!("REDIS_SERVER={} is not a file", path.display()),
            )
            .with_redis_install_hint())
        };
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("redis-server"))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            Error::new(
                ErrorKind::BinariesNotFound,
                "no redis-server found (looked at $REDIS_SERVER and $PATH)",
            )
            .with_redis_install_hint()
        })
}

/// Whether a Redis server on 127.0.0.1:`port` answers an inline `PING` with `+PONG`.
fn answers_ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") && reply.len() < 256 {
        match stream.read(&mut byte) {
            Ok(1) => reply.push(byte[0]),
            _ => return false,
        }
    }
    reply.starts_with(b"+PONG")
}

/// Kills the server and removes `dir` once the test process is gone, even when `Drop`
/// never runs (a server in a `static`, `process::exit`, SIGKILL): a detached shell polls our
/// pid, then kills the pid in `dir/redis.pid` (the current server; rewritten on every start,
/// removed on every stop).
fn spawn_watchdog(dir: &Path) -> Result<Child, Error> {
    const SCRIPT: &str = r#"
trap '' INT HUP TERM
pid=$1; dir=$2
while kill -0 "$pid" 2>/dev/null; do
  case "$(cat /proc/$pid/stat 2>/dev/null)" in *") Z "*) break;; esac
  sleep 0.5
done
if [ -f "$dir/redis.pid" ]; then kill -9 "$(cat "$dir/redis.pid")" 2>/dev/null; fi
rm -rf "$dir"
"#;
    Command::new("sh")
        .args(["-c", SCRIPT, "streamid-testkit-redis-watchdog"])
        .arg(std::process::id().to_string())
        .arg(dir)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io("spawning the watchdog shell (sh)", e))
}

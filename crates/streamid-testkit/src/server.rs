//! [`PgServer`]: a private, throwaway PostgreSQL cluster.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};
use crate::process::{self, Bins};

/// How long start-up and shutdown may take before we give up.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Lines of the server log quoted in errors.
const LOG_TAIL: usize = 40;
/// Attempts at starting when another process grabbed our free port in the meantime.
const PORT_ATTEMPTS: usize = 3;

/// Options for [`PgServer`]; create with [`PgServer::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct PgServerBuilder {
    fsync: bool,
    max_connections: u32,
    settings: Vec<(String, String)>,
    bin_dir: Option<PathBuf>,
}

impl Default for PgServerBuilder {
    fn default() -> Self {
        Self {
            fsync: false,
            max_connections: 200,
            settings: Vec::new(),
            bin_dir: None,
        }
    }
}

impl PgServerBuilder {
    /// Durable commits (`true`) or speed (`false`, the default: `fsync`, `synchronous_commit`
    /// and `full_page_writes` off). Keep it on for crash tests and benchmarks.
    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }

    /// `max_connections` (default 200; each test's pool counts against it).
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Any other server setting, as for `postgres -c name=value`. Later calls win.
    pub fn setting(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.push((name.into(), value.into()));
        self
    }

    /// The directory holding `initdb`, `pg_ctl` and `postgres`; overrides `$PG_BIN` and the
    /// search of `/usr/lib/postgresql/*/bin` and `$PATH`.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Creates the cluster and starts it; returns once it accepts connections.
    ///
    /// Blocks for about a second (`initdb` dominates); from async code prefer
    /// `tokio::task::spawn_blocking`.
    pub fn start(self) -> Result<PgServer, Error> {
        let bins = Bins::locate(self.bin_dir.as_deref())?;
        let dir = make_temp_dir("streamid-pg")?;
        let mut server = PgServer {
            data_dir: dir.join("data"),
            log_file: dir.join("postgres.log"),
            dir,
            port: 0,
            bins,
            watchdog: None,
        };
        // From here on an early return drops `server`, which stops and deletes what exists.
        if server.bins.as_postgres {
            let mut chown = Command::new("chown");
            chown.arg("postgres").arg(&server.dir);
            process::run(chown).map_err(|e| {
                e.context("giving the cluster directory to the postgres user")
                    .with_install_hint()
            })?;
        }
        server.watchdog = Some(process::spawn_watchdog(
            &server.bins,
            &server.dir,
            &server.data_dir,
        )?);
        // `-N`: durability of the template files is pointless for a throwaway cluster.
        // `--locale=C`: independent of the caller's (possibly uninstalled) locale.
        // No `--no-instructions`: PG < 14 lacks it, and stdout is captured anyway.
        let data = server.data_dir.as_os_str();
        let initdb_args: [&OsStr; 10] = [
            "-D".as_ref(),
            data,
            "-A".as_ref(),
            "trust".as_ref(),
            "-U".as_ref(),
            "postgres".as_ref(),
            "-N".as_ref(),
            "-E".as_ref(),
            "UTF8".as_ref(),
            "--locale=C".as_ref(),
        ];
        server
            .bins
            .run("initdb", initdb_args)
            .map_err(|e| e.context("initdb failed").with_install_hint())?;
        // Our settings live in a file of their own so a port retry can rewrite them.
        append(
            &server.data_dir.join("postgresql.conf"),
            "\ninclude 'streamid_testkit.conf'\n",
        )?;
        for attempt in 1..=PORT_ATTEMPTS {
            server.port = process::free_port()?;
            let conf = self.render_conf(server.port, &server.dir)?;
            let path = server.data_dir.join("streamid_testkit.conf");
            std::fs::write(&path, conf)
                .map_err(|e| Error::io(format_args!("writing {}", path.display()), e))?;
            match server.start_again() {
                Ok(()) => break,
                Err(_) if attempt < PORT_ATTEMPTS && server.log_mentions("already in use") => {}
                Err(e) => return Err(e),
            }
        }
        Ok(server)
    }

    fn render_conf(&self, port: u16, socket_dir: &Path) -> Result<String, Error> {
        let mut conf = String::from("# written by streamid-testkit\n");
        let mut set = |name: &str, value: &str| {
            // postgresql.conf quoting: '' for a quote, and backslash escapes are interpreted.
            let value = value.replace('\\', "\\\\").replace('\'', "''");
            let _ = writeln!(conf, "{name} = '{value}'");
        };
        set("port", &port.to_string());
        set("listen_addresses", "127.0.0.1");
        set("unix_socket_directories", &socket_dir.to_string_lossy());
        set("max_connections", &self.max_connections.to_string());
        if !self.fsync {
            set("fsync", "off");
            set("synchronous_commit", "off");
            set("full_page_writes", "off");
        }
        for (name, value) in &self.settings {
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if !valid {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("invalid setting name {name:?}"),
                ));
            }
            set(name, value);
        }
        Ok(conf)
    }
}

/// A private PostgreSQL cluster in a temp dir, listening on a free port of 127.0.0.1 with
/// `trust` authentication for the superuser `postgres`.
///
/// Dropping it stops the server (`pg_ctl stop -m immediate`) and deletes the directory. A
/// watchdog process does the same once the test process is gone, so servers held in `static`s
/// (never dropped) or abandoned by a crash do not linger.
#[derive(Debug)]
pub struct PgServer {
    bins: Bins,
    dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    watchdog: Option<Child>,
}

impl PgServer {
    /// Options for a new server.
    pub fn builder() -> PgServerBuilder {
        PgServerBuilder::default()
    }

    /// Starts a server with the default options (fast, non-durable: `fsync=off`).
    pub fn start() -> Result<Self, Error> {
        Self::builder().start()
    }

    /// The server shared by all tests of this test binary, started on first use.
    ///
    /// Concurrent first callers wait for the same start-up; a start-up failure is returned to
    /// every caller. It holds no Tokio objects, so tests on different runtimes can all use it.
    /// Don't stop or restart it (other tests are using it); start your own for that.
    pub fn shared() -> Result<&'static Self, Error> {
        static SHARED: OnceLock<Result<PgServer, Error>> = OnceLock::new();
        SHARED
            .get_or_init(Self::start)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The TCP port, on [`host`](Self::host).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server listens on: always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The cluster's data directory (`PGDATA`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The directory holding the Unix socket `.s.PGSQL.<port>`.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The server log (its stderr).
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// A connection URL for database `dbname`: `postgres://postgres@127.0.0.1:PORT/dbname`.
    pub fn url(&self, dbname: &str) -> String {
        format!("postgres://postgres@{}:{}/{dbname}", self.host(), self.port)
    }

    /// A connection config for database `dbname` (TCP, user `postgres`, 10 s connect timeout).
    pub fn config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.host())
            .port(self.port)
            .user("postgres")
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// Kills the server like a crash would (`pg_ctl stop -m immediate`): no shutdown
    /// checkpoint; the next start runs crash recovery. Open connections break.
    pub fn stop_immediate(&self) -> Result<(), Error> {
        let timeout = TIMEOUT.as_secs().to_string();
        self.pg_ctl(["stop", "-m", "immediate", "-w", "-t", &timeout])
            .map(drop)
            .map_err(|e| e.context("stopping the server failed"))
    }

    /// Starts the server again on the same data directory and port, and waits until it
    /// accepts connections.
    pub fn start_again(&self) -> Result<(), Error> {
        // `-l` matters beyond logging: without it the server would inherit our stdout/stderr
        // pipes and `run` would wait for the server to exit.
        let timeout = TIMEOUT.as_secs().to_string();
        let log = self.log_file.as_os_str();
        let args: [&OsStr; 6] = [
            "start".as_ref(),
            "-w".as_ref(),
            "-t".as_ref(),
            timeout.as_ref(),
            "-l".as_ref(),
            log,
        ];
        self.pg_ctl(args).map_err(|e| {
            e.context("starting postgres failed")
                .with_output(self.log_tail())
                .with_install_hint()
        })?;
        self.wait_ready()
    }

    /// A simulated crash and recovery: [`stop_immediate`](Self::stop_immediate), then
    /// [`start_again`](Self::start_again). Data committed before it survives only with
    /// [`fsync(true)`](PgServerBuilder::fsync) — without it PostgreSQL does not flush the WAL.
    pub fn restart_immediate(&self) -> Result<(), Error> {
        self.stop_immediate()?;
        self.start_again()
    }

    /// Runs `pg_ctl -D <data dir> args…` as the server's owner and returns its stdout, e.g.
    /// `server.pg_ctl(["status"])` or `server.pg_ctl(["reload"])`.
    ///
    /// To start the server use [`start_again`](Self::start_again): `pg_ctl start` without
    /// `-l` would never return here.
    pub fn pg_ctl<I, S>(&self, args: I) -> Result<String, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.bins.command("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir).args(args);
        process::run(cmd)
    }

    /// Polls with `pg_isready` — `pg_ctl -w` already waits for the postmaster's "ready" state;
    /// this confirms it over TCP, the way clients will connect.
    fn wait_ready(&self) -> Result<(), Error> {
        let pg_isready = self.bins.dir.join("pg_isready");
        if !pg_isready.is_file() {
            return Ok(());
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let mut cmd = Command::new(&pg_isready);
            cmd.args([
                "-h",
                self.host(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-t",
                "2",
            ])
            .args(["-p", &self.port.to_string()]);
            let last = match process::run(cmd) {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(Error::new(
                    ErrorKind::Startup,
                    format!(
                        "postgres did not accept connections on port {} within {:?}",
                        self.port, TIMEOUT
                    ),
                )
                .with_output(last.to_string())
                .with_output(self.log_tail()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.data_dir.join("postmaster.pid").exists() {
            let _ = self.stop_immediate();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some(mut watchdog) = self.watchdog.take() {
            // SIGKILL: the watchdog ignores the catchable signals on purpose.
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// A new directory under the system temp dir, named after `prefix` and our pid so leftovers
/// are traceable.
pub(crate) fn make_temp_dir(prefix: &str) -> Result<PathBuf, Error> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("{prefix}-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            // A leftover of an earlier process with the same pid: skip it.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 10_000 => {}
            Err(e) => return Err(Error::io(format_args!("creating {}", dir.display()), e)),
        }
    }
}

fn append(path: &Path, text: &str) -> Result<(), Error> {
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| Error::io(format_args!("appending to {}", path.display()), e))
}

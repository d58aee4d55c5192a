//! Finding the PostgreSQL binaries and running them (as the `postgres` user when we are root).

use std::ffi::OsStr;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::error::{Error, ErrorKind};

/// The PostgreSQL programs the testkit uses, and how to run them.
#[derive(Debug, Clone)]
pub(crate) struct Bins {
    pub(crate) dir: PathBuf,
    /// PostgreSQL refuses to run as root, so as root every server-side program goes through
    /// `runuser -u postgres --` (util-linux; `sudo` is often not installed).
    pub(crate) as_postgres: bool,
}

impl Bins {
    /// `explicit` (builder), else `$PG_BIN`, else the highest `/usr/lib/postgresql/*/bin`
    /// (Debian/Ubuntu keep server binaries off `$PATH`), else `$PATH`.
    pub(crate) fn locate(explicit: Option<&Path>) -> Result<Self, Error> {
        let as_postgres = effective_uid_is_root();
        let from_env = std::env::var_os("PG_BIN").filter(|v| !v.is_empty());
        if let Some(dir) = explicit
            .map(Path::to_path_buf)
            .or(from_env.map(PathBuf::from))
        {
            return if has_server_bins(&dir) {
                Ok(Self { dir, as_postgres })
            } else {
                Err(Error::new(
                    ErrorKind::BinariesNotFound,
                    format!("no initdb/pg_ctl/postgres in {}", dir.display()),
                )
                .with_install_hint())
            };
        }
        let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let version = e.file_name().to_str()?.parse::<u32>().ok()?;
                Some((version, e.path().join("bin")))
            })
            .filter(|(_, bin)| has_server_bins(bin))
            .collect();
        versioned.sort();
        let on_path =
            || std::env::split_paths(&std::env::var_os("PATH")?).find(|d| has_server_bins(d));
        match versioned.pop().map(|(_, dir)| dir).or_else(on_path) {
            Some(dir) => Ok(Self { dir, as_postgres }),
            None => Err(Error::new(
                ErrorKind::BinariesNotFound,
                "no PostgreSQL server binaries found (looked at $PG_BIN, /usr/lib/postgresql/*/bin, $PATH)",
            )
            .with_install_hint()),
        }
    }

    /// A command for `program` in the bin dir, run as the server's owner.
    pub(crate) fn command(&self, program: &str) -> Command {
        let path = self.dir.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        // The caller's cwd may be unreadable for `postgres` (e.g. under /root); initdb and
        // pg_ctl warn or fail then.
        cmd.current_dir("/");
        cmd
    }

    /// Runs `program args…` to completion; a non-zero exit becomes an error with its output.
    pub(crate) fn run<I, S>(&self, program: &str, args: I) -> Result<String, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program);
        cmd.args(args);
        run(cmd)
    }
}

fn has_server_bins(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|p| dir.join(p).is_file())
}

/// Runs `cmd` with captured output; returns stdout on success.
///
/// Never use this for a command that leaves a daemon holding our stdout/stderr (for example
/// `pg_ctl start` without `-l`): `output()` would then wait for the daemon to exit.
pub(crate) fn run(mut cmd: Command) -> Result<String, Error> {
    let line = command_line(&cmd);
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| {
        Error::new(ErrorKind::Command, format!("could not run {line}: {e}")).with_command(&line)
    })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(Error::new(
        ErrorKind::Command,
        format!("command failed ({})", out.status),
    )
    .with_command(line)
    .with_output(format!("{stderr}{stdout}")))
}

fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether we run as root; read from `/proc` because `unsafe` (libc) is forbidden.
fn effective_uid_is_root() -> bool {
    let from_proc = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            // "Uid:\treal\teffective\tsaved\tfs"
            let line = s.lines().find(|l| l.starts_with("Uid:"))?;
            Some(line.split_whitespace().nth(2)? == "0")
        });
    from_proc.unwrap_or_else(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
    })
}

/// A TCP port that was free a moment ago. Another process can still take it before the server
/// binds it; the caller retries on "address in use".
pub(crate) fn free_port() -> Result<u16, Error> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("binding 127.0.0.1:0", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("reading the bound port", e))?
        .port();
    Ok(port)
}

/// Cleans up after the test process even when `Drop` never runs (clusters held in `static`s,
/// `process::exit`, panics with `panic = abort`, SIGKILL): a detached shell polls our pid and,
/// once it is gone (or a zombie), stops the server and removes `dir`.
///
/// The shell gets its own process group and ignores INT/HUP/TERM so that Ctrl-C on the test
/// run reaches the tests but not the clean-up. `PgServer::drop` SIGKILLs it after cleaning up.
pub(crate) fn spawn_watchdog(bins: &Bins, dir: &Path, data: &Path) -> Result<Child, Error> {
    const SCRIPT: &str = r#"
trap '' INT HUP TERM
pid=$1; dir=$2; data=$3; shift 3
while kill -0 "$pid" 2>/dev/null; do
  case "$(cat /proc/$pid/stat 2>/dev/null)" in *") Z "*) break;; esac
  sleep 0.5
done
"$@" stop -D "$data" -m immediate -w -t 30 >/dev/null 2>&1
rm -rf "$dir"
"#;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", SCRIPT, "streamid-testkit-watchdog"])
        .arg(std::process::id().to_string())
        .arg(dir)
        .arg(data);
    // "$@" is the pg_ctl invocation, including `runuser -u postgres --` when needed.
    let pg_ctl = bins.command("pg_ctl");
    cmd.arg(pg_ctl.get_program()).args(pg_ctl.get_args());
    cmd.current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io("spawning the watchdog shell (sh)", e))
}

/// The last `lines` lines of a (log) file, or a note why it could not be read.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

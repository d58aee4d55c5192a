//! The testkit's error type.
//!
//! Everything is stored as text so that [`Error`] is `Clone`: the shared server's start-up
//! failure is cached once and handed to every test that asks for it.

use std::fmt;

/// What the PostgreSQL server packages must provide; named in every error caused by missing or
/// unusable server binaries so that a failing test says how to fix the machine.
pub const INSTALL_HINT: &str = "install the PostgreSQL server: apt-get install -y postgresql-15 \
     (or set PG_BIN to a directory with initdb and postgres)";

/// What the Redis server package must provide; named in errors caused by a missing or
/// unusable `redis-server` ([`RedisServer`](crate::RedisServer)).
pub const REDIS_INSTALL_HINT: &str = "install the Redis server: apt-get install -y redis-server \
     (or set REDIS_SERVER to the redis-server binary)";

/// Which step failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No directory with `initdb`, `pg_ctl` and `postgres` was found (or, for
    /// [`RedisServer`](crate::RedisServer), no `redis-server`).
    BinariesNotFound,
    /// An external command (`initdb`, `pg_ctl`, `runuser`, `chown`, …) could not be run or
    /// exited unsuccessfully.
    Command,
    /// The server did not accept connections in time.
    Startup,
    /// A file-system operation failed.
    Io,
    /// A builder option is invalid (for example a malformed setting name).
    Config,
    /// Connecting to the server or running SQL failed.
    Database,
}

/// A testkit failure: what failed, the command involved, its output or the server log's tail,
/// and — when the cause is likely a missing or broken installation — the fix.
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    what: String,
    command: Option<String>,
    output: Option<String>,
    hint: Option<&'static str>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, what: impl Into<String>) -> Self {
        Self {
            kind,
            what: what.into(),
            command: None,
            output: None,
            hint: None,
        }
    }

    pub(crate) fn io(what: impl fmt::Display, err: std::io::Error) -> Self {
        Self::new(ErrorKind::Io, format!("{what}: {err}"))
    }

    pub(crate) fn db(what: impl fmt::Display, err: &tokio_postgres::Error) -> Self {
        // tokio-postgres' Display omits the server's message; the source chain has it.
        let mut msg = format!("{what}: {err}");
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        Self::new(ErrorKind::Database, msg)
    }

    /// Prefixes the message with the step that failed ("initdb failed: …").
    pub(crate) fn context(mut self, step: impl fmt::Display) -> Self {
        self.what = format!("{step}: {}", self.what);
        self
    }

    pub(crate) fn with_command(mut self, command: impl Into<String>) -> Self {
        self.command = Some(command.into());
        self
    }

    pub(crate) fn with_output(mut self, output: impl Into<String>) -> Self {
        // Appends, so a failed `pg_ctl start` can carry both its own output and the log tail.
        let output = output.into();
        if !output.trim().is_empty() {
            self.output = Some(match self.output.take() {
                Some(earlier) => format!("{}\n{}", earlier.trim_end(), output),
                None => output,
            });
        }
        self
    }

    pub(crate) fn with_install_hint(mut self) -> Self {
        self.hint = Some(INSTALL_HINT);
        self
    }

    pub(crate) fn with_redis_install_hint(mut self) -> Self {
        self.hint = Some(REDIS_INSTALL_HINT);
        self
    }

    /// Which step failed.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The command line that failed, if a command was involved.
    pub fn command(&self) -> Option<&str> {
        self.command.as_deref()
    }

    /// The failing command's stderr/stdout, or the tail of the server log.
    pub fn output(&self) -> Option<&str> {
        self.output.as_deref()
    }

    /// How to fix the machine, when the failure points at the PostgreSQL (or Redis)
    /// installation.
    pub fn hint(&self) -> Option<&str> {
        self.hint
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)?;
        if let Some(hint) = self.hint {
            write!(f, "\n  fix: {hint}")?;
        }
        if let Some(command) = &self.command {
            write!(f, "\n  command: {command}")?;
        }
        if let Some(output) = &self.output {
            write!(f, "\n  output:")?;
            for line in output.trim_end().lines() {
                write!(f, "\n    {line}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

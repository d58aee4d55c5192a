//! Writing to stdout and to JSON Lines files, and the Tokio runtime every subcommand runs on.
//!
//! Every line is flushed as soon as it is written: a parent process (or a test) reading a
//! worker's output learns of each outcome at once, and a killed worker loses at most the
//! line it was writing. A write to a closed stdout fails with a broken pipe, which `main`
//! forgives (`streamid ... | head`).

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use anyhow::{Context as _, Result};
use serde::Serialize;

/// Runs `future` to completion on a fresh multi-threaded Tokio runtime.
///
/// # Errors
///
/// The future's error, or a failure to start the runtime.
pub(crate) fn block_on<T>(future: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the Tokio runtime")?
        .block_on(future)
}

/// Prints `text` on stdout and flushes.
///
/// # Errors
///
/// The write's error (a broken pipe included, for `main` to forgive).
pub(crate) fn print(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Prints a command's result: `value` as one JSON object on one line with `json`, else the
/// human-readable `text()`.
///
/// # Errors
///
/// Encoding or writing failed (a broken pipe included).
pub(crate) fn print_result(
    value: &impl Serialize,
    json: bool,
    text: impl FnOnce() -> String,
) -> Result<()> {
    if json {
        let mut line = serde_json::to_string(value).context("encoding the result as JSON")?;
        line.push('\n');
        print(&line)
    } else {
        print(&text())
    }
}

/// A JSON Lines sink shared by a process's tasks: stdout or a file opened for appending.
pub(crate) struct JsonLines {
    out: Mutex<Box<dyn Write + Send>>,
    /// What the lines go to, for error messages.
    name: String,
}

impl std::fmt::Debug for JsonLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLines")
            .field("name", &self.name)
            .finish()
    }
}

impl JsonLines {
    /// Lines to stdout.
    pub(crate) fn stdout() -> JsonLines {
        JsonLines {
            out: Mutex::new(Box::new(io::stdout())),
            name: "stdout".to_owned(),
        }
    }

    /// Lines appended to `path` (created if missing).
    ///
    /// # Errors
    ///
    /// The file cannot be opened.
    pub(crate) fn append(path: &Path) -> Result<JsonLines> {
        let file: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {} for appending", path.display()))?;
        Ok(JsonLines {
            out: Mutex::new(Box::new(file)),
            name: path.display().to_string(),
        })
    }

    /// Writes `value` as one line and flushes.
    ///
    /// # Errors
    ///
    /// Encoding or writing failed.
    pub(crate) fn write(&self, value: &impl Serialize) -> Result<()> {
        let mut line = serde_json::to_string(value).context("encoding a JSON line")?;
        line.push('\n');
        self.write_line(&line)
    }

    /// Writes `line` (which ends with a newline) and flushes, in one `write_all`, so lines
    /// of several tasks never interleave.
    ///
    /// # Errors
    ///
    /// Writing failed.
    pub(crate) fn write_line(&self, line: &str) -> Result<()> {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .with_context(|| format!("writing to {}", self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        for n in 0..2 {
            let lines = JsonLines::append(&path).unwrap();
            lines.write(&serde_json::json!({ "n": n })).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"n\":0}\n{\"n\":1}\n"
        );
    }
}

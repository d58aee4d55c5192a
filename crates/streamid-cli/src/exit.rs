//! The one place where outcomes become exit codes and errors become the one-line
//! `streamid: error: ...` on stderr.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | verdict OK (demo: the reader was exact; verify: no violation; other subcommands: done); `--help`/`--version`; stdout closed early (broken pipe) |
//! | 1 | verdict FAILED (demo: the reader missed a row; verify: violations) |
//! | 2 | usage or configuration error ([`clap::Error`], [`ConfigError`], the library's `InvalidConfig`) |
//! | 3 | database or runtime error (everything else) |
//!
//! Errors are classified by looking through the whole `anyhow` chain, so code elsewhere
//! adds context freely without deciding exit codes.

use std::io::{self, Write as _};
use std::process::ExitCode;

use clap::error::ErrorKind;

use crate::plan::ConfigError;
use crate::report::Verdict;

/// Exit code of a usage or configuration error.
pub(crate) const USAGE: u8 = 2;
/// Exit code of a database or runtime error.
pub(crate) const RUNTIME: u8 = 3;

/// Turns the outcome of a run into the process exit code, printing the error (if any).
pub(crate) fn finish(outcome: anyhow::Result<Verdict>) -> ExitCode {
    let err = match outcome {
        Ok(Verdict::Ok) => return ExitCode::SUCCESS,
        Ok(Verdict::Failed) => return ExitCode::from(1),
        Err(err) => err,
    };
    if let Some(clap_err) = err.downcast_ref::<clap::Error>() {
        return clap_exit(clap_err);
    }
    match code_for(&err) {
        Some(code) => {
            print_error(&one_line(&err));
            ExitCode::from(code)
        }
        None => ExitCode::SUCCESS,
    }
}

/// The exit code of a failed run, or `None` when it failed only because stdout was closed
/// (`streamid demo | head`), which counts as success and prints nothing.
fn code_for(err: &anyhow::Error) -> Option<u8> {
    if is_broken_pipe(err) {
        None
    } else if err.chain().any(|e| {
        e.is::<ConfigError>()
            || matches!(
                e.downcast_ref::<streamid::Error>(),
                Some(streamid::Error::InvalidConfig { .. })
            )
    }) {
        // The library validates names again at startup: what it rejects is the user's
        // configuration, whoever found it.
        Some(USAGE)
    } else {
        Some(RUNTIME)
    }
}

/// `--help` and `--version` print to stdout and succeed; anything else clap rejects is a
/// one-line usage error.
fn clap_exit(err: &clap::Error) -> ExitCode {
    if !err.use_stderr() {
        // Help or version; a closed stdout is not an error either.
        let _ = err.print();
        return ExitCode::SUCCESS;
    }
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand
    ) {
        let names = crate::cli::subcommand_names().join(", ");
        print_error(&format!(
            "no subcommand given: use one of {names} (see --help)"
        ));
        return ExitCode::from(USAGE);
    }
    print_error(&format!("{} (see --help)", clap_message(&err.to_string())));
    ExitCode::from(USAGE)
}

/// clap's message on one line: its first line, plus the lines it introduces with a colon
/// (the missing arguments), without the usage and the "try --help" footer.
fn clap_message(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid command line");
    let mut message = first.strip_prefix("error: ").unwrap_or(first).to_owned();
    if message.ends_with(':') {
        let listed: Vec<&str> = lines
            .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
            .collect();
        if !listed.is_empty() {
            message.push(' ');
            message.push_str(&listed.join(", "));
        }
    }
    message
}

fn print_error(message: &str) {
    let _ = writeln!(io::stderr().lock(), "streamid: error: {message}");
}

/// Whether the error is, at bottom, a write to a closed pipe.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}

/// The error chain on one line: `outer: inner: root`, each cause only once (several error
/// types repeat their source in their own message), line breaks folded into `; `.
pub(crate) fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = fold_lines(&cause.to_string());
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn fold_lines(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn chains_fold_into_one_line_without_repeats() {
        let root = io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
        let err = anyhow::Error::new(root)
            .context("db error: connection refused")
            .context("connecting to PostgreSQL\n  at 127.0.0.1:1");
        assert_eq!(
            one_line(&err),
            "connecting to PostgreSQL; at 127.0.0.1:1: db error: connection refused"
        );
    }

    #[test]
    fn broken_pipes_are_found_under_context() {
        let err = Err::<(), _>(io::Error::from(io::ErrorKind::BrokenPipe))
            .context("printing the report")
            .unwrap_err();
        assert!(is_broken_pipe(&err));
        assert_eq!(code_for(&err), None);
        assert_eq!(finish(Err(err)), ExitCode::SUCCESS);
    }

    #[test]
    fn config_errors_are_usage_errors_and_the_rest_runtime_errors() {
        let err = anyhow::Error::new(ConfigError::ZeroRows).context("planning the demo");
        assert_eq!(code_for(&err), Some(USAGE));
        let err = anyhow::anyhow!("the database went away");
        assert_eq!(code_for(&err), Some(RUNTIME));
        let err = anyhow::Error::new(streamid::Error::InvalidConfig {
            field: "writers",
            value: String::new(),
            rule: "must not be empty".into(),
        })
        .context("starting the generator of a");
        assert_eq!(code_for(&err), Some(USAGE));
    }

    #[test]
    fn clap_messages_keep_the_missing_arguments() {
        let rendered = "error: the following required arguments were not provided:\n  \
            --observations <FILE>...\n  --stream <NAME>\n\nUsage: streamid verify \
            --observations <FILE>...\n\nFor more information, try '--help'.\n";
        assert_eq!(
            clap_message(rendered),
            "the following required arguments were not provided: --observations <FILE>..., \
             --stream <NAME>"
        );
        assert_eq!(
            clap_message("error: unexpected argument '--x' found\n\nUsage: streamid\n"),
            "unexpected argument '--x' found"
        );
    }

    #[test]
    fn verdicts_map_to_zero_and_one() {
        assert_eq!(finish(Ok(Verdict::Ok)), ExitCode::SUCCESS);
        assert_eq!(finish(Ok(Verdict::Failed)), ExitCode::from(1));
    }
}

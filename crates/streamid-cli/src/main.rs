//! The `streamid` command line.
//!
//! `main` is the whole control flow: parse the raw arguments ([`cli`]), validate them into
//! a plan ([`plan`]), run it, and map the outcome to an exit code in one place ([`exit`]).
//! Exit codes: 0 verdict OK, 1 verdict FAILED, 2 usage or configuration error, 3 database
//! or runtime error; a broken pipe on stdout counts as success.

mod cli;
mod demo;
mod exit;
mod plan;
mod reader;
mod relay;
mod report;
mod store;
mod view;
mod writer;

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    exit::finish(run())
}

fn run() -> anyhow::Result<report::Verdict> {
    let cli = cli::parse(std::env::args_os())?;
    match cli.command {
        cli::Command::Demo(args) => {
            let plan = plan::DemoPlan::from_args(&args, rand::random())?;
            init_logging();
            demo::run(plan)
        }
    }
}

/// Logs go to stderr, filtered by `RUST_LOG` (default `warn`).
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

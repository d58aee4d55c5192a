//! The `streamid` command line.
//!
//! `main` is the whole control flow: parse the raw arguments ([`cli`]), validate them into
//! a plan ([`plan`]), run it, and map the outcome to an exit code in one place ([`exit`]).
//! Exit codes: 0 success (demo verdict OK, verify clean), 1 demo verdict FAILED or verify
//! found violations, 2 usage or configuration error, 3 database or runtime error; a broken
//! pipe on stdout counts as success. Subcommands: `demo`, `verify`, `gaps`, `bench latency`,
//! and the hidden `worker write|read` (see `cli/worker.rs`) and `bench latency-reader`.

mod bench;
mod cli;
mod demo;
mod exit;
mod gaps;
mod output;
mod plan;
mod reader;
mod report;
mod store;
mod verify;
mod view;
mod worker;
mod writer;

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    exit::finish(run())
}

fn run() -> anyhow::Result<report::Verdict> {
    use cli::{BenchCommand, Command, WorkerCommand};
    let cli = cli::parse(std::env::args_os())?;
    match cli.command {
        Command::Demo(args) => {
            let plan = plan::DemoPlan::from_args(&args, rand::random())?;
            init_logging();
            demo::run(plan)
        }
        Command::Verify(args) => {
            let plan = plan::VerifyPlan::from_args(&args)?;
            init_logging();
            output::block_on(verify::run(plan))
        }
        Command::Gaps(args) => {
            let plan = plan::GapsPlan::from_args(&args)?;
            init_logging();
            output::block_on(gaps::run(plan))
        }
        Command::Bench(bench) => match bench.command {
            BenchCommand::Latency(args) => {
                let plan = plan::LatencyPlan::from_args(&args)?;
                init_logging();
                output::block_on(bench::latency(plan))
            }
            BenchCommand::LatencyReader(args) => {
                let plan = plan::LatencyReaderPlan::from_args(&args)?;
                init_logging();
                output::block_on(bench::latency_reader(plan))
            }
        },
        Command::Worker(worker) => match worker.command {
            WorkerCommand::Write(args) => {
                let plan = plan::WritePlan::from_args(&args, rand::random())?;
                init_logging();
                output::block_on(worker::write(plan))
            }
            WorkerCommand::Read(args) => {
                let plan = plan::ReadPlan::from_args(&args)?;
                init_logging();
                output::block_on(worker::read(plan))
            }
        },
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

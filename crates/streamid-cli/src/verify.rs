//! `streamid verify`: reads the observation files, audits the stream with the library's
//! independent auditor ([`streamid::Audit`]), prints the report, and turns it into the
//! verdict (exit 0 or 1).
//!
//! Everything judged comes from the library's pure check over rows read directly from the
//! tables; this module only gathers inputs and prints. The stream's recorded positions are
//! printed alongside for context; they play no part in the verdict.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;

use anyhow::{Context as _, Result};
use serde::Serialize;
use streamid::{Observation, VerifyReport};

use crate::output;
use crate::plan::VerifyPlan;
use crate::report::Verdict;
use crate::store::Database;

/// The JSON output: the library's report, flattened, with what the CLI adds.
#[derive(Serialize)]
struct Output<'a> {
    ok: bool,
    stream: &'a str,
    database: String,
    observation_files: usize,
    recorded_positions: BTreeMap<String, i64>,
    #[serde(flatten)]
    report: &'a VerifyReport,
}

/// Runs `streamid verify`.
///
/// # Errors
///
/// Unreadable observation files, database errors, a failure to write the report.
pub(crate) async fn run(plan: VerifyPlan) -> Result<Verdict> {
    let observations = read_all(&plan)?;
    let db = Database::open_existing(&plan.store, "streamid verify").await?;
    let report = match &db {
        Database::Postgres(pg) => plan.audit.postgres(pg.pool(), &observations).await,
        Database::Sqlite(file) => plan.audit.sqlite(file.path(), &observations).await,
    }
    .with_context(|| format!("auditing stream {:?}", plan.stream))?;
    let recorded_positions: BTreeMap<String, i64> = db
        .recorded_positions(&plan.stream)
        .await?
        .into_iter()
        .collect();
    let out = Output {
        ok: report.is_ok(),
        stream: &plan.stream,
        database: db.describe(),
        observation_files: plan.observations.len(),
        recorded_positions,
        report: &report,
    };
    output::print_result(&out, plan.json, || to_text(&out))?;
    Ok(if report.is_ok() {
        Verdict::Ok
    } else {
        Verdict::Failed
    })
}

/// Every observation of every file, files in the order given.
fn read_all(plan: &VerifyPlan) -> Result<Vec<Observation>> {
    let mut all = Vec::new();
    for path in &plan.observations {
        let file = File::open(path)
            .with_context(|| format!("opening observation file {}", path.display()))?;
        let read = streamid::read_observations(BufReader::new(file))
            .with_context(|| format!("reading observation file {}", path.display()))?;
        all.extend(read);
    }
    Ok(all)
}

fn to_text(out: &Output<'_>) -> String {
    let positions = if out.recorded_positions.is_empty() {
        "none".to_owned()
    } else {
        out.recorded_positions
            .iter()
            .map(|(w, p)| format!("{w}={p}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "streamid verify: stream {:?} on {}, {} observation file(s)\n{}recorded positions: {positions}\n",
        out.stream, out.database, out.observation_files, out.report
    )
}

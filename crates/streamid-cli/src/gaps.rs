//! `streamid gaps`: prints a stream's gap ledger (`stream_gaps`, per writer and cause), its
//! most recent events (`stream_events`) and its recorded positions, as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use crate::output;
use crate::plan::GapsPlan;
use crate::report::Verdict;
use crate::store::{Database, Ledger};

/// The JSON output.
#[derive(Serialize)]
struct Output<'a> {
    stream: &'a str,
    database: String,
    total_gaps: i64,
    #[serde(flatten)]
    ledger: &'a Ledger,
    recorded_positions: BTreeMap<String, i64>,
}

/// Runs `streamid gaps`; always [`Verdict::Ok`] when it could read and print.
///
/// # Errors
///
/// Database errors, a failure to write to stdout.
pub(crate) async fn run(plan: GapsPlan) -> Result<Verdict> {
    let db = Database::open_existing(&plan.store, "streamid gaps").await?;
    let ledger = db.ledger(&plan.stream, plan.events).await?;
    let recorded_positions = db
        .recorded_positions(&plan.stream)
        .await?
        .into_iter()
        .collect();
    let out = Output {
        stream: &plan.stream,
        database: db.describe(),
        total_gaps: ledger.gaps.iter().map(|g| g.gaps).sum(),
        ledger: &ledger,
        recorded_positions,
    };
    output::print_result(&out, plan.json, || to_text(&out))?;
    Ok(Verdict::Ok)
}

fn to_text(out: &Output<'_>) -> String {
    let mut s = format!("stream {:?} on {}\n", out.stream, out.database);
    if !out.ledger.tables_exist {
        s.push_str(
            "no gap ledger: tables stream_gaps and stream_events do not exist yet (no streamid \
             generator has run on this database)\n",
        );
        return s;
    }
    let _ = writeln!(
        s,
        "gaps (IDs finished without a row): {} in total",
        out.total_gaps
    );
    if !out.ledger.gaps.is_empty() {
        let _ = writeln!(s, "  {:<24} {:<18} {:>10}", "writer", "cause", "gaps");
        for g in &out.ledger.gaps {
            let _ = writeln!(s, "  {:<24} {:<18} {:>10}", g.instance, g.cause, g.gaps);
        }
    }
    let _ = writeln!(
        s,
        "recent events (newest first): {}",
        out.ledger.events.len()
    );
    for e in &out.ledger.events {
        let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        let _ = writeln!(
            s,
            "  {}  {} {} epoch {} position {}{}",
            e.at,
            e.instance,
            e.event,
            opt(e.epoch),
            opt(e.position),
            e.by_instance
                .as_deref()
                .map(|by| format!(" by {by}"))
                .unwrap_or_default()
        );
    }
    let positions: Vec<String> = out
        .recorded_positions
        .iter()
        .map(|(w, p)| format!("{w}={p}"))
        .collect();
    let _ = writeln!(
        s,
        "recorded positions: {}",
        if positions.is_empty() {
            "none".to_owned()
        } else {
            positions.join(", ")
        }
    );
    s
}

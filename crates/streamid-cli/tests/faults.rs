//! Fault injection with real processes and real PostgreSQL (issue 5 item 4).
//!
//! Each scenario runs four `streamid worker write` processes and one `streamid worker read`
//! process (plain and token tails) on a private cluster with fsync on, replicating over
//! LISTEN/NOTIFY; injects its fault while they write; lets them write on; then stops the
//! writers and audits the run (`fault_harness::Fleet::finish`):
//!
//! - `streamid verify`: zero misses, zero IDs handed out twice, zero duplicate rows, every
//!   row seen by both readers;
//! - the writers' logs against the table: every ID logged committed has its row, no ID
//!   logged rolled back or failed has one (an `unknown` one may go either way);
//! - liveness: the reader's `P` reaches the last allocated ID within the reclaim bound (2 s)
//!   plus slack once the writers stop, and the stall after every fault — from its end until
//!   `P` covers every ID allocated before it — stays within the same bound.
//!
//! Scenarios run one at a time (they measure stalls; two at once on a small machine would
//! measure each other). Each prints a `FAULT-REPORT {json}` line on stderr (see
//! RELIABILITY.md; `--nocapture` shows them, `STREAMID_FAULT_REPORT=FILE` collects them).

// A test binary: panicking on a failed step is how it reports failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod fault_harness;

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use fault_harness::{
    Cluster, Fleet, RECLAIM_BOUND, WriteOptions, assert_no_long_stall_after_any_fault, run_for,
};

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

const SEC: Duration = Duration::from_secs(1);

/// (a) `kill -9` of writers inside open transactions (`--max-delay-ms 40` keeps them open
/// most of the time; the kill waits until PostgreSQL shows one). The survivors must prove
/// each dead writer dead and move its position on, or the reader stalls forever.
#[test]
fn writers_killed_mid_transaction_are_recovered_by_the_survivors() {
    let _serial = serial();
    let cluster = Cluster::start(false);
    let options = WriteOptions {
        rollback_rate: 0.05,
        max_delay_ms: 40,
    };
    let mut fleet = Fleet::start(&cluster, 4, options);
    run_for(SEC * 3 / 2);
    assert!(fleet.kill9("w2"), "w2 had no transaction open");
    run_for(SEC * 2);
    fleet.restart("w2");
    run_for(SEC);
    assert!(fleet.kill9("w3"), "w3 had no transaction open");
    run_for(SEC * 2);
    let report = fleet.finish("kill -9 mid-transaction");
    assert_no_long_stall_after_any_fault(&report);
    for fault in &report.faults {
        let recovered = fault.recovered_ms.expect("the killed writer was recovered");
        assert!(
            recovered <= RECLAIM_BOUND.as_millis() as u64,
            "{} recovered after {recovered} ms",
            fault.detail
        );
    }
    assert!(report.gaps.get("reclaimed").copied().unwrap_or(0) >= 2);
}

/// (b) `pg_ctl stop -m immediate` and start, twice, while writing (fsync on, so every
/// commit the writers heard of survives). Workers lose every connection: they must carry
/// on, commits in flight become unknown outcomes resolved with `pg_xact_status`, and every
/// writer's lease is re-taken under a new epoch.
#[test]
fn a_postgres_crash_restart_loses_no_row_and_the_workers_carry_on() {
    let _serial = serial();
    let cluster = Cluster::start(false);
    let options = WriteOptions {
        rollback_rate: 0.05,
        max_delay_ms: 5,
    };
    let mut fleet = Fleet::start(&cluster, 4, options);
    for round in 1..=2 {
        run_for(SEC * 3 / 2);
        cluster
            .server
            .restart_immediate()
            .expect("restart PostgreSQL");
        fleet.fault("pg restart -m immediate", format!("restart {round}"));
    }
    run_for(SEC * 2);
    let before_last = fleet.faults.last().expect("a fault").allocated;
    let report = fleet.finish("PostgreSQL restart -m immediate");
    assert_no_long_stall_after_any_fault(&report);
    assert!(
        report.failed + report.unknown > 0,
        "the workers saw no error: {report:?}"
    );
    assert!(
        report.final_position > before_last + 20,
        "the writers did not carry on after the restart: {report:?}"
    );
}

/// (c) Every connection of every worker — data, lease, NOTIFY — cut by the proxy three
/// times mid-run, abruptly (reset, no goodbye).
#[test]
fn connections_cut_through_a_proxy_lose_no_row() {
    let _serial = serial();
    let cluster = Cluster::start(true);
    let options = WriteOptions {
        rollback_rate: 0.05,
        max_delay_ms: 20,
    };
    let mut fleet = Fleet::start(&cluster, 4, options);
    for round in 1..=3 {
        run_for(SEC * 3 / 2);
        let n = cluster.proxy().cut_all();
        assert!(n > 0, "nothing to cut");
        fleet.fault("cut", format!("cut {round}: {n} connections"));
    }
    run_for(SEC * 2);
    let report = fleet.finish("connections cut");
    assert_no_long_stall_after_any_fault(&report);
    assert!(
        report.failed + report.unknown > 0,
        "no write was hit: {report:?}"
    );
}

/// (d) The replication transport down: every NOTIFY listener terminated every 250 ms for
/// 4 s. Announcements are lost; the table stays the source of truth (resync on reconnect,
/// periodic re-announcements), so rows are never missed and liveness comes back.
#[test]
fn notify_listeners_terminated_repeatedly_lose_no_row() {
    let _serial = serial();
    let cluster = Cluster::start(false);
    let options = WriteOptions {
        rollback_rate: 0.05,
        max_delay_ms: 10,
    };
    let mut fleet = Fleet::start(&cluster, 4, options);
    run_for(SEC);
    let until = Instant::now() + SEC * 4;
    let mut terminated = 0;
    while Instant::now() < until {
        terminated += cluster.terminate_listeners();
        run_for(Duration::from_millis(250));
    }
    assert!(terminated >= 10, "only {terminated} listeners terminated");
    fleet.fault(
        "NOTIFY listeners terminated",
        format!("{terminated} terminations over 4 s"),
    );
    run_for(SEC * 2);
    let report = fleet.finish("replication transport down");
    assert_no_long_stall_after_any_fault(&report);
}

/// (e) COMMITs whose outcome the client never learns: the proxy holds the server's replies
/// (requests still run, so COMMITs commit), then cuts. The writers log `unknown`; their
/// resolvers ask `pg_xact_status`; `P` waits for the answer and then passes the IDs, and
/// the rows that did commit are seen. Repeated until at least two outcomes were unknown.
#[test]
fn commits_with_unknown_outcome_are_resolved_and_nothing_is_missed() {
    let _serial = serial();
    let cluster = Cluster::start(true);
    let options = WriteOptions {
        rollback_rate: 0.05,
        max_delay_ms: 0,
    };
    let mut fleet = Fleet::start(&cluster, 4, options);
    run_for(SEC);
    let proxy = cluster.proxy();
    for cycle in 1..=8 {
        proxy.blackhole_replies(true);
        run_for(Duration::from_millis(400));
        let n = proxy.cut_all();
        proxy.blackhole_replies(false);
        fleet.fault(
            "replies held, then cut",
            format!("cycle {cycle}: {n} connections"),
        );
        run_for(SEC * 3 / 2);
        let unknown: usize = fleet
            .writers
            .iter()
            .map(|w| fault_harness::count_events(&fleet.log_of(w), "unknown"))
            .sum();
        if unknown >= 2 {
            break;
        }
    }
    let report = fleet.finish("COMMIT outcome unknown");
    assert_no_long_stall_after_any_fault(&report);
    assert!(report.unknown >= 2, "too few unknown outcomes: {report:?}");
    assert!(
        report.resolved >= report.unknown,
        "not every unknown outcome was resolved through pg_xact_status: {report:?}"
    );
    assert!(
        report.unknown_committed >= 1,
        "no unknown COMMIT had committed: {report:?}"
    );
}

//! The behaviour suite: every scenario of the contract (spec/behaviour.md) that applies to
//! both backends, written once against [`harness::Harness`] and run on PostgreSQL and on
//! SQLite (style item 6), so neither backend can drift silently.
//!
//! `cargo test -p streamid --test suite` runs all; `… --test suite sqlite::` one backend;
//! `… --test suite worked_example` one scenario on both. Backend-specific behaviour lives
//! in `pg_*.rs` and `sqlite_specific.rs`.
// A test binary: panicking on an unexpected error is the point (helpers included).
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod scenarios;
mod sweep;

/// Instantiates every scenario as a `#[tokio::test]` in one module per backend:
/// `postgres::<scenario>` and `sqlite::<scenario>`, each on a fresh environment from
/// `Harness::<backend>()`.
macro_rules! suite {
    (backends: [$($backend:ident),* $(,)?]; scenarios: $scenarios:tt) => {
        $( suite!(@backend $backend $scenarios); )*
    };
    (@backend $backend:ident [$($module:ident :: $scenario:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let h = crate::harness::Harness::$backend().await;
                    crate::scenarios::$module::$scenario(&h).await;
                }
            )*
        }
    };
}

suite! {
    backends: [postgres, sqlite];
    scenarios: [
        completion::acceptance_surface,
        completion::worked_example_out_of_order_completion,
        completion::in_order_completion_moves_every_position_step_by_step,
        completion::dropped_allocation_moves_positions_but_writes_no_row,
        completion::failed_position_write_is_reported_and_retried,
        completion::non_writer_allocation_refused_before_any_io,
        completion::next_ids_zero_is_invalid_argument_and_allocates_nothing,
        transactions::transaction_commit_finishes_ids_before_returning,
        transactions::transaction_rollback_finishes_ids_as_gaps,
        transactions::dropped_transaction_rolls_back_and_finishes_ids,
        transactions::transaction_without_statements_commits_its_ids_as_decided,
        replication::writers_replicating_through_advance_pass_only_decided_ids,
        replication::idle_writer_follows_the_others,
        replication::own_echoes_and_unlisted_instances_are_ignored,
        replication::advance_from_unlisted_instance_is_ignored,
        replication::p_stops_at_a_gap_until_the_slowest_writer_passes_it,
        restart::restart_after_out_of_order_commits_recovers_own_position_and_p_up_to_gap,
        restart::restart_scan_skips_committed_run_past_stale_row,
        restart::startup_row_per_writer_keeps_readers_below_in_flight_ids,
        restart::restart_never_adopts_another_writers_uncommitted_head,
        restart::restart_adopts_l_when_it_is_one_a_row_or_a_recorded_position,
        writers::removed_writer_row_deleted_and_no_longer_holds_p_back,
        writers::re_added_writer_starts_at_p_not_at_its_old_position,
        writers::synapse_16473_new_writer_first_in_flight_id_holds_p_back,
        writers::anyone_may_write_records_nothing_and_anyone_allocates,
        repair::sequence_behind_rows_is_repaired_before_the_first_id,
        repair::positions_ahead_of_sequence_are_repaired_in_default_mode,
        repair::strict_mode_refuses_positions_ahead_of_sequence_with_exact_repair_sql,
        repair::synapse_19973_strict_startup_succeeds_right_after_repair,
        repair::strict_repair_sql_backwards_with_odd_stream_name,
        repair::sequence_that_went_backwards_is_moved_past_known_ids,
        shapes::backwards_stream_positions_negative_and_restart,
        shapes::stream_over_two_tables_takes_max_and_scans_both,
        shapes::synapse_13585_null_instance_names_do_not_crash_startup,
        names::hostile_identifiers_rejected_before_io,
        names::unusual_valid_names_work_end_to_end,
        names::missing_table_and_column_give_missing_object_with_statements,
        cancel::synapse_19800_cancelled_next_id_does_not_stall,
        cancel::synapse_19800_cancelled_next_ids_does_not_stall,
        cancel::synapse_19800_cancelled_complete_does_not_stall,
        cancel::synapse_19800_cancelled_transaction_begin_does_not_stall,
        cancel::synapse_19800_cancelled_transaction_next_id_does_not_stall,
        cancel::synapse_19800_cancelled_transaction_next_ids_then_drop_does_not_stall,
        cancel::synapse_19800_cancelled_commit_is_resolved,
        cancel::synapse_19800_cancelled_rollback_does_not_stall,
        stress::concurrent_tasks_random_completion,
        stress::two_writers_replicating_readers_never_miss_a_row,
    ]
}

//! Cancellation sweeps of every allocating or committing operation (style item 7, spec
//! §5.2 step 4, §5.3, §7.2, FIX-5; upstream #19800): autocommit `next_id`/`next_ids`,
//! `Allocation::complete`, and the transaction's begin, `next_id`, `next_ids`, `commit`
//! and `rollback`.

use std::time::Duration;

use crate::common::error_log;
use crate::common::eventually;
use crate::harness::{Gen, Harness};
use crate::sweep::{Step, assert_swept, poll_then_drop, sweep};

async fn start(h: &Harness) -> Gen {
    error_log::install();
    h.start("w", &["w"]).await
}

// why: upstream #19800 / spec §5.2 step 4, §5.3 (FIX-5): `next_id` dropped at any `.await`
// leaves no ID unfinished and no marker behind, so the stream never stalls.
pub async fn synapse_19800_cancelled_next_id_does_not_stall(h: &Harness) {
    let g = start(h).await;
    let polls = sweep(h, &g, "next_id", async |cut| {
        match poll_then_drop(g.next_id(), cut).await {
            Some(alloc) => {
                let alloc = alloc.unwrap();
                assert!(alloc.id() > 1);
                drop(alloc);
                Step::Completed
            }
            None => Step::Dropped { lost: 1 },
        }
    })
    .await;
    assert_swept(h, "next_id", polls);
}

// why: upstream #19800 / spec §5.2 step 4: the batch form, whose lost IDs are all gaps.
pub async fn synapse_19800_cancelled_next_ids_does_not_stall(h: &Harness) {
    let g = start(h).await;
    let polls = sweep(h, &g, "next_ids(5)", async |cut| {
        match poll_then_drop(g.next_ids(5), cut).await {
            Some(alloc) => {
                let alloc = alloc.unwrap();
                assert_eq!(alloc.ids().len(), 5);
                alloc.complete().await.unwrap();
                Step::Completed
            }
            None => Step::Dropped { lost: 5 },
        }
    })
    .await;
    assert_swept(h, "next_ids", polls);
}

// why: upstream #19800 / spec §5.3: `Allocation::complete` finishes the IDs at its first
// poll. Dropped unpolled, the allocation takes the failure path (no position write);
// dropped later, the IDs are finished and the row is written in the background.
pub async fn synapse_19800_cancelled_complete_does_not_stall(h: &Harness) {
    error_log::install();
    // A long tick, so only a successful completion can write `stream_positions`.
    let g = super::start_without_tick(h, "w", &["w"]).await;
    let polls = sweep(h, &g, "Allocation::complete", async |cut| {
        let alloc = g.next_id().await.unwrap();
        let id = alloc.id();
        let recorded_before = h.recorded().await["w"];
        let done = poll_then_drop(alloc.complete(), cut).await;
        assert_eq!(g.unfinished_ids(), 0, "finished synchronously");
        assert_eq!(g.current_token(), id);
        if cut.polls == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(
                h.recorded().await["w"],
                recorded_before,
                "dropped unpolled: the failure path writes no position"
            );
        } else {
            eventually("the row is written in the background", async || {
                h.recorded().await["w"] == id
            })
            .await;
        }
        match done {
            Some(result) => {
                result.unwrap();
                assert_eq!(
                    h.recorded().await["w"],
                    id,
                    "recorded when complete() returns"
                );
                Step::Completed
            }
            None => Step::Dropped { lost: 0 },
        }
    })
    .await;
    assert_swept(h, "complete()", polls);
}

// why: upstream #19800 / spec §7.1: beginning a transaction dropped at any `.await` leaves
// no transaction open on the connection (PostgreSQL) and no write lock held (SQLite), and
// nothing in the tracker; a completed one works.
pub async fn synapse_19800_cancelled_transaction_begin_does_not_stall(h: &Harness) {
    let g = start(h).await;
    let polls = sweep(h, &g, "begin", async |cut| {
        let mut conn = h.conn().await;
        let step = match poll_then_drop(conn.begin(&g), cut).await {
            Some(tx) => {
                let mut tx = tx.unwrap();
                let id = tx.next_id().await.unwrap();
                tx.insert(id, "w", "begin").await;
                tx.commit().await.unwrap();
                assert!(h.row_exists(id).await);
                Step::Completed
            }
            None => Step::Dropped { lost: 0 },
        };
        conn.assert_idle().await;
        step
    })
    .await;
    assert_swept(h, "begin", polls);
}

// why: upstream #19800 / spec §7.1, §5.2 step 4: the transaction's `next_id` dropped at
// any `.await` leaves the transaction usable; a later allocation in it works and its
// commit lets `P` pass the cancelled fetch's gap.
pub async fn synapse_19800_cancelled_transaction_next_id_does_not_stall(h: &Harness) {
    let g = start(h).await;
    let polls = sweep(h, &g, "transaction next_id", async |cut| {
        let mut conn = h.conn().await;
        let mut tx = conn.begin(&g).await.unwrap();
        let first = poll_then_drop(tx.next_id(), cut).await;
        let mut ids: Vec<i64> = first.iter().map(|r| *r.as_ref().unwrap()).collect();
        ids.push(tx.next_id().await.unwrap());
        assert_eq!(
            tx.ids(),
            ids,
            "only registered IDs belong to the transaction"
        );
        for &id in &ids {
            tx.insert(id, "w", "tx-next-id").await;
        }
        tx.commit().await.unwrap();
        let last = *ids.last().unwrap();
        assert_eq!(g.current_token(), last, "commit() finished the IDs");
        for &id in &ids {
            assert!(h.row_exists(id).await);
        }
        match first {
            Some(_) => Step::Completed,
            // PostgreSQL: the cancelled nextval ran on the transaction's connection,
            // before the next statement. SQLite: it runs on its own pooled connection
            // and may take its counter step after the transaction's second allocation.
            None => Step::Dropped {
                lost: i64::from(h.is_sqlite()),
            },
        }
    })
    .await;
    assert_swept(h, "next_id", polls);
}

// why: upstream #19800 / spec §7.2 row 4: a transaction dropped right after a cancelled
// `next_ids` (no commit) rolls back and strands nothing.
pub async fn synapse_19800_cancelled_transaction_next_ids_then_drop_does_not_stall(h: &Harness) {
    let g = start(h).await;
    sweep(h, &g, "transaction next_ids(3) + drop", async |cut| {
        let mut conn = h.conn().await;
        let mut tx = conn.begin(&g).await.unwrap();
        let done = poll_then_drop(tx.next_ids(3), cut).await;
        if let Some(ids) = &done {
            let ids = ids.as_ref().unwrap();
            assert_eq!(ids.len(), 3);
            assert_eq!(g.unfinished_ids(), 3);
        }
        drop(tx);
        assert_eq!(g.unfinished_ids(), 0, "Drop finishes the IDs at once");
        match done {
            Some(_) => Step::Completed,
            None => Step::Dropped { lost: 3 },
        }
    })
    .await;
}

// why: upstream #19800 / spec §7.2 and §7.3 (FIX-5): `commit()` dropped before its first
// poll rolls back; dropped after it, COMMIT is in flight — the IDs stay unfinished (`P`
// below them) until its outcome is known, and a committed row is then covered by `P` and
// recorded. PostgreSQL learns the outcome through the resolver (`pg_xact_status`); SQLite
// runs COMMIT to completion on the blocking pool, which finishes the IDs itself.
pub async fn synapse_19800_cancelled_commit_is_resolved(h: &Harness) {
    let g = start(h).await;
    let mut in_doubt_steps = 0;
    let polls = sweep(h, &g, "commit", async |cut| {
        let mut conn = h.conn().await;
        let mut tx = conn.begin(&g).await.unwrap();
        let id = tx.next_id().await.unwrap();
        tx.insert(id, "w", "commit").await;
        tx.flush().await;
        let done = poll_then_drop(tx.commit(), cut).await;
        if g.unresolved_commits() > 0 {
            in_doubt_steps += 1;
        }
        if g.unfinished_ids() > 0 {
            // Outcome not known yet: the ID must not be covered.
            assert_eq!(g.unfinished_ids(), 1, "in doubt: not finished early");
            assert!(g.current_token() < id);
            assert!(g.current_token_for_writer("w") < id);
        }
        eventually("the commit outcome is known", async || {
            g.unresolved_commits() == 0 && g.unfinished_ids() == 0
        })
        .await;
        let committed = h.row_exists(id).await;
        assert_eq!(
            committed,
            cut.polls > 0,
            "COMMIT was sent iff the future was polled"
        );
        assert_eq!(g.current_token(), id);
        if committed {
            eventually("a committed position is recorded", async || {
                h.recorded().await["w"] >= id
            })
            .await;
        }
        match done {
            Some(result) => {
                result.unwrap();
                Step::Completed
            }
            None => Step::Dropped { lost: 0 },
        }
    })
    .await;
    assert_swept(h, "commit", polls);
    if let Harness::Pg(_) = h {
        assert!(
            in_doubt_steps >= 1,
            "the sweep never left a commit in doubt"
        );
    }
}

// why: upstream #19800 / spec §7.2 row 3: a dropped `rollback()` finishes the IDs as
// gaps at once, whether or not ROLLBACK then completes (the transaction can never commit);
// dropped unpolled, `Drop` does it.
pub async fn synapse_19800_cancelled_rollback_does_not_stall(h: &Harness) {
    let g = start(h).await;
    let polls = sweep(h, &g, "rollback", async |cut| {
        let mut conn = h.conn().await;
        let mut tx = conn.begin(&g).await.unwrap();
        let id = tx.next_id().await.unwrap();
        tx.insert(id, "w", "rollback").await;
        tx.flush().await;
        let done = poll_then_drop(tx.rollback(), cut).await;
        assert_eq!(g.unfinished_ids(), 0, "finished at once");
        assert_eq!(g.unresolved_commits(), 0);
        assert_eq!(g.current_token(), id, "the gap is decided");
        assert!(!h.row_exists(id).await);
        match done {
            Some(result) => {
                result.unwrap();
                Step::Completed
            }
            None => Step::Dropped { lost: 0 },
        }
    })
    .await;
    assert_swept(h, "rollback", polls);
}

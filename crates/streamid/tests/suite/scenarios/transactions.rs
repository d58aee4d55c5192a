//! The transaction path (spec §7.1, §7.2): `StreamTransaction` on PostgreSQL,
//! `SqliteTransaction` on SQLite — commit, rollback and drop finish the IDs with the
//! right outcome.

use super::row_of;
use crate::common::eventually;
use crate::harness::{Conn, Harness, Tx};

// why: spec §7.2 row 1: once COMMIT is confirmed, `commit()` finishes the IDs with success
// before it returns (positions already cover them) and the rows are visible; the position
// write is scheduled, not awaited (§8.4).
pub async fn transaction_commit_finishes_ids_before_returning(h: &Harness) {
    let generator = h.start("w", &["w"]).await;
    let mut conn = h.conn().await;
    let mut tx = conn.begin(&generator).await.unwrap();
    let ids = tx.next_ids(3).await.unwrap();
    let last = tx.next_id().await.unwrap();
    assert_eq!(ids, vec![2, 3, 4]);
    assert_eq!(last, 5);
    if let Tx::Pg(pg) = &tx {
        assert!(pg.xid().is_some(), "the first allocation records the xid");
    }
    assert_eq!(tx.ids(), vec![2, 3, 4, 5]);
    for id in [2, 3, 4, 5] {
        tx.insert(id, "w", "commit").await;
    }
    tx.flush().await;
    assert_eq!(generator.unfinished_ids(), 4);
    assert!(generator.current_token() < 2);
    assert!(
        h.event_ids().await.is_empty(),
        "nothing visible before COMMIT"
    );
    tx.commit().await.unwrap();
    assert_eq!(generator.unfinished_ids(), 0);
    assert_eq!(row_of(&generator), (5, 5, 5));
    assert_eq!(h.event_ids().await, vec![2, 3, 4, 5]);
    eventually("the committed position is recorded", async || {
        h.recorded().await.get("w") == Some(&5)
    })
    .await;
    generator.check_invariants().unwrap();
}

// why: spec §7.2 row 3: `rollback()` finishes the IDs as gaps; the rows vanish and
// positions pass the gaps.
pub async fn transaction_rollback_finishes_ids_as_gaps(h: &Harness) {
    let generator = h.start("w", &["w"]).await;
    let mut conn = h.conn().await;
    let mut tx = conn.begin(&generator).await.unwrap();
    let ids = tx.next_ids(2).await.unwrap();
    for &id in &ids {
        tx.insert(id, "w", "rollback").await;
    }
    tx.rollback().await.unwrap();
    assert_eq!(generator.unfinished_ids(), 0);
    assert_eq!(row_of(&generator), (3, 3, 3));
    assert!(h.event_ids().await.is_empty());
    conn.assert_idle().await;
    generator.check_invariants().unwrap();
}

// why: spec §7.2 row 4 and style item 8: a transaction dropped without `commit()` rolls
// back and its `Drop` finishes the IDs synchronously (a transaction that never sent COMMIT
// cannot commit); the connection stays usable (PostgreSQL) / the write lock is released
// (SQLite).
pub async fn dropped_transaction_rolls_back_and_finishes_ids(h: &Harness) {
    let generator = h.start("w", &["w"]).await;
    let mut conn = h.conn().await;
    {
        let mut tx = conn.begin(&generator).await.unwrap();
        let id = tx.next_id().await.unwrap();
        tx.insert(id, "w", "dropped").await;
        tx.flush().await;
        assert_eq!(generator.unfinished_ids(), 1);
    }
    assert_eq!(
        generator.unfinished_ids(),
        0,
        "Drop finishes the IDs at once"
    );
    assert_eq!(row_of(&generator), (2, 2, 2));
    if let Conn::Pg(client) = &conn {
        // The same connection: ROLLBACK was queued ahead of this statement.
        let rows: i64 = client
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 0, "the dropped transaction rolled back");
    }
    conn.assert_idle().await;
    assert!(h.event_ids().await.is_empty());
    generator.check_invariants().unwrap();
}

// why: spec §7.1 and §5.3: a transaction that allocated but never wrote (dropped or
// committed empty) still finishes its IDs; committing it is a gap like a rollback, and
// nothing is left locked.
pub async fn transaction_without_statements_commits_its_ids_as_decided(h: &Harness) {
    let generator = h.start("w", &["w"]).await;
    let mut conn = h.conn().await;
    let mut tx = conn.begin(&generator).await.unwrap();
    assert_eq!(tx.next_ids(2).await.unwrap(), vec![2, 3]);
    tx.commit().await.unwrap();
    assert_eq!(generator.unfinished_ids(), 0);
    assert_eq!(row_of(&generator), (3, 3, 3));
    let tx = conn.begin(&generator).await.unwrap();
    drop(tx);
    conn.assert_idle().await;
    assert_eq!(generator.max_allocated_token().await.unwrap(), 3);
    generator.check_invariants().unwrap();
}

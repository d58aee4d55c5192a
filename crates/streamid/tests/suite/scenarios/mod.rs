//! The scenarios, grouped by topic. Each is an `async fn(&Harness)` with a `// why:` naming
//! the spec section or upstream issue it pins down; `main.rs` instantiates every one for
//! every backend.

pub mod cancel;
pub mod completion;
pub mod names;
pub mod repair;
pub mod replication;
pub mod restart;
pub mod shapes;
pub mod stress;
pub mod transactions;
pub mod writers;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::eventually;
use crate::harness::{Gen, Harness};

pub const W12: [&str; 2] = ["w1", "w2"];

pub fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
}

/// `(minimal_local_current_token, current_token_for_writer(own), current_token)`.
pub fn row_of(g: &Gen) -> (i64, i64, i64) {
    (
        g.minimal_local_current_token(),
        g.current_token_for_writer(g.instance_name()),
        g.current_token(),
    )
}

/// Every ID finished, no commit outcome pending, invariants hold.
pub async fn settle(g: &Gen) {
    eventually(
        "every ID is finished and every outcome resolved",
        async || g.unfinished_ids() == 0 && g.unresolved_commits() == 0,
    )
    .await;
    g.check_invariants().unwrap();
}

/// Allocates one ID in autocommit, writes its row and completes it (position recorded).
pub async fn write_committed(h: &Harness, g: &Gen) -> i64 {
    let a = g.next_id().await.unwrap();
    h.insert(a.id(), Some(g.instance_name())).await;
    let id = a.id();
    a.complete().await.unwrap();
    id
}

/// Starts `instance` with a position write tick long enough that only completions write
/// `stream_positions` during the scenario (the tick's refresh is a SHOULD of §8.2).
pub async fn start_without_tick(h: &Harness, instance: &str, writers: &[&str]) -> Gen {
    let config = h
        .config(instance, writers)
        .position_write_interval(Duration::from_secs(3600));
    h.prepare(&config).await;
    let g = h.start_config(config).await;
    // The tick fires once at once when the writer task first runs; let that happen now,
    // so that no write in the scenario comes from the tick.
    tokio::time::sleep(Duration::from_millis(100)).await;
    g
}

/// Rows 2 (w1), 3 (w2), 5 (w1), 6 (w2), 4 a gap; recorded w1 = 5, w2 = 6, w3 = 3; the
/// sequence/counter at 6.
pub async fn seed_three_writers(h: &Harness) {
    for (id, inst) in [(2, "w1"), (3, "w2"), (5, "w1"), (6, "w2")] {
        h.insert(id, Some(inst)).await;
    }
    h.record("w1", 5).await;
    h.record("w2", 6).await;
    h.record("w3", 3).await;
    h.set_counter(6).await;
}

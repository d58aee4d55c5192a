//! In-process replication end to end (spec §12): announcements, idle writers, lost
//! messages and reconnects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use streamid::replication::{InProcess, ReplicationOptions};
use streamid::{MultiWriterIdGenerator, StreamConfig};

fn config(instance: &str) -> StreamConfig {
    StreamConfig::new("events", instance)
        .table("events", "instance_name", "stream_ordering")
        .writers(["a", "b"])
        .position_write_interval(Duration::from_millis(20))
}

fn options() -> ReplicationOptions {
    ReplicationOptions {
        announce_interval: Duration::from_millis(50),
        ..ReplicationOptions::default()
    }
}

async fn open(path: &std::path::Path, instance: &str, bus: &InProcess) -> MultiWriterIdGenerator {
    let g = MultiWriterIdGenerator::sqlite(path, config(instance))
        .await
        .unwrap();
    g.replicate_with(bus.clone(), options());
    g
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_and_reader_converge_and_survive_loss() {
    let dir = std::env::temp_dir().join(format!("streamid-repl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("r.db");
    let _ = std::fs::remove_file(&path);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE events (stream_ordering INTEGER NOT NULL, instance_name TEXT)")
        .unwrap();
    let bus = InProcess::new();
    let a = open(&path, "a", &bus).await;
    let b = open(&path, "b", &bus).await;
    let reader = open(&path, "reader", &bus).await;

    // a writes; b stays idle: its periodic announcement lets everyone pass it.
    for _ in 0..5 {
        a.next_id().await.unwrap().complete().await.unwrap();
    }
    let max = a.max_allocated_token().await.unwrap();
    let reached = reader
        .wait_for_persisted(max, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        reached.is_reached(),
        "reader stuck at {}",
        reader.current_token()
    );
    assert!(
        b.wait_for_persisted(max, Duration::from_secs(5))
            .await
            .unwrap()
            .is_reached()
    );

    // Messages are lost for a while: the periodic re-announcement repairs it.
    bus.set_delivering(false);
    for _ in 0..3 {
        b.next_id().await.unwrap().complete().await.unwrap();
    }
    let max = b.max_allocated_token().await.unwrap();
    assert!(
        reader.current_token() < max,
        "nothing was delivered, P cannot know"
    );
    bus.set_delivering(true);
    assert!(
        reader
            .wait_for_persisted(max, Duration::from_secs(5))
            .await
            .unwrap()
            .is_reached()
    );

    // Connections drop: everyone reconnects, resyncs from stream_positions, and goes on.
    bus.disconnect_all();
    a.next_id().await.unwrap().complete().await.unwrap();
    let max = a.max_allocated_token().await.unwrap();
    assert!(
        reader
            .wait_for_persisted(max, Duration::from_secs(5))
            .await
            .unwrap()
            .is_reached()
    );
    let status = reader.replication_status().unwrap();
    assert!(status.reconnects >= 1, "{status:?}");
    assert!(status.connected || status.reconnects >= 1);
    assert!(
        status.writers.contains_key("a") && status.writers.contains_key("b"),
        "{status:?}"
    );
    assert!(
        !status.writers.contains_key("reader"),
        "own echoes are not counted"
    );

    // A wait for a position from the future is bounded instead of hanging.
    let future = reader
        .wait_for_persisted(max + 1_000_000, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(future.is_reached());
    let mut token = reader.subscribe();
    assert_eq!(*token.borrow_and_update(), reader.current_token());
    drop((a, b, reader));
    std::fs::remove_dir_all(&dir).unwrap();
}

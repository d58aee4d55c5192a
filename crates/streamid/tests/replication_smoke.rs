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

/// Spec §11: tokens let a reader follow a fast writer without waiting for a slow one, and
/// round-trip through their string form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_follow_fast_writers_and_round_trip() {
    let dir = std::env::temp_dir().join(format!("streamid-tok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.db");
    let _ = std::fs::remove_file(&path);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE events (stream_ordering INTEGER NOT NULL, instance_name TEXT)")
        .unwrap();
    let bus = InProcess::new();
    let a = open(&path, "a", &bus).await;
    let b = open(&path, "b", &bus).await;
    let reader = open(&path, "reader", &bus).await;

    // b holds an ID open: P cannot pass it, but a's later writes show up in a's entry.
    let slow = b.next_id().await.unwrap();
    for _ in 0..3 {
        a.next_id().await.unwrap().complete().await.unwrap();
    }
    let a_pos = a.minimal_local_current_token();
    let wanted = streamid::MultiWriterStreamToken::new(slow.id() - 1, [("a", a_pos)]).unwrap();
    let outcome = reader
        .wait_for_token(&wanted, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        outcome.is_reached(),
        "reader token {:?}",
        reader.token().unwrap()
    );
    assert!(
        reader.current_token() < slow.id(),
        "P must stay below the open ID"
    );

    let token = reader.token().unwrap();
    assert_eq!(token.pos_for_instance("a"), a_pos);
    let text = reader.token_to_string(&token).await.unwrap();
    assert!(text.starts_with('m'), "{text}");
    assert_eq!(reader.parse_token(&text).await.unwrap(), token);
    // Another process with its own cache resolves the same ids.
    assert_eq!(a.parse_token(&text).await.unwrap(), token);
    assert!(matches!(
        reader.parse_token("m5~999.7").await,
        Err(streamid::Error::InvalidToken(_))
    ));
    assert!(reader.parse_token("-5").await.is_err());

    // A token from the future is bounded instead of hanging.
    drop(slow);
    let future = streamid::MultiWriterStreamToken::new(1_000_000, [("a", 2_000_000)]).unwrap();
    assert!(
        reader
            .wait_for_token(&future, Duration::from_secs(5))
            .await
            .unwrap()
            .is_reached()
    );
    drop((a, b, reader));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Spec §12.2: a writer announces its own completions at once, even when it has just
/// announced something else; only the announcements that follow other writers (an idle
/// writer's echoes) wait for the coalescing window. With a 10 s window, an own completion
/// that waited behind the connect-time announcement and an echo would take 10 s to arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_completions_are_announced_at_once_while_echoes_wait() {
    let dir = std::env::temp_dir().join(format!("streamid-own-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("o.db");
    let _ = std::fs::remove_file(&path);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("CREATE TABLE events (stream_ordering INTEGER NOT NULL, instance_name TEXT)")
        .unwrap();
    let bus = InProcess::new();
    let options = ReplicationOptions {
        coalesce: Duration::from_secs(10),
        announce_interval: Duration::from_secs(60),
        ..ReplicationOptions::default()
    };
    let mut generators = Vec::new();
    for instance in ["a", "b", "reader"] {
        let g = MultiWriterIdGenerator::sqlite(&path, config(instance))
            .await
            .unwrap();
        g.replicate_with(bus.clone(), options.clone());
        generators.push(g);
    }
    for g in &generators {
        while !g.replication_status().is_some_and(|s| s.connected) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let [a, b, reader] = &generators[..] else {
        unreachable!()
    };
    // b writes: a, idle, follows it, and its echo waits for the window.
    let first = b.next_id().await.unwrap();
    let first_id = first.id();
    first.complete().await.unwrap();
    assert!(
        a.wait_for_persisted(first_id, Duration::from_secs(3))
            .await
            .unwrap()
            .is_reached()
    );
    // a's own completion right after goes out at once.
    let own = a.next_id().await.unwrap();
    let id = own.id();
    own.complete().await.unwrap();
    let started = std::time::Instant::now();
    let reached = reader
        .wait_for_writer("a", id, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(
        reached.is_reached(),
        "a's completion of {id} did not arrive within 3 s (a's position at the reader: {})",
        reader.current_token_for_writer("a")
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(generators);
    std::fs::remove_dir_all(&dir).unwrap();
}

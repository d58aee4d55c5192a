//! The embedded backend end to end: same semantics as PostgreSQL.
use streamid::{MultiWriterIdGenerator, StreamConfig};

fn config(instance: &str) -> StreamConfig {
    StreamConfig::new("events", instance)
        .table("events", "instance_name", "stream_ordering")
        .writers(["writer-1", "writer-2"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_acceptance_surface() {
    let dir = std::env::temp_dir().join(format!("streamid-sqlite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("smoke.db");
    let _ = std::fs::remove_file(&path);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE events (stream_ordering INTEGER NOT NULL, instance_name TEXT)",
        )
        .unwrap();
    }
    let generator = MultiWriterIdGenerator::sqlite(&path, config("writer-1"))
        .await
        .unwrap();
    assert_eq!(generator.current_token(), 1);
    let a = generator.next_id().await.unwrap();
    assert_eq!(a.id(), 2);
    let b = generator.next_ids(3).await.unwrap();
    assert_eq!(b.ids(), &[3, 4, 5]);
    a.complete().await.unwrap();
    drop(b);
    assert_eq!(generator.minimal_local_current_token(), 5);

    let mut tx = generator.sqlite_transaction().await.unwrap();
    let id = tx.next_id().await.unwrap();
    assert_eq!(id, 6);
    tx.execute(
        "INSERT INTO events (stream_ordering, instance_name) VALUES (?1, ?2)",
        (id, "writer-1"),
    )
    .await
    .unwrap();
    assert!(
        tx.next_id().await.is_err(),
        "allocation after the first statement is refused"
    );
    tx.commit().await.unwrap();
    assert_eq!(generator.minimal_local_current_token(), 6);
    generator.advance("writer-2", 6);
    assert_eq!(generator.current_token(), 6);
    assert_eq!(generator.max_allocated_token().await.unwrap(), 6);
    generator.shutdown().await;
    drop(generator);

    // Restart: the counter continues above everything.
    let again = MultiWriterIdGenerator::sqlite(&path, config("writer-1"))
        .await
        .unwrap();
    let c = again.next_id().await.unwrap();
    assert!(c.id() > 6, "{}", c.id());
    std::fs::remove_dir_all(&dir).unwrap();
}

//! The acceptance surface of issue 2, end to end.
mod common;

use common::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acceptance_surface() {
    let env = Env::new().await;
    let generator = env.start("writer-1", &["writer-1", "writer-2"]).await;
    // A fresh stream: ID 1 counts as persisted, the first ID is 2.
    assert_eq!(generator.current_token(), 1);

    let a = generator.next_id().await.unwrap();
    assert_eq!(a.id(), 2);
    let b = generator.next_ids(5).await.unwrap();
    assert_eq!(b.ids(), &[3, 4, 5, 6, 7]);
    env.insert(a.id(), Some("writer-1")).await;
    a.complete().await.unwrap();
    assert_eq!(generator.minimal_local_current_token(), 2);
    assert_eq!(env.recorded().await.get("writer-1"), Some(&2));
    drop(b);
    assert_eq!(generator.minimal_local_current_token(), 7);
    // writer-2 has said nothing yet, but every ID up to 7 was decided here: the gapless
    // run lets P pass writer-2's starting position.
    assert_eq!(generator.current_token(), 7);
    assert_eq!(generator.current_token_for_writer("writer-1"), 7);

    let mut client = env.pool.get().await.unwrap();
    let mut tx = generator.transaction(&mut client).await.unwrap();
    let id = tx.next_id().await.unwrap();
    assert_eq!(id, 8);
    tx.execute(
        "INSERT INTO events (stream_ordering, instance_name) VALUES ($1, $2)",
        &[&id, &"writer-1"],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(generator.minimal_local_current_token(), 8);

    generator.advance("writer-2", 8);
    assert_eq!(generator.current_token(), 8);
    assert_eq!(generator.persisted_upto_position(), 8);
    assert_eq!(generator.positions().get("writer-2"), Some(&8));
    assert_eq!(generator.max_allocated_token().await.unwrap(), 8);
    common::eventually("the position row catches up", async || {
        env.recorded().await.get("writer-1") == Some(&8)
    })
    .await;
    generator.check_invariants().unwrap();
}

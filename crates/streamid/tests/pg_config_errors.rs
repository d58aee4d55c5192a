//! PostgreSQL-only configuration checks (spec §2.4, §10): `create_sequence`, sequences made
//! by users (`START WITH`, `RESTART WITH`, plain), unsuitable sequences, a missing sequence
//! and case-folded names. Strict consistency, missing tables and columns, refusals before
//! I/O and identifiers are in the behaviour suite (`tests/suite`), run on both backends.
// Test crate: panicking on unexpected errors is the point (helpers included), and the shared
// `common` module's items are `pub` for the other test binaries.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use std::collections::BTreeMap;

use common::Env;
use streamid::{Error, MultiWriterIdGenerator, StreamConfig};

const W12: [&str; 2] = ["w1", "w2"];

fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|&(k, v)| (k.to_owned(), v)).collect()
}

const POSITIONS_DDL: &str = "\
    CREATE TABLE IF NOT EXISTS stream_positions (stream_name TEXT NOT NULL, \
        instance_name TEXT NOT NULL, stream_id BIGINT NOT NULL); \
    CREATE UNIQUE INDEX IF NOT EXISTS stream_positions_idx \
        ON stream_positions (stream_name, instance_name)";

/// Writes a `stream_positions` row directly (what a restore or a port left behind).
async fn record(env: &Env, stream: &str, instance: &str, value: i64) {
    env.exec(POSITIONS_DDL).await;
    let client = env.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO stream_positions (stream_name, instance_name, stream_id) \
             VALUES ($1, $2, $3) ON CONFLICT (stream_name, instance_name) \
             DO UPDATE SET stream_id = EXCLUDED.stream_id",
            &[&stream, &instance, &value],
        )
        .await
        .unwrap();
}

/// `(last_value, is_called)` of a sequence, as PostgreSQL stores it.
async fn raw_sequence(env: &Env, seq: &str) -> (i64, bool) {
    let client = env.pool.get().await.unwrap();
    let row = client
        .query_one(&format!("SELECT last_value, is_called FROM {seq}"), &[])
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

async fn try_start(env: &Env, config: StreamConfig) -> Result<MultiWriterIdGenerator, Error> {
    MultiWriterIdGenerator::postgres(env.pool.clone(), config).await
}

// ----- fresh and user-made sequences (§10) -----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_sequence_fresh_first_id_is_2() {
    // why: spec §10.3/§10.4 — ID 1 counts as persisted, so create_sequence places a fresh
    // sequence at 1 (is_called) and the first ID is 2.
    let env = Env::new().await;
    let config = env.config("w1", &["w1"]);
    env.create_sequence(&config).await;
    assert_eq!(raw_sequence(&env, "events_seq").await, (1, true));
    let g = try_start(&env, config).await.unwrap();
    assert_eq!(g.current_token(), 1);
    assert_eq!(g.max_allocated_token().await.unwrap(), 1);
    assert_eq!(g.next_id().await.unwrap().id(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_sequence_goes_above_rows_and_never_moves_back() {
    // why: spec §10.4 — create_sequence puts the sequence above every row; rerunning it never
    // moves the sequence back; it never uses START WITH (is_called stays true).
    let env = Env::new().await;
    for id in [2, 5, 7] {
        env.insert(id, Some("w1")).await;
    }
    let config = env.config("w1", &["w1"]);
    env.create_sequence(&config).await;
    assert_eq!(raw_sequence(&env, "events_seq").await, (7, true));
    env.exec("SELECT setval('events_seq', 20, true)").await;
    env.create_sequence(&config).await;
    assert_eq!(
        raw_sequence(&env, "events_seq").await,
        (20, true),
        "not back to 7"
    );
    env.insert(30, Some("w1")).await;
    env.create_sequence(&config).await;
    assert_eq!(raw_sequence(&env, "events_seq").await, (30, true));
    let g = try_start(&env, config).await.unwrap();
    assert_eq!(g.next_id().await.unwrap().id(), 31);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_18712_first_row_not_missed() {
    // why: upstream #18712, spec §10.1/§10.3 FIX-1 — a user-made `START WITH 2` sequence has
    // last_value 2 but is_called false: 2 was never handed out, so it must not count as
    // persisted, or readers skip the first row.
    let env = Env::new().await;
    env.exec("CREATE SEQUENCE events_seq AS BIGINT INCREMENT BY 1 NO CYCLE CACHE 1 START WITH 2")
        .await;
    let g = try_start(&env, env.config("w1", &["w1"])).await.unwrap();
    assert_eq!(g.current_token(), 1, "2 is not persisted");
    assert_eq!(g.current_token_for_writer("w1"), 1);
    assert_eq!(g.max_allocated_token().await.unwrap(), 1);
    assert_eq!(env.recorded().await, map(&[("w1", 1)]));

    let mut client = env.pool.get().await.unwrap();
    let mut tx = g.transaction(&mut client).await.unwrap();
    let id = tx.next_id().await.unwrap();
    assert_eq!(id, 2);
    tx.execute(
        "INSERT INTO events (stream_ordering, instance_name) VALUES ($1, 'w1')",
        &[&id],
    )
    .await
    .unwrap();
    let reader = try_start(&env, env.config("r", &["w1"])).await.unwrap();
    assert_eq!(reader.current_token(), 1, "the reader waits for row 2");
    assert_eq!(g.current_token(), 1);
    tx.commit().await.unwrap();
    assert_eq!(g.current_token(), 2);
    reader.advance("w1", g.current_token_for_writer("w1"));
    assert_eq!(reader.current_token(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_after_port_is_read_correctly() {
    // why: spec §13 "first row missed … likewise RESTART WITH after ports", §10.1 — a port
    // that copied rows 2..5 and ran `RESTART WITH 6`: 6 is not handed out yet.
    let env = Env::new().await;
    for id in 2..=5 {
        env.insert(id, Some("w1")).await;
    }
    record(&env, "events", "w1", 5).await;
    env.exec(
        "CREATE SEQUENCE events_seq AS BIGINT INCREMENT BY 1 NO CYCLE CACHE 1; \
         ALTER SEQUENCE events_seq RESTART WITH 6",
    )
    .await;
    assert_eq!(raw_sequence(&env, "events_seq").await, (6, false));
    let g = try_start(&env, env.config("w1", &["w1"])).await.unwrap();
    assert_eq!(g.current_token(), 5, "6 is not persisted");
    assert_eq!(g.current_token_for_writer("w1"), 5);
    assert_eq!(env.recorded().await, map(&[("w1", 5)]));
    assert_eq!(
        raw_sequence(&env, "events_seq").await,
        (6, false),
        "untouched"
    );
    let a = g.next_id().await.unwrap();
    assert_eq!(a.id(), 6);
    let reader = try_start(&env, env.config("r", &["w1"])).await.unwrap();
    assert_eq!(reader.current_token(), 5);
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_user_sequence_never_hands_out_1() {
    // why: spec §10.3 — a plain `CREATE SEQUENCE` would hand out 1, which counts as
    // persisted; startup moves it to 1 (is_called) so the first ID is 2.
    let env = Env::new().await;
    env.exec("CREATE SEQUENCE events_seq AS BIGINT").await;
    assert_eq!(raw_sequence(&env, "events_seq").await, (1, false));
    let g = try_start(&env, env.config("w1", &["w1"])).await.unwrap();
    assert_eq!(raw_sequence(&env, "events_seq").await, (1, true));
    assert_eq!(g.current_token(), 1);
    assert_eq!(g.next_id().await.unwrap().id(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsuitable_sequences_refused_with_alter_fix() {
    // why: spec §10.2 and §4.2 step 6 — caching, non-BIGINT, cycling or non-1 increments
    // break ordering or uniqueness; startup refuses with the ALTER statement that fixes it,
    // and that statement works.
    const FIX: &str = "ALTER SEQUENCE \"events_seq\" AS BIGINT INCREMENT BY 1 NO CYCLE CACHE 1";
    for (create, problem) in [
        ("CREATE SEQUENCE events_seq CACHE 10", "caches 10"),
        ("CREATE SEQUENCE events_seq AS INTEGER", "integer"),
        ("CREATE SEQUENCE events_seq CYCLE", "cycles"),
        ("CREATE SEQUENCE events_seq INCREMENT 2", "increments by 2"),
    ] {
        let env = Env::new().await;
        env.exec(create).await;
        let before = raw_sequence(&env, "events_seq").await;
        let err = try_start(&env, env.config("w1", &W12)).await.unwrap_err();
        let message = err.to_string();
        match err {
            Error::UnsuitableSequence {
                sequence,
                problem: p,
                fix,
            } => {
                assert_eq!(sequence, "events_seq", "{create}");
                assert!(p.contains(problem), "{create}: {p}");
                assert_eq!(fix, FIX, "{create}");
                assert!(message.contains(FIX), "{message}");
            }
            other => panic!("{create}: expected UnsuitableSequence, got {other:?}"),
        }
        assert_eq!(raw_sequence(&env, "events_seq").await, before, "{create}");
        assert!(env.recorded().await.is_empty(), "{create}");

        env.exec(FIX).await;
        let g = try_start(&env, env.config("w1", &W12)).await.unwrap();
        assert_eq!(g.next_id().await.unwrap().id(), 2, "{create}");
    }
}

// ----- missing objects (§2.4, §10.4) ------------------------------------------------------------

const CREATE_SEQ: &str =
    "CREATE SEQUENCE IF NOT EXISTS \"events_seq\" AS BIGINT INCREMENT BY 1 NO CYCLE CACHE 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_sequence_hint_gives_setup_statements_that_work() {
    // why: spec §2.4 and §10.4 — a missing sequence gives the missing-object error quoting
    // the statements that create it correctly; running them lets startup succeed.
    let env = Env::new().await;
    env.insert(4, Some("w1")).await;
    let err = try_start(&env, env.config("w1", &W12)).await.unwrap_err();
    let message = err.to_string();
    let Error::MissingObject { kind, name, hint } = err else {
        panic!("expected MissingObject, got {err:?}");
    };
    assert_eq!((kind, name.as_str()), ("sequence", "events_seq"));
    assert!(
        message.contains("sequence events_seq does not exist"),
        "{message}"
    );
    assert!(hint.contains(CREATE_SEQ), "{hint}");
    assert!(hint.contains("setval('\"events_seq\"'"), "{hint}");
    assert!(
        !hint.contains("START WITH") && !hint.contains("RESTART"),
        "{hint}"
    );
    assert!(
        !hint.contains("case-sensitive"),
        "lower-case name: no quoting hint"
    );
    let (_, script) = hint
        .split_once("run:\n")
        .expect("the hint ends with a script");
    env.exec(script).await;
    assert_eq!(
        raw_sequence(&env, "events_seq").await,
        (4, true),
        "above the row"
    );
    let g = try_start(&env, env.config("w1", &W12)).await.unwrap();
    assert_eq!(g.next_id().await.unwrap().id(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_case_names_hint_about_quoting() {
    // why: spec §2.3 — names are quoted, so an object created unquoted (`CREATE SEQUENCE
    // MixedSeq` makes `mixedseq`) is missing; the error SHOULD say names are case-sensitive.
    let env = Env::new().await;
    env.exec(
        "CREATE SEQUENCE MixedSeq AS BIGINT INCREMENT BY 1 NO CYCLE CACHE 1; \
         CREATE TABLE Events2 (stream_ordering BIGINT NOT NULL, instance_name TEXT)",
    )
    .await;
    let err = try_start(&env, env.config("w1", &W12).sequence("MixedSeq"))
        .await
        .unwrap_err();
    let Error::MissingObject { kind, name, hint } = err else {
        panic!("expected MissingObject, got {err:?}");
    };
    assert_eq!((kind, name.as_str()), ("sequence", "MixedSeq"));
    assert!(hint.contains("case-sensitive"), "{hint}");
    assert!(
        hint.contains("\"MixedSeq\""),
        "the statements quote the name: {hint}"
    );

    let config = StreamConfig::new("events", "w1")
        .table("Events2", "instance_name", "stream_ordering")
        .sequence("mixedseq");
    let err = try_start(&env, config).await.unwrap_err();
    let Error::MissingObject { kind, name, hint } = err else {
        panic!("expected MissingObject, got {err:?}");
    };
    assert_eq!((kind, name.as_str()), ("table", "Events2"));
    assert!(hint.contains("case-sensitive"), "{hint}");
    // The folded names work.
    let config = StreamConfig::new("events", "w1")
        .table("events2", "instance_name", "stream_ordering")
        .sequence("mixedseq");
    let g = try_start(&env, config).await.unwrap();
    assert_eq!(g.next_id().await.unwrap().id(), 2);
}

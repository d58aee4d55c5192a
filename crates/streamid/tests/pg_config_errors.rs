//! Configuration and the startup checks against a real PostgreSQL (spec §2.3, §2.4, §4.3,
//! §5.1, §10): strict consistency and its repair SQL, fresh and user-made sequences,
//! unsuitable and missing objects, refusals before I/O, hostile and unusual identifiers.
// Test crate: panicking on unexpected errors is the point (helpers included), and the shared
// `common` module's items are `pub` for the other test binaries.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use std::collections::BTreeMap;

use common::Env;
use streamid::{Error, MAX_BATCH, MultiWriterIdGenerator, StreamConfig};

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

/// Rows 2 and 3, the sequence at 3, and `stream_positions` (w2) at `ahead`.
async fn seed_positions_ahead(env: &Env, stream: &str, sign: i64, ahead: i64) {
    env.insert(2 * sign, Some("w1")).await;
    env.insert(3 * sign, Some("w1")).await;
    env.exec(
        "CREATE SEQUENCE events_seq AS BIGINT INCREMENT BY 1 NO CYCLE CACHE 1; \
         SELECT setval('events_seq', 3, true)",
    )
    .await;
    record(env, stream, "w2", ahead * sign).await;
}

// ----- strict consistency (§4.3) --------------------------------------------------------------

const REPAIR_SQL: &str = "SELECT setval('\"events_seq\"', GREATEST(\n    \
    (SELECT MAX(stream_id) FROM stream_positions WHERE stream_name = 'events'),\n    \
    (SELECT last_value FROM \"events_seq\")));";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_refuses_positions_ahead_of_sequence_with_exact_repair_sql() {
    // why: spec §4.3 FIX-2 (upstream #16095, #18544, #19467) — strict mode refuses with the
    // inconsistent-database error naming stream, sequence, Q with its instance, base, the
    // likely causes and the exact repair statement; nothing is changed.
    let env = Env::new().await;
    seed_positions_ahead(&env, "events", 1, 50).await;
    let config = env.config("w1", &W12).strict_consistency(true);
    let err = try_start(&env, config).await.unwrap_err();
    let message = err.to_string();
    match err {
        Error::InconsistentDatabase {
            stream,
            sequence,
            recorded,
            recorded_by,
            base,
            repair_sql,
        } => {
            assert_eq!(stream, "events");
            assert_eq!(sequence, "events_seq");
            assert_eq!((recorded, recorded_by.as_str(), base), (50, "w2", 3));
            assert_eq!(repair_sql, REPAIR_SQL);
        }
        other => panic!("expected InconsistentDatabase, got {other:?}"),
    }
    for part in [
        "\"events\"",
        "events_seq",
        "50",
        "\"w2\"",
        "(3)",
        REPAIR_SQL,
        "promoted replica",
        "restore",
        "only moves the sequence forward",
        "without strict_consistency",
    ] {
        assert!(message.contains(part), "message lacks {part:?}: {message}");
    }
    assert_eq!(
        env.sequence_last("events_seq").await,
        3,
        "sequence untouched"
    );
    assert_eq!(env.recorded().await, map(&[("w2", 50)]), "no row written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synapse_19973_strict_startup_succeeds_right_after_repair() {
    // why: upstream #19973, spec §4.3 FIX-3 — after running the repair statement the check
    // compares Q with the repaired sequence, so strict startup no longer refuses.
    let env = Env::new().await;
    seed_positions_ahead(&env, "events", 1, 50).await;
    let config = env.config("w1", &W12).strict_consistency(true);
    let Err(Error::InconsistentDatabase { repair_sql, .. }) = try_start(&env, config.clone()).await
    else {
        panic!("expected a refusal first");
    };
    env.exec(&repair_sql).await;
    assert_eq!(env.sequence_last("events_seq").await, 50);
    // Running it twice never moves the sequence back.
    env.exec(&repair_sql).await;
    assert_eq!(env.sequence_last("events_seq").await, 50);

    let g = try_start(&env, config)
        .await
        .expect("strict start after repair");
    assert_eq!(g.current_token(), 50);
    assert_eq!(g.minimal_local_current_token(), 50, "L = Q adopted");
    assert_eq!(env.sequence_last("events_seq").await, 50);
    assert_eq!(g.next_id().await.unwrap().id(), 51);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_repair_sql_backwards_with_odd_stream_name() {
    // why: spec §4.3 (backwards: -MIN) and §2.3 — the repair statement is exact for backwards
    // streams and quotes a stream name holding quotes safely; running it repairs.
    let env = Env::new().await;
    let stream = "o'brien; DROP TABLE events; --";
    seed_positions_ahead(&env, stream, -1, 50).await;
    let config = StreamConfig::new(stream, "w1")
        .table("events", "instance_name", "stream_ordering")
        .sequence("events_seq")
        .writers(W12)
        .backwards()
        .strict_consistency(true);
    let err = try_start(&env, config.clone()).await.unwrap_err();
    let Error::InconsistentDatabase {
        recorded,
        base,
        repair_sql,
        ..
    } = err
    else {
        panic!("expected InconsistentDatabase, got {err:?}");
    };
    assert_eq!((recorded, base), (-50, -3));
    assert_eq!(
        repair_sql,
        "SELECT setval('\"events_seq\"', GREATEST(\n    \
         (SELECT -MIN(stream_id) FROM stream_positions WHERE stream_name = \
         'o''brien; DROP TABLE events; --'),\n    \
         (SELECT last_value FROM \"events_seq\")));"
    );
    env.exec(&repair_sql).await;
    assert_eq!(env.sequence_last("events_seq").await, 50);
    let g = try_start(&env, config)
        .await
        .expect("strict start after repair");
    assert_eq!(g.current_token(), -50);
    assert_eq!(
        env.recorded_for(stream).await,
        map(&[("w1", -50), ("w2", -50)])
    );
    assert_eq!(g.next_id().await.unwrap().id(), -51);
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
async fn missing_table_and_column_give_missing_object_with_statements() {
    // why: spec §2.4 (missing object: "the message gives the statements of §10.4") and
    // §4.2 step 4 — a missing backing table or column is a missing-object error, not a raw
    // database error.
    let env = Env::new().await;
    env.exec(CREATE_SEQ).await;
    let cases = [
        (
            StreamConfig::new("events", "w1")
                .table("nope", "instance_name", "stream_ordering")
                .sequence("events_seq"),
            "table",
            "nope",
        ),
        (
            env.config("w1", &W12)
                .table("events", "instance_name", "no_such_column"),
            "column",
            "no_such_column",
        ),
        (
            env.config("w1", &W12)
                .table("events", "who", "stream_ordering"),
            "column",
            "who",
        ),
    ];
    for (config, want_kind, want_name) in cases {
        let err = try_start(&env, config.clone()).await.unwrap_err();
        let message = err.to_string();
        let Error::MissingObject { kind, name, hint } = err else {
            panic!("expected MissingObject, got {err:?}");
        };
        assert_eq!(kind, want_kind, "{message}");
        assert!(name.contains(want_name), "{name}");
        assert!(message.contains("does not exist"), "{message}");
        assert!(hint.contains("BIGINT"), "{hint}");
        assert!(hint.contains(CREATE_SEQ), "{hint}");
        if want_name == "who" {
            // create_sequence reads only the ID column (see the report: a missing instance
            // column is found only by the startup scan).
            continue;
        }
        // create_sequence reports the same error kind.
        let client = env.pool.get().await.unwrap();
        let err = streamid::create_sequence(&**client, &config)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::MissingObject { kind, .. } if *kind == want_kind),
            "{err:?}"
        );
    }
    assert!(env.recorded().await.is_empty());

    // The table hint's statements are executable as given.
    let config = StreamConfig::new("events", "w1")
        .table("nope", "instance_name", "stream_ordering")
        .sequence("events_seq")
        .writers(W12);
    let Err(Error::MissingObject { hint, .. }) = try_start(&env, config.clone()).await else {
        panic!("expected MissingObject");
    };
    let create = hint
        .lines()
        .find(|l| l.starts_with("CREATE TABLE"))
        .expect("a CREATE TABLE statement");
    assert_eq!(
        create,
        "CREATE TABLE \"nope\" (\"instance_name\" TEXT, \"stream_ordering\" BIGINT NOT NULL);"
    );
    env.exec(create).await;
    let (_, script) = hint.split_once("run:\n").expect("the §10.4 statements");
    env.exec(script).await;
    let g = try_start(&env, config).await.unwrap();
    assert_eq!(g.next_id().await.unwrap().id(), 2);
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

// ----- refusals before I/O (§5.1, FIX-4) ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_writer_allocation_refused_before_any_io() {
    // why: upstream #10149, spec §5.1 — a reader's allocation returns the not-a-writer error
    // before any I/O or state change: the sequence does not move, no lock is taken.
    let env = Env::new().await;
    let config = env.config("r", &W12);
    env.create_sequence(&config).await;
    let pool = env.db.pool(2).unwrap();
    let reader = MultiWriterIdGenerator::postgres(pool.clone(), config)
        .await
        .unwrap();
    pool.close(); // any I/O on the generator's pool would now fail differently
    for result in [reader.next_id().await, reader.next_ids(3).await] {
        match result {
            Err(Error::NotAWriter {
                stream,
                instance,
                writers,
            }) => {
                assert_eq!((stream.as_str(), instance.as_str()), ("events", "r"));
                assert_eq!(writers, ["w1", "w2"]);
            }
            other => panic!("expected NotAWriter, got {other:?}"),
        }
    }
    let message = reader.next_id().await.unwrap_err().to_string();
    assert!(
        message.contains("\"r\"") && message.contains("not a writer"),
        "{message}"
    );

    let mut client = env.pool.get().await.unwrap();
    let mut tx = reader.transaction(&mut client).await.unwrap();
    assert!(matches!(tx.next_id().await, Err(Error::NotAWriter { .. })));
    assert!(
        matches!(tx.next_ids(0).await, Err(Error::NotAWriter { .. })),
        "not-a-writer is checked first"
    );
    let locks: i64 = tx
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(locks, 0, "no writer lock taken");
    assert_eq!(tx.xid(), None);
    drop(tx);
    assert_eq!(
        env.sequence_last("events_seq").await,
        1,
        "sequence not advanced"
    );
    assert_eq!(reader.unfinished_ids(), 0);
    assert!(env.recorded().await.is_empty());
    reader.check_invariants().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_ids_zero_is_invalid_argument_and_allocates_nothing() {
    // why: spec §5.1 FIX-4 — next_ids(0) (and its transaction form) returns the
    // invalid-argument error and allocates nothing; the original allocated one ID.
    let env = Env::new().await;
    let config = env.config("w1", &["w1"]);
    env.create_sequence(&config).await;
    let pool = env.db.pool(2).unwrap();
    let g = MultiWriterIdGenerator::postgres(pool.clone(), config)
        .await
        .unwrap();
    pool.close();
    for n in [0, MAX_BATCH + 1] {
        match g.next_ids(n).await {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains(&format!("n = {n}")), "{message}");
            }
            other => panic!("next_ids({n}): expected InvalidArgument, got {other:?}"),
        }
    }
    let mut client = env.pool.get().await.unwrap();
    let mut tx = g.transaction(&mut client).await.unwrap();
    assert!(matches!(
        tx.next_ids(0).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(tx.ids().is_empty());
    assert_eq!(tx.xid(), None, "nothing sent");
    assert_eq!(
        env.sequence_last("events_seq").await,
        1,
        "nothing allocated"
    );
    assert_eq!(g.unfinished_ids(), 0);
    // The next real allocation gets the first ID.
    assert_eq!(tx.next_id().await.unwrap(), 2);
    tx.rollback().await.unwrap();
    assert_eq!(g.unfinished_ids(), 0);
    g.check_invariants().unwrap();
}

// ----- identifiers (§2.3, FIX-7) ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_identifiers_rejected_before_io() {
    // why: spec §2.3 FIX-7 — table, column and sequence names are validated before any I/O;
    // the invalid-configuration error names the field, the value and the rule.
    let env = Env::new().await;
    let closed = env.db.pool(1).unwrap();
    closed.close();
    let base = || env.config("w1", &W12);
    let long = "x".repeat(64);
    let cases: Vec<(StreamConfig, &str, &str)> = vec![
        (
            base().table("x; DROP TABLE events", "instance_name", "stream_ordering"),
            "table",
            "x; DROP TABLE events",
        ),
        (
            base().table("events\"; DROP TABLE events; --", "i", "c"),
            "table",
            "events\"; DROP TABLE events; --",
        ),
        (base().table("a.b.c", "i", "c"), "table", "a.b.c"),
        (base().table(long.as_str(), "i", "c"), "table", &long),
        (
            base().table("events", "a\"b", "c"),
            "instance_column",
            "a\"b",
        ),
        (base().table("events", "i", "a'b"), "id_column", "a'b"),
        (
            base().table("events", "i", "public.c"),
            "id_column",
            "public.c",
        ),
        (base().sequence("a'b"), "sequence", "a'b"),
        (base().sequence("a\"b"), "sequence", "a\"b"),
        (
            base().sequence("events_seq'); DROP TABLE events; --"),
            "sequence",
            "events_seq'); DROP TABLE events; --",
        ),
        (
            StreamConfig::new("events\0", "w1")
                .table("events", "i", "c")
                .sequence("s"),
            "stream",
            "events\0",
        ),
        (base().writers(["w1", "w1"]), "writers", "w1"),
        (base().writers([""]), "writers", ""),
        (
            StreamConfig::new("events", "w1").sequence("s"),
            "tables",
            "",
        ),
        (
            StreamConfig::new("events", "w1").table("events", "i", "c"),
            "sequence",
            "",
        ),
    ];
    for (config, want_field, want_value) in cases {
        let err = MultiWriterIdGenerator::postgres(closed.clone(), config.clone())
            .await
            .unwrap_err();
        let message = err.to_string();
        match err {
            Error::InvalidConfig { field, value, rule } => {
                assert_eq!(
                    (field, value.as_str()),
                    (want_field, want_value),
                    "{message}"
                );
                assert!(!rule.is_empty());
                assert!(message.contains(want_field), "{message}");
            }
            other => panic!("{want_field} = {want_value:?}: expected InvalidConfig, got {other:?}"),
        }
        let client = env.pool.get().await.unwrap();
        let err = streamid::create_sequence(&**client, &config)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    }
    // Nothing reached the database: the table is intact, no sequence, no stream_positions.
    let client = env.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT to_regclass('events') IS NOT NULL, to_regclass('stream_positions') IS NULL, \
             (SELECT count(*) FROM pg_class WHERE relkind = 'S')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get(0), row.get(1), row.get(2)), (true, true, 0_i64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusual_valid_names_work_end_to_end() {
    // why: spec §2.3 — valid unusual identifiers (`$`, upper case, schema-qualified) are
    // quoted everywhere, including inside nextval/setval regclass literals.
    let env = Env::new().await;
    env.exec(
        "CREATE SCHEMA \"Odd$Schema\"; \
         CREATE TABLE \"Weird$Table\" (\"Who\" TEXT, \"Id$\" BIGINT NOT NULL); \
         CREATE TABLE \"Odd$Schema\".\"Name\" (\"Who\" TEXT, \"Id$\" BIGINT NOT NULL); \
         INSERT INTO \"Odd$Schema\".\"Name\" VALUES ('w1', 5), (NULL, 4)",
    )
    .await;
    const SEQ: &str = "\"Odd$Schema\".\"Seq$1\"";
    let config = |instance: &str| {
        StreamConfig::new("Weird stream ' \"", instance)
            .table("Weird$Table", "Who", "Id$")
            .table("Odd$Schema.Name", "Who", "Id$")
            .sequence("Odd$Schema.Seq$1")
            .writers(["w1", "w'2"])
    };
    env.create_sequence(&config("w1")).await;
    assert_eq!(raw_sequence(&env, SEQ).await, (5, true));

    let g = try_start(&env, config("w1")).await.unwrap();
    assert_eq!(g.current_token(), 5);
    let mut client = env.pool.get().await.unwrap();
    let mut tx = g.transaction(&mut client).await.unwrap();
    let id = tx.next_id().await.unwrap();
    assert_eq!(id, 6);
    tx.execute(
        "INSERT INTO \"Weird$Table\" (\"Who\", \"Id$\") VALUES ('w1', $1)",
        &[&id],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let a = g.next_id().await.unwrap();
    assert_eq!(a.id(), 7);
    client
        .execute(
            "INSERT INTO \"Odd$Schema\".\"Name\" (\"Who\", \"Id$\") VALUES ('w1', $1)",
            &[&a.id()],
        )
        .await
        .unwrap();
    a.complete().await.unwrap();
    assert_eq!(g.current_token(), 7);
    assert_eq!(
        env.recorded_for("Weird stream ' \"").await,
        map(&[("w1", 7)])
    );
    assert_eq!(g.max_allocated_token().await.unwrap(), 7);
    g.shutdown().await;
    drop(g);

    // The other writer (a quote in its instance name) starts; the scan reads both tables.
    let g2 = try_start(&env, config("w'2")).await.unwrap();
    assert_eq!(g2.current_token(), 7);
    assert_eq!(
        env.recorded_for("Weird stream ' \"").await,
        map(&[("w'2", 7), ("w1", 7)])
    );
    assert_eq!(g2.next_id().await.unwrap().id(), 8);
    assert_eq!(raw_sequence(&env, SEQ).await, (8, true));
}

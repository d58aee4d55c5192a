//! Bad input (issue 5 item 7) on PostgreSQL: wrong column types, hand-edited or corrupt
//! `stream_positions`, impossible allocation sizes, positions and tokens from the future,
//! malformed tokens and replication messages. Each must end in a typed error, a logged
//! drop or a repair — never a panic, never a row a reader skips.
//!
//! Covered elsewhere (RELIABILITY.md lists them): hostile identifiers and missing tables,
//! columns and sequences (`tests/suite/scenarios/names.rs`, `pg_config_errors.rs`),
//! positions ahead of the sequence at startup (`suite/scenarios/repair.rs`), token and
//! announcement parsing (`streamid-core/tests/token_props.rs`, `src/replication/codec.rs`,
//! `tests/fuzz_parsers.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod common;

use std::time::Duration;

use common::{Env, eventually};
use streamid::replication::PgNotify;
use streamid::{Error, MAX_BATCH, MultiWriterIdGenerator, MultiWriterStreamToken, StreamConfig};

fn config(env: &Env, instance: &str, writers: &[&str]) -> StreamConfig {
    env.config(instance, writers)
}

async fn try_start(env: &Env, config: StreamConfig) -> Result<MultiWriterIdGenerator, Error> {
    MultiWriterIdGenerator::postgres(env.pool.clone(), config).await
}

/// The error's operation, for `Error::Database`.
fn db_operation(err: &Error) -> &str {
    match err {
        Error::Database { operation, .. } => operation,
        other => panic!("expected a database error, got {other:?}"),
    }
}

// why: a stream whose ID column is TEXT cannot be ordered as IDs; PostgreSQL refuses the
// startup scan and the caller gets a typed error naming the step — nothing is allocated.
#[tokio::test]
async fn an_id_column_of_type_text_is_a_typed_startup_error() {
    let env = Env::new().await;
    env.exec(
        "CREATE TABLE text_ids (instance_name TEXT, stream_ordering TEXT); \
         INSERT INTO text_ids VALUES ('w1', '10'), ('w1', '9')",
    )
    .await;
    let config = config(&env, "w1", &["w1"]).table("text_ids", "instance_name", "stream_ordering");
    let client = env.pool.get().await.unwrap();
    let err = streamid::create_sequence(&**client, &config)
        .await
        .expect_err("create_sequence on a TEXT column");
    assert!(db_operation(&err).contains("table maximum"), "{err}");
    env.exec("CREATE SEQUENCE IF NOT EXISTS events_seq").await;
    let err = try_start(&env, config)
        .await
        .expect_err("startup on a TEXT column");
    assert!(db_operation(&err).contains("table maximum"), "{err}");
    assert_eq!(
        env.sequence_last("events_seq").await,
        0,
        "an ID was allocated"
    );
}

// why: a `stream_positions` made by hand with the wrong types is reported at startup, with
// the step, instead of being misread.
#[tokio::test]
async fn stream_positions_with_a_text_position_column_is_a_typed_startup_error() {
    let env = Env::new().await;
    env.exec(
        "CREATE TABLE stream_positions (stream_name TEXT NOT NULL, instance_name TEXT NOT NULL, \
         stream_id TEXT NOT NULL); \
         CREATE UNIQUE INDEX ON stream_positions (stream_name, instance_name)",
    )
    .await;
    let config = config(&env, "w1", &["w1"]);
    env.create_sequence(&config).await;
    let err = try_start(&env, config).await.expect_err("startup");
    assert!(db_operation(&err).contains("positions"), "{err}");
}

// why: `stream_positions` columns are NOT NULL; a hand edit that dropped the constraint and
// stored a NULL position must not be read as 0 (which would be harmless) or as anything
// else silently: startup refuses with a typed error naming the step.
#[tokio::test]
async fn a_null_recorded_position_is_a_typed_startup_error() {
    let env = Env::new().await;
    let w1 = env.start("w1", &["w1", "w2"]).await;
    w1.shutdown().await;
    drop(w1);
    env.exec(
        "ALTER TABLE stream_positions ALTER stream_id DROP NOT NULL; \
         INSERT INTO stream_positions VALUES ('events', 'w2', NULL)",
    )
    .await;
    let err = try_start(&env, config(&env, "w1", &["w1", "w2"]))
        .await
        .expect_err("startup");
    assert!(db_operation(&err).contains("positions"), "{err}");
}

// why: spec §9 — a backwards stream records negative positions. A hand edit with the wrong
// sign reads as a position below every ID: it holds the current token back (a stall, not a
// skip) until the writer it names announces or is recovered as dead (spec §12.6).
#[tokio::test]
async fn a_wrong_sign_on_a_backwards_stream_stalls_safely_until_recovery() {
    let env = Env::new().await;
    let backwards = |instance: &str| config(&env, instance, &["w1", "w2"]).backwards();
    env.create_sequence(&backwards("w1")).await;
    let w1 = try_start(&env, backwards("w1")).await.unwrap();
    let first = w1.next_id().await.unwrap();
    let id = first.ids()[0];
    assert!(id < 0);
    first.complete().await.unwrap();
    w1.shutdown().await;
    drop(w1);
    // w2 never ran; its row gets the wrong sign.
    env.exec("INSERT INTO stream_positions VALUES ('events', 'w2', 7)")
        .await;
    let w1 = try_start(&env, backwards("w1")).await.unwrap();
    // Backwards: the token covers IDs >= it. The next ID must stay uncovered while open.
    let next = w1.next_id().await.unwrap();
    let next_id = next.ids()[0];
    assert!(next_id < id);
    assert!(
        w1.current_token() > next_id,
        "the token {} covers {next_id}, still in flight",
        w1.current_token()
    );
    next.complete().await.unwrap();
    // w2 is provably dead (no lease): recovery moves it on and the stream flows again.
    eventually(
        "w2 is recovered and the token covers the new ID",
        async || w1.current_token() <= next_id,
    )
    .await;
    assert!(w1.gaps().keys().any(|(w, _)| w == "w2"), "{:?}", w1.gaps());
}

// Regression (found writing this file): a `stream_positions` row ahead of the sequence,
// edited in while the processes run, reached `advance` through the resynchronisation on
// reconnect (spec §12.4), so a reader's P jumped past IDs still to be handed out and the
// reader skipped their rows. Rows above the last allocated ID are now dropped, logged as
// "from the future". (At startup the same row is repaired: suite/scenarios/repair.rs.)
#[tokio::test]
async fn a_row_from_the_future_edited_in_at_runtime_is_dropped_by_resync() {
    let env = Env::new().await;
    let w1 = env.start("w1", &["w1"]).await;
    let reader = try_start(&env, config(&env, "r", &["w1"])).await.unwrap();
    for g in [&w1, &reader] {
        g.replicate(PgNotify::new(env.db.config.clone()));
    }
    let first = w1.next_id().await.unwrap();
    let id = first.ids()[0];
    first.complete().await.unwrap();
    eventually("the reader catches up", async || {
        reader.current_token() >= id
    })
    .await;
    env.exec("UPDATE stream_positions SET stream_id = 1000000 WHERE instance_name = 'w1'")
        .await;
    // Every listener reconnects and resynchronises from the edited table.
    env.exec(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'streamid-notify'",
    )
    .await;
    eventually("the reader reconnects", async || {
        reader
            .replication_status()
            .is_some_and(|s| s.connected && s.reconnects >= 1)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open = w1.next_id().await.unwrap();
    let in_flight = open.ids()[0];
    assert!(
        reader.current_token() < in_flight,
        "the reader's P {} passed ID {in_flight}, still in flight",
        reader.current_token()
    );
    open.complete().await.unwrap();
    eventually("the stream flows on", async || {
        reader.current_token() >= in_flight
    })
    .await;
}

// why: spec §5.1 FIX-4 — `n` outside 1..=MAX_BATCH is an invalid argument on both paths,
// and nothing is taken from the sequence. (`n` is a `usize`: negative values do not
// compile; 0 and MAX_BATCH + 1 are also in suite/scenarios/completion.rs.)
#[tokio::test]
async fn zero_and_huge_batch_sizes_are_invalid_arguments_and_allocate_nothing() {
    let env = Env::new().await;
    let w1 = env.start("w1", &["w1"]).await;
    let before = env.sequence_last("events_seq").await;
    for n in [0, MAX_BATCH + 1, usize::MAX] {
        assert!(
            matches!(w1.next_ids(n).await, Err(Error::InvalidArgument(_))),
            "next_ids({n})"
        );
        let mut client = env.pool.get().await.unwrap();
        let mut tx = w1.transaction(&mut client).await.unwrap();
        assert!(
            matches!(tx.next_ids(n).await, Err(Error::InvalidArgument(_))),
            "tx.next_ids({n})"
        );
        tx.rollback().await.unwrap();
    }
    assert_eq!(env.sequence_last("events_seq").await, before);
    assert_eq!(w1.unfinished_ids(), 0);
}

// why: spec §12.5 — positions and tokens from the future (hand-edited, restored) are
// bounded by the last allocated ID instead of blocking the caller; negative or zero ones
// are already covered.
#[tokio::test]
async fn waits_for_impossible_positions_and_tokens_return() {
    let env = Env::new().await;
    let w1 = env.start("w1", &["w1", "w2"]).await;
    let reader = try_start(&env, config(&env, "r", &["w1", "w2"]))
        .await
        .unwrap();
    let long = Duration::from_secs(30);
    let started = std::time::Instant::now();
    for position in [i64::MIN, -1, 0] {
        assert!(
            reader
                .wait_for_persisted(position, long)
                .await
                .unwrap()
                .is_reached()
        );
        assert!(
            reader
                .wait_for_writer("w1", position, long)
                .await
                .unwrap()
                .is_reached()
        );
    }
    // Nothing was written: the maximum allocated is the starting position, already covered.
    assert!(
        reader
            .wait_for_persisted(i64::MAX, long)
            .await
            .unwrap()
            .is_reached()
    );
    assert!(
        reader
            .wait_for_writer("w2", i64::MAX, long)
            .await
            .unwrap()
            .is_reached()
    );
    let future = MultiWriterStreamToken::from_stream(i64::MAX - 1);
    assert!(
        reader
            .wait_for_token(&future, long)
            .await
            .unwrap()
            .is_reached()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a wait blocked"
    );
    drop(w1);
}

// why: spec §11.5 — malformed tokens are typed errors, never panics, whatever the bytes
// (`m5~` is valid: empty parts are skipped).
#[tokio::test]
async fn malformed_tokens_are_typed_errors() {
    let env = Env::new().await;
    let w1 = env.start("w1", &["w1"]).await;
    for text in [
        "",
        "garbage",
        "m",
        "m5~x.7",
        "m5~1.7~1.8",
        "s-5",
        "s99999999999999999999",
        "m5~2147483647.9223372036854775807",
        "m5~99999.7",
        "\u{0}",
        "m5~1.\u{1F600}",
    ] {
        match w1.parse_token(text).await {
            Err(Error::InvalidToken(_)) => {}
            other => panic!("{text:?}: expected InvalidToken, got {other:?}"),
        }
    }
}

// why: spec §12.3–§12.4 — the transport is lossy and untyped; a message that is not an
// announcement is logged, counted and dropped, and moves nothing. Well-formed messages for
// another stream or an unlisted instance are ignored.
#[tokio::test]
async fn malformed_replication_messages_are_counted_and_dropped() {
    let env = Env::new().await;
    let w1 = env.start("w1", &["w1"]).await;
    let reader = try_start(&env, config(&env, "r", &["w1"])).await.unwrap();
    reader.replicate(PgNotify::new(env.db.config.clone()));
    eventually("the reader listens", async || {
        reader.replication_status().is_some_and(|s| s.connected)
    })
    .await;
    let before = (reader.current_token(), reader.positions());
    let malformed = [
        "garbage",
        "{}",
        r#"{"v":1,"stream":"events","instance":"w1","position":-5,"epoch":"1"}"#,
        r#"{"v":1,"stream":"events","instance":"w1","position":1e9,"epoch":"1"}"#,
        r#"{"v":9,"stream":"events","instance":"w1","position":999,"epoch":"1"}"#,
        r#"{"v":1,"stream":"events","instance":"","position":999,"epoch":"1"}"#,
    ];
    let ignored = [
        r#"{"v":1,"stream":"other","instance":"w1","position":999,"epoch":"1"}"#,
        r#"{"v":1,"stream":"events","instance":"intruder","position":999,"epoch":"1"}"#,
    ];
    let client = env.pool.get().await.unwrap();
    for message in malformed.iter().chain(&ignored) {
        client
            .execute("SELECT pg_notify('streamid', $1)", &[message])
            .await
            .unwrap();
    }
    eventually("every malformed message is counted", async || {
        reader
            .replication_status()
            .is_some_and(|s| s.malformed >= malformed.len() as u64)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!((reader.current_token(), reader.positions()), before);
    assert_eq!(
        reader.replication_status().unwrap().malformed,
        malformed.len() as u64
    );
    drop(w1);
}

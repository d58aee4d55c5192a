//! Identifiers and missing objects (spec §2.3 FIX-7, §2.4, §4.2 step 4): hostile names
//! refused before I/O, unusual valid names quoted everywhere, missing tables and columns
//! reported with the statement that creates them.

use streamid::{Error, StreamConfig};

use super::{W12, map};
use crate::harness::{Harness, Val, quiet};

// why: spec §2.3 FIX-7 — table, column and sequence names are validated before any I/O;
// the invalid-configuration error names the field, the value and the rule.
pub async fn hostile_identifiers_rejected_before_io(h: &Harness) {
    let base = || h.config("w1", &W12);
    let long = "x".repeat(64);
    let mut cases: Vec<(StreamConfig, &str, &str)> = vec![
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
    ];
    let no_sequence = StreamConfig::new("events", "w1").table("events", "i", "c");
    match h {
        Harness::Pg(_) => cases.push((no_sequence, "sequence", "")),
        Harness::Sqlite(_) => {
            // SQLite needs no sequence (spec §4.6): the configuration is valid, so the
            // unreachable file is the first thing to fail.
            let err = h.try_start_unreachable(no_sequence).await.unwrap_err();
            assert!(matches!(err, Error::Sqlite { .. }), "{err:?}");
        }
    }
    for (config, want_field, want_value) in cases {
        let err = h.try_start_unreachable(config.clone()).await.unwrap_err();
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
        if let Harness::Pg(env) = h {
            let client = env.pool.get().await.unwrap();
            let err = streamid::create_sequence(&**client, &config)
                .await
                .unwrap_err();
            assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
        }
    }
    // Nothing reached the database: the table is intact, no sequence, no stream_positions.
    assert!(h.event_ids().await.is_empty());
    assert!(h.recorded().await.is_empty());
    match h {
        Harness::Pg(env) => {
            let client = env.pool.get().await.unwrap();
            let row = client
                .query_one(
                    "SELECT to_regclass('stream_positions') IS NULL, \
                     (SELECT count(*) FROM pg_class WHERE relkind = 'S')",
                    &[],
                )
                .await
                .unwrap();
            assert_eq!((row.get(0), row.get(1)), (true, 0_i64));
        }
        Harness::Sqlite(env) => {
            let tables = h
                .query_i64(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                    &[],
                )
                .await;
            assert_eq!(tables, 1, "only events");
            assert!(!env.dir.join("missing-dir").exists());
        }
    }
}

// why: spec §2.3 — valid unusual identifiers (`$`, upper case; on PostgreSQL also
// schema-qualified, inside nextval/setval regclass literals) are quoted everywhere; stream
// and instance names with quotes are bound, never spliced.
pub async fn unusual_valid_names_work_end_to_end(h: &Harness) {
    // SQLite has no schemas (a qualified name would name an attached database).
    let (setup, second_table, second_sql, sequence, read_sequence) = match h {
        Harness::Pg(_) => (
            "CREATE SCHEMA \"Odd$Schema\"; \
             CREATE TABLE \"Weird$Table\" (\"Who\" TEXT, \"Id$\" BIGINT NOT NULL); \
             CREATE TABLE \"Odd$Schema\".\"Name\" (\"Who\" TEXT, \"Id$\" BIGINT NOT NULL); \
             INSERT INTO \"Odd$Schema\".\"Name\" VALUES ('w1', 5), (NULL, 4)",
            "Odd$Schema.Name",
            "\"Odd$Schema\".\"Name\"",
            "Odd$Schema.Seq$1",
            "SELECT last_value FROM \"Odd$Schema\".\"Seq$1\"",
        ),
        Harness::Sqlite(_) => (
            "CREATE TABLE \"Weird$Table\" (\"Who\" TEXT, \"Id$\" BIGINT NOT NULL); \
             CREATE TABLE \"Other$Table\" (\"Who\" TEXT, \"Id$\" BIGINT NOT NULL); \
             INSERT INTO \"Other$Table\" VALUES ('w1', 5), (NULL, 4)",
            "Other$Table",
            "\"Other$Table\"",
            "Seq$1",
            "SELECT last_value FROM streamid_sequences WHERE name = 'Seq$1'",
        ),
    };
    h.exec(setup).await;
    let stream = "Weird stream ' \"";
    let config = |instance: &str| {
        quiet(
            StreamConfig::new(stream, instance)
                .table("Weird$Table", "Who", "Id$")
                .table(second_table, "Who", "Id$")
                .sequence(sequence)
                .writers(["w1", "w'2"]),
        )
    };
    h.prepare(&config("w1")).await;

    let g = h.start_config(config("w1")).await;
    assert_eq!(g.current_token(), 5);
    assert_eq!(h.query_i64(read_sequence, &[]).await, 5);
    let mut conn = h.conn().await;
    let mut tx = conn.begin(&g).await.unwrap();
    let id = tx.next_id().await.unwrap();
    assert_eq!(id, 6);
    let sql = format!(
        "INSERT INTO \"Weird$Table\" (\"Who\", \"Id$\") VALUES ('w1', {})",
        h.p(1)
    );
    tx.execute(&sql, &[Val::Int(id)]).await;
    tx.commit().await.unwrap();
    let a = g.next_id().await.unwrap();
    assert_eq!(a.id(), 7);
    let sql = format!(
        "INSERT INTO {second_sql} (\"Who\", \"Id$\") VALUES ('w1', {})",
        h.p(1)
    );
    h.execute(&sql, &[a.id().into()]).await;
    a.complete().await.unwrap();
    assert_eq!(g.current_token(), 7);
    assert_eq!(h.recorded_for(stream).await, map(&[("w1", 7)]));
    assert_eq!(g.max_allocated_token().await.unwrap(), 7);
    g.shutdown().await;
    drop(g);

    // The other writer (a quote in its instance name) starts; the scan reads both tables.
    let g2 = h.start_config(config("w'2")).await;
    assert_eq!(g2.current_token(), 7);
    assert_eq!(h.recorded_for(stream).await, map(&[("w'2", 7), ("w1", 7)]));
    assert_eq!(g2.next_id().await.unwrap().id(), 8);
    assert_eq!(h.query_i64(read_sequence, &[]).await, 8);
}

// why: spec §2.4 (missing object: "the message gives the statements") and §4.2 step 4 — a
// missing backing table or column is a missing-object error, not a raw database error,
// and the statement in the hint creates it.
pub async fn missing_table_and_column_give_missing_object_with_statements(h: &Harness) {
    // The sequence/counter exists: only the table or column is missing.
    h.set_counter(1).await;
    let cases = [
        (
            StreamConfig::new("events", "w1")
                .table("nope", "instance_name", "stream_ordering")
                .sequence("events_seq"),
            "table",
            "nope",
        ),
        (
            h.config("w1", &W12)
                .table("events", "instance_name", "no_such_column"),
            "column",
            "no_such_column",
        ),
        (
            h.config("w1", &W12)
                .table("events", "who", "stream_ordering"),
            "column",
            "who",
        ),
    ];
    for (config, want_kind, want_name) in cases {
        let err = h.try_start(config.clone()).await.unwrap_err();
        let message = err.to_string();
        let Error::MissingObject { kind, name, hint } = err else {
            panic!("expected MissingObject, got {err:?}");
        };
        assert_eq!(kind, want_kind, "{message}");
        assert!(name.contains(want_name), "{name}");
        assert!(message.contains("does not exist"), "{message}");
        if want_kind == "table" {
            assert!(hint.contains("CREATE TABLE"), "{hint}");
        }
        if let Harness::Pg(env) = h {
            assert!(hint.contains("BIGINT"), "{hint}");
            assert!(hint.contains(PG_CREATE_SEQ), "{hint}");
            if want_name == "who" {
                // create_sequence reads only the ID column: a missing instance column is
                // found only by the startup scan.
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
    }
    assert!(h.recorded().await.is_empty());

    // The table hint's statements are executable as given.
    let config = quiet(
        StreamConfig::new("events", "w1")
            .table("nope", "instance_name", "stream_ordering")
            .sequence("events_seq")
            .writers(W12),
    );
    let Err(Error::MissingObject { hint, .. }) = h.try_start(config.clone()).await else {
        panic!("expected MissingObject");
    };
    let create = hint
        .lines()
        .find(|l| l.starts_with("CREATE TABLE"))
        .expect("a CREATE TABLE statement");
    let id_type = if h.is_sqlite() { "INTEGER" } else { "BIGINT" };
    assert_eq!(
        create,
        format!(
            "CREATE TABLE \"nope\" (\"instance_name\" TEXT, \"stream_ordering\" {id_type} NOT NULL);"
        )
    );
    h.exec(create).await;
    if h.is_sqlite() {
        assert!(
            !hint.contains("run:\n"),
            "no sequence to create on SQLite: {hint}"
        );
    } else {
        let (_, script) = hint.split_once("run:\n").expect("the §10.4 statements");
        h.exec(script).await;
    }
    let g = h.start_config(config).await;
    assert_eq!(g.next_id().await.unwrap().id(), 2);
}

const PG_CREATE_SEQ: &str =
    "CREATE SEQUENCE IF NOT EXISTS \"events_seq\" AS BIGINT INCREMENT BY 1 NO CYCLE CACHE 1";

//! The independent audit (`streamid::Audit`) on real databases: writers and a reader run in
//! this process (in-process replication), the reader records observations the way a reader
//! process would, and the audit reads the tables directly.
//!
//! - a clean run passes, and every committed row was seen;
//! - a row inserted after the fact below a position the reader acted on is reported as a
//!   miss, with its ID;
//! - an ID held by two instances is reported as handed out twice.
//!
//! Same scenario on PostgreSQL (private cluster from the testkit) and on SQLite.

// A test binary: panicking on a failed step is how it reports failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use deadpool_postgres::Pool;
use streamid::replication::InProcess;
use streamid::{Audit, MultiWriterIdGenerator, Observation, StreamConfig, StreamTable, Violation};

const WRITERS: [&str; 2] = ["w1", "w2"];

/// A directory of its own under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "streamid-verify-{name}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
const WRITES: usize = 60;

/// Where the stream lives.
#[derive(Clone)]
enum Db {
    Postgres(Pool),
    Sqlite(PathBuf),
}

impl Db {
    fn config(&self, instance: &str) -> StreamConfig {
        let config = StreamConfig::new("events", instance)
            .table("events", "instance_name", "stream_ordering")
            .writers(WRITERS)
            .position_write_interval(Duration::from_millis(20))
            .busy_timeout(Duration::from_secs(30));
        match self {
            Db::Postgres(_) => config.sequence("events_seq"),
            Db::Sqlite(_) => config,
        }
    }

    async fn generator(&self, instance: &str) -> MultiWriterIdGenerator {
        let config = self.config(instance);
        match self {
            Db::Postgres(pool) => MultiWriterIdGenerator::postgres(pool.clone(), config).await,
            Db::Sqlite(path) => MultiWriterIdGenerator::sqlite(path, config).await,
        }
        .expect("generator start")
    }

    /// One write: allocate, wait a little (so commits land out of order), insert, then
    /// commit, or roll back every fifth.
    async fn write(&self, generator: &MultiWriterIdGenerator, n: usize) {
        let instance = generator.instance_name().to_owned();
        let delay = Duration::from_millis((n as u64 * 7 + instance.len() as u64) % 5);
        let rollback = n % 5 == 3;
        match self {
            Db::Postgres(pool) => {
                let mut client = pool.get().await.expect("client");
                let mut tx = generator.transaction(&mut client).await.expect("begin");
                let id = tx.next_id().await.expect("allocate");
                tokio::time::sleep(delay).await;
                tx.execute(
                    "INSERT INTO events (stream_ordering, instance_name) VALUES ($1, $2)",
                    &[&id, &instance],
                )
                .await
                .expect("insert");
                if rollback {
                    tx.rollback().await.expect("rollback");
                } else {
                    tx.commit().await.expect("commit");
                }
            }
            Db::Sqlite(_) => {
                let mut tx = generator.sqlite_transaction().await.expect("begin");
                let id = tx.next_id().await.expect("allocate");
                tokio::time::sleep(delay).await;
                tx.execute(
                    "INSERT INTO events (stream_ordering, instance_name) VALUES (?1, ?2)",
                    (id, instance),
                )
                .await
                .expect("insert");
                if rollback {
                    tx.rollback().await.expect("rollback");
                } else {
                    tx.commit().await.expect("commit");
                }
            }
        }
    }

    /// IDs in `after < id <= upto`, ascending.
    async fn read(&self, after: i64, upto: i64) -> Vec<i64> {
        match self {
            Db::Postgres(pool) => {
                let client = pool.get().await.expect("client");
                client
                    .query(
                        "SELECT stream_ordering FROM events WHERE stream_ordering > $1 \
                         AND stream_ordering <= $2 ORDER BY stream_ordering",
                        &[&after, &upto],
                    )
                    .await
                    .expect("read")
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            }
            Db::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("open");
                let mut stmt = conn
                    .prepare(
                        "SELECT stream_ordering FROM events WHERE stream_ordering > ?1 \
                         AND stream_ordering <= ?2 ORDER BY stream_ordering",
                    )
                    .expect("prepare");
                stmt.query_map([after, upto], |r| r.get(0))
                    .expect("read")
                    .collect::<Result<_, _>>()
                    .expect("rows")
            }
        }
    }

    /// Inserts a row behind everyone's back (the planted violations).
    async fn plant(&self, id: i64, instance: &str) {
        match self {
            Db::Postgres(pool) => {
                let client = pool.get().await.expect("client");
                client
                    .execute(
                        "INSERT INTO events (stream_ordering, instance_name) VALUES ($1, $2)",
                        &[&id, &instance],
                    )
                    .await
                    .expect("plant");
            }
            Db::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("open");
                conn.busy_timeout(Duration::from_secs(30)).expect("busy");
                conn.execute(
                    "INSERT INTO events (stream_ordering, instance_name) VALUES (?1, ?2)",
                    (id, instance),
                )
                .expect("plant");
            }
        }
    }

    async fn audit(&self, observations: &[Observation]) -> streamid::VerifyReport {
        let audit = Audit::new(
            StreamTable::new("events", "instance_name", "stream_ordering").expect("names"),
        );
        match self {
            Db::Postgres(pool) => audit.postgres(pool, observations).await,
            Db::Sqlite(path) => audit.sqlite(path, observations).await,
        }
        .expect("audit")
    }
}

/// Writers write while the reader tails `id <= persisted_upto_position()` and records an
/// observation per round; returns the observations, the committed IDs and every allocated
/// ID without a row (the rolled-back ones).
async fn run(db: &Db) -> (Vec<Observation>, BTreeSet<i64>, Vec<i64>) {
    let bus = InProcess::new();
    let mut writers = Vec::new();
    for name in WRITERS {
        let g = db.generator(name).await;
        g.replicate(bus.clone());
        writers.push(g);
    }
    let reader = db.generator("reader").await;
    reader.replicate(bus.clone());

    let mut tasks = tokio::task::JoinSet::new();
    for g in &writers {
        let (g, db) = (g.clone(), db.clone());
        tasks.spawn(async move {
            for n in 0..WRITES {
                db.write(&g, n).await;
            }
        });
    }
    let mut observations = Vec::new();
    let mut last = 0;
    let mut writing = true;
    loop {
        let position = reader.persisted_upto_position();
        if position > last {
            let seen = db.read(last, position).await;
            observations.push(Observation::new("reader", position, seen));
            last = position;
        }
        if writing {
            writing = !tasks.is_empty();
            while let Some(done) = tasks.try_join_next() {
                done.expect("writer task");
            }
        } else if position >= reader.max_allocated_token().await.expect("max") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let committed: BTreeSet<i64> = db.read(0, i64::MAX).await.into_iter().collect();
    let gaps = (2..=last).filter(|id| !committed.contains(id)).collect();
    for g in writers.iter().chain([&reader]) {
        g.shutdown().await;
    }
    (observations, committed, gaps)
}

async fn audit_scenario(db: Db) {
    let (observations, committed, gaps) = run(&db).await;
    assert_eq!(committed.len(), WRITERS.len() * (WRITES - WRITES / 5));
    assert!(observations.len() > 1);

    let clean = db.audit(&observations).await;
    assert!(clean.is_ok(), "{clean}");
    assert_eq!(clean.rows, committed.len() as u64);
    assert_eq!(clean.misses, 0);
    let reader = &clean.readers[0];
    assert!(reader.all_rows_seen, "{clean}");
    assert_eq!(reader.rows_beyond_final_position, 0);

    // A row appears below a position the reader acted on: take a rolled-back ID, so it is
    // not a duplicate, and write its row after the fact.
    let late = *gaps.first().expect("some writes rolled back");
    db.plant(late, "w2").await;
    let missed = db.audit(&observations).await;
    assert!(!missed.is_ok());
    assert_eq!(missed.misses, 1, "{missed}");
    assert!(
        matches!(&missed.violations[0], Violation::Miss { id, reader, .. } if *id == late && reader == "reader"),
        "{missed}"
    );
    assert!(
        missed.to_string().contains(&format!("row {late} ")),
        "{missed}"
    );

    // An ID handed out twice: a second row for a committed ID, by the other writer.
    let twice = *committed.iter().next().expect("a committed row");
    db.plant(twice, "someone-else").await;
    let duplicated = db.audit(&observations).await;
    assert_eq!(duplicated.ids_handed_out_twice, 1, "{duplicated}");
    assert!(duplicated.violations.iter().any(
        |v| matches!(v, Violation::IdHandedOutTwice { id, instances } if *id == twice && instances.len() == 2)
    ));
    let json = serde_json::to_value(&duplicated).expect("the report serialises");
    assert_eq!(json["misses"], 1);
    // Database checks are listed first, then each reader's.
    assert_eq!(json["violations"][0]["kind"], "id_handed_out_twice");
    assert_eq!(json["violations"][1]["kind"], "miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_audit_passes_a_clean_run_and_reports_planted_violations() {
    let db = streamid_testkit::fresh_database()
        .await
        .unwrap_or_else(|e| panic!("cannot start PostgreSQL for the tests: {e}"));
    let pool = db.pool(16).expect("pool");
    let client = pool.get().await.expect("client");
    client
        .batch_execute("CREATE TABLE events (stream_ordering BIGINT NOT NULL, instance_name TEXT)")
        .await
        .expect("create table");
    let db = Db::Postgres(pool.clone());
    streamid::create_sequence(&**client, &db.config("setup"))
        .await
        .expect("sequence");
    drop(client);
    audit_scenario(db).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_audit_passes_a_clean_run_and_reports_planted_violations() {
    let dir = TempDir::new("sqlite");
    let path = dir.path().join("events.db");
    rusqlite::Connection::open(&path)
        .expect("create the file")
        .execute_batch("CREATE TABLE events (stream_ordering INTEGER NOT NULL, instance_name TEXT)")
        .expect("create table");
    audit_scenario(Db::Sqlite(path)).await;
}

#[tokio::test]
async fn auditing_a_missing_table_or_file_is_a_typed_error() {
    let dir = TempDir::new("missing");
    let audit = Audit::new(StreamTable::new("nowhere", "i", "id").expect("names"));
    let missing_file = audit.sqlite(dir.path().join("absent.db"), &[]).await;
    assert!(
        matches!(missing_file, Err(streamid::Error::Sqlite { .. })),
        "{missing_file:?}"
    );
    assert!(
        !dir.path().join("absent.db").exists(),
        "the audit created the file"
    );
    let path = dir.path().join("empty.db");
    rusqlite::Connection::open(&path).expect("create");
    let missing_table = audit.sqlite(&path, &[]).await;
    assert!(
        matches!(
            missing_table,
            Err(streamid::Error::MissingObject { kind: "table", .. })
        ),
        "{missing_table:?}"
    );
}

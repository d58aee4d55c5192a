//! Shared set-up for the PostgreSQL tests: a fresh database per test (private cluster from
//! the testkit, or `DATABASE_URL`), a backing table, a sequence and config helpers. The
//! behaviour suite's harness (`suite/harness.rs`) builds its PostgreSQL side on [`Env`].
// Test support: each binary uses a different subset, and failing fast with `expect` is the
// point of a harness.
#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use deadpool_postgres::Pool;
use streamid::{MultiWriterIdGenerator, StreamConfig};
use streamid_testkit::TestDb;

/// A fresh database with table `events(stream_ordering BIGINT, instance_name TEXT)` and
/// sequence `events_seq` created by `streamid::create_sequence`.
pub struct Env {
    pub db: TestDb,
    pub pool: Pool,
}

impl Env {
    pub async fn new() -> Env {
        let db = streamid_testkit::fresh_database()
            .await
            .unwrap_or_else(|e| panic!("cannot start PostgreSQL for the tests: {e}"));
        let pool = db.pool(32).expect("pool");
        let env = Env { db, pool };
        env.exec(
            "CREATE TABLE events (stream_ordering BIGINT NOT NULL, instance_name TEXT, \
             payload TEXT)",
        )
        .await;
        env
    }

    /// A config for stream `events` seen from `instance`, with the given writers.
    pub fn config(&self, instance: &str, writers: &[&str]) -> StreamConfig {
        StreamConfig::new("events", instance)
            .table("events", "instance_name", "stream_ordering")
            .sequence("events_seq")
            .writers(writers.iter().copied())
            .position_write_interval(Duration::from_millis(50))
            .writer_lock_timeout(Duration::from_secs(10))
    }

    pub async fn create_sequence(&self, config: &StreamConfig) {
        let client = self.pool.get().await.expect("client");
        streamid::create_sequence(&**client, config)
            .await
            .expect("create_sequence");
    }

    /// Creates the sequence (if needed) and starts a generator.
    pub async fn start(&self, instance: &str, writers: &[&str]) -> MultiWriterIdGenerator {
        let config = self.config(instance, writers);
        self.create_sequence(&config).await;
        MultiWriterIdGenerator::postgres(self.pool.clone(), config)
            .await
            .expect("generator start")
    }

    pub async fn exec(&self, sql: &str) {
        let client = self.pool.get().await.expect("client");
        client
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn insert(&self, id: i64, instance: Option<&str>) {
        let client = self.pool.get().await.expect("client");
        client
            .execute(
                "INSERT INTO events (stream_ordering, instance_name) VALUES ($1, $2)",
                &[&id, &instance],
            )
            .await
            .expect("insert");
    }

    /// `stream_positions` rows of stream `events`, by instance.
    pub async fn recorded(&self) -> std::collections::BTreeMap<String, i64> {
        self.recorded_for("events").await
    }

    pub async fn recorded_for(&self, stream: &str) -> std::collections::BTreeMap<String, i64> {
        let client = self.pool.get().await.expect("client");
        client
            .query(
                "SELECT instance_name, stream_id FROM stream_positions WHERE stream_name = $1",
                &[&stream],
            )
            .await
            .expect("read stream_positions")
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// The last value the sequence handed out.
    pub async fn sequence_last(&self, seq: &str) -> i64 {
        let client = self.pool.get().await.expect("client");
        let row = client
            .query_one(&format!("SELECT last_value, is_called FROM {seq}"), &[])
            .await
            .expect("read sequence");
        let (last, called): (i64, bool) = (row.get(0), row.get(1));
        if called { last } else { last - 1 }
    }
}

/// Polls `cond` until it holds, failing with `what` after 10 s (no timing assertions: the
/// bound only keeps a broken test from hanging).
pub async fn eventually(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Records every ERROR event `streamid` logs. The library logs at ERROR only for its own
/// bugs (an ID finished twice or never registered, an in-doubt transaction without an id,
/// a stopped resolver), which the tracker otherwise absorbs silently; tests that sweep or
/// stress call [`assert_no_streamid_errors`]. One global subscriber per test binary, so
/// an error in any test of the binary fails the next check of every test.
pub(crate) mod error_log {
    use std::fmt::Write as _;
    use std::sync::{Mutex, Once, PoisonError};

    use tracing::field::{Field, Visit};
    use tracing::{Event, Level, Metadata, Subscriber, span};

    static ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct ErrorLog;

    impl Subscriber for ErrorLog {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            *metadata.level() == Level::ERROR && metadata.target().starts_with("streamid")
        }
        fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
            span::Id::from_u64(1)
        }
        fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
        fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut fields = Fields(format!("{}: ", event.metadata().target()));
            event.record(&mut fields);
            ERRORS
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(fields.0);
        }
        fn enter(&self, _: &span::Id) {}
        fn exit(&self, _: &span::Id) {}
    }

    struct Fields(String);

    impl Visit for Fields {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, "{}={value:?} ", field.name());
        }
    }

    /// Installs the recorder (idempotent).
    pub(crate) fn install() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            if let Err(e) = tracing::subscriber::set_global_default(ErrorLog) {
                panic!("another global tracing subscriber is set in this test binary: {e}");
            }
        });
    }

    /// ERRORs that other tests of the same binary provoke on purpose (the recorder is
    /// global to the binary): the sequence set back to simulate a crash.
    const PROVOKED: [&str; 1] = ["the sequence went backwards"];

    /// Fails if `streamid` logged an ERROR since the binary started (other than those
    /// other tests provoke on purpose).
    pub(crate) fn assert_no_streamid_errors() {
        let errors = ERRORS.lock().unwrap_or_else(PoisonError::into_inner);
        let unexpected: Vec<&String> = errors
            .iter()
            .filter(|e| !PROVOKED.iter().any(|p| e.contains(p)))
            .collect();
        assert!(
            unexpected.is_empty(),
            "streamid logged errors: {unexpected:#?}"
        );
    }
}

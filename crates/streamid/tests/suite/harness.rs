//! The two backends behind one interface, so that every scenario runs unchanged on each
//! (style item 6): a fresh stream environment, generators started on it, rows written
//! through each backend's transaction type, raw rows, `stream_positions` and the
//! sequence (PostgreSQL) or counter row (SQLite, spec §4.6).
//!
//! Every environment holds table `events(stream_ordering BIGINT NOT NULL, instance_name
//! TEXT, payload TEXT)`; configurations name stream `events` and sequence/counter
//! `events_seq`. Scenario SQL is shared: write placeholders with [`Harness::p`] and bind
//! [`Val`]s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use streamid::{Error, MultiWriterIdGenerator, SqliteTransaction, StreamConfig, StreamTransaction};

use crate::common::Env;

/// The generator type, shortened for scenario signatures.
pub type Gen = MultiWriterIdGenerator;

/// A fresh stream environment on one backend.
// One per test: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Harness {
    /// A fresh database on the testkit's cluster (or `DATABASE_URL`), with the sequence
    /// created by `streamid::create_sequence` when a generator starts.
    Pg(Env),
    /// A fresh database file in a temporary directory, deleted on drop.
    Sqlite(SqliteEnv),
}

/// A SQLite database file of its own; the directory is removed on drop.
pub struct SqliteEnv {
    pub dir: PathBuf,
    pub path: PathBuf,
}

impl Drop for SqliteEnv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SqliteEnv {
    fn new() -> SqliteEnv {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "streamid-suite-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the temporary directory");
        let path = dir.join("events.db");
        let env = SqliteEnv { dir, path };
        env.open()
            .execute_batch(EVENTS_DDL)
            .expect("create table events");
        env
    }

    /// A raw connection of the test itself (not the generator's), waiting up to 10 s for
    /// the write lock.
    fn open(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(&self.path).expect("open the SQLite file");
        conn.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        conn
    }

    /// Runs `f` on a raw connection on the blocking pool.
    async fn with<T, F>(&self, f: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(&rusqlite::Connection) -> T + Send + 'static,
    {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open(&path).expect("open the SQLite file");
            conn.busy_timeout(Duration::from_secs(10))
                .expect("busy timeout");
            f(&conn)
        })
        .await
        .expect("a SQLite task of the harness panicked")
    }
}

/// The backing table's layout, valid on both backends.
const EVENTS_DDL: &str = "CREATE TABLE events (stream_ordering BIGINT NOT NULL, \
    instance_name TEXT, payload TEXT)";

/// `stream_positions` as the library creates it (spec §8.1), valid on both backends, for
/// seeding rows before the first startup.
const POSITIONS_DDL: &str = "\
    CREATE TABLE IF NOT EXISTS stream_positions (stream_name TEXT NOT NULL, \
        instance_name TEXT NOT NULL, stream_id BIGINT NOT NULL); \
    CREATE UNIQUE INDEX IF NOT EXISTS stream_positions_idx \
        ON stream_positions (stream_name, instance_name)";

/// Turns dead-writer recovery (spec §12.6) off. The scenarios play several processes of a
/// stream in one test, and many list writers that never start or that "crashed" (dropped
/// generators): with recovery on, every live process would prove those writers dead after
/// `reclaim_interval` and raise them to fresh IDs, taking IDs and moving positions at
/// moments that depend on timing. Recovery has tests of its own.
pub fn quiet(config: StreamConfig) -> StreamConfig {
    config.reclaim_dead_writers(false)
}

/// A parameter of shared scenario SQL.
#[derive(Debug, Clone)]
pub enum Val {
    Int(i64),
    Text(Option<String>),
}

impl From<i64> for Val {
    fn from(v: i64) -> Val {
        Val::Int(v)
    }
}

impl From<&str> for Val {
    fn from(v: &str) -> Val {
        Val::Text(Some(v.to_owned()))
    }
}

impl From<Option<&str>> for Val {
    fn from(v: Option<&str>) -> Val {
        Val::Text(v.map(str::to_owned))
    }
}

type PgParam = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;

fn pg_params(params: &[Val]) -> Vec<PgParam> {
    params
        .iter()
        .map(|v| match v {
            Val::Int(i) => Box::new(*i) as PgParam,
            Val::Text(t) => Box::new(t.clone()) as PgParam,
        })
        .collect()
}

fn pg_refs(params: &[PgParam]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| &**p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

fn sqlite_params(params: &[Val]) -> rusqlite::ParamsFromIter<Vec<rusqlite::types::Value>> {
    rusqlite::params_from_iter(
        params
            .iter()
            .map(|v| match v {
                Val::Int(i) => rusqlite::types::Value::Integer(*i),
                Val::Text(Some(t)) => rusqlite::types::Value::Text(t.clone()),
                Val::Text(None) => rusqlite::types::Value::Null,
            })
            .collect::<Vec<_>>(),
    )
}

impl Harness {
    pub async fn postgres() -> Harness {
        Harness::Pg(Env::new().await)
    }

    pub async fn sqlite() -> Harness {
        Harness::Sqlite(SqliteEnv::new())
    }

    pub fn is_sqlite(&self) -> bool {
        matches!(self, Harness::Sqlite(_))
    }

    /// The backend's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Harness::Pg(_) => "postgres",
            Harness::Sqlite(_) => "sqlite",
        }
    }

    /// Placeholder `n` of shared SQL: `$n` on PostgreSQL, `?n` on SQLite.
    pub fn p(&self, n: usize) -> String {
        match self {
            Harness::Pg(_) => format!("${n}"),
            Harness::Sqlite(_) => format!("?{n}"),
        }
    }

    /// Stream `events` over table `events`, seen from `instance`, with the given writers;
    /// a short position write tick; see [`quiet`].
    pub fn config(&self, instance: &str, writers: &[&str]) -> StreamConfig {
        quiet(
            StreamConfig::new("events", instance)
                .table("events", "instance_name", "stream_ordering")
                .sequence("events_seq")
                .writers(writers.iter().copied())
                .position_write_interval(Duration::from_millis(50))
                .writer_lock_timeout(Duration::from_secs(10))
                .busy_timeout(Duration::from_secs(10)),
        )
    }

    /// What an operator runs before the first start: `create_sequence` on PostgreSQL
    /// (above every row, never backwards); nothing on SQLite, whose startup creates the
    /// counter row (spec §4.6).
    pub async fn prepare(&self, config: &StreamConfig) {
        if let Harness::Pg(env) = self {
            env.create_sequence(config).await;
        }
    }

    pub async fn try_start(&self, config: StreamConfig) -> Result<Gen, Error> {
        match self {
            Harness::Pg(env) => MultiWriterIdGenerator::postgres(env.pool.clone(), config).await,
            Harness::Sqlite(env) => MultiWriterIdGenerator::sqlite(&env.path, config).await,
        }
    }

    /// Starts a generator as configured, without preparing anything.
    pub async fn start_config(&self, config: StreamConfig) -> Gen {
        let name = self.name();
        self.try_start(config)
            .await
            .unwrap_or_else(|e| panic!("{name}: generator start: {e}"))
    }

    /// Prepares (see [`prepare`](Self::prepare)) and starts `instance`.
    pub async fn start(&self, instance: &str, writers: &[&str]) -> Gen {
        let config = self.config(instance, writers);
        self.prepare(&config).await;
        self.start_config(config).await
    }

    /// A restart: the old generator is dropped (its background tasks stop), then the
    /// instance starts again.
    pub async fn restart(&self, old: Gen, instance: &str, writers: &[&str]) -> Gen {
        drop(old);
        self.start(instance, writers).await
    }

    /// Starts with a database no I/O can reach (a closed pool; a file in a directory that
    /// does not exist): whatever is refused before any I/O is refused the same way, and
    /// anything else fails with a connection error.
    pub async fn try_start_unreachable(&self, config: StreamConfig) -> Result<Gen, Error> {
        match self {
            Harness::Pg(env) => {
                let closed = env.db.pool(1).expect("pool");
                closed.close();
                MultiWriterIdGenerator::postgres(closed, config).await
            }
            Harness::Sqlite(env) => {
                MultiWriterIdGenerator::sqlite(env.dir.join("missing-dir").join("x.db"), config)
                    .await
            }
        }
    }

    /// Starts a generator and then, on PostgreSQL, closes its pool, so any later I/O of
    /// the generator fails. SQLite has no equivalent (the file stays reachable); scenarios
    /// check there that the counter did not move.
    pub async fn start_then_cut_io(&self, config: StreamConfig) -> Gen {
        self.prepare(&config).await;
        match self {
            Harness::Pg(env) => {
                let pool = env.db.pool(2).expect("pool");
                let g = MultiWriterIdGenerator::postgres(pool.clone(), config)
                    .await
                    .expect("generator start");
                pool.close();
                g
            }
            Harness::Sqlite(_) => self.start_config(config).await,
        }
    }

    /// Runs `sql` (several statements allowed), panicking on failure.
    pub async fn exec(&self, sql: &str) {
        match self {
            Harness::Pg(env) => env.exec(sql).await,
            Harness::Sqlite(env) => {
                let sql = sql.to_owned();
                env.with(move |c| {
                    c.execute_batch(&sql)
                        .unwrap_or_else(|e| panic!("{sql}: {e}"));
                })
                .await;
            }
        }
    }

    /// Runs one statement with parameters; returns the rows changed.
    pub async fn execute(&self, sql: &str, params: &[Val]) -> u64 {
        match self {
            Harness::Pg(env) => {
                let client = env.pool.get().await.expect("client");
                let params = pg_params(params);
                client
                    .execute(sql, &pg_refs(&params))
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            Harness::Sqlite(env) => {
                let (sql, params) = (sql.to_owned(), params.to_vec());
                env.with(move |c| {
                    c.execute(&sql, sqlite_params(&params))
                        .unwrap_or_else(|e| panic!("{sql}: {e}")) as u64
                })
                .await
            }
        }
    }

    /// The first column of every row of a query, as `i64`.
    pub async fn query_i64s(&self, sql: &str, params: &[Val]) -> Vec<i64> {
        match self {
            Harness::Pg(env) => {
                let client = env.pool.get().await.expect("client");
                let params = pg_params(params);
                client
                    .query(sql, &pg_refs(&params))
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            }
            Harness::Sqlite(env) => {
                let (sql, params) = (sql.to_owned(), params.to_vec());
                env.with(move |c| {
                    let mut stmt = c.prepare(&sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
                    stmt.query_map(sqlite_params(&params), |r| r.get(0))
                        .and_then(Iterator::collect)
                        .unwrap_or_else(|e| panic!("{sql}: {e}"))
                })
                .await
            }
        }
    }

    /// Every column of the single row a query returns, as `i64`s (one statement: one
    /// snapshot on both backends).
    pub async fn query_row(&self, sql: &str, params: &[Val]) -> Vec<i64> {
        match self {
            Harness::Pg(env) => {
                let client = env.pool.get().await.expect("client");
                let params = pg_params(params);
                let row = client
                    .query_one(sql, &pg_refs(&params))
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                (0..row.len()).map(|i| row.get(i)).collect()
            }
            Harness::Sqlite(env) => {
                let (sql, params) = (sql.to_owned(), params.to_vec());
                env.with(move |c| {
                    c.query_row(&sql, sqlite_params(&params), |r| {
                        (0..r.as_ref().column_count())
                            .map(|i| r.get(i))
                            .collect::<rusqlite::Result<Vec<i64>>>()
                    })
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
                })
                .await
            }
        }
    }

    /// The single `i64` a query returns.
    pub async fn query_i64(&self, sql: &str, params: &[Val]) -> i64 {
        let rows = self.query_i64s(sql, params).await;
        assert_eq!(rows.len(), 1, "{sql}: expected one row, got {rows:?}");
        rows[0]
    }

    /// Creates a second backing table with the layout of `events`.
    pub async fn create_table(&self, table: &str) {
        self.exec(&EVENTS_DDL.replacen("events", table, 1)).await;
    }

    /// Inserts a committed row into `events`.
    pub async fn insert(&self, id: i64, instance: Option<&str>) {
        self.insert_into("events", id, instance).await;
    }

    /// Inserts a committed row into `table` (a plain, lower-case name).
    pub async fn insert_into(&self, table: &str, id: i64, instance: Option<&str>) {
        let sql = format!(
            "INSERT INTO {table} (stream_ordering, instance_name) VALUES ({}, {})",
            self.p(1),
            self.p(2)
        );
        self.execute(&sql, &[id.into(), instance.into()]).await;
    }

    /// IDs of the committed rows of `events`, ascending.
    pub async fn event_ids(&self) -> Vec<i64> {
        self.query_i64s(
            "SELECT stream_ordering FROM events ORDER BY stream_ordering",
            &[],
        )
        .await
    }

    pub async fn row_exists(&self, id: i64) -> bool {
        let sql = format!(
            "SELECT count(*) FROM events WHERE stream_ordering = {}",
            self.p(1)
        );
        self.query_i64(&sql, &[id.into()]).await > 0
    }

    /// Writes a `stream_positions` row of stream `events` directly (what a process, a
    /// restore or a port left behind).
    pub async fn record(&self, instance: &str, value: i64) {
        self.record_for("events", instance, value).await;
    }

    pub async fn record_for(&self, stream: &str, instance: &str, value: i64) {
        self.exec(POSITIONS_DDL).await;
        let sql = format!(
            "INSERT INTO stream_positions (stream_name, instance_name, stream_id) \
             VALUES ({}, {}, {}) ON CONFLICT (stream_name, instance_name) \
             DO UPDATE SET stream_id = excluded.stream_id",
            self.p(1),
            self.p(2),
            self.p(3)
        );
        self.execute(&sql, &[stream.into(), instance.into(), value.into()])
            .await;
    }

    /// `stream_positions` rows of stream `events`, by instance (empty if the table is
    /// missing).
    pub async fn recorded(&self) -> BTreeMap<String, i64> {
        self.recorded_for("events").await
    }

    pub async fn recorded_for(&self, stream: &str) -> BTreeMap<String, i64> {
        let sql = format!(
            "SELECT instance_name, stream_id FROM stream_positions WHERE stream_name = {}",
            self.p(1)
        );
        match self {
            Harness::Pg(env) => {
                let client = env.pool.get().await.expect("client");
                let exists: bool = client
                    .query_one("SELECT to_regclass('stream_positions') IS NOT NULL", &[])
                    .await
                    .expect("to_regclass")
                    .get(0);
                if !exists {
                    return BTreeMap::new();
                }
                client
                    .query(&sql, &[&stream])
                    .await
                    .expect("read stream_positions")
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect()
            }
            Harness::Sqlite(env) => {
                let stream = stream.to_owned();
                env.with(move |c| {
                    let exists: i64 = c
                        .query_row(
                            "SELECT count(*) FROM sqlite_master WHERE name = 'stream_positions'",
                            [],
                            |r| r.get(0),
                        )
                        .expect("sqlite_master");
                    if exists == 0 {
                        return BTreeMap::new();
                    }
                    let mut stmt = c.prepare(&sql).expect("read stream_positions");
                    stmt.query_map([stream], |r| Ok((r.get(0)?, r.get(1)?)))
                        .and_then(Iterator::collect)
                        .expect("read stream_positions")
                })
                .await
            }
        }
    }

    /// The last value the sequence (PostgreSQL) or the counter row (SQLite) handed out,
    /// internal form (positive on backwards streams too).
    pub async fn counter_last(&self) -> i64 {
        match self {
            Harness::Pg(env) => env.sequence_last("events_seq").await,
            Harness::Sqlite(_) => {
                self.query_i64(
                    "SELECT last_value FROM streamid_sequences WHERE name = 'events_seq'",
                    &[],
                )
                .await
            }
        }
    }

    /// Makes `last` the last value handed out (creating a suitable sequence or the counter
    /// row if missing), e.g. to put it behind the rows or the recorded positions.
    pub async fn set_counter(&self, last: i64) {
        let sql = match self {
            Harness::Pg(_) => format!(
                "CREATE SEQUENCE IF NOT EXISTS events_seq AS BIGINT INCREMENT BY 1 NO CYCLE \
                 CACHE 1; SELECT setval('events_seq', {last}, true)"
            ),
            Harness::Sqlite(_) => format!(
                "CREATE TABLE IF NOT EXISTS streamid_sequences (name TEXT PRIMARY KEY, \
                 last_value INTEGER NOT NULL); \
                 INSERT INTO streamid_sequences (name, last_value) VALUES ('events_seq', {last}) \
                 ON CONFLICT (name) DO UPDATE SET last_value = excluded.last_value"
            ),
        };
        self.exec(&sql).await;
    }

    /// A connection to begin stream transactions on (a pooled client on PostgreSQL; on
    /// SQLite each transaction takes its own connection from the generator).
    pub async fn conn(&self) -> Conn {
        match self {
            Harness::Pg(env) => Conn::Pg(env.pool.get().await.expect("client")),
            Harness::Sqlite(env) => Conn::Sqlite(env.path.clone()),
        }
    }
}

/// Where stream transactions are begun.
#[allow(clippy::large_enum_variant)]
pub enum Conn {
    Pg(deadpool_postgres::Object),
    /// The database file, for checks of the connection state.
    Sqlite(PathBuf),
}

impl Conn {
    /// Begins a stream transaction: `transaction(&mut client)` on PostgreSQL,
    /// `sqlite_transaction()` on SQLite.
    pub async fn begin<'a>(&'a mut self, g: &Gen) -> Result<Tx<'a>, Error> {
        match self {
            Conn::Pg(client) => Ok(Tx::Pg(g.transaction(client).await?)),
            Conn::Sqlite(_) => Ok(Tx::Sqlite {
                tx: g.sqlite_transaction().await?,
                pending: Vec::new(),
            }),
        }
    }

    /// Fails if the connection was left inside a transaction or a write lock is still
    /// held (after a cancelled BEGIN).
    pub async fn assert_idle(&mut self) {
        match self {
            Conn::Pg(client) => {
                // Two statements see different transaction start times only outside a
                // transaction.
                let t1: String = client
                    .query_one("SELECT transaction_timestamp()::text", &[])
                    .await
                    .expect("query")
                    .get(0);
                tokio::time::sleep(Duration::from_millis(2)).await;
                let t2: String = client
                    .query_one("SELECT transaction_timestamp()::text", &[])
                    .await
                    .expect("query")
                    .get(0);
                assert_ne!(
                    t1, t2,
                    "a cancelled BEGIN left the connection in a transaction"
                );
            }
            Conn::Sqlite(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let c = rusqlite::Connection::open(&path).expect("open");
                    c.busy_timeout(Duration::from_secs(2)).expect("busy");
                    c.execute_batch("BEGIN IMMEDIATE; ROLLBACK")
                        .expect("a cancelled begin left the write lock held");
                })
                .await
                .expect("check task");
            }
        }
    }
}

/// A stream transaction on either backend.
///
/// Rows go through [`insert`](Self::insert). PostgreSQL executes them at once. A SQLite
/// stream transaction takes the database's single write lock at its first statement and
/// must allocate before it (spec §4.6, §5.4), so holding one open while other writers
/// allocate would block them: its rows are written just before COMMIT/ROLLBACK, or at
/// [`flush`](Self::flush). Other connections cannot see uncommitted rows on either
/// backend, so scenarios observe the same thing.
pub enum Tx<'a> {
    Pg(StreamTransaction<'a>),
    Sqlite {
        tx: SqliteTransaction,
        /// Rows not yet written: `(id, instance, payload)`.
        pending: Vec<(i64, String, String)>,
    },
}

const TX_INSERT_PG: &str =
    "INSERT INTO events (stream_ordering, instance_name, payload) VALUES ($1, $2, $3)";
const TX_INSERT_SQLITE: &str =
    "INSERT INTO events (stream_ordering, instance_name, payload) VALUES (?1, ?2, ?3)";

impl Tx<'_> {
    pub async fn next_id(&mut self) -> Result<i64, Error> {
        match self {
            Tx::Pg(tx) => tx.next_id().await,
            Tx::Sqlite { tx, .. } => tx.next_id().await,
        }
    }

    pub async fn next_ids(&mut self, n: usize) -> Result<Vec<i64>, Error> {
        match self {
            Tx::Pg(tx) => tx.next_ids(n).await,
            Tx::Sqlite { tx, .. } => tx.next_ids(n).await,
        }
    }

    pub fn ids(&self) -> Vec<i64> {
        match self {
            Tx::Pg(tx) => tx.ids(),
            Tx::Sqlite { tx, .. } => tx.ids(),
        }
    }

    /// Writes row `id` of `events` in the transaction (see the type's doc for when).
    pub async fn insert(&mut self, id: i64, instance: &str, payload: &str) {
        match self {
            Tx::Pg(tx) => {
                tx.execute(TX_INSERT_PG, &[&id, &instance, &payload])
                    .await
                    .unwrap_or_else(|e| panic!("insert {id}: {e}"));
            }
            Tx::Sqlite { pending, .. } => {
                pending.push((id, instance.to_owned(), payload.to_owned()));
            }
        }
    }

    /// Executes one statement in the transaction now, on either backend (on SQLite this
    /// takes the write lock); panics on failure.
    pub async fn execute(&mut self, sql: &str, params: &[Val]) -> u64 {
        match self {
            Tx::Pg(tx) => {
                let params = pg_params(params);
                tx.execute(sql, &pg_refs(&params))
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"))
            }
            Tx::Sqlite { tx, .. } => {
                tx.execute(sql, sqlite_params(params))
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}")) as u64
            }
        }
    }

    /// Writes the pending rows now (SQLite: takes the write lock; no-op on PostgreSQL).
    pub async fn flush(&mut self) {
        if let Tx::Sqlite { tx, pending } = self {
            for (id, instance, payload) in std::mem::take(pending) {
                tx.execute(TX_INSERT_SQLITE, (id, instance, payload))
                    .await
                    .unwrap_or_else(|e| panic!("insert {id}: {e}"));
            }
        }
    }

    pub async fn commit(mut self) -> Result<(), Error> {
        self.flush().await;
        match self {
            Tx::Pg(tx) => tx.commit().await,
            Tx::Sqlite { tx, .. } => tx.commit().await,
        }
    }

    /// Rolls back, after writing the pending rows so that ROLLBACK has something to undo.
    pub async fn rollback(mut self) -> Result<(), Error> {
        self.flush().await;
        match self {
            Tx::Pg(tx) => tx.rollback().await,
            Tx::Sqlite { tx, .. } => tx.rollback().await,
        }
    }
}

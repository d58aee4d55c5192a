//! The fault-injection harness shared by `tests/faults.rs` and `tests/soak.rs`: a private,
//! durable PostgreSQL cluster (optionally behind a [`TcpProxy`]), `streamid worker write`
//! and `worker read` processes on it ([`Fleet`]), a timeline of the reader's persisted-up-to
//! position ([`Timeline`]), and the end-of-run audit ([`Fleet::finish`]): `streamid verify`,
//! the writers' logs against the table, `streamid gaps`, and the stall measurements.
//!
//! Everything here panics on failure: it is test code.

// Test support: each binary uses a different subset, and failing fast is the point.
#![allow(dead_code, unreachable_pub, clippy::expect_used, clippy::unwrap_used)]

mod audit;
mod fleet;
mod timeline;

use std::process::Command;
use std::time::{Duration, Instant};

use streamid_testkit::{PgServer, TcpProxy, TestDb};

#[allow(unused_imports)] // each test binary uses one of them
pub use audit::{assert_no_long_stall_after_any_fault, assert_no_long_stall_after_last_fault};
#[allow(unused_imports)] // not every test binary counts log events
pub use fleet::{Fleet, WriteOptions, count_events};
pub use timeline::Timeline;

/// The stream, its table (and sequence `events_seq`).
pub const STREAM: &str = "events";

/// Spec §12.6 / issue 5: a killed writer stops holding `P` back within this bound.
pub const RECLAIM_BOUND: Duration = Duration::from_secs(2);
/// What comes on top after a fault: reconnecting (back-off from 100 ms up to 1 s),
/// resynchronising, replication latency, and a small machine (two CPUs here) shared by
/// PostgreSQL and every process of the run. Observed stalls stay well below (RELIABILITY.md).
pub const SLACK: Duration = Duration::from_secs(3);

/// The `streamid` binary, with the environment of the parent cleared of what would change
/// its behaviour.
pub fn streamid() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamid"));
    cmd.env_remove("DATABASE_URL").env_remove("RUST_LOG");
    cmd
}

/// A private cluster with fsync on (crash tests need durable commits), one database, and
/// optionally a proxy in front of it for the workers.
pub struct Cluster {
    pub server: PgServer,
    pub db: TestDb,
    pub proxy: Option<TcpProxy>,
    rt: tokio::runtime::Runtime,
}

impl Cluster {
    pub fn start(with_proxy: bool) -> Cluster {
        let server = PgServer::builder()
            .fsync(true)
            .start()
            .unwrap_or_else(|e| panic!("cannot start PostgreSQL for the fault tests: {e}"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a Tokio runtime");
        let db = rt
            .block_on(server.create_database())
            .expect("create the database");
        let proxy = with_proxy
            .then(|| TcpProxy::start((server.host(), server.port())).expect("start the proxy"));
        Cluster {
            server,
            db,
            proxy,
            rt,
        }
    }

    /// The URL `verify`, `gaps` and the harness's own queries use: always direct.
    pub fn direct_url(&self) -> String {
        self.db.url.clone()
    }

    /// The URL the workers use: through the proxy when there is one.
    pub fn worker_url(&self) -> String {
        match &self.proxy {
            Some(p) => format!(
                "postgres://postgres@127.0.0.1:{}/{}",
                p.port(),
                self.db.name
            ),
            None => self.direct_url(),
        }
    }

    pub fn proxy(&self) -> &TcpProxy {
        self.proxy.as_ref().expect("this cluster has a proxy")
    }

    /// Runs `sql` on a fresh direct connection; `None` if the server cannot be reached or
    /// the statement fails (it may be restarting).
    pub fn try_query(&self, sql: &str) -> Option<Vec<tokio_postgres::Row>> {
        self.rt.block_on(async {
            let client = self.db.client().await.ok()?;
            client.query(sql, &[]).await.ok()
        })
    }

    /// As [`try_query`](Self::try_query), retrying for up to 30 s.
    pub fn query(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(rows) = self.try_query(sql) {
                return rows;
            }
            assert!(Instant::now() < deadline, "cannot run {sql}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// One `bigint` (NULL as 0).
    pub fn scalar(&self, sql: &str) -> i64 {
        let rows = self.query(sql);
        rows.first()
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .unwrap_or(0)
    }

    /// The last ID the sequence handed out (0 before the first).
    pub fn last_allocated(&self) -> i64 {
        self.scalar(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM events_seq \
             UNION ALL SELECT 0 LIMIT 1",
        )
    }

    /// The server's clock, in seconds since the epoch (to compare with `stream_events.at`).
    pub fn server_now(&self) -> f64 {
        let rows = self.query("SELECT extract(epoch FROM clock_timestamp())::float8");
        rows[0].get::<_, f64>(0)
    }

    /// How many stream transactions `instance` has open right now: backends tagged with
    /// its writer prefix (the library tags the connection inside each stream transaction)
    /// that hold a transaction id.
    pub fn open_transactions(&self, instance: &str) -> i64 {
        let sql = format!(
            "SELECT count(*) FROM pg_stat_activity a JOIN stream_writers w \
               ON a.application_name LIKE 'streamid:' || lpad(to_hex(w.writer_key), 16, '0') || ':%' \
             WHERE w.stream_name = '{STREAM}' AND w.instance_name = '{instance}' \
               AND a.backend_xid IS NOT NULL AND a.state <> 'idle'"
        );
        self.try_query(&sql)
            .and_then(|rows| rows.first().map(|r| r.get::<_, i64>(0)))
            .unwrap_or(0)
    }

    /// Terminates every NOTIFY listener (the replication transport's connections); returns
    /// how many.
    pub fn terminate_listeners(&self) -> usize {
        self.try_query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'streamid-notify' AND pid <> pg_backend_pid()",
        )
        .map_or(0, |rows| rows.len())
    }
}

/// Sleeps `d` (a readable name in scenario scripts).
pub fn run_for(d: Duration) {
    std::thread::sleep(d);
}

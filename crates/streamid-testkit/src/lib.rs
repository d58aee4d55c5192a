//! Throwaway PostgreSQL servers and databases for tests, benchmarks and demos.
//!
//! - [`PgServer`] runs a private cluster: `initdb` into a temp dir, `postgres` on a free port
//!   of 127.0.0.1 (socket in the temp dir, `trust` auth, superuser `postgres`), stopped and
//!   deleted on drop — or by a watchdog process once the test process is gone, so servers kept
//!   in `static`s never outlive the test run.
//! - [`RedisServer`] runs a private `redis-server` (no persistence) on a free port of
//!   127.0.0.1, for the Redis replication transport; killed on drop or by its watchdog.
//! - [`TcpProxy`] sits between clients and a server on a free port of 127.0.0.1 and breaks
//!   their connections on request (cut, refuse, partition), for fault-injection tests.
//! - [`fresh_database`] gives each test its own database: on `DATABASE_URL`'s server when that
//!   is set, else on [`PgServer::shared`], one cluster per test binary.
//!
//! The server binaries are taken from `$PG_BIN`, else the highest `/usr/lib/postgresql/*/bin`,
//! else `$PATH`. Running as root, server programs run as the `postgres` user via `runuser`.
//! When PostgreSQL cannot be found or started, the [`Error`] says what to install
//! ([`INSTALL_HINT`]); tests fail rather than skip.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use streamid_testkit::{PgServer, fresh_database};
//!
//! // Most tests: a fresh database on the shared server (or on DATABASE_URL's).
//! let db = fresh_database().await?;
//! let client = db.client().await?;
//! let row = client.query_one("SELECT 1::int4", &[]).await?;
//! assert_eq!(row.get::<_, i32>(0), 1);
//!
//! // Crash tests: a durable server of their own, killed and recovered.
//! let server = PgServer::builder().fsync(true).start()?;
//! let db = server.create_database().await?;
//! let pool = db.pool(4)?;
//! pool.get().await?.batch_execute("CREATE TABLE t (x int)").await?;
//! server.restart_immediate()?;
//! # Ok(())
//! # }
//! ```
//!
//! Tests run on several threads and, with `#[tokio::test]`, several Tokio runtimes. Nothing
//! here keeps a client or pool across calls, so that is safe; but a [`TestDb`]'s clients and
//! pools belong to the runtime that made them.

mod db;
mod error;
mod process;
mod proxy;
mod redis;
mod server;

pub use db::{TestDb, connect_url, fresh_database};
pub use error::{Error, ErrorKind, INSTALL_HINT, REDIS_INSTALL_HINT};
pub use proxy::TcpProxy;
pub use redis::RedisServer;
pub use server::{PgServer, PgServerBuilder};

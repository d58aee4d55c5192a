//! [`TestDb`]: a fresh database per test, on a [`PgServer`] or on `DATABASE_URL`'s server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Client, Config, NoTls};

use crate::error::{Error, ErrorKind};
use crate::server::PgServer;

/// A freshly created, empty database (copied from `template1`).
///
/// It is not dropped automatically: on a [`PgServer`] it disappears with the cluster; on a
/// server of your own (`DATABASE_URL`) call [`drop_database`](Self::drop_database).
#[derive(Debug, Clone)]
pub struct TestDb {
    /// The database name, `t_<n>_<pid>_<unix seconds>`.
    pub name: String,
    /// A connection URL (or key-value connection string, if that is what `DATABASE_URL` was)
    /// for this database.
    pub url: String,
    /// The connection config for this database.
    pub config: Config,
    admin: Config,
}

impl TestDb {
    /// Creates a fresh database on the server `admin` connects to; `url_for(name)` gives
    /// the new database's URL.
    pub(crate) async fn create(
        admin: Config,
        url_for: impl FnOnce(&str) -> String,
    ) -> Result<Self, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // The time part avoids clashes with leftovers on long-lived servers (pids repeat).
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!(
            "t_{}_{}_{secs}",
            NEXT.fetch_add(1, Ordering::Relaxed),
            std::process::id()
        );
        let client = connect(&admin).await?;
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .await
            .map_err(|e| Error::db(format_args!("CREATE DATABASE {name}"), &e))?;
        let mut config = admin.clone();
        config.dbname(&name);
        Ok(Self {
            url: url_for(&name),
            name,
            config,
            admin,
        })
    }

    /// A new connection; its connection task is spawned on the current Tokio runtime.
    pub async fn client(&self) -> Result<Client, Error> {
        connect(&self.config).await
    }

    /// A connection pool of up to `max_size` connections (created lazily, on the runtime
    /// that first uses the pool).
    pub fn pool(&self, max_size: usize) -> Result<Pool, Error> {
        let manager = Manager::from_config(
            self.config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        Pool::builder(manager)
            .max_size(max_size)
            .build()
            .map_err(|e| Error::new(ErrorKind::Database, format!("building a pool: {e}")))
    }

    /// Drops the database, disconnecting any sessions still using it (PostgreSQL 13+).
    pub async fn drop_database(self) -> Result<(), Error> {
        let client = connect(&self.admin).await?;
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| Error::db(&sql, &e))
    }
}

impl PgServer {
    /// Creates a fresh database on this server. Needs a Tokio runtime (any: the server holds
    /// no runtime-bound state, each call opens its own admin connection).
    pub async fn create_database(&self) -> Result<TestDb, Error> {
        TestDb::create(self.config("postgres"), |name| self.url(name)).await
    }
}

/// Connects to `url` (URL or key-value form, no TLS) and spawns the connection task on the
/// current Tokio runtime.
pub async fn connect_url(url: &str) -> Result<Client, Error> {
    let config: Config = url.parse().map_err(|e| Error::db("parsing the URL", &e))?;
    connect(&config).await
}

/// A fresh database for one test.
///
/// With `DATABASE_URL` set, it is created on that server (the URL's own database is used for
/// the admin connection; the user needs `CREATEDB`). Otherwise on [`PgServer::shared`], which
/// is started on first use.
pub async fn fresh_database() -> Result<TestDb, Error> {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => {
            let mut admin: Config = url
                .parse()
                .map_err(|e| Error::db("parsing DATABASE_URL", &e))?;
            if admin.get_connect_timeout().is_none() {
                admin.connect_timeout(Duration::from_secs(10));
            }
            TestDb::create(admin, |name| with_dbname(&url, name)).await
        }
        _ => {
            // Starting the server blocks for a while; keep the runtime's threads free.
            let server = tokio::task::spawn_blocking(PgServer::shared)
                .await
                .map_err(|e| Error::new(ErrorKind::Startup, format!("server start-up: {e}")))??;
            server.create_database().await
        }
    }
}

async fn connect(config: &Config) -> Result<Client, Error> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| Error::db("connecting to PostgreSQL", &e))?;
    // Errors surface on the client's next call; the task only drives the socket.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `url` with its database replaced by `db`: the path of a `postgres://` URL, or an appended
/// `dbname=` for a key-value string (the last occurrence wins).
fn with_dbname(url: &str, db: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return format!("{} dbname={db}", url.trim_end());
    };
    let (head, rest) = url.split_at(scheme_end + 3);
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |q| &tail[q..]);
    format!("{head}{authority}/{db}{query}")
}

#[cfg(test)]
mod tests {
    use super::with_dbname;

    #[test]
    fn replaces_the_database_in_urls() {
        let cases = [
            ("postgres://u:p@h:5/old", "postgres://u:p@h:5/new"),
            ("postgresql://h", "postgresql://h/new"),
            (
                "postgres://h/old?sslmode=disable",
                "postgres://h/new?sslmode=disable",
            ),
            (
                "postgres://h?connect_timeout=3",
                "postgres://h/new?connect_timeout=3",
            ),
            (
                "host=h user=u dbname=old",
                "host=h user=u dbname=old dbname=new",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(with_dbname(url, "new"), want, "{url}");
        }
    }
}

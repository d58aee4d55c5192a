//! A private server's lifecycle, settings and errors; databases on the shared server.

use streamid_testkit::{ErrorKind, PgServer, fresh_database};

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn show(
    client: &tokio_postgres::Client,
    name: &str,
) -> Result<String, tokio_postgres::Error> {
    Ok(client.query_one(&format!("SHOW {name}"), &[]).await?.get(0))
}

#[tokio::test]
async fn own_server_answers_and_applies_settings() -> TestResult {
    let server = PgServer::builder()
        .max_connections(50)
        .setting("work_mem", "8MB")
        .setting("application_name", r"it's a \ test")
        .start()?;
    assert_eq!(server.host(), "127.0.0.1");
    assert!(server.url("x").ends_with(&format!(":{}/x", server.port())));
    assert!(
        server
            .socket_dir()
            .join(format!(".s.PGSQL.{}", server.port()))
            .exists()
    );

    let client = streamid_testkit::connect_url(&server.url("postgres")).await?;
    let one: i32 = client.query_one("SELECT 1", &[]).await?.get(0);
    assert_eq!(one, 1);
    assert_eq!(show(&client, "max_connections").await?, "50");
    assert_eq!(show(&client, "work_mem").await?, "8MB");
    assert_eq!(show(&client, "fsync").await?, "off");
    assert_eq!(show(&client, "synchronous_commit").await?, "off");
    assert_eq!(show(&client, "full_page_writes").await?, "off");
    // The server-wide default, not overridden by this client's connection parameters.
    let app: String = client
        .query_one(
            "SELECT reset_val FROM pg_settings WHERE name = 'application_name'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(app, r"it's a \ test");
    assert!(server.pg_ctl(["status"])?.contains("server is running"));
    Ok(())
}

#[test]
fn drop_stops_the_server_and_deletes_its_directory() -> TestResult {
    let server = PgServer::start()?;
    let dir = server.socket_dir().to_path_buf();
    let port = server.port();
    assert!(server.data_dir().join("postmaster.pid").exists());
    drop(server);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    Ok(())
}

#[tokio::test]
async fn restart_immediate_keeps_committed_data() -> TestResult {
    let server = PgServer::builder().fsync(true).start()?;
    let db = server.create_database().await?;
    let client = db.client().await?;
    assert_eq!(show(&client, "fsync").await?, "on");
    client
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3);")
        .await?;

    server.restart_immediate()?;
    // The crash broke the old session.
    assert!(client.query_one("SELECT 1", &[]).await.is_err());
    let client = db.client().await?;
    let sum: i64 = client.query_one("SELECT sum(x) FROM t", &[]).await?.get(0);
    assert_eq!(sum, 6);
    // Crash recovery ran, i.e. it really was an immediate stop.
    let log = std::fs::read_to_string(server.log_file())?;
    assert!(log.contains("not properly shut down"), "log:\n{log}");

    // stop/start separately, as a crash test driving its own timing would.
    server.stop_immediate()?;
    assert!(db.client().await.is_err());
    server.start_again()?;
    let client = db.client().await?;
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await?
        .get(0);
    assert_eq!(n, 3);
    Ok(())
}

#[tokio::test]
async fn fresh_databases_are_distinct_and_usable() -> TestResult {
    let (a, b) = tokio::try_join!(fresh_database(), fresh_database())?;
    assert_ne!(a.name, b.name);
    assert_ne!(a.url, b.url);

    let ca = a.client().await?;
    let pool = b.pool(2)?;
    let cb = pool.get().await?;
    let name_a: String = ca.query_one("SELECT current_database()", &[]).await?.get(0);
    let name_b: String = cb.query_one("SELECT current_database()", &[]).await?.get(0);
    assert_eq!(
        (name_a.as_str(), name_b.as_str()),
        (a.name.as_str(), b.name.as_str())
    );

    ca.batch_execute("CREATE TABLE only_in_a (x int)").await?;
    let in_b: i64 = cb
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(in_b, 0);

    let via_url = streamid_testkit::connect_url(&a.url).await?;
    via_url
        .query_one("SELECT count(*) FROM only_in_a", &[])
        .await?;

    drop((ca, cb, via_url, pool));
    let name = a.name.clone();
    let check = b.client().await?;
    a.drop_database().await?;
    let left: i64 = check
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await?
        .get(0);
    assert_eq!(left, 0);
    Ok(())
}

#[test]
fn shared_is_one_server_for_all_threads_and_runtimes() -> TestResult {
    let addrs: Vec<usize> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| PgServer::shared().map(|p| p as *const PgServer as usize)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "thread panicked"))
            .collect::<Result<Result<Vec<_>, _>, _>>()
    })??;
    assert!(addrs.windows(2).all(|w| w[0] == w[1]), "{addrs:?}");

    // Each runtime makes its own admin connections: no state tied to a dead runtime.
    for _ in 0..2 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let db = PgServer::shared()?.create_database().await?;
            db.client().await?.query_one("SELECT 1", &[]).await?;
            Ok::<_, Box<dyn std::error::Error>>(())
        })?;
    }
    Ok(())
}

#[test]
fn missing_binaries_name_the_fix() {
    let err = PgServer::builder()
        .bin_dir("/nonexistent/pg/bin")
        .start()
        .err()
        .map(|e| (e.kind(), e.to_string()));
    let Some((kind, msg)) = err else {
        panic!("started without binaries")
    };
    assert_eq!(kind, ErrorKind::BinariesNotFound);
    assert!(msg.contains("apt-get install -y postgresql-15"), "{msg}");
    assert!(msg.contains("PG_BIN"), "{msg}");
}

#[test]
fn a_failing_start_reports_the_log_and_cleans_up() {
    let result = PgServer::builder()
        .setting("shared_buffers", "not-a-size")
        .start();
    let Err(err) = result else {
        panic!("started with an invalid setting")
    };
    let msg = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Command);
    assert!(msg.contains("starting postgres failed"), "{msg}");
    assert!(msg.contains("shared_buffers"), "log tail missing: {msg}");
    assert!(err.hint().is_some());
    // The failed cluster's directory is gone already (the command names its data dir).
    let data_dir = err
        .command()
        .and_then(|c| c.split(' ').skip_while(|a| *a != "-D").nth(1))
        .map(std::path::PathBuf::from);
    let Some(data_dir) = data_dir else {
        panic!("no data dir in {:?}", err.command())
    };
    assert!(!data_dir.exists(), "{} left behind", data_dir.display());

    let bad_name = PgServer::builder().setting("bad name", "1").start();
    assert!(matches!(bad_name, Err(e) if e.kind() == ErrorKind::Config));
}

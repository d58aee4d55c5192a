//! The fault-injection proxy: forwarding, cuts, refusals and partitions, against a small
//! echo server, and one COMMIT whose reply is lost, against PostgreSQL.

// A test binary: panicking on a failed step is how it reports failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamid_testkit::{PgServer, TcpProxy};

/// An echo server on a free port that also records every byte it received.
struct Echo {
    port: u16,
    received: Arc<Mutex<Vec<u8>>>,
}

fn echo_server() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&received);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                    if stream.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            });
        }
    });
    Echo { port, received }
}

fn connect(proxy: &TcpProxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    stream
}

/// Sends `text` and expects it back.
fn round_trip(stream: &mut TcpStream, text: &str) {
    stream.write_all(text.as_bytes()).unwrap();
    assert_eq!(read_exactly(stream, text.len()), text);
}

fn read_exactly(stream: &mut TcpStream, n: usize) -> String {
    let mut buf = vec![0u8; n];
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.read_exact(&mut buf).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    String::from_utf8(buf).unwrap()
}

/// Nothing arrives within the read timeout, and the connection is still open.
fn assert_silent(stream: &mut TcpStream) {
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("expected silence, got {other:?}"),
    }
}

/// The connection is gone: EOF or a reset.
fn assert_closed(stream: &mut TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {}
        other => panic!("expected a closed connection, got {other:?}"),
    }
}

fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn forwards_both_ways_and_forgets_closed_connections() {
    let echo = echo_server();
    let proxy = TcpProxy::start(("127.0.0.1", echo.port)).unwrap();
    assert_ne!(proxy.port(), echo.port);
    assert_eq!(proxy.target().port(), echo.port);
    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    round_trip(&mut a, "hello");
    round_trip(&mut b, "world");
    round_trip(&mut a, &"x".repeat(100_000));
    assert_eq!(proxy.connections(), 2);
    assert_eq!(proxy.accepted(), 2);
    drop(a);
    eventually("the closed connection to be forgotten", || {
        proxy.connections() == 1
    });
    round_trip(&mut b, "still here");
}

#[test]
fn cut_all_drops_every_current_connection_and_only_those() {
    let echo = echo_server();
    let proxy = TcpProxy::start(("127.0.0.1", echo.port)).unwrap();
    let mut a = connect(&proxy);
    let mut b = connect(&proxy);
    round_trip(&mut a, "1");
    round_trip(&mut b, "2");
    assert_eq!(proxy.cut_all(), 2);
    assert_closed(&mut a);
    assert_closed(&mut b);
    assert_eq!(proxy.connections(), 0);
    assert_eq!(proxy.cut_count(), 2);
    let mut c = connect(&proxy);
    round_trip(&mut c, "after the cut");
    assert_eq!(proxy.cut_all(), 1);
    assert_closed(&mut c);
}

#[test]
fn pause_refuses_new_connections_until_resume() {
    let echo = echo_server();
    let proxy = TcpProxy::start(("127.0.0.1", echo.port)).unwrap();
    let mut old = connect(&proxy);
    round_trip(&mut old, "established");
    proxy.pause();
    let mut refused = connect(&proxy);
    assert_closed(&mut refused);
    assert_eq!(proxy.refused(), 1);
    round_trip(&mut old, "existing connections keep working");
    proxy.resume();
    let mut new = connect(&proxy);
    round_trip(&mut new, "accepted again");
    assert_eq!(proxy.accepted(), 2);
}

#[test]
fn a_blackhole_holds_bytes_without_closing_and_releases_them_in_order() {
    let echo = echo_server();
    let proxy = TcpProxy::start(("127.0.0.1", echo.port)).unwrap();
    let mut a = connect(&proxy);
    round_trip(&mut a, "before");
    proxy.blackhole(true);
    for part in ["one ", "two ", "three"] {
        a.write_all(part.as_bytes()).unwrap();
    }
    assert_silent(&mut a);
    // New connections are accepted but stall too.
    let mut late = connect(&proxy);
    late.write_all(b"late").unwrap();
    assert_silent(&mut late);
    assert_eq!(proxy.connections(), 2);
    proxy.blackhole(false);
    assert_eq!(read_exactly(&mut a, 13), "one two three");
    assert_eq!(read_exactly(&mut late, 4), "late");
}

#[test]
fn blackholed_replies_let_requests_through_until_a_cut() {
    let echo = echo_server();
    let proxy = TcpProxy::start(("127.0.0.1", echo.port)).unwrap();
    let mut a = connect(&proxy);
    proxy.blackhole_replies(true);
    a.write_all(b"ping").unwrap();
    eventually("the request to reach the target", || {
        echo.received.lock().unwrap().ends_with(b"ping")
    });
    assert_silent(&mut a);
    proxy.cut_all();
    assert_closed(&mut a);
    proxy.blackhole_replies(false);
    let mut b = connect(&proxy);
    round_trip(&mut b, "pong");
}

#[test]
fn dropping_the_proxy_closes_its_connections() {
    let echo = echo_server();
    let proxy = TcpProxy::start(("127.0.0.1", echo.port)).unwrap();
    let mut a = connect(&proxy);
    round_trip(&mut a, "x");
    drop(proxy);
    assert_closed(&mut a);
}

#[test]
fn a_target_that_is_down_gets_connections_refused() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let proxy = TcpProxy::start(("127.0.0.1", port)).unwrap();
    let mut a = connect(&proxy);
    assert_closed(&mut a);
    eventually("the refusal to be counted", || proxy.refused() == 1);
    assert_eq!(proxy.accepted(), 0);
}

/// The fault behind "COMMIT outcome unknown": the server commits, the client never hears.
#[test]
fn a_commit_whose_reply_is_lost_is_committed_on_the_server() {
    let server = PgServer::shared().unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
    let proxy = TcpProxy::start((server.host(), server.port())).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db = server.create_database().await.unwrap();
        let direct = db.client().await.unwrap();
        direct
            .batch_execute("CREATE TABLE t (x int)")
            .await
            .unwrap();
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(proxy.port())
            .user("postgres")
            .dbname(&db.name);
        let (mut client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let tx = client.transaction().await.unwrap();
        tx.execute("INSERT INTO t VALUES (1)", &[]).await.unwrap();
        proxy.blackhole_replies(true);
        let cut_once_committed = async {
            let count = "SELECT count(*) FROM t";
            let deadline = Instant::now() + Duration::from_secs(5);
            while direct.query_one(count, &[]).await.unwrap().get::<_, i64>(0) == 0 {
                assert!(Instant::now() < deadline, "the COMMIT never ran");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            proxy.cut_all();
        };
        let commit = tokio::time::timeout(Duration::from_secs(10), tx.commit());
        let (outcome, ()) = tokio::join!(commit, cut_once_committed);
        let outcome = outcome.expect("the cut ends the wait");
        // Committed on the server, yet the client got an error: the outcome is unknown to it.
        assert!(outcome.is_err(), "{outcome:?}");
        assert!(client.is_closed());
    });
}

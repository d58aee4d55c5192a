//! Replication through the network transports against real servers (spec §12): PostgreSQL
//! `LISTEN/NOTIFY` and, with the `redis` feature, Redis pub/sub on a private `redis-server`.
//!
//! Three generators share one PostgreSQL stream — writers `a` and `b`, reader `r` — each
//! replicating through its own connection. The reader reaches every writer's maximum while a
//! writer is idle, across a transport outage (listeners terminated / Redis restarted) and
//! after malformed messages; announcements never ride in a data transaction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::Env;
use futures_util::StreamExt;
use streamid::MultiWriterIdGenerator;
use streamid::replication::{PgNotify, ReplicationOptions, Transport};
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

const WAIT: Duration = Duration::from_secs(10);

fn options() -> ReplicationOptions {
    ReplicationOptions {
        announce_interval: Duration::from_millis(100),
        reconnect_min: Duration::from_millis(50),
        reconnect_max: Duration::from_millis(500),
        ..ReplicationOptions::default()
    }
}

struct Trio {
    a: MultiWriterIdGenerator,
    b: MultiWriterIdGenerator,
    r: MultiWriterIdGenerator,
}

impl Trio {
    async fn start<T: Transport>(env: &Env, transport: impl Fn() -> T) -> Trio {
        let writers = ["a", "b"];
        let trio = Trio {
            a: env.start("a", &writers).await,
            b: env.start("b", &writers).await,
            r: env.start("r", &writers).await,
        };
        for g in trio.all() {
            g.replicate_with(transport(), options());
        }
        common::eventually("every generator is connected", async || {
            trio.all()
                .iter()
                .all(|g| g.replication_status().is_some_and(|s| s.connected))
        })
        .await;
        trio
    }

    fn all(&self) -> [&MultiWriterIdGenerator; 3] {
        [&self.a, &self.b, &self.r]
    }
}

/// One write on the fast path: the ID is allocated, the row inserted and committed in one
/// transaction. Returns the ID.
async fn write(env: &Env, g: &MultiWriterIdGenerator) -> i64 {
    let mut client = env.pool.get().await.unwrap();
    let mut tx = g.transaction(&mut client).await.unwrap();
    let id = tx.next_id().await.unwrap();
    tx.execute(
        "INSERT INTO events (stream_ordering, instance_name) VALUES ($1, $2)",
        &[&id, &g.instance_name()],
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

/// Waits until `g`'s persisted-up-to position covers `position`; fails after [`WAIT`].
async fn reaches(g: &MultiWriterIdGenerator, position: i64, what: &str) -> Duration {
    let started = Instant::now();
    let outcome = g.wait_for_persisted(position, WAIT).await.unwrap();
    assert!(
        outcome.is_reached(),
        "{what}: {} stuck at {} (positions {:?}) waiting for {position}; status {:?}",
        g.instance_name(),
        g.persisted_upto_position(),
        g.positions(),
        g.replication_status()
    );
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// The scenario every transport passes. `outage` breaks the transport's connections (and
/// may keep them broken for a while); `publish_garbage` puts a malformed message on the
/// channel.
async fn scenario(
    env: &Env,
    trio: &Trio,
    outage: impl AsyncFnOnce(),
    publish_garbage: impl AsyncFnOnce(),
) {
    let Trio { a, b, r } = trio;
    let label = r.replication_status().unwrap().transport;

    // Both writers write: the reader (and each writer) reaches the maximum allocated.
    for _ in 0..5 {
        write(env, a).await;
        write(env, b).await;
    }
    let max = a.max_allocated_token().await.unwrap();
    for g in trio.all() {
        reaches(g, max, "after both wrote").await;
    }

    // An idle writer does not hold the reader back: only `a` writes.
    let mut latencies = Vec::new();
    for _ in 0..30 {
        let id = write(env, a).await;
        latencies.push(reaches(r, id, "while b is idle").await);
    }
    latencies.sort();
    eprintln!(
        "{label}: commit on a -> reader's persisted-up-to covers it (b idle): p50 {:?}, p99 {:?}, max {:?}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().unwrap()
    );
    let status = r.replication_status().unwrap();
    assert!(
        status.writers.contains_key("a") && status.writers.contains_key("b"),
        "{status:?}"
    );
    assert!(!status.writers.contains_key("r"), "own echoes: {status:?}");

    // A malformed message is counted and dropped; nothing breaks.
    publish_garbage().await;
    common::eventually(
        "every generator counted the malformed message",
        async || {
            trio.all()
                .iter()
                .all(|g| g.replication_status().unwrap().malformed >= 1)
        },
    )
    .await;
    let id = write(env, b).await;
    reaches(r, id, "after a malformed message").await;
    for g in trio.all() {
        let status = g.replication_status().unwrap();
        assert!(status.connected && status.reconnects == 0, "{status:?}");
    }

    // The transport fails mid-run; the writers keep writing through the outage.
    let writing = async {
        for i in 0..40 {
            write(env, if i % 2 == 0 { a } else { b }).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let started = Instant::now();
    tokio::join!(writing, outage());
    for i in 0..10 {
        write(env, if i % 2 == 0 { a } else { b }).await;
    }
    let max = a.max_allocated_token().await.unwrap();
    for g in trio.all() {
        reaches(g, max, "after the outage").await;
    }
    eprintln!(
        "{label}: outage, 50 writes and full recovery in {:?}",
        started.elapsed()
    );
    common::eventually("everyone reconnected", async || {
        trio.all().iter().all(|g| {
            let s = g.replication_status().unwrap();
            s.connected && s.reconnects >= 1
        })
    })
    .await;
    for g in trio.all() {
        assert_eq!(g.persisted_upto_position(), max);
        g.check_invariants().unwrap();
    }
    let status = r.replication_status().unwrap();
    assert!(status.sent == 0, "the reader announced: {status:?}");
    assert!(a.replication_status().unwrap().sent > 0);
}

/// An extra `LISTEN` connection: every notification on `channel` as (sender pid, payload).
/// Keep the client: dropping it closes the connection.
async fn listen(
    env: &Env,
    channel: &str,
) -> (
    tokio_postgres::Client,
    mpsc::UnboundedReceiver<(i32, String)>,
) {
    let (client, mut connection) = env.db.config.connect(tokio_postgres::NoTls).await.unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(|cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message
                && tx.send((n.process_id(), n.payload().to_owned())).is_err()
            {
                return;
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .await
        .unwrap();
    (client, rx)
}

/// The pids of the `streamid-notify` connections of this test's database.
async fn notify_pids(env: &Env) -> BTreeSet<i32> {
    let client = env.pool.get().await.unwrap();
    client
        .query(
            "SELECT pid FROM pg_stat_activity \
             WHERE application_name = $1 AND datname = current_database()",
            &[&PgNotify::APPLICATION_NAME],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

fn pg_transport(env: &Env, channel: &str) -> impl Fn() -> PgNotify + use<> {
    let config = env.db.config.clone();
    let channel = channel.to_owned();
    move || PgNotify::new(config.clone()).channel(&channel).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_notify_replicates_and_survives_terminated_listeners() {
    let env = Env::new().await;
    // Mixed case: LISTEN quotes the name and pg_notify's argument must match it exactly.
    let channel = "Positions_T";
    let trio = Trio::start(&env, pg_transport(&env, channel)).await;
    assert_eq!(
        notify_pids(&env).await.len(),
        3,
        "one dedicated connection each"
    );
    let outage = async || {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let client = env.pool.get().await.unwrap();
        let terminated = client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1 AND datname = current_database()",
                &[&PgNotify::APPLICATION_NAME],
            )
            .await
            .unwrap();
        assert_eq!(terminated.len(), 3, "one listener per generator");
    };
    let garbage = async || {
        env.exec(&format!("SELECT pg_notify('{channel}', 'garbage')"))
            .await;
    };
    scenario(&env, &trio, outage, garbage).await;
    // The pool's connections were not touched; only the listeners were replaced.
    assert_eq!(notify_pids(&env).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pg_notify_announces_after_commit_from_the_dedicated_connection() {
    let env = Env::new().await;
    let channel = "streamid";
    let (_observer, mut seen) = listen(&env, channel).await;
    let trio = Trio::start(&env, pg_transport(&env, channel)).await;
    let Trio { a, r, .. } = &trio;
    let id = write(&env, a).await;
    reaches(r, id, "warm-up").await;

    // A transaction allocates and writes, and stays open for several announcement intervals.
    let mut client = env.pool.get().await.unwrap();
    let data_pid: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let mut tx = a.transaction(&mut client).await.unwrap();
    let id = tx.next_id().await.unwrap();
    tx.execute(
        "INSERT INTO events (stream_ordering, instance_name) VALUES ($1, 'a')",
        &[&id],
    )
    .await
    .unwrap();
    while seen.try_recv().is_ok() {}
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut during = Vec::new();
    while let Ok(n) = seen.try_recv() {
        during.push(n);
    }
    let position_of = |payload: &str| -> (String, i64) {
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        (
            v["instance"].as_str().unwrap().to_owned(),
            v["position"].as_i64().unwrap(),
        )
    };
    assert!(
        during.iter().any(|(_, p)| position_of(p).0 == "a"),
        "a kept announcing while its transaction was open: {during:?}"
    );
    for (_, payload) in &during {
        let (instance, position) = position_of(payload);
        assert!(
            position < id,
            "{instance} announced {position} while ID {id} was uncommitted"
        );
    }

    tx.commit().await.unwrap();
    let notify = notify_pids(&env).await;
    assert!(!notify.contains(&data_pid));
    let deadline = Instant::now() + WAIT;
    let mut after = Vec::new();
    loop {
        let (pid, payload) = tokio::time::timeout_at(deadline.into(), seen.recv())
            .await
            .expect("no announcement of the committed ID")
            .unwrap();
        let (instance, position) = position_of(&payload);
        after.push((pid, instance.clone()));
        if instance == "a" && position >= id {
            break;
        }
    }
    for (pid, instance) in during
        .iter()
        .map(|(p, s)| (*p, position_of(s).0))
        .chain(after)
    {
        assert!(
            notify.contains(&pid) && pid != data_pid,
            "{instance}'s announcement came from backend {pid}, not a dedicated \
             streamid-notify connection ({notify:?}; data transaction on {data_pid})"
        );
    }
    reaches(r, id, "after commit").await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_replicates_and_survives_a_server_restart() {
    use std::sync::Arc;

    use streamid::replication::Redis;
    use streamid_testkit::RedisServer;

    let redis = Arc::new(
        tokio::task::spawn_blocking(RedisServer::start)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("cannot start redis-server for the tests: {e}")),
    );
    let env = Env::new().await;
    let channel = "streamid:test";
    let url = redis.url();
    let trio = Trio::start(&env, || Redis::new(&url).unwrap().channel(channel)).await;
    // A NOTIFY observer: the Redis transport never touches LISTEN/NOTIFY.
    let (_observer, mut notifications) = listen(&env, "streamid").await;
    let outage = async || {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let server = Arc::clone(&redis);
        tokio::task::spawn_blocking(move || server.stop())
            .await
            .unwrap()
            .unwrap();
        // Down long enough for failed reconnection attempts and back-off.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let server = Arc::clone(&redis);
        tokio::task::spawn_blocking(move || server.start_again())
            .await
            .unwrap()
            .unwrap();
    };
    let garbage = async || {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg("garbage")
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(receivers, 3, "one subscription per generator");
    };
    scenario(&env, &trio, outage, garbage).await;
    assert!(
        notifications.try_recv().is_err(),
        "the Redis transport sent a NOTIFY"
    );
    let status = trio.r.replication_status().unwrap();
    assert_eq!(status.transport, "redis");
}

//! Several OS processes allocate from one SQLite file (spec §4.6): no ID is handed out twice,
//! and a restart afterwards sees consistent positions.
//!
//! why: the original supports a single process on SQLite only (an in-memory counter); ours
//! advances a counter row in its own `BEGIN IMMEDIATE` transaction so processes can share
//! the file.
//!
//! A custom harness (`harness = false`): the same binary is the parent test and, with
//! `STREAMID_CHILD` set, one writer process.

// A test binary: panicking on a failed step is how it reports failure.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use streamid::{MultiWriterIdGenerator, StreamConfig};

const PROCESSES: usize = 4;
const WRITES: usize = 150;

fn writers() -> Vec<String> {
    (1..=PROCESSES).map(|i| format!("proc-{i}")).collect()
}

fn config(instance: &str) -> StreamConfig {
    StreamConfig::new("events", instance)
        .table("events", "instance_name", "stream_ordering")
        .writers(writers())
        .busy_timeout(std::time::Duration::from_secs(30))
}

/// One writer process: allocates in transactions, rolls back every 7th, commits the rest.
async fn child(path: &Path, instance: &str) -> Result<(), streamid::Error> {
    let generator = MultiWriterIdGenerator::sqlite(path, config(instance)).await?;
    for i in 0..WRITES {
        let mut tx = generator.sqlite_transaction().await?;
        let id = tx.next_id().await?;
        tx.execute(
            "INSERT INTO events (stream_ordering, instance_name) VALUES (?1, ?2)",
            (id, instance.to_owned()),
        )
        .await?;
        if i % 7 == 3 {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        // Autocommit allocations too, half completed, half given up.
        let alloc = generator.next_ids(2).await?;
        if i % 2 == 0 {
            alloc.complete().await?;
        }
    }
    generator.shutdown().await;
    Ok(())
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    if let (Ok(path), Ok(instance)) = (
        std::env::var("STREAMID_DB"),
        std::env::var("STREAMID_CHILD"),
    ) {
        if let Err(e) = runtime.block_on(child(Path::new(&path), &instance)) {
            eprintln!("child {instance}: {e}");
            std::process::exit(1);
        }
        return;
    }
    runtime.block_on(parent());
    println!("sqlite_multiprocess: ok");
}

async fn parent() {
    let dir = std::env::temp_dir().join(format!("streamid-mp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("shared.db");
    rusqlite::Connection::open(&path)
        .and_then(|c| {
            c.execute_batch(
                "CREATE TABLE events (stream_ordering INTEGER NOT NULL, instance_name TEXT)",
            )
        })
        .expect("schema");

    let exe = std::env::current_exe().expect("current exe");
    let children: Vec<_> = writers()
        .into_iter()
        .map(|w| {
            Command::new(&exe)
                .env("STREAMID_DB", &path)
                .env("STREAMID_CHILD", &w)
                .spawn()
                .expect("spawn child")
        })
        .collect();
    for mut c in children {
        let status = c.wait().expect("wait child");
        assert!(status.success(), "a writer process failed: {status}");
    }

    let conn = rusqlite::Connection::open(&path).expect("open");
    let ids: Vec<i64> = conn
        .prepare("SELECT stream_ordering FROM events")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("read rows");
    let unique: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "an ID was handed out twice");
    let committed_per_process = (0..WRITES).filter(|i| i % 7 != 3).count();
    assert_eq!(
        ids.len(),
        PROCESSES * committed_per_process,
        "rows lost or extra"
    );
    let counter: i64 = conn
        .query_row(
            "SELECT last_value FROM streamid_sequences WHERE name = 'events'",
            [],
            |r| r.get(0),
        )
        .expect("counter");
    // Every process took WRITES * 3 IDs plus perhaps one starting ID (spec §4.4), and one
    // more per recovery of a writer that had already exited while others still ran.
    let reclaimed: i64 = conn
        .query_row(
            "SELECT count(*) FROM stream_events WHERE event = 'reclaimed'",
            [],
            |r| r.get(0),
        )
        .expect("events");
    let taken = (PROCESSES * WRITES * 3) as i64 + reclaimed;
    assert!(
        (1 + taken..=1 + taken + PROCESSES as i64).contains(&counter),
        "counter {counter} does not account for {taken} IDs ({reclaimed} recoveries)"
    );

    // Positions recorded by the writers are consistent: each at most the counter, and a
    // reader started now loads exactly them (no replication ran between the processes, so
    // a writer that finished early recorded only what it knew).
    let recorded: std::collections::BTreeMap<String, i64> = conn
        .prepare(
            "SELECT instance_name, stream_id FROM stream_positions WHERE stream_name = 'events'",
        )
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .expect("positions");
    assert_eq!(recorded.len(), PROCESSES, "{recorded:?}");
    let reader = MultiWriterIdGenerator::sqlite(&path, config("reader"))
        .await
        .expect("reader");
    let low = *recorded.values().min().expect("positions");
    assert!(reader.current_token() >= low && reader.current_token() <= counter);
    for (w, p) in reader.positions() {
        assert!(
            p >= recorded[&w] && p <= counter,
            "{w} at {p}, recorded {}",
            recorded[&w]
        );
    }

    // Every writer restarts; relayed to each other, they reach P = the counter's last value
    // (spec §1.2 liveness), and new IDs continue above everything.
    let mut restarted = Vec::new();
    for w in writers() {
        restarted.push(
            MultiWriterIdGenerator::sqlite(&path, config(&w))
                .await
                .expect("restart"),
        );
    }
    let last = restarted[0].max_allocated_token().await.expect("counter");
    assert!(last >= counter);
    // Relay every announced position to everyone, in rounds until nothing moves (one pass
    // is not enough: a process's announced position rises as it learns the others').
    for _round in 0..10 {
        let before: Vec<i64> = restarted.iter().map(|g| g.current_token()).collect();
        for a in &restarted {
            for b in &restarted {
                b.advance(
                    a.instance_name(),
                    a.current_token_for_writer(a.instance_name()),
                );
            }
        }
        if restarted.iter().map(|g| g.current_token()).eq(before) {
            break;
        }
    }
    // (Recovery may run meanwhile and take further IDs for writers not yet restarted, so
    // a process may even be past `last`, never beyond the counter.)
    let now_last = restarted[0].max_allocated_token().await.expect("counter");
    for g in &restarted {
        let p = g.current_token();
        assert!(
            p >= last && p <= now_last,
            "{} at {p}, expected within {last}..={now_last}",
            g.instance_name()
        );
    }
    let next = restarted[0].next_id().await.expect("next");
    assert!(
        next.id() > last,
        "restart re-issued {} (counter {last})",
        next.id()
    );
    drop(next);
    drop((reader, restarted));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

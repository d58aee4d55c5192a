//! SQLite-only behaviour (spec §4.6, §5.4): what has no PostgreSQL counterpart or differs
//! in kind — a stream transaction allocates before its first statement, clear errors for
//! files that are corrupt, unopenable, read-only or locked, and a restart that waits for
//! the previous incarnation's open transaction through SQLite's write lock. Everything both
//! backends share is in the behaviour suite (`tests/suite`); several processes on one file
//! are in `sqlite_multiprocess.rs`.
// A test binary: panicking on an unexpected error is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use streamid::{Error, MultiWriterIdGenerator, StreamConfig};

/// A temporary directory with a database file holding table `events`; removed on drop.
struct TempDb {
    dir: PathBuf,
    path: PathBuf,
}

impl TempDb {
    fn new() -> TempDb {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "streamid-sqlite-specific-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE events (stream_ordering INTEGER NOT NULL, instance_name TEXT)",
            )
            .unwrap();
        TempDb { dir, path }
    }

    fn counter(&self) -> i64 {
        rusqlite::Connection::open(&self.path)
            .unwrap()
            .query_row(
                "SELECT last_value FROM streamid_sequences WHERE name = 'events'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Dead-writer recovery (spec §12.6) is off: these tests list a writer that never runs,
/// and recovery would take IDs for it at moments that depend on timing.
fn config(instance: &str) -> StreamConfig {
    StreamConfig::new("events", instance)
        .table("events", "instance_name", "stream_ordering")
        .writers(["writer-1", "writer-2"])
        .reclaim_dead_writers(false)
}

async fn start(path: &Path, config: StreamConfig) -> MultiWriterIdGenerator {
    MultiWriterIdGenerator::sqlite(path, config).await.unwrap()
}

/// The `Error::Sqlite` a failed start returned, as `(operation, hint, message)`.
fn sqlite_error(result: Result<MultiWriterIdGenerator, Error>) -> (String, String, String) {
    match result {
        Err(err @ Error::Sqlite { .. }) => {
            let message = err.to_string();
            let Error::Sqlite {
                operation, hint, ..
            } = err
            else {
                unreachable!()
            };
            (operation.to_owned(), hint.to_owned(), message)
        }
        other => panic!("expected Error::Sqlite, got {other:?}"),
    }
}

// why: spec §4.6/§5.4 — the counter advances in its own `BEGIN IMMEDIATE` transaction, so
// a stream transaction that already holds the write lock (after its first statement)
// cannot allocate: refused with the invalid-argument error, allocating nothing, and the
// transaction stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_after_the_first_statement_is_refused() {
    let db = TempDb::new();
    let g = start(&db.path, config("writer-1")).await;
    let mut tx = g.sqlite_transaction().await.unwrap();
    let id = tx.next_id().await.unwrap();
    assert_eq!(id, 2);
    tx.execute(
        "INSERT INTO events (stream_ordering, instance_name) VALUES (?1, ?2)",
        (id, "writer-1"),
    )
    .await
    .unwrap();
    for refused in [tx.next_id().await, tx.next_ids(2).await.map(|ids| ids[0])] {
        match refused {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains("before its first statement"), "{message}");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }
    assert_eq!(tx.ids(), vec![2], "nothing was added");
    assert_eq!(g.unfinished_ids(), 1);
    // `run` counts as a statement as well, and the transaction still commits.
    let rows: i64 = tx
        .run(|c| c.query_row("SELECT count(*) FROM events", [], |r| r.get(0)))
        .await
        .unwrap();
    assert_eq!(rows, 1, "the transaction sees its own row");
    tx.commit().await.unwrap();
    assert_eq!(g.current_token(), 2);
    assert_eq!(
        g.max_allocated_token().await.unwrap(),
        2,
        "nothing allocated"
    );
    g.check_invariants().unwrap();
}

// why: spec §4.6 ("clear errors when the file is … corrupt") — a file that is not a SQLite
// database is reported as `Error::Sqlite` naming the file and saying what to do; the file
// is left as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_file_is_reported_with_a_hint() {
    let db = TempDb::new();
    let garbage: Vec<u8> = b"this is not a SQLite database\n".repeat(200);
    std::fs::write(&db.path, &garbage).unwrap();
    let (_, hint, message) =
        sqlite_error(MultiWriterIdGenerator::sqlite(&db.path, config("writer-1")).await);
    assert!(
        hint.contains("not a SQLite database or is corrupt"),
        "{hint}"
    );
    assert!(
        message.contains(&db.path.display().to_string()),
        "{message}"
    );
    assert!(message.contains(hint.as_str()), "{message}");
    assert_eq!(std::fs::read(&db.path).unwrap(), garbage, "file untouched");
}

// why: spec §4.6 — a file that cannot be opened (its directory does not exist) is reported
// with the path and the remedy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unopenable_path_is_reported_with_a_hint() {
    let db = TempDb::new();
    let path = db.dir.join("no-such-dir").join("events.db");
    let (operation, hint, message) =
        sqlite_error(MultiWriterIdGenerator::sqlite(&path, config("writer-1")).await);
    assert_eq!(operation, "open the database");
    assert!(hint.contains("directory exists"), "{hint}");
    assert!(message.contains("no-such-dir"), "{message}");
}

/// Paths marked immutable (`chattr +i`) until dropped.
struct Immutable(Vec<PathBuf>);

fn chattr(flag: &str, path: &Path) -> bool {
    std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Immutable {
    /// `None` when that is impossible here (no chattr, no CAP_LINUX_IMMUTABLE, a
    /// filesystem without the attribute).
    fn set(paths: &[&Path]) -> Option<Immutable> {
        let mut done = Immutable(Vec::new());
        for &path in paths {
            if !chattr("+i", path) {
                return None; // `done` is dropped: its paths are reset
            }
            done.0.push(path.to_owned());
        }
        Some(done)
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        for path in &self.0 {
            if !chattr("-i", path) {
                eprintln!("chattr -i {} failed", path.display());
            }
        }
    }
}

// why: spec §4.6 ("clear errors when the file is … read-only") — a database SQLite can
// only open read-only is reported as such, not as a generic failure.
//
// The tests run as root, for whom permission bits (chmod 0444) do not apply; the file and
// its directory are made immutable with `chattr +i` instead, which binds root too. Where
// that is impossible the check is skipped with a message (it needs CAP_LINUX_IMMUTABLE and
// a filesystem with the attribute); as a non-root user chmod is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_file_is_reported_with_a_hint() {
    let db = TempDb::new();
    // Create the stream's tables first, so only writing is refused.
    drop(start(&db.path, config("writer-1")).await);
    let is_root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"));
    let result = if is_root {
        let Some(_immutable) = Immutable::set(&[&db.path, &db.dir]) else {
            eprintln!(
                "skipped: running as root and `chattr +i` is unavailable, so no file is \
                 read-only for this process"
            );
            return;
        };
        MultiWriterIdGenerator::sqlite(&db.path, config("writer-1")).await
    } else {
        use std::os::unix::fs::PermissionsExt;
        let set = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        set(&db.path, 0o444);
        set(&db.dir, 0o555);
        let result = MultiWriterIdGenerator::sqlite(&db.path, config("writer-1")).await;
        set(&db.dir, 0o755);
        set(&db.path, 0o644);
        result
    };
    let (operation, hint, message) = sqlite_error(result);
    assert!(hint.contains("read-only"), "{operation}: {hint}");
    assert!(
        message.contains(&db.path.display().to_string()),
        "{message}"
    );
}

/// Holds SQLite's write lock on `path` (`BEGIN EXCLUSIVE`) until the returned connection
/// is dropped or rolled back.
fn lock(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    conn
}

// why: spec §4.6 ("a busy timeout, and clear errors when the file is locked") — startup
// and allocation wait `busy_timeout` for another connection's write lock, then fail with
// an error that says the database stayed locked; a failed fetch leaves no marker behind
// (§5.2 step 4), so the stream moves on once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_file_gives_a_locked_error_after_the_busy_timeout() {
    let db = TempDb::new();
    let short = |instance: &str| config(instance).busy_timeout(Duration::from_millis(200));
    let g = start(&db.path, short("writer-1")).await;
    let before = g.current_token();

    let holder = lock(&db.path);
    let started = Instant::now();
    let (operation, hint, message) =
        sqlite_error(MultiWriterIdGenerator::sqlite(&db.path, short("writer-2")).await);
    assert!(started.elapsed() >= Duration::from_millis(200), "waited");
    assert!(operation.starts_with("startup"), "{operation}");
    assert!(hint.contains("locked"), "{hint}");
    assert!(message.contains("busy_timeout"), "{message}");

    match g.next_id().await {
        Err(err @ Error::Sqlite { .. }) => {
            assert!(err.to_string().contains("locked"), "{err}");
        }
        other => panic!("expected a locked error, got {other:?}"),
    }
    assert_eq!(g.unfinished_ids(), 0);
    g.check_invariants().unwrap();
    drop(holder);

    let a = g.next_id().await.unwrap();
    let id = a.id();
    drop(a);
    assert!(id > before);
    assert_eq!(g.current_token(), id, "no marker left behind");
    let g2 = start(&db.path, short("writer-2")).await;
    assert_eq!(g2.positions().get("writer-1").copied(), Some(before));
}

// why: spec §4.2 step 2a on SQLite (§4.6: the write lock replaces the advisory locks) — a
// restart must not cover an ID the previous incarnation's transaction can still commit:
// that transaction holds the write lock, so startup waits for it, then sees its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_waits_for_the_previous_incarnations_open_transaction() {
    let db = TempDb::new();
    let old = start(&db.path, config("writer-1")).await;
    old.shutdown().await; // its position writes are lost, as in a crash
    let mut tx = old.sqlite_transaction().await.unwrap();
    let id = tx.next_id().await.unwrap();
    assert_eq!(id, 2);
    tx.execute(
        "INSERT INTO events (stream_ordering, instance_name) VALUES (?1, 'writer-1')",
        (id,),
    )
    .await
    .unwrap();
    drop(old);

    let path = db.path.clone();
    let startup =
        tokio::spawn(
            async move { MultiWriterIdGenerator::sqlite(&path, config("writer-1")).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!startup.is_finished(), "startup waits for the write lock");

    tx.commit().await.unwrap();
    let g = startup.await.unwrap().expect("startup after the commit");
    assert_eq!(
        g.minimal_local_current_token(),
        2,
        "covers the committed row"
    );
    assert_eq!(g.current_token(), 2);
    assert_eq!(db.counter(), 2, "L = T adopted after the wait");
    assert_eq!(g.next_id().await.unwrap().id(), 3);
}

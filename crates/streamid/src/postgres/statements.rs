//! Every SQL statement of the PostgreSQL backend, built once from validated, quoted names
//! (FIX-7). Call sites never format SQL; the few statements that need a number spliced in
//! (simple-query batches, which cannot take parameters) are built here from integers only.

use crate::config::ValidConfig;
use crate::ident::QualifiedName;

/// The table shape of spec §8.1, exactly the original's so existing databases work as is.
pub(crate) const CREATE_POSITIONS: &str = "\
    CREATE TABLE IF NOT EXISTS stream_positions (\
        stream_name TEXT NOT NULL, \
        instance_name TEXT NOT NULL, \
        stream_id BIGINT NOT NULL\
    ); \
    CREATE UNIQUE INDEX IF NOT EXISTS stream_positions_idx \
        ON stream_positions (stream_name, instance_name)";

/// Instance ids for token strings (spec §11.4), in the original's shape; created on first
/// use, serialised by the DDL advisory lock.
pub(crate) const CREATE_INSTANCE_MAP: &str = "\
    CREATE TABLE IF NOT EXISTS instance_map (\
        instance_id SERIAL PRIMARY KEY, \
        instance_name TEXT NOT NULL\
    ); \
    CREATE UNIQUE INDEX IF NOT EXISTS instance_map_idx ON instance_map (instance_name)";
pub(crate) const INSTANCE_MAP_EXISTS: &str = "SELECT to_regclass('instance_map') IS NOT NULL";
pub(crate) const INSTANCE_ID: &str =
    "SELECT instance_id FROM instance_map WHERE instance_name = $1";
pub(crate) const INSERT_INSTANCE: &str =
    "INSERT INTO instance_map (instance_name) VALUES ($1) ON CONFLICT (instance_name) DO NOTHING";
pub(crate) const INSTANCE_NAME: &str =
    "SELECT instance_name FROM instance_map WHERE instance_id = $1";

/// Writer registrations (issue 5): one row per writer with its current epoch. Every stream
/// transaction locks its writer's row `FOR KEY SHARE` at its first allocation; an epoch
/// bump first locks the row `FOR UPDATE`, so it waits for them, and later transactions of
/// the old epoch find no row. (`KEY SHARE`, not `SHARE`: the heartbeat's plain `UPDATE`
/// must not wait for open transactions.)
pub(crate) const CREATE_RELIABILITY: &str = "\
    CREATE TABLE IF NOT EXISTS stream_writers (\
        writer_key BIGINT PRIMARY KEY, \
        stream_name TEXT NOT NULL, \
        instance_name TEXT NOT NULL, \
        epoch BIGINT NOT NULL, \
        started TIMESTAMPTZ NOT NULL DEFAULT now(), \
        heartbeat TIMESTAMPTZ NOT NULL DEFAULT now()\
    ); \
    CREATE TABLE IF NOT EXISTS stream_gaps (\
        stream_name TEXT NOT NULL, \
        instance_name TEXT NOT NULL, \
        cause TEXT NOT NULL, \
        gaps BIGINT NOT NULL, \
        PRIMARY KEY (stream_name, instance_name, cause)\
    ); \
    CREATE TABLE IF NOT EXISTS stream_events (\
        at TIMESTAMPTZ NOT NULL DEFAULT now(), \
        stream_name TEXT NOT NULL, \
        instance_name TEXT NOT NULL, \
        event TEXT NOT NULL, \
        epoch BIGINT, \
        position BIGINT, \
        by_instance TEXT\
    )";
pub(crate) const RELIABILITY_EXISTS: &str = "SELECT to_regclass('stream_writers') IS NOT NULL \
    AND to_regclass('stream_gaps') IS NOT NULL AND to_regclass('stream_events') IS NOT NULL";

/// Waits for every transaction holding the writer's row `FOR KEY SHARE` (run before an
/// epoch bump).
pub(crate) const LOCK_WRITER_ROW: &str =
    "SELECT 1 FROM stream_writers WHERE writer_key = $1 FOR UPDATE";
/// A new epoch for this writer (startup and re-registration), after [`LOCK_WRITER_ROW`].
pub(crate) const REGISTER_WRITER: &str = "\
    INSERT INTO stream_writers (writer_key, stream_name, instance_name, epoch) \
    VALUES ($1, $2, $3, 1) ON CONFLICT (writer_key) DO UPDATE \
    SET epoch = stream_writers.epoch + 1, started = now(), heartbeat = now() \
    RETURNING epoch";
/// The lease connection's heartbeat; 0 rows means another process fenced this epoch.
pub(crate) const HEARTBEAT: &str =
    "UPDATE stream_writers SET heartbeat = now() WHERE writer_key = $1 AND epoch = $2";
/// The fencing check: locks the writer's row `FOR KEY SHARE` if it still has this epoch,
/// and otherwise fails with `division_by_zero`, which aborts the transaction — so a caller
/// that ignores the fenced error still cannot commit anything in it. Integers only.
pub(crate) fn fence_check(writer_lock: i64, epoch: i64) -> String {
    format!(
        "SELECT 1 / (SELECT count(*) FROM (SELECT 1 FROM stream_writers \
         WHERE writer_key = {writer_lock} AND epoch = {epoch} FOR KEY SHARE) fence)::int"
    )
}
pub(crate) const TRY_LEASE: &str = "SELECT pg_try_advisory_lock($1::int8)";
pub(crate) const TRY_XACT_LOCK: &str = "SELECT pg_try_advisory_xact_lock($1::int8)";
/// Spec §12.6.3: a backend tagged with the writer's prefix may still commit.
pub(crate) const TAGGED_BACKENDS: &str = "\
    SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1 \
      AND datname = current_database() AND pid <> pg_backend_pid()";
/// Fences the dead writer's epoch (spec §12.6, issue 5), after [`LOCK_WRITER_ROW`].
pub(crate) const FENCE_WRITER: &str =
    "UPDATE stream_writers SET epoch = epoch + 1 WHERE writer_key = $1 RETURNING epoch";
pub(crate) const RECORD_EVENT: &str = "\
    INSERT INTO stream_events (stream_name, instance_name, event, epoch, position, by_instance) \
    VALUES ($1, $2, $3, $4, $5, $6)";
/// Registered epochs of a stream's writers (resync).
pub(crate) const LOAD_EPOCHS: &str =
    "SELECT instance_name, epoch FROM stream_writers WHERE stream_name = $1";

/// Gap-ledger increments.
pub(crate) const ADD_GAPS: &str = "\
    INSERT INTO stream_gaps (stream_name, instance_name, cause, gaps) VALUES ($1, $2, $3, $4) \
    ON CONFLICT (stream_name, instance_name, cause) DO UPDATE SET gaps = stream_gaps.gaps + EXCLUDED.gaps";

/// Checked before creating, so a user without CREATE privilege can use an existing table.
pub(crate) const POSITIONS_EXISTS: &str = "SELECT to_regclass('stream_positions') IS NOT NULL";

pub(crate) const ADVISORY_XACT_LOCK: &str = "SELECT pg_advisory_xact_lock($1::int8)";
pub(crate) const ADVISORY_XACT_LOCK_SHARED: &str = "SELECT pg_advisory_xact_lock_shared($1::int8)";

/// Who holds an advisory `bigint` lock, split into `pg_locks`' two halves.
pub(crate) const LOCK_HOLDERS: &str = "\
    SELECT a.pid, coalesce(a.state, ''), coalesce(a.application_name, ''), \
           coalesce(a.xact_start::text, ''), coalesce(a.client_addr::text, 'local') \
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
    WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
      AND l.classid::int8 = $1 AND l.objid::int8 = $2 AND l.pid <> pg_backend_pid()";

/// `$1` is the quoted sequence name as text: `to_regclass` returns NULL instead of failing
/// when it is missing, and the name never needs splicing.
pub(crate) const SEQUENCE_PROPERTIES: &str = "\
    SELECT format_type(seqtypid, NULL), seqincrement, seqcycle, seqcache \
    FROM pg_sequence WHERE seqrelid = to_regclass($1)";

/// Positions recorded for one stream, loaded at startup and on resync.
pub(crate) const LOAD_POSITIONS: &str =
    "SELECT instance_name, stream_id FROM stream_positions WHERE stream_name = $1";

/// Startup step 8: writers no longer listed lose their row (logged by the caller).
pub(crate) const DELETE_STALE_WRITERS: &str = "\
    DELETE FROM stream_positions WHERE stream_name = $1 AND instance_name <> ALL($2) \
    RETURNING instance_name, stream_id";

pub(crate) const SERVER_VERSION: &str = "SELECT current_setting('server_version_num')::int4";

/// Statements that depend on the stream's direction and names.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) sequence: QualifiedName,
    sequence_literal: String,
    /// One ID, autocommit. `nextval` runs outside any transaction so the ID is visible as
    /// allocated at once and no snapshot is held.
    pub(crate) nextval_one: String,
    /// `n` IDs in one round trip: `generate_series` beats `n` calls by orders of magnitude
    /// (anchors §D3: > 2M IDs/s).
    pub(crate) nextval_many: String,
    /// Consumes `$1` values, returning the largest: moves the sequence forward without
    /// `setval`'s risk of undoing a concurrent `nextval`.
    pub(crate) consume_values: String,
    /// The last value handed out is `last_value` only if `is_called` (FIX-1).
    pub(crate) last_allocated: String,
    /// Raises the sequence to `$1` at least, never lowers it: a concurrent `nextval` between
    /// our read and this statement is not undone (spec §4.3).
    pub(crate) setval_guarded: String,
    /// Startup serialisation on the sequence's OID (spec §4.2 step 3).
    pub(crate) sequence_lock: String,
    /// Per table, `T`: the largest ID in internal form (0 if empty).
    pub(crate) table_max: Vec<String>,
    /// Per table, a query naming both columns that reads no row: `table_max` alone cannot
    /// notice a missing instance column, and a reader may never scan.
    pub(crate) columns_exist: Vec<String>,
    /// Per table, rows at or beyond `$1` (API form), for the startup scan (spec §4.5).
    pub(crate) table_scan: Vec<String>,
    /// `Q`: the largest recorded position in internal form, or NULL.
    pub(crate) recorded_max: &'static str,
    /// The guarded upsert (spec §8.3): never moves a row back, never rewrites it unchanged.
    pub(crate) upsert_position: &'static str,
    /// The same for a registered writer's own row, written only while `$4`/`$5` is its
    /// current epoch: a fenced zombie cannot raise the row of its replacement (issue 5).
    pub(crate) upsert_own_position: &'static str,
    /// Spec §10.4 step 1: the only sequence shape that keeps IDs unique and increasing
    /// across connections (no per-connection cache).
    pub(crate) create_sequence: String,
    /// Spec §10.4 step 2 with `$1 = T`: first ID 2 on an empty stream, above every row
    /// otherwise; never moves the sequence back. No `START WITH`/`RESTART WITH`.
    pub(crate) place_sequence: String,
    /// Both §10.4 statements with `T` as subqueries, for error messages and docs.
    pub(crate) setup_script: String,
}

impl Statements {
    pub(crate) fn new(config: &ValidConfig, sequence: &QualifiedName) -> Statements {
        let seq = sequence;
        let lit = seq.regclass_literal();
        let forwards = config.sign > 0;
        let table_max = table_max_sql(config);
        let table_scan = config
            .tables
            .iter()
            .map(|t| {
                let cmp = if forwards { ">=" } else { "<=" };
                format!(
                    "SELECT {inst}::text, {id}::int8 FROM {table} WHERE {id} {cmp} $1::int8",
                    inst = t.instance_column,
                    id = t.id_column,
                    table = t.table,
                )
            })
            .collect();
        let create_sequence = format!(
            "CREATE SEQUENCE IF NOT EXISTS {seq} AS BIGINT INCREMENT BY 1 NO CYCLE CACHE 1"
        );
        let last = format!(
            "(SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END FROM {seq})"
        );
        let place_sequence = format!("SELECT setval({lit}, GREATEST(1, $1::int8, {last}), true)");
        let maxima: Vec<String> = table_max_sql(config)
            .into_iter()
            .map(|q| format!("({q})"))
            .collect();
        let setup_script = format!(
            "{create_sequence};\nSELECT setval({lit}, GREATEST(1, {}, {last}), true);",
            maxima.join(", ")
        );
        let columns_exist = config
            .tables
            .iter()
            .map(|t| {
                format!(
                    "SELECT {}, {} FROM {} LIMIT 0",
                    t.instance_column, t.id_column, t.table
                )
            })
            .collect();
        Statements {
            columns_exist,
            create_sequence,
            place_sequence,
            setup_script,
            sequence: seq.clone(),
            nextval_one: format!("SELECT nextval({lit})"),
            nextval_many: format!("SELECT nextval({lit}) FROM generate_series(1, $1::int8)"),
            consume_values: format!("SELECT max(nextval({lit})) FROM generate_series(1, $1::int8)"),
            last_allocated: format!("SELECT last_value, is_called FROM {seq}"),
            setval_guarded: format!(
                "SELECT setval({lit}, GREATEST($1::int8, (SELECT last_value FROM {seq})), true)"
            ),
            sequence_lock: format!(
                "SELECT pg_advisory_xact_lock($1::int4, {lit}::regclass::oid::int4)"
            ),
            sequence_literal: lit,
            table_max,
            table_scan,
            recorded_max: if forwards {
                "SELECT MAX(stream_id) FROM stream_positions WHERE stream_name = $1"
            } else {
                "SELECT -MIN(stream_id) FROM stream_positions WHERE stream_name = $1"
            },
            upsert_own_position: if forwards {
                "INSERT INTO stream_positions (stream_name, instance_name, stream_id) \
                 SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM stream_writers \
                 WHERE writer_key = $4 AND epoch = $5) \
                 ON CONFLICT (stream_name, instance_name) \
                 DO UPDATE SET stream_id = EXCLUDED.stream_id \
                 WHERE stream_positions.stream_id < EXCLUDED.stream_id"
            } else {
                "INSERT INTO stream_positions (stream_name, instance_name, stream_id) \
                 SELECT $1, $2, $3 WHERE EXISTS (SELECT 1 FROM stream_writers \
                 WHERE writer_key = $4 AND epoch = $5) \
                 ON CONFLICT (stream_name, instance_name) \
                 DO UPDATE SET stream_id = EXCLUDED.stream_id \
                 WHERE stream_positions.stream_id > EXCLUDED.stream_id"
            },
            upsert_position: if forwards {
                "INSERT INTO stream_positions (stream_name, instance_name, stream_id) \
                 VALUES ($1, $2, $3) ON CONFLICT (stream_name, instance_name) \
                 DO UPDATE SET stream_id = EXCLUDED.stream_id \
                 WHERE stream_positions.stream_id < EXCLUDED.stream_id"
            } else {
                "INSERT INTO stream_positions (stream_name, instance_name, stream_id) \
                 VALUES ($1, $2, $3) ON CONFLICT (stream_name, instance_name) \
                 DO UPDATE SET stream_id = EXCLUDED.stream_id \
                 WHERE stream_positions.stream_id > EXCLUDED.stream_id"
            },
        }
    }

    /// The in-transaction allocation as one simple-query message, hence one round trip
    /// (spec §7.1). The first allocation of a transaction also takes the writer lock
    /// *before* `nextval`, tags the backend with the writer's `application_name`, checks
    /// the writer's epoch `FOR SHARE` (fencing) and records the transaction id. Only
    /// integers and the validated tag are spliced.
    pub(crate) fn transaction_allocation(
        &self,
        n: usize,
        first: Option<&FirstAllocation>,
    ) -> String {
        let ids = if n == 1 {
            format!("SELECT nextval({})", self.sequence_literal)
        } else {
            format!(
                "SELECT nextval({}) FROM generate_series(1, {n})",
                self.sequence_literal
            )
        };
        let Some(first) = first else {
            return ids;
        };
        let mut sql = format!(
            "SELECT pg_advisory_xact_lock_shared({}); ",
            first.writer_lock
        );
        if let Some(fence) = &first.fence {
            sql.push_str(&format!(
                "SET LOCAL application_name = '{}'; {}; ",
                fence.tag,
                fence_check(first.writer_lock, fence.epoch)
            ));
        }
        sql.push_str(&format!("SELECT {}::text; {ids}", first.xact.current));
        sql
    }
}

/// What a transaction's first allocation adds (spec §7.1, issue 5).
#[derive(Debug, Clone)]
pub(crate) struct FirstAllocation {
    pub(crate) writer_lock: i64,
    pub(crate) xact: XactFunctions,
    /// For registered writers: the epoch to check and the `application_name` tag.
    pub(crate) fence: Option<Fence>,
}

/// A registered writer's current epoch and connection tag.
#[derive(Debug, Clone)]
pub(crate) struct Fence {
    pub(crate) epoch: i64,
    /// `streamid:<hex>:<epoch>`: hex digits, colons and digits only, safe to splice.
    pub(crate) tag: String,
}

/// Per table, `SELECT GREATEST(MAX(id), 0)` (backwards: `-MIN(id)`) in internal form.
fn table_max_sql(config: &ValidConfig) -> Vec<String> {
    config
        .tables
        .iter()
        .map(|t| {
            let agg = if config.sign > 0 {
                format!("MAX({})", t.id_column)
            } else {
                format!("-MIN({})", t.id_column)
            };
            format!("SELECT GREATEST({agg}, 0)::int8 FROM {}", t.table)
        })
        .collect()
}

/// The backend running a transaction, by its 32-bit xid as text (the low half of the
/// `xid8`), with its state and how long it has been in it.
pub(crate) const BACKEND_BY_XID: &str = "\
    SELECT pid, coalesce(state, ''), extract(epoch FROM now() - state_change)::float8 \
    FROM pg_stat_activity WHERE backend_xid::text = $1";

pub(crate) const TERMINATE_BACKEND: &str = "SELECT pg_terminate_backend($1)";

/// The transaction-id functions of the server's version (`pg_current_xact_id` arrived in
/// PostgreSQL 13; `txid_current` works before and is deprecated after).
#[derive(Debug, Clone, Copy)]
pub(crate) struct XactFunctions {
    /// Assigns and returns the current transaction's id.
    pub(crate) current: &'static str,
    /// `committed`, `aborted`, `in progress` or NULL for an id given as `$1` text.
    pub(crate) status: &'static str,
}

impl XactFunctions {
    pub(crate) fn for_version(server_version_num: i32) -> XactFunctions {
        if server_version_num >= 130_000 {
            XactFunctions {
                current: "pg_current_xact_id()",
                status: "SELECT pg_xact_status($1::text::xid8)",
            }
        } else {
            XactFunctions {
                current: "txid_current()",
                status: "SELECT txid_status($1::text::int8)",
            }
        }
    }
}

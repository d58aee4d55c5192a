//! Every SQL statement of the SQLite backend, built once from validated, quoted names.

use crate::config::ValidConfig;

/// The same table and index as on PostgreSQL (spec §8.1), so tools read both alike.
pub(crate) const CREATE_POSITIONS: &str = "\
    CREATE TABLE IF NOT EXISTS stream_positions (\
        stream_name TEXT NOT NULL, \
        instance_name TEXT NOT NULL, \
        stream_id BIGINT NOT NULL\
    ); \
    CREATE UNIQUE INDEX IF NOT EXISTS stream_positions_idx \
        ON stream_positions (stream_name, instance_name);";

/// SQLite has no sequences: one counter row per sequence name (spec §4.6).
pub(crate) const CREATE_COUNTERS: &str = "\
    CREATE TABLE IF NOT EXISTS streamid_sequences (\
        name TEXT PRIMARY KEY, \
        last_value INTEGER NOT NULL\
    );";

/// Creates the counter at 1 (so the first ID is 2, spec §10.3) if it is missing.
pub(crate) const ENSURE_COUNTER: &str = "INSERT INTO streamid_sequences (name, last_value) VALUES (?1, 1) ON CONFLICT (name) DO NOTHING";

pub(crate) const READ_COUNTER: &str = "SELECT last_value FROM streamid_sequences WHERE name = ?1";

/// Takes `?2` values. Run in its own `BEGIN IMMEDIATE` transaction: SQLite's write lock
/// makes it atomic across processes sharing the file, and committing at once means the
/// values are never handed out again, whatever the caller's transaction does.
pub(crate) const ADVANCE_COUNTER: &str = "UPDATE streamid_sequences SET last_value = last_value + ?2 WHERE name = ?1 RETURNING last_value";

/// Raises the counter to at least `?2`, never lowers it (the repair of spec §4.3).
pub(crate) const RAISE_COUNTER: &str = "UPDATE streamid_sequences SET last_value = MAX(last_value, ?2) WHERE name = ?1 RETURNING last_value";

/// The gap ledger and the event log (issue 5), as on PostgreSQL.
pub(crate) const CREATE_RELIABILITY: &str = "\
    CREATE TABLE IF NOT EXISTS stream_gaps (\
        stream_name TEXT NOT NULL, \
        instance_name TEXT NOT NULL, \
        cause TEXT NOT NULL, \
        gaps INTEGER NOT NULL, \
        PRIMARY KEY (stream_name, instance_name, cause)\
    ); \
    CREATE TABLE IF NOT EXISTS stream_events (\
        at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), \
        stream_name TEXT NOT NULL, \
        instance_name TEXT NOT NULL, \
        event TEXT NOT NULL, \
        epoch INTEGER, \
        position INTEGER, \
        by_instance TEXT\
    );";
pub(crate) const RECORD_EVENT: &str = "\
    INSERT INTO stream_events (stream_name, instance_name, event, position, by_instance) \
    VALUES (?1, ?2, ?3, ?4, ?5)";
pub(crate) const ADD_GAPS: &str = "\
    INSERT INTO stream_gaps (stream_name, instance_name, cause, gaps) VALUES (?1, ?2, ?3, ?4) \
    ON CONFLICT (stream_name, instance_name, cause) DO UPDATE SET gaps = stream_gaps.gaps + excluded.gaps";

/// Instance ids for token strings (spec §11.4); SQLite assigns the integer key.
pub(crate) const CREATE_INSTANCE_MAP: &str = "\
    CREATE TABLE IF NOT EXISTS instance_map (\
        instance_id INTEGER PRIMARY KEY, \
        instance_name TEXT NOT NULL\
    ); \
    CREATE UNIQUE INDEX IF NOT EXISTS instance_map_idx ON instance_map (instance_name);";
pub(crate) const INSTANCE_ID: &str =
    "SELECT instance_id FROM instance_map WHERE instance_name = ?1";
pub(crate) const INSERT_INSTANCE: &str =
    "INSERT INTO instance_map (instance_name) VALUES (?1) ON CONFLICT (instance_name) DO NOTHING";
pub(crate) const INSTANCE_NAME: &str =
    "SELECT instance_name FROM instance_map WHERE instance_id = ?1";

pub(crate) const LOAD_POSITIONS: &str =
    "SELECT instance_name, stream_id FROM stream_positions WHERE stream_name = ?1";

/// Statements that depend on the stream's direction and names.
#[derive(Debug)]
pub(crate) struct Statements {
    /// The counter row's name: the configured sequence name, else the stream name.
    pub(crate) counter: String,
    /// Per table: a query naming both columns that reads no row.
    pub(crate) columns_exist: Vec<String>,
    /// Per table, `T` in internal form (0 if empty). `COALESCE` because SQLite's scalar
    /// `MAX(x, 0)` is NULL when `x` is.
    pub(crate) table_max: Vec<String>,
    /// Per table, rows at or beyond `?1` (API form).
    pub(crate) table_scan: Vec<String>,
    /// `Q`, internal form, or NULL.
    pub(crate) recorded_max: &'static str,
    /// The guarded upsert (spec §8.3), accepted by SQLite as written for PostgreSQL.
    pub(crate) upsert_position: &'static str,
}

impl Statements {
    pub(crate) fn new(config: &ValidConfig) -> Statements {
        let forwards = config.sign > 0;
        let each = |f: &dyn Fn(&crate::config::TableSpec) -> String| -> Vec<String> {
            config.tables.iter().map(f).collect()
        };
        Statements {
            counter: config
                .sequence
                .as_ref()
                .map_or_else(|| config.stream.clone(), |s| s.plain()),
            columns_exist: each(&|t| {
                format!(
                    "SELECT {}, {} FROM {} LIMIT 0",
                    t.instance_column, t.id_column, t.table
                )
            }),
            table_max: each(&|t| {
                let agg = if forwards {
                    format!("MAX({})", t.id_column)
                } else {
                    format!("-MIN({})", t.id_column)
                };
                format!("SELECT MAX(COALESCE({agg}, 0), 0) FROM {}", t.table)
            }),
            table_scan: each(&|t| {
                let cmp = if forwards { ">=" } else { "<=" };
                format!(
                    "SELECT CAST({inst} AS TEXT), {id} FROM {table} WHERE {id} {cmp} ?1",
                    inst = t.instance_column,
                    id = t.id_column,
                    table = t.table,
                )
            }),
            recorded_max: if forwards {
                "SELECT MAX(stream_id) FROM stream_positions WHERE stream_name = ?1"
            } else {
                "SELECT -MIN(stream_id) FROM stream_positions WHERE stream_name = ?1"
            },
            upsert_position: if forwards {
                "INSERT INTO stream_positions (stream_name, instance_name, stream_id) \
                 VALUES (?1, ?2, ?3) ON CONFLICT (stream_name, instance_name) \
                 DO UPDATE SET stream_id = excluded.stream_id \
                 WHERE stream_positions.stream_id < excluded.stream_id"
            } else {
                "INSERT INTO stream_positions (stream_name, instance_name, stream_id) \
                 VALUES (?1, ?2, ?3) ON CONFLICT (stream_name, instance_name) \
                 DO UPDATE SET stream_id = excluded.stream_id \
                 WHERE stream_positions.stream_id > excluded.stream_id"
            },
        }
    }

    /// Startup step 8 (spec §4.6: `NOT IN (?, …)`): `?1` is the stream, `?2…` the writers.
    /// Only placeholders are spliced.
    pub(crate) fn delete_stale_writers(writers: usize) -> String {
        let marks: Vec<String> = (2..writers + 2).map(|i| format!("?{i}")).collect();
        format!(
            "DELETE FROM stream_positions WHERE stream_name = ?1 AND instance_name NOT IN ({}) \
             RETURNING instance_name, stream_id",
            marks.join(", ")
        )
    }
}

//! The reference model of startup's in-memory part (spec §4.2 steps 9–14, §4.5), the
//! oracle for [`Startup`](crate::Startup).

use super::Model;

/// What startup read from the database, in internal form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupInput {
    /// This process's instance name.
    pub own: String,
    /// `W`; empty means anyone may write.
    pub writers: Vec<String>,
    /// `stream_positions` rows of the stream (step 9), one per instance.
    pub loaded: Vec<(String, i64)>,
    /// The writer's starting position (step 10, §4.4); `None` for readers.
    pub start: Option<i64>,
    /// `T`, the largest ID in the backing tables (0 if empty).
    pub table_max: i64,
    /// Rows `(instance, id)` of the backing tables, any order; the scan reads those
    /// `>= m` (§4.5).
    pub rows: Vec<(Option<String>, i64)>,
}

impl Model {
    /// Startup's steps 9–14, literally, from a tracker state with nothing known (spec §3.1:
    /// `P = max_seen = announced = 1`).
    ///
    /// One reading is fixed here where the text is ambiguous: the §4.5 scan assigns
    /// `positions[own]` from own rows only when `own` already has an entry (a writer),
    /// since readers have no own entry (§4.1, §6.5).
    pub fn startup(input: &StartupInput) -> Model {
        let own = input.own.as_str();
        let names: Vec<&str> = input.writers.iter().map(String::as_str).collect();
        let mut m = Model::new(own, &names, &[], 1);
        m.positions.clear();
        m.max_seen = 1;
        m.announced = 1;
        let listed = |w: &str| input.writers.iter().any(|x| x == w);
        // Step 9.
        if !input.writers.is_empty() {
            for (instance, value) in &input.loaded {
                if listed(instance) {
                    m.positions.insert(instance.clone(), *value);
                }
            }
        }
        // Step 10.
        if let Some(start) = input.start {
            m.positions.insert(own.to_owned(), start);
        }
        // Step 11 (§4.5).
        let mut largest_row = None;
        match m.positions.values().copied().min() {
            None => m.persisted = input.table_max.max(1),
            Some(low) => {
                m.persisted = low;
                let mut rows: Vec<(Option<String>, i64)> = input
                    .rows
                    .iter()
                    .filter(|(_, id)| *id >= low)
                    .cloned()
                    .collect();
                rows.sort_by_key(|(_, id)| *id);
                for (instance, id) in rows {
                    m.update_persisted(Some(id));
                    if instance.as_deref() == Some(own) && m.positions.contains_key(own) {
                        m.positions.insert(own.to_owned(), id);
                    }
                    largest_row = Some(id);
                }
            }
        }
        // Step 12.
        for w in &input.writers {
            m.positions.entry(w.clone()).or_insert(m.persisted);
        }
        // Step 13.
        let mut max_seen = m.persisted;
        for v in input
            .start
            .into_iter()
            .chain(largest_row)
            .chain(m.positions.values().copied())
        {
            max_seen = max_seen.max(v);
        }
        m.max_seen = max_seen;
        m.announced = max_seen;
        // Step 14.
        if input.writers.is_empty() {
            m.positions.insert(own.to_owned(), m.persisted);
        }
        m
    }
}

//! proptest strategies for [`Sim`](super::Sim) and [`Solo`](super::Solo) op sequences.
//!
//! Ops carry raw small indices that the harnesses resolve modulo the current sizes, so
//! every generated (and every shrunk) sequence is applicable. Weights favour fetches,
//! finishes and deliveries, keeping a few IDs in flight most of the time.

use proptest::collection::vec;
use proptest::prelude::*;

use super::{Op, SoloOp, StartupInput};

/// A small index, mostly 0–3 so that shrinking and reading failures stay easy.
fn small() -> impl Strategy<Value = u8> {
    prop_oneof![3 => 0u8..4, 1 => any::<u8>()]
}

/// One [`Op`] of a [`Sim`](super::Sim).
pub fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => small().prop_map(|w| Op::BeginFetch { w }),
        2 => (small(), small(), small()).prop_map(|(w, fetch, n)| Op::Assign { w, fetch, n }),
        4 => (small(), small(), small()).prop_map(|(w, fetch, n)| Op::CompleteFetch { w, fetch, n }),
        1 => (small(), small(), any::<bool>())
            .prop_map(|(w, fetch, consumed_ids)| Op::CancelFetch { w, fetch, consumed_ids }),
        6 => (small(), small(), small(), any::<bool>(), any::<bool>()).prop_map(
            |(w, pick, count, committed, reverse)| Op::Finish { w, pick, count, committed, reverse }
        ),
        5 => small().prop_map(|w| Op::Announce { w }),
        8 => (small(), small()).prop_map(|(msg, to)| Op::Deliver { msg, to }),
        1 => small().prop_map(|msg| Op::Duplicate { msg }),
        1 => small().prop_map(|msg| Op::Drop { msg }),
        2 => small().prop_map(|w| Op::Settle { w }),
        2 => Just(Op::Gossip),
        1 => (small(), any::<u8>()).prop_map(|(to, value)| Op::Stray { to, value }),
    ]
}

/// Up to `max` [`Op`]s.
pub fn ops(max: usize) -> impl Strategy<Value = Vec<Op>> {
    vec(op(), 0..=max)
}

/// A [`Sim`](super::Sim) setup: 1–4 writers, and whether the writer list is empty (one
/// case in five).
pub fn sim_setup() -> impl Strategy<Value = (usize, bool)> {
    (1usize..=4, prop::bool::weighted(0.2))
}

/// One [`SoloOp`].
pub fn solo_op() -> impl Strategy<Value = SoloOp> {
    prop_oneof![
        3 => Just(SoloOp::BeginFetch),
        2 => (small(), small()).prop_map(|(fetch, n)| SoloOp::Assign { fetch, n }),
        3 => (small(), small()).prop_map(|(fetch, n)| SoloOp::CompleteFetch { fetch, n }),
        1 => (small(), any::<bool>())
            .prop_map(|(fetch, consumed_ids)| SoloOp::CancelFetch { fetch, consumed_ids }),
        5 => (small(), small(), any::<bool>(), any::<bool>()).prop_map(
            |(pick, count, committed, reverse)| SoloOp::Finish { pick, count, committed, reverse }
        ),
        1 => (small(), any::<bool>()).prop_map(|(pick, phantom)| SoloOp::FinishUnknown { pick, phantom }),
        3 => (small(), small()).prop_map(|(who, n)| SoloOp::OtherAllocate { who, n }),
        4 => (small(), any::<bool>()).prop_map(|(pick, committed)| SoloOp::OtherDecide { pick, committed }),
        5 => (small(), small()).prop_map(|(who, back)| SoloOp::Advance { who, back }),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(value, echo)| SoloOp::Stray { value, echo }),
    ]
}

/// Up to `max` [`SoloOp`]s.
pub fn solo_ops(max: usize) -> impl Strategy<Value = Vec<SoloOp>> {
    vec(solo_op(), 0..=max)
}

/// A [`Solo`](super::Solo) setup: `(open, initial positions of a, b, c, persisted)`, small
/// values, so that `P` may start below the minimum position or above some.
pub fn solo_setup() -> impl Strategy<Value = (bool, [Option<i64>; 3], i64)> {
    let pos = prop::option::of(1i64..12);
    (
        prop::bool::weighted(0.2),
        [pos.clone(), pos.clone(), pos],
        1i64..10,
    )
}

/// A database state for [`Solo::started`](super::Solo::started): `a` is a listed writer
/// (half the cases), a reader, or on a stream anyone may write; `stream_positions` rows
/// for some of `a`, `b`, `c` and a removed writer; table rows with any instance or NULL.
pub fn startup_input() -> impl Strategy<Value = StartupInput> {
    let mode = prop_oneof![2 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)];
    let instance = prop::sample::select(vec!["a", "b", "c", "gone"]);
    let loaded = prop::collection::btree_map(instance.clone(), 1i64..20, 0..4);
    let rows = vec((prop::option::weighted(0.8, instance), 1i64..25), 0..10);
    (mode, loaded, 1i64..25, 0i64..25, rows).prop_map(|(mode, loaded, start, table_max, rows)| {
        let writers: &[&str] = match mode {
            0 => &["a", "b", "c"],
            1 => &["b", "c"],
            _ => &[],
        };
        StartupInput {
            own: "a".to_owned(),
            writers: writers.iter().map(|w| (*w).to_owned()).collect(),
            loaded: loaded.into_iter().map(|(i, v)| (i.to_owned(), v)).collect(),
            start: (mode == 0).then_some(start),
            table_max,
            rows: rows
                .into_iter()
                .map(|(i, id)| (i.map(str::to_owned), id))
                .collect(),
        }
    })
}

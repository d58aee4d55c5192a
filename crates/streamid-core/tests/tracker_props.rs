//! Property tests of the position tracker against the reference model and the global
//! safety and liveness guarantee (spec §1.2, §3.2), plus named regression scenarios.

use proptest::prelude::*;
use streamid_core::testing::strategy::{ops, sim_setup, solo_ops, solo_setup};
use streamid_core::testing::{Op, Sim, Solo, SoloOp};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Several writers, one sequence, a lossy reordering bus.
    #[test]
    fn multi_writer_sim_is_safe_and_live((writers, open) in sim_setup(), ops in ops(300)) {
        Sim::new(writers, open).run(&ops).map_err(TestCaseError::fail)?;
    }

    /// One tracker, other writers heard at arbitrary truthful positions.
    #[test]
    fn single_tracker_matches_model((open, initial, persisted) in solo_setup(), ops in solo_ops(300)) {
        Solo::new(open, initial, persisted).run(&ops).map_err(TestCaseError::fail)?;
    }
}

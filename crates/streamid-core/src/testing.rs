//! Test support shared by property tests, the async crate's tests and benchmarks
//! (feature `testing`).

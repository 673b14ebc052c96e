//! `duet-tests`: the end-to-end test harness, the impaired-network shaper (`duet-impair`)
//! and the benchmark runner. The tests themselves live in `tests/tests/`.

pub mod bench;
pub mod harness;
pub mod impair;

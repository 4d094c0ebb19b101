//! Integration tests of `caer-calibrate`: the real binary on generated datasets and on the
//! committed tiny fixture bundle (`tests/golden/bundle`, random weights: predictions are
//! arbitrary but deterministic), each test in its own temp dir.

mod util;

mod clip_parity;
mod collect;
mod compare;
mod errors;
mod eval;
mod fit;
mod golden;
mod synth;

//! Image encoder throughput through tract, at batch 1 and batch 8.
//!
//! `cargo bench -p caer-firmware --bench encoder`; the bundle is `$CAER_BENCH_BUNDLE`, or the
//! tiny fixture in `tests/golden/bundle` by default (which only checks that the bench runs:
//! time the full-size bundle for real figures). `$CAER_BENCH_THREADS` sets tract's matmul
//! threads (default: every core). Inputs are constant mid-grey images: the encoder's cost does
//! not depend on pixel values. Prints one line per batch size.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use caer::pipeline::model::backend::{InferenceBackend, TractBackend, TractOptions};
use caer::pipeline::model::bundle::Bundle;

/// Timed runs per batch size (after one warm-up run), and the time budget that may cut
/// them short on slow boards.
const RUNS: usize = 10;
const BUDGET: Duration = Duration::from_secs(60);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var_os("CAER_BENCH_BUNDLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/bundle")
        });
    let bundle = Bundle::load(&dir)?;
    let mut options = TractOptions::default();
    if let Ok(threads) = std::env::var("CAER_BENCH_THREADS") {
        options.threads = threads
            .parse::<NonZeroUsize>()
            .map_err(|e| format!("CAER_BENCH_THREADS={threads:?}: {e}"))?;
    }
    let started = Instant::now();
    let backend = Arc::new(TractBackend::load(&bundle, &options)?);
    let dims = backend.dims();
    println!(
        "bundle {} ({}), S={} D={}, {} threads, load+optimise {:.2} s",
        dir.display(),
        bundle.manifest().model_id,
        dims.input_size,
        dims.embed_dim,
        options.threads,
        started.elapsed().as_secs_f64()
    );
    for batch in [1usize, 8] {
        let pixels = vec![0.5f32; batch * dims.image_len()];
        let mut embeddings = vec![0.0f32; batch * dims.embed_dim];
        backend.encode_images(&pixels, batch, &mut embeddings)?; // warm-up
        let mut times = Vec::with_capacity(RUNS);
        let budget = Instant::now();
        while times.len() < RUNS && (times.is_empty() || budget.elapsed() < BUDGET) {
            let start = Instant::now();
            backend.encode_images(&pixels, batch, &mut embeddings)?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "encoder batch {batch}: median {median:.2} ms/call, {:.2} ms/image (min {:.2} ms/image, {} runs)",
            median / batch as f64,
            times[0] / batch as f64,
            times.len()
        );
    }
    Ok(())
}

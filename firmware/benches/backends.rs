//! Image encoder throughput of tract fp32, and with the `ort` feature ONNX Runtime fp32 and
//! ONNX Runtime dynamic int8 on the CPU, at batch 1 and batch 8, with the same thread count.
//!
//! ```text
//! cargo bench -p caer-firmware --bench backends                  # tract only
//! ORT_DYLIB_PATH=/path/to/libonnxruntime.so \
//!   cargo bench -p caer-firmware --features ort --bench backends
//! ```
//!
//! Environment: `CAER_BENCH_BUNDLE` (default: the tiny fixture in `tests/golden/bundle`, which
//! only checks that the bench runs; time the full-size bundle for real figures),
//! `CAER_BENCH_THREADS` (default: every core), `ORT_DYLIB_PATH` (the ONNX Runtime library).
//! Inputs are constant mid-grey images: the encoder's cost does not depend on pixel values.
//! Prints one line per backend and batch size, then a summary table in ms/image.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[cfg(feature = "ort")]
use caer::pipeline::model::backend::ort::{OrtBackend, OrtMode, OrtOptions};
use caer::pipeline::model::backend::{InferenceBackend, TractBackend, TractOptions};
use caer::pipeline::model::bundle::Bundle;

/// Timed runs per batch size (after one warm-up run), and the time budget that may cut
/// them short on slow boards.
const RUNS: usize = 10;
const BUDGET: Duration = Duration::from_secs(60);
const BATCHES: [usize; 2] = [1, 8];

/// Median and fastest time per image, in ms.
struct Figures {
    median_ms: f64,
    min_ms: f64,
    runs: usize,
}

fn time(backend: &dyn InferenceBackend, batch: usize) -> Result<Figures, caer::InferenceError> {
    let dims = backend.dims();
    let pixels = vec![0.5f32; batch * dims.image_len()];
    let mut embeddings = vec![0.0f32; batch * dims.embed_dim];
    backend.encode_images(&pixels, batch, &mut embeddings)?; // warm-up
    let mut times = Vec::with_capacity(RUNS);
    let budget = Instant::now();
    while times.len() < RUNS && (times.is_empty() || budget.elapsed() < BUDGET) {
        let start = Instant::now();
        backend.encode_images(&pixels, batch, &mut embeddings)?;
        times.push(start.elapsed().as_secs_f64() * 1e3 / batch as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(Figures {
        median_ms: times[times.len() / 2],
        min_ms: times[0],
        runs: times.len(),
    })
}

fn threads() -> Result<NonZeroUsize, Box<dyn std::error::Error>> {
    match std::env::var("CAER_BENCH_THREADS") {
        Ok(text) => Ok(text
            .parse()
            .map_err(|e| format!("CAER_BENCH_THREADS={text:?}: {e}"))?),
        Err(_) => Ok(std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)),
    }
}

/// The backends timed, in the order of the table.
const CANDIDATES: &[&str] = &[
    "tract fp32",
    #[cfg(feature = "ort")]
    "ort fp32",
    #[cfg(feature = "ort")]
    "ort int8-dynamic",
];

fn load(
    label: &str,
    bundle: &Bundle,
    threads: NonZeroUsize,
) -> Result<Box<dyn InferenceBackend>, Box<dyn std::error::Error>> {
    #[cfg(feature = "ort")]
    let mode = match label {
        "ort fp32" => Some(OrtMode::Cpu),
        "ort int8-dynamic" => Some(OrtMode::CpuInt8),
        _ => None,
    };
    #[cfg(feature = "ort")]
    if let Some(mode) = mode {
        let options = OrtOptions {
            threads,
            ..OrtOptions::new(mode)
        };
        return Ok(Box::new(OrtBackend::load(bundle, &options)?));
    }
    debug_assert_eq!(label, "tract fp32");
    Ok(Box::new(TractBackend::load(
        bundle,
        &TractOptions { threads },
    )?))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::var_os("CAER_BENCH_BUNDLE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/bundle")
        });
    let bundle = Bundle::load(&dir)?;
    let threads = threads()?;
    let dims = bundle.dims();
    println!(
        "bundle {} ({}), S={} D={}, {threads} threads",
        dir.display(),
        bundle.manifest().model_id,
        dims.input_size,
        dims.embed_dim,
    );

    let mut rows: Vec<(&'static str, Vec<Figures>)> = Vec::new();
    for &label in CANDIDATES {
        let started = Instant::now();
        let backend = load(label, &bundle, threads)?;
        println!(
            "{label}: load+optimise {:.2} s",
            started.elapsed().as_secs_f64()
        );
        let mut figures = Vec::new();
        for batch in BATCHES {
            let f = time(backend.as_ref(), batch)?;
            println!(
                "{label} batch {batch}: median {:.2} ms/image (min {:.2} ms/image, {} runs)",
                f.median_ms, f.min_ms, f.runs
            );
            figures.push(f);
        }
        rows.push((label, figures));
    }

    println!("\nimage encoder, median ms/image ({threads} threads):");
    println!("| backend | batch 1 | batch 8 |");
    println!("| --- | ---: | ---: |");
    for (label, figures) in &rows {
        println!(
            "| {label} | {:.2} | {:.2} |",
            figures[0].median_ms, figures[1].median_ms
        );
    }
    Ok(())
}

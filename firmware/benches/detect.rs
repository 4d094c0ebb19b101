//! Face detection time on one 1920x1080 frame (a camera's full-HD frame), every detector in
//! one run so that the figures compare.
//!
//! `cargo bench -p caer-firmware --bench detect` (add `--features ort` and set
//! `ORT_DYLIB_PATH` for the ONNX Runtime rows; `scripts/bench.sh` does). The frame is the
//! shipped group photograph (`firmware/testdata/faces/solvay.jpg`, 29 faces) scaled to fit
//! a 1920x1080 grey canvas (aspect kept: faces of 52 to 75 pixels), a classroom-like scene
//! of many small faces. Detectors: SeetaFace with the daemon's default settings and with
//! `min_face_size` 40; BlazeFace from the fixture bundle (`tests/golden/bundle`; the network
//! is the real one) with the default tiles on tract and on ONNX Runtime (CPU, and CUDA when
//! built with feature `cuda`, which then needs a GPU and ONNX Runtime's CUDA provider).
//! Prints ms/frame (median and fastest of the timed runs), the faces found, and how many of
//! the 29 they hit.
//! Threads: `CAER_BENCH_THREADS` (default every core).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use std::sync::Arc;

use caer::pipeline::detect::{
    BlazeConfig, BlazeDetector, FaceDetector, SeetaConfig, SeetaDetector,
};
use caer::pipeline::frame::Frame;
use caer::pipeline::model::backend::{
    FaceDetectorNetwork, InferenceBackend, TractBackend, TractOptions,
};
use caer::pipeline::model::bundle::Bundle;
use caer::pipeline::track::iou;

const RUNS: usize = 10;

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;
const BUDGET: Duration = Duration::from_secs(60);

/// The Solvay faces in photo pixels, as the detection tests read them.
fn solvay_faces() -> BenchResult<Vec<[f32; 4]>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/faces/expected.json");
    let all: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    Ok(serde_json::from_value(all["solvay.jpg"].clone())?)
}

/// The photo scaled onto the canvas, and the expected faces moved with it.
fn full_hd_frame() -> BenchResult<(Frame, Vec<[f32; 4]>)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/faces/solvay.jpg");
    let photo = image::open(&path)?.to_rgb8();
    let (w, h) = photo.dimensions();
    let scale = (1920.0 / f64::from(w)).min(1080.0 / f64::from(h));
    let (sw, sh) = (
        (f64::from(w) * scale).round() as u32,
        (f64::from(h) * scale).round() as u32,
    );
    let scaled = image::imageops::resize(&photo, sw, sh, image::imageops::Triangle);
    let mut canvas = image::RgbImage::from_pixel(1920, 1080, image::Rgb([110, 110, 110]));
    let (left, top) = ((1920 - sw) / 2, (1080 - sh) / 2);
    image::imageops::replace(&mut canvas, &scaled, i64::from(left), i64::from(top));
    let (sx, sy) = (sw as f32 / w as f32, sh as f32 / h as f32);
    let faces = solvay_faces()?
        .iter()
        .map(|b| {
            [
                b[0] * sx + left as f32,
                b[1] * sy + top as f32,
                b[2] * sx + left as f32,
                b[3] * sy + top as f32,
            ]
        })
        .collect();
    Ok((Frame::new(canvas, 0), faces))
}

/// Expected faces hit by some detection with IoU >= 0.5.
fn hits(found: &[caer::pipeline::detect::Detection], expected: &[[f32; 4]]) -> usize {
    expected
        .iter()
        .filter(|e| found.iter().any(|d| iou(&d.bbox, e) >= 0.5))
        .count()
}

/// A face detector network limited to one tile per call.
#[derive(Debug)]
struct OneTileAtATime(Arc<dyn FaceDetectorNetwork>);

impl FaceDetectorNetwork for OneTileAtATime {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn max_batch(&self) -> usize {
        1
    }
    fn run(
        &self,
        images: &[f32],
        batch: usize,
        regressors: &mut [f32],
        logits: &mut [f32],
    ) -> Result<(), caer::InferenceError> {
        self.0.run(images, batch, regressors, logits)
    }
}

fn time(
    name: &str,
    detector: &mut dyn FaceDetector,
    frame: &Frame,
    expected: &[[f32; 4]],
) -> BenchResult<()> {
    let found = detector.detect(frame)?; // warm-up
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < RUNS && (times.is_empty() || start.elapsed() < BUDGET) {
        let t = Instant::now();
        std::hint::black_box(detector.detect(frame)?);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{name:<34} 1920x1080: median {:7.1} ms/frame, fastest {:7.1} ms ({} runs), {} faces, {}/29 expected found",
        times[times.len() / 2],
        times[0],
        times.len(),
        found.len(),
        hits(&found, expected),
    );
    Ok(())
}

fn main() -> BenchResult<()> {
    caer::pipeline::model::backend::isolate_runtime_cache();
    let threads = std::env::var("CAER_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .or_else(|| std::thread::available_parallelism().ok())
        .unwrap_or(NonZeroUsize::MIN);
    let (frame, expected) = full_hd_frame()?;
    for min_face_size in [20, 40] {
        let config = SeetaConfig {
            min_face_size,
            ..SeetaConfig::default()
        };
        let mut detector = SeetaDetector::new(config)?;
        let name = format!("seeta min_face_size {min_face_size}");
        time(&name, &mut detector, &frame, &expected)?;
    }

    let bundle_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/bundle");
    let bundle = Bundle::load(bundle_dir)?;
    let tiles = BlazeConfig::default().tile_sizes;
    let tract = TractBackend::load(&bundle, &TractOptions { threads })?;
    #[cfg_attr(not(feature = "ort"), allow(unused_mut))]
    let mut backends: Vec<Box<dyn InferenceBackend>> = vec![Box::new(tract)];
    #[cfg(feature = "ort")]
    {
        use caer::pipeline::model::backend::ort::{OrtBackend, OrtMode, OrtOptions};
        let options = OrtOptions {
            threads,
            ..OrtOptions::new(OrtMode::Cpu)
        };
        backends.push(Box::new(OrtBackend::load(&bundle, &options)?));
        #[cfg(feature = "cuda")]
        backends.push(Box::new(OrtBackend::load(
            &bundle,
            &OrtOptions {
                threads,
                ..OrtOptions::new(OrtMode::Cuda)
            },
        )?));
    }
    for backend in backends {
        let network = backend.load_face_detector(&bundle)?;
        let batch = network.max_batch();
        if batch > 1 {
            // The same network one tile per call: what batching the tiles gains.
            let single = Arc::new(OneTileAtATime(network.clone()));
            let mut detector = BlazeDetector::new(single, BlazeConfig::default())?;
            let name = format!("blaze {} batch 1", backend.name());
            time(&name, &mut detector, &frame, &expected)?;
        }
        let mut detector = BlazeDetector::new(network, BlazeConfig::default())?;
        let name = format!("blaze {} batch {batch}", backend.name());
        time(&name, &mut detector, &frame, &expected)?;
    }
    println!("(blaze: tiles {tiles:?}, 108 network runs per frame)");
    Ok(())
}

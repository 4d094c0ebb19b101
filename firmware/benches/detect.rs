//! Face detection time on one 1920x1080 frame (a camera's full-HD frame), every detector in
//! one run so that the figures compare.
//!
//! `cargo bench -p caer-firmware --bench detect` (add `--features ort` and set
//! `ORT_DYLIB_PATH` for the ONNX Runtime rows; `scripts/bench.sh` does). The frame is the
//! shipped group photograph (`firmware/testdata/faces/solvay.jpg`, 29 faces) scaled to fit
//! a 1920x1080 grey canvas (aspect kept: faces of 52 to 75 pixels), a classroom-like scene
//! of many small faces. Detectors: SeetaFace with the daemon's default settings and with
//! `min_face_size` 40; BlazeFace from the fixture bundle (`tests/golden/bundle`; the network
//! is the real one) on tract and on ONNX Runtime (CPU, and CUDA when built with feature
//! `cuda`, which then needs a GPU and ONNX Runtime's CUDA provider): as it was the default
//! before issue 15 (tiles 224, 448, 896, no second look, a full look every frame) and as it
//! is now (a full look with the 112 tile and the second look; a look near the 29 faces, what
//! the daemon does between full looks; their average over `detect.full_every` frames).
//! Prints ms/frame (median and fastest of the timed runs), the faces found, and how many of
//! the 29 they hit.
//! Threads: `CAER_BENCH_THREADS` (default every core).

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use caer::pipeline::detect::{
    BlazeConfig, BlazeDetector, DetectConfig, DetectError, Detection, FaceDetector, SeetaConfig,
    SeetaDetector,
};
use caer::pipeline::frame::Frame;
use caer::pipeline::model::backend::{InferenceBackend, TractBackend, TractOptions};
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
fn hits(found: &[Detection], expected: &[[f32; 4]]) -> usize {
    expected
        .iter()
        .filter(|e| found.iter().any(|d| iou(&d.bbox, e) >= 0.5))
        .count()
}

/// Times `look` on `frame`; prints and returns its median in ms.
fn time(
    name: &str,
    look: &mut dyn FnMut(&Frame) -> Result<Vec<Detection>, DetectError>,
    frame: &Frame,
    expected: &[[f32; 4]],
) -> BenchResult<f64> {
    let found = look(frame)?; // warm-up
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < RUNS && (times.is_empty() || start.elapsed() < BUDGET) {
        let t = Instant::now();
        std::hint::black_box(look(frame)?);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{name:<44} 1920x1080: median {median:7.1} ms/frame, fastest {:7.1} ms ({} runs), {} faces, {}/29 expected found",
        times[0],
        times.len(),
        found.len(),
        hits(&found, expected),
    );
    Ok(median)
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
        time(&name, &mut |f| detector.detect(f), &frame, &expected)?;
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
    // Before issue 15: tiles 224, 448, 896, no second look, a full look every frame.
    let before = BlazeConfig {
        tile_sizes: vec![224, 448, 896],
        second_look_threshold: 0.0,
        ..BlazeConfig::default()
    };
    let every = DetectConfig::default().full_every;
    for backend in backends {
        let network = backend.load_face_detector(&bundle)?;
        let name = backend.name();
        let mut old = BlazeDetector::new(network.clone(), before.clone())?;
        time(
            &format!("blaze {name} before: full look"),
            &mut |f| old.detect(f),
            &frame,
            &expected,
        )?;
        let mut now = BlazeDetector::new(network, BlazeConfig::default())?;
        let full = time(
            &format!("blaze {name} default: full look"),
            &mut |f| now.detect(f),
            &frame,
            &expected,
        )?;
        // Between full looks: near the tracks (here the 29 faces' own boxes).
        let near = time(
            &format!("blaze {name} default: look near 29 faces"),
            &mut |f| now.detect_near(f, &expected),
            &frame,
            &expected,
        )?;
        let amortised = (full + near * f64::from(every - 1)) / f64::from(every);
        println!("blaze {name} default, a full look every {every} frames: {amortised:.1} ms/frame on average");
    }
    println!(
        "(blaze default tiles {tiles:?}; before: [224, 448, 896], 108 network runs per frame)"
    );
    Ok(())
}

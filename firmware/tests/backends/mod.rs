//! Backend selection and the ONNX Runtime backend (feature `ort`) on the committed goldens
//! in `tests/golden/` (`docs/bundle.md`).
//!
//! The ONNX Runtime tests load the library named by `ORT_DYLIB_PATH` and fail, naming the
//! variable, when it is unset or unloadable: with the feature on they never skip silently.
//! Each test prints what it measured (`cargo test -- --nocapture`).

#![cfg_attr(not(feature = "ort"), allow(dead_code))]

#[cfg(feature = "ort")]
mod ort;
mod select;

use std::path::{Path, PathBuf};

use caer::bundle::{Bundle, MANIFEST_FILE};
use serde::Deserialize;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

/// The parts of `parity.json` these tests use.
#[derive(Debug, Deserialize)]
struct Parity {
    face_boxes: Vec<Option<[f32; 4]>>,
    body_box: Option<[f32; 4]>,
    encoder: EncoderCase,
    face_features: Vec<Vec<f32>>,
    context_features: Vec<Vec<f32>>,
    logits: Vec<f32>,
    head: HeadCase,
}

#[derive(Debug, Deserialize)]
struct EncoderCase {
    inputs: Vec<String>,
    embeddings: Vec<Vec<f32>>,
}

#[derive(Debug, Deserialize)]
struct HeadCase {
    face_features: Vec<Vec<f32>>,
    context_features: Vec<Vec<f32>>,
    logits: Vec<f32>,
}

fn parity() -> Parity {
    let path = golden_dir().join("parity.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn bundle() -> Bundle {
    Bundle::load(golden_dir().join("bundle")).expect("the fixture bundle loads")
}

fn png(relative: &str) -> image::RgbImage {
    let path = golden_dir().join(relative);
    image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// The clip's frames: the sorted files of `tests/golden/clip`.
fn clip_frames() -> Vec<image::RgbImage> {
    let dir = golden_dir().join("clip");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| image::open(f).unwrap().to_rgb8())
        .collect()
}

/// The golden crops as one `[n, 3, S, S]` batch.
fn golden_crop_pixels(parity: &Parity, image_len: usize) -> Vec<f32> {
    let mut pixels = vec![0.0; parity.encoder.inputs.len() * image_len];
    for (input, out) in parity
        .encoder
        .inputs
        .iter()
        .zip(pixels.chunks_exact_mut(image_len))
    {
        caer::preprocess::write_chw(png(input).as_raw(), out).unwrap();
    }
    pixels
}

fn flatten(rows: &[Vec<f32>]) -> Vec<f32> {
    rows.iter().flatten().copied().collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A copy of the fixture bundle whose manifest `edit` changed (model files untouched).
fn bundle_with_manifest(edit: impl FnOnce(&mut serde_json::Value)) -> (tempfile::TempDir, Bundle) {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(golden_dir().join("bundle")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    let manifest_path = dir.path().join(MANIFEST_FILE);
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let bundle = Bundle::load(dir.path()).expect("the edited bundle loads");
    (dir, bundle)
}

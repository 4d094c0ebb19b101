//! The committed goldens of `tests/golden/` (`docs/bundle.md`) and the comparisons the
//! parity and backend tests share.

use std::path::{Path, PathBuf};

use caer::pipeline::model::bundle::Bundle;
use serde::Deserialize;

pub(crate) fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

#[derive(Debug, Deserialize)]
pub(crate) struct Parity {
    pub(crate) num_frames: usize,
    pub(crate) sampled_indices: Vec<usize>,
    pub(crate) face_boxes: Vec<Option<[f64; 4]>>,
    pub(crate) body_box: Option<[f64; 4]>,
    pub(crate) crops: Vec<CropCase>,
    pub(crate) encoder: EncoderCase,
    pub(crate) face_features: Vec<Vec<f32>>,
    pub(crate) context_features: Vec<Vec<f32>>,
    pub(crate) logits: Vec<f32>,
    pub(crate) probabilities: Vec<f32>,
    pub(crate) head: HeadCase,
    pub(crate) sampling: Vec<SamplingCase>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct CropCase {
    pub(crate) position: usize,
    pub(crate) frame_index: usize,
    pub(crate) face_png: String,
    pub(crate) context_png: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct EncoderCase {
    pub(crate) inputs: Vec<String>,
    pub(crate) embeddings: Vec<Vec<f32>>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct HeadCase {
    pub(crate) face_features: Vec<Vec<f32>>,
    pub(crate) context_features: Vec<Vec<f32>>,
    pub(crate) logits: Vec<f32>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SamplingCase {
    pub(crate) num_frames: usize,
    pub(crate) indices: Vec<usize>,
}

pub(crate) fn parity() -> Parity {
    let path = golden_dir().join("parity.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) fn bundle() -> Bundle {
    Bundle::load(golden_dir().join("bundle")).expect("the fixture bundle loads")
}

pub(crate) fn png(relative: &str) -> image::RgbImage {
    let path = golden_dir().join(relative);
    image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// The clip's frames: the sorted files of `tests/golden/clip`.
pub(crate) fn clip_frames() -> Vec<image::RgbImage> {
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

pub(crate) fn flatten(rows: &[Vec<f32>]) -> Vec<f32> {
    rows.iter().flatten().copied().collect()
}

pub(crate) fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
